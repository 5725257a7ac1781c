//! htpasswd files with bcrypt entries (`htpasswd -B` writes them): loading, re-loading when
//! the file changes, checking a password, and changing it (`airdock user add|del|passwd|list`).

use std::collections::HashMap;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::RwLock;
use std::time::{Duration, Instant};

/// A bcrypt hash of a random password: checked when the user is unknown, so that an unknown
/// name takes as long to refuse as a wrong password (no user enumeration by timing).
const DUMMY_HASH: &str = "$2b$10$N9qo8uLOickgx2ZMRZoMyeIjZAgcfl7p92ldGxad68LJZdL17lhWy";

/// How often the file is looked at (a `stat`, on the next login after this long): a change
/// is in force at most this long after it is made. Well under the 2 s operators are told.
pub const RECHECK: Duration = Duration::from_millis(500);

#[derive(Debug)]
pub struct Htpasswd {
    path: PathBuf,
    /// std RwLock: held only to copy a hash out or to swap the map, never across an await.
    state: RwLock<Loaded>,
}

#[derive(Debug)]
struct Loaded {
    /// `None` while the file cannot be read or parsed: every login is refused (fail closed)
    /// rather than served from users the operator may have meant to remove.
    users: Option<HashMap<String, String>>,
    stamp: Option<Stamp>,
    checked: Instant,
}

/// What tells a changed file from the one loaded: a rename gives a new inode, an edit a new
/// size or modification time, a `chmod` (making it readable again) a new ctime.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

fn stamp(path: &Path) -> Option<Stamp> {
    let m = std::fs::metadata(path).ok()?;
    Some(Stamp {
        dev: m.dev(),
        ino: m.ino(),
        size: m.size(),
        mtime: (m.mtime(), m.mtime_nsec()),
        ctime: (m.ctime(), m.ctime_nsec()),
    })
}

/// The user file is unreadable or invalid since it last changed; logins are refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unavailable;

/// The outcome of a password check.
#[derive(Debug, PartialEq, Eq)]
pub enum Check {
    /// The password matches this entry (the hash, which a cache may key on).
    Valid(String),
    Invalid,
    Unavailable,
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

impl Htpasswd {
    pub fn load(path: &Path) -> io::Result<Htpasswd> {
        let before = stamp(path);
        let text = std::fs::read_to_string(path)?;
        let users = parse(&text).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        Ok(Htpasswd {
            path: path.to_owned(),
            state: RwLock::new(Loaded {
                users: Some(users),
                // Stamped before reading: a write racing the read shows as a change later.
                stamp: before,
                checked: Instant::now(),
            }),
        })
    }

    /// Whether the file is due a look ([`Htpasswd::refresh`]); cheap, no I/O.
    pub fn due(&self) -> bool {
        let s = self.state.read().unwrap_or_else(|e| e.into_inner());
        s.checked.elapsed() >= RECHECK
    }

    /// Re-read the file if it changed. Blocking I/O: call from a blocking thread. A file
    /// that became unreadable or invalid refuses every login until it is valid again.
    pub fn refresh(&self) {
        if !self.due() {
            return;
        }
        let now = stamp(&self.path);
        let mut s = self.state.write().unwrap_or_else(|e| e.into_inner());
        if s.checked.elapsed() < RECHECK {
            return; // another thread just looked
        }
        s.checked = Instant::now();
        if now == s.stamp {
            return;
        }
        s.stamp = now;
        match std::fs::read_to_string(&self.path)
            .map_err(|e| e.to_string())
            .and_then(|t| parse(&t))
        {
            Ok(users) => {
                tracing::info!(users = users.len(), "htpasswd file reloaded");
                s.users = Some(users);
            }
            Err(e) => {
                tracing::error!(
                    path = %self.path.display(),
                    error = %e,
                    "htpasswd file unusable: every login is refused until it is fixed"
                );
                s.users = None;
            }
        }
    }

    /// Make the next [`Htpasswd::refresh`] look at the file now (tests, instead of sleeping).
    #[cfg(test)]
    fn make_due(&self) {
        let mut s = self.state.write().unwrap_or_else(|e| e.into_inner());
        if let Some(past) = Instant::now().checked_sub(RECHECK) {
            s.checked = past;
        }
    }

