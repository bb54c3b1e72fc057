//! `[cameras.clips]`: the short video cut around each alert from the camera's own
//! stream (docs/mqtt.md, "Event clips"), and the ring of encoded video it is cut from.

use serde::{Deserialize, Serialize};

use super::default_true;
use crate::contract::RULE_KINDS;

/// The longest clip a camera may ask for: the clip is held in memory while it grows.
const MAX_CLIP_S: f64 = 120.0;
/// Ring sizes that make sense: a GOP of a 4K camera at the least, 256 MiB at most.
const RING_BYTES: std::ops::RangeInclusive<u64> = (1 << 20)..=(256 << 20);

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ClipsConfig {
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Seconds of video before the event's start (from the keyframe at or before that).
    #[serde(default = "default_pre_s")]
    pub pre_s: f64,
    /// Seconds after the event's end.
    #[serde(default = "default_post_s")]
    pub post_s: f64,
    /// Longest clip; a longer event's clip ends early and an `update` says so.
    #[serde(default = "default_max_s")]
    pub max_s: f64,
    /// Event kinds that get a clip; every rule kind but `camera_offline` when absent
    /// (`object` may be listed).
    pub kinds: Option<Vec<String>>,
    /// Bytes of encoded video the camera's ring keeps for the pre-roll and for clips
    /// asked for later.
    #[serde(default = "default_ring_bytes")]
    pub ring_bytes: u64,
    /// Seconds of video the ring keeps at most (within `ring_bytes`): how old an
    /// event's clip may be when the desk asks for it. Memory, per camera: this many
    /// seconds of the camera's bitrate.
    #[serde(default = "default_ring_s")]
    pub ring_s: f64,
    /// Frames a second of clips re-encoded because the camera has privacy masks.
    #[serde(default = "default_masked_fps")]
    pub masked_fps: f64,
}

fn default_pre_s() -> f64 {
    5.0
}
fn default_post_s() -> f64 {
    5.0
}
fn default_max_s() -> f64 {
    30.0
}
fn default_ring_bytes() -> u64 {
    8 << 20
}
fn default_ring_s() -> f64 {
    30.0
}
fn default_masked_fps() -> f64 {
    5.0
}

impl Default for ClipsConfig {
    fn default() -> ClipsConfig {
        ClipsConfig {
            enabled: true,
            pre_s: default_pre_s(),
            post_s: default_post_s(),
            max_s: default_max_s(),
            kinds: None,
            ring_bytes: default_ring_bytes(),
            ring_s: default_ring_s(),
            masked_fps: default_masked_fps(),
        }
    }
}

impl ClipsConfig {
    /// Whether an event of `kind` gets a clip without being asked for one.
    pub fn wants(&self, kind: &str) -> bool {
        self.enabled
            && match &self.kinds {
                Some(kinds) => kinds.iter().any(|k| k == kind),
                None => kind != "object" && kind != "camera_offline",
            }
    }

    /// Every problem, as (key under `clips`, reason).
    pub(super) fn problems(&self, bad: &mut dyn FnMut(String, String)) {
        for (key, v, range) in [
            ("pre_s", self.pre_s, 0.0..=60.0),
            ("post_s", self.post_s, 0.0..=60.0),
            ("max_s", self.max_s, 1.0..=MAX_CLIP_S),
            ("ring_s", self.ring_s, 1.0..=600.0),
        ] {
            if !range.contains(&v) {
                bad(format!("clips.{key}"), format!("{v} is outside {}..={} seconds", range.start(), range.end()));
            }
        }
        if self.max_s < self.pre_s {
            bad(
                "clips.max_s".into(),
                format!(
                    "{} is shorter than pre_s ({}): the clip would end before the event starts",
                    self.max_s, self.pre_s
                ),
            );
        }
        if self.ring_s < self.pre_s {
            bad(
                "clips.ring_s".into(),
                format!("{} is shorter than pre_s ({}): the ring could not hold the pre-roll", self.ring_s, self.pre_s),
            );
        }
        if !RING_BYTES.contains(&self.ring_bytes) {
            bad(
                "clips.ring_bytes".into(),
                format!(
                    "{} is outside {}..={} bytes; 8388608 (8 MiB) holds about 15 s of a 4 Mbit/s camera",
                    self.ring_bytes,
                    RING_BYTES.start(),
                    RING_BYTES.end()
                ),
            );
        }
        if !(self.masked_fps >= 1.0 && self.masked_fps <= 30.0) {
            bad("clips.masked_fps".into(), format!("{} is outside 1..=30 frames a second", self.masked_fps));
        }
        for k in self.kinds.iter().flatten() {
            if k != "object" && !RULE_KINDS.contains(&k.as_str()) {
                bad(
                    "clips.kinds".into(),
                    format!("\"{k}\" is not an event kind; use object or one of {}", RULE_KINDS.join(", ")),
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_cover_every_rule_kind_but_offline_and_objects() {
        let c = ClipsConfig::default();
        assert!(c.wants("intrusion") && c.wants("tamper") && c.wants("abandoned"));
        assert!(!c.wants("camera_offline") && !c.wants("object"));
        let listed = ClipsConfig { kinds: Some(vec!["object".into()]), ..ClipsConfig::default() };
        assert!(listed.wants("object") && !listed.wants("intrusion"));
        assert!(!ClipsConfig { enabled: false, ..ClipsConfig::default() }.wants("intrusion"));
    }

    #[test]
    fn nonsense_is_named() {
        let c = ClipsConfig {
            pre_s: f64::NAN,
            max_s: 500.0,
            kinds: Some(vec!["unicorn".into()]),
            ring_bytes: 10,
            masked_fps: 0.0,
            ..ClipsConfig::default()
        };
        let mut keys = Vec::new();
        c.problems(&mut |k, _| keys.push(k));
        assert_eq!(keys, ["clips.pre_s", "clips.max_s", "clips.ring_bytes", "clips.masked_fps", "clips.kinds"]);
    }
}
