//! `GET /v2/<name>/referrers/<digest>[?artifactType=]`: an image index of the manifests
//! whose `subject` is that digest. Never 404: no referrers is an empty index.

use axum::http::{header, HeaderName, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Map, Value};

use airdock_storage::{Digest, RepoName, OCI_INDEX};

use super::{set, Req, Result};
use crate::AppState;

const FILTERS_APPLIED: HeaderName = HeaderName::from_static("oci-filters-applied");

pub async fn list(
    state: &AppState,
    repo: &RepoName,
    subject: &Digest,
    req: &Req,
) -> Result<Response> {
    let artifact_type = req.query.get("artifactType").filter(|t| !t.is_empty());
    let manifests: Vec<Value> = state
        .store
        .referrers(repo, subject, artifact_type)
        .await
        .into_iter()
        .map(|r| {
            let m = &r.record;
            let mut d = Map::new();
            d.insert("mediaType".into(), json!(m.media_type));
            d.insert("digest".into(), json!(m.digest.to_string()));
            d.insert("size".into(), json!(m.size));
            if let Some(t) = &m.artifact_type {
                d.insert("artifactType".into(), json!(t));
            }
            if let Some(a) = r.annotations {
                d.insert("annotations".into(), Value::Object(a));
            }
            Value::Object(d)
        })
        .collect();
    let body =
        json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests}).to_string();
    let mut resp = (StatusCode::OK, [(header::CONTENT_TYPE, OCI_INDEX)], body).into_response();
    if artifact_type.is_some() {
        set(&mut resp, FILTERS_APPLIED, "artifactType");
    }
    Ok(resp)
}
