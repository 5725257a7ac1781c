//! docker (Debian `docker.io`): the test starts its own `dockerd` (own
//! data-root, exec-root, socket, no iptables, no bridge, vfs storage), loads
//! an image from a `docker save` archive it wrote, pushes it to airdock,
//! pulls it back by tag and by digest, and pulls an OCI image pushed over
//! HTTP. dockerd treats 127.0.0.0/8 registries as insecure, so plain HTTP
//! works without configuration.

use std::fs;
use std::path::{Path, PathBuf};

use super::harness::{require_root, state_dir, tool, Cmd, Daemon, Http, Out};
use super::image::{resolve, tags, Flavor, Image, DOCKER_MANIFEST};
use crate::support::Server;

/// A private dockerd and a docker CLI bound to it.
pub struct Docker {
    cli: PathBuf,
    host: String,
    cli_config: PathBuf,
    // Field order: the daemon stops before its directory is removed.
    _daemon: Daemon,
    _dir: tempfile::TempDir,
}

impl Docker {
    pub fn start() -> Docker {
        require_root("the docker test");
        let dockerd = tool("dockerd");
        // The CLI that came with dockerd (Debian's), else any on PATH.
        let cli = ["/usr/bin/docker"]
            .into_iter()
            .map(PathBuf::from)
            .find(|p| p.is_file())
            .unwrap_or_else(|| tool("docker"));

        let dir = state_dir("airdock-dockerd-");
        let d = dir.path();
        let cli_config = d.join("cli");
        fs::create_dir_all(&cli_config).expect("docker cli config dir");
        fs::write(cli_config.join("config.json"), b"{}").expect("docker cli config");
        fs::write(d.join("daemon.json"), b"{}").expect("daemon.json");
        let sock = d.join("docker.sock");
        let host = format!("unix://{}", sock.display());
        let p = |name: &str| d.join(name).display().to_string();
        let args: Vec<String> = vec![
            "--config-file".into(),
            p("daemon.json"),
            "--data-root".into(),
            p("data"),
            "--exec-root".into(),
            p("exec"),
            "--pidfile".into(),
            p("docker.pid"),
            "-H".into(),
            host.clone(),
            "--iptables=false".into(),
            "--ip-forward=false".into(),
            "--ip-masq=false".into(),
            "--bridge=none".into(),
            "--userland-proxy=false".into(),
            // Images here are tiny; vfs needs no mounts and works anywhere.
            "--storage-driver=vfs".into(),
            "--log-level=info".into(),
        ];
        let mut daemon = Daemon::spawn("dockerd", &dockerd, &args, d, &[]);
        let probe = {
            let cli = cli.clone();
            let host = host.clone();
            let cli_config = cli_config.clone();
            move || {
                sock.exists()
                    && Cmd::new(&cli)
                        .env("DOCKER_HOST", &host)
                        .env("DOCKER_CONFIG", &cli_config)
                        .args(["version", "--format", "{{.Server.Version}}"])
                        .run_unchecked()
                        .status
                        .success()
            }
        };
        daemon.wait_ready(probe);
        // dockerd runs its own containerd in a separate process group.
        daemon.add_companion_pidfile(&d.join("exec/containerd/containerd.pid"));
        Docker {
            cli,
            host,
            cli_config,
            _daemon: daemon,
            _dir: dir,
        }
    }

    pub fn cmd(&self) -> Cmd {
        Cmd::new(&self.cli)
            .env("DOCKER_HOST", &self.host)
            .env("DOCKER_CONFIG", &self.cli_config)
    }

    pub fn run(&self, args: &[&str]) -> Out {
        self.cmd().args(args).run()
    }

    pub fn image_id(&self, reference: &str) -> String {
        self.run(&["image", "inspect", "--format", "{{.Id}}", reference])
            .stdout_text()
            .trim()
            .to_string()
    }

    /// Copy file `path` out of image `reference` (via a created, never
    /// started container) into `dest_dir`, and return its bytes.
    pub fn read_file(&self, reference: &str, path: &str, dest_dir: &Path) -> Vec<u8> {
        let cid = self
            .run(&["create", "--network", "none", reference, "/airdock/none"])
            .stdout_text()
            .trim()
            .to_string();
        fs::create_dir_all(dest_dir).expect("create copy destination");
        self.run(&[
            "cp",
            &format!("{cid}:/{path}"),
            &dest_dir.display().to_string(),
        ]);
        self.run(&["rm", &cid]);
        let name = Path::new(path).file_name().expect("file name");
        fs::read(dest_dir.join(name)).expect("read copied file")
    }
}

impl Docker {
    /// `docker load` of `image` (a `docker save` archive written into `work`), tagged and
    /// pushed as `remote`; returns the digest `docker push` reported. Only `remote` is left
    /// naming the image.
    pub fn load_and_push(&self, image: &Image, remote: &str, work: &Path) -> String {
        let archive = work.join("image.tar");
        let local = "airdock-test/loaded:local";
        image.write_docker_archive(&archive, local);
        self.run(&["load", "-i", &archive.display().to_string()]);
        self.run(&["tag", local, remote]);
        self.run(&["rmi", local]);
        pushed_digest(&self.run(&["push", remote]))
    }

