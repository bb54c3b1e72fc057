//! Event clips (issue 16) from the daemon as a process, on the street clip served over
//! RTSP: what the desk receives is read back with FFmpeg's own tools.
//!
//! Each test arms an intrusion rule over the walkway (where people always are) only
//! once the camera's ring holds more than the pre-roll, and disarms it a few seconds
//! later: one intrusion event whose times the test knows, and a clip that must cover
//! it from a keyframe `PRE_S` before its start to `POST_S` after its end.

use std::path::{Path, PathBuf};

use std::time::{Duration, Instant, SystemTime};

use gridwatch::contract::{EventMessage, EventType};
use gridwatch::testkit::media::{Probe, grey_frames, probe};
use gridwatch::testkit::mosquitto::{BrokerOptions, Mosquitto, free_port};
use gridwatch::testkit::rtsp_server::RtspServer;
use sha2::{Digest, Sha256};

use super::support::*;

/// The walkway in the clip, where people walk (as in rules.rs).
const WALKWAY: &str = "[[0.0, 0.30], [0.55, 0.30], [1.0, 0.38], [1.0, 0.9], [0.45, 0.6], [0.0, 0.46]]";
/// Privacy mask over the lawn, bottom left: x < 0.35, y > 0.7.
const MASK: &str = "[[0.0, 0.7], [0.35, 0.7], [0.35, 1.0], [0.0, 1.0]]";
const PRE_S: f64 = 3.0;
const POST_S: f64 = 2.0;
/// How long each test's intrusion lasts (armed to disarmed).
const ARMED: Duration = Duration::from_secs(6);

/// A broker, a camera, a daemon whose intrusion rule starts disarmed, and a desk.
struct Scene {
    broker: Mosquitto,
    _camera: RtspServer,
    config: PathBuf,
    desk: Desk,
    daemon: Daemon,
}

/// What a test changes in the scene.
#[derive(Default)]
struct Setup {
    /// The street clip in this format.
    clip: &'static str,
    /// More `[cameras.clips]` keys.
    clips: String,
    /// More camera keys and tables (e.g. privacy masks).
    camera: String,
    /// More `[storage]` keys.
    storage: &'static str,
    /// `[snapshot]` keys.
    snapshot: &'static str,
    /// A broker that keeps sessions across a restart, and a desk whose session it keeps.
    persistent: bool,
}

impl Scene {
    fn start(name: &str, setup: Setup, before: impl FnOnce(&RtspServer)) -> Scene {
        let broker = match setup.persistent {
            true => Mosquitto::start_with(free_port().unwrap(), BrokerOptions { persistent: true, tls: None }),
            false => Mosquitto::start(),
        }
        .unwrap();
        let camera = RtspServer::start(0, &[("/walkway", &fixture(&format!("video/{}", setup.clip)))]).unwrap();
        before(&camera);
        let dir = scratch(name);
        disarm_at_start(&dir.join("state"));
        let mut text = base_config(broker.port(), &camera.url("/walkway"));
        text = text.replace("[storage]\n", &format!("[storage]\n{}\n", setup.storage));
        text += &format!(
            "{}\n[cameras.clips]\npre_s = {PRE_S}\npost_s = {POST_S}\nmax_s = 20\n{}\n",
            setup.camera, setup.clips
        );
        text += &format!("[[cameras.zones]]\nname = \"yard\"\npoints = {WALKWAY}\n[cameras.zones.intrusion]\n");
        text += &format!("[snapshot]\n{}\n", setup.snapshot);
        let config = write_config_text(&dir, &text);
        let desk = match setup.persistent {
            true => Desk::connect_persistent(broker.port(), &format!("{name}-desk")),
            false => Desk::connect(broker.port()),
        };
        let daemon = Daemon::start(&config, dir.join("daemon.log"));
        let mut s = Scene { broker, _camera: camera, config, desk, daemon };
        let streaming =
            wait_until(&mut s.desk, Duration::from_secs(60), |d| last_health_state(d, "walkway") == "streaming");
        assert!(streaming, "the camera streams: {}", s.daemon.log());
        s
    }

    /// Arms the intrusion rule once the ring holds more than the pre-roll and a GOP,
    /// then disarms it: one intrusion event.
    fn one_intrusion(&mut self) {
        self.collect(Duration::from_secs_f64(PRE_S + 3.0));
        self.rule("on");
        self.collect(ARMED);
        self.rule("off");
    }

