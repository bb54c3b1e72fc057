//! Object filters per label: which detections count at all, before tracking.
//!
//! Promises: a detection is kept only when its label is one the camera tracks, and its
//! score, its box's area (fraction of the frame) and aspect ratio (width / height) are
//! within that label's bounds, and its bottom-centre is in none of the label's masks.
//! The confirmation score (median of recent scores) is applied by the tracker; this
//! module only says which score each label needs.
//!
//! The model scores each class on its own, so a van may come out as a car at 0.5 and
//! a truck at 0.5 in the same box, each below the bar although the model is sure there
//! is a vehicle there. `fuse_kinds` makes one detection of such boxes (labels in
//! `ONE_KIND`), scored as the chance that it is any of them: 1 - (1 - a)(1 - b).

use std::collections::HashMap;

use crate::device::analysis::detect::{Detection, Labels};
use crate::device::analysis::zone::{Polygon, foot_point};
use crate::device::config::CameraConfig;

/// Labels that are kinds of one thing the model hesitates between.
const ONE_KIND: [&str; 3] = ["car", "truck", "bus"];
/// Boxes at least this alike (IoU) of those labels are one object.
const SAME_BOX_IOU: f32 = 0.8;

/// Whether classes `a` and `b` are the same, or both kinds of one thing in `kinds`
/// (see [`Filters::one_kind`]).
pub fn of_one_kind(kinds: &[usize], a: usize, b: usize) -> bool {
    a == b || (kinds.contains(&a) && kinds.contains(&b))
}

#[derive(Debug, Clone)]
struct LabelFilter {
    min_score: f32,
    confirm_score: f32,
    area: (f32, f32),
    ratio: (f32, f32),
    masks: Vec<Polygon>,
}

/// One camera's filters, by class id.
#[derive(Debug, Clone)]
pub struct Filters {
    by_class: HashMap<usize, LabelFilter>,
    /// Class ids of the tracked `ONE_KIND` labels.
    one_kind: Vec<usize>,
}

impl Filters {
    /// Filters for every label `cam` tracks; `default_min_score` is `detector.min_score`.
    pub fn new(cam: &CameraConfig, labels: &Labels, default_min_score: f32) -> Filters {
        let by_class: HashMap<usize, LabelFilter> = cam
            .tracked_labels()
            .iter()
            .filter_map(|name| {
                let f = cam.filter(name);
                let lf = LabelFilter {
                    min_score: f.min_score.unwrap_or(default_min_score),
                    confirm_score: f.confirm_score,
                    area: (f.min_area, f.max_area),
                    ratio: (f.min_ratio, f.max_ratio),
                    masks: f.masks.into_iter().map(Polygon).collect(),
                };
                Some((labels.id(name)?, lf))
            })
            .collect();
        let one_kind = ONE_KIND.iter().filter_map(|l| labels.id(l)).filter(|c| by_class.contains_key(c)).collect();
        Filters { by_class, one_kind }
    }

    /// Tracked class ids that are kinds of one thing (see `fuse_kinds`).
    pub fn one_kind(&self) -> &[usize] {
        &self.one_kind
    }

    /// The score the detector must report down to: every label's `min_score`, and
    /// low enough that two parts of one vehicle that together pass reach `fuse_kinds`.
    pub fn detect_floor(&self) -> f32 {
        let m = self.lowest_min_score();
        if self.one_kind.len() < 2 { m } else { 1.0 - (1.0 - m).sqrt() }
    }

    /// One detection per box for the `ONE_KIND` labels, of the best-scoring label and
    /// box, scored as the chance that it is any of them; other detections unchanged.
    pub fn fuse_kinds(&self, mut dets: Vec<Detection>) -> Vec<Detection> {
        dets.sort_by(|a, b| b.score.total_cmp(&a.score));
        let mut out: Vec<Detection> = Vec::with_capacity(dets.len());
        for d in dets {
            // Two boxes of one label are NMS's to settle, not this.
            let kin = |k: &&mut Detection| {
                k.class_id != d.class_id
                    && of_one_kind(&self.one_kind, k.class_id, d.class_id)
                    && k.bbox.iou(&d.bbox) >= SAME_BOX_IOU
            };
            match out.iter_mut().find(|k| kin(k)) {
                Some(k) => k.score = 1.0 - (1.0 - k.score) * (1.0 - d.score),
                None => out.push(d),
            }
        }
        out
    }

    /// The score the detector must report down to, so that every label's own
    /// `min_score` can be applied here.
    pub fn lowest_min_score(&self) -> f32 {
        self.by_class.values().map(|f| f.min_score).fold(1.0, f32::min)
    }

    /// The median score a track of `class_id` must reach to count (0 for untracked labels).
    pub fn confirm_score(&self, class_id: usize) -> f32 {
        self.by_class.get(&class_id).map_or(0.0, |f| f.confirm_score)
    }

    pub fn is_tracked(&self, class_id: usize) -> bool {
        self.by_class.contains_key(&class_id)
    }

