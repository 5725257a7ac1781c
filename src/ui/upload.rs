//! The upload page (`/ui/upload`): an admin picks an `imgpkg copy --to-tar` tar (or
//! `.tar.gz`); console.js sends the file as the raw body of `POST /ui/upload?repository=`
//! (XMLHttpRequest: fetch() reports no upload progress) and shows bytes, rate and a progress
//! bar; the server streams it through the admin API's import path (`admin::import::run`),
//! never holding it whole, and answers with the report (or the refusal naming the tar
//! entry) as an HTML fragment the page shows.

use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use maud::{html, Markup};

use airdock_storage::{Digest, RepoName};

use super::repos::{manifest_href, repo_href};
use super::view::{self, Nav};
use super::{Console, UiError, Viewer};
use crate::error::RegistryError;
use crate::http::Query;
use crate::imgpkg::ImportReport;

/// The header console.js sends the CSRF token in (the body is the tar).
const CSRF_HEADER: &str = "x-csrf-token";

/// `GET /ui/upload`.
pub async fn page(State(c): State<Console>, req: Request) -> Result<Response, UiError> {
    let (parts, _) = req.into_parts();
    let viewer = c.viewer(&parts).await?;
    viewer.require_admin("/ui/upload", "uploading an imgpkg tar")?;
    let q = Query::parse(parts.uri.query());
    let body = html! {
        h1 { "Upload an imgpkg tar" }
        p.muted { "A tar written by " code { "imgpkg copy --to-tar" } " (plain or gzip). It is streamed to the server and imported in one step: every image, index and bundle with its tags, or nothing." }
        section.upload {
            form id="upload-form" method="post" action="/ui/upload" {
                (view::csrf_field(&viewer))
                label { "Repository"
                    input name="repository" required value=(q.get("repository").unwrap_or("")) placeholder="lab/bundles" autocomplete="off";
                }
                label { "Tar file"
                    input name="file" type="file" required accept=".tar,.tgz,.gz,application/x-tar,application/gzip";
                }
                button.primary type="submit" { "Upload and import" }
            }
            div id="upload-status" hidden {
                progress.progress id="upload-progress" max="100" value="0" {}
                p id="upload-text" aria-live="polite" {}
            }
            div id="upload-result" {}
        }
    };
    Ok(viewer.render("Upload", Nav::Upload, body))
}

/// `POST /ui/upload?repository=<name>` with the tar as body and `X-CSRF-Token`: 201 with the
/// report as an HTML fragment, or the refusal as one.
pub async fn upload(State(c): State<Console>, req: Request) -> Result<Response, UiError> {
    let (parts, body) = req.into_parts();
    let viewer = c.viewer(&parts).await?;
    let result = import(&c, &viewer, &parts, body).await;
    Ok(viewer.answer(result))
}

/// The import itself; refusals become the answer `upload` attributes to the viewer.
async fn import(
    c: &Console,
    viewer: &Viewer,
    parts: &axum::http::request::Parts,
    body: axum::body::Body,
) -> Result<Response, UiError> {
    let token = parts.headers.get(CSRF_HEADER).and_then(|v| v.to_str().ok());
    c.check_csrf(viewer, token)?;
    viewer.require_admin("/ui/upload", "uploading an imgpkg tar")?;
    let q = Query::parse(parts.uri.query());
    let repo = match RepoName::parse(q.get("repository").unwrap_or("")) {
        Ok(r) => r,
        Err(e) => {
            return Ok(fragment(
                StatusCode::BAD_REQUEST,
                refusal(&e.to_string(), None),
            ))
        }
    };
    // The record names the console user as the importer, and the file's name (`?name=`).
    // The record names the console's user as the importer (no admin principal here).
    let options = match crate::admin::import::options(parts) {
        Ok(o) => crate::imgpkg::ImportOptions {
            imported_by: viewer.user.clone(),
            ..o
        },
        Err(e) => {
            return Ok(fragment(
                StatusCode::BAD_REQUEST,
                refusal(&e.to_string(), None),
            ))
        }
    };
    match crate::admin::import::import_report(
        &c.app,
        &repo,
        crate::admin::import::body_reader(body),
        &options,
    )
    .await
    {
        Ok(report) => {
            tracing::info!(user = ?viewer.user, repository = %repo, id = %report.import_id, "imported from the console");
            Ok(fragment(StatusCode::CREATED, report_view(viewer, &report)))
        }
        Err(RegistryError::Import { error, .. }) => {
            let status =
                StatusCode::from_u16(error.http_status()).unwrap_or(StatusCode::BAD_REQUEST);
            if status.is_server_error() && status != StatusCode::INSUFFICIENT_STORAGE {
                return Err(UiError::Internal(error.to_string()));
            }
            let message = if status == StatusCode::INSUFFICIENT_STORAGE {
                "the registry's disk is full; nothing was imported".to_owned()
            } else {
                error.message.clone()
            };
            Ok(fragment(status, refusal(&message, error.entry.as_deref())))
        }
        Err(e) => Err(e.into()),
    }
}

fn fragment(status: StatusCode, markup: Markup) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        markup.into_string(),
    )
        .into_response()
}

fn refusal(message: &str, entry: Option<&str>) -> Markup {
    html! {
        div.refused role="alert" {
            h2.error { "Import refused" }
            @if let Some(e) = entry { p { "Tar entry " code.entry { (e) } } }
            p.error { (message) }
            p.muted { "Nothing was imported: no tag or manifest of this tar is visible." }
        }
    }
}

fn report_view(viewer: &Viewer, r: &ImportReport) -> Markup {
    let repo = r.repository.as_str();
    let link = |d: &str| match Digest::parse(d) {
        Ok(d) => {
            html! { a href=(manifest_href(repo, &d)) { code { (view::short(d.to_string().as_str())) } } }
        }
        Err(_) => html! { code { (d) } },
    };
    html! {
        div.report {
            h2.notice { "Imported into " a href=(repo_href(repo)) { (repo) } }
            p.summary {
                (r.images.len()) " manifests · " (r.blobs.new) " new blobs (" (view::bytes(r.blobs.new_bytes)) ") · "
                (r.blobs.present) " already stored · " (view::bytes(r.upload_bytes)) " uploaded in " (format!("{:.1}", r.seconds)) " s"
            }
            @if let Some(b) = &r.root_bundle {
                dl.facts {
                    dt { "Bundle" } dd { (b.original_ref) }
                    dt { "Digest" } dd { (link(&b.digest)) }
                    @if let Some(t) = &b.tag {
                        dt { "Pull" } dd { (view::copyable(&format!("imgpkg pull -b {}/{repo}:{t} -o ./bundle", viewer.host))) }
                    }
                }
            }
            table.list {
                thead { tr { th { "Kind" } th { "From" } th { "Tags" } th { "Digest" } } }
                tbody {
                    @for i in &r.images {
                        tr {
                            td { (i.kind) }
                            td.wrap { (i.original_ref.as_deref().unwrap_or("")) }
                            td.wrap { @for t in &i.tags { span.badge { (t) } " " } }
                            td { (link(&i.digest)) }
                        }
                    }
                }
            }
            @if let Some(y) = &r.images_yml { details { summary { "images.yml as imgpkg pull writes it" } pre { (y) } } }
            p.muted { "Import id " code { (r.import_id) } }
        }
    }
}
