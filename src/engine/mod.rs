//! The engine: loads a date's record, performs what the core decided through the ports, folds
//! the result, writes `archive_metadata`, and saves. Generic over the ports, so the same code
//! runs in the Worker and, against fakes, in native tests.
//!
//! Not a decision maker: every choice about business state is the core's. The engine only
//! branches on *what* the core asked for and on *how* a platform call went.

mod perform;

use thiserror::Error;

use crate::core::config::Config;
use crate::core::machine::{
    handle_command, handle_failure, handle_outcome, next_action, Action, Command, Effect, Outcome, Refusal, Reply,
    StepError,
};
use crate::core::sql;
use crate::core::state::{Phase, Record, STATE_VERSION};
use crate::core::status::{metadata_row, status, Status};
use crate::ports::{Database, Durable, FailureKind, Host, ObjectStore, PortError};

/// The ports one engine call works through.
pub struct Ports<'a, D, O, S, H> {
    pub db: &'a D,
    pub r2: &'a O,
    pub store: &'a S,
    pub host: &'a H,
}

/// Why the engine could not finish a call. The record on storage is unchanged in every case.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum EngineError {
    /// Durable storage could not be read or written; the alarm (or the caller) should retry.
    #[error("durable storage of {date} failed: {source}; retry the call (an alarm retries by itself)")]
    Storage { date: String, source: PortError },
    /// The saved record cannot be read by this version of the code.
    #[error("saved state of {date} is unreadable ({detail}); deploy a version that reads state version {found}, or inspect the object's storage")]
    Corrupt { date: String, detail: String, found: u32 },
    /// An operator's command is not allowed in the current phase.
    #[error("{0}")]
    Refused(Refusal),
    /// A side effect of a command (abort an upload, delete an object) failed.
    #[error("{0}; nothing was changed, retry the command")]
    Effect(PortError),
    /// `archive_metadata` could not be written; the command changed nothing.
    #[error("writing archive_metadata failed: {0}; nothing was changed, retry the command")]
    Metadata(PortError),
}

/// What a step did, for logs and the alarm.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepReport {
    /// The action performed (`capture`, `export`, ... or `wait`).
    pub action: &'static str,
    /// Phase after the step.
    pub phase: &'static str,
    /// When the next alarm is due (unix ms), if any.
    pub wake_at_ms: Option<i64>,
    /// The step's error, if it failed (the record says what happens next).
    pub error: Option<String>,
    /// The record changed under the step (a command won); its result was dropped.
    pub superseded: bool,
}

/// The result of a command.
#[derive(Debug, Clone, PartialEq)]
pub struct CommandReport {
    pub reply: Reply,
    pub status: Status,
    pub wake_at_ms: Option<i64>,
}

