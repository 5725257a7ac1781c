//! The gzip framing of the import (headers, members, trailers) and its inflate guard.
//!
//! Properties: our async decoder, fed in chunks of any size, accepts only streams that
//! flate2's own reader accepts (member by member, then optional zero padding), and yields
//! exactly the same bytes; output
//! never passes the limits; `stored_gzip` round-trips.
#![no_main]

use std::io::Read;

use airdock::imgpkg::gzip::{self, GzipDecoder, InflateLimits};
use libfuzzer_sys::fuzz_target;
use tokio::io::{AsyncReadExt, BufReader};

const LIMITS: InflateLimits = InflateLimits {
    free_bytes: 1 << 20,
    max_ratio: 100,
    max_output: Some(4 << 20),
};

/// The same policy on flate2's synchronous reader: members one after another, then
/// nothing or only zero bytes. Panics where it rejects the stream.
fn reference(mut rest: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(&first) = rest.first() {
        if first == 0 {
            assert!(rest.iter().all(|&c| c == 0), "accepted non-zero padding");
            break;
        }
        // `&mut &[u8]` is a `BufRead` that flate2 advances past exactly one member.
        flate2::bufread::GzDecoder::new(&mut rest)
            .read_to_end(&mut out)
            .expect("accepted a stream flate2 rejects");
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let Some((&chunk, input)) = data.split_first() else {
        return;
    };
    // Read sizes from 1 byte (every state split across reads) to 64 KiB.
    let chunk = 1usize << (chunk % 17);
    let ours = airdock_fuzz::block_on(async {
        let mut d = GzipDecoder::new(BufReader::with_capacity(chunk, input), LIMITS);
        let mut out = Vec::new();
        let r = d.read_to_end(&mut out).await;
        assert!(d.compressed_bytes() <= input.len() as u64);
        r.map(|_| out)
    });
    if let Ok(out) = ours {
        assert!(out.len() as u64 <= LIMITS.max_output.unwrap_or(u64::MAX));
        assert_eq!(out, reference(input), "decoded bytes differ from flate2's");
    }
    let wrapped = gzip::stored_gzip(input);
    let back = airdock_fuzz::block_on(async {
        let mut out = Vec::new();
        let mut d = GzipDecoder::new(BufReader::with_capacity(chunk, &wrapped[..]), LIMITS);
        d.read_to_end(&mut out).await.map(|_| out)
    });
    assert_eq!(back.expect("stored_gzip output decodes"), input);
});
