//! The technician's tools against real parts: `probe` against the test RTSP server
//! (a good stream and each failure), and `status`, `snapshot`, the metrics endpoint
//! and systemd's notify protocol against a running daemon.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

use gridwatch::contract::EventMessage;
use gridwatch::testkit::mosquitto::{Mosquitto, free_port};
use gridwatch::testkit::rtsp_server::RtspServer;

use super::support::*;

fn clip() -> std::path::PathBuf {
    fixture("video/vtest.h264")
}

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

#[test]
fn probe_reports_the_stream_and_tells_failures_apart() {
    let dir = scratch("cli-probe");
    let server = RtspServer::start_with_auth(0, &[("/cam", &clip())], "admin", "pa@ss").unwrap();
    let port = server.port();
    let pw_file = dir.join("camera-password");
    std::fs::write(&pw_file, "pa@ss\n").unwrap();
    let jpeg = dir.join("first.jpg");

    let url = server.url("/cam");
    let (code, out, err) = gridwatch(&[
        "probe",
        &url,
        "--user",
        "admin",
        "--password-file",
        pw_file.to_str().unwrap(),
        "-o",
        jpeg.to_str().unwrap(),
        "--json",
        "--duration",
        "2",
    ]);
    assert_eq!(code, 0, "{out}\n{err}");
    let r = json(&out);
    eprintln!("probe: {r}");
    assert_eq!(r["ok"], true);
    assert_eq!((r["codec"].as_str(), r["width"].as_u64(), r["height"].as_u64()), (Some("h264"), Some(768), Some(576)));
    assert_eq!(r["profile"], "Main, level 3.1");
    assert_eq!(r["server"], "GStreamer");
    assert_eq!(r["fps_announced"], 10.0);
    let fps = r["fps_measured"].as_f64().unwrap();
    assert!((9.0..=11.0).contains(&fps), "measured {fps} fps");
    assert!(r["frames"].as_u64().unwrap() >= 15, "2 s at 10 fps: {r}");
    assert_eq!((r["frames_lost"].as_u64(), r["packets_lost"].as_u64()), (Some(0), Some(0)));
    assert_eq!(r["gop_frames"], 20, "the clip has a keyframe every 20 frames");
    assert!(r["time_to_first_keyframe_ms"].as_u64().unwrap() < 5000);
    assert!(r["decoded"].as_u64().unwrap() >= 10);
    let img = image::open(&jpeg).expect("the saved picture decodes");
    assert_eq!((img.width(), img.height()), (768, 576));
    assert!(!out.contains("pa@ss") && !err.contains("pa@ss"), "the password is never printed");

    // The readable form says the same.
    let (code, out, _) = gridwatch(&["probe", &url.replace("rtsp://", "rtsp://admin:pa%40ss@"), "--duration", "1"]);
    assert_eq!(code, 0);
    assert!(out.contains("768x576") && out.contains("Main, level 3.1") && out.contains("***@"), "{out}");

    // Each failure: its own exit code and its own message.
    let closed = free_port().unwrap();
    // Accepts connections (the kernel does, from the backlog) but never answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_port = silent.local_addr().unwrap().port();
    let cases = [
        (format!("rtsp://127.0.0.1:{silent_port}/cam"), 12, "did not answer within 2 s"),
        (format!("rtsp://admin:wrong@127.0.0.1:{port}/cam"), 13, "401"),
        (format!("rtsp://admin:pa%40ss@127.0.0.1:{port}/nothing-here"), 14, "404"),
        (format!("rtsp://127.0.0.1:{closed}/cam"), 11, "connection refused"),
        ("rtsp://camera.invalid/cam".to_owned(), 10, "cannot resolve"),
    ];
    let mut messages = Vec::new();
    for (url, want, words) in &cases {
        let started = Instant::now();
        let (code, out, err) = gridwatch(&["probe", url, "--timeout", "2"]);
        eprintln!("{url}: exit {code} in {:?}\n{err}", started.elapsed());
        assert_eq!(code, *want, "{url}: {out}{err}");
        assert!(err.contains(words), "{url}: {err}");
        assert!(err.contains("hint: "), "{err}");
        assert!(!err.contains(":wrong@") && !err.contains("pa%40ss"), "no password in messages: {err}");
        let first_line = err.lines().next().unwrap().to_owned();
        assert!(!messages.contains(&first_line), "{first_line} used twice");
        messages.push(first_line);

        let (code, out, _) = gridwatch(&["probe", url, "--timeout", "2", "--json"]);
        let r = json(&out);
        assert_eq!((code, r["ok"].as_bool(), r["exit_code"].as_i64()), (*want, Some(false), Some(i64::from(*want))));
    }
}

