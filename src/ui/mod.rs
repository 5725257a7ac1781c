//! The web console under `/ui/`, on the registry's own port: server-rendered pages (maud),
//! one stylesheet and two small scripts compiled into the binary, nothing fetched from
//! elsewhere. Pages read the store's public methods; every page and action asks the same
//! rights rules as the API (`crate::auth`), and every state-changing request must carry the
//! session's CSRF token.
//!
//! The console has its own error type (`UiError`): its refusals are pages for a person, not
//! the spec's JSON for a client, so they are mapped here, once.

pub mod assets;
mod bundles;
mod imports;
mod manifest;
mod repos;
pub mod session;
mod storage;
mod upload;
pub mod view;

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use maud::{html, Markup};

use crate::auth::policy::Rights;
use crate::auth::Auth;
use crate::forwarded::Client;
use crate::AppState;
use session::Sessions;
use view::Nav;

/// What console handlers share: the registry's state and the sessions.
#[derive(Clone)]
pub struct Console {
    pub app: AppState,
    pub sessions: Arc<Sessions>,
}

/// The page policy: only our own scripts, styles and requests; no framing; no inline code.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// The console's routes (with their state applied), for `crate::app` to merge. Everything
/// lives under `/ui/` (metrics label it `ui` by that prefix); `/` sends browsers there.
pub fn router(app: AppState) -> Router {
    let console = Console {
        app,
        sessions: Arc::new(Sessions::new()),
    };
    Router::new()
        .route("/", get(|| async { Redirect::to("/ui/") }))
        .route("/ui", get(|| async { Redirect::to("/ui/") }))
        .route("/ui/", get(repos::list))
        .route("/ui/static/{file}", get(assets::serve))
        .route("/ui/login", get(sign_in_page).post(sign_in))
        .route("/ui/logout", post(sign_out))
        .route("/ui/upload", get(upload::page).post(upload::upload))
        .route("/ui/bundles", get(bundles::list))
        .route("/ui/imports", get(imports::list))
        .route("/ui/imports/{*rest}", get(imports::get).post(imports::post))
        .route("/ui/storage", get(storage::page))
        .route("/ui/storage/gc", post(storage::gc))
        .route(
            "/ui/repositories/{*rest}",
            get(repos::get).post(repos::post),
        )
        .route("/ui/{*rest}", get(not_found).post(not_found))
        .layer(axum::middleware::from_fn(headers))
        .with_state(console)
}

