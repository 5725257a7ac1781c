//! The admin API under `/admin/v1/`, one file per concept: the imgpkg import (`import`),
//! online GC (`gc`), repository removal (`repositories`), import records (`imports`), the
//! timers (`tasks`). Who may call it is decided once, by the auth layer in front of every
//! `/admin/*` path (`crate::auth`, which also holds the admin token): no handler here
//! checks credentials, and every refusal is a `RegistryError`.

pub mod gc;
pub mod import;
pub mod imports;
pub mod repositories;
pub mod tasks;

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::Router;

use crate::error::RegistryError;
use crate::AppState;

pub use crate::auth::admin_token::{AdminToken, TokenSource};
pub use import::IMPORT_PATH;
pub use tasks::spawn_background;

/// Every admin route, served with the registry's state. Registered even when the admin API
/// is off (the auth layer then answers 403): the router stays one shape.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route(IMPORT_PATH, post(import::import).put(import::import))
        .route("/admin/v1/gc", post(gc::gc))
        .route(
            "/admin/v1/repositories/{*name}",
            delete(repositories::delete_repo),
        )
        .route("/admin/v1/imports", get(imports::list_imports))
        .route("/admin/v1/imports/{id}", delete(imports::delete_import))
}

pub(crate) fn json(value: &impl serde::Serialize) -> Result<Response, RegistryError> {
    let body = serde_json::to_string(value).map_err(|e| {
        RegistryError::Store(airdock_storage::StoreError::Io(std::io::Error::other(e)))
    })?;
    Ok((
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response())
}
