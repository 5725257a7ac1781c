//! Issue 12 with real clients: what one replica of a cluster (PostgreSQL + versitygw, see
//! `cluster.rs`) took in, another replica and the nginx round-robin in front of them serve to
//! imgpkg, docker and containerd; and what docker pushes through the balancer (its requests
//! spread over both replicas) every client pulls back.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::cluster::Cluster;
use crate::fixture::fixture_tar;
use crate::imgpkg::{import_ok, TOKEN};
use crate::imgpkg_tools::{lock_file_images, Imgpkg};
use crate::nginx::Nginx;
use crate::support::Server;

/// Every `.imgpkg/images.yml` under `dir`: the bundle's own and, after `--recursive`, each
/// nested bundle's (`.imgpkg/bundles/<digest>/.imgpkg/images.yml`).
fn images_ymls(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).expect("read_dir").flatten() {
            let p = e.path();
            if p.is_dir() {
                todo.push(p);
            } else if p.ends_with(".imgpkg/images.yml") {
                found.push(p);
            }
        }
    }
    found.sort();
    found
}

/// A request as nginx logged it: (upstream, method, URI, status).
type Served = (String, String, String, String);

/// The requests nginx passed on, once its log has stopped growing (a request is logged just
/// after its response went out, so one a client has just finished may not be there yet). A
/// `-` upstream (nginx answered itself) is left out: the TLS probe that docker and imgpkg send
/// first to a registry they may reach over plain HTTP.
fn settled(nginx: &Nginx, at_least: usize) -> Vec<Served> {
    let mut seen = nginx.requests(at_least);
    loop {
        std::thread::sleep(Duration::from_millis(200));
        let now = nginx.requests(0);
        if now.len() == seen.len() {
            break;
        }
        seen = now;
    }
    seen.into_iter().filter(|r| r.0 != "-").collect()
}

/// `served` took turns over `replicas`: only their addresses, none retried on the other after
/// an error (an upstream of `A, B`, which would hide a failure), and their counts at most one
/// apart (nginx's round-robin in arrival order, whatever order concurrent requests end in).
fn assert_balanced(served: &[Served], replicas: &[Server]) {
    let mut counts = vec![0usize; replicas.len()];
    for r in served {
        let at = replicas.iter().position(|s| s.addr().to_string() == r.0);
        let at = at.unwrap_or_else(|| panic!("{r:?}: not one replica (a retry?): {served:?}"));
        counts[at] += 1;
    }
    let (lo, hi) = (counts.iter().min(), counts.iter().max());
    assert!(
        lo.zip(hi).is_some_and(|(lo, hi)| *lo > 0 && hi - lo <= 1),
        "round-robin {counts:?}: {served:?}"
    );
}

/// A bundle fixture with a nested bundle, imported through replica A, is pulled by the real
/// `imgpkg pull -b --recursive` through replica B on its own (B never saw the import request:
/// it learns the import from the database on that pull's first request) and through the
/// balancer. Each time imgpkg finds every image hosted next to the bundle, so the
/// `images.yml` it writes (the bundle's and each nested bundle's) names that address, and
/// every image named there pulls through it with `imgpkg pull -i` (a bundle named there with
/// `-b`). Then `airdock import --server` through the balancer leaves the same fixture state
/// on both replicas.
#[tokio::test]
async fn imgpkg_pulls_through_another_replica_and_the_balancer_what_one_imported() {
    let cl = Cluster::balanced(2, &["--admin-token", TOKEN]);
    let (a, b) = (&cl.replicas[0], &cl.replicas[1]);
    let repo = "lab/platform";
    let report = import_ok(a, repo, fixture_tar("platform-bundle")).await;
    let tag = report["root_bundle"]["tag"]
        .as_str()
        .unwrap_or_else(|| panic!("a bundle fixture: {report}"))
        .to_owned();
    // The report's images.yml is relocated to the replica the import went to.
    let reported = crate::imgpkg::lock_images(report["images_yml"].as_str().expect("images_yml"));
    assert!(
        reported.iter().all(|i| i.starts_with(&a.host())),
        "{reported:?}"
    );
    let bundles: Vec<String> = report["images"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|i| i["kind"] == "bundle")
        .filter_map(|i| i["digest"].as_str().map(str::to_owned))
        .collect();
    assert!(bundles.len() >= 2, "a bundle in a bundle: {report}");

    let imgpkg = Imgpkg::new("airdock-lb-imgpkg-");
    let lb = cl.lb_base().trim_start_matches("http://").to_owned();
    for (round, host) in [("replica-b", b.host()), ("balancer", lb)] {
        let out = imgpkg.dir().join(round);
        let stdout = imgpkg.pull(&format!("{host}/{repo}:{tag}"), &out);
        assert!(
            stdout.contains("is hosting every image"),
            "{round}: {stdout}"
        );
        let ymls = images_ymls(&out);
        assert!(
            ymls.len() >= 2,
            "{round}: the bundle's and a nested one's: {ymls:?}"
        );
        let mut pulled = 0;
        for yml in &ymls {
            let images = lock_file_images(yml);
            assert!(!images.is_empty(), "{}", yml.display());
            for img in images {
                assert!(
                    img.starts_with(&format!("{host}/{repo}@sha256:")),
                    "{round}: {img} in {}",
                    yml.display()
                );
                let digest = img.rsplit('@').next().unwrap_or_default();
                let flag = if bundles.iter().any(|d| d == digest) {
                    "-b"
                } else {
                    "-i"
                };
                let dir = out.join(format!("pulled-{pulled}"));
                imgpkg.run(&["pull", flag, &img, "-o", dir.to_str().expect("utf-8")]);
                assert!(
                    std::fs::read_dir(&dir).is_ok_and(|mut d| d.next().is_some()),
                    "{round}: {img} pulled nothing"
                );
                pulled += 1;
            }
        }
        assert!(pulled >= 3, "{round}: {pulled} images");
    }
    // The balancer's pulls took turns over both replicas.
    let served = settled(cl.nginx.as_ref().expect("balancer"), 10);
    assert!(served.len() >= 10, "{served:?}");
    assert_balanced(&served, &cl.replicas);

    // `airdock import --server` through the balancer (the tar streamed through nginx to
    // whichever replica's turn it is): both replicas then hold exactly what imgpkg's own
    // registry held for that fixture, and A serves its bundle to imgpkg.
    let out = std::process::Command::new(crate::support::AIRDOCK_BIN)
        .arg("import")
        .arg(crate::fixture::fixtures().join("tars/guestbook-bundle.tar"))
        .args(["-r", "lab/guestbook", "--json", "--server", &cl.lb_base()])
        .env("AIRDOCK_ADMIN_TOKEN", TOKEN)
        .output()
        .expect("run airdock import");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON report");
    let tag = report["root_bundle"]["tag"].as_str().expect("a bundle");
    for s in &cl.replicas {
        crate::imgpkg::assert_fixture_state(s, "lab/guestbook", "guestbook-bundle").await;
    }
    let out = imgpkg.dir().join("guestbook-a");
    let stdout = imgpkg.pull(&format!("{}/lab/guestbook:{tag}", a.host()), &out);
    assert!(stdout.contains("is hosting every image"), "{stdout}");
}

