//! Which bucket a data dir's blobs live in, recorded in the data dir itself
//! (`<data-dir>/s3/bucket.json`) the first time it is served on S3.
//!
//! The journal in the data dir names blobs by digest only; opened against the wrong blob
//! backend every blob looks missing, and an offline command (`gc`, `fsck --repair`) would
//! act on that. So a data dir is bound to one backend: the first S3 open records endpoint,
//! bucket, region, prefix and addressing style (never credentials); later opens must agree,
//! and commands that take no storage flags (`gc`, `fsck`, `import`/`export --data-dir`) find
//! the bucket here and the credentials in the standard `AWS_*` environment.

use std::io;
use std::path::{Path, PathBuf};

use airdock_storage::StoreError;
use serde::{Deserialize, Serialize};

use crate::{state_dir, S3Config};

/// What is recorded: where the blobs are, not who may read them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Binding {
    endpoint: Option<String>,
    bucket: String,
    region: String,
    prefix: String,
    path_style: bool,
}

impl Binding {
    fn of(cfg: &S3Config) -> Binding {
        Binding {
            endpoint: cfg.endpoint.clone(),
            bucket: cfg.bucket.clone(),
            region: cfg.region.clone(),
            prefix: cfg.prefix.trim_matches('/').to_owned(),
            path_style: cfg.path_style,
        }
    }

    fn describe(&self) -> String {
        let at = self.endpoint.as_deref().unwrap_or("AWS");
        match self.prefix.as_str() {
            "" => format!("bucket {} at {at}", self.bucket),
            p => format!("bucket {} (prefix {p}) at {at}", self.bucket),
        }
    }
}

fn binding_path(data_dir: &Path) -> PathBuf {
    state_dir(data_dir).join("bucket.json")
}

fn invalid(msg: String) -> StoreError {
    StoreError::Io(io::Error::new(io::ErrorKind::InvalidInput, msg))
}

fn read(data_dir: &Path) -> Result<Option<Binding>, StoreError> {
    let path = binding_path(data_dir);
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| invalid(format!("{}: {e}", path.display()))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// The S3 configuration `data_dir` is bound to, if any, with credentials from
/// `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY` and no presigned redirects.
pub fn bound(data_dir: &Path) -> Result<Option<S3Config>, StoreError> {
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    Ok(read(data_dir)?.map(|b| S3Config {
        endpoint: b.endpoint,
        bucket: b.bucket,
        region: b.region,
        prefix: b.prefix,
        path_style: b.path_style,
        redirect: false,
        access_key_id: env("AWS_ACCESS_KEY_ID"),
        secret_access_key: env("AWS_SECRET_ACCESS_KEY"),
    }))
}

/// Bind `data_dir` to `cfg`'s bucket, or check that it already is. Refused: a data dir bound
/// to another bucket, endpoint or prefix, and one whose journal already names blobs kept on
/// the local filesystem (switching would make them all look missing).
pub fn bind(data_dir: &Path, cfg: &S3Config) -> Result<(), StoreError> {
    let want = Binding::of(cfg);
    match read(data_dir)? {
        Some(have) if have == want => return Ok(()),
        Some(have) => {
            return Err(invalid(format!(
                "data dir {} keeps its blobs in {}, not {}; serve it with that bucket, or use \
another data dir",
                data_dir.display(),
                have.describe(),
                want.describe()
            )))
        }
        None => {}
    }
    let journal = airdock_storage::layout::journal_path(data_dir);
    if std::fs::metadata(&journal).is_ok_and(|m| m.len() > 0) {
        return Err(invalid(format!(
            "data dir {} already holds blobs on the local filesystem; S3 storage needs a new \
data dir (or restore a backup into one)",
            data_dir.display()
        )));
    }
    let dir = state_dir(data_dir);
    std::fs::create_dir_all(&dir)?;
    let json = serde_json::to_vec_pretty(&want).map_err(io::Error::other)?;
    // Durable before the first blob is acknowledged: temp, fsync, rename, fsync the dir.
    let tmp = dir.join("bucket.json.tmp");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&json)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, binding_path(data_dir))?;
    std::fs::File::open(&dir)?.sync_all()?;
    std::fs::File::open(data_dir)?.sync_all()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(bucket: &str, prefix: &str) -> S3Config {
        S3Config {
            endpoint: Some("http://127.0.0.1:9".into()),
            bucket: bucket.into(),
            region: "us-east-1".into(),
            prefix: prefix.into(),
            path_style: true,
            redirect: true,
            access_key_id: Some("k".into()),
            secret_access_key: Some("s".into()),
        }
    }

    #[test]
    fn a_data_dir_is_bound_to_one_bucket() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(bound(dir.path()).expect("read"), None);
        bind(dir.path(), &cfg("a", "lab/")).expect("first bind");
        bind(dir.path(), &cfg("a", "/lab")).expect("same bucket and prefix");
        let e = bind(dir.path(), &cfg("b", "lab")).expect_err("another bucket");
        assert!(e.to_string().contains("bucket a (prefix lab)"), "{e}");
        assert!(bind(dir.path(), &cfg("a", "other")).is_err());
        let found = bound(dir.path()).expect("read").expect("bound");
        assert_eq!((found.bucket.as_str(), found.prefix.as_str()), ("a", "lab"));
        assert!(!found.redirect, "no redirects unless asked for");
        let text = std::fs::read_to_string(binding_path(dir.path())).expect("file");
        assert!(!text.contains("\"s\""), "no credentials recorded: {text}");
    }

    #[test]
    fn a_filesystem_data_dir_is_not_switched() {
        let dir = tempfile::tempdir().expect("tempdir");
        let journal = airdock_storage::layout::journal_path(dir.path());
        std::fs::create_dir_all(journal.parent().expect("meta/")).expect("meta");
        std::fs::write(&journal, b"x {}\n").expect("journal");
        let e = bind(dir.path(), &cfg("a", "")).expect_err("filesystem blobs");
        assert!(e.to_string().contains("local filesystem"), "{e}");
    }
}
