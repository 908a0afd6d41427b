//! The admin routes: a request's method, path and query turned into a typed [`Route`] with
//! validated parameters, or an [`ApiError`] that says what to send instead.
//!
//! Not handlers: the shell performs each route. Everything here is pure and tested natively.

use chrono::DateTime;

use crate::core::config::{Config, MAX_HOLD_DAYS};
use crate::core::date::{DateError, Day};
use crate::core::machine::Command;
use crate::engine::events::Window;

use super::{ApiError, ErrorKind};

/// The longest query string accepted; longer ones are refused before parsing. Cloudflare takes
/// URLs of up to 16 KB, so an events page can go on after an id of several thousand characters
/// (percent-encoded: a 4,000-character id was refused before; found by a review).
pub const MAX_QUERY_LEN: usize = 16 * 1024;

/// Which lines `/admin/events` returns: of one generation (or all), those in the window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventsQuery {
    pub day: Day,
    pub generation: Option<u32>,
    pub window: Window,
}

/// Which file of an archive `/admin/archive` serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArchiveFormat {
    /// The `.jsonl.gz` object (the default).
    Jsonl,
    /// A Parquet file: `file` N (1-based), or the only one.
    Parquet { file: Option<u32> },
}

/// A test hook on R2 uploads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UploadOp {
    Abort,
    Probe,
}

/// A request the admin API serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// The operator console (HTML; the page asks for the token, so it needs none itself).
    Console,
    /// A command for the date's Durable Object (trigger, cleanup, reset, restore, release).
    Command(Day, Command),
    Status(Day),
    Archive {
        day: Day,
        generation: Option<u32>,
        format: ArchiveFormat,
    },
    Events(EventsQuery),
    Dates,
    Health,
    /// Test hooks (only with `TEST_HOOKS`): the naive archiver, for the benchmark.
    Naive(Day),
    TestUpload {
        key: String,
        upload_id: String,
        op: UploadOp,
    },
    TestList {
        prefix: String,
    },
    TestSql,
}

/// Whether `path` is served without the admin token: only the console's page (it asks for the
/// token itself). Everything else under `/admin` needs it, checked before anything is parsed.
pub fn is_public(path: &str) -> bool {
    matches!(path.trim_end_matches('/'), "/admin" | "/admin/console")
}

/// A parsed request: method, path and query pairs.
pub struct Request<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub query: &'a [(String, String)],
    pub query_len: usize,
}

impl Request<'_> {
    fn get(&self, name: &str) -> Option<&str> {
        self.query.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    /// Refuses a parameter the route does not take (a misspelt `generation` must not restore
    /// every generation) and one given twice.
    fn check_names(&self, path: &str, takes: &[&str]) -> Result<(), ApiError> {
        for (i, (name, _)) in self.query.iter().enumerate() {
            if !takes.contains(&name.as_str()) {
                let expected = match takes {
                    [] => "no parameters".to_string(),
                    _ => takes.join(", "),
                };
                return Err(bad(format!(
                    "{path} does not take `{}`; it takes {expected} (see README.md)",
                    truncate(name)
                )));
            }
            if self.query[..i].iter().any(|(k, _)| k == name) {
                return Err(bad(format!("`{}` is given twice; send it once", truncate(name))));
            }
        }
        Ok(())
    }
}

fn bad(message: impl Into<String>) -> ApiError {
    ApiError::new(ErrorKind::BadParameter, message)
}

