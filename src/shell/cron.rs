//! The daily cron: pokes the Durable Object of every date that is due, at most `CRON_MAX_DATES`.
//!
//! Due: older than the retention window with rows still in `traffic_events`, or `failed`.
//! Poking is a trigger, which is idempotent: a running or finished date does not change.

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
const HEARTBEAT: &str = "INSERT INTO archiver_heartbeat (name, at) VALUES ('cron', ?1) ON CONFLICT (name) DO UPDATE SET at = excluded.at";

fn d1_error(e: crate::ports::PortError) -> ApiError {
    ApiError::new(503, "d1_unavailable", format!("{e}; retry"))
}

/// Dates past retention that still have rows, oldest first, at most `limit`.
pub(super) async fn due_dates(db: &D1, last: Day, limit: u32) -> Result<Vec<String>, ApiError> {
    let mut dates = Vec::new();
    let mut after = String::new();
    while dates.len() < limit as usize {
        let stmt = Statement { sql: NEXT_DATE, params: vec![Param::Text(after.clone()), Param::Text(last.to_string())] };
        let rs = db.run(&stmt).await.map_err(d1_error)?;
        let Some(next) = rs.rows.first().and_then(|r| r.first()).and_then(|v| v.as_str()).map(str::to_string) else { break };
        after.clone_from(&next);
        // Rows with a malformed event_date cannot be archived by date; skip them.
        if Day::parse_any(&next).is_ok() {
            dates.push(next);
        }
    }
    Ok(dates)
}

pub(super) async fn run(env: &Env) -> Result<Vec<String>, ApiError> {
    let cfg = config(env)?;
    let db = D1(env.d1("DB").map_err(|e| ApiError::new(500, "binding", e.to_string()))?);
    let now = WorkerHost.now_ms();
    let today = Day::from_unix_ms(now);
    let mut dates = due_dates(&db, Day::last_archivable(today, cfg.retention_days), cfg.cron_max_dates).await?;
    let failed = db
        .run(&Statement { sql: FAILED_DATES, params: vec![Param::Int(i64::from(cfg.cron_max_dates))] })
        .await
        .map_err(d1_error)?;
    for row in failed.rows {
        if let Some(d) = row.first().and_then(|v| v.as_str()) {
            if !dates.iter().any(|x| x == d) && dates.len() < cfg.cron_max_dates as usize {
                dates.push(d.to_string());
            }
        }
    }
    let mut poked = Vec::new();
    for date in dates {
        match super::admin::call_object(env, &date, "trigger").await {
            Ok((code, _)) if code < 400 => poked.push(date),
            Ok((code, body)) => worker::console_warn!("cron: {date}: {code} {body}"),
            Err(e) => worker::console_warn!("cron: {date}: {}", e.message),
        }
    }
    db.run(&Statement { sql: HEARTBEAT, params: vec![Param::Int(now)] }).await.map_err(d1_error)?;
    Ok(poked)
}
