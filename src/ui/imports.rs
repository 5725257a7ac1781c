//! The Imports page (`/ui/imports`): the history of imgpkg imports (when, who, the tar's
//! name and size, what each brought), one import's report (`/ui/imports/<id>`) and its
//! removal (`/ui/imports/<id>/remove`: a preview of what would go, then the removal by POST).
//! Admin work, as the admin API's `/admin/v1/imports` is; both read and remove through the
//! same store calls (`imports`, `import`, `preview_import_removal`, `remove_import`).

use axum::extract::{Request, State};
use axum::response::{IntoResponse, Redirect, Response};
use maud::{html, Markup};

use airdock_storage::{Digest, ImportRecord, ImportRemoval, Reference};

use super::repos::{manifest_href, repo_href, url_part};
use super::view::{self, Nav};
use super::{Console, UiError, Viewer};
use crate::http::Query;
use crate::imgpkg::names::is_imgpkg_tag;

/// Imports per page of the history.
const PAGE: usize = 50;
const WHAT: &str = "the import history";

pub fn import_href(id: &str) -> String {
    format!("/ui/imports/{id}")
}

/// `GET /ui/imports[?q=<repository part>&after=<id>]`: newest first.
pub async fn list(State(c): State<Console>, req: Request) -> Result<Response, UiError> {
    let (parts, _) = req.into_parts();
    let viewer = c.viewer(&parts).await?;
    viewer.require_admin("/ui/imports", WHAT)?;
    let q = Query::parse(parts.uri.query());
    let filter = q.get("q").unwrap_or("").trim();
    let after = q.get("after").filter(|a| !a.is_empty());
    let all = c.app.store.imports();
    let matching: Vec<&ImportRecord> = all
        .iter()
        .rev()
        .filter(|r| r.repository.as_str().contains(filter))
        .collect();
    let start = after
        .and_then(|a| matching.iter().position(|r| r.id == a).map(|i| i + 1))
        .unwrap_or(0);
    let shown = matching.get(start..).unwrap_or_default();
    let more = shown.len() > PAGE;
    let shown = &shown[..shown.len().min(PAGE)];
    let next = shown
        .last()
        .filter(|_| more)
        .map(|last| format!("/ui/imports?q={}&after={}", url_part(filter), last.id));
    let removed = q.get("removed");
    let body = html! {
        div.heading {
            h1 { "Imports" }
            form.filter method="get" action="/ui/imports" role="search" {
                input type="search" name="q" value=(filter) placeholder="Filter by repository" aria-label="Filter imports by repository" accesskey="f";
            }
        }
        @if let Some(id) = removed {
            p.notice role="status" {
                "Import " code { (id) } " removed: "
                (q.get("tags").unwrap_or("0")) " tags and " (q.get("manifests").unwrap_or("0")) " manifests. "
                "Their bytes are freed by the next garbage collection (" a href="/ui/storage" { "Storage" } ")."
            }
        }
        p.muted {
            (matching.len()) " import" (if matching.len() == 1 { "" } else { "s" })
            @if !filter.is_empty() { " into repositories matching “" (filter) "”" }
            @if after.is_some() { " · " a href={ "/ui/imports?q=" (url_part(filter)) } { "newest" } }
        }
        @if shown.is_empty() {
            p.empty { "No imports yet. " a href="/ui/upload" { "Upload an imgpkg tar" } " or POST one to " code { "/admin/v1/import" } "." }
        } @else {
            table.list.imports {
                thead { tr { th { "When" } th { "Who" } th { "Tar" } th.num { "Size" } th { "Repository" } th.num { "Images" } th { "Tags" } } }
                tbody {
                    @for r in shown { (history_row(r)) }
                }
            }
        }
        @if let Some(next) = next { p.pager { a href=(next) rel="next" { "Older imports →" } } }
    };
    Ok(viewer.render("Imports", Nav::Imports, body))
}

/// The tags a person set (in the order imported) and how many of imgpkg's own there were.
fn split_tags(r: &ImportRecord) -> (Vec<&str>, usize) {
    let (own, plain): (Vec<&str>, Vec<&str>) = r
        .tags
        .iter()
        .map(|t| t.tag.as_str())
        .partition(|t| is_imgpkg_tag(t));
    (plain, own.len())
}

fn history_row(r: &ImportRecord) -> Markup {
    let (plain, own) = split_tags(r);
    html! {
        tr data-import=(r.id) {
            td { a href=(import_href(&r.id)) { (view::when(r.time)) } }
            td { (r.imported_by.as_deref().unwrap_or("—")) }
            td.wrap { a href=(import_href(&r.id)) { (r.name.as_deref().unwrap_or("(unnamed)")) } }
            td.num { @if let Some(s) = r.size { (view::bytes(s)) } @else { "—" } }
            td.wrap { a href=(repo_href(r.repository.as_str())) { (r.repository.as_str()) } }
            td.num { (r.manifests.len()) }
            td.wrap {
                @for t in &plain { span.badge { (t) } " " }
                @if own > 0 { small.muted { "+" (own) " imgpkg" } }
            }
        }
    }
}

