//! Decoded pictures as decoders give them: 8-bit Y'CbCr 4:2:0 in three packed planes.
//! Analysis reads them as they are (the model input is made from the planes at the
//! model's size, motion reads the luma plane); RGB is made only for pictures that
//! leave the device, which are few.
//!
//! Promises: `to_rgb` follows the picture's own colorimetry (BT.601 or BT.709, limited
//! or full range), as GStreamer's converter does, within a level; `luma_full` gives
//! luma on the 0..255 scale whatever the range, so thresholds mean the same on every
//! camera.

use std::sync::{Arc, Mutex, Weak};

use image::RgbImage;

/// How the picture's Y'CbCr values map to RGB.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Colorimetry {
    /// BT.709 (HD) rather than BT.601 (SD) coefficients.
    pub bt709: bool,
    /// Y' over 0..255 (JPEG-style, common on cheap cameras) rather than 16..235.
    pub full_range: bool,
}

/// RGB from Y'CbCr, in `f32`: one path for the model's rows and for snapshots.
#[derive(Debug, Clone, Copy)]
pub struct YuvToRgb {
    y_offset: f32,
    /// Luma gain, then R from Cr, G from Cb, G from Cr, B from Cb.
    gains: [f32; 5],
}

impl YuvToRgb {
    pub fn new(c: Colorimetry) -> YuvToRgb {
        // Luma weights of the two standards; the chroma gains follow from them.
        let (kr, kb) = if c.bt709 { (0.2126, 0.0722) } else { (0.299, 0.114) };
        let kg = 1.0 - kr - kb;
        let (y_scale, c_scale, y_offset) =
            if c.full_range { (1.0, 1.0, 0.0) } else { (255.0 / 219.0, 255.0 / 224.0, 16.0) };
        let gains: [f64; 5] = [
            y_scale,
            2.0 * (1.0 - kr) * c_scale,
            2.0 * (1.0 - kb) * kb / kg * c_scale,
            2.0 * (1.0 - kr) * kr / kg * c_scale,
            2.0 * (1.0 - kb) * c_scale,
        ];
        YuvToRgb { y_offset, gains: gains.map(|v| v as f32) }
    }

    /// One row: `luma` (n pixels) with its half-width `cb` and `cr` rows, into R, G and
    /// B rows of n values 0..255 each, not rounded (the model takes them as they are).
    /// Stops at the shortest of the rows.
    pub fn row(&self, luma: &[u8], cb: &[u8], cr: &[u8], [r, g, b]: [&mut [f32]; 3]) {
        let n = luma.len().min(r.len()).min(g.len()).min(b.len()).min(cb.len() * 2).min(cr.len() * 2);
        let (luma, r, g, b) = (&luma[..n], &mut r[..n], &mut g[..n], &mut b[..n]);
        let [y_gain, r_v, g_u, g_v, b_u] = self.gains;
        let y_offset = self.y_offset;
        // Plain float arithmetic over slices of known length, pixel pairs sharing their
        // chroma: the compiler turns this into SIMD (about 4x faster than the fixed-point
        // pixel at a time, which was 40 % of the letterbox).
        let clip = |v: f32| v.clamp(0.0, 255.0);
        let chroma = |k: usize| {
            let (u, v) = (f32::from(cb[k]) - 128.0, f32::from(cr[k]) - 128.0);
            [r_v * v, -(g_u * u + g_v * v), b_u * u]
        };
        let pairs = n / 2;
        for k in 0..pairs {
            let [dr, dg, db] = chroma(k);
            for i in [2 * k, 2 * k + 1] {
                let y = (f32::from(luma[i]) - y_offset) * y_gain;
                (r[i], g[i], b[i]) = (clip(y + dr), clip(y + dg), clip(y + db));
            }
        }
        if n % 2 == 1 {
            let ([dr, dg, db], i) = (chroma(pairs), n - 1);
            let y = (f32::from(luma[i]) - y_offset) * y_gain;
            (r[i], g[i], b[i]) = (clip(y + dr), clip(y + dg), clip(y + db));
        }
    }

    /// One pixel, rounded: `[r, g, b]`.
    pub fn rgb(&self, y: u8, u: u8, v: u8) -> [u8; 3] {
        let mut px = [[0.0f32]; 3];
        let [r, g, b] = &mut px;
        self.row(&[y], &[u], &[v], [r, g, b]);
        px.map(|[c]| to_level(c))
    }
}

/// A value 0..255 (already clipped) to the nearest level.
fn to_level(v: f32) -> u8 {
    (v + 0.5) as u8
}

/// A picture in 4:2:0: a full-size luma plane, then Cb and Cr at half size each way
/// (rounded up), rows packed without padding.
#[derive(Debug, Clone)]
pub struct Yuv420 {
    width: u32,
    height: u32,
    data: Vec<u8>,
    pub colorimetry: Colorimetry,
    /// Where the bytes go when the picture is dropped (see [`Recycler`]).
    home: Option<Weak<Mutex<Vec<Vec<u8>>>>>,
}

impl PartialEq for Yuv420 {
    fn eq(&self, other: &Self) -> bool {
        (self.width, self.height, self.colorimetry, &self.data)
            == (other.width, other.height, other.colorimetry, &other.data)
    }
}

impl Drop for Yuv420 {
    fn drop(&mut self) {
        if let Some(spares) = self.home.as_ref().and_then(Weak::upgrade) {
            let mut spares = spares.lock().unwrap_or_else(|p| p.into_inner());
            if spares.len() < Recycler::SPARES {
                spares.push(std::mem::take(&mut self.data));
            }
        }
    }
}

