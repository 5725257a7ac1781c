//! The web console in a real browser: a real airdock with users and rules, seeded over the
//! API (images and a multi-platform index), driven by headless Chromium through the scripts
//! in tests/browser/ (playwright-core, installed by scripts/install-deps.sh). Screenshots
//! land in target/console-screenshots/.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use reqwest::{Client, StatusCode};

use crate::security::htpasswd;
use crate::support::{image_manifest, sha256, xorshift_bytes, Server, OCI_INDEX, OCI_MANIFEST};

const ALICE: (&str, &str) = ("alice", "alice-pw");
const BOB: (&str, &str) = ("bob", "bob-pw");
const REPO: &str = "team/app";
const OTHER: &str = "team/tools";

/// alice may do everything in team/* and is admin; bob may only pull team/*.
struct Lab {
    server: Server,
    _dir: tempfile::TempDir,
    c: Client,
}

fn lab() -> Lab {
    let dir = tempfile::tempdir().expect("tempdir");
    let hp = htpasswd(dir.path(), &[ALICE, BOB]);
    let config = dir.path().join("config.yaml");
    std::fs::write(
        &config,
        format!(
            "auth:\n  htpasswd: {}\n  admins: [alice]\naccess:\n  - repos: [\"team/*\"]\n    users: [alice]\n    allow: [pull, push, delete]\n  - repos: [\"team/*\"]\n    users: [bob]\n    allow: [pull]\n",
            hp.display()
        ),
    )
    .expect("config");
    let server = Server::start_with_args(&["--config", config.to_str().expect("utf-8")]);
    Lab {
        server,
        _dir: dir,
        c: crate::support::client(Duration::from_secs(60)),
    }
}

impl Lab {
    async fn blob(&self, repo: &str, bytes: &[u8]) -> String {
        let d = sha256(bytes);
        let r = self
            .c
            .post(
                self.server
                    .url(&format!("/v2/{repo}/blobs/uploads/?digest={d}")),
            )
            .basic_auth(ALICE.0, Some(ALICE.1))
            .body(bytes.to_vec())
            .send()
            .await
            .expect("push blob");
        assert_eq!(r.status(), StatusCode::CREATED, "push blob to {repo}");
        d
    }

    async fn manifest(&self, repo: &str, reference: &str, media: &str, body: &[u8]) -> String {
        let r = self
            .c
            .put(
                self.server
                    .url(&format!("/v2/{repo}/manifests/{reference}")),
            )
            .basic_auth(ALICE.0, Some(ALICE.1))
            .header("Content-Type", media)
            .body(body.to_vec())
            .send()
            .await
            .expect("put manifest");
        assert_eq!(r.status(), StatusCode::CREATED, "put {repo}:{reference}");
        sha256(body)
    }

    /// An image of one config and one layer (of `layer_len` random bytes) in `repo`,
    /// tagged `tag` unless it is `None`; returns the manifest's digest and size.
    async fn image(
        &self,
        repo: &str,
        tag: Option<&str>,
        seed: u64,
        layer_len: usize,
    ) -> (String, usize) {
        let layer = xorshift_bytes(layer_len, seed);
        let config = format!(
            r#"{{"architecture":"amd64","os":"linux","config":{{"Labels":{{"seed":"{seed}"}}}},"rootfs":{{"type":"layers","diff_ids":["{}"]}}}}"#,
            sha256(&layer)
        );
        let ld = self.blob(repo, &layer).await;
        let cd = self.blob(repo, config.as_bytes()).await;
        let m = image_manifest(&cd, config.len(), &ld, layer.len());
        let digest = sha256(m.as_bytes());
        let reference = tag.map_or(digest.clone(), str::to_owned);
        self.manifest(repo, &reference, OCI_MANIFEST, m.as_bytes())
            .await;
        (digest, m.len())
    }

