//! The desk talking back (contract 1.1), on real parts: commands published with
//! mosquitto_pub to the daemon as a process streaming the street clip, and notices
//! retained on the broker while the daemon is down.

use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use gridwatch::contract::{EventMessage, EventType};
use gridwatch::testkit::mosquitto::Mosquitto;
use gridwatch::testkit::rtsp_server::RtspServer;

use super::support::*;

/// The walkway in the clip, where people walk (as in rules.rs).
const WALKWAY: &str = "[[0.0, 0.30], [0.55, 0.30], [1.0, 0.38], [1.0, 0.9], [0.45, 0.6], [0.0, 0.46]]";
/// Privacy mask over the lawn, bottom left: x < 0.35, y > 0.7.
const MASK: &str = "[[0.0, 0.7], [0.35, 0.7], [0.35, 1.0], [0.0, 1.0]]";

fn text_on(desk: &Desk, topic: &str) -> Option<String> {
    desk.on(topic).last().map(|m| String::from_utf8_lossy(&m.payload).into_owned())
}

/// `new` events made after `since` (by the event's own time: the outbox sends in
/// order, so one made before may arrive after), with when they arrived.
fn news_since(desk: &Desk, since: SystemTime) -> Vec<(EventMessage, Instant)> {
    let made = |e: &EventMessage| humantime::parse_rfc3339(&e.at).expect("RFC 3339 `at`");
    desk.events().into_iter().filter(|(e, _)| e.event_type == EventType::New && made(e) >= since).collect()
}

fn config(broker: u16, camera: &RtspServer, dir: &Path) -> std::path::PathBuf {
    let mut text = base_config(broker, &camera.url("/walkway"));
    text += &format!("[[cameras.privacy_masks]]\npoints = {MASK}\n");
    for zone in ["walkway", "walkway-twin"] {
        text += &format!("[[cameras.zones]]\nname = \"{zone}\"\npoints = {WALKWAY}\n[cameras.zones.intrusion]\n");
    }
    text += &format!(
        "[[cameras]]\nid = \"second\"\nurl = \"{}\"\ndetect_fps = 5\n[[cameras]]\nid = \"dead\"\nurl = \"rtsp://127.0.0.1:1/none\"\n",
        camera.url("/second")
    );
    write_config_text(dir, &text)
}

