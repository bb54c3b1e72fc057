//! Not the product: the real parts `demo`, `bench` and the tests run against (a private
//! mosquitto, GStreamer's RTSP server on a clip) and the bench harness.

pub mod access_units;
pub mod bench;
pub mod bench_clips;
pub mod clip;
pub mod hostile_rtsp;
pub mod media;
pub mod mosquitto;
pub mod rtsp_server;
