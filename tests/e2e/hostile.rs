//! Hostile peers: cameras that lie about sizes (issue 13.3), floods of local
//! connections under a low file limit (13.6), and the technician's tools against them.
//! Memory is measured as the peak RSS the kernel reports for the process.

use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use gridwatch::testkit::hostile_rtsp::{HostileRtsp, Lie};
use gridwatch::testkit::mosquitto::{Mosquitto, free_port};
use gridwatch::testkit::rtsp_server::RtspServer;

use super::support::*;

const MB: u64 = 1 << 20;

/// The binary under test: `$GRIDWATCH_E2E_BIN` when set (a build folder shared by
/// several branches may hold another branch's `gridwatch`), else this build's.
fn bin() -> String {
    std::env::var("GRIDWATCH_E2E_BIN").unwrap_or_else(|_| BIN.to_owned())
}

/// Runs `gridwatch ARGS...` to the end: exit code, stdout, stderr.
fn gw(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(bin()).args(args).output().expect("run gridwatch");
    let text = |b: Vec<u8>| String::from_utf8_lossy(&b).into_owned();
    (out.status.code().unwrap_or(-1), text(out.stdout), text(out.stderr))
}

/// `gridwatch run --config CONFIG` with its log in `log`, after `setup` on the command.
fn daemon(config: &std::path::Path, log: std::path::PathBuf, setup: impl FnOnce(&mut Command)) -> Daemon {
    let mut cmd = Command::new(bin());
    cmd.args(["run", "--config"])
        .arg(config)
        .env("GRIDWATCH_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap());
    setup(&mut cmd);
    Daemon { child: cmd.spawn().expect("start gridwatch"), log }
}

/// Every lie of issue 13: each alone took gigabytes before the caps.
const LIES: [Lie; 4] =
    [Lie::HugeContentLength, Lie::EndlessHeaders, Lie::EndlessAccessUnit, Lie::Picture { width: 16000, height: 9000 }];

/// Runs `gridwatch ARGS...` to its end: exit code, stdout, stderr and peak RSS.
///
/// The peak comes from GNU time, not from our own `wait4`: Linux carries the peak of the
/// address space a process was spawned from across `exec`, so a child of this test
/// process would report the test process's own peak (240 MB with the suite running).
/// `time` is small, so its child's figure is the probe's.
fn run_measured(args: &[&str]) -> (i32, String, String, u64) {
    let report = tempfile::NamedTempFile::new().unwrap();
    let out = Command::new("/usr/bin/time")
        .args(["--format", "%M", "--output"])
        .arg(report.path())
        .arg(bin())
        .args(args)
        .output()
        .expect("run gridwatch under /usr/bin/time (Debian package `time`; scripts/setup.sh installs it)");
    let text = |b: Vec<u8>| String::from_utf8_lossy(&b).into_owned();
    let report = std::fs::read_to_string(report.path()).unwrap();
    // With a non-zero exit, time writes "Command exited with non-zero status N" first.
    let kb: u64 = report.lines().last().and_then(|l| l.trim().parse().ok()).unwrap_or_else(|| panic!("{report}"));
    (out.status.code().unwrap_or(-1), text(out.stdout), text(out.stderr), kb * 1024)
}

/// Peak and current RSS of a running process, from /proc.
fn rss(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kb = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse::<u64>().ok())
            .unwrap_or(0)
    };
    (kb("VmHWM:") * 1024, kb("VmRSS:") * 1024)
}

/// `probe` against each lie: refused as too large (exit 20), quickly, and small. Before
/// the caps, `probe` grew to 2.1 GB on the first three.
#[test]
fn probe_stays_small_against_lying_cameras() {
    for lie in LIES {
        let server = HostileRtsp::start(&[lie]).unwrap();
        let url = server.url("/cam");
        let started = Instant::now();
        let (code, out, err, peak) = run_measured(&["probe", &url, "--timeout", "10", "--json"]);
        let took = started.elapsed();
        eprintln!("{lie:?}: exit {code} in {took:?}, peak RSS {} MB\n{out}{err}", peak / MB);
        assert_eq!(code, 20, "{lie:?}: {out}{err}");
        let r: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(r["error"], "too_large", "{r}");
        assert!(r["reason"].as_str().unwrap().contains("limit"), "{r}");
        assert!(peak < 200 * MB, "{lie:?}: probe peaked at {} MB", peak / MB);
        assert!(took < Duration::from_secs(9), "{lie:?}: refused only after {took:?}");
    }
}

/// `probe --timeout nan` and friends are refused as usage errors, not a panic.
#[test]
fn probe_refuses_nonsense_durations() {
    for args in [["--timeout", "nan"], ["--duration", "nan"], ["--timeout", "inf"], ["--duration", "0"]] {
        let (code, out, err) = gw(&["probe", "rtsp://127.0.0.1:9/x", args[0], args[1]]);
        assert_eq!(code, 2, "{args:?}: {out}{err}");
        assert!(err.contains(args[0]) && !err.contains("panicked"), "{err}");
    }
}

