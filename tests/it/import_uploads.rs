//! Resumable import uploads (`/admin/v1/imports/uploads/`) against the real binary: chunks
//! cut off at random points and a server killed mid-upload end in the same registry state as
//! one uninterrupted import; `airdock import --server` resumes by itself through a proxy that
//! drops its connections and across a server restart.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::Duration;

use reqwest::{Client, StatusCode};
use serde_json::Value;

use crate::fixture::fixture_tar;
use crate::imgpkg::{import_ok, server, tag_map, TOKEN};
use crate::support::{self, Server, AIRDOCK_BIN};

const UPLOADS: &str = "/admin/v1/imports/uploads/";

/// xorshift64: reproducible "random" points from a seed printed on failure.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }
}

fn range_end(resp: &reqwest::Response) -> u64 {
    let r = resp
        .headers()
        .get("range")
        .and_then(|v| v.to_str().ok())
        .expect("Range header");
    let end: u64 = r.split_once('-').expect("a-b").1.parse().expect("number");
    end + 1
}

/// Bytes the session holds, by `GET`.
async fn held(c: &Client, s: &Server, id: &str) -> u64 {
    let resp = c
        .get(s.url(&format!("{UPLOADS}{id}")))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("GET");
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    match range_end(&resp) {
        // `0-0`: nothing yet (this test never holds exactly one byte).
        1 => 0,
        n => n,
    }
}

/// A PATCH whose body stops after `sent` of its `bytes` and then fails: the connection
/// drops mid-chunk, as on a flaky link.
async fn broken_patch(c: &Client, s: &Server, id: &str, start: u64, bytes: &[u8], sent: usize) {
    let head = bytes::Bytes::copy_from_slice(&bytes[..sent]);
    let parts: Vec<Result<bytes::Bytes, std::io::Error>> =
        vec![Ok(head), Err(std::io::Error::other("link dropped"))];
    let r = c
        .patch(s.url(&format!("{UPLOADS}{id}")))
        .bearer_auth(TOKEN)
        .header(
            "content-range",
            format!("{start}-{}", start + bytes.len() as u64 - 1),
        )
        .header("content-length", bytes.len())
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
            parts,
        )))
        .send()
        .await;
    assert!(r.is_err() || !r.expect("checked").status().is_success());
}

