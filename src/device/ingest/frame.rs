//! The values handed from stage to stage: encoded access units from the camera,
//! decoded pictures for analysis. Plain data, no behaviour: every stage agrees on these.

use std::time::{Duration, SystemTime};

/// Video codecs the ingest and decode stages understand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    H264,
    H265,
}

impl Codec {
    pub fn as_str(self) -> &'static str {
        match self {
            Codec::H264 => "h264",
            Codec::H265 => "h265",
        }
    }
}

/// What a camera announced about its video stream when a session started.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamInfo {
    pub codec: Codec,
    /// e.g. "avc1.4D401E"; informational.
    pub rfc6381_codec: String,
    pub width: u32,
    pub height: u32,
    /// Frame rate the camera announced, if it did.
    pub fps: Option<f64>,
}

/// One access unit as received: Annex-B byte stream (start codes), parameter sets
/// repeated before every keyframe, so a decoder can start at any keyframe.
#[derive(Debug, Clone)]
pub struct EncodedFrame {
    pub data: Vec<u8>,
    /// Presentation time on the stream's own clock, from the session start.
    pub pts: Duration,
    /// Wall-clock time the last byte of this frame arrived.
    pub received_at: SystemTime,
    pub keyframe: bool,
    /// RTP packets lost just before this frame (the frame may be damaged).
    pub lost_packets: u16,
}

/// A decoded picture at the analysis size, in the decoder's 4:2:0 planes.
#[derive(Debug, Clone)]
pub struct Frame {
    pub picture: crate::device::ingest::yuv::Yuv420,
    /// Wall-clock capture time (receive time of the access unit it came from).
    pub captured_at: SystemTime,
    pub pts: Duration,
}
