//! Deterministic fakes of the platform for native tests, and a driver that plays the alarms.
//!
//! - [`SqliteDb`]: D1 as a real SQLite, with the project's migrations, D1's number handling and
//!   batches as transactions.
//! - [`FakeR2`]: R2 with its multipart rules enforced (equal non-final parts of at least the
//!   minimum, replace on re-upload, unknown upload ids).
//! - [`FakeStore`]: Durable Object storage with the conditional save.
//! - Every port goes through the crate's one fault model, [`Faulty`], sharing one [`Faults`].

#![allow(dead_code)]

pub mod sqlite;

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::io::Read;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

use d1_archiver::core::config::Config;
use d1_archiver::core::machine::Command;
use d1_archiver::core::sql::{Meta, ResultSet, Statement, COLUMNS};
use d1_archiver::core::state::{PartRef, Record};
use d1_archiver::core::status::Status;
use d1_archiver::engine::{AlarmReport, CommandReport, EngineError, Ports};
use d1_archiver::ports::faulty::{Faults, Faulty};
use d1_archiver::ports::{Database, Durable, FailureKind, Host, ObjectStore, PortError};
use rusqlite::types::ValueRef;
use serde_json::Value;

/// Runs a future whose I/O never waits (all fakes answer at once).
pub fn block_on<F: Future>(f: F) -> F::Output {
    let mut f = std::pin::pin!(f);
    let mut cx = Context::from_waker(Waker::noop());
    loop {
        if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// D1 as SQLite

pub struct SqliteDb {
    pub conn: rusqlite::Connection,
}

/// The project's own migrations, in order.
pub fn migrations() -> Vec<String> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/migrations");
    let mut files: Vec<_> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    files.iter().map(|p| std::fs::read_to_string(p).unwrap()).collect()
}

impl SqliteDb {
    pub fn new() -> SqliteDb {
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        // D1 caps a string or BLOB at 2,000,000 bytes, results of functions included.
        conn.set_limit(rusqlite::limits::Limit::SQLITE_LIMIT_LENGTH, 2_000_000)
            .unwrap();
        for m in migrations() {
            conn.execute_batch(&m).unwrap();
        }
        SqliteDb { conn }
    }

    pub fn exec(&self, sql: &str) {
        self.conn.execute_batch(sql).unwrap();
    }
}

fn d1_error(op: &'static str) -> impl Fn(rusqlite::Error) -> PortError {
    move |e| PortError::of(op, e.to_string())
}

impl Database for SqliteDb {
    async fn run(&self, stmt: &Statement) -> Result<ResultSet, PortError> {
        sqlite::run(&self.conn, stmt).map_err(d1_error("d1"))
    }

    async fn batch(&self, stmts: &[Statement]) -> Result<Vec<ResultSet>, PortError> {
        let tx = self.conn.unchecked_transaction().map_err(d1_error("d1.batch"))?;
        let results = stmts
            .iter()
            .map(|s| sqlite::run(&tx, s))
            .collect::<rusqlite::Result<Vec<_>>>()
            .map_err(d1_error("d1.batch"))?;
        tx.commit().map_err(d1_error("d1.batch"))?;
        Ok(results)
    }

    async fn run_page(&self, stmt: &Statement) -> Result<(String, Meta), PortError> {
        let rs = sqlite::run(&self.conn, stmt).map_err(d1_error("d1.page"))?;
        Ok((sqlite::wire(&rs), rs.meta))
    }
}

// ---------------------------------------------------------------------------------------------
// R2

#[derive(Debug, Default)]
pub struct Upload {
    pub key: String,
    pub parts: BTreeMap<u16, (String, Vec<u8>)>,
}

pub struct FakeR2 {
    pub objects: RefCell<BTreeMap<String, Vec<u8>>>,
    pub uploads: RefCell<HashMap<String, Upload>>,
    pub next_id: Cell<u64>,
    pub min_part: usize,
    /// Every range read, as (key, offset, len), for tests of what the events route reads.
    pub reads: RefCell<Vec<(String, u64, u64)>>,
}

fn no_such_upload(op: &'static str) -> PortError {
    PortError {
        kind: FailureKind::NoSuchUpload,
        op,
        message: "The specified multipart upload does not exist. (10024)".into(),
    }
}

impl FakeR2 {
    pub fn new(min_part: usize) -> FakeR2 {
        FakeR2 {
            objects: Default::default(),
            uploads: Default::default(),
            next_id: Cell::new(0),
            min_part,
            reads: Default::default(),
        }
    }

    pub fn object(&self, key: &str) -> Option<Vec<u8>> {
        self.objects.borrow().get(key).cloned()
    }

    pub fn keys(&self) -> Vec<String> {
        self.objects.borrow().keys().cloned().collect()
    }

    pub fn open_uploads(&self) -> usize {
        self.uploads.borrow().len()
    }

    fn tag(&self) -> u64 {
        self.next_id.set(self.next_id.get() + 1);
        self.next_id.get()
    }

    fn assemble(&self, up: &Upload, parts: &[PartRef]) -> Result<Vec<u8>, PortError> {
        let mut body = Vec::new();
        let mut sizes = Vec::new();
        for (i, p) in parts.iter().enumerate() {
            if i > 0 && p.number <= parts[i - 1].number {
                return Err(PortError::transient("r2.complete", "parts must be in ascending order"));
            }
            let (etag, bytes) = up
                .parts
                .get(&p.number)
                .ok_or_else(|| PortError::transient("r2.complete", format!("part {} not found (10025)", p.number)))?;
            if *etag != p.etag {
                return Err(PortError::transient(
                    "r2.complete",
                    format!("part {}: etag replaced (10025)", p.number),
                ));
            }
            sizes.push(bytes.len());
            body.extend_from_slice(bytes);
        }
        if let Some((last, non_final)) = sizes.split_last() {
            let too_large = non_final.first().is_some_and(|first| last > first);
            if too_large || non_final.iter().any(|s| *s != non_final[0] || *s < self.min_part) {
                return Err(PortError::transient(
                    "r2.complete",
                    format!("InvalidPart: All non-trailing parts must have the same length, and the last no larger (10048): {sizes:?}"),
                ));
            }
        }
        Ok(body)
    }
}

impl ObjectStore for FakeR2 {
    async fn create_upload(&self, key: &str) -> Result<String, PortError> {
        let id = format!("upload-{}", self.tag());
        let up = Upload {
            key: key.into(),
            parts: BTreeMap::new(),
        };
        self.uploads.borrow_mut().insert(id.clone(), up);
        Ok(id)
    }

    async fn upload_part(&self, key: &str, upload_id: &str, number: u16, bytes: &[u8]) -> Result<String, PortError> {
        let etag = format!("etag-{upload_id}-{number}-{}", self.tag());
        let mut uploads = self.uploads.borrow_mut();
        let up = uploads
            .get_mut(upload_id)
            .filter(|u| u.key == key)
            .ok_or_else(|| no_such_upload("r2.upload_part"))?;
        up.parts.insert(number, (etag.clone(), bytes.to_vec()));
        Ok(etag)
    }

    async fn complete_upload(&self, key: &str, upload_id: &str, parts: &[PartRef]) -> Result<(), PortError> {
        let body = {
            let uploads = self.uploads.borrow();
            let up = uploads
                .get(upload_id)
                .filter(|u| u.key == key)
                .ok_or_else(|| no_such_upload("r2.complete"))?;
            self.assemble(up, parts)?
        };
        self.uploads.borrow_mut().remove(upload_id);
        self.objects.borrow_mut().insert(key.into(), body);
        Ok(())
    }

    async fn abort_upload(&self, _key: &str, upload_id: &str) -> Result<(), PortError> {
        self.uploads.borrow_mut().remove(upload_id);
        Ok(())
    }

    async fn put(&self, key: &str, body: &[&[u8]], _content_type: &str) -> Result<(), PortError> {
        self.objects.borrow_mut().insert(key.into(), body.concat());
        Ok(())
    }

    async fn head(&self, key: &str) -> Result<Option<u64>, PortError> {
        Ok(self.objects.borrow().get(key).map(|b| b.len() as u64))
    }

    async fn get_range(&self, key: &str, offset: u64, len: u64) -> Result<Option<Vec<u8>>, PortError> {
        self.reads.borrow_mut().push((key.into(), offset, len));
        Ok(self.objects.borrow().get(key).map(|b| {
            let end = ((offset + len) as usize).min(b.len());
            b[(offset as usize).min(end)..end].to_vec()
        }))
    }

    async fn delete(&self, key: &str) -> Result<(), PortError> {
        self.objects.borrow_mut().remove(key);
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Durable Object storage and host

#[derive(Default)]
pub struct FakeStore {
    pub saved: RefCell<Option<(String, Vec<u8>)>>,
    pub step_begun: Cell<Option<u64>>,
}

impl FakeStore {
    pub fn revision(&self) -> u64 {
        self.saved.borrow().as_ref().map_or(0, |(json, _)| {
            serde_json::from_str::<Value>(json).unwrap()["revision"]
                .as_u64()
                .unwrap()
        })
    }
}

impl Durable for FakeStore {
    async fn step_begun(&self) -> Result<Option<u64>, PortError> {
        Ok(self.step_begun.get())
    }

    async fn begin_step(&self, revision: u64) -> Result<(), PortError> {
        self.step_begun.set(Some(revision));
        Ok(())
    }

    async fn load(&self, carry_capacity: Option<usize>) -> Result<Option<(String, Vec<u8>)>, PortError> {
        Ok(self.saved.borrow().as_ref().map(|(json, carry)| {
            let carry = match carry_capacity {
                Some(cap) if !carry.is_empty() => {
                    let mut v = Vec::with_capacity(cap.max(carry.len()));
                    v.extend_from_slice(carry);
                    v
                }
                _ => Vec::new(),
            };
            (json.clone(), carry)
        }))
    }

    async fn save(&self, record_json: &str, carry: Option<&[u8]>, expected_revision: u64) -> Result<(), PortError> {
        if self.revision() != expected_revision {
            return Err(PortError {
                kind: FailureKind::Conflict,
                op: "do.save",
                message: "record changed".into(),
            });
        }
        let mut saved = self.saved.borrow_mut();
        let old_carry = saved.as_ref().map(|(_, c)| c.clone()).unwrap_or_default();
        *saved = Some((record_json.to_string(), carry.map_or(old_carry, <[u8]>::to_vec)));
        Ok(())
    }
}

/// What [`PageWatch`] shows every export page to: its statement and wire text.
pub type SeePage<'a> = Box<dyn Fn(&Statement, &str) + 'a>;

/// The world's D1, showing every export page that went through to `seen`.
pub struct PageWatch<'a> {
    pub w: &'a World,
    pub seen: SeePage<'a>,
}

impl Database for PageWatch<'_> {
    async fn run(&self, stmt: &Statement) -> Result<ResultSet, PortError> {
        self.w.db.run(stmt).await
    }
    async fn batch(&self, stmts: &[Statement]) -> Result<Vec<ResultSet>, PortError> {
        self.w.db.batch(stmts).await
    }
    async fn run_page(&self, stmt: &Statement) -> Result<(String, Meta), PortError> {
        let r = self.w.db.run_page(stmt).await;
        if let Ok((wire, _)) = &r {
            (self.seen)(stmt, wire);
        }
        r
    }
}

/// Whether an export page statement is held to its bytes in SQL (a step after one that never
/// saved).
pub fn capped_page(stmt: &Statement) -> bool {
    stmt.sql.contains("UNBOUNDED PRECEDING")
}

pub struct FakeHost {
    pub now: Cell<i64>,
    pub logs: RefCell<Vec<String>>,
}

impl Host for FakeHost {
    fn now_ms(&self) -> i64 {
        self.now.get()
    }
    fn memory_bytes(&self) -> u64 {
        0
    }
    fn log(&self, line: &str) {
        self.logs.borrow_mut().push(line.to_string());
    }
}

// ---------------------------------------------------------------------------------------------
// A world: one date's object, the fakes, and a driver

pub const DAY_MS: i64 = 86_400_000;
pub const DATE: &str = "2026-11-20";
pub const OTHER: &str = "2026-11-19";

pub struct World {
    pub faults: Rc<Faults>,
    pub db: Faulty<SqliteDb>,
    pub r2: Faulty<FakeR2>,
    pub store: Faulty<FakeStore>,
    pub host: FakeHost,
    pub cfg: Config,
}

/// A small config: 64 KiB parts (the fake R2 enforces the same minimum), small steps, pieces
/// and batches, so that a few thousand rows take many of each.
pub fn small_config() -> Config {
    Config {
        part_size: 64 * 1024,
        page_rows: 300,
        page_bytes: 256 * 1024,
        step_rows: 1_000,
        step_bytes: 8 * 1024 * 1024,
        piece_bytes: 96 * 1024,
        clean_batch_bytes: 40_000,
        clean_step_rows: 1_200,
        max_attempts: 4,
        // Off by default; the native runs cover the Parquet path too.
        parquet: true,
        ..Config::default()
    }
}

impl World {
    /// A world whose D1 holds `rows` seeded rows of DATE (seed `n`).
    pub fn seeded(cfg: Config, rows: u64, n: u64) -> World {
        let w = World::new(cfg);
        seed(w.sql(), DATE, rows, n, w.host.now.get() / 1000);
        w
    }

    pub fn new(cfg: Config) -> World {
        let faults = Faults::new();
        World {
            db: Faulty::new(SqliteDb::new(), faults.clone()),
            r2: Faulty::new(FakeR2::new(cfg.part_size as usize), faults.clone()),
            store: Faulty::new(FakeStore::default(), faults.clone()),
            host: FakeHost {
                now: Cell::new(1_795_000_000_000),
                logs: RefCell::new(Vec::new()),
            },
            faults,
            cfg,
        }
    }

    /// The raw SQLite, around the fault plan (what the app does to D1).
    pub fn sql(&self) -> &rusqlite::Connection {
        &self.db.inner.conn
    }

    pub fn objects(&self) -> &FakeR2 {
        &self.r2.inner
    }

    pub fn ports(&self) -> Ports<'_, Faulty<SqliteDb>, Faulty<FakeR2>, Faulty<FakeStore>, FakeHost> {
        Ports {
            db: &self.db,
            r2: &self.r2,
            store: &self.store,
            host: &self.host,
        }
    }

    pub fn step(&self) -> Result<AlarmReport, EngineError> {
        block_on(self.ports().run_alarm(DATE, &self.cfg))
    }

    pub fn command(&self, cmd: Command) -> Result<CommandReport, EngineError> {
        block_on(self.ports().run_command(DATE, cmd, &self.cfg))
    }

    /// The saved record, read without going through (or counting as) a port call.
    pub fn record(&self) -> Record {
        match self.store.inner.saved.borrow().as_ref() {
            Some((json, _)) => Record::from_json(json, &self.cfg).unwrap(),
            None => Record::new(DATE),
        }
    }

    pub fn status(&self) -> Status {
        d1_archiver::core::status::status(&self.record())
    }

    /// Asserts that the date rests `cleaned` with none of its rows in D1 (`what` names the case).
    pub fn assert_emptied(&self, what: &str) {
        let st = self.status();
        let found = (st.phase.as_str(), count_date(self.sql(), DATE));
        assert_eq!(found, ("cleaned", 0), "{what}: {st:?}");
    }

    /// Asserts that the date failed with an error that holds `needle`; its status.
    pub fn assert_failed_with(&self, needle: &str) -> Status {
        let st = self.status();
        let error = st.last_error.clone().unwrap_or_default();
        assert_eq!(st.phase, "failed", "{st:?}");
        assert!(error.contains(needle), "{needle:?} not in: {error}");
        st
    }

    pub fn advance_to_wake(&self) -> bool {
        match self.record().wake_at_ms {
            Some(at) => {
                self.host.now.set(self.host.now.get().max(at) + 1);
                true
            }
            None => false,
        }
    }

    /// Plays alarms until none is due, moving the clock to each one; calls `between` before
    /// every step with the step number. Returns the number of steps.
    pub fn drive(&self, mut between: impl FnMut(&World, u64)) -> u64 {
        let mut steps = 0;
        while self.advance_to_wake() {
            between(self, steps);
            self.step().unwrap();
            steps += 1;
            assert!(steps < 100_000, "no progress: {:?}", self.status());
        }
        steps
    }

    /// Triggers the date and plays it to rest.
    pub fn run(&self) -> u64 {
        self.command(Command::Trigger).unwrap();
        self.drive(|_, _| {})
    }

    /// Plays alarms until `phase`, or until no alarm is due.
    pub fn drive_until(&self, phase: &str) {
        while self.status().phase != phase && self.advance_to_wake() {
            self.step().unwrap();
        }
    }

    /// Restores every generation of the date and drives it until it holds them: what the
    /// restore did.
    pub fn restore_all(&self) -> d1_archiver::core::status::RestoreView {
        let cmd = Command::Restore {
            generation: None,
            hold_until_ms: None,
        };
        self.command(cmd).unwrap();
        self.drive_until("restored");
        self.status().restore.unwrap()
    }

    /// The metadata row of the date: (status, r2_path, d1_cleaned, rows_pending).
    pub fn metadata(&self) -> Option<(String, Option<String>, i64, Option<i64>)> {
        self.sql()
            .query_row(
                "SELECT status, r2_path, d1_cleaned, rows_pending FROM archive_metadata WHERE date = ?1",
                [DATE],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
            .ok()
    }

    /// The JSONL archives `archive_objects` lists for the date, in key order.
    pub fn listed_objects(&self) -> Vec<String> {
        self.listed("jsonl.gz")
    }

    /// The Parquet files `archive_objects` lists for the date, in key order.
    pub fn listed_parquet(&self) -> Vec<String> {
        self.listed("parquet")
    }

    fn listed(&self, format: &str) -> Vec<String> {
        let mut st = self
            .sql()
            .prepare("SELECT key FROM archive_objects WHERE date = ?1 AND format = ?2 ORDER BY key")
            .unwrap();
        let keys = st.query_map([DATE, format], |r| r.get(0)).unwrap();
        keys.map(Result::unwrap).collect()
    }

    /// The archive objects in R2 (not the sidecars).
    pub fn archive_keys(&self) -> Vec<String> {
        self.objects()
            .keys()
            .into_iter()
            .filter(|k| k.ends_with(".jsonl.gz"))
            .collect()
    }

    /// The Parquet files in R2.
    pub fn parquet_keys(&self) -> Vec<String> {
        self.objects()
            .keys()
            .into_iter()
            .filter(|k| k.ends_with(".parquet"))
            .collect()
    }

    /// The rows of every Parquet file in R2, as lines.
    pub fn parquet_rows(&self) -> Vec<Value> {
        self.parquet_keys()
            .iter()
            .flat_map(|k| parquet_lines(&self.objects().object(k).unwrap()))
            .collect()
    }
}

/// The rows of a Parquet file as the JSONL lines they came from: typed columns, with the values
/// `_other_types` and `_blobs` kept put back in their columns.
pub fn parquet_lines(bytes: &[u8]) -> Vec<Value> {
    use parquet::file::reader::{FileReader, SerializedFileReader};
    use parquet::record::Field;
    let reader = SerializedFileReader::new(bytes::Bytes::from(bytes.to_vec())).expect("a Parquet file");
    reader
        .get_row_iter(None)
        .unwrap()
        .map(|row| {
            let row = row.unwrap();
            let mut line = serde_json::Map::new();
            let mut other = None;
            for (name, field) in row.get_column_iter() {
                if let Field::MapInternal(blobs) = field {
                    for (column, bytes) in blobs.entries() {
                        let (Field::Str(column), Field::Bytes(bytes)) = (column, bytes) else {
                            panic!("unexpected _blobs entry {column:?} {bytes:?}")
                        };
                        let blob = serde_json::json!({ "$blob": hex::encode_upper(bytes.data()) });
                        other
                            .get_or_insert_with(serde_json::Map::new)
                            .insert(column.clone(), blob);
                    }
                    continue;
                }
                #[expect(
                    clippy::wildcard_enum_match_arm,
                    reason = "the parquet crate's Field has 24 kinds; the files hold four"
                )]
                let v = match field {
                    Field::Null => Value::Null,
                    Field::Str(s) => Value::from(s.as_str()),
                    Field::Long(n) => Value::from(*n),
                    // JSON has no infinity: shown as the text "inf".
                    Field::Double(x) if !x.is_finite() => Value::from(x.to_string()),
                    Field::Double(x) => Value::from(*x),
                    f => panic!("unexpected Parquet field {f:?}"),
                };
                if name == "_other_types" {
                    if let Some(s) = v.as_str() {
                        let kept: serde_json::Map<String, Value> = serde_json::from_str(s).unwrap();
                        other.get_or_insert_with(serde_json::Map::new).extend(kept);
                    }
                } else if name != "_blobs" {
                    line.insert(name.clone(), v);
                }
            }
            for (k, v) in other.unwrap_or_default() {
                line.insert(k, v);
            }
            Value::Object(line)
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Data

/// A tiny deterministic generator (xorshift), so tests need no rand crate.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

const PATHS: &[&str] = &[
    "/",
    "/api/v1/items",
    "/login",
    "/café/menü",
    "/搜索?q=1",
    "/a\"b\\c",
    "/emoji/🚀",
];
const AGENTS: &[&str] = &[
    "Mozilla/5.0 (X11; Linux x86_64)",
    "curl/8.5.0",
    "Go-http-client/2.0",
    "bot\u{1}\u{7f}\ttab\nnewline",
];

pub const INSERT: &str = "INSERT INTO traffic_events (id, path, method, status, response_time, client_ip_hash, user_agent, country, timestamp, event_date, is_error, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)";

/// Inserts `n` rows for `date` (`created_at` an hour before `now_s`), varied like real traffic:
/// unicode, quotes, control characters, NULLs, long tails, fractional response times.
pub fn seed(db: &rusqlite::Connection, date: &str, n: u64, seed: u64, now_s: i64) {
    let day_start = chrono::NaiveDate::parse_from_str(date, "%Y-%m-%d")
        .unwrap()
        .and_hms_opt(0, 0, 0)
        .unwrap()
        .and_utc()
        .timestamp_millis();
    let mut rng = Rng(seed | 1);
    let tx = db.unchecked_transaction().unwrap();
    {
        let mut st = tx.prepare(INSERT).unwrap();
        for i in 0..n {
            let ts = day_start + (i as i64 * (DAY_MS - 1)) / (n.max(1) as i64);
            let id = format!("{ts:013}-{:08x}", rng.next() as u32);
            let path = if rng.below(10) == 0 {
                format!("/p/{}", rng.next())
            } else {
                PATHS[rng.below(PATHS.len() as u64) as usize].to_string()
            };
            let status: i64 = [200, 200, 200, 301, 404, 500][rng.below(6) as usize];
            let ua: Option<String> = match rng.below(8) {
                0 => None,
                1 => Some(format!("agent-{:016x}", rng.next())),
                _ => Some(AGENTS[rng.below(AGENTS.len() as u64) as usize].to_string()),
            };
            let country: Option<&str> = [None, Some("DE"), Some("JP"), Some("US")][rng.below(4) as usize];
            st.execute(rusqlite::params![
                id,
                path,
                ["GET", "POST", "PUT"][rng.below(3) as usize],
                status,
                (rng.next() % 100_000) as f64 / 7.0,
                format!("{:016x}", rng.next()),
                ua,
                country,
                ts,
                date,
                i64::from(status >= 500),
                now_s - 3600,
            ])
            .unwrap();
        }
    }
    tx.commit().unwrap();
}

/// A SQLite value as an archived line holds it: BLOBs as `{"$blob":"HEX"}`.
fn line_value(v: ValueRef<'_>) -> Value {
    match v {
        ValueRef::Null => Value::Null,
        ValueRef::Integer(x) => Value::from(x),
        ValueRef::Real(f) => Value::from(f),
        ValueRef::Text(t) => Value::from(String::from_utf8_lossy(t).into_owned()),
        ValueRef::Blob(b) => serde_json::json!({ "$blob": hex::encode_upper(b) }),
    }
}

/// Every row of `date` as the JSON object an archive line holds for it, sorted by its text
/// (rows can repeat when their id is NULL).
pub fn rows_of(db: &rusqlite::Connection, date: &str) -> Vec<Value> {
    sorted(rows_unsorted(db, date))
}

/// The date's rows as [`rows_of`] renders them, in no particular order.
fn rows_unsorted(db: &rusqlite::Connection, date: &str) -> Vec<Value> {
    let sql = format!(
        "SELECT {} FROM traffic_events WHERE event_date = ?1",
        COLUMNS.join(", ")
    );
    let mut st = db.prepare(&sql).unwrap();
    let mut out = Vec::new();
    let mut q = st.query([date]).unwrap();
    while let Some(r) = q.next().unwrap() {
        let obj: serde_json::Map<String, Value> = COLUMNS
            .iter()
            .enumerate()
            .map(|(i, name)| (name.to_string(), line_value(r.get_ref(i).unwrap())))
            .collect();
        out.push(Value::Object(obj));
    }
    out
}

pub fn sorted(mut rows: Vec<Value>) -> Vec<Value> {
    rows.sort_by_cached_key(|v| v.to_string());
    rows
}

/// The first column of every row `sql` selects with `params`.
pub fn column<T: rusqlite::types::FromSql>(
    db: &rusqlite::Connection,
    sql: &str,
    params: impl rusqlite::Params,
) -> Vec<T> {
    let mut stmt = db.prepare(sql).unwrap();
    let rows: Vec<T> = stmt
        .query_map(params, |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    rows
}

pub fn count_date(db: &rusqlite::Connection, date: &str) -> u64 {
    db.query_row(
        "SELECT count(*) FROM traffic_events WHERE event_date = ?1",
        [date],
        |r| r.get(0),
    )
    .unwrap()
}

/// Decompresses with a reader that stops after the first gzip member.
pub fn gunzip_single_member(bytes: &[u8]) -> String {
    let mut out = String::new();
    flate2::read::GzDecoder::new(bytes).read_to_string(&mut out).unwrap();
    out
}

/// The lines of an archive object, parsed, each checked for the table's key order.
pub fn lines_of(bytes: &[u8]) -> Vec<Value> {
    gunzip_single_member(bytes)
        .lines()
        .map(|line| {
            let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("bad line {line:?}: {e}"));
            let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
            assert_eq!(keys, COLUMNS, "keys in table order");
            v
        })
        .collect()
}

/// Every line of every archive object of the date in R2.
pub fn archived(w: &World) -> Vec<Value> {
    w.archive_keys()
        .iter()
        .flat_map(|k| lines_of(&w.objects().object(k).unwrap()))
        .collect()
}

/// Rows of `originals` that are neither in D1 nor, identical, in an archive object (as many
/// times as they occur): what the archiver lost.
pub fn lost(w: &World, originals: &[Value]) -> Vec<Value> {
    let mut have: HashMap<String, usize> = HashMap::new();
    for v in rows_unsorted(w.sql(), DATE) {
        *have.entry(v.to_string()).or_default() += 1;
    }
    for key in w.archive_keys() {
        for line in archived_texts(&w.objects().object(&key).unwrap()).iter() {
            *have.entry(line.clone()).or_default() += 1;
        }
    }
    originals
        .iter()
        .filter(|o| match have.get_mut(&o.to_string()) {
            Some(n) if *n > 0 => {
                *n -= 1;
                false
            }
            _ => true,
        })
        .cloned()
        .collect()
}

/// The lines of an archive object as [`lines_of`] reads them, each rendered again as JSON text
/// (what [`lost`] compares), remembered by the object's bytes: the crash suites ask for the same
/// few objects after every step that deleted, and reading them again was most of their time.
fn archived_texts(bytes: &[u8]) -> Rc<[String]> {
    thread_local! {
        static READ: RefCell<HashMap<Vec<u8>, Rc<[String]>>> = RefCell::default();
    }
    if let Some(texts) = READ.with_borrow(|r| r.get(bytes).cloned()) {
        return texts;
    }
    let texts: Rc<[String]> = lines_of(bytes).iter().map(Value::to_string).collect();
    READ.with_borrow_mut(|r| {
        // A few objects at a time: a run reads its own, and none after it ends.
        if r.len() >= 8 {
            r.clear();
        }
        r.insert(bytes.to_vec(), texts.clone());
    });
    texts
}

/// Asserts that `text`'s lines are exactly `expected` (a multiset), key order and all.
pub fn assert_lines(lines: Vec<Value>, expected: &[Value]) {
    let got = sorted(lines);
    assert_eq!(got.len(), expected.len(), "line count");
    for (g, e) in got.iter().zip(expected) {
        assert_eq!(g, e);
    }
}
