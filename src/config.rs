//! The configuration: one YAML file (`--config FILE`), every scalar key of which also has a
//! flag and an `AIRDOCK_*` environment twin. Precedence: flag, then environment, then file,
//! then the default. `airdock config check FILE` runs the same loading and validation.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use std::sync::Arc;

use airdock_storage::{GcOptions, Retention};
use serde::Deserialize;

use crate::forwarded::TrustedNet;
use crate::imgpkg::names::is_imgpkg_tag;
pub use crate::rules::AccessRule;
use crate::rules::Glob;

/// Everything the file may hold. Unknown keys are errors, so a typo is never silently ignored.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Where to listen; see [`parse_listen_addr`] for the accepted forms.
    #[serde(deserialize_with = "listen_addr_opt")]
    pub addr: Option<SocketAddr>,
    pub data_dir: Option<PathBuf>,
    pub sparse: Option<bool>,
    pub tls: TlsConfig,
    pub auth: AuthConfig,
    /// Rights rules; see [`AccessRule`].
    pub access: Vec<AccessRule>,
    pub limits: LimitsConfig,
    pub gc: GcConfig,
    pub uploads: UploadsConfig,
    pub storage: StorageConfig,
    pub metadata: MetadataConfig,
    /// Retention rules, applied by every GC run; see [`RetentionRule`].
    pub retention: Vec<RetentionRule>,
    /// Reverse proxies whose `Forwarded`/`X-Forwarded-*` headers are believed.
    pub trusted_proxies: Vec<TrustedNet>,
    pub log: LogConfig,
    pub metrics: MetricsConfig,
}

/// How log lines are written (to stderr).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One human-readable line per event.
    #[default]
    Text,
    /// One JSON object per line, the event's fields at the top level (log shippers).
    Json,
}

impl std::str::FromStr for LogFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            _ => Err(format!("`{s}` is not a log format (text or json)")),
        }
    }
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    pub format: Option<LogFormat>,
}

/// Default of `metrics.top_repositories`.
pub const DEFAULT_METRICS_TOP_REPOSITORIES: usize = 20;

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// A second listener serving only `/metrics`, to anyone who reaches it: bind it to a
    /// private address.
    pub addr: Option<SocketAddr>,
    /// `/metrics` on the main port without credentials (else admins only).
    pub anonymous: Option<bool>,
    /// How many repositories get their own per-repository series (the largest by bytes);
    /// the rest are summed under `repository="_other"`.
    pub top_repositories: Option<usize>,
}

/// The metrics settings in force.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetricsSettings {
    pub addr: Option<SocketAddr>,
    pub anonymous: bool,
    pub top_repositories: usize,
}

impl Default for MetricsSettings {
    fn default() -> MetricsSettings {
        MetricsSettings {
            addr: None,
            anonymous: false,
            top_repositories: DEFAULT_METRICS_TOP_REPOSITORIES,
        }
    }
}

/// GC leaves anything younger than this alone unless told otherwise.
pub const DEFAULT_GC_GRACE: Duration = Duration::from_secs(3600);
/// Upload sessions idle this long expire unless told otherwise.
pub const DEFAULT_UPLOAD_TTL: Duration = Duration::from_secs(24 * 3600);

/// `90s`, `15m`, `2h`, `7d`, `250ms` or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration like 30s, 15m, 2h or 7d"))?;
    let secs = |k: u64| {
        n.checked_mul(k)
            .map(Duration::from_secs)
            .ok_or_else(|| format!("{s:?} is too long"))
    };
    match unit {
        "" | "s" => secs(1),
        "ms" => Ok(Duration::from_millis(n)),
        "m" => secs(60),
        "h" => secs(3600),
        "d" => secs(86400),
        _ => Err(format!(
            "{s:?}: unknown unit {unit:?} (use ms, s, m, h or d)"
        )),
    }
}

/// A listen address: `IP:PORT`, `[IPv6]:PORT`, `localhost:PORT` (loopback) or `:PORT` (every
/// interface, IPv6 and IPv4: `[::]`, which Linux binds dual-stack; the server falls back to
/// `0.0.0.0` on a host without IPv6). No name is looked up: the binary is static and an empty
/// image has no resolver configuration, so `localhost` is resolved here, to `127.0.0.1`.
pub fn parse_listen_addr(s: &str) -> Result<SocketAddr, String> {
    let s = s.trim();
    if let Ok(addr) = s.parse::<SocketAddr>() {
        return Ok(addr);
    }
    let bad = || {
        format!(
            "{s:?} is not a listen address: use IP:PORT, [IPv6]:PORT, localhost:PORT or :PORT \
(every interface)"
        )
    };
    let (host, port) = s.rsplit_once(':').ok_or_else(bad)?;
    let port: u16 = port
        .parse()
        .map_err(|_| format!("{s:?}: the port must be a number from 0 to 65535"))?;
    match host {
        "" => Ok(SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, port))),
        h if h.eq_ignore_ascii_case("localhost") => {
            Ok(SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, port)))
        }
        h if h.parse::<std::net::Ipv6Addr>().is_ok() => Err(format!(
            "{s:?}: an IPv6 address goes in brackets, e.g. [{h}]:{port}"
        )),
        h => Err(format!(
            "{s:?}: {h:?} is neither an IP address nor localhost (host names are not \
resolved; use the address of the interface)"
        )),
    }
}

fn listen_addr_opt<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<SocketAddr>, D::Error> {
    let text = Option::<String>::deserialize(d)?;
    text.map(|t| parse_listen_addr(&t).map_err(serde::de::Error::custom))
        .transpose()
}

/// A duration written like `90s`, `15m`, `6h`, `7d` (see [`parse_duration`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DurationValue(pub Duration);

