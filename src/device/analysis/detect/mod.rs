//! Object detection on the device: finding ONNX Runtime, loading the model, and
//! turning a picture into scored, labelled boxes in that picture's pixels.
//!
//! Promises: boxes are in the input image's pixel coordinates, clipped to it;
//! per-class NMS is applied; nothing below `min_score` is returned.
//! A `Detector` works with no files around: YOLOX-Nano (float, and the int8 copy
//! `scripts/quantize-model` makes) and the COCO label list are built into the binary.
//! Every error names the file involved and says what to do.

pub mod picture;
pub mod runtime;
mod silu;
pub mod yolox;

use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::time::Instant;

use ort::session::Session;
use ort::value::{TensorElementType, TensorRef};
use sha2::{Digest, Sha256};

pub use runtime::RuntimeError;
use yolox::INPUT_SIZE;

use crate::contract::Invalid;
use crate::device::geometry::BBox;
use crate::device::ops::stages::{Span, Stage};

const BUILTIN_MODEL: &[u8] = include_bytes!("../../../../models/yolox_nano.onnx");
const BUILTIN_INT8_MODEL: &[u8] = include_bytes!("../../../../models/yolox_nano_int8.onnx");
const BUILTIN_LABELS: &str = include_str!("../../../../models/coco80.txt");
const INPUT_SHAPE: [usize; 4] = [1, 3, INPUT_SIZE, INPUT_SIZE];

/// One detected object.
#[derive(Debug, Clone, PartialEq)]
pub struct Detection {
    /// Index into the model's label list (COCO order for YOLOX).
    pub class_id: usize,
    pub score: f32,
    pub bbox: BBox,
}

/// Why the detector could not start or run.
#[derive(Debug, thiserror::Error)]
pub enum DetectError {
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error("cannot read model file {}: {source}; check the path, or leave the model unset to use the built-in YOLOX-Nano", path.display())]
    ModelRead { path: PathBuf, source: std::io::Error },
    #[error(
        "model {model} cannot be used: {reason}; gridwatch needs a YOLOX model exported for 416x416 input \
         (input float32 [1, 3, 416, 416], output float32 [1, 3549, 5 + classes]); leave the model unset to use \
         the built-in YOLOX-Nano"
    )]
    Model { model: String, reason: String },
    #[error("cannot use labels file {}: {reason}; it needs one class name per line, in the model's class order", path.display())]
    Labels { path: PathBuf, reason: String },
    #[error("the picture is empty (0 pixels wide or high), or the region is not inside it")]
    EmptyImage,
    #[error("inference with model {model} failed: {reason}")]
    Inference { model: String, reason: String },
}

/// Class names in the model's output order.
#[derive(Debug, Clone, PartialEq)]
pub struct Labels(Vec<String>);

impl Labels {
    /// The 80 COCO classes the built-in model was trained on.
    pub fn builtin() -> Labels {
        Labels(BUILTIN_LABELS.lines().map(|l| l.trim().to_owned()).filter(|l| !l.is_empty()).collect())
    }

    /// Reads one name per line; trailing blank lines are ignored, inner ones are an
    /// error (they would shift every later class).
    pub fn from_file(path: &Path) -> Result<Labels, DetectError> {
        let bad = |reason: String| DetectError::Labels { path: path.to_owned(), reason };
        let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
        let mut names: Vec<String> = text.lines().map(|l| l.trim().to_owned()).collect();
        while names.last().is_some_and(|n| n.is_empty()) {
            names.pop();
        }
        if names.is_empty() {
            return Err(bad("it holds no names".into()));
        }
        if let Some(i) = names.iter().position(|n| n.is_empty()) {
            return Err(bad(format!("line {} is blank", i + 1)));
        }
        Ok(Labels(names))
    }

    /// The class index of `name`, if the list has it (exact match).
    pub fn id(&self, name: &str) -> Option<usize> {
        self.0.iter().position(|n| n == name)
    }

    /// The name of class `id`; "unknown" for an index past the end of the list.
    pub fn name(&self, id: usize) -> &str {
        self.0.get(id).map_or("unknown", String::as_str)
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// A model compiled into the binary, by the name `detector.model` gives it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BuiltinModel {
    /// `yolox-nano`: Megvii's float32 export.
    YoloxNano,
    /// `yolox-nano-int8`: the same, quantized by `scripts/quantize-model` (int8 weights
    /// and activations, the stem and the detection head in float, each SiLU one
    /// `gridwatch.QLinearSiLU` table: see `silu`).
    YoloxNanoInt8,
}

impl BuiltinModel {
    pub const ALL: [BuiltinModel; 2] = [BuiltinModel::YoloxNano, BuiltinModel::YoloxNanoInt8];

