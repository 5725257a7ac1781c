//! The import itself: stream an imgpkg tar into the store and commit, in one metadata
//! transaction, the registry state `imgpkg copy --tar X --to-repo HOST/REPO` would leave.
//!
//! Data flow: body → (gzip sniffed and inflated) → tar headers parsed one by one → each
//! blob entry streamed into the content store, hashed and verified on the way (order does
//! not matter; `manifest.json` may come first or last) → after the end-of-archive marker:
//! closure checked (every layer in the tar, already in the repository, or non-distributable),
//! configs and manifests stored from their verified inline bytes, bundles walked and
//! ImageLocations images built → one `Txn` with every link, manifest and tag → commit.
//!
//! All or nothing: blobs written before a failure sit in the content store unlinked and
//! invisible; no repository link, manifest or tag exists until the single commit, which the
//! store applies atomically. This is the only file of the importer that touches storage.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;
use tokio::io::{AsyncRead, AsyncReadExt};

use airdock_storage::{
    Digest, ImportRecord, ImportedTag, Ingest, Ingested, ManifestRecord, Pin as BlobPin, RepoName,
    Store, StoreError, Tag, Txn,
};

use super::bundle_layer;
#[cfg(test)]
use super::bundle_layer::clean_path;
use super::dry_run::{self, DryRunReport, Kept, Missing};
use super::gzip::{InflateLimitExceeded, InflateLimits};
use super::locations::{self, LocationsImage};
use super::lock::ImagesLock;
use super::manifest::{self, ImageSet, Item, DOCKER_LAYER};
use super::names::{self, truncate};
use super::stream::{ReadError, ReadErrorKind, TarReader};
use super::tarfmt::Kind;
use super::upload;

/// Tunables of one import.
#[derive(Clone, Debug)]
pub struct ImportOptions {
    /// Largest `manifest.json` read into memory.
    pub max_manifest_json: u64,
    /// Bounds on a gzip upload's expansion.
    pub inflate: InflateLimits,
    /// `host[:port]` clients use to reach this registry; when known, the report carries the
    /// root bundle's `images.yml` as `imgpkg pull` will rewrite it.
    pub registry_host: Option<String>,
    /// The tar's file name, for the import record.
    pub tar_name: Option<String>,
    /// Who imports (the admin principal), for the import record.
    pub imported_by: Option<String>,
    /// The upload's bytes as received (before any decompression), counted by a caller that
    /// reads the upload before handing a decoded stream on: the import record's size.
    pub received: Option<std::sync::Arc<std::sync::atomic::AtomicU64>>,
    /// Read and verify everything, write nothing, and report what the import would do.
    pub dry_run: bool,
}

impl Default for ImportOptions {
    fn default() -> Self {
        ImportOptions {
            max_manifest_json: 64 << 20,
            inflate: InflateLimits::default(),
            registry_host: None,
            tar_name: None,
            imported_by: None,
            received: None,
            dry_run: false,
        }
    }
}

/// What went wrong, in categories the HTTP layer maps to status codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// Broken tar structure: truncation, bad headers, trailing garbage, corrupt gzip.
    Tar,
    /// A tar entry imgpkg never writes: links, devices, odd or duplicate names.
    Entry,
    /// Bytes that do not hash to their stated digest.
    Digest,
    /// A size that disagrees with the descriptor.
    Size,
    /// `manifest.json` or a bundle's `images.yml` missing or malformed.
    Manifest,
    /// A referenced blob is neither in the tar nor in the repository.
    MissingBlob,
    /// A size limit was hit (huge manifest.json, gzip bomb).
    TooLarge,
    /// A compression format we do not read.
    Unsupported,
    /// Reading the upload failed (client went away).
    Interrupted,
    /// The store failed; not the client's fault.
    Storage,
    /// The disk is full: 507, as for a push, so a client can tell "free space and retry".
    StorageFull,
}

/// A failed import: kind, the tar entry concerned (if any) and a message for humans.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{}{message}", entry.as_ref().map(|e| format!("{e}: ")).unwrap_or_default())]
pub struct ImportError {
    pub kind: ErrorKind,
    pub entry: Option<String>,
    pub message: String,
}

impl ImportError {
    pub fn new(kind: ErrorKind, entry: Option<&str>, message: impl Into<String>) -> ImportError {
        ImportError {
            kind,
            entry: entry.map(str::to_owned),
            message: message.into(),
        }
    }

