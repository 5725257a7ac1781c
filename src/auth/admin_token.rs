//! The admin token: given with `--admin-token` / `AIRDOCK_ADMIN_TOKEN`, or generated once
//! into `<data-dir>/admin-token` (mode 0600) and reused on every later start, so operators
//! and scripts can always find it next to the data.

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// File name of the generated token inside the data directory.
pub const TOKEN_FILE: &str = "admin-token";

/// A bearer token guarding `/admin/`.
#[derive(Clone)]
pub struct AdminToken(String);

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
    /// Read from an existing `<data-dir>/admin-token`.
    File(PathBuf),
    /// Generated now into `<data-dir>/admin-token`.
    Generated(PathBuf),
}

impl AdminToken {
    /// A token from configuration; `None` when empty or blank.
    pub fn new(secret: &str) -> Option<AdminToken> {
        let t = secret.trim();
        (!t.is_empty()).then(|| AdminToken(t.to_owned()))
    }

    /// The token in force: `configured` if given, else the one in `<data_dir>/admin-token`,
    /// else a fresh random one written there with mode 0600. Logs where it lives.
    pub fn resolve(
        configured: Option<&str>,
        data_dir: &Path,
    ) -> io::Result<(AdminToken, TokenSource)> {
        if let Some(t) = configured.and_then(AdminToken::new) {
            tracing::info!("admin API enabled with the configured token");
            return Ok((t, TokenSource::Configured));
        }
        let path = data_dir.join(TOKEN_FILE);
        match fs::read_to_string(&path) {
            Ok(s) => {
                let token = AdminToken::new(&s).ok_or_else(|| {
                    io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("{} is empty", path.display()),
                    )
                })?;
                let mode = fs::metadata(&path)?.permissions().mode();
                if mode & 0o077 != 0 {
                    tracing::warn!(path = %path.display(), mode = format!("{:o}", mode & 0o777), "admin token file is readable by others; chmod 600 it");
                }
                tracing::info!(path = %path.display(), "admin token read from file");
                return Ok((token, TokenSource::File(path)));
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        fs::create_dir_all(data_dir)?;
        let token = AdminToken(crate::sys::random_hex(32)?);
        // create_new: never clobber a token another process wrote a moment ago.
        let mut f = match fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
        {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                return AdminToken::resolve(None, data_dir);
            }
            Err(e) => return Err(e),
        };
        f.write_all(format!("{}\n", token.0).as_bytes())?;
        f.sync_all()?;
        tracing::info!(path = %path.display(), "admin token generated (send it as `Authorization: Bearer <token>`)");
        Ok((token, TokenSource::Generated(path)))
    }

    /// Checks an `Authorization` header value (`Bearer <token>`), in constant time.
    pub fn verify(&self, authorization: Option<&[u8]>) -> bool {
        let Some(value) = authorization else {
            return false;
        };
        let Some(given) = strip_bearer(value) else {
            return false;
        };
        constant_time_eq(given, self.0.as_bytes())
    }

    /// The secret, for clients that must send it (the CLI).
    pub fn secret(&self) -> &str {
        &self.0
    }
}

fn strip_bearer(v: &[u8]) -> Option<&[u8]> {
    let (scheme, rest) = v.split_at(v.iter().position(|&c| c == b' ')?);
    scheme
        .eq_ignore_ascii_case(b"bearer")
        .then(|| rest.trim_ascii())
}

/// Compares without an early exit, so response timing does not leak a matching prefix.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = u8::from(a.len() != b.len());
    for (i, &x) in a.iter().enumerate() {
        diff |= x ^ b.get(i % b.len().max(1)).copied().unwrap_or(0);
    }
    diff == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_once_then_reused_with_mode_0600() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (a, src) = AdminToken::resolve(None, dir.path()).expect("generate");
        let path = dir.path().join(TOKEN_FILE);
        assert_eq!(src, TokenSource::Generated(path.clone()));
        assert_eq!(a.secret().len(), 64);
        let mode = fs::metadata(&path).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let (b, src) = AdminToken::resolve(None, dir.path()).expect("reuse");
        assert_eq!(src, TokenSource::File(path));
        assert_eq!(a.secret(), b.secret());
        let (c, src) = AdminToken::resolve(Some("  given "), dir.path()).expect("configured");
        assert_eq!(src, TokenSource::Configured);
        assert_eq!(c.secret(), "given");
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
