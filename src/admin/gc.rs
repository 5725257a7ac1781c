//! Storage administration over HTTP (`POST /admin/v1/gc`, `DELETE /admin/v1/repositories/
//! <name>`, `GET /admin/v1/imports`, `DELETE /admin/v1/imports/<id>`), their bearer-token
//! check, and the background tasks that run GC and expire upload sessions on a timer.

use std::time::Duration;

use axum::extract::{Path, Request, State};
use axum::http::{header, Extensions, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};

use airdock_storage::{GcOptions, RepoName, Store};

use crate::config::parse_duration;
use crate::error::{code, RegistryError};
use crate::http::{empty, Query};
use crate::AppState;

/// Admitted by the auth layer (a user with the admin right), or `Authorization: Bearer
/// <token>` with the admin token (`--admin-token`, or the one in `<data-dir>/admin-token`):
/// the same rule as `/admin/v1/import`. Without a token in the state these routes are off
/// (403), so an in-process setup never leaves them open.
pub fn authorize(
    state: &AppState,
    headers: &HeaderMap,
    extensions: &Extensions,
) -> Result<(), RegistryError> {
    let Some(token) = state.admin_token.as_ref() else {
        return Err(RegistryError::Forbidden(
            "the storage admin API is disabled in this server".into(),
        ));
    };
    if extensions.get::<crate::auth::Admitted>().is_some()
        || token.verify(headers.get(header::AUTHORIZATION).map(|v| v.as_bytes()))
    {
        Ok(())
    } else {
        Err(RegistryError::Unauthorized)
    }
}

/// `POST /admin/v1/gc[?dry_run=true][&delete_untagged=true][&grace=10m]` → 200 with the
/// JSON report of what was freed. Defaults come from the server's flags.
pub async fn gc(State(state): State<AppState>, req: Request) -> Result<Response, RegistryError> {
    authorize(&state, req.headers(), req.extensions())?;
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
    let report = state.store.gc(&opts).await?;
    json(&report)
}

fn json(value: &impl serde::Serialize) -> Result<Response, RegistryError> {
    let body = serde_json::to_string(value).map_err(|e| {
        RegistryError::Store(airdock_storage::StoreError::Io(std::io::Error::other(e)))
    })?;
    Ok((
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response())
}

/// `GET /admin/v1/imports[?repository=<name>]` → 200 with `{"imports":[…]}`, oldest first:
/// per import its id, repository, time and the manifests and tags it created.
pub async fn list_imports(
    State(state): State<AppState>,
    req: Request,
) -> Result<Response, RegistryError> {
    authorize(&state, req.headers(), req.extensions())?;
    let q = Query::parse(req.uri().query());
    let mut imports = state.store.imports();
    if let Some(r) = q.get("repository") {
        imports.retain(|i| i.repository.as_str() == r);
    }
    json(&serde_json::json!({ "imports": imports }))
}

/// `DELETE /admin/v1/imports/<id>` → 200 with what was removed: the tags the import set that
/// still point where it set them and no other import also set, and its manifests nothing kept
/// reaches any more. GC frees the bytes later.
pub async fn delete_import(
    State(state): State<AppState>,
    Path(id): Path<String>,
    req: Request,
) -> Result<Response, RegistryError> {
    authorize(&state, req.headers(), req.extensions())?;
    match state.store.remove_import(&id).await? {
        Some(removal) => json(&removal),
        None => Err(RegistryError::NotFound(format!("no import with id {id:?}"))),
    }
}

/// `DELETE /admin/v1/repositories/<name>` → 202: tags, manifests and links go in one
/// transaction, the repository leaves `_catalog`, GC frees the bytes later.
pub async fn delete_repo(
    State(state): State<AppState>,
    Path(name): Path<String>,
    req: Request,
) -> Result<Response, RegistryError> {
    authorize(&state, req.headers(), req.extensions())?;
    let repo = RepoName::parse(&name)?;
    state.store.delete_repo(&repo).await?;
    Ok(empty(StatusCode::ACCEPTED))
}

/// Start the timers: GC every `gc_interval` (if not zero) and upload expiry every so often
/// (if `gc.upload_ttl` is set). They run until the runtime stops.
pub fn spawn_background(store: Store, gc: GcOptions, gc_interval: Duration) {
    if !gc_interval.is_zero() {
        let store = store.clone();
        let opts = GcOptions {
            dry_run: false,
            ..gc.clone()
        };
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(gc_interval).await;
                if let Err(e) = store.gc(&opts).await {
                    tracing::error!(error = %e, "scheduled gc failed");
                }
            }
        });
    }
    if let Some(ttl) = gc.upload_ttl {
        // Often enough that a session lives at most ~1.25 × ttl, at most once a minute.
        let every = (ttl / 4).clamp(Duration::from_secs(1), Duration::from_secs(60));
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                match store.expire_uploads(ttl).await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(expired = n, "upload sessions expired"),
                    Err(e) => tracing::error!(error = %e, "expiring upload sessions failed"),
                }
            }
        });
    }
}
