//! Where the time goes, stage by stage: each pipeline stage wraps its work for one item
//! in a [`Span`], which adds the thread's CPU time and the wall time to the stage's
//! totals and the wall time to its latency histogram. `gridwatch bench` reads them.
//!
//! Promises: recording costs two clock reads and a few relaxed atomic adds, never a
//! lock or an allocation, so it stays on in production. Figures are process-wide
//! totals since start; compare two [`snapshot`]s for a window.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;

/// The pipeline's stages, in data-flow order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    // RTSP receipt is not a stage here: it runs on the async runtime, whose threads
    // `gridwatch bench` measures as a whole.
    /// GStreamer's H.264/H.265 decoder, per access unit.
    Decode,
    /// Scaling to the analysis size, and conversion for streams that are not 8-bit 4:2:0,
    /// per analysed picture: nothing to do for the usual camera stream.
    Convert,
    /// From the receipt of a picture's access unit to the analysis taking it up (wall):
    /// decoding, conversion and the wait in the one-picture queue.
    Queue,
    Motion,
    /// Waiting for a free model session (wall): the sessions are shared by all cameras.
    Wait,
    /// Letterbox and normalise into the model's input.
    Preprocess,
    Inference,
    /// Decoding the model's output and NMS.
    Postprocess,
    /// Tracking, zones, rules and events.
    Track,
    Jpeg,
    /// Storing an event (and its picture) in the outbox, synced to disk.
    Outbox,
    /// From an event's PUBLISH to its PUBACK (wall time; CPU is in the async runtime).
    Mqtt,
    /// From the receipt of the frame an event shows to the broker's PUBACK for it.
    EndToEnd,
}

impl Stage {
    pub const ALL: [Stage; 13] = [
        Stage::Decode,
        Stage::Convert,
        Stage::Queue,
        Stage::Motion,
        Stage::Wait,
        Stage::Preprocess,
        Stage::Inference,
        Stage::Postprocess,
        Stage::Track,
        Stage::Jpeg,
        Stage::Outbox,
        Stage::Mqtt,
        Stage::EndToEnd,
    ];
}

/// Latency buckets: eight per octave of nanoseconds (about 9 % wide), up to 2^40 ns.
const PER_OCTAVE: usize = 8;
const BUCKETS: usize = 40 * PER_OCTAVE;

struct Totals {
    count: AtomicU64,
    cpu_ns: AtomicU64,
    wall_ns: AtomicU64,
    histogram: [AtomicU64; BUCKETS],
}

static TOTALS: [Totals; Stage::ALL.len()] = [const {
    Totals {
        count: AtomicU64::new(0),
        cpu_ns: AtomicU64::new(0),
        wall_ns: AtomicU64::new(0),
        histogram: [const { AtomicU64::new(0) }; BUCKETS],
    }
}; Stage::ALL.len()];

/// CPU time of the calling thread so far.
pub fn thread_cpu() -> Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: a valid out-pointer; this clock exists on every Linux since 2.6.12.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Adds one item's costs to `stage`.
pub fn record(stage: Stage, cpu: Duration, wall: Duration) {
    let t = &TOTALS[stage as usize];
    t.count.fetch_add(1, Ordering::Relaxed);
    t.cpu_ns.fetch_add(cpu.as_nanos() as u64, Ordering::Relaxed);
    let wall_ns = wall.as_nanos() as u64;
    t.wall_ns.fetch_add(wall_ns, Ordering::Relaxed);
    t.histogram[bucket(wall_ns)].fetch_add(1, Ordering::Relaxed);
}

fn bucket(ns: u64) -> usize {
    if ns < 2 {
        return 0;
    }
    let octave = 63 - ns.leading_zeros() as usize;
    // The next three bits below the leading one say where in the octave it falls.
    let within = if octave >= 3 { (ns >> (octave - 3)) as usize & 7 } else { (ns << (3 - octave)) as usize & 7 };
    (octave * PER_OCTAVE + within).min(BUCKETS - 1)
}

