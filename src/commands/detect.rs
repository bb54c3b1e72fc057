//! `gridwatch detect`: runs the model on image files and prints what it finds, as
//! text or one JSON object per image, optionally writing annotated copies.
//!
//! Promises: a picture that cannot be read or written is reported on stderr, naming
//! it, and the others are still processed; exit code 0 when all went well, 1 when
//! some picture failed, 2 when the model, labels or runtime cannot be loaded.

use crate::contract::Invalid;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use serde::Serialize;

use crate::device::analysis::detect::{DetectError, Detection, Detector, Labels, ModelSource};
use crate::device::publish::{BOX_COLOR, draw_box, encode_jpeg};

const EXIT_PICTURE_FAILED: u8 = 1;
const EXIT_CANNOT_START: u8 = 2;
const ANNOTATED_JPEG_QUALITY: u8 = 90;

#[derive(Debug, clap::Args)]
pub struct DetectArgs {
    /// Image files (JPEG or PNG).
    #[arg(required = true, num_args = 1..)]
    pub images: Vec<PathBuf>,
    /// One JSON object per image and line instead of text.
    #[arg(long)]
    pub json: bool,
    /// Write a copy of each image with its boxes drawn to DIR/<name>.jpg.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Report only detections scoring above this.
    #[arg(long, default_value_t = 0.30, value_parser = unit_interval)]
    pub min_score: f32,
    /// Boxes of one class overlapping more than this (IoU) are merged.
    #[arg(long, default_value_t = 0.45, value_parser = unit_interval)]
    pub nms_iou: f32,
    /// ONNX model file, or a built-in model: yolox-nano, yolox-nano-int8 [default: yolox-nano].
    #[arg(long, value_name = "PATH")]
    pub model: Option<PathBuf>,
    /// Class names, one per line in model order [default: the built-in COCO-80].
    #[arg(long, value_name = "PATH")]
    pub labels: Option<PathBuf>,
    /// Threads for one inference.
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub threads: u16,
    /// libonnxruntime.so to use, or the folder holding it [default: searched].
    #[arg(long, value_name = "PATH")]
    pub onnxruntime: Option<PathBuf>,
}

fn unit_interval(s: &str) -> Result<f32, Invalid> {
    let v: f32 = s.parse().map_err(|_| Invalid(format!("{s} is not a number")))?;
    if (0.0..=1.0).contains(&v) { Ok(v) } else { Err(Invalid(format!("{v} is outside 0..=1"))) }
}

pub fn run(args: DetectArgs) -> anyhow::Result<ExitCode> {
    let (labels, mut detector) = match load(&args) {
        Ok(loaded) => loaded,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(ExitCode::from(EXIT_CANNOT_START));
        }
    };
    if let Some(n) = detector.classes().filter(|&n| n != labels.len()) {
        eprintln!("warning: the model scores {n} classes but the label list has {}; names may be wrong", labels.len());
    }
    if let Some(dir) = &args.out
        && let Err(e) = std::fs::create_dir_all(dir)
    {
        eprintln!("error: cannot create output folder {}: {e}", dir.display());
        return Ok(ExitCode::from(EXIT_CANNOT_START));
    }

    let mut failed = false;
    for path in &args.images {
        if let Err(e) = detect_one(path, &args, &labels, &mut detector) {
            eprintln!("error: {e:#}");
            failed = true;
        }
    }
    Ok(if failed { ExitCode::from(EXIT_PICTURE_FAILED) } else { ExitCode::SUCCESS })
}

fn load(args: &DetectArgs) -> Result<(Labels, Detector), DetectError> {
    let labels = match &args.labels {
        Some(p) => Labels::from_file(p)?,
        None => Labels::builtin(),
    };
    let model = ModelSource::from_setting(args.model.as_deref());
    Ok((labels, Detector::load(model, args.onnxruntime.as_deref(), args.threads.into())?))
}

