//! Reading picture files for `gridwatch detect`.
//!
//! JPEG goes through libjpeg-turbo (accurate IDCT, fancy upsampling), the decoder that
//! Pillow, OpenCV and most tools use: pixels then match theirs exactly, and so do the
//! model's scores on the same file. Other decoders differ by a few levels per pixel,
//! enough to move a weak detection across a threshold. Other formats go through `image`.

use std::path::Path;

use anyhow::{Context, anyhow};
use image::RgbImage;

/// Reads `path` (JPEG, PNG, or anything `image` knows) as packed RGB.
pub fn read_rgb(path: &Path) -> anyhow::Result<RgbImage> {
    let bytes = std::fs::read(path).with_context(|| format!("{}: cannot read the file", path.display()))?;
    if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
        return decode_jpeg(&bytes).with_context(|| format!("{}: not a readable JPEG", path.display()));
    }
    let img = image::load_from_memory(&bytes)
        .with_context(|| format!("{}: not a picture this program reads (JPEG, PNG, BMP, …)", path.display()))?;
    Ok(img.to_rgb8())
}

fn decode_jpeg(bytes: &[u8]) -> anyhow::Result<RgbImage> {
    let img = turbojpeg::decompress(bytes, turbojpeg::PixelFormat::RGB)?;
    let (w, h) = (u32::try_from(img.width)?, u32::try_from(img.height)?);
    RgbImage::from_raw(w, h, img.pixels).ok_or_else(|| anyhow!("decoder returned a short buffer"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jpeg_and_png_decode_to_the_same_size() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
        let jpg = read_rgb(&root.join("photos/darknet_dog.jpg")).unwrap();
        assert_eq!(jpg.dimensions(), (768, 576));
        let png = read_rgb(&root.join("reference/frames/vtest_f0000.png")).unwrap();
        assert_eq!(png.dimensions(), (768, 576));
    }

    #[test]
    fn errors_name_the_file() {
        let dir = std::env::temp_dir().join(format!("gridwatch-picture-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let broken = dir.join("broken.jpg");
        std::fs::write(&broken, [0xFF, 0xD8, 0xFF, 0xE0, 1, 2, 3]).unwrap();
        let err = format!("{:#}", read_rgb(&broken).unwrap_err());
        assert!(err.contains("broken.jpg") && err.contains("JPEG"), "{err}");
        let text = dir.join("notes.txt");
        std::fs::write(&text, "hello").unwrap();
        assert!(format!("{:#}", read_rgb(&text).unwrap_err()).contains("notes.txt"));
        let missing = format!("{:#}", read_rgb(&dir.join("nope.png")).unwrap_err());
        assert!(missing.contains("nope.png") && missing.contains("cannot read"), "{missing}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
