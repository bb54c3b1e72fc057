//! What every end-to-end test needs: scratch folders, fixtures, the daemon as a child
//! process, and a desk that subscribes to the broker the way the duty desk does.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use gridwatch::event::{EventMessage, EventType};
use rumqttc::{Client, Event, MqttOptions, Packet, QoS};

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
        let mut opts = MqttOptions::new(format!("desk-{}", std::process::id()), "127.0.0.1", port);
        opts.set_max_packet_size(16 << 20, 64 << 10);
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
