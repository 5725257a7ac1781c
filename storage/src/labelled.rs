//! Image manifests whose config carries one label the server names
//! ([`Store::index_config_label`]; the console's: imgpkg's bundle label). [`Store::commit`]
//! reads the config of each image manifest it commits (once per config: content never
//! changes) and records the answer in the manifest's record (`ManifestRecord::labelled`), so
//! the journal keeps it; the index per repository ([`LabelIndex`]) follows the ops as they
//! apply, so listing every labelled manifest of ten thousand repositories reads no blob.
//! Records journalled before the answer was recorded (or whose config was absent) are
//! classified once per open, the first time someone asks ([`Store::is_labelled`],
//! [`Store::labelled_rows`]).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use tokio::io::AsyncReadExt;

use crate::listing::TagRow;
use crate::meta::{Op, Repo};
use crate::{Digest, ManifestRecord, RepoName, Store, StoreError, Txn};

/// Configs larger than this are not read for labels: real ones are a few KiB.
const MAX_CONFIG: u64 = 1 << 20;

/// The config descriptor of an image manifest (the store lists it first); `None` for
/// anything else, which is never labelled.
fn config_of(m: &ManifestRecord) -> Option<&crate::Descriptor> {
    if !matches!(
        m.media_type.as_str(),
        crate::OCI_MANIFEST | crate::DOCKER_MANIFEST
    ) {
        return None;
    }
    m.blobs.first().filter(|c| c.size <= MAX_CONFIG)
}

/// Whether image config JSON carries `label` in `config.Labels`.
pub fn has_label(config: &[u8], label: &str) -> bool {
    #[derive(serde::Deserialize)]
    struct Cfg {
        config: Option<Inner>,
    }
    #[derive(serde::Deserialize)]
    struct Inner {
        #[serde(rename = "Labels", default)]
        labels: Option<BTreeMap<String, serde::de::IgnoredAny>>,
    }
    serde_json::from_slice::<Cfg>(config)
        .ok()
        .and_then(|c| c.config)
        .and_then(|i| i.labels)
        .is_some_and(|l| l.contains_key(label))
}

/// The labelled manifests each repository holds. Part of the metadata state, updated by
/// `State::apply` with each op.
#[derive(Default)]
pub(crate) struct LabelIndex {
    repos: BTreeMap<RepoName, BTreeSet<Digest>>,
}

impl LabelIndex {
    pub(crate) fn note(&mut self, op: &Op) {
        match op {
            Op::Manifest { repo, record } => match record.labelled {
                Some(true) => {
                    self.repos
                        .entry(repo.clone())
                        .or_default()
                        .insert(record.digest.clone());
                }
                Some(false) => self.remove(repo, &record.digest),
                // Not classified (an older journal): the first reader classifies it.
                None => {}
            },
            Op::Unmanifest { repo, digest } => self.remove(repo, digest),
            _ => {}
        }
    }

    fn remove(&mut self, repo: &RepoName, d: &Digest) {
        if let Some(set) = self.repos.get_mut(repo) {
            set.remove(d);
            if set.is_empty() {
                self.repos.remove(repo);
            }
        }
    }

    pub(crate) fn contains(&self, repo: &RepoName, d: &Digest) -> bool {
        self.repos.get(repo).is_some_and(|s| s.contains(d))
    }

    /// Every labelled manifest, as (repository, digest): for a reloaded state to keep what
    /// the late classification found (see `State::keep_learnt`).
    pub(crate) fn pairs(&self) -> Vec<(RepoName, Digest)> {
        self.repos
            .iter()
            .flat_map(|(r, set)| set.iter().map(move |d| (r.clone(), d.clone())))
            .collect()
    }

    /// Add what the late classification found, each only if `repos` still holds it.
    pub(crate) fn add_found(
        &mut self,
        repos: &BTreeMap<RepoName, Repo>,
        found: Vec<(RepoName, Digest)>,
    ) {
        for (repo, d) in found {
            if repos
                .get(&repo)
                .is_some_and(|r| r.manifests.contains_key(&d))
            {
                self.repos.entry(repo).or_default().insert(d);
            }
        }
    }
}

/// Which configs were found to carry the label, remembered so that the manifests sharing a
/// config read it once. Bounded: when full it starts over.
#[derive(Default)]
pub(crate) struct ConfigVerdicts(std::sync::Mutex<HashMap<Digest, bool>>);

impl ConfigVerdicts {
    const CAP: usize = 100_000;

    fn get(&self, d: &Digest) -> Option<bool> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(d)
            .copied()
    }

    fn put(&self, d: &Digest, v: bool) {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= Self::CAP {
            map.clear();
        }
        map.insert(d.clone(), v);
    }
}

impl Store {
    /// Index image manifests whose config carries `label` (set once; later calls change
    /// nothing). Until then nothing is read or recorded.
    pub fn index_config_label(&self, label: &'static str) {
        let _ = self.inner.label.set(label);
    }

