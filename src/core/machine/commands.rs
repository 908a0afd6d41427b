//! Operators' commands (and the cron's trigger): what each does in every phase.
//!
//! Not I/O: what a command drops from R2 (an open upload, an unfinished object) is saved in the
//! record as garbage, and removed only after that save won. Repeating a command is harmless: a second trigger
//! of a running date changes nothing, and a command that changes nothing saves nothing (so it
//! never supersedes a step in flight).
//!
//! **Reset never deletes an archive whose rows may have been deleted**: once the move to
//! cleaning is saved (before the first DELETE), a reset only stops the pass and keeps the
//! object. Before that line, a reset aborts the upload and deletes the unfinished object, and
//! because it saves that decision first, a step that would start cleaning loses the race: its
//! save is refused, and it never sends a DELETE for that archive.

use thiserror::Error;

use crate::core::config::Config;
use crate::core::date::object_key;
use crate::core::state::{
    CleanState, Export, Failure, Finished, Garbage, Hold, Phase, Purpose, Record, Restore, RestoreMarks, Upload, Walk,
    Work,
};
use crate::core::status::iso;

use super::{settle, start_pass, Carry, Transition};

/// What an operator (or the cron) asks of a date.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, strum::IntoStaticStr)]
#[serde(tag = "command", rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum Command {
    /// Start or resume archiving.
    Trigger,
    /// Delete the archived rows of an uploaded, verified archive.
    Cleanup,
    /// Undo what can be undone without losing data.
    Reset,
    /// Bring archived rows back into D1 (one generation, or all), held until `hold_until_ms`.
    Restore {
        generation: Option<u32>,
        hold_until_ms: Option<i64>,
    },
    /// End a restore's hold: restored rows are cleaned against the same archive.
    Release,
    /// Change nothing; make sure the alarm the record wants exists (the cron's re-arm of a
    /// running date, which a `Trigger` would not do for a restore: it refuses).
    Rearm,
}

/// What a command did, in words an operator can act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, strum::IntoStaticStr)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
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
    /// Back to idle; nothing was deleted from D1.
    WasReset,
    /// Nothing was running; nothing changed.
    NothingToReset,
    /// Cleaning stopped; its archive is kept.
    CleaningStopped,
    /// A restore started.
    RestoreStarted,
    /// Restored rows are being cleaned against their archive.
    ReleaseStarted,
    /// The generations asked for are restored and held already; nothing changed.
    AlreadyRestored,
}

impl Reply {
    pub fn name(self) -> &'static str {
        self.into()
    }
}

impl Command {
    pub fn name(self) -> &'static str {
        self.into()
    }
}

/// Why a command was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefusalKind {
    /// Not in this phase (HTTP 409).
    Conflict,
    /// The archive or generation it names does not exist (HTTP 404, like a missing object).
    NoArchive,
}

/// A command that would be wrong now: nothing was changed; `reason` says what to do instead.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{reason}")]
pub struct Refusal {
    pub kind: RefusalKind,
    pub reason: String,
}

fn refuse(reason: impl Into<String>) -> Refusal {
    Refusal {
        kind: RefusalKind::Conflict,
        reason: reason.into(),
    }
}

/// A command's result.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub reply: Reply,
    /// Whether the record changed and must be saved; if not, only its alarm is ensured.
    pub save: bool,
    pub transition: Transition,
}

/// What a command comes to.
enum Plan {
    /// Nothing changes; the reply says why.
    Unchanged(Record, Reply),
    /// Save this record.
    Save(Record, Reply),
    /// Move into a pass over these generations (saved before the pass's first statement); for
    /// a release, the restore whose rows it deletes.
    Pass(Record, Purpose, Vec<u32>, Option<RestoreMarks>, Reply),
}

type Planning = Result<Plan, Refusal>;

