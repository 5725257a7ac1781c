//! Understanding just enough of a manifest to keep the store consistent: what it references
//! (blobs, child manifests), its `subject` and the fields the referrers API reports.
//! The bytes themselves are stored untouched; this is read-only analysis.

use std::borrow::Cow;
use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

use crate::{Digest, StoreError};

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
const OCI_ARTIFACT: &str = "application/vnd.oci.artifact.manifest.v1+json";

/// Manifests above this size are refused; the spec asks registries to take at least 4 MiB.
pub const MAX_MANIFEST_BYTES: usize = 8 << 20;

/// Media types that most manifests and descriptors carry; [`MediaType::new`] shares them.
const COMMON_TYPES: &[&str] = &[
    OCI_MANIFEST,
    OCI_INDEX,
    DOCKER_MANIFEST,
    DOCKER_LIST,
    OCI_ARTIFACT,
    "application/vnd.oci.image.config.v1+json",
    "application/vnd.oci.image.layer.v1.tar",
    "application/vnd.oci.image.layer.v1.tar+gzip",
    "application/vnd.oci.image.layer.v1.tar+zstd",
    "application/vnd.oci.empty.v1+json",
    "application/vnd.docker.container.image.v1+json",
    "application/vnd.docker.image.rootfs.diff.tar.gzip",
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
];

/// A media type. The common ones are shared statics rather than copies: the in-memory
/// metadata holds several per manifest, and a registry holds many manifests.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MediaType(Cow<'static, str>);

