//! Authentication and rights, as one middleware in front of `/v2/*` and `/admin/*` plus the
//! token endpoint. Handlers behind it need no change: a request that reaches them was
//! allowed. With no htpasswd configured the middleware lets everything through (anonymous
//! full access, as before).
//!
//! The exchange clients expect (Distribution's token mode):
//! 1. `GET /v2/` without credentials → `401`, `WWW-Authenticate: Bearer realm=…,service=…`.
//! 2. `GET <realm>?service=…&scope=repository:team/app:pull,push` with Basic credentials (or
//!    none, for anonymous access) → `{"token": …}`, a JWT granting what the rules allow.
//! 3. The request again with `Authorization: Bearer <token>`.
//!
//! Basic credentials are accepted on every request too (Distribution's htpasswd mode, and
//! what `auth.mode: basic` announces); the admin token is accepted as a machine credential
//! for `/admin/*`.

pub mod admin_token;
pub mod htpasswd;
pub mod policy;
pub mod throttle;
pub mod token;

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::config::{AuthConfig, AuthMode};
pub use crate::error::AuthError;
use crate::error::RegistryError;
use crate::forwarded::Client;
pub use crate::http::catalog::Visible;
use crate::http::route::{self, Endpoint};
pub use crate::http::uploads::Pusher;
use crate::http::Query;
use crate::metrics::{self, AuthFailure};
use crate::rules::AccessRule;
use admin_token::AdminToken;
use htpasswd::{Check, Htpasswd};
use policy::{Policy, Right, Rights, Subject};
use throttle::Throttle;
use token::{Claims, Scope, TokenKey};

/// How long a checked user/password pair is remembered, so that clients that send Basic
/// credentials on every request do not pay for a bcrypt check on each one. A remembered
/// pair stands only while the user's htpasswd entry is the one that verified it, so a
/// changed or removed entry takes effect as soon as the file is re-read.
const VERIFIED_TTL: Duration = Duration::from_secs(60);
const VERIFIED_MAX: usize = 4096;

/// The auth configuration in force. Shared behind an `Arc` by every request.
pub struct Auth {
    users: Htpasswd,
    policy: Policy,
    mode: AuthMode,
    realm: Option<String>,
    service: String,
    ttl: u64,
    key: TokenKey,
    throttle: Throttle,
    /// Recently verified credentials, keyed by an HMAC of `user:password` under a per-process
    /// key (no password kept), with the user and the htpasswd entry that matched. std Mutex:
    /// map operations only, no await.
    verified: Mutex<HashMap<[u8; 32], Verified>>,
    /// Random per process: the HMAC key of `verified`.
    cache_key: [u8; 32],
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field("mode", &self.mode)
            .field("service", &self.service)
            .finish_non_exhaustive()
    }
}

struct Verified {
    user: String,
    entry: String,
    at: Instant,
}

/// What a password check found.
enum Login {
    Valid,
    Invalid,
    /// The user file is unreadable or invalid: no login succeeds until it is fixed.
    Unavailable,
}

/// Told to a client whose login could not be checked, so that someone fixes the file.
const USERS_UNAVAILABLE: &str =
    "the server cannot read its user file; logins are refused until an administrator fixes it";

/// What a request needs before it may reach its handler.
#[derive(Debug, PartialEq)]
enum Need {
    /// Any successful authentication (`/v2/` and paths that are no endpoint).
    Login,
    Catalog,
    Repo(String, Right),
    Admin,
    /// The export (`/admin/v1/export`): an admin, or pull on every repository it reads,
    /// checked by the handler through [`ReadCheck`] as it finds them.
    Export,
}

/// The path of the export, the one admin route that pull rights open (it reveals nothing a
/// pull of the same repositories would not).
pub const EXPORT_PATH: &str = "/admin/v1/export";

/// Left in the request of an export by the layer: may the caller read a repository? The
/// same 401 (with the scope to ask for) or 403 a pull of it would get; always `Ok` for an
/// admin, and for everyone when authentication is off (then `/v2` pulls are open too).
#[derive(Clone)]
pub struct ReadCheck(Arc<ReadFn>);

/// A repository name → the pull decision for it.
type ReadFn = dyn Fn(&str) -> Result<(), AuthError> + Send + Sync;

impl ReadCheck {
    fn anyone() -> ReadCheck {
        ReadCheck(Arc::new(|_| Ok(())))
    }

    pub fn check(&self, repo: &str) -> Result<(), AuthError> {
        (self.0)(repo)
    }
}

