//! Issue 5 over real sockets: the config file and `config check`, TLS with a CA from
//! `airdock cert init` (hot reload, plain HTTP on the TLS port, slow-loris), htpasswd users,
//! the token flow, rights per repository, the admin right, throttling — each refusal checked
//! for its status, its spec code and that nothing changed.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use reqwest::{Client, StatusCode};
use serde_json::Value;

use crate::support::{
    delete, get, image_manifest, post, scratch_dir, sha256, Server, AIRDOCK_BIN, OCI_MANIFEST,
};

/// Run the airdock binary with `args` (and `stdin`), return (success, stdout, stderr).
pub(crate) fn airdock(args: &[&str], stdin: &str) -> (bool, String, String) {
    let mut child = Command::new(AIRDOCK_BIN)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run airdock");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("write stdin");
    let out = child.wait_with_output().expect("wait");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// An htpasswd file with `users` (name, password), written by `airdock user add` (cost 4:
/// the tests run a debug build).
pub(crate) fn htpasswd(dir: &Path, users: &[(&str, &str)]) -> PathBuf {
    let path = dir.join("htpasswd");
    for (name, pw) in users {
        let p = path.to_str().expect("utf-8 path");
        let (ok, out, err) = airdock(
            &["user", "add", name, "--htpasswd", p, "--cost", "4"],
            &format!("{pw}\n"),
        );
        assert!(ok, "user add failed: {out}{err}");
    }
    path
}

pub(crate) fn basic(user: &str, pw: &str) -> String {
    let b = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pw}"));
    format!("Basic {b}")
}

pub(crate) fn client() -> Client {
    crate::support::client(Duration::from_secs(60))
}

/// The lab used by most tests: alice pushes to team/*, bob only pulls it, root pushes to
/// secret/** and is admin, anonymous pulls public/**.
struct Lab {
    server: Server,
    _dir: tempfile::TempDir,
    c: Client,
}

const RULES: &str = r#"
access:
  - repos: ["team/*"]
    users: [alice]
    allow: [pull, push, delete]
  - repos: ["team/*"]
    users: [bob]
    allow: [pull]
  - repos: ["secret/**", "public/**"]
    users: [root]
    allow: [pull, push]
  - repos: ["public/**"]
    users: [anonymous]
    allow: [pull]
"#;

fn lab(extra_yaml: &str, args: &[&str]) -> Lab {
    let dir = scratch_dir("airdock-sec-");
    let hp = htpasswd(
        dir.path(),
        &[
            ("alice", "alice-pw"),
            ("bob", "bob-pw"),
            ("root", "root-pw"),
        ],
    );
    let cfg = dir.path().join("airdock.yaml");
    std::fs::write(
        &cfg,
        format!(
            "auth:\n  htpasswd: {}\n  admins: [root]\n{extra_yaml}{RULES}",
            hp.display()
        ),
    )
    .expect("write config");
    let data = scratch_dir("airdock-sec-data-");
    std::fs::write(data.path().join("admin-token"), "machine-secret\n").expect("admin token");
    let mut all = vec!["--config", cfg.to_str().expect("utf-8")];
    all.extend_from_slice(args);
    Lab {
        server: Server::start_in(data, &all),
        _dir: dir,
        c: client(),
    }
}

impl Lab {
    async fn token(&self, auth: Option<&str>, scopes: &[&str]) -> reqwest::Response {
        let mut url = format!("{}/token?service=airdock", self.server.base_url());
        for s in scopes {
            url.push_str(&format!("&scope={s}"));
        }
        let mut rb = self.c.get(url);
        if let Some(a) = auth {
            rb = rb.header("authorization", a);
        }
        rb.send().await.expect("token request")
    }

    async fn bearer(&self, user: &str, pw: &str, scopes: &[&str]) -> String {
        let r = self.token(Some(&basic(user, pw)), scopes).await;
        assert_eq!(r.status(), StatusCode::OK, "token for {user}");
        let v: Value = r.json().await.expect("token JSON");
        format!("Bearer {}", v["token"].as_str().expect("token field"))
    }

    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        auth: Option<&str>,
        body: Vec<u8>,
    ) -> reqwest::Response {
        let mut rb = self
            .c
            .request(method, self.server.url(path))
            .body(body)
            .header("content-type", OCI_MANIFEST);
        if let Some(a) = auth {
            rb = rb.header("authorization", a);
        }
        rb.send().await.expect("request")
    }

    async fn get(&self, path: &str, auth: Option<&str>) -> reqwest::Response {
        self.send(reqwest::Method::GET, path, auth, vec![]).await
    }

    async fn post(&self, path: &str, auth: Option<&str>) -> reqwest::Response {
        self.send(reqwest::Method::POST, path, auth, vec![]).await
    }

    /// Push a one-layer image to `repo:tag` with `auth`; return the manifest PUT's status.
    async fn push(&self, repo: &str, tag: &str, auth: &str) -> StatusCode {
        let cfg = format!("{{\"repo\":\"{repo}\"}}").into_bytes();
        let layer = format!("layer of {repo}").into_bytes();
        for blob in [&cfg, &layer] {
            let r = self
                .send(
                    reqwest::Method::POST,
                    &format!("/v2/{repo}/blobs/uploads/?digest={}", sha256(blob)),
                    Some(auth),
                    blob.to_vec(),
                )
                .await;
            if r.status() != StatusCode::CREATED {
                return r.status();
            }
        }
        let manifest = image_manifest(&sha256(&cfg), cfg.len(), &sha256(&layer), layer.len());
        self.send(
            reqwest::Method::PUT,
            &format!("/v2/{repo}/manifests/{tag}"),
            Some(auth),
            manifest.into_bytes(),
        )
        .await
        .status()
    }
}

