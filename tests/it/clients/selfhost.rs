//! The image hosts itself (issue 14, "Ship"): the test's own dockerd builds the image from
//! the release binary with the top-level Dockerfile (no registry access), runs it with exactly
//! the StatefulSet's args and env (deploy/kubernetes/airdock.yaml; only AIRDOCK_ADDR's port is
//! the test's), waits for the image's HEALTHCHECK (`airdock health` over HTTPS, inside the
//! empty image) to report healthy, pushes the image into the running airdock, and has
//! containerd pull it back through the CRI (crictl), as a kubelet would.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::containerd::Containerd;
use super::docker::Docker;
use super::harness::{require_root, state_dir, Cmd};
use crate::deploy::{image_uid, statefulset_container};

/// The ceiling on the image.
const MAX_IMAGE_BYTES: u64 = 20_000_000;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `cargo build --release` (a no-op when scripts/test.sh already ran it): the Dockerfile
/// copies the static binary it makes.
fn release_binary() -> PathBuf {
    // `cargo` from PATH (rustup's proxy), as scripts/test.sh runs it: the toolchain's own
    // binary in $CARGO was seen to rebuild the release lib a shell's `cargo` had just built.
    let on_path = std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join("cargo").is_file()));
    let cargo = match std::env::var_os("CARGO") {
        Some(c) if !on_path => PathBuf::from(c),
        _ => PathBuf::from("cargo"),
    };
    Cmd::new(cargo)
        .args(["build", "--release", "--bin", "airdock"])
        .current_dir(&root())
        .timeout(Duration::from_secs(1800))
        .run();
    root().join("target/x86_64-unknown-linux-gnu/release/airdock")
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

/// The Secret's files, as the kubelet mounts them: root's, group airdock, mode 0440.
fn secrets(dir: &Path, password: &str) {
    let airdock = env!("CARGO_BIN_EXE_airdock");
    Cmd::new(airdock)
        .args(["cert", "init", "--dir"])
        .arg(dir.join("tls"))
        .args(["--host", "127.0.0.1", "--host", "localhost"])
        .run();
    fs::copy(dir.join("tls/tls.crt"), dir.join("tls.crt")).expect("tls.crt");
    fs::copy(dir.join("tls/tls.key"), dir.join("tls.key")).expect("tls.key");
    Cmd::new(airdock)
        .args(["user", "add", "admin", "--cost", "4", "--htpasswd"])
        .arg(dir.join("htpasswd"))
        .stdin(format!("{password}\n").into_bytes())
        .run();
    fs::write(dir.join("admin-token"), "selfhost-admin-token-0123456789").expect("token");
    for f in ["tls.crt", "tls.key", "htpasswd", "admin-token"] {
        let p = dir.join(f);
        std::os::unix::fs::chown(&p, Some(0), Some(image_uid() as u32)).expect("chown");
        fs::set_permissions(&p, fs::Permissions::from_mode(0o440)).expect("chmod");
    }
}

