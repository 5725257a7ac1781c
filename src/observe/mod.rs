//! What an operator sees of each request: the `X-Request-Id` (the client's when sane, else a
//! new one; returned on every response), one access-log line (target `airdock::access`), an
//! audit line (target `airdock::audit`) for every admin action and every delete, and the
//! request metrics (`crate::metrics`). One layer, just inside the client resolution of
//! `forwarded` and outside everything else, so that refusals by the auth and limit layers
//! are seen like any answer. The line is written when the response body has been sent (or
//! the client went away), so it carries the bytes really sent and the whole duration.
//!
//! `logging` sets up the log output (`--log-format`), `scrape` serves `/metrics`.

pub mod logging;
pub mod scrape;

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use axum::body::Body;
use axum::extract::{ConnectInfo, Request};
use axum::http::{header, HeaderName, HeaderValue, Method, StatusCode, Uri};
use axum::middleware::Next;
use axum::response::Response;
use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};

use airdock_storage::Reference;

use crate::auth::Principal;
use crate::forwarded::Client;
use crate::http::route::{self, Endpoint};
use crate::metrics::{self, RouteClass};

pub use scrape::Scrape;

pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// A client's request id longer than this is replaced: it is echoed into every log line.
pub const MAX_REQUEST_ID: usize = 128;

/// The status logged and counted for a request whose client went away before the answer
/// (nginx's convention): no status was sent.
const CLIENT_CLOSED: u16 = 499;

/// The request's id, in the request's extensions for handlers that want to log it.
#[derive(Clone, Debug)]
pub struct RequestId(pub HeaderValue);

/// A client's id is kept if it is 1 to [`MAX_REQUEST_ID`] visible ASCII characters (no
/// spaces or controls: it goes into log lines and headers as it is).
fn sane(v: &HeaderValue) -> bool {
    let b = v.as_bytes();
    !b.is_empty() && b.len() <= MAX_REQUEST_ID && b.iter().all(|c| (0x21..=0x7e).contains(c))
}

fn new_request_id() -> HeaderValue {
    static FALLBACK: AtomicU64 = AtomicU64::new(0);
    // 96 random bits: unique enough across restarts and replicas to grep for.
    let id = crate::sys::random_hex(12)
        .unwrap_or_else(|_| format!("n{}", FALLBACK.fetch_add(1, Ordering::Relaxed)));
    HeaderValue::from_str(&id).unwrap_or(HeaderValue::from_static("-"))
}

/// An admin action or a delete: what the audit line says was attempted.
#[derive(Debug, PartialEq, Eq)]
struct Audit {
    action: &'static str,
    /// The repository, reference, id or options acted on, as the request named them.
    target: String,
}

