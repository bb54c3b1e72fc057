//! The JSON API under `/api/` (docs/desk.md), pictures and clips under `/media/`, the
//! live stream, and the actions (claim, resolve, commands) that the API and the HTML
//! forms share.
//!
//! Promises: the same login as the pages (401 without it); state changes need the
//! session's CSRF token and the operator role, and are audited; `limit` is capped at
//! 1000; the stream sends one small JSON object per change.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use super::auth::User;
use super::{App, Peer};
use crate::contract::check_id;
use crate::desk::live::Change;
use crate::desk::store::{AuditRow, EventFilter, Resolution, Role};

pub fn routes() -> Router<App> {
    Router::new()
        .route("/api/session", get(session))
        .route("/api/sites", get(sites))
        .route("/api/events", get(events))
        .route("/api/events/{site}/{event_id}", get(event))
        .route("/api/incidents/{site}/{event_id}/{action}", post(step_json))
        .route("/api/alarm", get(alarm))
        .route("/api/audit", get(audit))
        .route("/api/stream", get(stream))
        .route("/media/{id}", get(media))
        .route("/live/{site}/{camera}/{request_id}", get(fresh_picture))
}

async fn session(user: User) -> Response {
    Json(serde_json::json!({"user": user.name, "role": user.role, "csrf_token": user.csrf})).into_response()
}

/// A loaded value as JSON, or the response the loading failed with.
fn json<T: Serialize>(loaded: Result<T, Response>) -> Response {
    loaded.map_or_else(|r| r, |v| Json(v).into_response())
}

async fn sites(State(app): State<App>, _user: User) -> Response {
    let names = app.site_names();
    json(app.db(move |s| s.sites(&names)).await)
}

/// The filter of an event list, checked; a field at fault is a 400 naming it.
pub fn filter(q: EventFilter, default_limit: usize) -> Result<EventFilter, Response> {
    q.validated(default_limit).map_err(|why| bad(&why.to_string()))
}

async fn events(State(app): State<App>, _user: User, Query(q): Query<EventFilter>) -> Response {
    match filter(q, 100) {
        Ok(f) => json(app.db(move |s| s.events(&f)).await),
        Err(r) => r,
    }
}

async fn event(State(app): State<App>, _user: User, Path((site, id)): Path<(String, String)>) -> Response {
    match app.db(move |s| s.event_detail(&site, &id)).await {
        Ok(Some(d)) => Json(d).into_response(),
        Ok(None) => (StatusCode::NOT_FOUND, Json(serde_json::json!({"error": "no such event"}))).into_response(),
        Err(r) => r,
    }
}

async fn alarm(State(app): State<App>, _user: User) -> Response {
    json(app.db(|s| s.open_incidents()).await.map(|n| serde_json::json!({"open": n})))
}

#[derive(Deserialize)]
struct AuditQuery {
    limit: Option<usize>,
}

/// A page of the audit log (newest first), for operators and admins.
pub async fn audit_rows(app: &App, user: &User, limit: usize, page: usize) -> Result<Vec<AuditRow>, Response> {
    user.require(Role::Operator)?;
    let (limit, page) = (limit.clamp(1, 1000), page.min(100_000));
    app.db(move |s| s.audit_log(limit, page * limit)).await
}

async fn audit(State(app): State<App>, user: User, Query(q): Query<AuditQuery>) -> Response {
    json(audit_rows(&app, &user, q.limit.unwrap_or(100), 0).await)
}

/// A step on an incident, from the API or a form.
pub enum Step {
    Claim,
    Resolve { resolution: Resolution, note: String },
}

impl Step {
    /// `action` is the URL's last level; `resolution` and `note` count for resolve only.
    pub fn parse(action: &str, resolution: &str, note: &str) -> Result<Step, Response> {
        match action {
            "claim" => Ok(Step::Claim),
            "resolve" => {
                let Some(resolution) = Resolution::parse(resolution) else {
                    return Err(bad("resolution: use handled, false_alarm or duplicate"));
                };
                if note.chars().count() > 500 {
                    return Err(bad("note: at most 500 characters"));
                }
                Ok(Step::Resolve { resolution, note: note.to_owned() })
            }
            _ => Err((StatusCode::NOT_FOUND, "no such action").into_response()),
        }
    }
}

