//! The archive state machine: every input goes in, the next record and its effects come out.
//!
//! Not I/O: the engine performs what comes out and feeds back what happened. Time is an argument.
//!
//! - [`handle_alarm`]: an alarm fired. Out comes [`Alarm::Run`] with one bounded [`Step`] (a job
//!   that asks for I/O one call at a time and folds each answer), a pure [`Alarm::Advance`], or
//!   [`Alarm::Sleep`].
//! - [`handle_outcome`]: what a step did, folded into a [`Transition`]: the next record, the
//!   carry to save with it, the metadata to write after the save, and a log line.
//! - [`handle_command`]: an operator's (or the cron's) command, into a [`Decision`]: a
//!   transition with the effects to perform **before** the save, and the reply.
//! - [`handle_metadata_failure`]: the metadata write after a save failed.
//!
//! **Invariant: every action is safe to repeat.** Alarms are at-least-once and a crash can land
//! between any I/O call and the save that follows it, so a step may run again from the last
//! saved record with some of its effects done: parts are re-uploaded under the same numbers (R2
//! keeps the newest), a completed upload is recognised by its size, and a batch of deletes or
//! inserts is guarded by its `archive_ledger` row, written in the same D1 transaction.
//!
//! **Rows leave D1 only in a cleaning pass, only if a line equal to them in every column was
//! read back from a verified archive and checked against its index in the same step.** The move
//! to cleaning is saved before the first DELETE; from then on no reset deletes that archive.

mod commands;
mod complete;
pub mod export;
mod readback;

pub use commands::{handle_command, Command, Decision, Refusal, RefusalKind, Reply};
pub use complete::CompleteJob;
pub use export::{ExportJob, Exported, Limits, StepUpload};
pub use readback::{
    Kind, PassJob, PassStart, Passed, Source, Verified, VerifyJob, CONFLICT_IDS_KEPT, PARQUET_FOOTERS_PER_STEP,
};

use crate::core::config::{Config, R2_MAX_PARTS};
use crate::core::date::{index_key, object_key};
use crate::core::error::{Recovery, StepError};
use crate::core::index::sidecar;
use crate::core::io::{Effect, Io, IoResult, IoStats};
use crate::core::policy;
use crate::core::sql::Statement;
use crate::core::state::{
    CleanState, Export, Failure, Finished, Garbage, Generation, Hold, Pass, Phase, Purpose, Record, Restore,
    RestoreMarks, Upload, Verifying, Walk, Work, Written,
};
use crate::core::status::{metadata_statements, StepLog};

/// What a job wants next.
#[derive(Debug, PartialEq)]
pub enum Poll<'a> {
    /// Make this call and hand the answer to `handle`.
    Io(Io<'a>),
    /// Start this page query now, without waiting for it; it is asked for by
    /// [`Poll::AwaitPrefetch`] later (meanwhile the job asks for other calls).
    Prefetch(Statement),
    /// Hand the prefetched page's answer to `handle`.
    AwaitPrefetch,
    /// The step is over; call `finish`.
    Done,
}

/// One bounded step: a job that asks for one call at a time.
pub enum Step {
    Export(Box<ExportJob>),
    Complete(Box<CompleteJob>),
    Verify(Box<VerifyJob>),
    Pass(Box<PassJob>),
    /// Writes the metadata a failed write left stale.
    Metadata(Option<Vec<Statement>>),
    /// Removes from R2 what the record dropped (its garbage), one call at a time; `keep`: the
    /// entries the record keeps after it (see [`collect_now`]).
    Collect {
        effects: Vec<Effect>,
        next: usize,
        keep: Vec<Garbage>,
    },
}

/// An export step's name in logs: `export-capped` when its pages were held to `PAGE_BYTES` in
/// SQL (the step after one that never saved).
fn export_action(capped: bool) -> &'static str {
    if capped {
        "export-capped"
    } else {
        "export"
    }
}

