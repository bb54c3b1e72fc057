//! Deployment: the systemd unit passes `systemd-analyze verify` and keeps its exposure
//! figure, the daemon does its job inside the unit's seccomp policy (system-call filter,
//! address families, MemoryDenyWriteExecute=), and the .deb holds the binary, ONNX
//! Runtime, the model, the unit and a configuration that passes `check` as shipped.
//!
//! systemd is not PID 1 here: the unit is checked offline, and its seccomp policy is
//! applied by scripts/unit-seccomp-run.py (libseccomp) instead of by systemd.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use gridwatch::testkit::mosquitto::Mosquitto;
use gridwatch::testkit::rtsp_server::RtspServer;

use super::support::*;

/// The highest exposure `systemd-analyze security --offline=true` may give the unit.
const MAX_EXPOSURE: f32 = 1.1;

fn repo(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

fn run(cmd: &mut Command) -> Output {
    cmd.output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// The unit as shipped, with ExecStart's /usr/bin/gridwatch replaced by `bin` (verify
/// insists that the binary exists), written as `dir/gridwatch.service`.
fn unit_with_binary(dir: &Path, unit: &str, bin: &Path) -> PathBuf {
    let shipped = "ExecStart=/usr/bin/gridwatch ";
    assert!(unit.contains(shipped), "the unit's ExecStart no longer starts with {shipped}");
    let path = dir.join("gridwatch.service");
    std::fs::write(&path, unit.replace(shipped, &format!("ExecStart={} ", bin.display()))).unwrap();
    path
}

fn verify(unit: &Path) -> Output {
    run(Command::new("systemd-analyze").arg("verify").arg(unit))
}

/// `key=value` lines of the unit (last one wins), for the settings the daemon relies on.
fn setting<'a>(unit: &'a str, key: &str) -> Option<&'a str> {
    unit.lines().filter_map(|l| l.strip_prefix(key)?.strip_prefix('=')).next_back()
}

#[test]
fn unit_verifies_cleanly_and_declares_the_daemons_contract() {
    let dir = scratch("unit-verify");
    let unit = std::fs::read_to_string(repo("systemd/gridwatch.service")).unwrap();
    for (key, want) in [
        ("Type", "notify"),
        ("NotifyAccess", "main"),
        ("WatchdogSec", "30s"),
        ("Restart", "on-failure"),
        ("User", "gridwatch"),
        ("StateDirectory", "gridwatch"),
        ("ConfigurationDirectory", "gridwatch"),
        ("RuntimeDirectory", "gridwatch"),
        ("LoadCredential", "mqtt-password:/etc/gridwatch/mqtt-password"),
        ("ExecStart", "/usr/bin/gridwatch run --config /etc/gridwatch/gridwatch.toml"),
    ] {
        assert_eq!(setting(&unit, key), Some(want), "{key}= in systemd/gridwatch.service");
    }

    let out = verify(&unit_with_binary(&dir, &unit, Path::new(BIN)));
    assert!(out.status.success() && text(&out).is_empty(), "systemd-analyze verify must say nothing:\n{}", text(&out));

    // The same check on a unit whose binary is missing speaks up: verify really looks.
    let out = verify(&unit_with_binary(&dir, &unit, &dir.join("no-such-gridwatch")));
    assert!(text(&out).contains("no-such-gridwatch"), "verify did not notice a missing binary:\n{}", text(&out));
}

#[test]
fn unit_exposure_stays_at_its_reported_figure() {
    for unit in ["systemd/gridwatch.service", "systemd/gridwatch-desk.service"] {
        exposure_at_most(unit, MAX_EXPOSURE);
    }
}

