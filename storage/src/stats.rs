//! What the store holds, counted for monitoring: per repository and in all, the blobs and
//! manifests and their bytes. Counted from the in-memory metadata; a blob's size is read
//! from its file once and remembered by the caller's [`SizeCache`] (a digest's file never
//! changes), so a count after the first costs map lookups, not disk reads.

use std::collections::HashMap;

use crate::{layout, Digest, RepoName, Store};

/// One repository's holdings. A blob shared by repositories counts in each of them, so the
/// repositories' bytes may add up to more than [`StoreStats::bytes`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepoStats {
    pub name: RepoName,
    /// Blobs linked into the repository.
    pub blobs: u64,
    pub manifests: u64,
    pub tags: u64,
    /// Bytes of its blobs and manifests.
    pub bytes: u64,
}

/// The whole store: every distinct blob and manifest counted once.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoreStats {
    pub repositories: Vec<RepoStats>,
    pub blobs: u64,
    pub manifests: u64,
    pub bytes: u64,
}

/// Blob sizes read so far, kept by the caller between counts. Entries of digests no
/// repository links any more are dropped at each count, so it never outgrows the store.
#[derive(Debug, Default)]
pub struct SizeCache {
    /// digest → (size, the count that last saw it linked)
    sizes: HashMap<Digest, (u64, u64)>,
    round: u64,
}

impl Store {
    /// Count what the store holds. Reads files (the sizes of blobs not yet in `cache`), so
    /// call it on a blocking thread. The metadata read lock is taken twice, briefly, and
    /// never across a file read.
    pub fn stats(&self, cache: &mut SizeCache) -> StoreStats {
        let unknown: Vec<Digest> = {
            let state = self.inner.meta.read();
            let mut seen = std::collections::HashSet::new();
            state
                .repos
                .values()
                .flat_map(|r| r.blobs.iter())
                .filter(|d| !cache.sizes.contains_key(*d) && seen.insert(*d))
                .cloned()
                .collect()
        };
        for d in unknown {
            // A blob deleted since (GC, a blob delete) is no longer linked below either.
            if let Ok(m) = std::fs::metadata(layout::blob_path(&self.inner.root, &d)) {
                cache.sizes.insert(d, (m.len(), 0));
            }
        }
        cache.round += 1;
        let round = cache.round;
        let mut out = StoreStats::default();
        let mut manifests_seen = std::collections::HashSet::new();
        let state = self.inner.meta.read();
        for (name, repo) in &state.repos {
            let mut r = RepoStats {
                name: name.clone(),
                blobs: repo.blobs.len() as u64,
                manifests: repo.manifests.len() as u64,
                tags: repo.tags.len() as u64,
                bytes: 0,
            };
            for d in &repo.blobs {
                if let Some((size, last)) = cache.sizes.get_mut(d) {
                    r.bytes = r.bytes.saturating_add(*size);
                    if *last != round {
                        *last = round;
                        out.blobs += 1;
                        out.bytes = out.bytes.saturating_add(*size);
                    }
                }
            }
            for (d, m) in &repo.manifests {
                r.bytes = r.bytes.saturating_add(m.size);
                if manifests_seen.insert(d) {
                    out.manifests += 1;
                    out.bytes = out.bytes.saturating_add(m.size);
                }
            }
            out.repositories.push(r);
        }
        drop(state);
        cache.sizes.retain(|_, (_, last)| *last == round);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Algorithm, Reference, OCI_MANIFEST};

    #[tokio::test]
    async fn counts_shared_blobs_once_in_all_and_in_each_repository() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).await.expect("open");
        let a = RepoName::parse("a").expect("name");
        let b = RepoName::parse("b/c").expect("name");
        let push = |repo: &RepoName, bytes: &'static [u8]| {
            let (store, repo) = (store.clone(), repo.clone());
            async move {
                let d = Digest::of(Algorithm::Sha256, bytes);
                store.push_blob(&repo, &d, bytes).await.expect("push");
                d
            }
        };
        let config = push(&a, b"{}").await;
        let layer = push(&a, &[7u8; 1000]).await;
        push(&b, &[7u8; 1000]).await;
        let m = format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{{"mediaType":"x","digest":"{config}","size":2}},"layers":[{{"mediaType":"y","digest":"{layer}","size":1000}}]}}"#
        );
        let reference = Reference::parse("v1").expect("tag");
        store
            .put_manifest(&a, &reference, OCI_MANIFEST, m.as_bytes(), &[], true)
            .await
            .expect("put");
        let mut cache = SizeCache::default();
        let s = store.stats(&mut cache);
        let m_len = m.len() as u64;
        assert_eq!((s.blobs, s.manifests, s.bytes), (2, 1, 1002 + m_len));
        assert_eq!(s.repositories.len(), 2);
        assert_eq!(s.repositories[0].bytes, 1002 + m_len);
        assert_eq!(
            (s.repositories[0].blobs, s.repositories[0].manifests),
            (2, 1)
        );
        assert_eq!(s.repositories[1].bytes, 1000);
        // Sizes are remembered; a repository's removal drops what only it held.
        assert_eq!(store.stats(&mut cache), s);
        store.delete_repo(&b).await.expect("delete");
        store.delete_repo(&a).await.expect("delete");
        let s = store.stats(&mut cache);
        assert_eq!(s, StoreStats::default());
        assert!(cache.sizes.is_empty());
    }
}
