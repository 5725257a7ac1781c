//! The Kubernetes manifests (deploy/kubernetes/) checked against what the binary really does:
//! every flag and environment name exists in `airdock serve`, the ports and probe paths are
//! the server's (the probes answer 200 on a real server with the manifest's settings), mount
//! paths match the image's volume and the env's paths, the UID is the Dockerfile's USER.
//! No cluster runs here; tests/it/ship.rs runs the image with this container's args and env.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use clap::CommandFactory;
use serde_yaml::Value;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Every document of a multi-document YAML file.
pub fn documents(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_yaml::Deserializer::from_str(&text)
        .map(|d| serde::Deserialize::deserialize(d).expect("YAML document"))
        .filter(|v: &Value| !v.is_null())
        .collect()
}

fn kind<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind} in the manifests"))
}

fn s(v: &Value) -> &str {
    v.as_str().unwrap_or_else(|| panic!("not a string: {v:?}"))
}

/// The StatefulSet's airdock container: its args and env, as the image test runs them.
pub struct Container {
    pub args: Vec<String>,
    pub env: BTreeMap<String, String>,
    pub value: Value,
    pub pod: Value,
}

pub fn statefulset_container() -> Container {
    let docs = documents(&root().join("deploy/kubernetes/airdock.yaml"));
    let sts = kind(&docs, "StatefulSet");
    let pod = sts["spec"]["template"]["spec"].clone();
    let containers = pod["containers"].as_sequence().expect("containers");
    assert_eq!(containers.len(), 1, "one container");
    let c = containers[0].clone();
    let args = c["args"]
        .as_sequence()
        .expect("args")
        .iter()
        .map(|a| s(a).to_owned())
        .collect();
    let env = c["env"]
        .as_sequence()
        .expect("env")
        .iter()
        .map(|e| (s(&e["name"]).to_owned(), s(&e["value"]).to_owned()))
        .collect();
    Container {
        args,
        env,
        value: c,
        pod,
    }
}

/// The Dockerfile's instructions by keyword (`USER`, `VOLUME`, `ENV`, …), last one wins.
pub fn dockerfile() -> BTreeMap<String, String> {
    let text = std::fs::read_to_string(root().join("Dockerfile")).expect("Dockerfile");
    text.lines()
        .filter(|l| !l.trim_start().starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| l.split_once(' '))
        .map(|(k, v)| (k.to_uppercase(), v.trim().to_owned()))
        .collect()
}

/// The image's UID (`USER uid:gid`).
pub fn image_uid() -> u64 {
    let user = dockerfile().remove("USER").expect("USER in Dockerfile");
    user.split(':')
        .next()
        .and_then(|u| u.parse().ok())
        .expect("numeric USER")
}

#[test]
fn statefulset_names_only_flags_and_env_the_binary_has() {
    let c = statefulset_container();
    let cli = airdock::cli::Cli::command();
    assert_eq!(c.args.first().map(String::as_str), Some("serve"));
    let serve = cli.find_subcommand("serve").expect("serve");
    let longs: Vec<String> = serve
        .get_arguments()
        .filter_map(|a| a.get_long().map(str::to_owned))
        .collect();
    let envs: Vec<String> = serve
        .get_arguments()
        .filter_map(|a| a.get_env().and_then(|e| e.to_str()).map(str::to_owned))
        .collect();
    for a in c.args.iter().skip(1).filter(|a| a.starts_with("--")) {
        let name = a.trim_start_matches("--").split('=').next().unwrap_or("");
        assert!(
            longs.iter().any(|l| l == name),
            "`airdock serve` has no {a}"
        );
    }
    for name in c.env.keys() {
        assert!(envs.contains(name), "`airdock serve` reads no {name}");
    }
    // And the args parse as the binary parses them.
    let mut argv = vec!["airdock".to_owned()];
    argv.extend(c.args.iter().cloned());
    if let Err(e) = <airdock::cli::Cli as clap::Parser>::try_parse_from(&argv) {
        panic!("the StatefulSet's args do not parse: {e}");
    }
}

#[test]
fn probe_paths_answer_200_on_a_server_run_with_the_statefulsets_args() {
    let c = statefulset_container();
    // The manifest's args and free-space floor; address, data dir and secrets are the
    // test's own (the image test runs the env as it is).
    let mut args: Vec<&str> = c.args.iter().skip(1).map(String::as_str).collect();
    args.extend(["--min-free-mib", &c.env["AIRDOCK_MIN_FREE_MIB"]]);
    let server = crate::support::Server::start_with_args(&args);
    for probe in ["livenessProbe", "readinessProbe"] {
        let path = s(&c.value[probe]["httpGet"]["path"]);
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_airdock"))
            .args(["health", "--url", &server.url(path)])
            .output()
            .expect("airdock health");
        assert!(out.status.success(), "{probe} {path}: {out:?}");
    }
}

