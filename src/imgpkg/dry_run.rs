//! Dry run of an import (`?dry_run=true`, `airdock import --dry-run`): the same reading and
//! verification as a real import (so a hostile tar gets the same refusal), nothing written.
//! Two things differ and live here: bundle layers that are not in the store yet are kept in
//! memory (bounded), because the ImageLocations images the report lists are built from their
//! `images.yml`; and the report says which tags would be created or moved, and which
//! references are missing, instead of committing or failing on the first.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use airdock_storage::{Digest, RepoName, Store, Tag};

use super::manifest::{ImageSet, Item};

/// Largest blob kept in memory when `manifest.json` has not said yet which blobs are bundle
/// layers (imgpkg writes it first, so this is for re-packed tars only).
const KEEP_UNKNOWN_MAX: u64 = 16 << 20;
/// Bytes of blobs kept in memory in all.
const KEEP_TOTAL_MAX: u64 = 64 << 20;

/// Blob bytes a dry run keeps because nothing is stored.
#[derive(Default)]
pub(crate) struct Kept {
    /// Bundle layers, once `manifest.json` is known.
    bundle_layers: Option<BTreeSet<Digest>>,
    blobs: BTreeMap<Digest, Vec<u8>>,
    total: u64,
}

impl Kept {
    /// `manifest.json` is known: only bundle layers need keeping from now on, and anything
    /// kept before that is not one is dropped.
    pub(crate) fn know(&mut self, set: &ImageSet) {
        let layers: BTreeSet<Digest> = set
            .items
            .iter()
            .filter_map(|t| match &t.item {
                Item::Image(i) if i.is_bundle => i.layers.first().map(|l| l.digest.clone()),
                _ => None,
            })
            .collect();
        self.blobs.retain(|d, _| layers.contains(d));
        self.total = self.blobs.values().map(|b| b.len() as u64).sum();
        self.bundle_layers = Some(layers);
    }

    /// Whether to keep the bytes of blob `d` of `size` bytes.
    pub(crate) fn wants(&self, d: &Digest, size: u64) -> bool {
        let fits = self.total.saturating_add(size) <= KEEP_TOTAL_MAX;
        match &self.bundle_layers {
            Some(layers) => layers.contains(d) && fits,
            None => size <= KEEP_UNKNOWN_MAX && fits,
        }
    }

    pub(crate) fn keep(&mut self, d: Digest, bytes: Vec<u8>) {
        self.total = self.total.saturating_add(bytes.len() as u64);
        self.blobs.insert(d, bytes);
    }

    pub(crate) fn get(&self, d: &Digest) -> Option<&[u8]> {
        self.blobs.get(d).map(Vec::as_slice)
    }
}

/// What a tag would do.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct TagChange {
    pub tag: String,
    pub digest: String,
    /// `create`, `move` or `unchanged`.
    pub change: &'static str,
    /// The digest the tag points at now, when it exists.
    pub from: Option<String>,
}

/// A reference the import would refuse for: a layer neither in the tar nor in the
/// repository.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Missing {
    pub entry: String,
    pub message: String,
}

/// The dry-run part of the report.
#[derive(Clone, Debug, Serialize, Default)]
pub struct DryRunReport {
    /// Whether the real import would succeed (nothing missing).
    pub would_import: bool,
    pub tags: Vec<TagChange>,
    pub missing: Vec<Missing>,
}

/// Each tag of `tags` (in the order the import sets them; the last setting wins) against
/// what `repo` holds now.
pub(crate) fn tag_changes(
    store: &Store,
    repo: &RepoName,
    tags: &[(Tag, Digest)],
) -> Vec<TagChange> {
    let mut last: BTreeMap<&Tag, &Digest> = BTreeMap::new();
    for (t, d) in tags {
        last.insert(t, d);
    }
    last.into_iter()
        .map(|(t, d)| {
            let from = store.resolve_tag(repo, t);
            let change = match &from {
                None => "create",
                Some(f) if f == d => "unchanged",
                Some(_) => "move",
            };
            TagChange {
                tag: t.to_string(),
                digest: d.to_string(),
                change,
                from: from.map(|f| f.to_string()),
            }
        })
        .collect()
}

#[cfg(test)]
pub(crate) mod tests {
    use std::path::{Path, PathBuf};
    use std::time::SystemTime;

    use super::*;
    use crate::imgpkg::synth::{self, Blob, Element, Image};
    use crate::imgpkg::{import, ErrorKind, ImportOptions};

    const FIX: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/imgpkg");

    fn fixture(name: &str) -> Vec<u8> {
        std::fs::read(format!("{FIX}/tars/{name}.tar")).expect("fixture")
    }

    fn dry() -> ImportOptions {
        ImportOptions {
            dry_run: true,
            ..ImportOptions::default()
        }
    }