#[test]
fn image_builds_offline_runs_as_its_statefulset_and_serves_itself_to_cri() {
    require_root("the self-hosting image test");
    let binary = release_binary();
    let docker = Docker::start();

    // 1. Build: the top-level Dockerfile, FROM scratch, from the release binary.
    let tag = "airdock-selfhost:ci";
    docker
        .cmd()
        .args(["build", "--network", "none", "-t", tag])
        .arg(root())
        .timeout(Duration::from_secs(600))
        .run();
    let size: u64 = docker
        .run(&["image", "inspect", "--format", "{{.Size}}", tag])
        .stdout_text()
        .trim()
        .parse()
        .expect("image size");
    assert!(
        size <= MAX_IMAGE_BYTES,
        "the image is {size} bytes, over {MAX_IMAGE_BYTES} (binary: {} bytes)",
        fs::metadata(&binary).map(|m| m.len()).unwrap_or(0)
    );
    let user = docker
        .run(&["image", "inspect", "--format", "{{.Config.User}}", tag])
        .stdout_text();
    assert_eq!(user.trim(), format!("{0}:{0}", image_uid()));

    // 2. Run it as the StatefulSet would: its args, its env, the Secret at its mount path,
    //    a volume at /data, a read-only root filesystem, its user.
    let sts = statefulset_container();
    let work = state_dir("airdock-selfhost-");
    let secret_dir = work.path().join("secret");
    fs::create_dir_all(&secret_dir).expect("secret dir");
    let password = "selfhost-password";
    secrets(&secret_dir, password);
    let secret_mount = sts.value["volumeMounts"]
        .as_sequence()
        .and_then(|m| m.iter().find(|m| m["name"] == "secrets"))
        .and_then(|m| m["mountPath"].as_str())
        .expect("the Secret's mount path")
        .to_owned();
    let data_mount = sts.env["AIRDOCK_DATA_DIR"].clone();
    let port = free_port();
    let sc = &sts.pod["securityContext"];
    let run_as = format!(
        "{}:{}",
        sc["runAsUser"].as_u64().expect("runAsUser"),
        sc["runAsGroup"].as_u64().expect("runAsGroup")
    );
    let mut run = docker.cmd().args([
        "run",
        "-d",
        "--name",
        "airdock-selfhost",
        "--network",
        "host",
        "--read-only",
        "--user",
        &run_as,
        "--mount",
        &format!("type=volume,dst={data_mount}"),
        "-v",
        &format!("{}:{secret_mount}:ro", secret_dir.display()),
    ]);
    for (k, v) in &sts.env {
        let v = if k == "AIRDOCK_ADDR" {
            let addr: std::net::SocketAddr = v.parse().expect("AIRDOCK_ADDR");
            std::net::SocketAddr::new(addr.ip(), port).to_string()
        } else {
            v.clone()
        };
        run = run.args(["-e", &format!("{k}={v}")]);
    }
    run = run.arg(tag).args(&sts.args);
    let cid = run.run().stdout_text().trim().to_owned();
    let logs = || docker.cmd().args(["logs", &cid]).run_unchecked().all_text();

    // 3. The HEALTHCHECK (`airdock health`, HTTPS, in the empty image) says healthy.
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let status = docker
            .run(&["inspect", "--format", "{{.State.Health.Status}}", &cid])
            .stdout_text();
        if status.trim() == "healthy" {
            break;
        }
        assert!(
            Instant::now() < deadline && status.trim() != "unhealthy",
            "container health: {status}\n{}\nlogs:\n{}",
            docker
                .run(&["inspect", "--format", "{{json .State.Health}}", &cid])
                .stdout_text(),
            logs()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    // Not root: the container's process runs as the image's user.
    let pid = docker
        .run(&["inspect", "--format", "{{.State.Pid}}", &cid])
        .stdout_text();
    let status = fs::read_to_string(format!("/proc/{}/status", pid.trim())).expect("status");
    let uid_line = status.lines().find(|l| l.starts_with("Uid:")).expect("Uid");
    assert_eq!(
        uid_line.split_whitespace().nth(1),
        Some(image_uid().to_string().as_str()),
        "{uid_line}"
    );

    // 4. Push the image into the airdock it runs (docker trusts 127.0.0.0/8 without a CA).
    let host = format!("127.0.0.1:{port}");
    docker
        .cmd()
        .args(["login", &host, "-u", "admin", "--password-stdin"])
        .stdin(password.as_bytes().to_vec())
        .run();
    let remote = format!("{host}/airdock/airdock:ci");
    docker.run(&["tag", tag, &remote]);
    docker.run(&["push", &remote]);
    let image_id = docker.image_id(tag);

    // 5. containerd pulls it back through the CRI, with the lab CA from hosts.toml.
    let c = Containerd::start();
    let ca = secret_dir.join("tls/ca.crt");
    c.hosts_toml(
        &host,
        &format!(
            "server = \"https://{host}\"\n\n[host.\"https://{host}\"]\n  capabilities = [\"pull\", \"resolve\"]\n  ca = \"{}\"\n",
            ca.display()
        ),
    );
    let out = c.crictl(&["pull", "--creds", &format!("admin:{password}"), &remote]);
    assert!(
        out.stdout_text().contains(&image_id),
        "crictl pull prints the image ID {image_id}:\n{}\nairdock logs:\n{}",
        out.all_text(),
        logs()
    );
    docker.run(&["rm", "-f", &cid]);
}
