//! Every SQL statement the archiver runs against D1, with its parameters and its result shape.
//!
//! Not a query builder and not a database client: the statements are fixed text, run by the D1
//! adapter in the Worker and, unchanged, by a real SQLite in the native tests.
//!
//! **What is archived** is what the export's keyset scan read: every row of the date, in id
//! order (NULL ids first, by rowid). No clock and no `created_at` decides it. **What is
//! deleted** is decided row by row against lines read back from R2: [`DELETE_KEYED`] and
//! [`DELETE_BATCH`] remove a row only if a line of the batch equals it in every column, with its
//! SQL type (`IS`, so NULLs compare; `typeof`, so `1`, `1.0` and `'1'` differ; BLOBs by their
//! bytes). A batch runs once: it is guarded by its row in `archive_ledger`, written in the same
//! D1 batch.
//!
//! Archived lines carry BLOB values as `{"$blob":"<uppercase hex>"}`; no SQLite value is a
//! JSON object, so the two cannot be confused.

use crate::core::config::D1_MAX_STRING;
use serde::Deserialize;
use serde_json::Value;

/// A bound parameter. D1 takes at most 100 per statement; none here takes more than 6.
#[derive(Debug, Clone, PartialEq)]
pub enum Param {
    Null,
    /// At most [`MAX_EXACT_INT`] either way: D1 binds a JavaScript number. A value that may be
    /// larger (a rowid) goes as text, made an integer again in SQL (`CAST(?n AS INTEGER)`).
    Int(i64),
    Text(String),
    Blob(Vec<u8>),
}

/// The largest integer a JavaScript number holds exactly (2^53). The D1 adapter refuses to bind
/// a larger [`Param::Int`] rather than round it, and so does the native tests' D1.
pub const MAX_EXACT_INT: u64 = 1 << 53;

impl Param {
    /// An integer the D1 adapter could only bind rounded: a bug in the statement that binds it.
    pub fn inexact_int(&self) -> Option<i64> {
        match self {
            Param::Int(i) if i.unsigned_abs() > MAX_EXACT_INT => Some(*i),
            Param::Int(_) | Param::Null | Param::Text(_) | Param::Blob(_) => None,
        }
    }
}

/// A statement ready to run: fixed SQL text and its positional parameters (`?1`, `?2`, ...).
#[derive(Debug, Clone, PartialEq)]
pub struct Statement {
    pub sql: &'static str,
    pub params: Vec<Param>,
}

impl Statement {
    fn new(sql: &'static str, params: Vec<Param>) -> Statement {
        Statement { sql, params }
    }
}

/// D1's own accounting of one statement (`meta` of its result). D1 bills rows read and written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Meta {
    pub rows_read: u64,
    pub rows_written: u64,
    pub changes: u64,
    /// How long D1 took to run the statement (its `duration`), in microseconds; 0 where the
    /// database does not say.
    pub sql_us: u64,
}

/// The rows of a result, each the list of its column values in SELECT order, with its meta.
#[derive(Debug, Clone, Default, PartialEq)]
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

fn bad(statement: &'static str, detail: impl Into<String>) -> BadResult {
    BadResult {
        statement,
        detail: detail.into(),
    }
}

/// Decodes one positional row into a tuple or struct (serde reads a struct from a sequence).
pub fn decode_row<T: for<'de> Deserialize<'de>>(name: &'static str, row: &[Value]) -> Result<T, BadResult> {
    T::deserialize(serde::de::value::SeqDeserializer::<_, serde_json::Error>::new(
        row.iter().cloned(),
    ))
    .map_err(|e| bad(name, e.to_string()))
}

/// Every row of a result, decoded.
pub fn decode_rows<T: for<'de> Deserialize<'de>>(name: &'static str, rs: &ResultSet) -> Result<Vec<T>, BadResult> {
    rs.rows.iter().map(|r| decode_row(name, r)).collect()
}

/// The single number a `SELECT count(*)`-like statement returns.
pub fn single_u64(name: &'static str, rs: &ResultSet) -> Result<u64, BadResult> {
    let row = rs.rows.first().ok_or_else(|| bad(name, "no row"))?;
    decode_row::<(u64,)>(name, row).map(|(n,)| n)
}

// ---------------------------------------------------------------------------------------------
// The table's columns, and the SQL fragments that read and compare them

/// The columns of `traffic_events`, in table order: the order of every archived line's keys.
pub const COLUMNS: [&str; 12] = [
    "id",
    "path",
    "method",
    "status",
    "response_time",
    "client_ip_hash",
    "user_agent",
    "country",
    "timestamp",
    "event_date",
    "is_error",
    "created_at",
];

/// The column whose REAL values SQLite's JSON would round (it prints 15 digits); it crosses to
/// the Worker as a number instead and [`crate::core::jsonl`] splices it into the line.
pub const REAL_COLUMN: &str = "response_time";

/// Expands `$each!("col")` for every column of a set, joined by `$sep`. The sets, each in
/// table order (a test checks them against [`COLUMNS`]):
/// - `all`: every column;
/// - `head` and `tail`: the columns before and after the REAL one;
/// - `wire`: all but the REAL one and the date (what an export page selects as one text);
/// - `keyed`: all but the id, the REAL one and the date (what [`DELETE_KEYED`] compares).
#[rustfmt::skip]
macro_rules! columns {
    (all, $each:ident, $sep:literal) => { join!($each, $sep; "id", "path", "method", "status", "response_time", "client_ip_hash", "user_agent", "country", "timestamp", "event_date", "is_error", "created_at") };
    (head, $each:ident, $sep:literal) => { join!($each, $sep; "id", "path", "method", "status") };
    (tail, $each:ident, $sep:literal) => { join!($each, $sep; "client_ip_hash", "user_agent", "country", "timestamp", "event_date", "is_error", "created_at") };
    (wire, $each:ident, $sep:literal) => { join!($each, $sep; "id", "path", "method", "status", "client_ip_hash", "user_agent", "country", "timestamp", "is_error", "created_at") };
    (keyed, $each:ident, $sep:literal) => { join!($each, $sep; "path", "method", "status", "client_ip_hash", "user_agent", "country", "timestamp", "is_error", "created_at") };
}

/// `$each!(c)` for every literal `c`, joined by `$sep`.
macro_rules! join {
    ($each:ident, $sep:literal; $first:literal $(, $c:literal)*) => {
        concat!($each!($first) $(, $sep, $each!($c))*)
    };
}

/// `'col', value` for `json_object`: BLOBs become `{"$blob":"HEX"}` (`$p` prefixes the column).
macro_rules! encode_col {
    ($p:literal, $c:literal) => {
        concat!("'", $c, "', ", value_of!($p, $c))
    };
}
macro_rules! encode_t {
    ($c:literal) => {
        encode_col!("t.", $c)
    };
}

/// Row `t`'s columns other than the REAL one, as the JSON text the export wrote for them.
macro_rules! kv_of_t {
    () => {
        concat!(
            "json_object(",
            columns!(head, encode_t, ", "),
            ", ",
            columns!(tail, encode_t, ", "),
            ")"
        )
    };
}

/// How many columns `columns!(keyed, …)` names: all but the id, `event_date` and the REAL column.
const KEYED_VALUES: usize = COLUMNS.len() - 3;

/// A column's value (`$p` prefixes it) as the export wrote it in JSON: BLOBs as
/// `{"$blob":"HEX"}`.
macro_rules! value_of {
    ($p:literal, $c:literal) => {
        concat!(
            "CASE WHEN typeof(",
            $p,
            $c,
            ") = 'blob' THEN json_object('$blob', hex(",
            $p,
            $c,
            ")) ELSE ",
            $p,
            $c,
            " END"
        )
    };
}
macro_rules! value_t {
    ($c:literal) => {
        value_of!("t.", $c)
    };
}

/// Row `t`'s `columns!(keyed, …)` as the JSON array of the values the export wrote for them.
macro_rules! keyed_values_of_t {
    () => {
        concat!("json_array(", columns!(keyed, value_t, ", "), ")")
    };
}

/// A batch's lines, one row each (`key`, `value`: the line as JSON text): the JSON array `?1`
/// and the one whose UTF-8 is the hex `$wide` (the parameters of [`lines_params`]).
macro_rules! lines_source {
    ($wide:literal) => {
        concat!(
            "SELECT key, value FROM json_each(?1) UNION ALL SELECT key, value FROM json_each(CAST(unhex(",
            $wide,
            ") AS TEXT))"
        )
    };
}

/// The columns of a line row `l` computed from `value` (see [`batch_lines`]).
macro_rules! line_columns {
    () => {
        concat!(
            "value -> '$.id' AS idj, CASE json_type(value, '$.id') WHEN 'object' THEN",
            " unhex(value ->> '$.id.\"$blob\"') ELSE value ->> '$.id' END AS id,",
            " json_remove(value, '$.response_time') AS kv, value -> '$.response_time' AS r, value AS v"
        )
    };
}

/// A batch's lines as rows `l`: `id` (the SQL value), `idj` (its JSON), `kv` (the line without
/// its REAL column: exactly the text SQLite's `json_object` wrote for the other columns at
/// export), `r` (the REAL column's JSON) and `v` (the line), from [`lines_source`].
macro_rules! batch_lines {
    ($wide:literal, $extra:literal) => {
        concat!(
            "(SELECT ",
            line_columns!(),
            $extra,
            " FROM (",
            lines_source!($wide),
            "))"
        )
    };
}

/// [`batch_lines`] as the materialised table `l`, for a statement that reads its lines more than
/// once. The lines' text is materialised first (`raw`): `json_each` renders a line's `value`
/// anew each time it is read, and the columns of `l` read it five times. Natively, over the
/// bench's day, this took a restore's check from 14–19 to 12–16 µs per line.
macro_rules! materialised_lines {
    ($wide:literal) => {
        concat!(
            "WITH raw AS MATERIALIZED (",
            lines_source!($wide),
            "), l AS MATERIALIZED (SELECT ",
            line_columns!(),
            " FROM raw)"
        )
    };
}

/// True when row `t` equals line `l` in every column, with its type: one rendering of the other
/// columns compared with the archived text (SQLite's JSON is exact and typed: `1`, `1.0` and
/// `"1"` differ; REALs are written to round-trip), and the REAL column compared typed, byte
/// for byte where it holds text (`COLLATE BINARY`: an app's table may give the column NOCASE or
/// RTRIM, under which `'FAST'` would equal `"fast"`; found by a review).
macro_rules! same_row {
    () => {
        concat!(
            "(",
            kv_of_t!(),
            " = l.kv AND (CASE json_type(l.r) WHEN 'object' THEN typeof(t.response_time) = 'blob'",
            " AND hex(t.response_time) IS (l.r ->> '$.\"$blob\"') ELSE t.response_time IS (l.r ->> '$') COLLATE BINARY",
            " AND typeof(t.response_time) = typeof(l.r ->> '$') END))"
        )
    };
}

/// True unless column `$c` of row `t` holds a REAL that its own JSON text (what the export
/// wrote for a REAL outside the REAL column) does not read back as, or one outside
/// 2^-60 ..= 2^60: a REAL zero too, since SQLite cannot tell `-0.0` from `0.0` (it writes both
/// `0.0`, and they compare equal), so a row changed from one to the other would pass for its
/// line (a review found it when zeros were let through). Where the row's text equals a line's
/// and reads back as the row's value, the line holds that value exactly. SQLite 3.54.1 (local workerd's) writes the digits each value
/// needs and reads decimals exactly, so there only the band keeps a row; SQLite 3.50 wrote 15
/// digits and read some extreme decimals one unit off, and there this check is what kept a row
/// whose archived digits had rounded it, or that changed to another REAL with the same digits.
/// A REAL in an INTEGER column is never a whole number (SQLite stores those as integers), so it
/// lies below 2^52. A `CASE`, not an `OR`: SQLite evaluates both sides of an `OR` that stands
/// as a value, and `json_quote` of a BLOB is an error.
macro_rules! reads_back_t {
    ($c:literal) => {
        concat!(
            "CASE WHEN typeof(t.",
            $c,
            ") = 'real' THEN abs(t.",
            $c,
            ") BETWEEN 1.0 / (1 << 60) AND (1 << 60) AND CAST(json_quote(t.",
            $c,
            ") AS REAL) = t.",
            $c,
            " ELSE 1 END"
        )
    };
}

/// [`same_row`] where a REAL in a column other than the REAL one also reads back exactly from
/// its text ([`reads_back_t`]): what a delete needs, beyond what a restore's check compares.
macro_rules! same_row_exact {
    () => {
        concat!(
            "(",
            same_row!(),
            " AND ",
            columns!(head, reads_back_t, " AND "),
            " AND ",
            columns!(tail, reads_back_t, " AND "),
            ")"
        )
    };
}

/// Line `l`'s value for a column other than the REAL one, as the SQLite value it was read from
/// (from the line itself: `l.kv` is computed anew wherever it is used).
macro_rules! decode_kv {
    ($c:literal) => {
        concat!(
            "CASE json_type(l.v, '$.",
            $c,
            "') WHEN 'object' THEN unhex(l.v ->> '$.",
            $c,
            ".\"$blob\"') ELSE l.v ->> '$.",
            $c,
            "' END"
        )
    };
}

/// Line `l`'s REAL column value.
macro_rules! decode_rt {
    () => {
        "CASE json_type(l.r) WHEN 'object' THEN unhex(l.r ->> '$.\"$blob\"') ELSE l.r ->> '$' END"
    };
}

/// Line `l`'s values in column order, as the SQLite values they were read from.
macro_rules! decode_line {
    () => {
        concat!(
            columns!(head, decode_kv, ", "),
            ", ",
            decode_rt!(),
            ", ",
            columns!(tail, decode_kv, ", ")
        )
    };
}

macro_rules! name {
    ($c:literal) => {
        $c
    };
}

/// A column's value as the JSON the export writes for it (`json_quote`, exactly what
/// `json_object` writes; BLOBs as `{"$blob":"HEX"}`), followed by [`LINE_SEP`].
macro_rules! wire_value {
    ($c:literal) => {
        concat!(
            " || char(31) || CASE WHEN typeof(",
            $c,
            ") = 'blob' THEN json_object('$blob', hex(",
            $c,
            ")) ELSE json_quote(",
            $c,
            ") END"
        )
    };
}