    /// The OCI-style error code for the JSON body.
    pub fn code(&self) -> &'static str {
        match self.kind {
            ErrorKind::Tar | ErrorKind::Entry => "TAR_INVALID",
            ErrorKind::Digest => "DIGEST_INVALID",
            ErrorKind::Size => "SIZE_INVALID",
            ErrorKind::Manifest => "MANIFEST_INVALID",
            ErrorKind::MissingBlob => "MANIFEST_BLOB_UNKNOWN",
            ErrorKind::TooLarge => "SIZE_INVALID",
            ErrorKind::Unsupported => "UNSUPPORTED",
            ErrorKind::Interrupted => "BLOB_UPLOAD_INVALID",
            ErrorKind::Storage | ErrorKind::StorageFull => "UNKNOWN",
        }
    }

    /// The HTTP status this error deserves.
    pub fn http_status(&self) -> u16 {
        match self.kind {
            ErrorKind::TooLarge => 413,
            ErrorKind::Unsupported => 415,
            ErrorKind::Storage => 500,
            ErrorKind::StorageFull => 507,
            _ => 400,
        }
    }
}

/// The root bundle of a bundle tar.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct RootBundle {
    pub original_ref: String,
    pub digest: String,
    pub tag: Option<String>,
}

/// One manifest the import stored.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct ImageReport {
    /// Where the image came from (`OrigRef`/`Refs[0]`); none for ImageLocations images.
    pub original_ref: Option<String>,
    pub digest: String,
    pub media_type: String,
    /// `bundle`, `image`, `index`, `index-child` or `image-locations`.
    pub kind: &'static str,
    /// Tags pointing at it after the import (index children have none).
    pub tags: Vec<String>,
}

/// Blob accounting.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct BlobReport {
    /// Blobs the content store did not have before.
    pub new: u64,
    /// Blobs already stored (in the content store or in this repository).
    pub present: u64,
    /// Bytes of the new blobs.
    pub new_bytes: u64,
    /// Non-distributable layers neither in the tar nor in the repository (left out, as
    /// imgpkg does).
    pub skipped_non_distributable: u64,
}

/// The import's JSON report.
#[derive(Clone, Debug, Serialize)]
pub struct ImportReport {
    /// What the upload was: `imgpkg`, `docker-archive` or `oci-archive` (see `crate::archive`).
    pub format: &'static str,
    /// The id of the import record (`GET /admin/v1/imports`, `DELETE …/imports/<id>`);
    /// empty (and left out) for a dry run, which records nothing.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub import_id: String,
    pub repository: String,
    pub root_bundle: Option<RootBundle>,
    pub images: Vec<ImageReport>,
    pub blobs: BlobReport,
    /// Bytes of the tar stream (after gzip decoding).
    pub tar_bytes: u64,
    /// Bytes of the upload as received.
    pub upload_bytes: u64,
    pub seconds: f64,
    /// The root bundle's `.imgpkg/images.yml` as `imgpkg pull` rewrites it, when a bundle
    /// was imported and the registry host is known.
    pub images_yml: Option<String>,
    /// Only for a dry run: the tags it would set and what is missing.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dry_run: Option<DryRunReport>,
}

/// Imports one imgpkg tar (plain or gzip) read from `body` into `repo`.
pub async fn import<R: AsyncRead + Unpin + Send>(
    store: &Store,
    repo: &RepoName,
    body: R,
    opts: &ImportOptions,
) -> Result<ImportReport, ImportError> {
    let started = Instant::now();
    let received = Arc::new(AtomicU64::new(0));
    let tar = upload::open(body, received.clone(), opts.inflate).await?;
    let opts = &ImportOptions {
        received: Some(received),
        ..opts.clone()
    };
    let mut outcome = import_tar(store, repo, tar, opts).await?;
    outcome.seconds = started.elapsed().as_secs_f64();
    Ok(outcome)
}

/// Blob writes allowed to overlap: while the store makes blob N durable (fsync), the tar
/// reader already streams blob N+1. Each in-flight blob holds at most `CHANNEL_CHUNKS`
/// chunks in memory.
const MAX_IN_FLIGHT: usize = 3;
const CHUNK: usize = 256 << 10;
const CHANNEL_CHUNKS: usize = 4;

/// A blob entry being written by a store task.
struct InFlight {
    digest: Digest,
    entry: String,
    all_zero: bool,
    seen: u64,
    task: tokio::task::JoinHandle<Result<(Ingested, BlobPin), StoreError>>,
}

/// The blob writes in flight, oldest first. Dropping it (an import failing early) aborts
/// them; their temporary files are removed by the store.
#[derive(Default)]
struct Pipeline {
    inflight: VecDeque<InFlight>,
}

impl Drop for Pipeline {
    fn drop(&mut self) {
        for f in &self.inflight {
            f.task.abort();
        }
    }
}

