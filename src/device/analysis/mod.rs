//! Analysis, per camera: the motion gate decides what the detector sees, detections
//! are filtered, tracked and placed in zones, and rules turn them into incidents;
//! counting lines and the stats collector turn them into the period's figures.
//!
//! Types are re-exported here; `detect` (the model), `gate` and `regions` stay public
//! because their functions are called by name (`gate::plan`, `regions::merge`).

pub mod detect;
mod filter;
pub mod gate;
mod lines;
mod motion;
pub mod regions;
mod rules;
mod stats;
mod tamper;
mod track;
mod zone;

pub use filter::{Filters, of_one_kind};
pub use lines::{Crossing, Line, LineCounter};
pub use motion::{Grey, Motion, MotionDetector};
pub use rules::{CameraRules, Incident, RuleEngine, STOPPED_AFTER, TrackView};
pub use stats::{StatsCollector, StatsLayout};
pub use tamper::{TamperDetector, TamperSign};
pub use track::{Change, Track, Tracker, TrackerConfig};
pub use zone::{Polygon, Zone, ZoneMembership, foot_point};
