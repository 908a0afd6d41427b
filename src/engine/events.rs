//! Reading an archive in place: the lines of a time or id window, streamed piece by piece.
//!
//! Not a query engine: only the pieces whose index entry can match (min/max `timestamp`,
//! first/last id) are range-read from R2; each is checked against the index (compressed and
//! uncompressed CRC-32, length, lines) before any of its lines goes out, then filtered line by
//! line. Memory is one piece buffer, sized once for the largest piece planned, and one chunk
//! going out, whatever the window.

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
                self.id_from.as_deref().is_none_or(|f| id.as_str() >= f)
                    && self.id_to.as_deref().is_none_or(|e| id.as_str() <= e)
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

/// Bytes handed out per chunk of the response (one longer line is a chunk of its own).
const CHUNK: usize = 256 * 1024;

/// The pieces to read, and where the reader stands in the last one read.
pub struct EventReader {
    window: Window,
    todo: VecDeque<(String, usize, Piece)>,
    sent: u64,
    /// The last piece read, inflated and checked; its lines from `at` on are still to hand out.
    /// Sized once for the largest piece planned, so its memory is reused from piece to piece.
    buf: Vec<u8>,
    at: usize,
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
        // One spare byte, as `inflate_piece` asks.
        let largest = todo.iter().map(|(_, _, p)| p.raw_len as usize + 1).max().unwrap_or(0);
        EventReader {
            window,
            pieces_total: objects.iter().map(|o| o.pieces.len()).sum(),
            object_bytes: objects.iter().map(|o| o.bytes).sum(),
            todo,
            sent: 0,
            buf: Vec::with_capacity(largest),
            at: 0,
            bytes_read: 0,
        }
    }

    /// Pieces the read will fetch, and their compressed bytes.
    pub fn planned(&self) -> (usize, u64) {
        (self.todo.len(), self.todo.iter().map(|(_, _, p)| p.len).sum())
    }

    /// The next chunk of matching lines (whole lines, about 256 KiB), or `None` at the end.
    pub async fn next<O: ObjectStore>(&mut self, r2: &O) -> Result<Option<Vec<u8>>, EventsError> {
        loop {
            if let Some(chunk) = self.take_chunk() {
                return Ok(Some(chunk));
            }
            if self.window.limit.is_some_and(|l| self.sent >= l) {
                return Ok(None);
            }
            let Some((key, index, piece)) = self.todo.pop_front() else {
                return Ok(None);
            };
            self.read(r2, &key, index, &piece).await?;
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
        self.at = 0;
        let checked = inflate_piece(&bytes, p.expect(), &mut self.buf).and_then(|()| match count_lines(&self.buf) {
            Ok(n) if n == p.rows => Ok(()),
            Ok(n) => Err(format!("{n} lines, the index says {}", p.rows)),
            Err(d) => Err(d),
        });
        // Nothing of a piece that failed its checks is ever handed out.
        checked.map_err(|d| {
            self.buf.clear();
            damaged(d)
        })
    }

    /// The wanted lines of the piece in `buf` from `at` on, up to the limit and about
    /// [`CHUNK`] bytes, copied out; `None` when the piece has none left.
    fn take_chunk(&mut self) -> Option<Vec<u8>> {
        let limit = self.window.limit.unwrap_or(u64::MAX);
        let filters = self.window.filters();
        let mut chunk = Vec::new();
        for line in self.buf[self.at..].split_inclusive(|b| *b == b'\n') {
            if self.sent >= limit || (!chunk.is_empty() && chunk.len() + line.len() > CHUNK) {
                break;
            }
            self.at += line.len();
            if !filters || self.window.wants(line) {
                if chunk.is_empty() {
                    chunk.reserve_exact(CHUNK.max(line.len()));
                }
                chunk.extend_from_slice(line);
                self.sent += 1;
            }
        }
        (!chunk.is_empty()).then_some(chunk)
    }
}
