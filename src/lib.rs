//! airdock: an OCI Distribution registry on a local disk store, as a library so that the
//! binary and the tests start exactly the same server.

pub mod admin;
pub mod archive;
pub mod auth;
pub mod backend;
pub mod cli;
pub mod config;
pub mod error;
pub mod export_cli;
pub mod forwarded;
pub mod health;
pub mod health_cli;
pub mod http;
pub mod imgpkg;
pub mod import_cli;
#[cfg(test)]
mod layering;
pub mod limits;
pub mod metrics;
pub mod observe;
pub mod rules;
pub mod server;
pub mod sys;
pub mod tls;
pub mod ui;
pub mod user_cli;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::http::HeaderValue;
use axum::routing::{any, get};
use axum::Router;
use tokio::net::TcpListener;

pub use airdock_storage as storage;
use airdock_storage::{GcOptions, Store};

/// Everything a request needs. Cheap to clone: the store is one `Arc`.
#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    /// Accept manifests whose blobs or children are absent (platform-filtered mirrors).
    pub sparse: bool,
    /// Announced as `OCI-Chunk-Min-Length` when set.
    pub chunk_min: Option<u64>,
    /// Authentication and rights; `None` is anonymous full access.
    pub auth: Option<Arc<auth::Auth>>,
    /// Body stall timeout and upload concurrency.
    pub limiter: limits::Limiter,
    /// The admin API's token; without it (and without authentication) `/admin/*` is off.
    pub admin_token: Option<auth::admin_token::AdminToken>,
    /// Blob DELETE removes blobs manifests still reference (else 405 DENIED).
    pub allow_referenced_blob_delete: bool,
    /// Defaults of an online GC (`POST /admin/v1/gc` and the interval task).
    pub gc: GcOptions,
    /// Which peers' `Forwarded`/`X-Forwarded-*` headers are believed, and our own scheme.
    pub forwarding: forwarded::Forwarding,
    /// What `/readyz` checks, and its last verdict.
    pub readiness: health::Readiness,
    /// Who may read `/metrics` on the main port, and the state of its store counts.
    pub scrape: observe::Scrape,
}

impl AppState {
    /// A state with no authentication and default limits.
    pub fn new(store: Store, sparse: bool) -> AppState {
        // The console lists imgpkg bundles: the store keeps an index of them as they commit.
        store.index_config_label(imgpkg::manifest::BUNDLE_CONFIG_LABEL);
        AppState {
            readiness: health::Readiness::new(store.clone(), health::DEFAULT_MIN_FREE_MIB),
            store,
            sparse,
            chunk_min: None,
            auth: None,
            limiter: limits::Limiter::default(),
            admin_token: None,
            allow_referenced_blob_delete: false,
            gc: GcOptions::default(),
            forwarding: forwarded::Forwarding::default(),
            scrape: observe::Scrape::default(),
        }
    }
}

/// The token endpoint and the auth layer see only the auth part of the state.
impl axum::extract::FromRef<AppState> for Option<Arc<auth::Auth>> {
    fn from_ref(state: &AppState) -> Self {
        state.auth.clone()
    }
}

