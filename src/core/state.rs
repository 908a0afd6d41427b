//! The persisted state of one date: what a Durable Object saves after every step.
//!
//! Not behaviour: transitions live in [`crate::core::machine`]. Every variant carries all it
//! needs to resume after a crash, and the record carries a version number so that a future
//! layout can read (or refuse, loudly) an old one.

use serde::{Deserialize, Serialize};

use crate::core::gzip::StreamPos;

/// Version of the persisted layout below. Bump it when a field changes meaning.
pub const STATE_VERSION: u32 = 1;

/// Everything a date's Durable Object remembers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub version: u32,
    /// `YYYY-MM-DD`.
    pub date: String,
    /// Generation of the current run, or of the last one; 0 before the first.
    pub generation: u32,
    pub phase: Phase,
    /// Consecutive failures of the current step.
    pub attempts: u32,
    /// The newest error, kept after recovery for the status page.
    pub last_error: Option<String>,
    /// Bumped by every save. A step whose record changed while it ran (an operator's reset)
    /// throws its result away instead of overwriting the newer record.
    pub revision: u64,
    pub started_at_ms: Option<i64>,
    pub updated_at_ms: Option<i64>,
    pub finished_at_ms: Option<i64>,
    /// When the next alarm is due (unix ms), as the core decided it.
    pub wake_at_ms: Option<i64>,
    pub stats: Stats,
    /// Generations of this date that reached `Cleaned`, oldest first.
    pub history: Vec<ArchiveSummary>,
}

/// Measurements of the current run, for the status page and the benchmark.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    /// Alarm steps taken.
    pub steps: u64,
    /// Largest wasm linear memory seen at the end of a step (it never shrinks, so this is the peak).
    pub peak_memory_bytes: u64,
    /// Largest output buffer one step held.
    pub max_buffer_bytes: u64,
    /// Longest wall time of one step.
    pub longest_step_ms: u64,
    /// D1 rows read by the export scan (D1's own `meta`).
    pub export_rows_read: u64,
    /// D1 rows read by verification and cleaning.
    pub other_rows_read: u64,
    /// D1 rows written by cleaning.
    pub rows_written: u64,
    /// D1 queries issued.
    pub queries: u64,
    /// Wall time the export spent waiting for D1's pages (the rest is encoding, compressing
    /// and uploading).
    #[serde(default)]
    pub page_wait_ms: u64,
    /// Wall time the export spent encoding, compressing and uploading.
    #[serde(default)]
    pub encode_ms: u64,
    /// When the set was captured and when it reached `Uploaded` (unix ms).
    pub export_started_ms: Option<i64>,
    pub uploaded_at_ms: Option<i64>,
}

/// Where a date stands. `Failed` remembers where it was, to resume there.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "phase")]
pub enum Phase {
    /// Nothing running.
    Idle,
    /// Rows are being read, compressed and uploaded, one bounded step per alarm.
    Exporting(Export),
    /// All rows are written and the stream is ended; complete the upload, then verify it.
    Finalizing(Export),
    /// The archive is complete and verified; no row is deleted yet.
    Uploaded(Archive),
    /// Deleting exactly the archived set, one bounded step per alarm.
    Cleaning(Cleaning),
    /// The archived set is gone from D1 and lives only in the archive.
    Cleaned(ArchiveSummary),
    /// Too many consecutive failures, or one that retrying cannot fix.
    Failed(Failure),
}

