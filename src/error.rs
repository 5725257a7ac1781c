//! The HTTP layer's error type and the one place that turns errors into status codes and
//! the spec's JSON error body `{"errors":[{"code","message","detail"}]}`.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use airdock_storage::{RepoName, StoreError};

use crate::imgpkg::export::ExportError;
use crate::imgpkg::ImportError;

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    RangeNotSatisfiable(String, u64),
    #[error("{0}")]
    Unsupported(String),
    /// A spec error code and the message for the person reading it (never the code again).
    #[error("{1}")]
    BadRequest(&'static str, String),
    #[error("{0}")]
    Forbidden(String),
    #[error(transparent)]
    Auth(#[from] AuthError),
    /// Too many requests of a limited kind at once (upload slots).
    #[error("{0}")]
    Busy(String),
    /// An imgpkg import refused or failed; the detail names the tar entry.
    #[error("{error}")]
    Import {
        repository: RepoName,
        error: ImportError,
    },
    /// An export could not be planned (nothing is sent then).
    #[error(transparent)]
    Export(#[from] ExportError),
}

/// The auth layer's errors; mapped below with the rest.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// 401 with a `WWW-Authenticate` challenge.
    #[error("{message}")]
    Unauthorized {
        challenge: String,
        message: &'static str,
    },
    /// 403: authenticated, but the rules do not grant this.
    #[error("{0}")]
    Denied(String),
    /// 429: too many failed logins from this address.
    #[error("too many failed logins; retry later")]
    TooManyRequests { retry_after: u64 },
}

/// The spec's error codes, kept as data.
pub mod code {
    pub const BLOB_UNKNOWN: &str = "BLOB_UNKNOWN";
    pub const BLOB_UPLOAD_INVALID: &str = "BLOB_UPLOAD_INVALID";
    pub const BLOB_UPLOAD_UNKNOWN: &str = "BLOB_UPLOAD_UNKNOWN";
    pub const DIGEST_INVALID: &str = "DIGEST_INVALID";
    pub const MANIFEST_BLOB_UNKNOWN: &str = "MANIFEST_BLOB_UNKNOWN";
    pub const MANIFEST_INVALID: &str = "MANIFEST_INVALID";
    pub const MANIFEST_UNKNOWN: &str = "MANIFEST_UNKNOWN";
    pub const NAME_INVALID: &str = "NAME_INVALID";
    pub const NAME_UNKNOWN: &str = "NAME_UNKNOWN";
    pub const SIZE_INVALID: &str = "SIZE_INVALID";
    pub const UNAUTHORIZED: &str = "UNAUTHORIZED";
    pub const DENIED: &str = "DENIED";
    pub const TOOMANYREQUESTS: &str = "TOOMANYREQUESTS";
    pub const UNSUPPORTED: &str = "UNSUPPORTED";
    pub const TAG_INVALID: &str = "TAG_INVALID";
    pub const PAGINATION_NUMBER_INVALID: &str = "PAGINATION_NUMBER_INVALID";
    pub const UNKNOWN: &str = "UNKNOWN";
    /// Distribution's code for a registry that cannot serve right now (503).
    pub const UNAVAILABLE: &str = "UNAVAILABLE";
}

impl RegistryError {
    pub fn status_and_code(&self) -> (StatusCode, &'static str) {
        use StoreError as S;
        match self {
            RegistryError::Store(e) => match e {
                S::DigestInvalid(_) | S::DigestMismatch { .. } => {
                    (StatusCode::BAD_REQUEST, code::DIGEST_INVALID)
                }
                S::NameInvalid(_) => (StatusCode::BAD_REQUEST, code::NAME_INVALID),
                S::TagInvalid(_) => (StatusCode::BAD_REQUEST, code::TAG_INVALID),
                S::NameUnknown(_) => (StatusCode::NOT_FOUND, code::NAME_UNKNOWN),
                S::BlobUnknown(_) => (StatusCode::NOT_FOUND, code::BLOB_UNKNOWN),
                S::ManifestUnknown(_) => (StatusCode::NOT_FOUND, code::MANIFEST_UNKNOWN),
                S::ManifestBlobUnknown(_) => (StatusCode::BAD_REQUEST, code::MANIFEST_BLOB_UNKNOWN),
                S::ManifestInvalid(_) => (StatusCode::BAD_REQUEST, code::MANIFEST_INVALID),
                S::UploadUnknown => (StatusCode::NOT_FOUND, code::BLOB_UPLOAD_UNKNOWN),
                S::UploadInvalid(_) => (StatusCode::BAD_REQUEST, code::BLOB_UPLOAD_INVALID),
                S::UploadOutOfOrder { .. } | S::ChunkLength { .. } => {
                    (StatusCode::RANGE_NOT_SATISFIABLE, code::BLOB_UPLOAD_INVALID)
                }
                S::SizeInvalid(_) => (StatusCode::BAD_REQUEST, code::SIZE_INVALID),
                S::TooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, code::SIZE_INVALID),
                S::TooManyUploads { .. } => (StatusCode::TOO_MANY_REQUESTS, code::TOOMANYREQUESTS),
                // 405 is what the spec lets a registry answer to a delete it will not do,
                // so clients already treat it as "not possible"; DENIED says why (zot
                // answers a delete of a blob in use the same way).
                S::Denied(_) => (StatusCode::METHOD_NOT_ALLOWED, code::DENIED),
                S::RangeInvalid { .. } => (StatusCode::RANGE_NOT_SATISFIABLE, code::BLOB_UNKNOWN),
                S::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, code::UNAVAILABLE),
                S::Busy(_) => (StatusCode::CONFLICT, code::UNKNOWN),
                S::Unsupported(_) => (StatusCode::NOT_IMPLEMENTED, code::UNSUPPORTED),
                S::Io(e) if e.kind() == std::io::ErrorKind::StorageFull => {
                    (StatusCode::INSUFFICIENT_STORAGE, code::UNKNOWN)
                }
                S::Io(_) | S::Corrupt(_) | S::Locked(_) => {
                    (StatusCode::INTERNAL_SERVER_ERROR, code::UNKNOWN)
                }
            },
            RegistryError::NotFound(_) => (StatusCode::NOT_FOUND, code::NAME_UNKNOWN),
            RegistryError::RangeNotSatisfiable(..) => {
                (StatusCode::RANGE_NOT_SATISFIABLE, code::BLOB_UNKNOWN)
            }
            RegistryError::Unsupported(_) => (StatusCode::METHOD_NOT_ALLOWED, code::UNSUPPORTED),
            RegistryError::BadRequest(c, _) => (StatusCode::BAD_REQUEST, c),
            RegistryError::Forbidden(_) => (StatusCode::FORBIDDEN, code::DENIED),
            RegistryError::Auth(AuthError::Unauthorized { .. }) => {
                (StatusCode::UNAUTHORIZED, code::UNAUTHORIZED)
            }
            RegistryError::Auth(AuthError::Denied(_)) => (StatusCode::FORBIDDEN, code::DENIED),
            RegistryError::Auth(AuthError::TooManyRequests { .. }) | RegistryError::Busy(_) => {
                (StatusCode::TOO_MANY_REQUESTS, code::TOOMANYREQUESTS)
            }
            // The importer classifies its errors (tar, digest, size, …) as data.
            RegistryError::Import { error, .. } => (
                StatusCode::from_u16(error.http_status()).unwrap_or(StatusCode::BAD_REQUEST),
                error.code(),
            ),
            RegistryError::Export(error) => (
                StatusCode::from_u16(error.http_status()).unwrap_or(StatusCode::BAD_REQUEST),
                error.code(),
            ),
        }
    }

    /// The spec's `detail`: where an import went wrong; nothing for the others.
    fn detail(&self) -> serde_json::Value {
        match self {
            RegistryError::Import { repository, error } => {
                json!({"entry": error.entry, "repository": repository.as_str()})
            }
            _ => serde_json::Value::Null,
        }
    }

    /// Status and JSON body, as every HTTP answer and the offline `airdock import` give
    /// them. Server errors are logged here and reach the client without internals.
    pub fn status_and_body(&self) -> (StatusCode, String) {
        let (status, code) = self.status_and_code();
        if status == StatusCode::INSUFFICIENT_STORAGE {
            // Not an internal detail: the operator needs to know, and the client may retry.
            tracing::error!(error = %self, "storage full");
            return (
                status,
                error_body(code, "storage full", &serde_json::Value::Null),
            );
        }
        if status == StatusCode::SERVICE_UNAVAILABLE {
            // Not the client's fault and not a bug: say it is worth retrying, not what broke.
            tracing::warn!(error = %self, "storage unavailable");
            return (
                status,
                error_body(
                    code,
                    "storage temporarily unavailable; retry later",
                    &serde_json::Value::Null,
                ),
            );
        }
        if status == StatusCode::NOT_IMPLEMENTED {
            // Not an internal detail either: what this server cannot do, and what to do instead.
            return (
                status,
                error_body(code, &self.to_string(), &serde_json::Value::Null),
            );
        }
        if status.is_server_error() {
            // Internal details go to the log, not to the client.
            tracing::error!(error = %self, "internal error");
            return (
                status,
                error_body(code, "internal error", &serde_json::Value::Null),
            );
        }
        (status, error_body(code, &self.to_string(), &self.detail()))
    }
}

