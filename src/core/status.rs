//! What a record looks like to the outside: the status JSON, the metadata rows, the log line.
//!
//! Not a decision maker: pure views of a [`Record`]. The metadata rows are written in full after
//! every save, so `archive_metadata` and `archive_objects` always say what the record says:
//! `archive_objects` lists exactly the objects the record knows to exist in R2.

use serde::Serialize;
use serde_json::{json, Value};

use crate::core::index::key_json;
use crate::core::sql::{self, Key, Statement};
use crate::core::state::{Failure, Generation, ParquetFile, Phase, Record, RestoreCounts, Stats, Work};

/// RFC 3339 in UTC, for humans and `jq`.
pub fn iso(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_else(|| ms.to_string())
}

/// The body of `GET /admin/archive-status` (inside `{"status": …}`).
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct Status {
    pub date: String,
    pub phase: String,
    /// For `failed`: the work it stopped in, where a trigger resumes it.
    pub failed_in: Option<String>,
    /// The generation being written, or the newest one.
    pub generation: u32,
    pub object_key: Option<String>,
    /// The open multipart upload, while exporting.
    pub upload_id: Option<String>,
    pub rows_exported: u64,
    pub bytes_uploaded: u64,
    pub uncompressed_bytes: u64,
    pub parts_uploaded: u64,
    pub pieces: u64,
    /// Parquet files written (while exporting) or of the newest generation; `null` when the
    /// current export writes none.
    pub parquet_files: Option<u64>,
    /// Pieces read back and checked so far (while verifying), or all of them once verified.
    pub pieces_verified: u64,
    /// Rows the newest generation's cleaning deleted; while a pass runs (a cleaning or a
    /// release), that pass's count so far.
    pub rows_deleted: u64,
    /// Rows the last release took back from D1 (restored rows deleted again after their hold),
    /// once it ended; `null` after any other pass.
    #[serde(default)]
    pub rows_released: Option<u64>,
    /// Rows of the date still in D1 after the last cleaning pass (0: the date is truly empty).
    pub rows_pending: Option<u64>,
    /// What a restore did (while restoring or holding).
    pub restore: Option<RestoreView>,
    /// Failed attempts of the current step in a row (0 once one succeeds).
    pub attempts: u32,
    /// The newest error, saying what happens next or what to do; kept after the date recovers
    /// (`archive_metadata.error_message` holds only a failed or retrying date's).
    pub last_error: Option<String>,
    /// When the current run began, was last saved, and ended (RFC 3339).
    pub started_at: Option<String>,
    pub updated_at: Option<String>,
    pub finished_at: Option<String>,
    /// When the date's next alarm is due; `null`: none (the date rests).
    pub next_step_at: Option<String>,
    /// The most wasm memory a step of this date has seen (the Worker's 128 MB isolate).
    pub peak_wasm_memory_bytes: u64,
    pub stats: Stats,
    /// Every archive object of the date, oldest first.
    pub generations: Vec<GenerationView>,
}

/// A restore's progress or result.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct RestoreView {
    pub generations: Vec<u32>,
    pub rows_to_restore: u64,
    pub lines_read: u64,
    pub inserted: u64,
    pub already_present: u64,
    pub conflicts: u64,
    pub first_conflicting_ids: Vec<Value>,
    /// Lines of an older generation whose row came back from a newer one (generations are
    /// restored newest first).
    #[serde(default)]
    pub superseded: u64,
    /// Lines whose row the app deleted (or changed, for a NULL id) after the restore's batch
    /// put it back or found it, seen when the batch was checked again; not put back twice.
    #[serde(default)]
    pub removed: u64,
    pub hold_until: String,
    pub done: bool,
}

