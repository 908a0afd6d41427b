//! Steps that read an archive back from R2 piece by piece, without I/O: verification, and the
//! passes that delete (cleaning, release) or insert (restore) rows from the lines they read.
//!
//! Not trust: every piece is range-read, inflated on its own and checked against the index
//! (length, CRC-32, line count) **before** any of its lines is used. A piece that does not match
//! is used for nothing. Lines go to D1 in batches of whole lines (the statements are
//! [`sql::delete_batch`] and [`sql::restore_batch`]), each batch one D1 transaction guarded by
//! its own row in `archive_ledger`, so a repeated batch changes nothing.

use std::borrow::Cow;

use serde_json::Value;

use crate::core::error::StepError;
use crate::core::gzip::{check_tail, count_lines, inflate_piece, GZIP_HEADER};
use crate::core::index::Piece;
use crate::core::io::{Io, IoResult, IoStats};
use crate::core::parquet;
use crate::core::sql::{self, BatchId, ResultSet};
use crate::core::state::{Generation, RestoreCounts};

use super::Poll;

/// Where a reader keeps the advice for a damaged or missing archive.
const CLEAN_ADVICE: &str = "Rows of that piece stay in D1. The archive is damaged: stop cleaning with POST /admin/reset (the object is kept; the remaining rows are archived again as the next generation)";
const RESTORE_ADVICE: &str =
    "Rows restored so far stay in D1. Restore the object from a copy, or release the date (POST /admin/release)";

/// How many conflicting ids a restore keeps for the status page.
pub const CONFLICT_IDS_KEPT: usize = 10;

// ---------------------------------------------------------------------------------------------
// Verification

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum VerifyStage {
    /// The size of Parquet file `parquet_checked`.
    ParquetSize,
    /// Its last bytes (its footer), `len` of them.
    ParquetTail {
        len: u64,
    },
    /// The object's size, which must be what was written: bytes after the trailer would
    /// pass every other check (found by a review).
    Size,
    Header,
    /// Pieces from `next`, then the tail (final block and trailer).
    Pieces,
    Done,
}

/// Parquet footers one verification step reads back at most: two or three R2 calls each, so a
/// step's calls stay bounded however many files a day has (about 11 a million rows).
pub const PARQUET_FOOTERS_PER_STEP: usize = 64;

/// One verification step: checks the Parquet files' footers from `parquet_checked` (there are
/// none with Parquet off; [`PARQUET_FOOTERS_PER_STEP`] at most), then the object's header,
/// pieces from `next`, and its tail.
pub struct VerifyJob {
    archive: Generation,
    parquet_checked: usize,
    next: usize,
    crc: crc32fast::Hasher,
    raw_len: u64,
    budget: u64,
    spent: u64,
    /// Parquet footers this step may still read.
    footers_left: usize,
    stage: VerifyStage,
    buf: Vec<u8>,
    io: IoStats,
}

/// What a verification step did.
#[derive(Debug, Clone, PartialEq)]
pub struct Verified {
    pub parquet_checked: usize,
    pub next: usize,
    pub crc: u32,
    pub raw_len: u64,
    pub finished: bool,
    pub io: IoStats,
}

impl VerifyJob {
    /// Continues the read-back of `archive` at piece `next`, whose predecessors had CRC-32 `crc`
    /// over `raw_len` bytes; reads at most about `budget` raw bytes.
    pub fn new(
        archive: &Generation,
        (parquet_checked, next): (usize, usize),
        crc: u32,
        raw_len: u64,
        budget: u64,
    ) -> Result<VerifyJob, StepError> {
        check_contiguous(archive)?;
        let largest = archive.pieces.iter().map(|p| p.raw_len as usize + 1).max().unwrap_or(0);
        let parquet_rows: u64 = archive.parquet.iter().map(|f| f.rows).sum();
        if !archive.parquet.is_empty() && parquet_rows != archive.rows {
            return Err(StepError::ParquetMismatch {
                key: archive.parquet[0].key.clone(),
                detail: format!("its files hold {parquet_rows} rows, the JSONL {}", archive.rows),
            });
        }
        Ok(VerifyJob {
            archive: archive.clone(),
            parquet_checked,
            next,
            crc: crc32fast::Hasher::new_with_initial_len(crc, raw_len),
            raw_len,
            budget,
            spent: 0,
            footers_left: PARQUET_FOOTERS_PER_STEP,
            stage: if parquet_checked < archive.parquet.len() {
                VerifyStage::ParquetSize
            } else if next == 0 {
                VerifyStage::Size
            } else {
                VerifyStage::Pieces
            },
            buf: Vec::with_capacity(largest),
            io: IoStats::default(),
        })
    }

