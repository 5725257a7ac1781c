//! Real clients against airdock over TLS with a CA from `airdock cert init` and with
//! htpasswd users behind the token flow (issue 5): crane, oras and skopeo with credentials
//! and the CA; docker login + push + pull with the CA in `certs.d`, against airdock in a
//! network namespace (dockerd never verifies 127.0.0.0/8), and the same push refused on the
//! certificate without it; containerd `ctr` and
//! crictl (CRI) pulling with `hosts.toml` naming the CA. alice may push, bob may only pull:
//! each client must also fail to push as bob.

use std::fs;
use std::path::{Path, PathBuf};

use super::harness::{state_dir, tool, Cmd};
use super::image::{host_arch, Flavor, Image};
use super::netns::NetNs;
use crate::support::{Server, AIRDOCK_BIN};

/// A TLS + auth airdock and the lab CA that signs its certificate.
pub struct SecureLab {
    // Field order: the server stops before its namespace and directory go.
    pub _server: Server,
    _netns: Option<NetNs>,
    /// `localhost:PORT` (or `NS_IP:PORT` in a namespace), a name the certificate is for.
    pub host: String,
    pub ca: PathBuf,
    /// A directory holding only `ca.crt` (skopeo's `--cert-dir` reads every file in it).
    pub ca_dir: PathBuf,
    pub dir: tempfile::TempDir,
}

fn airdock(args: &[&str], stdin: &str) -> String {
    Cmd::new(AIRDOCK_BIN)
        .args(args)
        .stdin(stdin.as_bytes().to_vec())
        .run()
        .stdout_text()
}

impl SecureLab {
    /// On loopback, with a certificate for `localhost` and `127.0.0.1`.
    pub fn start() -> SecureLab {
        SecureLab::start_on(None)
    }

    /// Inside a fresh network namespace, listening on (and certified for) its veth address
    /// only: a host outside 127.0.0.0/8, which dockerd does not exempt from verification.
    pub fn start_in_netns() -> SecureLab {
        SecureLab::start_on(Some(NetNs::create()))
    }

    fn start_on(netns: Option<NetNs>) -> SecureLab {
        let dir = state_dir("airdock-secure-");
        let d = dir.path();
        let certs = d.join("certs");
        let hosts = match &netns {
            Some(ns) => vec![ns.ns_ip.to_string()],
            None => vec!["localhost".to_string(), "127.0.0.1".to_string()],
        };
        let certs_arg = certs.display().to_string();
        let mut args = vec!["cert", "init", "--dir", &certs_arg];
        for h in &hosts {
            args.extend(["--host", h.as_str()]);
        }
        let out = airdock(&args, "");
        assert!(out.contains("certs.d"), "{out}");
        let ca_dir = d.join("ca");
        fs::create_dir_all(&ca_dir).expect("ca dir");
        fs::copy(certs.join("ca.crt"), ca_dir.join("ca.crt")).expect("copy ca");
        let htpasswd = d.join("htpasswd");
        for (user, pw) in [("alice", "alice-pw"), ("bob", "bob-pw")] {
            airdock(
                &[
                    "user",
                    "add",
                    user,
                    "--htpasswd",
                    &htpasswd.display().to_string(),
                    "--cost",
                    "4",
                ],
                &format!("{pw}\n"),
            );
        }
        let config = d.join("airdock.yaml");
        fs::write(
            &config,
            format!(
                "tls:\n  cert: {crt}\n  key: {key}\nauth:\n  htpasswd: {hp}\naccess:\n  \
                 - repos: [\"**\"]\n    users: [alice]\n    allow: [pull, push, delete]\n  \
                 - repos: [\"**\"]\n    users: [bob]\n    allow: [pull]\n",
                crt = certs.join("tls.crt").display(),
                key = certs.join("tls.key").display(),
                hp = htpasswd.display(),
            ),
        )
        .expect("write config");
        let config = config.display().to_string();
        let (server, host) = match &netns {
            Some(ns) => {
                let bind = std::net::SocketAddr::from((ns.ns_ip, 0));
                let server = Server::start_in_netns(&ns.name, bind, &["--config", &config]);
                let host = server.host();
                (server, host)
            }
            None => {
                let server = Server::start_with_args(&["--config", &config]);
                let host = format!("localhost:{}", server.addr().port());
                (server, host)
            }
        };
        SecureLab {
            host,
            _server: server,
            _netns: netns,
            ca: certs.join("ca.crt"),
            ca_dir,
            dir,
        }
    }
}

