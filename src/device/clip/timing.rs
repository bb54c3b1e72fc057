//! When each frame of a clip is shown, from 0. Cameras' own (RTP) times are the best
//! source when they can be believed; many cameras' cannot (a clock that jumps, runs at
//! the wrong rate, or restarts), and a clip timed by them would play at the wrong
//! speed. Arrival times are always there, but jitter with the network.
//!
//! Promises: times strictly increase; a step the camera's clock gives is taken when it
//! is plausible (more than 0, at most `MAX_STEP`, and within `MAX_DISAGREEMENT` of the
//! arrival step), the arrival step otherwise; and when the camera's clock disagrees
//! with the wall clock by more than 10 % over the clip, only arrival times are used.
//! So a clip's length is within 10 % of the time it covers.

use std::time::{Duration, SystemTime};

use crate::device::ingest::EncodedFrame;

/// The longest believable gap between two frames of a camera's clock.
const MAX_STEP: f64 = 1.0;
/// How much a step of the camera's clock may differ from the arrival step.
const MAX_DISAGREEMENT: f64 = 0.5;
/// The shortest step between two frames (1 ms), so times always increase.
const MIN_STEP: f64 = 0.001;

/// Each frame's time from the first, in seconds, and how long the last one shows.
#[derive(Debug, Clone, PartialEq)]
pub struct Timing {
    pub times: Vec<f64>,
    pub last_duration: f64,
}

impl Timing {
    /// The clip's length: the last frame's time plus how long it shows.
    pub fn duration(&self) -> f64 {
        self.times.last().map_or(0.0, |t| t + self.last_duration)
    }
}

/// The times to show `frames` at.
pub fn retime<F: std::ops::Deref<Target = EncodedFrame>>(frames: &[F]) -> Timing {
    let wall: Vec<f64> = frames.iter().map(|f| secs_between(frames[0].received_at, f.received_at)).collect();
    let pts: Vec<f64> = frames.iter().map(|f| f.pts.as_secs_f64() - frames[0].pts.as_secs_f64()).collect();
    let mut times = Vec::with_capacity(frames.len());
    let mut t = 0.0;
    for i in 0..frames.len() {
        if i > 0 {
            let arrival = wall[i] - wall[i - 1];
            let camera = pts[i] - pts[i - 1];
            let believable = camera > 0.0 && camera <= MAX_STEP && (camera - arrival).abs() <= MAX_DISAGREEMENT;
            t += if believable { camera } else { arrival }.max(MIN_STEP);
        }
        times.push(t);
    }
    let span = wall.last().copied().unwrap_or(0.0);
    // A camera clock that runs at the wrong rate passes every step's test; over the
    // whole clip it does not. Short clips are left alone: a second of jitter is 10 %.
    if span > 2.0 && (t - span).abs() > span * 0.1 {
        times = monotonic(&wall);
    }
    let steps: Vec<f64> = times.windows(2).map(|w| w[1] - w[0]).collect();
    Timing { last_duration: median(steps).unwrap_or(0.1), times }
}

fn secs_between(a: SystemTime, b: SystemTime) -> f64 {
    match b.duration_since(a) {
        Ok(d) => d.as_secs_f64(),
        Err(e) => -e.duration().as_secs_f64(),
    }
}

/// `wall` made strictly increasing (the wall clock may step back).
fn monotonic(wall: &[f64]) -> Vec<f64> {
    let mut out: Vec<f64> = Vec::with_capacity(wall.len());
    for &w in wall {
        let t = match out.last() {
            Some(&prev) => w.max(prev + MIN_STEP),
            None => 0.0,
        };
        out.push(t);
    }
    out
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    Some(v[v.len() / 2])
}

/// Converts seconds into a GStreamer-ready duration.
pub fn to_duration(s: f64) -> Duration {
    Duration::from_secs_f64(s.max(0.0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    /// A 10 fps stream: arrival `jitter`-shaped, camera clock given by `pts(i)`.
    fn frames(
        n: usize,
        pts: impl Fn(usize) -> f64,
        jitter: impl Fn(usize) -> f64,
    ) -> Vec<std::sync::Arc<EncodedFrame>> {
        (0..n)
            .map(|i| {
                let wall = i as f64 * 0.1 + jitter(i);
                std::sync::Arc::new(EncodedFrame {
                    data: Vec::new(),
                    pts: Duration::from_secs_f64(pts(i).max(0.0)),
                    received_at: UNIX_EPOCH + Duration::from_secs(1_000) + Duration::from_secs_f64(wall),
                    keyframe: i == 0,
                    lost_packets: 0,
                })
            })
            .collect()
    }

    fn jitter(i: usize) -> f64 {
        // Bursts: every 5th frame arrives 60 ms late.
        if i % 5 == 4 { 0.06 } else { 0.0 }
    }

    #[test]
    fn a_good_camera_clock_is_used_as_is() {
        let t = retime(&frames(100, |i| 3.0 + i as f64 * 0.1, jitter));
        assert!(t.times.windows(2).all(|w| (w[1] - w[0] - 0.1).abs() < 1e-6), "{:?}", &t.times[..10]);
        assert!((t.duration() - 10.0).abs() < 1e-6);
    }

    #[test]
    fn a_jump_in_the_camera_clock_takes_the_arrival_step() {
        let t = retime(&frames(100, |i| if i < 50 { i as f64 * 0.1 } else { 3600.0 + i as f64 * 0.1 }, jitter));
        assert!((t.duration() - 10.0).abs() < 0.2, "{}", t.duration());
        assert!(t.times.windows(2).all(|w| w[1] > w[0]));
    }

    #[test]
    fn a_camera_clock_at_the_wrong_rate_is_not_believed() {
        // Stamps say 30 fps, frames come at 10: played by its stamps, 3x too fast.
        let t = retime(&frames(100, |i| i as f64 / 30.0, jitter));
        assert!((t.duration() - 10.0).abs() < 0.5, "{}", t.duration());
    }

    #[test]
    fn a_clock_standing_still_or_going_back_never_gives_equal_times() {
        let t = retime(&frames(50, |i| if i % 2 == 0 { 1.0 } else { 0.5 }, |_| 0.0));
        assert!(t.times.windows(2).all(|w| w[1] > w[0]));
        assert!((t.duration() - 5.0).abs() < 0.2, "{}", t.duration());
    }
}
