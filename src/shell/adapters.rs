//! Adapters from the Workers platform to the ports: D1, R2, Durable Object storage, the clock.
//!
//! Not logic: each method is one platform call plus a translation of its errors.

use serde_json::Value;
use worker::js_sys::{self, Array, Object, Reflect, Uint8Array};
use worker::wasm_bindgen::{JsCast, JsValue};
use worker::wasm_bindgen_futures::JsFuture;
use worker::{Bucket, D1Database, Storage};

use crate::core::config::{DO_MAX_KEYS_PER_PUT, DO_VALUE_CHUNK};
use crate::core::sql::{Meta, Param, ResultSet, Statement};
use crate::ports::{Database, Durable, FailureKind, Host, ObjectInfo, ObjectStore, PortError};

fn js_message(e: &JsValue) -> String {
    if let Some(err) = e.dyn_ref::<js_sys::Error>() {
        return String::from(err.message());
    }
    e.as_string().unwrap_or_else(|| format!("{e:?}"))
}

fn worker_err(op: &'static str) -> impl Fn(worker::Error) -> PortError {
    move |e| classify(op, e.to_string())
}

fn js_err(op: &'static str) -> impl Fn(JsValue) -> PortError {
    move |e| classify(op, js_message(&e))
}

/// R2 reports a missing multipart upload as error 10024 ("The specified multipart upload does
/// not exist"); everything else is worth a retry.
fn classify(op: &'static str, message: String) -> PortError {
    let kind = if message.contains("10024") || message.contains("multipart upload does not exist") {
        FailureKind::NoSuchUpload
    } else {
        FailureKind::Transient
    };
    PortError { kind, op, message }
}

// ---------------------------------------------------------------------------------------------
// D1

pub struct D1(pub D1Database);

fn to_value(v: &JsValue) -> Value {
    if let Some(s) = v.as_string() {
        Value::String(s)
    } else if let Some(f) = v.as_f64() {
        // JavaScript numbers: integral ones within 2^53 are integers, the rest doubles.
        if f.fract() == 0.0 && f.abs() <= 9_007_199_254_740_991.0 {
            Value::from(f as i64)
        } else {
            serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)
        }
    } else if let Some(b) = v.as_bool() {
        Value::Bool(b)
    } else {
        Value::Null
    }
}

fn meta_u64(meta: &JsValue, name: &str) -> u64 {
    Reflect::get(meta, &JsValue::from_str(name))
        .ok()
        .and_then(|v| v.as_f64())
        .unwrap_or(0.0) as u64
}

impl D1 {
    /// Runs `stmt` with `.all()`: the JavaScript result object (`results`, `meta`).
    async fn all(&self, stmt: &Statement) -> Result<JsValue, PortError> {
        const OP: &str = "d1";
        let params: Vec<JsValue> = stmt
            .params
            .iter()
            .map(|p| match p {
                Param::Null => JsValue::NULL,
                Param::Int(i) => JsValue::from_f64(*i as f64),
                Param::Text(t) => JsValue::from_str(t),
            })
            .collect();
        let prepared = self.0.prepare(stmt.sql).bind(&params).map_err(worker_err(OP))?;
        let promise = prepared.inner().all().map_err(js_err(OP))?;
        JsFuture::from(promise).await.map_err(js_err(OP))
    }
}

fn meta_of(result: &JsValue) -> Meta {
    let meta = Reflect::get(result, &JsValue::from_str("meta")).unwrap_or(JsValue::UNDEFINED);
    Meta {
        rows_read: meta_u64(&meta, "rows_read"),
        rows_written: meta_u64(&meta, "rows_written"),
        changes: meta_u64(&meta, "changes"),
    }
}

impl Database for D1 {
    async fn run(&self, stmt: &Statement) -> Result<ResultSet, PortError> {
        const OP: &str = "d1";
        let result = self.all(stmt).await?;
        let results = Reflect::get(&result, &JsValue::from_str("results")).map_err(js_err(OP))?;
        let mut rows = Vec::new();
        if let Some(array) = results.dyn_ref::<Array>() {
            rows.reserve(array.length() as usize);
            for row in array.iter() {
                // Object.values keeps SELECT order (column names are never integer-like here).
                let values = Object::values(row.unchecked_ref::<Object>());
                rows.push(values.iter().map(|v| to_value(&v)).collect());
            }
        }
        Ok(ResultSet {
            rows,
            meta: meta_of(&result),
        })
    }

