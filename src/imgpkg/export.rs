//! Export: the inverse of [`super::import`]. Plans and streams a tar in imgpkg's `--to-tar`
//! format of stored bundles, images and indexes, as `imgpkg copy -b|-i HOST/REPO… --to-tar`
//! would write it from this registry, so that the next hop (`imgpkg copy --tar … --to-repo`
//! or another airdock's import) recreates the same tags and digests.
//!
//! Two steps, so that every header can be written before any byte of data:
//! [`plan`] resolves the references, walks bundles (each `images.yml`, recursively), reads
//! every manifest and config (small; imgpkg inlines them into `manifest.json`), and stats
//! and pins every layer blob; [`Plan::into_stream`] then yields `manifest.json` and each blob,
//! read from the content store in bounded chunks only as fast as the consumer takes them.
//! Nothing runs unpolled: a consumer that goes away drops the stream, its open file and its
//! pins, and no more is read.
//!
//! Layout, as imgpkg 0.43 writes it (checked against real tars in the tests): `manifest.json`
//! first, then one `sha256-<hex>.tar.gz` per distinct distributable layer in digest order;
//! Go's USTAR headers (mode 0644, mtime 0, owner 0:0), a PAX `size` record for a blob of
//! 8 GiB or more, two zero blocks at the end. Locations images are not exported: the
//! importing side builds its own (imgpkg does the same).

use std::collections::{BTreeMap, BTreeSet};
use std::io;

use bytes::{Bytes, BytesMut};
use futures_util::Stream;
use serde::Deserialize;
use tokio::io::AsyncReadExt;

use airdock_storage::{Digest, ManifestRecord, Pin, Reference, RepoName, Store, StoreError};

use super::bundle_layer;
use super::lock::ImagesLock;
use super::manifest::{
    is_distributable, is_image_media_type, is_index_media_type, BUNDLE_CONFIG_LABEL, DOCKER_LAYER,
    ROOT_BUNDLE_LABEL,
};
use super::names::{tar_member_name, truncate};
use super::refs::DigestRef;
use super::tarfmt::{self, Kind, BLOCK};

/// Largest config blob inlined into `manifest.json` (imgpkg inlines every one).
const MAX_CONFIG: u64 = 8 << 20;
/// Largest `manifest.json` we write: what our own importer accepts by default.
pub const MAX_MANIFEST_JSON: usize = 64 << 20;
/// Bytes read from the store per chunk of the stream.
const CHUNK: usize = 1 << 20;

/// Media types go-containerregistry calls layers (`MediaType.IsLayer`): only these get a
/// `DiffID` in `manifest.json`, the others `""` (imgpkg 0.41+).
const LAYER_TYPES: &[&str] = &[
    DOCKER_LAYER,
    "application/vnd.docker.image.rootfs.diff.tar",
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
    "application/vnd.oci.image.layer.v1.tar",
    "application/vnd.oci.image.layer.v1.tar+gzip",
    "application/vnd.oci.image.layer.v1.tar+zstd",
    "application/vnd.oci.image.layer.nondistributable.v1.tar",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
];

/// One reference to export: a tag or digest in a repository.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Wanted {
    pub repo: RepoName,
    pub reference: Reference,
}

/// What went wrong, in categories the HTTP layer maps to status codes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ExportErrorKind {
    /// The caller may not read this repository (the HTTP layer answers 401 or 403).
    Refused(RepoName),
    /// A reference, or something a bundle or index needs, is not stored.
    NotFound,
    /// The request itself is wrong (two root bundles, a bad lock file).
    Invalid,
    /// Stored content imgpkg's format cannot carry (an artifact manifest, non-UTF-8 JSON).
    Unsupported,
    /// `manifest.json` or a config past the bounds.
    TooLarge,
    /// The store failed, or disagrees with its own metadata.
    Storage,
}

#[derive(Clone, Debug, thiserror::Error)]
#[error("{message}")]
pub struct ExportError {
    pub kind: ExportErrorKind,
    pub message: String,
}

impl ExportError {
    fn new(kind: ExportErrorKind, message: impl Into<String>) -> ExportError {
        ExportError {
            kind,
            message: message.into(),
        }
    }

