//! The in-process tier: `airdock::app(state)` over a store in a temp dir, driven request by
//! request with `tower::ServiceExt::oneshot`. No socket and no process, so these run in
//! milliseconds and may pause tokio's clock; what needs a real socket, a real client or a
//! killed process stays in the other modules.

use std::time::Duration;

use airdock::admin::AdminToken;
use airdock::storage::{GcOptions, Store};
use airdock::AppState;
use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Method, Request, StatusCode};
use axum::Router;
use http_body_util::BodyExt;
use serde_json::Value;
use tempfile::TempDir;
use tower::ServiceExt;

use crate::support::{image_manifest, sha256, OCI_INDEX, OCI_MANIFEST};

const ADMIN: &str = "in-process-admin-token";

/// A registry with its data dir; the dir lives as long as the value.
pub struct App {
    dir: TempDir,
    pub state: AppState,
    router: Router,
}

/// A response with its body read.
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Answer {
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "{}: body is not JSON ({e}): {}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// The first error's code and message, checking the body has the spec's shape.
    pub fn error(&self) -> (String, String) {
        let v = self.json();
        let e = &v["errors"][0];
        let text = |k: &str| {
            e[k].as_str()
                .unwrap_or_else(|| panic!("error without a string {k}: {v}"))
                .to_owned()
        };
        (text("code"), text("message"))
    }

    /// Asserts the status and the spec error code, and returns the message.
    #[track_caller]
    pub fn expect_error(&self, status: StatusCode, code: &str) -> String {
        assert_eq!(
            self.status,
            status,
            "{}",
            String::from_utf8_lossy(&self.body)
        );
        let (got, message) = self.error();
        assert_eq!(got, code, "{message}");
        message
    }
}

impl App {
    /// Default settings, and the admin API on with [`ADMIN`] as its token.
    pub async fn new() -> App {
        App::with(|_| {}).await
    }

    pub async fn with(configure: impl FnOnce(&mut AppState)) -> App {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::open(&dir.path().join("data"))
            .await
            .expect("open store");
        let mut state = AppState::new(store, false);
        state.admin_token = AdminToken::new(ADMIN);
        configure(&mut state);
        let router = airdock::app(state.clone());
        App { dir, state, router }
    }

    pub fn data_dir(&self) -> std::path::PathBuf {
        self.dir.path().join("data")
    }

    pub async fn send(&self, req: Request<Body>) -> Answer {
        let resp = self.router.clone().oneshot(req).await.expect("infallible");
        let (parts, body) = resp.into_parts();
        let body = body.collect().await.expect("response body").to_bytes();
        Answer {
            status: parts.status,
            headers: parts.headers,
            body,
        }
    }

    /// `method uri` with `headers` and `body`.
    pub async fn call(
        &self,
        method: Method,
        uri: &str,
        headers: &[(&str, &str)],
        body: impl Into<Body>,
    ) -> Answer {
        let mut b = Request::builder().method(method).uri(uri);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        self.send(b.body(body.into()).expect("request")).await
    }

    /// No headers, no body.
    pub async fn bare(&self, method: Method, uri: &str) -> Answer {
        self.call(method, uri, &[], Body::empty()).await
    }

    pub async fn get(&self, uri: &str) -> Answer {
        self.bare(Method::GET, uri).await
    }

    /// With the admin token.
    pub async fn admin(&self, method: Method, uri: &str, body: impl Into<Body>) -> Answer {
        let auth = format!("Bearer {ADMIN}");
        self.call(method, uri, &[("authorization", &auth)], body)
            .await
    }

    /// Opens an upload session and returns its location.
    pub async fn start_upload(&self, repo: &str) -> String {
        let r = self
            .bare(Method::POST, &format!("/v2/{repo}/blobs/uploads/"))
            .await;
        assert_eq!(r.status, StatusCode::ACCEPTED);
        r.header("location").to_owned()
    }

    pub async fn patch(&self, location: &str, range: &str, body: &'static [u8]) -> Answer {
        self.call(
            Method::PATCH,
            location,
            &[("content-range", range)],
            Bytes::from_static(body),
        )
        .await
    }