pub(crate) async fn expect_code(
    r: reqwest::Response,
    status: StatusCode,
    code: &str,
) -> Option<String> {
    assert_eq!(r.status(), status, "expected {code}");
    let challenge = r
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().expect("ascii").to_owned());
    let body: Value = r.json().await.expect("JSON error body");
    assert_eq!(body["errors"][0]["code"], code, "{body}");
    challenge
}

#[tokio::test]
async fn token_flow_rights_and_refusals() {
    let lab = lab("", &[]);
    let s = &lab.server;

    // Anonymous /v2/: a Bearer challenge naming our token endpoint.
    let r = lab.get("/v2/", None).await;
    assert!(r.headers().get("docker-distribution-api-version").is_some());
    let ch = expect_code(r, StatusCode::UNAUTHORIZED, "UNAUTHORIZED")
        .await
        .expect("challenge");
    assert_eq!(
        ch,
        format!(
            "Bearer realm=\"http://{}/token\",service=\"airdock\"",
            s.host()
        )
    );

    // Wrong password at the token endpoint.
    let r = lab
        .token(Some(&basic("alice", "nope")), &["repository:team/app:pull"])
        .await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);

    // alice pushes team/app with a token scoped to it.
    let alice = lab
        .bearer("alice", "alice-pw", &["repository:team/app:pull,push"])
        .await;
    assert_eq!(
        lab.push("team/app", "v1", &alice).await,
        StatusCode::CREATED
    );
    let r = lab.get("/v2/", Some(&alice)).await;
    assert_eq!(r.status(), StatusCode::OK);

    // bob asks for push and gets a token for pull only; his push is DENIED, nothing changes.
    let bob = lab
        .bearer("bob", "bob-pw", &["repository:team/app:pull,push"])
        .await;
    let claims = decode_claims(&bob);
    assert_eq!(claims["access"][0]["actions"], serde_json::json!(["pull"]));
    let r = lab
        .send(
            reqwest::Method::PUT,
            "/v2/team/app/manifests/evil",
            Some(&bob),
            b"{}".to_vec(),
        )
        .await;
    expect_code(r, StatusCode::FORBIDDEN, "DENIED").await;
    let r = lab
        .post("/v2/team/app/blobs/uploads/", Some(&basic("bob", "bob-pw")))
        .await;
    expect_code(r, StatusCode::FORBIDDEN, "DENIED").await;
    let r = lab
        .send(
            reqwest::Method::DELETE,
            "/v2/team/app/manifests/v1",
            Some(&bob),
            vec![],
        )
        .await;
    expect_code(r, StatusCode::FORBIDDEN, "DENIED").await;
    let r = lab.get("/v2/team/app/tags/list", Some(&bob)).await;
    assert_eq!(r.status(), StatusCode::OK);
    let tags: Value = r.json().await.expect("tags");
    assert_eq!(
        tags["tags"],
        serde_json::json!(["v1"]),
        "bob's push left no tag"
    );

    // A token for another repository: 401 with the scope to ask for.
    let other = lab
        .bearer("alice", "alice-pw", &["repository:team/other:pull,push"])
        .await;
    let r = lab.get("/v2/team/app/manifests/v1", Some(&other)).await;
    let ch = expect_code(r, StatusCode::UNAUTHORIZED, "UNAUTHORIZED")
        .await
        .expect("challenge");
    assert!(ch.contains("scope=\"repository:team/app:pull\""), "{ch}");

    // A mount needs pull on its source too: a token without it is sent back for both scopes.
    let r = lab
        .post(
            &format!(
                "/v2/team/app/blobs/uploads/?mount={}&from=team/lib",
                sha256(b"x")
            ),
            Some(&alice),
        )
        .await;
    let ch = expect_code(r, StatusCode::UNAUTHORIZED, "UNAUTHORIZED")
        .await
        .expect("challenge");
    assert!(
        ch.contains("scope=\"repository:team/app:pull,push repository:team/lib:pull\""),
        "{ch}"
    );

    // A forged token (claims edited, signature kept) and an expired one.
    let forged = forge(&alice, "team/*");
    let r = lab.get("/v2/team/app/manifests/v1", Some(&forged)).await;
    let ch = expect_code(r, StatusCode::UNAUTHORIZED, "UNAUTHORIZED")
        .await
        .expect("challenge");
    assert!(ch.contains("error=\"invalid_token\""), "{ch}");
    let key = airdock::auth::token::TokenKey::load_or_create(&s.data_dir().join("token.key"))
        .expect("key");
    let mut old = airdock::auth::token::claims(
        "alice",
        "airdock",
        60,
        vec![airdock::auth::token::Access {
            kind: "repository".into(),
            name: "team/app".into(),
            actions: vec!["pull".into()],
        }],
    );
    let fresh = format!("Bearer {}", key.sign(&old));
    let r = lab.get("/v2/team/app/manifests/v1", Some(&fresh)).await;
    assert_eq!(r.status(), StatusCode::OK, "a token we signed works");
    old.exp = old.iat - 1;
    let expired = format!("Bearer {}", key.sign(&old));
    let r = lab.get("/v2/team/app/manifests/v1", Some(&expired)).await;
    expect_code(r, StatusCode::UNAUTHORIZED, "UNAUTHORIZED").await;

    // Wrong password with Basic straight on /v2.
    let r = lab
        .get("/v2/team/app/manifests/v1", Some(&basic("bob", "wrong")))
        .await;
    expect_code(r, StatusCode::UNAUTHORIZED, "UNAUTHORIZED").await;
}