fn detect_one(path: &Path, args: &DetectArgs, labels: &Labels, detector: &mut Detector) -> anyhow::Result<()> {
    let img = crate::device::analysis::detect::picture::read_rgb(path)?;
    let dets = detector
        .detect(&img, args.min_score, args.nms_iou)
        .with_context(|| format!("{}: detection failed", path.display()))?;
    if args.json {
        println!("{}", json_line(path, &img, &dets, labels));
    } else {
        print!("{}", text_report(path, &img, &dets, labels, detector.last_inference_ms()));
    }
    if let Some(dir) = &args.out {
        let mut annotated = img;
        for d in &dets {
            draw_box(&mut annotated, &d.bbox, BOX_COLOR);
        }
        // Appended, not `with_extension`, which would cut "a.v2" of "a.v2.png" to "a".
        let mut name = path.file_stem().unwrap_or(path.as_os_str()).to_owned();
        name.push(".jpg");
        let target = dir.join(name);
        std::fs::write(&target, encode_jpeg(&annotated, ANNOTATED_JPEG_QUALITY))
            .with_context(|| format!("{}: cannot write the annotated copy {}", path.display(), target.display()))?;
    }
    Ok(())
}

fn round_to(v: f32, decimals: i32) -> f64 {
    let f = 10f64.powi(decimals);
    (v as f64 * f).round() / f
}

/// One line of `--json` output; fields in this order.
#[derive(Serialize)]
struct ImageLine<'a> {
    image: String,
    width: u32,
    height: u32,
    detections: Vec<DetectionJson<'a>>,
}

#[derive(Serialize)]
struct DetectionJson<'a> {
    label: &'a str,
    score: f64,
    #[serde(rename = "box")]
    bbox: [f64; 4],
}

fn json_line(path: &Path, img: &image::RgbImage, dets: &[Detection], labels: &Labels) -> String {
    let detections = dets
        .iter()
        .map(|d| {
            let b = d.bbox;
            DetectionJson {
                label: labels.name(d.class_id),
                score: round_to(d.score, 4),
                bbox: [b.x1, b.y1, b.x2, b.y2].map(|v| round_to(v, 1)),
            }
        })
        .collect();
    let line = ImageLine { image: path.display().to_string(), width: img.width(), height: img.height(), detections };
    // Plain structs of strings and finite numbers always serialise.
    serde_json::to_string(&line).unwrap_or_default()
}

fn text_report(path: &Path, img: &image::RgbImage, dets: &[Detection], labels: &Labels, ms: f32) -> String {
    let plural = if dets.len() == 1 { "" } else { "s" };
    let mut out = format!(
        "{}  {}x{}  {} detection{plural}  ({ms:.1} ms)\n",
        path.display(),
        img.width(),
        img.height(),
        dets.len()
    );
    let width = dets.iter().map(|d| labels.name(d.class_id).len()).max().unwrap_or(0);
    for d in dets {
        let b = d.bbox;
        out += &format!(
            "  {:<width$}  {:.2}  [{:.1}, {:.1}, {:.1}, {:.1}]\n",
            labels.name(d.class_id),
            d.score,
            b.x1,
            b.y1,
            b.x2,
            b.y2
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::geometry::BBox;

    fn dets() -> Vec<Detection> {
        vec![
            Detection { class_id: 0, score: 0.83456, bbox: BBox { x1: 1.04, y1: 2.0, x2: 30.96, y2: 40.26 } },
            Detection { class_id: 2, score: 0.5, bbox: BBox { x1: 0.0, y1: 0.0, x2: 10.0, y2: 10.0 } },
        ]
    }

    #[test]
    fn text_report_lists_each_detection() {
        let img = image::RgbImage::new(64, 48);
        let text = text_report(Path::new("a/b.jpg"), &img, &dets(), &Labels::builtin(), 21.04);
        assert_eq!(
            text,
            "a/b.jpg  64x48  2 detections  (21.0 ms)\n  person  0.83  [1.0, 2.0, 31.0, 40.3]\n  car     0.50  [0.0, 0.0, 10.0, 10.0]\n"
        );
    }

    #[test]
    fn json_line_rounds_scores_and_boxes() {
        let img = image::RgbImage::new(64, 48);
        let line = json_line(Path::new("b.jpg"), &img, &dets()[..1], &Labels::builtin());
        assert_eq!(
            line,
            r#"{"image":"b.jpg","width":64,"height":48,"detections":[{"label":"person","score":0.8346,"box":[1.0,2.0,31.0,40.3]}]}"#
        );
    }

    #[test]
    fn thresholds_must_be_within_0_and_1() {
        assert_eq!(unit_interval("0.3"), Ok(0.3));
        assert!(unit_interval("1.5").is_err());
        assert!(unit_interval("x").is_err());
    }
}
