//! Request hardening that handlers need not think about: a request body that stalls longer
//! than `body_timeout` fails (a slow client cannot hold an upload open forever), and at most
//! `max_concurrent_uploads` blob-upload requests run at once (429 past that).

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use tokio::sync::Semaphore;

use crate::config::Limits;
use crate::error::RegistryError;

/// Shared by every request; cheap to clone.
#[derive(Clone, Debug)]
pub struct Limiter {
    body_timeout: Duration,
    uploads: Arc<Semaphore>,
}

impl Limiter {
    pub fn new(limits: &Limits) -> Limiter {
        Limiter {
            body_timeout: limits.body_timeout,
            uploads: Arc::new(Semaphore::new(limits.max_concurrent_uploads.max(1))),
        }
    }
}

impl Default for Limiter {
    fn default() -> Limiter {
        Limiter::new(&Limits::default())
    }
}

/// Whether `path` carries blob data in: `POST|PATCH|PUT …/blobs/uploads/…`.
fn is_upload(method: &Method, path: &str) -> bool {
    matches!(*method, Method::POST | Method::PATCH | Method::PUT)
        && path.starts_with("/v2/")
        && path.contains("/blobs/uploads")
}

pub async fn layer(State(limiter): State<Limiter>, req: Request, next: Next) -> Response {
    let permit = if is_upload(req.method(), req.uri().path()) {
        match Arc::clone(&limiter.uploads).try_acquire_owned() {
            Ok(p) => Some(p),
            Err(_) => {
                return RegistryError::Busy("too many uploads at once; retry".into())
                    .into_response()
            }
        }
    } else {
        None
    };
    let (parts, body) = req.into_parts();
    let idle = limiter.body_timeout;
    // Each chunk must arrive within `idle` of the previous one; a stall ends the body with
    // an error, which the handler treats like a client that went away.
    let stream = futures_util::stream::unfold(Some(body.into_data_stream()), move |s| async move {
        let mut s = s?;
        match tokio::time::timeout(idle, s.next()).await {
            Ok(Some(item)) => Some((item.map_err(axum::Error::new), Some(s))),
            Ok(None) => None,
            Err(_) => Some((
                Err(axum::Error::new(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "request body stalled",
                ))),
                None,
            )),
        }
    });
    let resp = next
        .run(Request::from_parts(parts, Body::from_stream(stream)))
        .await;
    drop(permit);
    resp
}