/// The JSON claims of a `Bearer <jwt>` value.
fn decode_claims(bearer: &str) -> Value {
    let jwt = bearer.trim_start_matches("Bearer ");
    let part = jwt.split('.').nth(1).expect("payload");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(part)
        .expect("base64url");
    serde_json::from_slice(&bytes).expect("claims JSON")
}

/// `bearer` with its claims rewritten to grant everything on `name`, signature unchanged.
fn forge(bearer: &str, name: &str) -> String {
    let jwt = bearer.trim_start_matches("Bearer ");
    let parts: Vec<&str> = jwt.split('.').collect();
    let mut claims = decode_claims(bearer);
    claims["access"] = serde_json::json!([{"type":"repository","name":name,"actions":["*"]}]);
    let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(serde_json::to_vec(&claims).expect("json"));
    format!("Bearer {}.{}.{}", parts[0], payload, parts[2])
}

/// Issue 10, defect 16: a token issued to an admin for pulls and pushes opened `/admin/*`;
/// admin work needs a token asked for it (`registry:admin:*`), granted to admins only.
#[tokio::test]
async fn admin_jwt_without_the_admin_scope_is_refused() {
    let lab = lab("", &[]);
    let pull_token = lab
        .bearer("root", "root-pw", &["repository:secret/x:pull"])
        .await;
    let r = lab.get("/admin/v1/imports", Some(&pull_token)).await;
    assert_eq!(
        r.status(),
        StatusCode::UNAUTHORIZED,
        "a pull token opened /admin"
    );
    assert_eq!(
        r.headers()["www-authenticate"],
        "Bearer realm=\"airdock-admin\""
    );
    let body: Value = r.json().await.expect("JSON error body");
    assert_eq!(body["errors"][0]["code"], "UNAUTHORIZED", "{body}");
    let message = body["errors"][0]["message"].as_str().unwrap_or("");
    assert!(message.contains("registry:admin:*"), "{body}");

    let admin_token = lab.bearer("root", "root-pw", &["registry:admin:*"]).await;
    let r = lab.get("/admin/v1/imports", Some(&admin_token)).await;
    assert_eq!(r.status(), StatusCode::OK, "a token made for admin work");
    // The same token opens no repository it was not issued for.
    let r = lab.get("/v2/secret/x/tags/list", Some(&admin_token)).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);

    // Non-admins asking for the scope get a token without it.
    let alice_token = lab
        .bearer(
            "alice",
            "alice-pw",
            &["registry:admin:*", "repository:team/app:pull"],
        )
        .await;
    let r = lab.get("/admin/v1/imports", Some(&alice_token)).await;
    expect_code(r, StatusCode::FORBIDDEN, "DENIED").await;
}