/// docker (its own dockerd) pushes an image with a 24 MiB layer through nginx round-robin over
/// two replicas: every request of the push goes to the next replica, so each upload session is
/// begun on one, written on the other and finished on the first, and the big layer's body
/// streams through nginx into the session's S3 multipart upload. Both replicas then serve the
/// tag. docker pulls it back through the balancer by tag and by digest from nothing local;
/// containerd pulls it through the balancer with `ctr` (unpacked, files read back) and with
/// crictl through the CRI plugin (by digest, the balancer named in a `hosts.toml`).
#[test]
fn docker_and_containerd_push_and_pull_through_the_balancer() {
    use crate::clients::containerd::Containerd;
    use crate::clients::docker::Docker;
    use crate::clients::harness::{state_dir, Http};
    use crate::clients::image::{host_arch, resolve, Flavor, Image};

    let cl = Cluster::balanced(2, &[]);
    let nginx = cl.nginx.as_ref().expect("balancer");
    let lb = cl.lb_base().trim_start_matches("http://").to_owned();
    let docker = Docker::start();
    let ctrd = Containerd::start();
    let http = Http::new();
    let work = state_dir("airdock-lb-docker-");

    let image = Image::with_bulk(Flavor::Docker, host_arch(), "lb", 24 << 20);
    let remote = format!("{lb}/clients/lb:v1");
    let digest = docker.load_and_push(&image, &remote, work.path());
    for s in &cl.replicas {
        assert_eq!(
            resolve(&http, s, "clients/lb", "v1").as_deref(),
            Some(digest.as_str()),
            "the tag through {}",
            s.addr()
        );
    }
    // docker sends the push's requests one at a time (the layer, then the config, then the
    // manifest), so each went to the other replica than the one before: both upload sessions
    // were begun (POST) on one replica, written (PATCH) on the other and finished (PUT) on the
    // first.
    let pushed = settled(nginx, 12);
    let uploads = pushed.iter().filter(|r| r.1 == "PATCH").count();
    assert_eq!(uploads, 2, "the layer and the config: {pushed:?}");
    for pair in pushed.windows(2) {
        assert_ne!(pair[0].0, pair[1].0, "round-robin: {pushed:?}");
    }
    for r in &pushed {
        assert!(r.3.starts_with('2') || r.3 == "404", "{r:?}");
    }

    // Pull by tag and by digest through the balancer, from nothing local.
    docker.assert_pulls_back(&image, &remote, &digest, work.path());
    let by_digest = format!("{lb}/clients/lb@{digest}");

    // containerd: ctr by tag (unpacked by the native snapshotter), crictl by digest.
    ctrd.pull_plain_http("airdock", &remote);
    ctrd.assert_unpacked("airdock", &remote, &image);
    ctrd.hosts_toml(
        &lb,
        &format!(
            "server = \"http://{lb}\"\n\n[host.\"http://{lb}\"]\n  capabilities = [\"pull\", \"resolve\"]\n"
        ),
    );
    ctrd.crictl(&["pull", &by_digest]);
    let inspected = ctrd.crictl(&["inspecti", "-o", "json", &by_digest]).json();
    assert_eq!(
        inspected["status"]["id"], image.config.digest,
        "crictl inspecti: {inspected}"
    );

    // Every pull took turns over both replicas.
    let served = settled(nginx, pushed.len() + 10);
    assert_balanced(&served[pushed.len()..], &cl.replicas);
}
