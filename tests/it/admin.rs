//! The admin API's credentials over real sockets: the admin token read from a file and
//! rotated by writing a new one (no restart), under both the default file and
//! `--admin-token-file`.

use std::time::Duration;

use reqwest::{Method, StatusCode};

use crate::support::{client, scratch_dir, send_bearer, Server};

/// Write `token` into `path` as an operator would (replace the file, new content).
fn write_token(path: &std::path::Path, token: &str) {
    let tmp = path.with_extension("new");
    std::fs::write(&tmp, format!("{token}\n")).expect("write token");
    std::fs::rename(&tmp, path).expect("replace token");
}

async fn imports_status(c: &reqwest::Client, s: &Server, token: &str) -> StatusCode {
    send_bearer(c, s, Method::GET, "/admin/v1/imports", token)
        .await
        .status()
}

/// Start with the token in `file`, rotate it, and expect the new one to open the API and
/// the old one to be refused within 2 s.
async fn rotation_takes_effect_without_restart(s: &Server, file: &std::path::Path) {
    let c = client(Duration::from_secs(30));
    assert_eq!(imports_status(&c, s, "first-token").await, StatusCode::OK);
    write_token(file, "second-token");
    tokio::time::sleep(Duration::from_millis(2000)).await;
    assert_eq!(
        imports_status(&c, s, "second-token").await,
        StatusCode::OK,
        "the new token opens the admin API"
    );
    assert_eq!(
        imports_status(&c, s, "first-token").await,
        StatusCode::UNAUTHORIZED,
        "the old token is refused"
    );
    // A token file that is gone revokes every token (fail closed) rather than keeping
    // the last one.
    std::fs::remove_file(file).expect("remove token");
    tokio::time::sleep(Duration::from_millis(2000)).await;
    assert_eq!(
        imports_status(&c, s, "second-token").await,
        StatusCode::UNAUTHORIZED
    );
    let logs = s.logs();
    assert!(logs.contains("admin token changed"), "{logs}");
}

#[tokio::test]
async fn admin_token_rotation_in_the_data_dir_needs_no_restart() {
    let data = scratch_dir("airdock-admin-");
    let file = data.path().join("admin-token");
    write_token(&file, "first-token");
    let s = Server::start_in(data, &[]);
    rotation_takes_effect_without_restart(&s, &file).await;
}

#[tokio::test]
async fn admin_token_rotation_with_admin_token_file_needs_no_restart() {
    let secrets = scratch_dir("airdock-admin-secrets-");
    let file = secrets.path().join("token");
    write_token(&file, "first-token");
    let s = Server::start_with_args(&["--admin-token-file", file.to_str().expect("utf-8")]);
    rotation_takes_effect_without_restart(&s, &file).await;
    // The data dir got no token of its own: the file named is the one in force.
    assert!(!s.data_dir().join("admin-token").exists());
}
