//! The store's upload sessions: begin, append, finish, cancel, against the caps on open
//! sessions. Session bytes live in the blob backend; the store adds owners and caps.

use std::time::SystemTime;

use tokio::io::AsyncRead;

use crate::*;

impl Store {
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
    pub(crate) async fn session(
        &self,
        repo: &RepoName,
        id: &UploadId,
    ) -> Result<uploads::Entry, StoreError> {
        self.adopt_session(id).await?;
        self.inner
            .open_uploads
            .get(repo, id)
            .ok_or(StoreError::UploadUnknown)
    }

    /// With sessions shared between replicas ([`BlobStore::shared_sessions`]), one this
    /// process has not seen may have been opened by another: found in the backend, it is
    /// counted here from now on (not against the caps: it is open already).
    async fn adopt_session(&self, id: &UploadId) -> Result<(), StoreError> {
        let blobs = &self.inner.blobs;
        if !blobs.shared_sessions() || self.inner.open_uploads.contains(id) {
            return Ok(());
        }
        if let Some(record) = blobs.session(id).await? {
            for (id, entry) in uploads::entries(vec![record]) {
                self.inner.open_uploads.adopt(id, entry);
            }
        }
        Ok(())
    }

    /// What session `id` holds: the size this store last saw, or, with sessions shared
    /// between replicas, the backend's (another replica may have appended since). A session
    /// the backend no longer has (finished or cancelled elsewhere) stops counting here.
    async fn held(&self, id: &UploadId, entry: &uploads::Entry) -> Result<u64, StoreError> {
        if !self.inner.blobs.shared_sessions() {
            return Ok(entry.size);
        }
        match self.inner.blobs.session_size(id).await {
            Ok(size) => {
                self.inner.open_uploads.set_size(id, size);
                Ok(size)
            }
            Err(e) => Err(self.gone(id, e)),
        }
    }

    /// `e` from the backend about session `id`; `UploadUnknown` means it went elsewhere
    /// (another replica finished or cancelled it), so it stops counting here too.
    fn gone(&self, id: &UploadId, e: StoreError) -> StoreError {
        if matches!(e, StoreError::UploadUnknown) {
            self.inner.open_uploads.release(id);
        }
        e
    }

    /// The repository and owner of session `id`, for callers that address sessions by id
    /// alone (the admin API's import uploads).
    pub async fn upload_session(
        &self,
        id: &UploadId,
    ) -> Result<(RepoName, Option<String>), StoreError> {
        self.adopt_session(id).await?;
        let entry = self
            .inner
            .open_uploads
            .by_id(id)
            .ok_or(StoreError::UploadUnknown)?;
        let repo = entry.repo.ok_or(StoreError::UploadUnknown)?;
        Ok((repo, Some(entry.owner.to_string())))
    }

    /// `Unsupported` unless the blob backend can read an unfinished upload back (see
    /// [`Store::open_upload_data`]): for callers to refuse such an upload at its start.
    pub fn require_readable_uploads(&self, what: &str) -> Result<(), StoreError> {
        if self.inner.blobs.reads_sessions() {
            return Ok(());
        }
        Err(StoreError::Unsupported(format!(
            "{what} need blobs that can be read back before they are finished, which the {} \
storage backend cannot; send the archive in one request instead (POST /admin/v1/import, \
which `airdock import --server` falls back to by itself)",
            self.inner.blobs.kind()
        )))
    }

    /// The bytes a session holds, opened for reading (an import reads the archive uploaded
    /// into it). Reading does not touch the session; it stays open until cancelled.
    pub async fn open_upload_data(
        &self,
        repo: &RepoName,
        id: &UploadId,
    ) -> Result<BlobReader, StoreError> {
        self.session(repo, id).await?;
        let read = self.inner.blobs.read_session(id).await?;
        Ok(BlobReader::new(read.stream))
    }

    /// Bytes received so far.
    pub async fn upload_status(&self, repo: &RepoName, id: &UploadId) -> Result<u64, StoreError> {
        let session = self.session(repo, id).await?;
        self.held(id, &session).await
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
        let session = self.session(repo, id).await?;
        let open = &self.inner.open_uploads;
        open.touch(id, SystemTime::now());
        let offset = match start {
            Some(start) => start,
            None => self.held(id, &session).await?,
        };
        let writing = open.writing(id);
        let result = self.inner.blobs.append(id, offset, len, &mut reader).await;
        drop(writing);
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
            Err(e) => return Err(self.gone(id, e)),
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
        let session = self.session(repo, id).await?;
        if let Some(alg) = session.algorithm {
            if alg != expected.algorithm() {
                return Err(StoreError::DigestInvalid(format!(
                    "upload was opened for {alg}, digest is {}",
                    expected.algorithm()
                )));
            }
        }
        self.append_upload(repo, id, None, None, reader).await?;
        let _pin = self.inner.pins.pin_published(expected).await?;
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
            Err(e) => return Err(self.gone(id, e)),
        };
        // Its grace window starts now: the client's manifest referencing it comes next.
        self.touch_written(expected);
        // Released and linked under the journal lock, against which a repository delete
        // cancels its sessions: a session cancelled first links nothing (the stored bytes
        // are left to GC), so finishing it cannot bring a deleted repository back.
        let mut locked = self.inner.meta.lock().await?;
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
        self.session(repo, id).await?;
        self.inner.blobs.abort(id).await?;
        self.inner.open_uploads.release(id);
        Ok(())
    }
}