/// Parses the exposition text: every sample line is `name{labels} value`.
fn parse_metrics(text: &str) -> HashMap<String, f64> {
    let mut out = HashMap::new();
    for line in text.lines().filter(|l| !l.starts_with('#') && !l.is_empty()) {
        let (key, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("bad sample line {line:?}"));
        let value: f64 = value.parse().unwrap_or_else(|_| panic!("bad value in {line:?}"));
        assert!(key.starts_with("gridwatch_"), "{line}");
        if let Some((name, labels)) = key.split_once('{') {
            assert!(labels.ends_with('}') && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'), "{line}");
        }
        assert!(out.insert(key.to_owned(), value).is_none(), "sample {key} twice");
    }
    out
}

fn scrape(port: u16) -> String {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("metrics endpoint listens");
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n").unwrap();
    let mut response = String::new();
    s.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").expect("an HTTP response");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.contains("text/plain; version=0.0.4"), "{head}");
    body.to_owned()
}

/// Datagrams the daemon sent to our notify socket so far.
fn notifications(sock: &UnixDatagram, seen: &mut Vec<String>) {
    let mut buf = [0u8; 512];
    while let Ok(n) = sock.recv(&mut buf) {
        seen.push(String::from_utf8_lossy(&buf[..n]).into_owned());
    }
}

#[test]
fn status_snapshot_metrics_and_notify_against_a_running_daemon() {
    let dir = scratch("cli-daemon");
    let mut broker = Mosquitto::start().unwrap();
    let server = RtspServer::start(0, &[("/cam", &clip())]).unwrap();
    let metrics_port = free_port().unwrap();
    let text = format!(
        "{}[[cameras.privacy_masks]]\npoints = [[0.0, 0.0], [0.25, 0.0], [0.25, 0.3], [0.0, 0.3]]\n\n\
         [[cameras]]\nid = \"spare\"\nurl = \"rtsp://127.0.0.1:9/x\"\nenabled = false\n\n[metrics]\nport = {metrics_port}\n",
        base_config(broker.port(), &server.url("/cam"))
    );
    let config = write_config_text(&dir, &text);
    let cfg = config.to_str().unwrap();

    // systemd's side of the notify protocol: a datagram socket, a 4 s watchdog.
    let notify_path = dir.join("notify.sock");
    let notify = UnixDatagram::bind(&notify_path).unwrap();
    notify.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
    // journald's side: stderr is "the journal stream" when its device and inode match.
    let log = dir.join("daemon.log");
    std::fs::File::create(&log).unwrap();
    let meta = std::fs::metadata(&log).unwrap();
    let journal_stream =
        format!("{}:{}", std::os::unix::fs::MetadataExt::dev(&meta), std::os::unix::fs::MetadataExt::ino(&meta));
    let mut daemon = start_daemon_with_env(
        &config,
        log,
        &[
            ("NOTIFY_SOCKET", notify_path.as_os_str()),
            ("WATCHDOG_USEC", std::ffi::OsStr::new("4000000")),
            ("JOURNAL_STREAM", std::ffi::OsStr::new(&journal_stream)),
        ],
    );
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !seen.iter().any(|m: &String| m.starts_with("READY=1")) {
        assert!(Instant::now() < deadline, "no READY=1; log:\n{}", daemon.log());
        notifications(&notify, &mut seen);
    }

    // The control socket: owner and group only.
    let socket = dir.join("state/control.sock");
    let mode = std::fs::metadata(&socket).expect("control socket exists after READY").permissions().mode();
    assert_eq!(mode & 0o777, 0o660);

    // Wait until the camera streams and rates have a few seconds behind them.
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        let (code, out, err) = gridwatch(&["status", "--config", cfg, "--json"]);
        assert_eq!(code, 0, "{out}{err}");
        let s = json(&out);
        if s["cameras"][0]["state"] == "streaming" && s["cameras"][0]["fps_analyzed"].as_f64() > Some(1.0) {
            break s;
        }
        assert!(Instant::now() < deadline, "camera never streamed: {s}\n{}", daemon.log());
        std::thread::sleep(Duration::from_millis(500));
    };
    eprintln!("status: {status}");
    assert_eq!((status["site"].as_str(), status["version"].as_str()), (Some("e2e"), Some(env!("CARGO_PKG_VERSION"))));
    assert_eq!(status["mqtt"]["connected"], true);
    assert_eq!(status["mqtt"]["broker"], format!("127.0.0.1:{}", broker.port()));
    assert!(status["outbox"]["pending"].is_u64());
    assert!(status["model"]["name"].as_str().unwrap().contains("yolox"), "{status}");
    assert_eq!(status["model"]["sha256"].as_str().unwrap().len(), 64);
    let cam = &status["cameras"][0];
    assert_eq!(
        (cam["id"].as_str(), cam["codec"].as_str(), cam["width"].as_u64()),
        (Some("walkway"), Some("h264"), Some(768))
    );
    let fps_in = cam["fps_in"].as_f64().unwrap();
    assert!((8.0..=12.0).contains(&fps_in), "the clip is 10 fps: {fps_in}");
    assert!(status["watchdog_problem"].is_null(), "{status}");
    let (code, table, _) = gridwatch(&["status", "--config", cfg]);
    assert_eq!(code, 0);
    assert!(table.contains("walkway") && table.contains("streaming") && table.contains("connected to"), "{table}");

    // Snapshot: the latest picture, recent, as a JPEG of the analysis size.
    let jpeg = dir.join("walkway.jpg");
    let (code, out, err) = gridwatch(&["snapshot", "walkway", "-o", jpeg.to_str().unwrap(), "--config", cfg, "--json"]);
    assert_eq!(code, 0, "{out}{err}");
    let snap = json(&out);
    let img = image::open(&jpeg).expect("snapshot decodes").to_rgb8();
    assert_eq!((img.width(), img.height()), (768, 576));
    // The privacy mask (top-left quarter by 0.3) is black, as in event snapshots.
    let mean = |x0: u32, y0: u32| {
        let px: Vec<u32> = (y0..y0 + 40)
            .flat_map(|y| (x0..x0 + 40).map(move |x| (x, y)))
            .flat_map(|(x, y)| img.get_pixel(x, y).0.map(u32::from))
            .collect();
        px.iter().sum::<u32>() as f64 / px.len() as f64
    };
    assert!(mean(40, 40) < 8.0, "masked area is not black: {}", mean(40, 40));
    assert!(mean(500, 300) > 30.0, "the rest is the picture: {}", mean(500, 300));
    assert_eq!((snap["width"].as_u64(), snap["height"].as_u64()), (Some(768), Some(576)));
    assert_eq!(snap["bytes"].as_u64(), Some(std::fs::metadata(&jpeg).unwrap().len()));
    let captured = humantime::parse_rfc3339(snap["captured_at"].as_str().unwrap()).unwrap();
    let age = std::time::SystemTime::now().duration_since(captured).unwrap_or_default();
    assert!(age < Duration::from_secs(3), "latest picture is {age:?} old");
    let (code, _, err) = gridwatch(&["snapshot", "no-such-cam", "-o", "/dev/null", "--config", cfg]);
    assert_eq!(code, 5, "{err}");
    assert!(err.contains("no camera \"no-such-cam\"") && err.contains("walkway"), "{err}");
    let (code, _, err) = gridwatch(&["snapshot", "spare", "-o", "/dev/null", "--config", cfg]);
    assert_eq!(code, 5, "{err}");
    assert!(err.contains("no picture yet (state: disabled)"), "{err}");

    // Metrics: parseable, and the figures agree with the pipeline.
    let m = parse_metrics(&scrape(metrics_port));
    let get = |k: &str| *m.get(k).unwrap_or_else(|| panic!("no {k} in {m:?}"));
    let fps = get("gridwatch_camera_fps{camera=\"walkway\"}");
    assert!((8.0..=12.0).contains(&fps), "{fps}");
    assert_eq!(get("gridwatch_camera_up{camera=\"walkway\"}"), 1.0);
    assert_eq!(get("gridwatch_mqtt_connected"), 1.0);
    assert!(get("gridwatch_outbox_pending") >= 0.0);
    assert_eq!(get("gridwatch_reconnects_total{camera=\"walkway\"}"), 0.0);
    let count = get("gridwatch_inference_seconds_count{camera=\"walkway\"}");
    assert!(count >= 5.0, "{count}");
    assert_eq!(get("gridwatch_inference_seconds_bucket{camera=\"walkway\",le=\"+Inf\"}"), count);
    let mut last = 0.0;
    for le in ["0.01", "0.02", "0.05", "0.1", "0.2", "0.5", "1", "2", "5", "10"] {
        let b = get(&format!("gridwatch_inference_seconds_bucket{{camera=\"walkway\",le=\"{le}\"}}"));
        assert!(b >= last && b <= count, "buckets are cumulative");
        last = b;
    }
    let mean = get("gridwatch_inference_seconds_sum{camera=\"walkway\"}") / count;
    assert!(mean > 0.001 && mean < 2.0, "mean inference {mean} s");

    // Events from the local store: the latest N in seq order, one JSON object a line.
    let deadline = Instant::now() + Duration::from_secs(30);
    let latest = loop {
        let (code, out, err) = gridwatch(&["events", "--config", cfg, "--json", "--limit", "3"]);
        assert_eq!(code, 0, "{err}");
        let events: Vec<EventMessage> =
            out.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"))).collect();
        if events.len() == 3 {
            break events;
        }
        assert!(Instant::now() < deadline, "fewer than 3 events stored: {out}\n{}", daemon.log());
        std::thread::sleep(Duration::from_millis(500));
    };
    assert!(latest.windows(2).all(|w| w[0].seq < w[1].seq), "ascending seq");
    assert!(latest.iter().all(|e| e.camera == "walkway" && e.site == "e2e" && e.label == "person"));
    let (code, out, _) = gridwatch(&["events", "--config", cfg, "--json", "--camera", "other"]);
    assert_eq!((code, out.as_str()), (0, ""), "no events of a camera that is not there");
    let (code, out, _) = gridwatch(&["events", "--config", cfg, "--limit", "2"]);
    assert_eq!(code, 0);
    assert!(out.starts_with("SEQ") && out.lines().count() == 3 && out.contains("walkway"), "{out}");

    // --follow prints what comes after, each event once, in order.
    let mut follow = std::process::Command::new(BIN)
        .args(["events", "--config", cfg, "--json", "--follow", "--limit", "1"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = follow.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in std::io::BufRead::lines(std::io::BufReader::new(stdout)).map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let mut followed: Vec<EventMessage> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while followed.len() < 4 && Instant::now() < deadline {
        if let Ok(line) = rx.recv_timeout(Duration::from_millis(200)) {
            followed.push(serde_json::from_str(&line).unwrap());
        }
    }
    let _ = follow.kill();
    let _ = follow.wait();
    assert!(followed.len() >= 4, "follow printed {} events in 30 s", followed.len());
    assert!(
        followed.windows(2).all(|w| w[1].seq == w[0].seq + 1),
        "every event once, in order: {:?}",
        followed.iter().map(|e| e.seq).collect::<Vec<_>>()
    );
    assert!(followed[0].seq >= latest[2].seq, "starts from the latest");

    // The watchdog is pinged while all moves (4 s period: a ping at least every 2 s).
    let before = seen.iter().filter(|m| *m == "WATCHDOG=1").count();
    std::thread::sleep(Duration::from_secs(5));
    notifications(&notify, &mut seen);
    let pings = seen.iter().filter(|m| *m == "WATCHDOG=1").count() - before;
    assert!(pings >= 2, "{pings} pings in 5 s");

    // A camera that goes away is reconnecting, not stuck: the pings go on.
    let port = server.port();
    server.stop();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (_, out, _) = gridwatch(&["status", "--config", cfg, "--json"]);
        if json(&out)["cameras"][0]["state"] == "reconnecting" {
            break;
        }
        assert!(Instant::now() < deadline, "camera never reconnecting: {out}");
        std::thread::sleep(Duration::from_millis(300));
    }
    notifications(&notify, &mut seen);
    let before = seen.iter().filter(|m| *m == "WATCHDOG=1").count();
    std::thread::sleep(Duration::from_secs(5));
    notifications(&notify, &mut seen);
    let pings = seen.iter().filter(|m| *m == "WATCHDOG=1").count() - before;
    assert!(pings >= 2, "{pings} pings in 5 s while the camera reconnects");
    let m = parse_metrics(&scrape(metrics_port));
    assert_eq!(m["gridwatch_camera_up{camera=\"walkway\"}"], 0.0);
    assert_eq!(m["gridwatch_pipeline_stuck"], 0.0);
    assert!(m["gridwatch_reconnects_total{camera=\"walkway\"}"] >= 1.0);
    let _server = RtspServer::start(port, &[("/cam", &clip())]).unwrap();

    // A clean stop: STOPPING=1, exit 0, the socket gone, status says nobody runs.
    daemon.signal(libc::SIGTERM);
    let status = daemon.wait(Duration::from_secs(20)).expect("daemon stops");
    assert!(status.success(), "{status:?}");
    notifications(&notify, &mut seen);
    assert!(seen.iter().any(|m| m.starts_with("STOPPING=1")), "{seen:?}");
    assert!(!socket.exists(), "the control socket is removed on stop");
    // Log lines for journald: a syslog priority first, no timestamp, the camera named.
    let log = daemon.log();
    assert!(log.lines().all(|l| l.starts_with("<3>") || l.starts_with("<4>") || l.starts_with("<6>")), "{log}");
    assert!(
        log.lines().any(|l| l.starts_with("<6>") && l.contains("streaming") && l.contains("camera=walkway")),
        "{log}"
    );
    let level_first = |l: &str| ["ERROR", "WARN", "INFO"].iter().any(|w| l[3..].trim_start().starts_with(w));
    assert!(log.lines().all(level_first), "the level right after the priority, no timestamp: {log}");
    let (code, _, err) = gridwatch(&["status", "--config", cfg]);
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("is gridwatch running?"), "{err}");
    broker.stop();
}
