//! Upload sessions as S3 multipart uploads, their state kept in the bucket: any replica over
//! the bucket continues any session, and a restart of any loses nothing.
//!
//! A session lives under `PREFIX/_state/uploads/<upload-id>/`:
//!
//! ```text
//! state.json      times, the store's `info`, the multipart upload id, the ETag of every part
//!                 sent and their total length, the tail's segments, the running hash over
//!                 every byte appended (saved hash state), and a writer's claim
//! seg/<nonce>     one tail segment: bytes received after the last part (fewer than
//!                 PART_SIZE in all: S3 needs 5 MiB per part, clients send chunks of any size)
//! ```
//!
//! `state.json` is the one commit point. It is created with `If-None-Match: *` and only ever
//! replaced with `If-Match` on the ETag its writer read, so two replicas cannot tear it: of
//! two writers that read the same state, one commits and the other is refused. An append
//! writes its bytes as a new segment (a fresh random name, so nothing committed is ever
//! overwritten), then the state naming it; a failed or crashed append leaves the session as
//! it was (its segment is unreferenced and goes with the session; parts it sent are sent
//! again under the same numbers, which S3 replaces, or left out of the completion).
//!
//! Parts are the one thing a writer changes in S3 before it commits, and a part number names
//! one slot of the multipart upload. So before its first part a writer claims the session:
//! its claim (a nonce and a lease end) goes into `state.json` under `If-Match`, together with
//! the multipart upload id the first time (recorded at once, so expiry can always abort it).
//! Another writer's claim refuses a chunk until its lease lapses (its writer died or stalled
//! that long); then it may be taken over, and the old writer fails at its next write of
//! `state.json`. The claim is renewed as parts go out, which also moves `last_write`, so
//! expiry does not take a session in the middle of a long chunk. A chunk that stays inside
//! the tail sends no part and needs no claim: three requests (state GET, segment PUT, state
//! PUT). Within one process a second writer is refused at once, before any request.
//!
//! The running hash uses the algorithm the session began with (the client's
//! `digest-algorithm`, else sha256). A session finished with a digest of another algorithm
//! is completed, read back once to hash, and kept only if it matches.

use std::collections::HashSet;
use std::io;
use std::path::Path as FsPath;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use airdock_storage::blobstore::{BlobStore, Body, SessionRecord, Written};
use airdock_storage::{Algorithm, Digest, StoreError, UploadId};
use bytes::{Bytes, BytesMut};
use futures_util::stream::{StreamExt, TryStreamExt};
use object_store::multipart::{MultipartStore, PartId};
use object_store::path::Path;
use object_store::{
    GetOptions, MultipartId, ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload,
    UpdateVersion,
};
use serde::{Deserialize, Serialize};

use crate::hash::{hex, unhex, StateHasher};
use crate::{add, check, s3_error, S3Blobs, PART_SIZE, READ_SIZE};

/// How long a writer's claim holds off other writers without being renewed. Renewed every
/// [`RENEW`] while bytes arrive and at every part; a body that stalls longer than this
/// has usually been given up by its client (who may retry elsewhere).
const LEASE: u64 = 60;
const RENEW: u64 = 20;

/// What `state.json` holds.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct State {
    /// Unix seconds.
    started: u64,
    last_write: u64,
    /// The store's own record of the session ([`BlobStore::begin`]'s `info`), hex.
    info: String,
    /// The multipart upload, once a writer claimed the session to send a part.
    multipart: Option<String>,
    /// ETags of the parts sent, in order.
    parts: Vec<String>,
    /// Bytes in the parts.
    parts_len: u64,
    /// The bytes after the parts, in order.
    tail: Vec<Segment>,
    /// The running hash's algorithm, and its state over every byte appended.
    algorithm: Algorithm,
    hash: String,
    /// The writer sending parts right now, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    writer: Option<Claim>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct Segment {
    name: String,
    len: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Claim {
    nonce: String,
    /// Unix seconds: after this, another writer may take the session over.
    until: u64,
}

impl State {
    fn tail_len(&self) -> Result<u64, StoreError> {
        self.tail
            .iter()
            .try_fold(0u64, |n, s| n.checked_add(s.len))
            .ok_or_else(|| StoreError::Corrupt("upload session tail length".into()))
    }