fn crane(lab: &SecureLab, config: &Path, args: &[&str]) -> Cmd {
    Cmd::new(tool("crane"))
        .env("DOCKER_CONFIG", config)
        // Go clients read extra roots from SSL_CERT_FILE.
        .env("SSL_CERT_FILE", &lab.ca)
        .args(args)
}

/// A Docker image labelled `label`, pushed to `reference` by crane logged in as alice.
fn pushed_by_alice(lab: &SecureLab, label: &str, reference: &str) -> Image {
    let image = Image::build(Flavor::Docker, host_arch(), label);
    let tarball = lab.dir.path().join("image.tar");
    image.write_docker_archive(&tarball, &format!("airdock-test/{label}:local"));
    let cfg = lab.dir.path().join("crane-alice");
    fs::create_dir_all(&cfg).expect("config dir");
    crane(
        lab,
        &cfg,
        &["auth", "login", &lab.host, "-u", "alice", "-p", "alice-pw"],
    )
    .run();
    crane(
        lab,
        &cfg,
        &["push", &tarball.display().to_string(), reference],
    )
    .run();
    image
}

#[test]
fn crane_oras_skopeo_over_tls_with_credentials() {
    let lab = SecureLab::start();
    let w = lab.dir.path();
    let image = Image::build(Flavor::Docker, host_arch(), "secure");
    let tarball = w.join("image.tar");
    image.write_docker_archive(&tarball, "airdock-test/secure:local");
    let tar = tarball.display().to_string();

    // crane: login as alice, push, read back the digest as bob.
    let (alice_cfg, bob_cfg) = (w.join("crane-alice"), w.join("crane-bob"));
    for (cfg, user, pw) in [
        (&alice_cfg, "alice", "alice-pw"),
        (&bob_cfg, "bob", "bob-pw"),
    ] {
        fs::create_dir_all(cfg).expect("config dir");
        crane(
            &lab,
            cfg,
            &["auth", "login", &lab.host, "-u", user, "-p", pw],
        )
        .run();
    }
    let reference = format!("{}/secure/crane:v1", lab.host);
    let pushed = crane(&lab, &alice_cfg, &["push", &tar, &reference])
        .run()
        .stdout_text();
    let digest = crane(&lab, &bob_cfg, &["digest", &reference])
        .run()
        .stdout_text()
        .trim()
        .to_string();
    assert_eq!(pushed.trim(), format!("{}/secure/crane@{digest}", lab.host));
    let denied = crane(
        &lab,
        &bob_cfg,
        &["push", &tar, &format!("{}/secure/bob:v1", lab.host)],
    )
    .run_unchecked();
    assert!(!denied.status.success(), "bob pushed");
    assert!(
        denied.all_text().contains("DENIED"),
        "bob's push must be DENIED: {}",
        denied.all_text()
    );
    // Without the lab CA, no TLS session is possible.
    let untrusted = Cmd::new(tool("crane"))
        .env("DOCKER_CONFIG", &alice_cfg)
        .args(["digest", &reference])
        .run_unchecked();
    assert!(!untrusted.status.success(), "crane trusted an unknown CA");

    // oras: push a file as alice with --ca-file, pull it as bob.
    let oras = |args: &[&str]| {
        Cmd::new(tool("oras"))
            .current_dir(w)
            .args(args)
            .arg("--ca-file")
            .arg(&lab.ca)
            // oras speaks plain HTTP to `localhost` unless told otherwise.
            .arg("--plain-http=false")
            .arg("--registry-config")
            .arg(w.join("oras-auth.json"))
    };
    fs::write(w.join("note.txt"), b"signed and sealed").expect("write note");
    let oref = format!("{}/secure/oras:v1", lab.host);
    oras(&[
        "push",
        "-u",
        "alice",
        "-p",
        "alice-pw",
        &oref,
        "note.txt:text/plain",
    ])
    .run();
    fs::create_dir_all(w.join("oras-out")).expect("out dir");
    oras(&["pull", "-u", "bob", "-p", "bob-pw", "-o", "oras-out", &oref]).run();
    assert_eq!(
        fs::read(w.join("oras-out/note.txt")).expect("pulled note"),
        b"signed and sealed"
    );
    let denied = oras(&[
        "push",
        "-u",
        "bob",
        "-p",
        "bob-pw",
        &oref,
        "note.txt:text/plain",
    ])
    .run_unchecked();
    assert!(!denied.status.success(), "bob pushed with oras");

    // skopeo: copy in as alice with --dest-cert-dir, out as bob with --src-cert-dir.
    let ca_dir = lab.ca_dir.display().to_string();
    let sref = format!("docker://{}/secure/skopeo:v1", lab.host);
    Cmd::new(tool("skopeo"))
        .args([
            "copy",
            "--dest-cert-dir",
            &ca_dir,
            "--dest-creds",
            "alice:alice-pw",
        ])
        .arg(format!("docker-archive:{tar}"))
        .arg(&sref)
        .run();
    let raw = Cmd::new(tool("skopeo"))
        .args([
            "inspect",
            "--raw",
            "--cert-dir",
            &ca_dir,
            "--creds",
            "bob:bob-pw",
            &sref,
        ])
        .run();
    assert!(
        raw.stdout_text().contains("schemaVersion"),
        "{}",
        raw.stdout_text()
    );
    let denied = Cmd::new(tool("skopeo"))
        .args([
            "copy",
            "--dest-cert-dir",
            &ca_dir,
            "--dest-creds",
            "bob:bob-pw",
        ])
        .arg(format!("docker-archive:{tar}"))
        .arg(format!("docker://{}/secure/skopeo-bob:v1", lab.host))
        .run_unchecked();
    assert!(!denied.status.success(), "bob pushed with skopeo");
    let wrong = Cmd::new(tool("skopeo"))
        .args([
            "inspect",
            "--raw",
            "--cert-dir",
            &ca_dir,
            "--creds",
            "bob:wrong",
            &sref,
        ])
        .run_unchecked();
    assert!(!wrong.status.success(), "a wrong password was accepted");
}

