//! The engine: loads a date's record, asks the core what to do, performs it through the ports,
//! hands the results back, and saves what the core returns. Generic over the ports, so the same
//! code runs in the Worker and, against fakes, in native tests.
//!
//! Not a decision maker: it never compares records, never picks a budget, never branches on a
//! phase. Its order of work is fixed: **save first; then write the metadata; then remove the
//! garbage the record dropped**, so that nothing is written about a step whose save lost to a
//! command, and nothing is deleted from R2 before the decision to delete it has won.

mod drive;
pub mod events;
pub mod fleet;

use thiserror::Error;

use crate::core::config::Config;
use crate::core::io::Effect;
use crate::core::machine::{
    collect_now, handle_alarm, handle_command, handle_metadata_failure, handle_metadata_written, handle_outcome,
    handle_superseded, Alarm, Carry, Command, Outcome, Refusal, Reply, StepReport, Transition,
};
use crate::core::state::Record;
use crate::core::status::{status, Status, StepLog};
use crate::ports::{Database, Durable, FailureKind, Host, ObjectStore, PortError};

/// The ports one engine call works through.
pub struct Ports<'a, D, O, S, H> {
    pub db: &'a D,
    pub r2: &'a O,
    pub store: &'a S,
    pub host: &'a H,
}

/// Why the engine could not finish a call. The saved record is unchanged in every case: once a
/// call's save won, it answers with what it saved (see `kept`).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum EngineError {
    /// Durable storage could not be read or written; the alarm (or the caller) should retry.
    #[error("durable storage of {date} failed: {source}; retry the call (an alarm retries by itself)")]
    Storage { date: String, source: PortError },
    /// The saved record cannot be read by this version of the code.
    #[error("saved state of {date} is unreadable ({detail}); deploy a version that reads it, or inspect the object's storage")]
    Corrupt { date: String, detail: String },
    /// An operator's command is not allowed in the current phase.
    #[error("{0}")]
    Refused(Refusal),
    /// A command kept losing to steps saving at the same moment.
    #[error("{date} changed three times while the command was applied; nothing was changed, retry the command")]
    Busy { date: String },
}

/// What an alarm did, for the log and the Durable Object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlarmReport {
    pub step: &'static str,
    /// Phase after the step.
    pub phase: &'static str,
    pub wake_at_ms: Option<i64>,
    /// The step's error, if it failed (the record says what happens next).
    pub error: Option<String>,
    /// The record changed under the step (a command won); its result was dropped.
    pub superseded: bool,
    /// The date gave up its running slot: the shell lets due dates start into it.
    pub hand_over: bool,
}

/// The result of a command.
#[derive(Debug, Clone, PartialEq)]
pub struct CommandReport {
    pub reply: Reply,
    pub status: Status,
    pub wake_at_ms: Option<i64>,
    /// The date gave up its running slot (a reset of a running date): the shell lets due dates
    /// start into it.
    pub hand_over: bool,
}

