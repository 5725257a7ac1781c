//! ImageLocations images: the small image imgpkg pushes next to every relocated bundle
//! (tag `sha256-<bundle hex>.image-locations.imgpkg`) so that `imgpkg pull` and `copy` know
//! the bundle's images live in the bundle's repository, and which of them are bundles.
//!
//! Byte identity with imgpkg: the YAML, the layer's uncompressed tar (hence the DiffID) and
//! the config JSON (hence the config digest) are reproduced exactly. The gzip wrapping is not:
//! imgpkg compresses with Go's `compress/flate` at BestSpeed, whose exact output comes from
//! that implementation's matcher and Huffman-tree heuristics; reproducing it would mean
//! porting that encoder. We write stored deflate blocks instead (see
//! [`super::gzip::stored_gzip`]), which are stable forever. So the layer digest and the
//! locations manifest digest differ from real imgpkg's; nothing depends on them except the
//! image's own `sha256-<hex>.imgpkg` tag, which uses our digest.

use std::collections::BTreeMap;

use airdock_storage::{Algorithm, Digest};

use super::lock::{ImagesLock, API_VERSION};
use super::manifest::{ImageSet, Item, DOCKER_CONFIG, DOCKER_LAYER, DOCKER_MANIFEST};
use super::tarfmt::{self, Kind, BLOCK};
use super::yaml::{self, Node};

pub const LOCATIONS_KIND: &str = "ImageLocations";
pub const LOCATIONS_FILE: &str = "image-locations.yml";

/// One `images:` entry of an ImageLocations file.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Location {
    /// The image's original reference from `images.yml`, normalised.
    pub image: String,
    pub is_bundle: bool,
}

/// A bundle's ImageLocations entries plus the nested bundles to visit next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BundleWalk {
    pub locations: Vec<Location>,
    pub nested_bundles: Vec<Digest>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct WalkError(pub String);

/// Resolves a bundle's `images.yml` against the tar's top-level items, by digest, as imgpkg
/// does after a tar import: every entry must be in the tar; an entry is a bundle when it is
/// an image whose config has the bundle label.
pub fn walk_bundle(
    set: &ImageSet,
    bundle: &Digest,
    lock: &ImagesLock,
) -> Result<BundleWalk, WalkError> {
    // Keyed by the normalised string: imgpkg's image-ref cache deduplicates that way.
    let mut by_name: BTreeMap<String, (Digest, bool)> = BTreeMap::new();
    for entry in &lock.images {
        let name = entry.image.name();
        let Some(top) = set.top_level(&entry.image.digest) else {
            return Err(WalkError(format!(
                "images.yml of bundle {bundle} lists {name}, which is not in the tar"
            )));
        };
        let is_bundle = matches!(&top.item, Item::Image(i) if i.is_bundle);
        by_name.insert(name, (entry.image.digest.clone(), is_bundle));
    }
    // imgpkg writes one location per digest and then insists the count equals the number
    // of distinct references; two references to one digest make it panic. Refuse instead.
    let mut digests: BTreeMap<&Digest, &str> = BTreeMap::new();
    for (name, (digest, _)) in &by_name {
        if let Some(other) = digests.insert(digest, name) {
            return Err(WalkError(format!(
                "images.yml of bundle {bundle} lists {digest} under two references ({other} and {name}); imgpkg cannot relocate that either"
            )));
        }
    }
    let locations = by_name
        .iter()
        .map(|(name, (_, is_bundle))| Location {
            image: name.clone(),
            is_bundle: *is_bundle,
        })
        .collect();
    let nested_bundles = by_name
        .values()
        .filter(|(_, b)| *b)
        .map(|(d, _)| d.clone())
        .collect();
    Ok(BundleWalk {
        locations,
        nested_bundles,
    })
}