/// The select list of an export page: `line` = the key, then the JSON value of every column
/// but the REAL one and `event_date`, in table order, joined by [`LINE_SEP`]; `rt` = the REAL
/// column (a number; anything else as `=` and its JSON). The column names are not sent: they
/// are [`COLUMNS`]. Nor is `event_date`: every statement selects `event_date = ?1`, a TEXT
/// equal to the date (a BLOB or a number never equals a TEXT), so [`page_rows`] puts the date
/// in its place.
macro_rules! export_select {
    ($key:expr) => {
        export_select!($key, "")
    };
    ($key:expr, $more:expr) => {
        concat!(
            "SELECT ",
            $key,
            columns!(wire, wire_value, ""),
            " AS line,",
            " CASE typeof(response_time) WHEN 'real' THEN response_time",
            " WHEN 'blob' THEN '=' || json_object('$blob', hex(response_time))",
            " ELSE '=' || json_quote(response_time) END AS rt",
            $more,
            " FROM traffic_events"
        )
    };
}

// ---------------------------------------------------------------------------------------------
// Export: the keyset scan

/// An export page: [`export_select`] with `key`, over the date's rows that `rest` (the cursor's
/// condition, order and limit) picks.
macro_rules! export_page {
    ($key:expr, $rest:literal) => {
        concat!(export_select!($key), " WHERE event_date = ?1 AND ", $rest)
    };
}

/// An export page held to about `$cap` bytes of lines in SQL: a row goes only while the rows
/// before it in the page hold fewer bytes, so a page holds at most that and one row, whatever
/// the rows' sizes. `$page` selects the page's order key `$order` too, as `k`; the running sum
/// and the page go by it. A sort and a window more than a plain page (twice its SQL natively),
/// so it is used only for a step after one that never saved (its isolate died, most likely of
/// a page too large for its memory: see [`export_page`]).
macro_rules! capped {
    ($page:expr, $cap:literal) => {
        concat!(
            "SELECT line, rt FROM (SELECT line, rt, k, sum(length(CAST(line AS BLOB))) OVER (ORDER BY k",
            " ROWS UNBOUNDED PRECEDING) - length(CAST(line AS BLOB)) AS before FROM (",
            $page,
            ")) WHERE before < ",
            $cap,
            " ORDER BY k"
        )
    };
}

/// The key of a numeric-id page row: [`INEXACT`] for a REAL id whose JSON text (what the line
/// holds, and the scan's cursor) does not read back as it, else empty. SQLite 3.54 writes every
/// REAL exactly; one that writes 15 digits (3.50) would archive another id than the row's, and
/// its cursor could stand before an id it read or pass over ids it did not (found by a review).
macro_rules! inexact_real_id {
    () => {
        "CASE WHEN typeof(id) = 'real' AND CAST(json_quote(id) AS REAL) IS NOT id THEN 'inexact' ELSE '' END"
    };
}

/// What `inexact_real_id!` says of a REAL id that does not read back from its JSON.
pub const INEXACT: &str = "inexact";

/// Export page statements ([`export_page!`]) each in its `$order`, and the same held to `$cap`
/// bytes ([`capped!`]).
macro_rules! export_pages {
    ($($(#[$doc:meta])* $plain:ident, $capped:ident: $key:expr, $order:literal, $rest:literal, $cap:literal;)*) => {$(
        $(#[$doc])*
        pub const $plain: &str = export_page!($key, $rest);
        #[doc = concat!("[`", stringify!($plain), "`] held to `", $cap, "` bytes of lines in SQL.")]
        pub const $capped: &str = capped!(
            concat!(export_select!($key, concat!(", ", $order, " AS k")), " WHERE event_date = ?1 AND ", $rest),
            $cap
        );
    )*};
}

export_pages! {
    /// Rows of the date with a NULL id (SQLite allows them in a non-INTEGER primary key), by
    /// rowid: the first segment of the scan. `?2` is the last rowid read, as text: an app can
    /// write rowids past 2^53, which a JavaScript number would round (found by a review: the
    /// scan read a row twice or skipped rows).
    EXPORT_NULL_IDS, EXPORT_NULL_IDS_CAPPED: "rowid", "rowid", "id IS NULL AND rowid > CAST(?2 AS INTEGER) ORDER BY rowid LIMIT ?3", "?4";
    /// The first page of [`EXPORT_NULL_IDS`] (`LIMIT ?2`), from the lowest rowid: an app can
    /// write a row with rowid 0 or below (before, the scan started after 0 and never read such
    /// a row; found by a review).
    EXPORT_FIRST_NULL_IDS, EXPORT_FIRST_NULL_IDS_CAPPED: "rowid", "rowid", "id IS NULL ORDER BY rowid LIMIT ?2", "?3";
    /// The first page of numeric ids, the second segment: an app's own table whose `id` has no
    /// TEXT affinity (`INTEGER PRIMARY KEY`, or a column declared without a type) can hold
    /// INTEGER and REAL ids, which sort after NULL and before every text (before, the scan
    /// never read them, and such a date ended cleaned with them in D1; found by a review). The
    /// migration's table holds none: one index seek that finds nothing.
    EXPORT_FIRST_NUMBERS, EXPORT_FIRST_NUMBERS_CAPPED: inexact_real_id!(), "id", "id < '' ORDER BY id LIMIT ?2", "?3";
    /// The next page of numeric ids after the cursor `?2`: the last one's JSON text, which
    /// SQLite reads back as the same INTEGER or REAL.
    EXPORT_AFTER_NUMBER, EXPORT_AFTER_NUMBER_CAPPED: inexact_real_id!(), "id", "id < '' AND id > (?2 ->> '$') ORDER BY id LIMIT ?3", "?4";
    /// The first page of the last segment: `id >= ''` takes every text id, `''` included, and
    /// BLOB ids (which sort after all text). Seeks through `idx_traffic_events_date_id`.
    EXPORT_FIRST_IDS, EXPORT_FIRST_IDS_CAPPED: "''", "id", "id >= '' ORDER BY id LIMIT ?2", "?3";
    /// The next page of ids after the cursor `?2` (text or BLOB). Keyset pagination, never
    /// OFFSET: each row is read once however far the scan is, and D1 bills every row read.
    EXPORT_AFTER_ID, EXPORT_AFTER_ID_CAPPED: "''", "id", "id > ?2 ORDER BY id LIMIT ?3", "?4";
    /// [`EXPORT_AFTER_ID`] after a text id given as its bytes `?2` (a BLOB made TEXT again,
    /// byte for byte): see [`exact_cursor`].
    EXPORT_AFTER_BYTES, EXPORT_AFTER_BYTES_CAPPED: "''", "id", "id > CAST(?2 AS TEXT) ORDER BY id LIMIT ?3", "?4";
}

/// The hex of the last id of the page of `LIMIT ?3` (`?2` for the first ids) after the cursor,
/// for [`exact_cursor`].
macro_rules! last_id_hex {
    ($after:literal, $limit:literal) => {
        concat!(
            "SELECT hex(max(id)) FROM (SELECT id FROM traffic_events WHERE event_date = ?1 AND ",
            $after,
            " ORDER BY id LIMIT ",
            $limit,
            ")"
        )
    };
}
pub const LAST_ID_HEX_FIRST: &str = last_id_hex!("id >= ''", "?2");
pub const LAST_ID_HEX_AFTER: &str = last_id_hex!("id > ?2", "?3");
pub const LAST_ID_HEX_BYTES: &str = last_id_hex!("id > CAST(?2 AS TEXT)", "?3");

/// Whether the cursor after a page is not the id D1 holds: JavaScript reads text as UTF-8 and
/// turns bytes that are not into U+FFFD, so the next page would start before the row again (a
/// scan of one-row pages would never get past it) or skip rows.
pub fn cursor_is_lossy(cursor: &Cursor) -> bool {
    matches!(cursor, Cursor::After { id } if id.is_lossy())
}

/// The statement that reads the bytes of the last id of the page of `rows` rows that started
/// at `before` (the cursor before it), when [`cursor_is_lossy`]; its answer becomes the cursor
/// through [`cursor_of_hex`]. `None` where the page cannot have been of ids.
pub fn exact_cursor(date: &str, before: &Cursor, rows: u32) -> Option<Statement> {
    let (date, rows) = (Param::Text(date.into()), Param::Int(i64::from(rows)));
    Some(match before {
        Cursor::Start | Cursor::NullIds { .. } | Cursor::FirstNumber | Cursor::AfterNumber { .. } => return None,
        Cursor::FirstId => Statement::new(LAST_ID_HEX_FIRST, vec![date, rows]),
        Cursor::After { id } => Statement::new(LAST_ID_HEX_AFTER, vec![date, id.param(), rows]),
        Cursor::AfterBytes { hex } => Statement::new(
            LAST_ID_HEX_BYTES,
            vec![date, Param::Blob(hex::decode(hex).unwrap_or_default()), rows],
        ),
    })
}

/// The cursor from the answer of [`exact_cursor`]'s statement (one value, on the wire), which
/// must be the id JavaScript gave as `lossy`. Were it another (rows of the date inserted or
/// deleted before the page's end in between), the step fails and is retried.
pub fn cursor_of_hex(wire: &str, lossy: &str) -> Result<Cursor, BadResult> {
    let bytes = hex::decode(wire).map_err(|e| bad("exact_cursor", format!("{e}: {wire:.60}")))?;
    // Decoders may disagree on how many U+FFFD a run of bad bytes becomes, not on where.
    let runs = |s: &str| {
        let mut out = String::with_capacity(s.len());
        for c in s.chars() {
            if !(c == '\u{FFFD}' && out.ends_with('\u{FFFD}')) {
                out.push(c);
            }
        }
        out
    };
    if bytes.is_empty() || runs(&String::from_utf8_lossy(&bytes)) != runs(lossy) {
        return Err(bad(
            "exact_cursor",
            format!("the page's last id {lossy:.60} is no longer where the page ended; the rows changed meanwhile, the step is retried"),
        ));
    }
    Ok(Cursor::AfterBytes { hex: wire.to_string() })
}

/// Where the scan stands: the segment and the last key read in it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(tag = "at", rename_all = "snake_case")]
pub enum Cursor {
    /// Nothing read yet.
    Start,
    /// In the NULL-id segment, after this rowid.
    NullIds { rowid: i64 },
    /// No NULL id left; no numeric id read yet.
    FirstNumber,
    /// After the numeric id with this JSON text.
    AfterNumber { json: String },
    /// No NULL or numeric id left; no text or BLOB id read yet.
    FirstId,
    /// After this id.
    After { id: Key },
    /// After the text id with these bytes (hex): one that JavaScript cannot give back byte for
    /// byte ([`cursor_is_lossy`]).
    AfterBytes { hex: String },
}

/// The segments of the scan, in its order: NULL ids by rowid, numeric ids, then text and BLOB
/// ids (each segment by id, as SQLite sorts them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Segment {
    NullIds,
    Numbers,
    Ids,
}

impl Cursor {
    /// The segment the cursor stands in.
    pub fn segment(&self) -> Segment {
        match self {
            Cursor::Start | Cursor::NullIds { .. } => Segment::NullIds,
            Cursor::FirstNumber | Cursor::AfterNumber { .. } => Segment::Numbers,
            Cursor::FirstId | Cursor::After { .. } | Cursor::AfterBytes { .. } => Segment::Ids,
        }
    }

    /// Whether the id with JSON `id`, the first of a page after this cursor, comes after it
    /// byte for byte ([`id_follows`]); `None` where the cursor holds no id to tell by.
    pub fn precedes(&self, id: &str) -> Result<Option<bool>, BadResult> {
        match self {
            Cursor::After { id: key } if !key.is_lossy() => {
                let next = id_key(id)?;
                Ok((!next.is_lossy()).then(|| *key < next))
            }
            Cursor::AfterNumber { json } => Ok(number_follows(json, id)),
            Cursor::Start
            | Cursor::NullIds { .. }
            | Cursor::FirstNumber
            | Cursor::FirstId
            | Cursor::After { .. }
            | Cursor::AfterBytes { .. } => Ok(None),
        }
    }

    /// How an operator finds the row the cursor stands after, for messages.
    pub fn name(&self) -> String {
        match self {
            Cursor::After { id: Key::Text(t) } => format!("id {}", Value::from(t.as_str())),
            Cursor::After { id: Key::Blob(h) } => format!("id {{\"$blob\":\"{h}\"}}"),
            Cursor::AfterBytes { hex } => format!("id with the bytes {hex}"),
            Cursor::AfterNumber { json } => format!("id {json}"),
            Cursor::NullIds { rowid } => format!("with a NULL id at rowid {rowid}"),
            Cursor::Start | Cursor::FirstNumber | Cursor::FirstId => "none yet".into(),
        }
    }

    /// Where the segment after this cursor's starts; `None` after the last.
    pub fn next_segment(&self) -> Option<Cursor> {
        match self.segment() {
            Segment::NullIds => Some(Cursor::FirstNumber),
            Segment::Numbers => Some(Cursor::FirstId),
            Segment::Ids => None,
        }
    }
}

/// A primary key value: text, or BLOB bytes (kept as hex in the persisted state).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Key {
    Text(String),
    Blob(String),
}

/// Whether text `t` is an id JavaScript handed over with U+FFFD for bytes that are not UTF-8
/// (it cannot be given back byte for byte, and it sorted where its bytes did, not its text).
pub fn lossy_text(t: &str) -> bool {
    t.contains('\u{FFFD}')
}

impl Key {
    /// A text id with U+FFFD ([`lossy_text`]).
    pub fn is_lossy(&self) -> bool {
        matches!(self, Key::Text(t) if lossy_text(t))
    }

    fn param(&self) -> Param {
        match self {
            Key::Text(t) => Param::Text(t.clone()),
            // The hex was written by SQLite's own hex(); an odd string cannot come from there.
            Key::Blob(h) => Param::Blob(hex::decode(h).unwrap_or_default()),
        }
    }
}

