//! Rights rules as plain data: what the configuration file holds (`access:`) and what the
//! policy evaluates. Here so that `config` and `auth` can both read them without importing
//! each other.

use serde::Deserialize;

/// One rights rule: the users it names get `allow` on every repository matching one of
/// `repos`. Rules add up. `users` holds names, `*` (any authenticated user) or `anonymous`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessRule {
    pub repos: Vec<Glob>,
    pub users: Vec<String>,
    pub allow: Vec<Right>,
}

/// One right on a repository.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Right {
    Pull,
    Push,
    Delete,
}

impl Right {
    pub fn as_str(self) -> &'static str {
        match self {
            Right::Pull => "pull",
            Right::Push => "push",
            Right::Delete => "delete",
        }
    }

    /// Token scope action names; `*` means every right, as Distribution's clients use it.
    pub fn parse_action(s: &str) -> Vec<Right> {
        match s {
            "pull" => vec![Right::Pull],
            "push" => vec![Right::Push],
            "delete" => vec![Right::Delete],
            "*" => vec![Right::Pull, Right::Push, Right::Delete],
            _ => Vec::new(),
        }
    }
}

/// A repository glob: `*` matches within one path component, `**` across components,
/// `?` one character other than `/`; anything else matches itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Glob(String);

impl<'de> Deserialize<'de> for Glob {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Glob, D::Error> {
        let s = String::deserialize(d)?;
        Glob::new(&s).map_err(serde::de::Error::custom)
    }
}

impl Glob {
    pub fn new(s: &str) -> Result<Glob, String> {
        if s.is_empty() {
            return Err("an empty repository glob matches nothing".into());
        }
        if s.contains("***") {
            return Err(format!("`{s}`: use `**` to match across components"));
        }
        Ok(Glob(s.to_owned()))
    }

    pub fn matches(&self, name: &str) -> bool {
        glob_match(self.0.as_bytes(), name.as_bytes())
    }
}

fn glob_match(p: &[u8], s: &[u8]) -> bool {
    match p.first() {
        None => s.is_empty(),
        Some(b'*') if p.get(1) == Some(&b'*') => {
            // `**/` may also match nothing, so `a/**/b` matches `a/b`.
            let rest = &p[2..];
            if rest.first() == Some(&b'/') && glob_match(&rest[1..], s) {
                return true;
            }
            (0..=s.len()).any(|i| glob_match(rest, &s[i..]))
        }
        Some(b'*') => {
            let rest = &p[1..];
            let mut i = 0;
            loop {
                if glob_match(rest, &s[i..]) {
                    return true;
                }
                if i == s.len() || s[i] == b'/' {
                    return false;
                }
                i += 1;
            }
        }
        Some(b'?') => matches!(s.first(), Some(c) if *c != b'/') && glob_match(&p[1..], &s[1..]),
        Some(c) => s.first() == Some(c) && glob_match(&p[1..], &s[1..]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn g(s: &str) -> Glob {
        Glob::new(s).expect("glob")
    }

    #[test]
    fn globs() {
        assert!(g("team/*").matches("team/app"));
        assert!(!g("team/*").matches("team/a/b"));
        assert!(g("team/**").matches("team/a/b"));
        assert!(g("**").matches("x/y/z"));
        assert!(g("a/**/b").matches("a/b"));
        assert!(g("a/**/b").matches("a/x/y/b"));
        assert!(g("lib?").matches("lib1"));
        assert!(!g("lib?").matches("lib/"));
        assert!(g("exact/name").matches("exact/name"));
        assert!(!g("exact/name").matches("exact/names"));
        assert!(Glob::new("").is_err());
    }
}
