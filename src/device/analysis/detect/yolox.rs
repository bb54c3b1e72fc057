//! The arithmetic around a YOLOX model, free of any runtime: letterboxing a picture
//! into the model's input tensor, and decoding the raw grid output into boxes.
//!
//! Promises: `letterbox` resizes as Pillow's bilinear filter does, within one level
//! (the reference detections were computed with Pillow), and allocates only when
//! the source size changes; `decode` returns boxes in source pixels, clipped to the
//! region the model saw,
//! scoring above `min_score`; `nms` keeps the best box of each overlapping group
//! within a class and never suppresses across classes.

use image::RgbImage;

use super::Detection;
use crate::device::geometry::BBox;
use crate::device::ingest::{Yuv420, YuvToRgb};

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

/// A rectangle of a picture, in its pixels: what the model is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Region {
    pub left: u32,
    pub top: u32,
    pub width: u32,
    pub height: u32,
}

impl Region {
    /// The whole of a `width` x `height` picture.
    pub fn whole(width: u32, height: u32) -> Region {
        Region { left: 0, top: 0, width, height }
    }
}

/// Where a region of the source picture went in the model input.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Letterbox {
    /// Model pixels per source pixel.
    pub scale: f64,
    /// The part of the source the model saw (all of it, or a crop).
    pub region: Region,
    /// Size of the resized region at the top-left of the input.
    pub width: u32,
    pub height: u32,
    /// How the input was turned after letterboxing (`turn_input`), if it was.
    pub turn: Option<Turn>,
}

/// A quarter turn of the model's input: a person lying across the picture stands
/// upright in it, as the model (trained on upright people) knows them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Turn {
    Clockwise,
    Anticlockwise,
}

impl Turn {
    pub const BOTH: [Turn; 2] = [Turn::Clockwise, Turn::Anticlockwise];

    /// Where the point (`x`, `y`) of the turned square input of side `size` was before
    /// the turn.
    fn undo(self, (x, y): (f32, f32), size: f32) -> (f32, f32) {
        match self {
            Turn::Clockwise => (y, size - x),
            Turn::Anticlockwise => (size - y, x),
        }
    }
}

/// Writes `input` (1x3xSxS, S = `size`) turned a quarter into `out`.
pub fn turn_input(input: &[f32], out: &mut [f32], size: usize, turn: Turn) {
    let plane = size * size;
    for (src, dst) in input.chunks_exact(plane).zip(out.chunks_exact_mut(plane)) {
        for (y, row) in dst.chunks_exact_mut(size).enumerate() {
            for (x, v) in row.iter_mut().enumerate() {
                *v = match turn {
                    Turn::Clockwise => src[(size - 1 - x) * size + y],
                    Turn::Anticlockwise => src[x * size + (size - 1 - y)],
                };
            }
        }
    }
}

impl Letterbox {
    pub fn new(src_width: u32, src_height: u32, size: usize) -> Letterbox {
        Letterbox::of_region(Region::whole(src_width, src_height), size)
    }

    pub fn of_region(region: Region, size: usize) -> Letterbox {
        let (w, h) = (region.width, region.height);
        let scale = (size as f64 / h as f64).min(size as f64 / w as f64);
        // Degenerate sources (a 5000x1 strip) must still cover at least one pixel.
        let fit = |v: u32| ((v as f64 * scale).round() as u32).max(1).min(size as u32);
        Letterbox { scale, region, width: fit(w), height: fit(h), turn: None }
    }
}

/// A picture the model can be shown: packed RGB (photos) or a decoder's 4:2:0 planes
/// (camera frames, read as they are).
#[derive(Debug, Clone, Copy)]
pub enum Source<'a> {
    Rgb(&'a RgbImage),
    Yuv(&'a Yuv420),
}

impl Source<'_> {
    pub fn dimensions(&self) -> (u32, u32) {
        match self {
            Source::Rgb(img) => img.dimensions(),
            Source::Yuv(pic) => pic.dimensions(),
        }
    }
}

impl<'a> From<&'a RgbImage> for Source<'a> {
    fn from(img: &'a RgbImage) -> Self {
        Source::Rgb(img)
    }
}

impl<'a> From<&'a Yuv420> for Source<'a> {
    fn from(pic: &'a Yuv420) -> Self {
        Source::Yuv(pic)
    }
}