/// Who the caller turned out to be, and where their rights come from.
enum Caller {
    Anonymous,
    /// Basic credentials checked against htpasswd: rights from the rules.
    User(String),
    /// A bearer token: rights from its claims.
    Token(Claims),
    /// The admin token.
    Machine,
}

/// Who an admin request runs as, for records that say who did what (import records): an
/// admin's user name, or `admin-token`. The layer puts it in every admin request it lets
/// through.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AdminPrincipal(pub String);

impl Caller {
    fn principal(&self) -> AdminPrincipal {
        AdminPrincipal(match self {
            Caller::Machine => "admin-token".to_owned(),
            Caller::User(u) => u.clone(),
            Caller::Token(c) => c.sub.clone(),
            Caller::Anonymous => "anonymous".to_owned(),
        })
    }
}

/// The one challenge of the admin API, whatever refused the caller: its callers are
/// scripts holding the admin token or an admin's credentials, not token-flow clients.
pub const ADMIN_CHALLENGE: &str = "Bearer realm=\"airdock-admin\"";

/// The challenge of `auth.mode: basic` and of a failed login at the token endpoint.
const BASIC_CHALLENGE: &str = "Basic realm=\"airdock\", charset=\"UTF-8\"";

/// What an anonymous caller of `/admin/*` is told.
const ADMIN_LOGIN: &str = "the admin API needs the admin token (`Authorization: Bearer <token>`, \
see <data-dir>/admin-token), an admin's Basic credentials or a token with the registry:admin:* scope";

/// What the layer guards with: the authentication in force (`None`: off), the admin
/// token (`None`: the admin API is off), and whether `/metrics` is open to anyone (else
/// it is admitted like the admin API).
#[derive(Clone, Default)]
pub struct Gate {
    pub auth: Option<Arc<Auth>>,
    pub admin: Option<AdminToken>,
    pub metrics_anonymous: bool,
}

/// Who a request was made by, as the access and audit logs name them: a user, or
/// [`ADMIN_TOKEN_PRINCIPAL`]. The layer puts it in the response's extensions once the
/// caller is identified (absent: anonymous, or not identified).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal(pub String);

/// The principal of a request made with the admin token.
pub const ADMIN_TOKEN_PRINCIPAL: &str = "admin-token";

impl Caller {
    /// Who the logs name; `None` for an anonymous caller.
    fn who(&self) -> Option<Principal> {
        match self {
            Caller::Anonymous => None,
            Caller::User(u) => Some(Principal(u.clone())),
            Caller::Token(c) if c.sub.is_empty() => None,
            Caller::Token(c) => Some(Principal(c.sub.clone())),
            Caller::Machine => Some(Principal(ADMIN_TOKEN_PRINCIPAL.to_owned())),
        }
    }
}

/// `resp` with `principal` in its extensions.
fn by(principal: Option<Principal>, mut resp: Response) -> Response {
    if let Some(p) = principal {
        resp.extensions_mut().insert(p);
    }
    resp
}

/// The one admin check: the admin token, an admin's password, or a token made for admin
/// work — one carrying the admin scope, issued to (and still held by) an admin. A token
/// issued for pulls and pushes opens no admin route, whoever its subject is.
fn admit_admin(policy: Option<&Policy>, caller: &Caller) -> Result<(), AuthError> {
    let is_admin = |who: &str| policy.is_some_and(|p| p.is_admin(&Subject::User(who.to_owned())));
    match caller {
        Caller::Machine => Ok(()),
        Caller::User(u) if is_admin(u) => Ok(()),
        Caller::Token(c) if c.grants_admin() && is_admin(&c.sub) => Ok(()),
        Caller::Anonymous => Err(AuthError::Unauthorized {
            challenge: ADMIN_CHALLENGE.to_owned(),
            message: ADMIN_LOGIN,
        }),
        // The rules would allow it: send the client back for a token made for it.
        Caller::Token(c) if is_admin(&c.sub) => Err(AuthError::Unauthorized {
            challenge: ADMIN_CHALLENGE.to_owned(),
            message: "this token was not issued for admin work: ask the token endpoint for \
                      scope=registry:admin:*",
        }),
        Caller::User(_) | Caller::Token(_) => {
            Err(AuthError::Denied("the admin right is required".into()))
        }
    }
}

