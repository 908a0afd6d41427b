//! The ports: the only ways the engine touches the world. Small traits, native `async fn`.
//!
//! Not implementations: the Worker's adapters live in `shell/`, the tests' fakes in `tests/`.
//! The one fault model, [`faulty::Faulty`], wraps any of them. Every method must be safe to call
//! again with the same arguments (alarms are at-least-once).

#![allow(async_fn_in_trait)] // Send is not needed: Workers are single-threaded.

pub mod faulty;

pub use crate::core::error::{FailureKind, PortError};
use crate::core::sql::{Meta, ResultSet, Statement};
use crate::core::state::PartRef;

/// D1. Statements' params bind `?1, ?2, ...` in order.
pub trait Database {
    /// Runs one statement and returns its rows.
    async fn run(&self, stmt: &Statement) -> Result<ResultSet, PortError>;
    /// Runs statements in one transaction (D1's `batch`): all or nothing.
    async fn batch(&self, stmts: &[Statement]) -> Result<Vec<ResultSet>, PortError>;
    /// Runs an export page and returns every value of every row joined by
    /// [`crate::core::sql::WIRE_SEP`] (numbers as their shortest decimal, NULL as the empty
    /// string): one string per page instead of a value per cell, which is what makes the export
    /// fast in wasm.
    async fn run_page(&self, stmt: &Statement) -> Result<(String, Meta), PortError>;
}

/// R2.
pub trait ObjectStore {
    /// Starts a multipart upload and returns its id.
    async fn create_upload(&self, key: &str) -> Result<String, PortError>;
    /// Uploads (or replaces) part `number`; returns its etag.
    async fn upload_part(&self, key: &str, upload_id: &str, number: u16, bytes: &[u8]) -> Result<String, PortError>;
    /// Completes the upload from its parts, in order.
    async fn complete_upload(&self, key: &str, upload_id: &str, parts: &[PartRef]) -> Result<(), PortError>;
    /// Aborts the upload; aborting one that is gone is not an error.
    async fn abort_upload(&self, key: &str, upload_id: &str) -> Result<(), PortError>;
    /// Writes a whole object: `body`'s slices, in order (a file built in chunks goes up without
    /// first being copied into one buffer).
    async fn put(&self, key: &str, body: &[&[u8]], content_type: &str) -> Result<(), PortError>;
    /// The object's size, or `None` if it does not exist.
    async fn head(&self, key: &str) -> Result<Option<u64>, PortError>;
    /// `len` bytes at `offset`; `None` if the object does not exist.
    async fn get_range(&self, key: &str, offset: u64, len: u64) -> Result<Option<Vec<u8>>, PortError>;
    /// Deletes the object; deleting one that is gone is not an error.
    async fn delete(&self, key: &str) -> Result<(), PortError>;
}

/// The Durable Object's own storage: the record (JSON) and the carry bytes, saved together.
pub trait Durable {
    /// The saved record, and the carry if `carry_capacity` is given (else an empty carry). A
    /// non-empty carry comes in a buffer of at least that many bytes, so the export can keep
    /// writing into it without reallocating; an empty one allocates nothing (it may come in a
    /// recycled buffer).
    async fn load(&self, carry_capacity: Option<usize>) -> Result<Option<(String, Vec<u8>)>, PortError>;
    /// Saves the record, and the carry if given (`None` keeps the saved carry), in one atomic
    /// write, **only if** the saved record's revision is still `expected_revision` (0 when
    /// nothing was saved); otherwise fails with `FailureKind::Conflict`.
    async fn save(&self, record_json: &str, carry: Option<&[u8]>, expected_revision: u64) -> Result<(), PortError>;
    /// The record's revision when a step last began ([`Durable::begin_step`]), if one did.
    async fn step_begun(&self) -> Result<Option<u64>, PortError>;
    /// Notes that a step of the record at `revision` begins. Every step saves a new revision
    /// (or loses to a command that did), so a record still at `revision` at the next alarm
    /// means the step never saved: its isolate died in it.
    async fn begin_step(&self, revision: u64) -> Result<(), PortError>;
    /// Takes back a saved carry's buffer, for the next `load` to fill instead of allocating one.
    /// The Worker's storage keeps it: a part-sized block freed at the end of every export step
    /// would be dented by the small allocations before the next one, and linear memory would
    /// grow by a part. Others drop it.
    fn recycle(&self, _carry: Vec<u8>) {}
}

/// The wall clock, the memory gauge and the log. Only the engine reads them, and passes values
/// inward.
pub trait Host {
    fn now_ms(&self) -> i64;
    /// Current size of wasm linear memory (0 where there is none).
    fn memory_bytes(&self) -> u64;
    /// Writes one structured log line (JSON).
    fn log(&self, line: &str);
}
