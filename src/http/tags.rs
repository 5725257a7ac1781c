//! `GET /v2/<name>/tags/list[?n=&last=]`: tags in lexical order, paginated with `Link`.

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use airdock_storage::RepoName;

use super::{next_link, set, Req, Result};
use crate::AppState;

pub fn list(state: &AppState, repo: &RepoName, req: &Req) -> Result<Response> {
    let n = req.query.page_size()?;
    let page = state.store.tags(repo, req.query.get("last"), n)?;
    let body = json!({"name": repo.as_str(), "tags": page.items}).to_string();
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
                next_link(&format!("/v2/{repo}/tags/list"), n, last),
            );
        }
    }
    Ok(resp)
}
