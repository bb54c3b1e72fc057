//! What every end-to-end test needs: scratch folders, fixtures, the daemon as a child
//! process, and a desk that subscribes to the broker the way the duty desk does.

// Not every test module uses every helper.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use gridwatch::contract::{EventMessage, EventType};
use rumqttc::{Client, Event, MqttOptions, Packet, QoS};
use sha2::{Digest, Sha256};

pub const BIN: &str = env!("CARGO_BIN_EXE_gridwatch");
pub const PASSWORD: &str = "s3cret-Pw0rd";

pub fn fixture(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(rel)
}

pub fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("gridwatch-e2e-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A message as the desk received it.
#[derive(Debug, Clone)]
pub struct Msg {
    pub at: Instant,
    pub topic: String,
    pub payload: Vec<u8>,
}

/// A subscriber on `gridwatch/#`, collecting everything on a thread of its own.
pub struct Desk {
    pub rx: std::sync::mpsc::Receiver<Msg>,
    pub seen: Vec<Msg>,
}

impl Desk {
    pub fn connect(port: u16) -> Desk {
        Desk::connect_as(port, &format!("desk-{}", std::process::id()), true)
    }

    /// A desk whose broker session (subscription and queued messages) outlives its
    /// connection, so it misses nothing across a broker restart.
    pub fn connect_persistent(port: u16, client_id: &str) -> Desk {
        Desk::connect_as(port, client_id, false)
    }

    fn connect_as(port: u16, client_id: &str, clean_session: bool) -> Desk {
        let mut opts = MqttOptions::new(client_id, "127.0.0.1", port);
        opts.set_max_packet_size(16 << 20, 64 << 10).set_clean_session(clean_session);
        let (client, mut conn) = Client::new(opts, 64);
        client.subscribe("gridwatch/#", QoS::AtLeastOnce).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _client = client; // dropping it would end the connection
            for ev in conn.iter() {
                match ev {
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        let _ = ready_tx.send(());
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        let m = Msg { at: Instant::now(), topic: p.topic.clone(), payload: p.payload.to_vec() };
                        if tx.send(m).is_err() {
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(_) => std::thread::sleep(Duration::from_millis(100)),
                }
            }
        });
        ready_rx.recv_timeout(Duration::from_secs(10)).expect("desk subscribed to the broker");
        Desk { rx, seen: Vec::new() }
    }

    /// Collects until `done` holds for what was seen, or `timeout`; returns whether it held.
    pub fn wait_for(&mut self, timeout: Duration, done: impl Fn(&[Msg]) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if done(&self.seen) {
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            if let Ok(m) = self.rx.recv_timeout(left.min(Duration::from_millis(200))) {
                self.seen.push(m);
            }
        }
    }

    pub fn on(&self, topic: &str) -> Vec<&Msg> {
        self.seen.iter().filter(|m| m.topic == topic).collect()
    }

    /// Events as a consumer keeps them: deduplicated on (event_id, seq), as the
    /// at-least-once contract asks (a crash mid-delivery sends one again), with the
    /// time each first arrived. A repeat must be the same message.
    pub fn events(&self) -> Vec<(EventMessage, Instant)> {
        let mut seen: HashMap<(String, u64), EventMessage> = HashMap::new();
        let mut out = Vec::new();
        for m in self.on("gridwatch/e2e/events") {
            let e: EventMessage = serde_json::from_slice(&m.payload).expect("event JSON follows the contract");
            match seen.get(&(e.event_id.clone(), e.seq)) {
                Some(first) => assert_eq!(first, &e, "a repeated (event_id, seq) must be the same message"),
                None => {
                    seen.insert((e.event_id.clone(), e.seq), e.clone());
                    out.push((e, m.at));
                }
            }
        }
        out
    }

    /// (event_id, seq) of the events that went out without their snapshot because the
    /// outbox's disk budget evicted it.
    pub fn evicted_snapshots(&self) -> Vec<(String, u64)> {
        self.on("gridwatch/e2e/events")
            .iter()
            .filter_map(|m| serde_json::from_slice::<serde_json::Value>(&m.payload).ok())
            .filter(|v| v["snapshot_evicted"] == true && v["snapshot"].is_null())
            .map(|v| (v["event_id"].as_str().unwrap_or_default().to_owned(), v["seq"].as_u64().unwrap_or_default()))
            .collect()
    }

    /// Events that had their `new` but not yet their `end`.
    pub fn open_events(&self) -> Vec<String> {
        let mut open: Vec<String> = Vec::new();
        for (e, _) in self.events() {
            match e.event_type {
                EventType::New => open.push(e.event_id),
                EventType::End => open.retain(|id| *id != e.event_id),
                EventType::Update => {}
            }
        }
        open
    }
}

