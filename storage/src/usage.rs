//! Disk usage per repository, computed from the metadata and one `stat` per stored blob:
//! no blob is read. A blob counts towards every repository that references it (a link, a
//! manifest's own bytes, a layer, a config or a child); it is `unique` to a repository
//! that alone references it and `shared` otherwise, so deleting a repository frees about
//! its unique bytes (after GC's grace window).
//!
//! A blob's size never changes (its name is its content's digest), so sizes once `stat`ed
//! are remembered ([`SizeCache`]): a later report `stat`s only blobs it has not seen, which
//! matters on S3, where each `stat` is a `HEAD` and `/metrics` asks on every scrape.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::io;
use std::sync::Mutex;

use serde::Serialize;

use crate::meta::State;
use crate::{layout, Digest, RepoName, Store, StoreError};

/// What the whole store and each repository use.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Usage {
    /// Distinct blob files some repository references (manifests included), and their bytes.
    pub blobs: u64,
    pub bytes: u64,
    /// Distinct manifests (one stored in two repositories counts once).
    pub manifests: u64,
    pub repositories: u64,
    /// Per repository, sorted by name; see [`Usage::page`] and [`Usage::top`].
    pub repos: Vec<RepoUsage>,
}

/// One repository's share of the store.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct RepoUsage {
    pub name: String,
    /// All the blobs it references: `unique_bytes + shared_bytes`.
    pub bytes: u64,
    pub blobs: u64,
    /// Blobs no other repository references: what deleting this one would free.
    pub unique_bytes: u64,
    pub unique_blobs: u64,
    /// Blobs some other repository references too.
    pub shared_bytes: u64,
    pub shared_blobs: u64,
    pub manifests: u64,
    pub tags: u64,
}

impl Usage {
    /// Keep the repositories after `last` (by name), at most `n`; true if more follow.
    pub fn page(&mut self, last: Option<&str>, n: Option<usize>) -> bool {
        if let Some(last) = last {
            self.repos.retain(|r| r.name.as_str() > last);
        }
        let n = n.unwrap_or(usize::MAX);
        let more = self.repos.len() > n;
        self.repos.truncate(n);
        more
    }

    /// Keep the `n` repositories using the most bytes, largest first (ties by name).
    pub fn top(&mut self, n: usize) {
        self.repos
            .sort_by(|a, b| b.bytes.cmp(&a.bytes).then_with(|| a.name.cmp(&b.name)));
        self.repos.truncate(n);
    }
}

/// Every digest `repo` references whose file may exist.
fn referenced(repo: &crate::meta::Repo) -> HashSet<&Digest> {
    let mut set: HashSet<&Digest> = repo.blobs.iter().collect();
    for (d, m) in &repo.manifests {
        set.insert(d);
        set.extend(m.blobs.iter().map(|b| &b.digest));
        set.extend(m.manifests.iter().map(|c| &c.digest));
    }
    set
}

/// A repository's name, the digests it references, its manifest and tag counts.
type Census = (RepoName, Vec<Digest>, u64, u64);

/// The digests of `state` per repository (name order) and how many repositories name each.
fn census(state: &State) -> (Vec<Census>, HashMap<Digest, u32>) {
    let mut holders: HashMap<Digest, u32> = HashMap::new();
    let mut repos = Vec::with_capacity(state.repos.len());
    for (name, repo) in &state.repos {
        let refs: Vec<Digest> = referenced(repo).into_iter().cloned().collect();
        for d in &refs {
            *holders.entry(d.clone()).or_default() += 1;
        }
        repos.push((
            name.clone(),
            refs,
            repo.manifests.len() as u64,
            repo.tags.len() as u64,
        ));
    }
    (repos, holders)
}

/// Sizes of referenced blobs seen by earlier reports. Bounded by what the metadata
/// references: each report keeps only the digests it counted. Forgotten for a blob fsck
/// quarantines (a corrupt file's length is not its content's); a blob GC deletes is no longer
/// referenced, and if it is pushed again its size is the same.
#[derive(Default)]
pub(crate) struct SizeCache(Mutex<HashMap<Digest, u64>>);