/// The page of the scan after `cursor`, of at most `limit` rows; with `cap`, also of at most
/// `cap` bytes of lines and one row, in SQL.
///
/// The limit comes from the sizes of the rows read so far (`PAGE_BYTES`), so a sudden run of
/// much larger rows can make one page much larger than that: if it kills the isolate, the step
/// runs again from the same cursor with the cap ([`capped!`]), instead of dying the same way
/// for ever.
pub fn export_page(date: &str, cursor: &Cursor, limit: u32, cap: Option<u64>) -> Statement {
    let (date, limit) = (Param::Text(date.into()), Param::Int(i64::from(limit)));
    let (plain, capped, mut params) = match cursor {
        Cursor::Start => (EXPORT_FIRST_NULL_IDS, EXPORT_FIRST_NULL_IDS_CAPPED, vec![date, limit]),
        Cursor::NullIds { rowid } => (
            EXPORT_NULL_IDS,
            EXPORT_NULL_IDS_CAPPED,
            vec![date, Param::Text(rowid.to_string()), limit],
        ),
        Cursor::FirstNumber => (EXPORT_FIRST_NUMBERS, EXPORT_FIRST_NUMBERS_CAPPED, vec![date, limit]),
        Cursor::AfterNumber { json } => (
            EXPORT_AFTER_NUMBER,
            EXPORT_AFTER_NUMBER_CAPPED,
            vec![date, Param::Text(json.clone()), limit],
        ),
        Cursor::FirstId => (EXPORT_FIRST_IDS, EXPORT_FIRST_IDS_CAPPED, vec![date, limit]),
        Cursor::After { id } => (EXPORT_AFTER_ID, EXPORT_AFTER_ID_CAPPED, vec![date, id.param(), limit]),
        // The hex was written by SQLite's own hex().
        Cursor::AfterBytes { hex } => (
            EXPORT_AFTER_BYTES,
            EXPORT_AFTER_BYTES_CAPPED,
            vec![date, Param::Blob(hex::decode(hex).unwrap_or_default()), limit],
        ),
    };
    match cap {
        None => Statement::new(plain, params),
        Some(cap) => {
            // At least one byte: a page of no row would end the scan.
            params.push(Param::Int(cap.clamp(1, MAX_EXACT_INT) as i64));
            Statement::new(capped, params)
        }
    }
}

/// Columns of an export page on the wire: `line` and `rt`.
pub const PAGE_COLUMNS: usize = 2;

/// Separates the values of a page on the wire (every value of every row, in order). None of
/// them can hold it raw: `rt` is a number or `=` and JSON, `line` digits and JSON values, and
/// JSON escapes every control character.
pub const WIRE_SEP: char = '\u{1e}';

/// Separates the parts of `line`: the key, then one JSON value per column.
pub const LINE_SEP: char = '\u{1f}';

/// The values of a page row ([`PageRow::values`]): every column but the REAL one. The wire
/// carries all of them but `event_date` (see [`export_select`]).
pub const WIRE_VALUES: usize = COLUMNS.len() - 1;

/// Where the id, the timestamp and the date are among a row's [`PageRow::values`].
const ID_VALUE: usize = 0;
const TIMESTAMP_VALUE: usize = 7;
const DATE_VALUE: usize = 8;

/// One row of an export page, borrowed from the page's wire text.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PageRow<'a> {
    /// The rowid in the NULL-id segment, else empty.
    pub rowid: &'a str,
    /// The JSON value of every column but the REAL one, in table order.
    pub values: [&'a str; WIRE_VALUES],
    /// The REAL column: a number in any exact decimal form, or `=` and JSON text.
    pub real: &'a str,
}

impl<'a> PageRow<'a> {
    /// The id's JSON value.
    pub fn id(&self) -> &'a str {
        self.values[ID_VALUE]
    }

    /// `timestamp`'s JSON value (`jsonl::Timestamp` reads it).
    pub fn timestamp_json(&self) -> &'a str {
        self.values[TIMESTAMP_VALUE]
    }
}

/// The `event_date` value of every row of a page of `date`, as JSON (for [`page_rows`]).
pub fn date_json(date: &str) -> String {
    Value::from(date).to_string()
}

/// A page on the wire: every value of every row joined by [`WIRE_SEP`], numbers in decimal,
/// NULL as the empty string (what JavaScript's `Array.prototype.join` makes of D1's rows).
/// `date` is the page's `event_date` as JSON ([`date_json`]), which the wire leaves out.
pub fn page_rows<'a>(wire: &'a str, date: &'a str) -> impl Iterator<Item = Result<PageRow<'a>, BadResult>> {
    let mut values = wire.split(WIRE_SEP);
    let mut done = wire.is_empty();
    std::iter::from_fn(move || {
        if done {
            return None;
        }
        let (line, real) = match (values.next(), values.next()) {
            (None, _) => return None,
            (Some(line), Some(real)) => (line, real),
            (Some(_), None) => {
                done = true;
                return Some(Err(bad("export_page", "a row has 1 value, expected 2")));
            }
        };
        let mut parts = line.split(LINE_SEP);
        let rowid = parts.next().unwrap_or_default();
        let mut row = PageRow {
            rowid,
            values: [""; WIRE_VALUES],
            real,
        };
        let mut n = 0;
        for part in parts {
            if n == DATE_VALUE {
                row.values[n] = date;
                n += 1;
            }
            if n == WIRE_VALUES || part.is_empty() {
                n = usize::MAX;
                break;
            }
            row.values[n] = part;
            n += 1;
        }
        Some(if n == WIRE_VALUES {
            Ok(row)
        } else {
            Err(bad(
                "export_page",
                format!("row line has not 1 + {} parts: {line:.60}", WIRE_VALUES - 1),
            ))
        })
    })
}

/// How an operator finds a row: `id "…"` (its id's JSON, cut at 80 characters with `…`), or
/// `with a NULL id at rowid N`.
pub fn row_name(row: &PageRow<'_>) -> String {
    if !row.rowid.is_empty() {
        return format!("with a NULL id at rowid {}", row.rowid);
    }
    let id = row.id();
    match id.char_indices().nth(80) {
        Some((at, _)) => format!("id {}…", &id[..at]),
        None => format!("id {id}"),
    }
}

/// The cursor after a row (its segment is told by `rowid`).
pub fn cursor_after(row: &PageRow<'_>) -> Result<Cursor, BadResult> {
    if !row.rowid.is_empty() {
        return row
            .rowid
            .parse()
            .map(|rowid| Cursor::NullIds { rowid })
            .map_err(|_| bad("export_page", format!("rowid {:?} is not an integer", row.rowid)));
    }
    let id = row.id();
    if is_number(id) {
        return Ok(Cursor::AfterNumber { json: id.to_string() });
    }
    Ok(Cursor::After { id: id_key(id)? })
}

/// Whether a value's JSON (as `json_quote` writes it) is a number.
pub fn is_number(json: &str) -> bool {
    json.starts_with(|c: char| c == '-' || c.is_ascii_digit())
}

/// Whether the numeric id with JSON `after` comes after the one with JSON `before`, exactly
/// (an INTEGER past 2^53 against a REAL too); `None` where either is no number. Equal values
/// (7 and 7.0 in a table whose ids can repeat, or two REALs a SQLite that writes 15 digits in
/// JSON writes alike) do not: the scan's cursor could not pass them.
pub fn number_follows(before: &str, after: &str) -> Option<bool> {
    use std::cmp::Ordering;
    #[derive(Clone, Copy)]
    enum Num {
        Int(i64),
        Real(f64),
    }
    let num = |j: &str| match j.parse::<i64>() {
        Ok(i) => Some(Num::Int(i)),
        Err(_) => j.parse::<f64>().ok().filter(|r| !r.is_nan()).map(Num::Real),
    };
    // An INTEGER against a REAL: by the REAL's floor, exactly (`as i128` saturates far outside
    // every i64), then by its fraction.
    let int_real = |i: i64, r: f64| {
        let floor = r.floor();
        let fraction = if r > floor { Ordering::Less } else { Ordering::Equal };
        i128::from(i).cmp(&(floor as i128)).then(fraction)
    };
    let order = match (num(before)?, num(after)?) {
        (Num::Int(a), Num::Int(b)) => a.cmp(&b),
        (Num::Real(a), Num::Real(b)) => a.partial_cmp(&b)?,
        (Num::Int(a), Num::Real(b)) => int_real(a, b),
        (Num::Real(a), Num::Int(b)) => int_real(b, a).reverse(),
    };
    Some(order == Ordering::Less)
}

/// A string's JSON without its quotes; any other JSON as it is.
fn unquoted(json: &str) -> &[u8] {
    json.strip_prefix('"')
        .and_then(|t| t.strip_suffix('"'))
        .unwrap_or(json)
        .as_bytes()
}

/// Whether the id after `before` (both JSON values of the text and BLOB segment) comes after
/// it byte for byte, as the scan must give them: the readers, the index and the cleaning
/// compare ids so. `None` where the order cannot be told: an id JavaScript handed over with
/// U+FFFD sorted where its bytes did ([`lossy_text`]).
pub fn id_follows(before: &str, after: &str) -> Result<Option<bool>, BadResult> {
    // A string's JSON without a `\` is its text between quotes; a BLOB's is `{"$blob":"HEX"}`,
    // whose hex sorts as the bytes (and `{` after `"`: every BLOB after every text).
    let plain = |j: &str| !j.contains('\\') && !j.contains('\u{FFFD}');
    if plain(before) && plain(after) {
        return Ok(Some(match (before.starts_with('"'), after.starts_with('"')) {
            (true, true) | (false, false) => unquoted(before) < unquoted(after),
            (text_before, _) => text_before,
        }));
    }
    let (a, b) = (id_key(before)?, id_key(after)?);
    Ok((!a.is_lossy() && !b.is_lossy()).then(|| a < b))
}

/// The key of a row from its id's JSON value: a string, or a BLOB object.
pub fn id_key(id: &str) -> Result<Key, BadResult> {
    match serde_json::from_str(id) {
        Ok(Value::String(s)) => Ok(Key::Text(s)),
        Ok(Value::Object(o)) => match o.get("$blob") {
            Some(Value::String(h)) => Ok(Key::Blob(h.clone())),
            _ => Err(bad("export_page", "id object is not a BLOB")),
        },
        Ok(other) => Err(bad("export_page", format!("id {other} outside the NULL segment"))),
        Err(e) => Err(bad("export_page", format!("row id {id:.40}: {e}"))),
    }
}

// ---------------------------------------------------------------------------------------------
// Cleaning: delete exactly the rows equal to archived lines

/// Lines per [`DELETE_KEYED`] statement. Each row looks its line up by id, and SQLite walks a
/// JSON object from its start, so the lines go in buckets by the id's last character
/// ([`KeyedObject`]): a row passes a few buckets and a few entries, not half the statement.
/// The objects cross as text and become JSONB once per statement (`jsonb(?1)` has constant
/// arguments, so SQLite evaluates it once): a text argument is found in SQLite's JSON cache by
/// comparing its whole text on every call, which made each lookup cost more the more lines a
/// statement held. Measured natively (SQLite 3.50 through rusqlite, a scratch probe not kept)
/// over the bench's 200,000 seeded rows in 1.5 MB batches, time per deleted row: the delete
/// over the id range with no compare 1.45 µs; text objects without buckets, 128 lines, 5.45
/// (the previous form); buckets, 128 lines, 5.03; buckets and JSONB, 128 lines 4.61, 256
/// lines 4.47, 512 lines 4.60, 1,024 lines 4.90; JSONB without buckets, 128 lines 5.14, 256
/// lines 6.15. On local workerd each statement costs about 0.1 ms more besides, hence 256.
/// Earlier, on workerd (values as arrays, no buckets): the same delete with no line compared
/// took 2.4 µs per row, 5.5–5.9 with 387 bytes per row of parameters it never read: the bytes
/// that cross into D1 cost as much as the deleting, hence values without their keys.
pub const KEYED_LINES: usize = 256;

/// A JSON path to row `t`'s entry in an object keyed by id, in buckets by the id's last
/// character (see [`KeyedObject`]), then `$rest` inside it. Used only for ids SQLite's JSON
/// quotes as they are (no `"`, `\` or control character).
macro_rules! keyed_path {
    ($rest:literal) => {
        concat!("('$.\"' || substr(t.id, -1) || '\".\"' || t.id || '\"", $rest, "')")
    };
}

/// True when row `t`'s id is text SQLite's JSON quotes as it is, so [`keyed_path`] can spell it.
macro_rules! keyed_row {
    () => {
        "typeof(t.id) = 'text' AND json_quote(t.id) = '\"' || t.id || '\"'"
    };
}

/// True when row `t` equals its line in every column, with its type, for a [`keyed_row`]: its id
/// is the key its line was found by, its date the statement's; the `columns!(keyed, …)` rendered
/// as the export wrote them and compared with the line's values as text (`?1`, or `?7` for the
/// lines [`keyed_statement`] sends as hex); a REAL compared exactly with the line's REAL (`?5`,
/// only lines whose value was a REAL); any other value compared typed with the line's (`?6`,
/// the rest; text byte for byte, whatever the column's collation, as in [`same_row`]). A line is
/// in one of `?5` and `?6`, so a row whose REAL became another type, or the reverse, stays.
macro_rules! same_keyed {
    () => {
        concat!(
            keyed_values_of_t!(),
            " = coalesce(jsonb(?1) -> ",
            keyed_path!(""),
            ", jsonb(CAST(unhex(?7) AS TEXT)) -> ",
            keyed_path!(""),
            ") AND CASE typeof(t.response_time) WHEN 'real' THEN t.response_time = (jsonb(?5) ->> ",
            keyed_path!(""),
            ") WHEN 'blob' THEN hex(t.response_time) IS (jsonb(?6) ->> ",
            keyed_path!(".\"$blob\""),
            ") ELSE t.response_time IS (jsonb(?6) ->> ",
            keyed_path!(""),
            ") COLLATE BINARY AND typeof(t.response_time) = json_type(jsonb(?6), ",
            keyed_path!(""),
            ") END"
        )
    };
}

