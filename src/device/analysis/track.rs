//! Object tracking: ties each frame's detections to the objects seen before, so that
//! one physical object is one track from when it is confirmed until it leaves.
//!
//! Promises, per track: `Confirmed` is reported once, on its `min_hits`-th matched frame,
//! if it never went more than `max_tentative_misses` frames in a row unmatched before
//! that (otherwise it is dropped unreported). With the defaults (`for_fps`): 3 matched
//! frames, never 2 misses in a row, so an object detected on every other frame confirms
//! on its 3rd detection and one detected on every third frame never does. Then `Seen` on
//! every frame it is matched; then exactly one `Lost`, on its (`max_misses` + 1)-th frame
//! in a row without a match. Pure logic: no pictures, no clocks.
//!
//! Two more conditions hold back `Confirmed` (both off with `for_fps` alone): the median
//! of the track's last `SCORE_WINDOW` frames' scores (a miss counts as 0) must reach its
//! label's `confirm_score`, and, with `update_with_motion`, the object must have been
//! seen moving once (a poster of a person never makes an event). `is_established` is the
//! same test without the motion part, for rules about things that stand still.

use std::collections::VecDeque;

use crate::device::analysis::detect::Detection;
use crate::device::analysis::filter::of_one_kind;
use crate::device::geometry::BBox;

/// Frames whose scores the confirmation median covers.
const SCORE_WINDOW: usize = 7;

#[derive(Debug, Clone)]
pub struct TrackerConfig {
    /// Lowest overlap of a detection with a track's predicted box to count as the same object.
    pub min_iou: f32,
    /// Matched frames needed before a track counts as a real object.
    pub min_hits: u32,
    /// Misses in a row a tentative track survives; more and it is dropped unreported.
    pub max_tentative_misses: u32,
    /// Frames in a row a confirmed object may go unseen (occlusion) before it is lost.
    pub max_misses: u32,
    /// The same for an established object that has never moved (a parked vehicle,
    /// a bag): the model misses those for seconds at a time when a score hovers at its
    /// threshold, and a parked car does not leave unseen.
    pub max_still_misses: u32,
    /// Median score a track must reach to be confirmed, by class id (absent: 0).
    pub confirm_score: Vec<(usize, f32)>,
    /// Class ids that are kinds of one thing the model confuses (a van is a car on one
    /// frame and a truck on the next): a detection of one may continue a track of
    /// another, which keeps its first class.
    pub one_kind: Vec<usize>,
    /// How far (in its own smaller side) an object must have gone from where it was
    /// first seen before motion around it counts as its own: a post beside a passer-by
    /// sits in changed pixels without moving. 0: motion in the box is enough.
    pub min_travel: f32,
}

