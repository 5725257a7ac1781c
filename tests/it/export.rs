//! Issue 15, export: the tar `GET /admin/v1/export` and `airdock export` write is taken by
//! real `imgpkg copy --tar … --to-repo` and by `airdock import`; the multi-hop chain
//! A → export → B → export → C leaves C as B (tags and digests), and `imgpkg pull` from C
//! relocates `images.yml` to C; plain images, indexes and several references share one tar;
//! a client that hangs up stops the stream; pull rights decide who may export what.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use reqwest::{Client, StatusCode};

use crate::fixture::fixture_tar;
use crate::imgpkg::{import_ok, server, tag_map, TOKEN};
use crate::imgpkg_tools::{lock_file_images, Imgpkg};
use crate::security::{basic, htpasswd};
use crate::support::{scratch_dir, Server, AIRDOCK_BIN};

/// `airdock <args>`, asserting success; returns stderr.
fn airdock(args: &[&str]) -> String {
    let out = Command::new(AIRDOCK_BIN)
        .args(args)
        .env_remove("AIRDOCK_ADMIN_TOKEN")
        .output()
        .expect("run airdock");
    assert!(
        out.status.success(),
        "airdock {} failed:\n{}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn p(path: &Path) -> &str {
    path.to_str().expect("utf-8 path")
}

/// Tags other than the ImageLocations ones, whose gzip bytes differ between imgpkg and us.
fn content_tags(
    tags: &BTreeMap<String, String>,
    locations: &[&String],
) -> BTreeMap<String, String> {
    tags.iter()
        .filter(|(t, d)| !t.ends_with(".image-locations.imgpkg") && !locations.contains(d))
        .map(|(t, d)| (t.clone(), d.clone()))
        .collect()
}

async fn export_get(s: &Server, query: &str, auth: Option<&str>) -> reqwest::Response {
    let mut req = Client::new().get(s.url(&format!("/admin/v1/export?{query}")));
    if let Some(a) = auth {
        req = req.header("authorization", a);
    }
    req.send().await.expect("export request")
}

#[tokio::test]
async fn multi_hop_chain_with_real_imgpkg_at_both_ends() {
    let imgpkg = Imgpkg::new("airdock-export-hops-");
    let w = imgpkg.dir().to_owned();
    let token = w.join("token");
    std::fs::write(&token, TOKEN).expect("token");

    // A holds the bundle (imported from imgpkg's own tar).
    let a = server();
    import_ok(&a, "vendor/platform", fixture_tar("platform-bundle")).await;
    let hop1 = w.join("hop1.tar");
    airdock(&[
        "export",
        "--server",
        &a.base_url(),
        "--token-file",
        p(&token),
        "-r",
        "vendor/platform",
        "-t",
        "1.0",
        "-o",
        p(&hop1),
    ]);

    // Real imgpkg takes the tar...
    let b = server();
    imgpkg.run(&[
        "copy",
        "--tar",
        p(&hop1),
        "--to-repo",
        &format!("{}/theirs/platform", b.host()),
    ]);
    // ...and so does airdock import.
    airdock(&[
        "import",
        p(&hop1),
        "-r",
        "dmz/platform",
        "--server",
        &b.base_url(),
        "--token-file",
        p(&token),
    ]);
    let tags_a = tag_map(&a, "vendor/platform").await;
    let tags_b = tag_map(&b, "dmz/platform").await;
    assert_eq!(tags_a, tags_b, "A → B");
    let theirs = tag_map(&b, "theirs/platform").await;
    let loc_ours: Vec<&String> = tags_b
        .iter()
        .filter(|(t, _)| t.ends_with(".image-locations.imgpkg"))
        .map(|(_, d)| d)
        .collect();
    let loc_theirs: Vec<&String> = theirs
        .iter()
        .filter(|(t, _)| t.ends_with(".image-locations.imgpkg"))
        .map(|(_, d)| d)
        .collect();
    assert_eq!(
        content_tags(&theirs, &loc_theirs),
        content_tags(&tags_b, &loc_ours),
        "imgpkg's copy of our export equals our import of it"
    );

    // B → C, the second export read straight from B's data dir (B stopped).
    let mut b = b;
    assert!(b.terminate(), "B stops");
    let hop2 = w.join("hop2.tar");
    airdock(&[
        "export",
        "--data-dir",
        p(b.data_dir()),
        "-r",
        "dmz/platform",
        "-t",
        "1.0",
        "-o",
        p(&hop2),
    ]);
    let c = server();
    airdock(&[
        "import",
        p(&hop2),
        "-r",
        "dmz/platform",
        "--server",
        &c.base_url(),
        "--token-file",
        p(&token),
    ]);
    assert_eq!(tag_map(&c, "dmz/platform").await, tags_b, "C is B");

    // imgpkg pull from C relocates every images.yml entry to C.
    let out = w.join("pull");
    let stdout = imgpkg.pull(&format!("{}/dmz/platform:1.0", c.host()), &out);
    assert!(stdout.contains("is hosting every image"), "{stdout}");
    let images = lock_file_images(&out.join(".imgpkg/images.yml"));
    assert!(!images.is_empty());
    for i in &images {
        assert!(
            i.starts_with(&format!("{}/dmz/platform@sha256:", c.host())),
            "{i}"
        );
    }
}

#[tokio::test]
async fn plain_image_index_and_several_references_in_one_tar() {
    let s = server();
    import_ok(&s, "lab/multi", fixture_tar("multi-image")).await;
    import_ok(&s, "lab/guest", fixture_tar("guestbook-bundle")).await;
    let tags_multi = tag_map(&s, "lab/multi").await;
    let app1 = tag_map(&s, "lab/guest")
        .await
        .into_iter()
        .find(|(t, _)| t.starts_with("sha256-8872a0d0"))
        .map(|(_, d)| d)
        .expect("app1 is in the bundle's repository");

    // An index by tag, a plain image by digest, a bundle by tag: one tar.
    let auth = format!("Bearer {TOKEN}");
    let resp = export_get(
        &s,
        &format!("ref=lab/multi:v1&ref=lab/guest@{app1}&ref=lab/guest:1.0"),
        Some(&auth),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["content-type"], "application/x-tar");
    let len: u64 = resp.headers()["content-length"]
        .to_str()
        .expect("len")
        .parse()
        .expect("n");
    let tar = resp.bytes().await.expect("tar").to_vec();
    assert_eq!(tar.len() as u64, len);

    let t = server();
    import_ok(&t, "site/all", tar).await;
    let all = tag_map(&t, "site/all").await;
    assert_eq!(
        all["v1"], tags_multi["v1"],
        "the index keeps its tag and digest"
    );
    assert!(all.contains_key("1.0"));
    assert!(all.values().any(|d| *d == app1));

    // A plain image alone, through an ImagesLock body.
    let lock = format!(
        "---\napiVersion: imgpkg.carvel.dev/v1alpha1\nimages:\n- image: {}/lab/guest@{app1}\nkind: ImagesLock\n",
        s.host()
    );
    let resp = Client::new()
        .post(s.url("/admin/v1/export"))
        .bearer_auth(TOKEN)
        .body(lock)
        .send()
        .await
        .expect("post");
    assert_eq!(resp.status(), StatusCode::OK);
    let tar = resp.bytes().await.expect("tar").to_vec();
    let report = import_ok(&t, "site/one", tar).await;
    assert!(report["root_bundle"].is_null(), "{report}");
    assert_eq!(tag_map(&t, "site/one").await.len(), 1);

    // Unknown references are 404 in the error format, before any byte of tar.
    let resp = export_get(&s, "repository=lab/multi&tag=nope", Some(&auth)).await;
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    let body: serde_json::Value = resp.json().await.expect("json");
    assert_eq!(body["errors"][0]["code"], "MANIFEST_UNKNOWN");
}

/// The export's open blob file, if the server still holds one.
fn open_blob_files(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| {
            d.flatten()
                .filter_map(|e| std::fs::read_link(e.path()).ok())
                .filter(|l| l.to_string_lossy().contains("/blobs/sha256/"))
                .count()
        })
        .unwrap_or(0)
}