impl Pipeline {
    async fn finish_one(
        &mut self,
        received: &mut BTreeMap<Digest, Received>,
    ) -> Result<(), ImportError> {
        let Some(f) = self.inflight.pop_front() else {
            return Ok(());
        };
        let at = Some(f.entry.as_str());
        let result = f.task.await.map_err(|e| {
            ImportError::new(ErrorKind::Storage, at, format!("blob writer failed: {e}"))
        })?;
        let (ingested, pin) =
            result.map_err(|e| blob_store_err(&f.entry, f.all_zero && f.seen > 0, e))?;
        received.insert(
            f.digest,
            Received {
                size: ingested.size,
                existed: ingested.existed,
                entry: f.entry,
                _pin: pin,
            },
        );
        Ok(())
    }

    /// Waits for every writer, ignoring results (used on the failure path).
    async fn settle(&mut self) {
        while let Some(f) = self.inflight.pop_front() {
            let _ = f.task.await;
        }
    }

    async fn drain(
        &mut self,
        received: &mut BTreeMap<Digest, Received>,
    ) -> Result<(), ImportError> {
        while !self.inflight.is_empty() {
            self.finish_one(received).await?;
        }
        Ok(())
    }
}

fn blob_store_err(entry: &str, all_zero: bool, e: StoreError) -> ImportError {
    match e {
        StoreError::DigestMismatch { actual, .. } => {
            digest_mismatch(entry, all_zero, &actual.to_string())
        }
        e => storage_err(&format!("storing {entry}"), e),
    }
}

fn digest_mismatch(entry: &str, all_zero: bool, actual: &str) -> ImportError {
    let why = if all_zero {
        "its content is all zero bytes (an interrupted `imgpkg copy --to-tar` leaves such blobs; re-create the tar)".to_owned()
    } else {
        format!("content hashes to {actual}, not to the digest in its name")
    };
    ImportError::new(ErrorKind::Digest, Some(entry), why)
}

/// How a blob entry was taken in.
enum Started {
    /// Already in the content store: verified by hashing, nothing written.
    Present(Digest, Received),
    /// Being written by a store task.
    Flight(InFlight),
}

/// Takes in the current tar entry, a blob named `digest`: verifies it in place when the store
/// already has it (a re-import then writes nothing), else streams it to a store task.
async fn start_blob<R: AsyncRead + Unpin>(
    store: &Store,
    tar: &mut TarReader<R>,
    digest: Digest,
    entry: String,
    kept: Option<&mut Kept>,
) -> Result<Started, ImportError> {
    let at = Some(entry.as_str());
    let tar_failed = |tar: &mut TarReader<R>, e: io::Error| match tar.take_data_error() {
        Some(re) => read_err(at, re),
        None => ImportError::new(
            ErrorKind::Interrupted,
            at,
            format!("reading the upload: {e}"),
        ),
    };
    let mut all_zero = true;
    let mut seen = 0u64;
    // Claimed (pinned) rather than just looked at: GC cannot collect it before the commit.
    // A dry run only pins (in memory): claiming touches the file, and it writes nothing.
    let looked = format!("looking up {entry}");
    let present = match &kept {
        Some(_) => {
            let pin = store.pin_blob(&digest).await;
            let exists = store.blob_exists(&digest).await;
            Some((pin, exists.map_err(|e| storage_err(&looked, e))?))
        }
        None => store
            .claim_blob(&digest)
            .await
            .map_err(|e| storage_err(&looked, e))?
            .map(|pin| (pin, true)),
    };
    if let Some((pin, existed)) = present {
        let mut hasher = digest.algorithm().hasher();
        let mut buf = vec![0u8; CHUNK];
        let mut keep = match &kept {
            Some(k) if !existed && k.wants(&digest, tar.remaining()) => Some(Vec::new()),
            _ => None,
        };
        loop {
            let n = upload::fill(tar, &mut buf, &entry).await?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            all_zero &= buf[..n].iter().all(|&b| b == 0);
            seen += n as u64;
            if let Some(k) = &mut keep {
                k.extend_from_slice(&buf[..n]);
            }
        }
        let actual = hasher.finish();
        if actual != digest {
            return Err(digest_mismatch(
                &entry,
                all_zero && seen > 0,
                &actual.to_string(),
            ));
        }
        if let (Some(k), Some(bytes)) = (kept, keep) {
            k.keep(digest.clone(), bytes);
        }
        return Ok(Started::Present(
            digest,
            Received {
                size: seen,
                existed,
                entry,
                _pin: pin,
            },
        ));
    }

    let (tx, rx) = tokio::sync::mpsc::channel::<io::Result<bytes::Bytes>>(CHANNEL_CHUNKS);
    let chunks =
        futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|c| (c, rx)) });
    let writer = store.clone();
    let expected = digest.clone();
    let task = tokio::spawn(async move {
        let body = tokio_util::io::StreamReader::new(Box::pin(chunks));
        // Written cold: an import's layers are not read right away (see `BlobStore::put_cold`).
        writer
            .ingest_blob(
                Some(&expected),
                expected.algorithm(),
                body,
                Ingest { cold: true },
            )
            .await
    });
    loop {
        let mut chunk = bytes::BytesMut::with_capacity(CHUNK);
        while chunk.len() < CHUNK {
            match tar.data().read_buf(&mut chunk).await {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) => {
                    // Closing the channel ends the writer with a digest mismatch; waiting for
                    // it means its temporary file is gone before we report.
                    drop(tx);
                    let _ = task.await;
                    return Err(tar_failed(tar, e));
                }
            }
        }
        if chunk.is_empty() {
            break;
        }
        all_zero &= chunk.iter().all(|&b| b == 0);
        seen += chunk.len() as u64;
        if tx.send(Ok(chunk.freeze())).await.is_err() {
            // The writer stopped early; its result says why.
            let err = match task.await {
                Ok(Err(e)) => blob_store_err(&entry, false, e),
                Ok(Ok(_)) => ImportError::new(ErrorKind::Storage, at, "blob writer stopped early"),
                Err(e) => {
                    ImportError::new(ErrorKind::Storage, at, format!("blob writer failed: {e}"))
                }
            };
            return Err(err);
        }
    }
    drop(tx);
    Ok(Started::Flight(InFlight {
        digest,
        entry,
        all_zero,
        seen,
        task,
    }))
}

