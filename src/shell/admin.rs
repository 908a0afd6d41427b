//! The admin HTTP API. Every route needs `Authorization: Bearer <ADMIN_TOKEN>`.
//!
//! Not state: per-date work goes to the date's Durable Object; listings read `archive_metadata`.

use serde_json::{json, Value};
use worker::{Env, Method, Request, Response};

use crate::api::{authorize, date_param, flag_param, number_param, ApiError, MAX_QUERY_LEN};
use crate::core::date::{object_key, Day};
use crate::core::sql::{Param, Statement};
use crate::ports::{Database, Host};

use super::adapters::{WorkerHost, D1};
use super::{config, json_response};

type ApiResult = Result<Response, ApiError>;

fn internal(e: worker::Error) -> ApiError {
    ApiError::new(503, "unavailable", format!("{e}; retry"))
}

fn d1_error(e: crate::ports::PortError) -> ApiError {
    ApiError::new(503, "d1_unavailable", format!("{e}; retry"))
}

/// Calls the date's Durable Object; returns its status code and JSON body.
pub(super) async fn call_object(env: &Env, date: &str, op: &str) -> Result<(u16, String), ApiError> {
    let ns = env.durable_object("DATE_ARCHIVER").map_err(internal)?;
    let stub = ns.id_from_name(date).map_err(internal)?.get_stub().map_err(internal)?;
    let method = if op == "status" { Method::Get } else { Method::Post };
    let mut init = worker::RequestInit::new();
    init.with_method(method);
    let req = Request::new_with_init(&format!("https://date-archiver/{op}?date={date}"), &init).map_err(internal)?;
    let mut resp = stub.fetch_with_request(req).await.map_err(internal)?;
    let body = resp.text().await.map_err(internal)?;
    Ok((resp.status_code(), body))
}

/// Hands `op` for `day` to the date's Durable Object and relays its answer.
async fn forward(env: &Env, day: Day, op: &str) -> ApiResult {
    let (code, body) = call_object(env, &day.to_string(), op).await?;
    json_response(code, &body).map_err(internal)
}

fn ok_json(code: u16, v: &Value) -> ApiResult {
    json_response(code, &v.to_string()).map_err(internal)
}

fn method_not_allowed(allowed: &str) -> ApiError {
    ApiError::new(405, "method_not_allowed", format!("use {allowed} for this route"))
}

