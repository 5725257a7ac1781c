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
    let page = state.store.catalog(req.query.get("last"), Some(n));
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