impl<'de> Deserialize<'de> for DurationValue {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<DurationValue, D::Error> {
        // A bare number of seconds is accepted too, as on the command line.
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Secs(u64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Secs(n) => Ok(DurationValue(Duration::from_secs(n))),
            Raw::Text(t) => parse_duration(&t)
                .map(DurationValue)
                .map_err(serde::de::Error::custom),
        }
    }
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GcConfig {
    /// Run GC this often while serving (default: never).
    pub interval: Option<DurationValue>,
    /// Never remove anything written, touched or linked more recently (default 1h).
    pub grace: Option<DurationValue>,
    /// Delete manifests no tag keeps.
    pub delete_untagged: Option<bool>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UploadsConfig {
    /// Upload sessions idle this long expire (default 24h; `0` = never).
    pub ttl: Option<DurationValue>,
}

/// `metadata.*`: where repository metadata lives.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetadataConfig {
    /// `postgres://user:password@host:port/dbname`: the metadata in PostgreSQL, shared by
    /// every airdock (replica) given the same URL. Unset: the journal in the data dir.
    pub url: Option<String>,
}

/// Default free-space floor of `/readyz` (`storage.min_free_mib`): room for a few layers.
pub const DEFAULT_MIN_FREE_MIB: u64 = 256;

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// Let a blob delete remove a blob manifests still reference (Distribution's behaviour).
    pub allow_referenced_blob_delete: Option<bool>,
    /// `/readyz` answers 503 while less than this many MiB are free on the data dir's
    /// filesystem (default 256), so a balancer stops sending pushes before writes fail.
    pub min_free_mib: Option<u64>,
    /// Where blobs live: `filesystem` (the data dir, the default) or `s3`.
    pub driver: Option<StorageDriver>,
    pub s3: S3Keys,
}

/// `storage.driver`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StorageDriver {
    #[default]
    Filesystem,
    S3,
}

impl std::str::FromStr for StorageDriver {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "filesystem" => Ok(StorageDriver::Filesystem),
            "s3" => Ok(StorageDriver::S3),
            _ => Err(format!("`{s}` is not a storage driver (filesystem or s3)")),
        }
    }
}

/// Default of `storage.s3.region`.
pub const DEFAULT_S3_REGION: &str = "us-east-1";

/// `storage.s3.*`: the bucket blobs live in with `storage.driver: s3`.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct S3Keys {
    /// `http(s)://host:port` of an S3-compatible server (MinIO, Ceph, versitygw …); unset:
    /// AWS S3 of `region`.
    pub endpoint: Option<String>,
    pub bucket: Option<String>,
    /// Default `us-east-1`.
    pub region: Option<String>,
    /// Keys go under `PREFIX/` (default: the bucket's root).
    pub prefix: Option<String>,
    /// Bucket in the path, not the host name (default: true with a custom endpoint).
    pub path_style: Option<bool>,
    /// Answer blob GETs with a 307 to a presigned S3 URL instead of streaming them through
    /// airdock (default false: clients often reach only the registry).
    pub redirect: Option<bool>,
    /// Credentials; `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY` win over them.
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
}

/// Where blobs live, resolved.
#[derive(Debug, Clone, Default)]
pub enum BlobBackend {
    /// `<data-dir>/blobs`.
    #[default]
    Filesystem,
    /// A bucket.
    S3(airdock_storage_s3::S3Config),
}

/// One retention rule, for every repository matching one of `repos`: keep the newest
/// `keep_newest` tags matching `tags` (default `*`; imgpkg's `sha256-….imgpkg` tags are never
/// counted or dropped), and drop manifests no tag keeps once older than
/// `untagged_older_than`. Rules apply independently; a tag any rule drops goes.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionRule {
    pub repos: Vec<Glob>,
    #[serde(default)]
    pub tags: Option<Glob>,
    #[serde(default)]
    pub keep_newest: Option<usize>,
    #[serde(default)]
    pub untagged_older_than: Option<DurationValue>,
}

impl RetentionRule {
    fn to_storage(&self, i: usize) -> Retention {
        let repos = self.repos.clone();
        let tags = self.tags.clone();
        Retention {
            name: format!("retention[{i}]"),
            repos: Arc::new(move |r: &str| repos.iter().any(|g| g.matches(r))),
            // imgpkg's own tags keep a bundle's images: no rule may count or drop them.
            tags: Arc::new(move |t: &str| {
                !is_imgpkg_tag(t) && tags.as_ref().is_none_or(|g| g.matches(t))
            }),
            keep_newest: self.keep_newest,
            untagged_older_than: self.untagged_older_than.map(|d| d.0),
        }
    }
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

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// A connection must complete its first request head within this time of accept, TLS
    /// handshake included, and any later head within this time (slow-loris, silence).
    pub header_timeout_secs: Option<u64>,
    /// A request body may pause at most this long between two reads.
    pub body_timeout_secs: Option<u64>,
    /// A connection with no request in flight is closed after this long.
    pub idle_timeout_secs: Option<u64>,
    pub max_header_bytes: Option<usize>,
    /// Upload requests (POST/PATCH/PUT of blob data) running at once.
    pub max_concurrent_uploads: Option<usize>,
    /// Upload sessions open at once (between POST and PUT/DELETE/expiry); `0` = no cap.
    pub max_open_uploads: Option<usize>,
    /// Upload sessions one client (user, or address when anonymous) may hold; `0` = no cap.
    pub max_open_uploads_per_client: Option<usize>,
}

/// A configuration error, with the key and (when known) the line it is on.
#[derive(Debug, thiserror::Error)]
#[error("{}{msg}", location.map(|l| format!("line {l}: ")).unwrap_or_default())]
pub struct ConfigError {
    pub location: Option<usize>,
    pub msg: String,
}

