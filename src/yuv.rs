//! Decoded pictures as decoders give them: 8-bit Y'CbCr 4:2:0 in three packed planes.
//! Analysis reads them as they are (the model input is made from the planes at the
//! model's size, motion reads the luma plane); RGB is made only for pictures that
//! leave the device, which are few.
//!
//! Promises: `to_rgb` follows the picture's own colorimetry (BT.601 or BT.709, limited
//! or full range), as GStreamer's converter does, within a level; `luma_full` gives
//! luma on the 0..255 scale whatever the range, so thresholds mean the same on every
//! camera.

use image::RgbImage;

/// How the picture's Y'CbCr values map to RGB.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Colorimetry {
    /// BT.709 (HD) rather than BT.601 (SD) coefficients.
    pub bt709: bool,
    /// Y' over 0..255 (JPEG-style, common on cheap cameras) rather than 16..235.
    pub full_range: bool,
}

/// RGB from Y'CbCr, in 16.16 fixed point.
#[derive(Debug, Clone, Copy)]
pub struct YuvToRgb {
    y_offset: i32,
    y_gain: i32,
    r_v: i32,
    g_u: i32,
    g_v: i32,
    b_u: i32,
}

impl YuvToRgb {
    pub fn new(c: Colorimetry) -> YuvToRgb {
        // Luma weights of the two standards; the chroma gains follow from them.
        let (kr, kb) = if c.bt709 { (0.2126, 0.0722) } else { (0.299, 0.114) };
        let kg = 1.0 - kr - kb;
        let (y_scale, c_scale, y_offset) =
            if c.full_range { (1.0, 1.0, 0) } else { (255.0 / 219.0, 255.0 / 224.0, 16) };
        let fixed = |v: f64| (v * 65536.0).round() as i32;
        YuvToRgb {
            y_offset,
            y_gain: fixed(y_scale),
            r_v: fixed(2.0 * (1.0 - kr) * c_scale),
            g_u: fixed(2.0 * (1.0 - kb) * kb / kg * c_scale),
            g_v: fixed(2.0 * (1.0 - kr) * kr / kg * c_scale),
            b_u: fixed(2.0 * (1.0 - kb) * c_scale),
        }
    }

    /// One row: `luma` (n pixels) with its half-width `cb` and `cr` rows, into R, G and
    /// B rows of n values 0..255 each (the model's input).
    pub fn row(&self, luma: &[u8], cb: &[u8], cr: &[u8], [r, g, b]: [&mut [f32]; 3]) {
        // Pixel pairs share a chroma sample: zipped chunks, no index arithmetic, so
        // the loop runs without bounds checks.
        let pairs = luma.chunks(2).zip(r.chunks_mut(2)).zip(g.chunks_mut(2)).zip(b.chunks_mut(2));
        for ((((ys, rs), gs), bs), (&u, &v)) in pairs.zip(cb.iter().zip(cr)) {
            for (k, &y) in ys.iter().enumerate() {
                let [pr, pg, pb] = self.rgb(y, u, v);
                (rs[k], gs[k], bs[k]) = (f32::from(pr), f32::from(pg), f32::from(pb));
            }
        }
    }

    /// One pixel: `[r, g, b]`.
    #[inline]
    pub fn rgb(&self, y: u8, u: u8, v: u8) -> [u8; 3] {
        let y = (i32::from(y) - self.y_offset) * self.y_gain + (1 << 15);
        let (u, v) = (i32::from(u) - 128, i32::from(v) - 128);
        let clip = |x: i32| (x >> 16).clamp(0, 255) as u8;
        [clip(y + self.r_v * v), clip(y - self.g_u * u - self.g_v * v), clip(y + self.b_u * u)]
    }
}

/// A picture in 4:2:0: a full-size luma plane, then Cb and Cr at half size each way
/// (rounded up), rows packed without padding.
#[derive(Debug, Clone, PartialEq)]
pub struct Yuv420 {
    width: u32,
    height: u32,
    data: Vec<u8>,
    pub colorimetry: Colorimetry,
}

impl Yuv420 {
    /// Size of each chroma plane.
    pub fn chroma_size(width: u32, height: u32) -> (u32, u32) {
        (width.div_ceil(2), height.div_ceil(2))
    }

    /// Bytes a `width` x `height` picture takes.
    pub fn len_for(width: u32, height: u32) -> usize {
        let (cw, ch) = Yuv420::chroma_size(width, height);
        width as usize * height as usize + 2 * cw as usize * ch as usize
    }

    /// The planes packed one after another; `None` when `data` has the wrong length.
    pub fn from_planes(width: u32, height: u32, data: Vec<u8>, colorimetry: Colorimetry) -> Option<Yuv420> {
        (data.len() == Yuv420::len_for(width, height)).then_some(Yuv420 { width, height, data, colorimetry })
    }

