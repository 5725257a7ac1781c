//! Resumable import uploads under `/admin/v1/imports/uploads/`: the blob-upload protocol of
//! the Distribution spec, with the import instead of a digest check at the end.
//!
//! ```text
//! POST   /admin/v1/imports/uploads/?repository=<name>  → 202, Location, Range: 0-0
//! PATCH  <location>  Content-Range: <start>-<end>      → 202, Range: 0-<last byte held>
//!                                                         (416 + Range if start is wrong)
//! GET    <location>                                    → 204, Range: 0-<last byte held>
//! PUT    <location>  [last chunk]                      → 201 + the import report
//! DELETE <location>                                    → 204
//! ```
//!
//! A session is an ordinary store upload session (its bytes in `uploads/<id>/data`, so it
//! survives a restart and expires after `--upload-ttl` idle like any other) owned by
//! [`OWNER`], which no `/v2` client can be; its repository is the import's target. A chunk
//! cut off mid-way is rolled back to where it started, so a client resumes from the `Range`
//! a `GET` reports. The `PUT` imports the whole upload; the session is removed once the
//! import succeeded or was refused for its content (4xx), and kept after a server-side
//! failure (5xx, 507), so the `PUT` can be retried without uploading again.

use axum::extract::{Path, Request, State};
use axum::http::{header, StatusCode};
use axum::response::Response;
use futures_util::TryStreamExt;
use tokio::io::BufReader;
use tokio_util::io::StreamReader;

use airdock_storage::{RepoName, StoreError, UploadId};

use crate::error::RegistryError;
use crate::http::uploads::parse_content_range;
use crate::http::{empty, set, UPLOAD_UUID};
use crate::AppState;

/// The collection path (POST).
pub const UPLOADS_PATH: &str = "/admin/v1/imports/uploads/";
/// The owner of import upload sessions in the store: not a `user:` or `addr:` a `/v2` push
/// gets, so the per-client caps of pushes do not count them.
pub const OWNER: &str = "admin:import";

fn location(id: &UploadId) -> String {
    format!("{UPLOADS_PATH}{id}")
}

fn session_response(status: StatusCode, id: &UploadId, size: u64) -> Response {
    let mut r = empty(status);
    set(&mut r, header::LOCATION, location(id));
    set(
        &mut r,
        header::RANGE,
        format!("0-{}", size.saturating_sub(1)),
    );
    set(&mut r, UPLOAD_UUID, id.as_str());
    r
}

/// The session `id`, if it is an import upload.
async fn session(st: &AppState, id: &str) -> Result<(UploadId, RepoName), RegistryError> {
    let id = UploadId::parse(id)?;
    match st.store.upload_session(&id).await? {
        (repo, Some(owner)) if owner == OWNER => Ok((id, repo)),
        // A `/v2` blob upload is not an import upload.
        _ => Err(StoreError::UploadUnknown.into()),
    }
}

fn reader(req: Request) -> impl tokio::io::AsyncRead + Unpin + Send + 'static {
    StreamReader::new(
        req.into_body()
            .into_data_stream()
            .map_err(std::io::Error::other),
    )
}

/// POST `?repository=` → 202 with the new session's location.
pub async fn start(State(st): State<AppState>, req: Request) -> Result<Response, RegistryError> {
    let repo = super::import::repository_param(req.uri().query())?;
    st.store
        .require_readable_uploads("resumable import uploads")?;
    let id = st.store.start_upload(&repo, None, OWNER).await?;
    Ok(session_response(StatusCode::ACCEPTED, &id, 0))
}

/// GET → 204 with the bytes held so far.
pub async fn status(
    State(st): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, RegistryError> {
    let (id, repo) = session(&st, &id).await?;
    let size = st.store.upload_status(&repo, &id).await?;
    Ok(session_response(StatusCode::NO_CONTENT, &id, size))
}

/// `Content-Range` of a chunk: (start, length), if given.
fn chunk_range(req: &Request) -> Result<(Option<u64>, Option<u64>), RegistryError> {
    match req
        .headers()
        .get(header::CONTENT_RANGE)
        .map(|v| v.to_str().unwrap_or(""))
    {
        Some(v) => {
            let r = parse_content_range(v)?;
            Ok((Some(r.start), Some(r.len)))
        }
        None => Ok((None, None)),
    }
}

/// Appends a chunk; on an out-of-order or short chunk the error carries where the upload
/// stands, so the client can resume from there.
async fn append(
    st: &AppState,
    id: &UploadId,
    repo: &RepoName,
    req: Request,
) -> Result<u64, Response> {
    let (start, len) = chunk_range(&req).map_err(axum::response::IntoResponse::into_response)?;
    match st
        .store
        .append_upload(repo, id, start, len, reader(req))
        .await
    {
        Ok(size) => Ok(size),
        Err(e @ (StoreError::UploadOutOfOrder { .. } | StoreError::ChunkLength { .. })) => {
            let size = st.store.upload_status(repo, id).await.unwrap_or(0);
            let mut resp = axum::response::IntoResponse::into_response(RegistryError::from(e));
            set(&mut resp, header::LOCATION, location(id));
            set(
                &mut resp,
                header::RANGE,
                format!("0-{}", size.saturating_sub(1)),
            );
            Err(resp)
        }
        Err(e) => Err(axum::response::IntoResponse::into_response(
            RegistryError::from(e),
        )),
    }
}

/// PATCH a chunk → 202 with the new `Range`.
pub async fn patch(
    State(st): State<AppState>,
    Path(id): Path<String>,
    req: Request,
) -> Result<Response, Response> {
    let (id, repo) = session(&st, &id)
        .await
        .map_err(axum::response::IntoResponse::into_response)?;
    let size = append(&st, &id, &repo, req).await?;
    Ok(session_response(StatusCode::ACCEPTED, &id, size))
}

/// PUT with an optional last chunk → the import of everything uploaded: 201 + report.
pub async fn finish(
    State(st): State<AppState>,
    Path(id): Path<String>,
    req: Request,
) -> Result<Response, Response> {
    let into = axum::response::IntoResponse::into_response;
    let (id, repo) = session(&st, &id).await.map_err(into)?;
    let (parts, body) = req.into_parts();
    let options = super::import::options(&parts).map_err(into)?;
    append(&st, &id, &repo, Request::from_parts(parts, body)).await?;
    let data = st
        .store
        .open_upload_data(&repo, &id)
        .await
        .map_err(|e| into(RegistryError::from(e)))?;
    let result = super::import::run(
        &st,
        repo.clone(),
        &options,
        BufReader::with_capacity(1 << 20, data),
    )
    .await;
    let done = match &result {
        Ok(_) => true,
        Err(RegistryError::Import { error, .. }) => error.http_status() < 500,
        Err(_) => false,
    };
    if done {
        // Already gone (an expiry or a DELETE during the import) is fine.
        let _ = st.store.cancel_upload(&repo, &id).await;
    }
    result.map_err(into)
}

/// DELETE → 204; the session and its bytes are gone.
pub async fn cancel(
    State(st): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, RegistryError> {
    let (id, repo) = session(&st, &id).await?;
    st.store.cancel_upload(&repo, &id).await?;
    Ok(empty(StatusCode::NO_CONTENT))
}