pub(super) async fn route(mut req: Request, env: &Env) -> ApiResult {
    let url = req
        .url()
        .map_err(|_| ApiError::new(400, "bad_url", "unparseable URL"))?;
    let path = url.path().to_string();
    if !path.starts_with("/admin/") {
        return Err(ApiError::new(
            404,
            "not_found",
            "this Worker only serves /admin/*; see README.md for the routes",
        ));
    }
    let token = env
        .secret("ADMIN_TOKEN")
        .map(|s| s.to_string())
        .or_else(|_| env.var("ADMIN_TOKEN").map(|s| s.to_string()))
        .ok();
    let header = req.headers().get("authorization").ok().flatten();
    authorize(token.as_deref(), header.as_deref())?;
    if url.query().map_or(0, str::len) > MAX_QUERY_LEN {
        return Err(ApiError::new(
            414,
            "query_too_long",
            format!("the query string is longer than {MAX_QUERY_LEN} bytes; send only date, force and generation"),
        ));
    }
    let q = |name: &str| url.query_pairs().find(|(k, _)| k == name).map(|(_, v)| v.into_owned());
    let cfg = config(env)?;
    let today = Day::from_unix_ms(WorkerHost.now_ms());
    let method = req.method();
    let allow = |allowed: &[Method]| -> Result<(), ApiError> {
        if allowed.contains(&method) {
            return Ok(());
        }
        let names: Vec<&str> = allowed.iter().map(AsRef::as_ref).collect();
        Err(method_not_allowed(&names.join(" or ")))
    };
    let date = || date_param(q("date").as_deref(), today);
    match path.as_str() {
        "/admin/trigger-archive" => {
            allow(&[Method::Post, Method::Get])?;
            let day = date()?;
            if !day.is_past_retention(today, cfg.retention_days) && !flag_param(q("force").as_deref()) {
                return Err(ApiError::new(
                    409,
                    "inside_retention",
                    format!(
                        "{day} is inside the {}-day retention window (archivable: {} and earlier); add force=1 to archive it anyway",
                        cfg.retention_days,
                        Day::last_archivable(today, cfg.retention_days)
                    ),
                ));
            }
            forward(env, day, "trigger").await
        }
        // Routes that only hand the date to its Durable Object.
        "/admin/trigger-cleanup" | "/admin/reset" | "/admin/archive-status" => {
            let (methods, op): (&[Method], &str) = match path.as_str() {
                "/admin/trigger-cleanup" => (&[Method::Post, Method::Get], "cleanup"),
                "/admin/reset" => (&[Method::Post], "reset"),
                _ => (&[Method::Get], "status"),
            };
            allow(methods)?;
            forward(env, date()?, op).await
        }
        "/admin/archive" => {
            allow(&[Method::Get])?;
            let day = date()?;
            let generation = number_param("generation", q("generation").as_deref())?;
            archive(env, &cfg.prefix, &day.to_string(), generation).await
        }
        "/admin/dates" => {
            allow(&[Method::Get])?;
            dates(env, &cfg, today).await
        }
        "/admin/bench/naive" if super::bench::enabled(env) => {
            let day = date()?;
            ok_json(200, &super::bench::naive(env, &day.to_string()).await?)
        }
        "/admin/test/upload" if super::faults::hooks_enabled(env) => {
            let (key, id, op) = (q("key").unwrap_or_default(), q("upload_id").unwrap_or_default(), q("op").unwrap_or_default());
            ok_json(200, &super::faults::upload_hook(env, &key, &id, &op).await?)
        }
        "/admin/test/list" if super::faults::hooks_enabled(env) => {
            ok_json(200, &super::faults::list_hook(env, &q("prefix").unwrap_or_default()).await?)
        }
        "/admin/test/sql" if super::faults::hooks_enabled(env) => {
            let sql = req.text().await.map_err(internal)?;
            ok_json(200, &super::faults::sql_hook(env, &sql).await?)
        }
        "/admin/health" => {
            allow(&[Method::Get])?;
            health(env, &cfg, today).await
        }
        _ => Err(ApiError::new(
            404,
            "not_found",
            "unknown route; routes: trigger-archive, archive-status, trigger-cleanup, reset, archive, dates, health (all under /admin/)",
        )),
    }
}

/// Streams a finished (or uploaded) generation's object.
async fn archive(env: &Env, prefix: &str, date: &str, generation: Option<u32>) -> ApiResult {
    let key = match generation {
        Some(g) => object_key(prefix, date, g),
        None => {
            let (_, body) = call_object(env, date, "status").await?;
            let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
            let st = &v["status"];
            match st["phase"].as_str() {
                Some("uploaded" | "cleaning" | "cleaned") => st["object_key"].as_str().unwrap_or_default().to_string(),
                _ => st["generations"]
                    .as_array()
                    .and_then(|g| g.last())
                    .and_then(|g| g["key"].as_str())
                    .unwrap_or_default()
                    .to_string(),
            }
        }
    };
    if key.is_empty() {
        return Err(ApiError::new(
            404,
            "no_archive",
            format!("{date} has no finished archive yet; see GET /admin/archive-status?date={date}"),
        ));
    }
    let bucket = env.bucket("ARCHIVE").map_err(internal)?;
    let Some(object) = bucket.get(&key).execute().await.map_err(internal)? else {
        return Err(ApiError::new(404, "no_archive", format!("object {key} does not exist")));
    };
    let size = object.size();
    let body = object
        .body()
        .ok_or_else(|| ApiError::new(503, "unavailable", "object has no body; retry"))?;
    // R2's body stream has a known length, so the runtime sends Content-Length, not chunks.
    let mut resp = Response::from_body(body.response_body().map_err(internal)?).map_err(internal)?;
    let h = resp.headers_mut();
    h.set("content-type", "application/gzip").map_err(internal)?;
    h.set("content-length", &size.to_string()).map_err(internal)?;
    let file = key.rsplit('/').next().unwrap_or("archive.jsonl.gz");
    h.set(
        "content-disposition",
        &format!("attachment; filename=\"{date}-{file}\""),
    )
    .map_err(internal)?;
    h.set("x-archive-key", &key).map_err(internal)?;
    Ok(resp)
}

