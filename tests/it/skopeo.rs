//! Push and pull multi-platform images with skopeo (Debian package,
//! installed by `scripts/install-deps.sh`).
//!
//! The images are built here, on disk, with no network and no fixtures:
//! two platforms (linux/amd64, linux/arm64/v8), each with its own config,
//! a shared base layer and a platform layer, all real gzip'd tarballs.
//! They are copied into airdock with `skopeo copy --all --preserve-digests`
//! and out again, and every digest must come back unchanged.

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::fixture::{gzip, tar, Entry};
use crate::support::{
    require_tool, scratch_dir, sha256 as sha256_digest, xorshift_bytes, Server, OCI_INDEX,
    OCI_MANIFEST,
};

const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";

/// Every manifest type a client may ask for, as skopeo does.
const ACCEPT_ALL: &str = "application/vnd.oci.image.index.v1+json, \
    application/vnd.docker.distribution.manifest.list.v2+json, \
    application/vnd.oci.image.manifest.v1+json, \
    application/vnd.docker.distribution.manifest.v2+json";

/// Upper bound for one skopeo invocation.
const SKOPEO_TIMEOUT: Duration = Duration::from_secs(180);

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

/// OCI image layout with an OCI index: `oci:` -> airdock -> `oci:`.
#[tokio::test]
async fn oci_index_round_trip_preserves_digests() {
    let skopeo = Skopeo::new();
    let mut server = Server::start();
    let work = scratch_dir("airdock-skopeo-");
    let image = MultiArch::build(Flavor::Oci);

    let src = work.path().join("src-layout");
    image.write_oci_layout(&src, "v1");

    let repo = "skopeo/multi";
    let dest = format!("docker://{}/{repo}:v1", server.host());
    skopeo.copy_all(&[
        "--dest-tls-verify=false",
        "--dest-no-creds",
        &format!("oci:{}:v1", src.display()),
        &dest,
    ]);

    // What the registry serves must be byte-for-byte what was pushed.
    let http = reqwest::Client::new();
    check_pushed_over_http(&http, &server, repo, "v1", &image).await;

    // skopeo's own view of the pushed tag and index.
    let tags = skopeo.run(&[
        "list-tags",
        "--tls-verify=false",
        "--no-creds",
        &format!("docker://{}/{repo}", server.host()),
    ]);
    let tags: Value = serde_json::from_slice(&tags).expect("list-tags prints JSON");
    assert!(
        tags["Tags"]
            .as_array()
            .is_some_and(|t| t.iter().any(|t| t == "v1")),
        "skopeo list-tags does not show v1: {tags}"
    );
    let raw = skopeo.run(&[
        "inspect",
        "--raw",
        "--tls-verify=false",
        "--no-creds",
        &format!("docker://{}/{repo}@{}", server.host(), image.top.digest),
    ]);
    assert!(
        raw == image.top.bytes,
        "skopeo inspect --raw by digest returned other bytes than the pushed index"
    );

    // Registry to registry: skopeo may mount the blobs from `repo`.
    let mirror = "skopeo/mirror";
    skopeo.copy_all(&[
        "--src-tls-verify=false",
        "--dest-tls-verify=false",
        "--src-no-creds",
        "--dest-no-creds",
        &dest,
        &format!("docker://{}/{mirror}:copied", server.host()),
    ]);
    check_pushed_over_http(&http, &server, mirror, "copied", &image).await;

    // Everything must survive a restart of the server (same data dir).
    server.restart();

    let out = work.path().join("out-layout");
    skopeo.copy_all(&[
        "--src-tls-verify=false",
        "--src-no-creds",
        &format!("docker://{}/{repo}:v1", server.host()),
        &format!("oci:{}:v1", out.display()),
    ]);
    image.assert_oci_layout_matches(&out, "v1");
}

