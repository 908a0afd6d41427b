//! Tunables and platform limits. Read from the Worker's vars by the shell; validated here.
//!
//! Not persisted: a running export keeps its own copy of what must not change under it
//! (the part size, the compression level).

use thiserror::Error;

/// R2: every part of a multipart upload but the last must be at least 5 MiB (and all equal).
pub const R2_MIN_PART_SIZE: u64 = 5 * 1024 * 1024;
/// R2: at most 10,000 parts per multipart upload.
pub const R2_MAX_PARTS: usize = 10_000;
/// Durable Object storage: 2 MB per key+value; the carry is stored in chunks well under that.
pub const DO_VALUE_CHUNK: usize = 1024 * 1024;
/// Durable Object storage: one `put` of up to 128 keys is atomic. The record takes one key.
pub const DO_MAX_KEYS_PER_PUT: usize = 128;
/// Largest part size we accept: the carry must fit one atomic put, and a step holds about
/// one part plus one page in wasm memory (the isolate has 128 MB).
pub const MAX_PART_SIZE: u64 = 32 * 1024 * 1024;
/// D1: 1,000 queries per invocation on the paid plan; a step stays far below.
pub const D1_MAX_QUERIES_PER_INVOCATION: u64 = 1_000;

/// Everything the core needs to decide; one value per Worker var.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Dates older than this many days (before today, UTC) are archived. Var `RETENTION_DAYS`.
    pub retention_days: u32,
    /// Key prefix in the bucket. Var `ARCHIVE_PREFIX`.
    pub prefix: String,
    /// Multipart part size in bytes. Var `PART_SIZE_BYTES`.
    pub part_size: u64,
    /// Rows per export query. Var `PAGE_ROWS`.
    pub page_rows: u32,
    /// Target JSON bytes per export query; pages shrink when rows are large. Var `PAGE_BYTES`.
    pub page_bytes: u64,
    /// Rows per export step. Var `STEP_ROWS`.
    pub step_rows: u64,
    /// Uncompressed JSONL bytes per export step. Var `STEP_BYTES`.
    pub step_bytes: u64,
    /// Rows per DELETE statement (the export records a checkpoint every this many rows).
    /// Var `CLEAN_BATCH_ROWS`.
    pub clean_batch_rows: u64,
    /// Rows deleted per cleaning step. Var `CLEAN_STEP_ROWS`.
    pub clean_step_rows: u64,
    /// Consecutive failures of one step before the date is `Failed`. Var `MAX_ATTEMPTS`.
    pub max_attempts: u32,
    /// First retry delay; doubles per attempt. Var `BACKOFF_BASE_MS`.
    pub backoff_base_ms: u64,
    /// Longest retry delay. Var `BACKOFF_MAX_MS`.
    pub backoff_max_ms: u64,
    /// Deflate level 0..=9. Var `COMPRESSION_LEVEL`.
    pub level: u8,
    /// Clean right after a verified upload (true) or wait for `trigger-cleanup`. Var `AUTO_CLEANUP`.
    pub auto_cleanup: bool,
    /// Failed dates the cron resumes per run. Var `CRON_MAX_DATES`.
    pub cron_max_dates: u32,
    /// Due dates kept running at once by the cron and by each date that finishes: they share a
    /// Worker isolate's memory. Var `MAX_RUNNING_DATES`.
    pub max_running_dates: u32,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            retention_days: 3,
            prefix: "traffic_events".into(),
            part_size: R2_MIN_PART_SIZE,
            page_rows: 2_000,
            page_bytes: 1024 * 1024,
            step_rows: 200_000,
            step_bytes: 64 * 1024 * 1024,
            clean_batch_rows: 10_000,
            clean_step_rows: 200_000,
            max_attempts: 6,
            backoff_base_ms: 2_000,
            backoff_max_ms: 300_000,
            level: 6,
            auto_cleanup: true,
            cron_max_dates: 30,
            max_running_dates: 2,
        }
    }
}

/// A var that cannot be used. Nothing runs with a bad config.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ConfigError {
    /// The var is not a number of the right kind.
    #[error(
        "var {name} = {value:?} is not a valid {kind}; fix it in wrangler.toml [vars] (or .dev.vars) and redeploy"
    )]
    Parse {
        name: &'static str,
        value: String,
        kind: &'static str,
    },
    /// The var is a number outside its allowed range.
    #[error("var {name} = {value} is out of range: {rule}; fix it in wrangler.toml [vars] and redeploy")]
    Range {
        name: &'static str,
        value: u64,
        rule: &'static str,
    },
}

