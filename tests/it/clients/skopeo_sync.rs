//! skopeo (Debian): `copy --all` of a multi-platform OCI index (from an OCI
//! layout) and of a Docker schema 2 manifest list (registry to registry),
//! then `sync` of the whole repository to `dir:` directories and back into
//! another repository. Every digest must survive
//! (`--preserve-digests`); the index and list bytes must come back
//! unchanged at every step.

use std::fs;
use std::path::{Path, PathBuf};

use super::harness::{state_dir, tool, Cmd, Http, Out};
use super::image::{host_arch, tags, Flavor, Image, Index, DOCKER_LIST, OCI_INDEX};
use crate::support::Server;

struct Skopeo {
    bin: PathBuf,
    policy: PathBuf,
}

impl Skopeo {
    fn new(dir: &Path) -> Skopeo {
        let policy = dir.join("policy.json");
        fs::write(
            &policy,
            br#"{"default":[{"type":"insecureAcceptAnything"}]}"#,
        )
        .expect("write policy.json");
        Skopeo {
            bin: tool("skopeo"),
            policy,
        }
    }

    /// `skopeo sync --all --preserve-digests ARGS`: every platform, every digest kept.
    fn sync_all(&self, args: &[&str]) -> Out {
        let mut all = vec!["sync", "--all", "--preserve-digests"];
        all.extend_from_slice(args);
        self.run(&all)
    }

    fn run(&self, args: &[&str]) -> Out {
        Cmd::new(&self.bin)
            .arg("--policy")
            .arg(&self.policy)
            .args(args)
            .run()
    }
}

#[test]
fn skopeo_copy_all_and_sync_a_repository() {
    let server = Server::start();
    let http = Http::new();
    let work = state_dir("airdock-skopeo-sync-");
    let skopeo = Skopeo::new(work.path());
    let host = server.host();
    let plain = [
        "--src-tls-verify=false",
        "--src-no-creds",
        "--dest-tls-verify=false",
        "--dest-no-creds",
    ];

    // copy --all: a multi-platform OCI index, from an OCI layout.
    let oci = Index::build(Flavor::Oci, "sync-oci");
    assert_eq!(oci.index.media_type, OCI_INDEX);
    let layout = work.path().join("oci-src");
    oci.write_oci_layout(&layout, "v1");
    let mut args = vec![
        "copy",
        "--all",
        "--preserve-digests",
        "--dest-tls-verify=false",
        "--dest-no-creds",
    ];
    let src = format!("oci:{}:v1", layout.display());
    let dst = format!("docker://{host}/clients/sync:oci-index");
    args.extend([src.as_str(), dst.as_str()]);
    skopeo.run(&args);
    oci.assert_served(&http, &server, "clients/sync", "oci-index");

    // copy --all: a Docker manifest list, registry to registry.
    let list = Index::build(Flavor::Docker, "sync-docker");
    assert_eq!(list.index.media_type, DOCKER_LIST);
    list.push_http(&http, &server, "clients/staging", "list");
    let src = format!("docker://{host}/clients/staging:list");
    let dst = format!("docker://{host}/clients/sync:docker-list");
    let mut args = vec!["copy", "--all", "--preserve-digests"];
    args.extend(plain);
    args.extend([src.as_str(), dst.as_str()]);
    skopeo.run(&args);
    list.assert_served(&http, &server, "clients/sync", "docker-list");

    // And a plain single-platform image in the same repository.
    let single = Image::build(Flavor::Oci, host_arch(), "sync-single");
    single.push_http(&http, &server, "clients/sync", "single");

    let expected = [
        ("docker-list", &list.index),
        ("oci-index", &oci.index),
        ("single", &single.manifest),
    ];
    let mut want_tags: Vec<String> = expected.iter().map(|(t, _)| t.to_string()).collect();
    want_tags.sort();

    // sync: the whole repository to directories (one per tag).
    let mirror = work.path().join("mirror");
    let repo = format!("{host}/clients/sync");
    let mirror_s = mirror.display().to_string();
    skopeo.sync_all(&[
        "--src",
        "docker",
        "--dest",
        "dir",
        "--src-tls-verify=false",
        "--src-no-creds",
        &repo,
        &mirror_s,
    ]);
    let mut dirs: Vec<String> = fs::read_dir(&mirror)
        .expect("read the sync destination")
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    dirs.sort();
    let want_dirs: Vec<String> = want_tags.iter().map(|t| format!("sync:{t}")).collect();
    assert_eq!(
        dirs, want_dirs,
        "skopeo sync must write one directory per tag"
    );
    for (tag, top) in expected {
        let got =
            fs::read(mirror.join(format!("sync:{tag}/manifest.json"))).expect("manifest.json");
        assert!(
            got == top.bytes,
            "sync:{tag}/manifest.json differs from what was pushed\n got: {}\nwant: {}",
            String::from_utf8_lossy(&got),
            String::from_utf8_lossy(&top.bytes)
        );
    }
    // Every platform of both multi-platform images came along (--all).
    for blob in oci.parts().into_iter().chain(list.parts()) {
        let found = fs::read_dir(&mirror)
            .expect("read mirror")
            .filter_map(Result::ok)
            .any(|d| {
                d.path().join(blob.hex()).is_file()
                    || d.path()
                        .join(format!("{}.manifest.json", blob.hex()))
                        .is_file()
            });
        assert!(
            found,
            "{} ({}) is missing from the synced directories",
            blob.digest, blob.media_type
        );
    }

    let assert_synced = |repo: &str| {
        assert_eq!(tags(&http, &server, repo), want_tags);
        oci.assert_served(&http, &server, repo, "oci-index");
        list.assert_served(&http, &server, repo, "docker-list");
    };

    // sync back: directories to another repository prefix.
    skopeo.sync_all(&[
        "--src",
        "dir",
        "--dest",
        "docker",
        "--dest-tls-verify=false",
        "--dest-no-creds",
        &mirror_s,
        &format!("{host}/clients/back"),
    ]);
    // Each directory `sync:TAG` becomes `clients/back/sync:TAG`.
    assert_synced("clients/back/sync");
    super::image::assert_manifest_served(
        &http,
        &server,
        "clients/back/sync",
        "single",
        &single.manifest,
    );

    // And registry to registry, the whole repository at once.
    skopeo.sync_all(&[
        "--src",
        "docker",
        "--dest",
        "docker",
        "--src-tls-verify=false",
        "--src-no-creds",
        "--dest-tls-verify=false",
        "--dest-no-creds",
        &repo,
        &format!("{host}/clients/again"),
    ]);
    assert_synced("clients/again/sync");
}