async fn query(db: &D1, sql: &'static str, params: Vec<Param>) -> Result<Vec<Vec<Value>>, ApiError> {
    db.run(&Statement { sql, params })
        .await
        .map(|rs| rs.rows)
        .map_err(d1_error)
}

const LIST: &str = "SELECT date, status, generation, record_count, total_record_count, rows_deleted, d1_cleaned, file_size_bytes, r2_path, error_message, updated_at FROM archive_metadata ORDER BY date LIMIT 1000";

async fn dates(env: &Env, cfg: &crate::core::config::Config, today: Day) -> ApiResult {
    let db = D1(env.d1("DB").map_err(internal)?);
    let names = [
        "date",
        "phase",
        "generation",
        "record_count",
        "total_record_count",
        "rows_deleted",
        "d1_cleaned",
        "file_size_bytes",
        "r2_path",
        "error_message",
        "updated_at",
    ];
    let known: Vec<Value> = query(&db, LIST, vec![])
        .await?
        .into_iter()
        .map(|row| Value::Object(names.iter().map(|n| n.to_string()).zip(row).collect()))
        .collect();
    let pending: Vec<String> = super::cron::due_dates(&db, Day::last_archivable(today, cfg.retention_days), 1000, &[])
        .await?
        .into_iter()
        .filter(|d| !known.iter().any(|k| k["date"].as_str() == Some(d)))
        .collect();
    ok_json(
        200,
        &json!({ "dates": known, "pending": pending, "retention_days": cfg.retention_days }),
    )
}

async fn health(env: &Env, cfg: &crate::core::config::Config, today: Day) -> ApiResult {
    let db = D1(env.d1("DB").map_err(internal)?);
    let now = WorkerHost.now_ms();
    let mut reasons = Vec::new();
    for row in query(
        &db,
        "SELECT date, error_message FROM archive_metadata WHERE status = 'failed' ORDER BY date LIMIT 50",
        vec![],
    )
    .await?
    {
        reasons.push(format!(
            "{} failed: {}",
            row[0].as_str().unwrap_or("?"),
            row[1].as_str().unwrap_or("")
        ));
    }
    // A date is overdue when it is more than a day past the first day it could be archived.
    let overdue_before = Day::last_archivable(today, cfg.retention_days).minus_days(1);
    let oldest = query(
        &db,
        "SELECT min(event_date) FROM traffic_events WHERE event_date < ?1",
        vec![Param::Text(overdue_before.to_string())],
    )
    .await?;
    if let Some(d) = oldest.first().and_then(|r| r.first()).and_then(|v| v.as_str()) {
        reasons.push(format!("D1 still holds rows of {d}, more than a day past its due time; check the cron and GET /admin/archive-status?date={d}"));
    }
    query(
        &db,
        "INSERT INTO archiver_heartbeat (name, at) VALUES ('first_seen', ?1) ON CONFLICT (name) DO NOTHING",
        vec![Param::Int(now)],
    )
    .await?;
    let beats = query(&db, "SELECT name, at FROM archiver_heartbeat", vec![]).await?;
    let at = |name: &str| {
        beats
            .iter()
            .find(|r| r[0].as_str() == Some(name))
            .and_then(|r| r[1].as_i64())
    };
    let last_cron = at("cron");
    let since = last_cron.or(at("first_seen")).unwrap_or(now);
    if now - since > 2 * 86_400_000 {
        reasons.push(match last_cron {
            Some(_) => "the daily cron has not run for more than two days; check the Worker's [triggers] crons".to_string(),
            None => "the daily cron has never run in the two days since this Worker was first checked; check [triggers] crons".to_string(),
        });
    }
    let body = json!({
        "ok": reasons.is_empty(),
        "reasons": reasons,
        "last_cron_run": last_cron.map(crate::core::status::iso),
        "today": today.to_string(),
    });
    ok_json(if reasons.is_empty() { 200 } else { 503 }, &body)
}
