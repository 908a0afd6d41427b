//! Durable Object storage: the record and the carry, saved together in one atomic write, only if
//! the saved revision is the expected one.

use serde_json::Value;
use worker::js_sys::{self, Object, Reflect, Uint8Array};
use worker::wasm_bindgen::{JsCast, JsValue};
use worker::Storage;

use crate::core::config::{DO_MAX_KEYS_PER_PUT, DO_VALUE_CHUNK};
use crate::ports::{Durable, FailureKind, PortError};

use super::worker_err;

/// Keys: `record` (the record's JSON), `carry.count`, and `carry.0..n` (chunks of at most
/// `DO_VALUE_CHUNK` bytes, under the 2 MB value limit). One `put` of all of them is atomic.
/// Apart: `step.begun`, the revision a step last began at.
pub struct DoStorage(pub Storage);

const RECORD: &str = "record";
const CARRY_COUNT: &str = "carry.count";
/// The record's revision when a step last began.
const STEP_BEGUN: &str = "step.begun";

fn chunk_key(i: usize) -> String {
    format!("carry.{i}")
}

thread_local! {
    /// The last saved carry's buffer, kept for the next load in this isolate (see
    /// [`Durable::recycle`]). Dates that run at once may find it taken: they allocate their own.
    static SPARE: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// An empty buffer of at least `capacity` bytes: the spare one if there is one.
fn buffer(capacity: usize) -> Vec<u8> {
    let mut buf = SPARE.with(|s| std::mem::take(&mut *s.borrow_mut()));
    buf.clear();
    buf.reserve_exact(capacity);
    buf
}

impl DoStorage {
    async fn get_raw(&self, keys: Vec<String>) -> Result<js_sys::Map, PortError> {
        self.0.get_multiple(keys).await.map_err(worker_err("do.load"))
    }

    async fn carry(&self, count: usize, capacity: usize) -> Result<Vec<u8>, PortError> {
        let mut carry = buffer(capacity.max(count * DO_VALUE_CHUNK));
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
        Ok(carry)
    }
}

impl Durable for DoStorage {
    async fn load(&self, carry_capacity: Option<usize>) -> Result<Option<(String, Vec<u8>)>, PortError> {
        let map = self.get_raw(vec![RECORD.into(), CARRY_COUNT.into()]).await?;
        let Some(json) = map.get(&RECORD.into()).as_string() else {
            return Ok(None);
        };
        let count = map.get(&CARRY_COUNT.into()).as_f64().unwrap_or(0.0) as usize;
        match carry_capacity {
            Some(capacity) if count > 0 => Ok(Some((json, self.carry(count, capacity).await?))),
            Some(capacity) if SPARE.with(|s| s.borrow().capacity() > 0) => Ok(Some((json, buffer(capacity)))),
            _ => Ok(Some((json, Vec::new()))),
        }
    }

    async fn step_begun(&self) -> Result<Option<u64>, PortError> {
        let map = self.get_raw(vec![STEP_BEGUN.into()]).await?;
        Ok(map.get(&STEP_BEGUN.into()).as_f64().map(|r| r as u64))
    }

    async fn begin_step(&self, revision: u64) -> Result<(), PortError> {
        let err = worker_err("do.begin_step");
        self.0.put(STEP_BEGUN, revision as f64).await.map_err(&err)?;
        // On disk before the step goes on: the isolate may die in it (output gates would hold
        // the step's D1 and R2 calls for it too; this does not depend on that).
        self.0.sync().await.map_err(err)
    }

    fn recycle(&self, carry: Vec<u8>) {
        SPARE.with(|s| {
            let mut spare = s.borrow_mut();
            if carry.capacity() > spare.capacity() {
                *spare = carry;
            }
        });
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
