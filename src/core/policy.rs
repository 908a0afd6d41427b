//! Fleet policy: which dates the cron starts, and whether the archiver is healthy.
//!
//! Not I/O: [`crate::engine::fleet`] reads D1 and calls these with what it found.
//!
//! **A date holds a running slot only while it has work it can do itself** (exporting,
//! completing, verifying, cleaning, releasing, restoring). A date that waits for an operator
//! (`uploaded` with `AUTO_CLEANUP=false`), holds restored rows, or failed, takes no slot, so
//! other due dates still get archived.

use serde::{Deserialize, Serialize};

use crate::core::config::Config;
use crate::core::date::Day;
use crate::core::status::iso;

/// Phases in which a date does work by itself.
pub const RUNNING: [&str; 6] = [
    "exporting",
    "completing",
    "verifying",
    "cleaning",
    "releasing",
    "restoring",
];

/// A date as `archive_metadata` knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DateState {
    pub date: String,
    pub status: String,
    pub hold_until: Option<i64>,
    pub rows_pending: Option<u64>,
}

/// Why the cron pokes a date.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, strum::IntoStaticStr)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum PokeReason {
    /// Due and given a free slot: a new generation starts.
    Start,
    /// Running already: the trigger only makes sure its alarm exists.
    Rearm,
    /// Failed: the daily cron resumes it.
    Resume,
}

/// The dates to poke, in order, each with its reason.
///
/// `due`: dates past retention with rows in D1, oldest first. `finished`: a date that just
/// finished (its own late rows wait for the next daily cron, so a trickle of late rows cannot
/// chain generation after generation). `resume_failed`: the daily cron resumes failed dates.
pub fn dates_to_poke(
    due: &[String],
    states: &[DateState],
    cfg: &Config,
    finished: Option<&str>,
    resume_failed: bool,
) -> Vec<(String, PokeReason)> {
    let status_of = |d: &str| states.iter().find(|s| s.date == d).map(|s| s.status.as_str());
    let running: Vec<&DateState> = states.iter().filter(|s| RUNNING.contains(&s.status.as_str())).collect();
    let mut free = (cfg.max_running_dates as usize).saturating_sub(running.len());
    let mut out: Vec<(String, PokeReason)> = running.iter().map(|s| (s.date.clone(), PokeReason::Rearm)).collect();
    for date in due {
        if free == 0 {
            break;
        }
        let startable = matches!(status_of(date), None | Some("idle" | "cleaned"));
        if startable && finished != Some(date.as_str()) {
            out.push((date.clone(), PokeReason::Start));
            free -= 1;
        }
    }
    if resume_failed {
        let failed = states
            .iter()
            .filter(|s| s.status == "failed")
            .take(cfg.cron_max_dates as usize);
        out.extend(failed.map(|s| (s.date.clone(), PokeReason::Resume)));
    }
    out
}

/// What `/admin/health` found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    pub ok: bool,
    pub reasons: Vec<String>,
    pub last_cron_run: Option<String>,
    pub today: String,
    pub test_hooks: bool,
}

/// Inputs of the health decision, as read from D1.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HealthInputs {
    /// Failed dates and their errors.
    pub failed: Vec<(String, String)>,
    /// The oldest date with rows in D1 that is more than a day past due.
    pub overdue: Option<String>,
    pub last_cron_ms: Option<i64>,
    pub first_seen_ms: Option<i64>,
}

/// The oldest date that should be gone from D1 by now: a day past its first archivable day.
pub fn overdue_before(today: Day, cfg: &Config) -> Day {
    Day::last_archivable(today, cfg.retention_days).minus_days(1)
}

