//! What a record looks like to the outside: the status JSON and the `archive_metadata` row.
//!
//! Not a decision maker: pure views of a [`Record`].

use serde::Serialize;

use crate::core::sql::MetadataRow;
use crate::core::state::{Phase, Record, Stats};

/// The body of `GET /admin/archive-status`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Status {
    pub date: String,
    pub phase: &'static str,
    /// For `failed`: the phase it stopped in, where a trigger resumes it.
    pub failed_in: Option<&'static str>,
    pub generation: u32,
    pub object_key: Option<String>,
    /// The open multipart upload, while exporting.
    pub upload_id: Option<String>,
    pub rows_exported: u64,
    /// Rows of the archived set in D1, known once verified.
    pub rows_in_set: Option<u64>,
    pub bytes_uploaded: u64,
    pub uncompressed_bytes: u64,
    pub parts_uploaded: u64,
    pub rows_deleted: u64,
    pub attempts: u32,
    pub last_error: Option<String>,
    pub started_at: Option<String>,
    pub updated_at: Option<String>,
    pub finished_at: Option<String>,
    pub next_step_at: Option<String>,
    pub peak_wasm_memory_bytes: u64,
    pub stats: Stats,
    pub generations: Vec<GenerationView>,
}

/// A finished generation, for the status page and `GET /admin/archive?generation=N`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GenerationView {
    pub generation: u32,
    pub key: String,
    pub rows: u64,
    pub bytes: u64,
    pub finished_at: Option<String>,
}

/// RFC 3339 in UTC, for humans and `jq`.
pub fn iso(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_else(|| ms.to_string())
}

pub fn status(rec: &Record) -> Status {
    let (phase_for_numbers, failed_in) = match &rec.phase {
        Phase::Failed(f) => (&*f.at, Some(f.at.name())),
        other => (other, None),
    };
    let mut s = Status {
        date: rec.date.clone(),
        phase: rec.phase.name(),
        failed_in,
        generation: rec.generation,
        object_key: None,
        upload_id: None,
        rows_exported: 0,
        rows_in_set: None,
        bytes_uploaded: 0,
        uncompressed_bytes: 0,
        parts_uploaded: 0,
        rows_deleted: 0,
        attempts: rec.attempts,
        last_error: rec.last_error.clone(),
        started_at: rec.started_at_ms.map(iso),
        updated_at: rec.updated_at_ms.map(iso),
        finished_at: rec.finished_at_ms.map(iso),
        next_step_at: rec.wake_at_ms.map(iso),
        peak_wasm_memory_bytes: rec.stats.peak_memory_bytes,
        stats: rec.stats.clone(),
        generations: rec
            .history
            .iter()
            .map(|h| GenerationView {
                generation: h.generation,
                key: h.key.clone(),
                rows: h.rows,
                bytes: h.bytes,
                finished_at: h.finished_at_ms.map(iso),
            })
            .collect(),
    };
    match phase_for_numbers {
        Phase::Idle | Phase::Failed(_) => {}
        Phase::Exporting(ex) | Phase::Finalizing(ex) => {
            s.object_key = Some(ex.key.clone());
            s.upload_id = ex.upload_id.clone();
            s.rows_exported = ex.rows;
            s.bytes_uploaded = ex.uploaded_bytes();
            s.uncompressed_bytes = ex.stream.raw_len;
            s.parts_uploaded = ex.parts.len() as u64;
        }
        Phase::Uploaded(a) => {
            fill_archive(&mut s, &a.summary);
        }
        Phase::Cleaning(c) => {
            fill_archive(&mut s, &c.archive.summary);
            s.rows_deleted = c.rows_deleted;
        }
        Phase::Cleaned(summary) => {
            fill_archive(&mut s, summary);
            s.rows_deleted = summary.rows_deleted;
        }
    }
    s
}

fn fill_archive(s: &mut Status, a: &crate::core::state::ArchiveSummary) {
    s.object_key = Some(a.key.clone());
    s.rows_exported = a.rows;
    s.rows_in_set = Some(a.rows);
    s.bytes_uploaded = a.bytes;
    s.uncompressed_bytes = a.raw_bytes;
    s.parts_uploaded = u64::from(a.parts);
}

/// The `archive_metadata` row for `rec`, or `None` for a date that never ran.
pub fn metadata_row(rec: &Record, now_ms: i64) -> Option<MetadataRow> {
    if rec.generation == 0 && matches!(rec.phase, Phase::Idle) {
        return None;
    }
    let st = status(rec);
    let archive = match &rec.phase {
        Phase::Failed(f) => archive_of(&f.at),
        other => archive_of(other),
    };
    let status_name = match &rec.phase {
        Phase::Finalizing(_) => "exporting",
        other => other.name(),
    };
    let earlier_rows: u64 = rec
        .history
        .iter()
        .filter(|h| h.generation != rec.generation)
        .map(|h| h.rows)
        .sum();
    let this_rows = archive.map(|a| a.rows).unwrap_or(0);
    Some(MetadataRow {
        date: rec.date.clone(),
        r2_path: st.object_key.clone(),
        record_count: archive.map(|a| a.rows),
        file_size_bytes: archive.map(|a| a.bytes),
        status: status_name,
        error_message: match &rec.phase {
            Phase::Failed(f) => Some(f.error.clone()),
            _ if rec.attempts > 0 => rec.last_error.clone(),
            _ => None,
        },
        archived_at: rec.started_at_ms,
        completed_at: match &rec.phase {
            Phase::Cleaned(s) => s.finished_at_ms,
            _ => None,
        },
        d1_cleaned: matches!(rec.phase, Phase::Cleaned(_)),
        generation: rec.generation,
        parts: archive.map(|a| a.parts),
        checksum_crc32: archive.map(|a| format!("{:08x}", a.crc32)),
        first_id: archive.and_then(|a| a.first_id.clone()),
        last_id: archive.and_then(|a| a.last_id.clone()),
        cutoff_created_at: archive.map(|a| a.cutoff),
        rows_deleted: st.rows_deleted,
        total_record_count: earlier_rows + this_rows,
        attempts: rec.attempts,
        updated_at: now_ms,
    })
}

fn archive_of(phase: &Phase) -> Option<&crate::core::state::ArchiveSummary> {
    match phase {
        Phase::Uploaded(a) => Some(&a.summary),
        Phase::Cleaning(c) => Some(&c.archive.summary),
        Phase::Cleaned(s) => Some(s),
        Phase::Idle | Phase::Exporting(_) | Phase::Finalizing(_) | Phase::Failed(_) => None,
    }
}