/// The secrets every replica on one metadata database must agree on, kept in that database
/// (`Store::shared_secret`): the token signing key, so that a token one replica issued is
/// accepted by all, and (unless one is configured) the admin token. Both `None` with a local
/// journal: then they live in the data dir as before.
pub struct SharedSecrets {
    pub token_key: Option<TokenKey>,
    pub admin_token: Option<String>,
}

impl SharedSecrets {
    /// Read them, the first replica to ask making them. `admin_token_configured`: the admin
    /// token comes from a flag or file, so none is kept in the database.
    pub async fn of(
        store: &airdock_storage::Store,
        admin_token_configured: bool,
    ) -> anyhow::Result<SharedSecrets> {
        if !store.metadata_is_shared() {
            return Ok(SharedSecrets {
                token_key: None,
                admin_token: None,
            });
        }
        let key = store
            .shared_secret("token_key", &crate::sys::random_hex(32)?)
            .await?
            .map(|hex| TokenKey::from_hex(&hex))
            .transpose()?;
        let admin_token = if admin_token_configured {
            None
        } else {
            let t = store
                .shared_secret("admin_token", &crate::sys::random_hex(32)?)
                .await?;
            tracing::info!(
                "admin token kept in the metadata database, the same on every replica \
                 (SELECT value FROM airdock_secrets WHERE name = 'admin_token')"
            );
            t
        };
        Ok(SharedSecrets {
            token_key: key,
            admin_token,
        })
    }
}

impl Auth {
    /// Build from configuration; `data_dir` holds the token signing key.
    pub fn new(
        cfg: &AuthConfig,
        rules: Vec<AccessRule>,
        data_dir: &Path,
    ) -> anyhow::Result<Option<Arc<Auth>>> {
        Auth::new_with_key(cfg, rules, data_dir, None)
    }

    /// [`Auth::new`] signing with `key` when given (replicas share it), else the one in
    /// `data_dir`.
    pub fn new_with_key(
        cfg: &AuthConfig,
        rules: Vec<AccessRule>,
        data_dir: &Path,
        key: Option<TokenKey>,
    ) -> anyhow::Result<Option<Arc<Auth>>> {
        let Some(path) = &cfg.htpasswd else {
            return Ok(None);
        };
        let users = Htpasswd::load(path)
            .map_err(|e| anyhow::anyhow!("htpasswd file {}: {e}", path.display()))?;
        let key = match key {
            Some(key) => key,
            None => TokenKey::load_or_create(&data_dir.join("token.key"))?,
        };
        Ok(Some(Arc::new(Auth {
            users,
            policy: Policy::new(rules, cfg.admins.clone()),
            mode: cfg.mode.unwrap_or_default(),
            realm: cfg.realm.clone(),
            service: cfg.service.clone().unwrap_or_else(|| "airdock".to_owned()),
            ttl: cfg.token_ttl_secs.unwrap_or(300),
            key,
            throttle: Throttle::new(
                cfg.max_failures.unwrap_or(10),
                Duration::from_secs(cfg.lockout_secs.unwrap_or(60)),
            ),
            verified: Mutex::new(HashMap::new()),
            cache_key: {
                let mut k = [0u8; 32];
                crate::sys::fill_random(&mut k)?;
                k
            },
        })))
    }

    /// The configured realm, else the token endpoint at the URL the client used (behind a
    /// trusted proxy: the proxy's scheme and host).
    fn realm(&self, client: &Client) -> String {
        match &self.realm {
            Some(r) => r.clone(),
            None => format!("{}/token", client.origin()),
        }
    }

    fn challenge(&self, client: &Client, scope: Option<&str>, error: Option<&str>) -> String {
        match self.mode {
            AuthMode::Basic => BASIC_CHALLENGE.to_owned(),
            AuthMode::Token => {
                let mut c = format!(
                    "Bearer realm=\"{}\",service=\"{}\"",
                    self.realm(client),
                    self.service
                );
                if let Some(s) = scope {
                    c.push_str(&format!(",scope=\"{s}\""));
                }
                if let Some(e) = error {
                    c.push_str(&format!(",error=\"{e}\""));
                }
                c
            }
        }
    }

    fn unauthorized(&self, client: &Client, need: &Need, message: &'static str) -> AuthError {
        let scope = match need {
            Need::Repo(name, Right::Pull) => Some(format!("repository:{name}:pull")),
            Need::Repo(name, Right::Push) => Some(format!("repository:{name}:pull,push")),
            Need::Repo(name, Right::Delete) => Some(format!("repository:{name}:delete")),
            Need::Catalog => Some("registry:catalog:*".to_owned()),
            Need::Login | Need::Admin | Need::Export => None,
        };
        let challenge = if *need == Need::Admin {
            ADMIN_CHALLENGE.to_owned()
        } else {
            self.challenge(client, scope.as_deref(), None)
        };
        AuthError::Unauthorized { challenge, message }
    }

