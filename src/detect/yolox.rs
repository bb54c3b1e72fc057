//! The arithmetic around a YOLOX model, free of any runtime: letterboxing a picture
//! into the model's input tensor, and decoding the raw grid output into boxes.
//!
//! Promises: `letterbox` reproduces Pillow's bilinear resize bit for bit (the
//! reference detections were computed with it) and allocates only when the source
//! size changes; `decode` returns boxes in source pixels, clipped to the source,
//! scoring above `min_score`; `nms` keeps the best box of each overlapping group
//! within a class and never suppresses across classes.

use image::RgbImage;

use super::{BBox, Detection};

/// Side of the square model input, in pixels.
pub const INPUT_SIZE: usize = 416;
/// Output strides of the YOLOX heads, in the order their grids appear in the output.
pub const STRIDES: [usize; 3] = [8, 16, 32];
/// Grey the letterbox pads with, as in YOLOX's own preprocessing.
pub const PAD_VALUE: f32 = 114.0;
/// Values per output row before the class probabilities: cx, cy, w, h, objectness.
pub const BOX_FIELDS: usize = 5;

/// Number of floats in one input tensor (1x3xSxS).
pub const fn input_len(size: usize) -> usize {
    3 * size * size
}

/// Number of output rows (grid cells over all strides) for a square input.
pub fn grid_rows(size: usize) -> usize {
    STRIDES.iter().map(|s| (size / s) * (size / s)).sum()
}

/// Where a source picture went in the model input.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Letterbox {
    /// Model pixels per source pixel.
    pub scale: f64,
    pub src_width: u32,
    pub src_height: u32,
    /// Size of the resized picture at the top-left of the input.
    pub width: u32,
    pub height: u32,
}

impl Letterbox {
    pub fn new(src_width: u32, src_height: u32, size: usize) -> Letterbox {
        let scale = (size as f64 / src_height as f64).min(size as f64 / src_width as f64);
        // Degenerate sources (a 5000x1 strip) must still cover at least one pixel.
        let fit = |v: u32| ((v as f64 * scale).round() as u32).max(1).min(size as u32);
        Letterbox { scale, src_width, src_height, width: fit(src_width), height: fit(src_height) }
    }
}

/// Buffers `letterbox` keeps between calls, so that a camera's frames, all the same
/// size, cost no allocation.
#[derive(Debug, Default)]
pub struct Scratch {
    /// (source w, source h, size) the coefficients below were made for.
    key: Option<(u32, u32, usize)>,
    horizontal: Coefficients,
    vertical: Coefficients,
    /// The source after the horizontal pass: src_height rows of `width` RGB pixels.
    rows: Vec<u8>,
    /// One output row of the vertical pass, before rounding.
    acc: Vec<i32>,
}

