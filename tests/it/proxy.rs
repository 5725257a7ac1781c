//! Issue 10, defect 14: airdock behind nginx (Debian `nginx-light`) terminating TLS with a
//! certificate from `airdock cert init`. Through the trusted proxy the challenge, `Location`
//! and `Link` name the proxy's https URL, and the lockout keys on each client behind it (two
//! clients from two loopback addresses); a peer that is not trusted gets its `X-Forwarded-*`
//! and `Forwarded` headers ignored.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use reqwest::{Client, StatusCode};

use crate::nginx::{Nginx, Tls};
use crate::security::{airdock, basic, client, htpasswd};
use crate::support::{scratch_dir, sha256, Server};

/// The name clients use for the proxy (in its certificate; resolved to loopback by the
/// clients themselves, so no resolver is touched).
const PROXY_HOST: &str = "registry.lab";

/// The proxy's https base URL.
fn base(nginx: &Nginx) -> String {
    format!("https://{PROXY_HOST}:{}", nginx.port)
}

/// A client trusting the lab CA, reaching the proxy from loopback address `from`.
fn proxy_client(nginx: &Nginx, ca: &Path, from: &str) -> Client {
    let pem = std::fs::read(ca).expect("ca");
    let from: IpAddr = from.parse().expect("ip");
    Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&pem).expect("pem"))
        .resolve(PROXY_HOST, SocketAddr::from(([127, 0, 0, 1], nginx.port)))
        .local_address(from)
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client")
}

/// Send `rb` with `auth`; only a missing answer panics.
async fn send(rb: reqwest::RequestBuilder, auth: &str) -> reqwest::Response {
    rb.header("authorization", auth)
        .send()
        .await
        .expect("request through nginx")
}

/// `ca.crt`, `tls.crt`, `tls.key` for [`PROXY_HOST`] in `dir`.
fn proxy_certs(dir: &Path) {
    let d = dir.to_str().expect("utf-8");
    let (ok, out, err) = airdock(&["cert", "init", "--dir", d, "--host", PROXY_HOST], "");
    assert!(ok, "cert init: {out}{err}");
}

