//! The Worker: entry points (HTTP, cron), the per-date Durable Object, route handlers, and the
//! platform adapters.
//!
//! Not business logic: everything here translates between `worker` types and the rooms below —
//! requests into typed routes and commands, platform objects into ports, results into responses.

mod adapters;
mod cron;
mod handlers;
mod hooks;
mod object;

use std::rc::Rc;

use serde::Serialize;
use worker::wasm_bindgen::JsValue;
use worker::{event, js_sys, Context, Env, Request, Response, ScheduleContext, ScheduledEvent};

// The Durable Object class is exported to JavaScript by its `#[durable_object]` attribute.
#[allow(unused_imports)]
pub use object::DateArchiver;

use crate::api::ApiError;
use crate::core::config::Config;
use crate::engine::Ports;
use crate::ports::faulty::{Faults, Faulty};
use crate::ports::Host;

use adapters::{DoStorage, WorkerHost, D1, R2};

/// The config from the Worker's vars; a bad var is an error naming the var and the rule.
pub(crate) fn config(env: &Env) -> Result<Config, ApiError> {
    Ok(Config::from_vars(|name| var_text(env, name))?)
}

/// A var as the text it was written as, `None` only when it is not set. wrangler hands a var
/// written without quotes (`RETENTION_DAYS = 30`, `AUTO_CLEANUP = false`) over as a number or
/// a boolean, which `Env::var` refuses: taken as missing, it would silently be the default.
pub(crate) fn var_text(env: &Env, name: &str) -> Option<String> {
    let value = js_sys::Reflect::get(env, &JsValue::from_str(name)).ok()?;
    if value.is_undefined() {
        return None;
    }
    value
        .as_string()
        .or_else(|| value.as_bool().map(|b| b.to_string()))
        .or_else(|| value.as_f64().map(|n| n.to_string()))
        // Anything else (an array, a table) as its JSON, which no rule accepts: the error names it.
        .or_else(|| js_sys::JSON::stringify(&value).ok().map(String::from))
}

/// A JSON response with `status`.
pub(crate) fn json(status: u16, body: &impl Serialize) -> Result<Response, ApiError> {
    let text = serde_json::to_string(body).map_err(ApiError::unavailable)?;
    let mut resp = Response::ok(text).map_err(ApiError::unavailable)?.with_status(status);
    let h = resp.headers_mut();
    h.set("content-type", "application/json; charset=utf-8")
        .map_err(ApiError::unavailable)?;
    h.set("cache-control", "no-store").map_err(ApiError::unavailable)?;
    Ok(resp)
}

thread_local! {
    /// The fault plan of this isolate (calls are counted per isolate since it started).
    static FAULTS: std::cell::OnceCell<Rc<Faults>> = const { std::cell::OnceCell::new() };
}

/// This isolate's fault plan: empty unless `TEST_HOOKS` and `FAULT_INJECT` are set.
pub(crate) fn faults(cfg: &Config) -> Rc<Faults> {
    FAULTS.with(|f| f.get_or_init(|| Faults::parse(cfg.faults())).clone())
}

pub(crate) type WorkerPorts = (Faulty<D1>, Faulty<R2>, Faulty<DoStorage>);

/// The platform's D1 and R2 of `env` (and `storage`), each behind the fault plan.
pub(crate) fn platform(env: &Env, storage: worker::Storage, cfg: &Config) -> Result<WorkerPorts, ApiError> {
    let faults = faults(cfg);
    let db = env.d1("DB").map_err(binding("DB"))?;
    let bucket = env.bucket("ARCHIVE").map_err(binding("ARCHIVE"))?;
    Ok((
        Faulty::new(D1(db), faults.clone()),
        Faulty::new(R2(bucket), faults.clone()),
        Faulty::new(DoStorage(storage), faults),
    ))
}

/// The engine's ports over `p`.
pub(crate) fn ports(p: &WorkerPorts) -> Ports<'_, Faulty<D1>, Faulty<R2>, Faulty<DoStorage>, WorkerHost> {
    Ports {
        db: &p.0,
        r2: &p.1,
        store: &p.2,
        host: &WorkerHost,
    }
}

/// A missing binding: the Worker's configuration is wrong.
pub(crate) fn binding(name: &'static str) -> impl Fn(worker::Error) -> ApiError {
    move |e| {
        ApiError::new(
            crate::api::ErrorKind::BadConfig,
            format!("binding {name} is missing ({e}); check wrangler.toml and redeploy"),
        )
    }
}

pub(crate) fn now_ms() -> i64 {
    WorkerHost.now_ms()
}

#[event(fetch)]
async fn fetch(req: Request, env: Env, _ctx: Context) -> worker::Result<Response> {
    match handlers::handle(req, &env).await {
        Ok(resp) => Ok(resp),
        Err(e) => {
            let mut resp = json(e.status(), &e).or_else(|_| Response::error(e.message.clone(), e.status()))?;
            if let Some(methods) = &e.allow {
                resp.headers_mut().set("allow", methods)?;
            }
            Ok(resp)
        }
    }
}

#[event(scheduled)]
async fn scheduled(_event: ScheduledEvent, env: Env, _ctx: ScheduleContext) {
    match cron::run(&env).await {
        Ok(poked) => WorkerHost
            .log(&serde_json::json!({ "archiver": "d1-archiver", "action": "cron", "poked": poked }).to_string()),
        Err(e) => WorkerHost
            .log(&serde_json::json!({ "archiver": "d1-archiver", "action": "cron", "error": e.message }).to_string()),
    }
}
