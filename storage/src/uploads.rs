//! Upload sessions: bytes received so far live on disk under `uploads/<id>/`, so a session
//! survives a restart; the running hash lives in memory and is rebuilt from disk if lost.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::blobstore::SessionRecord;
use crate::{Algorithm, Hasher, RepoName, Store, StoreError};

/// An upload session id: 32 lowercase hex characters, safe as a directory name.
#[derive(Clone, PartialEq, Eq, Hash, Debug, Serialize)]
pub struct UploadId(Box<str>);

impl UploadId {
    pub(crate) fn new() -> UploadId {
        UploadId(crate::random::id().into())
    }

    pub fn parse(s: &str) -> Result<UploadId, StoreError> {
        let ok = s.len() == 32
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if !ok {
            return Err(StoreError::UploadUnknown);
        }
        Ok(UploadId(s.into()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for UploadId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Serialize, Deserialize)]
pub(crate) struct Info {
    pub repo: RepoName,
    /// Set by `digest-algorithm` on the POST; otherwise the final digest decides.
    #[serde(default)]
    pub algorithm: Option<Algorithm>,
    /// Who opened it (see `Entry::owner`); sessions written before owners were kept have none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
}

/// The running hash of a session, valid for the first `offset` bytes of its data file.
pub(crate) struct Hot {
    pub offset: u64,
    pub hasher: Hasher,
}

/// Sessions whose hash is in memory. A session being written is taken out of the map,
/// so a second concurrent writer to the same session sees no hasher and is refused.
#[derive(Default)]
pub(crate) struct Sessions {
    /// std Mutex: only map lookups happen under it, never I/O or `.await`.
    hot: Mutex<HashMap<UploadId, Option<Hot>>>,
}

// A short-lived return value, never stored: its size does not matter.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Taken {
    /// The session's hash is current (or absent after a restart); it is ours until put back.
    Free(Option<Hot>),
    Busy,
}

impl Sessions {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<UploadId, Option<Hot>>> {
        self.hot.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn insert(&self, id: &UploadId, hot: Hot) {
        self.map().insert(id.clone(), Some(hot));
    }

    /// Claim the session for writing.
    pub(crate) fn take(&self, id: &UploadId) -> Taken {
        let mut map = self.map();
        match map.get_mut(id) {
            Some(slot) => match slot.take() {
                Some(hot) => Taken::Free(Some(hot)),
                None => Taken::Busy,
            },
            None => {
                // Not in memory: after a restart. Mark it claimed.
                map.insert(id.clone(), None);
                Taken::Free(None)
            }
        }
    }

    /// Release a claim, with the hash if it is still valid.
    pub(crate) fn put_back(&self, id: &UploadId, hot: Option<Hot>) {
        let mut map = self.map();
        match hot {
            Some(h) => {
                map.insert(id.clone(), Some(h));
            }
            None => {
                map.remove(id);
            }
        }
    }

