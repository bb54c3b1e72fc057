//! The rules about people on the real clip, broker and daemon: `person_down` on the
//! clip turned on its side (made here with FFmpeg, where people appear lying) and not
//! on the upright clip nor for people crossing quickly; `inactivity` only where no one
//! goes; occupation by a stall's minder as by parked vehicles.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime};

use gridwatch::contract::{EventMessage, EventType};
use gridwatch::testkit::mosquitto::Mosquitto;
use gridwatch::testkit::rtsp_server::RtspServer;

use super::support::*;

/// Where people cross the lower right of the upright clip (as in rules.rs): one man
/// stands there for 8 s (52 to 61 s of the clip), the others pass.
const CROSSING: [[f32; 2]; 4] = [[0.7, 0.45], [1.0, 0.45], [1.0, 0.9], [0.7, 0.9]];
/// The lawn bottom left: people walk past its edge, none onto it.
const LAWN: &str = "[[0.0, 0.75], [0.3, 0.75], [0.3, 1.0], [0.0, 1.0]]";
/// The walkway (as in rules.rs), where someone is always in sight.
const WALKWAY: &str = "[[0.0, 0.30], [0.55, 0.30], [1.0, 0.38], [1.0, 0.9], [0.45, 0.6], [0.0, 0.46]]";
/// Where a man stands on the walkway for most of the clip (the reference frames at
/// 2, 6, 10 and 14 s have a person there, feet at y 0.43 to 0.48): a stallholder.
const STALL: &str = "[[0.42, 0.25], [0.6, 0.25], [0.6, 0.55], [0.42, 0.55]]";
/// The parked van and car, top right (as in rules.rs).
const PARKING: &str = "[[0.82, 0.08], [1.0, 0.08], [1.0, 0.22], [0.82, 0.22]]";

const DOWN_S: f64 = 5.0;

/// `clip` turned a quarter clockwise (people lie along the picture's width, heads to
/// the right) and played `speed` times faster, as Annex-B H.264 at 10 fps.
fn turned_clip(dir: &Path, clip: &Path, speed: u32) -> PathBuf {
    let out = dir.join(format!("turned-x{speed}.h264"));
    let filter = format!("transpose=clock,setpts=PTS/{speed}");
    let status = Command::new("ffmpeg")
        .args(["-loglevel", "error", "-y", "-i"])
        .arg(clip)
        .args(["-vf", &filter, "-r", "10", "-c:v", "libx264", "-preset", "ultrafast", "-g", "20", "-an"])
        .arg(&out)
        .status()
        .expect("ffmpeg runs (scripts/setup.sh installs it)");
    assert!(status.success(), "ffmpeg could not turn {}", clip.display());
    out
}

/// `points` (normalised, upright picture) where they are in the picture turned a
/// quarter clockwise: (x, y) goes to (1 - y, x).
fn turned(points: &[[f32; 2]]) -> String {
    let moved: Vec<[f32; 2]> = points.iter().map(|[x, y]| [1.0 - y, *x]).collect();
    serde_json::to_string(&moved).unwrap()
}

fn zone(name: &str, points: &str, rules: &str) -> String {
    format!("[[cameras.zones]]\nname = \"{name}\"\npoints = {points}\n{rules}\n")
}

/// The turned views cost two more inferences a picture: these cameras analyse 3 a
/// second, so that the test leaves the machine's other tests room.
const TURNED_FPS: u32 = 3;

fn camera(id: &str, url: &str) -> String {
    format!("[[cameras]]\nid = \"{id}\"\nurl = \"{url}\"\ndetect_fps = {TURNED_FPS}\ntrack = [\"person\"]\n")
}

fn down_rule() -> String {
    format!("[cameras.zones.person_down]\nseconds = {DOWN_S}")
}

