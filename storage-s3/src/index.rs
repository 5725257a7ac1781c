//! The object index: which blobs live at `objects/<upload-id>` rather than under their
//! digest key. It is kept in the bucket, one small object per blob,
//! `PREFIX/_state/index/<alg>/<hex>` holding the upload id, created with `If-None-Match: *`
//! before the blob counts as stored: every replica over the bucket finds the blob of a
//! session another one finished, and a restart loses nothing. Blobs under `blobs/…` need no
//! entry: their key is their digest.
//!
//! Each process keeps in memory what it wrote or looked up (digest → object never changes
//! while the blob lives). A cached entry is only a hint: when its object is missing (GC
//! deleted the blob through another replica) it is dropped and the bucket asked again.
//! Absence is never cached, since another replica may store the blob at any time.
//!
//! A crash between completing an object and recording it leaves an object no entry names;
//! nothing can reach it, and GC's leftover sweep deletes it (`leftovers.rs`).

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::io;
use std::path::Path as FsPath;
use std::sync::Mutex;

use airdock_storage::blobstore::DigestStream;
use airdock_storage::{Digest, StoreError, UploadId};
use futures_util::stream::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload, UpdateVersion};

use crate::{s3_error, S3Blobs};

/// The in-memory hints. std Mutex: map lookups and inserts only, never across an `.await`.
#[derive(Default)]
pub(crate) struct Index {
    cache: Mutex<HashMap<Digest, UploadId>>,
}

impl Index {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<Digest, UploadId>> {
        // A panic while holding it cannot leave the map half-updated (single inserts).
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn cached(&self, d: &Digest) -> Option<UploadId> {
        self.map().get(d).cloned()
    }

    fn remember(&self, d: &Digest, id: &UploadId) {
        self.map().insert(d.clone(), id.clone());
    }

    fn forget(&self, d: &Digest) {
        self.map().remove(d);
    }
}

fn is_not_found(e: &object_store::Error) -> bool {
    matches!(e, object_store::Error::NotFound { .. })
}

impl S3Blobs {
    /// `PREFIX/_state/index/<alg>/<hex>`: built from a validated digest only.
    fn index_key(&self, d: &Digest) -> Path {
        self.key(&format!("_state/index/{}/{}", d.algorithm(), &*d.hex()))
    }

    /// Run `op` on the object holding blob `d` (a cached session object, else its digest
    /// key, else the session object the bucket's index names), moving on when the object
    /// is not found. `None`: the blob is nowhere.
    pub(crate) async fn at_blob<T, F, Fut>(
        &self,
        d: &Digest,
        op: F,
    ) -> Result<Option<(Path, T)>, object_store::Error>
    where
        F: Fn(Path) -> Fut,
        Fut: Future<Output = Result<T, object_store::Error>>,
    {
        if let Some(id) = self.inner.index.cached(d) {
            let key = self.object_key(&id);
            match op(key.clone()).await {
                Err(e) if is_not_found(&e) => self.inner.index.forget(d),
                r => return r.map(|t| Some((key, t))),
            }
        }
        // Both at once: one round trip for a blob under its digest key and for an absent
        // one (a push's `HEAD` before each layer), two for a session's blob not yet seen.
        let key = self.blob_key(d);
        let (direct, indexed) = tokio::join!(op(key.clone()), self.index_lookup(d));
        match direct {
            Err(e) if is_not_found(&e) => {}
            r => return r.map(|t| Some((key, t))),
        }
        let Some(id) = indexed? else {
            return Ok(None);
        };
        let key = self.object_key(&id);
        match op(key.clone()).await {
            Err(e) if is_not_found(&e) => Ok(None),
            r => r.map(|t| Some((key, t))),
        }
    }

    /// The bucket's index entry for `d`, remembered when found.
    async fn index_lookup(&self, d: &Digest) -> Result<Option<UploadId>, object_store::Error> {
        let id = self.index_read(d).await?;
        if let Some(id) = &id {
            self.inner.index.remember(d, id);
        }
        Ok(id)
    }

