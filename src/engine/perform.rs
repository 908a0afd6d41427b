//! Performs one [`Action`] through the ports and reports an [`Outcome`]. Never panics on a
//! platform failure: every error becomes `Outcome::Failed` for the core to judge.

use crate::core::gzip::PieceWriter;
use crate::core::jsonl;
use crate::core::machine::{Action, CleanPlan, ExportPlan, ExportProgress, FinalizePlan, IoStats, Outcome, StepError};
use crate::core::sql::{self, Meta, ResultSet, Statement};
use crate::core::state::{Checkpoint, PartRef, Piece};
use crate::ports::{Database, Durable, FailureKind, Host, ObjectStore};

use super::Ports;

/// Uncompressed bytes fed to the compressor between checks for a full part.
const SLICE: usize = 64 * 1024;

/// Performs `action`; returns its outcome and, for a successful export step, the new carry.
pub(super) async fn perform<D: Database, O: ObjectStore, S: Durable, H: Host>(
    ports: &Ports<'_, D, O, S, H>,
    action: Action,
    carry: Vec<u8>,
) -> (Outcome, Option<Vec<u8>>) {
    let mut io = IoStats::default();
    let result = match action {
        // The engine never performs Wait; should it, nothing happens.
        Action::Wait => return (Outcome::Nothing, None),
        Action::Capture { date } => capture(ports, &date, &mut io)
            .await
            .map(|(cutoff, any)| (Outcome::Captured { cutoff, any, io }, None)),
        Action::Export(plan) => export(ports, plan, carry, &mut io)
            .await
            .map(|(progress, carry)| (Outcome::Exported(progress), Some(carry))),
        Action::Finalize(plan) => finalize(ports, &plan, &mut io)
            .await
            .map(|(first_id, last_id)| (Outcome::Finalized { first_id, last_id, io }, None)),
        Action::Clean(plan) => clean(ports, &plan, &mut io)
            .await
            .map(|(ranges, rows)| (Outcome::Deleted { ranges, rows, io }, None)),
        Action::FinalCheck { date, cutoff } => query(ports.db, &sql::count_set(&date, cutoff), &mut io)
            .await
            .and_then(|rs| Ok(sql::parse_count(&rs)?))
            .map(|remaining| (Outcome::Checked { remaining, io }, None)),
    };
    result.unwrap_or_else(|e| (Outcome::Failed(e), None))
}

async fn query<D: Database>(db: &D, stmt: &Statement, io: &mut IoStats) -> Result<ResultSet, StepError> {
    let rs = db.run(stmt).await?;
    let Meta {
        rows_read,
        rows_written,
        ..
    } = rs.meta;
    io.rows_read += rows_read;
    io.rows_written += rows_written;
    io.queries += 1;
    Ok(rs)
}

async fn capture<D: Database, O: ObjectStore, S: Durable, H: Host>(
    ports: &Ports<'_, D, O, S, H>,
    date: &str,
    io: &mut IoStats,
) -> Result<(i64, bool), StepError> {
    let cutoff = sql::parse_clock(&query(ports.db, &sql::clock(), io).await?)?;
    let any = sql::parse_any(&query(ports.db, &sql::any_in_set(date, cutoff), io).await?)?;
    Ok((cutoff, any))
}

