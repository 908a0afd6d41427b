//! Reading an archive in place: the lines of a time or id window, streamed piece by piece.
//!
//! Not a query engine: only the pieces whose index entry can match (min/max `timestamp`,
//! first/last id) are range-read from R2; each is checked against the index (compressed and
//! uncompressed CRC-32, length, lines) before any of its lines goes out, then filtered line by
//! line.
//!
//! **Each row once, in id order.** A date's generations can overlap (a row changed after its
//! archive is in both; rows a stopped cleaning left are archived again). The generations are
//! merged by id as the scan wrote them (NULL and numeric ids first, then text, then BLOB):
//! where several hold an id, the newest one's line is the row, and the older lines are skipped.
//! A newer generation's pieces whose ids overlap an older piece read are read too, even outside
//! the window, so that an older version never stands in for a newer one the window excludes.
//! NULL ids cannot be told apart, nor ids JavaScript handed over with U+FFFD for bytes that are
//! not UTF-8 (they sort where their bytes did); numeric ids (an app's own table) are not merged
//! either: every such line goes out. Id bounds are on text ids; BLOB ids sort after them all.
//!
//! **Lossy ids.** Such an id's text does not say where its bytes sorted, so it is placed by
//! the scan: just after the last readable text id before it in its generation (before every
//! text id when there is none), both in the merge's order and for id bounds. Paging on from
//! any readable id therefore sends each such line once.
//!
//! Memory: one piece buffer per generation read, each sized once for its largest planned
//! piece, and one chunk going out, whatever the window. A read whose buffers would pass
//! [`MAX_BUFFER_BYTES`] (many large generations at once) is refused before it starts.

use std::collections::VecDeque;

use crate::core::gzip::{count_lines, inflate_piece};
use crate::core::index::Piece;
use crate::core::jsonl::LineKeys;
use crate::core::sql::{lossy_text, Key};
use crate::core::status::ArchiveObject;
use crate::ports::{ObjectStore, PortError};

/// Which lines to return: `from_ms <= timestamp < to_ms`, `id_from <= id <= id_to` (text ids;
/// `id_from < id` with `id_after`), at most `limit`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Window {
    pub from_ms: Option<i64>,
    pub to_ms: Option<i64>,
    pub id_from: Option<String>,
    /// `id_from` is exclusive: the id a previous page ended on.
    pub id_after: bool,
    pub id_to: Option<String>,
    pub limit: Option<u64>,
    /// Lines of the window not sent, from its start: those a previous page already sent
    /// after its last readable id (lossy ids, see the module doc).
    pub skip: u64,
}

impl Window {
    fn filters(&self) -> bool {
        self.from_ms.is_some() || self.to_ms.is_some() || self.id_from.is_some() || self.id_to.is_some()
    }

    fn bounds_ids(&self) -> bool {
        self.id_from.is_some() || self.id_to.is_some()
    }

    /// Whether the line with keys `k` is in the window; `pred` is the last readable text id
    /// before it in its generation's scan, which places a lossy id (see the module doc).
    fn wants(&self, k: Option<&LineKeys>, pred: Option<&str>) -> bool {
        let Some(k) = k else { return false };
        let time_ok = match (self.from_ms.is_some() || self.to_ms.is_some(), k.timestamp()) {
            (false, _) => true,
            (true, None) => false,
            (true, Some(t)) => t.within(self.from_ms, self.to_ms),
        };
        let id_ok = match (self.bounds_ids(), k.id_key()) {
            (false, _) => true,
            // NULL (and numeric) ids sort before every text id and are in no id range; BLOB ids
            // sort after every text id: past any `id_from`, never up to an `id_to`. So paging
            // on from the last readable id reaches them (found by a review: it never did).
            (true, None) => false,
            (true, Some(Key::Blob(_))) => self.id_to.is_none(),
            (true, Some(Key::Text(id))) => self.text_id_ok(&id, pred),
        };
        time_ok && id_ok
    }

