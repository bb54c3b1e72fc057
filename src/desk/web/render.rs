//! HTML of the console, server-rendered with maud: every string is escaped, and the
//! pieces the live views refresh (wall tiles, event rows, the incident queue) are the
//! same functions the full pages use.
//!
//! Promises: no inline script or style (the CSP forbids both); times are written as
//! `<time datetime=…>` in UTC, which desk.js shows in the browser's local time.

use std::collections::BTreeMap;

use maud::{DOCTYPE, Markup, html};

use super::auth::User;
use super::i18n::{code, detail_field, heading, label, t};
use crate::desk::config::Language;
use crate::desk::store::{AuditRow, EventDetail, EventView, ReportRow, Role, SiteView};

/// What every rendering needs: the language, the viewer, site names.
pub struct Ctx<'a> {
    pub lang: Language,
    pub user: Option<&'a User>,
    pub names: &'a dyn Fn(&str) -> String,
}

impl Ctx<'_> {
    pub fn t(&self, key: &str) -> String {
        t(self.lang, key)
    }
    fn can_act(&self) -> bool {
        self.user.is_some_and(|u| u.role >= Role::Operator)
    }
    fn csrf(&self) -> &str {
        self.user.map_or("", |u| u.csrf.as_str())
    }
}

pub fn page(cx: &Ctx, name: &str, title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang=(code(cx.lang)) {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · " (cx.t("title")) }
                link rel="stylesheet" href="/assets/desk.css";
                script src="/assets/desk.js" defer {}
            }
            body data-page=(name) data-csrf=(cx.csrf()) data-mute=(cx.t("mute")) data-unmute=(cx.t("unmute")) {
                @if let Some(u) = cx.user {
                    header.top {
                        nav {
                            @for (href, key) in [("/", "wall"), ("/incidents", "incidents"), ("/feed", "feed"),
                                                ("/history", "history"), ("/report", "report"), ("/notices", "notices"),
                                                ("/audit", "audit")] {
                                a.current[key == name] href=(href) { (cx.t(key)) }
                            }
                        }
                        a #alarm.alarm hidden href="/incidents" { (cx.t("alarm")) ": " span #alarm-count { "0" } }
                        button #mute type="button" { (cx.t("mute")) }
                        span.who { (u.name) " (" (u.role.as_str()) ")" }
                        form.inline method="post" action="/logout" {
                            input type="hidden" name="csrf" value=(u.csrf);
                            button type="submit" { (cx.t("logout")) }
                        }
                    }
                }
                main { (body) }
            }
        }
    }
}

pub fn time(at: &str) -> Markup {
    html! { time datetime=(at) { (at) } }
}

fn status_key(status: Option<&str>) -> &str {
    match status {
        Some(s @ ("online" | "offline" | "stopped")) => s,
        _ => "unknown",
    }
}

pub fn tiles(cx: &Ctx, sites: &[SiteView]) -> Markup {
    html! { @for s in sites { (tile(cx, s)) } }
}

fn tile(cx: &Ctx, s: &SiteView) -> Markup {
    let status = status_key(s.status.as_deref());
    html! {
        section.tile.(format!("status-{status}")) .trouble[s.trouble() > 0] id=(format!("site-{}", s.site)) data-site=(s.site) {
            header {
                a.name href=(format!("/sites/{}", s.site)) { (s.name) }
                span.status { (cx.t(status)) }
                @if let Some(since) = &s.status_since { " " (time(since)) }
            }
            @match &s.latest_picture {
                Some(url) => img src=(url) alt=(cx.t("latest")) loading="lazy";,
                None => div.nopic { (cx.t("no_picture")) },
            }
            // Alerts before the cameras: a tile has a fixed height, and with four
            // cameras the lines after them were cut off.
            @if s.open_alerts > 0 { p.alerts { (cx.t("open_alerts")) ": " (s.open_alerts) } }
            @if s.missing_events > 0 { p.missing { (s.missing_events) " " (cx.t("missing")) } }
            @if s.events_evicted > 0 { p.missing { (s.events_evicted) " " (cx.t("evicted")) } }
            // A site that is down says nothing new of its cameras: their last states are
            // greyed, not shown green as if streaming now.
            ul.cams.stale[s.down()] title=[s.down().then(|| cx.t("last_reported"))] {
                @for c in &s.cameras {
                    @let state = c.state.clone().unwrap_or_else(|| "unknown".into());
                    li.(format!("cam-{state}")) {
                        (c.name) ": " (cx.t(&state))
                        @if let Some(fps) = c.fps_analyzed { " · " (format!("{fps:.1}")) " " (cx.t("fps")) }
                    }
                }
            }
        }
    }
}

