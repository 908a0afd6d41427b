//! Table tests of the pure core: one row per decision. No I/O, no fakes: inputs in, effects and
//! records out.

use d1_archiver::core::config::Config;
use d1_archiver::core::error::{PortError, StepError};
use d1_archiver::core::io::{Answer, Io};
use d1_archiver::core::machine::*;
use d1_archiver::core::sql::{Cursor, Meta, LINE_SEP, WIRE_SEP};
use d1_archiver::core::state::*;

const NOW: i64 = 1_000_000;
const KEY: &str = "p/event_date=2026-11-20/0001.jsonl.gz";

fn cfg() -> Config {
    Config {
        max_attempts: 3,
        ..Config::default()
    }
}

fn limits() -> Limits {
    Limits {
        page_rows: 2_000,
        page_bytes: 1 << 20,
        step_rows: 10_000,
        step_bytes: 64 << 20,
        piece_raw: 4 << 20,
        piece_out: 1 << 20,
        capped: false,
    }
}

#[test]
fn page_limits() {
    let l = limits();
    // (bytes per row known, previous limit, rows left in the step) -> rows to ask for
    for (row_bytes, previous, left, want) in [
        (0, None, 10_000, 1),        // unknown size: a one-row probe
        (300, None, 10_000, 2_000),  // a later step's first page: sized from the estimate
        (100_000, None, 10_000, 10), // 100 KB rows: ~PAGE_BYTES, from the first page of a step
        (300, Some(1), 10_000, 4),   // growing at most fourfold
        (300, Some(400), 10_000, 1_600),
        (300, Some(2_000), 10_000, 2_000), // never past PAGE_ROWS
        (300, Some(2_000), 700, 700),      // never past the step's budget
        (4_000_000, Some(8), 10_000, 1),   // at least one row
    ] {
        assert_eq!(
            l.page_limit(row_bytes, previous, left),
            want,
            "{row_bytes} {previous:?} {left}"
        );
    }
}

/// A page on the wire of `n` id rows of about `row_bytes` each, ids after `from`.
fn page(from: usize, n: usize, row_bytes: usize) -> String {
    (from..from + n)
        .map(|i| {
            // Hex of a scrambled counter: about 2:1 for deflate, like real rows.
            let mut x = (i as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
            let pad: String = (0..row_bytes.saturating_sub(60) / 16)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    format!("{x:016x}")
                })
                .collect();
            let (id, path, ts) = (format!("\"{i:08}\""), format!("\"{pad}\""), i.to_string());
            // Every column but the REAL one and `event_date` (the date the page was asked for).
            let values = [&id, &path, "\"GET\"", "200", "\"h\"", "null", "null", &ts, "0", "1"];
            format!("{}{WIRE_SEP}1.5", values.map(|v| format!("{LINE_SEP}{v}")).concat())
        })
        .collect::<Vec<_>>()
        .join(&WIRE_SEP.to_string())
}

fn export(upload: Upload, cursor: Cursor, row_bytes: u64) -> Export {
    let mut ex = Export::new(1, KEY.into(), 5 << 20, 6, 0);
    ex.upload = upload;
    ex.cursor = cursor;
    ex.row_bytes = row_bytes;
    ex
}

/// What a step asks for and what it ends with, given the pages D1 holds (ids from 0).
struct Played {
    asked: Vec<u32>,
    calls: Vec<&'static str>,
    out: Exported,
}

fn play(ex: &Export, limits: Limits, rows_in_d1: usize, row_bytes: usize) -> Played {
    let mut job = ExportJob::new("2026-11-20", ex, Vec::new(), limits, false).unwrap();
    let (mut asked, mut calls, mut served) = (Vec::new(), Vec::new(), 0usize);
    let mut pending = None;
    loop {
        let answer = match job.poll().unwrap() {
            Poll::Done => break,
            Poll::Prefetch(stmt) => {
                pending = Some(stmt);
                continue;
            }
            Poll::AwaitPrefetch => {
                let stmt = pending.take().unwrap();
                serve(&stmt, &mut asked, &mut served, rows_in_d1, row_bytes)
            }
            Poll::Io(Io::Page(stmt)) => serve(&stmt, &mut asked, &mut served, rows_in_d1, row_bytes),
            Poll::Io(Io::CreateUpload { .. }) => {
                calls.push("create");
                Answer::UploadId("u1".into())
            }
            Poll::Io(Io::UploadPart { number, .. }) => {
                calls.push("part");
                Answer::Etag(format!("e{number}"))
            }
            Poll::Io(Io::Put { .. }) => {
                calls.push("put");
                Answer::Done
            }
            Poll::Io(other) => panic!("unexpected {other:?}"),
        };
        job.handle(Ok(answer)).unwrap();
    }
    Played {
        asked,
        calls,
        out: job.finish(),
    }
}

