//! Crash injection at every I/O call of a run, both ways:
//! (a) call k fails; (b) call k succeeds and everything after it is lost (the process dies).
//! Then the run restarts from durable state alone and must finish with the same archive.

mod common;

use common::*;
use d1_archiver::core::machine::Command;

const DATE: &str = "2026-11-20";
const OTHER: &str = "2026-11-19";
const ROWS: u64 = 5_000;

type Rows = std::collections::BTreeMap<String, serde_json::Value>;

/// A fresh world with the date and a neighbour seeded, and both dates' rows as they were.
struct Scenario {
    w: World,
    expected: Rows,
    other: Rows,
}

fn scenario() -> Scenario {
    let w = World::new(small_config());
    let now_s = w.host.now.get() / 1000;
    seed(&w.db, DATE, ROWS, 21, now_s);
    seed(&w.db, OTHER, 40, 22, now_s);
    let (expected, other) = (expected_rows(&w.db, DATE), expected_rows(&w.db, OTHER));
    Scenario { w, expected, other }
}

/// Drives like the platform: a trigger or alarm that throws is simply delivered again.
fn drive_through_faults(w: &World) {
    for _ in 0..100 {
        if w.command(DATE, Command::Trigger).is_ok() {
            break;
        }
    }
    for _ in 0..100_000 {
        let rec = w.record(DATE);
        match rec.phase.name() {
            "cleaned" => return,
            // A stopped run is resumed by the next trigger (the cron's, or an operator's).
            "failed" => {
                let _ = w.command(DATE, Command::Trigger);
                continue;
            }
            _ => {}
        }
        let at = rec.wake_at_ms.unwrap_or(w.host.now.get());
        w.host.now.set(w.host.now.get().max(at) + 1);
        let _ = w.step(DATE);
    }
    panic!("the run did not finish: {:?}", w.status(DATE));
}

fn check(Scenario { w, expected, other }: &Scenario, label: &str) {
    let st = w.status(DATE);
    assert_eq!(st.phase, "cleaned", "{label}: {st:?}");
    let object =
        w.r2.object(&st.object_key.unwrap())
            .unwrap_or_else(|| panic!("{label}: no object"));
    assert_eq!(
        assert_archive_matches(&gunzip_single_member(&object), expected),
        ROWS as usize,
        "{label}"
    );
    assert_eq!(count_date(&w.db, DATE), 0, "{label}: rows left in D1");
    assert_eq!(&expected_rows(&w.db, OTHER), other, "{label}: other date touched");
    let cleaned: i64 =
        w.db.conn
            .query_row("SELECT d1_cleaned FROM archive_metadata WHERE date = ?1", [DATE], |r| {
                r.get(0)
            })
            .unwrap();
    assert_eq!(cleaned, 1, "{label}");
}

/// Counts the calls of an undisturbed run, and checks that it covers every kind of call.
fn reference_calls() -> u64 {
    let s = scenario();
    let w = &s.w;
    drive_through_faults(w);
    check(&s, "reference");
    let log = w.faults.log.borrow().clone();
    for op in [
        "d1.select",
        "d1.delete",
        "d1.metadata",
        "r2.create_upload",
        "r2.upload_part",
        "r2.complete",
        "r2.head",
        "r2.get",
        "r2.put",
        "do.load",
        "do.save",
    ] {
        assert!(log.contains(&op), "the reference run never calls {op}");
    }
    assert!(w.status(DATE).parts_uploaded >= 2, "the run must span several parts");
    let calls = w.faults.calls.get();
    assert!(calls > 40, "a run of {calls} calls is too short to mean much");
    eprintln!(
        "reference run: {calls} port calls, {} steps, {} parts",
        w.status(DATE).stats.steps,
        w.status(DATE).parts_uploaded
    );
    calls
}

#[test]
fn every_call_failing_once_still_archives_exactly() {
    let calls = reference_calls();
    for k in 1..=calls {
        let s = scenario();
        s.w.faults.mode.set(FaultMode::FailAt(k));
        drive_through_faults(&s.w);
        let op = s.w.faults.log.borrow()[k as usize - 1];
        check(&s, &format!("fail at call {k} ({op})"));
    }
}

#[test]
fn a_crash_after_every_call_restarts_from_durable_state() {
    let calls = reference_calls();
    for k in 1..=calls {
        let s = scenario();
        let w = &s.w;
        w.faults.mode.set(FaultMode::CrashAfter(k));
        // Run until the crash: everything after call k fails and is lost.
        for _ in 0..10_000 {
            if w.faults.crashed() {
                break;
            }
            let _ = w.command(DATE, Command::Trigger);
            let rec = w.record(DATE);
            if rec.phase.name() == "cleaned" {
                break;
            }
            w.host.now.set(w.host.now.get().max(rec.wake_at_ms.unwrap_or(0)) + 1);
            let _ = w.step(DATE);
        }
        let op = w.faults.log.borrow()[k as usize - 1];
        // Restart: only what the fakes hold durably (D1, R2, Durable Object storage) remains.
        w.faults.reset();
        drive_through_faults(w);
        check(&s, &format!("crash after call {k} ({op})"));
        assert!(
            w.r2.open_uploads() <= 1,
            "crash after call {k}: more than one orphaned upload"
        );
    }
}
