//! The fleet of dates, read from D1: which dates are due, where each stands, what the cron
//! should poke, whether the archiver is healthy, and the listing of `/admin/dates`.
//!
//! Not policy: the decisions are [`crate::core::policy`]'s; this module only reads D1 for them.
//! Generic over the database port, so the cron's and health's rules are tested natively.

use serde::Serialize;
use serde_json::Value;

use crate::core::config::Config;
use crate::core::date::Day;
use crate::core::policy::{self, DateScan, DateState, Health, HealthInputs, PokeReason};
use crate::core::sql::{self, decode_rows};
use crate::ports::{Database, PortError};

fn bad(e: sql::BadResult) -> PortError {
    PortError::transient("d1", e.to_string())
}

/// Dates up to `last` that still have rows in D1, oldest first, at most `limit`.
pub async fn due_dates<D: Database>(db: &D, last: Day, limit: usize) -> Result<Vec<String>, PortError> {
    Ok(scan_dates(db, Some(last), limit).await?.dates)
}

/// Dates up to `last` (all: `None`) that have rows, at most `limit`, and the values met that
/// are no date (with `None`, every text value is read for them): one D1 query for every
/// [`DATES_A_QUERY`] values read ([`sql::NEXT_DATES`], [`sql::NEXT_VALUES`]).
pub async fn scan_dates<D: Database>(db: &D, last: Option<Day>, limit: usize) -> Result<DateScan, PortError> {
    let mut scan = DateScan::default();
    // Over every value (health), the scan goes on past the dates' limit for values that are no
    // date, which may sort after every date (review).
    let odd_too = last.is_none();
    let last = last.map(|d| d.to_string());
    let mut after: Vec<u8> = Vec::new();
    while scan.dates.len() <= limit || (odd_too && scan.not_dates.len() <= policy::NOT_DATES_SHOWN) {
        let rs = db
            .run(&sql::next_dates(&after, last.as_deref(), DATES_A_QUERY as u32))
            .await?;
        let read: Vec<(String, String)> = decode_rows("next_dates", &rs).map_err(bad)?;
        let Some((_, newest)) = read.last() else {
            break;
        };
        let newest = hex::decode(newest).map_err(|e| PortError::transient("d1", format!("next_dates: {e}")))?;
        // The statement only goes forward; should it ever not, stop rather than ask again.
        if newest <= after {
            return Err(PortError::transient(
                "d1",
                format!(
                    "the scan of event_date values did not get past {:?}",
                    String::from_utf8_lossy(&after)
                ),
            ));
        }
        after = newest;
        let more = read.len() == DATES_A_QUERY;
        for (value, _) in read {
            if Day::parse_any(&value).is_ok() {
                if scan.dates.len() <= limit {
                    scan.dates.push(value);
                }
            } else if scan.not_dates.len() <= policy::NOT_DATES_SHOWN {
                scan.not_dates.push(value);
            }
        }
        if !more {
            break;
        }
    }
    scan.cut = scan.dates.len() > limit;
    scan.dates.truncate(limit);
    Ok(scan)
}

/// How many values one query of [`scan_dates`] reads at most.
pub const DATES_A_QUERY: usize = 500;

/// Every date `archive_metadata` knows, with its phase.
pub async fn date_states<D: Database>(db: &D) -> Result<Vec<DateState>, PortError> {
    let rs = db.run(&sql::date_states()).await?;
    type Row = (String, String, Option<i64>, Option<u64>, Option<i64>);
    let rows: Vec<Row> = decode_rows("date_states", &rs).map_err(bad)?;
    Ok(rows
        .into_iter()
        .map(|(date, status, hold_until, rows_pending, updated_at)| DateState {
            date,
            status,
            hold_until,
            rows_pending,
            updated_at,
        })
        .collect())
}