    pub fn poll(&mut self) -> Poll<'_> {
        let key = &self.archive.key;
        match self.stage {
            VerifyStage::ParquetSize if self.footers_left == 0 => Poll::Done,
            VerifyStage::ParquetSize => Poll::Io(Io::Head {
                key: &self.archive.parquet[self.parquet_checked].key,
            }),
            VerifyStage::ParquetTail { len } => {
                let file = &self.archive.parquet[self.parquet_checked];
                Poll::Io(Io::Get {
                    key: &file.key,
                    offset: file.bytes - len,
                    len,
                })
            }
            VerifyStage::Size => Poll::Io(Io::Head { key }),
            VerifyStage::Header => Poll::Io(Io::Get {
                key,
                offset: 0,
                len: GZIP_HEADER.len() as u64,
            }),
            VerifyStage::Pieces if self.next < self.archive.pieces.len() && self.spent < self.budget => {
                let p = &self.archive.pieces[self.next];
                Poll::Io(Io::Get {
                    key,
                    offset: p.offset,
                    len: p.len,
                })
            }
            VerifyStage::Pieces if self.next < self.archive.pieces.len() => Poll::Done,
            VerifyStage::Pieces => {
                let end = tail_of(&self.archive.pieces);
                Poll::Io(Io::Get {
                    key,
                    offset: end,
                    len: self.archive.bytes.saturating_sub(end),
                })
            }
            VerifyStage::Done => Poll::Done,
        }
    }

    pub fn handle(&mut self, reply: IoResult) -> Result<(), StepError> {
        if let VerifyStage::ParquetSize | VerifyStage::ParquetTail { .. } = self.stage {
            return self.check_parquet(reply);
        }
        if self.stage == VerifyStage::Size {
            return match reply?.size()? {
                Some(size) if size == self.archive.bytes => {
                    self.stage = VerifyStage::Header;
                    Ok(())
                }
                Some(size) => Err(self.mismatch(format!("{size} bytes, {} were written", self.archive.bytes))),
                None => Err(self.mismatch("the object vanished before it was read back".into())),
            };
        }
        let Some(bytes) = reply?.bytes()? else {
            return Err(self.mismatch("the object vanished while it was read back".into()));
        };
        self.io.bytes_read += bytes.len() as u64;
        match self.stage {
            VerifyStage::Header if bytes != GZIP_HEADER => Err(self.mismatch(format!("header {bytes:02x?}"))),
            VerifyStage::Header => {
                self.stage = VerifyStage::Pieces;
                Ok(())
            }
            VerifyStage::Pieces if self.next < self.archive.pieces.len() => self.check_piece(&bytes),
            VerifyStage::Pieces => {
                let crc = self.crc.clone().finalize();
                check_tail(&bytes, crc, self.raw_len).map_err(|d| self.mismatch(d))?;
                if self.raw_len != self.archive.raw_bytes {
                    return Err(self.mismatch(format!(
                        "{} bytes of lines, expected {}",
                        self.raw_len, self.archive.raw_bytes
                    )));
                }
                self.stage = VerifyStage::Done;
                Ok(())
            }
            VerifyStage::ParquetSize | VerifyStage::ParquetTail { .. } | VerifyStage::Size | VerifyStage::Done => {
                Ok(())
            }
        }
    }

    fn check_piece(&mut self, bytes: &[u8]) -> Result<(), StepError> {
        let p = &self.archive.pieces[self.next];
        let (want, rows, index) = (p.expect(), p.rows, self.next);
        if bytes.len() as u64 != p.len {
            return Err(self.mismatch(format!(
                "piece {index} read back as {} bytes, the index says {}",
                bytes.len(),
                p.len
            )));
        }
        inflate_piece(bytes, want, &mut self.buf).map_err(|d| self.mismatch(format!("piece {index}: {d}")))?;
        let lines = count_lines(&self.buf).map_err(|d| self.mismatch(format!("piece {index}: {d}")))?;
        if lines != rows {
            return Err(self.mismatch(format!("piece {index} holds {lines} lines, the index says {rows}")));
        }
        self.io.note_buffer(bytes.len() + self.buf.capacity());
        self.crc
            .combine(&crc32fast::Hasher::new_with_initial_len(want.crc32, want.raw_len));
        self.raw_len += want.raw_len;
        self.spent += want.raw_len;
        self.next += 1;
        Ok(())
    }

    /// A Parquet file: its size, then its footer (read again whole if it is longer than guessed).
    fn check_parquet(&mut self, reply: IoResult) -> Result<(), StepError> {
        let file = &self.archive.parquet[self.parquet_checked];
        let mismatch = |detail: String| StepError::ParquetMismatch {
            key: file.key.clone(),
            detail,
        };
        match self.stage {
            VerifyStage::ParquetSize => match reply?.size()? {
                Some(size) if size == file.bytes => {
                    self.stage = VerifyStage::ParquetTail {
                        len: parquet::TAIL_GUESS.min(size),
                    };
                    Ok(())
                }
                Some(size) => Err(mismatch(format!("{size} bytes, {} were written", file.bytes))),
                None => Err(mismatch("it is missing".into())),
            },
            VerifyStage::ParquetTail { len } => {
                let tail = reply?
                    .bytes()?
                    .ok_or_else(|| mismatch("it vanished while it was read back".into()))?;
                self.io.bytes_read += tail.len() as u64;
                if tail.len() as u64 != len {
                    return Err(mismatch(format!("{} bytes read back of its last {len}", tail.len())));
                }
                let need = parquet::footer_len(&tail[tail.len().saturating_sub(8)..])
                    .map_err(|e| mismatch(e.to_string()))?
                    + 8;
                if need > len && need <= file.bytes {
                    self.stage = VerifyStage::ParquetTail { len: need };
                    return Ok(());
                }
                parquet::check_footer(&tail, file.bytes, file.rows, file.footer_crc32)
                    .map_err(|e| mismatch(e.to_string()))?;
                self.parquet_checked += 1;
                self.footers_left -= 1;
                self.stage = if self.parquet_checked < self.archive.parquet.len() {
                    VerifyStage::ParquetSize
                } else if self.next == 0 {
                    VerifyStage::Size
                } else {
                    VerifyStage::Pieces
                };
                Ok(())
            }
            // Past the Parquet files: nothing of theirs to check.
            VerifyStage::Size | VerifyStage::Header | VerifyStage::Pieces | VerifyStage::Done => Ok(()),
        }
    }

    fn mismatch(&self, detail: String) -> StepError {
        StepError::ObjectMismatch {
            key: self.archive.key.clone(),
            detail,
        }
    }

    pub fn finish(self) -> Verified {
        Verified {
            parquet_checked: self.parquet_checked,
            next: self.next,
            crc: self.crc.clone().finalize(),
            raw_len: self.raw_len,
            finished: self.stage == VerifyStage::Done,
            io: self.io,
        }
    }
}