/// [`DELETE_KEYED`] up to its `ELSE`: each statement that takes keyed lines ends the `CASE`.
macro_rules! delete_keyed {
    ($narrow:expr) => {
        concat!(
            "DELETE FROM traffic_events AS t WHERE changes() = 1 AND t.event_date = ?2",
            // The date byte for byte, whatever collation the table gives the column (`RTRIM`
            // would find '2026-11-20 ' equal): the line holds the date the statement names.
            " AND CAST(t.event_date AS BLOB) = CAST(?2 AS BLOB)",
            " AND t.id BETWEEN ?3 AND ?4",
            $narrow,
            " AND CASE WHEN ",
            keyed_row!(),
            " THEN ",
            same_keyed!()
        )
    };
}

/// Deletes the rows of date `?2` with ids in `?3 ..= ?4` equal in every column to their line,
/// given as [`same_keyed`] reads it (`?1`, `?5`, `?6`, `?7`: objects keyed by id in buckets,
/// read as JSONB), if the statement before it left `changes()` at 1 (see [`LEDGER_OPEN`]).
///
/// One read per row: the date's index is walked over the id range once and each row is deleted
/// where it stands (no subquery, so SQLite deletes in one pass), its line found by a JSON path
/// and not by a join. A row whose id the path cannot spell, or that no line names, stays.
pub const DELETE_KEYED: &str = concat!(delete_keyed!(""), " ELSE 0 END");

/// [`DELETE_KEYED`] for lines with a REAL in a column other than the REAL one: their rows
/// must also read back from their text exactly ([`reads_back_t`]). Apart, so that the
/// statement every other line takes carries no check it never needs: a line without such a
/// REAL cannot equal a row with one (a REAL is written with a point or an exponent).
pub const DELETE_KEYED_REALS: &str = concat!(
    delete_keyed!(""),
    " AND ",
    columns!(keyed, reads_back_t, " AND "),
    " ELSE 0 END"
);

/// The restore's rowid mark `$pass`, or past every rowid when there is none.
macro_rules! mark_rowid {
    ($pass:literal) => {
        concat!(
            "coalesce((SELECT rows FROM archive_ledger WHERE pass = ",
            $pass,
            " AND piece = 0 AND batch = 0), 9223372036854775807)"
        )
    };
}

/// [`DELETE_BATCH`], with `$narrow` narrowing the rows it may take.
macro_rules! delete_batch {
    ($narrow:expr) => {
        concat!(
            "DELETE FROM traffic_events WHERE changes() = 1 AND rowid IN (",
            "SELECT t.rowid FROM ",
            batch_lines!("?3", ""),
            " AS l JOIN traffic_events AS t ON t.id = l.id",
            $narrow,
            " WHERE ",
            same_row_exact!(),
            " UNION ALL SELECT p.rid FROM (SELECT t.rowid AS rid, l.k AS k,",
            " row_number() OVER (PARTITION BY l.kv, l.r, l.k ORDER BY t.rowid) - 1 AS n",
            " FROM ",
            batch_lines!("?3", ", row_number() OVER (PARTITION BY value ORDER BY key) - 1 AS k"),
            " AS l JOIN traffic_events AS t ON t.event_date = ?2 AND t.id IS NULL",
            $narrow,
            " AND ",
            same_row_exact!(),
            " WHERE l.id IS NULL) AS p WHERE p.n = p.k)"
        )
    };
}

/// Deletes the rows of date `?2` equal in every column to a line of `?1` and `?3` (see
/// [`lines_params`]), if the statement before it left `changes()` at 1: the lines
/// [`DELETE_KEYED`] cannot take (NULL, BLOB and escaped ids). Five rows read per row deleted.
///
/// Rows with an id are found through the primary key (one row per line at most). Rows with a
/// NULL id can repeat exactly; the k-th copy of a line in the batch takes the k-th equal row
/// by rowid, so as many rows go as the archive holds lines, never more.
pub const DELETE_BATCH: &str = delete_batch!("");

/// The restore's end mark `$pass` ([`ROWID_END`]), or past every rowid when there is none
/// (a restore from before it).
macro_rules! end_rowid {
    ($pass:literal) => {
        concat!(
            "coalesce((SELECT rows FROM archive_ledger WHERE pass = ",
            $pass,
            " AND piece = 0 AND batch = 1), 9223372036854775807)"
        )
    };
}

/// A release's narrowing: a row goes only if its rowid is past the restore's mark `$pass`
/// ([`ROWID_MARK`]) and not past its end mark ([`ROWID_END`]), i.e. the restore inserted it (or
/// the app wrote it while the restore ran). A row equal to an archived line may be one the
/// restore found in D1 (a row still pending, which may be the newest version of the row while
/// a newer generation holds an older one) or one the app wrote after the cleaning or during
/// the hold; neither is the restore's to take back, and both stay (found by a review). Without
/// the mark (a restore from before it), none goes.
macro_rules! restored_only {
    ($pass:literal) => {
        concat!(
            " AND t.rowid > ",
            mark_rowid!($pass),
            " AND t.rowid <= ",
            end_rowid!($pass)
        )
    };
}

/// [`DELETE_BATCH`] for a release: only rows the restore inserted ([`restored_only`], `?4`).
pub const DELETE_BATCH_RESTORED: &str = delete_batch!(restored_only!("?4"));

/// [`DELETE_KEYED`] for a release: only rows the restore inserted ([`restored_only`], `?8`).
pub const DELETE_KEYED_RESTORED: &str = concat!(delete_keyed!(restored_only!("?8")), " ELSE 0 END");

/// [`DELETE_KEYED_REALS`] for a release ([`DELETE_KEYED_RESTORED`]).
pub const DELETE_KEYED_REALS_RESTORED: &str = concat!(
    delete_keyed!(restored_only!("?8")),
    " AND ",
    columns!(keyed, reads_back_t, " AND "),
    " ELSE 0 END"
);

/// After a restore batch's changes, on its first run only (`changes()` of the ledger's close
/// is 1 then): the restore's end mark `?1` for date `?2` at `?3` becomes the largest rowid of
/// `traffic_events`, in the batch's transaction. A NULL-id row the app writes after the
/// restore's last insert (during the hold) lies past it, and no release takes it for a
/// restored copy (found by a review).
pub const ROWID_END: &str = "INSERT INTO archive_ledger (pass, piece, batch, rows, date, at) \
SELECT ?1, 0, 1, coalesce((SELECT max(rowid) FROM traffic_events), 0), ?2, ?3 WHERE changes() = 1 \
ON CONFLICT DO UPDATE SET rows = max(rows, excluded.rows), at = excluded.at";

/// Writes a restore's rowid mark `?1` (see [`rowid_mark`]) for date `?2` at `?3`, unless it is
/// there: the largest rowid of `traffic_events` before the restore's first insert (in the
/// first batch's transaction). Every row the restore inserts has a larger one.
pub const ROWID_MARK: &str = "INSERT INTO archive_ledger (pass, piece, batch, rows, date, at) \
SELECT ?1, 0, 0, coalesce((SELECT max(rowid) FROM traffic_events), 0), ?2, ?3 WHERE true ON CONFLICT DO NOTHING";

/// The `archive_ledger` pass under which restore `id` of `date` keeps its rowid mark.
pub fn rowid_mark(date: &str, id: u32) -> String {
    format!("{date}#restore-{id}#rowid")
}

/// The pass under which a restore with rowid mark `restore_mark` ([`rowid_mark`]) keeps the
/// marks of its batches of `generation` alone: a release of that generation's lines takes only
/// rows between them, never a row a newer generation restored.
pub fn generation_mark(restore_mark: &str, generation: u32) -> String {
    format!("{restore_mark}#g{generation}")
}

/// The rowid marks a restore batch writes and reads.
#[derive(Debug, Clone, Copy)]
pub struct RestoreBatchMarks<'a> {
    /// The whole restore's ([`rowid_mark`]): what D1 held before it, for the batch's counts.
    pub restore: &'a str,
    /// Its generation's ([`generation_mark`]), for the release; `None` for a restore saved
    /// before they were kept.
    pub generation: Option<&'a str>,
    /// The restore restored a newer generation before this one ([`RESTORE_CHECK`]).
    pub after_newer: bool,
}

/// Opens batch `(?1, ?2, ?3)` of a pass in `archive_ledger` with `rows` = -1, unless the batch
/// is there already. `changes()` is then 1 for a batch that never ran and 0 for one that did,
/// and each delete or insert of the batch runs only where it finds 1.
pub const LEDGER_OPEN: &str = "INSERT INTO archive_ledger (pass, piece, batch, rows, date, at) \
VALUES (?1, ?2, ?3, -1, ?4, ?5) ON CONFLICT DO NOTHING";

/// [`LEDGER_OPEN`] for a batch of deletes: opened only while `traffic_events` has exactly the
/// columns an archived line holds, and `id` is its primary key (with `event_date` or alone). A
/// column added to the table is in no line, so a row that equals its line in every archived
/// column may still hold a value no archive has; and where an id can repeat, one line equals
/// every identical copy of its row, and a copy the scan passed over (a keyset page goes on
/// after its last id) would go with it (found by a review: a row lost). Otherwise the batch
/// opens nothing, deletes nothing, and leaves no ledger row ([`LEDGER_ROWS`] finds none; the
/// caller says why). `pragma_table_info` alone, read once (D1 authorizes it and counts its
/// rows as read). Column names in any case, as SQLite takes them.
pub const LEDGER_OPEN_DELETES: &str = "INSERT INTO archive_ledger (pass, piece, batch, rows, date, at) \
SELECT ?1, ?2, ?3, -1, ?4, ?5 WHERE (SELECT count(*) = 12 AND sum(pk > 0 AND lower(name) = 'id') = 1 \
AND sum(pk > 0 AND lower(name) NOT IN ('id', 'event_date')) = 0 FROM pragma_table_info('traffic_events')) \
ON CONFLICT DO NOTHING";

// The count in `LEDGER_OPEN_DELETES`.
const _: () = assert!(COLUMNS.len() == 12);

/// Between two changes of an open batch: takes the first one's `changes()` into `rows` (kept
/// as -1 - rows so far), and leaves `changes()` at 1 for the next one (0 if the batch is closed).
pub const LEDGER_ADD: &str = "UPDATE archive_ledger SET rows = rows - changes() \
WHERE pass = ?1 AND piece = ?2 AND batch = ?3 AND rows < 0";

/// After the last change of an open batch: `rows` becomes what its changes changed.
pub const LEDGER_CLOSE: &str = "UPDATE archive_ledger SET rows = -1 - (rows - changes()) \
WHERE pass = ?1 AND piece = ?2 AND batch = ?3 AND rows < 0";

/// The rows batch `(?1, ?2, ?3)` changed when it ran (whichever run that was).
pub const LEDGER_ROWS: &str = "SELECT rows FROM archive_ledger WHERE pass = ?1 AND piece = ?2 AND batch = ?3";

/// Identifies one batch of one pass over an archive, for `archive_ledger`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchId<'a> {
    /// The pass, e.g. `traffic_events/event_date=2026-11-20/0001.jsonl.gz#clean-1`.
    pub pass: &'a str,
    pub piece: usize,
    pub batch: usize,
}

impl BatchId<'_> {
    fn params(&self) -> [Param; 3] {
        [
            Param::Text(self.pass.into()),
            Param::Int(self.piece as i64),
            Param::Int(self.batch as i64),
        ]
    }
}

/// The D1 batch (one transaction) that deletes the rows equal to `lines` (archived lines, each
/// ending in a newline): open the ledger row, the deletes with the ledger's count between them,
/// close it, read it. The ledger row's `rows` is the batch's result, whichever run wrote it.
///
/// A line with a REAL in a column but the REAL one holds it as SQLite's JSON wrote it, which
/// need not be the stored double (SQLite 3.50 wrote 15 digits): its row goes only if that text
/// reads back as the row's value ([`DELETE_KEYED_REALS`], and the check in [`DELETE_BATCH`]);
/// otherwise it stays in D1, exact (and pending). With no line, the batch still runs (and
/// closes its ledger row) with an empty delete.
///
/// `mark`: for a release, the restore's rowid mark: only rows the restore inserted go
/// ([`restored_only`]).
pub fn delete_batch(lines: &str, date: &str, id: &BatchId<'_>, now_ms: i64, mark: Option<&str>) -> Vec<Statement> {
    let (keyed, others) = split_keyed(lines, date);
    let (reals, plain): (Vec<_>, Vec<_>) = keyed.into_iter().partition(|k| k.values.iter().any(|v| is_real(v)));
    let (sql_plain, sql_reals) = match mark {
        None => (DELETE_KEYED, DELETE_KEYED_REALS),
        Some(_) => (DELETE_KEYED_RESTORED, DELETE_KEYED_REALS_RESTORED),
    };
    let mut deletes: Vec<Statement> = plain
        .chunks(KEYED_LINES)
        .map(|c| keyed_statement(sql_plain, c, date))
        .chain(reals.chunks(KEYED_LINES).map(|c| keyed_statement(sql_reals, c, date)))
        .map(|mut st| {
            st.params.extend(mark.map(|m| Param::Text(m.into())));
            st
        })
        .collect();
    if !others.is_empty() || deletes.is_empty() {
        let [narrow, wide] = lines_params(&others);
        let mut params = vec![narrow, Param::Text(date.into()), wide];
        let sql = match mark {
            None => DELETE_BATCH,
            Some(mark) => {
                params.push(Param::Text(mark.into()));
                DELETE_BATCH_RESTORED
            }
        };
        deletes.push(Statement::new(sql, params));
    }
    ledgered(LEDGER_OPEN_DELETES, deletes, Vec::new(), date, id, now_ms)
}

/// A line whose row D1 finds by id through a JSON path, cut into its values.
struct Keyed<'a> {
    id: &'a str,
    line: &'a str,
    /// The values of the `columns!(keyed, …)`, as the line wrote them.
    values: [&'a str; KEYED_VALUES],
    /// The REAL column's value.
    rt: &'a str,
}