/// Docker schema 2 manifest list via skopeo's `dir:` transport (which keeps
/// manifests as they are): `dir:` -> airdock -> `dir:`.
#[tokio::test]
async fn docker_manifest_list_round_trip_preserves_digests() {
    let skopeo = Skopeo::new();
    let server = Server::start();
    let work = scratch_dir("airdock-skopeo-");
    let image = MultiArch::build(Flavor::Docker);

    let src = work.path().join("src-dir");
    image.write_dir(&src);

    let repo = "skopeo/dockerlist";
    skopeo.copy_all(&[
        "--dest-tls-verify=false",
        "--dest-no-creds",
        &format!("dir:{}", src.display()),
        &format!("docker://{}/{repo}:v2", server.host()),
    ]);

    let http = reqwest::Client::new();
    check_pushed_over_http(&http, &server, repo, "v2", &image).await;

    let out = work.path().join("out-dir");
    skopeo.copy_all(&[
        "--src-tls-verify=false",
        "--src-no-creds",
        &format!("docker://{}/{repo}:v2", server.host()),
        &format!("dir:{}", out.display()),
    ]);
    image.assert_dir_matches(&out);
}

// ---------------------------------------------------------------------------
// HTTP checks
// ---------------------------------------------------------------------------

fn header<'a>(resp: &'a reqwest::Response, name: &str) -> Option<&'a str> {
    resp.headers().get(name).and_then(|v| v.to_str().ok())
}

/// `method url` (with `Accept` when given) answers 200; returns what to call it in messages
/// and the response.
async fn fetch_ok(
    http: &reqwest::Client,
    method: reqwest::Method,
    url: &str,
    accept: Option<&str>,
) -> (String, reqwest::Response) {
    let what = format!("{method} {url}");
    let mut req = http.request(method, url);
    if let Some(accept) = accept {
        req = req.header("Accept", accept);
    }
    let resp = req.send().await.unwrap_or_else(|e| panic!("{what}: {e}"));
    assert_eq!(resp.status().as_u16(), 200, "{what}");
    (what, resp)
}

/// `method url` answers 200 with `want`'s Content-Type and Docker-Content-Digest.
async fn fetch_manifest(
    http: &reqwest::Client,
    method: reqwest::Method,
    url: &str,
    want: &Blob,
) -> (String, reqwest::Response) {
    let (what, resp) = fetch_ok(http, method, url, Some(ACCEPT_ALL)).await;
    assert_eq!(
        header(&resp, "content-type"),
        Some(want.media_type.as_str()),
        "{what}: Content-Type"
    );
    assert_eq!(
        header(&resp, "docker-content-digest"),
        Some(want.digest.as_str()),
        "{what}: Docker-Content-Digest"
    );
    (what, resp)
}

