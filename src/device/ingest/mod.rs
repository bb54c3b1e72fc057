//! Ingest: an RTSP session per camera (retina) delivering encoded access units, and the
//! GStreamer decoder turning them into 4:2:0 pictures for analysis.

pub mod camera;
pub mod decode;
pub mod error;
pub mod frame;
pub mod guard;
pub mod relay;
pub mod url;
pub mod yuv;
