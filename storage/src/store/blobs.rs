//! The store's blob operations: ingest (verified, pinned), claim, push, mount, stat, read,
//! and removing a repository's link. Bytes go through the blob-storage contract
//! (`crate::blobstore`); which repository may see a blob is metadata.

use std::time::SystemTime;

use tokio::io::AsyncRead;

use crate::*;

/// How [`Store::ingest_blob`] writes.
#[derive(Clone, Copy, Debug, Default)]
pub struct Ingest {
    /// Nobody will read the blob soon (an import's layers): written past the caches where
    /// the backend can ([`BlobStore::put_cold`]), with the same verification and
    /// durability. Only for a known digest.
    pub cold: bool,
}

/// What [`Store::delete_blob`] may remove.
#[derive(Clone, Copy, Debug, Default)]
pub struct BlobDelete {
    /// Remove the link even while manifests of the repository reference the blob.
    pub even_if_referenced: bool,
}

impl Store {
    /// Stream `reader` into the content store, verified against `expected` when given, and
    /// return it with a pin that keeps GC away until dropped. The blob is not linked into
    /// any repository. Its grace window starts now; a caller that links it later (an import)
    /// holds the pin until it has committed, or commits within that window.
    pub async fn ingest_blob<R: AsyncRead + Unpin + Send>(
        &self,
        expected: Option<&Digest>,
        alg: Algorithm,
        mut reader: R,
        how: Ingest,
    ) -> Result<(Ingested, Pin), StoreError> {
        match expected {
            Some(expected) => self.ingest_known(expected, &mut reader, how.cold).await,
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
        // With replicas, published first: another replica's GC (and its leftover sweep, for
        // an upload this write begins) sees it before anything is written.
        let pin = self.inner.pins.pin_published(expected).await?;
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
            let pin = self.inner.pins.pin_published(&digest).await?;
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
    pub async fn pin_blob(&self, d: &Digest) -> Pin {
        self.inner.pins.pin(d).await
    }

    /// [`Store::pin_blob`] for code that cannot wait here (a synchronous planner): the
    /// blob may be in the middle of a GC delete until [`Pin::settled`] returns, so await
    /// that before relying on its presence.
    pub fn pin_blob_now(&self, d: &Digest) -> Pin {
        self.inner.pins.pin_now(d)
    }

    /// If `d` is stored, pin it (and restart its grace window) and return the pin; else
    /// `None`. The race-free form of "`blob_exists`, so skip writing it": pinned before
    /// looking, the blob cannot be collected between the look and the writer's commit.
    pub async fn claim_blob(&self, d: &Digest) -> Result<Option<Pin>, StoreError> {
        let pin = self.inner.pins.pin_published(d).await?;
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
    pub(crate) fn touch(&self, d: &Digest) {
        self.inner.clock.touch(d, SystemTime::now());
    }

    /// [`Store::touch`] after the backend wrote or finished `d`, unless that write set the
    /// clock itself ([`BlobClock::set_by_writes`]: a new file's mtime, or `persist` touching
    /// the file it found), so the extra syscalls are skipped on the hot path.
    pub(crate) fn touch_written(&self, d: &Digest) {
        if !self.inner.clock.set_by_writes() {
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
            .ingest_blob(
                Some(expected),
                expected.algorithm(),
                reader,
                Ingest::default(),
            )
            .await?;
        self.link(repo, &ingested.digest).await?;
        Ok(ingested)
    }

    /// Link `d` into `repo` unless it already is. The "already linked" check happens under
    /// the journal lock: checked outside it, a GC could drop the link right after the check
    /// and the push would be acknowledged without it.
    pub(crate) async fn link(&self, repo: &RepoName, d: &Digest) -> Result<(), StoreError> {
        let mut locked = self.inner.meta.lock().await?;
        self.link_locked(&mut locked, repo, d).await
    }

    /// [`Store::link`] for a caller already holding the journal lock.
    pub(crate) async fn link_locked(
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
    pub(crate) async fn commit_locked(
        &self,
        locked: &mut meta::Locked<'_>,
        txn: Txn,
    ) -> Result<(), StoreError> {
        use futures_util::{StreamExt, TryStreamExt};
        let needed = txn.needs_stored();
        let blobs = &self.inner.blobs;
        // Concurrent, bounded: an import's one transaction may link hundreds of blobs, and
        // on S3 each look is a round trip.
        let stored: std::collections::HashMap<Digest, u64> = futures_util::stream::iter(needed)
            .map(|d| async move { Ok::<_, StoreError>(blobs.stat(&d).await?.map(|n| (d, n))) })
            .buffer_unordered(16)
            .try_filter_map(|d| async move { Ok(d) })
            .try_collect()
            .await?;
        // The sizes go into the journal with the links: the usage sums never ask again.
        let mut txn = txn;
        txn.set_link_sizes(&stored);
        locked.commit(txn, |d| stored.contains_key(d)).await
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
        let _pin = self.inner.pins.pin_published(d).await?;
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
        if self.inner.meta.is_shared() && self.repo_has_blob(repo, d) {
            // With replicas the client may next name it in a manifest put on another, after
            // a GC on a third: the use is published first, then the state caught up, then
            // looked at. GC reads the uses and commits its plan with the mark gate closed,
            // so either it saw this use (and kept the link) or this sees the link gone.
            self.inner.pins.touch_published(d).await?;
            self.inner.meta.sync().await?;
        }
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
    /// Refused while a manifest of `repo` references it, unless `how.even_if_referenced`
    /// (CNCF Distribution's behaviour: those manifests stay, but pulls of them from `repo`
    /// fail until the blob is pushed again). Checked under the journal lock, so a manifest
    /// committed concurrently is either seen here or refused for the missing link.
    pub async fn delete_blob(
        &self,
        repo: &RepoName,
        d: &Digest,
        how: BlobDelete,
    ) -> Result<(), StoreError> {
        self.remove_blob_link(repo, d, !how.even_if_referenced)
            .await
    }

    async fn remove_blob_link(
        &self,
        repo: &RepoName,
        d: &Digest,
        refuse_referenced: bool,
    ) -> Result<(), StoreError> {
        let mut locked = self.inner.meta.lock().await?;
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
}

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