/// What a path under `/ui/imports/` names: a report, or its removal.
fn target(rest: &str) -> Result<(&str, bool), UiError> {
    let (id, remove) = match rest.strip_suffix("/remove") {
        Some(id) => (id, true),
        None => (rest, false),
    };
    // Ids are 32 lowercase hex characters; anything else names no import.
    if id.is_empty() || id.len() > 64 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(UiError::NotFound(format!("no import with id {id:?}")));
    }
    Ok((id, remove))
}

fn record(c: &Console, id: &str) -> Result<ImportRecord, UiError> {
    c.app.store.import(id).ok_or_else(|| {
        UiError::NotFound(format!(
            "no import with id {id}: it was removed, or never existed"
        ))
    })
}

/// `GET /ui/imports/<id>` (the report) and `GET /ui/imports/<id>/remove` (the preview).
pub async fn get(State(c): State<Console>, req: Request) -> Result<Response, UiError> {
    let (parts, _) = req.into_parts();
    let viewer = c.viewer(&parts).await?;
    viewer.require_admin(parts.uri.path(), WHAT)?;
    let rest = parts.uri.path().strip_prefix("/ui/imports/").unwrap_or("");
    let (id, remove) = target(rest)?;
    let r = record(&c, id)?;
    if remove {
        let preview = c
            .app
            .store
            .preview_import_removal(id)
            .ok_or_else(|| UiError::NotFound(format!("no import with id {id}")))?;
        return Ok(viewer.render(
            "Remove import",
            Nav::Imports,
            preview_view(&viewer, &r, &preview),
        ));
    }
    Ok(viewer.render("Import", Nav::Imports, report(&c, &r)))
}

/// `POST /ui/imports/<id>/remove` with `_csrf`: remove what the import created (the store
/// decides again, under its lock, what still belongs to it), then back to the history.
pub async fn post(State(c): State<Console>, req: Request) -> Result<Response, UiError> {
    let (parts, body) = req.into_parts();
    let viewer = c.viewer(&parts).await?;
    let result = remove(&c, &viewer, &parts, body).await;
    Ok(viewer.answer(result))
}

/// The removal itself; refusals become the answer `post` attributes to the viewer.
async fn remove(
    c: &Console,
    viewer: &Viewer,
    parts: &axum::http::request::Parts,
    body: axum::body::Body,
) -> Result<Response, UiError> {
    c.checked_form(viewer, body).await?;
    // The server decides, whatever the page showed.
    if let Err(e) = viewer.require_admin(parts.uri.path(), "removing an import") {
        tracing::info!(user = ?viewer.user, path = parts.uri.path(), "console import removal refused");
        return Err(e);
    }
    let rest = parts.uri.path().strip_prefix("/ui/imports/").unwrap_or("");
    let (id, true) = target(rest)? else {
        return Err(UiError::NotFound("nothing to post here".into()));
    };
    let removal = c.app.store.remove_import(id).await?.ok_or_else(|| {
        UiError::NotFound(format!("no import with id {id}: it was already removed"))
    })?;
    tracing::info!(
        user = ?viewer.user, id, repository = %removal.repository,
        tags = removal.tags_removed.len(), manifests = removal.manifests_removed.len(),
        "import removed from the console"
    );
    let to = format!(
        "/ui/imports?removed={id}&tags={}&manifests={}",
        removal.tags_removed.len(),
        removal.manifests_removed.len()
    );
    Ok(viewer.finish(Redirect::to(&to).into_response()))
}

/// One import's record: the facts, then every manifest it brought with the tags it set on
/// each and whether it is still stored.
fn report(c: &Console, r: &ImportRecord) -> Markup {
    let repo = r.repository.as_str();
    let (plain, own) = split_tags(r);
    html! {
        nav.crumbs { a href="/ui/imports" { "Imports" } " / " }
        div.heading {
            h1 { "Import " code { (view::short(&r.id)) } }
            a.button.danger href={ (import_href(&r.id)) "/remove" } { "Remove this import…" }
        }
        dl.facts {
            dt { "When" } dd { (view::when(r.time)) }
            dt { "Who" } dd { (r.imported_by.as_deref().unwrap_or("not recorded")) }
            dt { "Tar" } dd { (r.name.as_deref().unwrap_or("not recorded")) }
            dt { "Size" } dd { @if let Some(s) = r.size { (view::bytes(s)) " (" (s) " bytes)" } @else { "not recorded" } }
            @if let Some(d) = &r.tar_sha256 { dt { "Tar digest" } dd { code { (d) } } }
            dt { "Repository" } dd { a href=(repo_href(repo)) { (repo) } }
            dt { "Brought" } dd {
                (r.manifests.len()) " manifests, " (plain.len()) " tags"
                @if own > 0 { " (and " (own) " of imgpkg's own)" }
            }
            dt { "Id" } dd { code { (r.id) } }
        }
        h2 { "Manifests" }
        table.list.report {
            thead { tr { th { "Digest" } th { "Type" } th.num { "Size" } th { "Tags it set" } th { "Now" } } }
            tbody {
                @for d in &r.manifests { (manifest_row(c, r, d)) }
            }
        }
    }
}