#[test]
fn ports_uid_and_mounts_match_the_image_and_the_env() {
    let c = statefulset_container();
    let docs = documents(&root().join("deploy/kubernetes/airdock.yaml"));
    let df = dockerfile();

    // Port: the env's listen port is the container port the probes and the Service use.
    let addr: std::net::SocketAddr = c.env["AIRDOCK_ADDR"].parse().expect("AIRDOCK_ADDR");
    assert!(
        addr.ip().is_unspecified(),
        "a pod must listen on all addresses"
    );
    let port = &c.value["ports"][0];
    assert_eq!(port["containerPort"].as_u64(), Some(u64::from(addr.port())));
    assert_eq!(df["EXPOSE"], addr.port().to_string(), "Dockerfile EXPOSE");
    let port_name = s(&port["name"]);
    for probe in ["livenessProbe", "readinessProbe"] {
        assert_eq!(
            s(&c.value[probe]["httpGet"]["port"]),
            port_name,
            "{probe} port"
        );
        // HTTPS exactly when the env turns TLS on.
        let scheme = s(&c.value[probe]["httpGet"]["scheme"]);
        assert_eq!(
            scheme == "HTTPS",
            c.env.contains_key("AIRDOCK_TLS_CERT"),
            "{probe}"
        );
    }
    assert_eq!(s(&c.value["livenessProbe"]["httpGet"]["path"]), "/livez");
    assert_eq!(s(&c.value["readinessProbe"]["httpGet"]["path"]), "/readyz");
    let svc = kind(&docs, "Service");
    assert_eq!(s(&svc["spec"]["ports"][0]["targetPort"]), port_name);
    assert_eq!(
        svc["spec"]["selector"],
        kind(&docs, "StatefulSet")["spec"]["template"]["metadata"]["labels"]
    );

    // UID: the pod runs as the image's user, not root, on a read-only root filesystem.
    let sc = &c.pod["securityContext"];
    assert_eq!(sc["runAsNonRoot"], true);
    assert_eq!(sc["runAsUser"].as_u64(), Some(image_uid()));
    assert_ne!(image_uid(), 0);
    assert_eq!(c.value["securityContext"]["readOnlyRootFilesystem"], true);
    assert!(c.value["resources"]["requests"]["cpu"].is_string());
    assert!(c.value["resources"]["requests"]["memory"].is_string());

    // Mounts: the data dir is the PVC, at the image's VOLUME; every file the env names is a
    // key of the Secret mounted where the env looks.
    let mounts: BTreeMap<String, String> = c.value["volumeMounts"]
        .as_sequence()
        .expect("volumeMounts")
        .iter()
        .map(|m| (s(&m["name"]).to_owned(), s(&m["mountPath"]).to_owned()))
        .collect();
    let data_dir = &c.env["AIRDOCK_DATA_DIR"];
    assert_eq!(&mounts["data"], data_dir);
    assert_eq!(df["VOLUME"], *data_dir, "Dockerfile VOLUME");
    let claim = &kind(&docs, "StatefulSet")["spec"]["volumeClaimTemplates"][0];
    assert_eq!(s(&claim["metadata"]["name"]), "data");
    let secret = kind(
        &documents(&root().join("deploy/kubernetes/secret.yaml")),
        "Secret",
    )
    .clone();
    let secret_name = s(&secret["metadata"]["name"]);
    let volume = c.pod["volumes"]
        .as_sequence()
        .expect("volumes")
        .iter()
        .find(|v| v["secret"]["secretName"] == secret_name)
        .expect("the Secret is a volume");
    let secret_dir = Path::new(&mounts[s(&volume["name"])]);
    for key in [
        "AIRDOCK_HTPASSWD",
        "AIRDOCK_TLS_CERT",
        "AIRDOCK_TLS_KEY",
        "AIRDOCK_ADMIN_TOKEN_FILE",
    ] {
        let path = Path::new(&c.env[key]);
        assert_eq!(
            path.parent(),
            Some(secret_dir),
            "{key} lies in the Secret's mount"
        );
        let file = path
            .file_name()
            .and_then(|f| f.to_str())
            .expect("file name");
        assert!(
            !secret["stringData"][file].is_null(),
            "{key}: the Secret has no key {file}"
        );
    }
}

#[test]
fn node_snippets_name_the_service_port() {
    let docs = documents(&root().join("deploy/kubernetes/airdock.yaml"));
    let node_port = kind(&docs, "Service")["spec"]["ports"][0]["nodePort"]
        .as_u64()
        .expect("nodePort");
    let image = s(&statefulset_container().value["image"]).to_owned();
    let host = image.split('/').next().expect("registry host");
    assert!(host.ends_with(&format!(":{node_port}")), "{image}");
    let nodes = root().join("deploy/kubernetes/nodes");
    let hosts_toml = nodes.join(format!("containerd/certs.d/{host}/hosts.toml"));
    let text = std::fs::read_to_string(&hosts_toml).expect("hosts.toml for the image's host");
    assert!(
        text.contains(&format!("server = \"https://{host}\"")),
        "{text}"
    );
    assert!(nodes.join(format!("docker/certs.d/{host}")).is_dir());
}
