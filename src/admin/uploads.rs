//! Upload sessions for admins: `GET /admin/v1/uploads[?repository=<name>]` lists every open
//! session (who opened it, how much it holds, when it was last written), `DELETE
//! /admin/v1/uploads/<id>` cancels one, whoever it belongs to.

use axum::extract::{Path, Request, State};
use axum::http::StatusCode;
use axum::response::Response;

use airdock_storage::{RepoName, UploadId};

use super::json;
use crate::error::RegistryError;
use crate::http::{empty, Query};
use crate::AppState;

/// `GET /admin/v1/uploads[?repository=<name>]` → 200 with `{"uploads":[…]}`, oldest first:
/// per session its id, repository, owner (`user:<name>` or `addr:<ip>`), size in bytes and
/// its start and last write (seconds since the epoch).
pub async fn list(State(state): State<AppState>, req: Request) -> Result<Response, RegistryError> {
    let q = Query::parse(req.uri().query());
    let repo = match q.get("repository") {
        Some(r) => Some(RepoName::parse(r)?),
        None => None,
    };
    let uploads = state.store.list_uploads(repo.as_ref()).await;
    json(&serde_json::json!({ "uploads": uploads }))
}

/// `DELETE /admin/v1/uploads/<id>` → 204: the session and its bytes are gone; a write to it
/// in flight fails and a finish in flight links nothing. 404 `BLOB_UPLOAD_UNKNOWN` if no such
/// session is open.
pub async fn cancel(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, RegistryError> {
    let id = UploadId::parse(&id)?;
    state.store.cancel_upload_by_id(&id).await?;
    Ok(empty(StatusCode::NO_CONTENT))
}
