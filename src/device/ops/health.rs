//! Per-camera health, as the contract's retained `{camera}/health` payload: counters
//! the pipeline bumps from its stages, and the camera's state.
//!
//! Promises: `report` never blocks for long (one short mutex) and reports rates over
//! the time since the previous report; reconnects and stalls count over the last hour.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use crate::contract::timestamp;
use crate::contract::{CameraState, HealthReport};
use crate::device::clip::RingState;
use crate::device::ingest::StreamInfo;
use crate::device::publish::OutboxHealth;

#[derive(Debug)]
struct Inner {
    state: CameraState,
    /// Detection switched off by a command: `Streaming` reads `Paused`.
    paused: bool,
    since: SystemTime,
    last_frame_at: Option<SystemTime>,
    stream: Option<StreamInfo>,
    frames_in: u64,
    frames_analyzed: u64,
    frames_skipped: u64,
    frames_gated: u64,
    crops_analyzed: u64,
    inference_ms: Option<f32>,
    reconnects: VecDeque<SystemTime>,
    stalls: VecDeque<SystemTime>,
    last_error: Option<String>,
    /// Since start, for metrics (the `_1h` queues forget).
    reconnects_total: u64,
    inference: InferenceHistogram,
    decode_errors: u64,
    /// The element decoding now, and how often the chosen one gave way to libav.
    decoder: Option<String>,
    decoder_fallbacks: u64,
    detect_errors: u64,
    packets_lost: u64,
    evicted: (u64, u64),
    outbox: OutboxShare,
    clip_ring: RingState,
    /// Counters at the previous report, for the rates.
    prev: (SystemTime, u64, u64),
}

#[derive(Debug)]
pub struct CameraHealth {
    camera: String,
    inner: Mutex<Inner>,
}

const HOUR: Duration = Duration::from_secs(3600);

impl CameraHealth {
    pub fn new(camera: &str, enabled: bool) -> CameraHealth {
        let now = SystemTime::now();
        CameraHealth {
            camera: camera.to_owned(),
            inner: Mutex::new(Inner {
                state: if enabled { CameraState::Starting } else { CameraState::Disabled },
                paused: false,
                since: now,
                last_frame_at: None,
                stream: None,
                frames_in: 0,
                frames_analyzed: 0,
                frames_skipped: 0,
                frames_gated: 0,
                crops_analyzed: 0,
                inference_ms: None,
                reconnects: VecDeque::new(),
                stalls: VecDeque::new(),
                last_error: None,
                reconnects_total: 0,
                inference: InferenceHistogram::default(),
                decode_errors: 0,
                decoder: None,
                decoder_fallbacks: 0,
                detect_errors: 0,
                packets_lost: 0,
                evicted: (0, 0),
                outbox: OutboxShare::default(),
                clip_ring: RingState::default(),
                prev: (now, 0, 0),
            }),
        }
    }

    pub fn camera(&self) -> &str {
        &self.camera
    }

