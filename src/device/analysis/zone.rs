//! Zones and masks: polygons in normalised 0..1 frame coordinates, and which tracked
//! objects are in which zone.
//!
//! Promises: an object is in a zone when the bottom-centre of its box (where it stands)
//! is inside the polygon or on its border (a zone drawn to the frame's edge keeps a
//! person whose box that edge cuts: the box stands where it is cut); it enters after `inertia` analysed frames in a row inside and
//! leaves after `inertia` frames in a row outside, so a box that jitters across an edge
//! does not flicker in and out. Pure logic: no pictures, no clocks.

use std::collections::HashMap;

use crate::device::geometry::BBox;

/// A closed polygon, corners in 0..1 of the frame's width and height.
#[derive(Debug, Clone, PartialEq)]
pub struct Polygon(pub Vec<[f32; 2]>);

impl Polygon {
    /// True when (x, y), in 0..1 of the frame, lies inside (even-odd rule) or on the border.
    pub fn contains(&self, x: f32, y: f32) -> bool {
        self.on_border(x, y) || self.encloses(x, y)
    }

    fn on_border(&self, x: f32, y: f32) -> bool {
        // A thousandth of a pixel at 4K: rounding, not distance.
        const EPS: f32 = 1e-5;
        let p = &self.0;
        (0..p.len()).any(|i| {
            let ([ax, ay], [bx, by]) = (p[i], p[(i + 1) % p.len()]);
            let (dx, dy) = (bx - ax, by - ay);
            let len2 = dx * dx + dy * dy;
            let t = if len2 > 0.0 { (((x - ax) * dx + (y - ay) * dy) / len2).clamp(0.0, 1.0) } else { 0.0 };
            let (cx, cy) = (ax + t * dx - x, ay + t * dy - y);
            cx * cx + cy * cy <= EPS * EPS
        })
    }

    fn encloses(&self, x: f32, y: f32) -> bool {
        let p = &self.0;
        let mut inside = false;
        let mut j = p.len().wrapping_sub(1);
        for i in 0..p.len() {
            let ([xi, yi], [xj, yj]) = (p[i], p[j]);
            if (yi > y) != (yj > y) && x < (xj - xi) * (y - yi) / (yj - yi) + xi {
                inside = !inside;
            }
            j = i;
        }
        inside
    }

    /// The corners in pixels of a `w` x `h` picture.
    pub fn in_pixels(&self, w: u32, h: u32) -> Vec<(f32, f32)> {
        self.0.iter().map(|[x, y]| (x * w as f32, y * h as f32)).collect()
    }
}

/// Where an object stands: the bottom-centre of its box, in 0..1 of a `w` x `h` frame;
/// a box that runs past the frame's edge stands on the edge.
pub fn foot_point(b: &BBox, (w, h): (u32, u32)) -> (f32, f32) {
    let x = (b.x1 + b.x2) / 2.0 / w.max(1) as f32;
    let y = b.y2 / h.max(1) as f32;
    (x.clamp(0.0, 1.0), y.clamp(0.0, 1.0))
}

/// A named zone of one camera.
#[derive(Debug, Clone)]
pub struct Zone {
    pub name: String,
    pub polygon: Polygon,
    /// Frames in a row needed to enter or to leave.
    pub inertia: u32,
}

#[derive(Debug, Clone, Default)]
struct Presence {
    inside: bool,
    /// Frames in a row whose position disagrees with `inside`.
    streak: u32,
}

/// Which objects are in which zones, with inertia; keyed by track id.
#[derive(Debug, Default)]
pub struct ZoneMembership {
    state: HashMap<(u64, usize), Presence>,
}