    /// The bucket's index entry for `d`.
    async fn index_read(&self, d: &Digest) -> Result<Option<UploadId>, object_store::Error> {
        let key = self.index_key(d);
        let body = match self.inner.s3.get(&key).await {
            Ok(got) => got.bytes().await?,
            Err(e) if is_not_found(&e) => return Ok(None),
            Err(e) => return Err(e),
        };
        let id = std::str::from_utf8(&body)
            .ok()
            .and_then(|s| UploadId::parse(s.trim()).ok())
            .ok_or_else(|| object_store::Error::Generic {
                store: "S3",
                source: format!("index entry {key} holds {body:?}, not an upload id").into(),
            })?;
        Ok(Some(id))
    }

    /// Record that blob `d` is session `id`'s completed object. Returns `true` if another
    /// object already held `d` (a concurrent session of the same blob on another replica):
    /// `id`'s object is then deleted and the blob stays where it was.
    pub(crate) async fn index_insert(&self, d: &Digest, id: &UploadId) -> Result<bool, StoreError> {
        let key = self.index_key(d);
        let create = PutOptions {
            mode: PutMode::Create,
            ..PutOptions::default()
        };
        let body = PutPayload::from(id.as_str().to_owned());
        match self.inner.s3.put_opts(&key, body.clone(), create).await {
            Ok(_) => {
                self.inner.index.remember(d, id);
                return Ok(false);
            }
            Err(object_store::Error::AlreadyExists { .. }) => {}
            Err(e) => return Err(s3_error(e)),
        }
        let got = self.inner.s3.get(&key).await.map_err(s3_error)?;
        let etag = got.meta.e_tag.clone();
        let held = got.bytes().await.map_err(s3_error)?;
        let other = std::str::from_utf8(&held)
            .ok()
            .and_then(|s| UploadId::parse(s.trim()).ok());
        match &other {
            // An earlier attempt of this finish recorded it.
            Some(o) if o == id => {
                self.inner.index.remember(d, id);
                return Ok(false);
            }
            Some(o) if self.inner.s3.head(&self.object_key(o)).await.is_ok() => {
                let _ = self.inner.s3.delete(&self.object_key(id)).await;
                self.inner.index.remember(d, o);
                return Ok(true);
            }
            _ => {}
        }
        // An entry whose object is gone (a delete that crashed halfway): replaced, unless
        // someone else replaced it first.
        let update = PutOptions {
            mode: PutMode::Update(UpdateVersion {
                e_tag: etag,
                version: None,
            }),
            ..PutOptions::default()
        };
        match self.inner.s3.put_opts(&key, body, update).await {
            Ok(_) => {
                self.inner.index.remember(d, id);
                Ok(false)
            }
            Err(object_store::Error::Precondition { .. }) => {
                // Recorded by a concurrent finish of the same blob meanwhile.
                let _ = self.inner.s3.delete(&self.object_key(id)).await;
                Ok(true)
            }
            Err(e) => Err(s3_error(e)),
        }
    }

    /// Delete blob `d` wherever it is: its digest key, and its session object and index
    /// entry (the object first: a crash in between leaves an entry whose object is missing,
    /// which reads as "not stored").
    pub(crate) async fn delete_everywhere(&self, d: &Digest) -> Result<(), StoreError> {
        let gone = |r: Result<(), object_store::Error>| match r {
            Ok(()) => Ok(()),
            Err(e) if is_not_found(&e) => Ok(()),
            Err(e) => Err(s3_error(e)),
        };
        gone(self.inner.s3.delete(&self.blob_key(d)).await)?;
        if let Some(id) = self.index_lookup(d).await.map_err(s3_error)? {
            gone(self.inner.s3.delete(&self.object_key(&id)).await)?;
            gone(self.inner.s3.delete(&self.index_key(d)).await)?;
        }
        self.inner.index.forget(d);
        Ok(())
    }