impl Step {
    /// A short name for logs.
    pub fn name(&self) -> &'static str {
        match self {
            Step::Export(j) => export_action(j.capped()),
            Step::Complete(_) => "complete",
            Step::Verify(_) => "verify",
            Step::Pass(p) if p.kind() == Kind::Restore => "restore",
            Step::Pass(_) => "clean",
            Step::Metadata(_) => "metadata",
            Step::Collect { .. } => "collect",
        }
    }

    pub fn poll(&mut self) -> Result<Poll<'_>, StepError> {
        Ok(match self {
            Step::Export(j) => j.poll()?,
            Step::Complete(j) => j.poll(),
            Step::Verify(j) => j.poll(),
            Step::Pass(j) => j.poll(),
            Step::Metadata(stmts) => match stmts.take() {
                Some(s) => Poll::Io(Io::Batch(s)),
                None => Poll::Done,
            },
            Step::Collect { effects, next, .. } => match effects.get(*next) {
                Some(e) => Poll::Io(e.io()),
                None => Poll::Done,
            },
        })
    }

    pub fn handle(&mut self, reply: IoResult) -> Result<(), StepError> {
        match self {
            Step::Export(j) => j.handle(reply),
            Step::Complete(j) => j.handle(reply),
            Step::Verify(j) => j.handle(reply),
            Step::Pass(j) => j.handle(reply),
            Step::Metadata(_) => reply.map(|_| ()).map_err(StepError::from),
            Step::Collect { effects, next, .. } => {
                let gone = matches!(&reply, Err(e) if e.kind == crate::core::error::FailureKind::NoSuchUpload)
                    && matches!(effects.get(*next), Some(Effect::AbortUpload { .. }));
                if !gone {
                    reply?;
                }
                *next += 1;
                Ok(())
            }
        }
    }

    /// What the step did; `error` if it stopped early (a pass keeps the pieces it finished).
    pub fn finish(self, error: Option<StepError>) -> Outcome {
        let done = match self {
            Step::Export(j) => Outcome::Exported(j.finish()),
            Step::Complete(_) => Outcome::Completed,
            Step::Verify(j) => Outcome::Verified(j.finish()),
            Step::Pass(j) => Outcome::Passed(j.finish()),
            Step::Metadata(_) => Outcome::MetadataWritten,
            Step::Collect { keep, .. } => Outcome::Collected(keep),
        };
        match (error, done) {
            (None, done) => done,
            (Some(e), Outcome::Passed(p)) => Outcome::Failed(e, Some(p)),
            (Some(e), Outcome::MetadataWritten) => Outcome::MetadataFailed(e),
            (Some(e), _) => Outcome::Failed(e, None),
        }
    }
}

/// What a step did.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Exported(Exported),
    Completed,
    Verified(Verified),
    Passed(Passed),
    MetadataWritten,
    /// The garbage is removed from R2; the record keeps these entries of it.
    Collected(Vec<Garbage>),
    /// Writing stale metadata failed: tried again with backoff, and never a reason to fail the
    /// date, whose failure D1 could not show either (a review found a D1 without a new column
    /// failed running dates). A failed garbage removal is a plain [`Outcome::Failed`]: D1 works
    /// then, so one that keeps failing fails a running date, visibly, and frees its slot.
    MetadataFailed(StepError),
    /// The step failed; a pass reports the pieces it finished before the failure.
    Failed(StepError, Option<Passed>),
}

/// Timings and gauges of one step, measured by the engine.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StepReport {
    pub started_ms: i64,
    pub now_ms: i64,
    /// Wall time spent waiting for export pages.
    pub page_wait_ms: u64,
    /// Wall time spent in the job itself (encoding, compressing, checking).
    pub busy_ms: u64,
    /// Wasm linear memory at the end of the step (it only grows: the peak so far).
    pub memory_bytes: u64,
}

/// The carry to save with a record.
#[derive(Debug, Clone, PartialEq)]
pub enum Carry {
    /// Leave the saved carry as it is.
    Keep,
    /// Replace it (empty clears it).
    Write(Vec<u8>),
}

/// The next record and what goes with it.
#[derive(Debug, Clone, PartialEq)]
pub struct Transition {
    pub record: Record,
    pub carry: Carry,
    /// Performed after the save succeeded: the date's metadata rows (a D1 batch).
    pub metadata: Effect,
    /// The date gave up its running slot: due dates may start into it (the cron's hand-over).
    pub hand_over: bool,
    pub log: StepLog,
}

/// What an alarm asks for.
pub enum Alarm {
    /// Nothing to do; no alarm is wanted.
    Sleep,
    /// Perform this step, then fold its outcome with [`handle_outcome`].
    Run(Step),
    /// Save this transition; no I/O is needed first.
    Advance(Box<Transition>),
}

// ---------------------------------------------------------------------------------------------
// Alarms

/// The removal of `rec`'s garbage right after a save (a command's, or a step's that dropped
/// work): all of it, keeping the [`Garbage::Recheck`] entries for the next alarm to remove
/// again. `None` when there is nothing else (the alarm removes them) or the metadata is stale
/// (the alarm writes it first).
pub fn collect_now(rec: &Record) -> Option<Step> {
    let keep: Vec<Garbage> = rec
        .garbage
        .iter()
        .filter(|g| matches!(g, Garbage::Recheck { .. }))
        .cloned()
        .collect();
    (!rec.metadata_stale && keep.len() < rec.garbage.len()).then(|| Step::Collect {
        effects: rec.garbage.iter().map(Effect::from).collect(),
        next: 0,
        keep,
    })
}

