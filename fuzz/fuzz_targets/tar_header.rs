//! The tar header block parser, the PAX record parser and the USTAR writer.
//!
//! Properties: parsing never panics; a parsed name fits the fields it came from; what
//! `ustar_header` writes parses back to the same name, size and kind.
#![no_main]

use airdock::imgpkg::tarfmt::{self, Block, Header, Kind, BLOCK};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Some(block) = data.first_chunk::<BLOCK>() {
        if let Ok(Block::Header(h)) = tarfmt::parse_block(block) {
            // name (100) + '/' + prefix (155); link name (100).
            assert!(h.name.len() <= 256, "name of {} bytes", h.name.len());
            assert!(h.link_name.len() <= 100);
            assert!(h.data_len() <= h.size);
            if h.kind.header_only() {
                assert_eq!(h.data_len(), 0);
            }
        }
    }
    if let Ok(pax) = tarfmt::parse_pax(data) {
        for v in [&pax.path, &pax.link_path].into_iter().flatten() {
            assert!(v.len() <= data.len());
        }
    }
    assert!(tarfmt::gnu_long_name(data).len() <= data.len());

    // Writer round trip: the first 8 bytes pick size and kind, the rest up to a NUL is the name.
    let (size, rest) = airdock_fuzz::take_u64(data);
    let size = size % (1 << 33);
    let (name, _) = airdock_fuzz::split_once(rest, 0);
    let Ok(name) = std::str::from_utf8(name) else {
        return;
    };
    let kind = if size % 2 == 0 {
        Kind::Regular
    } else {
        Kind::Directory
    };
    match tarfmt::ustar_header(name, 0o644, size, kind) {
        None => assert!(name.len() > 100 || size >= 1 << 33),
        Some(block) => {
            let want = Header {
                name: name.as_bytes().to_vec(),
                link_name: vec![],
                size,
                kind,
            };
            assert_eq!(tarfmt::parse_block(&block), Ok(Block::Header(want)));
            assert_eq!(tarfmt::padding(size) + size % BLOCK as u64, {
                if size % BLOCK as u64 == 0 {
                    0
                } else {
                    BLOCK as u64
                }
            });
        }
    }
});
