//! The end-to-end slice: the MQTT contract over restarts and crashes, a camera outage,
//! `check` errors and `detect --json`.

use std::process::Command;
use std::time::{Duration, Instant};

use gridwatch::contract::{EventMessage, EventType};
use gridwatch::testkit::mosquitto::Mosquitto;
use gridwatch::testkit::rtsp_server::RtspServer;

use super::support::*;

#[test]
fn daemon_publishes_the_contract_and_survives_restarts() {
    let dir = scratch("daemon");
    let mut broker = Mosquitto::start().expect("mosquitto");
    let camera = RtspServer::start(0, &[("/walkway", fixture("video/vtest.h264").as_path())]).expect("RTSP server");
    // Credentials in the URL (the server does not ask for them): they must never leak.
    let url = camera.url("/walkway").replace("rtsp://", &format!("rtsp://tech:{PASSWORD}@"));
    let config = write_config(&dir, broker.port(), &url);
    let mut desk = Desk::connect(broker.port());

    // Run 1: events flow; SIGTERM ends them all and says "stopped".
    let started = Instant::now();
    let mut daemon = Daemon::start(&config, dir.join("run1.log"));
    let got_person = desk.wait_for(Duration::from_secs(15), |seen| {
        seen.iter().any(|m| m.topic == "gridwatch/e2e/events" && m.payload.windows(8).any(|w| w == b"\"person\""))
    });
    assert!(got_person, "no person event within 15 s of start; log:\n{}", daemon.log());
    eprintln!("first person event {:.1} s after start", started.elapsed().as_secs_f32());
    desk.wait_for(Duration::from_secs(10), |_| false); // let the scene play on
    daemon.signal(libc::SIGTERM);
    let status = daemon.wait(Duration::from_secs(20)).expect("gridwatch stops within 20 s of SIGTERM");
    assert!(status.success(), "exit status {status}; log:\n{}", daemon.log());
    assert!(desk.wait_for(Duration::from_secs(5), last_status_is("stopped")), "status stopped after SIGTERM");

    let statuses: Vec<_> =
        desk.on("gridwatch/e2e/status").iter().map(|m| String::from_utf8_lossy(&m.payload).into_owned()).collect();
    assert_eq!(statuses, ["online", "stopped"]);
    let info: serde_json::Value = serde_json::from_slice(&desk.on("gridwatch/e2e/info")[0].payload).unwrap();
    assert_eq!(info["site"], "e2e");
    assert_eq!(info["cameras"][0]["id"], "walkway");
    assert_eq!(info["cameras"][0]["name"], "Campus walkway");
    assert_eq!(info["model"]["sha256"].as_str().map(str::len), Some(64));
    let health: Vec<serde_json::Value> =
        desk.on("gridwatch/e2e/walkway/health").iter().map(|m| serde_json::from_slice(&m.payload).unwrap()).collect();
    assert!(
        health.iter().any(|h| h["state"] == "streaming" && h["codec"] == "h264" && h["width"] == 768),
        "{health:?}"
    );
    assert_eq!(health.last().unwrap()["state"], "offline", "a stopped daemon's cameras read offline");

    let events = check_contract(&desk);
    let news = events.iter().filter(|e| e.event_type == EventType::New).count();
    assert!(news >= 2, "the clip shows several people; got {news} new events");
    assert!(news <= 40, "one event per person, not per frame; got {news}");
    let last_seq_run1 = events.last().unwrap().seq;
    let log1 = daemon.log();
    drop(daemon);

    // Run 2: seq continues; SIGKILL leaves the last will "offline".
    let mut daemon = Daemon::start(&config, dir.join("run2.log"));
    let n_before = desk.seen.len();
    assert!(
        desk.wait_for(Duration::from_secs(20), |seen| seen[n_before..]
            .iter()
            .any(|m| m.topic == "gridwatch/e2e/events")),
        "events after a restart; log:\n{}",
        daemon.log()
    );
    let first_again: EventMessage = serde_json::from_slice(
        &desk.seen[n_before..].iter().find(|m| m.topic == "gridwatch/e2e/events").unwrap().payload,
    )
    .unwrap();
    assert_eq!(first_again.seq, last_seq_run1 + 1, "seq survives a restart and is never reused");
    daemon.signal(libc::SIGKILL);
    daemon.wait(Duration::from_secs(5)).expect("killed");
    assert!(desk.wait_for(Duration::from_secs(15), last_status_is("offline")), "last will after SIGKILL");
    let log2 = daemon.log();

    // Run 3: what SIGKILL left open gets its one `end`, and the contract holds over
    // all three runs.
    let left_open = desk.open_events();
    assert!(!left_open.is_empty(), "SIGKILL while people are in view leaves events open");
    let mut daemon = Daemon::start(&config, dir.join("run3.log"));
    let n_before = desk.seen.len();
    let ended = desk.wait_for(Duration::from_secs(20), |seen| {
        let ends: Vec<EventMessage> = seen[n_before..]
            .iter()
            .filter(|m| m.topic == "gridwatch/e2e/events")
            .filter_map(|m| serde_json::from_slice(&m.payload).ok())
            .filter(|e: &EventMessage| e.event_type == EventType::End)
            .collect();
        left_open.iter().all(|id| ends.iter().any(|e| e.event_id == *id))
    });
    assert!(ended, "events open at SIGKILL {left_open:?} never ended; log:\n{}", daemon.log());
    daemon.signal(libc::SIGTERM);
    assert!(daemon.wait(Duration::from_secs(20)).is_some_and(|s| s.success()), "run 3 stops cleanly");
    assert!(desk.wait_for(Duration::from_secs(5), last_status_is("stopped")));
    let log3 = daemon.log();
    check_contract(&desk);
    assert!(desk.open_events().is_empty(), "every event ended: {:?}", desk.open_events());

    // Secrets stay secret: in logs and in everything published.
    for (what, text) in [("run 1 log", &log1), ("run 2 log", &log2), ("run 3 log", &log3)] {
        assert!(!text.contains(PASSWORD), "{what} shows the camera password:\n{text}");
    }
    assert!(desk.seen.iter().all(|m| !m.payload.windows(PASSWORD.len()).any(|w| w == PASSWORD.as_bytes())));
    broker.stop();
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn camera_outage_ends_events_and_the_camera_comes_back() {
    let dir = scratch("outage");
    let broker = Mosquitto::start().expect("mosquitto");
    let clip = fixture("video/vtest.h264");
    let camera = RtspServer::start(0, &[("/walkway", clip.as_path())]).expect("RTSP server");
    let port = camera.port();
    let config = write_config(&dir, broker.port(), &camera.url("/walkway"));
    let mut desk = Desk::connect(broker.port());
    let mut daemon = Daemon::start(&config, dir.join("run.log"));
    assert!(wait_until(&mut desk, Duration::from_secs(15), |d| !d.open_events().is_empty()), "{}", daemon.log());

    // The camera goes away: its open events end within seconds, not when it returns.
    let gone = Instant::now();
    camera.stop();
    let ended = wait_until(&mut desk, Duration::from_secs(10), |d| {
        d.open_events().is_empty() && last_health_state(d, "walkway") == "reconnecting"
    });
    assert!(
        ended,
        "open {:?}, health {}; log:\n{}",
        desk.open_events(),
        last_health_state(&desk, "walkway"),
        daemon.log()
    );
    eprintln!("events ended {:.1} s after the camera went away", gone.elapsed().as_secs_f32());

    // It comes back on the same address: streaming again, new events.
    let events_before = desk.events().len();
    let _camera = RtspServer::start(port, &[("/walkway", clip.as_path())]).expect("RTSP server again");
    let back = wait_until(&mut desk, Duration::from_secs(40), |d| {
        last_health_state(d, "walkway") == "streaming"
            && d.events()[events_before..].iter().any(|(e, _)| e.event_type == EventType::New)
    });
    assert!(back, "health {}; log:\n{}", last_health_state(&desk, "walkway"), daemon.log());

    daemon.signal(libc::SIGTERM);
    assert!(daemon.wait(Duration::from_secs(20)).is_some_and(|s| s.success()), "{}", daemon.log());
    assert!(desk.wait_for(Duration::from_secs(5), last_status_is("stopped")));
    check_contract(&desk);
    assert!(desk.open_events().is_empty());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn check_names_file_key_and_reason() {
    let dir = scratch("check");
    let good = write_config(&dir, 1883, "rtsp://192.0.2.1/stream");
    let out = Command::new(BIN).args(["check", "--config"]).arg(&good).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("walkway"));

    let text = std::fs::read_to_string(&good).unwrap();
    let cases: [(String, &[&str]); 5] = [
        (text.replace("detect_fps = 5", "detect_fps = 5\nfps = 3"), &["cameras[0].fps", "unknown field `fps`"]),
        (text.replace("[storage]", "[detector]\nmodel = \"missing.onnx\"\n[storage]"), &["detector.model"]),
        (format!("{text}[[cameras]]\nid = \"walkway\"\nurl = \"rtsp://192.0.2.2/s\"\n"), &["cameras[1].id"]),
        (text.replace("track = [\"person\"]", "track = [\"persn\"]"), &["\"persn\" is not a label"]),
        (text.replace("port = 1883", "port = 99999"), &["mqtt.port", "99999"]),
    ];
    for (i, (bad, expect)) in cases.iter().enumerate() {
        let file = dir.join(format!("bad{i}.toml"));
        std::fs::write(&file, bad).unwrap();
        let out = Command::new(BIN).args(["check", "--config"]).arg(&file).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "case {i}: {err}");
        assert!(err.contains(&file.display().to_string()), "case {i} names the file: {err}");
        for want in *expect {
            assert!(err.contains(want), "case {i} should say {want:?}: {err}");
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn detect_json_reports_what_the_model_sees() {
    let images = [fixture("photos/darknet_dog.jpg"), fixture("photos/darknet_person.jpg")];
    let out = Command::new(BIN).args(["detect", "--json"]).args(&images).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let lines: Vec<serde_json::Value> =
        String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 2, "one JSON line per image");
    for (line, image) in lines.iter().zip(&images) {
        assert_eq!(line["image"].as_str(), Some(image.to_str().unwrap()), "{line}");
        let (w, h) = (line["width"].as_f64().unwrap(), line["height"].as_f64().unwrap());
        for d in line["detections"].as_array().unwrap() {
            let b: Vec<f64> = d["box"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
            assert_eq!(b.len(), 4, "{d}");
            assert!(0.0 <= b[0] && b[0] < b[2] && b[2] <= w, "x1 < x2 within the image: {d}");
            assert!(0.0 <= b[1] && b[1] < b[3] && b[3] <= h, "y1 < y2 within the image: {d}");
            // --min-score defaults to 0.30.
            assert!(d["score"].as_f64().unwrap() > 0.30, "{d}");
        }
    }
    assert_eq!((lines[0]["width"].as_u64(), lines[0]["height"].as_u64()), (Some(768), Some(576)));
    let labels: Vec<&str> =
        lines[0]["detections"].as_array().unwrap().iter().map(|d| d["label"].as_str().unwrap()).collect();
    for want in ["dog", "bicycle", "car"] {
        assert!(labels.contains(&want), "{want} in {labels:?}");
    }
    let people = lines[1]["detections"].as_array().unwrap().iter().filter(|d| d["label"] == "person").count();
    assert_eq!(people, 1, "{}", lines[1]);

    let missing = Command::new(BIN).args(["detect", "no-such-image.jpg"]).output().unwrap();
    assert_eq!(missing.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("no-such-image.jpg"));
}
