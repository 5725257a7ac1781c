//! Unit tests of the archive import against a temporary store, with archives built here in
//! the layouts `docker save`, skopeo and podman write (the real tools' archives are imported in
//! `tests/it/archives.rs`).

use std::collections::BTreeMap;
use std::path::Path;

use airdock_storage::{Algorithm, Digest, Reference, RepoName, Store, Tag};
use serde_json::{json, Value};

use super::*;
use crate::imgpkg::dry_run::tests::snapshot;
use crate::imgpkg::synth;
use crate::imgpkg::tarfmt::{self, Kind, BLOCK};

/// One tar entry of a hand-built archive.
enum E<'a> {
    F(&'a str, &'a [u8]),
    Link(&'a str, &'a str),
    Hard(&'a str, &'a str),
    Dir(&'a str),
}

fn tar_of(entries: &[E<'_>]) -> Vec<u8> {
    let mut out = Vec::new();
    for e in entries {
        let (name, kind, data, link): (&str, Kind, &[u8], &[u8]) = match e {
            E::F(n, d) => (n, Kind::Regular, d, b""),
            E::Link(n, t) => (n, Kind::Symlink, b"", t.as_bytes()),
            E::Hard(n, t) => (n, Kind::HardLink, b"", t.as_bytes()),
            E::Dir(n) => (n, Kind::Directory, b"", b""),
        };
        out.extend_from_slice(&synth::raw_header(name, kind, data.len() as u64, link));
        out.extend_from_slice(data);
        out.resize(out.len() + tarfmt::padding(data.len() as u64) as usize, 0);
    }
    out.resize(out.len() + 2 * BLOCK, 0);
    out
}

fn sha(b: &[u8]) -> Digest {
    Digest::of(Algorithm::Sha256, b)
}

fn hex(d: &Digest) -> String {
    d.hex().to_string()
}

async fn store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = Store::open(dir.path()).await.expect("open");
    (dir, s)
}

fn repo(s: &str) -> RepoName {
    RepoName::parse(s).expect("repo")
}

async fn run(s: &Store, r: &RepoName, tar: Vec<u8>) -> Result<ImportReport, ImportError> {
    import(s, r, io::Cursor::new(tar), &ImportOptions::default()).await
}

/// A dry run of `tar`, checked to have left every file of the store as it was.
async fn dry(
    dir: &Path,
    s: &Store,
    r: &RepoName,
    tar: Vec<u8>,
) -> Result<ImportReport, ImportError> {
    let before = snapshot(dir);
    let opts = ImportOptions {
        dry_run: true,
        ..ImportOptions::default()
    };
    let report = import(s, r, io::Cursor::new(tar), &opts).await;
    assert_eq!(snapshot(dir), before, "a dry run changed the store");
    if let Ok(report) = &report {
        assert!(report.import_id.is_empty());
    }
    report
}

fn tags(s: &Store, r: &RepoName) -> BTreeMap<String, String> {
    let Ok(page) = s.tags(r, None, None) else {
        return BTreeMap::new();
    };
    page.items
        .into_iter()
        .map(|t| {
            let d = s
                .resolve_tag(r, &Tag::parse(&t).expect("tag"))
                .expect("tag");
            (t, d.to_string())
        })
        .collect()
}

fn journal(dir: &Path) -> Vec<u8> {
    std::fs::read(dir.join("meta").join("journal")).unwrap_or_default()
}

async fn manifest(s: &Store, r: &RepoName, reference: &str) -> Value {
    let reference = Reference::parse(reference).expect("reference");
    let m = s.get_manifest(r, &reference).await.expect("manifest");
    serde_json::from_slice(&m.bytes).expect("json")
}

/// A layer tar holding one file, and an image config naming it as the only DiffID.
struct Img {
    layer: Vec<u8>,
    config: Vec<u8>,
}

fn img(n: u8) -> Img {
    let text = format!("file {n}\n");
    let layer = synth::tar(&[(&format!("f{n}.txt"), text.as_bytes())]);
    let config = serde_json::to_vec(&json!({
        "architecture": "amd64", "os": "linux",
        "config": {"Env": [format!("N={n}")]},
        "rootfs": {"type": "layers", "diff_ids": [sha(&layer).to_string()]},
    }))
    .expect("json");
    Img { layer, config }
}

