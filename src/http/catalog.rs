//! `GET /v2/_catalog[?n=&last=]`: repository names in lexical order, paginated with `Link`.

use axum::response::Response;

use super::{paged, Req, Result};
use crate::AppState;

/// Without `n` a page holds this many names, so the catalog of a large registry is never
/// one giant response.
const DEFAULT_PAGE: usize = 1000;

pub fn list(state: &AppState, req: &Req) -> Result<Response> {
    let n = req.query.page_size()?.unwrap_or(DEFAULT_PAGE);
    let page = state.store.catalog(req.query.get("last"), Some(n));
    Ok(paged(
        "/v2/_catalog",
        serde_json::Map::new(),
        "repositories",
        page,
        Some(n),
    ))
}
