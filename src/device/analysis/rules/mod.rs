//! Rules: from tracked objects in zones (and the camera's own state) to incidents, the
//! things the duty desk acts on. Each incident becomes an event of its own `kind`
//! (event.rs gives it its `new`/`update`/`end`).
//!
//! Promises: an incident is reported on every frame while its rule holds and stops
//! being reported when it no longer does; its `key` is stable for that time, so one
//! incident is one event. Durations come from frame capture times (`now`), never the
//! wall clock, so a clip gives the same incidents however fast it is analysed.
//! Zone rules (`zone.rs` for membership) are here; per-camera rules in `camera.rs`.

mod camera;
mod person;

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use serde_json::json;

use crate::device::config::{Schedule, local_minute};
pub use camera::CameraRules;

use crate::device::analysis::detect::Labels;
use crate::device::analysis::zone::{Polygon, Zone, ZoneMembership, foot_point};
use crate::device::config::CameraConfig;
use crate::device::geometry::BBox;

/// A box that has not moved more than this (IoU with where it stopped) is standing still.
const STILL_IOU: f32 = 0.6;
/// Standing still this long counts as stopped (for the motion gate's re-check).
pub const STOPPED_AFTER: Duration = Duration::from_secs(1);

/// One tracked object as the rules see it.
#[derive(Debug, Clone)]
pub struct TrackView {
    pub id: u64,
    pub class_id: usize,
    pub bbox: BBox,
    pub score: f32,
    /// An object event's worth: confirmed and seen moving.
    pub confirmed: bool,
    /// Seen often and surely enough to be real, moving or not (parked cars, left bags).
    pub established: bool,
    /// The model ran and did not find it on the last analysed picture: its box is where
    /// it was last seen, not where it is.
    pub missed: bool,
}

/// A rule that holds now.
#[derive(Debug, Clone)]
pub struct Incident {
    /// Stable while the incident lasts, e.g. "loitering/bench/17".
    pub key: String,
    pub kind: &'static str,
    /// Index of the zone it is about, if any.
    pub zone: Option<usize>,
    pub label: String,
    pub score: f32,
    /// The objects involved, in frame pixels.
    pub boxes: Vec<BBox>,
    pub detail: serde_json::Value,
    /// Changes when the desk should hear about it (a new crowd peak, a new tamper sign).
    pub milestone: u64,
}

struct LabelRule {
    classes: Vec<usize>,
    after: Duration,
}

struct ZoneRules {
    intrusion: Option<(Vec<usize>, Option<Schedule>, Option<String>)>,
    loitering: Option<LabelRule>,
    crowd: Option<(LabelRule, u32)>,
    occupation: Option<LabelRule>,
    abandoned: Option<LabelRule>,
    person_down: Option<person::DownRule>,
    inactivity: Option<person::InactivityRule>,
}

/// What is remembered about one object between frames.
struct ObjState {
    /// Where it stood when it last stopped, and since when.
    anchor: BBox,
    anchor_at: SystemTime,
    /// Zones it is in, and since when: from the first of the frames in a row it was
    /// seen standing there (zone inertia and confirmation only delay the news of it).
    entered: HashMap<usize, SystemTime>,
}

#[derive(Default)]
struct CrowdState {
    since: Option<SystemTime>,
    peak: usize,
}

/// One camera's zone rules and what they remember.
pub struct RuleEngine {
    labels: Labels,
    zones: Vec<Zone>,
    rules: Vec<ZoneRules>,
    membership: ZoneMembership,
    objects: HashMap<u64, ObjState>,
    crowds: Vec<CrowdState>,
    /// Abandoned items (by track id): since when no person has been near.
    alone: HashMap<u64, SystemTime>,
    /// (track id, zone): since when the track, tentative ones too, has stood in the
    /// zone on every analysed frame.
    standing: HashMap<(u64, usize), SystemTime>,
    person: Option<usize>,
    /// Persons' recent box shapes, by track id (person_down).
    shapes: HashMap<u64, person::Shape>,
    /// Per zone: when someone was last in it (inactivity).
    quiet: Vec<person::Quiet>,
    /// The first analysed frame's time: inactivity counts from it at the earliest.
    first_frame: Option<SystemTime>,
}

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s.max(0.0))
}

