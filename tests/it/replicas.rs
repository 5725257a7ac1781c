//! Replicas (issue 12): several `airdock serve` processes, each with its own data dir, their
//! metadata in one PostgreSQL database (`--metadata-url`) and their blobs in one bucket. What
//! one acknowledges, every other serves on its next request; racing writes through different
//! replicas end in one history; tokens and the admin token work on all; a lost database is
//! a 503 with `Retry-After` until it returns.

use std::time::{Duration, Instant};

use airdock_storage::pgtest::Postgres;
use airdock_storage_s3::testing::Versitygw;
use reqwest::StatusCode;
use serde_json::Value;

use crate::cluster::Cluster;
use crate::s3::{airdock_s3, s3_flags, S3_ENV};
use crate::security::{basic, htpasswd};
use crate::support::{
    client, get, get_json, image_manifest, push_blob, put_manifest, scratch_dir, sha256, Server,
};

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

/// Push a one-layer image to `repo:tag` through `s`; its manifest digest.
async fn push_image(c: &reqwest::Client, s: &Server, repo: &str, tag: &str, seed: u64) -> String {
    let config = format!("{{\"seed\":{seed}}}");
    let layer = crate::support::xorshift_bytes(4096, seed + 1);
    let cd = push_blob(c, s, repo, config.as_bytes()).await;
    let ld = push_blob(c, s, repo, &layer).await;
    let m = image_manifest(&cd, config.len(), &ld, layer.len());
    let r = put_manifest(c, s, repo, tag, OCI_MANIFEST, m.as_bytes()).await;
    assert_eq!(r.status(), StatusCode::CREATED, "push through {}", s.addr());
    sha256(m.as_bytes())
}

