//! A bundle's `.imgpkg/images.yml` (ImagesLock) reader, the digest-reference normaliser
//! under it, and the YAML the import writes back (the relocated lock, ImageLocations).
//!
//! Properties: never panics; normalising a reference is idempotent; the relocated lock we
//! write reads back (through the strict reader) as the same images, digests and annotations
//! in the same order; an ImageLocations file we write reads back as the locations we gave.
#![no_main]

use airdock::imgpkg::locations::{locations_yaml, Location};
use airdock::imgpkg::lock::ImagesLock;
use airdock::imgpkg::refs::DigestRef;
use libfuzzer_sys::fuzz_target;

const REPO: &str = "registry.example:5000/team/bundle";

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data) {
        if let Ok(r) = DigestRef::parse(s) {
            let again = DigestRef::parse(&r.name()).expect("a normalised reference parses");
            assert_eq!(again, r, "{s:?}");
        }
    }
    let Ok(lock) = ImagesLock::parse(data) else {
        return;
    };
    let yaml = lock.relocated_yaml(REPO);
    let back = ImagesLock::parse(yaml.as_bytes())
        .unwrap_or_else(|e| panic!("relocated lock does not read back: {e}\n{yaml}"));
    assert_eq!(back.images.len(), lock.images.len());
    for (a, b) in lock.images.iter().zip(&back.images) {
        assert_eq!(a.image.digest, b.image.digest);
        assert_eq!(b.image.name(), format!("{REPO}@{}", a.image.digest));
        assert_eq!(a.annotations, b.annotations, "{yaml}");
    }

    let locations: Vec<Location> = lock
        .images
        .iter()
        .enumerate()
        .map(|(i, img)| Location {
            image: img.image.name(),
            is_bundle: i % 2 == 0,
        })
        .collect();
    let written = locations_yaml(&locations);
    let doc: serde_yaml::Value = serde_yaml::from_slice(&written).expect("ImageLocations YAML");
    let mut want = locations.clone();
    want.sort();
    let got: Vec<Location> = doc["images"]
        .as_sequence()
        .map(|seq| {
            seq.iter()
                .map(|e| Location {
                    image: e["image"].as_str().expect("image is a string").to_owned(),
                    is_bundle: e["isBundle"].as_bool().expect("isBundle is a bool"),
                })
                .collect()
        })
        .unwrap_or_default();
    let mut got = got;
    got.sort();
    assert_eq!(got, want, "{}", String::from_utf8_lossy(&written));
    assert_eq!(doc["kind"].as_str(), Some("ImageLocations"));
});