/// The one step to take now for `rec`. `carry` is the saved carry (the export resumes from it);
/// `unsaved`: a step of `rec` as it stands began and never saved (its isolate died in it).
pub fn handle_alarm(rec: &Record, carry: Vec<u8>, now_ms: i64, cfg: &Config, unsaved: bool) -> Alarm {
    if rec.metadata_stale {
        // The record as saved: its metadata is what this step writes.
        return Alarm::Run(Step::Metadata(Some(metadata_statements(rec, rec.revision, now_ms))));
    }
    if !rec.garbage.is_empty() {
        return Alarm::Run(Step::Collect {
            effects: rec.garbage.iter().map(Effect::from).collect(),
            next: 0,
            keep: Vec::new(),
        });
    }
    let job = match &rec.phase {
        Phase::Working(Work::Exporting(ex)) => {
            // An export that finds no row makes no object.
            let skip_empty = ex.rows == 0;
            let limits = Limits::from_config(cfg)
                .with_parquet(ex.parquet.is_some())
                .after_unsaved_step(unsaved);
            ExportJob::new(&rec.date, ex, carry, limits, skip_empty).map(|j| Step::Export(Box::new(j)))
        }
        Phase::Working(Work::Completing(w)) => Ok(Step::Complete(Box::new(complete_job(&rec.date, w)))),
        Phase::Working(Work::Verifying(v)) => VerifyJob::new(
            &v.archive,
            (v.parquet_checked, v.next),
            v.crc,
            v.raw_len,
            cfg.step_bytes,
        )
        .map(|j| Step::Verify(Box::new(j))),
        Phase::Working(Work::Cleaning(p)) => Ok(pass_step(rec, Kind::Delete, &pass_position(p), now_ms, cfg)),
        Phase::Working(Work::Restoring(r)) => Ok(pass_step(rec, Kind::Restore, &restore_position(r), now_ms, cfg)),
        Phase::Uploaded { generation } if cfg.auto_cleanup => {
            let g = *generation;
            let names = ("uploaded", "start-clean");
            return Alarm::Advance(Box::new(start_pass(
                rec.clone(),
                (Purpose::Clean, vec![g], None),
                now_ms,
                cfg,
                names,
            )));
        }
        Phase::Restored(hold) if now_ms >= hold.until_ms => {
            let pass = (Purpose::Release, hold.generations.clone(), hold.marks());
            let names = ("restored", "hold-ended");
            return Alarm::Advance(Box::new(start_pass(rec.clone(), pass, now_ms, cfg, names)));
        }
        Phase::Idle | Phase::Uploaded { .. } | Phase::Cleaned { .. } | Phase::Restored(_) | Phase::Failed(_) => {
            return Alarm::Sleep
        }
    };
    match job {
        Ok(step) => Alarm::Run(step),
        Err(e) => {
            let report = StepReport {
                started_ms: now_ms,
                now_ms,
                ..StepReport::default()
            };
            Alarm::Advance(Box::new(handle_outcome(
                rec.clone(),
                Outcome::Failed(e, None),
                report,
                cfg,
            )))
        }
    }
}

fn complete_job(date: &str, w: &Written) -> CompleteJob {
    let raw: u64 = w.pieces.iter().map(|p| p.raw_len).sum();
    let doc = sidecar(date, &w.key, w.rows, w.stream.out_len, raw, w.stream.crc, &w.pieces);
    CompleteJob::new(w, index_key(&w.key), doc)
}

/// A pass to step: its walk, its purpose's name, and its rowid mark.
struct Position<'a> {
    walk: &'a Walk,
    purpose: &'static str,
    /// The restore whose rowid marks bound the rows a release takes: its own for a restore,
    /// the restored one for a release (id 0 when unknown: no pass has that id, so no mark and
    /// no row deleted by it), none for a cleaning.
    mark: Option<RestoreMarks>,
}

fn pass_position(p: &Pass) -> Position<'_> {
    Position {
        walk: &p.walk,
        purpose: match p.purpose {
            Purpose::Clean => "clean",
            Purpose::Release => "release",
        },
        mark: match p.purpose {
            Purpose::Clean => None,
            Purpose::Release => Some(p.marks().unwrap_or(RestoreMarks {
                id: 0,
                per_generation: false,
            })),
        },
    }
}

fn restore_position(r: &Restore) -> Position<'_> {
    Position {
        walk: &r.walk,
        purpose: "restore",
        mark: Some(r.marks()),
    }
}

fn pass_step(rec: &Record, kind: Kind, at: &Position<'_>, now_ms: i64, cfg: &Config) -> Step {
    let walk = at.walk;
    let sources = walk
        .generations
        .iter()
        .filter_map(|n| rec.generation(*n))
        .map(|g| Source {
            number: g.number,
            key: g.key.clone(),
            pieces: g.pieces.clone(),
            bytes: g.bytes,
            crc32: g.crc32,
            raw_bytes: g.raw_bytes,
            pass: format!("{}#{}-{}", g.key, at.purpose, walk.id),
        })
        .collect();
    let start = PassStart {
        current: walk.current,
        piece: walk.piece,
        batch_bytes: walk.batch_bytes,
        wide_twice: walk.wide_twice,
        budget_rows: cfg.clean_step_rows,
        now_ms,
        rowid_mark: at.mark.map(|m| crate::core::sql::rowid_mark(&rec.date, m.id)),
        generation_marks: at.mark.is_some_and(|m| m.per_generation),
    };
    Step::Pass(Box::new(PassJob::new(kind, &rec.date, sources, start)))
}

