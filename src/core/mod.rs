//! The pure core: states, decisions and formats. No I/O, no clock, no `worker` types, and no
//! import from the rooms above it (`ports`, `engine`, `api`, `shell`).
//!
//! Not the driver: [`crate::engine`] performs what [`machine`] decides. Everything here runs and
//! is tested natively with `cargo test`.
//!
//! The run of one date, one bounded step per alarm:
//!
//! 1. `idle` --trigger--> `exporting`: each step reads rows by keyset pages (every row of the
//!    date, NULL ids first, then ids in order), compresses them into pieces of at most
//!    `PIECE_BYTES` (~1 MiB compressed), uploads every full part and keeps the tail (the carry).
//! 2. `completing`: complete the multipart upload, check the object's size, write the sidecar.
//! 3. `verifying`: read the object back piece by piece: every piece's CRC-32 and line count, the
//!    header, the final block and the trailer. Only then `uploaded`.
//! 4. `uploaded` --auto or trigger-cleanup--> `cleaning` (saved before the first DELETE): each
//!    step range-reads pieces, checks them again, and deletes the rows equal to their lines.
//! 5. `cleaned` with a count of every row of the date left in D1 (`rows_pending`); 0 means
//!    `d1_cleaned = 1`. Rows left (late, changed) are archived by the next generation.
//! 6. `restoring` --> `restored` (held) --release or hold's end--> `releasing` --> `cleaned`.
//!
//! **A row is deleted from D1 only if a line identical to it in every column was read back from
//! the R2 object, and checked against that object's index, in the same step.**
//! **Every action is safe to repeat** (see [`machine`]).

pub mod config;
pub mod date;
pub mod error;
pub mod gzip;
pub mod index;
pub mod io;
pub mod jsonl;
pub mod machine;
pub mod parquet;
pub mod policy;
pub mod sql;
pub mod state;
pub mod status;
