//! `GET /admin/v1/usage`: what the store and each repository use on disk (unique and shared
//! bytes), from the metadata and file sizes alone.

use axum::extract::{Request, State};
use axum::http::header;
use axum::response::Response;

use super::json;
use crate::error::{code, RegistryError};
use crate::http::{next_link, set, Query};
use crate::AppState;

/// Without `n` a page holds this many repositories, as `_catalog` does.
const DEFAULT_PAGE: usize = 1000;

/// `GET /admin/v1/usage[?n=&last=]` → 200 with the totals and one page of repositories in
/// name order (`Link: <…?n=&last=>; rel="next"` when more follow), or `?top=N` → the N
/// repositories using the most bytes, largest first.
pub async fn usage(State(state): State<AppState>, req: Request) -> Result<Response, RegistryError> {
    let q = Query::parse(req.uri().query());
    let n = q.page_size()?;
    let top = match q.get("top") {
        None => None,
        Some(v) => Some(v.parse::<usize>().map_err(|_| {
            RegistryError::BadRequest(
                code::PAGINATION_NUMBER_INVALID,
                format!("top={v:?} is not a count: expected a whole number of repositories"),
            )
        })?),
    };
    if top.is_some() && (n.is_some() || q.get("last").is_some()) {
        return Err(RegistryError::BadRequest(
            code::UNSUPPORTED,
            "top= lists the largest repositories in one answer; it does not combine with n= or last=".into(),
        ));
    }
    let mut usage = state.store.usage().await?;
    let link = match top {
        Some(top) => {
            usage.top(top);
            None
        }
        None => {
            let n = n.unwrap_or(DEFAULT_PAGE);
            let more = usage.page(q.get("last"), Some(n));
            let last = usage.repos.last().map(|r| r.name.clone());
            last.filter(|_| more)
                .map(|l| next_link("/admin/v1/usage", Some(n), &l))
        }
    };
    let mut resp = json(&usage)?;
    if let Some(link) = link {
        set(&mut resp, header::LINK, link);
    }
    Ok(resp)
}
