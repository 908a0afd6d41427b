//! Compares the two pure-Rust deflate backends on a JSONL file, natively (see docs/benchmarks.md).
//!
//!   gzip -dc demo-<date>.jsonl.gz > /tmp/sample.jsonl
//!   cargo run --release --example deflate -- /tmp/sample.jsonl

use std::time::Instant;

fn main() {
    let path = std::env::args().nth(1).expect("usage: deflate <file.jsonl>");
    let data = std::fs::read(path).expect("readable file");
    for level in [1u8, 3, 4, 6] {
        let t = Instant::now();
        let miniz = miniz_oxide::deflate::compress_to_vec(&data, level);
        let miniz_s = t.elapsed().as_secs_f64();
        let t = Instant::now();
        let mut c = flate2::Compress::new(flate2::Compression::new(u32::from(level)), false);
        let mut zlib_rs = Vec::with_capacity(data.len());
        c.compress_vec(&data, &mut zlib_rs, flate2::FlushCompress::Finish)
            .expect("deflate");
        let zlib_rs_s = t.elapsed().as_secs_f64();
        let mb = data.len() as f64 / 1e6;
        println!(
            "level {level}: miniz_oxide {:.0} MB/s, {} bytes | zlib-rs {:.0} MB/s, {} bytes",
            mb / miniz_s,
            miniz.len(),
            mb / zlib_rs_s,
            zlib_rs.len()
        );
    }
}
