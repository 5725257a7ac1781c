//! A manifest's page (`/ui/repositories/<name>/-/manifests/<digest>`): what it is, its tags,
//! the pull commands, its config and layers (an image) or children with platforms (an
//! index), the referrers that name it (signatures, SBOMs) and its JSON as stored.

use tokio::io::AsyncReadExt;

use axum::response::Response;
use maud::{html, Markup};
use serde::Deserialize;

use airdock_storage::{Digest, ManifestRecord, Reference, RepoName};

use super::repos::{manifest_href, platforms, pull_commands, pull_size, repo_href, type_cell};
use super::view::{self, Nav};
use super::{Console, UiError, Viewer};

/// Configs larger than this are not shown (nor read for labels): real ones are a few KiB.
const MAX_CONFIG: u64 = 1 << 20;

#[derive(Deserialize)]
struct Desc {
    #[serde(rename = "mediaType", default)]
    media_type: String,
    digest: String,
    #[serde(default)]
    size: u64,
}

/// The parts of an image manifest the page shows, in the manifest's order.
#[derive(Deserialize)]
struct Image {
    config: Option<Desc>,
    #[serde(default)]
    layers: Vec<Desc>,
}

/// The layer digests of an image manifest's bytes, in order.
pub fn layers_of(bytes: &[u8]) -> Vec<Digest> {
    serde_json::from_slice::<Image>(bytes)
        .map(|i| {
            i.layers
                .iter()
                .filter_map(|l| Digest::parse(&l.digest).ok())
                .collect()
        })
        .unwrap_or_default()
}

/// The bytes of a blob `repo` holds, up to `max` (`None` when absent or larger).
pub async fn small_blob(c: &Console, repo: &RepoName, d: &Digest, max: u64) -> Option<Vec<u8>> {
    let (file, len) = c.app.store.open_blob(repo, d).await.ok()?;
    if len > max {
        return None;
    }
    let mut out = Vec::with_capacity(len as usize);
    file.take(max).read_to_end(&mut out).await.ok().map(|_| out)
}

/// Whether `record` of `repo` is an imgpkg bundle (its config carries imgpkg's label): the
/// store found out when the manifest was committed (`Store::index_config_label`).
pub async fn is_bundle(c: &Console, repo: &RepoName, record: &ManifestRecord) -> bool {
    c.app.store.is_labelled(repo, &record.digest).await
}

/// The refusal for a manifest digest `repo` does not hold.
pub fn no_manifest(repo: &RepoName, digest: &Digest) -> UiError {
    UiError::NotFound(format!("{repo} holds no manifest {digest}"))
}

