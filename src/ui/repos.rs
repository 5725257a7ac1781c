//! The repositories page (`/ui/`), a repository's page (`/ui/repositories/<name>`: one row
//! per tag) and deleting a tag. Paging and filtering happen on the server: a page copies
//! out only its own rows, whatever the registry holds.

use axum::extract::{Request, State};
use axum::response::{IntoResponse, Redirect, Response};
use maud::{html, Markup};

use airdock_storage::{Digest, ManifestDelete, ManifestRecord, Reference, RepoName, Tag, TagRow};

use super::view::{self, Nav};
use super::{Console, UiError, Viewer};
use crate::http::Query;
use crate::imgpkg::names::is_imgpkg_tag;

/// Rows per page unless `n` says otherwise, and the most `n` may ask for.
const PAGE: usize = 50;
const PAGE_MAX: usize = 500;

/// `n`, `after` and `q` of a listing's query.
struct Paging<'a> {
    n: usize,
    after: Option<&'a str>,
    q: &'a str,
}

fn paging<'a>(q: &'a Query) -> Paging<'a> {
    let n = q
        .get("n")
        .and_then(|v| v.parse::<usize>().ok())
        .map_or(PAGE, |n| n.clamp(1, PAGE_MAX));
    Paging {
        n,
        after: q.get("after").filter(|a| !a.is_empty()),
        q: q.get("q").unwrap_or("").trim(),
    }
}

