//! What the technician and systemd see of the running daemon: health per camera, the
//! control socket, Prometheus metrics, the watchdog and readiness, stage timings.

pub mod control;
pub mod health;
pub mod live;
pub mod metrics;
pub mod notify;
pub mod stages;
pub mod watchdog;
