//! Power loss under concurrent pushes and imports. kill -9 keeps the page cache, so the crash
//! test cannot see a missing fsync; here airdock runs on `powerfs` (tests/powerfs), a FUSE
//! filesystem that keeps only what was made durable (file bytes by fsync/fdatasync, directory
//! entries by an fsync of their directory). At a random instant the power is cut: the
//! filesystem fails every later operation and writes out its durable-only tree, airdock is
//! killed, and a new airdock starts on that tree. Every acknowledged push and import must
//! read back byte for byte, with the admin token it had, and `airdock fsck` must be clean.
//!
//! The mount needs /dev/fuse and root (CI runs as root): without them the test fails, it
//! does not skip.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use reqwest::{Client, StatusCode};
use serde_json::Value;
use tempfile::TempDir;

use crate::crash::post_import;
use crate::fixture::fixture_tar;
use crate::images::{client, fsck, make_image, push_image, sha256, verify_image, Image, Rng};
use crate::imgpkg::tag_map;
use crate::support::{scratch_dir, Server};

/// How long powerfs may take to mount, or to write out its durable tree.
const POWERFS_TIMEOUT: Duration = Duration::from_secs(60);

/// powerfs makes each directory fsync this slow: the window in which a pushed blob's entry
/// is visible but not yet durable, where a second push of the same blob must not be
/// acknowledged on the strength of that entry alone.
const DIR_FSYNC_DELAY_MS: &str = "20";

/// The powerfs binary, built once per test run with the profile this test was built with.
/// It is a workspace member of its own (cargo gives integration tests only their own
/// package's binaries), so it is built here; cargo makes that a no-op when it is current.
fn powerfs_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        // This test binary is <target>[/<triple>]/<profile>/deps/it-<hash>: build powerfs with
        // the same profile into cargo's own target dir (inherited CARGO_TARGET_DIR or the
        // workspace's), and take its path from cargo's artifact messages rather than guess the
        // layout (`.cargo/config.toml` names a build target, which adds a directory level).
        let exe = std::env::current_exe().expect("current exe");
        let profile = exe
            .parent()
            .and_then(Path::parent)
            .and_then(Path::file_name)
            .and_then(|n| n.to_str())
            .expect("test binary under <profile>/deps")
            .to_owned();
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.args([
            "build",
            "--quiet",
            "--message-format=json-render-diagnostics",
            "-p",
            "airdock-powerfs",
            "--bin",
            "powerfs",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stderr(Stdio::inherit());
        if profile != "debug" {
            cmd.args(["--profile", &profile]);
        }
        let out = cmd.output().expect("run cargo build for powerfs");
        assert!(
            out.status.success(),
            "building tests/powerfs failed: {}",
            out.status
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|m| m["reason"] == "compiler-artifact" && m["target"]["name"] == "powerfs")
            .find_map(|m| m["executable"].as_str().map(PathBuf::from))
            .expect("cargo named the powerfs executable")
    })
}

/// A mounted powerfs, unmounted (and its process stopped) when dropped.
struct PowerFs {
    child: Child,
    lines: mpsc::Receiver<String>,
    mnt: PathBuf,
    // Declared last: removed after the unmount.
    _dir: TempDir,
}

impl PowerFs {
    fn mount() -> PowerFs {
        let dir = scratch_dir("airdock-powerfs-");
        let mnt = dir.path().join("mnt");
        std::fs::create_dir(&mnt).expect("mount point");
        let mut child = Command::new(powerfs_bin())
            .arg(dir.path().join("state"))
            .arg(&mnt)
            .arg(DIR_FSYNC_DELAY_MS)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start powerfs");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, lines) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let fs = PowerFs {
            child,
            lines,
            mnt,
            _dir: dir,
        };
        match fs.lines.recv_timeout(POWERFS_TIMEOUT) {
            Ok(line) if line == "ready" => fs,
            other => panic!(
                "powerfs could not mount FUSE ({other:?}; its error is above). The power-loss \
                 test needs /dev/fuse and root (CI runs as root); run scripts/install-deps.sh"
            ),
        }
    }

    /// Cut the power (now, or during the `at`-th directory fsync from now, before it takes
    /// effect): every later operation on the mount fails, and the durable-only tree of the
    /// mount is written into `into`.
    fn cut(&mut self, at: Cut, into: &Path) -> String {
        let stdin = self.child.stdin.as_mut().expect("powerfs stdin");
        match at {
            Cut::Now => writeln!(stdin, "cut {}", into.display()),
            Cut::InDirFsync(n) => writeln!(stdin, "arm {n} {}", into.display()),
        }
        .and_then(|()| stdin.flush())
        .expect("send cut to powerfs");
        match self.lines.recv_timeout(POWERFS_TIMEOUT) {
            Ok(line) if line.starts_with("cut ") => line,
            other => panic!("powerfs did not write its durable tree: {other:?}"),
        }
    }
}