#[tokio::test]
async fn behind_nginx_urls_name_the_proxy_and_lockout_is_per_client() {
    let certs = scratch_dir("airdock-proxy-certs-");
    proxy_certs(certs.path());
    let dir = scratch_dir("airdock-proxy-");
    let hp = htpasswd(dir.path(), &[("alice", "alice-pw")]);
    let cfg = dir.path().join("airdock.yaml");
    std::fs::write(
        &cfg,
        format!(
            "trusted_proxies: [127.0.0.1]\nauth:\n  htpasswd: {}\n  max_failures: 3\n  \
admins: [alice]\n",
            hp.display()
        ),
    )
    .expect("write config");
    let s = Server::start_with_args(&["--config", cfg.to_str().expect("utf-8")]);
    let (cert, key) = (certs.path().join("tls.crt"), certs.path().join("tls.key"));
    let tls = Tls {
        cert: &cert,
        key: &key,
    };
    let nginx = Nginx::start(&[s.addr()], Some(tls));
    let ca = certs.path().join("ca.crt");
    let (a, b) = (
        proxy_client(&nginx, &ca, "127.0.0.2"),
        proxy_client(&nginx, &ca, "127.0.0.3"),
    );
    let base = base(&nginx);
    let alice = basic("alice", "alice-pw");

    // The challenge sends clients to the proxy's https token endpoint.
    let r = a
        .get(format!("{base}/v2/"))
        .send()
        .await
        .expect("via nginx");
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let ch = r.headers()["www-authenticate"].to_str().expect("ascii");
    assert_eq!(
        ch,
        format!("Bearer realm=\"{base}/token\",service=\"airdock\"")
    );
    let token = format!("{base}/token?service=airdock&scope=repository:team/app:pull,push");
    let r = send(a.get(token), &alice).await;
    assert_eq!(r.status(), StatusCode::OK);
    let v: serde_json::Value = r.json().await.expect("token JSON");
    let bearer = format!("Bearer {}", v["token"].as_str().expect("token"));

    // Location headers point at the proxy, and following them works.
    let r = send(
        a.post(format!("{base}/v2/team/app/blobs/uploads/")),
        &bearer,
    )
    .await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let loc = r.headers()["location"].to_str().expect("ascii").to_owned();
    assert!(
        loc.starts_with(&format!("{base}/v2/team/app/blobs/uploads/")),
        "{loc}"
    );
    let body = b"behind the proxy".to_vec();
    let d = sha256(&body);
    let r = send(a.put(format!("{loc}?digest={d}")).body(body), &bearer).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(
        r.headers()["location"],
        format!("{base}/v2/team/app/blobs/{d}").as_str()
    );

    // Link too (a second repository makes the catalog two pages long).
    let lib = a.post(format!("{base}/v2/team/lib/blobs/uploads/?digest={d}"));
    let r = send(lib.body(b"behind the proxy".to_vec()), &alice).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let r = send(a.get(format!("{base}/v2/_catalog?n=1")), &alice).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        r.headers()["link"],
        format!("<{base}/v2/_catalog?n=1&last=team%2Fapp>; rel=\"next\"").as_str()
    );

    // An import's relocated images.yml names the proxy too.
    let tar = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/imgpkg/tars/guestbook-bundle.tar"
    ))
    .expect("fixture tar");
    let import = a.post(format!("{base}/admin/v1/import?repository=team/bundle"));
    let r = send(import.body(tar), &alice).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let report: serde_json::Value = r.json().await.expect("report");
    let yml = report["images_yml"].as_str().expect("images_yml");
    let proxied = format!("{PROXY_HOST}:{}/team/bundle@sha256:", nginx.port);
    assert!(yml.contains(&proxied), "{yml}");

    // Client A guesses until locked out; claiming another address does not get it out.
    for _ in 0..3 {
        let r = send(a.get(format!("{base}/v2/")), &basic("alice", "guess")).await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    }
    let spoofed = a
        .get(format!("{base}/v2/"))
        .header("x-forwarded-for", "10.9.9.9");
    let r = send(spoofed, &alice).await;
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    // Client B, behind the same proxy, is not locked out.
    let r = send(b.get(format!("{base}/v2/")), &alice).await;
    assert_eq!(
        r.status(),
        StatusCode::OK,
        "one client's failures locked out another"
    );
    // The log names the client, not the proxy.
    let logs = s.logs();
    assert!(
        logs.lines()
            .any(|l| l.contains("failed login") && l.contains("127.0.0.2")),
        "{logs}"
    );
}

#[tokio::test]
async fn untrusted_peer_forwarded_headers_are_ignored() {
    let dir = scratch_dir("airdock-noproxy-");
    let hp = htpasswd(dir.path(), &[("alice", "alice-pw")]);
    let s = Server::start_with_args(&[
        "--htpasswd",
        hp.to_str().expect("utf-8"),
        "--trusted-proxies",
        "10.0.0.0/8,192.0.2.1",
        "--max-failures",
        "2",
    ]);
    let c = client();
    let spoof = |rb: reqwest::RequestBuilder, n: u8| {
        rb.header("x-forwarded-proto", "https")
            .header("x-forwarded-host", "evil.example")
            .header("x-forwarded-for", format!("10.1.1.{n}"))
            .header(
                "forwarded",
                format!("for=10.2.2.{n};proto=https;host=evil.example"),
            )
    };
    let r = spoof(c.get(s.url("/v2/")), 1).send().await.expect("get");
    let ch = r.headers()["www-authenticate"].to_str().expect("ascii");
    assert_eq!(
        ch,
        format!(
            "Bearer realm=\"http://{}/token\",service=\"airdock\"",
            s.host()
        )
    );
    let r = spoof(c.post(s.url("/v2/team/app/blobs/uploads/")), 1)
        .header("authorization", basic("alice", "alice-pw"))
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let loc = r.headers()["location"].to_str().expect("ascii");
    assert!(loc.starts_with("/v2/team/app/blobs/uploads/"), "{loc}");
    // Each failure claims a new address; all count against the real peer.
    for n in 1..=2 {
        let r = spoof(c.get(s.url("/v2/")), n)
            .header("authorization", basic("alice", "guess"))
            .send()
            .await
            .expect("guess");
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    }
    let r = spoof(c.get(s.url("/v2/")), 3)
        .header("authorization", basic("alice", "alice-pw"))
        .send()
        .await
        .expect("locked");
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
}
