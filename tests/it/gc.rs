//! Garbage collection, deletes and fsck through the real binary: the admin endpoint and
//! its token, the background timers, and the offline `gc` / `fsck` commands.

use std::process::Command;
use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::images::{client, fsck, make_image, push_blob_monolithic, push_image, verify_image};
use crate::support::{
    delete, error_code, get, get_json, post, put_manifest, send_bearer, Server, AIRDOCK_BIN,
    OCI_INDEX, OCI_MANIFEST,
};

const TOKEN: &str = "s3cret-admin-token";

fn blob_file(s: &Server, digest: &str) -> std::path::PathBuf {
    let hex = &digest["sha256:".len()..];
    s.data_dir().join("blobs/sha256").join(&hex[..2]).join(hex)
}

/// Poll `cond` every 100 ms for at most `limit`.
async fn eventually(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    cond()
}

#[tokio::test]
async fn admin_gc_frees_deleted_images_and_needs_the_token() {
    let s = Server::start_with_args(&["--admin-token", TOKEN]);
    let c = client(Duration::from_secs(30));
    let base = s.base_url();
    let keep = make_image("app", "keep", 1, 2000);
    let gone = make_image("app", "gone", 2, 3000);
    push_image(&c, &base, &keep, false)
        .await
        .expect("push keep");
    push_image(&c, &base, &gone, true).await.expect("push gone");

    let r = post(&c, &s, "/admin/v1/gc").await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(r.headers()["www-authenticate"]
        .to_str()
        .expect("h")
        .starts_with("Bearer"));
    let r = send_bearer(&c, &s, Method::POST, "/admin/v1/gc", "wrong").await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);

    // A blob a manifest references cannot be deleted.
    let layer = &gone.blobs[1].0;
    let r = delete(&c, &s, &format!("/v2/app/blobs/{layer}")).await;
    assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(error_code(r).await, "DENIED");

    let r = delete(&c, &s, &format!("/v2/app/manifests/{}", gone.digest)).await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);

    // Young content is never collected (default grace: 1h).
    let v: Value = send_bearer(&c, &s, Method::POST, "/admin/v1/gc", TOKEN)
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(v["blobs_deleted"], 0, "{v}");
    let v: Value = send_bearer(
        &c,
        &s,
        Method::POST,
        "/admin/v1/gc?grace=0s&dry_run=true",
        TOKEN,
    )
    .await
    .json()
    .await
    .expect("json");
    assert_eq!(v["dry_run"], true);
    assert_eq!(v["blobs_deleted"], 3, "manifest, config and layer: {v}");
    assert!(blob_file(&s, layer).exists(), "a dry run changes nothing");
    let v: Value = send_bearer(&c, &s, Method::POST, "/admin/v1/gc?grace=0s", TOKEN)
        .await
        .json()
        .await
        .expect("json");
    let freed = gone.manifest.len() + gone.blobs.iter().map(|(_, b)| b.len()).sum::<usize>();
    assert_eq!(v["blobs_deleted"], 3, "{v}");
    assert_eq!(v["bytes_freed"], freed, "{v}");
    assert_eq!(v["links_dropped"], 2, "{v}");
    assert!(!blob_file(&s, layer).exists());
    verify_image(&c, &base, &keep)
        .await
        .expect("kept image is whole");

    // Deleting the repository takes it out of the catalog.
    let r = delete(&c, &s, "/admin/v1/repositories/app").await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let r = send_bearer(&c, &s, Method::DELETE, "/admin/v1/repositories/app", TOKEN).await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let v: Value = get_json(&c, &s, "/v2/_catalog").await;
    assert_eq!(v["repositories"], serde_json::json!([]));
    let r = get(&c, &s, "/v2/app/tags/list").await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let r = send_bearer(&c, &s, Method::DELETE, "/admin/v1/repositories/app", TOKEN).await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn deleting_every_tag_and_manifest_empties_the_catalog() {
    let s = Server::start();
    let c = client(Duration::from_secs(30));
    let img = make_image("lonely", "v1", 3, 100);
    push_image(&c, &s.base_url(), &img, false)
        .await
        .expect("push");
    for (d, _) in &img.blobs {
        let r = delete(&c, &s, &format!("/v2/lonely/blobs/{d}")).await;
        assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
    }
    let r = delete(&c, &s, &format!("/v2/lonely/manifests/{}", img.digest)).await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    for (d, _) in &img.blobs {
        let r = delete(&c, &s, &format!("/v2/lonely/blobs/{d}")).await;
        assert_eq!(r.status(), StatusCode::ACCEPTED);
    }
    let v: Value = get_json(&c, &s, "/v2/_catalog").await;
    assert_eq!(v["repositories"], serde_json::json!([]));
}

