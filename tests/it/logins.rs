//! Issue 10, defects 7, 8, 13 and the admin part of 16, over real sockets: htpasswd changes
//! and breakage take effect within two seconds (no 60 s cache), rules without a user file
//! refuse to start, expired tokens and cached logins do not feed the lockout, and admins
//! may read every repository.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use airdock::auth::token::{claims, TokenKey};
use reqwest::StatusCode;
use serde_json::Value;

use crate::security::{airdock, basic, client, expect_code, htpasswd};
use crate::support::{scratch_dir, Server, AIRDOCK_BIN};

/// How soon a change to the htpasswd file must be in force (the bound).
const RELOAD_BOUND: Duration = Duration::from_secs(2);

/// A server with `users` in its htpasswd file and `yaml` appended to its `auth:` section.
fn server(dir: &Path, users: &[(&str, &str)], auth_yaml: &str, rest: &str) -> Server {
    let hp = htpasswd(dir, users);
    let cfg = dir.join("airdock.yaml");
    std::fs::write(
        &cfg,
        format!("auth:\n  htpasswd: {}\n{auth_yaml}{rest}", hp.display()),
    )
    .expect("write config");
    Server::start_with_args(&["--config", cfg.to_str().expect("utf-8")])
}

/// A server whose only user is alice (`alice-pw`), locking out after `max_failures`.
fn alice_only(dir: &Path, max_failures: u32) -> Server {
    let auth = format!("  max_failures: {max_failures}\n");
    server(dir, &[("alice", "alice-pw")], &auth, "")
}

async fn get(c: &reqwest::Client, s: &Server, path: &str, auth: &str) -> reqwest::Response {
    c.get(s.url(path))
        .header("authorization", auth)
        .send()
        .await
        .expect("request")
}

async fn status(c: &reqwest::Client, s: &Server, path: &str, auth: &str) -> StatusCode {
    get(c, s, path, auth).await.status()
}

/// `took` (from [`time_until`]) is within the bound.
fn assert_in_time(took: Option<Duration>, what: &str) {
    assert!(
        took.is_some_and(|t| t <= RELOAD_BOUND),
        "{what} (after {took:?})"
    );
}

/// `Authorization: Bearer` with `claims` signed by `key`.
fn bearer(key: &TokenKey, claims: &airdock::auth::token::Claims) -> String {
    format!("Bearer {}", key.sign(claims))
}

