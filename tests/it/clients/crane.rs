//! crane (go-containerregistry, pinned in scripts/install-clients.sh):
//! push (a `docker save` tarball and an OCI layout holding a multi-platform
//! index), pull (OCI layout out, compared blob by blob), copy, catalog, ls,
//! delete.

use std::fs;
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::harness::{state_dir, tool, Cmd, Http, Out};
use super::image::{host_arch, resolve, sha256_digest, tags, Flavor, Image, Index};
use crate::support::Server;

struct Crane {
    bin: PathBuf,
    docker_config: PathBuf,
}

impl Crane {
    fn new(dir: &Path) -> Crane {
        let docker_config = dir.join("docker-config");
        fs::create_dir_all(&docker_config).expect("create docker config dir");
        fs::write(docker_config.join("config.json"), b"{}").expect("write config.json");
        Crane {
            bin: tool("crane"),
            docker_config,
        }
    }

    fn cmd(&self, args: &[&str]) -> Cmd {
        Cmd::new(&self.bin)
            .env("DOCKER_CONFIG", &self.docker_config)
            .args(args)
            .arg("--insecure")
    }

    fn run(&self, args: &[&str]) -> Out {
        self.cmd(args).run()
    }

    fn lines(&self, args: &[&str]) -> Vec<String> {
        self.run(args)
            .stdout_text()
            .lines()
            .map(|l| l.trim().to_string())
            .filter(|l| !l.is_empty())
            .collect()
    }
}

/// The blob `digest` of OCI layout `dir`.
fn layout_blob(dir: &Path, digest: &str) -> Vec<u8> {
    let hex = digest.strip_prefix("sha256:").expect("sha256 digest");
    fs::read(dir.join("blobs/sha256").join(hex)).unwrap_or_else(|e| {
        panic!(
            "{digest} is not in the pulled layout {}: {e}",
            dir.display()
        )
    })
}

fn layout_index(dir: &Path) -> Value {
    serde_json::from_slice(&fs::read(dir.join("index.json")).expect("read index.json"))
        .expect("index.json is JSON")
}

#[test]
fn crane_push_pull_copy_catalog_ls_delete() {
    let server = Server::start();
    let http = Http::new();
    let work = state_dir("airdock-crane-");
    let crane = Crane::new(work.path());
    let host = server.host();

    // push: a `docker save` tarball. crane compresses the layer itself.
    let image = Image::build(Flavor::Docker, host_arch(), "crane");
    let tarball = work.path().join("image.tar");
    image.write_docker_archive(&tarball, "airdock-test/crane:local");
    let pushed = crane
        .run(&[
            "push",
            &tarball.display().to_string(),
            &format!("{host}/clients/crane:v1"),
        ])
        .stdout_text();
    let digest = resolve(&http, &server, "clients/crane", "v1").expect("v1 was pushed");
    assert!(
        pushed.trim() == format!("{host}/clients/crane@{digest}"),
        "crane push prints the pushed digest: {pushed}"
    );
    image.assert_pushed_equivalent(&http, &server, "clients/crane", "v1");
    assert_eq!(
        crane.lines(&["digest", &format!("{host}/clients/crane:v1")]),
        vec![digest.clone()]
    );
    let config = crane
        .run(&["config", &format!("{host}/clients/crane:v1")])
        .stdout;
    assert!(
        config == image.config.bytes,
        "crane config returns other bytes"
    );

    // push: an OCI layout with a multi-platform index, digests preserved.
    let index = Index::build(Flavor::Oci, "crane-index");
    let layout = work.path().join("layout");
    index.write_oci_layout(&layout, "multi");
    crane.run(&[
        "push",
        &layout.display().to_string(),
        &format!("{host}/clients/crane:multi"),
    ]);
    index.assert_served(&http, &server, "clients/crane", "multi");

    // pull: the index into an OCI layout; every blob must be byte-equal.
    let out = work.path().join("pulled-index");
    crane.run(&[
        "pull",
        "--format",
        "oci",
        &format!("{host}/clients/crane:multi"),
        &out.display().to_string(),
    ]);
    let top = layout_index(&out);
    assert!(
        top["manifests"]
            .as_array()
            .is_some_and(|m| m.iter().any(|d| d["digest"] == index.index.digest)),
        "the pulled layout's index.json must reference {}: {top}",
        index.index.digest
    );
    for blob in index.parts().into_iter().chain([&index.index]) {
        assert!(
            layout_blob(&out, &blob.digest) == blob.bytes,
            "pulled {} differs",
            blob.digest
        );
    }

    // pull: the single image by digest, as a tarball (crane's default).
    let out_tar = work.path().join("pulled.tar");
    crane.run(&[
        "pull",
        &format!("{host}/clients/crane@{digest}"),
        &out_tar.display().to_string(),
    ]);
    let listing = Cmd::new(tool("tar"))
        .arg("-xOf")
        .arg(&out_tar)
        .arg("manifest.json")
        .run()
        .json();
    let config_name = listing[0]["Config"]
        .as_str()
        .expect("Config in manifest.json")
        .to_string();
    let pulled_config = Cmd::new(tool("tar"))
        .arg("-xOf")
        .arg(&out_tar)
        .arg(&config_name)
        .run()
        .stdout;
    assert_eq!(
        sha256_digest(&pulled_config),
        image.config.digest,
        "crane pull: config"
    );

    // copy: registry to registry, index and all.
    crane.run(&[
        "copy",
        &format!("{host}/clients/crane:multi"),
        &format!("{host}/clients/crane-copy:multi"),
    ]);
    index.assert_served(&http, &server, "clients/crane-copy", "multi");
    crane.run(&[
        "copy",
        &format!("{host}/clients/crane:v1"),
        &format!("{host}/clients/crane-copy:v1"),
    ]);
    assert_eq!(
        resolve(&http, &server, "clients/crane-copy", "v1"),
        Some(digest.clone())
    );

    // catalog and ls.
    let catalog = crane.lines(&["catalog", &host]);
    for repo in ["clients/crane", "clients/crane-copy"] {
        assert!(
            catalog.iter().any(|r| r == repo),
            "crane catalog lacks {repo}: {catalog:?}"
        );
    }
    let mut listed = crane.lines(&["ls", &format!("{host}/clients/crane")]);
    listed.sort();
    assert_eq!(
        listed,
        vec!["multi".to_string(), "v1".to_string()],
        "crane ls"
    );

    // delete: by digest; the tag pointing at it goes too.
    crane.run(&[
        "delete",
        &format!("{host}/clients/crane-copy@{}", index.index.digest),
    ]);
    assert_eq!(
        resolve(&http, &server, "clients/crane-copy", &index.index.digest),
        None
    );
    assert_eq!(resolve(&http, &server, "clients/crane-copy", "multi"), None);
    assert_eq!(
        tags(&http, &server, "clients/crane-copy"),
        vec!["v1".to_string()]
    );
    assert_eq!(
        crane.lines(&["ls", &format!("{host}/clients/crane-copy")]),
        vec!["v1".to_string()]
    );
    // The original repository is untouched.
    index.assert_served(&http, &server, "clients/crane", "multi");
    let gone = crane
        .cmd(&[
            "manifest",
            &format!("{host}/clients/crane-copy@{}", index.index.digest),
        ])
        .run_unchecked();
    assert!(
        !gone.status.success(),
        "crane manifest of a deleted digest must fail"
    );
}
