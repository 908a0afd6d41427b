//! Test-only fault switch: makes chosen D1 or R2 calls of a Durable Object fail.
//!
//! Enabled only by the var `FAULT_INJECT` (local tests set it; wrangler.toml never does), so
//! it is inert in production: without the var the wrappers pass every call straight through.
//! Format: `d1:K:C,r2:K:C` — fail C consecutive calls of that service from its K-th call
//! (1-based), counted per isolate since it started.

use std::cell::Cell;

use worker::Env;

use crate::core::sql::{Meta, ResultSet, Statement};
use crate::ports::{Database, ObjectInfo, ObjectStore, PortError};

thread_local! {
    static D1_CALLS: Cell<u64> = const { Cell::new(0) };
    static R2_CALLS: Cell<u64> = const { Cell::new(0) };
}

/// Which calls fail: `(first, count)` per service.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FaultPlan {
    pub d1: Option<(u64, u64)>,
    pub r2: Option<(u64, u64)>,
}

impl FaultPlan {
    pub fn from_env(env: &Env) -> FaultPlan {
        env.var("FAULT_INJECT")
            .map(|v| FaultPlan::parse(&v.to_string()))
            .unwrap_or_default()
    }

    pub fn parse(spec: &str) -> FaultPlan {
        let mut plan = FaultPlan::default();
        for part in spec.split(',') {
            let f: Vec<&str> = part.trim().split(':').collect();
            if let [service, k, c] = f[..] {
                let window = k.parse().ok().zip(c.parse().ok());
                match service {
                    "d1" => plan.d1 = window,
                    "r2" => plan.r2 = window,
                    _ => {}
                }
            }
        }
        plan
    }
}

fn check(
    counter: &'static std::thread::LocalKey<Cell<u64>>,
    window: Option<(u64, u64)>,
    op: &'static str,
) -> Result<(), PortError> {
    let Some((first, count)) = window else { return Ok(()) };
    let n = counter.with(|c| {
        c.set(c.get() + 1);
        c.get()
    });
    if n >= first && n < first + count {
        return Err(PortError::transient(
            op,
            format!("injected fault (FAULT_INJECT, call {n})"),
        ));
    }
    Ok(())
}

/// D1 with the switch in front.
pub struct FaultyDb<D> {
    pub inner: D,
    pub plan: FaultPlan,
}

impl<D: Database> Database for FaultyDb<D> {
    async fn run(&self, stmt: &Statement) -> Result<ResultSet, PortError> {
        check(&D1_CALLS, self.plan.d1, "d1")?;
        self.inner.run(stmt).await
    }
    async fn run_page(&self, stmt: &Statement) -> Result<(String, Meta), PortError> {
        check(&D1_CALLS, self.plan.d1, "d1.page")?;
        self.inner.run_page(stmt).await
    }
}

/// R2 with the switch in front.
pub struct FaultyR2<O> {
    pub inner: O,
    pub plan: FaultPlan,
}

impl<O: ObjectStore> FaultyR2<O> {
    fn check(&self, op: &'static str) -> Result<(), PortError> {
        check(&R2_CALLS, self.plan.r2, op)
    }
}

impl<O: ObjectStore> ObjectStore for FaultyR2<O> {
    async fn create_upload(&self, key: &str) -> Result<String, PortError> {
        self.check("r2.create_upload")?;
        self.inner.create_upload(key).await
    }
    async fn upload_part(&self, key: &str, upload_id: &str, number: u16, bytes: &[u8]) -> Result<String, PortError> {
        self.check("r2.upload_part")?;
        self.inner.upload_part(key, upload_id, number, bytes).await
    }
    async fn complete_upload(&self, key: &str, upload_id: &str, parts: &[(u16, String)]) -> Result<(), PortError> {
        self.check("r2.complete")?;
        self.inner.complete_upload(key, upload_id, parts).await
    }
    async fn abort_upload(&self, key: &str, upload_id: &str) -> Result<(), PortError> {
        self.check("r2.abort")?;
        self.inner.abort_upload(key, upload_id).await
    }
    async fn put(&self, key: &str, bytes: Vec<u8>, content_type: &str) -> Result<(), PortError> {
        self.check("r2.put")?;
        self.inner.put(key, bytes, content_type).await
    }
    async fn head(&self, key: &str) -> Result<Option<ObjectInfo>, PortError> {
        self.check("r2.head")?;
        self.inner.head(key).await
    }
    async fn get_range(&self, key: &str, offset: u64, len: u64) -> Result<Option<Vec<u8>>, PortError> {
        self.check("r2.get")?;
        self.inner.get_range(key, offset, len).await
    }
    async fn delete(&self, key: &str) -> Result<(), PortError> {
        self.check("r2.delete")?;
        self.inner.delete(key).await
    }
}

/// Test hooks (routes under `/admin/test/`) are served only when `FAULT_INJECT` is set.
pub fn hooks_enabled(env: &Env) -> bool {
    env.var("FAULT_INJECT").is_ok()
}

/// `/admin/test/list?prefix=P`: the keys in the bucket under a prefix (at most 1000).
pub async fn list_hook(env: &Env, prefix: &str) -> Result<serde_json::Value, crate::api::ApiError> {
    use crate::api::ApiError;
    let bucket = env
        .bucket("ARCHIVE")
        .map_err(|e| ApiError::new(500, "binding", e.to_string()))?;
    let objects = bucket
        .list()
        .prefix(prefix)
        .limit(1000)
        .execute()
        .await
        .map_err(|e| ApiError::new(503, "r2", e.to_string()))?;
    let keys: Vec<String> = objects.objects().iter().map(|o| o.key()).collect();
    Ok(serde_json::json!({ "keys": keys }))
}

/// `/admin/test/sql` (POST, the statement as body): runs one statement on D1, as the app would.
pub async fn sql_hook(env: &Env, sql: &str) -> Result<serde_json::Value, crate::api::ApiError> {
    use crate::api::ApiError;
    let db = env.d1("DB").map_err(|e| ApiError::new(500, "binding", e.to_string()))?;
    let r = db
        .prepare(sql)
        .run()
        .await
        .map_err(|e| ApiError::new(400, "sql", e.to_string()))?;
    let changes = r.meta().ok().flatten().and_then(|m| m.changes).unwrap_or(0);
    Ok(serde_json::json!({ "changes": changes }))
}

/// `/admin/test/upload?key=K&upload_id=U&op=abort|probe`: aborts an upload from outside the
/// date's object, or probes whether it still exists (by uploading a throwaway part 10000).
pub async fn upload_hook(
    env: &Env,
    key: &str,
    upload_id: &str,
    op: &str,
) -> Result<serde_json::Value, crate::api::ApiError> {
    use crate::api::ApiError;
    let r2 = super::adapters::R2(
        env.bucket("ARCHIVE")
            .map_err(|e| ApiError::new(500, "binding", e.to_string()))?,
    );
    match op {
        "abort" => {
            r2.abort_upload(key, upload_id)
                .await
                .map_err(|e| ApiError::new(503, "r2", e.to_string()))?;
            Ok(serde_json::json!({ "aborted": true }))
        }
        "probe" => match r2.upload_part(key, upload_id, 10_000, b"probe").await {
            Ok(_) => Ok(serde_json::json!({ "alive": true })),
            Err(e) if e.kind == crate::ports::FailureKind::NoSuchUpload => Ok(serde_json::json!({ "alive": false })),
            Err(e) => Err(ApiError::new(503, "r2", e.to_string())),
        },
        _ => Err(ApiError::new(400, "bad_parameter", "op must be abort or probe")),
    }
}