    fn cache_id(&self, user: &str, password: &str) -> [u8; 32] {
        // HMAC takes keys of any length; 32 bytes never fails.
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.cache_key)
            .unwrap_or_else(|_| unreachable!());
        mac.update(user.as_bytes());
        mac.update(&[0]);
        mac.update(password.as_bytes());
        mac.finalize().into_bytes().into()
    }

    /// Check Basic credentials: throttle first, then the cache, then bcrypt off the runtime.
    /// Only a wrong password counts against the address; any success clears its count.
    async fn check_password(
        self: &Arc<Self>,
        ip: Option<IpAddr>,
        user: &str,
        password: &str,
    ) -> Result<Login, AuthError> {
        self.throttle.check(ip).map_err(|retry_after| {
            metrics::get().locked_out();
            AuthError::TooManyRequests { retry_after }
        })?;
        if self.users.due() {
            // At most every `htpasswd::RECHECK`: a stat, and a read when the file changed.
            let me = Arc::clone(self);
            let _ = tokio::task::spawn_blocking(move || me.users.refresh()).await;
        }
        let entry = match self.users.entry(user) {
            Ok(e) => e,
            Err(htpasswd::Unavailable) => return Ok(Login::Unavailable),
        };
        let id = self.cache_id(user, password);
        if let Some(entry) = &entry {
            let hit = {
                let cache = self.verified.lock().unwrap_or_else(|e| e.into_inner());
                cache.get(&id).is_some_and(|v| {
                    v.user == user && v.entry == *entry && v.at.elapsed() < VERIFIED_TTL
                })
            };
            if hit {
                self.throttle.succeeded(ip);
                return Ok(Login::Valid);
            }
        }
        let (me, u, p) = (Arc::clone(self), user.to_owned(), password.to_owned());
        let check = tokio::task::spawn_blocking(move || me.users.verify(&u, &p))
            .await
            .unwrap_or(Check::Invalid);
        Ok(match check {
            Check::Valid(entry) => {
                self.throttle.succeeded(ip);
                let mut cache = self.verified.lock().unwrap_or_else(|e| e.into_inner());
                if cache.len() >= VERIFIED_MAX {
                    cache.clear();
                }
                cache.insert(
                    id,
                    Verified {
                        user: user.to_owned(),
                        entry,
                        at: Instant::now(),
                    },
                );
                Login::Valid
            }
            Check::Invalid => {
                let client = ip.map_or_else(|| "-".to_owned(), |a| a.to_string());
                tracing::warn!(user, %client, "failed login");
                metrics::get().auth_failure(AuthFailure::Password);
                if self.throttle.failed(ip) {
                    metrics::get().lockout();
                    tracing::warn!(
                        %client,
                        user,
                        "client locked out after too many failed logins"
                    );
                }
                Login::Invalid
            }
            // No password was compared: nothing to count against the address.
            Check::Unavailable => Login::Unavailable,
        })
    }

    /// Identify the caller from the `Authorization` header.
    async fn identify(
        self: &Arc<Self>,
        headers: &HeaderMap,
        client: &Client,
        need: &Need,
        admin: Option<&AdminToken>,
    ) -> Result<Caller, AuthError> {
        let Some(value) = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
        else {
            return Ok(Caller::Anonymous);
        };
        if let Some((user, password)) = parse_basic(value) {
            return match self.check_password(client.ip, &user, &password).await? {
                Login::Valid => Ok(Caller::User(user)),
                Login::Invalid => {
                    Err(self.unauthorized(client, need, "invalid username or password"))
                }
                Login::Unavailable => Err(self.unauthorized(client, need, USERS_UNAVAILABLE)),
            };
        }
        if let Some(tok) = strip_scheme(value, "Bearer") {
            if admin.is_some_and(|a| a.matches(tok)) {
                return Ok(Caller::Machine);
            }
            // Not throttled and not counted: a token is not a password guess (its signature
            // cannot be guessed), and clients routinely present expired ones. Counting them
            // locked out whole offices after a few token expiries.
            return match self.key.verify(tok, &self.service) {
                Ok(claims) => Ok(Caller::Token(claims)),
                Err(e) => {
                    tracing::info!(error = %e, client = ?client.ip, "bearer token refused");
                    metrics::get().auth_failure(AuthFailure::Token);
                    let challenge = if *need == Need::Admin {
                        ADMIN_CHALLENGE.to_owned()
                    } else {
                        self.challenge(client, None, Some("invalid_token"))
                    };
                    Err(AuthError::Unauthorized {
                        challenge,
                        message: "invalid or expired token",
                    })
                }
            };
        }
        Err(self.unauthorized(client, need, "unsupported authorization scheme"))
    }

    fn subject(caller: &Caller) -> Subject {
        match caller {
            Caller::User(u) => Subject::User(u.clone()),
            Caller::Token(c) if !c.sub.is_empty() => Subject::User(c.sub.clone()),
            _ => Subject::Anonymous,
        }
    }

    /// Rights the caller holds on `repo` for this request.
    fn rights(&self, caller: &Caller, repo: &str) -> Rights {
        match caller {
            Caller::Anonymous => self.policy.rights(&Subject::Anonymous, repo),
            Caller::User(u) => self.policy.rights(&Subject::User(u.clone()), repo),
            Caller::Token(c) => c.rights(repo),
            Caller::Machine => Rights::default(),
        }
    }

    /// Decide; `Ok` carries what the handler may need (the catalog filter).
    fn decide(
        self: &Arc<Self>,
        caller: &Caller,
        need: &Need,
        client: &Client,
    ) -> Result<Option<Visible>, AuthError> {
        let anonymous = matches!(caller, Caller::Anonymous);
        match need {
            Need::Login => {
                if anonymous
                    && !(self.mode == AuthMode::Basic && self.policy.anonymous_has_rights())
                {
                    return Err(self.unauthorized(client, need, "authentication required"));
                }
                Ok(None)
            }
            Need::Catalog => {
                if anonymous
                    && (self.mode == AuthMode::Token || !self.policy.anonymous_has_rights())
                {
                    return Err(self.unauthorized(client, need, "authentication required"));
                }
                let who = Self::subject(caller);
                let me = Arc::clone(self);
                Ok(Some(Visible(Arc::new(move |repo: &str| {
                    me.policy.rights(&who, repo).pull
                }))))
            }
            Need::Admin => admit_admin(Some(&self.policy), caller).map(|()| None),
            // Someone who may log in; each repository is checked as the export reads it.
            Need::Export => self.decide(caller, &Need::Login, client),
            Need::Repo(repo, right) => {
                if self.rights(caller, repo).has(*right) {
                    return Ok(None);
                }
                let deserved = self.policy.rights(&Self::subject(caller), repo).has(*right);
                match caller {
                    Caller::Anonymous => {
                        Err(self.unauthorized(client, need, "authentication required"))
                    }
                    // The rules would allow it: the token was just not asked for this
                    // scope, so send the client back for one (as Distribution does).
                    Caller::Token(_) if deserved => {
                        Err(self.unauthorized(client, need, "token does not cover this scope"))
                    }
                    Caller::Token(c) if c.sub.is_empty() => {
                        Err(self.unauthorized(client, need, "authentication required"))
                    }
                    _ => Err(AuthError::Denied(format!(
                        "{} access to {repo} is not allowed",
                        right.as_str()
                    ))),
                }
            }
        }
    }
}