/// Two cameras, one of them lying in every way in turn: the daemon refuses each lie
/// with a clear `last_error`, stays small, and the other camera streams throughout.
#[test]
fn a_lying_camera_keeps_the_daemon_small_and_the_other_camera_streaming() {
    let dir = scratch("hostile-daemon");
    let broker = Mosquitto::start().unwrap();
    let server = RtspServer::start(0, &[("/cam", &fixture("video/vtest.h264"))]).unwrap();
    let liar = HostileRtsp::start(&LIES).unwrap();
    // A third camera is honest but held to a cap set in the config below its 768x576.
    let text = format!(
        "{}\n[[cameras]]\nid = \"liar\"\nurl = \"{}\"\ndetect_fps = 1\n\
         [[cameras]]\nid = \"tight\"\nurl = \"{}\"\ndetect_fps = 1\nmax_picture_pixels = 76800\n",
        base_config(broker.port(), &server.url("/cam")),
        liar.url("/cam"),
        server.url("/cam")
    );
    let config = write_config_text(&dir, &text);
    let cfg = config.to_str().unwrap();
    let mut desk = Desk::connect(broker.port());
    let daemon = daemon(&config, dir.join("daemon.log"), |_| {});

    // Until the liar has been refused for each kind of lie (it reconnects with backoff):
    // an RTSP message (two lies), an access unit, a picture.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut errors = std::collections::BTreeSet::new();
    let mut walkway_frames = Vec::new();
    let mut tight_error = String::new();
    while errors.len() < 3 || liar.connections() < LIES.len() || tight_error.is_empty() {
        assert!(Instant::now() < deadline, "refusals seen: {errors:?}\n{}", daemon.log());
        std::thread::sleep(Duration::from_millis(500));
        let (code, out, _) = gw(&["status", "--config", cfg, "--json"]);
        if code != 0 {
            continue;
        }
        let s: serde_json::Value = serde_json::from_str(&out).unwrap();
        let cam = |id: &str| s["cameras"].as_array().unwrap().iter().find(|c| c["id"] == id).cloned().unwrap();
        if let Some(e) = cam("liar")["last_error"].as_str() {
            errors.insert(e.split(" of ").next().unwrap_or(e).to_owned());
        }
        tight_error = cam("tight")["last_error"].as_str().unwrap_or_default().to_owned();
        walkway_frames.push((cam("walkway")["state"].clone(), cam("walkway")["frames_analyzed"].as_u64().unwrap_or(0)));
    }
    let (peak, now) = rss(daemon.child.id());
    eprintln!("refusals: {errors:#?}\ndaemon peak RSS {} MB, now {} MB", peak / MB, now / MB);
    assert!(errors.iter().all(|e| e.starts_with("too large: the camera sent")), "{errors:?}");
    assert!(errors.iter().any(|e| e.contains("RTSP message")), "{errors:?}");
    assert!(errors.iter().any(|e| e.contains("access unit")), "{errors:?}");
    assert!(errors.iter().any(|e| e.contains("picture")), "{errors:?}");
    assert!(peak < 700 * MB, "daemon peaked at {} MB", peak / MB);
    assert!(tight_error.contains("442368 pixels (limit 76800 pixels)"), "the configured cap holds: {tight_error}");

    // The other camera streamed all along.
    let streaming = walkway_frames.iter().skip_while(|(state, _)| state != "streaming").collect::<Vec<_>>();
    assert!(streaming.len() >= 4, "{walkway_frames:?}");
    assert!(streaming.iter().all(|(state, _)| state == "streaming"), "{walkway_frames:?}");
    assert!(streaming.windows(2).all(|w| w[1].1 >= w[0].1), "{walkway_frames:?}");
    assert!(streaming.last().unwrap().1 > streaming[0].1 + 10, "{walkway_frames:?}");
    let health_ok = wait_until(&mut desk, Duration::from_secs(10), |d| {
        last_health(d, "liar").is_some_and(|h| h["last_error"].as_str().is_some_and(|e| e.starts_with("too large")))
    });
    assert!(health_ok, "the liar's health says why: {:?}", last_health(&desk, "liar"));
    assert!(liar.connections() >= LIES.len());
}

/// Sets RLIMIT_NOFILE of the child to `n` before it runs.
fn with_file_limit(cmd: &mut Command, n: u64) {
    // SAFETY: setrlimit is async-signal-safe; it runs in the child between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            let lim = libc::rlimit { rlim_cur: n, rlim_max: n };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// CPU seconds (user + system) a process has used.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> =
        stat.rsplit_once(')').map(|(_, rest)| rest.split_whitespace().collect()).unwrap_or_default();
    let ticks: f64 = fields.get(11..13).map_or(0.0, |f| f.iter().filter_map(|v| v.parse::<f64>().ok()).sum());
    // SAFETY: sysconf has no memory effects.
    ticks / unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64
}

