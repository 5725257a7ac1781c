//! imgpkg's `manifest.json`: the serde model of what `imgpkg copy --to-tar` writes, and its
//! validation into an [`ImageSet`] in which every digest has been checked.
//!
//! imgpkg itself trusts the digests it stored (see the format doc, §6); we verify all of
//! them before anything becomes visible: every inline `Raw` manifest, index and config hashes
//! to its digest, `Refs[0]` names the same digest, the manifest's config and layer list agree
//! with the descriptor, and index children correspond one-to-one with the index JSON.

use std::collections::{BTreeMap, HashMap};

use serde::Deserialize;

use airdock_storage::Digest;

use super::names::truncate;
use super::refs::DigestRef;

/// Label on the top-level descriptor that marks the root bundle of a bundle copy.
pub const ROOT_BUNDLE_LABEL: &str = "dev.carvel.imgpkg.copy.root-bundle";
/// Config label that makes an image a bundle.
pub const BUNDLE_CONFIG_LABEL: &str = "dev.carvel.imgpkg.bundle";

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";

/// Layer media types go-containerregistry treats as non-distributable ("foreign").
const NON_DISTRIBUTABLE: &[&str] = &[
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
    "application/vnd.oci.image.layer.nondistributable.v1.tar",
];

pub fn is_index_media_type(mt: &str) -> bool {
    mt == OCI_INDEX || mt == DOCKER_LIST
}

pub fn is_image_media_type(mt: &str) -> bool {
    mt == OCI_MANIFEST || mt == DOCKER_MANIFEST
}

pub fn is_distributable(layer_media_type: &str) -> bool {
    !NON_DISTRIBUTABLE.contains(&layer_media_type)
}

