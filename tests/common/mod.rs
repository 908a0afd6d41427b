//! Deterministic fakes of the platform for native tests, and a driver that plays the alarms.
//!
//! - [`SqliteDb`]: D1 as a real SQLite, with the project's migrations and D1's number handling.
//! - [`FakeR2`]: R2 with its multipart rules enforced (equal non-final parts of at least the
//!   minimum, replace on re-upload, unknown upload ids).
//! - [`FakeStore`]: Durable Object storage with the conditional save.
//! - [`Faults`]: counts every port call; fails call k, or lets call k succeed and fails every
//!   later one (a crash: the step's unsaved work is lost).

#![allow(dead_code)]

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::io::Read;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

use d1_archiver::core::config::Config;
use d1_archiver::core::machine::Command;
use d1_archiver::core::sql::{Meta, Param, ResultSet, Statement};
use d1_archiver::engine::{CommandReport, EngineError, Ports, StepReport};
use d1_archiver::ports::{Database, Durable, FailureKind, Host, ObjectInfo, ObjectStore, PortError};
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
// Fault injection

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultMode {
    None,
    /// Call number k fails; the others succeed.
    FailAt(u64),
    /// Call number k succeeds; every later call fails, as if the process died right after it.
    CrashAfter(u64),
}

#[derive(Debug)]
pub struct Faults {
    pub calls: Cell<u64>,
    pub mode: Cell<FaultMode>,
    pub log: RefCell<Vec<&'static str>>,
}

impl Faults {
    pub fn new() -> Rc<Faults> {
        Rc::new(Faults {
            calls: Cell::new(0),
            mode: Cell::new(FaultMode::None),
            log: RefCell::new(Vec::new()),
        })
    }

    pub fn tick(&self, op: &'static str) -> Result<(), PortError> {
        let n = self.calls.get() + 1;
        self.calls.set(n);
        self.log.borrow_mut().push(op);
        match self.mode.get() {
            FaultMode::FailAt(k) if n == k => Err(PortError::transient(op, format!("injected failure at call {k}"))),
            FaultMode::CrashAfter(k) if n > k => Err(PortError::transient(op, "process crashed (injected)")),
            _ => Ok(()),
        }
    }

    pub fn crashed(&self) -> bool {
        matches!(self.mode.get(), FaultMode::CrashAfter(k) if self.calls.get() > k)
    }

    pub fn reset(&self) {
        self.mode.set(FaultMode::None);
    }
}

// ---------------------------------------------------------------------------------------------
// D1 as SQLite

pub struct SqliteDb {
    pub conn: rusqlite::Connection,
    pub faults: Rc<Faults>,
}

/// The project's own migrations, in order.
pub fn migrations() -> Vec<String> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/migrations");
    let mut files: Vec<_> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    files.iter().map(|p| std::fs::read_to_string(p).unwrap()).collect()
}

impl SqliteDb {
    pub fn new(faults: Rc<Faults>) -> SqliteDb {
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        for m in migrations() {
            conn.execute_batch(&m).unwrap();
        }
        SqliteDb { conn, faults }
    }
}

fn op_name(sql: &str) -> &'static str {
    let s = sql.trim_start();
    if s.starts_with("DELETE") {
        "d1.delete"
    } else if s.starts_with("INSERT INTO archive_metadata") {
        "d1.metadata"
    } else {
        "d1.select"
    }
}

/// D1 hands integers to JavaScript as doubles: exact up to 2^53 only.
fn d1_value(v: ValueRef<'_>) -> Value {
    match v {
        ValueRef::Null => Value::Null,
        ValueRef::Integer(i) if i.unsigned_abs() <= 1 << 53 => Value::from(i),
        ValueRef::Integer(i) => Value::from(i as f64),
        ValueRef::Real(f) => Value::from(f),
        ValueRef::Text(t) => Value::from(String::from_utf8_lossy(t).into_owned()),
        ValueRef::Blob(b) => Value::from(b.to_vec()),
    }
}

impl Database for SqliteDb {
    async fn run(&self, stmt: &Statement) -> Result<ResultSet, PortError> {
        let op = op_name(stmt.sql);
        self.faults.tick(op)?;
        let params: Vec<rusqlite::types::Value> = stmt
            .params
            .iter()
            .map(|p| match p {
                Param::Null => rusqlite::types::Value::Null,
                Param::Int(i) => rusqlite::types::Value::Integer(*i),
                Param::Text(t) => rusqlite::types::Value::Text(t.clone()),
            })
            .collect();
        let mut st = self
            .conn
            .prepare(stmt.sql)
            .map_err(|e| PortError::transient(op, e.to_string()))?;
        let ncol = st.column_count();
        let mut rows = Vec::new();
        {
            let mut q = st
                .query(rusqlite::params_from_iter(params.iter()))
                .map_err(|e| PortError::transient(op, e.to_string()))?;
            while let Some(r) = q.next().map_err(|e| PortError::transient(op, e.to_string()))? {
                rows.push((0..ncol).map(|i| d1_value(r.get_ref(i).unwrap())).collect::<Vec<_>>());
            }
        }
        let changes = if ncol == 0 { self.conn.changes() } else { 0 };
        let meta = Meta {
            rows_read: rows.len() as u64 + changes,
            rows_written: changes,
            changes,
        };
        Ok(ResultSet { rows, meta })
    }

