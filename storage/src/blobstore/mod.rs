//! The blob-storage contract: what the store needs from wherever blob bytes live (a local
//! filesystem, an S3 bucket, memory), and nothing more.
//!
//! Two traits, both content-addressed (a blob is named by its [`Digest`], never by a path):
//!
//! - [`BlobStore`]: verified puts, stat, ranged reads as a byte stream, delete, a listing for
//!   GC and fsck, upload sessions, and an optional presigned-redirect hook.
//! - [`BlobClock`]: when each blob was last written or claimed, the clock GC's grace window
//!   runs on. It is a metadata fact kept by the store, not a property of the bytes (file
//!   mtimes or S3 `LastModified` cannot be refreshed without rewriting, and differ per backend).
//!
//! Content addressing is what lets a backend complete a blob where it was written (an S3
//! multipart upload finished under its final key) instead of Distribution's path-addressed
//! `Move`, which S3 can only emulate by copying every byte again.
//!
//! Every implementation passes the one contract suite, [`testsuite`], and errors are the
//! storage layer's one type, [`StoreError`]: `BlobUnknown`, `UploadUnknown`,
//! `UploadOutOfOrder`, `ChunkLength`, `DigestMismatch`, `RangeInvalid`, `TooLarge` and
//! `UploadInvalid` for what the caller did; `Io` and `Unavailable` for what the backend did.
//!
//! What is *not* in the contract, on purpose: repositories, links, tags, manifests and who may
//! read what (all metadata, see `meta.rs`); pins against GC (the store's, above any backend);
//! session caps and owners (the store keeps them, and stores its own session record as the
//! opaque `info` bytes of [`BlobStore::begin`]).

use std::io;
use std::pin::Pin;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use futures_util::Stream;
use tokio::io::AsyncRead;

use crate::{Algorithm, Digest, StoreError, UploadId};

pub mod fileclock;
pub mod fs;
pub mod memory;
#[cfg(any(test, feature = "testsuite"))]
pub mod testsuite;

/// A request or file body being streamed into a backend. A `&mut dyn` rather than a generic
/// so that [`BlobStore`] can be a trait object: the store picks its backend at run time (by
/// configuration) and the dynamic call costs one indirection per read of up to a MiB.
pub type Body<'a> = &'a mut (dyn AsyncRead + Unpin + Send);

/// A blob's bytes streaming out: chunks in order, an `Err` ends the stream. Boxed once per
/// read, never per chunk.
pub type ByteStream = Pin<Box<dyn Stream<Item = io::Result<Bytes>> + Send + 'static>>;

/// A blob (or a session's bytes) as an [`AsyncRead`], for readers that parse what they read
/// (an import reading a bundle layer back, an export's tar stream): the backend's
/// [`ByteStream`] behind a reader, so no caller depends on where the bytes live.
pub type BlobReader = tokio_util::io::StreamReader<ByteStream, Bytes>;

/// Digests streaming out of [`BlobStore::list`].
pub type DigestStream<'a> = Pin<Box<dyn Stream<Item = Result<Digest, StoreError>> + Send + 'a>>;

/// A blob stored by [`BlobStore::put`] or [`BlobStore::finish`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Written {
    /// Bytes in the blob.
    pub size: u64,
    /// The blob was already stored (by an earlier or a concurrent write). The new bytes were
    /// verified all the same and then dropped.
    pub existed: bool,
}

/// A part of a blob to read: `len` bytes from `start`, or everything from `start` on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ByteRange {
    pub start: u64,
    pub len: Option<u64>,
}

impl ByteRange {
    /// The whole blob.
    pub const ALL: ByteRange = ByteRange {
        start: 0,
        len: None,
    };

    /// The `(start, len)` this range is in a blob of `size` bytes, or `RangeInvalid`. A range
    /// may start at `size` (an empty read at the end) but not past it, and may not end past
    /// `size`: a backend never pads or shortens a read. The HTTP layer has already turned
    /// the client's `Range` header (suffix ranges, open ends) into an exact one.
    pub fn resolve(self, size: u64) -> Result<(u64, u64), StoreError> {
        let invalid = || StoreError::RangeInvalid {
            start: self.start,
            len: self.len,
            size,
        };
        if self.start > size {
            return Err(invalid());
        }
        let len = match self.len {
            None => size - self.start,
            Some(len) => {
                let end = self.start.checked_add(len).ok_or_else(invalid)?;
                if end > size {
                    return Err(invalid());
                }
                len
            }
        };
        Ok((self.start, len))
    }
}

/// A blob opened for reading by [`BlobStore::read`].
pub struct BlobRead {
    /// The whole blob's size (not the range's): what a `Content-Range` header needs, without
    /// a second round trip for a stat.
    pub size: u64,
    /// The requested range's bytes, exactly `len` of them (or an error item).
    pub stream: ByteStream,
}