/// The audit entry of a request, if it is an admin action (anything under `/admin` but a
/// read), a delete of the registry API, or one of the console's actions (tag delete, upload,
/// import removal, GC).
fn audit_of(method: &Method, class: RouteClass, uri: &Uri) -> Option<Audit> {
    let path = uri.path();
    let audit = |action, target: &str| {
        Some(Audit {
            action,
            target: target.to_owned(),
        })
    };
    match class {
        RouteClass::Admin if !matches!(*method, Method::GET | Method::HEAD) => {
            let query = uri.query().unwrap_or("");
            let under = |p: &str| path.strip_prefix(p).filter(|r| !r.is_empty());
            if path == "/admin/v1/import" && matches!(*method, Method::POST | Method::PUT) {
                let repo = crate::http::Query::parse(uri.query())
                    .get("repository")
                    .unwrap_or("")
                    .to_owned();
                return audit("import", &repo);
            }
            if path == "/admin/v1/gc" && *method == Method::POST {
                return audit("gc", query);
            }
            if *method == Method::DELETE {
                if let Some(name) = under("/admin/v1/repositories/") {
                    return audit("delete_repository", name);
                }
                if let Some(id) = under("/admin/v1/imports/") {
                    return audit("remove_import", id);
                }
                if let Some(id) = under("/admin/v1/uploads/") {
                    return audit("cancel_upload", id);
                }
            }
            audit("admin", path)
        }
        // The console's actions, as their admin API and registry API equivalents are.
        RouteClass::Ui if *method == Method::POST => {
            if path == "/ui/storage/gc" {
                return audit("gc", uri.query().unwrap_or(""));
            }
            if path == "/ui/upload" {
                let q = crate::http::Query::parse(uri.query());
                return audit("import", q.get("repository").unwrap_or(""));
            }
            if let Some(id) = path
                .strip_prefix("/ui/imports/")
                .and_then(|r| r.strip_suffix("/remove"))
            {
                return audit("remove_import", id);
            }
            let (repo, tag) = path
                .strip_prefix("/ui/repositories/")?
                .strip_suffix("/delete")?
                .split_once("/-/tags/")?;
            audit("delete_tag", &format!("{repo}:{tag}"))
        }
        _ if *method == Method::DELETE => {
            let rest = path.strip_prefix("/v2/")?;
            match route::parse(rest) {
                Ok(Endpoint::Manifest(r, Reference::Tag(t))) => {
                    audit("delete_tag", &format!("{r}:{t}"))
                }
                Ok(Endpoint::Manifest(r, Reference::Digest(d))) => {
                    let cascade = if uri.query().is_some_and(|q| q.contains("cascade=true")) {
                        " (cascade)"
                    } else {
                        ""
                    };
                    audit("delete_manifest", &format!("{r}@{d}{cascade}"))
                }
                Ok(Endpoint::Blob(r, d)) => audit("delete_blob", &format!("{r}@{d}")),
                Ok(Endpoint::Upload(r, id)) => audit("cancel_upload", &format!("{r} {id}")),
                _ => audit("delete", rest),
            }
        }
        _ => None,
    }
}

/// A client address, or `-`.
struct Addr(Option<IpAddr>);

impl fmt::Display for Addr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(ip) => ip.fmt(f),
            None => f.write_str("-"),
        }
    }
}

/// One request from its head to the end of its answer. Dropping it writes the access line
/// (and the audit line) and records the metrics, whenever that happens: after the last
/// byte of the body, or when the client goes away (status [`CLIENT_CLOSED`] if no answer
/// was made yet).
struct Exchange {
    start: Instant,
    class: RouteClass,
    method: Method,
    path: String,
    client: Option<IpAddr>,
    request_id: HeaderValue,
    received: Arc<AtomicU64>,
    sent: u64,
    status: Option<StatusCode>,
    user: Option<Principal>,
    audit: Option<Audit>,
    had_credentials: bool,
}

impl Drop for Exchange {
    fn drop(&mut self) {
        let took = self.start.elapsed();
        let received = self.received.load(Ordering::Relaxed);
        let status = self.status.map_or(CLIENT_CLOSED, |s| s.as_u16());
        let m = metrics::get();
        m.in_flight.dec();
        m.request(
            self.class,
            metrics::method_label(&self.method),
            self.status
                .unwrap_or(StatusCode::from_u16(CLIENT_CLOSED).unwrap_or_default()),
            took,
            received,
            self.sent,
        );
        let user = self.user.as_ref().map_or("-", |p| p.0.as_str());
        let client = Addr(self.client);
        let request_id = self.request_id.to_str().unwrap_or("-");
        let duration_ms = took.as_micros() as f64 / 1000.0;
        let (method, path, class) = (self.method.as_str(), &self.path, self.class.as_str());
        // Probes come every few seconds from every kubelet and balancer; at info they
        // would drown the lines people read. RUST_LOG=airdock::access=debug shows them.
        if self.class == RouteClass::Health {
            tracing::debug!(target: "airdock::access", %method, %path, status,
                bytes_in = received, bytes_out = self.sent, duration_ms, %user, %client,
                %request_id, %class, "request");
        } else {
            tracing::info!(target: "airdock::access", %method, %path, status,
                bytes_in = received, bytes_out = self.sent, duration_ms, %user, %client,
                %request_id, %class, "request");
        }
        let Some(Audit { action, target }) = &self.audit else {
            return;
        };
        let result = match status {
            CLIENT_CLOSED => "aborted",
            200..=399 => "ok",
            401 if !self.had_credentials => "challenged",
            400..=499 => "refused",
            _ => "failed",
        };
        // `resource`, not `target`: that is the log line's own field (`airdock::audit`).
        let resource = target.as_str();
        match result {
            // A client's first try without credentials, answered with the login challenge:
            // the real attempt follows.
            "challenged" => tracing::debug!(target: "airdock::audit", %action, %resource, %user,
                %client, status, %result, %request_id, "audit"),
            "failed" | "aborted" => tracing::warn!(target: "airdock::audit", %action, %resource,
                %user, %client, status, %result, %request_id, "audit"),
            _ => tracing::info!(target: "airdock::audit", %action, %resource, %user, %client,
                status, %result, %request_id, "audit"),
        }
    }
}

