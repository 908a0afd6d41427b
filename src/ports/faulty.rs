//! The one fault model: [`Faulty`] wraps any port and fails the calls a [`Faults`] plan names,
//! counting every call. Like redb's countdown backend: fail the k-th call, or let the k-th call
//! succeed and fail every later one (the process died right after it: whatever was not saved is
//! lost), then restart from what is durable and compare.
//!
//! Used by every native test and by the Worker's `FAULT_INJECT` switch (which only test hooks
//! let act; see `TEST_HOOKS`). Without a plan every call passes straight through.

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use crate::core::sql::{Meta, ResultSet, Statement};
use crate::core::state::PartRef;

use super::{Database, Durable, ObjectStore, PortError};

/// Which port a call goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    D1,
    R2,
    Storage,
}

/// One rule of a plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    /// Calls `from..from + count` (1-based, counted per service, or over all ports when
    /// `service` is `None`) fail.
    Fail {
        service: Option<Service>,
        from: u64,
        count: u64,
    },
    /// Call `k` (over all ports) succeeds; every later call fails.
    CrashAfter(u64),
}

/// A fault plan and the calls counted so far.
#[derive(Debug, Default)]
pub struct Faults {
    rules: RefCell<Vec<Rule>>,
    calls: Cell<u64>,
    per_service: [Cell<u64>; 3],
    /// Every call's name, in order (tests read it to say which call a fault hit).
    pub log: RefCell<Vec<&'static str>>,
}

impl Faults {
    pub fn new() -> Rc<Faults> {
        Rc::new(Faults::default())
    }

    /// A plan from the `FAULT_INJECT` syntax: `d1:K:C,r2:K:C` fails C calls of that service from
    /// its K-th. Unknown parts are ignored (a test var, never set in production).
    pub fn parse(spec: &str) -> Rc<Faults> {
        let f = Faults::new();
        for part in spec.split(',') {
            let fields: Vec<&str> = part.trim().split(':').collect();
            if let [service, k, c] = fields[..] {
                let service = match service {
                    "d1" => Service::D1,
                    "r2" => Service::R2,
                    _ => continue,
                };
                if let (Ok(from), Ok(count)) = (k.parse(), c.parse()) {
                    f.add(Rule::Fail {
                        service: Some(service),
                        from,
                        count,
                    });
                }
            }
        }
        f
    }

    pub fn add(&self, rule: Rule) {
        self.rules.borrow_mut().push(rule);
    }

    /// Forgets the plan (the calls stay counted): a restart after a crash.
    pub fn clear(&self) {
        self.rules.borrow_mut().clear();
    }

    pub fn calls(&self) -> u64 {
        self.calls.get()
    }

    /// Whether a `CrashAfter` rule has taken effect.
    pub fn crashed(&self) -> bool {
        let n = self.calls.get();
        self.rules
            .borrow()
            .iter()
            .any(|r| matches!(r, Rule::CrashAfter(k) if n > *k))
    }

    /// Counts a call and says whether it fails.
    pub fn check(&self, service: Service, op: &'static str) -> Result<(), PortError> {
        let n = self.calls.get() + 1;
        self.calls.set(n);
        let counter = &self.per_service[service as usize];
        let s = counter.get() + 1;
        counter.set(s);
        self.log.borrow_mut().push(op);
        for rule in self.rules.borrow().iter() {
            let hit = match *rule {
                Rule::Fail {
                    service: Some(only),
                    from,
                    count,
                } => only == service && s >= from && s < from + count,
                Rule::Fail {
                    service: None,
                    from,
                    count,
                } => n >= from && n < from + count,
                Rule::CrashAfter(k) => n > k,
            };
            if hit {
                return Err(PortError::transient(op, format!("injected fault (call {n}, {op})")));
            }
        }
        Ok(())
    }
}

/// Any port with a fault plan in front.
pub struct Faulty<P> {
    pub inner: P,
    pub faults: Rc<Faults>,
}

impl<P> Faulty<P> {
    pub fn new(inner: P, faults: Rc<Faults>) -> Faulty<P> {
        Faulty { inner, faults }
    }
}

/// The name a statement's call gets in the log: what it does to D1.
fn d1_op(sql: &str) -> &'static str {
    let s = sql.trim_start();
    if s.starts_with("DELETE FROM traffic_events") {
        "d1.delete"
    } else if s.starts_with("INSERT INTO traffic_events") {
        "d1.insert"
    } else if s.starts_with("INSERT INTO archive_metadata") {
        "d1.metadata"
    } else {
        "d1.select"
    }
}

