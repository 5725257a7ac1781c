//! Upload sessions: bytes received so far live on disk under `uploads/<id>/`, so a session
//! survives a restart; the running hash lives in memory and is rebuilt from disk if lost.

use std::collections::HashMap;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::{Algorithm, Hasher, RepoName, StoreError};

/// An upload session id: 32 lowercase hex characters, safe as a directory name.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
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

/// How many sessions exist on disk, and the most that may (0: no cap). Kept equal to the
/// number of session directories: counted once at open, +1 when a session is created, -1 only
/// by the caller whose removal of a session directory succeeded (finish, cancel, a digest
/// mismatch, expiry), so a session that could not be removed keeps counting until expiry
/// removes it.
#[derive(Default)]
pub(crate) struct OpenCount {
    open: AtomicUsize,
    max: AtomicUsize,
}

impl OpenCount {
    pub(crate) fn starting_at(open: usize) -> OpenCount {
        OpenCount {
            open: AtomicUsize::new(open),
            max: AtomicUsize::new(0),
        }
    }

    pub(crate) fn set_max(&self, max: Option<usize>) {
        self.max.store(max.unwrap_or(0), Ordering::Relaxed);
    }

    pub(crate) fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// Count one more session, unless that would pass the cap. One atomic step, so two
    /// concurrent POSTs cannot both take the last slot.
    pub(crate) fn reserve(&self) -> Result<(), StoreError> {
        let max = self.max.load(Ordering::Relaxed);
        self.open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (max == 0 || n < max).then_some(n + 1)
            })
            .map(|_| ())
            .map_err(|_| StoreError::TooManyUploads(max))
    }

    /// One session directory is gone. Saturating: a double removal must not wrap around.
    pub(crate) fn release(&self) {
        let _ = self
            .open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
    }
}

/// Session directories under `uploads/` (names that are valid ids), for the count at open.
pub(crate) fn count_on_disk(uploads: &Path) -> io::Result<usize> {
    let mut n = 0;
    for entry in fs::read_dir(uploads)? {
        if UploadId::parse(&entry?.file_name().to_string_lossy()).is_ok() {
            n += 1;
        }
    }
    Ok(n)
}

pub(crate) fn data_path(dir: &Path) -> PathBuf {
    dir.join("data")
}

pub(crate) fn create(dir: &Path, info: &Info) -> io::Result<()> {
    fs::create_dir_all(dir)?;
    File::create(data_path(dir))?;
    let json = serde_json::to_vec(info).map_err(io::Error::other)?;
    fs::write(dir.join("info.json"), json)
}

pub(crate) fn read_info(dir: &Path) -> Result<Info, StoreError> {
    match fs::read(dir.join("info.json")) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|_| StoreError::UploadUnknown),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Err(StoreError::UploadUnknown),
        Err(e) => Err(e.into()),
    }
}

/// Writes go to explicit offsets (the session's current length), not `O_APPEND`.
pub(crate) fn open_write(dir: &Path) -> io::Result<File> {
    OpenOptions::new().write(true).open(data_path(dir))
}
