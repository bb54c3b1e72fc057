//! What the technician and systemd see of the running daemon: health per camera, the
//! control socket, Prometheus metrics, the watchdog and readiness, stage timings.
//!
//! Each public module is one tool the daemon starts by name (`control::serve_at`,
//! `metrics::serve`, `watchdog::run`, `notify::ready`, `stages::record`); the health and
//! live-status types they share are re-exported here.

pub mod control;
mod health;
mod live;
pub mod metrics;
pub mod notify;
pub mod stages;
pub mod watchdog;

pub use health::{CameraHealth, HealthCounters, INFERENCE_BUCKETS, InferenceHistogram, OutboxShare};
pub use live::{CameraStatus, FrameSlot, Live, LiveCamera, ModelStatus, MqttStatus, OutboxStatus, Rates, Status};