/// An upload session as [`BlobStore::sessions`] lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionRecord {
    pub id: UploadId,
    /// Bytes appended so far (and durable, see [`BlobStore::append`]).
    pub size: u64,
    /// The `info` given to [`BlobStore::begin`], unchanged.
    pub info: Bytes,
    /// When [`BlobStore::begin`] ran, and when the session was last appended to (or began).
    /// Clock of the backend's host, to the second at least; used to expire idle sessions.
    pub started: SystemTime,
    pub last_write: SystemTime,
}

/// Where blob bytes live. Content-addressed: every blob is stored under the digest of its
/// bytes, which the backend verifies itself while writing; nothing a client sends becomes a
/// path or a key except through a [`Digest`] or an [`UploadId`].
///
/// Guarantees every implementation makes (and [`testsuite`] checks):
///
/// - **Verified.** A blob is visible under digest `d` only if its bytes hash to `d`. The hash
///   is computed while the bytes are written (no second read on the hot path), except where
///   a session's running hash was lost to a restart and must be recomputed.
/// - **Atomic visibility.** A blob is either absent or complete: no reader, `stat` or `list`
///   ever sees a partial blob under its digest, whatever fails or crashes when. A failed
///   write (body error, digest mismatch, size limit, backend error) leaves nothing visible.
/// - **Durable on success.** When `put` or `finish` returns `Ok`, the blob survives a crash
///   or power loss of this host (file and directory entry fsynced; an S3 PUT acknowledged).
///   A session's state after `begin` and `append` survives a restart of the process; after
///   a power loss it may be shorter or gone (the client asks for the upload's status and
///   resumes from there, or starts over), never longer or different.
/// - **Idempotent.** Putting a blob that exists succeeds with `existed: true` after verifying
///   the new bytes, and leaves the stored blob untouched. Concurrent puts of the same digest
///   all succeed and store it once. `delete` of an absent blob and `abort` of an unknown
///   session succeed.
/// - **Immutable.** A stored blob's bytes never change; only `delete` removes them.
/// - **No listing on request paths.** `list` is for GC and fsck only; the store answers
///   "which blobs exist" for requests from its metadata and `stat`.
///
/// What no implementation promises: ordering between different blobs, or that a blob a
/// concurrent `delete` is removing stays readable (the store's pins keep GC away from blobs
/// being used).
#[async_trait::async_trait]
pub trait BlobStore: Send + Sync + 'static {
    /// A short name for logs and `/metrics` labels: `"filesystem"`, `"s3"`, `"memory"`.
    fn kind(&self) -> &'static str;

    /// Stream `body` into the blob `expected`, hashing while writing with `expected`'s
    /// algorithm. On a mismatch the result is `DigestMismatch` and nothing is visible; past
    /// `limit` bytes, `TooLarge`; a body that fails to read, `UploadInvalid`.
    async fn put(
        &self,
        expected: &Digest,
        body: Body<'_>,
        limit: Option<u64>,
    ) -> Result<Written, StoreError>;

    /// [`BlobStore::put`] of a blob nobody is expected to read soon (an import's): the same
    /// guarantees, but an implementation may bypass its caches to write it cheaper (the
    /// filesystem store writes it with direct I/O). By default, `put`.
    async fn put_cold(
        &self,
        expected: &Digest,
        body: Body<'_>,
        limit: Option<u64>,
    ) -> Result<Written, StoreError> {
        self.put(expected, body, limit).await
    }

    /// The size of blob `d`, or `None` if it is not stored. Cheap (one `stat` or `HEAD`).
    async fn stat(&self, d: &Digest) -> Result<Option<u64>, StoreError>;

    /// [`BlobStore::stat`] for a caller about to acknowledge something that depends on `d`
    /// being stored (a push that found it present, an import claiming it): when `Some`, the
    /// blob is durable, even if what made it visible was a concurrent writer whose own
    /// durability step has not finished (a file renamed in, its directory not yet fsynced).
    /// The default is `stat`, right for backends that show an object only once it is durable
    /// (an S3 PUT is acknowledged before anyone can `HEAD` the object).
    async fn stat_durable(&self, d: &Digest) -> Result<Option<u64>, StoreError> {
        self.stat(d).await
    }

    /// Stream `range` of blob `d`. `BlobUnknown` if it is not stored; `RangeInvalid` if the
    /// range is not inside it (see [`ByteRange::resolve`]). The stream reads ahead at most a
    /// bounded amount (a chunk or two), so a slow client holds little memory.
    async fn read(&self, d: &Digest, range: ByteRange) -> Result<BlobRead, StoreError>;

    /// Remove blob `d`. `Ok(true)` if it was there, `Ok(false)` if it was not: never an error
    /// for an absent blob. Need not be durable (a blob deleted just before a power loss may
    /// come back, which is harmless: GC finds it again).
    async fn delete(&self, d: &Digest) -> Result<bool, StoreError>;

    /// Every stored blob, in no particular order, streamed (a store may hold millions). For
    /// GC and fsck only: may be slow (an S3 listing is paginated), never on a request path.
    /// A blob put or deleted during the listing may or may not appear.
    fn list(&self) -> DigestStream<'_>;

    /// Names in the backend's blob namespace that are not blobs (a stray file under
    /// `blobs/`): fsck reports them, nothing removes them. For fsck only (it may list). By
    /// default none.
    async fn strays(&self) -> Result<Vec<String>, StoreError> {
        Ok(Vec::new())
    }

    /// Move blob `d` aside, out of the blob namespace, because its bytes do not hash to `d`
    /// (fsck's repair): afterwards `d` is absent, and its bytes are kept where an operator
    /// can look at them (named by `unix_time`), never deleted. Returns where they went, or
    /// `None` if `d` was not stored.
    async fn quarantine(&self, d: &Digest, unix_time: u64) -> Result<Option<String>, StoreError>;

    /// A URL a client may `GET` blob `d` from directly for `ttl`, if this backend can sign
    /// one (S3 presigning) and is configured to. `Ok(None)`: serve the bytes through airdock
    /// (the default for every backend; a lab's kubelets often reach only the registry).
    async fn redirect_url(&self, d: &Digest, ttl: Duration) -> Result<Option<String>, StoreError> {
        let _ = (d, ttl);
        Ok(None)
    }

    // ---- upload sessions ---------------------------------------------------------------
    //
    // A session collects a blob whose digest is known only at the end (chunked pushes). Its
    // state (bytes so far, and whatever the backend needs to continue: an S3 upload id and
    // part list) survives a restart of the process, so a client can resume after one; the
    // running hash may be lost with the process and is then recomputed at `finish`. A session
    // is written by one request at a time: a second concurrent `append` or `finish` on it is
    // refused (`UploadInvalid`), never interleaved.

    /// Open session `id` (minted by the store) with `info`, the store's own small record of
    /// it (repository, owner), kept verbatim and returned by `sessions`. `algorithm` is what
    /// the running hash uses: the client's `digest-algorithm`, else the default; a `finish`
    /// with a digest of another algorithm still works, by hashing the bytes again.
    /// `UploadInvalid` if `id` is already open.
    async fn begin(
        &self,
        id: &UploadId,
        algorithm: Algorithm,
        info: Bytes,
    ) -> Result<(), StoreError>;

    /// Append `body` at `offset`, which must be the session's current size
    /// (`UploadOutOfOrder` otherwise, nothing written). With `expect_len`, the body must carry
    /// exactly that many bytes (`ChunkLength` otherwise). A chunk that fails in any way is
    /// rolled back: the session holds what it held before. Returns the new size. Chunks may
    /// be of any size, from one byte to gigabytes, whatever the backend's own part sizes.
    async fn append(
        &self,
        id: &UploadId,
        offset: u64,
        expect_len: Option<u64>,
        body: Body<'_>,
    ) -> Result<u64, StoreError>;

    /// The bytes session `id` holds so far, streamed from the start, for a store that
    /// consumes an upload itself rather than making it a blob (an import upload: the
    /// archive is parsed, its entries become blobs). The session is not changed and stays
    /// open. `UploadUnknown` if it is not open. A backend that cannot read back an
    /// unfinished upload says so with `UploadInvalid` (the default): S3 has no read of the
    /// parts of a multipart upload before it is completed.
    async fn read_session(&self, id: &UploadId) -> Result<BlobRead, StoreError> {
        debug_assert!(
            !self.reads_sessions(),
            "reads_sessions without read_session"
        );
        let _ = id;
        Err(StoreError::UploadInvalid(format!(
            "the {} storage backend cannot read back an unfinished upload",
            self.kind()
        )))
    }

    /// Whether [`BlobStore::read_session`] works here, so that a store can refuse an upload
    /// it would consume itself before any byte is sent rather than after the last. Every
    /// implementation of `read_session` says `true`.
    fn reads_sessions(&self) -> bool {
        false
    }

    /// Bytes session `id` holds, or `UploadUnknown`.
    async fn session_size(&self, id: &UploadId) -> Result<u64, StoreError>;

    /// Whether other processes may write this backend's sessions too (replicas over one S3
    /// bucket). The store then asks the backend, not its own memory, for a session it has
    /// not seen and for a session's size. `false` by default: this process alone writes them.
    fn shared_sessions(&self) -> bool {
        false
    }

    /// Session `id` as [`BlobStore::sessions`] lists it, or `None` if it is not open. By
    /// default a search of that listing; a backend whose sessions other processes open
    /// answers directly, since the store asks on requests for sessions it has not seen.
    async fn session(&self, id: &UploadId) -> Result<Option<SessionRecord>, StoreError> {
        Ok(self.sessions().await?.into_iter().find(|r| &r.id == id))
    }

    /// Close session `id` as blob `expected`: verify the bytes appended against it and make
    /// them that blob, without copying them where the backend can avoid it (a rename, an S3
    /// multipart completion). On `DigestMismatch` the session is removed and nothing is
    /// visible. On success the session is gone and the blob is durable, as for `put`.
    async fn finish(&self, id: &UploadId, expected: &Digest) -> Result<Written, StoreError>;

    /// Remove session `id` and everything it holds. `Ok(false)` if it was not open. A write
    /// in flight on it may still report success, but every later call on the session
    /// answers `UploadUnknown`; a `finish` in flight either completes first or fails.
    async fn abort(&self, id: &UploadId) -> Result<bool, StoreError>;

    /// Remove what interrupted writes left in the backend that no blob and no open session
    /// names (an S3 multipart upload a crash left incomplete, a session's object completed
    /// but never indexed), if it was started or last written at or before `cutoff`; with
    /// `dry_run`, only count. Returns how many. For GC only (it may list). Never removes a
    /// stored blob, an open session's data, or anything a write in flight will complete or
    /// record. By default there is nothing to sweep: the filesystem store empties its
    /// `tmp/` at start, and memory keeps nothing across a crash.
    async fn sweep_leftovers(&self, cutoff: SystemTime, dry_run: bool) -> Result<u64, StoreError> {
        let _ = (cutoff, dry_run);
        Ok(0)
    }

    /// Every open session, for the store's caps at start and expiry (the store aborts
    /// those whose `last_write` is older than its limit; backends expire nothing on their
    /// own). `last_write` must move while a chunk is being written, not only when it ends,
    /// or expiry could abort a session in the middle of a long chunk.
    async fn sessions(&self) -> Result<Vec<SessionRecord>, StoreError>;
}