    /// `REPO` with `v1`, `v2` (images) and `multi` (an index of linux/amd64 and
    /// linux/arm64/v8); `OTHER` with `latest`.
    async fn seed(&self) {
        self.image(REPO, Some("v1"), 1, 300_000).await;
        self.image(REPO, Some("v2"), 2, 2_000).await;
        let (amd, amd_len) = self.image(REPO, None, 3, 40_000).await;
        let (arm, arm_len) = self.image(REPO, None, 4, 50_000).await;
        let index = format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","manifests":[{{"mediaType":"{OCI_MANIFEST}","digest":"{amd}","size":{amd_len},"platform":{{"architecture":"amd64","os":"linux"}}}},{{"mediaType":"{OCI_MANIFEST}","digest":"{arm}","size":{arm_len},"platform":{{"architecture":"arm64","os":"linux","variant":"v8"}}}}]}}"#
        );
        self.manifest(REPO, "multi", OCI_INDEX, index.as_bytes())
            .await;
        self.image(OTHER, Some("latest"), 5, 1_000).await;
    }

    /// Import fixture tar `fixture` into `repo` through the admin API (as alice, naming the
    /// tar `name`); returns the import report.
    async fn import(&self, repo: &str, name: &str, fixture: &str) -> serde_json::Value {
        let r = self
            .c
            .post(
                self.server
                    .url(&format!("/admin/v1/import?repository={repo}&name={name}")),
            )
            .basic_auth(ALICE.0, Some(ALICE.1))
            .body(crate::fixture::fixture_tar(fixture))
            .send()
            .await
            .expect("import");
        assert_eq!(r.status(), StatusCode::CREATED, "import {fixture}");
        r.json().await.expect("report")
    }

    /// `GET` or `POST` of an admin API path as alice, its status and JSON.
    async fn admin(&self, post: bool, path: &str) -> (StatusCode, serde_json::Value) {
        let url = self.server.url(path);
        let req = if post {
            self.c.post(url)
        } else {
            self.c.get(url)
        };
        let r = req
            .basic_auth(ALICE.0, Some(ALICE.1))
            .send()
            .await
            .expect("admin request");
        let status = r.status();
        (status, r.json().await.unwrap_or(serde_json::Value::Null))
    }

    async fn tags(&self, repo: &str) -> Vec<String> {
        let v: serde_json::Value = self
            .c
            .get(self.server.url(&format!("/v2/{repo}/tags/list")))
            .basic_auth(ALICE.0, Some(ALICE.1))
            .send()
            .await
            .expect("tags")
            .json()
            .await
            .expect("json");
        v["tags"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|t| t.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    }
}

fn browser_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser")
}

pub fn screenshots() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("target/console-screenshots")
}

/// Run `tests/browser/<script>` against `server` as `user` with `vars`; panics with its
/// output unless it exits 0.
pub fn browse(server: &Server, script: &str, user: (&str, &str), vars: &[(&str, &str)]) {
    let dir = browser_dir();
    assert!(
        dir.join("node_modules/playwright-core").is_dir(),
        "playwright-core is not installed in tests/browser; run scripts/install-deps.sh"
    );
    crate::support::require_tool("node");
    assert!(
        Path::new("/usr/bin/chromium").is_file(),
        "chromium is not installed; run scripts/install-deps.sh"
    );
    let out = Command::new("node")
        .arg(dir.join(script))
        .current_dir(&dir)
        .env("AIRDOCK_URL", server.base_url())
        .env("AIRDOCK_USER", user.0)
        .env("AIRDOCK_PASSWORD", user.1)
        .env("SCREENSHOTS", screenshots())
        .envs(vars.iter().copied())
        .output()
        .expect("run node");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "browser scenario {script} failed:\n{text}\n--- airdock output ---\n{}",
        server.logs()
    );
    eprintln!("{text}");
}

#[tokio::test(flavor = "multi_thread")]
async fn console_sign_in_browse_index_and_manifest() {
    let lab = lab();
    lab.seed().await;
    let vars = [
        ("REPO", REPO),
        ("OTHER_REPO", OTHER),
        ("IMAGE_TAG", "v1"),
        ("INDEX_TAG", "multi"),
    ];
    tokio::task::block_in_place(|| browse(&lab.server, "browse.mjs", ALICE, &vars));
}