impl SizeCache {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Digest, u64>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The remembered sizes of `digests`.
    fn known<'a>(&self, digests: impl Iterator<Item = &'a Digest>) -> HashMap<Digest, u64> {
        let map = self.lock();
        digests
            .filter_map(|d| map.get(d).map(|&n| (d.clone(), n)))
            .collect()
    }

    /// Remember `sizes`, the whole set of sizes a report counted.
    fn replace(&self, sizes: HashMap<Digest, u64>) {
        *self.lock() = sizes;
    }

    pub(crate) fn forget(&self, digests: &[Digest]) {
        let mut map = self.lock();
        for d in digests {
            map.remove(d);
        }
    }
}

impl Store {
    /// Disk usage of every repository (sorted by name). The metadata is copied under the
    /// read lock; the sizes are `stat`ed afterwards on a blocking thread. A blob whose file
    /// is absent (a non-distributable layer, a sparse push's missing child) counts nothing.
    pub async fn usage(&self) -> Result<Usage, StoreError> {
        let (repos, holders, manifests) = {
            let state = self.inner.meta.read();
            let (repos, holders) = census(&state);
            let manifests: HashSet<&Digest> = state
                .repos
                .values()
                .flat_map(|r| r.manifests.keys())
                .collect();
            (repos, holders, manifests.len() as u64)
        };
        let root = self.inner.root.clone();
        let known = self.inner.sizes.known(holders.keys());
        let unseen: Vec<Digest> = holders
            .keys()
            .filter(|d| !known.contains_key(*d))
            .cloned()
            .collect();
        // Another backend than the filesystem is asked through the contract, a few stats
        // at a time (each an S3 `HEAD`); the filesystem in one blocking task.
        let found: HashMap<Digest, u64> = if self.inner.blobs.kind() == "filesystem" {
            tokio::task::spawn_blocking(move || -> Result<HashMap<Digest, u64>, StoreError> {
                let mut found = HashMap::with_capacity(unseen.len());
                for d in unseen {
                    match fs::metadata(layout::blob_path(&root, &d)) {
                        Ok(m) => {
                            found.insert(d, m.len());
                        }
                        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                        Err(e) => return Err(e.into()),
                    }
                }
                Ok(found)
            })
            .await
            .map_err(io::Error::other)??
        } else {
            use futures_util::{StreamExt, TryStreamExt};
            let blobs = &self.inner.blobs;
            let found: Vec<(Digest, u64)> = futures_util::stream::iter(unseen)
                .map(|d| async move { Ok::<_, StoreError>(blobs.stat(&d).await?.map(|n| (d, n))) })
                .buffer_unordered(16)
                .try_filter_map(|x| async move { Ok(x) })
                .try_collect()
                .await?;
            found.into_iter().collect()
        };
        let mut counted = known;
        counted.extend(found);
        self.inner.sizes.replace(counted.clone());
        tokio::task::spawn_blocking(move || -> Result<Usage, StoreError> {
            let sizes = counted;
            let mut usage = Usage {
                blobs: sizes.len() as u64,
                bytes: sizes.values().sum(),
                manifests,
                repositories: repos.len() as u64,
                repos: Vec::with_capacity(repos.len()),
            };
            for (name, refs, manifests, tags) in &repos {
                let mut r = RepoUsage {
                    name: name.to_string(),
                    manifests: *manifests,
                    tags: *tags,
                    ..RepoUsage::default()
                };
                for d in refs {
                    let Some(&size) = sizes.get(d) else { continue };
                    if holders.get(d).copied().unwrap_or(0) > 1 {
                        r.shared_blobs += 1;
                        r.shared_bytes += size;
                    } else {
                        r.unique_blobs += 1;
                        r.unique_bytes += size;
                    }
                }
                r.blobs = r.unique_blobs + r.shared_blobs;
                r.bytes = r.unique_bytes + r.shared_bytes;
                usage.repos.push(r);
            }
            Ok(usage)
        })
        .await
        .map_err(io::Error::other)?
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Algorithm, Reference, OCI_MANIFEST};

    fn sha(b: &[u8]) -> Digest {
        Digest::of(Algorithm::Sha256, b)
    }