/// The move into a pass, saved before the pass sends its first statement.
pub(super) fn start_pass(
    mut rec: Record,
    (purpose, generations, restored_by): (Purpose, Vec<u32>, Option<RestoreMarks>),
    now_ms: i64,
    cfg: &Config,
    (before, action): (&'static str, &'static str),
) -> Transition {
    rec.passes += 1;
    if purpose == Purpose::Clean {
        for n in &generations {
            if let Some(g) = rec.generation_mut(*n) {
                g.cleaning = CleanState::Cleaning;
            }
        }
        rec.stats.clean_started_ms = Some(now_ms);
    }
    rec.phase = Phase::Working(Work::Cleaning(Pass {
        purpose,
        walk: Walk::start(generations, rec.passes, cfg.clean_batch_bytes),
        rows: 0,
        restored_by: restored_by.map(|m| m.id),
        generation_marks: restored_by.is_some_and(|m| m.per_generation),
    }));
    rec.attempts = 0;
    settle(rec, before, action, now_ms, cfg)
}

// ---------------------------------------------------------------------------------------------
// Outcomes

/// The record after `outcome` of the step [`handle_alarm`] chose for `rec`.
pub fn handle_outcome(mut rec: Record, outcome: Outcome, report: StepReport, cfg: &Config) -> Transition {
    let before = rec.phase.name();
    let now = report.now_ms;
    rec.updated_at_ms = Some(now);
    rec.stats.steps += 1;
    rec.stats.longest_step_ms = rec.stats.longest_step_ms.max((now - report.started_ms).max(0) as u64);
    rec.stats.peak_memory_bytes = rec.stats.peak_memory_bytes.max(report.memory_bytes);
    rec.stats.page_wait_ms += report.page_wait_ms;
    let mut carry = Carry::Keep;
    let (action, rows) = match outcome {
        Outcome::Exported(mut e) => {
            note_io(&mut rec, &e.io, Tally::Export);
            rec.stats.encode_ms += report.busy_ms;
            let rows = e.rows;
            let action = export_action(e.capped);
            let bytes = std::mem::take(&mut e.carry);
            let folded = fold_export(&mut rec, e, bytes.len() as u64, now);
            carry = Carry::Write(bytes);
            if let Err(err) = folded {
                let mut t = finish_failure(rec, err, report, cfg, before, action);
                t.carry = carry;
                return t;
            }
            (action, rows)
        }
        Outcome::Completed if repeats(&rec, cfg) => {
            drop_repeat(&mut rec, now);
            ("complete", 0)
        }
        Outcome::Completed => {
            fold_complete(&mut rec, now);
            ("complete", 0)
        }
        Outcome::Verified(v) => {
            note_io(&mut rec, &v.io, Tally::None);
            fold_verify(&mut rec, v, now);
            ("verify", 0)
        }
        Outcome::Passed(p) => {
            let tally = match &rec.phase {
                Phase::Working(Work::Restoring(_)) => Tally::Restore,
                // A pass read back for a cleaning or a release (or one that lost to a command).
                Phase::Idle
                | Phase::Working(Work::Exporting(_) | Work::Completing(_) | Work::Verifying(_) | Work::Cleaning(_))
                | Phase::Uploaded { .. }
                | Phase::Cleaned { .. }
                | Phase::Restored(_)
                | Phase::Failed(_) => Tally::Clean,
            };
            note_io(&mut rec, &p.io, tally);
            fold_pass(&mut rec, &p, now)
        }
        Outcome::MetadataWritten => {
            // The commit of this transition writes the metadata; the step only brought it here.
            rec.stats.steps -= 1;
            return settle(rec, before, "metadata", now, cfg);
        }
        Outcome::Collected(keep) => {
            rec.garbage = keep;
            rec.stats.steps -= 1;
            // Leave `attempts` alone: collecting garbage is not the date's own step.
            return settle(rec, before, "collect", now, cfg);
        }
        Outcome::Failed(err, partial) => {
            let action = partial.as_ref().map_or("step", |p| fold_pass(&mut rec, p, now).0);
            return finish_failure(rec, err, report, cfg, before, action);
        }
        Outcome::MetadataFailed(err) => {
            // Counted once, when the commit's own write of these rows fails too (or reset when
            // it succeeds): `handle_metadata_failure`.
            rec.stats.steps -= 1;
            rec.last_error = Some(err.to_string());
            let mut t = settle(rec, before, "metadata", now, cfg);
            t.log.error = Some(err.to_string());
            return t;
        }
    };
    rec.attempts = 0;
    let mut t = settle(rec, before, action, now, cfg);
    t.carry = carry;
    t.log.rows = rows;
    t.log.duration_ms = (now - report.started_ms).max(0) as u64;
    t.log.wasm_memory_bytes = report.memory_bytes;
    t.log.busy_ms = report.busy_ms;
    t
}

