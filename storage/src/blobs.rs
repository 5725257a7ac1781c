//! The content-addressed blob store: streaming, verified, atomic writes and reads by digest.
//! It knows nothing of repositories; which repository may see a blob is metadata.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use tokio::io::{AsyncRead, AsyncReadExt};

use crate::pins::{Pin, Pins};
use crate::{Algorithm, Digest, Hasher, StoreError};

/// Body bytes move in buffers of this size: large enough that a write costs one syscall
/// per MiB, small enough that two in flight per transfer keep memory flat.
const BUF: usize = 1 << 20;

/// The result of storing a blob.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ingested {
    pub digest: Digest,
    pub size: u64,
    /// The blob was already present; the new bytes were verified and discarded.
    pub existed: bool,
}

/// A file under `tmp/` that is removed when dropped unless it was persisted, so no error
/// path can leave a half-written file behind under a name anyone reads.
pub(crate) struct TempFile {
    path: PathBuf,
    armed: bool,
}

impl TempFile {
    pub(crate) fn create(dir: &Path) -> io::Result<(TempFile, File)> {
        let path = dir.join(uuid::Uuid::new_v4().simple().to_string());
        let file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)?;
        Ok((TempFile { path, armed: true }, file))
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    pub(crate) fn disarm(mut self) {
        self.armed = false;
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if self.armed {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// Copy `reader` to the end of `file`, hashing as it goes, with the hash and write of one
/// buffer overlapping the read of the next. Returns the file, the hasher and the bytes copied.
/// Errors reading `reader` are the sender's fault and come back as `UploadInvalid`.
pub(crate) async fn copy_hashing<R: AsyncRead + Unpin>(
    mut reader: R,
    file: File,
    hasher: Option<Hasher>,
    limit: Option<u64>,
) -> Result<(File, Option<Hasher>, u64), StoreError> {
    type Step = io::Result<(File, Option<Hasher>, Vec<u8>)>;
    let mut state = Some((file, hasher));
    let mut pending: Option<tokio::task::JoinHandle<Step>> = None;
    let mut spare = vec![0u8; BUF];
    let mut total: u64 = 0;
    loop {
        let mut buf = std::mem::take(&mut spare);
        if buf.len() < BUF {
            buf.resize(BUF, 0);
        }
        let mut filled = 0;
        let mut eof = false;
        while filled < BUF {
            match reader.read(&mut buf[filled..]).await {
                Ok(0) => {
                    eof = true;
                    break;
                }
                Ok(n) => filled += n,
                Err(e) => {
                    // Let the in-flight write finish before reporting, so the caller can
                    // safely truncate or delete the file.
                    if let Some(h) = pending.take() {
                        let _ = h.await;
                    }
                    return Err(StoreError::UploadInvalid(format!("reading the body: {e}")));
                }
            }
        }
        total += filled as u64;
        if let Some(limit) = limit {
            if total > limit {
                if let Some(h) = pending.take() {
                    let _ = h.await;
                }
                return Err(StoreError::TooLarge(format!("body exceeds {limit} bytes")));
            }
        }
        if let Some(h) = pending.take() {
            let (f, hs, old) = join(h).await?;
            state = Some((f, hs));
            spare = old;
        }
        let Some((mut f, mut hs)) = state.take() else {
            return Err(StoreError::Io(io::Error::other("writer state lost")));
        };
        if filled > 0 {
            pending = Some(tokio::task::spawn_blocking(move || {
                if let Some(h) = hs.as_mut() {
                    h.update(&buf[..filled]);
                }
                f.write_all(&buf[..filled])?;
                Ok((f, hs, buf))
            }));
        } else {
            state = Some((f, hs));
        }
        if eof {
            if let Some(h) = pending.take() {
                let (f, hs, _) = join(h).await?;
                state = Some((f, hs));
            }
            let Some((f, hs)) = state.take() else {
                return Err(StoreError::Io(io::Error::other("writer state lost")));
            };
            return Ok((f, hs, total));
        }
    }
}

async fn join<T>(h: tokio::task::JoinHandle<io::Result<T>>) -> Result<T, StoreError> {
    match h.await {
        Ok(r) => Ok(r?),
        Err(e) => Err(StoreError::Io(io::Error::other(e))),
    }
}

/// Read size when streaming a blob out: one `pread` per MiB, one chunk read ahead.
const READ_CHUNK: usize = 1 << 20;

/// Stream `len` bytes of `file` from `start` as `Bytes` chunks. Each chunk is read with one
/// `pread` on a blocking thread straight into the buffer that is handed on, and the next
/// read starts as soon as a chunk is handed on, so disk and socket overlap.
pub fn read_range(
    file: File,
    start: u64,
    len: u64,
) -> impl futures_util::Stream<Item = io::Result<bytes::Bytes>> + Send + 'static {
    use std::os::unix::fs::FileExt;
    use std::sync::Arc;
    type Pending = tokio::task::JoinHandle<io::Result<bytes::Bytes>>;
    let file = Arc::new(file);
    let spawn = move |file: Arc<File>, pos: u64, n: usize| -> Pending {
        tokio::task::spawn_blocking(move || {
            let mut buf = bytes::BytesMut::zeroed(n);
            let mut filled = 0;
            while filled < n {
                let got = file.read_at(&mut buf[filled..], pos + filled as u64)?;
                if got == 0 {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "blob shorter than its size",
                    ));
                }
                filled += got;
            }
            Ok(buf.freeze())
        })
    };
    let end = start + len;
    let first = (len > 0).then(|| {
        spawn(
            Arc::clone(&file),
            start,
            len.min(READ_CHUNK as u64) as usize,
        )
    });
    let state = (file, first, start + len.min(READ_CHUNK as u64));
    futures_util::stream::unfold(state, move |(file, pending, next)| async move {
        let pending = pending?;
        let chunk = match pending.await {
            Ok(r) => r,
            Err(e) => Err(io::Error::other(e)),
        };
        let ahead = (chunk.is_ok() && next < end).then(|| {
            let n = (end - next).min(READ_CHUNK as u64) as usize;
            spawn(Arc::clone(&file), next, n)
        });
        let advanced = next
            + ahead
                .as_ref()
                .map_or(0, |_| (end - next).min(READ_CHUNK as u64));
        Some((chunk, (file, ahead, advanced)))
    })
}