/// What a tar member name means.
enum Member {
    ManifestJson,
    Blob(Digest),
}

fn classify(name: &[u8]) -> Result<Member, &'static str> {
    if name.first() == Some(&b'/') {
        return Err("absolute path");
    }
    if name
        .split(|&c| c == b'/' || c == b'\\')
        .any(|part| part == b"..")
    {
        return Err("path traversal ('..')");
    }
    if name == b"manifest.json" {
        return Ok(Member::ManifestJson);
    }
    let blob = std::str::from_utf8(name)
        .ok()
        .and_then(names::parse_tar_member_name);
    blob.map(Member::Blob).ok_or(
        "unexpected entry: an imgpkg tar holds only manifest.json and <algorithm>-<hex>.tar.gz files",
    )
}

pub fn storage_err(what: &str, e: StoreError) -> ImportError {
    let kind = if e.is_client_error() {
        match e {
            StoreError::DigestMismatch { .. } | StoreError::DigestInvalid(_) => ErrorKind::Digest,
            StoreError::ManifestBlobUnknown(_) | StoreError::BlobUnknown(_) => {
                ErrorKind::MissingBlob
            }
            StoreError::TooLarge(_) => ErrorKind::TooLarge,
            _ => ErrorKind::Manifest,
        }
    } else if matches!(&e, StoreError::Io(io) if io.kind() == std::io::ErrorKind::StorageFull) {
        ErrorKind::StorageFull
    } else {
        ErrorKind::Storage
    };
    ImportError::new(kind, None, format!("{what}: {e}"))
}

pub fn read_err(entry: Option<&str>, e: ReadError) -> ImportError {
    let kind = match &e.kind {
        ReadErrorKind::Source(io) => {
            if io
                .get_ref()
                .is_some_and(|inner| inner.is::<InflateLimitExceeded>())
            {
                ErrorKind::TooLarge
            } else if io.kind() == io::ErrorKind::InvalidData
                || io.kind() == io::ErrorKind::UnexpectedEof
            {
                // The gzip layer reports corruption and truncation this way.
                ErrorKind::Tar
            } else {
                ErrorKind::Interrupted
            }
        }
        ReadErrorKind::MetaTooLarge(..) => ErrorKind::TooLarge,
        _ => ErrorKind::Tar,
    };
    ImportError::new(kind, entry, e.to_string())
}

/// A blob entry that went into the content store.
struct Received {
    size: u64,
    existed: bool,
    entry: String,
    /// Keeps GC off the blob until the import has committed (or failed).
    _pin: BlobPin,
}

/// Everything after the stream: what the transaction will contain.
#[derive(Default)]
struct Staged {
    txn_links: Vec<Digest>,
    /// Blobs written while staging, kept safe from GC until the commit.
    pins: Vec<BlobPin>,
    blobs: BlobReport,
    locations: Vec<(Digest, LocationsImage)>,
    root_lock: Option<ImagesLock>,
    /// Dry run: layers the real import would refuse for.
    missing: Vec<Missing>,
}

