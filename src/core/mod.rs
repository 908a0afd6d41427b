//! The pure core: states, decisions and formats. No I/O, no clock, no `worker` types.
//!
//! Not the driver: [`crate::engine`] performs what [`machine::next_action`] decides, through
//! the traits in [`crate::ports`]. Everything here runs and is tested natively with `cargo test`.
//!
//! The run of one date, one bounded step per alarm:
//!
//! 1. `Idle` --trigger--> `Exporting`: the first step captures the set (D1's clock as cutoff).
//! 2. `Exporting`: each step reads up to `STEP_ROWS` rows by keyset pages, compresses them as
//!    one gzip piece, uploads every full part and keeps the tail (the carry) for the next step.
//! 3. `Finalizing`: complete the upload, check the object's size and CRC-32 trailer, check that
//!    D1's count and fingerprint of the set equal the export's, write `archive_metadata`.
//! 4. `Uploaded` --auto or trigger-cleanup--> `Cleaning`: delete the set range by range, each
//!    range only if it still holds exactly the rows the archive holds for it.
//! 5. `Cleaned` when a final count of the set is 0; then `d1_cleaned = 1`.
//!
//! **Every action is safe to repeat** (see [`machine`]).

pub mod config;
pub mod date;
pub mod gzip;
pub mod jsonl;
pub mod machine;
pub mod sql;
pub mod state;
pub mod status;