    /// A monolithic push; returns the digest.
    pub async fn push_blob(&self, repo: &str, bytes: &[u8]) -> String {
        let d = sha256(bytes);
        let r = self
            .call(
                Method::POST,
                &format!("/v2/{repo}/blobs/uploads/?digest={d}"),
                &[],
                bytes.to_vec(),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
        d
    }

    pub async fn put_manifest(&self, repo: &str, reference: &str, body: &[u8]) -> Answer {
        self.put_manifest_as(repo, reference, OCI_MANIFEST, body)
            .await
    }

    /// `reference` may carry a query (`<digest>?tag=a`).
    pub async fn put_manifest_as(
        &self,
        repo: &str,
        reference: &str,
        media_type: &str,
        body: &[u8],
    ) -> Answer {
        self.call(
            Method::PUT,
            &format!("/v2/{repo}/manifests/{reference}"),
            &[("content-type", media_type)],
            body.to_vec(),
        )
        .await
    }

    /// Pushes a config and a layer; returns a manifest referencing them.
    pub async fn image(&self, repo: &str, seed: &str) -> Vec<u8> {
        let cfg = format!("{{\"seed\":\"{seed}\"}}");
        let cd = self.push_blob(repo, cfg.as_bytes()).await;
        let layer = format!("layer {seed}");
        let ld = self.push_blob(repo, layer.as_bytes()).await;
        image_manifest(&cd, cfg.len(), &ld, layer.len()).into_bytes()
    }
}

/// A request that must be refused: method, URI, one header, body, status and spec code.
type BadRequest = (
    Method,
    String,
    Option<(&'static str, &'static str)>,
    &'static str,
    u16,
    &'static str,
);

/// Every refusal the HTTP and admin APIs give carries a message a person can act on: never
/// empty, never the code repeated (as `BadRequest` once printed its code field).
#[tokio::test]
async fn every_error_body_says_what_was_wrong() {
    let app = App::new().await;
    let loc = app.start_upload("r").await;
    let blob = app.push_blob("r", b"held").await;
    let manifest = app.image("r", "m").await;
    assert_eq!(
        app.put_manifest("r", "v1", &manifest).await.status,
        StatusCode::CREATED
    );
    let config = sha256(b"{\"seed\":\"m\"}");
    let missing = sha256(b"absent");
    let bad_upload = "/v2/r/blobs/uploads/00000000000000000000000000000000";
    let unauthorized = Some(("authorization", "Bearer wrong"));
    let range = |r| Some(("content-range", r));
    #[rustfmt::skip]
    let cases: Vec<BadRequest> = vec![
        (Method::PATCH, loc.clone(), range("zz"), "x", 400, "BLOB_UPLOAD_INVALID"),
        (Method::PATCH, loc.clone(), range("5-4"), "x", 400, "BLOB_UPLOAD_INVALID"),
        (Method::PATCH, loc.clone(), range("0-18446744073709551615"), "hello", 400, "BLOB_UPLOAD_INVALID"),
        (Method::PATCH, loc.clone(), range("10-19"), "hello", 416, "BLOB_UPLOAD_INVALID"),
        (Method::PUT, loc.clone(), None, "", 400, "DIGEST_INVALID"),
        (Method::PUT, format!("{loc}?digest=sha256:zz"), None, "", 400, "DIGEST_INVALID"),
        (Method::PATCH, bad_upload.into(), None, "x", 404, "BLOB_UPLOAD_UNKNOWN"),
        (Method::GET, "/v2/_catalog?n=-1".into(), None, "", 400, "PAGINATION_NUMBER_INVALID"),
        (Method::GET, "/v2/r/tags/list?n=abc".into(), None, "", 400, "PAGINATION_NUMBER_INVALID"),
        (Method::GET, format!("/v2/r/blobs/{missing}"), None, "", 404, "BLOB_UNKNOWN"),
        (Method::GET, "/v2/r/blobs/sha256:short".into(), None, "", 400, "DIGEST_INVALID"),
        (Method::GET, format!("/v2/r/blobs/{blob}"), Some(("range", "bytes=100-")), "", 416, "BLOB_UNKNOWN"),
        (Method::DELETE, format!("/v2/r/blobs/{config}"), None, "", 405, "DENIED"),
        (Method::GET, "/v2/r/manifests/nope".into(), None, "", 404, "MANIFEST_UNKNOWN"),
        (Method::PUT, "/v2/r/manifests/bad".into(), None, "{not json", 400, "MANIFEST_INVALID"),
        (Method::GET, "/v2/Upper/tags/list".into(), None, "", 400, "NAME_INVALID"),
        (Method::GET, "/v2/nothere/tags/list".into(), None, "", 404, "NAME_UNKNOWN"),
        (Method::GET, "/v2/r/nonsense".into(), None, "", 404, "NAME_UNKNOWN"),
        (Method::POST, "/v2/r/manifests/v1".into(), None, "", 405, "UNSUPPORTED"),
        (Method::POST, "/admin/v1/gc".into(), unauthorized, "", 401, "UNAUTHORIZED"),
        (Method::POST, "/admin/v1/import".into(), unauthorized, "", 401, "UNAUTHORIZED"),
    ];
    #[rustfmt::skip]
    let admin_cases: Vec<(Method, &str, u16, &str)> = vec![
        (Method::POST, "/admin/v1/gc?grace=soon", 400, "UNSUPPORTED"),
        (Method::POST, "/admin/v1/import", 400, "NAME_INVALID"),
        (Method::POST, "/admin/v1/import?repository=UP", 400, "NAME_INVALID"),
        (Method::POST, "/admin/v1/import?repository=r", 400, "TAR_INVALID"),
        (Method::DELETE, "/admin/v1/imports/nope", 404, "NAME_UNKNOWN"),
        (Method::DELETE, "/admin/v1/repositories/UP", 400, "NAME_INVALID"),
        (Method::GET, "/admin/v1/nothing", 404, "NAME_UNKNOWN"),
        (Method::GET, "/elsewhere", 404, "NAME_UNKNOWN"),
    ];
    let mut answers = Vec::new();
    for (method, uri, header, body, status, code) in cases {
        let what = format!("{method} {uri} {header:?}");
        let headers: Vec<(&str, &str)> = header.into_iter().collect();
        answers.push((
            what,
            app.call(method, &uri, &headers, body).await,
            status,
            code,
        ));
    }
    for (method, uri, status, code) in admin_cases {
        let what = format!("{method} {uri} (admin)");
        answers.push((
            what,
            app.admin(method, uri, Body::empty()).await,
            status,
            code,
        ));
    }
    let off = App::with(|s| s.admin_token = None).await;
    answers.push((
        "gc with the admin API off".into(),
        off.bare(Method::POST, "/admin/v1/gc").await,
        403,
        "DENIED",
    ));
    for (what, answer, status, code) in answers {
        assert_eq!(
            answer.status.as_u16(),
            status,
            "{what}: {}",
            String::from_utf8_lossy(&answer.body)
        );
        let (got, message) = answer.error();
        assert_eq!(got, code, "{what}: {message}");
        assert!(
            !message.trim().is_empty() && message != code && message.len() > 12,
            "{what}: message {message:?} does not say what was wrong"
        );
    }
}

/// The three refusals of issue 10 that answered their code as the message.
#[tokio::test]
async fn bad_content_range_missing_digest_and_negative_n_are_explained() {
    let app = App::new().await;
    let loc = app.start_upload("r").await;
    let m = app
        .patch(&loc, "zz", b"x")
        .await
        .expect_error(StatusCode::BAD_REQUEST, "BLOB_UPLOAD_INVALID");
    assert!(m.contains("\"zz\"") && m.contains("<start>-<end>"), "{m}");
    let m = app
        .bare(Method::PUT, &loc)
        .await
        .expect_error(StatusCode::BAD_REQUEST, "DIGEST_INVALID");
    assert!(m.contains("?digest="), "{m}");
    let m = app
        .get("/v2/_catalog?n=-1")
        .await
        .expect_error(StatusCode::BAD_REQUEST, "PAGINATION_NUMBER_INVALID");
    assert!(m.contains("-1"), "{m}");
}

/// `0-18446744073709551615` names 2^64 bytes: `end - start + 1` overflows. A debug build
/// panicked there and a release build (no overflow checks) wrapped to a 0-byte chunk and
/// answered with made-up numbers; the answer must be the same, and right, in both.
#[tokio::test]
async fn content_range_of_two_to_the_64_bytes_is_refused_not_wrapped() {
    let app = App::new().await;
    let loc = app.start_upload("r").await;
    let r = app.patch(&loc, "0-18446744073709551615", b"hello").await;
    let m = r.expect_error(StatusCode::BAD_REQUEST, "BLOB_UPLOAD_INVALID");
    assert!(
        m.contains("0-18446744073709551615") && m.contains("2^64"),
        "{m}"
    );
    // Nothing was written, and the session still works.
    let s = app.get(&loc).await;
    assert_eq!(s.status, StatusCode::NO_CONTENT);
    assert_eq!(s.header("range"), "0-0");
    assert_eq!(
        app.patch(&loc, "0-4", b"hello").await.status,
        StatusCode::ACCEPTED
    );
}

/// `10-19` with a 5-byte body: on an empty session it starts in the wrong place; on a
/// 10-byte one it is 5 bytes short. Each answer names the right numbers.
#[tokio::test]
async fn chunk_range_answers_name_the_right_offsets() {
    let app = App::new().await;
    let loc = app.start_upload("r").await;
    let r = app.patch(&loc, "10-19", b"hello").await;
    let m = r.expect_error(StatusCode::RANGE_NOT_SATISFIABLE, "BLOB_UPLOAD_INVALID");
    assert_eq!(m, "chunk starts at 10, but the upload holds 0 bytes");
    assert_eq!(r.header("location"), loc);

    assert_eq!(
        app.patch(&loc, "0-9", b"0123456789").await.header("range"),
        "0-9"
    );
    let r = app.patch(&loc, "10-19", b"hello").await;
    let m = r.expect_error(StatusCode::RANGE_NOT_SATISFIABLE, "BLOB_UPLOAD_INVALID");
    assert!(
        m.contains("of 10 bytes") && m.contains("carried 5") && m.contains("holds 10 bytes"),
        "{m}"
    );
    assert_eq!(r.header("range"), "0-9", "where the upload stands");
    assert_eq!(app.get(&loc).await.header("range"), "0-9", "rolled back");
}

/// Moved from the process tier (api.rs): the chunk protocol's refusals.
#[tokio::test]
async fn chunk_gaps_and_overlaps_are_416() {
    let app = App::new().await;
    let loc = app.start_upload("r").await;
    assert_eq!(
        app.patch(&loc, "0-3", b"abcd").await.status,
        StatusCode::ACCEPTED
    );
    let gap = app.patch(&loc, "10-13", b"wxyz").await;
    gap.expect_error(StatusCode::RANGE_NOT_SATISFIABLE, "BLOB_UPLOAD_INVALID");
    assert_eq!(gap.header("range"), "0-3");
    app.patch(&loc, "2-5", b"cdef")
        .await
        .expect_error(StatusCode::RANGE_NOT_SATISFIABLE, "BLOB_UPLOAD_INVALID");
    // a Content-Range that does not match the body length is refused and rolled back
    app.patch(&loc, "4-9", b"ef")
        .await
        .expect_error(StatusCode::RANGE_NOT_SATISFIABLE, "BLOB_UPLOAD_INVALID");
    let r = app.get(&loc).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert_eq!(r.header("range"), "0-3");
    app.patch(&loc, "abc", b"x")
        .await
        .expect_error(StatusCode::BAD_REQUEST, "BLOB_UPLOAD_INVALID");
    // finishing with the wrong digest is DIGEST_INVALID, and nothing is stored
    let wrong = sha256(b"something else");
    app.bare(Method::PUT, &format!("{loc}?digest={wrong}"))
        .await
        .expect_error(StatusCode::BAD_REQUEST, "DIGEST_INVALID");
    let r = app
        .bare(Method::HEAD, &format!("/v2/r/blobs/{wrong}"))
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    // cancel
    let loc = app.start_upload("r").await;
    let r = app.bare(Method::DELETE, &loc).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    app.get(&loc)
        .await
        .expect_error(StatusCode::NOT_FOUND, "BLOB_UPLOAD_UNKNOWN");
}

/// Moved from the process tier (api.rs); the raw `..` paths stay there (a client library
/// would normalise them before they reach the router).
#[tokio::test]
async fn bad_digests_and_names() {
    let app = App::new().await;
    for d in ["sha256:short", "md5:d41d8cd98f00b204e9800998ecf8427e"] {
        app.get(&format!("/v2/r/blobs/{d}"))
            .await
            .expect_error(StatusCode::BAD_REQUEST, "DIGEST_INVALID");
    }
    assert_eq!(
        app.get("/v2/r/blobs/nocolon").await.status.as_u16() / 100,
        4
    );
    let wrong = sha256(b"not this");
    app.call(
        Method::POST,
        &format!("/v2/r/blobs/uploads/?digest={wrong}"),
        &[],
        "these bytes",
    )
    .await
    .expect_error(StatusCode::BAD_REQUEST, "DIGEST_INVALID");
    app.get("/v2/Upper/tags/list")
        .await
        .expect_error(StatusCode::BAD_REQUEST, "NAME_INVALID");
    app.bare(Method::POST, "/v2/a__b___c/blobs/uploads/")
        .await
        .expect_error(StatusCode::BAD_REQUEST, "NAME_INVALID");
    app.get("/v2/nothere/tags/list")
        .await
        .expect_error(StatusCode::NOT_FOUND, "NAME_UNKNOWN");
    app.get("/v2/nothere/manifests/latest")
        .await
        .expect_error(StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN");
}

/// Moved from the process tier (api.rs).
#[tokio::test]
async fn hostile_manifests() {
    let app = App::new().await;
    let good = app.image("m", "a").await;
    for body in [
        &b"{not json"[..],
        b"[1,2]",
        b"{\"schemaVersion\":2,\"config\":{\"digest\":\"sha256:00\"}}",
    ] {
        app.put_manifest("m", "bad", body)
            .await
            .expect_error(StatusCode::BAD_REQUEST, "MANIFEST_INVALID");
    }
    // references a layer this repository does not hold
    let missing = String::from_utf8(good.clone())
        .expect("utf8")
        .replace(&sha256(b"layer a"), &sha256(b"absent"));
    app.put_manifest("m", "bad", missing.as_bytes())
        .await
        .expect_error(StatusCode::BAD_REQUEST, "MANIFEST_BLOB_UNKNOWN");
    // pushed by a digest that is not its own
    app.put_manifest("m", &sha256(b"other"), &good)
        .await
        .expect_error(StatusCode::BAD_REQUEST, "DIGEST_INVALID");
    // too large
    let huge = padded(&good, 9 << 20);
    app.put_manifest("m", "big", &huge)
        .await
        .expect_error(StatusCode::PAYLOAD_TOO_LARGE, "SIZE_INVALID");
    // a 4 MiB manifest is fine
    let big = padded(&good, 4 << 20);
    assert_eq!(
        app.put_manifest("m", "big", &big).await.status,
        StatusCode::CREATED
    );
    // none of the refused pushes left a tag behind
    assert_eq!(
        app.get("/v2/m/tags/list").await.json()["tags"],
        serde_json::json!(["big"])
    );
}

/// Moved from the process tier (api.rs).
#[tokio::test]
async fn manifests_tags_index_and_delete() {
    let app = App::new().await;
    let m1 = app.image("app", "1").await;
    let m2 = app.image("app", "2").await;
    let (d1, d2) = (sha256(&m1), sha256(&m2));
    assert_eq!(
        app.put_manifest("app", &d1, &m1).await.status,
        StatusCode::CREATED
    );
    let r = app
        .put_manifest_as("app", &format!("{d2}?tag=a&tag=b"), OCI_MANIFEST, &m2)
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    let echoed: Vec<_> = r
        .headers
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
    let r = app
        .put_manifest_as("app", "multi", OCI_INDEX, index.as_bytes())
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    let r = app.get("/v2/app/manifests/multi").await;
    assert_eq!(r.header("content-type"), OCI_INDEX);
    assert_eq!(r.header("docker-content-digest"), sha256(index.as_bytes()));
    assert_eq!(&r.body[..], index.as_bytes());
    // an index whose child is absent is refused
    let other = index.replace(&d1, &sha256(b"nope"));
    app.put_manifest_as("app", "broken", OCI_INDEX, other.as_bytes())
        .await
        .expect_error(StatusCode::BAD_REQUEST, "MANIFEST_BLOB_UNKNOWN");
    // tags page by page, with Link
    let r = app.get("/v2/app/tags/list?n=2").await;
    assert_eq!(
        r.header("link"),
        "</v2/app/tags/list?n=2&last=b>; rel=\"next\""
    );
    assert_eq!(r.json()["tags"], serde_json::json!(["a", "b"]));
    let page = app.get("/v2/app/tags/list?n=2&last=b").await.json();
    assert_eq!(page["tags"], serde_json::json!(["multi"]));
    let r = app.get("/v2/app/tags/list?n=0").await;
    assert!(r.headers.get("link").is_none());
    // delete a tag, then a manifest with its remaining tag (once the index listing it is gone)
    let r = app.bare(Method::DELETE, "/v2/app/manifests/a").await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    app.bare(Method::DELETE, &format!("/v2/app/manifests/{d2}"))
        .await
        .expect_error(StatusCode::METHOD_NOT_ALLOWED, "DENIED");
    let index_digest = sha256(index.as_bytes());
    let r = app
        .bare(Method::DELETE, &format!("/v2/app/manifests/{index_digest}"))
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    let r = app
        .bare(Method::DELETE, &format!("/v2/app/manifests/{d2}"))
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    app.get("/v2/app/manifests/b")
        .await
        .expect_error(StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN");
    let r = app.get(&format!("/v2/app/manifests/{d1}")).await;
    assert_eq!(r.status, StatusCode::OK);
}

/// Moved from the process tier (api.rs).
#[tokio::test]
async fn referrers_with_subject_pushed_first() {
    let app = App::new().await;
    let subject = app.image("ref", "subject").await;
    let sd = sha256(&subject);
    let empty = app.push_blob("ref", b"{}").await;
    let sig = format!(
        r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","artifactType":"application/x.sig","config":{{"mediaType":"application/vnd.oci.empty.v1+json","digest":"{empty}","size":2}},"layers":[],"subject":{{"mediaType":"{OCI_MANIFEST}","digest":"{sd}","size":{}}},"annotations":{{"k":"v"}}}}"#,
        subject.len()
    );
    let r = app
        .put_manifest("ref", &sha256(sig.as_bytes()), sig.as_bytes())
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    assert_eq!(r.header("oci-subject"), sd);
    let r = app.get(&format!("/v2/ref/referrers/{sd}")).await;
    assert_eq!(r.header("content-type"), OCI_INDEX);
    let idx = r.json();
    assert_eq!(idx["manifests"][0]["digest"], sha256(sig.as_bytes()));
    assert_eq!(idx["manifests"][0]["artifactType"], "application/x.sig");
    assert_eq!(idx["manifests"][0]["annotations"]["k"], "v");
    let r = app
        .get(&format!(
            "/v2/ref/referrers/{sd}?artifactType=application/x.other"
        ))
        .await;
    assert_eq!(r.header("oci-filters-applied"), "artifactType");
    assert_eq!(r.json()["manifests"], serde_json::json!([]));
    let r = app.get(&format!("/v2/nowhere/referrers/{sd}")).await;
    assert_eq!(r.status, StatusCode::OK);
}

/// Issue 10's report as the admin API sees it: a tar `dd`-ed from a USB stick (zeros to
/// the device's end) imports; a stray byte in the padding is a 400 that says what and where,
/// with no entry blamed.
#[tokio::test]
async fn import_of_a_zero_padded_tar_succeeds_and_garbage_is_located() {
    let app = App::new().await;
    let tar = crate::fixture::fixture_tar("multi-image");
    let mut padded = tar.clone();
    padded.resize(tar.len() + (4 << 20), 0);
    let r = app
        .admin(
            Method::POST,
            "/admin/v1/import?repository=usb",
            padded.clone(),
        )
        .await;
    assert_eq!(
        r.status,
        StatusCode::CREATED,
        "{}",
        String::from_utf8_lossy(&r.body)
    );
    let at = tar.len() + (1 << 20);
    padded[at] = 0x2a;
    let r = app
        .admin(Method::POST, "/admin/v1/import?repository=usb2", padded)
        .await;
    let m = r.expect_error(StatusCode::BAD_REQUEST, "TAR_INVALID");
    assert!(
        m.contains("0x2a")
            && m.contains(&format!("tar offset {at}"))
            && m.contains("after the end-of-archive marker")
            && !m.contains("manifest.json"),
        "{m}"
    );
    assert_eq!(r.json()["errors"][0]["detail"]["entry"], Value::Null);
}

/// `manifest` grown by an annotation of `pad` bytes, to test the size limit.
fn padded(manifest: &[u8], pad: usize) -> Vec<u8> {
    let mut out = manifest[..manifest.len() - 1].to_vec();
    out.extend_from_slice(b",\"annotations\":{\"pad\":\"");
    out.extend(std::iter::repeat_n(b'x', pad));
    out.extend_from_slice(b"\"}}");
    out
}

/// A body that sends a few bytes and then nothing is cut off after the body timeout, and
/// leaves nothing in the session. Under the paused clock the timeout passes at once.
#[tokio::test(start_paused = true)]
async fn stalled_body_is_cut_off_after_the_body_timeout() {
    let app = App::with(|s| {
        s.limiter = airdock::limits::Limiter::new(&airdock::config::Limits {
            body_timeout: Duration::from_secs(30),
            ..airdock::config::Limits::default()
        })
    })
    .await;
    let loc = app.start_upload("slow").await;
    let first = futures_util::stream::once(async {
        Ok::<_, std::io::Error>(Bytes::from_static(b"0123456789"))
    });
    let body = Body::from_stream(futures_util::StreamExt::chain(
        first,
        futures_util::stream::pending(),
    ));
    let started = tokio::time::Instant::now();
    let r = app
        .call(Method::PATCH, &loc, &[("content-range", "0-999")], body)
        .await;
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_secs(30) && waited < Duration::from_secs(31),
        "cut off after {waited:?}"
    );
    assert!(
        r.status.is_client_error() || r.status.is_server_error(),
        "{}",
        r.status
    );
    let text = String::from_utf8_lossy(&r.body);
    assert!(
        !text.contains(&app.data_dir().display().to_string()) && !text.contains("panicked"),
        "internals in the answer: {text}"
    );
    let s = app.get(&loc).await;
    assert_eq!(s.status, StatusCode::NO_CONTENT);
    assert_eq!(s.header("range"), "0-0", "the partial chunk left nothing");
}

/// The `--gc-interval` timer collects an unreferenced blob; under the paused clock an hour
/// of intervals passes without waiting for it.
#[tokio::test(start_paused = true)]
async fn gc_timer_collects_unreferenced_blobs() {
    let app = App::new().await;
    let digest = app.push_blob("t", b"nobody needs me").await;
    let hex = &digest["sha256:".len()..];
    let file = app
        .data_dir()
        .join("blobs/sha256")
        .join(&hex[..2])
        .join(hex);
    assert!(file.exists());
    let gc = GcOptions {
        grace: Duration::ZERO,
        ..GcOptions::default()
    };
    let interval = Duration::from_secs(3600);
    airdock::admin::spawn_background(app.state.store.clone(), gc, interval);
    // Not before the interval has passed...
    tokio::time::sleep(interval - Duration::from_secs(1)).await;
    assert!(file.exists(), "collected before the first interval");
    // ...and at its first tick. The timer task's GC does blocking file I/O, which the
    // paused clock does not wait for: give it real milliseconds too (at most ~2 s).
    let mut collected = false;
    for _ in 0..200 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        std::thread::sleep(Duration::from_millis(10));
        if !file.exists() {
            collected = true;
            break;
        }
    }
    assert!(
        collected,
        "the timed GC did not collect an unreferenced blob"
    );
}

/// With authentication off the console has no admin (a browser holds no admin token): the
/// Imports and Storage pages and their actions are refused, saying what would enable them.
#[tokio::test]
async fn console_imports_and_storage_need_an_admin_user() {
    let app = App::new().await;
    for path in [
        "/ui/imports",
        "/ui/imports/0123456789abcdef0123456789abcdef",
        "/ui/imports/0123456789abcdef0123456789abcdef/remove",
        "/ui/storage",
    ] {
        let a = app.get(path).await;
        assert_eq!(a.status, StatusCode::FORBIDDEN, "GET {path}");
        let text = String::from_utf8_lossy(&a.body);
        assert!(text.contains("auth.htpasswd and auth.admins"), "{text}");
    }
    for path in [
        "/ui/storage/gc",
        "/ui/imports/0123456789abcdef0123456789abcdef/remove",
    ] {
        let a = app.bare(Method::POST, path).await;
        assert_eq!(a.status, StatusCode::FORBIDDEN, "POST {path}");
    }
    // And no link to them in the navigation.
    let a = app.get("/ui/").await;
    assert_eq!(a.status, StatusCode::OK);
    let text = String::from_utf8_lossy(&a.body);
    assert!(!text.contains("/ui/storage") && !text.contains("/ui/imports"));
}
