//! containerd (Debian `containerd`): the test starts its own containerd
//! (own root, state, sockets, config; native snapshotter) and
//!
//! - pulls with `ctr images pull --plain-http`, which unpacks into the
//!   snapshotter, then mounts the image and reads its files; and pushes
//!   back with `ctr images push --plain-http`;
//! - pulls with `crictl` through containerd's CRI plugin (the kubelet's
//!   path), whose registry hosts come from `hosts.toml` files under
//!   `config_path`: once with a mirror entry (the image name points at an
//!   empty airdock, the mirror at the one that has the image) and once
//!   directly by digest.

use std::fs;
use std::path::{Path, PathBuf};

use super::harness::{require_root, state_dir, tool, Cmd, Daemon, Http, Out};
use super::image::{host_arch, resolve, Flavor, Image, Index};
use crate::support::Server;

/// containerd namespace that the `ctr` tests use (the CRI plugin uses
/// `k8s.io`).
const NS: &str = "airdock";

/// A private containerd with the CRI plugin.
pub struct Containerd {
    sock: PathBuf,
    certs_d: PathBuf,
    crictl_config: PathBuf,
    // Field order: the daemon stops before its directory is removed.
    _daemon: Daemon,
    dir: tempfile::TempDir,
}

impl Containerd {
    pub fn start() -> Containerd {
        require_root("the containerd tests");
        let containerd = tool("containerd");
        let ctr = tool("ctr");
        let dir = state_dir("airdock-ctrd-");
        let d = dir.path();
        let sock = d.join("containerd.sock");
        let certs_d = d.join("certs.d");
        fs::create_dir_all(&certs_d).expect("create certs.d");
        for sub in ["cni/bin", "cni/conf", "opt"] {
            fs::create_dir_all(d.join(sub)).expect("create containerd dirs");
        }
        let q = |p: &Path| toml_string(&p.display().to_string());
        // Only what a pull needs; sandbox image and CNI are never used.
        let config = format!(
            r#"version = 2
root = {root}
state = {state}
disabled_plugins = [
  "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.devmapper",
]

[grpc]
  address = {sock}

[ttrpc]
  address = {ttrpc}

[plugins]
  [plugins."io.containerd.internal.v1.opt"]
    path = {opt}
  [plugins."io.containerd.grpc.v1.cri"]
    disable_apparmor = true
    sandbox_image = "airdock.invalid/pause:never-pulled"
    stream_server_address = "127.0.0.1"
    stream_server_port = "0"
    [plugins."io.containerd.grpc.v1.cri".containerd]
      snapshotter = "native"
    [plugins."io.containerd.grpc.v1.cri".cni]
      bin_dir = {cni_bin}
      conf_dir = {cni_conf}
    [plugins."io.containerd.grpc.v1.cri".registry]
      config_path = {certs_d}
"#,
            root = q(&d.join("root")),
            state = q(&d.join("state")),
            sock = q(&sock),
            ttrpc = q(&d.join("containerd.sock.ttrpc")),
            opt = q(&d.join("opt")),
            cni_bin = q(&d.join("cni/bin")),
            cni_conf = q(&d.join("cni/conf")),
            certs_d = q(&certs_d),
        );
        let config_path = d.join("config.toml");
        fs::write(&config_path, config).expect("write containerd config");

        let crictl_config = d.join("crictl.yaml");
        let endpoint = format!("unix://{}", sock.display());
        fs::write(
            &crictl_config,
            format!("runtime-endpoint: {endpoint}\nimage-endpoint: {endpoint}\ntimeout: 120\n"),
        )
        .expect("write crictl.yaml");

        let args: Vec<String> = vec![
            "--config".into(),
            config_path.display().to_string(),
            "--log-level".into(),
            "debug".into(),
        ];
        let mut daemon = Daemon::spawn("containerd", &containerd, &args, d, &[]);
        let probe = {
            let sock = sock.clone();
            move || {
                sock.exists()
                    && Cmd::new(&ctr)
                        .arg("--address")
                        .arg(&sock)
                        .arg("version")
                        .run_unchecked()
                        .status
                        .success()
            }
        };
        daemon.wait_ready(probe);
        Containerd {
            sock,
            certs_d,
            crictl_config,
            _daemon: daemon,
            dir,
        }
    }

    /// `ctr --address SOCK --namespace NS ARGS…`
    pub fn ctr(&self, namespace: &str, args: &[&str]) -> Out {
        Cmd::new(tool("ctr"))
            .arg("--address")
            .arg(&self.sock)
            .arg("--namespace")
            .arg(namespace)
            .args(args)
            .run()
    }