#[tokio::test]
async fn interrupted_and_restarted_upload_imports_like_an_uninterrupted_one() {
    let mut s = server();
    let mut c = Client::new();
    let tar = fixture_tar("guestbook-bundle");
    import_ok(&s, "whole/gb", tar.clone()).await;
    let want = tag_map(&s, "whole/gb").await;

    let seed = 0x5eed_0000_0000_0001 ^ (tar.len() as u64);
    let mut rng = Rng(seed);
    let resp = c
        .post(s.url(&format!("{UPLOADS}?repository=resumed/gb")))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("POST");
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    let id = resp.headers()["docker-upload-uuid"]
        .to_str()
        .expect("ascii")
        .to_owned();
    assert_eq!(
        resp.headers()["location"].to_str().expect("ascii"),
        format!("{UPLOADS}{id}")
    );

    let total = tar.len() as u64;
    let mut offset = 0u64;
    let mut restarted = 0;
    let mut round = 0;
    while offset < total {
        round += 1;
        let len = (1 + rng.below(total / 6)).min(total - offset);
        let chunk = &tar[offset as usize..(offset + len) as usize];
        match rng.below(4) {
            // Cut off at a random point: the partial chunk is rolled back.
            0 => {
                let cut = rng.below(len) as usize;
                broken_patch(&c, &s, &id, offset, chunk, cut).await;
                assert_eq!(
                    held(&c, &s, &id).await,
                    offset,
                    "seed {seed:#x} round {round}"
                );
                continue;
            }
            // Kill the server between chunks (at most twice): the session survives.
            1 if restarted < 2 => {
                s.restart();
                restarted += 1;
                // Pooled connections died with the old process.
                c = Client::new();
                assert_eq!(
                    held(&c, &s, &id).await,
                    offset,
                    "seed {seed:#x}: after restart"
                );
                continue;
            }
            _ => {}
        }
        // A chunk starting at the wrong offset gets 416 and where the upload stands.
        if offset > 0 && rng.below(3) == 0 {
            let resp = c
                .patch(s.url(&format!("{UPLOADS}{id}")))
                .bearer_auth(TOKEN)
                .header(
                    "content-range",
                    format!("{}-{}", offset - 1, offset + len - 2),
                )
                .body(chunk.to_vec())
                .send()
                .await
                .expect("PATCH");
            assert_eq!(resp.status(), StatusCode::RANGE_NOT_SATISFIABLE);
            assert_eq!(range_end(&resp), offset);
        }
        let resp = c
            .patch(s.url(&format!("{UPLOADS}{id}")))
            .bearer_auth(TOKEN)
            .header("content-range", format!("{offset}-{}", offset + len - 1))
            .body(chunk.to_vec())
            .send()
            .await
            .expect("PATCH");
        assert_eq!(resp.status(), StatusCode::ACCEPTED, "seed {seed:#x}");
        offset += len;
        assert_eq!(range_end(&resp), offset);
    }
    assert_eq!(restarted, 2, "seed {seed:#x}: the run must cross restarts");
    // A session is not the /v2 API's: no repository shows it.
    let resp = c
        .put(s.url(&format!("{UPLOADS}{id}")))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("PUT");
    let status = resp.status();
    let report: Value = resp.json().await.expect("report");
    assert_eq!(status, StatusCode::CREATED, "{report}");
    assert_eq!(report["upload_bytes"], total);
    assert_eq!(tag_map(&s, "resumed/gb").await, want);
    // Finished sessions are gone.
    let resp = c
        .get(s.url(&format!("{UPLOADS}{id}")))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("GET");
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn upload_sessions_refuse_what_they_should() {
    let s = server();
    let c = Client::new();
    // No token, no repository, a /v2 session id, an unknown id.
    let resp = c
        .post(s.url(&format!("{UPLOADS}?repository=a")))
        .send()
        .await
        .expect("POST");
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let resp = c
        .post(s.url(UPLOADS))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("POST");
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let blob = c
        .post(s.url("/v2/a/blobs/uploads/"))
        .send()
        .await
        .expect("POST");
    let blob_id = blob.headers()["docker-upload-uuid"]
        .to_str()
        .expect("ascii")
        .to_owned();
    for id in [blob_id.as_str(), "0123456789abcdef0123456789abcdef", "nope"] {
        let resp = c
            .get(s.url(&format!("{UPLOADS}{id}")))
            .bearer_auth(TOKEN)
            .send()
            .await
            .expect("GET");
        assert_eq!(resp.status(), StatusCode::NOT_FOUND, "{id}");
    }
    // A hostile archive: refused at PUT with the import's error, the session removed.
    let resp = c
        .post(s.url(&format!("{UPLOADS}?repository=a")))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("POST");
    let loc = s.url(resp.headers()["location"].to_str().expect("ascii"));
    let mut tar = fixture_tar("guestbook-bundle");
    tar.truncate(5000);
    let resp = c
        .put(&loc)
        .bearer_auth(TOKEN)
        .body(tar)
        .send()
        .await
        .expect("PUT");
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let body: Value = resp.json().await.expect("json");
    assert_eq!(body["errors"][0]["code"], "TAR_INVALID", "{body}");
    let resp = c.get(&loc).bearer_auth(TOKEN).send().await.expect("GET");
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    // DELETE cancels.
    let resp = c
        .post(s.url(&format!("{UPLOADS}?repository=a")))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("POST");
    let loc = s.url(resp.headers()["location"].to_str().expect("ascii"));
    let resp = c
        .delete(&loc)
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("DELETE");
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    let resp = c.get(&loc).bearer_auth(TOKEN).send().await.expect("GET");
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
}

/// A TCP proxy to `upstream` that cuts connections once the client has sent `after` bytes on
/// one, `cuts` times in all, and reports each cut on `cut_tx`. A cut is spent when it happens,
/// not when a connection opens: a connection that ends early (a short status request, or one
/// the server's restart closed) must not use one up.
fn flaky_proxy(
    upstream: std::net::SocketAddr,
    cuts: usize,
    after: u64,
) -> (String, mpsc::Receiver<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
    let addr = listener.local_addr().expect("addr");
    let (cut_tx, cut_rx) = mpsc::channel();
    let cut_left = Arc::new(AtomicUsize::new(cuts));
    thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(client) = conn else { continue };
            let Ok(server) = TcpStream::connect(upstream) else {
                // Upstream is restarting: the client sees a dropped connection.
                continue;
            };
            let cut_left = Arc::clone(&cut_left);
            let cut_tx = cut_tx.clone();
            let (mut c_read, mut s_write) = (
                client.try_clone().expect("clone"),
                server.try_clone().expect("clone"),
            );
            let (mut s_read, mut c_write) = (server, client);
            thread::spawn(move || {
                let mut buf = [0u8; 16 << 10];
                let mut sent = 0u64;
                loop {
                    let n = match c_read.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n,
                    };
                    if sent + n as u64 > after
                        && cut_left
                            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                            .is_ok()
                    {
                        let _ = c_read.shutdown(Shutdown::Both);
                        let _ = s_write.shutdown(Shutdown::Both);
                        let _ = cut_tx.send(());
                        return;
                    }
                    sent += n as u64;
                    if s_write.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
                let _ = s_write.shutdown(Shutdown::Write);
            });
            thread::spawn(move || {
                let mut buf = [0u8; 16 << 10];
                loop {
                    match s_read.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            if c_write.write_all(&buf[..n]).is_err() {
                                break;
                            }
                        }
                    }
                }
                let _ = c_write.shutdown(Shutdown::Both);
            });
        }
    });
    (format!("http://{addr}"), cut_rx)
}

