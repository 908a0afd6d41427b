//! Dates as the archiver sees them: validation of `YYYY-MM-DD`, the retention window, object keys.
//!
//! Not a clock: "today" always comes in as an argument.

use chrono::{Duration, NaiveDate};
use thiserror::Error;

/// Why a date was refused. Each message says what a valid request looks like.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DateError {
    /// Not of the form `YYYY-MM-DD`, or not a real day (`2025-02-30`).
    #[error("date {0:?} is not a calendar date; use YYYY-MM-DD, e.g. date=2026-11-20")]
    Malformed(String),
    /// After today (UTC): there is nothing to archive yet.
    #[error("date {date} is in the future (today is {today} UTC); only past dates can be archived")]
    Future { date: String, today: String },
}

/// A validated day.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Day(NaiveDate);

impl Day {
    /// Parses a strict `YYYY-MM-DD` that is a real day, not after `today`. Any past year is
    /// one: the cron archives every date D1 holds rows of (a zero timestamp makes 1970-01-01),
    /// and an operator must reach each of them. A mistyped date has no rows; its trigger leaves
    /// nothing in R2 (its metadata row says `idle`).
    pub fn parse(input: &str, today: Day) -> Result<Day, DateError> {
        let day = Day::parse_any(input)?;
        if day > today {
            return Err(DateError::Future {
                date: day.to_string(),
                today: today.to_string(),
            });
        }
        Ok(day)
    }

    /// Parses a strict `YYYY-MM-DD` that is a real day, with no range check.
    pub fn parse_any(input: &str) -> Result<Day, DateError> {
        let b = input.as_bytes();
        let shape_ok = b.len() == 10
            && b[4] == b'-'
            && b[7] == b'-'
            && b.iter()
                .enumerate()
                .all(|(i, c)| i == 4 || i == 7 || c.is_ascii_digit());
        if !shape_ok {
            return Err(DateError::Malformed(input.chars().take(40).collect()));
        }
        NaiveDate::parse_from_str(input, "%Y-%m-%d")
            .map(Day)
            .map_err(|_| DateError::Malformed(input.to_string()))
    }

    /// The UTC day of a unix-milliseconds instant.
    pub fn from_unix_ms(ms: i64) -> Day {
        let days = ms.div_euclid(86_400_000);
        Day(NaiveDate::from_ymd_opt(1970, 1, 1).unwrap_or(NaiveDate::MIN) + Duration::days(days))
    }

    /// Whether this day is old enough to archive: strictly before `today - retention_days`.
    /// With 3 days' retention on the 26th, the 22nd and earlier are archived; 23..26 stay.
    pub fn is_past_retention(self, today: Day, retention_days: u32) -> bool {
        self < today.minus_days(retention_days)
    }

    /// The newest day that is past retention.
    pub fn last_archivable(today: Day, retention_days: u32) -> Day {
        today.minus_days(retention_days + 1)
    }

    pub fn minus_days(self, n: u32) -> Day {
        Day(self.0 - Duration::days(i64::from(n)))
    }

    pub fn plus_days(self, n: u32) -> Day {
        Day(self.0 + Duration::days(i64::from(n)))
    }

    /// Unix milliseconds at 00:00 UTC of this day.
    pub fn start_ms(self) -> i64 {
        self.0
            .and_hms_opt(0, 0, 0)
            .map_or(0, |t| t.and_utc().timestamp_millis())
    }

    /// Whole days from `self` to `later`.
    pub fn days_until(self, later: Day) -> i64 {
        (later.0 - self.0).num_days()
    }
}

impl std::fmt::Display for Day {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0.format("%Y-%m-%d"))
    }
}

/// The hive-style object key of one generation: `<prefix>/event_date=YYYY-MM-DD/NNNN.jsonl.gz`.
/// Zero-padded so that generations list in order.
pub fn object_key(prefix: &str, date: &str, generation: u32) -> String {
    let prefix = prefix.trim_matches('/');
    if prefix.is_empty() {
        format!("event_date={date}/{generation:04}.jsonl.gz")
    } else {
        format!("{prefix}/event_date={date}/{generation:04}.jsonl.gz")
    }
}

/// The seek-index sidecar next to an object: `.../NNNN.index.json`.
pub fn index_key(object_key: &str) -> String {
    let stem = object_key.strip_suffix(".jsonl.gz").unwrap_or(object_key);
    format!("{stem}.index.json")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Day {
        Day::parse_any(s).unwrap()
    }

    #[test]
    fn strict_shape_and_real_days_only() {
        let today = d("2026-11-26");
        for bad in [
            "2025-02-30",
            "2025-2-3",
            "20250203",
            "2025-02-03 ",
            "2025-13-01",
            "'; DROP TABLE x;--",
            "２０２５-01-01",
            "",
        ] {
            assert!(matches!(Day::parse(bad, today), Err(DateError::Malformed(_))), "{bad}");
        }
        assert_eq!(Day::parse("2024-02-29", today).unwrap().to_string(), "2024-02-29");
        assert!(matches!(Day::parse("2026-11-27", today), Err(DateError::Future { .. })));
        assert_eq!(Day::parse("1970-01-01", today).unwrap().to_string(), "1970-01-01");
        assert!(Day::parse("2026-11-26", today).is_ok());
    }

    #[test]
    fn retention_window() {
        let today = d("2026-11-26");
        assert!(d("2026-11-22").is_past_retention(today, 3));
        assert!(!d("2026-11-23").is_past_retention(today, 3));
        assert_eq!(Day::last_archivable(today, 3), d("2026-11-22"));
        assert_eq!(Day::from_unix_ms(1_795_659_835_000).to_string(), "2026-11-26");
        assert_eq!(Day::from_unix_ms(1_795_651_199_999).to_string(), "2026-11-25");
    }

    #[test]
    fn hive_keys() {
        assert_eq!(
            object_key("traffic_events/", "2026-11-20", 1),
            "traffic_events/event_date=2026-11-20/0001.jsonl.gz"
        );
        assert_eq!(
            index_key("p/event_date=2026-11-20/0002.jsonl.gz"),
            "p/event_date=2026-11-20/0002.index.json"
        );
    }
}
