//! airdock with `storage.driver: s3`: its configuration as `airdock config check` sees it,
//! and a server keeping its blobs in a real S3 server (versitygw on loopback).

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use airdock_storage_s3::testing::{self, Versitygw};
use reqwest::StatusCode;

use crate::security::airdock;
use crate::support::{self, scratch_dir, Server, AIRDOCK_BIN};

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

#[test]
fn s3_keys_are_checked() {
    let dir = scratch_dir("airdock-s3cfg-");
    let check = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).expect("write");
        airdock(&["config", "check", path.to_str().expect("utf-8")], "")
    };
    let good = "storage:\n  driver: s3\n  s3:\n    endpoint: http://127.0.0.1:9000\n    \
bucket: reg\n    prefix: lab\n    redirect: true\n";
    let (ok, out, err) = check("good.yaml", good);
    assert!(ok, "{out}{err}");
    let (ok, _, err) = check(
        "typo.yaml",
        "storage:\n  driver: s3\n  s3:\n    buckt: reg\n",
    );
    assert!(
        !ok && err.contains("line 4") && err.contains("buckt"),
        "{err}"
    );
    let (ok, _, err) = check("nobucket.yaml", "storage:\n  driver: s3\n");
    assert!(!ok && err.contains("storage.s3.bucket"), "{err}");
    let (ok, _, err) = check("nodriver.yaml", "storage:\n  s3:\n    bucket: reg\n");
    assert!(!ok && err.contains("storage.driver"), "{err}");
    let (ok, _, err) = check("url.yaml", "storage:\n  s3:\n    endpoint: minio:9000\n");
    assert!(
        !ok && err.contains("line 3") && err.contains("http(s) URL"),
        "{err}"
    );
}

/// A server on S3 with its data dir, and the versitygw it uses (stopped by PID on drop).
pub(crate) struct OnS3 {
    pub(crate) server: Server,
    pub(crate) gw: Versitygw,
}

pub(crate) const S3_ENV: [(&str, &str); 2] = [
    ("AWS_ACCESS_KEY_ID", testing::ACCESS_KEY),
    ("AWS_SECRET_ACCESS_KEY", testing::SECRET_KEY),
];

/// `airdock serve --storage s3` against a fresh versitygw, keys under `prefix`.
pub(crate) fn serve_on_s3(prefix: &str, extra: &[&str]) -> OnS3 {
    let gw = Versitygw::start();
    let flags = s3_flags(&gw, prefix);
    let mut args: Vec<&str> = flags.iter().map(String::as_str).collect();
    args.extend_from_slice(extra);
    let data = scratch_dir("airdock-s3-");
    let server = Server::start_in_env(data, &args, &S3_ENV);
    OnS3 { server, gw }
}

/// The storage flags of a server whose blobs are in `gw`'s bucket under `prefix`.
pub(crate) fn s3_flags(gw: &Versitygw, prefix: &str) -> Vec<String> {
    let bucket = testing::BUCKET;
    let flags = ["--storage", "s3", "--s3-endpoint", &gw.endpoint()];
    let flags = flags
        .into_iter()
        .chain(["--s3-bucket", bucket, "--s3-prefix", prefix]);
    flags.map(str::to_owned).collect()
}