/// The route of `req`, with its parameters checked against `today` and `cfg`.
pub fn route(req: &Request<'_>, today: Day, now_ms: i64, cfg: &Config) -> Result<Route, ApiError> {
    let path = req.path.trim_end_matches('/');
    if !path.starts_with("/admin") {
        return Err(ApiError::new(
            ErrorKind::NotFound,
            "this Worker only serves /admin/*; see README.md for the routes",
        ));
    }
    if req.query_len > MAX_QUERY_LEN {
        return Err(ApiError::new(
            ErrorKind::QueryTooLong,
            format!("the query string is longer than {MAX_QUERY_LEN} bytes; send only the documented parameters (README.md, Admin API)"),
        ));
    }
    let day = || date_param(req.get("date"), today);
    let generation = || number_param("generation", req.get("generation"));
    const DATE: &[&str] = &["date"];
    // Each route: the methods it answers, the parameters it takes, and the route itself.
    let (methods, takes, route): (&[&str], &[&str], Result<Route, ApiError>) = match path {
        "/admin" | "/admin/console" => (&["GET"], &[], Ok(Route::Console)),
        "/admin/trigger-archive" => (
            &["POST", "GET"],
            &["date", "force"],
            day().and_then(|d| trigger(d, req, today, cfg)),
        ),
        // It deletes rows: POST only (a GET that deletes could be repeated or prefetched by
        // anything on the way; a review's finding). Archiving stays GET too, for runbooks.
        "/admin/trigger-cleanup" => (&["POST"], DATE, day().map(|d| Route::Command(d, Command::Cleanup))),
        "/admin/reset" => (&["POST"], DATE, day().map(|d| Route::Command(d, Command::Reset))),
        "/admin/release" => (&["POST"], DATE, day().map(|d| Route::Command(d, Command::Release))),
        "/admin/restore" => (
            &["POST"],
            &["date", "generation", "hold_until"],
            day().and_then(|d| restore(d, req, today, now_ms, cfg)),
        ),
        "/admin/archive-status" => (&["GET"], DATE, day().map(Route::Status)),
        "/admin/archive" => (
            &["GET"],
            &["date", "generation", "format", "file"],
            day().and_then(|day| {
                Ok(Route::Archive {
                    day,
                    generation: generation()?,
                    format: archive_format(req)?,
                })
            }),
        ),
        "/admin/events" => (
            &["GET"],
            &[
                "date",
                "generation",
                "from",
                "to",
                "id_from",
                "id_after",
                "id_to",
                "limit",
                "skip",
            ],
            day().and_then(|d| events(d, req)),
        ),
        "/admin/dates" => (&["GET"], &[], Ok(Route::Dates)),
        // HEAD for uptime monitors: the status code alone.
        "/admin/health" => (&["GET", "HEAD"], &[], Ok(Route::Health)),
        _ => match cfg.test_hooks.then(|| test_hook(path, req, today)).flatten() {
            Some(parsed) => parsed,
            None => return Err(unknown()),
        },
    };
    if !methods.contains(&req.method) {
        return Err(ApiError::new(
            ErrorKind::MethodNotAllowed,
            format!("use {} for this route", methods.join(" or ")),
        )
        .allow(methods));
    }
    req.check_names(path, takes)?;
    route
}

fn unknown() -> ApiError {
    ApiError::new(
        ErrorKind::NotFound,
        "unknown route; routes under /admin/: trigger-archive, archive-status, trigger-cleanup, reset, restore, release, archive, events, dates, health, and the console at /admin/",
    )
}

fn trigger(day: Day, req: &Request<'_>, today: Day, cfg: &Config) -> Result<Route, ApiError> {
    let force = match req.get("force") {
        None | Some("0" | "false" | "no") => false,
        Some("1" | "true" | "yes") => true,
        Some(other) => {
            return Err(bad(format!(
                "`force` must be 1 (or true, yes) or 0 (or false, no), got {:?}",
                truncate(other)
            )))
        }
    };
    if !day.is_past_retention(today, cfg.retention_days) && !force {
        return Err(ApiError::new(
            ErrorKind::InsideRetention,
            format!(
                "{day} is inside the {}-day retention window (archivable: {} and earlier); add force=1 to archive it anyway",
                cfg.retention_days,
                Day::last_archivable(today, cfg.retention_days)
            ),
        ));
    }
    Ok(Route::Command(day, Command::Trigger))
}