    /// The OCI-style error code for the JSON body.
    pub fn code(&self) -> &'static str {
        match self.kind {
            ExportErrorKind::Refused(_) => "DENIED",
            ExportErrorKind::NotFound => "MANIFEST_UNKNOWN",
            ExportErrorKind::Invalid => "MANIFEST_INVALID",
            ExportErrorKind::Unsupported => "UNSUPPORTED",
            ExportErrorKind::TooLarge => "SIZE_INVALID",
            ExportErrorKind::Storage => "UNKNOWN",
        }
    }

    /// The HTTP status this error deserves.
    pub fn http_status(&self) -> u16 {
        match self.kind {
            ExportErrorKind::Refused(_) => 403,
            ExportErrorKind::NotFound => 404,
            ExportErrorKind::Invalid => 400,
            ExportErrorKind::Unsupported => 415,
            ExportErrorKind::TooLarge => 413,
            ExportErrorKind::Storage => 500,
        }
    }
}

fn store_err(what: &str, e: StoreError) -> ExportError {
    match e {
        StoreError::ManifestUnknown(_)
        | StoreError::BlobUnknown(_)
        | StoreError::NameUnknown(_) => {
            ExportError::new(ExportErrorKind::NotFound, format!("{what}: {e}"))
        }
        e => ExportError::new(ExportErrorKind::Storage, format!("{what}: {e}")),
    }
}

/// The references of an ImagesLock (`imgpkg copy --lock-output` of images, or any
/// `images.yml`) as export requests: each `HOST/REPO@digest` is looked up in `repo` when
/// given, else in the repository its path names.
pub fn wanted_from_lock(bytes: &[u8], repo: Option<&RepoName>) -> Result<Vec<Wanted>, ExportError> {
    let lock = ImagesLock::parse(bytes).map_err(|e| {
        ExportError::new(
            ExportErrorKind::Invalid,
            format!("the request body is not an ImagesLock: {}", e.0),
        )
    })?;
    lock.images
        .iter()
        .map(|i| {
            let repo = match repo {
                Some(r) => r.clone(),
                None => RepoName::parse(&i.image.repository).map_err(|e| {
                    ExportError::new(
                        ExportErrorKind::Invalid,
                        format!("{}: {e}", truncate(&i.image.name(), 300)),
                    )
                })?,
            };
            Ok(Wanted {
                repo,
                reference: Reference::Digest(i.image.digest.clone()),
            })
        })
        .collect()
}

// ---- the plan ----

/// A layer blob of the tar.
#[derive(Debug)]
struct PlannedBlob {
    digest: Digest,
    repo: RepoName,
    size: u64,
}

/// Everything the tar will hold, with its exact length, ready to stream.
#[derive(Debug)]
pub struct Plan {
    manifest_json: Vec<u8>,
    blobs: Vec<PlannedBlob>,
    /// Keep GC away from every layer until the stream is done or dropped.
    _pins: Vec<Pin>,
    /// Top-level elements of `manifest.json` (bundles, images, indexes).
    pub elements: usize,
    /// The root bundle's digest, if a bundle is exported.
    pub root_bundle: Option<Digest>,
}

impl Plan {
    /// Number of layer blobs in the tar.
    pub fn blob_count(&self) -> usize {
        self.blobs.len()
    }

    /// Bytes of layer data in the tar.
    pub fn blob_bytes(&self) -> u64 {
        self.blobs.iter().map(|b| b.size).sum()
    }

    /// `manifest.json` as it will be written.
    pub fn manifest_json(&self) -> &[u8] {
        &self.manifest_json
    }

    /// The exact length of the tar the stream yields.
    pub fn tar_len(&self) -> u64 {
        let entry =
            |name: &str, size: u64| header(name, size).len() as u64 + size + tarfmt::padding(size);
        let mut n = entry("manifest.json", self.manifest_json.len() as u64);
        for b in &self.blobs {
            n += entry(&tar_member_name(&b.digest), b.size);
        }
        n + 2 * BLOCK as u64
    }

    /// The tar, as a stream of chunks read from `store` on demand.
    pub fn into_stream(self, store: Store) -> impl Stream<Item = io::Result<Bytes>> + Send {
        let state = Streamer {
            store,
            plan: self,
            next: 0,
            current: None,
            started: false,
            ended: false,
        };
        futures_util::stream::try_unfold(state, |mut s| async move {
            let chunk = s.next_chunk().await?;
            Ok(chunk.map(|c| (c, s)))
        })
    }
}