    /// [`Window::wants`] for a text id.
    fn text_id_ok(&self, id: &str, pred: Option<&str>) -> bool {
        if lossy_text(id) {
            // Just after `pred`: at or after a bound that `pred` reaches, and before one it
            // does not.
            return self.id_from.as_deref().is_none_or(|f| pred.is_some_and(|p| p >= f))
                && self.id_to.as_deref().is_none_or(|e| pred.is_none_or(|p| p < e));
        }
        self.id_from
            .as_deref()
            .is_none_or(|f| if self.id_after { id > f } else { id >= f })
            && self.id_to.as_deref().is_none_or(|e| id <= e)
    }

    /// Whether piece `p` of an object can hold lines of the window; `real_ts_bounded`: the
    /// object's index bounds REAL timestamps too (else its time bounds cannot rule it out).
    fn may_hold(&self, p: &Piece, real_ts_bounded: bool) -> bool {
        (!real_ts_bounded || p.may_hold_time(self.from_ms, self.to_ms))
            && p.may_hold_id(self.id_from.as_deref(), self.id_to.as_deref())
    }
}

/// Why an events read could not go on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventsError {
    #[error("{0}")]
    Port(PortError),
    /// A piece does not match the index: nothing of it was sent.
    #[error("piece {piece} of {key} could not be read back as indexed ({detail}); the lines sent so far are complete and checked, the rest is not sent. If the date was reset or archived again meanwhile, read it again")]
    Damaged { key: String, piece: usize, detail: String },
    /// The object the record lists is not in R2 (removed by a reset meanwhile, or from
    /// outside): nothing of it was sent.
    #[error("{key} is not in R2; the lines sent so far are complete and checked, the rest is not sent. If the date was reset or archived again meanwhile, read it again")]
    Missing { key: String },
}

/// The most piece buffers a read may hold at once, all generations together: a Worker has 128
/// MB, and a piece inflates to a few MiB.
pub const MAX_BUFFER_BYTES: usize = 48 << 20;

/// Bytes handed out per chunk of the response (one longer line is a chunk of its own).
const CHUNK: usize = 256 * 1024;

/// A planned piece: its number, its entry, and the last readable text id before it as the
/// index tells it (`None`: none, or not known from the index; see [`Cursor::pred`]).
type Planned = (usize, Piece, Option<String>);

/// One generation's part of the read: its planned pieces, and where it stands in the last one.
struct Cursor {
    key: String,
    todo: VecDeque<Planned>,
    /// The last piece read, inflated and checked; its lines from `at` on are still to go.
    /// Sized once, at the first read, for the largest piece planned (`largest` bytes), so its
    /// memory is reused from piece to piece.
    buf: Vec<u8>,
    largest: usize,
    at: usize,
    /// The id of the line at `at`, once read (when generations are merged).
    head: Option<Head>,
    /// With id bounds or generations to merge: the last readable text id before the line at
    /// `at` in the generation's scan, which places a lossy id. Carried from piece to piece when
    /// they follow each other, else taken from the index ([`plan_context`] reads the piece
    /// before a piece that starts with a lossy id when the index cannot tell).
    pred: Option<String>,
    track: bool,
    last_read: Option<usize>,
}

impl Cursor {
    /// The cursor of generation `o` over the pieces `plan` marks (with the pieces before them
    /// that place lossy ids, when `track`).
    fn planned(o: &ArchiveObject, mut plan: Vec<bool>, track: bool) -> Cursor {
        let preds = if track {
            plan_context(&o.pieces, &mut plan)
        } else {
            vec![None; o.pieces.len()]
        };
        let todo: VecDeque<Planned> = o
            .pieces
            .iter()
            .zip(preds)
            .enumerate()
            .zip(plan)
            .filter(|(_, read)| *read)
            .map(|((i, (p, pred)), _)| (i, p.clone(), pred))
            .collect();
        // One spare byte, as `inflate_piece` asks.
        let largest = todo.iter().map(|(_, p, _)| p.raw_len as usize + 1).max().unwrap_or(0);
        Cursor {
            key: o.key.clone(),
            todo,
            buf: Vec::new(),
            largest,
            at: 0,
            head: None,
            pred: None,
            track,
            last_read: None,
        }
    }