/// The tag, the index, every child manifest and every blob are served with
/// the pushed bytes, media types and digests.
async fn check_pushed_over_http(
    http: &reqwest::Client,
    server: &Server,
    repo: &str,
    tag: &str,
    image: &MultiArch,
) {
    let top = &image.top;

    // The index by tag and by digest, GET and HEAD.
    for reference in [tag, top.digest.as_str()] {
        let url = server.url(&format!("/v2/{repo}/manifests/{reference}"));
        let (what, resp) = fetch_manifest(http, reqwest::Method::GET, &url, top).await;
        let body = resp.bytes().await.unwrap_or_else(|e| panic!("{what}: {e}"));
        assert!(
            body[..] == top.bytes[..],
            "{what}: body differs from the pushed index\n got: {}\nwant: {}",
            String::from_utf8_lossy(&body),
            String::from_utf8_lossy(&top.bytes)
        );

        let (what, resp) = fetch_manifest(http, reqwest::Method::HEAD, &url, top).await;
        assert_eq!(
            header(&resp, "content-length"),
            Some(top.bytes.len().to_string().as_str()),
            "{what}: Content-Length"
        );
    }

    // Each platform manifest by digest.
    for child in &image.manifests {
        let url = server.url(&format!("/v2/{repo}/manifests/{}", child.digest));
        let (what, resp) = fetch_manifest(http, reqwest::Method::GET, &url, child).await;
        let body = resp.bytes().await.unwrap_or_else(|e| panic!("{what}: {e}"));
        assert!(
            body[..] == child.bytes[..],
            "{what}: body differs from the pushed manifest"
        );
    }

    // Every config and layer blob.
    for blob in &image.blobs {
        let url = server.url(&format!("/v2/{repo}/blobs/{}", blob.digest));
        let (what, resp) = fetch_ok(http, reqwest::Method::HEAD, &url, None).await;
        assert_eq!(
            header(&resp, "content-length"),
            Some(blob.bytes.len().to_string().as_str()),
            "{what}: Content-Length"
        );

        let (what, resp) = fetch_ok(http, reqwest::Method::GET, &url, None).await;
        let body = resp.bytes().await.unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(body.len(), blob.bytes.len(), "{what}: length");
        assert!(body[..] == blob.bytes[..], "{what}: body differs");
    }

    // The tag is listed.
    let url = server.url(&format!("/v2/{repo}/tags/list"));
    let (_, resp) = fetch_ok(http, reqwest::Method::GET, &url, None).await;
    let list: Value = resp
        .json()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: not JSON: {e}"));
    assert_eq!(list["name"], repo, "GET {url}: name");
    assert!(
        list["tags"]
            .as_array()
            .is_some_and(|t| t.iter().any(|t| t == tag)),
        "GET {url}: tag {tag} missing from {list}"
    );
}

// ---------------------------------------------------------------------------
// Test images
// ---------------------------------------------------------------------------

#[derive(Clone, Copy, PartialEq, Eq)]
enum Flavor {
    Oci,
    Docker,
}

/// A content-addressed piece of an image: index, manifest, config or layer.
#[derive(Clone)]
struct Blob {
    media_type: String,
    digest: String,
    bytes: Vec<u8>,
}

impl Blob {
    fn new(media_type: &str, bytes: Vec<u8>) -> Blob {
        Blob {
            media_type: media_type.to_string(),
            digest: sha256_digest(&bytes),
            bytes,
        }
    }

    fn hex(&self) -> &str {
        self.digest.strip_prefix("sha256:").expect("sha256 digest")
    }

    fn descriptor(&self) -> Value {
        json!({
            "mediaType": self.media_type,
            "digest": self.digest,
            "size": self.bytes.len(),
        })
    }
}

/// A multi-platform image: the index (or manifest list), one manifest per
/// platform, and the configs and layers they reference.
struct MultiArch {
    top: Blob,
    manifests: Vec<Blob>,
    /// Configs and layers, each once (the base layer is shared).
    blobs: Vec<Blob>,
}

