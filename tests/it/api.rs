//! The registry API over a real socket: the spec's exchanges end to end, what only the wire
//! can bring (raw `..` paths), and what survives a restart or a kill. Handlers' refusals of
//! hostile input are checked in-process, in `inproc`.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use reqwest::{Client, Response, StatusCode};
use serde_json::Value;
use sha2::Digest as _;

use crate::support::{
    get, get_json, head, image_manifest, post, push_blob, put_manifest, sha256, Server,
    OCI_MANIFEST,
};

fn client() -> Client {
    crate::support::client(Duration::from_secs(60))
}

async fn expect_error(resp: Response, status: StatusCode, code: &str) {
    assert_eq!(resp.status(), status, "status for {code}");
    let body: Value = resp.json().await.expect("JSON error body");
    assert_eq!(body["errors"][0]["code"], code, "{body}");
    assert!(body["errors"][0]["message"].is_string(), "{body}");
}

/// Push a config and one layer, return the image manifest bytes referencing them.
async fn image(c: &Client, s: &Server, repo: &str, seed: &str) -> Vec<u8> {
    let cfg = format!("{{\"seed\":\"{seed}\"}}");
    let cd = push_blob(c, s, repo, cfg.as_bytes()).await;
    let layer = format!("layer {seed}");
    let ld = push_blob(c, s, repo, layer.as_bytes()).await;
    image_manifest(&cd, cfg.len(), &ld, layer.len()).into_bytes()
}

/// Send bytes exactly as given (clients normalise `..` away) and return status and body.
fn raw(s: &Server, request_line: &str) -> (u16, String) {
    let mut t = TcpStream::connect(s.addr()).expect("connect");
    t.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    write!(t, "{request_line}\r\nHost: x\r\nConnection: close\r\n\r\n").expect("write");
    let mut out = String::new();
    let _ = t.read_to_string(&mut out);
    let status = out
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = out.split("\r\n\r\n").nth(1).unwrap_or("").to_owned();
    (status, body)
}

#[tokio::test]
async fn version_check_and_api_header() {
    let s = Server::start();
    let r = client().get(s.url("/v2/")).send().await.expect("get");
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        r.headers()["docker-distribution-api-version"],
        "registry/2.0"
    );
}

#[tokio::test]
async fn chunked_push_then_ranged_pull() {
    let s = Server::start();
    let c = client();
    let body: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    let d = sha256(&body);
    let r = post(&c, &s, "/v2/x/y/blobs/uploads/").await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let loc = r.headers()["location"].to_str().expect("loc").to_owned();
    let mut off = 0;
    for chunk in body.chunks(1 << 20) {
        let r = c
            .patch(s.url(&loc))
            .header(
                "Content-Range",
                format!("{}-{}", off, off + chunk.len() - 1),
            )
            .header("Content-Type", "application/octet-stream")
            .body(chunk.to_vec())
            .send()
            .await
            .expect("patch");
        assert_eq!(r.status(), StatusCode::ACCEPTED);
        off += chunk.len();
        assert_eq!(r.headers()["range"], format!("0-{}", off - 1).as_str());
    }
    let r = c
        .put(s.url(&format!("{loc}?digest={d}")))
        .send()
        .await
        .expect("put");
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(r.headers()["docker-content-digest"], d.as_str());

    let r = head(&c, &s, &format!("/v2/x/y/blobs/{d}")).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        r.headers()["content-length"],
        body.len().to_string().as_str()
    );
    assert_eq!(r.headers()["docker-content-digest"], d.as_str());
    let r = get(&c, &s, &format!("/v2/x/y/blobs/{d}")).await;
    assert_eq!(&r.bytes().await.expect("bytes")[..], &body[..]);
    let r = c
        .get(s.url(&format!("/v2/x/y/blobs/{d}")))
        .header("Range", "bytes=1000-1999")
        .send()
        .await
        .expect("range");
    assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(
        r.headers()["content-range"],
        format!("bytes 1000-1999/{}", body.len()).as_str()
    );
    assert_eq!(&r.bytes().await.expect("bytes")[..], &body[1000..2000]);
    // unsatisfiable ranges
    for bad in [format!("bytes={}-", body.len()), "bytes=10-5".into()] {
        let r = c
            .get(s.url(&format!("/v2/x/y/blobs/{d}")))
            .header("Range", bad)
            .send()
            .await
            .expect("range");
        assert_eq!(
            r.headers()["content-range"],
            format!("bytes */{}", body.len()).as_str()
        );
        assert_eq!(r.status(), StatusCode::RANGE_NOT_SATISFIABLE);
    }
    // the blob is not visible from another repository
    let r = get(&c, &s, &format!("/v2/other/blobs/{d}")).await;
    expect_error(r, StatusCode::NOT_FOUND, "BLOB_UNKNOWN").await;
}