    /// The name `detector.model` and `gridwatch bench --model` take.
    pub fn name(self) -> &'static str {
        match self {
            BuiltinModel::YoloxNano => "yolox-nano",
            BuiltinModel::YoloxNanoInt8 => "yolox-nano-int8",
        }
    }

    pub fn from_name(name: &str) -> Option<BuiltinModel> {
        BuiltinModel::ALL.into_iter().find(|m| m.name() == name)
    }

    fn bytes(self) -> &'static [u8] {
        match self {
            BuiltinModel::YoloxNano => BUILTIN_MODEL,
            BuiltinModel::YoloxNanoInt8 => BUILTIN_INT8_MODEL,
        }
    }

    /// The model this machine runs when `detector.model` is unset: the float model on
    /// every architecture. The int8 model finds too few of its detections on small
    /// objects (the 1080p view of the street clip: 84.5-88 % in `gridwatch bench`, below
    /// the 95 % it must keep; docs/performance.md, fifth and sixth rounds), and int8 results are
    /// the same integers on ARM, so a faster board does not change that. A board where
    /// the float model cannot keep up can still choose it (`detector.model`).
    pub fn default_for_this_machine() -> BuiltinModel {
        BuiltinModel::YoloxNano
    }
}

/// Which model a detector runs.
#[derive(Debug, Clone, PartialEq)]
pub enum ModelSource {
    File(PathBuf),
    /// Compiled into the binary.
    Builtin(BuiltinModel),
}

impl ModelSource {
    /// What `detector.model` (or `--model`) names: a built-in model by its name, else a
    /// file; unset, this machine's default built-in model.
    pub fn from_setting(setting: Option<&Path>) -> ModelSource {
        match setting {
            None => ModelSource::Builtin(BuiltinModel::default_for_this_machine()),
            Some(p) => match p.to_str().and_then(BuiltinModel::from_name) {
                Some(m) => ModelSource::Builtin(m),
                None => ModelSource::File(p.to_owned()),
            },
        }
    }
}

/// One loaded model, ready to run on pictures of any size. Not shareable between
/// threads at once (ONNX Runtime sessions are not): give each user its own, or
/// serialise access.
pub struct Detector {
    session: Session,
    name: String,
    sha256: String,
    output_name: String,
    classes: Option<usize>,
    /// Reused for every picture: the letterboxed input, its turned copy (allocated on
    /// the first turned view) and the resize scratch.
    input: Vec<f32>,
    turned: Vec<f32>,
    scratch: yolox::Scratch,
    last_inference_ms: f32,
}

impl Detector {
    /// Finds ONNX Runtime (see [`runtime::init`]; `runtime` is an explicit library
    /// path or folder), loads and checks the model, and runs the session on `threads`
    /// intra-op threads (at least 1).
    pub fn load(model: ModelSource, runtime: Option<&Path>, threads: usize) -> Result<Detector, DetectError> {
        let (name, bytes) = match &model {
            ModelSource::Builtin(m) => (format!("{} (built-in)", m.name()), Cow::Borrowed(m.bytes())),
            ModelSource::File(path) => {
                let bytes =
                    std::fs::read(path).map_err(|source| DetectError::ModelRead { path: path.clone(), source })?;
                (path.display().to_string(), Cow::Owned(bytes))
            }
        };
        let env = runtime::init(runtime)?;
        let bad = |reason: String| DetectError::Model { model: name.clone(), reason };
        let session = build_session(&env, &bytes, threads.max(1)).map_err(|e| bad(e.to_string()))?;
        let (output_name, classes) = check_model(&session).map_err(|e| bad(e.0))?;
        Ok(Detector {
            session,
            sha256: Sha256::digest(&bytes).iter().map(|b| format!("{b:02x}")).collect(),
            name,
            output_name,
            classes,
            input: vec![0.0; yolox::input_len(INPUT_SIZE)],
            turned: Vec::new(),
            scratch: yolox::Scratch::default(),
            last_inference_ms: 0.0,
        })
    }