impl<'a> Keyed<'a> {
    /// A line of `date` whose id needed no escape (see [`keyed_id`]), cut into its values (see
    /// [`cut`]); any other line is not keyed.
    fn of(line: &'a str, date: &str) -> Option<Keyed<'a>> {
        let id = keyed_id(line)?;
        let all = cut(line)?;
        let (mut values, mut rt) = ([""; KEYED_VALUES], "");
        let mut keyed = 0;
        for (column, value) in COLUMNS.iter().zip(all).skip(1) {
            match *column {
                REAL_COLUMN => rt = value,
                "event_date" => {
                    (value.strip_prefix('"').and_then(|v| v.strip_suffix('"')) == Some(date)).then_some(())?
                }
                _ => {
                    values[keyed] = value;
                    keyed += 1;
                }
            }
        }
        Some(Keyed { id, line, values, rt })
    }

    /// Whether the REAL column's value is a JSON number SQLite read from a REAL.
    fn rt_is_real(&self) -> bool {
        is_real(self.rt)
    }

    /// Whether a value is a BLOB (`{"$blob":"HEX"}`: no other value starts with `{`).
    fn has_blob(&self) -> bool {
        self.values.iter().chain([&self.rt]).any(|v| v.starts_with('{'))
    }

    /// Whether the id and the `columns!(keyed, …)` are all [`is_narrow`].
    fn is_narrow(&self) -> bool {
        std::iter::once(self.id).chain(self.values).all(is_narrow)
    }
}

/// A line's JSON value of every column of [`COLUMNS`], if it has every column in order and
/// nothing else. Keys are found after each value's text string, if it is one ([`next_key`]);
/// other values (numbers, `null`, a BLOB's `{"$blob":"HEX"}`) hold no `,"`. Cleaning and the
/// Parquet writer read lines through it.
pub fn cut(line: &str) -> Option<[&str; COLUMNS.len()]> {
    let mut rest = line.strip_prefix(r#"{"id":"#)?.strip_suffix('}')?;
    let mut values = [""; COLUMNS.len()];
    for (i, column) in COLUMNS.iter().enumerate().skip(1) {
        let at = next_key(rest)?;
        values[i - 1] = &rest[..at];
        rest = rest[at..]
            .strip_prefix(",\"")?
            .strip_prefix(column)?
            .strip_prefix("\":")?;
    }
    (next_key(rest).is_none()).then_some(())?;
    values[COLUMNS.len() - 1] = rest;
    Some(values)
}

/// Whether a line's JSON value is a number SQLite read from a REAL: only a REAL is written with
/// a point or an exponent (an INTEGER never is; text, NULL and BLOB values are not numbers).
fn is_real(value: &str) -> bool {
    value.starts_with(|c: char| c == '-' || c.is_ascii_digit()) && value.contains(['.', 'e', 'E'])
}

/// Where the next `,"` is in `s`, a line from a value on: the start of the next key (see
/// [`Keyed::of`]). A value that is a text string is passed over first: inside one, every `"`
/// but the closing one follows an odd run of backslashes, so `,"` occurs there only as a text
/// ending in a comma and its closing quote (`"/tags/a,"`, a review's finding).
fn next_key(s: &str) -> Option<usize> {
    let b = s.as_bytes();
    let from = match b.first() {
        Some(b'"') => memchr::memchr_iter(b'"', b).skip(1).find(|&i| {
            let backslashes = b[..i].iter().rev().take_while(|&&c| c == b'\\').count();
            backslashes % 2 == 0
        })?,
        _ => 0,
    };
    memchr::memchr_iter(b',', &b[from..])
        .map(|i| i + from)
        .find(|&i| b.get(i + 1) == Some(&b'"'))
}

/// The lines of `date` whose rows D1 finds by id through a JSON path, and the others.
///
/// An id keys one line only: a second line with the same id goes with the others, which are
/// compared whole. Ids of one archive are distinct, except where JavaScript handed different
/// bytes that are not UTF-8 over as the same text (U+FFFD); keyed twice, a row could meet its
/// REAL value in one line's entry and its other values in the other's (found by a review).
fn split_keyed<'a>(lines: &'a str, date: &str) -> (Vec<Keyed<'a>>, Vec<&'a str>) {
    let (mut keyed, mut others) = (Vec::new(), Vec::new());
    let mut ids = std::collections::HashSet::new();
    for line in lines.split_terminator('\n') {
        match Keyed::of(line, date) {
            Some(k) if ids.insert(k.id) => keyed.push(k),
            Some(_) | None => others.push(line),
        }
    }
    (keyed, others)
}

/// The keyed statement for `lines`: `?1` the arrays of the lines' `columns!(keyed, …)`, `?5` the
/// REAL values, `?6` the other values, all keyed by id in buckets; `?2` the date; `?3 ..= ?4`
/// the ids; `?7` the arrays of the lines whose id or values hold a character past U+00FF, as
/// the hex of their UTF-8 (SQLite reads it back with `CAST(unhex(?7) AS TEXT)`).
///
/// Why apart: V8 keeps a string of characters up to U+00FF at one byte per character, and one
/// character past it makes the whole string two bytes per character, at every hop it takes on
/// local workerd (into JavaScript, into D1's request as JSON, out of it, into SQLite). One
/// such line in 256 made the whole statement cross wide. Measured with `scripts/bench --sizes
/// 1000000 --naive-max 0 --no-write`, the bench's day (3% of its paths hold such characters)
/// against the same day with those paths in Latin-1: cleaning 19.0–20.0 s against 15.8 s.
/// With this split, side by side with the code before it: cleaning 13% faster, restores 11%
/// (`docs/benchmarks.md`).
fn keyed_statement(sql: &'static str, lines: &[Keyed<'_>], date: &str) -> Statement {
    let ids = lines.iter().map(|k| k.id);
    let (first, last) = (ids.clone().min().unwrap_or(""), ids.max().unwrap_or(""));
    let (mut kv, mut reals, mut others) = (KeyedObject::default(), KeyedObject::default(), KeyedObject::default());
    let mut wide = KeyedObject::default();
    for k in lines {
        if k.is_narrow() { &mut kv } else { &mut wide }.entry_array(k.id, &k.values);
        if k.rt_is_real() { &mut reals } else { &mut others }
            .entry(k.id)
            .push_str(k.rt);
    }
    Statement::new(
        sql,
        vec![
            Param::Text(kv.finish()),
            Param::Text(date.into()),
            Param::Text(first.into()),
            Param::Text(last.into()),
            Param::Text(reals.finish()),
            Param::Text(others.finish()),
            Param::Text(hex::encode(wide.finish())),
        ],
    )
}

/// A JSON object keyed by ids that needed no escape (each is its own key), built entry by
/// entry, its entries grouped in buckets by the id's last character: `{"7":{"…7":…},"a":…}`.
/// SQLite finds a key by walking an object from its start, so a row's line is found after
/// passing a few buckets and a few entries instead of half the statement's lines. (Nesting a
/// second level, by the character before, cost more per row than it saved.)
#[derive(Default)]
struct KeyedObject<'a> {
    buckets: Vec<(&'a str, String)>,
}

impl<'a> KeyedObject<'a> {
    /// The bucket of `id`, ready for its entry: the key is the id's last character, as SQLite's
    /// `substr(id, -1)` cuts it (`""` for the empty id).
    fn bucket(&mut self, id: &'a str) -> &mut String {
        let last = id.char_indices().next_back().map_or("", |(i, _)| &id[i..]);
        let at = match self.buckets.iter().position(|(b, _)| *b == last) {
            Some(at) => at,
            None => {
                self.buckets.push((last, String::new()));
                self.buckets.len() - 1
            }
        };
        let entries = &mut self.buckets[at].1;
        if !entries.is_empty() {
            entries.push(',');
        }
        entries
    }

    /// Adds `id`'s key to its bucket; its value is to be written next.
    fn entry(&mut self, id: &'a str) -> &mut String {
        let out = self.bucket(id);
        out.push('"');
        out.push_str(id);
        out.push_str("\":");
        out
    }

    /// Adds `id`: the JSON array of `values`.
    fn entry_array(&mut self, id: &'a str, values: &[&str]) {
        push_json_array(self.entry(id), values);
    }

    fn finish(self) -> String {
        let len = self.buckets.iter().map(|(b, e)| b.len() + e.len() + 6).sum::<usize>() + 2;
        let mut out = String::with_capacity(len);
        out.push('{');
        for (i, (bucket, entries)) in self.buckets.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push('"');
            out.push_str(bucket);
            out.push_str("\":{");
            out.push_str(entries);
            out.push('}');
        }
        out.push('}');
        out
    }
}

/// `changes` (statements that change rows) run once per batch: the ledger row is opened before
/// them and takes each one's `changes()` after it, which lets the next one run only in a batch
/// that had not run. Then `reads` (selects), then the ledger row's `rows`, last.
fn ledgered(
    open: &'static str,
    changes: Vec<Statement>,
    reads: Vec<Statement>,
    date: &str,
    id: &BatchId<'_>,
    now_ms: i64,
) -> Vec<Statement> {
    let key = || id.params().to_vec();
    let mut out = vec![Statement::new(
        open,
        [key(), vec![Param::Text(date.into()), Param::Int(now_ms)]].concat(),
    )];
    let last = changes.len().saturating_sub(1);
    for (i, change) in changes.into_iter().enumerate() {
        out.push(change);
        out.push(Statement::new(if i == last { LEDGER_CLOSE } else { LEDGER_ADD }, key()));
    }
    out.extend(reads);
    out.push(Statement::new(LEDGER_ROWS, key()));
    out
}

/// The id of an archived line, if [`DELETE_KEYED`] can find its row: a JSON string that needed
/// no escape (`{"id":"…"` with no backslash before its closing quote).
fn keyed_id(line: &str) -> Option<&str> {
    let rest = line.strip_prefix("{\"id\":\"")?;
    let end = memchr::memchr2(b'"', b'\\', rest.as_bytes())?;
    (rest.as_bytes()[end] == b'"').then(|| &rest[..end])
}

/// Lines as the two parameters of a statement over [`batch_lines`]: the JSON array of those
/// that V8 keeps one byte per character, and the hex of the JSON array of the others (see
/// [`keyed_statement`]).
pub fn lines_params(lines: &[&str]) -> [Param; 2] {
    let (narrow, wide): (Vec<&str>, Vec<&str>) = lines.iter().partition(|l| is_narrow(l));
    [
        Param::Text(json_array(&narrow)),
        Param::Text(hex::encode(json_array(&wide))),
    ]
}

/// Whether `s` holds no character past U+00FF, so that V8 keeps it one byte per character: in
/// UTF-8, no byte from 0xC4 up (0xC2 and 0xC3 lead U+0080 ..= U+00FF).
fn is_narrow(s: &str) -> bool {
    is_narrow_bytes(s.as_bytes())
}

/// [`is_narrow`] of UTF-8 bytes. In blocks with no early exit inside, so the compare is
/// vectorised (every line of a cleaning or a restore passes through here).
pub fn is_narrow_bytes(s: &[u8]) -> bool {
    s.chunks(64)
        .all(|block| block.iter().fold(0u8, |wide, b| wide | u8::from(*b >= 0xC4)) == 0)
}

/// The room a batch's row takes around one line and its id (brackets, keys, separators).
const LINE_ROOM: u64 = 1_024;

/// Whether the line of a row with id `id_json` could never go through a cleaning or a restore
/// under D1's limit on a string (which SQLite holds each row it builds to, too): a line with a
/// character past U+00FF crosses as the hex of its UTF-8, twice its bytes, and a restore's
/// table of lines holds every line twice (with and without its REAL) and its id twice. So any
/// line of about 1 MB or more, narrow or wide (a review found narrow ones archived, then
/// failing every restore).
pub fn crosses_too_big(line: &[u8], id_json: &str) -> bool {
    2 * (line.len() as u64 + id_json.len() as u64 + LINE_ROOM) > D1_MAX_STRING
}

/// Lines as one JSON array.
pub fn json_array(lines: &[&str]) -> String {
    let mut out = String::with_capacity(lines.iter().map(|l| l.len() + 1).sum::<usize>() + 2);
    push_json_array(&mut out, lines);
    out
}

/// Appends the JSON array of `values` (each already JSON) to `out`.
fn push_json_array(out: &mut String, values: &[&str]) {
    out.push('[');
    for (i, v) in values.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(v);
    }
    out.push(']');
}

/// Rows of the date still in D1, whatever they are: the final check before `d1_cleaned = 1`.
pub const COUNT_DATE: &str = "SELECT count(*) AS rows FROM traffic_events WHERE event_date = ?1";

pub fn count_date(date: &str) -> Statement {
    Statement::new(COUNT_DATE, vec![Param::Text(date.into())])
}

// ---------------------------------------------------------------------------------------------
// Restore: insert archived lines, never over a different row

/// Line `l`'s value for column `$c` when no value of the line is a BLOB: what [`decode_kv`]
/// reads, without asking the value's type first.
macro_rules! plain_kv {
    ($c:literal) => {
        concat!("l.v ->> '$.", $c, "'")
    };
}

/// Inserts the lines of `?1` and `?2` (lines with text ids and no BLOB value, see
/// [`lines_params`]) that are not in D1, if the statement before it left `changes()` at 1 (see
/// [`LEDGER_OPEN`]). A line whose id is taken is skipped (`ON CONFLICT DO NOTHING`): never
/// overwritten.
///
/// The lines are materialised once, as their text alone: read straight from `json_each`, each
/// of the 12 uses of a line would render it again. With no BLOB among them, a value is what
/// `->>` reads (no `json_type` first). Natively, over the bench's day, both together took the
/// insert from 15–18 to 7.4 µs per line.
pub const RESTORE_KEYED: &str = concat!(
    "INSERT INTO traffic_events (",
    columns!(all, name, ", "),
    ") WITH l AS MATERIALIZED (SELECT value AS v FROM (",
    lines_source!("?2"),
    ")) SELECT ",
    columns!(all, plain_kv, ", "),
    " FROM l WHERE changes() = 1 ON CONFLICT (id) DO NOTHING"
);

