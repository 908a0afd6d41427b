//! The Durable Object of one date: runs one engine step per alarm and takes commands over fetch.
//!
//! Not business logic: it loads config, calls the engine, and sets the alarm the record asks for.
//! Internal protocol (from the Worker only): `POST /trigger|cleanup|reset?date=D`, `GET /status?date=D`.

use worker::{durable_object, DurableObject, Env, Request, Response, Result, ScheduledTime, State};

use crate::api::ApiError;
use crate::core::machine::{Command, Reply};
use crate::engine::{EngineError, Ports};
use crate::ports::Host;

use super::adapters::{DoStorage, WorkerHost, D1, R2};
use super::faults::{FaultPlan, FaultyDb, FaultyR2};
use super::{config, json_response};

/// Storage key holding the object's date, for the alarm (which gets no request).
const DATE_KEY: &str = "date";

#[durable_object]
pub struct DateArchiver {
    state: State,
    env: Env,
}

impl DurableObject for DateArchiver {
    fn new(state: State, env: Env) -> Self {
        DateArchiver { state, env }
    }

    async fn fetch(&self, req: Request) -> Result<Response> {
        let url = req.url()?;
        let date = url
            .query_pairs()
            .find(|(k, _)| k == "date")
            .map(|(_, v)| v.into_owned())
            .unwrap_or_default();
        let op = url.path().trim_start_matches('/').to_string();
        match self.handle(&op, &date).await {
            Ok(resp) => Ok(resp),
            Err(e) => json_response(e.status, &e.body()),
        }
    }

    async fn alarm(&self) -> Result<Response> {
        let storage = self.state.storage();
        let Some(date) = storage.get::<String>(DATE_KEY).await? else {
            return Response::ok("no date");
        };
        let cfg = config(&self.env).map_err(|e| worker::Error::RustError(e.message))?;
        let plan = FaultPlan::from_env(&self.env);
        let db = FaultyDb {
            inner: D1(self.env.d1("DB")?),
            plan,
        };
        let r2 = FaultyR2 {
            inner: R2(self.env.bucket("ARCHIVE")?),
            plan,
        };
        let store = DoStorage(self.state.storage());
        let ports = Ports {
            db: &db,
            r2: &r2,
            store: &store,
            host: &WorkerHost,
        };
        // An engine error means durable storage failed: throw, and the platform retries the
        // alarm with backoff. Step failures are not errors here; the record handles them.
        let memory_before = WorkerHost.memory_bytes();
        let report = ports
            .run_step(&date, &cfg)
            .await
            .map_err(|e| worker::Error::RustError(e.to_string()))?;
        worker::console_debug!(
            "{date}: {} -> {} (wasm memory {} -> {} bytes)",
            report.action,
            report.phase,
            memory_before,
            WorkerHost.memory_bytes()
        );
        if let Some(err) = &report.error {
            worker::console_warn!("{date}: {} step failed: {err}", report.action);
        }
        self.arm(report.wake_at_ms).await?;
        // A date that just finished hands over to the next due ones (best effort: the daily
        // cron does the same).
        if report.action == "final-check" && report.phase == "cleaned" {
            if let Err(e) = super::cron::hand_over(&self.env, Some(&date)).await {
                worker::console_warn!("{date}: hand-over failed: {}", e.message);
            }
        }
        Response::ok(report.phase)
    }
}

impl DateArchiver {
    async fn handle(&self, op: &str, date: &str) -> std::result::Result<Response, ApiError> {
        let internal = |e: worker::Error| ApiError::new(503, "storage", format!("{e}; retry"));
        let cfg = config(&self.env)?;
        let storage = self.state.storage();
        if storage.get::<String>(DATE_KEY).await.map_err(internal)?.as_deref() != Some(date) {
            storage.put(DATE_KEY, date).await.map_err(internal)?;
        }
        let plan = FaultPlan::from_env(&self.env);
        let db = FaultyDb {
            inner: D1(self.env.d1("DB").map_err(internal)?),
            plan,
        };
        let r2 = FaultyR2 {
            inner: R2(self.env.bucket("ARCHIVE").map_err(internal)?),
            plan,
        };
        let store = DoStorage(storage);
        let ports = Ports {
            db: &db,
            r2: &r2,
            store: &store,
            host: &WorkerHost,
        };
        let cmd = match op {
            "status" => {
                let (status, _) = ports.status(date, &cfg).await.map_err(engine_error)?;
                let body = serde_json::json!({ "status": status }).to_string();
                return json_response(200, &body).map_err(internal);
            }
            "trigger" => Command::Trigger,
            "cleanup" => Command::Cleanup,
            "reset" => Command::Reset,
            other => return Err(ApiError::new(404, "not_found", format!("unknown operation {other:?}"))),
        };
        let report = ports.run_command(date, cmd, &cfg).await.map_err(engine_error)?;
        self.arm(report.wake_at_ms).await.map_err(internal)?;
        let code = match report.reply {
            Reply::Started | Reply::Resumed | Reply::AlreadyRunning => 202,
            Reply::AwaitingCleanup | Reply::AlreadyCleaned | Reply::WasReset => 200,
        };
        let body = serde_json::json!({ "result": reply_name(&report.reply), "status": report.status }).to_string();
        json_response(code, &body).map_err(internal)
    }

    /// Makes the object's alarm match what the record wants. An alarm that is already due no
    /// later than wanted is kept (a step in flight will re-arm anyway).
    async fn arm(&self, wake_at_ms: Option<i64>) -> Result<()> {
        let storage = self.state.storage();
        let current = storage.get_alarm().await?;
        match (wake_at_ms, current) {
            (Some(at), Some(cur)) if cur <= at => Ok(()),
            (Some(at), _) => {
                let when = worker::js_sys::Date::new(&worker::wasm_bindgen::JsValue::from_f64(at as f64));
                storage.set_alarm(ScheduledTime::new(when)).await
            }
            (None, Some(_)) => storage.delete_alarm().await,
            (None, None) => Ok(()),
        }
    }
}

fn reply_name(r: &Reply) -> &'static str {
    match r {
        Reply::Started => "started",
        Reply::Resumed => "resumed",
        Reply::AlreadyRunning => "already_running",
        Reply::AwaitingCleanup => "awaiting_cleanup",
        Reply::AlreadyCleaned => "already_cleaned",
        Reply::WasReset => "reset",
    }
}

fn engine_error(e: EngineError) -> ApiError {
    match e {
        EngineError::Refused(r) => ApiError::new(409, "conflict", r.reason),
        EngineError::Corrupt { .. } => ApiError::new(500, "corrupt_state", e.to_string()),
        EngineError::Storage { .. } | EngineError::Effect(_) | EngineError::Metadata(_) => {
            ApiError::new(503, "unavailable", e.to_string())
        }
    }
}