#[tokio::test]
async fn without_a_configured_token_the_generated_one_guards_gc() {
    let s = Server::start();
    let c = client(Duration::from_secs(30));
    let r = send_bearer(&c, &s, Method::POST, "/admin/v1/gc", "anything").await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(error_code(r).await, "UNAUTHORIZED");
    let token = std::fs::read_to_string(s.data_dir().join("admin-token")).expect("token file");
    let r = send_bearer(
        &c,
        &s,
        Method::POST,
        "/admin/v1/gc?dry_run=true",
        token.trim(),
    )
    .await;
    assert_eq!(r.status(), StatusCode::OK);
}

#[tokio::test]
async fn timers_expire_idle_uploads_and_collect_garbage() {
    let s = Server::start_with_args(&[
        "--upload-ttl",
        "1s",
        "--gc-interval",
        "300ms",
        "--gc-grace",
        "0s",
    ]);
    let c = client(Duration::from_secs(30));
    let r = post(&c, &s, "/v2/t/blobs/uploads/").await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let loc = r.headers()["location"].to_str().expect("loc").to_owned();
    let uploads = s.data_dir().join("uploads");
    let expired = eventually(Duration::from_secs(10), || {
        std::fs::read_dir(&uploads)
            .map(|d| d.count() == 0)
            .unwrap_or(false)
    })
    .await;
    assert!(expired, "idle upload session still on disk");
    let r = get(&c, &s, &loc).await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_eq!(error_code(r).await, "BLOB_UPLOAD_UNKNOWN");

    // A blob no manifest references goes at the next timed GC.
    push_blob_monolithic(&c, &s.base_url(), "t", b"nobody needs me")
        .await
        .expect("push");
    let file = blob_file(&s, &crate::images::sha256(b"nobody needs me"));
    assert!(file.exists());
    assert!(
        eventually(Duration::from_secs(10), || !file.exists()).await,
        "timed GC did not collect an unreferenced blob"
    );
}

fn airdock_output(args: &[&str], data_dir: &std::path::Path) -> std::process::Output {
    Command::new(AIRDOCK_BIN)
        .args(args)
        .arg("--data-dir")
        .arg(data_dir)
        .env_remove("AIRDOCK_DATA_DIR")
        .output()
        .expect("run airdock")
}

/// Run an offline command; its exit code and its JSON report.
fn airdock(args: &[&str], data_dir: &std::path::Path) -> (i32, Value) {
    let out = airdock_output(args, data_dir);
    let v = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{args:?}: not JSON ({e}): {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code().unwrap_or(-1), v)
}

