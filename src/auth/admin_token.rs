//! The admin token: given with `--admin-token` / `AIRDOCK_ADMIN_TOKEN`, or kept in a file —
//! `--admin-token-file` / `AIRDOCK_ADMIN_TOKEN_FILE`, by default `<data-dir>/admin-token`,
//! generated there (mode 0600) on first start and reused on every later one, so operators
//! and scripts can always find it next to the data. A token kept in a file is re-read when
//! the file changes, so rotating it is writing a new file: the old token is refused within
//! [`RECHECK`], without a restart.

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use subtle::ConstantTimeEq;

/// File name of the generated token inside the data directory.
pub const TOKEN_FILE: &str = "admin-token";

/// How often a token file is read again. Short: a rotation must take effect within 2 s, and
/// reading a few bytes once a second costs nothing.
pub const RECHECK: Duration = Duration::from_secs(1);

/// A bearer token guarding `/admin/`. Cheap to clone: clones share the file's state.
#[derive(Clone)]
pub struct AdminToken(Arc<Inner>);

enum Inner {
    /// From a flag or the environment; never changes.
    Fixed(String),
    /// Kept in `path`; `None` while the file is missing, empty or unreadable (refuse all).
    File {
        path: PathBuf,
        /// std RwLock: held to compare or swap a short string, never across an await.
        state: RwLock<(Option<String>, Instant)>,
    },
}

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the secret itself.
        f.write_str("AdminToken(..)")
    }
}

/// Where the token in force came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TokenSource {
    /// `--admin-token` or `AIRDOCK_ADMIN_TOKEN`.
    Configured,
    /// Read from an existing token file.
    File(PathBuf),
    /// Generated now into the token file.
    Generated(PathBuf),
}

/// The secret in a token file's text: surrounding whitespace (the final newline) is not
/// part of it; blank means none.
fn secret_of(text: &str) -> Option<String> {
    let t = text.trim();
    (!t.is_empty()).then(|| t.to_owned())
}

impl AdminToken {
    /// A fixed token; `None` when empty or blank.
    pub fn new(secret: &str) -> Option<AdminToken> {
        secret_of(secret).map(|s| AdminToken(Arc::new(Inner::Fixed(s))))
    }

