//! What can go wrong, as values: failures of platform calls ([`PortError`]) and of steps
//! ([`StepError`]), and what each means for the machine ([`Recovery`]).
//!
//! Not handling: the machine decides what a failure does to a date. This module only names the
//! failures and gives each a message that says what happened and what will happen or what to do.

use thiserror::Error;

use crate::core::jsonl::MalformedRow;
use crate::core::sql::BadResult;

/// What kind of failure a port reports. The core decides what each kind means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// Anything that may pass on retry: network, timeouts, a busy database, an internal error.
    Transient,
    /// R2 says the multipart upload does not exist (aborted, completed, or expired).
    NoSuchUpload,
    /// The durable record changed while the step ran (a concurrent command won).
    Conflict,
    /// D1 refused a string or BLOB over its 2,000,000-byte limit (SQLite's `SQLITE_TOOBIG`):
    /// the same statement fails the same way on every retry.
    TooBig,
}

/// A failed port call: which call, and what the platform said.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{op} failed: {message}")]
pub struct PortError {
    pub kind: FailureKind,
    /// The call, e.g. `r2.upload_part` or `d1.batch`.
    pub op: &'static str,
    pub message: String,
}

impl PortError {
    pub fn transient(op: &'static str, message: impl Into<String>) -> PortError {
        PortError {
            kind: FailureKind::Transient,
            op,
            message: message.into(),
        }
    }

    /// A failed call of `op` by what the platform said: R2's missing multipart upload (error
    /// 10024), SQLite's string or BLOB over its limit, or else anything worth a retry.
    pub fn of(op: &'static str, message: String) -> PortError {
        let kind = if message.contains("10024") || message.contains("multipart upload does not exist") {
            FailureKind::NoSuchUpload
        } else if message.contains("string or blob too big") || message.contains("SQLITE_TOOBIG") {
            FailureKind::TooBig
        } else {
            FailureKind::Transient
        };
        PortError { kind, op, message }
    }
}

