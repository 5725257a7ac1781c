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

/// Records say when (RFC 3339), what (the tar's name and size) and who: the name from
/// `?name=`, from `Content-Disposition`, or from `airdock import`'s file; who from the admin
/// token or the admin user that sent it. `GET /admin/v1/imports/<id>` shows one record.
#[tokio::test]
async fn records_carry_time_name_size_and_who_imported() {
    let dir = crate::support::scratch_dir("airdock-import-who-");
    let hp = crate::security::htpasswd(dir.path(), &[("root", "rootpw")]);
    let cfg = dir.path().join("airdock.yaml");
    std::fs::write(
        &cfg,
        format!("auth:\n  htpasswd: {}\n  admins: [root]\n", hp.display()),
    )
    .expect("config");
    let s = crate::support::Server::start_with_args(&[
        "--admin-token",
        TOKEN,
        "--config",
        cfg.to_str().expect("utf-8"),
    ]);
    let tar = fixture_tar("guestbook-bundle");
    let size = tar.len() as u64;
    let c = Client::new();
    let before = airdock::sys::rfc3339(airdock::sys::now());

    // 1. `?name=`, the admin token.
    let r = c
        .post(s.url("/admin/v1/import?repository=lab/a&name=dl%2Fguestbook%20v1.tar"))
        .bearer_auth(TOKEN)
        .body(tar.clone())
        .send()
        .await
        .expect("import");
    assert_eq!(r.status(), StatusCode::CREATED);
    let first: Value = r.json().await.expect("report");

    // 2. `Content-Disposition`, an admin's Basic credentials.
    let r = c
        .post(s.url("/admin/v1/import?repository=lab/b"))
        .header("authorization", crate::security::basic("root", "rootpw"))
        .header(
            "content-disposition",
            "attachment; filename=\"from-header.tar\"",
        )
        .body(tar.clone())
        .send()
        .await
        .expect("import");
    assert_eq!(r.status(), StatusCode::CREATED);

    // 3. The CLI sends its file's name.
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, TOKEN).expect("token");
    let out = std::process::Command::new(crate::support::AIRDOCK_BIN)
        .arg("import")
        .arg(crate::fixture::fixtures().join("tars/guestbook-bundle.tar"))
        .args(["-r", "lab/c", "--server", &s.base_url(), "--token-file"])
        .arg(&token_file)
        .env_remove("AIRDOCK_CA_CERT")
        .output()
        .expect("airdock import");
    assert!(out.status.success(), "{out:?}");

    // A name that is no file name is refused, and nothing is imported.
    let r = c
        .post(s.url("/admin/v1/import?repository=lab/d&name=a%0Ab.tar"))
        .bearer_auth(TOKEN)
        .body(tar.clone())
        .send()
        .await
        .expect("import");
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let body: Value = r.json().await.expect("error body");
    assert!(
        body["errors"][0]["message"]
            .as_str()
            .is_some_and(|m| m.contains("control characters")),
        "{body}"
    );

    let after = airdock::sys::rfc3339(airdock::sys::now());
    let records = list(&s).await;
    assert_eq!(records.len(), 3, "{records:#?}");
    let cli_size = std::fs::metadata(crate::fixture::fixtures().join("tars/guestbook-bundle.tar"))
        .expect("stat")
        .len();
    for (rec, (repo, name, who, bytes)) in records.iter().zip([
        ("lab/a", "guestbook v1.tar", "admin-token", size),
        ("lab/b", "from-header.tar", "root", size),
        ("lab/c", "guestbook-bundle.tar", "admin-token", cli_size),
    ]) {
        assert_eq!(rec["repository"], repo, "{rec}");
        assert_eq!(rec["name"], name, "{rec}");
        assert_eq!(rec["imported_by"], who, "{rec}");
        assert_eq!(rec["size"], bytes, "{rec}");
        // `YYYY-MM-DDTHH:MM:SSZ`, between the first request and the listing.
        let time = rec["time"].as_str().expect("time is a string");
        assert_eq!(
            (time.len(), &time[10..11], &time[19..]),
            (20, "T", "Z"),
            "{time}"
        );
        assert!(before.as_str() <= time && time <= after.as_str(), "{time}");
    }

    // One record by id; an unknown id is 404.
    let id = first["import_id"].as_str().expect("id");
    let r = send_bearer(
        &c,
        &s,
        Method::GET,
        &format!("/admin/v1/imports/{id}"),
        TOKEN,
    )
    .await;
    assert_eq!(r.status(), StatusCode::OK);
    let one: Value = r.json().await.expect("json");
    assert_eq!(one, records[0]);
    let r = send_bearer(&c, &s, Method::GET, "/admin/v1/imports/0000", TOKEN).await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
}