/// Imports one imgpkg tar from its plain tar stream (an upload [`upload::open`] has opened,
/// counting its bytes into `opts.received`).
pub async fn import_tar<T: AsyncRead + Unpin + Send>(
    store: &Store,
    repo: &RepoName,
    stream: T,
    opts: &ImportOptions,
) -> Result<ImportReport, ImportError> {
    let mut tar = TarReader::new(stream);
    let mut pipeline = Pipeline::default();
    let mut received: BTreeMap<Digest, Received> = BTreeMap::new();
    let mut kept = opts.dry_run.then(Kept::default);
    let read = read_entries(
        store,
        &mut tar,
        &mut pipeline,
        &mut received,
        kept.as_mut(),
        opts,
    )
    .await;
    let set = match read {
        Ok(set) => set,
        Err(e) => {
            // Let blob writers finish (or fail) before answering, so nothing of this
            // import is still being written when the client hears about the failure.
            pipeline.settle().await;
            return Err(e);
        }
    };
    let tar_bytes = tar.offset();
    drop(tar);
    let staged = stage(store, repo, &set, &received, kept.as_ref()).await?;
    // The whole upload has been read by now (the reader checks what follows the tar's end).
    let upload_bytes = opts
        .received
        .as_ref()
        .map_or(tar_bytes, |c| c.load(Ordering::Relaxed));
    commit(store, repo, &set, staged, (tar_bytes, upload_bytes), opts).await
}

/// Reads the whole tar: blobs into the store (verified), `manifest.json` parsed and checked
/// against them. Returns the image set once the end-of-archive marker has been read.
async fn read_entries<T: AsyncRead + Unpin + Send>(
    store: &Store,
    tar: &mut TarReader<T>,
    pipeline: &mut Pipeline,
    received: &mut BTreeMap<Digest, Received>,
    mut kept: Option<&mut Kept>,
    opts: &ImportOptions,
) -> Result<ImageSet, ImportError> {
    let mut names: HashSet<Vec<u8>> = HashSet::new();
    let mut set: Option<ImageSet> = None;
    // digest → size of every blob manifest.json references (layers and configs).
    let mut wanted: BTreeMap<Digest, u64> = BTreeMap::new();
    let mut current: Option<String> = None;

    while let Some(entry) = upload::next_entry(tar, &mut current).await? {
        let name = entry.display_name();
        let at = Some(name.as_str());
        if entry.kind != Kind::Regular {
            return Err(ImportError::new(
                ErrorKind::Entry,
                at,
                format!(
                    "{} not allowed: an imgpkg tar holds only regular files",
                    entry.kind
                ),
            ));
        }
        let member =
            classify(&entry.name).map_err(|why| ImportError::new(ErrorKind::Entry, at, why))?;
        if !names.insert(entry.name.clone()) {
            return Err(ImportError::new(ErrorKind::Entry, at, "duplicate entry"));
        }
        match member {
            Member::ManifestJson => {
                if entry.size > opts.max_manifest_json {
                    return Err(ImportError::new(
                        ErrorKind::TooLarge,
                        at,
                        format!(
                            "{} bytes exceeds the {}-byte limit for manifest.json",
                            entry.size, opts.max_manifest_json
                        ),
                    ));
                }
                let bytes = tar.read_entry_to_vec().await.map_err(|e| read_err(at, e))?;
                // Blobs still being written must be accounted for before the check below.
                pipeline.drain(received).await?;
                let parsed = manifest::parse(&bytes)
                    .map_err(|e| ImportError::new(ErrorKind::Manifest, at, e.to_string()))?;
                drop(bytes);
                wanted = wanted_blobs(&parsed);
                // Blobs that came before manifest.json are checked now.
                for (d, r) in received.iter() {
                    check_wanted(&wanted, d, r.size, &r.entry)?;
                }
                if let Some(k) = kept.as_deref_mut() {
                    k.know(&parsed);
                }
                set = Some(parsed);
            }
            Member::Blob(d) => {
                if set.is_some() {
                    // With manifest.json known, refuse before reading: a wrong size field
                    // cannot make us write gigabytes (gzip bombs included).
                    check_wanted(&wanted, &d, entry.size, &name)?;
                }
                let started = start_blob(store, tar, d, name, kept.as_deref_mut()).await?;
                match started {
                    Started::Present(d, r) => {
                        received.insert(d, r);
                    }
                    Started::Flight(f) => {
                        pipeline.inflight.push_back(f);
                        while pipeline.inflight.len() > MAX_IN_FLIGHT {
                            pipeline.finish_one(received).await?;
                        }
                    }
                }
            }
        }
    }
    pipeline.drain(received).await?;
    set.ok_or_else(|| {
        ImportError::new(
            ErrorKind::Manifest,
            Some("manifest.json"),
            "missing: this is not an imgpkg tar (`imgpkg copy --to-tar` writes manifest.json first)",
        )
    })
}

/// Every blob `manifest.json` references that may appear as a tar entry, with its size.
fn wanted_blobs(set: &ImageSet) -> BTreeMap<Digest, u64> {
    let mut out: BTreeMap<Digest, u64> = set
        .layers()
        .into_iter()
        .map(|(d, l)| (d.clone(), l.size))
        .collect();
    // Some re-packers add config blobs as files too; accept them if they match.
    for (d, raw) in set.configs() {
        out.entry(d.clone()).or_insert(raw.len() as u64);
    }
    out
}

