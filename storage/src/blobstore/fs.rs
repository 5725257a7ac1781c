//! The filesystem [`BlobStore`]: blobs as files under `blobs/<alg>/<xx>/<hex>`, sessions as
//! directories under `uploads/<id>/` (see `layout.rs` for the tree).
//!
//! Crash safety, the same steps for every blob however it arrives: bytes go to a new file
//! under `tmp/` (or the session's `data` file), hashed while they are written; the file is
//! fsynced, renamed to its digest's path, and that directory is fsynced
//! (`AIRDOCK_TEST_SKIP_DIR_FSYNC=1` skips the directory fsync, for the power-loss test only).
//! A crash at any step leaves either nothing under the digest or the whole blob; files left in
//! `tmp/` are removed by the next open of the store. A finished session is renamed, never
//! copied.

use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use bytes::Bytes;
use futures_util::TryStreamExt;

use super::{
    BlobClock, BlobRead, BlobStore, Body, ByteRange, DigestStream, SessionRecord, Written,
};
use crate::blobs::{self, Sink};
use crate::uploads::{self, Hot, Sessions, Taken};
use crate::{layout, Algorithm, Digest, StoreError, UploadId};

/// Blobs and upload sessions under one data directory.
pub struct FsBlobStore {
    root: PathBuf,
    /// Running hashes of the sessions being written (lost with the process, then rebuilt
    /// from the `data` file at `finish`), and the claim that keeps a session to one writer.
    hot: Sessions,
}

fn busy() -> StoreError {
    StoreError::UploadInvalid("another request is writing to this upload".into())
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(io::Error::other)?
}

impl FsBlobStore {
    /// The backend over `root`, whose tree [`layout::prepare`] has made (the store does at
    /// open, under its lock, and also empties `tmp/` then).
    pub fn new(root: impl Into<PathBuf>) -> FsBlobStore {
        FsBlobStore {
            root: root.into(),
            hot: Sessions::default(),
        }
    }

    /// Make the tree under `root` (durably) and return the backend over it.
    pub async fn open(root: impl Into<PathBuf>) -> Result<FsBlobStore, StoreError> {
        let root = root.into();
        let r = root.clone();
        blocking(move || layout::prepare(&r)).await?;
        Ok(FsBlobStore::new(root))
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The file blob `d` is stored in (it may not exist).
    pub fn blob_path(&self, d: &Digest) -> PathBuf {
        layout::blob_path(&self.root, d)
    }

    /// `put`, through the page cache or (`cold`) with direct I/O.
    async fn write(
        &self,
        expected: &Digest,
        body: Body<'_>,
        limit: Option<u64>,
        cold: bool,
    ) -> Result<Written, StoreError> {
        let (guard, file, digest, size) =
            blobs::write_temp(&self.root, expected.algorithm(), body, limit, cold).await?;
        if digest != *expected {
            // The guard removes the temp file.
            return Err(StoreError::DigestMismatch {
                expected: expected.clone(),
                actual: digest,
            });
        }
        let existed = blobs::commit_temp(guard, file, self.blob_path(expected)).await?;
        Ok(Written { size, existed })
    }

    /// Append to a claimed session; `hot` is the running hash if it is still in memory.
    /// Returns the new size and the hash to put back (if it still covers every byte).
    async fn append_claimed(
        &self,
        dir: &Path,
        hot: Option<Hot>,
        offset: u64,
        expect_len: Option<u64>,
        body: Body<'_>,
    ) -> Result<(u64, Option<Hot>), (StoreError, Option<Hot>)> {
        let file = match uploads::open_write(dir) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err((StoreError::UploadUnknown, hot))
            }
            Err(e) => return Err((e.into(), hot)),
        };
        let current = match file.metadata() {
            Ok(m) => m.len(),
            Err(e) => return Err((e.into(), hot)),
        };
        if offset != current {
            return Err((
                StoreError::UploadOutOfOrder {
                    requested: offset,
                    current,
                },
                hot,
            ));
        }
        // The running hash only helps if it covers exactly the bytes on disk.
        let hasher = match hot {
            Some(h) if h.offset == current => Some(h.hasher),
            _ => None,
        };
        let probe = match file.try_clone() {
            Ok(f) => f,
            Err(e) => return Err((e.into(), None)),
        };
        let rollback = || {
            let _ = probe.set_len(current);
        };
        match blobs::copy_hashing(body, Sink::new(file, current), hasher, None).await {
            Ok((_, hasher, n)) => {
                if let Some(announced) = expect_len.filter(|len| *len != n) {
                    rollback();
                    return Err((
                        StoreError::ChunkLength {
                            announced,
                            received: n,
                            holds: current,
                        },
                        None,
                    ));
                }
                let size = current + n;
                Ok((
                    size,
                    hasher.map(|hasher| Hot {
                        offset: size,
                        hasher,
                    }),
                ))
            }
            Err(e) => {
                rollback();
                Err((e, None))
            }
        }
    }
}