/// The header block(s) of one entry: a USTAR header as Go writes it, preceded by a PAX
/// header carrying `size` when the size does not fit the octal field (8 GiB or more).
fn header(name: &str, size: u64) -> Vec<u8> {
    if let Some(h) = tarfmt::ustar_header(name, 0o644, size, Kind::Regular) {
        return h.to_vec();
    }
    // Go's archive/tar: a record `"<len> size=<n>\n"` whose length counts itself, in an
    // entry named `PaxHeaders.0/<name>`, then the real header with the size field zeroed.
    let value = format!(" size={size}\n");
    let mut len = value.len() + 1;
    while format!("{len}{value}").len() != len {
        len += 1;
    }
    let record = format!("{len}{value}");
    let mut out = Vec::with_capacity(3 * BLOCK);
    let pax_name = format!("PaxHeaders.0/{name}");
    let pax = tarfmt::ustar_header(&pax_name, 0, record.len() as u64, Kind::Regular);
    if let Some(mut h) = pax {
        h[156] = b'x';
        fix_checksum(&mut h);
        out.extend_from_slice(&h);
        out.extend_from_slice(record.as_bytes());
        out.resize(out.len() + tarfmt::padding(record.len() as u64) as usize, 0);
    }
    if let Some(mut h) = tarfmt::ustar_header(name, 0o644, 0, Kind::Regular) {
        // Go sets the PAX format's magic in the real header too; `ustar\0` `00` is the same.
        fix_checksum(&mut h);
        out.extend_from_slice(&h);
    }
    out
}

/// Recomputes a header's checksum after a field changed, as Go formats it.
fn fix_checksum(h: &mut [u8; BLOCK]) {
    h[148..156].copy_from_slice(b"        ");
    let sum: u32 = h.iter().map(|&c| u32::from(c)).sum();
    h[148..155].copy_from_slice(format!("{sum:06o}\0").as_bytes());
    h[155] = b' ';
}

struct Streamer {
    store: Store,
    plan: Plan,
    /// Index of the next blob to start.
    next: usize,
    /// The blob being read: its file, bytes left, and padding to write after it.
    current: Option<(airdock_storage::blobstore::BlobReader, u64, u64, Digest)>,
    started: bool,
    ended: bool,
}

impl Streamer {
    async fn next_chunk(&mut self) -> io::Result<Option<Bytes>> {
        if !self.started {
            self.started = true;
            let mj = &self.plan.manifest_json;
            let mut out = header("manifest.json", mj.len() as u64);
            out.extend_from_slice(mj);
            out.resize(out.len() + tarfmt::padding(mj.len() as u64) as usize, 0);
            return Ok(Some(Bytes::from(out)));
        }
        if let Some((file, left, pad, digest)) = &mut self.current {
            if *left == 0 {
                let out = Bytes::from(vec![0u8; *pad as usize]);
                self.current = None;
                if !out.is_empty() {
                    return Ok(Some(out));
                }
            } else {
                let want = (*left).min(CHUNK as u64) as usize;
                let mut buf = BytesMut::with_capacity(want);
                while buf.len() < want {
                    let n = (&mut *file)
                        .take((want - buf.len()) as u64)
                        .read_buf(&mut buf)
                        .await?;
                    if n == 0 {
                        // The file is shorter than it was when planned: never send a tar
                        // whose entry silently holds other bytes; the client sees the
                        // transfer cut short (the length was announced).
                        return Err(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            format!("blob {digest} ended early while being exported"),
                        ));
                    }
                }
                *left -= want as u64;
                return Ok(Some(buf.freeze()));
            }
        }
        if let Some(b) = self.plan.blobs.get(self.next) {
            self.next += 1;
            let (file, len) = self
                .store
                .open_blob(&b.repo, &b.digest)
                .await
                .map_err(|e| io::Error::other(format!("opening blob {}: {e}", b.digest)))?;
            if len != b.size {
                return Err(io::Error::other(format!(
                    "blob {} is {len} bytes on disk, {} in its manifest",
                    b.digest, b.size
                )));
            }
            self.current = Some((file, b.size, tarfmt::padding(b.size), b.digest.clone()));
            return Ok(Some(Bytes::from(header(
                &tar_member_name(&b.digest),
                b.size,
            ))));
        }
        if !self.ended {
            self.ended = true;
            return Ok(Some(Bytes::from(vec![0u8; 2 * BLOCK])));
        }
        Ok(None)
    }
}

// ---- planning ----

/// Minimal view of an image manifest.
#[derive(Deserialize)]
struct ImageManifest {
    config: Desc,
    #[serde(default)]
    layers: Vec<Desc>,
}

