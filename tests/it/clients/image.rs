//! Test images, built here byte by byte (no base image, no network): a tar
//! layer, gzip'd, an image config, a manifest, and for multi-platform images
//! an OCI index or a Docker manifest list. The same image can be written as
//! a `docker save` archive (for `docker load`, `podman load`, `crane push`),
//! as an OCI image layout, or pushed over HTTP.
//!
//! Everything is deterministic: the same label gives the same digests.

#![allow(dead_code)]

use std::fs;
use std::path::Path;

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::harness::{tool, Cmd, Http, Resp};
use crate::fixture::{stored_gzip, tree_tar};
use crate::support::{xorshift_bytes, Server};

pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
pub const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Flavor {
    Oci,
    Docker,
}

/// Content-addressed bytes with their media type.
#[derive(Clone, Debug)]
pub struct Blob {
    pub media_type: String,
    pub digest: String,
    pub bytes: Vec<u8>,
}

impl Blob {
    pub fn new(media_type: &str, bytes: Vec<u8>) -> Blob {
        Blob {
            media_type: media_type.to_string(),
            digest: sha256_digest(&bytes),
            bytes,
        }
    }

    pub fn hex(&self) -> &str {
        self.digest.strip_prefix("sha256:").expect("sha256 digest")
    }

    pub fn descriptor(&self) -> Value {
        json!({
            "mediaType": self.media_type,
            "digest": self.digest,
            "size": self.bytes.len(),
        })
    }
}

/// The architecture name (GOARCH) of this machine, so daemons unpack the
/// single-platform images without a platform mismatch.
pub fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        "s390x" => "s390x",
        "riscv64" => "riscv64",
        other => panic!("no OCI architecture name known for {other}"),
    }
}

/// A single-platform image with one layer.
#[derive(Clone, Debug)]
pub struct Image {
    pub flavor: Flavor,
    pub arch: String,
    /// Regular files of the layer: (path without leading '/', content).
    pub files: Vec<(String, Vec<u8>)>,
    /// The uncompressed layer; its sha256 is the diff ID.
    pub layer_tar: Vec<u8>,
    pub diff_id: String,
    /// The gzip'd layer as pushed.
    pub layer: Blob,
    pub config: Blob,
    pub manifest: Blob,
}

impl Image {
    /// An image for `arch` whose files say `label` (different labels give
    /// different digests).
    pub fn build(flavor: Flavor, arch: &str, label: &str) -> Image {
        Image::with_bulk(flavor, arch, label, 96 * 1024)
    }

