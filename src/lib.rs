//! D1 → R2 archiver: moves each old day of `traffic_events` out of D1 into one gzip JSON Lines
//! object in R2, reads it back, and deletes exactly the rows equal to its lines. One Durable
//! Object per date.
//!
//! The rooms, each importing only from the rooms below it:
//! - [`core`]: the pure state machine, formats, SQL text and policies. No I/O, no clock.
//! - [`ports`]: the traits through which the engine reaches D1, R2, storage and the clock, and
//!   the one fault model that wraps any of them.
//! - [`engine`]: performs what the core decides, through the ports; generic, runs natively.
//! - [`api`]: the admin HTTP surface's pure parts: routes, parameters, auth, errors, the typed
//!   protocol between the Worker and the Durable Objects.
//! - `shell` (wasm only): the Worker — Durable Object, alarm, cron, HTTP handlers, and the
//!   adapters from `worker` types to the ports.

// A panic in the Worker stops a date mid-step; the library says why instead of unwrapping.
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

pub mod api;
pub mod core;
pub mod engine;
pub mod ports;

#[cfg(target_arch = "wasm32")]
mod shell;