/// Applies `cmd` to `rec`.
pub fn handle_command(rec: Record, cmd: Command, now_ms: i64, cfg: &Config) -> Result<Decision, Refusal> {
    let before = rec.phase.name();
    let plan = match cmd {
        Command::Trigger => trigger(rec, now_ms, cfg)?,
        Command::Cleanup => cleanup(rec)?,
        Command::Reset => reset(rec)?,
        Command::Restore {
            generation,
            hold_until_ms,
        } => restore(rec, generation, hold_until_ms, now_ms, cfg)?,
        Command::Release => release(rec)?,
        Command::Rearm => Plan::Unchanged(rec, Reply::AlreadyRunning),
    };
    let action = cmd.name();
    Ok(match plan {
        Plan::Unchanged(rec, reply) => {
            // Keep the record as it is (no save), but make sure the alarm it wants exists.
            let original = rec.clone();
            let mut transition = settle(rec, before, action, now_ms, cfg);
            let wake = original.wake_at_ms.or(super::next_wake(&original, now_ms, cfg));
            transition.record = original;
            transition.record.wake_at_ms = wake;
            Decision {
                reply,
                save: false,
                transition,
            }
        }
        Plan::Save(mut rec, reply) => {
            rec.updated_at_ms = Some(now_ms);
            rec.attempts = 0;
            let carry = carry_after(&rec);
            let mut transition = settle(rec, before, action, now_ms, cfg);
            transition.carry = carry;
            Decision {
                reply,
                save: true,
                transition,
            }
        }
        Plan::Pass(rec, purpose, generations, restored_by, reply) => Decision {
            reply,
            save: true,
            transition: start_pass(rec, (purpose, generations, restored_by), now_ms, cfg, (before, action)),
        },
    })
}

/// The carry a command's save leaves: an export it resumes keeps its own, and anything else
/// starts with none (a reset mid-export left its carry to fail the next export's first step:
/// a review's finding).
fn carry_after(rec: &Record) -> Carry {
    let export = match &rec.phase {
        Phase::Working(Work::Exporting(ex))
        | Phase::Failed(Failure {
            work: Work::Exporting(ex),
            ..
        }) => Some(ex),
        Phase::Idle
        | Phase::Working(_)
        | Phase::Uploaded { .. }
        | Phase::Cleaned { .. }
        | Phase::Restored(_)
        | Phase::Failed(_) => None,
    };
    match export {
        Some(ex) if ex.carry_len > 0 => Carry::Keep,
        Some(_) | None => Carry::Write(Vec::new()),
    }
}

fn trigger(mut rec: Record, now_ms: i64, cfg: &Config) -> Planning {
    let date = rec.date.clone();
    let phase = std::mem::replace(&mut rec.phase, Phase::Idle);
    Ok(match phase {
        Phase::Idle | Phase::Cleaned { .. } => {
            let generation = rec.next_generation();
            rec.phase = Phase::Working(Work::Exporting(Export::new(
                generation,
                object_key(&cfg.prefix, &date, generation),
                cfg.part_size,
                cfg.level,
                0,
            )
            .with_parquet(cfg.parquet)));
            rec.started_at_ms = Some(now_ms);
            rec.finished_at_ms = None;
            rec.stats = Default::default();
            rec.stats.export_started_ms = Some(now_ms);
            Plan::Save(rec, Reply::Started)
        }
        Phase::Failed(f) => {
            rec.phase = Phase::Working(f.work.resumed());
            Plan::Save(rec, Reply::Resumed)
        }
        Phase::Working(Work::Restoring(_)) => {
            return Err(refuse(format!(
                "{date} is being restored; archiving waits until the restored rows are released. Watch GET /admin/archive-status?date={date}, then POST /admin/release?date={date}"
            )))
        }
        Phase::Restored(hold) => {
            return Err(refuse(format!(
                "{date} holds restored rows until {}; they are cleaned against their archive then. To end the hold now: POST /admin/release?date={date}",
                iso(hold.until_ms)
            )))
        }
        Phase::Uploaded { generation } => {
            rec.phase = Phase::Uploaded { generation };
            let reply = if cfg.auto_cleanup { Reply::AlreadyRunning } else { Reply::AwaitingCleanup };
            Plan::Unchanged(rec, reply)
        }
        working @ Phase::Working(_) => {
            rec.phase = working;
            Plan::Unchanged(rec, Reply::AlreadyRunning)
        }
    })
}

