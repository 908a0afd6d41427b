//! The archive's byte format: one gzip member written piece by piece across many steps.
//!
//! Not a general gzip library: it only writes, and only the shape this archiver needs.
//!
//! The stream is a single raw-deflate stream framed by one gzip header and one trailer.
//! Each step compresses its rows with a *fresh* compressor and ends them with a **full flush**:
//! the output is then byte-aligned and the next piece does not refer back to it, so
//!
//! 1. a later step (another invocation, possibly after a crash) can continue the stream with a new
//!    compressor, carrying only the CRC-32 and the length forward, and
//! 2. every piece inflates on its own from its offset: the pieces form a seek index.
//!
//! The last step appends an empty final block and the trailer (CRC-32 and length of the JSONL).
//! Readers that stop after the first gzip member still read everything: there is only one.

use flate2::{Compress, Compression, FlushCompress, Status};

/// The fixed 10-byte gzip member header (RFC 1952): magic, CM=deflate, no flags, mtime 0,
/// XFL 0, OS 255 (unknown). Fixed bytes keep the output a pure function of the rows.
pub const GZIP_HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];
/// Size of the compressor's output window per call.
const SCRATCH: usize = 64 * 1024;

/// Length of the gzip trailer: CRC-32 and ISIZE, both little-endian u32.
pub const GZIP_TRAILER_LEN: u64 = 8;

/// Where the stream stands between steps; persisted in the export state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, Default)]
pub struct StreamPos {
    /// CRC-32 of all uncompressed bytes so far.
    pub crc: u32,
    /// Uncompressed bytes so far.
    pub raw_len: u64,
    /// Compressed bytes produced so far, header included (uploaded parts plus carry).
    pub out_len: u64,
}

/// One step's writer. Holds the compressor and the not-yet-uploaded output.
pub struct PieceWriter {
    compressor: Compress,
    /// Where the compressor writes before its output is appended to `out`: bounded, so `out`
    /// grows by at most one slice's output between two part uploads.
    scratch: Vec<u8>,
    hasher: crc32fast::Hasher,
    raw_len: u64,
    /// Compressed bytes not yet handed out as parts. Starts with the carry of the previous step.
    out: Vec<u8>,
    /// Object offset of `out[0]`.
    out_base: u64,
    /// Object offset where the current piece started.
    piece_start: u64,
    /// Uncompressed bytes written into the current piece.
    piece_raw: u64,
    /// Largest capacity `out` reached, for the memory report.
    peak_out: usize,
}

/// A finished piece: `len` bytes at object offset `offset` that inflate (raw deflate) on their own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PieceSpan {
    pub offset: u64,
    pub len: u64,
    pub raw_len: u64,
}

impl PieceWriter {
    /// Continues the stream at `pos`. `carry` holds the last `carry.len()` bytes of output that
    /// were produced but not uploaded; `capacity` sizes the output buffer once, so that it never
    /// reallocates in a normal step.
    pub fn resume(level: u8, pos: StreamPos, carry: Vec<u8>, capacity: usize) -> Self {
        let carry_len = carry.len() as u64;
        let mut out = carry;
        out.reserve(capacity.saturating_sub(out.len()));
        let mut writer = PieceWriter {
            // Raw deflate (no zlib header): the gzip framing is ours.
            compressor: Compress::new(Compression::new(u32::from(level.min(9))), false),
            scratch: Vec::with_capacity(SCRATCH),
            hasher: crc32fast::Hasher::new_with_initial_len(pos.crc, pos.raw_len),
            raw_len: pos.raw_len,
            out,
            out_base: pos.out_len - carry_len,
            piece_start: pos.out_len,
            piece_raw: 0,
            peak_out: 0,
        };
        if pos.out_len == 0 {
            writer.out.extend_from_slice(&GZIP_HEADER);
            writer.piece_start = GZIP_HEADER.len() as u64;
        }
        writer.note_peak();
        writer
    }

    /// Compresses `raw` into the current piece.
    pub fn write(&mut self, raw: &[u8]) {
        if raw.is_empty() {
            return;
        }
        self.hasher.update(raw);
        self.raw_len += raw.len() as u64;
        self.piece_raw += raw.len() as u64;
        self.run(raw, FlushCompress::None);
    }

    /// Ends the current piece with a full flush and starts the next one with a fresh compressor.
    /// Returns the span of the piece, or `None` if nothing was written into it.
    pub fn end_piece(&mut self) -> Option<PieceSpan> {
        if self.piece_raw == 0 {
            return None;
        }
        // A full flush ends the piece byte-aligned and resets the dictionary: what follows
        // refers to nothing before it.
        self.run(&[], FlushCompress::Full);
        let end = self.pos().out_len;
        let span = PieceSpan {
            offset: self.piece_start,
            len: end - self.piece_start,
            raw_len: self.piece_raw,
        };
        self.piece_start = end;
        self.piece_raw = 0;
        Some(span)
    }

    /// Ends the stream: the current piece, an empty final block, and the gzip trailer.
    pub fn finish(&mut self) -> Option<PieceSpan> {
        let span = self.end_piece();
        self.run(&[], FlushCompress::Finish);
        let crc = self.hasher.clone().finalize();
        self.out.extend_from_slice(&crc.to_le_bytes());
        // ISIZE is the length modulo 2^32 (RFC 1952).
        self.out.extend_from_slice(&(self.raw_len as u32).to_le_bytes());
        self.note_peak();
        span
    }