/// Why a step failed. Every message says what happened and what happens next or what to do.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum StepError {
    /// A platform call failed; the step is retried with backoff.
    #[error("{0}; the step will be retried with backoff")]
    Port(PortError),
    /// D1 refused a value over its 2 MB limit on a string ([`FailureKind::TooBig`]).
    #[error("{0}: a row of this date holds a value that, as its JSON line (text with its escapes, a BLOB as hex), passes D1's 2,000,000-byte limit on a string, so retrying cannot help and nothing more is deleted for it. Find that row (README.md, Known limits: rows too large for D1's JSON), shorten, move or delete it, then POST /admin/trigger-archive?date=<this date> resumes; a restore stopped so by a line of an archive an earlier release wrote ends with POST /admin/release?date=<this date>")]
    TooBig(PortError),
    /// D1 answered in an unexpected shape.
    #[error("{0}")]
    BadResult(BadResult),
    /// The export's multipart upload no longer exists (aborted from outside, or expired).
    #[error("multipart upload {upload_id} for {key} no longer exists (aborted or expired); the export starts over from the first row")]
    UploadGone { key: String, upload_id: String },
    /// The durable carry does not have the length the record says.
    #[error("the saved compressor output is {found} bytes but the record expects {expected}; the export starts over from the first row")]
    CarryLost { expected: u64, found: u64 },
    /// The completed object is not the object that was written (size, header or trailer).
    #[error(
        "archive object {key} does not match what was uploaded ({detail}); the export starts over from the first row"
    )]
    ObjectMismatch { key: String, detail: String },
    /// A piece read back from R2 does not match the index: nothing of it was used.
    #[error("piece {piece} of {key} does not match its index ({detail}); nothing of that piece was deleted or restored. {advice}")]
    PieceCorrupt {
        key: String,
        piece: usize,
        detail: String,
        advice: &'static str,
    },
    /// The archive object is gone. Nothing is deleted or restored without it.
    #[error("archive object {key} is missing; nothing more was deleted or restored from it. {advice}")]
    ArchiveMissing { key: String, advice: &'static str },
    /// A restore batch's inserts left lines without a row in the same transaction: the table
    /// ignored them (an app's trigger or constraint), and retrying cannot help.
    #[error("D1 accepted batch {batch} of piece {piece} of {key} but holds no row equal to {missing} of its {lines} lines: traffic_events ignored the inserts or changed the rows (does the app's table have a trigger that ignores, rewrites or deletes inserts, such as RAISE(IGNORE), an ON CONFLICT clause, or columns whose type changed since the export?). Nothing was deleted. Remove the cause, then POST /admin/release?date=<this date> (takes back what this restore inserted) and POST /admin/restore again; a trigger would go on without those rows, counting them as removed")]
    RestoreIgnored {
        key: String,
        piece: usize,
        batch: usize,
        missing: u64,
        lines: u64,
    },
    /// `traffic_events` no longer has the columns an archived line holds (one was added), or
    /// its `id` is not its primary key: a row could hold a value no archive has, or be a copy
    /// no line stands for, so its batch deleted nothing.
    #[error("traffic_events does not have the 12 columns this archiver writes into every archived line (was a column added?), or its id is not its primary key (then ids can repeat, and one archived line would stand for every identical copy of its row); so nothing of batch {batch} of piece {piece} of {key} was deleted. Give the table the columns and the primary key migrations/0001 declares (or deploy an archiver that knows its columns), then resume with POST /admin/trigger-archive; rows the export passed over stay in D1 for the next generation")]
    TableChanged { key: String, piece: usize, batch: usize },
    /// The day would need more than R2's 10,000 parts.
    #[error("the archive needs more than {max} parts of {part_size} bytes; raise PART_SIZE_BYTES and reset the date")]
    TooManyParts { max: usize, part_size: u64 },
    /// The SQL and the encoder disagree about a row.
    #[error("{0}")]
    Malformed(MalformedRow),
    /// A row's line could be exported but never compared or restored ([`crate::core::sql::crosses_too_big`]).
    #[error("the row {row} of this date makes a JSON line of {bytes} bytes, which a cleaning or a restore could not take through D1 under its 2,000,000-byte limit on a string (a restore holds a line twice; a line with a character past U+00FF goes as hex, twice its bytes), so it is not archived and nothing of this export is deleted. Shorten, move or delete that row (README.md, Known limits: rows too large for D1's JSON), then POST /admin/trigger-archive?date=<this date> resumes")]
    LineTooBig { row: String, bytes: u64 },
    /// A step's Parquet file could not be written from its lines (a bug).
    #[error("writing the Parquet file failed: {0}. Every row is still in D1. To archive without Parquet: set PARQUET=false, POST /admin/reset for this date (discards this unfinished export; a trigger alone would resume it with Parquet on), then POST /admin/trigger-archive; and report this error")]
    Parquet(crate::core::parquet::ParquetError),
    /// A Parquet file read back from R2 is not the file that was written. Verification comes
    /// before any DELETE, so every row is still in D1.
    #[error(
        "Parquet file {key} does not match what was written ({detail}); the export starts over from the first row"
    )]
    ParquetMismatch { key: String, detail: String },
    /// The scan gave an id after one it does not follow: bytes for text and BLOB ids, value
    /// for numeric ones.
    #[error("traffic_events gave the row {row} of this date after the row {after}, whose id does not come before it (byte for byte; numbers by value): the table's id column sorts by a collation (such as COLLATE NOCASE), or its ids are not unique. The archiver orders, bounds and compares ids byte for byte (the seek index, reads in place, the cleaning), so this export stops; nothing was deleted. Give the table an id column as migrations/0001 declares it (TEXT PRIMARY KEY, no COLLATE clause), then POST /admin/reset for this date (discards this unfinished export) and POST /admin/trigger-archive")]
    IdOrder { row: String, after: String },
    /// A REAL id whose JSON does not read back as it ([`crate::core::sql::INEXACT`]).
    #[error("the REAL id {id} of a row of this date does not read back from the JSON this database's SQLite writes for it (an older SQLite writes 15 digits), so its line would hold another id than the row's and the scan could not go on from it exactly: this export stops, and nothing was deleted. Give such rows INTEGER or TEXT ids, then POST /admin/reset for this date (discards this unfinished export) and POST /admin/trigger-archive")]
    InexactId { id: String },
}

/// What a failure does to the machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recovery {
    /// Same step again after a backoff; `Failed` after `max_attempts` in a row.
    Retry,
    /// The export starts over; `Failed` after `max_attempts` restarts.
    RestartExport,
    /// Retrying cannot help: `Failed` now, resumable by an operator's trigger.
    Stop,
}