/// Where the last piece ends (the header's end for an object without pieces).
fn tail_of(pieces: &[Piece]) -> u64 {
    pieces.last().map_or(GZIP_HEADER.len() as u64, |p| p.offset + p.len)
}

/// Pieces must tile the object from the header on, and add up to its rows.
fn check_contiguous(g: &Generation) -> Result<(), StepError> {
    let mut at = GZIP_HEADER.len() as u64;
    for (i, p) in g.pieces.iter().enumerate() {
        if p.offset != at {
            return Err(StepError::ObjectMismatch {
                key: g.key.clone(),
                detail: format!("index piece {i} starts at {}, expected {at}", p.offset),
            });
        }
        at += p.len;
    }
    let rows: u64 = g.pieces.iter().map(|p| p.rows).sum();
    if rows != g.rows {
        return Err(StepError::ObjectMismatch {
            key: g.key.clone(),
            detail: format!("the index adds up to {rows} rows, the archive has {}", g.rows),
        });
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Passes: delete or insert rows from archived lines

/// What a pass does with the lines it reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Delete the rows equal to the lines, then count what is left of the date.
    Delete,
    /// Insert the lines D1 lacks.
    Restore,
}

/// One generation a pass walks through.
#[derive(Debug, Clone, PartialEq)]
pub struct Source {
    pub number: u32,
    pub key: String,
    pub pieces: Vec<Piece>,
    /// The object's size, and its lines' CRC-32 and length (its trailer's).
    pub bytes: u64,
    pub crc32: u32,
    pub raw_bytes: u64,
    /// This generation's ledger pass id.
    pub pass: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PassStage {
    /// Before the first piece of an object: its header, then its end (final block, trailer).
    Header,
    Tail,
    Read,
    /// Sending the batches of the piece in `buf`; batch `k` starts at `from`.
    Batches {
        k: usize,
        from: usize,
        to: usize,
    },
    Count,
    Done,
}

/// One step of a pass.
pub struct PassJob {
    kind: Kind,
    date: String,
    sources: Vec<Source>,
    current: usize,
    piece: usize,
    batch_bytes: usize,
    wide_twice: bool,
    budget_rows: u64,
    now_ms: i64,
    rowid_mark: Option<String>,
    generation_marks: bool,
    stage: PassStage,
    buf: Vec<u8>,
    rows_seen: u64,
    /// Rows deleted or inserted per generation by the pieces this step finished.
    changed: Vec<(u32, u64)>,
    counts: RestoreCounts,
    /// The same for the piece in progress: it counts only once the piece is done, because a
    /// repeated batch reports its rows again (from its ledger row).
    piece_changed: u64,
    piece_counts: RestoreCounts,
    counted: Option<u64>,
    /// The source whose header and end this step checked.
    ends_checked: Option<usize>,
    io: IoStats,
}

/// What a pass step did.
#[derive(Debug, Clone, PartialEq)]
pub struct Passed {
    /// The position reached: generation index and piece.
    pub current: usize,
    pub piece: usize,
    /// Rows deleted (or inserted) per generation by this step.
    pub changed: Vec<(u32, u64)>,
    /// For a restore: what this step found.
    pub counts: RestoreCounts,
    /// For a deleting pass that went through everything: rows of the date left in D1.
    pub counted: Option<u64>,
    pub finished: bool,
    pub io: IoStats,
}

/// Where a pass starts this step, and how much it may do.
#[derive(Debug, Clone)]
pub struct PassStart {
    pub current: usize,
    pub piece: usize,
    pub batch_bytes: u64,
    /// See [`crate::core::state::Walk::wide_twice`].
    pub wide_twice: bool,
    pub budget_rows: u64,
    pub now_ms: i64,
    /// The restore's rowid mark ([`sql::rowid_mark`]): a restore writes it, a release deletes
    /// NULL-id rows only past it; `None` for a cleaning.
    pub rowid_mark: Option<String>,
    /// The restore keeps (or kept) marks per generation too ([`sql::generation_mark`]): a
    /// release bounds each generation's rows by that generation's.
    pub generation_marks: bool,
}

impl PassJob {
    pub fn new(kind: Kind, date: &str, sources: Vec<Source>, at: PassStart) -> PassJob {
        let largest = sources
            .iter()
            .flat_map(|s| s.pieces.iter().map(|p| p.raw_len as usize + 1))
            .max()
            .unwrap_or(0);
        let mut job = PassJob {
            kind,
            date: date.to_string(),
            sources,
            current: at.current,
            piece: at.piece,
            batch_bytes: at.batch_bytes as usize,
            wide_twice: at.wide_twice,
            budget_rows: at.budget_rows,
            now_ms: at.now_ms,
            rowid_mark: at.rowid_mark,
            generation_marks: at.generation_marks,
            stage: PassStage::Read,
            buf: Vec::with_capacity(largest),
            rows_seen: 0,
            changed: Vec::new(),
            counts: RestoreCounts::default(),
            piece_changed: 0,
            piece_counts: RestoreCounts::default(),
            counted: None,
            ends_checked: None,
            io: IoStats::default(),
        };
        job.skip_empty_sources();
        job
    }

    /// Moves past generations without pieces (an empty archive has nothing to read).
    fn skip_empty_sources(&mut self) {
        while self.current < self.sources.len() && self.piece >= self.sources[self.current].pieces.len() {
            self.current += 1;
            self.piece = 0;
        }
    }

    pub fn kind(&self) -> Kind {
        self.kind
    }

    pub fn poll(&mut self) -> Poll<'_> {
        match self.stage {
            PassStage::Read if self.current >= self.sources.len() => match self.kind {
                Kind::Delete => {
                    self.stage = PassStage::Count;
                    Poll::Io(Io::Query(sql::count_date(&self.date)))
                }
                Kind::Restore => {
                    self.stage = PassStage::Done;
                    Poll::Done
                }
            },
            PassStage::Read if self.rows_seen >= self.budget_rows => Poll::Done,
            PassStage::Read if self.piece == 0 && self.ends_checked != Some(self.current) => {
                self.stage = PassStage::Header;
                self.poll()
            }
            PassStage::Header => Poll::Io(Io::Get {
                key: &self.sources[self.current].key,
                offset: 0,
                len: GZIP_HEADER.len() as u64,
            }),
            PassStage::Tail => {
                let s = &self.sources[self.current];
                let end = tail_of(&s.pieces);
                Poll::Io(Io::Get {
                    key: &s.key,
                    offset: end,
                    len: s.bytes.saturating_sub(end),
                })
            }
            PassStage::Read => {
                let s = &self.sources[self.current];
                let p = &s.pieces[self.piece];
                Poll::Io(Io::Get {
                    key: &s.key,
                    offset: p.offset,
                    len: p.len,
                })
            }
            PassStage::Batches { k, from, .. } => {
                let to = batch_end(&self.buf, from, self.batch_bytes, self.wide_twice);
                self.stage = PassStage::Batches { k, from, to };
                Poll::Io(Io::Batch(self.statements(k, from, to)))
            }
            PassStage::Count => Poll::Io(Io::Query(sql::count_date(&self.date))),
            PassStage::Done => Poll::Done,
        }
    }

    fn statements(&self, k: usize, from: usize, to: usize) -> Vec<sql::Statement> {
        let s = &self.sources[self.current];
        let id = BatchId {
            pass: &s.pass,
            piece: self.piece,
            batch: k,
        };
        // The lines were written from UTF-8 text and their CRC-32 matched: valid UTF-8. (Should
        // a line not be, it becomes text no row equals.) `from_utf8` first: it skips ASCII a
        // word at a time, where the lossy decoder goes byte by byte.
        let raw = &self.buf[from..to];
        let lines = std::str::from_utf8(raw).map_or_else(|_| String::from_utf8_lossy(raw), Cow::Borrowed);
        let mark = self.rowid_mark.as_deref();
        let generation_mark = mark
            .filter(|_| self.generation_marks)
            .map(|m| sql::generation_mark(m, s.number));
        match self.kind {
            Kind::Delete => sql::delete_batch(
                &lines,
                &self.date,
                &id,
                self.now_ms,
                generation_mark.as_deref().or(mark),
            ),
            Kind::Restore => {
                let marks = sql::RestoreBatchMarks {
                    restore: mark.unwrap_or_default(),
                    generation: generation_mark.as_deref(),
                    after_newer: self.current > 0,
                };
                sql::restore_batch(&lines, &self.date, &id, self.now_ms, &marks)
            }
        }
    }

    pub fn handle(&mut self, reply: IoResult) -> Result<(), StepError> {
        match self.stage {
            PassStage::Header | PassStage::Tail => {
                let bytes = reply?.bytes()?;
                self.check_ends(bytes)
            }
            PassStage::Read => {
                let bytes = reply?.bytes()?;
                self.take_piece(bytes)
            }
            PassStage::Batches { k, to, .. } => {
                let results = reply?.batch()?;
                self.io.note_all(&results);
                self.take_batch(k, to, &results)
            }
            PassStage::Count => {
                let rs = reply?.rows()?;
                self.io.note(rs.meta);
                self.counted = Some(sql::single_u64("count_date", &rs)?);
                self.stage = PassStage::Done;
                Ok(())
            }
            PassStage::Done => Ok(()),
        }
    }

    /// The object's header and end must be what was written: a damaged object is not read.
    fn check_ends(&mut self, bytes: Option<Vec<u8>>) -> Result<(), StepError> {
        let s = &self.sources[self.current];
        let advice = self.advice();
        let Some(bytes) = bytes else {
            return Err(StepError::ArchiveMissing {
                key: s.key.clone(),
                advice,
            });
        };
        self.io.bytes_read += bytes.len() as u64;
        let damaged = |detail: String| StepError::PieceCorrupt {
            key: s.key.clone(),
            piece: 0,
            detail,
            advice,
        };
        if self.stage == PassStage::Header {
            if bytes != GZIP_HEADER {
                return Err(damaged(format!("the object's gzip header is {bytes:02x?}")));
            }
            self.stage = PassStage::Tail;
            return Ok(());
        }
        check_tail(&bytes, s.crc32, s.raw_bytes).map_err(|d| damaged(format!("the object's end: {d}")))?;
        self.stage = PassStage::Read;
        // Back to reading with the ends checked: `piece == 0` must not ask again.
        self.ends_checked = Some(self.current);
        Ok(())
    }

    fn advice(&self) -> &'static str {
        match self.kind {
            Kind::Delete => CLEAN_ADVICE,
            Kind::Restore => RESTORE_ADVICE,
        }
    }

    fn take_piece(&mut self, bytes: Option<Vec<u8>>) -> Result<(), StepError> {
        let advice = self.advice();
        let s = &self.sources[self.current];
        let Some(bytes) = bytes else {
            return Err(StepError::ArchiveMissing {
                key: s.key.clone(),
                advice,
            });
        };
        self.io.bytes_read += bytes.len() as u64;
        let p = &s.pieces[self.piece];
        let corrupt = |detail: String| StepError::PieceCorrupt {
            key: s.key.clone(),
            piece: self.piece,
            detail,
            advice,
        };
        if bytes.len() as u64 != p.len {
            return Err(corrupt(format!(
                "read back as {} bytes, the index says {}",
                bytes.len(),
                p.len
            )));
        }
        inflate_piece(&bytes, p.expect(), &mut self.buf).map_err(corrupt)?;
        let lines = count_lines(&self.buf).map_err(corrupt)?;
        if lines != p.rows {
            return Err(corrupt(format!("{lines} lines, the index says {}", p.rows)));
        }
        self.io
            .note_buffer(bytes.len() + self.buf.capacity() + self.batch_bytes);
        self.rows_seen += lines;
        if self.kind == Kind::Restore {
            self.piece_counts.lines = lines;
        }
        self.stage = PassStage::Batches { k: 0, from: 0, to: 0 };
        self.next_batch_or_piece(0, 0);
        Ok(())
    }

    fn take_batch(&mut self, k: usize, to: usize, results: &[ResultSet]) -> Result<(), StepError> {
        let from = match self.stage {
            PassStage::Batches { from, .. } => from,
            PassStage::Header | PassStage::Tail | PassStage::Read | PassStage::Count | PassStage::Done => 0,
        };
        // A batch of deletes that found the table's columns changed opened no ledger row.
        if self.kind != Kind::Restore && results.last().is_some_and(|rs| rs.rows.is_empty()) {
            return Err(StepError::TableChanged {
                key: self.sources[self.current].key.clone(),
                piece: self.piece,
                batch: k,
            });
        }
        let rows = results
            .last()
            .map(|rs| sql::single_u64("ledger_rows", rs))
            .transpose()?
            .unwrap_or(0);
        self.piece_changed += rows;
        if self.kind == Kind::Restore {
            self.check_restored(k, from, to, rows, results)?;
        }
        self.next_batch_or_piece(k + 1, to);
        Ok(())
    }

    /// After a restore batch, every line has an identical row in D1, or its id a different row
    /// (a conflict, or a newer version restored first), unless the batch ran before (its
    /// step was repeated) and the app removed that row in between: counted as removed. On the
    /// batch's first run a line without a row is an insert the database ignored.
    fn check_restored(
        &mut self,
        k: usize,
        from: usize,
        to: usize,
        inserted: u64,
        results: &[ResultSet],
    ) -> Result<(), StepError> {
        let row = sql::restore_check_result(results)
            .and_then(|rs| rs.rows.first())
            .cloned()
            .unwrap_or_default();
        let (identical, conflicts, ids, superseded, first_run): (u64, u64, Option<String>, u64, u8) =
            sql::decode_row("restore_check", &row)?;
        let lines = self.buf[from..to].iter().filter(|b| **b == b'\n').count() as u64;
        let missing = lines.saturating_sub(identical + conflicts + superseded);
        if first_run == 1 && missing > 0 {
            // Inserted and checked in one transaction: nothing could remove them in between.
            return Err(StepError::RestoreIgnored {
                key: self.sources[self.current].key.clone(),
                piece: self.piece,
                batch: k,
                missing,
                lines,
            });
        }
        let c = &mut self.piece_counts;
        c.inserted += inserted;
        c.present += identical.saturating_sub(inserted);
        c.conflicts += conflicts;
        c.superseded += superseded;
        c.removed += missing;
        let ids: Vec<Value> = ids.and_then(|s| serde_json::from_str(&s).ok()).unwrap_or_default();
        let room = CONFLICT_IDS_KEPT.saturating_sub(c.conflict_ids.len());
        c.conflict_ids.extend(ids.into_iter().take(room));
        Ok(())
    }

    /// The next batch of this piece, or the next piece once the piece is done.
    fn next_batch_or_piece(&mut self, k: usize, from: usize) {
        if from < self.buf.len() {
            self.stage = PassStage::Batches { k, from, to: from };
            return;
        }
        self.piece_done();
        self.piece += 1;
        self.skip_empty_sources();
        self.stage = PassStage::Read;
    }

    /// Counts the finished piece.
    fn piece_done(&mut self) {
        let number = self.sources[self.current].number;
        let rows = std::mem::take(&mut self.piece_changed);
        match self.changed.iter_mut().find(|(n, _)| *n == number) {
            Some((_, r)) => *r += rows,
            None => self.changed.push((number, rows)),
        }
        let c = std::mem::take(&mut self.piece_counts);
        self.counts.merge(&c, CONFLICT_IDS_KEPT);
    }

    pub fn finish(self) -> Passed {
        Passed {
            current: self.current,
            piece: self.piece,
            changed: self.changed,
            counts: self.counts,
            counted: self.counted,
            finished: self.stage == PassStage::Done && (self.kind == Kind::Restore || self.counted.is_some()),
            io: self.io,
        }
    }
}