fn restore(day: Day, req: &Request<'_>, today: Day, now_ms: i64, cfg: &Config) -> Result<Route, ApiError> {
    let generation = number_param("generation", req.get("generation"))?;
    let hold_until_ms = match req.get("hold_until") {
        None => None,
        Some(v) => {
            let until = Day::parse_any(v).map_err(|_| {
                bad(format!(
                    "`hold_until` must be a date YYYY-MM-DD (the hold lasts through that day), got {:?}",
                    truncate(v)
                ))
            })?;
            if until < today {
                return Err(bad(format!(
                    "`hold_until` {until} is in the past; send today ({today}) or a later date"
                )));
            }
            let latest = today.plus_days(MAX_HOLD_DAYS);
            if until > latest {
                return Err(bad(format!(
                    "`hold_until` {until} is more than {MAX_HOLD_DAYS} days away; send {latest} or earlier (without it, the hold lasts RESTORE_HOLD_DAYS = {} days)",
                    cfg.restore_hold_days
                )));
            }
            Some(until.plus_days(1).start_ms().max(now_ms))
        }
    };
    Ok(Route::Command(
        day,
        Command::Restore {
            generation,
            hold_until_ms,
        },
    ))
}

fn events(day: Day, req: &Request<'_>) -> Result<Route, ApiError> {
    let from_ms = time_param("from", req.get("from"))?;
    let to_ms = time_param("to", req.get("to"))?;
    if let (Some(f), Some(t)) = (from_ms, to_ms) {
        if t <= f {
            return Err(bad("`to` must be after `from` (the window is from ≤ timestamp < to)"));
        }
    }
    let (id_from, id_after) = match (req.get("id_from"), req.get("id_after")) {
        (Some(_), Some(_)) => {
            return Err(bad(
                "send `id_from` (ids at or after it) or `id_after` (ids after it, to go on from a page's last line), not both",
            ))
        }
        (Some(v), None) => (Some(v), false),
        (None, v) => (v, v.is_some()),
    };
    if let (Some(from), Some(to)) = (id_from, req.get("id_to")) {
        if from > to {
            return Err(bad(format!(
                "`id_from` {:?} sorts after `id_to` {:?} (ids compare as text); swap them",
                truncate(from),
                truncate(to)
            )));
        }
    }
    let limit = match req.get("limit") {
        None => None,
        Some(v) => Some(v.parse::<u64>().ok().filter(|n| *n > 0).ok_or_else(|| {
            bad(format!(
                "`limit` must be a positive whole number of lines, got {:?}",
                truncate(v)
            ))
        })?),
    };
    let skip = match req.get("skip") {
        None => 0,
        Some(v) => v.parse::<u64>().map_err(|_| {
            bad(format!(
                "`skip` must be a whole number of lines (the lines with U+FFFD in their id that you have after `id_after`), got {:?}",
                truncate(v)
            ))
        })?,
    };
    Ok(Route::Events(EventsQuery {
        day,
        generation: number_param("generation", req.get("generation"))?,
        window: Window {
            from_ms,
            to_ms,
            id_from: id_from.map(str::to_string),
            id_after,
            id_to: req.get("id_to").map(str::to_string),
            limit,
            skip,
        },
    }))
}

type Parsed<'r> = (&'r [&'r str], &'r [&'r str], Result<Route, ApiError>);

/// A test hook's route (`TEST_HOOKS=1`), or `None`: no such route.
fn test_hook<'r>(path: &str, req: &Request<'_>, today: Day) -> Option<Parsed<'r>> {
    let text = |name: &str| req.get(name).unwrap_or_default().to_string();
    Some(match path {
        "/admin/bench/naive" => (
            &["POST", "GET"],
            &["date"],
            date_param(req.get("date"), today).map(Route::Naive),
        ),
        "/admin/test/upload" => {
            let op = match req.get("op") {
                Some("abort") => Ok(UploadOp::Abort),
                Some("probe") => Ok(UploadOp::Probe),
                _ => Err(bad("op must be abort or probe")),
            };
            let route = op.map(|op| Route::TestUpload {
                key: text("key"),
                upload_id: text("upload_id"),
                op,
            });
            (&["POST", "GET"], &["op", "key", "upload_id"], route)
        }
        "/admin/test/list" => (&["GET"], &["prefix"], Ok(Route::TestList { prefix: text("prefix") })),
        "/admin/test/sql" => (&["POST"], &[], Ok(Route::TestSql)),
        _ => return None,
    })
}

