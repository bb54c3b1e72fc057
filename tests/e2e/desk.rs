//! The duty desk (`gridwatch desk`) on real parts: mosquitto, the desk as a process,
//! the site simulator as a process, hand-made contract messages, and headless
//! Chromium through WebDriver.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use gridwatch::testkit::mosquitto::{BrokerOptions, Mosquitto, free_port};
use serde_json::json;

use crate::desk_support::*;
use crate::support::{Desk, scratch};

const HTML: &str = "<img src=x onerror=alert(1)>";

fn broker() -> Mosquitto {
    Mosquitto::start_with(free_port().unwrap(), BrokerOptions { persistent: true, tls: None }).unwrap()
}

/// A desk with users `op` (operator), `view` (viewer) and `boss` (admin).
fn desk_with_users(name: &str, broker_port: u16, extra: &str) -> DeskProc {
    let dir = scratch(name);
    let config = desk_config(&dir, broker_port, extra);
    for (u, role) in [("op", "operator"), ("view", "viewer"), ("boss", "admin")] {
        add_user(&config, u, role);
    }
    DeskProc::start(&dir, &config)
}

fn ulid() -> String {
    ulid::Ulid::new().to_string()
}

#[test]
fn security_every_route_needs_a_login_csrf_and_roles_hold_and_lockout() {
    let mq = broker();
    let mut desk = desk_with_users("desk-security", mq.port(), "");
    let port = desk.port;
    let pages = [
        "/",
        "/incidents",
        "/feed",
        "/history",
        "/history.csv",
        "/report",
        "/report.csv",
        "/audit",
        "/sites/x",
        "/events/x/y",
    ];
    let api = [
        "/api/session",
        "/api/sites",
        "/api/events",
        "/api/events/x/y",
        "/api/alarm",
        "/api/audit",
        "/api/stream",
        "/media/1",
        "/fragments/wall",
        "/fragments/feed",
        "/fragments/incidents",
    ];
    for p in pages {
        let r = http(port, "GET", p, &[], b"");
        assert_eq!(r.status, 303, "{p} without a session");
        assert!(r.header("location").unwrap().starts_with("/login"), "{p} goes to the login page");
    }
    for p in api {
        assert_eq!(http(port, "GET", p, &[], b"").status, 401, "{p} without a session");
    }
    for p in [
        "/api/incidents/x/y/claim",
        "/api/incidents/x/y/resolve",
        "/incidents/x/y/claim",
        "/sites/x/c/snapshot",
        "/logout",
    ] {
        let r = http(port, "POST", p, &[], b"");
        assert!(r.status == 401 || r.status == 303, "POST {p} without a session: {}", r.status);
    }
    // A wrong cookie is no session either.
    assert_eq!(http(port, "GET", "/api/sites", &[("Cookie", "gw_session=00")], b"").status, 401);

    let login = login_raw(port, "op", PASSWORD);
    let cookie = login.header("set-cookie").expect("session cookie");
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(cookie.contains(attr), "{cookie} lacks {attr}");
    }
    let csp = login.header("content-security-policy").unwrap();
    assert!(csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"), "{csp}");

    // An incident to act on.
    let p = Publisher::connect(mq.port(), "sec-device");
    let id = ulid();
    p.event("gate-1", 1, &id, "new", "intrusion", "person", &[], None);
    let op = Session::login(port, "op", PASSWORD);
    let claim = format!("/api/incidents/gate-1/{id}/claim");
    wait_for(Duration::from_secs(5), || {
        let v = op.get("/api/events?state=open").json();
        (v.as_array()?.len() == 1).then_some(())
    })
    .expect("the intrusion is an open incident");
    // No token, a wrong token, another site's Origin: refused, nothing changes.
    let no_token = http(port, "POST", &claim, &[("Cookie", &op.cookie)], b"");
    assert_eq!(no_token.status, 403);
    let wrong = http(port, "POST", &claim, &[("Cookie", &op.cookie), ("X-CSRF-Token", "00")], b"");
    assert_eq!(wrong.status, 403);
    let cross = http(
        port,
        "POST",
        &claim,
        &[("Cookie", &op.cookie), ("X-CSRF-Token", &op.csrf), ("Origin", "http://evil.example")],
        b"",
    );
    assert_eq!(cross.status, 403);
    let form = http(
        port,
        "POST",
        &format!("/incidents/gate-1/{id}/claim"),
        &[("Cookie", &op.cookie), ("Content-Type", "application/x-www-form-urlencoded")],
        b"csrf=wrong",
    );
    assert_eq!(form.status, 403);
    assert_eq!(op.get("/api/events").json()[0]["incident"]["state"], "open");
    // A viewer sees but may not act.
    let viewer = Session::login(port, "view", PASSWORD);
    assert_eq!(viewer.get("/api/sites").status, 200);
    assert_eq!(viewer.post_json(&claim, &json!({})).status, 403);
    assert_eq!(op.post_json(&claim, &json!({})).status, 200);
    // Bodies are capped.
    let big = vec![b'a'; 64 << 10];
    let r = http(
        port,
        "POST",
        &format!("/api/incidents/gate-1/{id}/resolve"),
        &[("Cookie", &op.cookie), ("X-CSRF-Token", &op.csrf)],
        &big,
    );
    assert_eq!(r.status, 413);

    // Five wrong passwords in a minute: the right one is refused too, for this user
    // and from this address.
    for _ in 0..5 {
        assert_eq!(login_raw(port, "boss", "wrong-password").status, 401);
    }
    let locked = login_raw(port, "boss", PASSWORD);
    assert_eq!(locked.status, 429, "the right password after 5 wrong ones");
    assert!(locked.header("set-cookie").is_none());
    assert!(login_raw(port, "view", PASSWORD).header("set-cookie").is_none(), "the address is locked out too");
    let audit: Vec<String> = op
        .get("/api/audit?limit=20")
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|r| format!("{} {}", r["user"].as_str().unwrap_or(""), r["action"].as_str().unwrap_or("")))
        .collect();
    assert!(
        audit.contains(&"boss login_locked".to_owned()) && audit.contains(&"boss login_failed".to_owned()),
        "{audit:?}"
    );
    assert!(audit.contains(&"op claim".to_owned()), "{audit:?}");

    // A live stream open does not keep the desk from stopping (systemctl stop).
    let _stream = open_stream(port, &op.cookie);
    let took = desk.terminate(Duration::from_secs(10));
    assert!(took.is_some(), "the desk did not stop within 10 s of SIGTERM with a stream open");
}

