//! kill -9 at random instants while pushes (monolithic and chunked), deletes and a GC run:
//! after every kill `airdock fsck` is clean and every image whose push was acknowledged
//! pulls back byte for byte.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::StatusCode;

use crate::images::{client, fsck, make_image, push_image, verify_image, Image, Rng};
use crate::support::Server;

const TOKEN: &str = "crash-test-token";

/// Iterations of the loop (the issue asks for at least 200); `AIRDOCK_CRASH_ITERATIONS`
/// overrides it for longer soaks.
fn iterations() -> usize {
    std::env::var("AIRDOCK_CRASH_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200)
}

/// Spawn `fut` into `tasks`, counted in `pending` until it completes.
fn spawn_counted(
    tasks: &mut tokio::task::JoinSet<()>,
    pending: &Arc<AtomicUsize>,
    fut: impl Future<Output = ()> + Send + 'static,
) {
    pending.fetch_add(1, Ordering::SeqCst);
    let pending = Arc::clone(pending);
    tasks.spawn(async move {
        fut.await;
        pending.fetch_sub(1, Ordering::SeqCst);
    });
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_at_random_instants_loses_no_acknowledged_push() {
    let n = iterations();
    let mut s = Server::start_with_args(&["--admin-token", TOKEN]);
    let mut rng = Rng::seeded();
    let mut acked: Vec<Image> = Vec::new();
    let mut total_acked = 0usize;
    let mut killed_mid_push = 0usize;
    let started = Instant::now();
    for it in 0..n {
        // A fresh client per life of the server: no pooled connection to a dead process.
        let c = client(Duration::from_secs(10));
        let base = s.base_url();
        let landed: Arc<Mutex<Vec<Image>>> = Arc::default();
        let mut tasks = tokio::task::JoinSet::new();
        let pending = Arc::new(AtomicUsize::new(0));
        let pushing = Arc::new(AtomicUsize::new(0));
        for w in 0..3u64 {
            // Seeds repeat across iterations, so blobs are often already present (or were
            // just deleted): the paths that race GC.
            let seed = rng.below(40) * 3 + w;
            let img = make_image(
                &format!("crash/w{w}"),
                &format!("i{it}"),
                seed,
                256 + rng.below(4096) as usize,
            );
            let (c, base, landed) = (c.clone(), base.clone(), Arc::clone(&landed));
            // Counted from before the task starts, so the wait below cannot miss it.
            let counted = Counted::new(&pushing);
            spawn_counted(&mut tasks, &pending, async move {
                let _counted = counted;
                if push_image(&c, &base, &img, w % 2 == 1).await.is_ok() {
                    landed.lock().expect("lock").push(img);
                }
            });
        }
        if !acked.is_empty() && rng.below(3) == 0 {
            // Whatever the outcome, a deleted image is no longer expected to pull.
            let img = acked.swap_remove(rng.below(acked.len() as u64) as usize);
            let (c, base) = (c.clone(), base.clone());
            spawn_counted(&mut tasks, &pending, async move {
                let _ = c
                    .delete(format!("{base}/v2/{}/manifests/{}", img.repo, img.digest))
                    .send()
                    .await;
            });
        }
        {
            let (c, base) = (c.clone(), base.clone());
            spawn_counted(&mut tasks, &pending, async move {
                let _ = c
                    .post(format!("{base}/admin/v1/gc?grace=0s&delete_untagged=true"))
                    .bearer_auth(TOKEN)
                    .send()
                    .await;
            });
        }
        if rng.below(2) == 0 {
            // Let the pushes land first (however slow the machine), then kill somewhere in
            // the delete, the GC or the quiet after: acknowledged pushes must exist to check.
            let deadline = Instant::now() + Duration::from_secs(10);
            while pushing.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            tokio::time::sleep(Duration::from_millis(rng.below(15))).await;
        } else {
            tokio::time::sleep(Duration::from_millis(rng.below(60))).await;
        }
        let in_flight = pending.load(Ordering::SeqCst);
        s.kill();
        while tasks.join_next().await.is_some() {}
        if in_flight > 0 {
            killed_mid_push += 1;
        }
        let (clean, report) = fsck(s.data_dir(), false);
        assert!(
            clean,
            "iteration {it}: fsck after kill -9 is not clean:\n{report}"
        );
        s.restart();
        let c = client(Duration::from_secs(10));
        let base = s.base_url();
        let landed = std::mem::take(&mut *landed.lock().expect("lock"));
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
    let r = c
        .post(s.url("/admin/v1/gc?grace=0s&delete_untagged=true"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("gc");
    assert_eq!(r.status(), StatusCode::OK);
    for img in &acked {
        if let Err(e) = verify_image(&c, &s.base_url(), img).await {
            panic!("after a final GC: {e}");
        }
    }
    eprintln!(
        "{n} kills in {:?}: {total_acked} images acknowledged, {} still held, {killed_mid_push} kills with requests in flight",
        started.elapsed(),
        acked.len()
    );
    assert!(
        total_acked >= n / 4,
        "too few pushes got through ({total_acked}) for the test to mean much"
    );
    assert!(
        killed_mid_push >= n / 10,
        "too few kills hit requests in flight ({killed_mid_push})"
    );
}
