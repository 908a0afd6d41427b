//! D1: statements, batches (one transaction) and export pages as one joined string.

use serde_json::Value;
use worker::js_sys::{self, Array, Object, Reflect, Uint8Array};
use worker::wasm_bindgen::{JsCast, JsValue};
use worker::wasm_bindgen_futures::JsFuture;
use worker::D1Database;

use crate::core::sql::{Meta, Param, ResultSet, Statement, WIRE_SEP};
use crate::ports::{Database, PortError};

use super::{js_err, worker_err};

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
    meta_f64(meta, name).unwrap_or(0.0) as u64
}

fn meta_f64(meta: &JsValue, name: &str) -> Option<f64> {
    Reflect::get(meta, &JsValue::from_str(name))
        .ok()
        .and_then(|v| v.as_f64())
        .filter(|v| v.is_finite() && *v >= 0.0)
}

fn meta_of(result: &JsValue) -> Meta {
    let meta = Reflect::get(result, &JsValue::from_str("meta")).unwrap_or(JsValue::UNDEFINED);
    Meta {
        rows_read: meta_u64(&meta, "rows_read"),
        rows_written: meta_u64(&meta, "rows_written"),
        changes: meta_u64(&meta, "changes"),
        sql_us: meta_f64(&meta, "duration").map_or(0, |ms| (ms * 1000.0).round() as u64),
    }
}

/// A D1 result object (`results`, `meta`) as rows of values, positional.
fn result_set(result: &JsValue) -> Result<ResultSet, PortError> {
    let results = Reflect::get(result, &JsValue::from_str("results")).map_err(js_err("d1"))?;
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
        meta: meta_of(result),
    })
}

impl D1 {
    fn prepare(&self, stmt: &Statement) -> Result<worker::D1PreparedStatement, PortError> {
        if let Some(i) = stmt.params.iter().find_map(Param::inexact_int) {
            return Err(PortError::transient(
                "d1",
                format!("a statement binds the integer {i}, which D1 would round (JavaScript numbers are exact to 2^53 only); nothing was run. This is a bug in the archiver: report it with this message"),
            ));
        }
        let params: Vec<JsValue> = stmt
            .params
            .iter()
            .map(|p| match p {
                Param::Null => JsValue::NULL,
                Param::Int(i) => JsValue::from_f64(*i as f64),
                Param::Text(t) => JsValue::from_str(t),
                Param::Blob(b) => Uint8Array::from(b.as_slice()).buffer().into(),
            })
            .collect();
        self.0.prepare(stmt.sql).bind(&params).map_err(worker_err("d1"))
    }

    /// Runs `stmt` with `.all()`: the JavaScript result object (`results`, `meta`).
    async fn all(&self, stmt: &Statement) -> Result<JsValue, PortError> {
        let promise = self.prepare(stmt)?.inner().all().map_err(js_err("d1"))?;
        JsFuture::from(promise).await.map_err(js_err("d1"))
    }
}

impl Database for D1 {
    async fn run(&self, stmt: &Statement) -> Result<ResultSet, PortError> {
        result_set(&self.all(stmt).await?)
    }

    async fn batch(&self, stmts: &[Statement]) -> Result<Vec<ResultSet>, PortError> {
        const OP: &str = "d1.batch";
        let list = Array::new();
        for s in stmts {
            list.push(self.prepare(s)?.inner());
        }
        // D1Database.batch(statements): one transaction; the crate's wrapper hides the results.
        let db: &JsValue = self.0.as_ref();
        let batch: js_sys::Function = Reflect::get(db, &"batch".into())
            .and_then(JsValue::dyn_into)
            .map_err(js_err(OP))?;
        let promise: js_sys::Promise = batch.call1(db, &list).and_then(JsValue::dyn_into).map_err(js_err(OP))?;
        let results: Array = JsFuture::from(promise)
            .await
            .and_then(JsValue::dyn_into)
            .map_err(js_err(OP))?;
        results.iter().map(|r| result_set(&r)).collect()
    }

    async fn run_page(&self, stmt: &Statement) -> Result<(String, Meta), PortError> {
        const OP: &str = "d1.page";
        let result = self.all(stmt).await?;
        let results: Array = Reflect::get(&result, &JsValue::from_str("results"))
            .and_then(JsValue::dyn_into)
            .map_err(js_err(OP))?;
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
        let wire = utf8_of(&rows.flat(1).join(&WIRE_SEP.to_string())).map_err(js_err(OP))?;
        Ok((wire, meta_of(&result)))
    }
}

/// A JavaScript string as UTF-8 in wasm memory, in one allocation of exactly its size.
/// wasm-bindgen's own conversion reserves up to three bytes per character once it meets a
/// non-ASCII one, then shrinks: for a page, a passing block of three times its size that the
/// isolate's memory (which only grows) sometimes had to grow for.
fn utf8_of(s: &js_sys::JsString) -> Result<String, JsValue> {
    thread_local! {
        static ENCODER: Result<(JsValue, js_sys::Function), JsValue> = (|| {
            let class: js_sys::Function = Reflect::get(&js_sys::global(), &"TextEncoder".into())?.dyn_into()?;
            let encoder = Reflect::construct(&class, &Array::new())?;
            let encode = Reflect::get(&encoder, &"encode".into())?.dyn_into()?;
            Ok((encoder, encode))
        })();
    }
    let bytes: Uint8Array = ENCODER.with(|e| {
        let (encoder, encode) = e.as_ref().map_err(Clone::clone)?;
        encode.call1(encoder, s)?.dyn_into()
    })?;
    String::from_utf8(bytes.to_vec()).map_err(|e| JsValue::from_str(&format!("page is not UTF-8: {e}")))
}