impl RuleEngine {
    /// The zones and rules of `cam` (validated by config, so every label is known).
    pub fn new(cam: &CameraConfig, labels: &Labels) -> RuleEngine {
        let ids = |l: &[String]| l.iter().filter_map(|n| labels.id(n)).collect::<Vec<_>>();
        let zones: Vec<Zone> = cam
            .zones
            .iter()
            .map(|z| Zone { name: z.name.clone(), polygon: Polygon(z.points.clone()), inertia: z.inertia })
            .collect();
        let rules = cam
            .zones
            .iter()
            .map(|z| ZoneRules {
                intrusion: z.intrusion.as_ref().map(|r| {
                    (
                        ids(&r.labels),
                        r.schedule.as_ref().map(|s| *s.get()),
                        r.schedule.as_ref().map(|s| s.get().to_string()),
                    )
                }),
                loitering: z.loitering.as_ref().map(|r| LabelRule { classes: ids(&r.labels), after: secs(r.seconds) }),
                crowd: z
                    .crowd
                    .as_ref()
                    .map(|r| (LabelRule { classes: ids(&r.labels), after: secs(r.seconds) }, r.count)),
                occupation: z
                    .occupation
                    .as_ref()
                    .map(|r| LabelRule { classes: ids(&r.labels), after: secs(r.seconds) }),
                abandoned: z.abandoned.as_ref().map(|r| LabelRule { classes: ids(&r.labels), after: secs(r.seconds) }),
                person_down: z
                    .person_down
                    .as_ref()
                    .map(|r| person::DownRule { after: secs(r.seconds), ratio: r.ratio }),
                inactivity: z.inactivity.as_ref().map(|r| person::InactivityRule {
                    classes: ids(&r.labels),
                    window: *r.window.get(),
                    after: secs(r.seconds),
                }),
            })
            .collect();
        RuleEngine {
            labels: labels.clone(),
            crowds: zones.iter().map(|_| CrowdState::default()).collect(),
            zones,
            rules,
            membership: ZoneMembership::default(),
            objects: HashMap::new(),
            alone: HashMap::new(),
            standing: HashMap::new(),
            person: labels.id("person"),
            shapes: HashMap::new(),
            quiet: cam.zones.iter().map(|_| person::Quiet::default()).collect(),
            first_frame: None,
        }
    }

    pub fn zones(&self) -> &[Zone] {
        &self.zones
    }

    /// The zones watched for a person down, and the person class: what the turned
    /// views look for, and where. None when no zone has the rule.
    pub fn down_watch(&self) -> Option<(Vec<&Polygon>, usize)> {
        let zones: Vec<&Polygon> = self
            .zones
            .iter()
            .zip(&self.rules)
            .filter(|(_, r)| r.person_down.is_some())
            .map(|(z, _)| &z.polygon)
            .collect();
        self.person.filter(|_| !zones.is_empty()).map(|p| (zones, p))
    }

    /// Takes in an analysed frame's tracks: zone membership (with inertia) and where
    /// each object stands still. Call only for frames the detector saw.
    pub fn observe(&mut self, now: SystemTime, tracks: &[TrackView], size: (u32, u32)) {
        let real: Vec<(u64, BBox)> = tracks.iter().filter(|t| t.established).map(|t| (t.id, t.bbox)).collect();
        let inside = self.membership.update(&self.zones, &real, size);
        self.objects.retain(|id, _| tracks.iter().any(|t| t.id == *id));
        self.alone.retain(|id, _| tracks.iter().any(|t| t.id == *id));
        self.standing.retain(|(id, _), _| tracks.iter().any(|t| t.id == *id));
        for t in tracks {
            let (x, y) = foot_point(&t.bbox, size);
            for (zi, z) in self.zones.iter().enumerate() {
                if z.polygon.contains(x, y) {
                    self.standing.entry((t.id, zi)).or_insert(now);
                } else {
                    self.standing.remove(&(t.id, zi));
                }
            }
        }
        for t in tracks {
            let st = self.objects.entry(t.id).or_insert_with(|| ObjState {
                anchor: t.bbox,
                anchor_at: now,
                entered: HashMap::new(),
            });
            if st.anchor.iou(&t.bbox) < STILL_IOU {
                st.anchor = t.bbox;
                st.anchor_at = now;
            }
            let zs = inside.get(&t.id).cloned().unwrap_or_default();
            st.entered.retain(|z, _| zs.contains(z));
            for z in zs {
                st.entered.entry(z).or_insert_with(|| self.standing.get(&(t.id, z)).copied().unwrap_or(now));
            }
        }
        self.first_frame.get_or_insert(now);
        self.observe_persons(now, tracks);
    }

