//! The seek index of an archive object: one entry per piece, and the sidecar JSON document
//! (`NNNN.index.json`) written next to the object for readers outside the archiver.
//!
//! Not the authority: the Durable Object's record holds the same entries and is what every
//! pass checks pieces against. The sidecar is for people and other tools.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::core::sql::{lossy_text, Key};

/// One entry of the seek index: a run of whole lines that inflates (raw deflate) on its own.
/// Archives written before REALs were bounded bound INTEGER timestamps only
/// ([`crate::core::state::Export::real_ts_bounded`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Piece {
    /// Where its compressed bytes start in the object.
    pub offset: u64,
    /// Its compressed bytes, as stored.
    pub len: u64,
    /// Its bytes once inflated: `rows` whole lines.
    pub raw_len: u64,
    pub rows: u64,
    /// CRC-32 of the inflated lines.
    pub crc32: u32,
    /// CRC-32 of the compressed bytes, checked before they are inflated.
    pub zcrc32: u32,
    /// Ids of its first and last lines, in scan order (`None` for a NULL or numeric id).
    pub first_id: Option<Key>,
    pub last_id: Option<Key>,
    /// Bounds of its lines' timestamps in whole ms (a REAL's floor and ceiling); `None` when
    /// no line of the piece has a timestamp that is a number.
    pub min_ts: Option<i64>,
    pub max_ts: Option<i64>,
}

impl Piece {
    /// Whether a line with a timestamp in `[from, to)` can be in this piece.
    pub fn may_hold_time(&self, from: Option<i64>, to: Option<i64>) -> bool {
        match (self.min_ts, self.max_ts) {
            (Some(lo), Some(hi)) => from.is_none_or(|f| hi >= f) && to.is_none_or(|t| lo < t),
            // No timestamp that is a number: only a query without a time window wants it.
            _ => from.is_none() && to.is_none(),
        }
    }

    /// What a read-back must find for this piece.
    pub fn expect(&self) -> crate::core::gzip::Expect {
        crate::core::gzip::Expect {
            zcrc32: self.zcrc32,
            raw_len: self.raw_len,
            crc32: self.crc32,
        }
    }

    /// Whether a text id in `[from, to]` can be in this piece. A first or last id with U+FFFD
    /// (bytes that were not UTF-8, sorted by those bytes, not by its text) bounds nothing.
    pub fn may_hold_id(&self, from: Option<&str>, to: Option<&str>) -> bool {
        if from.is_none() && to.is_none() {
            return true;
        }
        fn text(k: &Option<Key>) -> Option<&str> {
            match k {
                Some(Key::Text(t)) => Some(t),
                _ => None,
            }
        }
        // NULL ids come first and BLOB ids last in scan order; text ids in between, sorted.
        let lo = text(&self.first_id);
        let hi = text(&self.last_id);
        let starts_before_to = match (lo, to) {
            (Some(lo), Some(to)) => lossy_text(lo) || lo <= to,
            _ => true,
        };
        let ends_after_from = match (hi, from, &self.last_id) {
            (Some(hi), Some(from), _) => lossy_text(hi) || hi >= from,
            (None, Some(_), Some(Key::Blob(_))) => true,
            (None, Some(_), _) => false,
            (_, None, _) => true,
        };
        starts_before_to && ends_after_from
    }
}

/// The sidecar document: enough for a reader to fetch, inflate and check any piece on its own.
pub fn sidecar(date: &str, key: &str, rows: u64, bytes: u64, raw_bytes: u64, crc32: u32, pieces: &[Piece]) -> String {
    let pieces: Vec<Value> = pieces
        .iter()
        .map(|p| {
            json!({
                "offset": p.offset, "len": p.len, "raw_len": p.raw_len, "rows": p.rows,
                "crc32": format!("{:08x}", p.crc32), "deflate_crc32": format!("{:08x}", p.zcrc32),
                "first_id": key_json(&p.first_id), "last_id": key_json(&p.last_id),
                "min_timestamp": p.min_ts, "max_timestamp": p.max_ts,
            })
        })
        .collect();
    json!({
        "format": "one gzip member of JSON Lines; each piece is raw deflate ending in a full flush; BLOB values are {\"$blob\":\"HEX\"}",
        "date": date,
        "object": key,
        "rows": rows,
        "bytes": bytes,
        "uncompressed_bytes": raw_bytes,
        "crc32": format!("{crc32:08x}"),
        "pieces": pieces,
    })
    .to_string()
}

/// A key as it appears in an archived line: a string, a BLOB object, or null.
pub fn key_json(k: &Option<Key>) -> Value {
    match k {
        None => Value::Null,
        Some(Key::Text(t)) => Value::from(t.as_str()),
        Some(Key::Blob(h)) => json!({ "$blob": h }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn piece(first: Option<&str>, last: Option<&str>, ts: Option<(i64, i64)>) -> Piece {
        Piece {
            offset: 10,
            len: 5,
            raw_len: 9,
            rows: 1,
            crc32: 0,
            zcrc32: 0,
            first_id: first.map(|s| Key::Text(s.into())),
            last_id: last.map(|s| Key::Text(s.into())),
            min_ts: ts.map(|t| t.0),
            max_ts: ts.map(|t| t.1),
        }
    }

    #[test]
    fn time_and_id_windows_select_pieces() {
        let p = piece(Some("b"), Some("d"), Some((100, 200)));
        for (from, to, want) in [
            (None, None, true),
            (Some(200), None, true),
            (Some(201), None, false),
            (None, Some(100), false),
            (None, Some(101), true),
            (Some(150), Some(160), true),
        ] {
            assert_eq!(p.may_hold_time(from, to), want, "{from:?}..{to:?}");
        }
        assert!(!piece(None, None, None).may_hold_time(Some(1), None));
        for (from, to, want) in [
            (Some("a"), Some("b"), true),
            (Some("d"), None, true),
            (Some("e"), None, false),
            (None, Some("a"), false),
            (Some("c"), Some("c"), true),
        ] {
            assert_eq!(p.may_hold_id(from, to), want, "{from:?}..{to:?}");
        }
    }
}