fn cleanup(mut rec: Record) -> Planning {
    let date = rec.date.clone();
    let phase = std::mem::replace(&mut rec.phase, Phase::Idle);
    Ok(match phase {
        Phase::Uploaded { generation } => Plan::Pass(rec, Purpose::Clean, vec![generation], None, Reply::Started),
        Phase::Failed(Failure {
            work: Work::Cleaning(p),
            ..
        }) if p.purpose == Purpose::Clean => {
            rec.phase = Phase::Working(Work::Cleaning(p));
            Plan::Save(rec, Reply::Resumed)
        }
        Phase::Working(Work::Cleaning(p)) if p.purpose == Purpose::Clean => {
            rec.phase = Phase::Working(Work::Cleaning(p));
            Plan::Unchanged(rec, Reply::AlreadyRunning)
        }
        cleaned @ Phase::Cleaned { .. } => {
            rec.phase = cleaned;
            Plan::Unchanged(rec, Reply::AlreadyCleaned)
        }
        Phase::Idle => {
            return Err(refuse(format!(
                "{date} has no archive waiting to be cleaned; nothing will be deleted. Archive it first: POST /admin/trigger-archive?date={date}"
            )))
        }
        Phase::Working(Work::Exporting(_) | Work::Completing(_) | Work::Verifying(_)) => {
            return Err(refuse(format!(
                "{date} is still being archived; cleanup is allowed only after the archive is uploaded and verified by reading it back. Watch GET /admin/archive-status?date={date}"
            )))
        }
        Phase::Working(Work::Restoring(_) | Work::Cleaning(_)) | Phase::Restored(_) => {
            return Err(refuse(format!(
                "{date} has restored rows; they are cleaned by POST /admin/release?date={date}, not by cleanup"
            )))
        }
        Phase::Failed(Failure {
            work: work @ (Work::Cleaning(_) | Work::Restoring(_)),
            error,
        }) => {
            return Err(refuse(format!(
                "{date} failed while {}; restored rows are cleaned by POST /admin/release?date={date} (which resumes a release), not by cleanup. Last error: {error}",
                work.name()
            )))
        }
        Phase::Failed(f) => {
            return Err(refuse(format!(
                "{date} failed while {} and has no verified archive to clean from yet; nothing will be deleted. Resume it with POST /admin/trigger-archive?date={date}. Last error: {}",
                f.work.name(),
                f.error
            )))
        }
    })
}

fn reset(mut rec: Record) -> Planning {
    let date = rec.date.clone();
    let (work, failed) = match std::mem::replace(&mut rec.phase, Phase::Idle) {
        Phase::Working(w) => (w, false),
        Phase::Failed(f) => (f.work, true),
        Phase::Uploaded { generation } => {
            // Verified but not one row deleted: every row is still in D1.
            let garbage = rec
                .generation(generation)
                .map(|g| unfinished_object(&g.key, g.parquet_keys()))
                .unwrap_or_default();
            rec.generations.retain(|g| g.number != generation);
            rec.garbage.extend(garbage);
            return Ok(Plan::Save(rec, Reply::WasReset));
        }
        resting @ (Phase::Idle | Phase::Cleaned { .. }) => {
            rec.phase = resting;
            return Ok(Plan::Unchanged(rec, Reply::NothingToReset));
        }
        Phase::Restored(_) => {
            return Err(refuse(format!(
                "{date} holds restored rows; a reset would leave them in D1 to be archived twice. End the hold with POST /admin/release?date={date}: the restored rows are cleaned against their archive"
            )))
        }
    };
    // A working date's step may be writing its objects while this reset is served: what it
    // writes is removed again by the next alarm, after that step ([`Garbage::Recheck`]).
    let again = |garbage: Vec<Garbage>| -> Vec<Garbage> {
        if failed {
            return garbage;
        }
        let recheck = |g| match g {
            Garbage::Delete { key } => Garbage::Recheck { key },
            other @ (Garbage::Abort { .. } | Garbage::Recheck { .. }) => other,
        };
        garbage.into_iter().map(recheck).collect()
    };
    let garbage = match work {
        Work::Exporting(ex) => {
            let open = match &ex.upload {
                Upload::Multipart { upload_id, .. } => Some(upload_id.clone()),
                Upload::NotStarted => None,
            };
            again(abort_and_delete(&ex.key, open, ex.parquet_keys()))
        }
        Work::Completing(w) => {
            let open = match &w.upload {
                Finished::Multipart { upload_id, .. } => Some(upload_id.clone()),
                Finished::SinglePut => None,
            };
            again(abort_and_delete(&w.key, open, w.parquet_keys()))
        }
        Work::Verifying(v) => unfinished_object(&v.archive.key, v.archive.parquet_keys()),
        Work::Cleaning(p) if p.purpose == Purpose::Clean => {
            // Rows may be deleted (the move to cleaning was saved before the first DELETE):
            // the archive is their copy and stays. Its remaining rows go to the next generation.
            for n in &p.walk.generations {
                if let Some(g) = rec.generation_mut(*n) {
                    g.cleaning = CleanState::Partial;
                }
            }
            return Ok(Plan::Save(rec, Reply::CleaningStopped));
        }
        // A release that failed: the restored rows it did not delete stay in D1, and the cron
        // archives them again as a new generation. Nothing is lost.
        Work::Cleaning(_) if failed => Vec::new(),
        Work::Cleaning(_) => {
            return Err(refuse(format!(
                "{date} is releasing restored rows (deleting only rows equal to their archive); let it finish. Watch GET /admin/archive-status?date={date}"
            )))
        }
        Work::Restoring(_) => {
            return Err(refuse(format!(
                "{date} is being restored; a reset would leave restored rows in D1 to be archived twice. Stop it with POST /admin/release?date={date}: what was restored is cleaned against its archive"
            )))
        }
    };
    rec.garbage.extend(garbage);
    Ok(Plan::Save(rec, Reply::WasReset))
}

