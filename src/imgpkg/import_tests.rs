//! Tests of the import against a real store: the fixtures written by imgpkg 0.43.1 must
//! produce imgpkg's exact tags and manifests, and hostile tars must fail with a 4xx-class
//! error and leave the metadata journal byte-for-byte unchanged.

use std::collections::BTreeMap;
use std::path::Path;

use airdock_storage::{Algorithm, Reference, RepoName, Store, Tag};
use serde_json::Value;

use super::*;
use crate::imgpkg::synth::{self, Blob, Element, Image, Index};
use crate::imgpkg::tarfmt::{self, Kind, BLOCK};

const FIX: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/imgpkg");

fn fixture_tar(name: &str) -> Vec<u8> {
    std::fs::read(format!("{FIX}/tars/{name}.tar")).expect("fixture tar")
}

fn expected(name: &str, file: &str) -> Vec<u8> {
    std::fs::read(format!("{FIX}/expected/{name}/{file}")).unwrap_or_else(|e| panic!("{file}: {e}"))
}

async fn store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = Store::open(dir.path()).await.expect("open");
    (dir, s)
}

fn repo(s: &str) -> RepoName {
    RepoName::parse(s).expect("repo")
}

fn opts() -> ImportOptions {
    ImportOptions {
        registry_host: Some("127.0.0.1:5001".into()),
        ..ImportOptions::default()
    }
}

async fn run_import(s: &Store, r: &RepoName, tar: &[u8]) -> Result<ImportReport, ImportError> {
    import(s, r, tar, &opts()).await
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
                .expect("resolves");
            (t, d.to_string())
        })
        .collect()
}

fn journal(dir: &Path) -> Vec<u8> {
    std::fs::read(dir.join("meta").join("journal")).unwrap_or_default()
}

/// Splits a tar into (name, data) pairs with our own reader.
async fn entries(tar: &[u8]) -> Vec<(String, Vec<u8>)> {
    let mut r = TarReader::new(tar);
    let mut out = Vec::new();
    while let Some(e) = r.next_entry().await.expect("valid tar") {
        let data = r.read_entry_to_vec().await.expect("data");
        out.push((e.display_name(), data));
    }
    out
}

fn rebuild(entries: &[(String, Vec<u8>)]) -> Vec<u8> {
    let files: Vec<(&str, &[u8])> = entries.iter().map(|(n, d)| (n.as_str(), &d[..])).collect();
    synth::tar(&files)
}

