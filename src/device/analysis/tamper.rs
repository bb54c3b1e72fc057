//! Camera tamper signs in one frame: the view blocked or blacked out, badly out of
//! focus, or turned away from what it showed.
//!
//! Promises: `observe` compares the grey frame with what this camera looked like while
//! it was normal: a learned sharpness (mean absolute Laplacian) and a learned reference
//! picture. It says which sign it sees, if any; how long a sign must last is the rule's
//! business (rules/camera.rs). It learns only from normal frames, so a camera covered
//! for an hour does not make covered the new normal.

use crate::device::analysis::motion::Grey;

/// Below this luma spread the picture holds nothing: covered, black, or sprayed.
const BLOCKED_STDDEV: f32 = 6.0;
/// Sharpness below this share of the learned one means defocused (or a smeared lens).
const DEFOCUS_RATIO: f32 = 0.45;
/// Correlation with the reference picture below this means the view changed.
const MOVED_CORRELATION: f32 = 0.45;
/// Normal frames needed before the learned values are trusted.
const WARM_UP: u32 = 5;
const LEARN_ALPHA: f32 = 0.02;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TamperSign {
    Blocked,
    Defocused,
    Moved,
}

impl TamperSign {
    pub fn as_str(self) -> &'static str {
        match self {
            TamperSign::Blocked => "blocked",
            TamperSign::Defocused => "defocused",
            TamperSign::Moved => "moved",
        }
    }
}

#[derive(Default)]
pub struct TamperDetector {
    sharpness: f32,
    reference: Vec<f32>,
    learned: u32,
}

impl TamperDetector {
    pub fn new() -> TamperDetector {
        TamperDetector::default()
    }

    pub fn observe(&mut self, g: &Grey) -> Option<TamperSign> {
        let n = g.data.len().max(1) as f32;
        let mean = g.data.iter().map(|&v| f32::from(v)).sum::<f32>() / n;
        let std = (g.data.iter().map(|&v| (f32::from(v) - mean).powi(2)).sum::<f32>() / n).sqrt();
        if std < BLOCKED_STDDEV {
            return Some(TamperSign::Blocked);
        }
        let sharp = sharpness(g);
        if self.reference.len() != g.data.len() {
            self.reference = g.data.iter().map(|&v| f32::from(v)).collect();
            self.sharpness = sharp;
            self.learned = 1;
            return None;
        }
        let trusted = self.learned >= WARM_UP;
        let sign = if trusted && sharp < DEFOCUS_RATIO * self.sharpness {
            Some(TamperSign::Defocused)
        } else if trusted && correlation(&g.data, &self.reference) < MOVED_CORRELATION {
            Some(TamperSign::Moved)
        } else {
            None
        };
        if sign.is_none() {
            let a = if trusted { LEARN_ALPHA } else { 1.0 / (self.learned + 1) as f32 };
            self.sharpness += a * (sharp - self.sharpness);
            for (r, &v) in self.reference.iter_mut().zip(&g.data) {
                *r += a * (f32::from(v) - *r);
            }
            self.learned += 1;
        }
        sign
    }
}

/// Mean absolute 4-neighbour Laplacian: high for fine detail, low when blurred.
fn sharpness(g: &Grey) -> f32 {
    let (w, h) = (g.width, g.height);
    if w < 3 || h < 3 {
        return 0.0;
    }
    let at = |x: usize, y: usize| i32::from(g.data[y * w + x]);
    let mut sum = 0u64;
    for y in 1..h - 1 {
        for x in 1..w - 1 {
            sum += (4 * at(x, y) - at(x - 1, y) - at(x + 1, y) - at(x, y - 1) - at(x, y + 1)).unsigned_abs() as u64;
        }
    }
    sum as f32 / ((w - 2) * (h - 2)) as f32
}

/// Pearson correlation of two pictures of the same size: lighting changes keep it
/// high, a different view drops it.
fn correlation(a: &[u8], b: &[f32]) -> f32 {
    let n = a.len().max(1) as f32;
    let ma = a.iter().map(|&v| f32::from(v)).sum::<f32>() / n;
    let mb = b.iter().sum::<f32>() / n;
    let (mut sab, mut saa, mut sbb) = (0f32, 0f32, 0f32);
    for (&x, &y) in a.iter().zip(b) {
        let (dx, dy) = (f32::from(x) - ma, y - mb);
        sab += dx * dy;
        saa += dx * dx;
        sbb += dy * dy;
    }
    if saa <= 0.0 || sbb <= 0.0 { 0.0 } else { sab / (saa * sbb).sqrt() }
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{Rgb, RgbImage};

    fn grey(f: impl Fn(u32, u32) -> u8) -> Grey {
        Grey::from_picture(&crate::device::ingest::Yuv420::from_rgb(&RgbImage::from_fn(640, 480, |x, y| {
            let v = f(x, y);
            Rgb([v, v, v])
        })))
    }

    fn street(x: u32, y: u32) -> u8 {
        (((x / 12) * 7 + (y / 9) * 13) % 200) as u8 + 20
    }

    #[test]
    fn normal_blocked_defocused_moved() {
        let mut t = TamperDetector::new();
        for _ in 0..10 {
            assert_eq!(t.observe(&grey(street)), None);
        }
        assert_eq!(t.observe(&grey(|_, _| 3)), Some(TamperSign::Blocked));
        // Out of focus: the light stays, the detail goes.
        let blurred = grey(|x, y| ((x + y) / 8) as u8 + 20);
        assert_eq!(t.observe(&blurred), Some(TamperSign::Defocused));
        let turned = grey(|x, y| (((x / 9) * 13 + (y / 12) * 7) % 200) as u8 + 20);
        assert_eq!(t.observe(&turned), Some(TamperSign::Moved));
        assert_eq!(t.observe(&grey(street)), None, "back to normal");
    }
}
