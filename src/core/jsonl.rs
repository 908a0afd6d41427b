//! The row format: one JSON object per line, every column, SQL types preserved.
//!
//! Not a JSON library. SQLite renders most of each line itself (`json_object`: integers exactly
//! as 64-bit decimals, text verbatim UTF-8 with JSON escapes, NULL as `null`), because D1 hands
//! integers to JavaScript as doubles and would round those above 2^53. SQLite prints REAL values
//! with only 15 significant digits there, which does not round-trip, so the query hands the REAL
//! column over separately as 17 digits and this module re-renders it as the shortest decimal that
//! reads back as the same double (serde_json's float formatting).
//!
//! Wire shape of one row from [`crate::core::sql::EXPORT_PAGE`]: `HEAD \x1f REAL \x1f TAIL`.
//! HEAD and TAIL are JSON objects; neither can hold a raw `\x1f`, since `json_object` escapes
//! every control character.

/// The separator between the three fields of a wire row.
const FIELD_SEP: char = '\u{1f}';
/// The column spliced in between HEAD and TAIL.
const REAL_KEY: &str = "response_time";

/// A wire row that does not have the expected shape: the query and this module disagree.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("export row is malformed ({reason}); the export SQL and the JSONL encoder disagree, which is a bug: report it with the row's id")]
pub struct MalformedRow {
    pub reason: &'static str,
}

/// Appends the canonical JSONL line (ending in `\n`) for one wire row to `out`.
pub fn encode_row(wire: &str, out: &mut Vec<u8>) -> Result<(), MalformedRow> {
    let start = out.len();
    encode_fields(wire, out).map_err(|reason| {
        out.truncate(start);
        MalformedRow { reason }
    })
}

fn encode_fields(wire: &str, out: &mut Vec<u8>) -> Result<(), &'static str> {
    let mut fields = wire.splitn(3, FIELD_SEP);
    let (Some(head), Some(real), Some(tail)) = (fields.next(), fields.next(), fields.next()) else {
        return Err("expected three fields");
    };
    let head = head
        .strip_suffix('}')
        .filter(|h| h.starts_with('{'))
        .ok_or("head is not a JSON object")?;
    let tail = tail
        .strip_prefix('{')
        .filter(|t| t.ends_with('}'))
        .ok_or("tail is not a JSON object")?;
    out.extend_from_slice(head.as_bytes());
    out.extend_from_slice(b",\"");
    out.extend_from_slice(REAL_KEY.as_bytes());
    out.extend_from_slice(b"\":");
    write_real(real, out)?;
    if tail != "}" {
        out.push(b',');
    }
    out.extend_from_slice(tail.as_bytes());
    out.push(b'\n');
    Ok(())
}

/// `real` is `printf('%!.17g')` of a REAL, or `json_quote()` of a non-numeric value.
fn write_real(real: &str, out: &mut Vec<u8>) -> Result<(), &'static str> {
    if real == "null" || real.starts_with('"') {
        out.extend_from_slice(real.as_bytes());
        return Ok(());
    }
    let value: f64 = real.parse().map_err(|_| "REAL field is not a number")?;
    if value.is_finite() {
        // serde_json writes the shortest representation that parses back to the same double.
        serde_json::to_writer(&mut *out, &value).map_err(|_| "REAL field did not serialize")?;
    } else {
        // JSON has no infinity; SQLite's own JSON uses 9.0e+999, which readers parse as inf.
        let sign = if value < 0.0 { "-" } else { "" };
        out.extend_from_slice(format!("{sign}9.0e+999").as_bytes());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(wire: &str) -> String {
        let mut out = Vec::new();
        encode_row(wire, &mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn splices_the_real_column_in_place() {
        let wire = "{\"id\":\"a\",\"status\":200}\u{1f}0.30000000000000004\u{1f}{\"country\":null,\"timestamp\":9007199254740993}";
        assert_eq!(
            enc(wire),
            "{\"id\":\"a\",\"status\":200,\"response_time\":0.30000000000000004,\"country\":null,\"timestamp\":9007199254740993}\n"
        );
    }

    #[test]
    fn reals_come_out_shortest_and_exact() {
        for (wire, want) in [
            ("12.000000000000000", "12.0"),
            ("123.45600000000000", "123.456"),
            ("23.799999952316284", "23.799999952316284"),
            ("4.9406564584124654e-324", "5e-324"),
            ("Inf", "9.0e+999"),
            ("-Inf", "-9.0e+999"),
            ("\"fast\"", "\"fast\""),
            ("null", "null"),
        ] {
            let line = enc(&format!("{{\"id\":\"x\"}}\u{1f}{wire}\u{1f}{{\"c\":1}}"));
            assert_eq!(line, format!("{{\"id\":\"x\",\"response_time\":{want},\"c\":1}}\n"), "{wire}");
        }
    }

    #[test]
    fn malformed_rows_are_errors_and_write_nothing() {
        let mut out = b"kept".to_vec();
        assert_eq!(
            encode_row("{\"id\":\"a\"}", &mut out),
            Err(MalformedRow { reason: "expected three fields" })
        );
        assert!(encode_row("{\"id\":\"a\"}\u{1f}abc\u{1f}{}", &mut out).is_err());
        assert_eq!(out, b"kept");
    }
}
