//! gridwatch: RTSP cameras -> on-device detection -> MQTT events with snapshots.
//!
//! The pipeline, stage by stage (each a module with a narrow typed interface):
//! `camera` (RTSP ingest) -> `decode` (GStreamer) -> `detect` (ONNX Runtime) ->
//! `track` (object lifecycle) -> `event` (ids, snapshots) -> `outbox` (SQLite) -> `mqtt`.
//! `daemon` wires them together; `commands` holds the CLI's subcommands.

pub mod camera;
pub mod commands;
pub mod config;
pub mod control;
pub mod daemon;
pub mod decode;
pub mod detect;
pub mod event;
pub mod frame;
pub mod health;
pub mod live;
pub mod metrics;
pub mod mosquitto;
pub mod mqtt;
pub mod mqtt_link;
pub mod notify;
pub mod outbox;
pub mod picture;
pub mod redact;
pub mod rtsp_server;
pub mod snapshot;
pub mod tls;
pub mod track;
pub mod watchdog;