/// The state of the open file descriptors of `pid`.
fn open_files(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

/// A flood of held connections to the metrics port and the control socket, with
/// systemd's file limit lowered to 256: the daemon keeps descriptors for its camera
/// and broker, `status` answers, a camera that drops reconnects, and nothing spins.
#[test]
fn local_servers_hold_a_flood_under_a_low_file_limit() {
    let dir = scratch("hostile-flood");
    let broker = Mosquitto::start().unwrap();
    let clip = fixture("video/vtest.h264");
    let server = RtspServer::start(0, &[("/cam", &clip)]).unwrap();
    let metrics_port = free_port().unwrap();
    let text = format!("{}\n[metrics]\nport = {metrics_port}\n", base_config(broker.port(), &server.url("/cam")));
    let config = write_config_text(&dir, &text);
    let cfg = config.to_str().unwrap();
    let daemon = daemon(&config, dir.join("daemon.log"), |cmd| with_file_limit(cmd, 256));
    let pid = daemon.child.id();
    let status = || {
        let (code, out, err) = gw(&["status", "--config", cfg, "--json"]);
        (code, serde_json::from_str::<serde_json::Value>(&out).unwrap_or_default(), err)
    };
    let streaming = |s: &serde_json::Value| s["cameras"][0]["state"] == "streaming" && s["mqtt"]["connected"] == true;
    let deadline = Instant::now() + Duration::from_secs(40);
    while !streaming(&status().1) {
        assert!(Instant::now() < deadline, "never streamed:\n{}", daemon.log());
        std::thread::sleep(Duration::from_millis(500));
    }
    let cpu_quiet = {
        let (c0, t0) = (cpu_seconds(pid), Instant::now());
        std::thread::sleep(Duration::from_secs(4));
        (cpu_seconds(pid) - c0) / t0.elapsed().as_secs_f64()
    };

    // Up to 1,000 held metrics connections (more than the file limit), as many as the
    // daemon and the kernel's queue take, and 3 silent control clients.
    let mut held = Vec::new();
    let mut refused = 0;
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], metrics_port));
    while held.len() + refused < 1000 && refused < 20 {
        match std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(50)) {
            Ok(s) => held.push(s),
            Err(_) => refused += 1,
        }
    }
    assert!(held.len() > 100, "only {} connections held", held.len());
    let socket = dir.join("state/control.sock");
    let silent: Vec<_> = (0..3).map(|_| std::os::unix::net::UnixStream::connect(&socket).unwrap()).collect();
    std::thread::sleep(Duration::from_secs(1));
    let fds = open_files(pid);
    let cpu_flood = {
        let (c0, t0) = (cpu_seconds(pid), Instant::now());
        std::thread::sleep(Duration::from_secs(4));
        (cpu_seconds(pid) - c0) / t0.elapsed().as_secs_f64()
    };
    let (code, s, err) = status();
    eprintln!(
        "{} metrics connections held; CPU {cpu_quiet:.2} -> {cpu_flood:.2} cores during the flood; \
         {fds} descriptors open; status {code}",
        held.len()
    );
    assert_eq!(code, 0, "status during the flood: {err}\n{}", daemon.log());
    assert!(streaming(&s), "{s}");
    assert!(fds < 150, "{fds} descriptors open during the flood");
    assert!(cpu_flood < cpu_quiet + 0.5, "the flood costs {cpu_flood:.2} cores (quiet: {cpu_quiet:.2})");

    // The camera drops and comes back while the flood goes on: it can still connect.
    let port = server.port();
    server.stop();
    let deadline = Instant::now() + Duration::from_secs(15);
    while status().1["cameras"][0]["state"] == "streaming" {
        assert!(Instant::now() < deadline, "the camera never noticed the drop");
        std::thread::sleep(Duration::from_millis(300));
    }
    let _server = RtspServer::start(port, &[("/cam", &clip)]).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !streaming(&status().1) {
        assert!(Instant::now() < deadline, "no reconnect during the flood:\n{}", daemon.log());
        std::thread::sleep(Duration::from_millis(500));
    }
    // A scrape still gets through once the held connections time out (5 s each).
    drop(held);
    drop(silent);
    let mut s = std::net::TcpStream::connect(("127.0.0.1", metrics_port)).unwrap();
    std::io::Write::write_all(&mut s, b"GET /metrics HTTP/1.1\r\n\r\n").unwrap();
    let mut response = String::new();
    std::io::Read::read_to_string(&mut s, &mut response).unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
}
