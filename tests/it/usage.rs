//! Disk usage (`GET /admin/v1/usage`, the usage in a dry GC's report) and what GC's grace
//! window kept, through the admin API in-process.

use std::time::{Duration, SystemTime};

use axum::body::Body;
use axum::http::{Method, StatusCode};
use serde_json::Value;

use crate::inproc::App;
use crate::support::{image_manifest, sha256};

/// Pushes `config` and `layer` into `repo` and a manifest over them tagged `tag`; returns the
/// manifest's size.
async fn push(app: &App, repo: &str, tag: &str, config: &[u8], layer: &[u8]) -> u64 {
    let c = app.push_blob(repo, config).await;
    let l = app.push_blob(repo, layer).await;
    let m = image_manifest(&c, config.len(), &l, layer.len());
    let r = app.put_manifest(repo, tag, m.as_bytes()).await;
    assert_eq!(r.status, StatusCode::CREATED);
    m.len() as u64
}

fn repo<'a>(usage: &'a Value, name: &str) -> &'a Value {
    usage["repos"]
        .as_array()
        .expect("repos")
        .iter()
        .find(|r| r["name"] == name)
        .unwrap_or_else(|| panic!("{name} not in {usage}"))
}

#[tokio::test]
async fn usage_counts_shared_layers_once_and_pages_like_the_catalog() {
    let app = App::new().await;
    let shared = vec![b's'; 5000];
    let ma = push(&app, "team/a", "v1", br#"{"a":1}"#, &shared).await;
    let mb = push(&app, "team/b", "v1", br#"{"bb":22}"#, &shared).await;
    // A second image in team/b, with a layer of its own, under two tags.
    let mb2 = push(&app, "team/b", "v2", br#"{"bb":333}"#, &[b'o'; 300]).await;
    let again = image_manifest(&sha256(br#"{"bb":333}"#), 10, &sha256(&[b'o'; 300]), 300);
    let r = app.put_manifest("team/b", "latest", again.as_bytes()).await;
    assert_eq!(r.status, StatusCode::CREATED);
    let u = app
        .admin(Method::GET, "/admin/v1/usage", Body::empty())
        .await;
    assert_eq!(u.status, StatusCode::OK, "{:?}", u.body);
    let u = u.json();
    // Stored once: the shared layer, two configs of a and b, b's second image.
    let total = 5000 + 7 + 9 + ma + mb + 10 + 300 + mb2;
    assert_eq!(u["bytes"], total, "{u}");
    assert_eq!(
        (u["blobs"].as_u64(), u["manifests"].as_u64()),
        (Some(8), Some(3))
    );
    assert_eq!(u["repositories"], 2);
    let a = repo(&u, "team/a");
    assert_eq!(
        (a["shared_bytes"].as_u64(), a["shared_blobs"].as_u64()),
        (Some(5000), Some(1))
    );
    assert_eq!(a["unique_bytes"], 7 + ma);
    assert_eq!(a["bytes"], 5000 + 7 + ma);
    assert_eq!(
        (a["manifests"].as_u64(), a["tags"].as_u64()),
        (Some(1), Some(1))
    );
    let b = repo(&u, "team/b");
    assert_eq!(b["shared_bytes"], 5000);
    assert_eq!(b["unique_bytes"], 9 + mb + 10 + 300 + mb2);
    assert_eq!(
        (b["manifests"].as_u64(), b["tags"].as_u64()),
        (Some(2), Some(3))
    );

    // Pages in name order with Link, or the largest first.
    let p = app
        .admin(Method::GET, "/admin/v1/usage?n=1", Body::empty())
        .await;
    assert_eq!(
        p.header("link"),
        "</admin/v1/usage?n=1&last=team%2Fa>; rel=\"next\""
    );
    assert_eq!(p.json()["repos"][0]["name"], "team/a");
    assert_eq!(
        p.json()["bytes"],
        total,
        "totals cover every repository on every page"
    );
    let p = app
        .admin(
            Method::GET,
            "/admin/v1/usage?n=1&last=team%2Fa",
            Body::empty(),
        )
        .await;
    assert!(p.headers.get("link").is_none());
    assert_eq!(p.json()["repos"][0]["name"], "team/b");
    let t = app
        .admin(Method::GET, "/admin/v1/usage?top=1", Body::empty())
        .await
        .json();
    assert_eq!(t["repos"].as_array().map(Vec::len), Some(1));
    assert_eq!(t["repos"][0]["name"], "team/b");
    app.admin(Method::GET, "/admin/v1/usage?top=-1", Body::empty())
        .await
        .expect_error(StatusCode::BAD_REQUEST, "PAGINATION_NUMBER_INVALID");
    app.admin(Method::GET, "/admin/v1/usage?top=1&n=2", Body::empty())
        .await
        .expect_error(StatusCode::BAD_REQUEST, "UNSUPPORTED");
    // Admins only, like every admin endpoint.
    app.get("/admin/v1/usage")
        .await
        .expect_error(StatusCode::UNAUTHORIZED, "UNAUTHORIZED");

    // A dry GC reports the same usage beside what it would free.
    let dry = app
        .admin(Method::POST, "/admin/v1/gc?dry_run=true", Body::empty())
        .await
        .json();
    assert_eq!(dry["usage"], u, "{dry}");
}

#[tokio::test]
async fn gc_reports_what_the_grace_window_kept_and_until_when() {
    let app = App::new().await;
    push(&app, "r", "v1", b"{}", b"layer").await;
    let lonely = b"uploaded just now, referenced by nothing";
    let d = app.push_blob("r", lonely).await;
    let before = SystemTime::now();
    let r = app.admin(Method::POST, "/admin/v1/gc", Body::empty()).await;
    assert_eq!(r.status, StatusCode::OK);
    let r = r.json();
    assert_eq!(r["blobs_deleted"], 0, "{r}");
    let held = &r["held_back"];
    assert_eq!(
        (held["blobs"].as_u64(), held["bytes"].as_u64()),
        (Some(1), Some(lonely.len() as u64))
    );
    assert_eq!(held["earliest_collectable"], held["latest_collectable"]);
    let due = humantime::parse_rfc3339(held["earliest_collectable"].as_str().expect("time"))
        .expect("RFC 3339");
    // The default grace is one hour (seconds in the report are truncated).
    let hour = Duration::from_secs(3600);
    assert!(due + Duration::from_secs(1) >= before + hour, "{held}");
    assert!(due <= SystemTime::now() + hour, "{held}");
    assert_eq!(
        app.get(&format!("/v2/r/blobs/{d}")).await.status,
        StatusCode::OK
    );

    let r = app
        .admin(Method::POST, "/admin/v1/gc?grace=0s", Body::empty())
        .await
        .json();
    assert_eq!(
        (r["blobs_deleted"].as_u64(), r["bytes_freed"].as_u64()),
        (Some(1), Some(lonely.len() as u64)),
        "{r}"
    );
    assert_eq!(r["held_back"]["blobs"], 0);
    assert!(r["held_back"].get("earliest_collectable").is_none());
    app.get(&format!("/v2/r/blobs/{d}"))
        .await
        .expect_error(StatusCode::NOT_FOUND, "BLOB_UNKNOWN");
}