fn check_wanted(
    wanted: &BTreeMap<Digest, u64>,
    d: &Digest,
    size: u64,
    entry: &str,
) -> Result<(), ImportError> {
    match wanted.get(d) {
        None => Err(ImportError::new(
            ErrorKind::Entry,
            Some(entry),
            "blob not referenced by manifest.json",
        )),
        Some(&want) if want != size => Err(ImportError::new(
            ErrorKind::Size,
            Some(entry),
            format!("{size} bytes, but manifest.json says the blob has {want}"),
        )),
        Some(_) => Ok(()),
    }
}

/// Checks closure, stores configs, manifests and ImageLocations images (all unlinked until
/// the commit) and gathers what the transaction links.
async fn stage(
    store: &Store,
    repo: &RepoName,
    set: &ImageSet,
    received: &BTreeMap<Digest, Received>,
    kept: Option<&Kept>,
) -> Result<Staged, ImportError> {
    let mut staged = Staged::default();
    let dry = kept.is_some();
    for (d, need) in set.layers() {
        if received.contains_key(d) {
            // Counted below with every other tar entry.
        } else if store.repo_has_blob(repo, d) {
            staged.blobs.present += 1;
        } else if !manifest::is_distributable(need.media_type) {
            staged.blobs.skipped_non_distributable += 1;
            continue;
        } else {
            let e = ImportError::new(
                ErrorKind::MissingBlob,
                Some(&names::tar_member_name(d)),
                format!(
                    "not found in tar, nor in repository {repo} (layer of {}; hint: a non-distributable layer needs --include-non-distributable-layers on `imgpkg copy --to-tar`)",
                    need.used_by
                ),
            );
            // A dry run lists every missing reference rather than stopping at the first.
            if !dry {
                return Err(e);
            }
            staged.missing.push(Missing {
                entry: e.entry.unwrap_or_default(),
                message: e.message,
            });
            continue;
        }
        staged.txn_links.push(d.clone());
    }
    for r in received.values() {
        count(&mut staged.blobs, r.existed, r.size);
    }
    for (d, raw) in set.configs() {
        if dry {
            if !received.contains_key(d) {
                let existed = store.blob_exists(d).await;
                let existed = existed.map_err(|e| storage_err(&format!("looking up {d}"), e))?;
                count(&mut staged.blobs, existed, raw.len() as u64);
            }
            continue;
        }
        let (ing, pin) = store
            .ingest_blob(Some(d), d.algorithm(), raw.as_bytes(), Ingest::default())
            .await
            .map_err(|e| storage_err(&format!("storing config {d}"), e))?;
        staged.pins.push(pin);
        if !received.contains_key(d) {
            count(&mut staged.blobs, ing.existed, ing.size);
        }
        staged.txn_links.push(d.clone());
    }
    for m in set.manifests().into_iter().filter(|_| !dry) {
        let (_, pin) = store
            .ingest_blob(
                Some(m.digest),
                m.digest.algorithm(),
                m.bytes,
                Ingest::default(),
            )
            .await
            .map_err(|e| storage_err(&format!("storing manifest {}", m.digest), e))?;
        staged.pins.push(pin);
    }

    if let Some((_, root)) = set.root_bundle() {
        if !root.is_bundle {
            return Err(ImportError::new(
                ErrorKind::Manifest,
                Some("manifest.json"),
                format!(
                    "{} carries the root-bundle label but its config lacks the {} label",
                    root.digest,
                    manifest::BUNDLE_CONFIG_LABEL
                ),
            ));
        }
        let mut queue = VecDeque::from([root.digest.clone()]);
        let mut visited: HashSet<Digest> = HashSet::new();
        while let Some(bundle) = queue.pop_front() {
            if !visited.insert(bundle.clone()) {
                continue;
            }
            let lock = read_images_lock(store, set, &bundle, kept).await?;
            let walk = locations::walk_bundle(set, &bundle, &lock)
                .map_err(|e| ImportError::new(ErrorKind::Manifest, Some("manifest.json"), e.0))?;
            queue.extend(walk.nested_bundles.iter().cloned());
            let image = LocationsImage::build(&walk.locations);
            for (d, bytes) in [
                (&image.layer_digest, &image.layer),
                (&image.config_digest, &image.config),
            ] {
                if dry {
                    let existed = store.blob_exists(d).await;
                    let existed =
                        existed.map_err(|e| storage_err(&format!("looking up {d}"), e))?;
                    count(&mut staged.blobs, existed, bytes.len() as u64);
                    continue;
                }
                let (ing, pin) = store
                    .ingest_blob(Some(d), d.algorithm(), &bytes[..], Ingest::default())
                    .await
                    .map_err(|e| storage_err("storing an ImageLocations blob", e))?;
                staged.pins.push(pin);
                count(&mut staged.blobs, ing.existed, ing.size);
                staged.txn_links.push(d.clone());
            }
            let digest = &image.manifest_digest;
            if !dry {
                let (_, pin) = store
                    .ingest_blob(
                        Some(digest),
                        digest.algorithm(),
                        &image.manifest[..],
                        Ingest::default(),
                    )
                    .await
                    .map_err(|e| storage_err("storing an ImageLocations manifest", e))?;
                staged.pins.push(pin);
            }
            if bundle == root.digest {
                staged.root_lock = Some(lock);
            }
            staged.locations.push((bundle, image));
        }
    }
    Ok(staged)
}

