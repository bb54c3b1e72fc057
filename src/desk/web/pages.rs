//! The console's pages and the fragments the live views refresh: wall, incidents,
//! feed, event, history (with CSV), report (with CSV), site, audit log, login.
//!
//! Promises: every handler takes a `User` (so no page is served without a login);
//! forms carry the session's CSRF token and redirect back after acting.

use axum::Form;
use axum::Router;
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use maud::{Markup, html};
use serde::Deserialize;

use super::api::{self, Command, Step};
use super::auth::User;
use super::render::{self, Ctx};
use super::{App, Peer};
use crate::desk::store::{
    CommandErrorRow, DeviceState, EventFilter, EventView, Role, SiteView, end_of, now_ms, rfc3339, time_bound,
};

pub fn routes() -> Router<App> {
    Router::new()
        .route("/", get(wall))
        .route("/fragments/wall", get(wall_fragment))
        .route("/incidents", get(incidents))
        .route("/fragments/incidents", get(incidents_fragment))
        .route("/incidents/{site}/{event_id}/{action}", post(step_form))
        .route("/feed", get(feed))
        .route("/fragments/feed", get(feed_fragment))
        .route("/events/{site}/{event_id}", get(event))
        .route("/events/{site}/{event_id}/clip", post(clip_form))
        .route("/history", get(history))
        .route("/history.csv", get(history_csv))
        .route("/report", get(report))
        .route("/report.csv", get(report_csv))
        .route("/sites/{site}", get(site))
        .route("/fragments/sites/{site}", get(site_fragment))
        .route("/sites/{site}/{camera}/{command}", post(command_form))
        .route("/sites/{site}/{camera}/rules/{zone}/{rule}/{on}", post(rule_form))
        .route("/audit", get(audit))
}

fn html_page(app: &App, user: &User, name: &str, title: &str, body: impl FnOnce(&Ctx) -> Markup) -> Response {
    let names = |id: &str| app.site_name(id);
    let cx = Ctx { lang: app.cfg.language, user: Some(user), names: &names };
    Html(render::page(&cx, name, title, body(&cx)).into_string()).into_response()
}

fn fragment(app: &App, user: &User, body: impl FnOnce(&Ctx) -> Markup) -> Response {
    let names = |id: &str| app.site_name(id);
    let cx = Ctx { lang: app.cfg.language, user: Some(user), names: &names };
    Html(body(&cx).into_string()).into_response()
}

fn tr(app: &App, key: &str) -> String {
    super::i18n::t(app.cfg.language, key)
}

pub fn login(app: &App, next: &str, problem: Option<&str>, status: StatusCode) -> Response {
    let names = |id: &str| id.to_owned();
    let cx = Ctx { lang: app.cfg.language, user: None, names: &names };
    let body = html! {
        form.login method="post" action="/login" {
            h1 { (cx.t("title")) }
            @if let Some(p) = problem { p.error { (cx.t(p)) } }
            label { (cx.t("user")) input type="text" name="user" autocomplete="username" required maxlength="64"; }
            label { (cx.t("password")) input type="password" name="password" autocomplete="current-password" required; }
            input type="hidden" name="next" value=(next);
            button type="submit" { (cx.t("login")) }
        }
    };
    (status, Html(render::page(&cx, "login", &cx.t("login"), body).into_string())).into_response()
}

