//! Rules and zones on the real clip: occupation, intrusion (with and without a schedule),
//! loitering, crowd, privacy masks and the snapshot cap in one daemon run; tamper,
//! camera_offline and the motion gate on clips made here with GStreamer.

use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use gridwatch::contract::{EventMessage, EventType};
use gridwatch::testkit::mosquitto::Mosquitto;
use gridwatch::testkit::rtsp_server::RtspServer;

use super::support::*;

/// The walkway in the clip (normalised corners), where people walk.
const WALKWAY: &str = "[[0.0, 0.30], [0.55, 0.30], [1.0, 0.38], [1.0, 0.9], [0.45, 0.6], [0.0, 0.46]]";
/// Its lower right end: people cross it in under 8 s (measured: at most 7.0 s in the first 45 s).
const CROSSING: &str = "[[0.7, 0.45], [1.0, 0.45], [1.0, 0.9], [0.7, 0.9]]";
/// Where the van and the car are parked, top right.
const PARKING: &str = "[[0.82, 0.08], [1.0, 0.08], [1.0, 0.22], [0.82, 0.22]]";
/// Privacy mask over the lawn, bottom left: x < 0.35, y > 0.7.
const MASK: &str = "[[0.0, 0.7], [0.35, 0.7], [0.35, 1.0], [0.0, 1.0]]";
const MAX_BYTES: usize = 60_000;

fn zone(name: &str, points: &str, rules: &str) -> String {
    format!("[[cameras.zones]]\nname = \"{name}\"\npoints = {points}\n{rules}\n")
}

fn points(text: &str) -> Vec<[f32; 2]> {
    serde_json::from_str(text).unwrap()
}

fn inside(poly: &[[f32; 2]], x: f32, y: f32) -> bool {
    gridwatch::device::analysis::Polygon(poly.to_vec()).contains(x, y)
}

/// The most persons with a sure detection (score >= 0.5) standing in `poly` on one of the
/// reference frames of the clip's first 20 s (frames 0, 100, 200 at 10 fps).
fn persons_on_reference_frames(poly: &[[f32; 2]]) -> usize {
    let refs: serde_json::Value =
        serde_json::from_slice(&std::fs::read(fixture("reference/detections.json")).unwrap()).unwrap();
    ["f0000", "f0100", "f0200"]
        .iter()
        .map(|f| {
            let img = &refs["images"][format!("reference/frames/vtest_{f}.png")];
            let (w, h) = (img["width"].as_f64().unwrap() as f32, img["height"].as_f64().unwrap() as f32);
            img["detections"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|d| d["label"] == "person" && d["score"].as_f64().unwrap() >= 0.5)
                .filter(|d| {
                    let b: Vec<f32> = serde_json::from_value(d["box"].clone()).unwrap();
                    inside(poly, (b[0] + b[2]) / 2.0 / w, b[3] / h)
                })
                .count()
        })
        .max()
        .unwrap()
}

fn hhmm(minute: u32) -> String {
    format!("{:02}:{:02}", (minute / 60) % 24, minute % 60)
}

fn of_kind<'a>(events: &'a [(EventMessage, Instant)], kind: &str, zone: &str) -> Vec<&'a EventMessage> {
    events.iter().map(|(e, _)| e).filter(|e| e.kind == kind && e.zones.iter().any(|z| z == zone)).collect()
}

fn news<'a>(events: &[&'a EventMessage]) -> Vec<&'a EventMessage> {
    events.iter().copied().filter(|e| e.event_type == EventType::New).collect()
}

/// Every JPEG the desk received: decodable, within the cap, black inside the mask.
fn check_snapshots(desk: &Desk, mask: &[[f32; 2]]) -> usize {
    let mut n = 0;
    for m in desk.seen.iter().filter(|m| m.topic.starts_with("gridwatch/e2e/snapshots/")) {
        assert!(m.payload.len() <= MAX_BYTES, "{} is {} bytes", m.topic, m.payload.len());
        let img = image::load_from_memory(&m.payload).unwrap().to_rgb8();
        let (w, h) = (img.width() as f32, img.height() as f32);
        for (x, y, p) in img.enumerate_pixels() {
            // A pixel clear of the mask's edge (JPEG blocks smear across it) must be black.
            let (fx, fy) = ((x as f32 + 0.5) / w, (y as f32 + 0.5) / h);
            let deep = [(-0.02, -0.02), (0.02, -0.02), (-0.02, 0.02), (0.02, 0.02)]
                .iter()
                .all(|(dx, dy)| inside(mask, fx + dx, fy + dy));
            if deep {
                assert!(p.0.iter().all(|&v| v <= 24), "{} pixel ({x}, {y}) under the mask is {p:?}", m.topic);
            }
        }
        n += 1;
    }
    n
}