/// Fills `out` (1x3xSxS, S = `size`, BGR planes, 0..255) with `img` resized to fit,
/// at the top-left, the rest [`PAD_VALUE`]. Returns `None`, leaving `out` untouched,
/// for an empty picture or when `out` does not hold exactly `input_len(size)` floats.
pub fn letterbox(img: &RgbImage, size: usize, scratch: &mut Scratch, out: &mut [f32]) -> Option<Letterbox> {
    let (src_w, src_h) = img.dimensions();
    if size == 0 || out.len() != input_len(size) || src_w == 0 || src_h == 0 {
        return None;
    }
    let lb = Letterbox::new(src_w, src_h, size);
    if scratch.key != Some((src_w, src_h, size)) {
        scratch.horizontal = Coefficients::bilinear(src_w as usize, lb.width as usize);
        scratch.vertical = Coefficients::bilinear(src_h as usize, lb.height as usize);
        scratch.rows.resize(src_h as usize * lb.width as usize * 3, 0);
        scratch.key = Some((src_w, src_h, size));
    }
    let (dst_w, dst_h) = (lb.width as usize, lb.height as usize);

    // Pass 1, as Pillow: each source row resampled to the new width, rounded to 8 bits.
    let src_stride = src_w as usize * 3;
    let row_stride = dst_w * 3;
    for (src_row, row) in img.as_raw().chunks_exact(src_stride).zip(scratch.rows.chunks_exact_mut(row_stride)) {
        for (x, px) in row.chunks_exact_mut(3).enumerate() {
            let (first, weights) = scratch.horizontal.taps(x);
            let mut acc = [ROUNDING; 3];
            for (p, &k) in src_row[first * 3..].chunks_exact(3).zip(weights) {
                for c in 0..3 {
                    acc[c] += p[c] as i32 * k;
                }
            }
            for c in 0..3 {
                px[c] = clip8(acc[c]);
            }
        }
    }

    // Pass 2: whole rows blended at once (vectorises), then written into the tensor.
    out.fill(PAD_VALUE);
    let plane = size * size;
    scratch.acc.resize(row_stride, 0);
    for y in 0..dst_h {
        let (first, weights) = scratch.vertical.taps(y);
        scratch.acc.fill(ROUNDING);
        for (src, &k) in scratch.rows[first * row_stride..].chunks_exact(row_stride).zip(weights) {
            for (a, &v) in scratch.acc.iter_mut().zip(src) {
                *a += v as i32 * k;
            }
        }
        // The model was trained on OpenCV's BGR order: RGB channel c goes to plane 2 - c.
        for (x, px) in scratch.acc.chunks_exact(3).enumerate() {
            for c in 0..3 {
                out[(2 - c) * plane + y * size + x] = clip8(px[c]) as f32;
            }
        }
    }
    Some(lb)
}

/// Fixed-point precision of Pillow's 8-bit resampler.
const PRECISION_BITS: u32 = 32 - 8 - 2;
const ROUNDING: i32 = 1 << (PRECISION_BITS - 1);

fn clip8(acc: i32) -> u8 {
    (acc >> PRECISION_BITS).clamp(0, 255) as u8
}

/// Pillow's resampling weights along one axis: for every output pixel, the first
/// source pixel it reads and fixed-point weights of the `ksize` pixels from there.
#[derive(Debug, Default)]
struct Coefficients {
    ksize: usize,
    /// (first source pixel, number of taps) per output pixel.
    bounds: Vec<(usize, usize)>,
    weights: Vec<i32>,
}

impl Coefficients {
    /// Transcribes `precompute_coeffs` + `normalize_coeffs_8bpc` of Pillow's
    /// Resample.c for the bilinear (triangle) filter, support 1.
    fn bilinear(in_size: usize, out_size: usize) -> Coefficients {
        let scale = in_size as f64 / out_size as f64;
        // Downscaling widens the filter: that is what keeps it from aliasing.
        let filter_scale = scale.max(1.0);
        let support = filter_scale;
        // Pillow multiplies by the reciprocal; dividing instead can differ in the last bit.
        let ss = 1.0 / filter_scale;
        let ksize = support.ceil() as usize * 2 + 1;
        let mut bounds = Vec::with_capacity(out_size);
        let mut weights = vec![0; out_size * ksize];
        let mut k = vec![0.0f64; ksize];
        for (xx, row) in weights.chunks_exact_mut(ksize).enumerate() {
            let center = (xx as f64 + 0.5) * scale;
            // C's (int) cast truncates toward zero; only non-negative values survive the clamp.
            let xmin = ((center - support + 0.5) as i64).max(0) as usize;
            let xmax = (((center + support + 0.5) as i64).max(0) as usize).min(in_size);
            let taps = xmax.saturating_sub(xmin).min(ksize);
            let mut total = 0.0;
            for (x, w) in k.iter_mut().enumerate().take(taps) {
                *w = triangle((x as f64 + xmin as f64 - center + 0.5) * ss);
                total += *w;
            }
            for (x, out) in row.iter_mut().enumerate().take(taps) {
                let w = if total != 0.0 { k[x] / total } else { k[x] };
                let fixed = w * (1i64 << PRECISION_BITS) as f64;
                *out = if w < 0.0 { (fixed - 0.5) as i32 } else { (fixed + 0.5) as i32 };
            }
            bounds.push((xmin, taps));
        }
        Coefficients { ksize, bounds, weights }
    }