/// The layer. See the module docs.
pub async fn layer(mut req: Request, next: Next) -> Response {
    let start = Instant::now();
    let request_id = match req.headers().get(&X_REQUEST_ID) {
        Some(v) if sane(v) => v.clone(),
        _ => new_request_id(),
    };
    // Handlers and anything they call see the same id the client gets back.
    req.headers_mut().insert(X_REQUEST_ID, request_id.clone());
    req.extensions_mut().insert(RequestId(request_id.clone()));
    let class = RouteClass::of(req.uri().path());
    let client = match req.extensions().get::<Client>() {
        Some(c) => c.ip,
        None => req
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip()),
    };
    let received = Arc::new(AtomicU64::new(0));
    metrics::get().in_flight.inc();
    // From here on, dropping `exchange` (a cancelled handler included) logs the request.
    let mut exchange = Exchange {
        start,
        class,
        path: req.uri().path().to_owned(),
        client,
        request_id: request_id.clone(),
        received: Arc::clone(&received),
        sent: 0,
        status: None,
        user: None,
        audit: audit_of(req.method(), class, req.uri()),
        had_credentials: req.headers().contains_key(header::AUTHORIZATION),
        method: req.method().clone(),
    };
    let req = req.map(|inner| {
        Body::new(Metered {
            inner,
            meter: received,
        })
    });
    let resp = next.run(req).await;
    exchange.status = Some(resp.status());
    exchange.user = resp.extensions().get::<Principal>().cloned();
    let (mut parts, body) = resp.into_parts();
    parts.headers.insert(X_REQUEST_ID, request_id);
    let body = Body::new(Metered {
        inner: body,
        meter: Some(exchange),
    });
    Response::from_parts(parts, body)
}

/// What a [`Metered`] body tells about itself: the bytes of each data frame, and its end
/// (last frame, error).
trait Meter: Send + Unpin + 'static {
    fn data(&mut self, n: u64);
    fn end(&mut self) {}
}

/// The request body: counts the bytes handlers read.
impl Meter for Arc<AtomicU64> {
    fn data(&mut self, n: u64) {
        self.fetch_add(n, Ordering::Relaxed);
    }
}

/// The response body: counts the bytes sent; the exchange ends with the body's end, or
/// with its drop (a HEAD, an empty body hyper never polls, a client gone).
impl Meter for Option<Exchange> {
    fn data(&mut self, n: u64) {
        if let Some(x) = self {
            x.sent = x.sent.saturating_add(n);
        }
    }

    fn end(&mut self) {
        drop(self.take());
    }
}

/// A body that tells its [`Meter`] what passes through it.
struct Metered<M> {
    inner: Body,
    meter: M,
}