/// Buffers `letterbox` keeps between calls, so that a camera's frames, all the same
/// size, cost no allocation.
#[derive(Default)]
pub struct Scratch {
    resizer: fast_image_resize::Resizer,
    /// The resized region before it is spread into the tensor's planes: RGB, or the
    /// luma and the two chroma planes.
    resized: [Vec<u8>; 3],
}

impl std::fmt::Debug for Scratch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scratch").finish_non_exhaustive()
    }
}

/// Fills `out` (1x3xSxS, S = `size`, BGR planes, 0..255) with the picture resized to
/// fit, at the top-left, the rest [`PAD_VALUE`]. Returns `None`, leaving `out`
/// untouched, for an empty picture or when `out` does not hold exactly
/// `input_len(size)` floats.
pub fn letterbox<'a>(
    src: impl Into<Source<'a>>,
    size: usize,
    scratch: &mut Scratch,
    out: &mut [f32],
) -> Option<Letterbox> {
    let src = src.into();
    let (w, h) = src.dimensions();
    letterbox_region(src, Region::whole(w, h), size, scratch, out)
}

/// As [`letterbox`], for `region` of the picture only (at the model's full resolution:
/// how a far, small part of a wide view is seen in detail). `None` also when the
/// region is empty or not inside the picture.
pub fn letterbox_region<'a>(
    src: impl Into<Source<'a>>,
    region: Region,
    size: usize,
    scratch: &mut Scratch,
    out: &mut [f32],
) -> Option<Letterbox> {
    use fast_image_resize::PixelType;
    let src = src.into();
    let (src_w, src_h) = src.dimensions();
    let inside = region.left.checked_add(region.width).is_some_and(|r| r <= src_w)
        && region.top.checked_add(region.height).is_some_and(|b| b <= src_h);
    if size == 0 || out.len() != input_len(size) || region.width == 0 || region.height == 0 || !inside {
        return None;
    }
    let lb = Letterbox::of_region(region, size);
    let (dst_w, dst_h) = (lb.width as usize, lb.height as usize);
    let crop = [region.left, region.top, region.width, region.height].map(f64::from);
    let [a, b, c] = &mut scratch.resized;
    match src {
        Source::Rgb(img) => {
            resize(
                &mut scratch.resizer,
                (img.as_raw(), src_w, src_h),
                PixelType::U8x3,
                crop,
                (a, (lb.width, lb.height)),
            )?;
            spread_rows(out, size, dst_w, dst_h, |y, [pb, pg, pr]| {
                let row = a[y * dst_w * 3..(y + 1) * dst_w * 3].chunks_exact(3);
                for (((px, b), g), r) in row.zip(pb.iter_mut()).zip(pg.iter_mut()).zip(pr.iter_mut()) {
                    (*r, *g, *b) = (f32::from(px[0]), f32::from(px[1]), f32::from(px[2]));
                }
            });
        }
        Source::Yuv(pic) => {
            // Chroma is resized at its own half size (the costly horizontal pass then
            // runs on a quarter of the pixels); each of its samples serves the 2x2 luma
            // pixels it covers, as in the source.
            let (cw, ch) = Yuv420::chroma_size(src_w, src_h);
            let (dcw, dch) = Yuv420::chroma_size(lb.width, lb.height);
            let half = crop.map(|v| v / 2.0);
            let luma_size = (lb.width, lb.height);
            resize(&mut scratch.resizer, (pic.y(), src_w, src_h), PixelType::U8, crop, (a, luma_size))?;
            resize(&mut scratch.resizer, (pic.u(), cw, ch), PixelType::U8, half, (b, (dcw, dch)))?;
            resize(&mut scratch.resizer, (pic.v(), cw, ch), PixelType::U8, half, (c, (dcw, dch)))?;
            let convert = YuvToRgb::new(pic.colorimetry);
            let dcw = dcw as usize;
            spread_rows(out, size, dst_w, dst_h, |y, [pb, pg, pr]| {
                let chroma = (y / 2) * dcw..(y / 2 + 1) * dcw;
                convert.row(&a[y * dst_w..(y + 1) * dst_w], &b[chroma.clone()], &c[chroma], [pr, pg, pb]);
            });
        }
    }
    Some(lb)
}