#[tokio::test]
async fn offline_gc_and_fsck_repair() {
    let mut s = Server::start();
    let c = client(Duration::from_secs(30));
    let keep = make_image("off", "keep", 5, 5000);
    let gone = make_image("off", "gone", 6, 7000);
    push_image(&c, &s.base_url(), &keep, true)
        .await
        .expect("push");
    push_image(&c, &s.base_url(), &gone, false)
        .await
        .expect("push");
    let r = delete(&c, &s, &format!("/v2/off/manifests/{}", gone.digest)).await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    // Not while a server uses the data dir.
    let busy = Command::new(AIRDOCK_BIN)
        .args(["gc", "--gc-grace", "0s", "--data-dir"])
        .arg(s.data_dir())
        .output()
        .expect("run airdock gc");
    assert!(!busy.status.success());
    assert!(String::from_utf8_lossy(&busy.stderr).contains("in use by another airdock process"));
    s.terminate();
    let dir = s.data_dir().to_owned();

    let (code, v) = airdock(&["gc", "--dry-run", "--gc-grace", "0s"], &dir);
    assert_eq!((code, &v["blobs_deleted"]), (0, &Value::from(3)), "{v}");
    let (code, v) = airdock(&["gc", "--gc-grace", "0s"], &dir);
    assert_eq!((code, &v["blobs_deleted"]), (0, &Value::from(3)), "{v}");
    let (code, v) = airdock(&["fsck"], &dir);
    assert_eq!((code, &v["clean"]), (0, &Value::Bool(true)), "{v}");
    assert_eq!(v["blobs_checked"], 3, "{v}");

    // Bit rot in a layer: found, then quarantined, and the image can be healed by a push.
    let layer = &keep.blobs[1];
    std::fs::write(blob_file(&s, &layer.0), b"rotten").expect("rot");
    let (code, v) = airdock(&["fsck"], &dir);
    assert_eq!(code, 1, "{v}");
    assert_eq!(v["corrupt_blobs"], serde_json::json!([layer.0]));
    let (code, v) = airdock(&["fsck", "--repair"], &dir);
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["quarantined"].as_array().map(Vec::len), Some(1), "{v}");
    assert_eq!(
        std::fs::read_dir(dir.join("quarantine"))
            .expect("q")
            .count(),
        1
    );
    let (clean, report) = fsck(&dir, false);
    assert!(clean, "{report}");

    s.restart();
    // A new client: pooled connections died with the old process.
    let c = client(Duration::from_secs(30));
    let base = s.base_url();
    let r = get(&c, &s, &format!("/v2/off/blobs/{}", layer.0)).await;
    assert_eq!(
        r.status(),
        StatusCode::NOT_FOUND,
        "a corrupt blob is never served"
    );
    push_blob_monolithic(&c, &base, "off", &layer.1)
        .await
        .expect("heal");
    verify_image(&c, &base, &keep).await.expect("healed image");
}

fn index_of(children: &[&crate::images::Image]) -> Vec<u8> {
    let list: Vec<String> = children
        .iter()
        .map(|i| {
            format!(
                r#"{{"mediaType":"{}","digest":"{}","size":{}}}"#,
                OCI_MANIFEST,
                i.digest,
                i.manifest.len()
            )
        })
        .collect();
    format!(
        r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","manifests":[{}]}}"#,
        list.join(",")
    )
    .into_bytes()
}

#[tokio::test]
async fn index_delete_cascades_only_when_asked_and_blob_delete_policy() {
    let s = Server::start_with_args(&["--allow-referenced-blob-delete"]);
    let c = client(Duration::from_secs(30));
    let base = s.base_url();
    let a = make_image("idx", "a", 11, 100);
    let b = make_image("idx", "b", 12, 100);
    for img in [&a, &b] {
        push_image(&c, &base, img, false).await.expect("push");
        // Untag: the children are kept only by the indexes below.
        let r = delete(&c, &s, &format!("/v2/idx/manifests/{}", img.tag)).await;
        assert_eq!(r.status(), StatusCode::ACCEPTED);
    }
    let plain = index_of(&[&a]);
    let tree = index_of(&[&b]);
    for (tag, body) in [("plain", &plain), ("tree", &tree)] {
        let r = put_manifest(&c, &s, "idx", tag, OCI_INDEX, body).await;
        assert_eq!(r.status(), StatusCode::CREATED);
    }
    let status = |d: String| {
        let c = c.clone();
        let url = s.url(&format!("/v2/idx/manifests/{d}"));
        async move { c.get(url).send().await.expect("get").status() }
    };
    let r = delete(
        &c,
        &s,
        &format!("/v2/idx/manifests/{}", crate::images::sha256(&plain)),
    )
    .await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    assert_eq!(
        status(a.digest.clone()).await,
        StatusCode::OK,
        "no cascade by default"
    );
    let r = delete(
        &c,
        &s,
        &format!(
            "/v2/idx/manifests/{}?cascade=true",
            crate::images::sha256(&tree)
        ),
    )
    .await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    assert_eq!(
        status(b.digest.clone()).await,
        StatusCode::NOT_FOUND,
        "orphaned child went"
    );
    // With --allow-referenced-blob-delete a referenced blob goes (Distribution's way).
    let r = delete(&c, &s, &format!("/v2/idx/blobs/{}", a.blobs[1].0)).await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
}

