//! The notices page (`/notices`): compose a notice to one site, a group or all; every
//! notice with a row per targeted site (received, played, error), refreshed live; and
//! the same as JSON under `/api/notices`.
//!
//! Promises: sending and withdrawing need the operator role and the session's CSRF
//! token, and are audited with who sent what to whom; the notice is checked before it
//! is stored or published; every string is escaped on the page.

use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Json, Router};
use maud::{Markup, html};
use serde::Deserialize;

use super::auth::User;
use super::render::{self, Ctx};
use super::{App, Peer};
use crate::desk::live::Change;
use crate::desk::notices::{self, MAX_TEXT, Notice};
use crate::desk::store::{NewNotice, NoticeView, Role};

/// Notices the page and the API list.
const LISTED: usize = 50;
/// Expiry choices of the form, in minutes.
const EXPIRY_CHOICES: [i64; 9] = [30, 60, 120, 240, 480, 720, 1440, 4320, 10080];

pub fn routes() -> Router<App> {
    Router::new()
        .route("/notices", get(page).post(send_form))
        .route("/fragments/notices", get(fragment))
        .route("/notices/{notice_id}/withdraw", post(withdraw_form))
        .route("/api/notices", get(list_json).post(send_json))
        .route("/api/notices/{notice_id}/withdraw", post(withdraw_json))
}

fn bad(why: &str) -> Response {
    (StatusCode::BAD_REQUEST, Json(serde_json::json!({"error": why}))).into_response()
}

/// Checks, stores, publishes and audits a notice as `user`: its id.
async fn send(app: &App, user: &User, peer: &Peer, n: Notice) -> Result<String, Response> {
    user.require(Role::Operator)?;
    let configured: Vec<String> = app.cfg.sites.iter().map(|s| s.id.clone()).collect();
    let groups: Vec<(String, Option<String>)> = app.cfg.sites.iter().map(|s| (s.id.clone(), s.group.clone())).collect();
    let known = app.db(move |s| s.known_sites(&configured)).await?;
    let (sites, topics) = notices::reach(&n.target, &groups, &known).map_err(|e| bad(&e.to_string()))?;
    let id = ulid::Ulid::new().to_string();
    let target = n.target.as_string();
    let (name, addr) = (user.name.clone(), peer.0.ip().to_string());
    {
        let (id, n, target, topics) = (id.clone(), n.clone(), target.clone(), topics.clone());
        app.db(move |s| {
            s.put_notice(&NewNotice {
                notice_id: &id,
                level: &n.level,
                text: &n.text,
                expires_at: &n.expires_at,
                target: &target,
                sent_by: &name,
                sites: &sites,
                topics: &topics,
            })?;
            s.audit(Some(&name), &addr, "notice", &format!("{target} {id}"), &format!("{} {}", n.level, n.text))
        })
        .await?;
    }
    let payload = n.payload(&id);
    for t in &topics {
        if let Err(e) = app.mqtt.publish(t, payload.clone(), true).await {
            tracing::warn!("notice {id}: publishing on {}/{t}: {e}", app.mqtt.root());
            return Err((StatusCode::SERVICE_UNAVAILABLE, "broker unavailable").into_response());
        }
    }
    tracing::info!("notice {id} ({}) to {target} by {}: {} topic(s)", n.level, user.name, topics.len());
    app.live.send(Change::Notice { notice_id: id.clone() });
    Ok(id)
}

/// Takes a notice off its topics now, as `user`, audited.
async fn withdraw(app: &App, user: &User, peer: &Peer, id: String) -> Result<(), Response> {
    user.require(Role::Operator)?;
    let (name, addr, i2) = (user.name.clone(), peer.0.ip().to_string(), id.clone());
    let topics = app
        .db(move |s| {
            let topics = s.end_notice(&i2, "withdrawn")?;
            s.audit(Some(&name), &addr, "notice_withdraw", &i2, "")?;
            Ok(topics)
        })
        .await?;
    tracing::info!("notice {id}: withdrawn by {}", user.name);
    notices::clear(&app.mqtt, &id, &topics).await;
    app.live.send(Change::Notice { notice_id: id });
    Ok(())
}

#[derive(Deserialize)]
struct SendForm {
    csrf: String,
    level: String,
    text: String,
    minutes: i64,
    target: String,
}

async fn send_form(
    State(app): State<App>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    user: User,
    headers: HeaderMap,
    Form(f): Form<SendForm>,
) -> Response {
    if let Err(r) = user.check(&headers, Some(&f.csrf)) {
        return r;
    }
    let n = match Notice::new(&f.level, &f.text, Some(f.minutes), None, &f.target) {
        Ok(n) => n,
        Err(e) => return bad(&e.to_string()),
    };
    match send(&app, &user, &peer, n).await {
        Ok(_) => Redirect::to("/notices").into_response(),
        Err(r) => r,
    }
}

#[derive(Deserialize)]
struct SendBody {
    level: String,
    text: String,
    #[serde(default)]
    minutes: Option<i64>,
    #[serde(default)]
    expires_at: Option<String>,
    target: String,
}

async fn send_json(
    State(app): State<App>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    user: User,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    if let Err(r) = user.check(&headers, None) {
        return r;
    }
    let Ok(b) = serde_json::from_slice::<SendBody>(&body) else {
        return bad("body: give JSON {\"level\", \"text\", \"minutes\" or \"expires_at\", \"target\"}");
    };
    let n = match Notice::new(&b.level, &b.text, b.minutes, b.expires_at.as_deref(), &b.target) {
        Ok(n) => n,
        Err(e) => return bad(&e.to_string()),
    };
    match send(&app, &user, &peer, n).await {
        Ok(id) => Json(serde_json::json!({"notice_id": id})).into_response(),
        Err(r) => r,
    }
}

