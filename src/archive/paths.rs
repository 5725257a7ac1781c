//! Entry names of docker / OCI archives: normalisation, link targets and the tag a reference
//! maps to. Pure functions, fuzzed (`fuzz/fuzz_targets/archive_paths.rs`).

use airdock_storage::{Digest, Tag};

/// Why an entry name or link target is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct PathError(pub &'static str);

/// Link hops followed before a chain counts as a loop.
pub const MAX_LINK_HOPS: usize = 16;

/// `./a//b/` → `a/b`. Refuses absolute names, `..` anywhere, backslashes (a Windows writer's
/// separator that would mean something else to us), NUL and non-UTF-8 names: no writer of
/// these archives produces them, and each is a way to make two names mean one file.
pub fn normalize(name: &[u8]) -> Result<String, PathError> {
    let s = std::str::from_utf8(name).map_err(|_| PathError("name is not UTF-8"))?;
    if s.starts_with('/') {
        return Err(PathError("absolute path"));
    }
    if s.contains('\\') || s.contains('\0') {
        return Err(PathError("backslash or NUL in name"));
    }
    let mut parts = Vec::new();
    for p in s.split('/') {
        match p {
            "" | "." => {}
            ".." => return Err(PathError("path traversal ('..')")),
            p => parts.push(p),
        }
    }
    if parts.is_empty() {
        return Err(PathError("empty name"));
    }
    Ok(parts.join("/"))
}

/// The archive path a symbolic link at `link` (normalised) pointing at `target` names.
/// Relative targets are taken from the link's directory; `..` may climb back up inside the
/// archive (docker writes `../<id>/layer.tar`) but never above its root.
pub fn symlink_target(link: &str, target: &[u8]) -> Result<String, PathError> {
    let t = std::str::from_utf8(target).map_err(|_| PathError("link target is not UTF-8"))?;
    if t.starts_with('/') {
        return Err(PathError("link target is an absolute path"));
    }
    if t.contains('\\') || t.contains('\0') {
        return Err(PathError("backslash or NUL in link target"));
    }
    let mut parts: Vec<&str> = link.split('/').collect();
    parts.pop(); // the link's own name
    for p in t.split('/') {
        match p {
            "" | "." => {}
            ".." => {
                if parts.pop().is_none() {
                    return Err(PathError("link target leaves the archive ('..')"));
                }
            }
            p => parts.push(p),
        }
    }
    if parts.is_empty() {
        return Err(PathError("link target is the archive root"));
    }
    Ok(parts.join("/"))
}

/// `blobs/<alg>/<hex>` → the digest it must hold; `None` for any other name.
pub fn blob_path_digest(path: &str) -> Option<Result<Digest, PathError>> {
    let rest = path.strip_prefix("blobs/")?;
    let (alg, hex) = rest.split_once('/')?;
    Some(
        Digest::parse(&format!("{alg}:{hex}"))
            .map_err(|_| PathError("not a valid digest under blobs/<algorithm>/<hex>")),
    )
}

/// The layout path of a blob, for messages about blobs the archive lacks.
pub fn blob_path(d: &Digest) -> String {
    format!("blobs/{}/{}", d.algorithm(), d.hex())
}

/// The tag a reference from an archive maps to in the target repository.
///
/// `docker.io/library/nginx:1.27`, `localhost:5000/a/b:v1` and `nginx:1.27` give the part after
/// the last `:` that follows the last `/`; a name with no tag gives `latest` (docker's
/// default); a bare word with neither `/` nor `:` (OCI's `org.opencontainers.image.ref.name`
/// is usually just the tag, e.g. `v1.0`) is the tag itself. A digest suffix (`@sha256:…`) is
/// dropped first. The repository part is never used: everything lands in `?repository=`.
pub fn tag_of(reference: &str) -> Result<Tag, String> {
    if reference.is_empty() {
        return Err("empty reference".into());
    }
    let r = reference.split_once('@').map_or(reference, |(n, _)| n);
    let last_slash = r.rfind('/');
    let tag = match r.rfind(':') {
        Some(c) if last_slash.is_none_or(|s| c > s) => &r[c + 1..],
        _ if last_slash.is_none() && !r.is_empty() && reference == r => r,
        _ => "latest",
    };
    Tag::parse(tag).map_err(|e| format!("{tag:?}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_normalised_and_escapes_refused() {
        assert_eq!(normalize(b"./a//b/").expect("ok"), "a/b");
        assert_eq!(normalize(b"manifest.json").expect("ok"), "manifest.json");
        for bad in [
            &b"/etc/passwd"[..],
            b"a/../../b",
            b"..",
            b"a\\b",
            b"./",
            b"\xff",
        ] {
            assert!(normalize(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn symlinks_resolve_inside_the_archive_only() {
        assert_eq!(
            symlink_target("abc/layer.tar", b"../def/layer.tar").expect("ok"),
            "def/layer.tar"
        );
        assert_eq!(
            symlink_target("abc/layer.tar", b"../0123.tar").expect("ok"),
            "0123.tar"
        );
        assert_eq!(symlink_target("a", b"b").expect("ok"), "b");
        assert!(symlink_target("abc/layer.tar", b"../../etc/passwd").is_err());
        assert!(symlink_target("a", b"/etc/passwd").is_err());
        assert!(symlink_target("a/b", b"..").is_err());
    }

    #[test]
    fn blob_paths_name_their_digest() {
        let hex = "a".repeat(64);
        let d = blob_path_digest(&format!("blobs/sha256/{hex}"))
            .expect("some")
            .expect("ok");
        assert_eq!(blob_path(&d), format!("blobs/sha256/{hex}"));
        assert!(blob_path_digest("blobs/sha256/xyz").expect("ok").is_err());
        assert!(blob_path_digest("manifest.json").is_none());
    }

    #[test]
    fn references_map_to_tags() {
        for (r, t) in [
            ("docker.io/library/nginx:1.27", "1.27"),
            ("localhost:5000/a/b:v1", "v1"),
            ("localhost:5000/a/b", "latest"),
            ("nginx:1.27", "1.27"),
            ("v1.0", "v1.0"),
            ("a/b", "latest"),
            ("a/b:v2@sha256:abcd", "v2"),
            ("a@sha256:abcd", "latest"),
        ] {
            assert_eq!(tag_of(r).expect("ok").as_str(), t, "{r}");
        }
        assert!(tag_of("a:b c").is_err());
        assert!(tag_of("").is_err());
    }
}