    /// Whether config `d` carries the label; `None` if it is not stored (a sparse push: it
    /// may come later) or cannot be read.
    async fn config_labelled(&self, label: &str, d: &Digest) -> Option<bool> {
        if let Some(v) = self.inner.label_verdicts.get(d) {
            return Some(v);
        }
        let reader = match self.open_stored_blob(d).await {
            Ok(r) => r,
            Err(StoreError::BlobUnknown(_)) => return None,
            Err(e) => {
                tracing::warn!(config = %d, error = %e, "could not read an image config for its labels");
                return None;
            }
        };
        let mut bytes = Vec::new();
        if let Err(e) = reader.take(MAX_CONFIG).read_to_end(&mut bytes).await {
            tracing::warn!(config = %d, error = %e, "could not read an image config for its labels");
            return None;
        }
        let yes = has_label(&bytes, label);
        self.inner.label_verdicts.put(d, yes);
        Some(yes)
    }

    /// Record in each image manifest of `txn` whether its config carries the label, before
    /// the commit: the reads happen outside the journal lock, a few at a time.
    pub(crate) async fn classify_labelled(&self, txn: &mut Txn) {
        use futures_util::StreamExt;
        let Some(&label) = self.inner.label.get() else {
            return;
        };
        let configs: HashSet<Digest> = txn
            .ops
            .iter()
            .filter_map(|op| match op {
                Op::Manifest { record, .. } if record.labelled.is_none() => config_of(record),
                _ => None,
            })
            .map(|c| c.digest.clone())
            .collect();
        if configs.is_empty() {
            return;
        }
        let verdicts: HashMap<Digest, bool> = futures_util::stream::iter(configs)
            .map(|d| async move { self.config_labelled(label, &d).await.map(|v| (d, v)) })
            .buffer_unordered(16)
            .filter_map(|x| async move { x })
            .collect()
            .await;
        for op in &mut txn.ops {
            if let Op::Manifest { record, .. } = op {
                if record.labelled.is_none() {
                    record.labelled =
                        config_of(record).and_then(|c| verdicts.get(&c.digest).copied());
                }
            }
        }
    }

    /// Classify, once per open, the image manifests committed without the answer (a
    /// journal written before commits recorded it, or a config absent at the time).
    async fn fill_labelled(&self) {
        let Some(&label) = self.inner.label.get() else {
            return;
        };
        self.inner
            .labels_filled
            .get_or_init(|| async {
                use futures_util::StreamExt;
                let todo: Vec<(RepoName, Digest, Digest)> = {
                    let state = self.inner.meta.read();
                    state
                        .repos
                        .iter()
                        .flat_map(|(name, r)| {
                            r.manifests
                                .values()
                                .filter(|m| m.labelled.is_none())
                                .filter_map(move |m| {
                                    config_of(m)
                                        .map(|c| (name.clone(), m.digest.clone(), c.digest.clone()))
                                })
                        })
                        .collect()
                };
                if todo.is_empty() {
                    return;
                }
                let configs: HashSet<Digest> = todo.iter().map(|t| t.2.clone()).collect();
                let yes: HashSet<Digest> = futures_util::stream::iter(configs)
                    .map(|d| async move {
                        let labelled = self.config_labelled(label, &d).await == Some(true);
                        labelled.then_some(d)
                    })
                    .buffer_unordered(16)
                    .filter_map(|x| async move { x })
                    .collect()
                    .await;
                let found = todo
                    .into_iter()
                    .filter(|(_, _, c)| yes.contains(c))
                    .map(|(r, m, _)| (r, m))
                    .collect();
                self.inner.meta.add_labelled(found);
            })
            .await;
    }

    /// Whether manifest `d` of `repo` carries the indexed label (always false without one).
    pub async fn is_labelled(&self, repo: &RepoName, d: &Digest) -> bool {
        self.fill_labelled().await;
        self.inner.meta.read().labelled.contains(repo, d)
    }