#[derive(Deserialize)]
struct CsrfForm {
    csrf: String,
}

async fn withdraw_form(
    State(app): State<App>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    user: User,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(f): Form<CsrfForm>,
) -> Response {
    if let Err(r) = user.check(&headers, Some(&f.csrf)) {
        return r;
    }
    match withdraw(&app, &user, &peer, id).await {
        Ok(()) => Redirect::to("/notices").into_response(),
        Err(r) => r,
    }
}

async fn withdraw_json(
    State(app): State<App>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    user: User,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    if let Err(r) = user.check(&headers, None) {
        return r;
    }
    match withdraw(&app, &user, &peer, id).await {
        Ok(()) => Json(serde_json::json!({"ok": true})).into_response(),
        Err(r) => r,
    }
}

async fn list_json(State(app): State<App>, _user: User) -> Response {
    match app.db(|s| s.notices(LISTED)).await {
        Ok(list) => Json(list).into_response(),
        Err(r) => r,
    }
}

fn ctx<'a>(app: &App, user: &'a User, names: &'a dyn Fn(&str) -> String) -> Ctx<'a> {
    Ctx { lang: app.cfg.language, user: Some(user), names }
}

async fn page(State(app): State<App>, user: User) -> Response {
    let list = match app.db(|s| s.notices(LISTED)).await {
        Ok(l) => l,
        Err(r) => return r,
    };
    let names = |id: &str| app.site_name(id);
    let cx = ctx(&app, &user, &names);
    let mut groups: Vec<&str> = app.cfg.sites.iter().filter_map(|s| s.group.as_deref()).collect();
    groups.sort();
    groups.dedup();
    let body = html! {
        @if user.role >= Role::Operator {
            form.notice method="post" action="/notices" {
                input type="hidden" name="csrf" value=(user.csrf);
                label { (cx.t("level")) select name="level" {
                    @for l in ["info", "warning", "urgent"] { option value=(l) { (cx.t(&format!("level.{l}"))) } }
                } }
                label { (cx.t("target")) select name="target" {
                    option value="all" { (cx.t("all_sites")) }
                    @for g in &groups { option value=(format!("group:{g}")) { (cx.t("group")) ": " (g) } }
                    @for s in &app.cfg.sites { option value=(format!("site:{}", s.id)) { (s.name) " (" (s.id) ")" } }
                } }
                label { (cx.t("expires_in")) select name="minutes" {
                    @for m in EXPIRY_CHOICES { option value=(m) selected[m == 240] { (minutes(&cx, m)) } }
                } }
                label.text { (cx.t("notice_text")) textarea name="text" maxlength=(MAX_TEXT) required rows="3" {} }
                button type="submit" { (cx.t("send_notice")) }
            }
        }
        div #notices { (list_html(&cx, &list)) }
    };
    Html(render::page(&cx, "notices", &cx.t("notices"), body).into_string()).into_response()
}

fn minutes(cx: &Ctx, m: i64) -> String {
    if m % 1440 == 0 {
        format!("{} {}", m / 1440, cx.t("days"))
    } else if m % 60 == 0 {
        format!("{} {}", m / 60, cx.t("hours"))
    } else {
        format!("{m} {}", cx.t("minutes"))
    }
}

async fn fragment(State(app): State<App>, user: User) -> Response {
    match app.db(|s| s.notices(LISTED)).await {
        Ok(list) => {
            let names = |id: &str| app.site_name(id);
            Html(list_html(&ctx(&app, &user, &names), &list).into_string()).into_response()
        }
        Err(r) => r,
    }
}

fn list_html(cx: &Ctx, list: &[NoticeView]) -> Markup {
    let can_act = cx.user.is_some_and(|u| u.role >= Role::Operator);
    html! {
        @if list.is_empty() { p { (cx.t("no_notices")) } }
        @for n in list {
            section.notice.(format!("level-{}", n.level)) id=(format!("notice-{}", n.notice_id)) data-notice=(n.notice_id) {
                p.head {
                    span.badge { (cx.t(&format!("level.{}", n.level))) }
                    " " span.target { (target_text(cx, &n.target)) }
                    " · " (cx.t("sent_by")) " " span.by { (n.sent_by) } " " (render::time(&n.sent_at))
                    " · " (cx.t("expires")) " " (render::time(&n.expires_at))
                    @if let Some(why) = &n.ended_why { " · " span.ended { (cx.t(why)) } }
                }
                p.text { (n.text) }
                @if can_act && n.ended_at.is_none() {
                    form.inline method="post" action=(format!("/notices/{}/withdraw", n.notice_id)) {
                        input type="hidden" name="csrf" value=(cx.user.map_or("", |u| u.csrf.as_str()));
                        button.withdraw type="submit" { (cx.t("withdraw")) }
                    }
                }
                table.receipts {
                    thead { tr { th { (cx.t("site")) } th { (cx.t("received")) } th { (cx.t("played")) } th { (cx.t("error")) } } }
                    tbody { @for r in &n.sites {
                        tr data-site=(r.site) .answered[r.received_at.is_some()] .failed[r.error.is_some()] {
                            td { ((cx.names)(&r.site)) }
                            td.received { @match &r.received_at { Some(t) => (render::time(t)), None => (cx.t("waiting")) } }
                            td.played { @if let Some(t) = &r.played_at { (render::time(t)) } }
                            td.error { (r.error.as_deref().unwrap_or("")) }
                        }
                    } }
                }
            }
        }
    }
}

fn target_text(cx: &Ctx, target: &str) -> String {
    match target.split_once(':') {
        Some(("site", id)) => (cx.names)(id),
        Some(("group", g)) => format!("{}: {g}", cx.t("group")),
        _ => cx.t("all_sites"),
    }
}
