//! Pictures that leave the device: boxes and zone outlines drawn onto a frame, privacy
//! masks, JPEG encoding within a size cap.
//!
//! Promises: drawing never panics for boxes partly or wholly outside the image;
//! `encode_jpeg` returns a baseline JPEG the `image` crate (and any browser) decodes.
//! `Renderer::render` blacks out every privacy mask last, after all drawing, so no
//! pixel of a masked area ever leaves the device; its JPEG is at most `max_bytes`
//! (quality lowered first, then the picture scaled down).

use image::{Rgb, RgbImage};

use crate::device::analysis::Polygon;
use crate::device::config::{CameraConfig, SnapshotConfig};
use crate::device::geometry::BBox;

/// Colour for boxes of tracked objects.
pub const BOX_COLOR: Rgb<u8> = Rgb([255, 64, 32]);
/// Colour for zone outlines.
pub const ZONE_COLOR: Rgb<u8> = Rgb([255, 220, 0]);
/// Quality is not lowered below this; the picture is made smaller instead.
const MIN_QUALITY: u8 = 40;

/// A finished snapshot.
#[derive(Debug, Clone)]
pub struct Rendered {
    pub jpeg: Vec<u8>,
    pub width: u32,
    pub height: u32,
}

/// How one camera's snapshots are made.
#[derive(Debug, Clone)]
pub struct Renderer {
    privacy: Vec<Polygon>,
    quality: u8,
    max_bytes: usize,
    crop: bool,
}

impl Renderer {
    pub fn new(cam: &CameraConfig) -> Renderer {
        Renderer {
            privacy: cam.privacy_masks.iter().map(|m| Polygon(m.points.clone())).collect(),
            quality: cam.snapshot.quality,
            max_bytes: cam.snapshot.max_bytes,
            crop: cam.snapshot.crop,
        }
    }

    /// A renderer without masks or crop, `quality` and the default size cap.
    pub fn plain(quality: u8) -> Renderer {
        Renderer { privacy: Vec::new(), quality, max_bytes: SnapshotConfig::default().max_bytes, crop: false }
    }

    /// Draws `outlines` and `boxes` (frame pixels) on `pic`, blacks out the privacy
    /// masks, crops if asked, and encodes within the size cap.
    pub fn render(&self, mut pic: RgbImage, boxes: &[BBox], outlines: &[&Polygon]) -> Rendered {
        let (width, height) = pic.dimensions();
        for z in outlines {
            draw_polygon(&mut pic, &z.in_pixels(width, height), ZONE_COLOR);
        }
        for b in boxes {
            draw_box(&mut pic, b, BOX_COLOR);
        }
        for m in &self.privacy {
            fill_polygon(&mut pic, m);
        }
        if self.crop
            && let Some((x, y, w, h)) = crop_region(boxes, width, height)
        {
            pic = image::imageops::crop_imm(&pic, x, y, w, h).to_image();
        }
        self.encode_capped(pic)
    }

    fn encode_capped(&self, mut pic: RgbImage) -> Rendered {
        let mut quality = self.quality;
        loop {
            let jpeg = encode_jpeg(&pic, quality);
            if jpeg.len() <= self.max_bytes || pic.width() < 64 {
                return Rendered { jpeg, width: pic.width(), height: pic.height() };
            }
            if quality > MIN_QUALITY {
                quality = quality.saturating_sub(10).max(MIN_QUALITY);
            } else {
                let (w, h) = (pic.width() * 3 / 4, pic.height() * 3 / 4);
                pic = image::imageops::resize(&pic, w.max(1), h.max(1), image::imageops::FilterType::Triangle);
            }
        }
    }
}