pub fn last_status_is(want: &'static str) -> impl Fn(&[Msg]) -> bool {
    move |seen: &[Msg]| {
        seen.iter().rev().find(|m| m.topic == "gridwatch/e2e/status").is_some_and(|m| m.payload == want.as_bytes())
    }
}

/// `gridwatch run` as a child process, its log in a file.
pub struct Daemon {
    pub child: Child,
    pub log: PathBuf,
}

impl Daemon {
    pub fn start(config: &Path, log: PathBuf) -> Daemon {
        let child = Command::new(BIN)
            .args(["run", "--config"])
            .arg(config)
            .env("GRIDWATCH_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start gridwatch");
        Daemon { child, log }
    }

    pub fn signal(&mut self, sig: i32) {
        // SAFETY: kill only sends a signal, to our own child whose pid we hold.
        unsafe { libc::kill(self.child.id() as i32, sig) };
    }

    pub fn wait(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(s) = self.child.try_wait().unwrap() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The configuration every test starts from: site `e2e`, one camera `walkway`.
/// Tests add keys by appending TOML (for example `[[cameras.zones]]` tables, which
/// belong to the last camera) or by replacing a line.
pub fn base_config(broker_port: u16, camera_url: &str) -> String {
    format!(
        r#"site = "e2e"
[mqtt]
host = "127.0.0.1"
port = {broker_port}
keep_alive_s = 5
[storage]
dir = "state"
[[cameras]]
id = "walkway"
name = "Campus walkway"
url = "{camera_url}"
detect_fps = 5
track = ["person"]
"#
    )
}

/// Writes `text` as `gridwatch.toml` in `dir`; returns its path.
pub fn write_config_text(dir: &Path, text: &str) -> PathBuf {
    let path = dir.join("gridwatch.toml");
    std::fs::write(&path, text).unwrap();
    path
}

pub fn write_config(dir: &Path, broker_port: u16, camera_url: &str) -> PathBuf {
    write_config_text(dir, &base_config(broker_port, camera_url))
}

/// Asserts the contract on everything the desk saw; returns the events.
pub fn check_contract(desk: &Desk) -> Vec<EventMessage> {
    check_contract_of(desk, &["walkway"])
}

/// `check_contract` for object events of the `cameras` listed. A non-`end` event may
/// lack its snapshot only when it says the outbox evicted it.
pub fn check_contract_of(desk: &Desk, cameras: &[&str]) -> Vec<EventMessage> {
    let delivered = desk.events();
    let events: Vec<EventMessage> = delivered.iter().map(|(e, _)| e.clone()).collect();
    // seq strictly increasing in arrival order.
    for w in events.windows(2) {
        assert!(w[1].seq > w[0].seq, "seq must increase: {} then {}", w[0].seq, w[1].seq);
    }
    // Per event: new, update*, end; only tracked labels.
    let mut by_id: HashMap<&str, Vec<EventType>> = HashMap::new();
    for e in &events {
        assert_eq!((e.schema.as_str(), e.site.as_str()), ("gridwatch.event/1", "e2e"));
        assert!(cameras.contains(&e.camera.as_str()), "camera {}", e.camera);
        assert_eq!(e.kind, "object");
        assert_eq!(e.label, "person", "only tracked labels make events");
        assert!(
            e.bbox.iter().all(|v| (0.0..=1.0).contains(v)) && e.bbox[0] < e.bbox[2] && e.bbox[1] < e.bbox[3],
            "{:?}",
            e.bbox
        );
        by_id.entry(&e.event_id).or_default().push(e.event_type);
    }
    for (id, seq) in &by_id {
        assert_eq!(seq.first(), Some(&EventType::New), "event {id}: {seq:?}");
        assert_eq!(seq.iter().filter(|t| **t == EventType::End).count(), 1, "event {id}: {seq:?}");
        assert_eq!(seq.last(), Some(&EventType::End), "event {id}: {seq:?}");
    }
    let evicted = desk.evicted_snapshots();
    // Every snapshot arrives before the event naming it, and is the picture it describes.
    for (e, arrived) in &delivered {
        if e.event_type == EventType::End {
            continue;
        }
        let Some(s) = e.snapshot.as_ref() else {
            assert!(
                evicted.contains(&(e.event_id.clone(), e.seq)),
                "{:?} event {} has no snapshot and does not say it was evicted",
                e.event_type,
                e.event_id
            );
            continue;
        };
        assert!(s.topic.starts_with("gridwatch/e2e/snapshots/") && s.topic.contains(&e.event_id), "{}", s.topic);
        let snap = desk.on(&s.topic);
        let snap = snap.first().unwrap_or_else(|| panic!("snapshot {} never arrived", s.topic));
        assert!(snap.at <= *arrived, "snapshot {} arrived after its event", s.topic);
        assert_eq!(snap.payload.len(), s.bytes);
        let sha: String = Sha256::digest(&snap.payload).iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(sha, s.sha256, "sha256 of {}", s.topic);
        let img =
            image::load_from_memory_with_format(&snap.payload, image::ImageFormat::Jpeg).expect("snapshot is a JPEG");
        assert_eq!((img.width(), img.height()), (s.width, s.height));
        assert_eq!((s.width, s.height), (768, 576), "the clip's own size");
    }
    events
}

/// Polls what the desk receives until `cond` holds, or `timeout`.
pub fn wait_until(desk: &mut Desk, timeout: Duration, cond: impl Fn(&Desk) -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while !cond(desk) {
        if Instant::now() > deadline {
            return false;
        }
        desk.wait_for(Duration::from_millis(200), |_| false);
    }
    true
}

/// The latest health JSON the desk has for `camera`.
pub fn last_health(desk: &Desk, camera: &str) -> Option<serde_json::Value> {
    desk.on(&format!("gridwatch/e2e/{camera}/health"))
        .last()
        .and_then(|m| serde_json::from_slice::<serde_json::Value>(&m.payload).ok())
}

pub fn last_health_state(desk: &Desk, camera: &str) -> String {
    last_health(desk, camera).and_then(|h| h["state"].as_str().map(str::to_owned)).unwrap_or_default()
}

/// `gridwatch run` like [`Daemon::start`], with extra environment (systemd's
/// `NOTIFY_SOCKET`, `WATCHDOG_USEC`, ...).
pub fn start_daemon_with_env(config: &Path, log: PathBuf, env: &[(&str, &std::ffi::OsStr)]) -> Daemon {
    let mut cmd = Command::new(BIN);
    cmd.args(["run", "--config"])
        .arg(config)
        .env("GRIDWATCH_LOG", "info")
        .env_remove("RUNTIME_DIRECTORY")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap());
    for (k, v) in env {
        cmd.env(k, v);
    }
    Daemon { child: cmd.spawn().expect("start gridwatch"), log }
}

/// Runs `gridwatch ARGS...` to the end: exit code, stdout, stderr.
pub fn gridwatch(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(BIN).args(args).env_remove("GRIDWATCH_CAMERA_PASSWORD").output().expect("run gridwatch");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Publishes with the broker's own client, QoS 1 (`retain` for notices); the payload
/// goes through stdin, so tests running at once cannot swap payloads.
pub fn publish(port: u16, topic: &str, payload: &[u8], retain: bool) {
    use std::io::Write;
    let mut cmd = Command::new("mosquitto_pub");
    cmd.args(["-h", "127.0.0.1", "-p", &port.to_string(), "-q", "1", "-t", topic, "-s"]);
    if retain {
        cmd.arg("-r");
    }
    let mut child =
        cmd.stdin(std::process::Stdio::piped()).stderr(std::process::Stdio::piped()).spawn().expect("mosquitto_pub");
    child.stdin.take().unwrap().write_all(payload).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "mosquitto_pub: {}", String::from_utf8_lossy(&out.stderr));
}

/// Command errors received after `since`, as (topic, reason).
pub fn errors_since(desk: &Desk, since: Instant) -> Vec<(String, String)> {
    desk.on("gridwatch/e2e/command_errors")
        .iter()
        .filter(|m| m.at >= since)
        .map(|m| {
            let v: serde_json::Value = serde_json::from_slice(&m.payload).expect("command error JSON");
            assert_eq!(v["schema"], "gridwatch.command_error/1");
            assert!(v["at"].as_str().is_some_and(|t| humantime::parse_rfc3339(t).is_ok()), "{v}");
            (v["topic"].as_str().unwrap().to_owned(), v["reason"].as_str().unwrap().to_owned())
        })
        .collect()
}
