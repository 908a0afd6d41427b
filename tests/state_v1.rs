//! Records saved by the previous release (state version 1, in tests/fixtures/v1, written by its
//! own code at each phase) are read and carried on: a date in flight during a deploy finishes.
//! So is a record of this version saved before a field was added to its stats.

mod common;

use common::*;
use d1_archiver::core::config::Config;
use d1_archiver::core::machine::{Command, Reply};
use d1_archiver::core::state::{CleanState, Phase, Record, STATE_VERSION};
use d1_archiver::engine::EngineError;

fn fixture(name: &str) -> (String, Vec<u8>) {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/v1/");
    let json = std::fs::read_to_string(format!("{dir}{name}.json")).unwrap();
    let carry = std::fs::read(format!("{dir}{name}.carry")).unwrap();
    (json, carry)
}

/// A world whose D1 holds the 6,000 rows the fixtures were made from, and whose Durable Object
/// holds the version-1 record `name`.
fn world_from(name: &str) -> World {
    let w = World::new(Config {
        auto_cleanup: false,
        ..small_config()
    });
    seed(w.sql(), DATE, 6_000, 5, w.host.now.get() / 1000);
    *w.store.inner.saved.borrow_mut() = Some(fixture(name));
    w
}

fn finish(w: &World) {
    w.command(Command::Trigger).unwrap();
    w.drive(|_, _| {});
    if w.status().phase == "uploaded" {
        w.command(Command::Cleanup).unwrap();
        w.drive(|_, _| {});
    }
}

#[test]
fn dates_with_nothing_deleted_yet_start_their_generation_over_and_finish() {
    for name in ["exporting", "finalizing", "uploaded", "failed_exporting"] {
        let w = world_from(name);
        let expected = rows_of(w.sql(), DATE);
        let rec = w.record();
        assert!(
            matches!(rec.phase, Phase::Working(_) | Phase::Idle),
            "{name}: {:?}",
            rec.phase.name()
        );
        if name == "exporting" {
            assert_eq!(rec.garbage.len(), 1, "the version-1 upload is aborted");
        }
        finish(&w);
        let st = w.status();
        assert_eq!(
            (st.phase.as_str(), st.rows_pending, st.generation),
            ("cleaned", Some(0), 1),
            "{name}"
        );
        assert_lines(
            lines_of(&w.objects().object(&st.object_key.unwrap()).unwrap()),
            &expected,
        );
        let saved = w.store.inner.saved.borrow().clone().unwrap().0;
        assert!(
            saved.contains(&format!("\"version\":{STATE_VERSION}")),
            "{name}: saved as version 2"
        );
    }
}

#[test]
fn a_date_cleaning_under_version_1_keeps_its_object_and_archives_the_rest_as_generation_2() {
    let w = world_from("cleaning");
    let rec = w.record();
    assert_eq!(rec.phase, Phase::Idle);
    let g = &rec.generations[0];
    assert!(g.legacy && g.cleaning == CleanState::Partial && g.pieces.is_empty());
    assert!(rec
        .last_error
        .unwrap()
        .contains("archived again as the next generation"));
    finish(&w);
    let st = w.status();
    assert_eq!(
        (st.phase.as_str(), st.generation, st.rows_pending),
        ("cleaned", 2, Some(0))
    );
    assert_eq!(count_date(w.sql(), DATE), 0);
}

#[test]
fn a_date_cleaned_under_version_1_stays_cleaned_and_refuses_a_restore_in_place() {
    let w = world_from("cleaned");
    let rec: Record = w.record();
    assert!(matches!(rec.phase, Phase::Cleaned { rows_pending: 0, .. }));
    assert!(rec.generations[0].legacy);
    match w.command(Command::Restore {
        generation: Some(1),
        hold_until_ms: None,
    }) {
        Err(EngineError::Refused(r)) => assert!(r.reason.contains("version 1"), "{}", r.reason),
        other => panic!("{other:?}"),
    }
    // New rows of the date still go to a next generation.
    assert_eq!(w.command(Command::Trigger).unwrap().reply, Reply::Started);
    assert_eq!(w.status().generation, 2);
}

/// A record saved before the stats carried D1's own time per phase (`export_sql_us` and the
/// others, same state version) loads and carries on: those fields start at 0.
#[test]
fn a_record_saved_without_the_sql_time_stats_loads_and_finishes() {
    let w = World::new(small_config());
    seed(w.sql(), DATE, 3_000, 5, w.host.now.get() / 1000);
    w.command(Command::Trigger).unwrap();
    w.drive_until("cleaning");
    let (json, carry) = w.store.inner.saved.borrow().clone().unwrap();
    let mut value: serde_json::Value = serde_json::from_str(&json).unwrap();
    let stats = value["stats"].as_object_mut().unwrap();
    for field in ["export_sql_us", "clean_sql_us", "restore_sql_us"] {
        assert!(stats.remove(field).is_some(), "{field} is saved");
    }
    *w.store.inner.saved.borrow_mut() = Some((value.to_string(), carry));
    assert_eq!(w.record().stats.export_sql_us, 0);
    w.drive(|_, _| {});
    let st = w.status();
    assert_eq!((st.phase.as_str(), st.rows_pending), ("cleaned", Some(0)), "{st:?}");
    assert!(st.stats.clean_sql_us > 0, "the rest of the cleaning counted");
    assert_eq!(count_date(w.sql(), DATE), 0);
}

/// A record saved mid-cleaning and mid-restore before passes counted wide lines twice (no
/// `wide_twice`, the walk's fields flat in the pass, as they still are) loads, keeps the
/// batches it had (batch ids must keep meaning the same lines), and finishes.
#[test]
fn passes_saved_before_wide_lines_counted_twice_keep_their_batches_and_finish() {
    use d1_archiver::core::state::{Walk, Work};
    let w = World::new(Config {
        clean_step_rows: 500,
        ..small_config()
    });
    seed(w.sql(), DATE, 3_000, 5, w.host.now.get() / 1000);
    let before = rows_of(w.sql(), DATE);
    let saved_as_before = |w: &World| {
        let (json, carry) = w.store.inner.saved.borrow().clone().unwrap();
        let mut value: serde_json::Value = serde_json::from_str(&json).unwrap();
        let phase = value["phase"].as_object_mut().unwrap();
        assert!(
            phase.contains_key("batch_bytes") && phase.contains_key("generations"),
            "{phase:?}"
        );
        assert_eq!(phase.remove("wide_twice"), Some(serde_json::Value::Bool(true)));
        *w.store.inner.saved.borrow_mut() = Some((value.to_string(), carry));
    };
    let walk = |w: &World| {
        let work = w.record().phase.working().cloned();
        if let Some(Work::Cleaning(p)) = work {
            p.walk
        } else if let Some(Work::Restoring(r)) = work {
            r.walk
        } else {
            panic!("no pass in flight: {work:?}")
        }
    };
    w.command(Command::Trigger).unwrap();
    w.drive_until("cleaning");
    w.step().unwrap();
    saved_as_before(&w);
    let Walk { piece, wide_twice, .. } = walk(&w);
    assert!(!wide_twice && piece > 0);
    w.drive(|_, _| {});
    assert_eq!((w.status().phase.as_str(), count_date(w.sql(), DATE)), ("cleaned", 0));
    w.command(Command::Restore {
        generation: None,
        hold_until_ms: None,
    })
    .unwrap();
    w.advance_to_wake();
    w.step().unwrap();
    saved_as_before(&w);
    assert!(!walk(&w).wide_twice);
    w.drive_until("restored");
    assert_eq!(rows_of(w.sql(), DATE), before);
}
