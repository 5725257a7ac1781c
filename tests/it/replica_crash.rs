//! Issue 12's crash test: replicas on PostgreSQL + S3 behind nginx round-robin, pushes
//! (monolithic and chunked), deletes and imgpkg imports sent through the balancer, and a
//! random replica killed with SIGKILL at a random instant every iteration, then restarted on
//! its port. Every acknowledged push pulls back byte for byte and every import is whole or
//! absent (with its record), through the balancer and through each replica directly; and
//! `airdock fsck --metadata-url` is clean, run on the dead replica's data dir while the
//! others keep taking pushes (fsck needs no quiet cluster: its metadata checks hold the
//! database's journal lock, and it re-hashes blobs that never change in place).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::{Client, StatusCode};

use crate::cluster::Cluster;
use crate::crash::{
    check_import, forget_deleted, import_at, iterations, post_import, worker_image, Round, TOKEN,
};
use crate::fixture::fixture_tar;
use crate::images::{
    client, fsck_in_env, make_image, push_image, verify_image, Failed, Image, Rng,
};
use crate::s3::S3_ENV;

/// Replicas behind the balancer (`AIRDOCK_CRASH_REPLICAS`, default 2): one killed at a
/// time, the others serve meanwhile.
fn replicas() -> usize {
    std::env::var("AIRDOCK_CRASH_REPLICAS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&n| n >= 2)
        .unwrap_or(2)
}

/// Every this many iterations (and at the last): fsck, and every image still expected is
/// pulled through every way in.
const CHECKPOINT: usize = 5;

/// Every image pulls back byte for byte through every base.
async fn verify_everywhere(c: &Client, bases: &[String], images: &[Image], when: &str) {
    for img in images {
        for base in bases {
            if let Err(e) = verify_image(c, base, img).await {
                panic!("{when}: acknowledged push lost through {base}: {e}");
            }
        }
    }
}

/// `n` kills of a random replica; ~2 minutes for 25 in a debug build.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_a_random_replica_behind_the_balancer_loses_nothing_acknowledged() {
    let (n, replicas) = (iterations(25), replicas());
    let mut cl = Cluster::balanced(replicas, &["--admin-token", TOKEN]);
    let lb = cl.lb_base();
    let mut fsck_env: Vec<(&str, &str)> = S3_ENV.to_vec();
    fsck_env.push(("AIRDOCK_METADATA_URL", &cl.url));
    let fsck_env: Vec<(String, String)> = fsck_env
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    let c = client(Duration::from_secs(60));
    let tar = fixture_tar("platform-bundle");
    assert!(post_import(&c, &lb, TOKEN, "crash/whole", tar.clone()).await);
    let whole = import_at(&c, &lb, "crash/whole")
        .await
        .expect("whole import")
        .0;
    assert!(whole > 0);

    let mut rng = Rng::seeded();
    let mut acked: Vec<Image> = Vec::new();
    let (mut total_acked, mut forgotten) = (0usize, 0usize);
    let cut = Arc::new(AtomicUsize::new(0));
    let (mut imports_seen, mut killed_mid_push, mut pushed_during_fsck) = (0usize, 0, 0);
    let mut fsck_time = Duration::ZERO;
    let started = Instant::now();
    for it in 0..n {
        let victim = rng.below(replicas as u64) as usize;
        let landed: Arc<Mutex<Vec<Image>>> = Arc::default();
        let failed: Arc<Mutex<Vec<String>>> = Arc::default();
        let mut round = Round::new();
        for w in 0..3u64 {
            let img = worker_image(&mut rng, it, w);
            let (c, lb, landed) = (c.clone(), lb.clone(), landed.clone());
            let (cut, failed) = (cut.clone(), failed.clone());
            round.spawn(true, async move {
                // w1 chunked: its POST, PATCHes and PUT land on different replicas.
                match push_image(&c, &lb, &img, w == 1).await {
                    Ok(()) => landed.lock().expect("lock").push(img),
                    // nginx's answer when the replica serving a request dies under it (a
                    // POST/PATCH/PUT with its body streamed is not retried): unacknowledged.
                    Err(Failed::Status(StatusCode::BAD_GATEWAY, _)) => {
                        cut.fetch_add(1, Ordering::SeqCst);
                    }
                    // Anything else (say `BLOB_UNKNOWN` for a blob acknowledged a request
                    // before) is the cluster going wrong.
                    Err(e) => failed
                        .lock()
                        .expect("lock")
                        .push(format!("{}: {e:?}", img.repo)),
                }
            });
        }
        let import_repo = format!("crash/imp{it}");
        let importing = rng.below(2) == 0;
        let import_acked = importing.then(|| round.import(&c, &lb, &import_repo, tar.clone()));
        let deleted = round.maybe_delete(&c, &lb, &mut acked, &mut rng, &mut forgotten);
        // Somewhere in the pushes, the import, the delete or the quiet after.
        round.until_kill(&mut rng, 80).await;
        if round.in_flight() {
            killed_mid_push += 1;
        }
        cl.replicas[victim].kill();
        // Reads go on while it is down: nginx moves a GET it cannot connect with (or whose
        // cached connection died) to a live replica.
        if !acked.is_empty() {
            let img = &acked[rng.below(acked.len() as u64) as usize];
            if let Err(e) = verify_image(&c, &lb, img).await {
                panic!("iteration {it}: a pull with replica {victim} down: {e}");
            }
        }
        let checkpoint = it % CHECKPOINT == CHECKPOINT - 1 || it + 1 == n;
        if checkpoint {
            // fsck on the dead replica's data dir (its lock is free) while the others take
            // pushes: a clean report is the claim that fsck may run beside a serving cluster.
            let dir = cl.replicas[victim].data_dir().to_path_buf();
            let env = fsck_env.clone();
            let t = Instant::now();
            let fsck = tokio::task::spawn_blocking(move || {
                let env: Vec<(&str, &str)> =
                    env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
                fsck_in_env(&dir, false, &env)
            });
            let mut k = 0;
            while !fsck.is_finished() {
                let img = make_image(
                    "crash/during-fsck",
                    &format!("f{it}-{k}"),
                    rng.next() % 1000,
                    1000,
                );
                k += 1;
                if push_image(&c, &lb, &img, k % 2 == 0).await.is_ok() {
                    pushed_during_fsck += 1;
                    landed.lock().expect("lock").push(img);
                }
            }
            let (clean, report) = fsck.await.expect("fsck task");
            fsck_time += t.elapsed();
            assert!(
                clean,
                "iteration {it}: fsck beside the serving replicas:\n{report}"
            );
        }
        round.join().await;
        let failed = std::mem::take(&mut *failed.lock().expect("lock"));
        assert!(
            failed.is_empty(),
            "iteration {it}: pushes failed: {failed:?}"
        );
        let addr = cl.replicas[victim].addr();
        cl.replicas[victim].restart();
        assert_eq!(
            cl.replicas[victim].addr(),
            addr,
            "the replica came back on another port: the balancer no longer reaches it"
        );
        let mut bases = vec![lb.clone()];
        bases.extend(cl.replicas.iter().map(|s| s.base_url()));
        if let Some(import_acked) = import_acked {
            let acked = import_acked.load(Ordering::SeqCst);
            if check_import(&c, &bases, &import_repo, acked, whole, it).await {
                imports_seen += 1;
            }
        }
        let mut landed = std::mem::take(&mut *landed.lock().expect("lock"));
        if let Some((repo, digest)) = &deleted {
            forgotten += forget_deleted(&mut landed, repo, digest);
        }
        verify_everywhere(&c, &bases, &landed, &format!("iteration {it}")).await;
        total_acked += landed.len();
        acked.extend(landed);
        if checkpoint {
            verify_everywhere(&c, &bases, &acked, &format!("checkpoint {it}")).await;
        }
    }
    eprintln!(
        "{n} kills of {replicas} replicas in {:?}: {total_acked} pushes acknowledged ({pushed_during_fsck} while fsck ran, {fsck_time:?} in fsck), {} cut (502), {} still held, {forgotten} forgotten with a deleted twin, {imports_seen} imports whole, {killed_mid_push} kills with requests in flight",
        started.elapsed(),
        cut.load(Ordering::SeqCst),
        acked.len()
    );
    assert!(imports_seen > 0, "no import ever completed");
    assert!(
        total_acked >= n,
        "too few pushes got through ({total_acked})"
    );
    assert!(
        killed_mid_push >= n / 5,
        "too few kills hit requests in flight ({killed_mid_push})"
    );
}
