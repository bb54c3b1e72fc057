//! `[detector]`: the model, its labels, ONNX Runtime and how many sessions run.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::device::analysis::detect::{BuiltinModel, DetectError, Labels, ModelSource};

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DetectorConfig {
    /// An ONNX model file, or a built-in model by name (`yolox-nano`,
    /// `yolox-nano-int8`); when absent, the float `yolox-nano`.
    pub model: Option<PathBuf>,
    /// Class names, one per line in model order; COCO-80 built in when absent.
    pub labels: Option<PathBuf>,
    /// Where libonnxruntime.so is, when not in one of the usual places.
    pub onnxruntime: Option<PathBuf>,
    /// ONNX Runtime threads per model run.
    #[serde(default = "default_threads")]
    pub threads: usize,
    /// Model sessions run side by side (each with `threads` threads). By default as
    /// many as the cameras' pictures need at the model's measured speed, with half
    /// again for headroom ([`DetectorConfig::sessions_for`]): each session holds its own
    /// working memory (about 17 MB for YOLOX-Nano), so one per core wastes it.
    pub sessions: Option<usize>,
    /// Detections below this score are not tracked at all.
    #[serde(default = "default_min_score")]
    pub min_score: f32,
    #[serde(default = "default_nms_iou")]
    pub nms_iou: f32,
}

impl Default for DetectorConfig {
    fn default() -> Self {
        DetectorConfig {
            model: None,
            labels: None,
            onnxruntime: None,
            threads: default_threads(),
            sessions: None,
            min_score: default_min_score(),
            nms_iou: default_nms_iou(),
        }
    }
}

/// Sessions are sized for this much more work than the cameras ask for at full rate:
/// inference on a busy machine runs slower than alone, and pictures come in bursts.
const SESSION_HEADROOM: f64 = 1.5;

fn default_threads() -> usize {
    1
}
fn default_min_score() -> f32 {
    0.5
}
fn default_nms_iou() -> f32 {
    0.45
}

impl DetectorConfig {
    pub(super) fn resolve_paths(&mut self, fix: &impl Fn(&mut PathBuf)) {
        // A built-in model's name is not a path.
        if !matches!(self.model_source(), ModelSource::Builtin(_)) {
            self.model.as_mut().map(fix);
        }
        self.labels.as_mut().map(fix);
        self.onnxruntime.as_mut().map(fix);
    }

    /// How many model sessions to run for `cameras` enabled cameras asking for
    /// `pictures_per_s` in all, with one model run taking `inference_ms`: `sessions`
    /// when set; else enough sessions to run the model that often with 1.5x headroom,
    /// at least 1, at most one per core (per `threads`) and one per camera.
    pub fn sessions_for(&self, cameras: usize, pictures_per_s: f64, inference_ms: f64) -> usize {
        self.sessions.unwrap_or_else(|| {
            let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
            let most = (cores / self.threads.max(1)).clamp(1, cameras.max(1));
            let busy = pictures_per_s * inference_ms / 1000.0 * SESSION_HEADROOM;
            (busy.ceil().max(1.0) as usize).min(most)
        })
    }

    /// The model the detector will load: `model` (a file or a built-in name), or the
    /// built-in default.
    pub fn model_source(&self) -> ModelSource {
        ModelSource::from_setting(self.model.as_deref())
    }

    /// The label list the detector will use (the file's, or the built-in one).
    pub fn labels(&self) -> Result<Labels, DetectError> {
        match &self.labels {
            Some(p) => Labels::from_file(p),
            None => Ok(Labels::builtin()),
        }
    }

    /// Problems of this section, and the labels when they could be read.
    pub(super) fn problems(&self, bad: &mut dyn FnMut(String, String)) -> Option<Labels> {
        if let ModelSource::File(m) = self.model_source()
            && !m.is_file()
        {
            let names: Vec<&str> = BuiltinModel::ALL.iter().map(|b| b.name()).collect();
            bad(
                "detector.model".into(),
                format!(
                    "{} does not exist; give the path of an ONNX model, a built-in model ({}), or remove the key \
                     to use this machine's default",
                    m.display(),
                    names.join(", ")
                ),
            );
        }
        if let Some(p) = &self.onnxruntime
            && !p.is_file()
        {
            bad(
                "detector.onnxruntime".into(),
                format!("{} does not exist; run scripts/setup.sh or remove the key", p.display()),
            );
        }
        if !(1..=64).contains(&self.threads) {
            bad("detector.threads".into(), format!("{} is outside 1..=64", self.threads));
        }
        if let Some(n) = self.sessions
            && !(1..=16).contains(&n)
        {
            bad("detector.sessions".into(), format!("{n} is outside 1..=16"));
        }
        if !(0.0..1.0).contains(&self.min_score) {
            bad("detector.min_score".into(), format!("{} is outside 0..1", self.min_score));
        }
        if !(0.0..=1.0).contains(&self.nms_iou) {
            bad("detector.nms_iou".into(), format!("{} is outside 0..1", self.nms_iou));
        }
        self.labels().inspect_err(|e| bad("detector.labels".into(), e.to_string())).ok()
    }
}
