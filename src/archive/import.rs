//! The import of a docker / OCI archive: stream every entry into the content store (verified),
//! then build the registry state from the archive's own documents and commit it in one
//! transaction.
//!
//! Data flow: tar entries in any order → small documents (`manifest.json`, `index.json`,
//! `oci-layout`, `repositories`) kept in memory (bounded); `blobs/<alg>/<hex>` streamed into
//! the store verified against the digest in their name; every other file (a classic archive's
//! `<hex>.json` config and `<id>/layer.tar` / `<hex>.tar` layers, whose digests are not in
//! their names) streamed into the store under the digest computed on the way; links recorded
//! as aliases. Nothing is linked into a repository yet, and each stored blob stays pinned.
//! After the end-of-archive marker: OCI layout (`index.json` present) → walk the index from
//! the store; otherwise classic (`manifest.json`) → read each config back from the store, check
//! its `rootfs.diff_ids` against the layers and write a Docker schema 2 manifest. Then one
//! `Txn`: links, manifests (children first), tags, the import record.
//!
//! A failure at any point leaves no metadata change; the blobs it stored are unlinked and go
//! with the next GC past the grace window, as with the imgpkg import.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Instant;

use tokio::io::{AsyncRead, AsyncReadExt, BufReader};

use airdock_storage::{
    Algorithm, Digest, ImportRecord, ImportedTag, Ingest, ManifestRecord, Pin as BlobPin, RepoName,
    Store, StoreError, Tag, Txn, MAX_MANIFEST_BYTES,
};

use crate::imgpkg::dry_run::Missing;
use crate::imgpkg::gzip::{self, Compression, GzipDecoder, InflateLimits};
use crate::imgpkg::import::{commit_or_report, read_err, storage_err};
use crate::imgpkg::import::{BlobReport, ImageReport};
use crate::imgpkg::names::truncate;
use crate::imgpkg::stream::TarReader;
use crate::imgpkg::tarfmt::Kind;
use crate::imgpkg::upload;
use crate::imgpkg::{ErrorKind, ImportError, ImportOptions, ImportReport};

use super::dry_run::{self, Kept};
use super::model::{self, Descriptor, DockerImage, Parsed};
use super::paths::{self, MAX_LINK_HOPS};

/// Entries an archive may hold. Each costs a map slot; docker writes 3–4 per layer.
const MAX_ENTRIES: usize = 100_000;
/// Largest `oci-layout`, `repositories` or legacy `<id>/json` / `VERSION` file.
const MAX_SMALL_DOC: u64 = 1 << 20;
/// Nesting of indexes followed before giving up.
const MAX_INDEX_DEPTH: usize = 8;

/// What an archive path turned out to be.
enum File {
    /// Stored in the content store under `digest` (verified or computed), pinned.
    Blob {
        digest: Digest,
        size: u64,
        existed: bool,
        _pin: BlobPin,
    },
    /// A small document kept in memory.
    Doc(Vec<u8>),
    /// A legacy file nothing reads (`<id>/json`, `<id>/VERSION`), or a directory.
    Skipped,
    /// A symbolic or hard link to another archive path.
    Link(String),
}

/// Documents the import reads, kept in memory rather than stored as blobs.
fn is_doc(path: &str) -> bool {
    matches!(
        path,
        "manifest.json" | "index.json" | "oci-layout" | "repositories"
    )
}

/// Docker's per-layer legacy metadata (`<id>/json`, `<id>/VERSION`): read, bounded, unused.
fn is_legacy_meta(path: &str) -> bool {
    matches!(path.split_once('/'), Some((dir, f)) if !dir.contains('/') && (f == "json" || f == "VERSION"))
}

fn err(kind: ErrorKind, entry: &str, msg: impl Into<String>) -> ImportError {
    ImportError::new(kind, Some(entry), msg)
}

/// Every entry of the archive, by normalised path.
struct Entries {
    files: BTreeMap<String, File>,
    /// A dry run: what was kept of the blobs it did not store.
    kept: Option<Kept>,
}

impl Entries {
    /// The file `path` names, following links; `None` if absent.
    fn resolve(&self, path: &str, referrer: &str) -> Result<Option<&File>, ImportError> {
        let mut at = paths::normalize(path.as_bytes())
            .map_err(|e| err(ErrorKind::Manifest, referrer, format!("path {path:?}: {e}")))?;
        for _ in 0..MAX_LINK_HOPS {
            match self.files.get(&at) {
                Some(File::Link(target)) => at = target.clone(),
                other => return Ok(other),
            }
        }
        Err(err(
            ErrorKind::Entry,
            path,
            format!("more than {MAX_LINK_HOPS} links in a row (a loop?)"),
        ))
    }