fn finish_failure(
    rec: Record,
    err: StepError,
    report: StepReport,
    cfg: &Config,
    before: &'static str,
    action: &'static str,
) -> Transition {
    let (rec, carry) = handle_failure(rec, &err, report.now_ms, cfg);
    let mut t = settle(rec, before, action, report.now_ms, cfg);
    t.carry = carry;
    t.log.error = Some(err.to_string());
    t.log.duration_ms = (report.now_ms - report.started_ms).max(0) as u64;
    t
}

/// The transition to `rec`: its next alarm, its metadata, its log line.
pub(super) fn settle(
    mut rec: Record,
    before: &'static str,
    action: &'static str,
    now_ms: i64,
    cfg: &Config,
) -> Transition {
    // The date gave up its running slot (cleaned, failed, restored and held, waiting for an
    // operator's cleanup, or reset): a due date may start into it. Or its metadata was stale,
    // so the hand-over when it gave up its slot read D1 still saying it held one (the write
    // failed, or the isolate died before it): it hands over once these rows are written.
    let holds = policy::holds_slot(rec.phase.name(), cfg);
    let hand_over = (policy::holds_slot(before, cfg) || rec.metadata_stale) && !holds;
    // Saved as pending until its metadata rows are written (see `handle_metadata_written`): if
    // the process dies between the save and the write, the alarm this keeps due writes them.
    rec.metadata_stale = true;
    rec.wake_at_ms = next_wake(&rec, now_ms, cfg);
    let log = StepLog::new(&rec, action, before, now_ms);
    Transition {
        // The engine saves the transition at the next revision, then writes this.
        metadata: Effect::Metadata(metadata_statements(&rec, rec.revision + 1, now_ms)),
        record: rec,
        carry: Carry::Keep,
        hand_over,
        log,
    }
}

/// When the next alarm is due for `rec` (unix ms), or `None` for no alarm.
pub fn next_wake(rec: &Record, now_ms: i64, cfg: &Config) -> Option<i64> {
    let delay = if rec.attempts == 0 {
        0
    } else {
        cfg.backoff_ms(rec.attempts) as i64
    };
    match &rec.phase {
        // Metadata and garbage first, backing off as their failures (or the step's) add up.
        _ if rec.metadata_stale || !rec.garbage.is_empty() => {
            Some(now_ms + cfg.backoff_ms(rec.metadata_failures.max(rec.attempts).max(1)) as i64)
        }
        Phase::Working(_) => Some(now_ms + delay),
        Phase::Uploaded { .. } => cfg.auto_cleanup.then_some(now_ms),
        Phase::Restored(hold) => Some(hold.until_ms.max(now_ms)),
        Phase::Idle | Phase::Cleaned { .. } | Phase::Failed(_) => None,
    }
}

fn fold_export(rec: &mut Record, e: Exported, carry_len: u64, now_ms: i64) -> Result<(), StepError> {
    let has_archives = !rec.generations.is_empty();
    let Phase::Working(Work::Exporting(ex)) = &mut rec.phase else {
        return Ok(());
    };
    ex.cursor = e.cursor;
    ex.rows += e.rows;
    ex.row_bytes = e.row_bytes;
    ex.stream = e.stream;
    ex.carry_len = carry_len;
    ex.pieces.extend(e.pieces);
    if let (Some(files), Some(file)) = (&mut ex.parquet, e.parquet) {
        files.push(file);
    }
    let single = match e.upload {
        StepUpload::NotStarted => false,
        StepUpload::SinglePut => true,
        StepUpload::Multipart { upload_id, new_parts } => {
            match &mut ex.upload {
                Upload::Multipart { parts, .. } => parts.extend(new_parts),
                Upload::NotStarted => {
                    ex.upload = Upload::Multipart {
                        upload_id,
                        parts: new_parts,
                    }
                }
            }
            false
        }
    };
    if ex.parts().len() > R2_MAX_PARTS {
        return Err(StepError::TooManyParts {
            max: R2_MAX_PARTS,
            part_size: ex.part_size,
        });
    }
    if e.finished && ex.rows == 0 {
        // Nothing to archive: no object. Back to the archives there are, or to idle (a date
        // triggered by mistake, with no row in D1, leaves nothing behind in R2).
        rec.finished_at_ms = Some(now_ms);
        rec.phase = if has_archives {
            Phase::Cleaned {
                rows_pending: 0,
                released: None,
            }
        } else {
            Phase::Idle
        };
    } else if e.finished {
        let written = written_of(ex, single);
        rec.stats.exported_at_ms = Some(now_ms);
        rec.phase = Phase::Working(Work::Completing(written));
    }
    Ok(())
}

fn written_of(ex: &Export, single: bool) -> Written {
    let upload = match (&ex.upload, single) {
        (Upload::Multipart { upload_id, parts }, false) => Finished::Multipart {
            upload_id: upload_id.clone(),
            parts: parts.clone(),
        },
        _ => Finished::SinglePut,
    };
    Written {
        generation: ex.generation,
        key: ex.key.clone(),
        upload,
        stream: ex.stream,
        rows: ex.rows,
        pieces: ex.pieces.clone(),
        restarts: ex.restarts,
        parquet: ex.parquet.clone(),
        real_ts_bounded: ex.real_ts_bounded,
    }
}