/// A classic `docker save` archive of `images` (with their RepoTags); manifest.json last, as
/// docker writes it, unless `manifest_first`. Each layer is `<id>/layer.tar` with the legacy
/// `json` and `VERSION` beside it; the second image's layer is a symlink when identical.
fn classic(images: &[(&Img, &[&str])], manifest_first: bool) -> Vec<u8> {
    let mut files: Vec<(String, Vec<u8>, Option<String>)> = Vec::new();
    let mut mj = Vec::new();
    let mut first_layer: BTreeMap<String, String> = BTreeMap::new();
    for (i, (im, repo_tags)) in images.iter().enumerate() {
        let cfg = format!("{}.json", hex(&sha(&im.config)));
        let id = format!("{:064x}", i + 1);
        let layer_path = format!("{id}/layer.tar");
        match first_layer.get(&hex(&sha(&im.layer))) {
            Some(p) => files.push((layer_path.clone(), vec![], Some(format!("../{p}")))),
            None => {
                first_layer.insert(hex(&sha(&im.layer)), layer_path.clone());
                files.push((layer_path.clone(), im.layer.clone(), None));
            }
        }
        files.push((format!("{id}/json"), b"{}".to_vec(), None));
        files.push((format!("{id}/VERSION"), b"1.0".to_vec(), None));
        if !files.iter().any(|f| f.0 == cfg) {
            files.push((cfg.clone(), im.config.clone(), None));
        }
        mj.push(json!({"Config": cfg, "RepoTags": repo_tags, "Layers": [layer_path]}));
    }
    let mj = serde_json::to_vec(&mj).expect("json");
    let mut entries: Vec<E<'_>> = Vec::new();
    if manifest_first {
        entries.push(E::F("manifest.json", &mj));
    }
    for (name, data, link) in &files {
        match link {
            Some(t) => entries.push(E::Link(name, t)),
            None => entries.push(E::F(name, data)),
        }
    }
    entries.push(E::F("repositories", b"{}"));
    if !manifest_first {
        entries.push(E::F("manifest.json", &mj));
    }
    tar_of(&entries)
}

#[tokio::test]
async fn classic_docker_save_imports_as_schema2_with_its_tags() {
    let (_dir, s) = store().await;
    let r = repo("lab/app");
    let (a, b) = (img(1), img(2));
    let tar = classic(
        &[
            (&a, &["docker.io/library/app:1.0", "other/name:latest"]),
            (&b, &["localhost:5000/x/app:2.0"]),
        ],
        false,
    );
    let report = run(&s, &r, tar.clone()).await.expect("import");
    assert_eq!(report.format, "docker-archive");
    assert_eq!(report.images.len(), 2);
    assert_eq!(report.blobs.new, 4, "{:?}", report.blobs);
    let t = tags(&s, &r);
    assert_eq!(
        t.keys().collect::<Vec<_>>(),
        ["1.0", "2.0", "latest"],
        "{t:?}"
    );
    assert_eq!(t["1.0"], t["latest"]);
    let m = manifest(&s, &r, "1.0").await;
    assert_eq!(m["mediaType"], model::DOCKER_MANIFEST);
    assert_eq!(m["config"]["mediaType"], model::DOCKER_CONFIG);
    assert_eq!(m["config"]["digest"], sha(&a.config).to_string());
    assert_eq!(m["config"]["size"], a.config.len());
    assert_eq!(m["layers"][0]["mediaType"], model::DOCKER_LAYER_TAR);
    assert_eq!(m["layers"][0]["digest"], sha(&a.layer).to_string());
    assert_eq!(m["layers"][0]["size"], a.layer.len());
    assert!(s.repo_has_blob(&r, &sha(&b.layer)));

    // manifest.json first, gzipped, into a second repository: the same manifests.
    let r2 = repo("lab/app2");
    let tar2 = classic(
        &[
            (&a, &["docker.io/library/app:1.0", "other/name:latest"]),
            (&b, &["localhost:5000/x/app:2.0"]),
        ],
        true,
    );
    let report2 = run(&s, &r2, synth::gzip(&tar2)).await.expect("gzip import");
    assert_eq!(tags(&s, &r2), t);
    assert_eq!(report2.blobs.new, 0, "every blob was already stored");
    // And a re-import changes nothing visible.
    run(&s, &r, tar).await.expect("re-import");
    assert_eq!(tags(&s, &r), t);
}

