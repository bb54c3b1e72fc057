//! Logins, sessions, CSRF tokens and roles.
//!
//! Promises: a session is a random 256-bit token in an HttpOnly, SameSite=Strict
//! cookie (Secure under TLS), ending after 12 idle hours, at logout, or when its user
//! is removed; each session has its own CSRF token, which every state-changing request
//! must bring (`X-CSRF-Token` header, or the `csrf` form field), and a request whose
//! Origin is another site is refused. After 5 wrong passwords within a minute for one
//! user or from one address, every login for it (even a right one) is refused for 5
//! minutes. Every login, right or wrong, is audited.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, FromRequestParts, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Form, Json};
use serde::Deserialize;

use super::{App, Peer, pages};
use crate::desk::store::Role;

const COOKIE: &str = "gw_session";
const IDLE: Duration = Duration::from_secs(12 * 3600);
const WINDOW: Duration = Duration::from_secs(60);
const MAX_FAILURES: usize = 5;
const LOCKOUT: Duration = Duration::from_secs(300);

struct Session {
    user: String,
    csrf: String,
    last: Instant,
}

#[derive(Default)]
struct Failures {
    recent: Vec<Instant>,
    locked_until: Option<Instant>,
}

#[derive(Default)]
pub struct Auth {
    sessions: Mutex<HashMap<String, Session>>,
    failures: Mutex<HashMap<String, Failures>>,
}

/// The logged-in user of a request.
#[derive(Debug, Clone)]
pub struct User {
    pub name: String,
    pub role: Role,
    pub csrf: String,
}

fn token() -> String {
    let mut b = [0u8; 32];
    rand::Rng::fill(&mut rand::rng(), &mut b);
    crate::contract::hex(&b)
}

/// Compares without stopping at the first difference.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn cookie_of(headers: &HeaderMap) -> Option<String> {
    headers.get_all(header::COOKIE).iter().filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(';')).find_map(|kv| {
        let (k, v) = kv.trim().split_once('=')?;
        (k == COOKIE).then(|| v.to_owned())
    })
}

impl Auth {
    fn locked(&self, keys: &[String]) -> bool {
        let now = Instant::now();
        let map = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        keys.iter().any(|k| map.get(k).and_then(|f| f.locked_until).is_some_and(|t| t > now))
    }

    fn failed(&self, keys: &[String]) {
        let now = Instant::now();
        let mut map = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() > 10_000 {
            map.retain(|_, f| {
                f.recent.last().is_some_and(|t| now - *t < WINDOW) || f.locked_until.is_some_and(|t| t > now)
            });
        }
        for k in keys {
            let f = map.entry(k.clone()).or_default();
            f.recent.retain(|t| now - *t < WINDOW);
            f.recent.push(now);
            if f.recent.len() >= MAX_FAILURES {
                f.locked_until = Some(now + LOCKOUT);
            }
        }
    }

    fn open(&self, user: &str) -> (String, String) {
        let (id, csrf) = (token(), token());
        let mut map = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        map.retain(|_, s| now - s.last < IDLE);
        map.insert(id.clone(), Session { user: user.to_owned(), csrf: csrf.clone(), last: now });
        (id, csrf)
    }

    fn lookup(&self, id: &str) -> Option<(String, String)> {
        let mut map = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        let s = map.get_mut(id).filter(|s| s.last.elapsed() < IDLE)?;
        s.last = Instant::now();
        Some((s.user.clone(), s.csrf.clone()))
    }

    fn close(&self, id: &str) {
        self.sessions.lock().unwrap_or_else(|p| p.into_inner()).remove(id);
    }
}

/// Why a request without a usable session is turned away: 401 for the API and
/// pictures, the login page for pages.
fn unauthorized(parts: &Parts) -> Response {
    let path = parts.uri.path();
    if path.starts_with("/api/")
        || path.starts_with("/media/")
        || path.starts_with("/live/")
        || path.starts_with("/fragments/")
    {
        return (StatusCode::UNAUTHORIZED, Json(serde_json::json!({"error": "login required"}))).into_response();
    }
    let next = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let next: String = percent_encoding::utf8_percent_encode(next, percent_encoding::NON_ALPHANUMERIC).collect();
    Redirect::to(&format!("/login?next={next}")).into_response()
}

impl FromRequestParts<App> for User {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, app: &App) -> Result<User, Response> {
        let Some((name, csrf)) = cookie_of(&parts.headers).and_then(|id| app.auth.lookup(&id)) else {
            return Err(unauthorized(parts));
        };
        let store = app.store.clone();
        let n = name.clone();
        let role = tokio::task::spawn_blocking(move || store.user_role(&n)).await.ok().and_then(|r| r.ok()).flatten();
        match role {
            Some(role) => Ok(User { name, role, csrf }),
            None => Err(unauthorized(parts)),
        }
    }
}