    /// `crictl --config CRICTL.YAML ARGS…` (the CRI socket of this containerd).
    pub fn crictl(&self, args: &[&str]) -> Out {
        Cmd::new(tool("crictl"))
            .arg("--config")
            .arg(&self.crictl_config)
            .args(args)
            .run()
    }

    /// The `hosts.toml` tree (`ctr --hosts-dir`, the CRI's `config_path`).
    pub fn certs_d(&self) -> &Path {
        &self.certs_d
    }

    /// Write `certs.d/<host>/hosts.toml`.
    pub fn hosts_toml(&self, host: &str, content: &str) {
        let dir = self.certs_d.join(host);
        fs::create_dir_all(&dir).expect("create hosts dir");
        fs::write(dir.join("hosts.toml"), content).expect("write hosts.toml");
    }

    /// `ctr images pull --plain-http` of `reference` into namespace `ns`, unpacked by the
    /// native snapshotter.
    pub fn pull_plain_http(&self, ns: &str, reference: &str) {
        self.ctr(
            ns,
            &[
                "images",
                "pull",
                "--plain-http",
                "--snapshotter",
                "native",
                reference,
            ],
        );
    }

    /// The unpacked `reference` (namespace `ns`) holds every file of `image`, byte for byte.
    pub fn assert_unpacked(&self, ns: &str, reference: &str, image: &Image) {
        let names: Vec<&str> = image.files.iter().map(|(p, _)| p.as_str()).collect();
        let got = self.read_files(ns, reference, &names);
        for ((name, want), got) in image.files.iter().zip(got) {
            assert!(got == *want, "{name} differs in the unpacked {reference}");
        }
    }

    /// Mount the unpacked image `reference` (namespace `ns`, native
    /// snapshotter), read `files` and unmount. Proves the pull unpacked.
    pub fn read_files(&self, ns: &str, reference: &str, files: &[&str]) -> Vec<Vec<u8>> {
        let target = self.dir.path().join(format!("mnt-{}", self.mounts()));
        fs::create_dir_all(&target).expect("create mount point");
        let target_s = target.display().to_string();
        self.ctr(
            ns,
            &[
                "images",
                "mount",
                "--snapshotter",
                "native",
                reference,
                &target_s,
            ],
        );
        let contents = files
            .iter()
            .map(|f| fs::read(target.join(f)))
            .collect::<Vec<_>>();
        self.ctr(ns, &["images", "unmount", &target_s]);
        contents
            .into_iter()
            .zip(files)
            .map(|(r, f)| r.unwrap_or_else(|e| panic!("{f} in the unpacked {reference}: {e}")))
            .collect()
    }

    fn mounts(&self) -> usize {
        fs::read_dir(self.dir.path())
            .map(|it| {
                it.filter_map(Result::ok)
                    .filter(|e| e.file_name().to_string_lossy().starts_with("mnt-"))
                    .count()
            })
            .unwrap_or(0)
    }
}

/// A TOML basic string.
fn toml_string(s: &str) -> String {
    serde_json::to_string(s).expect("string to JSON")
}

/// The manifest digest `ctr images ls` shows for `reference`.
fn ctr_image_digest(c: &Containerd, ns: &str, reference: &str) -> String {
    let out = c.ctr(ns, &["images", "ls"]).stdout_text();
    out.lines()
        .find(|l| l.split_whitespace().next() == Some(reference))
        .and_then(|l| l.split_whitespace().nth(2))
        .unwrap_or_else(|| panic!("`ctr images ls` does not list {reference}:\n{out}"))
        .to_string()
}

