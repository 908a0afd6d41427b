//! Test hooks, served only with `TEST_HOOKS=1` (the routes answer 404 without it, and
//! `/admin/health` reports it when it is on): list keys, run one statement as the app would,
//! abort or probe an upload from outside, and the naive archiver the benchmark measures.

use serde_json::{json, Value};
use worker::wasm_bindgen::JsValue;
use worker::Env;

use crate::api::routes::UploadOp;
use crate::api::ApiError;
use crate::core::sql;
use crate::ports::{FailureKind, Host, ObjectStore};

use super::adapters::{WorkerHost, R2};
use super::binding;

/// `/admin/test/list?prefix=P`: the keys in the bucket under a prefix (at most 1000).
pub(super) async fn list(env: &Env, prefix: &str) -> Result<Value, ApiError> {
    let bucket = env.bucket("ARCHIVE").map_err(binding("ARCHIVE"))?;
    let objects = bucket
        .list()
        .prefix(prefix)
        .limit(1000)
        .execute()
        .await
        .map_err(ApiError::unavailable)?;
    let keys: Vec<String> = objects.objects().iter().map(|o| o.key()).collect();
    Ok(json!({ "keys": keys }))
}

/// `/admin/test/sql` (POST): one statement on D1, as the app would. The body is the statement,
/// or `{"sql": …, "params": [text or number, …]}`; the answer carries D1's `meta`.
pub(super) async fn sql(env: &Env, text: &str) -> Result<Value, ApiError> {
    let db = env.d1("DB").map_err(binding("DB"))?;
    let bad = |e: String| ApiError::new(crate::api::ErrorKind::BadParameter, e);
    let (sql, params) = match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(o)) => {
            let sql = o.get("sql").and_then(Value::as_str).unwrap_or_default().to_string();
            let params: Vec<JsValue> = o
                .get("params")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .map(|v| match v {
                    Value::String(s) => JsValue::from_str(s),
                    Value::Number(n) => JsValue::from_f64(n.as_f64().unwrap_or(0.0)),
                    Value::Null | Value::Bool(_) | Value::Array(_) | Value::Object(_) => JsValue::NULL,
                })
                .collect();
            (sql, params)
        }
        _ => (text.to_string(), Vec::new()),
    };
    let r = db
        .prepare(&sql)
        .bind(&params)
        .map_err(|e| bad(e.to_string()))?
        .run()
        .await
        .map_err(|e| bad(e.to_string()))?;
    let meta = r.meta().ok().flatten();
    Ok(json!({
        "changes": meta.as_ref().and_then(|m| m.changes).unwrap_or(0),
        "rows_read": meta.as_ref().and_then(|m| m.rows_read),
        "rows_written": meta.as_ref().and_then(|m| m.rows_written),
        "duration": meta.as_ref().and_then(|m| m.duration),
    }))
}

/// `/admin/test/upload?key=K&upload_id=U&op=abort|probe`: aborts an upload from outside the
/// date's object, or probes whether it still exists (by uploading a throwaway part 10000).
pub(super) async fn upload(env: &Env, key: &str, upload_id: &str, op: UploadOp) -> Result<Value, ApiError> {
    let r2 = R2(env.bucket("ARCHIVE").map_err(binding("ARCHIVE"))?);
    match op {
        UploadOp::Abort => {
            r2.abort_upload(key, upload_id).await.map_err(ApiError::unavailable)?;
            Ok(json!({ "aborted": true }))
        }
        UploadOp::Probe => match r2.upload_part(key, upload_id, 10_000, b"probe").await {
            Ok(_) => Ok(json!({ "alive": true })),
            Err(e) if e.kind == FailureKind::NoSuchUpload => Ok(json!({ "alive": false })),
            Err(e) => Err(ApiError::unavailable(e)),
        },
    }
}

/// The naive archiver this project replaces, kept to be measured against: `LIMIT … OFFSET`
/// pages, every row held in memory, one JSONL string compressed at the end, one `put`. It
/// deletes nothing.
pub(super) async fn naive(env: &Env, date: &str) -> Result<Value, ApiError> {
    let fail = |e: worker::Error| ApiError::unavailable(format!("naive archiver: {e}"));
    let started = WorkerHost.now_ms();
    let db = env.d1("DB").map_err(binding("DB"))?;
    let page = 1000u32;
    let mut all: Vec<Value> = Vec::new();
    let mut rows_read = 0usize;
    loop {
        let stmt = sql::naive_page(date, page, all.len() as u64);
        let params = [
            JsValue::from_str(date),
            JsValue::from(page),
            JsValue::from_f64(all.len() as f64),
        ];
        let rs = db
            .prepare(stmt.sql)
            .bind(&params)
            .map_err(fail)?
            .all()
            .await
            .map_err(fail)?;
        rows_read += rs.meta().map_err(fail)?.and_then(|m| m.rows_read).unwrap_or(0);
        let rows: Vec<Value> = rs.results().map_err(fail)?;
        let n = rows.len();
        all.extend(rows);
        if n < page as usize {
            break;
        }
    }
    let read_ms = WorkerHost.now_ms() - started;
    let mut jsonl = String::new();
    for row in &all {
        jsonl.push_str(&row.to_string());
        jsonl.push('\n');
    }
    let compressed = miniz_oxide::deflate::compress_to_vec(jsonl.as_bytes(), 6);
    let bucket = env.bucket("ARCHIVE").map_err(binding("ARCHIVE"))?;
    let bytes = compressed.len();
    bucket
        .put(format!("bench-naive/{date}.jsonl.deflate"), compressed)
        .execute()
        .await
        .map_err(fail)?;
    Ok(json!({
        "rows": all.len(),
        "seconds": (WorkerHost.now_ms() - started) as f64 / 1000.0,
        "read_seconds": read_ms as f64 / 1000.0,
        "d1_rows_read": rows_read,
        "jsonl_bytes": jsonl.len(),
        "compressed_bytes": bytes,
        "peak_wasm_memory_bytes": WorkerHost.memory_bytes(),
    }))
}