    /// The next `part_size` bytes of output, if that many are waiting. They stay in the buffer
    /// until [`PieceWriter::consume`]: an upload that fails keeps them.
    pub fn peek_part(&self, part_size: usize) -> Option<&[u8]> {
        self.out.get(..part_size)
    }

    /// Drops the first `n` waiting bytes (after they were uploaded). The buffer keeps its
    /// capacity, so a step's memory stays one part plus one page however many parts it uploads.
    pub fn consume(&mut self, n: usize) {
        let n = n.min(self.out.len());
        self.out.drain(..n);
        self.out_base += n as u64;
    }

    /// Takes all waiting output (the final part, or the carry for the next step).
    pub fn take_all(&mut self) -> Vec<u8> {
        self.out_base += self.out.len() as u64;
        std::mem::take(&mut self.out)
    }

    /// Bytes waiting to be handed out.
    pub fn pending(&self) -> usize {
        self.out.len()
    }

    /// The stream position after everything written so far.
    pub fn pos(&self) -> StreamPos {
        StreamPos {
            crc: self.hasher.clone().finalize(),
            raw_len: self.raw_len,
            out_len: self.out_base + self.out.len() as u64,
        }
    }

    /// The largest number of bytes the output buffer held at once.
    pub fn peak_buffer(&self) -> usize {
        self.peak_out
    }

    fn run(&mut self, input: &[u8], flush: FlushCompress) {
        let mut rest = input;
        loop {
            self.scratch.clear();
            let before = self.compressor.total_in();
            let status = self
                .compressor
                .compress_vec(rest, &mut self.scratch, flush)
                // Only a misuse of the API fails here (the parameters are fixed); stopping
                // would silently drop rows, so fail loudly instead.
                .unwrap_or_else(|e| panic!("deflate refused input: {e}"));
            rest = &rest[(self.compressor.total_in() - before) as usize..];
            self.out.extend_from_slice(&self.scratch);
            let scratch_full = self.scratch.len() == self.scratch.capacity();
            match status {
                Status::StreamEnd => break,
                // Done when the input is in and the compressor had room to spare (for a flush,
                // zlib's rule: it is complete once a call leaves output space unused).
                Status::Ok | Status::BufError if rest.is_empty() && !scratch_full => break,
                Status::Ok | Status::BufError => continue,
            }
        }
        self.note_peak();
    }

    fn note_peak(&mut self) {
        self.peak_out = self.peak_out.max(self.out.len());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn gunzip(bytes: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(bytes).read_to_end(&mut out).unwrap();
        out
    }

    /// Inflates a raw deflate piece that ends in a flush, not in a final block.
    fn inflate_raw(bytes: &[u8]) -> Vec<u8> {
        let mut d = flate2::Decompress::new(false);
        let mut out = Vec::with_capacity(bytes.len() * 4 + 1024);
        loop {
            out.reserve(64 * 1024);
            let before = out.len();
            let input = &bytes[d.total_in() as usize..];
            d.decompress_vec(input, &mut out, flate2::FlushDecompress::Sync)
                .unwrap();
            if d.total_in() as usize == bytes.len() && out.len() == before {
                return out;
            }
        }
    }

    #[test]
    fn empty_stream_is_a_valid_gzip_member() {
        let mut w = PieceWriter::resume(6, StreamPos::default(), Vec::new(), 0);
        assert_eq!(w.finish(), None);
        let bytes = w.take_all();
        assert_eq!(gunzip(&bytes), b"");
        assert_eq!(w.pos().out_len, bytes.len() as u64);
    }

    #[test]
    fn pieces_across_resumes_form_one_member_and_inflate_alone() {
        let chunks: Vec<Vec<u8>> = (0..5)
            .map(|i| format!("{{\"row\":{i}}}\n").repeat(1000 + i * 37).into_bytes())
            .collect();
        let mut object = Vec::new();
        let mut pos = StreamPos::default();
        let mut carry = Vec::new();
        let mut spans = Vec::new();
        for (i, chunk) in chunks.iter().enumerate() {
            let mut w = PieceWriter::resume(6, pos, std::mem::take(&mut carry), 1 << 16);
            w.write(chunk);
            let span = if i == chunks.len() - 1 {
                w.finish()
            } else {
                w.end_piece()
            };
            spans.push(span.unwrap());
            // Hand out 100-byte "parts"; keep the rest as carry, like the export does.
            while let Some(part) = w.peek_part(100) {
                object.extend_from_slice(part);
                w.consume(100);
            }
            pos = w.pos();
            carry = w.take_all();
            if i == chunks.len() - 1 {
                object.extend_from_slice(&carry);
            }
        }
        assert_eq!(object.len() as u64, pos.out_len);
        assert_eq!(gunzip(&object), chunks.concat());
        for (span, chunk) in spans.iter().zip(&chunks) {
            let piece = &object[span.offset as usize..(span.offset + span.len) as usize];
            assert_eq!(&inflate_raw(piece), chunk);
            assert_eq!(span.raw_len, chunk.len() as u64);
        }
    }
}
