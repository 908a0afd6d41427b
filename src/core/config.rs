//! Tunables and platform limits. One table, [`VARS`], names every Worker var with its default,
//! its allowed range and its meaning; it drives parsing, the error text, and the check that
//! README.md's configuration table says the same.
//!
//! Not persisted: a running export keeps its own copy of what must not change under it
//! (the part size, the compression level, the batch size of a pass).

use thiserror::Error;

/// Output the export's buffer holds beyond one part: two slices of its output before an upload
/// (the loaded carry and the export's writer are sized alike, so neither reallocates).
pub const CARRY_SLACK: usize = 128 * 1024;

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
/// D1: a bound string may be at most 2 MB; a batch of lines stays under it with room to spare.
pub const D1_MAX_STRING: u64 = 2_000_000;
/// The export ends a piece once its compressed output reaches this (the "~1 MiB"),
/// whatever `PIECE_BYTES` says.
pub const PIECE_MAX_COMPRESSED: u64 = 1024 * 1024;
/// A piece is read back whole into memory (cleaning, restore, events): at most this raw.
pub const PIECE_MAX_RAW: u64 = 4 * 1024 * 1024;
/// The first page of a scan, before any row size is known: a probe of one row (a row can be up
/// to 2 MB in D1), after which pages grow at most fourfold while they stay under `PAGE_BYTES`.
pub const FIRST_PAGE_ROWS: u32 = 1;
/// The longest hold of restored rows: `RESTORE_HOLD_DAYS` and a restore's `hold_until`.
pub const MAX_HOLD_DAYS: u32 = 365;

/// One Worker var: how it is spelled, what it defaults to, what it may be, what it means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Var {
    pub name: &'static str,
    pub default: &'static str,
    pub rule: Rule,
    pub meaning: &'static str,
}

/// What values a var takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    /// A whole number in `min..=max`; `text` says the range to a person.
    Int { min: u64, max: u64, text: &'static str },
    /// `true`/`false` (also `1`/`0`, `yes`/`no`, `on`/`off`).
    Bool,
    /// Any text (trimmed).
    Text,
}

/// A var that cannot be used. Nothing runs with a bad config.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ConfigError {
    /// The var is not a value of its kind.
    #[error(
        "var {name} = {value:?} is not a valid {kind}; fix it in wrangler.toml [vars] (or .dev.vars) and redeploy"
    )]
    Parse {
        name: &'static str,
        value: String,
        kind: &'static str,
    },
    /// The var is a number outside its allowed range.
    #[error(
        "var {name} = {value} is out of range: {rule}; fix it in wrangler.toml [vars] (or .dev.vars) and redeploy"
    )]
    Range {
        name: &'static str,
        value: u64,
        rule: &'static str,
    },
}

/// A var's parsed value, before it lands in its field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    Int(u64),
    Bool(bool),
    Text(String),
}

impl Rule {
    fn parse(self, name: &'static str, raw: &str) -> Result<Parsed, ConfigError> {
        let raw = raw.trim();
        match self {
            Rule::Int { min, max, text } => {
                let value = raw.replace('_', "").parse::<u64>().map_err(|_| ConfigError::Parse {
                    name,
                    value: raw.into(),
                    kind: "whole number",
                })?;
                if value < min || value > max {
                    return Err(ConfigError::Range {
                        name,
                        value,
                        rule: text,
                    });
                }
                Ok(Parsed::Int(value))
            }
            Rule::Bool => match raw.to_ascii_lowercase().as_str() {
                "1" | "true" | "yes" | "on" => Ok(Parsed::Bool(true)),
                "0" | "false" | "no" | "off" | "" => Ok(Parsed::Bool(false)),
                _ => Err(ConfigError::Parse {
                    name,
                    value: raw.into(),
                    kind: "boolean (true/false)",
                }),
            },
            Rule::Text => Ok(Parsed::Text(raw.into())),
        }
    }
}