/// `airdock` with the S3 credentials in its environment.
pub(crate) fn airdock_s3(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(AIRDOCK_BIN)
        .args(args)
        .envs(S3_ENV)
        .stdin(Stdio::null())
        .output()
        .expect("run airdock");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Everything a pull and a push touch goes to the bucket and comes back from it: monolithic
/// and chunked blob pushes, manifests, `HEAD`, `GET` with `Range`, a mount, a restart; the
/// data dir holds no blob file. The data dir is bound to its bucket: served again without
/// storage flags it finds it, with another bucket it is refused; offline gc and fsck (and its
/// repair) work through the bucket, and backup, which still copies files, refuses it.
#[tokio::test]
async fn serve_on_s3_keeps_every_blob_in_the_bucket() {
    let mut s3 = serve_on_s3("lab/one", &[]);
    let s = &s3.server;
    let c = support::client(Duration::from_secs(30));
    let config = b"{}".to_vec();
    let layer = support::xorshift_bytes(12 << 20, 7);
    let cfg = support::push_blob(&c, s, "app", &config).await;
    // The layer in two chunks, the first under S3's 5 MiB part minimum.
    let loc = support::post(&c, s, "/v2/app/blobs/uploads/").await;
    assert_eq!(loc.status(), StatusCode::ACCEPTED);
    let mut at = loc.headers()["location"]
        .to_str()
        .expect("location")
        .to_owned();
    for (start, end) in [(0usize, 3 << 20), (3 << 20, layer.len())] {
        let r = support::patch_chunk(&c, &s.url(&at), start, &layer[start..end]).await;
        assert_eq!(r.status(), StatusCode::ACCEPTED);
        at = r.headers()["location"]
            .to_str()
            .expect("location")
            .to_owned();
    }
    let lay = support::sha256(&layer);
    let sep = if at.contains('?') { '&' } else { '?' };
    let r = c
        .put(s.url(&format!("{at}{sep}digest={lay}")))
        .send()
        .await
        .expect("put");
    assert_eq!(r.status(), StatusCode::CREATED);
    let manifest = support::image_manifest(&cfg, config.len(), &lay, layer.len());
    let r = support::put_manifest(&c, s, "app", "v1", OCI_MANIFEST, manifest.as_bytes()).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    // Mounted into another repository from the bucket.
    let r = support::post(
        &c,
        s,
        &format!("/v2/other/blobs/uploads/?mount={lay}&from=app"),
    )
    .await;
    assert_eq!(r.status(), StatusCode::CREATED);

    let check = |s: &Server| {
        // A fresh client: a pooled connection to a server since restarted would fail.
        let c = support::client(Duration::from_secs(30));
        let (lay, layer, manifest) = (lay.clone(), layer.clone(), manifest.clone());
        let url = s.url("");
        async move {
            let url = |p: &str| format!("{}{p}", url.trim_end_matches('/'));
            let m = c
                .get(url("/v2/app/manifests/v1"))
                .header("Accept", OCI_MANIFEST);
            let m = m.send().await.expect("manifest");
            assert_eq!(m.status(), StatusCode::OK);
            assert_eq!(m.bytes().await.expect("bytes"), manifest.as_bytes());
            for repo in ["app", "other"] {
                let got = c.get(url(&format!("/v2/{repo}/blobs/{lay}"))).send().await;
                let got = got.expect("get").bytes().await.expect("bytes");
                assert!(got == layer, "{repo}: the layer comes back whole");
            }
            let head = c.head(url(&format!("/v2/app/blobs/{lay}"))).send().await;
            let head = head.expect("head");
            assert_eq!(
                head.headers()["content-length"],
                layer.len().to_string().as_str()
            );
            let part = c
                .get(url(&format!("/v2/app/blobs/{lay}")))
                .header("Range", "bytes=5000000-5000099")
                .send()
                .await
                .expect("range");
            assert_eq!(part.status(), StatusCode::PARTIAL_CONTENT);
            let want = format!("bytes 5000000-5000099/{}", layer.len());
            assert_eq!(part.headers()["content-range"], want.as_str());
            assert_eq!(
                part.bytes().await.expect("bytes"),
                &layer[5_000_000..5_000_100]
            );
        }
    };
    check(s).await;
    let objects = walk(&s3.gw.root.path().join(testing::BUCKET).join("lab/one"));
    assert!(
        objects >= 3,
        "config, layer and manifest are objects: {objects}"
    );
    assert_eq!(
        walk(&s.data_dir().join("blobs")),
        0,
        "no blob file on local disk"
    );

    // Restarted with the same flags; then without any (the data dir names its bucket).
    s3.server.restart();
    check(&s3.server).await;
    let data = s3.server.data_dir().to_owned();
    let data_arg = data.to_str().expect("utf-8").to_owned();
    s3.server.kill();
    // Offline GC finds the bucket in the data dir; after a kill -9 (GC's clock may have lost
    // touches) every blob counts as used at the next open, so within the default window it
    // deletes nothing.
    let (ok, out, err) = airdock_s3(&["gc", "--data-dir", &data_arg]);
    assert!(ok, "{out}{err}");
    let report: serde_json::Value = serde_json::from_str(&out).expect("gc report");
    assert_eq!(report["blobs_deleted"], 0, "{report}");
    assert!(report["blobs_kept"].as_u64() >= Some(3), "{report}");
    // fsck re-hashes every object through the bucket: clean, then a rotten object is found
    // (and named); a repair is refused on S3 rather than done halfway.
    let (ok, out, err) = airdock_s3(&["fsck", "--data-dir", &data_arg]);
    assert!(ok, "{out}{err}");
    let report: serde_json::Value = serde_json::from_str(&out).expect("fsck report");
    assert!(report["blobs_checked"].as_u64() >= Some(3), "{report}");
    let hex = cfg.trim_start_matches("sha256:");
    let key = format!("lab/one/blobs/sha256/{}/{hex}", &hex[..2]);
    std::fs::write(s3.gw.object_path(&key), b"{\"rotten\":1}").expect("rot the config");
    let (ok, out, _) = airdock_s3(&["fsck", "--data-dir", &data_arg]);
    assert!(
        !ok && out.contains(&cfg),
        "the rotten config is named: {out}"
    );
    // The repair moves it aside in the bucket (a copy under quarantine/, then the delete)
    // and drops its link; a second check is clean.
    let (ok, out, err) = airdock_s3(&["fsck", "--repair", "--data-dir", &data_arg]);
    assert!(ok, "{out}{err}");
    let report: serde_json::Value = serde_json::from_str(&out).expect("repair report");
    let moved = report["quarantined"][0]
        .as_str()
        .expect("quarantined")
        .to_owned();
    assert!(moved.starts_with("lab/one/quarantine/sha256-"), "{report}");
    assert_eq!(
        std::fs::read(s3.gw.object_path(&moved)).expect("kept"),
        b"{\"rotten\":1}"
    );
    assert!(!s3.gw.object_path(&key).exists(), "gone from blobs/");
    let (ok, out, err) = airdock_s3(&["fsck", "--data-dir", &data_arg]);
    assert!(ok, "a repaired store checks clean: {out}{err}");
    let to = data.join("backup.tar");
    let (ok, _, err) = airdock_s3(&[
        "backup",
        "--data-dir",
        &data_arg,
        "--to",
        to.to_str().expect("utf-8"),
    ]);
    assert!(!ok && err.contains("not supported"), "{err}");
    let mut args = vec!["serve", "--addr", "127.0.0.1:0", "--data-dir", &data_arg];
    let flags = s3_flags(&s3.gw, "lab/two");
    args.extend(flags.iter().map(String::as_str));
    let (ok, _, err) = airdock_s3(&args);
    assert!(
        !ok && err.contains("keeps its blobs in bucket airdock (prefix lab/one)"),
        "{err}"
    );
    // The data dir moved elsewhere and served with no storage flags at all.
    let moved = scratch_dir("airdock-s3-again-");
    std::fs::rename(&data, moved.path()).expect("move the data dir");
    let served = Server::start_in_env(moved, &[], &S3_ENV);
    check(&served).await;
}

/// Files under `dir`, recursively (0 if it does not exist).
fn walk(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| {
            let p = e.path();
            if p.is_dir() {
                walk(&p)
            } else {
                1
            }
        })
        .sum()
}