#[tokio::test]
async fn shared_layers_come_as_symlinks_and_hard_links() {
    let (_dir, s) = store().await;
    let r = repo("shared");
    let a = img(1);
    // Two tags of one image content but different configs share the layer via a symlink.
    let mut b = img(1);
    b.config = serde_json::to_vec(&json!({
        "rootfs": {"type": "layers", "diff_ids": [sha(&a.layer).to_string()]}, "os": "linux"
    }))
    .expect("json");
    let tar = classic(&[(&a, &["a:1"]), (&b, &["b:2"])], false);
    run(&s, &r, tar).await.expect("symlinked layer");
    assert_eq!(tags(&s, &r).len(), 2);
    // A hard link (named from the archive root) works the same.
    let cfg = format!("{}.json", hex(&sha(&a.config)));
    let mj =
        serde_json::to_vec(&json!([{"Config": cfg, "RepoTags": ["h:1"], "Layers": ["l2.tar"]}]))
            .expect("json");
    let tar = tar_of(&[
        E::F("l1.tar", &a.layer),
        E::Hard("l2.tar", "l1.tar"),
        E::F(&cfg, &a.config),
        E::F("manifest.json", &mj),
    ]);
    run(&s, &repo("hard"), tar)
        .await
        .expect("hard-linked layer");
}

/// An OCI image layout: `images` as manifests named by `org.opencontainers.image.ref.name`,
/// plus an index of them tagged `multi`; `docker_form` adds docker ≥ 25's manifest.json.
fn oci_layout(images: &[(&Img, &str)], docker_form: bool) -> (Vec<u8>, Vec<Digest>) {
    oci_layout_lying(images, docker_form, 0)
}

/// [`oci_layout`] whose manifests claim `lie` more bytes per layer than the layer has.
fn oci_layout_lying(
    images: &[(&Img, &str)],
    docker_form: bool,
    lie: usize,
) -> (Vec<u8>, Vec<Digest>) {
    let mut blobs: Vec<Vec<u8>> = Vec::new();
    let mut descs = Vec::new();
    let mut digests = Vec::new();
    for (im, _) in images {
        let m = serde_json::to_vec(&json!({
            "schemaVersion": 2, "mediaType": model::OCI_MANIFEST,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                       "digest": sha(&im.config).to_string(), "size": im.config.len()},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                        "digest": sha(&im.layer).to_string(), "size": im.layer.len() + lie}],
        }))
        .expect("json");
        descs.push(
            json!({"mediaType": model::OCI_MANIFEST, "digest": sha(&m).to_string(),
                          "size": m.len(), "platform": {"os": "linux", "architecture": "amd64"}}),
        );
        digests.push(sha(&m));
        blobs.extend([im.layer.clone(), im.config.clone(), m]);
    }
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": model::OCI_INDEX, "manifests": descs,
    }))
    .expect("json");
    let mut top: Vec<Value> = images
        .iter()
        .zip(&digests)
        .map(|((_, name), d)| {
            let m = &blobs[blobs.iter().position(|b| sha(b) == *d).expect("manifest")];
            json!({"mediaType": model::OCI_MANIFEST, "digest": d.to_string(), "size": m.len(),
                   "annotations": {model::REF_NAME: name}})
        })
        .collect();
    top.push(
        json!({"mediaType": model::OCI_INDEX, "digest": sha(&index).to_string(),
                    "size": index.len(), "annotations": {model::REF_NAME: "multi"}}),
    );
    digests.push(sha(&index));
    blobs.push(index);
    let index_json =
        serde_json::to_vec(&json!({"schemaVersion": 2, "manifests": top})).expect("json");
    let names: Vec<String> = blobs
        .iter()
        .map(|b| format!("blobs/sha256/{}", hex(&sha(b))))
        .collect();
    let mut entries = vec![
        E::Dir("blobs"),
        E::Dir("blobs/sha256"),
        E::F("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#),
    ];
    let mut seen = std::collections::HashSet::new();
    for (n, b) in names.iter().zip(&blobs) {
        if seen.insert(n.clone()) {
            entries.push(E::F(n, b));
        }
    }
    let mj =
        serde_json::to_vec(&json!([{"Config": "x", "RepoTags": [], "Layers": []}])).expect("json");
    if docker_form {
        entries.push(E::F("manifest.json", &mj));
    }
    entries.push(E::F("index.json", &index_json));
    (tar_of(&entries), digests)
}

