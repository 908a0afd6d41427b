//! Crash injection at every port call of a run, both ways: (a) call k fails; (b) call k succeeds
//! and everything after it is lost (the process dies). Then the run goes on from durable state
//! alone and must end exactly as an undisturbed run: every row archived once, D1 as it must be,
//! the metadata tables listing exactly the objects in R2, and no row ever lost on the way.
//!
//! The run is a whole cycle: archive (export, completion, verification, cleaning), restore,
//! release.

mod common;

use common::*;
use d1_archiver::core::config::Config;
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

/// A crash right after the export's single `put` of the whole object (before the step's save),
/// and the app deletes the date's rows before the alarm comes back: the step runs again, finds
/// no row, and ends the date as idle. Its Parquet key is cleared for exactly this case
/// (`parquet_io`: "an earlier run of this step may have written it before a crash, and nothing
/// would list it"), and so is the JSONL object's now: before a review it stayed in R2 for good,
/// unlisted, holding rows the app deleted, where `read_json('…/*/*.jsonl.gz')` still read them.
#[test]
fn a_crash_after_the_single_put_then_no_rows_leaves_no_object_behind() {
    let reference = World::seeded(small_config(), 50, 3);
    reference.run();
    let k = reference
        .faults
        .log
        .borrow()
        .iter()
        .position(|op| *op == "r2.put")
        .unwrap() as u64
        + 1;

    let w = World::seeded(small_config(), 50, 3);
    w.faults.add(Rule::CrashAfter(k));
    w.command(Command::Trigger).unwrap();
    while !w.faults.crashed() && w.advance_to_wake() {
        let _ = w.step();
    }
    assert_eq!(w.archive_keys().len(), 1, "the crashed step's put landed");
    w.faults.clear();
    // The app deletes the day's rows meanwhile.
    w.sql()
        .execute("DELETE FROM traffic_events WHERE event_date = ?1", [DATE])
        .unwrap();
    w.drive(|_, _| {});
    assert_eq!(w.status().phase, "idle");
    assert!(w.listed_objects().is_empty());
    assert_eq!(
        w.archive_keys(),
        Vec::<String>::new(),
        "no unlisted archive object is left in R2"
    );
}

/// One random change by the app to the rows of DATE.
fn mutate(w: &World, rng: &mut Rng, n: &mut u64) {
    let c = w.sql();
    match rng.below(5) {
        0 => {
            // insert a row with an id somewhere in the id space
            let id = format!("{:04}-w{}", rng.below(10000), n);
            *n += 1;
            let id: Option<String> = if rng.below(10) == 0 { None } else { Some(id) };
            c.execute("INSERT OR IGNORE INTO traffic_events (id, path, method, status, response_time, client_ip_hash, user_agent, country, timestamp, event_date, is_error, created_at) VALUES (?1, '/w', 'GET', 200, 2.5, 'h', 'ua', 'DE', 1795000000000, ?2, 0, 1)", rusqlite::params![id, DATE]).unwrap();
        }
        2 => {
            c.execute("DELETE FROM traffic_events WHERE rowid IN (SELECT rowid FROM traffic_events WHERE event_date = ?1 ORDER BY random() LIMIT 2)", [DATE]).unwrap();
        }
        3 => {
            let ids = ["NULL", "''", "x'00ff'", "'zz\\'", "char(233)"];
            let id = ids[rng.below(ids.len() as u64) as usize];
            let path = ["'/p'", "'/q'", "x'0102'", "'\"'"][rng.below(4) as usize];
            let _ = c.execute(&format!("INSERT OR IGNORE INTO traffic_events (id, path, method, status, response_time, client_ip_hash, user_agent, country, timestamp, event_date, is_error, created_at) VALUES ({id}, {path}, 'GET', 'teapot', 1e308, 'h', NULL, 'DE', 1795000000000.5, ?1, 0, NULL)"), [DATE]);
        }
        1 => {
            c.execute("UPDATE traffic_events SET status = status + 1 WHERE rowid IN (SELECT rowid FROM traffic_events WHERE event_date = ?1 ORDER BY random() LIMIT 3)", [DATE]).unwrap();
        }
        _ => {}
    }
}