/// `--s3-redirect`: a blob GET answers 307 to a presigned URL the bucket serves; a blob the
/// repository does not hold is still 404 (the redirect is decided after the read check).
#[tokio::test]
async fn redirects_blob_gets_to_presigned_urls_when_asked() {
    let s3 = serve_on_s3("", &["--s3-redirect"]);
    let s = &s3.server;
    let c = support::client(Duration::from_secs(30));
    let bytes = b"presigned".to_vec();
    let d = support::push_blob(&c, s, "app", &bytes).await;
    let plain = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let r = plain
        .get(s.url(&format!("/v2/app/blobs/{d}")))
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), StatusCode::TEMPORARY_REDIRECT);
    let to = r.headers()["location"]
        .to_str()
        .expect("location")
        .to_owned();
    assert!(to.contains("X-Amz-Signature"), "{to}");
    let got = plain.get(&to).send().await.expect("presigned get");
    assert_eq!(got.status(), StatusCode::OK);
    assert_eq!(got.bytes().await.expect("bytes"), &bytes[..]);
    let r = plain
        .get(s.url(&format!("/v2/elsewhere/blobs/{d}")))
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    // HEAD is answered here, never redirected.
    let r = plain
        .head(s.url(&format!("/v2/app/blobs/{d}")))
        .send()
        .await
        .expect("head");
    assert_eq!(r.status(), StatusCode::OK);
}