// ---- serde model of manifest.json (Go field names, nulls everywhere) ----

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RawElement {
    #[serde(default)]
    image_index: Option<RawIndex>,
    #[serde(default)]
    image: Option<RawImage>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RawImage {
    #[serde(default)]
    refs: Option<Vec<String>>,
    #[serde(default)]
    layers: Option<Vec<RawLayer>>,
    config: RawConfig,
    manifest: RawManifest,
    #[serde(default)]
    tag: Option<String>,
    #[serde(default)]
    orig_ref: Option<String>,
    #[serde(default)]
    labels: Option<BTreeMap<String, String>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RawLayer {
    media_type: String,
    digest: String,
    size: i64,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RawConfig {
    digest: String,
    raw: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RawManifest {
    media_type: String,
    digest: String,
    raw: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RawIndex {
    #[serde(default)]
    refs: Option<Vec<String>>,
    #[serde(default)]
    images: Option<Vec<RawImage>>,
    #[serde(default)]
    indexes: Option<Vec<RawIndex>>,
    media_type: String,
    digest: String,
    raw: String,
    #[serde(default)]
    tag: Option<String>,
    #[serde(default)]
    orig_ref: Option<String>,
    // `Labels` is not read: indexes are never the root bundle.
}

// ---- the shape of registry manifests, as far as we check them ----

#[derive(Deserialize)]
struct ManifestJson {
    config: Option<DescriptorJson>,
    #[serde(default)]
    layers: Option<Vec<DescriptorJson>>,
}

#[derive(Deserialize)]
struct IndexJson {
    #[serde(default)]
    manifests: Option<Vec<DescriptorJson>>,
}

#[derive(Deserialize)]
struct DescriptorJson {
    #[serde(rename = "mediaType", default)]
    media_type: String,
    digest: String,
    size: i64,
}

#[derive(Deserialize)]
struct ConfigJson {
    #[serde(default)]
    config: Option<ConfigConfigJson>,
}

#[derive(Deserialize)]
struct ConfigConfigJson {
    #[serde(rename = "Labels", default)]
    labels: Option<BTreeMap<String, serde_json::Value>>,
}

// ---- the validated model ----

/// A layer as the manifest and `manifest.json` describe it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layer {
    pub digest: Digest,
    pub size: u64,
    pub media_type: String,
}

/// An image manifest with its config, verified.
#[derive(Clone, Debug)]
pub struct Image {
    pub digest: Digest,
    /// The Content-Type the source registry served (what imgpkg PUTs with).
    pub media_type: String,
    pub manifest: String,
    pub config_digest: Digest,
    pub config: String,
    pub layers: Vec<Layer>,
    /// An image manifest whose config carries the bundle label.
    pub is_bundle: bool,
    pub source_ref: String,
}

/// An index / manifest list with its children, verified.
#[derive(Clone, Debug)]
pub struct Index {
    pub digest: Digest,
    pub media_type: String,
    pub manifest: String,
    pub images: Vec<Image>,
    pub indexes: Vec<Index>,
    pub source_ref: String,
}

#[derive(Clone, Debug)]
pub enum Item {
    Image(Image),
    Index(Index),
}

impl Item {
    pub fn digest(&self) -> &Digest {
        match self {
            Item::Image(i) => &i.digest,
            Item::Index(i) => &i.digest,
        }
    }

    pub fn media_type(&self) -> &str {
        match self {
            Item::Image(i) => &i.media_type,
            Item::Index(i) => &i.media_type,
        }
    }

    pub fn as_image(&self) -> Option<&Image> {
        match self {
            Item::Image(i) => Some(i),
            Item::Index(_) => None,
        }
    }
}

/// A top-level element of `manifest.json`.
#[derive(Clone, Debug)]
pub struct TopItem {
    pub item: Item,
    /// The original tag to recreate (`None` for `""`).
    pub tag: Option<String>,
    /// `OrigRef`, or `Refs[0]` when the tar predates `OrigRef`.
    pub orig_ref: String,
    pub is_root_bundle: bool,
}

/// Everything `manifest.json` describes, verified.
#[derive(Clone, Debug)]
pub struct ImageSet {
    pub items: Vec<TopItem>,
}

/// A problem with `manifest.json`; `location` says which element.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{location}: {message}")]
pub struct ManifestError {
    pub location: String,
    pub message: String,
}

fn err(location: &str, message: impl Into<String>) -> ManifestError {
    ManifestError {
        location: location.to_owned(),
        message: message.into(),
    }
}

/// Parses and verifies `manifest.json`.
pub fn parse(bytes: &[u8]) -> Result<ImageSet, ManifestError> {
    let raw: Vec<RawElement> = serde_json::from_slice(bytes).map_err(|e| {
        err(
            "manifest.json",
            format!(
                "not imgpkg's manifest.json (a JSON array of Image/ImageIndex descriptors): {e}"
            ),
        )
    })?;
    if raw.is_empty() {
        return Err(err("manifest.json", "describes no images"));
    }
    let mut items = Vec::with_capacity(raw.len());
    for (i, el) in raw.into_iter().enumerate() {
        let loc = format!("manifest.json element {i}");
        let top = match (el.image, el.image_index) {
            (Some(img), None) => {
                let tag = img.tag.clone().filter(|t| !t.is_empty());
                let labels = img.labels.clone().unwrap_or_default();
                let orig_ref = img.orig_ref.clone().filter(|r| !r.is_empty());
                let image = validate_image(img, &loc)?;
                TopItem {
                    orig_ref: orig_ref.unwrap_or_else(|| image.source_ref.clone()),
                    tag,
                    is_root_bundle: labels.contains_key(ROOT_BUNDLE_LABEL),
                    item: Item::Image(image),
                }
            }
            (None, Some(idx)) => {
                let tag = idx.tag.clone().filter(|t| !t.is_empty());
                let orig_ref = idx.orig_ref.clone().filter(|r| !r.is_empty());
                let index = validate_index(idx, &loc, 0)?;
                TopItem {
                    orig_ref: orig_ref.unwrap_or_else(|| index.source_ref.clone()),
                    tag,
                    // Indexes are never the root bundle, whatever their labels say.
                    is_root_bundle: false,
                    item: Item::Index(index),
                }
            }
            (Some(_), Some(_)) => return Err(err(&loc, "has both Image and ImageIndex set")),
            (None, None) => return Err(err(&loc, "has neither Image nor ImageIndex set")),
        };
        if let Some(tag) = &top.tag {
            if !valid_tag(tag) {
                return Err(err(
                    &loc,
                    format!("Tag {:?} is not a valid tag", truncate(tag, 200)),
                ));
            }
        }
        items.push(top);
    }
    let roots = items.iter().filter(|t| t.is_root_bundle).count();
    if roots > 1 {
        return Err(err(
            "manifest.json",
            format!("{roots} elements carry the {ROOT_BUNDLE_LABEL} label; at most one root bundle is possible"),
        ));
    }
    let set = ImageSet { items };
    set.check_consistency()?;
    Ok(set)
}

/// The OCI distribution spec's tag grammar.
fn valid_tag(tag: &str) -> bool {
    let b = tag.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b.iter()
            .all(|&c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
}

fn parse_digest(s: &str, loc: &str, field: &str) -> Result<Digest, ManifestError> {
    Digest::parse(s).map_err(|_| {
        err(
            loc,
            format!("{field} {:?} is not a valid digest", truncate(s, 200)),
        )
    })
}

/// Whether inline `raw` bytes hash to `digest` (with its algorithm).
fn hashes_to(digest: &Digest, raw: &str) -> bool {
    Digest::of(digest.algorithm(), raw.as_bytes()) == *digest
}

/// `Refs[0]` must be a digest reference to the item itself (imgpkg derives the upload tag
/// from it and verifies against the descriptor digest).
fn check_refs(
    refs: Option<Vec<String>>,
    digest: &Digest,
    loc: &str,
) -> Result<String, ManifestError> {
    let Some(first) = refs.and_then(|r| r.into_iter().next()) else {
        return Err(err(loc, "Refs is empty"));
    };
    let parsed = DigestRef::parse(&first)
        .map_err(|e| err(loc, format!("Refs[0] is not a digest reference: {e}")))?;
    if &parsed.digest != digest {
        return Err(err(
            loc,
            format!(
                "Refs[0] {:?} does not name the manifest digest {digest}",
                truncate(&first, 300)
            ),
        ));
    }
    Ok(first)
}

fn size_of(v: i64, loc: &str, what: &str) -> Result<u64, ManifestError> {
    u64::try_from(v).map_err(|_| err(loc, format!("{what} has negative size {v}")))
}

fn validate_image(img: RawImage, loc: &str) -> Result<Image, ManifestError> {
    let digest = parse_digest(&img.manifest.digest, loc, "Manifest.Digest")?;
    let loc = &format!("{loc} ({digest})");
    if !hashes_to(&digest, &img.manifest.raw) {
        return Err(err(loc, "Manifest.Raw does not hash to Manifest.Digest"));
    }
    if is_index_media_type(&img.manifest.media_type) {
        return Err(err(
            loc,
            format!("an Image with index media type {}", img.manifest.media_type),
        ));
    }
    let source_ref = check_refs(img.refs, &digest, loc)?;
    let parsed: ManifestJson = serde_json::from_str(&img.manifest.raw)
        .map_err(|e| err(loc, format!("Manifest.Raw is not an image manifest: {e}")))?;

    let config_digest = parse_digest(&img.config.digest, loc, "Config.Digest")?;
    let Some(cfg) = parsed.config else {
        return Err(err(loc, "Manifest.Raw has no config descriptor"));
    };
    if cfg.digest != config_digest.to_string() {
        return Err(err(
            loc,
            format!(
                "Manifest.Raw names config {} but Config.Digest is {config_digest}",
                truncate(&cfg.digest, 200)
            ),
        ));
    }
    if !hashes_to(&config_digest, &img.config.raw) {
        return Err(err(loc, "Config.Raw does not hash to Config.Digest"));
    }
    if size_of(cfg.size, loc, "config")? != img.config.raw.len() as u64 {
        return Err(err(
            loc,
            "Config.Raw length differs from the config size in the manifest",
        ));
    }

    let mut layers = Vec::new();
    for (n, l) in img.layers.unwrap_or_default().into_iter().enumerate() {
        layers.push(Layer {
            digest: parse_digest(&l.digest, loc, &format!("Layers[{n}].Digest"))?,
            size: size_of(l.size, loc, &format!("Layers[{n}]"))?,
            media_type: l.media_type,
        });
    }
    let in_manifest = parsed.layers.unwrap_or_default();
    if in_manifest.len() != layers.len() {
        return Err(err(
            loc,
            format!(
                "Manifest.Raw lists {} layers but Layers has {}",
                in_manifest.len(),
                layers.len()
            ),
        ));
    }
    for (n, (m, l)) in in_manifest.iter().zip(&layers).enumerate() {
        if m.digest != l.digest.to_string()
            || m.size != l.size as i64
            || m.media_type != l.media_type
        {
            return Err(err(
                loc,
                format!("layer {n} in Manifest.Raw differs from Layers[{n}]"),
            ));
        }
    }

    let is_bundle = is_image_media_type(&img.manifest.media_type) && {
        let cfg: ConfigJson = serde_json::from_str(&img.config.raw)
            .map_err(|e| err(loc, format!("Config.Raw is not an image config: {e}")))?;
        cfg.config
            .and_then(|c| c.labels)
            .is_some_and(|l| l.contains_key(BUNDLE_CONFIG_LABEL))
    };

    Ok(Image {
        digest,
        media_type: img.manifest.media_type,
        manifest: img.manifest.raw,
        config_digest,
        config: img.config.raw,
        layers,
        is_bundle,
        source_ref,
    })
}

fn validate_index(idx: RawIndex, loc: &str, depth: usize) -> Result<Index, ManifestError> {
    // serde_json's recursion limit already bounds this; keep our own walk shallow too.
    if depth > 16 {
        return Err(err(loc, "indexes nested too deeply"));
    }
    let digest = parse_digest(&idx.digest, loc, "Digest")?;
    let loc = &format!("{loc} ({digest})");
    if !hashes_to(&digest, &idx.raw) {
        return Err(err(loc, "index Raw does not hash to Digest"));
    }
    if !is_index_media_type(&idx.media_type) {
        return Err(err(
            loc,
            format!(
                "an ImageIndex with media type {:?}",
                truncate(&idx.media_type, 200)
            ),
        ));
    }
    let source_ref = check_refs(idx.refs, &digest, loc)?;
    let parsed: IndexJson = serde_json::from_str(&idx.raw)
        .map_err(|e| err(loc, format!("index Raw is not an image index: {e}")))?;

    let mut images: HashMap<String, Image> = HashMap::new();
    for (n, child) in idx.images.unwrap_or_default().into_iter().enumerate() {
        let child = validate_image(child, &format!("{loc} child image {n}"))?;
        images.insert(child.digest.to_string(), child);
    }
    let mut indexes: HashMap<String, Index> = HashMap::new();
    for (n, child) in idx.indexes.unwrap_or_default().into_iter().enumerate() {
        let child = validate_index(child, &format!("{loc} child index {n}"), depth + 1)?;
        indexes.insert(child.digest.to_string(), child);
    }

    let mut out_images: Vec<Image> = Vec::new();
    let mut out_indexes: Vec<Index> = Vec::new();
    // Sizes of children already taken, so a digest listed twice (say, for two platforms)
    // is checked but stored once.
    let mut taken: HashMap<String, u64> = HashMap::new();
    for d in parsed.manifests.unwrap_or_default() {
        let size = size_of(d.size, loc, "child")?;
        let missing = |kind: &str, list: &str| {
            let d = truncate(&d.digest, 200);
            err(loc, format!("child {kind} {d} is missing from {list}"))
        };
        let child_len = if let Some(&len) = taken.get(&d.digest) {
            len
        } else if is_index_media_type(&d.media_type) {
            let child = indexes
                .remove(&d.digest)
                .ok_or_else(|| missing("index", "Indexes"))?;
            let len = child.manifest.len() as u64;
            out_indexes.push(child);
            len
        } else if is_image_media_type(&d.media_type) {
            let child = images
                .remove(&d.digest)
                .ok_or_else(|| missing("image", "Images"))?;
            let len = child.manifest.len() as u64;
            out_images.push(child);
            len
        } else {
            // imgpkg (via go-containerregistry) fails the same way on such children.
            return Err(err(
                loc,
                format!(
                    "encountered unknown child {} of media type {:?}",
                    truncate(&d.digest, 200),
                    truncate(&d.media_type, 200)
                ),
            ));
        };
        if child_len != size {
            return Err(err(
                loc,
                format!("child {} has a different size than in the index", d.digest),
            ));
        }
        taken.insert(d.digest, child_len);
    }
    if let Some(extra) = images.keys().chain(indexes.keys()).next() {
        return Err(err(
            loc,
            format!("child {extra} is not referenced by the index"),
        ));
    }
    Ok(Index {
        digest,
        media_type: idx.media_type,
        manifest: idx.raw,
        images: out_images,
        indexes: out_indexes,
        source_ref,
    })
}

/// A manifest to store: digest, media type and exact bytes.
#[derive(Clone, Copy, Debug)]
pub struct ManifestBytes<'a> {
    pub digest: &'a Digest,
    pub media_type: &'a str,
    pub bytes: &'a [u8],
}

/// A layer blob the set needs, with one image that uses it (for messages).
#[derive(Clone, Debug)]
pub struct LayerNeed<'a> {
    pub size: u64,
    pub media_type: &'a str,
    pub used_by: &'a Digest,
}

impl ImageSet {
    /// Every image, at any depth, each once per occurrence.
    pub fn all_images(&self) -> Vec<&Image> {
        fn walk_index<'a>(idx: &'a Index, out: &mut Vec<&'a Image>) {
            out.extend(idx.images.iter());
            for child in &idx.indexes {
                walk_index(child, out);
            }
        }
        let mut out = Vec::new();
        for top in &self.items {
            match &top.item {
                Item::Image(i) => out.push(i),
                Item::Index(idx) => walk_index(idx, &mut out),
            }
        }
        out
    }

    /// Every manifest to store, children before the indexes that list them, each digest
    /// once (imgpkg's write order within an item; across items order does not matter).
    pub fn manifests(&self) -> Vec<ManifestBytes<'_>> {
        fn push<'a>(m: ManifestBytes<'a>, out: &mut Vec<ManifestBytes<'a>>) {
            if !out.iter().any(|x| x.digest == m.digest) {
                out.push(m);
            }
        }
        fn image<'a>(i: &'a Image, out: &mut Vec<ManifestBytes<'a>>) {
            push(
                ManifestBytes {
                    digest: &i.digest,
                    media_type: &i.media_type,
                    bytes: i.manifest.as_bytes(),
                },
                out,
            );
        }
        fn index<'a>(idx: &'a Index, out: &mut Vec<ManifestBytes<'a>>) {
            for c in &idx.images {
                image(c, out);
            }
            for c in &idx.indexes {
                index(c, out);
            }
            push(
                ManifestBytes {
                    digest: &idx.digest,
                    media_type: &idx.media_type,
                    bytes: idx.manifest.as_bytes(),
                },
                out,
            );
        }
        let mut out = Vec::new();
        for top in &self.items {
            match &top.item {
                Item::Image(i) => image(i, &mut out),
                Item::Index(idx) => index(idx, &mut out),
            }
        }
        out
    }

    /// Distinct config blobs: digest and bytes.
    pub fn configs(&self) -> BTreeMap<&Digest, &str> {
        self.all_images()
            .into_iter()
            .map(|i| (&i.config_digest, i.config.as_str()))
            .collect()
    }

    /// Distinct layer blobs.
    pub fn layers(&self) -> BTreeMap<&Digest, LayerNeed<'_>> {
        let mut out = BTreeMap::new();
        for img in self.all_images() {
            for l in &img.layers {
                out.entry(&l.digest).or_insert(LayerNeed {
                    size: l.size,
                    media_type: &l.media_type,
                    used_by: &img.digest,
                });
            }
        }
        out
    }

    /// The root bundle, if this is a bundle tar.
    pub fn root_bundle(&self) -> Option<(&TopItem, &Image)> {
        self.items
            .iter()
            .find(|t| t.is_root_bundle)
            .and_then(|t| t.item.as_image().map(|i| (t, i)))
    }

    /// The top-level item with this digest (how imgpkg resolves `images.yml` entries).
    pub fn top_level(&self, digest: &Digest) -> Option<&TopItem> {
        self.items.iter().find(|t| t.item.digest() == digest)
    }

    /// Refuses sets in which one digest is described inconsistently (different sizes for
    /// one layer, different media types for one manifest): storing either would be wrong.
    fn check_consistency(&self) -> Result<(), ManifestError> {
        let mut sizes: HashMap<&Digest, u64> = HashMap::new();
        for img in self.all_images() {
            for l in &img.layers {
                if let Some(prev) = sizes.insert(&l.digest, l.size) {
                    if prev != l.size {
                        return Err(err(
                            "manifest.json",
                            format!(
                                "layer {} is listed with sizes {prev} and {}",
                                l.digest, l.size
                            ),
                        ));
                    }
                }
            }
        }
        let mut kinds: HashMap<&Digest, &str> = HashMap::new();
        for m in self.manifests_all_occurrences() {
            if let Some(prev) = kinds.insert(m.digest, m.media_type) {
                if prev != m.media_type {
                    return Err(err(
                        "manifest.json",
                        format!(
                            "manifest {} is listed with media types {prev} and {}",
                            m.digest, m.media_type
                        ),
                    ));
                }
            }
        }
        Ok(())
    }

    fn manifests_all_occurrences(&self) -> Vec<ManifestBytes<'_>> {
        fn index<'a>(idx: &'a Index, out: &mut Vec<ManifestBytes<'a>>) {
            for c in &idx.images {
                out.push(ManifestBytes {
                    digest: &c.digest,
                    media_type: &c.media_type,
                    bytes: c.manifest.as_bytes(),
                });
            }
            for c in &idx.indexes {
                index(c, out);
            }
            out.push(ManifestBytes {
                digest: &idx.digest,
                media_type: &idx.media_type,
                bytes: idx.manifest.as_bytes(),
            });
        }
        let mut out = Vec::new();
        for top in &self.items {
            match &top.item {
                Item::Image(i) => out.push(ManifestBytes {
                    digest: &i.digest,
                    media_type: &i.media_type,
                    bytes: i.manifest.as_bytes(),
                }),
                Item::Index(idx) => index(idx, &mut out),
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::imgpkg::stream::TarReader;

    pub(crate) async fn manifest_json_of(tar: &[u8]) -> Vec<u8> {
        let mut r = TarReader::new(tar);
        while let Some(e) = r.next_entry().await.expect("tar") {
            if e.name == b"manifest.json" {
                return r.read_entry_to_vec().await.expect("data");
            }
        }
        panic!("no manifest.json")
    }

    #[tokio::test]
    async fn parses_bundle_fixture() {
        let tar = include_bytes!("../../tests/fixtures/imgpkg/tars/platform-bundle.tar");
        let set = parse(&manifest_json_of(tar).await).expect("valid");
        assert_eq!(set.items.len(), 6);
        let (root, img) = set.root_bundle().expect("root");
        assert_eq!(root.tag.as_deref(), Some("1.0"));
        assert!(img.is_bundle);
        assert_eq!(
            img.digest.to_string(),
            "sha256:6a2b8f21c8169a8406833245bdb63ce7a817db3ee3a618cc51bb03bc0755752f"
        );
        let bundles: Vec<String> = set
            .items
            .iter()
            .filter_map(|t| t.item.as_image())
            .filter(|i| i.is_bundle)
            .map(|i| i.digest.to_string())
            .collect();
        assert_eq!(bundles.len(), 2);
        assert_eq!(set.layers().len(), 7);
        assert_eq!(set.manifests().len(), 6);
    }

    #[tokio::test]
    async fn parses_index_fixture() {
        let tar = include_bytes!("../../tests/fixtures/imgpkg/tars/multi-image.tar");
        let set = parse(&manifest_json_of(tar).await).expect("valid");
        assert_eq!(set.items.len(), 1);
        let Item::Index(idx) = &set.items[0].item else {
            panic!("index expected")
        };
        assert_eq!(idx.images.len(), 2);
        assert_eq!(set.items[0].tag.as_deref(), Some("v1"));
        assert!(set.root_bundle().is_none());
        let order: Vec<String> = set
            .manifests()
            .iter()
            .map(|m| m.digest.to_string())
            .collect();
        assert_eq!(
            order.last().map(String::as_str),
            Some("sha256:241e95e66ff93bca815ee0cc9c86e4ea4d43b63d4eee7010272d157bfff92618")
        );
        assert_eq!(order.len(), 3);
    }

    #[tokio::test]
    async fn detects_tampering() {
        let tar = include_bytes!("../../tests/fixtures/imgpkg/tars/guestbook-bundle.tar");
        let json = String::from_utf8(manifest_json_of(tar).await).expect("utf8");
        let cases = [
            // A changed byte inside a Raw manifest.
            ("\\\"schemaVersion\\\":2", "\\\"schemaVersion\\\":3"),
            // A config Raw edited.
            ("\\\"architecture\\\":\\\"\\\"", "\\\"architecture\\\":\\\"x\\\""),
            // A layer size edited in the descriptor.
            ("\"Size\":762", "\"Size\":763"),
            // Refs pointing at another digest.
            (
                "src/app2@sha256:7b0d257cb27fbe7158a14f8445924c197116831360a72989ca960350610227ff\"]",
                "src/app2@sha256:0b0d257cb27fbe7158a14f8445924c197116831360a72989ca960350610227ff\"]",
            ),
            ("\"Tag\":\"1.0\"", "\"Tag\":\"-bad\""),
        ];
        for (from, to) in cases {
            assert!(json.contains(from), "{from}");
            let bad = json.replacen(from, to, 1);
            assert!(parse(bad.as_bytes()).is_err(), "{from} -> {to} accepted");
        }
        for junk in [
            "",
            "{}",
            "[]",
            "null",
            "[{}]",
            "[{\"Image\":null,\"ImageIndex\":null}]",
            "not json",
        ] {
            assert!(parse(junk.as_bytes()).is_err(), "{junk}");
        }
    }
}