    fn taps(&self, out_pixel: usize) -> (usize, &[i32]) {
        let (first, n) = self.bounds[out_pixel];
        let start = out_pixel * self.ksize;
        (first, &self.weights[start..start + n])
    }
}

fn triangle(x: f64) -> f64 {
    let x = x.abs();
    if x < 1.0 { 1.0 - x } else { 0.0 }
}

/// The raw output did not have the layout the model promised at load.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("model output has {got} values; expected {rows} rows of {row_len}")]
pub struct OutputShapeError {
    pub got: usize,
    pub rows: usize,
    pub row_len: usize,
}

/// Turns the raw output (rows of cx, cy, log w, log h, objectness, class
/// probabilities; grids of strides 8, 16, 32 in turn, each y-major) into detections
/// in source pixels scoring above `min_score`. No NMS: see [`nms`].
pub fn decode(
    output: &[f32],
    row_len: usize,
    lb: &Letterbox,
    size: usize,
    min_score: f32,
) -> Result<Vec<Detection>, OutputShapeError> {
    let rows = grid_rows(size);
    if row_len <= BOX_FIELDS || output.len() != rows * row_len {
        return Err(OutputShapeError { got: output.len(), rows, row_len });
    }
    let cells = STRIDES.iter().flat_map(|&s| {
        let g = size / s;
        (0..g * g).map(move |i| ((i % g) as f32, (i / g) as f32, s as f32))
    });
    let (max_x, max_y) = (lb.src_width as f32, lb.src_height as f32);
    let scale = lb.scale as f32;
    let mut found = Vec::new();
    for (row, (gx, gy, stride)) in output.chunks_exact(row_len).zip(cells) {
        let objectness = row[4];
        // A class probability is at most 1, so this row cannot score higher.
        if objectness <= min_score {
            continue;
        }
        let Some((class_id, &p)) = row[BOX_FIELDS..].iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)) else {
            continue;
        };
        let score = objectness * p;
        if score <= min_score {
            continue;
        }
        let cx = (row[0] + gx) * stride;
        let cy = (row[1] + gy) * stride;
        let w = row[2].exp() * stride;
        let h = row[3].exp() * stride;
        let bbox = BBox {
            x1: ((cx - w / 2.0) / scale).clamp(0.0, max_x),
            y1: ((cy - h / 2.0) / scale).clamp(0.0, max_y),
            x2: ((cx + w / 2.0) / scale).clamp(0.0, max_x),
            y2: ((cy + h / 2.0) / scale).clamp(0.0, max_y),
        };
        found.push(Detection { class_id, score, bbox });
    }
    Ok(found)
}

