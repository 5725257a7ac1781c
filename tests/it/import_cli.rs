//! Issue 10, defect 10: `airdock import --server https://…` in the README's TLS lab (a CA
//! from `airdock cert init`, a server with --tls-cert/--tls-key and an admin token): trusted
//! with `--ca-cert`, refused with a certificate error without it.

use std::process::{Command, Output};
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;

use crate::fixture::fixtures;
use crate::imgpkg::TOKEN;
use crate::security::{lab_ca, tls_server};
use crate::support::{scratch_dir, AIRDOCK_BIN};

/// `airdock import <guestbook fixture> -r REPO --server URL --token-file … <extra>`.
fn import(server: &str, repo: &str, token_file: &std::path::Path, extra: &[&str]) -> Output {
    Command::new(AIRDOCK_BIN)
        .arg("import")
        .arg(fixtures().join("tars/guestbook-bundle.tar"))
        .args(["-r", repo, "--server", server, "--token-file"])
        .arg(token_file)
        .args(extra)
        .env_remove("AIRDOCK_CA_CERT")
        .output()
        .expect("run airdock import")
}

#[tokio::test]
async fn cli_imports_over_https_with_the_lab_ca() {
    let certs = scratch_dir("airdock-certs-");
    let ca = lab_ca(certs.path());
    let s = tls_server(certs.path(), &["--admin-token", TOKEN]);
    let scratch = scratch_dir("airdock-import-https-");
    let token_file = scratch.path().join("token");
    std::fs::write(&token_file, TOKEN).expect("token file");
    let port = s.addr().port();

    // Trusted through --ca-cert, by IP address and by name (the lab certificate has both).
    for (host, repo) in [("127.0.0.1", "lab/by-ip"), ("localhost", "lab/by-name")] {
        let url = format!("https://{host}:{port}");
        let out = import(&url, repo, &token_file, &["--ca-cert", &ca, "--json"]);
        assert!(
            out.status.success(),
            "{url}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let report: Value = serde_json::from_slice(&out.stdout).expect("JSON report");
        assert_eq!(report["repository"], repo);
    }

    // The tags are there, read over TLS.
    let pem = std::fs::read(&ca).expect("ca");
    let c = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&pem).expect("pem"))
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client");
    let r = c
        .get(format!("https://localhost:{port}/v2/lab/by-ip/tags/list"))
        .send()
        .await
        .expect("tags");
    assert_eq!(r.status(), StatusCode::OK);
    let tags: Value = r.json().await.expect("json");
    assert!(
        tags["tags"]
            .as_array()
            .expect("tags")
            .iter()
            .any(|t| t == "1.0"),
        "{tags}"
    );

    // Without the CA: a certificate error that says what to do, and nothing imported.
    let out = import(
        &format!("https://127.0.0.1:{port}"),
        "lab/untrusted",
        &token_file,
        &[],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("invalid peer certificate") && err.contains("--ca-cert"),
        "{err}"
    );
    let r = c
        .get(format!(
            "https://localhost:{port}/v2/lab/untrusted/tags/list"
        ))
        .send()
        .await
        .expect("tags");
    assert_eq!(r.status(), StatusCode::NOT_FOUND);

    // A --ca-cert that is not a certificate is named.
    let junk = scratch.path().join("junk.pem");
    std::fs::write(&junk, "not a certificate\n").expect("junk");
    let out = import(
        &format!("https://127.0.0.1:{port}"),
        "lab/junk",
        &token_file,
        &["--ca-cert", junk.to_str().expect("utf-8")],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("junk.pem"), "{err}");
}
