//! One export step, without I/O: pages of rows in, JSONL compressed into pieces, parts out.
//!
//! Not the driver: the engine performs the [`Io`] this job asks for and hands the answers back.
//! Everything a step decides is decided here and tested as tables: how many rows each page
//! asks for (so that a page is about `PAGE_BYTES`, from the first page of every step), when a
//! piece ends (`PIECE_BYTES` raw or ~1 MiB compressed), when a part goes up, whether the whole
//! object goes up in one `put`, and when the step stops (`STEP_ROWS`, `STEP_BYTES`).
//!
//! The scan reads NULL ids first (by rowid), then every other id in order (`''` included, BLOB
//! ids last). The page after the current one is asked for before the current one is compressed
//! ([`super::Poll::Prefetch`]), so that on Cloudflare D1's query time overlaps our work.
//!
//! With Parquet on, the same lines also go into the step's Parquet file, which goes up in one
//! `put` when the step ends (see [`crate::core::parquet`]).

use crate::core::config::{Config, CARRY_SLACK, FIRST_PAGE_ROWS, PIECE_MAX_COMPRESSED};
use crate::core::error::{FailureKind, StepError};
use crate::core::gzip::{PieceWriter, StreamPos};
use crate::core::index::Piece;
use crate::core::io::{Answer, Io, IoResult, IoStats};
use crate::core::jsonl;
use crate::core::parquet::{self, FileWriter};
use crate::core::sql::{self, Cursor, Key, Segment, Statement};
use crate::core::state::{Export, ParquetFile, PartRef, Upload};

use super::Poll;

/// Uncompressed bytes (whole lines, at least one) fed to the compressor between checks for a
/// full part and for the end of a piece.
const SLICE: usize = 64 * 1024;
const _: () = assert!(CARRY_SLACK == 2 * SLICE);

/// How big pages, pieces and the step may get.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub page_rows: u32,
    pub page_bytes: u64,
    pub step_rows: u64,
    pub step_bytes: u64,
    pub piece_raw: u64,
    pub piece_out: u64,
    /// Pages held to `page_bytes` in SQL ([`sql::export_page`]): for a step after one that
    /// never saved.
    pub capped: bool,
}

impl Limits {
    pub fn from_config(cfg: &Config) -> Limits {
        Limits {
            page_rows: cfg.page_rows,
            page_bytes: cfg.page_bytes,
            step_rows: cfg.step_rows,
            step_bytes: cfg.step_bytes,
            piece_raw: cfg.piece_bytes,
            piece_out: PIECE_MAX_COMPRESSED,
            capped: false,
        }
    }

    /// After a step that began and never saved (its isolate died, most likely of a page too
    /// large for its memory: sizes are guessed from the rows before), pages are held to
    /// `page_bytes` in SQL for this step.
    pub fn after_unsaved_step(self, unsaved: bool) -> Limits {
        Limits {
            capped: self.capped || unsaved,
            ..self
        }
    }

    fn page_cap(&self) -> Option<u64> {
        self.capped.then_some(self.page_bytes)
    }

    /// With Parquet on, a step keeps its Parquet file in memory until the file's `put`: the
    /// step stops at [`parquet::FILE_ROWS`] rows and [`parquet::FILE_LINE_BYTES`] of lines, so
    /// peak memory does not grow with `STEP_ROWS`.
    pub fn with_parquet(self, on: bool) -> Limits {
        if !on {
            return self;
        }
        Limits {
            step_rows: self.step_rows.min(parquet::FILE_ROWS),
            step_bytes: self.step_bytes.min(parquet::FILE_LINE_BYTES),
            ..self
        }
    }

    /// Rows to ask for next: about `page_bytes` of rows of `row_bytes` each (a probe of
    /// [`FIRST_PAGE_ROWS`] while the size is unknown), growing at most fourfold per page, and
    /// never past the step's row budget.
    pub fn page_limit(&self, row_bytes: u64, previous: Option<u32>, rows_left: u64) -> u32 {
        let by_size = self
            .page_bytes
            .checked_div(row_bytes)
            .unwrap_or(u64::from(FIRST_PAGE_ROWS));
        let growth = previous.map_or(u64::MAX, |p| 4 * u64::from(p.max(FIRST_PAGE_ROWS)));
        by_size.min(growth).min(u64::from(self.page_rows)).min(rows_left).max(1) as u32
    }
}