/// The part of a `w` x `h` frame to send for `boxes`: their union with a margin of half
/// its size on each side, at least a third of the frame each way.
fn crop_region(boxes: &[BBox], w: u32, h: u32) -> Option<(u32, u32, u32, u32)> {
    let first = boxes.first()?;
    let u = boxes.iter().fold(*first, |a, b| BBox {
        x1: a.x1.min(b.x1),
        y1: a.y1.min(b.y1),
        x2: a.x2.max(b.x2),
        y2: a.y2.max(b.y2),
    });
    let (fw, fh) = (w as f32, h as f32);
    let cw = (u.width() * 2.0).max(fw / 3.0).min(fw);
    let ch = (u.height() * 2.0).max(fh / 3.0).min(fh);
    let cx = ((u.x1 + u.x2) / 2.0 - cw / 2.0).clamp(0.0, fw - cw);
    let cy = ((u.y1 + u.y2) / 2.0 - ch / 2.0).clamp(0.0, fh - ch);
    Some((cx as u32, cy as u32, (cw as u32).max(1), (ch as u32).max(1)))
}

/// Paints the inside of `poly` (normalised) black; a pixel is inside when its centre is.
pub fn fill_polygon(img: &mut RgbImage, poly: &Polygon) {
    for (y, x0, x1) in polygon_spans(poly, img.width(), img.height()) {
        for x in x0..=x1 {
            img.put_pixel(x, y, Rgb([0, 0, 0]));
        }
    }
}

/// The runs of pixels `(row, first, last)` inside `poly` (normalised) on a `w` x `h`
/// picture; a pixel is inside when its centre is (even-odd rule).
pub fn polygon_spans(poly: &Polygon, w: u32, h: u32) -> Vec<(u32, u32, u32)> {
    let pts = poly.in_pixels(w, h);
    let mut spans = Vec::new();
    for y in 0..h {
        let yc = y as f32 + 0.5;
        // Crossings of this row with the edges, then the runs between pairs.
        let mut xs: Vec<f32> = Vec::new();
        for i in 0..pts.len() {
            let (a, b) = (pts[i], pts[(i + 1) % pts.len()]);
            if (a.1 > yc) != (b.1 > yc) {
                xs.push(a.0 + (yc - a.1) / (b.1 - a.1) * (b.0 - a.0));
            }
        }
        xs.sort_by(f32::total_cmp);
        for pair in xs.chunks_exact(2) {
            let x0 = (pair[0] - 0.5).ceil().max(0.0) as u32;
            let x1 = (pair[1] - 0.5).floor().min(w as f32 - 1.0);
            if x1 >= 0.0 && x0 <= x1 as u32 {
                spans.push((y, x0, x1 as u32));
            }
        }
    }
    spans
}

/// Draws the closed outline through `pts` (pixels).
pub fn draw_polygon(img: &mut RgbImage, pts: &[(f32, f32)], color: Rgb<u8>) {
    let t = thickness_for(img) as i64;
    let (w, h) = (img.width() as i64, img.height() as i64);
    for i in 0..pts.len() {
        let (a, b) = (pts[i], pts[(i + 1) % pts.len()]);
        let steps = (b.0 - a.0).abs().max((b.1 - a.1).abs()).ceil().max(1.0) as i64;
        for s in 0..=steps {
            let f = s as f32 / steps as f32;
            let (x, y) = ((a.0 + (b.0 - a.0) * f) as i64, (a.1 + (b.1 - a.1) * f) as i64);
            for dy in -(t / 2)..t - t / 2 {
                for dx in -(t / 2)..t - t / 2 {
                    let (px, py) = (x + dx, y + dy);
                    if (0..w).contains(&px) && (0..h).contains(&py) {
                        img.put_pixel(px as u32, py as u32, color);
                    }
                }
            }
        }
    }
}

/// Line thickness that stays visible after JPEG compression at the sizes we send.
fn thickness_for(img: &RgbImage) -> u32 {
    (img.width().max(img.height()) / 320).clamp(2, 6)
}