    /// The blob stored for `path`: digest and size.
    fn blob(&self, path: &str, referrer: &str) -> Result<(Digest, u64, bool), ImportError> {
        match self.resolve(path, referrer)? {
            Some(File::Blob {
                digest,
                size,
                existed,
                ..
            }) => Ok((digest.clone(), *size, *existed)),
            Some(_) => Err(err(
                ErrorKind::Manifest,
                referrer,
                format!("{path:?} is not a regular file of the archive"),
            )),
            None => Err(err(
                ErrorKind::MissingBlob,
                path,
                format!("named by {referrer} but not in the archive"),
            )),
        }
    }

    /// A blob of the archive (or of the store) read back into memory, at most `limit` bytes.
    async fn read_back(
        &self,
        store: &Store,
        d: &Digest,
        limit: u64,
        entry: &str,
    ) -> Result<Vec<u8>, ImportError> {
        match &self.kept {
            Some(k) => k.read(store, d, limit, entry).await,
            None => read_stored(store, d, limit, entry).await,
        }
    }

    fn doc(&self, name: &str) -> Option<&[u8]> {
        match self.files.get(name) {
            Some(File::Doc(b)) => Some(b),
            _ => None,
        }
    }

    /// Every blob stored, by digest (an OCI layout names blobs by digest, not path).
    fn by_digest(&self) -> HashMap<&Digest, (u64, bool)> {
        self.files
            .values()
            .filter_map(|f| match f {
                File::Blob {
                    digest,
                    size,
                    existed,
                    ..
                } => Some((digest, (*size, *existed))),
                _ => None,
            })
            .collect()
    }
}

/// Reads every entry, storing blobs as they stream by.
async fn read_entries<R: AsyncRead + Unpin + Send>(
    store: &Store,
    tar: &mut TarReader<R>,
    opts: &ImportOptions,
) -> Result<Entries, ImportError> {
    let mut files: BTreeMap<String, File> = BTreeMap::new();
    let mut kept = opts.dry_run.then(Kept::default);
    let mut current: Option<String> = None;
    while let Some(entry) = upload::next_entry(tar, &mut current).await? {
        let shown = entry.display_name();
        let at = shown.as_str();
        let path = paths::normalize(&entry.name).map_err(|e| err(ErrorKind::Entry, at, e.0))?;
        if files.contains_key(&path) {
            return Err(err(ErrorKind::Entry, at, "duplicate entry"));
        }
        if files.len() >= MAX_ENTRIES {
            return Err(err(
                ErrorKind::TooLarge,
                at,
                format!("more than {MAX_ENTRIES} entries"),
            ));
        }
        let file = match entry.kind {
            Kind::Directory => File::Skipped,
            Kind::Symlink => File::Link(
                paths::symlink_target(&path, &entry.link_name)
                    .map_err(|e| err(ErrorKind::Entry, at, e.0))?,
            ),
            // A hard link names its target from the archive's root.
            Kind::HardLink => File::Link(
                paths::normalize(&entry.link_name)
                    .map_err(|e| err(ErrorKind::Entry, at, format!("link target: {e}")))?,
            ),
            Kind::Regular if is_doc(&path) || is_legacy_meta(&path) => {
                let limit = match path.as_str() {
                    "manifest.json" | "index.json" => opts.max_manifest_json,
                    _ => MAX_SMALL_DOC,
                };
                if entry.size > limit {
                    return Err(err(
                        ErrorKind::TooLarge,
                        at,
                        format!("{} bytes exceeds the {limit}-byte limit", entry.size),
                    ));
                }
                let bytes = tar
                    .read_entry_to_vec()
                    .await
                    .map_err(|e| read_err(Some(at), e))?;
                if is_doc(&path) {
                    File::Doc(bytes)
                } else {
                    File::Skipped
                }
            }
            Kind::Regular => {
                let expected = match paths::blob_path_digest(&path) {
                    Some(Ok(d)) => Some(d),
                    Some(Err(e)) => return Err(err(ErrorKind::Entry, at, e.0)),
                    None => None,
                };
                let alg = expected
                    .as_ref()
                    .map_or(Algorithm::Sha256, Digest::algorithm);
                let (ingested, pin) = match kept.as_mut() {
                    Some(k) => dry_run::take(store, tar, expected.as_ref(), alg, k, at).await?,
                    None => {
                        // Written cold when the name says the digest, as the imgpkg import
                        // writes its layers (nobody reads them right away).
                        let stored = match &expected {
                            Some(d) => {
                                store
                                    .ingest_blob(Some(d), alg, tar.data(), Ingest { cold: true })
                                    .await
                            }
                            None => {
                                store
                                    .ingest_blob(None, alg, tar.data(), Ingest::default())
                                    .await
                            }
                        };
                        if let Some(e) = tar.take_data_error() {
                            return Err(read_err(Some(at), e));
                        }
                        stored.map_err(|e| match e {
                            StoreError::DigestMismatch { actual, .. } => err(
                                ErrorKind::Digest,
                                at,
                                format!(
                                    "content hashes to {actual}, not to the digest in its name"
                                ),
                            ),
                            e => storage_err(&format!("storing {at}"), e),
                        })?
                    }
                };
                File::Blob {
                    digest: ingested.digest,
                    size: ingested.size,
                    existed: ingested.existed,
                    _pin: pin,
                }
            }
            other => {
                return Err(err(
                    ErrorKind::Entry,
                    at,
                    format!("{other} not allowed in an image archive"),
                ))
            }
        };
        files.insert(path, file);
    }
    Ok(Entries { files, kept })
}

