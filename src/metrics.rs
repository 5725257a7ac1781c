//! The process's Prometheus metrics: one registry, the metric handles the call sites bump
//! (the request layer in `observe`, the auth layer, GC and import in `admin`), and the route
//! classifier that keeps the request labels bounded.
//!
//! The registry is process-wide (`get()`): one process serves one store, and the counters
//! are facts about the process, so the call sites in every layer reach them without each
//! constructor growing a parameter. Label values come only from fixed sets (route class,
//! method, status code, result, reason) or, for the per-repository series, from the store's
//! own repository names, at most `top` of them plus [`OTHER`] (see `observe::scrape`).

use std::sync::LazyLock;
use std::time::Duration;

use airdock_storage::{GcReport, StoreError};
use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry,
};

/// The `repository` label of everything outside the top N. Repository names cannot start
/// with `_` (the distribution spec's grammar), so this never names a real one.
pub const OTHER: &str = "_other";

/// What kind of endpoint a request is for: the `class` label. Decided from the path's
/// shape only, never its names, so the label has these values and no others.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteClass {
    /// `/v2/`, the version check (and the login ping of clients).
    Base,
    Blob,
    Manifest,
    Upload,
    Tags,
    Catalog,
    Referrers,
    Token,
    Admin,
    Ui,
    Health,
    Metrics,
    Other,
}

impl RouteClass {
    pub fn of(path: &str) -> RouteClass {
        if path == "/v2" {
            return RouteClass::Base;
        }
        if let Some(rest) = path.strip_prefix("/v2/") {
            return v2_class(rest);
        }
        let under = |prefix: &str| {
            path.strip_prefix(prefix)
                .is_some_and(|r| r.is_empty() || r.starts_with('/'))
        };
        match path {
            "/token" => RouteClass::Token,
            "/livez" | "/readyz" => RouteClass::Health,
            "/metrics" => RouteClass::Metrics,
            _ if under("/admin") => RouteClass::Admin,
            _ if under("/ui") => RouteClass::Ui,
            _ => RouteClass::Other,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            RouteClass::Base => "base",
            RouteClass::Blob => "blob",
            RouteClass::Manifest => "manifest",
            RouteClass::Upload => "upload",
            RouteClass::Tags => "tags",
            RouteClass::Catalog => "catalog",
            RouteClass::Referrers => "referrers",
            RouteClass::Token => "token",
            RouteClass::Admin => "admin",
            RouteClass::Ui => "ui",
            RouteClass::Health => "health",
            RouteClass::Metrics => "metrics",
            RouteClass::Other => "other",
        }
    }
}

/// The endpoint shapes of `http::route::parse` (read from the end: names have slashes),
/// without validating names, digests or ids: a malformed digest in a blob path is still a
/// blob request (answered 400).
fn v2_class(rest: &str) -> RouteClass {
    if rest.is_empty() {
        return RouteClass::Base;
    }
    if rest == "_catalog" {
        return RouteClass::Catalog;
    }
    let mut it = rest.rsplit('/');
    let last = it.next().unwrap_or("");
    let Some(second) = it.next() else {
        return RouteClass::Other;
    };
    let Some(third) = it.next() else {
        return RouteClass::Other;
    };
    let named = it.next().is_some();
    match (third, second, last) {
        (_, "tags", "list") => RouteClass::Tags,
        ("blobs", "uploads", _) if named => RouteClass::Upload,
        (_, "blobs", "uploads") => RouteClass::Upload,
        (_, "blobs", _) => RouteClass::Blob,
        (_, "manifests", _) => RouteClass::Manifest,
        (_, "referrers", _) => RouteClass::Referrers,
        _ => RouteClass::Other,
    }
}