impl TrackerConfig {
    /// Sensible settings for a camera analysed at `fps` frames a second: confirm after
    /// 3 frames, keep an object through about 2 s of occlusion.
    pub fn for_fps(fps: f64) -> TrackerConfig {
        TrackerConfig {
            min_iou: 0.2,
            min_hits: 3,
            max_tentative_misses: 1,
            max_misses: ((fps * 2.0).round() as u32).max(3),
            max_still_misses: ((fps * 30.0).round() as u32).max(3),
            confirm_score: Vec::new(),
            one_kind: Vec::new(),
            min_travel: 0.0,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Track {
    pub id: u64,
    pub class_id: usize,
    /// The last matched box (not the prediction).
    pub bbox: BBox,
    /// The last matched detection's score.
    pub score: f32,
    pub hits: u32,
    /// Frames in a row without a match.
    pub misses: u32,
    pub confirmed: bool,
    /// Has been established (see [`Tracker::is_established`]) at some point; such a
    /// track survives misses like a confirmed one.
    pub established: bool,
    /// Seen in a moving part of the picture at least once (having gone `min_travel`).
    pub moved: bool,
    /// The box it was first seen in.
    origin: BBox,
    /// The last frames' scores, 0 for a miss, newest last.
    scores: VecDeque<f32>,
    /// Centre motion per frame, smoothed; used to predict where to look next.
    velocity: (f32, f32),
}

impl Track {
    fn predicted(&self) -> BBox {
        let k = (self.misses + 1) as f32;
        let (dx, dy) = (self.velocity.0 * k, self.velocity.1 * k);
        BBox { x1: self.bbox.x1 + dx, y1: self.bbox.y1 + dy, x2: self.bbox.x2 + dx, y2: self.bbox.y2 + dy }
    }

    /// How far it has gone from where it was first seen, in its own smaller side: the
    /// shift of its centre, or the change of its height (walking towards the camera).
    fn travelled(&self) -> f32 {
        let ((x0, y0), (x1, y1)) = (centre(&self.origin), centre(&self.bbox));
        let shift = (x1 - x0).hypot(y1 - y0).max((self.bbox.height() - self.origin.height()).abs());
        shift / self.bbox.width().min(self.bbox.height()).max(1.0)
    }

    fn absorb(&mut self, d: &Detection) {
        let frames = (self.misses + 1) as f32;
        let (cx0, cy0) = centre(&self.bbox);
        let (cx1, cy1) = centre(&d.bbox);
        let v = ((cx1 - cx0) / frames, (cy1 - cy0) / frames);
        self.velocity = if self.hits <= 1 { v } else { (0.5 * (self.velocity.0 + v.0), 0.5 * (self.velocity.1 + v.1)) };
        self.bbox = d.bbox;
        self.score = d.score;
        self.hits += 1;
        self.misses = 0;
        self.push_score(d.score);
    }

    fn push_score(&mut self, s: f32) {
        if self.scores.len() == SCORE_WINDOW {
            self.scores.pop_front();
        }
        self.scores.push_back(s);
    }

    /// Median of the recent scores, misses counted as 0.
    pub fn median_score(&self) -> f32 {
        let mut v: Vec<f32> = self.scores.iter().copied().collect();
        if v.is_empty() {
            return 0.0;
        }
        v.sort_by(f32::total_cmp);
        let n = v.len();
        if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 }
    }
}

fn centre(b: &BBox) -> (f32, f32) {
    ((b.x1 + b.x2) / 2.0, (b.y1 + b.y2) / 2.0)
}

/// What happened to a track on this frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Confirmed,
    Seen,
    Lost,
}

#[derive(Debug)]
pub struct Tracker {
    cfg: TrackerConfig,
    tracks: Vec<Track>,
    next_id: u64,
}

impl Tracker {
    pub fn new(cfg: TrackerConfig) -> Tracker {
        Tracker { cfg, tracks: Vec::new(), next_id: 1 }
    }

    /// Feeds one analysed frame's detections (already filtered to tracked labels), every
    /// one counted as moving. Returns the confirmed tracks this frame changed, with what
    /// happened to each.
    pub fn update(&mut self, detections: &[Detection]) -> Vec<(Change, Track)> {
        self.update_with_motion(detections, &vec![true; detections.len()])
    }

    /// Tracks this tracker holds, tentative ones included.
    pub fn tracks(&self) -> &[Track] {
        &self.tracks
    }

    fn confirm_score(&self, class_id: usize) -> f32 {
        self.cfg.confirm_score.iter().find(|c| c.0 == class_id).map_or(0.0, |c| c.1)
    }

    /// Seen often and surely enough to be a real object, moving or not.
    pub fn is_established(&self, t: &Track) -> bool {
        t.hits >= self.cfg.min_hits && t.median_score() >= self.confirm_score(t.class_id)
    }

    /// Like `update`; `moving[i]` says whether detection i lies in a moving part of the picture.
    pub fn update_with_motion(&mut self, detections: &[Detection], moving: &[bool]) -> Vec<(Change, Track)> {
        let moving_at = |di: usize| moving.get(di).copied().unwrap_or(true);
        let mut changes = Vec::new();
        let (matched, taken) = self.match_detections(detections, &moving_at, &mut changes);
        self.age_unmatched(&matched, &mut changes);
        for (di, d) in detections.iter().enumerate().filter(|(di, _)| !taken[*di]) {
            self.start_track(d, moving_at(di), &mut changes);
        }
        changes
    }

