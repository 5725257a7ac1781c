//! The configuration: one YAML file (`--config FILE`), every scalar key of which also has a
//! flag and an `AIRDOCK_*` environment twin. Precedence: flag, then environment, then file,
//! then the default. `airdock config check FILE` runs the same loading and validation.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::auth::policy::{Glob, Right};

/// Everything the file may hold. Unknown keys are errors, so a typo is never silently ignored.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub addr: Option<SocketAddr>,
    pub data_dir: Option<PathBuf>,
    pub sparse: Option<bool>,
    pub tls: TlsConfig,
    pub auth: AuthConfig,
    /// Rights rules; see [`AccessRule`].
    pub access: Vec<AccessRule>,
    pub limits: LimitsConfig,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

/// How clients are told to authenticate.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    /// `WWW-Authenticate: Bearer` and the built-in token endpoint (what Distribution's token
    /// mode does; every mainstream client follows it).
    #[default]
    Token,
    /// `WWW-Authenticate: Basic`, as Distribution's htpasswd mode.
    Basic,
}

impl std::str::FromStr for AuthMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "token" => Ok(AuthMode::Token),
            "basic" => Ok(AuthMode::Basic),
            _ => Err(format!("`{s}` is not an auth mode (token or basic)")),
        }
    }
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// An htpasswd file with bcrypt entries; setting it turns authentication on.
    pub htpasswd: Option<PathBuf>,
    pub mode: Option<AuthMode>,
    /// The token endpoint announced in challenges; by default `<scheme>://<Host>/token`.
    pub realm: Option<String>,
    /// The `service` of challenges and the audience of tokens.
    pub service: Option<String>,
    pub token_ttl_secs: Option<u64>,
    /// Users holding the `admin` right (`/admin/*`).
    pub admins: Vec<String>,
    /// Failed logins from one client address before it is refused with 429.
    pub max_failures: Option<u32>,
    /// How long a client stays refused after `max_failures` failures.
    pub lockout_secs: Option<u64>,
}

/// One rights rule: the users it names get `allow` on every repository matching one of
/// `repos`. Rules add up. `users` holds names, `*` (any authenticated user) or `anonymous`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessRule {
    pub repos: Vec<Glob>,
    pub users: Vec<String>,
    pub allow: Vec<Right>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// A client must send its request head within this time (slow-loris).
    pub header_timeout_secs: Option<u64>,
    /// A request body may pause at most this long between two reads.
    pub body_timeout_secs: Option<u64>,
    pub max_header_bytes: Option<usize>,
    /// Upload requests (POST/PATCH/PUT of blob data) running at once.
    pub max_concurrent_uploads: Option<usize>,
    /// Upload sessions open at once (between POST and PUT/DELETE/expiry); `0` = no cap.
    pub max_open_uploads: Option<usize>,
}

/// A configuration error, with the key and (when known) the line it is on.
#[derive(Debug, thiserror::Error)]
#[error("{}{msg}", location.map(|l| format!("line {l}: ")).unwrap_or_default())]
pub struct ConfigError {
    pub location: Option<usize>,
    pub msg: String,
}

