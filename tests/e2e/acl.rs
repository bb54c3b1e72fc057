//! The broker's access list as shipped (systemd/mosquitto-acl.example) on the real
//! mosquitto, with a password file made by `mosquitto_passwd`: a grid point writes its
//! answers under its own site only, cannot command itself or another site, and reads
//! its own commands and notices and the notices to all; the desk reads everything and
//! commands every site.
//!
//! mosquitto drops a refused publish without telling an MQTT 3.1.1 client, so "refused"
//! is shown by absence. Each absence is checked after a control message from the same
//! publisher that the same subscriber does get: the broker routes one client's messages
//! in order, so anything allowed that was sent before the control would have arrived
//! before it.

use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, channel};
use std::time::{Duration, Instant};

use gridwatch::testkit::mosquitto::{BrokerAccess, BrokerOptions, Mosquitto, free_port, write_password_file};
use rumqttc::{Client, ConnectionError, Event, MqttOptions, Packet, QoS};

use crate::support::scratch;

const USERS: [(&str, &str); 3] = [("grid-01", "pw-grid-01"), ("grid-02", "pw-grid-02"), ("desk", "pw-desk")];

/// After a control message arrived: a little longer, for anything that should not.
const SETTLE: Duration = Duration::from_millis(500);
const WAIT: Duration = Duration::from_secs(5);

/// What a grid point of `site` subscribes to (its command topics, its notices and the
/// notices to all).
fn device_filters(site: &str) -> Vec<String> {
    ["+/detect/set", "+/rules/+/+/set", "+/snapshot/request", "clips/request", "notices"]
        .iter()
        .map(|t| format!("gridwatch/{site}/{t}"))
        .chain(["gridwatch/all/notices".to_owned()])
        .collect()
}

/// One MQTT client logged in as a broker user, collecting what it receives.
struct Peer {
    name: String,
    client: Client,
    rx: Receiver<(String, Vec<u8>)>,
    seen: Vec<(String, Vec<u8>)>,
}

impl Peer {
    /// Logs in as `user` and subscribes to `filters` (QoS 1); returns once subscribed.
    fn connect(port: u16, user: &str, filters: &[String]) -> Peer {
        let password = USERS.iter().find(|(u, _)| *u == user).map(|(_, p)| *p).expect("a known user");
        let mut opts = MqttOptions::new(format!("acl-{user}-{}", std::process::id()), "127.0.0.1", port);
        opts.set_credentials(user, password);
        let (client, mut conn) = Client::new(opts, 64);
        for f in filters {
            client.subscribe(f, QoS::AtLeastOnce).unwrap();
        }
        let (tx, rx) = channel();
        let (ready_tx, ready_rx) = channel();
        let wanted = filters.len();
        std::thread::spawn(move || {
            let mut subacks = 0;
            for ev in conn.iter() {
                match ev {
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        subacks += 1;
                        if subacks == wanted {
                            let _ = ready_tx.send(());
                        }
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        if tx.send((p.topic.clone(), p.payload.to_vec())).is_err() {
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(_) => return,
                }
            }
        });
        if wanted > 0 {
            ready_rx.recv_timeout(WAIT).unwrap_or_else(|_| panic!("{user} did not get its subscriptions confirmed"));
        }
        Peer { name: user.to_owned(), client, rx, seen: Vec::new() }
    }

    fn publish(&self, topic: &str, payload: &str, retain: bool) {
        self.client.publish(topic, QoS::AtLeastOnce, retain, payload.as_bytes().to_vec()).unwrap();
    }

    fn got(&self, topic: &str, payload: &str) -> bool {
        self.seen.iter().any(|(t, p)| t == topic && p == payload.as_bytes())
    }

    /// Collects until `topic` with `payload` arrived (true) or `timeout` passed.
    fn wait_for(&mut self, topic: &str, payload: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while !self.got(topic, payload) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            if let Ok(m) = self.rx.recv_timeout(left) {
                self.seen.push(m);
            }
        }
        true
    }

    /// Waits for the control message, then a little longer for anything else.
    fn settle_after(&mut self, topic: &str, payload: &str) {
        assert!(self.wait_for(topic, payload, WAIT), "{} never got the control message {topic} {payload}", self.name);
        let until = Instant::now() + SETTLE;
        while let Some(left) = until.checked_duration_since(Instant::now()) {
            if let Ok(m) = self.rx.recv_timeout(left) {
                self.seen.push(m);
            }
        }
    }
}