#[tokio::test]
async fn oci_layout_imports_every_image_with_ref_name_tags() {
    let (_dir, s) = store().await;
    let r = repo("oci");
    let (a, b) = (img(1), img(2));
    let (tar, digests) = oci_layout(&[(&a, "v1"), (&b, "example.com/x/y:v2")], false);
    let report = run(&s, &r, tar).await.expect("import");
    assert_eq!(report.format, "oci-archive");
    let t = tags(&s, &r);
    assert_eq!(t["v1"], digests[0].to_string());
    assert_eq!(t["v2"], digests[1].to_string());
    assert_eq!(t["multi"], digests[2].to_string());
    assert_eq!(report.images.len(), 3, "{:?}", report.images);
    let m = manifest(&s, &r, "multi").await;
    assert_eq!(m["manifests"].as_array().map(Vec::len), Some(2));
    // The docker ≥ 25 form (with manifest.json beside index.json), gzipped, reads the same.
    let (tar, _) = oci_layout(&[(&a, "v1"), (&b, "example.com/x/y:v2")], true);
    let r2 = repo("oci2");
    run(&s, &r2, synth::gzip(&tar)).await.expect("docker form");
    assert_eq!(tags(&s, &r2), t);
}

/// Imports `tar` over prior state and checks it is refused with `kind` naming `entry`, with
/// the journal byte-identical afterwards.
async fn refused(tar: Vec<u8>, kind: ErrorKind, entry: &str) -> ImportError {
    let (dir, s) = store().await;
    let r = repo("victim");
    let a = img(9);
    run(&s, &r, classic(&[(&a, &["keep:1"])], false))
        .await
        .expect("setup");
    let before = journal(dir.path());
    let dry_run = dry(dir.path(), &s, &r, tar.clone()).await;
    let e = run(&s, &r, tar)
        .await
        .expect_err("hostile archive accepted");
    // A dry run refuses the same way, except that it lists what is missing.
    match dry_run {
        Err(d) => assert_eq!(
            (d.kind, &d.entry, &d.message),
            (e.kind, &e.entry, &e.message)
        ),
        Ok(report) => {
            assert_eq!(e.kind, ErrorKind::MissingBlob, "dry run accepted {e}");
            let dr = report.dry_run.expect("dry-run report");
            assert!(!dr.would_import);
            assert!(
                dr.missing
                    .iter()
                    .any(|m| Some(&m.entry) == e.entry.as_ref()),
                "{:?} lacks {e}",
                dr.missing
            );
        }
    }
    assert_eq!(e.kind, kind, "{e}");
    assert_eq!(e.entry.as_deref(), Some(entry), "{e}");
    assert!(e.http_status() >= 400 && e.http_status() < 500, "{e}");
    assert_eq!(
        journal(dir.path()),
        before,
        "a refused import changed metadata: {e}"
    );
    e
}

