//! Bench only: the naive archiver this project replaces, kept to be measured against it.
//!
//! `LIMIT … OFFSET` pages, every row held in memory, one JSONL string compressed at the end,
//! one `put`. Reachable only when the var `BENCH_NAIVE` is "1" (set by scripts/bench for local
//! workerd, never in wrangler.toml); otherwise its route answers 404. It deletes nothing.

use serde_json::{json, Value};
use worker::wasm_bindgen::JsValue;
use worker::Env;

use crate::api::ApiError;
use crate::ports::Host;

use super::adapters::WorkerHost;

pub(super) fn enabled(env: &Env) -> bool {
    env.var("BENCH_NAIVE").map(|v| v.to_string() == "1").unwrap_or(false)
}

pub(super) async fn naive(env: &Env, date: &str) -> Result<Value, ApiError> {
    let fail = |e: worker::Error| ApiError::new(500, "naive_failed", e.to_string());
    let started = WorkerHost.now_ms();
    let db = env.d1("DB").map_err(fail)?;
    let page = 1000.0;
    let mut all: Vec<Value> = Vec::new();
    let mut rows_read = 0.0;
    loop {
        let rs = db
            .prepare("SELECT * FROM traffic_events WHERE event_date = ?1 ORDER BY id LIMIT ?2 OFFSET ?3")
            .bind(&[
                JsValue::from_str(date),
                JsValue::from_f64(page),
                JsValue::from_f64(all.len() as f64),
            ])
            .map_err(fail)?
            .all()
            .await
            .map_err(fail)?;
        rows_read += rs.meta().map_err(fail)?.and_then(|m| m.rows_read).unwrap_or(0) as f64;
        let rows: Vec<Value> = rs.results().map_err(fail)?;
        let n = rows.len();
        all.extend(rows);
        if (n as f64) < page {
            break;
        }
    }
    let export_ms = WorkerHost.now_ms() - started;
    let mut jsonl = String::new();
    for row in &all {
        jsonl.push_str(&row.to_string());
        jsonl.push('\n');
    }
    let compressed = miniz_oxide::deflate::compress_to_vec(jsonl.as_bytes(), 6);
    let bytes = compressed.len();
    env.bucket("ARCHIVE")
        .map_err(fail)?
        .put(format!("bench-naive/{date}.jsonl.deflate"), compressed)
        .execute()
        .await
        .map_err(fail)?;
    Ok(json!({
        "rows": all.len(),
        "seconds": (WorkerHost.now_ms() - started) as f64 / 1000.0,
        "read_seconds": export_ms as f64 / 1000.0,
        "d1_rows_read": rows_read,
        "jsonl_bytes": jsonl.len(),
        "compressed_bytes": bytes,
        "peak_wasm_memory_bytes": WorkerHost.memory_bytes(),
    }))
}
