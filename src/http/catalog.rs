//! `GET /v2/_catalog[?n=&last=]`: repository names in lexical order, paginated with `Link`;
//! with authentication on, only the names the caller may pull.

use std::sync::Arc;

use axum::response::Response;

use super::{paged, Req, Result};
use crate::AppState;

/// Without `n` a page holds this many names, so the catalog of a large registry is never
/// one giant response.
const DEFAULT_PAGE: usize = 1000;

/// The repositories the caller may pull; `_catalog` lists only these. The auth layer puts
/// it in the request extensions; without one (auth off) every name is listed.
#[derive(Clone)]
pub struct Visible(pub Arc<dyn Fn(&str) -> bool + Send + Sync>);

pub fn list(state: &AppState, req: &Req) -> Result<Response> {
    let n = req.query.page_size()?.unwrap_or(DEFAULT_PAGE);
    let page = match req.extensions.get::<Visible>() {
        None => state.store.catalog(req.query.get("last"), Some(n)),
        // Filter the whole list, then cut the page, so that pages stay full and `Link`
        // never points past a hidden name.
        Some(visible) => {
            let all = state.store.catalog(req.query.get("last"), None);
            let mut items: Vec<String> = all.items.into_iter().filter(|r| (visible.0)(r)).collect();
            let more = items.len() > n;
            items.truncate(n);
            airdock_storage::Page { items, more }
        }
    };
    Ok(paged(
        "/v2/_catalog",
        serde_json::Map::new(),
        "repositories",
        page,
        Some(n),
    ))
}