/// Checks that the repository holds what imgpkg left in Distribution for this fixture:
/// every tag but the locations image's own digest tag (see `locations.rs` on why that
/// digest differs), every manifest byte for byte, and locations images equivalent.
async fn assert_matches_fixture(s: &Store, r: &RepoName, name: &str) {
    let state: Value =
        serde_json::from_slice(&expected(name, "registry/registry-state.json")).expect("json");
    let want_tags: Value = serde_json::from_slice(&expected(name, "tags-list.json")).expect("json");
    let got = tags(s, r);
    let theirs_loc_digests: Vec<String> = state["tags"]
        .as_object()
        .expect("tags")
        .iter()
        .filter(|(t, _)| t.ends_with(".image-locations.imgpkg"))
        .map(|(_, v)| v["digest"].as_str().expect("d").to_owned())
        .collect();
    let mut ours_loc_digests = Vec::new();
    for t in want_tags["tags"].as_array().expect("tags") {
        let t = t.as_str().expect("tag");
        let entry = &state["tags"][t];
        let their_digest = entry["digest"].as_str().expect("digest");
        if t.ends_with(".image-locations.imgpkg") {
            let ours = got.get(t).unwrap_or_else(|| panic!("missing tag {t}"));
            ours_loc_digests.push(ours.clone());
            let m = s
                .get_manifest(r, &Reference::parse(t).expect("ref"))
                .await
                .expect("manifest");
            let ours_json: Value = serde_json::from_slice(&m.bytes).expect("json");
            let theirs_json: Value =
                serde_json::from_slice(&expected(name, &format!("registry/manifest.{t}.json")))
                    .expect("json");
            // Same config blob (same DiffID, same YAML), our own gzip wrapping.
            assert_eq!(ours_json["config"], theirs_json["config"], "{t}");
            assert_eq!(m.record.media_type, manifest::DOCKER_MANIFEST);
            let own = format!("sha256-{}.imgpkg", &ours[7..]);
            assert_eq!(got.get(&own), Some(ours), "own tag of {t}");
            continue;
        }
        if theirs_loc_digests.iter().any(|d| d == their_digest)
            && t.starts_with("sha256-")
            && t.ends_with(".imgpkg")
        {
            // imgpkg's locations image's own tag: ours carries our digest instead.
            continue;
        }
        assert_eq!(
            got.get(t).map(String::as_str),
            Some(their_digest),
            "tag {t}"
        );
        let m = s
            .get_manifest(r, &Reference::parse(t).expect("ref"))
            .await
            .expect("manifest");
        assert_eq!(
            &m.bytes[..],
            &expected(
                name,
                &format!("registry/{}", entry["file"].as_str().expect("file"))
            )[..],
            "{t}"
        );
        assert_eq!(
            m.record.media_type,
            entry["mediaType"].as_str().expect("mt"),
            "{t}"
        );
    }
    // Nothing more than imgpkg made.
    assert_eq!(
        got.len(),
        want_tags["tags"].as_array().expect("tags").len(),
        "{got:#?}"
    );
    // Index children by digest, untagged.
    for t in state["tags"].as_object().expect("tags").values() {
        for child in t["children"].as_array().into_iter().flatten() {
            let d = child["digest"].as_str().expect("digest");
            let m = s
                .get_manifest(r, &Reference::parse(d).expect("ref"))
                .await
                .expect("child");
            assert_eq!(
                &m.bytes[..],
                &expected(
                    name,
                    &format!("registry/{}", child["file"].as_str().expect("f"))
                )[..]
            );
        }
    }
}

#[tokio::test]
async fn guestbook_fixture_gives_imgpkgs_registry_state() {
    let (_d, s) = store().await;
    let r = repo("library/guestbook-bundle");
    let report = run_import(&s, &r, &fixture_tar("guestbook-bundle"))
        .await
        .expect("import");
    assert_matches_fixture(&s, &r, "guestbook-bundle").await;
    let root = report.root_bundle.expect("root");
    assert_eq!(root.tag.as_deref(), Some("1.0"));
    assert_eq!(
        root.digest,
        "sha256:761c0665f7d84df2bbbd3f356246464572d85aa8b451368b629659907cf800c7"
    );
    assert_eq!(
        report.images_yml.as_deref().map(str::as_bytes),
        Some(&expected("guestbook-bundle", "pull/.imgpkg/images.yml")[..])
    );
    // 5 layers + 4 configs + locations layer and config.
    assert_eq!(report.blobs.new, 11);
    assert_eq!(report.blobs.present, 0);
    assert_eq!(report.tar_bytes, 16384);
}

#[tokio::test]
async fn nested_bundle_fixture_gives_imgpkgs_registry_state() {
    let (_d, s) = store().await;
    let r = repo("library/platform-bundle");
    let report = run_import(&s, &r, &fixture_tar("platform-bundle"))
        .await
        .expect("import");
    assert_matches_fixture(&s, &r, "platform-bundle").await;
    assert_eq!(
        report.images_yml.as_deref().map(str::as_bytes),
        Some(&expected("platform-bundle", "pull/.imgpkg/images.yml")[..])
    );
    assert_eq!(
        report
            .images
            .iter()
            .filter(|i| i.kind == "image-locations")
            .count(),
        2
    );
}

#[tokio::test]
async fn image_index_fixture_gives_imgpkgs_registry_state() {
    let (_d, s) = store().await;
    let r = repo("library/multi");
    let report = run_import(&s, &r, &fixture_tar("multi-image"))
        .await
        .expect("import");
    assert_matches_fixture(&s, &r, "multi-image").await;
    assert!(report.root_bundle.is_none());
    assert!(report.images_yml.is_none());
    assert_eq!(
        report
            .images
            .iter()
            .filter(|i| i.kind == "index-child")
            .count(),
        2
    );
}

