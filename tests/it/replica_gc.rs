//! GC on one replica while another takes pushes (issue 12): replica A runs GC in a loop with
//! a short grace window ([`GRACE`]) and `delete_untagged`, while replica B takes pushes (new images,
//! monolithic and chunked, some large enough for a multipart put; re-pushes of deleted
//! images' content that `HEAD` first and skip what is there; cross-repository mounts) and
//! manifest deletes. No push may fail, and every acknowledged image must pull back byte for
//! byte through both replicas, with `airdock fsck` clean. `AIRDOCK_GC_SOAK_SECS` sets how
//! long B pushes (default 60).

use std::time::{Duration, Instant};

use reqwest::{Client, StatusCode};

use crate::cluster::Cluster;
use crate::images::{
    expect, fsck_in_env, make_image, push_blob_chunked, push_blob_monolithic, verify_image, Failed,
    Image, Rng, OCI_MANIFEST,
};
use crate::imgpkg::TOKEN;
use crate::s3::S3_ENV;
use crate::support::client;

/// GC's window on A. As on a single node, the window is what keeps a pushed blob (linked,
/// named by no manifest yet) until its manifest arrives, so it must outlast the slowest
/// push's way from its first blob to its manifest on a loaded CI machine (1 s and 5 s
/// windows saw such pushes refused on a machine shared by five builds, as a single node's
/// GC would refuse them; the single-node stress test keeps 10 s for the same reason). Everything
/// else a push relies on across replicas (pins, `HEAD`s) is what this test is about, and
/// does not depend on the window.
const GRACE: &str = "10s";

