//! imgpkg bundles: the list (`/ui/bundles`: tagged images whose config carries the
//! `dev.carvel.imgpkg.bundle` label, in repositories the viewer may pull) and one bundle
//! (`/ui/repositories/<name>/-/bundles/<digest>`): its `.imgpkg/images.yml` entries, each
//! present or missing in the bundle's repository (where `imgpkg copy` puts every image),
//! nested bundles as a tree, its ImageLocations image and the `imgpkg pull -b` command.

use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;

use axum::extract::{Request, State};
use axum::response::Response;
use maud::{html, Markup};

use airdock_storage::{Digest, Reference, RepoName, Tag};

use super::manifest::{is_bundle, layers_of, no_manifest};
use super::repos::{manifest_href, pull_commands, repo_href};
use super::view::{self, Nav};
use super::{Console, UiError, Viewer};
use crate::http::Query;
use crate::imgpkg::bundle_layer;
use crate::imgpkg::names::is_imgpkg_tag;

/// Bundles per page of the list, and how deep nested bundles are followed.
const PAGE: usize = 50;
const MAX_DEPTH: usize = 8;

pub fn bundle_href(repo: &str, digest: &Digest) -> String {
    format!("/ui/repositories/{repo}/-/bundles/{digest}")
}

/// `GET /ui/bundles[?after=<repo>]`: bundles of whole repositories, in name order, until a
/// page has at least [`PAGE`] of them. The store indexes bundles as their manifests commit,
/// so a page reads no config and sees every repository.
pub async fn list(State(c): State<Console>, req: Request) -> Result<Response, UiError> {
    let (parts, _) = req.into_parts();
    let viewer = c.viewer(&parts).await?;
    if viewer.must_sign_in() {
        return Err(UiError::SignIn("/ui/bundles".into()));
    }
    let q = Query::parse(parts.uri.query());
    let after = q.get("after").filter(|a| !a.is_empty());
    let (found, more) = c
        .app
        .store
        .labelled_rows(after, PAGE, &|r| viewer.rights(r).pull, &is_imgpkg_tag)
        .await;
    let last_repo = found.last().map(|(r, _)| r.to_string());
    let body = html! {
        h1 { "Bundles" }
        p.muted { "imgpkg bundles (images whose config carries the " code { "dev.carvel.imgpkg.bundle" } " label), by tag." }
        @if found.is_empty() && !more {
            p.empty { "No bundles here yet. Import one with " code { "imgpkg copy --to-tar" } " and the Upload page, or push one with " code { "imgpkg push -b" } "." }
        } @else {
            table.list {
                thead { tr { th { "Repository" } th { "Tag" } th { "Digest" } th { "Pushed" } th { "Pull" } } }
                tbody {
                    @for (repo, row) in &found {
                        tr data-bundle=(format!("{}:{}", repo, row.tag)) {
                            td { a href=(repo_href(repo.as_str())) { (repo.as_str()) } }
                            td { a href=(bundle_href(repo.as_str(), &row.record.digest)) { (row.tag) } }
                            td { code { (view::short(&row.record.digest.to_string())) } }
                            td { (view::when(row.at)) }
                            td { (view::copyable(&format!("imgpkg pull -b {}/{}:{} -o ./bundle", viewer.host, repo, row.tag))) }
                        }
                    }
                }
            }
        }
        @if let (true, Some(last)) = (more, &last_repo) {
            p.pager { a href={ "/ui/bundles?after=" (form_urlencoded::byte_serialize(last.as_bytes()).collect::<String>()) } rel="next" { "Next page →" } }
        }
    };
    Ok(viewer.render("Bundles", Nav::Bundles, body))
}

/// One bundle and what its lock file names.
struct Node {
    /// The entries, or why the lock could not be read.
    lock: Result<Vec<Entry>, String>,
}

struct Entry {
    /// The reference as `images.yml` has it.
    image: String,
    digest: Digest,
    present: bool,
    /// Media type of the manifest when present.
    kind: Option<String>,
    /// A nested bundle, followed.
    nested: Option<Node>,
}

type Boxed<'a> = Pin<Box<dyn Future<Output = Node> + Send + 'a>>;

/// Read the lock of bundle `digest` in `repo` and follow nested bundles (each once, at most
/// [`MAX_DEPTH`] deep).
fn load<'a>(
    c: &'a Console,
    repo: &'a RepoName,
    digest: Digest,
    depth: usize,
    seen: &'a mut HashSet<Digest>,
) -> Boxed<'a> {
    Box::pin(async move {
        seen.insert(digest.clone());
        let lock = match read_lock(c, repo, &digest).await {
            Ok(lock) => lock,
            Err(e) => return Node { lock: Err(e) },
        };
        let mut entries = Vec::new();
        for img in lock.images {
            let d = img.image.digest.clone();
            let record = c
                .app
                .store
                .stat_manifest(repo, &Reference::Digest(d.clone()))
                .ok();
            let mut nested = None;
            if let Some(r) = &record {
                if depth < MAX_DEPTH && !seen.contains(&d) && is_bundle(c, repo, r).await {
                    nested = Some(load(c, repo, d.clone(), depth + 1, seen).await);
                }
            }
            entries.push(Entry {
                image: img.image.name(),
                present: record.is_some(),
                kind: record.map(|r| view::kind(r.media_type.as_str()).to_owned()),
                digest: d,
                nested,
            });
        }
        Node { lock: Ok(entries) }
    })
}