    /// Greedy assignment, best overlap first; confirmed tracks win ties over tentative
    /// ones so a flicker never steals a real object's detection. Returns which tracks
    /// were matched and which detections taken.
    fn match_detections(
        &mut self,
        detections: &[Detection],
        moving_at: &impl Fn(usize) -> bool,
        changes: &mut Vec<(Change, Track)>,
    ) -> (Vec<bool>, Vec<bool>) {
        let mut taken = vec![false; detections.len()];
        let mut matched = vec![false; self.tracks.len()];
        let mut pairs: Vec<(f32, usize, usize)> = Vec::new();
        for (ti, t) in self.tracks.iter().enumerate() {
            let pred = t.predicted();
            for (di, d) in detections.iter().enumerate() {
                if !of_one_kind(&self.cfg.one_kind, d.class_id, t.class_id) {
                    continue;
                }
                let sim = similarity(&pred, &d.bbox, self.cfg.min_iou);
                if sim > 0.0 {
                    pairs.push((sim + if t.confirmed { 1.0 } else { 0.0 }, ti, di));
                }
            }
        }
        pairs.sort_by(|a, b| b.0.total_cmp(&a.0));
        for (_, ti, di) in pairs {
            if matched[ti] || taken[di] {
                continue;
            }
            (matched[ti], taken[di]) = (true, true);
            self.tracks[ti].absorb(&detections[di]);
            let t = &mut self.tracks[ti];
            t.moved |= moving_at(di) && t.travelled() >= self.cfg.min_travel;
            let ready = self.is_established(&self.tracks[ti]);
            let t = &mut self.tracks[ti];
            t.established |= ready;
            if t.confirmed {
                changes.push((Change::Seen, t.clone()));
            } else if ready && t.moved {
                t.confirmed = true;
                changes.push((Change::Confirmed, t.clone()));
            }
        }
        (matched, taken)
    }

    /// Counts a miss for every track not seen this frame, and drops those past their
    /// limit (a confirmed one with a `Lost`).
    fn age_unmatched(&mut self, matched: &[bool], changes: &mut Vec<(Change, Track)>) {
        let cfg = &self.cfg;
        let mut i = 0;
        self.tracks.retain_mut(|t| {
            let was_matched = matched[i];
            i += 1;
            if was_matched {
                return true;
            }
            t.misses += 1;
            t.push_score(0.0);
            let limit = if t.established && !t.moved { cfg.max_still_misses } else { cfg.max_misses };
            if (t.confirmed || t.established) && t.misses > limit {
                if t.confirmed {
                    changes.push((Change::Lost, t.clone()));
                }
                false
            } else {
                t.confirmed || t.established || t.misses <= cfg.max_tentative_misses
            }
        });
    }

    /// A tentative track for a detection nothing matched (confirmed at once only when
    /// one hit is enough).
    fn start_track(&mut self, d: &Detection, moving: bool, changes: &mut Vec<(Change, Track)>) {
        let moved = moving && self.cfg.min_travel <= 0.0;
        let t = Track {
            id: self.next_id,
            class_id: d.class_id,
            bbox: d.bbox,
            score: d.score,
            hits: 1,
            misses: 0,
            confirmed: self.cfg.min_hits <= 1 && moved && d.score >= self.confirm_score(d.class_id),
            established: false,
            moved,
            origin: d.bbox,
            scores: VecDeque::from([d.score]),
            velocity: (0.0, 0.0),
        };
        self.next_id += 1;
        if t.confirmed {
            changes.push((Change::Confirmed, t.clone()));
        }
        self.tracks.push(t);
    }

