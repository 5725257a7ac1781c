//! The administrator's commands against real files and servers: `config check` reporting
//! every error, and `airdock user add|del|passwd|list` over the htpasswd file a running
//! server uses.

use crate::security::airdock;
use crate::support::scratch_dir;

#[test]
fn config_check_reports_every_error_with_its_key_and_line() {
    let dir = scratch_dir("airdock-cfg-all-");
    let cfg = dir.path().join("airdock.yaml");
    std::fs::write(
        &cfg,
        "addr: registry.lab:5000\n\
         limits:\n  max_header_bytes: 64k\n\
         gc:\n  grace: 1h\n  intervall: 6h\n",
    )
    .expect("write");
    let (ok, out, err) = airdock(&["config", "check", cfg.to_str().expect("utf-8")], "");
    assert!(!ok, "{out}");
    for (key, line) in [
        ("addr", 1),
        ("limits.max_header_bytes", 3),
        ("gc.intervall", 6),
    ] {
        assert!(
            err.lines()
                .any(|l| l.contains(&format!("line {line}: {key}: "))),
            "{key} (line {line}) not reported:\n{err}"
        );
    }
    assert!(err.contains("3 error(s)"), "{err}");
}

/// `airdock user …` on the server's htpasswd file, with `--password-stdin`.
fn user(args: &[&str], htpasswd: &std::path::Path, password: &str) -> (bool, String, String) {
    let mut all = vec!["user"];
    all.extend_from_slice(args);
    let file = htpasswd.to_str().expect("utf-8");
    all.extend_from_slice(&["--htpasswd", file]);
    if !password.is_empty() {
        all.extend_from_slice(&["--password-stdin", "--cost", "4"]);
    }
    airdock(&all, &format!("{password}\n"))
}

/// The status `GET /token` answers for `user:password` (200 = logged in), as docker's login
/// asks it.
async fn login(s: &crate::support::Server, user: &str, password: &str) -> u16 {
    crate::security::client()
        .get(format!("{}/token?service=airdock", s.base_url()))
        .header("authorization", crate::security::basic(user, password))
        .send()
        .await
        .expect("token request")
        .status()
        .as_u16()
}

/// Ask until the answer is `want` (the server looks at the file every 500 ms).
async fn login_becomes(s: &crate::support::Server, user: &str, password: &str, want: u16) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let got = login(s, user, password).await;
        if got == want {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{user}: login answers {got}, not {want}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn user_commands_change_who_can_log_in_to_a_running_server() {
    let dir = scratch_dir("airdock-users-");
    let hp = dir.path().join("htpasswd");
    let (ok, out, err) = user(&["add", "alice"], &hp, "wonderland");
    assert!(ok && out.contains("added alice"), "{out}{err}");
    use std::os::unix::fs::PermissionsExt;
    let mode =
        |p: &std::path::Path| std::fs::metadata(p).expect("meta").permissions().mode() & 0o777;
    assert_eq!(mode(&hp), 0o600, "a new user file is owner-only");
    // The operator lets the server's group read it; rewrites keep that.
    std::fs::set_permissions(&hp, std::fs::Permissions::from_mode(0o640)).expect("chmod");
    let s = crate::support::Server::start_with_args(&[
        "--htpasswd",
        hp.to_str().expect("utf-8"),
        "--max-failures",
        "1000",
    ]);
    assert_eq!(login(&s, "alice", "wonderland").await, 200);

    // add: a new user can log in without a restart.
    let (ok, out, err) = user(&["add", "bob"], &hp, "builder");
    assert!(ok, "{out}{err}");
    login_becomes(&s, "bob", "builder", 200).await;

    // passwd: the new password works, the old one no longer does.
    let (ok, out, err) = user(&["passwd", "alice"], &hp, "looking-glass");
    assert!(ok && out.contains("changed"), "{out}{err}");
    login_becomes(&s, "alice", "looking-glass", 200).await;
    assert_eq!(login(&s, "alice", "wonderland").await, 401);
    let (ok, _, err) = user(&["passwd", "carol"], &hp, "x");
    assert!(!ok && err.contains("no user \"carol\""), "{err}");

    // del: gone.
    let (ok, out, err) = user(&["del", "bob"], &hp, "");
    assert!(ok && out.contains("removed bob"), "{out}{err}");
    login_becomes(&s, "bob", "builder", 401).await;
    let (ok, _, err) = user(&["del", "bob"], &hp, "");
    assert!(!ok && err.contains("no user"), "{err}");

    // list: names only, one a line.
    let (ok, out, err) = user(&["list"], &hp, "");
    assert!(ok, "{err}");
    assert_eq!(out, "alice\n");

    // Bad names are refused before anything is read or written.
    for bad in ["a:b", "anonymous", "two words"] {
        let (ok, _, err) = user(&["add", bad], &hp, "pw");
        assert!(!ok && err.contains("user name"), "{bad}: {err}");
    }
    let (ok, _, err) = user(&["add", "dave"], &hp, "");
    assert!(!ok && err.contains("empty password"), "{err}");

    // The rewrites kept the file's mode and left no temp file.
    assert_eq!(mode(&hp), 0o640);
    let entries = std::fs::read_dir(dir.path()).expect("ls").count();
    assert_eq!(entries, 1, "only the htpasswd file");
}