fn manifest_row(c: &Console, r: &ImportRecord, d: &Digest) -> Markup {
    let repo = r.repository.as_str();
    let stored = c
        .app
        .store
        .stat_manifest(&r.repository, &Reference::Digest(d.clone()))
        .ok();
    let tags: Vec<&str> = r
        .tags
        .iter()
        .filter(|t| t.digest == *d)
        .map(|t| t.tag.as_str())
        .collect();
    html! {
        tr data-digest=(d) {
            td { @if stored.is_some() {
                a href=(manifest_href(repo, d)) title=(d) { code { (view::short(&d.to_string())) } }
            } @else { code title=(d) { (view::short(&d.to_string())) } } }
            td { @if let Some(m) = &stored { (view::kind(m.media_type.as_str())) } }
            td.num { @if let Some(m) = &stored { (view::bytes(m.size)) } }
            td.wrap { @for t in &tags { span.badge { (t) } " " } }
            td { @if stored.is_some() { span.present { "stored" } } @else { span.missing { "gone" } } }
        }
    }
}

fn digest_list(ds: &[Digest], repo: &str, link: bool) -> Markup {
    html! {
        ul.plain {
            @for d in ds {
                li { @if link { a href=(manifest_href(repo, d)) { code { (d) } } } @else { code { (d) } } }
            }
        }
    }
}

fn tag_list(ts: &[String]) -> Markup {
    html! { p { @for t in ts { span.badge { (t) } " " } } }
}

/// What removing `r` would do now, and the form that does it.
fn preview_view(viewer: &Viewer, r: &ImportRecord, p: &ImportRemoval) -> Markup {
    let repo = r.repository.as_str();
    let nothing = p.tags_removed.is_empty() && p.manifests_removed.is_empty();
    html! {
        nav.crumbs { a href="/ui/imports" { "Imports" } " / " a href=(import_href(&r.id)) { code { (view::short(&r.id)) } } " / " }
        h1 { "Remove import " code { (view::short(&r.id)) } }
        p {
            (r.name.as_deref().unwrap_or("An unnamed tar")) " imported into " a href=(repo_href(repo)) { (repo) }
            " " (view::when(r.time)) @if let Some(u) = &r.imported_by { " by " (u) } "."
        }
        section.preview {
            h2 { "Would be removed" }
            @if nothing {
                p.muted { "Nothing: every tag and manifest of this import is now kept by something else. Removing it drops only its record." }
            } @else {
                p { (p.tags_removed.len()) " tags and " (p.manifests_removed.len()) " manifests." }
                @if !p.tags_removed.is_empty() { h3 { "Tags" } (tag_list(&p.tags_removed)) }
                @if !p.manifests_removed.is_empty() { h3 { "Manifests" } (digest_list(&p.manifests_removed, repo, true)) }
            }
            @if !p.tags_kept.is_empty() || !p.manifests_kept.is_empty() {
                h2 { "Kept" }
                p.muted { "A later push moved these tags, another import also brought them, or a kept tag still reaches these manifests." }
                @if !p.tags_kept.is_empty() { h3 { "Tags" } (tag_list(&p.tags_kept)) }
                @if !p.manifests_kept.is_empty() { h3 { "Manifests" } (digest_list(&p.manifests_kept, repo, true)) }
            }
            p.muted { "Blobs are not deleted now: the next garbage collection frees what nothing references any more." }
            form method="post" action={ (import_href(&r.id)) "/remove" }
                data-confirm={ "Remove import " (view::short(&r.id)) " from " (repo) ": " (p.tags_removed.len()) " tags and " (p.manifests_removed.len()) " manifests?" } {
                (view::csrf_field(viewer))
                button.danger type="submit" { "Remove this import" }
                " "
                a href=(import_href(&r.id)) { "Cancel" }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn import_paths_parse() {
        let id = "0123456789abcdef0123456789abcdef";
        assert!(matches!(target(id), Ok((i, false)) if i == id));
        assert!(matches!(target(&format!("{id}/remove")), Ok((i, true)) if i == id));
        assert!(target("").is_err());
        assert!(target("../x").is_err());
        assert!(target(&format!("{id}/other")).is_err());
    }
}