/// The HTTP application: the `/v2/` API, the token endpoint, the auth layer in front of
/// `/v2/*` and `/admin/*`, and the common response headers.
pub fn app(state: AppState) -> Router {
    let gate = auth::Gate {
        auth: state.auth.clone(),
        admin: state.admin_token.clone(),
        metrics_anonymous: state.scrape.anonymous,
    };
    let limiter = state.limiter.clone();
    let forwarding = state.forwarding.clone();
    let store = state.store.clone();
    let console = ui::router(state.clone());
    let router = Router::new()
        .route("/v2", get(http::base).head(http::base))
        .route("/v2/", any(http::dispatch))
        .route("/v2/{*rest}", any(http::dispatch))
        // Behind the auth layer like `/v2`: it alone decides who may call them.
        .merge(admin::routes())
        // Probes: outside `/v2` and `/admin`, so no credential is ever asked of them.
        .route("/livez", get(health::livez))
        .route("/readyz", get(health::readyz))
        // Admins only unless `metrics.anonymous` (the auth layer decides, as for /admin).
        .route("/metrics", get(observe::scrape::metrics))
        // Registered even with auth off (it then answers 404): the router stays one shape.
        // POST answers 404 so that clients trying OAuth2 first fall back to GET.
        .route(
            "/token",
            get(auth::token_endpoint).post(|| async { axum::http::StatusCode::NOT_FOUND }),
        )
        // An explicit fallback so that the layers below also guard paths with no route
        // (the auth layer must refuse `/admin/*` before routing says 404). Both answer in
        // the spec's error format, like every other refusal.
        .fallback(|uri: axum::http::Uri| async move {
            error::RegistryError::NotFound(format!("no such endpoint: {}", uri.path()))
        })
        .method_not_allowed_fallback(|method: axum::http::Method| async move {
            error::RegistryError::Unsupported(format!("{method} is not allowed here"))
        })
        .with_state(state)
        // The web console: its own pages, rights checks and sessions, all under `/ui/`.
        .merge(console);
    router
        // Innermost: after the auth layer refused what it refuses, before any handler reads.
        .layer(axum::middleware::from_fn_with_state(store, catch_up))
        .layer(axum::middleware::from_fn_with_state(limiter, limits::layer))
        .layer(axum::middleware::from_fn_with_state(gate, auth::layer))
        .layer(axum::middleware::map_response(add_api_version))
        // One span and one response line per request at debug level (RUST_LOG=debug).
        .layer(tower_http::trace::TraceLayer::new_for_http().make_span_with(request_span))
        // Request id, access and audit lines, request metrics: outside the layers that
        // refuse, so that their answers are logged and counted like any other.
        .layer(axum::middleware::from_fn(observe::layer))
        // Outermost: the span, the auth layer and the handlers all see the resolved client.
        .layer(axum::middleware::from_fn_with_state(
            forwarding,
            forwarded::layer,
        ))
}

/// With the metadata in PostgreSQL (replicas), apply what other replicas committed before
/// a request that reads metadata is handled, so that no replica answers from a state older
/// than a write already acknowledged by another. Without a database (or for the probes and
/// `/metrics`, which read none) this costs nothing. A lost database answers 503 with
/// `Retry-After` here, before anything is read.
async fn catch_up(
    axum::extract::State(store): axum::extract::State<Store>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let path = req.uri().path();
    let reads = ["/v2", "/admin/", "/ui"]
        .iter()
        .any(|p| path.starts_with(p));
    if reads && store.metadata_is_shared() {
        if let Err(e) = store.sync().await {
            return axum::response::IntoResponse::into_response(error::RegistryError::Store(e));
        }
    }
    next.run(req).await
}

/// The request span names the client (behind a trusted proxy: the proxy's client).
fn request_span(req: &axum::http::Request<axum::body::Body>) -> tracing::Span {
    let client = req
        .extensions()
        .get::<forwarded::Client>()
        .and_then(|c| c.ip);
    tracing::debug_span!(
        "request",
        method = %req.method(),
        uri = %req.uri(),
        version = ?req.version(),
        client = ?client,
    )
}

async fn add_api_version(mut resp: axum::response::Response) -> axum::response::Response {
    resp.headers_mut()
        .insert(http::API_VERSION, HeaderValue::from_static("registry/2.0"));
    resp
}

/// How long in-flight requests may run on after a shutdown signal.
pub const DRAIN: Duration = Duration::from_secs(30);

/// Serve `router` on `listener` until `shutdown` resolves, then stop accepting and let
/// in-flight requests finish for at most [`DRAIN`].
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    server::serve_with(listener, router, shutdown, server::ServeOptions::default()).await
}
