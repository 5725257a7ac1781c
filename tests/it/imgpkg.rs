//! The imgpkg import over HTTP and through the CLI, against the real binary: the fixtures
//! written by imgpkg 0.43.1 leave exactly imgpkg's tags and manifests, hostile uploads get a
//! 4xx in the OCI error shape and change nothing, auth is enforced, re-imports are
//! idempotent and concurrent imports are safe. Also the helpers the other imgpkg test
//! modules share (a server with a known admin token, import, tag listing).

use std::collections::BTreeMap;
use std::process::Command;

use reqwest::{Client, StatusCode};
use serde_json::Value;

use airdock::imgpkg::synth::{self, Blob, Element, Image};
use airdock::imgpkg::tarfmt::Kind;

use crate::fixture::{fixture_tar, fixtures};
use crate::support::{self, get, manifest_blobs, Server, AIRDOCK_BIN};

pub(crate) const TOKEN: &str = "it-admin-token";

fn expected_json(name: &str, file: &str) -> Value {
    let bytes =
        std::fs::read(fixtures().join(format!("expected/{name}/{file}"))).expect("expected file");
    serde_json::from_slice(&bytes).expect("json")
}

fn expected_bytes(name: &str, file: &str) -> Vec<u8> {
    std::fs::read(fixtures().join(format!("expected/{name}/{file}"))).expect("expected file")
}

/// A server whose admin token is [`TOKEN`].
pub(crate) fn server() -> Server {
    Server::start_with_args(&["--admin-token", TOKEN])
}

async fn import(s: &Server, repo: &str, body: Vec<u8>) -> (StatusCode, Value) {
    import_with(s, repo, body, Some(TOKEN)).await
}

/// Imports `body` into `repo`, asserts `201 Created`, returns the report.
pub(crate) async fn import_ok(s: &Server, repo: &str, body: Vec<u8>) -> Value {
    let (status, report) = import(s, repo, body).await;
    assert_eq!(status, StatusCode::CREATED, "import into {repo}: {report}");
    report
}

/// Every `image:` value of an ImagesLock / BundleLock text.
pub(crate) fn lock_images(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("image: ").map(str::to_owned))
        .collect()
}

async fn import_with(
    s: &Server,
    repo: &str,
    body: Vec<u8>,
    token: Option<&str>,
) -> (StatusCode, Value) {
    let mut req = Client::new()
        .post(s.url(&format!("/admin/v1/import?repository={repo}")))
        .body(body);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().await.expect("request");
    let status = resp.status();
    let text = resp.text().await.expect("body");
    let json =
        serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON ({status}): {text}"));
    (status, json)
}

/// Tag → manifest digest of `repo` (empty when the repository is unknown).
pub(crate) async fn tag_map(s: &Server, repo: &str) -> BTreeMap<String, String> {
    let c = Client::new();
    let resp = get(&c, s, &format!("/v2/{repo}/tags/list")).await;
    if resp.status() == StatusCode::NOT_FOUND {
        return BTreeMap::new();
    }
    let list: Value = resp.json().await.expect("json");
    let mut out = BTreeMap::new();
    for t in list["tags"].as_array().into_iter().flatten() {
        let t = t.as_str().expect("tag");
        let head = c
            .head(s.url(&format!("/v2/{repo}/manifests/{t}")))
            .header("Accept", "*/*")
            .send()
            .await
            .expect("head");
        let d = head.headers()["docker-content-digest"]
            .to_str()
            .expect("digest")
            .to_owned();
        out.insert(t.to_owned(), d);
    }
    out
}

pub(crate) async fn get_manifest(s: &Server, repo: &str, reference: &str) -> (String, Vec<u8>) {
    let resp = Client::new()
        .get(s.url(&format!("/v2/{repo}/manifests/{reference}")))
        .header(
            "Accept",
            "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, \
             application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.list.v2+json",
        )
        .send()
        .await
        .expect("get manifest");
    assert_eq!(resp.status(), StatusCode::OK, "{repo}:{reference}");
    let ct = resp.headers()["content-type"]
        .to_str()
        .expect("ct")
        .to_owned();
    (ct, resp.bytes().await.expect("bytes").to_vec())
}

/// Every blob (layers and config) the image manifest `bytes` of `repo:t` names is servable.
pub(crate) async fn assert_blobs_servable(s: &Server, repo: &str, t: &str, bytes: &[u8]) {
    let m: Value = serde_json::from_slice(bytes).expect("json");
    for d in manifest_blobs(&m) {
        let resp = Client::new()
            .get(s.url(&format!("/v2/{repo}/blobs/{d}")))
            .send()
            .await
            .expect("blob");
        assert_eq!(resp.status(), StatusCode::OK, "blob {d} of {t}");
    }
}

