//! The archive state machine: what to do next for a date, and what a result means.
//!
//! Not I/O: [`next_action`] looks at a [`Record`] and names one bounded step; the engine performs
//! it through the ports and hands back an [`Outcome`]; [`handle_outcome`] folds that into the
//! next record. Operators' commands go through [`handle_command`]. Time is an argument.
//!
//! **Invariant: every action is safe to repeat.** Alarms are at-least-once and a crash can land
//! between any I/O call and the save that follows it, so an action may run again from the last
//! saved record with some of its effects already done. Concretely: parts are re-uploaded under
//! the same numbers (R2 keeps the newest), completing a completed upload is recognised by the
//! object's size and trailer, and a range delete that already happened deletes nothing.
//!
//! Rows leave D1 only through [`Action::Clean`], which exists only for an archive that was
//! completed, measured (size, CRC-32 trailer) and matched against D1 (count and fingerprint).

use thiserror::Error;

use crate::core::config::{Config, R2_MAX_PARTS};
use crate::core::date::object_key;
use crate::core::gzip::StreamPos;
use crate::core::jsonl::MalformedRow;
use crate::core::sql::BadResult;
use crate::core::state::{
    Archive, ArchiveSummary, Checkpoint, Cleaning, Export, Failure, PartRef, Phase, Piece, Record,
};
use crate::ports::{FailureKind, PortError};

// ---------------------------------------------------------------------------------------------
// Actions: what the engine is asked to do

/// One bounded step.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Nothing to do until a command arrives.
    Wait,
    /// Read D1's clock as the set's cutoff, and whether the set has any row.
    Capture { date: String },
    /// Export the next slice of rows.
    Export(ExportPlan),
    /// Complete the upload, then verify the object and the set, and record the archive.
    Finalize(FinalizePlan),
    /// Check the archive is still there, then delete these checkpoint ranges.
    Clean(CleanPlan),
    /// Count what is left of the set; zero means cleaned.
    FinalCheck { date: String, cutoff: i64 },
}

impl Action {
    /// A short name for logs and step reports.
    pub fn name(&self) -> &'static str {
        match self {
            Action::Wait => "wait",
            Action::Capture { .. } => "capture",
            Action::Export(_) => "export",
            Action::Finalize(_) => "finalize",
            Action::Clean(_) => "clean",
            Action::FinalCheck { .. } => "final-check",
        }
    }
}

/// The inputs of one export step.
#[derive(Debug, Clone, PartialEq)]
pub struct ExportPlan {
    pub date: String,
    pub key: String,
    pub cutoff: i64,
    pub upload_id: Option<String>,
    pub part_size: u64,
    pub level: u8,
    pub cursor: String,
    pub stream: StreamPos,
    /// Number of the next part to upload.
    pub next_part: u16,
    /// Bytes the engine must find in the durable carry.
    pub carry_len: u64,
    pub step_rows: u64,
    pub step_bytes: u64,
    pub page_rows: u32,
    pub page_bytes: u64,
    pub checkpoint_rows: u64,
    pub rows_since_checkpoint: u64,
    /// Id after which the current checkpoint range began.
    pub last_checkpoint: String,
}

/// What one export step did.
#[derive(Debug, Clone, PartialEq)]
pub struct ExportProgress {
    /// Set when the step created the multipart upload.
    pub created_upload: Option<String>,
    pub cursor: String,
    pub rows: u64,
    pub fp: i64,
    pub stream: StreamPos,
    pub new_parts: Vec<PartRef>,
    pub carry_len: u64,
    pub piece: Option<Piece>,
    pub checkpoints: Vec<Checkpoint>,
    pub rows_since_checkpoint: u64,
    /// The scan reached the end of the set and the stream is ended and uploaded.
    pub finished: bool,
    /// The whole object was written with one `put`.
    pub single_put: bool,
    pub io: IoStats,
}

/// D1 and memory accounting of one step.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IoStats {
    pub rows_read: u64,
    pub rows_written: u64,
    pub queries: u64,
    pub max_buffer: u64,
    /// Wall time spent waiting for D1's export pages beyond our own work on the previous one.
    pub page_wait_ms: u64,
    /// Wall time spent encoding, compressing and uploading.
    pub encode_ms: u64,
}

