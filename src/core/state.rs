//! The persisted state of one date: what its Durable Object saves after every step.
//!
//! Not behaviour: transitions live in [`crate::core::machine`]. Each phase holds exactly its own
//! data; a failure holds the resumable work it stopped in, never another failure; the upload is
//! one enum. The record carries a version: version 1 records (saved by the previous release)
//! are read and carried on (see [`v1`]).

use serde::{Deserialize, Serialize};

use crate::core::config::Config;
use crate::core::gzip::StreamPos;
use crate::core::index::Piece;
use crate::core::sql::Cursor;

/// Version of the persisted layout below. Bump it when a field changes meaning.
pub const STATE_VERSION: u32 = 2;

/// Everything a date's Durable Object remembers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub version: u32,
    /// `YYYY-MM-DD`.
    pub date: String,
    /// Bumped by every save. A step whose record changed while it ran (an operator's command)
    /// throws its result away instead of overwriting the newer record.
    pub revision: u64,
    pub phase: Phase,
    /// The archive objects of this date that exist in R2, complete and verified, oldest first.
    pub generations: Vec<Generation>,
    /// Consecutive failures of the current step.
    pub attempts: u32,
    /// The newest error, kept after recovery for the status page.
    pub last_error: Option<String>,
    /// The last save's `archive_metadata`/`archive_objects` rows could not be written; the
    /// next alarm writes them first.
    pub metadata_stale: bool,
    /// Consecutive failed writes of the record's metadata: not the date's own work, so they
    /// never fail it (D1 could not say so either), but they space its retries out.
    #[serde(default)]
    pub metadata_failures: u32,
    /// Passes over archives started so far (cleaning, restore, release): each pass's ledger id.
    pub passes: u32,
    /// Objects and uploads this record dropped and that are still to be removed from R2. A
    /// command saves them here first (so it wins or loses against a concurrent step atomically)
    /// and removes them after the save; an alarm retries what is left.
    pub garbage: Vec<Garbage>,
    /// When the current run began, was last saved, and ended (unix ms).
    pub started_at_ms: Option<i64>,
    pub updated_at_ms: Option<i64>,
    pub finished_at_ms: Option<i64>,
    /// When the next alarm is due (unix ms), as the core decided it.
    pub wake_at_ms: Option<i64>,
    /// What the current run's steps cost (reset when an export starts), for the status.
    pub stats: Stats,
}

/// Something in R2 the record no longer refers to: every row in it is still in D1.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Garbage {
    Delete {
        key: String,
    },
    Abort {
        key: String,
        upload_id: String,
    },
    /// A key a step may still be writing when a command dropped its work (the step's call to
    /// R2 under way while the Durable Object served the command): deleted by the command's
    /// collection with the rest of its garbage (none when there is no rest), and again by the
    /// date's next alarm, assumed to begin only once the alarm running that step has ended.
    /// So a `put` that lands after the command (the step's save then loses) leaves nothing
    /// behind, even if the isolate dies before the step's own clean-up
    /// ([`crate::core::machine::handle_superseded`]).
    Recheck {
        key: String,
    },
}

/// Where a date stands.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "phase", rename_all = "snake_case")]
pub enum Phase {
    /// No work. Archives may exist (`generations`); rows may be waiting in D1.
    Idle,
    /// Work the date does by itself, one bounded step per alarm.
    Working(Work),
    /// The newest generation is complete and verified; no row is deleted yet. With
    /// `AUTO_CLEANUP` the next alarm starts cleaning; otherwise an operator does.
    Uploaded { generation: u32 },
    /// A cleaning pass ended with a count of every row of the date still in D1.
    Cleaned {
        rows_pending: u64,
        /// When the pass was a release: the rows it took back from D1.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        released: Option<u64>,
    },
    /// Rows of archives are back in D1 and held there until `hold.until_ms` or a release.
    Restored(Hold),
    /// Too many consecutive failures, or one that retrying cannot fix.
    Failed(Failure),
}

