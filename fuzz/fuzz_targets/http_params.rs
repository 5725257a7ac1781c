//! The request parameters the `/v2` handlers parse: `Range`, `Content-Range` and the query
//! string.
//!
//! Properties: a satisfiable range lies inside the blob (`start <= end < size`), whatever
//! the numbers; an unsatisfiable one reports the blob's size; a `Content-Range` that parses
//! has a length of at least one byte whose end fits in 64 bits, and prints and parses back
//! to the same chunk; any list of key/value pairs survives
//! form-encoding and `Query::parse` unchanged, repeated keys and order included; a file name
//! quoted into a `Content-Disposition` (the import's tar name) parses back to itself.
#![no_main]

use airdock::admin::import::disposition_filename;
use airdock::error::RegistryError;
use airdock::http::blobs::parse_range;
use airdock::http::uploads::parse_content_range;
use airdock::http::Query;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (size, rest) = airdock_fuzz::take_u64(data);
    // Small sizes matter most (0, 1, boundaries); keep some full-width ones too.
    let size = if size & 1 == 0 {
        size >> 1
    } else {
        (size >> 1) % 1024
    };
    let text = String::from_utf8_lossy(rest);

    match parse_range(&text, size) {
        Ok(Some((start, end))) => assert!(start <= end && end < size, "{text:?} over {size}"),
        Ok(None) => {}
        Err(RegistryError::RangeNotSatisfiable(_, reported)) => assert_eq!(reported, size),
        Err(e) => panic!("{text:?}: unexpected error {e:?}"),
    }

    if let Ok(r) = parse_content_range(&text) {
        assert!(r.len >= 1);
        let end = r
            .start
            .checked_add(r.len - 1)
            .expect("the chunk's end fits in u64");
        let again =
            parse_content_range(&format!("{}-{end}", r.start)).expect("printed form parses");
        assert_eq!(again, r);
    }

    let q = Query::parse(Some(&text));
    let _ = q.page_size();
    // Pairs from NUL-separated fields; the encoder's output must decode to exactly them.
    let fields: Vec<&str> = text.split('\0').collect();
    let pairs: Vec<(&str, &str)> = fields
        .chunks(2)
        .filter(|kv| !kv[0].is_empty())
        .map(|kv| (kv[0], kv.get(1).copied().unwrap_or("")))
        .collect();
    let encoded = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(&pairs)
        .finish();
    let q = Query::parse(Some(&encoded));
    for (k, _) in &pairs {
        let want: Vec<&str> = pairs
            .iter()
            .filter(|(kk, _)| kk == k)
            .map(|(_, v)| *v)
            .collect();
        let got: Vec<&str> = q.all(k).collect();
        assert_eq!(got, want, "{encoded:?}");
    }

    // The import's tar name: never panics on any header text, and a name quoted the way
    // clients quote it comes back unchanged.
    let text = String::from_utf8_lossy(rest);
    let _ = disposition_filename(&text);
    let name: String = text.chars().filter(|c| !c.is_control()).collect();
    let quoted = name.replace('\\', "\\\\").replace('"', "\\\"");
    assert_eq!(
        disposition_filename(&format!("attachment; filename=\"{quoted}\"")),
        Some(name)
    );
});