/// The inputs of the finalize step.
#[derive(Debug, Clone, PartialEq)]
pub struct FinalizePlan {
    pub date: String,
    pub key: String,
    pub cutoff: i64,
    /// `None` when the object was written with a single put.
    pub upload_id: Option<String>,
    pub parts: Vec<(u16, String)>,
    pub bytes: u64,
    pub crc32: u32,
    pub raw_bytes: u64,
    pub rows: u64,
    pub fp: i64,
    /// The seek index, written next to the object.
    pub index_key: String,
    pub index_json: String,
}

/// The inputs of one cleaning step.
#[derive(Debug, Clone, PartialEq)]
pub struct CleanPlan {
    pub date: String,
    pub key: String,
    pub bytes: u64,
    pub cutoff: i64,
    /// `(after, upto, rows)`: delete the set's rows with `after < id <= upto` if there are `rows`.
    pub ranges: Vec<(String, String, u64)>,
}

/// What the engine reports back.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// `any` is false when the set is empty.
    Captured {
        cutoff: i64,
        any: bool,
        io: IoStats,
    },
    Exported(ExportProgress),
    /// The object is complete and matches; the set in D1 matches the export.
    Finalized {
        first_id: Option<String>,
        last_id: Option<String>,
        io: IoStats,
    },
    /// The first `ranges` ranges of the plan are deleted.
    Deleted {
        ranges: usize,
        rows: u64,
        io: IoStats,
    },
    /// Rows of the set still in D1.
    Checked {
        remaining: u64,
        io: IoStats,
    },
    /// Nothing was done (the action was `Wait`); the record stays as it is.
    Nothing,
    Failed(StepError),
}

// ---------------------------------------------------------------------------------------------
// Errors of a step, and what each one means for the machine

/// Why a step failed. Every message says what happened and what will happen or what to do.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum StepError {
    /// A platform call failed; the step is retried with backoff.
    #[error("{0}; the step will be retried with backoff")]
    Port(PortError),
    /// D1 answered in an unexpected shape.
    #[error("{0}")]
    BadResult(BadResult),
    /// The export's multipart upload no longer exists (aborted from outside, or expired).
    #[error("multipart upload {upload_id} for {key} no longer exists (aborted or expired); the export starts over from the first row")]
    UploadGone { key: String, upload_id: String },
    /// The durable carry does not have the length the record says.
    #[error("the saved compressor output is {found} bytes but the record expects {expected}; the export starts over from the first row")]
    CarryLost { expected: u64, found: u64 },
    /// The completed object is not the object that was written.
    #[error(
        "archive object {key} does not match what was uploaded ({detail}); the export starts over from the first row"
    )]
    ObjectMismatch { key: String, detail: String },
    /// The set in D1 is not what was exported: rows changed during the export.
    #[error("D1 holds {in_d1} rows of the archived set (fingerprint {fp_d1}) but {exported} were exported (fingerprint {fp_exported}); rows changed during the export, so it starts over")]
    SetChanged {
        exported: u64,
        in_d1: u64,
        fp_exported: i64,
        fp_d1: i64,
    },
    /// The archive object vanished after it was verified. Nothing is deleted without it.
    #[error("archive object {key} is missing; nothing was deleted from D1. Restore the object, or reset the date (POST /admin/reset) and archive it again")]
    ArchiveMissing { key: String },
    /// A range of the set no longer holds the rows the archive holds for it.
    #[error("refused to delete ids ({after:?}, {upto:?}]: D1 holds {in_d1} rows of the set there but the archive holds {archived}; nothing in that range was deleted. Rows were changed outside the archiver: inspect them, then reset the date")]
    DeleteRefused {
        after: String,
        upto: String,
        archived: u64,
        in_d1: u64,
    },
    /// After every range was deleted, rows of the set remain.
    #[error("{remaining} rows of the archived set are still in D1 after cleaning; they are not in the archive and were kept. Inspect rows of this date with a NULL or altered created_at")]
    RowsLeft { remaining: u64 },
    /// The day would need more than R2's 10,000 parts.
    #[error("the archive needs more than {max} parts of {part_size} bytes; raise PART_SIZE_BYTES and reset the date")]
    TooManyParts { max: usize, part_size: u64 },
    /// The SQL and the encoder disagree about a row.
    #[error("{0}")]
    Malformed(MalformedRow),
}