    fn size(&self) -> Result<u64, StoreError> {
        self.parts_len
            .checked_add(self.tail_len()?)
            .ok_or_else(|| StoreError::Corrupt("upload session size".into()))
    }

    /// Refuse a writer while another one's claim holds.
    fn check_unclaimed(&self, now: u64) -> Result<(), StoreError> {
        match &self.writer {
            Some(c) if c.until > now => Err(StoreError::UploadInvalid(
                "another request is writing to this upload".into(),
            )),
            _ => Ok(()),
        }
    }
}

/// `state.json` as read, with the ETag a replacement must match.
struct Loaded {
    state: State,
    etag: String,
}

/// One request's work on a session: the state as `state.json` holds it now (with this
/// writer's claim once taken), and what the request added so far.
struct Work {
    stored: Loaded,
    /// This writer's claim nonce, once it claimed the session; when it last renewed it.
    claim: Option<(String, u64)>,
    /// ETags and length of the parts this request sent (not yet committed).
    parts: Vec<String>,
    parts_len: u64,
    /// Bytes not yet sent as a part. Starts empty; the stored tail is read into its front
    /// only when a part is about to fill (`tail_loaded`).
    buf: BytesMut,
    tail_loaded: bool,
}

impl Work {
    /// Stored tail bytes not in `buf`.
    fn unloaded(&self) -> Result<u64, StoreError> {
        if self.tail_loaded {
            Ok(0)
        } else {
            self.stored.state.tail_len()
        }
    }
}

pub(crate) struct Sessions {
    /// Sessions a request of this process is writing: a second writer is refused at once.
    /// std Mutex: set insert/remove only.
    busy: Mutex<HashSet<UploadId>>,
}

/// Marks a session busy until dropped.
struct Busy<'a> {
    sessions: &'a Sessions,
    id: UploadId,
}

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        self.sessions.busy_set().remove(&self.id);
    }
}

impl Sessions {
    pub(crate) fn new() -> Sessions {
        Sessions {
            busy: Mutex::new(HashSet::new()),
        }
    }