#[tokio::test]
async fn catalog_anonymous_and_admin() {
    let lab = lab("", &[]);
    let root = basic("root", "root-pw");
    let alice = basic("alice", "alice-pw");
    assert_eq!(lab.push("secret/x", "v1", &root).await, StatusCode::CREATED);
    assert_eq!(
        lab.push("public/base", "v1", &root).await,
        StatusCode::CREATED
    );
    assert_eq!(
        lab.push("team/app", "v1", &alice).await,
        StatusCode::CREATED
    );

    // Anonymous catalog: refused, with the catalog scope in the challenge.
    let r = lab.get("/v2/_catalog", None).await;
    let ch = expect_code(r, StatusCode::UNAUTHORIZED, "UNAUTHORIZED")
        .await
        .expect("challenge");
    assert!(ch.contains("registry:catalog:*"), "{ch}");

    // Each caller sees what they may pull, through Basic or a token.
    for (who, auth, want) in [
        (
            "bob",
            basic("bob", "bob-pw"),
            vec!["public/base", "team/app"],
        ),
        // An admin may pull everything, named by a rule or not (issue 10, defect 16).
        (
            "root",
            root.clone(),
            vec!["public/base", "secret/x", "team/app"],
        ),
        (
            "anonymous token",
            {
                let r = lab.token(None, &["registry:catalog:*"]).await;
                let v: Value = r.json().await.expect("token");
                format!("Bearer {}", v["token"].as_str().expect("token"))
            },
            vec!["public/base"],
        ),
    ] {
        let r = lab.get("/v2/_catalog?n=10", Some(&auth)).await;
        assert_eq!(r.status(), StatusCode::OK, "{who}");
        let v: Value = r.json().await.expect("catalog");
        assert_eq!(v["repositories"], serde_json::json!(want), "{who}");
    }
    // Pagination over the filtered list.
    let r = lab
        .get("/v2/_catalog?n=1", Some(&basic("bob", "bob-pw")))
        .await;
    assert!(r.headers().get("link").is_some());
    let v: Value = r.json().await.expect("catalog");
    assert_eq!(v["repositories"], serde_json::json!(["public/base"]));

    // Anonymous pull where allowed (directly and with an anonymous token); not elsewhere.
    let r = lab.get("/v2/public/base/manifests/v1", None).await;
    assert_eq!(r.status(), StatusCode::OK);
    let anon = {
        let r = lab.token(None, &["repository:public/base:pull,push"]).await;
        let v: Value = r.json().await.expect("token");
        format!("Bearer {}", v["token"].as_str().expect("token"))
    };
    let r = lab.get("/v2/public/base/manifests/v1", Some(&anon)).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        lab.push("public/base", "v2", &anon).await,
        StatusCode::UNAUTHORIZED
    );
    let r = lab.get("/v2/secret/x/manifests/v1", None).await;
    expect_code(r, StatusCode::UNAUTHORIZED, "UNAUTHORIZED").await;

    // A mount from a repository alice may not read becomes a plain upload (202, not 201).
    let cfg = sha256(b"{\"repo\":\"secret/x\"}");
    let r = lab
        .post(
            &format!("/v2/team/app/blobs/uploads/?mount={cfg}&from=secret/x"),
            Some(&alice),
        )
        .await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let r = lab
        .post(
            &format!("/v2/secret/y/blobs/uploads/?mount={cfg}&from=secret/x"),
            Some(&root),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED, "root may read secret/x");

    // /admin/*: refused before routing for anonymous and non-admins; admins and the admin
    // token get through (to whatever the route is).
    let r = lab.post("/admin/v1/import", None).await;
    expect_code(r, StatusCode::UNAUTHORIZED, "UNAUTHORIZED").await;
    for auth in [alice.clone(), basic("bob", "bob-pw")] {
        let r = lab.post("/admin/v1/import", Some(&auth)).await;
        expect_code(r, StatusCode::FORBIDDEN, "DENIED").await;
    }
    let r = lab
        .post("/admin/v1/import", Some("Bearer not-the-token"))
        .await;
    expect_code(r, StatusCode::UNAUTHORIZED, "UNAUTHORIZED").await;
    for auth in [root.clone(), "Bearer machine-secret".to_owned()] {
        let r = lab.post("/admin/v1/import", Some(&auth)).await;
        assert!(
            r.status() != StatusCode::UNAUTHORIZED && r.status() != StatusCode::FORBIDDEN,
            "admin refused: {}",
            r.status()
        );
    }
    // A user with the admin right imports with their own credentials, no admin token.
    let tar = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/imgpkg/tars/guestbook-bundle.tar"
    ))
    .expect("fixture tar");
    let r = lab
        .send(
            reqwest::Method::POST,
            "/admin/v1/import?repository=team/imported",
            Some(&root),
            tar,
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED, "admin user's import");
}

#[tokio::test]
async fn failed_logins_are_throttled() {
    let lab = lab("  max_failures: 3\n  lockout_secs: 30\n", &[]);
    for _ in 0..3 {
        let r = lab
            .token(
                Some(&basic("alice", "guess")),
                &["repository:team/app:pull"],
            )
            .await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    }
    // Now even the right password waits; no bcrypt work is done for this address.
    for auth in [basic("alice", "guess"), basic("alice", "alice-pw")] {
        let r = lab.get("/v2/team/app/tags/list", Some(&auth)).await;
        let retry: u64 = r
            .headers()
            .get("retry-after")
            .expect("Retry-After")
            .to_str()
            .expect("ascii")
            .parse()
            .expect("seconds");
        assert!((1..=30).contains(&retry));
        expect_code(r, StatusCode::TOO_MANY_REQUESTS, "TOOMANYREQUESTS").await;
    }
}

#[tokio::test]
async fn basic_mode_and_htpasswd_without_rules() {
    let dir = scratch_dir("airdock-basic-");
    let hp = htpasswd(dir.path(), &[("carol", "carol-pw")]);
    let s = Server::start_with_args(&[
        "--htpasswd",
        hp.to_str().expect("utf-8"),
        "--auth-mode",
        "basic",
    ]);
    let c = client();
    let r = get(&c, &s, "/v2/").await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let ch = r.headers()["www-authenticate"].to_str().expect("ascii");
    assert!(ch.starts_with("Basic realm="), "{ch}");
    // With no rules every user may push and pull; anonymous nothing.
    let d = sha256(b"hello");
    let r = c
        .post(s.url(&format!("/v2/any/repo/blobs/uploads/?digest={d}")))
        .header("authorization", basic("carol", "carol-pw"))
        .body(&b"hello"[..])
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), StatusCode::CREATED);
    let r = get(&c, &s, &format!("/v2/any/repo/blobs/{d}")).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
}