/// An imgpkg tar of one image whose layer is `len` pseudo-random bytes.
fn big_tar(len: usize) -> Vec<u8> {
    use airdock::imgpkg::synth::{self, Blob, Element, Image};
    let layer = support::xorshift_bytes(len, 0x9e37_79b9_7f4a_7c15);
    let image = Image::oci(
        vec![Blob::new(
            "application/vnd.oci.image.layer.v1.tar+gzip",
            layer,
        )],
        &[],
    );
    synth::imgpkg_tar(&[Element::Image {
        image,
        source_repo: "ghcr.io/org/big".into(),
        tag: "v1".into(),
        root_bundle: false,
    }])
}

#[tokio::test]
async fn cli_resumes_after_dropped_connections_and_a_restart() {
    let mut s = server();
    let scratch = support::scratch_dir("airdock-import-resume-");
    // A tar of a few MiB, so connections are cut mid-chunk.
    let tar = big_tar(3 << 20);
    let file = scratch.path().join("big.tar");
    std::fs::write(&file, &tar).expect("write tar");
    import_ok(&s, "whole/big", tar.clone()).await;
    let want = tag_map(&s, "whole/big").await;

    let (proxy, cut_rx) = flaky_proxy(s.addr(), 2, 700 << 10);
    let cli = thread::spawn(move || {
        Command::new(AIRDOCK_BIN)
            .arg("import")
            .arg(&file)
            .args(["-r", "resumed/big", "--server", &proxy, "--json"])
            .env("AIRDOCK_ADMIN_TOKEN", TOKEN)
            .output()
            .expect("run airdock import")
    });
    // After the first cut, restart the server while the client is backing off.
    cut_rx
        .recv_timeout(Duration::from_secs(60))
        .expect("first cut");
    let addr = s.addr();
    s.restart();
    assert_eq!(
        s.addr(),
        addr,
        "the restarted server must keep its port for the proxy"
    );
    let out = tokio::task::spawn_blocking(move || cli.join().expect("cli thread"))
        .await
        .expect("join");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).expect("JSON report");
    assert_eq!(report["upload_bytes"], tar.len());
    assert!(
        cut_rx.try_recv().is_ok(),
        "the second connection cut never happened"
    );
    assert_eq!(tag_map(&s, "resumed/big").await, want);
}
