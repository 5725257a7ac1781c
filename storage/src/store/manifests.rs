//! The store's manifests and tags: put (checked against what the repository holds), get,
//! resolve, delete, repository delete, tag and catalog pages, referrers, and commits of
//! metadata transactions.

use std::sync::Arc;

use crate::*;

/// What [`Store::delete_manifest`] removes and what it may leave behind.
#[derive(Clone, Copy, Debug, Default)]
pub struct ManifestDelete {
    /// By digest, also the children of an index that nothing else keeps.
    pub orphans: bool,
    /// Delete even while an index of the repository lists the manifest.
    pub even_if_listed: bool,
}

impl Store {
    /// Store a manifest pushed to `repo` under `reference`, plus any extra `tags`.
    /// `check_refs` off accepts manifests whose blobs or children are absent (sparse).
    pub async fn put_manifest(
        &self,
        repo: &RepoName,
        reference: &Reference,
        media_type: &str,
        bytes: &[u8],
        tags: &[Tag],
        check_refs: bool,
    ) -> Result<Arc<ManifestRecord>, StoreError> {
        if bytes.len() > MAX_MANIFEST_BYTES {
            return Err(StoreError::TooLarge(format!(
                "manifest of {} bytes exceeds the {} byte limit",
                bytes.len(),
                MAX_MANIFEST_BYTES
            )));
        }
        let alg = match reference {
            Reference::Digest(d) => d.algorithm(),
            Reference::Tag(_) => Algorithm::Sha256,
        };
        let digest = Digest::of(alg, bytes);
        if let Reference::Digest(d) = reference {
            if *d != digest {
                return Err(StoreError::DigestMismatch {
                    expected: d.clone(),
                    actual: digest,
                });
            }
        }
        let record = ManifestRecord::parse(digest.clone(), media_type, bytes)?;
        // Pinned until committed: GC must not delete the manifest's bytes in between.
        let _pin = self.inner.pins.pin_published(&digest).await?;
        // Found already stored: a concurrent push of the same manifest may have made it
        // visible but not yet durable, and this push acknowledges it (`stat_durable`).
        if self.inner.blobs.stat_durable(&digest).await?.is_none() {
            self.inner.blobs.put(&digest, &mut &bytes[..], None).await?;
            self.touch_written(&digest);
        } else {
            self.touch(&digest);
        }
        let mut txn = if check_refs {
            Txn::new()
        } else {
            Txn::new().sparse()
        };
        let shared = Arc::new(record.clone());
        txn.put_manifest(repo.clone(), record);
        if let Reference::Tag(t) = reference {
            txn.tag(repo.clone(), t.clone(), digest.clone());
        }
        for t in tags {
            txn.tag(repo.clone(), t.clone(), digest.clone());
        }
        self.commit(txn).await?;
        Ok(shared)
    }

    /// Resolve a reference to a manifest record of `repo`.
    pub fn stat_manifest(
        &self,
        repo: &RepoName,
        reference: &Reference,
    ) -> Result<Arc<ManifestRecord>, StoreError> {
        let state = self.inner.meta.read();
        let r = state
            .repos
            .get(repo)
            .ok_or_else(|| StoreError::ManifestUnknown(reference.to_string()))?;
        let digest = match reference {
            Reference::Digest(d) => d,
            Reference::Tag(t) => r
                .tags
                .get(t)
                .map(|e| &e.digest)
                .ok_or_else(|| StoreError::ManifestUnknown(reference.to_string()))?,
        };
        r.manifests
            .get(digest)
            .cloned()
            .ok_or_else(|| StoreError::ManifestUnknown(reference.to_string()))
    }

    pub async fn get_manifest(
        &self,
        repo: &RepoName,
        reference: &Reference,
    ) -> Result<Manifest, StoreError> {
        let record = self.stat_manifest(repo, reference)?;
        let bytes = self.manifest_bytes(&record.digest).await?;
        Ok(Manifest { record, bytes })
    }

    pub(crate) async fn manifest_bytes(&self, d: &Digest) -> Result<bytes::Bytes, StoreError> {
        if let Some(bytes) = self.inner.manifests.get(d) {
            return Ok(bytes);
        }
        let read = self.inner.blobs.read(d, ByteRange::ALL).await?;
        if read.size > MAX_MANIFEST_BYTES as u64 {
            return Err(StoreError::TooLarge(format!(
                "stored manifest {d} is {} bytes, past the {MAX_MANIFEST_BYTES} byte limit",
                read.size
            )));
        }
        // Bounded by the check above (manifests are refused past it when pushed).
        let mut bytes = bytes::BytesMut::with_capacity(read.size as usize);
        let mut stream = read.stream;
        while let Some(chunk) = futures_util::StreamExt::next(&mut stream).await {
            bytes.extend_from_slice(&chunk?);
        }
        let bytes = bytes.freeze();
        self.inner.manifests.insert(d, &bytes);
        Ok(bytes)
    }

