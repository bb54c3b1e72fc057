//! The retained camera health on `{root}/{site}/{camera}/health` (docs/schema/health.schema.json).

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CameraState {
    Starting,
    Streaming,
    Reconnecting,
    Offline,
    Disabled,
    /// Connected, but detection is switched off (the desk's `detect/set OFF`).
    Paused,
}

/// The JSON published on `{root}/{site}/{camera}/health`, and each camera's part of
/// `gridwatch status`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HealthReport {
    pub camera: String,
    pub state: CameraState,
    pub since: String,
    pub last_frame_at: Option<String>,
    pub codec: Option<String>,
    pub width: Option<u32>,
    pub height: Option<u32>,
    pub fps_in: f32,
    pub fps_analyzed: f32,
    pub frames_skipped: u64,
    /// Frames the detector saw, since start.
    pub frames_analyzed: u64,
    /// Frames the motion gate kept from the detector (nothing moved), since start.
    pub frames_gated: u64,
    /// Region crops (see docs/rules.md) the detector saw besides whole frames, since start.
    #[serde(default)]
    pub crops_analyzed: u64,
    pub inference_ms: Option<f32>,
    pub reconnects_1h: usize,
    pub stalls_1h: usize,
    pub last_error: Option<String>,
    /// Decoder complaints about damaged data (corrupt or lost packets), since start.
    pub decode_errors: u64,
    /// The GStreamer element decoding the stream (avdec_h264, v4l2slh264dec, ...).
    #[serde(default)]
    pub decoder: Option<String>,
    /// Times the chosen decoder failed and libav took over, since start.
    #[serde(default)]
    pub decoder_fallbacks: u64,
    /// Pictures the detector failed on, since start.
    #[serde(default)]
    pub detect_errors: u64,
    /// RTP packets that never arrived, since start.
    pub packets_lost: u64,
    /// This camera's snapshots and events dropped to keep the outbox within
    /// storage.max_bytes, over the outbox's life.
    pub snapshots_evicted: u64,
    pub events_evicted: u64,
    /// This camera's events that could not be stored (full or damaged disk), since
    /// start; each left a gap in `seq`.
    #[serde(default)]
    pub events_dropped: u64,
    /// This camera's stored snapshots that no longer matched their sha256, since start;
    /// their events went out without them (`snapshot_damaged`).
    #[serde(default)]
    pub snapshots_damaged: u64,
    /// Why the device's outbox cannot write, while it cannot (the same for every camera).
    #[serde(default)]
    pub outbox_error: Option<String>,
    /// Where a damaged outbox was moved for recovery, while that file is there.
    #[serde(default)]
    pub outbox_damaged: Option<String>,
    /// This camera's clips dropped to keep the outbox within storage.max_bytes, over
    /// the outbox's life; and those the uplink's hourly budget held back past
    /// mqtt.clip_keep_s, since start. Their events went without them.
    #[serde(default)]
    pub clips_evicted: u64,
    #[serde(default)]
    pub clips_dropped: u64,
    /// Seconds of video the camera's clip ring holds now (the pre-roll and what a
    /// clip request can still get), and how often its byte bound cut it below the
    /// pre-roll since start (raise cameras.clips.ring_bytes if it grows).
    #[serde(default)]
    pub clip_ring_s: f64,
    #[serde(default)]
    pub clip_ring_cuts: u64,
}