    pub(crate) fn forget(&self, id: &UploadId) {
        self.map().remove(id);
    }
}

/// Caps on open upload sessions. A session is a directory on disk that lives until finish,
/// cancel or expiry, so without caps one client could hold every slot (or the disk's inodes).
#[derive(Clone, Copy, Debug)]
pub struct UploadLimits {
    /// Sessions open at once, whoever opened them: a backstop. `None`: no cap.
    pub max_open: Option<usize>,
    /// Sessions one owner (a user, or a client address for anonymous pushes) may hold.
    /// `None`: no per-owner cap.
    pub max_per_owner: Option<usize>,
    /// At a cap, a session not written to for this long may be expired to make room.
    pub evict_idle: Duration,
}

impl Default for UploadLimits {
    fn default() -> UploadLimits {
        UploadLimits {
            max_open: None,
            max_per_owner: None,
            evict_idle: Duration::from_secs(60),
        }
    }
}

/// An open session as the caps and the admin listing see it.
#[derive(Clone, Debug)]
pub(crate) struct Entry {
    /// Opaque to the store: the HTTP layer names users and client addresses in it.
    pub owner: Arc<str>,
    /// `None` for a half-made session whose `info.json` is unreadable.
    pub repo: Option<RepoName>,
    pub started: SystemTime,
    /// The last write (or the start): what "idle" is measured from.
    pub last: SystemTime,
    /// Bytes held, as the backend last reported (after each chunk): upload status and the
    /// admin listing answer from here, without asking the backend.
    pub size: u64,
    /// The `digest-algorithm` the session was opened for, if any.
    pub algorithm: Option<Algorithm>,
    /// Requests of this process writing to it now: expiry leaves it alone meanwhile, however
    /// long the chunk (a backend may record a write only when it commits).
    pub writers: u32,
}

/// A new session would pass a cap; what may be expired to make room, else how long to wait.
pub(crate) struct Full {
    pub limit: usize,
    pub per_owner: bool,
    /// Idle sessions of the owner holding the most, oldest first: expiring one of them
    /// makes room without touching anyone else's push.
    pub victims: Vec<UploadId>,
    /// Sessions last written before this are idle enough to expire.
    pub idle_before: SystemTime,
    /// Seconds until the offender's oldest session becomes idle enough to expire.
    pub retry_after: u64,
}

impl Full {
    pub(crate) fn into_error(self) -> StoreError {
        StoreError::TooManyUploads {
            limit: self.limit,
            per_client: self.per_owner,
            retry_after: self.retry_after,
        }
    }
}

/// The open sessions, kept equal to the session directories on disk: read from disk at open,
/// +1 when a session is reserved, -1 only by the caller whose removal of a session directory
/// succeeded (finish, cancel, a digest mismatch, expiry, eviction), so a session that could
/// not be removed keeps counting until expiry removes it.
#[derive(Default)]
pub(crate) struct Open {
    /// std Mutex: map updates only, never I/O or `.await` under it.
    state: Mutex<OpenState>,
}

#[derive(Default)]
struct OpenState {
    sessions: HashMap<UploadId, Entry>,
    per_owner: HashMap<Arc<str>, usize>,
    limits: UploadLimits,
}

impl OpenState {
    fn insert(&mut self, id: UploadId, entry: Entry) {
        *self.per_owner.entry(Arc::clone(&entry.owner)).or_default() += 1;
        self.sessions.insert(id, entry);
    }

    fn remove(&mut self, id: &UploadId) -> bool {
        let Some(entry) = self.sessions.remove(id) else {
            return false;
        };
        if let Some(n) = self.per_owner.get_mut(&entry.owner) {
            *n -= 1;
            if *n == 0 {
                self.per_owner.remove(&entry.owner);
            }
        }
        true
    }

