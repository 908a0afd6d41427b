//! Every SQL statement the archiver runs against D1, with its parameters and its result shape.
//!
//! Not a query builder and not a database client: the statements are fixed text, run by the D1
//! adapter in the Worker and, unchanged, by a real SQLite in the native tests.
//!
//! **The archived set** of a run is `event_date = :date AND (created_at < :cutoff OR created_at
//! IS NULL)`, where `cutoff` is D1's own `unixepoch()` read when the export starts. `created_at`
//! defaults to that same clock, so every row inserted after the capture is outside the set,
//! wherever its id sorts. Rows with a NULL `created_at` (written so by hand) are archived too;
//! should one arrive during a run, verification (count and fingerprint) or the guarded range
//! delete notices, and nothing unarchived is deleted.

use serde::Deserialize;
use serde_json::Value;

/// A bound parameter. D1 takes at most 100 per statement; none here takes more than 6.
#[derive(Debug, Clone, PartialEq)]
pub enum Param {
    Null,
    Int(i64),
    Text(String),
}

/// A statement ready to run: fixed SQL text and its positional parameters (`?1`, `?2`, ...).
#[derive(Debug, Clone, PartialEq)]
pub struct Statement {
    pub sql: &'static str,
    pub params: Vec<Param>,
}

/// D1's own accounting of one statement (`meta` of its result). D1 bills rows read and written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Meta {
    pub rows_read: u64,
    pub rows_written: u64,
    pub changes: u64,
}

/// The rows of a result, each the list of its column values in SELECT order, with its meta.
/// Positional (D1's `raw()`), which is cheaper to carry out of JavaScript than objects.
#[derive(Debug, Clone, Default)]
pub struct ResultSet {
    pub rows: Vec<Vec<Value>>,
    pub meta: Meta,
}

/// A result that does not have the shape its statement promises.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unexpected result from D1 for `{statement}`: {detail}; check that the migrations in migrations/ are applied (`wrangler d1 migrations apply DB`)")]
pub struct BadResult {
    pub statement: &'static str,
    pub detail: String,
}

/// Decodes one positional row into a tuple or struct (serde reads a struct from a sequence).
fn decode_row<T: for<'de> Deserialize<'de>>(name: &'static str, row: Vec<Value>) -> Result<T, BadResult> {
    T::deserialize(serde::de::value::SeqDeserializer::<_, serde_json::Error>::new(
        row.into_iter(),
    ))
    .map_err(|e| BadResult {
        statement: name,
        detail: e.to_string(),
    })
}

fn decode<T: for<'de> Deserialize<'de>>(name: &'static str, rs: &ResultSet) -> Result<T, BadResult> {
    let row = rs.rows.first().ok_or_else(|| BadResult {
        statement: name,
        detail: "no row".into(),
    })?;
    decode_row(name, row.clone())
}

// ---------------------------------------------------------------------------------------------
// Export

/// D1's clock, in unix seconds: the cutoff of a new archived set.
pub const CLOCK: &str = "SELECT unixepoch() AS now";

pub fn clock() -> Statement {
    Statement {
        sql: CLOCK,
        params: vec![],
    }
}

pub fn parse_clock(rs: &ResultSet) -> Result<i64, BadResult> {
    #[derive(Deserialize)]
    struct Row {
        now: i64,
    }
    decode::<Row>("clock", rs).map(|r| r.now)
}

/// Whether the set holds any row at all (a single index seek).
pub const ANY_IN_SET: &str = "SELECT EXISTS (SELECT 1 FROM traffic_events WHERE event_date = ?1 AND (created_at < ?2 OR created_at IS NULL)) AS any";

pub fn any_in_set(date: &str, cutoff: i64) -> Statement {
    Statement {
        sql: ANY_IN_SET,
        params: vec![Param::Text(date.into()), Param::Int(cutoff)],
    }
}

pub fn parse_any(rs: &ResultSet) -> Result<bool, BadResult> {
    #[derive(Deserialize)]
    struct Row {
        any: i64,
    }
    decode::<Row>("any_in_set", rs).map(|r| r.any != 0)
}