#[tokio::test]
async fn gzip_and_reordered_tars_import_the_same() {
    let plain = fixture_tar("platform-bundle");
    let (_d1, s1) = store().await;
    let r = repo("p");
    run_import(&s1, &r, &plain).await.expect("plain");
    let want = tags(&s1, &r);

    let (_d2, s2) = store().await;
    run_import(&s2, &r, &synth::gzip(&plain))
        .await
        .expect("gzip");
    assert_eq!(tags(&s2, &r), want);

    // manifest.json last, blobs in reverse order.
    let mut es = entries(&plain).await;
    es.reverse();
    let (_d3, s3) = store().await;
    run_import(&s3, &r, &rebuild(&es)).await.expect("reordered");
    assert_eq!(tags(&s3, &r), want);
}

#[tokio::test]
async fn reimport_is_idempotent_and_skips_blobs() {
    let (dir, s) = store().await;
    let r = repo("gb");
    let tar = fixture_tar("guestbook-bundle");
    run_import(&s, &r, &tar).await.expect("first");
    let first = tags(&s, &r);
    let report = run_import(&s, &r, &tar).await.expect("second");
    assert_eq!(tags(&s, &r), first);
    assert_eq!(report.blobs.new, 0);
    assert_eq!(report.blobs.present, 11);
    // And a third time after reopening the store (a server restart).
    drop(s);
    let s = Store::open(dir.path()).await.expect("reopen");
    run_import(&s, &r, &tar).await.expect("third");
    assert_eq!(tags(&s, &r), first);
}

#[tokio::test]
async fn blobs_already_in_the_repository_need_not_be_in_the_tar() {
    let (_d, s) = store().await;
    let r = repo("gb");
    let tar = fixture_tar("guestbook-bundle");
    run_import(&s, &r, &tar).await.expect("first");
    let only_manifest: Vec<(String, Vec<u8>)> = entries(&tar)
        .await
        .into_iter()
        .filter(|(n, _)| n == "manifest.json")
        .collect();
    run_import(&s, &r, &rebuild(&only_manifest))
        .await
        .expect("closure via repository");
    // But not into another repository, which does not hold them.
    let err = run_import(&s, &repo("other"), &rebuild(&only_manifest))
        .await
        .expect_err("missing");
    assert_eq!(err.kind, ErrorKind::MissingBlob);
    assert!(
        err.entry.as_deref().is_some_and(|e| e.ends_with(".tar.gz")),
        "{err}"
    );
}

#[tokio::test]
async fn concurrent_imports_into_one_repository() {
    let (_d, s) = store().await;
    let r = repo("shared");
    let a = fixture_tar("platform-bundle");
    let b = fixture_tar("guestbook-bundle");
    let c = fixture_tar("multi-image");
    let (x, y, z, w) = tokio::join!(
        run_import(&s, &r, &a),
        run_import(&s, &r, &b),
        run_import(&s, &r, &c),
        run_import(&s, &r, &a),
    );
    for res in [x, y, z, w] {
        res.expect("import");
    }
    let got = tags(&s, &r);
    // Both bundle tars tag "1.0"; one of them wins, everything else is the union.
    assert!(got.contains_key("v1"));
    assert!(got.contains_key(
        "sha256-6a2b8f21c8169a8406833245bdb63ce7a817db3ee3a618cc51bb03bc0755752f.imgpkg"
    ));
    assert!(got.contains_key(
        "sha256-241e95e66ff93bca815ee0cc9c86e4ea4d43b63d4eee7010272d157bfff92618.imgpkg"
    ));
}

