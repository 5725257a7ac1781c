//! `POST /admin/v1/gc`: an online garbage collection with the server's defaults, which the
//! query may override for one run. The console's Storage page runs GC through the same two
//! functions (`options`, `run`), so both read the same overrides and count the same metrics.

use airdock_storage::{GcOptions, GcReport};
use axum::extract::{Request, State};
use axum::response::Response;

use super::json;
use crate::config::parse_duration;
use crate::error::{code, RegistryError};
use crate::http::Query;
use crate::AppState;

/// The server's GC defaults with the overrides `q` gives: `dry_run`, `delete_untagged`
/// (`""`, `1`, `true`, `yes` mean yes) and `grace` (a duration such as `10m`).
pub fn options(state: &AppState, q: &Query) -> Result<GcOptions, RegistryError> {
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
    Ok(opts)
}

/// One GC run with `opts`, counted in the metrics.
pub async fn run(state: &AppState, opts: &GcOptions) -> Result<GcReport, RegistryError> {
    let report = state.store.gc(opts).await;
    crate::metrics::get().gc(&report);
    Ok(report?)
}

/// `POST /admin/v1/gc[?dry_run=true][&delete_untagged=true][&grace=10m]` → 200 with the
/// JSON report of what was freed. Defaults come from the server's flags.
pub async fn gc(State(state): State<AppState>, req: Request) -> Result<Response, RegistryError> {
    let q = Query::parse(req.uri().query());
    let opts = options(&state, &q)?;
    json(&run(&state, &opts).await?)
}
