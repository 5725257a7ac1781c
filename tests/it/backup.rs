//! `airdock backup` of a running server while a push goes on, `airdock restore` into a new
//! data dir, and a second server on it that serves byte-identical content; fsck clean. A
//! corrupted backup is refused, naming the entry.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use reqwest::Client;
use serde_json::Value;

use crate::crash::post_import;
use crate::fixture::fixture_tar;
use crate::images::{client, fsck, make_image, push_image};
use crate::support::{
    manifest_blobs, scratch_dir, sha256, Server, AIRDOCK_BIN, OCI_INDEX, OCI_MANIFEST,
};

const TOKEN: &str = "backup-admin-token";

const ACCEPT: &str = "application/vnd.oci.image.manifest.v1+json, \
application/vnd.oci.image.index.v1+json, \
application/vnd.docker.distribution.manifest.v2+json, \
application/vnd.docker.distribution.manifest.list.v2+json";

/// `airdock <command> --<a> A --<b> B`.
fn airdock(command: &str, (a, pa): (&str, &Path), (b, pb): (&str, &Path)) -> Output {
    Command::new(AIRDOCK_BIN)
        .arg(command)
        .arg(format!("--{a}"))
        .arg(pa)
        .arg(format!("--{b}"))
        .arg(pb)
        .env_remove("AIRDOCK_DATA_DIR")
        .output()
        .expect("run airdock")
}

fn backup(data_dir: &Path, to: &Path) -> Output {
    airdock("backup", ("data-dir", data_dir), ("to", to))
}

