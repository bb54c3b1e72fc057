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
use serde::Deserialize;

use super::auth::User;
use super::{App, Peer};
use crate::contract::check_id;
use crate::desk::live::Change;
use crate::desk::store::{EventFilter, Resolution, Role};

pub fn routes() -> Router<App> {
    Router::new()
        .route("/api/session", get(session))
        .route("/api/sites", get(sites))
        .route("/api/events", get(events))
        .route("/api/events/{site}/{event_id}", get(event))
        .route("/api/incidents/{site}/{event_id}/claim", post(claim_json))
        .route("/api/incidents/{site}/{event_id}/resolve", post(resolve_json))
        .route("/api/alarm", get(alarm))
        .route("/api/audit", get(audit))
        .route("/api/stream", get(stream))
        .route("/media/{id}", get(media))
}

async fn session(user: User) -> Response {
    Json(serde_json::json!({"user": user.name, "role": user.role, "csrf_token": user.csrf})).into_response()
}

async fn sites(State(app): State<App>, _user: User) -> Response {
    let names = app.site_names();
    match app.db(move |s| s.sites(&names)).await {
        Ok(v) => Json(v).into_response(),
        Err(r) => r,
    }
}

/// The query of `/api/events`, `/history` and its CSV.
#[derive(Debug, Default, Deserialize)]
pub struct EventQuery {
    pub site: Option<String>,
    pub camera: Option<String>,
    pub kind: Option<String>,
    pub label: Option<String>,
    pub from: Option<String>,
    pub to: Option<String>,
    pub state: Option<String>,
    pub limit: Option<usize>,
    pub before: Option<String>,
    pub page: Option<usize>,
}

impl EventQuery {
    pub fn filter(&self, default_limit: usize) -> EventFilter {
        let limit = self.limit.unwrap_or(default_limit).clamp(1, 1000);
        EventFilter {
            site: self.site.clone(),
            camera: self.camera.clone(),
            kind: self.kind.clone(),
            label: self.label.clone(),
            from: self.from.clone(),
            to: self.to.clone(),
            state: self.state.clone(),
            before: self.before.clone(),
            limit,
            offset: self.page.unwrap_or(0).min(100_000) * limit,
        }
    }
}

async fn events(State(app): State<App>, _user: User, Query(q): Query<EventQuery>) -> Response {
    let f = q.filter(100);
    match app.db(move |s| s.events(&f)).await {
        Ok(v) => Json(v).into_response(),
        Err(r) => r,
    }
}

async fn event(State(app): State<App>, _user: User, Path((site, id)): Path<(String, String)>) -> Response {
    let found = app
        .db(move |s| Ok(s.event(&site, &id)?.map(|e| (s.timeline(&site, &id), s.incident_log(&site, &id), e))))
        .await;
    match found {
        Ok(Some((Ok(timeline), Ok(log), e))) => {
            Json(serde_json::json!({"event": e, "timeline": timeline, "incident_log": log})).into_response()
        }
        Ok(_) => (StatusCode::NOT_FOUND, Json(serde_json::json!({"error": "no such event"}))).into_response(),
        Err(r) => r,
    }
}

async fn alarm(State(app): State<App>, _user: User) -> Response {
    match app.db(|s| s.open_incidents()).await {
        Ok(n) => Json(serde_json::json!({"open": n})).into_response(),
        Err(r) => r,
    }
}

#[derive(Deserialize)]
struct AuditQuery {
    limit: Option<usize>,
}

async fn audit(State(app): State<App>, user: User, Query(q): Query<AuditQuery>) -> Response {
    if let Err(r) = user.require(Role::Operator) {
        return r;
    }
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    match app.db(move |s| s.audit_log(limit, 0)).await {
        Ok(v) => Json(v).into_response(),
        Err(r) => r,
    }
}

/// Claims an incident for `user`: the one step the API and the form both take.
pub async fn claim(app: &App, user: &User, peer: &Peer, site: String, id: String) -> Result<(), Response> {
    user.require(Role::Operator)?;
    let (name, addr) = (user.name.clone(), peer.0.ip().to_string());
    let (s2, i2) = (site.clone(), id.clone());
    let done = app
        .db(move |s| {
            let r = s.claim(&s2, &i2, &name)?;
            if r.is_ok() {
                s.audit(Some(&name), &addr, "claim", &format!("{s2}/{i2}"), "")?;
            }
            Ok(r)
        })
        .await?;
    finish(app, done, site, id)
}

