//! gridwatch: RTSP cameras -> on-device detection -> MQTT events with snapshots.
//!
//! The pipeline, stage by stage (each a module with a narrow typed interface):
//! `camera` (RTSP ingest) -> `decode` (GStreamer) -> `detect` (ONNX Runtime) ->
//! `track` (object lifecycle) -> `event` (ids, snapshots) -> `outbox` (SQLite) -> `mqtt`.
//! Between detect and event, per camera: `motion` gates which frames the detector sees,
//! `filter` drops detections that cannot be wanted, `zone` places tracked objects,
//! `rules` (with `tamper`) turns them into incidents the desk acts on.
//! `daemon` wires them together; `commands` holds the CLI's subcommands.

pub mod bench;
pub mod camera;
pub mod commands;
pub mod config;
pub mod control;
pub mod daemon;
pub mod decode;
pub mod desk;
pub mod detect;
pub mod event;
pub mod filter;
pub mod frame;
pub mod health;
pub mod live;
pub mod metrics;
pub mod mosquitto;
pub mod motion;
pub mod mqtt;
pub mod mqtt_link;
pub mod notify;
pub mod outbox;
pub mod picture;
pub mod redact;
pub mod regions;
pub mod rtsp_server;
pub mod rules;
pub mod snapshot;
pub mod stages;
pub mod tamper;
pub mod tls;
pub mod track;
pub mod watchdog;
pub mod yuv;
pub mod zone;