/// The registry holds what imgpkg made in Distribution for `name`: same tags (the
/// ImageLocations image's own digest tag aside, see src/imgpkg/locations.rs), manifests
/// byte for byte with the right Content-Type, index children by digest, blobs servable.
pub(crate) async fn assert_fixture_state(s: &Server, repo: &str, name: &str) {
    let state = expected_json(name, "registry/registry-state.json");
    let want: Vec<String> = expected_json(name, "tags-list.json")["tags"]
        .as_array()
        .expect("tags")
        .iter()
        .map(|t| t.as_str().expect("tag").to_owned())
        .collect();
    let got = tag_map(s, repo).await;
    assert_eq!(got.len(), want.len(), "tags: {got:#?}");
    let their_loc: Vec<&str> = state["tags"]
        .as_object()
        .expect("tags")
        .iter()
        .filter(|(t, _)| t.ends_with(".image-locations.imgpkg"))
        .map(|(_, v)| v["digest"].as_str().expect("d"))
        .collect();
    for t in &want {
        let entry = &state["tags"][t];
        let digest = entry["digest"].as_str().expect("digest");
        if t.ends_with(".image-locations.imgpkg") {
            let ours = got.get(t).unwrap_or_else(|| panic!("missing {t}"));
            let (ct, bytes) = get_manifest(s, repo, t).await;
            assert_eq!(ct, "application/vnd.docker.distribution.manifest.v2+json");
            let m: Value = serde_json::from_slice(&bytes).expect("json");
            let theirs: Value = serde_json::from_slice(&expected_bytes(
                name,
                &format!("registry/manifest.{t}.json"),
            ))
            .expect("json");
            assert_eq!(m["config"], theirs["config"], "config of {t}");
            assert!(got.contains_key(&format!("sha256-{}.imgpkg", &ours[7..])));
            continue;
        }
        if their_loc.contains(&digest) {
            continue;
        }
        assert_eq!(got.get(t).map(String::as_str), Some(digest), "{t}");
        let (ct, bytes) = get_manifest(s, repo, t).await;
        assert_eq!(ct, entry["mediaType"].as_str().expect("mt"), "{t}");
        assert_eq!(
            bytes,
            expected_bytes(
                name,
                &format!("registry/{}", entry["file"].as_str().expect("f"))
            ),
            "{t}"
        );
        assert_blobs_servable(s, repo, t, &bytes).await;
        for child in entry["children"].as_array().into_iter().flatten() {
            let d = child["digest"].as_str().expect("d");
            let (_, cb) = get_manifest(s, repo, d).await;
            assert_eq!(
                cb,
                expected_bytes(
                    name,
                    &format!("registry/{}", child["file"].as_str().expect("f"))
                )
            );
        }
    }
}

#[tokio::test]
async fn fixtures_import_to_imgpkgs_registry_state() {
    let s = server();
    for (name, repo) in [
        ("guestbook-bundle", "library/guestbook-bundle"),
        ("platform-bundle", "library/platform-bundle"),
        ("multi-image", "library/multi"),
    ] {
        let report = import_ok(&s, repo, fixture_tar(name)).await;
        assert_eq!(report["repository"], repo);
        assert_fixture_state(&s, repo, name).await;
        if name != "multi-image" {
            // The relocated images.yml, as `imgpkg pull` writes it, for this server's host.
            let want = String::from_utf8(expected_bytes(name, "pull/.imgpkg/images.yml"))
                .expect("utf8")
                .replace("127.0.0.1:5001", &s.host());
            assert_eq!(report["images_yml"].as_str(), Some(want.as_str()), "{name}");
            assert_eq!(report["root_bundle"]["tag"], "1.0");
        }
    }
}

#[tokio::test]
async fn gzip_upload_by_put_and_idempotent_reimport() {
    let s = server();
    let tar = fixture_tar("platform-bundle");
    let resp = Client::new()
        .put(s.url("/admin/v1/import?repository=app/bundle"))
        .bearer_auth(TOKEN)
        .body(synth::gzip(&tar))
        .send()
        .await
        .expect("put");
    assert_eq!(resp.status(), StatusCode::CREATED);
    let first = tag_map(&s, "app/bundle").await;
    let report = import_ok(&s, "app/bundle", tar).await;
    assert_eq!(report["blobs"]["new"], 0, "{report}");
    assert_eq!(tag_map(&s, "app/bundle").await, first);
}