pub fn duration(e: &EventView) -> Option<String> {
    let start = humantime::parse_rfc3339(&e.started_at).ok()?;
    let end = humantime::parse_rfc3339(e.ended_at.as_deref()?).ok()?;
    let s = end.duration_since(start).ok()?.as_secs();
    Some(if s >= 3600 { format!("{}h{:02}m", s / 3600, s / 60 % 60) } else { format!("{}m{:02}s", s / 60, s % 60) })
}

pub fn event_url(e: &EventView) -> String {
    format!("/events/{}/{}", e.site, e.event_id)
}

fn incident_badge(cx: &Ctx, e: &EventView) -> Markup {
    html! {
        @if let Some(i) = &e.incident {
            span.badge.(format!("inc-{}", i.state)) .escalated[i.escalated_at.is_some() && i.state == "open"] {
                (cx.t(&i.state))
                @if let Some(r) = &i.resolution { " · " (cx.t(r)) }
            }
            @if let Some(by) = i.resolved_by.as_ref().or(i.claimed_by.as_ref()) { " " span.by { (by) } }
        }
    }
}

/// One event as a table row; `actions` adds the claim and resolve forms.
pub fn event_row(cx: &Ctx, e: &EventView, actions: bool) -> Markup {
    html! {
        tr id=(format!("ev-{}-{}", e.site, e.event_id)) data-type=(e.last_type) {
            td.thumb { @if let Some(url) = e.snapshots.last() { a href=(event_url(e)) { img src=(url) alt="" loading="lazy"; } } }
            td.kind { a href=(event_url(e)) { (cx.t(&e.kind)) } }
            td.label { (label(cx.lang, &e.label)) }
            td.score { (format!("{:.2}", e.score)) }
            td.zones { (e.zones.join(", ")) }
            td.site { ((cx.names)(&e.site)) }
            td.camera { (e.camera) }
            td.started { (time(&e.started_at)) }
            td.duration { (duration(e).unwrap_or_else(|| cx.t("ongoing"))) }
            td.incident { (incident_badge(cx, e)) }
            @if actions { td.actions { (incident_forms(cx, e)) } }
        }
    }
}

pub fn event_table(cx: &Ctx, events: &[EventView], actions: bool, body_id: &str) -> Markup {
    html! {
        table.events {
            thead { tr {
                th { (cx.t("picture")) } th { (cx.t("kind")) } th { (cx.t("label")) } th { (cx.t("score")) }
                th { (cx.t("zones")) } th { (cx.t("site")) } th { (cx.t("camera")) } th { (cx.t("started")) }
                th { (cx.t("duration")) } th { (cx.t("state")) }
                @if actions { th { (cx.t("action")) } }
            } }
            tbody id=(body_id) { @for e in events { (event_row(cx, e, actions)) } }
        }
    }
}