/// One manifest to store, in commit order (children before parents).
struct Staged {
    digest: Digest,
    media_type: String,
    bytes: Vec<u8>,
    kind: &'static str,
    original_ref: Option<String>,
    tags: Vec<Tag>,
}

/// What the transaction will hold.
#[derive(Default)]
struct Plan {
    links: Vec<Digest>,
    manifests: Vec<Staged>,
    pins: Vec<BlobPin>,
    blobs: BlobReport,
    counted: HashSet<Digest>,
    /// A dry run lists what is missing instead of failing on the first.
    dry: bool,
    missing: Vec<Missing>,
}

impl Plan {
    fn new(dry: bool) -> Plan {
        Plan {
            dry,
            ..Plan::default()
        }
    }

    /// `r`, except that in a dry run a missing blob is listed and comes back as `None`.
    fn absent<T>(&mut self, r: Result<T, ImportError>) -> Result<Option<T>, ImportError> {
        match r {
            Ok(v) => Ok(Some(v)),
            Err(e) if self.dry && e.kind == ErrorKind::MissingBlob => {
                self.missing.push(Missing {
                    entry: e.entry.unwrap_or_default(),
                    message: e.message,
                });
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    fn link(&mut self, d: &Digest, size: u64, existed: bool) {
        self.links.push(d.clone());
        if self.counted.insert(d.clone()) {
            if existed {
                self.blobs.present += 1;
            } else {
                self.blobs.new += 1;
                self.blobs.new_bytes = self.blobs.new_bytes.saturating_add(size);
            }
        }
    }

    /// Adds `tag` → the manifest at `index`, refusing one tag for two different images.
    fn tag(&mut self, index: usize, tag: Tag, from: &str) -> Result<(), ImportError> {
        let digest = self.manifests[index].digest.clone();
        for m in &self.manifests {
            if m.tags.contains(&tag) && m.digest != digest {
                return Err(ImportError::new(
                    ErrorKind::Manifest,
                    Some(from),
                    format!(
                        "two images of the archive map to tag {}: {} and {}; the repository part of a reference is not kept (every image lands in ?repository=), so import them into separate repositories",
                        tag.as_str(),
                        m.original_ref.as_deref().unwrap_or("an untagged image"),
                        digest
                    ),
                ));
            }
        }
        let m = &mut self.manifests[index];
        if !m.tags.contains(&tag) {
            m.tags.push(tag);
        }
        Ok(())
    }
}

/// Reads a stored blob back into memory, at most `limit` bytes.
pub(super) async fn read_stored(
    store: &Store,
    d: &Digest,
    limit: u64,
    entry: &str,
) -> Result<Vec<u8>, ImportError> {
    let f = store
        .open_stored_blob(d)
        .await
        .map_err(|e| storage_err(&format!("reading {entry} back"), e))?;
    let mut out = Vec::new();
    f.take(limit.saturating_add(1))
        .read_to_end(&mut out)
        .await
        .map_err(|e| storage_err(&format!("reading {entry} back"), StoreError::Io(e)))?;
    if out.len() as u64 > limit {
        return Err(err(
            ErrorKind::TooLarge,
            entry,
            format!("larger than the {limit}-byte limit"),
        ));
    }
    Ok(out)
}

/// The classic `docker save` form: `manifest.json` lists configs and layers by path.
async fn plan_docker(
    store: &Store,
    entries: &Entries,
    images: Vec<DockerImage>,
) -> Result<Plan, ImportError> {
    let mut plan = Plan::new(entries.kept.is_some());
    for (n, image) in images.iter().enumerate() {
        let at = format!("manifest.json[{n}]");
        // In a dry run a missing config or layer is listed, the other layers still checked,
        // and the image (whose manifest needs them all) left out.
        let mut whole = true;
        let config = plan.absent(entries.blob(&image.config, &at))?;
        let mut diff_ids = None;
        if let Some((config, config_size, config_existed)) = &config {
            if *config_size > MAX_MANIFEST_BYTES as u64 {
                return Err(err(
                    ErrorKind::TooLarge,
                    &image.config,
                    format!("image config of {config_size} bytes is larger than the {MAX_MANIFEST_BYTES}-byte limit"),
                ));
            }
            let raw = entries
                .read_back(store, config, MAX_MANIFEST_BYTES as u64, &image.config)
                .await?;
            let ids = model::parse_diff_ids(&raw)
                .map_err(|e| err(ErrorKind::Manifest, &image.config, e.0))?;
            if ids.len() != image.layers.len() {
                return Err(err(
                    ErrorKind::Manifest,
                    &at,
                    format!(
                        "{} layers listed, but config {} has {} rootfs.diff_ids",
                        image.layers.len(),
                        image.config,
                        ids.len()
                    ),
                ));
            }
            plan.link(config, *config_size, *config_existed);
            diff_ids = Some(ids);
        } else {
            whole = false;
        }
        let mut layers = Vec::with_capacity(image.layers.len());
        for (i, path) in image.layers.iter().enumerate() {
            let Some((digest, size, existed)) = plan.absent(entries.blob(path, &at))? else {
                whole = false;
                continue;
            };
            if let Some(diff_id) = diff_ids.as_ref().map(|ids| &ids[i]) {
                let media_type = layer_media_type(store, entries, &digest, diff_id, path).await?;
                layers.push((digest.clone(), size, media_type));
            }
            plan.link(&digest, size, existed);
        }
        let Some((config, config_size, _)) = config.filter(|_| whole) else {
            continue;
        };
        let bytes = model::docker_manifest((&config, config_size), &layers);
        let digest = Digest::of(Algorithm::Sha256, &bytes);
        let first_ref = image.repo_tags.as_ref().and_then(|t| t.first()).cloned();
        let index = push_manifest(
            &mut plan,
            Staged {
                digest,
                media_type: model::DOCKER_MANIFEST.to_owned(),
                bytes,
                kind: "image",
                original_ref: first_ref,
                tags: Vec::new(),
            },
        );
        for r in image.repo_tags.iter().flatten() {
            let t = paths::tag_of(r).map_err(|e| {
                err(
                    ErrorKind::Manifest,
                    &at,
                    format!("RepoTags {:?}: {e}", truncate(r, 200)),
                )
            })?;
            plan.tag(index, t, &at)?;
        }
    }
    Ok(plan)
}

/// Adds a manifest once (two archive images may be the same), returning its index.
fn push_manifest(plan: &mut Plan, m: Staged) -> usize {
    if let Some(i) = plan.manifests.iter().position(|x| x.digest == m.digest) {
        return i;
    }
    plan.manifests.push(m);
    plan.manifests.len() - 1
}

/// A classic layer is normally the uncompressed tar, so its digest is its DiffID. Some
/// writers store it gzipped: then the DiffID is checked on the inflated bytes.
async fn layer_media_type(
    store: &Store,
    entries: &Entries,
    digest: &Digest,
    diff_id: &Digest,
    path: &str,
) -> Result<&'static str, ImportError> {
    if digest == diff_id {
        return Ok(model::DOCKER_LAYER_TAR);
    }
    let mismatch = |actual: &Digest| {
        err(
            ErrorKind::Digest,
            path,
            format!("layer content hashes to {actual}, but the image config's rootfs.diff_ids says {diff_id}"),
        )
    };
    // A dry run inflated the layer while it streamed by (it is not stored to read back).
    let kept = match &entries.kept {
        Some(k) => {
            let stored = store.blob_exists(digest).await;
            let stored = stored.map_err(|e| storage_err(&format!("looking up {path}"), e))?;
            (!stored).then_some(k)
        }
        None => None,
    };
    if let Some(k) = kept {
        return match k.inflated(digest) {
            None => Err(mismatch(digest)),
            Some(Err(e)) => Err(err(
                ErrorKind::Tar,
                path,
                format!("inflating the layer: {e}"),
            )),
            Some(Ok(actual)) if actual != diff_id => Err(mismatch(actual)),
            Some(Ok(_)) => Ok(model::DOCKER_LAYER_GZIP),
        };
    }
    let open = |what: &'static str| {
        move |e: StoreError| storage_err(&format!("reading layer {path} back ({what})"), e)
    };
    let mut f = store
        .open_stored_blob(digest)
        .await
        .map_err(open("sniff"))?;
    let mut head = [0u8; 6];
    let n = f
        .read(&mut head)
        .await
        .map_err(|e| open("sniff")(e.into()))?;
    if gzip::sniff(&head[..n]) != Compression::Gzip {
        return Err(mismatch(digest));
    }
    let f = store
        .open_stored_blob(digest)
        .await
        .map_err(open("inflate"))?;
    let mut gz = GzipDecoder::new(BufReader::new(f), InflateLimits::default());
    let mut h = diff_id.algorithm().hasher();
    let mut buf = vec![0u8; 256 << 10];
    loop {
        let n = gz
            .read(&mut buf)
            .await
            .map_err(|e| err(ErrorKind::Tar, path, format!("inflating the layer: {e}")))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    let actual = h.finish();
    if actual != *diff_id {
        return Err(mismatch(&actual));
    }
    Ok(model::DOCKER_LAYER_GZIP)
}

/// The OCI layout form (`oci-layout`, `index.json`, `blobs/`), from skopeo's `oci-archive:`,
/// `podman save --format oci-archive` and docker ≥ 25 (which adds a `manifest.json` we do not
/// need: the index says everything, with the original manifests byte for byte).
async fn plan_oci(
    store: &Store,
    repo: &RepoName,
    entries: &Entries,
    index_json: &[u8],
) -> Result<Plan, ImportError> {
    match entries.doc("oci-layout") {
        Some(b) => {
            model::check_oci_layout(b).map_err(|e| err(ErrorKind::Manifest, "oci-layout", e.0))?
        }
        None => {
            return Err(err(
                ErrorKind::Manifest,
                "oci-layout",
                "missing: an archive with index.json must be an OCI image layout",
            ))
        }
    }
    let top = match model::parse_manifest(index_json, model::OCI_INDEX)
        .map_err(|e| err(ErrorKind::Manifest, "index.json", e.0))?
    {
        Parsed::Index { manifests, .. } => manifests,
        Parsed::Image { .. } => unreachable!("parsed as an index"),
    };
    if top.is_empty() {
        return Err(err(ErrorKind::Manifest, "index.json", "lists no image"));
    }
    let layout = Layout {
        store,
        repo,
        entries,
        blobs: entries.by_digest(),
    };
    let mut plan = Plan::new(entries.kept.is_some());
    for (n, desc) in top.iter().enumerate() {
        let at = format!("index.json manifests[{n}]");
        let name = desc
            .annotations
            .get(model::CONTAINERD_NAME)
            .or_else(|| desc.annotations.get(model::REF_NAME))
            .cloned();
        let walked = layout.walk(&mut plan, desc, &at, 0, name.clone()).await?;
        // A dry run goes on past a missing manifest (listed): it has nothing to tag.
        let Some(index) = walked else { continue };
        // The tag: from the ref.name annotation (usually the tag alone), else from the
        // full name containerd and docker add.
        let tag_ref = desc
            .annotations
            .get(model::REF_NAME)
            .or_else(|| desc.annotations.get(model::CONTAINERD_NAME));
        if let Some(r) = tag_ref {
            let t = paths::tag_of(r).map_err(|e| {
                err(
                    ErrorKind::Manifest,
                    &at,
                    format!("{} {:?}: {e}", model::REF_NAME, truncate(r, 200)),
                )
            })?;
            plan.tag(index, t, &at)?;
        }
    }
    Ok(plan)
}

/// An OCI layout archive being walked from its `index.json`.
struct Layout<'a> {
    store: &'a Store,
    repo: &'a RepoName,
    entries: &'a Entries,
    /// Every blob of the archive by digest (a layout names blobs by digest, not path).
    blobs: HashMap<&'a Digest, (u64, bool)>,
}

impl Layout<'_> {
    /// Checks a blob the archive should carry: present with the described size, or already
    /// in the repository. Returns whether the archive holds it.
    fn check_blob(
        &self,
        desc: &Descriptor,
        referrer: &str,
    ) -> Result<Option<(u64, bool)>, ImportError> {
        let entry = paths::blob_path(&desc.digest);
        match self.blobs.get(&desc.digest) {
            Some(&(size, existed)) if size == desc.size => Ok(Some((size, existed))),
            Some(&(size, _)) => Err(err(
                ErrorKind::Size,
                &entry,
                format!("{size} bytes, but {referrer} says {}", desc.size),
            )),
            None if self.store.repo_has_blob(self.repo, &desc.digest) => Ok(None),
            None => Err(err(
                ErrorKind::MissingBlob,
                &entry,
                format!(
                    "referenced by {referrer} but neither in the archive nor in repository {}",
                    self.repo
                ),
            )),
        }
    }