/// One page of the export scan. Per row: the row's fingerprint term, the JSON of the columns
/// before `response_time`, the REAL itself (a number, exact: a double crosses from SQLite to
/// JavaScript without loss; other values JSON-quoted), and the JSON of the columns after it.
/// See [`crate::core::jsonl`] for how a line is put together, and [`PageRow`] for the wire form.
///
/// Keyset pagination on `(event_date, id)`: `id > ?2 ORDER BY id LIMIT ?4` seeks straight to
/// the cursor through `idx_traffic_events_date_id`, so each row is read once however far the scan
/// is (OFFSET would re-read every skipped row, and D1 bills every row read). One result row per
/// table row, with no aggregate or window: those make D1 count rows again through temp tables.
pub const EXPORT_PAGE: &str = "\
SELECT (timestamp % 1000003) || char(31)
    || json_object('id', id, 'path', path, 'method', method, 'status', status) || char(31)
    || json_object('client_ip_hash', client_ip_hash, 'user_agent', user_agent, 'country', country,
                   'timestamp', timestamp, 'event_date', event_date, 'is_error', is_error,
                   'created_at', created_at) AS line,
  CASE WHEN typeof(response_time) IN ('real', 'integer') THEN response_time
       ELSE json_quote(response_time) END AS rt
FROM traffic_events
WHERE event_date = ?1 AND id > ?2 AND (created_at < ?3 OR created_at IS NULL)
ORDER BY id
LIMIT ?4";

/// Columns of [`EXPORT_PAGE`]: `line` (fingerprint term, head and tail joined by
/// [`LINE_SEP`]) and `rt`. Two values per row: the fewer values cross from D1, the faster.
pub const PAGE_COLUMNS: usize = 2;

/// Separates the values of a page on the wire (every value of every row, in order). None of
/// them can hold it raw: `rt` is a number or JSON, `line` digits and JSON objects, and JSON
/// escapes every control character.
pub const WIRE_SEP: char = '\u{1e}';

/// Separates the three parts of `line`.
pub const LINE_SEP: char = '\u{1f}';

pub fn export_page(date: &str, after_id: &str, cutoff: i64, max_rows: u32) -> Statement {
    Statement {
        sql: EXPORT_PAGE,
        params: vec![
            Param::Text(date.into()),
            Param::Text(after_id.into()),
            Param::Int(cutoff),
            Param::Int(i64::from(max_rows)),
        ],
    }
}

/// One row of an export page, borrowed from the page's wire text.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PageRow<'a> {
    /// `timestamp % 1000003`: the row's term of the set fingerprint.
    pub fp: i64,
    /// JSON object of the columns before `response_time`.
    pub head: &'a str,
    /// `response_time`: a number in any exact decimal form, or JSON (`"text"`, `null`).
    pub real: &'a str,
    /// JSON object of the columns after `response_time`.
    pub tail: &'a str,
}

/// A page on the wire: every value of every row joined by [`WIRE_SEP`], numbers in decimal,
/// NULL as the empty string (what JavaScript's `Array.prototype.join` makes of D1's rows).
pub fn page_rows(wire: &str) -> impl Iterator<Item = Result<PageRow<'_>, BadResult>> {
    let bad = |detail: String| BadResult {
        statement: "export_page",
        detail,
    };
    let mut values = wire.split(WIRE_SEP);
    let mut done = wire.is_empty();
    std::iter::from_fn(move || {
        if done {
            return None;
        }
        let fields: Vec<&str> = values.by_ref().take(PAGE_COLUMNS).collect();
        match fields[..] {
            [] => None,
            [line, real] => {
                let mut parts = line.splitn(3, LINE_SEP);
                Some(match (parts.next(), parts.next(), parts.next()) {
                    (Some(fp), Some(head), Some(tail)) => (if fp.is_empty() { Ok(0) } else { fp.parse::<i64>() })
                        .map(|fp| PageRow { fp, head, real, tail })
                        .map_err(|_| bad(format!("fingerprint {fp:?} is not an integer"))),
                    _ => Err(bad(format!("row line has no three parts: {line:.60}"))),
                })
            }
            _ => {
                done = true;
                Some(Err(bad(format!(
                    "a row has {} values, expected {PAGE_COLUMNS}",
                    fields.len()
                ))))
            }
        }
    })
}

/// Rows in a page's wire text.
pub fn page_len(wire: &str) -> u64 {
    if wire.is_empty() {
        0
    } else {
        (wire.matches(WIRE_SEP).count() as u64 + 1) / PAGE_COLUMNS as u64
    }
}

/// The `head` of a page's last row, found from the end without parsing the rest.
pub fn last_head(wire: &str) -> Option<&str> {
    let line = wire.rsplitn(PAGE_COLUMNS + 1, WIRE_SEP).nth(PAGE_COLUMNS - 1)?;
    line.split(LINE_SEP).nth(1)
}

