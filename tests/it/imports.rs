//! Import records over HTTP: `GET /admin/v1/imports` lists what each import brought, and
//! `DELETE /admin/v1/imports/<id>` removes it without touching what a later import or push
//! relies on; GC then frees the bytes, and the records survive a restart.

use std::collections::BTreeMap;

use reqwest::{Client, Method, StatusCode};
use serde_json::Value;

use crate::fixture::fixture_tar;
use crate::images::fsck;
use crate::imgpkg::{assert_blobs_servable, get_manifest, import_ok, server, tag_map, TOKEN};
use crate::support::send_bearer;

async fn list(s: &crate::support::Server) -> Vec<Value> {
    let r = send_bearer(&Client::new(), s, Method::GET, "/admin/v1/imports", TOKEN).await;
    assert_eq!(r.status(), StatusCode::OK);
    let v: Value = r.json().await.expect("json");
    v["imports"].as_array().expect("array").clone()
}

async fn remove(s: &crate::support::Server, id: &str) -> (StatusCode, Value) {
    let r = send_bearer(
        &Client::new(),
        s,
        Method::DELETE,
        &format!("/admin/v1/imports/{id}"),
        TOKEN,
    )
    .await;
    let status = r.status();
    (status, r.json().await.unwrap_or(Value::Null))
}

fn expected_tags(name: &str) -> Vec<String> {
    let path = crate::fixture::fixtures().join(format!("expected/{name}/tags-list.json"));
    let v: Value = serde_json::from_slice(&std::fs::read(path).expect("read")).expect("json");
    v["tags"]
        .as_array()
        .expect("tags")
        .iter()
        .map(|t| t.as_str().expect("str").to_owned())
        .collect()
}

async fn assert_all_servable(s: &crate::support::Server, repo: &str) {
    for t in tag_map(s, repo).await.keys() {
        let (_, bytes) = get_manifest(s, repo, t).await;
        assert_blobs_servable(s, repo, t, &bytes).await;
    }
}

/// The platform bundle contains the guestbook bundle. Importing both, then removing the
/// platform import, must leave exactly the guestbook import's state: its shared
/// `.imgpkg` tags stay (the later import set them too), `1.0` stays (it was re-pointed).
#[tokio::test]
async fn removing_an_import_keeps_what_a_later_import_shares() {
    let mut s = server();
    let repo = "lab/bundles";
    let a = import_ok(&s, repo, fixture_tar("platform-bundle")).await;
    let b = import_ok(&s, repo, fixture_tar("guestbook-bundle")).await;
    let (a_id, b_id) = (
        a["import_id"].as_str().expect("id").to_owned(),
        b["import_id"].as_str().expect("id").to_owned(),
    );

    // Admin-only.
    let r = Client::new()
        .get(s.url("/admin/v1/imports"))
        .send()
        .await
        .expect("list");
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let r = send_bearer(
        &Client::new(),
        &s,
        Method::DELETE,
        &format!("/admin/v1/imports/{a_id}"),
        "wrong",
    )
    .await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);

    let records = list(&s).await;
    let ids: Vec<&str> = records.iter().filter_map(|r| r["id"].as_str()).collect();
    assert_eq!(ids, [a_id.as_str(), b_id.as_str()], "{records:?}");
    let a_rec = &records[0];
    assert_eq!(a_rec["repository"], repo);
    let tags_of = |rec: &Value| -> Vec<String> {
        let mut t: Vec<String> = rec["tags"]
            .as_array()
            .expect("tags")
            .iter()
            .filter_map(|t| t["tag"].as_str().map(str::to_owned))
            .collect();
        t.sort();
        t.dedup();
        t
    };
    // Every tag the import set (the locations image's own tag differs from the fixture's:
    // its yaml names the repository).
    assert_eq!(tags_of(a_rec).len(), expected_tags("platform-bundle").len());
    let b_tags = tags_of(&records[1]);
    assert_eq!(b_tags.len(), expected_tags("guestbook-bundle").len());
    assert_eq!(a_rec["manifests"].as_array().expect("m").len(), 8);

    // The records are journalled: they survive a restart.
    s.restart();
    assert_eq!(list(&s).await, records);

    let (status, removal) = remove(&s, &a_id).await;
    assert_eq!(status, StatusCode::OK, "{removal}");
    assert!(removal["tags_kept"]
        .as_array()
        .expect("kept")
        .contains(&Value::from("1.0")));
    assert_eq!(removal["tags_removed"].as_array().expect("r").len(), 4);
    let tags: Vec<String> = tag_map(&s, repo).await.into_keys().collect();
    assert_eq!(tags, b_tags);
    assert_all_servable(&s, repo).await;
    let (status, _) = remove(&s, &a_id).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let left = list(&s).await;
    assert_eq!(left.len(), 1);
    assert_eq!(left[0]["id"], b_id.as_str());

    // GC frees what only the removed import needed.
    let r = send_bearer(
        &Client::new(),
        &s,
        Method::POST,
        "/admin/v1/gc?grace=0s",
        TOKEN,
    )
    .await;
    assert_eq!(r.status(), StatusCode::OK);
    let report: Value = r.json().await.expect("json");
    assert!(
        report["blobs_deleted"].as_u64().unwrap_or(0) > 0,
        "{report}"
    );
    assert_all_servable(&s, repo).await;

    // Removing the last import empties the repository's tags.
    let (status, _) = remove(&s, &b_id).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(tag_map(&s, repo).await, BTreeMap::new());
    assert!(list(&s).await.is_empty());
    s.kill();
    let (clean, out) = fsck(s.data_dir(), false);
    assert!(clean, "{out}");
}

/// The same tar imported twice: removing one import removes nothing the other set.
#[tokio::test]
async fn removing_one_of_two_identical_imports_changes_nothing() {
    let s = server();
    let repo = "lab/twice";
    let first = import_ok(&s, repo, fixture_tar("multi-image")).await;
    import_ok(&s, repo, fixture_tar("multi-image")).await;
    let before = tag_map(&s, repo).await;
    let id = first["import_id"].as_str().expect("id");
    let (status, removal) = remove(&s, id).await;
    assert_eq!(status, StatusCode::OK);
    assert!(removal["tags_removed"].as_array().expect("r").is_empty());
    assert!(removal["manifests_removed"]
        .as_array()
        .expect("r")
        .is_empty());
    assert_eq!(tag_map(&s, repo).await, before);
    assert_all_servable(&s, repo).await;
}
