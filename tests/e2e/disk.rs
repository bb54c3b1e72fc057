//! The outbox on a small, full or damaged disk (issue 13, items 1, 2 and 9): a tmpfs as
//! `storage.dir`, filled up while the broker is away; a database with junk in its
//! middle. The daemon must not resend what the broker has, must count what it could
//! not store (a gap in `seq`), must keep within the disk, and must keep its cameras
//! running on a damaged database.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use gridwatch::contract::{EventMessage, EventType};
use gridwatch::device::publish::Outbox;
use gridwatch::testkit::mosquitto::{Mosquitto, free_port};
use gridwatch::testkit::rtsp_server::RtspServer;

use super::support::*;

/// The binary under test: `GRIDWATCH_E2E_BIN` when set (a copy, safe from other
/// builds sharing the target folder), else cargo's.
fn bin() -> PathBuf {
    std::env::var_os("GRIDWATCH_E2E_BIN").map_or_else(|| PathBuf::from(BIN), PathBuf::from)
}

fn start(config: &Path, log: PathBuf) -> Daemon {
    let child = Command::new(bin())
        .args(["run", "--config"])
        .arg(config)
        .env("GRIDWATCH_LOG", "info")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("start gridwatch");
    Daemon { child, log }
}

/// A tmpfs of `size` mounted on `dir` for the test's life; `None` (after saying so)
/// where this process may not mount.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Option<Tmpfs> {
        // SAFETY: geteuid only reads the process credentials.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("SKIPPED: mounting a tmpfs needs root");
            return None;
        }
        std::fs::create_dir_all(dir).unwrap();
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .status()
            .is_ok_and(|s| s.success());
        if !mounted {
            eprintln!("SKIPPED: cannot mount a tmpfs on {}", dir.display());
            return None;
        }
        Some(Tmpfs(dir.to_owned()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Writes zeros into `dir/filler` until the disk is full.
fn fill(dir: &Path) -> PathBuf {
    let path = dir.join("filler");
    let mut f = std::fs::File::create(&path).unwrap();
    let chunk = vec![0u8; 4096];
    while f.write_all(&chunk).is_ok() {}
    while f.write_all(&[0]).is_ok() {}
    path
}

/// `gridwatch status --json` of the daemon of `config`.
fn status(config: &Path) -> serde_json::Value {
    let out = Command::new(bin()).args(["status", "--json", "--config"]).arg(config).output().unwrap();
    assert!(out.status.success(), "status: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The metrics endpoint's text.
fn metrics(port: u16) -> String {
    use std::io::Read;
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("metrics endpoint listens");
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n").unwrap();
    let mut response = String::new();
    s.read_to_string(&mut response).unwrap();
    response
}

/// How often the desk got each event `seq`.
fn sends_per_seq(desk: &Desk) -> HashMap<u64, usize> {
    let mut n = HashMap::new();
    for m in desk.on("gridwatch/e2e/events") {
        if let Ok(e) = serde_json::from_slice::<EventMessage>(&m.payload) {
            *n.entry(e.seq).or_default() += 1;
        }
    }
    n
}

fn most_sends(desk: &Desk) -> (u64, usize) {
    sends_per_seq(desk).into_iter().max_by_key(|&(seq, n)| (n, seq)).unwrap_or_default()
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap().count()
}

fn stop(daemon: &mut Daemon) {
    daemon.signal(libc::SIGTERM);
    let status = daemon.wait(Duration::from_secs(20)).expect("gridwatch stops within 20 s of SIGTERM");
    assert!(status.success(), "exit status {status}; log:\n{}", daemon.log());
}

/// The full-disk run on a 1 MB tmpfs: first the budget must hold on the small
/// disk during an outage (pictures go, no event is lost); then the disk is filled to
/// the last byte, so that nothing can be written, and the broker comes back: every
/// stored event goes out once (not in a loop), what could not be stored is counted and
/// is a gap in `seq`; once there is room again, the deliveries are written.
#[test]
fn a_full_disk_during_an_outage_sends_every_event_once_and_counts_what_it_could_not_store() {
    let dir = scratch("full-disk");
    let Some(_disk) = Tmpfs::mount(&dir.join("state"), "1m") else { return };
    let port = free_port().unwrap();
    let camera = RtspServer::start(0, &[("/walkway", fixture("video/vtest.h264").as_path())]).expect("RTSP server");
    let metrics_port = free_port().unwrap();
    let text = base_config(port, &camera.url("/walkway")) + &format!("[metrics]\nport = {metrics_port}\n");
    let config = write_config_text(&dir, &text);
    let mut daemon = start(&config, dir.join("run.log"));

    // The outage on a small disk: more pictures than the disk holds.
    std::thread::sleep(Duration::from_secs(30));
    let s = status(&config);
    eprintln!("full disk: after 30 s without a broker: {}", s["outbox"]);
    assert_eq!(s["outbox"]["events_dropped"], 0, "the budget holds on a small disk: {}\n{}", s["outbox"], daemon.log());
    assert_eq!(s["outbox"]["write_errors"], 0, "{}", s["outbox"]);
    assert!(s["outbox"]["pending"].as_u64() >= Some(5), "{}", s["outbox"]);
    let fds_before = open_fds(daemon.child.id());

    // Not one byte left: every write fails from here.
    let filler = fill(&dir.join("state"));
    std::thread::sleep(Duration::from_secs(5));
    let broker = Mosquitto::start_on(port).expect("mosquitto");
    let mut desk = Desk::connect(port);
    let pending = s["outbox"]["pending"].as_u64().unwrap() as usize;
    let delivered = desk.wait_for(Duration::from_secs(60), |seen| {
        seen.iter().filter(|m| m.topic == "gridwatch/e2e/events").count() >= pending
    });
    assert!(delivered, "the backlog goes out on a full disk; log:\n{}", daemon.log());
    desk.wait_for(Duration::from_secs(15), |_| false);
    let (seq, sends) = most_sends(&desk);
    let s = status(&config);
    eprintln!("full disk: broker back, disk full: seq {seq} sent {sends} times at most; {}", s["outbox"]);
    assert!(sends <= 2, "seq {seq} was sent {sends} times: a resend loop; log:\n{}", daemon.log());
    assert!(s["outbox"]["write_error"].is_string(), "status shows the failing writes: {}", s["outbox"]);
    assert_eq!(s["outbox"]["acks_unrecorded"], true, "{}", s["outbox"]);
    assert_eq!(s["outbox"]["pending"], 0, "the broker has every stored event: {}", s["outbox"]);
    // Health goes out every 30 s.
    let failing = |d: &Desk| last_health(d, "walkway").is_some_and(|h| h["outbox_error"].is_string());
    assert!(wait_until(&mut desk, Duration::from_secs(35), failing), "health shows the failing writes");

    let m = metrics(metrics_port);
    assert!(m.contains("\ngridwatch_outbox_write_failing 1\n"), "{m}");
    assert!(!m.contains("\ngridwatch_outbox_write_errors_total 0\n"), "{m}");
    // Drops go on while the disk is full: at least those status counted.
    let dropped_metric = m
        .lines()
        .find_map(|l| l.strip_prefix("gridwatch_events_dropped_total{camera=\"walkway\"} "))
        .and_then(|v| v.parse::<u64>().ok());
    assert!(dropped_metric >= s["outbox"]["events_dropped"].as_u64(), "{m}");

    // Room again: the deliveries are written, the flag goes.
    std::fs::remove_file(&filler).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let s = loop {
        let s = status(&config);
        if s["outbox"]["write_error"].is_null() && s["outbox"]["acks_unrecorded"] == false {
            break s;
        }
        assert!(Instant::now() < deadline, "writes never recovered: {}\n{}", s["outbox"], daemon.log());
        std::thread::sleep(Duration::from_secs(1));
    };
    let dropped = s["outbox"]["events_dropped"].as_u64().unwrap();
    let fds_after = open_fds(daemon.child.id());
    assert!(fds_after <= fds_before + 2, "descriptors leak while writes fail: {fds_before} -> {fds_after}");
    desk.wait_for(Duration::from_secs(3), |_| false);
    stop(&mut daemon);
    assert!(desk.wait_for(Duration::from_secs(10), last_status_is("stopped")), "status stopped");

    // Every seq once (after dedupe) or a counted gap; every event that began ended.
    let events = check_contract(&desk);
    let last = Outbox::open_read_only(&dir.join("state")).unwrap().recent(None, 0, 1).unwrap()[0].seq;
    let gaps = last - events.len() as u64;
    eprintln!(
        "full disk: {} events delivered, last seq {last}, {gaps} gap(s), {dropped} counted as dropped; fds {fds_before} -> {fds_after}",
        events.len()
    );
    assert_eq!(gaps, dropped, "every gap in seq is a counted drop");
    assert!(desk.open_events().is_empty(), "events left open: {:?}", desk.open_events());
    let (seq, sends) = most_sends(&desk);
    assert!(sends <= 2, "seq {seq} sent {sends} times");
    drop(broker);
}

/// Junk in the middle of the outbox while the daemon is away: at the next start the
/// database is moved aside, a new one runs, the cameras keep making events that the
/// desk gets once each, and status and health say so loudly.
#[test]
fn a_damaged_outbox_is_moved_aside_and_the_cameras_keep_running() {
    let dir = scratch("damaged");
    let port = free_port().unwrap();
    let camera = RtspServer::start(0, &[("/walkway", fixture("video/vtest.h264").as_path())]).expect("RTSP server");
    let config = write_config(&dir, port, &camera.url("/walkway"));
    let mut daemon = start(&config, dir.join("run1.log"));
    std::thread::sleep(Duration::from_secs(12));
    stop(&mut daemon);
    let file = dir.join("state").join(Outbox::FILE_NAME);
    let before = Outbox::open_read_only(&dir.join("state")).unwrap().recent(None, 0, 1).unwrap()[0].seq;
    let mut bytes = std::fs::read(&file).unwrap();
    assert!(bytes.len() >= 3 * 4096, "a database of {} bytes", bytes.len());
    let mid = bytes.len() / 2 / 4096 * 4096;
    let mut x: u32 = 0x2545_f491;
    for b in &mut bytes[mid..mid + 4096] {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        *b = x as u8;
    }
    std::fs::write(&file, bytes).unwrap();

    let broker = Mosquitto::start_on(port).expect("mosquitto");
    let mut desk = Desk::connect(port);
    let mut daemon = start(&config, dir.join("run2.log"));
    let fresh = desk.wait_for(Duration::from_secs(40), |seen| {
        seen.iter()
            .filter(|m| m.topic == "gridwatch/e2e/events")
            .filter_map(|m| serde_json::from_slice::<EventMessage>(&m.payload).ok())
            .any(|e| e.seq > before && e.event_type == EventType::New)
    });
    assert!(fresh, "the cameras keep making events on a new outbox; log:\n{}", daemon.log());
    let s = status(&config);
    eprintln!("damaged: {}", s["outbox"]);
    let aside = s["outbox"]["damaged_file"].as_str().unwrap_or_else(|| panic!("status says so: {}", s["outbox"]));
    assert!(Path::new(aside).exists() && aside.contains(".damaged-"), "{aside}");
    assert!(
        wait_until(&mut desk, Duration::from_secs(35), |d| {
            last_health(d, "walkway").is_some_and(|h| h["outbox_damaged"].as_str() == Some(aside))
        }),
        "health says so"
    );
    let log = daemon.log();
    assert!(log.contains("moved aside") && !log.contains("move it aside to start a fresh outbox"), "{log}");
    stop(&mut daemon);
    assert!(desk.wait_for(Duration::from_secs(10), last_status_is("stopped")), "status stopped");
    let (seq, sends) = most_sends(&desk);
    assert!(sends <= 2, "seq {seq} sent {sends} times");
    let events = check_contract(&desk);
    assert!(desk.open_events().is_empty(), "events left open: {:?}", desk.open_events());
    eprintln!("damaged: {} events delivered after the damage; seq went on from {before}", events.len());
    drop(broker);
}
