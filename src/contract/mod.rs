//! The MQTT contract (docs/mqtt.md): every payload and topic name the device publishes
//! and the desk reads, defined once so the two cannot drift. Payload types serialize to
//! exactly what docs/schema/*.json describe; consumers ignore fields they do not know.

mod command;
mod event;
mod health;
mod info;
mod names;
mod stats;
mod topics;

pub use command::{
    COMMAND_ERROR_SCHEMA, CommandError, MAX_COMMAND_BYTES, MAX_NOTICE_CHARS, NOTICE_RECEIPT_SCHEMA, NOTICE_SCHEMA,
    NoticeLevel, NoticeMessage, NoticeReceipt, is_token,
};
pub use event::{ClipRef, EVENT_SCHEMA, EventMessage, EventType, RULE_KINDS, SnapshotRef};
pub use health::{CameraState, HealthReport};
pub use info::{INFO_SCHEMA, Info, InfoCamera, InfoModel};
pub use names::{Invalid, check_id, hex, timestamp};
pub use stats::{LineCount, STATS_SCHEMA, StatsMessage, ZoneCount};
pub use topics::Topics;

/// Asserts that a payload as sent has exactly the fields its JSON schema requires.
#[cfg(test)]
pub fn assert_fields_match_schema(schema: &str, sent: &serde_json::Value, what: &str) {
    let schema: serde_json::Value = serde_json::from_str(schema).unwrap();
    let mut required: Vec<&str> = schema["required"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    let mut fields: Vec<&str> = sent.as_object().unwrap().keys().map(String::as_str).collect();
    required.sort();
    fields.sort();
    assert_eq!(required, fields, "the schema and {what} disagree");
}
