//! The JSON documents of docker / OCI archives, as far as the import reads them: docker's
//! `manifest.json`, OCI's `oci-layout`, `index.json` and image manifests / indexes, an image
//! config's `rootfs.diff_ids`, and the Docker schema 2 manifest the import writes for a
//! classic `docker save` image. Pure (bytes in, values out), fuzzed
//! (`fuzz/fuzz_targets/archive_json.rs`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use airdock_storage::Digest;

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
/// An uncompressed layer: what `docker save` writes, whose digest is its DiffID.
pub const DOCKER_LAYER_TAR: &str = "application/vnd.docker.image.rootfs.diff.tar";
pub const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
/// The annotation OCI layouts name images by (often just the tag).
pub const REF_NAME: &str = "org.opencontainers.image.ref.name";
/// The full reference containerd and docker ≥ 25 add beside it.
pub const CONTAINERD_NAME: &str = "io.containerd.image.name";

/// A malformed document; the importer adds the entry name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ModelError(pub String);

fn json_err(e: serde_json::Error) -> ModelError {
    ModelError(format!("invalid JSON: {e}"))
}

/// One image of docker's `manifest.json`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DockerImage {
    /// Archive path of the config (`<hex>.json`, or `blobs/sha256/<hex>` from docker ≥ 25).
    pub config: String,
    /// `name:tag` references; `null` for an image saved by id.
    #[serde(default)]
    pub repo_tags: Option<Vec<String>>,
    /// Archive paths of the layers, base first.
    pub layers: Vec<String>,
}

/// Parses docker's `manifest.json` (a JSON array of images).
pub fn parse_docker_manifest(bytes: &[u8]) -> Result<Vec<DockerImage>, ModelError> {
    let images: Vec<DockerImage> = serde_json::from_slice(bytes).map_err(json_err)?;
    if images.is_empty() {
        return Err(ModelError("lists no image".into()));
    }
    Ok(images)
}

/// An OCI descriptor with the fields the import checks.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    #[serde(default)]
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
}

/// `oci-layout`: only version 1.0.0 exists.
pub fn check_oci_layout(bytes: &[u8]) -> Result<(), ModelError> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Layout {
        image_layout_version: String,
    }
    let l: Layout = serde_json::from_slice(bytes).map_err(json_err)?;
    if l.image_layout_version != "1.0.0" {
        return Err(ModelError(format!(
            "imageLayoutVersion {:?}; only 1.0.0 is known",
            l.image_layout_version
        )));
    }
    Ok(())
}

/// A manifest or index, reduced to what it references.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    Image {
        media_type: String,
        config: Descriptor,
        layers: Vec<Descriptor>,
    },
    Index {
        media_type: String,
        manifests: Vec<Descriptor>,
    },
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawManifest {
    schema_version: Option<i64>,
    #[serde(default)]
    media_type: Option<String>,
    #[serde(default)]
    config: Option<Descriptor>,
    #[serde(default)]
    layers: Option<Vec<Descriptor>>,
    #[serde(default)]
    manifests: Option<Vec<Descriptor>>,
}

pub fn is_index(media_type: &str) -> bool {
    media_type == OCI_INDEX || media_type == DOCKER_LIST
}

pub fn is_manifest(media_type: &str) -> bool {
    media_type == OCI_MANIFEST || media_type == DOCKER_MANIFEST
}

/// Parses a manifest or index (`index.json` included). `described_as` is the media type its
/// descriptor gave, used when the document carries none (OCI allows that).
pub fn parse_manifest(bytes: &[u8], described_as: &str) -> Result<Parsed, ModelError> {
    let raw: RawManifest = serde_json::from_slice(bytes).map_err(json_err)?;
    if raw.schema_version != Some(2) {
        return Err(ModelError("schemaVersion is not 2".into()));
    }
    let media_type = match (raw.media_type, described_as) {
        (Some(m), d) if !d.is_empty() && m != d => {
            return Err(ModelError(format!(
                "mediaType {m:?} differs from its descriptor's {d:?}"
            )))
        }
        (Some(m), _) => m,
        (None, d) if !d.is_empty() => d.to_owned(),
        // Neither says: decide by shape, as the OCI spec's guidance for index.json implies.
        (None, _) if raw.manifests.is_some() => OCI_INDEX.to_owned(),
        (None, _) => OCI_MANIFEST.to_owned(),
    };
    if is_index(&media_type) {
        if raw.config.is_some() || raw.layers.is_some() {
            return Err(ModelError("an index with config or layers".into()));
        }
        return Ok(Parsed::Index {
            media_type,
            manifests: raw.manifests.unwrap_or_default(),
        });
    }
    if !is_manifest(&media_type) {
        return Err(ModelError(format!("unsupported media type {media_type:?}")));
    }
    let config = raw
        .config
        .ok_or_else(|| ModelError("an image manifest without config".into()))?;
    if raw.manifests.is_some() {
        return Err(ModelError("an image manifest with manifests".into()));
    }
    Ok(Parsed::Image {
        media_type,
        config,
        layers: raw.layers.unwrap_or_default(),
    })
}

