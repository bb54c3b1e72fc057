//! `[[cameras.lines]]`: counting lines (docs/rules.md), and `[stats]`: how often the
//! counts go out (contract 1.1, "Statistics").
//!
//! Promises: a loaded line has a valid name unique among the camera's lines, 2 to 32
//! points inside the frame, known labels, and an `in` side that is clearly off the
//! line's own direction (so which way is "in" is never a coin toss); `stats.period_s`
//! lies in 5..=86400.

use serde::{Deserialize, Serialize};

use super::Points;
use super::schedule::Schedule;
use crate::contract::check_id;
use crate::device::analysis::detect::Labels;

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LineConfig {
    /// Line id, same rule as zone names; the key in stats' `lines`.
    pub name: String,
    /// A polyline, `[x, y]` in 0..1 of the frame, at least 2 points.
    pub points: Points,
    #[serde(default = "default_person")]
    pub labels: Vec<String>,
    /// Which side of the line is `in`: an object crossing towards it counts `in`.
    pub direction: Side,
    pub alert: Option<LineAlert>,
}

/// A side of a line, as seen in the picture.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Side {
    Up,
    Down,
    Left,
    Right,
}

impl Side {
    /// A unit vector pointing that way in picture coordinates (y grows downwards).
    pub fn vector(self) -> (f32, f32) {
        match self {
            Side::Up => (0.0, -1.0),
            Side::Down => (0.0, 1.0),
            Side::Left => (-1.0, 0.0),
            Side::Right => (1.0, 0.0),
        }
    }
}

/// `[cameras.lines.alert]`: a `line_crossing` event per crossing.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LineAlert {
    #[serde(default)]
    pub direction: AlertDirection,
    /// Local time window, "HH:MM-HH:MM"; always when absent.
    pub schedule: Option<super::Parsed<Schedule>>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AlertDirection {
    In,
    Out,
    #[default]
    Any,
}

/// `[stats]`: the period of the stats messages.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct StatsConfig {
    #[serde(default = "default_period_s")]
    pub period_s: u64,
}

impl Default for StatsConfig {
    fn default() -> Self {
        StatsConfig { period_s: default_period_s() }
    }
}

fn default_period_s() -> u64 {
    300
}
fn default_person() -> Vec<String> {
    vec!["person".into()]
}

/// The `in` side must be at least this far (sine of the angle, 30 degrees) off the
/// line's own direction.
const MIN_SIDE_SINE: f32 = 0.5;

impl LineConfig {
    /// Every problem of this line, keys under `key` (`lines[0]`).
    pub(super) fn problems(&self, key: &str, labels: Option<&Labels>, bad: &mut dyn FnMut(String, String)) {
        let k = |s: &str| format!("{key}.{s}");
        if let Err(r) = check_id(&self.name) {
            bad(k("name"), r.0);
        }
        if !(2..=32).contains(&self.points.len()) {
            bad(k("points"), format!("has {} point(s); a line needs 2 to 32 [x, y] pairs", self.points.len()));
        }
        if let Some([x, y]) = self.points.iter().find(|[x, y]| !(0.0..=1.0).contains(x) || !(0.0..=1.0).contains(y)) {
            bad(k("points"), format!("[{x}, {y}] is outside the frame; coordinates are fractions 0..1"));
        }
        if self.labels.is_empty() {
            bad(k("labels"), "is empty; list at least one label, e.g. [\"person\"]".into());
        }
        for l in self.labels.iter().filter(|l| labels.is_some_and(|ls| ls.id(l).is_none())) {
            bad(k("labels"), format!("\"{l}\" is not a label the model knows (e.g. person, car, bicycle)"));
        }
        if self.points.len() >= 2 && self.side_sine().abs() < MIN_SIDE_SINE {
            let along = if self.runs_across() { "up or down" } else { "left or right" };
            bad(
                k("direction"),
                format!("\"{:?}\" lies along the line, not across it; name the `in` side as {along}", self.direction)
                    .to_lowercase(),
            );
        }
        if let Some(why) = self.alert.as_ref().and_then(|a| a.schedule.as_ref()).and_then(|s| s.problem()) {
            bad(k("alert.schedule"), why.to_owned());
        }
    }

    /// The sine of the angle from the line's overall direction (first to last point)
    /// to its `in` side: positive when `in` lies to the left-hand turn in picture
    /// coordinates' sense of the cross product.
    pub fn side_sine(&self) -> f32 {
        let (Some(a), Some(b)) = (self.points.first(), self.points.last()) else { return 0.0 };
        let (dx, dy) = (b[0] - a[0], b[1] - a[1]);
        let len = dx.hypot(dy);
        if len <= f32::EPSILON {
            return 0.0;
        }
        let (sx, sy) = self.direction.vector();
        (dx * sy - dy * sx) / len
    }

    /// Whether the line runs more left-right than up-down.
    fn runs_across(&self) -> bool {
        let (a, b) = (self.points[0], self.points[self.points.len() - 1]);
        (b[0] - a[0]).abs() >= (b[1] - a[1]).abs()
    }
}

impl StatsConfig {
    pub(super) fn problems(&self, bad: &mut dyn FnMut(String, String)) {
        if !(5..=86_400).contains(&self.period_s) {
            bad("stats.period_s".into(), format!("{} is outside 5..=86400 seconds; 300 is usual", self.period_s));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(points: Points, direction: Side) -> LineConfig {
        LineConfig { name: "gate".into(), points, labels: default_person(), direction, alert: None }
    }

    fn problems(l: &LineConfig) -> Vec<(String, String)> {
        let mut out = Vec::new();
        l.problems("lines[0]", Some(&Labels::builtin()), &mut |k, r| out.push((k, r)));
        out
    }

    #[test]
    fn the_in_side_must_lie_across_the_line() {
        let across = line(vec![[0.1, 0.5], [0.9, 0.5]], Side::Down);
        assert!(problems(&across).is_empty());
        assert!(across.side_sine() > 0.9, "down of a left-to-right line");
        assert!(line(vec![[0.9, 0.5], [0.1, 0.5]], Side::Down).side_sine() < -0.9, "drawn the other way");
        let along = problems(&line(vec![[0.1, 0.5], [0.9, 0.55]], Side::Left));
        assert_eq!(along.len(), 1, "{along:?}");
        assert_eq!(along[0].0, "lines[0].direction");
        assert!(along[0].1.contains("up or down"), "{along:?}");
    }

    #[test]
    fn bad_points_names_and_labels_are_all_reported() {
        let mut l = line(vec![[0.1, 0.5]], Side::Up);
        l.name = "Gate 1".into();
        l.labels = vec!["unicorn".into()];
        let keys: Vec<String> = problems(&l).into_iter().map(|p| p.0).collect();
        assert_eq!(keys, ["lines[0].name", "lines[0].points", "lines[0].labels"]);
        let outside = problems(&line(vec![[0.1, 0.5], [1.2, 0.5]], Side::Up));
        assert!(outside[0].1.contains("outside the frame"), "{outside:?}");
    }
}