/// Runs the daemon on `config` for `secs`, stops it, and returns what the desk saw.
fn run_for(dir: &Path, broker: &Mosquitto, config: &Path, secs: u64) -> (Vec<(EventMessage, Instant)>, String) {
    let mut desk = Desk::connect(broker.port());
    let mut daemon = Daemon::start(config, dir.join("run.log"));
    desk.wait_for(Duration::from_secs(secs), |_| false);
    daemon.signal(libc::SIGTERM);
    assert!(daemon.wait(Duration::from_secs(30)).is_some_and(|s| s.success()), "{}", daemon.log());
    assert!(desk.wait_for(Duration::from_secs(10), last_status_is("stopped")), "{}", daemon.log());
    (desk.events(), daemon.log())
}

fn of<'a>(events: &'a [(EventMessage, Instant)], camera: &str, kind: &str, zone: &str) -> Vec<&'a EventMessage> {
    events
        .iter()
        .map(|(e, _)| e)
        .filter(|e| e.camera == camera && e.kind == kind && e.zones.iter().any(|z| z == zone))
        .collect()
}

fn news<'a>(events: &[&'a EventMessage]) -> Vec<&'a EventMessage> {
    events.iter().copied().filter(|e| e.event_type == EventType::New).collect()
}

fn lying(e: &EventMessage) -> bool {
    // The turned picture is 576 wide, 768 high.
    (e.bbox[2] - e.bbox[0]) * 576.0 > (e.bbox[3] - e.bbox[1]) * 768.0
}

/// The clip turned on its side at its own pace: the people who stand still on the
/// walkway (half a minute, the man in the middle; up to 8 s, a man on the crossing)
/// lie still, and are down after DOWN_S. At eight times the pace nobody stays on the
/// crossing a second (with a machine so busy that the camera plays slower, still far
/// from 5 s): it sees people lying pass, and no one down.
#[test]
fn person_down_on_the_clip_turned_on_its_side_not_for_people_passing() {
    let dir = scratch("person-down");
    let broker = Mosquitto::start().expect("mosquitto");
    let clip = fixture("video/vtest.h264");
    let (slow, quick) = (turned_clip(&dir, &clip, 1), turned_clip(&dir, &clip, 8));
    let server = RtspServer::start(0, &[("/lying", slow.as_path()), ("/quick", quick.as_path())]).expect("RTSP");
    let mut text = base_config(broker.port(), &server.url("/lying"))
        .replace("id = \"walkway\"", "id = \"lying\"")
        .replace("detect_fps = 5", &format!("detect_fps = {TURNED_FPS}"));
    let everywhere = "[[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]]";
    text += &zone("everywhere", everywhere, &down_rule());
    text += &camera("quick", &server.url("/quick"));
    text += &zone("crossing", &turned(&CROSSING), &down_rule());
    let config = write_config_text(&dir, &text);
    let (events, log) = run_for(&dir, &broker, &config, 60);
    let summary: Vec<String> = events
        .iter()
        .filter(|(e, _)| e.kind == "person_down")
        .map(|(e, _)| format!("{} {} {} {:?} {:?}", e.camera, e.event_type.as_str(), e.at, e.bbox, e.detail))
        .collect();
    let why = format!("{summary:#?}\nlog:\n{log}");

    let down = of(&events, "lying", "person_down", "everywhere");
    assert!(!news(&down).is_empty(), "people lying still are down: {why}");
    for e in &down {
        assert_eq!(e.label, "person");
        assert!(lying(e), "a down person's box is lying: {e:?}");
        let down_s = e.detail.as_ref().and_then(|d| d["down_s"].as_f64()).expect("detail.down_s");
        assert!(down_s >= DOWN_S, "down only after {DOWN_S} s: {e:?}");
    }
    for e in news(&down) {
        let ends = down.iter().filter(|x| x.event_id == e.event_id && x.event_type == EventType::End).count();
        assert!(ends <= 1, "{e:?}");
    }

    // Object events name a zone only once a track has stayed in it; these tracks are
    // brief, so where their boxes' bottom-centres are tells.
    let [x1, y1, x2, y2] = [1.0 - CROSSING[2][1], CROSSING[0][0], 1.0 - CROSSING[0][1], CROSSING[1][0]];
    let in_crossing = |e: &EventMessage| {
        let (x, y) = ((e.bbox[0] + e.bbox[2]) / 2.0, e.bbox[3]);
        (x1..x2).contains(&x) && (y1..=y2).contains(&y)
    };
    let passing = events.iter().filter(|(e, _)| e.camera == "quick" && e.kind == "object" && lying(e));
    assert!(passing.filter(|(e, _)| in_crossing(e)).count() >= 5, "people pass lying: {why}");
    assert!(of(&events, "quick", "person_down", "crossing").is_empty(), "passing is not down: {why}");
    let _ = std::fs::remove_dir_all(&dir);
}