    fn with<R>(&self, f: impl FnOnce(&mut Inner) -> R) -> R {
        f(&mut self.inner.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// A session started streaming. Returns true when the state changed.
    pub fn connected(&self, info: &StreamInfo) -> bool {
        self.with(|i| {
            i.stream = Some(info.clone());
            i.last_error = None;
            set_state(i, if i.paused { CameraState::Paused } else { CameraState::Streaming })
        })
    }

    /// A session ended (or could not start). Returns true when the state changed.
    pub fn disconnected(&self, reason: &str, stalled: bool) -> bool {
        self.with(|i| {
            let now = SystemTime::now();
            if matches!(i.state, CameraState::Streaming | CameraState::Paused) {
                i.reconnects.push_back(now);
                i.reconnects_total += 1;
            }
            if stalled {
                i.stalls.push_back(now);
            }
            i.last_error = Some(reason.to_owned());
            set_state(i, CameraState::Reconnecting)
        })
    }

    /// Detection switched off (or on again). Returns true when the state changed.
    pub fn set_paused(&self, paused: bool) -> bool {
        self.with(|i| {
            i.paused = paused;
            match (i.state, paused) {
                (CameraState::Streaming, true) => set_state(i, CameraState::Paused),
                (CameraState::Paused, false) => set_state(i, CameraState::Streaming),
                _ => false,
            }
        })
    }

    pub fn frame_received(&self, at: SystemTime, lost_packets: u16) {
        self.with(|i| {
            i.frames_in += 1;
            i.packets_lost += u64::from(lost_packets);
            i.last_frame_at = Some(at);
        })
    }

    pub fn frame_analysed(&self, inference_ms: f32) {
        self.with(|i| {
            i.frames_analyzed += 1;
            i.inference_ms = Some(inference_ms);
            i.inference.observe(inference_ms / 1000.0);
        })
    }

    /// `n` region crops of one frame went to the detector.
    pub fn crops_analysed(&self, n: u64) {
        self.with(|i| i.crops_analyzed += n)
    }

    /// A frame the motion gate kept from the detector.
    pub fn frame_gated(&self) {
        self.with(|i| i.frames_gated += 1)
    }

    pub fn frame_skipped(&self) {
        self.with(|i| i.frames_skipped += 1)
    }

    /// `n` more pictures the decoder complained about.
    pub fn decode_errors(&self, n: u64) {
        self.with(|i| i.decode_errors += n)
    }

    /// The element decoding now; `fell_back`: the chosen one just gave way to libav.
    pub fn decoder(&self, element: &str, fell_back: bool) {
        self.with(|i| {
            if i.decoder.as_deref() != Some(element) {
                i.decoder = Some(element.to_owned());
            }
            i.decoder_fallbacks += u64::from(fell_back);
        })
    }

    /// A picture the detector failed on (the model run returned an error).
    pub fn detect_failed(&self) {
        self.with(|i| i.detect_errors += 1)
    }

    /// The outbox's eviction counts for this camera (snapshots, events).
    pub fn set_evictions(&self, snapshots: u64, events: u64) {
        self.with(|i| i.evicted = (snapshots, events))
    }

    /// What the camera's clip ring holds now.
    pub fn set_clip_ring(&self, ring: RingState) {
        self.with(|i| i.clip_ring = ring)
    }

    /// What the outbox says about this camera's events, and about itself.
    pub fn set_outbox(&self, o: &OutboxHealth) {
        let e = o.evictions.get(&self.camera).copied().unwrap_or_default();
        self.set_evictions(e.snapshots, e.events);
        self.with(|i| {
            i.outbox = OutboxShare {
                clips_evicted: e.clips,
                clips_dropped: o.clips_dropped.get(&self.camera).copied().unwrap_or(0),
                events_dropped: o.events_dropped.get(&self.camera).copied().unwrap_or(0),
                snapshots_damaged: o.snapshots_damaged.get(&self.camera).copied().unwrap_or(0),
                error: o.write_error.clone(),
                damaged_file: o.damaged_file.as_ref().map(|p| p.display().to_string()),
            }
        })
    }

    pub fn stopped(&self) -> bool {
        self.with(|i| set_state(i, CameraState::Offline))
    }

    /// The payload to publish now; rates cover the time since the previous call.
    pub fn report(&self) -> HealthReport {
        let (fps_in, fps_analyzed) = self.with(|i| {
            let now = SystemTime::now();
            for q in [&mut i.reconnects, &mut i.stalls] {
                while q.front().is_some_and(|t| now.duration_since(*t).unwrap_or_default() > HOUR) {
                    q.pop_front();
                }
            }
            let (t0, in0, an0) = i.prev;
            let secs = now.duration_since(t0).unwrap_or_default().as_secs_f32();
            let rate = |n: u64| if secs > 0.5 { ((n as f32 / secs) * 10.0).round() / 10.0 } else { 0.0 };
            let rates = (rate(i.frames_in - in0), rate(i.frames_analyzed - an0));
            if secs > 0.5 {
                i.prev = (now, i.frames_in, i.frames_analyzed);
            }
            rates
        });
        self.counters().report(&self.camera, fps_in, fps_analyzed)
    }
}

/// Upper bounds (seconds) of the inference-time histogram's buckets.
pub const INFERENCE_BUCKETS: [f32; 10] = [0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0];

/// Inference times, Prometheus-style: cumulative counts per bucket, sum, count.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct InferenceHistogram {
    /// `buckets[i]`: observations <= `INFERENCE_BUCKETS[i]` (cumulative).
    pub buckets: [u64; INFERENCE_BUCKETS.len()],
    pub sum_s: f64,
    pub count: u64,
}

impl InferenceHistogram {
    fn observe(&mut self, seconds: f32) {
        for (n, le) in self.buckets.iter_mut().zip(INFERENCE_BUCKETS) {
            if seconds <= le {
                *n += 1;
            }
        }
        self.sum_s += f64::from(seconds);
        self.count += 1;
    }
}

/// The counters as they are now, for `status`, metrics and the watchdog.
#[derive(Debug, Clone)]
pub struct HealthCounters {
    pub state: CameraState,
    pub since: SystemTime,
    pub last_frame_at: Option<SystemTime>,
    pub stream: Option<StreamInfo>,
    pub frames_in: u64,
    pub frames_analyzed: u64,
    pub frames_skipped: u64,
    pub inference_ms: Option<f32>,
    pub reconnects_total: u64,
    pub reconnects_1h: usize,
    pub stalls_1h: usize,
    pub last_error: Option<String>,
    pub inference: InferenceHistogram,
    pub decode_errors: u64,
    pub decoder: Option<String>,
    pub decoder_fallbacks: u64,
    pub detect_errors: u64,
    pub packets_lost: u64,
    pub frames_gated: u64,
    pub crops_analyzed: u64,
    /// Outbox evictions of this camera's snapshots and events.
    pub evicted: (u64, u64),
    pub outbox: OutboxShare,
    pub clip_ring: RingState,
}

/// The outbox's part of a camera's health.
#[derive(Debug, Clone, Default)]
pub struct OutboxShare {
    pub clips_evicted: u64,
    pub clips_dropped: u64,
    pub events_dropped: u64,
    pub snapshots_damaged: u64,
    /// Why the outbox cannot write, while it cannot.
    pub error: Option<String>,
    /// Where a damaged outbox was moved, while that file is there.
    pub damaged_file: Option<String>,
}

impl HealthCounters {
    /// The health JSON for these counters, with rates measured by the caller.
    pub fn report(&self, camera: &str, fps_in: f32, fps_analyzed: f32) -> HealthReport {
        HealthReport {
            camera: camera.to_owned(),
            state: self.state,
            since: timestamp(self.since),
            last_frame_at: self.last_frame_at.map(timestamp),
            codec: self.stream.as_ref().map(|s| s.codec.as_str().to_owned()),
            width: self.stream.as_ref().map(|s| s.width),
            height: self.stream.as_ref().map(|s| s.height),
            fps_in,
            fps_analyzed,
            frames_skipped: self.frames_skipped,
            frames_analyzed: self.frames_analyzed,
            frames_gated: self.frames_gated,
            crops_analyzed: self.crops_analyzed,
            inference_ms: self.inference_ms.map(|v| (v * 10.0).round() / 10.0),
            reconnects_1h: self.reconnects_1h,
            stalls_1h: self.stalls_1h,
            last_error: self.last_error.clone(),
            decode_errors: self.decode_errors,
            decoder: self.decoder.clone(),
            decoder_fallbacks: self.decoder_fallbacks,
            detect_errors: self.detect_errors,
            packets_lost: self.packets_lost,
            snapshots_evicted: self.evicted.0,
            events_evicted: self.evicted.1,
            events_dropped: self.outbox.events_dropped,
            snapshots_damaged: self.outbox.snapshots_damaged,
            outbox_error: self.outbox.error.clone(),
            outbox_damaged: self.outbox.damaged_file.clone(),
            clips_evicted: self.outbox.clips_evicted,
            clips_dropped: self.outbox.clips_dropped,
            clip_ring_s: (self.clip_ring.seconds * 10.0).round() / 10.0,
            clip_ring_cuts: self.clip_ring.cuts,
        }
    }
}

impl CameraHealth {
    /// A copy of the counters; unlike [`report`](Self::report) it changes nothing, so
    /// reading it does not disturb the published rates.
    pub fn counters(&self) -> HealthCounters {
        self.with(|i| {
            let now = SystemTime::now();
            let recent = |q: &VecDeque<SystemTime>| {
                q.iter().filter(|t| now.duration_since(**t).unwrap_or_default() <= HOUR).count()
            };
            HealthCounters {
                state: i.state,
                since: i.since,
                last_frame_at: i.last_frame_at,
                stream: i.stream.clone(),
                frames_in: i.frames_in,
                frames_analyzed: i.frames_analyzed,
                frames_skipped: i.frames_skipped,
                inference_ms: i.inference_ms,
                reconnects_total: i.reconnects_total,
                reconnects_1h: recent(&i.reconnects),
                stalls_1h: recent(&i.stalls),
                last_error: i.last_error.clone(),
                inference: i.inference.clone(),
                decode_errors: i.decode_errors,
                decoder: i.decoder.clone(),
                decoder_fallbacks: i.decoder_fallbacks,
                detect_errors: i.detect_errors,
                packets_lost: i.packets_lost,
                frames_gated: i.frames_gated,
                crops_analyzed: i.crops_analyzed,
                evicted: i.evicted,
                outbox: i.outbox.clone(),
                clip_ring: i.clip_ring,
            }
        })
    }
}

fn set_state(i: &mut Inner, s: CameraState) -> bool {
    if i.state == s {
        return false;
    }
    i.state = s;
    i.since = SystemTime::now();
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::ingest::Codec;

    #[test]
    fn states_and_counters() {
        let h = CameraHealth::new("cam", true);
        assert_eq!(h.report().state, CameraState::Starting);
        let info = StreamInfo {
            codec: Codec::H264,
            rfc6381_codec: "avc1.4d401e".into(),
            width: 768,
            height: 576,
            fps: Some(10.0),
        };
        assert!(h.connected(&info));
        assert!(!h.connected(&info), "no change, no report");
        h.frame_received(SystemTime::now(), 2);
        h.frame_analysed(21.5);
        h.frame_skipped();
        h.decode_errors(4);
        h.set_evictions(3, 1);
        h.frame_gated();
        h.frame_gated();
        h.decoder("v4l2slh264dec", false);
        h.decoder("avdec_h264", true);
        h.decoder("avdec_h264", false);
        assert!(h.disconnected("no frame for 20 s", true));
        let r = h.report();
        assert_eq!(r.state, CameraState::Reconnecting);
        assert_eq!((r.reconnects_1h, r.stalls_1h, r.frames_skipped), (1, 1, 1));
        assert_eq!((r.codec.as_deref(), r.width, r.height), (Some("h264"), Some(768), Some(576)));
        assert_eq!(r.inference_ms, Some(21.5));
        assert_eq!((r.decode_errors, r.packets_lost, r.snapshots_evicted, r.events_evicted), (4, 2, 3, 1));
        assert_eq!((r.frames_analyzed, r.frames_gated), (1, 2));
        assert_eq!((r.decoder.as_deref(), r.decoder_fallbacks), (Some("avdec_h264"), 1));
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["state"], "reconnecting");
        let c = h.counters();
        assert_eq!((c.frames_in, c.frames_analyzed, c.reconnects_total), (1, 1, 1));
        assert_eq!((c.inference.count, c.inference.buckets[1], c.inference.buckets[2]), (1, 0, 1), "21.5 ms");
    }