    /// How many objects of each of `classes` stand in each zone now (with the zones'
    /// inertia; objects seen surely enough, moving or not): `[zone]` lists (class, n).
    pub fn occupancy(&self, tracks: &[TrackView], classes: &[usize]) -> Vec<Vec<(usize, u64)>> {
        (0..self.zones.len())
            .map(|zi| {
                classes
                    .iter()
                    .map(|c| {
                        let n =
                            tracks.iter().filter(|t| t.class_id == *c && t.established && self.in_zone(zi, t)).count();
                        (*c, n as u64)
                    })
                    .collect()
            })
            .collect()
    }

    /// Names of the zones object `id` is in.
    pub fn zones_of(&self, id: u64) -> Vec<String> {
        let Some(st) = self.objects.get(&id) else { return Vec::new() };
        let mut z: Vec<usize> = st.entered.keys().copied().collect();
        z.sort_unstable();
        z.into_iter().map(|i| self.zones[i].name.clone()).collect()
    }

    /// How long object `id` has stood still.
    pub fn still_for(&self, id: u64, now: SystemTime) -> Duration {
        self.objects.get(&id).map_or(Duration::ZERO, |s| now.duration_since(s.anchor_at).unwrap_or_default())
    }

    /// The zone incidents that hold at `now`.
    pub fn evaluate(&mut self, now: SystemTime, tracks: &[TrackView]) -> Vec<Incident> {
        let mut out = Vec::new();
        let persons: Vec<&TrackView> =
            tracks.iter().filter(|t| Some(t.class_id) == self.person && t.established).collect();
        for zi in 0..self.rules.len() {
            self.intrusion(zi, now, tracks, &mut out);
            self.loitering(zi, now, tracks, &mut out);
            self.crowd(zi, now, tracks, &mut out);
            self.occupation(zi, now, tracks, &mut out);
            self.abandoned(zi, now, tracks, &persons, &mut out);
            self.person_down(zi, now, tracks, &mut out);
            self.inactivity(zi, now, &mut out);
        }
        out
    }

    fn in_zone(&self, zi: usize, t: &TrackView) -> bool {
        self.objects.get(&t.id).and_then(|s| s.entered.get(&zi)).is_some()
    }

    /// The tracks of `classes` in zone `zi`: confirmed ones, or with `established`
    /// also those seen surely enough that never moved (a parked van).
    fn members<'t>(
        &self,
        zi: usize,
        tracks: &'t [TrackView],
        classes: &[usize],
        established: bool,
    ) -> Vec<&'t TrackView> {
        tracks
            .iter()
            .filter(|t| (t.confirmed || (established && t.established)) && classes.contains(&t.class_id))
            .filter(|t| self.in_zone(zi, t))
            .collect()
    }

    /// An incident about one object.
    fn one(&self, kind: &'static str, zi: usize, t: &TrackView, detail: serde_json::Value) -> Incident {
        Incident {
            key: format!("{kind}/{}/{}", self.zones[zi].name, t.id),
            kind,
            zone: Some(zi),
            label: self.labels.name(t.class_id).to_owned(),
            score: t.score,
            boxes: vec![t.bbox],
            detail,
            milestone: 0,
        }
    }

    fn intrusion(&self, zi: usize, now: SystemTime, tracks: &[TrackView], out: &mut Vec<Incident>) {
        let Some((classes, sched, text)) = &self.rules[zi].intrusion else { return };
        if sched.is_none_or(|s| s.contains(local_minute(now))) {
            for t in self.members(zi, tracks, classes, false) {
                out.push(self.one("intrusion", zi, t, json!({ "schedule": text })));
            }
        }
    }

    fn loitering(&self, zi: usize, now: SystemTime, tracks: &[TrackView], out: &mut Vec<Incident>) {
        let Some(r) = &self.rules[zi].loitering else { return };
        for t in self.members(zi, tracks, &r.classes, false) {
            let d = since(now, self.objects[&t.id].entered[&zi]);
            if d >= r.after {
                out.push(self.one("loitering", zi, t, json!({ "dwell_s": dwell(d) })));
            }
        }
    }

    fn crowd(&mut self, zi: usize, now: SystemTime, tracks: &[TrackView], out: &mut Vec<Incident>) {
        let Some((r, count)) = &self.rules[zi].crowd else { return };
        let members = self.members(zi, tracks, &r.classes, false);
        let c = &mut self.crowds[zi];
        if members.len() < *count as usize {
            *c = CrowdState::default();
            return;
        }
        let start = *c.since.get_or_insert(now);
        if since(now, start) < r.after {
            return;
        }
        c.peak = c.peak.max(members.len());
        out.push(Incident {
            key: format!("crowd/{}", self.zones[zi].name),
            kind: "crowd",
            zone: Some(zi),
            label: self.labels.name(r.classes[0]).to_owned(),
            score: members.iter().map(|t| t.score).fold(0.0, f32::max),
            boxes: members.iter().map(|t| t.bbox).collect(),
            detail: json!({ "count": members.len(), "peak": c.peak }),
            milestone: c.peak as u64,
        });
    }

    fn occupation(&self, zi: usize, now: SystemTime, tracks: &[TrackView], out: &mut Vec<Incident>) {
        let Some(r) = &self.rules[zi].occupation else { return };
        for t in distinct(self.members(zi, tracks, &r.classes, true)) {
            let still = since(now, self.objects[&t.id].anchor_at);
            if still >= r.after {
                out.push(self.one("occupation", zi, t, json!({ "dwell_s": dwell(still) })));
            }
        }
    }

    fn abandoned(
        &mut self,
        zi: usize,
        now: SystemTime,
        tracks: &[TrackView],
        persons: &[&TrackView],
        out: &mut Vec<Incident>,
    ) {
        let Some(r) = &self.rules[zi].abandoned else { return };
        let after = r.after;
        for t in distinct(self.members(zi, tracks, &r.classes, true)) {
            let still = since(now, self.objects[&t.id].anchor_at);
            let near = persons.iter().any(|p| is_near(&p.bbox, &t.bbox));
            if near || still < STOPPED_AFTER {
                self.alone.remove(&t.id);
                continue;
            }
            let alone = since(now, *self.alone.entry(t.id).or_insert(now));
            if alone >= after {
                let d = json!({ "dwell_s": dwell(still), "alone_s": dwell(alone) });
                out.push(self.one("abandoned", zi, t, d));
            }
        }
    }
}