/// Asserts the import fails client-side, names an entry when `entry` says so, and leaves
/// the metadata untouched.
async fn assert_rejected(tar: &[u8], want: ErrorKind, entry: Option<&str>) -> ImportError {
    let (dir, s) = store().await;
    let r = repo("victim");
    // Some prior state that must survive.
    run_import(&s, &r, &fixture_tar("multi-image"))
        .await
        .expect("setup");
    let before = journal(dir.path());
    let before_tags = tags(&s, &r);
    let err = run_import(&s, &r, tar)
        .await
        .expect_err("hostile tar accepted");
    assert_eq!(err.kind, want, "{err}");
    assert!(err.http_status() >= 400 && err.http_status() < 500, "{err}");
    if let Some(e) = entry {
        assert_eq!(err.entry.as_deref(), Some(e), "{err}");
    }
    assert_eq!(
        journal(dir.path()),
        before,
        "metadata changed by a failed import: {err}"
    );
    assert_eq!(tags(&s, &r), before_tags);
    err
}

#[tokio::test]
async fn truncated_anywhere_is_rejected() {
    let tar = fixture_tar("guestbook-bundle");
    let (dir, s) = store().await;
    let r = repo("t");
    let mut cuts: Vec<usize> = (0..tar.len()).step_by(97).collect();
    for boundary in (BLOCK..tar.len()).step_by(BLOCK) {
        cuts.extend([boundary - 1, boundary, boundary + 1]);
    }
    cuts.push(tar.len() - 1);
    for cut in cuts {
        if cut >= tar.len() {
            continue;
        }
        let err = run_import(&s, &r, &tar[..cut])
            .await
            .expect_err(&format!("cut {cut} accepted"));
        assert!(err.http_status() < 500, "cut {cut}: {err}");
    }
    assert!(journal(dir.path()).is_empty(), "nothing committed");
    // The gzip form too.
    let gz = synth::gzip(&tar);
    for cut in (1..gz.len()).step_by(53) {
        let err = run_import(&s, &r, &gz[..cut])
            .await
            .expect_err("cut gzip accepted");
        assert!(err.http_status() < 500, "gzip cut {cut}: {err}");
    }
    assert!(journal(dir.path()).is_empty());
}

#[tokio::test]
async fn wrong_or_zeroed_blob_bytes_are_rejected() {
    let tar = fixture_tar("guestbook-bundle");
    let es = entries(&tar).await;
    let victim = es[2].0.clone();

    let mut flipped = es.clone();
    flipped[2].1[10] ^= 0xff;
    let err = assert_rejected(&rebuild(&flipped), ErrorKind::Digest, Some(&victim)).await;
    assert!(err.message.contains("hashes to"), "{err}");

    let mut zeroed = es.clone();
    zeroed[2].1.iter_mut().for_each(|b| *b = 0);
    let err = assert_rejected(&rebuild(&zeroed), ErrorKind::Digest, Some(&victim)).await;
    assert!(err.message.contains("all zero"), "{err}");

    // A whole tar zero-filled after its headers, as an interrupted --to-tar leaves it.
    let mut all_zero = es.clone();
    for e in all_zero.iter_mut().skip(1) {
        e.1.iter_mut().for_each(|b| *b = 0);
    }
    assert_rejected(&rebuild(&all_zero), ErrorKind::Digest, None).await;

    // A blob whose size differs from manifest.json (caught from the header alone).
    let mut longer = es.clone();
    longer[3].1.push(0);
    assert_rejected(&rebuild(&longer), ErrorKind::Size, Some(&es[3].0)).await;
}

#[tokio::test]
async fn bad_manifest_json_is_rejected() {
    let tar = fixture_tar("guestbook-bundle");
    let es = entries(&tar).await;
    for junk in [&b"not json"[..], b"{}", b"[]", b"[{\"Image\":{}}]", b"null"] {
        let mut bad = es.clone();
        bad[0].1 = junk.to_vec();
        assert_rejected(&rebuild(&bad), ErrorKind::Manifest, Some("manifest.json")).await;
    }
    // A Raw manifest that no longer matches its digest.
    let mut tampered = es.clone();
    let text = String::from_utf8(tampered[0].1.clone()).expect("utf8");
    tampered[0].1 = text
        .replacen("\\\"schemaVersion\\\":2", "\\\"schemaVersion\\\":3", 1)
        .into_bytes();
    assert_rejected(
        &rebuild(&tampered),
        ErrorKind::Manifest,
        Some("manifest.json"),
    )
    .await;
    // Missing manifest.json.
    assert_rejected(
        &rebuild(&es[1..]),
        ErrorKind::Manifest,
        Some("manifest.json"),
    )
    .await;
}