/// Paths with `..` as they come off the wire (a client library would normalise them away,
/// so this stays at the socket; the other bad names are checked in `inproc`).
#[tokio::test]
async fn dot_dot_paths_are_refused() {
    let s = Server::start();
    for line in [
        "GET /v2/a/../../etc/tags/list HTTP/1.1",
        "GET /v2/../tags/list HTTP/1.1",
        "POST /v2/a/%2e%2e/blobs/uploads/ HTTP/1.1",
    ] {
        let (status, body) = raw(&s, line);
        assert!((400..500).contains(&status), "{line}: {status}");
        assert!(body.contains("\"errors\""), "{line}: {body}");
    }
}

#[tokio::test]
async fn mount_and_catalog() {
    let s = Server::start();
    let c = client();
    let d = push_blob(&c, &s, "src/one", b"shared").await;
    let r = post(
        &c,
        &s,
        &format!("/v2/dst/one/blobs/uploads/?mount={d}&from=src/one"),
    )
    .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(
        r.headers()["location"],
        format!("/v2/dst/one/blobs/{d}").as_str()
    );
    let r = post(&c, &s, &format!("/v2/dst/two/blobs/uploads/?mount={d}")).await;
    assert_eq!(r.status(), StatusCode::CREATED, "mount without from");
    let r = post(
        &c,
        &s,
        &format!(
            "/v2/dst/three/blobs/uploads/?mount={}&from=src/one",
            sha256(b"absent")
        ),
    )
    .await;
    assert_eq!(
        r.status(),
        StatusCode::ACCEPTED,
        "falls back to an upload session"
    );
    let r = get(&c, &s, "/v2/_catalog?n=2").await;
    assert!(
        r.headers()["link"]
            .to_str()
            .expect("l")
            .contains("last=dst%2Fthree")
            || r.headers()["link"]
                .to_str()
                .expect("l")
                .contains("last=dst%2Ftwo")
    );
    let all: Value = get_json(&c, &s, "/v2/_catalog").await;
    let names: Vec<&str> = all["repositories"]
        .as_array()
        .expect("arr")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        names.contains(&"dst/one") && names.contains(&"src/one"),
        "{names:?}"
    );
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names, sorted);
}

#[tokio::test]
async fn upload_resumes_after_restart() {
    let mut s = Server::start();
    let c = client();
    let body: Vec<u8> = (0..2_000_000u32).map(|i| (i * 7 % 256) as u8).collect();
    let r = post(&c, &s, "/v2/resume/blobs/uploads/").await;
    let loc = r.headers()["location"].to_str().expect("loc").to_owned();
    let r = c
        .patch(s.url(&loc))
        .header("Content-Range", "0-999999")
        .body(body[..1_000_000].to_vec())
        .send()
        .await
        .expect("patch");
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    s.restart();
    let c = client();
    let r = get(&c, &s, &loc).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(r.headers()["range"], "0-999999");
    let r = c
        .patch(s.url(&loc))
        .header("Content-Range", "1000000-1999999")
        .body(body[1_000_000..].to_vec())
        .send()
        .await
        .expect("patch");
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let d = sha256(&body);
    let r = c
        .put(s.url(&format!("{loc}?digest={d}")))
        .send()
        .await
        .expect("put");
    assert_eq!(r.status(), StatusCode::CREATED);
    let got = get(&c, &s, &format!("/v2/resume/blobs/{d}"))
        .await
        .bytes()
        .await
        .expect("b");
    assert_eq!(&got[..], &body[..]);
}