#[tokio::test]
async fn a_client_that_hangs_up_stops_the_stream() {
    use airdock::imgpkg::synth::{self, Blob, Element, Image};
    let s = server();
    // One 64 MiB layer: far more than the socket buffers hold.
    let big = Blob::new(
        "application/vnd.oci.image.layer.v1.tar",
        crate::support::xorshift_bytes(64 << 20, 7),
    );
    let img = Image::oci(vec![big], &[]);
    let tar = synth::imgpkg_tar(&[Element::Image {
        image: img,
        source_repo: "src/big".into(),
        tag: "v1".into(),
        root_bundle: false,
    }]);
    import_ok(&s, "lab/big", tar).await;
    let pid = s.pid().expect("pid");

    let mut resp = export_get(
        &s,
        "repository=lab/big&tag=v1",
        Some(&format!("Bearer {TOKEN}")),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let first = resp.chunk().await.expect("chunk").expect("data");
    assert!(!first.is_empty());
    // Reading stalls on the unread socket: the blob is open now.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while open_blob_files(pid) == 0 && std::time::Instant::now() < deadline {
        let _ = resp.chunk().await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(open_blob_files(pid) > 0, "the export reads the blob");
    drop(resp);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while open_blob_files(pid) > 0 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        open_blob_files(pid),
        0,
        "the file is closed once the client is gone"
    );
    // And the server carries on.
    let again = export_get(
        &s,
        "repository=lab/big&tag=nope",
        Some(&format!("Bearer {TOKEN}")),
    )
    .await;
    assert_eq!(again.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn pull_rights_on_every_repository_decide() {
    let dir = scratch_dir("airdock-export-rights-");
    let hp = htpasswd(
        dir.path(),
        &[
            ("root", "root-pw"),
            ("alice", "alice-pw"),
            ("bob", "bob-pw"),
        ],
    );
    let cfg = dir.path().join("airdock.yaml");
    std::fs::write(
        &cfg,
        format!(
            "auth:\n  htpasswd: {}\n  admins: [root]\naccess:\n  - repos: [\"team/*\"]\n    users: [alice]\n    allow: [pull]\n  - repos: [\"team/app\"]\n    users: [bob]\n    allow: [pull]\n",
            p(&hp)
        ),
    )
    .expect("config");
    let s = Server::start_with_args(&["--config", p(&cfg), "--admin-token", TOKEN]);
    import_ok(&s, "team/app", fixture_tar("multi-image")).await;
    import_ok(&s, "team/other", fixture_tar("guestbook-bundle")).await;

    let both = "ref=team/app:v1&ref=team/other:1.0";
    // Anonymous: a login is needed (401 with a challenge).
    let r = export_get(&s, both, None).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(r.headers().contains_key("www-authenticate"));
    // alice pulls both: allowed; bob only team/app: 403 naming the other.
    let r = export_get(&s, both, Some(&basic("alice", "alice-pw"))).await;
    assert_eq!(r.status(), StatusCode::OK);
    let r = export_get(&s, "ref=team/app:v1", Some(&basic("bob", "bob-pw"))).await;
    assert_eq!(r.status(), StatusCode::OK);
    let r = export_get(&s, both, Some(&basic("bob", "bob-pw"))).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let body: serde_json::Value = r.json().await.expect("json");
    assert_eq!(body["errors"][0]["code"], "DENIED");
    assert!(
        body["errors"][0]["message"]
            .as_str()
            .unwrap_or("")
            .contains("team/other"),
        "{body}"
    );
    // The refusal comes before existence is revealed: an unknown tag there is 403 too.
    let r = export_get(&s, "ref=team/other:nope", Some(&basic("bob", "bob-pw"))).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    // Admins (password or token) export anything.
    for auth in [basic("root", "root-pw"), format!("Bearer {TOKEN}")] {
        assert_eq!(
            export_get(&s, both, Some(&auth)).await.status(),
            StatusCode::OK
        );
    }
    // The rest of the admin API stays admin-only.
    let r = Client::new()
        .get(s.url("/admin/v1/imports"))
        .header("authorization", basic("alice", "alice-pw"))
        .send()
        .await
        .expect("imports");
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
}
