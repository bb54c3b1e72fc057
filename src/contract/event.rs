//! The event message on `{root}/{site}/events` (docs/mqtt.md, docs/schema/event.schema.json):
//! what the device publishes and the desk stores, one definition for both.

use serde::{Deserialize, Serialize};

pub const EVENT_SCHEMA: &str = "gridwatch.event/1";

/// The rule kinds a device makes events of (besides `object`): the desk's default
/// alert kinds, and the kinds that get clips unless a camera says otherwise.
pub const RULE_KINDS: [&str; 10] = [
    "intrusion",
    "loitering",
    "crowd",
    "occupation",
    "abandoned",
    "tamper",
    "camera_offline",
    "line_crossing",
    "person_down",
    "inactivity",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventType {
    New,
    Update,
    End,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::New => "new",
            EventType::Update => "update",
            EventType::End => "end",
        }
    }
}

/// The JSON published on `{root}/{site}/events`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventMessage {
    pub schema: String,
    pub seq: u64,
    pub event_id: String,
    #[serde(rename = "type")]
    pub event_type: EventType,
    pub kind: String,
    pub site: String,
    pub camera: String,
    pub label: String,
    /// The best detection score seen over the event's life so far.
    pub score: f32,
    /// The latest box, normalised to 0..1 of the frame.
    #[serde(rename = "box")]
    pub bbox: [f32; 4],
    pub zones: Vec<String>,
    pub started_at: String,
    pub at: String,
    pub ended_at: Option<String>,
    pub snapshot: Option<SnapshotRef>,
    /// Rule kinds only: the rule's figures (docs/rules.md); absent on object events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<serde_json::Value>,
    /// The event's video clip, published before this message (contract 1.1); absent
    /// until the clip is made, usually on the `end`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clip: Option<ClipRef>,
}

/// Where an event's clip was published and what it holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClipRef {
    pub topic: String,
    pub sha256: String,
    pub bytes: usize,
    pub duration_s: f64,
    /// The time of the clip's first frame (RFC 3339 UTC).
    pub starts_at: String,
    /// `h264` or `h265`.
    pub codec: String,
}

/// Where the event's picture was published and how to verify it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SnapshotRef {
    pub topic: String,
    pub sha256: String,
    pub bytes: usize,
    pub width: u32,
    pub height: u32,
}