/// One export step: pages of rows → JSONL → one gzip piece → every full part to R2.
async fn export<D: Database, O: ObjectStore, S: Durable, H: Host>(
    ports: &Ports<'_, D, O, S, H>,
    plan: ExportPlan,
    carry: Vec<u8>,
    io: &mut IoStats,
) -> Result<(ExportProgress, Vec<u8>), StepError> {
    if carry.len() as u64 != plan.carry_len {
        return Err(StepError::CarryLost {
            expected: plan.carry_len,
            found: carry.len() as u64,
        });
    }
    let part_size = plan.part_size as usize;
    // Output never exceeds a part plus one slice's worth before it is uploaded (see below).
    let capacity = part_size + 2 * SLICE;
    let mut w = PieceWriter::resume(plan.level, plan.stream, carry, capacity);
    let mut parts = Parts {
        key: &plan.key,
        upload_id: plan.upload_id.clone(),
        created: None,
        next: plan.next_part,
        done: Vec::new(),
    };

    let mut cursor = plan.cursor.clone();
    let mut first_id: Option<String> = None;
    let (mut rows, mut fp, mut raw) = (0u64, 0i64, 0u64);
    let mut since = plan.rows_since_checkpoint;
    let mut checkpoints = Vec::new();
    let mut lines = Vec::with_capacity(plan.page_bytes as usize + 4096);
    let mut scan_done = false;

    let fetch = |after: String, limit: u32| {
        let stmt = sql::export_page(&plan.date, &after, plan.cutoff, limit);
        async move { ports.db.run_page(&stmt).await }
    };
    let budget = |rows: u64| {
        plan.page_rows
            .min((plan.step_rows - rows).min(u64::from(u32::MAX)) as u32)
            .max(1)
    };
    let mut limit = budget(0);
    let asked = ports.host.now_ms();
    let mut fetched = Some(fetch(cursor.clone(), limit).await);
    io.page_wait_ms += (ports.host.now_ms() - asked).max(0) as u64;

    // Page k+1 is asked for before page k is encoded, compressed and uploaded, so D1's work
    // and ours overlap; the next cursor comes from page k's last row, read first.
    while let Some(result) = fetched.take() {
        let (wire, meta) = result?;
        io.rows_read += meta.rows_read;
        io.queries += 1;
        let n = sql::page_len(&wire);
        let last_id = match sql::last_head(&wire) {
            Some(head) => Some(sql::head_id(head)?),
            None => None,
        };
        let is_last = n < u64::from(limit);
        // Keep pages near `page_bytes` whatever the rows' size (100 KB user agents).
        let per_row = (wire.len() as u64 / n.max(1)).max(1);
        let next_limit = budget(rows + n).min((plan.page_bytes / per_row).clamp(1, u64::from(plan.page_rows)) as u32);
        let more = !is_last && rows + n < plan.step_rows && raw + wire.len() as u64 <= plan.step_bytes;

        let started = ports.host.now_ms();
        let encode = async {
            lines.clear();
            let mut page_fp = 0;
            let mut first_head = None;
            for row in sql::page_rows(&wire) {
                let row = row?;
                jsonl::encode_row(row.head, row.real, row.tail, &mut lines)?;
                page_fp += row.fp;
                first_head.get_or_insert(row.head);
            }
            // Compress in slices and hand out full parts after each, so the output buffer
            // stays at one part plus one slice: no reallocation, whatever the page size.
            for slice in lines.chunks(SLICE) {
                w.write(slice);
                parts.upload_full(ports.r2, &mut w, part_size).await?;
            }
            let first = match first_head {
                Some(head) if first_id.is_none() => Some(sql::head_id(head)?),
                _ => None,
            };
            Ok::<_, StepError>((page_fp, first, ports.host.now_ms() - started))
        };
        let (page_fp, first, busy_ms) = if more {
            let next_cursor = last_id.clone().unwrap_or_else(|| cursor.clone());
            let (next, encoded) = futures_util::future::join(fetch(next_cursor, next_limit), encode).await;
            fetched = Some(next);
            let encoded = encoded?;
            io.page_wait_ms += ((ports.host.now_ms() - started) - encoded.2).max(0) as u64;
            encoded
        } else {
            encode.await?
        };
        io.encode_ms += busy_ms.max(0) as u64;
        fp += page_fp;
        if first_id.is_none() {
            first_id = first;
        }
        if let Some(id) = last_id {
            cursor = id;
            rows += n;
            raw += lines.len() as u64;
            since += n;
            if since >= plan.checkpoint_rows {
                checkpoints.push(Checkpoint {
                    upto: cursor.clone(),
                    rows: since,
                });
                since = 0;
            }
        }
        drop(wire);
        io.max_buffer = io.max_buffer.max(w.peak_buffer() as u64 + lines.capacity() as u64);
        if is_last {
            scan_done = true;
        }
        limit = next_limit;
    }

    let span = if scan_done { w.finish() } else { w.end_piece() };
    parts.upload_full(ports.r2, &mut w, part_size).await?;
    let piece = span.map(|s| Piece {
        offset: s.offset,
        len: s.len,
        raw_len: s.raw_len,
        rows,
        first_id: first_id.clone().unwrap_or_default(),
        last_id: cursor.clone(),
    });
    let mut single_put = false;
    let stream = w.pos();
    let carry = if scan_done {
        if since > 0 {
            checkpoints.push(Checkpoint {
                upto: cursor.clone(),
                rows: since,
            });
            since = 0;
        }
        let rest = w.take_all();
        if parts.upload_id.is_none() && plan.next_part == 1 {
            // Smaller than one part: one plain put, no multipart upload at all.
            ports.r2.put(&plan.key, rest, "application/gzip").await?;
            single_put = true;
        } else if !rest.is_empty() {
            parts.upload(ports.r2, &rest).await?;
        }
        Vec::new()
    } else {
        w.take_all()
    };
    io.max_buffer = io.max_buffer.max(w.peak_buffer() as u64);
    Ok((
        ExportProgress {
            created_upload: parts.created,
            cursor,
            rows,
            fp,
            stream,
            new_parts: parts.done,
            carry_len: carry.len() as u64,
            piece,
            checkpoints,
            rows_since_checkpoint: since,
            finished: scan_done,
            single_put,
            io: *io,
        },
        carry,
    ))
}

/// The parts uploaded by one step, and the upload they belong to (created on first need).
struct Parts<'k> {
    key: &'k str,
    upload_id: Option<String>,
    created: Option<String>,
    next: u16,
    done: Vec<PartRef>,
}