impl ZoneMembership {
    /// Feeds one analysed frame's object positions (track id, box); returns, per track
    /// id, the indexes into `zones` of the zones it is in now. Tracks not given are
    /// forgotten.
    pub fn update(&mut self, zones: &[Zone], objects: &[(u64, BBox)], size: (u32, u32)) -> HashMap<u64, Vec<usize>> {
        let mut out: HashMap<u64, Vec<usize>> = HashMap::new();
        let ids: Vec<u64> = objects.iter().map(|o| o.0).collect();
        self.state.retain(|(id, _), _| ids.contains(id));
        for (id, b) in objects {
            let (x, y) = foot_point(b, size);
            let entry = out.entry(*id).or_default();
            for (zi, z) in zones.iter().enumerate() {
                let p = self.state.entry((*id, zi)).or_default();
                if z.polygon.contains(x, y) != p.inside {
                    p.streak += 1;
                    if p.streak >= z.inertia.max(1) {
                        p.inside = !p.inside;
                        p.streak = 0;
                    }
                } else {
                    p.streak = 0;
                }
                if p.inside {
                    entry.push(zi);
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn square() -> Polygon {
        Polygon(vec![[0.2, 0.2], [0.6, 0.2], [0.6, 0.6], [0.2, 0.6]])
    }

    #[test]
    fn a_person_cut_by_the_frames_edge_stays_in_a_zone_drawn_to_that_edge() {
        // The lower half of a 640x480 frame, drawn to its corners.
        let zone = Zone {
            name: "lane".into(),
            polygon: Polygon(vec![[0.0, 0.5], [1.0, 0.5], [1.0, 1.0], [0.0, 1.0]]),
            inertia: 2,
        };
        let mut m = ZoneMembership::default();
        let walking_down = |i: u32| {
            // Feet reach the bottom edge at frame 4, then the box is cut by it (and runs past it).
            let y2 = (400.0 + 20.0 * i as f32).min(480.0 + (i as f32 - 4.0).max(0.0));
            BBox { x1: 300.0, y1: y2 - 150.0, x2: 340.0, y2 }
        };
        let inside: Vec<bool> = (0..12)
            .map(|i| m.update(std::slice::from_ref(&zone), &[(1, walking_down(i))], (640, 480))[&1].contains(&0))
            .collect();
        assert_eq!(inside.iter().position(|&b| b), Some(1), "enters after inertia");
        assert!(inside[1..].iter().all(|&b| b), "never leaves while cut by the edge: {inside:?}");
        // Every corner and edge of a zone belongs to it.
        for (x, y) in [(0.0, 1.0), (1.0, 1.0), (0.5, 1.0), (0.0, 0.75), (1.0, 0.5)] {
            assert!(zone.polygon.contains(x, y), "({x}, {y})");
        }
    }

    #[test]
    fn point_in_polygon_even_odd() {
        let sq = square();
        assert!(sq.contains(0.4, 0.4));
        assert!(!sq.contains(0.1, 0.4) && !sq.contains(0.7, 0.4) && !sq.contains(0.4, 0.7));
        // A concave "L": the notch is outside.
        let l = Polygon(vec![[0.0, 0.0], [1.0, 0.0], [1.0, 0.2], [0.2, 0.2], [0.2, 1.0], [0.0, 1.0]]);
        assert!(l.contains(0.5, 0.1) && l.contains(0.1, 0.5));
        assert!(!l.contains(0.5, 0.5));
    }

    #[test]
    fn bottom_centre_counts_and_inertia_holds_for_frames() {
        let zones = [Zone { name: "z".into(), polygon: square(), inertia: 3 }];
        let mut m = ZoneMembership::default();
        let size = (100, 100);
        // Head inside, feet below the zone: not in it.
        let outside = BBox { x1: 35.0, y1: 30.0, x2: 45.0, y2: 70.0 };
        let inside = BBox { x1: 35.0, y1: 20.0, x2: 45.0, y2: 50.0 };
        assert!(m.update(&zones, &[(1, outside)], size)[&1].is_empty());
        let seq: Vec<bool> = [inside, inside, inside, outside, inside, outside, outside, outside]
            .iter()
            .map(|b| !m.update(&zones, &[(1, *b)], size)[&1].is_empty())
            .collect();
        assert_eq!(
            seq,
            [false, false, true, true, true, true, true, false],
            "enters on the 3rd frame in, leaves on the 3rd out"
        );
    }
}