/// Whether the export just completed holds exactly the newest generation's lines (the same
/// rows, CRC-32 and length of JSONL, and the same pieces, each with the CRC-32 of its deflate
/// output too), where a cleaning pass went through all of that generation and deleted none of
/// its rows: rows D1 cannot hand back unchanged, archived again unchanged. Kept, such a copy
/// would come back every day as one more generation, without end. A generation that deleted
/// a row never counts: a NULL-id row written since, equal to the line that row used, is one no
/// archive holds.
fn repeats(rec: &Record, cfg: &Config) -> bool {
    let Phase::Working(Work::Completing(w)) = &rec.phase else {
        return false;
    };
    let Some(g) = rec.generations.last() else {
        return false;
    };
    let same = g.rows == w.rows && g.crc32 == w.stream.crc && g.raw_bytes == w.stream.raw_len && g.pieces == w.pieces;
    let spent = g.cleaning != CleanState::Cleaned || g.rows_deleted > 0 || g.legacy;
    cfg.auto_cleanup && same && w.rows > 0 && !spent
}

/// Drops the repeated export: its object, index and Parquet files go; nothing is deleted from
/// D1, where its rows stay, pending, as after the generation it repeats.
fn drop_repeat(rec: &mut Record, now_ms: i64) {
    let Phase::Working(Work::Completing(w)) = &rec.phase else {
        return;
    };
    let garbage = commands::unfinished_object(&w.key, w.parquet_keys());
    let rows_pending = w.rows;
    rec.garbage.extend(garbage);
    rec.finished_at_ms = Some(now_ms);
    rec.phase = Phase::Cleaned {
        rows_pending,
        released: None,
    };
}

fn fold_complete(rec: &mut Record, now_ms: i64) {
    let Phase::Working(Work::Completing(w)) = &rec.phase else {
        return;
    };
    let parts = match &w.upload {
        Finished::SinglePut => 1,
        Finished::Multipart { parts, .. } => parts.len() as u32,
    };
    let archive = Generation {
        number: w.generation,
        key: w.key.clone(),
        index_key: index_key(&w.key),
        rows: w.rows,
        bytes: w.stream.out_len,
        raw_bytes: w.stream.raw_len,
        crc32: w.stream.crc,
        parts,
        pieces: w.pieces.clone(),
        parquet: w.parquet.clone().unwrap_or_default(),
        rows_deleted: 0,
        cleaning: CleanState::NotCleaned,
        created_at_ms: Some(now_ms),
        verified_at_ms: None,
        cleaned_at_ms: None,
        legacy: false,
        real_ts_bounded: w.real_ts_bounded,
    };
    let restarts = w.restarts;
    rec.phase = Phase::Working(Work::Verifying(Verifying {
        archive,
        parquet_checked: 0,
        next: 0,
        crc: 0,
        raw_len: 0,
        restarts,
    }));
}

fn fold_verify(rec: &mut Record, v: Verified, now_ms: i64) {
    let Phase::Working(Work::Verifying(state)) = &mut rec.phase else {
        return;
    };
    state.parquet_checked = v.parquet_checked;
    state.next = v.next;
    state.crc = v.crc;
    state.raw_len = v.raw_len;
    if !v.finished {
        return;
    }
    let mut archive = state.archive.clone();
    archive.verified_at_ms = Some(now_ms);
    let number = archive.number;
    rec.generations.retain(|g| g.number != number);
    rec.generations.push(archive);
    rec.stats.verified_at_ms = Some(now_ms);
    rec.phase = Phase::Uploaded { generation: number };
}

/// Folds a pass step (cleaning, release or restore); returns the action's name and its rows.
fn fold_pass(rec: &mut Record, p: &Passed, now_ms: i64) -> (&'static str, u64) {
    let rows: u64 = p.changed.iter().map(|(_, r)| r).sum();
    match rec.phase.working_mut() {
        Some(Work::Cleaning(pass)) => {
            (pass.walk.current, pass.walk.piece) = (p.current, p.piece);
            pass.rows += rows;
            let purpose = pass.purpose;
            for (n, r) in &p.changed {
                if let (Purpose::Clean, Some(g)) = (purpose, rec.generations.iter_mut().find(|g| g.number == *n)) {
                    g.rows_deleted += r;
                }
            }
            if let (true, Some(left)) = (p.finished, p.counted) {
                finish_cleaning(rec, left, now_ms);
            }
            ("clean", rows)
        }
        Some(Work::Restoring(r)) => {
            (r.walk.current, r.walk.piece) = (p.current, p.piece);
            r.counts.merge(&p.counts, CONFLICT_IDS_KEPT);
            if p.finished {
                let hold = Hold {
                    generations: r.walk.generations.clone(),
                    until_ms: r.hold_until_ms,
                    counts: r.counts.clone(),
                    restore_id: Some(r.walk.id),
                    generation_marks: r.generation_marks,
                };
                rec.stats.restored_at_ms = Some(now_ms);
                rec.phase = Phase::Restored(hold);
            }
            ("restore", rows)
        }
        // The pass lost to a command: nothing to fold.
        Some(Work::Exporting(_) | Work::Completing(_) | Work::Verifying(_)) | None => ("stale", 0),
    }
}

