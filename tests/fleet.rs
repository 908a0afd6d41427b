//! The fleet's rules on a real SQLite: due dates, running slots, the cron's plan, health.

mod common;

use common::*;
use d1_archiver::core::config::Config;
use d1_archiver::core::machine::Command;
use d1_archiver::core::policy::PokeReason;
use d1_archiver::engine::fleet;
use d1_archiver::engine::Ports;

/// Unix ms at noon, `days` after 2026-11-20.
fn at(days: i64) -> i64 {
    1_795_176_000_000 + 12 * 3_600_000 + days * DAY_MS
}

fn date(n: u32) -> String {
    format!("2026-11-{n:02}")
}

#[test]
fn dates_waiting_on_an_operator_do_not_starve_other_due_dates() {
    // MAX_RUNNING_DATES + 1 dates wait in `uploaded` (AUTO_CLEANUP=false); two more are due.
    let cfg = Config {
        auto_cleanup: false,
        max_running_dates: 2,
        ..small_config()
    };
    let w = World::new(cfg.clone());
    for d in 1..=5 {
        seed(w.sql(), &date(d), 200, u64::from(d), w.host.now.get() / 1000);
    }
    for d in 1..=3 {
        let ports = w.ports();
        block_on(ports.run_command(&date(d), Command::Trigger, &cfg)).unwrap();
        // Each date has its own Durable Object; here they share a store, so finish each in turn.
        while w.advance_to_wake() {
            block_on(ports.run_alarm(&date(d), &cfg)).unwrap();
        }
        assert_eq!(block_on(ports.record(&date(d), &cfg)).unwrap().phase.name(), "uploaded");
        *w.store.inner.saved.borrow_mut() = None;
    }
    let now = at(10);
    let plan = block_on(fleet::cron_plan(&w.db, &cfg, now, None, true)).unwrap();
    let started: Vec<&str> = plan
        .iter()
        .filter(|(_, r)| *r == PokeReason::Start)
        .map(|(d, _)| d.as_str())
        .collect();
    assert_eq!(started, [date(4), date(5)], "{plan:?}");
    // Health names the dates waiting for their cleanup as notices, and the two due dates
    // nothing has archived yet as reasons.
    let h = block_on(fleet::health(&w.db, &cfg, now)).unwrap();
    let named = |texts: &[String], days: std::ops::RangeInclusive<u32>, words: &str| {
        days.map(|d| texts.iter().any(|t| t.contains(&date(d)) && t.contains(words)))
            .collect::<Vec<bool>>()
    };
    assert_eq!(named(&h.notices, 1..=3, "trigger-cleanup"), [true; 3], "{h:?}");
    assert_eq!(named(&h.reasons, 4..=5, "past its due time"), [true; 2], "{h:?}");
    assert_eq!(h.reasons.len(), 2, "{h:?}");
}

#[test]
fn health_reports_failures_overdue_rows_a_silent_cron_and_test_hooks() {
    let cfg = Config::default();
    let w = World::new(cfg.clone());
    let now = at(10);
    let h = block_on(fleet::health(&w.db, &cfg, now)).unwrap();
    assert!(h.ok, "{h:?}");
    seed(w.sql(), "2026-11-01", 10, 1, now / 1000);
    let h = block_on(fleet::health(&w.db, &cfg, now)).unwrap();
    assert!(!h.ok && h.reasons[0].contains("2026-11-01"), "{h:?}");
    let hooks = Config {
        test_hooks: true,
        ..cfg.clone()
    };
    let h = block_on(fleet::health(&w.db, &hooks, now)).unwrap();
    assert!(h.reasons.iter().any(|r| r.contains("TEST_HOOKS")));
    // Two days later, with no cron heartbeat since the first look:
    let h = block_on(fleet::health(&w.db, &cfg, now + 3 * DAY_MS)).unwrap();
    assert!(h.reasons.iter().any(|r| r.contains("cron has never run")), "{h:?}");
    block_on(fleet::beat(&w.db, now + 3 * DAY_MS)).unwrap();
    let h = block_on(fleet::health(&w.db, &cfg, now + 3 * DAY_MS)).unwrap();
    assert!(!h.reasons.iter().any(|r| r.contains("daily cron")), "{h:?}");
    let _ = Ports {
        db: &w.db,
        r2: &w.r2,
        store: &w.store,
        host: &w.host,
    };
}

