//! Blob pushes: open a session (`POST .../blobs/uploads/`), monolithic `?digest=`, mounts,
//! chunks (`PATCH` with `Content-Range`), status (`GET`), finish (`PUT ?digest=`), cancel.

use std::net::SocketAddr;

use axum::extract::ConnectInfo;
use axum::http::{header, StatusCode};
use axum::response::Response;

use airdock_storage::{Algorithm, Digest, RepoName, StoreError, UploadId};

use super::catalog::Visible;
use super::{empty, set, Req, Result, CONTENT_DIGEST, UPLOAD_UUID};
use crate::error::{code, RegistryError};
use crate::forwarded::Client;
use crate::AppState;

fn upload_location(repo: &RepoName, id: &UploadId) -> String {
    format!("/v2/{repo}/blobs/uploads/{id}")
}

fn blob_created(repo: &RepoName, digest: &Digest) -> Response {
    let mut r = empty(StatusCode::CREATED);
    set(
        &mut r,
        header::LOCATION,
        format!("/v2/{repo}/blobs/{digest}"),
    );
    set(&mut r, CONTENT_DIGEST, digest.to_string());
    r
}

/// 202 + `Location` + `Range: 0-<last byte>` for a session holding `size` bytes.
fn session_response(status: StatusCode, repo: &RepoName, id: &UploadId, size: u64) -> Response {
    let mut r = empty(status);
    set(&mut r, header::LOCATION, upload_location(repo, id));
    set(
        &mut r,
        header::RANGE,
        format!("0-{}", size.saturating_sub(1)),
    );
    set(&mut r, UPLOAD_UUID, id.as_str());
    r
}

fn digest_param(req: &Req) -> Result<Option<Digest>> {
    match req.query.get("digest") {
        None => Ok(None),
        Some(d) => Ok(Some(Digest::parse(d)?)),
    }
}

/// Left in the extensions of a push by the auth layer: who pushes (`None`: anonymous, whose
/// upload sessions are counted per client address instead) and what they may pull, so that
/// a mount links only a blob the caller could have read (with or without `from`). Without
/// one (authentication off) every push is anonymous and every repository readable.
#[derive(Clone)]
pub struct Pusher {
    pub user: Option<String>,
    pub may_pull: Visible,
}

/// Who a session belongs to, for the per-client cap: the user, else the client address
/// (anonymous pushes, and every push when authentication is off) — the one a trusted proxy
/// names, so that clients behind a proxy do not share one cap.
fn owner(req: &Req) -> String {
    if let Some(user) = req.extensions.get::<Pusher>().and_then(|p| p.user.as_ref()) {
        return format!("user:{user}");
    }
    let ip = req
        .extensions
        .get::<Client>()
        .and_then(|c| c.ip)
        .or_else(|| {
            req.extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|c| c.0.ip())
        });
    match ip {
        Some(ip) => format!("addr:{ip}"),
        None => "addr:unknown".to_owned(),
    }
}

/// POST `?mount=<d>[&from=<repo>]` → 201 if mounted, else a new session (202).
/// POST `?digest=<d>` with the body → 201 (monolithic).
/// POST [`?digest-algorithm=<alg>`] → 202 + `Location` of a new session.
pub async fn start(state: &AppState, repo: &RepoName, req: Req) -> Result<Response> {
    if let Some(mount) = req.query.get("mount") {
        let digest = Digest::parse(mount)?;
        // A bad `from` means nothing to mount from; the client goes on with an upload.
        let from = match req.query.get("from") {
            Some(f) => RepoName::parse(f).ok().map(Some),
            None => Some(None),
        };
        // The auth layer says what the caller may pull; with authentication off, anything.
        let may_pull = req.extensions.get::<Pusher>().map(|p| p.may_pull.clone());
        let may_pull = |r: &RepoName| may_pull.as_ref().is_none_or(|v| (v.0)(r.as_str()));
        if let Some(from) = from {
            if state
                .store
                .mount_blob(repo, &digest, from.as_ref(), &may_pull)
                .await?
            {
                return Ok(blob_created(repo, &digest));
            }
        }
    }
    if let Some(digest) = digest_param(&req)? {
        let ingested = state
            .store
            .push_blob(repo, &digest, req.into_reader())
            .await?;
        return Ok(blob_created(repo, &ingested.digest));
    }
    let algorithm = match req.query.get("digest-algorithm") {
        Some(a) => Some(Algorithm::parse(a)?),
        None => None,
    };
    let id = state
        .store
        .start_upload(repo, algorithm, &owner(&req))
        .await?;
    let mut resp = session_response(StatusCode::ACCEPTED, repo, &id, 0);
    if let Some(min) = state.chunk_min {
        set(
            &mut resp,
            super::HeaderName::from_static("oci-chunk-min-length"),
            min.to_string(),
        );
    }
    Ok(resp)
}

/// GET → 204 with `Range` of what the session holds, so a client can resume.
pub async fn status(state: &AppState, repo: &RepoName, id: &UploadId) -> Result<Response> {
    let size = state.store.upload_status(repo, id).await?;
    Ok(session_response(StatusCode::NO_CONTENT, repo, id, size))
}

