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

/// Whether a date in `status` holds a running slot: it works by itself, or it is `uploaded` on
/// its way to cleaning (`AUTO_CLEANUP` on; with it off, it waits for an operator).
pub fn holds_slot(status: &str, cfg: &Config) -> bool {
    RUNNING.contains(&status) || (status == "uploaded" && cfg.auto_cleanup)
}

/// A date as `archive_metadata` knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DateState {
    pub date: String,
    pub status: String,
    pub hold_until: Option<i64>,
    pub rows_pending: Option<u64>,
    /// When its metadata last changed (unix ms): when it was last tried.
    pub updated_at: Option<i64>,
}

/// How long a failed date, or an archived date with rows in D1 again, rests after it was last
/// tried before a slot goes to it again: about once a day, as the daily cron comes round.
pub const RETRY_AFTER_MS: i64 = 20 * 3_600_000;

/// Why the cron pokes a date.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, strum::IntoStaticStr)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum PokeReason {
    /// Due and given a free slot: a new generation starts.
    Start,
    /// Running already, or holding restored rows past the hold's end: the trigger only makes
    /// sure its alarm exists (which starts the release of a hold that ended).
    Rearm,
    /// Failed: the daily cron resumes it.
    Resume,
}

/// The dates to poke, in order, each with its reason.
///
/// `due`: dates past retention with rows in D1, oldest first. Running dates are re-armed. The
/// slots they leave free go first to dates never archived (oldest first), then to the dates to
/// try again, least recently tried first: failed dates to resume (at most `CRON_MAX_DATES`)
/// and archived dates with rows in D1 again, each only once it rested [`RETRY_AFTER_MS`] since
/// it was last tried. So dates whose rows cannot be cleaned (README.md, Known limits), or that
/// fail at once, cannot take the slots from each other or from new dates without end, and
/// none waits for ever behind them. Dates holding restored rows past their hold's end are
/// re-armed too: their alarm may have been dropped (Cloudflare gives an alarm up after its
/// retries), and only it starts the release. `finished`: a date that just gave up its slot
/// (the hand-over), never poked again by its own hand-over.
pub fn dates_to_poke(
    due: &[String],
    states: &[DateState],
    cfg: &Config,
    finished: Option<&str>,
    now_ms: i64,
) -> Vec<(String, PokeReason)> {
    let state_of = |d: &str| states.iter().find(|s| s.date == d);
    let running: Vec<&DateState> = states.iter().filter(|s| holds_slot(&s.status, cfg)).collect();
    let free = (cfg.max_running_dates as usize).saturating_sub(running.len());
    let other = |d: &str| finished != Some(d);
    let never_archived = due
        .iter()
        .filter(|d| other(d) && state_of(d).is_none_or(|s| s.status == "idle"))
        .map(|d| (d.clone(), PokeReason::Start));
    let rested = |s: &&DateState| other(&s.date) && s.updated_at.is_none_or(|t| now_ms - t >= RETRY_AFTER_MS);
    // At most `CRON_MAX_DATES` failed dates, the least recently tried (not the oldest dates).
    let mut failed: Vec<&DateState> = states.iter().filter(|s| s.status == "failed").filter(rested).collect();
    failed.sort_by_key(|s| s.updated_at);
    let failed = failed
        .into_iter()
        .take(cfg.cron_max_dates as usize)
        .map(|s| (s, PokeReason::Resume));
    let archived_again = due
        .iter()
        .filter_map(|d| state_of(d))
        .filter(|s| s.status == "cleaned")
        .filter(rested)
        .map(|s| (s, PokeReason::Start));
    let mut again: Vec<(&DateState, PokeReason)> = failed.chain(archived_again).collect();
    again.sort_by_key(|(s, _)| s.updated_at);
    let again = again.into_iter().map(|(s, r)| (s.date.clone(), r));
    let hold_ended = states
        .iter()
        .filter(|s| other(&s.date) && s.status == "restored" && s.hold_until.is_some_and(|h| h <= now_ms));
    let rearm = running
        .iter()
        .copied()
        .chain(hold_ended)
        .map(|s| (s.date.clone(), PokeReason::Rearm));
    rearm.chain(never_archived.chain(again).take(free)).collect()
}

