//! `GET /admin/v1/imports` and `DELETE /admin/v1/imports/<id>`: the record of each imgpkg
//! import, and removing what one import created.

use axum::extract::{Path, Request, State};
use axum::response::Response;

use super::json;
use crate::error::RegistryError;
use crate::http::Query;
use crate::AppState;

/// `GET /admin/v1/imports[?repository=<name>]` → 200 with `{"imports":[…]}`, oldest first:
/// per import its id, repository, time and the manifests and tags it created.
pub async fn list_imports(
    State(state): State<AppState>,
    req: Request,
) -> Result<Response, RegistryError> {
    let q = Query::parse(req.uri().query());
    let mut imports = state.store.imports();
    if let Some(r) = q.get("repository") {
        imports.retain(|i| i.repository.as_str() == r);
    }
    json(&serde_json::json!({ "imports": imports }))
}

/// `DELETE /admin/v1/imports/<id>` → 200 with what was removed: the tags the import set that
/// still point where it set them and no other import also set, and its manifests nothing kept
/// reaches any more. GC frees the bytes later.
pub async fn delete_import(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, RegistryError> {
    match state.store.remove_import(&id).await? {
        Some(removal) => json(&removal),
        None => Err(RegistryError::NotFound(format!("no import with id {id:?}"))),
    }
}