/// The imgpkg fixtures import into airdock on S3 (the import streams every blob through the
/// same contract as a push), list the tags imgpkg's own registry had, and the real `imgpkg
/// pull --recursive` of each bundle finds every image relocated next to it, also after a
/// restart.
#[tokio::test]
async fn imgpkg_fixtures_import_and_pull_on_s3() {
    let mut s3 = serve_on_s3("fixtures", &["--admin-token", crate::imgpkg::TOKEN]);
    let imgpkg = crate::imgpkg_tools::Imgpkg::new("airdock-s3-imgpkg-");
    let mut bundles = Vec::new();
    for name in ["multi-image", "platform-bundle", "guestbook-bundle"] {
        let repo = format!("lab/{name}");
        let report =
            crate::imgpkg::import_ok(&s3.server, &repo, crate::fixture::fixture_tar(name)).await;
        // Tags, manifests byte for byte, index children and blobs as imgpkg's own registry
        // held them (the fixture tests' check, here against the bucket).
        crate::imgpkg::assert_fixture_state(&s3.server, &repo, name).await;
        if let Some(tag) = report["root_bundle"]["tag"].as_str() {
            bundles.push((repo, tag.to_owned()));
        }
    }
    assert_eq!(bundles.len(), 2, "both bundle fixtures are bundles");
    let pull_all = |s: &Server, round: &str| {
        let host = s.host();
        for (repo, tag) in &bundles {
            let out = imgpkg
                .dir()
                .join(format!("{round}-{}", repo.replace('/', "-")));
            let stdout = imgpkg.pull(&format!("{host}/{repo}:{tag}"), &out);
            assert!(
                stdout.contains("is hosting every image"),
                "{repo}: {stdout}"
            );
            let images = crate::imgpkg_tools::lock_file_images(&out.join(".imgpkg/images.yml"));
            assert!(!images.is_empty(), "{repo}");
            for img in &images {
                assert!(img.starts_with(&format!("{host}/{repo}@sha256:")), "{img}");
            }
        }
    };
    pull_all(&s3.server, "first");
    assert_eq!(
        walk(&s3.server.data_dir().join("blobs")),
        0,
        "no blob file on local disk"
    );
    s3.server.restart();
    pull_all(&s3.server, "restarted");
}

/// containerd (`ctr images pull`, unpacked by the native snapshotter) pulls an image pushed to
/// airdock on S3, and the unpacked files are the image's: every layer came out of the bucket.
#[test]
fn containerd_pulls_an_image_from_s3() {
    use crate::clients::containerd::Containerd;
    use crate::clients::harness::Http;
    use crate::clients::image::{host_arch, Flavor, Image};
    let c = Containerd::start();
    let s3 = serve_on_s3("ctr", &[]);
    let http = Http::new();
    let image = Image::build(Flavor::Docker, host_arch(), "s3");
    image.push_http(&http, &s3.server, "clients/s3", "v1");
    let reference = format!("{}/clients/s3:v1", s3.server.host());
    c.pull_plain_http("airdock", &reference);
    c.assert_unpacked("airdock", &reference, &image);
    assert_eq!(
        walk(&s3.server.data_dir().join("blobs")),
        0,
        "no blob file on local disk"
    );
}

/// docker (its own dockerd) pushes an image from a `docker save` archive to airdock on S3
/// and pulls it back by tag and by digest from nothing local: every blob went into the bucket
/// and came out of it.
#[test]
fn docker_pushes_and_pulls_an_image_on_s3() {
    use crate::clients::docker::Docker;
    use crate::clients::harness::{state_dir, Http};
    use crate::clients::image::{host_arch, resolve, Flavor, Image};
    let docker = Docker::start();
    let s3 = serve_on_s3("docker", &[]);
    let http = Http::new();
    let work = state_dir("airdock-docker-s3-");
    let image = Image::build(Flavor::Docker, host_arch(), "docker-s3");
    let remote = format!("{}/clients/docker-s3:v1", s3.server.host());
    let digest = docker.load_and_push(&image, &remote, work.path());
    assert_eq!(
        resolve(&http, &s3.server, "clients/docker-s3", "v1").as_deref(),
        Some(digest.as_str())
    );
    assert_eq!(
        walk(&s3.server.data_dir().join("blobs")),
        0,
        "no blob file on local disk"
    );
    docker.assert_pulls_back(&image, &remote, &digest, work.path());
}