async fn wall(State(app): State<App>, user: User) -> Response {
    let names = app.site_names();
    match app.db(move |s| s.sites(&names)).await {
        Ok(sites) => html_page(&app, &user, "wall", &tr(&app, "wall"), |cx| {
            html! { div #wall.wall { (render::tiles(cx, &sites)) } }
        }),
        Err(r) => r,
    }
}

async fn wall_fragment(State(app): State<App>, user: User) -> Response {
    let names = app.site_names();
    match app.db(move |s| s.sites(&names)).await {
        Ok(sites) => fragment(&app, &user, |cx| render::tiles(cx, &sites)),
        Err(r) => r,
    }
}

fn incident_list(cx: &Ctx, events: &[EventView]) -> Markup {
    html! {
        @if events.is_empty() { p { (cx.t("no_incidents")) } }
        @else { (render::event_table(cx, events, true, "incident-rows")) }
    }
}

async fn incidents(State(app): State<App>, user: User) -> Response {
    match app.db(|s| s.incident_queue(50)).await {
        Ok(list) => html_page(&app, &user, "incidents", &tr(&app, "incidents"), |cx| {
            html! { div #incidents { (incident_list(cx, &list)) } }
        }),
        Err(r) => r,
    }
}

async fn incidents_fragment(State(app): State<App>, user: User) -> Response {
    match app.db(|s| s.incident_queue(50)).await {
        Ok(list) => fragment(&app, &user, |cx| incident_list(cx, &list)),
        Err(r) => r,
    }
}

/// The claim and resolve forms (`resolution` and `note` only on the latter).
#[derive(Deserialize)]
struct StepForm {
    csrf: String,
    #[serde(default)]
    resolution: String,
    #[serde(default)]
    note: String,
}

#[derive(Deserialize)]
struct CsrfForm {
    csrf: String,
}

/// Back to the page the form was on (same site only), else the incident's event page.
fn back(headers: &HeaderMap, site: &str, id: &str) -> Redirect {
    let referer = headers.get(header::REFERER).and_then(|v| v.to_str().ok()).and_then(|r| {
        let host = headers.get(header::HOST)?.to_str().ok()?;
        let rest = r.split_once("://")?.1.strip_prefix(host)?;
        rest.starts_with('/').then(|| rest.to_owned())
    });
    Redirect::to(&referer.unwrap_or_else(|| format!("/events/{site}/{id}")))
}

async fn step_form(
    State(app): State<App>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    user: User,
    headers: HeaderMap,
    Path((site, id, action)): Path<(String, String, String)>,
    Form(f): Form<StepForm>,
) -> Response {
    if let Err(r) = user.check(&headers, Some(&f.csrf)) {
        return r;
    }
    let step = match Step::parse(&action, &f.resolution, &f.note) {
        Ok(s) => s,
        Err(r) => return r,
    };
    match api::take(&app, &user, &peer, site.clone(), id.clone(), step).await {
        Ok(()) => back(&headers, &site, &id).into_response(),
        Err(r) => r,
    }
}

async fn feed(State(app): State<App>, user: User, Query(q): Query<EventFilter>) -> Response {
    let f = match api::filter(q, 100) {
        Ok(f) => f,
        Err(r) => return r,
    };
    let q = f.clone();
    match app.db(move |s| s.events(&f)).await {
        Ok(list) => html_page(&app, &user, "feed", &tr(&app, "feed"), |cx| {
            html! { (filters(cx, &q, "/feed", false)) (render::event_table(cx, &list, false, "feed-rows")) }
        }),
        Err(r) => r,
    }
}

async fn feed_fragment(State(app): State<App>, user: User, Query(q): Query<EventFilter>) -> Response {
    let f = match api::filter(q, 100) {
        Ok(f) => f,
        Err(r) => return r,
    };
    match app.db(move |s| s.events(&f)).await {
        Ok(list) => fragment(&app, &user, |cx| html! { @for e in &list { (render::event_row(cx, e, false)) } }),
        Err(r) => r,
    }
}

/// The filter form of the feed and history pages.
fn filters(cx: &Ctx, q: &EventFilter, action: &str, full: bool) -> Markup {
    let v = |o: &Option<String>| o.clone().unwrap_or_default();
    html! {
        form.filters method="get" action=(action) {
            label { (cx.t("site")) input name="site" value=(v(&q.site)) maxlength="63"; }
            label { (cx.t("camera")) input name="camera" value=(v(&q.camera)) maxlength="63"; }
            label { (cx.t("kind")) select name="kind" {
                option value="" { (cx.t("any")) }
                @for k in ["object", "intrusion", "loitering", "crowd", "occupation", "abandoned", "tamper", "camera_offline"] {
                    option value=(k) selected[q.kind.as_deref() == Some(k)] { (cx.t(k)) }
                }
            } }
            label { (cx.t("label")) input name="label" value=(v(&q.label)) maxlength="63"; }
            @if full {
                // The hint is the form a day takes, not a date: a grey date in an empty
                // field reads as a filter that is set. A time may follow the day.
                label { (cx.t("from")) input name="from" value=(v(&q.from)) placeholder=(cx.t("date_hint")) maxlength="30"; }
                label { (cx.t("to")) input name="to" value=(v(&q.to)) placeholder=(cx.t("date_hint")) maxlength="30"; }
                label { (cx.t("state")) select name="state" {
                    option value="" { (cx.t("any")) }
                    @for s in ["open", "claimed", "resolved", "none"] {
                        option value=(s) selected[q.state.as_deref() == Some(s)] { (cx.t(s)) }
                    }
                } }
            }
            button type="submit" { (cx.t("search")) }
        }
    }
}

#[derive(Deserialize)]
struct EventQuery {
    /// Set by the redirect after "ask for the clip": the page says the request went.
    clip: Option<String>,
}

async fn event(
    State(app): State<App>,
    user: User,
    Path((site, id)): Path<(String, String)>,
    Query(q): Query<EventQuery>,
) -> Response {
    let asked = q.clip.as_deref() == Some("asked");
    match app.db(move |s| s.event_detail(&site, &id)).await {
        Ok(Some(d)) => {
            let offer = render::ClipOffer::of(&d, std::time::SystemTime::now(), asked);
            let title = super::i18n::heading(app.cfg.language, &d.event.kind);
            html_page(&app, &user, "event", &title, |cx| render::event_detail(cx, &d, offer))
        }
        Ok(None) => (StatusCode::NOT_FOUND, tr(&app, "not_found")).into_response(),
        Err(r) => r,
    }
}

/// The event page's "ask for the clip": the request goes to the event's grid point,
/// and the clip shows on the page when it comes.
async fn clip_form(
    State(app): State<App>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    user: User,
    headers: HeaderMap,
    Path((site, id)): Path<(String, String)>,
    Form(f): Form<CsrfForm>,
) -> Response {
    if let Err(r) = user.check(&headers, Some(&f.csrf)) {
        return r;
    }
    let (s, i) = (site.clone(), id.clone());
    let camera = match app.db(move |st| st.event_detail(&s, &i)).await {
        Ok(Some(d)) => d.event.camera,
        Ok(None) => return (StatusCode::NOT_FOUND, tr(&app, "not_found")).into_response(),
        Err(r) => return r,
    };
    match api::command(&app, &user, &peer, &site, &camera, Command::Clip { event_id: id.clone() }).await {
        Ok(()) => Redirect::to(&format!("/events/{site}/{id}?clip=asked")).into_response(),
        Err(r) => r,
    }
}

/// The history page's query string (page size included) without `page`, to build paging links.
fn query_without_page(q: &EventFilter) -> String {
    let pairs = [
        ("site", &q.site),
        ("camera", &q.camera),
        ("kind", &q.kind),
        ("label", &q.label),
        ("from", &q.from),
        ("to", &q.to),
        ("state", &q.state),
    ];
    let mut out = url::form_urlencoded::Serializer::new(String::new());
    if let Some(n) = q.limit {
        out.append_pair("limit", &n.to_string());
    }
    for (k, v) in pairs {
        if let Some(v) = v.as_ref().filter(|v| !v.is_empty()) {
            out.append_pair(k, v);
        }
    }
    out.finish()
}

async fn history(State(app): State<App>, user: User, Query(q): Query<EventFilter>) -> Response {
    let f = match api::filter(q, 50) {
        Ok(f) => f,
        Err(r) => return r,
    };
    let (page, full, q) = (f.page.unwrap_or(0), f.limit.unwrap_or(50), f.clone());
    match app.db(move |s| s.events(&f)).await {
        Ok(list) => html_page(&app, &user, "history", &tr(&app, "history"), |cx| {
            let qs = query_without_page(&q);
            html! {
                (filters(cx, &q, "/history", true))
                p.paging {
                    @if page > 0 { a href=(format!("/history?{qs}&page={}", page - 1)) { (cx.t("newer")) } " " }
                    @if list.len() == full { a href=(format!("/history?{qs}&page={}", page + 1)) { (cx.t("older")) } " " }
                    a href=(format!("/history.csv?{qs}")) { (cx.t("csv")) }
                }
                (render::event_table(cx, &list, false, "history-rows"))
            }
        }),
        Err(r) => r,
    }
}

/// A CSV field: quoted, and never read as a formula by a spreadsheet.
fn csv_field(s: &str) -> String {
    let s = if s.starts_with(['=', '+', '-', '@', '\t', '\r']) { format!("'{s}") } else { s.to_owned() };
    format!("\"{}\"", s.replace('"', "\"\""))
}

fn csv_response(name: &str, rows: Vec<Vec<String>>) -> Response {
    let mut out = String::from("\u{feff}"); // so spreadsheet programs read the Chinese as UTF-8
    for r in rows {
        out += &r.iter().map(|f| csv_field(f)).collect::<Vec<_>>().join(",");
        out += "\r\n";
    }
    let disposition = format!("attachment; filename=\"{name}\"");
    ([(header::CONTENT_TYPE, "text/csv; charset=utf-8".to_owned()), (header::CONTENT_DISPOSITION, disposition)], out)
        .into_response()
}

async fn history_csv(State(app): State<App>, _user: User, Query(q): Query<EventFilter>) -> Response {
    let f = match api::filter(q, 1000) {
        Ok(f) => f,
        Err(r) => return r,
    };
    let list = match app.db(move |s| s.events(&f)).await {
        Ok(l) => l,
        Err(r) => return r,
    };
    let mut rows = vec![
        [
            "site",
            "site_name",
            "event_id",
            "camera",
            "kind",
            "label",
            "score",
            "zones",
            "started_at",
            "ended_at",
            "incident",
            "claimed_by",
            "resolved_by",
            "resolution",
            "note",
        ]
        .map(String::from)
        .to_vec(),
    ];
    for e in list {
        let i = e.incident.clone();
        rows.push(vec![
            e.site.clone(),
            app.site_name(&e.site),
            e.event_id,
            e.camera,
            e.kind,
            e.label,
            format!("{:.3}", e.score),
            e.zones.join(" "),
            e.started_at,
            e.ended_at.unwrap_or_default(),
            i.as_ref().map(|i| i.state.clone()).unwrap_or_default(),
            i.as_ref().and_then(|i| i.claimed_by.clone()).unwrap_or_default(),
            i.as_ref().and_then(|i| i.resolved_by.clone()).unwrap_or_default(),
            i.as_ref().and_then(|i| i.resolution.clone()).unwrap_or_default(),
            i.as_ref().and_then(|i| i.note.clone()).unwrap_or_default(),
        ]);
    }
    csv_response("history.csv", rows)
}

#[derive(Deserialize)]
struct ReportQuery {
    from: Option<String>,
    to: Option<String>,
}

/// A day as the report's fields take it (the browser refuses another form before sending).
const DAY_PATTERN: &str = r"\d{4}-\d{2}-\d{2}";

/// The report's days, `from` to `to` inclusive, by default the last 7; a bad date is a 400.
fn range(q: &ReportQuery) -> Result<(String, String), Response> {
    let day = |ago: i64| rfc3339(now_ms() - ago * 86_400_000)[..10].to_owned();
    let pick = |name: &str, v: &Option<String>, default: String| match v.as_deref().map(str::trim) {
        None | Some("") => Ok(default),
        Some(d) if d.len() == 10 && time_bound(d).is_some() => Ok(d.to_owned()),
        Some(_) => Err((StatusCode::BAD_REQUEST, format!("{name}: give a date such as 2026-11-30")).into_response()),
    };
    Ok((pick("from", &q.from, day(6))?, pick("to", &q.to, day(0))?))
}

/// Every day from `from` to `to` (at most 92), so the chart shows empty days too.
fn days(from: &str, to: &str) -> Vec<String> {
    let Ok(start) = humantime::parse_rfc3339(&format!("{from}T00:00:00Z")) else { return Vec::new() };
    (0..92u64)
        .map(|n| crate::contract::timestamp(start + std::time::Duration::from_secs(n * 86_400))[..10].to_owned())
        .take_while(|d| d.as_str() <= to)
        .collect()
}

async fn report(State(app): State<App>, user: User, Query(q): Query<ReportQuery>) -> Response {
    let (from, to) = match range(&q) {
        Ok(r) => r,
        Err(r) => return r,
    };
    let (f2, t2) = (from.clone(), end_of(&to));
    match app.db(move |s| s.report(&f2, &t2)).await {
        Ok(rows) => html_page(&app, &user, "report", &tr(&app, "report"), |cx| {
            html! {
                form.filters method="get" action="/report" {
                    // Plain text in the form the whole desk writes days in: a date picker
                    // shows the browser's own form (11/26/2026 in an English browser).
                    label { (cx.t("from")) input name="from" value=(from) maxlength="10" pattern=(DAY_PATTERN) placeholder=(cx.t("date_hint")); }
                    label { (cx.t("to")) input name="to" value=(to) maxlength="10" pattern=(DAY_PATTERN) placeholder=(cx.t("date_hint")); }
                    button type="submit" { (cx.t("search")) }
                    " " a href=(format!("/report.csv?from={from}&to={to}")) { (cx.t("csv")) }
                }
                (render::report(cx, &rows, &days(&from, &to)))
            }
        }),
        Err(r) => r,
    }
}

async fn report_csv(State(app): State<App>, _user: User, Query(q): Query<ReportQuery>) -> Response {
    let (from, to) = match range(&q) {
        Ok(r) => r,
        Err(r) => return r,
    };
    let rows = match app.db(move |s| s.report(&from, &end_of(&to))).await {
        Ok(r) => r,
        Err(r) => return r,
    };
    let mut out = vec![["day", "site", "site_name", "measure", "count"].map(String::from).to_vec()];
    for r in rows {
        let measures = r.counts.iter().map(|(k, n)| (k.clone(), *n));
        let lines =
            r.lines.iter().flat_map(|(k, [i, o])| [(format!("line {k} in"), *i), (format!("line {k} out"), *o)]);
        let peaks = r.peaks.iter().map(|(k, n)| (format!("zone {k} peak"), *n));
        for (m, n) in measures.chain(lines).chain(peaks) {
            out.push(vec![r.day.clone(), r.site.clone(), app.site_name(&r.site), m, n.to_string()]);
        }
    }
    csv_response("report.csv", out)
}

/// What the site page shows: the site, each camera's 24 h of health changes, the
/// states its device published, and its latest command errors.
struct SitePage {
    view: SiteView,
    changes: Vec<Vec<(String, String)>>,
    states: Vec<DeviceState>,
    errors: Vec<CommandErrorRow>,
}

async fn load_site(app: &App, site: String) -> Result<SitePage, Response> {
    let names = app.site_names();
    let found = app
        .db(move |s| {
            let Some(view) = s.sites(&names)?.into_iter().find(|v| v.site == site) else { return Ok(None) };
            let changes =
                view.cameras.iter().map(|c| s.camera_changes(&site, &c.id)).collect::<anyhow::Result<Vec<_>>>()?;
            let (states, errors) = (s.device_states(&site)?, s.command_errors(&site)?);
            Ok(Some(SitePage { view, changes, states, errors }))
        })
        .await?;
    found.ok_or_else(|| (StatusCode::NOT_FOUND, tr(app, "not_found")).into_response())
}

async fn site(State(app): State<App>, user: User, Path(site): Path<String>) -> Response {
    let page = match load_site(&app, site).await {
        Ok(p) => p,
        Err(r) => return r,
    };
    html_page(&app, &user, "site", &page.view.name.clone(), |cx| {
        html! {
            h1 { (page.view.name) " (" (page.view.site) ")" }
            div #site-live data-site=(page.view.site) { (site_body(&app, cx, &user, &page)) }
        }
    })
}

async fn site_fragment(State(app): State<App>, user: User, Path(site): Path<String>) -> Response {
    match load_site(&app, site).await {
        Ok(page) => fragment(&app, &user, |cx| site_body(&app, cx, &user, &page)),
        Err(r) => r,
    }
}

/// A small form that posts one command.
fn command_button(user: &User, action: &str, class: &str, label: &str) -> Markup {
    html! {
        form.inline method="post" action=(action) {
            input type="hidden" name="csrf" value=(user.csrf);
            button.(class) type="submit" { (label) }
        }
    }
}

fn site_body(app: &App, cx: &Ctx, user: &User, page: &SitePage) -> Markup {
    let (view, site) = (&page.view, &page.view.site);
    let can_act = user.role >= Role::Operator;
    html! {
        div.wall.single { (render::tiles(cx, std::slice::from_ref(view))) }
        @if !page.errors.is_empty() {
            section.command-errors {
                h2 { (cx.t("command_errors")) }
                table.command-errors {
                    thead { tr { th { (cx.t("when")) } th { (cx.t("topic")) } th { (cx.t("reason")) } } }
                    tbody { @for e in &page.errors { tr {
                        td { (render::time(&e.at)) } td.topic { (e.topic) } td.reason { (e.reason) }
                    } } }
                }
            }
        }
        div.cameras { @for (cam, changes) in view.cameras.iter().zip(&page.changes) {
            @let base = format!("/sites/{site}/{}", cam.id);
            @let states: Vec<&DeviceState> = page.states.iter().filter(|s| s.camera == cam.id).collect();
            @let detect = states.iter().find(|s| s.what == "detect").map(|s| s.value.as_str());
            section.camera id=(format!("cam-{}", cam.id)) {
                h2 { (cam.name) " · " (cam.id) }
                // The switches first: on a laptop screen they stay above the fold.
                div.controls {
                    p.detect data-state=(detect.unwrap_or("")) {
                        (cx.t("detection")) ": "
                        @match detect { Some("ON") => (cx.t("on")), Some("OFF") => (cx.t("off")), _ => (cx.t("unknown")) }
                    }
                    @if can_act {
                        (command_button(user, &format!("{base}/snapshot"), "snapshot", &cx.t("fresh_picture")))
                        @if detect == Some("OFF") {
                            (command_button(user, &format!("{base}/detect_on"), "detect-on", &cx.t("resume_detect")))
                        } @else {
                            (command_button(user, &format!("{base}/detect_off"), "detect-off", &cx.t("pause_detect")))
                            @if detect.is_none() {
                                (command_button(user, &format!("{base}/detect_on"), "detect-on", &cx.t("resume_detect")))
                            }
                        }
                    }
                    @let rules: Vec<&&DeviceState> = states.iter().filter(|s| s.what.starts_with("rules/")).collect();
                    @if !rules.is_empty() {
                        table.rules {
                            thead { tr { th { (cx.t("zone")) } th { (cx.t("rule")) } th { (cx.t("state")) } @if can_act { th {} } } }
                            tbody { @for r in rules {
                                @let (zone, rule) = r.what["rules/".len()..].split_once('/').unwrap_or(("", ""));
                                tr data-rule=(format!("{zone}/{rule}")) data-state=(r.value) {
                                    td { (zone) } td { (cx.t(rule)) }
                                    td { @if r.value == "ON" { (cx.t("armed")) } @else { (cx.t("disarmed")) } }
                                    @if can_act { td {
                                        @let (cmd, class, key) = if r.value == "ON" { ("off", "disarm", "disarm") } else { ("on", "arm", "arm") };
                                        (command_button(user, &format!("{base}/rules/{zone}/{rule}/{cmd}"), class, &cx.t(key)))
                                    } }
                                }
                            } }
                        }
                    }
                }
                @if let Some(url) = &cam.latest_picture { img.latest src=(url) alt=(cx.t("latest")); }
                @if let Some(p) = app.fresh.picture(site, &cam.id) {
                    figure.fresh {
                        img.fresh src=(format!("/live/{site}/{}/{}", cam.id, p.request_id)) alt=(cx.t("fresh_picture"));
                        figcaption { (cx.t("fresh_picture")) " " (render::time(&p.received_at)) }
                    }
                }
                @if app.fresh.waiting(site, &cam.id) { p.waiting { (cx.t("picture_asked")) } }
                h3 { (cx.t("health_24h")) }
                ul.changes { @for (at, state) in changes { li { (render::time(at)) " " (cx.t(state)) } } }
            }
        } }
    }
}

async fn command_form(
    State(app): State<App>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    user: User,
    headers: HeaderMap,
    Path((site, camera, command)): Path<(String, String, String)>,
    Form(f): Form<CsrfForm>,
) -> Response {
    if let Err(r) = user.check(&headers, Some(&f.csrf)) {
        return r;
    }
    let what = match command.as_str() {
        "snapshot" => Some(Command::Snapshot),
        "detect_on" => Some(Command::Detect(true)),
        "detect_off" => Some(Command::Detect(false)),
        _ => None,
    };
    command_then_back(&app, &user, &peer, site, camera, what).await
}

async fn rule_form(
    State(app): State<App>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    user: User,
    headers: HeaderMap,
    Path((site, camera, zone, rule, on)): Path<(String, String, String, String, String)>,
    Form(f): Form<CsrfForm>,
) -> Response {
    if let Err(r) = user.check(&headers, Some(&f.csrf)) {
        return r;
    }
    let on = match on.as_str() {
        "on" => Some(true),
        "off" => Some(false),
        _ => None,
    };
    command_then_back(&app, &user, &peer, site, camera, on.map(|on| Command::Rule { zone, rule, on })).await
}

/// Sends a site page's command (None: no such command, 404), then back to the page.
async fn command_then_back(
    app: &App,
    user: &User,
    peer: &Peer,
    site: String,
    camera: String,
    what: Option<Command>,
) -> Response {
    let Some(what) = what else { return (StatusCode::NOT_FOUND, "no such command").into_response() };
    match api::command(app, user, peer, &site, &camera, what).await {
        Ok(()) => Redirect::to(&format!("/sites/{site}")).into_response(),
        Err(r) => r,
    }
}

#[derive(Deserialize)]
struct PageQuery {
    page: Option<usize>,
}

async fn audit(State(app): State<App>, user: User, Query(q): Query<PageQuery>) -> Response {
    let page = q.page.unwrap_or(0);
    match api::audit_rows(&app, &user, 100, page).await {
        Ok(rows) => html_page(&app, &user, "audit", &tr(&app, "audit"), |cx| {
            html! {
                p.paging {
                    @if page > 0 { a href=(format!("/audit?page={}", page - 1)) { (cx.t("newer")) } " " }
                    @if rows.len() == 100 { a href=(format!("/audit?page={}", page + 1)) { (cx.t("older")) } }
                }
                (render::audit_table(cx, &rows))
            }
        }),
        Err(r) => r,
    }
}
