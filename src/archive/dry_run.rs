//! Dry run of a docker / OCI archive import (`?dry_run=true`, `airdock import --dry-run`):
//! every entry is read and verified as the import reads it, and nothing is stored.
//!
//! The real import stores each file as it streams by and reads configs, manifests and
//! (for a classic archive's gzipped layers) the inflated layer back from the store once the
//! archive's own documents have said what they are. A dry run cannot read back what it did
//! not store, so it keeps what the planner will need while the bytes pass: JSON files small
//! enough to be a manifest or config (in memory, bounded), and for a gzipped file whose name
//! is not its digest, the digest of its inflated bytes (a second task inflates a copy of the
//! stream with the same decoder and bounds as the import's read-back).

use std::collections::{HashMap, HashSet};
use std::io;

use tokio::io::{AsyncRead, AsyncReadExt};

use airdock_storage::{Algorithm, Digest, Ingested, Pin as BlobPin, Store, MAX_MANIFEST_BYTES};

use crate::imgpkg::gzip::{self, Compression, GzipDecoder, InflateLimits};
use crate::imgpkg::import::storage_err;
use crate::imgpkg::stream::TarReader;
use crate::imgpkg::upload;
use crate::imgpkg::{ErrorKind, ImportError};

/// Bytes of JSON files kept in memory in all (manifests and configs are kilobytes each).
const KEEP_TOTAL_MAX: u64 = 64 << 20;
/// Read size while hashing an entry.
const CHUNK: usize = 256 << 10;
/// Chunks queued for the inflating task before the reader waits for it.
const INFLATE_QUEUE: usize = 4;

/// What a dry run kept of the blobs it did not store.
#[derive(Default)]
pub(super) struct Kept {
    json: HashMap<Digest, Vec<u8>>,
    total: u64,
    /// JSON files not kept because [`KEEP_TOTAL_MAX`] was reached.
    over_budget: HashSet<Digest>,
    /// For gzipped files named other than by digest: the digest of their inflated bytes, or
    /// why inflating failed.
    inflated: HashMap<Digest, Result<Digest, String>>,
}

impl Kept {
    /// The bytes of blob `d` (at most `limit` of them) as the import would read them back
    /// from the store: kept here, or already stored before this dry run.
    pub(super) async fn read(
        &self,
        store: &Store,
        d: &Digest,
        limit: u64,
        entry: &str,
    ) -> Result<Vec<u8>, ImportError> {
        if let Some(b) = self.json.get(d) {
            if b.len() as u64 > limit {
                return Err(too_large(entry, limit));
            }
            return Ok(b.clone());
        }
        let stored = store.blob_exists(d).await;
        if stored.map_err(|e| storage_err(&format!("looking up {entry}"), e))? {
            return super::import::read_stored(store, d, limit, entry).await;
        }
        if self.over_budget.contains(d) {
            return Err(ImportError::new(
                ErrorKind::TooLarge,
                Some(entry),
                format!(
                    "a dry run keeps the archive's manifests and configs in memory, {KEEP_TOTAL_MAX} bytes at most; this archive has more (a real import has no such limit)"
                ),
            ));
        }
        // Only JSON files are kept; the import would fail to parse this one.
        Err(ImportError::new(
            ErrorKind::Manifest,
            Some(entry),
            "not a JSON document",
        ))
    }

    /// The digest of the inflated bytes of `d`, if it was a gzipped file whose name is not
    /// its digest: `None` when it is not gzip, `Err` with the decoder's complaint.
    pub(super) fn inflated(&self, d: &Digest) -> Option<&Result<Digest, String>> {
        self.inflated.get(d)
    }
}

fn too_large(entry: &str, limit: u64) -> ImportError {
    ImportError::new(
        ErrorKind::TooLarge,
        Some(entry),
        format!("larger than the {limit}-byte limit"),
    )
}

/// Whether a file starting with `head` may be a manifest or config (JSON object or array).
fn looks_like_json(head: &[u8]) -> bool {
    matches!(
        head.iter().find(|b| !b.is_ascii_whitespace()),
        Some(b'{' | b'[')
    )
}

/// The inflating copy of one entry's stream, hashing what comes out.
struct Inflating {
    tx: tokio::sync::mpsc::Sender<io::Result<bytes::Bytes>>,
    task: tokio::task::JoinHandle<Result<Digest, String>>,
}