/// Takes `step` on an incident as `user` (an operator), audited; the one path of the
/// API and the forms.
pub async fn take(app: &App, user: &User, peer: &Peer, site: String, id: String, step: Step) -> Result<(), Response> {
    user.require(Role::Operator)?;
    let (name, addr) = (user.name.clone(), peer.0.ip().to_string());
    let (s2, i2) = (site.clone(), id.clone());
    let done = app
        .db(move |s| {
            let (r, action, detail) = match &step {
                Step::Claim => (s.claim(&s2, &i2, &name)?, "claim", String::new()),
                Step::Resolve { resolution, note } => (
                    s.resolve(&s2, &i2, &name, *resolution, note)?,
                    "resolve",
                    format!("{} {note}", resolution.as_str()),
                ),
            };
            if r.is_ok() {
                s.audit(Some(&name), &addr, action, &format!("{s2}/{i2}"), &detail)?;
            }
            Ok(r)
        })
        .await?;
    done.map_err(|why| (StatusCode::CONFLICT, Json(serde_json::json!({"error": why}))).into_response())?;
    app.live.send(Change::Incident { site: site.clone(), event_id: id });
    app.live.send(Change::Site { site });
    Ok(())
}

fn bad(why: &str) -> Response {
    (StatusCode::BAD_REQUEST, Json(serde_json::json!({"error": why}))).into_response()
}

#[derive(Default, Deserialize)]
struct ResolveBody {
    resolution: String,
    #[serde(default)]
    note: String,
}

/// `POST /api/incidents/{site}/{event_id}/claim|resolve`.
async fn step_json(
    State(app): State<App>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    user: User,
    headers: HeaderMap,
    Path((site, id, action)): Path<(String, String, String)>,
    body: axum::body::Bytes,
) -> Response {
    if let Err(r) = user.check(&headers, None) {
        return r;
    }
    let b = match action.as_str() {
        "resolve" => match serde_json::from_slice::<ResolveBody>(&body) {
            Ok(b) => b,
            Err(_) => return bad("body: give JSON {\"resolution\": …, \"note\": …}"),
        },
        _ => ResolveBody::default(),
    };
    let step = match Step::parse(&action, &b.resolution, &b.note) {
        Ok(s) => s,
        Err(r) => return r,
    };
    match take(&app, &user, &peer, site, id, step).await {
        Ok(()) => Json(serde_json::json!({"ok": true})).into_response(),
        Err(r) => r,
    }
}

/// A device command of contract 1.1, as the site page's buttons send them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// A fresh picture (`…/{camera}/snapshot/request`).
    Snapshot,
    /// Detection on or off (`…/{camera}/detect/set`).
    Detect(bool),
    /// One configured rule armed or disarmed (`…/{camera}/rules/{zone}/{rule}/set`).
    Rule { zone: String, rule: String, on: bool },
    /// An event's clip, cut from the camera's ring (`{site}/clips/request`).
    Clip { event_id: String },
}

impl Command {
    /// The topic (under the root) and payload for `site`/`camera`; Err when an id
    /// that becomes a topic level breaks the id rule.
    pub fn message(&self, site: &str, camera: &str, request_id: &str) -> Result<(String, String), String> {
        let mut ids = vec![site, camera];
        if let Command::Rule { zone, rule, .. } = self {
            ids.extend([zone.as_str(), rule.as_str()]);
        }
        if ids.iter().any(|id| check_id(id).is_err()) {
            return Err("site, camera, zone and rule must be valid ids".into());
        }
        if let Command::Clip { event_id } = self
            && !crate::contract::is_token(event_id)
        {
            return Err("an event id is 1-64 characters A-Z a-z 0-9 _ -".into());
        }
        let on_off = |on: bool| if on { "ON" } else { "OFF" }.to_owned();
        Ok(match self {
            Command::Snapshot => {
                (format!("{site}/{camera}/snapshot/request"), serde_json::json!({"request_id": request_id}).to_string())
            }
            Command::Detect(on) => (format!("{site}/{camera}/detect/set"), on_off(*on)),
            Command::Rule { zone, rule, on } => (format!("{site}/{camera}/rules/{zone}/{rule}/set"), on_off(*on)),
            Command::Clip { event_id } => {
                (format!("{site}/clips/request"), serde_json::json!({"event_id": event_id}).to_string())
            }
        })
    }
}

