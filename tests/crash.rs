//! Crash injection at every port call of a run, both ways: (a) call k fails; (b) call k succeeds
//! and everything after it is lost (the process dies). Then the run goes on from durable state
//! alone and must end exactly as an undisturbed run: every row archived once, D1 as it must be,
//! the metadata tables listing exactly the objects in R2, and no row ever lost on the way.
//!
//! The run is a whole cycle: archive (export, completion, verification, cleaning), restore,
//! release.

mod common;

use common::*;
use d1_archiver::core::machine::Command;
use d1_archiver::ports::faulty::Rule;
use serde_json::Value;

const ROWS: u64 = 3_000;

/// A fresh world with the date and a neighbour seeded, and both dates' rows as they were.
struct Scenario {
    w: World,
    expected: Vec<Value>,
    other: Vec<Value>,
}

fn scenario() -> Scenario {
    let w = World::new(small_config());
    let now_s = w.host.now.get() / 1000;
    seed(w.sql(), DATE, ROWS, 21, now_s);
    seed(w.sql(), OTHER, 40, 22, now_s);
    let (expected, other) = (rows_of(w.sql(), DATE), rows_of(w.sql(), OTHER));
    Scenario { w, expected, other }
}

fn check(s: &Scenario, label: &str) {
    let w = &s.w;
    let st = w.status();
    assert_eq!(
        (st.phase.as_str(), st.rows_pending),
        ("cleaned", Some(0)),
        "{label}: {st:?}"
    );
    let key = st.object_key.clone().unwrap();
    assert_eq!(
        w.archive_keys(),
        std::slice::from_ref(&key),
        "{label}: exactly one archive object"
    );
    assert_lines(lines_of(&w.objects().object(&key).unwrap()), &s.expected);
    let files: Vec<String> = st.generations[0].parquet.iter().map(|f| f.key.clone()).collect();
    assert!(!files.is_empty(), "{label}: Parquet files written");
    assert_eq!(
        w.parquet_keys(),
        files,
        "{label}: R2 holds exactly the listed Parquet files"
    );
    assert_lines(w.parquet_rows(), &s.expected);
    assert_eq!(count_date(w.sql(), DATE), 0, "{label}: rows left in D1");
    assert_eq!(rows_of(w.sql(), OTHER), s.other, "{label}: other date touched");
    let (status, path, cleaned, _) = w.metadata().unwrap();
    assert_eq!(
        (status.as_str(), path, cleaned),
        ("cleaned", Some(key.clone()), 1),
        "{label}"
    );
    assert_eq!(w.listed_objects(), [key], "{label}: archive_objects lists the object");
    assert_eq!(w.listed_parquet(), files, "{label}: ... and exactly its Parquet files");
    assert!(
        w.objects().open_uploads() <= 1,
        "{label}: more than one orphaned upload"
    );
}

/// The operator of the cycle: archive the date, restore it, release it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Archive,
    Restore,
    Release,
    Done,
}

const RESTORE: Command = Command::Restore {
    generation: None,
    hold_until_ms: None,
};

impl Stage {
    /// The phase that ends the stage, and the command that starts (or resumes) it.
    fn plan(self) -> (&'static str, Command) {
        match self {
            Stage::Archive => ("cleaned", Command::Trigger),
            Stage::Restore => ("restored", RESTORE),
            Stage::Release | Stage::Done => ("cleaned", Command::Release),
        }
    }

    /// Whether `phase` shows the stage's command went through (the operator may have crashed
    /// before hearing the answer).
    fn underway(self, phase: &str) -> bool {
        match self {
            Stage::Archive => [
                "exporting",
                "completing",
                "verifying",
                "uploaded",
                "cleaning",
                "cleaned",
            ]
            .contains(&phase),
            Stage::Restore => ["restoring", "restored"].contains(&phase),
            Stage::Release | Stage::Done => ["releasing", "cleaned"].contains(&phase),
        }
    }

    fn next(self) -> Stage {
        match self {
            Stage::Archive => Stage::Restore,
            Stage::Restore => Stage::Release,
            Stage::Release | Stage::Done => Stage::Done,
        }
    }
}

/// Plays the cycle from `stage` like the platform and an operator: an alarm that throws is
/// delivered again, a command that fails is sent again, a failed date is resumed. Stops at the
/// end, or when `stop` says so. No row may be lost on the way.
fn play(s: &Scenario, mut stage: Stage, stop: impl Fn(&World) -> bool) -> Stage {
    let w = &s.w;
    let mut asked = false;
    let mut rows = count_date(w.sql(), DATE);
    for _ in 0..100_000 {
        if stage == Stage::Done || stop(w) {
            return stage;
        }
        let rec = w.record();
        let (target, cmd) = stage.plan();
        let phase = rec.phase.name();
        if asked && phase == target && rec.garbage.is_empty() && !rec.metadata_stale {
            if stage == Stage::Archive {
                check(s, "archived");
            }
            if stage == Stage::Restore {
                assert_eq!(
                    rows_of(w.sql(), DATE),
                    s.expected,
                    "restored rows are the archived rows"
                );
            }
            (stage, asked) = (stage.next(), false);
            continue;
        }
        asked |= stage.underway(phase);
        if !asked || phase == "failed" {
            asked |= w.command(cmd).is_ok();
            continue;
        }
        let at = rec.wake_at_ms.unwrap_or(w.host.now.get());
        w.host.now.set(w.host.now.get().max(at) + 1);
        let _ = w.step();
        // Only a DELETE can lose a row: check whenever D1 holds fewer rows than before.
        let now = count_date(w.sql(), DATE);
        if now < rows && !w.faults.crashed() {
            let lost = lost(w, &s.expected);
            assert!(lost.is_empty(), "{} rows lost mid-run at {stage:?}", lost.len());
        }
        rows = now;
    }
    panic!("the cycle did not end: {stage:?} {:?}", w.status());
}

fn full_cycle(s: &Scenario) {
    play(s, Stage::Archive, |_| false);
    check(s, "released");
}

/// Counts the calls of an undisturbed run, and checks that it covers every kind of call.
fn reference_calls() -> u64 {
    let s = scenario();
    full_cycle(&s);
    let log = s.w.faults.log.borrow().clone();
    for op in [
        "d1.page",
        "d1.select",
        "d1.batch.delete",
        "d1.batch.insert",
        "d1.batch.metadata",
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
    let st = s.w.status();
    assert!(
        st.parts_uploaded >= 2 && st.pieces >= 5,
        "the run must span parts and pieces: {st:?}"
    );
    let calls = s.w.faults.calls();
    eprintln!(
        "reference run: {calls} port calls, {} pieces, {} parts",
        st.pieces, st.parts_uploaded
    );
    calls
}

#[test]
fn every_call_failing_once_still_archives_restores_and_releases_exactly() {
    let calls = reference_calls();
    for k in 1..=calls {
        let s = scenario();
        s.w.faults.add(Rule::Fail {
            service: None,
            from: k,
            count: 1,
        });
        full_cycle(&s);
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
        w.faults.add(Rule::CrashAfter(k));
        // Run until the crash: everything after call k fails and is lost.
        let stage = play(&s, Stage::Archive, |w| w.faults.crashed());
        let op = w.faults.log.borrow()[k as usize - 1];
        // Restart: only what the fakes hold durably (D1, R2, Durable Object storage) remains.
        // (The operator, outside the process, remembers what it asked for.)
        w.faults.clear();
        play(&s, stage, |_| false);
        check(&s, &format!("crash after call {k} ({op})"));
    }
}