/// Whether the broker refuses a login (`None`: anonymous).
fn login_refused(port: u16, credentials: Option<(&str, &str)>) -> bool {
    let mut opts = MqttOptions::new(format!("acl-login-{}", std::process::id()), "127.0.0.1", port);
    if let Some((u, p)) = credentials {
        opts.set_credentials(u, p);
    }
    let (_client, mut conn) = Client::new(opts, 8);
    for ev in conn.iter() {
        match ev {
            Ok(Event::Incoming(Packet::ConnAck(_))) => return false,
            Err(ConnectionError::ConnectionRefused(_)) => return true,
            Err(e) => panic!("login: {e}"),
            Ok(_) => {}
        }
    }
    unreachable!("the connection's iterator does not end")
}

/// A broker with `acl` (the shipped file, perhaps edited) and the three users.
fn broker(dir: &Path, acl: &str) -> Mosquitto {
    let acl_file: PathBuf = dir.join("gridwatch.acl");
    std::fs::write(&acl_file, acl).unwrap();
    let password_file = dir.join("gridwatch.passwd");
    write_password_file(&password_file, &USERS).expect("mosquitto_passwd");
    let access = BrokerAccess { password_file, acl_file: Some(acl_file) };
    Mosquitto::start_with_access(free_port().unwrap(), BrokerOptions::default(), Some(access)).expect("mosquitto")
}

fn shipped_acl() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd/mosquitto-acl.example");
    let text = std::fs::read_to_string(&path).unwrap();
    // The test speaks the default topic root; the file must too.
    assert!(text.contains("pattern read gridwatch/all/notices"), "{} is not for the root gridwatch", path.display());
    text
}

