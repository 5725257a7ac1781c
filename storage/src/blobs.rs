//! The content-addressed blob store: streaming, verified, atomic writes and reads by digest.
//! It knows nothing of repositories; which repository may see a blob is metadata.

use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};

use tokio::io::{AsyncRead, AsyncReadExt};

use crate::{Algorithm, Digest, Hasher, StoreError};

/// Body bytes move in buffers of this size: large enough that a write costs one syscall
/// per MiB, small enough that two in flight per transfer keep memory flat.
const BUF: usize = 1 << 20;

/// The first buffer of a transfer. Most bodies (manifests, configs, small layers) fit in
/// it, and they should not pay for zeroing a whole `BUF` each. Each buffer a body fills
/// makes the next one four times larger, up to `BUF`, so a middling body holds about what
/// it needs and a large one reaches full-size buffers after two.
const FIRST_BUF: usize = 64 << 10;

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
        let path = dir.join(crate::random::id());
        let file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)?;
        Ok((TempFile { path, armed: true }, file))
    }

    /// [`TempFile::create`] opened for direct I/O (`O_DIRECT`) where the filesystem allows
    /// it; the flag says whether it did (tmpfs and some FUSE filesystems refuse it).
    fn create_direct(dir: &Path) -> io::Result<(TempFile, File, bool)> {
        use std::os::unix::fs::OpenOptionsExt;
        let path = dir.join(crate::random::id());
        let direct = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .custom_flags(rustix::fs::OFlags::DIRECT.bits() as i32)
            .open(&path);
        match direct {
            Ok(file) => Ok((TempFile { path, armed: true }, file, true)),
            Err(e) if e.raw_os_error() == Some(rustix::io::Errno::INVAL.raw_os_error()) => {
                let (t, f) = TempFile::create(dir)?;
                Ok((t, f, false))
            }
            Err(e) => Err(e),
        }
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

/// Where received bytes go: a file written at explicit offsets (the upload's current length),
/// through the page cache, or for a cold blob with direct I/O.
///
/// Direct I/O was tried for pushes: it halves the CPU of a push on this kind of machine, but
/// leaves the blob uncached, and the first pull then pays the disk read and the page-cache
/// fill it avoided, so a push and a pull together cost more. Buffered writes keep the pull
/// warm. An import's blobs are not read right away, so they are written cold (`O_DIRECT`):
/// no copy into the page cache, no first touch of fresh page-cache memory, no writeback.
pub(crate) struct Sink {
    file: File,
    pos: u64,
    /// The file is open with `O_DIRECT`: aligned writes go straight to the disk.
    direct: bool,
}

/// What direct I/O needs aligned to: buffer addresses, file offsets and lengths (a multiple
/// of every logical block size in use).
const DIRECT_ALIGN: usize = 4096;

impl Sink {
    pub(crate) fn new(file: File, pos: u64) -> Sink {
        Sink {
            file,
            pos,
            direct: false,
        }
    }

    fn write(&mut self, mut data: &[u8]) -> io::Result<()> {
        use std::os::unix::fs::FileExt;
        if self.direct {
            let whole = data.len() - data.len() % DIRECT_ALIGN;
            let aligned = (data.as_ptr() as usize).is_multiple_of(DIRECT_ALIGN)
                && self.pos.is_multiple_of(DIRECT_ALIGN as u64);
            if aligned && whole > 0 {
                match self.file.write_all_at(&data[..whole], self.pos) {
                    Ok(()) => {
                        self.pos += whole as u64;
                        data = &data[whole..];
                    }
                    // The filesystem opened it but takes no direct writes: buffered it is.
                    Err(e) if e.raw_os_error() == Some(rustix::io::Errno::INVAL.raw_os_error()) => {
                    }
                    Err(e) => return Err(e),
                }
            }
            if !data.is_empty() {
                // A tail shorter than a block (the body's last bytes), or anything unaligned:
                // through the page cache from here on, which `sync_data` flushes like the rest.
                let flags = rustix::fs::fcntl_getfl(&self.file)?;
                rustix::fs::fcntl_setfl(&self.file, flags - rustix::fs::OFlags::DIRECT)?;
                self.direct = false;
            }
        }
        self.file.write_all_at(data, self.pos)?;
        self.pos += data.len() as u64;
        Ok(())
    }

    pub(crate) fn into_file(self) -> File {
        self.file
    }
}

/// One transfer buffer, starting at a [`DIRECT_ALIGN`] boundary so that a direct write can
/// take it as it is (found inside a larger allocation: no unsafe aligned allocation).
struct Buf {
    mem: Vec<u8>,
    start: usize,
    len: usize,
}

impl Buf {
    fn new(len: usize) -> Buf {
        let mem = vec![0u8; len + DIRECT_ALIGN];
        // At most DIRECT_ALIGN - 1; if the platform cannot say, unaligned (then the direct
        // sink writes it buffered).
        let start = mem.as_ptr().align_offset(DIRECT_ALIGN).min(DIRECT_ALIGN);
        Buf { mem, start, len }
    }

    fn len(&self) -> usize {
        self.len
    }

    fn bytes(&self) -> &[u8] {
        &self.mem[self.start..self.start + self.len]
    }

    fn bytes_mut(&mut self) -> &mut [u8] {
        &mut self.mem[self.start..self.start + self.len]
    }
}

/// Copy `reader` into `sink`, hashing as it goes. Reading the next buffer, hashing this one
/// and writing it run at the same time (hash and write on two blocking threads), so the
/// slowest of the three sets the pace. Returns the sink, the hasher and the bytes copied.
/// Errors reading `reader` are the sender's fault and come back as `UploadInvalid`.
pub(crate) async fn copy_hashing<R: AsyncRead + Unpin>(
    mut reader: R,
    sink: Sink,
    hasher: Option<Hasher>,
    limit: Option<u64>,
) -> Result<(Sink, Option<Hasher>, u64), StoreError> {
    use std::sync::Arc;
    type Hashing = tokio::task::JoinHandle<Option<Hasher>>;
    type Writing = tokio::task::JoinHandle<io::Result<Sink>>;
    let mut sink = Some(sink);
    let mut hasher_slot = Some(hasher);
    let mut pending: Option<(Hashing, Writing, Arc<Buf>)> = None;
    let mut size = FIRST_BUF;
    let mut spare = Some(Buf::new(size));
    let mut total: u64 = 0;
    // Wait for the in-flight hash and write; give back the buffer they shared.
    async fn settle(
        p: (Hashing, Writing, Arc<Buf>),
    ) -> Result<(Option<Hasher>, Sink, Option<Buf>), StoreError> {
        let (h, w, buf) = p;
        let hasher = h.await.map_err(io::Error::other)?;
        let sink = w.await.map_err(io::Error::other)??;
        Ok((hasher, sink, Arc::try_unwrap(buf).ok()))
    }
    loop {
        let mut buf = spare
            .take()
            .filter(|b| b.len() >= size)
            .unwrap_or_else(|| Buf::new(size));
        let mut filled = 0;
        let mut eof = false;
        let mut failure = None;
        while filled < buf.len() {
            match reader.read(&mut buf.bytes_mut()[filled..]).await {
                Ok(0) => {
                    eof = true;
                    break;
                }
                Ok(n) => filled += n,
                Err(e) => {
                    failure = Some(StoreError::UploadInvalid(format!("reading the body: {e}")));
                    break;
                }
            }
        }
        total += filled as u64;
        if filled == buf.len() {
            size = (size * 4).min(BUF);
        }
        if failure.is_none() {
            if let Some(limit) = limit.filter(|l| total > *l) {
                failure = Some(StoreError::TooLarge(format!("body exceeds {limit} bytes")));
            }
        }
        if let Some(p) = pending.take() {
            let (h, s, old) = settle(p).await?;
            hasher_slot = Some(h);
            sink = Some(s);
            spare = old;
        }
        // Reported only once nothing is in flight, so the caller may truncate or delete.
        if let Some(e) = failure {
            return Err(e);
        }
        let (Some(mut s), Some(mut h)) = (sink.take(), hasher_slot.take()) else {
            return Err(StoreError::Io(io::Error::other("writer state lost")));
        };
        if filled > 0 {
            let shared = Arc::new(buf);
            let for_hash = Arc::clone(&shared);
            let for_write = Arc::clone(&shared);
            let hashing = tokio::task::spawn_blocking(move || {
                if let Some(h) = h.as_mut() {
                    h.update(&for_hash.bytes()[..filled]);
                }
                h
            });
            let writing = tokio::task::spawn_blocking(move || {
                s.write(&for_write.bytes()[..filled])?;
                Ok(s)
            });
            pending = Some((hashing, writing, shared));
        } else {
            sink = Some(s);
            hasher_slot = Some(h);
        }
        if eof {
            if let Some(p) = pending.take() {
                let (h, s, _) = settle(p).await?;
                hasher_slot = Some(h);
                sink = Some(s);
            }
            let (Some(s), Some(h)) = (sink.take(), hasher_slot.take()) else {
                return Err(StoreError::Io(io::Error::other("writer state lost")));
            };
            return Ok((s, h, total));
        }
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
        // Allocated here, on a runtime thread, not on the blocking thread that fills it:
        // glibc keeps freed memory in the arena of the thread that allocated it, and the
        // blocking pool has many threads, each of which would keep a few MiB.
        let mut buf = bytes::BytesMut::zeroed(n);
        tokio::task::spawn_blocking(move || {
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

/// Make `dir`'s entries durable: a rename or create in it survives a power loss only after
/// this (POSIX says so; ext4 and xfs mostly do it anyway, but not every filesystem does).
pub(crate) fn fsync_dir(dir: &Path) -> io::Result<()> {
    if skip_dir_fsync() {
        return Ok(());
    }
    File::open(dir)?.sync_all()
}

/// Test-only knob: `AIRDOCK_TEST_SKIP_DIR_FSYNC=1` makes [`fsync_dir`] a no-op, so the
/// power-loss test (`tests/it/powerloss.rs`) can show that it catches a store that leaves
/// directory entries volatile. Never set it anywhere else: acknowledged writes are then
/// lost by a power cut. The store logs a warning at open when it is set.
pub(crate) fn skip_dir_fsync() -> bool {
    static SKIP: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *SKIP.get_or_init(|| std::env::var_os("AIRDOCK_TEST_SKIP_DIR_FSYNC").is_some_and(|v| v == "1"))
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
    let parent = dst
        .parent()
        .ok_or_else(|| io::Error::other("blob path has no parent"))?;
    if dst.exists() {
        touch(dst)?;
        // The writer that renamed it in may not have fsynced the directory yet (or was an
        // earlier run that crashed in between): the caller acknowledges this blob, so its
        // entry must be durable first.
        fsync_dir(parent)?;
        fs::remove_file(src)?;
        return Ok(true);
    }
    if !parent.exists() {
        // `layout::prepare` makes every fan-out directory at start; only a tree changed by
        // hand since lacks one.
        crate::layout::create_dirs_durable(parent)?;
    }
    fs::rename(src, dst)?;
    fsync_dir(parent)?;
    // The source keeps its mtime through the rename; for a chunked upload that is the last
    // PATCH, possibly long ago. The grace window must start now, when the blob appears.
    touch(dst)?;
    Ok(false)
}

/// Stream `reader` into a new file under `tmp/`, hashing it with `alg` as it is written
/// (`cold`: with direct I/O where the filesystem allows it, see [`Sink`]).
/// The file is removed when the returned guard drops, unless [`commit_temp`] persisted it.
pub(crate) async fn write_temp<R: AsyncRead + Unpin>(
    root: &Path,
    alg: Algorithm,
    reader: R,
    limit: Option<u64>,
    cold: bool,
) -> Result<(TempFile, File, Digest, u64), StoreError> {
    let tmp_dir = root.join(crate::layout::TMP);
    let (guard, file, direct) = if cold {
        TempFile::create_direct(&tmp_dir)?
    } else {
        let (guard, file) = TempFile::create(&tmp_dir)?;
        (guard, file, false)
    };
    let sink = Sink {
        file,
        pos: 0,
        direct,
    };
    let (sink, hasher, size) = copy_hashing(reader, sink, Some(alg.hasher()), limit).await?;
    let digest = match hasher {
        Some(h) => h.finish(),
        None => return Err(StoreError::Io(io::Error::other("hasher lost"))),
    };
    Ok((guard, sink.into_file(), digest, size))
}

/// Make a temp file of [`write_temp`] the blob at `dst`: fsync it, rename it into place,
/// fsync the directory (see [`persist`]). Returns whether the blob was already there.
pub(crate) async fn commit_temp(guard: TempFile, file: File, dst: PathBuf) -> io::Result<bool> {
    let src = guard.path().to_owned();
    let existed = tokio::task::spawn_blocking(move || -> io::Result<bool> {
        file.sync_data()?;
        drop(file);
        persist(&src, &dst)
    })
    .await
    .map_err(io::Error::other)??;
    guard.disarm();
    Ok(existed)
}
