//! `/livez`, `/readyz` and `airdock health`: in-process through `app(state)`, and the
//! command against a real server.

use airdock::config::AuthConfig;
use airdock::storage::Store;
use airdock::{app, AppState};
use axum::body::Body;
use axum::http::{Request, StatusCode};
use tower::ServiceExt;

use crate::support::Server;

/// A state with authentication on (htpasswd with one user), as labs run it.
async fn state_with_auth(dir: &std::path::Path, min_free_mib: u64) -> AppState {
    let store = Store::open(dir.join("data")).await.expect("open store");
    let htpasswd = dir.join("htpasswd");
    airdock::auth::htpasswd::add_user(&htpasswd, "alice", "wonderland", 4).expect("user");
    let cfg = AuthConfig {
        htpasswd: Some(htpasswd),
        ..AuthConfig::default()
    };
    let mut state = AppState::new(store, false);
    state.auth = airdock::auth::Auth::new(&cfg, Vec::new(), &dir.join("data")).expect("auth");
    state.readiness = airdock::health::Readiness::new(state.store.clone(), min_free_mib);
    state
}

async fn call(state: &AppState, path: &str) -> (StatusCode, serde_json::Value) {
    let resp = app(state.clone())
        .oneshot(Request::get(path).body(Body::empty()).expect("request"))
        .await
        .expect("infallible");
    let status = resp.status();
    let body = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .await
        .expect("body");
    (status, serde_json::from_slice(&body).unwrap_or_default())
}

#[tokio::test]
async fn probes_answer_without_credentials_when_auth_is_on() {
    let dir = tempfile::tempdir().expect("tempdir");
    let state = state_with_auth(dir.path(), 1).await;
    assert!(state.auth.is_some());
    // The registry itself asks for a login …
    let (status, _) = call(&state, "/v2/").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // … the probes do not.
    let (status, body) = call(&state, "/livez").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = call(&state, "/readyz").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["ready"], true);
    assert!(body["free_bytes"].as_u64().is_some_and(|b| b > 0), "{body}");
}

#[tokio::test]
async fn readyz_is_503_with_the_reason_when_free_space_is_below_the_floor() {
    let dir = tempfile::tempdir().expect("tempdir");
    // A floor no disk here meets: 1 EiB.
    let state = state_with_auth(dir.path(), 1 << 40).await;
    let (status, body) = call(&state, "/readyz").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["ready"], false);
    let reasons = body["reasons"].to_string();
    assert!(reasons.contains("min_free_mib"), "{body}");
    // Liveness does not depend on the disk: a full disk must not get the pod restarted.
    let (status, _) = call(&state, "/livez").await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn readyz_is_503_when_the_store_cannot_write() {
    let dir = tempfile::tempdir().expect("tempdir");
    let state = state_with_auth(dir.path(), 1).await;
    // tmp/ replaced by a file: no probe file can be created there (root ignores modes,
    // so permissions would not do).
    let tmp = dir.path().join("data/tmp");
    std::fs::remove_dir_all(&tmp).expect("rm tmp");
    std::fs::write(&tmp, b"not a directory").expect("block tmp");
    let (status, body) = call(&state, "/readyz").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(
        body["reasons"].to_string().contains("cannot write"),
        "{body}"
    );
}

#[tokio::test]
async fn readyz_looks_at_the_disk_at_most_once_a_second() {
    let dir = tempfile::tempdir().expect("tempdir");
    let state = state_with_auth(dir.path(), 1).await;
    let (status, _) = call(&state, "/readyz").await;
    assert_eq!(status, StatusCode::OK);
    // Broken right after a look: the cached verdict stands for up to a second …
    let tmp = dir.path().join("data/tmp");
    std::fs::remove_dir_all(&tmp).expect("rm tmp");
    std::fs::write(&tmp, b"x").expect("block tmp");
    let (status, _) = call(&state, "/readyz").await;
    assert_eq!(status, StatusCode::OK, "answered from the last look");
    // … and not longer.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let (status, _) = call(&state, "/readyz").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
}

