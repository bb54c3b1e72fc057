//! The detector's gate: from what the motion stage saw and what the tracker holds, which
//! parts of a picture (the whole frame, region crops) go to the model this frame.
//!
//! Promises: a pure function of its inputs. Without a motion stage everything runs.
//! With one, the whole frame runs when something moves, the background was taken
//! anew, the periodic re-check is due, or an object still needs the model to be
//! placed; a crop runs on the same grounds, judged inside the crop. Nothing runs in a
//! still scene between re-checks.

use super::detect::yolox::Region;
use super::motion::Motion;
use super::regions;

/// What the gate weighs for one frame.
#[derive(Debug, Clone, Copy)]
pub struct GateInput<'a> {
    /// What the motion stage saw; `None` when the camera's motion gate is off.
    pub motion: Option<&'a Motion>,
    /// The periodic re-check (`motion.recheck_s`) is due.
    pub recheck_due: bool,
    /// A confirmed object is missing or not yet stopped: where it is needs the model.
    pub unsettled: bool,
}

/// A crop, and whether an object inside it needs the model (not settled, or tentative:
/// a far object may be too small for the motion grid).
#[derive(Debug, Clone, Copy)]
pub struct CropState {
    pub region: Region,
    pub unsettled: bool,
}

/// What runs this frame.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// The whole frame goes to the model (crops run only with it).
    pub whole: bool,
    pub crops: Vec<Region>,
}

/// Decides what the model sees this frame.
pub fn plan(input: GateInput<'_>, crops: &[CropState]) -> Plan {
    let Some(m) = input.motion else {
        return Plan { whole: true, crops: crops.iter().map(|c| c.region).collect() };
    };
    let any_crop_unsettled = crops.iter().any(|c| c.unsettled);
    let whole = m.moving || m.recalibrated || input.recheck_due || input.unsettled || any_crop_unsettled;
    if !whole {
        return Plan { whole, crops: Vec::new() };
    }
    let wanted = crops
        .iter()
        .filter(|c| m.recalibrated || input.recheck_due || c.unsettled || m.moving_in(&regions::region_box(&c.region)))
        .map(|c| c.region)
        .collect();
    Plan { whole, crops: wanted }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::analysis::motion::{Grey, MotionDetector};
    use crate::device::config::MotionConfig;

    fn grey(v: impl Fn(usize, usize) -> u8) -> Grey {
        let (width, height) = (160, 120);
        let data = (0..height).flat_map(|y| (0..width).map(move |x| (x, y))).map(|(x, y)| v(x, y)).collect();
        Grey { width, height, data, step: 4 }
    }

    /// Motion as the motion stage reports it after a still background and then `next`.
    fn motion_after(next: Grey) -> Motion {
        let mut m = MotionDetector::new(&MotionConfig::default());
        let still = grey(|_, _| 100);
        for _ in 0..3 {
            m.observe(&still);
        }
        m.observe(&next)
    }

    fn crop(left: u32, unsettled: bool) -> CropState {
        CropState { region: Region { left, top: 0, width: 200, height: 200 }, unsettled }
    }

    #[test]
    fn a_still_scene_runs_only_at_the_periodic_recheck() {
        let still = motion_after(grey(|_, _| 100));
        assert!(!still.moving && !still.recalibrated);
        let crops = [crop(0, false), crop(400, false)];
        let input = GateInput { motion: Some(&still), recheck_due: false, unsettled: false };
        assert_eq!(plan(input, &crops), Plan { whole: false, crops: vec![] });
        let due = plan(GateInput { recheck_due: true, ..input }, &crops);
        assert_eq!(due, Plan { whole: true, crops: vec![crops[0].region, crops[1].region] });
    }

    #[test]
    fn without_a_motion_stage_everything_runs() {
        let crops = [crop(0, false)];
        let p = plan(GateInput { motion: None, recheck_due: false, unsettled: false }, &crops);
        assert_eq!(p, Plan { whole: true, crops: vec![crops[0].region] });
    }

    #[test]
    fn motion_runs_the_frame_and_only_the_crops_it_touches() {
        // A bright block at grey (10..30, 10..30): frame pixels 40..120, inside the first crop.
        let moved = motion_after(grey(|x, y| if (10..30).contains(&x) && (10..30).contains(&y) { 250 } else { 100 }));
        assert!(moved.moving, "the block is motion");
        let crops = [crop(0, false), crop(400, false)];
        let p = plan(GateInput { motion: Some(&moved), recheck_due: false, unsettled: false }, &crops);
        assert_eq!(p, Plan { whole: true, crops: vec![crops[0].region] });
    }

    #[test]
    fn an_unsettled_object_runs_the_frame_and_its_crop() {
        let still = motion_after(grey(|_, _| 100));
        let crops = [crop(0, false), crop(400, true)];
        let p = plan(GateInput { motion: Some(&still), recheck_due: false, unsettled: false }, &crops);
        assert_eq!(p, Plan { whole: true, crops: vec![crops[1].region] });
        let p = plan(GateInput { motion: Some(&still), recheck_due: false, unsettled: true }, &crops[..1]);
        assert_eq!(p, Plan { whole: true, crops: vec![] });
    }
}