/// What a failure does to the machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recovery {
    /// Same step again after a backoff; `Failed` after `max_attempts` in a row.
    Retry,
    /// The export starts over with a new set capture; `Failed` after `max_attempts` restarts.
    RestartExport,
    /// Retrying cannot help: `Failed` now, resumable by an operator's trigger.
    Stop,
}

impl StepError {
    pub fn recovery(&self) -> Recovery {
        match self {
            StepError::Port(e) if e.kind == FailureKind::NoSuchUpload => Recovery::RestartExport,
            StepError::Port(_) | StepError::BadResult(_) => Recovery::Retry,
            StepError::UploadGone { .. }
            | StepError::CarryLost { .. }
            | StepError::ObjectMismatch { .. }
            | StepError::SetChanged { .. } => Recovery::RestartExport,
            StepError::ArchiveMissing { .. }
            | StepError::DeleteRefused { .. }
            | StepError::RowsLeft { .. }
            | StepError::TooManyParts { .. }
            | StepError::Malformed(_) => Recovery::Stop,
        }
    }
}

impl From<PortError> for StepError {
    fn from(e: PortError) -> Self {
        StepError::Port(e)
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

// ---------------------------------------------------------------------------------------------
// Deciding

/// The one step to take now for `rec`.
pub fn next_action(rec: &Record, cfg: &Config) -> Action {
    match &rec.phase {
        Phase::Idle | Phase::Cleaned(_) | Phase::Failed(_) => Action::Wait,
        Phase::Exporting(ex) => match ex.cutoff {
            None => Action::Capture { date: rec.date.clone() },
            Some(cutoff) => Action::Export(export_plan(&rec.date, ex, cutoff, cfg)),
        },
        Phase::Finalizing(ex) => Action::Finalize(finalize_plan(&rec.date, ex)),
        Phase::Uploaded(archive) if cfg.auto_cleanup => clean_action(&rec.date, archive, 0, cfg),
        Phase::Uploaded(_) => Action::Wait,
        Phase::Cleaning(c) => clean_action(&rec.date, &c.archive, c.next, cfg),
    }
}

fn export_plan(date: &str, ex: &Export, cutoff: i64, cfg: &Config) -> ExportPlan {
    ExportPlan {
        date: date.to_string(),
        key: ex.key.clone(),
        cutoff,
        upload_id: ex.upload_id.clone(),
        part_size: ex.part_size,
        level: ex.level,
        cursor: ex.cursor.clone(),
        stream: ex.stream,
        next_part: ex.parts.len() as u16 + 1,
        carry_len: ex.carry_len,
        step_rows: cfg.step_rows,
        step_bytes: cfg.step_bytes,
        page_rows: cfg.page_rows,
        page_bytes: cfg.page_bytes,
        checkpoint_rows: cfg.clean_batch_rows,
        rows_since_checkpoint: ex.rows_since_checkpoint,
        last_checkpoint: ex.checkpoints.last().map(|c| c.upto.clone()).unwrap_or_default(),
    }
}

fn finalize_plan(date: &str, ex: &Export) -> FinalizePlan {
    FinalizePlan {
        date: date.to_string(),
        key: ex.key.clone(),
        cutoff: ex.cutoff.unwrap_or_default(),
        upload_id: if ex.single_put { None } else { ex.upload_id.clone() },
        parts: ex.parts.iter().map(|p| (p.number, p.etag.clone())).collect(),
        bytes: ex.stream.out_len,
        crc32: ex.stream.crc,
        raw_bytes: ex.stream.raw_len,
        rows: ex.rows,
        fp: ex.fp,
        index_key: crate::core::date::index_key(&ex.key),
        index_json: index_json(date, ex),
    }
}

/// The sidecar seek index: enough for a reader to fetch and inflate any piece on its own.
fn index_json(date: &str, ex: &Export) -> String {
    serde_json::json!({
        "format": "gzip member of JSON Lines; each piece is raw deflate ending in a full flush",
        "date": date,
        "object": ex.key,
        "rows": ex.rows,
        "bytes": ex.stream.out_len,
        "uncompressed_bytes": ex.stream.raw_len,
        "crc32": format!("{:08x}", ex.stream.crc),
        "pieces": ex.pieces,
    })
    .to_string()
}

fn clean_action(date: &str, archive: &Archive, next: usize, cfg: &Config) -> Action {
    let s = &archive.summary;
    if next >= archive.checkpoints.len() {
        return Action::FinalCheck {
            date: date.to_string(),
            cutoff: s.cutoff,
        };
    }
    let mut ranges = Vec::new();
    let mut rows = 0;
    for i in next..archive.checkpoints.len() {
        let cp = &archive.checkpoints[i];
        if !ranges.is_empty() && rows + cp.rows > cfg.clean_step_rows {
            break;
        }
        let after = if i == 0 {
            String::new()
        } else {
            archive.checkpoints[i - 1].upto.clone()
        };
        ranges.push((after, cp.upto.clone(), cp.rows));
        rows += cp.rows;
    }
    Action::Clean(CleanPlan {
        date: date.to_string(),
        key: s.key.clone(),
        bytes: s.bytes,
        cutoff: s.cutoff,
        ranges,
    })
}

/// When the next alarm is due for `rec` (unix ms), or `None` for no alarm.
pub fn next_wake(rec: &Record, now_ms: i64, cfg: &Config) -> Option<i64> {
    let running = match &rec.phase {
        Phase::Exporting(_) | Phase::Finalizing(_) | Phase::Cleaning(_) => true,
        Phase::Uploaded(_) => cfg.auto_cleanup,
        Phase::Idle | Phase::Cleaned(_) | Phase::Failed(_) => false,
    };
    let delay = if rec.attempts == 0 {
        0
    } else {
        cfg.backoff_ms(rec.attempts) as i64
    };
    running.then_some(now_ms + delay)
}

// ---------------------------------------------------------------------------------------------
// Folding results

/// The record after `outcome` of the action [`next_action`] chose for `rec`.
pub fn handle_outcome(mut rec: Record, outcome: Outcome, now_ms: i64, cfg: &Config) -> Record {
    rec.updated_at_ms = Some(now_ms);
    rec.stats.steps += 1;
    let outcome = match outcome {
        Outcome::Failed(err) => return handle_failure(rec, err, now_ms, cfg),
        ok => ok,
    };
    let phase = std::mem::replace(&mut rec.phase, Phase::Idle);
    rec.phase = match (phase, outcome) {
        (Phase::Exporting(mut ex), Outcome::Captured { cutoff, any, io }) => {
            note_io(&mut rec, io, false);
            match rec.history.last().cloned() {
                // A later generation with nothing new: back to the previous archive, no object.
                Some(prev) if !any => {
                    rec.generation = prev.generation;
                    rec.finished_at_ms = prev.finished_at_ms;
                    Phase::Cleaned(prev)
                }
                _ => {
                    ex.cutoff = Some(cutoff);
                    rec.stats.export_started_ms = Some(now_ms);
                    Phase::Exporting(ex)
                }
            }
        }
        (Phase::Exporting(mut ex), Outcome::Exported(p)) => {
            note_io(&mut rec, p.io, true);
            if let Some(id) = p.created_upload {
                ex.upload_id = Some(id);
            }
            ex.cursor = p.cursor;
            ex.rows += p.rows;
            ex.fp += p.fp;
            ex.stream = p.stream;
            ex.parts.extend(p.new_parts);
            ex.carry_len = p.carry_len;
            ex.pieces.extend(p.piece);
            ex.checkpoints.extend(p.checkpoints);
            ex.rows_since_checkpoint = p.rows_since_checkpoint;
            ex.single_put = p.single_put;
            let too_many = ex.parts.len() > R2_MAX_PARTS;
            let part_size = ex.part_size;
            let phase = if p.finished {
                Phase::Finalizing(ex)
            } else {
                Phase::Exporting(ex)
            };
            if too_many {
                rec.phase = phase;
                let err = StepError::TooManyParts {
                    max: R2_MAX_PARTS,
                    part_size,
                };
                return stop(rec, err.to_string(), now_ms);
            }
            phase
        }
        (Phase::Finalizing(ex), Outcome::Finalized { first_id, last_id, io }) => {
            note_io(&mut rec, io, false);
            rec.stats.uploaded_at_ms = Some(now_ms);
            Phase::Uploaded(Archive {
                summary: ArchiveSummary {
                    generation: rec.generation,
                    key: ex.key,
                    cutoff: ex.cutoff.unwrap_or_default(),
                    rows: ex.rows,
                    bytes: ex.stream.out_len,
                    raw_bytes: ex.stream.raw_len,
                    crc32: ex.stream.crc,
                    parts: ex.parts.len().max(1) as u32,
                    pieces: ex.pieces.len() as u32,
                    first_id,
                    last_id,
                    rows_deleted: 0,
                    finished_at_ms: None,
                },
                checkpoints: ex.checkpoints,
            })
        }
        (Phase::Uploaded(archive), Outcome::Deleted { ranges, rows, io }) => {
            note_io(&mut rec, io, false);
            Phase::Cleaning(Cleaning {
                archive,
                next: ranges,
                rows_deleted: rows,
            })
        }
        (Phase::Cleaning(mut c), Outcome::Deleted { ranges, rows, io }) => {
            note_io(&mut rec, io, false);
            c.next += ranges;
            c.rows_deleted += rows;
            Phase::Cleaning(c)
        }
        // An archive of zero rows has no ranges: its cleaning is only the final check.
        (Phase::Uploaded(archive), Outcome::Checked { remaining, io }) => {
            note_io(&mut rec, io, false);
            let c = Cleaning {
                archive,
                next: 0,
                rows_deleted: 0,
            };
            return finish_cleaning(rec, c, remaining, now_ms, cfg);
        }
        (Phase::Cleaning(c), Outcome::Checked { remaining, io }) => {
            note_io(&mut rec, io, false);
            return finish_cleaning(rec, c, remaining, now_ms, cfg);
        }
        // An outcome that does not belong to the phase comes from a stale step (the record
        // moved on while it ran). Keep the record; the next alarm decides afresh.
        (phase, _) => phase,
    };
    rec.attempts = 0;
    rec.wake_at_ms = next_wake(&rec, now_ms, cfg);
    rec
}

fn finish_cleaning(mut rec: Record, c: Cleaning, remaining: u64, now_ms: i64, cfg: &Config) -> Record {
    if remaining > 0 {
        rec.phase = Phase::Cleaning(c);
        return stop(rec, StepError::RowsLeft { remaining }.to_string(), now_ms);
    }
    let mut summary = c.archive.summary;
    summary.rows_deleted = c.rows_deleted;
    summary.finished_at_ms = Some(now_ms);
    rec.finished_at_ms = Some(now_ms);
    rec.history.retain(|h| h.generation != summary.generation);
    rec.history.push(summary.clone());
    rec.phase = Phase::Cleaned(summary);
    rec.attempts = 0;
    rec.wake_at_ms = next_wake(&rec, now_ms, cfg);
    rec
}

fn note_io(rec: &mut Record, io: IoStats, export: bool) {
    if export {
        rec.stats.export_rows_read += io.rows_read;
    } else {
        rec.stats.other_rows_read += io.rows_read;
    }
    rec.stats.rows_written += io.rows_written;
    rec.stats.queries += io.queries;
    rec.stats.max_buffer_bytes = rec.stats.max_buffer_bytes.max(io.max_buffer);
    rec.stats.page_wait_ms += io.page_wait_ms;
    rec.stats.encode_ms += io.encode_ms;
}

/// The record after the current step failed with `err`.
pub fn handle_failure(mut rec: Record, err: StepError, now_ms: i64, cfg: &Config) -> Record {
    let message = err.to_string();
    rec.last_error = Some(message.clone());
    rec.updated_at_ms = Some(now_ms);
    match err.recovery() {
        Recovery::Stop => stop(rec, message, now_ms),
        Recovery::Retry => retry(rec, message, now_ms, cfg),
        Recovery::RestartExport => {
            let restarts = match &rec.phase {
                Phase::Exporting(ex) | Phase::Finalizing(ex) => ex.restarts + 1,
                // Only export steps restart; anywhere else this is a plain retry.
                _ => return retry(rec, message, now_ms, cfg),
            };
            if restarts > cfg.max_attempts {
                return stop(
                    rec,
                    format!("{message} (gave up after {} restarts)", restarts - 1),
                    now_ms,
                );
            }
            rec.phase = Phase::Exporting(Export::new(
                object_key(&cfg.prefix, &rec.date, rec.generation),
                cfg.part_size,
                cfg.level,
                restarts,
            ));
            rec.attempts = 0;
            rec.wake_at_ms = next_wake(&rec, now_ms, cfg);
            rec
        }
    }
}

/// One more attempt after a backoff, or `Failed` once `max_attempts` are used up.
fn retry(mut rec: Record, message: String, now_ms: i64, cfg: &Config) -> Record {
    rec.attempts += 1;
    if rec.attempts >= cfg.max_attempts {
        return stop(rec, message, now_ms);
    }
    rec.wake_at_ms = next_wake(&rec, now_ms, cfg);
    rec
}

/// `Failed`, remembering the phase to resume and the error.
fn stop(mut rec: Record, error: String, now_ms: i64) -> Record {
    let at = std::mem::replace(&mut rec.phase, Phase::Idle);
    let at = match at {
        Phase::Failed(f) => *f.at,
        other => other,
    };
    rec.attempts = rec.attempts.max(1);
    rec.last_error = Some(error.clone());
    rec.phase = Phase::Failed(Failure {
        at: Box::new(at),
        error,
        attempts: rec.attempts,
    });
    rec.updated_at_ms = Some(now_ms);
    rec.wake_at_ms = None;
    rec
}

// ---------------------------------------------------------------------------------------------
// Operators' commands

/// What an operator (or the cron) asks of a date.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// Start or resume archiving.
    Trigger,
    /// Delete the archived rows of an uploaded, verified archive.
    Cleanup,
    /// Back to `Idle`, undoing what can be undone without losing data.
    Reset,
}

/// What a command did, in words an operator can act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// A new generation started.
    Started,
    /// A stopped run resumes where it failed.
    Resumed,
    /// It was already running; nothing changed.
    AlreadyRunning,
    /// Archived and verified; cleanup waits for `trigger-cleanup` (AUTO_CLEANUP is off).
    AwaitingCleanup,
    /// Already cleaned; nothing to do.
    AlreadyCleaned,
    /// Back to idle.
    WasReset,
}