fn airdock_health(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_airdock"))
        .arg("health")
        .args(args)
        .env_remove("AIRDOCK_ADDR")
        .env_remove("AIRDOCK_TLS_CERT")
        .env_remove("AIRDOCK_HEALTH_URL")
        .output()
        .expect("run airdock health")
}

#[test]
fn health_command_exits_0_when_ready_and_1_when_not() {
    let server = Server::start_with_args(&["--min-free-mib", "1"]);
    let out = airdock_health(&["--url", &server.url("/readyz")]);
    assert!(out.status.success(), "{out:?}");
    // `--addr` alone: the probe goes to /readyz on that port.
    let out = airdock_health(&["--addr", &server.addr().to_string()]);
    assert!(out.status.success(), "{out:?}");

    let unready = Server::start_with_args(&["--min-free-mib", "1099511627776"]);
    let out = airdock_health(&["--url", &unready.url("/readyz")]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("503") && err.contains("min_free_mib"), "{err}");

    // Nothing listening: 1, quickly, with the reason.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let out = airdock_health(&["--url", &format!("http://localhost:{port}/readyz")]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("connecting"));
}

/// `airdock serve --addr ADDR` on a temp data dir, stopped (by its PID) on drop. The
/// shared `Server` helper always passes an `IP:PORT`; this one exercises the other forms.
struct Listening {
    child: std::process::Child,
    addr: std::net::SocketAddr,
    _dir: tempfile::TempDir,
}

impl Listening {
    fn start(addr: &str) -> Listening {
        use std::io::BufRead;
        let dir = tempfile::tempdir().expect("tempdir");
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_airdock"))
            .args(["serve", "--addr", addr, "--min-free-mib", "1", "--data-dir"])
            .arg(dir.path())
            .env_remove("AIRDOCK_ADDR")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start airdock");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = std::io::BufReader::new(stdout).lines();
        let line = loop {
            match lines.next() {
                Some(Ok(l)) if l.starts_with("listening on ") => break l,
                Some(Ok(_)) => continue,
                other => {
                    let _ = child.kill();
                    panic!("airdock serve --addr {addr} printed no address: {other:?}");
                }
            }
        };
        // Keep draining so the server never blocks on a full pipe.
        std::thread::spawn(move || lines.for_each(drop));
        let addr = line["listening on ".len()..].parse().expect("address");
        Listening {
            child,
            addr,
            _dir: dir,
        }
    }
}

impl Drop for Listening {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn addr_takes_localhost_and_a_bare_port() {
    // `localhost:PORT`: the loopback, resolved without asking any resolver.
    let s = Listening::start("localhost:0");
    assert_eq!(s.addr.ip(), std::net::Ipv4Addr::LOCALHOST, "{}", s.addr);
    let out = airdock_health(&["--addr", &format!("localhost:{}", s.addr.port())]);
    assert!(out.status.success(), "{out:?}");

    // `:PORT`: every interface, so both loopbacks answer (IPv6 where the host has it).
    let s = Listening::start(":0");
    assert!(s.addr.ip().is_unspecified(), "{}", s.addr);
    let port = s.addr.port();
    let out = airdock_health(&["--addr", &format!(":{port}")]);
    assert!(out.status.success(), "{out:?}");
    let out = airdock_health(&["--url", &format!("http://127.0.0.1:{port}/livez")]);
    assert!(out.status.success(), "{out:?}");
    if s.addr.is_ipv6() {
        let out = airdock_health(&["--url", &format!("http://[::1]:{port}/livez")]);
        assert!(out.status.success(), "{out:?}");
    }

    // Anything else: a clear refusal before binding.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_airdock"))
        .args(["serve", "--addr", "registry.lab:5000"])
        .env_remove("AIRDOCK_ADDR")
        .output()
        .expect("run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("registry.lab") && err.contains("not resolved"),
        "{err}"
    );
}