/// An image manifest as stored, parsed, with its config's bytes.
struct ImageParts {
    manifest: ImageManifest,
    raw: Bytes,
    config: Vec<u8>,
}

/// A manifest of an index tree, loaded.
enum Loaded {
    Index(std::sync::Arc<ManifestRecord>, Bytes, IndexManifest),
    Image(std::sync::Arc<ManifestRecord>, ImageParts),
}

/// Minimal view of an index.
#[derive(Deserialize)]
struct IndexManifest {
    #[serde(default)]
    manifests: Vec<Desc>,
}

#[derive(Deserialize)]
struct Desc {
    #[serde(rename = "mediaType", default)]
    media_type: String,
    digest: Digest,
    #[serde(default)]
    size: u64,
}

/// A config's parts export needs.
#[derive(Deserialize, Default)]
struct Config {
    #[serde(default)]
    config: Option<ConfigConfig>,
    #[serde(default)]
    rootfs: Option<RootFs>,
}

#[derive(Deserialize, Default)]
struct ConfigConfig {
    #[serde(rename = "Labels", default)]
    labels: Option<BTreeMap<String, serde_json::Value>>,
}

#[derive(Deserialize, Default)]
struct RootFs {
    #[serde(default)]
    diff_ids: Vec<String>,
}

/// What every descriptor of one top-level element shares (index children inherit it).
#[derive(Clone)]
struct Common {
    tag: String,
    orig_ref: String,
    root: bool,
}

struct Planner<'a> {
    store: &'a Store,
    host: &'a str,
    may_read: &'a (dyn Fn(&RepoName) -> bool + Sync),
    /// Top-level elements by imgpkg's set key (`Refs[0]:Tag`) → (sort key, JSON).
    top: BTreeMap<String, (String, String)>,
    blobs: BTreeMap<Digest, PlannedBlob>,
    pins: Vec<Pin>,
    json_len: usize,
    root: Option<Digest>,
    walked: BTreeSet<Digest>,
}

/// Resolves `wanted` in `store` (each repository checked with `may_read` before it is
/// looked at) into the tar to write. `host` is how the source registry names itself in
/// `Refs` (imgpkg writes the registry it copied from there).
pub async fn plan(
    store: &Store,
    host: &str,
    wanted: &[Wanted],
    may_read: &(dyn Fn(&RepoName) -> bool + Sync),
) -> Result<Plan, ExportError> {
    if wanted.is_empty() {
        return Err(ExportError::new(
            ExportErrorKind::Invalid,
            "nothing to export: name a tag, a digest or references",
        ));
    }
    let mut p = Planner {
        store,
        host,
        may_read,
        top: BTreeMap::new(),
        blobs: BTreeMap::new(),
        pins: Vec::new(),
        json_len: 0,
        root: None,
        walked: BTreeSet::new(),
    };
    for w in wanted {
        p.wanted(w).await?;
    }
    p.check_sizes().await?;
    let mut elements: Vec<(String, String)> = p.top.into_values().collect();
    // imgpkg sorts the set by `Manifest.Digest/Config.Digest` (images) or `Digest` (indexes).
    elements.sort();
    let mut json = String::with_capacity(p.json_len + elements.len() + 2);
    json.push('[');
    for (i, (_, e)) in elements.iter().enumerate() {
        if i > 0 {
            json.push(',');
        }
        json.push_str(e);
    }
    json.push(']');
    if json.len() > MAX_MANIFEST_JSON {
        return Err(ExportError::new(
            ExportErrorKind::TooLarge,
            format!(
                "manifest.json would be {} bytes, past the {MAX_MANIFEST_JSON} byte limit of an import",
                json.len()
            ),
        ));
    }
    Ok(Plan {
        manifest_json: json.into_bytes(),
        elements: elements.len(),
        blobs: p.blobs.into_values().collect(),
        _pins: p.pins,
        root_bundle: p.root,
    })
}