    async fn run_page(&self, stmt: &Statement) -> Result<(String, Meta), PortError> {
        const OP: &str = "d1.page";
        let result = self.all(stmt).await?;
        let results = Reflect::get(&result, &JsValue::from_str("results")).map_err(js_err(OP))?;
        let results: Array = results.dyn_into().map_err(js_err(OP))?;
        // results.map(Object.values).flat().join(SEP), all inside JavaScript's builtins: one
        // string crosses into wasm per page instead of one value per cell.
        let object_values = Reflect::get(&js_sys::global(), &"Object".into())
            .and_then(|o| Reflect::get(&o, &"values".into()))
            .map_err(js_err(OP))?;
        let map: js_sys::Function = Reflect::get(&results, &"map".into())
            .and_then(JsValue::dyn_into)
            .map_err(js_err(OP))?;
        let rows: Array = Reflect::apply(&map, &results, &Array::of1(&object_values))
            .and_then(JsValue::dyn_into)
            .map_err(js_err(OP))?;
        let wire = String::from(rows.flat(1).join(&crate::core::sql::WIRE_SEP.to_string()));
        Ok((wire, meta_of(&result)))
    }
}

// ---------------------------------------------------------------------------------------------
// R2

pub struct R2(pub Bucket);

impl R2 {
    fn raw(&self) -> &worker::worker_sys::R2Bucket {
        self.0.as_ref().unchecked_ref()
    }

    fn upload(&self, key: &str, upload_id: &str) -> Result<worker::worker_sys::R2MultipartUpload, PortError> {
        self.raw()
            .resume_multipart_upload(key.to_string(), upload_id.to_string())
            .map(JsCast::unchecked_into)
            .map_err(js_err("r2.resume_upload"))
    }
}

impl ObjectStore for R2 {
    async fn create_upload(&self, key: &str) -> Result<String, PortError> {
        const OP: &str = "r2.create_upload";
        let options = Object::new();
        let http = Object::new();
        let _ = Reflect::set(&http, &"contentType".into(), &"application/gzip".into());
        let _ = Reflect::set(&options, &"httpMetadata".into(), &http);
        let promise = self
            .raw()
            .create_multipart_upload(key.to_string(), options.into())
            .map_err(js_err(OP))?;
        let upload: worker::worker_sys::R2MultipartUpload =
            JsFuture::from(promise).await.map_err(js_err(OP))?.unchecked_into();
        upload.upload_id().map_err(js_err(OP))
    }

    async fn upload_part(&self, key: &str, upload_id: &str, number: u16, bytes: &[u8]) -> Result<String, PortError> {
        const OP: &str = "r2.upload_part";
        // Copied straight into JavaScript memory: no second part-sized buffer in wasm.
        let data = Uint8Array::from(bytes);
        let promise = self
            .upload(key, upload_id)?
            .upload_part(number, data.into())
            .map_err(js_err(OP))?;
        let part = JsFuture::from(promise).await.map_err(js_err(OP))?;
        Reflect::get(&part, &"etag".into())
            .ok()
            .and_then(|e| e.as_string())
            .ok_or_else(|| PortError::transient(OP, "R2 returned a part without an etag"))
    }

    async fn complete_upload(&self, key: &str, upload_id: &str, parts: &[(u16, String)]) -> Result<(), PortError> {
        const OP: &str = "r2.complete";
        let list: Vec<JsValue> = parts
            .iter()
            .map(|(n, etag)| {
                let o = Object::new();
                let _ = Reflect::set(&o, &"partNumber".into(), &JsValue::from(*n));
                let _ = Reflect::set(&o, &"etag".into(), &JsValue::from_str(etag));
                o.into()
            })
            .collect();
        let promise = self.upload(key, upload_id)?.complete(list).map_err(js_err(OP))?;
        JsFuture::from(promise).await.map_err(js_err(OP))?;
        Ok(())
    }

    async fn abort_upload(&self, key: &str, upload_id: &str) -> Result<(), PortError> {
        const OP: &str = "r2.abort";
        let promise = self.upload(key, upload_id)?.abort().map_err(js_err(OP))?;
        JsFuture::from(promise).await.map_err(js_err(OP))?;
        Ok(())
    }

    async fn put(&self, key: &str, bytes: Vec<u8>, content_type: &str) -> Result<(), PortError> {
        self.0
            .put(key, bytes)
            .http_metadata(worker::HttpMetadata {
                content_type: Some(content_type.into()),
                ..Default::default()
            })
            .execute()
            .await
            .map_err(worker_err("r2.put"))?;
        Ok(())
    }

    async fn head(&self, key: &str) -> Result<Option<ObjectInfo>, PortError> {
        let o = self.0.head(key).await.map_err(worker_err("r2.head"))?;
        Ok(o.map(|o| ObjectInfo { size: o.size() }))
    }