impl Parts<'_> {
    async fn upload_full<O: ObjectStore>(
        &mut self,
        r2: &O,
        w: &mut PieceWriter,
        part_size: usize,
    ) -> Result<(), StepError> {
        while let Some(part) = w.peek_part(part_size) {
            self.upload(r2, part).await?;
            w.consume(part_size);
        }
        Ok(())
    }

    async fn upload<O: ObjectStore>(&mut self, r2: &O, bytes: &[u8]) -> Result<(), StepError> {
        let upload_id = match &self.upload_id {
            Some(id) => id.clone(),
            None => {
                let id = r2.create_upload(self.key).await?;
                self.upload_id = Some(id.clone());
                self.created = Some(id.clone());
                id
            }
        };
        let etag = r2
            .upload_part(self.key, &upload_id, self.next, bytes)
            .await
            .map_err(|e| {
                if e.kind == FailureKind::NoSuchUpload {
                    StepError::UploadGone {
                        key: self.key.to_string(),
                        upload_id: upload_id.clone(),
                    }
                } else {
                    StepError::Port(e)
                }
            })?;
        self.done.push(PartRef {
            number: self.next,
            etag,
        });
        self.next += 1;
        Ok(())
    }
}

/// Complete, then verify: object size, gzip trailer, and D1's count and fingerprint of the set.
async fn finalize<D: Database, O: ObjectStore, S: Durable, H: Host>(
    ports: &Ports<'_, D, O, S, H>,
    plan: &FinalizePlan,
    io: &mut IoStats,
) -> Result<(Option<String>, Option<String>), StepError> {
    let r2 = ports.r2;
    if let Some(upload_id) = &plan.upload_id {
        match r2.complete_upload(&plan.key, upload_id, &plan.parts).await {
            Ok(()) => {}
            // Completed by an earlier run of this step that crashed before saving? The
            // size and trailer checks below tell; if the object is not there, start over.
            Err(e) if e.kind == FailureKind::NoSuchUpload => {
                if r2.head(&plan.key).await?.map(|o| o.size) != Some(plan.bytes) {
                    return Err(StepError::UploadGone {
                        key: plan.key.clone(),
                        upload_id: upload_id.clone(),
                    });
                }
            }
            Err(e) => return Err(e.into()),
        }
    }
    let mismatch = |detail: String| StepError::ObjectMismatch {
        key: plan.key.clone(),
        detail,
    };
    let size = r2.head(&plan.key).await?.map(|o| o.size);
    if size != Some(plan.bytes) {
        return Err(mismatch(format!("size {size:?}, expected {}", plan.bytes)));
    }
    let trailer = r2
        .get_range(
            &plan.key,
            plan.bytes - crate::core::gzip::GZIP_TRAILER_LEN,
            crate::core::gzip::GZIP_TRAILER_LEN,
        )
        .await?
        .ok_or_else(|| mismatch("object vanished while reading its trailer".into()))?;
    let mut want = plan.crc32.to_le_bytes().to_vec();
    want.extend_from_slice(&(plan.raw_bytes as u32).to_le_bytes());
    if trailer != want {
        return Err(mismatch(format!("gzip trailer {trailer:02x?}, expected {want:02x?}")));
    }
    let set = sql::parse_set_summary(&query(ports.db, &sql::set_summary(&plan.date, plan.cutoff), io).await?)?;
    if set.rows != plan.rows || set.fp != plan.fp {
        return Err(StepError::SetChanged {
            exported: plan.rows,
            in_d1: set.rows,
            fp_exported: plan.fp,
            fp_d1: set.fp,
        });
    }
    r2.put(
        &plan.index_key,
        plan.index_json.clone().into_bytes(),
        "application/json",
    )
    .await?;
    Ok((set.first_id, set.last_id))
}

/// Deletes the plan's ranges, each only if D1 still holds exactly the archived rows there.
async fn clean<D: Database, O: ObjectStore, S: Durable, H: Host>(
    ports: &Ports<'_, D, O, S, H>,
    plan: &CleanPlan,
    io: &mut IoStats,
) -> Result<(usize, u64), StepError> {
    match ports.r2.head(&plan.key).await? {
        Some(o) if o.size == plan.bytes => {}
        _ => return Err(StepError::ArchiveMissing { key: plan.key.clone() }),
    }
    let mut deleted = 0;
    for (after, upto, expected) in &plan.ranges {
        let rs = query(
            ports.db,
            &sql::delete_range(&plan.date, after, upto, plan.cutoff, *expected),
            io,
        )
        .await?;
        if rs.meta.changes != *expected {
            // Deleted by an earlier run of this step (0 left), or refused by the guard.
            let left =
                sql::parse_count(&query(ports.db, &sql::count_range(&plan.date, after, upto, plan.cutoff), io).await?)?;
            if left != 0 {
                return Err(StepError::DeleteRefused {
                    after: after.clone(),
                    upto: upto.clone(),
                    archived: *expected,
                    in_d1: left,
                });
            }
        }
        deleted += expected;
    }
    Ok((plan.ranges.len(), deleted))
}
