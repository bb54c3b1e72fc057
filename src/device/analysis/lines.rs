//! Counting lines: which tracked objects cross a camera's lines, and which way.
//!
//! Promises: an object counts once per crossing of its path (the bottom-centre of its
//! box, where it stands) over the line, in the direction it went. A crossing needs the
//! object to have been clearly on one side (beyond a band around the line as wide as
//! a fifth of its own height), then clearly on the other, with its path between the
//! two cutting the line: a box jittering on the line never counts twice, and walking
//! round the end of a line is no crossing. Crossings of a track that is not yet
//! confirmed wait, and count once it is confirmed (having moved); a track that never
//! is confirmed counts nothing. Pure logic: no pictures, no clocks.

use std::collections::HashMap;

use crate::device::analysis::rules::TrackView;
use crate::device::analysis::zone::foot_point;
use crate::device::config::{AlertDirection, LineConfig, Schedule};
use crate::device::geometry::BBox;

/// Half the width of the band around a line, as a fraction of the object's height:
/// a box's bottom edge jitters by a few percent of its height from frame to frame.
const BAND: f32 = 0.1;
/// The band is never narrower than this fraction of the picture's height (a tiny, far
/// object's box jitters by whole pixels).
const MIN_BAND: f32 = 0.004;

/// One line as the counter uses it.
#[derive(Debug, Clone)]
pub struct Line {
    pub name: String,
    /// Polyline corners in 0..1 of the frame.
    points: Vec<[f32; 2]>,
    pub classes: Vec<usize>,
    /// The side (sign of `side_of`) that is `in`.
    in_sign: f32,
    pub alert: Option<(AlertDirection, Option<Schedule>)>,
}

impl Line {
    /// The line of `cfg`, its labels resolved to `classes` (validated by config).
    pub fn new(cfg: &LineConfig, classes: Vec<usize>) -> Line {
        Line {
            name: cfg.name.clone(),
            points: cfg.points.clone(),
            classes,
            in_sign: cfg.side_sine().signum(),
            alert: cfg.alert.as_ref().map(|a| (a.direction, a.schedule.as_ref().map(|s| *s.get()))),
        }
    }

    fn in_pixels(&self, (w, h): (u32, u32)) -> Vec<(f32, f32)> {
        self.points.iter().map(|[x, y]| (x * w as f32, y * h as f32)).collect()
    }
}

/// One crossing, counted.
#[derive(Debug, Clone, PartialEq)]
pub struct Crossing {
    /// Index of the line.
    pub line: usize,
    pub track: u64,
    pub class_id: usize,
    /// Towards the line's `in` side.
    pub inward: bool,
    pub bbox: BBox,
    pub score: f32,
}

/// Where one track stands relative to one line.
#[derive(Debug, Clone, Default)]
struct Side {
    /// The side it was last clearly on (-1, 1), 0 before it ever was.
    clear: i8,
    /// Its path (pixels) since it was last clearly on a side, that point first.
    path: Vec<(f32, f32)>,
}

#[derive(Debug, Default)]
struct TrackLines {
    sides: Vec<Side>,
    /// Crossings made before the track was confirmed.
    waiting: Vec<Crossing>,
}

/// One camera's lines and where each track stands.
#[derive(Debug, Default)]
pub struct LineCounter {
    lines: Vec<Line>,
    tracks: HashMap<u64, TrackLines>,
}

impl LineCounter {
    pub fn new(lines: Vec<Line>) -> LineCounter {
        LineCounter { lines, tracks: HashMap::new() }
    }

    pub fn lines(&self) -> &[Line] {
        &self.lines
    }

