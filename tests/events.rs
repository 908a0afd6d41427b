//! Reading an archive in place: only the pieces that can hold a window are read, each checked,
//! and exactly the lines in the window come out, in chunks, with bounded buffers.

mod common;

use common::*;
use d1_archiver::core::config::Config;
use d1_archiver::core::status::ArchiveObject;
use d1_archiver::engine::events::{EventReader, EventsError, Window};
use serde_json::Value;

fn archived(rows: u64) -> (World, Vec<Value>) {
    archived_with(rows, small_config())
}

fn archived_with(rows: u64, cfg: Config) -> (World, Vec<Value>) {
    let w = World::new(cfg);
    seed(w.sql(), DATE, rows, 4, w.host.now.get() / 1000);
    let all = rows_of(w.sql(), DATE);
    w.run();
    (w, all)
}

/// The lines of `window`, and the reader after it; every chunk holds whole lines.
fn read(w: &World, window: Window) -> Result<(Vec<Value>, EventReader), EventsError> {
    read_chunks(w, window).map(|(lines, reader, _)| (lines, reader))
}

fn read_chunks(w: &World, window: Window) -> Result<(Vec<Value>, EventReader, usize), EventsError> {
    let objects = ArchiveObject::of(&w.record());
    let mut reader = EventReader::new(&objects, window);
    let mut bytes = Vec::new();
    let mut chunks = 0;
    while let Some(chunk) = block_on(reader.next(&w.r2))? {
        assert!(!chunk.is_empty() && chunk.len() <= 256 * 1024);
        assert!(chunk.ends_with(b"\n"), "a chunk ends with a whole line");
        bytes.extend(chunk);
        chunks += 1;
    }
    let lines = String::from_utf8(bytes)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    Ok((lines, reader, chunks))
}

/// The first `n` lines of the day.
fn first(w: &World, n: u64) -> Vec<Value> {
    let window = Window {
        limit: Some(n),
        ..Window::default()
    };
    read(w, window).unwrap().0
}

fn noon(minutes: i64) -> i64 {
    1_795_132_800_000 + 12 * 3_600_000 + minutes * 60_000
}

#[test]
fn a_time_window_reads_only_its_pieces_and_returns_exactly_its_lines() {
    let (w, all) = archived(20_000);
    let window = Window {
        from_ms: Some(noon(0)),
        to_ms: Some(noon(30)),
        ..Window::default()
    };
    let want: Vec<Value> = all
        .iter()
        .filter(|r| (noon(0)..noon(30)).contains(&r["timestamp"].as_i64().unwrap()))
        .cloned()
        .collect();
    w.objects().reads.borrow_mut().clear();
    let (got, reader) = read(&w, window).unwrap();
    assert_eq!(sorted(got), sorted(want.clone()));
    assert!(!want.is_empty());
    let (pieces, bytes) = (reader.pieces_total, reader.object_bytes);
    let read_bytes: u64 = w.objects().reads.borrow().iter().map(|r| r.2).sum();
    assert_eq!(read_bytes, reader.bytes_read);
    assert!(
        read_bytes * 10 < bytes,
        "{read_bytes} of {bytes} bytes read for 30 minutes of the day"
    );
    assert!(w.objects().reads.borrow().len() < pieces / 4);
}

#[test]
fn the_whole_day_ids_and_limits() {
    let (w, all) = archived(5_000);
    let (got, _) = read(&w, Window::default()).unwrap();
    assert_eq!(sorted(got), all);
    let mut ids: Vec<String> = all.iter().map(|r| r["id"].as_str().unwrap().to_string()).collect();
    ids.sort();
    let window = Window {
        id_from: Some(ids[100].clone()),
        id_to: Some(ids[199].clone()),
        ..Window::default()
    };
    let (got, _) = read(&w, window).unwrap();
    let got: Vec<&str> = got.iter().map(|r| r["id"].as_str().unwrap()).collect();
    assert_eq!(got, ids[100..200].iter().map(String::as_str).collect::<Vec<_>>());
    let got: Vec<String> = first(&w, 7)
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(got, ids[..7], "the first lines of the scan, in its order");
}

#[test]
fn pieces_larger_than_a_chunk_go_out_in_chunks_of_whole_lines() {
    let cfg = Config {
        piece_bytes: 1024 * 1024,
        step_rows: 20_000,
        ..small_config()
    };
    let (w, all) = archived_with(12_000, cfg);
    let objects = ArchiveObject::of(&w.record());
    let pieces = objects[0].pieces.len();
    let largest = objects[0].pieces.iter().map(|p| p.raw_len).max().unwrap();
    assert!(largest > 2 * 256 * 1024, "pieces of {largest} bytes");
    let (lines, _, chunks) = read_chunks(&w, Window::default()).unwrap();
    assert!(chunks > 2 * pieces, "{chunks} chunks from {pieces} pieces");
    assert_eq!(sorted(lines), all);
    let got = first(&w, 5_000);
    let mut by_id = all.clone();
    by_id.sort_by_key(|r| r["id"].as_str().unwrap().to_string());
    assert_eq!(
        got,
        by_id[..5_000].to_vec(),
        "the first lines of the scan, in its order"
    );
}

#[test]
fn a_damaged_piece_stops_the_read_before_any_of_its_lines() {
    let (w, _) = archived(5_000);
    let g = w.record().generations[0].clone();
    let p = &g.pieces[2];
    w.objects().objects.borrow_mut().get_mut(&g.key).unwrap()[(p.offset + p.len / 2) as usize] ^= 4;
    let objects = ArchiveObject::of(&w.record());
    let mut reader = EventReader::new(&objects, Window::default());
    let mut lines = 0;
    let err = loop {
        match block_on(reader.next(&w.r2)) {
            Ok(Some(chunk)) => lines += chunk.iter().filter(|b| **b == b'\n').count() as u64,
            Ok(None) => panic!("the damage went unnoticed"),
            Err(e) => break e,
        }
    };
    assert!(matches!(err, EventsError::Damaged { piece: 2, .. }), "{err}");
    assert_eq!(
        lines,
        g.pieces[0].rows + g.pieces[1].rows,
        "only the whole, checked pieces before it"
    );
}