impl MultiArch {
    fn build(flavor: Flavor) -> MultiArch {
        let (list_type, manifest_type, config_type, layer_type) = match flavor {
            Flavor::Oci => (OCI_INDEX, OCI_MANIFEST, OCI_CONFIG, OCI_LAYER_GZIP),
            Flavor::Docker => (
                DOCKER_LIST,
                DOCKER_MANIFEST,
                DOCKER_CONFIG,
                DOCKER_LAYER_GZIP,
            ),
        };
        let tag = match flavor {
            Flavor::Oci => "oci",
            Flavor::Docker => "docker",
        };

        // Shared base layer, with a ~1.5 MiB incompressible file so that the
        // upload is more than a single small write.
        let base_tar = tar(&[
            Entry::Dir("etc"),
            Entry::File("etc/os-release", b"NAME=airdock-test\nID=airdock\n"),
            Entry::Dir("opt"),
            Entry::File("opt/noise.bin", &noise(1536 * 1024, 7)),
        ]);
        let base = Blob::new(layer_type, gzip(&base_tar));
        let base_diff_id = sha256_digest(&base_tar);

        let mut blobs = vec![base.clone()];
        let mut manifests = Vec::new();
        let mut entries = Vec::new();

        for (arch, variant) in [("amd64", None), ("arm64", Some("v8"))] {
            let arch_text = format!("{tag} image for linux/{arch}\n");
            let arch_tar = tar(&[
                Entry::Dir("etc"),
                Entry::File("etc/arch", arch_text.as_bytes()),
                Entry::File("etc/motd", format!("hello from {arch}\n").as_bytes()),
            ]);
            let layer = Blob::new(layer_type, gzip(&arch_tar));

            let mut config = json!({
                "created": "2024-01-01T00:00:00Z",
                "architecture": arch,
                "os": "linux",
                "config": {
                    "Env": ["PATH=/usr/bin:/bin"],
                    "Cmd": ["/bin/sh"],
                    "Labels": { "test": "airdock-skopeo" },
                },
                "rootfs": {
                    "type": "layers",
                    "diff_ids": [base_diff_id, sha256_digest(&arch_tar)],
                },
                "history": [
                    { "created": "2024-01-01T00:00:00Z", "created_by": "base layer" },
                    { "created": "2024-01-01T00:00:00Z", "created_by": format!("{arch} layer") },
                ],
            });
            if let Some(v) = variant {
                config["variant"] = json!(v);
            }
            let config = Blob::new(config_type, to_json(&config));

            let mut manifest = json!({
                "schemaVersion": 2,
                "mediaType": manifest_type,
                "config": config.descriptor(),
                "layers": [base.descriptor(), layer.descriptor()],
            });
            if flavor == Flavor::Oci {
                manifest["annotations"] = json!({
                    "org.opencontainers.image.title": format!("airdock skopeo test ({arch})"),
                });
            }
            let manifest = Blob::new(manifest_type, to_json(&manifest));

            let mut entry = manifest.descriptor();
            entry["platform"] = json!({ "architecture": arch, "os": "linux" });
            if let Some(v) = variant {
                entry["platform"]["variant"] = json!(v);
            }
            entries.push(entry);
            blobs.push(config);
            blobs.push(layer);
            manifests.push(manifest);
        }

        let mut top = json!({
            "schemaVersion": 2,
            "mediaType": list_type,
            "manifests": entries,
        });
        if flavor == Flavor::Oci {
            top["annotations"] = json!({ "org.opencontainers.image.vendor": "airdock tests" });
        }
        let top = Blob::new(list_type, to_json(&top));

        MultiArch {
            top,
            manifests,
            blobs,
        }
    }

    /// Every digest-named file of an OCI layout: index, manifests, blobs.
    fn all_blobs(&self) -> BTreeMap<String, &Blob> {
        std::iter::once(&self.top)
            .chain(&self.manifests)
            .chain(&self.blobs)
            .map(|b| (b.hex().to_string(), b))
            .collect()
    }

    /// An OCI image layout whose `index.json` names the index `ref_name`.
    fn write_oci_layout(&self, dir: &Path, ref_name: &str) {
        let blob_dir = dir.join("blobs").join("sha256");
        fs::create_dir_all(&blob_dir).expect("create layout");
        for (hex, blob) in self.all_blobs() {
            write(&blob_dir.join(hex), &blob.bytes);
        }
        write(
            &dir.join("oci-layout"),
            br#"{"imageLayoutVersion":"1.0.0"}"#,
        );
        let mut desc = self.top.descriptor();
        desc["annotations"] = json!({ "org.opencontainers.image.ref.name": ref_name });
        let index = json!({ "schemaVersion": 2, "manifests": [desc] });
        write(&dir.join("index.json"), &to_json(&index));
    }

