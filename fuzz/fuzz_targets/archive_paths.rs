//! Entry names and link targets of docker / OCI archives (`crate::archive::paths`), and the
//! tag an archive's reference maps to.
//!
//! Properties: never panics; a normalised name is relative, has no `.`, `..` or empty
//! component and normalises to itself; a link target resolves inside the archive (the same
//! properties); a `blobs/<alg>/<hex>` name's digest prints back as that name; a reference
//! maps to a valid tag or is refused.
#![no_main]

use airdock::archive::paths;
use libfuzzer_sys::fuzz_target;

fn assert_clean(p: &str) {
    assert!(!p.is_empty() && !p.starts_with('/'), "{p:?}");
    for c in p.split('/') {
        assert!(!c.is_empty() && c != "." && c != "..", "{p:?}");
    }
    assert_eq!(paths::normalize(p.as_bytes()).as_deref(), Ok(p));
}

fuzz_target!(|data: &[u8]| {
    let (name, target) = match data.iter().position(|&b| b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &b""[..]),
    };
    if let Ok(n) = paths::normalize(name) {
        assert_clean(&n);
        if let Ok(t) = paths::symlink_target(&n, target) {
            assert_clean(&t);
        }
        if let Some(Ok(d)) = paths::blob_path_digest(&n) {
            assert_eq!(paths::blob_path(&d), n);
        }
    }
    if let Ok(s) = std::str::from_utf8(data) {
        if let Ok(t) = paths::tag_of(s) {
            assert!(airdock_storage::Tag::parse(t.as_str()).is_ok());
        }
    }
});
