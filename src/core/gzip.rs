//! The archive's byte format: one gzip member written piece by piece across many steps, and
//! read back one piece at a time.
//!
//! Not a general gzip library: it writes and reads only the shape this archiver makes.
//!
//! The stream is a single raw-deflate stream framed by one gzip header and one trailer. A
//! *piece* is a run of whole lines compressed by a *fresh* compressor and ended by a **full
//! flush**: the output is then byte-aligned and nothing after it refers back, so
//!
//! 1. a later step (another invocation, possibly after a crash) continues the stream with a new
//!    compressor, carrying only the CRC-32 and the lengths forward, and
//! 2. every piece inflates on its own from its offset: the seek index lists them, each with the
//!    CRC-32 of its lines, so a reader can check one piece without the rest.
//!
//! The last step appends an empty final block and the trailer (CRC-32 and length of the JSONL).
//! Readers that stop after the first gzip member still read everything: there is only one.
//!
//! Writing uses zlib-rs (through flate2); reading back uses miniz_oxide, a second, independent
//! implementation, so a read-back check does not share the writer's bugs.

use flate2::{Compress, Compression, FlushCompress, Status};
use miniz_oxide::inflate::core::{decompress, inflate_flags, DecompressorOxide};
use miniz_oxide::inflate::TINFLStatus;

/// The fixed 10-byte gzip member header (RFC 1952): magic, CM=deflate, no flags, mtime 0,
/// XFL 0, OS 255 (unknown). Fixed bytes keep the output a pure function of the rows.
pub const GZIP_HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];
/// Length of the gzip trailer: CRC-32 and ISIZE, both little-endian u32.
pub const GZIP_TRAILER_LEN: u64 = 8;
/// The last bytes of every piece: the empty stored block of a full flush (LEN 0, NLEN 0xffff).
const FLUSH_MARKER: [u8; 4] = [0, 0, 0xff, 0xff];
/// Size of the compressor's output window per call.
const SCRATCH: usize = 64 * 1024;

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

/// A finished piece: `len` bytes at object offset `offset`, with CRC-32 `zcrc32`, that inflate
/// (raw deflate) on their own to `raw_len` bytes with CRC-32 `crc32`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PieceSpan {
    pub offset: u64,
    pub len: u64,
    pub raw_len: u64,
    pub crc32: u32,
    pub zcrc32: u32,
}

/// One step's writer. Holds the compressor and the not-yet-uploaded output.
pub struct PieceWriter {
    compressor: Compress,
    /// Where the compressor writes before its output is appended to `out`: bounded, so `out`
    /// grows by at most one slice's output between two part uploads.
    scratch: Vec<u8>,
    /// CRC-32 of the ended pieces (the whole stream before the current piece).
    stream_crc: crc32fast::Hasher,
    /// CRC-32 of the current piece's lines.
    piece_crc: crc32fast::Hasher,
    /// CRC-32 of the current piece's compressed bytes (a flipped padding bit changes no line,
    /// but it changes this).
    piece_zcrc: crc32fast::Hasher,
    raw_len: u64,
    /// Compressed bytes not yet handed out as parts. Starts with the carry of the previous step.
    out: Vec<u8>,
    /// Object offset of `out[0]`.
    out_base: u64,
    /// Object offset where the current piece started.
    piece_start: u64,
    /// Uncompressed bytes written into the current piece.
    piece_raw: u64,
    /// Largest length `out` reached, for the memory report.
    peak_out: usize,
}

