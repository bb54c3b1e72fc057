//! The stats message on `{root}/{site}/stats` (contract 1.1, "Statistics";
//! docs/schema/stats.schema.json): one camera's line counts and zone occupancy over
//! one period. The device publishes it; the desk stores it for the report.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub const STATS_SCHEMA: &str = "gridwatch.stats/1";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatsMessage {
    pub schema: String,
    /// Per site, consecutive, a sequence of its own (not the events').
    pub seq: u64,
    pub site: String,
    pub camera: String,
    pub period_start: String,
    pub period_end: String,
    /// Analysed frames in the period: 0 means nothing was seen (camera away or paused),
    /// so the zeros below say nothing about the street.
    pub frames: u64,
    /// Line -> label -> crossings each way.
    pub lines: BTreeMap<String, BTreeMap<String, LineCount>>,
    /// Zone -> label -> how many were in it at once.
    pub zones: BTreeMap<String, BTreeMap<String, ZoneCount>>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LineCount {
    #[serde(rename = "in")]
    pub inward: u64,
    #[serde(rename = "out")]
    pub outward: u64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct ZoneCount {
    /// The most at once on one analysed frame.
    pub peak: u64,
    /// The average over the period's analysed frames, two decimals.
    pub mean: f64,
}