    pub fn resolve_tag(&self, repo: &RepoName, tag: &Tag) -> Option<Digest> {
        let state = self.inner.meta.read();
        state
            .repos
            .get(repo)?
            .tags
            .get(tag)
            .map(|e| e.digest.clone())
    }

    /// Delete by digest removes the manifest and every tag on it; by tag, just the tag.
    /// By digest it is refused ([`StoreError::Denied`]) while an index of `repo` lists the
    /// manifest, since that index would be served with a child that is gone, unless
    /// `how.even_if_listed` (CNCF Distribution's behaviour; fsck reports such children).
    /// With `how.orphans`, by digest also the children (of an index) that nothing else in
    /// `repo` keeps: no tag, no other parent, transitively. Not the default of the HTTP
    /// DELETE: clients (and the conformance suites) delete an index and then each child, and
    /// expect 202 for the children.
    pub async fn delete_manifest(
        &self,
        repo: &RepoName,
        reference: &Reference,
        how: ManifestDelete,
    ) -> Result<(), StoreError> {
        self.delete_manifest_inner(repo, reference, how.orphans, !how.even_if_listed)
            .await
    }

    /// Decided under the journal lock, so a concurrent tag or parent is seen.
    async fn delete_manifest_inner(
        &self,
        repo: &RepoName,
        reference: &Reference,
        orphans: bool,
        refuse_listed: bool,
    ) -> Result<(), StoreError> {
        let mut locked = self.inner.meta.lock().await?;
        let mut txn = Txn::new();
        {
            let state = locked.state();
            let r = state
                .repos
                .get(repo)
                .ok_or_else(|| StoreError::ManifestUnknown(reference.to_string()))?;
            match reference {
                Reference::Tag(t) => {
                    if !r.tags.contains_key(t) {
                        return Err(StoreError::ManifestUnknown(reference.to_string()));
                    }
                    txn.push(Op::Untag {
                        repo: repo.clone(),
                        tag: t.clone(),
                    });
                }
                Reference::Digest(d) => {
                    if !r.manifests.contains_key(d) {
                        return Err(StoreError::ManifestUnknown(reference.to_string()));
                    }
                    let parent = r
                        .manifests
                        .values()
                        .find(|m| m.manifests.iter().any(|c| c.digest == *d));
                    if let Some(index) = parent.filter(|_| refuse_listed) {
                        return Err(StoreError::Denied(format!(
                            "manifest {d} is listed by index {} in {repo}; delete the index first",
                            index.digest
                        )));
                    }
                    let doomed = if orphans {
                        gc::with_orphaned_children(r, d)
                    } else {
                        vec![d.clone()]
                    };
                    for digest in doomed {
                        txn.push(Op::Unmanifest {
                            repo: repo.clone(),
                            digest,
                        });
                    }
                }
            }
        }
        locked.commit(txn, |_| true).await
    }

    /// Remove a whole repository: its tags, manifests and blob links, in one transaction,
    /// and its upload sessions. The bytes stay until GC finds nothing else uses them.
    pub async fn delete_repo(&self, repo: &RepoName) -> Result<(), StoreError> {
        let mut locked = self.inner.meta.lock().await?;
        let mut txn = Txn::new();
        {
            let state = locked.state();
            // A repository with only upload sessions so far has nothing in the journal.
            let empty = Repo::default();
            let r = match state.repos.get(repo) {
                Some(r) => r,
                None if self.inner.open_uploads.has_repo(repo) => &empty,
                None => return Err(StoreError::NameUnknown(repo.to_string())),
            };
            for tag in r.tags.keys() {
                txn.push(Op::Untag {
                    repo: repo.clone(),
                    tag: tag.clone(),
                });
            }
            for digest in r.manifests.keys() {
                txn.push(Op::Unmanifest {
                    repo: repo.clone(),
                    digest: digest.clone(),
                });
            }
            for digest in &r.blobs {
                txn.push(Op::Unlink {
                    repo: repo.clone(),
                    digest: digest.clone(),
                });
            }
            // Its import records would only name what is gone.
            for (_, r) in state
                .imports
                .values()
                .filter(|(_, r)| r.repository == *repo)
            {
                txn.push(Op::Unimport { id: r.id.clone() });
            }
        }
        locked.commit(txn, |_| true).await?;
        // Cancelled while the journal lock is still held: a finish of one of them takes that
        // lock to link its blob, so it either linked before this delete (which removed the
        // link) or finds its session gone and links nothing.
        let cancelled = self.inner.open_uploads.take_repo(repo);
        drop(locked);
        self.remove_sessions(cancelled).await;
        Ok(())
    }