impl Drop for PowerFs {
    fn drop(&mut self) {
        // End of stdin: powerfs unmounts and exits.
        drop(self.child.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        // A killed FUSE server leaves a dead mount behind; detach it.
        let _ = Command::new("umount").arg("-l").arg(&self.mnt).status();
    }
}

/// When the power fails.
#[derive(Clone, Copy, Debug)]
enum Cut {
    Now,
    /// In the middle of the n-th directory fsync from now: the instant a writer that relies
    /// on an entry it did not make durable is caught.
    InDirFsync(u64),
}

/// What one power cut left.
struct Outcome {
    images: usize,
    imports: usize,
    /// Acknowledged things that did not come back, one line each.
    lost: Vec<String>,
    fsck_clean: bool,
    fsck_report: String,
    durable: String,
}

/// Tags of an imported repository must be exactly those of a whole import, each manifest
/// byte-exact (by digest) with its blobs or children servable.
async fn check_import(
    c: &Client,
    s: &Server,
    repo: &str,
    whole: &BTreeMap<String, String>,
) -> Vec<String> {
    let mut lost = Vec::new();
    let tags = tag_map(s, repo).await;
    if tags != *whole {
        lost.push(format!("import {repo}: tags {tags:?}, expected {whole:?}"));
        return lost;
    }
    for (tag, digest) in whole {
        let get = |path: String| async move {
            let r = c
                .get(s.url(&path))
                .header("Accept", "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json")
                .send()
                .await
                .map_err(|e| format!("{path}: {e}"))?;
            let status = r.status();
            let body = r.bytes().await.map_err(|e| format!("{path}: {e}"))?;
            if status != StatusCode::OK {
                return Err(format!("{path}: {status}"));
            }
            Ok(body)
        };
        let m = match get(format!("/v2/{repo}/manifests/{tag}")).await {
            Ok(m) if sha256(&m) == *digest => m,
            Ok(_) => {
                lost.push(format!("import {repo}:{tag}: manifest differs"));
                continue;
            }
            Err(e) => {
                lost.push(format!("import {repo}:{tag}: {e}"));
                continue;
            }
        };
        let m: Value = serde_json::from_slice(&m).unwrap_or_default();
        let blobs = m["layers"]
            .as_array()
            .into_iter()
            .flatten()
            .chain([&m["config"]]);
        for d in blobs.filter_map(|b| b["digest"].as_str()) {
            match get(format!("/v2/{repo}/blobs/{d}")).await {
                Ok(b) if sha256(&b) == d => {}
                other => lost.push(format!("import {repo}:{tag}: blob {d}: {:?}", other.err())),
            }
        }
        let children = m["manifests"].as_array().into_iter().flatten();
        for d in children.filter_map(|b| b["digest"].as_str()) {
            if let Err(e) = get(format!("/v2/{repo}/manifests/{d}")).await {
                lost.push(format!("import {repo}:{tag}: child {e}"));
            }
        }
    }
    lost
}

/// Run airdock (with `env`) on a fresh powerfs mount under 3 pushing clients and an
/// importing one, cut the power (after `min_acks` acknowledged images and a random delay up
/// to `max_delay` ms, at `cut`), restart on the durable tree and check.
async fn power_loss(
    rng: &mut Rng,
    env: &[(&str, &str)],
    min_acks: usize,
    max_delay: u64,
    cut: Cut,
) -> Outcome {
    let mut fs = PowerFs::mount();
    let data = tempfile::Builder::new()
        .prefix("data-")
        .tempdir_in(&fs.mnt)
        .expect("data dir on powerfs");
    let name = data.path().file_name().expect("data dir name").to_owned();
    // No --admin-token: the server writes <data-dir>/admin-token, which must survive too.
    let mut s = Server::start_in_env(data, &[], env);
    let token = std::fs::read_to_string(s.data_dir().join("admin-token")).expect("admin token");
    let token = token.trim().to_owned();
    let c = client(Duration::from_secs(20));
    let base = s.base_url();
    let tar = fixture_tar("platform-bundle");
    // One import and one image before the race: acknowledged, so they must survive too.
    assert!(post_import(&c, &base, &token, "power/imp-first", tar.clone()).await);
    let whole = tag_map(&s, "power/imp-first").await;
    assert!(!whole.is_empty());
    let first = make_image("power/first", "t", 1, 1000);
    push_image(&c, &base, &first, false)
        .await
        .expect("first push");

    let images: Arc<Mutex<Vec<Image>>> = Arc::new(Mutex::new(vec![first]));
    let imports: Arc<Mutex<Vec<String>>> = Arc::new(Mutex::new(vec!["power/imp-first".into()]));
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = tokio::task::JoinSet::new();
    let salt = rng.next();
    for w in 0..3u64 {
        let (c, base, images, stop) = (
            c.clone(),
            base.clone(),
            Arc::clone(&images),
            Arc::clone(&stop),
        );
        tasks.spawn(async move {
            let mut i = 0u64;
            while !stop.load(Ordering::SeqCst) {
                // The workers push the same blobs at about the same time (into their own
                // repositories): one renames a blob into place, the others find it there.
                let seed = salt.wrapping_add(i) % (1 << 40) + 2;
                let len = 512 + (seed as usize * 7919) % (96 << 10);
                let img = make_image(&format!("power/w{w}"), &format!("t{i}"), seed, len);
                if push_image(&c, &base, &img, (i + w) % 2 == 1).await.is_ok() {
                    images.lock().expect("lock").push(img);
                }
                i += 1;
            }
        });
    }
    {
        let (c, base, imports, stop, token) = (
            c.clone(),
            base.clone(),
            Arc::clone(&imports),
            Arc::clone(&stop),
            token.clone(),
        );
        tasks.spawn(async move {
            let mut i = 0;
            while !stop.load(Ordering::SeqCst) {
                let repo = format!("power/imp{i}");
                if post_import(&c, &base, &token, &repo, tar.clone()).await {
                    imports.lock().expect("lock").push(repo);
                }
                i += 1;
            }
        });
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while images.lock().expect("lock").len() < min_acks && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    tokio::time::sleep(Duration::from_millis(rng.below(max_delay))).await;
    let image_dir = scratch_dir("airdock-powerloss-image-");
    let durable = fs.cut(cut, image_dir.path());
    s.kill();
    stop.store(true, Ordering::SeqCst);
    while tasks.join_next().await.is_some() {}
    drop(s);
    drop(fs);

    // Restart on what the power loss left (an empty data dir if not even that survived).
    let restored = scratch_dir("airdock-powerloss-data-");
    let survived = image_dir.path().join(&name);
    if survived.is_dir() {
        std::fs::remove_dir(restored.path()).expect("empty dir");
        std::fs::rename(&survived, restored.path()).expect("move the durable data dir");
    }
    let mut s = Server::start_in(restored, &[]);
    let c = client(Duration::from_secs(20));
    let images = std::mem::take(&mut *images.lock().expect("lock"));
    let imports = std::mem::take(&mut *imports.lock().expect("lock"));
    let mut lost = Vec::new();
    for img in &images {
        if let Err(e) = verify_image(&c, &s.base_url(), img).await {
            lost.push(format!("image {}:{}: {e}", img.repo, img.tag));
        }
    }
    for repo in &imports {
        lost.extend(check_import(&c, &s, repo, &whole).await);
        let r = c
            .get(s.url(&format!("/admin/v1/imports?repository={repo}")))
            .bearer_auth(&token)
            .send()
            .await
            .expect("list imports");
        if r.status() != StatusCode::OK {
            lost.push(format!(
                "import records with the old admin token: {}",
                r.status()
            ));
            continue;
        }
        let v: Value = r.json().await.expect("json");
        if v["imports"].as_array().map_or(0, Vec::len) != 1 {
            lost.push(format!("import {repo}: record missing: {v}"));
        }
    }
    s.kill();
    let (fsck_clean, fsck_report) = fsck(s.data_dir(), false);
    Outcome {
        images: images.len(),
        imports: imports.len(),
        lost,
        fsck_clean,
        fsck_report,
        durable,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn power_loss_at_a_random_instant_loses_no_acknowledged_push() {
    let mut rng = Rng::seeded();
    for round in 0..5 {
        // Once at a random instant, then in the middle of random directory fsyncs.
        let (cut, delay) = match round {
            0 => (Cut::Now, 1500),
            _ => (Cut::InDirFsync(1 + rng.below(30)), 300),
        };
        let o = power_loss(&mut rng, &[], 0, delay, cut).await;
        eprintln!(
            "round {round}: cut {cut:?}: {} images and {} imports acknowledged; durable tree: {}",
            o.images, o.imports, o.durable
        );
        assert!(
            o.lost.is_empty(),
            "round {round}: acknowledged writes lost to a power cut:\n{}",
            o.lost.join("\n")
        );
        assert!(
            o.fsck_clean,
            "round {round}: fsck after a power cut is not clean:\n{}",
            o.fsck_report
        );
    }
}

/// The test above can fail: with directory fsyncs turned off (the storage crate's test-only
/// `AIRDOCK_TEST_SKIP_DIR_FSYNC`), the same power cut loses acknowledged pushes and this
/// test sees it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn power_loss_without_directory_fsyncs_is_caught() {
    let mut rng = Rng::seeded();
    let o = power_loss(
        &mut rng,
        &[("AIRDOCK_TEST_SKIP_DIR_FSYNC", "1")],
        3,
        200,
        Cut::Now,
    )
    .await;
    eprintln!(
        "{} images and {} imports acknowledged; durable tree: {}; {} lost",
        o.images,
        o.imports,
        o.durable,
        o.lost.len()
    );
    assert!(
        !o.lost.is_empty(),
        "a store that never fsyncs a directory lost nothing: the power-loss test cannot fail"
    );
}
