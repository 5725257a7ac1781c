//! The object index: which blobs live at `objects/<upload-id>` rather than under their
//! digest. An append-only file of lines `<digest> <upload-id>` (and `<digest> -` once the
//! blob is deleted), fsynced before the write it records is acknowledged and replayed into
//! memory at start. Blobs under `blobs/…` need no entry: their key is their digest.
//!
//! A crash between completing an object and recording it leaves an object no entry names;
//! nothing can reach it, and GC may sweep `objects/` for such keys.

use std::collections::HashMap;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use airdock_storage::{Digest, StoreError, UploadId};

pub(crate) struct Index {
    path: PathBuf,
    /// std Mutex: held for map lookups and one small append + fsync (in a blocking task),
    /// never across an `.await`.
    map: Arc<Mutex<HashMap<Digest, UploadId>>>,
    /// Where a torn last line starts (`u64::MAX`: none): cut off before the first append,
    /// or the next line would be glued to it and the index unreadable at the next start.
    torn: Arc<AtomicU64>,
}

impl Index {
    pub(crate) async fn open(path: &Path) -> Result<Index, StoreError> {
        let path = path.to_path_buf();
        let p = path.clone();
        let (map, torn) = tokio::task::spawn_blocking(move || load(&p))
            .await
            .map_err(io::Error::other)??;
        Ok(Index {
            path,
            map: Arc::new(Mutex::new(map)),
            torn: Arc::new(AtomicU64::new(torn.unwrap_or(u64::MAX))),
        })
    }

    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<Digest, UploadId>> {
        // A panic while holding it cannot leave the map half-updated (single inserts).
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn get(&self, d: &Digest) -> Option<UploadId> {
        self.map().get(d).cloned()
    }

    pub(crate) fn entries(&self) -> Vec<(Digest, UploadId)> {
        self.map()
            .iter()
            .map(|(d, id)| (d.clone(), id.clone()))
            .collect()
    }

    pub(crate) async fn insert(&self, d: &Digest, object: &UploadId) -> Result<(), StoreError> {
        self.append(format!("{d} {object}\n"), d.clone(), Some(object.clone()))
            .await
    }

    pub(crate) async fn remove(&self, d: &Digest) -> Result<(), StoreError> {
        if self.get(d).is_none() {
            return Ok(());
        }
        self.append(format!("{d} -\n"), d.clone(), None).await
    }

    async fn append(
        &self,
        line: String,
        d: Digest,
        object: Option<UploadId>,
    ) -> Result<(), StoreError> {
        let path = self.path.clone();
        let map = self.map.clone();
        let torn = self.torn.clone();
        tokio::task::spawn_blocking(move || -> io::Result<()> {
            let mut map = map.lock().unwrap_or_else(|p| p.into_inner());
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)?;
            let cut = torn.swap(u64::MAX, Ordering::SeqCst);
            if cut != u64::MAX {
                if let Err(e) = f.set_len(cut) {
                    torn.store(cut, Ordering::SeqCst);
                    return Err(e);
                }
            }
            f.write_all(line.as_bytes())?;
            f.sync_data()?;
            match object {
                Some(o) => map.insert(d, o),
                None => map.remove(&d),
            };
            Ok(())
        })
        .await
        .map_err(io::Error::other)??;
        Ok(())
    }
}

/// The entries, and where a torn last line starts if there is one.
fn load(path: &Path) -> Result<(HashMap<Digest, UploadId>, Option<u64>), StoreError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            return Ok((HashMap::new(), None));
        }
        Err(e) => return Err(e.into()),
    };
    let mut map = HashMap::new();
    let complete = text.len() - text.rfind('\n').map_or(text.len(), |i| text.len() - i - 1);
    for (n, line) in text[..complete].lines().enumerate() {
        let bad = || StoreError::Corrupt(format!("{} line {}: {line:?}", path.display(), n + 1));
        let (d, o) = line.split_once(' ').ok_or_else(bad)?;
        let d = Digest::parse(d).map_err(|_| bad())?;
        if o == "-" {
            map.remove(&d);
        } else {
            map.insert(d, UploadId::parse(o).map_err(|_| bad())?);
        }
    }
    // A torn last line (power loss mid-append) was never acknowledged: ignore it.
    let torn = (complete < text.len()).then_some(complete as u64);
    Ok((map, torn))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn entries_survive_reopen_and_torn_lines_are_ignored() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("s3/objects");
        let a = Digest::of(Default::default(), b"a");
        let b = Digest::of(Default::default(), b"b");
        let id = UploadId::parse(&"ab".repeat(16)).expect("id");
        {
            let ix = Index::open(&path).await.expect("open");
            ix.insert(&a, &id).await.expect("insert");
            ix.insert(&b, &id).await.expect("insert");
            ix.remove(&b).await.expect("remove");
        }
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .expect("open");
        f.write_all(b"sha256:torn").expect("write");
        let ix = Index::open(&path).await.expect("reopen");
        assert_eq!(ix.get(&a), Some(id.clone()));
        assert_eq!(ix.get(&b), None);
        assert_eq!(ix.entries().len(), 1);
        // The torn tail is cut off before the next line, which stays readable.
        ix.insert(&b, &id).await.expect("insert after a torn tail");
        let ix = Index::open(&path).await.expect("reopen again");
        assert_eq!(ix.entries().len(), 2);
    }

    #[tokio::test]
    async fn damaged_line_is_an_error() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("objects");
        std::fs::write(&path, "sha256:zz nothing\n").expect("write");
        assert!(matches!(
            Index::open(&path).await,
            Err(StoreError::Corrupt(_))
        ));
    }
}