fn exposure_at_most(unit: &str, max: f32) {
    let out = run(Command::new("systemd-analyze").args(["security", "--offline=true"]).arg(repo(unit)));
    let all = text(&out);
    let line =
        all.lines().find(|l| l.contains("Overall exposure level")).unwrap_or_else(|| panic!("no figure:\n{all}"));
    let figure: f32 = line
        .split(": ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("cannot read the figure in {line:?}"));
    eprintln!("{unit}: {}", line.trim());
    assert!(figure <= max, "{unit}: exposure {figure} is above {max}:\n{all}");
}

/// `program args` under the unit's seccomp policy.
fn sandboxed(program: &str) -> Command {
    let mut cmd = Command::new(repo("scripts/unit-seccomp-run.py"));
    cmd.arg(repo("systemd/gridwatch.service")).arg("--").arg(program);
    cmd
}

#[test]
fn daemon_works_inside_the_units_seccomp_policy() {
    // The policy bites: a writable and executable mapping is refused, and so is netlink.
    let probe = "import mmap, socket\n\
        for f in (lambda: mmap.mmap(-1, 4096, prot=7), lambda: socket.socket(socket.AF_NETLINK, socket.SOCK_RAW)):\n\
        \x20   try:\n\
        \x20       f(); print('allowed')\n\
        \x20   except OSError as e:\n\
        \x20       print('refused', e.errno)\n";
    let out = run(sandboxed("/usr/bin/python3").args(["-c", probe]));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "refused 1\nrefused 97\n", "{}", text(&out));

    // The whole job inside it: RTSP in, GStreamer decode, ONNX Runtime, SQLite, MQTT out,
    // then a clean stop.
    let dir = scratch("seccomp");
    let broker = Mosquitto::start().expect("mosquitto");
    let camera = RtspServer::start(0, &[("/walkway", fixture("video/vtest.h264").as_path())]).expect("RTSP server");
    let config = write_config(&dir, broker.port(), &camera.url("/walkway"));
    let mut desk = Desk::connect(broker.port());
    let log = dir.join("run.log");
    let child = sandboxed(BIN)
        .args(["run", "--config"])
        .arg(&config)
        .env("GRIDWATCH_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("start the sandboxed daemon");
    let mut daemon = Daemon { child, log };
    let started = Instant::now();
    let got_event = desk.wait_for(Duration::from_secs(20), |seen| {
        seen.iter().any(|m| m.topic == "gridwatch/e2e/events" && m.payload.windows(8).any(|w| w == b"\"person\""))
    });
    assert!(got_event, "no person event within 20 s under the unit's seccomp policy; log:\n{}", daemon.log());
    eprintln!("first event {:.1} s after start, under the unit's seccomp policy", started.elapsed().as_secs_f32());
    daemon.signal(libc::SIGTERM);
    let status = daemon.wait(Duration::from_secs(15)).expect("the sandboxed daemon did not stop on SIGTERM");
    assert!(status.success(), "exit {status:?}; log:\n{}", daemon.log());
    assert!(desk.wait_for(Duration::from_secs(5), last_status_is("stopped")), "no 'stopped' status");
    assert!(!daemon.log().contains("not permitted"), "a refused call showed up in the log:\n{}", daemon.log());
}

#[test]
fn deb_holds_binary_runtime_model_unit_and_a_config_that_passes_check() {
    let dir = scratch("deb");
    let out = run(Command::new(repo("scripts/deb.sh")).env("GRIDWATCH_BIN", BIN).env("GRIDWATCH_DEB_OUT", &dir));
    assert!(out.status.success(), "scripts/deb.sh failed:\n{}", text(&out));
    let deb = dir.join(format!("gridwatch_{}_amd64.deb", env!("CARGO_PKG_VERSION")));
    assert!(deb.is_file(), "{} not built:\n{}", deb.display(), text(&out));

    let listing = text(&run(Command::new("dpkg-deb").arg("-c").arg(&deb)));
    for path in [
        "./usr/bin/gridwatch",
        "./usr/lib/gridwatch/libonnxruntime.so.1.31.1",
        "./usr/lib/gridwatch/libonnxruntime.so -> libonnxruntime.so.1.31.1",
        "./usr/share/gridwatch/models/yolox_nano.onnx",
        "./usr/share/gridwatch/models/coco80.txt",
        "./usr/share/gridwatch/models/NOTICE",
        "./usr/share/gridwatch/demo.h264",
        "./lib/systemd/system/gridwatch.service",
        "./etc/gridwatch/gridwatch.toml",
        "./lib/systemd/system/gridwatch-desk.service",
        "./etc/gridwatch/desk.toml",
        "./usr/share/doc/gridwatch/desk.md",
        "./usr/lib/sysusers.d/gridwatch.conf",
        "./usr/share/doc/gridwatch/copyright",
    ] {
        assert!(listing.lines().any(|l| l.ends_with(path)), "{path} is not in the package:\n{listing}");
    }

    let info = text(&run(Command::new("dpkg-deb").arg("-I").arg(&deb)));
    let field = |name: &str| {
        info.lines()
            .find_map(|l| l.trim_start().strip_prefix(&format!("{name}: ")))
            .unwrap_or_else(|| panic!("no {name} field:\n{info}"))
            .to_owned()
    };
    assert_eq!(field("Package"), "gridwatch");
    assert_eq!(field("Version"), env!("CARGO_PKG_VERSION"));
    assert_eq!(field("Architecture"), "amd64");
    let depends: Vec<String> =
        field("Depends").split(',').map(|d| d.split_whitespace().next().unwrap_or_default().to_owned()).collect();
    for plugins in ["gstreamer1.0-plugins-base", "gstreamer1.0-plugins-bad", "gstreamer1.0-libav"] {
        assert!(depends.iter().any(|d| d == plugins), "Depends lacks {plugins}: {depends:?}");
    }
    for script in ["postinst", "prerm", "postrm", "conffiles"] {
        assert!(info.contains(&format!(" {script} ")), "no {script} in the control archive:\n{info}");
    }

    // Every library the binary links comes from a package the .deb depends on.
    let dynamic = text(&run(Command::new("readelf").args(["-d", BIN])));
    for soname in dynamic.lines().filter_map(|l| l.split("Shared library: [").nth(1)?.strip_suffix(']')) {
        let owner = text(&run(Command::new("dpkg").args(["-S", &format!("*/{soname}")])));
        let pkgs: Vec<&str> = owner.lines().filter_map(|l| l.split([':', ',']).next()).collect();
        assert!(
            pkgs.iter().any(|p| depends.iter().any(|d| d == p)),
            "{soname} comes from {pkgs:?}, none of which is in Depends {depends:?}"
        );
    }

    // Unpacked: the shipped binary, with the shipped ONNX Runtime beside it
    // (../lib/gridwatch is searched before the machine's copies), accepts the shipped
    // configuration, and the shipped unit verifies against the shipped binary.
    let root = dir.join("root");
    let out = run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&root));
    assert!(out.status.success(), "{}", text(&out));
    let out = run(Command::new(root.join("usr/bin/gridwatch"))
        .args(["check", "--config"])
        .arg(root.join("etc/gridwatch/gridwatch.toml"))
        .env_remove("ORT_DYLIB_PATH"));
    assert!(out.status.success(), "the shipped configuration fails check:\n{}", text(&out));
    for unit in ["gridwatch.service", "gridwatch-desk.service"] {
        let text_of = std::fs::read_to_string(root.join("lib/systemd/system").join(unit)).unwrap();
        let unit_dir = dir.join(unit);
        std::fs::create_dir_all(&unit_dir).unwrap();
        let out = verify(&unit_with_binary(&unit_dir, &text_of, &root.join("usr/bin/gridwatch")));
        assert!(out.status.success() && text(&out).is_empty(), "the shipped {unit}:\n{}", text(&out));
    }
    // An upgrade keeps both configurations.
    let conffiles = text(&run(Command::new("dpkg-deb").arg("-I").arg(&deb).arg("conffiles")));
    for f in ["/etc/gridwatch/gridwatch.toml", "/etc/gridwatch/desk.toml"] {
        assert!(conffiles.lines().any(|l| l.trim() == f), "{f} is not a conffile:\n{conffiles}");
    }
}

#[test]
fn an_installed_binary_names_no_build_path_and_says_where_it_looked_for_the_clip() {
    let dir = scratch("installed-layout");
    let bin = dir.join("usr/bin/gridwatch");
    std::fs::create_dir_all(bin.parent().unwrap()).unwrap();
    std::fs::copy(BIN, &bin).unwrap();
    let build_tree = env!("CARGO_MANIFEST_DIR");
    for args in [&["--help"][..], &["demo", "--help"], &["bench", "--help"]] {
        let out = run(Command::new(&bin).args(args).current_dir(&dir));
        assert!(out.status.success(), "{args:?}: {}", text(&out));
        assert!(!text(&out).contains(build_tree), "{args:?} names the build tree:\n{}", text(&out));
    }
    // No clip installed beside it: the error lists where it looked, starting beside itself.
    let out = run(Command::new(&bin).args(["demo", "--seconds", "1"]).current_dir(&dir));
    assert!(!out.status.success());
    let beside = dir.join("usr/bin/../share/gridwatch/demo.h264");
    assert!(text(&out).contains(&beside.display().to_string()), "{}", text(&out));
    assert!(text(&out).contains("--clip"), "{}", text(&out));
}
