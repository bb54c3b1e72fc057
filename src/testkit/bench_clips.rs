//! The clip stage's own costs, for `gridwatch bench`, on the stream the bench recorded:
//! what keeping the ring costs per frame and in memory, and what making a clip costs,
//! as the camera sent it and re-encoded for a camera with privacy masks.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::device::analysis::Polygon;
use crate::device::clip::{Recipe, Ring, mp4};
use crate::device::config::ClipsConfig;
use crate::device::ingest::{self, EncodedFrame, StreamInfo};
use crate::device::ops::stages;

#[derive(Debug, Serialize)]
pub struct ClipCosts {
    /// The stream's bitrate, in bytes a second: what the ring holds per second of video.
    pub stream_bytes_per_s: f64,
    /// Seconds of this stream the ring holds at the defaults (`ring_s` within
    /// `ring_bytes`), and its memory per camera in bytes.
    pub ring_seconds: f64,
    pub ring_bytes: f64,
    /// CPU µs to keep one access unit in the ring (the only per-frame cost of clips).
    pub ring_us_per_frame: f64,
    /// CPU ms of the whole process per second of clip: muxed as sent, and decoded,
    /// masked and encoded again (None: no x264enc).
    pub mux_ms_per_clip_s: f64,
    pub masked_ms_per_clip_s: Option<f64>,
}

/// Measures on `sample` (the recorded stream), nothing else running.
pub fn measure(info: &StreamInfo, sample: &[EncodedFrame], analysis_width: u32) -> anyhow::Result<ClipCosts> {
    let frames: Vec<Arc<EncodedFrame>> = sample.iter().cloned().map(Arc::new).collect();
    let start = frames.iter().position(|f| f.keyframe).unwrap_or(0);
    let clip = &frames[start..];
    let span = secs(clip);
    let bytes: u64 = clip.iter().map(|f| f.data.len() as u64).sum();

    let rounds = 200;
    let cpu = stages::thread_cpu();
    let defaults = ClipsConfig::default();
    // The clip's frames go round and round: only the byte bound is at work here.
    let mut ring = Ring::new(defaults.ring_bytes, Duration::MAX, Duration::from_secs(5));
    for _ in 0..rounds {
        for f in clip {
            ring.push(f.clone());
        }
    }
    let ring_us = (stages::thread_cpu() - cpu).as_secs_f64() * 1e6 / (rounds * clip.len()) as f64;

    let as_sent = cost(|| mp4(clip, info.codec, &Recipe::AsSent).map(drop))?;
    let (width, height) = ingest::analysis_size(info.width, info.height, analysis_width);
    let mask = Polygon(vec![[0.0, 0.6], [0.4, 0.6], [0.4, 1.0], [0.0, 1.0]]);
    let recipe = Recipe::Masked { masks: vec![mask], width, height, fps: 5.0 };
    let masked = cost(|| mp4(clip, info.codec, &recipe).map(drop)).ok();
    Ok(ClipCosts {
        stream_bytes_per_s: bytes as f64 / span,
        ring_seconds: defaults.ring_s.min(defaults.ring_bytes as f64 / (bytes as f64 / span)),
        ring_bytes: (defaults.ring_bytes as f64).min(defaults.ring_s * bytes as f64 / span),
        ring_us_per_frame: ring_us,
        mux_ms_per_clip_s: as_sent * 1000.0 / span,
        masked_ms_per_clip_s: masked.map(|c| c * 1000.0 / span),
    })
}

/// Process CPU seconds `f` takes (GStreamer works on threads of its own).
fn cost<E>(f: impl FnOnce() -> Result<(), E>) -> Result<f64, E> {
    let (cpu, _wall) = (super::bench::process_cpu(), Instant::now());
    f()?;
    Ok((super::bench::process_cpu() - cpu).as_secs_f64())
}

fn secs(frames: &[Arc<EncodedFrame>]) -> f64 {
    match (frames.first(), frames.last()) {
        (Some(a), Some(b)) => b.received_at.duration_since(a.received_at).unwrap_or_default().as_secs_f64().max(0.1),
        _ => 0.1,
    }
}