pub fn forbidden(what: &str) -> Response {
    (StatusCode::FORBIDDEN, Json(serde_json::json!({"error": what}))).into_response()
}

impl User {
    /// Ok when the user's role reaches `role`.
    pub fn require(&self, role: Role) -> Result<(), Response> {
        if self.role >= role { Ok(()) } else { Err(forbidden(&format!("needs the {} role", role.as_str()))) }
    }

    /// Ok when `token` is this session's CSRF token and the request is not from another site.
    pub fn check(&self, headers: &HeaderMap, token: Option<&str>) -> Result<(), Response> {
        let token = token.or_else(|| headers.get("x-csrf-token").and_then(|v| v.to_str().ok()));
        if !same_origin(headers) || !token.is_some_and(|t| same(t, &self.csrf)) {
            return Err(forbidden("missing or wrong CSRF token"));
        }
        Ok(())
    }
}

/// False when the browser says the request comes from another site.
pub fn same_origin(headers: &HeaderMap) -> bool {
    // Browsers that send Sec-Fetch-Site say it outright.
    match headers.get("sec-fetch-site").and_then(|v| v.to_str().ok()) {
        Some("same-origin" | "none") => return true,
        Some(_) => return false,
        None => {}
    }
    let (Some(origin), Some(host)) = (
        headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()),
        headers.get(header::HOST).and_then(|v| v.to_str().ok()),
    ) else {
        return true;
    };
    origin.split_once("://").is_some_and(|(_, rest)| rest == host)
}

#[derive(Deserialize)]
pub struct NextQuery {
    next: Option<String>,
}

/// Only a path on this server: never a redirect elsewhere.
fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(n) if n.starts_with('/') && !n.starts_with("//") && !n.contains('\\') => n.to_owned(),
        _ => "/".to_owned(),
    }
}

pub async fn login_page(State(app): State<App>, Query(q): Query<NextQuery>) -> Response {
    pages::login(&app, &safe_next(q.next.as_deref()), None, StatusCode::OK)
}

#[derive(Deserialize)]
pub struct LoginForm {
    user: String,
    password: String,
    next: Option<String>,
}

pub async fn login(
    State(app): State<App>,
    ConnectInfo(Peer(peer)): ConnectInfo<Peer>,
    headers: HeaderMap,
    Form(f): Form<LoginForm>,
) -> Response {
    let next = safe_next(f.next.as_deref());
    let addr = peer.ip().to_string();
    let user: String = f.user.chars().take(64).collect();
    let keys = [format!("user:{user}"), format!("addr:{addr}")];
    if !same_origin(&headers) {
        return forbidden("login from another site");
    }
    let audit = |action: &'static str| {
        let (store, user, addr) = (app.store.clone(), user.clone(), addr.clone());
        tokio::task::spawn_blocking(move || store.audit(Some(&user), &addr, action, "", ""))
    };
    if app.auth.locked(&keys) {
        let _ = audit("login_locked").await;
        return pages::login(&app, &next, Some("locked"), StatusCode::TOO_MANY_REQUESTS);
    }
    let store = app.store.clone();
    let (u, p) = (user.clone(), f.password);
    let role = tokio::task::spawn_blocking(move || store.user_verify(&u, &p)).await.ok().and_then(|r| r.ok()).flatten();
    if role.is_none() {
        app.auth.failed(&keys);
        let _ = audit("login_failed").await;
        return pages::login(&app, &next, Some("wrong"), StatusCode::UNAUTHORIZED);
    }
    let _ = audit("login").await;
    let (id, _) = app.auth.open(&user);
    let secure = if app.tls { "; Secure" } else { "" };
    let cookie = format!("{COOKIE}={id}; Path=/; HttpOnly; SameSite=Strict{secure}");
    ([(header::SET_COOKIE, cookie)], Redirect::to(&next)).into_response()
}

#[derive(Deserialize)]
pub struct CsrfForm {
    csrf: String,
}

pub async fn logout(
    State(app): State<App>,
    ConnectInfo(Peer(peer)): ConnectInfo<Peer>,
    user: User,
    headers: HeaderMap,
    Form(f): Form<CsrfForm>,
) -> Response {
    if let Err(r) = user.check(&headers, Some(&f.csrf)) {
        return r;
    }
    if let Some(id) = cookie_of(&headers) {
        app.auth.close(&id);
    }
    let store = app.store.clone();
    let _ =
        tokio::task::spawn_blocking(move || store.audit(Some(&user.name), &peer.ip().to_string(), "logout", "", ""))
            .await;
    let clear = format!("{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0");
    ([(header::SET_COOKIE, clear)], Redirect::to("/login")).into_response()
}
