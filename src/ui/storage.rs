//! The Storage page (`/ui/storage`): what the store and each repository use (unique and
//! shared bytes, the code behind `GET /admin/v1/usage`), and garbage collection: a dry run
//! (what would be freed, what the grace window holds back) and a run, by POST to
//! `/ui/storage/gc`. Admin work, as the admin API's usage and GC are; GC runs through the
//! admin API's own `admin::gc::{options, run}`, with the server's defaults.

use axum::extract::{Request, State};
use axum::response::Response;
use maud::{html, Markup};

use airdock_storage::{GcReport, Usage, UsageOrder};

use super::repos::{repo_href, url_part};
use super::view::{self, Nav};
use super::{Console, UiError, Viewer};
use crate::http::Query;

const PAGE: usize = 50;
const PAGE_MAX: usize = 500;
/// Deleted manifests listed by name in a report (the count is always whole).
const LISTED: usize = 100;

/// How the per-repository table is ordered.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Sort {
    Name,
    /// Largest first; paged by position (`from`), since sizes are not unique.
    Size,
}

/// `GET /ui/storage[?q=&sort=name|size&after=&from=&n=]`.
pub async fn page(State(c): State<Console>, req: Request) -> Result<Response, UiError> {
    let (parts, _) = req.into_parts();
    let viewer = c.viewer(&parts).await?;
    viewer.require_admin("/ui/storage", "the storage page")?;
    let q = Query::parse(parts.uri.query());
    render(&c, &viewer, &q, None).await
}

/// `POST /ui/storage/gc?dry_run=1|0` with `_csrf` and optionally `delete_untagged`: one GC,
/// then the page with its report.
pub async fn gc(State(c): State<Console>, req: Request) -> Result<Response, UiError> {
    let (parts, body) = req.into_parts();
    let viewer = c.viewer(&parts).await?;
    let result = run_gc(&c, &viewer, &parts, body).await;
    Ok(viewer.answer(result))
}

/// The run itself; refusals become the answer `gc` attributes to the viewer.
async fn run_gc(
    c: &Console,
    viewer: &Viewer,
    parts: &axum::http::request::Parts,
    body: axum::body::Body,
) -> Result<Response, UiError> {
    let form = c.checked_form(viewer, body).await?;
    // The server decides, whatever the page showed.
    if let Err(e) = viewer.require_admin("/ui/storage", "garbage collection") {
        tracing::info!(user = ?viewer.user, "console GC refused");
        return Err(e);
    }
    // The form's fields are the admin API's query parameters (dry_run, delete_untagged).
    let encoded: String = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(form.iter().filter(|(k, _)| k != "_csrf"))
        .finish();
    let fields = Query::parse(Some(&encoded));
    let mut opts = crate::admin::gc::options(&c.app, &fields)?;
    // `dry_run` is in the URL, so that the audit line says which it was; only an explicit
    // "no" runs for real.
    opts.dry_run = Query::parse(parts.uri.query()).get("dry_run") != Some("0");
    // An unticked box sends nothing: absent means no, not the server's default.
    opts.delete_untagged = fields.get("delete_untagged").is_some();
    let report = crate::admin::gc::run(&c.app, &opts).await?;
    tracing::info!(
        user = ?viewer.user, dry_run = report.dry_run, blobs = report.blobs_deleted,
        bytes = report.bytes_freed, manifests = report.manifests_deleted.len(),
        "garbage collection from the console"
    );
    render(c, viewer, &Query::default(), Some(&report)).await
}