/// What a chunk's `Content-Range` announces: where it starts and how many bytes it holds.
#[derive(Debug, PartialEq, Eq)]
pub struct ChunkRange {
    pub start: u64,
    pub len: u64,
}

/// `Content-Range: <start>-<end>` (inclusive); also tolerates `bytes <start>-<end>/<total>`.
/// Both numbers come from the client, so the length is computed with checked arithmetic:
/// `0-18446744073709551615` names 2^64 bytes, which no chunk can hold.
pub fn parse_content_range(v: &str) -> Result<ChunkRange> {
    let bad = |why: &str| {
        RegistryError::BadRequest(
            code::BLOB_UPLOAD_INVALID,
            format!("Content-Range {v:?} {why}; expected `<start>-<end>`, the chunk's first and last byte offsets (inclusive), e.g. `0-1023`"),
        )
    };
    let s = v.trim();
    let s = s
        .strip_prefix("bytes=")
        .or_else(|| s.strip_prefix("bytes "))
        .unwrap_or(s);
    let s = s.split('/').next().unwrap_or(s);
    let (a, b) = s.split_once('-').ok_or_else(|| bad("has no `-`"))?;
    let number = |t: &str| {
        t.trim()
            .parse::<u64>()
            .map_err(|_| bad("does not hold two decimal byte offsets below 2^64"))
    };
    let (start, end) = (number(a)?, number(b)?);
    if end < start {
        return Err(bad("ends before it starts"));
    }
    let len = (end - start)
        .checked_add(1)
        .ok_or_else(|| bad("spans 2^64 bytes, more than any chunk can hold"))?;
    Ok(ChunkRange { start, len })
}

/// PATCH a chunk → 202 with the new `Range`; 416 if it does not start where the upload ends.
pub async fn patch(state: &AppState, repo: &RepoName, id: &UploadId, req: Req) -> Result<Response> {
    let (start, len) = match req.header(header::CONTENT_RANGE) {
        Some(v) => {
            let r = parse_content_range(v)?;
            (Some(r.start), Some(r.len))
        }
        None => (None, None),
    };
    match state
        .store
        .append_upload(repo, id, start, len, req.into_reader())
        .await
    {
        Ok(size) => Ok(session_response(StatusCode::ACCEPTED, repo, id, size)),
        Err(e @ (StoreError::UploadOutOfOrder { .. } | StoreError::ChunkLength { .. })) => {
            // Tell the client where the upload really stands so it can resume.
            let size = state.store.upload_status(repo, id).await?;
            let mut resp = axum::response::IntoResponse::into_response(RegistryError::from(e));
            set(&mut resp, header::LOCATION, upload_location(repo, id));
            set(
                &mut resp,
                header::RANGE,
                format!("0-{}", size.saturating_sub(1)),
            );
            Ok(resp)
        }
        Err(e) => Err(e.into()),
    }
}

/// PUT `?digest=<d>` with an optional last chunk → 201.
pub async fn finish(
    state: &AppState,
    repo: &RepoName,
    id: &UploadId,
    req: Req,
) -> Result<Response> {
    let digest = digest_param(&req)?.ok_or_else(|| {
        RegistryError::BadRequest(
            code::DIGEST_INVALID,
            "finishing an upload needs the blob's digest: PUT <upload location>?digest=<algorithm>:<hex>".into(),
        )
    })?;
    if let Some(v) = req.header(header::CONTENT_RANGE) {
        let start = parse_content_range(v)?.start;
        let size = state.store.upload_status(repo, id).await?;
        if start != size {
            return Err(StoreError::UploadOutOfOrder {
                requested: start,
                current: size,
            }
            .into());
        }
    }
    let ingested = state
        .store
        .finish_upload(repo, id, &digest, req.into_reader())
        .await?;
    Ok(blob_created(repo, &ingested.digest))
}

/// DELETE → 204; the session and its bytes are gone.
pub async fn cancel(state: &AppState, repo: &RepoName, id: &UploadId) -> Result<Response> {
    state.store.cancel_upload(repo, id).await?;
    Ok(empty(StatusCode::NO_CONTENT))
}

#[cfg(test)]
mod tests {
    use super::{parse_content_range, ChunkRange};

    #[test]
    fn content_ranges() {
        let r = |start, len| Some(ChunkRange { start, len });
        assert_eq!(parse_content_range("0-99").ok(), r(0, 100));
        assert_eq!(parse_content_range("bytes 10-19/*").ok(), r(10, 10));
        assert_eq!(
            parse_content_range("0-18446744073709551614").ok(),
            r(0, u64::MAX)
        );
        for bad in [
            "",
            "5",
            "a-b",
            "-5",
            "1-",
            "5-4",
            "0-18446744073709551615",
            "0-18446744073709551616",
        ] {
            assert!(parse_content_range(bad).is_err(), "{bad}");
        }
    }
}