    /// The entry (hash) of `user` as loaded now; no I/O.
    pub fn entry(&self, user: &str) -> Result<Option<String>, Unavailable> {
        let s = self.state.read().unwrap_or_else(|e| e.into_inner());
        match &s.users {
            Some(users) => Ok(users.get(user).cloned()),
            None => Err(Unavailable),
        }
    }

    /// Whether `user` has an entry (for `config check` warnings).
    pub fn contains(&self, user: &str) -> bool {
        matches!(self.entry(user), Ok(Some(_)))
    }

    /// Check `password` for `user`, re-reading the file first if it is due. bcrypt is slow
    /// on purpose: call from a blocking thread.
    pub fn verify(&self, user: &str, password: &str) -> Check {
        self.refresh();
        match self.entry(user) {
            Err(Unavailable) => Check::Unavailable,
            // bcrypt::verify compares the hashes in constant time.
            Ok(Some(h)) if bcrypt::verify(password, &h).unwrap_or(false) => Check::Valid(h),
            Ok(Some(_)) => Check::Invalid,
            Ok(None) => {
                let _ = bcrypt::verify(password, DUMMY_HASH);
                Check::Invalid
            }
        }
    }
}

/// Why `name` cannot be a user name, if it cannot. Names go into `name:hash` lines, Basic
/// credentials (`name:password`), token subjects and access rules, where `*` and `anonymous`
/// mean something else.
pub fn check_user_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("a user name cannot be empty".into());
    }
    if name.len() > 256 {
        return Err("a user name is at most 256 bytes".into());
    }
    if let Some(c) = name
        .chars()
        .find(|c| *c == ':' || c.is_whitespace() || c.is_control())
    {
        return Err(format!(
            "user name {name:?}: {c:?} is not allowed (no `:`, spaces or control characters)"
        ));
    }
    if name == "*" || name == "anonymous" || name.starts_with('#') {
        return Err(format!(
            "user name {name:?} is reserved (`*` and `anonymous` mean other things in access \
rules; `#` starts a comment)"
        ));
    }
    Ok(())
}

/// The lines of the file at `path`, or none if it does not exist yet.
fn read_lines(path: &Path) -> anyhow::Result<Vec<String>> {
    match std::fs::read_to_string(path) {
        Ok(t) => Ok(t.lines().map(str::to_owned).collect()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(anyhow::Error::new(e).context(format!("reading {}", path.display()))),
    }
}

fn entry_name(line: &str) -> Option<&str> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    line.split_once(':').map(|(n, _)| n)
}

/// Rewrite the file atomically, keeping its mode (a new file is 0600: it holds hashes).
fn write_lines(path: &Path, lines: &[String]) -> anyhow::Result<()> {
    let mut out = String::new();
    for l in lines {
        out.push_str(l);
        out.push('\n');
    }
    crate::sys::replace_file(path, out.as_bytes(), 0o600)
        .map_err(|e| anyhow::Error::new(e).context(format!("writing {}", path.display())))
}

/// Add `name` with `password` to the file at `path` (created 0600 if missing), replacing an
/// existing entry in place; `true` if it replaced one. The file is replaced atomically with
/// its mode kept, so the server (which re-reads it on change) never sees half a file.
pub fn add_user(path: &Path, name: &str, password: &str, cost: u32) -> anyhow::Result<bool> {
    check_user_name(name).map_err(anyhow::Error::msg)?;
    if password.is_empty() {
        anyhow::bail!("empty password");
    }
    let hash = bcrypt::hash(password, cost)?;
    let mut lines = read_lines(path)?;
    let entry = format!("{name}:{hash}");
    let replaced = match lines.iter().position(|l| entry_name(l) == Some(name)) {
        Some(i) => {
            // Duplicates of the name (hand edits) go: the new entry is the only one.
            let mut i_kept = 0;
            for (n, l) in lines.iter().enumerate() {
                if n == i {
                    break;
                }
                if entry_name(l) != Some(name) {
                    i_kept += 1;
                }
            }
            lines.retain(|l| entry_name(l) != Some(name));
            lines.insert(i_kept, entry);
            true
        }
        None => {
            lines.push(entry);
            false
        }
    };
    write_lines(path, &lines)?;
    Ok(replaced)
}