#[tokio::test]
async fn auth_is_required() {
    let s = server();
    for token in [None, Some("wrong"), Some("")] {
        let (status, body) = import_with(&s, "x/y", fixture_tar("multi-image"), token).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(body["errors"][0]["code"], "UNAUTHORIZED");
    }
    assert!(tag_map(&s, "x/y").await.is_empty());
    // Without --admin-token the server generates one into the data dir, mode 0600.
    let s = Server::start();
    let path = s.data_dir().join("admin-token");
    let token = std::fs::read_to_string(&path).expect("generated token");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&path).expect("meta").permissions().mode() & 0o777,
        0o600
    );
    // The line goes to stderr before `listening on` goes to stdout, but the two pipes are
    // read by separate threads: give stderr's reader a moment under load.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while !s.logs().contains("admin-token") && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(s.logs().contains("admin-token"), "token path logged");
    let (status, _) = import_with(&s, "x/y", fixture_tar("multi-image"), Some(token.trim())).await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, body) = import(&s, "Bad Name", fixture_tar("multi-image")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
}

#[tokio::test]
async fn bad_repository_names_are_refused() {
    let s = server();
    for q in ["", "repository=", "repository=UPPER", "repository=a/../b"] {
        let resp = Client::new()
            .post(s.url(&format!("/admin/v1/import?{q}")))
            .bearer_auth(TOKEN)
            .body(fixture_tar("multi-image"))
            .send()
            .await
            .expect("post");
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "{q}");
        let body: Value = resp.json().await.expect("json");
        assert_eq!(body["errors"][0]["code"], "NAME_INVALID");
    }
}

/// Hostile uploads: each gets a 4xx in the OCI error shape naming the entry, and the
/// repository's tags stay exactly as they were.
#[tokio::test]
async fn hostile_uploads_change_nothing() {
    let s = server();
    let repo = "victim/app";
    import_ok(&s, repo, fixture_tar("multi-image")).await;
    let before = tag_map(&s, repo).await;

    let tar = fixture_tar("guestbook-bundle");
    let blob_name =
        "sha256-4721db0c1b5ce42c0143576d00f45fa64732b29cee2b8c6367eb9c27399e8755.tar.gz";
    // Header offset of that 605-byte blob in the fixture.
    let blob_at = tar
        .windows(blob_name.len())
        .position(|w| w == blob_name.as_bytes())
        .expect("blob in fixture");
    assert_eq!(blob_at % 512, 0);

    let mut flipped = tar.clone();
    flipped[blob_at + 512 + 7] ^= 0x55;
    let mut zeroed = tar.clone();
    zeroed[blob_at + 512..blob_at + 512 + 605].fill(0);
    let mut symlink = tar.clone();
    symlink.truncate(tar.len() - 1024);
    symlink.extend_from_slice(&synth::raw_header("evil", Kind::Symlink, 0, b"/etc/passwd"));
    symlink.extend_from_slice(&[0u8; 1024]);
    let mut traversal = tar.clone();
    traversal.truncate(tar.len() - 1024);
    traversal.extend_from_slice(&synth::tar(&[("../../etc/cron.d/x", b"* * * * * root sh")]));
    let mut gigantic = synth::raw_header("manifest.json", Kind::Regular, 1 << 40, b"").to_vec();
    gigantic.extend_from_slice(&[b'['; 512]);

    // (what, body, status, code, entry named in the error)
    type Case<'a> = (&'a str, Vec<u8>, u16, &'a str, Option<&'a str>);
    let cases: Vec<Case> = vec![
        (
            "truncated",
            tar[..tar.len() / 2].to_vec(),
            400,
            "TAR_INVALID",
            None,
        ),
        (
            "flipped byte",
            flipped,
            400,
            "DIGEST_INVALID",
            Some(blob_name),
        ),
        (
            "zero-filled blob",
            zeroed,
            400,
            "DIGEST_INVALID",
            Some(blob_name),
        ),
        ("symlink", symlink, 400, "TAR_INVALID", Some("evil")),
        (
            "traversal",
            traversal,
            400,
            "TAR_INVALID",
            Some("../../etc/cron.d/x"),
        ),
        (
            "gigantic manifest.json",
            gigantic,
            413,
            "SIZE_INVALID",
            Some("manifest.json"),
        ),
        (
            "not a tar",
            b"hello world, this is not a tar".repeat(40),
            400,
            "TAR_INVALID",
            None,
        ),
        ("empty", Vec::new(), 400, "TAR_INVALID", None),
        (
            "zstd",
            vec![0x28, 0xb5, 0x2f, 0xfd, 1, 2, 3],
            415,
            "UNSUPPORTED",
            None,
        ),
    ];
    for (what, body, status, code, entry) in cases {
        let (got, json) = import(&s, repo, body).await;
        assert_eq!(got.as_u16(), status, "{what}: {json}");
        let e = &json["errors"][0];
        assert_eq!(e["code"], code, "{what}: {json}");
        assert!(
            e["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{what}"
        );
        if let Some(entry) = entry {
            assert_eq!(e["detail"]["entry"], entry, "{what}: {json}");
            assert!(
                e["message"].as_str().is_some_and(|m| m.contains(entry)),
                "{what}: {json}"
            );
        }
        assert_eq!(
            tag_map(&s, repo).await,
            before,
            "{what} changed the repository"
        );
    }
}

