//! Table tests: one row per transition of the pure core. No I/O, no fakes.

use d1_archiver::core::config::Config;
use d1_archiver::core::gzip::StreamPos;
use d1_archiver::core::machine::*;
use d1_archiver::core::state::*;
use d1_archiver::ports::{FailureKind, PortError};

const NOW: i64 = 1_000_000;

fn cfg() -> Config {
    Config {
        max_attempts: 3,
        ..Config::default()
    }
}

fn export(cutoff: Option<i64>) -> Export {
    let mut ex = Export::new("p/event_date=2026-11-20/0001.jsonl.gz".into(), 5 << 20, 6, 0);
    ex.cutoff = cutoff;
    ex
}

fn archive(checkpoints: usize) -> Archive {
    Archive {
        summary: ArchiveSummary {
            generation: 1,
            key: "p/event_date=2026-11-20/0001.jsonl.gz".into(),
            cutoff: 77,
            rows: checkpoints as u64 * 10,
            bytes: 1000,
            raw_bytes: 5000,
            crc32: 1,
            parts: 1,
            pieces: 1,
            first_id: None,
            last_id: None,
            rows_deleted: 0,
            finished_at_ms: None,
        },
        checkpoints: (0..checkpoints)
            .map(|i| Checkpoint {
                upto: format!("id{i:03}"),
                rows: 10,
            })
            .collect(),
    }
}

fn rec(phase: Phase) -> Record {
    let mut r = Record::new("2026-11-20");
    r.generation = 1;
    r.phase = phase;
    r
}

fn port_err() -> StepError {
    StepError::Port(PortError::transient("d1.select", "boom"))
}

fn progress(finished: bool) -> ExportProgress {
    ExportProgress {
        created_upload: Some("u1".into()),
        cursor: "id9".into(),
        rows: 10,
        fp: 5,
        stream: StreamPos {
            crc: 9,
            raw_len: 100,
            out_len: 50,
        },
        new_parts: vec![],
        carry_len: 50,
        piece: None,
        checkpoints: vec![],
        rows_since_checkpoint: 10,
        finished,
        single_put: false,
        io: IoStats::default(),
    }
}

#[test]
fn next_action_per_phase() {
    let c = cfg();
    let table: Vec<(Phase, &str)> = vec![
        (Phase::Idle, "wait"),
        (Phase::Exporting(export(None)), "capture"),
        (Phase::Exporting(export(Some(5))), "export"),
        (Phase::Finalizing(export(Some(5))), "finalize"),
        (Phase::Uploaded(archive(3)), "clean"),
        (Phase::Uploaded(archive(0)), "final-check"),
        (
            Phase::Cleaning(Cleaning {
                archive: archive(3),
                next: 3,
                rows_deleted: 30,
            }),
            "final-check",
        ),
        (Phase::Cleaned(archive(1).summary), "wait"),
        (
            Phase::Failed(Failure {
                at: Box::new(Phase::Exporting(export(Some(5)))),
                error: "x".into(),
                attempts: 3,
            }),
            "wait",
        ),
    ];
    for (phase, want) in table {
        assert_eq!(next_action(&rec(phase.clone()), &c).name(), want, "{}", phase.name());
    }
    let manual = Config {
        auto_cleanup: false,
        ..cfg()
    };
    assert_eq!(next_action(&rec(Phase::Uploaded(archive(3))), &manual), Action::Wait);
}

#[test]
fn cleaning_plans_bounded_ranges_that_tile_the_id_space() {
    let c = Config {
        clean_step_rows: 25,
        ..cfg()
    };
    let Action::Clean(plan) = next_action(
        &rec(Phase::Cleaning(Cleaning {
            archive: archive(5),
            next: 1,
            rows_deleted: 10,
        })),
        &c,
    ) else {
        panic!()
    };
    assert_eq!(
        plan.ranges,
        vec![
            ("id000".into(), "id001".into(), 10),
            ("id001".into(), "id002".into(), 10)
        ]
    );
    let Action::Clean(first) = next_action(&rec(Phase::Uploaded(archive(5))), &c) else {
        panic!()
    };
    assert_eq!(first.ranges[0].0, "", "the first range starts before every id");
}

