//! Object filters per label: which detections count at all, before tracking.
//!
//! Promises: a detection is kept only when its label is one the camera tracks, and its
//! score, its box's area (fraction of the frame) and aspect ratio (width / height) are
//! within that label's bounds, and its bottom-centre is in none of the label's masks.
//! The confirmation score (median of recent scores) is applied by the tracker; this
//! module only says which score each label needs.

use std::collections::HashMap;

use crate::config::CameraConfig;
use crate::detect::{Detection, Labels};
use crate::zone::{Polygon, foot_point};

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
}

impl Filters {
    /// Filters for every label `cam` tracks; `default_min_score` is `detector.min_score`.
    pub fn new(cam: &CameraConfig, labels: &Labels, default_min_score: f32) -> Filters {
        let by_class = cam
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
        Filters { by_class }
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
    use crate::config::{Config, FilterConfig};
    use crate::detect::BBox;

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
}
