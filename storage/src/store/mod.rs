//! The `Store`: one handle over the metadata (`meta`), the blob backend (`blobstore`),
//! pins and upload caps. Its operations live beside it, one file per part of the API.

mod blobs;
mod manifests;
mod uploads;

pub use blobs::{BlobDelete, Ingest};
pub use manifests::ManifestDelete;

#[cfg(test)]
pub(crate) use manifests::page;
pub(crate) use manifests::ManifestCache;

/// Compact the journal at start when it has grown past this.
const COMPACT_AT: u64 = 64 << 20;

use std::sync::Arc;

use crate::*;

/// The store. Cheap to clone: everything is behind one `Arc`.
#[derive(Clone)]
pub struct Store {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) root: PathBuf,
    /// Held open for the store's lifetime: its exclusive lock keeps a second process (a
    /// server, or `airdock import --data-dir`) from replaying and appending the same journal.
    pub(crate) _lock: File,
    pub(crate) meta: Meta,
    /// Where blob bytes and upload sessions live (the blob-storage contract). The store
    /// adds what no backend knows: repositories and links (`meta`), pins, session caps.
    pub(crate) blobs: Box<dyn BlobStore>,
    /// When each blob was last written or claimed: the file's mtime on the filesystem, a
    /// record in memory for backends without one (see `BlobClock`).
    pub(crate) clock: Box<dyn BlobClock>,
    /// Open sessions on disk, their owners, against the caps.
    pub(crate) open_uploads: Open,
    /// Digests writers are relying on right now; GC leaves them alone.
    pub(crate) pins: pins::Pins,
    /// One GC at a time (the interval task and the admin endpoint may both ask).
    pub(crate) gc: tokio::sync::Mutex<()>,
    /// Manifest bytes by digest. They never change, are small and are read on every pull,
    /// so a pull is answered without a file read or a blocking thread.
    pub(crate) manifests: ManifestCache,
    /// Blob sizes the usage report has seen (content-addressed, so they never change).
    pub(crate) sizes: usage::SizeCache,
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
        blobs: Option<OpenBlobs>,
    ) -> Result<Store, StoreError> {
        let root = root.as_ref().to_owned();
        let root2 = root.clone();
        let (lock, meta) =
            tokio::task::spawn_blocking(move || -> Result<(File, Meta), StoreError> {
                if crate::blobs::skip_dir_fsync() {
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
            // Opened under the lock (see `OpenBlobs`). A backend without a writable time per
            // blob: the clock is kept beside the journal (see `FileClock`).
            Some(open) => {
                let clock = FileClock::open(layout::clock_path(&root), true)?;
                (open().await?, Box::new(clock))
            }
        };
        let open_uploads = crate::uploads::entries(blobs.sessions().await?);
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

    /// For a clean stop: make GC's clock durable ([`BlobClock::close`]), so that the next
    /// open trusts each blob's last use instead of counting every blob as used then.
    pub fn close(&self) -> Result<(), StoreError> {
        self.inner.clock.close()
    }

    /// `kind()` of the blob backend: `"filesystem"`, `"s3"`, …
    pub fn blob_backend(&self) -> &'static str {
        self.inner.blobs.kind()
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
}
