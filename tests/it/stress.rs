//! 64 clients push and pull while GC runs every second: no request may fail and no
//! acknowledged image may lose a byte. `AIRDOCK_STRESS_SECS` sets the duration (20 s).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::images::{client, fsck, make_image, push_image, verify_image, Image};
use crate::support::{send_bearer, Server};

const TOKEN: &str = "stress-token";
const CLIENTS: usize = 64;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_four_clients_while_gc_runs_every_second() {
    let secs = std::env::var("AIRDOCK_STRESS_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let mut s = Server::start_with_args(&[
        "--admin-token",
        TOKEN,
        "--gc-interval",
        "1s",
        // Long enough for any push under this load to get from its blobs to its manifest.
        "--gc-grace",
        "10s",
        "--gc-delete-untagged",
    ]);
    let started = Instant::now();
    let deadline = started + Duration::from_secs(secs);
    let base = s.base_url();
    let c = client(Duration::from_secs(60));
    let failures: Arc<Mutex<Vec<String>>> = Arc::default();
    let mut tasks = Vec::new();
    for k in 0..CLIENTS {
        let (c, base, failures) = (c.clone(), base.clone(), Arc::clone(&failures));
        tasks.push(tokio::spawn(async move {
            let (mut kept, mut deleted, mut requests) =
                (Vec::<Image>::new(), Vec::<Image>::new(), 0u64);
            let repo = format!("stress/c{k}");
            let mut i = 0u64;
            while Instant::now() < deadline {
                i += 1;
                // Every fourth image shares its blobs with other clients' (other repos).
                let shared = i.is_multiple_of(4);
                let seed = if shared {
                    (i / 4) % 8
                } else {
                    1_000 + (k as u64) * 1_000_000 + i
                };
                let img = make_image(&repo, &format!("t{i}"), seed, 512 + (i as usize % 7) * 700);
                requests += 5;
                if let Err(e) = push_image(&c, &base, &img, i % 2 == 1).await {
                    failures
                        .lock()
                        .expect("l")
                        .push(format!("push {repo}:t{i}: {e:?}"));
                    continue;
                }
                if let Err(e) = verify_image(&c, &base, &img).await {
                    failures
                        .lock()
                        .expect("l")
                        .push(format!("pull right after push: {e}"));
                }
                if let Some(old) = kept.get(i as usize % kept.len().max(1)) {
                    requests += 3;
                    if let Err(e) = verify_image(&c, &base, old).await {
                        failures
                            .lock()
                            .expect("l")
                            .push(format!("pull of an older image: {e}"));
                    }
                }
                // Delete a third of the unshared images (a shared one may have the same
                // manifest digest as another of this client's tags).
                if !shared && i.is_multiple_of(3) {
                    requests += 1;
                    let r = c
                        .delete(format!("{base}/v2/{repo}/manifests/{}", img.digest))
                        .send()
                        .await;
                    match r {
                        Ok(r) if r.status() == StatusCode::ACCEPTED => deleted.push(img),
                        Ok(r) => failures
                            .lock()
                            .expect("l")
                            .push(format!("delete: {}", r.status())),
                        Err(e) => failures.lock().expect("l").push(format!("delete: {e}")),
                    }
                } else {
                    kept.push(img);
                }
            }
            (kept, deleted, requests)
        }));
    }
    let (mut kept, mut deleted, mut requests) = (Vec::new(), Vec::new(), 0);
    for t in tasks {
        let (k, d, n) = t.await.expect("client task");
        kept.extend(k);
        deleted.extend(d);
        requests += n;
    }
    let failures = failures.lock().expect("l").clone();
    assert!(
        failures.is_empty(),
        "{} failed requests of {requests}, first: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    for img in &kept {
        verify_image(&c, &base, img)
            .await
            .expect("kept image after the run");
    }
    // Everything deleted is collectable now; everything kept survives that.
    let v: Value = send_bearer(&c, &s, Method::POST, "/admin/v1/gc?grace=0s", TOKEN)
        .await
        .json()
        .await
        .expect("json");
    for img in &kept {
        verify_image(&c, &base, img)
            .await
            .expect("kept image after a zero-grace GC");
    }
    for img in &deleted {
        let hex = &img.blobs[1].0["sha256:".len()..];
        let file = s.data_dir().join("blobs/sha256").join(&hex[..2]).join(hex);
        assert!(
            !file.exists(),
            "deleted image's layer still stored after GC: {v}"
        );
    }
    eprintln!(
        "{CLIENTS} clients, {secs}s (done in {:?}): {requests} requests, {} images kept, {} deleted and collected",
        started.elapsed(),
        kept.len(),
        deleted.len()
    );
    assert!(!deleted.is_empty() && kept.len() > CLIENTS);
    s.kill();
    let (clean, report) = fsck(s.data_dir(), false);
    assert!(clean, "{report}");
}
