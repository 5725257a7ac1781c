//! podman (Debian): with its own storage (vfs) and configuration files in
//! a temporary directory, the test loads an image from a `docker save`
//! archive, pushes it to airdock (Docker schema 2 and OCI), removes it, pulls
//! it back by tag, mounts it and reads its files, and pulls a multi-platform
//! OCI index by digest. Plain HTTP through `--tls-verify=false`.

use std::fs;
use std::path::{Path, PathBuf};

use super::harness::Http;
use super::harness::{require_root, state_dir, tool, Cmd, Out};
use super::image::{host_arch, resolve, Flavor, Image, Index, OCI_MANIFEST};
use crate::support::Server;

/// podman with every piece of state and configuration in one directory.
pub(crate) struct Podman {
    bin: PathBuf,
    dir: tempfile::TempDir,
}

impl Podman {
    pub(crate) fn new() -> Podman {
        require_root("the podman test");
        let bin = tool("podman");
        let dir = state_dir("airdock-podman-");
        let d = dir.path();
        for sub in ["root", "run", "tmp", "vartmp", "net"] {
            fs::create_dir_all(d.join(sub)).expect("create podman dirs");
        }
        fs::write(
            d.join("storage.conf"),
            format!(
                "[storage]\ndriver = \"vfs\"\ngraphroot = {}\nrunroot = {}\n",
                quote(&d.join("root")),
                quote(&d.join("run"))
            ),
        )
        .expect("write storage.conf");
        fs::write(
            d.join("registries.conf"),
            "unqualified-search-registries = []\n",
        )
        .expect("write registries.conf");
        fs::write(
            d.join("containers.conf"),
            "[engine]\nevents_logger = \"file\"\ncgroup_manager = \"cgroupfs\"\n",
        )
        .expect("write containers.conf");
        fs::write(
            d.join("policy.json"),
            br#"{"default":[{"type":"insecureAcceptAnything"}]}"#,
        )
        .expect("write policy.json");
        fs::write(d.join("auth.json"), b"{}").expect("write auth.json");
        Podman { bin, dir }
    }

    pub(crate) fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn cmd(&self) -> Cmd {
        Cmd::new(&self.bin)
            .env("CONTAINERS_STORAGE_CONF", self.path("storage.conf"))
            .env("CONTAINERS_REGISTRIES_CONF", self.path("registries.conf"))
            .env("CONTAINERS_CONF", self.path("containers.conf"))
            .env("REGISTRY_AUTH_FILE", self.path("auth.json"))
            .env("TMPDIR", self.path("vartmp"))
            .arg("--root")
            .arg(self.path("root"))
            .arg("--runroot")
            .arg(self.path("run"))
            .arg("--storage-driver")
            .arg("vfs")
            .arg("--tmpdir")
            .arg(self.path("tmp"))
            .arg("--network-config-dir")
            .arg(self.path("net"))
            .args(["--events-backend", "file", "--cgroup-manager", "cgroupfs"])
    }

    pub(crate) fn run(&self, args: &[&str]) -> Out {
        self.cmd().args(args).run()
    }

    /// `pull`/`push` with plain HTTP and this directory's signature policy.
    fn transfer(&self, verb: &str, args: &[&str]) -> Out {
        self.cmd()
            .arg(verb)
            .arg("--tls-verify=false")
            .arg("--signature-policy")
            .arg(self.path("policy.json"))
            .args(args)
            .run()
    }

    fn inspect(&self, reference: &str, format: &str) -> String {
        self.run(&["image", "inspect", "--format", format, reference])
            .stdout_text()
            .trim()
            .to_string()
    }

    /// Mount image `reference`, read `files`, unmount.
    fn read_files(&self, reference: &str, files: &[&str]) -> Vec<Vec<u8>> {
        let mount = self.run(&["image", "mount", reference]).stdout_text();
        let root = Path::new(mount.trim());
        let contents: Vec<_> = files.iter().map(|f| fs::read(root.join(f))).collect();
        self.run(&["image", "unmount", reference]);
        contents
            .into_iter()
            .zip(files)
            .map(|(r, f)| r.unwrap_or_else(|e| panic!("{f} in the mounted {reference}: {e}")))
            .collect()
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        // vfs needs no mounts, but an image mount left by a failed test
        // would keep the directory from being removed.
        super::harness::unmount_under(self.dir.path());
    }
}

fn quote(p: &Path) -> String {
    serde_json::to_string(&p.display().to_string()).expect("path to JSON")
}

#[test]
fn podman_push_and_pull() {
    let podman = Podman::new();
    let server = Server::start();
    let http = Http::new();
    let host = server.host();

    // Load an image from a `docker save` archive; its ID is the config digest.
    let image = Image::build(Flavor::Docker, host_arch(), "podman");
    let archive = podman.path("image.tar");
    image.write_docker_archive(&archive, "airdock-test/podman:local");
    podman.run(&["load", "-i", &archive.display().to_string()]);
    let id = image.config.hex().to_string();
    assert_eq!(podman.inspect(&id, "{{.Id}}"), id);

    // Push as Docker schema 2 (the image's own format) and as OCI.
    let remote = format!("{host}/clients/podman:v1");
    podman.run(&["tag", &id, &remote]);
    let digestfile = podman.path("digest-v1");
    podman.transfer(
        "push",
        &["--digestfile", &digestfile.display().to_string(), &remote],
    );
    let digest = fs::read_to_string(&digestfile).expect("read --digestfile");
    assert_eq!(
        resolve(&http, &server, "clients/podman", "v1").as_deref(),
        Some(digest.trim()),
        "the tag must resolve to the digest podman push wrote"
    );
    image.assert_pushed_equivalent(&http, &server, "clients/podman", "v1");

    let remote_oci = format!("{host}/clients/podman:oci");
    podman.run(&["tag", &id, &remote_oci]);
    podman.transfer("push", &["--format", "oci", &remote_oci]);
    let manifest = image.assert_pushed_converted(&http, &server, "clients/podman", "oci");
    assert_eq!(
        manifest["mediaType"], OCI_MANIFEST,
        "podman push --format oci: {manifest}"
    );

    // Remove everything local, pull by tag.
    podman.run(&["rmi", "--force", &id]);
    assert!(
        !podman
            .run(&["images", "--quiet", "--no-trunc"])
            .stdout_text()
            .contains(&id),
        "the image must be gone before the pull"
    );
    podman.transfer("pull", &[&remote]);
    assert_eq!(podman.inspect(&remote, "{{.Id}}"), id);
    assert_eq!(podman.inspect(&remote, "{{.Digest}}"), digest.trim());
    let files = podman.read_files(&remote, &["airdock/hello.txt", "airdock/data.bin"]);
    assert_eq!(files[0], image.file("airdock/hello.txt"));
    assert!(
        files[1] == image.file("airdock/data.bin"),
        "airdock/data.bin differs after pull"
    );

    // A multi-platform OCI index pushed over HTTP, pulled by digest:
    // podman picks this machine's platform.
    let index = Index::build(Flavor::Oci, "podman-index");
    index.push_http(&http, &server, "clients/podman-index", "v1");
    let by_digest = format!("{host}/clients/podman-index@{}", index.index.digest);
    podman.transfer("pull", &[&by_digest]);
    let mine = index.host_image();
    assert_eq!(podman.inspect(&by_digest, "{{.Id}}"), mine.config.hex());
    let files = podman.read_files(&by_digest, &["airdock/hello.txt"]);
    assert_eq!(files[0], mine.file("airdock/hello.txt"));
}