#[test]
fn injected_html_is_text_and_dedupe_and_picture_checks_hold() {
    let mq = broker();
    let extra = format!("[[sites]]\nid = \"grid-07\"\nname = \"第七网格 · 东门 {HTML}\"\n");
    let desk = desk_with_users("desk-escape", mq.port(), &extra);
    let p = Publisher::connect(mq.port(), "esc-device");
    let id = ulid();
    let detail = json!({"count": 3, "note": HTML});
    p.event("grid-07", 1, &id, "new", "crowd", HTML, &["<script>alert(2)</script>"], Some(detail.clone()));
    // At least once: the same message again changes nothing.
    p.event("grid-07", 1, &id, "new", "crowd", HTML, &["<script>alert(2)</script>"], Some(detail));
    // A picture whose bytes do not match the sha256 its event names is kept, flagged.
    let id2 = ulid();
    let topic = format!("gridwatch/grid-07/snapshots/{id2}-1");
    p.send(&topic, b"not the picture".to_vec(), false);
    let bad = json!({"schema": "gridwatch.event/1", "seq": 2, "event_id": id2, "type": "new", "kind": "object",
        "site": "grid-07", "camera": "gate", "label": "person", "score": 0.7, "box": [0, 0, 1, 1], "zones": [],
        "started_at": "2026-11-30T08:00:00.000Z", "at": "2026-11-30T08:00:00.000Z", "ended_at": null,
        "snapshot": {"topic": topic, "sha256": "0".repeat(64), "bytes": 15, "width": 1, "height": 1}});
    p.send("gridwatch/grid-07/events", bad.to_string().into_bytes(), false);
    let s = Session::login(desk.port, "view", PASSWORD);
    let events = wait_for(Duration::from_secs(5), || {
        let v = s.get("/api/events").json();
        (v.as_array()?.len() == 2).then_some(v)
    })
    .expect("two events stored");
    let e = events.as_array().unwrap().iter().find(|e| e["event_id"] == id.as_str()).unwrap();
    assert_eq!(e["label"], HTML, "stored as sent");
    assert_eq!(e["seq_first"], 1);
    let flagged = events.as_array().unwrap().iter().find(|e| e["event_id"] == id2.as_str()).unwrap();
    assert_eq!(flagged["snapshot_status"], json!(["mismatch"]));
    let db = desk.db();
    let n: i64 = db.query_row("SELECT count(*) FROM messages", [], |r| r.get(0)).unwrap();
    assert_eq!(n, 2, "the repeat was not stored twice");
    for page in ["/feed", "/history", &format!("/events/grid-07/{id}"), "/", "/incidents", "/sites/grid-07"] {
        let html = s.get(page).text();
        assert!(!html.contains("<img src=x") && !html.contains("<script>alert"), "{page} carries live HTML");
    }
    let feed = s.get("/feed").text();
    assert!(feed.contains("&lt;img src=x onerror=alert(1)&gt;"), "the label shows as text");
    let event = s.get(&format!("/events/grid-07/{id}")).text();
    assert!(event.contains("&lt;script&gt;alert(2)&lt;/script&gt;"), "the zone shows as text");
    assert!(s.get("/").text().contains("第七网格 · 东门 &lt;img"), "the site name shows as text");
}

/// The ingest check: 22 simulated sites publish for 60 s; the desk is killed
/// and restarted, and separately the broker; afterwards the desk holds exactly the
/// `(site, seq)` set the simulator got PUBACKs for, each once.
#[test]
fn ingest_loses_nothing_across_desk_and_broker_restarts() {
    let mut mq = broker();
    let dir = scratch("desk-lossless");
    let config = desk_config(&dir, mq.port(), "");
    add_user(&config, "view", "viewer");
    let mut desk = DeskProc::start(&dir, &config);
    let log = dir.join("published.log");
    let mut sim = Sim::start(mq.port(), &["--sites", "22", "--rate", "0.3", "--log", log.to_str().unwrap()]);
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_secs(15));
    desk.kill(); // SIGKILL: whatever was not stored was not acknowledged either
    std::thread::sleep(Duration::from_secs(10));
    desk.spawn();
    std::thread::sleep(Duration::from_secs(10));
    mq.restart().unwrap(); // SIGTERM (the broker saves sessions and queues), then up again
    std::thread::sleep(Duration::from_secs(60).saturating_sub(t0.elapsed()));
    sim.stop();
    let published: BTreeSet<(String, i64)> = logged(&log).into_iter().collect();
    assert!(published.len() > 300, "the simulator published {} events", published.len());
    assert_eq!(published.iter().map(|(s, _)| s).collect::<BTreeSet<_>>().len(), 22);
    let db = desk.db();
    let stored = wait_for(Duration::from_secs(30), || {
        let mut st = db.prepare("SELECT site, seq FROM messages").unwrap();
        let rows: Vec<(String, i64)> =
            st.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).unwrap().map(Result::unwrap).collect();
        (rows.len() >= published.len()).then_some(rows)
    })
    .unwrap_or_default();
    let set: BTreeSet<(String, i64)> = stored.iter().cloned().collect();
    assert_eq!(set.len(), stored.len(), "no (site, seq) stored twice");
    let missing: Vec<_> = published.difference(&set).take(10).collect();
    let extra: Vec<_> = set.difference(&published).take(10).collect();
    assert!(missing.is_empty() && extra.is_empty(), "missing {missing:?}, extra {extra:?} of {}", published.len());
    // One record per event, every message of it on its timeline.
    let events: i64 = db.query_row("SELECT count(*) FROM events", [], |r| r.get(0)).unwrap();
    let ids: i64 = db.query_row("SELECT count(DISTINCT site || event_id) FROM messages", [], |r| r.get(0)).unwrap();
    assert_eq!(events, ids);
    let unlinked: i64 = db.query_row("SELECT count(*) FROM files WHERE status != 'ok'", [], |r| r.get(0)).unwrap();
    assert_eq!(unlinked, 0, "every picture arrived and matched its sha256");
    eprintln!(
        "desk ingest: {} event messages from 22 sites in {:.0} s, desk and broker restarted, none lost",
        published.len(),
        t0.elapsed().as_secs_f64()
    );
}