#[async_trait::async_trait]
impl BlobStore for FsBlobStore {
    fn kind(&self) -> &'static str {
        "filesystem"
    }

    async fn put(
        &self,
        expected: &Digest,
        body: Body<'_>,
        limit: Option<u64>,
    ) -> Result<Written, StoreError> {
        self.write(expected, body, limit, false).await
    }

    async fn put_cold(
        &self,
        expected: &Digest,
        body: Body<'_>,
        limit: Option<u64>,
    ) -> Result<Written, StoreError> {
        self.write(expected, body, limit, true).await
    }

    async fn stat(&self, d: &Digest) -> Result<Option<u64>, StoreError> {
        // One `stat` syscall: cheaper inline than a trip to a blocking thread.
        match fs::metadata(self.blob_path(d)) {
            Ok(m) => Ok(Some(m.len())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    async fn stat_durable(&self, d: &Digest) -> Result<Option<u64>, StoreError> {
        let path = self.blob_path(d);
        // The file may have been renamed in by a concurrent writer whose directory fsync has
        // not run yet: make its entry durable before anyone acknowledges on the strength of
        // it. On a blocking thread: an fsync can take milliseconds.
        Ok(blocking(move || match fs::metadata(&path) {
            Ok(m) => {
                let dir = path
                    .parent()
                    .ok_or_else(|| io::Error::other("blob path has no parent"))?;
                blobs::fsync_dir(dir).map(|()| Some(m.len()))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        })
        .await?)
    }

    async fn read(&self, d: &Digest, range: ByteRange) -> Result<BlobRead, StoreError> {
        let file = match File::open(self.blob_path(d)) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(StoreError::BlobUnknown(d.clone()))
            }
            Err(e) => return Err(e.into()),
        };
        let size = file.metadata()?.len();
        let (start, len) = range.resolve(size)?;
        Ok(BlobRead {
            size,
            stream: Box::pin(blobs::read_range(file, start, len)),
        })
    }

    async fn delete(&self, d: &Digest) -> Result<bool, StoreError> {
        match fs::remove_file(self.blob_path(d)) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    async fn strays(&self) -> Result<Vec<String>, StoreError> {
        let root = self.root.clone();
        let (_, strays) = blocking(move || layout::walk_blobs(&root)).await?;
        Ok(strays.iter().map(|p| p.display().to_string()).collect())
    }

    /// A rename into `quarantine/`, made durable there.
    async fn quarantine(&self, d: &Digest, unix_time: u64) -> Result<Option<String>, StoreError> {
        let (root, d) = (self.root.clone(), d.clone());
        Ok(blocking(move || {
            layout::create_dirs_durable(&root.join(layout::QUARANTINE))?;
            let to = layout::quarantine_path(&root, &d, unix_time);
            match fs::rename(layout::blob_path(&root, &d), &to) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(e),
            }
            blobs::fsync_dir(&root.join(layout::QUARANTINE))?;
            Ok(Some(to.display().to_string()))
        })
        .await?)
    }

    fn list(&self) -> DigestStream<'_> {
        // One fan-out directory per blocking task, so no step holds more than a few hundred
        // names and the listing streams however many blobs there are.
        let root = self.root.clone();
        let shards = futures_util::stream::unfold(
            (root, None::<Vec<PathBuf>>),
            |(root, shards)| async move {
                let mut shards = match shards {
                    Some(s) => s,
                    None => {
                        let r = root.clone();
                        match blocking(move || layout::blob_shards(&r)).await {
                            Ok((s, _strays)) => s,
                            Err(e) => return Some((Err(e.into()), (root, Some(Vec::new())))),
                        }
                    }
                };
                let shard = shards.pop()?;
                let r = root.clone();
                let found = blocking(move || layout::walk_shard(&r, &shard))
                    .await
                    .map(|(found, _strays)| found)
                    .map_err(StoreError::from);
                Some((found, (root, Some(shards))))
            },
        );
        Box::pin(
            shards
                .map_ok(|found| futures_util::stream::iter(found.into_iter().map(Ok)))
                .try_flatten(),
        )
    }

    async fn begin(
        &self,
        id: &UploadId,
        algorithm: Algorithm,
        info: Bytes,
    ) -> Result<(), StoreError> {
        let dir = layout::upload_dir(&self.root, id);
        let d = dir.clone();
        blocking(move || {
            match fs::create_dir(&d) {
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    return Ok(Err(StoreError::UploadInvalid(
                        "upload session already open".into(),
                    )))
                }
                other => other?,
            }
            uploads::create(&d, &info)
                .inspect_err(|_| {
                    let _ = fs::remove_dir_all(&d);
                })
                .map(Ok)
        })
        .await??;
        self.hot.insert(
            id,
            Hot {
                offset: 0,
                hasher: algorithm.hasher(),
            },
        );
        Ok(())
    }

    async fn append(
        &self,
        id: &UploadId,
        offset: u64,
        expect_len: Option<u64>,
        body: Body<'_>,
    ) -> Result<u64, StoreError> {
        let dir = layout::upload_dir(&self.root, id);
        let hot = match self.hot.take(id) {
            Taken::Free(hot) => hot,
            Taken::Busy => return Err(busy()),
        };
        match self
            .append_claimed(&dir, hot, offset, expect_len, body)
            .await
        {
            Ok((size, hot)) => {
                self.hot.put_back(id, hot);
                Ok(size)
            }
            Err((e, hot)) => {
                self.hot.put_back(id, hot);
                Err(e)
            }
        }
    }

    fn reads_sessions(&self) -> bool {
        true
    }

    async fn read_session(&self, id: &UploadId) -> Result<BlobRead, StoreError> {
        let dir = layout::upload_dir(&self.root, id);
        let file = match File::open(uploads::data_path(&dir)) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(StoreError::UploadUnknown),
            Err(e) => return Err(e.into()),
        };
        let size = file.metadata()?.len();
        Ok(BlobRead {
            size,
            stream: Box::pin(blobs::read_range(file, 0, size)),
        })
    }

    async fn session_size(&self, id: &UploadId) -> Result<u64, StoreError> {
        let dir = layout::upload_dir(&self.root, id);
        match fs::metadata(uploads::data_path(&dir)) {
            Ok(m) => Ok(m.len()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(StoreError::UploadUnknown),
            Err(e) => Err(e.into()),
        }
    }

    async fn finish(&self, id: &UploadId, expected: &Digest) -> Result<Written, StoreError> {
        let dir = layout::upload_dir(&self.root, id);
        let hot = match self.hot.take(id) {
            Taken::Free(hot) => hot,
            Taken::Busy => return Err(busy()),
        };
        let data = uploads::data_path(&dir);
        let size = match fs::metadata(&data) {
            Ok(m) => m.len(),
            Err(e) => {
                self.hot.forget(id);
                return Err(match e.kind() {
                    io::ErrorKind::NotFound => StoreError::UploadUnknown,
                    _ => e.into(),
                });
            }
        };
        let alg = expected.algorithm();
        let known = match hot {
            Some(h) if h.offset == size && h.hasher.algorithm() == alg => Some(h.hasher.finish()),
            _ => None,
        };
        let digest = match known {
            Some(d) => Ok(d),
            // After a restart, or a digest of another algorithm than the running hash's.
            None => {
                let data = data.clone();
                blocking(move || blobs::hash_file(&data, alg))
                    .await
                    .map(|(d, _)| d)
            }
        };
        let digest = match digest {
            Ok(d) => d,
            Err(e) => {
                self.hot.forget(id);
                return Err(match e.kind() {
                    io::ErrorKind::NotFound => StoreError::UploadUnknown,
                    _ => e.into(),
                });
            }
        };
        if digest != *expected {
            self.hot.forget(id);
            let _ = blocking(move || fs::remove_dir_all(dir)).await;
            return Err(StoreError::DigestMismatch {
                expected: expected.clone(),
                actual: digest,
            });
        }
        let dst = self.blob_path(expected);
        let done = blocking(move || -> io::Result<bool> {
            File::open(&data)?.sync_data()?;
            let existed = blobs::persist(&data, &dst)?;
            fs::remove_dir_all(&dir)?;
            Ok(existed)
        })
        .await;
        self.hot.forget(id);
        match done {
            Ok(existed) => Ok(Written { size, existed }),
            // Aborted while finishing: its directory went first.
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(StoreError::UploadUnknown),
            Err(e) => Err(e.into()),
        }
    }

    async fn abort(&self, id: &UploadId) -> Result<bool, StoreError> {
        self.hot.forget(id);
        let dir = layout::upload_dir(&self.root, id);
        match blocking(move || fs::remove_dir_all(dir)).await {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    async fn sessions(&self) -> Result<Vec<SessionRecord>, StoreError> {
        let uploads = self.root.join(layout::UPLOADS);
        Ok(blocking(move || scan(&uploads)).await?)
    }
}

/// The filesystem store's [`BlobClock`]: a blob file's mtime, which GC's candidate scan reads
/// (set by every write that lands the file, and by `touch`). Durable with the file, so no
/// touch is lost to a restart.
pub struct MtimeClock {
    root: PathBuf,
}

impl MtimeClock {
    pub fn new(root: impl Into<PathBuf>) -> MtimeClock {
        MtimeClock { root: root.into() }
    }
}

impl BlobClock for MtimeClock {
    fn touch(&self, d: &Digest, at: SystemTime) {
        // Best effort (a read-only disk, a blob deleted meanwhile): a lost touch only means
        // GC may see an older time, and writers that rely on the blob also hold a pin.
        let path = layout::blob_path(&self.root, d);
        let newer = fs::metadata(&path)
            .and_then(|m| m.modified())
            .map_or(true, |t| t < at);
        if newer {
            let _ = File::open(&path).and_then(|f| f.set_modified(at));
        }
    }

    fn last_used(&self, d: &Digest) -> Option<SystemTime> {
        fs::metadata(layout::blob_path(&self.root, d))
            .and_then(|m| m.modified())
            .ok()
    }

    fn forget(&self, _d: &Digest) {
        // The time went with the file.
    }

    fn set_by_writes(&self) -> bool {
        true
    }
}

/// Session directories under `uploads/` whose names are valid ids, with their `info.json`
/// (empty if unreadable: a half-made session, which expiry removes) and times (`started`
/// from the directory, `last_write` from `data`).
fn scan(uploads: &Path) -> io::Result<Vec<SessionRecord>> {
    let mut out = Vec::new();
    for entry in fs::read_dir(uploads)? {
        let entry = entry?;
        let Ok(id) = UploadId::parse(&entry.file_name().to_string_lossy()) else {
            continue;
        };
        let dir = entry.path();
        let info = fs::read(uploads::info_path(&dir)).unwrap_or_default();
        let meta = |p: &Path| fs::metadata(p).ok();
        let started = meta(&dir)
            .and_then(|m| m.modified().ok())
            .unwrap_or_else(SystemTime::now);
        let data = meta(&uploads::data_path(&dir));
        let size = data.as_ref().map_or(0, |m| m.len());
        let last_write = data
            .and_then(|m| m.modified().ok())
            .map_or(started, |t| t.max(started));
        out.push(SessionRecord {
            id,
            size,
            info: Bytes::from(info),
            started,
            last_write,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::blobstore::testsuite::{self, Harness};

    struct FsHarness {
        dir: tempfile::TempDir,
        store: FsBlobStore,
    }

    impl FsHarness {
        async fn new() -> FsHarness {
            let dir = tempfile::tempdir().expect("tempdir");
            let store = FsBlobStore::open(dir.path()).await.expect("open");
            FsHarness { dir, store }
        }
    }

    #[async_trait::async_trait]
    impl Harness for FsHarness {
        fn store(&self) -> &dyn BlobStore {
            &self.store
        }

        async fn restart(&mut self) {
            self.store = FsBlobStore::new(self.dir.path());
        }
    }

    crate::blobstore_contract_tests!(FsHarness::new().await);

    #[tokio::test]
    async fn reads_a_session_back_without_closing_it() {
        let h = FsHarness::new().await;
        testsuite::read_session_leaves_it_open(&h.store).await;
    }

    /// The mtime clock: its time is the file's, it only moves forward, and the touch of a
    /// blob that is not there is a no-op.
    #[tokio::test]
    async fn mtime_clock() {
        let h = FsHarness::new().await;
        let clock = MtimeClock::new(h.dir.path());
        let d = Digest::of(Algorithm::Sha256, b"timed");
        assert_eq!(clock.last_used(&d), None);
        clock.touch(&d, SystemTime::now());
        assert_eq!(clock.last_used(&d), None);
        h.store
            .put(&d, &mut &b"timed"[..], None)
            .await
            .expect("put");
        let written = clock.last_used(&d).expect("a file has a time");
        let later = written + std::time::Duration::from_secs(60);
        clock.touch(&d, later);
        clock.touch(&d, written);
        assert_eq!(clock.last_used(&d), Some(later));
    }

    #[tokio::test]
    async fn clock_and_writes() {
        let h = FsHarness::new().await;
        testsuite::clock_and_writes(&h.store, &MtimeClock::new(h.dir.path())).await;
    }

    fn entries(dir: &Path) -> usize {
        fs::read_dir(dir).map_or(0, |d| d.count())
    }

    /// A cold write (direct I/O for the aligned part, the page cache for a short tail)
    /// stores exactly the bytes sent, whatever their length and however the reader splits
    /// them, and a wrong digest still leaves nothing behind.
    #[tokio::test]
    async fn cold_writes_store_every_byte_and_verify() {
        let h = FsHarness::new().await;
        let s = &h.store;
        for (n, len) in [0, 1, 4095, 4096, 70_000, (1 << 20) + 3 * 4096 + 17, 3 << 20]
            .into_iter()
            .enumerate()
        {
            let data = testsuite::pattern(n as u8, len);
            let d = Digest::of(Algorithm::Sha256, &data);
            // Odd-sized reads, so buffers fill from several of them.
            let reader = tokio::io::BufReader::with_capacity(5000, &data[..]);
            let w = s
                .put_cold(&d, &mut { reader }, None)
                .await
                .expect("put_cold");
            assert_eq!((w.size, w.existed), (len as u64, false));
            assert_eq!(
                fs::read(s.blob_path(&d)).expect("blob"),
                data,
                "{len} bytes"
            );
            let wrong = Digest::of(Algorithm::Sha256, b"x");
            assert!(s.put_cold(&wrong, &mut &data[..], None).await.is_err());
            assert_eq!(entries(&h.dir.path().join(layout::TMP)), 0);
        }
    }

    /// The filesystem's own half of "nothing visible": no temp file or session directory
    /// is left behind by a failed or finished write, and a finished session was renamed
    /// into place (same inode), not copied.
    #[tokio::test]
    async fn leaves_no_temp_files_and_renames_sessions() {
        let h = FsHarness::new().await;
        let s = &h.store;
        let data = testsuite::pattern(1, 100_000);
        let d = Digest::of(Algorithm::Sha256, &data);
        let wrong = Digest::of(Algorithm::Sha256, b"x");
        assert!(s.put(&wrong, &mut &data[..], None).await.is_err());
        assert_eq!(entries(&h.dir.path().join(layout::TMP)), 0);
        let id = UploadId::new();
        s.begin(&id, Algorithm::Sha256, Bytes::from_static(b"{}"))
            .await
            .expect("begin");
        s.append(&id, 0, None, &mut &data[..])
            .await
            .expect("append");
        use std::os::unix::fs::MetadataExt;
        let dir = layout::upload_dir(h.dir.path(), &id);
        let ino = fs::metadata(uploads::data_path(&dir)).expect("data").ino();
        s.finish(&id, &d).await.expect("finish");
        assert_eq!(fs::metadata(s.blob_path(&d)).expect("blob").ino(), ino);
        assert!(!dir.exists());
        assert_eq!(entries(&h.dir.path().join(layout::UPLOADS)), 0);
        assert_eq!(entries(&h.dir.path().join(layout::TMP)), 0);
    }
}