/// An archive object of the date.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct GenerationView {
    pub generation: u32,
    pub key: String,
    pub index_key: String,
    pub rows: u64,
    pub bytes: u64,
    pub uncompressed_bytes: u64,
    pub crc32: String,
    pub parts: u32,
    pub pieces: u64,
    pub rows_deleted: u64,
    pub state: String,
    pub legacy: bool,
    pub verified_at: Option<String>,
    pub cleaned_at: Option<String>,
    /// Its Parquet files, in order (`GET /admin/archive?format=parquet&file=N` serves file N).
    #[serde(default)]
    pub parquet: Vec<ParquetView>,
}

/// A Parquet file of an archive.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct ParquetView {
    pub file: u32,
    pub key: String,
    pub rows: u64,
    pub bytes: u64,
    pub row_groups: u32,
    pub crc32: String,
}

impl ParquetView {
    pub fn list(files: &[ParquetFile]) -> Vec<ParquetView> {
        files
            .iter()
            .enumerate()
            .map(|(i, f)| ParquetView {
                file: i as u32 + 1,
                key: f.key.clone(),
                rows: f.rows,
                bytes: f.bytes,
                row_groups: f.row_groups,
                crc32: format!("{:08x}", f.crc32),
            })
            .collect()
    }
}

impl GenerationView {
    fn of(g: &Generation) -> GenerationView {
        GenerationView {
            generation: g.number,
            key: g.key.clone(),
            index_key: g.index_key.clone(),
            rows: g.rows,
            bytes: g.bytes,
            uncompressed_bytes: g.raw_bytes,
            crc32: format!("{:08x}", g.crc32),
            parts: g.parts,
            pieces: g.pieces.len() as u64,
            rows_deleted: g.rows_deleted,
            state: object_state(g).to_string(),
            legacy: g.legacy,
            verified_at: g.verified_at_ms.map(iso),
            cleaned_at: g.cleaned_at_ms.map(iso),
            parquet: ParquetView::list(&g.parquet),
        }
    }
}

fn object_state(g: &Generation) -> &'static str {
    use crate::core::state::CleanState;
    match g.cleaning {
        CleanState::NotCleaned => "verified",
        CleanState::Cleaning => "cleaning",
        CleanState::Cleaned => "cleaned",
        CleanState::Partial => "partly_cleaned",
    }
}

/// The work a record is in, whether running or failed.
fn work_of(rec: &Record) -> Option<&Work> {
    match &rec.phase {
        Phase::Working(w) | Phase::Failed(Failure { work: w, .. }) => Some(w),
        Phase::Idle | Phase::Uploaded { .. } | Phase::Cleaned { .. } | Phase::Restored(_) => None,
    }
}

pub fn status(rec: &Record) -> Status {
    let newest = rec.generations.last();
    let mut s = Status {
        date: rec.date.clone(),
        phase: rec.phase.name().to_string(),
        failed_in: match &rec.phase {
            Phase::Failed(f) => Some(f.work.name().to_string()),
            Phase::Idle | Phase::Working(_) | Phase::Uploaded { .. } | Phase::Cleaned { .. } | Phase::Restored(_) => {
                None
            }
        },
        generation: newest.map_or(0, |g| g.number),
        object_key: newest.map(|g| g.key.clone()),
        upload_id: None,
        rows_exported: newest.map_or(0, |g| g.rows),
        bytes_uploaded: newest.map_or(0, |g| g.bytes),
        uncompressed_bytes: newest.map_or(0, |g| g.raw_bytes),
        parts_uploaded: newest.map_or(0, |g| u64::from(g.parts)),
        pieces: newest.map_or(0, |g| g.pieces.len() as u64),
        parquet_files: newest.map(|g| g.parquet.len() as u64).filter(|n| *n > 0),
        pieces_verified: newest.map_or(0, |g| g.pieces.len() as u64),
        rows_deleted: newest.map_or(0, |g| g.rows_deleted),
        rows_pending: rec.phase.rows_pending(),
        rows_released: rec.phase.released(),
        restore: None,
        attempts: rec.attempts,
        last_error: rec.last_error.clone(),
        started_at: rec.started_at_ms.map(iso),
        updated_at: rec.updated_at_ms.map(iso),
        finished_at: rec.finished_at_ms.map(iso),
        next_step_at: rec.wake_at_ms.map(iso),
        peak_wasm_memory_bytes: rec.stats.peak_memory_bytes,
        stats: rec.stats.clone(),
        generations: rec.generations.iter().map(GenerationView::of).collect(),
    };
    if let Some(work) = work_of(rec) {
        fill_work(&mut s, rec, work);
    }
    if let Phase::Restored(hold) = &rec.phase {
        s.restore = Some(restore_view(rec, &hold.generations, &hold.counts, hold.until_ms, true));
    }
    s
}

