//! The row format: one JSON object per line, every column in table order, SQL types preserved.
//!
//! Not a JSON library. SQLite renders each value itself (`json_quote`: integers exactly as
//! 64-bit decimals, text verbatim UTF-8 with JSON escapes, NULL as `null`; BLOBs as
//! `{"$blob":"HEX"}`), because D1 hands integers to JavaScript as doubles and would round those
//! above 2^53. SQLite 3.50 printed REAL values with 15 significant digits there (3.54.1, local
//! workerd's, prints the digits a value needs; the REAL column depends on neither), so it
//! crosses as a number (a double, exact; JavaScript writes it as its shortest decimal) and this
//! module writes it as the shortest decimal that reads back as the same double (serde_json's
//! float formatting). The keys are the table's [`COLUMNS`], written here: they do not cross.
//!
//! The reading side is small: [`LineKeys`] reads the two values the events route filters on,
//! and [`Timestamp`] says where a `timestamp` value lies in time.

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::core::sql::{Key, COLUMNS, REAL_COLUMN, WIRE_VALUES};

/// A `timestamp` value that is a number (unix ms): an INTEGER, or a finite REAL such as
/// `1795176001000.5`, which SQLite keeps in the INTEGER column as it is. Text, NULL, BLOBs and
/// SQLite's infinities (`9.0e+999`) are no time.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Timestamp {
    Int(i64),
    Real(f64),
}

impl Timestamp {
    /// From the value's JSON text as the export wrote it.
    pub fn parse(json: &str) -> Option<Timestamp> {
        // Text, `null` and BLOB objects start otherwise; so do Rust's `inf` and `NaN`.
        if !json.starts_with(|c: char| c == '-' || c.is_ascii_digit()) {
            return None;
        }
        if let Ok(t) = json.parse() {
            return Some(Timestamp::Int(t));
        }
        json.parse::<f64>().ok().filter(|t| t.is_finite()).map(Timestamp::Real)
    }

    /// Whether it lies in `[from, to)` (unix ms; `None`: no bound), exactly.
    pub fn within(self, from: Option<i64>, to: Option<i64>) -> bool {
        match self {
            Timestamp::Int(t) => from.is_none_or(|f| t >= f) && to.is_none_or(|e| t < e),
            // Against a whole bound, a REAL lies where its floor does (`as i128` saturates far
            // outside every i64); a bound past 2^53 is no double, so it is never made one
            // (found by a review).
            Timestamp::Real(t) => {
                let floor = t.floor() as i128;
                from.is_none_or(|f| floor >= i128::from(f)) && to.is_none_or(|e| floor < i128::from(e))
            }
        }
    }

    /// The whole milliseconds around it, what the seek index's `min_ts..=max_ts` cover: itself
    /// for an INTEGER, a REAL's floor and ceiling (saturating).
    pub fn bounds(self) -> (i64, i64) {
        match self {
            Timestamp::Int(t) => (t, t),
            Timestamp::Real(t) => (t.floor() as i64, t.ceil() as i64),
        }
    }
}

/// A wire row that does not have the expected shape: the query and this module disagree.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("export row is malformed ({reason}); the export SQL and the JSONL encoder disagree, which is a bug: report it with the row's id")]
pub struct MalformedRow {
    pub reason: &'static str,
}

/// Appends the canonical JSONL line (ending in `\n`) for one row to `out`: `values` are the
/// JSON values of every column but the REAL one, in table order, `real` the REAL column's
/// value: a number in any exact decimal form, or `=` followed by JSON (a text, `null`, or a
/// BLOB object).
pub fn encode_row(values: &[&str; WIRE_VALUES], real: &str, out: &mut Vec<u8>) -> Result<(), MalformedRow> {
    let start = out.len();
    encode_fields(values, real, out).map_err(|reason| {
        out.truncate(start);
        MalformedRow { reason }
    })
}

fn encode_fields(values: &[&str; WIRE_VALUES], real: &str, out: &mut Vec<u8>) -> Result<(), &'static str> {
    let mut values = values.iter();
    for (i, column) in COLUMNS.iter().enumerate() {
        out.extend_from_slice(if i == 0 { b"{\"" } else { b",\"" });
        out.extend_from_slice(column.as_bytes());
        out.extend_from_slice(b"\":");
        if *column == REAL_COLUMN {
            write_real(real, out)?;
        } else {
            let value = values.next().ok_or("fewer values than columns")?;
            if value.is_empty() {
                return Err("a value is empty");
            }
            out.extend_from_slice(value.as_bytes());
        }
    }
    out.extend_from_slice(b"}\n");
    Ok(())
}