#[tokio::test]
async fn hostile_classic_archives_are_refused_naming_the_entry() {
    let a = img(1);
    let cfg = format!("{}.json", hex(&sha(&a.config)));
    let mj = |layers: &[&str]| {
        serde_json::to_vec(&json!([{"Config": cfg, "RepoTags": ["a:1"], "Layers": layers}]))
            .expect("json")
    };
    let good_mj = mj(&["l/layer.tar"]);
    // Path traversal, absolute names, duplicates, devices.
    for (tar, entry) in [
        (tar_of(&[E::F("../evil", b"x")]), "../evil"),
        (tar_of(&[E::F("/etc/passwd", b"x")]), "/etc/passwd"),
        (
            tar_of(&[
                E::F("l/layer.tar", &a.layer),
                E::F("./l/layer.tar", &a.layer),
            ]),
            "./l/layer.tar",
        ),
        (
            tar_of(&[E::Link("l/layer.tar", "../../etc/shadow")]),
            "l/layer.tar",
        ),
    ] {
        refused(tar, ErrorKind::Entry, entry).await;
    }
    let mut dev = synth::raw_header("dev", Kind::CharDevice, 0, b"").to_vec();
    dev.resize(dev.len() + 2 * BLOCK, 0);
    refused(dev, ErrorKind::Entry, "dev").await;
    // A layer that is not what the config's diff_ids say.
    let other = img(2);
    let tar = tar_of(&[
        E::F("l/layer.tar", &other.layer),
        E::F(&cfg, &a.config),
        E::F("manifest.json", &good_mj),
    ]);
    let e = refused(tar, ErrorKind::Digest, "l/layer.tar").await;
    assert!(e.message.contains("diff_ids"), "{e}");
    // A layer manifest.json names that the archive lacks; one absent config.
    let tar = tar_of(&[E::F(&cfg, &a.config), E::F("manifest.json", &good_mj)]);
    refused(tar, ErrorKind::MissingBlob, "l/layer.tar").await;
    let tar = tar_of(&[
        E::F("l/layer.tar", &a.layer),
        E::F("manifest.json", &good_mj),
    ]);
    refused(tar, ErrorKind::MissingBlob, &cfg).await;
    // A link loop.
    let tar = tar_of(&[
        E::Link("l/layer.tar", "x"),
        E::Link("l/x", "layer.tar"),
        E::F(&cfg, &a.config),
        E::F("manifest.json", &good_mj),
    ]);
    refused(tar, ErrorKind::Entry, "l/layer.tar").await;
    // More layers listed than the config has.
    let tar = tar_of(&[
        E::F("l/layer.tar", &a.layer),
        E::F(&cfg, &a.config),
        E::F("manifest.json", &mj(&["l/layer.tar", "l/layer.tar"])),
    ]);
    refused(tar, ErrorKind::Manifest, "manifest.json[0]").await;
    // Two images claiming one tag.
    let b = img(2);
    let tar = classic(&[(&a, &["x/a:1"]), (&b, &["y/b:1"])], false);
    refused(tar, ErrorKind::Manifest, "manifest.json[1]").await;
    // A gzipped layer whose inflated bytes are not the DiffID; one that is not gzip.
    for layer in [synth::gzip(&other.layer), other.layer.clone()] {
        let tar = tar_of(&[
            E::F("l/layer.tar", &layer),
            E::F(&cfg, &a.config),
            E::F("manifest.json", &good_mj),
        ]);
        let e = refused(tar, ErrorKind::Digest, "l/layer.tar").await;
        assert!(e.message.contains(&sha(&other.layer).to_string()), "{e}");
    }
    // Broken manifest.json.
    let tar = tar_of(&[E::F("manifest.json", b"[{\"Config\": 3}]")]);
    refused(tar, ErrorKind::Manifest, "manifest.json").await;
}

#[tokio::test]
async fn huge_documents_are_refused_from_their_header() {
    let (_dir, s) = store().await;
    let opts = ImportOptions {
        max_manifest_json: 1000,
        ..ImportOptions::default()
    };
    let big = vec![b' '; 2000];
    for name in ["manifest.json", "index.json"] {
        let mut tar = tar_of(&[E::F("x.tar", b"x"), E::F(name, &big)]);
        tar.truncate(tar.len() - 1024);
        let e = import(&s, &repo("r"), io::Cursor::new(tar), &opts)
            .await
            .expect_err("huge document");
        assert_eq!(
            (e.kind, e.entry.as_deref()),
            (ErrorKind::TooLarge, Some(name)),
            "{e}"
        );
    }
}