fn since(now: SystemTime, t: SystemTime) -> Duration {
    now.duration_since(t).unwrap_or_default()
}

/// Seconds to one decimal, as the contract's `dwell_s` figures are written.
fn dwell(d: Duration) -> f64 {
    (d.as_secs_f64() * 10.0).round() / 10.0
}

/// One track per physical object: the detector may see one van as a car and a truck at
/// once (two tracks, one box); the oldest track speaks for it, so its incident keeps one
/// key for as long as possible.
fn distinct(mut tracks: Vec<&TrackView>) -> Vec<&TrackView> {
    tracks.sort_by_key(|t| t.id);
    let mut kept: Vec<&TrackView> = Vec::new();
    for t in tracks {
        if !kept.iter().any(|k| k.bbox.iou(&t.bbox) > 0.5) {
            kept.push(t);
        }
    }
    kept
}

/// Whether a person box is within reach of an item: closer than the person's height.
fn is_near(person: &BBox, item: &BBox) -> bool {
    let reach = person.height();
    let dx = (item.x1 - person.x2).max(person.x1 - item.x2).max(0.0);
    let dy = (item.y1 - person.y2).max(person.y1 - item.y2).max(0.0);
    dx * dx + dy * dy <= reach * reach
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::config::Config;

    const BASE: &str =
        "site = \"s\"\n[mqtt]\nhost = \"h\"\n[storage]\ndir = \"d\"\n[[cameras]]\nid = \"c\"\nurl = \"rtsp://h/x\"\n";

    pub(super) fn engine(zone_toml: &str) -> RuleEngine {
        let text = format!(
            "{BASE}[[cameras.zones]]\nname = \"lane\"\npoints = [[0.0, 0.5], [1.0, 0.5], [1.0, 1.0], [0.0, 1.0]]\ninertia = 2\n{zone_toml}"
        );
        let cam = Config::parse(&text, "t.toml".as_ref(), "/".as_ref()).unwrap().cameras.remove(0);
        RuleEngine::new(&cam, &Labels::builtin())
    }

    fn t(id: u64, class_id: usize, x: f32, y: f32) -> TrackView {
        let bbox = BBox { x1: x, y1: y - 40.0, x2: x + 20.0, y2: y };
        TrackView { id, class_id, bbox, score: 0.8, confirmed: true, established: true, missed: false }
    }

    /// Runs `frames` at 5 fps; returns the incidents' (frame, kind, detail) per frame.
    pub(super) fn run(
        e: &mut RuleEngine,
        frames: usize,
        at: impl Fn(usize) -> Vec<TrackView>,
    ) -> Vec<(usize, String, String)> {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_790_000_000);
        let mut out = Vec::new();
        for f in 0..frames {
            let now = t0 + Duration::from_millis(200 * f as u64);
            let tracks = at(f);
            e.observe(now, &tracks, (100, 100));
            for i in e.evaluate(now, &tracks) {
                out.push((f, i.key, i.detail.to_string()));
            }
        }
        out
    }

    #[test]
    fn loitering_fires_after_t_in_the_zone_and_counts_dwell() {
        let mut e = engine("[cameras.zones.loitering]\nseconds = 2\n");
        // Person stands in the zone (feet at y = 80) from frame 0.
        let got = run(&mut e, 20, |_| vec![t(7, 0, 40.0, 80.0)]);
        // Enters on frame 1 (inertia 2), standing there since frame 0; 2 s later is frame 10.
        assert_eq!(got.first().map(|g| g.0), Some(10), "{got:?}");
        assert_eq!(got[0].1, "loitering/lane/7");
        assert!(got[0].2.contains("\"dwell_s\":2.0"), "{got:?}");
        // Feet above the zone: never.
        let mut e = engine("[cameras.zones.loitering]\nseconds = 2\n");
        assert!(run(&mut e, 20, |_| vec![t(7, 0, 40.0, 30.0)]).is_empty());
    }

    #[test]
    fn crowd_needs_n_for_t_and_tracks_its_peak() {
        let mut e = engine("[cameras.zones.crowd]\ncount = 3\nseconds = 1\n");
        let got = run(&mut e, 20, |f| {
            let n = if f < 10 { 3 } else { 4 };
            (0..n).map(|i| t(i, 0, 10.0 + 20.0 * i as f32, 90.0)).collect()
        });
        assert_eq!(got.first().map(|g| g.0), Some(6), "in at frame 1, 1 s later: {got:?}");
        assert!(got.iter().all(|g| g.1 == "crowd/lane"));
        assert!(got.last().unwrap().2.contains("\"peak\":4"), "{got:?}");
        let mut e = engine("[cameras.zones.crowd]\ncount = 5\n");
        assert!(run(&mut e, 20, |_| (0..4).map(|i| t(i, 0, 10.0 * i as f32, 90.0)).collect()).is_empty());
    }

    #[test]
    fn occupation_is_for_vehicles_that_stay_abandoned_for_items_left_alone() {
        let mut e = engine("[cameras.zones.occupation]\nseconds = 3\n[cameras.zones.abandoned]\nseconds = 2\n");
        let got = run(&mut e, 40, |f| {
            let mut v = vec![t(1, 2, 10.0, 90.0), t(3, 28, 60.0, 95.0), t(5, 7, 11.0, 90.0)]; // car, suitcase, car as truck
            if f < 8 {
                v.push(t(2, 0, 5.0 + 4.0 * f as f32, 70.0)); // a person walking past
            }
            if f < 10 {
                v.push(t(4, 0, 58.0, 90.0)); // the suitcase's owner, then gone
            }
            v
        });
        let first = |k: &str| got.iter().find(|g| g.1.starts_with(k)).map(|g| g.0);
        assert!(!got.iter().any(|g| g.1 == "occupation/lane/5"), "the same car seen as a truck is one vehicle");
        assert_eq!(first("occupation/lane/1"), Some(15), "{got:?}");
        assert!(!got.iter().any(|g| g.1.contains("/2")), "the walker makes none: {got:?}");
        let ab = first("abandoned/lane/3").expect("abandoned");
        assert!((20..=22).contains(&ab), "owner left at frame 10, 2 s alone: {ab}");
    }

    #[test]
    fn intrusion_only_inside_the_schedule() {
        let now = local_minute(SystemTime::UNIX_EPOCH + Duration::from_secs(1_790_000_000));
        let hhmm = |m: u32| format!("{:02}:{:02}", (m / 60) % 24, m % 60);
        let open = format!("[cameras.zones.intrusion]\nschedule = \"{}-{}\"\n", hhmm(now + 1440 - 30), hhmm(now + 30));
        let closed = format!("[cameras.zones.intrusion]\nschedule = \"{}-{}\"\n", hhmm(now + 60), hhmm(now + 120));
        let walker = |_| vec![t(9, 0, 50.0, 80.0)];
        assert_eq!(run(&mut engine(&open), 5, walker).first().map(|g| g.1.clone()), Some("intrusion/lane/9".into()));
        assert!(run(&mut engine(&closed), 5, walker).is_empty());
    }
}