    /// Through the control socket, as a technician would (it works while the broker is down).
    fn rule(&self, state: &str) {
        let config = self.config.to_str().unwrap();
        let (code, out, err) = gridwatch(&["rule", "walkway", "yard", "intrusion", state, "--config", config]);
        assert_eq!(code, 0, "{out}{err}");
    }

    /// The camera's health now, from `gridwatch status` (the published one is up to 30 s old).
    fn health(&self) -> serde_json::Value {
        let (code, out, err) = gridwatch(&["status", "--config", self.config.to_str().unwrap(), "--json"]);
        assert_eq!(code, 0, "{out}{err}");
        serde_json::from_str::<serde_json::Value>(&out).unwrap()["cameras"][0].clone()
    }

    /// Asks for an event's clip as the desk does.
    fn request_clip(&self, event_id: &str) {
        let payload = serde_json::json!({ "event_id": event_id }).to_string();
        publish(self.broker.port(), "gridwatch/e2e/clips/request", payload.as_bytes(), false);
    }

    fn collect(&mut self, d: Duration) {
        self.desk.wait_for(d, |_| false);
    }

    /// Waits for the intrusion's message that carries a clip; with when it arrived.
    fn clipped(&mut self, within: Duration) -> (EventMessage, Instant) {
        let found = wait_until(&mut self.desk, within, |d| !clipped(d).is_empty());
        assert!(found, "no intrusion with a clip: {}", self.daemon.log());
        clipped(&self.desk).remove(0)
    }
}

/// `commands.json` with the intrusion disarmed, so the test chooses when it starts.
fn disarm_at_start(state: &Path) {
    std::fs::create_dir_all(state).unwrap();
    let json = r#"{"disarmed": [{"camera": "walkway", "zone": "yard", "rule": "intrusion"}]}"#;
    std::fs::write(state.join("commands.json"), json).unwrap();
}

fn clipped(desk: &Desk) -> Vec<(EventMessage, Instant)> {
    desk.events().into_iter().filter(|(e, _)| e.kind == "intrusion" && e.clip.is_some()).collect()
}

fn time(s: &str) -> SystemTime {
    humantime::parse_rfc3339(s).unwrap_or_else(|e| panic!("{s}: {e}"))
}

fn secs(from: SystemTime, to: SystemTime) -> f64 {
    to.duration_since(from).map(|d| d.as_secs_f64()).unwrap_or_else(|e| -e.duration().as_secs_f64())
}

/// The clip `e` names, as the desk received it: before `e`, the bytes and hash `e`
/// gives, and what ffprobe reads of it (`codec`, a keyframe first, about the length
/// `e` says). `strict`: every frame also decodes without an error.
fn check_clip(desk: &Desk, e: &EventMessage, arrived: Instant, codec: &str, strict: bool) -> Probe {
    let c = e.clip.as_ref().unwrap();
    assert_eq!(c.topic, format!("gridwatch/e2e/clips/{}", e.event_id));
    let got = desk.on(&c.topic);
    let m = got.first().unwrap_or_else(|| panic!("clip {} never arrived", c.topic));
    assert!(m.at <= arrived, "the clip arrived after the message naming it");
    assert_eq!(m.payload.len(), c.bytes);
    let sha: String = Sha256::digest(&m.payload).iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(sha, c.sha256);
    let p = probe(&m.payload).unwrap();
    assert_eq!(p.codec, codec);
    assert_eq!(c.codec, if codec == "hevc" { "h265" } else { codec });
    assert_eq!(p.first_picture, "I", "a clip starts at a keyframe");
    assert!((p.duration_s - c.duration_s).abs() < 0.5, "ffprobe {} s, the event says {} s", p.duration_s, c.duration_s);
    if strict {
        let frames = grey_frames(&m.payload, p.width, p.height).unwrap();
        assert_eq!(frames.len(), p.frames, "every frame decodes");
    }
    p
}