#[test]
fn config_check_names_key_and_line() {
    let dir = scratch_dir("airdock-cfg-");
    let bad = dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "addr: 127.0.0.1:5000\nauth:\n  htpasswd: /x\n  tokn_ttl_secs: 5\n",
    )
    .expect("write");
    let (ok, out, err) = airdock(&["config", "check", bad.to_str().expect("utf-8")], "");
    assert!(!ok, "{out}");
    assert!(err.contains("line 4"), "{err}");
    assert!(err.contains("tokn_ttl_secs"), "{err}");

    let hp = htpasswd(dir.path(), &[("u", "p")]);
    let good = dir.path().join("good.yaml");
    std::fs::write(
        &good,
        format!(
            "addr: 127.0.0.1:5000\nauth:\n  htpasswd: {}\n{RULES}",
            hp.display()
        ),
    )
    .expect("write");
    let (ok, out, err) = airdock(&["config", "check", good.to_str().expect("utf-8")], "");
    assert!(ok, "{out}{err}");
}

/// A CA and server certificate for `127.0.0.1` and `localhost` from `airdock cert init`.
pub(crate) fn lab_ca(dir: &Path) -> String {
    let d = dir.to_str().expect("utf-8");
    let (ok, out, err) = airdock(
        &[
            "cert",
            "init",
            "--dir",
            d,
            "--host",
            "localhost",
            "--host",
            "127.0.0.1",
        ],
        "",
    );
    assert!(ok, "cert init: {out}{err}");
    assert!(
        out.contains("/etc/docker/certs.d/localhost:5000/ca.crt"),
        "{out}"
    );
    assert!(out.contains("hosts.toml"), "{out}");
    assert!(out.contains("--registry-ca-cert-path"), "{out}");
    assert!(out.contains("update-ca-certificates"), "{out}");
    dir.join("ca.crt").display().to_string()
}

pub(crate) fn tls_server(certs: &Path, extra: &[&str]) -> Server {
    let crt = certs.join("tls.crt");
    let key = certs.join("tls.key");
    let mut args = vec![
        "--tls-cert",
        crt.to_str().expect("utf-8"),
        "--tls-key",
        key.to_str().expect("utf-8"),
    ];
    args.extend_from_slice(extra);
    Server::start_with_args(&args)
}

/// A blocking TLS connection trusting only the lab CA, for exchanges on one connection.
struct TlsConn(rustls::StreamOwned<rustls::ClientConnection, TcpStream>);

impl TlsConn {
    fn connect(addr: std::net::SocketAddr, ca_pem: &str) -> TlsConn {
        use rustls::pki_types::pem::PemObject;
        let mut roots = rustls::RootCertStore::empty();
        for c in rustls::pki_types::CertificateDer::pem_file_iter(ca_pem).expect("ca") {
            roots.add(c.expect("ca cert")).expect("add root");
        }
        let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
        let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
        let conn = rustls::ClientConnection::new(Arc::new(cfg), name).expect("client");
        let tcp = TcpStream::connect(addr).expect("connect");
        tcp.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        TlsConn(rustls::StreamOwned::new(conn, tcp))
    }

    /// `GET path` on this connection; the status line and the server's leaf certificate.
    fn get(&mut self, path: &str) -> (String, Vec<u8>) {
        write!(self.0, "GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").expect("write");
        self.0.flush().expect("flush");
        let mut buf = Vec::new();
        let mut byte = [0u8; 1];
        // Read the head, then Content-Length bytes.
        while !buf.ends_with(b"\r\n\r\n") {
            let n = self.0.read(&mut byte).expect("read");
            assert_eq!(n, 1, "connection closed mid-response");
            buf.push(byte[0]);
        }
        let head = String::from_utf8_lossy(&buf).into_owned();
        let len: usize = head
            .lines()
            .find_map(|l| {
                l.to_ascii_lowercase()
                    .strip_prefix("content-length:")
                    .map(|v| v.trim().parse().expect("length"))
            })
            .unwrap_or(0);
        let mut body = vec![0u8; len];
        self.0.read_exact(&mut body).expect("body");
        let leaf = self.0.conn.peer_certificates().expect("peer certs")[0].to_vec();
        (head.lines().next().unwrap_or("").to_owned(), leaf)
    }
}

#[test]
fn tls_with_lab_ca_reloads_without_dropping_connections() {
    let certs = scratch_dir("airdock-certs-");
    let ca = lab_ca(certs.path());
    let s = tls_server(certs.path(), &[]);
    let mut conn = TlsConn::connect(s.addr(), &ca);
    let (status, leaf1) = conn.get("/v2/");
    assert!(status.contains(" 200 "), "{status}");

    // A new server certificate from the same CA; files replaced under the running server.
    let (ok, out, err) = airdock(
        &[
            "cert",
            "init",
            "--dir",
            certs.path().to_str().expect("utf-8"),
            "--host",
            "localhost",
        ],
        "",
    );
    assert!(ok && out.contains("kept the existing CA"), "{out}{err}");
    std::thread::sleep(Duration::from_millis(1200));

    // The open connection carries on; a new one gets the new certificate.
    let (status, same) = conn.get("/v2/");
    assert!(status.contains(" 200 "), "{status}");
    assert_eq!(same, leaf1);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, leaf2) = TlsConn::connect(s.addr(), &ca).get("/v2/");
        assert!(status.contains(" 200 "), "{status}");
        if leaf2 != leaf1 {
            break;
        }
        assert!(Instant::now() < deadline, "certificate never reloaded");
        std::thread::sleep(Duration::from_millis(300));
    }
    assert!(s.logs().contains("TLS certificate reloaded"));
}

