//! Analysis, per camera: the motion gate decides what the detector sees, detections
//! are filtered, tracked and placed in zones, and rules turn them into incidents.

pub mod detect;
pub mod filter;
pub mod gate;
pub mod motion;
pub mod regions;
pub mod rules;
pub mod tamper;
pub mod track;
pub mod zone;