/// Poll `GET /v2/` with `auth` until it answers `want`; when the first request so answered
/// was sent (its own time is not counted: refusing an unknown user costs a cost-10 bcrypt,
/// seconds in a debug build on a busy machine).
async fn time_until(
    c: &reqwest::Client,
    s: &Server,
    auth: &str,
    want: StatusCode,
) -> Option<Duration> {
    let start = Instant::now();
    // Poll a little past the bound so that a miss reports how late it was.
    while start.elapsed() < RELOAD_BOUND + Duration::from_secs(2) {
        let sent = start.elapsed();
        if status(c, s, "/v2/", auth).await == want {
            return Some(sent);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    None
}

#[tokio::test]
async fn htpasswd_change_revokes_cached_login_within_two_seconds() {
    let dir = scratch_dir("airdock-revoke-");
    let s = server(
        dir.path(),
        &[("alice", "old-pw"), ("bob", "bob-pw")],
        "",
        "",
    );
    let c = client();
    let (alice, bob) = (basic("alice", "old-pw"), basic("bob", "bob-pw"));
    // Both logins are now in the verified-password cache.
    assert_eq!(status(&c, &s, "/v2/", &alice).await, StatusCode::OK);
    assert_eq!(status(&c, &s, "/v2/", &bob).await, StatusCode::OK);

    // A new password for alice: the old one stops working.
    htpasswd(dir.path(), &[("alice", "new-pw")]);
    let took = time_until(&c, &s, &alice, StatusCode::UNAUTHORIZED).await;
    assert_in_time(took, "old password still accepted");
    assert_eq!(
        status(&c, &s, "/v2/", &basic("alice", "new-pw")).await,
        StatusCode::OK
    );
    assert_eq!(status(&c, &s, "/v2/", &bob).await, StatusCode::OK);

    // bob's entry removed: his cached login goes too.
    let hp = dir.path().join("htpasswd");
    let text = std::fs::read_to_string(&hp).expect("read");
    let kept: String = text
        .lines()
        .filter(|l| !l.starts_with("bob:"))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&hp, kept).expect("rewrite");
    let took = time_until(&c, &s, &bob, StatusCode::UNAUTHORIZED).await;
    assert_in_time(took, "removed user still accepted");
}

#[tokio::test]
async fn broken_htpasswd_refuses_logins_until_fixed() {
    let dir = scratch_dir("airdock-broken-");
    // A low lockout threshold: refusals while the file is broken must not count.
    let s = alice_only(dir.path(), 2);
    let c = client();
    let alice = basic("alice", "alice-pw");
    assert_eq!(status(&c, &s, "/v2/", &alice).await, StatusCode::OK);

    let hp = dir.path().join("htpasswd");
    let good = std::fs::read_to_string(&hp).expect("read");
    std::fs::write(&hp, format!("{good}carol:$apr1$weak$hash\n")).expect("break");
    let took = time_until(&c, &s, &alice, StatusCode::UNAUTHORIZED).await;
    assert_in_time(took, "an invalid file kept the old users");
    let r = get(&c, &s, "/v2/", &alice).await;
    let body = r.text().await.expect("body");
    assert!(body.contains("user file"), "{body}");
    for _ in 0..4 {
        assert_eq!(
            status(&c, &s, "/v2/", &alice).await,
            StatusCode::UNAUTHORIZED
        );
    }
    assert!(
        s.logs().contains("every login is refused"),
        "no error logged:\n{}",
        s.logs()
    );

    // Unreadable (gone) is the same; a valid file again lets alice in, not locked out.
    std::fs::remove_file(&hp).expect("remove");
    tokio::time::sleep(RELOAD_BOUND).await;
    assert_eq!(
        status(&c, &s, "/v2/", &alice).await,
        StatusCode::UNAUTHORIZED
    );
    std::fs::write(&hp, &good).expect("fix");
    let took = time_until(&c, &s, &alice, StatusCode::OK).await;
    assert_in_time(took, "fixed file not picked up");
}

#[test]
fn rules_or_admins_without_htpasswd_refuse_to_start() {
    let dir = scratch_dir("airdock-open-");
    for (name, yaml) in [
        (
            "rules.yaml",
            "access:\n  - repos: [\"team/*\"]\n    users: [alice]\n    allow: [pull, push]\n",
        ),
        ("admins.yaml", "auth:\n  admins: [root]\n"),
    ] {
        let cfg = dir.path().join(name);
        std::fs::write(&cfg, yaml).expect("write");
        let cfg = cfg.to_str().expect("utf-8");
        let (ok, out, err) = airdock(&["config", "check", cfg], "");
        assert!(!ok, "config check passed {name}: {out}");
        assert!(err.contains("auth.htpasswd"), "{err}");

        let data = scratch_dir("airdock-open-data-");
        let mut child = Command::new(AIRDOCK_BIN)
            .args([
                "serve",
                "--addr",
                "127.0.0.1:0",
                "--config",
                cfg,
                "--data-dir",
            ])
            .arg(data.path())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn airdock");
        let deadline = Instant::now() + Duration::from_secs(10);
        let exit = loop {
            if let Some(st) = child.try_wait().expect("wait") {
                break Some(st);
            }
            if Instant::now() > deadline {
                break None;
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let Some(exit) = exit else {
            let _ = child.kill();
            let _ = child.wait();
            panic!("airdock serve started with {name} and no htpasswd: anyone could push");
        };
        assert!(!exit.success(), "{name}");
        let mut err = String::new();
        std::io::Read::read_to_string(&mut child.stderr.take().expect("stderr"), &mut err)
            .expect("read stderr");
        assert!(err.contains("auth.htpasswd"), "{err}");
    }
}

#[test]
fn config_check_warns_about_users_missing_from_htpasswd() {
    let dir = scratch_dir("airdock-cfg-users-");
    let hp = htpasswd(dir.path(), &[("alice", "pw")]);
    let cfg = dir.path().join("airdock.yaml");
    std::fs::write(
        &cfg,
        format!(
            "auth:\n  htpasswd: {}\n  admins: [root]\naccess:\n  - repos: [\"team/*\"]\n    \
users: [alice, bobby, \"*\", anonymous]\n    allow: [pull]\n",
            hp.display()
        ),
    )
    .expect("write");
    let (ok, out, err) = airdock(&["config", "check", cfg.to_str().expect("utf-8")], "");
    assert!(ok, "a missing user is a warning, not an error: {out}{err}");
    assert!(err.contains("warning") && err.contains("`bobby`"), "{err}");
    assert!(err.contains("`root`"), "{err}");
    assert!(
        !err.contains("`alice`") && !err.contains("`anonymous`"),
        "{err}"
    );
}

#[tokio::test]
async fn expired_and_foreign_tokens_do_not_lock_out() {
    let dir = scratch_dir("airdock-tokens-");
    let s = alice_only(dir.path(), 3);
    let c = client();
    let key = TokenKey::load_or_create(&s.data_dir().join("token.key")).expect("key");
    let alice = || claims("alice", "airdock", 60, Vec::new());
    let mut old = alice();
    old.exp = old.iat - 1;
    let expired = bearer(&key, &old);
    let foreign = bearer(&TokenKey::random().expect("key"), &alice());
    for _ in 0..5 {
        for bad in [&expired, &foreign] {
            let r = get(&c, &s, "/v2/", bad).await;
            let ch = expect_code(r, StatusCode::UNAUTHORIZED, "UNAUTHORIZED")
                .await
                .expect("challenge");
            assert!(
                ch.contains("realm=\"http://") && ch.contains("error=\"invalid_token\""),
                "{ch}"
            );
        }
    }
    // Ten refused tokens later, the address is not locked out.
    assert_eq!(
        status(&c, &s, "/v2/", &basic("alice", "alice-pw")).await,
        StatusCode::OK
    );
    let fresh = bearer(&key, &alice());
    assert_eq!(status(&c, &s, "/v2/", &fresh).await, StatusCode::OK);
}

#[tokio::test]
async fn cached_login_resets_the_failure_count() {
    let dir = scratch_dir("airdock-reset-");
    let s = alice_only(dir.path(), 3);
    let c = client();
    let (wrong, right) = (basic("alice", "guess"), basic("alice", "alice-pw"));
    // The first success is checked by bcrypt, the later ones come from the cache: each must
    // clear the count, so two failures between successes never reach three.
    for round in 0..3 {
        for _ in 0..2 {
            assert_eq!(
                status(&c, &s, "/v2/", &wrong).await,
                StatusCode::UNAUTHORIZED,
                "round {round}"
            );
        }
        assert_eq!(
            status(&c, &s, "/v2/", &right).await,
            StatusCode::OK,
            "round {round}"
        );
    }
}

#[tokio::test]
async fn admin_lists_and_pulls_every_repository() {
    let dir = scratch_dir("airdock-admin-read-");
    // No rule names root at all, nor the repository it imports.
    let s = server(
        dir.path(),
        &[("root", "root-pw"), ("alice", "alice-pw")],
        "  admins: [root]\n",
        "access:\n  - repos: [\"team/*\"]\n    users: [alice]\n    allow: [pull, push]\n",
    );
    let c = client();
    let root = basic("root", "root-pw");
    let tar = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/imgpkg/tars/guestbook-bundle.tar"
    ))
    .expect("fixture tar");
    let r = c
        .post(s.url("/admin/v1/import?repository=imported/guestbook"))
        .header("authorization", &root)
        .body(tar)
        .send()
        .await
        .expect("import");
    assert_eq!(r.status(), StatusCode::CREATED, "admin user's import");
    let report: Value = r.json().await.expect("report");
    let digest = report["images"][0]["digest"]
        .as_str()
        .map(str::to_owned)
        .unwrap_or_else(|| panic!("an image digest in {report}"));

    let r = get(&c, &s, "/v2/_catalog", &root).await;
    assert_eq!(r.status(), StatusCode::OK);
    let v: Value = r.json().await.expect("catalog");
    assert_eq!(
        v["repositories"],
        serde_json::json!(["imported/guestbook"]),
        "the admin lists what it imported"
    );
    let manifest = format!("/v2/imported/guestbook/manifests/{digest}");
    assert_eq!(status(&c, &s, &manifest, &root).await, StatusCode::OK);
    // Through the token flow too; and reading is all: no push.
    let token = "/token?service=airdock&scope=repository:imported/guestbook:pull,push";
    let v: Value = get(&c, &s, token, &root).await.json().await.expect("token");
    let root_token = format!("Bearer {}", v["token"].as_str().expect("token"));
    assert_eq!(status(&c, &s, &manifest, &root_token).await, StatusCode::OK);
    let r = c
        .post(s.url("/v2/imported/guestbook/blobs/uploads/"))
        .header("authorization", &root)
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), StatusCode::FORBIDDEN, "admins read, not write");
    // alice still sees nothing of it.
    assert_eq!(
        status(&c, &s, &manifest, &basic("alice", "alice-pw")).await,
        StatusCode::FORBIDDEN
    );
}