impl Config {
    /// Parse YAML text. Syntax errors, unknown keys and bad values name the line.
    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        if text.trim().is_empty() {
            return Ok(Config::default());
        }
        let cfg: Config = serde_yaml::from_str(text).map_err(|e| ConfigError {
            location: e.location().map(|l| l.line()),
            msg: e.to_string(),
        })?;
        cfg.validate(text)?;
        Ok(cfg)
    }

    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            location: None,
            msg: format!("cannot read {}: {e}", path.display()),
        })?;
        Config::parse(&text)
    }

    /// Checks that span keys (serde cannot see them).
    fn validate(&self, text: &str) -> Result<(), ConfigError> {
        let err = |key: &str, msg: String| ConfigError {
            location: line_of(text, key.rsplit('.').next().unwrap_or(key)),
            msg: format!("{key}: {msg}"),
        };
        if self.tls.cert.is_some() != self.tls.key.is_some() {
            let key = if self.tls.cert.is_some() {
                "tls.cert"
            } else {
                "tls.key"
            };
            return Err(err(key, "tls.cert and tls.key go together".into()));
        }
        for rule in &self.access {
            if rule.users.is_empty() {
                return Err(err("access.users", "a rule names at least one user".into()));
            }
            if rule.repos.is_empty() {
                return Err(err("access.repos", "a rule names at least one glob".into()));
            }
        }
        if let Some(0) = self.auth.token_ttl_secs {
            return Err(err("auth.token_ttl_secs", "must be at least 1".into()));
        }
        if let Some(realm) = &self.auth.realm {
            if !(realm.starts_with("https://") || realm.starts_with("http://")) {
                return Err(err("auth.realm", "must be an http(s) URL".into()));
            }
        }
        Ok(())
    }
}

/// The 1-based line on which `key:` first appears, for messages about values serde accepted.
fn line_of(text: &str, key: &str) -> Option<usize> {
    let needle = format!("{key}:");
    text.lines()
        .position(|l| l.trim_start().trim_start_matches("- ").starts_with(&needle))
        .map(|i| i + 1)
}

/// The settings the server runs with, after flags, environment, file and defaults.
#[derive(Debug, Clone)]
pub struct Settings {
    pub addr: SocketAddr,
    pub data_dir: PathBuf,
    pub sparse: bool,
    pub tls: Option<(PathBuf, PathBuf)>,
    pub auth: AuthConfig,
    pub access: Vec<AccessRule>,
    pub limits: Limits,
}

/// Default of `limits.max_open_uploads`.
pub const DEFAULT_MAX_OPEN_UPLOADS: usize = 1024;

/// Hardening limits, all with defaults.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub header_timeout: Duration,
    pub body_timeout: Duration,
    pub max_header_bytes: usize,
    pub max_concurrent_uploads: usize,
    /// `None`: no cap.
    pub max_open_uploads: Option<usize>,
}

impl Default for Limits {
    fn default() -> Limits {
        LimitsConfig::default().resolve()
    }
}

impl LimitsConfig {
    pub fn resolve(&self) -> Limits {
        Limits {
            header_timeout: Duration::from_secs(self.header_timeout_secs.unwrap_or(30)),
            body_timeout: Duration::from_secs(self.body_timeout_secs.unwrap_or(120)),
            // hyper refuses a read buffer under 8 KiB.
            max_header_bytes: self.max_header_bytes.unwrap_or(64 * 1024).max(8192),
            max_concurrent_uploads: self.max_concurrent_uploads.unwrap_or(256),
            // Each session is a directory on disk that lives up to the upload TTL, so without
            // a cap a client could fill the disk's inodes with empty sessions. Generous: a
            // docker push opens a handful at a time.
            max_open_uploads: match self.max_open_uploads {
                Some(0) => None,
                Some(n) => Some(n),
                None => Some(DEFAULT_MAX_OPEN_UPLOADS),
            },
        }
    }
}

impl Config {
    /// Overlay `other` (flags and environment) on `self` (the file): set values win.
    pub fn overlay(mut self, other: Config) -> Config {
        fn pick<T>(a: &mut Option<T>, b: Option<T>) {
            if b.is_some() {
                *a = b;
            }
        }
        pick(&mut self.addr, other.addr);
        pick(&mut self.data_dir, other.data_dir);
        pick(&mut self.sparse, other.sparse);
        pick(&mut self.tls.cert, other.tls.cert);
        pick(&mut self.tls.key, other.tls.key);
        let (a, b) = (&mut self.auth, other.auth);
        pick(&mut a.htpasswd, b.htpasswd);
        pick(&mut a.mode, b.mode);
        pick(&mut a.realm, b.realm);
        pick(&mut a.service, b.service);
        pick(&mut a.token_ttl_secs, b.token_ttl_secs);
        pick(&mut a.max_failures, b.max_failures);
        pick(&mut a.lockout_secs, b.lockout_secs);
        if !b.admins.is_empty() {
            a.admins = b.admins;
        }
        let (l, m) = (&mut self.limits, other.limits);
        pick(&mut l.header_timeout_secs, m.header_timeout_secs);
        pick(&mut l.body_timeout_secs, m.body_timeout_secs);
        pick(&mut l.max_header_bytes, m.max_header_bytes);
        pick(&mut l.max_concurrent_uploads, m.max_concurrent_uploads);
        pick(&mut l.max_open_uploads, m.max_open_uploads);
        self
    }