impl MediaType {
    pub fn new(s: &str) -> MediaType {
        match COMMON_TYPES.iter().find(|c| **c == s) {
            Some(c) => MediaType(Cow::Borrowed(c)),
            None => MediaType(Cow::Owned(s.to_owned())),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::ops::Deref for MediaType {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for MediaType {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for MediaType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for MediaType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl PartialEq<str> for MediaType {
    fn eq(&self, other: &str) -> bool {
        *self.0 == *other
    }
}

impl PartialEq<&str> for MediaType {
    fn eq(&self, other: &&str) -> bool {
        *self.0 == **other
    }
}

impl Serialize for MediaType {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for MediaType {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = Cow::<str>::deserialize(d)?;
        Ok(MediaType::new(&s))
    }
}

/// A descriptor as it appears inside a manifest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Descriptor {
    #[serde(rename = "mediaType")]
    pub media_type: MediaType,
    pub digest: Digest,
    pub size: u64,
}

impl Descriptor {
    /// Layers the spec allows a registry not to hold ("non-distributable" / Docker "foreign").
    pub fn is_non_distributable(&self) -> bool {
        let m = &self.media_type;
        m.contains(".nondistributable.") || m.contains(".foreign.")
    }
}

/// What the store keeps about a manifest besides its bytes. Annotations are not kept: only
/// the referrers API reports them, and it reads them from the stored bytes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ManifestRecord {
    pub digest: Digest,
    #[serde(rename = "mediaType")]
    pub media_type: MediaType,
    pub size: u64,
    #[serde(
        rename = "artifactType",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub artifact_type: Option<MediaType>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<Digest>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub blobs: Vec<Descriptor>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub manifests: Vec<Descriptor>,
    /// Whether an image's config carries the label the store indexes (`labelled`), as found
    /// at commit; `None` where nobody looked (not an image, config absent, older journals).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labelled: Option<bool>,
}

impl ManifestRecord {
    /// Analyse manifest `bytes` (whose digest the caller has verified) served as `media_type`.
    pub fn parse(
        digest: Digest,
        media_type: &str,
        bytes: &[u8],
    ) -> Result<ManifestRecord, StoreError> {
        if bytes.len() > MAX_MANIFEST_BYTES {
            return Err(StoreError::TooLarge(format!(
                "manifest of {} bytes exceeds the {} byte limit",
                bytes.len(),
                MAX_MANIFEST_BYTES
            )));
        }
        let doc: Value = serde_json::from_slice(bytes)
            .map_err(|e| StoreError::ManifestInvalid(format!("not JSON: {e}")))?;
        let Value::Object(obj) = doc else {
            return Err(StoreError::ManifestInvalid("not a JSON object".into()));
        };
        if let Some(v) = obj.get("schemaVersion") {
            if v.as_u64() != Some(2) {
                return Err(StoreError::ManifestInvalid(format!(
                    "schemaVersion {v} is not supported"
                )));
            }
        }
        let declared = match obj.get("mediaType") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.as_str()),
            Some(_) => {
                return Err(StoreError::ManifestInvalid(
                    "mediaType is not a string".into(),
                ))
            }
        };
        let media_type = if media_type.is_empty() {
            declared.unwrap_or(OCI_MANIFEST)
        } else {
            media_type
        };
        if let Some(declared) = declared {
            // A manifest that says it is one thing but is pushed as another would be served
            // with a type that contradicts its own content.
            if is_known(declared) && is_known(media_type) && declared != media_type {
                return Err(StoreError::ManifestInvalid(format!(
                    "mediaType {declared} does not match Content-Type {media_type}"
                )));
            }
        }

        let is_index = media_type == OCI_INDEX || media_type == DOCKER_LIST;
        let mut blobs = Vec::new();
        let mut manifests = Vec::new();
        if is_index {
            let list = obj
                .get("manifests")
                .ok_or_else(|| StoreError::ManifestInvalid("index has no manifests".into()))?;
            manifests = descriptors(list, "manifests")?;
        } else if media_type == OCI_MANIFEST || media_type == DOCKER_MANIFEST {
            let config = obj
                .get("config")
                .ok_or_else(|| StoreError::ManifestInvalid("manifest has no config".into()))?;
            blobs.push(descriptor(config, "config")?);
            match obj.get("layers") {
                Some(layers) => blobs.extend(descriptors(layers, "layers")?),
                None => {
                    return Err(StoreError::ManifestInvalid("manifest has no layers".into()));
                }
            }
        } else {
            // Unknown and artifact types: close over whatever descriptors they carry.
            if let Some(config) = obj.get("config") {
                blobs.push(descriptor(config, "config")?);
            }
            for key in ["layers", "blobs"] {
                if let Some(list) = obj.get(key) {
                    blobs.extend(descriptors(list, key)?);
                }
            }
            if let Some(list) = obj.get("manifests") {
                manifests = descriptors(list, "manifests")?;
            }
        }
        let subject = match obj.get("subject") {
            None | Some(Value::Null) => None,
            Some(s) => Some(descriptor(s, "subject")?.digest),
        };
        let artifact_type = match obj.get("artifactType") {
            Some(Value::String(s)) => Some(MediaType::new(s)),
            None | Some(Value::Null) => None,
            Some(_) => {
                return Err(StoreError::ManifestInvalid(
                    "artifactType is not a string".into(),
                ))
            }
        }
        .or_else(|| {
            if is_index || media_type == OCI_ARTIFACT {
                None
            } else {
                obj.get("config")
                    .and_then(|c| c.get("mediaType"))
                    .and_then(Value::as_str)
                    .map(MediaType::new)
            }
        });
        annotations_of(&obj)?;
        Ok(ManifestRecord {
            digest,
            media_type: MediaType::new(media_type),
            size: bytes.len() as u64,
            artifact_type,
            subject,
            blobs,
            manifests,
            labelled: None,
        })
    }

    pub fn blob_refs(&self) -> &[Descriptor] {
        &self.blobs
    }

    pub fn manifest_refs(&self) -> &[Descriptor] {
        &self.manifests
    }

    pub fn is_index(&self) -> bool {
        self.media_type == OCI_INDEX || self.media_type == DOCKER_LIST
    }
}

/// The `annotations` of a manifest's bytes, for the referrers API. The bytes were checked
/// by [`ManifestRecord::parse`] when stored; bytes that no longer parse give none.
pub fn annotations(bytes: &[u8]) -> Option<Map<String, Value>> {
    match serde_json::from_slice(bytes) {
        Ok(Value::Object(obj)) => annotations_of(&obj).ok().flatten(),
        _ => None,
    }
}

fn annotations_of(obj: &Map<String, Value>) -> Result<Option<Map<String, Value>>, StoreError> {
    match obj.get("annotations") {
        Some(Value::Object(m)) => Ok(Some(m.clone())),
        None | Some(Value::Null) => Ok(None),
        Some(_) => Err(StoreError::ManifestInvalid(
            "annotations is not an object".into(),
        )),
    }
}

fn is_known(m: &str) -> bool {
    matches!(m, OCI_MANIFEST | OCI_INDEX | DOCKER_MANIFEST | DOCKER_LIST)
}

fn descriptors(v: &Value, field: &str) -> Result<Vec<Descriptor>, StoreError> {
    let Value::Array(items) = v else {
        return Err(StoreError::ManifestInvalid(format!(
            "{field} is not an array"
        )));
    };
    items.iter().map(|d| descriptor(d, field)).collect()
}

fn descriptor(v: &Value, field: &str) -> Result<Descriptor, StoreError> {
    let media_type = v.get("mediaType").and_then(Value::as_str).ok_or_else(|| {
        StoreError::ManifestInvalid(format!("{field}: descriptor without mediaType"))
    })?;
    let digest = v.get("digest").and_then(Value::as_str).ok_or_else(|| {
        StoreError::ManifestInvalid(format!("{field}: descriptor without digest"))
    })?;
    let digest =
        Digest::parse(digest).map_err(|e| StoreError::ManifestInvalid(format!("{field}: {e}")))?;
    let size = v.get("size").and_then(Value::as_u64).ok_or_else(|| {
        StoreError::ManifestInvalid(format!("{field}: descriptor without a valid size"))
    })?;
    Ok(Descriptor {
        media_type: MediaType::new(media_type),
        digest,
        size,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Algorithm;

    fn d(s: &[u8]) -> Digest {
        Digest::of(Algorithm::Sha256, s)
    }

    #[test]
    fn image_manifest_refs_and_artifact_type() {
        let body = format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{{"mediaType":"application/x.cfg","digest":"{}","size":1}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{}","size":2}}],"subject":{{"mediaType":"{OCI_MANIFEST}","digest":"{}","size":3}},"annotations":{{"a":"b"}}}}"#,
            d(b"c"),
            d(b"l"),
            d(b"s")
        );
        let r = ManifestRecord::parse(d(body.as_bytes()), OCI_MANIFEST, body.as_bytes())
            .expect("valid");
        assert_eq!(r.blob_refs().len(), 2);
        assert_eq!(r.subject, Some(d(b"s")));
        assert_eq!(r.artifact_type.as_deref(), Some("application/x.cfg"));
        assert!(annotations(body.as_bytes()).is_some_and(|a| a["a"] == "b"));
    }

    #[test]
    fn rejects_garbage() {
        for body in [
            &b"not json"[..],
            b"[]",
            b"{\"schemaVersion\":1}",
            b"{\"schemaVersion\":2,\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\"}",
            b"{\"schemaVersion\":2,\"config\":{\"mediaType\":\"a\",\"digest\":\"sha256:xx\",\"size\":1},\"layers\":[]}",
        ] {
            assert!(ManifestRecord::parse(d(body), OCI_MANIFEST, body).is_err());
        }
        let idx = b"{\"schemaVersion\":2,\"mediaType\":\"application/vnd.oci.image.index.v1+json\",\"manifests\":[]}";
        assert!(
            ManifestRecord::parse(d(idx), OCI_MANIFEST, idx).is_err(),
            "type mismatch"
        );
        assert!(ManifestRecord::parse(d(idx), OCI_INDEX, idx).is_ok());
    }
}