/// A few spare picture buffers of one source (a camera's decoder). Its pictures give
/// their bytes back when dropped, so a steady stream reuses them instead of mapping
/// fresh pages for every picture: the page faults and unmapping of a new 0.6 MB
/// buffer per picture were about 1 % of all CPU at 12 cameras. Outlived pictures just
/// free their bytes.
#[derive(Debug, Clone, Default)]
pub struct Recycler(Arc<Mutex<Vec<Vec<u8>>>>);

impl Recycler {
    /// Spares kept: the picture analysis lets go of is the one the decoder takes next.
    const SPARES: usize = 1;

    /// An empty buffer with room for `len` bytes, reused when there is a spare.
    pub fn take(&self, len: usize) -> Vec<u8> {
        let spare = self.0.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let mut data = spare.unwrap_or_default();
        data.clear();
        data.reserve(len);
        data
    }

    /// Buffers waiting to be reused.
    pub fn spares(&self) -> usize {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
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
        (data.len() == Yuv420::len_for(width, height)).then_some(Yuv420 {
            width,
            height,
            data,
            colorimetry,
            home: None,
        })
    }

    /// This picture's bytes go to `recycler` when it is dropped (and its clones' too).
    pub fn returning_to(mut self, recycler: &Recycler) -> Yuv420 {
        self.home = Some(Arc::downgrade(&recycler.0));
        self
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
        Yuv420 { width: w, height: h, data, colorimetry: Colorimetry::default(), home: None }
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
        let mut planes = [vec![0.0f32; w], vec![0.0; w], vec![0.0; w]];
        for (y, row) in out.chunks_exact_mut(w * 3).enumerate() {
            let chroma = (y / 2) * cw..(y / 2 + 1) * cw;
            let [r, g, b] = &mut planes;
            convert.row(&luma[y * w..(y + 1) * w], &cb[chroma.clone()], &cr[chroma], [r, g, b]);
            for (((px, &r), &g), &b) in row.chunks_exact_mut(3).zip(&planes[0]).zip(&planes[1]).zip(&planes[2]) {
                px.copy_from_slice(&[to_level(r), to_level(g), to_level(b)]);
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
    fn rows_follow_the_published_equations_for_every_colorimetry() {
        // The standards' own matrix coefficients (BT.601: 1.402, 0.344136, 0.714136,
        // 1.772; BT.709: 1.5748, 0.1873, 0.4681, 1.8556), not derived as the code does.
        let luma: Vec<u8> = (0..=254).step_by(2).chain([0, 255, 3]).collect();
        let cb: Vec<u8> = (0..luma.len().div_ceil(2)).map(|k| (k * 37 % 256) as u8).collect();
        let cr: Vec<u8> = (0..cb.len()).map(|k| (255 - k * 53 % 256) as u8).collect();
        for (bt709, full_range) in [(false, false), (false, true), (true, false), (true, true)] {
            let [rv, gu, gv, bu] =
                if bt709 { [1.5748, 0.1873, 0.4681, 1.8556] } else { [1.402, 0.344136, 0.714136, 1.772] };
            let (ys, cs, y0) = if full_range { (1.0, 1.0, 0.0) } else { (255.0 / 219.0, 255.0 / 224.0, 16.0) };
            let convert = YuvToRgb::new(Colorimetry { bt709, full_range });
            for n in [luma.len(), luma.len() - 1] {
                let mut out = [vec![-1.0f32; n], vec![-1.0; n], vec![-1.0; n]];
                let [r, g, b] = &mut out;
                convert.row(&luma[..n], &cb, &cr, [r, g, b]);
                for i in 0..n {
                    let y = (f64::from(luma[i]) - y0) * ys;
                    let (u, v) = ((f64::from(cb[i / 2]) - 128.0) * cs, (f64::from(cr[i / 2]) - 128.0) * cs);
                    let want = [y + rv * v, y - gu * u - gv * v, y + bu * u].map(|c| c.clamp(0.0, 255.0));
                    for (c, plane) in out.iter().enumerate() {
                        let got = f64::from(plane[i]);
                        assert!(
                            (got - want[c]).abs() < 0.05,
                            "{bt709}/{full_range}: pixel {i} of {n}, channel {c}: {got} vs {}",
                            want[c]
                        );
                    }
                }
            }
            // Snapshots round the same values.
            assert_eq!(convert.rgb(luma[9], cb[4], cr[4]), {
                let mut px = [[0.0f32]; 3];
                let [r, g, b] = &mut px;
                convert.row(&luma[9..10], &cb[4..5], &cr[4..5], [r, g, b]);
                px.map(|[c]| c.round() as u8)
            });
        }
    }

    #[test]
    fn dropped_pictures_give_their_bytes_back_up_to_the_spares_kept() {
        let recycler = Recycler::default();
        let picture = |data: Vec<u8>| Yuv420::from_planes(4, 2, data, Colorimetry::default()).unwrap();
        let mut data = recycler.take(12);
        data.resize(12, 7);
        let first = picture(data).returning_to(&recycler);
        let ptr = first.y().as_ptr();
        let copies = [first.clone(), first.clone()];
        drop(first);
        assert_eq!(recycler.spares(), 1);
        let reused = recycler.take(12);
        assert!(reused.is_empty() && reused.capacity() >= 12);
        assert_eq!(reused.as_ptr(), ptr, "the dropped picture's own buffer comes back");
        drop(copies);
        assert_eq!(recycler.spares(), Recycler::SPARES, "clones return too, up to the limit");
        drop(recycler);
        drop(picture(vec![0; 12]).returning_to(&Recycler::default())); // an outlived picture just frees
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
