//! The daily cron and the hand-over between dates: which Durable Objects to poke.
//!
//! Due: older than the retention window with rows still in `traffic_events`. The oldest `MAX_RUNNING_DATES` due dates that are not `failed` are poked
//! (running ones included: a trigger is idempotent), so only that many run at once and share
//! an isolate's memory; each date that finishes pokes again, so a backlog drains without
//! waiting for the next day. The daily cron also resumes `failed` dates (`CRON_MAX_DATES`).

use worker::Env;

use crate::api::ApiError;
use crate::core::date::Day;
use crate::core::sql::{Param, Statement};
use crate::ports::{Database, Host};

use super::adapters::{WorkerHost, D1};
use super::config;

/// The next date after `?1` and no later than `?2` with rows: one index seek per date.
const NEXT_DATE: &str = "SELECT min(event_date) AS d FROM traffic_events WHERE event_date > ?1 AND event_date <= ?2";
const FAILED_DATES: &str = "SELECT date FROM archive_metadata WHERE status = 'failed' ORDER BY date LIMIT ?1";
const HEARTBEAT: &str =
    "INSERT INTO archiver_heartbeat (name, at) VALUES ('cron', ?1) ON CONFLICT (name) DO UPDATE SET at = excluded.at";

fn d1_error(e: crate::ports::PortError) -> ApiError {
    ApiError::new(503, "d1_unavailable", format!("{e}; retry"))
}

/// Dates past retention that still have rows, oldest first, at most `limit`, skipping `skip`.
pub(super) async fn due_dates(db: &D1, last: Day, limit: u32, skip: &[String]) -> Result<Vec<String>, ApiError> {
    let mut dates = Vec::new();
    let mut after = String::new();
    while dates.len() < limit as usize {
        let stmt = Statement {
            sql: NEXT_DATE,
            params: vec![Param::Text(after.clone()), Param::Text(last.to_string())],
        };
        let rs = db.run(&stmt).await.map_err(d1_error)?;
        let Some(next) = rs
            .rows
            .first()
            .and_then(|r| r.first())
            .and_then(|v| v.as_str())
            .map(str::to_string)
        else {
            break;
        };
        after.clone_from(&next);
        // Rows with a malformed event_date cannot be archived by date; skip them.
        if Day::parse_any(&next).is_ok() && !skip.contains(&next) {
            dates.push(next);
        }
    }
    Ok(dates)
}

async fn failed_dates(db: &D1, limit: u32) -> Result<Vec<String>, ApiError> {
    let rs = db
        .run(&Statement {
            sql: FAILED_DATES,
            params: vec![Param::Int(i64::from(limit))],
        })
        .await
        .map_err(d1_error)?;
    Ok(rs
        .rows
        .iter()
        .filter_map(|r| r.first()?.as_str().map(str::to_string))
        .collect())
}

async fn poke(env: &Env, dates: &[String]) -> Vec<String> {
    let mut poked = Vec::new();
    for date in dates {
        match super::admin::call_object(env, date, "trigger").await {
            Ok((code, _)) if code < 400 => poked.push(date.clone()),
            Ok((code, body)) => worker::console_warn!("poke {date}: {code} {body}"),
            Err(e) => worker::console_warn!("poke {date}: {}", e.message),
        }
    }
    poked
}

/// Pokes the oldest `MAX_RUNNING_DATES` due dates that are not `failed` and not `finished`
/// (a date that just finished leaves its late rows to the next daily cron, so a trickle of late
/// rows cannot chain generation after generation).
pub(super) async fn hand_over(env: &Env, finished: Option<&str>) -> Result<Vec<String>, ApiError> {
    let cfg = config(env)?;
    let db = D1(env.d1("DB").map_err(|e| ApiError::new(500, "binding", e.to_string()))?);
    let today = Day::from_unix_ms(WorkerHost.now_ms());
    let mut skip = failed_dates(&db, 1000).await?;
    skip.extend(finished.map(str::to_string));
    let due = due_dates(
        &db,
        Day::last_archivable(today, cfg.retention_days),
        cfg.max_running_dates,
        &skip,
    )
    .await?;
    Ok(poke(env, &due).await)
}

/// The daily cron: hand over, resume failed dates, and leave a heartbeat for /admin/health.
pub(super) async fn run(env: &Env) -> Result<Vec<String>, ApiError> {
    let cfg = config(env)?;
    let db = D1(env.d1("DB").map_err(|e| ApiError::new(500, "binding", e.to_string()))?);
    let now = WorkerHost.now_ms();
    let mut poked = hand_over(env, None).await?;
    let failed = failed_dates(&db, cfg.cron_max_dates).await?;
    poked.extend(poke(env, &failed).await);
    db.run(&Statement {
        sql: HEARTBEAT,
        params: vec![Param::Int(now)],
    })
    .await
    .map_err(d1_error)?;
    Ok(poked)
}