    /// The tagged labelled manifests of repositories after `after` (by name) that `visible`
    /// lets through: one row per tag (tags `hide` accepts left out), whole repositories at
    /// a time until there are at least `n` rows. The flag says whether another visible
    /// repository with labelled manifests follows the last one returned.
    pub async fn labelled_rows(
        &self,
        after: Option<&str>,
        n: usize,
        visible: &(dyn Fn(&str) -> bool + Sync),
        hide: &(dyn Fn(&str) -> bool + Sync),
    ) -> (Vec<(RepoName, TagRow)>, bool) {
        self.fill_labelled().await;
        let state = self.inner.meta.read();
        let mut rows = Vec::new();
        let range =
            state.labelled.repos.iter().filter(|(name, _)| {
                after.is_none_or(|a| name.as_str() > a) && visible(name.as_str())
            });
        for (name, set) in range {
            if rows.len() >= n {
                return (rows, true);
            }
            let Some(r) = state.repos.get(name) else {
                continue;
            };
            for (tag, t) in &r.tags {
                if !set.contains(&t.digest) || hide(tag.as_str()) {
                    continue;
                }
                let Some(record) = r.manifests.get(&t.digest) else {
                    continue;
                };
                rows.push((
                    name.clone(),
                    TagRow {
                        tag: tag.as_str().to_owned(),
                        record: Arc::clone(record),
                        at: t.at,
                    },
                ));
            }
        }
        (rows, false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Algorithm, Reference, OCI_MANIFEST};

    const LABEL: &str = "example.com/indexed";

    fn sha(b: &[u8]) -> Digest {
        Digest::of(Algorithm::Sha256, b)
    }

    /// Push an image whose config carries `labels` into `repo` under `tag`; its digest.
    async fn push(s: &Store, repo: &str, tag: &str, labels: &str) -> Digest {
        let repo = RepoName::parse(repo).expect("name");
        let config = format!(r#"{{"config":{{"Labels":{{{labels}}}}}}}"#);
        let layer = b"layer";
        s.push_blob(&repo, &sha(config.as_bytes()), config.as_bytes())
            .await
            .expect("config");
        s.push_blob(&repo, &sha(layer), &layer[..])
            .await
            .expect("layer");
        let body = format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{}","size":{}}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{}","size":5}}]}}"#,
            sha(config.as_bytes()),
            config.len(),
            sha(layer)
        );
        let reference = Reference::parse(tag).expect("tag");
        s.put_manifest(&repo, &reference, OCI_MANIFEST, body.as_bytes(), &[], true)
            .await
            .expect("put")
            .digest
            .clone()
    }

    fn rows(v: &[(RepoName, TagRow)]) -> Vec<String> {
        v.iter().map(|(r, t)| format!("{r}:{}", t.tag)).collect()
    }

    #[tokio::test]
    async fn labelled_manifests_are_indexed_at_commit_and_after_a_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = Store::open(dir.path()).await.expect("open");
        s.index_config_label(LABEL);
        let yes = push(&s, "a/one", "v1", &format!(r#""{LABEL}":"true""#)).await;
        push(&s, "a/one", "hidden", &format!(r#""{LABEL}":"true""#)).await;
        let no = push(&s, "a/two", "v1", r#""other":"x""#).await;
        push(&s, "b", "v1", &format!(r#""{LABEL}":"""#)).await;
        let a1 = RepoName::parse("a/one").expect("name");
        assert!(s.is_labelled(&a1, &yes).await);
        assert!(
            !s.is_labelled(&RepoName::parse("a/two").expect("name"), &no)
                .await
        );
        let all = |_: &str| true;
        let hide = |t: &str| t == "hidden";
        let (found, more) = s.labelled_rows(None, 10, &all, &hide).await;
        assert_eq!(
            (rows(&found), more),
            (vec!["a/one:v1".into(), "b:v1".into()], false)
        );
        // Whole repositories a page; the next starts after the last one.
        let (found, more) = s.labelled_rows(None, 1, &all, &hide).await;
        assert_eq!((rows(&found), more), (vec!["a/one:v1".into()], true));
        let (found, _) = s.labelled_rows(Some("a/one"), 1, &all, &hide).await;
        assert_eq!(rows(&found), ["b:v1"]);
        let (found, more) = s.labelled_rows(None, 10, &|r| r == "b", &hide).await;
        assert_eq!((rows(&found), more), (vec!["b:v1".into()], false));

        // The answer is in the journal: a reopened store has the index without reading.
        s.delete_repo(&RepoName::parse("b").expect("name"))
            .await
            .expect("delete");
        drop(s);
        let s = Store::open(dir.path()).await.expect("reopen");
        s.index_config_label(LABEL);
        let (found, _) = s.labelled_rows(None, 10, &all, &|_| false).await;
        assert_eq!(rows(&found), ["a/one:hidden", "a/one:v1"]);
    }

    /// Manifests committed before the store was told the label (a journal from before the
    /// index existed) are classified the first time someone asks.
    #[tokio::test]
    async fn manifests_committed_without_an_answer_are_classified_on_first_ask() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = Store::open(dir.path()).await.expect("open");
        let yes = push(&s, "r", "v1", &format!(r#""{LABEL}":"1""#)).await;
        drop(s);
        let s = Store::open(dir.path()).await.expect("reopen");
        let r = RepoName::parse("r").expect("name");
        assert!(
            !s.is_labelled(&r, &yes).await,
            "no label named: nothing indexed"
        );
        s.index_config_label(LABEL);
        assert!(s.is_labelled(&r, &yes).await);
        let (found, _) = s.labelled_rows(None, 10, &|_| true, &|_| false).await;
        assert_eq!(rows(&found), ["r:v1"]);
    }

    #[test]
    fn the_label_is_found_in_the_config() {
        assert!(has_label(br#"{"config":{"Labels":{"l":"true"}}}"#, "l"));
        assert!(has_label(br#"{"config":{"Labels":{"l":""}}}"#, "l"));
        assert!(!has_label(br#"{"config":{"Labels":{"x":"y"}}}"#, "l"));
        assert!(!has_label(br#"{"config":{"Labels":null}}"#, "l"));
        assert!(!has_label(br#"{"config":{}}"#, "l"));
        assert!(!has_label(b"[]", "l"));
    }
}