/// The end of the batch that starts at `from`: whole lines, at most `max` bytes as a JSON array
/// (at least one line).
fn batch_end(buf: &[u8], from: usize, max: usize, wide_twice: bool) -> usize {
    let (mut end, mut size) = (from, 1);
    // The array adds a bracket per batch and a comma per line; a newline becomes the comma. A
    // wide line crosses as hex: twice its bytes.
    while end < buf.len() {
        let next = memchr::memchr(b'\n', &buf[end..]).map_or(buf.len(), |i| end + i + 1);
        let line = &buf[end..next];
        size += if wide_twice && !sql::is_narrow_bytes(line) {
            2 * line.len()
        } else {
            line.len()
        };
        if end > from && size > max {
            break;
        }
        end = next;
    }
    end
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_are_whole_lines_under_the_byte_cap() {
        let buf = b"{\"a\":1}\n{\"a\":22}\n{\"a\":333}\n";
        assert_eq!(batch_end(buf, 0, 1000, true), buf.len());
        assert_eq!(batch_end(buf, 0, 18, true), 17);
        assert_eq!(batch_end(buf, 0, 1, true), 8, "one line at least");
        // A wide line counts twice (it crosses D1 as hex); a pass saved before counts it once.
        let wide = "{\"a\":\"東\"}\n{\"a\":1}\n".as_bytes();
        assert_eq!(batch_end(wide, 0, 24, true), 12);
        assert_eq!(batch_end(wide, 0, 24, false), wide.len());
    }
}