    fn busy_set(&self) -> std::sync::MutexGuard<'_, HashSet<UploadId>> {
        self.busy.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn claim(&self, id: &UploadId) -> Result<Busy<'_>, StoreError> {
        if !self.busy_set().insert(id.clone()) {
            return Err(StoreError::UploadInvalid(
                "another request is writing to this upload".into(),
            ));
        }
        Ok(Busy {
            sessions: self,
            id: id.clone(),
        })
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn time(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

fn nonce() -> Result<String, StoreError> {
    Ok(airdock_storage::random::hex(16)?)
}

impl S3Blobs {
    fn session_dir(&self, id: &UploadId) -> String {
        format!("_state/uploads/{id}")
    }

    fn state_key(&self, id: &UploadId) -> Path {
        self.key(&format!("{}/state.json", self.session_dir(id)))
    }

    fn segment_key(&self, id: &UploadId, name: &str) -> Path {
        self.key(&format!("{}/seg/{name}", self.session_dir(id)))
    }

    pub(crate) async fn session_begin(
        &self,
        id: &UploadId,
        algorithm: Algorithm,
        info: Bytes,
    ) -> Result<(), StoreError> {
        let t = now();
        let state = State {
            started: t,
            last_write: t,
            info: hex(&info),
            multipart: None,
            parts: Vec::new(),
            parts_len: 0,
            tail: Vec::new(),
            algorithm,
            hash: StateHasher::new(algorithm).save(),
            writer: None,
        };
        match self.put_state(id, &state, PutMode::Create).await {
            Err(StoreError::UploadInvalid(_)) => Err(StoreError::UploadInvalid(format!(
                "upload {id} is already open"
            ))),
            r => r.map(|_| ()),
        }
    }

    /// Write `state.json` (`mode`: create, or replace the version read). Returns its ETag.
    /// Refused: `UploadUnknown` if the session is gone meanwhile, `UploadInvalid` if another
    /// writer changed it first.
    async fn put_state(
        &self,
        id: &UploadId,
        state: &State,
        mode: PutMode,
    ) -> Result<String, StoreError> {
        let json = serde_json::to_vec(state).map_err(io::Error::other)?;
        let key = self.state_key(id);
        let opts = PutOptions {
            mode,
            ..PutOptions::default()
        };
        match self
            .inner
            .s3
            .put_opts(&key, PutPayload::from(json), opts)
            .await
        {
            Ok(r) => r.e_tag.ok_or_else(|| no_etag(&key)),
            Err(
                object_store::Error::Precondition { .. }
                | object_store::Error::AlreadyExists { .. },
            ) => match self.inner.s3.head(&key).await {
                Err(object_store::Error::NotFound { .. }) => Err(StoreError::UploadUnknown),
                _ => Err(StoreError::UploadInvalid(
                    "another request wrote to this upload first; ask for its status and \
resume from there"
                        .into(),
                )),
            },
            Err(e) => Err(s3_error(e)),
        }
    }

    async fn load(&self, id: &UploadId) -> Result<Loaded, StoreError> {
        let key = self.state_key(id);
        let got = match self.inner.s3.get(&key).await {
            Ok(g) => g,
            Err(object_store::Error::NotFound { .. }) => return Err(StoreError::UploadUnknown),
            Err(e) => return Err(s3_error(e)),
        };
        let etag = got.meta.e_tag.clone().ok_or_else(|| no_etag(&key))?;
        let json = got.bytes().await.map_err(s3_error)?;
        let state = serde_json::from_slice(&json)
            .map_err(|e| StoreError::Corrupt(format!("upload session {id} state: {e}")))?;
        Ok(Loaded { state, etag })
    }

    /// Replace the stored state with `state` (a claim, its renewal or release, a commit).
    async fn replace(&self, id: &UploadId, w: &mut Work, state: State) -> Result<(), StoreError> {
        let mode = PutMode::Update(UpdateVersion {
            e_tag: Some(w.stored.etag.clone()),
            version: None,
        });
        let etag = self.put_state(id, &state, mode).await?;
        w.stored = Loaded { state, etag };
        Ok(())
    }

    /// Take the session for sending parts (creating its multipart upload the first time), or
    /// renew this writer's claim; both move `last_write`.
    async fn claim(&self, id: &UploadId, w: &mut Work) -> Result<(), StoreError> {
        let t = now();
        let mut state = w.stored.state.clone();
        let mut created = None;
        // Held from before the multipart upload is created until the state naming it is
        // written (or the upload aborted), for this process's leftover sweep (`leftovers.rs`).
        let creating = match state.multipart {
            None => Some(self.inner.creating.read().await),
            Some(_) => None,
        };
        if state.multipart.is_none() {
            let u = self
                .inner
                .s3
                .create_multipart(&self.object_key(id))
                .await
                .map_err(s3_error)?;
            state.multipart = Some(u.clone());
            created = Some(u);
        }
        let nonce = match &w.claim {
            Some((n, _)) => n.clone(),
            None => nonce()?,
        };
        state.writer = Some(Claim {
            nonce: nonce.clone(),
            until: t.saturating_add(LEASE),
        });
        state.last_write = t;
        let written = self.replace(id, w, state).await;
        if let (Err(_), Some(u)) = (&written, created) {
            self.abort_multipart(&self.object_key(id), &u).await;
        }
        drop(creating);
        written?;
        w.claim = Some((nonce, t));
        Ok(())
    }

    /// Drop this writer's claim (best effort: a claim left behind lapses by itself).
    async fn release(&self, id: &UploadId, w: &mut Work) {
        if w.claim.take().is_none() {
            return;
        }
        let mut state = w.stored.state.clone();
        state.writer = None;
        if let Err(e) = self.replace(id, w, state).await {
            tracing::debug!(upload = %id, error = %e, "cannot release an upload claim");
        }
    }

    /// The stored tail's bytes, in order (segments fetched a few at a time).
    async fn read_tail(&self, id: &UploadId, tail: &[Segment]) -> Result<BytesMut, StoreError> {
        let fetch = |seg: &Segment| {
            let key = self.segment_key(id, &seg.name);
            let (name, len) = (seg.name.clone(), seg.len);
            async move {
                let bytes = match self.inner.s3.get(&key).await {
                    Ok(g) => g.bytes().await.map_err(s3_error)?,
                    Err(object_store::Error::NotFound { .. }) => {
                        return Err(StoreError::Corrupt(format!(
                            "upload session {id}: tail segment {name} is missing"
                        )))
                    }
                    Err(e) => return Err(s3_error(e)),
                };
                if u64::try_from(bytes.len()).ok() != Some(len) {
                    return Err(StoreError::Corrupt(format!(
                        "upload session {id}: tail segment {name} is {} bytes, not {len}",
                        bytes.len()
                    )));
                }
                Ok(bytes)
            }
        };
        let mut out = BytesMut::new();
        let mut segments = futures_util::stream::iter(tail).map(fetch).buffered(8);
        while let Some(bytes) = segments.try_next().await? {
            out.extend_from_slice(&bytes);
            if out.len() >= PART_SIZE {
                return Err(StoreError::Corrupt(format!("upload session {id} tail")));
            }
        }
        Ok(out)
    }

    /// Best effort: a segment left behind is unreferenced and goes with its session.
    async fn delete_segments(&self, id: &UploadId, segs: &[Segment]) {
        let keys = segs.iter().map(|s| self.segment_key(id, &s.name)).collect();
        if let Err(e) = self.delete_keys(keys).await {
            tracing::debug!(upload = %id, error = %e, "cannot delete upload tail segments");
        }
    }

    /// Delete `keys` in bulk (`DeleteObjects`, up to 1000 a request); keys already gone
    /// are no error.
    async fn delete_keys(&self, keys: Vec<Path>) -> Result<(), StoreError> {
        if keys.is_empty() {
            return Ok(());
        }
        let keys = futures_util::stream::iter(keys.into_iter().map(Ok)).boxed();
        let mut deleted = self.inner.s3.delete_stream(keys);
        while let Some(r) = deleted.next().await {
            match r {
                Ok(_) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(s3_error(e)),
            }
        }
        Ok(())
    }

    async fn open_work(&self, id: &UploadId) -> Result<Work, StoreError> {
        let stored = self.load(id).await?;
        Ok(Work {
            stored,
            claim: None,
            parts: Vec::new(),
            parts_len: 0,
            buf: BytesMut::new(),
            tail_loaded: false,
        })
    }

    pub(crate) async fn session_len(&self, id: &UploadId) -> Result<u64, StoreError> {
        self.load(id).await?.state.size()
    }

    pub(crate) async fn session_append(
        &self,
        id: &UploadId,
        offset: u64,
        expect_len: Option<u64>,
        body: Body<'_>,
    ) -> Result<u64, StoreError> {
        let _busy = self.inner.sessions.claim(id)?;
        let mut w = self.open_work(id).await?;
        w.stored.state.check_unclaimed(now())?;
        let current = w.stored.state.size()?;
        if offset != current {
            return Err(StoreError::UploadOutOfOrder {
                requested: offset,
                current,
            });
        }
        let r = self
            .append_work(id, &mut w, current, expect_len, body)
            .await;
        if r.is_err() {
            self.release(id, &mut w).await;
        }
        r
    }

    async fn append_work(
        &self,
        id: &UploadId,
        w: &mut Work,
        current: u64,
        expect_len: Option<u64>,
        mut body: Body<'_>,
    ) -> Result<u64, StoreError> {
        let state = &w.stored.state;
        let mut hasher = StateHasher::restore(state.algorithm, &state.hash)?;
        let mut scratch = vec![0u8; READ_SIZE];
        let mut received: u64 = 0;
        loop {
            // Never 0 here: a full buffer was sent as a part before the next read.
            let room = part_full(w)? - w.buf.len();
            let n = Self::fill(&mut body, &mut w.buf, &mut hasher, &mut scratch, room).await?;
            if n == 0 {
                break;
            }
            received = add(received, n)?;
            add(current, usize::try_from(received).unwrap_or(usize::MAX))?;
            if expect_len.is_some_and(|l| received > l) {
                break;
            }
            if w.buf.len() == part_full(w)? {
                self.send_part(id, w).await?;
            } else if w
                .claim
                .as_ref()
                .is_some_and(|(_, at)| now() >= at.saturating_add(RENEW))
            {
                self.claim(id, w).await?;
            }
        }
        if let Some(announced) = expect_len.filter(|l| *l != received) {
            // Nothing was committed: the session holds what it held.
            return Err(StoreError::ChunkLength {
                announced,
                received,
                holds: current,
            });
        }
        if received == 0 {
            self.release(id, w).await;
            return Ok(current);
        }
        // Commit: the new segment, then the state naming it (with the parts sent).
        let mut next = w.stored.state.clone();
        let consumed = if w.tail_loaded {
            std::mem::take(&mut next.tail)
        } else {
            Vec::new()
        };
        let mut segment = None;
        if !w.buf.is_empty() {
            let name = nonce()?;
            let len = u64::try_from(w.buf.len()).map_err(io::Error::other)?;
            let key = self.segment_key(id, &name);
            self.inner
                .s3
                .put(&key, PutPayload::from(w.buf.split().freeze()))
                .await
                .map_err(s3_error)?;
            next.tail.push(Segment {
                name: name.clone(),
                len,
            });
            segment = Some(Segment { name, len });
        }
        next.parts.append(&mut w.parts);
        next.parts_len = next
            .parts_len
            .checked_add(w.parts_len)
            .ok_or_else(|| StoreError::TooLarge("upload size overflows".into()))?;
        next.hash = hasher.save();
        next.last_write = now();
        next.writer = None;
        if let Err(e) = self.replace(id, w, next).await {
            self.delete_segments(id, segment.as_slice()).await;
            return Err(e);
        }
        w.claim = None;
        // Now in parts, or copied into the new segment.
        self.delete_segments(id, &consumed).await;
        w.stored.state.size()
    }

    /// Send the full buffer as the next part (not recorded until the append commits),
    /// claiming the session first.
    async fn send_part(&self, id: &UploadId, w: &mut Work) -> Result<(), StoreError> {
        if !w.tail_loaded {
            let mut tail = self.read_tail(id, &w.stored.state.tail).await?;
            tail.extend_from_slice(&w.buf);
            w.buf = tail;
            w.tail_loaded = true;
        }
        let renew = w
            .claim
            .as_ref()
            .is_none_or(|(_, at)| now() >= at.saturating_add(RENEW));
        if renew {
            self.claim(id, w).await?;
        }
        let Some(upload) = w.stored.state.multipart.clone() else {
            return Err(StoreError::Corrupt(format!(
                "upload session {id}: no multipart upload"
            )));
        };
        let part = w.buf.split().freeze();
        let len = part.len();
        let n = w.stored.state.parts.len() + w.parts.len();
        let etag = self
            .put_part(&self.object_key(id), &upload, n, part)
            .await?;
        w.parts.push(etag.content_id);
        w.parts_len = add(w.parts_len, len)?;
        Ok(())
    }

    pub(crate) async fn session_finish(
        &self,
        id: &UploadId,
        expected: &Digest,
    ) -> Result<Written, StoreError> {
        let busy = self.inner.sessions.claim(id)?;
        let mut w = self.open_work(id).await?;
        w.stored.state.check_unclaimed(now())?;
        let state = w.stored.state.clone();
        let size = state.size()?;
        let key = self.object_key(id);
        let upload = state.multipart.clone().filter(|_| !state.parts.is_empty());
        let mut completed = false;
        let result = async {
            let running = expected.algorithm() == state.algorithm;
            if running {
                check(
                    expected,
                    StateHasher::restore(state.algorithm, &state.hash)?.finish(),
                )?;
            }
            if self.stat(expected).await?.is_some() {
                return Ok(Written {
                    size,
                    existed: true,
                });
            }
            let tail = self.read_tail(id, &state.tail).await?.freeze();
            let Some(upload) = &upload else {
                if !running {
                    check(expected, Digest::of(expected.algorithm(), &tail))?;
                }
                // Under one part: one verified PUT under the digest.
                let existed = self.put_create(&self.blob_key(expected), tail).await?;
                return Ok(Written { size, existed });
            };
            // The last part and the completion change the multipart upload: claimed.
            self.claim(id, &mut w).await?;
            let mut parts: Vec<PartId> = state
                .parts
                .iter()
                .map(|e| PartId {
                    content_id: e.clone(),
                })
                .collect();
            if !tail.is_empty() {
                // The last part may be under 5 MiB.
                let n = parts.len();
                parts.push(self.put_part(&key, upload, n, tail).await?);
            }
            match self.inner.s3.complete_multipart(&key, upload, parts).await {
                Ok(_) => {}
                // Completed by an earlier attempt that failed before recording it.
                Err(object_store::Error::NotFound { .. })
                    if self.inner.s3.head(&key).await.is_ok_and(|m| m.size == size) => {}
                Err(e) => return Err(s3_error(e)),
            }
            completed = true;
            if !running {
                if let Err(e) = self.verify_object(&key, expected).await {
                    let _ = self.inner.s3.delete(&key).await;
                    return Err(e);
                }
            }
            // Visible under its digest from here on (or another object already is).
            let existed = self.index_insert(expected, id).await?;
            Ok(Written { size, existed })
        }
        .await;
        drop(busy);
        match &result {
            // The multipart upload is the blob now (or was dropped for the one already
            // stored): the session's state only goes.
            Ok(_) if completed => self.forget(id).await?,
            // A mismatch removes the session, as does success without a session object.
            Ok(_) | Err(StoreError::DigestMismatch { .. }) => {
                self.session_abort(id).await?;
            }
            Err(_) => self.release(id, &mut w).await,
        }
        result
    }

    /// Hash the completed object `key` with `expected`'s algorithm.
    async fn verify_object(&self, key: &Path, expected: &Digest) -> Result<(), StoreError> {
        let r = self
            .inner
            .s3
            .get_opts(key, GetOptions::default())
            .await
            .map_err(s3_error)?;
        let mut stream = r.into_stream();
        let mut hasher = StateHasher::new(expected.algorithm());
        while let Some(chunk) = stream.try_next().await.map_err(s3_error)? {
            hasher.update(&chunk);
        }
        check(expected, hasher.finish())
    }

    /// Remove the session's state: `state.json` first (no writer can commit after it), then
    /// every segment, including those of appends that failed before committing.
    async fn forget(&self, id: &UploadId) -> Result<(), StoreError> {
        match self.inner.s3.delete(&self.state_key(id)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(s3_error(e)),
        }
        let prefix = self.key(&self.session_dir(id));
        let keys: Vec<Path> = self
            .inner
            .s3
            .list(Some(&prefix))
            .map_ok(|m| m.location)
            .try_collect()
            .await
            .map_err(s3_error)?;
        self.delete_keys(keys).await
    }

    /// End the session: `state.json` first (from then on it is unknown everywhere, and a
    /// write in flight fails when it commits), then its multipart upload (its parts stop
    /// costing storage) and its segments. A crash in between leaves a multipart upload no
    /// session names, for the bucket's `AbortIncompleteMultipartUpload` rule.
    pub(crate) async fn session_abort(&self, id: &UploadId) -> Result<bool, StoreError> {
        let state = match self.load(id).await {
            Ok(l) => l.state,
            Err(StoreError::UploadUnknown) => {
                self.forget(id).await?;
                return Ok(false);
            }
            Err(e) => return Err(e),
        };
        match self.inner.s3.delete(&self.state_key(id)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(s3_error(e)),
        }
        if let Some(upload) = &state.multipart {
            let upload: MultipartId = upload.clone();
            self.abort_multipart(&self.object_key(id), &upload).await;
        }
        self.forget(id).await?;
        Ok(true)
    }

    fn record(&self, id: UploadId, state: &State) -> Result<SessionRecord, StoreError> {
        let info = unhex(&state.info)
            .ok_or_else(|| StoreError::Corrupt(format!("upload session {id} info")))?;
        Ok(SessionRecord {
            size: state.size()?,
            info: Bytes::from(info),
            started: time(state.started),
            last_write: time(state.last_write),
            id,
        })
    }

    /// Session `id`'s record, if it is open (on any replica).
    pub(crate) async fn session_record(
        &self,
        id: &UploadId,
    ) -> Result<Option<SessionRecord>, StoreError> {
        match self.load(id).await {
            Ok(l) => Ok(Some(self.record(id.clone(), &l.state)?)),
            Err(StoreError::UploadUnknown) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The id of every session prefix under `_state/uploads/`: one delimited listing (an
    /// entry a session, not a segment).
    async fn session_ids(&self) -> Result<Vec<UploadId>, StoreError> {
        let prefix = self.key("_state/uploads");
        let listed = self
            .inner
            .s3
            .list_with_delimiter(Some(&prefix))
            .await
            .map_err(s3_error)?;
        Ok(listed
            .common_prefixes
            .iter()
            .filter_map(|p| p.filename().and_then(|n| UploadId::parse(n).ok()))
            .collect())
    }

    /// Every open session (expiry and the store's open only): one delimited listing of
    /// `_state/uploads/` (an entry a session, not a segment), then each `state.json`. A
    /// session's prefix without one holds only leftovers (segments of appends that failed, a
    /// removal cut short), since `begin` writes `state.json` before anything else: removed.
    pub(crate) async fn session_records(&self) -> Result<Vec<SessionRecord>, StoreError> {
        let ids = self.session_ids().await?;
        let found: Vec<(UploadId, Option<SessionRecord>)> = futures_util::stream::iter(ids)
            .map(|id| async move {
                let record = self.session_record(&id).await?;
                Ok::<_, StoreError>((id, record))
            })
            .buffer_unordered(16)
            .try_collect()
            .await?;
        let mut out = Vec::new();
        for (id, record) in found {
            match record {
                Some(r) => out.push(r),
                None => {
                    if let Err(e) = self.forget(&id).await {
                        tracing::debug!(upload = %id, error = %e, "cannot remove upload leftovers");
                    }
                }
            }
        }
        Ok(out)
    }

    /// Every session in the bucket (its prefix listed, with or without `state.json`) and
    /// every multipart upload a session's state records: what the leftover sweep must not
    /// touch.
    pub(crate) async fn session_uploads(
        &self,
    ) -> Result<(HashSet<UploadId>, HashSet<MultipartId>), StoreError> {
        let ids = self.session_ids().await?;
        let uploads: Vec<Option<MultipartId>> = futures_util::stream::iter(ids.clone())
            .map(|id| async move {
                match self.load(&id).await {
                    Ok(l) => Ok(l.state.multipart),
                    // Half-made, being removed, or unreadable: it records no upload.
                    Err(StoreError::UploadUnknown | StoreError::Corrupt(_)) => Ok(None),
                    Err(e) => Err(e),
                }
            })
            .buffer_unordered(16)
            .try_collect()
            .await?;
        Ok((
            ids.into_iter().collect(),
            uploads.into_iter().flatten().collect(),
        ))
    }

    /// Sessions an earlier version kept on local disk (`<state-dir>/sessions/`), moved into
    /// the bucket once so that an upgrade loses none.
    pub(crate) async fn migrate_local_sessions(&self, dir: &FsPath) -> Result<(), StoreError> {
        #[derive(Deserialize)]
        struct Old {
            started: u64,
            last_write: u64,
            multipart: Option<String>,
            parts: Vec<String>,
            parts_len: u64,
            algorithm: Algorithm,
            hash: String,
        }
        let mut rd = match tokio::fs::read_dir(dir).await {
            Ok(rd) => rd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        while let Some(e) = rd.next_entry().await? {
            let Some(id) = e.file_name().to_str().and_then(|s| UploadId::parse(s).ok()) else {
                continue;
            };
            let path = e.path();
            let (Ok(json), Ok(info)) = (
                tokio::fs::read(path.join("state.json")).await,
                tokio::fs::read(path.join("info")).await,
            ) else {
                // A `begin` that never finished: not a session.
                tokio::fs::remove_dir_all(&path).await?;
                continue;
            };
            let old: Old = serde_json::from_slice(&json)
                .map_err(|e| StoreError::Corrupt(format!("upload session {id} state: {e}")))?;
            let tail = match tokio::fs::read(path.join(format!("tail.{}", old.parts.len()))).await {
                Ok(t) => t,
                Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
                Err(e) => return Err(e.into()),
            };
            // The old saved hash covered the parts only.
            let mut hasher = StateHasher::restore(old.algorithm, &old.hash)?;
            hasher.update(&tail);
            let mut segs = Vec::new();
            if !tail.is_empty() {
                let name = nonce()?;
                let len = u64::try_from(tail.len()).map_err(io::Error::other)?;
                self.inner
                    .s3
                    .put(&self.segment_key(&id, &name), PutPayload::from(tail))
                    .await
                    .map_err(s3_error)?;
                segs.push(Segment { name, len });
            }
            let state = State {
                started: old.started,
                last_write: old.last_write,
                info: hex(&info),
                multipart: old.multipart,
                parts: old.parts,
                parts_len: old.parts_len,
                tail: segs,
                algorithm: old.algorithm,
                hash: hasher.save(),
                writer: None,
            };
            match self.put_state(&id, &state, PutMode::Create).await {
                // Moved by an earlier start that stopped before removing the directory.
                Ok(_) | Err(StoreError::UploadInvalid(_)) => {}
                Err(e) => return Err(e),
            }
            tokio::fs::remove_dir_all(&path).await?;
            tracing::info!(upload = %id, "moved an upload session's state into the bucket");
        }
        Ok(())
    }
}

/// The buffer length at which a part is full: PART_SIZE less the stored tail not loaded
/// (which is under PART_SIZE; see `read_tail`).
fn part_full(w: &Work) -> Result<usize, StoreError> {
    usize::try_from(w.unloaded()?)
        .ok()
        .and_then(|u| PART_SIZE.checked_sub(u))
        // A stored tail of a whole part or more is damaged state.
        .filter(|&full| full > 0)
        .ok_or_else(|| StoreError::Corrupt("upload session tail".into()))
}

fn no_etag(key: &Path) -> StoreError {
    StoreError::Io(io::Error::other(format!(
        "S3 answered without an ETag for {key}; conditional writes need one"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::Versitygw;

    /// A data dir served by a version that kept the object index and open sessions on
    /// local disk: at the first open they move into the bucket, and nothing is lost.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn state_kept_on_local_disk_by_an_earlier_version_moves_into_the_bucket() {
        let gw = Versitygw::start();
        let dir = tempfile::tempdir().expect("tmp");
        let cfg = gw.config("old");
        // A blob an old session completed in place, known only to the old local index.
        let blob = b"completed by an old session".to_vec();
        let d = Digest::of(Algorithm::Sha256, &blob);
        let done = UploadId::parse(&"ab".repeat(16)).expect("id");
        {
            let s3 = S3Blobs::open(&cfg, dir.path()).await.expect("open");
            let key = s3.object_key(&done);
            s3.inner
                .s3
                .put(&key, PutPayload::from(blob.clone()))
                .await
                .expect("put");
        }
        std::fs::write(dir.path().join("objects"), format!("{d} {done}\n")).expect("index");
        // An open session holding a sub-part tail, its saved hash over the parts (none).
        let open = UploadId::parse(&"cd".repeat(16)).expect("id");
        let sdir = dir.path().join("sessions").join(open.as_str());
        std::fs::create_dir_all(&sdir).expect("session dir");
        std::fs::write(sdir.join("info"), b"{\"repo\":\"old\"}").expect("info");
        let state = serde_json::json!({
            "started": 1_700_000_000u64, "last_write": 1_700_000_001u64, "multipart": null,
            "parts": [], "parts_len": 0, "algorithm": "sha256",
            "hash": StateHasher::new(Algorithm::Sha256).save(),
        });
        std::fs::write(sdir.join("state.json"), state.to_string()).expect("state");
        std::fs::write(sdir.join("tail.0"), b"first ").expect("tail");

        let s3 = S3Blobs::open(&cfg, dir.path())
            .await
            .expect("migrating open");
        assert!(!dir.path().join("objects").exists());
        assert!(!sdir.exists());
        // A fresh instance with an empty state dir sees it all: it is in the bucket.
        let other = tempfile::tempdir().expect("tmp");
        let s3b = S3Blobs::open(&cfg, other.path()).await.expect("open");
        assert_eq!(s3b.stat(&d).await.expect("stat"), Some(blob.len() as u64));
        let listed = s3b.sessions().await.expect("sessions");
        assert_eq!(listed.len(), 1);
        assert_eq!(
            (&listed[0].id, listed[0].size, &listed[0].info[..]),
            (&open, 6, &b"{\"repo\":\"old\"}"[..])
        );
        s3.append(&open, 6, None, &mut &b"and the rest"[..])
            .await
            .expect("append");
        let whole = Digest::of(Algorithm::Sha256, b"first and the rest");
        s3b.finish(&open, &whole).await.expect("finish");
        let r = s3b.read(&whole, Default::default()).await.expect("read");
        let got: Vec<Bytes> = r.stream.try_collect().await.expect("bytes");
        assert_eq!(got.concat(), b"first and the rest");
    }
}
