//! The Durable Object of one date: runs one engine step per alarm, and answers the Worker's
//! typed requests ([`DoRequest`]) with typed replies ([`DoResult`]).
//!
//! Not business logic: it loads config, calls the engine, and sets the alarm the record asks for.

use worker::{durable_object, DurableObject, Env, Request, Response, Result, ScheduledTime, State};

use crate::api::protocol::{status_reply, DoReply, DoRequest, DoResult};
use crate::api::{ApiError, ErrorKind};
use crate::core::status::ArchiveObject;
use crate::ports::Host;

use super::adapters::WorkerHost;
use super::{config, platform, ports};

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

    async fn fetch(&self, mut req: Request) -> Result<Response> {
        let result: DoResult = match req.json::<DoRequest>().await {
            Ok(ask) => self.answer(ask).await,
            Err(e) => Err(ApiError::new(
                ErrorKind::BadParameter,
                format!("bad request to the date's object: {e}"),
            )),
        };
        Response::from_json(&result)
    }

    async fn alarm(&self) -> Result<Response> {
        let storage = self.state.storage();
        let Some(date) = storage.get::<String>(DATE_KEY).await? else {
            return Response::ok("no date");
        };
        let rust = |e: ApiError| worker::Error::RustError(e.message);
        let cfg = config(&self.env).map_err(rust)?;
        let p = platform(&self.env, storage, &cfg).map_err(rust)?;
        // An engine error means durable storage failed: throw, and the platform retries the
        // alarm with backoff. Step failures are not errors here; the record handles them.
        let report = ports(&p)
            .run_alarm(&date, &cfg)
            .await
            .map_err(|e| worker::Error::RustError(e.to_string()))?;
        self.arm(report.wake_at_ms).await?;
        if report.hand_over {
            self.hand_over(&date).await;
        }
        Response::ok(report.phase)
    }
}

impl DateArchiver {
    async fn answer(&self, ask: DoRequest) -> DoResult {
        let storage = self.state.storage();
        let date = ask.date().to_string();
        if storage.get::<String>(DATE_KEY).await.ok().flatten().as_deref() != Some(&date) {
            storage.put(DATE_KEY, &date).await.map_err(ApiError::unavailable)?;
        }
        let cfg = config(&self.env)?;
        let p = platform(&self.env, storage, &cfg)?;
        let engine = ports(&p);
        match ask {
            DoRequest::Command { command, .. } => {
                let report = match engine.run_command(&date, command, &cfg).await {
                    Ok(report) => report,
                    Err(e) => {
                        // A command refused (or failed) changes nothing, but the alarm the
                        // record wants is set: a crash between a save and its alarm must not
                        // leave the date asleep while the commands sent to it (the cron's) are
                        // refused (a review).
                        if let Ok(rec) = engine.record(&date, &cfg).await {
                            self.arm(rec.wake_at_ms).await.map_err(ApiError::unavailable)?;
                        }
                        return Err(e.into());
                    }
                };
                self.arm(report.wake_at_ms).await.map_err(ApiError::unavailable)?;
                if report.hand_over {
                    self.hand_over(&date).await;
                }
                Ok(DoReply::Command {
                    result: report.reply,
                    status: Box::new(report.status),
                })
            }
            DoRequest::Status { .. } => Ok(status_reply(&engine.record(&date, &cfg).await?)),
            DoRequest::Objects { .. } => Ok(DoReply::Objects {
                objects: ArchiveObject::of(&engine.record(&date, &cfg).await?),
            }),
        }
    }

    /// The date gave up its running slot: due dates start into it. Best effort: the daily cron
    /// does the same.
    async fn hand_over(&self, date: &str) {
        if let Err(e) = super::cron::hand_over(&self.env, date).await {
            WorkerHost.log(&serde_json::json!({ "archiver": "d1-archiver", "date": date, "action": "hand-over", "error": e.message }).to_string());
        }
    }

    /// Makes the object's alarm match what the record wants. An alarm that is already due no
    /// later than wanted is kept (a step in flight re-arms anyway).
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