/// The upper edge of a bucket, in ns.
fn bucket_edge(b: usize) -> u64 {
    let (octave, within) = (b / PER_OCTAVE, b % PER_OCTAVE);
    ((8 + within as u64 + 1) << octave) >> 3
}

/// One stage's work on the calling thread, recorded when dropped.
pub struct Span {
    stage: Stage,
    cpu: Duration,
    wall: Instant,
}

impl Span {
    pub fn start(stage: Stage) -> Span {
        Span { stage, cpu: thread_cpu(), wall: Instant::now() }
    }
}

impl Drop for Span {
    fn drop(&mut self) {
        record(self.stage, thread_cpu().saturating_sub(self.cpu), self.wall.elapsed());
    }
}

/// A stage's totals at one moment.
#[derive(Debug, Clone, PartialEq)]
pub struct StageTotals {
    pub stage: Stage,
    pub count: u64,
    pub cpu: Duration,
    pub wall: Duration,
    histogram: Vec<u64>,
}

impl StageTotals {
    /// What happened between `earlier` and `self`.
    pub fn since(&self, earlier: &StageTotals) -> StageTotals {
        StageTotals {
            stage: self.stage,
            count: self.count - earlier.count,
            cpu: self.cpu.saturating_sub(earlier.cpu),
            wall: self.wall.saturating_sub(earlier.wall),
            histogram: self.histogram.iter().zip(&earlier.histogram).map(|(a, b)| a - b).collect(),
        }
    }

    /// The wall-time latency below which a share `q` (0..1) of the items fell.
    pub fn quantile(&self, q: f64) -> Option<Duration> {
        let total: u64 = self.histogram.iter().sum();
        if total == 0 {
            return None;
        }
        let want = ((total as f64) * q).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (b, n) in self.histogram.iter().enumerate() {
            seen += n;
            if seen >= want {
                return Some(Duration::from_nanos(bucket_edge(b)));
            }
        }
        None
    }
}

/// Every stage's totals now.
pub fn snapshot() -> Vec<StageTotals> {
    Stage::ALL
        .iter()
        .map(|&stage| {
            let t = &TOTALS[stage as usize];
            StageTotals {
                stage,
                count: t.count.load(Ordering::Relaxed),
                cpu: Duration::from_nanos(t.cpu_ns.load(Ordering::Relaxed)),
                wall: Duration::from_nanos(t.wall_ns.load(Ordering::Relaxed)),
                histogram: t.histogram.iter().map(|h| h.load(Ordering::Relaxed)).collect(),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_ordered_and_tight() {
        let mut last = 0;
        for ns in [1u64, 2, 3, 9, 100, 1_000, 20_000_000, 1 << 39] {
            let b = bucket(ns);
            assert!(b >= last, "{ns}");
            last = b;
            let edge = bucket_edge(b);
            assert!(edge >= ns && (edge as f64) <= (ns as f64) * 1.13 + 2.0, "{ns} -> bucket edge {edge}");
        }
    }

    #[test]
    fn spans_add_up_and_quantiles_read_back() {
        let before = snapshot();
        for ms in [1u64, 1, 1, 1, 1, 1, 1, 1, 1, 50] {
            record(Stage::Motion, Duration::from_millis(ms), Duration::from_millis(ms));
        }
        {
            let _s = Span::start(Stage::Motion);
            let mut x = 0u64;
            for i in 0..2_000_000u64 {
                x = x.wrapping_mul(31).wrapping_add(i);
            }
            std::hint::black_box(x);
        }
        let after = snapshot();
        let d = after[Stage::Motion as usize].since(&before[Stage::Motion as usize]);
        assert_eq!(d.count, 11);
        assert!(d.cpu >= Duration::from_millis(59), "{:?}", d.cpu);
        let p50 = d.quantile(0.5).unwrap();
        assert!(p50 >= Duration::from_millis(1) && p50 < Duration::from_micros(1100), "{p50:?}");
        let p99 = d.quantile(0.99).unwrap();
        assert!(p99 >= Duration::from_millis(50) && p99 < Duration::from_millis(56), "{p99:?}");
    }
}