    /// What the D1 adapter's `Array.prototype.join` makes of the rows.
    async fn run_page(&self, stmt: &Statement) -> Result<(String, Meta), PortError> {
        let rs = self.run(stmt).await?;
        let mut wire = String::new();
        for (i, v) in rs.rows.iter().flatten().enumerate() {
            if i > 0 {
                wire.push(d1_archiver::core::sql::WIRE_SEP);
            }
            match v {
                Value::Null => {}
                Value::String(s) => wire.push_str(s),
                other => wire.push_str(&other.to_string()),
            }
        }
        Ok((wire, rs.meta))
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
    pub faults: Rc<Faults>,
}

fn no_such_upload(op: &'static str) -> PortError {
    PortError {
        kind: FailureKind::NoSuchUpload,
        op,
        message: "The specified multipart upload does not exist. (10024)".into(),
    }
}

impl FakeR2 {
    pub fn new(faults: Rc<Faults>, min_part: usize) -> FakeR2 {
        FakeR2 {
            objects: Default::default(),
            uploads: Default::default(),
            next_id: Cell::new(0),
            min_part,
            faults,
        }
    }

    pub fn object(&self, key: &str) -> Option<Vec<u8>> {
        self.objects.borrow().get(key).cloned()
    }

    pub fn open_uploads(&self) -> usize {
        self.uploads.borrow().len()
    }
}

impl ObjectStore for FakeR2 {
    async fn create_upload(&self, key: &str) -> Result<String, PortError> {
        self.faults.tick("r2.create_upload")?;
        let id = format!("upload-{}", self.next_id.get());
        self.next_id.set(self.next_id.get() + 1);
        self.uploads.borrow_mut().insert(
            id.clone(),
            Upload {
                key: key.into(),
                parts: BTreeMap::new(),
            },
        );
        Ok(id)
    }

    async fn upload_part(&self, key: &str, upload_id: &str, number: u16, bytes: &[u8]) -> Result<String, PortError> {
        self.faults.tick("r2.upload_part")?;
        let mut uploads = self.uploads.borrow_mut();
        let up = uploads
            .get_mut(upload_id)
            .filter(|u| u.key == key)
            .ok_or_else(|| no_such_upload("r2.upload_part"))?;
        let etag = format!("etag-{upload_id}-{number}-{}", self.next_id.get());
        self.next_id.set(self.next_id.get() + 1);
        up.parts.insert(number, (etag.clone(), bytes.to_vec()));
        Ok(etag)
    }

    async fn complete_upload(&self, key: &str, upload_id: &str, parts: &[(u16, String)]) -> Result<(), PortError> {
        self.faults.tick("r2.complete")?;
        let mut uploads = self.uploads.borrow_mut();
        let up = uploads
            .get(upload_id)
            .filter(|u| u.key == key)
            .ok_or_else(|| no_such_upload("r2.complete"))?;
        let mut body = Vec::new();
        let mut sizes = Vec::new();
        for (i, (n, etag)) in parts.iter().enumerate() {
            if i > 0 && *n <= parts[i - 1].0 {
                return Err(PortError::transient("r2.complete", "parts must be in ascending order"));
            }
            let (have, bytes) = up
                .parts
                .get(n)
                .ok_or_else(|| PortError::transient("r2.complete", format!("part {n} not found (10025)")))?;
            if have != etag {
                return Err(PortError::transient(
                    "r2.complete",
                    format!("part {n}: etag {etag} was replaced (10025)"),
                ));
            }
            sizes.push(bytes.len());
            body.extend_from_slice(bytes);
        }
        if let Some((_, non_final)) = sizes.split_last() {
            if non_final.iter().any(|s| *s != non_final[0] || *s < self.min_part) {
                return Err(PortError::transient(
                    "r2.complete",
                    format!(
                        "InvalidPart: All non-trailing parts must have the same length, at least {} (10048): {sizes:?}",
                        self.min_part
                    ),
                ));
            }
        }
        uploads.remove(upload_id);
        self.objects.borrow_mut().insert(key.into(), body);
        Ok(())
    }

    async fn abort_upload(&self, _key: &str, upload_id: &str) -> Result<(), PortError> {
        self.faults.tick("r2.abort")?;
        self.uploads.borrow_mut().remove(upload_id);
        Ok(())
    }