impl PieceWriter {
    /// Continues the stream at `pos`. `carry` holds the last `carry.len()` bytes of output that
    /// were produced but not uploaded; `capacity` sizes the output buffer once, so that it never
    /// reallocates in a normal step.
    pub fn resume(level: u8, pos: StreamPos, carry: Vec<u8>, capacity: usize) -> Self {
        let carry_len = carry.len() as u64;
        let mut out = carry;
        out.reserve_exact(capacity.saturating_sub(out.len()));
        let mut writer = PieceWriter {
            // Raw deflate (no zlib header): the gzip framing is ours.
            compressor: Compress::new(Compression::new(u32::from(level.min(9))), false),
            scratch: Vec::with_capacity(SCRATCH),
            stream_crc: crc32fast::Hasher::new_with_initial_len(pos.crc, pos.raw_len),
            piece_crc: crc32fast::Hasher::new(),
            piece_zcrc: crc32fast::Hasher::new(),
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

    /// Compresses `raw` (whole lines) into the current piece.
    pub fn write(&mut self, raw: &[u8]) {
        if raw.is_empty() {
            return;
        }
        self.piece_crc.update(raw);
        self.raw_len += raw.len() as u64;
        self.piece_raw += raw.len() as u64;
        self.run(raw, FlushCompress::None);
    }

    /// Uncompressed bytes in the current piece.
    pub fn piece_raw(&self) -> u64 {
        self.piece_raw
    }

    /// Compressed bytes the current piece has produced so far (the compressor may hold more).
    pub fn piece_out(&self) -> u64 {
        self.out_base + self.out.len() as u64 - self.piece_start
    }

    /// Ends the current piece with a full flush, so that what follows refers to nothing before
    /// it. Returns the span of the piece, or `None` if nothing was written into it.
    pub fn end_piece(&mut self) -> Option<PieceSpan> {
        if self.piece_raw == 0 {
            return None;
        }
        self.run(&[], FlushCompress::Full);
        let end = self.out_base + self.out.len() as u64;
        let span = PieceSpan {
            offset: self.piece_start,
            len: end - self.piece_start,
            raw_len: self.piece_raw,
            crc32: self.piece_crc.clone().finalize(),
            zcrc32: std::mem::take(&mut self.piece_zcrc).finalize(),
        };
        self.stream_crc.combine(&self.piece_crc);
        self.piece_crc = crc32fast::Hasher::new();
        self.piece_start = end;
        self.piece_raw = 0;
        Some(span)
    }

    /// Ends the stream: the current piece, an empty final block, and the gzip trailer.
    pub fn finish(&mut self) -> Option<PieceSpan> {
        let span = self.end_piece();
        self.run(&[], FlushCompress::Finish);
        let crc = self.stream_crc.clone().finalize();
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

    /// All waiting output (the final part, or the carry for the next step).
    pub fn pending(&self) -> &[u8] {
        &self.out
    }

    /// Drops the first `n` waiting bytes (after they were uploaded). The buffer keeps its
    /// capacity, so a step's memory stays one part plus one slice however many parts it uploads.
    pub fn consume(&mut self, n: usize) {
        let n = n.min(self.out.len());
        self.out.drain(..n);
        self.out_base += n as u64;
    }

    /// Takes all waiting output.
    pub fn take_all(&mut self) -> Vec<u8> {
        self.out_base += self.out.len() as u64;
        std::mem::take(&mut self.out)
    }

    /// The stream position after everything written so far (at a piece boundary).
    pub fn pos(&self) -> StreamPos {
        let mut crc = self.stream_crc.clone();
        crc.combine(&self.piece_crc);
        StreamPos {
            crc: crc.finalize(),
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
            self.piece_zcrc.update(&self.scratch);
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

// ---------------------------------------------------------------------------------------------
// Reading back

/// What the index says about a piece: its compressed bytes' CRC-32, and its lines' length and
/// CRC-32.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Expect {
    pub zcrc32: u32,
    pub raw_len: u64,
    pub crc32: u32,
}

/// Checks one piece and inflates it into `out` (cleared and reused): its bytes must have CRC-32
/// `zcrc32` and end with a full flush, and inflate to exactly `raw_len` bytes with CRC-32
/// `crc32`, every input byte used. Returns what differs, in words, if anything does.
pub fn inflate_piece(piece: &[u8], want: Expect, out: &mut Vec<u8>) -> Result<(), String> {
    let Expect { zcrc32, raw_len, crc32 } = want;
    let found = crc32fast::hash(piece);
    if found != zcrc32 {
        return Err(format!("compressed CRC-32 {found:08x}, the index says {zcrc32:08x}"));
    }
    // A full flush ends with an empty stored block, whose last bytes are LEN 0 and NLEN 0xffff.
    if !piece.ends_with(&FLUSH_MARKER) {
        return Err("the piece does not end with a full flush".into());
    }
    out.clear();
    // One spare byte: with none, the decompressor stops at a full buffer before it reads the
    // (empty) block the full flush ended with, and output past `raw_len` would go unseen.
    // Exactly that much: a doubling buffer would leave its old block unused in wasm memory.
    out.reserve_exact(raw_len as usize + 1);
    out.resize(raw_len as usize + 1, 0);
    let mut d = Box::<DecompressorOxide>::default();
    let flags = inflate_flags::TINFL_FLAG_USING_NON_WRAPPING_OUTPUT_BUF | inflate_flags::TINFL_FLAG_HAS_MORE_INPUT;
    let (status, used, written) = decompress(&mut d, piece, out, 0, flags);
    match status {
        TINFLStatus::NeedsMoreInput | TINFLStatus::Done => {}
        TINFLStatus::HasMoreOutput => return Err(format!("inflates to more than {raw_len} bytes")),
        other @ (TINFLStatus::FailedCannotMakeProgress
        | TINFLStatus::BadParam
        | TINFLStatus::Adler32Mismatch
        | TINFLStatus::Failed) => return Err(format!("corrupt deflate data ({other:?}) after {used} bytes")),
    }
    if status == TINFLStatus::Done {
        return Err("a final block inside the piece".into());
    }
    if used != piece.len() {
        return Err(format!("{} bytes left after the piece's data", piece.len() - used));
    }
    if written as u64 != raw_len {
        return Err(format!("inflates to {written} bytes, the index says {raw_len}"));
    }
    out.truncate(written);
    let found = crc32fast::hash(out);
    if found != crc32 {
        return Err(format!("CRC-32 {found:08x}, the index says {crc32:08x}"));
    }
    Ok(())
}

/// Checks the end of the object: `tail` is everything after the last piece, the empty final
/// block and the trailer, which must carry `crc` and `raw_len`.
pub fn check_tail(tail: &[u8], crc: u32, raw_len: u64) -> Result<(), String> {
    let Some(split) = tail.len().checked_sub(GZIP_TRAILER_LEN as usize) else {
        return Err(format!("the object ends {} bytes after its last piece", tail.len()));
    };
    let (last_block, trailer) = tail.split_at(split);
    let mut d = Box::<DecompressorOxide>::default();
    let mut sink = [0u8; 1];
    let (status, used, written) = decompress(
        &mut d,
        last_block,
        &mut sink,
        0,
        inflate_flags::TINFL_FLAG_USING_NON_WRAPPING_OUTPUT_BUF,
    );
    if status != TINFLStatus::Done || used != last_block.len() || written != 0 {
        return Err(format!("the final block is not an empty end of stream ({status:?})"));
    }
    let mut want = crc.to_le_bytes().to_vec();
    want.extend_from_slice(&(raw_len as u32).to_le_bytes());
    if trailer != want {
        return Err(format!("gzip trailer {trailer:02x?}, expected {want:02x?}"));
    }
    Ok(())
}

/// Lines (newline-terminated) in `raw`, or an error if the last one is not terminated.
pub fn count_lines(raw: &[u8]) -> Result<u64, String> {
    if raw.last().is_some_and(|b| *b != b'\n') {
        return Err("the last line is not terminated".into());
    }
    Ok(memchr::memchr_iter(b'\n', raw).count() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn expect(s: PieceSpan) -> Expect {
        Expect {
            zcrc32: s.zcrc32,
            raw_len: s.raw_len,
            crc32: s.crc32,
        }
    }

    fn gunzip(bytes: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(bytes).read_to_end(&mut out).unwrap();
        out
    }

    #[test]
    fn empty_stream_is_a_valid_gzip_member() {
        let mut w = PieceWriter::resume(6, StreamPos::default(), Vec::new(), 0);
        assert_eq!(w.finish(), None);
        let bytes = w.take_all();
        assert_eq!(gunzip(&bytes), b"");
        assert_eq!(w.pos().out_len, bytes.len() as u64);
        check_tail(&bytes[10..], 0, 0).unwrap();
    }

    #[test]
    fn pieces_across_resumes_form_one_member_and_check_alone() {
        let chunks: Vec<Vec<u8>> = (0..5)
            .map(|i| format!("{{\"row\":{i}}}\n").repeat(1000 + i * 37).into_bytes())
            .collect();
        let mut object = Vec::new();
        let mut pos = StreamPos::default();
        let mut carry = Vec::new();
        let mut spans = Vec::new();
        for (i, chunk) in chunks.iter().enumerate() {
            let mut w = PieceWriter::resume(6, pos, std::mem::take(&mut carry), 1 << 16);
            let (a, b) = chunk.split_at(chunk.len() / 2);
            w.write(a);
            w.write(b);
            spans.push(
                if i == chunks.len() - 1 {
                    w.finish()
                } else {
                    w.end_piece()
                }
                .unwrap(),
            );
            // Hand out 100-byte "parts"; keep the rest as carry, like the export does.
            while w.peek_part(100).is_some() {
                object.extend_from_slice(w.peek_part(100).unwrap());
                w.consume(100);
            }
            pos = w.pos();
            carry = w.take_all();
        }
        object.extend_from_slice(&carry);
        assert_eq!(object.len() as u64, pos.out_len);
        assert_eq!(gunzip(&object), chunks.concat());
        let mut out = Vec::new();
        for (span, chunk) in spans.iter().zip(&chunks) {
            let piece = &object[span.offset as usize..(span.offset + span.len) as usize];
            inflate_piece(piece, expect(*span), &mut out).unwrap();
            assert_eq!(&out, chunk);
            assert_eq!(
                count_lines(&out).unwrap(),
                chunk.iter().filter(|b| **b == b'\n').count() as u64
            );
        }
        let end = spans.last().map(|s| s.offset + s.len).unwrap() as usize;
        check_tail(
            &object[end..],
            crc32fast::hash(&chunks.concat()),
            chunks.concat().len() as u64,
        )
        .unwrap();
        assert_eq!(pos.crc, crc32fast::hash(&chunks.concat()));
    }

    #[test]
    fn damaged_pieces_are_refused() {
        let mut w = PieceWriter::resume(6, StreamPos::default(), Vec::new(), 0);
        let raw = b"{\"a\":1}\n{\"a\":2}\n".repeat(200);
        w.write(&raw);
        let span = w.end_piece().unwrap();
        let bytes = w.take_all();
        let piece = &bytes[span.offset as usize..(span.offset + span.len) as usize];
        let mut out = Vec::new();
        let want = expect(span);
        inflate_piece(piece, want, &mut out).unwrap();
        let longer = Expect {
            raw_len: span.raw_len + 1,
            ..want
        };
        assert!(inflate_piece(piece, longer, &mut out).is_err());
        assert!(inflate_piece(
            piece,
            Expect {
                crc32: span.crc32 ^ 1,
                ..want
            },
            &mut out
        )
        .is_err());
        let cut = &piece[..piece.len() - 1];
        assert!(inflate_piece(
            cut,
            Expect {
                zcrc32: crc32fast::hash(cut),
                ..want
            },
            &mut out
        )
        .is_err());
        for i in 0..piece.len() {
            for bit in 0..8 {
                let mut bad = piece.to_vec();
                bad[i] ^= 1 << bit;
                assert!(inflate_piece(&bad, want, &mut out).is_err(), "flip of bit {bit} at {i}");
                // Even with a matching compressed CRC, the content checks hold where content changes.
                let same_z = Expect {
                    zcrc32: crc32fast::hash(&bad),
                    ..want
                };
                if inflate_piece(&bad, same_z, &mut out).is_ok() {
                    assert_eq!(out, raw, "a flip that inflates must leave the lines as they were");
                }
            }
        }
    }
}
