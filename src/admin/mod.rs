//! The admin API under `/admin/v1/`, one file per concept: the imgpkg import (`import`),
//! online GC (`gc`), repository removal (`repositories`), import records (`imports`), the
//! timers (`tasks`). The admin token is a credential: `crate::auth::admin_token`.

pub mod gc;
pub mod import;
pub mod imports;
pub mod repositories;
pub mod tasks;

use axum::http::{header, Extensions, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::Router;

use crate::error::RegistryError;
use crate::AppState;

pub use crate::auth::admin_token::{AdminToken, TokenSource};
pub use import::{router, AdminState, IMPORT_PATH};
pub use tasks::spawn_background;

/// The admin routes served with the registry's state. Registered even when the admin API
/// is off (they then answer 403): the router stays one shape.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/admin/v1/gc", post(gc::gc))
        .route(
            "/admin/v1/repositories/{*name}",
            delete(repositories::delete_repo),
        )
        .route("/admin/v1/imports", get(imports::list_imports))
        .route("/admin/v1/imports/{id}", delete(imports::delete_import))
}

/// Admitted by the auth layer (a user with the admin right), or `Authorization: Bearer
/// <token>` with the admin token (`--admin-token`, or the one in `<data-dir>/admin-token`):
/// the same rule as `/admin/v1/import`. Without a token in the state these routes are off
/// (403), so an in-process setup never leaves them open.
pub fn authorize(
    state: &AppState,
    headers: &HeaderMap,
    extensions: &Extensions,
) -> Result<(), RegistryError> {
    let Some(token) = state.admin_token.as_ref() else {
        return Err(RegistryError::Forbidden(
            "the storage admin API is disabled in this server".into(),
        ));
    };
    if extensions.get::<crate::auth::Admitted>().is_some()
        || token.verify(headers.get(header::AUTHORIZATION).map(|v| v.as_bytes()))
    {
        Ok(())
    } else {
        Err(RegistryError::Unauthorized)
    }
}

fn json(value: &impl serde::Serialize) -> Result<Response, RegistryError> {
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
