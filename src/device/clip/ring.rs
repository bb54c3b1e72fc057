//! A camera's pre-roll: the newest encoded access units as ingest delivered them (no
//! decoding), whole GOPs from a keyframe on, within a byte bound.
//!
//! Promises: the ring always starts at a keyframe; it holds at most `max_bytes` of
//! video (the oldest GOP goes first); when the bound leaves less than `want` behind the
//! newest frame, that is counted (`cuts`), since a clip's pre-roll is then short.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::device::ingest::EncodedFrame;

#[derive(Debug)]
pub struct Ring {
    frames: VecDeque<Arc<EncodedFrame>>,
    bytes: u64,
    max_bytes: u64,
    /// How far back the ring should reach (the pre-roll): less than this after a cut counts.
    want: Duration,
    cuts: u64,
}

impl Ring {
    pub fn new(max_bytes: u64, want: Duration) -> Ring {
        Ring { frames: VecDeque::new(), bytes: 0, max_bytes, want, cuts: 0 }
    }

    /// Adds the newest frame. Frames before the first keyframe cannot start a clip and
    /// are not kept.
    pub fn push(&mut self, frame: Arc<EncodedFrame>) {
        if self.frames.is_empty() && !frame.keyframe {
            return;
        }
        self.bytes += frame.data.len() as u64;
        self.frames.push_back(frame);
        if self.bytes > self.max_bytes {
            self.shrink();
        }
    }

    /// Drops whole GOPs, oldest first, until the ring fits its bound.
    fn shrink(&mut self) {
        while self.bytes > self.max_bytes {
            self.drop_front();
            while self.frames.front().is_some_and(|f| !f.keyframe) {
                self.drop_front();
            }
        }
        if self.span() < self.want {
            self.cuts += 1;
        }
    }

    fn drop_front(&mut self) {
        if let Some(f) = self.frames.pop_front() {
            self.bytes -= f.data.len() as u64;
        }
    }

    /// A new session (its stream may differ): nothing before it can go in a clip.
    pub fn clear(&mut self) {
        self.frames.clear();
        self.bytes = 0;
    }

    /// The frames from the newest keyframe that arrived at or before `t` (or from the
    /// oldest one, when the ring does not reach back to `t`) to the newest frame.
    pub fn since_keyframe_before(&self, t: SystemTime) -> Vec<Arc<EncodedFrame>> {
        let start = self.frames.iter().rposition(|f| f.keyframe && f.received_at <= t).unwrap_or(0);
        self.frames.range(start..).cloned().collect()
    }

    /// Whether a clip starting at `t` can have its first keyframe at or before `t`.
    pub fn covers(&self, t: SystemTime) -> bool {
        self.frames.front().is_some_and(|f| f.received_at <= t)
    }

    /// Time between the oldest and the newest frame held.
    pub fn span(&self) -> Duration {
        match (self.frames.front(), self.frames.back()) {
            (Some(a), Some(b)) => b.received_at.duration_since(a.received_at).unwrap_or_default(),
            _ => Duration::ZERO,
        }
    }

    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Times the byte bound left less than the pre-roll behind the newest frame.
    pub fn cuts(&self) -> u64 {
        self.cuts
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    /// Frame `i` of a 10 fps stream with a keyframe every `gop` frames.
    fn frame(i: u64, gop: u64, bytes: usize) -> Arc<EncodedFrame> {
        let t = Duration::from_millis(100 * i);
        Arc::new(EncodedFrame {
            data: vec![0; bytes],
            pts: t,
            received_at: UNIX_EPOCH + Duration::from_secs(1_000_000) + t,
            keyframe: i.is_multiple_of(gop),
            lost_packets: 0,
        })
    }

    #[test]
    fn starts_at_a_keyframe_and_stays_within_its_bound() {
        let mut r = Ring::new(10_000, Duration::from_secs(1));
        for i in 3..200 {
            r.push(frame(i, 10, 100));
            assert!(r.bytes() <= 10_000);
            assert!(r.frames.front().is_none_or(|f| f.keyframe), "frame {i}");
        }
        // 100 frames fit; whole GOPs go, so 91..=100 frames stay.
        assert!((91..=100).contains(&r.frames.len()), "{}", r.frames.len());
        assert_eq!(r.cuts(), 0, "9 s kept, 1 s wanted");
    }

    #[test]
    fn a_clip_starts_at_the_keyframe_before_its_time() {
        let mut r = Ring::new(1 << 20, Duration::from_secs(1));
        for i in 0..100 {
            r.push(frame(i, 25, 100));
        }
        let at = frame(60, 25, 0).received_at;
        let clip = r.since_keyframe_before(at);
        assert_eq!(clip[0].received_at, frame(50, 25, 0).received_at);
        assert_eq!(clip.len(), 50);
        assert!(r.covers(at) && !r.covers(frame(0, 25, 0).received_at - Duration::from_millis(1)));
    }

    #[test]
    fn a_bound_shorter_than_the_pre_roll_is_counted() {
        let mut r = Ring::new(2_000, Duration::from_secs(5));
        for i in 0..60 {
            r.push(frame(i, 10, 100));
        }
        assert!(r.cuts() > 0);
        assert!(r.span() < Duration::from_secs(5));
    }
}