fn serve(
    stmt: &d1_archiver::core::sql::Statement,
    asked: &mut Vec<u32>,
    served: &mut usize,
    total: usize,
    row_bytes: usize,
) -> Answer {
    use d1_archiver::core::sql::Param;
    let limit = match stmt.params.last() {
        Some(Param::Int(n)) => *n as u32,
        _ => panic!(),
    };
    asked.push(limit);
    // The NULL-id and numeric-id segments are empty in these tables.
    if stmt.sql.contains("id IS NULL") || stmt.sql.contains("id < ''") {
        return Answer::Page(String::new(), Meta::default());
    }
    // Keyset: the rows after the cursor's id (`00000041` → row 42 on).
    if let Some(Param::Text(after)) = stmt.params.get(1) {
        *served = after.parse::<usize>().unwrap() + 1;
    }
    let n = (limit as usize).min(total - *served);
    let wire = page(*served, n, row_bytes);
    *served += n;
    Answer::Page(wire, Meta::default())
}

#[test]
fn an_export_step_sizes_pages_stops_at_its_budget_and_keeps_a_carry() {
    // First step of a run: probe, grow, stop at STEP_ROWS; nothing big enough for a part.
    let p = play(&export(Upload::NotStarted, Cursor::Start, 0), limits(), 50_000, 300);
    assert_eq!(
        p.asked[..7],
        [1, 1, 1, 4, 16, 64, 256],
        "NULL and numeric segment probes, then ids growing 4x"
    );
    assert_eq!(p.out.rows, 10_000);
    assert!(!p.out.finished && p.calls.is_empty() && !p.out.carry.is_empty());
    let in_pieces: u64 = p.out.pieces.iter().map(|pc| pc.rows).sum();
    assert_eq!(
        in_pieces, p.out.rows,
        "a step ends its last piece: every row is in a piece"
    );
    assert!(matches!(p.out.cursor, Cursor::After { .. }));
    // A later step starts from the saved estimate.
    let ex = export(Upload::NotStarted, p.out.cursor.clone(), p.out.row_bytes);
    let p2 = play(&ex, limits(), 50_000, 300);
    assert!(p2.asked[0] > 1_000, "{:?}", p2.asked);
}

#[test]
fn the_single_put_choice() {
    // The whole day is smaller than a part: one put, no multipart upload.
    let p = play(&export(Upload::NotStarted, Cursor::Start, 0), limits(), 3_000, 300);
    assert!(p.out.finished);
    assert_eq!(p.calls, ["put"]);
    assert_eq!(p.out.upload, StepUpload::SinglePut);
    // Bigger than a part: a multipart upload with full parts, then the last part.
    let big = Limits {
        step_rows: 200_000,
        step_bytes: 1 << 30,
        ..limits()
    };
    let p = play(&export(Upload::NotStarted, Cursor::Start, 0), big, 60_000, 2_000);
    assert!(p.out.finished);
    assert_eq!(p.calls.first(), Some(&"create"));
    assert!(p.calls.iter().filter(|c| **c == "part").count() >= 2 && !p.calls.contains(&"put"));
    // Pieces end at PIECE_BYTES raw or ~1 MiB compressed, whichever comes first.
    assert!(p
        .out
        .pieces
        .iter()
        .all(|pc| pc.raw_len <= (4 << 20) + 65_536 && pc.len <= (1 << 20) + 65_536));
    assert!(p.out.pieces.len() >= 2);
}

fn rec(phase: Phase) -> Record {
    let mut r = Record::new("2026-11-20");
    r.phase = phase;
    r
}

fn generation(n: u32) -> Generation {
    Generation {
        number: n,
        key: format!("p/event_date=2026-11-20/{n:04}.jsonl.gz"),
        index_key: format!("p/event_date=2026-11-20/{n:04}.index.json"),
        rows: 10,
        bytes: 100,
        raw_bytes: 1000,
        crc32: 1,
        parts: 1,
        pieces: Vec::new(),
        rows_deleted: 0,
        cleaning: CleanState::NotCleaned,
        created_at_ms: None,
        verified_at_ms: None,
        cleaned_at_ms: None,
        legacy: false,
        parquet: Vec::new(),
        real_ts_bounded: true,
    }
}

fn pass(purpose: Purpose) -> Pass {
    Pass {
        purpose,
        walk: Walk::start(vec![1], 1, 1000),
        rows: 0,
        restored_by: None,
        generation_marks: false,
    }
}

fn restore() -> Restore {
    Restore {
        walk: Walk::start(vec![1], 1, 1000),
        hold_until_ms: NOW + 10,
        counts: RestoreCounts::default(),
        generation_marks: true,
    }
}