/// Side effects a command needs before its record may be saved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    AbortUpload { key: String, upload_id: String },
    DeleteObject { key: String },
}

/// A command that would be wrong now; the HTTP layer answers 409 with `reason`.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{reason}")]
pub struct Refusal {
    pub reason: String,
}

fn refuse(reason: impl Into<String>) -> Refusal {
    Refusal { reason: reason.into() }
}

/// A command's result: the new record, the reply, and the effects to perform first.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub record: Record,
    pub reply: Reply,
    pub effects: Vec<Effect>,
}

/// Applies `cmd` to `rec`. Repeating a command is harmless: a second trigger of a running date
/// changes nothing.
pub fn handle_command(rec: Record, cmd: Command, now_ms: i64, cfg: &Config) -> Result<Decision, Refusal> {
    let mut decision = match cmd {
        Command::Trigger => trigger(rec, now_ms, cfg),
        Command::Cleanup => cleanup(rec, now_ms, cfg)?,
        Command::Reset => reset(rec, now_ms, cfg)?,
    };
    // A command that changes nothing leaves the record untouched (so it does not supersede a
    // step in flight); the shell only makes sure the alarm the record wants exists.
    if matches!(decision.reply, Reply::Started | Reply::Resumed | Reply::WasReset) {
        decision.record.wake_at_ms = next_wake(&decision.record, now_ms, cfg);
    }
    Ok(decision)
}

