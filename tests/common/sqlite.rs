//! Runs the crate's statements on a real SQLite, the way D1 answers them. Shared by the native
//! tests' D1 fake and by `examples/floor.rs`.

use d1_archiver::core::sql::{Meta, Param, ResultSet, Statement, WIRE_SEP};
use rusqlite::types::{Value as Sql, ValueRef};
use serde_json::Value;

/// A statement's parameters as SQLite values. An integer D1 would round fails the test, as the
/// Worker's D1 adapter refuses it.
pub fn params(stmt: &Statement) -> Vec<Sql> {
    if let Some(i) = stmt.params.iter().find_map(Param::inexact_int) {
        panic!("{:.80}… binds the integer {i}, which D1 would round", stmt.sql);
    }
    stmt.params
        .iter()
        .map(|p| match p {
            Param::Null => Sql::Null,
            Param::Int(i) => Sql::Integer(*i),
            Param::Text(t) => Sql::Text(t.clone()),
            Param::Blob(b) => Sql::Blob(b.clone()),
        })
        .collect()
}

/// D1 hands integers to JavaScript as doubles: exact up to 2^53 only.
pub fn d1_value(v: ValueRef<'_>) -> Value {
    match v {
        ValueRef::Null => Value::Null,
        ValueRef::Integer(i) if i.unsigned_abs() <= 1 << 53 => Value::from(i),
        ValueRef::Integer(i) => Value::from(i as f64),
        // JavaScript's String(Infinity); JSON has no infinity.
        ValueRef::Real(f) if f.is_infinite() => Value::from(if f > 0.0 { "Infinity" } else { "-Infinity" }),
        ValueRef::Real(f) => Value::from(f),
        ValueRef::Text(t) => Value::from(String::from_utf8_lossy(t).into_owned()),
        ValueRef::Blob(b) => Value::from(b.to_vec()),
    }
}

/// Runs one statement: its rows as D1 returns them, and its accounting.
pub fn run(conn: &rusqlite::Connection, stmt: &Statement) -> rusqlite::Result<ResultSet> {
    let mut st = conn.prepare_cached(stmt.sql)?;
    let ncol = st.column_count();
    let mut rows = Vec::new();
    let mut q = st.query(rusqlite::params_from_iter(params(stmt).iter()))?;
    while let Some(r) = q.next()? {
        rows.push(
            (0..ncol)
                .map(|i| r.get_ref(i).map(d1_value))
                .collect::<Result<Vec<_>, _>>()?,
        );
    }
    drop(q);
    let changes = if ncol == 0 { conn.changes() } else { 0 };
    Ok(ResultSet {
        meta: Meta {
            rows_read: rows.len() as u64 + changes,
            rows_written: changes,
            changes,
            // One microsecond a statement: deterministic, enough to follow it into the stats.
            sql_us: 1,
        },
        rows,
    })
}

/// What the D1 adapter's `Array.prototype.join` makes of a result's rows.
pub fn wire(rs: &ResultSet) -> String {
    let mut wire = String::new();
    for (i, v) in rs.rows.iter().flatten().enumerate() {
        if i > 0 {
            wire.push(WIRE_SEP);
        }
        match v {
            Value::Null => {}
            Value::String(s) => wire.push_str(s),
            // JavaScript writes a double as its shortest decimal, as serde_json does.
            other @ (Value::Bool(_) | Value::Number(_) | Value::Array(_) | Value::Object(_)) => {
                wire.push_str(&other.to_string())
            }
        }
    }
    wire
}