/// `POST /admin/v1/gc?grace=GRACE` as the admin: 200 and its report.
async fn run_gc(c: &reqwest::Client, s: &Server, grace: &str) -> serde_json::Value {
    let r = c
        .post(s.url(&format!("/admin/v1/gc?grace={grace}")))
        .bearer_auth(crate::imgpkg::TOKEN)
        .send()
        .await
        .expect("gc");
    assert_eq!(r.status(), StatusCode::OK);
    r.json::<serde_json::Value>().await.expect("report")
}

/// GC on S3 (`POST /admin/v1/gc`): the blobs of a deleted image leave the bucket, the kept
/// image still pulls whole, and a second run deletes nothing.
#[tokio::test]
async fn gc_on_s3_deletes_only_unreferenced_objects() {
    let s3 = serve_on_s3("gc", &["--admin-token", crate::imgpkg::TOKEN]);
    let s = &s3.server;
    let c = support::client(Duration::from_secs(30));
    let mut images = Vec::new();
    for seed in ["kept", "dropped"] {
        let config = format!("{{\"{seed}\":1}}").into_bytes();
        let layer = support::xorshift_bytes(1 << 20, seed.len() as u64);
        let cfg = support::push_blob(&c, s, "app", &config).await;
        let lay = support::push_blob(&c, s, "app", &layer).await;
        let m = support::image_manifest(&cfg, config.len(), &lay, layer.len());
        let r = support::put_manifest(&c, s, "app", seed, OCI_MANIFEST, m.as_bytes()).await;
        assert_eq!(r.status(), StatusCode::CREATED);
        images.push((support::sha256(m.as_bytes()), lay, layer));
    }
    let bucket = s3.gw.root.path().join(testing::BUCKET).join("gc");
    let before = walk(&bucket);
    let r = support::delete(&c, s, &format!("/v2/app/manifests/{}", images[1].0)).await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let report = run_gc(&c, s, "0s").await;
    assert_eq!(report["blobs_deleted"], 3, "{report}");
    assert_eq!(
        walk(&bucket),
        before - 3,
        "manifest, config and layer objects are gone"
    );
    let (kept, lay, layer) = &images[0];
    let m = c
        .get(s.url("/v2/app/manifests/kept"))
        .header("Accept", OCI_MANIFEST)
        .send()
        .await
        .expect("manifest");
    assert_eq!(m.status(), StatusCode::OK);
    assert_eq!(support::sha256(&m.bytes().await.expect("bytes")), *kept);
    let got = c.get(s.url(&format!("/v2/app/blobs/{lay}"))).send().await;
    assert!(got.expect("get").bytes().await.expect("bytes") == layer[..]);
    let dropped = &images[1].1;
    let r = support::head(&c, s, &format!("/v2/app/blobs/{dropped}")).await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let again = run_gc(&c, s, "0s").await;
    assert_eq!(again["blobs_deleted"], 0, "{again}");
}

