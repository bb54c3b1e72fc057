//! The motion gate: a cheap luma-difference motion detector on a small grey copy of
//! each frame, so that a still scene costs almost no inference.
//!
//! Promises: `observe` costs one pass over the frame (about 160 px wide grey image);
//! a pixel is changed when it differs from a running-average background by more than
//! `threshold`; isolated changed pixels (noise, compression) do not count, only pixels
//! in cells with several changed neighbours; `moving` holds when the changed area is at
//! least `min_area` of the frame. A sudden change of most of the picture (IR switch,
//! lights, exposure jump) is not motion: the background is taken anew from that frame.

use crate::device::config::MotionConfig;
use crate::device::geometry::BBox;
use crate::device::ingest::Yuv420;

/// Width of the grey picture motion and tamper checks work on.
const GREY_WIDTH: u32 = 160;
/// Side of the square cells changed pixels are counted in.
const CELL: usize = 4;
/// Changed pixels a cell needs before they count (of CELL * CELL).
const CELL_MIN: usize = 4;
/// Share of the picture that, changed at once, means a global change, not motion.
const GLOBAL_CHANGE: f32 = 0.5;
/// How fast the background follows the picture: an object that stops melts into it
/// in about 1 / BG_ALPHA frames.
const BG_ALPHA: f32 = 0.05;

/// A small grey (luma) copy of a frame, averaged over blocks (which also cuts noise).
#[derive(Debug, Clone)]
pub struct Grey {
    pub width: usize,
    pub height: usize,
    pub data: Vec<u8>,
    /// Frame pixels per grey pixel.
    pub step: u32,
}

impl Grey {
    /// Block means of the picture's luma, on the 0..255 scale.
    pub fn from_picture(pic: &Yuv420) -> Grey {
        let step = pic.width().div_ceil(GREY_WIDTH).max(1);
        let (width, height) = ((pic.width() / step) as usize, (pic.height() / step) as usize);
        let (luma, stride, step) = (pic.y(), pic.width() as usize, step as usize);
        let mut data = Vec::with_capacity(width * height);
        let mut sums = vec![0u32; width];
        for gy in 0..height {
            sums.fill(0);
            for row in luma[gy * step * stride..].chunks(stride).take(step) {
                for (sum, block) in sums.iter_mut().zip(row.chunks_exact(step)) {
                    *sum += block.iter().map(|&v| u32::from(v)).sum::<u32>();
                }
            }
            let n = (step * step) as u32;
            data.extend(sums.iter().map(|&s| pic.luma_full((s / n) as u8)));
        }
        Grey { width, height, data, step: step as u32 }
    }
}

/// What one frame showed.
#[derive(Debug, Clone)]
pub struct Motion {
    /// Something moved (enough changed area).
    pub moving: bool,
    /// The background was taken anew (first frame, or a global change).
    pub recalibrated: bool,
    /// Changed share of the picture, 0..1.
    pub fraction: f32,
    /// Per cell (row-major, `cols` wide): changed pixels that count.
    cells: Vec<bool>,
    cols: usize,
    cell_px: u32,
}

impl Motion {
    /// Whether any counted change lies inside `b` (frame pixels).
    pub fn moving_in(&self, b: &BBox) -> bool {
        if self.cols == 0 {
            return false;
        }
        let rows = self.cells.len() / self.cols;
        let c = |v: f32, max: usize| ((v.max(0.0) as u32 / self.cell_px) as usize).min(max.saturating_sub(1));
        let (x1, x2, y1, y2) = (c(b.x1, self.cols), c(b.x2, self.cols), c(b.y1, rows), c(b.y2, rows));
        (y1..=y2).any(|y| (x1..=x2).any(|x| self.cells[y * self.cols + x]))
    }
}

pub struct MotionDetector {
    threshold: f32,
    min_area: f32,
    background: Vec<f32>,
}

impl MotionDetector {
    pub fn new(cfg: &MotionConfig) -> MotionDetector {
        MotionDetector { threshold: f32::from(cfg.threshold), min_area: cfg.min_area, background: Vec::new() }
    }