impl<M: Meter> HttpBody for Metered<M> {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let me = self.get_mut();
        let r = Pin::new(&mut me.inner).poll_frame(cx);
        match &r {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(d) = frame.data_ref() {
                    me.meter.data(d.len() as u64);
                }
            }
            Poll::Ready(_) => me.meter.end(),
            Poll::Pending => {}
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_kept_only_when_sane() {
        let ok = |s: &str| sane(&HeaderValue::from_str(s).expect("header"));
        assert!(ok("abc-123_XYZ.{}"));
        assert!(ok(&"x".repeat(MAX_REQUEST_ID)));
        assert!(!ok(&"x".repeat(MAX_REQUEST_ID + 1)));
        assert!(!ok(""));
        assert!(!ok("has space"));
        assert!(!sane(
            &HeaderValue::from_bytes(b"caf\xc3\xa9").expect("header")
        ));
        let id = new_request_id();
        assert!(sane(&id) && id.len() == 24, "{id:?}");
        assert_ne!(new_request_id(), id);
    }

    #[test]
    fn audited_requests_and_what_they_name() {
        let a = |m: Method, uri: &str| {
            let uri: Uri = uri.parse().expect("uri");
            audit_of(&m, RouteClass::of(uri.path()), &uri).map(|a| (a.action, a.target))
        };
        let d = format!("sha256:{}", "a".repeat(64));
        assert_eq!(
            a(Method::DELETE, "/v2/team/app/manifests/v1"),
            Some(("delete_tag", "team/app:v1".into()))
        );
        assert_eq!(
            a(Method::DELETE, &format!("/v2/a/manifests/{d}?cascade=true")),
            Some(("delete_manifest", format!("a@{d} (cascade)")))
        );
        assert_eq!(
            a(Method::DELETE, &format!("/v2/a/blobs/{d}")),
            Some(("delete_blob", format!("a@{d}")))
        );
        assert_eq!(
            a(Method::POST, "/admin/v1/import?repository=lab/b"),
            Some(("import", "lab/b".into()))
        );
        assert_eq!(
            a(Method::POST, "/admin/v1/gc?dry_run=true"),
            Some(("gc", "dry_run=true".into()))
        );
        assert_eq!(
            a(Method::DELETE, "/admin/v1/repositories/x/y"),
            Some(("delete_repository", "x/y".into()))
        );
        assert_eq!(
            a(Method::DELETE, "/admin/v1/imports/0123"),
            Some(("remove_import", "0123".into()))
        );
        assert_eq!(
            a(Method::DELETE, "/admin/v1/uploads/0123"),
            Some(("cancel_upload", "0123".into()))
        );
        // Reads are no actions; deletes of a malformed path are still audited.
        assert_eq!(a(Method::GET, "/admin/v1/imports"), None);
        assert_eq!(a(Method::GET, "/v2/a/manifests/v1"), None);
        assert_eq!(a(Method::PUT, "/v2/a/manifests/v1"), None);
        assert_eq!(
            a(Method::DELETE, "/v2/a/blobs/nonsense"),
            Some(("delete", "a/blobs/nonsense".into()))
        );
        assert_eq!(a(Method::DELETE, "/livez"), None);
        // The console's actions, by POST; its sign-in and pages are not.
        assert_eq!(
            a(Method::POST, "/ui/storage/gc?dry_run=0"),
            Some(("gc", "dry_run=0".into()))
        );
        assert_eq!(
            a(Method::POST, "/ui/upload?repository=lab/b&name=x.tar"),
            Some(("import", "lab/b".into()))
        );
        assert_eq!(
            a(Method::POST, "/ui/imports/0123/remove"),
            Some(("remove_import", "0123".into()))
        );
        assert_eq!(
            a(Method::POST, "/ui/repositories/a/b/-/tags/v1/delete"),
            Some(("delete_tag", "a/b:v1".into()))
        );
        assert_eq!(a(Method::POST, "/ui/login"), None);
        assert_eq!(a(Method::GET, "/ui/storage"), None);
    }
}