/// Work a date does by itself: each variant carries all it needs to resume after a crash.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, strum::IntoStaticStr)]
#[serde(tag = "work", rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum Work {
    /// Rows are read, compressed and uploaded, one bounded step per alarm.
    Exporting(Export),
    /// Every row is written and the stream is ended: complete the upload, check its size, write
    /// the sidecar index.
    Completing(Written),
    /// The object is read back piece by piece and checked against the index.
    Verifying(Verifying),
    /// Rows equal to lines read back from archives are deleted (cleaning, or a release).
    Cleaning(Pass),
    /// Lines read back from archives are inserted where D1 lacks them.
    Restoring(Restore),
}

/// A stopped run: the error, and the work to resume when triggered again.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Failure {
    pub work: Work,
    pub error: String,
}

/// An export in progress.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Export {
    pub generation: u32,
    pub key: String,
    /// Fixed for the life of the upload: R2 needs every non-final part to be this size.
    pub part_size: u64,
    /// Deflate level, fixed for the life of the stream.
    pub level: u8,
    pub upload: Upload,
    /// Where the keyset scan stands.
    pub cursor: Cursor,
    /// Rows exported so far.
    pub rows: u64,
    /// JSON bytes per row of the last page (0 before the first): the next step's first page
    /// is sized from it, so every page honours `PAGE_BYTES`.
    pub row_bytes: u64,
    pub stream: StreamPos,
    /// Output bytes produced but not uploaded, saved with the record (see the Durable port).
    pub carry_len: u64,
    /// The seek index so far.
    pub pieces: Vec<Piece>,
    /// Times the export started over because its upload vanished or its object was wrong.
    pub restarts: u32,
    /// With `PARQUET` on when the export started: the Parquet files written so far, one per
    /// step (see [`crate::core::parquet`]). Fixed at the start, so an archive never has Parquet
    /// for only some of its rows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parquet: Option<Vec<ParquetFile>>,
    /// Its pieces' `min_ts..=max_ts` cover REAL timestamps too (rounded outwards). Archives
    /// written before do not (only INTEGER ones), so a time window reads all their pieces.
    #[serde(default)]
    pub real_ts_bounded: bool,
}

/// One Parquet file of an archive: the rows of one export step, in one `put`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParquetFile {
    pub key: String,
    pub rows: u64,
    pub bytes: u64,
    pub row_groups: u32,
    /// CRC-32 of the whole file, as written (for operators' own checks).
    pub crc32: u32,
    /// CRC-32 of its footer as written, checked by the read-back; `None` in a record saved
    /// before it was kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub footer_crc32: Option<u32>,
}

/// The export's R2 upload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "upload", rename_all = "snake_case")]
pub enum Upload {
    /// Nothing handed to R2 yet: all output so far is in the carry.
    NotStarted,
    /// A multipart upload; `parts` are uploaded, each but a final one exactly `part_size`.
    Multipart { upload_id: String, parts: Vec<PartRef> },
}

/// How a finished stream went up.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "upload", rename_all = "snake_case")]
pub enum Finished {
    /// Smaller than one part: one `put`, already done.
    SinglePut,
    /// All parts uploaded; the upload is still to be completed.
    Multipart { upload_id: String, parts: Vec<PartRef> },
}

/// A part as R2 acknowledged it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartRef {
    pub number: u16,
    pub etag: String,
}

/// A stream that is fully written.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Written {
    pub generation: u32,
    pub key: String,
    pub upload: Finished,
    /// The final position: `out_len` is the object's size.
    pub stream: StreamPos,
    pub rows: u64,
    pub pieces: Vec<Piece>,
    pub restarts: u32,
    /// As [`Export::real_ts_bounded`].
    #[serde(default)]
    pub real_ts_bounded: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parquet: Option<Vec<ParquetFile>>,
}

/// A complete object being read back: `archive.pieces[..next]` are checked, and their bytes
/// have CRC-32 `crc` over `raw_len` bytes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Verifying {
    pub archive: Generation,
    /// Parquet files whose footers are checked (they are checked first).
    #[serde(default)]
    pub parquet_checked: usize,
    pub next: usize,
    pub crc: u32,
    pub raw_len: u64,
    pub restarts: u32,
}

impl Written {
    /// The keys of its Parquet files.
    pub fn parquet_keys(&self) -> Vec<String> {
        self.parquet.iter().flatten().map(|f| f.key.clone()).collect()
    }
}

