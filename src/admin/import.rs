//! `POST|PUT /admin/v1/import?repository=<name>` takes an `imgpkg copy --to-tar` tarball
//! (plain or gzip) as a streamed body, guarded by the admin bearer token, and answers `201`
//! with the import report or a 4xx in the OCI error shape naming the offending tar entry.

use std::io;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use futures_util::TryStreamExt;
use serde_json::json;
use tokio_util::io::StreamReader;

use airdock_storage::{RepoName, Store};

use super::AdminToken;
use crate::imgpkg::{self, ImportError, ImportOptions};

/// The import endpoint's path.
pub const IMPORT_PATH: &str = "/admin/v1/import";

/// State of the admin routes.
#[derive(Clone)]
pub struct AdminState {
    pub store: Store,
    pub token: AdminToken,
    pub options: ImportOptions,
}

/// The admin routes, ready to `merge` into the registry's router.
pub fn router(store: Store, token: AdminToken) -> Router {
    Router::new()
        .route(IMPORT_PATH, post(import).put(import))
        .with_state(AdminState {
            store,
            token,
            options: ImportOptions::default(),
        })
}

/// `{"errors":[{"code","message","detail"}]}` with the given status.
fn error(status: StatusCode, code: &str, message: &str, detail: serde_json::Value) -> Response {
    let body =
        json!({"errors": [{"code": code, "message": message, "detail": detail}]}).to_string();
    let mut resp = (status, body).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

fn unauthorized() -> Response {
    let mut resp = error(
        StatusCode::UNAUTHORIZED,
        "UNAUTHORIZED",
        "the admin API needs `Authorization: Bearer <admin token>` (see <data-dir>/admin-token)",
        serde_json::Value::Null,
    );
    resp.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"airdock-admin\""),
    );
    resp
}

/// The host clients reach us by, for the relocated `images.yml` in the report.
fn request_host(headers: &HeaderMap, uri: &axum::http::Uri) -> Option<String> {
    headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .or_else(|| uri.authority().map(|a| a.to_string()))
        .filter(|h| !h.is_empty() && h.bytes().all(|c| c.is_ascii_graphic()))
}

async fn import(State(st): State<AdminState>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    // Authenticate before reading a single byte of the (possibly huge) body: either the
    // auth layer admitted a user with the admin right, or the caller holds the admin token.
    let admitted = parts.extensions.get::<crate::auth::Admitted>().is_some();
    if !admitted
        && !st.token.verify(
            parts
                .headers
                .get(header::AUTHORIZATION)
                .map(HeaderValue::as_bytes),
        )
    {
        return unauthorized();
    }
    let query = crate::http::Query::parse(parts.uri.query());
    let repo = match query.get("repository").map(RepoName::parse) {
        Some(Ok(r)) => r,
        Some(Err(e)) => {
            return error(
                StatusCode::BAD_REQUEST,
                "NAME_INVALID",
                &e.to_string(),
                serde_json::Value::Null,
            )
        }
        None => {
            return error(
                StatusCode::BAD_REQUEST,
                "NAME_INVALID",
                "the `repository` query parameter is required",
                serde_json::Value::Null,
            )
        }
    };
    let mut options = st.options.clone();
    options.registry_host = request_host(&parts.headers, &parts.uri);
    let reader = body_reader(body);
    match imgpkg::import(&st.store, &repo, reader, &options).await {
        Ok(report) => {
            tracing::info!(
                repository = %repo,
                images = report.images.len(),
                new_blobs = report.blobs.new,
                present_blobs = report.blobs.present,
                bytes = report.tar_bytes,
                seconds = report.seconds,
                "imgpkg tar imported"
            );
            let body = serde_json::to_string_pretty(&report).unwrap_or_else(|_| "{}".to_owned());
            let mut resp = (StatusCode::CREATED, body).into_response();
            resp.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            resp
        }
        Err(e) => import_error(&repo, &e),
    }
}

fn body_reader(body: Body) -> impl tokio::io::AsyncRead + Unpin + Send {
    StreamReader::new(body.into_data_stream().map_err(io::Error::other))
}

fn import_error(repo: &RepoName, e: &ImportError) -> Response {
    let status = StatusCode::from_u16(e.http_status()).unwrap_or(StatusCode::BAD_REQUEST);
    if status.is_server_error() {
        tracing::error!(repository = %repo, error = %e, "imgpkg import failed");
        let message = if status == StatusCode::INSUFFICIENT_STORAGE {
            "storage full"
        } else {
            "internal error"
        };
        return error(status, e.code(), message, serde_json::Value::Null);
    }
    tracing::warn!(repository = %repo, error = %e, "imgpkg import refused");
    let detail = json!({"entry": e.entry, "repository": repo.as_str()});
    error(status, e.code(), &e.to_string(), detail)
}