    /// The model file's path, or "yolox-nano (built-in)" (or "yolox-nano-int8 ...").
    pub fn model_name(&self) -> &str {
        &self.name
    }

    /// sha256 of the model's bytes, lower-case hex.
    pub fn model_sha256(&self) -> &str {
        &self.sha256
    }

    /// Classes the model scores, when its output declares them.
    pub fn classes(&self) -> Option<usize> {
        self.classes
    }

    /// Wall time of the model run (not pre- or post-processing) of the last `detect`.
    pub fn last_inference_ms(&self) -> f32 {
        self.last_inference_ms
    }

    /// Wall ms of one model run on this machine, as it is now: the fastest of a few
    /// runs on a grey picture, after one that allocates.
    pub fn time_inference(&mut self) -> Result<f32, DetectError> {
        let grey = image::RgbImage::from_pixel(768, 576, image::Rgb([114, 114, 114]));
        self.detect(&grey, 0.5, 0.45)?;
        let mut fastest = f32::MAX;
        for _ in 0..3 {
            self.detect(&grey, 0.5, 0.45)?;
            fastest = fastest.min(self.last_inference_ms);
        }
        Ok(fastest)
    }

    /// Objects in the picture scoring above `min_score`, after per-class NMS at
    /// `nms_iou`, best first, in the picture's pixels.
    pub fn detect<'a>(
        &mut self,
        pic: impl Into<yolox::Source<'a>>,
        min_score: f32,
        nms_iou: f32,
    ) -> Result<Vec<Detection>, DetectError> {
        let pic = pic.into();
        let (w, h) = pic.dimensions();
        self.detect_region(pic, yolox::Region::whole(w, h), min_score, nms_iou)
    }

    /// As [`Detector::detect`], on `region` of the picture alone, shown to the model at
    /// its full input size (small, far objects get more pixels); boxes are still in the
    /// picture's pixels, cut at the region's edges.
    pub fn detect_region<'a>(
        &mut self,
        pic: impl Into<yolox::Source<'a>>,
        region: yolox::Region,
        min_score: f32,
        nms_iou: f32,
    ) -> Result<Vec<Detection>, DetectError> {
        self.detect_view(pic.into(), region, None, min_score, nms_iou)
    }

    /// As [`Detector::detect_region`], with the model's input turned a quarter: what
    /// lies across the picture stands upright for the model. Boxes are in the picture's
    /// pixels, as it is (not turned).
    pub fn detect_turned<'a>(
        &mut self,
        pic: impl Into<yolox::Source<'a>>,
        region: yolox::Region,
        turn: yolox::Turn,
        min_score: f32,
        nms_iou: f32,
    ) -> Result<Vec<Detection>, DetectError> {
        self.detect_view(pic.into(), region, Some(turn), min_score, nms_iou)
    }

    fn detect_view(
        &mut self,
        pic: yolox::Source<'_>,
        region: yolox::Region,
        turn: Option<yolox::Turn>,
        min_score: f32,
        nms_iou: f32,
    ) -> Result<Vec<Detection>, DetectError> {
        let lb = {
            let _span = Span::start(Stage::Preprocess);
            let mut lb = yolox::letterbox_region(pic, region, INPUT_SIZE, &mut self.scratch, &mut self.input)
                .ok_or(DetectError::EmptyImage)?;
            if let Some(turn) = turn {
                self.turned.resize(self.input.len(), 0.0);
                yolox::turn_input(&self.input, &mut self.turned, INPUT_SIZE, turn);
                // The next letterbox writes every value of `input` again.
                std::mem::swap(&mut self.input, &mut self.turned);
                lb.turn = Some(turn);
            }
            lb
        };
        self.infer(&lb, min_score, nms_iou)
    }

    fn infer(&mut self, lb: &yolox::Letterbox, min_score: f32, nms_iou: f32) -> Result<Vec<Detection>, DetectError> {
        let fail = |reason: String| DetectError::Inference { model: self.name.clone(), reason };
        let input =
            TensorRef::from_array_view((INPUT_SHAPE, self.input.as_slice())).map_err(|e| fail(e.to_string()))?;
        let started = Instant::now();
        let outputs = {
            let _span = Span::start(Stage::Inference);
            self.session.run(ort::inputs![input]).map_err(|e| fail(e.to_string()))?
        };
        self.last_inference_ms = started.elapsed().as_secs_f32() * 1000.0;
        let _span = Span::start(Stage::Postprocess);
        let output =
            outputs.get(&self.output_name).ok_or_else(|| fail(format!("no output named {}", self.output_name)))?;
        let (shape, data) = output.try_extract_tensor::<f32>().map_err(|e| fail(e.to_string()))?;
        let row_len = shape.last().map_or(0, |&n| n.max(0) as usize);
        let found = yolox::decode(data, row_len, lb, INPUT_SIZE, min_score).map_err(|e| fail(e.to_string()))?;
        Ok(yolox::nms(found, nms_iou))
    }
}

