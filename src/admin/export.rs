//! `GET /admin/v1/export?repository=NAME&tag=TAG` (or `&digest=`, or `&ref=NAME:TAG` /
//! `&ref=NAME@DIGEST` repeated) and `POST /admin/v1/export[?repository=NAME]` with an
//! ImagesLock body: a tar in imgpkg's `--to-tar` format, streamed (see `imgpkg::export`).
//! Admins may export anything; other callers need pull on every repository the export
//! reads, checked as each is reached (the auth layer's [`ReadCheck`]).

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};

use airdock_storage::{Digest, Reference, RepoName, Tag};

use crate::auth::{AuthError, ReadCheck};
use crate::error::{code, RegistryError};
use crate::http::Query;
use crate::imgpkg::export::{self, ExportErrorKind, Wanted};
use crate::imgpkg::lock::MAX_IMAGES_LOCK;
use crate::AppState;

pub async fn export(State(st): State<AppState>, req: Request) -> Result<Response, RegistryError> {
    let (parts, body) = req.into_parts();
    let query = Query::parse(parts.uri.query());
    // Fail closed: the layer always leaves a check on this path.
    let check = parts
        .extensions
        .get::<ReadCheck>()
        .cloned()
        .ok_or_else(|| AuthError::Denied("export is not allowed here".into()))?;
    let wanted = if parts.method == Method::POST {
        let repo = query.get("repository").map(RepoName::parse).transpose()?;
        let bytes = axum::body::to_bytes(body, MAX_IMAGES_LOCK as usize)
            .await
            .map_err(|e| {
                RegistryError::BadRequest(
                    code::SIZE_INVALID,
                    format!("reading the ImagesLock body (at most {MAX_IMAGES_LOCK} bytes): {e}"),
                )
            })?;
        export::wanted_from_lock(&bytes, repo.as_ref())?
    } else {
        wanted_from_query(&query)?
    };
    // How clients reach us (behind a trusted proxy: the proxy's name), for `Refs`.
    let host = parts
        .extensions
        .get::<crate::forwarded::Client>()
        .and_then(|c| c.host().map(str::to_owned))
        .unwrap_or_else(|| "localhost".to_owned());
    let may_read = |r: &RepoName| check.check(r.as_str()).is_ok();
    let plan = match export::plan(&st.store, &host, &wanted, &may_read).await {
        Ok(p) => p,
        Err(e) => {
            if let ExportErrorKind::Refused(repo) = &e.kind {
                // The answer a pull of that repository would get (401 with the scope, or 403).
                check.check(repo.as_str())?;
            }
            return Err(e.into());
        }
    };
    let len = plan.tar_len();
    tracing::info!(
        references = wanted.len(),
        elements = plan.elements,
        blobs = plan.blob_count(),
        bytes = len,
        "export started"
    );
    let name = wanted
        .first()
        .map(|w| format!("{}-{}", w.repo, w.reference).replace(['/', ':'], "-"))
        .unwrap_or_default();
    let mut resp = Body::from_stream(plan.into_stream(st.store.clone())).into_response();
    *resp.status_mut() = StatusCode::OK;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-tar"),
    );
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{name}.tar\"")) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    Ok(resp)
}

/// `repository` + `tag`|`digest` (tag `latest` when neither, as imgpkg and docker assume),
/// and every `ref`.
fn wanted_from_query(q: &Query) -> Result<Vec<Wanted>, RegistryError> {
    let mut out = Vec::new();
    if let Some(r) = q.get("repository") {
        let repo = RepoName::parse(r)?;
        let reference = match (q.get("tag"), q.get("digest")) {
            (Some(_), Some(_)) => {
                return Err(RegistryError::BadRequest(
                    code::NAME_INVALID,
                    "give `tag` or `digest`, not both".into(),
                ))
            }
            (Some(t), None) => Reference::Tag(Tag::parse(t)?),
            (None, Some(d)) => Reference::Digest(Digest::parse(d)?),
            (None, None) => Reference::Tag(Tag::parse("latest")?),
        };
        out.push(Wanted { repo, reference });
    }
    for r in q.all("ref") {
        out.push(parse_ref(r)?);
    }
    if out.is_empty() {
        return Err(RegistryError::BadRequest(
            code::NAME_INVALID,
            "name what to export: `repository` (with `tag` or `digest`) or `ref=NAME:TAG` / `ref=NAME@DIGEST`, repeated".into(),
        ));
    }
    Ok(out)
}

/// `NAME@DIGEST`, `NAME:TAG` or `NAME` (tag `latest`).
fn parse_ref(s: &str) -> Result<Wanted, RegistryError> {
    let (name, reference) = if let Some((n, d)) = s.split_once('@') {
        (n, Reference::Digest(Digest::parse(d)?))
    } else {
        match s.rsplit_once(':') {
            Some((n, t)) if !t.contains('/') => (n, Reference::Tag(Tag::parse(t)?)),
            _ => (s, Reference::Tag(Tag::parse("latest")?)),
        }
    };
    Ok(Wanted {
        repo: RepoName::parse(name)?,
        reference,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_parse_like_docker_names() {
        let d = format!("sha256:{}", "ab".repeat(32));
        let w = parse_ref(&format!("a/b@{d}")).expect("digest");
        assert_eq!(w.reference.to_string(), d);
        let w = parse_ref("a/b:1.0").expect("tag");
        assert_eq!(
            (w.repo.as_str(), w.reference.to_string().as_str()),
            ("a/b", "1.0")
        );
        let w = parse_ref("a/b").expect("latest");
        assert_eq!(w.reference.to_string(), "latest");
        assert!(parse_ref("A/b:1").is_err());
        assert!(parse_ref("a/b@sha256:zz").is_err());
        let q = Query::parse(Some("repository=a&tag=1&digest=sha256:00"));
        assert!(wanted_from_query(&q).is_err());
        assert!(wanted_from_query(&Query::parse(None)).is_err());
        let q = Query::parse(Some("ref=a:1&ref=b:2"));
        assert_eq!(wanted_from_query(&q).expect("refs").len(), 2);
    }
}