/// The `method` label: the methods the API uses, anything else as `other`.
pub fn method_label(m: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    match *m {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::PUT => "PUT",
        Method::POST => "POST",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

/// Every metric of the process.
pub struct Metrics {
    pub registry: Registry,
    pub requests: IntCounterVec,
    pub request_duration: HistogramVec,
    pub received_bytes: IntCounterVec,
    pub sent_bytes: IntCounterVec,
    pub in_flight: IntGauge,
    pub upload_sessions: IntGauge,
    pub stored_bytes: IntGauge,
    pub stored_blobs: IntGauge,
    pub stored_manifests: IntGauge,
    pub repositories: IntGauge,
    pub repository_bytes: IntGaugeVec,
    pub repository_blobs: IntGaugeVec,
    pub repository_manifests: IntGaugeVec,
    pub repository_tags: IntGaugeVec,
    gc_runs: IntCounterVec,
    gc_duration: Histogram,
    gc_freed_bytes: IntCounter,
    gc_deleted_blobs: IntCounter,
    imports: IntCounterVec,
    import_bytes: IntCounter,
    import_duration: Histogram,
    auth_failures: IntCounterVec,
    lockouts: IntCounter,
    locked_out: IntCounter,
}

/// Request latencies: from a probe's millisecond to a large layer's minutes.
const REQUEST_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
];
/// GC runs and imports: seconds to an hour.
const JOB_BUCKETS: &[f64] = &[0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0];

static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

/// The process's metrics.
pub fn get() -> &'static Metrics {
    &METRICS
}

/// Why a credential was refused: the `reason` label of `airdock_auth_failures_total`.
#[derive(Debug, Clone, Copy)]
pub enum AuthFailure {
    /// A wrong user or password (Basic, at the token endpoint or on any request).
    Password,
    /// A bearer token that is invalid or expired.
    Token,
    /// A wrong admin token (authentication off).
    AdminToken,
}

impl AuthFailure {
    fn as_str(self) -> &'static str {
        match self {
            AuthFailure::Password => "password",
            AuthFailure::Token => "token",
            AuthFailure::AdminToken => "admin_token",
        }
    }
}

/// How an import ended: the `result` label of `airdock_imports_total`.
#[derive(Debug, Clone, Copy)]
pub enum ImportResult {
    Ok,
    /// The tar was refused (4xx: invalid, incomplete, too large, ...).
    Refused,
    /// The server failed (5xx: disk full, I/O).
    Failed,
}