/// [`RESTORE_KEYED`] for the other lines (NULL, BLOB and escaped ids, BLOB values) of date
/// `?2`.
///
/// NULL-id rows can repeat exactly, so a NULL-id line counts as present while D1 held, before
/// the restore (up to its rowid mark `?4`, [`ROWID_MARK`]), more equal rows than the batch
/// holds earlier copies of it; once the restore has inserted a copy of it (past the mark), an
/// earlier batch found too few, and every copy goes in.
pub const RESTORE_BATCH: &str = concat!(
    "INSERT INTO traffic_events (",
    columns!(all, name, ", "),
    ") SELECT ",
    decode_line!(),
    " FROM ",
    batch_lines!("?3", ", row_number() OVER (PARTITION BY value ORDER BY key) - 1 AS k"),
    " AS l WHERE changes() = 1",
    " AND (l.id IS NOT NULL OR (SELECT count(*) FROM traffic_events AS t",
    " WHERE t.event_date = ?2 AND t.id IS NULL AND t.rowid <= ",
    mark_rowid!("?4"),
    " AND ",
    same_row!(),
    ") <= l.k OR EXISTS (SELECT 1 FROM traffic_events AS t WHERE t.event_date = ?2 AND t.id IS NULL",
    " AND t.rowid > ",
    mark_rowid!("?4"),
    " AND ",
    same_row!(),
    "))",
    " ON CONFLICT (id) DO NOTHING"
);

/// Checks restored lines (`?1` and `?3`, see [`lines_params`]) of date `?2` in one pass over
/// them: how many have an equal row in D1, how many have their id taken by a different row
/// that was there before the restore (conflicts, up to its rowid mark `?4`), those ids as a
/// JSON array in the archive's order (by id), and how many have it taken by a row from after
/// the mark (superseded: a newer version, restored from a newer generation, which a restore
/// walks first; only where `?5` says one was, else a conflict: the app wrote it meanwhile). A
/// line with no row at all counts as none (the caller then knows rows went missing). Last,
/// whether the batch ran for the first time: `changes()` of the end mark before it
/// ([`ROWID_END`]), which changed a row exactly then.
pub const RESTORE_CHECK: &str = concat!(
    materialised_lines!("?3"),
    " SELECT coalesce(sum(c.st = 0), 0), coalesce(sum(c.st = 1), 0),",
    " json_group_array(json(c.idj) ORDER BY c.id) FILTER (WHERE c.st = 1), coalesce(sum(c.st = 2), 0),",
    " changes() = 1 FROM (",
    // One state per line, each row compared once: 0 equal, 1 conflict, 2 superseded, 3 no row.
    "SELECT l.id AS id, l.idj AS idj, CASE WHEN ",
    same_row!(),
    " THEN 0 WHEN ?5 AND t.rowid > ",
    mark_rowid!("?4"),
    " THEN 2 ELSE 1 END AS st FROM l JOIN traffic_events AS t ON t.id = l.id",
    " UNION ALL SELECT l.id, l.idj, CASE WHEN EXISTS (SELECT 1 FROM traffic_events AS t WHERE t.event_date = ?2",
    " AND t.id IS NULL AND ",
    same_row!(),
    ") THEN 0 ELSE 3 END FROM l WHERE l.id IS NULL) AS c"
);

/// The D1 batch (one transaction) that restores `lines`: open the ledger row, the inserts with
/// the ledger's count between them, close it, check every line, read the ledger.
///
/// Before it, the restore's rowid marks ([`ROWID_MARK`]) are written where they are not yet;
/// after its inserts, their end marks ([`ROWID_END`]; the generation's takes `changes()` from
/// the restore's, which changed one row exactly when the batch ran for the first time).
pub fn restore_batch(
    lines: &str,
    date: &str,
    id: &BatchId<'_>,
    now_ms: i64,
    marks: &RestoreBatchMarks<'_>,
) -> Vec<Statement> {
    let mark = marks.restore;
    let (keyed, mut others) = split_keyed(lines, date);
    let (keyed, blobs): (Vec<Keyed<'_>>, Vec<Keyed<'_>>) = keyed.into_iter().partition(|k| !k.has_blob());
    others.extend(blobs.iter().map(|k| k.line));
    let date_p = || Param::Text(date.into());
    let mut inserts = Vec::new();
    if !keyed.is_empty() {
        let keyed: Vec<&str> = keyed.iter().map(|k| k.line).collect();
        inserts.push(Statement::new(RESTORE_KEYED, lines_params(&keyed).to_vec()));
    }
    if !others.is_empty() {
        let [narrow, wide] = lines_params(&others);
        inserts.push(Statement::new(
            RESTORE_BATCH,
            vec![narrow, date_p(), wide, Param::Text(mark.into())],
        ));
    }
    let [narrow, wide] = lines_params(&lines.split_terminator('\n').collect::<Vec<_>>());
    let check = Statement::new(
        RESTORE_CHECK,
        vec![
            narrow,
            date_p(),
            wide,
            Param::Text(mark.into()),
            Param::Int(i64::from(marks.after_newer)),
        ],
    );
    let passes: Vec<&str> = std::iter::once(mark).chain(marks.generation).collect();
    let mark_params = |pass: &str| vec![Param::Text(pass.into()), date_p(), Param::Int(now_ms)];
    let mut batch: Vec<Statement> = passes
        .iter()
        .map(|p| Statement::new(ROWID_MARK, mark_params(p)))
        .collect();
    let mut reads: Vec<Statement> = passes
        .iter()
        .map(|p| Statement::new(ROWID_END, mark_params(p)))
        .collect();
    reads.push(check);
    // Moved, not cloned: the statements carry the batch's lines (up to 1.5 MB each).
    batch.extend(ledgered(LEDGER_OPEN, inserts, reads, date, id, now_ms));
    batch
}

/// The result of a restore batch's check, among the batch's results: the one before the
/// ledger's rows.
pub fn restore_check_result(results: &[ResultSet]) -> Option<&ResultSet> {
    results.len().checked_sub(2).and_then(|i| results.get(i))
}

// ---------------------------------------------------------------------------------------------
// Metadata: archive_metadata (one row per date) and archive_objects (one per object)

/// Writes the date's row, every column from the record (nothing merged with what was there),
/// stamped with the record's revision `?3`, unless the row holds a newer write: one with a
/// later `updated_at`, or as late and of a later revision (a step's write that reaches D1 after
/// a command's, sent while the step awaited D1; found by a review). Time first: a Durable
/// Object whose storage was lost starts again at revision 0.
pub const UPSERT_DATE: &str = "\
INSERT INTO archive_metadata (date, r2_path, record_count, file_size_bytes, status, error_message,
  archived_at, completed_at, d1_cleaned, generation, parts, checksum_crc32, first_id, last_id,
  cutoff_created_at, rows_deleted, total_record_count, attempts, updated_at, rows_pending,
  rows_restored, hold_until, next_step_at, revision)
SELECT ?1, ?2 ->> '$.r2_path', ?2 ->> '$.record_count', ?2 ->> '$.file_size_bytes', ?2 ->> '$.status',
  ?2 ->> '$.error_message', ?2 ->> '$.archived_at', ?2 ->> '$.completed_at', ?2 ->> '$.d1_cleaned',
  ?2 ->> '$.generation', ?2 ->> '$.parts', ?2 ->> '$.checksum_crc32', ?2 ->> '$.first_id',
  ?2 ->> '$.last_id', NULL, ?2 ->> '$.rows_deleted', ?2 ->> '$.total_record_count', ?2 ->> '$.attempts',
  ?2 ->> '$.updated_at', ?2 ->> '$.rows_pending', ?2 ->> '$.rows_restored', ?2 ->> '$.hold_until',
  ?2 ->> '$.next_step_at', ?3
WHERE true
ON CONFLICT (date) DO UPDATE SET
  r2_path = excluded.r2_path, record_count = excluded.record_count, file_size_bytes = excluded.file_size_bytes,
  status = excluded.status, error_message = excluded.error_message, archived_at = excluded.archived_at,
  completed_at = excluded.completed_at, d1_cleaned = excluded.d1_cleaned, generation = excluded.generation,
  parts = excluded.parts, checksum_crc32 = excluded.checksum_crc32, first_id = excluded.first_id,
  last_id = excluded.last_id, cutoff_created_at = NULL, rows_deleted = excluded.rows_deleted,
  total_record_count = excluded.total_record_count, attempts = excluded.attempts,
  updated_at = excluded.updated_at, rows_pending = excluded.rows_pending,
  rows_restored = excluded.rows_restored, hold_until = excluded.hold_until, next_step_at = excluded.next_step_at,
  revision = excluded.revision
WHERE (excluded.updated_at, excluded.revision)
  >= (coalesce(archive_metadata.updated_at, 0), coalesce(archive_metadata.revision, 0))";

/// The date's row holds the write stamped `?3` (`updated_at`) and `?4` (revision) of date `?1`:
/// [`UPSERT_DATE`] kept it, so the objects' rows are this write's to change.
macro_rules! kept_write {
    () => {
        "EXISTS (SELECT 1 FROM archive_metadata WHERE date = ?1 AND updated_at = ?3 AND revision = ?4)"
    };
}

/// Removes the rows of objects of date `?1` that the record no longer holds (`?2`: JSON array
/// of the keys it holds), if the date's row kept this write.
pub const PRUNE_OBJECTS: &str = concat!(
    "DELETE FROM archive_objects WHERE date = ?1 AND key NOT IN (SELECT value FROM json_each(?2)) AND ",
    kept_write!()
);

/// Writes one row per object of the JSON array `?2` (built by
/// [`crate::core::status::metadata_statements`]) of date `?1`, if the date's row kept this write.
pub const UPSERT_OBJECTS: &str = concat!(
    "\
INSERT INTO archive_objects (key, date, generation, format, state, rows, bytes, uncompressed_bytes,
  checksum_crc32, parts, pieces, index_key, rows_deleted, created_at, verified_at, cleaned_at, updated_at)
SELECT j.value ->> '$.key', j.value ->> '$.date', j.value ->> '$.generation', j.value ->> '$.format',
  j.value ->> '$.state', j.value ->> '$.rows', j.value ->> '$.bytes', j.value ->> '$.uncompressed_bytes',
  j.value ->> '$.checksum_crc32', j.value ->> '$.parts', j.value ->> '$.pieces', j.value ->> '$.index_key',
  j.value ->> '$.rows_deleted', j.value ->> '$.created_at',
  j.value ->> '$.verified_at', j.value ->> '$.cleaned_at', j.value ->> '$.updated_at'
FROM json_each(?2) AS j WHERE ",
    kept_write!(),
    "
ON CONFLICT (key) DO UPDATE SET
  date = excluded.date, generation = excluded.generation, format = excluded.format, state = excluded.state,
  rows = excluded.rows, bytes = excluded.bytes, uncompressed_bytes = excluded.uncompressed_bytes,
  checksum_crc32 = excluded.checksum_crc32, parts = excluded.parts, pieces = excluded.pieces,
  index_key = excluded.index_key, rows_deleted = excluded.rows_deleted,
  created_at = excluded.created_at, verified_at = excluded.verified_at, cleaned_at = excluded.cleaned_at,
  updated_at = excluded.updated_at"
);

/// The D1 batch that makes both tables say what the record at `revision` says about `date`,
/// written at `now_ms` (the date row's `updated_at`), unless D1 holds a newer write.
pub fn sync_metadata(
    date: &str,
    date_row: &Value,
    objects: &Value,
    keys: &Value,
    (now_ms, revision): (i64, u64),
) -> Vec<Statement> {
    let text = |v: &Value| Param::Text(v.to_string());
    let date = Param::Text(date.into());
    // Revisions count saves of one date: far below 2^53.
    let revision = Param::Int(revision.min(MAX_EXACT_INT) as i64);
    let stamp = || vec![Param::Int(now_ms), revision.clone()];
    vec![
        Statement::new(UPSERT_DATE, vec![date.clone(), text(date_row), revision.clone()]),
        Statement::new(PRUNE_OBJECTS, [vec![date.clone(), text(keys)], stamp()].concat()),
        Statement::new(UPSERT_OBJECTS, [vec![date, text(objects)], stamp()].concat()),
    ]
}

// ---------------------------------------------------------------------------------------------
// The fleet of dates: due dates, states, the cron's heartbeat, health

/// One position `$i` of the shape `NNNN-NN-NN` in [`past_value`]: where value `$v` leaves the
/// shape there, no value that starts with its first `$i` characters is a date, and the scan
/// goes on past them all (past `$v` at least). Where `$v` ends before `$i`, only past `$v`.
macro_rules! shape_at {
    ($v:literal, $i:literal, $bad:literal) => {
        concat!(
            " WHEN substr(",
            $v,
            ", ",
            $i,
            ", 1) ",
            $bad,
            " THEN (CASE WHEN length(",
            $v,
            ") < ",
            $i,
            " THEN ",
            $v,
            " ELSE max(",
            $v,
            ", substr(",
            $v,
            ", 1, ",
            $i,
            ") || char(1114111)) END)"
        )
    };
}

/// Where the scan of `event_date` values goes on after value `$v` (see [`NEXT_DATES`]): past
/// every value that shares the longest start of `$v` no date can begin with, and never before
/// `$v` itself (U+10FFFF sorts after any other character, and `max` keeps the scan moving
/// whatever bytes follow).
macro_rules! past_value {
    ($v:literal) => {
        concat!(
            "(CASE",
            shape_at!($v, "1", "NOT GLOB '[0-9]'"),
            shape_at!($v, "2", "NOT GLOB '[0-9]'"),
            shape_at!($v, "3", "NOT GLOB '[0-9]'"),
            shape_at!($v, "4", "NOT GLOB '[0-9]'"),
            shape_at!($v, "5", "<> '-'"),
            shape_at!($v, "6", "NOT GLOB '[0-9]'"),
            shape_at!($v, "7", "NOT GLOB '[0-9]'"),
            shape_at!($v, "8", "<> '-'"),
            shape_at!($v, "9", "NOT GLOB '[0-9]'"),
            shape_at!($v, "10", "NOT GLOB '[0-9]'"),
            // The shape of a date, and more: no value starting with those ten is a date.
            " WHEN length(",
            $v,
            ") > 10 THEN max(",
            $v,
            ", substr(",
            $v,
            ", 1, 10) || char(1114111))",
            " ELSE ",
            $v,
            " END)"
        )
    };
}