#[tokio::test]
async fn gigantic_manifest_json_is_refused_from_its_header() {
    let mut tar = synth::raw_header("manifest.json", Kind::Regular, 100 << 30, b"").to_vec();
    // Only the header is sent: the refusal must not wait for 100 GiB.
    tar.extend_from_slice(&[b'['; 4096]);
    assert_rejected(&tar, ErrorKind::TooLarge, Some("manifest.json")).await;
}

#[tokio::test]
async fn missing_duplicate_and_unreferenced_entries_are_rejected() {
    let tar = fixture_tar("guestbook-bundle");
    let es = entries(&tar).await;

    let mut missing = es.clone();
    let gone = missing.remove(3);
    assert_rejected(&rebuild(&missing), ErrorKind::MissingBlob, Some(&gone.0)).await;

    let mut dup = es.clone();
    dup.push(es[2].clone());
    assert_rejected(&rebuild(&dup), ErrorKind::Entry, Some(&es[2].0)).await;

    let mut dup_manifest = es.clone();
    dup_manifest.push(es[0].clone());
    assert_rejected(
        &rebuild(&dup_manifest),
        ErrorKind::Entry,
        Some("manifest.json"),
    )
    .await;

    let stray = Blob::new("x", b"stray".to_vec());
    let mut extra = es.clone();
    extra.push((stray.member(), stray.bytes.clone()));
    assert_rejected(&rebuild(&extra), ErrorKind::Entry, Some(&stray.member())).await;

    for name in [
        "../escape",
        "/etc/passwd",
        "a/../../b",
        "blobs/sha256/x",
        "index.json",
        "oci-layout",
    ] {
        let mut odd = es.clone();
        odd.insert(1, (name.to_owned(), b"x".to_vec()));
        assert_rejected(&rebuild(&odd), ErrorKind::Entry, Some(name)).await;
    }
}

#[tokio::test]
async fn links_devices_and_directories_are_rejected() {
    let tar = fixture_tar("guestbook-bundle");
    let es = entries(&tar).await;
    for (kind, link) in [
        (Kind::Symlink, &b"/etc/passwd"[..]),
        (Kind::HardLink, b"manifest.json"),
        (Kind::CharDevice, b""),
        (Kind::BlockDevice, b""),
        (Kind::Fifo, b""),
        (Kind::Directory, b""),
        (Kind::PaxGlobal, b""),
        (Kind::Other(b'Z'), b""),
    ] {
        // Named like a wanted blob, to show the type alone is refused.
        let name = es[2].0.clone();
        let mut tar = rebuild(&es[..1]);
        tar.truncate(tar.len() - 2 * BLOCK);
        tar.extend_from_slice(&synth::raw_header(&name, kind, 0, link));
        tar.extend_from_slice(&rebuild(&es[1..]));
        assert_rejected(&tar, ErrorKind::Entry, Some(&name)).await;
    }
}

#[tokio::test]
async fn structural_garbage_is_rejected() {
    let tar = fixture_tar("multi-image");
    assert_rejected(b"", ErrorKind::Tar, None).await;
    assert_rejected(&vec![0u8; 4096], ErrorKind::Manifest, Some("manifest.json")).await;
    assert_rejected(
        &[0x28, 0xb5, 0x2f, 0xfd, 0, 0, 0],
        ErrorKind::Unsupported,
        None,
    )
    .await;
    assert_rejected(
        b"this is not a tar archive at all, just text that goes on ...",
        ErrorKind::Tar,
        None,
    )
    .await;
    let mut trailing = tar.clone();
    trailing.extend_from_slice(b"garbage");
    assert_rejected(&trailing, ErrorKind::Tar, None).await;
    let mut bad_checksum = tar.clone();
    bad_checksum[0] = b'M';
    assert_rejected(&bad_checksum, ErrorKind::Tar, None).await;
    let mut gz = synth::gzip(&tar);
    let n = gz.len();
    gz[n - 5] ^= 1; // gzip length trailer
    assert_rejected(&gz, ErrorKind::Tar, None).await;
}