/// How far one model's detections agree with a reference model's on the same
/// pictures: the reference's found (same class, IoU >= 0.7, each candidate used
/// once, best overlap first) and the candidate's left over.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Agreement {
    pub reference: usize,
    pub found: usize,
    pub extra: usize,
}

impl Agreement {
    pub const MIN_IOU: f32 = 0.7;

    pub fn of(reference: &[Detection], candidates: &[Detection]) -> Agreement {
        let mut used = vec![false; candidates.len()];
        let mut found = 0;
        for r in reference {
            let iou = |i: usize| candidates[i].bbox.iou(&r.bbox);
            let best = (0..candidates.len())
                .filter(|&i| !used[i] && candidates[i].class_id == r.class_id)
                .max_by(|&i, &j| iou(i).total_cmp(&iou(j)))
                .filter(|&i| iou(i) >= Self::MIN_IOU);
            if let Some(i) = best {
                used[i] = true;
                found += 1;
            }
        }
        Agreement { reference: reference.len(), found, extra: candidates.len() - found }
    }

    /// Adds another picture's counts.
    pub fn plus(self, o: Agreement) -> Agreement {
        Agreement { reference: self.reference + o.reference, found: self.found + o.found, extra: self.extra + o.extra }
    }

    pub fn found_pct(&self) -> f64 {
        100.0 * self.found as f64 / self.reference.max(1) as f64
    }

    pub fn extra_pct(&self) -> f64 {
        100.0 * self.extra as f64 / self.reference.max(1) as f64
    }
}

/// Separate because `SessionBuilder`'s errors are not `Send`: they stay in here.
fn build_session(env: &ort::environment::Environment, model: &[u8], threads: usize) -> ort::Result<Session> {
    Session::builder(env)?
        .with_intra_threads(threads)?
        .with_inter_threads(1)?
        // Without a memory pattern the arena is planned per run: 3 MB less a session
        // for 0.8 % more CPU per run (docs/performance.md, memory third round).
        .with_memory_pattern(false)?
        .with_operators(silu::domain()?)?
        .commit_from_memory(model)
}

