//! `POST|PUT /admin/v1/import?repository=<name>` takes an `imgpkg copy --to-tar` tarball, a
//! `docker save` archive or an OCI image-layout archive (plain or gzip) as a streamed body and answers `201` with the import report, or a 4xx in
//! the OCI error shape naming the offending tar entry.

use std::io;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use futures_util::TryStreamExt;
use tokio_util::io::StreamReader;

use airdock_storage::RepoName;

use crate::error::{code, RegistryError};
use crate::http::Query;
use crate::imgpkg::ImportOptions;
use crate::AppState;

/// The import endpoint's path.
pub const IMPORT_PATH: &str = "/admin/v1/import";

pub async fn import(State(st): State<AppState>, req: Request) -> Result<Response, RegistryError> {
    let (parts, body) = req.into_parts();
    let repo = repository_param(parts.uri.query())?;
    let options = options(&parts.extensions);
    run(&st, repo, &options, body_reader(body)).await
}

/// The `repository` query parameter an import names its target by.
pub(crate) fn repository_param(query: Option<&str>) -> Result<RepoName, RegistryError> {
    match Query::parse(query).get("repository") {
        Some(r) => Ok(RepoName::parse(r)?),
        None => Err(RegistryError::BadRequest(
            code::NAME_INVALID,
            "the `repository` query parameter is required".into(),
        )),
    }
}

/// The options of an import request.
pub(crate) fn options(extensions: &axum::http::Extensions) -> ImportOptions {
    ImportOptions {
        // The host clients reach us by (behind a trusted proxy: the proxy's), for the
        // relocated `images.yml` in the report.
        registry_host: extensions
            .get::<crate::forwarded::Client>()
            .and_then(|c| c.host().map(str::to_owned)),
        ..ImportOptions::default()
    }
}

/// Imports `reader` (any archive `crate::archive` takes) into `repo`: 201 with the report.
pub(crate) async fn run(
    st: &AppState,
    repo: RepoName,
    options: &ImportOptions,
    reader: impl tokio::io::AsyncRead + Unpin + Send + 'static,
) -> Result<Response, RegistryError> {
    let report = match crate::archive::import(&st.store, &repo, reader, options).await {
        Ok(report) => report,
        Err(error) => {
            if error.http_status() < 500 {
                tracing::warn!(repository = %repo, error = %error, "import refused");
            }
            return Err(RegistryError::Import {
                repository: repo,
                error,
            });
        }
    };
    tracing::info!(
        repository = %repo,
        format = report.format,
        images = report.images.len(),
        new_blobs = report.blobs.new,
        present_blobs = report.blobs.present,
        bytes = report.tar_bytes,
        seconds = report.seconds,
        "archive imported"
    );
    let body = serde_json::to_string_pretty(&report).unwrap_or_else(|_| "{}".to_owned());
    Ok((
        StatusCode::CREATED,
        [(header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response())
}

fn body_reader(body: Body) -> impl tokio::io::AsyncRead + Unpin + Send {
    StreamReader::new(body.into_data_stream().map_err(io::Error::other))
}