/// What the web console (`crate::ui`) asks of the auth configuration: its sign-in goes
/// through the same throttle, cache and bcrypt check as Basic credentials, and its rights
/// come from the same rules, so a page can never show or do more than the API allows.
impl Auth {
    /// Check a sign-in. `Ok(false)` for a wrong user or password; `Err` when the address is
    /// locked out (429) or the user file cannot be read.
    pub async fn sign_in(
        self: &Arc<Self>,
        ip: Option<IpAddr>,
        user: &str,
        password: &str,
    ) -> Result<bool, AuthError> {
        match self.check_password(ip, user, password).await? {
            Login::Valid => Ok(true),
            Login::Invalid => Ok(false),
            Login::Unavailable => Err(AuthError::Denied(USERS_UNAVAILABLE.to_owned())),
        }
    }

    /// Rights of a signed-in user (`Some`) or an anonymous visitor on `repo`.
    pub fn rights_of(&self, user: Option<&str>, repo: &str) -> Rights {
        let who = match user {
            Some(u) => Subject::User(u.to_owned()),
            None => Subject::Anonymous,
        };
        self.policy.rights(&who, repo)
    }

    pub fn is_admin(&self, user: &str) -> bool {
        self.policy.is_admin(&Subject::User(user.to_owned()))
    }