    /// Takes in an analysed frame's tracks (every one, tentative too); returns the
    /// crossings that count now. Tracks not given are forgotten.
    pub fn observe(&mut self, tracks: &[TrackView], size: (u32, u32)) -> Vec<Crossing> {
        self.tracks.retain(|id, _| tracks.iter().any(|t| t.id == *id));
        if self.lines.is_empty() {
            return Vec::new();
        }
        let lines: Vec<Vec<(f32, f32)>> = self.lines.iter().map(|l| l.in_pixels(size)).collect();
        let mut out = Vec::new();
        for t in tracks {
            let (fx, fy) = foot_point(&t.bbox, size);
            let foot = (fx * size.0 as f32, fy * size.1 as f32);
            let band = (BAND * t.bbox.height()).max(MIN_BAND * size.1 as f32);
            let state = self.tracks.entry(t.id).or_default();
            state.sides.resize(self.lines.len(), Side::default());
            for (li, line) in self.lines.iter().enumerate() {
                if !line.classes.contains(&t.class_id) {
                    continue;
                }
                let Some(to) = step(&mut state.sides[li], &lines[li], foot, band) else { continue };
                let inward = to as f32 == line.in_sign;
                let c = Crossing { line: li, track: t.id, class_id: t.class_id, inward, bbox: t.bbox, score: t.score };
                state.waiting.push(c);
            }
            if t.confirmed {
                out.append(&mut state.waiting);
            }
        }
        out
    }
}

/// Moves a track's foot to `foot`; returns the side it crossed to, if it just crossed.
fn step(side: &mut Side, line: &[(f32, f32)], foot: (f32, f32), band: f32) -> Option<i8> {
    let d = signed_distance(line, foot);
    side.path.push(foot);
    if d.abs() <= band {
        return None;
    }
    let now = if d > 0.0 { 1 } else { -1 };
    let crossed = side.clear != 0 && side.clear != now && path_cuts(&side.path, line);
    side.clear = now;
    side.path.clear();
    side.path.push(foot);
    crossed.then_some(now)
}

/// Distance from `p` to the polyline, signed by the side of its nearest segment
/// (positive: to the left-hand side in the cross product's sense, as `LineConfig`).
fn signed_distance(line: &[(f32, f32)], p: (f32, f32)) -> f32 {
    let mut best = (f32::INFINITY, 0.0);
    for w in line.windows(2) {
        let ((ax, ay), (bx, by)) = (w[0], w[1]);
        let (dx, dy) = (bx - ax, by - ay);
        let len2 = (dx * dx + dy * dy).max(f32::EPSILON);
        let t = (((p.0 - ax) * dx + (p.1 - ay) * dy) / len2).clamp(0.0, 1.0);
        let dist = (ax + t * dx - p.0).hypot(ay + t * dy - p.1);
        if dist < best.0 {
            let cross = dx * (p.1 - ay) - dy * (p.0 - ax);
            best = (dist, cross);
        }
    }
    best.0.copysign(if best.1 == 0.0 { 1.0 } else { best.1 })
}

/// Whether any step of `path` cuts any segment of `line`.
fn path_cuts(path: &[(f32, f32)], line: &[(f32, f32)]) -> bool {
    path.windows(2).any(|p| line.windows(2).any(|l| segments_cross(p[0], p[1], l[0], l[1])))
}