/// Draws the outline of `bbox` (pixel coordinates) onto `img`, clipped to the image.
pub fn draw_box(img: &mut RgbImage, bbox: &BBox, color: Rgb<u8>) {
    let (w, h) = (img.width() as i64, img.height() as i64);
    if w == 0 || h == 0 {
        return;
    }
    let t = thickness_for(img) as i64;
    let x1 = (bbox.x1.round() as i64).clamp(0, w - 1);
    let y1 = (bbox.y1.round() as i64).clamp(0, h - 1);
    let x2 = (bbox.x2.round() as i64).clamp(0, w - 1);
    let y2 = (bbox.y2.round() as i64).clamp(0, h - 1);
    let mut fill = |xa: i64, ya: i64, xb: i64, yb: i64| {
        for y in ya.max(0)..=yb.min(h - 1) {
            for x in xa.max(0)..=xb.min(w - 1) {
                img.put_pixel(x as u32, y as u32, color);
            }
        }
    };
    fill(x1, y1, x2, y1 + t - 1); // top
    fill(x1, y2 - t + 1, x2, y2); // bottom
    fill(x1, y1, x1 + t - 1, y2); // left
    fill(x2 - t + 1, y1, x2, y2); // right
}

/// Times libjpeg-turbo failed and the image crate's encoder stood in, since start.
static TURBOJPEG_FAILURES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// How often libjpeg-turbo has failed since start (each time the slower encoder ran).
pub fn turbojpeg_failures() -> u64 {
    TURBOJPEG_FAILURES.load(std::sync::atomic::Ordering::Relaxed)
}

/// Encodes `img` as JPEG at `quality` (1-100), 4:2:0, with libjpeg-turbo (several
/// times faster than the image crate's encoder, which stays as the fallback).
pub fn encode_jpeg(img: &RgbImage, quality: u8) -> Vec<u8> {
    let _span = crate::device::ops::stages::Span::start(crate::device::ops::stages::Stage::Jpeg);
    let quality = quality.clamp(1, 100);
    let (width, height) = (img.width() as usize, img.height() as usize);
    let pixels = turbojpeg::Image {
        pixels: img.as_raw().as_slice(),
        width,
        pitch: width * 3,
        height,
        format: turbojpeg::PixelFormat::RGB,
    };
    match turbojpeg::compress(pixels, i32::from(quality), turbojpeg::Subsamp::Sub2x2) {
        Ok(jpeg) => jpeg.to_vec(),
        Err(e) => fallback_jpeg(img, quality, &e),
    }
}