/// `/etc/docker/certs.d/<host>/ca.crt`, removed on drop: dockerd has no flag or config key to
/// move it (only rootless dockerd looks elsewhere). `<host>` carries the lab's port, so
/// concurrent tests never share an entry.
struct CertsD(PathBuf);

impl Drop for CertsD {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Whether docker's output says the server certificate could not be verified.
fn is_unknown_authority(text: &str) -> bool {
    text.contains("x509") && text.contains("unknown authority")
}

/// docker against airdock at a namespace address (not loopback, so dockerd verifies the
/// certificate): without the lab CA in `certs.d` the push fails on the certificate; with it,
/// login, push and pull work. The negative run is what makes the positive one mean "docker
/// trusts the CA through certs.d" rather than "docker skipped the check".
#[test]
fn docker_login_push_pull_over_tls() {
    let docker = super::docker::Docker::start();
    let lab = SecureLab::start_in_netns();
    let certs_d = CertsD(PathBuf::from("/etc/docker/certs.d").join(&lab.host));

    let image = Image::build(Flavor::Docker, host_arch(), "docker-tls");
    let archive = lab.dir.path().join("image.tar");
    image.write_docker_archive(&archive, "airdock-test/docker-tls:local");
    docker.run(&["load", "-i", &archive.display().to_string()]);
    let remote = format!("{}/secure/docker:v1", lab.host);
    docker.run(&["tag", "airdock-test/docker-tls:local", &remote]);

    // No CA in certs.d: refused on the certificate, before any credentials matter.
    let out = docker.cmd().args(["push", &remote]).run_unchecked();
    assert!(!out.status.success(), "docker pushed to an untrusted CA");
    assert!(
        is_unknown_authority(&out.all_text()),
        "push without the CA must fail certificate verification: {}",
        out.all_text()
    );
    eprintln!(
        "docker push without the CA in certs.d:\n{}",
        out.all_text().trim()
    );
    let out = docker
        .cmd()
        .args(["login", &lab.host, "-u", "alice", "--password-stdin"])
        .stdin(b"alice-pw\n".to_vec())
        .run_unchecked();
    assert!(!out.status.success(), "docker logged in to an untrusted CA");
    assert!(is_unknown_authority(&out.all_text()), "{}", out.all_text());

    fs::create_dir_all(&certs_d.0).expect("certs.d");
    fs::copy(&lab.ca, certs_d.0.join("ca.crt")).expect("install CA");

    // Trusted now, but not logged in: refused by airdock, not by TLS.
    let out = docker.cmd().args(["push", &remote]).run_unchecked();
    assert!(!out.status.success(), "anonymous push worked");
    assert!(!is_unknown_authority(&out.all_text()), "{}", out.all_text());

    docker
        .cmd()
        .args(["login", &lab.host, "-u", "alice", "--password-stdin"])
        .stdin(b"alice-pw\n".to_vec())
        .run();
    docker.run(&["push", &remote]);
    docker.run(&["rmi", "airdock-test/docker-tls:local", &remote]);
    let pulled = docker.run(&["pull", &remote]).stdout_text();
    assert!(pulled.contains("Digest: sha256:"), "{pulled}");
    assert_eq!(docker.image_id(&remote), image.config.digest);

    // bob logs in, may pull, may not push.
    docker
        .cmd()
        .args(["login", &lab.host, "-u", "bob", "--password-stdin"])
        .stdin(b"bob-pw\n".to_vec())
        .run();
    let bobs = format!("{}/secure/docker-bob:v1", lab.host);
    docker.run(&["tag", &remote, &bobs]);
    let out = docker.cmd().args(["push", &bobs]).run_unchecked();
    assert!(!out.status.success(), "bob pushed");
    assert!(out.all_text().contains("denied"), "{}", out.all_text());
    let out = docker
        .cmd()
        .args(["login", &lab.host, "-u", "bob", "--password-stdin"])
        .stdin(b"wrong\n".to_vec())
        .run_unchecked();
    assert!(!out.status.success(), "a wrong password logged in");
}

#[test]
fn ctr_and_crictl_pull_over_tls_with_hosts_toml_ca() {
    let c = super::containerd::Containerd::start();
    let lab = SecureLab::start();
    let reference = format!("{}/secure/ctr:v1", lab.host);
    let image = pushed_by_alice(&lab, "ctr-tls", &reference);

    c.hosts_toml(
        &lab.host,
        &format!(
            "server = \"https://{h}\"\n\n[host.\"https://{h}\"]\n  capabilities = [\"pull\", \"resolve\", \"push\"]\n  ca = \"{ca}\"\n",
            h = lab.host,
            ca = lab.ca.display()
        ),
    );
    let hosts_dir = c.certs_d().display().to_string();
    c.ctr(
        "default",
        &[
            "images",
            "pull",
            "--hosts-dir",
            &hosts_dir,
            "--user",
            "bob:bob-pw",
            &reference,
        ],
    );
    let files = c.read_files("default", &reference, &["airdock/hello.txt"]);
    assert_eq!(files[0], image.file("airdock/hello.txt"));

    // The kubelet's path: CRI with credentials, the CA from hosts.toml.
    let out = c.crictl(&["pull", "--creds", "bob:bob-pw", &reference]);
    assert!(
        out.stdout_text().contains(&image.config.digest),
        "{}",
        out.all_text()
    );
}

/// The seed's own commands: `imgpkg copy --to-tar` out of airdock as a pull-only user,
/// `imgpkg copy --tar … --to-repo` into it as a pushing user, and `imgpkg pull`, every call
/// with `--registry-ca-cert-path` and nothing else to make TLS work.
#[test]
fn imgpkg_copy_and_pull_with_registry_ca_cert_path() {
    let lab = SecureLab::start();
    let w = lab.dir.path();
    let source = format!("{}/secure/imgpkg-src:v1", lab.host);
    let image = pushed_by_alice(&lab, "imgpkg-tls", &source);

    let ca = lab.ca.display().to_string();
    let imgpkg = |user: &str, pw: &str, args: &[&str]| {
        Cmd::new(tool("imgpkg"))
            .env("HOME", w)
            .env("IMGPKG_USERNAME", user)
            .env("IMGPKG_PASSWORD", pw)
            .args(args)
            .args(["--registry-ca-cert-path", &ca])
    };
    let tar = w.join("transfer.tar").display().to_string();
    imgpkg("bob", "bob-pw", &["copy", "-i", &source, "--to-tar", &tar]).run();
    let dest = format!("{}/secure/imgpkg", lab.host);
    imgpkg(
        "alice",
        "alice-pw",
        &["copy", "--tar", &tar, "--to-repo", &dest],
    )
    .run();
    let out = w.join("pulled").display().to_string();
    let tagged = format!("{dest}:v1");
    let pulled = imgpkg("bob", "bob-pw", &["tag", "list", "-i", &dest])
        .run()
        .stdout_text();
    assert!(pulled.contains("v1"), "imgpkg copy kept the tag: {pulled}");
    imgpkg("bob", "bob-pw", &["pull", "-i", &tagged, "-o", &out]).run();
    assert_eq!(
        fs::read(w.join("pulled/airdock/hello.txt")).expect("pulled file"),
        image.file("airdock/hello.txt")
    );
    // A pull-only user cannot import.
    let denied = imgpkg(
        "bob",
        "bob-pw",
        &[
            "copy",
            "--tar",
            &tar,
            "--to-repo",
            &format!("{}/secure/imgpkg-bob", lab.host),
        ],
    )
    .run_unchecked();
    assert!(!denied.status.success(), "bob pushed with imgpkg");
}
