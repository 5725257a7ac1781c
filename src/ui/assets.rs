//! The console's static files, compiled into the binary: the stylesheet, its own script and
//! the vendored htmx (npm package `htmx.org`, license file beside it). Served with a long
//! cache lifetime: their paths carry a hash of the content, so a new binary means new URLs.

use std::sync::LazyLock;

use axum::extract::Path;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};

pub const CSS: &[u8] = include_bytes!("assets/console.css");
pub const JS: &[u8] = include_bytes!("assets/console.js");
pub const HTMX: &[u8] = include_bytes!("assets/htmx.min.js");

/// `name` with a short content hash before its extension: `console.1a2b3c4d.css`.
fn versioned(name: &str, bytes: &[u8]) -> String {
    let hex = airdock_storage::Digest::of(airdock_storage::Algorithm::Sha256, bytes).to_string();
    let hash = hex.rsplit(':').next().unwrap_or("").get(..8).unwrap_or("0");
    match name.rsplit_once('.') {
        Some((stem, ext)) => format!("{stem}.{hash}.{ext}"),
        None => format!("{name}.{hash}"),
    }
}

struct Files {
    css: String,
    js: String,
    htmx: String,
}

static FILES: LazyLock<Files> = LazyLock::new(|| Files {
    css: versioned("console.css", CSS),
    js: versioned("console.js", JS),
    htmx: versioned("htmx.min.js", HTMX),
});

pub fn css_path() -> String {
    format!("/ui/static/{}", FILES.css)
}
pub fn js_path() -> String {
    format!("/ui/static/{}", FILES.js)
}
pub fn htmx_path() -> String {
    format!("/ui/static/{}", FILES.htmx)
}

/// `GET /ui/static/<file>`.
pub async fn serve(Path(file): Path<String>) -> Response {
    let (bytes, mime) = if file == FILES.css {
        (CSS, "text/css; charset=utf-8")
    } else if file == FILES.js {
        (JS, "text/javascript; charset=utf-8")
    } else if file == FILES.htmx {
        (HTMX, "text/javascript; charset=utf-8")
    } else {
        return (StatusCode::NOT_FOUND, "no such file").into_response();
    };
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, mime),
            (header::CACHE_CONTROL, "public, max-age=31536000, immutable"),
        ],
        bytes,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    #[test]
    fn names_carry_a_content_hash() {
        let n = super::versioned("console.css", b"a");
        assert!(
            n.starts_with("console.") && n.ends_with(".css") && n.len() == 20,
            "{n}"
        );
        assert_ne!(n, super::versioned("console.css", b"b"));
    }
}