impl<D: Database, O: ObjectStore, S: Durable, H: Host> Ports<'_, D, O, S, H> {
    /// Performs one step for `date`: the alarm handler's whole job.
    pub async fn run_step(&self, date: &str, cfg: &Config) -> Result<StepReport, EngineError> {
        let started = self.host.now_ms();
        let (rec, carry) = self.load(date, cfg, true).await?;
        let action = next_action(&rec, cfg);
        let action_name = action.name();
        if action == Action::Wait {
            return Ok(StepReport {
                action: action_name,
                phase: rec.phase.name(),
                wake_at_ms: None,
                error: None,
                superseded: false,
            });
        }
        let (outcome, new_carry) = perform::perform(self, action, carry).await;
        let error = match &outcome {
            Outcome::Failed(e) => Some(e.to_string()),
            _ => None,
        };
        let now = self.host.now_ms();
        let mut next = handle_outcome(rec.clone(), outcome, now, cfg);
        let mut new_carry = new_carry;
        // No step advances without its archive_metadata row: a verified archive is recorded
        // there before anything is deleted, and d1_cleaned = 1 before the record says Cleaned.
        if let Err(e) = self.sync_metadata(&rec, &next, now).await {
            next = handle_failure(rec.clone(), StepError::Port(e), now, cfg);
            new_carry = None;
            // Best effort for the failure itself; the next step writes it again.
            let _ = self.sync_metadata(&rec, &next, now).await;
        }
        next.stats.longest_step_ms = next.stats.longest_step_ms.max((now - started).max(0) as u64);
        next.stats.peak_memory_bytes = next.stats.peak_memory_bytes.max(self.host.memory_bytes());
        let carry = carry_to_save(&rec, &next, new_carry.as_deref());
        match self.save(&next, carry, rec.revision).await {
            Ok(()) => Ok(StepReport {
                action: action_name,
                phase: next.phase.name(),
                wake_at_ms: next.wake_at_ms,
                error,
                superseded: false,
            }),
            Err(EngineError::Storage { source, .. }) if source.kind == FailureKind::Conflict => {
                let (now_rec, _) = self.load(date, cfg, false).await?;
                Ok(StepReport {
                    action: action_name,
                    phase: now_rec.phase.name(),
                    wake_at_ms: now_rec.wake_at_ms,
                    error,
                    superseded: true,
                })
            }
            Err(e) => Err(e),
        }
    }

    /// Applies an operator's (or the cron's) command to `date`.
    pub async fn run_command(&self, date: &str, cmd: Command, cfg: &Config) -> Result<CommandReport, EngineError> {
        let (rec, _) = self.load(date, cfg, false).await?;
        let now = self.host.now_ms();
        let decision = handle_command(rec.clone(), cmd, now, cfg).map_err(EngineError::Refused)?;
        for effect in &decision.effects {
            let result = match effect {
                Effect::AbortUpload { key, upload_id } => match self.r2.abort_upload(key, upload_id).await {
                    Err(e) if e.kind == FailureKind::NoSuchUpload => Ok(()),
                    other => other,
                },
                Effect::DeleteObject { key } => self.r2.delete(key).await,
            };
            result.map_err(EngineError::Effect)?;
        }
        let next = decision.record;
        self.sync_metadata(&rec, &next, now)
            .await
            .map_err(EngineError::Metadata)?;
        let carry = carry_to_save(&rec, &next, None);
        if next != rec {
            self.save(&next, carry, rec.revision).await?;
        }
        Ok(CommandReport {
            reply: decision.reply,
            status: status(&next),
            wake_at_ms: next.wake_at_ms,
        })
    }

    /// The status of `date`.
    pub async fn status(&self, date: &str, cfg: &Config) -> Result<(Status, Record), EngineError> {
        let (rec, _) = self.load(date, cfg, false).await?;
        Ok((status(&rec), rec))
    }

    async fn load(&self, date: &str, cfg: &Config, with_carry: bool) -> Result<(Record, Vec<u8>), EngineError> {
        // Room for one part and one slice of output (see `perform::export`).
        let capacity = cfg.part_size as usize + 256 * 1024;
        let loaded = self
            .store
            .load(with_carry.then_some(capacity))
            .await
            .map_err(|source| EngineError::Storage {
                date: date.into(),
                source,
            })?;
        let Some((json, carry)) = loaded else {
            return Ok((Record::new(date), Vec::new()));
        };
        let corrupt = |detail: String, found: u32| EngineError::Corrupt {
            date: date.into(),
            detail,
            found,
        };
        let version = serde_json::from_str::<serde_json::Value>(&json)
            .ok()
            .and_then(|v| v.get("version").and_then(|v| v.as_u64()))
            .unwrap_or(0) as u32;
        if version != STATE_VERSION {
            return Err(corrupt(
                format!("state version {version}, this code reads {STATE_VERSION}"),
                version,
            ));
        }
        let rec: Record = serde_json::from_str(&json).map_err(|e| corrupt(e.to_string(), version))?;
        if rec.date != date {
            return Err(corrupt(format!("record is for {}", rec.date), version));
        }
        Ok((rec, carry))
    }

    async fn save(&self, rec: &Record, carry: Option<&[u8]>, expected_revision: u64) -> Result<(), EngineError> {
        let mut rec = rec.clone();
        rec.revision = expected_revision + 1;
        let json = serde_json::to_string(&rec).map_err(|e| EngineError::Corrupt {
            date: rec.date.clone(),
            detail: e.to_string(),
            found: STATE_VERSION,
        })?;
        self.store
            .save(&json, carry, expected_revision)
            .await
            .map_err(|source| EngineError::Storage {
                date: rec.date.clone(),
                source,
            })
    }

    async fn sync_metadata(&self, before: &Record, after: &Record, now: i64) -> Result<(), PortError> {
        let Some(row) = metadata_row(after, now) else {
            return Ok(());
        };
        let unchanged = metadata_row(before, now).as_ref() == Some(&row);
        if unchanged {
            return Ok(());
        }
        self.db.run(&sql::upsert_metadata(&row)).await.map(|_| ())
    }
}

/// What to write as the carry when `before` becomes `after`: the step's new carry, nothing
/// (keep the stored one, which `after` still expects), or an empty one.
fn carry_to_save<'c>(before: &Record, after: &Record, new: Option<&'c [u8]>) -> Option<&'c [u8]> {
    let want = expected_carry(after);
    match new {
        Some(bytes) if bytes.len() as u64 == want => Some(bytes),
        _ if want == 0 => Some(&[]),
        _ if want == expected_carry(before) => None,
        // Unreachable by construction; an empty carry makes the next export step restart
        // cleanly (CarryLost) instead of writing a corrupt stream.
        _ => Some(&[]),
    }
}

/// Carry bytes the record expects on storage.
fn expected_carry(rec: &Record) -> u64 {
    match &rec.phase {
        Phase::Exporting(ex) => ex.carry_len,
        Phase::Failed(f) => match &*f.at {
            Phase::Exporting(ex) => ex.carry_len,
            _ => 0,
        },
        _ => 0,
    }
}
