//! Read-only summaries for people rather than clients (the web console): per repository its
//! counts, size and last push, per tag the manifest and when it was set. Each call takes the
//! metadata read lock once and copies out only one page, so a page costs the same at ten or
//! ten thousand repositories.

use std::collections::HashSet;
use std::sync::Arc;

use crate::meta::Repo;
use crate::{Digest, ManifestRecord, RepoName, Store};

/// One repository as a listing shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RepoSummary {
    pub name: RepoName,
    pub tags: usize,
    pub manifests: usize,
    /// Bytes of every distinct blob and manifest the repository's manifests reference
    /// (what pulling all of it would transfer, each blob counted once).
    pub bytes: u64,
    /// When a tag was last set, seconds since the epoch; `None` when no tag says.
    pub last_push: Option<u64>,
}

/// One tag and what it names.
#[derive(Clone, Debug)]
pub struct TagRow {
    pub tag: String,
    pub record: Arc<ManifestRecord>,
    /// When the tag was set, seconds since the epoch; 0 where the journal does not say.
    pub at: u64,
}

/// One page of repositories whose names contain `filter`, after `after`, at most `n`,
/// of those `visible` lets through; `more` says whether another page follows.
#[derive(Clone, Debug, Default)]
pub struct RepoPage {
    pub items: Vec<RepoSummary>,
    pub more: bool,
    /// Visible repositories matching the filter (all pages).
    pub total: usize,
}

fn summarize(name: &RepoName, r: &Repo) -> RepoSummary {
    let mut seen: HashSet<&Digest> = HashSet::new();
    let mut bytes = 0u64;
    for m in r.manifests.values() {
        if seen.insert(&m.digest) {
            bytes = bytes.saturating_add(m.size);
        }
        for b in &m.blobs {
            if seen.insert(&b.digest) {
                bytes = bytes.saturating_add(b.size);
            }
        }
    }
    RepoSummary {
        name: name.clone(),
        tags: r.tags.len(),
        manifests: r.manifests.len(),
        bytes,
        last_push: r.tags.values().map(|t| t.at).filter(|a| *a > 0).max(),
    }
}

impl Store {
    /// Repositories whose name contains `filter`, sorted by name, after `after`, at most `n`,
    /// among those `visible` allows. Only the page's repositories are summarized.
    pub fn repo_summaries(
        &self,
        filter: &str,
        after: Option<&str>,
        n: usize,
        visible: &dyn Fn(&str) -> bool,
    ) -> RepoPage {
        let state = self.inner.meta.read();
        let mut page = RepoPage::default();
        for (name, r) in &state.repos {
            let s = name.as_str();
            if !s.contains(filter) || !visible(s) {
                continue;
            }
            page.total += 1;
            if after.is_some_and(|a| s <= a) {
                continue;
            }
            if page.items.len() < n {
                page.items.push(summarize(name, r));
            } else {
                page.more = true;
            }
        }
        page
    }

    /// The summary of one repository, `None` if it does not exist.
    pub fn repo_summary(&self, repo: &RepoName) -> Option<RepoSummary> {
        let state = self.inner.meta.read();
        state.repos.get(repo).map(|r| summarize(repo, r))
    }

    /// Tags of `repo` containing `filter`, in lexical order, after `after`, at most `n`, each
    /// with its manifest record and time; the flag says whether more follow. Tags `hide`
    /// accepts are left out (the console hides imgpkg's own tags). `None` if the repository
    /// does not exist.
    pub fn tag_rows(
        &self,
        repo: &RepoName,
        filter: &str,
        after: Option<&str>,
        n: usize,
        hide: &dyn Fn(&str) -> bool,
    ) -> Option<(Vec<TagRow>, bool)> {
        let state = self.inner.meta.read();
        let r = state.repos.get(repo)?;
        let mut rows = Vec::new();
        let mut more = false;
        for (tag, e) in &r.tags {
            let t = tag.as_str();
            if !t.contains(filter) || after.is_some_and(|a| t <= a) || hide(t) {
                continue;
            }
            let Some(record) = r.manifests.get(&e.digest) else {
                continue;
            };
            if rows.len() == n {
                more = true;
                break;
            }
            rows.push(TagRow {
                tag: t.to_owned(),
                record: Arc::clone(record),
                at: e.at,
            });
        }
        Some((rows, more))
    }

    /// The tags of `repo` that name `digest`, in lexical order.
    pub fn tags_of(&self, repo: &RepoName, digest: &Digest) -> Vec<String> {
        let state = self.inner.meta.read();
        let Some(r) = state.repos.get(repo) else {
            return Vec::new();
        };
        r.tags
            .iter()
            .filter(|(_, e)| e.digest == *digest)
            .map(|(t, _)| t.as_str().to_owned())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use crate::{Algorithm, Digest, Reference, RepoName, Store, Tag};

    #[tokio::test]
    async fn summaries_count_each_blob_once_and_page_by_name() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = Store::open(dir.path()).await.expect("open");
        let layer = b"layer-bytes";
        let config = b"{}";
        let ld = Digest::of(Algorithm::Sha256, layer);
        let cd = Digest::of(Algorithm::Sha256, config);
        for repo in ["a/one", "a/two", "b"] {
            let name = RepoName::parse(repo).expect("name");
            s.push_blob(&name, &ld, &layer[..]).await.expect("layer");
            s.push_blob(&name, &cd, &config[..]).await.expect("config");
            for tag in ["v1", "v2"] {
                let m = format!(
                    r#"{{"schemaVersion":2,"mediaType":"{}","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{cd}","size":2}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{ld}","size":{}}}],"annotations":{{"t":"{tag}"}}}}"#,
                    crate::OCI_MANIFEST,
                    layer.len()
                );
                let t = Tag::parse(tag).expect("tag");
                s.put_manifest(
                    &name,
                    &Reference::Tag(t),
                    crate::OCI_MANIFEST,
                    m.as_bytes(),
                    &[],
                    true,
                )
                .await
                .expect("manifest");
            }
        }
        let all = |_: &str| true;
        let p = s.repo_summaries("a/", None, 1, &all);
        assert_eq!((p.items.len(), p.more, p.total), (1, true, 2));
        let one = &p.items[0];
        assert_eq!(one.name.as_str(), "a/one");
        assert_eq!((one.tags, one.manifests), (2, 2));
        let manifests: u64 = ["v1", "v2"]
            .iter()
            .map(|t| {
                let t = Tag::parse(t).expect("tag");
                s.stat_manifest(&one.name, &Reference::Tag(t))
                    .expect("stat")
                    .size
            })
            .sum();
        assert_eq!(one.bytes, manifests + layer.len() as u64 + 2);
        assert!(one.last_push.is_some());
        let p = s.repo_summaries("a/", Some("a/one"), 1, &all);
        assert_eq!((p.items[0].name.as_str(), p.more), ("a/two", false));
        let only_b = |r: &str| r == "b";
        assert_eq!(s.repo_summaries("", None, 10, &only_b).total, 1);

        let name = RepoName::parse("b").expect("name");
        let (rows, more) = s
            .tag_rows(&name, "", Some("v1"), 5, &|t| t.ends_with(".imgpkg"))
            .expect("repo");
        assert_eq!((rows.len(), more), (1, false));
        assert_eq!(rows[0].tag, "v2");
        assert_eq!(s.tags_of(&name, &rows[0].record.digest), ["v2"]);
        assert!(s
            .tag_rows(&RepoName::parse("none").expect("n"), "", None, 5, &|_| {
                false
            })
            .is_none());
    }
}