#[test]
fn listing_shows_known_and_pending_dates() {
    let cfg = small_config();
    let w = World::new(cfg.clone());
    seed(w.sql(), DATE, 100, 1, w.host.now.get() / 1000);
    seed(w.sql(), OTHER, 100, 2, w.host.now.get() / 1000);
    w.run();
    let listing = block_on(fleet::listing(&w.db, &cfg, at(10))).unwrap();
    assert_eq!(listing.dates.len(), 1);
    assert_eq!(listing.dates[0]["phase"], "cleaned");
    assert_eq!(listing.pending, [OTHER]);
}

/// Rows D1 cannot hand back unchanged (text that is not UTF-8) never compare equal with their
/// lines and stay. Once a generation held nothing but them and could delete none, the cron
/// leaves the date alone until its rows change: before, every daily cron wrote them again as
/// one more generation, without end.
#[test]
fn rows_that_can_never_be_cleaned_are_not_archived_again_every_day() {
    let cfg = small_config();
    let w = World::new(cfg.clone());
    let day = date(1);
    seed(w.sql(), &day, 200, 1, w.host.now.get() / 1000);
    for n in 0..2 {
        w.sql()
            .execute(
                &format!(
                    "INSERT INTO traffic_events (id, path, method, status, response_time, client_ip_hash, \
                     timestamp, event_date, is_error) VALUES ('stuck-{n}', '/u' || x'ff', 'GET', 200, 1.5, 'h', 7, '{day}', 0)"
                ),
                [],
            )
            .unwrap();
    }
    let ports = w.ports();
    let started = |now: i64| -> bool {
        let plan = block_on(fleet::cron_plan(&w.db, &cfg, now, None, true)).unwrap();
        plan.iter().any(|(d, r)| *d == day && *r == PokeReason::Start)
    };
    let archive = || {
        block_on(ports.run_command(&day, Command::Trigger, &cfg)).unwrap();
        while w.advance_to_wake() {
            block_on(ports.run_alarm(&day, &cfg)).unwrap();
        }
    };
    let now = at(10);
    let mut generations = Vec::new();
    for _ in 0..4 {
        if started(now) {
            archive();
        }
        let st = w.status();
        generations.push((st.generation, st.rows_pending));
    }
    assert_eq!(
        generations,
        [(1, Some(2)), (2, Some(2)), (2, Some(2)), (2, Some(2))],
        "the second generation held only the two rows and deleted neither: no third"
    );
    assert_eq!(count_date(w.sql(), &day), 2);
    // A change to the date's rows (here a late row) makes it due again: the late row goes, and
    // one more generation finds the two alone again.
    insert_row(&w, "late", &day);
    let mut more = Vec::new();
    while started(now) {
        archive();
        let st = w.status();
        more.push((st.generation, st.rows_pending, st.rows_deleted));
        assert!(more.len() < 5, "{more:?}");
    }
    assert_eq!(more, [(3, Some(2), 1), (4, Some(2), 0)]);
}

fn insert_row(w: &World, id: &str, day: &str) {
    w.sql()
        .execute(
            &format!(
                "INSERT INTO traffic_events (id, path, method, status, response_time, client_ip_hash, timestamp, \
                 event_date, is_error) VALUES ('{id}', '/late', 'GET', 200, 1.5, 'h', 7, '{day}', 0)"
            ),
            [],
        )
        .unwrap();
}