/// The bundle's `.imgpkg/images.yml`, from its one layer, which `repo` must hold.
async fn read_lock(
    c: &Console,
    repo: &RepoName,
    digest: &Digest,
) -> Result<crate::imgpkg::lock::ImagesLock, String> {
    let m = c
        .app
        .store
        .get_manifest(repo, &Reference::Digest(digest.clone()))
        .await
        .map_err(|e| e.to_string())?;
    let layers = layers_of(&m.bytes);
    let [layer] = layers.as_slice() else {
        return Err("a bundle has exactly one layer; this one has not".into());
    };
    if !c.app.store.repo_has_blob(repo, layer) {
        return Err(format!("the bundle layer {layer} is not in {repo}"));
    }
    let file = c
        .app
        .store
        .open_stored_blob(layer)
        .await
        .map_err(|e| format!("reading the bundle layer: {e}"))?;
    bundle_layer::images_lock(file).await
}

fn tree(repo: &str, node: &Node) -> Markup {
    html! {
        @match &node.lock {
            Err(e) => p.error { (e) },
            Ok(entries) => {
                ul.tree {
                    @for e in entries {
                        li data-present=(e.present) {
                            @if e.present {
                                span.present title="present in this registry" { "✓ present" }
                            } @else {
                                span.missing title="not in this registry" { "✗ missing" }
                            }
                            " "
                            @if e.present {
                                a href=(manifest_href(repo, &e.digest)) { code { (view::short(&e.digest.to_string())) } }
                            } @else {
                                code { (view::short(&e.digest.to_string())) }
                            }
                            " " span.muted { (e.image) }
                            @if let Some(k) = &e.kind { " " small.muted { "(" (k) ")" } }
                            @if let Some(n) = &e.nested {
                                " " span.badge { "bundle" }
                                (tree(repo, n))
                            }
                        }
                    }
                }
            }
        }
    }
}

fn count(node: &Node) -> (usize, usize) {
    match &node.lock {
        Err(_) => (0, 0),
        Ok(entries) => entries.iter().fold((0, 0), |(p, m), e| {
            let (np, nm) = e.nested.as_ref().map_or((0, 0), count);
            if e.present {
                (p + 1 + np, m + nm)
            } else {
                (p + np, m + 1 + nm)
            }
        }),
    }
}

/// `GET /ui/repositories/<name>/-/bundles/<digest>`.
pub async fn page(
    c: &Console,
    viewer: &Viewer,
    repo: &RepoName,
    digest: &Digest,
) -> Result<Response, UiError> {
    let record = c
        .app
        .store
        .stat_manifest(repo, &Reference::Digest(digest.clone()))
        .map_err(|_| no_manifest(repo, digest))?;
    if !is_bundle(c, repo, &record).await {
        return Err(UiError::NotFound(format!(
            "{digest} in {repo} is not an imgpkg bundle"
        )));
    }
    let tags: Vec<String> = c
        .app
        .store
        .tags_of(repo, digest)
        .into_iter()
        .filter(|t| !is_imgpkg_tag(t))
        .collect();
    let mut seen = HashSet::new();
    let node = load(c, repo, digest.clone(), 0, &mut seen).await;
    let (present, missing) = count(&node);
    // imgpkg writes the ImageLocations image under this tag when it copies a bundle.
    let locations = Tag::parse(&format!(
        "{}-{}.image-locations.imgpkg",
        digest.algorithm(),
        digest.hex()
    ))
    .ok()
    .and_then(|t| c.app.store.resolve_tag(repo, &t));
    let reference = match tags.first() {
        Some(t) => format!(":{t}"),
        None => format!("@{digest}"),
    };
    let body = html! {
        nav.crumbs { a href="/ui/bundles" { "Bundles" } " / " a href=(repo_href(repo.as_str())) { (repo.as_str()) } " / " }
        h1 { (repo.as_str()) (reference) }
        dl.facts {
            dt { "Digest" } dd { a href=(manifest_href(repo.as_str(), digest)) { code { (digest) } } }
            dt { "Tags" } dd { @if tags.is_empty() { span.muted { "none" } } @for t in &tags { span.badge { (t) } " " } }
            dt { "Images" } dd id="bundle-counts" { (present) " present · " (missing) " missing" }
            dt { "ImageLocations" } dd {
                @match &locations {
                    Some(l) => a href=(manifest_href(repo.as_str(), l)) { code { (view::short(&l.to_string())) } },
                    None => span.muted { "none (imgpkg then checks each image by digest)" },
                }
            }
        }
        h2 { "Pull" }
        (pull_commands(viewer, repo.as_str(), &reference, true))
        h2 { "images.yml" }
        (tree(repo.as_str(), &node))
    };
    Ok(viewer.render(&format!("bundle {repo}"), Nav::Bundles, body))
}
