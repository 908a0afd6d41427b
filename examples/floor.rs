//! The native floor for `scripts/bench`: the same rows, read straight from D1's SQLite file with
//! the export's own SQL and page size, pushed through the project's own JSONL and gzip piece
//! encoder, compiled for the host. No Worker, no JavaScript, no network: the best this design
//! can do on this machine.
//!
//!   cargo run --release --example floor -- <d1.sqlite> <YYYY-MM-DD> [page_rows] [level]
//!
//! Prints one JSON line: rows, seconds, rows_per_s, raw_bytes, gzip_bytes.

use std::time::Instant;

use d1_archiver::core::gzip::{PieceWriter, StreamPos};
use d1_archiver::core::jsonl;
use d1_archiver::core::sql::{self, Param};
use rusqlite::types::ValueRef;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (path, date) = (&args[1], &args[2]);
    let page_rows: i64 = args.get(3).map_or(2000, |v| v.parse().unwrap());
    let level: u8 = args.get(4).map_or(6, |v| v.parse().unwrap());
    let conn = rusqlite::Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
    let cutoff = i64::MAX;
    let started = Instant::now();
    let mut w = PieceWriter::resume(level, StreamPos::default(), Vec::new(), 8 << 20);
    let mut st = conn.prepare(sql::EXPORT_PAGE).unwrap();
    let (mut cursor, mut rows, mut gz) = (String::new(), 0u64, 0u64);
    let mut lines = Vec::with_capacity(1 << 20);
    loop {
        let stmt = sql::export_page(date, &cursor, cutoff, page_rows as u32);
        let params: Vec<rusqlite::types::Value> = stmt
            .params
            .iter()
            .map(|p| match p {
                Param::Null => rusqlite::types::Value::Null,
                Param::Int(i) => rusqlite::types::Value::Integer(*i),
                Param::Text(t) => rusqlite::types::Value::Text(t.clone()),
            })
            .collect();
        // The same wire form the D1 adapter builds, then the same parser and encoder.
        let mut q = st.query(rusqlite::params_from_iter(params.iter())).unwrap();
        let mut wire = String::with_capacity(1 << 20);
        let mut n = 0u64;
        while let Some(r) = q.next().unwrap() {
            for i in 0..sql::PAGE_COLUMNS {
                if i > 0 || n > 0 {
                    wire.push(sql::WIRE_SEP);
                }
                match r.get_ref(i).unwrap() {
                    ValueRef::Null => {}
                    ValueRef::Integer(v) => wire.push_str(&v.to_string()),
                    ValueRef::Real(f) => wire.push_str(&serde_json::to_string(&f).unwrap()),
                    ValueRef::Text(t) => wire.push_str(std::str::from_utf8(t).unwrap()),
                    ValueRef::Blob(_) => panic!("blob"),
                }
            }
            n += 1;
        }
        lines.clear();
        let mut last = None;
        for row in sql::page_rows(&wire) {
            let row = row.unwrap();
            jsonl::encode_row(row.head, row.real, row.tail, &mut lines).unwrap();
            last = Some(row.head);
        }
        if let Some(head) = last {
            cursor = sql::head_id(head).unwrap();
        }
        w.write(&lines);
        while let Some(part) = w.peek_part(5 << 20) {
            gz += part.len() as u64;
            w.consume(5 << 20);
        }
        rows += n;
        if n < page_rows as u64 {
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