/// Retention rules and GC keys from the configuration file: a GC keeps the newest two
/// `build-*` tags, leaves other tags alone, drops the untagged manifest and frees its bytes;
/// `config check` names a bad rule's line.
#[tokio::test]
async fn retention_rules_from_the_config_file() {
    let cfg_dir = tempfile::tempdir().expect("tempdir");
    let cfg = cfg_dir.path().join("airdock.yaml");
    std::fs::write(
        &cfg,
        "gc:\n  grace: 0s\nretention:\n  - repos: [\"keep/**\"]\n    tags: \"build-*\"\n    keep_newest: 2\n    untagged_older_than: 0s\n",
    )
    .expect("write config");
    let s = Server::start_with_args(&[
        "--admin-token",
        TOKEN,
        "--config",
        cfg.to_str().expect("utf-8"),
    ]);
    let c = client(Duration::from_secs(30));
    let base = s.base_url();
    let images: Vec<_> = (1..=3)
        .map(|i| make_image("keep/app", &format!("build-{i}"), 100 + i, 1000))
        .chain([make_image("keep/app", "stable", 200, 1000)])
        .collect();
    for img in &images {
        push_image(&c, &base, img, false).await.expect("push");
    }
    let r = send_bearer(&c, &s, Method::POST, "/admin/v1/gc", TOKEN).await;
    assert_eq!(r.status(), StatusCode::OK);
    let report: Value = r.json().await.expect("json");
    assert_eq!(report["tags_dropped"][0]["tag"], "build-1", "{report}");
    assert_eq!(
        report["manifests_deleted"].as_array().map(Vec::len),
        Some(1)
    );
    assert!(
        report["blobs_deleted"].as_u64().unwrap_or(0) >= 3,
        "{report}"
    );
    let tags: Value = get_json(&c, &s, "/v2/keep/app/tags/list").await;
    assert_eq!(
        tags["tags"],
        serde_json::json!(["build-2", "build-3", "stable"])
    );
    for img in &images[1..] {
        verify_image(&c, &base, img)
            .await
            .expect("kept image whole");
    }

    let bad = cfg_dir.path().join("bad.yaml");
    std::fs::write(&bad, "retention:\n  - repos: [a]\n    keep_newest: two\n").expect("write");
    let out = Command::new(AIRDOCK_BIN)
        .args(["config", "check", bad.to_str().expect("utf-8")])
        .output()
        .expect("config check");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("line 3"), "{err}");
}

/// `index` (tagged `multi`) over images `a` and `b` in `repo`, the children untagged.
async fn push_index(
    c: &reqwest::Client,
    s: &Server,
    repo: &str,
) -> (Vec<u8>, [crate::images::Image; 2]) {
    let a = make_image(repo, "a", 31, 100);
    let b = make_image(repo, "b", 32, 100);
    for img in [&a, &b] {
        push_image(c, &s.base_url(), img, false)
            .await
            .expect("push");
        let r = delete(c, s, &format!("/v2/{repo}/manifests/{}", img.tag)).await;
        assert_eq!(r.status(), StatusCode::ACCEPTED);
    }
    let index = index_of(&[&a, &b]);
    let r = put_manifest(c, s, repo, "multi", OCI_INDEX, &index).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    (index, [a, b])
}

/// Issue 10, defect 3: `DELETE` of a manifest an index lists answered 202 and left the index
/// dangling (fsck exit 1). Now 405 DENIED naming the index, until the index is deleted.
#[tokio::test]
async fn deleting_a_manifest_an_index_lists_is_refused() {
    let mut s = Server::start();
    let c = client(Duration::from_secs(30));
    let (index, [a, b]) = push_index(&c, &s, "multi").await;
    let index_digest = crate::images::sha256(&index);
    let r = delete(&c, &s, &format!("/v2/multi/manifests/{}", a.digest)).await;
    assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
    let body: Value = r.json().await.expect("error body");
    assert_eq!(body["errors"][0]["code"], "DENIED", "{body}");
    let msg = body["errors"][0]["message"].as_str().unwrap_or_default();
    assert!(msg.contains(&index_digest), "{msg}");
    let r = get(&c, &s, &format!("/v2/multi/manifests/{}", a.digest)).await;
    assert_eq!(r.status(), StatusCode::OK, "the child is still served");
    // The index first, then each child: what clients and the conformance suites do.
    for d in [&index_digest, &a.digest, &b.digest] {
        let r = delete(&c, &s, &format!("/v2/multi/manifests/{d}")).await;
        assert_eq!(r.status(), StatusCode::ACCEPTED, "{d}");
    }
    s.terminate();
    let (clean, report) = fsck(s.data_dir(), false);
    assert!(clean, "{report}");
}