#[test]
fn commands_switch_detection_and_rules_answer_pictures_and_refuse_bad_payloads() {
    let dir = scratch("commands");
    let broker = Mosquitto::start().expect("mosquitto");
    let clip = fixture("video/vtest.h264");
    let camera = RtspServer::start(0, &[("/walkway", clip.as_path()), ("/second", clip.as_path())]).expect("RTSP");
    let config = config(broker.port(), &camera, &dir);
    let mut desk = Desk::connect(broker.port());
    let mut daemon = Daemon::start(&config, dir.join("run.log"));
    let t = |s: &str| format!("gridwatch/e2e/{s}");
    let streaming = |d: &Desk| ["walkway", "second"].iter().all(|c| last_health_state(d, c) == "streaming");
    assert!(wait_until(&mut desk, Duration::from_secs(30), streaming), "{}", daemon.log());
    for (topic, want) in [("walkway/detect/state", "ON"), ("walkway/rules/walkway-twin/intrusion/state", "ON")] {
        assert_eq!(text_on(&desk, &t(topic)).as_deref(), Some(want), "{topic} announced at start");
    }

    // Once the second camera follows someone: disarm one of the twin zones and pause
    // it; both hold within 2 s.
    let tracking = |d: &Desk| {
        d.open_events().iter().any(|id| d.events().iter().any(|(e, _)| &e.event_id == id && e.camera == "second"))
    };
    assert!(wait_until(&mut desk, Duration::from_secs(20), tracking), "{}", daemon.log());
    let switched = Instant::now();
    publish(broker.port(), &t("walkway/rules/walkway/intrusion/set"), b"OFF", false);
    publish(broker.port(), &t("second/detect/set"), b"OFF", false);
    let applied = |d: &Desk| {
        text_on(d, &t("walkway/rules/walkway/intrusion/state")).as_deref() == Some("OFF")
            && text_on(d, &t("second/detect/state")).as_deref() == Some("OFF")
            && last_health_state(d, "second") == "paused"
    };
    assert!(wait_until(&mut desk, Duration::from_secs(2), applied), "{}", daemon.log());
    let quiet_from = Instant::now();
    // A frame already being analysed when the switch came is the last one it misses.
    let quiet_since = SystemTime::now() + Duration::from_millis(500);

    // A picture now: within 2 s, the stream's size, black under the privacy mask.
    let asked = Instant::now();
    publish(broker.port(), &t("walkway/snapshot/request"), br#"{"request_id": "pic-1"}"#, false);
    let reply = t("walkway/snapshot/pic-1");
    assert!(wait_until(&mut desk, Duration::from_secs(2), |d| !d.on(&reply).is_empty()), "{}", daemon.log());
    let jpeg = image::load_from_memory(&desk.on(&reply)[0].payload).expect("a JPEG").to_rgb8();
    assert_eq!(jpeg.dimensions(), (768, 576), "the clip's own size");
    assert!(jpeg.get_pixel(60, 540).0.iter().all(|&v| v <= 24), "masked lawn: {:?}", jpeg.get_pixel(60, 540));
    eprintln!("picture answered in {} ms", desk.on(&reply)[0].at.duration_since(asked).as_millis());

    // Bad commands change nothing and are each answered.
    let bad_from = Instant::now();
    let mut big = b"{\"request_id\": \"".to_vec();
    big.extend(std::iter::repeat_n(b'x', 5000));
    let bad: Vec<(String, Vec<u8>, &str)> = vec![
        (t("walkway/detect/set"), b"maybe".to_vec(), "ON or OFF"),
        (t("nosuch/detect/set"), b"OFF".to_vec(), "no camera \"nosuch\""),
        (t("walkway/rules/nosuch/intrusion/set"), b"OFF".to_vec(), "no rule"),
        (t("walkway/rules/walkway-twin/crowd/set"), b"OFF".to_vec(), "no rule \"crowd\""),
        (t("walkway/snapshot/request"), big, "at most 4096 bytes"),
        (t("walkway/detect/set"), vec![0xff, 0xfe], "not UTF-8"),
        (t("walkway/snapshot/request"), br#"{"request_id": "../x"}"#.to_vec(), "request_id"),
        (t("walkway/snapshot/request"), br#"{"request_id": 7}"#.to_vec(), "request_id"),
        (t("dead/snapshot/request"), br#"{"request_id": "pic-2"}"#.to_vec(), "is reconnecting"),
        (t("clips/request"), br#"{"event_id": "01JDZ6T3V0K6J3Q8W1YB2M4C7P"}"#.to_vec(), "no such event"),
        (t("notices"), br#"{"schema": "gridwatch.notice/1", "notice_id": "x"}"#.to_vec(), "not a notice"),
    ];
    for (topic, payload, _) in &bad {
        publish(broker.port(), topic, payload, false);
    }
    let all_answered = |d: &Desk| errors_since(d, bad_from).len() >= bad.len();
    assert!(wait_until(&mut desk, Duration::from_secs(5), all_answered), "{:#?}", errors_since(&desk, bad_from));
    let answers = errors_since(&desk, bad_from);
    for ((topic, _, why), (answered, reason)) in bad.iter().zip(&answers) {
        assert_eq!(topic, answered, "answers come in order");
        assert!(reason.contains(why), "{topic}: {reason:?} should say {why:?}");
    }
    assert_eq!(text_on(&desk, &t("walkway/detect/state")).as_deref(), Some("ON"), "nothing changed");
    assert!(desk.on(&t("dead/snapshot/pic-2")).is_empty());

    // 20 s: the paused camera makes no event, the disarmed zone none, the armed twin does.
    desk.wait_for(Duration::from_secs(20), |_| false);
    let news = news_since(&desk, quiet_since);
    let summary: Vec<String> = news.iter().map(|(e, _)| format!("{} {} {:?}", e.camera, e.kind, e.zones)).collect();
    assert!(!news.iter().any(|(e, _)| e.camera == "second"), "paused: {summary:?}");
    let intrusions = |zone: &str| news.iter().filter(|(e, _)| e.kind == "intrusion" && e.zones == [zone]).count();
    assert_eq!(intrusions("walkway"), 0, "disarmed: {summary:?}");
    assert!(intrusions("walkway-twin") >= 1, "armed twin: {summary:?}");
    let open: Vec<String> = desk.open_events();
    let second_open =
        desk.events().into_iter().filter(|(e, _)| e.camera == "second" && open.contains(&e.event_id)).count();
    assert_eq!(second_open, 0, "pausing ended the camera's open events");
    let ended_at_pause = desk.events().iter().any(|(e, at)| {
        e.camera == "second"
            && e.event_type == EventType::End
            && *at >= switched
            && *at < quiet_from + Duration::from_secs(1)
    });
    assert!(ended_at_pause, "its open event ended when it was paused");

    // A restart keeps the switches, and says them again.
    daemon.signal(libc::SIGTERM);
    assert!(daemon.wait(Duration::from_secs(20)).is_some_and(|s| s.success()), "{}", daemon.log());
    let restarted = Instant::now();
    let mut daemon = Daemon::start(&config, dir.join("run2.log"));
    let again = |d: &Desk| {
        d.on(&t("second/detect/state")).iter().any(|m| m.at > restarted && m.payload == b"OFF")
            && d.on(&t("walkway/rules/walkway/intrusion/state")).iter().any(|m| m.at > restarted && m.payload == b"OFF")
            && last_health_state(d, "second") == "paused"
            && last_health_state(d, "walkway") == "streaming"
    };
    assert!(wait_until(&mut desk, Duration::from_secs(30), again), "{}", daemon.log());
    let (code, out, err) = gridwatch(&["status", "--config", config.to_str().unwrap(), "--json"]);
    assert_eq!(code, 0, "{err}");
    let status: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(status["switches"]["paused"], serde_json::json!(["second"]), "{out}");

    // The technician arms the rule again and resumes the camera through the socket.
    let cfg = config.to_str().unwrap();
    let (code, out, err) = gridwatch(&["rule", "walkway", "walkway", "intrusion", "on", "--config", cfg, "--json"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(serde_json::from_str::<serde_json::Value>(&out).unwrap()["state"], "ON");
    let resumed = Instant::now();
    let resumed_at = SystemTime::now();
    let (code, out, err) = gridwatch(&["resume", "second", "--config", cfg]);
    assert_eq!((code, out.trim()), (0, "second: detection on"), "{err}");
    let seen_again = |d: &Desk| news_since(d, resumed_at).iter().any(|(e, _)| e.camera == "second");
    assert!(wait_until(&mut desk, Duration::from_secs(5), seen_again), "{}", daemon.log());
    let first = news_since(&desk, resumed_at).into_iter().find(|(e, _)| e.camera == "second").unwrap().1;
    eprintln!("events again {} ms after resume", first.duration_since(resumed).as_millis());
    assert_eq!(text_on(&desk, &t("walkway/rules/walkway/intrusion/state")).as_deref(), Some("ON"));
    let (code, _, err) = gridwatch(&["pause", "nosuch", "--config", cfg]);
    assert!(code != 0 && err.contains("no camera \"nosuch\""), "{err}");
    let log = daemon.log();
    assert!(log.contains("rule walkway/intrusion armed (by the technician)"), "{log}");
    daemon.signal(libc::SIGTERM);
    assert!(daemon.wait(Duration::from_secs(20)).is_some_and(|s| s.success()), "{}", daemon.log());
    let _ = std::fs::remove_dir_all(&dir);
}

fn notice(id: &str, level: &str, text: &str, expires: SystemTime) -> Vec<u8> {
    serde_json::json!({
        "schema": "gridwatch.notice/1", "notice_id": id, "level": level, "text": text,
        "expires_at": humantime::format_rfc3339_millis(expires).to_string(),
    })
    .to_string()
    .into_bytes()
}

/// Receipts for `id` as the desk got them.
fn receipts(desk: &Desk, id: &str) -> Vec<serde_json::Value> {
    desk.on(&format!("gridwatch/e2e/notices/{id}/receipt"))
        .iter()
        .filter(|m| !m.payload.is_empty())
        .map(|m| serde_json::from_slice(&m.payload).expect("receipt JSON"))
        .collect()
}

#[test]
fn a_notice_sent_while_the_device_is_down_is_received_and_played_once() {
    let dir = scratch("notices");
    let broker = Mosquitto::start().expect("mosquitto");
    let calls = dir.join("calls");
    let script = dir.join("play.sh");
    std::fs::write(&script, format!("#!/bin/sh\necho \"$1|$2|$(cat \"$3\")\" >> {}\n", calls.display())).unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let mut text = base_config(broker.port(), "rtsp://127.0.0.1:1/none");
    text +=
        &format!("[notices]\nplayer = \"{} {{notice_id}} {{level}} {{text_file}}\"\nrepeat = 2\n", script.display());
    let config = write_config_text(&dir, &text);

    // Sent while the daemon is down: one to every grid point, one already expired.
    let now = SystemTime::now();
    let hour = Duration::from_secs(3600);
    publish(
        broker.port(),
        "gridwatch/all/notices",
        &notice("flood-1", "warning", "防汛：今晚暴雨，低洼路段车辆18:00前移走", now + hour),
        true,
    );
    publish(broker.port(), "gridwatch/e2e/notices", &notice("old-1", "info", "expired", now - hour), true);
    let mut desk = Desk::connect(broker.port());
    let mut daemon = Daemon::start(&config, dir.join("run.log"));
    let played = |d: &Desk| receipts(d, "flood-1").iter().any(|r| r["played_at"].is_string());
    assert!(wait_until(&mut desk, Duration::from_secs(20), played), "{}", daemon.log());
    let r = receipts(&desk, "flood-1");
    assert_eq!((r[0]["schema"].as_str(), r[0]["site"].as_str()), (Some("gridwatch.notice_receipt/1"), Some("e2e")));
    assert!(r.last().unwrap()["error"].is_null(), "{r:?}");
    let old = |d: &Desk| receipts(d, "old-1").iter().any(|r| r["error"].is_string());
    assert!(wait_until(&mut desk, Duration::from_secs(5), old), "{}", daemon.log());
    assert!(receipts(&desk, "old-1").iter().all(|r| r["played_at"].is_null()));
    assert_eq!(std::fs::read_to_string(&calls).unwrap(), "flood-1|warning|防汛：今晚暴雨，低洼路段车辆18:00前移走\n");

    // A restart: the retained notice comes again, and is not played again.
    daemon.signal(libc::SIGTERM);
    assert!(daemon.wait(Duration::from_secs(20)).is_some_and(|s| s.success()), "{}", daemon.log());
    let mut daemon = Daemon::start(&config, dir.join("run2.log"));
    let connected = |_: &Desk| daemon_log_has(&dir.join("run2.log"), "MQTT connected");
    assert!(wait_until(&mut desk, Duration::from_secs(20), connected));
    // An urgent one while it runs: played `repeat` times, once.
    publish(
        broker.port(),
        "gridwatch/e2e/notices",
        &notice("urgent-1", "urgent", "Gas leak: keep clear", now + hour),
        true,
    );
    let urgent = |d: &Desk| receipts(d, "urgent-1").iter().any(|r| r["played_at"].is_string());
    assert!(wait_until(&mut desk, Duration::from_secs(20), urgent), "{}", daemon.log());
    desk.wait_for(Duration::from_secs(2), |_| false);
    let lines: Vec<String> = std::fs::read_to_string(&calls).unwrap().lines().map(str::to_owned).collect();
    assert_eq!(lines.iter().filter(|l| l.starts_with("flood-1|")).count(), 1, "{lines:?}");
    assert_eq!(lines.iter().filter(|l| l.as_str() == "urgent-1|urgent|Gas leak: keep clear").count(), 2, "{lines:?}");

    let (code, out, err) = gridwatch(&["notices", "--config", config.to_str().unwrap(), "--json"]);
    assert_eq!(code, 0, "{err}");
    let listed: Vec<serde_json::Value> = out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let mut ids: Vec<&str> = listed.iter().map(|n| n["notice_id"].as_str().unwrap()).collect();
    ids.sort();
    assert_eq!(ids, ["flood-1", "old-1", "urgent-1"], "each once, whatever order the broker kept: {out}");
    daemon.signal(libc::SIGTERM);
    assert!(daemon.wait(Duration::from_secs(20)).is_some_and(|s| s.success()), "{}", daemon.log());
    let _ = std::fs::remove_dir_all(&dir);
}

fn daemon_log_has(log: &Path, what: &str) -> bool {
    std::fs::read_to_string(log).unwrap_or_default().contains(what)
}
