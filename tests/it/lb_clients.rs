//! Issue 12 with real clients: what one replica of a cluster (PostgreSQL + versitygw, see
//! `cluster.rs`) took in, another replica and the nginx round-robin in front of them serve to
//! imgpkg, docker and containerd; and what docker pushes through the balancer (its requests
//! spread over both replicas) every client pulls back.

use std::path::{Path, PathBuf};

use crate::cluster::Cluster;
use crate::fixture::fixture_tar;
use crate::imgpkg::{import_ok, TOKEN};
use crate::imgpkg_tools::{lock_file_images, Imgpkg};

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

/// A bundle fixture with a nested bundle, imported through replica A, is pulled by the real
/// `imgpkg pull -b --recursive` through replica B on its own (B never saw the import request:
/// it learns the import from the database on that pull's first request) and through the
/// balancer. Each time imgpkg finds every image hosted next to the bundle, so the
/// `images.yml` it writes (the bundle's and each nested bundle's) names that address, and
/// every image named there pulls through it with `imgpkg pull -i` (a bundle named there with
/// `-b`).
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
    // The balancer's pulls went to both replicas in turn. (The `-` lines with no upstream
    // are imgpkg's TLS probes, which `--registry-insecure` tries first and nginx refuses.)
    let served: Vec<_> = cl
        .nginx
        .as_ref()
        .expect("balancer")
        .requests(10)
        .into_iter()
        .filter(|r| r.0 != "-")
        .collect();
    assert!(served.len() >= 10, "{served:?}");
    for pair in served.windows(2) {
        assert_ne!(pair[0].0, pair[1].0, "round-robin: {served:?}");
    }
}