/// What one export step did.
#[derive(Debug, Clone, PartialEq)]
pub struct Exported {
    /// The id after which the next step's scan starts.
    pub cursor: Cursor,
    /// Lines the step archived.
    pub rows: u64,
    /// A line's size as the step's last page measured it, for the next step's first page.
    pub row_bytes: u64,
    pub stream: StreamPos,
    /// The upload after the step (a created upload and its new parts included).
    pub upload: StepUpload,
    /// Compressed bytes not uploaded yet (under a part's size), saved for the next step.
    pub carry: Vec<u8>,
    /// The pieces the step ended, for the seek index.
    pub pieces: Vec<Piece>,
    /// The scan reached the end and the stream is ended and handed to R2.
    pub finished: bool,
    /// The step's Parquet file, in R2 (with Parquet on and at least one row).
    pub parquet: Option<ParquetFile>,
    pub io: IoStats,
    /// Its pages were held to `PAGE_BYTES` in SQL ([`Limits::after_unsaved_step`]).
    pub capped: bool,
}

/// The upload as a step leaves it.
#[derive(Debug, Clone, PartialEq)]
pub enum StepUpload {
    NotStarted,
    /// The whole object went up in one `put`.
    SinglePut,
    Multipart {
        upload_id: String,
        /// Parts this step uploaded.
        new_parts: Vec<PartRef>,
    },
}

/// Per line of the current page: where it ends in `lines`, its timestamp, and where its id is
/// in the wire text (`None` for a NULL id).
#[derive(Debug, Clone, Copy)]
struct LineInfo {
    end: usize,
    /// The whole milliseconds its timestamp lies in (`Timestamp::bounds`), if it is a number.
    ts: Option<(i64, i64)>,
    id: Option<(usize, usize)>,
}

/// The piece being written.
#[derive(Debug, Default)]
struct OpenPiece {
    rows: u64,
    first_id: Option<Key>,
    last_id: Option<Key>,
    min_ts: Option<i64>,
    max_ts: Option<i64>,
}

#[derive(Debug, PartialEq)]
enum Stage {
    Fetch(Statement),
    Write { next: Option<Statement>, prefetched: bool },
    AwaitNext,
    Close,
    Done,
}

/// The upload as the step sees it.
#[derive(Debug)]
enum Up {
    NotStarted,
    Multipart {
        upload_id: String,
        next: u16,
        new_parts: Vec<PartRef>,
    },
    SinglePut,
    /// A scan that found no row cleared the object's key (as [`ExportJob::final_io`] says).
    Cleared,
}

/// The step's Parquet file.
enum Pq {
    Off,
    /// Lines go in; `page` says the current page is not in yet.
    Writing {
        key: String,
        writer: Box<FileWriter>,
        page: bool,
    },
    /// The file is ended: it goes up (or, with no row, the key is cleared of an earlier run's).
    Ready {
        key: String,
        file: Option<(parquet::Encoded, u64)>,
    },
    Done(Option<ParquetFile>),
}

/// One export step in progress.
pub struct ExportJob {
    date: String,
    /// The date as JSON, the `event_date` of every row of every page.
    date_json: String,
    key: String,
    part_size: usize,
    limits: Limits,
    writer: PieceWriter,
    up: Up,
    stage: Stage,
    cursor: Cursor,
    /// The statement in flight reads the exact bytes of the cursor's id, which JavaScript gave
    /// as this text ([`sql::exact_cursor`]).
    resolving: Option<String>,
    limit: u32,
    row_bytes: u64,
    rows: u64,
    raw: u64,
    scan_done: bool,
    skip_empty: bool,
    closed: bool,
    wire: String,
    lines: Vec<u8>,
    info: Vec<LineInfo>,
    written: usize,
    piece: OpenPiece,
    pieces: Vec<Piece>,
    pq: Pq,
    io: IoStats,
}