/// Every phase a date can be in, by name.
fn phases() -> Vec<(&'static str, Record)> {
    let with_gen = |phase| {
        let mut r = rec(phase);
        r.generations.push(generation(1));
        r
    };
    let exporting = Work::Exporting(export(
        Upload::Multipart {
            upload_id: "u".into(),
            parts: vec![],
        },
        Cursor::Start,
        0,
    ));
    vec![
        ("idle", rec(Phase::Idle)),
        ("exporting", rec(Phase::Working(exporting.clone()))),
        ("uploaded", with_gen(Phase::Uploaded { generation: 1 })),
        (
            "cleaning",
            with_gen(Phase::Working(Work::Cleaning(pass(Purpose::Clean)))),
        ),
        (
            "cleaned",
            with_gen(Phase::Cleaned {
                rows_pending: 0,
                released: None,
            }),
        ),
        ("restoring", with_gen(Phase::Working(Work::Restoring(restore())))),
        (
            "restored",
            with_gen(Phase::Restored(Hold {
                generations: vec![1],
                until_ms: NOW + 10,
                counts: RestoreCounts::default(),
                restore_id: Some(1),
                generation_marks: true,
            })),
        ),
        (
            "releasing",
            with_gen(Phase::Working(Work::Cleaning(pass(Purpose::Release)))),
        ),
        (
            "failed",
            rec(Phase::Failed(Failure {
                work: exporting,
                error: "boom".into(),
            })),
        ),
    ]
}

#[test]
fn every_command_in_every_phase() {
    let restore_cmd = Command::Restore {
        generation: None,
        hold_until_ms: None,
    };
    // phase: trigger, cleanup, reset, restore, release (Ok(reply) or "refused")
    let table: &[(&str, [&str; 5])] = &[
        ("idle", ["started", "refused", "nothing_to_reset", "refused", "refused"]),
        (
            "exporting",
            ["already_running", "refused", "was_reset", "refused", "refused"],
        ),
        (
            "uploaded",
            ["awaiting_cleanup", "started", "was_reset", "refused", "refused"],
        ),
        (
            "cleaning",
            [
                "already_running",
                "already_running",
                "cleaning_stopped",
                "refused",
                "refused",
            ],
        ),
        (
            "cleaned",
            [
                "started",
                "already_cleaned",
                "nothing_to_reset",
                "restore_started",
                "refused",
            ],
        ),
        (
            "restoring",
            ["refused", "refused", "refused", "already_running", "release_started"],
        ),
        (
            "restored",
            ["refused", "refused", "refused", "already_restored", "release_started"],
        ),
        (
            "releasing",
            ["already_running", "refused", "refused", "refused", "already_running"],
        ),
        ("failed", ["resumed", "refused", "was_reset", "refused", "refused"]),
    ];
    let cfg = Config {
        auto_cleanup: false,
        ..cfg()
    };
    for (name, record) in phases() {
        let (_, want) = table.iter().find(|(n, _)| *n == name).unwrap();
        let cmds = [
            Command::Trigger,
            Command::Cleanup,
            Command::Reset,
            restore_cmd,
            Command::Release,
        ];
        for (cmd, want) in cmds.iter().zip(want) {
            let got = match handle_command(record.clone(), *cmd, NOW, &cfg) {
                Ok(d) => d.reply.name(),
                Err(_) => "refused",
            };
            assert_eq!(got, *want, "{cmd:?} in {name}");
        }
        // The cron's re-arm changes nothing in any phase, and keeps the alarm the record wants.
        let d = handle_command(record.clone(), Command::Rearm, NOW, &cfg).unwrap();
        assert_eq!((d.reply.name(), d.save), ("already_running", false), "rearm in {name}");
        assert_eq!(d.transition.record.phase, record.phase, "rearm in {name}");
        if record.wake_at_ms.is_some() {
            assert_eq!(d.transition.record.wake_at_ms, record.wake_at_ms, "rearm in {name}");
        }
    }
}

#[test]
fn commands_that_change_nothing_save_nothing_and_resets_keep_cleaned_archives() {
    for (name, record) in phases() {
        let Ok(d) = handle_command(record.clone(), Command::Reset, NOW, &cfg()) else {
            continue;
        };
        let deleted: Vec<String> = d
            .transition
            .record
            .garbage
            .iter()
            .filter_map(|g| match g {
                Garbage::Delete { key } | Garbage::Recheck { key } => Some(key.clone()),
                Garbage::Abort { .. } => None,
            })
            .collect();
        match name {
            // Before the move to cleaning: the unfinished or uncleaned object goes.
            "exporting" | "uploaded" | "failed" => assert!(!deleted.is_empty(), "{name}"),
            // From the move to cleaning on: never.
            _ => assert!(deleted.is_empty(), "{name} deletes {deleted:?}"),
        }
        if matches!(d.reply, Reply::NothingToReset) {
            assert!(
                !d.save && d.transition.record == record,
                "{name}: an unchanged record is not touched"
            );
        }
    }
}

