//! gridwatch: RTSP cameras -> on-device detection -> MQTT events with snapshots.
//!
//! Two programs in one binary, and what they share:
//! - [`device`]: `gridwatch run` on a grid point's mini-PC. The pipeline, stage by stage:
//!   `ingest` (RTSP, GStreamer decode) -> `analysis` (motion gate, detection, filters,
//!   tracking, zones, rules) -> `publish` (event messages with snapshots, the outbox on
//!   disk, MQTT); `ops` is what the technician and systemd see (health, status socket,
//!   metrics, watchdog); `daemon` wires the stages together.
//! - [`desk`]: `gridwatch desk`, the duty desk's console over every grid point.
//! - [`contract`]: the MQTT payloads and topic names, one definition for both sides.
//! - [`commands`]: the CLI's subcommands; [`testkit`]: the private broker, RTSP server
//!   and bench harness that `demo`, `bench` and the tests run against.

pub mod commands;
pub mod contract;
pub mod desk;
pub mod device;
pub mod testkit;