/// Greedy non-maximum suppression within each class: best first, a box is dropped
/// when it overlaps an already kept box of its class by more than `iou`. The result
/// is sorted by score, best first.
pub fn nms(mut dets: Vec<Detection>, iou: f32) -> Vec<Detection> {
    dets.sort_by(|a, b| b.score.total_cmp(&a.score));
    let mut kept: Vec<Detection> = Vec::with_capacity(dets.len());
    for d in dets {
        if !kept.iter().any(|k| k.class_id == d.class_id && k.bbox.iou(&d.bbox) > iou) {
            kept.push(d);
        }
    }
    kept
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::Rgb;

    fn run(img: &RgbImage) -> (Letterbox, Vec<f32>) {
        let mut out = vec![0.0; input_len(INPUT_SIZE)];
        let lb = letterbox(img, INPUT_SIZE, &mut Scratch::default(), &mut out).expect("letterbox");
        (lb, out)
    }

    fn at(out: &[f32], plane: usize, x: usize, y: usize) -> f32 {
        out[plane * INPUT_SIZE * INPUT_SIZE + y * INPUT_SIZE + x]
    }

    #[test]
    fn letterbox_geometry_follows_the_longer_side() {
        let lb = Letterbox::new(768, 576, 416);
        assert_eq!((lb.width, lb.height), (416, 312));
        let lb = Letterbox::new(1352, 900, 416);
        assert_eq!((lb.width, lb.height), (416, 277), "900 * 416/1352 = 276.9 rounds up");
        let lb = Letterbox::new(300, 600, 416);
        assert_eq!((lb.width, lb.height), (208, 416));
        assert!((lb.scale - 416.0 / 600.0).abs() < 1e-12);
        let lb = Letterbox::new(5000, 1, 416);
        assert_eq!((lb.width, lb.height), (416, 1), "never zero pixels");
    }

    #[test]
    fn letterbox_places_top_left_pads_114_and_swaps_to_bgr() {
        let img = RgbImage::from_pixel(768, 576, Rgb([10, 20, 30]));
        let (lb, out) = run(&img);
        assert_eq!((lb.width, lb.height), (416, 312));
        // Uniform colour survives any resampling exactly; planes are B, G, R.
        for (x, y) in [(0, 0), (415, 0), (200, 311)] {
            assert_eq!([at(&out, 0, x, y), at(&out, 1, x, y), at(&out, 2, x, y)], [30.0, 20.0, 10.0]);
        }
        for (x, y) in [(0, 312), (415, 415)] {
            assert_eq!([at(&out, 0, x, y), at(&out, 1, x, y), at(&out, 2, x, y)], [114.0; 3], "padding at {x},{y}");
        }
    }

    #[test]
    fn letterbox_pads_on_the_right_for_portrait_pictures() {
        let img = RgbImage::from_pixel(300, 600, Rgb([0, 255, 0]));
        let (_, out) = run(&img);
        assert_eq!(at(&out, 1, 207, 100), 255.0);
        assert_eq!(at(&out, 1, 208, 100), 114.0);
        assert_eq!(at(&out, 0, 207, 415), 0.0);
    }

    #[test]
    fn letterbox_matches_pillow_on_a_gradient() {
        // A 2:1 reduction worked by hand with Pillow's bilinear kernel (scale 2,
        // support 2). Output 0, centre 1.0: sources 0..=2 weigh 0.75, 0.75, 0.25 ->
        // (0*0.75 + 100*0.75 + 200*0.25) / 1.75 = 71.4. Output 1, centre 3.0: sources
        // 1..=4 weigh 0.25, 0.75, 0.75, 0.25 -> (25 + 150 + 187.5 + 0) / 2 = 181.25.
        let mut img = RgbImage::new(416 * 2, 2);
        for (x, _, p) in img.enumerate_pixels_mut() {
            *p = Rgb([[0, 100, 200, 250][x as usize % 4]; 3]);
        }
        let (lb, out) = run(&img);
        assert_eq!((lb.width, lb.height), (416, 1));
        assert_eq!([at(&out, 0, 0, 0), at(&out, 0, 1, 0)], [71.0, 181.0]);
    }

    #[test]
    fn letterbox_rejects_a_wrong_buffer_and_empty_pictures() {
        let mut short = vec![0.0; 10];
        assert!(letterbox(&RgbImage::new(8, 8), INPUT_SIZE, &mut Scratch::default(), &mut short).is_none());
        let mut out = vec![0.0; input_len(INPUT_SIZE)];
        assert!(letterbox(&RgbImage::new(0, 0), INPUT_SIZE, &mut Scratch::default(), &mut out).is_none());
    }

    #[test]
    fn scratch_is_reused_and_rebuilt_when_the_size_changes() {
        let mut scratch = Scratch::default();
        let mut out = vec![0.0; input_len(INPUT_SIZE)];
        letterbox(&RgbImage::from_pixel(640, 480, Rgb([1, 2, 3])), INPUT_SIZE, &mut scratch, &mut out).unwrap();
        let lb = letterbox(&RgbImage::from_pixel(100, 50, Rgb([7, 8, 9])), INPUT_SIZE, &mut scratch, &mut out).unwrap();
        assert_eq!((lb.width, lb.height), (416, 208));
        assert_eq!(at(&out, 2, 415, 207), 7.0);
        assert_eq!(at(&out, 2, 415, 208), 114.0, "no leftovers from the taller picture before");
    }

    /// An output tensor of zeros with one hand-placed row.
    fn output_with(stride: usize, gx: usize, gy: usize, row: &[f32]) -> Vec<f32> {
        let row_len = 85;
        let mut out = vec![0.0; grid_rows(INPUT_SIZE) * row_len];
        let before: usize = STRIDES.iter().take_while(|&&s| s != stride).map(|s| (INPUT_SIZE / s).pow(2)).sum();
        let g = INPUT_SIZE / stride;
        let i = (before + gy * g + gx) * row_len;
        out[i..i + row.len()].copy_from_slice(row);
        out
    }

    #[test]
    fn decode_places_a_box_from_its_grid_cell() {
        // Stride 16, cell (10, 5); offsets 0.5 -> centre (168, 88); w = e^0 * 16 * 4.
        let mut row = vec![0.5, 0.5, 4f32.ln(), 2f32.ln(), 0.9];
        row.extend((0..80).map(|c| if c == 2 { 0.8 } else { 0.1 }));
        let out = output_with(16, 10, 5, &row);
        let lb = Letterbox::new(832, 624, INPUT_SIZE); // scale 0.5
        let dets = decode(&out, 85, &lb, INPUT_SIZE, 0.3).unwrap();
        assert_eq!(dets.len(), 1);
        let d = &dets[0];
        assert_eq!(d.class_id, 2);
        assert!((d.score - 0.72).abs() < 1e-6);
        // In model pixels: x 136..200, y 72..104; source is twice that.
        let b = d.bbox;
        for (got, want) in [(b.x1, 272.0), (b.y1, 144.0), (b.x2, 400.0), (b.y2, 208.0)] {
            assert!((got - want).abs() < 1e-3, "{b:?}");
        }
    }

    #[test]
    fn decode_clips_to_the_source_and_honours_min_score() {
        // A huge box at the last stride-32 cell runs off the bottom-right corner.
        let mut row = vec![0.9, 0.9, 3.0, 3.0, 0.5];
        row.extend((0..80).map(|c| if c == 0 { 0.7 } else { 0.0 }));
        let out = output_with(32, 12, 12, &row);
        let lb = Letterbox::new(768, 576, INPUT_SIZE);
        let dets = decode(&out, 85, &lb, INPUT_SIZE, 0.3).unwrap();
        assert_eq!(dets.len(), 1);
        assert_eq!((dets[0].bbox.x2, dets[0].bbox.y2), (768.0, 576.0));
        assert!(decode(&out, 85, &lb, INPUT_SIZE, 0.35).unwrap().is_empty(), "0.5 * 0.7 = 0.35 is not above 0.35");
    }

    #[test]
    fn decode_rejects_a_wrong_shape() {
        let lb = Letterbox::new(416, 416, INPUT_SIZE);
        let e = decode(&[0.0; 850], 85, &lb, INPUT_SIZE, 0.3).unwrap_err();
        assert_eq!(e, OutputShapeError { got: 850, rows: 3549, row_len: 85 });
    }

    fn det(class_id: usize, score: f32, x1: f32) -> Detection {
        Detection { class_id, score, bbox: BBox { x1, y1: 0.0, x2: x1 + 100.0, y2: 100.0 } }
    }

    #[test]
    fn nms_is_per_class_and_greedy() {
        let dets = vec![
            det(0, 0.6, 10.0), // overlaps the 0.9 person by 0.82: suppressed
            det(0, 0.9, 0.0),
            det(16, 0.5, 0.0), // same place, other class: survives
            det(0, 0.4, 80.0), // overlaps the 0.9 person by 0.11: survives
        ];
        let kept = nms(dets, 0.45);
        let summary: Vec<(usize, f32)> = kept.iter().map(|d| (d.class_id, d.score)).collect();
        assert_eq!(summary, [(0, 0.9), (16, 0.5), (0, 0.4)]);
    }
}