fn count(b: &mut BlobReport, existed: bool, size: u64) {
    if existed {
        b.present += 1;
    } else {
        b.new += 1;
        // Sizes of bytes really received, so this cannot reach 2^64; saturate all the same.
        b.new_bytes = b.new_bytes.saturating_add(size);
    }
}

/// Reads `.imgpkg/images.yml` out of a bundle's single layer, now in the content store.
async fn read_images_lock(
    store: &Store,
    set: &ImageSet,
    bundle: &Digest,
    kept: Option<&Kept>,
) -> Result<ImagesLock, ImportError> {
    let at = Some("manifest.json");
    let Some(Item::Image(img)) = set.top_level(bundle).map(|t| &t.item) else {
        return Err(ImportError::new(
            ErrorKind::Manifest,
            at,
            format!("bundle {bundle} is not a top-level image of the tar"),
        ));
    };
    // imgpkg's bundle reader insists on exactly one Docker-typed layer.
    let [layer] = img.layers.as_slice() else {
        return Err(ImportError::new(
            ErrorKind::Manifest,
            at,
            format!(
                "bundle {bundle} has {} layers; a bundle has exactly one",
                img.layers.len()
            ),
        ));
    };
    if layer.media_type != DOCKER_LAYER {
        return Err(ImportError::new(
            ErrorKind::Manifest,
            at,
            format!(
                "bundle {bundle}'s layer has media type {}; imgpkg requires {DOCKER_LAYER}",
                layer.media_type
            ),
        ));
    }
    let entry = names::tar_member_name(&layer.digest);
    let bad = |msg: String| {
        ImportError::new(
            ErrorKind::Manifest,
            Some(&entry),
            format!("bundle {bundle}: {msg}"),
        )
    };
    // A dry run stored nothing: a new bundle layer is in memory.
    let file: Box<dyn AsyncRead + Unpin + Send + '_> =
        match kept.and_then(|k| k.get(&layer.digest)) {
            Some(bytes) => Box::new(bytes),
            None => {
                Box::new(store.open_stored_blob(&layer.digest).await.map_err(|e| {
                    storage_err(&format!("reading bundle layer {}", layer.digest), e)
                })?)
            }
        };
    bundle_layer::images_lock(file).await.map_err(bad)
}

fn tag(s: &str) -> Result<Tag, ImportError> {
    Tag::parse(s).map_err(|e| {
        ImportError::new(
            ErrorKind::Manifest,
            Some("manifest.json"),
            format!("tag {:?}: {e}", truncate(s, 200)),
        )
    })
}

fn item_kind(item: &Item) -> &'static str {
    match item {
        Item::Image(i) if i.is_bundle => "bundle",
        Item::Image(_) => "image",
        Item::Index(_) => "index",
    }
}

