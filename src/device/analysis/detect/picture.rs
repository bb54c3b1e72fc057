//! Reading picture files for `gridwatch detect`.
//!
//! JPEG goes through libjpeg-turbo (accurate IDCT, fancy upsampling), the decoder that
//! Pillow, OpenCV and most tools use: pixels then match theirs exactly, and so do the
//! model's scores on the same file. Other decoders differ by a few levels per pixel,
//! enough to move a weak detection across a threshold. Other formats go through `image`.
//!
//! Promises: a file over [`MAX_FILE_BYTES`] is refused after reading that much (so
//! `/dev/zero` ends), and a picture over [`MAX_PIXELS`] is refused from its header,
//! before its pixels are allocated.

use std::io::Read;
use std::path::Path;

use anyhow::{Context, anyhow};
use image::RgbImage;

/// Largest picture file read.
pub const MAX_FILE_BYTES: u64 = 64 << 20;
/// Largest picture decoded, in pixels: 8192x8192, 200 MB as RGB.
pub const MAX_PIXELS: u64 = 8192 * 8192;

/// Reads `path` (JPEG, PNG, or anything `image` knows) as packed RGB.
pub fn read_rgb(path: &Path) -> anyhow::Result<RgbImage> {
    let bytes = read_bounded(path).with_context(|| format!("{}: cannot read the file", path.display()))?;
    if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
        return decode_jpeg(&bytes).with_context(|| format!("{}: not a readable JPEG", path.display()));
    }
    decode_other(&bytes)
        .with_context(|| format!("{}: not a picture this program reads (JPEG, PNG, BMP, …)", path.display()))
}

/// The file's bytes, refused past [`MAX_FILE_BYTES`].
fn read_bounded(path: &Path) -> anyhow::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    std::fs::File::open(path)?.take(MAX_FILE_BYTES + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(anyhow!("larger than {} MB; not a picture this program reads", MAX_FILE_BYTES >> 20));
    }
    Ok(bytes)
}

fn check_size(width: u64, height: u64) -> anyhow::Result<()> {
    if width.saturating_mul(height) > MAX_PIXELS {
        return Err(anyhow!("{width}x{height} pixels is larger than the {MAX_PIXELS} pixels this program decodes"));
    }
    Ok(())
}

fn decode_other(bytes: &[u8]) -> anyhow::Result<RgbImage> {
    let reader = || image::ImageReader::new(std::io::Cursor::new(bytes)).with_guessed_format();
    let (width, height) = reader()?.into_dimensions()?;
    check_size(width.into(), height.into())?;
    let mut reader = reader()?;
    let mut limits = image::Limits::default();
    limits.max_alloc = Some(MAX_PIXELS * 8);
    reader.limits(limits);
    Ok(reader.decode()?.to_rgb8())
}

fn decode_jpeg(bytes: &[u8]) -> anyhow::Result<RgbImage> {
    let header = turbojpeg::read_header(bytes)?;
    check_size(header.width as u64, header.height as u64)?;
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

    /// A JPEG of `width` x `height` whose header is real and whose data is not there.
    fn jpeg_claiming(width: u16, height: u16) -> Vec<u8> {
        let small = crate::device::publish::encode_jpeg(&RgbImage::new(16, 16), 80);
        let sof = small.windows(2).position(|w| w == [0xFF, 0xC0]).expect("a baseline SOF0");
        let mut big = small.clone();
        big[sof + 5..sof + 7].copy_from_slice(&height.to_be_bytes());
        big[sof + 7..sof + 9].copy_from_slice(&width.to_be_bytes());
        big
    }

    #[test]
    fn huge_pictures_and_endless_files_are_refused_before_they_take_memory() {
        let dir = std::env::temp_dir().join(format!("gridwatch-picture-big-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let huge = dir.join("huge.jpg");
        std::fs::write(&huge, jpeg_claiming(30000, 30000)).unwrap();
        let err = format!("{:#}", read_rgb(&huge).unwrap_err());
        assert!(err.contains("huge.jpg") && err.contains("30000x30000"), "{err}");
        let err = format!("{:#}", read_rgb(Path::new("/dev/zero")).unwrap_err());
        assert!(err.contains("/dev/zero") && err.contains("larger than"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