#[tokio::test]
async fn tls_with_auth_through_reqwest_and_plain_http_refused() {
    let certs = scratch_dir("airdock-certs-");
    let ca = lab_ca(certs.path());
    let dir = scratch_dir("airdock-tlsauth-");
    let hp = htpasswd(dir.path(), &[("alice", "pw")]);
    let s = tls_server(certs.path(), &["--htpasswd", hp.to_str().expect("utf-8")]);
    let pem = std::fs::read(&ca).expect("ca");
    let c = Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&pem).expect("pem"))
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client");
    let base = format!("https://localhost:{}", s.addr().port());
    let r = c.get(format!("{base}/v2/")).send().await.expect("https");
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let ch = r.headers()["www-authenticate"].to_str().expect("ascii");
    assert!(
        ch.contains(&format!(
            "realm=\"https://localhost:{}/token\"",
            s.addr().port()
        )),
        "{ch}"
    );
    let r = c
        .get(format!("{base}/token?service=airdock"))
        .header("authorization", basic("alice", "pw"))
        .send()
        .await
        .expect("token");
    assert_eq!(r.status(), StatusCode::OK);

    // A client that does not trust the lab CA cannot connect.
    let untrusting = Client::builder().build().expect("client");
    assert!(untrusting.get(format!("{base}/v2/")).send().await.is_err());

    // Plain HTTP on the TLS port: 400, then the connection closes.
    let mut tcp = TcpStream::connect(s.addr()).expect("connect");
    tcp.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    tcp.write_all(b"GET /v2/ HTTP/1.1\r\nHost: x\r\n\r\n")
        .expect("write");
    let mut got = String::new();
    let _ = tcp.read_to_string(&mut got);
    assert!(got.starts_with("HTTP/1.0 400"), "{got}");
}