impl Planner<'_> {
    /// Every planned layer is stored with the size its manifest gives, so the tar's length
    /// and every header are right before the first byte is sent.
    async fn check_sizes(&self) -> Result<(), ExportError> {
        // Pins taken during a GC delete of their blob count from its end.
        for pin in &self.pins {
            pin.settled().await;
        }
        for b in self.blobs.values() {
            let (repo, d, size) = (&b.repo, &b.digest, b.size);
            let len = self
                .store
                .blob_size(repo, d)
                .await
                .map_err(|e| store_err(&format!("layer {d} in {repo}"), e))?;
            if len != size {
                return Err(ExportError::new(
                    ExportErrorKind::Storage,
                    format!(
                        "layer {d} is {len} bytes stored, {size} in its manifest (run `airdock fsck`)"
                    ),
                ));
            }
        }
        Ok(())
    }

    fn check(&self, repo: &RepoName) -> Result<(), ExportError> {
        if (self.may_read)(repo) {
            Ok(())
        } else {
            Err(ExportError::new(
                ExportErrorKind::Refused(repo.clone()),
                format!("pull access to {repo} is not allowed"),
            ))
        }
    }

    fn digest_ref(&self, repo: &RepoName, d: &Digest) -> String {
        format!("{}/{repo}@{d}", self.host)
    }

    async fn wanted(&mut self, w: &Wanted) -> Result<(), ExportError> {
        self.check(&w.repo)?;
        let record = self
            .store
            .stat_manifest(&w.repo, &w.reference)
            .map_err(|e| store_err(&format!("{}:{}", w.repo, w.reference), e))?;
        let tag = match &w.reference {
            Reference::Tag(t) => t.as_str().to_owned(),
            Reference::Digest(_) => String::new(),
        };
        let d = record.digest.clone();
        if is_image_media_type(&record.media_type) {
            let parts = self.image(&w.repo, &record).await?;
            if is_bundle(&parts.config) {
                if let Some(root) = &self.root {
                    if *root != d {
                        return Err(ExportError::new(
                            ExportErrorKind::Invalid,
                            format!(
                                "{}:{} is a second bundle (the tar already holds bundle {root}); imgpkg reads one root bundle per tar",
                                w.repo, w.reference
                            ),
                        ));
                    }
                }
                self.root = Some(d.clone());
                let common = Common {
                    tag,
                    orig_ref: self.digest_ref(&w.repo, &d),
                    root: true,
                };
                self.add_top(&w.repo, &record, parts, &common)?;
                return self.walk_bundle(&w.repo, &record).await;
            }
            // A plain image, as `imgpkg copy -i` writes it: its tag, no `OrigRef`.
            let common = Common {
                tag,
                orig_ref: String::new(),
                root: false,
            };
            return self.add_top(&w.repo, &record, parts, &common);
        }
        let common = Common {
            tag,
            orig_ref: String::new(),
            root: false,
        };
        self.add_element(&w.repo, &record, &common).await
    }

    /// Reads an image manifest and its config.
    async fn image(
        &mut self,
        repo: &RepoName,
        record: &ManifestRecord,
    ) -> Result<ImageParts, ExportError> {
        let m = self
            .store
            .get_manifest(repo, &Reference::Digest(record.digest.clone()))
            .await
            .map_err(|e| store_err(&format!("manifest {}", record.digest), e))?;
        let parsed: ImageManifest = serde_json::from_slice(&m.bytes).map_err(|e| {
            ExportError::new(
                ExportErrorKind::Unsupported,
                format!(
                    "manifest {} of {repo} is not an image manifest: {e}",
                    record.digest
                ),
            )
        })?;
        let config = self.read_config(repo, &parsed.config).await?;
        Ok(ImageParts {
            manifest: parsed,
            raw: m.bytes,
            config,
        })
    }

    async fn read_config(&self, repo: &RepoName, desc: &Desc) -> Result<Vec<u8>, ExportError> {
        let (file, len) = self
            .store
            .open_blob(repo, &desc.digest)
            .await
            .map_err(|e| store_err(&format!("config {} in {repo}", desc.digest), e))?;
        if len > MAX_CONFIG {
            return Err(ExportError::new(
                ExportErrorKind::TooLarge,
                format!("config {} is {len} bytes; imgpkg inlines configs, and at most {MAX_CONFIG} are exported", desc.digest),
            ));
        }
        let mut bytes = Vec::with_capacity(len as usize);
        file.take(MAX_CONFIG + 1)
            .read_to_end(&mut bytes)
            .await
            .map_err(|e| store_err(&format!("reading config {}", desc.digest), e.into()))?;
        Ok(bytes)
    }

    /// Adds a top-level element (image or index) unless the same `Refs:Tag` is there.
    async fn add_element(
        &mut self,
        repo: &RepoName,
        record: &ManifestRecord,
        common: &Common,
    ) -> Result<(), ExportError> {
        if is_index_media_type(&record.media_type) {
            let json = self.index_json(repo, record, common).await?;
            let key = format!("{}:{}", self.digest_ref(repo, &record.digest), common.tag);
            let json = format!(r#"{{"ImageIndex":{json},"Image":null}}"#);
            self.json_len += json.len();
            self.top.insert(key, (record.digest.to_string(), json));
            return Ok(());
        }
        if is_image_media_type(&record.media_type) {
            let parts = self.image(repo, record).await?;
            return self.add_top(repo, record, parts, common);
        }
        Err(ExportError::new(
            ExportErrorKind::Unsupported,
            format!(
                "{repo}@{} is a {}; imgpkg's tar carries only images and indexes",
                record.digest, record.media_type
            ),
        ))
    }

    fn add_top(
        &mut self,
        repo: &RepoName,
        record: &ManifestRecord,
        parts: ImageParts,
        common: &Common,
    ) -> Result<(), ExportError> {
        let sort = format!("{}/{}", record.digest, parts.manifest.config.digest);
        let json = self.image_json(repo, record, &parts, common)?;
        let json = format!(r#"{{"ImageIndex":null,"Image":{json}}}"#);
        let key = format!("{}:{}", self.digest_ref(repo, &record.digest), common.tag);
        self.json_len += json.len();
        self.top.insert(key, (sort, json));
        Ok(())
    }

    /// An `ImageDesc` of `manifest.json`; its layers join the tar.
    fn image_json(
        &mut self,
        repo: &RepoName,
        record: &ManifestRecord,
        parts: &ImageParts,
        common: &Common,
    ) -> Result<String, ExportError> {
        let (m, config) = (&parts.manifest, &parts.config[..]);
        let parsed_config: Config = serde_json::from_slice(config).unwrap_or_default();
        let diff_ids = parsed_config.rootfs.map(|r| r.diff_ids).unwrap_or_default();
        let mut layers = Vec::with_capacity(m.layers.len());
        for (i, l) in m.layers.iter().enumerate() {
            let diff_id = if LAYER_TYPES.contains(&l.media_type.as_str()) {
                diff_ids.get(i).map(String::as_str).unwrap_or("")
            } else {
                ""
            };
            layers.push(format!(
                r#"{{"MediaType":{},"Digest":{},"DiffID":{},"Size":{}}}"#,
                go_json(&l.media_type),
                go_json(&l.digest.to_string()),
                go_json(diff_id),
                l.size
            ));
            if is_distributable(&l.media_type) {
                self.add_blob(repo, &l.digest, l.size)?;
            }
        }
        let layers = if layers.is_empty() {
            "null".to_owned()
        } else {
            format!("[{}]", layers.join(","))
        };
        Ok(format!(
            r#"{{"Refs":[{}],"Layers":{layers},"Config":{{"Digest":{},"Raw":{}}},"Manifest":{{"MediaType":{},"Digest":{},"Raw":{}}},"Tag":{},"OrigRef":{},"Labels":{}}}"#,
            go_json(&self.digest_ref(repo, &record.digest)),
            go_json(&m.config.digest.to_string()),
            utf8_json(config, &m.config.digest)?,
            go_json(&record.media_type),
            go_json(&record.digest.to_string()),
            utf8_json(&parts.raw, &record.digest)?,
            go_json(&common.tag),
            go_json(&common.orig_ref),
            labels(common),
        ))
    }

    /// An `IndexDesc`, its children (recursively) loaded first, then written in one go.
    async fn index_json(
        &mut self,
        repo: &RepoName,
        record: &ManifestRecord,
        common: &Common,
    ) -> Result<String, ExportError> {
        // Loaded iteratively (no recursive futures), bounded in depth and count.
        let mut tree: BTreeMap<Digest, Loaded> = BTreeMap::new();
        let mut todo = vec![(record.digest.clone(), 0usize)];
        while let Some((d, depth)) = todo.pop() {
            if tree.contains_key(&d) {
                continue;
            }
            if depth > 8 || tree.len() > 10_000 {
                return Err(ExportError::new(
                    ExportErrorKind::Unsupported,
                    format!(
                        "index {} nests too deep or too wide to export",
                        record.digest
                    ),
                ));
            }
            let rec = self
                .store
                .stat_manifest(repo, &Reference::Digest(d.clone()))
                .map_err(|_| {
                    ExportError::new(
                        ExportErrorKind::NotFound,
                        format!(
                            "index {} needs {d}, which {repo} does not hold (pushed sparse?); imgpkg cannot copy it either",
                            record.digest
                        ),
                    )
                })?;
            if is_index_media_type(&rec.media_type) {
                let m = self
                    .store
                    .get_manifest(repo, &Reference::Digest(d.clone()))
                    .await
                    .map_err(|e| store_err(&format!("index {d}"), e))?;
                let parsed: IndexManifest = serde_json::from_slice(&m.bytes).map_err(|e| {
                    ExportError::new(
                        ExportErrorKind::Unsupported,
                        format!("index {d} of {repo}: {e}"),
                    )
                })?;
                for child in &parsed.manifests {
                    todo.push((child.digest.clone(), depth + 1));
                }
                tree.insert(d, Loaded::Index(rec, m.bytes, parsed));
            } else if is_image_media_type(&rec.media_type) {
                let parts = self.image(repo, &rec).await?;
                tree.insert(d, Loaded::Image(rec, parts));
            } else {
                return Err(ExportError::new(
                    ExportErrorKind::Unsupported,
                    format!(
                        "index {} lists {d}, a {}; imgpkg copies only images and indexes",
                        record.digest, rec.media_type
                    ),
                ));
            }
        }
        self.index_desc(repo, &record.digest, &tree, common)
    }

    fn index_desc(
        &mut self,
        repo: &RepoName,
        d: &Digest,
        tree: &BTreeMap<Digest, Loaded>,
        common: &Common,
    ) -> Result<String, ExportError> {
        let Some(Loaded::Index(record, raw, parsed)) = tree.get(d) else {
            return Err(ExportError::new(
                ExportErrorKind::Storage,
                format!("index {d} not loaded"),
            ));
        };
        let mut images = Vec::new();
        let mut indexes = Vec::new();
        for child in &parsed.manifests {
            // imgpkg sorts children by the media type the index gives them.
            match tree.get(&child.digest) {
                Some(Loaded::Index(..)) if is_index_media_type(&child.media_type) => {
                    indexes.push(self.index_desc(repo, &child.digest, tree, common)?);
                }
                Some(Loaded::Image(rec, parts)) if !is_index_media_type(&child.media_type) => {
                    images.push(self.image_json(repo, rec, parts, common)?);
                }
                _ => {
                    return Err(ExportError::new(
                        ExportErrorKind::Unsupported,
                        format!(
                            "index {d} gives {} the media type {}, which is not what is stored",
                            child.digest, child.media_type
                        ),
                    ))
                }
            }
        }
        let list = |v: Vec<String>| {
            if v.is_empty() {
                "null".to_owned()
            } else {
                format!("[{}]", v.join(","))
            }
        };
        Ok(format!(
            r#"{{"Refs":[{}],"Images":{},"Indexes":{},"MediaType":{},"Digest":{},"Raw":{},"Tag":{},"OrigRef":{},"Labels":{}}}"#,
            go_json(&self.digest_ref(repo, d)),
            list(images),
            list(indexes),
            go_json(&record.media_type),
            go_json(&d.to_string()),
            utf8_json(raw, d)?,
            go_json(&common.tag),
            go_json(&common.orig_ref),
            labels(common),
        ))
    }

    fn add_blob(&mut self, repo: &RepoName, d: &Digest, size: u64) -> Result<(), ExportError> {
        if self.blobs.contains_key(d) {
            return Ok(());
        }
        // Pinned now; its stored size is checked against `size` once the walk is done
        // (`check_sizes`), before the first byte of the tar.
        self.pins.push(self.store.pin_blob_now(d));
        self.blobs.insert(
            d.clone(),
            PlannedBlob {
                digest: d.clone(),
                repo: repo.clone(),
                size,
            },
        );
        Ok(())
    }

    /// Every image of a bundle's `images.yml`, recursively, as imgpkg's `copy -b` collects
    /// them: each a top-level element with no tag and its `images.yml` reference as `OrigRef`.
    async fn walk_bundle(
        &mut self,
        repo: &RepoName,
        bundle: &ManifestRecord,
    ) -> Result<(), ExportError> {
        let mut queue = vec![(repo.clone(), bundle.clone())];
        while let Some((repo, record)) = queue.pop() {
            if !self.walked.insert(record.digest.clone()) {
                continue;
            }
            let lock = self.images_lock(&repo, &record).await?;
            for entry in &lock.images {
                let (at, child) = self.locate(&repo, &entry.image)?;
                let common = Common {
                    tag: String::new(),
                    orig_ref: entry.image.name(),
                    root: false,
                };
                if is_image_media_type(&child.media_type) {
                    let parts = self.image(&at, &child).await?;
                    let nested = is_bundle(&parts.config);
                    self.add_top(&at, &child, parts, &common)?;
                    if nested {
                        queue.push((at, (*child).clone()));
                    }
                } else {
                    self.add_element(&at, &child, &common).await?;
                }
            }
        }
        Ok(())
    }

    /// Where an `images.yml` entry is stored: in the bundle's repository (where an import
    /// put it), else in the repository its reference names, if the caller may read that.
    fn locate(
        &self,
        bundle_repo: &RepoName,
        image: &DigestRef,
    ) -> Result<(RepoName, std::sync::Arc<ManifestRecord>), ExportError> {
        let by_digest = Reference::Digest(image.digest.clone());
        if let Ok(r) = self.store.stat_manifest(bundle_repo, &by_digest) {
            return Ok((bundle_repo.clone(), r));
        }
        if let Ok(other) = RepoName::parse(&image.repository) {
            if (self.may_read)(&other) {
                if let Ok(r) = self.store.stat_manifest(&other, &by_digest) {
                    return Ok((other, r));
                }
            }
        }
        Err(ExportError::new(
            ExportErrorKind::NotFound,
            format!(
                "a bundle in {bundle_repo} lists {} in its images.yml, which neither {bundle_repo} nor {} holds",
                truncate(&image.name(), 300),
                truncate(&image.repository, 200)
            ),
        ))
    }

    /// `.imgpkg/images.yml` out of a bundle's single layer.
    async fn images_lock(
        &self,
        repo: &RepoName,
        bundle: &ManifestRecord,
    ) -> Result<ImagesLock, ExportError> {
        let m = self
            .store
            .get_manifest(repo, &Reference::Digest(bundle.digest.clone()))
            .await
            .map_err(|e| store_err(&format!("bundle {}", bundle.digest), e))?;
        let bad = |msg: String| {
            ExportError::new(
                ExportErrorKind::Unsupported,
                format!("bundle {}: {msg}", bundle.digest),
            )
        };
        let parsed: ImageManifest =
            serde_json::from_slice(&m.bytes).map_err(|e| bad(e.to_string()))?;
        let [layer] = parsed.layers.as_slice() else {
            return Err(bad(format!(
                "{} layers; a bundle has exactly one",
                parsed.layers.len()
            )));
        };
        let (file, _) = self
            .store
            .open_blob(repo, &layer.digest)
            .await
            .map_err(|e| store_err(&format!("bundle layer {}", layer.digest), e))?;
        bundle_layer::images_lock(file).await.map_err(bad)
    }
}

fn is_bundle(config: &[u8]) -> bool {
    serde_json::from_slice::<Config>(config)
        .ok()
        .and_then(|c| c.config)
        .and_then(|c| c.labels)
        .is_some_and(|l| l.contains_key(BUNDLE_CONFIG_LABEL))
}

fn labels(common: &Common) -> String {
    if common.root {
        format!("{{{}:\"\"}}", go_json(ROOT_BUNDLE_LABEL))
    } else {
        "null".to_owned()
    }
}

/// Exact stored bytes as a JSON string. Go would replace invalid UTF-8 (and the digest
/// would no longer match on import), so such content is refused rather than corrupted.
fn utf8_json(bytes: &[u8], d: &Digest) -> Result<String, ExportError> {
    let s = std::str::from_utf8(bytes).map_err(|_| {
        ExportError::new(
            ExportErrorKind::Unsupported,
            format!("{d} is not UTF-8; imgpkg's manifest.json cannot carry it intact"),
        )
    })?;
    Ok(go_json(s))
}

/// A JSON string as Go's `encoding/json` writes it: `<`, `>`, `&`, U+2028 and U+2029
/// escaped as `\u00xx`/`\u20xx`, the short escapes for `\b \f \n \r \t`, other controls
/// as `\u00xx`.
pub fn go_json(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '<' | '>' | '&' | '\u{2028}' | '\u{2029}' => {
                out.push_str(&format!("\\u{:04x}", c as u32));
            }
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
#[path = "export_tests.rs"]
mod tests;