#[test]
fn zone_rules_on_the_walkway_clip() {
    let dir = scratch("rules");
    let broker = Mosquitto::start().expect("mosquitto");
    let camera = RtspServer::start(0, &[("/walkway", fixture("video/vtest.h264").as_path())]).expect("RTSP server");
    let walkway = points(WALKWAY);
    let n = persons_on_reference_frames(&walkway);
    assert!(n >= 3, "the reference frames show a few people on the walkway: {n}");
    // A schedule that excludes now (local time), for the whole run.
    let later = gridwatch::device::config::local_minute(SystemTime::now()) + 120;
    let closed = format!("{}-{}", hhmm(later), hhmm(later + 60));
    let mut text = base_config(broker.port(), &camera.url("/walkway"));
    // N comes from whole-frame detections; region crops see more (three people by the
    // sign post at 5-6 s, where the whole frame finds two), so this run sees as they do.
    text = text.replace("track = [\"person\"]", "track = [\"person\"]\nregions = \"off\"");
    text = text.replace("[storage]", &format!("[snapshot]\nmax_bytes = {MAX_BYTES}\n[storage]"));
    text += &format!("[[cameras.privacy_masks]]\npoints = {MASK}\n");
    text += &zone("parking", PARKING, "[cameras.zones.occupation]\nseconds = 5");
    text += &zone(
        "walkway",
        WALKWAY,
        &format!("[cameras.zones.intrusion]\n[cameras.zones.crowd]\ncount = {n}\nseconds = 2"),
    );
    text += &zone(
        "walkway-night",
        WALKWAY,
        &format!(
            "[cameras.zones.intrusion]\nschedule = \"{closed}\"\n[cameras.zones.crowd]\ncount = {}\nseconds = 2",
            n + 1
        ),
    );
    text += &zone("crossing", CROSSING, "[cameras.zones.loitering]\nseconds = 2");
    text += &zone("crossing-long", CROSSING, "[cameras.zones.loitering]\nseconds = 15");
    let config = write_config_text(&dir, &text);
    let mut desk = Desk::connect(broker.port());
    let started = Instant::now();
    let mut daemon = Daemon::start(&config, dir.join("run.log"));
    desk.wait_for(Duration::from_secs(35), |_| false);
    daemon.signal(libc::SIGTERM);
    assert!(daemon.wait(Duration::from_secs(20)).is_some_and(|s| s.success()), "{}", daemon.log());
    assert!(desk.wait_for(Duration::from_secs(5), last_status_is("stopped")));
    let events = desk.events();
    let first_at = events.first().map(|(_, at)| *at).expect("events");
    let summary: Vec<String> = events
        .iter()
        .map(|(e, _)| format!("{} {} {:?} {:?}", e.kind, e.event_type.as_str(), e.zones, e.detail))
        .collect();
    let log = daemon.log();
    let why = format!("{summary:#?}\nlog:\n{log}");

    // Every rule event: new, then updates, then one end; a snapshot with the new.
    for (e, _) in events.iter().filter(|(e, _)| e.kind != "object" && e.event_type == EventType::New) {
        let life: Vec<EventType> =
            events.iter().filter(|(x, _)| x.event_id == e.event_id).map(|(x, _)| x.event_type).collect();
        assert_eq!(life.last(), Some(&EventType::End), "{} {}: {life:?}", e.kind, e.event_id);
        assert_eq!(life.iter().filter(|t| **t == EventType::End).count(), 1);
        assert!(e.snapshot.is_some() && e.detail.is_some(), "{e:?}");
    }

    // Occupation: the parked van and car, never a passer-by.
    let occupation = news(&of_kind(&events, "occupation", "parking"));
    assert!(!occupation.is_empty(), "{why}");
    assert!(occupation.len() <= 3, "the van and the car, not one per frame: {why}");
    for e in &occupation {
        assert!(["car", "truck"].contains(&e.label.as_str()), "{e:?}");
        assert!(e.detail.as_ref().unwrap()["dwell_s"].as_f64().unwrap() >= 5.0, "{e:?}");
        assert!(e.bbox[0] > 0.8 && e.bbox[3] < 0.25, "the parked vehicles' corner: {e:?}");
    }

    // Intrusion on the walkway by persons; none outside the schedule.
    let intrusion = news(&of_kind(&events, "intrusion", "walkway"));
    assert!(intrusion.len() >= 3, "{why}");
    assert!(intrusion.iter().all(|e| e.label == "person"));
    assert!(of_kind(&events, "intrusion", "walkway-night").is_empty(), "schedule {closed} excludes now: {why}");

    // Crowd: N (what the reference frames show) fires; N + 1 not in the stretch they cover.
    let crowd = news(&of_kind(&events, "crowd", "walkway"));
    assert!(!crowd.is_empty(), "crowd of {n}: {why}");
    let c = crowd[0].detail.as_ref().unwrap();
    assert!(c["count"].as_u64().unwrap() >= n as u64 && c["peak"].as_u64() >= c["count"].as_u64(), "{c}");
    let early = |e: &&EventMessage| {
        let at = events.iter().find(|(x, _)| x.event_id == e.event_id).unwrap().1;
        at.duration_since(first_at) < Duration::from_secs(18)
    };
    let crowded = news(&of_kind(&events, "crowd", "walkway-night"));
    assert!(!crowded.iter().any(early), "crowd of {} in the first 18 s: {why}", n + 1);

    // Loitering: T = 2 s fires on the crossing; 15 s (twice the longest crossing) never.
    let loitering = of_kind(&events, "loitering", "crossing");
    assert!(!news(&loitering).is_empty(), "{why}");
    let ends: Vec<f64> = loitering
        .iter()
        .filter(|e| e.event_type == EventType::End)
        .map(|e| e.detail.as_ref().unwrap()["dwell_s"].as_f64().unwrap())
        .collect();
    assert!(ends.iter().all(|d| *d >= 2.0 && *d < 15.0), "{ends:?}");
    assert!(of_kind(&events, "loitering", "crossing-long").is_empty(), "{why}");

    // Object events list the zones their person is in.
    assert!(events.iter().any(|(e, _)| e.kind == "object" && e.zones.contains(&"walkway".to_string())), "{why}");

    let jpegs = check_snapshots(&desk, &points(MASK));
    assert!(jpegs >= 10, "{jpegs} snapshots");
    eprintln!("{} events, {jpegs} snapshots in {:.0} s", events.len(), started.elapsed().as_secs_f32());
    let _ = std::fs::remove_dir_all(&dir);
}