    async fn get_range(&self, key: &str, offset: u64, len: u64) -> Result<Option<Vec<u8>>, PortError> {
        const OP: &str = "r2.get";
        let o = self
            .0
            .get(key)
            .range(worker::Range::OffsetWithLength { offset, length: len })
            .execute()
            .await
            .map_err(worker_err(OP))?;
        let Some(object) = o else { return Ok(None) };
        match object.body() {
            None => Ok(None),
            Some(body) => body.bytes().await.map(Some).map_err(worker_err(OP)),
        }
    }

    async fn delete(&self, key: &str) -> Result<(), PortError> {
        self.0.delete(key).await.map_err(worker_err("r2.delete"))
    }
}

// ---------------------------------------------------------------------------------------------
// Durable Object storage

/// Keys: `record` (the record's JSON), `carry.count`, and `carry.0..n` (chunks of at most
/// `DO_VALUE_CHUNK` bytes, under the 2 MB value limit). One `put` of all of them is atomic.
pub struct DoStorage(pub Storage);

const RECORD: &str = "record";
const CARRY_COUNT: &str = "carry.count";

fn chunk_key(i: usize) -> String {
    format!("carry.{i}")
}

impl DoStorage {
    async fn get_raw(&self, keys: Vec<String>) -> Result<js_sys::Map, PortError> {
        self.0.get_multiple(keys).await.map_err(worker_err("do.load"))
    }
}

impl Durable for DoStorage {
    async fn load(&self, carry_capacity: Option<usize>) -> Result<Option<(String, Vec<u8>)>, PortError> {
        let map = self.get_raw(vec![RECORD.into(), CARRY_COUNT.into()]).await?;
        let Some(json) = map.get(&RECORD.into()).as_string() else {
            return Ok(None);
        };
        let Some(capacity) = carry_capacity else {
            return Ok(Some((json, Vec::new())));
        };
        let count = map.get(&CARRY_COUNT.into()).as_f64().unwrap_or(0.0) as usize;
        let mut carry = Vec::new();
        if count > 0 {
            carry.reserve(capacity.max(count * DO_VALUE_CHUNK));
            let chunks = self.get_raw((0..count).map(chunk_key).collect()).await?;
            for i in 0..count {
                let v = chunks.get(&chunk_key(i).into());
                let bytes = v
                    .dyn_ref::<Uint8Array>()
                    .ok_or_else(|| PortError::transient("do.load", format!("carry chunk {i} is missing")))?;
                let start = carry.len();
                carry.resize(start + bytes.length() as usize, 0);
                bytes.copy_to(&mut carry[start..]);
            }
        }
        Ok(Some((json, carry)))
    }

    async fn save(&self, record_json: &str, carry: Option<&[u8]>, expected_revision: u64) -> Result<(), PortError> {
        const OP: &str = "do.save";
        // No await between this read and the put below other than storage calls, so the
        // Durable Object's input gate keeps other events out: the check-and-put is atomic.
        let current = self.get_raw(vec![RECORD.into()]).await?.get(&RECORD.into()).as_string();
        let revision = current
            .as_deref()
            .and_then(|j| serde_json::from_str::<Value>(j).ok())
            .and_then(|v| v.get("revision").and_then(Value::as_u64))
            .unwrap_or(0);
        if revision != expected_revision {
            return Err(PortError {
                kind: FailureKind::Conflict,
                op: OP,
                message: format!("record is at revision {revision}, expected {expected_revision}"),
            });
        }
        let values = Object::new();
        let _ = Reflect::set(&values, &RECORD.into(), &record_json.into());
        if let Some(carry) = carry {
            let chunks: Vec<&[u8]> = carry.chunks(DO_VALUE_CHUNK).collect();
            if chunks.len() + 2 > DO_MAX_KEYS_PER_PUT {
                return Err(PortError::transient(
                    OP,
                    "carry too large for one atomic put; lower PART_SIZE_BYTES",
                ));
            }
            let _ = Reflect::set(&values, &CARRY_COUNT.into(), &JsValue::from(chunks.len() as u32));
            for (i, chunk) in chunks.iter().enumerate() {
                let _ = Reflect::set(&values, &chunk_key(i).into(), &Uint8Array::from(*chunk));
            }
        }
        self.0.put_multiple_raw(values).await.map_err(worker_err(OP))
    }
}

// ---------------------------------------------------------------------------------------------
// Host

pub struct WorkerHost;

impl Host for WorkerHost {
    fn now_ms(&self) -> i64 {
        js_sys::Date::now() as i64
    }

    fn memory_bytes(&self) -> u64 {
        // Linear memory only grows, so its size now is the isolate's peak so far.
        core::arch::wasm32::memory_size(0) as u64 * 65_536
    }
}