#[test]
fn outcomes_fold_into_the_next_phase() {
    let c = cfg();
    let io = IoStats::default();
    let table: Vec<(Phase, Outcome, &str)> = vec![
        (
            Phase::Exporting(export(None)),
            Outcome::Captured {
                cutoff: 5,
                any: true,
                io,
            },
            "exporting",
        ),
        (
            Phase::Exporting(export(Some(5))),
            Outcome::Exported(progress(false)),
            "exporting",
        ),
        (
            Phase::Exporting(export(Some(5))),
            Outcome::Exported(progress(true)),
            "finalizing",
        ),
        (
            Phase::Finalizing(export(Some(5))),
            Outcome::Finalized {
                first_id: None,
                last_id: None,
                io,
            },
            "uploaded",
        ),
        (
            Phase::Uploaded(archive(3)),
            Outcome::Deleted {
                ranges: 2,
                rows: 20,
                io,
            },
            "cleaning",
        ),
        (
            Phase::Cleaning(Cleaning {
                archive: archive(3),
                next: 2,
                rows_deleted: 20,
            }),
            Outcome::Deleted {
                ranges: 1,
                rows: 10,
                io,
            },
            "cleaning",
        ),
        (
            Phase::Cleaning(Cleaning {
                archive: archive(3),
                next: 3,
                rows_deleted: 30,
            }),
            Outcome::Checked { remaining: 0, io },
            "cleaned",
        ),
        (
            Phase::Cleaning(Cleaning {
                archive: archive(3),
                next: 3,
                rows_deleted: 30,
            }),
            Outcome::Checked { remaining: 2, io },
            "failed",
        ),
        (
            Phase::Uploaded(archive(0)),
            Outcome::Checked { remaining: 0, io },
            "cleaned",
        ),
        // A stale outcome (the phase moved on) changes nothing.
        (
            Phase::Idle,
            Outcome::Deleted {
                ranges: 1,
                rows: 10,
                io,
            },
            "idle",
        ),
    ];
    for (phase, outcome, want) in table {
        let from = phase.name();
        let next = handle_outcome(rec(phase), outcome.clone(), NOW, &c);
        assert_eq!(next.phase.name(), want, "{from} + {outcome:?}");
    }
}

#[test]
fn export_progress_accumulates() {
    let mut r = rec(Phase::Exporting(export(Some(5))));
    for _ in 0..3 {
        r = handle_outcome(r, Outcome::Exported(progress(false)), NOW, &cfg());
    }
    let Phase::Exporting(ex) = &r.phase else { panic!() };
    assert_eq!(
        (ex.rows, ex.fp, ex.carry_len, ex.upload_id.as_deref()),
        (30, 15, 50, Some("u1"))
    );
    assert_eq!(r.wake_at_ms, Some(NOW), "a running export wakes at once");
}

#[test]
fn cleaned_sets_history_and_finish_time() {
    let r = handle_outcome(
        rec(Phase::Cleaning(Cleaning {
            archive: archive(2),
            next: 2,
            rows_deleted: 20,
        })),
        Outcome::Checked {
            remaining: 0,
            io: IoStats::default(),
        },
        NOW,
        &cfg(),
    );
    assert_eq!(r.history.len(), 1);
    assert_eq!(r.history[0].rows_deleted, 20);
    assert_eq!(r.finished_at_ms, Some(NOW));
    assert_eq!(r.wake_at_ms, None);
}

#[test]
fn failures_back_off_then_stop_and_a_trigger_resumes_in_place() {
    let c = cfg();
    let start = rec(Phase::Exporting(export(Some(5))));
    let r1 = handle_outcome(start.clone(), Outcome::Failed(port_err()), NOW, &c);
    assert_eq!(
        (r1.phase.name(), r1.attempts, r1.wake_at_ms),
        ("exporting", 1, Some(NOW + 2_000))
    );
    let r2 = handle_outcome(r1, Outcome::Failed(port_err()), NOW, &c);
    assert_eq!((r2.attempts, r2.wake_at_ms), (2, Some(NOW + 4_000)));
    let r3 = handle_outcome(r2, Outcome::Failed(port_err()), NOW, &c);
    assert_eq!((r3.phase.name(), r3.wake_at_ms), ("failed", None));
    let Phase::Failed(f) = &r3.phase else { panic!() };
    assert_eq!((f.at.name(), f.attempts), ("exporting", 3));
    assert!(f.error.contains("boom"));
    let resumed = handle_command(r3, Command::Trigger, NOW, &c).unwrap();
    assert_eq!(resumed.reply, Reply::Resumed);
    assert_eq!(resumed.record.phase, start.phase, "resumes at the saved position");
    assert_eq!(resumed.record.attempts, 0);
    // A success clears the attempt count.
    let ok = handle_outcome(resumed.record, Outcome::Exported(progress(false)), NOW, &c);
    assert_eq!(ok.attempts, 0);
}

#[test]
fn a_vanished_upload_restarts_the_export_but_not_forever() {
    let c = cfg();
    let gone = || StepError::UploadGone {
        key: "k".into(),
        upload_id: "u".into(),
    };
    let mut r = rec(Phase::Exporting(export(Some(5))));
    for restart in 1..=3 {
        r = handle_outcome(r, Outcome::Failed(gone()), NOW, &c);
        let Phase::Exporting(ex) = &r.phase else {
            panic!("restart {restart}: {:?}", r.phase.name())
        };
        assert_eq!(
            (ex.restarts, ex.cutoff, ex.rows, ex.upload_id.clone()),
            (restart, None, 0, None)
        );
    }
    r = handle_outcome(r, Outcome::Failed(gone()), NOW, &c);
    assert_eq!(r.phase.name(), "failed", "a crash loop must stop");
    let no_such = StepError::Port(PortError {
        kind: FailureKind::NoSuchUpload,
        op: "r2.complete",
        message: "gone".into(),
    });
    assert_eq!(no_such.recovery(), Recovery::RestartExport);
}

