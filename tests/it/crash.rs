//! kill -9 at random instants while pushes (monolithic and chunked), imgpkg imports, deletes
//! and a GC run: after every kill `airdock fsck` is clean, every image whose push was
//! acknowledged pulls back byte for byte, and every import is there whole (tags, manifests,
//! blobs and its import record) or not at all. The same loop runs with blobs on the local
//! filesystem and on S3 (a real versitygw on loopback).

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::{Client, Method, StatusCode};
use serde_json::Value;

use crate::fixture::fixture_tar;
use crate::images::{client, fsck_in_env, make_image, push_image, verify_image, Image, Rng};
use crate::s3::{serve_on_s3, OnS3, S3_ENV};
use crate::support::{manifest_blobs, send_bearer, Server};

pub(crate) const TOKEN: &str = "crash-test-token";

/// Iterations of the loop: `default` (the issue asks for at least 200 on the filesystem),
/// or `AIRDOCK_CRASH_ITERATIONS` for longer soaks.
pub(crate) fn iterations(default: usize) -> usize {
    std::env::var("AIRDOCK_CRASH_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Counts a task in `n` while alive (also if it is cancelled).
struct Counted(Arc<AtomicUsize>);

impl Counted {
    fn new(n: &Arc<AtomicUsize>) -> Counted {
        n.fetch_add(1, Ordering::SeqCst);
        Counted(Arc::clone(n))
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The requests of one iteration of a crash loop, sent concurrently: each counted in
/// `pending` until it ends; pushes and imports also in `pushing`, which the kill may wait for.
pub(crate) struct Round {
    tasks: tokio::task::JoinSet<()>,
    pending: Arc<AtomicUsize>,
    pushing: Arc<AtomicUsize>,
}

impl Round {
    pub(crate) fn new() -> Round {
        Round {
            tasks: tokio::task::JoinSet::new(),
            pending: Arc::default(),
            pushing: Arc::default(),
        }
    }

    /// Send `fut`; a `push` (or import) is counted from before the task starts, so
    /// [`Round::until_kill`] cannot miss it.
    pub(crate) fn spawn(&mut self, push: bool, fut: impl Future<Output = ()> + Send + 'static) {
        let counted = (
            Counted::new(&self.pending),
            push.then(|| Counted::new(&self.pushing)),
        );
        self.tasks.spawn(async move {
            let _counted = counted;
            fut.await;
        });
    }

    /// Import `tar` into `repo`; the flag tells whether it was acknowledged.
    pub(crate) fn import(
        &mut self,
        c: &Client,
        base: &str,
        repo: &str,
        tar: Vec<u8>,
    ) -> Arc<AtomicBool> {
        let done = Arc::new(AtomicBool::new(false));
        let (c, base, repo, flag) = (c.clone(), base.to_owned(), repo.to_owned(), done.clone());
        self.spawn(true, async move {
            if post_import(&c, &base, TOKEN, &repo, tar).await {
                flag.store(true, Ordering::SeqCst);
            }
        });
        done
    }

    /// One time in three, delete one of `acked` at random by digest. Whatever the outcome it
    /// is no longer expected to pull, nor are its twins ([`forget_deleted`], counted in
    /// `forgotten`). The repository and digest deleted, to forget pushes landing meanwhile.
    pub(crate) fn maybe_delete(
        &mut self,
        c: &Client,
        base: &str,
        acked: &mut Vec<Image>,
        rng: &mut Rng,
        forgotten: &mut usize,
    ) -> Option<(String, String)> {
        if acked.is_empty() || rng.below(3) != 0 {
            return None;
        }
        let img = acked.swap_remove(rng.below(acked.len() as u64) as usize);
        *forgotten += forget_deleted(acked, &img.repo, &img.digest);
        let url = format!("{base}/v2/{}/manifests/{}", img.repo, img.digest);
        let c = c.clone();
        self.spawn(false, async move {
            let _ = c.delete(url).send().await;
        });
        Some((img.repo, img.digest))
    }

    /// Wait for the instant to kill at: half the time once the pushes are through (however
    /// slow the machine, 10 s at most) and up to 15 ms more, so that acknowledged pushes
    /// exist to check; else up to `max_ms` into the round.
    pub(crate) async fn until_kill(&self, rng: &mut Rng, max_ms: u64) {
        if rng.below(2) == 0 {
            let deadline = Instant::now() + Duration::from_secs(10);
            while self.pushing.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            tokio::time::sleep(Duration::from_millis(rng.below(15))).await;
        } else {
            tokio::time::sleep(Duration::from_millis(rng.below(max_ms))).await;
        }
    }

    /// Whether a request is still in flight.
    pub(crate) fn in_flight(&self) -> bool {
        self.pending.load(Ordering::SeqCst) > 0
    }

    /// Wait for every request to end.
    pub(crate) async fn join(&mut self) {
        while self.tasks.join_next().await.is_some() {}
    }
}

/// Import `tar` into `repo` with the admin `token`; whether it was acknowledged (201).
pub(crate) async fn post_import(
    c: &reqwest::Client,
    base: &str,
    token: &str,
    repo: &str,
    tar: Vec<u8>,
) -> bool {
    c.post(format!("{base}/admin/v1/import?repository={repo}"))
        .bearer_auth(token)
        .body(tar)
        .send()
        .await
        .is_ok_and(|r| r.status() == StatusCode::CREATED)
}

/// What `base` holds of import `repo`: its tags (every tagged manifest checked servable
/// with the blobs it names) and its import records.
pub(crate) async fn import_at(
    c: &Client,
    base: &str,
    repo: &str,
) -> Result<(usize, usize), String> {
    let r = c
        .get(format!("{base}/v2/{repo}/tags/list"))
        .send()
        .await
        .map_err(|e| format!("{base}: tags of {repo}: {e}"))?;
    let tags: Vec<String> = match r.status() {
        StatusCode::NOT_FOUND => Vec::new(),
        StatusCode::OK => {
            let v: Value = r.json().await.map_err(|e| format!("{base}: {e}"))?;
            v["tags"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|t| t.as_str().map(str::to_owned))
                .collect()
        }
        other => return Err(format!("{base}: tags of {repo}: {other}")),
    };
    for t in &tags {
        let m = c
            .get(format!("{base}/v2/{repo}/manifests/{t}"))
            .header("Accept", "*/*")
            .send()
            .await
            .map_err(|e| format!("{base}: {repo}:{t}: {e}"))?;
        if m.status() != StatusCode::OK {
            return Err(format!("{base}: {repo}:{t}: {}", m.status()));
        }
        let bytes = m.bytes().await.map_err(|e| format!("{base}: {e}"))?;
        let v: Value = serde_json::from_slice(&bytes).map_err(|e| format!("{repo}:{t}: {e}"))?;
        for d in manifest_blobs(&v) {
            let b = c
                .get(format!("{base}/v2/{repo}/blobs/{d}"))
                .send()
                .await
                .map_err(|e| format!("{base}: blob {d}: {e}"))?;
            if b.status() != StatusCode::OK {
                return Err(format!("{base}: blob {d} of {repo}:{t}: {}", b.status()));
            }
        }
    }
    let v: Value = c
        .get(format!("{base}/admin/v1/imports?repository={repo}"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .map_err(|e| format!("{base}: records of {repo}: {e}"))?
        .json()
        .await
        .map_err(|e| format!("{base}: records of {repo}: {e}"))?;
    Ok((tags.len(), v["imports"].as_array().map_or(0, Vec::len)))
}

/// All or nothing, and the same through every way in: no tag and no record, or all `whole`
/// tags and one record. An acknowledged import must be there. Whether it is.
pub(crate) async fn check_import(
    c: &Client,
    bases: &[String],
    repo: &str,
    acked: bool,
    whole: usize,
    it: usize,
) -> bool {
    let mut seen = None;
    for base in bases {
        let got = import_at(c, base, repo)
            .await
            .unwrap_or_else(|e| panic!("iteration {it}: import into {repo}: {e}"));
        match got {
            (0, records) => {
                assert!(
                    !acked,
                    "iteration {it}: acknowledged import into {repo} lost ({base})"
                );
                assert_eq!(
                    records, 0,
                    "iteration {it}: a record without its import ({base})"
                );
            }
            (tags, records) => {
                assert_eq!(
                    tags, whole,
                    "iteration {it}: a partial import into {repo} ({base})"
                );
                assert_eq!(
                    records, 1,
                    "iteration {it}: {repo} without its record ({base})"
                );
            }
        }
        if let Some(prev) = seen.replace(got) {
            assert_eq!(
                prev, got,
                "iteration {it}: replicas disagree on {repo} ({base})"
            );
        }
    }
    seen.is_some_and(|(tags, _)| tags > 0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_at_random_instants_loses_no_acknowledged_push() {
    let s = Server::start_with_args(&["--admin-token", TOKEN]);
    crash_loop(s, iterations(200), &[]).await;
}

/// The same loop with blobs on S3: every kill may land between a multipart upload and its
/// completion, a completion and its index line, an object and the journal line linking it,
/// a GC's `DELETE` and its index line. fsck (which reads every object back through the
/// bucket) must stay clean and nothing acknowledged may be lost. 60 kills by default: each
/// costs ~4 s in a debug build (fsck re-reads the whole bucket through versitygw).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_on_s3_loses_no_acknowledged_push() {
    // `_gw` outlives the loop: dropping it stops the S3 server.
    let OnS3 { server, gw: _gw } = serve_on_s3("crash", &["--admin-token", TOKEN]);
    crash_loop(server, iterations(60), &S3_ENV).await;
}

/// Worker `w`'s image of iteration `it`, `crash/w<w>:i<it>`. Seeds repeat across iterations
/// (never across workers), so blobs are often already present, or were just deleted: the
/// paths that race GC, and on replicas the blob found in the bucket through the index.
pub(crate) fn worker_image(rng: &mut Rng, it: usize, w: u64) -> Image {
    let seed = rng.below(40) * 3 + w;
    let len = 256 + rng.below(4096) as usize;
    make_image(&format!("crash/w{w}"), &format!("i{it}"), seed, len)
}

/// Drop from `images` every image of `repo` whose manifest is `digest`; how many.
///
/// `make_image` gives two images of one repository the same manifest when their seed and
/// layer size repeat (about one run in three of 200 iterations), and a `DELETE` by digest
/// removes the manifest with every tag naming it, so the twin is gone too (as the spec says),
/// not lost. Keeping it expected made the loop report "acknowledged push lost" with
/// `AIRDOCK_TEST_SEED=179455 AIRDOCK_CRASH_ITERATIONS=12` (`w1/i0` and `w1/i1` are twins).
pub(crate) fn forget_deleted(images: &mut Vec<Image>, repo: &str, digest: &str) -> usize {
    let before = images.len();
    images.retain(|i| i.repo != repo || i.digest != digest);
    before - images.len()
}

/// `n` kills of server `s`; `env` is what `airdock fsck` needs besides the data dir (the S3
/// credentials).
async fn crash_loop(mut s: Server, n: usize, env: &[(&str, &str)]) {
    // One whole import first: how many tags a whole one leaves.
    let tar = fixture_tar("platform-bundle");
    assert!(
        post_import(
            &client(Duration::from_secs(10)),
            &s.base_url(),
            TOKEN,
            "crash/whole",
            tar.clone()
        )
        .await
    );
    let whole = import_at(
        &client(Duration::from_secs(10)),
        &s.base_url(),
        "crash/whole",
    )
    .await
    .expect("the whole import")
    .0;
    let mut imports_seen = 0usize;
    let mut rng = Rng::seeded();
    let mut acked: Vec<Image> = Vec::new();
    let mut total_acked = 0usize;
    let mut killed_mid_push = 0usize;
    let mut forgotten = 0usize;
    let started = Instant::now();
    for it in 0..n {
        // A fresh client per life of the server: no pooled connection to a dead process.
        let c = client(Duration::from_secs(10));
        let base = s.base_url();
        let landed: Arc<Mutex<Vec<Image>>> = Arc::default();
        let mut round = Round::new();
        for w in 0..3u64 {
            let img = worker_image(&mut rng, it, w);
            let (c, base, landed) = (c.clone(), base.clone(), Arc::clone(&landed));
            round.spawn(true, async move {
                if push_image(&c, &base, &img, w % 2 == 1).await.is_ok() {
                    landed.lock().expect("lock").push(img);
                }
            });
        }
        // Every other iteration, an import into a repository of its own.
        let import_repo = format!("crash/imp{it}");
        let importing = rng.below(2) == 0;
        let import_acked = importing.then(|| round.import(&c, &base, &import_repo, tar.clone()));
        let deleted = round.maybe_delete(&c, &base, &mut acked, &mut rng, &mut forgotten);
        {
            let (c, base) = (c.clone(), base.clone());
            round.spawn(false, async move {
                let _ = c
                    .post(format!("{base}/admin/v1/gc?grace=0s&delete_untagged=true"))
                    .bearer_auth(TOKEN)
                    .send()
                    .await;
            });
        }
        // Somewhere in the delete, the GC or the quiet after.
        round.until_kill(&mut rng, 60).await;
        let in_flight = round.in_flight();
        s.kill();
        round.join().await;
        if in_flight {
            killed_mid_push += 1;
        }
        let (clean, report) = fsck_in_env(s.data_dir(), false, env);
        assert!(
            clean,
            "iteration {it}: fsck after kill -9 is not clean:\n{report}"
        );
        s.restart();
        if let Some(import_acked) = import_acked {
            let acked = import_acked.load(Ordering::SeqCst);
            let c = client(Duration::from_secs(10));
            if check_import(&c, &[s.base_url()], &import_repo, acked, whole, it).await {
                imports_seen += 1;
            }
        }
        let c = client(Duration::from_secs(10));
        let base = s.base_url();
        let mut landed = std::mem::take(&mut *landed.lock().expect("lock"));
        if let Some((repo, digest)) = &deleted {
            // A push of the same manifest this iteration may have landed before the delete.
            forgotten += forget_deleted(&mut landed, repo, digest);
        }
        for img in landed {
            if let Err(e) = verify_image(&c, &base, &img).await {
                panic!("iteration {it}: acknowledged push lost after kill -9: {e}");
            }
            total_acked += 1;
            acked.push(img);
        }
    }
    let c = client(Duration::from_secs(10));
    for img in &acked {
        if let Err(e) = verify_image(&c, &s.base_url(), img).await {
            panic!("at the end: acknowledged push lost: {e}");
        }
    }
    // A GC right now must leave every remaining image whole too.
    let r = send_bearer(
        &c,
        &s,
        Method::POST,
        "/admin/v1/gc?grace=0s&delete_untagged=true",
        TOKEN,
    )
    .await;
    assert_eq!(r.status(), StatusCode::OK);
    for img in &acked {
        if let Err(e) = verify_image(&c, &s.base_url(), img).await {
            panic!("after a final GC: {e}");
        }
    }
    eprintln!(
        "{n} kills in {:?}: {total_acked} images acknowledged, {} still held, {forgotten} forgotten with a deleted twin, {imports_seen} imports whole, {killed_mid_push} kills with requests in flight",
        started.elapsed(),
        acked.len()
    );
    assert!(imports_seen > 0, "no import ever completed before a kill");
    assert!(
        total_acked >= n / 4,
        "too few pushes got through ({total_acked}) for the test to mean much"
    );
    assert!(
        killed_mid_push >= n / 10,
        "too few kills hit requests in flight ({killed_mid_push})"
    );
}