#[tokio::test(flavor = "multi_thread")]
async fn console_deletes_a_tag_with_confirmation() {
    let lab = lab();
    lab.seed().await;
    let vars = [("REPO", REPO), ("DELETE_TAG", "v2")];
    tokio::task::block_in_place(|| browse(&lab.server, "delete.mjs", ALICE, &vars));
    let tags = lab.tags(REPO).await;
    assert!(!tags.contains(&"v2".to_owned()), "{tags:?}");
    assert!(tags.contains(&"v1".to_owned()), "{tags:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn console_pull_only_user_sees_no_delete_and_forged_posts_get_403() {
    let lab = lab();
    lab.seed().await;
    let report = lab
        .import("team/bundle", "platform-bundle.tar", "platform-bundle")
        .await;
    let id = report["import_id"].as_str().expect("import id").to_owned();
    let vars = [
        ("REPO", REPO),
        ("DELETE_TAG", "v2"),
        ("IMPORT_ID", id.as_str()),
    ];
    tokio::task::block_in_place(|| browse(&lab.server, "pull_only.mjs", BOB, &vars));
    assert!(lab.tags(REPO).await.contains(&"v2".to_owned()));
    let (status, _) = lab.admin(false, &format!("/admin/v1/imports/{id}")).await;
    assert_eq!(status, StatusCode::OK, "the import is still there");
    let logs = lab.server.logs();
    assert!(
        logs.lines().any(|l| l.contains("action=remove_import")
            && l.contains("user=bob")
            && l.contains("result=refused")),
        "the forged removal is in the audit log, refused:\n{logs}"
    );
}

/// The import history, one import's report, its removal preview and the removal; the
/// other import and everything it brought stay.
#[tokio::test(flavor = "multi_thread")]
async fn console_lists_imports_shows_a_report_and_removes_one() {
    let lab = lab();
    let other = lab
        .import("team/guest", "guestbook-bundle.tar", "guestbook-bundle")
        .await;
    let report = lab
        .import("team/bundle", "platform-bundle.tar", "platform-bundle")
        .await;
    let id = report["import_id"].as_str().expect("import id").to_owned();
    let other_id = other["import_id"].as_str().expect("import id").to_owned();
    let tag = report["root_bundle"]["tag"]
        .as_str()
        .expect("root bundle tag")
        .to_owned();
    let (_, record) = lab.admin(false, &format!("/admin/v1/imports/{id}")).await;
    let manifests = record["manifests"].as_array().expect("manifests").len();
    let manifests = manifests.to_string();
    let vars = [
        ("IMPORT_ID", id.as_str()),
        ("IMPORT_NAME", "platform-bundle.tar"),
        ("IMPORT_REPO", "team/bundle"),
        ("IMPORT_TAG", tag.as_str()),
        ("IMPORT_MANIFESTS", manifests.as_str()),
        ("OTHER_IMPORT_ID", other_id.as_str()),
    ];
    let other_tags = lab.tags("team/guest").await;
    tokio::task::block_in_place(|| browse(&lab.server, "imports.mjs", ALICE, &vars));
    let (status, _) = lab.admin(false, &format!("/admin/v1/imports/{id}")).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "the record is gone");
    let logs = lab.server.logs();
    assert!(
        logs.lines().any(|l| l.contains("action=remove_import")
            && l.contains(&format!("resource={id}"))
            && l.contains("user=alice")
            && l.contains("result=ok")),
        "the removal is in the audit log:\n{logs}"
    );
    assert!(!lab.tags("team/bundle").await.contains(&tag));
    let (status, _) = lab
        .admin(false, &format!("/admin/v1/imports/{other_id}"))
        .await;
    assert_eq!(status, StatusCode::OK, "the other import stays");
    assert_eq!(lab.tags("team/guest").await, other_tags);
}