#[test]
fn operator_claims_and_resolves_viewer_cannot_and_unclaimed_alerts_escalate() {
    let mq = broker();
    let desk = desk_with_users("desk-incidents", mq.port(), "[alerts]\nescalate_after_s = 3\n");
    let mut watcher = Desk::connect(mq.port());
    let p = Publisher::connect(mq.port(), "inc-device");
    let (a, b, obj) = (ulid(), ulid(), ulid());
    p.event("grid-01", 1, &a, "new", "intrusion", "person", &["yard"], Some(json!({"schedule": "22:00-06:00"})));
    p.event("grid-01", 2, &b, "new", "loitering", "person", &["yard"], Some(json!({"dwell_s": 61})));
    p.event("grid-01", 3, &obj, "new", "object", "person", &[], None);
    let op = Session::login(desk.port, "op", PASSWORD);
    let viewer = Session::login(desk.port, "view", PASSWORD);
    let open = wait_for(Duration::from_secs(5), || {
        let v = op.get("/api/events?state=open").json();
        (v.as_array()?.len() == 2).then_some(v)
    });
    assert!(open.is_some(), "two alert kinds open incidents, an object event none");
    assert_eq!(viewer.post_json(&format!("/api/incidents/grid-01/{a}/claim"), &json!({})).status, 403);
    assert_eq!(op.post_json(&format!("/api/incidents/grid-01/{a}/claim"), &json!({})).status, 200);
    assert_eq!(op.post_json(&format!("/api/incidents/grid-01/{a}/claim"), &json!({})).status, 409, "claimed once");
    let r = op.post_json(&format!("/api/incidents/grid-01/{a}/resolve"), &json!({"resolution": "nonsense"}));
    assert_eq!(r.status, 400);
    let r = op.post_json(
        &format!("/api/incidents/grid-01/{a}/resolve"),
        &json!({"resolution": "false_alarm", "note": "风吹动的广告牌"}),
    );
    assert_eq!(r.status, 200);
    let e = &op.get(&format!("/api/events/grid-01/{a}")).json();
    let inc = &e["event"]["incident"];
    assert_eq!(
        (inc["state"].as_str(), inc["claimed_by"].as_str(), inc["resolved_by"].as_str()),
        (Some("resolved"), Some("op"), Some("op"))
    );
    assert_eq!((inc["resolution"].as_str(), inc["note"].as_str()), (Some("false_alarm"), Some("风吹动的广告牌")));
    assert!(inc["claimed_at"].is_string() && inc["resolved_at"].is_string());
    let steps: Vec<&str> =
        e["incident_log"].as_array().unwrap().iter().map(|s| s["action"].as_str().unwrap()).collect();
    assert_eq!(steps, ["opened", "claimed", "false_alarm"]);
    // The other one nobody claims: escalated after 3 s, on the API and as a retained message.
    let escalated = wait_for(Duration::from_secs(10), || {
        let v = op.get(&format!("/api/events/grid-01/{b}")).json();
        v["event"]["incident"]["escalated_at"].as_str().map(str::to_owned)
    });
    assert!(escalated.is_some(), "the unclaimed loitering alert escalated");
    let got = watcher.wait_for(Duration::from_secs(5), |seen| {
        seen.iter().any(|m| m.topic == "gridwatch/desk/escalations" && String::from_utf8_lossy(&m.payload).contains(&b))
    });
    assert!(got, "a retained gridwatch/desk/escalations message names it");
    let audit = op.get("/api/audit?limit=50").json();
    let who: HashMap<String, String> = audit
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["action"].as_str().unwrap_or("").to_owned(), r["user"].as_str().unwrap_or("").to_owned()))
        .collect();
    assert_eq!(who.get("claim").map(String::as_str), Some("op"));
    assert_eq!(who.get("resolve").map(String::as_str), Some("op"));
}

/// A hand-made event without a picture, started at `started` (for filters by time).
fn plain_event(site: &str, seq: u64, camera: &str, kind: &str, label: &str, started: &str) -> serde_json::Value {
    json!({"schema": "gridwatch.event/1", "seq": seq, "event_id": ulid(), "type": "new", "kind": kind,
        "site": site, "camera": camera, "label": label, "score": 0.7, "box": [0, 0, 1, 1], "zones": [],
        "started_at": started, "at": started, "ended_at": null, "snapshot": null})
}

fn count(s: &Session, path: &str) -> usize {
    let r = s.get(path);
    assert_eq!(r.status, 200, "{path}: {}", r.text());
    r.json().as_array().map_or(0, Vec::len)
}