    /// [`Image::build`] with `bulk` bytes of noise in `airdock/data.bin` (a big layer: one
    /// that gzip cannot shrink below S3's multipart threshold or a proxy's default body cap).
    pub fn with_bulk(flavor: Flavor, arch: &str, label: &str, bulk: usize) -> Image {
        let (manifest_type, config_type, layer_type) = match flavor {
            Flavor::Oci => (OCI_MANIFEST, OCI_CONFIG, OCI_LAYER_GZIP),
            Flavor::Docker => (DOCKER_MANIFEST, DOCKER_CONFIG, DOCKER_LAYER_GZIP),
        };
        let files = vec![
            (
                "airdock/hello.txt".to_string(),
                format!("hello from the airdock client tests: {label} (linux/{arch})\n")
                    .into_bytes(),
            ),
            ("airdock/label".to_string(), label.as_bytes().to_vec()),
            // Some bulk, so a layer is more than one small write.
            ("airdock/data.bin".to_string(), noise(bulk, label)),
        ];
        let layer_tar = tree_tar(&files);
        let diff_id = sha256_digest(&layer_tar);
        let layer = Blob::new(layer_type, stored_gzip(&layer_tar));

        let mut config = json!({
            "created": "2024-01-01T00:00:00Z",
            "architecture": arch,
            "os": "linux",
            "config": {
                "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
                "Cmd": ["/airdock/hello.txt"],
                "Labels": { "org.airdock.test": label },
            },
            "rootfs": { "type": "layers", "diff_ids": [diff_id] },
            "history": [{ "created": "2024-01-01T00:00:00Z", "created_by": "airdock client tests" }],
        });
        if arch == "arm64" {
            config["variant"] = json!("v8");
        }
        let config = Blob::new(config_type, to_json(&config));

        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": manifest_type,
            "config": config.descriptor(),
            "layers": [layer.descriptor()],
        });
        let manifest = Blob::new(manifest_type, to_json(&manifest));

        Image {
            flavor,
            arch: arch.to_string(),
            files,
            layer_tar,
            diff_id,
            layer,
            config,
            manifest,
        }
    }

    /// The bytes of file `path` of the layer.
    pub fn file(&self, path: &str) -> &[u8] {
        self.files
            .iter()
            .find(|(p, _)| p == path)
            .map(|(_, c)| c.as_slice())
            .unwrap_or_else(|| panic!("no file {path} in the test image"))
    }

    pub fn platform(&self) -> Value {
        let mut p = json!({ "architecture": self.arch, "os": "linux" });
        if self.arch == "arm64" {
            p["variant"] = json!("v8");
        }
        p
    }

    /// Write a `docker save` archive (manifest.json, the config, the
    /// uncompressed layer) tagged `repo_tag`.
    pub fn write_docker_archive(&self, path: &Path, repo_tag: &str) {
        let layer_path = format!("{}/layer.tar", sha256_hex(&self.layer_tar));
        let config_path = format!("{}.json", self.config.hex());
        let manifest = json!([{
            "Config": config_path,
            "RepoTags": [repo_tag],
            "Layers": [layer_path],
        }]);
        let entries = vec![
            (config_path, self.config.bytes.clone()),
            (layer_path, self.layer_tar.clone()),
            ("manifest.json".to_string(), to_json(&manifest)),
        ];
        fs::write(path, tree_tar(&entries)).expect("write docker archive");
    }

    /// Write an OCI image layout holding this image under `tag`.
    pub fn write_oci_layout(&self, dir: &Path, tag: &str) {
        let mut desc = self.manifest.descriptor();
        desc["annotations"] = json!({ "org.opencontainers.image.ref.name": tag });
        write_layout(dir, &[&self.config, &self.layer, &self.manifest], desc);
    }

    /// Push config, layer and manifest over HTTP as `repo:reference`.
    pub fn push_http(&self, http: &Http, server: &Server, repo: &str, reference: &str) {
        push_blob(http, server, repo, &self.config);
        push_blob(http, server, repo, &self.layer);
        put_manifest(http, server, repo, reference, &self.manifest);
    }

    /// Check that `repo` serves this image's config and a layer whose
    /// content is this image's layer: what a client that re-compresses the
    /// layer (docker, podman, crane) must have pushed. Returns the manifest.
    pub fn assert_pushed_equivalent(
        &self,
        http: &Http,
        server: &Server,
        repo: &str,
        reference: &str,
    ) -> Value {
        self.check_pushed(http, server, repo, reference, true)
    }

    /// Like [`Image::assert_pushed_equivalent`] for a client that converted
    /// the image to another format (its config is then re-serialised): the
    /// config must still name this image's layer, and the layer must unpack
    /// to it.
    pub fn assert_pushed_converted(
        &self,
        http: &Http,
        server: &Server,
        repo: &str,
        reference: &str,
    ) -> Value {
        self.check_pushed(http, server, repo, reference, false)
    }

    fn check_pushed(
        &self,
        http: &Http,
        server: &Server,
        repo: &str,
        reference: &str,
        same_config: bool,
    ) -> Value {
        let resp = http
            .get(&server.url(&format!("/v2/{repo}/manifests/{reference}")))
            .expect_status(200);
        let manifest = resp.json();
        let config_digest = manifest["config"]["digest"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        if same_config {
            assert_eq!(
                config_digest, self.config.digest,
                "{}: the pushed config is not the image's config: {manifest}",
                resp.what
            );
        }
        let config = fetch_blob(http, server, repo, &config_digest, "config blob digest");
        if same_config {
            assert!(
                config.body == self.config.bytes,
                "{}: config bytes differ",
                config.what
            );
        } else {
            assert_eq!(
                config.json()["rootfs"]["diff_ids"],
                json!([self.diff_id]),
                "{}: the converted config must name the image's layer",
                config.what
            );
        }
        let layers = manifest["layers"].as_array().expect("layers array");
        assert_eq!(
            layers.len(),
            1,
            "{}: one layer expected: {manifest}",
            resp.what
        );
        let digest = layers[0]["digest"].as_str().expect("layer digest");
        let layer = fetch_blob(http, server, repo, digest, "blob does not match its digest");
        let media_type = layers[0]["mediaType"].as_str().unwrap_or_default();
        let plain = if media_type.ends_with("gzip") {
            gunzip(&layer.body)
        } else {
            layer.body.clone()
        };
        assert_eq!(
            sha256_digest(&plain),
            self.diff_id,
            "{}: the pushed layer ({media_type}) does not unpack to the image's layer",
            layer.what
        );
        manifest
    }
}