fn outcome_failed(phase: Phase, err: StepError, attempts: u32) -> Transition {
    let mut r = rec(phase);
    r.attempts = attempts;
    let report = StepReport {
        started_ms: NOW,
        now_ms: NOW,
        ..StepReport::default()
    };
    let mut t = handle_outcome(r, Outcome::Failed(err, None), report, &cfg());
    // As the record stands once its metadata is written.
    t.record = handle_metadata_written(t.record, NOW, &cfg());
    t
}

#[test]
fn what_each_failure_does() {
    let exporting = || {
        Phase::Working(Work::Exporting(export(
            Upload::Multipart {
                upload_id: "u9".into(),
                parts: vec![],
            },
            Cursor::Start,
            0,
        )))
    };
    let port = || StepError::Port(PortError::transient("d1", "boom"));
    // A transient failure: retried with backoff.
    let t = outcome_failed(exporting(), port(), 0);
    assert_eq!((t.record.attempts, t.record.wake_at_ms), (1, Some(NOW + 2_000)));
    assert!(t.log.error.is_some());
    // ... and failed after MAX_ATTEMPTS in a row, keeping the work to resume.
    let t = outcome_failed(exporting(), port(), 2);
    assert!(matches!(
        t.record.phase,
        Phase::Failed(Failure {
            work: Work::Exporting(_),
            ..
        })
    ));
    assert_eq!(t.record.wake_at_ms, None);
    // ... saying so, and the way out, not that it will be retried (found by a review).
    let error = t.record.last_error.clone().unwrap_or_default();
    assert!(
        error.contains("boom; gave up after 3 attempts in a row")
            && error.contains("POST /admin/trigger-archive")
            && !error.contains("will be retried"),
        "{error}"
    );
    // A vanished upload: the export starts over, the old upload is aborted after the save.
    let gone = StepError::UploadGone {
        key: KEY.into(),
        upload_id: "u9".into(),
    };
    let t = outcome_failed(exporting(), gone, 0);
    let Phase::Working(Work::Exporting(ex)) = &t.record.phase else {
        panic!("{:?}", t.record.phase)
    };
    assert_eq!((ex.restarts, &ex.upload), (1, &Upload::NotStarted));
    assert_eq!(t.carry, Carry::Write(Vec::new()));
    assert_eq!(
        t.record.garbage,
        [Garbage::Abort {
            key: KEY.into(),
            upload_id: "u9".into()
        }]
    );
    // A damaged archive while cleaning: stopped at once, nothing retried.
    let corrupt = StepError::PieceCorrupt {
        key: KEY.into(),
        piece: 3,
        detail: "crc".into(),
        advice: "reset",
    };
    let t = outcome_failed(Phase::Working(Work::Cleaning(pass(Purpose::Clean))), corrupt, 0);
    assert!(matches!(
        t.record.phase,
        Phase::Failed(Failure {
            work: Work::Cleaning(_),
            ..
        })
    ));
}

#[test]
fn when_the_next_alarm_is_due() {
    let c = cfg();
    let auto = Config {
        auto_cleanup: true,
        ..cfg()
    };
    for (name, record) in phases() {
        let want = match name {
            "exporting" | "cleaning" | "restoring" | "releasing" => Some(NOW),
            "restored" => Some(NOW + 10),
            _ => None,
        };
        let manual = Config {
            auto_cleanup: false,
            ..c.clone()
        };
        assert_eq!(next_wake(&record, NOW, &manual), want, "{name}");
    }
    assert_eq!(
        next_wake(&rec(Phase::Uploaded { generation: 1 }), NOW, &auto),
        Some(NOW)
    );
    let mut stale = rec(Phase::Idle);
    stale.metadata_stale = true;
    assert_eq!(
        next_wake(&stale, NOW, &c),
        Some(NOW + 2_000),
        "stale metadata is written again"
    );
}

#[test]
fn alarms_of_resting_dates_do_nothing_and_uploaded_moves_to_cleaning_without_io() {
    let c = cfg();
    assert!(matches!(
        handle_alarm(&rec(Phase::Idle), Vec::new(), NOW, &c, false),
        Alarm::Sleep
    ));
    let mut r = rec(Phase::Uploaded { generation: 1 });
    r.generations.push(generation(1));
    let Alarm::Advance(t) = handle_alarm(&r, Vec::new(), NOW, &c, false) else {
        panic!("uploaded with AUTO_CLEANUP moves to cleaning");
    };
    assert_eq!(t.record.phase.name(), "cleaning");
    assert_eq!(t.record.generations[0].cleaning, CleanState::Cleaning);
}