#[tokio::test]
async fn hostile_oci_layouts_are_refused_naming_the_entry() {
    let a = img(1);
    let (good, _) = oci_layout(&[(&a, "v1")], false);
    let layer_entry = format!("blobs/sha256/{}", hex(&sha(&a.layer)));
    // A blob whose bytes do not hash to its name.
    let mut bad = good.clone();
    let at = find(&bad, &a.layer);
    bad[at] ^= 1;
    refused(bad, ErrorKind::Digest, &layer_entry).await;
    // A blob left out.
    let cut = remove_entry(&good, &layer_entry);
    refused(cut, ErrorKind::MissingBlob, &layer_entry).await;
    // A descriptor lying about a size: rebuild with a manifest saying one byte more.
    let (lying, _) = oci_layout_lying(&[(&a, "v1")], false, 1);
    refused(lying, ErrorKind::Size, &layer_entry).await;
    // No oci-layout; an unknown layout version; a bad name under blobs/.
    refused(
        remove_entry(&good, "oci-layout"),
        ErrorKind::Manifest,
        "oci-layout",
    )
    .await;
    let tar = tar_of(&[E::F("blobs/sha256/nothex", b"x")]);
    refused(tar, ErrorKind::Entry, "blobs/sha256/nothex").await;
    let tar = tar_of(&[
        E::F("oci-layout", br#"{"imageLayoutVersion":"9"}"#),
        E::F("index.json", br#"{"schemaVersion":2,"manifests":[]}"#),
    ]);
    refused(tar, ErrorKind::Manifest, "oci-layout").await;
}

/// Offset of `needle` in `hay`.
fn find(hay: &[u8], needle: &[u8]) -> usize {
    hay.windows(needle.len())
        .position(|w| w == needle)
        .expect("needle")
}

/// `tar` without the entries named `name` (all of them).
fn remove_entry(tar: &[u8], name: &str) -> Vec<u8> {
    filter_entries(tar, |n, _| n != name)
}

/// Rebuilds a plain ustar archive keeping entries for which `keep(name, nth-of-that-name)`.
fn filter_entries(tar: &[u8], keep: impl Fn(&str, usize) -> bool) -> Vec<u8> {
    let mut out = Vec::new();
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut at = 0;
    while at + BLOCK <= tar.len() && tar[at..at + BLOCK].iter().any(|&b| b != 0) {
        let h = &tar[at..at + BLOCK];
        let name_end = h[..100].iter().position(|&b| b == 0).unwrap_or(100);
        let name = String::from_utf8_lossy(&h[..name_end]).into_owned();
        let size_text = String::from_utf8_lossy(&h[124..135])
            .trim_matches('\0')
            .to_owned();
        let size = u64::from_str_radix(size_text.trim(), 8).expect("size");
        let len = BLOCK + (size + tarfmt::padding(size)) as usize;
        let nth = seen.entry(name.clone()).or_default();
        if keep(&name, *nth) {
            out.extend_from_slice(&tar[at..at + len]);
        }
        *nth += 1;
        at += len;
    }
    out.resize(out.len() + 2 * BLOCK, 0);
    out
}

#[tokio::test]
async fn imgpkg_tars_still_go_to_the_imgpkg_importer() {
    let (_dir, s) = store().await;
    let tar = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/imgpkg/tars/multi-image.tar"
    ))
    .expect("fixture");
    let report = run(&s, &repo("imgpkg"), tar.clone()).await.expect("imgpkg");
    assert_eq!(report.format, "imgpkg");
    let gz = synth::gzip(&tar);
    let report = run(&s, &repo("imgpkg2"), gz.clone())
        .await
        .expect("gzip imgpkg");
    assert_eq!(report.upload_bytes, gz.len() as u64);
    assert_eq!(tags(&s, &repo("imgpkg")), tags(&s, &repo("imgpkg2")));
    let e = run(&s, &repo("x"), Vec::new()).await.expect_err("empty");
    assert_eq!(e.kind, ErrorKind::Tar);
}