/// The storage page's numbers are the admin API's; a GC dry run then a run, through the
/// page, free exactly what the API's dry run said, and the grace window holds back a
/// fresh blob.
#[tokio::test(flavor = "multi_thread")]
async fn console_storage_usage_and_gc_dry_run_then_run() {
    let lab = lab();
    lab.seed().await;
    // Garbage past the grace window: an image whose manifest is deleted, its files aged.
    let (junk, _) = lab.image("team/junk", Some("old"), 9, 120_000).await;
    let m: serde_json::Value = lab
        .c
        .get(lab.server.url("/v2/team/junk/manifests/old"))
        .basic_auth(ALICE.0, Some(ALICE.1))
        .header("Accept", OCI_MANIFEST)
        .send()
        .await
        .expect("get manifest")
        .json()
        .await
        .expect("manifest json");
    let r = lab
        .c
        .delete(lab.server.url(&format!("/v2/team/junk/manifests/{junk}")))
        .basic_auth(ALICE.0, Some(ALICE.1))
        .send()
        .await
        .expect("delete");
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let old = std::time::SystemTime::now() - Duration::from_secs(7200);
    for d in crate::support::manifest_blobs(&m)
        .into_iter()
        .chain([junk.as_str()])
    {
        // The documented layout (storage/src/layout.rs): blobs/sha256/<hex[..2]>/<hex>.
        let hex = d.strip_prefix("sha256:").expect("sha256 digest");
        let path = lab
            .server
            .data_dir()
            .join("blobs/sha256")
            .join(&hex[..2])
            .join(hex);
        std::fs::File::options()
            .write(true)
            .open(&path)
            .and_then(|f| f.set_modified(old))
            .expect("age a blob");
    }
    // A fresh blob nothing references: the grace window holds it back.
    lab.blob("team/junk", &xorshift_bytes(30_000, 10)).await;

    let (status, usage) = lab.admin(false, "/admin/v1/usage").await;
    assert_eq!(status, StatusCode::OK);
    let app = usage["repos"]
        .as_array()
        .expect("repos")
        .iter()
        .find(|r| r["name"] == REPO)
        .expect("team/app")
        .clone();
    let (status, dry) = lab.admin(true, "/admin/v1/gc?dry_run=true").await;
    assert_eq!(status, StatusCode::OK);
    let freed = dry["bytes_freed"].as_u64().expect("freed");
    assert!(freed > 120_000, "{dry}");
    let n = |v: &serde_json::Value| v.as_u64().expect("number").to_string();
    let vars = [
        ("REPO", REPO.to_owned()),
        ("EXPECT_TOTAL_BYTES", n(&usage["bytes"])),
        ("EXPECT_REPO_BYTES", n(&app["bytes"])),
        ("EXPECT_REPO_UNIQUE", n(&app["unique_bytes"])),
        ("EXPECT_FREED_BYTES", freed.to_string()),
        ("EXPECT_HELD_BLOBS", n(&dry["held_back"]["blobs"])),
    ];
    let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
    tokio::task::block_in_place(|| browse(&lab.server, "storage.mjs", ALICE, &vars));
    let (_, dry) = lab.admin(true, "/admin/v1/gc?dry_run=true").await;
    assert_eq!(dry["bytes_freed"], 0, "{dry}");
    let logs = lab.server.logs();
    assert!(
        logs.lines().any(|l| l.contains("action=gc")
            && l.contains("resource=dry_run=0")
            && l.contains("user=alice")
            && l.contains("result=ok")),
        "the console's GC run is in the audit log:\n{logs}"
    );
    assert!(lab.tags(REPO).await.contains(&"v1".to_owned()));
}