impl Generation {
    /// The keys of its Parquet files.
    pub fn parquet_keys(&self) -> Vec<String> {
        self.parquet.iter().map(|f| f.key.clone()).collect()
    }
}

/// One archive object that exists in R2, complete and verified by reading it back.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Generation {
    pub number: u32,
    pub key: String,
    pub index_key: String,
    pub rows: u64,
    pub bytes: u64,
    pub raw_bytes: u64,
    pub crc32: u32,
    pub parts: u32,
    pub pieces: Vec<Piece>,
    /// Rows its cleaning passes deleted from D1 (as their ledger counted them).
    pub rows_deleted: u64,
    pub cleaning: CleanState,
    pub created_at_ms: Option<i64>,
    pub verified_at_ms: Option<i64>,
    pub cleaned_at_ms: Option<i64>,
    /// Written by state version 1: its index has no per-piece CRC-32, so it is kept and served
    /// whole, but not read piece by piece (restore, events).
    #[serde(default)]
    pub legacy: bool,
    /// Its Parquet files (none when `PARQUET` was off), footers verified with the object.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub parquet: Vec<ParquetFile>,
    /// As [`Export::real_ts_bounded`].
    #[serde(default)]
    pub real_ts_bounded: bool,
}

/// How far cleaning got for one generation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, strum::IntoStaticStr)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum CleanState {
    /// No row deleted yet.
    NotCleaned,
    /// A pass is deleting its rows.
    Cleaning,
    /// A pass went through every piece.
    Cleaned,
    /// A pass was stopped by a reset; some rows are deleted and the object is their copy.
    Partial,
}

/// What a pass over archives is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Purpose {
    /// Delete the rows of a freshly verified generation.
    Clean,
    /// Delete restored rows again, after their hold.
    Release,
}

/// Where a pass over archives stands, and how it cuts its batches: what a cleaning (or a
/// release) and a restore share. Flattened into their JSON, so saved records keep their shape.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Walk {
    /// `generations[current..]` remain, the current one from piece `piece`.
    pub generations: Vec<u32>,
    pub current: usize,
    pub piece: usize,
    /// The pass's number in `archive_ledger`.
    pub id: u32,
    /// Batch size in JSON bytes, fixed for the pass (batch ids must mean the same lines).
    pub batch_bytes: u64,
    /// A line with a character past U+00FF counts twice toward `batch_bytes`: it crosses D1 as
    /// the hex of its UTF-8, and D1 takes 2 MB per string. `false` in a pass saved before
    /// (fixed for the pass, like `batch_bytes`).
    #[serde(default)]
    pub wide_twice: bool,
}

impl Walk {
    /// Pass `id` over `generations` from their start, in batches of `batch_bytes`.
    pub fn start(generations: Vec<u32>, id: u32, batch_bytes: u64) -> Walk {
        Walk {
            generations,
            current: 0,
            piece: 0,
            id,
            batch_bytes,
            wide_twice: true,
        }
    }
}

/// A cleaning pass (or a release): its walk, then a count of the date's rows ends it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pass {
    pub purpose: Purpose,
    #[serde(flatten)]
    pub walk: Walk,
    /// Rows deleted by this pass so far.
    pub rows: u64,
    /// For a release: the restore whose rows it deletes. A NULL-id row goes only if that
    /// restore inserted it (after its rowid mark, [`crate::core::sql::ROWID_MARK`]); `None`
    /// (a record saved before the mark existed): no NULL-id row goes, it stays in D1 and is
    /// archived again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restored_by: Option<u32>,
    /// For a release: that restore kept rowid marks per generation
    /// ([`Restore::generation_marks`]).
    #[serde(default)]
    pub generation_marks: bool,
}

impl Pass {
    /// For a release: the restore whose rows it takes back.
    pub fn marks(&self) -> Option<RestoreMarks> {
        self.restored_by.map(|id| RestoreMarks {
            id,
            per_generation: self.generation_marks,
        })
    }
}