#[test]
fn the_shipped_acl_keeps_each_grid_point_in_its_own_site() {
    let dir = scratch("acl");
    let broker = broker(&dir, &shipped_acl());
    let port = broker.port();

    assert!(login_refused(port, None), "an anonymous client was let in");
    assert!(login_refused(port, Some(("grid-01", "not-its-password"))), "a wrong password was let in");

    let mut desk = Peer::connect(port, "desk", &["gridwatch/#".to_owned()]);
    // A notice to all, sent while no grid point is connected (retained).
    let notice = r#"{"schema":"gridwatch.notice/1","notice_id":"n1","level":"urgent","text":"flood","expires_at":"2099-01-01T00:00:00Z"}"#;
    desk.publish("gridwatch/all/notices", notice, true);
    assert!(desk.wait_for("gridwatch/all/notices", notice, WAIT), "the desk could not publish a notice to all");

    let mut g1 = Peer::connect(port, "grid-01", &device_filters("grid-01"));
    let mut g2_filters = device_filters("grid-02");
    g2_filters.push("gridwatch/grid-01/#".to_owned()); // snooping on its neighbour
    let mut g2 = Peer::connect(port, "grid-02", &g2_filters);
    for g in [&mut g1, &mut g2] {
        assert!(g.wait_for("gridwatch/all/notices", notice, WAIT), "{} did not get the retained notice to all", g.name);
    }

    // Everything a grid point publishes under its own site reaches the desk.
    let answers = [
        ("gridwatch/grid-01/status", true),
        ("gridwatch/grid-01/info", true),
        ("gridwatch/grid-01/events", false),
        ("gridwatch/grid-01/snapshots/01JDZ6T3V0K6J3Q8W1YB2M4C7P-1", false),
        ("gridwatch/grid-01/stats", false),
        ("gridwatch/grid-01/clips/01JDZ6T3V0K6J3Q8W1YB2M4C7P", false),
        ("gridwatch/grid-01/command_errors", false),
        ("gridwatch/grid-01/notices/n1/receipt", true),
        ("gridwatch/grid-01/cam1/health", true),
        ("gridwatch/grid-01/cam1/detect/state", true),
        ("gridwatch/grid-01/cam1/rules/lane/intrusion/state", true),
        ("gridwatch/grid-01/cam1/snapshot/r1", false),
    ];
    for (topic, retain) in answers {
        g1.publish(topic, "answer", retain);
    }
    for (topic, _) in answers {
        assert!(desk.wait_for(topic, "answer", WAIT), "grid-01's {topic} did not reach the desk");
    }

    // What a grid point must not publish: another site's tree, commands (its own
    // too), notices.
    let refused = [
        "gridwatch/grid-02/events",
        "gridwatch/grid-02/status",
        "gridwatch/grid-02/cam1/health",
        "gridwatch/grid-02/cam1/detect/set",
        "gridwatch/grid-02/cam1/snapshot/request",
        "gridwatch/grid-02/notices",
        "gridwatch/grid-01/cam1/detect/set",
        "gridwatch/grid-01/cam1/rules/lane/intrusion/set",
        "gridwatch/grid-01/notices",
        "gridwatch/all/notices",
        "gridwatch/desk/escalations",
    ];
    for topic in refused {
        g1.publish(topic, "forged", false);
    }
    g1.publish("gridwatch/grid-01/events", "control-1", false);
    desk.settle_after("gridwatch/grid-01/events", "control-1");
    let through: Vec<&str> = refused.iter().copied().filter(|t| desk.got(t, "forged")).collect();
    assert!(through.is_empty(), "the broker let grid-01 publish {through:?}");

    // The desk commands grid-01: grid-01 gets it, grid-02 listening in does not.
    let commands = [
        ("gridwatch/grid-01/cam1/detect/set", "OFF"),
        ("gridwatch/grid-01/cam1/rules/lane/intrusion/set", "OFF"),
        ("gridwatch/grid-01/cam1/snapshot/request", r#"{"request_id":"r1"}"#),
        ("gridwatch/grid-01/clips/request", r#"{"event_id":"01JDZ6T3V0K6J3Q8W1YB2M4C7P"}"#),
        ("gridwatch/grid-01/notices", notice),
    ];
    for (topic, payload) in commands {
        desk.publish(topic, payload, false);
    }
    desk.publish("gridwatch/all/notices", "control-2", false);
    for (topic, payload) in commands {
        assert!(g1.wait_for(topic, payload, WAIT), "grid-01 did not get the desk's {topic}");
    }
    g1.settle_after("gridwatch/all/notices", "control-2");
    g2.settle_after("gridwatch/all/notices", "control-2");
    // Nor did grid-01's own forged commands reach it, or anything of grid-01 reach grid-02.
    assert!(!g1.seen.iter().any(|(_, p)| p == b"forged"), "grid-01 received a command it published itself");
    let snooped: Vec<&str> =
        g2.seen.iter().map(|(t, _)| t.as_str()).filter(|t| t.starts_with("gridwatch/grid-01/")).collect();
    assert!(snooped.is_empty(), "grid-02 read grid-01's {snooped:?}");
    drop(broker);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The file's optional block: with its deny lines and a user block per site, a grid
/// point cannot ask itself for a picture or a clip, and still gets the desk's requests.
#[test]
fn the_optional_block_stops_a_grid_point_asking_itself() {
    let dir = scratch("acl-strict");
    let text = shipped_acl();
    let block = text.find("# ---- Optional").expect("the optional block");
    let strict = text[..block].to_owned()
        + &text[block..]
            .lines()
            .map(|l| l.strip_prefix('#').filter(|r| !r.starts_with([' ', '-'])).unwrap_or(l))
            .map(|l| l.replace("grid-07", "grid-01") + "\n")
            .collect::<String>();
    assert!(
        strict.contains("\npattern deny gridwatch/%u/+/snapshot/request\n"),
        "the optional block changed: {strict}"
    );
    let broker = broker(&dir, &strict);
    let port = broker.port();

    let mut desk = Peer::connect(port, "desk", &["gridwatch/#".to_owned()]);
    let mut g1 = Peer::connect(port, "grid-01", &device_filters("grid-01"));
    let requests = [
        ("gridwatch/grid-01/cam1/snapshot/request", r#"{"request_id":"r1"}"#),
        ("gridwatch/grid-01/clips/request", r#"{"event_id":"e1"}"#),
    ];
    for (topic, payload) in requests {
        g1.publish(topic, payload, false);
    }
    g1.publish("gridwatch/grid-01/cam1/snapshot/r1", "picture", false);
    desk.settle_after("gridwatch/grid-01/cam1/snapshot/r1", "picture");
    for (topic, payload) in requests {
        assert!(!desk.got(topic, payload), "grid-01 could still publish {topic}");
    }
    for (topic, payload) in requests {
        desk.publish(topic, payload, false);
    }
    for (topic, payload) in requests {
        assert!(g1.wait_for(topic, payload, WAIT), "grid-01 no longer gets the desk's {topic}");
    }
    drop(broker);
    let _ = std::fs::remove_dir_all(&dir);
}
