//! The native floor for `scripts/bench`: the same rows, read straight from D1's SQLite file with
//! the export's own SQL and page size, pushed through the project's own JSONL and gzip piece
//! encoder, compiled for the host. No Worker, no JavaScript, no network: the best this design
//! can do on this machine.
//!
//!   cargo run --release --example floor -- <d1.sqlite> <YYYY-MM-DD> [page_rows] [level]
//!
//! Prints one JSON line: rows, seconds, rows_per_s, raw_bytes, gzip_bytes.

#[path = "../tests/common/sqlite.rs"]
mod sqlite;

use std::time::Instant;

use d1_archiver::core::gzip::{PieceWriter, StreamPos};
use d1_archiver::core::jsonl;
use d1_archiver::core::sql::{self, Cursor};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (path, date) = (&args[1], &args[2]);
    let page_rows: u32 = args.get(3).map_or(2000, |v| v.parse().unwrap());
    let level: u8 = args.get(4).map_or(6, |v| v.parse().unwrap());
    let conn = rusqlite::Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
    let started = Instant::now();
    let mut w = PieceWriter::resume(level, StreamPos::default(), Vec::new(), 8 << 20);
    let (mut cursor, mut rows, mut gz) = (Cursor::FirstId, 0u64, 0u64);
    let mut lines = Vec::with_capacity(1 << 20);
    let date_json = sql::date_json(date);
    loop {
        // The same wire form the D1 adapter builds, then the same parser and encoder.
        let rs = sqlite::run(&conn, &sql::export_page(date, &cursor, page_rows, None)).unwrap();
        let wire = sqlite::wire(&rs);
        lines.clear();
        let mut last = None;
        for row in sql::page_rows(&wire, &date_json) {
            let row = row.unwrap();
            jsonl::encode_row(&row.values, row.real, &mut lines).unwrap();
            last = Some(row);
        }
        if let Some(row) = last {
            cursor = sql::cursor_after(&row).unwrap();
        }
        w.write(&lines);
        while w.peek_part(5 << 20).is_some() {
            gz += 5 << 20;
            w.consume(5 << 20);
        }
        rows += rs.rows.len() as u64;
        if rs.rows.len() < page_rows as usize {
            break;
        }
    }
    w.finish();
    gz += w.take_all().len() as u64;
    let secs = started.elapsed().as_secs_f64();
    println!(
        "{}",
        serde_json::json!({ "rows": rows, "seconds": secs, "rows_per_s": rows as f64 / secs, "raw_bytes": w.pos().raw_len, "gzip_bytes": gz })
    );
}