impl Config {
    /// Parse YAML text. Syntax errors, unknown keys and bad values name the line; the first
    /// error found is returned ([`Config::check`] returns them all).
    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::check(text).map_err(|mut errors| errors.swap_remove(0))
    }

    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        Config::parse(&read(path)?)
    }

    /// Every error in the text, not only the first (`airdock config check`): unknown keys,
    /// wrong types and bad values, each with its key path and line, then the checks that
    /// span keys. Never empty when `Err`.
    pub fn check(text: &str) -> Result<Config, Vec<ConfigError>> {
        if text.trim().is_empty() {
            return Ok(Config::default());
        }
        let mut value: serde_yaml::Value = serde_yaml::from_str(text).map_err(|e| {
            vec![ConfigError {
                location: e.location().map(|l| l.line()),
                msg: e.to_string(),
            }]
        })?;
        // serde stops at the first error. Each round reports it, removes the offending key
        // (or list item) from the tree and tries again, until the rest deserializes. Keys
        // removed are remembered, so that the "missing field" a removal causes is not
        // reported as another error, and list items removed, so that later errors name
        // their item's index in the file, not in the shrunken list.
        let mut errors = Vec::new();
        let mut removed = Removed::default();
        // Each round removes one node, so the rounds are bounded by the size of the file.
        for _ in 0..=text.len() {
            match serde_path_to_error::deserialize::<_, Config>(value.clone()) {
                Ok(cfg) => {
                    errors.extend(cfg.validate(text));
                    return if errors.is_empty() {
                        Ok(cfg)
                    } else {
                        Err(errors)
                    };
                }
                Err(e) => {
                    let path = removed.original(e.path());
                    let msg = e.inner().to_string();
                    let consequence = msg.starts_with("missing field")
                        && removed
                            .keys
                            .iter()
                            .any(|k| k.starts_with(&display_path(&path)));
                    if !consequence {
                        errors.push(ConfigError {
                            location: line_of_path(text, &path),
                            msg: if path.is_empty() {
                                msg
                            } else {
                                format!("{}: {msg}", display_path(&path))
                            },
                        });
                    }
                    if !removed.remove(&mut value, &path) {
                        break;
                    }
                }
            }
        }
        if errors.is_empty() {
            errors.push(ConfigError {
                location: None,
                msg: "the file does not describe a configuration".into(),
            });
        }
        Err(errors)
    }

    /// Checks that span keys (serde cannot see them): every one that fails.
    fn validate(&self, text: &str) -> Vec<ConfigError> {
        let mut errors = Vec::new();
        let mut err = |key: &str, msg: String| {
            errors.push(ConfigError {
                location: line_of(text, key.rsplit('.').next().unwrap_or(key)),
                msg: format!("{key}: {msg}"),
            })
        };
        if self.tls.cert.is_some() != self.tls.key.is_some() {
            let key = if self.tls.cert.is_some() {
                "tls.cert"
            } else {
                "tls.key"
            };
            err(key, "tls.cert and tls.key go together".into());
        }
        for rule in &self.access {
            if rule.users.is_empty() {
                err("access.users", "a rule names at least one user".into());
            }
            if rule.repos.is_empty() {
                err("access.repos", "a rule names at least one glob".into());
            }
        }
        for rule in &self.retention {
            if rule.repos.is_empty() {
                err("retention.repos", "a rule names at least one glob".into());
            }
            if rule.keep_newest.is_none() && rule.untagged_older_than.is_none() {
                err(
                    "retention.repos",
                    "a rule needs keep_newest or untagged_older_than".into(),
                );
            }
        }
        if let Some(e) = &self.storage.s3.endpoint {
            if !(e.starts_with("https://") || e.starts_with("http://")) {
                err(
                    "storage.s3.endpoint",
                    format!("{e:?} must be an http(s) URL like https://s3.lab:9000"),
                );
            }
        }
        if let Some(0) = self.auth.token_ttl_secs {
            err("auth.token_ttl_secs", "must be at least 1".into());
        }
        if let Some(realm) = &self.auth.realm {
            if !(realm.starts_with("https://") || realm.starts_with("http://")) {
                err("auth.realm", "must be an http(s) URL".into());
            }
        }
        errors
    }
}

fn read(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|e| ConfigError {
        location: None,
        msg: format!("cannot read {}: {e}", path.display()),
    })
}

/// Every error of the file at `path` (see [`Config::check`]).
pub fn check_file(path: &Path) -> Result<Config, Vec<ConfigError>> {
    Config::check(&read(path).map_err(|e| vec![e])?)
}

/// One step of a key path: a mapping key or a list index (as in the file).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Step {
    Key(String),
    Index(usize),
}