    /// Every file under the data dir with its bytes and mtime.
    pub(crate) fn snapshot(root: &Path) -> BTreeMap<PathBuf, (Vec<u8>, Option<SystemTime>)> {
        let mut out = BTreeMap::new();
        let mut todo = vec![root.to_owned()];
        while let Some(dir) = todo.pop() {
            for e in std::fs::read_dir(&dir).expect("read_dir").flatten() {
                let p = e.path();
                let meta = e.metadata().expect("meta");
                if meta.is_dir() {
                    todo.push(p.clone());
                    out.insert(p, (Vec::new(), None));
                } else {
                    let bytes = std::fs::read(&p).unwrap_or_default();
                    out.insert(p, (bytes, meta.modified().ok()));
                }
            }
        }
        out
    }

    #[tokio::test]
    async fn a_dry_run_reports_what_the_import_does_and_changes_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).await.expect("store");
        let repo = RepoName::parse("lab/p").expect("repo");
        import(
            &store,
            &repo,
            &fixture("guestbook-bundle")[..],
            &ImportOptions::default(),
        )
        .await
        .expect("import");
        let before = snapshot(dir.path());
        let report = import(&store, &repo, &fixture("platform-bundle")[..], &dry())
            .await
            .expect("dry run");
        assert_eq!(snapshot(dir.path()), before, "nothing on disk changed");
        assert!(report.import_id.is_empty());
        let dry = report.dry_run.clone().expect("dry-run report");
        assert!(dry.would_import && dry.missing.is_empty());
        // 1.0 moves from the guestbook bundle to the platform bundle; what the guestbook
        // import tagged stays; the rest is created.
        let one = dry.tags.iter().find(|t| t.tag == "1.0").expect("1.0");
        assert_eq!(one.change, "move");
        let guestbook = "sha256:761c0665f7d84df2bbbd3f356246464572d85aa8b451368b629659907cf800c7";
        assert_eq!(one.from.as_deref(), Some(guestbook));
        assert!(dry.tags.iter().any(|t| t.change == "unchanged"));
        assert!(dry.tags.iter().any(|t| t.change == "create"));

        // The real import then does exactly that.
        let real = import(
            &store,
            &repo,
            &fixture("platform-bundle")[..],
            &ImportOptions::default(),
        )
        .await
        .expect("import");
        assert_eq!(real.blobs, report.blobs, "same blob accounting");
        assert_eq!(real.images, report.images, "same manifests and tags");
        for t in &dry.tags {
            let now = store.resolve_tag(&repo, &Tag::parse(&t.tag).expect("tag"));
            assert_eq!(
                now.map(|d| d.to_string()).as_deref(),
                Some(t.digest.as_str())
            );
        }
    }

    #[tokio::test]
    async fn a_hostile_tar_gets_the_same_refusal_dry_or_not() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).await.expect("store");
        let repo = RepoName::parse("lab/h").expect("repo");
        let mut tar = fixture("guestbook-bundle");
        // Flip a byte in the first blob's data (after manifest.json's header and data).
        let at = tar.len() - 2 * 512 - 600;
        tar[at] ^= 0xff;
        let mut truncated = fixture("multi-image");
        truncated.truncate(3000);
        for bad in [tar, truncated, b"not a tar at all".to_vec()] {
            let before = snapshot(dir.path());
            let d = import(&store, &repo, &bad[..], &dry())
                .await
                .expect_err("dry refuses");
            assert_eq!(snapshot(dir.path()), before);
            let r = import(&store, &repo, &bad[..], &ImportOptions::default())
                .await
                .expect_err("import refuses");
            assert_eq!((d.kind, d.entry, d.message), (r.kind, r.entry, r.message));
        }
    }

    #[tokio::test]
    async fn a_dry_run_lists_every_missing_reference() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).await.expect("store");
        let repo = RepoName::parse("lab/m").expect("repo");
        let layers = vec![
            Blob::new("application/vnd.oci.image.layer.v1.tar", b"one".to_vec()),
            Blob::new("application/vnd.oci.image.layer.v1.tar", b"two".to_vec()),
        ];
        let elements = [Element::Image {
            image: Image::oci(layers, &[]),
            source_repo: "src/x".into(),
            tag: "v1".into(),
            root_bundle: false,
        }];
        // manifest.json only: both layers are missing.
        let tar = synth::tar(&[("manifest.json", &synth::manifest_json(&elements)[..])]);
        let report = import(&store, &repo, &tar[..], &dry())
            .await
            .expect("report");
        let dry = report.dry_run.expect("dry");
        assert!(!dry.would_import);
        assert_eq!(dry.missing.len(), 2, "{:?}", dry.missing);
        let e = import(&store, &repo, &tar[..], &ImportOptions::default())
            .await
            .expect_err("refused");
        assert_eq!(e.kind, ErrorKind::MissingBlob);
        assert!(dry
            .missing
            .iter()
            .any(|m| Some(&m.entry) == e.entry.as_ref()));
    }
}
