//! The OCI Distribution API over axum: one wildcard route under `/v2/`, a pure path parser
//! (`route`), and one module per concept of the spec. Handlers parse, call the store and
//! map errors; they never build a filesystem path.

pub mod blobs;
pub mod catalog;
pub mod manifests;
pub mod referrers;
pub mod route;
pub mod tags;
pub mod uploads;

use std::io;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use futures_util::TryStreamExt;
use tokio_util::io::StreamReader;

use airdock_storage::StoreError;

use crate::error::{code, RegistryError};
use crate::AppState;
use route::{Endpoint, RouteError};

pub type Result<T> = std::result::Result<T, RegistryError>;

pub const API_VERSION: HeaderName = HeaderName::from_static("docker-distribution-api-version");
pub const CONTENT_DIGEST: HeaderName = HeaderName::from_static("docker-content-digest");
pub const UPLOAD_UUID: HeaderName = HeaderName::from_static("docker-upload-uuid");

/// The decoded query string, keeping repeated keys (`?tag=a&tag=b`).
#[derive(Default, Debug)]
pub struct Query(Vec<(String, String)>);

impl Query {
    /// Decodes `application/x-www-form-urlencoded` pairs (`+` is a space, `%XX` a byte,
    /// invalid UTF-8 replaced) with `form_urlencoded`, the decoder `url` and axum use.
    pub fn parse(raw: Option<&str>) -> Query {
        let Some(raw) = raw else {
            return Query::default();
        };
        Query(
            form_urlencoded::parse(raw.as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
        )
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    pub fn all<'a>(&'a self, key: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.0
            .iter()
            .filter(move |(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// `n` for pagination: absent, or a non-negative integer.
    pub fn page_size(&self) -> Result<Option<usize>> {
        match self.get("n") {
            None | Some("") => Ok(None),
            Some(v) => v.parse().map(Some).map_err(|_| {
                RegistryError::BadRequest(
                    code::PAGINATION_NUMBER_INVALID,
                    format!(
                        "n={v:?} is not a page size: expected a whole number of entries \
                         from 0 to {}",
                        usize::MAX
                    ),
                )
            }),
        }
    }
}

/// What a handler receives: the request, taken apart.
pub struct Req {
    pub method: Method,
    pub headers: HeaderMap,
    pub query: Query,
    /// What layers in front left for handlers (the auth layer's catalog filter).
    pub extensions: axum::http::Extensions,
    /// In a Mutex only to make `Req` `Sync`, so handlers may hold `&Req` across `.await`.
    body: std::sync::Mutex<Option<Body>>,
}

impl Req {
    pub fn header(&self, name: impl header::AsHeaderName) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Take the body (once; later calls see an empty body).
    pub fn take_body(&self) -> Body {
        let mut slot = self.body.lock().unwrap_or_else(|e| e.into_inner());
        slot.take().unwrap_or_else(Body::empty)
    }

    /// The body as a byte stream the store can read.
    pub fn into_reader(self) -> impl tokio::io::AsyncRead + Unpin + Send {
        StreamReader::new(
            self.take_body()
                .into_data_stream()
                .map_err(io::Error::other),
        )
    }
}

/// `GET /v2/`: the version check.
pub async fn base() -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        "{}",
    )
        .into_response()
}

/// Every `/v2/...` request: parse the path, then dispatch on endpoint and method.
pub async fn dispatch(State(state): State<AppState>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let path = parts.uri.path();
    let rest = path.strip_prefix("/v2/").unwrap_or("");
    let endpoint = match route::parse(rest) {
        Ok(e) => e,
        Err(RouteError::NotFound) => {
            return RegistryError::NotFound(format!("no such endpoint: {path}")).into_response()
        }
        // A reference that cannot be a tag names no manifest: pulls get the 404 that
        // clients (and the conformance suite) expect; pushes get TAG_INVALID.
        Err(RouteError::Invalid(StoreError::TagInvalid(t))) if parts.method != Method::PUT => {
            return RegistryError::Store(StoreError::ManifestUnknown(t)).into_response()
        }
        Err(RouteError::Invalid(e)) => return RegistryError::Store(e).into_response(),
    };
    let req = Req {
        method: parts.method,
        headers: parts.headers,
        query: Query::parse(parts.uri.query()),
        extensions: parts.extensions,
        body: std::sync::Mutex::new(Some(body)),
    };
    let result = match (&req.method, endpoint) {
        (&Method::GET | &Method::HEAD, Endpoint::Base) => Ok(base().await),
        (&Method::GET, Endpoint::Catalog) => catalog::list(&state, &req),
        (&Method::GET, Endpoint::Tags(repo)) => tags::list(&state, &repo, &req),
        (&Method::GET | &Method::HEAD, Endpoint::Manifest(repo, r)) => {
            manifests::get(&state, &repo, &r, &req).await
        }
        (&Method::PUT, Endpoint::Manifest(repo, r)) => manifests::put(&state, &repo, &r, req).await,
        (&Method::DELETE, Endpoint::Manifest(repo, r)) => {
            manifests::delete(&state, &repo, &r, &req).await
        }
        (&Method::GET | &Method::HEAD, Endpoint::Blob(repo, d)) => {
            blobs::get(&state, &repo, &d, &req).await
        }
        (&Method::DELETE, Endpoint::Blob(repo, d)) => blobs::delete(&state, &repo, &d).await,
        (&Method::POST, Endpoint::Uploads(repo)) => uploads::start(&state, &repo, req).await,
        (&Method::GET, Endpoint::Upload(repo, id)) => uploads::status(&state, &repo, &id).await,
        (&Method::PATCH, Endpoint::Upload(repo, id)) => {
            uploads::patch(&state, &repo, &id, req).await
        }
        (&Method::PUT, Endpoint::Upload(repo, id)) => {
            uploads::finish(&state, &repo, &id, req).await
        }
        (&Method::DELETE, Endpoint::Upload(repo, id)) => uploads::cancel(&state, &repo, &id).await,
        (&Method::GET, Endpoint::Referrers(repo, d)) => {
            referrers::list(&state, &repo, &d, &req).await
        }
        (m, _) => Err(RegistryError::Unsupported(format!(
            "{m} is not supported on {path}"
        ))),
    };
    result.unwrap_or_else(IntoResponse::into_response)
}

/// Add a header whose value we built ourselves (digests, paths, numbers).
pub fn set(resp: &mut Response, name: HeaderName, value: impl AsRef<str>) {
    if let Ok(v) = HeaderValue::from_str(value.as_ref()) {
        resp.headers_mut().insert(name, v);
    }
}

pub fn append(resp: &mut Response, name: HeaderName, value: impl AsRef<str>) {
    if let Ok(v) = HeaderValue::from_str(value.as_ref()) {
        resp.headers_mut().append(name, v);
    }
}

/// An empty response with a status.
pub fn empty(status: StatusCode) -> Response {
    let mut r = (status, Body::empty()).into_response();
    set(&mut r, header::CONTENT_LENGTH, "0");
    r
}

/// A 200 JSON page of a sorted listing: `{<key>: [...], ...extra}`, plus
/// `Link: <path?n=&last=>; rel="next"` when more items follow.
pub fn paged(
    path: &str,
    mut body: serde_json::Map<String, serde_json::Value>,
    key: &str,
    page: airdock_storage::Page,
    n: Option<usize>,
) -> Response {
    let link = match (page.more, page.items.last()) {
        (true, Some(last)) => Some(next_link(path, n, last)),
        _ => None,
    };
    body.insert(key.into(), page.items.into());
    let body = serde_json::Value::Object(body).to_string();
    let mut resp = (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response();
    if let Some(link) = link {
        set(&mut resp, header::LINK, link);
    }
    resp
}

/// `<url-path>?n=<n>&last=<last>`, for `Link: <...>; rel="next"`.
pub(crate) fn next_link(path: &str, n: Option<usize>, last: &str) -> String {
    let mut q = String::new();
    if let Some(n) = n {
        q.push_str(&format!("n={n}&"));
    }
    q.push_str("last=");
    for b in last.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            q.push(b as char);
        } else {
            q.push_str(&format!("%{b:02X}"));
        }
    }
    format!("<{path}?{q}>; rel=\"next\"")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_keeps_repeats_and_decodes() {
        let q = Query::parse(Some("tag=a&tag=b%2Bc&n=3&x"));
        assert_eq!(q.all("tag").collect::<Vec<_>>(), ["a", "b+c"]);
        assert_eq!(q.page_size().expect("n"), Some(3));
        assert_eq!(q.get("x"), Some(""));
        assert!(Query::parse(Some("n=-1")).page_size().is_err());
        let q = Query::parse(Some("k=%zz%4&s=a+b&u=%ff&&=v"));
        assert_eq!(q.get("k"), Some("%zz%4"));
        assert_eq!(q.get("s"), Some("a b"));
        assert_eq!(q.get("u"), Some("\u{fffd}"));
        assert_eq!(q.get(""), Some("v"));
    }
}