/// Change the password of `name`, who must have an entry.
pub fn set_password(path: &Path, name: &str, password: &str, cost: u32) -> anyhow::Result<()> {
    if !list_users(path)?.iter().any(|u| u == name) {
        anyhow::bail!(
            "no user {name:?} in {} (add it with `airdock user add`)",
            path.display()
        );
    }
    add_user(path, name, password, cost).map(drop)
}

/// Remove `name`'s entry; an error if it has none.
pub fn remove_user(path: &Path, name: &str) -> anyhow::Result<()> {
    let mut lines = read_lines(path)?;
    let before = lines.len();
    lines.retain(|l| entry_name(l) != Some(name));
    if lines.len() == before {
        anyhow::bail!("no user {name:?} in {}", path.display());
    }
    write_lines(path, &lines)
}

/// The user names in the file, in file order.
pub fn list_users(path: &Path) -> anyhow::Result<Vec<String>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::Error::new(e).context(format!("reading {}", path.display())))?;
    // Parsed as the server parses it, so a file the server would refuse is reported here.
    parse(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    Ok(text
        .lines()
        .filter_map(entry_name)
        .map(str::to_owned)
        .collect())
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
        assert!(matches!(h.verify("alice", "new"), Check::Valid(_)));
        assert_eq!(h.verify("alice", "s3cret"), Check::Invalid);
        assert!(matches!(h.verify("bob", "pw"), Check::Valid(_)));
        assert_eq!(h.verify("carol", "pw"), Check::Invalid);
        assert!(add_user(&p, "a:b", "x", 4).is_err());
    }

    #[test]
    fn passwd_del_list_keep_other_entries_and_order() {
        let dir = tempfile::tempdir().expect("tmp");
        let p = dir.path().join("htpasswd");
        std::fs::write(&p, "# lab users\n").expect("seed");
        for u in ["carol", "alice", "bob"] {
            add_user(&p, u, "pw", 4).expect("add");
        }
        assert_eq!(list_users(&p).expect("list"), ["carol", "alice", "bob"]);
        set_password(&p, "alice", "new", 4).expect("passwd");
        assert_eq!(list_users(&p).expect("list"), ["carol", "alice", "bob"]);
        let h = Htpasswd::load(&p).expect("load");
        assert!(matches!(h.verify("alice", "new"), Check::Valid(_)));
        assert!(
            set_password(&p, "dave", "x", 4).is_err(),
            "passwd needs an existing user"
        );
        remove_user(&p, "carol").expect("del");
        assert_eq!(list_users(&p).expect("list"), ["alice", "bob"]);
        assert!(remove_user(&p, "carol").is_err(), "already gone");
        assert!(std::fs::read_to_string(&p)
            .expect("read")
            .starts_with("# lab users\n"));
    }

    #[test]
    fn bad_user_names_are_refused_with_the_reason() {
        for (name, says) in [
            ("", "empty"),
            ("a b", "not allowed"),
            ("a:b", "not allowed"),
            ("tab\t", "not allowed"),
            ("*", "reserved"),
            ("anonymous", "reserved"),
            ("#x", "reserved"),
        ] {
            let e = check_user_name(name).expect_err(name);
            assert!(e.contains(says), "{name:?}: {e}");
        }
        check_user_name("ci-bot@lab.example").expect("ok");
    }

    /// Defect 7 (issue 10): a file that becomes invalid must refuse logins, not keep the
    /// users loaded before; a valid file brings them back.
    #[test]
    fn broken_file_fails_closed_until_fixed() {
        let dir = tempfile::tempdir().expect("tmp");
        let p = dir.path().join("htpasswd");
        add_user(&p, "alice", "pw", 4).expect("add");
        let h = Htpasswd::load(&p).expect("load");
        assert!(matches!(h.verify("alice", "pw"), Check::Valid(_)));
        let good = std::fs::read_to_string(&p).expect("read");
        std::fs::write(&p, format!("{good}garbage line\n")).expect("break");
        h.make_due();
        assert_eq!(h.verify("alice", "pw"), Check::Unavailable);
        assert!(!h.contains("alice"));
        std::fs::remove_file(&p).expect("remove");
        h.make_due();
        assert_eq!(h.verify("alice", "pw"), Check::Unavailable);
        std::fs::write(&p, &good).expect("fix");
        h.make_due();
        assert!(matches!(h.verify("alice", "pw"), Check::Valid(_)));
    }
}
