//! `GET /v2/_catalog[?n=&last=]`: repository names in lexical order, paginated with `Link`.

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::{next_link, set, Req, Result};
use crate::AppState;

/// Without `n` a page holds this many names, so the catalog of a large registry is never
/// one giant response.
const DEFAULT_PAGE: usize = 1000;

pub fn list(state: &AppState, req: &Req) -> Result<Response> {
    let n = req.query.page_size()?.unwrap_or(DEFAULT_PAGE);
    let page = match req.extensions.get::<crate::auth::Visible>() {
        None => state.store.catalog(req.query.get("last"), Some(n)),
        // Only what the caller may pull: filter the whole list, then cut the page, so that
        // pages stay full and `Link` never points past a hidden name.
        Some(visible) => {
            let all = state.store.catalog(req.query.get("last"), None);
            let mut items: Vec<String> = all.items.into_iter().filter(|r| (visible.0)(r)).collect();
            let more = items.len() > n;
            items.truncate(n);
            airdock_storage::Page { items, more }
        }
    };
    let body = json!({"repositories": page.items}).to_string();
    let mut resp = (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response();
    if page.more {
        if let Some(last) = page.items.last() {
            set(
                &mut resp,
                header::LINK,
                next_link("/v2/_catalog", Some(n), last),
            );
        }
    }
    Ok(resp)
}