/// Sends a device command (contract 1.1) as an operator, audited.
pub async fn command(
    app: &App,
    user: &User,
    peer: &Peer,
    site: &str,
    camera: &str,
    what: Command,
) -> Result<(), Response> {
    user.require(Role::Operator)?;
    let request_id = ulid::Ulid::new().to_string();
    let (topic, payload) = what.message(site, camera, &request_id).map_err(|why| bad(&why))?;
    if what == Command::Snapshot {
        app.fresh.asked(site, camera, &request_id);
    }
    app.mqtt.publish(&topic, payload.clone().into_bytes(), false).await.map_err(|e| {
        tracing::warn!("site {site} camera {camera}: command {topic}: {e}");
        (StatusCode::SERVICE_UNAVAILABLE, "broker unavailable").into_response()
    })?;
    tracing::info!("site {site} camera {camera}: {} sent {payload} on {topic}", user.name);
    let (name, addr) = (user.name.clone(), peer.0.ip().to_string());
    app.db(move |s| s.audit(Some(&name), &addr, "command", &topic, &payload)).await
}

/// `GET /live/{site}/{camera}/{request_id}`: a fresh picture while the desk keeps it.
async fn fresh_picture(
    State(app): State<App>,
    _user: User,
    Path((site, camera, request_id)): Path<(String, String, String)>,
) -> Response {
    match app.fresh.picture(&site, &camera).filter(|p| p.request_id == request_id) {
        Some(p) => {
            ([(header::CONTENT_TYPE, "image/jpeg"), (header::CACHE_CONTROL, "private, no-store")], p.bytes.to_vec())
                .into_response()
        }
        None => (StatusCode::NOT_FOUND, "no such picture (they are kept 10 minutes)").into_response(),
    }
}

async fn stream(State(app): State<App>, _user: User) -> Sse<impl futures::Stream<Item = Result<Event, Infallible>>> {
    use futures::StreamExt;
    let rx = app.live.subscribe();
    // Graceful shutdown waits for every connection: a stream must end when the desk stops.
    let stop = app.stop.clone().cancelled_owned();
    let s = futures::stream::unfold(rx, |mut rx| async move {
        let data = match rx.recv().await {
            Ok(change) => serde_json::to_string(&change).unwrap_or_default(),
            // Fell behind: tell the page to reload what it shows.
            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => "{\"type\":\"lagged\"}".to_owned(),
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
        };
        Some((Ok(Event::default().data(data)), rx))
    })
    .take_until(stop);
    Sse::new(s).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}

async fn media(State(app): State<App>, _user: User, Path(id): Path<i64>) -> Response {
    let Ok(Some((rel, kind))) = app.db(move |s| s.file(id)).await else {
        return (StatusCode::NOT_FOUND, "no such file").into_response();
    };
    let path = app.store.files_dir().join(rel);
    match tokio::task::spawn_blocking(move || std::fs::read(path)).await {
        Ok(Ok(bytes)) => {
            let mime = if kind == "clip" { "video/mp4" } else { "image/jpeg" };
            ([(header::CONTENT_TYPE, mime), (header::CACHE_CONTROL, "private, max-age=86400, immutable")], bytes)
                .into_response()
        }
        _ => (StatusCode::NOT_FOUND, "file gone").into_response(),
    }
}