#[test]
fn slow_loris_is_cut_off() {
    let s = Server::start_with_args(&["--header-timeout-secs", "1"]);
    let mut tcp = TcpStream::connect(s.addr()).expect("connect");
    tcp.set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    let start = Instant::now();
    tcp.write_all(b"GET /v2/ HTTP/1.1\r\nHost: x\r\n")
        .expect("write");
    // One header byte every 200 ms, never finishing the head.
    let mut closed = false;
    let mut buf = [0u8; 512];
    while start.elapsed() < Duration::from_secs(8) {
        if tcp.write_all(b"X").is_err() {
            closed = true;
            break;
        }
        match tcp.read(&mut buf) {
            // 408 or EOF: either way the server let go.
            Ok(_) => {
                closed = true;
                break;
            }
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(_) => {
                closed = true;
                break;
            }
        }
    }
    assert!(closed, "a slow client kept its connection for 8 s");
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
    // Meanwhile and afterwards the server serves others.
    let mut ok = TcpStream::connect(s.addr()).expect("connect");
    ok.write_all(b"GET /v2/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .expect("write");
    let mut got = String::new();
    ok.read_to_string(&mut got).expect("read");
    assert!(got.starts_with("HTTP/1.1 200"), "{got}");
}

#[test]
fn oversized_request_head_is_refused() {
    let s = Server::start_with_args(&["--max-header-bytes", "16384"]);
    let mut tcp = TcpStream::connect(s.addr()).expect("connect");
    tcp.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let big = "a".repeat(64 * 1024);
    // The server may close while we still write: only what it answers matters.
    let _ =
        tcp.write_all(format!("GET /v2/ HTTP/1.1\r\nHost: x\r\nX-Big: {big}\r\n\r\n").as_bytes());
    let mut got = String::new();
    let _ = tcp.read_to_string(&mut got);
    assert!(
        got.is_empty() || got.starts_with("HTTP/1.1 431"),
        "an oversized head was served: {got:.200}"
    );
}

#[tokio::test]
async fn stalled_body_is_cut_off_without_a_trace() {
    let s = Server::start_with_args(&["--body-timeout-secs", "1"]);
    let c = client();
    let r = post(&c, &s, "/v2/slow/app/blobs/uploads/").await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let location = r.headers()["location"].to_str().expect("ascii").to_owned();
    let path = location
        .strip_prefix(&s.base_url())
        .unwrap_or(&location)
        .to_owned();
    let addr = s.addr();
    let start = Instant::now();
    let answer = tokio::task::spawn_blocking(move || {
        let mut tcp = TcpStream::connect(addr).expect("connect");
        tcp.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        let head = format!(
            "PATCH {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\n\
             Content-Range: 0-999\r\nContent-Length: 1000\r\n\r\n"
        );
        tcp.write_all(head.as_bytes()).expect("head");
        tcp.write_all(&[7u8; 10]).expect("some bytes");
        // ...and nothing more.
        let mut got = Vec::new();
        let _ = tcp.read_to_end(&mut got);
        String::from_utf8_lossy(&got).into_owned()
    })
    .await
    .expect("join");
    assert!(
        start.elapsed() < Duration::from_secs(8),
        "{:?}",
        start.elapsed()
    );
    assert!(
        !answer.contains("/tmp/") && !answer.contains("panicked"),
        "internals in the answer: {answer}"
    );
    // The partial chunk left nothing behind.
    let r = get(&c, &s, &location).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let range = r
        .headers()
        .get("range")
        .map(|v| v.to_str().expect("ascii").to_owned());
    assert!(
        range.is_none() || range.as_deref() == Some("0-0") || range.as_deref() == Some("bytes=0-0"),
        "offset after a stalled chunk: {range:?}"
    );
}

/// `--max-open-uploads`: a POST for one session past the cap is refused with 429
/// TOOMANYREQUESTS and `Retry-After`, and opens nothing; a monolithic push (no session) and
/// the open sessions themselves go on; a cancel frees a slot; after a restart the sessions
/// left on disk still count.
#[tokio::test]
async fn open_upload_sessions_are_capped() {
    let mut s = Server::start_with_args(&["--max-open-uploads", "2"]);
    let c = client();
    let open_session = |s: &Server| c.post(s.url("/v2/cap/app/blobs/uploads/")).send();
    let mut sessions = Vec::new();
    for _ in 0..2 {
        let r = open_session(&s).await.expect("post");
        assert_eq!(r.status(), StatusCode::ACCEPTED);
        sessions.push(r.headers()["location"].to_str().expect("ascii").to_owned());
    }
    let r = open_session(&s).await.expect("post");
    // Until the oldest session has been idle long enough to be expired for room (60 s).
    let retry = retry_after(&r);
    assert!((50..=60).contains(&retry), "Retry-After {retry}");
    expect_code(r, StatusCode::TOO_MANY_REQUESTS, "TOOMANYREQUESTS").await;
    let sessions_on_disk = || {
        std::fs::read_dir(s.data_dir().join("uploads"))
            .expect("uploads dir")
            .count()
    };
    assert_eq!(sessions_on_disk(), 2, "a refused POST opens nothing");

    // A monolithic push needs no session; an open session still takes its data.
    let body = b"past the cap".to_vec();
    let r = c
        .post(s.url(&format!(
            "/v2/cap/app/blobs/uploads/?digest={}",
            sha256(&body)
        )))
        .body(body.clone())
        .send()
        .await
        .expect("monolithic");
    assert_eq!(r.status(), StatusCode::CREATED);
    let r = c
        .put(s.url(&format!("{}?digest={}", sessions[0], sha256(&body))))
        .body(body)
        .send()
        .await
        .expect("finish");
    assert_eq!(r.status(), StatusCode::CREATED);
    let r = open_session(&s).await.expect("post after finish");
    assert_eq!(
        r.status(),
        StatusCode::ACCEPTED,
        "a finished session frees its slot"
    );
    let third = r.headers()["location"].to_str().expect("ascii").to_owned();
    let r = delete(&c, &s, &third).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let r = open_session(&s).await.expect("post after cancel");
    assert_eq!(r.status(), StatusCode::ACCEPTED, "a cancel frees its slot");

    // Two sessions are open on disk; a restarted server counts them.
    s.restart();
    // A new client: the old one's pooled connections died with the old process.
    let c = client();
    let r = post(&c, &s, "/v2/cap/app/blobs/uploads/").await;
    expect_code(r, StatusCode::TOO_MANY_REQUESTS, "TOOMANYREQUESTS").await;
    let r = delete(&c, &s, &sessions[1]).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let r = post(&c, &s, "/v2/cap/app/blobs/uploads/").await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
}

#[test]
fn config_check_knows_max_open_uploads() {
    let dir = scratch_dir("airdock-cfg-");
    let good = dir.path().join("good.yaml");
    std::fs::write(&good, "limits:\n  max_open_uploads: 16\n").expect("write");
    let (ok, out, err) = airdock(&["config", "check", good.to_str().expect("utf-8")], "");
    assert!(ok, "{out}{err}");
    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, "limits:\n  max_open_uploads: many\n").expect("write");
    let (ok, out, err) = airdock(&["config", "check", bad.to_str().expect("utf-8")], "");
    assert!(!ok, "{out}");
    assert!(err.contains("line 2"), "{err}");
    assert!(err.contains("max_open_uploads"), "{err}");
}

fn retry_after(r: &reqwest::Response) -> u64 {
    r.headers()
        .get("retry-after")
        .expect("Retry-After")
        .to_str()
        .expect("ascii")
        .parse()
        .expect("seconds")
}

/// The header names of a response, but those that vary per response anyway.
fn header_names(r: &reqwest::Response) -> Vec<String> {
    let mut names: Vec<String> = r
        .headers()
        .keys()
        .map(|k| k.as_str().to_owned())
        .filter(|k| k != "date")
        .collect();
    names.sort();
    names
}