/// The clip covers its event: from at least `PRE_S` before the start to `POST_S` after
/// the end, within 1 s (the end's clip ends within a frame or two of that).
fn check_cover(e: &EventMessage, p: &Probe) {
    let c = e.clip.as_ref().unwrap();
    assert_eq!(e.event_type, EventType::End, "a {ARMED:?} event's clip comes with its end");
    let starts = time(&c.starts_at);
    let lead = secs(starts, time(&e.started_at));
    assert!(lead >= PRE_S, "the clip starts {lead:.2} s before the event: at least {PRE_S} s wanted");
    assert!(lead <= PRE_S + 2.5, "the clip starts at the keyframe before the pre-roll, not earlier: {lead:.2} s");
    let want = secs(starts, time(e.ended_at.as_deref().unwrap())) + POST_S;
    assert!(
        (p.duration_s - want).abs() <= 1.0,
        "clip {} s, the event's times and pre/post say {want:.2} s",
        p.duration_s
    );
}

fn as_sent(clip: &'static str, codec: &str) {
    let mut s = Scene::start(&format!("clips-{codec}"), Setup { clip, ..Setup::default() }, |_| {});
    s.one_intrusion();
    let (e, arrived) = s.clipped(Duration::from_secs(30));
    let p = check_clip(&s.desk, &e, arrived, codec, true);
    check_cover(&e, &p);
    assert_eq!((p.width, p.height), (768, 576), "as the camera sent it");
    let news: Vec<_> = s.desk.events().into_iter().filter(|(n, _)| n.event_id == e.event_id).collect();
    assert!(news[0].0.event_type == EventType::New && news[0].0.clip.is_none(), "the new goes at once, without a clip");
    let health = s.health();
    assert!(health["clip_ring_s"].as_f64().unwrap() >= PRE_S, "{health}");
}

/// An intrusion on the H.264 clip: a clip of the camera's own video, published before
/// its `end`, covering the event.
#[test]
fn an_intrusion_gets_a_clip_of_the_cameras_h264() {
    as_sent("vtest.h264", "h264");
}

#[test]
fn an_intrusion_gets_a_clip_of_the_cameras_h265() {
    as_sent("vtest.h265", "hevc");
}

/// A camera with a privacy mask: its clips are H.264 at the analysis size, every frame
/// black inside the mask. Clips asked for by the desk: an object event's (a kind that
/// gets none unasked) while the ring covers it; refused for an event the ring has let
/// go of (a 1 MiB ring holds about 16 s of this clip) and for one the device never had.
#[test]
fn masked_clips_and_clips_on_request() {
    let setup = Setup {
        clip: "vtest.h264",
        clips: "ring_bytes = 1048576\nmasked_fps = 5".into(),
        camera: format!("analysis_width = 384\n[[cameras.privacy_masks]]\npoints = {MASK}"),
        ..Setup::default()
    };
    let mut s = Scene::start("clips-masked", setup, |_| {});
    let first_object = {
        let found =
            wait_until(&mut s.desk, Duration::from_secs(20), |d| d.events().iter().any(|(e, _)| e.kind == "object"));
        assert!(found, "an object event");
        s.desk.events().into_iter().find(|(e, _)| e.kind == "object").unwrap().0
    };
    // Asked for at once: the ring still covers it.
    let asked = Instant::now();
    s.request_clip(&first_object.event_id);
    let topic = format!("gridwatch/e2e/clips/{}", first_object.event_id);
    assert!(
        s.desk.wait_for(Duration::from_secs(10), |seen| seen.iter().any(|m| m.topic == topic)),
        "{}",
        s.daemon.log()
    );
    let p = probe(&s.desk.on(&topic)[0].payload).unwrap();
    assert_eq!((p.codec.as_str(), p.first_picture.as_str()), ("h264", "I"));
    assert!(errors_since(&s.desk, asked).is_empty(), "{:?}", errors_since(&s.desk, asked));

    s.one_intrusion();
    let (e, arrived) = s.clipped(Duration::from_secs(30));
    let p = check_clip(&s.desk, &e, arrived, "h264", true);
    assert_eq!((p.width, p.height), (384, 288), "re-encoded at the analysis size");
    let m = &s.desk.on(&e.clip.as_ref().unwrap().topic)[0].payload;
    for (i, f) in grey_frames(m, 384, 288).unwrap().iter().enumerate() {
        // The mask in pixels: x < 134, y > 201; 3 px in from its edges.
        let worst = (205..285).flat_map(|y| (0..131).map(move |x| f[y * 384 + x])).max().unwrap();
        assert!(worst <= 24, "frame {i}: luma {worst} inside the privacy mask");
    }

    // Over 25 s after it, the first object event has left the 1 MiB ring.
    s.collect(Duration::from_secs(8));
    let asked = Instant::now();
    s.request_clip(&first_object.event_id);
    s.request_clip("never-made-1");
    wait_until(&mut s.desk, Duration::from_secs(10), |d| errors_since(d, asked).len() >= 2);
    let errors = errors_since(&s.desk, asked);
    assert!(errors.iter().any(|(_, r)| r.contains(&first_object.event_id) && r.contains("ring")), "{errors:?}");
    assert!(errors.iter().any(|(_, r)| r.contains("never-made-1") && r.contains("no such event")), "{errors:?}");
}