    fn line(&self) -> Option<&[u8]> {
        let rest = &self.buf[self.at..];
        (!rest.is_empty()).then(|| match memchr::memchr(b'\n', rest) {
            Some(end) => &rest[..=end],
            None => rest,
        })
    }

    /// Past the line at `at`, `len` bytes (`None`: find its end).
    fn advance(&mut self, len: Option<usize>) {
        if self.track {
            // The id the merge read already, else the line's own.
            let id = match self.head.take() {
                Some(Head::Id(Key::Text(t))) => Some(t),
                Some(Head::Id(Key::Blob(_)) | Head::Lossy | Head::Null) => None,
                None => self
                    .line()
                    .and_then(|l| LineKeys::read(l)?.text_id())
                    .filter(|t| !lossy_text(t)),
            };
            if let Some(id) = id {
                self.pred = Some(id);
            }
        }
        self.at += len.unwrap_or_else(|| self.line().map_or(0, <[u8]>::len));
        self.head = None;
    }

    /// Reads the id of the line at `at`, once.
    fn read_head(&mut self) {
        if self.head.is_none() {
            let id = self.line().and_then(|l| LineKeys::read(l)?.id_key());
            self.head = Some(Head::of(id));
        }
    }

    /// Where the line at `at` stands, once [`Cursor::read_head`] read it.
    fn place(&self) -> Place<'_> {
        match &self.head {
            None | Some(Head::Null) => Place::Null,
            Some(Head::Id(Key::Text(t))) => Place::Text(t, 0),
            Some(Head::Id(Key::Blob(h))) => Place::Blob(h),
            Some(Head::Lossy) => match &self.pred {
                Some(p) => Place::Text(p, 1),
                None => Place::Text("", -1),
            },
        }
    }

    /// Reads planned pieces until a line is at `at`; false when the generation is done.
    async fn fill<O: ObjectStore>(&mut self, r2: &O, bytes_read: &mut u64) -> Result<bool, EventsError> {
        while self.at >= self.buf.len() {
            let Some((index, piece, pred)) = self.todo.pop_front() else {
                return Ok(false);
            };
            if self.last_read.is_none_or(|last| last + 1 != index) {
                self.pred = pred;
            }
            self.last_read = Some(index);
            *bytes_read += self.read(r2, index, &piece).await?;
        }
        Ok(true)
    }

    async fn read<O: ObjectStore>(&mut self, r2: &O, index: usize, p: &Piece) -> Result<u64, EventsError> {
        let damaged = |detail: String| EventsError::Damaged {
            key: self.key.clone(),
            piece: index,
            detail,
        };
        if self.buf.capacity() < self.largest {
            self.buf.reserve_exact(self.largest);
        }
        let bytes = r2
            .get_range(&self.key, p.offset, p.len)
            .await
            .map_err(EventsError::Port)?
            .ok_or_else(|| EventsError::Missing { key: self.key.clone() })?;
        if bytes.len() as u64 != p.len {
            return Err(damaged(format!("{} bytes, the index says {}", bytes.len(), p.len)));
        }
        let checked = inflate_piece(&bytes, p.expect(), &mut self.buf).and_then(|()| match count_lines(&self.buf) {
            Ok(n) if n == p.rows => Ok(()),
            Ok(n) => Err(format!("{n} lines, the index says {}", p.rows)),
            Err(d) => Err(d),
        });
        (self.at, self.head) = (0, None);
        // Nothing of a piece that failed its checks is ever handed out.
        checked.map_err(|d| {
            self.buf.clear();
            damaged(d)
        })?;
        Ok(bytes.len() as u64)
    }
}

/// A line's id, as the merge reads it.
enum Head {
    /// NULL, or an id that cannot be read.
    Null,
    Id(Key),
    /// With U+FFFD ([`lossy`]): sent, never matched.
    Lossy,
}

impl Head {
    fn of(id: Option<Key>) -> Head {
        match id {
            None => Head::Null,
            Some(k) if k.is_lossy() => Head::Lossy,
            Some(k) => Head::Id(k),
        }
    }
}