pub async fn resolve(
    app: &App,
    user: &User,
    peer: &Peer,
    site: String,
    id: String,
    resolution: &str,
    note: &str,
) -> Result<(), Response> {
    user.require(Role::Operator)?;
    let Some(resolution) = Resolution::parse(resolution) else {
        return Err(bad("resolution: use handled, false_alarm or duplicate"));
    };
    if note.chars().count() > 500 {
        return Err(bad("note: at most 500 characters"));
    }
    let (name, addr, note) = (user.name.clone(), peer.0.ip().to_string(), note.to_owned());
    let (s2, i2) = (site.clone(), id.clone());
    let done = app
        .db(move |s| {
            let r = s.resolve(&s2, &i2, &name, resolution, &note)?;
            if r.is_ok() {
                s.audit(
                    Some(&name),
                    &addr,
                    "resolve",
                    &format!("{s2}/{i2}"),
                    &format!("{} {note}", resolution.as_str()),
                )?;
            }
            Ok(r)
        })
        .await?;
    finish(app, done, site, id)
}

fn finish(app: &App, done: Result<(), &'static str>, site: String, event_id: String) -> Result<(), Response> {
    done.map_err(|why| (StatusCode::CONFLICT, Json(serde_json::json!({"error": why}))).into_response())?;
    app.live.send(Change::Incident { site: site.clone(), event_id });
    app.live.send(Change::Site { site });
    Ok(())
}

fn bad(why: &str) -> Response {
    (StatusCode::BAD_REQUEST, Json(serde_json::json!({"error": why}))).into_response()
}

fn ok() -> Response {
    Json(serde_json::json!({"ok": true})).into_response()
}

async fn claim_json(
    State(app): State<App>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    user: User,
    headers: HeaderMap,
    Path((site, id)): Path<(String, String)>,
) -> Response {
    if let Err(r) = user.check(&headers, None) {
        return r;
    }
    claim(&app, &user, &peer, site, id).await.map_or_else(|r| r, |_| ok())
}

#[derive(Deserialize)]
pub struct ResolveBody {
    pub resolution: String,
    #[serde(default)]
    pub note: String,
}

async fn resolve_json(
    State(app): State<App>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    user: User,
    headers: HeaderMap,
    Path((site, id)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> Response {
    if let Err(r) = user.check(&headers, None) {
        return r;
    }
    let Ok(b) = serde_json::from_slice::<ResolveBody>(&body) else {
        return bad("body: give JSON {\"resolution\": …, \"note\": …}");
    };
    resolve(&app, &user, &peer, site, id, &b.resolution, &b.note).await.map_or_else(|r| r, |_| ok())
}

/// Sends a device command (contract 1.1) as an operator, audited.
pub async fn command(
    app: &App,
    user: &User,
    peer: &Peer,
    site: &str,
    camera: &str,
    what: &str,
) -> Result<(), Response> {
    user.require(Role::Operator)?;
    if check_id(site).is_err() || check_id(camera).is_err() {
        return Err(bad("site and camera must be valid ids"));
    }
    let (topic, payload) = match what {
        "snapshot" => (
            format!("{site}/{camera}/snapshot/request"),
            serde_json::json!({"request_id": ulid::Ulid::new().to_string()}).to_string(),
        ),
        "detect_on" => (format!("{site}/{camera}/detect/set"), "ON".to_owned()),
        "detect_off" => (format!("{site}/{camera}/detect/set"), "OFF".to_owned()),
        _ => return Err(bad("unknown command")),
    };
    app.mqtt.publish(&topic, payload.clone().into_bytes(), false).await.map_err(|e| {
        tracing::warn!("command {topic}: {e}");
        (StatusCode::SERVICE_UNAVAILABLE, "broker unavailable").into_response()
    })?;
    let (name, addr) = (user.name.clone(), peer.0.ip().to_string());
    app.db(move |s| s.audit(Some(&name), &addr, "command", &topic, &payload)).await
}

async fn stream(State(app): State<App>, _user: User) -> Sse<impl futures::Stream<Item = Result<Event, Infallible>>> {
    let rx = app.live.subscribe();
    let s = futures::stream::unfold(rx, |mut rx| async move {
        let data = match rx.recv().await {
            Ok(change) => serde_json::to_string(&change).unwrap_or_default(),
            // Fell behind: tell the page to reload what it shows.
            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => "{\"type\":\"lagged\"}".to_owned(),
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
        };
        Some((Ok(Event::default().data(data)), rx))
    });
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