/// The rowid marks of a restore, which bound the rows its release takes back: its pass id, and
/// whether it kept them per generation too.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RestoreMarks {
    pub id: u32,
    /// Each generation's batches keep their own marks besides the restore's, and a release
    /// takes, with a generation's lines, only rows inside that generation's: a row one
    /// generation restored is never taken by an older generation's line (the app may have
    /// changed it back to that). `false` for a restore saved before: one range for all.
    pub per_generation: bool,
}

/// A restore: like a pass, but inserting.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Restore {
    #[serde(flatten)]
    pub walk: Walk,
    /// Unix ms until which the restored rows stay.
    pub hold_until_ms: i64,
    pub counts: RestoreCounts,
    /// See [`RestoreMarks::per_generation`]; `true` for every restore started by this release.
    #[serde(default)]
    pub generation_marks: bool,
}

impl Restore {
    pub fn marks(&self) -> RestoreMarks {
        RestoreMarks {
            id: self.walk.id,
            per_generation: self.generation_marks,
        }
    }
}

/// What a restore found, line by line.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RestoreCounts {
    /// Archived lines read and checked.
    pub lines: u64,
    /// Rows inserted.
    pub inserted: u64,
    /// Lines whose identical row was already in D1.
    pub present: u64,
    /// Lines whose id D1 held before the restore with different content (never overwritten).
    pub conflicts: u64,
    /// Lines of an older generation whose id the restore had already filled from a newer one
    /// (the row changed between the two exports; the newer version is the one restored).
    #[serde(default)]
    pub superseded: u64,
    /// Lines whose row was gone when their batch was checked again (a step repeated after the
    /// batch had run): the app deleted the row, or changed a NULL-id one, in between. Its
    /// choice: the restore does not put such a row back a second time.
    #[serde(default)]
    pub removed: u64,
    /// The first conflicting ids, as JSON values.
    pub conflict_ids: Vec<serde_json::Value>,
}

impl RestoreCounts {
    /// Adds `other`, keeping at most `keep_ids` conflicting ids.
    pub fn merge(&mut self, other: &RestoreCounts, keep_ids: usize) {
        self.lines += other.lines;
        self.inserted += other.inserted;
        self.present += other.present;
        self.conflicts += other.conflicts;
        self.superseded += other.superseded;
        self.removed += other.removed;
        let room = keep_ids.saturating_sub(self.conflict_ids.len());
        self.conflict_ids.extend(other.conflict_ids.iter().take(room).cloned());
    }
}

/// Restored rows held in D1.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hold {
    pub generations: Vec<u32>,
    pub until_ms: i64,
    pub counts: RestoreCounts,
    /// The restore's pass id, for its release ([`Pass::restored_by`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore_id: Option<u32>,
    /// See [`Restore::generation_marks`].
    #[serde(default)]
    pub generation_marks: bool,
}

impl Hold {
    pub fn marks(&self) -> Option<RestoreMarks> {
        self.restore_id.map(|id| RestoreMarks {
            id,
            per_generation: self.generation_marks,
        })
    }
}

/// Measurements of the current run, for the status page and the benchmark.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    /// Alarm steps taken.
    pub steps: u64,
    /// Largest wasm linear memory seen at the end of a step (it never shrinks: the peak).
    pub peak_memory_bytes: u64,
    /// Largest buffer one step held.
    pub max_buffer_bytes: u64,
    /// Longest wall time of one step.
    pub longest_step_ms: u64,
    /// D1 rows read by the export scan (D1's own `meta`).
    pub export_rows_read: u64,
    /// D1 rows read by cleaning passes.
    pub clean_rows_read: u64,
    /// D1 rows read by restores.
    pub restore_rows_read: u64,
    /// D1 rows written (deleted or inserted, and the ledger's).
    pub rows_written: u64,
    /// D1 statements issued.
    pub queries: u64,
    /// Bytes read back from R2.
    pub bytes_read: u64,
    /// Wall time the export spent waiting for D1's pages.
    pub page_wait_ms: u64,
    /// Wall time the export spent encoding, compressing and uploading.
    pub encode_ms: u64,
    /// D1's own time running the statements of the export scan, of cleaning passes and of
    /// restores (the sum of D1's `meta.duration`), in microseconds: what of each phase's time
    /// is D1 executing SQL, the rest being the Worker, R2 and the way between them.
    #[serde(default)]
    pub export_sql_us: u64,
    #[serde(default)]
    pub clean_sql_us: u64,
    #[serde(default)]
    pub restore_sql_us: u64,
    /// When each phase of the current generation began and ended (unix ms), for the
    /// per-phase times.
    pub export_started_ms: Option<i64>,
    pub exported_at_ms: Option<i64>,
    pub verified_at_ms: Option<i64>,
    pub clean_started_ms: Option<i64>,
    pub cleaned_at_ms: Option<i64>,
    pub restore_started_ms: Option<i64>,
    pub restored_at_ms: Option<i64>,
}

