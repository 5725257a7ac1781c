//! The admin API under `/admin/v1/`, one file per concept: the import (`import`), its
//! resumable uploads (`import_uploads`), the imgpkg export (`export`),
//! online GC (`gc`), repository removal (`repositories`), import records (`imports`), upload
//! sessions (`uploads`), disk usage (`usage`), the timers (`tasks`). Who may call it is decided once, by the auth
//! layer in front of every `/admin/*` path (`crate::auth`, which also holds the admin token):
//! no handler here checks credentials, and every refusal is a `RegistryError`.

pub mod export;
pub mod gc;
pub mod import;
pub mod import_uploads;
pub mod imports;
pub mod repositories;
pub mod tasks;
pub mod uploads;
pub mod usage;

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
        .route(
            crate::auth::EXPORT_PATH,
            get(export::export).post(export::export),
        )
        .route("/admin/v1/gc", post(gc::gc))
        .route(
            "/admin/v1/repositories/{*name}",
            delete(repositories::delete_repo),
        )
        .route("/admin/v1/imports", get(imports::list_imports))
        .route(
            "/admin/v1/imports/{id}",
            get(imports::get_import).delete(imports::delete_import),
        )
        .route(import_uploads::UPLOADS_PATH, post(import_uploads::start))
        .route(
            "/admin/v1/imports/uploads/{id}",
            get(import_uploads::status)
                .patch(import_uploads::patch)
                .put(import_uploads::finish)
                .delete(import_uploads::cancel),
        )
        .route("/admin/v1/uploads", get(uploads::list))
        .route("/admin/v1/uploads/{id}", delete(uploads::cancel))
        .route("/admin/v1/usage", get(usage::usage))
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

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::{Method, Request, StatusCode};
    use tower::ServiceExt;

    use crate::auth::admin_token::AdminToken;
    use crate::AppState;

    /// Status, `WWW-Authenticate` and the spec error code of one in-process request.
    async fn call(
        state: &AppState,
        method: Method,
        path: &str,
        bearer: Option<&str>,
    ) -> (StatusCode, Option<String>, serde_json::Value) {
        let mut req = Request::builder().method(method).uri(path);
        if let Some(t) = bearer {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        let resp = crate::app(state.clone())
            .oneshot(req.body(Body::empty()).expect("request"))
            .await
            .expect("infallible");
        let status = resp.status();
        let challenge = resp
            .headers()
            .get("www-authenticate")
            .map(|v| v.to_str().expect("ascii").to_owned());
        let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .expect("body");
        let json = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
        (status, challenge, json)
    }

    fn code(v: &serde_json::Value) -> &str {
        v["errors"][0]["code"].as_str().unwrap_or("")
    }

    #[tokio::test]
    async fn every_admin_refusal_is_one_challenge_and_the_spec_error_format() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = airdock_storage::Store::open(dir.path())
            .await
            .expect("store");
        let mut state = AppState::new(store, false);

        // No admin token configured and no authentication: the admin API is off.
        let (status, _, body) = call(&state, Method::GET, "/admin/v1/imports", None).await;
        assert_eq!((status, code(&body)), (StatusCode::FORBIDDEN, "DENIED"));

        state.admin_token = AdminToken::new("s3cret");
        for (path, method) in [
            ("/admin/v1/imports", Method::GET),
            ("/admin/v1/gc", Method::POST),
            ("/admin/v1/import?repository=a", Method::POST),
            ("/admin/v1/imports/uploads/?repository=a", Method::POST),
            (
                "/admin/v1/imports/uploads/0123456789abcdef0123456789abcdef",
                Method::PATCH,
            ),
            ("/admin/v1/repositories/a", Method::DELETE),
            ("/admin/v1/nothing", Method::GET),
        ] {
            for bearer in [None, Some("wrong")] {
                let (status, challenge, body) = call(&state, method.clone(), path, bearer).await;
                assert_eq!(status, StatusCode::UNAUTHORIZED, "{method} {path}");
                assert_eq!(challenge.as_deref(), Some(crate::auth::ADMIN_CHALLENGE));
                assert_eq!(code(&body), "UNAUTHORIZED", "{body}");
            }
        }
        let token = Some("s3cret");
        let (status, _, _) = call(&state, Method::GET, "/admin/v1/imports", token).await;
        assert_eq!(status, StatusCode::OK);
        // Past the check, unknown paths, wrong methods and bad input answer in the same format.
        let (status, _, body) = call(&state, Method::GET, "/admin/v1/nothing", token).await;
        assert_eq!(
            (status, code(&body)),
            (StatusCode::NOT_FOUND, "NAME_UNKNOWN")
        );
        let (status, _, body) = call(&state, Method::GET, "/admin/v1/gc", token).await;
        assert_eq!(
            (status, code(&body)),
            (StatusCode::METHOD_NOT_ALLOWED, "UNSUPPORTED")
        );
        let (status, _, body) = call(&state, Method::POST, "/admin/v1/import", token).await;
        assert_eq!(
            (status, code(&body)),
            (StatusCode::BAD_REQUEST, "NAME_INVALID")
        );
        let path = "/admin/v1/import?repository=a";
        let (status, _, body) = call(&state, Method::POST, path, token).await;
        assert_eq!(
            (status, code(&body)),
            (StatusCode::BAD_REQUEST, "TAR_INVALID")
        );
        assert_eq!(body["errors"][0]["detail"]["repository"], "a", "{body}");
    }
}
