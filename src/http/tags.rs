//! `GET /v2/<name>/tags/list[?n=&last=]`: tags in lexical order, paginated with `Link`.

use axum::response::Response;
use serde_json::json;

use airdock_storage::RepoName;

use super::{paged, Req, Result};
use crate::AppState;

pub fn list(state: &AppState, repo: &RepoName, req: &Req) -> Result<Response> {
    let n = req.query.page_size()?;
    let page = state.store.tags(repo, req.query.get("last"), n)?;
    let mut body = serde_json::Map::new();
    body.insert("name".into(), json!(repo.as_str()));
    Ok(paged(
        &format!("/v2/{repo}/tags/list"),
        body,
        "tags",
        page,
        n,
    ))
}