    /// The digests the bucket's index names (GC and fsck only).
    pub(crate) fn list_indexed(&self) -> DigestStream<'_> {
        let prefix = self.key("_state/index");
        Box::pin(self.inner.s3.list(Some(&prefix)).filter_map(move |meta| {
            let r = match meta {
                Err(e) => Some(Err(s3_error(e))),
                Ok(meta) => {
                    let parts: Vec<_> = meta.location.parts().collect();
                    let d = match parts.as_slice() {
                        [.., alg, hex] => {
                            Digest::parse(&format!("{}:{}", alg.as_ref(), hex.as_ref())).ok()
                        }
                        _ => None,
                    };
                    d.filter(|d| self.index_key(d) == meta.location).map(Ok)
                }
            };
            std::future::ready(r)
        }))
    }

    /// The upload ids the bucket's index names (the leftover sweep only): a listing of
    /// `_state/index/`, then each entry (not cached: hints are for request paths). One
    /// removed meanwhile names nothing.
    pub(crate) async fn indexed_uploads(&self) -> Result<HashSet<UploadId>, StoreError> {
        let ids: Vec<Option<UploadId>> = self
            .list_indexed()
            .map(|d| async move { self.index_read(&d?).await.map_err(s3_error) })
            .buffer_unordered(16)
            .try_collect()
            .await?;
        Ok(ids.into_iter().flatten().collect())
    }

    /// The index an earlier version kept on local disk (`<state-dir>/objects`), moved into
    /// the bucket once (entries the bucket already has are kept) and then renamed aside, so an
    /// upgrade loses no blob.
    pub(crate) async fn migrate_local_index(&self, path: &FsPath) -> Result<(), StoreError> {
        let p = path.to_path_buf();
        let Some(entries) = tokio::task::spawn_blocking(move || load(&p))
            .await
            .map_err(io::Error::other)??
        else {
            return Ok(());
        };
        let n = entries.len();
        for (d, id) in entries {
            let opts = PutOptions {
                mode: PutMode::Create,
                ..PutOptions::default()
            };
            let body = PutPayload::from(id.as_str().to_owned());
            match self
                .inner
                .s3
                .put_opts(&self.index_key(&d), body, opts)
                .await
            {
                Ok(_) | Err(object_store::Error::AlreadyExists { .. }) => {}
                Err(e) => return Err(s3_error(e)),
            }
        }
        tokio::fs::rename(path, path.with_extension("moved-to-bucket")).await?;
        tracing::info!(entries = n, "moved the local object index into the bucket");
        Ok(())
    }
}

/// The old local index file: lines `<digest> <upload-id>`, or `<digest> -` once deleted;
/// a torn last line (power loss mid-append) was never acknowledged and is ignored. `None`
/// if there is no such file.
fn load(path: &FsPath) -> Result<Option<HashMap<Digest, UploadId>>, StoreError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let mut map = HashMap::new();
    let complete = text.rfind('\n').map_or(0, |i| i + 1);
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
    Ok(Some(map))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn old_index_files_replay_and_torn_lines_are_ignored() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("objects");
        assert!(load(&path).expect("absent").is_none());
        let a = Digest::of(Default::default(), b"a");
        let b = Digest::of(Default::default(), b"b");
        let id = UploadId::parse(&"ab".repeat(16)).expect("id");
        let mut f = std::fs::File::create(&path).expect("create");
        write!(f, "{a} {id}\n{b} {id}\n{b} -\nsha256:torn").expect("write");
        let map = load(&path).expect("load").expect("present");
        assert_eq!(map.get(&a), Some(&id));
        assert_eq!(map.len(), 1);
        std::fs::write(&path, "sha256:zz nothing\n").expect("write");
        assert!(matches!(load(&path), Err(StoreError::Corrupt(_))));
    }
}
