//! Adapters from the Workers platform to the ports: D1, R2, Durable Object storage, the host.
//!
//! Not logic: no decision about a date is made here. A method is one platform call, or the few
//! a port's contract needs (the record saved only if its revision is unchanged, the carry
//! split into chunks for storage's value limit, a zero-length range read as a `head`), plus
//! the translation of values and errors between JavaScript and Rust.

mod d1;
mod host;
mod r2;
mod storage;

pub use d1::D1;
pub use host::WorkerHost;
pub use r2::R2;
pub use storage::DoStorage;

use worker::js_sys;
use worker::wasm_bindgen::{JsCast, JsValue};

use crate::ports::PortError;

fn js_message(e: &JsValue) -> String {
    if let Some(err) = e.dyn_ref::<js_sys::Error>() {
        return String::from(err.message());
    }
    e.as_string().unwrap_or_else(|| format!("{e:?}"))
}

fn worker_err(op: &'static str) -> impl Fn(worker::Error) -> PortError {
    move |e| PortError::of(op, e.to_string())
}

fn js_err(op: &'static str) -> impl Fn(JsValue) -> PortError {
    move |e| PortError::of(op, js_message(&e))
}
