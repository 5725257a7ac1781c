//! The pure parser from a `/v2/...` path to the endpoint it names. Repository names contain
//! slashes (and may contain `blobs` or `manifests` as components), so it reads from the end.

use airdock_storage::{Digest, Reference, RepoName, StoreError, UploadId};

#[derive(Debug, PartialEq)]
pub enum Endpoint {
    Base,
    Catalog,
    Tags(RepoName),
    Manifest(RepoName, Reference),
    Blob(RepoName, Digest),
    Uploads(RepoName),
    Upload(RepoName, UploadId),
    Referrers(RepoName, Digest),
}

/// Why a path is not an endpoint: 404 for shapes we do not serve, the store's own
/// validation error (400) for a malformed name, digest or reference.
#[derive(Debug)]
pub enum RouteError {
    NotFound,
    Invalid(StoreError),
}

impl From<StoreError> for RouteError {
    fn from(e: StoreError) -> Self {
        RouteError::Invalid(e)
    }
}

/// Parse the part of the path after `/v2/`.
pub fn parse(rest: &str) -> Result<Endpoint, RouteError> {
    if rest.is_empty() {
        return Ok(Endpoint::Base);
    }
    if rest == "_catalog" {
        return Ok(Endpoint::Catalog);
    }
    let parts: Vec<&str> = rest.split('/').collect();
    let n = parts.len();
    let name = |upto: usize| -> Result<RepoName, RouteError> {
        if upto == 0 {
            return Err(RouteError::NotFound);
        }
        Ok(RepoName::parse(&parts[..upto].join("/"))?)
    };
    if n >= 3 && parts[n - 2] == "tags" && parts[n - 1] == "list" {
        return Ok(Endpoint::Tags(name(n - 2)?));
    }
    // `<name>/blobs/uploads/` (trailing slash) or `<name>/blobs/uploads`
    if n >= 4 && parts[n - 3] == "blobs" && parts[n - 2] == "uploads" && parts[n - 1].is_empty() {
        return Ok(Endpoint::Uploads(name(n - 3)?));
    }
    if n >= 3 && parts[n - 2] == "blobs" && parts[n - 1] == "uploads" {
        return Ok(Endpoint::Uploads(name(n - 2)?));
    }
    if n >= 4 && parts[n - 3] == "blobs" && parts[n - 2] == "uploads" {
        let id = UploadId::parse(parts[n - 1])?;
        return Ok(Endpoint::Upload(name(n - 3)?, id));
    }
    if n >= 3 && parts[n - 2] == "blobs" {
        let repo = name(n - 2)?;
        return Ok(Endpoint::Blob(repo, Digest::parse(parts[n - 1])?));
    }
    if n >= 3 && parts[n - 2] == "manifests" {
        let repo = name(n - 2)?;
        return Ok(Endpoint::Manifest(repo, Reference::parse(parts[n - 1])?));
    }
    if n >= 3 && parts[n - 2] == "referrers" {
        let repo = name(n - 2)?;
        return Ok(Endpoint::Referrers(repo, Digest::parse(parts[n - 1])?));
    }
    Err(RouteError::NotFound)
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    fn name(s: &str) -> RepoName {
        RepoName::parse(s).expect("valid name")
    }

    #[test]
    fn table() {
        let d = Digest::parse(D).expect("digest");
        let cases: Vec<(String, Endpoint)> = vec![
            ("".into(), Endpoint::Base),
            ("_catalog".into(), Endpoint::Catalog),
            ("a/tags/list".into(), Endpoint::Tags(name("a"))),
            ("a/b/c/tags/list".into(), Endpoint::Tags(name("a/b/c"))),
            ("tags/tags/list".into(), Endpoint::Tags(name("tags"))),
            (
                "a/manifests/latest".into(),
                Endpoint::Manifest(name("a"), Reference::parse("latest").expect("tag")),
            ),
            (
                format!("blobs/manifests/{D}"),
                Endpoint::Manifest(name("blobs"), Reference::Digest(d.clone())),
            ),
            (
                format!("x/blobs/y/blobs/{D}"),
                Endpoint::Blob(name("x/blobs/y"), d.clone()),
            ),
            ("a/b/blobs/uploads/".into(), Endpoint::Uploads(name("a/b"))),
            ("a/blobs/uploads".into(), Endpoint::Uploads(name("a"))),
            (
                "a/blobs/uploads/0123456789abcdef0123456789abcdef".into(),
                Endpoint::Upload(
                    name("a"),
                    UploadId::parse("0123456789abcdef0123456789abcdef").expect("id"),
                ),
            ),
            (
                format!("a/referrers/{D}"),
                Endpoint::Referrers(name("a"), d.clone()),
            ),
        ];
        for (path, want) in cases {
            assert_eq!(parse(&path).expect(&path), want, "{path}");
        }
    }

    #[test]
    fn rejects() {
        for p in ["a", "a/tags", "tags/list", "a/unknown/x", "blobs/x"] {
            assert!(matches!(parse(p), Err(RouteError::NotFound)), "{p}");
        }
        for p in [
            "A/tags/list",
            "../etc/tags/list",
            "a/blobs/sha256:short",
            "a/manifests/-bad",
            "a//b/tags/list",
            "a/blobs/uploads/../../x",
        ] {
            assert!(parse(p).is_err(), "{p}");
        }
    }
}