/// The id of a row, read from its `head` (`{"id":"…",…}`).
pub fn head_id(head: &str) -> Result<String, BadResult> {
    let rest = head.strip_prefix("{\"id\":").ok_or_else(|| BadResult {
        statement: "export_page",
        detail: format!("row head does not start with the id: {:.40}", head),
    })?;
    let mut de = serde_json::Deserializer::from_str(rest);
    String::deserialize(&mut de).map_err(|e| BadResult {
        statement: "export_page",
        detail: format!("row id: {e}"),
    })
}

#[cfg(test)]
mod page_tests {
    use super::*;

    #[test]
    fn wire_pages_split_into_rows() {
        let wire = "5\u{1f}{\"id\":\"a\\\"b\"}\u{1f}{}\u{1e}1.5\u{1e}\u{1f}{\"id\":\"c\"}\u{1f}{\"x\":1}\u{1e}null";
        let rows: Vec<PageRow> = page_rows(wire).collect::<Result<_, _>>().unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(
            (rows[0].fp, rows[0].real, rows[1].fp, rows[1].tail),
            (5, "1.5", 0, "{\"x\":1}")
        );
        assert_eq!(head_id(rows[0].head).unwrap(), "a\"b");
        assert_eq!(page_len(wire), 2);
        assert_eq!(last_head(wire), Some("{\"id\":\"c\"}"));
        let one = "7\u{1f}{\"id\":\"z\"}\u{1f}{}\u{1e}2.5";
        assert_eq!((page_len(one), last_head(one)), (1, Some("{\"id\":\"z\"}")));
        assert_eq!((page_len(""), last_head("")), (0, None));
        assert_eq!(page_rows("").count(), 0);
        assert!(page_rows("1\u{1f}{}\u{1e}1.0\u{1e}x").any(|r| r.is_err()));
        assert!(page_rows("1{}\u{1e}1.0").any(|r| r.is_err()));
    }
}

// ---------------------------------------------------------------------------------------------
// Verification

/// Count and fingerprint of the whole archived set.
pub const SET_SUMMARY: &str = "\
SELECT count(*) AS rows, coalesce(sum(timestamp % 1000003), 0) AS fp, min(id) AS first_id, max(id) AS last_id
FROM traffic_events WHERE event_date = ?1 AND (created_at < ?2 OR created_at IS NULL)";