/// What the cron (or a date that just finished) should poke, and why.
pub async fn cron_plan<D: Database>(
    db: &D,
    cfg: &Config,
    now_ms: i64,
    finished: Option<&str>,
) -> Result<Vec<(String, PokeReason)>, PortError> {
    let today = Day::from_unix_ms(now_ms);
    let states = date_states(db).await?;
    let last = Day::last_archivable(today, cfg.retention_days);
    // Enough due dates to fill every slot even if many of the oldest wait on an operator.
    let due = due_dates(db, last, states.len() + cfg.max_running_dates as usize).await?;
    Ok(policy::dates_to_poke(&due, &states, cfg, finished, now_ms))
}

/// The cron's heartbeat.
pub async fn beat<D: Database>(db: &D, now_ms: i64) -> Result<(), PortError> {
    db.run(&sql::beat("cron", now_ms)).await.map(|_| ())
}

/// `/admin/health`.
pub async fn health<D: Database>(db: &D, cfg: &Config, now_ms: i64) -> Result<Health, PortError> {
    let failed: Vec<(String, Option<String>)> = decode_rows(
        "failed_dates",
        &db.run(&sql::failed_dates(policy::OVERDUE_SHOWN as u32)).await?,
    )
    .map_err(bad)?;
    let last = policy::last_overdue(Day::from_unix_ms(now_ms), cfg);
    let states = date_states(db).await?;
    // Every value, not only those up to `last`: values that are no date sort anywhere.
    let mut overdue = scan_dates(db, None, states.len() + policy::OVERDUE_READ).await?;
    let odd: Vec<(i64, i64)> = decode_rows("odd_event_dates", &db.run(&sql::odd_event_dates()).await?).map_err(bad)?;
    if let Some((empty, not_text)) = odd.first() {
        let named = [(*empty, ""), (*not_text, "(a BLOB or a number)")];
        for (_, name) in named.iter().rev().filter(|(found, _)| *found == 1) {
            overdue.not_dates.insert(0, name.to_string());
        }
        overdue.not_dates.truncate(policy::NOT_DATES_SHOWN + 1);
    }
    let last = last.to_string();
    // More dates than read matter only if the last one read is overdue (review).
    overdue.cut &= overdue.dates.last().is_some_and(|d| *d <= last);
    overdue.dates.retain(|d| *d <= last);
    db.run(&sql::first_seen(now_ms)).await?;
    let beats: Vec<(String, i64)> = decode_rows("beats", &db.run(&sql::beats()).await?).map_err(bad)?;
    let at = |name: &str| beats.iter().find(|(n, _)| n == name).map(|(_, at)| *at);
    let inputs = HealthInputs {
        failed: failed.into_iter().map(|(d, e)| (d, e.unwrap_or_default())).collect(),
        overdue,
        states,
        last_cron_ms: at("cron"),
        first_seen_ms: at("first_seen"),
    };
    Ok(policy::health(&inputs, now_ms, cfg))
}

/// The body of `/admin/dates`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Listing {
    pub dates: Vec<Value>,
    /// Due dates nothing has started yet.
    pub pending: Vec<String>,
    pub retention_days: u32,
}

/// Every known date (a row of `archive_metadata` each), and the due dates not started yet.
pub async fn listing<D: Database>(db: &D, cfg: &Config, now_ms: i64) -> Result<Listing, PortError> {
    let rs = db.run(&sql::list_dates()).await?;
    let names = [
        "date",
        "phase",
        "generation",
        "record_count",
        "total_record_count",
        "rows_deleted",
        "rows_pending",
        "rows_restored",
        "d1_cleaned",
        "file_size_bytes",
        "r2_path",
        "error_message",
        "hold_until",
        "next_step_at",
        "updated_at",
    ];
    let dates: Vec<Value> = rs
        .rows
        .into_iter()
        .map(|row| Value::Object(names.iter().map(|n| n.to_string()).zip(row).collect()))
        .collect();
    let last = Day::last_archivable(Day::from_unix_ms(now_ms), cfg.retention_days);
    let pending = due_dates(db, last, 1000)
        .await?
        .into_iter()
        .filter(|d| !dates.iter().any(|k| k["date"].as_str() == Some(d)))
        .collect();
    Ok(Listing {
        dates,
        pending,
        retention_days: cfg.retention_days,
    })
}