pub fn incident_forms(cx: &Ctx, e: &EventView) -> Markup {
    let Some(i) = &e.incident else { return html! {} };
    if !cx.can_act() || i.state == "resolved" {
        return html! {};
    }
    let base = format!("/incidents/{}/{}", e.site, e.event_id);
    html! {
        @if i.state == "open" {
            form.inline method="post" action=(format!("{base}/claim")) {
                input type="hidden" name="csrf" value=(cx.csrf());
                button.claim type="submit" { (cx.t("claim")) }
            }
        }
        form.inline.resolve method="post" action=(format!("{base}/resolve")) {
            input type="hidden" name="csrf" value=(cx.csrf());
            select name="resolution" {
                @for r in ["handled", "false_alarm", "duplicate"] { option value=(r) { (cx.t(r)) } }
            }
            input type="text" name="note" maxlength="500" placeholder=(cx.t("note"));
            button.resolve type="submit" { (cx.t("resolve")) }
        }
    }
}

/// What the event page offers when the event has no clip.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ClipOffer {
    /// The grid point may still have the video: a button to ask; `asked` when it just was;
    /// `ring` the camera's ring and the seconds left to ask in, when the desk knows them.
    Ask { asked: bool, ring: Option<(f64, f64)> },
    /// The camera's ring (`ring_s` seconds) no longer reaches back to the event's start.
    Gone { ring_s: f64 },
    /// The camera holds no video now (clips off, or offline since it started).
    None,
}

impl ClipOffer {
    /// From the camera's last known ring length (None: not heard yet, so ask and let
    /// the grid point answer) and the event's age at `now`.
    pub fn of(d: &EventDetail, now: std::time::SystemTime, asked: bool) -> ClipOffer {
        let started = humantime::parse_rfc3339_weak(&d.event.started_at).ok();
        let age = started.and_then(|s| now.duration_since(s).ok()).unwrap_or_default().as_secs_f64();
        match d.clip_ring_s {
            Some(r) if r <= 0.0 => ClipOffer::None,
            Some(r) if age > r => ClipOffer::Gone { ring_s: r },
            ring => ClipOffer::Ask { asked, ring: ring.map(|r| (r, r - age)) },
        }
    }
}

/// How long the grid point keeps video, in the camera's own figures when known.
fn clip_note(cx: &Ctx, ring: Option<(f64, f64)>) -> String {
    match ring {
        Some((ring_s, left_s)) => cx
            .t("request_clip_left")
            .replace("{s}", &format!("{ring_s:.0}"))
            .replace("{left}", &format!("{:.0}", left_s.max(0.0))),
        None => cx.t("request_clip_note"),
    }
}

