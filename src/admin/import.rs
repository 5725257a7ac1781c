//! `POST|PUT /admin/v1/import?repository=<name>` takes an `imgpkg copy --to-tar` tarball, a
//! `docker save` archive or an OCI image-layout archive (plain or gzip) as a streamed body and
//! answers `201` with the import report, or a 4xx in the OCI error shape naming the offending
//! tar entry. With `&dry_run=true` it reads and verifies the same way, changes nothing, and
//! answers `200` with the report it would give.

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
use crate::imgpkg::{ImportOptions, ImportReport};
use crate::metrics::{self, ImportResult};
use crate::AppState;

/// The import endpoint's path.
pub const IMPORT_PATH: &str = "/admin/v1/import";

pub async fn import(State(st): State<AppState>, req: Request) -> Result<Response, RegistryError> {
    let (parts, body) = req.into_parts();
    let repo = repository_param(parts.uri.query())?;
    let options = options(&parts)?;
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

/// The options of an import request (the whole import, or the `PUT` finishing an import
/// upload session).
pub(crate) fn options(parts: &axum::http::request::Parts) -> Result<ImportOptions, RegistryError> {
    let query = Query::parse(parts.uri.query());
    Ok(ImportOptions {
        // The host clients reach us by (behind a trusted proxy: the proxy's), for the
        // relocated `images.yml` in the report.
        registry_host: parts
            .extensions
            .get::<crate::forwarded::Client>()
            .and_then(|c| c.host().map(str::to_owned)),
        tar_name: tar_name(
            query.get("name"),
            parts.headers.get(header::CONTENT_DISPOSITION),
        )?,
        // Put there by the auth layer for every admin request it lets through.
        imported_by: parts
            .extensions
            .get::<crate::auth::AdminPrincipal>()
            .map(|p| p.0.clone()),
        dry_run: match query.get("dry_run") {
            None | Some("false" | "0") => false,
            Some("true" | "1" | "") => true,
            Some(other) => {
                return Err(RegistryError::BadRequest(
                    code::UNSUPPORTED,
                    format!("dry_run={other:?}: expected true or false"),
                ))
            }
        },
        ..ImportOptions::default()
    })
}

/// Imports `reader` (any archive `crate::archive` takes) into `repo`: 201 with the report
/// (200 for a dry run).
pub(crate) async fn run(
    st: &AppState,
    repo: RepoName,
    options: &ImportOptions,
    reader: impl tokio::io::AsyncRead + Unpin + Send + 'static,
) -> Result<Response, RegistryError> {
    let report = import_report(st, &repo, reader, options).await?;
    let body = serde_json::to_string_pretty(&report).unwrap_or_else(|_| "{}".to_owned());
    // A dry run created nothing.
    let status = if options.dry_run {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok((status, [(header::CONTENT_TYPE, "application/json")], body).into_response())
}

/// Imports `reader` into `repo`, counts and logs the outcome: the one import path of the
/// admin API (whole uploads and upload sessions) and the console's upload page.
pub(crate) async fn import_report(
    st: &AppState,
    repo: &RepoName,
    reader: impl tokio::io::AsyncRead + Unpin + Send + 'static,
    options: &ImportOptions,
) -> Result<ImportReport, RegistryError> {
    let report = match crate::archive::import(&st.store, repo, reader, options).await {
        Ok(report) => report,
        Err(error) => {
            if error.http_status() < 500 {
                tracing::warn!(repository = %repo, error = %error, "import refused");
                metrics::get().import(ImportResult::Refused, 0, 0.0);
            } else {
                metrics::get().import(ImportResult::Failed, 0, 0.0);
            }
            return Err(RegistryError::Import {
                repository: repo.clone(),
                error,
            });
        }
    };
    metrics::get().import(ImportResult::Ok, report.tar_bytes, report.seconds);
    tracing::info!(
        repository = %repo,
        format = report.format,
        images = report.images.len(),
        new_blobs = report.blobs.new,
        present_blobs = report.blobs.present,
        bytes = report.tar_bytes,
        seconds = report.seconds,
        dry_run = options.dry_run,
        "archive imported"
    );
    Ok(report)
}

/// The longest tar name kept in a record.
const MAX_TAR_NAME: usize = 255;

/// The tar's name for the import record: `?name=` (what `airdock import` sends), else the
/// `filename` of `Content-Disposition`. Only the last path component is kept; a name with
/// control characters or longer than [`MAX_TAR_NAME`] bytes is refused.
fn tar_name(
    query: Option<&str>,
    disposition: Option<&header::HeaderValue>,
) -> Result<Option<String>, RegistryError> {
    let given = match query {
        Some(q) => Some(q.to_owned()),
        None => disposition
            .and_then(|v| v.to_str().ok())
            .and_then(disposition_filename),
    };
    let Some(given) = given else {
        return Ok(None);
    };
    let bad = |why: &str| {
        Err(RegistryError::BadRequest(
            code::UNSUPPORTED,
            format!("the tar's name {given:?} {why} (`?name=` or Content-Disposition filename)"),
        ))
    };
    let base = given.rsplit(['/', '\\']).next().unwrap_or("").trim();
    if base.is_empty() || base == "." || base == ".." {
        return bad("has no file name");
    }
    if base.chars().any(char::is_control) {
        return bad("holds control characters");
    }
    if base.len() > MAX_TAR_NAME {
        return bad("is longer than 255 bytes");
    }
    Ok(Some(base.to_owned()))
}

/// The file name of a `Content-Disposition` value (RFC 6266): `filename*=UTF-8''<percent-
/// encoded>` preferred, else `filename="quoted"` or `filename=token`. `None` if neither is
/// there or it cannot be decoded.
pub fn disposition_filename(value: &str) -> Option<String> {
    let mut plain = None;
    let mut extended = None;
    let mut rest = value;
    // Parameters after the disposition type, `;`-separated; quoted strings may hold `;`.
    while let Some(i) = rest.find(';') {
        rest = rest[i + 1..].trim_start();
        let (key, after) = rest.split_once('=')?;
        let key = key.trim().to_ascii_lowercase();
        let after = after.trim_start();
        let (val, next) = if let Some(q) = after.strip_prefix('"') {
            let mut out = String::new();
            let mut chars = q.char_indices();
            let mut end = None;
            while let Some((j, c)) = chars.next() {
                match c {
                    '\\' => out.extend(chars.next().map(|(_, c)| c)),
                    '"' => {
                        end = Some(j + 1);
                        break;
                    }
                    c => out.push(c),
                }
            }
            (out, &q[end?..])
        } else {
            let j = after.find(';').unwrap_or(after.len());
            (after[..j].trim().to_owned(), &after[j..])
        };
        match key.as_str() {
            "filename" => plain = Some(val),
            "filename*" => extended = ext_value(&val),
            _ => {}
        }
        rest = next;
    }
    extended.or(plain)
}

/// RFC 8187 `charset'lang'pct-encoded`, UTF-8 only (what every client sends).
fn ext_value(v: &str) -> Option<String> {
    let mut parts = v.splitn(3, '\'');
    let charset = parts.next()?;
    let _lang = parts.next()?;
    let encoded = parts.next()?;
    if !charset.eq_ignore_ascii_case("utf-8") {
        return None;
    }
    let bytes = encoded.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

pub(crate) fn body_reader(body: Body) -> impl tokio::io::AsyncRead + Unpin + Send {
    StreamReader::new(body.into_data_stream().map_err(io::Error::other))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_disposition_filenames() {
        let f = disposition_filename;
        assert_eq!(
            f("attachment; filename=\"b.tar\"").as_deref(),
            Some("b.tar")
        );
        assert_eq!(f("attachment; filename=b.tar").as_deref(), Some("b.tar"));
        assert_eq!(
            f("attachment; filename=\"a \\\"q\\\"; b.tar\"; size=3").as_deref(),
            Some("a \"q\"; b.tar")
        );
        assert_eq!(
            f("attachment; filename=\"fallback.tar\"; filename*=UTF-8''caf%C3%A9.tar").as_deref(),
            Some("café.tar"),
            "the extended form wins"
        );
        assert_eq!(f("attachment"), None);
        assert_eq!(f("attachment; filename=\"open"), None);
        assert_eq!(f("attachment; filename*=UTF-8''%ZZ"), None);
    }

    #[test]
    fn tar_names_keep_the_last_component_and_refuse_junk() {
        let name = |q: &str| tar_name(Some(q), None);
        assert_eq!(
            name("bundle.tar").ok().flatten().as_deref(),
            Some("bundle.tar")
        );
        assert_eq!(
            name("/tmp/x/../b.tar.gz").ok().flatten().as_deref(),
            Some("b.tar.gz")
        );
        assert_eq!(
            name("C:\\dl\\b.tar").ok().flatten().as_deref(),
            Some("b.tar")
        );
        for bad in ["", "dir/", "..", "a\nb.tar"] {
            assert!(name(bad).is_err(), "{bad:?}");
        }
        assert!(name(&"x".repeat(300)).is_err());
        let cd = header::HeaderValue::from_static("attachment; filename=\"c.tar\"");
        assert_eq!(
            tar_name(None, Some(&cd)).ok().flatten().as_deref(),
            Some("c.tar")
        );
        assert_eq!(
            tar_name(Some("q.tar"), Some(&cd)).ok().flatten().as_deref(),
            Some("q.tar"),
            "the query parameter wins"
        );
        assert_eq!(tar_name(None, None).ok().flatten(), None);
    }
}