    /// The layout skopeo wrote must name our index under `ref_name` and hold
    /// exactly our blobs, byte for byte.
    fn assert_oci_layout_matches(&self, dir: &Path, ref_name: &str) {
        let index: Value =
            serde_json::from_slice(&read(&dir.join("index.json"))).expect("index.json is JSON");
        let found = index["manifests"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|d| d["annotations"]["org.opencontainers.image.ref.name"] == ref_name)
            .unwrap_or_else(|| panic!("no {ref_name} in pulled index.json: {index}"));
        assert_eq!(
            found["digest"], self.top.digest,
            "pulled index digest changed"
        );
        assert_eq!(
            found["mediaType"], self.top.media_type,
            "pulled index media type"
        );
        assert_eq!(found["size"], self.top.bytes.len(), "pulled index size");

        let blob_dir = dir.join("blobs").join("sha256");
        let expected = self.all_blobs();
        for (hex, blob) in &expected {
            let path = blob_dir.join(hex);
            assert!(
                path.is_file(),
                "pulled layout lacks {} ({})",
                blob.digest,
                blob.media_type
            );
            let got = read(&path);
            assert!(
                got == blob.bytes,
                "pulled {} ({}) differs from what was pushed",
                blob.digest,
                blob.media_type
            );
            assert_eq!(sha256_digest(&got), blob.digest, "pulled blob digest");
        }
        let extra: Vec<String> = list_dir(&blob_dir)
            .into_iter()
            .filter(|name| !expected.contains_key(name))
            .collect();
        assert!(
            extra.is_empty(),
            "pulled layout has blobs that were never pushed: {extra:?}"
        );
    }

    /// skopeo's `dir:` transport: `manifest.json` is the list, each platform
    /// manifest is `HEX.manifest.json`, configs and layers are `HEX`.
    fn write_dir(&self, dir: &Path) {
        fs::create_dir_all(dir).expect("create dir layout");
        write(&dir.join("version"), b"Directory Transport Version: 1.1\n");
        write(&dir.join("manifest.json"), &self.top.bytes);
        for m in &self.manifests {
            write(&dir.join(format!("{}.manifest.json", m.hex())), &m.bytes);
        }
        for b in &self.blobs {
            write(&dir.join(b.hex()), &b.bytes);
        }
    }

    fn assert_dir_matches(&self, dir: &Path) {
        let top = read(&dir.join("manifest.json"));
        assert!(
            top == self.top.bytes,
            "pulled manifest list differs from what was pushed (digest {} vs {})",
            sha256_digest(&top),
            self.top.digest
        );
        for m in &self.manifests {
            let path = dir.join(format!("{}.manifest.json", m.hex()));
            assert!(path.is_file(), "pulled dir lacks manifest {}", m.digest);
            assert!(
                read(&path) == m.bytes,
                "pulled manifest {} differs",
                m.digest
            );
        }
        for b in &self.blobs {
            let path = dir.join(b.hex());
            assert!(
                path.is_file(),
                "pulled dir lacks blob {} ({})",
                b.digest,
                b.media_type
            );
            assert!(read(&path) == b.bytes, "pulled blob {} differs", b.digest);
        }
    }
}

// ---------------------------------------------------------------------------
// Tarballs, gzip, digests
// ---------------------------------------------------------------------------