/// The statement of [`NEXT_DATES`] with the upper bound `$bound`.
macro_rules! next_values {
    ($bound:literal) => {
        concat!(
            "WITH RECURSIVE next(v, n) AS (SELECT CAST(unhex(?1) AS TEXT), 0 UNION ALL ",
            "SELECT (SELECT min(event_date) FROM traffic_events WHERE event_date > ",
            past_value!("next.v"),
            $bound,
            "), n + 1 FROM next WHERE next.v IS NOT NULL AND n < ?3) ",
            "SELECT v, hex(v) FROM next WHERE n > 0 AND v IS NOT NULL ORDER BY v"
        )
    };
}

/// The `event_date` values after `?1` (the hex of its bytes) and no later than `?2` that have
/// rows, oldest first, at most `?3`, each with the hex of its bytes (JavaScript would hand
/// invalid UTF-8 back changed; the next query goes on from the exact bytes). One statement,
/// one index seek per value: a loose index scan, each row of the recursion asking the index
/// for the least value past the one before, so a backlog of many dates costs the cron, health
/// and the listing one D1 query, not one a date. A value that is no date is passed over with
/// every value that shares the start that makes it none ([`past_value`]): timestamps an app
/// wrote into `event_date` cost a seek a day (ISO) or a day or more (unix seconds or ms), not
/// one a row.
pub const NEXT_DATES: &str = next_values!(" AND event_date <= ?2");

/// [`NEXT_DATES`] over every text value (`?2` unused): text sorts before any BLOB, so `x''`
/// bounds them all, bytes past U+10FFFF too.
pub const NEXT_VALUES: &str = next_values!(" AND event_date < x''");

/// `event_date` values after the bytes `after` and up to `last` (every text value: `None`), at
/// most `limit` (see [`NEXT_DATES`]).
pub fn next_dates(after: &[u8], last: Option<&str>, limit: u32) -> Statement {
    Statement::new(
        if last.is_some() { NEXT_DATES } else { NEXT_VALUES },
        vec![
            Param::Text(hex::encode_upper(after)),
            last.map_or(Param::Null, |l| Param::Text(l.into())),
            Param::Int(i64::from(limit)),
        ],
    )
}

/// Whether any row has the empty `event_date` (which [`NEXT_DATES`], scanning past `''`, never
/// returns), and whether any has one that is no text at all (a number sorts before any text, a
/// BLOB after): two index seeks each.
pub const ODD_EVENT_DATES: &str = "SELECT EXISTS (SELECT 1 FROM traffic_events WHERE event_date = ''), \
EXISTS (SELECT 1 FROM traffic_events WHERE event_date < '') OR EXISTS (SELECT 1 FROM traffic_events WHERE event_date >= x'')";

pub fn odd_event_dates() -> Statement {
    Statement::new(ODD_EVENT_DATES, vec![])
}

/// Every known date's phase and hold, for the cron's and the listing's decisions.
pub const DATE_STATES: &str =
    "SELECT date, status, hold_until, rows_pending, updated_at FROM archive_metadata ORDER BY date LIMIT 10000";

pub fn date_states() -> Statement {
    Statement::new(DATE_STATES, vec![])
}

/// The listing of `/admin/dates`.
pub const LIST_DATES: &str = "SELECT date, status, generation, record_count, total_record_count, rows_deleted, \
rows_pending, rows_restored, d1_cleaned, file_size_bytes, r2_path, error_message, hold_until, next_step_at, updated_at \
FROM archive_metadata ORDER BY date LIMIT 10000";

pub fn list_dates() -> Statement {
    Statement::new(LIST_DATES, vec![])
}

/// Every object row of one date.
pub const LIST_OBJECTS: &str = "SELECT key, generation, format, state, rows, bytes FROM archive_objects \
WHERE date = ?1 ORDER BY generation, key";

pub fn list_objects(date: &str) -> Statement {
    Statement::new(LIST_OBJECTS, vec![Param::Text(date.into())])
}

/// Failed dates with their errors.
pub const FAILED_DATES: &str =
    "SELECT date, error_message FROM archive_metadata WHERE status = 'failed' ORDER BY date LIMIT ?1";

pub fn failed_dates(limit: u32) -> Statement {
    Statement::new(FAILED_DATES, vec![Param::Int(i64::from(limit))])
}

/// The cron's heartbeat, for `/admin/health`.
pub const BEAT: &str =
    "INSERT INTO archiver_heartbeat (name, at) VALUES (?1, ?2) ON CONFLICT (name) DO UPDATE SET at = excluded.at";
/// The first time health was asked, kept.
pub const FIRST_SEEN: &str =
    "INSERT INTO archiver_heartbeat (name, at) VALUES ('first_seen', ?1) ON CONFLICT (name) DO NOTHING";
pub const BEATS: &str = "SELECT name, at FROM archiver_heartbeat";

pub fn beat(name: &str, now_ms: i64) -> Statement {
    Statement::new(BEAT, vec![Param::Text(name.into()), Param::Int(now_ms)])
}

pub fn first_seen(now_ms: i64) -> Statement {
    Statement::new(FIRST_SEEN, vec![Param::Int(now_ms)])
}

pub fn beats() -> Statement {
    Statement::new(BEATS, vec![])
}

/// Bench only: the naive archiver's page (`LIMIT … OFFSET`, every column as JavaScript values).
pub const NAIVE_PAGE: &str = "SELECT * FROM traffic_events WHERE event_date = ?1 ORDER BY id LIMIT ?2 OFFSET ?3";