/// A camera whose RTP clock leaps 2 s forward every 3 s, on a network that loses one
/// packet in 97: the clip still plays at the speed of the time it covers (within 10 %).
#[test]
fn a_lying_clock_and_lost_packets_still_give_a_clip_at_the_right_speed() {
    let mut s = Scene::start("clips-clock", Setup { clip: "vtest.h264", ..Setup::default() }, |camera| {
        camera.set_timestamp_jumps(true);
        camera.set_packet_loss(97);
    });
    s.one_intrusion();
    let (e, arrived) = s.clipped(Duration::from_secs(30));
    let p = check_clip(&s.desk, &e, arrived, "h264", false);
    let c = e.clip.as_ref().unwrap();
    let wall = secs(time(&c.starts_at), time(e.ended_at.as_deref().unwrap())) + POST_S;
    assert!((p.duration_s - wall).abs() <= wall * 0.1, "clip {} s for {wall:.2} s of time", p.duration_s);
    let health = s.health();
    assert!(health["packets_lost"].as_u64().unwrap() > 0, "the loss happened: {health}");
}

/// The broker is down while the event happens: the clip is kept and arrives after it
/// returns, before the `end` that names it, in `seq` order with everything else.
#[test]
fn a_clip_made_during_a_broker_outage_arrives_later_in_order() {
    let mut s =
        Scene::start("clips-outage", Setup { clip: "vtest.h264", persistent: true, ..Setup::default() }, |_| {});
    s.broker.terminate();
    s.one_intrusion();
    // The clip is complete POST_S after the end.
    std::thread::sleep(Duration::from_secs_f64(POST_S + 2.0));
    s.broker.restart().unwrap();
    let (e, arrived) = s.clipped(Duration::from_secs(60));
    let p = check_clip(&s.desk, &e, arrived, "h264", true);
    check_cover(&e, &p);
    let seqs: Vec<u64> = s.desk.events().iter().map(|(e, _)| e.seq).collect();
    assert!(seqs.windows(2).all(|w| w[1] > w[0]), "in seq order: {seqs:?}");
}

/// A storage budget too small for a clip: the clip goes first (the event says
/// `clip_evicted`, health counts it), its snapshot and every event still arrive.
/// Pictures are kept small so that the budget holds a burst of them still pending (the
/// walkway gives up to ten events at once; at 75 KB each they alone would fill it).
#[test]
fn a_tiny_budget_evicts_clips_before_pictures_and_events() {
    let setup =
        Setup { clip: "vtest.h264", storage: "max_bytes = 400000", snapshot: "max_bytes = 20000", ..Setup::default() };
    let mut s = Scene::start("clips-budget", setup, |_| {});
    s.one_intrusion();
    let ended = wait_until(&mut s.desk, Duration::from_secs(30), |d| {
        d.events().iter().any(|(e, _)| e.kind == "intrusion" && e.event_type == EventType::End)
    });
    assert!(ended, "{}", s.daemon.log());
    let raw: Vec<serde_json::Value> =
        s.desk.on("gridwatch/e2e/events").iter().map(|m| serde_json::from_slice(&m.payload).unwrap()).collect();
    let end = raw.iter().find(|v| v["kind"] == "intrusion" && v["type"] == "end").unwrap();
    assert!(end["clip"].is_null() && end["clip_evicted"] == true, "{end}");
    let new = raw.iter().find(|v| v["kind"] == "intrusion" && v["type"] == "new").unwrap();
    assert!(new["snapshot"].is_object(), "the picture stays: {new}");
    let seqs: Vec<u64> = s.desk.events().iter().map(|(e, _)| e.seq).collect();
    assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "every event arrives, none evicted: {seqs:?}");
    let health = s.health();
    assert!(health["clips_evicted"].as_u64().unwrap() >= 1, "health counts the evicted clip: {health}");
    assert_eq!(health["snapshots_evicted"], 0, "no picture went while a clip could: {health}");
}
