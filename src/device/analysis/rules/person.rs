//! The rules about one person's welfare or a post's staffing: `person_down` (someone
//! lying where they fell) and `inactivity` (nobody seen in a zone for a while within a
//! daily window). docs/rules.md has their keys and figures.
//!
//! Promises: a person is down when the median width/height of their box over the last
//! analysed frames reaches `ratio` (and stays down until it falls under 0.85 of it, so a
//! box hovering at the threshold does not flicker), and their box's centre stays within
//! half its length of where it turned lying: a person walking across the picture who
//! merely looks lying moves off that spot and starts again. Bending or sitting (ratio
//! near 1) never reaches 1.3, and a brief stoop ends before `seconds`. Only pictures
//! where the model found the person count: a track the model lost keeps its last box
//! (still, as a fallen person is), so after `UNSEEN` unseen the person is not down. Inactivity
//! counts from the latest of: the window's opening today, the camera's first analysed
//! frame, and the last time one of its labels stood in the zone (any object seen surely
//! enough, moving or not: a resident sitting still is someone).

use std::collections::VecDeque;
use std::time::{Duration, SystemTime};

use serde_json::json;

use super::{Incident, RuleEngine, TrackView, dwell, since};
use crate::contract::timestamp;
use crate::device::config::{Schedule, local_minute};
use crate::device::geometry::BBox;

/// Analysed frames whose box shapes the lying test takes the median of.
const SHAPE_WINDOW: usize = 5;
/// Once down, a person stays down until the median ratio falls under this share of
/// `ratio`.
const STAND_UP: f32 = 0.85;
/// How far the box's centre may wander from where it turned lying, in its own length.
const SPOT: f32 = 0.5;
/// How long a down person may go unseen (the model missing them on a few pictures)
/// before they are no longer taken as down there.
const UNSEEN: Duration = Duration::from_secs(2);

pub(super) struct DownRule {
    pub after: Duration,
    pub ratio: f32,
}

pub(super) struct InactivityRule {
    pub classes: Vec<usize>,
    pub window: Schedule,
    pub after: Duration,
}

/// One person's recent shape and, while lying, where and since when.
#[derive(Default)]
pub(super) struct Shape {
    ratios: VecDeque<f32>,
    /// (since, centre) while lying at one spot.
    down: Option<(SystemTime, (f32, f32))>,
    /// The last picture the model found them on (or one it was not run on).
    seen_at: Option<SystemTime>,
}

impl Shape {
    /// Takes in one analysed frame's view of the person; `ratio` is the lying threshold.
    fn observe(&mut self, t: &TrackView, ratio: f32, now: SystemTime) {
        if !t.missed {
            self.seen_at = Some(now);
            self.shape(&t.bbox, ratio, now);
        } else if self.seen_at.is_none_or(|s| since(now, s) > UNSEEN) {
            self.down = None;
        }
    }

    /// Whether the person lies at one spot, since when.
    fn down_since(&self) -> Option<SystemTime> {
        self.down.map(|(t, _)| t)
    }

    fn shape(&mut self, b: &BBox, ratio: f32, now: SystemTime) {
        if self.ratios.len() == SHAPE_WINDOW {
            self.ratios.pop_front();
        }
        self.ratios.push_back(b.width() / b.height().max(1.0));
        let m = median(&self.ratios);
        let lying = if self.down.is_some() { m >= ratio * STAND_UP } else { m >= ratio };
        let centre = ((b.x1 + b.x2) / 2.0, (b.y1 + b.y2) / 2.0);
        self.down = match self.down {
            _ if !lying => None,
            Some((t, spot)) if (centre.0 - spot.0).hypot(centre.1 - spot.1) <= SPOT * b.width().max(b.height()) => {
                Some((t, spot))
            }
            // Just lay down, or moved off the spot: a new spot from now.
            _ => Some((now, centre)),
        };
    }
}

fn median(v: &VecDeque<f32>) -> f32 {
    let mut s: Vec<f32> = v.iter().copied().collect();
    s.sort_by(f32::total_cmp);
    s.get(s.len() / 2).copied().unwrap_or(0.0)
}