/// Issue 10, defect 1: a mount without `from` linked a blob from any repository, so alice
/// (push on team/*, no right on secret/**) got 201 for a blob only secret/x holds and then
/// read it. Now it is an ordinary upload session, answered exactly like a mount of a blob
/// stored nowhere; a blob she may read elsewhere still mounts.
#[tokio::test]
async fn mount_without_from_needs_pull_on_a_repository_that_holds_the_blob() {
    let lab = lab("", &[]);
    let root = basic("root", "root-pw");
    let alice = basic("alice", "alice-pw");
    let upload = |repo: &str, bytes: &[u8], auth: &str| {
        let path = format!("/v2/{repo}/blobs/uploads/?digest={}", sha256(bytes));
        let (bytes, auth) = (bytes.to_vec(), auth.to_owned());
        let lab = &lab;
        async move {
            lab.send(reqwest::Method::POST, &path, Some(&auth), bytes)
                .await
                .status()
        }
    };
    let secret = b"a layer only secret/x holds".to_vec();
    assert_eq!(
        upload("secret/x", &secret, &root).await,
        StatusCode::CREATED
    );
    let mount = |repo: &str, digest: &str, auth: &str| {
        let path = format!("/v2/{repo}/blobs/uploads/?mount={digest}");
        let auth = auth.to_owned();
        let lab = &lab;
        async move { lab.post(&path, Some(&auth)).await }
    };

    let nowhere = mount("team/app", &sha256(b"stored nowhere"), &alice).await;
    let stolen = mount("team/app", &sha256(&secret), &alice).await;
    assert_eq!(stolen.status(), StatusCode::ACCEPTED, "no mount, an upload");
    assert_eq!(nowhere.status(), StatusCode::ACCEPTED);
    assert_eq!(header_names(&stolen), header_names(&nowhere), "no oracle");
    let location = stolen.headers()["location"].to_str().expect("ascii");
    assert!(
        location.starts_with("/v2/team/app/blobs/uploads/"),
        "{location}"
    );
    let r = lab
        .get(
            &format!("/v2/team/app/blobs/{}", sha256(&secret)),
            Some(&alice),
        )
        .await;
    expect_code(r, StatusCode::NOT_FOUND, "BLOB_UNKNOWN").await;

    // What the caller may read mounts, with or without `from`.
    let own = b"alice's own layer in team/lib".to_vec();
    assert_eq!(upload("team/lib", &own, &alice).await, StatusCode::CREATED);
    let r = mount("team/app", &sha256(&own), &alice).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let r = mount("secret/y", &sha256(&secret), &root).await;
    assert_eq!(r.status(), StatusCode::CREATED, "root may read secret/x");
}

/// Issue 10, defect 15: 1,023 POSTs from one user filled the one registry-wide session cap
/// and every other user's push got 429 (`Retry-After: 10`) for up to the upload TTL. Now
/// each user has a cap of their own (default 128), only the offender is refused, with a
/// Retry-After that says when room can be made, and admins can list and cancel sessions.
#[tokio::test]
async fn one_user_cannot_block_every_other_push() {
    let lab = lab("", &[]);
    let alice = basic("alice", "alice-pw");
    let root = basic("root", "root-pw");
    let mut opened = 0;
    let mut refusal = None;
    for _ in 0..1100 {
        let r = lab.post("/v2/team/app/blobs/uploads/", Some(&alice)).await;
        match r.status() {
            StatusCode::ACCEPTED => opened += 1,
            _ => {
                refusal = Some(r);
                break;
            }
        }
    }
    let r = lab.post("/v2/secret/x/blobs/uploads/", Some(&root)).await;
    assert_eq!(
        r.status(),
        StatusCode::ACCEPTED,
        "another user's push after alice opened {opened} sessions"
    );
    assert_eq!(opened, 128);
    let r = refusal.expect("alice is refused");
    let retry = retry_after(&r);
    assert!((1..=60).contains(&retry), "Retry-After {retry}");
    let body: Value = r.json().await.expect("error body");
    assert_eq!(body["errors"][0]["code"], "TOOMANYREQUESTS", "{body}");
    let msg = body["errors"][0]["message"].as_str().unwrap_or_default();
    assert!(msg.contains("for this client"), "{msg}");

    // Admins see whose sessions they are and can cancel any of them.
    let r = lab
        .get("/admin/v1/uploads?repository=team/app", Some(&root))
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let v: Value = r.json().await.expect("json");
    let uploads = v["uploads"].as_array().expect("uploads");
    assert_eq!(uploads.len(), 128);
    assert!(uploads.iter().all(|u| u["owner"] == "user:alice"), "{v}");
    let id = uploads[0]["id"].as_str().expect("id");
    let r = lab
        .get("/admin/v1/uploads", Some(&basic("bob", "bob-pw")))
        .await;
    expect_code(r, StatusCode::FORBIDDEN, "DENIED").await;
    let path = format!("/admin/v1/uploads/{id}");
    let cancel = || lab.send(reqwest::Method::DELETE, &path, Some(&root), vec![]);
    assert_eq!(cancel().await.status(), StatusCode::NO_CONTENT);
    expect_code(cancel().await, StatusCode::NOT_FOUND, "BLOB_UPLOAD_UNKNOWN").await;
    let r = lab.post("/v2/team/app/blobs/uploads/", Some(&alice)).await;
    assert_eq!(r.status(), StatusCode::ACCEPTED, "a cancel frees her slot");
}
