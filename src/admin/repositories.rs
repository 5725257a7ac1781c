//! `DELETE /admin/v1/repositories/<name>`: remove a repository whole.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;

use airdock_storage::RepoName;

use crate::error::RegistryError;
use crate::http::empty;
use crate::AppState;

/// `DELETE /admin/v1/repositories/<name>` → 202: tags, manifests and links go in one
/// transaction, the repository leaves `_catalog`, GC frees the bytes later.
pub async fn delete_repo(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Response, RegistryError> {
    let repo = RepoName::parse(&name)?;
    state.store.delete_repo(&repo).await?;
    Ok(empty(StatusCode::ACCEPTED))
}