/// Hash a whole file from disk (used when an upload's running hash was lost to a restart).
pub(crate) fn hash_file(path: &Path, alg: Algorithm) -> io::Result<(Digest, u64)> {
    use std::io::Read;
    let mut f = File::open(path)?;
    let mut h = alg.hasher();
    let mut buf = vec![0u8; BUF];
    let mut total = 0u64;
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            return Ok((h.finish(), total));
        }
        h.update(&buf[..n]);
        total += n as u64;
    }
}

pub(crate) fn fsync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Set a blob's mtime to now. GC reads the mtime as "last written or linked": a blob
/// touched within the grace window is never swept, which protects a write that found the
/// blob already stored until the writer links it (an import may link much later).
pub(crate) fn touch(path: &Path) -> io::Result<()> {
    File::open(path)?.set_modified(std::time::SystemTime::now())
}

/// Make a fully written, fsynced file the blob `digest`: rename into place and fsync the
/// directory. An existing blob wins (same digest, same bytes): it is touched and the source
/// is removed. The caller holds a [`crate::pins::Pin`] on the digest, so GC cannot delete
/// the existing file between this check and the caller's link.
pub(crate) fn persist(src: &Path, dst: &Path) -> io::Result<bool> {
    if dst.exists() {
        touch(dst)?;
        fs::remove_file(src)?;
        return Ok(true);
    }
    let parent = dst
        .parent()
        .ok_or_else(|| io::Error::other("blob path has no parent"))?;
    if !parent.exists() {
        fs::create_dir_all(parent)?;
        if let Some(grand) = parent.parent() {
            fsync_dir(grand)?;
        }
    }
    fs::rename(src, dst)?;
    fsync_dir(parent)?;
    // The source keeps its mtime through the rename; for a chunked upload that is the last
    // PATCH, possibly long ago. The grace window must start now, when the blob appears.
    touch(dst)?;
    Ok(false)
}

/// Write `reader` into the store under its digest (verified against `expected` if given).
/// The digest is pinned before the file is made visible; the pin is returned so the caller
/// can keep the blob safe from GC until it has linked it.
pub(crate) async fn ingest<R: AsyncRead + Unpin>(
    root: &Path,
    pins: &Pins,
    expected: Option<&Digest>,
    alg: Algorithm,
    reader: R,
    limit: Option<u64>,
) -> Result<(Ingested, Pin), StoreError> {
    let alg = expected.map(Digest::algorithm).unwrap_or(alg);
    let tmp_dir = root.join(crate::layout::TMP);
    let (guard, file) = TempFile::create(&tmp_dir)?;
    let (file, hasher, size) = copy_hashing(reader, file, Some(alg.hasher()), limit).await?;
    let digest = match hasher {
        Some(h) => h.finish(),
        None => return Err(StoreError::Io(io::Error::other("hasher lost"))),
    };
    if let Some(expected) = expected {
        if *expected != digest {
            return Err(StoreError::DigestMismatch {
                expected: expected.clone(),
                actual: digest,
            });
        }
    }
    let pin = pins.pin(&digest);
    let dst = crate::layout::blob_path(root, &digest);
    let src = guard.path().to_owned();
    let existed = tokio::task::spawn_blocking(move || -> io::Result<bool> {
        file.sync_data()?;
        drop(file);
        persist(&src, &dst)
    })
    .await
    .map_err(io::Error::other)??;
    guard.disarm();
    Ok((
        Ingested {
            digest,
            size,
            existed,
        },
        pin,
    ))
}