pub async fn page(
    c: &Console,
    viewer: &Viewer,
    repo: &RepoName,
    digest: &Digest,
) -> Result<Response, UiError> {
    let m = c
        .app
        .store
        .get_manifest(repo, &Reference::Digest(digest.clone()))
        .await
        .map_err(|_| no_manifest(repo, digest))?;
    let record = &m.record;
    let text = String::from_utf8_lossy(&m.bytes);
    let tags = c.app.store.tags_of(repo, digest);
    let bundle = is_bundle(c, repo, record).await;
    let referrers = c.app.store.referrers(repo, digest, None).await;
    // A person's tag rather than imgpkg's `sha256-….imgpkg` where there is one.
    let reference = match tags
        .iter()
        .find(|t| !crate::imgpkg::names::is_imgpkg_tag(t))
        .or(tags.first())
    {
        Some(t) => format!(":{t}"),
        None => format!("@{digest}"),
    };
    let image: Option<Image> = (!record.is_index())
        .then(|| serde_json::from_slice(&m.bytes).ok())
        .flatten();
    let config = match image.as_ref().and_then(|i| i.config.as_ref()) {
        Some(d) => match Digest::parse(&d.digest) {
            Ok(cd) => small_blob(c, repo, &cd, MAX_CONFIG)
                .await
                .map(|b| view::pretty_json(&String::from_utf8_lossy(&b))),
            Err(_) => None,
        },
        None => None,
    };
    let children: Vec<(String, String, Option<std::sync::Arc<ManifestRecord>>)> =
        if record.is_index() {
            platforms(&m.bytes)
                .into_iter()
                .map(|(d, p)| {
                    let rec = Digest::parse(&d)
                        .ok()
                        .and_then(|d| c.app.store.stat_manifest(repo, &Reference::Digest(d)).ok());
                    (d, p, rec)
                })
                .collect()
        } else {
            Vec::new()
        };
    let body = html! {
        nav.crumbs { a href="/ui/" { "Repositories" } " / " a href=(repo_href(repo.as_str())) { (repo.as_str()) } " / " }
        h1.digest { (view::short(&digest.to_string())) }
        dl.facts {
            dt { "Digest" } dd { (view::copyable(&digest.to_string())) }
            dt { "Type" } dd { (type_cell(record, bundle)) br; small.muted { (record.media_type.as_str()) } }
            dt { "Size" } dd { (view::bytes(pull_size(c, repo, record))) " to pull · manifest " (view::bytes(record.size)) }
            dt { "Tags" } dd { @if tags.is_empty() { span.muted { "none (untagged)" } } @for t in &tags { span.badge { (t) } " " } }
            @if bundle {
                dt { "Bundle" } dd { a href=(super::bundles::bundle_href(repo.as_str(), digest)) { "its images.yml, each image present or missing" } }
            }
            @if let Some(s) = &record.subject {
                dt { "Refers to" } dd { a href=(manifest_href(repo.as_str(), s)) { code { (s) } } }
            }
        }
        h2 { "Pull" }
        (pull_commands(viewer, repo.as_str(), &reference, bundle))
        @if record.is_index() {
            h2 { "Platforms" }
            table.list {
                thead { tr { th { "Platform" } th { "Digest" } th { "Type" } th.num { "Size" } } }
                tbody {
                    @for (d, p, rec) in &children {
                        tr {
                            td { @if p.is_empty() { span.muted { "unspecified" } } @else { span.platform { (p) } } }
                            @match rec {
                                Some(r) => {
                                    td { a href=(manifest_href(repo.as_str(), &r.digest)) { code { (view::short(d)) } } }
                                    td { (view::kind(r.media_type.as_str())) }
                                    td.num { (view::bytes(pull_size(c, repo, r))) }
                                }
                                None => {
                                    td { code { (view::short(d)) } }
                                    td colspan="2" { span.muted { "not in this repository" } }
                                }
                            }
                        }
                    }
                }
            }
        }
        @if let Some(img) = &image {
            @if let Some(cfg) = &img.config {
                h2 { "Config" }
                p { code { (view::short(&cfg.digest)) } " · " (cfg.media_type) " · " (view::bytes(cfg.size)) }
                @if let Some(json) = &config { details { summary { "Show the config" } pre.json { (json) } } }
            }
            h2 { "Layers" }
            @if img.layers.is_empty() { p.muted { "No layers." } } @else {
                table.list {
                    thead { tr { th.num { "#" } th { "Digest" } th { "Media type" } th.num { "Size" } } }
                    tbody {
                        @for (i, l) in img.layers.iter().enumerate() {
                            tr { td.num { (i + 1) } td { code title=(l.digest) { (view::short(&l.digest)) } } td { (l.media_type) } td.num { (view::bytes(l.size)) } }
                        }
                    }
                    tfoot { tr { td {} td { "Total" } td {} td.num { (view::bytes(img.layers.iter().fold(0u64, |a, l| a.saturating_add(l.size)))) } } }
                }
            }
        }
        h2 { "Referrers" }
        @if referrers.is_empty() { p.muted { "Nothing refers to this manifest (no signatures, SBOMs or attestations)." } } @else {
            table.list {
                thead { tr { th { "Artifact type" } th { "Digest" } th.num { "Size" } th { "Created" } } }
                tbody {
                    @for r in &referrers {
                        tr {
                            td { (referrer_type(&r.record)) }
                            td { a href=(manifest_href(repo.as_str(), &r.record.digest)) { code { (view::short(&r.record.digest.to_string())) } } }
                            td.num { (view::bytes(pull_size(c, repo, &r.record))) }
                            td { (r.annotations.as_ref().and_then(|a| a.get("org.opencontainers.image.created")).and_then(|v| v.as_str()).unwrap_or("")) }
                        }
                    }
                }
            }
        }
        h2 { "Manifest" }
        pre.json { (view::pretty_json(&text)) }
    };
    Ok(viewer.render(
        &format!("{repo}@{}", view::short(&digest.to_string())),
        Nav::Repositories,
        body,
    ))
}

fn referrer_type(r: &ManifestRecord) -> Markup {
    html! {
        @match &r.artifact_type {
            Some(a) => (a.as_str()),
            None => span.muted { (view::kind(r.media_type.as_str())) },
        }
    }
}