/// Checks the model's declared input and output against what `yolox` expects;
/// returns the output's name and its class count when declared.
fn check_model(session: &Session) -> Result<(String, Option<usize>), Invalid> {
    // -1 is a dimension the model leaves open; it is checked again on every run.
    let fits = |got: i64, want: usize| got == want as i64 || got == -1;
    let [input] = session.inputs() else {
        return Err(Invalid(format!("it has {} inputs, expected 1", session.inputs().len())));
    };
    let dims = input.dtype().tensor_shape().map(|s| s.to_vec()).unwrap_or_default();
    let float = |t: Option<TensorElementType>| t == Some(TensorElementType::Float32);
    if !float(input.dtype().tensor_type()) || dims.len() != 4 || !dims.iter().zip(INPUT_SHAPE).all(|(&g, w)| fits(g, w))
    {
        return Err(Invalid(format!(
            "its input {} is {}, expected float32 [1, 3, 416, 416]",
            input.name(),
            input.dtype()
        )));
    }
    let Some(output) = session.outputs().first() else {
        return Err(Invalid("it has no outputs".into()));
    };
    let dims = output.dtype().tensor_shape().map(|s| s.to_vec()).unwrap_or_default();
    let rows = yolox::grid_rows(INPUT_SIZE);
    let ok = float(output.dtype().tensor_type())
        && dims.len() == 3
        && fits(dims[0], 1)
        && fits(dims[1], rows)
        && (dims[2] == -1 || dims[2] > yolox::BOX_FIELDS as i64);
    if !ok {
        return Err(Invalid(format!(
            "its output {} is {}, expected float32 [1, {rows}, 5 + classes]",
            output.name(),
            output.dtype()
        )));
    }
    let classes = (dims[2] > 0).then(|| dims[2] as usize - yolox::BOX_FIELDS);
    Ok((output.name().to_owned(), classes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::RgbImage;

    fn fixtures() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
    }

    #[test]
    fn builtin_labels_are_coco_in_model_order() {
        let l = Labels::builtin();
        assert_eq!(l.len(), 80);
        assert_eq!((l.id("person"), l.id("car"), l.id("truck")), (Some(0), Some(2), Some(7)));
        assert_eq!(l.name(79), "toothbrush");
        assert_eq!(l.name(80), "unknown");
        assert_eq!(l.id("Person"), None);
    }

    #[test]
    fn labels_file_errors_name_the_file() {
        let dir = std::env::temp_dir().join(format!("gridwatch-labels-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let good = dir.join("good.txt");
        std::fs::write(&good, "person\r\nbike\n\n").unwrap();
        let l = Labels::from_file(&good).unwrap();
        assert_eq!((l.len(), l.id("bike")), (2, Some(1)));
        let gap = dir.join("gap.txt");
        std::fs::write(&gap, "person\n\nbike\n").unwrap();
        let msg = Labels::from_file(&gap).unwrap_err().to_string();
        assert!(msg.contains("gap.txt") && msg.contains("line 2 is blank"), "{msg}");
        let msg = Labels::from_file(&dir.join("missing.txt")).unwrap_err().to_string();
        assert!(msg.contains("missing.txt"), "{msg}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_missing_or_wrong_model_file_is_named() {
        let missing = fixtures().join("no-such-model.onnx");
        let msg = Detector::load(ModelSource::File(missing), None, 1).err().expect("must fail").to_string();
        assert!(msg.contains("no-such-model.onnx"), "{msg}");
        // Not a model at all: ONNX Runtime's parser refuses it.
        let labels = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/coco80.txt");
        let msg = Detector::load(ModelSource::File(labels), None, 1).err().expect("must fail").to_string();
        assert!(msg.starts_with("model ") && msg.contains("coco80.txt cannot be used"), "{msg}");
    }

    /// A minimal ONNX model, hand-encoded: one Identity node on a float tensor of `dims`.
    fn identity_model(dims: &[u64]) -> Vec<u8> {
        fn varint(mut v: u64, out: &mut Vec<u8>) {
            while v >= 0x80 {
                out.push(v as u8 | 0x80);
                v >>= 7;
            }
            out.push(v as u8);
        }
        fn bytes(field: u64, data: &[u8]) -> Vec<u8> {
            let mut out = Vec::new();
            varint(field << 3 | 2, &mut out);
            varint(data.len() as u64, &mut out);
            out.extend_from_slice(data);
            out
        }
        fn int(field: u64, v: u64) -> Vec<u8> {
            let mut out = Vec::new();
            varint(field << 3, &mut out);
            varint(v, &mut out);
            out
        }
        let shape: Vec<u8> = dims.iter().flat_map(|&d| bytes(1, &int(1, d))).collect();
        let tensor_type = [int(1, 1), bytes(2, &shape)].concat(); // elem_type 1 = float
        let value = |name: &str| [bytes(1, name.as_bytes()), bytes(2, &bytes(1, &tensor_type))].concat();
        let node = [bytes(1, b"x"), bytes(2, b"y"), bytes(4, b"Identity")].concat();
        let graph = [bytes(1, &node), bytes(2, b"g"), bytes(11, &value("x")), bytes(12, &value("y"))].concat();
        [int(1, 7), bytes(7, &graph), bytes(8, &int(2, 13))].concat()
    }

    #[test]
    fn a_model_of_the_wrong_shape_is_refused_by_name() {
        let path = std::env::temp_dir().join(format!("gridwatch-identity-{}.onnx", std::process::id()));
        let refusal = |dims: &[u64]| {
            std::fs::write(&path, identity_model(dims)).unwrap();
            let result = Detector::load(ModelSource::File(path.clone()), None, 1);
            std::fs::remove_file(&path).unwrap();
            result.err().expect("must fail").to_string()
        };
        let msg = refusal(&[1, 3, 224, 224]);
        assert!(
            msg.contains("gridwatch-identity-") && msg.contains("its input x is Tensor<f32>(1, 3, 224, 224)"),
            "{msg}"
        );
        let msg = refusal(&[1, 3, 416, 416]);
        assert!(msg.contains("its output y is Tensor<f32>(1, 3, 416, 416), expected float32 [1, 3549"), "{msg}");
    }

    #[test]
    fn empty_pictures_are_an_error_not_a_panic() {
        let mut d =
            Detector::load(ModelSource::Builtin(BuiltinModel::YoloxNano), None, 1).unwrap_or_else(|e| panic!("{e}"));
        assert!(matches!(d.detect(&RgbImage::new(0, 0), 0.3, 0.45), Err(DetectError::EmptyImage)));
    }

    /// The real model on every reference picture must find what an independent
    /// implementation (onnxruntime in Python, Pillow letterbox) found.
    #[test]
    fn built_in_model_matches_the_reference_detections() {
        let root = fixtures();
        let text = std::fs::read_to_string(root.join("reference/detections.json")).expect("reference file");
        let reference: serde_json::Value = serde_json::from_str(&text).expect("reference JSON");
        let images = reference["images"].as_object().expect("\"images\" object");
        assert!(images.len() >= 9, "reference lists {} images", images.len());
        // Fails (does not skip) when ONNX Runtime is missing: the message says how to fix it.
        let mut detector =
            Detector::load(ModelSource::Builtin(BuiltinModel::YoloxNano), None, 1).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(detector.model_sha256(), reference["model_sha256"].as_str().unwrap_or_default());
        let labels = Labels::builtin();

        let (mut report, mut failed, mut total_ms) = (Vec::new(), false, 0.0f32);
        // (worst IoU, worst score difference) over lossless and over JPEG pictures.
        let mut worst = [(1.0f32, 0.0f32); 2];
        for (key, expected) in images {
            let img = crate::device::analysis::detect::picture::read_rgb(&root.join(key))
                .unwrap_or_else(|e| panic!("{key}: {e:#}"));
            let ours = detector.detect(&img, 0.30, 0.45).unwrap_or_else(|e| panic!("{key}: {e}"));
            total_ms += detector.last_inference_ms();
            let worst = &mut worst[usize::from(!key.ends_with(".png"))];
            let mut used = vec![false; ours.len()];
            let mut problems = Vec::new();
            let wanted = expected["detections"].as_array().expect("detections array");
            for r in wanted {
                let label = r["label"].as_str().unwrap_or_default();
                let score = r["score"].as_f64().unwrap_or_default() as f32;
                let b: Vec<f32> =
                    r["box"].as_array().expect("box").iter().filter_map(|v| v.as_f64()).map(|v| v as f32).collect();
                let rbox = BBox { x1: b[0], y1: b[1], x2: b[2], y2: b[3] };
                let best = (0..ours.len())
                    .filter(|&i| !used[i] && labels.name(ours[i].class_id) == label)
                    .max_by(|&i, &j| ours[i].bbox.iou(&rbox).total_cmp(&ours[j].bbox.iou(&rbox)));
                let Some(i) = best else {
                    problems.push(format!("reference {label} {score:.4} {rbox:?}: no {label} found"));
                    continue;
                };
                let (iou, diff) = (ours[i].bbox.iou(&rbox), (ours[i].score - score).abs());
                if iou >= 0.9 && diff <= 0.03 {
                    used[i] = true;
                    *worst = (worst.0.min(iou), worst.1.max(diff));
                } else {
                    problems.push(format!(
                        "reference {label} {score:.4} {rbox:?}: closest is {:.4} {:?} (IoU {iou:.3})",
                        ours[i].score, ours[i].bbox
                    ));
                }
            }
            for (d, _) in ours.iter().zip(&used).filter(|(d, used)| !**used && d.score > 0.35) {
                problems.push(format!("extra {} {:.4} {:?}", labels.name(d.class_id), d.score, d.bbox));
            }
            failed |= !problems.is_empty();
            report.push(format!("{key}: {} expected, {} found, {} problems", wanted.len(), ours.len(), problems.len()));
            report.extend(problems.into_iter().map(|p| format!("    {p}")));
        }
        let summary = format!(
            "lossless: worst IoU {:.4}, worst score difference {:.4}; JPEG: worst IoU {:.4}, worst score difference \
             {:.4}; mean inference {:.1} ms",
            worst[0].0,
            worst[0].1,
            worst[1].0,
            worst[1].1,
            total_ms / images.len() as f32
        );
        println!("{}\n{summary}", report.join("\n"));
        assert!(!failed, "detections differ from the reference:\n{}\n{summary}", report.join("\n"));
    }

    /// The int8 model against the float one on every vendored reference frame and
    /// photo (none of which calibrated it): of the float model's detections scoring
    /// 0.5 or more, at least 95 % found (same label, IoU >= 0.7) among the int8
    /// model's scoring 0.5 or more, and at most 5 % extra.
    #[test]
    fn int8_model_finds_what_the_float_model_finds() {
        let root = fixtures();
        let mut pictures: Vec<PathBuf> = Vec::new();
        for dir in ["reference/frames", "photos"] {
            let mut files: Vec<PathBuf> =
                std::fs::read_dir(root.join(dir)).expect(dir).map(|e| e.expect("entry").path()).collect();
            files.sort();
            pictures.extend(files);
        }
        assert!(pictures.len() >= 9, "{} pictures", pictures.len());
        let load = |m| Detector::load(ModelSource::Builtin(m), None, 1).unwrap_or_else(|e| panic!("{e}"));
        let (mut fp32, mut int8) = (load(BuiltinModel::YoloxNano), load(BuiltinModel::YoloxNanoInt8));
        let (mut wanted, mut found, mut extra, mut report) = (0, 0, 0, Vec::new());
        for path in &pictures {
            let img = picture::read_rgb(path).unwrap_or_else(|e| panic!("{}: {e:#}", path.display()));
            let reference = fp32.detect(&img, 0.5, 0.45).expect("fp32");
            let ours = int8.detect(&img, 0.5, 0.45).expect("int8");
            let a = Agreement::of(&reference, &ours);
            let hits = a.found;
            wanted += a.reference;
            found += a.found;
            extra += a.extra;
            report.push(format!(
                "{}: fp32 {}, int8 {}, found {hits}",
                path.file_name().unwrap_or_default().to_string_lossy(),
                reference.len(),
                ours.len()
            ));
        }
        let (found_pct, extra_pct) = (100.0 * found as f64 / wanted as f64, 100.0 * extra as f64 / wanted as f64);
        let summary = format!("{found}/{wanted} found ({found_pct:.1} %), {extra} extra ({extra_pct:.1} %)");
        println!("{}\n{summary}", report.join("\n"));
        assert!(wanted >= 30, "too few float detections to judge: {summary}");
        assert!(found_pct >= 95.0 && extra_pct <= 5.0, "{}\n{summary}", report.join("\n"));
    }

    /// A picture turned a quarter clockwise, shown to the model turned back: what the
    /// model finds is what it finds upright, at the turned picture's places (the
    /// person_down views rest on this arithmetic).
    #[test]
    fn a_turned_view_finds_on_a_turned_picture_what_the_upright_view_finds() {
        let root = fixtures();
        let mut detector =
            Detector::load(ModelSource::Builtin(BuiltinModel::YoloxNano), None, 1).unwrap_or_else(|e| panic!("{e}"));
        let mut total = Agreement::default();
        for entry in std::fs::read_dir(root.join("reference/frames")).expect("frames") {
            let path = entry.expect("entry").path();
            let img = picture::read_rgb(&path).unwrap_or_else(|e| panic!("{}: {e:#}", path.display()));
            let h = img.height() as f32;
            // rotate90 turns clockwise: (x, y) goes to (h - y, x).
            let upright: Vec<Detection> = (detector.detect(&img, 0.5, 0.45).expect("upright").into_iter())
                .map(|d| {
                    let b = d.bbox;
                    Detection { bbox: BBox { x1: h - b.y2, y1: b.x1, x2: h - b.y1, y2: b.x2 }, ..d }
                })
                .collect();
            let lying = image::imageops::rotate90(&img);
            let (w, h) = lying.dimensions();
            let region = yolox::Region::whole(w, h);
            let found = detector.detect_turned(&lying, region, yolox::Turn::Anticlockwise, 0.5, 0.45).expect("turned");
            total = total.plus(Agreement::of(&upright, &found));
        }
        assert!(total.reference >= 20, "{total:?}");
        assert!(total.found_pct() >= 90.0 && total.extra_pct() <= 10.0, "{total:?}");
    }
}