/// The `image-locations.yml` bytes imgpkg writes for these entries.
pub fn locations_yaml(locations: &[Location]) -> Vec<u8> {
    let mut sorted = locations.to_vec();
    sorted.sort_by(|a, b| a.image.cmp(&b.image));
    let images = if sorted.is_empty() {
        Node::Null
    } else {
        Node::Seq(
            sorted
                .into_iter()
                .map(|l| {
                    Node::Map(vec![
                        ("image".to_owned(), Node::Str(l.image)),
                        ("isBundle".to_owned(), Node::Bool(l.is_bundle)),
                    ])
                })
                .collect(),
        )
    };
    let doc = Node::Map(vec![
        ("apiVersion".to_owned(), Node::Str(API_VERSION.to_owned())),
        ("images".to_owned(), images),
        ("kind".to_owned(), Node::Str(LOCATIONS_KIND.to_owned())),
    ]);
    format!("---\n{}", yaml::to_string(&doc)).into_bytes()
}

/// The uncompressed layer: a tar of `.` (dir, 0700) and `image-locations.yml` (0600), as
/// imgpkg's directory-to-image code writes it.
pub fn layer_tar(yaml: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 * BLOCK + yaml.len());
    // Both names are short constants, so the headers always fit.
    if let Some(dir) = tarfmt::ustar_header(".", 0o700, 0, Kind::Directory) {
        out.extend_from_slice(&dir);
    }
    if let Some(file) =
        tarfmt::ustar_header(LOCATIONS_FILE, 0o600, yaml.len() as u64, Kind::Regular)
    {
        out.extend_from_slice(&file);
    }
    out.extend_from_slice(yaml);
    out.resize(out.len() + tarfmt::padding(yaml.len() as u64) as usize, 0);
    // Go's tar writer ends with two zero blocks and no record padding.
    out.resize(out.len() + 2 * BLOCK, 0);
    out
}

/// go-containerregistry's config for a one-layer image built on `empty.Image` with
/// imgpkg's history entry, in ggcr's field order.
pub fn config_json(diff_id: &Digest) -> String {
    format!(
        concat!(
            r#"{{"architecture":"","created":"0001-01-01T00:00:00Z","#,
            r#""history":[{{"author":"imgpkg","created":"0001-01-01T00:00:00Z","created_by":"imgpkg"}}],"#,
            r#""os":"","rootfs":{{"type":"layers","diff_ids":["{}"]}},"config":{{}}}}"#
        ),
        diff_id
    )
}

/// ggcr's Docker schema 2 manifest for one config and one layer.
pub fn manifest_json(config: (&Digest, u64), layer: (&Digest, u64)) -> String {
    format!(
        concat!(
            r#"{{"schemaVersion":2,"mediaType":"{}","#,
            r#""config":{{"mediaType":"{}","size":{},"digest":"{}"}},"#,
            r#""layers":[{{"mediaType":"{}","size":{},"digest":"{}"}}]}}"#
        ),
        DOCKER_MANIFEST, DOCKER_CONFIG, config.1, config.0, DOCKER_LAYER, layer.1, layer.0
    )
}

/// A built ImageLocations image, ready to store.
#[derive(Clone, Debug)]
pub struct LocationsImage {
    pub yaml: Vec<u8>,
    pub diff_id: Digest,
    pub layer: Vec<u8>,
    pub layer_digest: Digest,
    pub config: Vec<u8>,
    pub config_digest: Digest,
    pub manifest: Vec<u8>,
    pub manifest_digest: Digest,
}