fn segments_cross(a: (f32, f32), b: (f32, f32), c: (f32, f32), d: (f32, f32)) -> bool {
    let orient = |p: (f32, f32), q: (f32, f32), r: (f32, f32)| (q.0 - p.0) * (r.1 - p.1) - (q.1 - p.1) * (r.0 - p.0);
    let (o1, o2) = (orient(a, b, c), orient(a, b, d));
    let (o3, o4) = (orient(c, d, a), orient(c, d, b));
    // Touching counts: a foot that lands exactly on the line and goes on crossed it.
    o1 * o2 <= 0.0 && o3 * o4 <= 0.0 && (o1 != 0.0 || o2 != 0.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::config::{LineConfig, Side as InSide};

    const SIZE: (u32, u32) = (1000, 1000);

    /// A vertical line at x = 0.5 from y = 0.2 to 0.8, `in` on the right.
    fn counter() -> LineCounter {
        let cfg = LineConfig {
            name: "gate".into(),
            points: vec![[0.5, 0.2], [0.5, 0.8]],
            labels: vec!["person".into()],
            direction: InSide::Right,
            alert: None,
        };
        LineCounter::new(vec![Line::new(&cfg, vec![0])])
    }

    /// A person 100 px tall whose feet are at (x, y) in pixels.
    fn at(id: u64, x: f32, y: f32, confirmed: bool) -> TrackView {
        let bbox = BBox { x1: x - 20.0, y1: y - 100.0, x2: x + 20.0, y2: y };
        TrackView { id, class_id: 0, bbox, score: 0.8, confirmed, established: confirmed, missed: false }
    }

    fn walk(c: &mut LineCounter, xs: &[f32], y: f32, confirmed_from: usize) -> Vec<bool> {
        let mut out = Vec::new();
        for (i, x) in xs.iter().enumerate() {
            out.extend(c.observe(&[at(1, *x, y, i >= confirmed_from)], SIZE).into_iter().map(|c| c.inward));
        }
        out
    }

    #[test]
    fn one_count_per_crossing_in_its_direction() {
        let mut c = counter();
        let xs: Vec<f32> = (0..20).map(|i| 300.0 + 20.0 * i as f32).collect();
        assert_eq!(walk(&mut c, &xs, 500.0, 3), [true], "left to right is in");
        let back: Vec<f32> = xs.iter().rev().copied().collect();
        assert_eq!(walk(&mut c, &back, 500.0, 0), [false], "and back is out");
    }

    #[test]
    fn jitter_on_the_line_counts_once_and_a_fast_step_still_counts() {
        let mut c = counter();
        // Up to the line, 4 px either side of it for a while, then on.
        let mut xs = vec![400.0, 450.0, 480.0];
        xs.extend((0..20).map(|i| if i % 2 == 0 { 496.0 } else { 504.0 }));
        xs.extend([520.0, 560.0]);
        assert_eq!(walk(&mut c, &xs, 500.0, 0), [true]);
        // From far left to far right between two analysed frames.
        let mut c = counter();
        assert_eq!(walk(&mut c, &[300.0, 310.0, 700.0], 500.0, 0), [true]);
    }

    #[test]
    fn round_the_end_or_never_confirmed_is_no_crossing() {
        let mut c = counter();
        // Below the line's end (y = 900 > 800): from left to right.
        let xs: Vec<f32> = (0..20).map(|i| 300.0 + 20.0 * i as f32).collect();
        assert!(walk(&mut c, &xs, 900.0, 0).is_empty());
        let mut c = counter();
        assert!(walk(&mut c, &xs, 500.0, 99).is_empty(), "a track never confirmed");
        // Crossed while tentative, confirmed later: counted then, once.
        let mut c = counter();
        let mut got = walk(&mut c, &xs[..12], 500.0, 99);
        got.extend(c.observe(&[at(1, 560.0, 500.0, true)], SIZE).into_iter().map(|c| c.inward));
        got.extend(c.observe(&[at(1, 580.0, 500.0, true)], SIZE).into_iter().map(|c| c.inward));
        assert_eq!(got, [true]);
    }

    #[test]
    fn a_bent_line_counts_across_each_part() {
        // An L: down the middle, then right along y = 0.8; `in` is up-right of it.
        let cfg = LineConfig {
            name: "corner".into(),
            points: vec![[0.5, 0.2], [0.5, 0.8], [0.9, 0.8]],
            labels: vec!["person".into()],
            direction: InSide::Right,
            alert: None,
        };
        let mut c = LineCounter::new(vec![Line::new(&cfg, vec![0])]);
        let xs: Vec<f32> = (0..20).map(|i| 300.0 + 20.0 * i as f32).collect();
        assert_eq!(walk(&mut c, &xs, 500.0, 0), [true]);
        // Walking down across the horizontal part at x = 700: from the inside out.
        let mut got = Vec::new();
        for i in 0..20 {
            let t = at(2, 700.0, 600.0 + 20.0 * i as f32, true);
            got.extend(c.observe(&[t], SIZE).into_iter().map(|c| c.inward));
        }
        assert_eq!(got, [false]);
    }
}