/// History (filters, paging, CSV), the report (counts, stats, chart, CSV), the site
/// page (cameras, health changes, command buttons by role) and the audit log, on
/// events with known days, cameras and kinds.
#[test]
fn history_report_site_page_and_audit_show_what_was_stored() {
    let mq = broker();
    let desk = desk_with_users("desk-history", mq.port(), "[[sites]]\nid = \"s-a\"\nname = \"甲网格 · 北门\"\n");
    let p = Publisher::connect(mq.port(), "hist-device");
    let plan = [
        ("s-a", 1, "cam-1", "object", "person", "2026-11-28T08:00:00.000Z"),
        ("s-a", 2, "cam-1", "object", "person", "2026-11-28T09:00:00.000Z"),
        ("s-a", 3, "cam-1", "object", "person", "2026-11-28T10:00:00.000Z"),
        ("s-a", 4, "cam-2", "intrusion", "person", "2026-11-29T01:00:00.000Z"),
        ("s-b", 1, "cam-1", "object", "car", "2026-11-29T02:00:00.000Z"),
        ("s-b", 2, "cam-1", "object", "car", "2026-11-29T23:59:59.000Z"),
        ("s-b", 3, "cam-1", "crowd", "person", "2026-11-30T03:00:00.000Z"),
        ("s-b", 4, "cam-1", "object", "=1+2", "2026-11-27T03:00:00.000Z"),
    ];
    for (site, seq, cam, kind, label, at) in plan {
        let e = plain_event(site, seq, cam, kind, label, at);
        p.send(&format!("gridwatch/{site}/events"), e.to_string().into_bytes(), false);
    }
    for (seq, i, o, peak) in [(1, 5, 3, 4), (2, 2, 1, 7)] {
        let stats = json!({"schema": "gridwatch.stats/1", "seq": seq, "site": "s-a", "camera": "cam-1",
            "period_start": "2026-11-28T08:00:00.000Z", "period_end": "2026-11-28T08:05:00.000Z",
            "lines": {"gate": {"person": {"in": i, "out": o}}}, "zones": {"yard": {"person": {"peak": peak, "mean": 1.0}}}});
        p.send("gridwatch/s-a/stats", stats.to_string().into_bytes(), false);
    }
    let info = json!({"schema": "gridwatch.info/1", "version": "t", "site": "s-a", "started_at": "2026-11-28T00:00:00.000Z",
        "cameras": [{"id": "cam-1", "name": "北门 <i>1</i>"}], "model": {"name": "m", "sha256": "0"}});
    p.send("gridwatch/s-a/info", info.to_string().into_bytes(), true);
    for state in ["streaming", "reconnecting"] {
        let h = json!({"camera": "cam-1", "state": state, "since": "2026-11-28T00:00:00.000Z", "fps_in": 25.0,
            "fps_analyzed": 5.0, "frames_skipped": 0, "frames_analyzed": 0, "frames_gated": 0, "reconnects_1h": 0,
            "stalls_1h": 0, "decode_errors": 0, "packets_lost": 0, "snapshots_evicted": 0, "events_evicted": 0});
        p.send("gridwatch/s-a/cam-1/health", h.to_string().into_bytes(), true);
    }
    let op = Session::login(desk.port, "op", PASSWORD);
    let viewer = Session::login(desk.port, "view", PASSWORD);
    wait_for(Duration::from_secs(5), || (count(&op, "/api/events") == 8).then_some(())).expect("8 events stored");

    // Filters, alone and together, and the time bounds.
    for (q, want) in [
        ("site=s-a", 4),
        ("camera=cam-2", 1),
        ("kind=object&label=car", 2),
        ("from=2026-11-29&to=2026-11-29", 3),
        ("from=2026-11-29T02:00:00Z", 3),
        ("before=2026-11-29T00:00:00Z", 4),
        ("state=open", 2),
        ("state=none", 6),
        ("site=s-b&kind=crowd&state=open", 1),
        ("limit=2", 2),
        ("label=nobody", 0),
    ] {
        assert_eq!(count(&op, &format!("/api/events?{q}")), want, "/api/events?{q}");
    }
    let newest = op.get("/api/events?limit=1").json();
    assert_eq!(newest[0]["kind"], "crowd", "newest first");
    for bad in ["site=A%20b", "state=gone", "from=yesterday", "limit=abc", "page=100001"] {
        assert_eq!(op.get(&format!("/api/events?{bad}")).status, 400, "{bad} refused");
        assert_eq!(op.get(&format!("/history?{bad}")).status, 400, "history?{bad} refused");
    }

    // History pages by 3: 3, 3, 2 rows; "older" until the last page.
    let rows = |html: &str| html.matches("<tr id=\"ev-").count();
    let pages: Vec<String> = (0..3).map(|n| op.get(&format!("/history?limit=3&page={n}")).text()).collect();
    assert_eq!(pages.iter().map(|h| rows(h)).collect::<Vec<_>>(), [3, 3, 2]);
    assert!(pages[0].contains("page=1\"") && !pages[2].contains("page=3\""), "paging links");
    assert!(pages[1].contains("<th>"), "the table has headers");

    // CSV of the result: a header, one line per event, the site's name, no formula.
    let csv = op.get("/history.csv?site=s-b").text();
    assert!(csv.starts_with('\u{feff}'));
    let lines: Vec<&str> = csv.trim_end().lines().collect();
    assert_eq!(lines.len(), 1 + 4, "{csv}");
    assert!(lines[0].contains("\"event_id\""));
    assert!(csv.contains("\"'=1+2\""), "a formula-looking label is defused: {csv}");
    assert!(op.get("/history.csv?site=s-a").text().contains("甲网格 · 北门"));

    // The report: counts per day and site, stats figures, the chart, the CSV.
    let report = op.get("/report?from=2026-11-27&to=2026-11-30").text();
    assert!(report.contains("<svg") && report.contains("table class=\"lines\""), "chart and line counts");
    assert!(
        report.contains("name=\"from\" value=\"2026-11-27\"") && report.contains("name=\"to\" value=\"2026-11-30\""),
        "the form shows the days asked for, as the desk writes days"
    );
    let history = op.get("/history").text();
    assert!(
        history.contains("name=\"from\" value=\"\" placeholder=\"年-月-日\""),
        "an empty date field hints at the form, not at a date that looks like a set filter"
    );
    let csv = op.get("/report.csv?from=2026-11-27&to=2026-11-30").text();
    for line in [
        "\"2026-11-28\",\"s-a\",\"甲网格 · 北门\",\"object\",\"3\"",
        "\"2026-11-29\",\"s-b\",\"s-b\",\"object\",\"2\"",
        "\"2026-11-29\",\"s-a\",\"甲网格 · 北门\",\"intrusion\",\"1\"",
        "\"2026-11-28\",\"s-a\",\"甲网格 · 北门\",\"line gate/person in\",\"7\"",
        "\"2026-11-28\",\"s-a\",\"甲网格 · 北门\",\"zone yard/person peak\",\"7\"",
    ] {
        assert!(csv.contains(line), "report.csv lacks {line}:\n{csv}");
    }
    let one_day = op.get("/report.csv?from=2026-11-30&to=2026-11-30").text();
    assert_eq!(one_day.trim_end().lines().count(), 2, "one day, one row: {one_day}");
    assert_eq!(op.get("/report?from=30.11.2026").status, 400);

    // The site page: its camera (name as text), its health changes, buttons by role.
    let site = op.get("/sites/s-a").text();
    assert!(site.contains("北门 &lt;i&gt;1&lt;/i&gt;"), "camera name as text");
    assert!(site.matches("<li>").count() >= 2, "two health changes listed");
    assert!(site.contains("/sites/s-a/cam-1/detect_off"), "an operator may pause detection");
    assert!(!viewer.get("/sites/s-a").text().contains("/detect_off"), "a viewer gets no buttons");
    assert_eq!(op.get("/sites/nowhere").status, 404);

    // The audit log: actions by whom, for operators only.
    let open = op.get("/api/events?state=open&site=s-a").json();
    let id = open[0]["event_id"].as_str().unwrap().to_owned();
    assert_eq!(viewer.post_json(&format!("/api/incidents/s-a/{id}/claim"), &json!({})).status, 403);
    assert_eq!(op.post_json(&format!("/api/incidents/s-a/{id}/claim"), &json!({})).status, 200);
    assert_eq!(viewer.get("/audit").status, 403);
    assert_eq!(viewer.get("/api/audit").status, 403);
    let audit = op.get("/audit").text();
    assert!(audit.contains("data-action=\"claim\"") && audit.contains(&format!("s-a/{id}")), "claim audited");
    assert!(audit.contains("data-action=\"login\""), "logins audited");
}

