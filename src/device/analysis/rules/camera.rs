//! Per-camera rules: `tamper` (a tamper sign lasting longer than T) and `camera_offline`
//! (no frames for T).
//!
//! Promises: a sign must hold for `seconds` before the incident starts; brief normal
//! frames in between (a few, `CLEAR_FRAMES`) neither restart nor end it; it ends after
//! `CLEAR_FRAMES` normal frames in a row.

use std::time::{Duration, SystemTime};

use serde_json::json;

use super::Incident;
use crate::contract::timestamp;
use crate::device::analysis::tamper::TamperSign;
use crate::device::config::CameraConfig;

/// Normal frames in a row that clear a condition.
const CLEAR_FRAMES: u32 = 3;

/// A condition that counts once it has held for `after`, with hysteresis.
#[derive(Debug, Clone)]
pub struct Sustained {
    after: Duration,
    since: Option<SystemTime>,
    active: bool,
    normal_streak: u32,
}

impl Sustained {
    pub fn new(after: Duration) -> Sustained {
        Sustained { after, since: None, active: false, normal_streak: 0 }
    }

    /// Feeds one observation; returns how long the condition has held while it counts.
    pub fn update(&mut self, now: SystemTime, holds: bool) -> Option<Duration> {
        if holds {
            self.normal_streak = 0;
            let since = *self.since.get_or_insert(now);
            self.active |= now.duration_since(since).unwrap_or_default() >= self.after;
        } else if self.since.is_some() {
            self.normal_streak += 1;
            if self.normal_streak >= CLEAR_FRAMES {
                *self = Sustained::new(self.after);
            }
        }
        self.since.filter(|_| self.active).map(|s| now.duration_since(s).unwrap_or_default())
    }
}

pub struct CameraRules {
    tamper: Option<(Sustained, Option<TamperSign>)>,
    offline_after: Option<Duration>,
}

impl CameraRules {
    pub fn new(cam: &CameraConfig) -> CameraRules {
        CameraRules {
            tamper: cam.tamper.as_ref().map(|t| (Sustained::new(Duration::from_secs_f64(t.seconds)), None)),
            offline_after: cam.camera_offline.as_ref().map(|o| Duration::from_secs_f64(o.seconds)),
        }
    }

    pub fn watches_tamper(&self) -> bool {
        self.tamper.is_some()
    }

    /// The tamper incident, given this frame's sign.
    pub fn tamper(&mut self, now: SystemTime, sign: Option<TamperSign>) -> Option<Incident> {
        let (state, last) = self.tamper.as_mut()?;
        if sign.is_some() {
            *last = sign;
        }
        let held = state.update(now, sign.is_some())?;
        let cause = (*last)?;
        Some(Incident {
            key: "tamper".into(),
            kind: "tamper",
            zone: None,
            label: "camera".into(),
            score: 0.0,
            boxes: Vec::new(),
            detail: json!({ "cause": cause.as_str(), "duration_s": (held.as_secs_f64() * 10.0).round() / 10.0 }),
            milestone: cause as u64,
        })
    }

    /// The offline incident when no frame came for longer than the rule's T.
    pub fn offline(&self, silent_for: Duration, last_frame_at: Option<SystemTime>) -> Option<Incident> {
        (silent_for >= self.offline_after?).then(|| Incident {
            key: "camera_offline".into(),
            kind: "camera_offline",
            zone: None,
            label: "camera".into(),
            score: 0.0,
            boxes: Vec::new(),
            detail: json!({ "silent_s": silent_for.as_secs(), "last_frame_at": last_frame_at.map(timestamp) }),
            milestone: 0,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sustained_needs_t_survives_blips_and_clears_after_normal_frames() {
        let t0 = SystemTime::UNIX_EPOCH;
        let mut s = Sustained::new(Duration::from_secs(1));
        // 5 fps: holds, a one-frame blip, holds on; then normal.
        let pattern = [1, 1, 1, 0, 1, 1, 1, 1, 1, 0, 0, 0, 0];
        let got: Vec<bool> = pattern
            .iter()
            .enumerate()
            .map(|(i, &h)| s.update(t0 + Duration::from_millis(200 * i as u64), h == 1).is_some())
            .collect();
        assert_eq!(got, [false, false, false, false, false, true, true, true, true, true, true, false, false]);
    }
}
