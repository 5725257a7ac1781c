//! Synthetic imgpkg tars, for tests and benchmarks: images, indexes and bundles with
//! consistent digests, serialised into `manifest.json` and tar bytes the way
//! `imgpkg copy --to-tar` lays them out. Also raw tar building blocks for hostile inputs.

use std::io::{self, Write};

use serde_json::{json, Value};

use airdock_storage::{Algorithm, Digest};

use super::manifest::{DOCKER_CONFIG, DOCKER_LAYER, DOCKER_MANIFEST, OCI_INDEX, OCI_MANIFEST};
use super::tarfmt::{self, Kind, BLOCK};

/// A layer blob.
#[derive(Clone, Debug)]
pub struct Blob {
    pub digest: Digest,
    pub media_type: String,
    pub bytes: Vec<u8>,
}

impl Blob {
    pub fn new(media_type: &str, bytes: Vec<u8>) -> Blob {
        Blob {
            digest: Digest::of(Algorithm::Sha256, &bytes),
            media_type: media_type.to_owned(),
            bytes,
        }
    }

    /// The tar member name imgpkg gives this blob.
    pub fn member(&self) -> String {
        super::names::tar_member_name(&self.digest)
    }
}

/// An image manifest with its config and layers.
#[derive(Clone, Debug)]
pub struct Image {
    pub digest: Digest,
    pub media_type: String,
    pub manifest: String,
    pub config_digest: Digest,
    pub config: String,
    pub layers: Vec<Blob>,
}

impl Image {
    /// An OCI image with these layers and config labels.
    pub fn oci(layers: Vec<Blob>, labels: &[(&str, &str)]) -> Image {
        Image::build(
            OCI_MANIFEST,
            "application/vnd.oci.image.config.v1+json",
            layers,
            labels,
        )
    }

    /// A Docker schema 2 image with these layers and config labels.
    pub fn docker(layers: Vec<Blob>, labels: &[(&str, &str)]) -> Image {
        Image::build(DOCKER_MANIFEST, DOCKER_CONFIG, layers, labels)
    }

    fn build(
        media_type: &str,
        config_type: &str,
        layers: Vec<Blob>,
        labels: &[(&str, &str)],
    ) -> Image {
        let labels: serde_json::Map<String, Value> = labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), json!(v)))
            .collect();
        let diff_ids: Vec<String> = layers.iter().map(|l| l.digest.to_string()).collect();
        let config = json!({
            "architecture": "amd64",
            "os": "linux",
            "config": if labels.is_empty() { json!({}) } else { json!({"Labels": labels}) },
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
        })
        .to_string();
        let config_digest = Digest::of(Algorithm::Sha256, config.as_bytes());
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": media_type,
            "config": {"mediaType": config_type, "size": config.len(), "digest": config_digest.to_string()},
            "layers": layers.iter().map(|l| json!({
                "mediaType": l.media_type, "size": l.bytes.len(), "digest": l.digest.to_string()
            })).collect::<Vec<_>>(),
        })
        .to_string();
        Image {
            digest: Digest::of(Algorithm::Sha256, manifest.as_bytes()),
            media_type: media_type.to_owned(),
            manifest,
            config_digest,
            config,
            layers,
        }
    }

    /// An imgpkg bundle: one Docker layer holding `.imgpkg/images.yml` (and `extra` files),
    /// config labelled `dev.carvel.imgpkg.bundle`.
    pub fn bundle(images_yml: &str, extra: &[(&str, &[u8])]) -> Image {
        let mut files: Vec<(&str, &[u8])> = vec![(".imgpkg/images.yml", images_yml.as_bytes())];
        files.extend_from_slice(extra);
        let layer = gzip(&tar(&files));
        Image::docker(
            vec![Blob::new(DOCKER_LAYER, layer)],
            &[("dev.carvel.imgpkg.bundle", "true")],
        )
    }

    fn desc_json(&self, source_repo: &str, tag: &str, orig_ref: &str, labels: Value) -> Value {
        json!({
            "Refs": [format!("{source_repo}@{}", self.digest)],
            "Layers": if self.layers.is_empty() { Value::Null } else {
                Value::Array(self.layers.iter().map(|l| json!({
                    "MediaType": l.media_type, "Digest": l.digest.to_string(), "DiffID": "", "Size": l.bytes.len()
                })).collect())
            },
            "Config": {"Digest": self.config_digest.to_string(), "Raw": self.config},
            "Manifest": {"MediaType": self.media_type, "Digest": self.digest.to_string(), "Raw": self.manifest},
            "Tag": tag,
            "OrigRef": orig_ref,
            "Labels": labels,
        })
    }

    /// A `images.yml` reference to this image in `source_repo`.
    pub fn reference(&self, source_repo: &str) -> String {
        format!("{source_repo}@{}", self.digest)
    }
}