/// How a parsed value becomes a field of [`Config`].
trait FromParsed: Sized {
    fn from_parsed(p: Parsed) -> Self;
}
impl FromParsed for u64 {
    fn from_parsed(p: Parsed) -> Self {
        match p {
            Parsed::Int(v) => v,
            Parsed::Bool(_) | Parsed::Text(_) => 0,
        }
    }
}
impl FromParsed for u32 {
    fn from_parsed(p: Parsed) -> Self {
        u32::try_from(u64::from_parsed(p)).unwrap_or(u32::MAX)
    }
}
impl FromParsed for u8 {
    fn from_parsed(p: Parsed) -> Self {
        u8::try_from(u64::from_parsed(p)).unwrap_or(u8::MAX)
    }
}
impl FromParsed for bool {
    fn from_parsed(p: Parsed) -> Self {
        matches!(p, Parsed::Bool(true))
    }
}
impl FromParsed for String {
    fn from_parsed(p: Parsed) -> Self {
        match p {
            Parsed::Text(t) => t,
            Parsed::Int(_) | Parsed::Bool(_) => String::new(),
        }
    }
}

const fn int(min: u64, max: u64, text: &'static str) -> Rule {
    Rule::Int { min, max, text }
}

/// Declares [`Config`], its field per var, and [`VARS`] from one list.
macro_rules! config {
    ($( $(#[$doc:meta])* $field:ident: $ty:ty = $name:literal, $default:literal, $rule:expr, $meaning:literal; )*) => {
        /// Everything the core needs to decide; one field per Worker var (see [`VARS`]).
        #[derive(Debug, Clone, PartialEq, Eq)]
        pub struct Config {
            $( $(#[$doc])* pub $field: $ty, )*
        }

        /// Every var, in the order README.md lists them.
        pub const VARS: &[Var] = &[
            $( Var { name: $name, default: $default, rule: $rule, meaning: $meaning }, )*
        ];

        impl Config {
            /// Builds a config from vars (`get(name)`), with defaults for the missing ones.
            pub fn from_vars(get: impl Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
                Ok(Config {
                    $( $field: <$ty>::from_parsed(
                        $rule.parse($name, get($name).as_deref().unwrap_or($default))?
                    ), )*
                })
            }
        }
    };
}

config! {
    retention_days: u32 = "RETENTION_DAYS", "3", int(1, 3650, "1..=3650 days"), "dates older than this many days (UTC) are archived";
    prefix: String = "ARCHIVE_PREFIX", "traffic_events", Rule::Text, "key prefix in the bucket";
    part_size: u64 = "PART_SIZE_BYTES", "5242880", int(R2_MIN_PART_SIZE, MAX_PART_SIZE, "5 MiB (R2's minimum) ..= 32 MiB"), "multipart part size; every part but the last has exactly this size";
    page_rows: u32 = "PAGE_ROWS", "2000", int(1, 50_000, "1..=50000"), "most rows per D1 query of the export scan";
    page_bytes: u64 = "PAGE_BYTES", "1048576", int(65_536, 16 * 1024 * 1024, "64 KiB ..= 16 MiB"), "JSON bytes per D1 query of the export scan; pages shrink when rows are large, from the first page of every step; after a step that never saved, held to it in SQL (bytes of lines, and one row)";
    step_rows: u64 = "STEP_ROWS", "200000", int(1, 10_000_000, "1..=10000000"), "rows per export step (one alarm)";
    step_bytes: u64 = "STEP_BYTES", "67108864", int(65_536, 1 << 30, "64 KiB ..= 1 GiB"), "uncompressed bytes per export or verification step";
    piece_bytes: u64 = "PIECE_BYTES", "4194304", int(65_536, PIECE_MAX_RAW, "64 KiB ..= 4 MiB"), "uncompressed bytes per piece of the seek index (a piece also ends at 1 MiB compressed)";
    clean_batch_bytes: u64 = "CLEAN_BATCH_BYTES", "1500000", int(4_096, D1_MAX_STRING * 3 / 4, "4 KB ..= 1.5 MB (D1 takes 2 MB per string)"), "archived lines per DELETE or INSERT statement, in bytes of JSON (a line with a character past U+00FF counts twice: it crosses D1 as hex)";
    clean_step_rows: u64 = "CLEAN_STEP_ROWS", "200000", int(1, 50_000_000, "1..=50000000"), "rows deleted or restored per step";
    max_attempts: u32 = "MAX_ATTEMPTS", "6", int(1, 100, "1..=100"), "consecutive failures of a step (or export restarts) before the date is failed";
    backoff_base_ms: u64 = "BACKOFF_BASE_MS", "2000", int(1, 3_600_000, "1 ms ..= 1 h"), "first retry delay; it doubles per attempt";
    backoff_max_ms: u64 = "BACKOFF_MAX_MS", "300000", int(1, 86_400_000, "1 ms ..= 1 day"), "longest retry delay";
    level: u8 = "COMPRESSION_LEVEL", "5", int(0, 9, "0..=9"), "deflate level";
    parquet: bool = "PARQUET", "false", Rule::Bool, "also write each archive as Parquet files beside the JSONL (one per export step; steps stop at 100,000 rows then); fixed when an export starts";
    auto_cleanup: bool = "AUTO_CLEANUP", "true", Rule::Bool, "false: archive, inspect, then POST /admin/trigger-cleanup";
    max_running_dates: u32 = "MAX_RUNNING_DATES", "2", int(1, 32, "1..=32"), "dates with work of their own at once; the cron starts due dates only into free slots";
    cron_max_dates: u32 = "CRON_MAX_DATES", "30", int(1, 1000, "1..=1000"), "failed dates the daily cron resumes per run, from the free slots";
    restore_hold_days: u32 = "RESTORE_HOLD_DAYS", "7", int(1, MAX_HOLD_DAYS as u64, "1..=365 days"), "days restored rows stay in D1 before they are cleaned again (unless released earlier)";
    test_hooks: bool = "TEST_HOOKS", "false", Rule::Bool, "tests only: serves /admin/test/* and the naive benchmark, and lets FAULT_INJECT act; /admin/health reports it";
    fault_inject: String = "FAULT_INJECT", "", Rule::Text, "tests only (needs TEST_HOOKS): `d1:K:C,r2:K:C` fails C calls of a service from its K-th";
}

impl Default for Config {
    fn default() -> Self {
        // The defaults are valid by construction (a test checks it).
        Config::from_vars(|_| None).unwrap_or_else(|e| panic!("a default var is invalid: {e}"))
    }
}

impl Config {
    /// Delay before retry number `attempt` (1-based): base × 2^(attempt-1), capped.
    pub fn backoff_ms(&self, attempt: u32) -> u64 {
        let factor = 1u64 << attempt.saturating_sub(1).min(20);
        self.backoff_base_ms.saturating_mul(factor).min(self.backoff_max_ms)
    }

    /// Room the export's output buffer needs: one part and [`CARRY_SLACK`].
    pub fn carry_capacity(&self) -> usize {
        self.part_size as usize + CARRY_SLACK
    }

    /// The fault plan, which only test hooks let act.
    pub fn faults(&self) -> &str {
        if self.test_hooks {
            &self.fault_inject
        } else {
            ""
        }
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
    fn defaults_parse_and_every_var_is_named_once() {
        let c = Config::default();
        assert_eq!(
            (c.retention_days, c.part_size, c.auto_cleanup),
            (3, R2_MIN_PART_SIZE, true)
        );
        let mut names: Vec<&str> = VARS.iter().map(|v| v.name).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), VARS.len());
    }

    #[test]
    fn bad_values_name_the_var_and_the_rule() {
        let err = Config::from_vars(vars(&[("PART_SIZE_BYTES", "1000")])).unwrap_err();
        assert!(
            err.to_string().contains("PART_SIZE_BYTES") && err.to_string().contains("5 MiB"),
            "{err}"
        );
        let err = Config::from_vars(vars(&[("AUTO_CLEANUP", "maybe")])).unwrap_err();
        assert!(matches!(
            err,
            ConfigError::Parse {
                name: "AUTO_CLEANUP",
                ..
            }
        ));
        assert!(Config::from_vars(vars(&[("STEP_ROWS", "-1")])).is_err());
        assert_eq!(
            Config::from_vars(vars(&[("STEP_ROWS", "1_000")])).unwrap().step_rows,
            1000
        );
    }

    #[test]
    fn fault_injection_needs_test_hooks() {
        let c = Config::from_vars(vars(&[("FAULT_INJECT", "d1:1:1")])).unwrap();
        assert_eq!(c.faults(), "");
        let c = Config::from_vars(vars(&[("FAULT_INJECT", "d1:1:1"), ("TEST_HOOKS", "1")])).unwrap();
        assert_eq!(c.faults(), "d1:1:1");
        // Present but empty is off.
        assert!(!Config::from_vars(vars(&[("TEST_HOOKS", "")])).unwrap().test_hooks);
    }

    #[test]
    fn backoff_doubles_and_caps() {
        let c = Config::default();
        assert_eq!(
            (c.backoff_ms(1), c.backoff_ms(2), c.backoff_ms(30)),
            (2_000, 4_000, 300_000)
        );
    }
}