impl Record {
    /// A date that has never run.
    pub fn new(date: &str) -> Record {
        Record {
            version: STATE_VERSION,
            date: date.to_string(),
            revision: 0,
            phase: Phase::Idle,
            generations: Vec::new(),
            attempts: 0,
            last_error: None,
            metadata_stale: false,
            metadata_failures: 0,
            passes: 0,
            garbage: Vec::new(),
            started_at_ms: None,
            updated_at_ms: None,
            finished_at_ms: None,
            wake_at_ms: None,
            stats: Stats::default(),
        }
    }

    /// The generation numbered `n`.
    pub fn generation(&self, n: u32) -> Option<&Generation> {
        self.generations.iter().find(|g| g.number == n)
    }

    pub fn generation_mut(&mut self, n: u32) -> Option<&mut Generation> {
        self.generations.iter_mut().find(|g| g.number == n)
    }

    /// The number the next new generation gets.
    pub fn next_generation(&self) -> u32 {
        self.generations.iter().map(|g| g.number).max().unwrap_or(0) + 1
    }

    /// Reads a saved record of any version this code knows (`cfg` sets up what a version-1
    /// record left for this version to decide).
    pub fn from_json(json: &str, cfg: &Config) -> Result<Record, String> {
        let version = serde_json::from_str::<serde_json::Value>(json)
            .map_err(|e| e.to_string())?
            .get("version")
            .and_then(serde_json::Value::as_u64)
            .unwrap_or(0);
        match version {
            1 => v1::upgrade(json, cfg),
            2 => serde_json::from_str(json).map_err(|e| e.to_string()),
            other => Err(format!("state version {other}, this code reads 1 and {STATE_VERSION}")),
        }
    }
}

impl Phase {
    /// The phase's name, as the status page and `archive_metadata.status` spell it.
    pub fn name(&self) -> &'static str {
        match self {
            Phase::Idle => "idle",
            Phase::Working(w) => w.name(),
            Phase::Uploaded { .. } => "uploaded",
            Phase::Cleaned { .. } => "cleaned",
            Phase::Restored(_) => "restored",
            Phase::Failed(_) => "failed",
        }
    }

    /// The rows of the date a finished cleaning pass counted still in D1 (only when `Cleaned`).
    pub fn rows_pending(&self) -> Option<u64> {
        match self {
            Phase::Cleaned { rows_pending, .. } => Some(*rows_pending),
            Phase::Idle | Phase::Working(_) | Phase::Uploaded { .. } | Phase::Restored(_) | Phase::Failed(_) => None,
        }
    }

    /// The rows the release that ended as this `Cleaned` took back (only when it was one).
    pub fn released(&self) -> Option<u64> {
        match self {
            Phase::Cleaned { released, .. } => *released,
            Phase::Idle | Phase::Working(_) | Phase::Uploaded { .. } | Phase::Restored(_) | Phase::Failed(_) => None,
        }
    }

    /// The work running now, if any (a failed date's work is stopped, not running).
    pub fn working(&self) -> Option<&Work> {
        match self {
            Phase::Working(w) => Some(w),
            Phase::Idle | Phase::Uploaded { .. } | Phase::Cleaned { .. } | Phase::Restored(_) | Phase::Failed(_) => {
                None
            }
        }
    }

    /// [`Phase::working`], to change.
    pub fn working_mut(&mut self) -> Option<&mut Work> {
        match self {
            Phase::Working(w) => Some(w),
            Phase::Idle | Phase::Uploaded { .. } | Phase::Cleaned { .. } | Phase::Restored(_) | Phase::Failed(_) => {
                None
            }
        }
    }
}

