//! Image reference normalisation with the semantics imgpkg gets from go-containerregistry.
//!
//! imgpkg rewrites every `images.yml` entry through ggcr's `name.NewDigest(x).Name()` and then
//! compares those strings exactly (for example when it matches ImageLocations entries), so
//! the strings we write into an ImageLocations file must be normalised the same way:
//! `docker.io` becomes `index.docker.io`, a one-segment Docker Hub repository gains
//! `library/`, a tag before the digest is dropped, everything else is kept verbatim.

use airdock_storage::{Algorithm, Digest};

use super::names::truncate;

/// Docker Hub's canonical registry name, used when a reference names no registry.
const DEFAULT_REGISTRY: &str = "index.docker.io";

/// A `registry/repository@digest` reference after normalisation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DigestRef {
    pub registry: String,
    pub repository: String,
    pub digest: Digest,
}

/// Why a reference could not be parsed as a digest reference.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{reason}: {reference:?}")]
pub struct BadRef {
    pub reference: String,
    pub reason: &'static str,
}

impl DigestRef {
    /// Parses a digest reference the way `name.NewDigest` (weak validation) does.
    pub fn parse(s: &str) -> Result<DigestRef, BadRef> {
        let bad = |reason| BadRef {
            reference: truncate(s, 300),
            reason,
        };
        let mut parts = s.split('@');
        let (Some(base), Some(dig), None) = (parts.next(), parts.next(), parts.next()) else {
            return Err(bad("a digest reference must contain exactly one '@'"));
        };
        // ggcr only accepts the canonical algorithm here.
        let digest = match Digest::parse(dig) {
            Ok(d) if d.algorithm() == Algorithm::Sha256 => d,
            _ => return Err(bad("unsupported or malformed digest")),
        };
        let base = strip_tag(base);
        let (registry, repository) = split_registry(base);
        if !valid_repository(repository) {
            return Err(bad("invalid repository name"));
        }
        if !valid_registry(registry) {
            return Err(bad("invalid registry name"));
        }
        let registry = match registry {
            "" | "docker.io" => DEFAULT_REGISTRY,
            other => other,
        };
        let repository = if registry == DEFAULT_REGISTRY && !repository.contains('/') {
            format!("library/{repository}")
        } else {
            repository.to_owned()
        };
        Ok(DigestRef {
            registry: registry.to_owned(),
            repository,
            digest,
        })
    }

    /// `registry/repository@digest`, what ggcr's `Digest.Name()` returns.
    pub fn name(&self) -> String {
        format!("{}/{}@{}", self.registry, self.repository, self.digest)
    }
}

/// Drops a `:tag` suffix, as ggcr does when `NewTag` accepts the base; a colon whose
/// right-hand side contains `/` belongs to a registry port and is kept.
fn strip_tag(base: &str) -> &str {
    match base.rsplit_once(':') {
        Some((repo, tag)) if !tag.contains('/') && valid_tag(tag) => repo,
        _ => base,
    }
}

/// The first path segment is a registry only if it looks like a host (has `.` or `:`).
fn split_registry(name: &str) -> (&str, &str) {
    match name.split_once('/') {
        Some((host, rest)) if host.contains('.') || host.contains(':') => (host, rest),
        _ => ("", name),
    }
}

fn valid_tag(tag: &str) -> bool {
    (1..=128).contains(&tag.len())
        && tag
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
}

fn valid_repository(repo: &str) -> bool {
    (2..=255).contains(&repo.len())
        && repo.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'-' | b'.' | b'/')
        })
}

/// An RFC 3986 authority: host (name, IPv4 or bracketed IPv6) and optional port. This is
/// stricter than "whatever url.Parse round-trips", which only matters for garbage input.
fn valid_registry(reg: &str) -> bool {
    if reg.is_empty() {
        return true;
    }
    let (host, port) = if let Some(rest) = reg.strip_prefix('[') {
        match rest.split_once(']') {
            Some((h, p))
                if !h.is_empty() && h.bytes().all(|b| b.is_ascii_hexdigit() || b == b':') =>
            {
                (h, p.strip_prefix(':'))
            }
            _ => return false,
        }
    } else {
        match reg.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (reg, None),
        }
    };
    let host_ok = reg.starts_with('[')
        || (!host.is_empty()
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_')));
    let port_ok = port.is_none_or(|p| p.bytes().all(|b| b.is_ascii_digit()));
    host_ok && port_ok
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:8872a0d0ff55685f8d255ebcebf9c677a820d735a81955406795badb172fc79f";

    fn norm(s: &str) -> String {
        DigestRef::parse(s).expect(s).name()
    }

    #[test]
    fn normalises_like_ggcr() {
        assert_eq!(
            norm(&format!("127.0.0.1:5000/src/app1@{D}")),
            format!("127.0.0.1:5000/src/app1@{D}")
        );
        assert_eq!(
            norm(&format!("docker.io/dkalinin/app@{D}")),
            format!("index.docker.io/dkalinin/app@{D}")
        );
        assert_eq!(
            norm(&format!("nginx@{D}")),
            format!("index.docker.io/library/nginx@{D}")
        );
        assert_eq!(
            norm(&format!("docker.io/nginx:1.2@{D}")),
            format!("index.docker.io/library/nginx@{D}")
        );
        assert_eq!(
            norm(&format!("localhost:5000/a/b:v1@{D}")),
            format!("localhost:5000/a/b@{D}")
        );
        assert_eq!(
            norm(&format!("ghcr.io/org/x@{D}")),
            format!("ghcr.io/org/x@{D}")
        );
        // No dot or colon: the first segment is part of the repository on Docker Hub.
        assert_eq!(
            norm(&format!("localhost/app@{D}")),
            format!("index.docker.io/localhost/app@{D}")
        );
    }

    #[test]
    fn rejects_non_digest_refs() {
        for s in [
            "nginx:latest".to_owned(),
            format!("nginx@{D}@{D}"),
            "nginx@sha512:00".to_owned(),
            format!("UPPER/case@{D}"),
            format!("@{D}"),
            format!("a@{D}"),
        ] {
            assert!(DigestRef::parse(&s).is_err(), "{s}");
        }
    }
}
