//! The Worker: entry points (HTTP, cron), the per-date Durable Object, and platform adapters.
//!
//! Not business logic: everything here loads, calls the engine or the core, and answers.

mod adapters;
mod admin;
mod bench;
mod cron;
mod faults;
mod object;

// The Durable Object class is exported to JavaScript by its `#[durable_object]` attribute.
#[allow(unused_imports)]
pub use object::DateArchiver;

use worker::{event, Context, Env, Request, Response, ScheduleContext, ScheduledEvent};

use crate::api::ApiError;
use crate::core::config::Config;

/// The config from the Worker's vars; a bad var is an error naming the var and the rule.
pub(crate) fn config(env: &Env) -> Result<Config, ApiError> {
    Config::from_vars(|name| env.var(name).ok().map(|v| v.to_string()))
        .map_err(|e| ApiError::new(500, "bad_config", e.to_string()))
}

pub(crate) fn json_response(status: u16, body: &str) -> worker::Result<Response> {
    let mut resp = Response::ok(body)?.with_status(status);
    resp.headers_mut()
        .set("content-type", "application/json; charset=utf-8")?;
    resp.headers_mut().set("cache-control", "no-store")?;
    Ok(resp)
}

#[event(fetch)]
async fn fetch(req: Request, env: Env, _ctx: Context) -> worker::Result<Response> {
    match admin::route(req, &env).await {
        Ok(resp) => Ok(resp),
        Err(e) => json_response(e.status, &e.body()),
    }
}

#[event(scheduled)]
async fn scheduled(_event: ScheduledEvent, env: Env, _ctx: ScheduleContext) {
    match cron::run(&env).await {
        Ok(poked) => worker::console_log!("cron: poked {} date(s): {}", poked.len(), poked.join(", ")),
        Err(e) => worker::console_error!("cron failed: {}", e.message),
    }
}