/// What `dd` from a raw USB stick gives: the tar, then zeros to the device's end.
#[tokio::test]
async fn tar_followed_by_megabytes_of_zeros_imports() {
    let tar = fixture_tar("multi-image");
    let (_dir, s) = store().await;
    let want = run_import(&s, &repo("plain"), &tar)
        .await
        .expect("plain tar");
    let mut padded = tar.clone();
    padded.resize(tar.len() + (2 << 20) + 512, 0);
    // The padding inside the gzip stream (the device image compressed), and after it.
    let gz_inside = synth::gzip(&padded);
    let mut gz_after = synth::gzip(&tar);
    gz_after.resize(gz_after.len() + (2 << 20) + 5, 0);
    for (form, bytes) in [
        ("padded", &padded),
        ("padded-gz", &gz_inside),
        ("gz-padded", &gz_after),
    ] {
        let report = run_import(&s, &repo(form), bytes)
            .await
            .unwrap_or_else(|e| panic!("{form}: {e}"));
        assert_eq!(report.images.len(), want.images.len(), "{form}");
        assert_eq!(tags(&s, &repo(form)), tags(&s, &repo("plain")), "{form}");
    }
}

#[tokio::test]
async fn non_zero_byte_after_zero_padding_is_named_with_its_offset() {
    let tar = fixture_tar("multi-image");
    let mut bad = tar.clone();
    bad.resize(tar.len() + (1 << 20), 0);
    let at = bad.len();
    bad.push(b'!');
    bad.resize(at + 512, 0);
    for (form, bytes) in [("plain", bad.clone()), ("gz", synth::gzip(&bad))] {
        let err = assert_rejected(&bytes, ErrorKind::Tar, None).await;
        // Not blamed on the last entry: it is past every entry.
        assert_eq!(err.entry, None, "{form}: {err}");
        let msg = err.to_string();
        assert!(
            msg.contains("0x21")
                && msg.contains(&format!("tar offset {at}"))
                && msg.contains("after the end-of-archive marker"),
            "{form}: {msg}"
        );
    }
    // Garbage after the gzip stream itself names the compressed offset.
    let mut gz = synth::gzip(&tar);
    let gz_len = gz.len();
    gz.resize(gz_len + 4096, 0);
    gz.push(b'x');
    let err = assert_rejected(&gz, ErrorKind::Tar, None).await;
    assert_eq!(err.entry, None, "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("0x78") && msg.contains(&format!("compressed offset {}", gz_len + 4096)),
        "{msg}"
    );
}

#[tokio::test]
async fn gzip_bomb_is_stopped() {
    // A blob entry claiming 8 GiB of zeros, before manifest.json so no size is known yet:
    // the inflate ratio guard must stop it.
    let bomb = synth::gzip_bomb(24);
    let (dir, s) = store().await;
    let mut o = opts();
    o.inflate.free_bytes = 4 << 20;
    let err = import(&s, &repo("b"), &bomb[..], &o)
        .await
        .expect_err("bomb");
    assert_eq!(err.kind, ErrorKind::TooLarge, "{err}");
    assert_eq!(err.http_status(), 413);
    assert!(journal(dir.path()).is_empty());
    // Nothing left behind in the store's temp dir either.
    let tmp = std::fs::read_dir(dir.path().join("tmp"))
        .expect("tmp")
        .count();
    assert_eq!(tmp, 0);
}

fn layer(n: u8) -> Blob {
    Blob::new(
        "application/vnd.oci.image.layer.v1.tar+gzip",
        synth::gzip(&[n; 300]),
    )
}