#[tokio::test]
async fn gzip_bomb_is_refused() {
    let s = server();
    // A blob entry of 8 GiB of zeros before any manifest.json: ~200 KiB compressed that
    // would inflate without end. The server's ratio guard (100:1 past 64 MiB) stops it.
    let bomb = synth::gzip_bomb(200);
    assert!(bomb.len() < 1 << 20);
    let (status, json) = import(&s, "bomb/x", bomb).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{json}");
    assert_eq!(json["errors"][0]["code"], "SIZE_INVALID");
    assert!(tag_map(&s, "bomb/x").await.is_empty());
}

#[tokio::test]
async fn concurrent_imports_are_safe() {
    let s = server();
    let tars = [
        fixture_tar("platform-bundle"),
        fixture_tar("guestbook-bundle"),
        fixture_tar("multi-image"),
        fixture_tar("platform-bundle"),
        synth::gzip(&fixture_tar("guestbook-bundle")),
    ];
    let results =
        futures_util::future::join_all(tars.into_iter().map(|t| import(&s, "shared/repo", t)))
            .await;
    for (status, json) in results {
        assert_eq!(status, StatusCode::CREATED, "{json}");
    }
    let tags = tag_map(&s, "shared/repo").await;
    assert!(tags.contains_key("v1") && tags.contains_key("1.0"));
    // Every tagged manifest is complete: fetch each and its blobs.
    for t in tags.keys() {
        let (_, bytes) = get_manifest(&s, "shared/repo", t).await;
        assert_blobs_servable(&s, "shared/repo", t, &bytes).await;
    }
}

/// A tar with a layer larger than any buffer, streamed: the import must not care.
#[tokio::test]
async fn large_layer_streams_through() {
    let s = server();
    let mut x: u64 = 0x9e3779b97f4a7c15;
    let big: Vec<u8> = (0..(48usize << 20))
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    let image = Image::oci(
        vec![Blob::new(
            "application/vnd.oci.image.layer.v1.tar+gzip",
            big,
        )],
        &[],
    );
    let tar = synth::imgpkg_tar(&[Element::Image {
        image: image.clone(),
        source_repo: "ghcr.io/org/big".into(),
        tag: "v9".into(),
        root_bundle: false,
    }]);
    import_ok(&s, "big/one", tar).await;
    assert_eq!(
        tag_map(&s, "big/one").await.get("v9"),
        Some(&image.digest.to_string())
    );
}

#[tokio::test]
async fn cli_imports_through_the_server_and_into_a_data_dir() {
    let s = server();
    let scratch = support::scratch_dir("airdock-import-cli-");
    let token_file = scratch.path().join("token");
    std::fs::write(&token_file, TOKEN).expect("token file");
    let tar = fixtures().join("tars/guestbook-bundle.tar");
    let out = Command::new(AIRDOCK_BIN)
        .args(["import"])
        .arg(&tar)
        .args([
            "--repository",
            "cli/gb",
            "--server",
            &s.base_url(),
            "--json",
            "--token-file",
        ])
        .arg(&token_file)
        .output()
        .expect("run airdock import");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).expect("JSON report on stdout");
    assert_eq!(report["repository"], "cli/gb");
    assert_fixture_state(&s, "cli/gb", "guestbook-bundle").await;

    // A refused import exits non-zero with the server's message.
    let bad = scratch.path().join("bad.tar");
    std::fs::write(&bad, &fixture_tar("guestbook-bundle")[..5000]).expect("write");
    let out = Command::new(AIRDOCK_BIN)
        .arg("import")
        .arg(&bad)
        .args(["-r", "cli/gb", "--server", &s.base_url()])
        .env("AIRDOCK_ADMIN_TOKEN", TOKEN)
        .output()
        .expect("run");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("truncated"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Straight into a data directory, then served.
    let data = support::scratch_dir("airdock-import-data-");
    let out = Command::new(AIRDOCK_BIN)
        .arg("import")
        .arg(fixtures().join("tars/platform-bundle.tar"))
        .args(["-r", "library/platform-bundle", "--data-dir"])
        .arg(data.path())
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("imported"));
    let served = Server::start_in(data, &["--admin-token", TOKEN]);
    assert_fixture_state(&served, "library/platform-bundle", "platform-bundle").await;
}