    #[test]
    fn a_paused_camera_reads_paused_while_it_streams() {
        let h = CameraHealth::new("cam", true);
        assert!(!h.set_paused(true), "not streaming yet: still starting");
        let info = StreamInfo { codec: Codec::H264, rfc6381_codec: "avc1".into(), width: 8, height: 8, fps: None };
        assert!(h.connected(&info));
        assert_eq!(h.report().state, CameraState::Paused);
        assert!(h.set_paused(false));
        assert_eq!(h.report().state, CameraState::Streaming);
        assert!(h.set_paused(true));
        assert!(h.disconnected("gone", false));
        assert_eq!((h.report().state, h.report().reconnects_1h), (CameraState::Reconnecting, 1));
        assert!(h.connected(&info));
        assert_eq!(serde_json::to_value(h.report()).unwrap()["state"], "paused");
    }

    #[test]
    fn the_outbox_shows_in_every_cameras_health() {
        use crate::device::publish::{Evictions, OutboxHealth};
        let h = CameraHealth::new("cam", true);
        let mut o = OutboxHealth { write_error: Some("disk full".into()), ..Default::default() };
        o.events_dropped.insert("cam".into(), 4);
        o.events_dropped.insert("other".into(), 9);
        o.snapshots_damaged.insert("cam".into(), 1);
        o.evictions.insert("cam".into(), Evictions { snapshots: 2, events: 3, clips: 0 });
        o.damaged_file = Some("/var/lib/gridwatch/outbox.sqlite3.damaged-1".into());
        h.set_outbox(&o);
        let r = h.report();
        assert_eq!((r.events_dropped, r.snapshots_damaged, r.snapshots_evicted, r.events_evicted), (4, 1, 2, 3));
        assert_eq!(r.outbox_error.as_deref(), Some("disk full"));
        assert_eq!(r.outbox_damaged.as_deref(), Some("/var/lib/gridwatch/outbox.sqlite3.damaged-1"));
        h.set_outbox(&OutboxHealth::default());
        assert_eq!((h.report().outbox_error, h.report().events_dropped), (None, 0), "cleared once it works");
    }
}