/// Where a line stands in the scan, for the merge: NULL ids first, then text ids, a lossy id
/// just after the readable id before it in its generation (before every text id when there is
/// none), then BLOB ids (by their hex, which sorts as their bytes).
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Place<'a> {
    Null,
    Text(&'a str, i8),
    Blob(&'a str),
}

/// An id JavaScript handed over with U+FFFD for bytes that are not UTF-8: the archive holds it
/// where D1 sorted its bytes, not where its text sorts, so it neither orders nor matches.
fn lossy(k: Option<&Key>) -> bool {
    k.is_some_and(Key::is_lossy)
}

/// Plans, for an id-bounded read, the piece before each planned piece that starts with a
/// lossy id where the index cannot say which readable id comes before it (that piece ends
/// with a lossy id too); its lines only place the lossy ones, and go out only if the window
/// wants them. Returns, per piece, the last readable text id before it that the index tells.
fn plan_context(pieces: &[Piece], plan: &mut [bool]) -> Vec<Option<String>> {
    let readable = |k: &Option<Key>| match k {
        Some(Key::Text(t)) if !lossy_text(t) => Some(t.clone()),
        _ => None,
    };
    for i in (1..pieces.len()).rev() {
        if plan[i] && lossy(pieces[i].first_id.as_ref()) && lossy(pieces[i - 1].last_id.as_ref()) {
            plan[i - 1] = true;
        }
    }
    let before = pieces.iter().map(|p| readable(&p.last_id));
    std::iter::once(None).chain(before).take(pieces.len()).collect()
}

/// Whether pieces `p` and `q` can hold a common id (NULL sorts first). A lossy bound is no
/// bound.
fn overlap(p: &Piece, q: &Piece) -> bool {
    let le = |a: Option<&Key>, b: Option<&Key>| lossy(a) || lossy(b) || a <= b;
    le(p.first_id.as_ref(), q.last_id.as_ref()) && le(q.first_id.as_ref(), p.last_id.as_ref())
}

/// Per generation (oldest first), per piece: whether the read of `window` reads it. A newer
/// generation's piece that can hold an id of an older piece read is read too: its version of
/// that row, if any, is the one that counts.
fn plan_pieces(objects: &[ArchiveObject], window: &Window) -> Vec<Vec<bool>> {
    let mut plans: Vec<Vec<bool>> = objects
        .iter()
        .map(|o| o.pieces.iter().map(|p| window.may_hold(p, o.real_ts_bounded)).collect())
        .collect();
    for newer in 1..objects.len() {
        for (i, p) in objects[newer].pieces.iter().enumerate() {
            plans[newer][i] = plans[newer][i]
                || (0..newer).any(|older| {
                    let mut read = objects[older]
                        .pieces
                        .iter()
                        .zip(&plans[older])
                        .filter(|(_, read)| **read);
                    read.any(|(q, _)| overlap(p, q))
                });
        }
    }
    plans
}

/// The pieces to read, generation by generation, and where the read stands.
pub struct EventReader {
    window: Window,
    /// Newest generation first.
    cursors: Vec<Cursor>,
    sent: u64,
    skipped: u64,
    /// Compressed bytes read from R2 so far, and in all the objects read from.
    pub bytes_read: u64,
    pub object_bytes: u64,
    pub pieces_total: usize,
    /// Older lines not sent because a newer generation holds their id.
    pub superseded: u64,
    /// The cursors with a line, kept between lines.
    live: Vec<usize>,
    /// A failure met after lines were gathered: returned by the next call.
    failed: Option<EventsError>,
}

impl EventReader {
    /// Plans the read of `window` in `objects` (oldest generation first).
    pub fn new(objects: &[ArchiveObject], window: Window) -> EventReader {
        // Lossy ids are placed by the readable id before them: for id bounds, and for the
        // merge's order (a page's order must be the one the next page's bounds go by).
        let track = window.bounds_ids() || objects.len() > 1;
        let cursors = objects
            .iter()
            .zip(plan_pieces(objects, &window))
            .rev()
            .map(|(o, plan)| Cursor::planned(o, plan, track))
            .collect();
        EventReader {
            window,
            cursors,
            sent: 0,
            skipped: 0,
            bytes_read: 0,
            pieces_total: objects.iter().map(|o| o.pieces.len()).sum(),
            object_bytes: objects.iter().map(|o| o.bytes).sum(),
            superseded: 0,
            live: Vec::new(),
            failed: None,
        }
    }

    /// The piece buffers the read will hold at once, at most: one per generation it merges.
    pub fn buffer_bytes(&self) -> usize {
        self.cursors.iter().map(|c| c.largest).sum()
    }

    /// Pieces the read will fetch, and their compressed bytes.
    pub fn planned(&self) -> (usize, u64) {
        let pieces = self.cursors.iter().flat_map(|c| c.todo.iter());
        pieces.fold((0, 0), |(n, bytes), (_, p, _)| (n + 1, bytes + p.len))
    }

    /// The next chunk of matching lines (whole lines, about 256 KiB), or `None` at the end.
    pub async fn next<O: ObjectStore>(&mut self, r2: &O) -> Result<Option<Vec<u8>>, EventsError> {
        if let Some(e) = self.failed.take() {
            return Err(e);
        }
        let limit = self.window.limit.unwrap_or(u64::MAX);
        let mut chunk = Vec::new();
        let mut live = std::mem::take(&mut self.live);
        'lines: while self.sent < limit {
            live.clear();
            for (g, c) in self.cursors.iter_mut().enumerate() {
                match c.fill(r2, &mut self.bytes_read).await {
                    Ok(true) => live.push(g),
                    Ok(false) => {}
                    // The lines gathered so far are whole and checked: they go out first.
                    Err(e) if !chunk.is_empty() => {
                        self.failed = Some(e);
                        break 'lines;
                    }
                    Err(e) => {
                        self.live = live;
                        return Err(e);
                    }
                }
            }
            let Some(g) = self.lowest(&live) else { break };
            let line = self.cursors[g].line().unwrap_or_default();
            let len = line.len();
            if !chunk.is_empty() && chunk.len() + line.len() > CHUNK {
                break;
            }
            let cursor = &self.cursors[g];
            let (wanted, head) = if self.window.filters() {
                let keys = LineKeys::read(line);
                // Kept for `advance`, which places lossy ids by it: the line is parsed once.
                let head =
                    (cursor.track && cursor.head.is_none()).then(|| Head::of(keys.as_ref().and_then(|k| k.id_key())));
                (self.window.wants(keys.as_ref(), cursor.pred.as_deref()), head)
            } else {
                (true, None)
            };
            if wanted && self.skipped < self.window.skip {
                self.skipped += 1;
            } else if wanted {
                if chunk.is_empty() {
                    chunk.reserve_exact(CHUNK.max(line.len()));
                }
                chunk.extend_from_slice(line);
                self.sent += 1;
            }
            if head.is_some() {
                self.cursors[g].head = head;
            }
            self.advance(g, &live, len);
        }
        self.live = live;
        Ok((!chunk.is_empty()).then_some(chunk))
    }

    /// The readable id of cursor `g`'s line, once [`Cursor::read_head`] read it.
    fn id(&self, g: usize) -> Option<&Key> {
        match &self.cursors[g].head {
            Some(Head::Id(k)) => Some(k),
            _ => None,
        }
    }

    /// Of the cursors in `live`, the one whose line comes next: the lowest place, the newest
    /// generation on a tie (cursors are newest first). One generation alone reads no id.
    fn lowest(&mut self, live: &[usize]) -> Option<usize> {
        if live.len() > 1 {
            for &g in live {
                self.cursors[g].read_head();
            }
        }
        let cursors = &self.cursors;
        live.iter()
            .copied()
            .min_by(|&a, &b| cursors[a].place().cmp(&cursors[b].place()).then(a.cmp(&b)))
    }

    /// Past the line of cursor `g`, and past older lines with the same id (NULL ids excepted).
    fn advance(&mut self, g: usize, live: &[usize], len: usize) {
        if live.len() > 1 && self.id(g).is_some() {
            for &older in live.iter().filter(|o| **o > g) {
                if self.id(older) == self.id(g) {
                    self.cursors[older].advance(None);
                    self.superseded += 1;
                }
            }
        }
        self.cursors[g].advance(Some(len));
    }
}