/// A read-only bind mount of `src`, unmounted on drop (the tests run as root).
struct ReadOnlyMount {
    at: std::path::PathBuf,
    /// Holds the mount point; removed after the unmount.
    _dir: tempfile::TempDir,
}

impl ReadOnlyMount {
    fn of(src: &std::path::Path) -> ReadOnlyMount {
        let dir = tempfile::tempdir().expect("tempdir");
        let at = dir.path().join("ro");
        std::fs::create_dir(&at).expect("mount point");
        for args in [
            vec!["--bind".into(), src.to_owned(), at.clone()],
            vec!["-o".into(), "remount,bind,ro".into(), at.clone()],
        ] {
            let out = Command::new("mount")
                .args(&args)
                .output()
                .expect("run mount");
            assert!(
                out.status.success(),
                "a read-only bind mount needs root: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        ReadOnlyMount { at, _dir: dir }
    }
}

impl Drop for ReadOnlyMount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.at).output();
    }
}

/// Issue 10, defects 3 and 16: with Distribution's delete behaviour (the opt-in) a child can
/// go while its index stays; fsck used to exit 1 for ever after, `--repair` included. Now the
/// index is kept and reported, and a repair converges; and a check needs no write access.
#[tokio::test]
async fn fsck_converges_on_an_index_with_a_missing_child_and_checks_read_only() {
    let mut s = Server::start_with_args(&["--allow-referenced-blob-delete"]);
    let c = client(Duration::from_secs(30));
    let (_, [a, _]) = push_index(&c, &s, "multi").await;
    let r = delete(&c, &s, &format!("/v2/multi/manifests/{}", a.digest)).await;
    assert_eq!(r.status(), StatusCode::ACCEPTED, "the opt-in allows it");
    s.terminate();
    let dir = s.data_dir().to_owned();
    let (code, v) = airdock(&["fsck", "--repair"], &dir);
    assert_eq!(code, 0, "{v}");
    let (code, v) = airdock(&["fsck"], &dir);
    assert_eq!((code, &v["clean"]), (0, &Value::Bool(true)), "{v}");
    assert_eq!(v["missing_children"][0]["digest"], a.digest.as_str(), "{v}");

    let ro = ReadOnlyMount::of(&dir);
    std::fs::write(dir.join("tmp/leftover"), b"x").expect("a leftover in tmp/");
    let (code, v) = airdock(&["fsck"], &ro.at);
    assert_eq!((code, &v["clean"]), (0, &Value::Bool(true)), "{v}");
    assert!(dir.join("tmp/leftover").exists(), "a check cleans nothing");
    let out = airdock_output(&["fsck", "--repair"], &ro.at);
    assert!(!out.status.success(), "a repair needs write access");
}

/// Issue 10, defect 16: `DELETE /admin/v1/repositories/<name>` left the repository's upload
/// sessions open, and finishing one brought the repository back.
#[tokio::test]
async fn deleting_a_repository_cancels_its_upload_sessions() {
    let s = Server::start_with_args(&["--admin-token", TOKEN]);
    let c = client(Duration::from_secs(30));
    let base = s.base_url();
    push_blob_monolithic(&c, &base, "gone/app", b"first")
        .await
        .expect("push");
    let r = post(&c, &s, "/v2/gone/app/blobs/uploads/").await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let session = r.headers()["location"].to_str().expect("ascii").to_owned();
    let body = b"late bytes".to_vec();
    let r = send_bearer(
        &c,
        &s,
        Method::DELETE,
        "/admin/v1/repositories/gone/app",
        TOKEN,
    )
    .await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let r = c
        .put(s.url(&format!(
            "{session}?digest={}",
            crate::images::sha256(&body)
        )))
        .body(body)
        .send()
        .await
        .expect("finish");
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_eq!(error_code(r).await, "BLOB_UPLOAD_UNKNOWN");
    let catalog = get_json(&c, &s, "/v2/_catalog").await;
    assert_eq!(catalog["repositories"], serde_json::json!([]), "{catalog}");
}