fn finish_cleaning(rec: &mut Record, rows_pending: u64, now_ms: i64) {
    let mut released = None;
    if let Phase::Working(Work::Cleaning(pass)) = &rec.phase {
        if pass.purpose == Purpose::Release {
            released = Some(pass.rows);
        }
        if pass.purpose == Purpose::Clean {
            for n in pass.walk.generations.clone() {
                if let Some(g) = rec.generation_mut(n) {
                    g.cleaning = CleanState::Cleaned;
                    g.cleaned_at_ms = Some(now_ms);
                }
            }
        }
    }
    rec.stats.cleaned_at_ms = Some(now_ms);
    rec.finished_at_ms = Some(now_ms);
    rec.phase = Phase::Cleaned { rows_pending, released };
}

/// Which reads a step's D1 rows count as.
#[derive(Clone, Copy)]
enum Tally {
    Export,
    Clean,
    Restore,
    None,
}

fn note_io(rec: &mut Record, io: &IoStats, tally: Tally) {
    let s = &mut rec.stats;
    let phase = match tally {
        Tally::Export => Some((&mut s.export_rows_read, &mut s.export_sql_us)),
        Tally::Clean => Some((&mut s.clean_rows_read, &mut s.clean_sql_us)),
        Tally::Restore => Some((&mut s.restore_rows_read, &mut s.restore_sql_us)),
        Tally::None => None,
    };
    if let Some((rows_read, sql_us)) = phase {
        *rows_read += io.rows_read;
        *sql_us += io.sql_us;
    }
    rec.stats.rows_written += io.rows_written;
    rec.stats.queries += io.queries;
    rec.stats.bytes_read += io.bytes_read;
    rec.stats.max_buffer_bytes = rec.stats.max_buffer_bytes.max(io.max_buffer);
}

/// The record after the current step failed with `err`, and the carry to save with it.
fn handle_failure(mut rec: Record, err: &StepError, now_ms: i64, cfg: &Config) -> (Record, Carry) {
    let message = err.to_string();
    rec.last_error = Some(message.clone());
    rec.updated_at_ms = Some(now_ms);
    match err.recovery() {
        Recovery::Stop => (stop(rec, message), Carry::Keep),
        Recovery::Retry => (retry(rec, err, cfg), Carry::Keep),
        Recovery::RestartExport => restart_export(rec, err, cfg),
    }
}

fn restart_export(mut rec: Record, err: &StepError, cfg: &Config) -> (Record, Carry) {
    let (generation, restarts, upload) = match rec.phase.working() {
        Some(Work::Exporting(ex)) => (ex.generation, ex.restarts, multipart_of(ex)),
        Some(Work::Completing(w)) => (w.generation, w.restarts, None),
        Some(Work::Verifying(v)) => (v.archive.number, v.restarts, None),
        // Only the steps that write the archive restart; anywhere else this is a plain retry.
        Some(Work::Cleaning(_) | Work::Restoring(_)) | None => return (retry(rec, err, cfg), Carry::Keep),
    };
    if restarts + 1 > cfg.max_attempts {
        return (stop(rec, err.gave_up(restarts)), Carry::Keep);
    }
    if let Some((key, upload_id)) = upload {
        rec.garbage.push(Garbage::Abort { key, upload_id });
    }
    // The abandoned run's Parquet files go before the new run writes any (garbage is collected
    // before the next step): its keys are the same.
    // A completed object and its index go too (found by a review): the new run writes them
    // again under the same keys, unless it finds no row, and then nothing may be left behind.
    // Nothing was deleted from D1 before verification, so every row in them is still there.
    let garbage = match rec.phase.working() {
        Some(Work::Exporting(ex)) => ex
            .parquet_keys()
            .into_iter()
            .map(|key| Garbage::Delete { key })
            .collect(),
        Some(Work::Completing(w)) => commands::unfinished_object(&w.key, w.parquet_keys()),
        Some(Work::Verifying(v)) => commands::unfinished_object(&v.archive.key, v.archive.parquet_keys()),
        Some(Work::Cleaning(_) | Work::Restoring(_)) | None => Vec::new(),
    };
    rec.garbage.extend(garbage);
    let key = object_key(&cfg.prefix, &rec.date, generation);
    rec.phase = Phase::Working(Work::Exporting(
        Export::new(generation, key, cfg.part_size, cfg.level, restarts + 1).with_parquet(cfg.parquet),
    ));
    rec.attempts = 0;
    (rec, Carry::Write(Vec::new()))
}