fn abort_and_delete(key: &str, open_upload: Option<String>, parquet: Vec<String>) -> Vec<Garbage> {
    let mut garbage: Vec<Garbage> = open_upload
        .map(|upload_id| Garbage::Abort {
            key: key.to_string(),
            upload_id,
        })
        .into_iter()
        .collect();
    garbage.extend(unfinished_object(key, parquet));
    garbage
}

/// An object that was never verified, or verified and never cleaned, with its sidecar and its
/// Parquet files: every row in them is still in D1 (nothing is deleted before the move to
/// cleaning is saved).
pub(super) fn unfinished_object(key: &str, parquet: Vec<String>) -> Vec<Garbage> {
    let mut garbage = vec![
        Garbage::Delete { key: key.to_string() },
        Garbage::Delete {
            key: crate::core::date::index_key(key),
        },
    ];
    garbage.extend(parquet.into_iter().map(|key| Garbage::Delete { key }));
    garbage
}

fn restore(
    mut rec: Record,
    generation: Option<u32>,
    hold_until_ms: Option<i64>,
    now_ms: i64,
    cfg: &Config,
) -> Planning {
    let date = rec.date.clone();
    match &rec.phase {
        Phase::Idle | Phase::Cleaned { .. } => {}
        Phase::Uploaded { generation } => {
            // Older generations, cleaned, are in R2 only: say how to reach them (a review).
            let older = if *generation > 1 {
                " To restore an older generation, clean this one first"
            } else {
                " To restore it after all, clean it first"
            };
            return Err(refuse(format!(
                "generation {generation} of {date} is verified but not cleaned: its rows are all still in D1, and a restore can start only when the date is idle or cleaned.{older} (POST /admin/trigger-cleanup?date={date}), then POST /admin/restore"
            )));
        }
        Phase::Restored(Hold { generations: held, .. })
        | Phase::Working(Work::Restoring(Restore {
            walk: Walk { generations: held, .. },
            ..
        })) => {
            // The same generations again (a client's retry): under way or done.
            if restorable(&rec, generation).is_ok_and(|g| &g == held) {
                return Ok(restore_again(rec, hold_until_ms));
            }
            return Err(refuse(format!(
                "{date} already has generations {held:?} restored or restoring (GET /admin/archive-status?date={date}); other generations can be restored only after a release (POST /admin/release?date={date}), which cleans the restored rows from D1 again"
            )));
        }
        Phase::Failed(f) => {
            // A failed restore or release refuses a reset: it ends with a release.
            let restored = match &f.work {
                Work::Restoring(_) => true,
                Work::Cleaning(p) => p.purpose == Purpose::Release,
                Work::Exporting(_) | Work::Completing(_) | Work::Verifying(_) => false,
            };
            let way_out = if restored {
                format!("resume it with POST /admin/trigger-archive?date={date}, or end it with POST /admin/release?date={date}")
            } else {
                format!("resume it with POST /admin/trigger-archive?date={date} (or stop it with POST /admin/reset?date={date})")
            };
            return Err(refuse(format!(
                "{date} failed while {}; a restore can start only when the date is idle or cleaned: {way_out}, then restore",
                f.work.name()
            )));
        }
        other @ Phase::Working(
            Work::Exporting(_) | Work::Completing(_) | Work::Verifying(_) | Work::Cleaning(_),
        ) => {
            return Err(refuse(format!(
                "{date} is {}; a restore can start only when the date is idle or cleaned. Watch GET /admin/archive-status?date={date}, and restore once it is cleaned",
                other.name()
            )))
        }
    }
    let generations = restorable(&rec, generation)?;
    rec.passes += 1;
    rec.stats.restore_started_ms = Some(now_ms);
    rec.phase = Phase::Working(Work::Restoring(Restore {
        walk: Walk::start(generations, rec.passes, cfg.clean_batch_bytes),
        hold_until_ms: hold_until_ms.unwrap_or(now_ms + i64::from(cfg.restore_hold_days) * 86_400_000),
        counts: Default::default(),
        generation_marks: true,
    }));
    Ok(Plan::Save(rec, Reply::RestoreStarted))
}