#[test]
fn permanent_errors_stop_at_once() {
    let r = handle_outcome(
        rec(Phase::Uploaded(archive(2))),
        Outcome::Failed(StepError::ArchiveMissing { key: "k".into() }),
        NOW,
        &cfg(),
    );
    let Phase::Failed(f) = &r.phase else { panic!() };
    assert_eq!(f.at.name(), "uploaded");
    assert!(f.error.contains("nothing was deleted"));
}

#[test]
fn commands_per_phase() {
    let c = cfg();
    let cleaning = |deleted| {
        Phase::Cleaning(Cleaning {
            archive: archive(3),
            next: 1,
            rows_deleted: deleted,
        })
    };
    let mut exporting = export(Some(5));
    exporting.upload_id = Some("u1".into());
    // (phase, command, Ok(reply) or Err, effects)
    let table: Vec<(Phase, Command, Result<Reply, ()>, usize)> = vec![
        (Phase::Idle, Command::Trigger, Ok(Reply::Started), 0),
        (
            Phase::Exporting(exporting.clone()),
            Command::Trigger,
            Ok(Reply::AlreadyRunning),
            0,
        ),
        (
            Phase::Cleaned(archive(1).summary),
            Command::Trigger,
            Ok(Reply::Started),
            0,
        ),
        (Phase::Idle, Command::Cleanup, Err(()), 0),
        (Phase::Exporting(exporting.clone()), Command::Cleanup, Err(()), 0),
        (Phase::Uploaded(archive(3)), Command::Cleanup, Ok(Reply::Started), 0),
        (cleaning(10), Command::Cleanup, Ok(Reply::AlreadyRunning), 0),
        (
            Phase::Cleaned(archive(1).summary),
            Command::Cleanup,
            Ok(Reply::AlreadyCleaned),
            0,
        ),
        (Phase::Idle, Command::Reset, Ok(Reply::WasReset), 0),
        (
            Phase::Exporting(exporting.clone()),
            Command::Reset,
            Ok(Reply::WasReset),
            1,
        ),
        (Phase::Uploaded(archive(3)), Command::Reset, Ok(Reply::WasReset), 2),
        (cleaning(10), Command::Reset, Err(()), 0),
        (Phase::Cleaned(archive(1).summary), Command::Reset, Err(()), 0),
    ];
    for (phase, cmd, want, effects) in table {
        let from = phase.name();
        let got = handle_command(rec(phase), cmd, NOW, &c);
        match (&got, &want) {
            (Ok(d), Ok(reply)) => {
                assert_eq!(&d.reply, reply, "{from} {cmd:?}");
                assert_eq!(d.effects.len(), effects, "{from} {cmd:?}: {:?}", d.effects);
            }
            (Err(refusal), Err(())) => assert!(!refusal.reason.is_empty()),
            _ => panic!("{from} {cmd:?}: got {got:?}, want {want:?}"),
        }
    }
}

#[test]
fn generations_count_up_and_reset_reuses_an_unfinished_one() {
    let c = cfg();
    let first = handle_command(Record::new("2026-11-20"), Command::Trigger, NOW, &c)
        .unwrap()
        .record;
    assert_eq!(first.generation, 1);
    let reset = handle_command(first, Command::Reset, NOW, &c).unwrap().record;
    assert_eq!(reset.generation, 0);
    let again = handle_command(reset, Command::Trigger, NOW, &c).unwrap().record;
    assert_eq!(again.generation, 1);
    let mut done = rec(Phase::Cleaned(archive(1).summary));
    done.history.push(archive(1).summary);
    let second = handle_command(done, Command::Trigger, NOW, &c).unwrap().record;
    assert_eq!(second.generation, 2);
    let Phase::Exporting(ex) = &second.phase else { panic!() };
    assert!(ex.key.ends_with("event_date=2026-11-20/0002.jsonl.gz"), "{}", ex.key);
}

#[test]
fn the_persisted_form_round_trips_and_carries_its_version() {
    let mut r = rec(Phase::Failed(Failure {
        at: Box::new(Phase::Cleaning(Cleaning {
            archive: archive(2),
            next: 1,
            rows_deleted: 10,
        })),
        error: "e".into(),
        attempts: 2,
    }));
    r.history.push(archive(1).summary);
    let json = serde_json::to_string(&r).unwrap();
    assert!(json.contains("\"version\":1"));
    assert_eq!(serde_json::from_str::<Record>(&json).unwrap(), r);
}