/// Healthy unless a date failed, D1 holds rows a day past due, the cron has not run for two
/// days, or test hooks are on.
pub fn health(inputs: &HealthInputs, now_ms: i64, cfg: &Config) -> Health {
    let mut reasons: Vec<String> = inputs.failed.iter().map(|(d, e)| format!("{d} failed: {e}")).collect();
    if let Some(d) = &inputs.overdue {
        reasons.push(format!(
            "D1 still holds rows of {d}, more than a day past its due time; check the cron and GET /admin/archive-status?date={d}"
        ));
    }
    let since = inputs.last_cron_ms.or(inputs.first_seen_ms).unwrap_or(now_ms);
    if now_ms - since > 2 * 86_400_000 {
        reasons.push(match inputs.last_cron_ms {
            Some(_) => "the daily cron has not run for more than two days; check the Worker's [triggers] crons".into(),
            None => "the daily cron has never run in the two days since this Worker was first checked; check [triggers] crons".into(),
        });
    }
    if cfg.test_hooks {
        reasons
            .push("TEST_HOOKS is on: /admin/test/* (arbitrary SQL) is served; remove it from the Worker's vars".into());
    }
    Health {
        ok: reasons.is_empty(),
        reasons,
        last_cron_run: inputs.last_cron_ms.map(iso),
        today: Day::from_unix_ms(now_ms).to_string(),
        test_hooks: cfg.test_hooks,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn st(date: &str, status: &str) -> DateState {
        DateState {
            date: date.into(),
            status: status.into(),
            hold_until: None,
            rows_pending: None,
        }
    }

    fn starts(out: &[(String, PokeReason)]) -> Vec<&str> {
        out.iter()
            .filter(|(_, r)| *r == PokeReason::Start)
            .map(|(d, _)| d.as_str())
            .collect()
    }

    #[test]
    fn dates_waiting_on_an_operator_take_no_slot() {
        let cfg = Config {
            max_running_dates: 2,
            ..Config::default()
        };
        let due: Vec<String> = ["01", "02", "03", "04", "05"]
            .iter()
            .map(|d| format!("2026-11-{d}"))
            .collect();
        // Three dates wait on an operator (MAX_RUNNING_DATES + 1), one failed: none takes a slot.
        let states = vec![
            st("2026-11-01", "uploaded"),
            st("2026-11-02", "uploaded"),
            st("2026-11-03", "restored"),
            st("2026-11-04", "failed"),
        ];
        let out = dates_to_poke(&due, &states, &cfg, None, false);
        assert_eq!(starts(&out), ["2026-11-05"]);
    }

    #[test]
    fn running_dates_fill_slots_and_are_rearmed_and_a_finished_date_waits() {
        let cfg = Config {
            max_running_dates: 2,
            ..Config::default()
        };
        let due: Vec<String> = ["2026-11-01", "2026-11-02", "2026-11-03"].map(String::from).to_vec();
        let states = vec![st("2026-11-01", "cleaning"), st("2026-11-02", "cleaned")];
        let out = dates_to_poke(&due, &states, &cfg, Some("2026-11-02"), true);
        assert_eq!(out[0], ("2026-11-01".into(), PokeReason::Rearm));
        assert_eq!(starts(&out), ["2026-11-03"]);
        let states = vec![st("2026-11-04", "failed")];
        let out = dates_to_poke(&[], &states, &cfg, None, true);
        assert_eq!(out, [("2026-11-04".into(), PokeReason::Resume)]);
    }

    #[test]
    fn health_reasons() {
        let cfg = Config::default();
        let now = 10 * 86_400_000;
        let h = health(&HealthInputs::default(), now, &cfg);
        assert!(h.ok, "{h:?}");
        let inputs = HealthInputs {
            failed: vec![("2026-11-01".into(), "boom".into())],
            overdue: Some("2026-10-01".into()),
            last_cron_ms: Some(now - 3 * 86_400_000),
            first_seen_ms: None,
        };
        let h = health(
            &inputs,
            now,
            &Config {
                test_hooks: true,
                ..cfg
            },
        );
        assert_eq!(h.reasons.len(), 4, "{h:?}");
        assert!(!h.ok && h.test_hooks);
    }
}
