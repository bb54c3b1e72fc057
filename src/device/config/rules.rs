//! A camera's zones and the rules on them (`[[cameras.zones]]`), and the camera-wide
//! rules (`tamper`, `camera_offline`): see docs/rules.md.

use serde::{Deserialize, Serialize};

use super::camera::check_polygon;
use super::schedule::Schedule;
use super::{Parsed, Points};
use crate::contract::check_id;
use crate::device::analysis::detect::Labels;

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ZoneConfig {
    /// Zone id, same rule as camera ids; listed in events' `zones`.
    pub name: String,
    pub points: Points,
    /// Analysed frames in a row an object must be inside (outside) to enter (leave).
    #[serde(default = "default_inertia")]
    pub inertia: u32,
    pub intrusion: Option<IntrusionRule>,
    pub loitering: Option<LoiteringRule>,
    pub crowd: Option<CrowdRule>,
    pub occupation: Option<OccupationRule>,
    pub abandoned: Option<AbandonedRule>,
    pub person_down: Option<PersonDownRule>,
    pub inactivity: Option<InactivityRule>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct IntrusionRule {
    #[serde(default = "default_person")]
    pub labels: Vec<String>,
    /// Local time window, "HH:MM-HH:MM" (may span midnight), parsed at load; always when absent.
    pub schedule: Option<Parsed<Schedule>>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LoiteringRule {
    pub seconds: f64,
    #[serde(default = "default_person")]
    pub labels: Vec<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CrowdRule {
    pub count: u32,
    #[serde(default)]
    pub seconds: f64,
    #[serde(default = "default_person")]
    pub labels: Vec<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct OccupationRule {
    pub seconds: f64,
    #[serde(default = "default_vehicles")]
    pub labels: Vec<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AbandonedRule {
    pub seconds: f64,
    #[serde(default = "default_items")]
    pub labels: Vec<String>,
}

/// A person lying (box width / height at least `ratio`) where they fell for `seconds`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PersonDownRule {
    #[serde(default = "default_down_s")]
    pub seconds: f64,
    #[serde(default = "default_down_ratio")]
    pub ratio: f32,
}

/// Nobody seen in the zone for `seconds` within the daily `window`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct InactivityRule {
    /// Local time window, "HH:MM-HH:MM" (may span midnight), parsed at load.
    pub window: Parsed<Schedule>,
    pub seconds: f64,
    #[serde(default = "default_person")]
    pub labels: Vec<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TamperRule {
    #[serde(default = "default_tamper_s")]
    pub seconds: f64,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct OfflineRule {
    #[serde(default = "default_offline_s")]
    pub seconds: f64,
}

impl ZoneConfig {
    /// Every label a rule of this zone looks at.
    pub fn labels(&self) -> impl Iterator<Item = &String> {
        let i = self.intrusion.iter().flat_map(|r| &r.labels);
        let l = self.loitering.iter().flat_map(|r| &r.labels);
        let c = self.crowd.iter().flat_map(|r| &r.labels);
        let o = self.occupation.iter().flat_map(|r| &r.labels);
        let a = self.abandoned.iter().flat_map(|r| &r.labels);
        let n = self.inactivity.iter().flat_map(|r| &r.labels);
        // person_down is about persons only.
        let d = self.person_down.iter().flat_map(|_| PERSON.iter());
        i.chain(l).chain(c).chain(o).chain(a).chain(n).chain(d)
    }
}

static PERSON: std::sync::LazyLock<Vec<String>> = std::sync::LazyLock::new(default_person);

fn default_down_s() -> f64 {
    10.0
}
fn default_down_ratio() -> f32 {
    1.3
}
fn default_inertia() -> u32 {
    3
}
fn default_person() -> Vec<String> {
    vec!["person".into()]
}
fn default_vehicles() -> Vec<String> {
    ["car", "truck", "bus", "motorcycle", "bicycle"].map(String::from).to_vec()
}
fn default_items() -> Vec<String> {
    ["backpack", "handbag", "suitcase"].map(String::from).to_vec()
}
fn default_tamper_s() -> f64 {
    10.0
}
fn default_offline_s() -> f64 {
    30.0
}

impl ZoneConfig {
    /// Every problem of this zone, keys under `key` (`zones[1]`).
    pub(super) fn problems(&self, key: &str, labels: Option<&Labels>, bad: &mut dyn FnMut(String, String)) {
        let k = |s: &str| format!("{key}.{s}");
        let check_labels = |k: &str, list: &[String], bad: &mut dyn FnMut(String, String)| {
            if list.is_empty() {
                bad(k.into(), "is empty; list at least one label".into());
            }
            for l in list.iter().filter(|l| labels.is_some_and(|ls| ls.id(l).is_none())) {
                bad(k.into(), format!("\"{l}\" is not a label the model knows (e.g. person, car, truck, backpack)"));
            }
        };
        if let Err(r) = check_id(&self.name) {
            bad(k("name"), r.0);
        }
        if let Err(r) = check_polygon(&self.points) {
            bad(k("points"), r.0);
        }
        if !(1..=50).contains(&self.inertia) {
            bad(k("inertia"), format!("{} is outside 1..=50 frames", self.inertia));
        }
        if let Some(r) = &self.intrusion {
            check_labels(&k("intrusion.labels"), &r.labels, bad);
            if let Some(why) = r.schedule.as_ref().and_then(|s| s.problem()) {
                bad(k("intrusion.schedule"), why.to_owned());
            }
        }
        if let Some(r) = &self.loitering {
            check_labels(&k("loitering.labels"), &r.labels, bad);
            secs(&k("loitering.seconds"), r.seconds, bad);
        }
        if let Some(r) = &self.crowd {
            check_labels(&k("crowd.labels"), &r.labels, bad);
            secs(&k("crowd.seconds"), r.seconds, bad);
            if !(2..=1000).contains(&r.count) {
                bad(k("crowd.count"), format!("{} is not a crowd size; give 2 to 1000", r.count));
            }
        }
        if let Some(r) = &self.occupation {
            check_labels(&k("occupation.labels"), &r.labels, bad);
            secs(&k("occupation.seconds"), r.seconds, bad);
        }
        if let Some(r) = &self.abandoned {
            check_labels(&k("abandoned.labels"), &r.labels, bad);
            secs(&k("abandoned.seconds"), r.seconds, bad);
        }
        if let Some(r) = &self.person_down {
            secs(&k("person_down.seconds"), r.seconds, bad);
            if !(r.ratio.is_finite() && (1.0..=5.0).contains(&r.ratio)) {
                bad(k("person_down.ratio"), format!("{} is outside 1..=5 (box width / height); 1.3 is usual", r.ratio));
            }
        }
        if let Some(r) = &self.inactivity {
            check_labels(&k("inactivity.labels"), &r.labels, bad);
            if r.seconds < 1.0 {
                bad(k("inactivity.seconds"), format!("{} is below 1 second", r.seconds));
            }
            secs(&k("inactivity.seconds"), r.seconds, bad);
            if let Some(why) = r.window.problem() {
                bad(k("inactivity.window"), why.to_owned());
            }
        }
    }
}

/// A rule's duration: 0 to a day.
pub(super) fn secs(k: &str, v: f64, bad: &mut dyn FnMut(String, String)) {
    if !(v.is_finite() && (0.0..=86_400.0).contains(&v)) {
        bad(k.into(), format!("{v} is outside 0..=86400 seconds"));
    }
}