/// Encodes `parts` (a GStreamer source description, frames) one after the other into
/// an Annex-B H.265 file at 10 fps, 768x576. (x265 writes the frame rate into the
/// stream; openh264's H.264 without it makes the decoder's videorate abort.)
fn make_clip(out: &Path, parts: &[(&str, u32)]) {
    use gstreamer::prelude::*;
    gstreamer::init().unwrap();
    let mut bytes = Vec::new();
    for (i, (src, frames)) in parts.iter().enumerate() {
        let part = out.with_extension(format!("{i}.h265"));
        let launch = format!(
            "{src} ! videoconvert ! videoscale ! video/x-raw,format=I420,width=768,height=576 \
             ! imagefreeze num-buffers={frames} ! video/x-raw,framerate=10/1 \
             ! x265enc bitrate=2000 key-int-max=10 speed-preset=ultrafast \
             ! h265parse ! video/x-h265,stream-format=byte-stream,alignment=au ! filesink location={}",
            part.display()
        );
        let pipeline = gstreamer::parse::launch(&launch).unwrap();
        pipeline.set_state(gstreamer::State::Playing).unwrap();
        let bus = pipeline.bus().unwrap();
        let msg = bus
            .timed_pop_filtered(
                gstreamer::ClockTime::from_seconds(30),
                &[gstreamer::MessageType::Eos, gstreamer::MessageType::Error],
            )
            .expect("clip encoded within 30 s");
        assert!(matches!(msg.view(), gstreamer::MessageView::Eos(_)), "{launch}: {msg:?}");
        pipeline.set_state(gstreamer::State::Null).unwrap();
        bytes.extend(std::fs::read(&part).unwrap());
    }
    std::fs::write(out, bytes).unwrap();
}

fn last_health(desk: &Desk, camera: &str) -> serde_json::Value {
    desk.on(&format!("gridwatch/e2e/{camera}/health"))
        .last()
        .map(|m| serde_json::from_slice(&m.payload).unwrap())
        .unwrap_or_default()
}