    /// Whether `d`, found on a `w` x `h` frame, counts.
    pub fn keep(&self, d: &Detection, (w, h): (u32, u32)) -> bool {
        let Some(f) = self.by_class.get(&d.class_id) else { return false };
        let area = d.bbox.area() / (w.max(1) as f32 * h.max(1) as f32);
        let ratio = d.bbox.width() / d.bbox.height().max(1e-3);
        let (x, y) = foot_point(&d.bbox, (w, h));
        d.score >= f.min_score
            && (f.area.0..=f.area.1).contains(&area)
            && (f.ratio.0..=f.ratio.1).contains(&ratio)
            && !f.masks.iter().any(|m| m.contains(x, y))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::config::{Config, FilterConfig};
    use crate::device::geometry::BBox;

    fn camera(filters: &[(&str, FilterConfig)]) -> CameraConfig {
        let text = "site = \"s\"\n[mqtt]\nhost = \"h\"\n[storage]\ndir = \"d\"\n[[cameras]]\nid = \"c\"\nurl = \"rtsp://h/x\"\ntrack = [\"person\", \"car\"]\n";
        let mut cam = Config::parse(text, "t.toml".as_ref(), "/".as_ref()).unwrap().cameras.remove(0);
        cam.filters = filters.iter().map(|(l, f)| (l.to_string(), f.clone())).collect();
        cam
    }

    fn det(class_id: usize, score: f32, x1: f32, y1: f32, x2: f32, y2: f32) -> Detection {
        Detection { class_id, score, bbox: BBox { x1, y1, x2, y2 } }
    }

    #[test]
    fn score_area_ratio_and_mask_bounds_apply_per_label() {
        let person = FilterConfig {
            min_score: Some(0.7),
            max_area: 0.25,
            min_ratio: 0.2,
            max_ratio: 1.0,
            masks: vec![vec![[0.0, 0.8], [1.0, 0.8], [1.0, 1.0], [0.0, 1.0]]],
            ..FilterConfig::default()
        };
        let f = Filters::new(&camera(&[("person", person)]), &Labels::builtin(), 0.5);
        let size = (100, 100);
        assert!(f.keep(&det(0, 0.8, 10.0, 10.0, 30.0, 60.0), size));
        assert!(!f.keep(&det(0, 0.65, 10.0, 10.0, 30.0, 60.0), size), "below the label's min_score");
        assert!(!f.keep(&det(0, 0.9, 0.0, 0.0, 60.0, 70.0), size), "larger than max_area");
        assert!(!f.keep(&det(0, 0.9, 10.0, 10.0, 60.0, 30.0), size), "wider than tall: not a person");
        assert!(!f.keep(&det(0, 0.9, 10.0, 50.0, 30.0, 90.0), size), "standing in the mask");
        // car uses the defaults: detector.min_score, any size.
        assert!(f.keep(&det(2, 0.55, 0.0, 0.0, 90.0, 40.0), size));
        assert!(!f.keep(&det(16, 0.9, 0.0, 0.0, 90.0, 40.0), size), "dog is not tracked");
        assert_eq!(f.lowest_min_score(), 0.5);
        assert_eq!(f.confirm_score(0), 0.6);
    }

    #[test]
    fn a_box_scored_as_car_and_truck_is_one_vehicle_scored_as_either() {
        let mut cam = camera(&[]);
        cam.track.push("truck".into());
        let f = Filters::new(&cam, &Labels::builtin(), 0.5);
        // What the model says of the van in the 1080p clip: car 0.37, truck 0.47.
        let got = f.fuse_kinds(vec![
            det(2, 0.37, 971.6, 53.1, 1064.1, 126.5),
            det(0, 0.8, 10.0, 10.0, 30.0, 60.0),
            det(7, 0.47, 971.7, 51.8, 1065.5, 124.4),
            // Another car elsewhere stays as it is.
            det(2, 0.68, 1070.0, 61.8, 1122.6, 115.2),
        ]);
        let got: Vec<(usize, f32)> = got.iter().map(|d| (d.class_id, (d.score * 1000.0).round() / 1000.0)).collect();
        assert_eq!(got, [(0, 0.8), (2, 0.68), (7, 0.666)]);
        // Both parts must reach the detector: 1 - sqrt(0.5) = 0.293.
        assert!((f.detect_floor() - 0.293).abs() < 0.001, "{}", f.detect_floor());
        // Two boxes of one label are left to NMS, and a person is no kind of car.
        assert_eq!(f.fuse_kinds(vec![det(2, 0.4, 0.0, 0.0, 10.0, 10.0), det(2, 0.4, 0.0, 0.0, 10.0, 10.0)]).len(), 2);
        assert_eq!(f.fuse_kinds(vec![det(2, 0.4, 0.0, 0.0, 10.0, 10.0), det(0, 0.4, 0.0, 0.0, 10.0, 10.0)]).len(), 2);
    }
}