/// A multi-platform image: an OCI index or a Docker manifest list over two
/// single-layer images (linux/amd64 and linux/arm64/v8).
#[derive(Clone, Debug)]
pub struct Index {
    pub images: Vec<Image>,
    pub index: Blob,
}

impl Index {
    pub fn build(flavor: Flavor, label: &str) -> Index {
        let images: Vec<Image> = ["amd64", "arm64"]
            .into_iter()
            .map(|arch| Image::build(flavor, arch, &format!("{label}/{arch}")))
            .collect();
        let media_type = match flavor {
            Flavor::Oci => OCI_INDEX,
            Flavor::Docker => DOCKER_LIST,
        };
        let manifests: Vec<Value> = images
            .iter()
            .map(|img| {
                let mut d = img.manifest.descriptor();
                d["platform"] = img.platform();
                d
            })
            .collect();
        let index = json!({
            "schemaVersion": 2,
            "mediaType": media_type,
            "manifests": manifests,
        });
        Index {
            images,
            index: Blob::new(media_type, to_json(&index)),
        }
    }

    /// The image for this machine's architecture.
    pub fn host_image(&self) -> &Image {
        self.images
            .iter()
            .find(|i| i.arch == host_arch())
            .unwrap_or_else(|| panic!("the test index has no image for {}", host_arch()))
    }

    /// Every blob and manifest below the index (not the index itself).
    pub fn parts(&self) -> Vec<&Blob> {
        self.images
            .iter()
            .flat_map(|i| [&i.config, &i.layer, &i.manifest])
            .collect()
    }

    pub fn push_http(&self, http: &Http, server: &Server, repo: &str, reference: &str) {
        for img in &self.images {
            img.push_http(http, server, repo, &img.manifest.digest);
        }
        put_manifest(http, server, repo, reference, &self.index);
    }

    pub fn write_oci_layout(&self, dir: &Path, tag: &str) {
        let mut desc = self.index.descriptor();
        desc["annotations"] = json!({ "org.opencontainers.image.ref.name": tag });
        let mut blobs = self.parts();
        blobs.push(&self.index);
        write_layout(dir, &blobs, desc);
    }

    /// Every manifest of the index is served under `repo` byte for byte,
    /// `reference` resolves to the index, and every blob is there.
    pub fn assert_served(&self, http: &Http, server: &Server, repo: &str, reference: &str) {
        assert_manifest_served(http, server, repo, reference, &self.index);
        for img in &self.images {
            assert_manifest_served(http, server, repo, &img.manifest.digest, &img.manifest);
            for blob in [&img.config, &img.layer] {
                let resp = http
                    .get(&server.url(&format!("/v2/{repo}/blobs/{}", blob.digest)))
                    .expect_status(200);
                assert!(resp.body == blob.bytes, "{}: blob bytes differ", resp.what);
            }
        }
    }
}

fn write_layout(dir: &Path, blobs: &[&Blob], top: Value) {
    let blob_dir = dir.join("blobs/sha256");
    fs::create_dir_all(&blob_dir).expect("create layout blobs dir");
    for b in blobs {
        fs::write(blob_dir.join(b.hex()), &b.bytes).expect("write layout blob");
    }
    fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#)
        .expect("write oci-layout");
    let index = json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [top],
    });
    fs::write(dir.join("index.json"), to_json(&index)).expect("write index.json");
}

// ---------------------------------------------------------------------------
// HTTP pushes and checks
// ---------------------------------------------------------------------------

/// Push one blob: POST a session, PUT it with the digest.
pub fn push_blob(http: &Http, server: &Server, repo: &str, blob: &Blob) {
    let resp = http
        .request(
            "POST",
            &server.url(&format!("/v2/{repo}/blobs/uploads/")),
            &[],
            None,
        )
        .expect_status(202);
    let location = resp.header("location").expect("upload Location");
    let location = if location.starts_with('/') {
        server.url(&location)
    } else {
        location
    };
    let sep = if location.contains('?') { '&' } else { '?' };
    http.request(
        "PUT",
        &format!("{location}{sep}digest={}", blob.digest),
        &[("Content-Type", "application/octet-stream")],
        Some(blob.bytes.clone()),
    )
    .expect_status(201);
}