fn fill_work(s: &mut Status, rec: &Record, work: &Work) {
    match work {
        Work::Exporting(ex) => {
            s.generation = ex.generation;
            s.object_key = Some(ex.key.clone());
            s.upload_id = match &ex.upload {
                crate::core::state::Upload::Multipart { upload_id, .. } => Some(upload_id.clone()),
                crate::core::state::Upload::NotStarted => None,
            };
            s.rows_exported = ex.rows;
            s.bytes_uploaded = ex.uploaded_bytes();
            s.uncompressed_bytes = ex.stream.raw_len;
            s.parts_uploaded = ex.parts().len() as u64;
            s.pieces = ex.pieces.len() as u64;
            s.parquet_files = ex.parquet.as_ref().map(|f| f.len() as u64);
            (s.pieces_verified, s.rows_deleted) = (0, 0);
        }
        Work::Completing(w) => {
            s.generation = w.generation;
            s.object_key = Some(w.key.clone());
            s.rows_exported = w.rows;
            s.bytes_uploaded = w.stream.out_len;
            s.uncompressed_bytes = w.stream.raw_len;
            s.pieces = w.pieces.len() as u64;
            s.parquet_files = w.parquet.as_ref().map(|f| f.len() as u64);
            (s.pieces_verified, s.rows_deleted) = (0, 0);
        }
        Work::Verifying(v) => {
            let g = &v.archive;
            s.generation = g.number;
            s.object_key = Some(g.key.clone());
            (s.rows_exported, s.bytes_uploaded, s.uncompressed_bytes) = (g.rows, g.bytes, g.raw_bytes);
            (s.parts_uploaded, s.pieces, s.pieces_verified) =
                (u64::from(g.parts), g.pieces.len() as u64, v.next as u64);
            s.parquet_files = (!g.parquet.is_empty()).then_some(g.parquet.len() as u64);
            s.rows_deleted = 0;
        }
        Work::Cleaning(p) => s.rows_deleted = p.rows,
        Work::Restoring(r) => {
            s.restore = Some(restore_view(
                rec,
                &r.walk.generations,
                &r.counts,
                r.hold_until_ms,
                false,
            ));
        }
    }
}

fn restore_view(rec: &Record, gens: &[u32], counts: &RestoreCounts, until_ms: i64, done: bool) -> RestoreView {
    RestoreView {
        generations: gens.to_vec(),
        rows_to_restore: gens.iter().filter_map(|n| rec.generation(*n)).map(|g| g.rows).sum(),
        lines_read: counts.lines,
        inserted: counts.inserted,
        already_present: counts.present,
        conflicts: counts.conflicts,
        first_conflicting_ids: counts.conflict_ids.clone(),
        superseded: counts.superseded,
        removed: counts.removed,
        hold_until: iso(until_ms),
        done,
    }
}

/// One archive object of a date, with what a reader needs to read it in place.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct ArchiveObject {
    pub generation: u32,
    pub key: String,
    pub bytes: u64,
    pub rows: u64,
    /// Written by state version 1: no per-piece checksums, served whole only.
    pub legacy: bool,
    pub pieces: Vec<crate::core::index::Piece>,
    #[serde(default)]
    pub parquet: Vec<ParquetFile>,
    /// As [`crate::core::state::Export::real_ts_bounded`].
    #[serde(default)]
    pub real_ts_bounded: bool,
}

