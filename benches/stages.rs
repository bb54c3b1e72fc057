//! `cargo bench`: the pipeline's per-picture arithmetic at the clip's size (768x576),
//! each stage alone: letterbox into the model input, YOLOX output decoding with NMS,
//! the motion gate, and JPEG encoding. Inference and decoding are measured in their
//! real settings by `gridwatch bench`.

use std::path::Path;

use criterion::{Criterion, criterion_group, criterion_main};
use gridwatch::device::analysis::detect::yolox::{self, INPUT_SIZE, Letterbox, Scratch};
use gridwatch::device::analysis::{Grey, MotionDetector};
use gridwatch::device::config::MotionConfig;
use gridwatch::device::ingest::Yuv420;
use image::RgbImage;

fn frame(name: &str) -> RgbImage {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/reference/frames").join(name);
    gridwatch::device::analysis::detect::picture::read_rgb(&path).expect("reference frame")
}

/// A raw YOLOX-Nano output for a 416 input: background everywhere, and a few dozen
/// cells around three objects scoring high, as a street scene gives.
fn raw_output() -> (Vec<f32>, usize) {
    let row_len = 85;
    let rows = yolox::grid_rows(INPUT_SIZE);
    let mut out = vec![0.0f32; rows * row_len];
    for (i, row) in out.chunks_exact_mut(row_len).enumerate() {
        row[..4].copy_from_slice(&[0.5, 0.5, 1.0, 1.5]);
        row[4] = 0.002;
        row[5 + i % 80] = 0.01;
        // Three clusters of overlapping candidates in the stride-8 grid (52x52).
        let (x, y) = (i % 52, i / 52);
        for (cx, cy) in [(10, 20), (30, 25), (45, 40)] {
            if i < 52 * 52 && x.abs_diff(cx) <= 2 && y.abs_diff(cy) <= 2 {
                row[4] = 0.9;
                row[5] = 0.8;
            }
        }
    }
    (out, row_len)
}

fn stages(c: &mut Criterion) {
    let img = frame("vtest_f0100.png");
    let next = frame("vtest_f0200.png");
    let (w, h) = img.dimensions();

    let mut scratch = Scratch::default();
    let mut input = vec![0.0f32; yolox::input_len(INPUT_SIZE)];
    c.bench_function("letterbox 768x576 RGB -> 416", |b| {
        b.iter(|| yolox::letterbox(&img, INPUT_SIZE, &mut scratch, &mut input).unwrap())
    });
    // Camera frames arrive as the decoder's 4:2:0 planes.
    let (pic, next) = (Yuv420::from_rgb(&img), Yuv420::from_rgb(&next));
    c.bench_function("letterbox 768x576 4:2:0 -> 416", |b| {
        b.iter(|| yolox::letterbox(&pic, INPUT_SIZE, &mut scratch, &mut input).unwrap())
    });
    c.bench_function("4:2:0 to RGB 768x576 (snapshots)", |b| b.iter(|| pic.to_rgb()));

    let (raw, row_len) = raw_output();
    let lb = Letterbox::new(w, h, INPUT_SIZE);
    c.bench_function("yolox decode + nms", |b| {
        b.iter(|| yolox::nms(yolox::decode(&raw, row_len, &lb, INPUT_SIZE, 0.35).unwrap(), 0.45))
    });

    let (grey_a, grey_b) = (Grey::from_picture(&pic), Grey::from_picture(&next));
    c.bench_function("motion: grey copy of a frame", |b| b.iter(|| Grey::from_picture(&pic)));
    let mut motion = MotionDetector::new(&MotionConfig::default());
    let mut flip = false;
    c.bench_function("motion: compare with the background", |b| {
        b.iter(|| {
            flip = !flip;
            motion.observe(if flip { &grey_a } else { &grey_b })
        })
    });

    c.bench_function("jpeg 768x576 q80", |b| b.iter(|| gridwatch::device::publish::encode_jpeg(&img, 80)));
}

criterion_group!(benches, stages);
criterion_main!(benches);
