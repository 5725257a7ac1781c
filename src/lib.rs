//! airdock: an OCI Distribution registry on a local disk store, as a library so that the
//! binary and the tests start exactly the same server.

pub mod admin;
pub mod admin_gc;
pub mod cli;
pub mod error;
pub mod http;
pub mod imgpkg;
pub mod import_cli;

use std::future::Future;
use std::time::Duration;

use axum::http::HeaderValue;
use axum::routing::{any, delete, get, post};
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
    /// Blob DELETE removes blobs manifests still reference (else 405 DENIED).
    pub allow_referenced_blob_delete: bool,
    /// The admin bearer token, as `/admin/v1/import` checks it; `None` disables the GC and
    /// repository-delete admin routes (the binary always sets it).
    pub admin_token: Option<admin::AdminToken>,
    /// Defaults of an online GC (`POST /admin/v1/gc` and the interval task).
    pub gc: GcOptions,
}

/// The HTTP application: the `/v2/` API plus the common response headers.
pub fn app(state: AppState) -> Router {
    Router::new()
        .route("/v2", get(http::base).head(http::base))
        .route("/v2/", any(http::dispatch))
        .route("/v2/{*rest}", any(http::dispatch))
        .route("/admin/v1/gc", post(admin_gc::gc))
        .route(
            "/admin/v1/repositories/{*name}",
            delete(admin_gc::delete_repo),
        )
        .with_state(state)
        .layer(axum::middleware::map_response(add_api_version))
        // One span and one response line per request at debug level (RUST_LOG=debug).
        .layer(tower_http::trace::TraceLayer::new_for_http())
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
    let (tx, rx) = tokio::sync::watch::channel(false);
    // No Nagle: a response is written as headers, then body chunks. With Nagle on, a second
    // small write waits for the client's delayed ACK, adding ~40 ms to small pulls.
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "could not set TCP_NODELAY");
        }
    });
    let server = axum::serve(listener, router).with_graceful_shutdown(async move {
        shutdown.await;
        let _ = tx.send(true);
    });
    let mut rx2 = rx.clone();
    let deadline = async move {
        let _ = rx2.wait_for(|v| *v).await;
        tokio::time::sleep(DRAIN).await;
    };
    tokio::select! {
        r = server => r,
        _ = deadline => {
            tracing::warn!("requests still running after {DRAIN:?}; exiting anyway");
            Ok(())
        }
    }
}
