//! `GET /admin/v1/imports[/<id>]` and `DELETE /admin/v1/imports/<id>`: the record of each
//! imgpkg import, and removing what one import created.

use axum::extract::{Path, Request, State};
use axum::response::Response;

use airdock_storage::{Digest, ImportRecord, ImportedTag};
use serde::Serialize;

use super::json;
use crate::error::RegistryError;
use crate::http::Query;
use crate::AppState;

/// An import record as the API shows it: the journal keeps Unix seconds, people and tools
/// read RFC 3339. Records from before `name`, `size` and `imported_by` were kept show them
/// as `null`.
#[derive(Serialize)]
struct ImportView<'a> {
    id: &'a str,
    repository: &'a str,
    /// RFC 3339, UTC.
    time: String,
    /// The tar's file name.
    name: Option<&'a str>,
    /// Bytes of the upload as received.
    size: Option<u64>,
    /// The admin principal: a user name, or `admin-token`.
    imported_by: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tar_sha256: Option<&'a Digest>,
    manifests: &'a [Digest],
    tags: &'a [ImportedTag],
}

impl<'a> From<&'a ImportRecord> for ImportView<'a> {
    fn from(r: &'a ImportRecord) -> ImportView<'a> {
        ImportView {
            id: &r.id,
            repository: r.repository.as_str(),
            time: crate::sys::rfc3339(r.time),
            name: r.name.as_deref(),
            size: r.size,
            imported_by: r.imported_by.as_deref(),
            tar_sha256: r.tar_sha256.as_ref(),
            manifests: &r.manifests,
            tags: &r.tags,
        }
    }
}

/// `GET /admin/v1/imports/<id>` → 200 with that record, or 404.
pub async fn get_import(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, RegistryError> {
    match state.store.import(&id) {
        Some(record) => json(&ImportView::from(&record)),
        None => Err(RegistryError::NotFound(format!("no import with id {id:?}"))),
    }
}

/// `GET /admin/v1/imports[?repository=<name>]` → 200 with `{"imports":[…]}`, oldest first:
/// per import its id, repository, time (RFC 3339), the tar's name and size, who imported,
/// and the manifests and tags it created.
pub async fn list_imports(
    State(state): State<AppState>,
    req: Request,
) -> Result<Response, RegistryError> {
    let q = Query::parse(req.uri().query());
    let mut imports = state.store.imports();
    if let Some(r) = q.get("repository") {
        imports.retain(|i| i.repository.as_str() == r);
    }
    let imports: Vec<ImportView> = imports.iter().map(ImportView::from).collect();
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