    /// `remote` (`HOST/REPO:TAG`, pushed as `digest`) pulled back by tag and then by digest,
    /// each from nothing local, is `image` each time (its ID, and a file read back).
    pub fn assert_pulls_back(&self, image: &Image, remote: &str, digest: &str, work: &Path) {
        self.run(&["rmi", remote]);
        let pulled = self.run(&["pull", remote]).stdout_text();
        assert!(pulled.contains(digest), "docker pull by tag:\n{pulled}");
        assert_eq!(self.image_id(remote), image.config.digest);
        let data = self.read_file(remote, "airdock/data.bin", &work.join("by-tag"));
        assert!(
            data == image.file("airdock/data.bin"),
            "airdock/data.bin differs after a pull by tag"
        );
        self.run(&["rmi", remote]);
        let (repo, _tag) = remote.rsplit_once(':').expect("HOST/REPO:TAG");
        let by_digest = format!("{repo}@{digest}");
        self.run(&["pull", &by_digest]);
        assert_eq!(self.image_id(&by_digest), image.config.digest);
        let hello = self.read_file(&by_digest, "airdock/hello.txt", &work.join("by-digest"));
        assert_eq!(hello, image.file("airdock/hello.txt"));
    }
}

/// The manifest digest in `docker push` output (`v1: digest: sha256:… size: N`).
pub fn pushed_digest(out: &Out) -> String {
    let text = out.stdout_text();
    text.split_whitespace()
        .skip_while(|w| *w != "digest:")
        .nth(1)
        .unwrap_or_else(|| panic!("no `digest:` in docker push output:\n{text}"))
        .to_string()
}

#[test]
fn docker_push_pull_and_pull_by_digest() {
    let docker = Docker::start();
    let server = Server::start();
    let http = Http::new();
    let work = state_dir("airdock-docker-work-");
    let host = server.host();

    // An image from a `docker save` archive written here.
    let image = Image::build(Flavor::Docker, super::image::host_arch(), "docker");
    let archive = work.path().join("image.tar");
    image.write_docker_archive(&archive, "airdock-test/docker:local");
    docker.run(&["load", "-i", &archive.display().to_string()]);
    assert_eq!(
        docker.image_id("airdock-test/docker:local"),
        image.config.digest,
        "docker load: the image ID must be the config digest"
    );

    // Push.
    let remote = format!("{host}/clients/docker:v1");
    docker.run(&["tag", "airdock-test/docker:local", &remote]);
    let digest = pushed_digest(&docker.run(&["push", &remote]));
    assert_eq!(
        resolve(&http, &server, "clients/docker", "v1").as_deref(),
        Some(digest.as_str()),
        "the tag must resolve to the digest docker push reported"
    );
    let manifest = image.assert_pushed_equivalent(&http, &server, "clients/docker", "v1");
    assert_eq!(
        manifest["mediaType"], DOCKER_MANIFEST,
        "docker pushes schema 2: {manifest}"
    );

    // Pull by tag, from nothing local.
    docker.run(&["rmi", "airdock-test/docker:local", &remote]);
    let pulled = docker.run(&["pull", &remote]).stdout_text();
    assert!(
        pulled.contains(&digest),
        "docker pull must report {digest}:\n{pulled}"
    );
    assert_eq!(docker.image_id(&remote), image.config.digest);
    let repo_digests = docker
        .run(&[
            "image",
            "inspect",
            "--format",
            "{{json .RepoDigests}}",
            &remote,
        ])
        .stdout_text();
    assert!(
        repo_digests.contains(&format!("{host}/clients/docker@{digest}")),
        "RepoDigests must name the pushed digest: {repo_digests}"
    );
    let hello = docker.read_file(&remote, "airdock/hello.txt", &work.path().join("by-tag"));
    assert_eq!(
        hello,
        image.file("airdock/hello.txt"),
        "file content after pull by tag"
    );

    // Pull by digest.
    docker.run(&["rmi", &remote]);
    let by_digest = format!("{host}/clients/docker@{digest}");
    let pulled = docker.run(&["pull", &by_digest]).stdout_text();
    assert!(pulled.contains(&digest), "docker pull by digest:\n{pulled}");
    assert_eq!(docker.image_id(&by_digest), image.config.digest);
    let data = docker.read_file(
        &by_digest,
        "airdock/data.bin",
        &work.path().join("by-digest"),
    );
    assert!(
        data == image.file("airdock/data.bin"),
        "file content after pull by digest"
    );

    // Push the pulled image into a second repository: the blobs are
    // already in airdock (docker mounts or skips them), and the manifest
    // must come out identical.
    let second = format!("{host}/clients/docker-copy:v1");
    docker.run(&["tag", &by_digest, &second]);
    let second_digest = pushed_digest(&docker.run(&["push", &second]));
    assert_eq!(
        second_digest, digest,
        "re-pushing the same image gives the same manifest"
    );
    assert_eq!(
        tags(&http, &server, "clients/docker-copy"),
        vec!["v1".to_string()]
    );

    // An OCI image pushed over HTTP, pulled by digest.
    let oci = Image::build(Flavor::Oci, super::image::host_arch(), "docker-oci");
    oci.push_http(&http, &server, "clients/docker-oci", "v1");
    let oci_ref = format!("{host}/clients/docker-oci@{}", oci.manifest.digest);
    let pulled = docker.run(&["pull", &oci_ref]).stdout_text();
    assert!(
        pulled.contains(&oci.manifest.digest),
        "docker pull of an OCI manifest:\n{pulled}"
    );
    assert_eq!(docker.image_id(&oci_ref), oci.config.digest);
    let hello = docker.read_file(&oci_ref, "airdock/hello.txt", &work.path().join("oci"));
    assert_eq!(hello, oci.file("airdock/hello.txt"));
}
