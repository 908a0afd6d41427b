//! Reading an archive in place: the lines of a time or id window, streamed piece by piece.
//!
//! Not a query engine: only the pieces whose index entry can match (min/max `timestamp`,
//! first/last id) are range-read from R2; each is checked against the index (compressed and
//! uncompressed CRC-32, length, lines) before any of its lines goes out, then filtered line by
//! line. Memory is one piece (at most `PIECE_BYTES` raw) whatever the window.

use std::collections::VecDeque;

use crate::core::gzip::{count_lines, inflate_piece};
use crate::core::index::Piece;
use crate::core::jsonl::LineKeys;
use crate::core::status::ArchiveObject;
use crate::ports::{ObjectStore, PortError};

/// Which lines to return: `from_ms <= timestamp < to_ms`, `id_from <= id <= id_to` (text ids),
/// at most `limit`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Window {
    pub from_ms: Option<i64>,
    pub to_ms: Option<i64>,
    pub id_from: Option<String>,
    pub id_to: Option<String>,
    pub limit: Option<u64>,
}

impl Window {
    fn filters(&self) -> bool {
        self.from_ms.is_some() || self.to_ms.is_some() || self.id_from.is_some() || self.id_to.is_some()
    }

    fn wants(&self, line: &[u8]) -> bool {
        let Some(k) = LineKeys::read(line) else { return false };
        let time_ok = match (self.from_ms.is_some() || self.to_ms.is_some(), k.timestamp_ms()) {
            (false, _) => true,
            (true, None) => false,
            (true, Some(t)) => self.from_ms.is_none_or(|f| t >= f) && self.to_ms.is_none_or(|e| t < e),
        };
        let id_ok = match (self.id_from.is_some() || self.id_to.is_some(), k.text_id()) {
            (false, _) => true,
            (true, None) => false,
            (true, Some(id)) => {
                self.id_from.as_deref().is_none_or(|f| id >= f) && self.id_to.as_deref().is_none_or(|e| id <= e)
            }
        };
        time_ok && id_ok
    }

    fn may_hold(&self, p: &Piece) -> bool {
        p.may_hold_time(self.from_ms, self.to_ms) && p.may_hold_id(self.id_from.as_deref(), self.id_to.as_deref())
    }
}

/// Why an events read could not go on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventsError {
    #[error("{0}")]
    Port(PortError),
    /// A piece is missing or does not match the index: nothing of it was sent.
    #[error("piece {piece} of {key} could not be read back as indexed ({detail}); the lines sent so far are complete and checked, the rest is not sent")]
    Damaged { key: String, piece: usize, detail: String },
}

/// Bytes handed out per chunk of the response: the reader keeps its two buffers (the piece,
/// its matching lines) and copies out at most this much at a time.
const CHUNK: usize = 256 * 1024;

/// The pieces to read, and the lines found so far.
pub struct EventReader {
    window: Window,
    todo: VecDeque<(String, usize, Piece)>,
    sent: u64,
    buf: Vec<u8>,
    /// Matching lines of the last piece read, handed out from `out_at` on.
    out: Vec<u8>,
    out_at: usize,
    /// Compressed bytes read from R2 so far, and in all the objects read from.
    pub bytes_read: u64,
    pub object_bytes: u64,
    pub pieces_total: usize,
}

impl EventReader {
    /// Plans the read of `window` in `objects` (oldest generation first).
    pub fn new(objects: &[ArchiveObject], window: Window) -> EventReader {
        let mut todo = VecDeque::new();
        for o in objects {
            for (i, p) in o.pieces.iter().enumerate() {
                if window.may_hold(p) {
                    todo.push_back((o.key.clone(), i, p.clone()));
                }
            }
        }
        EventReader {
            window,
            pieces_total: objects.iter().map(|o| o.pieces.len()).sum(),
            object_bytes: objects.iter().map(|o| o.bytes).sum(),
            todo,
            sent: 0,
            buf: Vec::new(),
            out: Vec::new(),
            out_at: 0,
            bytes_read: 0,
        }
    }

    /// Pieces the read will fetch, and their compressed bytes.
    pub fn planned(&self) -> (usize, u64) {
        (self.todo.len(), self.todo.iter().map(|(_, _, p)| p.len).sum())
    }

    /// The next chunk of matching lines (at most 256 KiB), or `None` at the end.
    pub async fn next<O: ObjectStore>(&mut self, r2: &O) -> Result<Option<Vec<u8>>, EventsError> {
        loop {
            if self.out_at < self.out.len() {
                let end = (self.out_at + CHUNK).min(self.out.len());
                let chunk = self.out[self.out_at..end].to_vec();
                self.out_at = end;
                return Ok(Some(chunk));
            }
            if self.window.limit.is_some_and(|l| self.sent >= l) {
                return Ok(None);
            }
            let Some((key, index, piece)) = self.todo.pop_front() else {
                return Ok(None);
            };
            self.read(r2, &key, index, &piece).await?;
            self.take_lines();
        }
    }

    async fn read<O: ObjectStore>(&mut self, r2: &O, key: &str, index: usize, p: &Piece) -> Result<(), EventsError> {
        let damaged = |detail: String| EventsError::Damaged {
            key: key.to_string(),
            piece: index,
            detail,
        };
        let bytes = r2
            .get_range(key, p.offset, p.len)
            .await
            .map_err(EventsError::Port)?
            .ok_or_else(|| damaged("the object is missing".into()))?;
        self.bytes_read += bytes.len() as u64;
        if bytes.len() as u64 != p.len {
            return Err(damaged(format!("{} bytes, the index says {}", bytes.len(), p.len)));
        }
        inflate_piece(&bytes, p.expect(), &mut self.buf).map_err(damaged)?;
        match count_lines(&self.buf) {
            Ok(n) if n == p.rows => Ok(()),
            Ok(n) => Err(damaged(format!("{n} lines, the index says {}", p.rows))),
            Err(d) => Err(damaged(d)),
        }
    }

    /// The wanted lines of the piece in `buf`, up to the limit, into `out` (both buffers keep
    /// their memory from piece to piece).
    fn take_lines(&mut self) {
        let left = self.window.limit.map_or(u64::MAX, |l| l - self.sent);
        self.out.clear();
        self.out_at = 0;
        let all = out_lines(&self.buf);
        if !self.window.filters() && all <= left {
            self.sent += all;
            std::mem::swap(&mut self.buf, &mut self.out);
            return;
        }
        let mut n = 0;
        for line in self.buf.split_inclusive(|b| *b == b'\n') {
            if n >= left {
                break;
            }
            if self.window.wants(line) {
                self.out.extend_from_slice(line);
                n += 1;
            }
        }
        self.sent += n;
    }
}

fn out_lines(b: &[u8]) -> u64 {
    b.iter().filter(|c| **c == b'\n').count() as u64
}