pub fn url_part(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// The page's URL of `repo`.
pub fn repo_href(repo: &str) -> String {
    format!("/ui/repositories/{repo}")
}

/// The page's URL of manifest `digest` in `repo`.
pub fn manifest_href(repo: &str, digest: &Digest) -> String {
    format!("/ui/repositories/{repo}/-/manifests/{digest}")
}

/// `GET /ui/?q=&after=&n=`: the repositories the viewer may pull.
pub async fn list(State(c): State<Console>, req: Request) -> Result<Response, UiError> {
    let (parts, _) = req.into_parts();
    let viewer = c.viewer(&parts).await?;
    if viewer.must_sign_in() {
        return Err(UiError::SignIn("/ui/".into()));
    }
    let query = Query::parse(parts.uri.query());
    let p = paging(&query);
    let visible = |r: &str| viewer.rights(r).pull;
    let page = c.app.store.repo_summaries(p.q, p.after, p.n, &visible);
    let next = page.items.last().filter(|_| page.more).map(|last| {
        format!(
            "/ui/?q={}&after={}&n={}",
            url_part(p.q),
            url_part(last.name.as_str()),
            p.n
        )
    });
    let body = html! {
        div.heading {
            h1 { "Repositories" }
            form.filter method="get" action="/ui/" role="search"
                hx-get="/ui/" hx-trigger="input changed delay:250ms from:find input, submit"
                hx-select="#results" hx-target="#results" hx-swap="outerHTML" hx-push-url="true" {
                input type="search" name="q" value=(p.q) placeholder="Filter by name" aria-label="Filter repositories by name" accesskey="f";
            }
        }
        div id="results" {
            p.muted {
                (page.total) " repositor" (if page.total == 1 { "y" } else { "ies" })
                @if !p.q.is_empty() { " matching “" (p.q) "”" }
                @if p.after.is_some() { " · " a href={ "/ui/?q=" (url_part(p.q)) } { "first page" } }
            }
            @if page.items.is_empty() {
                p.empty { "Nothing here yet. Push an image (" code { "docker push " (viewer.host) "/NAME:TAG" } ") or import an imgpkg tar." }
            } @else {
                table.list {
                    thead { tr { th { "Name" } th.num { "Tags" } th.num { "Manifests" } th.num { "Size" } th { "Last push" } } }
                    tbody {
                        @for r in &page.items {
                            tr {
                                td { a href=(repo_href(r.name.as_str())) { (r.name.as_str()) } }
                                td.num { (r.tags) }
                                td.num { (r.manifests) }
                                td.num { (view::bytes(r.bytes)) }
                                td { (view::when(r.last_push.unwrap_or(0))) }
                            }
                        }
                    }
                }
            }
            @if let Some(next) = next { p.pager { a href=(next) rel="next" { "Next page →" } } }
        }
    };
    Ok(viewer.render("Repositories", Nav::Repositories, body))
}

/// What a console path under `/ui/repositories/` names.
enum Target {
    Repo(RepoName),
    Manifest(RepoName, Digest),
    Bundle(RepoName, Digest),
    DeleteTag(RepoName, Tag),
}

/// `<name>`, `<name>/-/manifests/<digest>`, `<name>/-/tags/<tag>/delete`. A name component
/// is never `-`, so the marker cannot be part of a name.
fn target(rest: &str) -> Result<Target, UiError> {
    let bad = |e: airdock_storage::StoreError| UiError::NotFound(e.to_string());
    let Some((name, action)) = rest.split_once("/-/") else {
        return Ok(Target::Repo(
            RepoName::parse(rest.trim_end_matches('/')).map_err(bad)?,
        ));
    };
    let repo = RepoName::parse(name).map_err(bad)?;
    if let Some(d) = action.strip_prefix("manifests/") {
        return Ok(Target::Manifest(repo, Digest::parse(d).map_err(bad)?));
    }
    if let Some(d) = action.strip_prefix("bundles/") {
        return Ok(Target::Bundle(repo, Digest::parse(d).map_err(bad)?));
    }
    if let Some(t) = action
        .strip_prefix("tags/")
        .and_then(|t| t.strip_suffix("/delete"))
    {
        return Ok(Target::DeleteTag(repo, Tag::parse(t).map_err(bad)?));
    }
    Err(UiError::NotFound(format!("no console page at {rest}")))
}

/// The viewer may pull `repo`, or gets what the API would say: sign in (anonymous), or
/// not found (a user without the right learns nothing of the repository's existence).
pub fn require_pull(viewer: &Viewer, repo: &RepoName, path: &str) -> Result<(), UiError> {
    if viewer.rights(repo.as_str()).pull {
        return Ok(());
    }
    if viewer.auth_on() && viewer.user.is_none() {
        return Err(UiError::SignIn(path.to_owned()));
    }
    Err(UiError::NotFound(format!(
        "there is no repository {repo} that you may pull"
    )))
}

/// `GET /ui/repositories/…`.
pub async fn get(State(c): State<Console>, req: Request) -> Result<Response, UiError> {
    let (parts, _) = req.into_parts();
    let viewer = c.viewer(&parts).await?;
    let rest = parts
        .uri
        .path()
        .strip_prefix("/ui/repositories/")
        .unwrap_or("");
    let target = target(rest)?;
    match target {
        Target::Repo(repo) => {
            require_pull(&viewer, &repo, parts.uri.path())?;
            let query = Query::parse(parts.uri.query());
            repository(&c, &viewer, &repo, &query).await
        }
        Target::Manifest(repo, digest) => {
            require_pull(&viewer, &repo, parts.uri.path())?;
            super::manifest::page(&c, &viewer, &repo, &digest).await
        }
        Target::Bundle(repo, digest) => {
            require_pull(&viewer, &repo, parts.uri.path())?;
            super::bundles::page(&c, &viewer, &repo, &digest).await
        }
        Target::DeleteTag(..) => Err(UiError::BadRequest(
            "deleting a tag takes a POST from its repository page".into(),
        )),
    }
}

/// `POST /ui/repositories/<name>/-/tags/<tag>/delete` with `_csrf`: delete one tag (its
/// manifest stays, as with the API's DELETE by tag), then back to the repository.
pub async fn post(State(c): State<Console>, req: Request) -> Result<Response, UiError> {
    let (parts, body) = req.into_parts();
    let viewer = c.viewer(&parts).await?;
    let result = delete_tag(&c, &viewer, &parts, body).await;
    Ok(viewer.answer(result))
}

/// The delete itself; refusals become the answer `post` attributes to the viewer.
async fn delete_tag(
    c: &Console,
    viewer: &Viewer,
    parts: &axum::http::request::Parts,
    body: axum::body::Body,
) -> Result<Response, UiError> {
    c.checked_form(viewer, body).await?;
    let rest = parts
        .uri
        .path()
        .strip_prefix("/ui/repositories/")
        .unwrap_or("");
    let Target::DeleteTag(repo, tag) = target(rest)? else {
        return Err(UiError::NotFound("nothing to post here".into()));
    };
    // The server decides, whatever the page showed.
    if !viewer.rights(repo.as_str()).delete {
        tracing::info!(user = ?viewer.user, repository = %repo, tag = %tag.as_str(), "console tag delete refused");
        return Err(UiError::Forbidden(format!(
            "you may not delete in {repo}: the delete right is required"
        )));
    }
    c.app
        .store
        .delete_manifest(
            &repo,
            &Reference::Tag(tag.clone()),
            ManifestDelete::default(),
        )
        .await?;
    tracing::info!(user = ?viewer.user, repository = %repo, tag = %tag.as_str(), "tag deleted from the console");
    let to = format!(
        "{}?deleted={}",
        repo_href(repo.as_str()),
        url_part(tag.as_str())
    );
    Ok(viewer.finish(Redirect::to(&to).into_response()))
}

/// Platforms of an index's children, read from its bytes (the store keeps no platforms):
/// child digest → `os/arch[/variant]`.
pub fn platforms(bytes: &[u8]) -> Vec<(String, String)> {
    #[derive(serde::Deserialize)]
    struct Index {
        #[serde(default)]
        manifests: Vec<Child>,
    }
    #[derive(serde::Deserialize)]
    struct Child {
        digest: String,
        platform: Option<Platform>,
    }
    #[derive(serde::Deserialize)]
    struct Platform {
        #[serde(default)]
        os: String,
        #[serde(default)]
        architecture: String,
        variant: Option<String>,
    }
    let Ok(index) = serde_json::from_slice::<Index>(bytes) else {
        return Vec::new();
    };
    index
        .manifests
        .into_iter()
        .map(|c| {
            let p = match c.platform {
                Some(p) => match p.variant {
                    Some(v) => format!("{}/{}/{v}", p.os, p.architecture),
                    None => format!("{}/{}", p.os, p.architecture),
                },
                None => String::new(),
            };
            (c.digest, p)
        })
        .collect()
}

/// Compressed size of what pulling `record` transfers: the manifest and its blobs, and for
/// an index each child present in `repo` (one level: indexes of indexes are rare).
pub fn pull_size(c: &Console, repo: &RepoName, record: &ManifestRecord) -> u64 {
    let own = record
        .blobs
        .iter()
        .fold(record.size, |a, b| a.saturating_add(b.size));
    record.manifests.iter().fold(own, |a, child| {
        let r = Reference::Digest(child.digest.clone());
        match c.app.store.stat_manifest(repo, &r) {
            Ok(m) => a.saturating_add(m.blobs.iter().fold(m.size, |x, b| x.saturating_add(b.size))),
            Err(_) => a.saturating_add(child.size),
        }
    })
}

/// The pull commands for `reference` (`:tag` or `@digest`) of `repo`.
pub fn pull_commands(viewer: &Viewer, repo: &str, reference: &str, bundle: bool) -> Markup {
    let image = format!("{}/{repo}{reference}", viewer.host);
    html! {
        div.pulls {
            @if bundle {
                (view::copyable(&format!("imgpkg pull -b {image} -o ./bundle")))
            }
            (view::copyable(&format!("docker pull {image}")))
            (view::copyable(&format!("crictl pull {image}")))
        }
    }
}

/// The type column of a row: the kind, and the artifact type when there is one.
pub fn type_cell(record: &ManifestRecord, bundle: bool) -> Markup {
    html! {
        span.kind { (view::kind(record.media_type.as_str())) }
        @if bundle { " " span.badge { "imgpkg bundle" } }
        @if let Some(a) = record.artifact_type.as_ref().filter(|a| !is_plain_config(a)) { br; small.muted { (a.as_str()) } }
    }
}

/// An image's ordinary config type, which the store reports as its artifact type (as the
/// referrers API does) but which says nothing a person needs to read.
fn is_plain_config(t: &str) -> bool {
    matches!(
        t,
        "application/vnd.oci.image.config.v1+json"
            | "application/vnd.docker.container.image.v1+json"
    )
}

async fn repository(
    c: &Console,
    viewer: &Viewer,
    repo: &RepoName,
    query: &Query,
) -> Result<Response, UiError> {
    let p = paging(query);
    // imgpkg's own tags (one per image it copied, and the locations image) are noise to a
    // person; shown on request.
    let show_imgpkg = query.get("imgpkg").is_some_and(|v| v == "1");
    let Some(summary) = c.app.store.repo_summary(repo) else {
        return Err(UiError::NotFound(format!(
            "there is no repository {repo} that you may pull"
        )));
    };
    let (rows, more) = c
        .app
        .store
        .tag_rows(repo, p.q, p.after, p.n, &|t| {
            !show_imgpkg && is_imgpkg_tag(t)
        })
        .unwrap_or_default();
    let may_delete = viewer.rights(repo.as_str()).delete;
    let mut shown = Vec::with_capacity(rows.len());
    for row in rows {
        let plats = if row.record.is_index() {
            match c
                .app
                .store
                .get_manifest(repo, &Reference::Digest(row.record.digest.clone()))
                .await
            {
                Ok(m) => platforms(&m.bytes)
                    .into_iter()
                    .map(|(_, p)| p)
                    .filter(|p| !p.is_empty())
                    .collect(),
                Err(_) => Vec::new(),
            }
        } else {
            Vec::new()
        };
        let bundle = super::manifest::is_bundle(c, repo, &row.record).await;
        shown.push((row, plats, bundle));
    }
    let deleted = query.get("deleted");
    let base = repo_href(repo.as_str());
    let next = shown.last().filter(|_| more).map(|(last, _, _)| {
        format!(
            "{base}?q={}&after={}&n={}{}",
            url_part(p.q),
            url_part(&last.tag),
            p.n,
            if show_imgpkg { "&imgpkg=1" } else { "" }
        )
    });
    let body = html! {
        nav.crumbs { a href="/ui/" { "Repositories" } " / " }
        div.heading {
            h1 { (repo.as_str()) }
            form.filter method="get" action=(base)
                hx-get=(base) hx-trigger="input changed delay:250ms from:find input, submit"
                hx-select="#results" hx-target="#results" hx-swap="outerHTML" hx-push-url="true" {
                input type="search" name="q" value=(p.q) placeholder="Filter tags" aria-label="Filter tags" accesskey="f";
            }
        }
        p.summary {
            (summary.tags) " tags · " (summary.manifests) " manifests · " (view::bytes(summary.bytes))
            @if let Some(t) = summary.last_push { " · last push " (view::when(t)) }
            " · "
            @if show_imgpkg { a href=(base) { "hide imgpkg's own tags" } } @else { a href={ (base) "?imgpkg=1" } { "show imgpkg's own tags" } }
        }
        @if let Some(t) = deleted { p.notice role="status" { "Tag " code { (t) } " deleted." } }
        div id="results" {
            @if shown.is_empty() {
                p.empty { @if p.q.is_empty() { "No tags: this repository holds only untagged manifests." } @else { "No tag matches “" (p.q) "”." } }
            } @else {
                table.list.tags {
                    thead { tr {
                        th { "Tag" } th { "Digest" } th { "Type" } th { "Platforms" } th.num { "Size" } th { "Pushed" } th { "Pull" }
                        @if may_delete { th { span.sr { "Actions" } } }
                    } }
                    tbody {
                        @for (row, plats, bundle) in &shown {
                            (tag_row(viewer, repo, row, plats, *bundle, may_delete, c))
                        }
                    }
                }
            }
            @if let Some(next) = next { p.pager { a href=(next) rel="next" { "Next page →" } } }
        }
    };
    Ok(viewer.render(repo.as_str(), Nav::Repositories, body))
}

fn tag_row(
    viewer: &Viewer,
    repo: &RepoName,
    row: &TagRow,
    plats: &[String],
    bundle: bool,
    may_delete: bool,
    c: &Console,
) -> Markup {
    let digest = &row.record.digest;
    let delete_action = format!("{}/-/tags/{}/delete", repo_href(repo.as_str()), row.tag);
    html! {
        tr data-tag=(row.tag) {
            td.tag { a href=(manifest_href(repo.as_str(), digest)) { (row.tag) } }
            td { a.digest href=(manifest_href(repo.as_str(), digest)) title=(digest) { code { (view::short(&digest.to_string())) } } }
            td { (type_cell(&row.record, bundle)) }
            td.platforms { @for p in plats { span.platform { (p) } " " } }
            td.num { (view::bytes(pull_size(c, repo, &row.record))) }
            td { (view::when(row.at)) }
            td { details { summary { "Pull" } (pull_commands(viewer, repo.as_str(), &format!(":{}", row.tag), bundle)) } }
            @if may_delete {
                td {
                    form.inline method="post" action=(delete_action)
                        data-confirm={ "Delete tag " (row.tag) " from " (repo.as_str()) "? The manifest stays, reachable by digest, until garbage collection." } {
                        (view::csrf_field(viewer))
                        button.danger type="submit" { "Delete" }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn console_paths_parse() {
        assert!(matches!(target("a/b"), Ok(Target::Repo(r)) if r.as_str() == "a/b"));
        let d = format!("sha256:{}", "0".repeat(64));
        assert!(
            matches!(target(&format!("a/b/-/manifests/{d}")), Ok(Target::Manifest(r, _)) if r.as_str() == "a/b")
        );
        assert!(
            matches!(target("a/-/tags/v1/delete"), Ok(Target::DeleteTag(r, t)) if r.as_str() == "a" && t.as_str() == "v1")
        );
        assert!(target("a/-/tags/v1").is_err());
        assert!(target("A").is_err());
        assert!(target("a/-/manifests/sha256:zz").is_err());
    }

    #[test]
    fn platforms_of_an_index() {
        let idx = br#"{"manifests":[{"digest":"sha256:a","platform":{"os":"linux","architecture":"arm64","variant":"v8"}},{"digest":"sha256:b","platform":{"os":"linux","architecture":"amd64"}},{"digest":"sha256:c"}]}"#;
        let p = platforms(idx);
        assert_eq!(p[0].1, "linux/arm64/v8");
        assert_eq!(p[1].1, "linux/amd64");
        assert_eq!(p[2].1, "");
        assert!(platforms(b"nope").is_empty());
    }
}