/// An OCI index over images.
#[derive(Clone, Debug)]
pub struct Index {
    pub digest: Digest,
    pub manifest: String,
    pub children: Vec<Image>,
}

impl Index {
    pub fn new(children: Vec<Image>) -> Index {
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": children.iter().map(|c| json!({
                "mediaType": c.media_type, "digest": c.digest.to_string(), "size": c.manifest.len(),
                "platform": {"architecture": "amd64", "os": "linux"}
            })).collect::<Vec<_>>(),
        })
        .to_string();
        Index {
            digest: Digest::of(Algorithm::Sha256, manifest.as_bytes()),
            manifest,
            children,
        }
    }
}

/// One top-level `manifest.json` element.
#[derive(Clone, Debug)]
pub enum Element {
    Image {
        image: Image,
        source_repo: String,
        tag: String,
        root_bundle: bool,
    },
    Index {
        index: Index,
        source_repo: String,
        tag: String,
    },
}

/// `manifest.json` for these elements (compact, as Go writes it).
pub fn manifest_json(elements: &[Element]) -> Vec<u8> {
    let arr: Vec<Value> = elements
        .iter()
        .map(|e| match e {
            Element::Image {
                image,
                source_repo,
                tag,
                root_bundle,
            } => {
                let labels = if *root_bundle {
                    json!({"dev.carvel.imgpkg.copy.root-bundle": ""})
                } else {
                    Value::Null
                };
                let orig = image.reference(source_repo);
                json!({"ImageIndex": null, "Image": image.desc_json(source_repo, tag, &orig, labels)})
            }
            Element::Index {
                index,
                source_repo,
                tag,
            } => {
                let orig = format!("{source_repo}@{}", index.digest);
                json!({"ImageIndex": {
                    "Refs": [orig],
                    "Images": index.children.iter().map(|c| c.desc_json(source_repo, tag, &orig, Value::Null)).collect::<Vec<_>>(),
                    "Indexes": null,
                    "MediaType": OCI_INDEX,
                    "Digest": index.digest.to_string(),
                    "Raw": index.manifest,
                    "Tag": tag, "OrigRef": orig, "Labels": null,
                }, "Image": null})
            }
        })
        .collect();
    Value::Array(arr).to_string().into_bytes()
}

/// Every distinct layer blob of these elements, sorted by digest (imgpkg's order).
pub fn blobs(elements: &[Element]) -> Vec<Blob> {
    let mut out: Vec<Blob> = Vec::new();
    let mut push = |img: &Image| {
        for l in &img.layers {
            if !out.iter().any(|b| b.digest == l.digest) {
                out.push(l.clone());
            }
        }
    };
    for e in elements {
        match e {
            Element::Image { image, .. } => push(image),
            Element::Index { index, .. } => index.children.iter().for_each(&mut push),
        }
    }
    out.sort_by(|a, b| a.digest.cmp(&b.digest));
    out
}

/// The imgpkg tar of these elements: `manifest.json`, then the blobs.
pub fn imgpkg_tar(elements: &[Element]) -> Vec<u8> {
    let mj = manifest_json(elements);
    let blobs = blobs(elements);
    let mut files: Vec<(String, &[u8])> = vec![("manifest.json".to_owned(), &mj[..])];
    files.extend(blobs.iter().map(|b| (b.member(), &b.bytes[..])));
    let refs: Vec<(&str, &[u8])> = files.iter().map(|(n, d)| (n.as_str(), *d)).collect();
    tar(&refs)
}

/// A tar of regular files, with Go's header layout and end marker.
pub fn tar(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, data) in files {
        out.extend_from_slice(&raw_header(name, Kind::Regular, data.len() as u64, b""));
        out.extend_from_slice(data);
        out.resize(out.len() + tarfmt::padding(data.len() as u64) as usize, 0);
    }
    out.resize(out.len() + 2 * BLOCK, 0);
    out
}

