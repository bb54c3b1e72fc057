//! Pictures that leave the device: boxes drawn onto a frame, JPEG encoding.
//!
//! Promises: drawing never panics for boxes partly or wholly outside the image;
//! `encode_jpeg` returns a baseline JPEG the `image` crate (and any browser) decodes.

use image::{Rgb, RgbImage};

use crate::detect::BBox;

/// Colour for boxes of tracked objects.
pub const BOX_COLOR: Rgb<u8> = Rgb([255, 64, 32]);

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

/// Encodes `img` as JPEG at `quality` (1-100).
pub fn encode_jpeg(img: &RgbImage, quality: u8) -> Vec<u8> {
    let mut out = Vec::with_capacity((img.width() * img.height() / 6) as usize);
    let mut enc = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, quality.clamp(1, 100));
    // Encoding an in-memory RGB buffer into a Vec cannot fail: dimensions come from
    // an existing image and the writer is infallible.
    enc.encode_image(img).expect("JPEG encoding into memory");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn jpeg_round_trips_dimensions() {
        let img = RgbImage::from_pixel(64, 48, Rgb([10, 200, 30]));
        let jpeg = encode_jpeg(&img, 80);
        let back = image::load_from_memory(&jpeg).unwrap().to_rgb8();
        assert_eq!((back.width(), back.height()), (64, 48));
        let p = back.get_pixel(30, 20);
        assert!((p[1] as i32 - 200).abs() < 8, "colour preserved: {p:?}");
    }
}
