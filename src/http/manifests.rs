//! Manifests: `GET`/`HEAD`/`PUT`/`DELETE /v2/<name>/manifests/<reference>`, stored and
//! served byte for byte with the media type they were pushed as.

use axum::body::Body;
use axum::http::{header, HeaderName, StatusCode};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;

use airdock_storage::{ManifestDelete, Reference, RepoName, StoreError, Tag, MAX_MANIFEST_BYTES};

use super::{append, empty, set, Req, Result, CONTENT_DIGEST};
use crate::AppState;

const OCI_SUBJECT: HeaderName = HeaderName::from_static("oci-subject");
const OCI_TAG: HeaderName = HeaderName::from_static("oci-tag");

/// GET/HEAD → 200 with the stored bytes, `Content-Type` as pushed.
pub async fn get(
    state: &AppState,
    repo: &RepoName,
    reference: &Reference,
    req: &Req,
) -> Result<Response> {
    let head = req.method == axum::http::Method::HEAD;
    let (record, body) = if head {
        (state.store.stat_manifest(repo, reference)?, Body::empty())
    } else {
        let m = state.store.get_manifest(repo, reference).await?;
        (m.record, Body::from(m.bytes))
    };
    let mut resp = (StatusCode::OK, body).into_response();
    set(&mut resp, header::CONTENT_TYPE, &record.media_type);
    set(&mut resp, header::CONTENT_LENGTH, record.size.to_string());
    set(&mut resp, CONTENT_DIGEST, record.digest.to_string());
    set(&mut resp, header::ETAG, format!("\"{}\"", record.digest));
    Ok(resp)
}

/// PUT [`?tag=a&tag=b`] → 201 + `Location`, `OCI-Subject` when the manifest has a subject,
/// and one `OCI-Tag` per tag applied.
pub async fn put(
    state: &AppState,
    repo: &RepoName,
    reference: &Reference,
    req: Req,
) -> Result<Response> {
    let media_type = req
        .header(header::CONTENT_TYPE)
        .map(|m| m.split(';').next().unwrap_or(m).trim().to_owned())
        .unwrap_or_default();
    let tags = req
        .query
        .all("tag")
        .map(Tag::parse)
        .collect::<std::result::Result<Vec<_>, _>>()?;
    let too_large = || {
        StoreError::TooLarge(format!(
            "manifests are limited to {MAX_MANIFEST_BYTES} bytes"
        ))
    };
    let body = req.take_body();
    let bytes = match read_limited(body).await {
        Ok(b) => b,
        Err(None) => return Err(too_large().into()),
        Err(Some(e)) => {
            return Err(StoreError::ManifestInvalid(format!("reading the body: {e}")).into())
        }
    };
    let record = state
        .store
        .put_manifest(repo, reference, &media_type, &bytes, &tags, !state.sparse)
        .await?;
    let mut resp = empty(StatusCode::CREATED);
    set(
        &mut resp,
        header::LOCATION,
        format!("/v2/{repo}/manifests/{}", record.digest),
    );
    set(&mut resp, CONTENT_DIGEST, record.digest.to_string());
    if let Some(subject) = &record.subject {
        set(&mut resp, OCI_SUBJECT, subject.to_string());
    }
    for t in &tags {
        append(&mut resp, OCI_TAG, t.as_str());
    }
    Ok(resp)
}

/// Read a manifest body of at most [`MAX_MANIFEST_BYTES`]; `Err(None)` when it is larger.
/// The 413 goes out at once: the server reads and drops the rest of the body (bounded) so
/// that the client sees it rather than a reset (`server::RequestBody`).
async fn read_limited(body: Body) -> std::result::Result<bytes::Bytes, Option<axum::Error>> {
    let mut stream = body.into_data_stream();
    let mut buf = bytes::BytesMut::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(Some)?;
        if buf.len().saturating_add(chunk.len()) > MAX_MANIFEST_BYTES {
            return Err(None);
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf.freeze())
}

/// DELETE by digest removes the manifest and its tags; by tag, only the tag → 202.
/// `?cascade=true` also removes the children of an index that no tag or other index keeps.
/// A manifest an index lists is refused (405 `DENIED`, naming the index) unless the server
/// allows deleting referenced content (`storage.allow_referenced_blob_delete`: a manifest is
/// a blob too, and Distribution, which that switch imitates, deletes both alike).
pub async fn delete(
    state: &AppState,
    repo: &RepoName,
    reference: &Reference,
    req: &Req,
) -> Result<Response> {
    let cascade = matches!(req.query.get("cascade"), Some("" | "1" | "true"));
    let how = ManifestDelete {
        orphans: cascade,
        even_if_listed: state.allow_referenced_blob_delete,
    };
    state.store.delete_manifest(repo, reference, how).await?;
    Ok(empty(StatusCode::ACCEPTED))
}
