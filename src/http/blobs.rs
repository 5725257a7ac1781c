//! Blob pulls (`GET`/`HEAD /v2/<name>/blobs/<digest>`, single `Range`) and deletes.

use axum::body::Body;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};

use airdock_storage::blobstore::ByteRange;
use airdock_storage::{BlobDelete, Digest, RepoName};

use super::{empty, set, Req, Result, CONTENT_DIGEST};
use crate::error::RegistryError;
use crate::AppState;

/// How long a presigned blob URL stays valid: long enough for a slow pull of a large layer
/// to start, short enough that a leaked URL soon stops working.
const REDIRECT_TTL: std::time::Duration = std::time::Duration::from_secs(15 * 60);

/// GET/HEAD → 200 with the bytes (or 206 for a satisfiable `Range`, 416 otherwise).
pub async fn get(
    state: &AppState,
    repo: &RepoName,
    digest: &Digest,
    req: &Req,
) -> Result<Response> {
    let head = req.method == axum::http::Method::HEAD;
    if !head {
        // Opt-in (`storage.s3.redirect`): the client fetches the bytes from the bucket with a
        // presigned URL; by default (and on the filesystem) they stream through here.
        if let Some(url) = state
            .store
            .blob_redirect(repo, digest, REDIRECT_TTL)
            .await?
        {
            let mut resp = StatusCode::TEMPORARY_REDIRECT.into_response();
            set(&mut resp, header::LOCATION, url);
            set(&mut resp, CONTENT_DIGEST, digest.to_string());
            return Ok(resp);
        }
    }
    let range = req.header(header::RANGE);
    // HEAD goes through `stat_blob`, which also restarts the blob's GC grace window: a
    // client that HEADs a blob and skips its upload is about to reference it. A GET without
    // `Range` learns the size from the read itself (one request to the backend, not two).
    let (read, size) = if head {
        (None, state.store.stat_blob(repo, digest).await?)
    } else if range.is_none() {
        let read = state.store.read_blob(repo, digest, ByteRange::ALL).await?;
        let size = read.size;
        (Some(read), size)
    } else {
        (None, state.store.blob_size(repo, digest).await?)
    };
    let range = match range {
        Some(r) => parse_range(r, size)?,
        None => None,
    };
    let (status, start, len) = match range {
        Some((s, e)) => (StatusCode::PARTIAL_CONTENT, s, e - s + 1),
        None => (StatusCode::OK, 0, size),
    };
    let read = match read {
        Some(read) => Some(read),
        None if head => None,
        None => {
            let part = ByteRange {
                start,
                len: Some(len),
            };
            Some(state.store.read_blob(repo, digest, part).await?)
        }
    };
    let body = match read {
        Some(read) => Body::from_stream(read.stream),
        None => Body::empty(),
    };
    let mut resp = (status, body).into_response();
    set(&mut resp, header::CONTENT_LENGTH, len.to_string());
    set(&mut resp, header::CONTENT_TYPE, "application/octet-stream");
    set(&mut resp, CONTENT_DIGEST, digest.to_string());
    set(&mut resp, header::ACCEPT_RANGES, "bytes");
    set(&mut resp, header::ETAG, format!("\"{digest}\""));
    if status == StatusCode::PARTIAL_CONTENT {
        set(
            &mut resp,
            header::CONTENT_RANGE,
            format!("bytes {}-{}/{size}", start, start + len - 1),
        );
    }
    Ok(resp)
}

/// Parse one `bytes=` range against `size`. `Ok(None)` means "ignore it and send it all"
/// (several ranges, or a unit we do not know), as RFC 9110 allows.
pub fn parse_range(value: &str, size: u64) -> Result<Option<(u64, u64)>> {
    let Some(spec) = value.trim().strip_prefix("bytes=") else {
        return Ok(None);
    };
    if spec.contains(',') {
        return Ok(None);
    }
    let unsatisfiable = || {
        RegistryError::RangeNotSatisfiable(
            format!("range {value:?} not satisfiable for {size} bytes"),
            size,
        )
    };
    let (a, b) = spec.trim().split_once('-').ok_or_else(unsatisfiable)?;
    let (a, b) = (a.trim(), b.trim());
    let (start, end) = if a.is_empty() {
        // suffix: the last `b` bytes
        let n: u64 = b.parse().map_err(|_| unsatisfiable())?;
        if n == 0 || size == 0 {
            return Err(unsatisfiable());
        }
        (size.saturating_sub(n), size - 1)
    } else {
        let start: u64 = a.parse().map_err(|_| unsatisfiable())?;
        let end = if b.is_empty() {
            size.saturating_sub(1)
        } else {
            b.parse::<u64>()
                .map_err(|_| unsatisfiable())?
                .min(size.saturating_sub(1))
        };
        (start, end)
    };
    if size == 0 || start >= size || start > end {
        return Err(unsatisfiable());
    }
    Ok(Some((start, end)))
}

/// DELETE → 202; the blob leaves this repository. 405 DENIED while a manifest of the
/// repository references it (as zot answers), unless `--allow-referenced-blob-delete`.
pub async fn delete(state: &AppState, repo: &RepoName, digest: &Digest) -> Result<Response> {
    let how = BlobDelete {
        even_if_referenced: state.allow_referenced_blob_delete,
    };
    state.store.delete_blob(repo, digest, how).await?;
    Ok(empty(StatusCode::ACCEPTED))
}

#[cfg(test)]
mod tests {
    use super::parse_range;

    #[test]
    fn ranges() {
        assert_eq!(parse_range("bytes=0-9", 100).ok().flatten(), Some((0, 9)));
        assert_eq!(parse_range("bytes=90-", 100).ok().flatten(), Some((90, 99)));
        assert_eq!(parse_range("bytes=-10", 100).ok().flatten(), Some((90, 99)));
        assert_eq!(
            parse_range("bytes=50-500", 100).ok().flatten(),
            Some((50, 99))
        );
        // Client numbers at the edge of u64 are clamped, never wrapped.
        let max = u64::MAX;
        assert_eq!(
            parse_range(&format!("bytes=0-{max}"), 100).ok().flatten(),
            Some((0, 99))
        );
        assert_eq!(
            parse_range(&format!("bytes=-{max}"), 100).ok().flatten(),
            Some((0, 99))
        );
        assert!(parse_range(&format!("bytes={max}-"), 100).is_err());
        assert!(parse_range(&format!("bytes={max}-{max}"), max).is_err());
        assert_eq!(
            parse_range(&format!("bytes={}-{max}", max - 1), max)
                .ok()
                .flatten(),
            Some((max - 1, max - 1))
        );
        assert_eq!(parse_range("bytes=0-1,5-6", 100).ok().flatten(), None);
        assert_eq!(parse_range("items=0-1", 100).ok().flatten(), None);
        for bad in [
            "bytes=100-",
            "bytes=5-4",
            "bytes=x-1",
            "bytes=-0",
            "bytes=",
            "bytes=0-",
        ] {
            let size = if bad == "bytes=0-" { 0 } else { 100 };
            assert!(parse_range(bad, size).is_err(), "{bad}");
        }
    }
}