    /// Links a config or layer `desc` names, if the archive or the repository has it.
    fn link(&self, plan: &mut Plan, desc: &Descriptor, referrer: &str) -> Result<(), ImportError> {
        match plan.absent(self.check_blob(desc, referrer))? {
            Some(Some((size, existed))) => plan.link(&desc.digest, size, existed),
            Some(None) => {
                plan.blobs.present += 1;
                plan.links.push(desc.digest.clone());
            }
            // Missing: listed by a dry run.
            None => {}
        }
        Ok(())
    }

    /// Stages the manifest `desc` names and everything below it; returns its plan index
    /// (`None`: missing, in a dry run).
    async fn walk(
        &self,
        plan: &mut Plan,
        desc: &Descriptor,
        referrer: &str,
        depth: usize,
        original_ref: Option<String>,
    ) -> Result<Option<usize>, ImportError> {
        if depth > MAX_INDEX_DEPTH {
            return Err(err(
                ErrorKind::Manifest,
                referrer,
                format!("indexes nested more than {MAX_INDEX_DEPTH} deep"),
            ));
        }
        let entry = paths::blob_path(&desc.digest);
        if desc.size > MAX_MANIFEST_BYTES as u64 {
            return Err(err(
                ErrorKind::TooLarge,
                &entry,
                format!(
                    "a manifest of {} bytes is larger than the {MAX_MANIFEST_BYTES}-byte limit",
                    desc.size
                ),
            ));
        }
        if let Some(i) = plan.manifests.iter().position(|m| m.digest == desc.digest) {
            return Ok(Some(i));
        }
        // Manifests must come with the archive (the tags and the record name them), even
        // when the repository has them already.
        let Some(&(size, _)) = self.blobs.get(&desc.digest) else {
            return plan.absent(Err(err(
                ErrorKind::MissingBlob,
                &entry,
                format!("manifest referenced by {referrer} is not in the archive"),
            )));
        };
        if size != desc.size {
            return Err(err(
                ErrorKind::Size,
                &entry,
                format!("{size} bytes, but {referrer} says {}", desc.size),
            ));
        }
        let bytes = self
            .entries
            .read_back(self.store, &desc.digest, size, &entry)
            .await?;
        let parsed = model::parse_manifest(&bytes, &desc.media_type)
            .map_err(|e| err(ErrorKind::Manifest, &entry, e.0))?;
        let (media_type, kind) = match parsed {
            Parsed::Index {
                media_type,
                manifests,
            } => {
                for (n, child) in manifests.iter().enumerate() {
                    let at = format!("{entry} manifests[{n}]");
                    Box::pin(self.walk(plan, child, &at, depth + 1, None)).await?;
                }
                (media_type, "index")
            }
            Parsed::Image {
                media_type,
                config,
                layers,
            } => {
                self.link(plan, &config, &format!("{entry} config"))?;
                for (n, layer) in layers.iter().enumerate() {
                    let carried = self.blobs.contains_key(&layer.digest)
                        || self.store.repo_has_blob(self.repo, &layer.digest);
                    if !carried && !crate::imgpkg::manifest::is_distributable(&layer.media_type) {
                        // Non-distributable (foreign) layers are fetched from their URLs.
                        continue;
                    }
                    self.link(plan, layer, &format!("{entry} layers[{n}]"))?;
                }
                (media_type, "image")
            }
        };
        let kind = if depth > 0 { "index-child" } else { kind };
        plan.manifests.push(Staged {
            digest: desc.digest.clone(),
            media_type,
            bytes,
            kind,
            original_ref,
            tags: Vec::new(),
        });
        Ok(Some(plan.manifests.len() - 1))
    }
}