    /// `owner`'s sessions that may be expired (oldest first), and the seconds until the
    /// oldest one may be if none may yet.
    fn victims(&self, owner: &str, now: SystemTime) -> (Vec<UploadId>, SystemTime, u64) {
        let idle = self.limits.evict_idle;
        let idle_before = now.checked_sub(idle).unwrap_or(SystemTime::UNIX_EPOCH);
        let mut theirs: Vec<(&UploadId, SystemTime)> = self
            .sessions
            .iter()
            .filter(|(_, e)| &*e.owner == owner)
            .map(|(id, e)| (id, e.last))
            .collect();
        theirs.sort_by_key(|(_, last)| *last);
        let retry_after = theirs
            .first()
            .and_then(|(_, last)| last.checked_add(idle)?.duration_since(now).ok())
            .map_or(1, |wait| wait.as_secs().max(1));
        let victims = theirs
            .into_iter()
            .filter(|(_, last)| *last <= idle_before)
            .map(|(id, _)| id.clone())
            .collect();
        (victims, idle_before, retry_after)
    }
}

impl Open {
    pub(crate) fn with(sessions: Vec<(UploadId, Entry)>) -> Open {
        let mut state = OpenState::default();
        for (id, entry) in sessions {
            state.insert(id, entry);
        }
        Open {
            state: Mutex::new(state),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, OpenState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn set_limits(&self, limits: UploadLimits) {
        self.state().limits = limits;
    }

    pub(crate) fn limits(&self) -> UploadLimits {
        self.state().limits
    }

    pub(crate) fn len(&self) -> usize {
        self.state().sessions.len()
    }

    /// Count one more session for `owner`, unless that would pass a cap. One step under the
    /// lock, so two concurrent POSTs cannot both take the last slot.
    pub(crate) fn reserve(
        &self,
        id: &UploadId,
        owner: &str,
        repo: &RepoName,
        algorithm: Option<Algorithm>,
        now: SystemTime,
    ) -> Result<(), Full> {
        let mut st = self.state();
        let held = st.per_owner.get(owner).copied().unwrap_or(0);
        if let Some(max) = st.limits.max_per_owner.filter(|&m| held >= m) {
            let (victims, idle_before, retry_after) = st.victims(owner, now);
            return Err(Full {
                limit: max,
                per_owner: true,
                victims,
                idle_before,
                retry_after,
            });
        }
        if let Some(max) = st.limits.max_open.filter(|&m| st.sessions.len() >= m) {
            // The backstop is full: room comes out of whoever holds the most.
            let biggest = st
                .per_owner
                .iter()
                .max_by_key(|(_, n)| **n)
                .map(|(o, _)| Arc::clone(o))
                .unwrap_or_else(|| owner.into());
            let (victims, idle_before, retry_after) = st.victims(&biggest, now);
            return Err(Full {
                limit: max,
                per_owner: false,
                victims,
                idle_before,
                retry_after,
            });
        }
        st.insert(
            id.clone(),
            Entry {
                owner: owner.into(),
                repo: Some(repo.clone()),
                started: now,
                last: now,
                size: 0,
                algorithm,
                writers: 0,
            },
        );
        Ok(())
    }

    /// Count a session another process opened (sessions shared between replicas), unless
    /// it is counted already. Not against the caps: it is open whatever this process says.
    pub(crate) fn adopt(&self, id: UploadId, entry: Entry) {
        let mut st = self.state();
        if !st.sessions.contains_key(&id) {
            st.insert(id, entry);
        }
    }

    /// Agree with the backend's listing of sessions other processes open and close too:
    /// every listed session counted, with its size and last write as listed; one counted
    /// here but not listed released, unless it began after `since` (the listing may have
    /// missed it; a released one still open is adopted again at its next request).
    pub(crate) fn sync(&self, listed: Vec<(UploadId, Entry)>, since: SystemTime) {
        let mut st = self.state();
        let ids: HashSet<&UploadId> = listed.iter().map(|(id, _)| id).collect();
        let gone: Vec<UploadId> = st
            .sessions
            .iter()
            .filter(|(id, e)| !ids.contains(id) && e.started < since)
            .map(|(id, _)| id.clone())
            .collect();
        for id in &gone {
            st.remove(id);
        }
        for (id, entry) in listed {
            match st.sessions.get_mut(&id) {
                Some(e) => {
                    e.size = entry.size;
                    e.last = e.last.max(entry.last);
                }
                None => st.insert(id, entry),
            }
        }
    }

    /// One session directory is gone. `false` if the session was not counted (already
    /// released): a double removal must not free two slots.
    pub(crate) fn release(&self, id: &UploadId) -> bool {
        self.state().remove(id)
    }

    /// Count a request writing to `id` until the returned guard drops (also when the
    /// request is cancelled midway).
    pub(crate) fn writing<'a>(&'a self, id: &UploadId) -> Writing<'a> {
        if let Some(e) = self.state().sessions.get_mut(id) {
            e.writers = e.writers.saturating_add(1);
        }
        Writing {
            open: self,
            id: id.clone(),
        }
    }

    /// Whether a request of this process is writing to `id` now.
    pub(crate) fn is_writing(&self, id: &UploadId) -> bool {
        self.state().sessions.get(id).is_some_and(|e| e.writers > 0)
    }

    pub(crate) fn touch(&self, id: &UploadId, now: SystemTime) {
        if let Some(e) = self.state().sessions.get_mut(id) {
            e.last = now;
        }
    }

    /// The session now holds `size` bytes (a chunk landed).
    pub(crate) fn set_size(&self, id: &UploadId, size: u64) {
        if let Some(e) = self.state().sessions.get_mut(id) {
            e.size = size;
        }
    }

    /// `id`'s entry if it is open for `repo`; a half-made session (no repository) is
    /// nobody's.
    pub(crate) fn get(&self, repo: &RepoName, id: &UploadId) -> Option<Entry> {
        self.state()
            .sessions
            .get(id)
            .filter(|e| e.repo.as_ref() == Some(repo))
            .cloned()
    }

    /// Session `id`, whatever its repository (callers that address sessions by id alone).
    pub(crate) fn by_id(&self, id: &UploadId) -> Option<Entry> {
        self.state().sessions.get(id).cloned()
    }

    pub(crate) fn contains(&self, id: &UploadId) -> bool {
        self.state().sessions.contains_key(id)
    }