/// The image crate's encoder, after libjpeg-turbo failed with `why`. Said out loud:
/// it is several times slower, which the watchdog and the frame rate would feel. A
/// warning the first time and every 1000th after, a count always.
fn fallback_jpeg(img: &RgbImage, quality: u8, why: &dyn std::fmt::Display) -> Vec<u8> {
    let failures = TURBOJPEG_FAILURES.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
    if failures % 1000 == 1 {
        tracing::warn!(
            failures,
            "libjpeg-turbo could not encode a {}x{} picture ({why}); using the slower image encoder",
            img.width(),
            img.height()
        );
    }
    let (width, height) = (img.width() as usize, img.height() as usize);
    let mut out = Vec::with_capacity(width * height / 6);
    let mut enc = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, quality);
    // Encoding an in-memory RGB buffer into a Vec cannot fail: dimensions come from
    // an existing image and the writer is infallible.
    enc.encode_image(img).expect("JPEG encoding into memory");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_turbojpeg_failure_is_said_and_counted() {
        #[derive(Clone, Default)]
        struct Logs(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);
        impl std::io::Write for Logs {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(buf);
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let logs = Logs::default();
        let writer = logs.clone();
        let subscriber = tracing_subscriber::fmt().with_writer(move || writer.clone()).with_ansi(false).finish();
        let before = turbojpeg_failures();
        let jpeg = tracing::subscriber::with_default(subscriber, || {
            fallback_jpeg(&RgbImage::new(32, 16), 80, &"simulated failure")
        });
        assert!(turbojpeg_failures() > before);
        assert_eq!(image::load_from_memory(&jpeg).unwrap().width(), 32, "the fallback still makes the JPEG");
        let logs = String::from_utf8_lossy(&logs.0.lock().unwrap()).into_owned();
        // Another test may have failed first; then this one is the 2nd..999th, not logged.
        assert!(logs.contains("simulated failure") || !before.is_multiple_of(1000), "{logs}");
    }

    #[test]
    fn box_is_drawn_and_clipped() {
        let mut img = RgbImage::new(100, 80);
        let b = BBox { x1: 10.0, y1: 10.0, x2: 150.0, y2: 40.0 };
        draw_box(&mut img, &b, BOX_COLOR);
        assert_eq!(*img.get_pixel(10, 10), BOX_COLOR);
        assert_eq!(*img.get_pixel(99, 20), BOX_COLOR, "right edge clipped to the image");
        assert_eq!(*img.get_pixel(50, 25), Rgb([0, 0, 0]), "inside stays untouched");
    }

    #[test]
    fn privacy_mask_is_black_even_over_drawings() {
        let img = RgbImage::from_pixel(200, 100, Rgb([200, 180, 160]));
        let mut r = Renderer::plain(90);
        r.privacy = vec![Polygon(vec![[0.0, 0.0], [0.5, 0.0], [0.5, 1.0], [0.0, 1.0]])];
        let b = BBox { x1: 20.0, y1: 20.0, x2: 180.0, y2: 80.0 };
        let zone = Polygon(vec![[0.1, 0.1], [0.9, 0.1], [0.9, 0.9]]);
        let out = r.render(img.clone(), &[b], &[&zone]);
        let back = image::load_from_memory(&out.jpeg).unwrap().to_rgb8();
        for (x, y) in [(5, 5), (20, 20), (50, 50), (95, 95)] {
            let p = back.get_pixel(x, y);
            assert!(p.0.iter().all(|&v| v < 12), "({x}, {y}) is {p:?}");
        }
        assert!(back.get_pixel(150, 50)[0] > 150, "outside the mask the picture stays");
    }

    #[test]
    fn size_cap_lowers_quality_then_size() {
        // Noise compresses badly: a worst case for the cap.
        let mut seed = 1u32;
        let img = RgbImage::from_fn(768, 576, |_, _| {
            seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12345);
            let v = (seed >> 16) as u8;
            Rgb([v, v.wrapping_mul(3), v.wrapping_add(90)])
        });
        let mut r = Renderer::plain(90);
        assert!(encode_jpeg(&img, 90).len() > 150_000);
        let out = r.render(img.clone(), &[], &[]);
        assert!(out.jpeg.len() <= 150_000, "{}", out.jpeg.len());
        r.max_bytes = 20_000;
        let small = r.render(img.clone(), &[], &[]);
        assert!(small.jpeg.len() <= 20_000 && small.width < 768, "{} bytes, {} wide", small.jpeg.len(), small.width);
        let back = image::load_from_memory(&small.jpeg).unwrap();
        assert_eq!((back.width(), back.height()), (small.width, small.height));
    }

    #[test]
    fn crop_keeps_the_boxes_with_a_margin() {
        let b = [BBox { x1: 100.0, y1: 100.0, x2: 140.0, y2: 200.0 }];
        let (x, y, w, h) = crop_region(&b, 768, 576).unwrap();
        assert!(x <= 80 && x + w >= 160 && y <= 50 && y + h >= 250, "{x} {y} {w} {h}");
        assert!(w >= 256 && h >= 192);
        assert_eq!(crop_region(&[], 768, 576), None);
    }

    #[test]
    fn jpeg_round_trips_dimensions() {
        let img = RgbImage::from_pixel(64, 48, Rgb([10, 200, 30]));
        let jpeg = encode_jpeg(&img, 80);
        let back = image::load_from_memory(&jpeg).unwrap().to_rgb8();
        assert_eq!((back.width(), back.height()), (64, 48));
        let p = back.get_pixel(30, 20);
        assert!((p[1] as i32 - 200).abs() < 8, "colour preserved: {p:?}");
    }
}