impl<D: Database, O: ObjectStore, S: Durable, H: Host> Ports<'_, D, O, S, H> {
    /// Performs one step for `date`: the alarm handler's whole job.
    pub async fn run_alarm(&self, date: &str, cfg: &Config) -> Result<AlarmReport, EngineError> {
        let started = self.host.now_ms();
        let (rec, carry) = self.load(date, cfg, Some(cfg.carry_capacity())).await?;
        let expected = rec.revision;
        let storage = |source| EngineError::Storage {
            date: date.into(),
            source,
        };
        let unsaved = self.store.step_begun().await.map_err(storage)? == Some(expected);
        let (transition, step) = match handle_alarm(&rec, carry, started, cfg, unsaved) {
            Alarm::Sleep => return Ok(idle_report(&rec)),
            Alarm::Advance(t) => (*t, "advance"),
            Alarm::Run(step) => {
                let name = step.name();
                self.store.begin_step(expected).await.map_err(storage)?;
                let (outcome, report) = self.drive(step, started).await;
                (handle_outcome(rec.clone(), outcome, report, cfg), name)
            }
        };
        let error = transition.log.error.clone();
        let hand_over = transition.hand_over;
        let lost = transition.record.clone();
        match self.commit(transition, expected, cfg).await? {
            Some(saved) => Ok(AlarmReport {
                step,
                phase: saved.phase.name(),
                wake_at_ms: saved.wake_at_ms,
                error,
                superseded: false,
                // The hand-over reads the slots from the metadata: not before it is written
                // (the metadata step that writes it hands over then).
                hand_over: hand_over && !saved.metadata_stale,
            }),
            None => {
                let (now_rec, _) = self.load(date, cfg, None).await?;
                // What the lost step may have written that the winner does not keep: removed,
                // best effort (whatever is left, R2 expires with its uploads, or an operator sees).
                for effect in handle_superseded(&rec, &lost, &now_rec) {
                    let _ = self.perform(effect.io()).await;
                }
                let mut report = idle_report(&now_rec);
                (report.step, report.error, report.superseded) = (step, error, true);
                Ok(report)
            }
        }
    }

    /// Applies an operator's (or the cron's) command to `date`.
    pub async fn run_command(&self, date: &str, cmd: Command, cfg: &Config) -> Result<CommandReport, EngineError> {
        for _ in 0..3 {
            let (rec, _) = self.load(date, cfg, None).await?;
            let now = self.host.now_ms();
            let decision = match handle_command(rec.clone(), cmd, now, cfg) {
                Ok(d) => d,
                Err(refusal) => {
                    let mut log = StepLog::new(&rec, cmd.name(), rec.phase.name(), now);
                    log.error = Some(refusal.reason.clone());
                    self.host.log(&log.line());
                    return Err(EngineError::Refused(refusal));
                }
            };
            let reply = decision.reply;
            if !decision.save {
                self.host.log(&decision.transition.log.line());
                return Ok(command_report(reply, &decision.transition.record, false));
            }
            let hand_over = decision.transition.hand_over;
            if let Some(saved) = self.commit(decision.transition, rec.revision, cfg).await? {
                // As after a step: not before the metadata says the slot is free.
                return Ok(command_report(reply, &saved, hand_over && !saved.metadata_stale));
            }
        }
        Err(EngineError::Busy { date: date.into() })
    }

    /// The saved record of `date` (a new one if it never ran).
    pub async fn record(&self, date: &str, cfg: &Config) -> Result<Record, EngineError> {
        Ok(self.load(date, cfg, None).await?.0)
    }

    /// Saves `t` if the saved record is still at `expected`; then writes its metadata and removes
    /// its garbage. `None` when another save won (nothing was written).
    async fn commit(&self, t: Transition, expected: u64, cfg: &Config) -> Result<Option<Record>, EngineError> {
        let Transition {
            mut record,
            carry,
            metadata,
            log,
            ..
        } = t;
        record.revision = expected + 1;
        match self.save(&record, &carry).await {
            Err(EngineError::Storage { source, .. }) if source.kind == FailureKind::Conflict => return Ok(None),
            other => other?,
        }
        if let Carry::Write(buffer) = carry {
            self.store.recycle(buffer);
        }
        self.host.log(&log.line());
        record = self.write_metadata(record, metadata, cfg).await;
        if !record.garbage.is_empty() {
            record = self.collect(record, cfg).await;
        }
        Ok(Some(record))
    }

    /// Writes the metadata of the just-saved `record`, then saves it as written (or, if the
    /// write failed, as stale with the error; its alarm comes back for it).
    async fn write_metadata(&self, record: Record, metadata: Effect, cfg: &Config) -> Record {
        let now = self.host.now_ms();
        let next = match self.perform(metadata.io()).await {
            Ok(_) => handle_metadata_written(record.clone(), now, cfg),
            Err(e) => handle_metadata_failure(record.clone(), e.to_string(), now, cfg).record,
        };
        // A command that saved in between wrote its own metadata: keep its record. Any other
        // failure leaves the record as saved, stale: its alarm writes the metadata again.
        match self.resave(next).await {
            Ok(saved) => saved,
            Err(EngineError::Storage { source, .. }) if source.kind == FailureKind::Conflict => record,
            Err(e) => self.kept(record, "metadata-saved", e),
        }
    }

    /// After a save that won: `e` failed a follow-up (saving the metadata as written, removing
    /// garbage), which the saved record's alarm does again. The call still did what it was
    /// asked, so it answers with the record as saved (and the shell arms its alarm), not with
    /// an error that says nothing changed (a review's finding).
    fn kept(&self, saved: Record, action: &'static str, e: EngineError) -> Record {
        let mut log = StepLog::new(&saved, action, saved.phase.name(), self.host.now_ms());
        log.error = Some(format!("{e}; the next alarm does it again"));
        self.host.log(&log.line());
        saved
    }

    /// Removes the record's garbage from R2 and saves the record without it. If a removal
    /// fails, the record keeps it and its alarm comes back for it.
    async fn collect(&self, record: Record, cfg: &Config) -> Record {
        let started = self.host.now_ms();
        let Some(step) = collect_now(&record) else {
            return record;
        };
        let (outcome, report) = self.drive(step, started).await;
        if !matches!(outcome, Outcome::Collected(_)) {
            return record;
        }
        let t = handle_outcome(record.clone(), outcome, report, cfg);
        match Box::pin(self.commit(t, record.revision, cfg)).await {
            Ok(Some(saved)) => saved,
            Ok(None) => record,
            Err(e) => self.kept(record, "garbage-saved", e),
        }
    }

    /// Saves a follow-up of a record this engine call just saved.
    async fn resave(&self, mut record: Record) -> Result<Record, EngineError> {
        record.revision += 1;
        self.save(&record, &Carry::Keep).await?;
        Ok(record)
    }

    async fn load(&self, date: &str, cfg: &Config, carry: Option<usize>) -> Result<(Record, Vec<u8>), EngineError> {
        let loaded = self.store.load(carry).await.map_err(|source| EngineError::Storage {
            date: date.into(),
            source,
        })?;
        let Some((json, carry)) = loaded else {
            return Ok((Record::new(date), Vec::new()));
        };
        let corrupt = |detail: String| EngineError::Corrupt {
            date: date.into(),
            detail,
        };
        let rec = Record::from_json(&json, cfg).map_err(corrupt)?;
        if rec.date != date {
            return Err(corrupt(format!("record is for {}", rec.date)));
        }
        Ok((rec, carry))
    }

    /// Saves `rec` (whose revision is already the new one) if storage still holds the one before.
    async fn save(&self, rec: &Record, carry: &Carry) -> Result<(), EngineError> {
        let storage = |source| EngineError::Storage {
            date: rec.date.clone(),
            source,
        };
        let json = serde_json::to_string(rec).map_err(|e| storage(PortError::transient("do.save", e.to_string())))?;
        let carry = match carry {
            Carry::Keep => None,
            Carry::Write(bytes) => Some(bytes.as_slice()),
        };
        self.store.save(&json, carry, rec.revision - 1).await.map_err(storage)
    }
}

fn idle_report(rec: &Record) -> AlarmReport {
    AlarmReport {
        step: "sleep",
        phase: rec.phase.name(),
        wake_at_ms: rec.wake_at_ms,
        error: None,
        superseded: false,
        hand_over: false,
    }
}

fn command_report(reply: Reply, rec: &Record, hand_over: bool) -> CommandReport {
    CommandReport {
        reply,
        status: status(rec),
        wake_at_ms: rec.wake_at_ms,
        hand_over,
    }
}

/// A step's report before it ran (for steps that fail before any call).
pub fn report_at(now_ms: i64) -> StepReport {
    StepReport {
        started_ms: now_ms,
        now_ms,
        ..StepReport::default()
    }
}
