//! htpasswd files with bcrypt entries (`htpasswd -B` writes them): loading, re-loading when
//! the file changes, checking a password, and adding a user (`airdock user add`).

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::RwLock;
use std::time::{Duration, Instant, SystemTime};

/// A bcrypt hash of a random password: checked when the user is unknown, so that an unknown
/// name takes as long to refuse as a wrong password (no user enumeration by timing).
const DUMMY_HASH: &str = "$2b$10$N9qo8uLOickgx2ZMRZoMyeIjZAgcfl7p92ldGxad68LJZdL17lhWy";

/// How often the file's modification time is looked at.
const RECHECK: Duration = Duration::from_secs(2);

#[derive(Debug)]
pub struct Htpasswd {
    path: PathBuf,
    /// std RwLock: held only to copy a hash out or to swap the map, never across an await.
    state: RwLock<Loaded>,
}

#[derive(Debug)]
struct Loaded {
    users: HashMap<String, String>,
    mtime: Option<SystemTime>,
    checked: Instant,
}

/// Parse `name:hash` lines; blank lines and `#` comments are skipped. Entries that are not
/// bcrypt are refused: other htpasswd schemes (MD5, SHA1, crypt) are too weak to accept.
pub fn parse(text: &str) -> Result<HashMap<String, String>, String> {
    let mut users = HashMap::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((name, hash)) = line.split_once(':') else {
            return Err(format!("line {}: expected NAME:HASH", i + 1));
        };
        if !(hash.starts_with("$2y$") || hash.starts_with("$2a$") || hash.starts_with("$2b$")) {
            return Err(format!(
                "line {}: the entry of `{name}` is not bcrypt (use htpasswd -B or airdock user add)",
                i + 1
            ));
        }
        users.insert(name.to_owned(), hash.to_owned());
    }
    Ok(users)
}

fn mtime(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

impl Htpasswd {
    pub fn load(path: &Path) -> io::Result<Htpasswd> {
        let text = std::fs::read_to_string(path)?;
        let users = parse(&text).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        Ok(Htpasswd {
            path: path.to_owned(),
            state: RwLock::new(Loaded {
                users,
                mtime: mtime(path),
                checked: Instant::now(),
            }),
        })
    }

    /// Re-read the file if it changed; a broken file keeps the users already loaded.
    fn refresh(&self) {
        {
            let s = self.state.read().unwrap_or_else(|e| e.into_inner());
            if s.checked.elapsed() < RECHECK {
                return;
            }
        }
        let now = mtime(&self.path);
        let mut s = self.state.write().unwrap_or_else(|e| e.into_inner());
        s.checked = Instant::now();
        if now == s.mtime {
            return;
        }
        match std::fs::read_to_string(&self.path).map(|t| parse(&t)) {
            Ok(Ok(users)) => {
                tracing::info!(users = users.len(), "htpasswd file reloaded");
                s.users = users;
                s.mtime = now;
            }
            Ok(Err(e)) => tracing::warn!(error = %e, "htpasswd file not reloaded"),
            Err(e) => tracing::warn!(error = %e, "htpasswd file not reloaded"),
        }
    }

    /// Check `password` for `user`. bcrypt is slow on purpose: call from a blocking thread.
    pub fn verify(&self, user: &str, password: &str) -> bool {
        self.refresh();
        let hash = {
            let s = self.state.read().unwrap_or_else(|e| e.into_inner());
            s.users.get(user).cloned()
        };
        match hash {
            // bcrypt::verify compares the hashes in constant time.
            Some(h) => bcrypt::verify(password, &h).unwrap_or(false),
            None => {
                let _ = bcrypt::verify(password, DUMMY_HASH);
                false
            }
        }
    }
}

/// Add `name` with `password` to the file at `path` (created 0600 if missing), replacing an
/// existing entry. Written to a temp file and renamed, so a reader never sees half a file.
pub fn add_user(path: &Path, name: &str, password: &str, cost: u32) -> anyhow::Result<bool> {
    if name.is_empty() || name.contains(':') || name.chars().any(char::is_whitespace) {
        anyhow::bail!("a user name is non-empty, without `:` or spaces");
    }
    if password.is_empty() {
        anyhow::bail!("empty password");
    }
    let hash = bcrypt::hash(password, cost)?;
    let old = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e.into()),
    };
    let mut replaced = false;
    let mut out = String::new();
    for line in old.lines() {
        if line.split_once(':').map(|(n, _)| n) == Some(name) {
            replaced = true;
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out.push_str(&format!("{name}:{hash}\n"));
    let tmp = path.with_extension("airdock-tmp");
    crate::sys::write_private(&tmp, out.as_bytes())?;
    std::fs::rename(&tmp, path)?;
    Ok(replaced)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_refuses_weak_schemes() {
        assert!(parse("a:$apr1$xyz\n").is_err());
        assert!(parse("nocolon\n").is_err());
        let u = parse("# c\n\nbob:$2y$05$abc\n").expect("parse");
        assert_eq!(u.len(), 1);
    }

    #[test]
    fn add_then_verify() {
        let dir = tempfile::tempdir().expect("tmp");
        let p = dir.path().join("htpasswd");
        assert!(!add_user(&p, "alice", "s3cret", 4).expect("add"));
        assert!(!add_user(&p, "bob", "pw", 4).expect("add"));
        assert!(add_user(&p, "alice", "new", 4).expect("replace"));
        let h = Htpasswd::load(&p).expect("load");
        assert!(h.verify("alice", "new"));
        assert!(!h.verify("alice", "s3cret"));
        assert!(h.verify("bob", "pw"));
        assert!(!h.verify("carol", "pw"));
        assert!(add_user(&p, "a:b", "x", 4).is_err());
    }
}