    /// Tags of `repo` in lexical order, after `last`, at most `n`.
    pub fn tags(
        &self,
        repo: &RepoName,
        last: Option<&str>,
        n: Option<usize>,
    ) -> Result<Page, StoreError> {
        let state = self.inner.meta.read();
        let r = state
            .repos
            .get(repo)
            .ok_or_else(|| StoreError::NameUnknown(repo.to_string()))?;
        let iter = r.tags.keys().map(Tag::as_str);
        Ok(page(iter, last, n))
    }

    /// Repository names in lexical order, after `last`, at most `n`.
    pub fn catalog(&self, last: Option<&str>, n: Option<usize>) -> Page {
        let state = self.inner.meta.read();
        page(state.repos.keys().map(RepoName::as_str), last, n)
    }

    /// Manifests of `repo` whose subject is `subject`, optionally of one artifact type,
    /// each with the annotations read from its stored bytes.
    pub async fn referrers(
        &self,
        repo: &RepoName,
        subject: &Digest,
        artifact_type: Option<&str>,
    ) -> Vec<Referrer> {
        let records: Vec<Arc<ManifestRecord>> = {
            let state = self.inner.meta.read();
            let Some(r) = state.repos.get(repo) else {
                return Vec::new();
            };
            let Some(set) = r.referrers.get(subject) else {
                return Vec::new();
            };
            set.iter()
                .filter_map(|d| r.manifests.get(d))
                .filter(|m| artifact_type.is_none() || m.artifact_type.as_deref() == artifact_type)
                .cloned()
                .collect()
        };
        let mut out = Vec::with_capacity(records.len());
        for record in records {
            // Bytes gone (a damaged store, fsck's business) cost the entry its annotations,
            // not the whole list its other entries.
            let annotations = match self.manifest_bytes(&record.digest).await {
                Ok(bytes) => manifest::annotations(&bytes),
                Err(e) => {
                    tracing::warn!(digest = %record.digest, error = %e, "referrer bytes unreadable");
                    None
                }
            };
            out.push(Referrer {
                record,
                annotations,
            });
        }
        out
    }

    /// Apply a metadata transaction atomically and durably.
    pub async fn commit(&self, mut txn: Txn) -> Result<(), StoreError> {
        if txn.ops.is_empty() {
            return Ok(());
        }
        self.classify_labelled(&mut txn).await;
        let mut locked = self.inner.meta.lock().await?;
        self.commit_locked(&mut locked, txn).await
    }
}

/// A bounded map of manifest bytes. When full it starts over: simple, and a registry's hot
/// set of manifests refills it within a few pulls.
#[derive(Default)]
pub(crate) struct ManifestCache {
    /// std Mutex: a map lookup or insert, never held across `.await` or I/O.
    map: std::sync::Mutex<(std::collections::HashMap<Digest, bytes::Bytes>, usize)>,
}

impl ManifestCache {
    /// Total bytes kept.
    const CAP: usize = 8 << 20;

    pub(crate) fn get(&self, d: &Digest) -> Option<bytes::Bytes> {
        let map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        map.0.get(d).cloned()
    }

    pub(crate) fn insert(&self, d: &Digest, bytes: &bytes::Bytes) {
        if bytes.len() > Self::CAP / 64 {
            return;
        }
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        if map.1 + bytes.len() > Self::CAP {
            map.0.clear();
            map.1 = 0;
        }
        if map.0.insert(d.clone(), bytes.clone()).is_none() {
            map.1 += bytes.len();
        }
    }
}

/// Keys are already sorted. `n` of zero gives an empty page.
pub(crate) fn page<'a>(
    keys: impl Iterator<Item = &'a str>,
    last: Option<&str>,
    n: Option<usize>,
) -> Page {
    let mut iter = keys
        .skip_while(|k| last.is_some_and(|l| *k <= l))
        .peekable();
    let limit = n.unwrap_or(usize::MAX);
    let items: Vec<String> = iter.by_ref().take(limit).map(str::to_owned).collect();
    let more = iter.peek().is_some();
    Page { items, more }
}
