//! Counting lines and stats on the real clip, broker and daemon: crossings against
//! counts marked by hand, stats every period with consecutive `seq` across a broker
//! outage, and `gridwatch stats` showing what was stored.

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime};

use gridwatch::contract::{LineCount, StatsMessage};
use gridwatch::testkit::mosquitto::{BrokerOptions, Mosquitto, free_port};
use gridwatch::testkit::rtsp_server::RtspServer;

use super::support::*;

/// The walkway (normalised corners), as in rules.rs.
const WALKWAY: &str = "[[0.0, 0.30], [0.55, 0.30], [1.0, 0.38], [1.0, 0.9], [0.45, 0.6], [0.0, 0.46]]";

/// Seconds of the clip the counts below cover: the daemon is stopped then. Both lines
/// are quiet from 32.5 s to 52 s of the clip, so a second or two either way changes
/// nothing.
const COUNTED_S: f64 = 42.0;

/// Counting lines across the walkway, `in` to the right (east), and the counts marked by
/// hand for the clip's first COUNTED_S seconds: (name, points, in, out).
///
/// How they were marked: the clip was cut into pictures at 5 fps (`ffmpeg -i
/// vtest.h264 -vf fps=5 f%04d.jpg`, picture i at i / 5 s), `gridwatch detect --json
/// --min-score 0.4` run on them, and the bottom-centre of every person box near each
/// line listed picture by picture; each person was followed by eye from picture to
/// picture (boxes a few pixels apart; where two people pass each other, by their
/// direction and height) and a crossing marked where their feet went from one side of
/// the line to the other, checked against the pictures where two people met.
///
/// west (x = 0.20): out at pictures 95 (19 s), 106 (21 s) and 132 (26.5 s, a person who
/// turns at x = 0.166 and comes back:) in at 145 (29 s). 1 in, 3 out.
/// middle (x = 0.30): out at 89 (17.9 s), 100 (20.1 s), 122 (24.5 s); at 151-153 two
/// people pass each other on the line, one going in (30.5 s) and one out (30.4 s), who
/// turns at x = 0.254 and comes back in at 162 (32.3 s). 2 in, 4 out.
/// facade (x = 0.60 on the building's wall, above every path): nobody. 0 and 0.
const LINES: [(&str, &str, u64, u64); 3] = [
    ("west", "[[0.20, 0.30], [0.20, 0.62]]", 1, 3),
    ("middle", "[[0.30, 0.30], [0.30, 0.62]]", 2, 4),
    ("facade", "[[0.60, 0.03], [0.60, 0.16]]", 0, 0),
];

const PERIOD_S: u64 = 10;

fn stats_of(desk: &Desk) -> Vec<(StatsMessage, Instant)> {
    let mut by_seq: BTreeMap<u64, (StatsMessage, Instant)> = BTreeMap::new();
    for m in desk.on("gridwatch/e2e/stats") {
        let s: StatsMessage = serde_json::from_slice(&m.payload).expect("stats JSON follows the contract");
        match by_seq.get(&s.seq) {
            // At least once: a repeat must be the same message.
            Some((first, _)) => assert_eq!(first, &s, "a repeated stats seq must be the same message"),
            None => {
                by_seq.insert(s.seq, (s, m.at));
            }
        }
    }
    by_seq.into_values().collect()
}

fn time(s: &str) -> SystemTime {
    humantime::parse_rfc3339(s).unwrap()
}

/// `points` (normalised to the 768x576 clip) in the 1080p variant's frame: the scene
/// scaled to 1440x1080 and pillarboxed into 1920x1080.
fn pillarboxed(points: &str) -> String {
    let p: Vec<[f32; 2]> = serde_json::from_str(points).unwrap();
    let moved: Vec<[f32; 2]> = p.iter().map(|[x, y]| [(240.0 + x * 1440.0) / 1920.0, *y]).collect();
    serde_json::to_string(&moved).unwrap()
}

#[test]
fn lines_count_as_marked_by_hand_and_stats_come_every_period_across_an_outage() {
    lines_and_stats("video/vtest.h264", |p| p.to_owned());
}

/// The same counts on the 1080p variant (a main stream's size, the lines moved with the
/// picture), which the band and the thresholds were not tuned on.
#[test]
fn lines_count_the_same_on_the_1080p_variant() {
    lines_and_stats("video/vtest_1080p.h264", pillarboxed);
}

