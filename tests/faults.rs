//! Fault scenarios on the real engine: outside interference, repeated failures, operator commands.

mod common;

use common::*;
use d1_archiver::core::config::Config;
use d1_archiver::core::machine::Command;
use d1_archiver::engine::EngineError;

const DATE: &str = "2026-11-20";

fn world(cfg: Config, rows: u64) -> World {
    let w = World::new(cfg);
    seed(&w.db, DATE, rows, 5, w.host.now.get() / 1000);
    w
}

fn metadata(w: &World) -> (String, Option<String>, i64) {
    w.db.conn
        .query_row(
            "SELECT status, error_message, d1_cleaned FROM archive_metadata WHERE date = ?1",
            [DATE],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap()
}

#[test]
fn an_upload_aborted_from_outside_restarts_the_export_cleanly() {
    let w = world(small_config(), 5_000);
    let expected = expected_rows(&w.db, DATE);
    w.command(DATE, Command::Trigger).unwrap();
    let mut aborted = false;
    w.drive(DATE, |w, _| {
        if !aborted && w.r2.open_uploads() == 1 && w.status(DATE).parts_uploaded >= 1 {
            w.r2.uploads.borrow_mut().clear();
            aborted = true;
        }
    });
    assert!(aborted, "the test never caught an open upload");
    let st = w.status(DATE);
    assert_eq!(st.phase, "cleaned");
    assert!(st.last_error.unwrap().contains("no longer exists"));
    let object = w.r2.object(&st.object_key.unwrap()).unwrap();
    assert_archive_matches(&gunzip_single_member(&object), &expected);
    assert_eq!(count_date(&w.db, DATE), 0);
}

#[test]
fn a_deleted_archive_stops_cleaning_before_any_delete() {
    let w = world(
        Config {
            auto_cleanup: false,
            ..small_config()
        },
        2_000,
    );
    w.run(DATE);
    let st = w.status(DATE);
    assert_eq!(
        st.phase, "uploaded",
        "with AUTO_CLEANUP off the run waits after the upload"
    );
    assert_eq!(metadata(&w).0, "uploaded");
    w.r2.objects.borrow_mut().remove(&st.object_key.clone().unwrap());
    w.command(DATE, Command::Cleanup).unwrap();
    w.drive(DATE, |_, _| {});
    let st = w.status(DATE);
    assert_eq!((st.phase, st.failed_in), ("failed", Some("cleaning")));
    assert_eq!(st.rows_deleted, 0);
    assert!(
        st.last_error
            .as_deref()
            .unwrap()
            .contains("missing; nothing was deleted"),
        "{:?}",
        st.last_error
    );
    assert_eq!(
        count_date(&w.db, DATE),
        2_000,
        "nothing may be deleted without the archive"
    );
    let (status, error, cleaned) = metadata(&w);
    assert_eq!((status.as_str(), cleaned), ("failed", 0));
    assert!(error.unwrap().contains("missing"));
    // The operator resets (allowed: no row was deleted) and archives again.
    w.command(DATE, Command::Reset).unwrap();
    w.run(DATE);
    assert_eq!(w.status(DATE).phase, "uploaded");
    w.command(DATE, Command::Cleanup).unwrap();
    w.drive(DATE, |_, _| {});
    assert_eq!(w.status(DATE).phase, "cleaned");
    assert_eq!(count_date(&w.db, DATE), 0);
}

#[test]
fn repeated_failures_end_in_failed_with_the_error_and_a_trigger_resumes() {
    let w = world(small_config(), 3_000);
    let expected = expected_rows(&w.db, DATE);
    w.command(DATE, Command::Trigger).unwrap();
    // Let the export make progress, then break D1 for exports for good.
    for _ in 0..3 {
        w.host.now.set(w.record(DATE).wake_at_ms.unwrap() + 1);
        w.step(DATE).unwrap();
    }
    let before = w.status(DATE).rows_exported;
    assert!(before > 0);
    w.db.conn
        .execute_batch("ALTER TABLE traffic_events RENAME TO traffic_events_away")
        .unwrap();
    let mut delays = Vec::new();
    w.drive(DATE, |w, _| {
        let r = w.record(DATE);
        delays.push(r.wake_at_ms.unwrap() - r.updated_at_ms.unwrap());
    });
    let st = w.status(DATE);
    assert_eq!((st.phase, st.failed_in, st.attempts), ("failed", Some("exporting"), 4));
    assert_eq!(st.rows_exported, before, "the position is kept");
    assert_eq!(delays, [0, 2_000, 4_000, 8_000], "backoff doubles from BACKOFF_BASE_MS");
    let (status, error, _) = metadata(&w);
    assert_eq!(status, "failed");
    assert!(error.unwrap().contains("no such table"));

    w.db.conn
        .execute_batch("ALTER TABLE traffic_events_away RENAME TO traffic_events")
        .unwrap();
    let resumed = w.command(DATE, Command::Trigger).unwrap();
    assert_eq!(resumed.reply, d1_archiver::core::machine::Reply::Resumed);
    assert_eq!(resumed.status.rows_exported, before);
    w.drive(DATE, |_, _| {});
    let st = w.status(DATE);
    assert_eq!(st.phase, "cleaned");
    assert_archive_matches(
        &gunzip_single_member(&w.r2.object(&st.object_key.unwrap()).unwrap()),
        &expected,
    );
}

#[test]
fn a_reset_during_export_leaves_no_upload_behind() {
    let w = world(small_config(), 5_000);
    w.command(DATE, Command::Trigger).unwrap();
    while w.r2.open_uploads() == 0 {
        w.host.now.set(w.record(DATE).wake_at_ms.unwrap() + 1);
        w.step(DATE).unwrap();
    }
    w.command(DATE, Command::Reset).unwrap();
    assert_eq!(w.r2.open_uploads(), 0);
    assert_eq!(w.status(DATE).phase, "idle");
    assert_eq!(w.record(DATE).wake_at_ms, None);
    assert_eq!(count_date(&w.db, DATE), 5_000);
    // And it can run again from scratch.
    w.run(DATE);
    assert_eq!(w.status(DATE).phase, "cleaned");
}

#[test]
fn a_reset_that_would_lose_data_is_refused() {
    let w = world(small_config(), 1_000);
    w.run(DATE);
    match w.command(DATE, Command::Reset) {
        Err(EngineError::Refused(r)) => assert!(
            r.reason.contains("only copy") || r.reason.contains("only in"),
            "{}",
            r.reason
        ),
        other => panic!("{other:?}"),
    }
    assert_eq!(w.status(DATE).phase, "cleaned");
}

#[test]
fn a_range_that_changed_after_the_export_is_not_deleted() {
    let w = world(
        Config {
            auto_cleanup: false,
            ..small_config()
        },
        2_000,
    );
    w.run(DATE);
    // A row that claims an old created_at appears inside an exported id range.
    let first_id: String =
        w.db.conn
            .query_row(
                "SELECT min(id) FROM traffic_events WHERE event_date = ?1",
                [DATE],
                |r| r.get(0),
            )
            .unwrap();
    w.db.conn
        .execute(
            "INSERT INTO traffic_events (id, path, method, client_ip_hash, timestamp, event_date, created_at) VALUES (?1, '/sneaky', 'GET', 'h', 1, ?2, 1)",
            rusqlite::params![format!("{first_id}0"), DATE],
        )
        .unwrap();
    w.command(DATE, Command::Cleanup).unwrap();
    w.drive(DATE, |_, _| {});
    let st = w.status(DATE);
    assert_eq!((st.phase, st.failed_in), ("failed", Some("cleaning")));
    assert!(st.last_error.unwrap().contains("refused to delete"));
    assert_eq!(
        count_date(&w.db, DATE),
        2_001,
        "the changed range and everything after it stay"
    );
}

#[test]
fn triggers_are_idempotent() {
    let w = world(small_config(), 1_000);
    for _ in 0..50 {
        w.command(DATE, Command::Trigger).unwrap();
    }
    assert_eq!(w.status(DATE).generation, 1);
    w.drive(DATE, |w, step| {
        if step % 2 == 0 {
            w.command(DATE, Command::Trigger).unwrap();
        }
    });
    let st = w.status(DATE);
    assert_eq!((st.phase, st.generation), ("cleaned", 1));
    assert_eq!(
        w.r2.objects
            .borrow()
            .keys()
            .filter(|k| k.ends_with(".jsonl.gz"))
            .count(),
        1
    );
}
