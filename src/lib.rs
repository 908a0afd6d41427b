//! D1 → R2 archiver: moves each old day of `traffic_events` out of D1 into one gzip JSON Lines
//! object in R2, then deletes exactly the archived rows. One Durable Object per date.
//!
//! The rooms:
//! - [`core`]: the pure state machine, formats and SQL text. No I/O.
//! - [`ports`]: the traits through which the engine reaches D1, R2, storage and the clock.
//! - [`engine`]: performs one step or one command through the ports; generic, runs natively.
//! - [`api`]: the admin HTTP surface's pure parts: auth, parameters, error bodies.
//! - `shell` (wasm only): the Worker — Durable Object, alarm, cron, HTTP routes, and the
//!   adapters from `worker` types to the ports.

pub mod api;
pub mod core;
pub mod engine;
pub mod ports;

#[cfg(target_arch = "wasm32")]
mod shell;