fn lines_and_stats(clip: &str, place: fn(&str) -> String) {
    let dir = scratch(&format!("stats-{}", clip.len()));
    let port = free_port().unwrap();
    let mut broker = Mosquitto::start_with(port, BrokerOptions { persistent: true, tls: None }).expect("mosquitto");
    let camera = RtspServer::start(0, &[("/walkway", fixture(clip).as_path())]).expect("RTSP server");
    let mut text = base_config(port, &camera.url("/walkway"));
    text = text.replace("[storage]", &format!("[stats]\nperiod_s = {PERIOD_S}\n[storage]"));
    text += &format!("[[cameras.zones]]\nname = \"walkway\"\npoints = {}\n", place(WALKWAY));
    for (name, points, _, _) in LINES {
        text += &format!("[[cameras.lines]]\nname = \"{name}\"\npoints = {}\ndirection = \"right\"\n", place(points));
    }
    let config = write_config_text(&dir, &text);
    let mut desk = Desk::connect_persistent(port, &format!("desk-stats-{}", std::process::id()));
    let mut daemon = Daemon::start(&config, dir.join("run.log"));

    // The first period starts at the first analysed picture: the clip's start.
    let first = wait_until(&mut desk, Duration::from_secs(40), |d| !stats_of(d).is_empty());
    assert!(first, "no stats within 40 s:\n{}", daemon.log());
    let clip_start = time(&stats_of(&desk)[0].0.period_start);

    // The broker away for 12 s: the periods meanwhile wait in the outbox.
    broker.terminate();
    let away = SystemTime::now();
    std::thread::sleep(Duration::from_secs(12));
    broker.restart().expect("broker back");
    let back = SystemTime::now();

    let stop_at = clip_start + Duration::from_secs_f64(COUNTED_S);
    while SystemTime::now() < stop_at {
        desk.wait_for(Duration::from_millis(200), |_| false);
    }
    daemon.signal(libc::SIGTERM);
    assert!(daemon.wait(Duration::from_secs(30)).is_some_and(|s| s.success()), "{}", daemon.log());
    assert!(desk.wait_for(Duration::from_secs(10), last_status_is("stopped")), "{}", daemon.log());
    let stats = stats_of(&desk);
    let log = daemon.log();
    let why = format!("{:#?}\nlog:\n{log}", stats.iter().map(|s| &s.0).collect::<Vec<_>>());

    // Every period, one after the other, numbered without a hole.
    let seqs: Vec<u64> = stats.iter().map(|s| s.0.seq).collect();
    assert!(seqs.len() >= 4, "{COUNTED_S} s in {PERIOD_S} s periods: {seqs:?}");
    assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "consecutive seq: {seqs:?}");
    for w in stats.windows(2) {
        assert_eq!(w[0].0.period_end, w[1].0.period_start, "periods follow each other: {why}");
    }
    for (s, _) in &stats[..stats.len() - 1] {
        let len = time(&s.period_end).duration_since(time(&s.period_start)).unwrap();
        assert!(len <= Duration::from_secs(PERIOD_S) && s.frames > 0, "{s:?}");
    }
    // Periods that ended during the outage arrived after it, none lost.
    let held = stats.iter().filter(|(s, _)| time(&s.period_end) > away && time(&s.period_end) < back).count();
    assert!(held >= 1, "a period ended during the outage: {why}");

    // Line counts: the sums over the periods against the hand counts, within one.
    for (name, _, hand_in, hand_out) in LINES {
        let got = stats.iter().fold(LineCount::default(), |mut sum, (s, _)| {
            let n = s.lines[name]["person"];
            sum.inward += n.inward;
            sum.outward += n.outward;
            sum
        });
        eprintln!("line {name}: in {} out {} (by hand: in {hand_in} out {hand_out})", got.inward, got.outward);
        assert!(got.inward.abs_diff(hand_in) <= 1, "{name} in: {} vs {hand_in} by hand\n{why}", got.inward);
        assert!(got.outward.abs_diff(hand_out) <= 1, "{name} out: {} vs {hand_out} by hand\n{why}", got.outward);
        if hand_in + hand_out == 0 {
            assert_eq!((got.inward, got.outward), (0, 0), "{name}: nobody crosses it");
        }
    }
    // The walkway always has a few people on it.
    let peak = stats.iter().map(|(s, _)| s.zones["walkway"]["person"].peak).max().unwrap();
    // Periods keep to the wall clock, so the first may be a few frames long: the mean
    // over the whole run, each period weighted by its frames.
    let frames: u64 = stats.iter().map(|(s, _)| s.frames).sum();
    let weighted: f64 = stats.iter().map(|(s, _)| s.zones["walkway"]["person"].mean * s.frames as f64).sum();
    let mean = weighted / frames.max(1) as f64;
    assert!(peak >= 3 && mean > 0.5, "walkway peak {peak}, mean {mean}: {why}");

    // What the desk got is what `gridwatch stats` shows from the store.
    let state = dir.join("state");
    let (code, out, err) = gridwatch(&["stats", "--dir", state.to_str().unwrap(), "--json", "-n", "1000"]);
    assert_eq!(code, 0, "{err}");
    let stored: Vec<StatsMessage> = out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(stored, stats.iter().map(|s| s.0.clone()).collect::<Vec<_>>());
    let (code, table, _) = gridwatch(&["stats", "--dir", state.to_str().unwrap(), "--camera", "walkway"]);
    assert!(code == 0 && table.contains("line west") && table.contains("zone walkway"), "{table}");
    let (code, _, err) = gridwatch(&["stats", "--dir", state.to_str().unwrap(), "--since", "last tuesday"]);
    assert!(code != 0 && err.contains("neither a time"), "{err}");
    eprintln!("{} stats messages, {held} held through the outage, peak {peak} on the walkway", stats.len());
    let _ = std::fs::remove_dir_all(&dir);
}
