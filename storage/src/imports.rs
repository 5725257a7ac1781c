//! Per-import records: what one imgpkg import created (its manifests and the tags it set),
//! kept in the journal beside them, so that "remove what import X brought" can undo exactly
//! that and nothing a later push or another import relies on.

use std::collections::HashSet;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::meta::{Op, Repo, State};
use crate::{Digest, RepoName, Store, StoreError, Tag};

/// One import, as committed. It is written in the same journal transaction as the import's
/// manifests and tags, so it exists exactly when they became visible.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImportRecord {
    /// 32 lowercase hex characters, chosen at commit time.
    pub id: String,
    pub repository: RepoName,
    /// Seconds since the Unix epoch at which the import was committed.
    pub time: u64,
    /// The sha256 of the upload, when the importer computed one. Optional so that records
    /// written without it still load.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tar_sha256: Option<Digest>,
    /// The tar's file name as the importer was told it (an upload's `?name=` or
    /// `Content-Disposition`, the CLI's file). This and the two below are optional so that
    /// records written before they existed still load.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Bytes of the upload as received (compressed, for a .tar.gz).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// Who imported: the admin principal (a user name, or `admin-token`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub imported_by: Option<String>,
    /// Every manifest the import put (images, index children, bundles, locations images).
    pub manifests: Vec<Digest>,
    /// Every tag the import set, with the manifest it set it to.
    pub tags: Vec<ImportedTag>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImportedTag {
    pub tag: Tag,
    pub digest: Digest,
}

impl ImportRecord {
    /// A record for an import into `repository`, with a fresh id and the current time.
    pub fn new(repository: RepoName) -> ImportRecord {
        ImportRecord {
            id: crate::random::id(),
            repository,
            time: unix_now(),
            tar_sha256: None,
            name: None,
            size: None,
            imported_by: None,
            manifests: Vec::new(),
            tags: Vec::new(),
        }
    }
}

pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// What removing an import did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ImportRemoval {
    pub id: String,
    pub repository: String,
    pub tags_removed: Vec<String>,
    /// Tags the import set that now point elsewhere or that another import also set.
    pub tags_kept: Vec<String>,
    pub manifests_removed: Vec<Digest>,
    /// Manifests of the import still tagged, reached from a kept manifest, or also brought
    /// by another import.
    pub manifests_kept: Vec<Digest>,
}

impl Store {
    /// Every import record, oldest first.
    pub fn imports(&self) -> Vec<ImportRecord> {
        let state = self.inner.meta.read();
        let mut all: Vec<&(u64, ImportRecord)> = state.imports.values().collect();
        all.sort_by_key(|(seq, _)| *seq);
        all.into_iter().map(|(_, r)| r.clone()).collect()
    }

    /// The record of import `id`, if there is one.
    pub fn import(&self, id: &str) -> Option<ImportRecord> {
        let state = self.inner.meta.read();
        state.imports.get(id).map(|(_, r)| r.clone())
    }

    /// What [`Store::remove_import`] would do now, changing nothing: the preview a person
    /// confirms. A push between the preview and the removal may change the answer; the
    /// removal decides again under the journal lock.
    pub fn preview_import_removal(&self, id: &str) -> Option<ImportRemoval> {
        let state = self.inner.meta.read();
        let (_, record) = state.imports.get(id)?;
        Some(plan_removal(&state, record).1)
    }

    /// Undo import `id`: drop the tags it set that still point where it set them, then the
    /// manifests it put that nothing kept reaches any more, and the record itself, in one
    /// transaction. Blob links and bytes are left to GC. `None` if there is no such record.
    pub async fn remove_import(&self, id: &str) -> Result<Option<ImportRemoval>, StoreError> {
        let mut locked = self.inner.meta.lock().await?;
        let (txn, removal) = {
            let state = locked.state();
            let Some((_, record)) = state.imports.get(id) else {
                return Ok(None);
            };
            plan_removal(&state, record)
        };
        locked.commit(txn, |_| true).await?;
        Ok(Some(removal))
    }
}

/// Decided under the journal lock against the state of that moment.
fn plan_removal(state: &State, record: &ImportRecord) -> (crate::Txn, ImportRemoval) {
    let repo_name = &record.repository;
    let mut txn = crate::Txn::new();
    let mut removal = ImportRemoval {
        id: record.id.clone(),
        repository: repo_name.to_string(),
        ..ImportRemoval::default()
    };
    // What other imports into the same repository also set or brought: two imports of
    // overlapping tars share `sha256-….imgpkg` tags and manifests, and removing one must
    // not break the other.
    let others = state
        .imports
        .values()
        .map(|(_, r)| r)
        .filter(|r| r.id != record.id && r.repository == *repo_name);
    let mut shared_tags: HashSet<(&Tag, &Digest)> = HashSet::new();
    let mut shared_manifests: HashSet<&Digest> = HashSet::new();
    for r in others {
        shared_tags.extend(r.tags.iter().map(|t| (&t.tag, &t.digest)));
        shared_manifests.extend(r.manifests.iter());
    }
    let empty = Repo::default();
    let repo = state.repos.get(repo_name).unwrap_or(&empty);

    let mut dropped_tags: HashSet<&Tag> = HashSet::new();
    for t in &record.tags {
        let still_ours = repo.tags.get(&t.tag).map(|e| &e.digest) == Some(&t.digest);
        if still_ours && !shared_tags.contains(&(&t.tag, &t.digest)) {
            dropped_tags.insert(&t.tag);
            txn.push(Op::Untag {
                repo: repo_name.clone(),
                tag: t.tag.clone(),
            });
            removal.tags_removed.push(t.tag.to_string());
        } else {
            removal.tags_kept.push(t.tag.to_string());
        }
    }

    // Kept: what a remaining tag names, every manifest the import did not bring, what other
    // imports brought, and (transitively) the children and referrers of anything kept.
    let ours: HashSet<&Digest> = record.manifests.iter().collect();
    let mut queue = repo.tagged_except(&dropped_tags);
    queue.extend(repo.manifests.keys().filter(|d| !ours.contains(d)));
    queue.extend(shared_manifests.iter().copied());
    let kept = repo.reachable(queue);
    let mut seen = HashSet::new();
    for d in &record.manifests {
        if !seen.insert(d) || !repo.manifests.contains_key(d) {
            continue;
        }
        if kept.contains(d) {
            removal.manifests_kept.push(d.clone());
        } else {
            txn.push(Op::Unmanifest {
                repo: repo_name.clone(),
                digest: d.clone(),
            });
            removal.manifests_removed.push(d.clone());
        }
    }
    txn.push(Op::Unimport {
        id: record.id.clone(),
    });
    (txn, removal)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records journaled before `name`, `size` and `imported_by` existed still load, and new
    /// ones keep them.
    #[test]
    fn old_records_load_and_new_fields_round_trip() {
        let old = r#"{"id":"0123456789abcdef0123456789abcdef","repository":"lab/app",
            "time":1700000000,"manifests":[],"tags":[]}"#;
        let r: ImportRecord = serde_json::from_str(old).expect("old record");
        assert_eq!(r.time, 1_700_000_000);
        assert_eq!((r.name, r.size, r.imported_by), (None, None, None));

        let mut r = ImportRecord::new(RepoName::parse("lab/app").expect("name"));
        r.name = Some("bundle.tar".into());
        r.size = Some(42);
        r.imported_by = Some("root".into());
        let back: ImportRecord =
            serde_json::from_str(&serde_json::to_string(&r).expect("json")).expect("parse");
        assert_eq!(back, r);
    }
}