/// Security headers on every console response; pages are never cached (they show rights).
async fn headers(req: Request, next: Next) -> Response {
    let is_static = req.uri().path().starts_with("/ui/static/");
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    if !is_static {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    resp
}

/// Who is looking, and what they may do. Built once per request from the session cookie.
pub struct Viewer {
    pub user: Option<String>,
    /// The browser's session id (a fresh one when it sent none).
    sid: String,
    /// The cookie must be (re)set on the response.
    new_sid: bool,
    secure: bool,
    pub csrf: String,
    auth: Option<Arc<Auth>>,
    /// `host[:port]` the browser used, for pull commands.
    pub host: String,
}

impl Viewer {
    pub fn auth_on(&self) -> bool {
        self.auth.is_some()
    }

    /// The rights of this viewer on `repo`: with authentication off, everyone may do
    /// everything (as on the API).
    pub fn rights(&self, repo: &str) -> Rights {
        match &self.auth {
            None => Rights::ALL,
            Some(a) => a.rights_of(self.user.as_deref(), repo),
        }
    }

    /// Admin work (uploads) needs a signed-in admin: with authentication off the admin API
    /// takes only the admin token, which a browser does not hold.
    pub fn is_admin(&self) -> bool {
        match (&self.auth, &self.user) {
            (Some(a), Some(u)) => a.is_admin(u),
            _ => false,
        }
    }

    /// Admin work (uploads, imports, storage and GC) as the admin API is: anonymous visitors
    /// are sent to sign in (then back to `path`), other users refused. `what` names the
    /// work in the refusal.
    pub fn require_admin(&self, path: &str, what: &str) -> Result<(), UiError> {
        if self.is_admin() {
            return Ok(());
        }
        if self.auth_on() && self.user.is_none() {
            return Err(UiError::SignIn(path.into()));
        }
        Err(UiError::Forbidden(if self.auth_on() {
            format!("{what} needs an admin (auth.admins), as the admin API does")
        } else {
            format!("{what} needs authentication with an admin user (auth.htpasswd and auth.admins); without it only the admin API does this, with the admin token")
        }))
    }

    /// Whether this viewer may see anything at all without signing in first.
    fn must_sign_in(&self) -> bool {
        match &self.auth {
            Some(a) => self.user.is_none() && !a.anonymous_may_browse(),
            None => false,
        }
    }

    /// Attach the session cookie when the browser does not have it yet, and name the
    /// signed-in user to the access and audit logs (`crate::observe`), as the auth layer
    /// does for the API.
    pub fn finish(&self, mut resp: Response) -> Response {
        if let Some(u) = &self.user {
            resp.extensions_mut()
                .insert(crate::auth::Principal(u.clone()));
        }
        if self.new_sid {
            if let Ok(v) = HeaderValue::from_str(&session::set_cookie(&self.sid, self.secure)) {
                resp.headers_mut().append(header::SET_COOKIE, v);
            }
        }
        resp
    }

    /// The answer to an action of this viewer, a refusal included, attributed to them in
    /// the logs.
    pub fn answer(&self, result: Result<Response, UiError>) -> Response {
        let resp = match result {
            Ok(r) => r,
            Err(e) => e.into_response(),
        };
        let mut resp = resp;
        if let Some(u) = &self.user {
            resp.extensions_mut()
                .insert(crate::auth::Principal(u.clone()));
        }
        resp
    }

    /// Render a page for this viewer.
    pub fn render(&self, title: &str, nav: Nav, body: Markup) -> Response {
        let html = view::page(title, self, nav, body).into_string();
        self.finish(
            (
                StatusCode::OK,
                [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
                html,
            )
                .into_response(),
        )
    }
}

impl Console {
    /// The viewer of `req`: its session (if alive and its user still exists) or a fresh
    /// anonymous id.
    pub async fn viewer(&self, parts: &axum::http::request::Parts) -> Result<Viewer, UiError> {
        let client = parts
            .extensions
            .get::<Client>()
            .cloned()
            .unwrap_or_default();
        let cookie = parts
            .headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find_map(session::sid_from_cookies)
            .map(str::to_owned);
        let auth = self.app.auth.clone();
        let (sid, new_sid) = match cookie {
            Some(s) => (s, false),
            None => (Sessions::new_id().map_err(UiError::internal)?, true),
        };
        let mut user = match &auth {
            Some(_) => self.sessions.user(&sid),
            None => None,
        };
        if let (Some(a), Some(u)) = (&auth, &user) {
            if !a.user_exists(u).await {
                self.sessions.sign_out(&sid);
                user = None;
            }
        }
        Ok(Viewer {
            csrf: self.sessions.csrf(&sid),
            user,
            sid,
            new_sid,
            secure: client.scheme() == "https",
            auth,
            host: client.host().unwrap_or("localhost").to_owned(),
        })
    }

    /// The urlencoded form of a state-changing request, once its CSRF token checked out.
    pub async fn checked_form(
        &self,
        viewer: &Viewer,
        body: axum::body::Body,
    ) -> Result<Vec<(String, String)>, UiError> {
        let form = read_form(body).await?;
        self.check_csrf(viewer, field(&form, "_csrf"))?;
        Ok(form)
    }

    /// The viewer of a state-changing request, which must carry the session's CSRF token
    /// (form field `_csrf` or header `X-CSRF-Token`) and come with the session cookie.
    pub fn check_csrf(&self, viewer: &Viewer, given: Option<&str>) -> Result<(), UiError> {
        match given {
            Some(t) if !viewer.new_sid && self.sessions.csrf_ok(&viewer.sid, t) => Ok(()),
            _ => Err(UiError::Forbidden(
                "this form has expired or did not come from this console (missing or wrong CSRF token); reload the page and try again".into(),
            )),
        }
    }
}

/// A refusal, shown as a page.
#[derive(Debug)]
pub enum UiError {
    /// Not signed in where a sign-in would help: go to the sign-in page, then come back.
    SignIn(String),
    Forbidden(String),
    NotFound(String),
    BadRequest(String),
    TooMany(u64),
    Internal(String),
}

impl UiError {
    pub fn internal(e: impl std::fmt::Display) -> UiError {
        UiError::Internal(e.to_string())
    }
}

impl From<crate::error::RegistryError> for UiError {
    fn from(e: crate::error::RegistryError) -> UiError {
        let (status, _) = e.status_and_code();
        match status {
            StatusCode::NOT_FOUND => UiError::NotFound(e.to_string()),
            StatusCode::FORBIDDEN | StatusCode::METHOD_NOT_ALLOWED => {
                UiError::Forbidden(e.to_string())
            }
            s if s.is_client_error() => UiError::BadRequest(e.to_string()),
            _ => UiError::Internal(e.to_string()),
        }
    }
}

impl From<airdock_storage::StoreError> for UiError {
    fn from(e: airdock_storage::StoreError) -> UiError {
        crate::error::RegistryError::from(e).into()
    }
}

impl IntoResponse for UiError {
    fn into_response(self) -> Response {
        let (status, title, message) = match self {
            UiError::SignIn(next) => {
                let to = format!(
                    "/ui/login?next={}",
                    form_urlencoded::byte_serialize(next.as_bytes()).collect::<String>()
                );
                return Redirect::to(&to).into_response();
            }
            UiError::Forbidden(m) => (StatusCode::FORBIDDEN, "Not allowed", m),
            UiError::NotFound(m) => (StatusCode::NOT_FOUND, "Not found", m),
            UiError::BadRequest(m) => (StatusCode::BAD_REQUEST, "Bad request", m),
            UiError::TooMany(secs) => (
                StatusCode::TOO_MANY_REQUESTS,
                "Too many attempts",
                format!("too many failed sign-ins from this address; try again in {secs} s"),
            ),
            UiError::Internal(m) => {
                tracing::error!(error = %m, "console request failed");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "Server error",
                    "the server could not complete this request; its log has the details".into(),
                )
            }
        };
        let body = html! {
            (maud::DOCTYPE)
            html lang="en" {
                head {
                    meta charset="utf-8";
                    title { (title) " · airdock" }
                    link rel="icon" href=(view::ICON);
                    link rel="stylesheet" href=(assets::css_path());
                }
                body { main {
                    h1 { (title) }
                    p.error { (message) }
                    p { a href="/ui/" { "Back to the repositories" } }
                } }
            }
        };
        (
            status,
            [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
            body.into_string(),
        )
            .into_response()
    }
}

async fn not_found(req: Request) -> UiError {
    UiError::NotFound(format!("no console page at {}", req.uri().path()))
}

/// A small urlencoded form body (sign-in, delete): read whole, bounded.
pub async fn read_form(body: axum::body::Body) -> Result<Vec<(String, String)>, UiError> {
    let bytes = axum::body::to_bytes(body, 16 << 10)
        .await
        .map_err(|_| UiError::BadRequest("form too large or incomplete".into()))?;
    Ok(form_urlencoded::parse(&bytes).into_owned().collect())
}

pub fn field<'a>(form: &'a [(String, String)], name: &str) -> Option<&'a str> {
    form.iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// Only a path of this console may be a place to come back to (no open redirect).
fn safe_next(next: Option<&str>) -> &str {
    match next {
        Some(n) if n.starts_with("/ui/") && !n.starts_with("//") && !n.contains('\\') => n,
        _ => "/ui/",
    }
}

async fn sign_in_page(State(c): State<Console>, req: Request) -> Result<Response, UiError> {
    let (parts, _) = req.into_parts();
    let viewer = c.viewer(&parts).await?;
    let q = crate::http::Query::parse(parts.uri.query());
    Ok(sign_in_form(&viewer, safe_next(q.get("next")), None))
}

fn sign_in_form(viewer: &Viewer, next: &str, error: Option<&str>) -> Response {
    let body = html! {
        section.signin {
            h1 { "Sign in" }
            @if !viewer.auth_on() {
                p { "Authentication is off in this server: everyone may browse and change everything, so there is nothing to sign in to." }
            } @else {
                @if let Some(e) = error { p.error role="alert" { (e) } }
                form method="post" action="/ui/login" {
                    (view::csrf_field(viewer))
                    input type="hidden" name="next" value=(next);
                    label { "User" input name="user" autocomplete="username" required autofocus; }
                    label { "Password" input name="password" type="password" autocomplete="current-password" required; }
                    button.primary type="submit" { "Sign in" }
                }
                p.muted { "The registry's users (its htpasswd file); the same rights as with docker login." }
            }
        }
    };
    let mut resp = viewer.render("Sign in", Nav::SignIn, body);
    if error.is_some() {
        *resp.status_mut() = StatusCode::UNAUTHORIZED;
    }
    resp
}

async fn sign_in(State(c): State<Console>, req: Request) -> Result<Response, UiError> {
    let (parts, body) = req.into_parts();
    let viewer = c.viewer(&parts).await?;
    let form = c.checked_form(&viewer, body).await?;
    let next = safe_next(field(&form, "next")).to_owned();
    let Some(auth) = &viewer.auth else {
        return Ok(Redirect::to(&next).into_response());
    };
    let user = field(&form, "user").unwrap_or("");
    let password = field(&form, "password").unwrap_or("");
    let ip = parts.extensions.get::<Client>().and_then(|c| c.ip);
    let ok = match auth.sign_in(ip, user, password).await {
        Ok(ok) => ok,
        Err(crate::error::AuthError::TooManyRequests { retry_after }) => {
            return Err(UiError::TooMany(retry_after))
        }
        Err(e) => return Ok(sign_in_form(&viewer, &next, Some(&e.to_string()))),
    };
    if !ok || user.is_empty() {
        return Ok(sign_in_form(
            &viewer,
            &next,
            Some("Wrong user name or password."),
        ));
    }
    let sid = c.sessions.sign_in(user).map_err(UiError::internal)?;
    tracing::info!(user, client = ?ip, "console sign-in");
    let mut resp = Redirect::to(&next).into_response();
    if let Ok(v) = HeaderValue::from_str(&session::set_cookie(&sid, viewer.secure)) {
        resp.headers_mut().append(header::SET_COOKIE, v);
    }
    Ok(resp)
}

async fn sign_out(State(c): State<Console>, req: Request) -> Result<Response, UiError> {
    let (parts, body) = req.into_parts();
    let viewer = c.viewer(&parts).await?;
    c.checked_form(&viewer, body).await?;
    c.sessions.sign_out(&viewer.sid);
    // A new anonymous id: the old one named a session that is gone.
    let sid = Sessions::new_id().map_err(UiError::internal)?;
    let mut resp = Redirect::to("/ui/").into_response();
    if let Ok(v) = HeaderValue::from_str(&session::set_cookie(&sid, viewer.secure)) {
        resp.headers_mut().append(header::SET_COOKIE, v);
    }
    Ok(resp)
}