    /// When the session was last written, if it is open.
    pub(crate) fn last_write(&self, id: &UploadId) -> Option<SystemTime> {
        self.state().sessions.get(id).map(|e| e.last)
    }

    pub(crate) fn list(&self) -> Vec<(UploadId, Entry)> {
        self.state()
            .sessions
            .iter()
            .map(|(id, e)| (id.clone(), e.clone()))
            .collect()
    }

    pub(crate) fn has_repo(&self, repo: &RepoName) -> bool {
        self.state()
            .sessions
            .values()
            .any(|e| e.repo.as_ref() == Some(repo))
    }

    /// Stop counting every session of `repo` and return them, for removal.
    pub(crate) fn take_repo(&self, repo: &RepoName) -> Vec<UploadId> {
        let mut st = self.state();
        let ids: Vec<UploadId> = st
            .sessions
            .iter()
            .filter(|(_, e)| e.repo.as_ref() == Some(repo))
            .map(|(id, _)| id.clone())
            .collect();
        for id in &ids {
            st.remove(id);
        }
        ids
    }
}

/// A request writing to a session, counted by [`Open::writing`].
pub(crate) struct Writing<'a> {
    open: &'a Open,
    id: UploadId,
}

impl Drop for Writing<'_> {
    fn drop(&mut self) {
        if let Some(e) = self.open.state().sessions.get_mut(&self.id) {
            e.writers = e.writers.saturating_sub(1);
        }
    }
}