impl Work {
    /// The work's name; a release is a cleaning pass, but operators call it releasing.
    pub fn name(&self) -> &'static str {
        match self {
            Work::Cleaning(p) if p.purpose == Purpose::Release => "releasing",
            other @ (Work::Exporting(_)
            | Work::Completing(_)
            | Work::Verifying(_)
            | Work::Cleaning(_)
            | Work::Restoring(_)) => other.into(),
        }
    }
}

impl Work {
    /// The same work with its restart budget back: an operator's resume starts counting afresh.
    pub fn resumed(mut self) -> Work {
        match &mut self {
            Work::Exporting(ex) => ex.restarts = 0,
            Work::Completing(w) => w.restarts = 0,
            Work::Verifying(v) => v.restarts = 0,
            Work::Cleaning(_) | Work::Restoring(_) => {}
        }
        self
    }
}

impl CleanState {
    pub fn name(self) -> &'static str {
        self.into()
    }
}

pub mod v1 {
    //! Records saved by state version 1 (the previous release), carried on:
    //!
    //! - no row deleted yet (exporting, finalizing, uploaded, or failed there): the export starts
    //!   over under version 2's rules, as the same generation (its key is overwritten);
    //! - cleaning (or failed while cleaning): some rows are deleted and the object is their only
    //!   copy. It is kept as a legacy generation, marked partly cleaned; the rows still in D1 are
    //!   archived again as the next generation by the cron;
    //! - cleaned: the object is kept as a legacy generation; the phase stays cleaned.

    use serde::Deserialize;

    use super::*;

    #[derive(Deserialize)]
    struct RecordV1 {
        date: String,
        generation: u32,
        phase: PhaseV1,
        revision: u64,
        started_at_ms: Option<i64>,
        updated_at_ms: Option<i64>,
        finished_at_ms: Option<i64>,
        history: Vec<SummaryV1>,
    }

    #[derive(Deserialize)]
    #[serde(tag = "phase")]
    enum PhaseV1 {
        Idle,
        Exporting(ExportV1),
        Finalizing(ExportV1),
        Uploaded(serde::de::IgnoredAny),
        Cleaning(CleaningV1),
        Cleaned(SummaryV1),
        Failed(FailureV1),
    }

    #[derive(Deserialize)]
    struct ExportV1 {
        key: String,
        upload_id: Option<String>,
        #[serde(default)]
        single_put: bool,
    }

    #[derive(Deserialize)]
    struct FailureV1 {
        at: Box<PhaseV1>,
        error: String,
    }

    #[derive(Deserialize)]
    struct CleaningV1 {
        archive: ArchiveV1,
        rows_deleted: u64,
    }

    #[derive(Deserialize)]
    struct ArchiveV1 {
        summary: SummaryV1,
    }

    #[derive(Deserialize, Clone)]
    struct SummaryV1 {
        generation: u32,
        key: String,
        rows: u64,
        bytes: u64,
        raw_bytes: u64,
        crc32: u32,
        parts: u32,
        rows_deleted: u64,
        finished_at_ms: Option<i64>,
    }

    fn legacy(s: &SummaryV1, cleaning: CleanState, rows_deleted: u64) -> Generation {
        Generation {
            number: s.generation,
            key: s.key.clone(),
            index_key: crate::core::date::index_key(&s.key),
            rows: s.rows,
            bytes: s.bytes,
            raw_bytes: s.raw_bytes,
            crc32: s.crc32,
            parts: s.parts,
            pieces: Vec::new(),
            rows_deleted,
            cleaning,
            created_at_ms: None,
            verified_at_ms: None,
            cleaned_at_ms: s.finished_at_ms,
            legacy: true,
            parquet: Vec::new(),
            real_ts_bounded: false,
        }
    }