    /// Whether anonymous visitors may pull anything at all (else the console asks them to
    /// sign in first).
    pub fn anonymous_may_browse(&self) -> bool {
        self.policy.anonymous_has_rights()
    }

    /// Whether `user` is still in the user file: a console session ends when its user is
    /// removed, as a cached Basic login does.
    pub async fn user_exists(self: &Arc<Self>, user: &str) -> bool {
        if self.users.due() {
            let me = Arc::clone(self);
            let _ = tokio::task::spawn_blocking(move || me.users.refresh()).await;
        }
        self.users.contains(user)
    }
}

/// Users that `access` rules or `auth.admins` name but the htpasswd file lacks (a typo, or
/// a user not added yet): such a rule grants nothing. For `config check`.
pub fn unknown_users(settings: &crate::config::Settings, users: &Htpasswd) -> Vec<String> {
    let mut out = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for (i, rule) in settings.access.iter().enumerate() {
        for u in &rule.users {
            if u != "*" && u != "anonymous" && !users.contains(u) && seen.insert(u.as_str()) {
                out.push(format!(
                    "access[{i}] names user `{u}`, who is not in the htpasswd file"
                ));
            }
        }
    }
    for u in &settings.auth.admins {
        if !users.contains(u) {
            out.push(format!(
                "auth.admins names user `{u}`, who is not in the htpasswd file"
            ));
        }
    }
    out
}

/// What `method path` needs. `None` for paths outside `/v2` and `/admin`.
fn classify(method: &Method, path: &str) -> Option<Need> {
    if path == EXPORT_PATH {
        return Some(Need::Export);
    }
    if path == "/admin" || path.starts_with("/admin/") {
        return Some(Need::Admin);
    }
    if path == "/v2" {
        return Some(Need::Login);
    }
    let rest = path.strip_prefix("/v2/")?;
    let right = match *method {
        Method::GET | Method::HEAD => Right::Pull,
        Method::DELETE => Right::Delete,
        _ => Right::Push,
    };
    let repo = |r: &airdock_storage::RepoName| Need::Repo(r.as_str().to_owned(), right);
    Some(match route::parse(rest) {
        Ok(Endpoint::Base) => Need::Login,
        Ok(Endpoint::Catalog) => Need::Catalog,
        // Deleting an upload session is cancelling one's own push.
        Ok(Endpoint::Upload(r, _)) if *method == Method::DELETE => {
            Need::Repo(r.as_str().to_owned(), Right::Push)
        }
        Ok(Endpoint::Tags(r))
        | Ok(Endpoint::Manifest(r, _))
        | Ok(Endpoint::Blob(r, _))
        | Ok(Endpoint::Uploads(r))
        | Ok(Endpoint::Upload(r, _))
        | Ok(Endpoint::Referrers(r, _)) => repo(&r),
        // Not an endpoint: the caller learns that only after logging in.
        Err(_) => Need::Login,
    })
}

fn strip_scheme<'a>(value: &'a str, scheme: &str) -> Option<&'a str> {
    let (s, rest) = value.split_once(' ')?;
    s.eq_ignore_ascii_case(scheme).then(|| rest.trim())
}

/// `Basic <base64 of user:password>` → the user and password; `None` for anything else.
pub fn parse_basic(value: &str) -> Option<(String, String)> {
    let raw = B64.decode(strip_scheme(value, "Basic")?).ok()?;
    let text = String::from_utf8(raw).ok()?;
    let (u, p) = text.split_once(':')?;
    Some((u.to_owned(), p.to_owned()))
}