fn decided(record: Record, reply: Reply) -> Decision {
    Decision {
        record,
        reply,
        effects: Vec::new(),
    }
}

fn trigger(mut rec: Record, now_ms: i64, cfg: &Config) -> Decision {
    match rec.phase {
        Phase::Idle | Phase::Cleaned(_) => {
            rec.generation = rec
                .history
                .iter()
                .map(|h| h.generation)
                .max()
                .unwrap_or(0)
                .max(rec.generation)
                + 1;
            if matches!(rec.phase, Phase::Idle) && rec.history.is_empty() {
                rec.generation = rec.generation.max(1);
            }
            rec.phase = Phase::Exporting(Export::new(
                object_key(&cfg.prefix, &rec.date, rec.generation),
                cfg.part_size,
                cfg.level,
                0,
            ));
            rec.attempts = 0;
            rec.started_at_ms = Some(now_ms);
            rec.finished_at_ms = None;
            rec.updated_at_ms = Some(now_ms);
            rec.stats = Default::default();
            decided(rec, Reply::Started)
        }
        Phase::Failed(f) => {
            rec.phase = *f.at;
            rec.attempts = 0;
            rec.updated_at_ms = Some(now_ms);
            decided(rec, Reply::Resumed)
        }
        Phase::Uploaded(_) if !cfg.auto_cleanup => decided(rec, Reply::AwaitingCleanup),
        Phase::Exporting(_) | Phase::Finalizing(_) | Phase::Uploaded(_) | Phase::Cleaning(_) => {
            decided(rec, Reply::AlreadyRunning)
        }
    }
}