pub fn set_summary(date: &str, cutoff: i64) -> Statement {
    Statement {
        sql: SET_SUMMARY,
        params: vec![Param::Text(date.into()), Param::Int(cutoff)],
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct SetSummary {
    pub rows: u64,
    pub fp: i64,
    pub first_id: Option<String>,
    pub last_id: Option<String>,
}

pub fn parse_set_summary(rs: &ResultSet) -> Result<SetSummary, BadResult> {
    decode("set_summary", rs)
}

// ---------------------------------------------------------------------------------------------
// Cleaning

/// Deletes the set's rows in the id range `(?2, ?3]`, **only if** that range still holds exactly
/// `?5` of them: the number the archive holds for it. One statement, so the check and the delete
/// are atomic; a range that gained or lost rows since the export is left untouched.
pub const DELETE_RANGE: &str = "\
DELETE FROM traffic_events
WHERE event_date = ?1 AND id > ?2 AND id <= ?3 AND (created_at < ?4 OR created_at IS NULL)
  AND (SELECT count(*) FROM traffic_events
       WHERE event_date = ?1 AND id > ?2 AND id <= ?3 AND (created_at < ?4 OR created_at IS NULL)) = ?5";

pub fn delete_range(date: &str, after: &str, upto: &str, cutoff: i64, expected: u64) -> Statement {
    Statement {
        sql: DELETE_RANGE,
        params: vec![
            Param::Text(date.into()),
            Param::Text(after.into()),
            Param::Text(upto.into()),
            Param::Int(cutoff),
            Param::Int(expected as i64),
        ],
    }
}

/// Rows of the set in the id range `(?2, ?3]`.
pub const COUNT_RANGE: &str = "\
SELECT count(*) AS rows FROM traffic_events
WHERE event_date = ?1 AND id > ?2 AND id <= ?3 AND (created_at < ?4 OR created_at IS NULL)";

pub fn count_range(date: &str, after: &str, upto: &str, cutoff: i64) -> Statement {
    Statement {
        sql: COUNT_RANGE,
        params: vec![
            Param::Text(date.into()),
            Param::Text(after.into()),
            Param::Text(upto.into()),
            Param::Int(cutoff),
        ],
    }
}

pub fn parse_count(rs: &ResultSet) -> Result<u64, BadResult> {
    #[derive(Deserialize)]
    struct Row {
        rows: u64,
    }
    decode::<Row>("count", rs).map(|r| r.rows)
}

/// Rows of the set left anywhere: the final check before `d1_cleaned = 1`.
pub const COUNT_SET: &str =
    "SELECT count(*) AS rows FROM traffic_events WHERE event_date = ?1 AND (created_at < ?2 OR created_at IS NULL)";

pub fn count_set(date: &str, cutoff: i64) -> Statement {
    Statement {
        sql: COUNT_SET,
        params: vec![Param::Text(date.into()), Param::Int(cutoff)],
    }
}

// ---------------------------------------------------------------------------------------------
// archive_metadata

/// Upserts the date's row. Columns not known yet are written as NULL and never overwrite a
/// known value (`coalesce(excluded.x, x)`), so a failure does not erase the archive's details.
pub const UPSERT_METADATA: &str = "\
INSERT INTO archive_metadata (date, r2_path, record_count, file_size_bytes, status, error_message,
  archived_at, completed_at, d1_cleaned, generation, parts, checksum_crc32, first_id, last_id,
  cutoff_created_at, rows_deleted, total_record_count, attempts, updated_at)
VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19)
ON CONFLICT (date) DO UPDATE SET
  r2_path = coalesce(excluded.r2_path, r2_path),
  record_count = coalesce(excluded.record_count, record_count),
  file_size_bytes = coalesce(excluded.file_size_bytes, file_size_bytes),
  status = excluded.status,
  error_message = excluded.error_message,
  archived_at = coalesce(excluded.archived_at, archived_at),
  completed_at = excluded.completed_at,
  d1_cleaned = excluded.d1_cleaned,
  generation = excluded.generation,
  parts = coalesce(excluded.parts, parts),
  checksum_crc32 = coalesce(excluded.checksum_crc32, checksum_crc32),
  first_id = coalesce(excluded.first_id, first_id),
  last_id = coalesce(excluded.last_id, last_id),
  cutoff_created_at = coalesce(excluded.cutoff_created_at, cutoff_created_at),
  rows_deleted = excluded.rows_deleted,
  total_record_count = excluded.total_record_count,
  attempts = excluded.attempts,
  updated_at = excluded.updated_at";

/// One `archive_metadata` row as the core wants it written.
#[derive(Debug, Clone, PartialEq, Default, serde::Serialize)]
pub struct MetadataRow {
    pub date: String,
    pub r2_path: Option<String>,
    pub record_count: Option<u64>,
    pub file_size_bytes: Option<u64>,
    pub status: &'static str,
    pub error_message: Option<String>,
    pub archived_at: Option<i64>,
    pub completed_at: Option<i64>,
    pub d1_cleaned: bool,
    pub generation: u32,
    pub parts: Option<u32>,
    pub checksum_crc32: Option<String>,
    pub first_id: Option<String>,
    pub last_id: Option<String>,
    pub cutoff_created_at: Option<i64>,
    pub rows_deleted: u64,
    pub total_record_count: u64,
    pub attempts: u32,
    pub updated_at: i64,
}

fn int(v: Option<i64>) -> Param {
    v.map_or(Param::Null, Param::Int)
}

fn text(v: &Option<String>) -> Param {
    v.clone().map_or(Param::Null, Param::Text)
}

pub fn upsert_metadata(m: &MetadataRow) -> Statement {
    let params = vec![
        Param::Text(m.date.clone()),
        text(&m.r2_path),
        int(m.record_count.map(|v| v as i64)),
        int(m.file_size_bytes.map(|v| v as i64)),
        Param::Text(m.status.into()),
        text(&m.error_message),
        int(m.archived_at),
        int(m.completed_at),
        Param::Int(i64::from(m.d1_cleaned)),
        Param::Int(i64::from(m.generation)),
        int(m.parts.map(i64::from)),
        text(&m.checksum_crc32),
        text(&m.first_id),
        text(&m.last_id),
        int(m.cutoff_created_at),
        Param::Int(m.rows_deleted as i64),
        Param::Int(m.total_record_count as i64),
        Param::Int(i64::from(m.attempts)),
        Param::Int(m.updated_at),
    ];
    Statement {
        sql: UPSERT_METADATA,
        params,
    }
}