/// The middleware. `auth` is `None` when authentication is off.
pub async fn layer(State(gate): State<Gate>, req: Request, next: Next) -> Response {
    let need = if req.uri().path() == "/metrics" {
        // Read like the admin API unless configured open.
        (!gate.metrics_anonymous).then_some(Need::Admin)
    } else {
        classify(req.method(), req.uri().path())
    };
    let Some(need) = need else {
        return next.run(req).await;
    };
    let Some(auth) = gate.auth else {
        if need == Need::Export {
            let mut req = req;
            req.extensions_mut().insert(ReadCheck::anyone());
            return next.run(req).await;
        }
        if need != Need::Admin {
            return next.run(req).await;
        }
        // Authentication off: the admin token is the only credential there is.
        let Some(admin) = &gate.admin else {
            let e = AuthError::Denied("the admin API is disabled in this server".into());
            return RegistryError::from(e).into_response();
        };
        let given = req.headers().get(header::AUTHORIZATION);
        let caller = if admin.verify(given.map(|v| v.as_bytes())) {
            Caller::Machine
        } else {
            if given.is_some() {
                metrics::get().auth_failure(AuthFailure::AdminToken);
            }
            Caller::Anonymous
        };
        return match admit_admin(None, &caller) {
            Ok(()) => {
                let mut req = req;
                req.extensions_mut().insert(caller.principal());
                by(caller.who(), next.run(req).await)
            }
            Err(e) => RegistryError::from(e).into_response(),
        };
    };
    // Put there by `forwarded::layer`; absent only when this layer runs without it.
    let client = req
        .extensions()
        .get::<Client>()
        .cloned()
        .unwrap_or_default();
    let caller = match auth
        .identify(req.headers(), &client, &need, gate.admin.as_ref())
        .await
    {
        Ok(c) => c,
        Err(e) => return RegistryError::from(e).into_response(),
    };
    let mut req = match auth.decide(&caller, &need, &client) {
        Ok(Some(visible)) => {
            let mut req = req;
            req.extensions_mut().insert(visible);
            req
        }
        Ok(None) => req,
        Err(e) => {
            let path = req.uri().path();
            // The 401 challenge before a login is the protocol's first step, not a refusal
            // worth an operator's attention.
            if matches!(caller, Caller::Anonymous) && matches!(e, AuthError::Unauthorized { .. }) {
                tracing::debug!(%path, client = ?client.ip, "challenged");
            } else {
                tracing::info!(%path, client = ?client.ip, error = %e, "refused");
            }
            return by(caller.who(), RegistryError::from(e).into_response());
        }
    };
    if need == Need::Admin {
        req.extensions_mut().insert(caller.principal());
    }
    let principal = caller.who();
    if need == Need::Export {
        let check = if admit_admin(Some(&auth.policy), &caller).is_ok() {
            ReadCheck::anyone()
        } else {
            let auth = Arc::clone(&auth);
            ReadCheck(Arc::new(move |repo: &str| {
                auth.decide(&caller, &Need::Repo(repo.to_owned(), Right::Pull), &client)
                    .map(|_| ())
            }))
        };
        req.extensions_mut().insert(check);
        return by(principal, next.run(req).await);
    }
    if let Need::Repo(repo, Right::Push) = &need {
        if let Err(e) = check_mount(&auth, &caller, &client, repo, &mut req) {
            return RegistryError::from(e).into_response();
        }
        req.extensions_mut().insert(pusher(&auth, caller));
    }
    by(principal, next.run(req).await)
}

/// What the upload handlers need to know of a push the layer let through (see `Pusher`).
fn pusher(auth: &Arc<Auth>, caller: Caller) -> Pusher {
    let user = match &caller {
        Caller::User(u) => Some(u.clone()),
        Caller::Token(c) if !c.sub.is_empty() => Some(c.sub.clone()),
        _ => None,
    };
    let auth = Arc::clone(auth);
    Pusher {
        user,
        may_pull: Visible(Arc::new(move |repo: &str| auth.rights(&caller, repo).pull)),
    }
}

/// A cross-repository mount needs pull on `from` too. A token that lacks it although the
/// rules allow it sends the client back for both scopes (as Distribution's challenge does);
/// a caller the rules do not allow gets a plain upload instead (a mount must not reveal or
/// copy what one cannot read).
fn check_mount(
    auth: &Auth,
    caller: &Caller,
    client: &Client,
    repo: &str,
    req: &mut Request,
) -> Result<(), AuthError> {
    let q = Query::parse(req.uri().query());
    let (Some(from), Some(_)) = (q.get("from"), q.get("mount")) else {
        return Ok(());
    };
    if auth.rights(caller, from).pull {
        return Ok(());
    }
    if matches!(caller, Caller::Token(_))
        && auth.policy.rights(&Auth::subject(caller), from).pull
        && airdock_storage::RepoName::parse(from).is_ok()
    {
        let scope = format!("repository:{repo}:pull,push repository:{from}:pull");
        return Err(AuthError::Unauthorized {
            challenge: auth.challenge(client, Some(&scope), Some("insufficient_scope")),
            message: "token does not cover the mount source",
        });
    }
    let path = req.uri().path().to_owned();
    if let Ok(uri) = path.parse() {
        *req.uri_mut() = uri;
    }
    Ok(())
}

