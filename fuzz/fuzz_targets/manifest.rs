//! Manifest and index parsing: the store's analysis of pushed manifests and the import's
//! `manifest.json` model of an imgpkg tar.
//!
//! Properties: never panics; the record the store keeps survives its own JSON round trip
//! (it is what the metadata journal persists); an index references no blobs; every
//! manifest the import would store hashes to the digest it is stored under.
#![no_main]

use airdock::imgpkg::manifest as imgpkg_manifest;
use airdock_storage::{Algorithm, Digest, ManifestRecord};
use libfuzzer_sys::fuzz_target;

/// Media types a client may send as `Content-Type`; the first byte of the input picks one.
const TYPES: &[&str] = &[
    "",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.artifact.manifest.v1+json",
    "application/x-unknown",
];

fuzz_target!(|data: &[u8]| {
    let Some((&pick, bytes)) = data.split_first() else {
        return;
    };
    let media_type = TYPES[usize::from(pick) % TYPES.len()];
    let digest = Digest::of(Algorithm::Sha256, bytes);
    if let Ok(record) = ManifestRecord::parse(digest.clone(), media_type, bytes) {
        assert_eq!(record.digest, digest);
        assert_eq!(record.size, bytes.len() as u64);
        if record.is_index() {
            assert!(record.blob_refs().is_empty());
        }
        let json = serde_json::to_vec(&record).expect("a record serialises");
        let back: ManifestRecord = serde_json::from_slice(&json).expect("and reads back");
        assert_eq!(back, record);
    }

    // The imgpkg `manifest.json` parser sees the whole input.
    if let Ok(set) = imgpkg_manifest::parse(data) {
        for m in set.manifests() {
            assert_eq!(&Digest::of(m.digest.algorithm(), m.bytes), m.digest);
        }
        for (d, config) in set.configs() {
            assert_eq!(&Digest::of(d.algorithm(), config.as_bytes()), d);
        }
        let _ = set.layers();
        let _ = set.root_bundle();
    }
});