impl ExportJob {
    /// The next step of `ex`, resuming from `carry` (the output the last step kept).
    ///
    /// With `skip_empty`, a scan that finds no row at all writes no object.
    pub fn new(
        date: &str,
        ex: &Export,
        carry: Vec<u8>,
        limits: Limits,
        skip_empty: bool,
    ) -> Result<ExportJob, StepError> {
        if carry.len() as u64 != ex.carry_len {
            return Err(StepError::CarryLost {
                expected: ex.carry_len,
                found: carry.len() as u64,
            });
        }
        let part_size = ex.part_size as usize;
        let limit = limits.page_limit(ex.row_bytes, None, limits.step_rows);
        let pq = match &ex.parquet {
            None => Pq::Off,
            Some(files) => Pq::Writing {
                key: parquet::file_key(&ex.key, files.len() as u32 + 1),
                writer: Box::new(FileWriter::new().map_err(StepError::Parquet)?),
                page: false,
            },
        };
        let up = match &ex.upload {
            Upload::NotStarted => Up::NotStarted,
            Upload::Multipart { upload_id, parts } => Up::Multipart {
                upload_id: upload_id.clone(),
                next: parts.len() as u16 + 1,
                new_parts: Vec::new(),
            },
        };
        Ok(ExportJob {
            date: date.to_string(),
            date_json: sql::date_json(date),
            key: ex.key.clone(),
            part_size,
            limits,
            // Output never exceeds a part plus one slice's worth before it is uploaded.
            writer: PieceWriter::resume(ex.level, ex.stream, carry, part_size + CARRY_SLACK),
            up,
            stage: Stage::Fetch(sql::export_page(date, &ex.cursor, limit, limits.page_cap())),
            cursor: ex.cursor.clone(),
            resolving: None,
            limit,
            row_bytes: ex.row_bytes,
            rows: 0,
            raw: 0,
            scan_done: false,
            skip_empty,
            closed: false,
            wire: String::new(),
            lines: Vec::with_capacity(limits.page_bytes as usize + SLICE),
            info: Vec::new(),
            written: 0,
            piece: OpenPiece::default(),
            pieces: Vec::new(),
            pq,
            io: IoStats::default(),
        })
    }