/// Validates the `date` parameter: present, a real calendar day, not in the future.
pub fn date_param(value: Option<&str>, today: Day) -> Result<Day, ApiError> {
    let value = value.ok_or_else(|| {
        ApiError::new(
            ErrorKind::MissingDate,
            "query parameter `date` is required, e.g. ?date=2026-11-20",
        )
    })?;
    Day::parse(value, today).map_err(|e| {
        let kind = match e {
            DateError::Malformed(_) => ErrorKind::BadDate,
            DateError::Future { .. } => ErrorKind::FutureDate,
        };
        ApiError::new(kind, e.to_string())
    })
}

/// Which file `/admin/archive` serves: the JSONL (default) or a Parquet file (`file` is 1-based).
fn archive_format(req: &Request<'_>) -> Result<ArchiveFormat, ApiError> {
    let file = number_param("file", req.get("file"))?;
    match (req.get("format"), file) {
        (None | Some("jsonl"), None) => Ok(ArchiveFormat::Jsonl),
        (Some("parquet"), file) => Ok(ArchiveFormat::Parquet { file }),
        (None | Some("jsonl"), Some(_)) => Err(bad("`file` picks a Parquet file: add format=parquet")),
        (Some(other), _) => Err(bad(format!(
            "`format` must be jsonl or parquet, got {:?}",
            truncate(other)
        ))),
    }
}

/// Validates an optional positive whole-number parameter such as `generation`.
pub fn number_param(name: &'static str, value: Option<&str>) -> Result<Option<u32>, ApiError> {
    match value {
        None => Ok(None),
        Some(v) => v.parse::<u32>().ok().filter(|n| *n > 0).map(Some).ok_or_else(|| {
            bad(format!(
                "`{name}` must be a positive whole number, got {:?}",
                truncate(v)
            ))
        }),
    }
}

/// A time as RFC 3339 (`2026-09-14T14:00:00Z`) or unix milliseconds (`1789394400000`).
///
/// A `+` of an offset typed unencoded arrives as a space (query strings decode `+` so), and is
/// read as the `+` it was. A whole number under 10^11 (before March 1973 in milliseconds) is
/// refused as the unix seconds it almost surely is, and a time with a fraction of a
/// millisecond: windows compare timestamps, REAL ones too, against whole milliseconds.
pub fn time_param(name: &'static str, value: Option<&str>) -> Result<Option<i64>, ApiError> {
    let Some(v) = value else { return Ok(None) };
    if let Ok(n) = v.parse::<i64>() {
        if n.unsigned_abs() < 100_000_000_000 {
            return Err(bad(format!(
                "`{name}` {n} looks like unix seconds; send unix milliseconds ({n}000) or RFC 3339 (e.g. 2026-09-14T14:00:00Z)"
            )));
        }
        return Ok(Some(n));
    }
    let offset_plus = match v.len().checked_sub(6).and_then(|at| v.split_at_checked(at)) {
        Some((time, offset)) if offset.starts_with(' ') => Some(format!("{time}+{}", &offset[1..])),
        _ => None,
    };
    let t = DateTime::parse_from_rfc3339(v)
        .or_else(|e| offset_plus.as_deref().map_or(Err(e), DateTime::parse_from_rfc3339))
        .map_err(|_| {
            bad(format!(
                "`{name}` must be RFC 3339 (e.g. 2026-09-14T14:00:00Z, with a `+` offset sent as %2B) or unix milliseconds (e.g. 1789394400000), got {:?}",
                truncate(v)
            ))
        })?;
    // chrono reads nine digits of a fraction and drops the rest (a review).
    let fraction = v.split_once('.').map_or("", |(_, f)| f);
    let past_nanos = fraction
        .chars()
        .take_while(char::is_ascii_digit)
        .skip(9)
        .any(|c| c != '0');
    if t.timestamp_subsec_nanos() % 1_000_000 != 0 || past_nanos {
        return Err(bad(format!(
            "`{name}` {:?} has a fraction of a millisecond; windows compare timestamps against whole milliseconds: send {}",
            truncate(v),
            t.format("%Y-%m-%dT%H:%M:%S%.3f%:z")
        )));
    }
    Ok(Some(t.timestamp_millis()))
}

