//! Drives one step: performs each call the job asks for, one at a time, and hands back the
//! answer. Never panics on a platform failure: every error becomes part of the outcome for the
//! core to judge.

use std::future::Future;
use std::pin::Pin;
use std::task::Poll as TaskPoll;

use crate::core::error::{FailureKind, PortError};
use crate::core::io::{Answer, Io, IoResult};
use crate::core::machine::{Outcome, Poll, Step, StepReport};
use crate::core::sql::{Meta, Statement};
use crate::ports::{Database, Durable, Host, ObjectStore};

use super::Ports;

type PageFuture<'a> = Pin<Box<dyn Future<Output = Result<(String, Meta), PortError>> + 'a>>;

impl<D: Database, O: ObjectStore, S: Durable, H: Host> Ports<'_, D, O, S, H> {
    /// Runs `step` to its end; returns its outcome and timings.
    pub(super) async fn drive(&self, mut step: Step, started_ms: i64) -> (Outcome, StepReport) {
        let mut report = StepReport {
            started_ms,
            ..StepReport::default()
        };
        let mut prefetch: Option<PageFuture<'_>> = None;
        let mut busy_since = self.host.now_ms();
        let error = loop {
            let next = step.poll();
            let waiting_since = self.host.now_ms();
            report.busy_ms += (waiting_since - busy_since).max(0) as u64;
            let reply = match next {
                Err(e) => break Some(e),
                Ok(Poll::Done) => break None,
                Ok(Poll::Io(io)) => self.perform(io).await,
                Ok(Poll::Prefetch(stmt)) => {
                    prefetch = Some(self.start_page(stmt).await);
                    busy_since = self.host.now_ms();
                    continue;
                }
                Ok(Poll::AwaitPrefetch) => {
                    let page = match prefetch.take() {
                        Some(f) => f.await,
                        None => Err(PortError::transient("d1.page", "no page was asked for")),
                    };
                    report.page_wait_ms += (self.host.now_ms() - waiting_since).max(0) as u64;
                    page.map(|(w, m)| Answer::Page(w, m))
                }
            };
            busy_since = self.host.now_ms();
            if let Err(e) = step.handle(reply) {
                break Some(e);
            }
        };
        report.now_ms = self.host.now_ms();
        report.memory_bytes = self.host.memory_bytes();
        (step.finish(error), report)
    }

    /// Starts a page query and returns it in flight: the request is sent on the first poll, so
    /// D1 works on it while the job compresses the page before.
    async fn start_page<'p>(&'p self, stmt: Statement) -> PageFuture<'p> {
        let mut fut: PageFuture<'p> = Box::pin(async move { self.db.run_page(&stmt).await });
        let early = std::future::poll_fn(|cx| TaskPoll::Ready(fut.as_mut().poll(cx))).await;
        match early {
            TaskPoll::Ready(result) => Box::pin(std::future::ready(result)),
            TaskPoll::Pending => fut,
        }
    }

    /// One call.
    pub(super) async fn perform(&self, io: Io<'_>) -> IoResult {
        let (db, r2) = (self.db, self.r2);
        Ok(match io {
            Io::Query(stmt) => Answer::Rows(db.run(&stmt).await?),
            Io::Batch(stmts) => Answer::Batch(db.batch(&stmts).await?),
            Io::Page(stmt) => {
                let (wire, meta) = db.run_page(&stmt).await?;
                Answer::Page(wire, meta)
            }
            Io::CreateUpload { key } => Answer::UploadId(r2.create_upload(key).await?),
            Io::UploadPart {
                key,
                upload_id,
                number,
                bytes,
            } => Answer::Etag(r2.upload_part(key, upload_id, number, bytes).await?),
            Io::CompleteUpload { key, upload_id, parts } => {
                r2.complete_upload(key, upload_id, parts).await?;
                Answer::Done
            }
            Io::AbortUpload { key, upload_id } => match r2.abort_upload(key, upload_id).await {
                Err(e) if e.kind == FailureKind::NoSuchUpload => Answer::Done,
                other => other.map(|_| Answer::Done)?,
            },
            Io::Put {
                key,
                body,
                content_type,
            } => r2.put(key, &body, content_type).await.map(|_| Answer::Done)?,
            Io::Head { key } => Answer::Size(r2.head(key).await?),
            Io::Get { key, offset, len } => Answer::Bytes(r2.get_range(key, offset, len).await?),
            Io::Delete { key } => r2.delete(key).await.map(|_| Answer::Done)?,
        })
    }
}