impl ArchiveObject {
    /// The objects of a record, oldest first.
    pub fn of(rec: &Record) -> Vec<ArchiveObject> {
        rec.generations
            .iter()
            .map(|g| ArchiveObject {
                generation: g.number,
                key: g.key.clone(),
                bytes: g.bytes,
                rows: g.rows,
                legacy: g.legacy,
                pieces: g.pieces.clone(),
                parquet: g.parquet.clone(),
                real_ts_bounded: g.real_ts_bounded,
            })
            .collect()
    }
}

// ---------------------------------------------------------------------------------------------
// Metadata rows

fn key_text(k: &Option<Key>) -> Value {
    match k {
        Some(Key::Text(t)) => Value::from(t.as_str()),
        other => match key_json(other) {
            Value::Null => Value::Null,
            v @ (Value::Bool(_) | Value::Number(_) | Value::String(_) | Value::Array(_) | Value::Object(_)) => {
                Value::from(v.to_string())
            }
        },
    }
}

/// The `archive_metadata` row (as the JSON [`sql::UPSERT_DATE`] reads) and the
/// `archive_objects` rows of `rec`, as a D1 batch, for `rec` as saved at `revision`.
pub fn metadata_statements(rec: &Record, revision: u64, now_ms: i64) -> Vec<Statement> {
    let newest = rec.generations.last();
    // The error of a failed date, or of the step being retried; none once a date recovered (the
    // status page keeps the newest error). Not for a stale record: these rows are written as it
    // stops being stale (a review found every row carried the last error ever seen).
    let error = if let Phase::Failed(f) = &rec.phase {
        Some(f.error.clone())
    } else if rec.attempts > 0 {
        rec.last_error.clone()
    } else {
        None
    };
    let restore = match &rec.phase {
        Phase::Restored(h) => Some((h.counts.inserted, h.until_ms)),
        Phase::Working(Work::Restoring(r)) => Some((r.counts.inserted, r.hold_until_ms)),
        Phase::Idle
        | Phase::Working(Work::Exporting(_) | Work::Completing(_) | Work::Verifying(_) | Work::Cleaning(_))
        | Phase::Uploaded { .. }
        | Phase::Cleaned { .. }
        | Phase::Failed(_) => None,
    };
    let generation = work_of(rec).map_or(newest.map_or(0, |g| g.number), |w| match w {
        Work::Exporting(ex) => ex.generation,
        Work::Completing(w) => w.generation,
        Work::Verifying(v) => v.archive.number,
        Work::Cleaning(_) | Work::Restoring(_) => newest.map_or(0, |g| g.number),
    });
    let rows_pending = rec.phase.rows_pending();
    let date_row = json!({
        "r2_path": newest.map(|g| g.key.clone()),
        "record_count": newest.map(|g| g.rows),
        "file_size_bytes": newest.map(|g| g.bytes),
        "status": rec.phase.name(),
        "error_message": error,
        "archived_at": rec.started_at_ms,
        "completed_at": matches!(rec.phase, Phase::Cleaned { .. }).then_some(rec.finished_at_ms).flatten(),
        "d1_cleaned": i64::from(rows_pending == Some(0)),
        "generation": generation,
        "parts": newest.map(|g| g.parts),
        "checksum_crc32": newest.map(|g| format!("{:08x}", g.crc32)),
        "first_id": newest.and_then(|g| g.pieces.first()).map_or(Value::Null, |p| key_text(&p.first_id)),
        "last_id": newest.and_then(|g| g.pieces.last()).map_or(Value::Null, |p| key_text(&p.last_id)),
        "rows_deleted": newest.map_or(0, |g| g.rows_deleted),
        "total_record_count": rec.generations.iter().map(|g| g.rows).sum::<u64>(),
        "attempts": rec.attempts,
        "updated_at": now_ms,
        "rows_pending": rows_pending,
        "rows_restored": restore.map(|r| r.0),
        "hold_until": restore.map(|r| r.1),
        "next_step_at": rec.wake_at_ms,
    });
    let mut objects: Vec<Value> = rec
        .generations
        .iter()
        .map(|g| object_row(rec, g, object_state(g), now_ms))
        .collect();
    if let Phase::Working(Work::Verifying(v))
    | Phase::Failed(crate::core::state::Failure {
        work: Work::Verifying(v),
        ..
    }) = &rec.phase
    {
        objects.push(object_row(rec, &v.archive, "verifying", now_ms));
    }
    objects.extend(parquet_rows(rec, now_ms));
    let keys: Vec<Value> = objects.iter().map(|o| o["key"].clone()).collect();
    sql::sync_metadata(
        &rec.date,
        &date_row,
        &Value::from(objects),
        &Value::from(keys),
        (now_ms, revision),
    )
}

