//! Upload sessions as S3 multipart uploads, continued across restarts.
//!
//! A session's state lives on local disk under `<state-dir>/sessions/<upload-id>/`:
//!
//! ```text
//! info            the store's own record of the session, verbatim
//! state.json      times, the multipart upload id, the ETag of every part sent, their total
//!                 length, and the running SHA-256 over them (saved hash state)
//! tail.<n>        the bytes received after part n-1: fewer than PART_SIZE, since S3 needs
//!                 5 MiB per part but clients send chunks of any size
//! ```
//!
//! Each file is replaced atomically (temp, fsync, rename, directory fsync). An append
//! commits by writing its new tail, then (if it sent parts) `state.json`, then removing the
//! old tail: a tail is named after the number of parts before it, so at every instant the
//! state on disk and its own tail agree, and a failed or crashed append leaves the session
//! as it was before (parts it sent are sent again under the same numbers, which S3
//! replaces, or left out of the completion). The multipart upload is created with a
//! session's first part and recorded at once, so expiry can always abort it; a session that
//! never reaches PART_SIZE completes as one verified PUT under its digest.
//!
//! The running hash uses the algorithm the session began with (the client's
//! `digest-algorithm`, else sha256). A session finished with a digest of another algorithm
//! is completed, read back once to hash, and kept only if it matches.

use std::collections::HashSet;
use std::io;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use airdock_storage::blobstore::{BlobStore, Body, SessionRecord, Written};
use airdock_storage::{Algorithm, Digest, StoreError, UploadId};
use bytes::{Bytes, BytesMut};
use futures_util::stream::TryStreamExt;
use object_store::multipart::{MultipartStore, PartId};
use object_store::{GetOptions, MultipartId, ObjectStore, ObjectStoreExt};
use serde::{Deserialize, Serialize};

use crate::hash::StateHasher;
use crate::{add, check, s3_error, S3Blobs, PART_SIZE, READ_SIZE};

/// What `state.json` holds.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct State {
    /// Unix seconds.
    started: u64,
    last_write: u64,
    /// The multipart upload, once the first part was sent.
    multipart: Option<String>,
    /// ETags of the parts sent, in order.
    parts: Vec<String>,
    /// Bytes in the parts.
    parts_len: u64,
    /// The running hash's algorithm and its state over the parts.
    algorithm: Algorithm,
    hash: String,
}

pub(crate) struct Sessions {
    dir: PathBuf,
    /// Sessions a request is writing: a second writer is refused rather than interleaved.
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
    pub(crate) async fn new(dir: PathBuf) -> Result<Sessions, StoreError> {
        tokio::fs::create_dir_all(&dir).await?;
        Ok(Sessions {
            dir,
            busy: Mutex::new(HashSet::new()),
        })
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

    fn path(&self, id: &UploadId) -> PathBuf {
        self.dir.join(id.as_str())
    }
}

/// A session loaded for one request.
struct Open {
    state: State,
    /// Over the parts and the tail.
    hasher: StateHasher,
    tail: BytesMut,
}

impl Open {
    fn size(&self) -> Result<u64, StoreError> {
        add(self.state.parts_len, self.tail.len())
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

/// Not found → the session is gone (aborted, or never was).
fn gone(e: io::Error) -> StoreError {
    if e.kind() == io::ErrorKind::NotFound {
        StoreError::UploadUnknown
    } else {
        e.into()
    }
}

/// Write `bytes` to `path` atomically and durably.
async fn write_atomic(path: PathBuf, bytes: Vec<u8>) -> Result<(), StoreError> {
    tokio::task::spawn_blocking(move || -> io::Result<()> {
        use std::io::Write;
        let tmp = path.with_extension("tmp");
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&bytes)?;
        f.sync_data()?;
        std::fs::rename(&tmp, &path)?;
        if let Some(dir) = path.parent() {
            std::fs::File::open(dir)?.sync_all()?;
        }
        Ok(())
    })
    .await
    .map_err(io::Error::other)?
    .map_err(gone)
}

async fn remove_file(path: PathBuf) -> Result<(), StoreError> {
    match tokio::fs::remove_file(path).await {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e.into()),
        _ => Ok(()),
    }
}

impl S3Blobs {
    fn sessions_dir(&self) -> &Sessions {
        &self.inner.sessions
    }

    fn tail_path(&self, id: &UploadId, parts: usize) -> PathBuf {
        self.sessions_dir().path(id).join(format!("tail.{parts}"))
    }

    pub(crate) async fn session_begin(
        &self,
        id: &UploadId,
        algorithm: Algorithm,
        info: Bytes,
    ) -> Result<(), StoreError> {
        let dir = self.sessions_dir().path(id);
        match tokio::fs::create_dir(&dir).await {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                return Err(StoreError::UploadInvalid(format!(
                    "upload {id} is already open"
                )))
            }
            Err(e) => return Err(e.into()),
        }
        let t = now();
        let state = State {
            started: t,
            last_write: t,
            multipart: None,
            parts: Vec::new(),
            parts_len: 0,
            algorithm,
            hash: StateHasher::new(algorithm).save(),
        };
        write_atomic(dir.join("info"), info.to_vec()).await?;
        // Last: a directory without a state is not a session (see `session_records`).
        self.save(id, &state).await
    }