#[test]
fn tamper_offline_and_a_still_scene() {
    let dir = scratch("tamper");
    let frame = fixture("reference/frames/vtest_f0200.png");
    let png = format!("filesrc location={} ! pngdec", frame.display());
    // Normal, blacked out, normal, blurred (scaled down to 32x24 and up again), normal,
    // turned (the view upside down, as if the camera was knocked round), normal.
    let blurred = format!("{png} ! videoconvert ! videoscale ! video/x-raw,width=32,height=24");
    let black = "videotestsrc pattern=black num-buffers=1 ! video/x-raw,width=768,height=576";
    let turned = format!("{png} ! videoconvert ! videoflip video-direction=180");
    let tamper_clip = dir.join("tamper.h265");
    let parts =
        [(&png, 40), (&black.to_string(), 50), (&png, 40), (&blurred, 50), (&png, 40), (&turned, 50), (&png, 40)];
    make_clip(&tamper_clip, &parts.map(|(s, n)| (s.as_str(), n)));
    let still_clip = dir.join("still.h265");
    make_clip(&still_clip, &[(&png, 30)]);

    let broker = Mosquitto::start().expect("mosquitto");
    let tamper_cam = RtspServer::start(0, &[("/tamper", tamper_clip.as_path())]).expect("RTSP server");
    let tamper_port = tamper_cam.port();
    let still_cam = RtspServer::start(0, &[("/still", still_clip.as_path())]).expect("RTSP server");
    let mut text = base_config(broker.port(), &tamper_cam.url("/tamper"));
    text += "[cameras.tamper]\nseconds = 2\n[cameras.camera_offline]\nseconds = 3\n";
    text += &format!("[[cameras]]\nid = \"still\"\nurl = \"{}\"\ndetect_fps = 5\n", still_cam.url("/still"));
    text += &zone("walkway", WALKWAY, "[cameras.zones.intrusion]\n[cameras.zones.loitering]\nseconds = 2");
    text += "[cameras.tamper]\nseconds = 2\n";
    let config = write_config_text(&dir, &text);
    let mut desk = Desk::connect(broker.port());
    let mut daemon = Daemon::start(&config, dir.join("run.log"));

    // The clip plays 31 s: blocked from 4 s to 9 s, defocused from 13 s to 18 s, turned
    // from 22 s to 27 s.
    let tampers = |d: &Desk, cause: &str| {
        d.events()
            .into_iter()
            .filter(|(e, _)| e.kind == "tamper" && e.camera == "walkway")
            .filter(|(e, _)| e.detail.as_ref().is_some_and(|v| v["cause"] == cause))
            .map(|(e, _)| e)
            .collect::<Vec<_>>()
    };
    let ended = |d: &Desk, cause: &str| tampers(d, cause).iter().any(|e| e.event_type == EventType::End);
    let deadline = Instant::now() + Duration::from_secs(45);
    let causes = ["blocked", "defocused", "moved"];
    while !causes.iter().all(|c| ended(&desk, c)) && Instant::now() < deadline {
        desk.wait_for(Duration::from_millis(500), |_| false);
    }
    let summary = |d: &Desk| {
        d.events()
            .iter()
            .map(|(e, _)| format!("{} {} {} {:?} {}", e.camera, e.kind, e.event_type.as_str(), e.detail, e.at))
            .collect::<Vec<_>>()
    };
    for cause in causes {
        assert!(ended(&desk, cause), "{cause}: {:#?}\n{}", summary(&desk), daemon.log());
    }
    for cause in causes {
        let life = tampers(&desk, cause);
        assert_eq!(life.len(), 2, "{cause}: one new, one end: {:#?}", summary(&desk));
        let new = life.iter().find(|e| e.event_type == EventType::New).expect("new");
        let end = life.iter().find(|e| e.event_type == EventType::End).unwrap();
        let secs = |t: &str| humantime::parse_rfc3339(t).unwrap();
        let lasted = secs(end.ended_at.as_deref().unwrap()).duration_since(secs(&new.started_at)).unwrap();
        // 5 s of it, of which the first 2 s are the rule's T.
        assert!((2.0..=4.5).contains(&lasted.as_secs_f32()), "{cause} lasted {lasted:?}");
    }

    // The camera goes away: camera_offline after 3 s; it ends when frames return.
    let offline = |d: &Desk| {
        d.events().into_iter().filter(|(e, _)| e.kind == "camera_offline").map(|(e, _)| e).collect::<Vec<_>>()
    };
    tamper_cam.stop();
    let gone = Instant::now();
    let deadline = Instant::now() + Duration::from_secs(10);
    while offline(&desk).is_empty() && Instant::now() < deadline {
        desk.wait_for(Duration::from_millis(200), |_| false);
    }
    let new = offline(&desk);
    assert_eq!(new.len(), 1, "{:#?}", summary(&desk));
    assert_eq!((new[0].event_type, new[0].camera.as_str()), (EventType::New, "walkway"));
    assert!(new[0].detail.as_ref().unwrap()["silent_s"].as_u64().unwrap() >= 3);
    eprintln!("camera_offline {:.1} s after the server stopped", gone.elapsed().as_secs_f32());
    let _back = RtspServer::start(tamper_port, &[("/tamper", tamper_clip.as_path())]).expect("RTSP server again");
    let deadline = Instant::now() + Duration::from_secs(40);
    while !offline(&desk).iter().any(|e| e.event_type == EventType::End) && Instant::now() < deadline {
        desk.wait_for(Duration::from_millis(500), |_| false);
    }
    assert!(offline(&desk).iter().any(|e| e.event_type == EventType::End), "{:#?}\n{}", summary(&desk), daemon.log());

    daemon.signal(libc::SIGTERM);
    assert!(daemon.wait(Duration::from_secs(20)).is_some_and(|s| s.success()), "{}", daemon.log());
    assert!(desk.wait_for(Duration::from_secs(5), last_status_is("stopped")));

    // The still scene: people who never move make no events, and after the first
    // second the detector only looks every 1.5 s.
    let still: Vec<String> =
        desk.events().iter().filter(|(e, _)| e.camera == "still").map(|(e, _)| format!("{e:?}")).collect();
    assert!(still.is_empty(), "{still:#?}");
    let h = last_health(&desk, "still");
    let (analysed, gated) = (h["frames_analyzed"].as_u64().unwrap(), h["frames_gated"].as_u64().unwrap());
    let total = (analysed + gated) as f64;
    // At 5 fps, one frame in 7.5 is a re-check; a few more at the start and at each loop.
    assert!(total > 100.0, "{h}");
    assert!((analysed as f64) < total / 4.0, "analysed {analysed} of {total}: {h}");
    eprintln!("still camera: {analysed} analysed, {gated} gated");
    let _ = std::fs::remove_dir_all(&dir);
}

