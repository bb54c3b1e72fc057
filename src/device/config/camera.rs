//! `[[cameras]]`: one camera each: its stream, how it is analysed (rate, size, motion
//! gate, region crops, filters), its zones and rules, and its privacy masks.

use std::collections::{BTreeMap, HashSet};

use serde::{Deserialize, Serialize};

use super::clips::ClipsConfig;
use super::lines::LineConfig;
use super::rules::{OfflineRule, TamperRule, ZoneConfig};
use super::{Parsed, SnapshotConfig, default_true};
use crate::contract::{Invalid, check_id};
use crate::device::analysis::detect::Labels;
pub use crate::device::ingest::CameraUrl;
use crate::device::ingest::Limits;

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CameraConfig {
    pub id: String,
    /// Human-readable name for the desk; the id when absent.
    pub name: Option<String>,
    /// rtsp://[user:pass@]host[:port]/path, parsed at load; credentials are never logged or published.
    pub url: Parsed<CameraUrl>,
    #[serde(default = "default_detect_fps")]
    pub detect_fps: f64,
    /// Labels that make object events; others are detected but ignored.
    #[serde(default = "default_track")]
    pub track: Vec<String>,
    /// Width of the picture analysed and sent in snapshots; the stream's own width,
    /// capped at this, aspect kept.
    #[serde(default = "default_analysis_width")]
    pub analysis_width: u32,
    /// A session that delivers no frame for this long is dropped and reconnected
    /// (RTSP itself never notices a camera that froze with its socket open).
    #[serde(default = "default_stall_timeout_s")]
    pub stall_timeout_s: u64,
    /// Caps on what the camera may send: larger is refused with a clear `last_error`
    /// and the session dropped, so a lying camera cannot take the board's memory.
    #[serde(default = "default_max_message_bytes")]
    pub max_message_bytes: u64,
    #[serde(default = "default_max_frame_bytes")]
    pub max_frame_bytes: u64,
    #[serde(default = "default_max_picture_pixels")]
    pub max_picture_pixels: u64,
    /// `auto` (the best decoder GStreamer has for the codec, libav if it fails),
    /// `software` (libav), or a GStreamer decoder element's name (docs/install.md).
    #[serde(default)]
    pub decoder: crate::device::ingest::DecoderChoice,
    #[serde(default = "default_true")]
    pub enabled: bool,
    #[serde(default)]
    pub motion: MotionConfig,
    /// `auto`: zones too small for the whole-frame view also get square crops shown to
    /// the detector at full size (see docs/rules.md); `off`: the whole frame only.
    #[serde(default)]
    pub regions: RegionsMode,
    /// Per label: which detections count (see docs/rules.md).
    #[serde(default)]
    pub filters: BTreeMap<String, FilterConfig>,
    #[serde(default)]
    pub zones: Vec<ZoneConfig>,
    /// Counting lines (`[[cameras.lines]]`): crossings go into the stats messages.
    #[serde(default)]
    pub lines: Vec<LineConfig>,
    /// Areas blacked out in every picture that leaves the device.
    #[serde(default)]
    pub privacy_masks: Vec<MaskConfig>,
    pub tamper: Option<TamperRule>,
    pub camera_offline: Option<OfflineRule>,
    /// `[cameras.clips]`: video around each alert.
    #[serde(default)]
    pub clips: ClipsConfig,
    /// The `[snapshot]` section, copied here at load so a camera's pipeline has all it needs.
    #[serde(skip)]
    pub snapshot: SnapshotConfig,
    /// The `[stats]` section, copied here at load likewise.
    #[serde(skip)]
    pub stats: super::StatsConfig,
}

/// Whether far zones get region crops of their own (`cameras.regions`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RegionsMode {
    #[default]
    Auto,
    Off,
}

/// A polygon's corners as `[x, y]` pairs in 0..1 of the frame's width and height.
pub type Points = Vec<[f32; 2]>;

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MotionConfig {
    /// Off: every frame goes to the detector, and objects count without having moved.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Luma difference (0-255) from the background that counts as change.
    #[serde(default = "default_motion_threshold")]
    pub threshold: u8,
    /// Least changed area, as a fraction of the frame, that counts as motion.
    #[serde(default = "default_motion_min_area")]
    pub min_area: f32,
    /// How often a still scene is looked at anyway (seconds).
    #[serde(default = "default_recheck_s")]
    pub recheck_s: f64,
}