    async fn put(&self, key: &str, bytes: Vec<u8>, _content_type: &str) -> Result<(), PortError> {
        self.faults.tick("r2.put")?;
        self.objects.borrow_mut().insert(key.into(), bytes);
        Ok(())
    }

    async fn head(&self, key: &str) -> Result<Option<ObjectInfo>, PortError> {
        self.faults.tick("r2.head")?;
        Ok(self
            .objects
            .borrow()
            .get(key)
            .map(|b| ObjectInfo { size: b.len() as u64 }))
    }

    async fn get_range(&self, key: &str, offset: u64, len: u64) -> Result<Option<Vec<u8>>, PortError> {
        self.faults.tick("r2.get")?;
        Ok(self.objects.borrow().get(key).map(|b| {
            let end = ((offset + len) as usize).min(b.len());
            b[(offset as usize).min(end)..end].to_vec()
        }))
    }

    async fn delete(&self, key: &str) -> Result<(), PortError> {
        self.faults.tick("r2.delete")?;
        self.objects.borrow_mut().remove(key);
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Durable Object storage and host

pub struct FakeStore {
    pub saved: RefCell<Option<(String, Vec<u8>)>>,
    pub faults: Rc<Faults>,
}

impl FakeStore {
    pub fn new(faults: Rc<Faults>) -> FakeStore {
        FakeStore {
            saved: RefCell::new(None),
            faults,
        }
    }

    pub fn revision(&self) -> u64 {
        self.saved.borrow().as_ref().map_or(0, |(json, _)| {
            serde_json::from_str::<Value>(json).unwrap()["revision"]
                .as_u64()
                .unwrap()
        })
    }
}

impl Durable for FakeStore {
    async fn load(&self, carry_capacity: Option<usize>) -> Result<Option<(String, Vec<u8>)>, PortError> {
        self.faults.tick("do.load")?;
        Ok(self.saved.borrow().as_ref().map(|(json, carry)| {
            let carry = match carry_capacity {
                Some(_) if carry.is_empty() => Vec::new(),
                Some(cap) => {
                    let mut v = Vec::with_capacity(cap.max(carry.len()));
                    v.extend_from_slice(carry);
                    v
                }
                None => Vec::new(),
            };
            (json.clone(), carry)
        }))
    }

    async fn save(&self, record_json: &str, carry: Option<&[u8]>, expected_revision: u64) -> Result<(), PortError> {
        self.faults.tick("do.save")?;
        if self.revision() != expected_revision {
            return Err(PortError {
                kind: FailureKind::Conflict,
                op: "do.save",
                message: "record changed".into(),
            });
        }
        let mut saved = self.saved.borrow_mut();
        let old_carry = saved.as_ref().map(|(_, c)| c.clone()).unwrap_or_default();
        let carry = carry.map(<[u8]>::to_vec).unwrap_or(old_carry);
        *saved = Some((record_json.to_string(), carry));
        Ok(())
    }
}

pub struct FakeHost {
    pub now: Cell<i64>,
}

impl Host for FakeHost {
    fn now_ms(&self) -> i64 {
        self.now.get()
    }
    fn memory_bytes(&self) -> u64 {
        0
    }
}

// ---------------------------------------------------------------------------------------------
// A world: one date's object, the fakes, and a driver

pub const DAY_MS: i64 = 86_400_000;

pub struct World {
    pub faults: Rc<Faults>,
    pub db: SqliteDb,
    pub r2: FakeR2,
    pub store: FakeStore,
    pub host: FakeHost,
    pub cfg: Config,
}

/// A small config: 64 KiB parts (the fake R2 enforces the same minimum), small steps.
pub fn small_config() -> Config {
    Config {
        part_size: 64 * 1024,
        page_rows: 300,
        page_bytes: 256 * 1024,
        step_rows: 1_000,
        step_bytes: 8 * 1024 * 1024,
        clean_batch_rows: 400,
        clean_step_rows: 1_200,
        max_attempts: 4,
        ..Config::default()
    }
}

impl World {
    pub fn new(cfg: Config) -> World {
        let faults = Faults::new();
        World {
            db: SqliteDb::new(faults.clone()),
            r2: FakeR2::new(faults.clone(), cfg.part_size as usize),
            store: FakeStore::new(faults.clone()),
            host: FakeHost {
                now: Cell::new(1_795_000_000_000),
            },
            faults,
            cfg,
        }
    }

    pub fn ports(&self) -> Ports<'_, SqliteDb, FakeR2, FakeStore, FakeHost> {
        Ports {
            db: &self.db,
            r2: &self.r2,
            store: &self.store,
            host: &self.host,
        }
    }

    pub fn step(&self, date: &str) -> Result<StepReport, EngineError> {
        block_on(self.ports().run_step(date, &self.cfg))
    }

    pub fn command(&self, date: &str, cmd: Command) -> Result<CommandReport, EngineError> {
        block_on(self.ports().run_command(date, cmd, &self.cfg))
    }

    /// The saved record, read without going through (or counting as) a port call.
    pub fn record(&self, date: &str) -> d1_archiver::core::state::Record {
        match self.store.saved.borrow().as_ref() {
            Some((json, _)) => serde_json::from_str(json).unwrap(),
            None => d1_archiver::core::state::Record::new(date),
        }
    }

    pub fn status(&self, date: &str) -> d1_archiver::core::status::Status {
        d1_archiver::core::status::status(&self.record(date))
    }

    /// Plays alarms until none is due, moving the clock to each one; calls `between` before
    /// every step with the step number. Returns the number of steps.
    pub fn drive(&self, date: &str, mut between: impl FnMut(&World, u64)) -> u64 {
        let mut steps = 0;
        loop {
            let wake = self.record(date).wake_at_ms;
            let Some(at) = wake else { return steps };
            self.host.now.set(self.host.now.get().max(at) + 1);
            between(self, steps);
            self.step(date).unwrap();
            steps += 1;
            assert!(steps < 100_000, "no progress");
        }
    }

    pub fn run(&self, date: &str) -> u64 {
        self.command(date, Command::Trigger).unwrap();
        self.drive(date, |_, _| {})
    }
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

/// Inserts `n` rows for `date` (`created_at` an hour before `now_s`), varied like real traffic:
/// unicode, quotes, control characters, NULLs, long tails, fractional response times.
pub fn seed(db: &SqliteDb, date: &str, n: u64, seed: u64, now_s: i64) {
    let day_start = chrono::NaiveDate::parse_from_str(date, "%Y-%m-%d")
        .unwrap()
        .and_hms_opt(0, 0, 0)
        .unwrap()
        .and_utc()
        .timestamp_millis();
    let mut rng = Rng(seed | 1);
    let tx = db.conn.unchecked_transaction().unwrap();
    {
        let mut st = tx
            .prepare("INSERT INTO traffic_events (id, path, method, status, response_time, client_ip_hash, user_agent, country, timestamp, event_date, is_error, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)")
            .unwrap();
        for i in 0..n {
            let ts = day_start + (i as i64 * (DAY_MS - 1)) / (n.max(1) as i64);
            let id = format!("{ts:013}-{:08x}", rng.next() as u32);
            let path = if rng.below(10) == 0 {
                format!("/p/{}", rng.next())
            } else {
                PATHS[rng.below(PATHS.len() as u64) as usize].to_string()
            };
            let status: i64 = [200, 200, 200, 301, 404, 500][rng.below(6) as usize];
            let rt = (rng.next() % 100_000) as f64 / 7.0;
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
                rt,
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

/// Every row of `date` as the JSON object the archive must hold for it, keyed by id.
pub fn expected_rows(db: &SqliteDb, date: &str) -> BTreeMap<String, Value> {
    let sql = format!(
        "SELECT {} FROM traffic_events WHERE event_date = ?1",
        COLUMNS.join(", ")
    );
    let mut st = db.conn.prepare(&sql).unwrap();
    let names = COLUMNS;
    let mut out = BTreeMap::new();
    let mut q = st.query([date]).unwrap();
    while let Some(r) = q.next().unwrap() {
        let mut obj = serde_json::Map::new();
        for (i, name) in names.iter().enumerate() {
            let v = match r.get_ref(i).unwrap() {
                ValueRef::Null => Value::Null,
                ValueRef::Integer(x) => Value::from(x),
                ValueRef::Real(f) => Value::from(f),
                ValueRef::Text(t) => Value::from(std::str::from_utf8(t).unwrap()),
                ValueRef::Blob(_) => unreachable!(),
            };
            obj.insert(name.to_string(), v);
        }
        out.insert(obj["id"].as_str().unwrap().to_string(), Value::Object(obj));
    }
    out
}

pub fn count_date(db: &SqliteDb, date: &str) -> u64 {
    db.conn
        .query_row(
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

/// Parses archive lines and checks that they are exactly `expected`, each once, key order and
/// all. Returns the number of rows.
pub fn assert_archive_matches(text: &str, expected: &BTreeMap<String, Value>) -> usize {
    let mut seen = BTreeMap::new();
    for line in text.lines() {
        let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("bad line {line:?}: {e}"));
        let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(keys, COLUMNS);
        let id = v["id"].as_str().unwrap().to_string();
        assert!(seen.insert(id.clone(), v).is_none(), "row {id} archived twice");
    }
    assert_eq!(seen.len(), expected.len(), "row count");
    for (id, want) in expected {
        let got = seen
            .get(id)
            .unwrap_or_else(|| panic!("row {id} missing from the archive"));
        assert_eq!(got, want, "row {id}");
    }
    seen.len()
}
