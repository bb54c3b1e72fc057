//! Publish: event messages with their snapshots, stored in the outbox on disk before
//! they are sent, and the MQTT publisher that sends them in order.

pub mod event;
pub mod mqtt;
pub mod mqtt_link;
pub mod outbox;
pub mod snapshot;