#[tokio::test]
async fn killed_mid_upload_leaves_no_half_blob() {
    let mut s = Server::start();
    let body = vec![42u8; 8 << 20];
    let d = sha256(&body);
    // Stream half the body, then kill the server while it waits for the rest.
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(4);
    let stream =
        futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|x| (x, rx)) });
    let url = s.url(&format!("/v2/crash/blobs/uploads/?digest={d}"));
    let req = tokio::spawn(
        client()
            .post(url)
            .header("Content-Length", body.len().to_string())
            .body(reqwest::Body::wrap_stream(stream))
            .send(),
    );
    tx.send(Ok(body[..4 << 20].to_vec())).await.expect("send");
    tokio::time::sleep(Duration::from_millis(500)).await;
    s.kill();
    drop(tx);
    let _ = req.await;
    s.restart();
    let c = client();
    let r = head(&c, &s, &format!("/v2/crash/blobs/{d}")).await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let blob_file = s
        .data_dir()
        .join("blobs/sha256")
        .join(&d[7..9])
        .join(&d[7..]);
    assert!(!blob_file.exists(), "no file under the digest's name");
    let tmp = std::fs::read_dir(s.data_dir().join("tmp"))
        .expect("tmp")
        .count();
    assert_eq!(tmp, 0, "interrupted writes are cleared at start");
    // and the same push now succeeds in full
    let r = c
        .post(s.url(&format!("/v2/crash/blobs/uploads/?digest={d}")))
        .body(body.clone())
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), StatusCode::CREATED);
}

#[tokio::test]
async fn concurrent_pushes_of_one_tag_both_succeed() {
    let s = Server::start();
    let c = client();
    let m1 = image(&c, &s, "race", "1").await;
    let m2 = image(&c, &s, "race", "2").await;
    let (a, b) = tokio::join!(
        put_manifest(&c, &s, "race", "latest", OCI_MANIFEST, &m1),
        put_manifest(&c, &s, "race", "latest", OCI_MANIFEST, &m2)
    );
    assert_eq!(a.status(), StatusCode::CREATED);
    assert_eq!(b.status(), StatusCode::CREATED);
    let got = get(&c, &s, "/v2/race/manifests/latest")
        .await
        .bytes()
        .await
        .expect("b");
    assert!(got == m1 || got == m2);
}

#[tokio::test]
async fn sha512_end_to_end() {
    let s = Server::start();
    let c = client();
    let r = post(&c, &s, "/v2/h/blobs/uploads/?digest-algorithm=sha512").await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let loc = r.headers()["location"].to_str().expect("loc").to_owned();
    let body = b"sha512 content";
    let h = sha2::Sha512::digest(body);
    let d = format!(
        "sha512:{}",
        h.iter().map(|x| format!("{x:02x}")).collect::<String>()
    );
    let r = c
        .patch(s.url(&loc))
        .body(&body[..])
        .send()
        .await
        .expect("patch");
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let r = c
        .put(s.url(&format!("{loc}?digest={d}")))
        .send()
        .await
        .expect("put");
    assert_eq!(r.status(), StatusCode::CREATED);
    let r = head(&c, &s, &format!("/v2/h/blobs/{d}")).await;
    assert_eq!(r.headers()["docker-content-digest"], d.as_str());
    let r = post(&c, &s, "/v2/h/blobs/uploads/?digest-algorithm=md5").await;
    expect_error(r, StatusCode::BAD_REQUEST, "DIGEST_INVALID").await;
}

#[tokio::test]
async fn sigterm_stops_cleanly() {
    let mut s = Server::start();
    assert!(s.terminate(), "exits on SIGTERM without being killed");
}