    pub fn settings(self) -> Result<Settings, ConfigError> {
        let tls = match (self.tls.cert, self.tls.key) {
            (Some(c), Some(k)) => Some((c, k)),
            (None, None) => None,
            _ => {
                return Err(ConfigError {
                    location: None,
                    msg: "tls.cert and tls.key (--tls-cert, --tls-key) go together".into(),
                })
            }
        };
        Ok(Settings {
            addr: self
                .addr
                .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 5000))),
            data_dir: self
                .data_dir
                .unwrap_or_else(|| PathBuf::from("./airdock-data")),
            sparse: self.sparse.unwrap_or(false),
            tls,
            auth: self.auth,
            access: self.access,
            limits: self.limits.resolve(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_key_names_key_and_line() {
        let e = Config::parse("addr: 127.0.0.1:5000\ntls:\n  cert: a\n  kee: b\n")
            .expect_err("must fail");
        assert_eq!(e.location, Some(4), "{e}");
        assert!(e.to_string().contains("kee"), "{e}");
    }

    #[test]
    fn bad_right_names_line() {
        let text = "access:\n  - repos: [\"a/*\"]\n    users: [bob]\n    allow: [pull, pus]\n";
        let e = Config::parse(text).expect_err("must fail");
        assert_eq!(e.location, Some(4), "{e}");
        assert!(e.to_string().contains("pus"), "{e}");
    }

    #[test]
    fn semantic_error_finds_line() {
        let e = Config::parse("sparse: true\ntls:\n  cert: /x\n").expect_err("must fail");
        assert_eq!(e.location, Some(3), "{e}");
        assert!(e.to_string().contains("tls.cert"), "{e}");
    }

    #[test]
    fn max_open_uploads_key_default_and_zero() {
        let cfg = Config::parse("limits:\n  max_open_uploads: 7\n").expect("parse");
        assert_eq!(cfg.limits.resolve().max_open_uploads, Some(7));
        let off = Config::parse("limits:\n  max_open_uploads: 0\n").expect("parse");
        assert_eq!(off.limits.resolve().max_open_uploads, None);
        assert_eq!(
            Limits::default().max_open_uploads,
            Some(DEFAULT_MAX_OPEN_UPLOADS)
        );
        let e = Config::parse("limits:\n  max_open_uploads: -1\n").expect_err("negative");
        assert_eq!(e.location, Some(2), "{e}");
        let flags = Config {
            limits: LimitsConfig {
                max_open_uploads: Some(3),
                ..LimitsConfig::default()
            },
            ..Config::default()
        };
        let s = cfg.overlay(flags).settings().expect("settings");
        assert_eq!(s.limits.max_open_uploads, Some(3), "the flag wins");
    }

    #[test]
    fn overlay_prefers_set_values() {
        let file = Config::parse("addr: 127.0.0.1:1\nsparse: true\nauth:\n  mode: basic\n")
            .expect("parse");
        let flags = Config {
            addr: Some("127.0.0.1:2".parse().expect("addr")),
            ..Config::default()
        };
        let s = file.overlay(flags).settings().expect("settings");
        assert_eq!(s.addr.port(), 2);
        assert!(s.sparse);
        assert_eq!(s.auth.mode, Some(AuthMode::Basic));
    }
}
