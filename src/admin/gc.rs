//! `POST /admin/v1/gc`: an online garbage collection with the server's defaults, which the
//! query may override for one run.

use axum::extract::{Request, State};
use axum::response::Response;

use super::json;
use crate::config::parse_duration;
use crate::error::{code, RegistryError};
use crate::http::Query;
use crate::AppState;

/// `POST /admin/v1/gc[?dry_run=true][&delete_untagged=true][&grace=10m]` → 200 with the
/// JSON report of what was freed. Defaults come from the server's flags.
pub async fn gc(State(state): State<AppState>, req: Request) -> Result<Response, RegistryError> {
    let q = Query::parse(req.uri().query());
    let flag = |k: &str| q.get(k).map(|v| matches!(v, "" | "1" | "true" | "yes"));
    let mut opts = state.gc.clone();
    if let Some(v) = flag("dry_run") {
        opts.dry_run = v;
    }
    if let Some(v) = flag("delete_untagged") {
        opts.delete_untagged = v;
    }
    if let Some(g) = q.get("grace") {
        opts.grace =
            parse_duration(g).map_err(|e| RegistryError::BadRequest(code::UNSUPPORTED, e))?;
    }
    let report = state.store.gc(&opts).await;
    crate::metrics::get().gc(&report);
    json(&report?)
}