/// Builds the one transaction, in imgpkg's order (manifests children-first; `.imgpkg`
/// tags, then per bundle its locations tags, then the original tags), and commits it.
async fn commit(
    store: &Store,
    repo: &RepoName,
    set: &ImageSet,
    staged: Staged,
    (tar_bytes, upload_bytes): (u64, u64),
    opts: &ImportOptions,
) -> Result<ImportReport, ImportError> {
    let mut txn = Txn::new();
    // Written in the same transaction as the manifests and tags, so the record exists
    // exactly when they do (a kill -9 leaves both or neither).
    let mut record = ImportRecord::new(repo.clone());
    record.name = opts.tar_name.clone();
    record.size = Some(upload_bytes);
    record.imported_by = opts.imported_by.clone();
    let mut linked = HashSet::new();
    for d in &staged.txn_links {
        if linked.insert(d.clone()) {
            txn.link_blob(repo.clone(), d.clone());
        }
    }
    let mut images: Vec<ImageReport> = Vec::new();
    let top_digests: HashSet<&Digest> = set.items.iter().map(|t| t.item.digest()).collect();
    for m in set.manifests() {
        let manifest_record = ManifestRecord::parse(m.digest.clone(), m.media_type, m.bytes)
            .map_err(|e| {
                ImportError::new(
                    ErrorKind::Manifest,
                    Some("manifest.json"),
                    format!("manifest {}: {e}", m.digest),
                )
            })?;
        record.manifests.push(m.digest.clone());
        txn.put_manifest(repo.clone(), manifest_record);
        if !top_digests.contains(m.digest) {
            images.push(ImageReport {
                original_ref: None,
                digest: m.digest.to_string(),
                media_type: m.media_type.to_owned(),
                kind: "index-child",
                tags: Vec::new(),
            });
        }
    }
    // Top-level items: their `.imgpkg` tag (one per digest even if listed twice).
    let mut top_reports: BTreeMap<Digest, usize> = BTreeMap::new();
    for top in &set.items {
        let d = top.item.digest();
        if top_reports.contains_key(d) {
            continue;
        }
        let t = names::imgpkg_tag(d);
        tag_in(&mut txn, &mut record, repo, &t, d)?;
        top_reports.insert(d.clone(), images.len());
        images.push(ImageReport {
            original_ref: Some(top.orig_ref.clone()),
            digest: d.to_string(),
            media_type: top.item.media_type().to_owned(),
            kind: item_kind(&top.item),
            tags: vec![t],
        });
    }
    for (bundle, loc) in &staged.locations {
        let digest = &loc.manifest_digest;
        let manifest_record =
            ManifestRecord::parse(digest.clone(), manifest::DOCKER_MANIFEST, &loc.manifest)
                .map_err(|e| storage_err("ImageLocations manifest", e))?;
        record.manifests.push(digest.clone());
        txn.put_manifest(repo.clone(), manifest_record);
        let tags = vec![
            names::locations_tag(bundle),
            names::imgpkg_tag(&loc.manifest_digest),
        ];
        for t in &tags {
            tag_in(&mut txn, &mut record, repo, t, digest)?;
        }
        images.push(ImageReport {
            original_ref: None,
            digest: loc.manifest_digest.to_string(),
            media_type: manifest::DOCKER_MANIFEST.to_owned(),
            kind: "image-locations",
            tags,
        });
    }
    for top in &set.items {
        if let Some(t) = &top.tag {
            let d = top.item.digest();
            tag_in(&mut txn, &mut record, repo, t, d)?;
            if let Some(&i) = top_reports.get(d) {
                if !images[i].tags.contains(t) {
                    images[i].tags.push(t.clone());
                }
            }
        }
    }

    let (import_id, dry_run) =
        commit_or_report(store, repo, txn, record, opts.dry_run, staged.missing).await?;

    let root_bundle = set.root_bundle().map(|(top, img)| RootBundle {
        original_ref: top.orig_ref.clone(),
        digest: img.digest.to_string(),
        tag: top.tag.clone(),
    });
    let images_yml = match (&staged.root_lock, &opts.registry_host) {
        (Some(lock), Some(host)) => Some(lock.relocated_yaml(&format!("{host}/{repo}"))),
        _ => None,
    };
    Ok(ImportReport {
        format: "imgpkg",
        import_id,
        repository: repo.to_string(),
        root_bundle,
        images,
        blobs: staged.blobs,
        tar_bytes,
        upload_bytes,
        seconds: 0.0,
        images_yml,
        dry_run,
    })
}

/// The last step of every import: commit `txn` with its `record` (the import's id comes
/// back), or for a dry run commit nothing and report the record's tags against the
/// repository and what is `missing`.
pub(crate) async fn commit_or_report(
    store: &Store,
    repo: &RepoName,
    mut txn: Txn,
    record: ImportRecord,
    dry: bool,
    missing: Vec<Missing>,
) -> Result<(String, Option<DryRunReport>), ImportError> {
    if dry {
        let tags: Vec<(Tag, Digest)> = record
            .tags
            .iter()
            .map(|t| (t.tag.clone(), t.digest.clone()))
            .collect();
        let report = DryRunReport {
            would_import: missing.is_empty(),
            tags: dry_run::tag_changes(store, repo, &tags),
            missing,
        };
        return Ok((String::new(), Some(report)));
    }
    let import_id = record.id.clone();
    txn.record_import(record);
    store
        .commit(txn)
        .await
        .map_err(|e| storage_err("committing the import", e))?;
    Ok((import_id, None))
}

/// Sets tag `t` → `d` in `txn` and notes it in the import record.
fn tag_in(
    txn: &mut Txn,
    record: &mut ImportRecord,
    repo: &RepoName,
    t: &str,
    d: &Digest,
) -> Result<(), ImportError> {
    let t = tag(t)?;
    record.tags.push(ImportedTag {
        tag: t.clone(),
        digest: d.clone(),
    });
    txn.tag(repo.clone(), t, d.clone());
    Ok(())
}

#[cfg(test)]
#[path = "import_tests.rs"]
mod tests;