fn cleanup(mut rec: Record, now_ms: i64, _cfg: &Config) -> Result<Decision, Refusal> {
    let date = rec.date.clone();
    match rec.phase {
        Phase::Uploaded(archive) => {
            rec.phase = Phase::Cleaning(Cleaning { archive, next: 0, rows_deleted: 0 });
            rec.updated_at_ms = Some(now_ms);
            Ok(decided(rec, Reply::Started))
        }
        Phase::Cleaning(_) => Ok(decided(rec, Reply::AlreadyRunning)),
        Phase::Cleaned(_) => Ok(decided(rec, Reply::AlreadyCleaned)),
        Phase::Failed(f) if matches!(*f.at, Phase::Uploaded(_) | Phase::Cleaning(_)) => {
            rec.phase = *f.at;
            rec.attempts = 0;
            rec.updated_at_ms = Some(now_ms);
            Ok(decided(rec, Reply::Resumed))
        }
        Phase::Idle => Err(refuse(format!(
            "{date} has no archive yet; nothing will be deleted. Archive it first: POST /admin/trigger-archive?date={date}"
        ))),
        Phase::Exporting(_) | Phase::Finalizing(_) => Err(refuse(format!(
            "{date} is still being archived; cleanup is allowed only after the archive is uploaded and verified. Watch GET /admin/archive-status?date={date}"
        ))),
        Phase::Failed(f) => Err(refuse(format!(
            "{date} failed while {} and has no verified archive; nothing will be deleted. Resume it with POST /admin/trigger-archive?date={date}. Last error: {}",
            f.at.name(),
            f.error
        ))),
    }
}