pub fn event_detail(cx: &Ctx, d: &EventDetail, offer: ClipOffer) -> Markup {
    let e = &d.event;
    html! {
        h1 { (heading(cx.lang, &e.kind)) " · " (label(cx.lang, &e.label)) " · " ((cx.names)(&e.site)) " / " (e.camera) }
        p { (cx.t("started")) " " (time(&e.started_at)) " · " (cx.t("duration")) " "
            (duration(e).unwrap_or_else(|| cx.t("ongoing"))) " · " (cx.t("score")) " " (format!("{:.2}", e.score))
            @if !e.zones.is_empty() { " · " (cx.t("zones")) " " (e.zones.join(", ")) }
            @if e.incident.is_some() { " · " (incident_badge(cx, e)) } }
        section.pictures {
            div.snaps {
                h2 { (cx.t("snapshots")) }
                @for (url, status) in e.snapshots.iter().zip(&e.snapshot_status) {
                    figure.(format!("pic-{status}")) {
                        img src=(url) alt=(cx.t("picture"));
                        @if status != "ok" { figcaption { (cx.t(status)) } }
                    }
                }
            }
            @if let Some(clip) = &e.clip {
                div.clip-box {
                    h2 { (cx.t("clip")) }
                    video.clip controls preload="metadata" src=(clip) {}
                    // Chromium plays H.265 only where the PC's graphics decode it.
                    p.clip-note { (cx.t("clip_note")) " " a.download href=(clip) download { (cx.t("download_clip")) } }
                }
            } @else if cx.can_act() {
                div.clip-box {
                    h2 { (cx.t("clip")) }
                    @match offer {
                        ClipOffer::Ask { asked, ring } => {
                            form.inline method="post" action=(format!("/events/{}/{}/clip", e.site, e.event_id)) {
                                input type="hidden" name="csrf" value=(cx.csrf());
                                button.request-clip type="submit" { (cx.t("request_clip")) }
                            }
                            @if asked { p.clip-asked { (cx.t("clip_asked")) } }
                            p.clip-note { (clip_note(cx, ring)) }
                        }
                        ClipOffer::Gone { ring_s } => {
                            p.clip-note.clip-gone { (cx.t("clip_gone").replace("{s}", &format!("{ring_s:.0}"))) }
                        }
                        ClipOffer::None => { p.clip-note.clip-gone { (cx.t("clip_none")) } }
                    }
                }
            }
        }
        @if let Some(serde_json::Value::Object(d)) = &e.detail {
            h2 { (cx.t("detail")) }
            table.detail { @for (k, v) in d { tr { th { (detail_field(cx.lang, k)) } td { (plain(v)) } } } }
        }
        @if e.incident.is_some() {
            h2 { (cx.t("incident_history")) }
            div.actions { (incident_forms(cx, e)) }
            table.log {
                thead { tr { th { (cx.t("when")) } th { (cx.t("who")) } th { (cx.t("action")) } th { (cx.t("note")) } } }
                tbody { @for r in &d.incident_log { tr data-action=(r.action) {
                    td { (time(&r.at)) } td { (r.user.as_deref().unwrap_or("")) } td { (cx.t(&r.action)) }
                    td { (r.detail.as_deref().unwrap_or("")) }
                } } }
            }
        }
        h2 { (cx.t("timeline")) }
        table.timeline {
            thead { tr { th { (cx.t("seq")) } th { (cx.t("type")) } th { (cx.t("when")) } th { (cx.t("received")) } } }
            @for m in &d.timeline { tr { td { (m.seq) } td { (cx.t(&m.kind)) } td { (time(&m.at)) } td { (time(&m.received_at)) } } }
        }
    }
}

/// A JSON value as text (strings without their quotes).
fn plain(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        // e.g. an intrusion rule without a schedule: "null" means nothing to a duty officer.
        serde_json::Value::Null => "—".into(),
        other => other.to_string(),
    }
}

pub fn audit_table(cx: &Ctx, rows: &[AuditRow]) -> Markup {
    html! {
        table.audit {
            thead { tr { th { (cx.t("when")) } th { (cx.t("who")) } th { (cx.t("address")) } th { (cx.t("action")) }
                         th { (cx.t("target")) } th { (cx.t("detail")) } } }
            tbody { @for r in rows { tr data-action=(r.action) {
                td { (time(&r.at)) } td { (r.user.as_deref().unwrap_or("")) } td { (r.addr.as_deref().unwrap_or("")) }
                td { (cx.t(&r.action)) } td { (r.target.as_deref().unwrap_or("")) } td { (r.detail.as_deref().unwrap_or("")) }
            } } }
        }
    }
}