/// How the messages of errors that restart the export, or retry, end: what happens next.
const NEXT: [&str; 2] = [
    "; the export starts over from the first row",
    "; the step will be retried with backoff",
];

impl StepError {
    /// What a date says when it stops after `restarts` restarts of its export for this error
    /// ([`Recovery::RestartExport`]): what kept failing, and the way out (not "starts over").
    pub fn gave_up(&self, restarts: u32) -> String {
        let what = self.to_string();
        let what = NEXT.iter().find_map(|s| what.strip_suffix(s)).unwrap_or(&what);
        let way_out = if let StepError::ParquetMismatch { .. } = self {
            "Every row is still in D1, and the JSONL archive verified each time. To archive without Parquet: set PARQUET=false, POST /admin/reset for this date (discards this unfinished export; a trigger alone would read the same file back again), then POST /admin/trigger-archive"
        } else {
            "Every row is still in D1: nothing was deleted. Check what else writes to this bucket under the archive prefix, or expires or aborts its uploads, then POST /admin/reset for this date (discards this unfinished export) and POST /admin/trigger-archive"
        };
        format!("{what}; gave up after {restarts} restarts of the export. {way_out}")
    }

    /// What a date says when it stops after `attempts` failed attempts of a step in a row for
    /// this error ([`Recovery::Retry`]): what kept failing, and the way out (not "will be
    /// retried"; found by a review).
    pub fn gave_up_retrying(&self, attempts: u32) -> String {
        let what = self.to_string();
        let what = NEXT.iter().find_map(|s| what.strip_suffix(s)).unwrap_or(&what);
        format!("{what}; gave up after {attempts} attempts in a row, and nothing more is tried until an operator acts. Fix what failed, then POST /admin/trigger-archive?date=<this date> resumes the work where it stopped")
    }

    pub fn recovery(&self) -> Recovery {
        match self {
            StepError::Port(e) if e.kind == FailureKind::NoSuchUpload => Recovery::RestartExport,
            StepError::Port(_) | StepError::BadResult(_) => Recovery::Retry,
            StepError::UploadGone { .. }
            | StepError::CarryLost { .. }
            | StepError::ObjectMismatch { .. }
            | StepError::ParquetMismatch { .. } => Recovery::RestartExport,
            StepError::PieceCorrupt { .. }
            | StepError::TooBig(_)
            | StepError::LineTooBig { .. }
            | StepError::IdOrder { .. }
            | StepError::InexactId { .. }
            | StepError::ArchiveMissing { .. }
            | StepError::TooManyParts { .. }
            | StepError::TableChanged { .. }
            | StepError::RestoreIgnored { .. }
            | StepError::Malformed(_)
            | StepError::Parquet(_) => Recovery::Stop,
        }
    }
}

impl From<PortError> for StepError {
    fn from(e: PortError) -> Self {
        match e.kind {
            FailureKind::TooBig => StepError::TooBig(e),
            FailureKind::Transient | FailureKind::NoSuchUpload | FailureKind::Conflict => StepError::Port(e),
        }
    }
}

impl From<BadResult> for StepError {
    fn from(e: BadResult) -> Self {
        StepError::BadResult(e)
    }
}

impl From<MalformedRow> for StepError {
    fn from(e: MalformedRow) -> Self {
        StepError::Malformed(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_export_that_gives_up_says_what_failed_and_the_way_out_not_that_it_starts_over() {
        let key = || "k.jsonl.gz".to_string();
        let restarting = [
            StepError::UploadGone {
                key: key(),
                upload_id: "u".into(),
            },
            StepError::CarryLost { expected: 2, found: 1 },
            StepError::ObjectMismatch {
                key: key(),
                detail: "d".into(),
            },
            StepError::ParquetMismatch {
                key: key(),
                detail: "d".into(),
            },
            StepError::Port(PortError::of("r2.upload_part", "10024".into())),
        ];
        for e in restarting {
            assert_eq!(e.recovery(), Recovery::RestartExport, "{e}");
            let m = e.gave_up(4);
            assert!(!m.contains("starts over") && !m.contains("retried"), "{m}");
            assert!(
                m.contains("gave up after 4 restarts") && m.contains("POST /admin/reset"),
                "{m}"
            );
            let parquet = matches!(e, StepError::ParquetMismatch { .. });
            assert_eq!(m.contains("PARQUET=false"), parquet, "{m}");
        }
    }
}