    /// The next thing to do.
    pub fn poll(&mut self) -> Result<Poll<'_>, StepError> {
        loop {
            if self.part_waiting() {
                return Ok(Poll::Io(self.upload_io()));
            }
            match &self.stage {
                Stage::Fetch(stmt) => return Ok(Poll::Io(Io::Page(stmt.clone()))),
                Stage::Write {
                    next: Some(stmt),
                    prefetched: false,
                } => {
                    let stmt = stmt.clone();
                    self.stage = Stage::Write {
                        next: Some(stmt.clone()),
                        prefetched: true,
                    };
                    return Ok(Poll::Prefetch(stmt));
                }
                Stage::Write { next, .. } => {
                    let has_next = next.is_some();
                    if let Pq::Writing { page: true, .. } = self.pq {
                        self.page_to_parquet()?;
                    } else if self.written < self.info.len() {
                        self.write_slice()?;
                    } else {
                        self.stage = if has_next { Stage::AwaitNext } else { Stage::Close };
                    }
                }
                Stage::AwaitNext => return Ok(Poll::AwaitPrefetch),
                Stage::Close => {
                    self.close()?;
                    // Closing may have filled a part: it goes up first, so that the last part
                    // is never larger than the others (R2 refuses that; found by a review).
                    if self.part_waiting() {
                        continue;
                    }
                    if self.final_waiting() {
                        return Ok(Poll::Io(self.final_io()));
                    }
                    if matches!(self.pq, Pq::Ready { .. }) {
                        return Ok(Poll::Io(self.parquet_io()));
                    }
                    self.stage = Stage::Done;
                }
                Stage::Done => return Ok(Poll::Done),
            }
        }
    }

    /// The answer to the last [`Poll::Io`] (or the prefetched page).
    pub fn handle(&mut self, reply: IoResult) -> Result<(), StepError> {
        let answer = match (reply, &self.up) {
            (Err(e), Up::Multipart { upload_id, .. }) if e.kind == FailureKind::NoSuchUpload => {
                return Err(StepError::UploadGone {
                    key: self.key.clone(),
                    upload_id: upload_id.clone(),
                })
            }
            (reply, _) => reply?,
        };
        match answer {
            Answer::Page(wire, meta) => {
                self.io.note(meta);
                self.take_page(wire)
            }
            Answer::UploadId(id) => {
                self.up = Up::Multipart {
                    upload_id: id,
                    next: 1,
                    new_parts: Vec::new(),
                };
                Ok(())
            }
            Answer::Etag(etag) => {
                let n = self.part_size.min(self.writer.pending().len());
                if let Up::Multipart { next, new_parts, .. } = &mut self.up {
                    new_parts.push(PartRef { number: *next, etag });
                    *next += 1;
                }
                self.writer.consume(n);
                Ok(())
            }
            Answer::Done if matches!(self.pq, Pq::Ready { .. }) && !self.final_waiting() => {
                // The Parquet file is in R2 (or its key is clear).
                let Pq::Ready { key, file } = std::mem::replace(&mut self.pq, Pq::Off) else {
                    unreachable!("matched above")
                };
                self.pq = Pq::Done(file.map(|(encoded, bytes)| ParquetFile {
                    key,
                    rows: encoded.rows,
                    bytes,
                    row_groups: encoded.row_groups,
                    crc32: encoded.crc32,
                    footer_crc32: Some(encoded.footer_crc32),
                }));
                Ok(())
            }
            Answer::Done if self.clears_key() => {
                self.up = Up::Cleared;
                Ok(())
            }
            Answer::Done => {
                // The single put: the whole object is in R2.
                let n = self.writer.pending().len();
                self.writer.consume(n);
                self.up = Up::SinglePut;
                Ok(())
            }
            other @ (Answer::Rows(_) | Answer::Batch(_) | Answer::Size(_) | Answer::Bytes(_)) => {
                Err(StepError::BadResult(sql::BadResult {
                    statement: "export",
                    detail: format!("unexpected answer {other:?}"),
                }))
            }
        }
    }

    /// What the step did; the carry is what stays for the next step.
    pub fn finish(mut self) -> Exported {
        let stream = self.writer.pos();
        let carry = if self.scan_done {
            Vec::new()
        } else {
            self.writer.take_all()
        };
        self.io
            .note_buffer(self.writer.peak_buffer() + self.lines.capacity() + self.wire.capacity());
        Exported {
            capped: self.limits.capped,
            cursor: self.cursor,
            rows: self.rows,
            row_bytes: self.row_bytes,
            stream,
            upload: match self.up {
                Up::NotStarted | Up::Cleared => StepUpload::NotStarted,
                Up::SinglePut => StepUpload::SinglePut,
                Up::Multipart {
                    upload_id, new_parts, ..
                } => StepUpload::Multipart { upload_id, new_parts },
            },
            carry,
            pieces: self.pieces,
            finished: self.scan_done,
            parquet: match self.pq {
                Pq::Done(file) => file,
                // Parquet off, or this step did not end and upload the file.
                Pq::Off | Pq::Writing { .. } | Pq::Ready { .. } => None,
            },
            io: self.io,
        }
    }

    // -- pages --------------------------------------------------------------------------------

    fn take_page(&mut self, wire: String) -> Result<(), StepError> {
        self.lines.clear();
        self.info.clear();
        self.written = 0;
        if let Some(lossy) = self.resolving.take() {
            // Not a page: the last page's last id, byte for byte.
            self.cursor = sql::cursor_of_hex(&wire, &lossy)?;
            self.stage = Stage::Write {
                next: self.next_page(),
                prefetched: false,
            };
            return Ok(());
        }
        self.wire = wire;
        let before = self.cursor.clone();
        let segment = self.cursor.segment();
        let base = self.wire.as_ptr() as usize;
        let mut last: Option<sql::PageRow<'_>> = None;
        for row in sql::page_rows(&self.wire, &self.date_json) {
            let row = row?;
            if segment == Segment::Numbers && row.rowid == sql::INEXACT {
                return Err(StepError::InexactId {
                    id: row.id().to_string(),
                });
            }
            if segment != Segment::NullIds {
                let follows = match (&last, segment) {
                    (Some(prev), Segment::Numbers) => sql::number_follows(prev.id(), row.id()),
                    (Some(prev), Segment::Ids | Segment::NullIds) => sql::id_follows(prev.id(), row.id())?,
                    (None, _) => before.precedes(row.id())?,
                };
                if follows == Some(false) {
                    return Err(StepError::IdOrder {
                        after: last.map_or_else(|| before.name(), |prev| sql::row_name(&prev)),
                        row: sql::row_name(&row),
                    });
                }
            }
            let from = self.lines.len();
            jsonl::encode_row(&row.values, row.real, &mut self.lines)?;
            if sql::crosses_too_big(&self.lines[from..], row.id()) {
                return Err(StepError::LineTooBig {
                    row: sql::row_name(&row),
                    bytes: (self.lines.len() - from) as u64,
                });
            }
            let start = row.id().as_ptr() as usize - base;
            self.info.push(LineInfo {
                end: self.lines.len(),
                ts: jsonl::Timestamp::parse(row.timestamp_json()).map(jsonl::Timestamp::bounds),
                id: (segment == Segment::Ids).then_some((start, start + row.id().len())),
            });
            last = Some(row);
        }
        let n = self.info.len() as u64;
        if let Some(row) = last {
            self.cursor = sql::cursor_after(&row)?;
            self.row_bytes = (self.wire.len() as u64 / n).max(1);
        }
        self.rows += n;
        self.raw += self.lines.len() as u64;
        if let Pq::Writing { page, .. } = &mut self.pq {
            *page = n > 0;
        }
        // A page held to its bytes can be short with rows after it: only an empty one ends.
        let segment_done = if self.limits.capped {
            n == 0
        } else {
            n < u64::from(self.limit)
        };
        if segment_done {
            match self.cursor.next_segment() {
                Some(next) => self.cursor = next,
                None => self.scan_done = true,
            }
        }
        // A cursor JavaScript changed is made exact before any page (or the next step) uses it.
        let exact = (!self.scan_done && sql::cursor_is_lossy(&self.cursor))
            .then(|| sql::exact_cursor(&self.date, &before, n as u32))
            .flatten();
        self.resolving = match (&exact, &self.cursor) {
            (Some(_), Cursor::After { id: Key::Text(t) }) => Some(t.clone()),
            _ => None,
        };
        let next = exact.or_else(|| self.next_page());
        self.stage = Stage::Write {
            next,
            prefetched: false,
        };
        Ok(())
    }

    /// Whether this step holds its pages to `PAGE_BYTES` in SQL ([`Limits::after_unsaved_step`]).
    pub fn capped(&self) -> bool {
        self.limits.capped
    }

    /// The next page's statement, while the scan and the step's budget last.
    fn next_page(&mut self) -> Option<Statement> {
        let budget_left = self.rows < self.limits.step_rows && self.raw < self.limits.step_bytes;
        (!self.scan_done && budget_left).then(|| {
            self.limit = self
                .limits
                .page_limit(self.row_bytes, Some(self.limit), self.limits.step_rows - self.rows);
            sql::export_page(&self.date, &self.cursor, self.limit, self.limits.page_cap())
        })
    }

    /// The current page's lines into the Parquet file.
    fn page_to_parquet(&mut self) -> Result<(), StepError> {
        if let Pq::Writing { writer, page, .. } = &mut self.pq {
            let mut start = 0;
            for line in &self.info {
                writer
                    .push_line(&self.lines[start..line.end])
                    .map_err(StepError::Parquet)?;
                start = line.end;
            }
            *page = false;
        }
        Ok(())
    }

    /// Compresses the next slice of whole lines into the current piece; ends the piece when
    /// it is big enough.
    fn write_slice(&mut self) -> Result<(), StepError> {
        let from = self.written;
        let start = if from == 0 { 0 } else { self.info[from - 1].end };
        let mut to = from + 1;
        while to < self.info.len() && self.info[to].end - start <= SLICE {
            to += 1;
        }
        if self.piece.rows == 0 {
            self.piece.first_id = self.key_of(from)?;
        }
        for line in &self.info[from..to] {
            if let Some((lo, hi)) = line.ts {
                self.piece.min_ts = Some(self.piece.min_ts.map_or(lo, |m| m.min(lo)));
                self.piece.max_ts = Some(self.piece.max_ts.map_or(hi, |m| m.max(hi)));
            }
        }
        self.piece.rows += (to - from) as u64;
        self.piece.last_id = self.key_of(to - 1)?;
        self.writer.write(&self.lines[start..self.info[to - 1].end]);
        self.written = to;
        if self.writer.piece_raw() >= self.limits.piece_raw
            || self.writer.piece_out() + SLICE as u64 >= self.limits.piece_out
        {
            let span = self.writer.end_piece();
            self.push_piece(span);
        }
        Ok(())
    }

    fn key_of(&self, line: usize) -> Result<Option<Key>, StepError> {
        match self.info[line].id {
            None => Ok(None),
            Some((s, e)) => Ok(Some(sql::id_key(&self.wire[s..e])?)),
        }
    }

    fn push_piece(&mut self, span: Option<crate::core::gzip::PieceSpan>) {
        let open = std::mem::take(&mut self.piece);
        if let Some(s) = span {
            self.pieces.push(Piece {
                offset: s.offset,
                len: s.len,
                raw_len: s.raw_len,
                rows: open.rows,
                crc32: s.crc32,
                zcrc32: s.zcrc32,
                first_id: open.first_id,
                last_id: open.last_id,
                min_ts: open.min_ts,
                max_ts: open.max_ts,
            });
        }
    }

    // -- uploads ------------------------------------------------------------------------------

    fn part_waiting(&self) -> bool {
        !matches!(self.up, Up::SinglePut | Up::Cleared) && self.writer.peek_part(self.part_size).is_some()
    }

    fn upload_io(&self) -> Io<'_> {
        match &self.up {
            Up::Multipart { upload_id, next, .. } => Io::UploadPart {
                key: &self.key,
                upload_id,
                number: *next,
                bytes: self.writer.peek_part(self.part_size).unwrap_or_default(),
            },
            Up::NotStarted | Up::SinglePut | Up::Cleared => Io::CreateUpload { key: &self.key },
        }
    }

    /// Ends the piece (the step stops here) or the stream (the scan is done), and the Parquet
    /// file, once.
    fn close(&mut self) -> Result<(), StepError> {
        if self.closed {
            return Ok(());
        }
        self.closed = true;
        let span = if self.scan_done {
            self.writer.finish()
        } else {
            self.writer.end_piece()
        };
        self.push_piece(span);
        if let Pq::Writing { key, writer, .. } = std::mem::replace(&mut self.pq, Pq::Off) {
            let file = match writer.rows() {
                0 => None,
                _ => {
                    let encoded = writer.finish().map_err(StepError::Parquet)?;
                    let bytes = encoded.bytes.len as u64;
                    self.io
                        .note_buffer(encoded.bytes.chunks.iter().map(Vec::capacity).sum());
                    Some((encoded, bytes))
                }
            };
            self.pq = Pq::Ready { key, file };
        }
        Ok(())
    }

    /// After the stream ends, the rest goes up: as the only object (`put`) or the last part;
    /// or, when the scan found no row, the object's key is cleared ([`Self::clears_key`]).
    fn final_waiting(&self) -> bool {
        self.scan_done
            && match &self.up {
                Up::NotStarted => true,
                Up::Multipart { .. } => !self.writer.pending().is_empty(),
                Up::SinglePut | Up::Cleared => false,
            }
    }

    /// The scan found no row to archive, so no object is written, and its key is cleared
    /// instead: an earlier run of this step may have put it before a crash, and the app
    /// deleted the rows since (nothing would list it; a review's finding).
    fn clears_key(&self) -> bool {
        self.scan_done && self.skip_empty && self.rows == 0 && matches!(self.up, Up::NotStarted)
    }

    /// The step's Parquet file goes up; a step with no row clears its key instead (an earlier
    /// run of this step may have written it before a crash, and nothing would list it).
    fn parquet_io(&self) -> Io<'_> {
        match &self.pq {
            Pq::Ready {
                key,
                file: Some((encoded, _)),
            } => Io::Put {
                key,
                body: encoded.bytes.chunks.iter().map(Vec::as_slice).collect(),
                content_type: "application/vnd.apache.parquet",
            },
            Pq::Ready { key, file: None } => Io::Delete { key },
            Pq::Off | Pq::Writing { .. } | Pq::Done(_) => unreachable!("asked only when ready"),
        }
    }

    fn final_io(&self) -> Io<'_> {
        if self.clears_key() {
            return Io::Delete { key: &self.key };
        }
        let rest = self.writer.pending();
        match &self.up {
            Up::Multipart { upload_id, next, .. } => Io::UploadPart {
                key: &self.key,
                upload_id,
                number: *next,
                bytes: rest,
            },
            Up::NotStarted | Up::SinglePut | Up::Cleared => Io::Put {
                key: &self.key,
                body: vec![rest],
                content_type: "application/gzip",
            },
        }
    }
}
