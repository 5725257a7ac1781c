//! Issue 15, dry run: `POST /admin/v1/import?dry_run=true` and `airdock import --dry-run`
//! answer the report the import would give and leave the data dir (journal included)
//! byte-identical; a hostile tar is refused exactly as a real import refuses it.

use std::process::Command;

use reqwest::{Client, StatusCode};
use serde_json::Value;

use crate::fixture::fixture_tar;
use crate::imgpkg::{import_ok, server, tag_map, TOKEN};
use crate::support::{scratch_dir, AIRDOCK_BIN};

async fn post(s: &crate::support::Server, query: &str, body: Vec<u8>) -> (StatusCode, Value) {
    let r = Client::new()
        .post(s.url(&format!("/admin/v1/import?{query}")))
        .bearer_auth(TOKEN)
        .body(body)
        .send()
        .await
        .expect("post");
    let status = r.status();
    (status, r.json().await.expect("json"))
}

fn journal(dir: &std::path::Path) -> Vec<u8> {
    std::fs::read(dir.join("meta/journal")).expect("journal")
}

#[tokio::test]
async fn dry_run_over_http_changes_nothing_and_predicts_the_import() {
    let s = server();
    import_ok(&s, "lab/p", fixture_tar("guestbook-bundle")).await;
    let before = (journal(s.data_dir()), tag_map(&s, "lab/p").await);
    let (status, report) = post(
        &s,
        "repository=lab/p&dry_run=true",
        fixture_tar("platform-bundle"),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_eq!((journal(s.data_dir()), tag_map(&s, "lab/p").await), before);
    let dry = &report["dry_run"];
    assert_eq!(dry["would_import"], true);
    let tags = dry["tags"].as_array().expect("tags");
    let one = tags.iter().find(|t| t["tag"] == "1.0").expect("1.0");
    assert_eq!(one["change"], "move");
    assert_eq!(one["from"], before.1["1.0"].as_str());

    // Hostile: the same refusal, and still nothing changed.
    let mut bad = fixture_tar("platform-bundle");
    let n = bad.len();
    bad[n - 1024 - 300] ^= 0x55;
    let dry = post(&s, "repository=lab/p&dry_run=true", bad.clone()).await;
    assert_eq!((journal(s.data_dir()), tag_map(&s, "lab/p").await), before);
    let real = post(&s, "repository=lab/p", bad).await;
    assert!(real.0.is_client_error(), "{:?}", real);
    assert_eq!(dry, real);

    // The real import then sets what the dry run said.
    let (status, _) = post(&s, "repository=lab/p", fixture_tar("platform-bundle")).await;
    assert_eq!(status, StatusCode::CREATED);
    let now = tag_map(&s, "lab/p").await;
    for t in tags {
        assert_eq!(
            now[t["tag"].as_str().expect("tag")],
            t["digest"].as_str().expect("d")
        );
    }
}

#[test]
fn cli_dry_run_on_a_data_dir_writes_nothing() {
    let data = scratch_dir("airdock-dry-cli-");
    let tar = crate::fixture::fixtures().join("tars/guestbook-bundle.tar");
    let run = |extra: &[&str]| {
        Command::new(AIRDOCK_BIN)
            .arg("import")
            .arg(&tar)
            .args(["-r", "lab/g", "--data-dir"])
            .arg(data.path())
            .args(extra)
            .output()
            .expect("airdock import")
    };
    let out = run(&[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let before = journal(data.path());
    let out = run(&["--dry-run", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(report["dry_run"]["would_import"], true);
    assert!(report["dry_run"]["tags"]
        .as_array()
        .expect("tags")
        .iter()
        .all(|t| t["change"] == "unchanged"));
    assert_eq!(report["blobs"]["new"], 0);
    assert_eq!(journal(data.path()), before);
    let out = run(&["--dry-run"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("dry run: nothing was changed"), "{text}");
}