/// `gridwatch demo` starts the desk beside the real pipeline: the printed URL answers,
/// the printed login works, and 22 sites report in (21 simulated and the demo's own).
#[test]
fn demo_prints_a_desk_and_a_login_that_show_22_sites() {
    use std::io::BufRead;
    let dir = scratch("desk-demo");
    let log = dir.join("demo.log");
    let child = std::process::Command::new(crate::support::BIN)
        .args(["demo", "--seconds", "120", "--out"])
        .arg(dir.join("snapshots"))
        .env("GRIDWATCH_LOG", "info")
        .stdout(std::process::Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let mut demo = Demo { child, log };
    let mut out = std::io::BufReader::new(demo.child.stdout.take().unwrap());
    let (mut port, mut password) = (None, None);
    let mut line = String::new();
    while password.is_none() && out.read_line(&mut line).unwrap() > 0 {
        if let Some(rest) = line.trim().strip_prefix("desk     http://127.0.0.1:") {
            port = rest.split('/').next().and_then(|p| p.parse::<u16>().ok());
        }
        if let Some(rest) = line.trim().strip_prefix("login    user demo  password ") {
            password = rest.split_whitespace().next().map(str::to_owned);
        }
        line.clear();
    }
    let (port, password) = (port.expect("a desk URL printed"), password.expect("a login printed"));
    assert!(password.len() >= 12);
    assert_eq!(login_raw(port, "demo", "not-the-password").status, 401);
    let s = Session::login(port, "demo", &password);
    let online = wait_for(Duration::from_secs(60), || {
        let v = s.get("/api/sites").json();
        let n = v.as_array()?.iter().filter(|x| x["status"] == "online").count();
        (n == 22).then_some(v)
    });
    // Everything asked of the desk before it is stopped: it goes away fast.
    let all_online = online.is_some();
    let v = online.unwrap_or_else(|| s.get("/api/sites").json());
    let tiles = s.get("/").text().matches("class=\"tile").count();
    // SAFETY: kill only sends SIGTERM to our own child, whose pid we hold.
    unsafe { libc::kill(demo.child.id() as i32, libc::SIGTERM) };
    let ids: Vec<String> = v.as_array().unwrap().iter().map(|x| format!("{} {}", x["site"], x["status"])).collect();
    assert!(all_online, "22 sites online: {ids:?}");
    assert!(ids.iter().any(|i| i.starts_with("\"demo\"")), "the real pipeline's site: {ids:?}");
    assert_eq!(tiles, 22, "22 tiles on the wall");
    let done = wait_for(Duration::from_secs(20), || demo.child.try_wait().unwrap());
    assert!(done.is_some_and(|s| s.success()), "the demo stops cleanly on SIGTERM: {done:?}");
}

/// The demo as a child process: killed when the test ends, its log shown if it failed.
struct Demo {
    child: std::process::Child,
    log: std::path::PathBuf,
}

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            eprintln!("--- the demo's log, last lines ---");
            tail.iter().rev().for_each(|l| eprintln!("{l}"));
        }
    }
}

/// The console in headless Chromium: 22 tiles fit a 1920x1080 wall; a site whose
/// process is SIGKILLed shows offline within keep-alive x 1.5 + 2 s and online again
/// when it returns; events show in the feed within 2 s of their PUBACK, pictures load,
/// an update changes its row in place, an end shows the duration; an operator claims
/// and resolves in the browser; injected HTML is text in the DOM; screenshots go to docs/.
#[test]
fn browser_wall_feed_claim_and_screenshots() {
    let mq = broker();
    let mut extra = String::new();
    for n in 1..=22 {
        let name = match n {
            7 => "第七网格 · 东门".to_owned(),
            13 => format!("十三网格 {HTML}"),
            _ => format!("第{n}网格 · 社区"),
        };
        extra += &format!("[[sites]]\nid = \"sim-{n:02}\"\nname = \"{name}\"\ngroup = \"东片\"\n");
    }
    let desk = desk_with_users("desk-browser", mq.port(), &extra);
    let base = format!("http://127.0.0.1:{}", desk.port);
    let _many = Sim::start(mq.port(), &["--sites", "21", "--rate", "0.05"]);
    let mut lone = Sim::start(mq.port(), &["--sites", "1", "--first", "22", "--rate", "0.05", "--keep-alive-s", "5"]);
    let b = Browser::start(&scratch("desk-browser-chromium"));

    // Not logged in: the login page, in Chinese.
    b.goto(&format!("{base}/"));
    assert!(b.js("return location.pathname").as_str() == Some("/login"));
    assert_eq!(b.js("return document.documentElement.lang"), "zh-CN");
    b.type_into("input[name=user]", "op");
    b.type_into("input[name=password]", PASSWORD);
    b.click("form.login button");
    let tiles = wait_for(Duration::from_secs(15), || {
        let n = b.js("return document.querySelectorAll('section.tile.status-online').length").as_u64()?;
        (n == 22).then_some(n)
    });
    let seen = b.js("return location.pathname + ' ' + document.querySelectorAll('section.tile').length + ' ' + document.querySelectorAll('section.tile.status-online').length");
    assert_eq!(tiles, Some(22), "22 online tiles; the page shows {seen}");
    let fits = b.js("return [document.documentElement.scrollHeight, window.innerHeight, document.documentElement.scrollWidth, window.innerWidth]");
    let f: Vec<u64> = fits.as_array().unwrap().iter().map(|v| v.as_u64().unwrap()).collect();
    assert!(f[0] <= f[1] && f[2] <= f[3], "the wall scrolls at 1920x1080: {f:?}");
    // A 1366x768 laptop: more rows, but never sideways.
    b.resize(1366, 768);
    std::thread::sleep(Duration::from_millis(300));
    let laptop = b.js("return [document.documentElement.scrollWidth, window.innerWidth, window.outerWidth]");
    let l: Vec<u64> = laptop.as_array().unwrap().iter().map(|v| v.as_u64().unwrap()).collect();
    assert!(l[2] == 1366 && l[0] <= l[1], "the wall scrolls sideways at 1366x768: {l:?}");
    b.resize(1920, 1080);
    std::thread::sleep(Duration::from_millis(300));
    let name13 = b.js("return document.querySelector('#site-sim-13 .name').textContent");
    assert_eq!(name13.as_str().unwrap(), format!("十三网格 {HTML}"));
    assert_eq!(b.js("return document.querySelectorAll('#site-sim-13 .name img').length"), 0);

    // SIGKILL: the will fires; offline shows within 5 x 1.5 + 2 s.
    lone.signal(libc::SIGKILL);
    let killed = Instant::now();
    let offline = wait_for(Duration::from_secs(20), || {
        b.js("return document.querySelector('#site-sim-22.status-offline') !== null").as_bool().filter(|x| *x)
    });
    let took = killed.elapsed();
    assert!(offline.is_some(), "the killed site shows offline");
    assert!(took <= Duration::from_millis(9500), "offline after {took:?}");
    assert_eq!(b.js("return document.querySelector('section.tile').id"), "site-sim-22", "sites in trouble first");
    std::thread::sleep(Duration::from_secs(1));
    std::fs::create_dir_all(docs()).unwrap();
    b.screenshot(&docs().join("desk-wall.png"));
    let _back = Sim::start(mq.port(), &["--sites", "1", "--first", "22", "--rate", "0.05"]);
    let online = wait_for(Duration::from_secs(10), || {
        b.js("return document.querySelector('#site-sim-22.status-online') !== null").as_bool().filter(|x| *x)
    });
    assert!(online.is_some(), "back online");
    eprintln!("desk wall: offline shown {:.1} s after SIGKILL (bound 9.5 s)", took.as_secs_f64());

    // The feed, live.
    b.goto(&format!("{base}/feed?site=grid-x"));
    let p = Publisher::connect(mq.port(), "browser-device");
    let id = ulid();
    let acked = p.event("grid-x", 1, &id, "new", "intrusion", HTML, &["<b>yard</b>"], Some(json!({"note": HTML})));
    let row = format!("#ev-grid-x-{id}");
    let shown = wait_for(Duration::from_secs(5), || {
        b.js(&format!("return document.querySelector('{row}') !== null")).as_bool().filter(|x| *x)
    });
    let delay = acked.elapsed();
    assert!(shown.is_some(), "the event row appeared");
    assert!(delay <= Duration::from_secs(2), "feed row {delay:?} after PUBACK");
    eprintln!("desk feed: row shown {:.0} ms after the PUBACK (checked every 100 ms)", delay.as_secs_f64() * 1000.0);
    let loaded = wait_for(Duration::from_secs(5), || {
        b.js(&format!("const i = document.querySelector('{row} img'); return i && i.complete && i.naturalWidth > 0"))
            .as_bool()
            .filter(|x| *x)
    });
    assert!(loaded.is_some(), "the thumbnail loaded");
    assert_eq!(b.js(&format!("return document.querySelector('{row} td.label').textContent")), HTML);
    assert_eq!(b.js(&format!("return document.querySelectorAll('{row} td.label *, {row} td.zones *').length")), 0);
    p.event("grid-x", 2, &id, "update", "intrusion", HTML, &["<b>yard</b>"], None);
    let updated = wait_for(Duration::from_secs(5), || {
        b.js(&format!("const r = document.querySelector('{row}'); return r && r.dataset.type === 'update'"))
            .as_bool()
            .filter(|x| *x)
    });
    assert!(updated.is_some(), "the update changed the row");
    assert_eq!(b.js("return document.querySelectorAll('#feed-rows tr').length"), 1, "in place: still one row");
    p.event("grid-x", 3, &id, "end", "intrusion", HTML, &["<b>yard</b>"], None);
    let duration = wait_for(Duration::from_secs(5), || {
        let d = b.js(&format!("const r = document.querySelector('{row} td.duration'); return r ? r.textContent : ''"));
        d.as_str().filter(|d| *d == "1m05s").map(str::to_owned)
    });
    assert!(duration.is_some(), "the end shows the duration");

    // Claim and resolve in the browser.
    b.goto(&format!("{base}/incidents"));
    b.click(&format!("{row} button.claim"));
    let claimed = wait_for(Duration::from_secs(5), || {
        b.js(&format!("const r = document.querySelector('{row} .inc-claimed'); return r !== null"))
            .as_bool()
            .filter(|x| *x)
    });
    assert!(claimed.is_some(), "claimed in the browser");
    b.type_into(&format!("{row} input[name=note]"), "已到场处置");
    b.click(&format!("{row} button.resolve"));
    let op = Session::login(desk.port, "boss", PASSWORD);
    let inc = wait_for(Duration::from_secs(5), || {
        let v = op.get(&format!("/api/events/grid-x/{id}")).json();
        let i = v["event"]["incident"].clone();
        (i["state"] == "resolved").then_some(i)
    })
    .expect("resolved in the browser");
    assert_eq!(
        (inc["claimed_by"].as_str(), inc["resolved_by"].as_str(), inc["note"].as_str()),
        (Some("op"), Some("op"), Some("已到场处置"))
    );
    b.goto(&format!("{base}/audit"));
    let audit = b.js("return [...document.querySelectorAll('table.audit tr[data-action]')].map(r => r.dataset.action + ' ' + r.cells[1].textContent).join(', ')");
    let audit = audit.as_str().unwrap();
    assert!(audit.contains("claim op") && audit.contains("resolve op"), "{audit}");

    // The event page, with its picture, detail and history.
    b.goto(&format!("{base}/events/grid-x/{id}"));
    assert_eq!(b.js("return document.querySelectorAll('table.detail img, table.detail script').length"), 0);
    let shot = wait_for(Duration::from_secs(5), || {
        b.js("const i = document.querySelector('.pictures img'); return i && i.complete && i.naturalWidth > 0")
            .as_bool()
            .filter(|x| *x)
    });
    assert!(shot.is_some(), "the snapshot loaded");
    b.screenshot(&docs().join("desk-event.png"));
}