/// What inactivity remembers per zone.
#[derive(Default, Clone)]
pub(super) struct Quiet {
    /// The last time one of the rule's labels stood in the zone.
    last_seen: Option<SystemTime>,
}

impl RuleEngine {
    /// Keeps each person's shape (for `person_down`) and when each inactivity zone last
    /// had someone in it. Part of `observe`.
    pub(super) fn observe_persons(&mut self, now: SystemTime, tracks: &[TrackView]) {
        let ratio = self.rules.iter().filter_map(|r| r.person_down.as_ref().map(|d| d.ratio)).reduce(f32::min);
        self.shapes.retain(|id, _| tracks.iter().any(|t| t.id == *id));
        if let Some(ratio) = ratio {
            for t in tracks.iter().filter(|t| Some(t.class_id) == self.person) {
                self.shapes.entry(t.id).or_default().observe(t, ratio, now);
            }
        }
        for zi in 0..self.rules.len() {
            let Some(r) = &self.rules[zi].inactivity else { continue };
            let present = tracks
                .iter()
                .any(|t| t.established && r.classes.contains(&t.class_id) && self.standing.contains_key(&(t.id, zi)));
            if present {
                self.quiet[zi].last_seen = Some(now);
            }
        }
    }

    pub(super) fn person_down(&self, zi: usize, now: SystemTime, tracks: &[TrackView], out: &mut Vec<Incident>) {
        let Some(r) = &self.rules[zi].person_down else { return };
        let Some(person) = self.person else { return };
        for t in self.members(zi, tracks, &[person], false) {
            let Some(since_t) = self.shapes.get(&t.id).and_then(Shape::down_since) else { continue };
            let down = since(now, since_t);
            if down >= r.after {
                out.push(self.one("person_down", zi, t, json!({ "down_s": dwell(down) })));
            }
        }
    }