/// Build the spec's error body for `code` with a human `message`.
pub fn error_body(code: &str, message: &str, detail: &serde_json::Value) -> String {
    json!({"errors": [{"code": code, "message": message, "detail": detail}]}).to_string()
}

impl IntoResponse for RegistryError {
    fn into_response(self) -> Response {
        let (status, body) = self.status_and_body();
        let mut resp = (status, body).into_response();
        let h = resp.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        match &self {
            RegistryError::RangeNotSatisfiable(_, size) => {
                if let Ok(v) = HeaderValue::from_str(&format!("bytes */{size}")) {
                    h.insert(header::CONTENT_RANGE, v);
                }
            }
            RegistryError::Auth(AuthError::Unauthorized { challenge, .. }) => {
                if let Ok(v) = HeaderValue::from_str(challenge) {
                    h.insert(header::WWW_AUTHENTICATE, v);
                }
            }
            RegistryError::Auth(AuthError::TooManyRequests { retry_after }) => {
                h.insert(header::RETRY_AFTER, HeaderValue::from(*retry_after));
            }
            RegistryError::Busy(_) => {
                h.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            RegistryError::Store(StoreError::Unavailable(_)) => {
                // The database or bucket is usually back within seconds (a failover, a
                // restart); clients that honour it retry instead of failing the pull.
                h.insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
            }
            RegistryError::Store(StoreError::TooManyUploads { retry_after, .. }) => {
                // When the store can next make room: the offender's oldest session idle
                // long enough to be expired.
                h.insert(header::RETRY_AFTER, HeaderValue::from(*retry_after));
            }
            _ => {}
        }
        resp
    }
}