fn element(image: Image, repo: &str) -> Element {
    Element::Image {
        image,
        source_repo: repo.into(),
        tag: String::new(),
        root_bundle: false,
    }
}

#[tokio::test]
async fn synthetic_bundle_with_foreign_layer_and_index() {
    let app = Image::oci(vec![layer(1), layer(2)], &[]);
    let foreign = Blob::new(
        "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
        vec![9; 100],
    );
    let win = Image::docker(vec![foreign.clone(), layer(3)], &[]);
    let idx = Index::new(vec![
        Image::oci(vec![layer(4)], &[]),
        Image::oci(vec![layer(5)], &[]),
    ]);
    let yml = synth::images_yml(&[
        app.reference("ghcr.io/org/app"),
        win.reference("docker.io/org/win"),
        format!("ghcr.io/org/multi@{}", idx.digest),
    ]);
    let bundle = Image::bundle(&yml, &[("config/app.yaml", b"kind: x\n")]);
    let elements = vec![
        Element::Image {
            image: bundle.clone(),
            source_repo: "ghcr.io/org/bundle".into(),
            tag: "2.0".into(),
            root_bundle: true,
        },
        element(app.clone(), "ghcr.io/org/app"),
        element(win.clone(), "index.docker.io/org/win"),
        Element::Index {
            index: idx.clone(),
            source_repo: "ghcr.io/org/multi".into(),
            tag: String::new(),
        },
    ];
    let full = synth::imgpkg_tar(&elements);
    // imgpkg leaves foreign layers out of the tar by default.
    let es: Vec<(String, Vec<u8>)> = entries(&full)
        .await
        .into_iter()
        .filter(|(n, _)| *n != foreign.member())
        .collect();
    let (_d, s) = store().await;
    let r = repo("mirror/app");
    let report = run_import(&s, &r, &rebuild(&es)).await.expect("import");
    assert_eq!(report.blobs.skipped_non_distributable, 1);
    let got = tags(&s, &r);
    assert_eq!(got.get("2.0"), Some(&bundle.digest.to_string()));
    let loc_tag = names::locations_tag(&bundle.digest);
    let loc = s
        .get_manifest(&r, &Reference::parse(&loc_tag).expect("t"))
        .await
        .expect("locations");
    let m: Value = serde_json::from_slice(&loc.bytes).expect("json");
    let layer_digest =
        airdock_storage::Digest::parse(m["layers"][0]["digest"].as_str().expect("d")).expect("d");
    let (mut file, _) = s
        .open_blob(&r, &layer_digest)
        .await
        .expect("locations layer linked");
    let mut bytes = Vec::new();
    tokio::io::AsyncReadExt::read_to_end(&mut file, &mut bytes)
        .await
        .expect("read");
    let mut yaml = String::new();
    let gz = flate2::read::GzDecoder::new(&bytes[..]);
    for e in tar::Archive::new(gz).entries().expect("tar") {
        let mut e = e.expect("entry");
        if e.path().expect("p").ends_with("image-locations.yml") {
            std::io::Read::read_to_string(&mut e, &mut yaml).expect("read");
        }
    }
    // docker.io normalised, sorted, the index is not a bundle.
    assert_eq!(
        yaml,
        format!(
            "---\napiVersion: imgpkg.carvel.dev/v1alpha1\nimages:\n- image: ghcr.io/org/app@{}\n  isBundle: false\n- image: ghcr.io/org/multi@{}\n  isBundle: false\n- image: index.docker.io/org/win@{}\n  isBundle: false\nkind: ImageLocations\n",
            app.digest, idx.digest, win.digest
        )
    );
    // Index children by digest, the foreign layer absent but its manifest accepted.
    for child in &idx.children {
        assert!(s.repo_has_manifest(
            &r,
            &airdock_storage::Digest::parse(&child.digest.to_string()).expect("d")
        ));
    }
    let foreign = airdock_storage::Digest::parse(&foreign.digest.to_string()).expect("d");
    assert!(!s.blob_exists(&foreign).await.expect("stat"));
    let yml_out = report.images_yml.expect("images.yml");
    assert!(
        yml_out.contains(&format!("image: 127.0.0.1:5001/mirror/app@{}", win.digest)),
        "{yml_out}"
    );
}