/// An image config's `rootfs.diff_ids`: the digests of the uncompressed layers, base first.
pub fn parse_diff_ids(config: &[u8]) -> Result<Vec<Digest>, ModelError> {
    #[derive(Deserialize)]
    struct Config {
        rootfs: RootFs,
    }
    #[derive(Deserialize)]
    struct RootFs {
        #[serde(rename = "type")]
        kind: String,
        diff_ids: Vec<Digest>,
    }
    let c: Config = serde_json::from_slice(config).map_err(json_err)?;
    if c.rootfs.kind != "layers" {
        return Err(ModelError(format!(
            "rootfs.type {:?}, not \"layers\"",
            c.rootfs.kind
        )));
    }
    Ok(c.rootfs.diff_ids)
}

/// A blob as the written manifest references it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
struct OutDescriptor<'a> {
    media_type: &'a str,
    size: u64,
    digest: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct OutManifest<'a> {
    schema_version: u32,
    media_type: &'a str,
    config: OutDescriptor<'a>,
    layers: Vec<OutDescriptor<'a>>,
}

/// The Docker schema 2 manifest of a classic `docker save` image: config and layers as they
/// are in the archive (`layers`: digest, size, media type), so the same archive always gives
/// the same manifest digest.
pub fn docker_manifest(config: (&Digest, u64), layers: &[(Digest, u64, &'static str)]) -> Vec<u8> {
    let m = OutManifest {
        schema_version: 2,
        media_type: DOCKER_MANIFEST,
        config: OutDescriptor {
            media_type: DOCKER_CONFIG,
            size: config.1,
            digest: config.0.to_string(),
        },
        layers: layers
            .iter()
            .map(|(d, size, mt)| OutDescriptor {
                media_type: mt,
                size: *size,
                digest: d.to_string(),
            })
            .collect(),
    };
    // Serialising plain strings and numbers cannot fail.
    serde_json::to_vec_pretty(&m).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(c: char) -> String {
        format!("sha256:{}", c.to_string().repeat(64))
    }

    #[test]
    fn docker_manifest_json_parses() {
        let j = format!(
            r#"[{{"Config":"{0}.json","RepoTags":["a:1"],"Layers":["x/layer.tar"]}},
               {{"Config":"c.json","RepoTags":null,"Layers":[]}}]"#,
            "a".repeat(64)
        );
        let v = parse_docker_manifest(j.as_bytes()).expect("ok");
        assert_eq!(v.len(), 2);
        assert_eq!(v[0].repo_tags.as_deref(), Some(&["a:1".to_owned()][..]));
        assert_eq!(v[1].repo_tags, None);
        assert!(parse_docker_manifest(b"[]").is_err());
        assert!(parse_docker_manifest(b"{}").is_err());
    }

    #[test]
    fn manifests_and_indexes_parse_with_their_references() {
        let m = format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}",
              "config":{{"mediaType":"x","digest":"{}","size":3}},
              "layers":[{{"mediaType":"y","digest":"{}","size":5}}]}}"#,
            d('a'),
            d('b')
        );
        match parse_manifest(m.as_bytes(), "").expect("ok") {
            Parsed::Image { config, layers, .. } => {
                assert_eq!(config.size, 3);
                assert_eq!(layers[0].size, 5);
            }
            other => panic!("{other:?}"),
        }
        assert!(parse_manifest(m.as_bytes(), OCI_INDEX).is_err());
        let i = format!(
            r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"{OCI_MANIFEST}","digest":"{}","size":7,
              "annotations":{{"{REF_NAME}":"v1"}}}}]}}"#,
            d('c')
        );
        match parse_manifest(i.as_bytes(), "").expect("ok") {
            Parsed::Index { manifests, .. } => {
                assert_eq!(manifests[0].annotations[REF_NAME], "v1")
            }
            other => panic!("{other:?}"),
        }
        // Negative sizes, bad digests and wrong schema versions are refused.
        assert!(parse_manifest(br#"{"schemaVersion":1}"#, "").is_err());
        let neg = i.replace("\"size\":7", "\"size\":-7");
        assert!(parse_manifest(neg.as_bytes(), "").is_err());
    }

    #[test]
    fn diff_ids_and_layout_version() {
        let c = format!(
            r#"{{"rootfs":{{"type":"layers","diff_ids":["{}"]}}}}"#,
            d('a')
        );
        assert_eq!(parse_diff_ids(c.as_bytes()).expect("ok").len(), 1);
        assert!(parse_diff_ids(br#"{"rootfs":{"type":"x","diff_ids":[]}}"#).is_err());
        assert!(check_oci_layout(br#"{"imageLayoutVersion":"1.0.0"}"#).is_ok());
        assert!(check_oci_layout(br#"{"imageLayoutVersion":"2"}"#).is_err());
    }

    #[test]
    fn written_manifest_is_schema2_and_parses_back() {
        let cfg = Digest::parse(&d('a')).expect("ok");
        let layer = Digest::parse(&d('b')).expect("ok");
        let bytes = docker_manifest((&cfg, 10), &[(layer.clone(), 20, DOCKER_LAYER_TAR)]);
        match parse_manifest(&bytes, DOCKER_MANIFEST).expect("ok") {
            Parsed::Image { config, layers, .. } => {
                assert_eq!(config.digest, cfg);
                assert_eq!(config.media_type, DOCKER_CONFIG);
                assert_eq!((layers[0].digest.clone(), layers[0].size), (layer, 20));
                assert_eq!(layers[0].media_type, DOCKER_LAYER_TAR);
            }
            other => panic!("{other:?}"),
        }
    }
}