impl Default for MotionConfig {
    fn default() -> Self {
        MotionConfig {
            enabled: true,
            threshold: default_motion_threshold(),
            min_area: default_motion_min_area(),
            recheck_s: default_recheck_s(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FilterConfig {
    /// Detections of this label below this score are ignored (default: detector.min_score).
    pub min_score: Option<f32>,
    /// An object counts once the median of its recent scores (misses as 0) reaches this.
    #[serde(default = "default_confirm_score")]
    pub confirm_score: f32,
    /// Box area bounds as a fraction of the frame.
    #[serde(default)]
    pub min_area: f32,
    #[serde(default = "default_one")]
    pub max_area: f32,
    /// Box width / height bounds.
    #[serde(default)]
    pub min_ratio: f32,
    #[serde(default = "default_max_ratio")]
    pub max_ratio: f32,
    /// A detection standing (bottom-centre) in one of these polygons is dropped.
    #[serde(default)]
    pub masks: Vec<Points>,
}

impl Default for FilterConfig {
    fn default() -> Self {
        FilterConfig {
            min_score: None,
            confirm_score: default_confirm_score(),
            min_area: 0.0,
            max_area: 1.0,
            min_ratio: 0.0,
            max_ratio: default_max_ratio(),
            masks: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MaskConfig {
    pub points: Points,
}

impl CameraConfig {
    /// Labels the camera must detect and track: `track` plus every zone rule's labels
    /// (and persons, when an abandoned-item rule must know whether someone is near).
    pub fn tracked_labels(&self) -> Vec<String> {
        let mut out: Vec<String> = self.track.clone();
        for z in &self.zones {
            out.extend(z.labels().cloned());
            if z.abandoned.is_some() {
                out.push("person".into());
            }
        }
        out.extend(self.lines.iter().flat_map(|l| l.labels.iter().cloned()));
        let mut seen = HashSet::new();
        out.retain(|l| seen.insert(l.clone()));
        out
    }

    /// The filter for `label`: its own section, or the defaults.
    pub fn filter(&self, label: &str) -> FilterConfig {
        self.filters.get(label).cloned().unwrap_or_default()
    }

    pub fn display_name(&self) -> &str {
        self.name.as_deref().unwrap_or(&self.id)
    }

    /// The size caps ingest holds this camera to.
    pub fn limits(&self) -> Limits {
        Limits {
            message_bytes: self.max_message_bytes,
            access_unit_bytes: self.max_frame_bytes,
            picture_pixels: self.max_picture_pixels,
        }
    }
}

fn default_detect_fps() -> f64 {
    5.0
}
fn default_track() -> Vec<String> {
    vec!["person".into()]
}
fn default_analysis_width() -> u32 {
    1280
}
fn default_stall_timeout_s() -> u64 {
    20
}
fn default_max_message_bytes() -> u64 {
    Limits::default().message_bytes
}
fn default_max_frame_bytes() -> u64 {
    Limits::default().access_unit_bytes
}
fn default_max_picture_pixels() -> u64 {
    Limits::default().picture_pixels
}
fn default_motion_threshold() -> u8 {
    20
}
fn default_motion_min_area() -> f32 {
    0.0005
}
fn default_recheck_s() -> f64 {
    1.5
}
fn default_confirm_score() -> f32 {
    0.6
}
fn default_one() -> f32 {
    1.0
}
fn default_max_ratio() -> f32 {
    100.0
}

/// Bounds of the size caps: below them no real camera works (a 720p keyframe, an SDP
/// with a few tracks); above them four cameras no longer fit a 4 GB board.
const MESSAGE_BYTES: std::ops::RangeInclusive<u64> = (16 << 10)..=(64 << 20);
const FRAME_BYTES: std::ops::RangeInclusive<u64> = (256 << 10)..=(64 << 20);
const PICTURE_PIXELS: std::ops::RangeInclusive<u64> = (320 * 240)..=(8192 * 4320);

/// Analysed pictures a second at the least: one every 10 minutes.
const MIN_DETECT_FPS: f64 = 1.0 / 600.0;

impl CameraConfig {
    /// Every problem of this camera, keys under `key` (`cameras[2]`).
    pub(super) fn problems(&self, key: &str, labels: Option<&Labels>, bad: &mut dyn FnMut(String, String)) {
        let k = |s: &str| format!("{key}.{s}");
        if let Err(r) = check_id(&self.id) {
            bad(k("id"), r.0);
        }
        if let Some(r) = self.url.problem() {
            bad(k("url"), r.to_owned());
        }
        if !(self.detect_fps >= MIN_DETECT_FPS && self.detect_fps <= 30.0) {
            bad(
                k("detect_fps"),
                format!("{} is outside {MIN_DETECT_FPS:.4}..=30 frames a second; 5 is a good start", self.detect_fps),
            );
        }
        if !(2..=600).contains(&self.stall_timeout_s) {
            bad(k("stall_timeout_s"), format!("{} is outside 2..=600 seconds", self.stall_timeout_s));
        }
        if self.track.is_empty() {
            bad(k("track"), "is empty; list the labels that should make events, e.g. [\"person\"]".into());
        }
        for l in self.track.iter().filter(|l| labels.is_some_and(|ls| ls.id(l).is_none())) {
            bad(k("track"), format!("\"{l}\" is not a label the model knows (e.g. person, car, truck, bicycle)"));
        }
        if !(64..=3840).contains(&self.analysis_width) {
            bad(k("analysis_width"), format!("{} is outside 64..=3840 pixels", self.analysis_width));
        }
        for (key, value, range) in [
            ("max_message_bytes", self.max_message_bytes, MESSAGE_BYTES),
            ("max_frame_bytes", self.max_frame_bytes, FRAME_BYTES),
            ("max_picture_pixels", self.max_picture_pixels, PICTURE_PIXELS),
        ] {
            if !range.contains(&value) {
                bad(
                    k(key),
                    format!("{value} is outside {}..={}; leave it unset for the default", range.start(), range.end()),
                );
            }
        }
        for (sub, reason) in rule_problems(self, labels) {
            bad(k(&sub), reason);
        }
        self.clips.problems(&mut |sub, reason| bad(k(&sub), reason));
    }
}

/// Problems in a camera's motion, filters, zones, rules and masks, as (key under the
/// camera, reason).
fn rule_problems(cam: &CameraConfig, labels: Option<&Labels>) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut bad = |k: String, r: String| out.push((k, r));
    let m = &cam.motion;
    if m.threshold == 0 {
        bad("motion.threshold".into(), "0 counts sensor noise as motion; 20 is a good start".into());
    }
    if !(0.0..0.5).contains(&m.min_area) {
        bad("motion.min_area".into(), format!("{} is outside 0..0.5 of the frame", m.min_area));
    }
    if !(m.recheck_s > 0.0 && m.recheck_s <= 60.0) {
        bad("motion.recheck_s".into(), format!("{} is outside (0, 60] seconds", m.recheck_s));
    }
    for (label, f) in &cam.filters {
        let k = |s: &str| format!("filters.{label}.{s}");
        if labels.is_some_and(|ls| ls.id(label).is_none()) {
            bad(format!("filters.{label}"), format!("\"{label}\" is not a label the model knows"));
        }
        for (name, v) in [("min_score", f.min_score.unwrap_or(0.5)), ("confirm_score", f.confirm_score)] {
            if !(0.0..=1.0).contains(&v) {
                bad(k(name), format!("{v} is outside 0..1"));
            }
        }
        if !(0.0..=1.0).contains(&f.min_area) || !(0.0..=1.0).contains(&f.max_area) || f.min_area > f.max_area {
            bad(
                k("min_area"),
                format!("min_area {} and max_area {} must satisfy 0 <= min <= max <= 1", f.min_area, f.max_area),
            );
        }
        if f.min_ratio < 0.0 || f.min_ratio > f.max_ratio {
            bad(
                k("min_ratio"),
                format!("min_ratio {} and max_ratio {} must satisfy 0 <= min <= max", f.min_ratio, f.max_ratio),
            );
        }
        for (i, p) in f.masks.iter().enumerate() {
            if let Err(r) = check_polygon(p) {
                bad(k(&format!("masks[{i}]")), r.0);
            }
        }
    }
    for (i, p) in cam.privacy_masks.iter().enumerate() {
        if let Err(r) = check_polygon(&p.points) {
            bad(format!("privacy_masks[{i}].points"), r.0);
        }
    }
    for (i, z) in cam.zones.iter().enumerate() {
        z.problems(&format!("zones[{i}]"), labels, &mut bad);
    }
    let mut names = HashSet::new();
    for (i, z) in cam.zones.iter().enumerate() {
        if check_id(&z.name).is_ok() && !names.insert(z.name.as_str()) {
            bad(format!("zones[{i}].name"), format!("\"{}\" is used by an earlier zone of this camera", z.name));
        }
    }
    let mut line_names = HashSet::new();
    for (i, l) in cam.lines.iter().enumerate() {
        l.problems(&format!("lines[{i}]"), labels, &mut bad);
        if check_id(&l.name).is_ok() && !line_names.insert(l.name.as_str()) {
            bad(format!("lines[{i}].name"), format!("\"{}\" is used by an earlier line of this camera", l.name));
        }
    }
    if let Some(t) = &cam.tamper {
        super::rules::secs("tamper.seconds", t.seconds, &mut bad);
    }
    if let Some(o) = &cam.camera_offline
        && !(1.0..=86_400.0).contains(&o.seconds)
    {
        bad("camera_offline.seconds".into(), format!("{} is outside 1..=86400 seconds", o.seconds));
    }
    out
}

/// A polygon needs 3 or more corners, each within the frame (0..1).
pub(super) fn check_polygon(p: &Points) -> Result<(), Invalid> {
    if p.len() < 3 {
        return Err(Invalid(format!("has {} point(s); a polygon needs at least 3 [x, y] pairs", p.len())));
    }
    if let Some((j, [x, y])) =
        p.iter().enumerate().find(|(_, [x, y])| !(0.0..=1.0).contains(x) || !(0.0..=1.0).contains(y))
    {
        return Err(Invalid(format!(
            "point {j} [{x}, {y}] is outside the frame; coordinates are fractions 0..1 of width and height"
        )));
    }
    Ok(())
}