    /// BT.601, limited range, as SD cameras send: for tests and still pictures.
    pub fn from_rgb(img: &RgbImage) -> Yuv420 {
        let (w, h) = img.dimensions();
        let (cw, ch) = Yuv420::chroma_size(w, h);
        let mut data = vec![0u8; Yuv420::len_for(w, h)];
        let (luma, chroma) = data.split_at_mut(w as usize * h as usize);
        let (cb, cr) = chroma.split_at_mut(cw as usize * ch as usize);
        for (p, y) in img.pixels().zip(luma.iter_mut()) {
            let [r, g, b] = p.0.map(f32::from);
            *y = (16.0 + (65.481 * r + 128.553 * g + 24.966 * b) / 255.0).round() as u8;
        }
        for cy in 0..ch {
            for cx in 0..cw {
                // The mean of the 2x2 block (fewer at the right and bottom edges).
                let (mut sum, mut n) = ([0.0f32; 3], 0.0);
                for (x, y) in [(0, 0), (1, 0), (0, 1), (1, 1)] {
                    if let Some(p) = img.get_pixel_checked(cx * 2 + x, cy * 2 + y) {
                        sum.iter_mut().zip(p.0).for_each(|(s, v)| *s += f32::from(v));
                        n += 1.0;
                    }
                }
                let [r, g, b] = sum.map(|s| s / n);
                let i = (cy * cw + cx) as usize;
                cb[i] = (128.0 + (-37.797 * r - 74.203 * g + 112.0 * b) / 255.0).round() as u8;
                cr[i] = (128.0 + (112.0 * r - 93.786 * g - 18.214 * b) / 255.0).round() as u8;
            }
        }
        Yuv420 { width: w, height: h, data, colorimetry: Colorimetry::default() }
    }

    pub fn width(&self) -> u32 {
        self.width
    }

    pub fn height(&self) -> u32 {
        self.height
    }

    pub fn dimensions(&self) -> (u32, u32) {
        (self.width, self.height)
    }

    pub fn y(&self) -> &[u8] {
        &self.data[..self.width as usize * self.height as usize]
    }

    pub fn u(&self) -> &[u8] {
        let (start, n) = self.chroma_span();
        &self.data[start..start + n]
    }

    pub fn v(&self) -> &[u8] {
        let (start, n) = self.chroma_span();
        &self.data[start + n..start + 2 * n]
    }

    fn chroma_span(&self) -> (usize, usize) {
        let (cw, ch) = Yuv420::chroma_size(self.width, self.height);
        (self.width as usize * self.height as usize, cw as usize * ch as usize)
    }

    /// Luma of one stored value on the 0..255 scale (limited range stretched).
    pub fn luma_full(&self, y: u8) -> u8 {
        if self.colorimetry.full_range { y } else { ((i32::from(y) - 16) * 255 / 219).clamp(0, 255) as u8 }
    }

    /// Packed RGB, for pictures that leave the device (snapshots).
    pub fn to_rgb(&self) -> RgbImage {
        let convert = YuvToRgb::new(self.colorimetry);
        let (w, cw) = (self.width as usize, Yuv420::chroma_size(self.width, self.height).0 as usize);
        let (luma, cb, cr) = (self.y(), self.u(), self.v());
        let mut out = vec![0u8; w * self.height as usize * 3];
        for (y, row) in out.chunks_exact_mut(w * 3).enumerate() {
            let (lrow, crow) = (&luma[y * w..(y + 1) * w], (y / 2) * cw);
            for (x, px) in row.chunks_exact_mut(3).enumerate() {
                px.copy_from_slice(&convert.rgb(lrow[x], cb[crow + x / 2], cr[crow + x / 2]));
            }
        }
        RgbImage::from_raw(self.width, self.height, out).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::Rgb;

    #[test]
    fn rgb_survives_the_round_trip_within_a_few_levels() {
        // Flat colours (chroma subsampling cannot blur them), the corners of the cube included.
        for c in [[0, 0, 0], [255, 255, 255], [200, 30, 90], [10, 220, 60], [114, 114, 114], [255, 0, 0]] {
            let back = Yuv420::from_rgb(&RgbImage::from_pixel(6, 5, Rgb(c))).to_rgb();
            for (got, want) in back.get_pixel(5, 4).0.iter().zip(c) {
                assert!(got.abs_diff(want) <= 2, "{c:?} came back as {:?}", back.get_pixel(5, 4).0);
            }
        }
    }

    #[test]
    fn colorimetry_changes_the_colours_as_the_standards_say() {
        // Limited-range grey 126 is 128 on the full scale; BT.709 reds are redder for the same V.
        let grey = YuvToRgb::new(Colorimetry::default()).rgb(126, 128, 128);
        assert_eq!(grey, [128, 128, 128]);
        let full = YuvToRgb::new(Colorimetry { bt709: false, full_range: true }).rgb(126, 128, 128);
        assert_eq!(full, [126, 126, 126]);
        let sd = YuvToRgb::new(Colorimetry::default()).rgb(81, 90, 240);
        let hd = YuvToRgb::new(Colorimetry { bt709: true, full_range: false }).rgb(81, 90, 240);
        assert!(sd[0] >= 250 && sd[1] <= 5 && sd[2] <= 5, "BT.601 pure red: {sd:?}");
        assert!(hd[0] == 255 && hd[1] < sd[1] + 40, "{hd:?}");
        assert_ne!(sd, hd);
    }

    #[test]
    fn planes_are_where_they_belong() {
        let img = RgbImage::from_fn(5, 3, |x, _| if x < 2 { Rgb([0, 0, 0]) } else { Rgb([255, 255, 255]) });
        let p = Yuv420::from_rgb(&img);
        assert_eq!((p.y().len(), p.u().len(), p.v().len()), (15, 6, 6));
        assert_eq!((p.y()[0], p.y()[4]), (16, 235));
        assert_eq!((p.luma_full(16), p.luma_full(235)), (0, 255));
        assert!(Yuv420::from_planes(5, 3, vec![0; 26], Colorimetry::default()).is_none());
        assert!(Yuv420::from_planes(5, 3, vec![0; 27], Colorimetry::default()).is_some());
    }
}