/// `auth.admins[2]`.
fn display_path(path: &[Step]) -> String {
    let mut out = String::new();
    for step in path {
        match step {
            Step::Key(k) if out.is_empty() => out.push_str(k),
            Step::Key(k) => {
                out.push('.');
                out.push_str(k);
            }
            Step::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    out
}

/// What [`Config::check`] took out of the tree so far.
#[derive(Default)]
struct Removed {
    /// Paths (as displayed) of removed nodes.
    keys: Vec<String>,
    /// Per list (its path in the file), the file indices of the items removed from it.
    items: std::collections::HashMap<String, Vec<usize>>,
}

impl Removed {
    /// The path serde reports (in the tree as it is now) as a path in the file.
    fn original(&self, path: &serde_path_to_error::Path) -> Vec<Step> {
        use serde_path_to_error::Segment;
        let mut out = Vec::new();
        for seg in path.iter() {
            match seg {
                Segment::Map { key } => out.push(Step::Key(key.clone())),
                Segment::Enum { variant } => out.push(Step::Key(variant.clone())),
                Segment::Seq { index } => {
                    let gone = self.items.get(&display_path(&out));
                    // The index-th item of those still in the list.
                    let mut i = *index;
                    if let Some(gone) = gone {
                        let mut orig = 0;
                        let mut left = *index;
                        loop {
                            if !gone.contains(&orig) {
                                if left == 0 {
                                    break;
                                }
                                left -= 1;
                            }
                            orig += 1;
                        }
                        i = orig;
                    }
                    out.push(Step::Index(i));
                }
                Segment::Unknown => break,
            }
        }
        out
    }

    /// Remove the node at `path` (a path in the file) from `value`; false if there is none.
    fn remove(&mut self, value: &mut serde_yaml::Value, path: &[Step]) -> bool {
        let Some((last, parents)) = path.split_last() else {
            return false;
        };
        let mut node = value;
        for (depth, step) in parents.iter().enumerate() {
            let next = match (step, node) {
                (Step::Key(k), serde_yaml::Value::Mapping(m)) => m.get_mut(k.as_str()),
                (Step::Index(i), serde_yaml::Value::Sequence(items)) => {
                    let shift = self
                        .items
                        .get(&display_path(&parents[..depth]))
                        .map_or(0, |gone| gone.iter().filter(|g| *g < i).count());
                    items.get_mut(i - shift)
                }
                _ => None,
            };
            match next {
                Some(n) => node = n,
                None => return false,
            }
        }
        let done = match (last, node) {
            (Step::Key(k), serde_yaml::Value::Mapping(m)) => m.remove(k.as_str()).is_some(),
            (Step::Index(i), serde_yaml::Value::Sequence(items)) => {
                let gone = self.items.entry(display_path(parents)).or_default();
                let shift = gone.iter().filter(|g| *g < i).count();
                if i - shift < items.len() {
                    items.remove(i - shift);
                    gone.push(*i);
                    true
                } else {
                    false
                }
            }
            _ => false,
        };
        if done {
            self.keys.push(display_path(path));
        }
        done
    }
}

/// The 1-based line of the node at `path` in block-style YAML: each key is looked for among
/// the children of the one before (lines indented deeper, up to the next sibling); a list
/// item is the n-th `- ` at the list's indentation. Inside flow style (`[a, b]`) the line
/// of the deepest key found is the answer.
fn line_of_path(text: &str, path: &[Step]) -> Option<usize> {
    // Each line as (indent, content); a `- ` item marker counts as indentation once entered.
    let mut lines: Vec<(usize, String)> = text
        .lines()
        .map(|l| {
            let content = l.trim_start();
            (l.len() - content.len(), content.to_owned())
        })
        .collect();
    let significant = |c: &str| !c.is_empty() && !c.starts_with('#');
    let item = |c: &str| c.starts_with("- ") || c == "-";
    let (mut start, mut end) = (0, lines.len());
    let mut found = None;
    for step in path {
        let indent = lines[start..end]
            .iter()
            .find(|(_, c)| significant(c))
            .map(|(i, _)| *i)?;
        let at = match step {
            Step::Key(k) => {
                let needle = format!("{k}:");
                (start..end).find(|&n| {
                    let (i, c) = &lines[n];
                    *i == indent && (c.starts_with(&needle) || c.starts_with(&format!("\"{k}\":")))
                })
            }
            Step::Index(want) => (start..end)
                .filter(|&n| {
                    let (i, c) = &lines[n];
                    *i == indent && item(c)
                })
                .nth(*want),
        };
        let Some(at) = at else {
            return found;
        };
        found = Some(at + 1);
        // The node runs until the next line at its indentation or less; a key's list may
        // sit at the key's own indentation (`key:` then `- item` lines).
        let node_end = (at + 1..end)
            .find(|&n| {
                let (i, c) = &lines[n];
                significant(c)
                    && (*i < indent
                        || (*i == indent && (matches!(step, Step::Index(_)) || !item(c))))
            })
            .unwrap_or(end);
        if let Step::Index(_) = step {
            // Enter the item: `- key: v` becomes `  key: v`.
            let (i, c) = &lines[at];
            let rest = c.trim_start_matches('-');
            let inner = rest.trim_start();
            lines[at] = (i + (c.len() - inner.len()), inner.to_owned());
            start = at;
        } else {
            start = at + 1;
        }
        end = node_end;
        if start >= end {
            break;
        }
    }
    found
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
    /// What GC runs (timer, `POST /admin/v1/gc`) do by default, retention included.
    pub gc: GcOptions,
    /// Zero: no GC timer.
    pub gc_interval: Duration,
    pub allow_referenced_blob_delete: bool,
    pub trusted_proxies: Vec<TrustedNet>,
    /// The free-space floor of `/readyz`, in MiB.
    pub min_free_mib: u64,
    pub log_format: LogFormat,
    pub metrics: MetricsSettings,
    pub blobs: BlobBackend,
    /// `metadata.url`: PostgreSQL, or `None` for the data dir's own journal.
    pub metadata_url: Option<String>,
}

/// Default of `limits.max_open_uploads`.
pub const DEFAULT_MAX_OPEN_UPLOADS: usize = 1024;
/// Default of `limits.max_open_uploads_per_client`: a docker push holds a handful of
/// sessions; this leaves room for a CI account pushing many images at once, while eight
/// such clients are needed to reach the registry-wide cap.
pub const DEFAULT_MAX_OPEN_UPLOADS_PER_CLIENT: usize = 128;

/// Hardening limits, all with defaults.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub header_timeout: Duration,
    pub body_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_header_bytes: usize,
    pub max_concurrent_uploads: usize,
    /// `None`: no cap.
    pub max_open_uploads: Option<usize>,
    /// `None`: no cap.
    pub max_open_uploads_per_client: Option<usize>,
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
            // Longer than the 90 s clients keep idle connections (Go's default), so that
            // they usually close first and do not send into a closing connection.
            idle_timeout: Duration::from_secs(self.idle_timeout_secs.unwrap_or(120)),
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
            // So that one client cannot hold every slot of the cap above.
            max_open_uploads_per_client: match self.max_open_uploads_per_client {
                Some(0) => None,
                Some(n) => Some(n),
                None => Some(DEFAULT_MAX_OPEN_UPLOADS_PER_CLIENT),
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
        pick(&mut l.idle_timeout_secs, m.idle_timeout_secs);
        pick(&mut l.max_header_bytes, m.max_header_bytes);
        pick(&mut l.max_concurrent_uploads, m.max_concurrent_uploads);
        pick(&mut l.max_open_uploads, m.max_open_uploads);
        pick(
            &mut l.max_open_uploads_per_client,
            m.max_open_uploads_per_client,
        );
        pick(&mut self.gc.interval, other.gc.interval);
        pick(&mut self.gc.grace, other.gc.grace);
        pick(&mut self.gc.delete_untagged, other.gc.delete_untagged);
        pick(&mut self.uploads.ttl, other.uploads.ttl);
        pick(
            &mut self.storage.allow_referenced_blob_delete,
            other.storage.allow_referenced_blob_delete,
        );
        pick(&mut self.storage.min_free_mib, other.storage.min_free_mib);
        pick(&mut self.storage.driver, other.storage.driver);
        pick(&mut self.metadata.url, other.metadata.url);
        let (s, t) = (&mut self.storage.s3, other.storage.s3);
        pick(&mut s.endpoint, t.endpoint);
        pick(&mut s.bucket, t.bucket);
        pick(&mut s.region, t.region);
        pick(&mut s.prefix, t.prefix);
        pick(&mut s.path_style, t.path_style);
        pick(&mut s.redirect, t.redirect);
        pick(&mut s.access_key_id, t.access_key_id);
        pick(&mut s.secret_access_key, t.secret_access_key);
        if !other.retention.is_empty() {
            self.retention = other.retention;
        }
        if !other.trusted_proxies.is_empty() {
            self.trusted_proxies = other.trusted_proxies;
        }
        pick(&mut self.log.format, other.log.format);
        pick(&mut self.metrics.addr, other.metrics.addr);
        pick(&mut self.metrics.anonymous, other.metrics.anonymous);
        pick(
            &mut self.metrics.top_repositories,
            other.metrics.top_repositories,
        );
        self
    }

    /// The GC options these keys ask for, defaults filled in (not a dry run).
    pub fn gc_options(&self) -> GcOptions {
        let ttl = self.uploads.ttl.map_or(DEFAULT_UPLOAD_TTL, |d| d.0);
        GcOptions {
            grace: self.gc.grace.map_or(DEFAULT_GC_GRACE, |d| d.0),
            delete_untagged: self.gc.delete_untagged.unwrap_or(false),
            dry_run: false,
            upload_ttl: (!ttl.is_zero()).then_some(ttl),
            retention: self
                .retention
                .iter()
                .enumerate()
                .map(|(i, r)| r.to_storage(i))
                .collect(),
        }
    }

    pub fn settings(self) -> Result<Settings, ConfigError> {
        let gc = self.gc_options();
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
        // Without a user file authentication is off: rules and admins would silently grant
        // nothing while anyone pushes. Refuse rather than start open.
        if self.auth.htpasswd.is_none() {
            let given = match (self.access.is_empty(), self.auth.admins.is_empty()) {
                (true, true) => None,
                (false, true) => Some("`access` rules are"),
                (true, false) => Some("`auth.admins` is"),
                (false, false) => Some("`access` rules and `auth.admins` are"),
            };
            if let Some(given) = given {
                return Err(ConfigError {
                    location: None,
                    msg: format!(
                        "{given} set but `auth.htpasswd` (--htpasswd) is not: without a user \
file authentication is off and anyone could push; set auth.htpasswd"
                    ),
                });
            }
        }
        let blobs = self.storage.blob_backend()?;
        let metadata_url = self.metadata.url.filter(|u| !u.is_empty());
        if let Some(url) = &metadata_url {
            airdock_storage::check_metadata_url(url).map_err(|msg| ConfigError {
                location: None,
                msg: format!("metadata.url (--metadata-url, AIRDOCK_METADATA_URL): {msg}"),
            })?;
        }
        Ok(Settings {
            blobs,
            metadata_url,
            gc,
            gc_interval: self.gc.interval.map_or(Duration::ZERO, |d| d.0),
            allow_referenced_blob_delete: self
                .storage
                .allow_referenced_blob_delete
                .unwrap_or(false),
            min_free_mib: self.storage.min_free_mib.unwrap_or(DEFAULT_MIN_FREE_MIB),
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
            trusted_proxies: self.trusted_proxies,
            log_format: self.log.format.unwrap_or_default(),
            metrics: MetricsSettings {
                addr: self.metrics.addr,
                anonymous: self.metrics.anonymous.unwrap_or(false),
                top_repositories: self
                    .metrics
                    .top_repositories
                    .unwrap_or(DEFAULT_METRICS_TOP_REPOSITORIES),
            },
        })
    }
}

impl StorageConfig {
    /// `storage.driver` and `storage.s3.*`, checked together: a bucket is required with
    /// `s3`, and bucket keys without `s3` are refused rather than silently unused (blobs
    /// would go to local disk while the operator believes they are in S3).
    pub fn blob_backend(&self) -> Result<BlobBackend, ConfigError> {
        let err = |msg: String| ConfigError {
            location: None,
            msg,
        };
        let s3 = &self.s3;
        match self.driver.unwrap_or_default() {
            StorageDriver::Filesystem => {
                let set = [
                    ("storage.s3.endpoint", s3.endpoint.is_some()),
                    ("storage.s3.bucket", s3.bucket.is_some()),
                    ("storage.s3.prefix", s3.prefix.is_some()),
                    ("storage.s3.redirect", s3.redirect.is_some()),
                ];
                if let Some((key, _)) = set.iter().find(|(_, on)| *on) {
                    return Err(err(format!(
                        "{key} is set but storage.driver is filesystem: set storage.driver \
(--storage, AIRDOCK_STORAGE) to s3, or remove the storage.s3 keys"
                    )));
                }
                Ok(BlobBackend::Filesystem)
            }
            StorageDriver::S3 => {
                let bucket = s3.bucket.clone().filter(|b| !b.is_empty()).ok_or_else(|| {
                    err("storage.driver s3 needs storage.s3.bucket (--s3-bucket, AIRDOCK_S3_BUCKET)"
                        .into())
                })?;
                // The environment's standard variables win, as with every AWS tool.
                let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
                let access_key_id = env("AWS_ACCESS_KEY_ID").or_else(|| s3.access_key_id.clone());
                let secret_access_key =
                    env("AWS_SECRET_ACCESS_KEY").or_else(|| s3.secret_access_key.clone());
                if access_key_id.is_some() != secret_access_key.is_some() {
                    return Err(err(
                        "S3 credentials come in pairs: an access key id (AWS_ACCESS_KEY_ID or \
storage.s3.access_key_id) and a secret (AWS_SECRET_ACCESS_KEY or storage.s3.secret_access_key)"
                            .into(),
                    ));
                }
                Ok(BlobBackend::S3(airdock_storage_s3::S3Config {
                    path_style: s3.path_style.unwrap_or(s3.endpoint.is_some()),
                    endpoint: s3.endpoint.clone(),
                    bucket,
                    region: s3
                        .region
                        .clone()
                        .unwrap_or_else(|| DEFAULT_S3_REGION.into()),
                    prefix: s3.prefix.clone().unwrap_or_default(),
                    redirect: s3.redirect.unwrap_or(false),
                    access_key_id,
                    secret_access_key,
                }))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retention_matchers_never_accept_imgpkg_tags() {
        let text = "retention:\n  - repos: ['*']\n    keep_newest: 1\n  - repos: ['*']\n    \
tags: 'sha256-*'\n    keep_newest: 1\n";
        let config = Config::parse(text).expect("parse");
        assert_eq!(config.retention.len(), 2);
        for (i, rule) in config.retention.iter().enumerate() {
            let r = rule.to_storage(i);
            assert!((r.tags)("v1") || i == 1);
            assert!((r.tags)("sha256-abc") || i == 0);
            assert!(!(r.tags)("sha256-abc.imgpkg"));
            assert!(!(r.tags)("sha256-abc.image-locations.imgpkg"));
        }
    }

    #[test]
    fn storage_driver_and_s3_keys() {
        let s = Config::parse("")
            .expect("empty")
            .settings()
            .expect("settings");
        assert!(matches!(s.blobs, BlobBackend::Filesystem));
        let text = "storage:\n  driver: s3\n  s3:\n    endpoint: http://127.0.0.1:7070\n    \
bucket: reg\n    prefix: lab/a\n    access_key_id: k\n    secret_access_key: s\n";
        let s = Config::parse(text)
            .expect("parse")
            .settings()
            .expect("settings");
        let BlobBackend::S3(config) = s.blobs else {
            panic!("not s3");
        };
        assert_eq!(config.endpoint.as_deref(), Some("http://127.0.0.1:7070"));
        assert_eq!(
            (config.bucket.as_str(), config.prefix.as_str()),
            ("reg", "lab/a")
        );
        assert_eq!(config.region, DEFAULT_S3_REGION);
        assert!(
            config.path_style,
            "a custom endpoint defaults to path style"
        );
        assert!(!config.redirect);
        // Flags win over the file.
        let flags = Config {
            storage: StorageConfig {
                s3: S3Keys {
                    bucket: Some("other".into()),
                    redirect: Some(true),
                    path_style: Some(false),
                    ..S3Keys::default()
                },
                ..StorageConfig::default()
            },
            ..Config::default()
        };
        let s = Config::parse(text)
            .expect("parse")
            .overlay(flags)
            .settings();
        let BlobBackend::S3(config) = s.expect("settings").blobs else {
            panic!("not s3");
        };
        assert_eq!(config.bucket, "other");
        assert!(config.redirect && !config.path_style);
    }

    #[test]
    fn bad_storage_keys_are_refused() {
        let e = Config::parse("storage:\n  driver: s4\n").expect_err("bad driver");
        assert_eq!(e.location, Some(2), "{e}");
        let e = Config::parse("storage:\n  s3:\n    bucket: a\n    regoin: x\n").expect_err("typo");
        assert_eq!(e.location, Some(4), "{e}");
        let e = Config::parse("storage:\n  s3:\n    endpoint: s3.lab:9000\n").expect_err("url");
        assert_eq!(e.location, Some(3), "{e}");
        assert!(e.to_string().contains("storage.s3.endpoint"), "{e}");
        let e = Config::parse("storage:\n  driver: s3\n")
            .expect("parse")
            .settings()
            .expect_err("no bucket");
        assert!(e.to_string().contains("storage.s3.bucket"), "{e}");
        let e = Config::parse("storage:\n  s3:\n    bucket: a\n")
            .expect("parse")
            .settings()
            .expect_err("bucket without the driver");
        assert!(e.to_string().contains("storage.driver"), "{e}");
        let e =
            Config::parse("storage:\n  driver: s3\n  s3:\n    bucket: a\n    access_key_id: k\n")
                .expect("parse")
                .settings();
        // Only when the environment does not supply the secret.
        if std::env::var_os("AWS_SECRET_ACCESS_KEY").is_none() {
            assert!(e
                .expect_err("half a key pair")
                .to_string()
                .contains("pairs"));
        }
    }

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

    /// Issue 10, defect 8: rules or admins without a user file would leave the server open.
    #[test]
    fn rules_or_admins_without_htpasswd_are_refused() {
        let rules = "access:\n  - repos: [\"a/*\"]\n    users: [bob]\n    allow: [pull]\n";
        for text in [rules, "auth:\n  admins: [root]\n"] {
            let e = Config::parse(text)
                .expect("parses")
                .settings()
                .expect_err("no user source");
            assert!(e.to_string().contains("auth.htpasswd"), "{e}");
        }
        // The flag supplies the file: fine.
        let flags = Config {
            auth: AuthConfig {
                htpasswd: Some("/etc/airdock/htpasswd".into()),
                ..AuthConfig::default()
            },
            ..Config::default()
        };
        let cfg = Config::parse(rules).expect("parse").overlay(flags);
        assert!(cfg.settings().is_ok());
    }

    #[test]
    fn metadata_url_key_flag_and_check() {
        let cfg =
            Config::parse("metadata:\n  url: postgres://airdock@db:5432/airdock\n").expect("parse");
        let s = cfg.clone().settings().expect("settings");
        assert_eq!(
            s.metadata_url.as_deref(),
            Some("postgres://airdock@db:5432/airdock")
        );
        let flags = Config {
            metadata: MetadataConfig {
                url: Some("postgres://other@db2/x".into()),
            },
            ..Config::default()
        };
        let s = cfg.overlay(flags).settings().expect("settings");
        assert_eq!(s.metadata_url.as_deref(), Some("postgres://other@db2/x"));
        assert_eq!(Config::default().settings().expect("s").metadata_url, None);
        let bad = Config::parse("metadata:\n  url: \"mysql://x\"\n")
            .expect("parses")
            .settings()
            .expect_err("not PostgreSQL");
        assert!(bad.msg.contains("metadata.url"), "{bad}");
        let tls = Config::parse("metadata:\n  url: postgres://a@b/c?sslmode=require\n")
            .expect("parses")
            .settings()
            .expect("TLS to the database");
        assert!(tls.metadata_url.is_some());
        let bad = Config::parse("metadata:\n  url: postgres://a@b/c?sslmode=verify\n")
            .expect("parses")
            .settings()
            .expect_err("an unknown sslmode is refused, not silently dropped");
        assert!(bad.msg.contains("sslmode=verify"), "{bad}");
        let ca = Config::parse(
            "metadata:\n  url: postgres://a@b/c?sslmode=verify-full&sslrootcert=/nonexistent.pem\n",
        )
        .expect("parses")
        .settings()
        .expect_err("a CA file that cannot be read");
        assert!(ca.msg.contains("/nonexistent.pem"), "{ca}");
        assert!(
            Config::parse("metadata:\n  urll: x\n").is_err(),
            "unknown key"
        );
    }

    #[test]
    fn trusted_proxies_key_and_flag() {
        let cfg = Config::parse("trusted_proxies: [10.0.0.0/8, \"::1\"]\n").expect("parse");
        assert_eq!(cfg.trusted_proxies.len(), 2);
        let e = Config::parse("sparse: true\ntrusted_proxies: [10.1.0.0/8]\n").expect_err("bad");
        assert_eq!(e.location, Some(2), "{e}");
        let flags = Config {
            trusted_proxies: vec!["127.0.0.1".parse().expect("net")],
            ..Config::default()
        };
        let s = cfg.overlay(flags).settings().expect("settings");
        assert_eq!(s.trusted_proxies, vec!["127.0.0.1".parse().expect("net")]);
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

    #[test]
    fn retention_and_gc_keys() {
        let text =
            "gc:\n  interval: 6h\n  grace: 90\n  delete_untagged: true\nuploads:\n  ttl: 0\n\
storage:\n  allow_referenced_blob_delete: true\nretention:\n  - repos: [\"team/**\"]\n    \
tags: \"v*\"\n    keep_newest: 3\n    untagged_older_than: 7d\n";
        let s = Config::parse(text)
            .expect("parse")
            .settings()
            .expect("settings");
        assert_eq!(s.gc_interval, Duration::from_secs(6 * 3600));
        assert_eq!(s.gc.grace, Duration::from_secs(90));
        assert!(s.gc.delete_untagged && s.allow_referenced_blob_delete);
        assert_eq!(s.gc.upload_ttl, None);
        let r = &s.gc.retention[0];
        assert!((r.repos)("team/a/b") && !(r.repos)("other/a"));
        assert!((r.tags)("v1.2") && !(r.tags)("latest"));
        assert_eq!(r.keep_newest, Some(3));
        assert_eq!(r.untagged_older_than, Some(Duration::from_secs(7 * 86400)));
        // Flags win over the file.
        let flags = Config {
            gc: GcConfig {
                grace: Some(DurationValue(Duration::from_secs(5))),
                ..GcConfig::default()
            },
            ..Config::default()
        };
        let s = Config::parse(text).expect("parse").overlay(flags);
        assert_eq!(s.gc_options().grace, Duration::from_secs(5));
    }

    #[test]
    fn bad_retention_names_line() {
        let e = Config::parse("retention:\n  - repos: [a]\n    keep_newest: 2\n    older: 1d\n")
            .expect_err("unknown key");
        assert_eq!(e.location, Some(4), "{e}");
        let e = Config::parse("gc:\n  grace: 2w\n").expect_err("bad duration");
        assert_eq!(e.location, Some(2), "{e}");
        let e = Config::parse("sparse: true\nretention:\n  - repos: [a]\n").expect_err("no action");
        assert!(e.to_string().contains("keep_newest"), "{e}");
        assert_eq!(e.location, Some(3), "{e}");
        let e =
            Config::parse("retention:\n  - repos: []\n    keep_newest: 1\n").expect_err("no repos");
        assert!(e.to_string().contains("retention.repos"), "{e}");
    }

    /// `config check` reports every error, each with its key path and line.
    #[test]
    fn check_reports_every_error() {
        let text = "\
addr: 127.0.0.1:5000
limits:
  max_header_bytes: lots
  idle_timout_secs: 5
auth:
  htpasswd: /etc/airdock/htpasswd
  admins: [root]
access:
- repos: [\"a/*\"]
  users: [bob]
  allow: [pull]
- repos: [\"b/*\"]
  users: [bob]
  allow: [pull, pus]
gc:
  grace: 2w
";
        let errors = Config::check(text).expect_err("three errors");
        let got: Vec<(Option<usize>, String)> =
            errors.iter().map(|e| (e.location, e.msg.clone())).collect();
        assert_eq!(errors.len(), 4, "{got:#?}");
        let find = |key: &str| {
            got.iter()
                .find(|(_, m)| m.starts_with(key))
                .unwrap_or_else(|| panic!("no error for {key}: {got:#?}"))
                .0
        };
        assert_eq!(find("limits.max_header_bytes: invalid type"), Some(3));
        assert_eq!(find("limits.idle_timout_secs: unknown field"), Some(4));
        assert_eq!(find("access[1].allow[1]: "), Some(14));
        assert_eq!(find("gc.grace: "), Some(16));
        // The first is what `parse` (serve) reports.
        assert!(Config::parse(text).is_err());
        // Errors spanning keys are all reported too.
        let text = "tls:\n  cert: /x\nauth:\n  token_ttl_secs: 0\n  realm: ftp://x\n";
        let errors = Config::check(text).expect_err("three errors");
        assert_eq!(errors.len(), 3, "{errors:?}");
    }

    #[test]
    fn removed_list_items_keep_their_file_index() {
        let text = "trusted_proxies:\n- 10.1.0.0/8\n- 10.0.0.0/8\n- bad\n";
        let errors = Config::check(text).expect_err("two errors");
        let msgs: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
        assert_eq!(errors.len(), 2, "{msgs:?}");
        assert!(
            msgs[0].starts_with("line 2: trusted_proxies[0]"),
            "{msgs:?}"
        );
        assert!(
            msgs[1].starts_with("line 4: trusted_proxies[2]"),
            "{msgs:?}"
        );
    }

    #[test]
    fn listen_addresses() {
        let ok = |s: &str| parse_listen_addr(s).expect(s).to_string();
        assert_eq!(ok("127.0.0.1:5000"), "127.0.0.1:5000");
        assert_eq!(ok("[::1]:5000"), "[::1]:5000");
        assert_eq!(ok("localhost:5000"), "127.0.0.1:5000");
        assert_eq!(ok("LOCALHOST:0"), "127.0.0.1:0");
        assert_eq!(ok(":5000"), "[::]:5000");
        assert_eq!(ok("0.0.0.0:80"), "0.0.0.0:80");
        for (bad, says) in [
            ("registry.lab:5000", "not resolved"),
            ("::1:5000", "brackets"),
            ("localhost", "not a listen address"),
            ("localhost:99999", "port"),
            (":http", "port"),
            ("", "not a listen address"),
            ("[::1]", "port"),
        ] {
            let e = parse_listen_addr(bad).expect_err(bad);
            assert!(e.contains(says), "{bad}: {e}");
        }
        let cfg = Config::parse("addr: \":5000\"\n").expect("parse");
        assert_eq!(cfg.addr, Some("[::]:5000".parse().expect("addr")));
        let e = Config::parse("sparse: true\naddr: host.lab:1\n").expect_err("name");
        assert_eq!(e.location, Some(2), "{e}");
    }

    #[test]
    fn log_and_metrics_keys() {
        let text = "log:\n  format: json\nmetrics:\n  addr: 127.0.0.1:9100\n  anonymous: true\n  \
top_repositories: 5\n";
        let s = Config::parse(text)
            .expect("parse")
            .settings()
            .expect("settings");
        assert_eq!(s.log_format, LogFormat::Json);
        assert_eq!(
            s.metrics,
            MetricsSettings {
                addr: Some("127.0.0.1:9100".parse().expect("addr")),
                anonymous: true,
                top_repositories: 5,
            }
        );
        let d = Config::default().settings().expect("defaults");
        assert_eq!(
            (d.log_format, d.metrics),
            (LogFormat::Text, MetricsSettings::default())
        );
        let e = Config::parse("log:\n  format: xml\n").expect_err("bad format");
        assert_eq!(e.location, Some(2), "{e}");
        let flags = Config {
            metrics: MetricsConfig {
                top_repositories: Some(1),
                ..MetricsConfig::default()
            },
            ..Config::default()
        };
        let s = Config::parse(text).expect("parse").overlay(flags);
        assert_eq!(s.settings().expect("settings").metrics.top_repositories, 1);
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("15m"), Ok(Duration::from_secs(900)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert!(parse_duration("1w").is_err());
        assert!(parse_duration("s").is_err());
        assert!(parse_duration("-1s").is_err());
        assert!(parse_duration("99999999999999999999d").is_err());
    }
}