/// An export in progress.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Export {
    pub key: String,
    /// The archived set is `event_date = date AND created_at < cutoff`; `None` until captured.
    pub cutoff: Option<i64>,
    /// The multipart upload, created when the first full part is ready.
    pub upload_id: Option<String>,
    /// Fixed for the life of the upload: R2 needs every non-final part to be this size.
    pub part_size: u64,
    /// Deflate level, fixed for the life of the stream.
    pub level: u8,
    /// Id of the last exported row; "" before the first.
    pub cursor: String,
    /// Rows exported so far.
    pub rows: u64,
    /// Sum of `timestamp % 1000003` over the exported rows.
    pub fp: i64,
    pub stream: StreamPos,
    /// Uploaded parts, in order; each but the last final one is exactly `part_size` bytes.
    pub parts: Vec<PartRef>,
    /// Output bytes produced but not uploaded, saved with the record (see the Durable port).
    pub carry_len: u64,
    /// The seek index: one entry per step's piece.
    pub pieces: Vec<Piece>,
    /// Id ranges for cleaning, with the number of archived rows in each.
    pub checkpoints: Vec<Checkpoint>,
    /// Rows exported since the last checkpoint.
    pub rows_since_checkpoint: u64,
    /// Times the export started over because its upload vanished or its set changed.
    pub restarts: u32,
    /// The whole object went up in one `put` (it was smaller than one part).
    pub single_put: bool,
}

/// A part as R2 acknowledged it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartRef {
    pub number: u16,
    pub etag: String,
}

/// One entry of the seek index: `len` bytes at `offset` inflate (raw deflate) on their own to
/// `rows` lines, ids `first_id..=last_id`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Piece {
    pub offset: u64,
    pub len: u64,
    pub raw_len: u64,
    pub rows: u64,
    pub first_id: String,
    pub last_id: String,
}

/// The archived set's rows with ids in `(previous upto, upto]` number exactly `rows`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    pub upto: String,
    pub rows: u64,
}

/// A complete, verified archive object and what cleaning needs to delete its rows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Archive {
    pub summary: ArchiveSummary,
    pub checkpoints: Vec<Checkpoint>,
}

/// What stays known about a generation after its rows are deleted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArchiveSummary {
    pub generation: u32,
    pub key: String,
    pub cutoff: i64,
    pub rows: u64,
    pub bytes: u64,
    pub raw_bytes: u64,
    pub crc32: u32,
    pub parts: u32,
    pub pieces: u32,
    pub first_id: Option<String>,
    pub last_id: Option<String>,
    pub rows_deleted: u64,
    pub finished_at_ms: Option<i64>,
}

/// Cleaning in progress: `checkpoints[..next]` are deleted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Cleaning {
    pub archive: Archive,
    pub next: usize,
    pub rows_deleted: u64,
}

/// A stopped run: the error, and the phase to resume when triggered again.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Failure {
    pub at: Box<Phase>,
    pub error: String,
    pub attempts: u32,
}

impl Record {
    /// A date that has never run.
    pub fn new(date: &str) -> Record {
        Record {
            version: STATE_VERSION,
            date: date.to_string(),
            generation: 0,
            phase: Phase::Idle,
            attempts: 0,
            last_error: None,
            revision: 0,
            started_at_ms: None,
            updated_at_ms: None,
            finished_at_ms: None,
            wake_at_ms: None,
            stats: Stats::default(),
            history: Vec::new(),
        }
    }
}

impl Phase {
    /// The phase's name, as the status page and `archive_metadata.status` spell it.
    pub fn name(&self) -> &'static str {
        match self {
            Phase::Idle => "idle",
            Phase::Exporting(_) => "exporting",
            Phase::Finalizing(_) => "finalizing",
            Phase::Uploaded(_) => "uploaded",
            Phase::Cleaning(_) => "cleaning",
            Phase::Cleaned(_) => "cleaned",
            Phase::Failed(_) => "failed",
        }
    }
}

impl Export {
    /// A fresh export of `key`; the set is captured by the first step.
    pub fn new(key: String, part_size: u64, level: u8, restarts: u32) -> Export {
        Export {
            key,
            cutoff: None,
            upload_id: None,
            part_size,
            level,
            cursor: String::new(),
            rows: 0,
            fp: 0,
            stream: StreamPos::default(),
            parts: Vec::new(),
            carry_len: 0,
            pieces: Vec::new(),
            checkpoints: Vec::new(),
            rows_since_checkpoint: 0,
            restarts,
            single_put: false,
        }
    }

    /// Bytes handed to R2 so far.
    pub fn uploaded_bytes(&self) -> u64 {
        self.stream.out_len - self.carry_len
    }
}