    pub fn observe(&mut self, grey: &Grey) -> Motion {
        let (w, h) = (grey.width, grey.height);
        let (cols, rows) = (w / CELL, h / CELL);
        let cell_px = grey.step * CELL as u32;
        if self.background.len() != grey.data.len() {
            self.background = grey.data.iter().map(|&v| f32::from(v)).collect();
            return Motion {
                moving: false,
                recalibrated: true,
                fraction: 0.0,
                cells: vec![false; cols * rows],
                cols,
                cell_px,
            };
        }
        let changed: Vec<bool> =
            grey.data.iter().zip(&self.background).map(|(&v, &b)| (f32::from(v) - b).abs() > self.threshold).collect();
        let raw = changed.iter().filter(|c| **c).count() as f32 / changed.len().max(1) as f32;
        if raw > GLOBAL_CHANGE {
            self.background = grey.data.iter().map(|&v| f32::from(v)).collect();
            return Motion {
                moving: false,
                recalibrated: true,
                fraction: raw,
                cells: vec![false; cols * rows],
                cols,
                cell_px,
            };
        }
        let mut cells = vec![false; cols * rows];
        let mut counted = 0usize;
        for cy in 0..rows {
            for cx in 0..cols {
                let n = (0..CELL)
                    .flat_map(|dy| (0..CELL).map(move |dx| (cy * CELL + dy) * w + cx * CELL + dx))
                    .filter(|&i| changed[i])
                    .count();
                if n >= CELL_MIN {
                    cells[cy * cols + cx] = true;
                    counted += n;
                }
            }
        }
        for (b, &v) in self.background.iter_mut().zip(&grey.data) {
            *b += BG_ALPHA * (f32::from(v) - *b);
        }
        let fraction = counted as f32 / (w * h).max(1) as f32;
        Motion { moving: counted > 0 && fraction >= self.min_area, recalibrated: false, fraction, cells, cols, cell_px }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{Rgb, RgbImage};

    fn grey(img: &RgbImage) -> Grey {
        Grey::from_picture(&Yuv420::from_rgb(img))
    }

    fn scene(person_x: Option<u32>, light: u8) -> RgbImage {
        let mut img = RgbImage::from_fn(640, 480, |x, y| {
            let v = ((x / 40 + y / 40) % 2) as u8 * 40 + light;
            Rgb([v, v, v])
        });
        if let Some(px) = person_x {
            for y in 200..360 {
                for x in px..px + 50 {
                    img.put_pixel(x, y, Rgb([220, 30, 30]));
                }
            }
        }
        img
    }

    #[test]
    fn still_scene_is_quiet_walker_moves_light_switch_recalibrates() {
        let mut m = MotionDetector::new(&MotionConfig::default());
        let first = m.observe(&grey(&scene(None, 60)));
        assert!(first.recalibrated && !first.moving);
        for _ in 0..5 {
            assert!(!m.observe(&grey(&scene(None, 60))).moving, "a still scene is still");
        }
        let walk = m.observe(&grey(&scene(Some(100), 60)));
        assert!(walk.moving, "fraction {}", walk.fraction);
        assert!(walk.moving_in(&BBox { x1: 90.0, y1: 190.0, x2: 160.0, y2: 370.0 }));
        assert!(!walk.moving_in(&BBox { x1: 400.0, y1: 50.0, x2: 460.0, y2: 150.0 }));
        // IR switch: everything brighter at once.
        let ir = m.observe(&grey(&scene(Some(100), 160)));
        assert!(ir.recalibrated && !ir.moving);
        assert!(!m.observe(&grey(&scene(Some(100), 160))).moving, "new background holds");
    }

    #[test]
    fn a_stopped_object_melts_into_the_background() {
        let mut m = MotionDetector::new(&MotionConfig::default());
        m.observe(&grey(&scene(None, 60)));
        let parked = grey(&scene(Some(300), 60));
        let moving: Vec<bool> = (0..120).map(|_| m.observe(&parked).moving).collect();
        assert!(moving[0]);
        assert!(!moving[119], "after 120 frames a parked object is background");
    }
}