/// What `/admin/health` found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    pub ok: bool,
    /// What makes it unhealthy, each with what to do.
    pub reasons: Vec<String>,
    /// Old rows in D1 that an operator asked for (held restores, archives waiting for a manual
    /// cleanup): said, but healthy.
    pub notices: Vec<String>,
    pub last_cron_run: Option<String>,
    pub today: String,
    pub test_hooks: bool,
}

/// `event_date` values with rows, oldest first, as a scan of D1 found them.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DateScan {
    /// The dates, at most the scan's limit.
    pub dates: Vec<String>,
    /// More dates follow those.
    pub cut: bool,
    /// Values that are no `YYYY-MM-DD` date (the first [`NOT_DATES_SHOWN`], and one more if
    /// there are more): their rows are archived under no date.
    pub not_dates: Vec<String>,
}

/// Inputs of the health decision, as read from D1.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HealthInputs {
    /// Failed dates and their errors, the first [`OVERDUE_SHOWN`] (all of them are counted
    /// from `states`).
    pub failed: Vec<(String, String)>,
    /// Dates with rows in D1 more than a day past due, oldest first: up to [`OVERDUE_READ`]
    /// more than the dates `states` knows, so dates waiting on an operator hide none; and the
    /// values that are no date, wherever they sort.
    pub overdue: DateScan,
    /// Where the dates `archive_metadata` knows stand.
    pub states: Vec<DateState>,
    pub last_cron_ms: Option<i64>,
    pub first_seen_ms: Option<i64>,
}

/// How many overdue dates health names in each list (reasons, notices).
pub const OVERDUE_SHOWN: usize = 10;

/// How many overdue dates beyond those `archive_metadata` knows health reads to count them.
pub const OVERDUE_READ: usize = 1_000;

/// How many `event_date` values that are no date health names.
pub const NOT_DATES_SHOWN: usize = 3;

/// The newest date whose rows should be gone from D1 by now: archivable for more than a day.
pub fn last_overdue(today: Day, cfg: &Config) -> Day {
    Day::last_archivable(today, cfg.retention_days).minus_days(2)
}

/// Why a date more than a day past due still has rows in D1, and whether that is unhealthy.
fn overdue(date: &str, state: Option<&DateState>, now_ms: i64, cfg: &Config) -> Option<Result<String, String>> {
    let (status, hold_until, rows_pending) = match state {
        Some(s) => (s.status.as_str(), s.hold_until, s.rows_pending.unwrap_or(0)),
        None => ("", None, 0),
    };
    Some(match status {
        // Said with its error already.
        "failed" => return None,
        "restoring" => Ok(format!("{date}: a restore asked for by an operator is running")),
        "releasing" => Ok(format!("{date}: a release asked for by an operator is running")),
        "restored" if hold_until.is_none_or(|h| h > now_ms) => Ok(format!(
            "{date}: restored rows are held in D1{}; POST /admin/release?date={date} cleans them earlier",
            hold_until.map(|h| format!(" until {}", iso(h))).unwrap_or_default()
        )),
        "uploaded" if !cfg.auto_cleanup => Ok(format!(
            "{date}: archived and verified, waiting for POST /admin/trigger-cleanup?date={date} (AUTO_CLEANUP=false)"
        )),
        "cleaned" if rows_pending > 0 => Err(format!(
            "D1 still holds {rows_pending} rows of {date} that did not match its archive's lines: changed after the export (the next cron archives them as a new generation), or values D1 cannot carry unchanged (README.md, Known limits; they stay until changed or deleted); see GET /admin/archive-status?date={date}, and the rows in D1 (wrangler d1 execute <database> --remote --command \"SELECT * FROM traffic_events WHERE event_date = '{date}'\")"
        )),
        _ => Err(format!(
            "D1 still holds rows of {date}, more than a day past its due time; check the cron and GET /admin/archive-status?date={date}"
        )),
    })
}