/// Forty seeded runs of a whole archive with an app writing all along (inserts anywhere in the
/// id space, odd values: NULL, '' and BLOB ids, text in INTEGER columns, 1e308, REAL
/// timestamps; updates; deletes), resets at random, failing calls and one crash each, and
/// varied page, piece, step and batch sizes, deflate levels, Parquet on and off. After every
/// step that deleted rows, each row gone is in an archive generation as it was; at the end D1
/// holds none of the date and R2 exactly the listed objects and Parquet files, each Parquet
/// file's rows its JSONL's (a review's stress test, kept).
#[test]
fn a_random_writer_resets_faults_and_a_crash_lose_nothing() {
    for seed in 1..=40u64 {
        let cfg = Config {
            parquet: seed % 2 == 0,
            step_bytes: 65_536,
            piece_bytes: 65_536,
            page_bytes: 65_536,
            page_rows: 1 + (seed as u32 * 37) % 300,
            step_rows: 50 + seed * 13,
            level: (seed % 10) as u8,
            clean_batch_bytes: 4_096 + seed * 1000,
            ..small_config()
        };
        let w = World::seeded(cfg, 1500, seed);
        let mut rng = Rng((seed * 7919) | 1);
        let mut n = 0;
        let crash_at = 20 + rng.below(400);
        w.faults.add(Rule::CrashAfter(crash_at));
        for _ in 0..5 {
            w.faults.add(Rule::Fail {
                service: None,
                from: 1 + rng.below(2000),
                count: 1 + rng.below(3),
            });
        }
        let mut crashed = false;
        let mut steps = 0;
        loop {
            steps += 1;
            assert!(steps < 20000, "seed {seed}: no end {:?}", w.status());
            if w.faults.crashed() && !crashed {
                crashed = true;
                w.faults.clear();
                for _ in 0..5 {
                    w.faults.add(Rule::Fail {
                        service: None,
                        from: w.faults.calls() + 1 + rng.below(2000),
                        count: 1 + rng.below(3),
                    });
                }
            }
            if steps < 300 && rng.below(3) == 0 {
                mutate(&w, &mut rng, &mut n);
            }
            if steps < 300 && rng.below(25) == 0 {
                let _ = w.command(Command::Reset);
            }
            let st = w.status();
            let rec = w.record();
            if st.phase == "cleaned"
                && st.rows_pending == Some(0)
                && rec.garbage.is_empty()
                && !rec.metadata_stale
                && steps >= 300
            {
                break;
            }
            if ["idle", "cleaned", "failed"].contains(&st.phase.as_str())
                && rec.garbage.is_empty()
                && !rec.metadata_stale
            {
                let _ = w.command(Command::Trigger);
                continue;
            }
            if !w.advance_to_wake() {
                let _ = w.command(Command::Trigger);
                continue;
            }
            let before = count_date(w.sql(), DATE);
            let snap = rows_of(w.sql(), DATE);
            let _ = w.step();
            if count_date(w.sql(), DATE) < before && !w.faults.crashed() {
                let after = rows_of(w.sql(), DATE);
                let mut gone = Vec::new();
                let mut have: std::collections::HashMap<String, usize> = Default::default();
                for a in &after {
                    *have.entry(a.to_string()).or_default() += 1;
                }
                for b in snap {
                    match have.get_mut(&b.to_string()) {
                        Some(k) if *k > 0 => *k -= 1,
                        _ => gone.push(b),
                    }
                }
                let l = lost(&w, &gone);
                assert!(l.is_empty(), "seed {seed}: lost {l:?}");
            }
        }
        // invariants
        let mut listed = w.listed_objects();
        listed.sort();
        let mut keys = w.archive_keys();
        keys.sort();
        assert_eq!(listed, keys, "seed {seed}");
        let mut lp = w.listed_parquet();
        lp.sort();
        let mut pk = w.parquet_keys();
        pk.sort();
        assert_eq!(lp, pk, "seed {seed}");
        for g in w.record().generations {
            let jl = lines_of(&w.objects().object(&g.key).unwrap());
            let pq: Vec<serde_json::Value> = g
                .parquet
                .iter()
                .flat_map(|f| parquet_lines(&w.objects().object(&f.key).unwrap()))
                .collect();
            if !g.parquet.is_empty() {
                let (a, b) = (sorted(jl), sorted(pq));
                assert!(a == b, "seed {seed} gen {}: {} vs {}", g.number, a.len(), b.len());
            }
        }
        assert_eq!(count_date(w.sql(), DATE), 0);
    }
}