impl Config {
    /// Builds a config from vars (`get(name)`), with defaults for the missing ones.
    pub fn from_vars(get: impl Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let d = Config::default();
        let num = |name: &'static str, default: u64| -> Result<u64, ConfigError> {
            match get(name) {
                None => Ok(default),
                Some(v) => v
                    .trim()
                    .replace('_', "")
                    .parse::<u64>()
                    .map_err(|_| ConfigError::Parse {
                        name,
                        value: v,
                        kind: "whole number",
                    }),
            }
        };
        let range = |name: &'static str, value: u64, lo: u64, hi: u64, rule: &'static str| {
            if value < lo || value > hi {
                Err(ConfigError::Range { name, value, rule })
            } else {
                Ok(value)
            }
        };
        let auto_cleanup = match get("AUTO_CLEANUP").map(|v| v.trim().to_ascii_lowercase()) {
            None => d.auto_cleanup,
            Some(v) if ["1", "true", "yes", "on"].contains(&v.as_str()) => true,
            Some(v) if ["0", "false", "no", "off"].contains(&v.as_str()) => false,
            Some(v) => {
                return Err(ConfigError::Parse {
                    name: "AUTO_CLEANUP",
                    value: v,
                    kind: "boolean (true/false)",
                })
            }
        };
        let cfg = Config {
            retention_days: range(
                "RETENTION_DAYS",
                num("RETENTION_DAYS", d.retention_days.into())?,
                1,
                3650,
                "1..=3650 days",
            )? as u32,
            prefix: get("ARCHIVE_PREFIX")
                .map(|p| p.trim_matches('/').to_string())
                .unwrap_or(d.prefix),
            part_size: range(
                "PART_SIZE_BYTES",
                num("PART_SIZE_BYTES", d.part_size)?,
                R2_MIN_PART_SIZE,
                MAX_PART_SIZE,
                "5 MiB (R2's minimum) ..= 32 MiB",
            )?,
            page_rows: range(
                "PAGE_ROWS",
                num("PAGE_ROWS", d.page_rows.into())?,
                1,
                50_000,
                "1..=50000",
            )? as u32,
            page_bytes: range(
                "PAGE_BYTES",
                num("PAGE_BYTES", d.page_bytes)?,
                65_536,
                16 * 1024 * 1024,
                "64 KiB ..= 16 MiB",
            )?,
            step_rows: range(
                "STEP_ROWS",
                num("STEP_ROWS", d.step_rows)?,
                1,
                10_000_000,
                "1..=10000000",
            )?,
            step_bytes: range(
                "STEP_BYTES",
                num("STEP_BYTES", d.step_bytes)?,
                65_536,
                1 << 30,
                "64 KiB ..= 1 GiB",
            )?,
            clean_batch_rows: range(
                "CLEAN_BATCH_ROWS",
                num("CLEAN_BATCH_ROWS", d.clean_batch_rows)?,
                1,
                1_000_000,
                "1..=1000000",
            )?,
            clean_step_rows: range(
                "CLEAN_STEP_ROWS",
                num("CLEAN_STEP_ROWS", d.clean_step_rows)?,
                1,
                50_000_000,
                "1..=50000000",
            )?,
            max_attempts: range(
                "MAX_ATTEMPTS",
                num("MAX_ATTEMPTS", d.max_attempts.into())?,
                1,
                100,
                "1..=100",
            )? as u32,
            backoff_base_ms: range(
                "BACKOFF_BASE_MS",
                num("BACKOFF_BASE_MS", d.backoff_base_ms)?,
                1,
                3_600_000,
                "1 ms ..= 1 h",
            )?,
            backoff_max_ms: range(
                "BACKOFF_MAX_MS",
                num("BACKOFF_MAX_MS", d.backoff_max_ms)?,
                1,
                86_400_000,
                "1 ms ..= 1 day",
            )?,
            level: range(
                "COMPRESSION_LEVEL",
                num("COMPRESSION_LEVEL", d.level.into())?,
                0,
                9,
                "0..=9",
            )? as u8,
            auto_cleanup,
            cron_max_dates: range(
                "CRON_MAX_DATES",
                num("CRON_MAX_DATES", d.cron_max_dates.into())?,
                1,
                1000,
                "1..=1000",
            )? as u32,
            max_running_dates: range(
                "MAX_RUNNING_DATES",
                num("MAX_RUNNING_DATES", d.max_running_dates.into())?,
                1,
                32,
                "1..=32",
            )? as u32,
        };
        Ok(cfg)
    }

    /// Delay before retry number `attempt` (1-based): base × 2^(attempt-1), capped.
    pub fn backoff_ms(&self, attempt: u32) -> u64 {
        let factor = 1u64 << attempt.saturating_sub(1).min(20);
        self.backoff_base_ms.saturating_mul(factor).min(self.backoff_max_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn vars(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn defaults_when_no_vars() {
        assert_eq!(Config::from_vars(|_| None).unwrap(), Config::default());
    }

    #[test]
    fn part_size_below_r2_minimum_is_refused_with_the_rule() {
        let err = Config::from_vars(vars(&[("PART_SIZE_BYTES", "1000")])).unwrap_err();
        assert!(err.to_string().contains("5 MiB"), "{err}");
    }

    #[test]
    fn garbage_is_a_parse_error() {
        let err = Config::from_vars(vars(&[("AUTO_CLEANUP", "maybe")])).unwrap_err();
        assert!(matches!(
            err,
            ConfigError::Parse {
                name: "AUTO_CLEANUP",
                ..
            }
        ));
        assert!(Config::from_vars(vars(&[("STEP_ROWS", "-1")])).is_err());
    }

    #[test]
    fn backoff_doubles_and_caps() {
        let c = Config::default();
        assert_eq!(c.backoff_ms(1), 2_000);
        assert_eq!(c.backoff_ms(2), 4_000);
        assert_eq!(c.backoff_ms(30), 300_000);
    }
}