    pub(super) fn inactivity(&self, zi: usize, now: SystemTime, out: &mut Vec<Incident>) {
        let Some(r) = &self.rules[zi].inactivity else { return };
        let Some(into) = r.window.minutes_into(local_minute(now)) else { return };
        let secs = now.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default().as_secs() % 60;
        let opened = now - Duration::from_secs(u64::from(into) * 60 + secs);
        let last_seen = self.quiet[zi].last_seen;
        let from = [Some(opened), self.first_frame, last_seen].into_iter().flatten().max().unwrap_or(now);
        let quiet = since(now, from);
        if quiet < r.after {
            return;
        }
        let label = r.classes.first().map_or("person", |c| self.labels.name(*c)).to_owned();
        out.push(Incident {
            key: format!("inactivity/{}", self.zones[zi].name),
            kind: "inactivity",
            zone: Some(zi),
            label,
            score: 0.0,
            boxes: Vec::new(),
            detail: json!({
                "window": r.window.to_string(),
                "quiet_s": dwell(quiet),
                "last_seen_at": last_seen.map(timestamp),
            }),
            milestone: 0,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{engine, run};
    use super::*;

    /// A person of `w` x `h` px whose box centre is at (x, y).
    fn body(id: u64, x: f32, y: f32, w: f32, h: f32) -> TrackView {
        let bbox = BBox { x1: x - w / 2.0, y1: y - h / 2.0, x2: x + w / 2.0, y2: y + h / 2.0 };
        TrackView { id, class_id: 0, bbox, score: 0.8, confirmed: true, established: true, missed: false }
    }

    #[test]
    fn a_person_lying_still_is_down_after_t_and_gets_up_again() {
        let mut e = engine("[cameras.zones.person_down]\nseconds = 2\n");
        // Upright 2 s, lying from frame 10 to 39, up again.
        let got = run(&mut e, 50, |f| {
            let lying = (10..40).contains(&f);
            vec![if lying { body(1, 50.0, 80.0, 30.0, 12.0) } else { body(1, 50.0, 70.0, 10.0, 30.0) }]
        });
        let frames: Vec<usize> = got.iter().map(|g| g.0).collect();
        // The median of 5 shapes turns at frame 12; 2 s (10 frames) later.
        assert_eq!(frames.first(), Some(&22), "{got:?}");
        assert!(got.iter().all(|g| g.1 == "person_down/lane/1"));
        assert!(frames.last().is_some_and(|f| (40..=42).contains(f)), "ends when they stand: {got:?}");
        assert!(got[0].2.contains("\"down_s\":2.0"), "{got:?}");
    }

    #[test]
    fn walking_across_bending_or_sitting_is_not_down() {
        // Lying-shaped but moving 3 px a frame (half its length a second): never on one spot for 2 s.
        let mut e = engine("[cameras.zones.person_down]\nseconds = 2\n");
        assert!(run(&mut e, 60, |f| vec![body(1, 10.0 + 3.0 * f as f32, 80.0, 30.0, 12.0)]).is_empty());
        // Bending for 1 s (ratio 1.5), sitting for long (ratio 1.0).
        let mut e = engine("[cameras.zones.person_down]\nseconds = 2\n");
        let got = run(&mut e, 60, |f| match f {
            10..15 => vec![body(1, 50.0, 80.0, 24.0, 16.0)],
            20.. => vec![body(1, 50.0, 80.0, 20.0, 20.0)],
            _ => vec![body(1, 50.0, 70.0, 10.0, 30.0)],
        });
        assert!(got.is_empty(), "{got:?}");
    }

    #[test]
    fn a_person_the_model_lost_is_not_down_for_long() {
        // Lying still; from frame 20 the model no longer finds them (they got up and went,
        // too fast for the tracker): the track keeps its last box, still as ever.
        let mut e = engine("[cameras.zones.person_down]\nseconds = 3\n");
        let got = run(&mut e, 60, |f| {
            let mut b = body(1, 50.0, 80.0, 30.0, 12.0);
            b.missed = f >= 20;
            vec![b]
        });
        let frames: Vec<usize> = got.iter().map(|g| g.0).collect();
        // Lying from the first frame, down 3 s later; not 2 s after the last sighting.
        assert_eq!(frames.first(), Some(&15), "{got:?}");
        assert!(frames.last().is_some_and(|f| (29..=30).contains(f)), "{got:?}");
        // A single missed picture now and then changes nothing.
        let mut e = engine("[cameras.zones.person_down]\nseconds = 3\n");
        let got = run(&mut e, 40, |f| {
            let mut b = body(1, 50.0, 80.0, 30.0, 12.0);
            b.missed = f % 4 == 3;
            vec![b]
        });
        let frames: Vec<usize> = got.iter().map(|g| g.0).collect();
        assert_eq!(frames, (15..40).collect::<Vec<_>>(), "{got:?}");
    }

    #[test]
    fn inactivity_fires_in_the_window_when_nobody_comes_and_ends_when_someone_does() {
        let now = local_minute(SystemTime::UNIX_EPOCH + Duration::from_secs(1_790_000_000));
        let hhmm = |m: u32| format!("{:02}:{:02}", (m / 60) % 24, m % 60);
        let open = format!(
            "[cameras.zones.inactivity]\nwindow = \"{}-{}\"\nseconds = 2\n",
            hhmm(now + 1440 - 30),
            hhmm(now + 30)
        );
        let mut e = engine(&open);
        // Nobody for 4 s, then a person in the lane (feet at y = 80).
        let got = run(&mut e, 30, |f| if f >= 20 { vec![body(1, 50.0, 65.0, 10.0, 30.0)] } else { vec![] });
        let frames: Vec<usize> = got.iter().map(|g| g.0).collect();
        assert_eq!(frames, (10..20).collect::<Vec<_>>(), "from 2 s after the first frame until someone came: {got:?}");
        assert!(got[0].2.contains("\"last_seen_at\":null"), "{got:?}");
        // Outside the window: never.
        let closed =
            format!("[cameras.zones.inactivity]\nwindow = \"{}-{}\"\nseconds = 2\n", hhmm(now + 60), hhmm(now + 120));
        assert!(run(&mut engine(&closed), 30, |_| vec![]).is_empty());
    }
}