    /// Push an image of `config` and `layers` into `repo` under `tag`; its manifest size.
    async fn push(s: &Store, repo: &str, tag: &str, config: &[u8], layers: &[&[u8]]) -> u64 {
        let repo = RepoName::parse(repo).expect("name");
        let desc = |media: &str, b: &[u8]| {
            format!(
                r#"{{"mediaType":"{media}","digest":"{}","size":{}}}"#,
                sha(b),
                b.len()
            )
        };
        s.push_blob(&repo, &sha(config), config)
            .await
            .expect("config");
        let mut ls = Vec::new();
        for l in layers {
            s.push_blob(&repo, &sha(l), *l).await.expect("layer");
            ls.push(desc("application/vnd.oci.image.layer.v1.tar", l));
        }
        let body = format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{},"layers":[{}]}}"#,
            desc("application/vnd.oci.image.config.v1+json", config),
            ls.join(",")
        );
        let reference = Reference::parse(tag).expect("tag");
        s.put_manifest(&repo, &reference, OCI_MANIFEST, body.as_bytes(), &[], true)
            .await
            .expect("put");
        body.len() as u64
    }

    #[tokio::test]
    async fn shared_layers_count_as_shared_and_the_rest_as_unique() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = Store::open(dir.path()).await.expect("open");
        let shared = vec![7u8; 1000];
        let m1 = push(&s, "a", "v1", b"{\"a\":1}", &[&shared, &[1u8; 10]]).await;
        let m2 = push(&s, "b/c", "v1", b"{\"b\":22}", &[&shared]).await;
        let u = s.usage().await.expect("usage");
        assert_eq!(u.repositories, 2);
        assert_eq!(u.manifests, 2);
        assert_eq!(u.blobs, 6);
        assert_eq!(u.bytes, 1000 + 10 + 7 + 8 + m1 + m2);
        let a = &u.repos[0];
        assert_eq!(a.name, "a");
        assert_eq!((a.shared_blobs, a.shared_bytes), (1, 1000));
        assert_eq!((a.unique_blobs, a.unique_bytes), (3, 10 + 7 + m1));
        assert_eq!((a.manifests, a.tags, a.bytes), (1, 1, 1010 + 7 + m1));
        let b = &u.repos[1];
        assert_eq!((b.name.as_str(), b.shared_bytes), ("b/c", 1000));
        assert_eq!(b.unique_bytes, 8 + m2);

        let mut top = u.clone();
        top.top(1);
        assert_eq!(top.repos.len(), 1);
        assert_eq!(top.repos[0].name, "a");
        let mut page = u.clone();
        assert!(page.page(None, Some(1)));
        assert_eq!(page.repos[0].name, "a");
        let mut page = u.clone();
        assert!(!page.page(Some("a"), Some(1)));
        assert_eq!(page.repos[0].name, "b/c");
    }

    #[tokio::test]
    async fn sizes_are_stated_once_and_only_referenced_ones_kept() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = Store::open(dir.path()).await.expect("open");
        let layer = vec![3u8; 500];
        let m = push(&s, "a", "v1", b"{}", &[&layer]).await;
        let first = s.usage().await.expect("usage");
        assert_eq!(first.bytes, 500 + 2 + m);
        // The second report stats nothing it has seen: with the layer's file gone behind the
        // store's back it still counts the size it saw (a blob's size is its content's).
        std::fs::remove_file(layout::blob_path(dir.path(), &sha(&layer))).expect("rm");
        assert_eq!(s.usage().await.expect("usage"), first);
        // A newly referenced blob is stated; the cache holds what the report counted only.
        let m2 = push(&s, "b", "v1", b"{\"b\":1}", &[&[9u8; 40]]).await;
        let second = s.usage().await.expect("usage");
        assert_eq!(second.bytes, first.bytes + 40 + 7 + m2);
        assert_eq!(s.inner.sizes.lock().len() as u64, second.blobs);
        // Forgotten (as fsck does for a quarantined blob): stated again, and now absent.
        s.inner.sizes.forget(&[sha(&layer)]);
        assert_eq!(s.usage().await.expect("usage").bytes, second.bytes - 500);
    }
}