pub fn put_manifest(http: &Http, server: &Server, repo: &str, reference: &str, manifest: &Blob) {
    let resp = http
        .request(
            "PUT",
            &server.url(&format!("/v2/{repo}/manifests/{reference}")),
            &[("Content-Type", &manifest.media_type)],
            Some(manifest.bytes.clone()),
        )
        .expect_status(201);
    assert_eq!(
        resp.header("docker-content-digest").as_deref(),
        Some(manifest.digest.as_str()),
        "{}: Docker-Content-Digest",
        resp.what
    );
}

/// GET blob `digest` of `repo`: 200, with bytes that hash to `digest` (else `mismatch`).
fn fetch_blob(http: &Http, server: &Server, repo: &str, digest: &str, mismatch: &str) -> Resp {
    let resp = http
        .get(&server.url(&format!("/v2/{repo}/blobs/{digest}")))
        .expect_status(200);
    assert_eq!(
        sha256_digest(&resp.body),
        digest,
        "{}: {mismatch}",
        resp.what
    );
    resp
}

/// GET `repo:reference` returns exactly `manifest` (bytes, type, digest).
pub fn assert_manifest_served(
    http: &Http,
    server: &Server,
    repo: &str,
    reference: &str,
    manifest: &Blob,
) {
    let resp = http
        .get(&server.url(&format!("/v2/{repo}/manifests/{reference}")))
        .expect_status(200);
    assert_eq!(
        resp.header("docker-content-digest").as_deref(),
        Some(manifest.digest.as_str()),
        "{}: Docker-Content-Digest",
        resp.what
    );
    assert_eq!(
        resp.header("content-type").as_deref(),
        Some(manifest.media_type.as_str()),
        "{}: Content-Type",
        resp.what
    );
    assert!(
        resp.body == manifest.bytes,
        "{}: body differs\n got: {}\nwant: {}",
        resp.what,
        String::from_utf8_lossy(&resp.body),
        String::from_utf8_lossy(&manifest.bytes)
    );
}

/// The digest `repo:reference` resolves to (HEAD), or None on 404.
pub fn resolve(http: &Http, server: &Server, repo: &str, reference: &str) -> Option<String> {
    let resp = http.head(&server.url(&format!("/v2/{repo}/manifests/{reference}")));
    match resp.status {
        200 => Some(
            resp.header("docker-content-digest")
                .unwrap_or_else(|| panic!("{}: no Docker-Content-Digest", resp.what)),
        ),
        404 => None,
        other => panic!("{}: unexpected status {other}", resp.what),
    }
}

/// The tags of `repo` (`tags/list`), sorted.
pub fn tags(http: &Http, server: &Server, repo: &str) -> Vec<String> {
    let v = http
        .get(&server.url(&format!("/v2/{repo}/tags/list")))
        .expect_status(200)
        .json();
    let mut tags: Vec<String> = v["tags"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|t| t.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    tags.sort();
    tags
}

// ---------------------------------------------------------------------------
// Bytes: tar, gzip, digests
// ---------------------------------------------------------------------------

pub fn sha256_hex(data: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update(data);
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

pub use crate::support::sha256 as sha256_digest;

pub fn to_json(v: &Value) -> Vec<u8> {
    serde_json::to_vec(v).expect("serialise JSON")
}

/// Pseudo-random bytes (xorshift seeded from `seed`), so gzip cannot shrink
/// them and each label gets its own content.
fn noise(len: usize, seed: &str) -> Vec<u8> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for b in seed.bytes() {
        x = (x ^ u64::from(b)).wrapping_mul(0x1000_0000_01b3);
    }
    xorshift_bytes(len, x)
}

/// Decompress with the system `gzip` (a layer a client compressed itself).
pub fn gunzip(data: &[u8]) -> Vec<u8> {
    Cmd::new(tool("gzip"))
        .args(["-d", "-c"])
        .stdin(data.to_vec())
        .run()
        .stdout
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn images_are_deterministic_and_distinct() {
        let a = Image::build(Flavor::Oci, "amd64", "x");
        let b = Image::build(Flavor::Oci, "amd64", "x");
        let c = Image::build(Flavor::Oci, "amd64", "y");
        assert_eq!(a.manifest.digest, b.manifest.digest);
        assert_ne!(a.manifest.digest, c.manifest.digest);
        let i = Index::build(Flavor::Docker, "z");
        let v: Value = serde_json::from_slice(&i.index.bytes).expect("json");
        assert_eq!(v["manifests"].as_array().map(Vec::len), Some(2));
        assert_eq!(v["mediaType"], DOCKER_LIST);
    }
}