#[tokio::test]
async fn a_dry_run_predicts_the_import_and_changes_nothing() {
    let (dir, s) = store().await;
    let (a, b) = (img(1), img(2));
    // Classic (b's layer gzipped, as some writers store it), and an OCI layout.
    let cfg_a = format!("{}.json", hex(&sha(&a.config)));
    let cfg_b = format!("{}.json", hex(&sha(&b.config)));
    let mj = serde_json::to_vec(&json!([
        {"Config": cfg_a, "RepoTags": ["x/app:1.0", "x/app:latest"], "Layers": ["a/layer.tar"]},
        {"Config": cfg_b, "RepoTags": ["x/app:2.0"], "Layers": ["b/layer.tar.gz"]},
    ]))
    .expect("json");
    let gz = synth::gzip(&b.layer);
    let classic_tar = tar_of(&[
        E::F("a/layer.tar", &a.layer),
        E::F("b/layer.tar.gz", &gz),
        E::F(&cfg_a, &a.config),
        E::F(&cfg_b, &b.config),
        E::F("manifest.json", &mj),
    ]);
    let (oci_tar, _) = oci_layout(&[(&a, "v1"), (&b, "v2")], false);
    for (name, tar) in [("classic", classic_tar), ("oci", oci_tar)] {
        let r = repo(name);
        let report = dry(dir.path(), &s, &r, tar.clone()).await.expect("dry run");
        let d = report.dry_run.clone().expect("dry-run report");
        assert!(d.would_import && d.missing.is_empty(), "{d:?}");
        assert!(d.tags.iter().all(|t| t.change == "create"), "{d:?}");
        assert!(tags(&s, &r).is_empty());
        let real = run(&s, &r, tar.clone()).await.expect("import");
        assert_eq!(real.format, report.format);
        assert_eq!(real.blobs, report.blobs, "{name}: same blob accounting");
        assert_eq!(
            real.images, report.images,
            "{name}: same manifests and tags"
        );
        let now = tags(&s, &r);
        assert_eq!(now.len(), d.tags.len());
        for t in &d.tags {
            assert_eq!(now[&t.tag], t.digest, "{name}: {t:?}");
        }
        // Again: every tag unchanged, nothing new.
        let again = dry(dir.path(), &s, &r, tar).await.expect("dry run");
        let d = again.dry_run.expect("dry-run report");
        assert!(d.tags.iter().all(|t| t.change == "unchanged"), "{d:?}");
        assert_eq!(again.blobs.new, 0);
    }
    // A tag that moves says from what; a layer left out is listed, and the rest still
    // checked.
    let r = repo("classic");
    let before = tags(&s, &r);
    let c = img(3);
    let cfg_c = format!("{}.json", hex(&sha(&c.config)));
    let mj = serde_json::to_vec(&json!([
        {"Config": cfg_c, "RepoTags": ["x/app:1.0"], "Layers": ["c/layer.tar"]},
        {"Config": cfg_a, "RepoTags": ["x/app:3.0"], "Layers": ["gone/layer.tar"]},
    ]))
    .expect("json");
    let tar = tar_of(&[
        E::F("c/layer.tar", &c.layer),
        E::F(&cfg_c, &c.config),
        E::F(&cfg_a, &a.config),
        E::F("manifest.json", &mj),
    ]);
    let report = dry(dir.path(), &s, &r, tar).await.expect("dry run");
    let d = report.dry_run.expect("dry-run report");
    assert!(!d.would_import);
    assert_eq!(d.missing.len(), 1, "{:?}", d.missing);
    assert_eq!(d.missing[0].entry, "gone/layer.tar");
    let moved = d.tags.iter().find(|t| t.tag == "1.0").expect("1.0");
    assert_eq!(
        (moved.change, moved.from.as_ref()),
        ("move", before.get("1.0"))
    );
    assert_eq!(report.blobs.new, 2, "c's layer and config");
}