/// GC's clock: when each blob was last written or claimed by a writer (a put that found it
/// present, a mount, a `HEAD` that lets a client skip an upload). GC leaves a blob alone
/// until its grace window after that time has passed, so a writer that stored or claimed a
/// blob has that long to link it.
///
/// A metadata fact, kept beside the journal, not read from file mtimes or S3 `LastModified`.
///
/// Guarantees:
/// - `last_used(d)` is never *earlier* than the last `touch(d, t)`'s `t` in this process.
/// - Across a restart, a touch may be lost only if the implementation then answers a time no
///   earlier than the store's open for that blob (conservative: GC waits a grace window after
///   a restart before it may sweep a blob whose touches were lost).
/// - `None` means no record: never touched through this clock. A clock answers `Some` for
///   every blob touched since the store opened. What GC does with `None` is the store's
///   rule (the filesystem store falls back to the file's mtime, for blobs written before
///   the clock existed).
///
/// Touches need not be durable one by one (a `HEAD` must not cost a journal fsync); the
/// second rule above is what makes losing them safe.
pub trait BlobClock: Send + Sync + 'static {
    /// Record that `d` was used at `at` (keeping the later of `at` and any earlier record).
    fn touch(&self, d: &Digest, at: SystemTime);

    /// When `d` was last used, as far as this clock knows.
    fn last_used(&self, d: &Digest) -> Option<SystemTime>;

    /// Drop `d`'s record (its blob was deleted).
    fn forget(&self, d: &Digest);

    /// Whether a `put` or `finish` of `d` by the backend this clock goes with sets
    /// `last_used(d)` to the time of the write by itself (the filesystem's mtime clock: the
    /// write is the touch), so the store need not touch after it. By default it does not.
    fn set_by_writes(&self) -> bool {
        false
    }

    /// Make every touch so far durable, for a clean stop: a clock that keeps its records in
    /// a file (`FileClock`) trusts them again at the next open, rather than counting every
    /// blob as used then. Touches after it are kept in memory only. By default nothing to do.
    fn close(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

/// Opens a blob backend. The store calls it once it holds the data dir's lock: a backend
/// may keep state under the data dir (the S3 object index and sessions), which only the
/// lock's holder may read or change.
pub type OpenBlobs = Box<
    dyn FnOnce() -> futures_util::future::BoxFuture<'static, Result<Box<dyn BlobStore>, StoreError>>
        + Send,
>;

/// An [`OpenBlobs`] for a backend already open, with no state under the data dir (memory).
pub fn opened(blobs: Box<dyn BlobStore>) -> OpenBlobs {
    Box::new(move || Box::pin(async move { Ok(blobs) }))
}