/// The restore asked for again, for the generations restored or restoring: nothing changes,
/// but a new `hold_until` takes effect (found by a review: it was ignored), since the hold is
/// only when the alarm releases the rows, and an operator may want them kept longer or less.
fn restore_again(mut rec: Record, hold_until_ms: Option<i64>) -> Plan {
    let (reply, until) = match &mut rec.phase {
        Phase::Restored(h) => (Reply::AlreadyRestored, &mut h.until_ms),
        Phase::Working(Work::Restoring(r)) => (Reply::AlreadyRunning, &mut r.hold_until_ms),
        Phase::Idle | Phase::Working(_) | Phase::Uploaded { .. } | Phase::Cleaned { .. } | Phase::Failed(_) => {
            return Plan::Unchanged(rec, Reply::AlreadyRunning)
        }
    };
    match hold_until_ms {
        Some(h) if h != *until => {
            *until = h;
            Plan::Save(rec, reply)
        }
        _ => Plan::Unchanged(rec, reply),
    }
}

/// The generations a restore walks, newest first.
fn restorable(rec: &Record, generation: Option<u32>) -> Result<Vec<u32>, Refusal> {
    let date = &rec.date;
    let not_found = |reason: String| Refusal {
        kind: RefusalKind::NoArchive,
        reason,
    };
    match generation {
        Some(n) => match rec.generation(n) {
            None => Err(not_found(format!(
                "{date} has no generation {n}; GET /admin/archive-status?date={date} lists its generations"
            ))),
            Some(g) if g.legacy => Err(refuse(format!(
                "generation {n} of {date} was written by state version 1, whose index has no per-piece checksums: it can be downloaded (GET /admin/archive?date={date}&generation={n}) but not restored in place"
            ))),
            Some(_) => Ok(vec![n]),
        },
        None => {
            // Newest first: a row changed between two exports comes back as its newer version,
            // and its older line counts as superseded, not as a conflict.
            let gens: Vec<u32> = rec
                .generations
                .iter()
                .rev()
                .filter(|g| !g.legacy)
                .map(|g| g.number)
                .collect();
            if gens.is_empty() {
                return Err(not_found(format!("{date} has no archive that can be restored")));
            }
            Ok(gens)
        }
    }
}

fn release(mut rec: Record) -> Planning {
    let date = rec.date.clone();
    Ok(match std::mem::replace(&mut rec.phase, Phase::Idle) {
        Phase::Restored(hold) => Plan::Pass(
            rec,
            Purpose::Release,
            hold.generations.clone(),
            hold.marks(),
            Reply::ReleaseStarted,
        ),
        // Stopping a restore: what was restored so far is cleaned against its archive.
        Phase::Working(Work::Restoring(r))
        | Phase::Failed(Failure {
            work: Work::Restoring(r),
            ..
        }) => Plan::Pass(
            rec,
            Purpose::Release,
            r.walk.generations.clone(),
            Some(r.marks()),
            Reply::ReleaseStarted,
        ),
        Phase::Working(Work::Cleaning(p)) if p.purpose == Purpose::Release => {
            rec.phase = Phase::Working(Work::Cleaning(p));
            Plan::Unchanged(rec, Reply::AlreadyRunning)
        }
        Phase::Failed(Failure {
            work: Work::Cleaning(p),
            ..
        }) if p.purpose == Purpose::Release => {
            rec.phase = Phase::Working(Work::Cleaning(p));
            Plan::Save(rec, Reply::Resumed)
        }
        other @ (Phase::Idle | Phase::Cleaned { .. }) => {
            let name = other.name();
            return Err(refuse(format!(
                "{date} has no restored rows to release (it is {name}); start a restore with POST /admin/restore?date={date}"
            )));
        }
        // A restore is refused here too: advise none (a review).
        other @ (Phase::Working(Work::Exporting(_) | Work::Completing(_) | Work::Verifying(_) | Work::Cleaning(_))
        | Phase::Uploaded { .. }
        | Phase::Failed(_)) => {
            let name = other.name();
            return Err(refuse(format!(
                "{date} has no restored rows to release (it is {name}): nothing of it is held. Its status says what it is doing: GET /admin/archive-status?date={date}"
            )));
        }
    })
}
