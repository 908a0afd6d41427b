//! The clock, the memory gauge and the log of a Worker isolate.

use worker::js_sys;

use crate::ports::Host;

pub struct WorkerHost;

impl Host for WorkerHost {
    fn now_ms(&self) -> i64 {
        js_sys::Date::now() as i64
    }

    fn memory_bytes(&self) -> u64 {
        // Linear memory only grows, so its size now is the isolate's peak so far.
        core::arch::wasm32::memory_size(0) as u64 * 65_536
    }

    fn log(&self, line: &str) {
        // One JSON object per line: `wrangler tail --format json` and Workers Logs index it.
        worker::console_log!("{line}");
    }
}