#[test]
fn ctr_pull_plain_http_unpacks_and_push() {
    let c = Containerd::start();
    let server = Server::start();
    let http = Http::new();
    let host = server.host();

    // A single-platform Docker schema 2 image.
    let image = Image::build(Flavor::Docker, host_arch(), "ctr");
    image.push_http(&http, &server, "clients/ctr", "v1");
    let reference = format!("{host}/clients/ctr:v1");
    c.pull_plain_http(NS, &reference);
    assert_eq!(ctr_image_digest(&c, NS, &reference), image.manifest.digest);
    c.assert_unpacked(NS, &reference, &image);

    // A multi-platform OCI index: ctr fetches and unpacks this machine's
    // platform only.
    let index = Index::build(Flavor::Oci, "ctr-index");
    index.push_http(&http, &server, "clients/ctr-index", "v1");
    let reference = format!("{host}/clients/ctr-index:v1");
    c.pull_plain_http(NS, &reference);
    assert_eq!(ctr_image_digest(&c, NS, &reference), index.index.digest);
    let mine = index.host_image();
    let files = c.read_files(NS, &reference, &["airdock/hello.txt"]);
    assert_eq!(
        files[0],
        mine.file("airdock/hello.txt"),
        "the unpacked platform is the host's"
    );

    // Push what was pulled into another repository.
    let pushed = format!("{host}/clients/ctr-pushed:v1");
    c.ctr(
        NS,
        &["images", "tag", &format!("{host}/clients/ctr:v1"), &pushed],
    );
    c.ctr(NS, &["images", "push", "--plain-http", &pushed]);
    assert_eq!(
        resolve(&http, &server, "clients/ctr-pushed", "v1").as_deref(),
        Some(image.manifest.digest.as_str()),
        "ctr push must keep the manifest digest"
    );
    image.assert_pushed_equivalent(&http, &server, "clients/ctr-pushed", "v1");
}

/// The kubelet's path: CRI `PullImage` through containerd, with registry
/// hosts configured by `hosts.toml`.
#[test]
fn crictl_pulls_through_cri_with_hosts_toml_mirror() {
    let c = Containerd::start();
    let mirror = Server::start();
    // The registry the image name points at: an airdock that does not have
    // the image, so the pull only succeeds through the mirror entry.
    let upstream = Server::start();
    let http = Http::new();

    let image = Image::build(Flavor::Oci, host_arch(), "cri");
    image.push_http(&http, &mirror, "clients/cri", "v1");
    assert_eq!(resolve(&http, &upstream, "clients/cri", "v1"), None);

    c.hosts_toml(
        &upstream.host(),
        &format!(
            "server = \"http://{up}\"\n\n[host.\"http://{mi}\"]\n  capabilities = [\"pull\", \"resolve\"]\n",
            up = upstream.host(),
            mi = mirror.host()
        ),
    );
    c.hosts_toml(
        &mirror.host(),
        &format!(
            "server = \"http://{mi}\"\n\n[host.\"http://{mi}\"]\n  capabilities = [\"pull\", \"resolve\", \"push\"]\n",
            mi = mirror.host()
        ),
    );

    // 1. Through the mirror entry, by tag.
    let via_mirror = format!("{}/clients/cri:v1", upstream.host());
    let out = c.crictl(&["pull", &via_mirror]);
    assert!(
        out.stdout_text().contains(&image.config.digest),
        "crictl pull prints the image ID (config digest):\n{}",
        out.all_text()
    );
    let listed = c.crictl(&["images", "-o", "json"]).json();
    let entry = listed["images"]
        .as_array()
        .and_then(|a| a.iter().find(|i| i["id"] == image.config.digest))
        .unwrap_or_else(|| {
            panic!(
                "crictl images does not list {}: {listed}",
                image.config.digest
            )
        });
    assert!(
        entry["repoTags"]
            .as_array()
            .is_some_and(|t| t.iter().any(|t| t == &via_mirror)),
        "repoTags must hold {via_mirror}: {entry}"
    );
    let want_digest = format!("{}/clients/cri@{}", upstream.host(), image.manifest.digest);
    assert!(
        entry["repoDigests"]
            .as_array()
            .is_some_and(|t| t.iter().any(|t| t == &want_digest)),
        "repoDigests must hold {want_digest}: {entry}"
    );
    // The CRI plugin unpacked it (namespace k8s.io).
    let files = c.read_files("k8s.io", &via_mirror, &["airdock/hello.txt"]);
    assert_eq!(files[0], image.file("airdock/hello.txt"));

    // 2. Directly from the mirror's own name, by digest.
    let by_digest = format!("{}/clients/cri@{}", mirror.host(), image.manifest.digest);
    c.crictl(&["pull", &by_digest]);
    let inspected = c.crictl(&["inspecti", "-o", "json", &by_digest]).json();
    assert_eq!(
        inspected["status"]["id"], image.config.digest,
        "crictl inspecti: {inspected}"
    );
    let digests = &inspected["status"]["repoDigests"];
    assert!(
        digests
            .as_array()
            .is_some_and(|d| d.iter().any(|d| d == &by_digest)),
        "repoDigests must hold {by_digest}: {inspected}"
    );
}
