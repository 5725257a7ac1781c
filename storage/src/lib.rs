//! airdock's content store: validated names and digests, a content-addressed blob store,
//! repository metadata (links, manifests, tags, referrers) and upload sessions.
//! It knows nothing of HTTP; see `layout` for the on-disk tree.

pub mod backup;
mod blobs;
pub mod blobstore;
mod digest;
mod error;
mod fsck;
mod gc;
mod imports;
pub mod layout;
mod listing;
mod manifest;
mod meta;
mod names;
mod pins;
pub mod random;
mod retention;
mod uploads;
mod usage;
mod vitals;

use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use tokio::io::AsyncRead;

pub use blobs::{read_range, Ingested};
pub use blobstore::{BlobClock, BlobStore};
pub use digest::{Algorithm, Digest, Hasher, Hex};
pub use error::StoreError;
pub use fsck::{FsckProblem, FsckReport};
pub use gc::{GcOptions, GcReport, HeldBack, RepoDigest, RepoTag};
pub use imports::{ImportRecord, ImportRemoval, ImportedTag};
pub use listing::{RepoPage, RepoSummary, TagRow};
pub use manifest::{
    Descriptor, ManifestRecord, MediaType, DOCKER_LIST, DOCKER_MANIFEST, MAX_MANIFEST_BYTES,
    OCI_INDEX, OCI_MANIFEST,
};
pub use meta::Txn;
pub use names::{Reference, RepoName, Tag};
pub use pins::Pin;
pub use retention::{is_imgpkg_tag, Matcher, Retention};
pub use uploads::{UploadId, UploadSession};
pub use usage::{RepoUsage, Usage};
pub use vitals::Vitals;

use blobstore::fs::{FsBlobStore, MtimeClock};
use blobstore::memory::MemClock;
pub use blobstore::BlobRead;
use blobstore::{BlobReader, ByteRange};
use meta::{Meta, Op, Repo};
use uploads::Open;
pub use uploads::UploadLimits;

/// Compact the journal at start when it has grown past this.
const COMPACT_AT: u64 = 64 << 20;

/// Hashes what passes through it (for [`Store::ingest_blob`] without a digest).
struct HashingReader<R> {
    inner: R,
    hasher: Hasher,
}

impl<R: AsyncRead + Unpin> AsyncRead for HashingReader<R> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        let before = buf.filled().len();
        let this = &mut *self;
        let polled = std::pin::Pin::new(&mut this.inner).poll_read(cx, buf);
        if let std::task::Poll::Ready(Ok(())) = polled {
            this.hasher.update(&buf.filled()[before..]);
        }
        polled
    }
}

/// The store. Cheap to clone: everything is behind one `Arc`.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    root: PathBuf,
    /// Held open for the store's lifetime: its exclusive lock keeps a second process (a
    /// server, or `airdock import --data-dir`) from replaying and appending the same journal.
    _lock: File,
    meta: Meta,
    /// Where blob bytes and upload sessions live (the blob-storage contract). The store
    /// adds what no backend knows: repositories and links (`meta`), pins, session caps.
    blobs: Box<dyn BlobStore>,
    /// When each blob was last written or claimed: the file's mtime on the filesystem, a
    /// record in memory for backends without one (see `BlobClock`).
    clock: Box<dyn BlobClock>,
    /// Open sessions on disk, their owners, against the caps.
    open_uploads: Open,
    /// Digests writers are relying on right now; GC leaves them alone.
    pins: pins::Pins,
    /// One GC at a time (the interval task and the admin endpoint may both ask).
    gc: tokio::sync::Mutex<()>,
    /// Manifest bytes by digest. They never change, are small and are read on every pull,
    /// so a pull is answered without a file read or a blocking thread.
    manifests: ManifestCache,
    /// Blob sizes the usage report has seen (content-addressed, so they never change).
    sizes: usage::SizeCache,
}

/// One page of a sorted listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    pub items: Vec<String>,
    /// More items follow the last one returned.
    pub more: bool,
}

/// A manifest as served: its record and its exact bytes.
#[derive(Clone, Debug)]
pub struct Manifest {
    pub record: Arc<ManifestRecord>,
    pub bytes: bytes::Bytes,
}

/// A manifest that names another as its `subject`, as the referrers API lists it.
pub struct Referrer {
    pub record: Arc<ManifestRecord>,
    pub annotations: Option<serde_json::Map<String, serde_json::Value>>,
}

impl Store {
    /// Open (creating if needed) the store under `root`, blobs on the local filesystem.
    pub async fn open(root: impl AsRef<Path>) -> Result<Store, StoreError> {
        Store::open_with(root, None).await
    }

    /// Open the store under `root` with its blob bytes and upload sessions in `blobs`
    /// (`None`: the filesystem under `root`). `root` still holds the metadata journal and
    /// the lock either way.
    pub async fn open_with(
        root: impl AsRef<Path>,
        blobs: Option<Box<dyn BlobStore>>,
    ) -> Result<Store, StoreError> {
        let root = root.as_ref().to_owned();
        let root2 = root.clone();
        let (lock, meta) =
            tokio::task::spawn_blocking(move || -> Result<(File, Meta), StoreError> {
                if blobs::skip_dir_fsync() {
                    tracing::warn!("AIRDOCK_TEST_SKIP_DIR_FSYNC=1: directory entries are not made durable; a power loss can lose acknowledged writes (test-only setting)");
                }
                layout::prepare(&root2)?;
                let lock = fs::OpenOptions::new()
                    .create(true)
                    .truncate(false)
                    .write(true)
                    .open(root2.join(layout::LOCK))?;
                match lock.try_lock() {
                    Ok(()) => {}
                    Err(fs::TryLockError::WouldBlock) => {
                        return Err(StoreError::Locked(root2.display().to_string()))
                    }
                    Err(fs::TryLockError::Error(e)) => return Err(e.into()),
                }
                // Leftovers of writes interrupted by a crash: never visible, safe to drop.
                for entry in fs::read_dir(root2.join(layout::TMP))? {
                    let _ = fs::remove_file(entry?.path());
                }
                Ok((lock, Meta::open(&root2, false)?))
            })
            .await
            .map_err(io::Error::other)??;
        let (blobs, clock): (Box<dyn BlobStore>, Box<dyn BlobClock>) = match blobs {
            None => (
                Box::new(FsBlobStore::new(root.clone())),
                Box::new(MtimeClock::new(root.clone())),
            ),
            // A backend without a writable time per blob: the clock is kept in memory, and
            // after a restart every blob counts as used at the open (see `MemClock`).
            Some(b) => (b, Box::new(MemClock::since(SystemTime::now()))),
        };
        let open_uploads = uploads::entries(blobs.sessions().await?);
        let store = Store {
            inner: Arc::new(Inner {
                root,
                _lock: lock,
                meta,
                blobs,
                clock,
                // Sessions left by an earlier run count against the cap until they finish,
                // are cancelled or expire.
                open_uploads: Open::with(open_uploads),
                pins: pins::Pins::default(),
                gc: tokio::sync::Mutex::new(()),
                manifests: ManifestCache::default(),
                sizes: usage::SizeCache::default(),
            }),
        };
        let len = fs::metadata(layout::journal_path(&store.inner.root))?.len();
        if len > COMPACT_AT {
            store.inner.meta.compact(&store.inner.root).await?;
        }
        Ok(store)
    }