/// The digest `repo:tag` resolves to through `s` (`None`: 404).
async fn resolve(c: &reqwest::Client, s: &Server, repo: &str, tag: &str) -> Option<String> {
    let r = c
        .head(s.url(&format!("/v2/{repo}/manifests/{tag}")))
        .header("accept", OCI_MANIFEST)
        .send()
        .await
        .expect("head");
    match r.status() {
        StatusCode::OK => r
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
        StatusCode::NOT_FOUND => None,
        other => panic!("HEAD {repo}:{tag} through {}: {other}", s.addr()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replicas_serve_each_others_writes_at_once_and_serialise_races() {
    let cl = Cluster::start(2, &[]);
    let (a, b) = (&cl.replicas[0], &cl.replicas[1]);
    let c = client(Duration::from_secs(30));

    // A write acknowledged by A is served by B on its very next request: no wait, no retry.
    let d1 = push_image(&c, a, "lab/app", "v1", 1).await;
    assert_eq!(resolve(&c, b, "lab/app", "v1").await, Some(d1.clone()));
    let layer = crate::support::xorshift_bytes(4096, 2);
    let r = get(&c, b, &format!("/v2/lab/app/blobs/{}", sha256(&layer))).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.bytes().await.expect("body").as_ref(), layer.as_slice());
    let tags = get_json(&c, b, "/v2/lab/app/tags/list").await;
    assert_eq!(tags["tags"], serde_json::json!(["v1"]));
    // And the other way round: a delete through B is seen by A at once.
    let r = c
        .delete(b.url("/v2/lab/app/manifests/v1"))
        .send()
        .await
        .expect("delete");
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    assert_eq!(resolve(&c, a, "lab/app", "v1").await, None);

    // Racing pushes of one tag through both replicas: each push is one transaction, checked
    // against every earlier one, so both replicas (and a third started afterwards, replaying
    // the database) agree on where it ends, and every tag they list resolves.
    let race = |s: &'static str, seed: u64| {
        let server = if s == "a" { a } else { b };
        let c = c.clone();
        async move {
            let mut last = String::new();
            for i in 0..10 {
                last = push_image(&c, server, "lab/race", "latest", seed + i * 10).await;
                push_image(&c, server, "lab/race", &format!("{s}{i}"), seed + i * 10).await;
            }
            last
        }
    };
    let (la, lb) = tokio::join!(race("a", 100), race("b", 1000));
    let on_a = resolve(&c, a, "lab/race", "latest").await.expect("a");
    let on_b = resolve(&c, b, "lab/race", "latest").await.expect("b");
    assert_eq!(on_a, on_b);
    assert!(
        on_a == la || on_a == lb,
        "the last push of one of them wins"
    );
    let third = cl.join();
    for s in [a, b, &third] {
        let tags = get_json(&c, s, "/v2/lab/race/tags/list").await;
        let tags = tags["tags"].as_array().expect("tags").len();
        assert_eq!(tags, 21, "latest, a0..a9, b0..b9 through {}", s.addr());
    }
    assert_eq!(resolve(&c, &third, "lab/race", "latest").await, Some(on_a));

    // The admin token is the database's, the same on every replica.
    let admin = cl.pg.psql(
        &cl.url,
        "SELECT value FROM airdock_secrets WHERE name = 'admin_token'",
    );
    for s in [a, b] {
        let r = c
            .get(s.url("/admin/v1/usage"))
            .bearer_auth(&admin)
            .send()
            .await
            .expect("usage");
        assert_eq!(r.status(), StatusCode::OK, "admin token on {}", s.addr());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_issued_by_one_replica_is_accepted_by_another() {
    let dir = scratch_dir("airdock-replica-auth-");
    let hp = htpasswd(dir.path(), &[("alice", "alice-pw")]);
    let cl = Cluster::start(2, &["--htpasswd", hp.to_str().expect("utf-8")]);
    let (a, b) = (&cl.replicas[0], &cl.replicas[1]);
    let c = client(Duration::from_secs(30));
    let v: Value = c
        .get(a.url("/token?service=airdock&scope=repository:lab/app:pull,push"))
        .header("authorization", basic("alice", "alice-pw"))
        .send()
        .await
        .expect("token")
        .json()
        .await
        .expect("json");
    let token = v["token"].as_str().expect("token");
    let r = c
        .get(b.url("/v2/lab/app/tags/list"))
        .bearer_auth(token)
        .send()
        .await
        .expect("list");
    // Accepted (the repository does not exist yet: 404, not 401).
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_database_is_503_with_retry_after_until_it_returns() {
    let mut cl = Cluster::start(1, &[]);
    let c = client(Duration::from_secs(30));
    let d = push_image(&c, &cl.replicas[0], "lab/app", "v1", 7).await;
    cl.pg.stop();
    let s = &cl.replicas[0];
    let r = c
        .get(s.url("/v2/lab/app/manifests/v1"))
        .header("accept", OCI_MANIFEST)
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(r.headers().contains_key("retry-after"));
    let body: Value = r.json().await.expect("JSON error");
    assert_eq!(body["errors"][0]["code"], "UNAVAILABLE");
    let ready = get(&c, s, "/readyz").await;
    assert_eq!(ready.status(), StatusCode::SERVICE_UNAVAILABLE);
    let v: Value = ready.json().await.expect("json");
    assert!(
        v["reasons"].to_string().contains("metadata database"),
        "{v}"
    );
    // Never a wrong answer meanwhile, and back by itself once the database is.
    cl.pg.resume();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = c
            .head(s.url("/v2/lab/app/manifests/v1"))
            .header("accept", OCI_MANIFEST)
            .send()
            .await
            .expect("head");
        if r.status() == StatusCode::OK {
            assert_eq!(
                r.headers()["docker-content-digest"]
                    .to_str()
                    .expect("ascii"),
                d
            );
            break;
        }
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(
            Instant::now() < deadline,
            "not back 20 s after the database"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while get(&c, s, "/readyz").await.status() != StatusCode::OK {
        assert!(Instant::now() < deadline, "/readyz not back");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// `airdock migrate-metadata --from-data-dir dir --to url`.
fn migrate_metadata(dir: &std::path::Path, url: &str) -> std::process::Output {
    std::process::Command::new(crate::support::AIRDOCK_BIN)
        .args(["migrate-metadata", "--from-data-dir"])
        .arg(dir)
        .args(["--to", url])
        .output()
        .expect("run migrate-metadata")
}

/// `airdock migrate-metadata`: a single node's registry moves into PostgreSQL and is served
/// from there (its data dir, and a second replica) without re-pushing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_node_moves_into_postgres_without_re_pushing() {
    let pg = Postgres::start();
    let url = pg.database();
    let gw = Versitygw::start();
    let mut args = s3_flags(&gw, "moved");
    let c = client(Duration::from_secs(30));
    let single = {
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        Server::start_in_env(scratch_dir("airdock-single-"), &a, &S3_ENV)
    };
    let d = push_image(&c, &single, "lab/app", "v1", 3).await;
    let dir = single.into_data_dir();
    let out = migrate_metadata(dir.path(), &url);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).expect("JSON report");
    assert_eq!(report["tags"], 1);
    args.extend(["--metadata-url".to_owned(), url.clone()]);
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    let moved = Server::start_in_env(dir, &a, &S3_ENV);
    let other = Server::start_in_env(scratch_dir("airdock-replica-"), &a, &S3_ENV);
    for s in [&moved, &other] {
        assert_eq!(resolve(&c, s, "lab/app", "v1").await, Some(d.clone()));
    }
    // The offline commands work on a replica's data dir with the database's URL: fsck finds
    // everything the database names in the bucket, GC runs (the replica stopped).
    let dir = moved.into_data_dir();
    let d_arg = dir.path().to_str().expect("utf-8");
    let (ok, out, err) = airdock_s3(&["fsck", "--data-dir", d_arg, "--metadata-url", &url]);
    assert!(ok, "fsck: {out}{err}");
    let fsck: Value = serde_json::from_str(&out).expect("fsck report");
    assert_eq!(fsck["clean"], true, "{fsck}");
    let (ok, out, err) = airdock_s3(&["gc", "--data-dir", d_arg, "--metadata-url", &url]);
    assert!(ok, "gc: {out}{err}");
    assert_eq!(resolve(&c, &other, "lab/app", "v1").await, Some(d.clone()));
    // Once moved, the data dir is not served from its old journal by mistake.
    let out = migrate_metadata(dir.path(), &url);
    assert!(!out.status.success(), "migrated twice");
    drop(pg);
}

/// Imports racing through two replicas into one repository: each is one transaction, so each
/// is whole (its record with it), and both replicas list the same tags, digests and records.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn imports_racing_through_two_replicas_stay_whole_and_agree() {
    const TOKEN: &str = "replica-admin-token";
    let cl = Cluster::start(2, &["--admin-token", TOKEN]);
    let (a, b) = (&cl.replicas[0], &cl.replicas[1]);
    let c = client(Duration::from_secs(60));
    let import = |s: &'static str, fixture: &'static str| {
        let server = if s == "a" { a } else { b };
        let (c, base) = (c.clone(), server.base_url());
        async move {
            for _ in 0..3 {
                let tar = crate::fixture::fixture_tar(fixture);
                assert!(
                    crate::crash::post_import(&c, &base, TOKEN, "lab/bundle", tar).await,
                    "import through {s}"
                );
            }
        }
    };
    tokio::join!(import("a", "platform-bundle"), import("b", "multi-image"));
    let mut seen = Vec::new();
    for s in [a, b] {
        let tags = get_json(&c, s, "/v2/lab/bundle/tags/list").await;
        let mut resolved = Vec::new();
        for t in tags["tags"].as_array().expect("tags") {
            let t = t.as_str().expect("tag");
            resolved.push((t.to_owned(), resolve(&c, s, "lab/bundle", t).await));
        }
        assert!(resolved.iter().all(|(_, d)| d.is_some()), "{resolved:?}");
        let records = c
            .get(s.url("/admin/v1/imports?repository=lab/bundle"))
            .bearer_auth(TOKEN)
            .send()
            .await
            .expect("imports")
            .json::<Value>()
            .await
            .expect("json");
        let ids: Vec<String> = records["imports"]
            .as_array()
            .expect("imports")
            .iter()
            .map(|r| r["id"].to_string())
            .collect();
        assert_eq!(ids.len(), 6, "every import recorded once");
        assert!(ids.iter().all(|id| id.len() > 4), "{ids:?}");
        seen.push((resolved, ids));
    }
    assert_eq!(seen[0], seen[1], "both replicas hold the same history");
}

/// Through nginx round-robin over two replicas on one database and bucket: an upload begun on
/// one replica is finished by the other, the manifest is committed by whichever comes next,
/// and both replicas serve the tag at once, directly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_through_the_balancer_spans_both_replicas() {
    let cl = Cluster::balanced(2, &[]);
    let c = client(Duration::from_secs(30));
    let layer = crate::support::xorshift_bytes(64 * 1024, 11);
    let ld = sha256(&layer);
    let r = c
        .post(cl.lb_url("/v2/lab/lb/blobs/uploads/"))
        .send()
        .await
        .expect("POST");
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let at = r.headers()["location"].to_str().expect("ascii").to_owned();
    let at = if at.starts_with('/') {
        cl.lb_url(&at)
    } else {
        at
    };
    let sep = if at.contains('?') { '&' } else { '?' };
    let r = c
        .put(format!("{at}{sep}digest={ld}"))
        .body(layer.clone())
        .send()
        .await
        .expect("PUT");
    assert_eq!(r.status(), StatusCode::CREATED, "{:?}", r.text().await);
    let config = b"{}";
    let cd = sha256(config);
    let r = c
        .post(cl.lb_url(&format!("/v2/lab/lb/blobs/uploads/?digest={cd}")))
        .body(config.to_vec())
        .send()
        .await
        .expect("POST config");
    assert_eq!(r.status(), StatusCode::CREATED);
    let m = image_manifest(&cd, config.len(), &ld, layer.len());
    let r = c
        .put(cl.lb_url("/v2/lab/lb/manifests/v1"))
        .header("content-type", OCI_MANIFEST)
        .body(m.clone())
        .send()
        .await
        .expect("PUT manifest");
    assert_eq!(r.status(), StatusCode::CREATED);
    let served = cl.nginx.as_ref().expect("balanced").requests(4);
    let upstreams: std::collections::HashSet<&str> =
        served.iter().map(|(up, ..)| up.as_str()).collect();
    assert_eq!(upstreams.len(), 2, "both replicas took part: {served:?}");
    for s in &cl.replicas {
        assert_eq!(
            resolve(&c, s, "lab/lb", "v1").await,
            Some(sha256(m.as_bytes()))
        );
        let got = get(&c, s, &format!("/v2/lab/lb/blobs/{ld}")).await;
        assert_eq!(got.status(), StatusCode::OK);
        assert_eq!(got.bytes().await.expect("body").as_ref(), layer.as_slice());
    }
}