/// Per day and site, counts by kind, as a table and a stacked bar chart (SVG) with a
/// bar for each of `days`; then line counts and zone peaks when stats arrived.
pub fn report(cx: &Ctx, rows: &[ReportRow], days: &[String]) -> Markup {
    let kinds: Vec<String> = rows
        .iter()
        .flat_map(|r| r.counts.keys().cloned())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let mut per_day: BTreeMap<&str, BTreeMap<&str, i64>> = days.iter().map(|d| (d.as_str(), BTreeMap::new())).collect();
    for r in rows {
        for (k, n) in &r.counts {
            *per_day.entry(&r.day).or_default().entry(k).or_default() += n;
        }
    }
    html! {
        (chart(cx, &kinds, &per_day))
        table.report {
            thead { tr { th { (cx.t("day")) } th { (cx.t("site")) } @for k in &kinds { th { (cx.t(k)) } } th { (cx.t("total")) } } }
            tbody { @for r in rows { tr {
                td { (r.day) } td { ((cx.names)(&r.site)) }
                @for k in &kinds { td { (r.counts.get(k).copied().unwrap_or(0)) } }
                td { (r.counts.values().sum::<i64>()) }
            } } }
        }
        @if rows.iter().any(|r| !r.lines.is_empty()) {
            h2 { (cx.t("line_counts")) }
            table.lines {
                thead { tr { th { (cx.t("day")) } th { (cx.t("site")) } th { (cx.t("line")) } th { (cx.t("in")) } th { (cx.t("out")) } } }
                tbody { @for r in rows { @for (k, [i, o]) in &r.lines { tr {
                    td { (r.day) } td { ((cx.names)(&r.site)) } td { (k) } td { (i) } td { (o) }
                } } } }
            }
        }
        @if rows.iter().any(|r| !r.peaks.is_empty()) {
            h2 { (cx.t("zone_peaks")) }
            table.peaks {
                thead { tr { th { (cx.t("day")) } th { (cx.t("site")) } th { (cx.t("zone")) } th { (cx.t("peak")) } } }
                tbody { @for r in rows { @for (k, n) in &r.peaks { tr {
                    td { (r.day) } td { ((cx.names)(&r.site)) } td { (k) } td { (n) }
                } } } }
            }
        }
    }
}