/// A REAL as a JSON number (always with a fraction or exponent, as SQL REALs are doubles);
/// anything else in the column comes as `=` and its JSON, written as it is.
fn write_real(real: &str, out: &mut Vec<u8>) -> Result<(), &'static str> {
    if let Some(json) = real.strip_prefix('=') {
        out.extend_from_slice(json.as_bytes());
        return Ok(());
    }
    let value: f64 = real.parse().map_err(|_| "REAL field is not a number")?;
    if value.is_finite() {
        // serde_json writes the shortest representation that parses back to the same double.
        serde_json::to_writer(&mut *out, &value).map_err(|_| "REAL field did not serialize")?;
    } else {
        // JSON has no infinity; SQLite's own JSON uses 9.0e+999, which readers parse as inf.
        let sign = if value < 0.0 { "-" } else { "" };
        out.extend_from_slice(sign.as_bytes());
        out.extend_from_slice(b"9.0e+999");
    }
    Ok(())
}

/// The id and the timestamp of an archived line, for the events route's filters: kept as their
/// JSON text, so a value no Rust number holds (a REAL of `9.0e+999`, SQLite's infinity) in
/// any column leaves the others readable. Other columns are skipped without being kept.
#[derive(Debug, Clone, Deserialize)]
pub struct LineKeys<'a> {
    #[serde(borrow)]
    id: &'a RawValue,
    #[serde(borrow)]
    timestamp: &'a RawValue,
}

impl<'a> LineKeys<'a> {
    pub fn read(line: &'a [u8]) -> Option<LineKeys<'a>> {
        serde_json::from_slice(line).ok()
    }

    /// The timestamp when it is a number.
    pub fn timestamp(&self) -> Option<Timestamp> {
        Timestamp::parse(self.timestamp.get())
    }

    /// The id as the scan orders it: `None` for NULL (and for an id no scan writes).
    pub fn id_key(&self) -> Option<Key> {
        #[derive(Deserialize)]
        struct Blob<'b> {
            #[serde(rename = "$blob", borrow)]
            hex: &'b str,
        }
        let raw = self.id.get();
        match raw.as_bytes().first() {
            Some(b'"') => serde_json::from_str(raw).ok().map(Key::Text),
            Some(b'{') => serde_json::from_str::<Blob>(raw)
                .ok()
                .map(|b| Key::Blob(b.hex.to_string())),
            _ => None,
        }
    }

