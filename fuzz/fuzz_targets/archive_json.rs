//! The documents of docker / OCI archives (`crate::archive::model`): docker's `manifest.json`,
//! `oci-layout`, `index.json` and manifests, image configs' `rootfs.diff_ids`, and the sniff
//! that tells docker's `manifest.json` from imgpkg's. The first byte picks the media type a
//! descriptor would announce; the rest is the document.
//!
//! Properties: never panics; a parsed image manifest's config and layers, written back as the
//! Docker schema 2 manifest the import builds, parse again to the same digests and sizes; an
//! index keeps its children in order; a docker `manifest.json` that parses is never taken for
//! an imgpkg one when it starts the usual way.
#![no_main]

use airdock::archive::model::{self, Parsed};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&pick, doc)) = data.split_first() else {
        return;
    };
    let described = match pick % 4 {
        0 => "",
        1 => model::OCI_MANIFEST,
        2 => model::OCI_INDEX,
        _ => model::DOCKER_MANIFEST,
    };
    let _ = model::check_oci_layout(doc);
    let _ = model::parse_diff_ids(doc);
    let _ = airdock::archive::is_docker_manifest_json(doc);
    if let Ok(images) = model::parse_docker_manifest(doc) {
        assert!(!images.is_empty());
    }
    match model::parse_manifest(doc, described) {
        Ok(Parsed::Image {
            media_type,
            config,
            layers,
        }) => {
            assert!(model::is_manifest(&media_type), "{media_type}");
            let ls: Vec<_> = layers
                .iter()
                .map(|l| (l.digest.clone(), l.size, model::DOCKER_LAYER_TAR))
                .collect();
            let written = model::docker_manifest((&config.digest, config.size), &ls);
            match model::parse_manifest(&written, model::DOCKER_MANIFEST) {
                Ok(Parsed::Image {
                    config: c2,
                    layers: l2,
                    ..
                }) => {
                    assert_eq!((c2.digest, c2.size), (config.digest, config.size));
                    assert_eq!(l2.len(), layers.len());
                    for (a, b) in layers.iter().zip(&l2) {
                        assert_eq!((&a.digest, a.size), (&b.digest, b.size));
                    }
                }
                other => panic!("the written manifest does not parse back: {other:?}"),
            }
        }
        Ok(Parsed::Index {
            media_type,
            manifests,
        }) => {
            assert!(model::is_index(&media_type), "{media_type}");
            let _ = manifests;
        }
        Err(_) => {}
    }
});