async fn render(
    c: &Console,
    viewer: &Viewer,
    q: &Query,
    report: Option<&GcReport>,
) -> Result<Response, UiError> {
    let n = q
        .get("n")
        .and_then(|v| v.parse::<usize>().ok())
        .map_or(PAGE, |n| n.clamp(1, PAGE_MAX));
    let filter = q.get("q").unwrap_or("").trim();
    let sort = match q.get("sort") {
        Some("size") => Sort::Size,
        _ => Sort::Name,
    };
    // The store keeps the sums current as commits apply: a page copies only its rows.
    let after = q.get("after").filter(|a| !a.is_empty());
    let from = q
        .get("from")
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(0);
    let order = match sort {
        Sort::Name => UsageOrder::Name { after },
        Sort::Size => UsageOrder::Size { from },
    };
    let page = c.app.store.usage_page(filter, order, n).await?;
    let totals = Totals::of(&page.totals);
    let matching = page.matching;
    let rows = &page.rows;
    let next = page.more.then(|| match sort {
        Sort::Name => format!(
            "/ui/storage?q={}&sort=name&n={n}&after={}",
            url_part(filter),
            url_part(rows.last().map_or("", |l| l.name.as_str()))
        ),
        Sort::Size => format!(
            "/ui/storage?q={}&sort=size&n={n}&from={}",
            url_part(filter),
            from.saturating_add(rows.len())
        ),
    });
    let sort_link = |s: Sort, label: &str| {
        let key = if s == Sort::Size { "size" } else { "name" };
        html! {
            @if s == sort { strong { (label) } }
            @else { a href={ "/ui/storage?q=" (url_part(filter)) "&sort=" (key) } { (label) } }
        }
    };
    let gc = &c.app.gc;
    let body = html! {
        div.heading {
            h1 { "Storage" }
            form.filter method="get" action="/ui/storage" role="search" {
                @if sort == Sort::Size { input type="hidden" name="sort" value="size"; }
                input type="search" name="q" value=(filter) placeholder="Filter repositories" aria-label="Filter repositories by name" accesskey="f";
            }
        }
        dl.facts.totals {
            dt { "Stored" } dd.total-bytes { strong { (view::bytes(totals.bytes)) } " (" (totals.bytes) " bytes)" }
            dt { "Blobs" } dd.total-blobs { (totals.blobs) }
            dt { "Manifests" } dd.total-manifests { (totals.manifests) }
            dt { "Repositories" } dd.total-repos { (totals.repos) }
        }
        section.gc {
            h2 { "Garbage collection" }
            p.muted {
                "Frees blobs no manifest references, after a grace window of " (view::span(gc.grace.as_secs()))
                " (newer files are held back: a push may be about to reference them)."
                @if !gc.retention.is_empty() { " Retention rules: " (gc.retention.len()) "." }
            }
            form.inline method="post" action="/ui/storage/gc?dry_run=1" {
                (view::csrf_field(viewer))
                label.check { input type="checkbox" name="delete_untagged" value="1" checked[gc.delete_untagged]; " delete untagged manifests" }
                " "
                button.primary type="submit" id="gc-dry-run" { "Dry run" }
            }
            " "
            form.inline method="post" action="/ui/storage/gc?dry_run=0"
                data-confirm="Run garbage collection now? Blobs nothing references (outside the grace window) are deleted for good." {
                (view::csrf_field(viewer))
                @if gc.delete_untagged { input type="hidden" name="delete_untagged" value="1"; }
                button.danger type="submit" id="gc-run" { "Run GC" }
            }
            @if let Some(r) = report { (report_view(r)) }
        }
        h2 { "By repository" }
        p.muted {
            (matching) " repositor" (if matching == 1 { "y" } else { "ies" })
            @if !filter.is_empty() { " matching “" (filter) "”" }
            " · sort by " (sort_link(Sort::Name, "name")) " · " (sort_link(Sort::Size, "size"))
            ". Unique bytes are what deleting the repository would free; shared bytes are blobs other repositories use too."
        }
        @if rows.is_empty() {
            p.empty { "No repositories." }
        } @else {
            table.list.usage {
                thead { tr {
                    th { "Repository" } th.num { "Size" } th.num { "Unique" } th.num { "Shared" }
                    th.num { "Blobs" } th.num { "Manifests" } th.num { "Tags" }
                } }
                tbody {
                    @for r in rows {
                        tr data-repo=(r.name) {
                            td.wrap { a href=(repo_href(&r.name)) { (r.name) } }
                            td.num.bytes data-bytes=(r.bytes) { (view::bytes(r.bytes)) }
                            td.num.unique data-bytes=(r.unique_bytes) { (view::bytes(r.unique_bytes)) }
                            td.num.shared data-bytes=(r.shared_bytes) { (view::bytes(r.shared_bytes)) }
                            td.num { (r.blobs) }
                            td.num { (r.manifests) }
                            td.num { (r.tags) }
                        }
                    }
                }
            }
        }
        @if let Some(next) = next { p.pager { a href=(next) rel="next" { "Next page →" } } }
    };
    Ok(viewer.render("Storage", Nav::Storage, body))
}

/// The store's totals, taken before the page is filtered.
struct Totals {
    bytes: u64,
    blobs: u64,
    manifests: u64,
    repos: u64,
}

impl Totals {
    fn of(u: &Usage) -> Totals {
        Totals {
            bytes: u.bytes,
            blobs: u.blobs,
            manifests: u.manifests,
            repos: u.repositories,
        }
    }
}

fn report_view(r: &GcReport) -> Markup {
    let verb = if r.dry_run { "would free" } else { "freed" };
    html! {
        div.gc-report role="status" data-dry-run=(r.dry_run) {
            h3 { @if r.dry_run { "Dry run: nothing was changed" } @else { "Garbage collection done" } }
            dl.facts {
                dt { "Bytes " (verb) } dd.freed { strong { (view::bytes(r.bytes_freed)) } " (" (r.bytes_freed) " bytes)" }
                dt { "Blobs " @if r.dry_run { "to delete" } @else { "deleted" } } dd.blobs-deleted { (r.blobs_deleted) }
                dt { "Blobs kept" } dd { (r.blobs_kept) }
                dt { "Manifests " @if r.dry_run { "to delete" } @else { "deleted" } } dd { (r.manifests_deleted.len()) }
                @if !r.tags_dropped.is_empty() { dt { "Tags dropped by retention" } dd { (r.tags_dropped.len()) } }
                dt { "Held back by the grace window" } dd.held-back {
                    (r.held_back.blobs) (if r.held_back.blobs == 1 { " blob, " } else { " blobs, " }) (view::bytes(r.held_back.bytes))
                    @if let (Some(a), Some(b)) = (&r.held_back.earliest_collectable, &r.held_back.latest_collectable) {
                        " (collectable from " (a.replace('T', " ")) " to " (b.replace('T', " ")) ")"
                    }
                }
                @if r.uploads_expired > 0 { dt { "Upload sessions expired" } dd { (r.uploads_expired) } }
                dt { "Took" } dd { (r.elapsed_ms) " ms" }
            }
            @if !r.manifests_deleted.is_empty() {
                details {
                    summary { "Manifests " @if r.dry_run { "to delete" } @else { "deleted" } }
                    ul.plain {
                        @for m in r.manifests_deleted.iter().take(LISTED) { li { (m.repo.as_str()) "@" code { (m.digest) } } }
                        @if r.manifests_deleted.len() > LISTED { li.muted { "and " (r.manifests_deleted.len() - LISTED) " more" } }
                    }
                }
            }
        }
    }
}