/// The open multipart upload of an export, as `(key, upload_id)`.
fn multipart_of(ex: &Export) -> Option<(String, String)> {
    match &ex.upload {
        Upload::Multipart { upload_id, .. } => Some((ex.key.clone(), upload_id.clone())),
        Upload::NotStarted => None,
    }
}

/// One more attempt after a backoff, or `Failed` once `max_attempts` are used up.
fn retry(mut rec: Record, err: &StepError, cfg: &Config) -> Record {
    rec.attempts += 1;
    if rec.attempts >= cfg.max_attempts {
        let message = err.gave_up_retrying(rec.attempts);
        return stop(rec, message);
    }
    rec
}

/// `Failed`, remembering the work to resume and the error.
fn stop(mut rec: Record, error: String) -> Record {
    rec.attempts = rec.attempts.max(1);
    rec.last_error = Some(error.clone());
    rec.phase = match std::mem::replace(&mut rec.phase, Phase::Idle) {
        Phase::Working(work) => Phase::Failed(Failure { work, error }),
        // A failure outside work (none exists today) leaves the phase as it was.
        other @ (Phase::Idle
        | Phase::Uploaded { .. }
        | Phase::Cleaned { .. }
        | Phase::Restored(_)
        | Phase::Failed(_)) => other,
    };
    rec
}

/// What R2 may hold from a step whose save lost to a command (the date's object, its sidecar, an
/// upload the step created): everything the step could have written, less what the winning
/// record still refers to. Every row in these is still in D1 (a lost step deleted nothing that
/// is not in an archive the winner keeps), so they are removed, best effort.
pub fn handle_superseded(started: &Record, lost: &Record, winner: &Record) -> Vec<Effect> {
    let mine: Vec<Garbage> = [started, lost].iter().flat_map(|r| writes_of(r)).collect();
    let kept = refs_of(winner);
    let mut out: Vec<Effect> = Vec::new();
    for g in mine {
        let e = Effect::from(&g);
        if !kept.contains(&g) && !out.contains(&e) {
            out.push(e);
        }
    }
    out
}

/// The R2 objects and uploads a record's work writes.
fn writes_of(rec: &Record) -> Vec<Garbage> {
    let object = |key: &str| {
        vec![
            Garbage::Delete { key: key.to_string() },
            Garbage::Delete { key: index_key(key) },
        ]
    };
    let upload = |key: &str, id: &str| Garbage::Abort {
        key: key.to_string(),
        upload_id: id.to_string(),
    };
    let files = |keys: Vec<String>| keys.into_iter().map(|key| Garbage::Delete { key });
    match rec.phase.working() {
        Some(Work::Exporting(ex)) => {
            let mut w = object(&ex.key);
            if let Upload::Multipart { upload_id, .. } = &ex.upload {
                w.push(upload(&ex.key, upload_id));
            }
            w.extend(files(ex.parquet_keys()));
            w
        }
        Some(Work::Completing(c)) => {
            let mut w = object(&c.key);
            if let Finished::Multipart { upload_id, .. } = &c.upload {
                w.push(upload(&c.key, upload_id));
            }
            w.extend(files(c.parquet_keys()));
            w
        }
        Some(Work::Verifying(v)) => {
            let mut w = object(&v.archive.key);
            w.extend(files(v.archive.parquet_keys()));
            w
        }
        // Cleaning and restoring write no object.
        Some(Work::Cleaning(_) | Work::Restoring(_)) | None => Vec::new(),
    }
}

/// Everything in R2 a record refers to (or already means to remove).
fn refs_of(rec: &Record) -> Vec<Garbage> {
    let mut refs = writes_of(rec);
    if let Phase::Failed(f) = &rec.phase {
        let mut as_working = rec.clone();
        as_working.phase = Phase::Working(f.work.clone());
        refs.extend(writes_of(&as_working));
    }
    for g in &rec.generations {
        refs.push(Garbage::Delete { key: g.key.clone() });
        refs.push(Garbage::Delete {
            key: g.index_key.clone(),
        });
        refs.extend(g.parquet_keys().into_iter().map(|key| Garbage::Delete { key }));
    }
    refs.extend(rec.garbage.iter().cloned());
    refs
}

/// The metadata rows of the saved `rec` are written: it is no longer pending, and its alarm is
/// what its work needs.
pub fn handle_metadata_written(mut rec: Record, now_ms: i64, cfg: &Config) -> Record {
    rec.metadata_stale = false;
    rec.metadata_failures = 0;
    rec.wake_at_ms = next_wake(&rec, now_ms, cfg);
    rec
}

/// After the save, the metadata write failed: the next alarm writes it (soon, with backoff).
pub fn handle_metadata_failure(mut rec: Record, error: String, now_ms: i64, cfg: &Config) -> Transition {
    let before = rec.phase.name();
    rec.metadata_stale = true;
    rec.metadata_failures = rec.metadata_failures.saturating_add(1);
    rec.last_error = Some(format!(
        "writing archive_metadata failed: {error}; it is written again by the next step"
    ));
    settle(rec, before, "metadata", now_ms, cfg)
}