/// `/` sends browsers to the console; the API's paths are untouched by it.
#[tokio::test]
async fn root_redirects_to_the_console_and_the_api_is_unchanged() {
    let lab = lab();
    let c = crate::support::client(Duration::from_secs(10));
    let no_redirect = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let r = no_redirect
        .get(lab.server.url("/"))
        .send()
        .await
        .expect("get /");
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(r.headers()["location"], "/ui/");
    let r = c
        .get(lab.server.url("/v2/"))
        .send()
        .await
        .expect("get /v2/");
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(r.headers().contains_key("www-authenticate"));
    let r = no_redirect
        .get(lab.server.url("/ui/login"))
        .send()
        .await
        .expect("login page");
    assert_eq!(r.status(), StatusCode::OK);
    let csp = r.headers()["content-security-policy"]
        .to_str()
        .expect("ascii");
    assert!(
        csp.contains("script-src 'self'") && !csp.contains("unsafe"),
        "{csp}"
    );
    let cookie = r.headers()["set-cookie"].to_str().expect("ascii");
    assert!(
        cookie.contains("HttpOnly")
            && cookie.contains("SameSite=Strict")
            && cookie.contains("Path=/ui"),
        "{cookie}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn console_upload_shows_progress_report_and_refusal() {
    use airdock::imgpkg::synth::{self, Blob, Element, Image};
    use airdock::imgpkg::tarfmt::Kind;

    let lab = lab();
    let dir = crate::support::scratch_dir("console-upload-");
    let bundle = dir.path().join("platform-bundle.tar");
    std::fs::write(&bundle, crate::fixture::fixture_tar("platform-bundle")).expect("write");
    // 24 MiB of incompressible layer: long enough at 8 MiB/s for the bar to move visibly.
    let image = Image::oci(
        vec![Blob::new(
            "application/vnd.oci.image.layer.v1.tar+gzip",
            xorshift_bytes(24 << 20, 7),
        )],
        &[],
    );
    let big = dir.path().join("big.tar");
    std::fs::write(
        &big,
        synth::imgpkg_tar(&[Element::Image {
            image,
            source_repo: "example.org/big".into(),
            tag: "v1".into(),
            root_bundle: false,
        }]),
    )
    .expect("write");
    // A real tar with a symlink entry appended before its end marker.
    let mut hostile = crate::fixture::fixture_tar("guestbook-bundle");
    hostile.truncate(hostile.len() - 1024);
    hostile.extend_from_slice(&synth::raw_header("evil", Kind::Symlink, 0, b"/etc/passwd"));
    hostile.extend_from_slice(&[0u8; 1024]);
    let evil = dir.path().join("hostile.tar");
    std::fs::write(&evil, hostile).expect("write");

    let path = |p: &Path| p.to_str().expect("utf-8").to_owned();
    let (bundle, big, evil) = (path(&bundle), path(&big), path(&evil));
    let vars = [
        ("BUNDLE_REPO", "team/bundle"),
        ("BUNDLE_TAR", bundle.as_str()),
        ("BIG_REPO", "team/big"),
        ("BIG_TAR", big.as_str()),
        ("HOSTILE_REPO", "team/hostile"),
        ("HOSTILE_TAR", evil.as_str()),
        ("HOSTILE_ENTRY", "evil"),
    ];
    tokio::task::block_in_place(|| browse(&lab.server, "upload.mjs", ALICE, &vars));
    assert!(!lab.tags("team/bundle").await.is_empty());
    assert!(lab.tags("team/big").await.contains(&"v1".to_owned()));
    assert!(lab.tags("team/hostile").await.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn console_bundle_shows_every_images_yml_entry_present() {
    let lab = lab();
    let r = lab
        .c
        .post(lab.server.url("/admin/v1/import?repository=team/bundle"))
        .basic_auth(ALICE.0, Some(ALICE.1))
        .body(crate::fixture::fixture_tar("platform-bundle"))
        .send()
        .await
        .expect("import");
    assert_eq!(r.status(), StatusCode::CREATED);
    let report: serde_json::Value = r.json().await.expect("report");
    let tag = report["root_bundle"]["tag"]
        .as_str()
        .expect("root bundle tag")
        .to_owned();
    let vars = [("REPO", "team/bundle"), ("TAG", tag.as_str())];
    tokio::task::block_in_place(|| browse(&lab.server, "bundles.mjs", ALICE, &vars));
}