fn reset(mut rec: Record, now_ms: i64, cfg: &Config) -> Result<Decision, Refusal> {
    let date = rec.date.clone();
    let phase = match &rec.phase {
        Phase::Failed(f) => (*f.at).clone(),
        other => other.clone(),
    };
    let mut effects = Vec::new();
    match phase {
        Phase::Idle => return Ok(decided(rec, Reply::WasReset)),
        Phase::Exporting(ex) => {
            if let Some(upload_id) = ex.upload_id {
                effects.push(Effect::AbortUpload { key: ex.key, upload_id });
            }
        }
        Phase::Finalizing(ex) => {
            if let Some(upload_id) = ex.upload_id.clone().filter(|_| !ex.single_put) {
                effects.push(Effect::AbortUpload { key: ex.key.clone(), upload_id });
            }
            effects.push(Effect::DeleteObject { key: crate::core::date::index_key(&ex.key) });
            effects.push(Effect::DeleteObject { key: ex.key });
        }
        Phase::Uploaded(a) => {
            effects.push(Effect::DeleteObject { key: crate::core::date::index_key(&a.summary.key) });
            effects.push(Effect::DeleteObject { key: a.summary.key });
        }
        Phase::Cleaning(c) if c.rows_deleted == 0 && c.next == 0 => {
            effects.push(Effect::DeleteObject { key: crate::core::date::index_key(&c.archive.summary.key) });
            effects.push(Effect::DeleteObject { key: c.archive.summary.key });
        }
        Phase::Cleaning(c) => {
            return Err(refuse(format!(
                "{date} is being cleaned: {} rows are already deleted from D1 and {} is their only copy; a reset would lose track of it. Let cleaning finish (POST /admin/trigger-cleanup?date={date})",
                c.rows_deleted, c.archive.summary.key
            )))
        }
        Phase::Cleaned(s) => {
            return Err(refuse(format!(
                "{date} is cleaned: its rows are only in {}; a reset would lose track of that archive. New rows of {date} are archived as the next generation by POST /admin/trigger-archive?date={date}",
                s.key
            )))
        }
        Phase::Failed(_) => unreachable!("a failure never wraps another failure"),
    }
    rec.phase = Phase::Idle;
    // The generation is reused: its object is deleted (or never existed).
    rec.generation = rec.history.iter().map(|h| h.generation).max().unwrap_or(0);
    rec.attempts = 0;
    rec.updated_at_ms = Some(now_ms);
    rec.finished_at_ms = None;
    let _ = cfg;
    Ok(Decision {
        record: rec,
        reply: Reply::WasReset,
        effects,
    })
}