    /// `kind()` of the blob backend: `"filesystem"`, `"s3"`, …
    pub fn blob_backend(&self) -> &'static str {
        self.inner.blobs.kind()
    }

    /// `Unsupported` unless blobs are on the local filesystem: for the maintenance
    /// commands that still work on blob files directly.
    fn require_filesystem(&self, what: &str) -> Result<(), StoreError> {
        match self.inner.blobs.kind() {
            "filesystem" => Ok(()),
            other => Err(StoreError::Unsupported(format!(
                "{what} of blobs on {other} storage is not supported yet"
            ))),
        }
    }

    /// How many metadata commits this store has applied since it was opened: anything
    /// derived from the metadata (a usage report, say) is current while this is unchanged.
    pub fn generation(&self) -> u64 {
        self.inner.meta.generation()
    }

    pub fn root(&self) -> &Path {
        &self.inner.root
    }

    /// What a readiness probe needs: can the store write, can its journal commit, how much
    /// disk is free. Runs on a blocking thread (a sync and a statvfs).
    pub async fn vitals(&self) -> Vitals {
        let root = self.inner.root.clone();
        let poisoned = self.inner.meta.is_poisoned();
        tokio::task::spawn_blocking(move || vitals::check(&root, poisoned))
            .await
            .unwrap_or_else(|e| Vitals {
                write_error: Some(format!("the probe thread failed: {e}")),
                ..Vitals::default()
            })
    }

    // ---- blobs -------------------------------------------------------------------------

    /// Stream `reader` into the content store, verified against `expected` when given.
    /// The blob is not linked into any repository. Its mtime is now, so GC leaves it alone
    /// for the grace window; a caller that links it later (an import) either commits within
    /// that window or holds a [`Store::pin_blob`] until it has committed.
    pub async fn ingest_blob<R: AsyncRead + Unpin + Send>(
        &self,
        expected: Option<&Digest>,
        alg: Algorithm,
        reader: R,
    ) -> Result<Ingested, StoreError> {
        let (ingested, _pin) = self.ingest_pinned(expected, alg, reader).await?;
        Ok(ingested)
    }

    async fn ingest_pinned<R: AsyncRead + Unpin + Send>(
        &self,
        expected: Option<&Digest>,
        alg: Algorithm,
        mut reader: R,
    ) -> Result<(Ingested, Pin), StoreError> {
        match expected {
            Some(expected) => self.ingest_known(expected, &mut reader, false).await,
            None => self.ingest_unknown(alg, reader).await,
        }
    }

    /// Store a blob under the digest it must have, through the caches or (`cold`) past them.
    async fn ingest_known(
        &self,
        expected: &Digest,
        reader: blobstore::Body<'_>,
        cold: bool,
    ) -> Result<(Ingested, Pin), StoreError> {
        // Pinned before it is visible: GC cannot take it between the write and the link.
        let pin = self.inner.pins.pin(expected);
        let written = if cold {
            self.inner.blobs.put_cold(expected, reader, None).await?
        } else {
            self.inner.blobs.put(expected, reader, None).await?
        };
        self.touch_written(expected);
        Ok((
            Ingested {
                digest: expected.clone(),
                size: written.size,
                existed: written.existed,
            },
            pin,
        ))
    }

    /// Store a blob whose digest nobody knows yet: streamed into a session (not counted
    /// against the caps) through a hashing reader, then finished under the digest that gave.
    /// No request path comes here (pushes and imports always know the digest); tests do.
    async fn ingest_unknown<R: AsyncRead + Unpin + Send>(
        &self,
        alg: Algorithm,
        reader: R,
    ) -> Result<(Ingested, Pin), StoreError> {
        let blobs = &self.inner.blobs;
        let id = UploadId::new();
        blobs.begin(&id, alg, bytes::Bytes::new()).await?;
        let mut hashing = HashingReader {
            inner: reader,
            hasher: alg.hasher(),
        };
        let result = async {
            blobs.append(&id, 0, None, &mut hashing).await?;
            let digest = hashing.hasher.finish();
            let pin = self.inner.pins.pin(&digest);
            let written = blobs.finish(&id, &digest).await?;
            self.touch_written(&digest);
            let ingested = Ingested {
                digest,
                size: written.size,
                existed: written.existed,
            };
            Ok::<_, StoreError>((ingested, pin))
        }
        .await;
        if result.is_err() {
            let _ = blobs.abort(&id).await;
        }
        result
    }

    /// Keep GC away from `d` (file and links) until the returned pin is dropped, whatever
    /// the grace window. For writers that link blobs long after storing them.
    pub fn pin_blob(&self, d: &Digest) -> Pin {
        self.inner.pins.pin(d)
    }

    /// [`Store::ingest_blob`], keeping the blob pinned until the returned pin is dropped:
    /// for an import that commits its links long after writing.
    pub async fn ingest_blob_pinned<R: AsyncRead + Unpin + Send>(
        &self,
        expected: Option<&Digest>,
        alg: Algorithm,
        reader: R,
    ) -> Result<(Ingested, Pin), StoreError> {
        self.ingest_pinned(expected, alg, reader).await
    }

    /// [`Store::ingest_blob_pinned`] of a blob whose digest is known and that nobody will
    /// read soon (an import's layers): written past the caches where the backend can
    /// ([`BlobStore::put_cold`]), with the same verification and durability.
    pub async fn ingest_cold_blob_pinned<R: AsyncRead + Unpin + Send>(
        &self,
        expected: &Digest,
        mut reader: R,
    ) -> Result<(Ingested, Pin), StoreError> {
        self.ingest_known(expected, &mut reader, true).await
    }

    /// If `d` is stored, pin it (and restart its grace window) and return the pin; else
    /// `None`. The race-free form of "`blob_exists`, so skip writing it": pinned before
    /// looking, the blob cannot be collected between the look and the writer's commit.
    pub async fn claim_blob(&self, d: &Digest) -> Result<Option<Pin>, StoreError> {
        let pin = self.inner.pins.pin(d);
        // The caller will acknowledge something that needs this blob, which a concurrent
        // writer may have made visible but not yet durable: `stat_durable` makes it so.
        // Without that, it counts as absent and the caller writes it again.
        if self.inner.blobs.stat_durable(d).await?.is_none() {
            return Ok(None);
        }
        self.touch(d);
        Ok(Some(pin))
    }

    /// Whether `d` is stored (in any repository, or none yet). One `stat` of the backend.
    pub async fn blob_exists(&self, d: &Digest) -> Result<bool, StoreError> {
        Ok(self.inner.blobs.stat(d).await?.is_some())
    }

    /// Restart `d`'s grace window: GC leaves it alone for that long from now.
    fn touch(&self, d: &Digest) {
        self.inner.clock.touch(d, SystemTime::now());
    }

    /// [`Store::touch`] after the backend wrote or finished `d`. On the filesystem that write
    /// set the clock itself (a new file's mtime, or `persist` touching the file it found),
    /// so the extra syscalls are skipped on the hot path.
    fn touch_written(&self, d: &Digest) {
        if self.inner.blobs.kind() != "filesystem" {
            self.touch(d);
        }
    }

    /// Monolithic push: store and link into `repo`.
    pub async fn push_blob<R: AsyncRead + Unpin + Send>(
        &self,
        repo: &RepoName,
        expected: &Digest,
        reader: R,
    ) -> Result<Ingested, StoreError> {
        let (ingested, _pin) = self
            .ingest_pinned(Some(expected), expected.algorithm(), reader)
            .await?;
        self.link(repo, &ingested.digest).await?;
        Ok(ingested)
    }

    /// Link `d` into `repo` unless it already is. The "already linked" check happens under
    /// the journal lock: checked outside it, a GC could drop the link right after the check
    /// and the push would be acknowledged without it.
    async fn link(&self, repo: &RepoName, d: &Digest) -> Result<(), StoreError> {
        let mut locked = self.inner.meta.lock().await;
        self.link_locked(&mut locked, repo, d).await
    }

    /// [`Store::link`] for a caller already holding the journal lock.
    async fn link_locked(
        &self,
        locked: &mut meta::Locked<'_>,
        repo: &RepoName,
        d: &Digest,
    ) -> Result<(), StoreError> {
        let linked = locked
            .state()
            .repos
            .get(repo)
            .is_some_and(|r| r.blobs.contains(d));
        if linked {
            return Ok(());
        }
        let mut txn = Txn::new();
        txn.link_blob(repo.clone(), d.clone());
        self.commit_locked(locked, txn).await
    }

    /// Commit `txn` under the journal lock, checking it against what the backend stores
    /// right now. Asked under the lock: GC deletes under it too, so a blob found here is
    /// still there when the transaction is applied.
    async fn commit_locked(
        &self,
        locked: &mut meta::Locked<'_>,
        txn: Txn,
    ) -> Result<(), StoreError> {
        use futures_util::{StreamExt, TryStreamExt};
        let needed = txn.needs_stored();
        let blobs = &self.inner.blobs;
        // Concurrent, bounded: an import's one transaction may link hundreds of blobs, and
        // on S3 each look is a round trip.
        let stored: std::collections::HashSet<Digest> = futures_util::stream::iter(needed)
            .map(|d| async move { Ok::<_, StoreError>(blobs.stat(&d).await?.map(|_| d)) })
            .buffer_unordered(16)
            .try_filter_map(|d| async move { Ok(d) })
            .try_collect()
            .await?;
        locked.commit(txn, |d| stored.contains(d)).await
    }

    pub fn repo_has_blob(&self, repo: &RepoName, d: &Digest) -> bool {
        self.inner
            .meta
            .read()
            .repos
            .get(repo)
            .is_some_and(|r| r.blobs.contains(d))
    }

    pub fn repo_has_manifest(&self, repo: &RepoName, d: &Digest) -> bool {
        self.inner
            .meta
            .read()
            .repos
            .get(repo)
            .is_some_and(|r| r.manifests.contains_key(d))
    }

    pub fn repo_exists(&self, repo: &RepoName) -> bool {
        self.inner.meta.read().repos.contains_key(repo)
    }

    /// Link a blob held elsewhere into `repo`, from a repository the caller may read
    /// (`may_pull`): with `from`, only if that repository holds it; without, if any
    /// repository that holds it passes `may_pull`. `Ok(false)` when there is nothing the
    /// caller may mount (the caller then opens an upload instead, exactly as for a blob
    /// stored nowhere, so a mount tells nobody what exists where they cannot read).
    pub async fn mount_blob(
        &self,
        repo: &RepoName,
        d: &Digest,
        from: Option<&RepoName>,
        may_pull: &(dyn Fn(&RepoName) -> bool + Sync),
    ) -> Result<bool, StoreError> {
        let visible = {
            let state = self.inner.meta.read();
            match from {
                Some(from) => {
                    state.repos.get(from).is_some_and(|r| r.blobs.contains(d)) && may_pull(from)
                }
                // One hash lookup per repository, under the read lock (no I/O); the rights
                // check runs only for the repositories that hold the blob. A reverse index
                // (digest → repositories) would cost memory per link for a request clients
                // rarely make: Docker, containerd, crane and skopeo all send `from`.
                None => state
                    .repos
                    .iter()
                    .any(|(name, r)| r.blobs.contains(d) && may_pull(name)),
            }
        };
        if !visible {
            return Ok(false);
        }
        // Pinned before looking at the blob: from here GC cannot delete it, and the touch
        // gives the new link a fresh grace window before GC may drop it as unreferenced.
        let _pin = self.inner.pins.pin(d);
        if self.inner.blobs.stat(d).await?.is_none() {
            return Ok(false);
        }
        self.touch(d);
        self.link(repo, d).await?;
        Ok(true)
    }

    /// Size of a blob `repo` may serve. Restarts its grace window: a client that `HEAD`s a
    /// blob and skips its upload will reference it in a manifest soon.
    pub async fn stat_blob(&self, repo: &RepoName, d: &Digest) -> Result<u64, StoreError> {
        let size = self.blob_size(repo, d).await?;
        self.touch(d);
        Ok(size)
    }

    /// Size of a blob `repo` may serve, without touching its grace window (an export
    /// planning its tar).
    pub async fn blob_size(&self, repo: &RepoName, d: &Digest) -> Result<u64, StoreError> {
        if !self.repo_has_blob(repo, d) {
            return Err(StoreError::BlobUnknown(d.clone()));
        }
        self.inner
            .blobs
            .stat(d)
            .await?
            .ok_or_else(|| StoreError::BlobUnknown(d.clone()))
    }

    /// Stream `range` of a blob `repo` may serve (`BlobUnknown` if it does not hold it),
    /// with the whole blob's size.
    pub async fn read_blob(
        &self,
        repo: &RepoName,
        d: &Digest,
        range: ByteRange,
    ) -> Result<BlobRead, StoreError> {
        if !self.repo_has_blob(repo, d) {
            return Err(StoreError::BlobUnknown(d.clone()));
        }
        self.inner.blobs.read(d, range).await
    }

    /// A URL the client may fetch blob `d` of `repo` from directly for `ttl`, when the
    /// backend is configured to hand those out (S3 presigned GETs, `storage.s3.redirect`);
    /// `None`: serve the bytes. `BlobUnknown` if `repo` does not hold it.
    pub async fn blob_redirect(
        &self,
        repo: &RepoName,
        d: &Digest,
        ttl: std::time::Duration,
    ) -> Result<Option<String>, StoreError> {
        if !self.repo_has_blob(repo, d) {
            return Err(StoreError::BlobUnknown(d.clone()));
        }
        self.inner.blobs.redirect_url(d, ttl).await
    }

    /// Open a blob `repo` may serve as a reader, with its size.
    pub async fn open_blob(
        &self,
        repo: &RepoName,
        d: &Digest,
    ) -> Result<(BlobReader, u64), StoreError> {
        let read = self.read_blob(repo, d, ByteRange::ALL).await?;
        Ok((BlobReader::new(read.stream), read.size))
    }

    /// Open a stored blob whatever repository holds it (or none yet): for the importer,
    /// which reads a bundle's layer back before its transaction links it.
    pub async fn open_stored_blob(&self, d: &Digest) -> Result<BlobReader, StoreError> {
        let read = self.inner.blobs.read(d, ByteRange::ALL).await?;
        Ok(BlobReader::new(read.stream))
    }

    /// Remove a blob from `repo`. The bytes stay until no repository holds them (GC).
    /// Refused while a manifest of `repo` references it: removing it would leave that
    /// manifest unpullable. Checked under the journal lock, so a manifest committed
    /// concurrently is either seen here or refused for the missing link.
    pub async fn delete_blob(&self, repo: &RepoName, d: &Digest) -> Result<(), StoreError> {
        self.remove_blob_link(repo, d, true).await
    }

    /// Remove a blob from `repo` even while manifests reference it (CNCF Distribution's
    /// behaviour): those manifests stay, but pulls of them from `repo` fail until the blob
    /// is pushed again. The bytes stay while any manifest names them.
    pub async fn delete_blob_even_if_referenced(
        &self,
        repo: &RepoName,
        d: &Digest,
    ) -> Result<(), StoreError> {
        self.remove_blob_link(repo, d, false).await
    }

    async fn remove_blob_link(
        &self,
        repo: &RepoName,
        d: &Digest,
        refuse_referenced: bool,
    ) -> Result<(), StoreError> {
        let mut locked = self.inner.meta.lock().await;
        {
            let state = locked.state();
            let Some(r) = state.repos.get(repo).filter(|r| r.blobs.contains(d)) else {
                return Err(StoreError::BlobUnknown(d.clone()));
            };
            if let Some(m) = r
                .manifests
                .values()
                .find(|m| refuse_referenced && m.blobs.iter().any(|b| b.digest == *d))
            {
                return Err(StoreError::Denied(format!(
                    "blob {d} is referenced by manifest {} in {repo}; delete the manifest first",
                    m.digest
                )));
            }
        }
        let mut txn = Txn::new();
        txn.push(Op::Unlink {
            repo: repo.clone(),
            digest: d.clone(),
        });
        locked.commit(txn, |_| true).await
    }

    // ---- uploads -----------------------------------------------------------------------

    /// Refuse new sessions ([`StoreError::TooManyUploads`]) while `max` are open; `None`
    /// lifts the cap. Sessions already open are never cut short by it.
    pub fn set_max_open_uploads(&self, max: Option<usize>) {
        let limits = self.inner.open_uploads.limits();
        self.set_upload_limits(UploadLimits {
            max_open: max,
            ..limits
        });
    }

    /// The caps on open sessions (see [`UploadLimits`]).
    pub fn set_upload_limits(&self, limits: UploadLimits) {
        self.inner.open_uploads.set_limits(limits);
    }

    /// Upload sessions on disk (including those left by an earlier run).
    pub fn open_uploads(&self) -> usize {
        self.inner.open_uploads.len()
    }

    /// Open a session for `owner` (opaque here: the HTTP layer names a user or a client
    /// address). At a cap, the idle sessions of whoever holds the most are expired to make
    /// room; if none is idle the caller is refused, never anyone else's open session.
    pub async fn start_upload(
        &self,
        repo: &RepoName,
        algorithm: Option<Algorithm>,
        owner: &str,
    ) -> Result<UploadId, StoreError> {
        let id = UploadId::new();
        self.reserve_upload(&id, owner, repo, algorithm).await?;
        let info = uploads::Info {
            repo: repo.clone(),
            algorithm,
            owner: Some(owner.to_owned()),
        };
        let info = serde_json::to_vec(&info).map_err(io::Error::other)?;
        let blobs = &self.inner.blobs;
        if let Err(e) = blobs
            .begin(&id, algorithm.unwrap_or_default(), info.into())
            .await
        {
            // A half-made session that could not be removed keeps its slot until expiry
            // removes it (and releases the slot then); otherwise the slot is free now.
            if blobs.abort(&id).await.is_ok() {
                self.inner.open_uploads.release(&id);
            }
            return Err(e);
        }
        Ok(id)
    }

    /// The session `id` of `repo`, or `UploadUnknown` (also for another repository's).
    fn session(&self, repo: &RepoName, id: &UploadId) -> Result<uploads::Entry, StoreError> {
        self.inner
            .open_uploads
            .get(repo, id)
            .ok_or(StoreError::UploadUnknown)
    }

    /// The repository and owner of session `id`, for callers that address sessions by id
    /// alone (the admin API's import uploads).
    pub fn upload_session(&self, id: &UploadId) -> Result<(RepoName, Option<String>), StoreError> {
        let entry = self
            .inner
            .open_uploads
            .by_id(id)
            .ok_or(StoreError::UploadUnknown)?;
        let repo = entry.repo.ok_or(StoreError::UploadUnknown)?;
        Ok((repo, Some(entry.owner.to_string())))
    }

    /// The bytes a session holds, opened for reading (an import reads the archive uploaded
    /// into it). Reading does not touch the session; it stays open until cancelled.
    pub async fn open_upload_data(
        &self,
        repo: &RepoName,
        id: &UploadId,
    ) -> Result<BlobReader, StoreError> {
        self.session(repo, id)?;
        let read = self.inner.blobs.read_session(id).await?;
        Ok(BlobReader::new(read.stream))
    }

    /// Bytes received so far.
    pub fn upload_status(&self, repo: &RepoName, id: &UploadId) -> Result<u64, StoreError> {
        Ok(self.session(repo, id)?.size)
    }

    /// Append a chunk. `start` (from `Content-Range`) must equal the bytes held so far;
    /// `len`, when known, must equal the bytes received. A failed chunk is rolled back.
    pub async fn append_upload<R: AsyncRead + Unpin + Send>(
        &self,
        repo: &RepoName,
        id: &UploadId,
        start: Option<u64>,
        len: Option<u64>,
        mut reader: R,
    ) -> Result<u64, StoreError> {
        let session = self.session(repo, id)?;
        let open = &self.inner.open_uploads;
        open.touch(id, SystemTime::now());
        let offset = start.unwrap_or(session.size);
        let result = self.inner.blobs.append(id, offset, len, &mut reader).await;
        // Idle is measured from the end of the last write, not its start.
        open.touch(id, SystemTime::now());
        let size = match result {
            Ok(size) => size,
            // The backend is the truth about what it holds (a rollback that failed may have
            // left more): the status a client asks for next must say where to resume.
            Err(e @ StoreError::UploadOutOfOrder { current, .. }) => {
                open.set_size(id, current);
                return Err(e);
            }
            Err(e) => return Err(e),
        };
        open.set_size(id, size);
        Ok(size)
    }

    /// Close a session: append the optional last chunk, verify the whole upload against
    /// `expected`, make it a blob and link it into `repo`.
    pub async fn finish_upload<R: AsyncRead + Unpin + Send>(
        &self,
        repo: &RepoName,
        id: &UploadId,
        expected: &Digest,
        reader: R,
    ) -> Result<Ingested, StoreError> {
        let session = self.session(repo, id)?;
        if let Some(alg) = session.algorithm {
            if alg != expected.algorithm() {
                return Err(StoreError::DigestInvalid(format!(
                    "upload was opened for {alg}, digest is {}",
                    expected.algorithm()
                )));
            }
        }
        self.append_upload(repo, id, None, None, reader).await?;
        let _pin = self.inner.pins.pin(expected);
        let written = match self.inner.blobs.finish(id, expected).await {
            Ok(w) => w,
            Err(e @ StoreError::DigestMismatch { .. }) => {
                // The backend removed the session.
                self.inner.open_uploads.release(id);
                return Err(e);
            }
            // Its session went with a cancel (an admin's, or its repository's deletion).
            Err(_) if !self.inner.open_uploads.contains(id) => {
                return Err(StoreError::UploadUnknown)
            }
            Err(e) => return Err(e),
        };
        // Its grace window starts now: the client's manifest referencing it comes next.
        self.touch_written(expected);
        // Released and linked under the journal lock, against which a repository delete
        // cancels its sessions: a session cancelled first links nothing (the stored bytes
        // are left to GC), so finishing it cannot bring a deleted repository back.
        let mut locked = self.inner.meta.lock().await;
        if !self.inner.open_uploads.release(id) {
            return Err(StoreError::UploadUnknown);
        }
        self.link_locked(&mut locked, repo, expected).await?;
        drop(locked);
        Ok(Ingested {
            digest: expected.clone(),
            size: written.size,
            existed: written.existed,
        })
    }

    pub async fn cancel_upload(&self, repo: &RepoName, id: &UploadId) -> Result<(), StoreError> {
        self.session(repo, id)?;
        self.inner.blobs.abort(id).await?;
        self.inner.open_uploads.release(id);
        Ok(())
    }

    // ---- manifests and tags ------------------------------------------------------------

    /// Store a manifest pushed to `repo` under `reference`, plus any extra `tags`.
    /// `check_refs` off accepts manifests whose blobs or children are absent (sparse).
    pub async fn put_manifest(
        &self,
        repo: &RepoName,
        reference: &Reference,
        media_type: &str,
        bytes: &[u8],
        tags: &[Tag],
        check_refs: bool,
    ) -> Result<Arc<ManifestRecord>, StoreError> {
        if bytes.len() > MAX_MANIFEST_BYTES {
            return Err(StoreError::TooLarge(format!(
                "manifest of {} bytes exceeds the {} byte limit",
                bytes.len(),
                MAX_MANIFEST_BYTES
            )));
        }
        let alg = match reference {
            Reference::Digest(d) => d.algorithm(),
            Reference::Tag(_) => Algorithm::Sha256,
        };
        let digest = Digest::of(alg, bytes);
        if let Reference::Digest(d) = reference {
            if *d != digest {
                return Err(StoreError::DigestMismatch {
                    expected: d.clone(),
                    actual: digest,
                });
            }
        }
        let record = ManifestRecord::parse(digest.clone(), media_type, bytes)?;
        // Pinned until committed: GC must not delete the manifest's bytes in between.
        let _pin = self.inner.pins.pin(&digest);
        // Found already stored: a concurrent push of the same manifest may have made it
        // visible but not yet durable, and this push acknowledges it (`stat_durable`).
        if self.inner.blobs.stat_durable(&digest).await?.is_none() {
            self.inner.blobs.put(&digest, &mut &bytes[..], None).await?;
            self.touch_written(&digest);
        } else {
            self.touch(&digest);
        }
        let mut txn = if check_refs {
            Txn::new()
        } else {
            Txn::new().sparse()
        };
        let shared = Arc::new(record.clone());
        txn.put_manifest(repo.clone(), record);
        if let Reference::Tag(t) = reference {
            txn.tag(repo.clone(), t.clone(), digest.clone());
        }
        for t in tags {
            txn.tag(repo.clone(), t.clone(), digest.clone());
        }
        self.commit(txn).await?;
        Ok(shared)
    }

    /// Resolve a reference to a manifest record of `repo`.
    pub fn stat_manifest(
        &self,
        repo: &RepoName,
        reference: &Reference,
    ) -> Result<Arc<ManifestRecord>, StoreError> {
        let state = self.inner.meta.read();
        let r = state
            .repos
            .get(repo)
            .ok_or_else(|| StoreError::ManifestUnknown(reference.to_string()))?;
        let digest = match reference {
            Reference::Digest(d) => d,
            Reference::Tag(t) => r
                .tags
                .get(t)
                .map(|e| &e.digest)
                .ok_or_else(|| StoreError::ManifestUnknown(reference.to_string()))?,
        };
        r.manifests
            .get(digest)
            .cloned()
            .ok_or_else(|| StoreError::ManifestUnknown(reference.to_string()))
    }

    pub async fn get_manifest(
        &self,
        repo: &RepoName,
        reference: &Reference,
    ) -> Result<Manifest, StoreError> {
        let record = self.stat_manifest(repo, reference)?;
        let bytes = self.manifest_bytes(&record.digest).await?;
        Ok(Manifest { record, bytes })
    }

    async fn manifest_bytes(&self, d: &Digest) -> Result<bytes::Bytes, StoreError> {
        if let Some(bytes) = self.inner.manifests.get(d) {
            return Ok(bytes);
        }
        let read = self.inner.blobs.read(d, ByteRange::ALL).await?;
        if read.size > MAX_MANIFEST_BYTES as u64 {
            return Err(StoreError::TooLarge(format!(
                "stored manifest {d} is {} bytes, past the {MAX_MANIFEST_BYTES} byte limit",
                read.size
            )));
        }
        // Bounded by the check above (manifests are refused past it when pushed).
        let mut bytes = bytes::BytesMut::with_capacity(read.size as usize);
        let mut stream = read.stream;
        while let Some(chunk) = futures_util::StreamExt::next(&mut stream).await {
            bytes.extend_from_slice(&chunk?);
        }
        let bytes = bytes.freeze();
        self.inner.manifests.insert(d, &bytes);
        Ok(bytes)
    }

    pub fn resolve_tag(&self, repo: &RepoName, tag: &Tag) -> Option<Digest> {
        let state = self.inner.meta.read();
        state
            .repos
            .get(repo)?
            .tags
            .get(tag)
            .map(|e| e.digest.clone())
    }

    /// Delete by digest removes the manifest and every tag on it; by tag, just the tag.
    /// By digest it is refused ([`StoreError::Denied`]) while an index of `repo` lists the
    /// manifest: that index would be served with a child that is gone.
    pub async fn delete_manifest(
        &self,
        repo: &RepoName,
        reference: &Reference,
    ) -> Result<(), StoreError> {
        self.delete_manifest_inner(repo, reference, false, true)
            .await
    }

    /// [`Store::delete_manifest`] (with `orphans`, [`Store::delete_manifest_and_orphans`])
    /// even while an index lists it (CNCF Distribution's behaviour): the index stays, with a
    /// child that is gone until it is pushed again. fsck reports such children.
    pub async fn delete_manifest_even_if_listed(
        &self,
        repo: &RepoName,
        reference: &Reference,
        orphans: bool,
    ) -> Result<(), StoreError> {
        self.delete_manifest_inner(repo, reference, orphans, false)
            .await
    }

    /// Like [`Store::delete_manifest`], and by digest also the children (of an index) that
    /// nothing else in `repo` keeps: no tag, no other parent, transitively. Not the default
    /// of the HTTP DELETE: clients (and the conformance suites) delete an index and then each
    /// child, and expect 202 for the children.
    pub async fn delete_manifest_and_orphans(
        &self,
        repo: &RepoName,
        reference: &Reference,
    ) -> Result<(), StoreError> {
        self.delete_manifest_inner(repo, reference, true, true)
            .await
    }

    /// Decided under the journal lock, so a concurrent tag or parent is seen.
    async fn delete_manifest_inner(
        &self,
        repo: &RepoName,
        reference: &Reference,
        orphans: bool,
        refuse_listed: bool,
    ) -> Result<(), StoreError> {
        let mut locked = self.inner.meta.lock().await;
        let mut txn = Txn::new();
        {
            let state = locked.state();
            let r = state
                .repos
                .get(repo)
                .ok_or_else(|| StoreError::ManifestUnknown(reference.to_string()))?;
            match reference {
                Reference::Tag(t) => {
                    if !r.tags.contains_key(t) {
                        return Err(StoreError::ManifestUnknown(reference.to_string()));
                    }
                    txn.push(Op::Untag {
                        repo: repo.clone(),
                        tag: t.clone(),
                    });
                }
                Reference::Digest(d) => {
                    if !r.manifests.contains_key(d) {
                        return Err(StoreError::ManifestUnknown(reference.to_string()));
                    }
                    let parent = r
                        .manifests
                        .values()
                        .find(|m| m.manifests.iter().any(|c| c.digest == *d));
                    if let Some(index) = parent.filter(|_| refuse_listed) {
                        return Err(StoreError::Denied(format!(
                            "manifest {d} is listed by index {} in {repo}; delete the index first",
                            index.digest
                        )));
                    }
                    let doomed = if orphans {
                        gc::with_orphaned_children(r, d)
                    } else {
                        vec![d.clone()]
                    };
                    for digest in doomed {
                        txn.push(Op::Unmanifest {
                            repo: repo.clone(),
                            digest,
                        });
                    }
                }
            }
        }
        locked.commit(txn, |_| true).await
    }

    /// Remove a whole repository: its tags, manifests and blob links, in one transaction,
    /// and its upload sessions. The bytes stay until GC finds nothing else uses them.
    pub async fn delete_repo(&self, repo: &RepoName) -> Result<(), StoreError> {
        let mut locked = self.inner.meta.lock().await;
        let mut txn = Txn::new();
        {
            let state = locked.state();
            // A repository with only upload sessions so far has nothing in the journal.
            let empty = Repo::default();
            let r = match state.repos.get(repo) {
                Some(r) => r,
                None if self.inner.open_uploads.has_repo(repo) => &empty,
                None => return Err(StoreError::NameUnknown(repo.to_string())),
            };
            for tag in r.tags.keys() {
                txn.push(Op::Untag {
                    repo: repo.clone(),
                    tag: tag.clone(),
                });
            }
            for digest in r.manifests.keys() {
                txn.push(Op::Unmanifest {
                    repo: repo.clone(),
                    digest: digest.clone(),
                });
            }
            for digest in &r.blobs {
                txn.push(Op::Unlink {
                    repo: repo.clone(),
                    digest: digest.clone(),
                });
            }
            // Its import records would only name what is gone.
            for (_, r) in state
                .imports
                .values()
                .filter(|(_, r)| r.repository == *repo)
            {
                txn.push(Op::Unimport { id: r.id.clone() });
            }
        }
        locked.commit(txn, |_| true).await?;
        // Cancelled while the journal lock is still held: a finish of one of them takes that
        // lock to link its blob, so it either linked before this delete (which removed the
        // link) or finds its session gone and links nothing.
        let cancelled = self.inner.open_uploads.take_repo(repo);
        drop(locked);
        self.remove_sessions(cancelled).await;
        Ok(())
    }

    /// Tags of `repo` in lexical order, after `last`, at most `n`.
    pub fn tags(
        &self,
        repo: &RepoName,
        last: Option<&str>,
        n: Option<usize>,
    ) -> Result<Page, StoreError> {
        let state = self.inner.meta.read();
        let r = state
            .repos
            .get(repo)
            .ok_or_else(|| StoreError::NameUnknown(repo.to_string()))?;
        let iter = r.tags.keys().map(Tag::as_str);
        Ok(page(iter, last, n))
    }

    /// Repository names in lexical order, after `last`, at most `n`.
    pub fn catalog(&self, last: Option<&str>, n: Option<usize>) -> Page {
        let state = self.inner.meta.read();
        page(state.repos.keys().map(RepoName::as_str), last, n)
    }

    /// Manifests of `repo` whose subject is `subject`, optionally of one artifact type,
    /// each with the annotations read from its stored bytes.
    pub async fn referrers(
        &self,
        repo: &RepoName,
        subject: &Digest,
        artifact_type: Option<&str>,
    ) -> Vec<Referrer> {
        let records: Vec<Arc<ManifestRecord>> = {
            let state = self.inner.meta.read();
            let Some(r) = state.repos.get(repo) else {
                return Vec::new();
            };
            let Some(set) = r.referrers.get(subject) else {
                return Vec::new();
            };
            set.iter()
                .filter_map(|d| r.manifests.get(d))
                .filter(|m| artifact_type.is_none() || m.artifact_type.as_deref() == artifact_type)
                .cloned()
                .collect()
        };
        let mut out = Vec::with_capacity(records.len());
        for record in records {
            // Bytes gone (a damaged store, fsck's business) cost the entry its annotations,
            // not the whole list its other entries.
            let annotations = match self.manifest_bytes(&record.digest).await {
                Ok(bytes) => manifest::annotations(&bytes),
                Err(e) => {
                    tracing::warn!(digest = %record.digest, error = %e, "referrer bytes unreadable");
                    None
                }
            };
            out.push(Referrer {
                record,
                annotations,
            });
        }
        out
    }

    /// Apply a metadata transaction atomically and durably.
    pub async fn commit(&self, txn: Txn) -> Result<(), StoreError> {
        if txn.ops.is_empty() {
            return Ok(());
        }
        let mut locked = self.inner.meta.lock().await;
        self.commit_locked(&mut locked, txn).await
    }
}