#[tokio::test]
async fn bundle_referencing_images_outside_the_tar_is_rejected() {
    let app = Image::oci(vec![layer(1)], &[]);
    let ghost = Image::oci(vec![layer(2)], &[]);
    let yml = synth::images_yml(&[app.reference("r.io/app"), ghost.reference("r.io/ghost")]);
    let bundle = Image::bundle(&yml, &[]);
    let tar = synth::imgpkg_tar(&[
        Element::Image {
            image: bundle,
            source_repo: "r.io/bundle".into(),
            tag: "1".into(),
            root_bundle: true,
        },
        element(app, "r.io/app"),
    ]);
    let err = assert_rejected(&tar, ErrorKind::Manifest, None).await;
    assert!(err.message.contains("not in the tar"), "{err}");
}

#[tokio::test]
async fn index_with_unknown_child_media_type_is_rejected() {
    let child = Image::oci(vec![layer(1)], &[]);
    let mut idx = Index::new(vec![child]);
    idx.manifest = idx
        .manifest
        .replace(manifest::OCI_MANIFEST, "application/vnd.example.thing");
    idx.digest = Digest::of(Algorithm::Sha256, idx.manifest.as_bytes());
    let tar = synth::imgpkg_tar(&[Element::Index {
        index: idx,
        source_repo: "r.io/multi".into(),
        tag: "v".into(),
    }]);
    let err = assert_rejected(&tar, ErrorKind::Manifest, Some("manifest.json")).await;
    assert!(err.message.contains("unknown child"), "{err}");
}

#[test]
fn member_names() {
    assert!(matches!(
        classify(b"manifest.json"),
        Ok(Member::ManifestJson)
    ));
    let hex = "a".repeat(64);
    assert!(matches!(
        classify(format!("sha256-{hex}.tar.gz").as_bytes()),
        Ok(Member::Blob(_))
    ));
    assert!(matches!(
        classify(format!("sha512-{}.tar.gz", "b".repeat(128)).as_bytes()),
        Ok(Member::Blob(_))
    ));
    for bad in [
        "./manifest.json",
        "sha256-abc.tar.gz",
        "md5-x.tar.gz",
        "MANIFEST.JSON",
        "sha256-AA.tar.gz",
    ] {
        assert!(classify(bad.as_bytes()).is_err(), "{bad}");
    }
    assert_eq!(clean_path(b"./.imgpkg//images.yml"), b".imgpkg/images.yml");
    let _ = tarfmt::padding(0);
}

/// Seeded random corruption (flips, cuts, insertions, zeroed runs) of a real tar, plain and
/// gzip: the import never panics, never blames itself (5xx), and a refusal commits nothing.
#[tokio::test]
async fn random_corruption_is_refused_cleanly() {
    let plain = fixture_tar("platform-bundle");
    let gz = synth::gzip(&plain);
    let (dir, s) = store().await;
    let r = repo("fuzz");
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for i in 0..400 {
        let mut t = if i % 4 == 3 {
            gz.clone()
        } else {
            plain.clone()
        };
        let p = (next() as usize) % t.len();
        match next() % 4 {
            0 => t[p] ^= (next() as u8) | 1,
            1 => t.truncate(p),
            2 => {
                let n = (next() % 64) as usize + 1;
                let byte = next() as u8;
                t.splice(p..p, std::iter::repeat_n(byte, n));
            }
            _ => {
                let end = (p + (next() % 2048) as usize).min(t.len());
                t[p..end].fill(0);
            }
        }
        let before = journal(dir.path());
        if let Err(e) = run_import(&s, &r, &t).await {
            assert!(e.http_status() < 500, "case {i}: {e}");
            assert_eq!(journal(dir.path()), before, "case {i} committed: {e}");
        }
    }
}