    /// Removes and returns every confirmed track (on shutdown, so each gets its end).
    pub fn drain_confirmed(&mut self) -> Vec<Track> {
        let all = std::mem::take(&mut self.tracks);
        all.into_iter().filter(|t| t.confirmed).collect()
    }
}

/// How strongly `det` looks like the object predicted at `pred`: the overlap when it
/// is at least `min_iou`; otherwise a small positive value when the centres are close
/// and the sizes alike (a small, fast object can jump clear of its last box between
/// analysed frames); 0 when it is not the same object.
fn similarity(pred: &BBox, det: &BBox, min_iou: f32) -> f32 {
    let iou = pred.iou(det);
    if iou >= min_iou {
        return iou;
    }
    let (pc, dc) = (centre(pred), centre(det));
    let reach = 0.6 * pred.width().max(pred.height());
    let dist = ((pc.0 - dc.0).powi(2) + (pc.1 - dc.1).powi(2)).sqrt();
    let size_ratio = det.area() / pred.area().max(1.0);
    if dist <= reach && (0.5..=2.0).contains(&size_ratio) { 0.01 } else { 0.0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn det(class_id: usize, x: f32, y: f32, w: f32, h: f32) -> Detection {
        Detection { class_id, score: 0.8, bbox: BBox { x1: x, y1: y, x2: x + w, y2: y + h } }
    }

    fn cfg() -> TrackerConfig {
        TrackerConfig {
            min_iou: 0.2,
            min_hits: 3,
            max_tentative_misses: 1,
            max_misses: 4,
            max_still_misses: 10,
            confirm_score: Vec::new(),
            one_kind: Vec::new(),
            min_travel: 0.0,
        }
    }

    fn kinds(c: &[(Change, Track)]) -> Vec<(Change, u64)> {
        c.iter().map(|(k, t)| (*k, t.id)).collect()
    }

    /// A parked car that never moved, missed by the model for a while: held for
    /// `max_still_misses` frames, not the 1 of a tentative track nor the 4 of a
    /// moving one; then dropped without a `Lost` (it was never an object event).
    #[test]
    fn a_still_established_object_survives_long_gaps() {
        let mut tr = Tracker::new(cfg());
        let car = det(2, 100.0, 100.0, 80.0, 50.0);
        for _ in 0..3 {
            tr.update_with_motion(std::slice::from_ref(&car), &[false]);
        }
        assert!(tr.tracks()[0].established && !tr.tracks()[0].confirmed);
        for gap in 1..=10 {
            assert!(tr.update_with_motion(&[], &[]).is_empty());
            assert_eq!(tr.tracks().len(), 1, "held after {gap} misses");
        }
        tr.update_with_motion(std::slice::from_ref(&car), &[false]);
        assert_eq!((tr.tracks().len(), tr.tracks()[0].misses), (1, 0), "the same track picks it up again");
        for _ in 0..11 {
            assert!(tr.update_with_motion(&[], &[]).is_empty(), "no Lost for what was never confirmed");
        }
        assert!(tr.tracks().is_empty(), "dropped after max_still_misses");
    }

    #[test]
    fn walking_person_is_one_track_with_one_confirm_and_one_loss() {
        let mut tr = Tracker::new(cfg());
        let mut log = Vec::new();
        for f in 0..20 {
            // 12 px a frame: faster than half the box width, still followed.
            log.extend(kinds(&tr.update(&[det(0, 10.0 + 12.0 * f as f32, 100.0, 30.0, 80.0)])));
        }
        for _ in 0..10 {
            log.extend(kinds(&tr.update(&[])));
        }
        let confirms: Vec<_> = log.iter().filter(|c| c.0 == Change::Confirmed).collect();
        let losses: Vec<_> = log.iter().filter(|c| c.0 == Change::Lost).collect();
        assert_eq!(confirms.len(), 1, "{log:?}");
        assert_eq!(losses.len(), 1, "{log:?}");
        assert!(log.iter().all(|c| c.1 == confirms[0].1), "one id throughout: {log:?}");
        assert_eq!(log.iter().filter(|c| c.0 == Change::Seen).count(), 17);
    }

    /// The frames on which an object seen on every `period`-th frame changes, and how.
    fn detected_every(period: usize, frames: usize) -> Vec<(usize, Change)> {
        let mut tr = Tracker::new(TrackerConfig::for_fps(5.0));
        let mut log = Vec::new();
        for f in 0..frames {
            let dets = if f % period == 0 { vec![det(0, 200.0, 200.0, 30.0, 60.0)] } else { vec![] };
            log.extend(tr.update(&dets).into_iter().map(|(c, _)| (f, c)));
        }
        log
    }

    #[test]
    fn every_other_frame_confirms_every_third_never_does() {
        // Hit, miss, hit, miss, hit: one miss at a time is survived; the 3rd hit confirms.
        let log = detected_every(2, 10);
        assert_eq!(log.first(), Some(&(4, Change::Confirmed)), "{log:?}");
        assert_eq!(log.iter().filter(|c| c.1 == Change::Confirmed).count(), 1, "{log:?}");
        // Hit, miss, miss: dropped each time, so a flicker like this never confirms.
        assert_eq!(detected_every(3, 30), [], "nothing reported");
        // Three frames in a row confirm on the third.
        assert_eq!(detected_every(1, 3), [(2, Change::Confirmed)]);
    }

    #[test]
    fn short_occlusion_keeps_the_track() {
        let mut tr = Tracker::new(cfg());
        let mut log = Vec::new();
        for f in 0..6 {
            log.extend(kinds(&tr.update(&[det(0, 50.0 + 2.0 * f as f32, 50.0, 40.0, 90.0)])));
        }
        for _ in 0..3 {
            log.extend(kinds(&tr.update(&[])));
        }
        for f in 9..12 {
            log.extend(kinds(&tr.update(&[det(0, 50.0 + 2.0 * f as f32, 50.0, 40.0, 90.0)])));
        }
        assert_eq!(log.iter().filter(|c| c.0 == Change::Confirmed).count(), 1, "{log:?}");
        assert!(!log.iter().any(|c| c.0 == Change::Lost), "{log:?}");
    }

    #[test]
    fn different_classes_and_distant_boxes_are_separate_objects() {
        let mut tr = Tracker::new(cfg());
        let mut confirmed = Vec::new();
        for _ in 0..3 {
            let out = tr.update(&[
                det(0, 10.0, 10.0, 40.0, 80.0),
                det(2, 10.0, 10.0, 40.0, 80.0),
                det(0, 400.0, 10.0, 40.0, 80.0),
            ]);
            confirmed.extend(out.into_iter().filter(|c| c.0 == Change::Confirmed).map(|c| (c.1.id, c.1.class_id)));
        }
        confirmed.sort();
        assert_eq!(confirmed.len(), 3, "{confirmed:?}");
        assert_eq!(confirmed.iter().filter(|c| c.1 == 0).count(), 2);
    }

    #[test]
    fn a_van_seen_as_car_then_truck_is_one_track_of_its_first_class() {
        let mut tr = Tracker::new(TrackerConfig { one_kind: vec![2, 7], ..cfg() });
        for class in [2, 7, 2, 7, 7] {
            tr.update(&[det(class, 100.0, 50.0, 90.0, 70.0)]);
        }
        assert_eq!(tr.tracks().len(), 1, "{:?}", tr.tracks());
        assert_eq!((tr.tracks()[0].class_id, tr.tracks()[0].hits), (2, 5));
        // A person is no kind of car.
        tr.update(&[det(0, 100.0, 50.0, 90.0, 70.0)]);
        assert_eq!(tr.tracks().len(), 2);
    }

    #[test]
    fn median_score_and_motion_hold_back_confirmation() {
        let mut c = cfg();
        c.confirm_score = vec![(0, 0.6)];
        let weak = |s: f32| Detection { class_id: 0, score: s, bbox: BBox { x1: 10.0, y1: 10.0, x2: 40.0, y2: 90.0 } };
        // Scores 0.55, 0.55, 0.9, 0.9: the median reaches 0.6 only on the 4th frame.
        let mut tr = Tracker::new(c.clone());
        let log: Vec<usize> = [0.55, 0.55, 0.9, 0.9]
            .iter()
            .enumerate()
            .flat_map(|(i, s)| tr.update(&[weak(*s)]).into_iter().map(move |_| i))
            .collect();
        assert_eq!(log, [3], "confirmed when the median reached confirm_score");
        // Never seen moving: established (for rules about parked things) but no event.
        let mut tr = Tracker::new(c);
        for _ in 0..10 {
            assert!(tr.update_with_motion(&[weak(0.9)], &[false]).is_empty());
        }
        assert!(tr.is_established(&tr.tracks()[0]));
        let moved = tr.update_with_motion(&[weak(0.9)], &[true]);
        assert_eq!(moved.first().map(|c| c.0), Some(Change::Confirmed), "confirmed once it moves");
    }

    #[test]
    fn motion_around_an_object_that_stays_put_is_not_its_own() {
        let c = TrackerConfig { min_travel: 0.5, ..cfg() };
        let at = |x: f32| Detection { class_id: 0, score: 0.9, bbox: BBox { x1: x, y1: 10.0, x2: x + 20.0, y2: 60.0 } };
        // A post (20 px wide) jittering by 2 px while someone walks past it.
        let mut tr = Tracker::new(c.clone());
        for i in 0..10 {
            assert!(tr.update_with_motion(&[at(100.0 + (i % 2) as f32 * 2.0)], &[true]).is_empty());
        }
        // A person walking 4 px a frame: confirmed once 10 px (half their width) from the start.
        let mut tr = Tracker::new(c);
        let confirmed: Vec<usize> = (0..6)
            .flat_map(|i| tr.update_with_motion(&[at(100.0 + 4.0 * i as f32)], &[true]).into_iter().map(move |_| i))
            .collect();
        assert_eq!(confirmed.first(), Some(&3), "{confirmed:?}");
    }

    #[test]
    fn drain_returns_only_confirmed_tracks() {
        let mut tr = Tracker::new(cfg());
        for _ in 0..3 {
            tr.update(&[det(0, 10.0, 10.0, 40.0, 80.0)]);
        }
        tr.update(&[det(0, 10.0, 10.0, 40.0, 80.0), det(0, 300.0, 10.0, 40.0, 80.0)]);
        let drained = tr.drain_confirmed();
        assert_eq!(drained.len(), 1);
        assert!(tr.update(&[]).is_empty());
    }
}
