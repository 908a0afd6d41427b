//! 200 random single-byte flips of an uploaded (verified) object: every one is caught before
//! any row of the flipped piece is deleted, and nothing is lost.

mod common;

use common::*;
use d1_archiver::core::config::Config;
use d1_archiver::core::machine::Command;

#[test]
fn two_hundred_random_byte_flips_are_caught_before_their_rows_are_deleted() {
    let cfg = Config {
        auto_cleanup: false,
        ..small_config()
    };
    let mut rng = Rng(0x5eed);
    let mut in_pieces = 0;
    for flip in 0..200 {
        let w = World::new(cfg.clone());
        seed(w.sql(), DATE, 2_000, 11, w.host.now.get() / 1000);
        let originals = rows_of(w.sql(), DATE);
        w.run();
        let rec = w.record();
        let g = rec.generations[0].clone();
        assert_eq!(w.status().phase, "uploaded");
        // Flip one byte anywhere in the object: header, a piece, the final block or the trailer.
        let at = rng.below(g.bytes) as usize;
        let mask = (rng.below(255) + 1) as u8;
        w.objects().objects.borrow_mut().get_mut(&g.key).unwrap()[at] ^= mask;
        let piece = g
            .pieces
            .iter()
            .position(|p| (p.offset..p.offset + p.len).contains(&(at as u64)));
        in_pieces += usize::from(piece.is_some());
        w.command(Command::Cleanup).unwrap();
        w.drive(|_, _| {});
        let st = w.status();
        let label = format!("flip {flip}: byte {at} ^ {mask:#04x} (piece {piece:?})");
        assert_eq!(
            (st.phase.as_str(), st.failed_in.as_deref()),
            ("failed", Some("cleaning")),
            "{label}"
        );
        let error = st.last_error.unwrap();
        assert!(
            error.contains("does not match its index") && error.contains("POST /admin/reset"),
            "{label}: {error}"
        );
        // Nothing lost: every row is in D1, or (identical) in the archive as it was written.
        w.objects().objects.borrow_mut().get_mut(&g.key).unwrap()[at] ^= mask;
        assert!(lost(&w, &originals).is_empty(), "{label}: rows lost");
        // Every row of the flipped piece (all of them, for a flip outside the pieces) is in D1.
        let still: Vec<_> = rows_of(w.sql(), DATE);
        let protected = match piece {
            Some(p) => g.pieces[p].rows as usize,
            None => originals.len(),
        };
        assert!(
            still.len() >= protected,
            "{label}: {} rows left, the piece holds {protected}",
            still.len()
        );
        if let Some(p) = piece {
            let lines = pieces_lines(&w, &g.key, &g.pieces[..p]);
            assert_eq!(
                still.len(),
                originals.len() - lines,
                "{label}: only earlier pieces were cleaned"
            );
        }
    }
    assert!(in_pieces > 150, "most flips should land in pieces ({in_pieces})");
}

/// Lines in the given (intact) pieces, counted from the index.
fn pieces_lines(_w: &World, _key: &str, pieces: &[d1_archiver::core::index::Piece]) -> usize {
    pieces.iter().map(|p| p.rows as usize).sum()
}