/// Bilinear with the kernel widened by the reduction, as Pillow's (which made the
/// reference detections): SIMD, and within one level of Pillow's result.
fn resize(
    resizer: &mut fast_image_resize::Resizer,
    (data, w, h): (&[u8], u32, u32),
    pixel: fast_image_resize::PixelType,
    [left, top, width, height]: [f64; 4],
    (dst, (dst_w, dst_h)): (&mut Vec<u8>, (u32, u32)),
) -> Option<()> {
    use fast_image_resize::{FilterType, ResizeAlg, ResizeOptions, images};
    let src = images::ImageRef::new(w, h, data, pixel).ok()?;
    dst.resize(dst_w as usize * dst_h as usize * pixel.size(), 0);
    let mut out = images::Image::from_slice_u8(dst_w, dst_h, dst, pixel).ok()?;
    let options =
        ResizeOptions::new().resize_alg(ResizeAlg::Convolution(FilterType::Bilinear)).crop(left, top, width, height);
    resizer.resize(&src, &mut out, &options).ok()
}

/// Fills the top-left `w` x `h` of the tensor's B, G and R planes row by row with
/// `fill(y, [b, g, r])` (each `w` wide), and pads the rest. BGR: the model was
/// trained on OpenCV's channel order.
fn spread_rows(out: &mut [f32], size: usize, w: usize, h: usize, mut fill: impl FnMut(usize, [&mut [f32]; 3])) {
    let plane = size * size;
    let (b, rest) = out.split_at_mut(plane);
    let (g, r) = rest.split_at_mut(plane);
    for (y, ((b, g), r)) in
        b.chunks_exact_mut(size).zip(g.chunks_exact_mut(size)).zip(r.chunks_exact_mut(size)).enumerate()
    {
        let (w, rows) = if y < h { (w, [b, g, r]) } else { (0, [b, g, r]) };
        let [(b, bpad), (g, gpad), (r, rpad)] = rows.map(|p| p.split_at_mut(w));
        if w > 0 {
            fill(y, [b, g, r]);
        }
        [bpad, gpad, rpad].into_iter().for_each(|p| p.fill(PAD_VALUE));
    }
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
    let r = lb.region;
    let (left, top) = (r.left as f32, r.top as f32);
    let (right, bottom) = (left + r.width as f32, top + r.height as f32);
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
        let (mut cx, mut cy) = ((row[0] + gx) * stride, (row[1] + gy) * stride);
        let (mut w, mut h) = (row[2].exp() * stride, row[3].exp() * stride);
        if let Some(t) = lb.turn {
            (cx, cy) = t.undo((cx, cy), size as f32);
            (w, h) = (h, w);
        }
        let bbox = BBox {
            x1: (left + (cx - w / 2.0) / scale).clamp(left, right),
            y1: (top + (cy - h / 2.0) / scale).clamp(top, bottom),
            x2: (left + (cx + w / 2.0) / scale).clamp(left, right),
            y2: (top + (cy + h / 2.0) / scale).clamp(top, bottom),
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

    fn run<'a>(img: impl Into<Source<'a>>) -> (Letterbox, Vec<f32>) {
        let mut out = vec![0.0; input_len(INPUT_SIZE)];
        let lb = letterbox(img, INPUT_SIZE, &mut Scratch::default(), &mut out).expect("letterbox");
        (lb, out)
    }

    fn at(out: &[f32], plane: usize, x: usize, y: usize) -> f32 {
        out[plane * INPUT_SIZE * INPUT_SIZE + y * INPUT_SIZE + x]
    }

    #[test]
    fn a_turned_input_maps_back_to_where_each_pixel_was() {
        let size = 8;
        let input: Vec<f32> = (0..input_len(size)).map(|i| i as f32).collect();
        for turn in Turn::BOTH {
            let mut turned = vec![0.0; input.len()];
            turn_input(&input, &mut turned, size, turn);
            for (i, v) in turned[..size * size].iter().enumerate() {
                let (x, y) = ((i % size) as f32 + 0.5, (i / size) as f32 + 0.5);
                let (ox, oy) = turn.undo((x, y), size as f32);
                let was = (oy - 0.5) as usize * size + (ox - 0.5) as usize;
                assert_eq!(*v, input[was], "{turn:?} pixel {i}");
            }
            let mut back = vec![0.0; input.len()];
            let other = if turn == Turn::Clockwise { Turn::Anticlockwise } else { Turn::Clockwise };
            turn_input(&turned, &mut back, size, other);
            assert_eq!(back, input, "{turn:?} then {other:?} is no turn");
        }
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
    fn letterbox_follows_pillows_kernel_on_a_gradient() {
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
        let got = [at(&out, 0, 0, 0), at(&out, 0, 1, 0)];
        assert!((got[0] - 71.0).abs() <= 1.0 && (got[1] - 181.0).abs() <= 1.0, "{got:?}");
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

    #[test]
    fn a_region_is_shown_at_full_resolution_and_boxes_come_back_in_picture_pixels() {
        // A red 208x104 patch in a blue picture: shown alone, doubled to 416x208 (the
        // outermost model pixels blend in the picture around the region, as they should).
        let mut img = RgbImage::from_pixel(1000, 800, Rgb([0, 0, 255]));
        for y in 400..504 {
            for x in 500..708 {
                img.put_pixel(x, y, Rgb([255, 0, 0]));
            }
        }
        let region = Region { left: 500, top: 400, width: 208, height: 104 };
        let mut out = vec![0.0; input_len(INPUT_SIZE)];
        let lb = letterbox_region(&img, region, INPUT_SIZE, &mut Scratch::default(), &mut out).unwrap();
        assert_eq!((lb.scale, lb.width, lb.height), (2.0, 416, 208));
        for (x, y) in [(2, 2), (413, 205), (200, 100)] {
            assert_eq!([at(&out, 0, x, y), at(&out, 2, x, y)], [0.0, 255.0], "red at {x},{y}");
        }
        assert_eq!(at(&out, 1, 10, 208), 114.0);
        let outside = Region { left: 900, top: 0, width: 208, height: 10 };
        assert!(letterbox_region(&img, outside, INPUT_SIZE, &mut Scratch::default(), &mut out).is_none());

        // Stride 16, cell (10, 5) -> model x 136..200, y 72..104: half that, plus the
        // region's corner; a box running off the region is cut at its edge.
        let mut row = vec![0.5, 0.5, 4f32.ln(), 2f32.ln(), 0.9, 0.8];
        row.resize(85, 0.0);
        let dets = decode(&output_with(16, 10, 5, &row), 85, &lb, INPUT_SIZE, 0.3).unwrap();
        let b = dets[0].bbox;
        for (got, want) in [(b.x1, 568.0), (b.y1, 436.0), (b.x2, 600.0), (b.y2, 452.0)] {
            assert!((got - want).abs() < 1e-3, "{b:?}");
        }
        let mut big = vec![0.9, 0.9, 3.0, 3.0, 0.9, 0.8];
        big.resize(85, 0.0);
        let dets = decode(&output_with(32, 12, 12, &big), 85, &lb, INPUT_SIZE, 0.3).unwrap();
        assert_eq!((dets[0].bbox.x2, dets[0].bbox.y2), (708.0, 504.0));
    }

    #[test]
    fn a_camera_frame_in_4_2_0_gives_the_model_what_its_rgb_would() {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/reference/frames/vtest_f0100.png");
        let img = crate::device::analysis::detect::picture::read_rgb(&path).expect("reference frame");
        let pic = Yuv420::from_rgb(&img);
        let mean_difference =
            |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| (x - y).abs()).sum::<f32>() / a.len() as f32;
        let (rgb, yuv) = (run(&img).1, run(&pic).1);
        // Chroma at half resolution blurs colour edges a little; nothing more.
        let mean = mean_difference(&rgb, &yuv);
        assert!(mean < 1.5, "mean difference {mean}");
        assert_eq!(yuv[input_len(INPUT_SIZE) - 1], PAD_VALUE);
        // A region works the same way on 4:2:0 (odd corners, so half-pixel chroma crops).
        let region = Region { left: 101, top: 51, width: 301, height: 201 };
        let mut outs = [vec![0.0; input_len(INPUT_SIZE)], vec![0.0; input_len(INPUT_SIZE)]];
        let [from_rgb, from_yuv] = &mut outs;
        let lb = letterbox_region(&img, region, INPUT_SIZE, &mut Scratch::default(), from_rgb).unwrap();
        assert_eq!(Some(lb), letterbox_region(&pic, region, INPUT_SIZE, &mut Scratch::default(), from_yuv));
        assert_eq!((lb.width, lb.height), (416, 278));
        let mean = mean_difference(from_rgb, from_yuv);
        assert!(mean < 1.5, "region: mean difference {mean}");
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