/// Healthy unless a date failed, D1 holds rows a day past due that nobody asked to keep, the
/// cron has not run for two days, or test hooks are on.
pub fn health(inputs: &HealthInputs, now_ms: i64, cfg: &Config) -> Health {
    let mut reasons: Vec<String> = inputs
        .failed
        .iter()
        .take(OVERDUE_SHOWN)
        .map(|(d, e)| format!("{d} failed: {e}"))
        .collect();
    let failed = inputs.states.iter().filter(|s| s.status == "failed").count();
    if failed > reasons.len() {
        reasons.push(format!(
            "and {} more failed dates (GET /admin/dates lists them)",
            failed - reasons.len()
        ));
    }
    // Every overdue date read is looked at (dates an operator asked to keep must not hide one
    // nobody did: a review's finding); each list names the first OVERDUE_SHOWN.
    let (mut named, mut more) = ([Vec::new(), Vec::new()], [0usize; 2]);
    for date in &inputs.overdue.dates {
        let state = inputs.states.iter().find(|s| &s.date == date);
        let (i, text) = match overdue(date, state, now_ms, cfg) {
            Some(Ok(notice)) => (0, notice),
            Some(Err(reason)) => (1, reason),
            None => continue,
        };
        if named[i].len() < OVERDUE_SHOWN {
            named[i].push(text);
        } else {
            more[i] += 1;
        }
    }
    for (list, more) in named.iter_mut().zip(more) {
        if more > 0 {
            let least = if inputs.overdue.cut { "at least " } else { "" };
            list.push(format!(
                "and {least}{more} more such dates (GET /admin/dates lists them)"
            ));
        }
    }
    let [notices, overdue_reasons] = named;
    reasons.extend(overdue_reasons);
    let not_dates = &inputs.overdue.not_dates;
    if !not_dates.is_empty() {
        let values: Vec<String> = not_dates
            .iter()
            .take(NOT_DATES_SHOWN)
            .map(|v| format!("{v:?}"))
            .collect();
        reasons.push(format!(
            "D1 holds rows whose event_date is no YYYY-MM-DD date ({}{}): no date's archive takes them, so they stay in D1; fix what the app writes, then correct or delete those rows (SELECT event_date, count(*) FROM traffic_events WHERE length(event_date) <> 10 OR event_date NOT GLOB '[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]' GROUP BY 1)",
            values.join(", "),
            if not_dates.len() > NOT_DATES_SHOWN { ", …" } else { "" }
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
        notices,
        last_cron_run: inputs.last_cron_ms.map(iso),
        today: Day::from_unix_ms(now_ms).to_string(),
        test_hooks: cfg.test_hooks,
    }
}

/// Health when the Worker's vars do not parse (`error` names the var): unhealthy, and nothing
/// read from D1, since every rule above depends on the config.
pub fn misconfigured(error: &str, now_ms: i64) -> Health {
    Health {
        ok: false,
        reasons: vec![format!(
            "the Worker's configuration is invalid, so nothing is archived: {error}"
        )],
        notices: Vec::new(),
        last_cron_run: None,
        today: Day::from_unix_ms(now_ms).to_string(),
        test_hooks: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The default config with `AUTO_CLEANUP=false`.
    fn manual_cleanup() -> Config {
        Config {
            auto_cleanup: false,
            ..Config::default()
        }
    }

    fn st(date: &str, status: &str) -> DateState {
        DateState {
            date: date.into(),
            status: status.into(),
            hold_until: None,
            rows_pending: None,
            updated_at: None,
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
            auto_cleanup: false,
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
        let out = dates_to_poke(&due, &states, &cfg, None, NOW);
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
        let out = dates_to_poke(&due, &states, &cfg, Some("2026-11-02"), NOW);
        assert_eq!(out[0], ("2026-11-01".into(), PokeReason::Rearm));
        assert_eq!(starts(&out), ["2026-11-03"]);
        let states = vec![st("2026-11-04", "failed")];
        let out = dates_to_poke(&[], &states, &cfg, None, NOW);
        assert_eq!(out, [("2026-11-04".into(), PokeReason::Resume)]);
    }

    /// A hold that ended needs its alarm to start the release; Cloudflare gives up an alarm
    /// after its retries (a bad var deployed for minutes makes every alarm throw), so the cron
    /// re-arms such a date, and only such a held date (a review's finding).
    #[test]
    fn a_restored_date_whose_hold_ended_is_rearmed() {
        let held = |date: &str, until: i64| DateState {
            hold_until: Some(until),
            ..st(date, "restored")
        };
        let states = vec![
            held("2026-11-01", NOW - 3 * 86_400_000),
            held("2026-11-02", NOW + 1),
            held("2026-11-03", NOW),
        ];
        let out = dates_to_poke(&[], &states, &Config::default(), None, NOW);
        assert_eq!(
            out,
            [
                ("2026-11-01".into(), PokeReason::Rearm),
                ("2026-11-03".into(), PokeReason::Rearm)
            ]
        );
        // Not by its own hand-over.
        let out = dates_to_poke(&[], &states[..1], &Config::default(), Some("2026-11-01"), NOW);
        assert_eq!(out, []);
    }

    const NOW: i64 = 1_796_000_000_000;

    /// `MAX_RUNNING_DATES` and `CRON_MAX_DATES`.
    fn slots(max_running_dates: u32, cron_max_dates: u32) -> Config {
        Config {
            max_running_dates,
            cron_max_dates,
            ..Config::default()
        }
    }

    fn tried(date: &str, status: &str, hours_ago: i64) -> DateState {
        DateState {
            updated_at: Some(NOW - hours_ago * 3_600_000),
            ..st(date, status)
        }
    }

    /// Found by a review: two cleaned dates whose rows can never be cleaned started each other
    /// on every hand-over, without end, and held both slots against a date never archived. A
    /// date is tried again only once it rested a day's worth; new dates come first.
    #[test]
    fn dates_tried_again_rest_first_and_new_dates_come_first() {
        let cfg = Config {
            max_running_dates: 2,
            ..Config::default()
        };
        let due: Vec<String> = ["2026-11-01", "2026-11-02", "2026-11-03", "2026-11-10"]
            .map(String::from)
            .to_vec();
        // 11-01 just finished and hands over; 11-03 finished an hour ago.
        let states = vec![
            tried("2026-11-01", "cleaned", 0),
            st("2026-11-02", "exporting"),
            tried("2026-11-03", "cleaned", 1),
        ];
        let out = dates_to_poke(&due, &states, &cfg, Some("2026-11-01"), NOW);
        assert_eq!(starts(&out), ["2026-11-10"]);
        let busy = [states.clone(), vec![st("2026-11-10", "exporting")]].concat();
        assert_eq!(
            starts(&dates_to_poke(&due, &busy, &cfg, Some("2026-11-01"), NOW)),
            Vec::<&str>::new()
        );
        // Nothing new left: the rested dates go, least recently tried first, the others wait.
        let states = vec![
            tried("2026-11-01", "cleaned", 30),
            tried("2026-11-02", "cleaned", 1),
            tried("2026-11-03", "cleaned", 50),
            tried("2026-11-10", "cleaned", 2),
        ];
        assert_eq!(
            starts(&dates_to_poke(&due, &states, &cfg, None, NOW)),
            ["2026-11-03", "2026-11-01"]
        );
    }

    /// Found by a review of the fix above: with one slot, a new date each day took it at the
    /// cron, and the hand-overs started only new dates, so failed dates and late rows waited
    /// for ever. The hand-over now gives the slot to them too, once each has rested.
    #[test]
    fn with_one_slot_failed_dates_and_late_rows_get_their_turn() {
        let cfg = Config {
            max_running_dates: 1,
            ..Config::default()
        };
        let due: Vec<String> = ["2026-11-01", "2026-11-10"].map(String::from).to_vec();
        let states = vec![
            tried("2026-10-01", "failed", 30),
            tried("2026-10-02", "failed", 25),
            tried("2026-11-01", "cleaned", 40),
            tried("2026-11-10", "cleaned", 0),
        ];
        // 11-10, new today, finished: its hand-over goes to the date tried longest ago.
        let out = dates_to_poke(&due, &states, &cfg, Some("2026-11-10"), NOW);
        assert_eq!(out, [("2026-11-01".into(), PokeReason::Start)]);
        let states = [
            &states[..2],
            &[tried("2026-11-01", "cleaned", 0), tried("2026-11-10", "cleaned", 0)],
        ]
        .concat();
        let out = dates_to_poke(&due, &states, &cfg, Some("2026-11-01"), NOW);
        assert_eq!(out, [("2026-10-01".into(), PokeReason::Resume)]);
    }

    /// Found by a review: the cap of `CRON_MAX_DATES` failed dates came before the sort, so a
    /// date tried a month ago lost to one tried yesterday whose date sorts first.
    #[test]
    fn the_least_recently_tried_failed_dates_are_resumed_first() {
        let cfg = slots(2, 1);
        let states = [tried("2026-10-01", "failed", 21), tried("2026-10-02", "failed", 720)];
        let out = dates_to_poke(&[], &states, &cfg, None, NOW);
        assert_eq!(out, [("2026-10-02".into(), PokeReason::Resume)]);
    }

    /// Found by a review: one cron resumed up to `CRON_MAX_DATES` failed dates on top of the
    /// slots. They come from the free slots, after dates never archived.
    #[test]
    fn resumes_take_free_slots_after_dates_never_archived() {
        let cfg = slots(3, 30);
        let mut states: Vec<DateState> = (1..=20).map(|d| st(&format!("2026-10-{d:02}"), "failed")).collect();
        states.push(st("2026-11-02", "cleaning"));
        let due = ["2026-10-01", "2026-11-01"].map(String::from).to_vec();
        let out = dates_to_poke(&due, &states, &cfg, None, NOW);
        assert_eq!(
            out,
            [
                ("2026-11-02".into(), PokeReason::Rearm),
                ("2026-11-01".into(), PokeReason::Start),
                ("2026-10-01".into(), PokeReason::Resume),
            ]
        );
        // `uploaded` on its way to cleaning holds its slot; waiting for an operator, it does not.
        let states = vec![st("2026-11-02", "uploaded"), st("2026-11-03", "uploaded")];
        let two = Config {
            max_running_dates: 2,
            ..cfg.clone()
        };
        assert_eq!(
            starts(&dates_to_poke(&due, &states, &two, None, NOW)),
            Vec::<&str>::new()
        );
        let manual = Config {
            auto_cleanup: false,
            ..two
        };
        assert_eq!(
            starts(&dates_to_poke(&due, &states, &manual, None, NOW)),
            ["2026-10-01", "2026-11-01"]
        );
    }

    /// A scan that found `dates` and nothing else.
    fn dates(dates: Vec<String>) -> DateScan {
        DateScan {
            dates,
            ..DateScan::default()
        }
    }

    #[test]
    fn health_reasons() {
        let cfg = Config::default();
        let now = 10 * 86_400_000;
        let h = health(&HealthInputs::default(), now, &cfg);
        assert!(h.ok, "{h:?}");
        let inputs = HealthInputs {
            failed: vec![("2026-11-01".into(), "boom".into())],
            overdue: dates(vec!["2026-10-01".into()]),
            states: vec![],
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
        let err = Config::from_vars(|n| (n == "RETENTION_DAYS").then(|| "seven".to_string())).unwrap_err();
        let h = misconfigured(&err.to_string(), now);
        assert!(
            !h.ok && h.reasons.len() == 1 && h.reasons[0].contains("RETENTION_DAYS"),
            "{h:?}"
        );
        assert_eq!(h.today, "1970-01-11");
    }

    #[test]
    fn dates_an_operator_asked_to_keep_hide_no_overdue_date() {
        let (cfg, now) = (manual_cleanup(), 100 * 86_400_000);
        let waiting: Vec<String> = (1..=12).map(|d| format!("2026-09-{d:02}")).collect();
        let mut overdue = waiting.clone();
        overdue.extend((1..=12).map(|d| format!("2026-10-{d:02}")));
        let inputs = HealthInputs {
            overdue: dates(overdue),
            states: waiting.iter().map(|d| st(d, "uploaded")).collect(),
            last_cron_ms: Some(now),
            ..HealthInputs::default()
        };
        let h = health(&inputs, now, &cfg);
        assert!(!h.ok, "{h:?}");
        let (reasons, notices) = (&h.reasons, &h.notices);
        assert_eq!(
            (reasons.len(), notices.len()),
            (OVERDUE_SHOWN + 1, OVERDUE_SHOWN + 1),
            "{h:?}"
        );
        assert!(
            reasons[0].contains("2026-10-01") && notices[0].contains("2026-09-01"),
            "{h:?}"
        );
        assert!(reasons[OVERDUE_SHOWN].starts_with("and 2 more") && notices[OVERDUE_SHOWN].starts_with("and 2 more"));
        // A read that stopped at its limit says the count is a floor.
        let mut cut = inputs;
        cut.overdue.cut = true;
        let h = health(&cut, now, &cfg);
        assert!(h.reasons[OVERDUE_SHOWN].starts_with("and at least 2 more"), "{h:?}");
        // Rows under an event_date that is no date are named: no archive takes them.
        let odd = HealthInputs {
            overdue: DateScan {
                not_dates: vec!["2026-11-01T05:00:00Z".into(), "bogus\"".into()],
                ..DateScan::default()
            },
            ..HealthInputs::default()
        };
        let h = health(&odd, now, &cfg);
        assert!(!h.ok, "{h:?}");
        assert!(
            h.reasons
                .iter()
                .any(|r| r.contains(r#"("2026-11-01T05:00:00Z", "bogus\"")"#)),
            "{h:?}"
        );
    }

    #[test]
    fn old_rows_an_operator_asked_for_are_notices_and_the_rest_say_why_they_stay() {
        let (cfg, now) = (manual_cleanup(), 10 * 86_400_000);
        let with = |date: &str, status: &str, hold_until: Option<i64>, rows_pending: Option<u64>| DateState {
            date: date.into(),
            status: status.into(),
            hold_until,
            rows_pending,
            updated_at: None,
        };
        let states = vec![
            with("2026-10-01", "restored", Some(now + 86_400_000), None),
            with("2026-10-02", "uploaded", None, None),
            with("2026-10-03", "restoring", None, None),
            with("2026-10-04", "cleaned", None, Some(3)),
            with("2026-10-05", "failed", None, None),
            with("2026-10-06", "restored", Some(now - 1), None),
            with("2026-10-07", "cleaned", None, Some(0)),
        ];
        let overdue: Vec<String> = (1..=8).map(|d| format!("2026-10-{d:02}")).collect();
        let inputs = HealthInputs {
            failed: vec![("2026-10-05".into(), "boom".into())],
            overdue: dates(overdue),
            states,
            last_cron_ms: Some(now),
            first_seen_ms: None,
        };
        let h = health(&inputs, now, &cfg);
        let has = |list: &[String], date: &str, words: &str| list.iter().any(|t| t.contains(date) && t.contains(words));
        assert!(has(&h.notices, "2026-10-01", "held in D1 until"), "{h:?}");
        assert!(has(&h.notices, "2026-10-02", "trigger-cleanup"), "{h:?}");
        assert!(has(&h.notices, "2026-10-03", "restore asked for"), "{h:?}");
        assert!(
            has(&h.reasons, "2026-10-04", "3 rows of 2026-10-04 that did not match"),
            "{h:?}"
        );
        assert_eq!(
            h.reasons.iter().filter(|r| r.contains("2026-10-05")).count(),
            1,
            "{h:?}"
        );
        // A hold that has ended, a cleaned date with rows again, a date never started: overdue.
        for d in ["2026-10-06", "2026-10-07", "2026-10-08"] {
            assert!(has(&h.reasons, d, "past its due time"), "{d}: {h:?}");
        }
        assert_eq!((h.notices.len(), h.reasons.len(), h.ok), (3, 5, false));
        // With AUTO_CLEANUP on, an uploaded date a day past due is late like any other.
        let h = health(&inputs, now, &Config::default());
        assert!(has(&h.reasons, "2026-10-02", "past its due time"), "{h:?}");
    }
}