/// How long B takes pushes: `AIRDOCK_GC_SOAK_SECS`, or a minute.
fn soak() -> Duration {
    let secs = std::env::var("AIRDOCK_GC_SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    Duration::from_secs(secs)
}

/// What one pushing worker saw.
#[derive(Default)]
struct Tally {
    /// Acknowledged and not deleted since: must pull whole at the end.
    acked: Vec<Image>,
    /// Deleted by digest (their content is pushed again later, reusing the blobs GC has not
    /// collected yet).
    deleted: Vec<Image>,
    pushes: u64,
    reused: u64,
    mounted: u64,
    deletes: u64,
    big: u64,
    failures: Vec<String>,
}

fn failed(what: &str, f: Failed) -> String {
    format!("{what}: {f:?}")
}

/// Push `img` as a client that asks first: `HEAD` each blob and upload only what is missing
/// (docker, containerd and imgpkg all do), then the manifest.
async fn push_reusing(c: &Client, base: &str, img: &Image) -> Result<bool, Failed> {
    let mut reused = false;
    // Layers first, the config last, as docker does: the small config is then pushed just
    // before the manifest.
    for (d, bytes) in img.blobs.iter().rev() {
        let r = c
            .head(format!("{base}/v2/{}/blobs/{d}", img.repo))
            .send()
            .await
            .map_err(|e| Failed::Transport(e.to_string()))?;
        match r.status() {
            StatusCode::OK => reused = true,
            StatusCode::NOT_FOUND => push_blob_monolithic(c, base, &img.repo, bytes).await?,
            s => return Err(Failed::Status(s, format!("HEAD {d}"))),
        }
    }
    put_manifest(c, base, img).await?;
    Ok(reused)
}

/// Push `img` into its repository by mounting its blobs from `from` (uploading one the
/// registry answers with a session instead of a mount), then the manifest.
async fn push_mounting(c: &Client, base: &str, img: &Image, from: &str) -> Result<(), Failed> {
    for (d, bytes) in &img.blobs {
        let r = c
            .post(format!(
                "{base}/v2/{}/blobs/uploads/?mount={d}&from={from}",
                img.repo
            ))
            .send()
            .await
            .map_err(|e| Failed::Transport(e.to_string()))?;
        match r.status() {
            StatusCode::CREATED => {}
            StatusCode::ACCEPTED => {
                let loc = r
                    .headers()
                    .get("location")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_owned();
                let sep = if loc.contains('?') { '&' } else { '?' };
                let put = c
                    .put(format!("{base}{loc}{sep}digest={d}"))
                    .body(bytes.clone())
                    .send()
                    .await;
                expect(put, StatusCode::CREATED).await?;
            }
            s => return Err(Failed::Status(s, r.text().await.unwrap_or_default())),
        }
    }
    put_manifest(c, base, img).await
}

/// Push a new image as docker does: the layer (chunked when asked), then the config, then
/// the manifest.
async fn push_new(c: &Client, base: &str, img: &Image, chunked: bool) -> Result<(), Failed> {
    let (_, config) = &img.blobs[0];
    let (_, layer) = &img.blobs[1];
    if chunked {
        push_blob_chunked(c, base, &img.repo, layer, layer.len() / 3 + 1).await?;
    } else {
        push_blob_monolithic(c, base, &img.repo, layer).await?;
    }
    push_blob_monolithic(c, base, &img.repo, config).await?;
    put_manifest(c, base, img).await
}

async fn put_manifest(c: &Client, base: &str, img: &Image) -> Result<(), Failed> {
    let put = c
        .put(format!("{base}/v2/{}/manifests/{}", img.repo, img.tag))
        .header("Content-Type", OCI_MANIFEST)
        .body(img.manifest.clone())
        .send()
        .await;
    expect(put, StatusCode::CREATED).await?;
    Ok(())
}

/// One worker pushing through `base` until `until`: its repositories are `gc{w}/…`.
async fn pushes(c: Client, base: String, w: u64, mut rng: Rng, until: Instant) -> Tally {
    let mut t = Tally::default();
    let mut i = 0u64;
    while Instant::now() < until {
        i += 1;
        let repo = format!("gc{w}/app{}", rng.below(3));
        let tag = format!("t{i}");
        match rng.below(10) {
            // A new image: a small layer, chunked or not, or now and then one of 9 MiB sent
            // in one request (a multipart put on S3, which only B's memory records).
            0..=3 => {
                let big = rng.below(8) == 0;
                let len = if big {
                    9 << 20
                } else {
                    1024 + rng.below(64 << 10) as usize
                };
                let img = make_image(&repo, &tag, w << 32 | i, len);
                let chunked = !big && rng.below(2) == 0;
                match push_new(&c, &base, &img, chunked).await {
                    Ok(()) => {
                        t.pushes += 1;
                        t.big += u64::from(big);
                        t.acked.push(img);
                    }
                    Err(f) => t.failures.push(failed(&format!("push {repo}:{tag}"), f)),
                }
            }
            // The content of a deleted image again, under a new tag: what GC has not
            // collected yet is found by HEAD and not uploaded.
            4..=5 if !t.deleted.is_empty() => {
                let old = &t.deleted[rng.below(t.deleted.len() as u64) as usize];
                let img = Image {
                    tag: tag.clone(),
                    ..old.clone()
                };
                match push_reusing(&c, &base, &img).await {
                    Ok(reused) => {
                        t.pushes += 1;
                        t.reused += u64::from(reused);
                        t.acked.push(img);
                    }
                    Err(f) => t.failures.push(failed(&format!("re-push {repo}:{tag}"), f)),
                }
            }
            // An acknowledged image mounted into a new repository.
            6..=7 if !t.acked.is_empty() => {
                let src = t.acked[rng.below(t.acked.len() as u64) as usize].clone();
                let img = Image {
                    repo: format!("gc{w}/mount{i}"),
                    tag: "v1".into(),
                    ..src.clone()
                };
                match push_mounting(&c, &base, &img, &src.repo).await {
                    Ok(()) => {
                        t.mounted += 1;
                        t.acked.push(img);
                    }
                    Err(f) => t
                        .failures
                        .push(failed(&format!("mount into {}", img.repo), f)),
                }
            }
            // Delete an acknowledged image by digest (every tag of it in its repository).
            8..=9 if !t.acked.is_empty() => {
                let gone = t.acked[rng.below(t.acked.len() as u64) as usize].clone();
                let r = c
                    .delete(format!("{base}/v2/{}/manifests/{}", gone.repo, gone.digest))
                    .send()
                    .await;
                match r {
                    Ok(r) if r.status() == StatusCode::ACCEPTED => {
                        t.deletes += 1;
                        t.acked
                            .retain(|a| !(a.repo == gone.repo && a.digest == gone.digest));
                        t.deleted.push(gone);
                    }
                    Ok(r) => t.failures.push(format!(
                        "delete {}@{}: {}",
                        gone.repo,
                        gone.digest,
                        r.status()
                    )),
                    Err(e) => t.failures.push(format!("delete: {e}")),
                }
            }
            _ => {}
        }
    }
    t
}

/// `POST /admin/v1/gc` on `base` with window [`GRACE`], dropping untagged manifests, until
/// `stop`; the runs and the blobs they deleted.
async fn gc_loop(
    c: Client,
    base: String,
    stop: tokio::sync::watch::Receiver<bool>,
) -> (u64, u64, Vec<String>) {
    let (mut runs, mut deleted, mut errors) = (0, 0, Vec::new());
    while !*stop.borrow() {
        let r = c
            .post(format!(
                "{base}/admin/v1/gc?grace={GRACE}&delete_untagged=true"
            ))
            .bearer_auth(TOKEN)
            .send()
            .await;
        match r {
            Ok(r) if r.status() == StatusCode::OK => {
                let report: serde_json::Value = r.json().await.unwrap_or_default();
                runs += 1;
                deleted += report["blobs_deleted"].as_u64().unwrap_or(0);
            }
            Ok(r) => errors.push(format!(
                "gc: {} {}",
                r.status(),
                r.text().await.unwrap_or_default()
            )),
            Err(e) => errors.push(format!("gc: {e}")),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    (runs, deleted, errors)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn gc_on_one_replica_while_another_takes_pushes_loses_nothing_acknowledged() {
    let mut cl = Cluster::start(2, &["--admin-token", TOKEN]);
    let (a, b) = (cl.replicas[0].base_url(), cl.replicas[1].base_url());
    let c = client(Duration::from_secs(60));
    let mut rng = Rng::seeded();
    let until = Instant::now() + soak();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let gc = tokio::spawn(gc_loop(c.clone(), a.clone(), stopped));
    let workers: Vec<_> = (0..2)
        .map(|w| {
            let r = Rng(rng.next() | 1);
            tokio::spawn(pushes(c.clone(), b.clone(), w, r, until))
        })
        .collect();
    let mut all = Tally::default();
    for w in workers {
        let t = w.await.expect("worker");
        all.acked.extend(t.acked);
        all.failures.extend(t.failures);
        all.pushes += t.pushes;
        all.reused += t.reused;
        all.mounted += t.mounted;
        all.deletes += t.deletes;
        all.big += t.big;
    }
    stop.send(true).expect("stop gc");
    let (runs, collected, gc_errors) = gc.await.expect("gc loop");
    eprintln!(
        "{} pushes ({} big, {} reusing blobs found by HEAD), {} mounts, {} deletes; \
         {runs} GC runs on A deleted {collected} blobs; {} failures",
        all.pushes,
        all.big,
        all.reused,
        all.mounted,
        all.deletes,
        all.failures.len()
    );
    assert!(gc_errors.is_empty(), "GC failed: {gc_errors:?}");
    assert!(
        all.failures.is_empty(),
        "{} pushes or deletes failed while A ran GC: {:?}",
        all.failures.len(),
        &all.failures[..all.failures.len().min(10)]
    );
    assert!(
        runs >= 5 && collected > 0 && all.pushes > 20 && all.deletes > 0,
        "the soak did too little to mean anything: {runs} runs, {collected} collected, \
         {} pushes, {} deletes",
        all.pushes,
        all.deletes
    );
    for base in [&a, &b] {
        for img in &all.acked {
            if let Err(e) = verify_image(&c, base, img).await {
                panic!("acknowledged {}:{} through {base}: {e}", img.repo, img.tag);
            }
        }
    }
    let url = cl.url.clone();
    let mut env: Vec<(&str, &str)> = S3_ENV.to_vec();
    env.push(("AIRDOCK_METADATA_URL", &url));
    let stopped = &mut cl.replicas[0];
    stopped.terminate();
    let (clean, report) = fsck_in_env(stopped.data_dir(), false, &env);
    assert!(clean, "fsck after the soak: {report}");
}