    /// The version-2 record that carries a version-1 record on.
    pub fn upgrade(json: &str, cfg: &Config) -> Result<Record, String> {
        let old: RecordV1 = serde_json::from_str(json).map_err(|e| format!("version 1 record: {e}"))?;
        let mut rec = Record::new(&old.date);
        rec.revision = old.revision;
        rec.started_at_ms = old.started_at_ms;
        rec.updated_at_ms = old.updated_at_ms;
        rec.finished_at_ms = old.finished_at_ms;
        rec.generations = old
            .history
            .iter()
            .map(|s| legacy(s, CleanState::Cleaned, s.rows_deleted))
            .collect();
        let (phase, error) = match old.phase {
            PhaseV1::Failed(f) => (*f.at, Some(f.error)),
            other @ (PhaseV1::Idle
            | PhaseV1::Exporting(_)
            | PhaseV1::Finalizing(_)
            | PhaseV1::Uploaded(_)
            | PhaseV1::Cleaning(_)
            | PhaseV1::Cleaned(_)) => (other, None),
        };
        rec.last_error = error;
        rec.phase = match phase {
            PhaseV1::Idle | PhaseV1::Failed(_) => Phase::Idle,
            PhaseV1::Exporting(_) | PhaseV1::Finalizing(_) | PhaseV1::Uploaded(_) => {
                // Nothing deleted yet: start this generation over, under this version's rules
                // (its key is overwritten); an upload left open is aborted.
                if let PhaseV1::Exporting(ex) | PhaseV1::Finalizing(ex) = &phase {
                    if let (Some(upload_id), false) = (&ex.upload_id, ex.single_put) {
                        rec.garbage.push(Garbage::Abort {
                            key: ex.key.clone(),
                            upload_id: upload_id.clone(),
                        });
                    }
                }
                rec.generations.retain(|g| g.number != old.generation);
                let key = crate::core::date::object_key(&cfg.prefix, &old.date, old.generation);
                Phase::Working(Work::Exporting(Export::new(
                    old.generation,
                    key,
                    cfg.part_size,
                    cfg.level,
                    0,
                )))
            }
            PhaseV1::Cleaning(c) => {
                let g = legacy(&c.archive.summary, CleanState::Partial, c.rows_deleted);
                rec.generations.retain(|h| h.number != g.number);
                rec.generations.push(g);
                rec.last_error = Some(format!(
                    "carried over from version 1 while cleaning generation {}: its object is kept; rows of {} still in D1 are archived again as the next generation",
                    old.generation, old.date
                ));
                Phase::Idle
            }
            PhaseV1::Cleaned(s) => {
                rec.generations.retain(|h| h.number != s.generation);
                rec.generations.push(legacy(&s, CleanState::Cleaned, s.rows_deleted));
                Phase::Cleaned {
                    rows_pending: 0,
                    released: None,
                }
            }
        };
        rec.generations.sort_by_key(|g| g.number);
        // Work carried on, or garbage to remove: due at once (the alarm fires when armed).
        if matches!(rec.phase, Phase::Working(_)) || !rec.garbage.is_empty() {
            rec.wake_at_ms = Some(0);
        }
        Ok(rec)
    }
}

impl Export {
    /// A fresh export of generation `generation` into `key`.
    pub fn new(generation: u32, key: String, part_size: u64, level: u8, restarts: u32) -> Export {
        Export {
            generation,
            key,
            part_size,
            level,
            upload: Upload::NotStarted,
            cursor: Cursor::Start,
            rows: 0,
            row_bytes: 0,
            stream: StreamPos::default(),
            carry_len: 0,
            pieces: Vec::new(),
            restarts,
            parquet: None,
            real_ts_bounded: true,
        }
    }

    /// The same export, writing Parquet files beside the JSONL when `on`.
    pub fn with_parquet(mut self, on: bool) -> Export {
        self.parquet = on.then(Vec::new);
        self
    }

    /// Every key a Parquet file of this export may have been written under: the files it
    /// keeps, and the next one (a step that wrote it may have crashed before its save).
    pub fn parquet_keys(&self) -> Vec<String> {
        self.parquet
            .as_ref()
            .map(|files| {
                (1..=files.len() as u32 + 1)
                    .map(|n| crate::core::parquet::file_key(&self.key, n))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Bytes handed to R2 so far.
    pub fn uploaded_bytes(&self) -> u64 {
        self.stream.out_len - self.carry_len
    }

    pub fn parts(&self) -> &[PartRef] {
        match &self.upload {
            Upload::NotStarted => &[],
            Upload::Multipart { parts, .. } => parts,
        }
    }
}