/// Deterministic incompressible bytes (xorshift64).
fn noise(len: usize, seed: u64) -> Vec<u8> {
    xorshift_bytes(len, seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
}

/// Pretty-printed JSON: a registry that re-serialised manifests would
/// change these bytes and so their digests.
fn to_json(v: &Value) -> Vec<u8> {
    let mut out = serde_json::to_vec_pretty(v).expect("serialise JSON");
    out.push(b'\n');
    out
}

fn write(path: &Path, data: &[u8]) {
    fs::write(path, data).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

fn read(path: &Path) -> Vec<u8> {
    fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

fn list_dir(dir: &Path) -> Vec<String> {
    fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("list {}: {e}", dir.display()))
        .map(|e| {
            e.expect("directory entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect()
}

// ---------------------------------------------------------------------------
// Running skopeo
// ---------------------------------------------------------------------------

struct Skopeo {
    bin: PathBuf,
    /// Holds an (empty) auth file location and skopeo's temporary files.
    home: tempfile::TempDir,
}

impl Skopeo {
    /// Fails the test (never skips it) when skopeo is not installed.
    fn new() -> Skopeo {
        Skopeo {
            bin: require_tool("skopeo"),
            home: scratch_dir("airdock-skopeo-home-"),
        }
    }

    /// Run `skopeo --insecure-policy ARGS...`; panic with its output unless
    /// it succeeds within [`SKOPEO_TIMEOUT`]. Returns stdout.
    /// `skopeo copy --all --preserve-digests ARGS`: every round trip here keeps every
    /// platform and every digest.
    fn copy_all(&self, args: &[&str]) -> Vec<u8> {
        let mut all = vec!["copy", "--all", "--preserve-digests"];
        all.extend_from_slice(args);
        self.run(&all)
    }

    fn run(&self, args: &[&str]) -> Vec<u8> {
        let shown = format!("skopeo {}", args.join(" "));
        eprintln!("+ {shown}");
        let tmp = self.home.path().join("tmp");
        fs::create_dir_all(&tmp).expect("create skopeo tmp dir");
        let mut child = Command::new(&self.bin)
            // The test builds and trusts its own images; do not depend on
            // the machine's /etc/containers/policy.json.
            .arg("--insecure-policy")
            .args(args)
            .env("REGISTRY_AUTH_FILE", self.home.path().join("auth.json"))
            .env("TMPDIR", &tmp)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", self.bin.display()));

        let mut stdout = child.stdout.take().expect("skopeo stdout");
        let mut stderr = child.stderr.take().expect("skopeo stderr");
        let out_reader = thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = stdout.read_to_end(&mut buf);
            buf
        });
        let err_reader = thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = stderr.read_to_end(&mut buf);
            buf
        });

        let deadline = Instant::now() + SKOPEO_TIMEOUT;
        let status = loop {
            if let Some(status) = child.try_wait().expect("wait for skopeo") {
                break Some(status);
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            thread::sleep(Duration::from_millis(25));
        };
        let out = out_reader.join().expect("skopeo stdout reader");
        let err = err_reader.join().expect("skopeo stderr reader");
        let err = String::from_utf8_lossy(&err);
        match status {
            Some(s) if s.success() => out,
            Some(s) => panic!(
                "`{shown}` failed ({s})\n--- stderr ---\n{err}\n--- stdout ---\n{}",
                String::from_utf8_lossy(&out)
            ),
            None => {
                panic!("`{shown}` did not finish within {SKOPEO_TIMEOUT:?}\n--- stderr ---\n{err}")
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Self-checks of the image builders (no server, no skopeo)
// ---------------------------------------------------------------------------

#[test]
fn built_images_reference_only_known_blobs() {
    for flavor in [Flavor::Oci, Flavor::Docker] {
        let image = MultiArch::build(flavor);
        let known = image.all_blobs();
        let top: Value = serde_json::from_slice(&image.top.bytes).expect("index JSON");
        let children = top["manifests"].as_array().expect("manifests array");
        assert_eq!(children.len(), 2);
        for child in children {
            let hex = child["digest"]
                .as_str()
                .and_then(|d| d.strip_prefix("sha256:"))
                .expect("child digest");
            let manifest = known.get(hex).expect("child manifest is known");
            assert_eq!(child["size"], manifest.bytes.len());
            let m: Value = serde_json::from_slice(&manifest.bytes).expect("manifest JSON");
            let mut refs = vec![m["config"].clone()];
            refs.extend(m["layers"].as_array().expect("layers").iter().cloned());
            for r in refs {
                let hex = r["digest"]
                    .as_str()
                    .and_then(|d| d.strip_prefix("sha256:"))
                    .expect("digest");
                let blob = known.get(hex).expect("referenced blob is known");
                assert_eq!(r["size"], blob.bytes.len());
                assert_eq!(r["mediaType"], blob.media_type);
            }
        }
        // 1 index + 2 manifests + 2 configs + 1 shared + 2 platform layers.
        assert_eq!(known.len(), 8);
    }
}