fn object_row(rec: &Record, g: &Generation, state: &str, now_ms: i64) -> Value {
    json!({
        "key": g.key, "date": rec.date, "generation": g.number, "format": "jsonl.gz", "state": state,
        "rows": g.rows, "bytes": g.bytes, "uncompressed_bytes": g.raw_bytes,
        "checksum_crc32": format!("{:08x}", g.crc32), "parts": g.parts, "pieces": g.pieces.len(),
        "index_key": g.index_key, "rows_deleted": g.rows_deleted,
        "created_at": g.created_at_ms, "verified_at": g.verified_at_ms, "cleaned_at": g.cleaned_at_ms,
        "updated_at": now_ms,
    })
}

/// One `archive_objects` row per Parquet file of the verified generations (and of the one
/// being verified), in its generation's state.
fn parquet_rows(rec: &Record, now_ms: i64) -> Vec<Value> {
    let verifying = match work_of(rec) {
        Some(Work::Verifying(v)) => Some((&v.archive, "verifying")),
        Some(Work::Exporting(_) | Work::Completing(_) | Work::Cleaning(_) | Work::Restoring(_)) | None => None,
    };
    let gens = rec.generations.iter().map(|g| (g, object_state(g))).chain(verifying);
    gens.flat_map(|(g, state)| {
        g.parquet.iter().map(move |f| {
            json!({
                "key": f.key, "date": rec.date, "generation": g.number, "format": "parquet", "state": state,
                "rows": f.rows, "bytes": f.bytes, "uncompressed_bytes": 0,
                "checksum_crc32": format!("{:08x}", f.crc32), "parts": 1, "pieces": f.row_groups,
                "index_key": "", "rows_deleted": 0,
                "created_at": g.created_at_ms, "verified_at": g.verified_at_ms, "cleaned_at": g.cleaned_at_ms,
                "updated_at": now_ms,
            })
        })
    })
    .collect()
}

// ---------------------------------------------------------------------------------------------
// Log lines

/// One JSON log line per step and per command, for `wrangler tail` and Workers Logs. It names
/// the date, the action and the phases, with counts and the error; never a secret, never the
/// content of a row.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StepLog {
    pub archiver: &'static str,
    pub date: String,
    pub generation: u32,
    pub action: &'static str,
    pub phase_before: &'static str,
    pub phase_after: &'static str,
    pub rows: u64,
    pub bytes: u64,
    pub duration_ms: u64,
    /// Of which the step's own work (encoding, compressing, checking); the rest waited for D1/R2.
    pub busy_ms: u64,
    /// Wasm linear memory at the end of the step (it only grows: the isolate's peak so far).
    pub wasm_memory_bytes: u64,
    pub attempt: u32,
    pub error: Option<String>,
    pub at: String,
}

impl StepLog {
    pub fn new(rec: &Record, action: &'static str, before: &'static str, now_ms: i64) -> StepLog {
        StepLog {
            archiver: "d1-archiver",
            date: rec.date.clone(),
            generation: status(rec).generation,
            action,
            phase_before: before,
            phase_after: rec.phase.name(),
            rows: 0,
            bytes: 0,
            duration_ms: 0,
            busy_ms: 0,
            wasm_memory_bytes: 0,
            attempt: rec.attempts,
            error: None,
            at: iso(now_ms),
        }
    }

    pub fn line(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}