fn truncate(v: &str) -> String {
    v.chars().take(40).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn today() -> Day {
        Day::parse_any("2026-11-26").unwrap()
    }

    fn parse(method: &str, url: &str, cfg: &Config) -> Result<Route, ApiError> {
        let (path, q) = url.split_once('?').unwrap_or((url, ""));
        let query: Vec<(String, String)> = q
            .split('&')
            .filter(|p| !p.is_empty())
            .map(|p| {
                let (k, v) = p.split_once('=').unwrap_or((p, ""));
                (k.to_string(), v.to_string())
            })
            .collect();
        let req = Request {
            method,
            path,
            query: &query,
            query_len: q.len(),
        };
        route(&req, today(), today().start_ms() + 3_600_000, cfg)
    }

    #[test]
    fn routes_and_their_refusals() {
        let cfg = Config::default();
        let err = |m: &str, u: &str| parse(m, u, &cfg).unwrap_err().error;
        assert_eq!(parse("GET", "/admin/", &cfg).unwrap(), Route::Console);
        assert!(is_public("/admin/") && is_public("/admin/console"));
        assert!(!is_public("/admin/health") && !is_public("/admin/consoles"));
        assert_eq!(err("GET", "/admin/archive-status"), ErrorKind::MissingDate);
        assert_eq!(err("GET", "/admin/archive-status?date=2025-02-30"), ErrorKind::BadDate);
        assert_eq!(
            err("POST", "/admin/trigger-archive?date=2026-12-01"),
            ErrorKind::FutureDate
        );
        assert_eq!(
            err("POST", "/admin/trigger-archive?date=2026-11-25"),
            ErrorKind::InsideRetention
        );
        assert!(matches!(
            parse("POST", "/admin/trigger-archive?date=2026-11-25&force=1", &cfg),
            Ok(Route::Command(_, Command::Trigger))
        ));
        assert_eq!(err("GET", "/admin/reset?date=2026-11-20"), ErrorKind::MethodNotAllowed);
        assert_eq!(
            err("GET", "/admin/trigger-cleanup?date=2026-11-20"),
            ErrorKind::MethodNotAllowed
        );
        assert_eq!(
            err("GET", "/admin/archive?date=2026-11-20&generation=0"),
            ErrorKind::BadParameter
        );
        assert_eq!(err("GET", "/admin/nope"), ErrorKind::NotFound);
        assert_eq!(err("GET", "/"), ErrorKind::NotFound);
        assert_eq!(
            err("POST", "/admin/test/sql"),
            ErrorKind::NotFound,
            "test hooks are off by default"
        );
        let hooks = Config {
            test_hooks: true,
            ..Config::default()
        };
        assert_eq!(parse("POST", "/admin/test/sql", &hooks).unwrap(), Route::TestSql);
        // With hooks on, an unknown route is still a 404, not a 405 with an empty `Allow`
        // (a review's finding).
        for url in ["/admin/nope", "/admin/test/nope"] {
            let e = parse("GET", url, &hooks).unwrap_err();
            assert_eq!((e.error, e.allow.as_deref()), (ErrorKind::NotFound, None), "{url}");
        }
    }

    #[test]
    fn unknown_and_repeated_parameters_are_refused_before_anything_runs() {
        let cfg = Config::default();
        let err = |m: &str, u: &str| parse(m, u, &cfg).unwrap_err();
        // A misspelt `generation` must not restore every generation.
        let e = err("POST", "/admin/restore?date=2026-11-20&generaton=2");
        assert_eq!(e.error, ErrorKind::BadParameter);
        assert!(
            e.message.contains("`generaton`") && e.message.contains("date, generation, hold_until"),
            "{}",
            e.message
        );
        assert!(err("GET", "/admin/events?date=2026-11-20&form=1789394400000")
            .message
            .contains("`form`"));
        assert!(err("GET", "/admin/archive?date=2026-11-20&formt=parquet")
            .message
            .contains("`formt`"));
        assert!(err("GET", "/admin/health?verbose=1").message.contains("no parameters"));
        assert!(err("GET", "/admin/archive-status?date=2026-11-20&date=2026-11-21")
            .message
            .contains("given twice"));
        for force in ["on", "TRUE", ""] {
            let e = err("POST", &format!("/admin/trigger-archive?date=2026-11-25&force={force}"));
            assert!(e.message.contains("`force` must be"), "{force}: {}", e.message);
        }
        assert_eq!(
            err("POST", "/admin/trigger-archive?date=2026-11-25&force=no").error,
            ErrorKind::InsideRetention
        );
        // A wrong method names the right ones, for the `Allow` header too.
        let e = err("GET", "/admin/reset?date=2026-11-20");
        assert_eq!(
            (e.error, e.allow.as_deref()),
            (ErrorKind::MethodNotAllowed, Some("POST"))
        );
        assert_eq!(parse("HEAD", "/admin/health", &cfg).unwrap(), Route::Health);
    }

    #[test]
    fn restore_and_events_parameters() {
        let cfg = Config::default();
        let r = parse(
            "POST",
            "/admin/restore?date=2026-11-20&generation=2&hold_until=2026-11-30",
            &cfg,
        )
        .unwrap();
        let until = Day::parse_any("2026-12-01").unwrap().start_ms();
        assert_eq!(
            r,
            Route::Command(
                Day::parse_any("2026-11-20").unwrap(),
                Command::Restore {
                    generation: Some(2),
                    hold_until_ms: Some(until)
                }
            )
        );
        let err = |u: &str| parse("GET", u, &cfg).unwrap_err();
        // Each bad window, and words its message must hold: seconds where milliseconds
        // belong, an id range backwards, two lower id bounds.
        for (query, words) in [
            ("from=yesterday", "RFC 3339"),
            ("from=1795183200002&to=1795183200001", "after"),
            ("limit=0", "positive"),
            ("from=1795183200", "looks like unix seconds"),
            ("id_from=b&id_to=a", "swap them"),
            ("id_after=b&id_to=a", "swap them"),
            ("id_from=a&id_after=a", "not both"),
            ("skip=-1", "whole number"),
        ] {
            let e = err(&format!("/admin/events?date=2026-11-20&{query}"));
            assert!(e.message.contains(words), "{query}: {}", e.message);
        }
        assert!(
            parse("POST", "/admin/restore?date=2026-11-20&hold_until=2026-11-01", &cfg)
                .unwrap_err()
                .message
                .contains("past")
        );
        let far = parse("POST", "/admin/restore?date=2026-11-20&hold_until=9999-12-31", &cfg).unwrap_err();
        assert!(far.message.contains("send 2027-11-26 or earlier"), "{}", far.message);
        assert!(parse("POST", "/admin/restore?date=2026-11-20&hold_until=2027-11-26", &cfg).is_ok());
        // A character of several bytes where an offset would start; a time finer than a
        // millisecond, which a REAL timestamp could not be compared with exactly (a review).
        assert!(time_param("from", Some("é12345")).is_err());
        assert!(time_param("from", Some("2026-11-20T16:00:00é2:00")).is_err());
        let t = |v: &str| time_param("from", Some(v)).unwrap().unwrap();
        let fine = time_param("from", Some("2026-11-20T16:00:00.0005Z"))
            .unwrap_err()
            .message;
        assert!(
            fine.contains("fraction of a millisecond") && fine.contains("send 2026-11-20T16:00:00.000+00:00"),
            "{fine}"
        );
        assert_eq!(t("2026-11-20T16:00:00.001000Z"), t("2026-11-20T16:00:00Z") + 1);
        assert_eq!(t("2026-11-20T16:00:00.0010000000Z"), t("2026-11-20T16:00:00Z") + 1);
        assert!(time_param("from", Some("2026-11-20T16:00:00.0010000001Z")).is_err());
        assert_eq!(t("1969-12-31T23:59:59.999Z"), -1);
        let Route::Events(q) = parse("GET", "/admin/events?date=2026-11-20&id_after=a&limit=5", &cfg).unwrap() else {
            panic!()
        };
        assert_eq!(
            (q.window.id_from.as_deref(), q.window.id_after, q.window.skip),
            (Some("a"), true, 0)
        );
        let Route::Events(q) = parse("GET", "/admin/events?date=2026-11-20&id_after=a&skip=3", &cfg).unwrap() else {
            panic!()
        };
        assert_eq!(q.window.skip, 3);
        // A page's last id of 1,500 CJK characters, percent-encoded (13,500 bytes), or of 4,000
        // ASCII ones, still routes (the cap was 512 bytes, then 4,096; found by reviews).
        let long: String = "%E6%90%9C".repeat(1_500);
        assert!(parse("GET", &format!("/admin/events?date=2026-11-20&id_after={long}"), &cfg).is_ok());
        let long = "x".repeat(4_000);
        assert!(parse("GET", &format!("/admin/events?date=2026-11-20&id_after={long}"), &cfg).is_ok());
        // `+02:00` typed unencoded arrives as ` 02:00`: read as the offset it was.
        let Route::Events(q) = parse(
            "GET",
            "/admin/events?date=2026-11-20&from=2026-11-20T16:00:00 02:00",
            &cfg,
        )
        .unwrap() else {
            panic!()
        };
        assert_eq!(q.window.from_ms, Some(1_795_183_200_000));
        let Route::Events(q) = parse(
            "GET",
            "/admin/events?date=2026-11-20&from=2026-11-20T14:00:00Z&to=1795185000000&limit=5",
            &cfg,
        )
        .unwrap() else {
            panic!()
        };
        let w = q.window;
        assert_eq!(
            (w.from_ms, w.to_ms, w.limit),
            (Some(1_795_183_200_000), Some(1_795_185_000_000), Some(5))
        );
    }

    #[test]
    fn archive_format_and_file() {
        let cfg = Config::default();
        let format = |u: &str| match parse("GET", u, &cfg) {
            Ok(Route::Archive { format, .. }) => Ok(format),
            Ok(other) => panic!("{other:?}"),
            Err(e) => Err(e.message),
        };
        let base = "/admin/archive?date=2026-11-20";
        assert_eq!(format(base), Ok(ArchiveFormat::Jsonl));
        assert_eq!(format(&format!("{base}&format=jsonl")), Ok(ArchiveFormat::Jsonl));
        assert_eq!(
            format(&format!("{base}&format=parquet")),
            Ok(ArchiveFormat::Parquet { file: None })
        );
        assert_eq!(
            format(&format!("{base}&format=parquet&file=3")),
            Ok(ArchiveFormat::Parquet { file: Some(3) })
        );
        assert!(format(&format!("{base}&file=2"))
            .unwrap_err()
            .contains("add format=parquet"));
        assert!(format(&format!("{base}&format=csv"))
            .unwrap_err()
            .contains("jsonl or parquet"));
        for file in ["0", "-1", "x"] {
            assert!(format(&format!("{base}&format=parquet&file={file}"))
                .unwrap_err()
                .contains("positive whole number"));
        }
    }
}