/// A bounded map of manifest bytes. When full it starts over: simple, and a registry's hot
/// set of manifests refills it within a few pulls.
#[derive(Default)]
struct ManifestCache {
    /// std Mutex: a map lookup or insert, never held across `.await` or I/O.
    map: std::sync::Mutex<(std::collections::HashMap<Digest, bytes::Bytes>, usize)>,
}

impl ManifestCache {
    /// Total bytes kept.
    const CAP: usize = 8 << 20;

    fn get(&self, d: &Digest) -> Option<bytes::Bytes> {
        let map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        map.0.get(d).cloned()
    }

    fn insert(&self, d: &Digest, bytes: &bytes::Bytes) {
        if bytes.len() > Self::CAP / 64 {
            return;
        }
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        if map.1 + bytes.len() > Self::CAP {
            map.0.clear();
            map.1 = 0;
        }
        if map.0.insert(d.clone(), bytes.clone()).is_none() {
            map.1 += bytes.len();
        }
    }
}

/// Keys are already sorted. `n` of zero gives an empty page.
fn page<'a>(keys: impl Iterator<Item = &'a str>, last: Option<&str>, n: Option<usize>) -> Page {
    let mut iter = keys
        .skip_while(|k| last.is_some_and(|l| *k <= l))
        .peekable();
    let limit = n.unwrap_or(usize::MAX);
    let items: Vec<String> = iter.by_ref().take(limit).map(str::to_owned).collect();
    let more = iter.peek().is_some();
    Page { items, more }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> RepoName {
        RepoName::parse(s).expect("name")
    }

    async fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = Store::open(dir.path()).await.expect("open");
        (dir, s)
    }

    fn files_under(p: &Path) -> usize {
        fs::read_dir(p).map(|r| r.count()).unwrap_or(0)
    }

    #[tokio::test]
    async fn wrong_digest_stores_nothing() {
        let (dir, s) = store().await;
        let wrong = Digest::of(Algorithm::Sha256, b"other");
        let err = s.push_blob(&name("a"), &wrong, &b"bytes"[..]).await;
        assert!(matches!(err, Err(StoreError::DigestMismatch { .. })));
        assert!(!s
            .blob_exists(&Digest::of(Algorithm::Sha256, b"bytes"))
            .await
            .expect("stat"));
        assert!(!s.repo_exists(&name("a")));
        assert_eq!(files_under(&dir.path().join(layout::TMP)), 0);
    }

    #[tokio::test]
    async fn blob_is_per_repository_but_stored_once() {
        let (_dir, s) = store().await;
        let d = Digest::of(Algorithm::Sha256, b"layer");
        let first = s
            .push_blob(&name("a"), &d, &b"layer"[..])
            .await
            .expect("push");
        assert!(!first.existed);
        assert!(s.stat_blob(&name("b"), &d).await.is_err());
        let again = s
            .push_blob(&name("b"), &d, &b"layer"[..])
            .await
            .expect("push");
        assert!(again.existed);
        assert_eq!(s.stat_blob(&name("b"), &d).await.expect("stat"), 5);
        let anyone = |_: &RepoName| true;
        assert!(s
            .mount_blob(&name("c"), &d, Some(&name("a")), &anyone)
            .await
            .expect("mount"));
        assert!(!s
            .mount_blob(&name("c2"), &d, Some(&name("nothere")), &anyone)
            .await
            .expect("mount"));
        assert!(s
            .mount_blob(&name("c3"), &d, None, &anyone)
            .await
            .expect("mount"));
        // Only from a repository the caller may read, named or not.
        let only_b = |r: &RepoName| r.as_str() == "b";
        let none_holding = |r: &RepoName| r.as_str() == "nothere";
        assert!(!s
            .mount_blob(&name("c4"), &d, Some(&name("a")), &only_b)
            .await
            .expect("mount"));
        assert!(!s
            .mount_blob(&name("c4"), &d, None, &none_holding)
            .await
            .expect("mount"));
        assert!(!s.repo_has_blob(&name("c4"), &d));
        assert!(s
            .mount_blob(&name("c4"), &d, None, &only_b)
            .await
            .expect("mount"));
    }

    #[tokio::test]
    async fn concurrent_pushes_of_one_blob_both_succeed() {
        let (_dir, s) = store().await;
        let body = vec![7u8; 3 << 20];
        let d = Digest::of(Algorithm::Sha256, &body);
        let (ra, rb) = (name("a"), name("b"));
        let (a, b) = tokio::join!(
            s.push_blob(&ra, &d, &body[..]),
            s.push_blob(&rb, &d, &body[..])
        );
        assert_eq!(a.expect("a").digest, d);
        assert_eq!(b.expect("b").digest, d);
        assert_eq!(s.stat_blob(&name("a"), &d).await.expect("a"), 3 << 20);
    }

    /// The cap counts sessions from POST until finish, cancel or a failed finish, and
    /// sessions found on disk at open; a full store refuses new ones only.
    #[tokio::test]
    async fn open_upload_cap_counts_sessions_until_they_close() {
        let dir = tempfile::tempdir().expect("tempdir");
        let repo = name("r");
        let body = b"capped".to_vec();
        let d = Digest::of(Algorithm::Sha256, &body);
        let kept = {
            let s = Store::open(dir.path()).await.expect("open");
            s.set_max_open_uploads(Some(2));
            let a = s.start_upload(&repo, None, "t").await.expect("a");
            let b = s.start_upload(&repo, None, "t").await.expect("b");
            assert!(matches!(
                s.start_upload(&repo, None, "t").await,
                Err(StoreError::TooManyUploads { limit: 2, .. })
            ));
            assert_eq!(s.open_uploads(), 2);
            // A session already open still takes writes at the cap.
            s.append_upload(&repo, &a, None, None, &body[..])
                .await
                .expect("append at cap");
            s.cancel_upload(&repo, &b).await.expect("cancel");
            let c = s
                .start_upload(&repo, None, "t")
                .await
                .expect("c after cancel");
            s.finish_upload(&repo, &a, &d, &b""[..])
                .await
                .expect("finish");
            let wrong = Digest::of(Algorithm::Sha256, b"not it");
            let e = s
                .start_upload(&repo, None, "t")
                .await
                .expect("e after finish");
            assert!(s.finish_upload(&repo, &e, &wrong, &b"x"[..]).await.is_err());
            assert_eq!(s.open_uploads(), 1, "a mismatch closes the session");
            c
        };
        // Reopened: the session left on disk counts.
        let s = Store::open(dir.path()).await.expect("reopen");
        assert_eq!(s.open_uploads(), 1);
        s.set_max_open_uploads(Some(1));
        assert!(matches!(
            s.start_upload(&repo, None, "t").await,
            Err(StoreError::TooManyUploads { limit: 1, .. })
        ));
        s.set_max_open_uploads(None);
        s.start_upload(&repo, None, "t").await.expect("no cap");
        assert_eq!(s.open_uploads(), 2);
        s.cancel_upload(&repo, &kept).await.expect("cancel kept");
        assert_eq!(s.open_uploads(), 1);
    }

    #[tokio::test]
    async fn upload_survives_reopen_and_rehashes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let repo = name("r");
        let body = b"0123456789".repeat(1000);
        let id = {
            let s = Store::open(dir.path()).await.expect("open");
            let id = s.start_upload(&repo, None, "t").await.expect("start");
            s.append_upload(&repo, &id, Some(0), Some(4000), &body[..4000])
                .await
                .expect("chunk");
            id
        };
        // A new Store is a restarted server: the running hash is gone.
        let s = Store::open(dir.path()).await.expect("reopen");
        assert_eq!(s.upload_status(&repo, &id).expect("status"), 4000);
        let gap = s
            .append_upload(&repo, &id, Some(5000), None, &body[5000..])
            .await;
        assert!(matches!(gap, Err(StoreError::UploadOutOfOrder { .. })));
        let overlap = s
            .append_upload(&repo, &id, Some(3000), None, &body[3000..])
            .await;
        assert!(matches!(overlap, Err(StoreError::UploadOutOfOrder { .. })));
        s.append_upload(&repo, &id, Some(4000), None, &body[4000..])
            .await
            .expect("resume");
        let d = Digest::of(Algorithm::Sha256, &body);
        let got = s
            .finish_upload(&repo, &id, &d, &b""[..])
            .await
            .expect("finish");
        assert_eq!(got.size, 10_000);
        assert!(s.upload_status(&repo, &id).is_err(), "session is gone");
    }

    #[tokio::test]
    async fn sha512_upload() {
        let (_dir, s) = store().await;
        let repo = name("r");
        let id = s
            .start_upload(&repo, Some(Algorithm::Sha512), "t")
            .await
            .expect("start");
        s.append_upload(&repo, &id, None, None, &b"abc"[..])
            .await
            .expect("append");
        let d = Digest::of(Algorithm::Sha512, b"abc");
        let wrong_alg = s
            .finish_upload(&repo, &id, &Digest::of(Algorithm::Sha256, b"abc"), &b""[..])
            .await;
        assert!(wrong_alg.is_err());
        s.finish_upload(&repo, &id, &d, &b""[..])
            .await
            .expect("finish");
        assert!(s.repo_has_blob(&repo, &d));
    }

    fn manifest_json(config: &Digest, layer: &Digest) -> Vec<u8> {
        format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{config}","size":2}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{layer}","size":5}}]}}"#
        )
        .into_bytes()
    }

    #[tokio::test]
    async fn manifests_need_their_blobs_and_failed_txns_change_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = Store::open(dir.path()).await.expect("open");
        let repo = name("r");
        let cfg = Digest::of(Algorithm::Sha256, b"{}");
        let layer = Digest::of(Algorithm::Sha256, b"layer");
        let body = manifest_json(&cfg, &layer);
        let tag = Reference::parse("v1").expect("tag");
        s.push_blob(&repo, &cfg, &b"{}"[..]).await.expect("cfg");
        let missing = s
            .put_manifest(&repo, &tag, OCI_MANIFEST, &body, &[], true)
            .await;
        assert!(matches!(missing, Err(StoreError::ManifestBlobUnknown(d)) if d == layer));
        assert!(s
            .resolve_tag(&repo, &Tag::parse("v1").expect("t"))
            .is_none());
        // sparse accepts it
        let sparse = s
            .put_manifest(&repo, &tag, OCI_MANIFEST, &body, &[], false)
            .await;
        assert!(sparse.is_ok());
        drop(s);
        let s = Store::open(dir.path()).await.expect("reopen");
        let m = s.get_manifest(&repo, &tag).await.expect("get");
        assert_eq!(&m.bytes[..], &body[..]);
        s.delete_manifest(&repo, &Reference::Digest(m.record.digest.clone()))
            .await
            .expect("delete");
        assert!(
            s.resolve_tag(&repo, &Tag::parse("v1").expect("t"))
                .is_none(),
            "no dangling tag"
        );
    }

    #[tokio::test]
    async fn torn_journal_tail_is_cut_and_the_rest_kept() {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = Digest::of(Algorithm::Sha256, b"x");
        {
            let s = Store::open(dir.path()).await.expect("open");
            s.push_blob(&name("a"), &d, &b"x"[..]).await.expect("push");
        }
        let journal = layout::journal_path(dir.path());
        let mut bytes = fs::read(&journal).expect("journal");
        let good = bytes.len();
        bytes.extend_from_slice(b"0123456789abcdef {\"ops\":[{\"op\":\"li");
        fs::write(&journal, &bytes).expect("write");
        let s = Store::open(dir.path())
            .await
            .expect("reopen after torn write");
        assert!(s.repo_has_blob(&name("a"), &d));
        assert_eq!(fs::metadata(&journal).expect("meta").len() as usize, good);
        // Damage before intact lines is not a torn tail: refuse to guess.
        drop(s);
        let good_line = fs::read(&journal).expect("journal");
        let mut bytes = good_line.clone();
        bytes[0] ^= 1;
        bytes.extend_from_slice(&good_line);
        fs::write(&journal, &bytes).expect("write");
        assert!(matches!(
            Store::open(dir.path()).await,
            Err(StoreError::Corrupt(_))
        ));
    }

    #[tokio::test]
    async fn a_data_dir_is_opened_by_one_store_at_a_time() {
        let (dir, s) = store().await;
        assert!(matches!(
            Store::open(dir.path()).await,
            Err(StoreError::Locked(_))
        ));
        drop(s);
        Store::open(dir.path())
            .await
            .expect("free again once the first is gone");
    }

    #[tokio::test]
    async fn pagination() {
        let keys = ["a", "b", "c", "d"];
        assert_eq!(
            page(keys.into_iter(), None, Some(2)),
            Page {
                items: vec!["a".into(), "b".into()],
                more: true
            }
        );
        assert_eq!(
            page(keys.into_iter(), Some("b"), Some(2)),
            Page {
                items: vec!["c".into(), "d".into()],
                more: false
            }
        );
        assert_eq!(
            page(keys.into_iter(), None, Some(0)),
            Page {
                items: vec![],
                more: true
            }
        );
        assert_eq!(
            page(keys.into_iter(), Some("zz"), None),
            Page {
                items: vec![],
                more: false
            }
        );
    }

    #[tokio::test]
    async fn referrers_report_annotations_from_the_stored_bytes() {
        let (dir, s) = store().await;
        let repo = name("r");
        let cfg = Digest::of(Algorithm::Sha256, b"{}");
        let layer = Digest::of(Algorithm::Sha256, b"layer");
        s.push_blob(&repo, &cfg, &b"{}"[..]).await.expect("cfg");
        s.push_blob(&repo, &layer, &b"layer"[..])
            .await
            .expect("layer");
        let subject_body = manifest_json(&cfg, &layer);
        let subject = Digest::of(Algorithm::Sha256, &subject_body);
        let by_digest = Reference::Digest(subject.clone());
        s.put_manifest(&repo, &by_digest, OCI_MANIFEST, &subject_body, &[], true)
            .await
            .expect("subject");
        let signature = |kind: &str, note: &str| -> Vec<u8> {
            format!(
                r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","artifactType":"{kind}","config":{{"mediaType":"application/vnd.oci.empty.v1+json","digest":"{cfg}","size":2}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{layer}","size":5}}],"subject":{{"mediaType":"{OCI_MANIFEST}","digest":"{subject}","size":{}}},"annotations":{{"note":"{note}"}}}}"#,
                subject_body.len()
            )
            .into_bytes()
        };
        for (kind, note) in [("application/x.sig", "one"), ("application/x.sbom", "two")] {
            let body = signature(kind, note);
            let d = Reference::Digest(Digest::of(Algorithm::Sha256, &body));
            s.put_manifest(&repo, &d, OCI_MANIFEST, &body, &[], true)
                .await
                .expect("referrer");
        }
        let all = s.referrers(&repo, &subject, None).await;
        let mut notes: Vec<String> = all
            .iter()
            .map(|r| r.annotations.as_ref().expect("annotations")["note"].to_string())
            .collect();
        notes.sort();
        assert_eq!(notes, [r#""one""#, r#""two""#]);
        let sigs = s
            .referrers(&repo, &subject, Some("application/x.sig"))
            .await;
        assert_eq!(sigs.len(), 1);
        assert_eq!(
            sigs[0].record.artifact_type.as_deref(),
            Some("application/x.sig")
        );
        // The in-memory index does not keep annotations; a restart still reports them.
        drop(s);
        let s = Store::open(dir.path()).await.expect("reopen");
        let again = s.referrers(&repo, &subject, None).await;
        assert!(again.iter().all(|r| r.annotations.is_some()));
    }
}
