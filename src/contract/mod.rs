//! The MQTT contract (docs/mqtt.md): every payload and topic name the device publishes
//! and the desk reads, defined once so the two cannot drift. Payload types serialize to
//! exactly what docs/schema/*.json describe; consumers ignore fields they do not know.

mod command;
mod event;
mod health;
mod info;
mod names;
mod topics;

pub use command::{
    COMMAND_ERROR_SCHEMA, CommandError, MAX_COMMAND_BYTES, MAX_NOTICE_CHARS, NOTICE_RECEIPT_SCHEMA, NOTICE_SCHEMA,
    NoticeLevel, NoticeMessage, NoticeReceipt, is_token,
};
pub use event::{ClipRef, EVENT_SCHEMA, EventMessage, EventType, RULE_KINDS, SnapshotRef};
pub use health::{CameraState, HealthReport};
pub use info::{INFO_SCHEMA, Info, InfoCamera, InfoModel};
pub use names::{Invalid, check_id, hex, timestamp};
pub use topics::Topics;
