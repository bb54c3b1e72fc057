//! Publish: event messages with their snapshots, stored in the outbox on disk before
//! they are sent, and the MQTT publisher that sends them in order.
//!
//! Types are re-exported here; `mqtt` stays public for `mqtt::run`, the publisher task.

mod clip_budget;
mod event;
pub mod mqtt;
mod mqtt_link;
mod outbox;
mod snapshot;
mod takeover;

pub use event::{EventSettings, ObjectEvents, Outgoing, RuleEvents};
pub use mqtt_link::{LinkState, MqttLink};
pub use outbox::{Evictions, Outbox, OutboxError, OutboxHealth, Pending, SharedOutbox, disk_free};
pub use snapshot::{
    BOX_COLOR, Rendered, Renderer, ZONE_COLOR, draw_box, draw_polygon, encode_jpeg, fill_polygon, polygon_spans,
    turbojpeg_failures,
};
pub use takeover::Takeovers;