    /// The id when it is text (NULL and BLOB ids never fall in an id range).
    pub fn text_id(&self) -> Option<String> {
        match self.id_key()? {
            Key::Text(t) => Some(t),
            Key::Blob(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The values of a row: `id` and `timestamp` as given, the others fixed.
    fn values<'a>(id: &'a str, timestamp: &'a str) -> [&'a str; WIRE_VALUES] {
        [
            id,
            "\"/\"",
            "\"GET\"",
            "200",
            "\"h\"",
            "null",
            "\"JP\"",
            timestamp,
            "\"2026-11-20\"",
            "0",
            "{\"$blob\":\"0A\"}",
        ]
    }

    fn enc(values: [&str; WIRE_VALUES], real: &str) -> String {
        let mut out = Vec::new();
        encode_row(&values, real, &mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn writes_every_column_in_table_order_with_the_real_in_place() {
        assert_eq!(
            enc(values("\"a\"", "9007199254740993"), "0.30000000000000004"),
            concat!(
                r#"{"id":"a","path":"/","method":"GET","status":200,"response_time":0.30000000000000004,"#,
                r#""client_ip_hash":"h","user_agent":null,"country":"JP","timestamp":9007199254740993,"#,
                r#""event_date":"2026-11-20","is_error":0,"created_at":{"$blob":"0A"}}"#,
                "\n"
            )
        );
    }

    #[test]
    fn reals_come_out_shortest_and_exact_and_other_types_verbatim() {
        for (real, want) in [
            ("12", "12.0"),
            ("12.000000000000000", "12.0"),
            ("123.456", "123.456"),
            ("23.799999952316284", "23.799999952316284"),
            ("5e-324", "5e-324"),
            ("4.9406564584124654e-324", "5e-324"),
            ("1e+300", "1e+300"),
            ("Infinity", "9.0e+999"),
            ("-Infinity", "-9.0e+999"),
            ("=\"fast\"", "\"fast\""),
            ("=null", "null"),
            ("=12", "12"),
            ("={\"$blob\":\"00FF\"}", "{\"$blob\":\"00FF\"}"),
        ] {
            let line = enc(values("\"x\"", "1"), real);
            assert!(
                line.contains(&format!(",\"response_time\":{want},\"client_ip_hash\":")),
                "{real}: {line}"
            );
        }
    }

    #[test]
    fn malformed_rows_are_errors_and_write_nothing() {
        let mut out = b"kept".to_vec();
        assert_eq!(
            encode_row(&values("", "1"), "1.0", &mut out),
            Err(MalformedRow {
                reason: "a value is empty"
            })
        );
        assert!(encode_row(&values("\"a\"", "1"), "true", &mut out).is_err());
        assert_eq!(out, b"kept");
    }

    #[test]
    fn line_keys() {
        use Timestamp::{Int, Real};
        let k = LineKeys::read(b"{\"id\":\"a\\u00e9\",\"x\":[1],\"timestamp\":17}").unwrap();
        assert_eq!(
            (k.text_id().as_deref(), k.timestamp()),
            (Some("a\u{e9}"), Some(Int(17)))
        );
        let k = LineKeys::read(b"{\"id\":null,\"timestamp\":\"late\"}").unwrap();
        assert_eq!((k.text_id(), k.timestamp()), (None, None));
        // SQLite's infinity, in the timestamp or in another column: the rest is still read.
        let k = LineKeys::read(b"{\"id\":\"b\",\"timestamp\":9.0e+999}").unwrap();
        assert_eq!((k.text_id().as_deref(), k.timestamp()), (Some("b"), None));
        let k = LineKeys::read(b"{\"id\":\"c\",\"response_time\":-9.0e+999,\"timestamp\":5}").unwrap();
        assert_eq!((k.text_id().as_deref(), k.timestamp()), (Some("c"), Some(Int(5))));
        let k = LineKeys::read(b"{\"id\":{\"$blob\":\"0A\"},\"timestamp\":1.5}").unwrap();
        assert_eq!((k.text_id(), k.timestamp()), (None, Some(Real(1.5))));
        assert_eq!(k.id_key(), Some(Key::Blob("0A".into())));
        let key = |line: &[u8]| LineKeys::read(line).unwrap().id_key();
        assert_eq!(
            key(b"{\"id\":\"a\\\"b\",\"timestamp\":1}"),
            Some(Key::Text("a\"b".into()))
        );
        assert_eq!(key(b"{\"id\":null,\"timestamp\":1}"), None);
        // The scan's order: NULL, then text, then BLOB.
        assert!(key(b"{\"id\":null,\"timestamp\":1}") < key(b"{\"id\":\"\",\"timestamp\":1}"));
        assert!(key(b"{\"id\":\"\\uffff\",\"timestamp\":1}") < key(b"{\"id\":{\"$blob\":\"00\"},\"timestamp\":1}"));
    }

    #[test]
    fn a_timestamp_is_an_integer_or_a_finite_real_and_lies_in_its_window_exactly() {
        use Timestamp::{Int, Real};
        let t = |json: &str| Timestamp::parse(json);
        assert_eq!(t("1795176001000"), Some(Int(1_795_176_001_000)));
        assert_eq!(t("1795176001000.5"), Some(Real(1_795_176_001_000.5)));
        assert_eq!(t("1.7951760010005e+12"), Some(Real(1_795_176_001_000.5)));
        assert_eq!(t("-0.25"), Some(Real(-0.25)));
        for none in [
            "null",
            "\"17\"",
            "9.0e+999",
            "-9.0e+999",
            "{\"$blob\":\"00\"}",
            "inf",
            "NaN",
            "",
        ] {
            assert_eq!(t(none), None, "{none}");
        }
        let (from, to) = (Some(1_000), Some(2_000));
        for (ts, inside) in [
            (Int(999), false),
            (Int(1_000), true),
            (Int(1_999), true),
            (Int(2_000), false),
            (Real(999.999), false),
            (Real(1_000.0), true),
            (Real(1_999.999_9), true),
            (Real(2_000.0), false),
        ] {
            assert_eq!(ts.within(from, to), inside, "{ts:?}");
            assert!(ts.within(None, None));
        }
        // Bounds past 2^53 are no doubles: 2^53 lies before 2^53 + 1 (found by a review), and
        // the extremes stay where they are.
        let two53 = 9_007_199_254_740_992_i64;
        assert!(Real(two53 as f64).within(None, Some(two53 + 1)));
        assert!(!Real(two53 as f64).within(Some(two53 + 1), None));
        assert!(!Real(-1e300).within(Some(i64::MIN), None));
        assert!(!Real(1e300).within(None, Some(i64::MAX)));
        assert!(Real(-1.5).within(Some(-2), Some(-1)));
        assert_eq!(Real(1_000.5).bounds(), (1_000, 1_001));
        assert_eq!(Real(-0.5).bounds(), (-1, 0));
        assert_eq!(Real(7.0).bounds(), (7, 7));
        assert_eq!(Real(1e300).bounds(), (i64::MAX, i64::MAX));
        assert_eq!(Int(5).bounds(), (5, 5));
    }
}