/// An upload session that grew past one part has a multipart upload open in the bucket;
/// when the session expires (`--upload-ttl`), that multipart upload is aborted, so no
/// orphaned parts are left in the bucket.
#[tokio::test]
async fn expired_sessions_abort_their_multipart_uploads() {
    let s3 = serve_on_s3("expiry", &["--upload-ttl", "2s"]);
    let s = &s3.server;
    let c = support::client(Duration::from_secs(30));
    let loc = support::post(&c, s, "/v2/app/blobs/uploads/").await;
    assert_eq!(loc.status(), StatusCode::ACCEPTED);
    let at = loc.headers()["location"]
        .to_str()
        .expect("location")
        .to_owned();
    let chunk = support::xorshift_bytes(9 << 20, 3);
    let r = c
        .patch(s.url(&at))
        .header("Content-Type", "application/octet-stream")
        .header("Content-Range", format!("0-{}", chunk.len() - 1))
        .body(chunk)
        .send()
        .await
        .expect("patch");
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    // versitygw keeps the parts of open multipart uploads as files under the bucket's
    // hidden staging directory until they are completed or aborted.
    let bucket = s3.gw.root.path().join(testing::BUCKET);
    let staged = |bucket: &Path| {
        std::fs::read_dir(bucket)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with('.'))
            .map(|e| walk(&e.path()))
            .sum::<usize>()
    };
    assert!(staged(&bucket) > 0, "a part is staged in the bucket");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while staged(&bucket) > 0 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        staged(&bucket),
        0,
        "the expired session's multipart upload was aborted"
    );
    let r = c.get(s.url(&at)).send().await.expect("status");
    assert_eq!(r.status(), StatusCode::NOT_FOUND, "the session is gone");
}

/// Issue 11: on S3, GC's clock is kept beside the journal (`meta/clock`), not in memory: an
/// unreferenced blob's grace window runs on across a clean restart (SIGTERM), so a GC right
/// after it collects a blob last used before the window; after a kill -9 the touches since
/// the last clean stop may be lost, and every blob counts as used at the restart.
#[tokio::test]
async fn gc_clock_survives_a_clean_restart_on_s3() {
    let mut s3 = serve_on_s3("clock", &["--admin-token", crate::imgpkg::TOKEN]);
    for (clean, seed) in [(true, 1u64), (false, 2)] {
        // A blob no manifest references: GC drops its link and the object once it is old.
        let c = support::client(Duration::from_secs(30));
        let d =
            support::push_blob(&c, &s3.server, "app", &support::xorshift_bytes(1000, seed)).await;
        tokio::time::sleep(Duration::from_secs(4)).await;
        if clean {
            s3.server.restart_graceful();
        } else {
            s3.server.restart();
        }
        let report = run_gc(&support::client(Duration::from_secs(30)), &s3.server, "3s").await;
        let head = support::head(
            &support::client(Duration::from_secs(30)),
            &s3.server,
            &format!("/v2/app/blobs/{d}"),
        )
        .await;
        if clean {
            assert_eq!(report["blobs_deleted"], 1, "{report}");
            assert_eq!(head.status(), StatusCode::NOT_FOUND);
        } else {
            assert_eq!(report["blobs_deleted"], 0, "{report}");
            assert_eq!(report["held_back"]["blobs"], 1, "{report}");
            assert_eq!(head.status(), StatusCode::OK);
        }
    }
}

/// On S3 an import upload session cannot be read back before it is finished, so resumable
/// import uploads are refused at their start (501 UNSUPPORTED, saying what to do instead),
/// not after the last byte; `airdock import --server` then sends the file in one request.
#[tokio::test]
async fn import_uploads_are_refused_at_start_on_s3_and_the_cli_falls_back() {
    let s3 = serve_on_s3("imports", &["--admin-token", crate::imgpkg::TOKEN]);
    let s = &s3.server;
    let r = support::client(Duration::from_secs(30))
        .post(s.url("/admin/v1/imports/uploads/?repository=lab/app"))
        .bearer_auth(crate::imgpkg::TOKEN)
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), StatusCode::NOT_IMPLEMENTED);
    let body = r.text().await.expect("body");
    assert!(
        body.contains("UNSUPPORTED") && body.contains("one request"),
        "{body}"
    );
    let dir = scratch_dir("airdock-s3-import-");
    let token = dir.path().join("token");
    std::fs::write(&token, crate::imgpkg::TOKEN).expect("token file");
    let out = Command::new(AIRDOCK_BIN)
        .arg("import")
        .arg(crate::fixture::fixtures().join("tars/guestbook-bundle.tar"))
        .args([
            "-r",
            "lab/guestbook",
            "--server",
            &s.base_url(),
            "--token-file",
        ])
        .arg(&token)
        .env_remove("AIRDOCK_CA_CERT")
        .output()
        .expect("run airdock import");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    crate::imgpkg::assert_fixture_state(s, "lab/guestbook", "guestbook-bundle").await;
}
