//! Simulated full runs on the real engine and core, against SQLite and the R2 fake.

mod common;

use common::*;
use d1_archiver::core::config::Config;
use d1_archiver::core::date::index_key;
use d1_archiver::core::machine::Command;
use serde_json::Value;

const DATE: &str = "2026-11-20";
const OTHER: &str = "2026-11-21";

fn now_s(w: &World) -> i64 {
    w.host.now.get() / 1000
}

/// Seeds DATE and OTHER, runs DATE to Cleaned, and checks the archive, D1 and the metadata.
fn full_run(cfg: Config, rows: u64) -> (World, Vec<u8>) {
    let w = World::new(cfg);
    seed(&w.db, DATE, rows, 7, now_s(&w));
    seed(&w.db, OTHER, 50, 8, now_s(&w));
    let expected = expected_rows(&w.db, DATE);
    let other_before = expected_rows(&w.db, OTHER);
    w.run(DATE);

    let st = w.status(DATE);
    assert_eq!(st.phase, "cleaned", "{st:?}");
    let key = st.object_key.clone().unwrap();
    assert_eq!(key, "traffic_events/event_date=2026-11-20/0001.jsonl.gz");
    let object = w.r2.object(&key).expect("archive object");
    assert_eq!(
        assert_archive_matches(&gunzip_single_member(&object), &expected),
        rows as usize
    );
    assert_eq!(count_date(&w.db, DATE), 0, "D1 still holds rows of the date");
    assert_eq!(expected_rows(&w.db, OTHER), other_before, "the other date was touched");
    assert_eq!(w.r2.open_uploads(), 0, "an upload was left open");

    let (cleaned, count, size, status): (i64, i64, i64, String) =
        w.db.conn
            .query_row(
                "SELECT d1_cleaned, record_count, file_size_bytes, status FROM archive_metadata WHERE date = ?1",
                [DATE],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
            .unwrap();
    assert_eq!(
        (cleaned, count as u64, size as usize, status.as_str()),
        (1, rows, object.len(), "cleaned")
    );
    (w, object)
}

#[test]
fn a_day_of_zero_rows_gives_an_empty_archive() {
    let (_, object) = full_run(small_config(), 0);
    assert_eq!(gunzip_single_member(&object), "");
}

#[test]
fn a_day_of_one_row() {
    full_run(small_config(), 1);
}

#[test]
fn a_day_of_many_parts_and_steps() {
    let (w, object) = full_run(small_config(), 6_000);
    let st = w.status(DATE);
    assert!(
        st.parts_uploaded >= 3,
        "expected several parts, got {}",
        st.parts_uploaded
    );
    assert!(st.stats.steps >= 10, "expected many steps, got {}", st.stats.steps);
    assert_eq!(st.bytes_uploaded, object.len() as u64);
}

/// Every piece of the seek index inflates on its own to exactly its rows.
#[test]
fn seek_index_pieces_inflate_alone() {
    let (w, object) = full_run(small_config(), 3_000);
    let key = w.status(DATE).object_key.unwrap();
    let index: Value = serde_json::from_slice(&w.r2.object(&index_key(&key)).expect("index object")).unwrap();
    let pieces = index["pieces"].as_array().unwrap();
    assert!(pieces.len() >= 3);
    let mut total = 0;
    for p in pieces {
        let (off, len) = (
            p["offset"].as_u64().unwrap() as usize,
            p["len"].as_u64().unwrap() as usize,
        );
        let text = String::from_utf8(inflate_piece(&object[off..off + len])).unwrap();
        let ids: Vec<String> = text
            .lines()
            .map(|l| {
                serde_json::from_str::<Value>(l).unwrap()["id"]
                    .as_str()
                    .unwrap()
                    .to_string()
            })
            .collect();
        assert_eq!(ids.len() as u64, p["rows"].as_u64().unwrap());
        assert_eq!(ids.first().unwrap(), p["first_id"].as_str().unwrap());
        assert_eq!(ids.last().unwrap(), p["last_id"].as_str().unwrap());
        total += ids.len();
    }
    assert_eq!(total, 3_000);
}

fn inflate_piece(bytes: &[u8]) -> Vec<u8> {
    let mut d = flate2::Decompress::new(false);
    let mut out = Vec::new();
    loop {
        out.reserve(1 << 16);
        let before = out.len();
        d.decompress_vec(&bytes[d.total_in() as usize..], &mut out, flate2::FlushDecompress::Sync)
            .unwrap();
        if d.total_in() as usize == bytes.len() && out.len() == before {
            return out;
        }
    }
}

/// Over 200,000 rows with R2's real 5 MiB minimum part size.
#[test]
fn more_than_200k_rows_with_real_part_size() {
    let cfg = Config {
        part_size: 5 * 1024 * 1024,
        page_rows: 2_000,
        step_rows: 50_000,
        clean_batch_rows: 10_000,
        clean_step_rows: 100_000,
        ..Config::default()
    };
    let (w, _) = full_run(cfg, 210_000);
    assert!(w.status(DATE).stats.steps >= 6);
}

/// An object of exactly N × part size: every part full, no short trailing part.
#[test]
fn object_of_exactly_two_parts() {
    // The object's bytes do not depend on the part size, so measure once, then choose the
    // part size as half the object (nudging the row count until the size is even).
    for rows in 40_000..40_050 {
        let probe = World::new(Config {
            part_size: 64 * 1024 * 1024,
            ..small_config()
        });
        seed(&probe.db, DATE, rows, 7, now_s(&probe));
        probe.run(DATE);
        let size = probe.status(DATE).bytes_uploaded;
        if size % 2 == 1 {
            continue;
        }
        let cfg = Config {
            part_size: size / 2,
            ..small_config()
        };
        let (w, object) = full_run(cfg, rows);
        assert_eq!(object.len() as u64, size);
        assert_eq!(w.status(DATE).parts_uploaded, 2);
        return;
    }
    panic!("no even object size found");
}

/// Rows that arrive during the export, sorting before and after the cursor, stay in D1 and
/// become the next generation.
#[test]
fn late_rows_survive_and_become_the_next_generation() {
    let w = World::new(small_config());
    seed(&w.db, DATE, 4_000, 11, now_s(&w));
    let archived = expected_rows(&w.db, DATE);
    w.command(DATE, Command::Trigger).unwrap();
    let mut inserted_while = Vec::new();
    let mut insert_late = |w: &World, step: u64| {
        let phase = w.status(DATE).phase;
        // Once during the export, once during cleaning.
        if (step == 2 && phase == "exporting") || (phase == "cleaning" && !inserted_while.contains(&"cleaning")) {
            inserted_while.push(phase);
            // Ids sort by event time: "0000…" sorts before every exported id, "9999…" after.
            for (i, prefix) in ["0000000000000", "9999999999999"].iter().enumerate() {
                w.db.conn
                    .execute(
                        // created_at comes from the database's own clock, as in production.
                        "INSERT INTO traffic_events (id, path, method, client_ip_hash, timestamp, event_date) VALUES (?1, '/late', 'GET', 'h', 1, ?2)",
                        rusqlite::params![format!("{prefix}-late{step}{i}"), DATE],
                    )
                    .unwrap();
            }
        }
    };
    w.drive(DATE, &mut insert_late);
    assert_eq!(inserted_while, ["exporting", "cleaning"]);
    let st = w.status(DATE);
    assert_eq!(st.phase, "cleaned");
    let object = w.r2.object(&st.object_key.unwrap()).unwrap();
    assert_archive_matches(&gunzip_single_member(&object), &archived);
    assert_eq!(count_date(&w.db, DATE), 4, "the late rows must still be in D1");

    // The next run archives exactly the late rows as generation 2. The set's cutoff is D1's
    // clock in whole seconds, so wait for the next second of the database's clock first.
    wait_for_next_db_second(&w);
    w.host.now.set(w.host.now.get() + 60_000);
    let late = expected_rows(&w.db, DATE);
    w.run(DATE);
    let st = w.status(DATE);
    assert_eq!((st.phase, st.generation), ("cleaned", 2));
    let object =
        w.r2.object("traffic_events/event_date=2026-11-20/0002.jsonl.gz")
            .unwrap();
    assert_archive_matches(&gunzip_single_member(&object), &late);
    assert_eq!(count_date(&w.db, DATE), 0);
    assert!(w
        .r2
        .object("traffic_events/event_date=2026-11-20/0001.jsonl.gz")
        .is_some());
    assert_eq!(st.generations.len(), 2);

    // A third trigger with nothing new creates no object.
    w.run(DATE);
    assert_eq!(w.status(DATE).generation, 2);
    assert!(w
        .r2
        .object("traffic_events/event_date=2026-11-20/0003.jsonl.gz")
        .is_none());
}

/// Integers past 2^53, 100 KB text and NULLs come back exactly.
#[test]
fn hostile_values_round_trip() {
    let w = World::new(small_config());
    let big_ua = "x\u{1F600}\"\\".repeat(100_000 / 8);
    let rows: Vec<(String, Option<String>, i64, f64)> = vec![
        ("1".into(), Some(big_ua), 9_007_199_254_740_993, 0.1 + 0.2),
        ("2".into(), None, 9_007_199_254_740_992, 23.799999952316284),
        (
            "3".into(),
            Some("\u{0}\u{1}\u{1f}\n\r\t\u{2028}中文 'quoted'".into()),
            -9_223_372_036_854_775_808,
            5e-324,
        ),
        ("4".into(), Some("".into()), i64::MAX, 1e300),
    ];
    for (id, ua, ts, rt) in &rows {
        w.db.conn
            .execute(
                // created_at NULL too: every nullable column is NULL in some row.
                "INSERT INTO traffic_events (id, path, method, status, response_time, client_ip_hash, user_agent, country, timestamp, event_date, is_error, created_at) VALUES (?1, '/', 'GET', 200, ?2, 'h', ?3, NULL, ?4, ?5, 0, CASE WHEN ?1 = '2' THEN NULL ELSE 1 END)",
                rusqlite::params![id, rt, ua, ts, DATE],
            )
            .unwrap();
    }
    let expected = expected_rows(&w.db, DATE);
    w.run(DATE);
    let object = w.r2.object(&w.status(DATE).object_key.unwrap()).unwrap();
    let text = gunzip_single_member(&object);
    assert_archive_matches(&text, &expected);
    assert!(
        text.contains("\"timestamp\":9007199254740993"),
        "big integer must be exact in the text"
    );
    assert!(text.contains("\"response_time\":0.30000000000000004"));
}

#[test]
fn other_dates_are_never_touched_and_metadata_is_written() {
    let (w, _) = full_run(small_config(), 500);
    let (r2_path, gen): (String, i64) =
        w.db.conn
            .query_row(
                "SELECT r2_path, generation FROM archive_metadata WHERE date = ?1",
                [DATE],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
    assert_eq!(
        (r2_path.as_str(), gen),
        ("traffic_events/event_date=2026-11-20/0001.jsonl.gz", 1)
    );
    assert_eq!(count_date(&w.db, OTHER), 50);
}

fn wait_for_next_db_second(w: &World) {
    let now = || -> i64 { w.db.conn.query_row("SELECT unixepoch()", [], |r| r.get(0)).unwrap() };
    let start = now();
    while now() == start {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}