/// `GET /token?service=…&scope=…`: check Basic credentials (or none, for an anonymous
/// token), grant the intersection of what was asked and what the rules allow.
pub async fn token_endpoint(State(auth): State<Option<Arc<Auth>>>, req: Request) -> Response {
    let Some(auth) = auth else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let ip = req.extensions().get::<Client>().and_then(|c| c.ip);
    let q = Query::parse(req.uri().query());
    let subject = match req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(parse_basic)
    {
        None => Subject::Anonymous,
        Some((user, password)) => {
            let message = match auth.check_password(ip, &user, &password).await {
                Ok(Login::Valid) => None,
                Ok(Login::Invalid) => Some("invalid username or password"),
                Ok(Login::Unavailable) => Some(USERS_UNAVAILABLE),
                Err(e) => return RegistryError::from(e).into_response(),
            };
            match message {
                None => Subject::User(user),
                Some(message) => {
                    return RegistryError::from(AuthError::Unauthorized {
                        challenge: BASIC_CHALLENGE.to_owned(),
                        message,
                    })
                    .into_response()
                }
            }
        }
    };
    let mut access = Vec::new();
    for scope in Scope::parse_all(q.all("scope")) {
        match scope.kind.as_str() {
            "repository" if airdock_storage::RepoName::parse(&scope.name).is_ok() => {
                let allowed = auth.policy.rights(&subject, &scope.name);
                let mut granted: Vec<String> = Vec::new();
                for a in &scope.actions {
                    for r in Right::parse_action(a) {
                        if allowed.has(r) && !granted.iter().any(|g| g == r.as_str()) {
                            granted.push(r.as_str().to_owned());
                        }
                    }
                }
                if !granted.is_empty() {
                    access.push(token::Access {
                        kind: scope.kind,
                        name: scope.name,
                        actions: granted,
                    });
                }
            }
            // Admin work needs a token asked for it, and only admins get one.
            "registry" if scope.name == "admin" && auth.policy.is_admin(&subject) => {
                access.push(token::Access {
                    kind: scope.kind,
                    name: scope.name,
                    actions: vec!["*".to_owned()],
                })
            }
            "registry" if scope.name == "catalog" => access.push(token::Access {
                kind: scope.kind,
                name: scope.name,
                actions: vec!["*".to_owned()],
            }),
            _ => {}
        }
    }
    let claims = token::claims(subject.name(), &auth.service, auth.ttl, access);
    let jwt = auth.key.sign(&claims);
    let body = serde_json::json!({
        "token": jwt,
        "access_token": jwt,
        "expires_in": auth.ttl,
        "issued_at": crate::sys::rfc3339(claims.iat),
    });
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classify_paths() {
        let n = |m: Method, p: &str| classify(&m, p);
        assert_eq!(n(Method::GET, "/v2/"), Some(Need::Login));
        assert_eq!(n(Method::GET, "/v2"), Some(Need::Login));
        assert_eq!(n(Method::GET, "/v2/_catalog"), Some(Need::Catalog));
        assert_eq!(
            n(Method::PUT, "/v2/a/b/manifests/v1"),
            Some(Need::Repo("a/b".into(), Right::Push))
        );
        assert_eq!(
            n(Method::HEAD, "/v2/a/blobs/sha256:".to_owned().as_str()),
            Some(Need::Login)
        );
        assert_eq!(
            n(Method::DELETE, "/v2/a/manifests/v1"),
            Some(Need::Repo("a".into(), Right::Delete))
        );
        assert_eq!(
            n(Method::POST, "/v2/a/blobs/uploads/"),
            Some(Need::Repo("a".into(), Right::Push))
        );
        assert_eq!(n(Method::POST, "/admin/v1/import"), Some(Need::Admin));
        assert_eq!(n(Method::GET, "/admin/v1/export"), Some(Need::Export));
        assert_eq!(n(Method::GET, "/admin/v1/exports"), Some(Need::Admin));
        assert_eq!(n(Method::GET, "/token"), None);
        assert_eq!(n(Method::GET, "/v2/nothing"), Some(Need::Login));
    }

    #[test]
    fn basic_header() {
        assert_eq!(
            parse_basic("Basic YWxpY2U6cDpx"),
            Some(("alice".into(), "p:q".into()))
        );
        assert_eq!(parse_basic("Bearer x"), None);
        assert_eq!(parse_basic("Basic !!"), None);
    }
}
