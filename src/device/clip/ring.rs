//! A camera's pre-roll: the newest encoded access units as ingest delivered them (no
//! decoding), whole GOPs from a keyframe on, within a byte bound and a time bound.
//!
//! Promises: the ring always starts at a keyframe; it holds at most `max_bytes` of
//! video, and no older GOP than it needs to reach `max_span` back (the oldest GOP goes
//! first): a quiet stream does not fill memory with minutes nobody will ask for. When
//! the byte bound leaves less than `want` behind the newest frame, that is counted
//! (`cuts`), since a clip's pre-roll is then short.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::device::ingest::EncodedFrame;

#[derive(Debug)]
pub struct Ring {
    frames: VecDeque<Arc<EncodedFrame>>,
    bytes: u64,
    max_bytes: u64,
    max_span: Duration,
    /// How far back the ring should reach (the pre-roll): less than this after a cut counts.
    want: Duration,
    cuts: u64,
}

impl Ring {
    pub fn new(max_bytes: u64, max_span: Duration, want: Duration) -> Ring {
        Ring { frames: VecDeque::new(), bytes: 0, max_bytes, max_span, want, cuts: 0 }
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
        while self.second_keyframe().is_some_and(|k| self.reach_from(k) >= self.max_span) {
            self.drop_gop();
        }
    }

    /// Index of the keyframe that starts the ring's second GOP.
    fn second_keyframe(&self) -> Option<usize> {
        self.frames.iter().skip(1).position(|f| f.keyframe).map(|i| i + 1)
    }

    /// Time from frame `i` to the newest frame.
    fn reach_from(&self, i: usize) -> Duration {
        let (Some(a), Some(b)) = (self.frames.get(i), self.frames.back()) else { return Duration::ZERO };
        b.received_at.duration_since(a.received_at).unwrap_or_default()
    }

    fn drop_gop(&mut self) {
        self.drop_front();
        while self.frames.front().is_some_and(|f| !f.keyframe) {
            self.drop_front();
        }
    }

    /// Drops whole GOPs, oldest first, until the ring fits its bound.
    fn shrink(&mut self) {
        while self.bytes > self.max_bytes {
            self.drop_gop();
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

    const HOUR: Duration = Duration::from_secs(3600);

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
        let mut r = Ring::new(10_000, HOUR, Duration::from_secs(1));
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
        let mut r = Ring::new(1 << 20, HOUR, Duration::from_secs(1));
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
        let mut r = Ring::new(2_000, HOUR, Duration::from_secs(5));
        for i in 0..60 {
            r.push(frame(i, 10, 100));
        }
        assert!(r.cuts() > 0);
        assert!(r.span() < Duration::from_secs(5));
    }

    #[test]
    fn a_quiet_stream_keeps_only_the_time_asked_for() {
        // 10 fps, a keyframe every 2 s, small frames: the byte bound is never reached.
        let mut r = Ring::new(1 << 30, Duration::from_secs(30), Duration::from_secs(5));
        for i in 0..1200 {
            r.push(frame(i, 20, 100));
            assert!(r.frames.front().is_some_and(|f| f.keyframe));
        }
        // At least 30 s back, and less than one GOP more.
        assert!(r.span() >= Duration::from_secs(30) && r.span() < Duration::from_secs(32), "{:?}", r.span());
        assert_eq!(r.cuts(), 0);
    }
}
