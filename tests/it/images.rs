//! Helpers for the storage tests: build small images, push them (monolithic or chunked
//! blobs), check they come back byte for byte, run `airdock fsck`, and a tiny PRNG.

#![allow(dead_code)]

use std::path::Path;
use std::process::Command;

use reqwest::{Client, StatusCode};

use crate::support::{image_manifest, AIRDOCK_BIN};

pub use crate::support::{client, sha256, OCI_MANIFEST};

/// An image as pushed: what a pull must return.
#[derive(Clone, Debug)]
pub struct Image {
    pub repo: String,
    pub tag: String,
    pub manifest: Vec<u8>,
    pub digest: String,
    /// (digest, bytes) of the config, then the layer.
    pub blobs: Vec<(String, Vec<u8>)>,
}

/// A config and one layer of `layer_len` bytes, both derived from `seed`; images with the
/// same `seed` share their blobs.
pub fn make_image(repo: &str, tag: &str, seed: u64, layer_len: usize) -> Image {
    let config = format!("{{\"seed\":{seed}}}").into_bytes();
    let mut rng = Rng(seed | 1);
    let layer: Vec<u8> = (0..layer_len).map(|_| rng.next() as u8).collect();
    let (cd, ld) = (sha256(&config), sha256(&layer));
    let manifest = image_manifest(&cd, config.len(), &ld, layer.len()).into_bytes();
    Image {
        repo: repo.into(),
        tag: tag.into(),
        digest: sha256(&manifest),
        manifest,
        blobs: vec![(cd, config), (ld, layer)],
    }
}

/// Why a push did not get its 201/202.
#[derive(Debug)]
pub enum Failed {
    /// The server answered, with this status and body.
    Status(StatusCode, String),
    /// No answer (connection refused or reset: the server was killed).
    Transport(String),
}

/// `r` if it arrived with status `want`; else why not.
pub async fn expect(
    r: reqwest::Result<reqwest::Response>,
    want: StatusCode,
) -> Result<reqwest::Response, Failed> {
    let r = r.map_err(|e| Failed::Transport(e.to_string()))?;
    if r.status() == want {
        return Ok(r);
    }
    let status = r.status();
    let body = r.text().await.unwrap_or_default();
    Err(Failed::Status(status, body))
}

pub async fn push_blob_monolithic(
    c: &Client,
    base: &str,
    repo: &str,
    bytes: &[u8],
) -> Result<(), Failed> {
    let url = format!("{base}/v2/{repo}/blobs/uploads/?digest={}", sha256(bytes));
    expect(
        c.post(url).body(bytes.to_vec()).send().await,
        StatusCode::CREATED,
    )
    .await?;
    Ok(())
}

/// POST, then PATCH in `chunk`-byte pieces, then PUT with the digest.
pub async fn push_blob_chunked(
    c: &Client,
    base: &str,
    repo: &str,
    bytes: &[u8],
    chunk: usize,
) -> Result<(), Failed> {
    let r = expect(
        c.post(format!("{base}/v2/{repo}/blobs/uploads/"))
            .send()
            .await,
        StatusCode::ACCEPTED,
    )
    .await?;
    let mut loc = location(&r)?;
    let mut off = 0;
    for piece in bytes.chunks(chunk.max(1)) {
        let r = expect(
            c.patch(format!("{base}{loc}"))
                .header(
                    "Content-Range",
                    format!("{}-{}", off, off + piece.len() - 1),
                )
                .header("Content-Type", "application/octet-stream")
                .body(piece.to_vec())
                .send()
                .await,
            StatusCode::ACCEPTED,
        )
        .await?;
        loc = location(&r)?;
        off += piece.len();
    }
    let sep = if loc.contains('?') { '&' } else { '?' };
    expect(
        c.put(format!("{base}{loc}{sep}digest={}", sha256(bytes)))
            .send()
            .await,
        StatusCode::CREATED,
    )
    .await?;
    Ok(())
}

fn location(r: &reqwest::Response) -> Result<String, Failed> {
    r.headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .ok_or_else(|| Failed::Status(r.status(), "no Location".into()))
}

/// Push the image's blobs (the layer chunked when asked), then its manifest under its tag.
/// `Ok` means every step got its 2xx: the image is acknowledged.
pub async fn push_image(c: &Client, base: &str, img: &Image, chunked: bool) -> Result<(), Failed> {
    let (_, config) = &img.blobs[0];
    let (_, layer) = &img.blobs[1];
    push_blob_monolithic(c, base, &img.repo, config).await?;
    if chunked {
        push_blob_chunked(c, base, &img.repo, layer, layer.len() / 3 + 1).await?;
    } else {
        push_blob_monolithic(c, base, &img.repo, layer).await?;
    }
    expect(
        c.put(format!("{base}/v2/{}/manifests/{}", img.repo, img.tag))
            .header("Content-Type", OCI_MANIFEST)
            .body(img.manifest.clone())
            .send()
            .await,
        StatusCode::CREATED,
    )
    .await?;
    Ok(())
}

/// Pull the image by tag and every blob; all must match byte for byte.
pub async fn verify_image(c: &Client, base: &str, img: &Image) -> Result<(), String> {
    let get = |path: String| async move {
        let r = c
            .get(format!("{base}{path}"))
            .send()
            .await
            .map_err(|e| format!("{path}: {e}"))?;
        let status = r.status();
        let bytes = r.bytes().await.map_err(|e| format!("{path}: {e}"))?;
        if status != StatusCode::OK {
            return Err(format!(
                "{path}: {status} {}",
                String::from_utf8_lossy(&bytes)
            ));
        }
        Ok::<_, String>(bytes)
    };
    let m = get(format!("/v2/{}/manifests/{}", img.repo, img.tag)).await?;
    if m[..] != img.manifest[..] {
        return Err(format!("{}:{} manifest differs", img.repo, img.tag));
    }
    for (d, bytes) in &img.blobs {
        let got = get(format!("/v2/{}/blobs/{d}", img.repo)).await?;
        if got[..] != bytes[..] {
            return Err(format!("{}: blob {d} differs", img.repo));
        }
    }
    Ok(())
}

/// Run `airdock fsck` (optionally `--repair`) on a data dir no server is using; returns
/// whether it exited 0 (clean) and its report.
pub fn fsck(data_dir: &Path, repair: bool) -> (bool, String) {
    fsck_in_env(data_dir, repair, &[])
}

/// [`fsck`] with `env` set for the process (the S3 credentials of a data dir on S3).
pub fn fsck_in_env(data_dir: &Path, repair: bool, env: &[(&str, &str)]) -> (bool, String) {
    let mut cmd = Command::new(AIRDOCK_BIN);
    cmd.arg("fsck").arg("--data-dir").arg(data_dir);
    if repair {
        cmd.arg("--repair");
    }
    let out = cmd
        .env_remove("AIRDOCK_DATA_DIR")
        .envs(env.iter().copied())
        .output()
        .expect("run airdock fsck");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// xorshift64*: enough randomness for kill instants and sizes, no dependency.
pub struct Rng(pub u64);

impl Rng {
    pub fn seeded() -> Rng {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0x9e37_79b9_7f4a_7c15);
        let seed = std::env::var("AIRDOCK_TEST_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(t | 1);
        eprintln!("random seed: {seed} (set AIRDOCK_TEST_SEED to repeat)");
        Rng(seed)
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform-ish in `0..n` (`n` > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}