    async fn save(&self, id: &UploadId, state: &State) -> Result<(), StoreError> {
        let json = serde_json::to_vec(state).map_err(io::Error::other)?;
        write_atomic(self.sessions_dir().path(id).join("state.json"), json).await
    }

    async fn load_state(&self, id: &UploadId) -> Result<State, StoreError> {
        let json = tokio::fs::read(self.sessions_dir().path(id).join("state.json"))
            .await
            .map_err(gone)?;
        serde_json::from_slice(&json)
            .map_err(|e| StoreError::Corrupt(format!("upload session {id} state: {e}")))
    }

    async fn load(&self, id: &UploadId) -> Result<Open, StoreError> {
        let state = self.load_state(id).await?;
        let mut hasher = StateHasher::restore(state.algorithm, &state.hash)?;
        let tail = match tokio::fs::read(self.tail_path(id, state.parts.len())).await {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(e.into()),
        };
        if tail.len() >= PART_SIZE {
            return Err(StoreError::Corrupt(format!("upload session {id} tail")));
        }
        // The saved hash covers the parts; the tail (under one part) is hashed again.
        hasher.update(&tail);
        Ok(Open {
            state,
            hasher,
            tail: BytesMut::from(&tail[..]),
        })
    }

    fn session_key(&self, id: &UploadId) -> object_store::path::Path {
        self.object_key(id)
    }

