//! The registry API over a real socket: the spec's exchanges, its error codes for hostile
//! input, and what survives a restart or a kill.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use reqwest::{Client, Response, StatusCode};
use serde_json::Value;
use sha2::Digest as _;

use crate::support::{
    delete, get, get_json, head, image_manifest, post, push_blob, put_manifest, sha256, Server,
    OCI_INDEX, OCI_MANIFEST,
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

/// `manifest` grown by an annotation of `pad` bytes, to test the size limit.
fn padded(manifest: &[u8], pad: usize) -> Vec<u8> {
    let mut out = manifest[..manifest.len() - 1].to_vec();
    out.extend_from_slice(b",\"annotations\":{\"pad\":\"");
    out.extend(std::iter::repeat_n(b'x', pad));
    out.extend_from_slice(b"\"}}");
    out
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

#[tokio::test]
async fn chunk_gaps_and_overlaps_are_416() {
    let s = Server::start();
    let c = client();
    let r = post(&c, &s, "/v2/r/blobs/uploads/").await;
    let loc = r.headers()["location"].to_str().expect("loc").to_owned();
    let patch = |range: &'static str, body: &'static [u8]| {
        c.patch(s.url(&loc))
            .header("Content-Range", range)
            .body(body)
            .send()
    };
    assert_eq!(
        patch("0-3", b"abcd").await.expect("p").status(),
        StatusCode::ACCEPTED
    );
    let gap = patch("10-13", b"wxyz").await.expect("p");
    assert_eq!(gap.status(), StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(gap.headers()["range"], "0-3");
    let overlap = patch("2-5", b"cdef").await.expect("p");
    assert_eq!(overlap.status(), StatusCode::RANGE_NOT_SATISFIABLE);
    // a Content-Range that does not match the body length is refused and rolled back
    let short = patch("4-9", b"ef").await.expect("p");
    assert_eq!(short.status(), StatusCode::RANGE_NOT_SATISFIABLE);
    let r = get(&c, &s, &loc).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(r.headers()["range"], "0-3");
    let malformed = patch("abc", b"x").await.expect("p");
    expect_error(malformed, StatusCode::BAD_REQUEST, "BLOB_UPLOAD_INVALID").await;
    // finishing with the wrong digest is DIGEST_INVALID, and nothing is stored
    let wrong = sha256(b"something else");
    let r = c
        .put(s.url(&format!("{loc}?digest={wrong}")))
        .send()
        .await
        .expect("put");
    expect_error(r, StatusCode::BAD_REQUEST, "DIGEST_INVALID").await;
    let r = head(&c, &s, &format!("/v2/r/blobs/{wrong}")).await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    // cancel
    let r = post(&c, &s, "/v2/r/blobs/uploads/").await;
    let loc = r.headers()["location"].to_str().expect("loc").to_owned();
    let r = delete(&c, &s, &loc).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let r = get(&c, &s, &loc).await;
    expect_error(r, StatusCode::NOT_FOUND, "BLOB_UPLOAD_UNKNOWN").await;
}

#[tokio::test]
async fn bad_digests_and_names() {
    let s = Server::start();
    let c = client();
    for d in [
        "sha256:short",
        "md5:d41d8cd98f00b204e9800998ecf8427e",
        "nocolon",
    ] {
        let r = get(&c, &s, &format!("/v2/r/blobs/{d}")).await;
        // `nocolon` is no digest shape at all
        if d.contains(':') {
            expect_error(r, StatusCode::BAD_REQUEST, "DIGEST_INVALID").await;
        } else {
            assert_eq!(r.status().as_u16() / 100, 4);
        }
    }
    let wrong = sha256(b"not this");
    let r = c
        .post(s.url(&format!("/v2/r/blobs/uploads/?digest={wrong}")))
        .body("these bytes")
        .send()
        .await
        .expect("post");
    expect_error(r, StatusCode::BAD_REQUEST, "DIGEST_INVALID").await;
    let r = get(&c, &s, "/v2/Upper/tags/list").await;
    expect_error(r, StatusCode::BAD_REQUEST, "NAME_INVALID").await;
    let r = post(&c, &s, "/v2/a__b___c/blobs/uploads/").await;
    expect_error(r, StatusCode::BAD_REQUEST, "NAME_INVALID").await;
    for line in [
        "GET /v2/a/../../etc/tags/list HTTP/1.1",
        "GET /v2/../tags/list HTTP/1.1",
        "POST /v2/a/%2e%2e/blobs/uploads/ HTTP/1.1",
    ] {
        let (status, body) = raw(&s, line);
        assert!((400..500).contains(&status), "{line}: {status}");
        assert!(body.contains("\"errors\""), "{line}: {body}");
    }
    let r = get(&c, &s, "/v2/nothere/tags/list").await;
    expect_error(r, StatusCode::NOT_FOUND, "NAME_UNKNOWN").await;
    let r = get(&c, &s, "/v2/nothere/manifests/latest").await;
    expect_error(r, StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN").await;
}

#[tokio::test]
async fn hostile_manifests() {
    let s = Server::start();
    let c = client();
    let good = image(&c, &s, "m", "a").await;
    for (body, code) in [
        (&b"{not json"[..], "MANIFEST_INVALID"),
        (b"[1,2]", "MANIFEST_INVALID"),
        (
            b"{\"schemaVersion\":2,\"config\":{\"digest\":\"sha256:00\"}}",
            "MANIFEST_INVALID",
        ),
    ] {
        let r = put_manifest(&c, &s, "m", "bad", OCI_MANIFEST, body).await;
        expect_error(r, StatusCode::BAD_REQUEST, code).await;
    }
    // references a layer this repository does not hold
    let missing = String::from_utf8(good.clone())
        .expect("utf8")
        .replace(&sha256(b"layer a"), &sha256(b"absent"));
    let r = put_manifest(&c, &s, "m", "bad", OCI_MANIFEST, missing.as_bytes()).await;
    expect_error(r, StatusCode::BAD_REQUEST, "MANIFEST_BLOB_UNKNOWN").await;
    // pushed by a digest that is not its own
    let r = put_manifest(&c, &s, "m", &sha256(b"other"), OCI_MANIFEST, &good).await;
    expect_error(r, StatusCode::BAD_REQUEST, "DIGEST_INVALID").await;
    // too large
    let huge = padded(&good, 9 << 20);
    let r = put_manifest(&c, &s, "m", "big", OCI_MANIFEST, &huge).await;
    expect_error(r, StatusCode::PAYLOAD_TOO_LARGE, "SIZE_INVALID").await;
    // a 4 MiB manifest is fine
    let big = padded(&good, 4 << 20);
    let r = put_manifest(&c, &s, "m", "big", OCI_MANIFEST, &big).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    // none of the refused pushes left a tag behind
    let tags: Value = get_json(&c, &s, "/v2/m/tags/list").await;
    assert_eq!(tags["tags"], serde_json::json!(["big"]));
}

#[tokio::test]
async fn manifests_tags_index_and_delete() {
    let s = Server::start();
    let c = client();
    let m1 = image(&c, &s, "app", "1").await;
    let m2 = image(&c, &s, "app", "2").await;
    let (d1, d2) = (sha256(&m1), sha256(&m2));
    let r = put_manifest(&c, &s, "app", &d1, OCI_MANIFEST, &m1).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let r = c
        .put(s.url(&format!("/v2/app/manifests/{d2}?tag=a&tag=b")))
        .header("Content-Type", OCI_MANIFEST)
        .body(m2.clone())
        .send()
        .await
        .expect("put");
    assert_eq!(r.status(), StatusCode::CREATED);
    let echoed: Vec<_> = r
        .headers()
        .get_all("oci-tag")
        .iter()
        .map(|v| v.to_str().expect("s").to_owned())
        .collect();
    assert_eq!(echoed, ["a", "b"]);
    let index = format!(
        r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","manifests":[{{"mediaType":"{OCI_MANIFEST}","digest":"{d1}","size":{},"platform":{{"architecture":"amd64","os":"linux"}}}},{{"mediaType":"{OCI_MANIFEST}","digest":"{d2}","size":{},"platform":{{"architecture":"arm64","os":"linux"}}}}]}}"#,
        m1.len(),
        m2.len()
    );
    let r = put_manifest(&c, &s, "app", "multi", OCI_INDEX, index.as_bytes()).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let r = get(&c, &s, "/v2/app/manifests/multi").await;
    assert_eq!(r.headers()["content-type"], OCI_INDEX);
    assert_eq!(
        r.headers()["docker-content-digest"],
        sha256(index.as_bytes()).as_str()
    );
    assert_eq!(r.bytes().await.expect("b"), index.as_bytes());
    // an index whose child is absent is refused
    let other = index.replace(&d1, &sha256(b"nope"));
    let r = put_manifest(&c, &s, "app", "broken", OCI_INDEX, other.as_bytes()).await;
    expect_error(r, StatusCode::BAD_REQUEST, "MANIFEST_BLOB_UNKNOWN").await;
    // tags page by page, with Link
    let r = get(&c, &s, "/v2/app/tags/list?n=2").await;
    let link = r.headers()["link"].to_str().expect("link").to_owned();
    assert_eq!(link, "</v2/app/tags/list?n=2&last=b>; rel=\"next\"");
    let page: Value = r.json().await.expect("json");
    assert_eq!(page["tags"], serde_json::json!(["a", "b"]));
    let page: Value = get_json(&c, &s, "/v2/app/tags/list?n=2&last=b").await;
    assert_eq!(page["tags"], serde_json::json!(["multi"]));
    let r = get(&c, &s, "/v2/app/tags/list?n=0").await;
    assert!(r.headers().get("link").is_none());
    // delete a tag, then a manifest with its remaining tag (once the index listing it is gone)
    let r = delete(&c, &s, "/v2/app/manifests/a").await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let r = delete(&c, &s, &format!("/v2/app/manifests/{d2}")).await;
    expect_error(r, StatusCode::METHOD_NOT_ALLOWED, "DENIED").await;
    let index_digest = sha256(index.as_bytes());
    let r = delete(&c, &s, &format!("/v2/app/manifests/{index_digest}")).await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let r = delete(&c, &s, &format!("/v2/app/manifests/{d2}")).await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let r = get(&c, &s, "/v2/app/manifests/b").await;
    expect_error(r, StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN").await;
    let r = get(&c, &s, &format!("/v2/app/manifests/{d1}")).await;
    assert_eq!(r.status(), StatusCode::OK);
}

#[tokio::test]
async fn referrers_with_subject_pushed_first() {
    let s = Server::start();
    let c = client();
    let subject = image(&c, &s, "ref", "subject").await;
    let sd = sha256(&subject);
    let empty = push_blob(&c, &s, "ref", b"{}").await;
    let sig = format!(
        r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","artifactType":"application/x.sig","config":{{"mediaType":"application/vnd.oci.empty.v1+json","digest":"{empty}","size":2}},"layers":[],"subject":{{"mediaType":"{OCI_MANIFEST}","digest":"{sd}","size":{}}},"annotations":{{"k":"v"}}}}"#,
        subject.len()
    );
    let r = put_manifest(
        &c,
        &s,
        "ref",
        &sha256(sig.as_bytes()),
        OCI_MANIFEST,
        sig.as_bytes(),
    )
    .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(r.headers()["oci-subject"], sd.as_str());
    let r = get(&c, &s, &format!("/v2/ref/referrers/{sd}")).await;
    assert_eq!(r.headers()["content-type"], OCI_INDEX);
    let idx: Value = r.json().await.expect("json");
    assert_eq!(
        idx["manifests"][0]["digest"],
        sha256(sig.as_bytes()).as_str()
    );
    assert_eq!(idx["manifests"][0]["artifactType"], "application/x.sig");
    assert_eq!(idx["manifests"][0]["annotations"]["k"], "v");
    let r = get(
        &c,
        &s,
        &format!("/v2/ref/referrers/{sd}?artifactType=application/x.other"),
    )
    .await;
    assert_eq!(r.headers()["oci-filters-applied"], "artifactType");
    let idx: Value = r.json().await.expect("json");
    assert_eq!(idx["manifests"], serde_json::json!([]));
    let r = get(&c, &s, &format!("/v2/nowhere/referrers/{sd}")).await;
    assert_eq!(r.status(), StatusCode::OK);
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