impl Metrics {
    fn new() -> Metrics {
        let registry = Registry::new();
        // Names and help are constants: a failure here is a programming error caught by
        // every test that touches metrics, so panicking at first use is right.
        fn reg<M: prometheus::core::Collector + Clone + 'static>(r: &Registry, m: M) -> M {
            r.register(Box::new(m.clone()))
                .expect("metric names are unique and valid");
            m
        }
        let counter = |name: &str, help: &str| {
            reg(
                &registry,
                IntCounter::new(name, help).expect("valid counter"),
            )
        };
        let counter_vec = |name: &str, help: &str, labels: &[&str]| {
            reg(
                &registry,
                IntCounterVec::new(Opts::new(name, help), labels).expect("valid counter"),
            )
        };
        let gauge = |name: &str, help: &str| {
            reg(&registry, IntGauge::new(name, help).expect("valid gauge"))
        };
        let gauge_vec = |name: &str, help: &str, labels: &[&str]| {
            reg(
                &registry,
                IntGaugeVec::new(Opts::new(name, help), labels).expect("valid gauge"),
            )
        };
        let histogram = |name: &str, help: &str, buckets: &[f64]| {
            reg(
                &registry,
                Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets.to_vec()))
                    .expect("valid histogram"),
            )
        };
        let build = gauge_vec(
            "airdock_build_info",
            "Always 1; the version of the running binary is its label.",
            &["version"],
        );
        build.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
        let m = Metrics {
            requests: counter_vec(
                "airdock_http_requests_total",
                "HTTP requests answered, by route class, method and status code.",
                &["class", "method", "code"],
            ),
            request_duration: reg(
                &registry,
                HistogramVec::new(
                    HistogramOpts::new(
                        "airdock_http_request_duration_seconds",
                        "Time from a request's head to the end of its response body.",
                    )
                    .buckets(REQUEST_BUCKETS.to_vec()),
                    &["class", "method"],
                )
                .expect("valid histogram"),
            ),
            received_bytes: counter_vec(
                "airdock_http_received_bytes_total",
                "Request body bytes read, by route class.",
                &["class"],
            ),
            sent_bytes: counter_vec(
                "airdock_http_sent_bytes_total",
                "Response body bytes sent, by route class.",
                &["class"],
            ),
            in_flight: gauge(
                "airdock_http_requests_in_flight",
                "Requests being served (head received, response body not yet sent).",
            ),
            upload_sessions: gauge(
                "airdock_upload_sessions_open",
                "Blob upload sessions open (started, not yet finished, cancelled or expired).",
            ),
            stored_bytes: gauge(
                "airdock_stored_bytes",
                "Bytes of the distinct blob files (manifests included) the repositories reference.",
            ),
            stored_blobs: gauge(
                "airdock_stored_blobs",
                "Distinct blob files (manifests included) the repositories reference.",
            ),
            stored_manifests: gauge(
                "airdock_stored_manifests",
                "Distinct manifests held by at least one repository.",
            ),
            repositories: gauge("airdock_repositories", "Repositories."),
            repository_bytes: gauge_vec(
                "airdock_repository_stored_bytes",
                "Bytes of the blob files a repository references (shared ones count in each); \
                 the largest repositories, the rest summed as repository=\"_other\".",
                &["repository"],
            ),
            repository_blobs: gauge_vec(
                "airdock_repository_blobs",
                "Blob files a repository references, its manifests included (same repositories \
                 as airdock_repository_stored_bytes).",
                &["repository"],
            ),
            repository_manifests: gauge_vec(
                "airdock_repository_manifests",
                "Manifests of a repository (same repositories as \
                 airdock_repository_stored_bytes).",
                &["repository"],
            ),
            repository_tags: gauge_vec(
                "airdock_repository_tags",
                "Tags of a repository (same repositories as airdock_repository_stored_bytes).",
                &["repository"],
            ),
            gc_runs: counter_vec(
                "airdock_gc_runs_total",
                "Garbage collections run (timer and admin API), by result: ok, dry_run, error.",
                &["result"],
            ),
            gc_duration: histogram(
                "airdock_gc_duration_seconds",
                "Duration of completed garbage collections.",
                JOB_BUCKETS,
            ),
            gc_freed_bytes: counter(
                "airdock_gc_freed_bytes_total",
                "Bytes of blob files garbage collection deleted.",
            ),
            gc_deleted_blobs: counter(
                "airdock_gc_deleted_blobs_total",
                "Blob files garbage collection deleted.",
            ),
            imports: counter_vec(
                "airdock_imports_total",
                "imgpkg tar imports, by result: ok, refused (the tar, 4xx), failed (5xx).",
                &["result"],
            ),
            import_bytes: counter(
                "airdock_import_bytes_total",
                "Tar bytes (after gzip decoding) of successful imports.",
            ),
            import_duration: histogram(
                "airdock_import_duration_seconds",
                "Duration of successful imports.",
                JOB_BUCKETS,
            ),
            auth_failures: counter_vec(
                "airdock_auth_failures_total",
                "Refused credentials, by reason: password, token, admin_token.",
                &["reason"],
            ),
            lockouts: counter(
                "airdock_auth_lockouts_total",
                "Client addresses locked out after too many failed logins.",
            ),
            locked_out: counter(
                "airdock_auth_locked_out_requests_total",
                "Logins refused (429) because their client address was locked out.",
            ),
            registry,
        };
        // Series that exist from the start, at 0, so that rate() and alerts see them
        // before the first event.
        for r in ["ok", "dry_run", "error"] {
            m.gc_runs.with_label_values(&[r]);
        }
        for r in ["ok", "refused", "failed"] {
            m.imports.with_label_values(&[r]);
        }
        for r in [
            AuthFailure::Password,
            AuthFailure::Token,
            AuthFailure::AdminToken,
        ] {
            m.auth_failures.with_label_values(&[r.as_str()]);
        }
        m
    }

    /// One finished request.
    pub fn request(
        &self,
        class: RouteClass,
        method: &'static str,
        status: axum::http::StatusCode,
        took: Duration,
        received: u64,
        sent: u64,
    ) {
        let class = class.as_str();
        self.requests
            .with_label_values(&[class, method, status.as_str()])
            .inc();
        self.request_duration
            .with_label_values(&[class, method])
            .observe(took.as_secs_f64());
        self.received_bytes
            .with_label_values(&[class])
            .inc_by(received);
        self.sent_bytes.with_label_values(&[class]).inc_by(sent);
    }

    /// One garbage collection, done or failed.
    pub fn gc(&self, result: &Result<GcReport, StoreError>) {
        match result {
            Ok(r) if r.dry_run => self.gc_runs.with_label_values(&["dry_run"]).inc(),
            Ok(r) => {
                self.gc_runs.with_label_values(&["ok"]).inc();
                self.gc_freed_bytes.inc_by(r.bytes_freed);
                self.gc_deleted_blobs.inc_by(r.blobs_deleted);
            }
            Err(_) => self.gc_runs.with_label_values(&["error"]).inc(),
        }
        if let Ok(r) = result {
            self.gc_duration
                .observe(Duration::from_millis(r.elapsed_ms).as_secs_f64());
        }
    }

    /// One import; `bytes` and `seconds` of a successful one.
    pub fn import(&self, result: ImportResult, bytes: u64, seconds: f64) {
        let label = match result {
            ImportResult::Ok => {
                self.import_bytes.inc_by(bytes);
                self.import_duration.observe(seconds);
                "ok"
            }
            ImportResult::Refused => "refused",
            ImportResult::Failed => "failed",
        };
        self.imports.with_label_values(&[label]).inc();
    }

    pub fn auth_failure(&self, why: AuthFailure) {
        self.auth_failures.with_label_values(&[why.as_str()]).inc();
    }

    /// An address was just locked out.
    pub fn lockout(&self) {
        self.lockouts.inc();
    }

    /// A login refused because its address is locked out.
    pub fn locked_out(&self) {
        self.locked_out.inc();
    }

    /// The registry in the Prometheus text exposition format (version 0.0.4).
    pub fn encode(&self) -> String {
        let families = self.registry.gather();
        prometheus::TextEncoder::new()
            .encode_to_string(&families)
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_classes_by_shape() {
        let cases = [
            ("/v2/", RouteClass::Base),
            ("/v2", RouteClass::Base),
            ("/v2/_catalog", RouteClass::Catalog),
            ("/v2/a/b/c/tags/list", RouteClass::Tags),
            ("/v2/a/manifests/latest", RouteClass::Manifest),
            ("/v2/a/b/manifests/sha256:abc", RouteClass::Manifest),
            ("/v2/a/blobs/sha256:abc", RouteClass::Blob),
            // A malformed digest is still a blob request.
            ("/v2/a/blobs/nonsense", RouteClass::Blob),
            ("/v2/a/blobs/uploads/", RouteClass::Upload),
            ("/v2/a/blobs/uploads", RouteClass::Upload),
            ("/v2/a/b/blobs/uploads/0123abcd", RouteClass::Upload),
            ("/v2/a/referrers/sha256:abc", RouteClass::Referrers),
            // Names with slashes are read from the end, like the dispatcher does: a
            // repository named `x/manifests/y` is no manifest request by itself.
            ("/v2/x/manifests/y/blobs/sha256:abc", RouteClass::Blob),
            ("/v2/blobs/uploads/x", RouteClass::Other),
            ("/v2/tags/list", RouteClass::Other),
            ("/v2/a", RouteClass::Other),
            ("/v2/a/b/c/d", RouteClass::Other),
            ("/token", RouteClass::Token),
            ("/admin/v1/import", RouteClass::Admin),
            ("/admin", RouteClass::Admin),
            ("/administrator", RouteClass::Other),
            ("/ui", RouteClass::Ui),
            ("/ui/repositories/a", RouteClass::Ui),
            ("/uix", RouteClass::Other),
            ("/livez", RouteClass::Health),
            ("/readyz", RouteClass::Health),
            ("/metrics", RouteClass::Metrics),
            ("/", RouteClass::Other),
            ("/favicon.ico", RouteClass::Other),
        ];
        for (path, want) in cases {
            assert_eq!(RouteClass::of(path), want, "{path}");
        }
    }

    #[test]
    fn labels_are_bounded() {
        assert_eq!(method_label(&axum::http::Method::GET), "GET");
        let odd = axum::http::Method::from_bytes(b"BREW").expect("method");
        assert_eq!(method_label(&odd), "other");
    }
}