pub fn naive_page(date: &str, limit: u32, offset: u64) -> Statement {
    Statement::new(
        NAIVE_PAGE,
        vec![
            Param::Text(date.into()),
            Param::Int(i64::from(limit)),
            Param::Int(offset as i64),
        ],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn narrow_is_no_character_past_u00ff_wherever_it_stands() {
        let latin = "é".repeat(100);
        assert!(is_narrow_bytes(latin.as_bytes()) && is_narrow_bytes(b""));
        for at in [0, 63, 64, 150, 199] {
            let mut s = "a".repeat(200);
            s.replace_range(at..at + 1, "Ā");
            assert!(!is_narrow_bytes(s.as_bytes()), "U+0100 at {at}");
        }
    }

    /// Texts ending in a comma, in a backslash, or holding `","` escaped: each value comes out
    /// whole (a text ending in a comma was cut at its closing quote before a review).
    #[test]
    fn a_line_is_cut_into_its_values_whatever_its_texts_hold() {
        let texts = [
            "/tags/a,",
            "a\\",
            "a\\,",
            ",",
            "\",\"",
            "x\\\",\"y",
            "",
            "{\"$blob\":\"00\"},",
        ];
        for text in texts {
            let mut values: Vec<String> = COLUMNS.iter().map(|_| Value::from(text).to_string()).collect();
            values[4] = "1.5".into();
            values[3] = "200".into();
            values[11] = "null".into();
            let body: Vec<String> = COLUMNS
                .iter()
                .zip(&values)
                .map(|(c, v)| format!("\"{c}\":{v}"))
                .collect();
            let line = format!("{{{}}}", body.join(","));
            let got = cut(&line).unwrap_or_else(|| panic!("{line}"));
            assert_eq!(got.to_vec(), values, "{line}");
        }
        // Not the table's columns in order, or something after them: not cut.
        assert!(cut(r#"{"id":"a,","path":"b"}"#).is_none());
    }

    /// A line of every column, as the export writes it: `rt` its REAL column's value, `ua` its
    /// user agent's.
    fn line(id: &str, rt: &str, ua: &str) -> String {
        format!(
            r#"{{"id":"{id}","path":"/p","method":"GET","status":200,"response_time":{rt},"client_ip_hash":"h","user_agent":{ua},"country":null,"timestamp":17,"event_date":"2026-11-20","is_error":0,"created_at":{{"$blob":"0A"}}}}"#
        )
    }

    #[test]
    fn column_sets_are_the_table_in_order() {
        let set = |names: &'static str| names.split(',').collect::<Vec<_>>();
        let without = |skip: &[&str]| COLUMNS.into_iter().filter(|c| !skip.contains(c)).collect::<Vec<_>>();
        let real = COLUMNS.iter().position(|c| *c == REAL_COLUMN).unwrap();
        assert_eq!(set(columns!(all, name, ",")), without(&[]));
        assert_eq!(set(columns!(head, name, ",")), COLUMNS[..real]);
        assert_eq!(set(columns!(tail, name, ",")), COLUMNS[real + 1..]);
        assert_eq!(set(columns!(wire, name, ",")), without(&[REAL_COLUMN, "event_date"]));
        let keyed = set(columns!(keyed, name, ","));
        assert_eq!(keyed, without(&["id", REAL_COLUMN, "event_date"]));
        assert_eq!(keyed.len(), KEYED_VALUES);
        assert_eq!(set(columns!(wire, name, ",")).len(), WIRE_VALUES - 1);
    }

    #[test]
    fn ids_follow_in_byte_order_and_numbers_by_value() {
        // `a < b`: b follows a; `a !< b`: it does not (equal values included).
        for case in [
            "7 < 8",
            "8 !< 7",
            "7 !< 7.0",
            "7.0 !< 7",
            "9007199254740992.0 < 9007199254740993",
            "9007199254740993 !< 9007199254740992.0",
            "-0.5 < 0",
            "2.5 < 3",
            "3 !< 2.5",
            "-9.0e+999 < -9223372036854775808",
            "9223372036854775807 < 9.0e+999",
        ] {
            let [before, op, after] = case.split(' ').collect::<Vec<_>>()[..] else {
                panic!("{case}")
            };
            assert_eq!(number_follows(before, after), Some(op == "<"), "{case}");
        }
        assert_eq!(number_follows("\"a\"", "1"), None);
        for (before, after, expected) in [
            ("\"a\"", "\"ab\"", Some(true)),
            ("\"ab\"", "\"ab!\"", Some(true)),
            ("\"a\"", "\"a\"", Some(false)),
            ("\"B\"", "\"a\"", Some(true)),
            ("\"a\"", "\"B\"", Some(false)),
            ("\"a\\\"\"", "\"a#\"", Some(true)),
            ("\"\"", "{\"$blob\":\"00\"}", Some(true)),
            ("{\"$blob\":\"00\"}", "{\"$blob\":\"0000\"}", Some(true)),
            ("\"\u{FFFD}\"", "\"a\"", None),
        ] {
            assert_eq!(id_follows(before, after).unwrap(), expected, "{before} then {after}");
        }
    }

    #[test]
    fn wire_pages_split_into_rows_and_cursors() {
        let row = |key: &str, id: &str, ts: &str, real: &str| {
            let values = [id, "\"/\"", "\"GET\"", "200", "\"h\"", "null", "null", ts, "0", "1"];
            format!("{key}{LINE_SEP}{}{WIRE_SEP}{real}", values.join(&LINE_SEP.to_string()))
        };
        let wire = [
            row("", r#""a\"b""#, "17", "1.5"),
            row("4", "null", "\"late\"", "=null"),
            row("", r#"{"$blob":"00FF"}"#, "1.5", "2"),
        ]
        .join(&WIRE_SEP.to_string());
        let rows: Vec<PageRow> = page_rows(&wire, "\"d\"").collect::<Result<_, _>>().unwrap();
        assert_eq!(rows.len(), 3);
        assert!(rows
            .iter()
            .all(|r| r.values[DATE_VALUE] == "\"d\"" && r.values[DATE_VALUE + 1] == "0"));
        assert_eq!(
            (
                rows[0].timestamp_json(),
                rows[1].timestamp_json(),
                rows[2].timestamp_json()
            ),
            ("17", "\"late\"", "1.5")
        );
        assert_eq!((rows[0].real, rows[1].id(), rows[2].values[10]), ("1.5", "null", "1"));
        assert_eq!(
            cursor_after(&rows[0]).unwrap(),
            Cursor::After {
                id: Key::Text("a\"b".into())
            }
        );
        assert_eq!(cursor_after(&rows[1]).unwrap(), Cursor::NullIds { rowid: 4 });
        assert_eq!(
            cursor_after(&rows[2]).unwrap(),
            Cursor::After {
                id: Key::Blob("00FF".into())
            }
        );
        let page_rows = |wire: &str| page_rows(wire, "\"d\"").map(|r| r.map(|_| ())).collect::<Vec<_>>();
        assert_eq!(page_rows("").len(), 0);
        assert!(page_rows(&format!("{}{WIRE_SEP}x", row("", "\"a\"", "1", "1.0")))
            .iter()
            .any(|r| r.is_err()));
        let short = row("", "\"a\"", "1", "1.0").replacen(LINE_SEP, "", 1);
        assert!(
            page_rows(&short).iter().any(|r| r.is_err()),
            "a row with a value missing"
        );
        let long = row("", "\"a\"", "1", "1.0").replacen(WIRE_SEP, &format!("{LINE_SEP}1{WIRE_SEP}"), 1);
        assert!(
            page_rows(&long).iter().any(|r| r.is_err()),
            "a row with a value too many"
        );
        let empty = row("", "\"a\"", "", "1.0");
        assert!(
            page_rows(&empty).iter().any(|r| r.is_err()),
            "a row with an empty value"
        );
        let names: Vec<&str> = COLUMNS.iter().copied().filter(|c| *c != REAL_COLUMN).collect();
        assert_eq!(
            (names[ID_VALUE], names[TIMESTAMP_VALUE], names[DATE_VALUE]),
            ("id", "timestamp", "event_date")
        );
        assert!(!EXPORT_AFTER_ID.contains("json_quote(event_date)") && EXPORT_AFTER_ID.contains("event_date = ?1"));
    }

    #[test]
    fn lines_are_keyed_by_ids_json_did_not_escape() {
        assert_eq!(keyed_id(r#"{"id":"a.b[0]$ ü","x":1}"#), Some("a.b[0]$ ü"));
        assert_eq!(keyed_id(r#"{"id":"","x":1}"#), Some(""));
        for line in [
            r#"{"id":"a\"b","x":1}"#,
            r#"{"id":"a\\b","x":1}"#,
            r#"{"id":"a\tb","x":1}"#,
            r#"{"id":null,"x":1}"#,
            r#"{"id":{"$blob":"00"},"x":1}"#,
            r#"{"id":"unterminated"#,
        ] {
            assert_eq!(keyed_id(line), None, "{line}");
        }
        let lines = [
            line("a", "1.5", r#""a,\"response_time\":2,\"country\":1""#),
            line("b.c", "7", "null"),
            line("d", r#""1.5""#, r#""u""#),
            line("e", "-2e-5", r#""u""#),
            line("f", r#"{"$blob":"0A"}"#, r#""u""#),
            line("g", "null", r#""u""#),
            r#"{"id":"h","s":7,"no_real":1}"#.to_string(),
            line("i", "1.5", r#""u""#).replace("2026-11-20", "2026-11-21"),
            line("j", "1.5", r#""u""#).replace(r#""country":null"#, r#""country":null,"extra":1"#),
            line("k", "1.5", r#""u""#).replace(r#""method":"GET","status":200"#, r#""status":200,"method":"GET""#),
            line("l", "1.5", r#""u""#).replace(r#""0A"}"#, r#""0A","extra":1}"#),
            line("n", "1.5", r#""u""#).replace(r#""0A"}}"#, r#""0A"},"extra":1}"#),
            line("m", "1.5", r#"{"a":1,"b":2}"#),
        ];
        let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
        let (keyed, others) = split_keyed(&text, "2026-11-20");
        assert_eq!(
            others,
            lines[6..].iter().map(String::as_str).collect::<Vec<_>>(),
            "a line without every column in order, of another date, with another key or a value \
             no column has, takes the join"
        );
        let stmt = keyed_statement(DELETE_KEYED, &keyed, "2026-11-20");
        let text_params: Vec<&str> = stmt
            .params
            .iter()
            .map(|p| {
                let Param::Text(t) = p else { panic!("{p:?}") };
                t.as_str()
            })
            .collect();
        let values = |ua: &str| format!(r#"["/p","GET",200,"h",{ua},null,17,0,{{"$blob":"0A"}}]"#);
        let u = values(r#""u""#);
        assert_eq!(
            text_params,
            [
                format!(
                    r#"{{"a":{{"a":{}}},"c":{{"b.c":{}}},"d":{{"d":{u}}},"e":{{"e":{u}}},"f":{{"f":{u}}},"g":{{"g":{u}}}}}"#,
                    values(r#""a,\"response_time\":2,\"country\":1""#),
                    values("null")
                )
                .as_str(),
                "2026-11-20",
                "a",
                "g",
                r#"{"a":{"a":1.5},"e":{"e":-2e-5}}"#,
                r#"{"c":{"b.c":7},"d":{"d":"1.5"},"f":{"f":{"$blob":"0A"}},"g":{"g":null}}"#,
                "7b7d",
            ]
        );
        let row_values: Vec<String> = COLUMNS
            .iter()
            .filter(|c| !["id", REAL_COLUMN, "event_date"].contains(c))
            .map(|c| format!("CASE WHEN typeof(t.{c}) = 'blob' THEN json_object('$blob', hex(t.{c})) ELSE t.{c} END"))
            .collect();
        assert_eq!(row_values.len(), KEYED_VALUES);
        let row_values = row_values.join(", ");
        assert!(DELETE_KEYED.contains(&format!("json_array({row_values}) = coalesce(jsonb(?1) -> ")));
        assert_eq!(
            json_array(&[&lines[0], &lines[1]]),
            format!("[{},{}]", lines[0], lines[1])
        );
    }

    #[test]
    fn lines_with_a_character_past_latin_1_cross_as_hex() {
        let lines = [
            line("a", "1.5", r#""Mozilla""#),
            line("b", "1.5", r#""café ÿ""#),
            line("c", "1.5", r#""搜索""#),
            line("dĀ", "1.5", "null"),
            line("e", "1.5", r#""🚀""#),
        ];
        let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
        let (keyed, others) = split_keyed(&text, "2026-11-20");
        assert!(others.is_empty());
        let stmt = keyed_statement(DELETE_KEYED, &keyed, "2026-11-20");
        let text_of = |i: usize| {
            let Param::Text(t) = &stmt.params[i] else {
                panic!("{:?}", stmt.params[i])
            };
            t.clone()
        };
        let values = |ua: &str| format!(r#"["/p","GET",200,"h",{ua},null,17,0,{{"$blob":"0A"}}]"#);
        assert_eq!(
            text_of(0),
            format!(
                r#"{{"a":{{"a":{}}},"b":{{"b":{}}}}}"#,
                values(r#""Mozilla""#),
                values(r#""café ÿ""#)
            ),
            "Latin-1 stays in ?1"
        );
        assert!(text_of(0).chars().all(|c| c <= '\u{ff}'));
        let wide = String::from_utf8(hex::decode(text_of(6)).unwrap()).unwrap();
        assert_eq!(
            wide,
            format!(
                r#"{{"c":{{"c":{}}},"Ā":{{"dĀ":{}}},"e":{{"e":{}}}}}"#,
                values(r#""搜索""#),
                values("null"),
                values(r#""🚀""#)
            )
        );
        assert!(text_of(6).is_ascii());
        assert_eq!(
            (text_of(2), text_of(3)),
            ("a".to_string(), "e".to_string()),
            "the range spans both"
        );
    }

    #[test]
    fn keyed_objects_group_ids_by_their_last_character() {
        let mut o = KeyedObject::default();
        for (id, v) in [
            ("x1", "1"),
            ("z2", "2"),
            ("y1", "3"),
            ("", "4"),
            ("café", "5"),
            ("🚀", "6"),
        ] {
            o.entry(id).push_str(v);
        }
        assert_eq!(
            o.finish(),
            r#"{"1":{"x1":1,"y1":3},"2":{"z2":2},"":{"":4},"é":{"café":5},"🚀":{"🚀":6}}"#
        );
        assert_eq!(KeyedObject::default().finish(), "{}");
    }

    #[test]
    fn a_cursor_javascript_changed_is_read_again_as_bytes() {
        let lossy = Cursor::After {
            id: Key::Text("u\u{FFFD}z".into()),
        };
        assert!(cursor_is_lossy(&lossy));
        assert!(!cursor_is_lossy(&Cursor::After {
            id: Key::Text("u\u{e9}".into())
        }));
        let after = Cursor::After {
            id: Key::Text("a".into()),
        };
        let stmt = exact_cursor("2026-11-20", &after, 7).unwrap();
        assert_eq!((stmt.sql, &stmt.params[2]), (LAST_ID_HEX_AFTER, &Param::Int(7)));
        assert_eq!(
            exact_cursor("2026-11-20", &Cursor::FirstId, 7).unwrap().sql,
            LAST_ID_HEX_FIRST
        );
        assert!(exact_cursor("2026-11-20", &Cursor::NullIds { rowid: 3 }, 7).is_none());
        // `u`, two bytes that are not UTF-8, `z`: however many U+FFFD a decoder makes of them.
        for lossy in ["u\u{FFFD}z", "u\u{FFFD}\u{FFFD}z"] {
            assert_eq!(
                cursor_of_hex("75FF807A", lossy).unwrap(),
                Cursor::AfterBytes { hex: "75FF807A".into() }
            );
        }
        // Another id where the page ended: the rows moved, the step is retried.
        assert!(cursor_of_hex("76FF", "u\u{FFFD}").is_err());
        assert!(cursor_of_hex("", "").is_err());
        let next = export_page("2026-11-20", &Cursor::AfterBytes { hex: "75FF".into() }, 5, None);
        assert_eq!(
            (next.sql, &next.params[1]),
            (EXPORT_AFTER_BYTES, &Param::Blob(vec![0x75, 0xFF]))
        );
    }

    #[test]
    fn a_batch_threads_its_ledger_row_through_its_changes() {
        let id = BatchId {
            pass: "p",
            piece: 3,
            batch: 4,
        };
        let mut text: String = (0..KEYED_LINES + 1)
            .map(|i| line(&format!("{i:04}"), "1.5", "null") + "\n")
            .collect();
        text.push_str(&(line("x", "2.5", "null").replace(r#""id":"x""#, r#""id":null"#) + "\n"));
        let sqls = |stmts: Vec<Statement>| stmts.iter().map(|s| s.sql).collect::<Vec<_>>();
        let (delete, restore) = (
            sqls(delete_batch(&text, "2026-11-20", &id, 9, None)),
            // Lines with a BLOB value are restored by the general statement.
            sqls(restore_batch(
                &text.replace(r#"{"$blob":"0A"}"#, "5"),
                "2026-11-20",
                &id,
                9,
                &RestoreBatchMarks {
                    restore: "m",
                    generation: None,
                    after_newer: false,
                },
            )),
        );
        use LEDGER_ADD as ADD;
        assert_eq!(
            delete,
            [
                LEDGER_OPEN_DELETES,
                DELETE_KEYED,
                ADD,
                DELETE_KEYED,
                ADD,
                DELETE_BATCH,
                LEDGER_CLOSE,
                LEDGER_ROWS
            ]
        );
        assert_eq!(
            restore,
            [
                ROWID_MARK,
                LEDGER_OPEN,
                RESTORE_KEYED,
                ADD,
                RESTORE_BATCH,
                LEDGER_CLOSE,
                ROWID_END,
                RESTORE_CHECK,
                LEDGER_ROWS
            ]
        );
        // With a generation's marks besides the restore's: each written the same way.
        let marks = RestoreBatchMarks {
            restore: "m",
            generation: Some("m#g2"),
            after_newer: true,
        };
        let batch = restore_batch(&text, "2026-11-20", &id, 9, &marks);
        assert_eq!(
            sqls(batch.clone()),
            [
                ROWID_MARK,
                ROWID_MARK,
                LEDGER_OPEN,
                RESTORE_BATCH,
                LEDGER_CLOSE,
                ROWID_END,
                ROWID_END,
                RESTORE_CHECK,
                LEDGER_ROWS
            ]
        );
        let passes: Vec<&Param> = [0, 1, 5, 6].iter().map(|&i| &batch[i].params[0]).collect();
        let (m, g) = (Param::Text("m".into()), Param::Text("m#g2".into()));
        assert_eq!(passes, [&m, &g, &m, &g]);
        // A release takes only rows past the restore's mark, keyed or not.
        let release = delete_batch(&text, "2026-11-20", &id, 9, Some("m"));
        assert_eq!(release[5].sql, DELETE_BATCH_RESTORED);
        assert_eq!(release[5].params[3], Param::Text("m".into()));
        assert_eq!(release[1].sql, DELETE_KEYED_RESTORED);
        assert_eq!(release[1].params[7], Param::Text("m".into()));
        let first = &delete_batch(&text, "2026-11-20", &id, 9, None)[1];
        assert_eq!(
            first.params[2..4],
            [
                Param::Text("0000".into()),
                Param::Text(format!("{:04}", KEYED_LINES - 1))
            ]
        );
    }

    #[test]
    fn a_line_with_a_real_outside_the_real_column_takes_a_statement_that_reads_it_back() {
        let id = BatchId {
            pass: "p",
            piece: 0,
            batch: 0,
        };
        let plain = line("a", "1.5", "null");
        let null_id = plain.replace(r#""id":"a""#, r#""id":null"#);
        let cases = [
            (
                plain.replace(r#""status":200"#, r#""status":200.5"#),
                DELETE_KEYED_REALS,
            ),
            (
                plain.replace(r#""timestamp":17"#, r#""timestamp":1.7e1"#),
                DELETE_KEYED_REALS,
            ),
            (
                plain.replace(r#""timestamp":17"#, r#""timestamp":-17.0"#),
                DELETE_KEYED_REALS,
            ),
            (null_id.replace(r#""status":200"#, r#""status":2.0E2"#), DELETE_BATCH),
            (
                plain.replace(r#""user_agent":null"#, r#""user_agent":"1.5""#),
                DELETE_KEYED,
            ),
            (
                plain.replace(r#""response_time":1.5"#, r#""response_time":1e300"#),
                DELETE_KEYED,
            ),
            (null_id.clone(), DELETE_BATCH),
            (plain.clone(), DELETE_KEYED),
        ];
        for (text, sql) in &cases {
            let stmts = delete_batch(&format!("{text}\n"), "2026-11-20", &id, 9, None);
            let sqls: Vec<_> = stmts.iter().map(|s| s.sql).collect();
            assert_eq!(sqls, [LEDGER_OPEN_DELETES, sql, LEDGER_CLOSE, LEDGER_ROWS], "{text}");
        }
        // Together (each line its own id: a second line with an id is compared whole): one
        // statement of each kind.
        let all: String = cases
            .iter()
            .enumerate()
            .map(|(i, (text, _))| format!("{}\n", text.replace(r#""id":"a""#, &format!(r#""id":"a{i}""#))))
            .collect();
        let sqls: Vec<_> = delete_batch(&all, "2026-11-20", &id, 9, None)
            .iter()
            .map(|s| s.sql)
            .filter(|sql| ![LEDGER_OPEN_DELETES, LEDGER_ADD, LEDGER_CLOSE, LEDGER_ROWS].contains(sql))
            .collect();
        assert_eq!(sqls, [DELETE_KEYED, DELETE_KEYED_REALS, DELETE_BATCH]);
        // The checks themselves: every column but the REAL one, in both statements.
        for column in COLUMNS.iter().filter(|c| **c != REAL_COLUMN) {
            let check = format!("CAST(json_quote(t.{column}) AS REAL) = t.{column}");
            assert!(DELETE_BATCH.contains(&check), "{column}");
            let keyed = !["id", "event_date"].contains(column);
            assert_eq!(DELETE_KEYED_REALS.contains(&check), keyed, "{column}");
            assert!(!DELETE_KEYED.contains(&check), "{column}");
        }
    }

    #[test]
    fn statements_stay_under_d1_limits() {
        // D1: 100 KB of SQL text per statement.
        for sql in [
            DELETE_KEYED,
            DELETE_KEYED_REALS,
            DELETE_BATCH,
            RESTORE_BATCH,
            RESTORE_CHECK,
            EXPORT_AFTER_ID,
        ] {
            assert!(sql.len() < 100_000, "{} bytes", sql.len());
        }
    }
}