fn hhmm(minute: u32) -> String {
    format!("{:02}:{:02}", (minute / 60) % 24, minute % 60)
}

/// The upright clip: nobody is down; the lawn, where no one goes, is inactive once
/// (and stays so until the end); the walkway never is; the stall's minder occupies
/// it as the parked vehicles occupy theirs.
#[test]
fn upright_clip_inactivity_only_where_no_one_goes_and_a_stall_occupied() {
    let dir = scratch("person-upright");
    let broker = Mosquitto::start().expect("mosquitto");
    let server = RtspServer::start(0, &[("/walkway", fixture("video/vtest.h264").as_path())]).expect("RTSP");
    let now = gridwatch::device::config::local_minute(SystemTime::now());
    let window = format!("window = \"{}-{}\"", hhmm(now + 1440 - 60), hhmm(now + 120));
    let quiet = |secs: u32| format!("[cameras.zones.inactivity]\n{window}\nseconds = {secs}");
    let mut text = base_config(broker.port(), &server.url("/walkway"));
    let everywhere = "[[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]]";
    text += &zone("everywhere", everywhere, &down_rule());
    text += &zone("lawn", LAWN, &quiet(5));
    text += &zone("walkway", WALKWAY, &quiet(5));
    text += &zone("parking", PARKING, "[cameras.zones.occupation]\nseconds = 5\nlabels = [\"car\", \"truck\"]");
    let stall =
        "[cameras.zones.occupation]\nseconds = 5\nlabels = [\"person\", \"umbrella\", \"chair\", \"car\", \"truck\"]";
    text += &zone("stall", STALL, stall);
    let config = write_config_text(&dir, &text);
    let (events, log) = run_for(&dir, &broker, &config, 40);
    let summary: Vec<String> = events
        .iter()
        .filter(|(e, _)| e.kind != "object")
        .map(|(e, _)| format!("{} {} {:?} {:?} {:?}", e.kind, e.event_type.as_str(), e.zones, e.label, e.detail))
        .collect();
    let why = format!("{summary:#?}\nlog:\n{log}");

    assert!(events.iter().any(|(e, _)| e.kind == "object"), "people are seen: {why}");
    assert!(of(&events, "walkway", "person_down", "everywhere").is_empty(), "nobody lies: {why}");

    let lawn = of(&events, "walkway", "inactivity", "lawn");
    assert_eq!(news(&lawn).len(), 1, "{why}");
    let d = news(&lawn)[0].detail.clone().expect("detail");
    assert!(d["quiet_s"].as_f64().unwrap() >= 5.0 && d["last_seen_at"].is_null(), "{d}");
    assert!(of(&events, "walkway", "inactivity", "walkway").is_empty(), "{why}");

    let parked = news(&of(&events, "walkway", "occupation", "parking"));
    assert!(!parked.is_empty() && parked.iter().all(|e| ["car", "truck"].contains(&e.label.as_str())), "{why}");
    let stall = news(&of(&events, "walkway", "occupation", "stall"));
    assert!(stall.iter().any(|e| e.label == "person"), "the minder: {why}");
    for e in &stall {
        assert!(e.detail.as_ref().unwrap()["dwell_s"].as_f64().unwrap() >= 5.0, "{e:?}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