impl Inflating {
    fn start() -> Inflating {
        let (tx, rx) = tokio::sync::mpsc::channel::<io::Result<bytes::Bytes>>(INFLATE_QUEUE);
        let chunks =
            futures_util::stream::unfold(
                rx,
                |mut rx| async move { rx.recv().await.map(|c| (c, rx)) },
            );
        let task = tokio::spawn(async move {
            let input = tokio_util::io::StreamReader::new(Box::pin(chunks));
            // The same decoder and bounds as the import's read-back of a stored layer.
            let mut gz = GzipDecoder::new(input, InflateLimits::default());
            let mut h = Algorithm::Sha256.hasher();
            let mut buf = vec![0u8; CHUNK];
            loop {
                match gz.read(&mut buf).await {
                    Ok(0) => return Ok(h.finish()),
                    Ok(n) => h.update(&buf[..n]),
                    Err(e) => return Err(e.to_string()),
                }
            }
        });
        Inflating { tx, task }
    }

    /// Hands on a chunk; once the decoder has failed it takes no more (its error stands).
    async fn send(&mut self, chunk: &[u8]) {
        let _ = self.tx.send(Ok(bytes::Bytes::copy_from_slice(chunk))).await;
    }

    async fn finish(self) -> Result<Digest, String> {
        drop(self.tx);
        match self.task.await {
            Ok(r) => r,
            Err(e) => Err(format!("inflating task failed: {e}")),
        }
    }
}

/// Reads the current entry, a regular file, through the hash it is stored under (`expected`
/// when its name says it, else computed) and keeps what the planner will need. Returns what
/// [`Store::ingest_blob_pinned`] would: the blob, whether the store already holds it, and an
/// in-memory pin (no file is touched).
pub(super) async fn take<R: AsyncRead + Unpin>(
    store: &Store,
    tar: &mut TarReader<R>,
    expected: Option<&Digest>,
    alg: Algorithm,
    kept: &mut Kept,
    at: &str,
) -> Result<(Ingested, BlobPin), ImportError> {
    let declared = tar.remaining();
    let mut hasher = alg.hasher();
    let mut size = 0u64;
    let mut keep: Option<Vec<u8>> = None;
    let mut inflating: Option<Inflating> = None;
    let mut buf = vec![0u8; CHUNK];
    loop {
        let filled = upload::fill(tar, &mut buf, at).await?;
        if filled == 0 {
            break;
        }
        let chunk = &buf[..filled];
        if size == 0 {
            // The first chunk is full (or the whole file): enough to tell what it is.
            if declared <= MAX_MANIFEST_BYTES as u64 && looks_like_json(chunk) {
                keep = Some(Vec::with_capacity(declared as usize));
            }
            if expected.is_none() && gzip::sniff(chunk) == Compression::Gzip {
                inflating = Some(Inflating::start());
            }
        }
        hasher.update(chunk);
        size += filled as u64;
        if let Some(k) = &mut keep {
            k.extend_from_slice(chunk);
        }
        if let Some(i) = &mut inflating {
            i.send(chunk).await;
        }
    }
    let digest = hasher.finish();
    if let Some(want) = expected {
        if *want != digest {
            return Err(ImportError::new(
                ErrorKind::Digest,
                Some(at),
                format!("content hashes to {digest}, not to the digest in its name"),
            ));
        }
    }
    if let Some(i) = inflating {
        let r = i.finish().await;
        kept.inflated.insert(digest.clone(), r);
    }
    if let Some(bytes) = keep {
        if kept.total.saturating_add(size) <= KEEP_TOTAL_MAX {
            kept.total += size;
            kept.json.insert(digest.clone(), bytes);
        } else {
            kept.over_budget.insert(digest.clone());
        }
    }
    // Pinned in memory only, as the imgpkg dry run does: a claim would touch the file.
    let pin = store.pin_blob(&digest).await;
    let existed = store.blob_exists(&digest).await;
    let existed = existed.map_err(|e| storage_err(&format!("looking up {at}"), e))?;
    Ok((
        Ingested {
            digest,
            size,
            existed,
        },
        pin,
    ))
}
