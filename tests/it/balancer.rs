//! Issue 12, the blob side: airdock replicas behind a round-robin load balancer (nginx), each
//! its own process, port and data dir, blobs in one S3 bucket (versitygw), and no shared
//! metadata (`--metadata-url`, see `replicas.rs`): what the bucket alone shares (the blobs,
//! the object index and the upload sessions) lets a chunked upload land on a different
//! replica with every request.

use std::net::SocketAddr;
use std::time::Duration;

use airdock_storage_s3::testing::Versitygw;
use reqwest::{Client, StatusCode};

use crate::imgpkg::TOKEN;
use crate::nginx::Nginx;
use crate::s3::{s3_flags, S3_ENV};
use crate::support::{self, scratch_dir, Server};

/// `n` airdock replicas on `gw`'s bucket (one key prefix for all), behind nginx round-robin.
pub(crate) struct Replicas {
    // Declared first: stopped before the replicas it sends to.
    pub(crate) nginx: Nginx,
    pub(crate) servers: Vec<Server>,
    pub(crate) gw: Versitygw,
    pub(crate) prefix: String,
}

impl Replicas {
    pub(crate) fn start(n: usize, extra: &[&str]) -> Replicas {
        let gw = Versitygw::start();
        let prefix = "shared".to_owned();
        let flags = s3_flags(&gw, &prefix);
        let mut args: Vec<&str> = flags.iter().map(String::as_str).collect();
        args.extend_from_slice(extra);
        let servers: Vec<Server> = (0..n)
            .map(|_| Server::start_in_env(scratch_dir("airdock-replica-"), &args, &S3_ENV))
            .collect();
        let addrs: Vec<SocketAddr> = servers.iter().map(Server::addr).collect();
        let nginx = Nginx::start(&addrs, None);
        Replicas {
            nginx,
            servers,
            gw,
            prefix,
        }
    }

    /// `path` through the balancer.
    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}{path}", self.nginx.base_url())
    }

    /// A `Location` the registry answered, as a URL through the balancer.
    pub(crate) fn location(&self, at: &str) -> String {
        if at.starts_with('/') {
            self.url(at)
        } else {
            at.to_owned()
        }
    }

    /// The file versitygw keeps the object `rel` (under the replicas' prefix) in.
    fn object(&self, rel: &str) -> std::path::PathBuf {
        self.gw.object_path(&format!("{}/{rel}", self.prefix))
    }
}

fn location(r: &reqwest::Response) -> String {
    r.headers()["location"]
        .to_str()
        .expect("location")
        .to_owned()
}

/// The upload session's id: the last segment of its location's path.
fn upload_id(location: &str) -> String {
    let path = location.split('?').next().unwrap_or(location);
    path.rsplit('/').next().unwrap_or(path).to_owned()
}

/// A push whose requests go to the two replicas in turn: the session begun on one is
/// continued by the other (its state is in the bucket), PATCH by PATCH across S3 part
/// boundaries, its status asked and its blob finished wherever the next request lands. The
/// blob is then found by both replicas in the bucket (a push of the same bytes through each
/// stores nothing again), and served whole, and by range, through either.
#[tokio::test]
async fn a_chunked_upload_alternates_replicas_and_either_serves_the_blob() {
    let r = Replicas::start(2, &["--admin-token", TOKEN]);
    let c = support::client(Duration::from_secs(60));
    let layer = support::xorshift_bytes((20 << 20) + 12_345, 11);
    let digest = support::sha256(&layer);
    let started = c
        .post(r.url("/v2/app/blobs/uploads/"))
        .send()
        .await
        .expect("post");
    assert_eq!(started.status(), StatusCode::ACCEPTED);
    let mut at = location(&started);
    let id = upload_id(&at);
    // Both replicas' admins list it, whichever opened it.
    for s in &r.servers {
        let listed = c
            .get(s.url("/admin/v1/uploads?repository=app"))
            .bearer_auth(TOKEN)
            .send()
            .await
            .expect("list");
        assert_eq!(listed.status(), StatusCode::OK);
        let v: serde_json::Value = listed.json().await.expect("json");
        assert_eq!(v["uploads"][0]["id"], id.as_str(), "{v}");
    }
    // Under a part, across the first part boundary, across the second, the rest.
    let cuts = [0, 3 << 20, 10 << 20, 19 << 20, layer.len()];
    for w in cuts.windows(2) {
        let (start, end) = (w[0], w[1]);
        let resp = support::patch_chunk(&c, &r.location(&at), start, &layer[start..end]).await;
        assert_eq!(resp.status(), StatusCode::ACCEPTED, "chunk {start}-{end}");
        assert_eq!(resp.headers()["range"], format!("0-{}", end - 1).as_str());
        at = location(&resp);
    }
    let status = c.get(r.location(&at)).send().await.expect("status");
    assert_eq!(status.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        status.headers()["range"],
        format!("0-{}", layer.len() - 1).as_str()
    );
    let sep = if at.contains('?') { '&' } else { '?' };
    let done = c
        .put(r.location(&format!("{at}{sep}digest={digest}")))
        .send()
        .await
        .expect("put");
    assert_eq!(done.status(), StatusCode::CREATED);

    // Every request of the upload went to the other replica than the one before.
    let served = r.nginx.requests(7);
    assert_eq!(served.len(), 7, "{served:?}");
    for pair in served.windows(2) {
        assert_ne!(pair[0].0, pair[1].0, "round-robin: {served:?}");
    }
    // One object in the bucket: the session's multipart upload, completed in place.
    assert!(r.object(&format!("objects/{id}")).is_file());
    let hex = digest.trim_start_matches("sha256:");
    let digest_key = format!("blobs/sha256/{}/{hex}", &hex[..2]);
    assert!(!r.object(&digest_key).exists());

    // Each replica links the blob into its own repository (metadata is its own): a push of
    // the same bytes lands once on each, and each finds the blob already in the bucket
    // through the shared index, so nothing is stored twice.
    for _ in 0..2 {
        let pushed = c
            .post(r.url(&format!("/v2/app/blobs/uploads/?digest={digest}")))
            .header("Content-Type", "application/octet-stream")
            .body(layer.clone())
            .send()
            .await
            .expect("push");
        assert_eq!(pushed.status(), StatusCode::CREATED);
    }
    assert!(
        !r.object(&digest_key).exists(),
        "found in the bucket, not stored again"
    );
    let path = format!("/v2/app/blobs/{digest}");
    for s in &r.servers {
        served_whole(&c, &s.url(&path), &layer).await;
    }
    for _ in 0..2 {
        served_whole(&c, &r.url(&path), &layer).await;
    }
}

/// `url` answers `blob` whole, and a range of it across the 16 MiB mark (a part boundary).
async fn served_whole(c: &Client, url: &str, blob: &[u8]) {
    let whole = c.get(url).send().await.expect("get");
    assert_eq!(whole.status(), StatusCode::OK);
    assert!(whole.bytes().await.expect("bytes") == blob, "{url}");
    let part = c
        .get(url)
        .header("Range", "bytes=16777215-16777315")
        .send()
        .await
        .expect("range");
    assert_eq!(part.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(
        part.bytes().await.expect("bytes"),
        &blob[16_777_215..16_777_316]
    );
}