fn restore(from: &Path, data_dir: &Path) -> Output {
    airdock("restore", ("from", from), ("data-dir", data_dir))
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

async fn fetch(c: &Client, base: &str, path: &str) -> Option<Vec<u8>> {
    let r = c
        .get(format!("{base}{path}"))
        .header("accept", ACCEPT)
        .send()
        .await
        .expect("request");
    if r.status() == reqwest::StatusCode::NOT_FOUND {
        return None;
    }
    assert!(r.status().is_success(), "GET {path}: {}", r.status());
    Some(r.bytes().await.expect("body").to_vec())
}

/// Everything a server serves, by path: every repository's tag list, every manifest by
/// tag and by digest, and every blob and child manifest they reference, walked from
/// `_catalog`. Each body is checked against its digest on the way.
async fn contents(c: &Client, base: &str) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let catalog: Value = serde_json::from_slice(
        &fetch(c, base, "/v2/_catalog?n=10000")
            .await
            .expect("catalog"),
    )
    .expect("json");
    for repo in catalog["repositories"].as_array().expect("repos") {
        let repo = repo.as_str().expect("name");
        let tags_path = format!("/v2/{repo}/tags/list");
        let tags = fetch(c, base, &tags_path).await.expect("tags");
        let list: Value = serde_json::from_slice(&tags).expect("json");
        out.insert(tags_path, tags);
        let mut queue: Vec<String> = list["tags"]
            .as_array()
            .map(|t| {
                t.iter()
                    .filter_map(|t| t.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        while let Some(reference) = queue.pop() {
            let path = format!("/v2/{repo}/manifests/{reference}");
            if out.contains_key(&path) {
                continue;
            }
            let Some(bytes) = fetch(c, base, &path).await else {
                continue;
            };
            let m: Value = serde_json::from_slice(&bytes).expect("manifest json");
            queue.push(sha256(&bytes));
            for child in m["manifests"].as_array().into_iter().flatten() {
                queue.push(child["digest"].as_str().expect("digest").to_owned());
            }
            for d in manifest_blobs(&m) {
                let path = format!("/v2/{repo}/blobs/{d}");
                let bytes = fetch(c, base, &path).await.expect("blob");
                assert_eq!(sha256(&bytes), d, "{path} served other bytes");
                out.insert(path, bytes);
            }
            out.insert(path, bytes);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_during_a_push_restores_into_a_server_serving_identical_content() {
    let first = Server::start_with_args(&["--admin-token", TOKEN]);
    let c = client(Duration::from_secs(60));
    let base = first.base_url();
    let images: Vec<_> = (0..4)
        .map(|i| {
            make_image(
                &format!("team/app{}", i % 2),
                &format!("v{i}"),
                i + 10,
                300_000,
            )
        })
        .collect();
    for (i, img) in images.iter().enumerate() {
        push_image(&c, &base, img, i % 2 == 1).await.expect("push");
    }
    // An index over two of them, and an imgpkg bundle.
    let index = format!(
        r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","manifests":[{{"mediaType":"{OCI_MANIFEST}","digest":"{}","size":{}}},{{"mediaType":"{OCI_MANIFEST}","digest":"{}","size":{}}}]}}"#,
        images[0].digest,
        images[0].manifest.len(),
        images[2].digest,
        images[2].manifest.len()
    );
    let r = c
        .put(format!("{base}/v2/team/app0/manifests/multi"))
        .header("content-type", OCI_INDEX)
        .body(index)
        .send()
        .await
        .expect("index");
    assert_eq!(r.status(), reqwest::StatusCode::CREATED);
    assert!(
        post_import(
            &c,
            &base,
            TOKEN,
            "lab/bundle",
            fixture_tar("platform-bundle")
        )
        .await
    );
    let before = contents(&c, &base).await;

    // Pushes go on, image after image, until the backup is done.
    let done = Arc::new(AtomicBool::new(false));
    let pushed = Arc::new(AtomicUsize::new(0));
    let pusher = {
        let (c, base, done, pushed) = (c.clone(), base.clone(), done.clone(), pushed.clone());
        tokio::spawn(async move {
            let mut i = 0u64;
            while !done.load(Ordering::Acquire) || i < 2 {
                let img = make_image("busy/app", &format!("t{i}"), 1000 + i, 2_000_000);
                push_image(&c, &base, &img, true)
                    .await
                    .expect("concurrent push");
                pushed.fetch_add(1, Ordering::AcqRel);
                i += 1;
            }
        })
    };
    while pushed.load(Ordering::Acquire) == 0 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let scratch = scratch_dir("airdock-backup-");
    let tar = scratch.path().join("registry.tar");
    let out = {
        let (data, tar) = (first.data_dir().to_owned(), tar.clone());
        tokio::task::spawn_blocking(move || backup(&data, &tar))
            .await
            .expect("join")
    };
    let in_flight = pushed.load(Ordering::Acquire);
    done.store(true, Ordering::Release);
    pusher.await.expect("pusher");
    assert!(out.status.success(), "backup failed: {}", text(&out));
    let report: Value = serde_json::from_slice(&out.stdout).expect("report json");
    assert_eq!(report["attempts"], 1, "{report}");
    assert!(in_flight >= 1);

    // Restore into a fresh data dir and serve it.
    let data2 = scratch_dir("airdock-restored-");
    let out = restore(&tar, data2.path());
    assert!(out.status.success(), "restore failed: {}", text(&out));
    let mut second = Server::start_in(data2, &[]);
    let restored = contents(&c, &second.base_url()).await;
    let now = contents(&c, &base).await;
    // Everything there before the backup is there, byte for byte...
    for (path, bytes) in &before {
        assert_eq!(
            restored.get(path),
            Some(bytes),
            "{path} differs after restore"
        );
    }
    // ...and whatever the concurrent pushes had finished is served exactly as by the first.
    for (path, bytes) in &restored {
        if path.ends_with("/tags/list") {
            continue;
        }
        assert_eq!(
            now.get(path),
            Some(bytes),
            "{path} is not what the first server serves"
        );
    }
    assert!(restored
        .keys()
        .any(|p| p.starts_with("/v2/lab/bundle/manifests/")));
    second.terminate();
    let (clean, report) = fsck(second.data_dir(), false);
    assert!(clean, "fsck after restore: {report}");
}

#[tokio::test]
async fn a_backup_with_a_flipped_byte_is_refused_naming_the_entry() {
    let first = Server::start_with_args(&["--admin-token", TOKEN]);
    let c = client(Duration::from_secs(30));
    let img = make_image("r", "v1", 7, 100_000);
    push_image(&c, &first.base_url(), &img, false)
        .await
        .expect("push");
    let scratch = scratch_dir("airdock-backup-");
    let tar = scratch.path().join("b.tar");
    let out = backup(first.data_dir(), &tar);
    assert!(out.status.success(), "{}", text(&out));

    // Flip one byte in the middle of the layer's entry.
    let mut bytes = std::fs::read(&tar).expect("read");
    let layer = &img.blobs[1].1;
    let at = bytes
        .windows(64)
        .position(|w| w == &layer[..64])
        .expect("layer in the tar");
    bytes[at + 50_000] ^= 0x20;
    std::fs::write(&tar, &bytes).expect("write");

    let target = scratch.path().join("restored");
    let out = restore(&tar, &target);
    assert!(!out.status.success());
    let msg = text(&out);
    let hex = &img.blobs[1].0["sha256:".len()..];
    let entry = format!("blobs/sha256/{}/{hex}", &hex[..2]);
    assert!(msg.contains(&entry), "{msg}");
    assert!(msg.contains("does not match"), "{msg}");

    // A non-empty target is refused without --force.
    let out = restore(&tar, first.data_dir());
    assert!(!out.status.success());
    assert!(text(&out).contains("--force"), "{}", text(&out));
}