    pub(crate) async fn session_len(&self, id: &UploadId) -> Result<u64, StoreError> {
        let state = self.load_state(id).await?;
        let tail = match tokio::fs::metadata(self.tail_path(id, state.parts.len())).await {
            Ok(m) => m.len(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => 0,
            Err(e) => return Err(e.into()),
        };
        state
            .parts_len
            .checked_add(tail)
            .ok_or_else(|| StoreError::Corrupt(format!("upload session {id} size")))
    }

    pub(crate) async fn session_append(
        &self,
        id: &UploadId,
        offset: u64,
        expect_len: Option<u64>,
        mut body: Body<'_>,
    ) -> Result<u64, StoreError> {
        let _busy = self.sessions_dir().claim(id)?;
        let mut open = self.load(id).await?;
        let current = open.size()?;
        if offset != current {
            return Err(StoreError::UploadOutOfOrder {
                requested: offset,
                current,
            });
        }
        let parts_before = open.state.parts.len();
        let mut scratch = vec![0u8; READ_SIZE];
        let mut received: u64 = 0;
        loop {
            let n = Self::fill(&mut body, &mut open.tail, &mut open.hasher, &mut scratch).await?;
            if n == 0 {
                break;
            }
            received = add(received, n)?;
            add(current, usize::try_from(received).unwrap_or(usize::MAX))?;
            if expect_len.is_some_and(|l| received > l) {
                break;
            }
            if open.tail.len() == PART_SIZE {
                self.send_part(id, &mut open).await?;
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
        // Commit: the new tail, then the state naming it, then the old tail goes.
        write_atomic(
            self.tail_path(id, open.state.parts.len()),
            open.tail.to_vec(),
        )
        .await?;
        open.state.last_write = now();
        self.save(id, &open.state).await?;
        if open.state.parts.len() != parts_before {
            remove_file(self.tail_path(id, parts_before)).await?;
        }
        open.size()
    }

    /// Send the full tail as the next part (in memory until the append commits).
    async fn send_part(&self, id: &UploadId, open: &mut Open) -> Result<(), StoreError> {
        let key = self.session_key(id);
        let upload = match &open.state.multipart {
            Some(u) => u.clone(),
            None => {
                // Held until the upload is recorded, for the leftover sweep.
                let _creating = self.inner.creating.read().await;
                let u = self
                    .inner
                    .s3
                    .create_multipart(&key)
                    .await
                    .map_err(s3_error)?;
                // Recorded at once (it changes nothing else), so expiry can abort it.
                let mut recorded = self.load_state(id).await?;
                recorded.multipart = Some(u.clone());
                self.save(id, &recorded).await?;
                open.state.multipart = Some(u.clone());
                u
            }
        };
        let part = open.tail.split().freeze();
        let len = part.len();
        let etag = self
            .put_part(&key, &upload, open.state.parts.len(), part)
            .await?;
        open.state.parts.push(etag.content_id);
        open.state.parts_len = add(open.state.parts_len, len)?;
        open.state.hash = open.hasher.save();
        Ok(())
    }

    pub(crate) async fn session_finish(
        &self,
        id: &UploadId,
        expected: &Digest,
    ) -> Result<Written, StoreError> {
        let busy = self.sessions_dir().claim(id)?;
        let open = self.load(id).await?;
        let size = open.size()?;
        let key = self.session_key(id);
        let upload = open
            .state
            .multipart
            .clone()
            .filter(|_| !open.state.parts.is_empty());
        let result = async {
            let running = expected.algorithm() == open.state.algorithm;
            if running {
                check(expected, open.hasher.clone().finish())?;
            } else if upload.is_none() {
                check(expected, Digest::of(expected.algorithm(), &open.tail))?;
            }
            if self.stat(expected).await?.is_some() {
                return Ok(Written {
                    size,
                    existed: true,
                });
            }
            let Some(upload) = &upload else {
                // Under one part: one verified PUT under the digest.
                let existed = self
                    .put_create(&self.blob_key(expected), open.tail.clone().freeze())
                    .await?;
                return Ok(Written { size, existed });
            };
            let mut parts: Vec<PartId> = open
                .state
                .parts
                .iter()
                .map(|e| PartId {
                    content_id: e.clone(),
                })
                .collect();
            if !open.tail.is_empty() {
                // The last part may be under 5 MiB.
                let n = parts.len();
                parts.push(
                    self.put_part(&key, upload, n, open.tail.clone().freeze())
                        .await?,
                );
            }
            match self.inner.s3.complete_multipart(&key, upload, parts).await {
                Ok(_) => {}
                // Completed by an earlier attempt that failed before recording it.
                Err(object_store::Error::NotFound { .. })
                    if self.inner.s3.head(&key).await.is_ok_and(|m| m.size == size) => {}
                Err(e) => return Err(s3_error(e)),
            }
            if !running {
                if let Err(e) = self.verify_object(&key, expected).await {
                    let _ = self.inner.s3.delete(&key).await;
                    return Err(e);
                }
            }
            // Visible under its digest from here on.
            self.inner.index.insert(expected, id).await?;
            Ok(Written {
                size,
                existed: false,
            })
        }
        .await;
        drop(busy);
        match &result {
            // The object is the blob now: the session only goes.
            Ok(w) if !w.existed && upload.is_some() => self.forget(id).await?,
            // A mismatch removes the session, as does success without a session object.
            Ok(_) | Err(StoreError::DigestMismatch { .. }) => {
                self.session_abort(id).await?;
            }
            Err(_) => {}
        }
        result
    }

    /// Hash the completed object `key` with `expected`'s algorithm.
    async fn verify_object(
        &self,
        key: &object_store::path::Path,
        expected: &Digest,
    ) -> Result<(), StoreError> {
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

    async fn forget(&self, id: &UploadId) -> Result<(), StoreError> {
        match tokio::fs::remove_dir_all(self.sessions_dir().path(id)).await {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e.into()),
            _ => Ok(()),
        }
    }

    /// Abort the multipart upload (its parts stop costing storage) and remove the state. A
    /// write in flight then fails when it commits (its state file is gone).
    pub(crate) async fn session_abort(&self, id: &UploadId) -> Result<bool, StoreError> {
        let state = match self.load_state(id).await {
            Ok(s) => s,
            Err(StoreError::UploadUnknown) => {
                self.forget(id).await?;
                return Ok(false);
            }
            Err(e) => return Err(e),
        };
        if let Some(upload) = &state.multipart {
            let upload: MultipartId = upload.clone();
            self.abort_multipart(&self.session_key(id), &upload).await;
        }
        self.forget(id).await?;
        Ok(true)
    }

    /// Every session directory (half-made ones too) and every multipart upload a session's
    /// state records: what the leftover sweep must not touch.
    pub(crate) async fn session_uploads(
        &self,
    ) -> Result<(HashSet<UploadId>, HashSet<MultipartId>), StoreError> {
        let (mut dirs, mut uploads) = (HashSet::new(), HashSet::new());
        let mut rd = tokio::fs::read_dir(&self.sessions_dir().dir).await?;
        while let Some(e) = rd.next_entry().await? {
            let Some(id) = e.file_name().to_str().and_then(|s| UploadId::parse(s).ok()) else {
                continue;
            };
            match self.load_state(&id).await {
                Ok(state) => uploads.extend(state.multipart),
                // Half-made (no state yet) or unreadable: it records no upload we could spare.
                Err(StoreError::UploadUnknown | StoreError::Corrupt(_)) => {}
                Err(e) => return Err(e),
            }
            dirs.insert(id);
        }
        Ok((dirs, uploads))
    }

    pub(crate) async fn session_records(&self) -> Result<Vec<SessionRecord>, StoreError> {
        let mut out = Vec::new();
        let mut rd = tokio::fs::read_dir(&self.sessions_dir().dir).await?;
        while let Some(e) = rd.next_entry().await? {
            let Some(id) = e.file_name().to_str().and_then(|s| UploadId::parse(s).ok()) else {
                continue;
            };
            // A directory without state is a `begin` that did not finish: not a session.
            let state = match self.load_state(&id).await {
                Ok(s) => s,
                Err(StoreError::UploadUnknown) => continue,
                Err(e) => return Err(e),
            };
            let info = match tokio::fs::read(e.path().join("info")).await {
                Ok(i) => Bytes::from(i),
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e.into()),
            };
            let size = match self.session_len(&id).await {
                Ok(n) => n,
                Err(StoreError::UploadUnknown) => continue,
                Err(e) => return Err(e),
            };
            out.push(SessionRecord {
                id,
                size,
                info,
                started: time(state.started),
                last_write: time(state.last_write),
            });
        }
        Ok(out)
    }
}