    /// The token in force: `configured` if given, else the one in `file` (by default
    /// `<data_dir>/admin-token`), else a fresh random one written there with mode 0600.
    /// Logs where it lives.
    pub fn resolve(
        configured: Option<&str>,
        file: Option<&Path>,
        data_dir: &Path,
    ) -> io::Result<(AdminToken, TokenSource)> {
        if let Some(t) = configured.and_then(AdminToken::new) {
            tracing::info!("admin API enabled with the configured token");
            return Ok((t, TokenSource::Configured));
        }
        let path = file.map_or_else(|| data_dir.join(TOKEN_FILE), Path::to_owned);
        let from_file = |secret: String| {
            AdminToken(Arc::new(Inner::File {
                path: path.clone(),
                state: RwLock::new((Some(secret), Instant::now())),
            }))
        };
        match fs::read_to_string(&path) {
            Ok(s) => {
                let secret = secret_of(&s).ok_or_else(|| {
                    io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("{} is empty", path.display()),
                    )
                })?;
                let mode = fs::metadata(&path)?.permissions().mode();
                // Only "other" bits: a Kubernetes Secret mounted 0440 with the pod's fsGroup is
                // the intended way to share the file with the server's group.
                if mode & 0o007 != 0 {
                    tracing::warn!(path = %path.display(), mode = format!("{:o}", mode & 0o777), "admin token file is open to every user; chmod 600 (or 640) it");
                }
                tracing::info!(path = %path.display(), "admin token read from file (re-read when it changes)");
                return Ok((from_file(secret), TokenSource::File(path)));
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir)?;
        }
        let secret = crate::sys::random_hex(32)?;
        // create_new: never clobber a token another process wrote a moment ago.
        let mut f = match fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
        {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                return AdminToken::resolve(None, Some(&path), data_dir);
            }
            Err(e) => return Err(e),
        };
        f.write_all(format!("{secret}\n").as_bytes())?;
        f.sync_all()?;
        // The file's name is durable only once its directory is fsynced; a power loss before
        // that would bring a different token back after the operator saved this one.
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            fs::File::open(dir)?.sync_all()?;
        }
        tracing::info!(path = %path.display(), "admin token generated (send it as `Authorization: Bearer <token>`)");
        Ok((from_file(secret), TokenSource::Generated(path)))
    }

    /// Whether `given` is the token in force, compared in constant time. A token file is
    /// read again when the last read is older than [`RECHECK`].
    pub fn matches(&self, given: &str) -> bool {
        let eq = |secret: &str| bool::from(secret.as_bytes().ct_eq(given.trim().as_bytes()));
        match &*self.0 {
            Inner::Fixed(s) => eq(s),
            Inner::File { path, state } => {
                self.refresh(path, state);
                let s = state.read().unwrap_or_else(|e| e.into_inner());
                s.0.as_deref().is_some_and(eq)
            }
        }
    }

    /// Re-read the token file if due. Reading it whole (a few bytes) rather than comparing
    /// modification times catches a rewrite within the file system's time granularity.
    /// A file that is gone, unreadable or blank refuses every token until it is valid
    /// again (fail closed): an operator who removed it meant to revoke.
    fn refresh(&self, path: &Path, state: &RwLock<(Option<String>, Instant)>) {
        {
            let s = state.read().unwrap_or_else(|e| e.into_inner());
            if s.1.elapsed() < RECHECK {
                return;
            }
        }
        let now = fs::read_to_string(path).ok().as_deref().and_then(secret_of);
        let mut s = state.write().unwrap_or_else(|e| e.into_inner());
        s.1 = Instant::now();
        if now != s.0 {
            match &now {
                Some(_) => {
                    tracing::info!(path = %path.display(), "admin token changed; the old one is refused from now on")
                }
                None => {
                    tracing::error!(path = %path.display(), "admin token file missing, unreadable or empty: refusing the admin token until it is valid again")
                }
            }
            s.0 = now;
        }
    }

    /// Checks an `Authorization` header value (`Bearer <token>`).
    pub fn verify(&self, authorization: Option<&[u8]>) -> bool {
        authorization
            .and_then(|v| std::str::from_utf8(v).ok())
            .and_then(|v| v.split_once(' '))
            .is_some_and(|(scheme, rest)| {
                scheme.eq_ignore_ascii_case("bearer") && self.matches(rest)
            })
    }

    /// The secret in force, for clients that must send it (the CLI).
    pub fn secret(&self) -> Option<String> {
        match &*self.0 {
            Inner::Fixed(s) => Some(s.clone()),
            Inner::File { path, state } => {
                self.refresh(path, state);
                state.read().unwrap_or_else(|e| e.into_inner()).0.clone()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_once_then_reused_with_mode_0600() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (a, src) = AdminToken::resolve(None, None, dir.path()).expect("generate");
        let path = dir.path().join(TOKEN_FILE);
        assert_eq!(src, TokenSource::Generated(path.clone()));
        let secret = a.secret().expect("secret");
        assert_eq!(secret.len(), 64);
        let mode = fs::metadata(&path).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let (b, src) = AdminToken::resolve(None, None, dir.path()).expect("reuse");
        assert_eq!(src, TokenSource::File(path));
        assert_eq!(b.secret(), Some(secret));
        let (c, src) = AdminToken::resolve(Some("  given "), None, dir.path()).expect("configured");
        assert_eq!(src, TokenSource::Configured);
        assert_eq!(c.secret().as_deref(), Some("given"));
        let elsewhere = dir.path().join("sub/token");
        let (d, src) = AdminToken::resolve(None, Some(&elsewhere), dir.path()).expect("file");
        assert_eq!(src, TokenSource::Generated(elsewhere));
        assert_ne!(d.secret(), b.secret());
    }

    #[test]
    fn verifies_bearer_header() {
        let t = AdminToken::new("s3cret").expect("token");
        assert!(t.verify(Some(b"Bearer s3cret")));
        assert!(t.verify(Some(b"bearer  s3cret ")));
        for bad in [
            &b"Bearer s3cre"[..],
            b"Bearer s3cretX",
            b"Basic s3cret",
            b"s3cret",
            b"Bearer ",
            b"",
        ] {
            assert!(!t.verify(Some(bad)), "{}", String::from_utf8_lossy(bad));
        }
        assert!(!t.verify(None));
        assert!(AdminToken::new("   ").is_none());
    }
}
