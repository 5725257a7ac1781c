//! A full disk: on a small tmpfs the test mounts, pushes and imports fail with a clean 507,
//! nothing stored is damaged and no part of an import shows (also across a kill -9), and
//! pushes and imports work again once space is freed.
//! Needs root to mount; it fails loudly rather than skip when it cannot.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use reqwest::{Method, StatusCode};

use crate::fixture::fixture_tar;
use crate::images::{
    client, fsck, make_image, push_blob_chunked, push_blob_monolithic, push_image, verify_image,
    Failed,
};
use crate::imgpkg::{tag_map, TOKEN};
use crate::support::{scratch_dir, send_bearer, Server};

async fn import(c: &reqwest::Client, s: &Server, repo: &str) -> (StatusCode, String) {
    let r = c
        .post(s.url(&format!("/admin/v1/import?repository={repo}")))
        .bearer_auth(TOKEN)
        .body(fixture_tar("platform-bundle"))
        .send()
        .await
        .expect("import");
    let status = r.status();
    (status, r.text().await.unwrap_or_default())
}

async fn import_records(c: &reqwest::Client, s: &Server) -> usize {
    let v: serde_json::Value = send_bearer(c, s, Method::GET, "/admin/v1/imports", TOKEN)
        .await
        .json()
        .await
        .expect("json");
    v["imports"].as_array().map_or(0, Vec::len)
}

/// A tmpfs of `size`, unmounted on drop.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Tmpfs {
        let dir = scratch_dir("airdock-tmpfs-");
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output()
            .expect("run mount");
        assert!(
            out.status.success(),
            "the disk-full test must mount a tmpfs (run the tests as root): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Tmpfs { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let ok = Command::new("umount")
            .arg(self.dir.path())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            let _ = Command::new("umount")
                .arg("-l")
                .arg(self.dir.path())
                .status();
        }
    }
}

/// Write zeros to `path` until the file system says it is full.
fn fill(path: &Path) -> PathBuf {
    let mut f = std::fs::File::create(path).expect("filler");
    let block = vec![0u8; 64 << 10];
    loop {
        match f.write_all(&block).and_then(|()| f.sync_all()) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::StorageFull => break,
            Err(e) => panic!("filling the disk: {e}"),
        }
    }
    // Squeeze out the last partial block too.
    while f.write_all(&[0u8; 512]).is_ok() {}
    path.to_owned()
}

fn assert_full(what: &str, r: Result<(), Failed>) {
    match r {
        Err(Failed::Status(StatusCode::INSUFFICIENT_STORAGE, body)) => {
            assert!(body.contains("storage full"), "{what}: {body}")
        }
        other => panic!("{what} on a full disk: expected 507, got {other:?}"),
    }
}

#[tokio::test]
async fn disk_full_fails_cleanly_and_recovers() {
    let fs = Tmpfs::mount("24m");
    let data = tempfile::Builder::new()
        .prefix("data-")
        .tempdir_in(fs.path())
        .expect("data dir");
    let mut s = Server::start_in(data, &["--admin-token", TOKEN]);
    let c = client(Duration::from_secs(30));
    let good = make_image("full/app", "good", 1, 256 << 10);
    push_image(&c, &s.base_url(), &good, true)
        .await
        .expect("push before full");

    let filler = fill(&fs.path().join("filler"));
    let big = make_image("full/app", "big", 2, 1 << 20);
    let base = s.base_url();
    assert_full(
        "monolithic push",
        push_blob_monolithic(&c, &base, "full/app", &big.blobs[1].1).await,
    );
    match push_blob_chunked(&c, &base, "full/app", &big.blobs[1].1, 256 << 10).await {
        Err(Failed::Status(StatusCode::INSUFFICIENT_STORAGE, _)) => {}
        other => panic!("chunked push on a full disk: expected 507, got {other:?}"),
    }
    // Tag the stored image again and again: only journal lines, which fit in the journal
    // file's last page for a while and then do not. A failed append must be cut off, or the
    // journal would hold a torn line before later intact ones and refuse to open.
    let mut refused = 0;
    for i in 0..64 {
        let r = c
            .put(s.url(&format!("/v2/full/app/manifests/again-{i}")))
            .header("Content-Type", crate::images::OCI_MANIFEST)
            .body(good.manifest.clone())
            .send()
            .await
            .expect("put");
        match r.status() {
            StatusCode::CREATED => {}
            StatusCode::INSUFFICIENT_STORAGE => refused += 1,
            other => panic!("tagging on a full disk: {other}"),
        }
    }
    assert!(refused > 0, "the journal never ran out of space");
    verify_image(&c, &base, &good)
        .await
        .expect("stored image intact while full");
    // An import on a full disk: 507, and nothing of it visible.
    let (status, body) = import(&c, &s, "full/bundle").await;
    assert_eq!(status, StatusCode::INSUFFICIENT_STORAGE, "{body}");
    assert!(tag_map(&s, "full/bundle").await.is_empty());
    assert_eq!(import_records(&c, &s).await, 0);
    // Killed while full: it starts again and nothing is lost.
    s.restart();
    // A new client: pooled connections died with the old process.
    let c = client(Duration::from_secs(30));
    verify_image(&c, &s.base_url(), &good)
        .await
        .expect("intact after kill -9 while full");
    assert!(tag_map(&s, "full/bundle").await.is_empty());

    std::fs::remove_file(filler).expect("free space");
    push_image(&c, &s.base_url(), &big, false)
        .await
        .expect("push after space freed");
    verify_image(&c, &s.base_url(), &big).await.expect("big");
    verify_image(&c, &s.base_url(), &good).await.expect("good");
    let (status, body) = import(&c, &s, "full/bundle").await;
    assert_eq!(
        status,
        StatusCode::CREATED,
        "import after space freed: {body}"
    );
    assert!(!tag_map(&s, "full/bundle").await.is_empty());
    assert_eq!(import_records(&c, &s).await, 1);
    s.kill();
    let (clean, report) = fsck(s.data_dir(), false);
    assert!(clean, "{report}");
    drop(s);
}