fn chart(cx: &Ctx, kinds: &[String], per_day: &BTreeMap<&str, BTreeMap<&str, i64>>) -> Markup {
    const W: f64 = 960.0;
    const H: f64 = 240.0;
    let max = per_day.values().map(|m| m.values().sum::<i64>()).max().unwrap_or(0).max(1) as f64;
    let slot = W / per_day.len().max(1) as f64;
    html! {
        svg.chart viewBox=(format!("0 0 {W} {}", H + 60.0)) role="img" {
            @for (i, (day, counts)) in per_day.iter().enumerate() {
                @let mut y = H;
                @for (ki, k) in kinds.iter().enumerate() {
                    @let h = counts.get(k.as_str()).copied().unwrap_or(0) as f64 / max * (H - 20.0);
                    @if h > 0.0 {
                        @let top = { y -= h; y };
                        rect class=(format!("k{}", ki % 8)) x=(format!("{:.1}", i as f64 * slot + slot * 0.15))
                            y=(format!("{top:.1}")) width=(format!("{:.1}", slot * 0.7)) height=(format!("{h:.1}")) {
                            title { (day) " " (cx.t(k)) ": " (counts.get(k.as_str()).copied().unwrap_or(0)) }
                        }
                    }
                }
                text x=(format!("{:.1}", i as f64 * slot + slot / 2.0)) y=(H + 16.0) text-anchor="middle" { (day.get(5..).unwrap_or(day)) }
                text x=(format!("{:.1}", i as f64 * slot + slot / 2.0)) y=(y - 4.0) text-anchor="middle" { (counts.values().sum::<i64>()) }
            }
            @for (ki, k) in kinds.iter().enumerate() {
                rect class=(format!("k{}", ki % 8)) x=(ki as f64 * 120.0) y=(H + 34.0) width="12" height="12" {}
                text x=(ki as f64 * 120.0 + 16.0) y=(H + 45.0) { (cx.t(k)) }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn detail(zones: &[&str]) -> EventDetail {
        let event = EventView {
            site: "g01".into(),
            event_id: "e1".into(),
            seq_first: 1,
            seq_last: 1,
            camera: "gate".into(),
            kind: "loitering".into(),
            label: "person".into(),
            score: 0.8,
            zones: zones.iter().map(|z| z.to_string()).collect(),
            detail: None,
            started_at: "2026-12-01T01:00:00Z".into(),
            ended_at: None,
            last_type: "new".into(),
            snapshots: Vec::new(),
            snapshot_status: Vec::new(),
            clip: None,
            incident: None,
        };
        EventDetail { event, timeline: Vec::new(), incident_log: Vec::new(), clip_ring_s: None }
    }

    const ASK: ClipOffer = ClipOffer::Ask { asked: false, ring: None };

    #[test]
    fn a_site_that_is_down_greys_its_cameras_last_states() {
        let names = |s: &str| s.to_owned();
        let cx = Ctx { lang: Language::En, user: None, names: &names };
        let camera = crate::desk::store::CameraView {
            id: "c1".into(),
            name: "gate".into(),
            state: Some("streaming".into()),
            fps_analyzed: Some(5.0),
            latest_picture: None,
        };
        let site = |status: &str| SiteView {
            site: "g01".into(),
            name: "g01".into(),
            group: None,
            status: Some(status.into()),
            status_since: None,
            cameras: vec![camera.clone()],
            open_alerts: 0,
            missing_events: 0,
            events_evicted: 0,
            latest_picture: None,
        };
        let stopped = tiles(&cx, &[site("stopped")]).into_string();
        assert!(stopped.contains("class=\"cams stale\" title=\"as last reported"), "{stopped}");
        let online = tiles(&cx, &[site("online")]).into_string();
        assert!(online.contains("<ul class=\"cams\">"), "{online}");
    }

    #[test]
    fn the_event_page_names_zones_only_when_there_are_some() {
        let names = |s: &str| s.to_owned();
        let cx = Ctx { lang: Language::ZhCn, user: None, names: &names };
        let with = event_detail(&cx, &detail(&["<b>后门</b>", "lane"]), ASK).into_string();
        assert!(with.contains("区域 &lt;b&gt;后门&lt;/b&gt;, lane"), "{with}");
        let without = event_detail(&cx, &detail(&[]), ASK).into_string();
        assert!(!without.contains("区域"), "{without}");
    }

    #[test]
    fn a_clip_is_offered_only_while_the_camera_still_has_the_video() {
        let mut d = detail(&[]);
        let started = humantime::parse_rfc3339(&d.event.started_at).unwrap();
        let at = |s: u64| started + std::time::Duration::from_secs(s);
        // Not heard from the camera yet: ask, and let the grid point answer.
        assert_eq!(ClipOffer::of(&d, at(3600), false), ASK);
        d.clip_ring_s = Some(30.0);
        let ask_in_time = ClipOffer::of(&d, at(20), true);
        assert_eq!(ask_in_time, ClipOffer::Ask { asked: true, ring: Some((30.0, 10.0)) });
        assert_eq!(ClipOffer::of(&d, at(31), false), ClipOffer::Gone { ring_s: 30.0 });
        d.clip_ring_s = Some(0.0);
        assert_eq!(ClipOffer::of(&d, at(1), false), ClipOffer::None);

        let user = User { name: "op".into(), role: Role::Operator, csrf: "c".into() };
        let names = |s: &str| s.to_owned();
        let cx = Ctx { lang: Language::En, user: Some(&user), names: &names };
        let gone = event_detail(&cx, &detail(&[]), ClipOffer::Gone { ring_s: 30.0 }).into_string();
        assert!(gone.contains("only the last 30 s of video") && !gone.contains("request-clip"), "{gone}");
        let none = event_detail(&cx, &detail(&[]), ClipOffer::None).into_string();
        assert!(none.contains("holds no video now") && !none.contains("request-clip"), "{none}");
        let ask = event_detail(&cx, &detail(&[]), ASK).into_string();
        assert!(ask.contains("button class=\"request-clip\"") && !ask.contains("clip-gone"), "{ask}");
        let left = event_detail(&cx, &detail(&[]), ask_in_time).into_string();
        assert!(left.contains("last 30 s of video: about 10 s are left"), "{left}");
        // The English title starts with a capital.
        assert!(ask.contains("<h1>Loitering · person"), "{ask}");
    }
}
