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
    /// Set once the sizes of blobs linked without one (an older journal) were asked for.
    pub(crate) sizes_filled: tokio::sync::OnceCell<()>,
    /// The config label whose manifests are indexed (`labelled`), once the server names it.
    pub(crate) label: std::sync::OnceLock<&'static str>,
    /// Which configs carry it, read once each.
    pub(crate) label_verdicts: labelled::ConfigVerdicts,
    /// Set once the manifests committed without the answer were classified.
    pub(crate) labels_filled: tokio::sync::OnceCell<()>,
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
        Store::open_with_metadata(root, blobs, None).await
    }

    /// [`Store::open_with`], with the metadata in the PostgreSQL database at `metadata`
    /// (`metadata.url`) instead of the journal under `root`: shared with every other store
    /// (replica) opened on it, each on a data dir of its own. A data dir keeps to one kind:
    /// one with a journal of its own is refused here (its metadata would be set aside
    /// silently; `airdock migrate-metadata` moves it), and one opened here is marked
    /// (`meta/database`) so that opening it without the database is refused too.
    pub async fn open_with_metadata(
        root: impl AsRef<Path>,
        blobs: Option<OpenBlobs>,
        metadata: Option<&str>,
    ) -> Result<Store, StoreError> {
        let root = root.as_ref().to_owned();
        let root2 = root.clone();
        let shared = match metadata {
            Some(url) => Some(crate::meta::Db::parse(url)?),
            None => None,
        };
        let shown = shared.as_ref().map(|db| db.shown().to_owned());
        let (lock, local) =
            tokio::task::spawn_blocking(move || -> Result<(File, Option<Meta>), StoreError> {
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
                match shown {
                    Some(shown) => {
                        bind_to_database(&root2, &shown)?;
                        Ok((lock, None))
                    }
                    None => {
                        refuse_if_bound(&root2)?;
                        Ok((lock, Some(Meta::open(&root2, false)?)))
                    }
                }
            })
            .await
            .map_err(io::Error::other)??;
        let meta = match (local, shared) {
            (Some(meta), _) => meta,
            (None, Some(db)) => Meta::open_pg(db).await?,
            (None, None) => return Err(StoreError::Io(io::Error::other("no metadata opened"))),
        };
        let meta_pins = meta.marks_link();
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
                // With replicas, pins and uses are published to every replica's GC.
                pins: match meta_pins {
                    Some(link) => pins::Pins::published(link)?,
                    None => pins::Pins::default(),
                },
                gc: tokio::sync::Mutex::new(()),
                manifests: ManifestCache::default(),
                sizes_filled: tokio::sync::OnceCell::new(),
                label: std::sync::OnceLock::new(),
                label_verdicts: labelled::ConfigVerdicts::default(),
                labels_filled: tokio::sync::OnceCell::new(),
            }),
        };
        let len = match fs::metadata(layout::journal_path(&store.inner.root)) {
            Ok(m) => m.len(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => 0,
            Err(e) => return Err(e.into()),
        };
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
    /// disk is free. Runs on a blocking thread (a sync and a statvfs); with PostgreSQL also
    /// one catch-up, whose failure is the journal's.
    pub async fn vitals(&self) -> Vitals {
        let root = self.inner.root.clone();
        let poisoned = self.inner.meta.is_poisoned();
        let shared = self.inner.meta.is_shared();
        let mut v = tokio::task::spawn_blocking(move || vitals::check(&root, poisoned, shared))
            .await
            .unwrap_or_else(|e| Vitals {
                write_error: Some(format!("the probe thread failed: {e}")),
                ..Vitals::default()
            });
        if let Err(e) = self.inner.meta.sync().await {
            v.journal_error = Some(e.to_string());
        }
        v
    }

    /// Apply the metadata commits other replicas made (PostgreSQL, `metadata.url`), so that
    /// what is read next is at least as new as any write acknowledged before this call.
    /// The HTTP layer calls it before every request that reads metadata. One database round
    /// trip, shared by the requests that arrive meanwhile; nothing with a local journal.
    pub async fn sync(&self) -> Result<(), StoreError> {
        self.inner.meta.sync().await
    }

    /// Whether the metadata is shared with other replicas (PostgreSQL).
    pub fn metadata_is_shared(&self) -> bool {
        self.inner.meta.is_shared()
    }

    /// The secret `name` every replica on the same database shares: whichever asks first
    /// sets it to `fresh`. `None` with a local journal (nothing to share it with).
    pub async fn shared_secret(
        &self,
        name: &str,
        fresh: &str,
    ) -> Result<Option<String>, StoreError> {
        self.inner.meta.shared_secret(name, fresh).await
    }
}

/// Refuse a data dir whose own journal holds metadata (opening it on a database would set
/// that aside silently), else record which database it is bound to.
pub(crate) fn bind_to_database(root: &Path, shown: &str) -> Result<(), StoreError> {
    let journal = layout::journal_path(root);
    let holds = match fs::metadata(&journal) {
        Ok(m) => m.len() > 0,
        Err(e) if e.kind() == io::ErrorKind::NotFound => false,
        Err(e) => return Err(e.into()),
    };
    if holds {
        return Err(StoreError::Unsupported(format!(
            "{} holds metadata of its own; with metadata.url it would be set aside: move it into \
             the database first with `airdock migrate-metadata --from-data-dir {} --to URL`",
            journal.display(),
            root.display()
        )));
    }
    let marker = layout::database_path(root);
    if fs::read_to_string(&marker).ok().as_deref() == Some(shown) {
        return Ok(());
    }
    // Written whole or not at all (temp file, fsync, rename, fsync `meta/`).
    let (guard, mut f) = crate::blobs::TempFile::create(&root.join(layout::TMP))?;
    std::io::Write::write_all(&mut f, shown.as_bytes())?;
    f.sync_all()?;
    drop(f);
    fs::rename(guard.path(), &marker)?;
    guard.disarm();
    crate::blobs::fsync_dir(&root.join(layout::META))?;
    Ok(())
}

/// The PostgreSQL database (URL without password) the data dir `root` is bound to, if any:
/// its metadata is there, not in its journal (commands that read the journal refuse it).
pub fn metadata_database(root: &Path) -> io::Result<Option<String>> {
    match fs::read_to_string(layout::database_path(root)) {
        Ok(db) => Ok(Some(db.trim().to_owned())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Refuse to open a data dir bound to a database with a local journal: its metadata is not
/// here, and an empty state would answer as if nothing had been pushed.
pub(crate) fn refuse_if_bound(root: &Path) -> Result<(), StoreError> {
    match fs::read_to_string(layout::database_path(root)) {
        Ok(db) => Err(StoreError::Unsupported(format!(
            "the metadata of {} is in the PostgreSQL database {}: give its URL with \
             metadata.url (--metadata-url, AIRDOCK_METADATA_URL)",
            root.display(),
            db.trim()
        ))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e.into()),
    }
}