/// The far lawn of the 1080p variant (normalised), where one person walks from about
/// 7 s to 15 s of the clip: some 8 px tall when the whole 1920x1080 frame is squeezed
/// into the model's 416 px input, too small for it; a region crop shows them 3x larger.
const FAR_LAWN: &str = "[[0.15, 0.06], [0.40, 0.06], [0.40, 0.21], [0.15, 0.21]]";

#[test]
fn a_far_zone_is_watched_through_a_region_crop() {
    let dir = scratch("regions");
    let broker = Mosquitto::start().expect("mosquitto");
    let camera = RtspServer::start(0, &[("/wide", fixture("video/vtest_1080p.h264").as_path())]).expect("RTSP server");
    let mut text = base_config(broker.port(), &camera.url("/wide"));
    text += &zone("far-lawn", FAR_LAWN, "[cameras.zones.intrusion]");
    let config = write_config_text(&dir, &text);
    let mut desk = Desk::connect(broker.port());
    let started = Instant::now();
    let mut daemon = Daemon::start(&config, dir.join("run.log"));
    let intrusions = |d: &Desk| -> Vec<EventMessage> {
        let events = d.events();
        news(&of_kind(&events, "intrusion", "far-lawn")).into_iter().cloned().collect()
    };
    // The person is in the zone by 9 s of the clip; the daemon needs a few to start.
    let found = wait_until(&mut desk, Duration::from_secs(30), |d| !intrusions(d).is_empty());
    daemon.signal(libc::SIGTERM);
    assert!(daemon.wait(Duration::from_secs(20)).is_some_and(|s| s.success()), "{}", daemon.log());
    assert!(desk.wait_for(Duration::from_secs(5), last_status_is("stopped")));
    let log = daemon.log();
    assert!(found, "no intrusion in the far zone:\n{log}");
    assert!(log.contains("region crop") && log.contains("zones=far-lawn"), "{log}");
    let e = &intrusions(&desk)[0];
    assert_eq!(e.label, "person");
    let (x, y) = ((e.bbox[0] + e.bbox[2]) / 2.0, e.bbox[3]);
    assert!(inside(&points(FAR_LAWN), x, y), "the intruder stands in the far zone: {e:?}");
    assert!(e.bbox[3] - e.bbox[1] < 0.1, "a far, small person: {e:?}");
    let crops = last_health(&desk, "walkway")["crops_analyzed"].as_u64().unwrap_or(0);
    assert!(crops > 0, "health counts the crops the detector saw");
    eprintln!("far intrusion after {:.0} s, {crops} crops", started.elapsed().as_secs_f32());
    let _ = std::fs::remove_dir_all(&dir);
}
