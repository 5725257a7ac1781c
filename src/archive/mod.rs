//! Every archive the import takes, told apart by content: imgpkg tars (handed to
//! [`crate::imgpkg`]), `docker save` archives in the classic layout (`manifest.json` +
//! `<id>/layer.tar` …) and in the OCI-layout form docker ≥ 25 writes, and OCI image-layout
//! archives (`oci-layout`, `index.json`, `blobs/`: skopeo's and podman's `oci-archive`) — each
//! plain or gzipped.
//!
//! Detection looks at the (inflated) tar's first entry only, so nothing is buffered beyond its
//! header and a few bytes: `manifest.json` whose JSON is an array is docker's (imgpkg's is an
//! object), a `sha256-<hex>.tar.gz` member is imgpkg's, and anything else is a docker / OCI
//! archive (whose own checks then say what is wrong). The bytes read to decide are replayed
//! in front of the rest of the stream.

mod dry_run;
pub mod import;
pub mod model;
pub mod paths;

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use tokio::io::{AsyncRead, AsyncReadExt, ReadBuf};

use airdock_storage::{RepoName, Store};

use crate::imgpkg::import::read_err;
use crate::imgpkg::names::parse_tar_member_name;
use crate::imgpkg::stream::TarReader;
use crate::imgpkg::tarfmt::Kind;
use crate::imgpkg::upload;
use crate::imgpkg::{self, ErrorKind, ImportError, ImportOptions, ImportReport};

/// The kinds of upload, as the first tar entry shows them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Imgpkg,
    /// `docker save` (either layout) or an OCI image layout; the importer tells which.
    ImageArchive,
}

/// Headers read to decide (PAX and GNU long-name entries included) may not exceed this.
const MAX_SNIFF: usize = 4 << 20;
/// Bytes of a leading `manifest.json` looked at.
const MANIFEST_PEEK: usize = 256;

/// Imports any supported archive (plain or gzip) read from `body` into `repo`.
pub async fn import<R: AsyncRead + Unpin + Send + 'static>(
    store: &Store,
    repo: &RepoName,
    body: R,
    opts: &ImportOptions,
) -> Result<ImportReport, ImportError> {
    let started = Instant::now();
    let received = Arc::new(AtomicU64::new(0));
    let tar = upload::open(body, received.clone(), opts.inflate).await?;
    // The record's size is the upload's, even when what the importers read is inflated.
    let opts = &ImportOptions {
        received: Some(received.clone()),
        ..opts.clone()
    };
    let (format, tar) = sniff(Box::new(tar)).await?;
    let mut report = match format {
        Format::Imgpkg => imgpkg::import::import_tar(store, repo, tar, opts).await?,
        Format::ImageArchive => import::import_tar(store, repo, tar, opts).await?,
    };
    report.upload_bytes = received.load(Ordering::Relaxed);
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

type Replay = tokio::io::Chain<io::Cursor<Vec<u8>>, Box<dyn AsyncRead + Unpin + Send>>;

/// Reads the first tar entry to decide the format; gives back a stream that starts over.
pub async fn sniff(
    tar: Box<dyn AsyncRead + Unpin + Send>,
) -> Result<(Format, Replay), ImportError> {
    let mut reader = TarReader::new(Recording {
        inner: tar,
        seen: Vec::new(),
        overflow: false,
    });
    let format = match reader.next_entry().await {
        Ok(Some(e)) => {
            let name = paths::normalize(&e.name).ok();
            match name.as_deref() {
                Some("manifest.json") if e.kind == Kind::Regular => {
                    let mut head = Vec::with_capacity(MANIFEST_PEEK);
                    let _ = (&mut reader.data())
                        .take(MANIFEST_PEEK as u64)
                        .read_to_end(&mut head)
                        .await;
                    if is_docker_manifest_json(&head) {
                        Format::ImageArchive
                    } else {
                        Format::Imgpkg
                    }
                }
                Some(n) if parse_tar_member_name(n).is_some() => Format::Imgpkg,
                Some(_) => Format::ImageArchive,
                None => Format::Imgpkg,
            }
        }
        // An empty tar: the imgpkg importer words this as it always has.
        Ok(None) => Format::Imgpkg,
        Err(e) => {
            let rec = reader.into_inner();
            if !rec.overflow {
                // The first header is broken (or the stream, e.g. a gzip bomb): no entry to
                // blame yet.
                return Err(read_err(None, e));
            }
            return Err(too_large());
        }
    };
    let rec = reader.into_inner();
    if rec.overflow {
        return Err(too_large());
    }
    Ok((format, io::Cursor::new(rec.seen).chain(rec.inner)))
}

fn too_large() -> ImportError {
    ImportError::new(
        ErrorKind::TooLarge,
        None,
        format!("the first tar entry's headers exceed {MAX_SNIFF} bytes"),
    )
}

/// Whether the start of a `manifest.json` is docker's: both docker and imgpkg write a JSON
/// array of objects, but imgpkg's elements start with `"Image"` or `"ImageIndex"` (Go writes
/// struct fields in order) and docker's with `"Config"`. Anything not an array of objects is
/// left to the imgpkg importer's messages.
pub fn is_docker_manifest_json(head: &[u8]) -> bool {
    let mut rest = head;
    for want in [b'[', b'{', b'"'] {
        let Some(i) = rest.iter().position(|b| !b.is_ascii_whitespace()) else {
            return false;
        };
        if rest[i] != want {
            return false;
        }
        rest = &rest[i + 1..];
    }
    let key_end = rest.iter().position(|&b| b == b'"').unwrap_or(rest.len());
    !matches!(&rest[..key_end], b"Image" | b"ImageIndex")
}

/// Keeps a copy of what is read through it (bounded), to replay after sniffing.
struct Recording {
    inner: Box<dyn AsyncRead + Unpin + Send>,
    seen: Vec<u8>,
    overflow: bool,
}

impl AsyncRead for Recording {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let r = Pin::new(&mut this.inner).poll_read(cx, buf);
        let new = &buf.filled()[before..];
        if this.seen.len() + new.len() > MAX_SNIFF {
            this.overflow = true;
            return Poll::Ready(Err(io::Error::other("sniff limit")));
        }
        this.seen.extend_from_slice(new);
        r
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod sniff_tests {
    #[test]
    fn manifest_json_kinds_are_told_apart() {
        assert!(super::is_docker_manifest_json(br#" [ {"Config":"a.json""#));
        assert!(!super::is_docker_manifest_json(br#"[{"ImageIndex":{"#));
        assert!(!super::is_docker_manifest_json(br#"[{"Image":{"#));
        assert!(!super::is_docker_manifest_json(br#"{"Images":[]}"#));
        assert!(!super::is_docker_manifest_json(b"[]"));
    }
}