/// A header block of any kind (links, devices...), with a correct checksum. Names longer
/// than 100 bytes are cut (use PAX for those). Sizes of 8 GiB or more use base-256.
pub fn raw_header(name: &str, kind: Kind, size: u64, link: &[u8]) -> [u8; BLOCK] {
    header_with_mode(name, kind, size, link, 0o644)
}

/// [`raw_header`] with a permission mode (directories a container runtime extracts need
/// their `x` bits). Owner 0:0, mtime 0.
pub fn header_with_mode(name: &str, kind: Kind, size: u64, link: &[u8], mode: u32) -> [u8; BLOCK] {
    let mut b = [0u8; BLOCK];
    let n = name.len().min(100);
    b[..n].copy_from_slice(&name.as_bytes()[..n]);
    b[100..108].copy_from_slice(format!("{:07o}\0", mode & 0o7777).as_bytes());
    b[108..116].copy_from_slice(b"0000000\0");
    b[116..124].copy_from_slice(b"0000000\0");
    if size < 1 << 33 {
        b[124..136].copy_from_slice(format!("{size:011o}\0").as_bytes());
    } else {
        b[124] = 0x80;
        b[128..136].copy_from_slice(&size.to_be_bytes());
    }
    b[136..148].copy_from_slice(b"00000000000\0");
    b[156] = match kind {
        Kind::Regular => b'0',
        Kind::HardLink => b'1',
        Kind::Symlink => b'2',
        Kind::CharDevice => b'3',
        Kind::BlockDevice => b'4',
        Kind::Directory => b'5',
        Kind::Fifo => b'6',
        Kind::PaxLocal => b'x',
        Kind::PaxGlobal => b'g',
        Kind::GnuLongName => b'L',
        Kind::GnuLongLink => b'K',
        Kind::Other(c) => c,
    };
    let l = link.len().min(100);
    b[157..157 + l].copy_from_slice(&link[..l]);
    b[257..263].copy_from_slice(b"ustar\0");
    b[263..265].copy_from_slice(b"00");
    b[148..156].copy_from_slice(b"        ");
    let sum: u32 = b.iter().map(|&c| u32::from(c)).sum();
    b[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    b
}

/// gzip at the default level.
pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    // Writing to a Vec cannot fail.
    let _ = e.write_all(data);
    e.finish().unwrap_or_default()
}

/// A gzip bomb in imgpkg's clothes: a `.tar.gz` whose first entry is a blob claiming 8 GiB,
/// followed by `zero_mib` MiB of zeros (about 1 KiB compressed per MiB) and no end.
pub fn gzip_bomb(zero_mib: usize) -> Vec<u8> {
    let name = format!("sha256-{}.tar.gz", "ab".repeat(32));
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    let zeros = vec![0u8; 1 << 20];
    // Writing to a Vec cannot fail.
    let _ = e.write_all(&raw_header(&name, Kind::Regular, 8 << 30, b""));
    for _ in 0..zero_mib {
        let _ = e.write_all(&zeros);
    }
    e.finish().unwrap_or_default()
}

/// Streams a tar entry whose data is `len` bytes from `fill` into `w` (for archives too
/// large to build in memory).
pub fn write_entry(
    w: &mut impl Write,
    name: &str,
    len: u64,
    mut fill: impl FnMut(&mut [u8]),
) -> io::Result<()> {
    w.write_all(&raw_header(name, Kind::Regular, len, b""))?;
    let mut buf = vec![0u8; 1 << 20];
    let mut left = len;
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        fill(&mut buf[..n]);
        w.write_all(&buf[..n])?;
        left -= n as u64;
    }
    w.write_all(&vec![0u8; tarfmt::padding(len) as usize])
}

/// An `images.yml` (ImagesLock) listing these references.
pub fn images_yml(refs: &[String]) -> String {
    let mut s = String::from("---\napiVersion: imgpkg.carvel.dev/v1alpha1\nimages:\n");
    for r in refs {
        s.push_str(&format!(
            "- annotations:\n    kbld.carvel.dev/id: {r}\n  image: {r}\n"
        ));
    }
    s.push_str("kind: ImagesLock\n");
    s
}