/// Stores the manifests (pinned) and commits links, manifests, tags and the import record.
/// A dry run checks the manifests the same way and reports the tags against the repository
/// instead.
async fn commit(
    store: &Store,
    repo: &RepoName,
    mut plan: Plan,
    format: &'static str,
    opts: &ImportOptions,
) -> Result<ImportReport, ImportError> {
    let mut txn = Txn::new();
    let mut record = ImportRecord::new(repo.clone());
    record.name = opts.tar_name.clone();
    record.size = opts
        .received
        .as_ref()
        .map(|c| c.load(std::sync::atomic::Ordering::Relaxed));
    record.imported_by = opts.imported_by.clone();
    let mut linked = HashSet::new();
    for d in &plan.links {
        if linked.insert(d.clone()) {
            txn.link_blob(repo.clone(), d.clone());
        }
    }
    let mut images = Vec::new();
    for m in &plan.manifests {
        if !opts.dry_run {
            let (_, pin) = store
                .ingest_blob(
                    Some(&m.digest),
                    m.digest.algorithm(),
                    &m.bytes[..],
                    Ingest::default(),
                )
                .await
                .map_err(|e| storage_err(&format!("storing manifest {}", m.digest), e))?;
            plan.pins.push(pin);
        }
        let rec =
            ManifestRecord::parse(m.digest.clone(), &m.media_type, &m.bytes).map_err(|e| {
                ImportError::new(
                    ErrorKind::Manifest,
                    Some(&paths::blob_path(&m.digest)),
                    e.to_string(),
                )
            })?;
        txn.put_manifest(repo.clone(), rec);
        record.manifests.push(m.digest.clone());
        for t in &m.tags {
            txn.tag(repo.clone(), t.clone(), m.digest.clone());
            record.tags.push(ImportedTag {
                tag: t.clone(),
                digest: m.digest.clone(),
            });
        }
        images.push(ImageReport {
            original_ref: m.original_ref.clone(),
            digest: m.digest.to_string(),
            media_type: m.media_type.clone(),
            kind: m.kind,
            tags: m.tags.iter().map(|t| t.as_str().to_owned()).collect(),
        });
    }
    let (import_id, dry_run) =
        commit_or_report(store, repo, txn, record, opts.dry_run, plan.missing).await?;
    Ok(ImportReport {
        format,
        import_id,
        repository: repo.to_string(),
        root_bundle: None,
        images,
        blobs: plan.blobs,
        tar_bytes: 0,
        upload_bytes: 0,
        seconds: 0.0,
        images_yml: None,
        dry_run,
    })
}

/// Imports a docker or OCI archive from a plain tar stream.
pub async fn import_tar<R: AsyncRead + Unpin + Send>(
    store: &Store,
    repo: &RepoName,
    stream: R,
    opts: &ImportOptions,
) -> Result<ImportReport, ImportError> {
    let started = Instant::now();
    let mut tar = TarReader::new(stream);
    let entries = read_entries(store, &mut tar, opts).await?;
    let tar_bytes = tar.offset();
    drop(tar);
    let (plan, format) = if let Some(index) = entries.doc("index.json") {
        (plan_oci(store, repo, &entries, index).await?, "oci-archive")
    } else if let Some(m) = entries.doc("manifest.json") {
        let images = model::parse_docker_manifest(m)
            .map_err(|e| err(ErrorKind::Manifest, "manifest.json", e.0))?;
        (
            plan_docker(store, &entries, images).await?,
            "docker-archive",
        )
    } else {
        return Err(ImportError::new(
            ErrorKind::Manifest,
            None,
            "neither manifest.json nor index.json: not an imgpkg tar, `docker save` archive or OCI image layout",
        ));
    };
    let mut report = commit(store, repo, plan, format, opts).await?;
    report.tar_bytes = tar_bytes;
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}