impl LocationsImage {
    pub fn build(locations: &[Location]) -> LocationsImage {
        let yaml = locations_yaml(locations);
        let tar = layer_tar(&yaml);
        let diff_id = Digest::of(Algorithm::Sha256, &tar);
        let layer = super::gzip::stored_gzip(&tar);
        let layer_digest = Digest::of(Algorithm::Sha256, &layer);
        let config = config_json(&diff_id).into_bytes();
        let config_digest = Digest::of(Algorithm::Sha256, &config);
        let manifest = manifest_json(
            (&config_digest, config.len() as u64),
            (&layer_digest, layer.len() as u64),
        )
        .into_bytes();
        let manifest_digest = Digest::of(Algorithm::Sha256, &manifest);
        LocationsImage {
            yaml,
            diff_id,
            layer,
            layer_digest,
            config,
            config_digest,
            manifest,
            manifest_digest,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIX: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/imgpkg/expected"
    );

    fn read(path: &str) -> Vec<u8> {
        std::fs::read(format!("{FIX}/{path}")).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    fn guestbook_locations() -> Vec<Location> {
        [
            "app2@sha256:7b0d257cb27fbe7158a14f8445924c197116831360a72989ca960350610227ff",
            "twolayer@sha256:cb056d6afc8d2f88125cab68e9c67479448a3d812ea6f84f83405ee09bd99980",
            "app1@sha256:8872a0d0ff55685f8d255ebcebf9c677a820d735a81955406795badb172fc79f",
        ]
        .iter()
        .map(|s| Location {
            image: format!("127.0.0.1:5000/src/{s}"),
            is_bundle: false,
        })
        .collect()
    }

    const GB: &str = "sha256-761c0665f7d84df2bbbd3f356246464572d85aa8b451368b629659907cf800c7";

    #[test]
    fn yaml_matches_imgpkg() {
        let want = read(&format!(
            "guestbook-bundle/registry/locations.{GB}.image-locations.imgpkg.image-locations.yml"
        ));
        assert_eq!(locations_yaml(&guestbook_locations()), want);
        let platform = vec![
            Location {
                image: "127.0.0.1:5000/src/guestbook-bundle@sha256:761c0665f7d84df2bbbd3f356246464572d85aa8b451368b629659907cf800c7".into(),
                is_bundle: true,
            },
            Location {
                image: "127.0.0.1:5000/src/app3@sha256:c6e33ad0a6322df245f02fd6df24f541209d20f8147ff8f4599ad5014047ac46".into(),
                is_bundle: false,
            },
        ];
        let want = read("platform-bundle/registry/locations.sha256-6a2b8f21c8169a8406833245bdb63ce7a817db3ee3a618cc51bb03bc0755752f.image-locations.imgpkg.image-locations.yml");
        assert_eq!(locations_yaml(&platform), want);
        assert_eq!(
            locations_yaml(&[]),
            b"---\napiVersion: imgpkg.carvel.dev/v1alpha1\nimages: null\nkind: ImageLocations\n"
        );
    }

    #[test]
    fn config_and_manifest_match_imgpkg_bytes() {
        let theirs_manifest = read(&format!(
            "guestbook-bundle/registry/manifest.{GB}.image-locations.imgpkg.json"
        ));
        let theirs: serde_json::Value = serde_json::from_slice(&theirs_manifest).expect("json");
        let ours = LocationsImage::build(&guestbook_locations());
        // Same uncompressed layer => same DiffID => byte-identical config and digest.
        assert_eq!(
            ours.config.len() as u64,
            theirs["config"]["size"].as_u64().expect("size")
        );
        assert_eq!(
            ours.config_digest.to_string(),
            theirs["config"]["digest"].as_str().expect("digest")
        );
        // Given their layer, our manifest writer reproduces their manifest byte for byte.
        let their_layer =
            Digest::parse(theirs["layers"][0]["digest"].as_str().expect("d")).expect("digest");
        let their_size = theirs["layers"][0]["size"].as_u64().expect("size");
        let rebuilt = manifest_json(
            (&ours.config_digest, ours.config.len() as u64),
            (&their_layer, their_size),
        );
        assert_eq!(rebuilt.as_bytes(), &theirs_manifest[..]);
        assert_eq!(
            Digest::of(Algorithm::Sha256, rebuilt.as_bytes()).to_string(),
            "sha256:ac72db5e03c146559687326cb790b7ab415f020a2540e7e3adbe0ba26f0dc5db"
        );
        // Our own manifest is well-formed and self-consistent.
        assert_eq!(
            ours.layer_digest,
            Digest::of(Algorithm::Sha256, &ours.layer)
        );
        assert_eq!(
            ours.manifest_digest,
            Digest::of(Algorithm::Sha256, &ours.manifest)
        );
    }

    #[test]
    fn deterministic() {
        let a = LocationsImage::build(&guestbook_locations());
        let mut reversed = guestbook_locations();
        reversed.reverse();
        let b = LocationsImage::build(&reversed);
        assert_eq!(a.manifest_digest, b.manifest_digest);
    }
}