fn docs() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs")
}

/// Issue 15 in headless Chromium: the site page's buttons publish the contract's
/// command topics and payloads; the states the device publishes show live; a fresh
/// picture the device sends back is shown (to logged-in users only); a command error
/// shows as text; a notice composed in the browser arrives retained on each targeted
/// site's topic (and one to all on `all/notices`); receipts show live on the notices
/// page; a withdrawn notice is cleared from its topic; sending is audited.
#[test]
fn browser_site_commands_fresh_picture_and_notices() {
    let mq = broker();
    let extra = "[[sites]]\nid = \"s-a\"\nname = \"甲网格\"\ngroup = \"东片\"\n\
                 [[sites]]\nid = \"s-b\"\nname = \"乙网格\"\ngroup = \"东片\"\n\
                 [[sites]]\nid = \"s-c\"\nname = \"丙网格\"\n";
    let desk = desk_with_users("desk-talk", mq.port(), extra);
    let base = format!("http://127.0.0.1:{}", desk.port);
    let dev = Publisher::connect(mq.port(), "talk-device");
    let info = json!({"schema": "gridwatch.info/1", "version": "t", "site": "s-a", "started_at": "2026-11-30T00:00:00.000Z",
        "cameras": [{"id": "cam-1", "name": "东门"}], "model": {"name": "m", "sha256": "0"}});
    dev.send("gridwatch/s-a/info", info.to_string().into_bytes(), true);
    let h = json!({"camera": "cam-1", "state": "streaming", "since": "2026-11-30T00:00:00.000Z", "fps_in": 25.0,
        "fps_analyzed": 5.0, "frames_skipped": 0, "frames_analyzed": 0, "frames_gated": 0, "reconnects_1h": 0,
        "stalls_1h": 0, "decode_errors": 0, "packets_lost": 0, "snapshots_evicted": 0, "events_evicted": 0});
    dev.send("gridwatch/s-a/cam-1/health", h.to_string().into_bytes(), true);
    for site in ["s-a", "s-b", "s-c"] {
        dev.send(&format!("gridwatch/{site}/status"), b"online".to_vec(), true);
    }
    dev.send("gridwatch/s-a/cam-1/detect/state", b"ON".to_vec(), true);
    dev.send("gridwatch/s-a/cam-1/rules/yard/intrusion/state", b"ON".to_vec(), true);
    let err = json!({"schema": "gridwatch.command_error/1", "topic": "gridwatch/s-a/cam-9/detect/set",
        "reason": HTML, "at": "2026-11-30T08:00:00.000Z"});
    dev.send("gridwatch/s-a/command_errors", err.to_string().into_bytes(), false);
    let watch = Subscriber::connect(
        mq.port(),
        "talk-watch",
        &["gridwatch/+/+/detect/set", "gridwatch/+/+/rules/+/+/set", "gridwatch/+/+/snapshot/request"],
    );

    let b = Browser::start(&scratch("desk-talk-chromium"));
    b.goto(&format!("{base}/login"));
    b.type_into("input[name=user]", "op");
    b.type_into("input[name=password]", PASSWORD);
    b.click("form.login button");
    wait_for(Duration::from_secs(5), || (b.js("return location.pathname").as_str() == Some("/")).then_some(()))
        .expect("logged in");
    b.goto(&format!("{base}/sites/s-a"));
    let state = |sel: &str| {
        b.js(&format!("const e = document.querySelector({}); return e ? e.dataset.state : null", json!(sel)))
    };
    wait_for(Duration::from_secs(5), || (state("#cam-cam-1 p.detect") == "ON").then_some(()))
        .expect("the retained detect state shows");
    assert_eq!(state("tr[data-rule='yard/intrusion']"), "ON", "the rule's retained state shows");
    assert_eq!(b.js("return document.querySelector('table.command-errors td.reason').textContent"), HTML);
    assert_eq!(b.js("return document.querySelectorAll('table.command-errors img').length"), 0, "as text");

    // Pause: the contract's topic and payload; the device's answer shows live.
    b.click("#cam-cam-1 button.detect-off");
    let (p, _) = watch.next_on("gridwatch/s-a/cam-1/detect/set", Duration::from_secs(5)).expect("detect/set sent");
    assert_eq!(p, b"OFF");
    dev.send("gridwatch/s-a/cam-1/detect/state", b"OFF".to_vec(), true);
    wait_for(Duration::from_secs(5), || (state("#cam-cam-1 p.detect") == "OFF").then_some(()))
        .expect("paused shows without a reload");
    b.click("#cam-cam-1 button.detect-on");
    let (p, _) = watch.next_on("gridwatch/s-a/cam-1/detect/set", Duration::from_secs(5)).expect("detect/set sent");
    assert_eq!(p, b"ON");

    // Disarm the rule.
    b.click("tr[data-rule='yard/intrusion'] button.disarm");
    let (p, _) =
        watch.next_on("gridwatch/s-a/cam-1/rules/yard/intrusion/set", Duration::from_secs(5)).expect("rule set sent");
    assert_eq!(p, b"OFF");

    // A fresh picture: the request, the JPEG back on its request id, shown on the page.
    b.click("#cam-cam-1 button.snapshot");
    let (p, _) = watch.next_on("gridwatch/s-a/cam-1/snapshot/request", Duration::from_secs(5)).expect("request sent");
    let req: serde_json::Value = serde_json::from_slice(&p).unwrap();
    let rid = req["request_id"].as_str().expect("request_id").to_owned();
    assert!(
        (1..=64).contains(&rid.len()) && rid.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b'-'),
        "{rid}"
    );
    let jpeg = std::fs::read(crate::support::fixture("photos/darknet_person.jpg")).unwrap();
    dev.send("gridwatch/s-a/cam-1/snapshot/not-asked-for", jpeg.clone(), false);
    dev.send(&format!("gridwatch/s-a/cam-1/snapshot/{rid}"), jpeg.clone(), false);
    let shown = wait_for(Duration::from_secs(5), || {
        b.js("const i = document.querySelector('#cam-cam-1 img.fresh'); return i && i.complete && i.naturalWidth > 0")
            .as_bool()
            .filter(|x| *x)
    });
    assert!(shown.is_some(), "the fresh picture shows");
    let src = b.js("return document.querySelector('#cam-cam-1 img.fresh').getAttribute('src')");
    let src = src.as_str().unwrap().to_owned();
    assert!(src.ends_with(&rid), "{src}");
    let op = Session::login(desk.port, "op", PASSWORD);
    assert_eq!(op.get(&src).body, jpeg, "the device's bytes");
    assert_eq!(op.get("/live/s-a/cam-1/not-asked-for").status, 404, "a picture nobody asked for is not kept");

    // An event without a clip: asked for from its page, and the grid point's MP4 (a real
    // one: 2 s of the street clip) plays there when it comes.
    let eid = ulid();
    dev.event("s-a", 1, &eid, "new", "object", "person", &[], None);
    let clips = Subscriber::connect(mq.port(), "talk-clips", &["gridwatch/+/clips/request"]);
    let page = format!("{base}/events/s-a/{eid}");
    wait_for(Duration::from_secs(5), || {
        b.goto(&page);
        (b.js("return document.querySelectorAll('button.request-clip').length") == 1).then_some(())
    })
    .expect("the event's page offers to ask for its clip");
    b.click("button.request-clip");
    let (p, _) = clips.next_on("gridwatch/s-a/clips/request", Duration::from_secs(5)).expect("clip request sent");
    assert_eq!(serde_json::from_slice::<serde_json::Value>(&p).unwrap(), json!({"event_id": eid}));
    let said = wait_for(Duration::from_secs(5), || {
        b.js("const p = document.querySelector('p.clip-asked'); return p ? p.textContent : null")
            .as_str()
            .map(String::from)
    });
    assert_eq!(said.as_deref(), Some("已向网格点发出请求。"), "the page says the request went");
    let mp4 = scratch("desk-talk-clip").join("clip.mp4");
    let made = std::process::Command::new("ffmpeg")
        .args(["-loglevel", "error", "-y", "-f", "h264", "-framerate", "10", "-i"])
        .arg(crate::support::fixture("video/vtest.h264"))
        .args(["-t", "2", "-c", "copy"])
        .arg(&mp4)
        .status()
        .expect("ffmpeg runs (scripts/setup.sh installs it)");
    assert!(made.success());
    let mp4 = std::fs::read(&mp4).unwrap();
    dev.send(&format!("gridwatch/s-a/clips/{eid}"), mp4.clone(), false);
    let duration = wait_for(Duration::from_secs(10), || {
        b.goto(&page);
        std::thread::sleep(Duration::from_millis(300));
        b.js("const v = document.querySelector('video.clip'); return v && v.readyState >= 1 ? v.duration : null")
            .as_f64()
    });
    let duration = duration.expect("the clip plays on the event's page");
    assert!((1.5..=2.5).contains(&duration), "{duration} s");
    let clip_src = b.js("return document.querySelector('video.clip').getAttribute('src')");
    assert_eq!(op.get(clip_src.as_str().unwrap()).body, mp4, "the grid point's bytes");

    // A notice to a group, composed in the browser: retained on each of its sites' topics.
    let notice_sub = |id: &str| Subscriber::connect(mq.port(), id, &["gridwatch/+/notices"]);
    b.goto(&format!("{base}/notices"));
    b.js("document.querySelector('select[name=level]').value = 'urgent';
          document.querySelector('select[name=target]').value = 'group:东片';
          document.querySelector('select[name=minutes]').value = '60'; return 0");
    let text = format!("18:00 前请将车辆移出低洼路段 {HTML}");
    b.type_into("textarea[name=text]", &text);
    // Sent once the broker has passed both on; only then does a new subscriber show
    // what it kept (subscribed earlier, it would get the live copies, not retained).
    let early = notice_sub("talk-notice-0");
    b.click("form.notice button");
    for site in ["s-a", "s-b"] {
        early.next_on(&format!("gridwatch/{site}/notices"), Duration::from_secs(5)).expect("the notice is sent");
    }
    let late = notice_sub("talk-notice-1");
    let got = late.drain(Duration::from_secs(2));
    let topics: BTreeSet<&str> = got.iter().map(|m| m.0.as_str()).collect();
    assert_eq!(topics, BTreeSet::from(["gridwatch/s-a/notices", "gridwatch/s-b/notices"]), "the group's two sites");
    assert!(got.iter().all(|m| m.2), "retained");
    let n: serde_json::Value = serde_json::from_slice(&got[0].1).unwrap();
    assert_eq!(
        (n["schema"].as_str(), n["level"].as_str(), n["text"].as_str()),
        (Some("gridwatch.notice/1"), Some("urgent"), Some(text.as_str()))
    );
    let id = n["notice_id"].as_str().unwrap().to_owned();
    let expires = humantime::parse_rfc3339(n["expires_at"].as_str().unwrap()).unwrap();
    let left = expires.duration_since(std::time::SystemTime::now()).unwrap();
    assert!(left > Duration::from_secs(55 * 60) && left <= Duration::from_secs(3600), "{left:?}");

    // Receipts: shown live, the later one wins, an error as text.
    let receipt = |site: &str, played: serde_json::Value, error: serde_json::Value| {
        let r = json!({"schema": "gridwatch.notice_receipt/1", "notice_id": id, "site": site,
            "received_at": "2026-11-30T08:00:01.000Z", "played_at": played, "error": error});
        dev.send(&format!("gridwatch/{site}/notices/{id}/receipt"), r.to_string().into_bytes(), true);
    };
    let row = |site: &str, cell: &str| {
        b.js(&format!("const c = document.querySelector('#notice-{id} tr[data-site={site}] td.{cell}'); return c ? c.textContent : null"))
    };
    wait_for(Duration::from_secs(5), || (row("s-b", "received") != serde_json::Value::Null).then_some(()))
        .expect("a row per targeted site");
    assert!(row("s-c", "received").is_null(), "s-c was not targeted");
    receipt("s-a", serde_json::Value::Null, serde_json::Value::Null);
    wait_for(Duration::from_secs(5), || row("s-a", "received").as_str().filter(|t| t.contains(':')).map(|_| ()))
        .expect("the receipt shows live");
    assert_eq!(row("s-a", "played"), "", "not played yet");
    receipt("s-a", json!("2026-11-30T08:00:09.000Z"), serde_json::Value::Null);
    wait_for(Duration::from_secs(5), || row("s-a", "played").as_str().filter(|t| !t.is_empty()).map(|_| ()))
        .expect("the later receipt wins");
    receipt("s-b", serde_json::Value::Null, json!(HTML));
    wait_for(Duration::from_secs(5), || (row("s-b", "error") == HTML).then_some(())).expect("the error as text");
    assert_eq!(b.js(&format!("return document.querySelectorAll('#notice-{id} img, #notice-{id} p.text *').length")), 0);
    assert_eq!(b.js(&format!("return document.querySelector('#notice-{id} .by').textContent")), "op", "who sent it");

    // One to all, by the API: one retained message on all/notices.
    let early = Subscriber::connect(mq.port(), "talk-notice-all-0", &["gridwatch/all/notices"]);
    let all =
        op.post_json("/api/notices", &json!({"level": "info", "text": "全体通知", "minutes": 30, "target": "all"}));
    assert_eq!(all.status, 200, "{}", all.text());
    let all_id = all.json()["notice_id"].as_str().unwrap().to_owned();
    early.next_on("gridwatch/all/notices", Duration::from_secs(5)).expect("the notice is sent");
    let sub = Subscriber::connect(mq.port(), "talk-notice-2", &["gridwatch/all/notices"]);
    let (p, retained) = sub.next_on("gridwatch/all/notices", Duration::from_secs(3)).expect("on all/notices");
    assert!(retained);
    assert_eq!(serde_json::from_slice::<serde_json::Value>(&p).unwrap()["notice_id"], all_id.as_str());
    assert_eq!(
        op.post_json("/api/notices", &json!({"level": "info", "text": "", "minutes": 30, "target": "all"})).status,
        400
    );
    let viewer = Session::login(desk.port, "view", PASSWORD);
    let refused =
        viewer.post_json("/api/notices", &json!({"level": "info", "text": "x", "minutes": 30, "target": "all"}));
    assert_eq!(refused.status, 403, "a viewer sends no notice");

    // Withdrawn: the group's topics no longer carry it.
    assert_eq!(op.post_json(&format!("/api/notices/{id}/withdraw"), &json!({})).status, 200);
    std::thread::sleep(Duration::from_millis(500));
    let after = notice_sub("talk-notice-3").drain(Duration::from_secs(1));
    assert!(after.iter().all(|m| m.0 == "gridwatch/all/notices"), "only the notice to all is left: {after:?}");
    let audit = op.get("/api/audit?limit=50").json();
    let sent = audit.as_array().unwrap().iter().filter(|r| r["action"] == "notice" && r["user"] == "op").count();
    assert_eq!(sent, 2, "both sends audited");
    let commands: Vec<&str> = audit
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["action"] == "command")
        .filter_map(|r| r["target"].as_str())
        .collect();
    assert_eq!(commands.len(), 5, "every button audited: {commands:?}");
    assert!(commands.iter().any(|t| t.ends_with("s-a/clips/request")), "{commands:?}");
    assert_eq!(http(desk.port, "GET", &src, &[], b"").status, 401, "no fresh picture without a login");
}

/// A second desk copied from the first (same `mqtt.client_id`) knocks it off the broker
/// every second; both say why in their logs, once.
#[test]
fn two_desks_with_one_client_id_are_told_so() {
    let mq = broker();
    let hint = "same client id \"desk-e2e\"";
    let (a, b) = (scratch("desk-takeover-a"), scratch("desk-takeover-b"));
    let first = DeskProc::start(&a, &desk_config(&a, mq.port(), ""));
    std::thread::sleep(Duration::from_secs(12));
    assert!(!first.log().contains(hint), "one desk alone was told it shares its id:\n{}", first.log());
    let second = DeskProc::start(&b, &desk_config(&b, mq.port(), ""));
    for desk in [&first, &second] {
        let told = wait_for(Duration::from_secs(30), || desk.log().contains(hint).then_some(()));
        assert!(told.is_some(), "no hint in the log:\n{}", desk.log());
        assert_eq!(desk.log().matches(hint).count(), 1, "said once:\n{}", desk.log());
    }
}