impl<D: Database> Database for Faulty<D> {
    async fn run(&self, stmt: &Statement) -> Result<ResultSet, PortError> {
        self.faults.check(Service::D1, d1_op(stmt.sql))?;
        self.inner.run(stmt).await
    }
    async fn batch(&self, stmts: &[Statement]) -> Result<Vec<ResultSet>, PortError> {
        // Named by what the batch changes (a deleting batch opens its ledger row first).
        let changes = stmts.iter().map(|s| d1_op(s.sql)).find(|op| *op != "d1.select");
        let op = changes.map_or("d1.batch", |op| match op {
            "d1.delete" => "d1.batch.delete",
            "d1.insert" => "d1.batch.insert",
            "d1.metadata" => "d1.batch.metadata",
            _ => "d1.batch",
        });
        self.faults.check(Service::D1, op)?;
        self.inner.batch(stmts).await
    }
    async fn run_page(&self, stmt: &Statement) -> Result<(String, Meta), PortError> {
        self.faults.check(Service::D1, "d1.page")?;
        self.inner.run_page(stmt).await
    }
}

impl<O: ObjectStore> ObjectStore for Faulty<O> {
    async fn create_upload(&self, key: &str) -> Result<String, PortError> {
        self.faults.check(Service::R2, "r2.create_upload")?;
        self.inner.create_upload(key).await
    }
    async fn upload_part(&self, key: &str, upload_id: &str, number: u16, bytes: &[u8]) -> Result<String, PortError> {
        self.faults.check(Service::R2, "r2.upload_part")?;
        self.inner.upload_part(key, upload_id, number, bytes).await
    }
    async fn complete_upload(&self, key: &str, upload_id: &str, parts: &[PartRef]) -> Result<(), PortError> {
        self.faults.check(Service::R2, "r2.complete")?;
        self.inner.complete_upload(key, upload_id, parts).await
    }
    async fn abort_upload(&self, key: &str, upload_id: &str) -> Result<(), PortError> {
        self.faults.check(Service::R2, "r2.abort")?;
        self.inner.abort_upload(key, upload_id).await
    }
    async fn put(&self, key: &str, body: &[&[u8]], content_type: &str) -> Result<(), PortError> {
        self.faults.check(Service::R2, "r2.put")?;
        self.inner.put(key, body, content_type).await
    }
    async fn head(&self, key: &str) -> Result<Option<u64>, PortError> {
        self.faults.check(Service::R2, "r2.head")?;
        self.inner.head(key).await
    }
    async fn get_range(&self, key: &str, offset: u64, len: u64) -> Result<Option<Vec<u8>>, PortError> {
        self.faults.check(Service::R2, "r2.get")?;
        self.inner.get_range(key, offset, len).await
    }
    async fn delete(&self, key: &str) -> Result<(), PortError> {
        self.faults.check(Service::R2, "r2.delete")?;
        self.inner.delete(key).await
    }
}

impl<S: Durable> Durable for Faulty<S> {
    async fn load(&self, carry_capacity: Option<usize>) -> Result<Option<(String, Vec<u8>)>, PortError> {
        self.faults.check(Service::Storage, "do.load")?;
        self.inner.load(carry_capacity).await
    }
    async fn save(&self, record_json: &str, carry: Option<&[u8]>, expected_revision: u64) -> Result<(), PortError> {
        self.faults.check(Service::Storage, "do.save")?;
        self.inner.save(record_json, carry, expected_revision).await
    }
    async fn step_begun(&self) -> Result<Option<u64>, PortError> {
        self.faults.check(Service::Storage, "do.step_begun")?;
        self.inner.step_begun().await
    }
    async fn begin_step(&self, revision: u64) -> Result<(), PortError> {
        self.faults.check(Service::Storage, "do.begin_step")?;
        self.inner.begin_step(revision).await
    }
    fn recycle(&self, carry: Vec<u8>) {
        self.inner.recycle(carry)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans_count_per_service_or_overall() {
        let f = Faults::parse("d1:2:2, r2:1:1, bogus");
        assert!(f.check(Service::D1, "a").is_ok());
        assert!(f.check(Service::D1, "b").is_err());
        assert!(f.check(Service::R2, "c").is_err());
        assert!(f.check(Service::D1, "d").is_err());
        assert!(f.check(Service::D1, "e").is_ok());
        let f = Faults::new();
        f.add(Rule::CrashAfter(2));
        assert!(f.check(Service::R2, "a").is_ok() && f.check(Service::D1, "b").is_ok());
        assert!(!f.crashed());
        assert!(f.check(Service::Storage, "c").is_err() && f.crashed());
        f.clear();
        assert!(f.check(Service::Storage, "d").is_ok());
    }
}