/// An open upload session, as the admin API lists it. Times are seconds since the epoch.
#[derive(Clone, Debug, Serialize)]
pub struct UploadSession {
    pub id: UploadId,
    /// `None` for a half-made session (its `info.json` unreadable); expiry removes it.
    pub repository: Option<RepoName>,
    /// Who opened it, as the server named them (a user, or a client address).
    pub owner: String,
    /// Bytes received so far.
    pub size: u64,
    pub started: u64,
    pub last_write: u64,
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Store {
    /// Count a new session for `owner`, expiring idle sessions of the owner holding the most
    /// when a cap is reached (see [`Store::start_upload`]).
    pub(crate) async fn reserve_upload(
        &self,
        id: &UploadId,
        owner: &str,
        repo: &RepoName,
        algorithm: Option<Algorithm>,
    ) -> Result<(), StoreError> {
        let open = &self.inner.open_uploads;
        // A few rounds at most: a slot freed here may be taken by a concurrent POST first.
        for _ in 0..3 {
            let full = match open.reserve(id, owner, repo, algorithm, SystemTime::now()) {
                Ok(()) => return Ok(()),
                Err(full) => full,
            };
            let mut freed = false;
            for victim in &full.victims {
                if self.evict_upload(victim, full.idle_before).await? {
                    freed = true;
                    break;
                }
            }
            if !freed {
                return Err(full.into_error());
            }
        }
        open.reserve(id, owner, repo, algorithm, SystemTime::now())
            .map_err(Full::into_error)
    }

    /// Expire `id` if it is still idle since `idle_before` (a chunk in flight touched it
    /// when it started, so a session being written is never idle).
    async fn evict_upload(
        &self,
        id: &UploadId,
        idle_before: SystemTime,
    ) -> Result<bool, StoreError> {
        if self
            .inner
            .open_uploads
            .last_write(id)
            .is_none_or(|t| t > idle_before)
        {
            return Ok(false);
        }
        if let Err(e) = self.inner.blobs.abort(id).await {
            // Still counted, as any session whose directory stays; expiry retries it.
            tracing::warn!(upload = %id, error = %e, "cannot expire an idle upload session");
            return Ok(false);
        }
        if self.inner.open_uploads.release(id) {
            tracing::info!(upload = %id, "expired an idle upload session to make room under a cap");
        }
        Ok(true)
    }

    /// Every open session (of `repo` only, if given), oldest first. With sessions shared
    /// between replicas, those the others opened too (the backend's listing).
    pub async fn list_uploads(&self, repo: Option<&RepoName>) -> Vec<UploadSession> {
        if self.inner.blobs.shared_sessions() {
            let since = SystemTime::now();
            match self.inner.blobs.sessions().await {
                Ok(records) => self.inner.open_uploads.sync(entries(records), since),
                Err(e) => tracing::warn!(
                    error = %e,
                    "cannot list the shared upload sessions; listing this replica's"
                ),
            }
        }
        let mut entries = self.inner.open_uploads.list();
        if let Some(repo) = repo {
            entries.retain(|(_, e)| e.repo.as_ref() == Some(repo));
        }
        let mut sessions: Vec<UploadSession> = entries
            .into_iter()
            .map(|(id, e)| UploadSession {
                id,
                repository: e.repo,
                owner: e.owner.to_string(),
                size: e.size,
                started: unix(e.started),
                last_write: unix(e.last),
            })
            .collect();
        sessions.sort_by(|a, b| (a.started, a.id.as_str()).cmp(&(b.started, b.id.as_str())));
        sessions
    }

    /// Cancel a session whoever opened it and whatever it is doing (an admin's cancel): a
    /// write in flight fails, a finish in flight links nothing.
    pub async fn cancel_upload_by_id(&self, id: &UploadId) -> Result<(), StoreError> {
        if !self.inner.open_uploads.release(id) {
            return Err(StoreError::UploadUnknown);
        }
        self.remove_sessions(vec![id.clone()]).await;
        Ok(())
    }

    /// Remove sessions no longer counted. One that cannot be removed now is logged; expiry
    /// removes it later.
    pub(crate) async fn remove_sessions(&self, ids: Vec<UploadId>) {
        for id in ids {
            if let Err(e) = self.inner.blobs.abort(&id).await {
                tracing::warn!(upload = %id, error = %e, "cannot remove a cancelled upload session");
            }
        }
    }
}

/// The store's view of the sessions a backend holds (at open): owner, repository and
/// algorithm from the store's own record (`info`), times and size from the backend.
pub(crate) fn entries(records: Vec<SessionRecord>) -> Vec<(UploadId, Entry)> {
    records
        .into_iter()
        .map(|r| {
            let info: Option<Info> = serde_json::from_slice(&r.info).ok();
            let entry = Entry {
                owner: info
                    .as_ref()
                    .and_then(|i| i.owner.as_deref())
                    .unwrap_or("")
                    .into(),
                algorithm: info.as_ref().and_then(|i| i.algorithm),
                repo: info.map(|i| i.repo),
                started: r.started,
                last: r.last_write,
                size: r.size,
                writers: 0,
            };
            (r.id, entry)
        })
        .collect()
}

pub(crate) fn data_path(dir: &Path) -> PathBuf {
    dir.join("data")
}

pub(crate) fn info_path(dir: &Path) -> PathBuf {
    dir.join("info.json")
}

/// Fill a new session directory: an empty `data` and the store's `info` record.
pub(crate) fn create(dir: &Path, info: &[u8]) -> io::Result<()> {
    fs::create_dir_all(dir)?;
    File::create(data_path(dir))?;
    fs::write(info_path(dir), info)
}

/// Writes go to explicit offsets (the session's current length), not `O_APPEND`.
pub(crate) fn open_write(dir: &Path) -> io::Result<File> {
    OpenOptions::new().write(true).open(data_path(dir))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout;
    use crate::Digest;

    fn name(s: &str) -> RepoName {
        RepoName::parse(s).expect("name")
    }

    fn limits(per_owner: usize, total: usize, evict_idle: Duration) -> UploadLimits {
        UploadLimits {
            max_open: Some(total),
            max_per_owner: Some(per_owner),
            evict_idle,
        }
    }

    fn refused(r: Result<UploadId, StoreError>) -> (bool, u64) {
        match r {
            Err(StoreError::TooManyUploads {
                per_client,
                retry_after,
                ..
            }) => (per_client, retry_after),
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    /// Issue 10, defect 15: one client's sessions filled the one registry-wide cap and
    /// every other push got 429 for up to a day. Now a client is capped on its own, and at
    /// any cap only the biggest holder's idle sessions make room.
    #[tokio::test]
    async fn one_client_cannot_take_every_upload_slot() {
        let dir = tempfile::tempdir().expect("tempdir");
        let repo = name("r");
        {
            let s = Store::open(dir.path()).await.expect("open");
            s.set_upload_limits(limits(2, 3, Duration::from_secs(3600)));
            for _ in 0..2 {
                s.start_upload(&repo, None, "addr:10.0.0.66")
                    .await
                    .expect("mallory");
            }
            let (per_client, retry_after) =
                refused(s.start_upload(&repo, None, "addr:10.0.0.66").await);
            assert!(per_client);
            assert!(
                (3500..=3600).contains(&retry_after),
                "until her oldest may expire: {retry_after}"
            );
            s.start_upload(&repo, None, "user:alice")
                .await
                .expect("another client is not refused");
            // The backstop is full and nothing is idle: refused, nothing cut short.
            let (per_client, _) = refused(s.start_upload(&repo, None, "user:bob").await);
            assert!(!per_client);
            assert_eq!(s.open_uploads(), 3);
        }
        // Owners are on disk: a restarted store still knows who holds what.
        let s = Store::open(dir.path()).await.expect("reopen");
        s.set_upload_limits(limits(2, 3, Duration::ZERO));
        assert_eq!(s.open_uploads(), 3);
        // Idle sessions make room: bob's POST expires one of the biggest holder's.
        let bob = s
            .start_upload(&repo, None, "user:bob")
            .await
            .expect("room made from mallory's idle sessions");
        let after = s.list_uploads(None).await;
        let count = |who: &str| after.iter().filter(|u| u.owner == who).count();
        assert_eq!(
            (
                count("addr:10.0.0.66"),
                count("user:alice"),
                count("user:bob")
            ),
            (1, 1, 1),
            "{after:?}"
        );
        assert!(after.iter().any(|u| u.id == bob));
        // At her own cap a client makes room out of her own idle sessions only.
        s.set_upload_limits(limits(1, 10, Duration::ZERO));
        s.start_upload(&repo, None, "user:alice")
            .await
            .expect("alice replaces her idle session");
        assert_eq!(s.open_uploads(), 3);
    }

    /// Issue 10, defect 16: a repository delete left its sessions open, and finishing one
    /// brought the repository back.
    #[tokio::test]
    async fn deleting_a_repository_cancels_its_upload_sessions() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = Store::open(dir.path()).await.expect("open");
        let (repo, other) = (name("doomed"), name("kept"));
        let body = b"late bytes";
        let d = Digest::of(Algorithm::Sha256, body);
        s.push_blob(&repo, &Digest::of(Algorithm::Sha256, b"x"), &b"x"[..])
            .await
            .expect("push");
        let id = s.start_upload(&repo, None, "t").await.expect("start");
        s.append_upload(&repo, &id, None, None, &body[..])
            .await
            .expect("chunk");
        let kept = s.start_upload(&other, None, "t").await.expect("start");
        let only_sessions = name("sessions/only");
        s.start_upload(&only_sessions, None, "t")
            .await
            .expect("start");
        s.delete_repo(&repo).await.expect("delete");
        assert!(matches!(
            s.finish_upload(&repo, &id, &d, &b""[..]).await,
            Err(StoreError::UploadUnknown)
        ));
        assert!(
            !s.repo_exists(&repo),
            "finishing brought the repository back"
        );
        assert!(!layout::upload_dir(dir.path(), &id).exists());
        // A repository with nothing but sessions can be deleted too.
        s.delete_repo(&only_sessions).await.expect("sessions only");
        assert_eq!(s.open_uploads(), 1);
        assert_eq!(s.upload_status(&other, &kept).await.expect("other repo"), 0);
        assert!(matches!(
            s.delete_repo(&only_sessions).await,
            Err(StoreError::NameUnknown(_))
        ));
    }

    #[tokio::test]
    async fn admin_lists_and_cancels_any_session() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = Store::open(dir.path()).await.expect("open");
        let repo = name("r");
        let id = s
            .start_upload(&repo, None, "user:carol")
            .await
            .expect("start");
        s.append_upload(&repo, &id, None, None, &b"12345"[..])
            .await
            .expect("chunk");
        let listed = s.list_uploads(Some(&repo)).await;
        assert_eq!(listed.len(), 1);
        assert_eq!(
            (listed[0].owner.as_str(), listed[0].size),
            ("user:carol", 5)
        );
        assert!(s.list_uploads(Some(&name("other"))).await.is_empty());
        s.cancel_upload_by_id(&id).await.expect("cancel");
        assert!(matches!(
            s.cancel_upload_by_id(&id).await,
            Err(StoreError::UploadUnknown)
        ));
        assert!(s.upload_status(&repo, &id).await.is_err());
        assert_eq!(s.open_uploads(), 0);
    }
}
