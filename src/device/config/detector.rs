//! `[detector]`: the model, its labels, ONNX Runtime and how many sessions run.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::device::analysis::detect::{Labels, ModelSource};

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DetectorConfig {
    /// An ONNX model file; the YOLOX-Nano model built into the binary when absent.
    pub model: Option<PathBuf>,
    /// Class names, one per line in model order; COCO-80 built in when absent.
    pub labels: Option<PathBuf>,
    /// Where libonnxruntime.so is, when not in one of the usual places.
    pub onnxruntime: Option<PathBuf>,
    /// ONNX Runtime threads per model run.
    #[serde(default = "default_threads")]
    pub threads: usize,
    /// Model sessions run side by side (each with `threads` threads); by default one
    /// per core, at most one per enabled camera. One session can keep one core busy
    /// at a time: more cameras than one core can serve need more.
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
        self.model.as_mut().map(fix);
        self.labels.as_mut().map(fix);
        self.onnxruntime.as_mut().map(fix);
    }

    /// How many model sessions to run for `cameras` enabled cameras (see `sessions`).
    pub fn sessions_for(&self, cameras: usize) -> usize {
        self.sessions.unwrap_or_else(|| {
            let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
            (cores / self.threads.max(1)).clamp(1, cameras.max(1))
        })
    }

    /// The model the detector will load: `model`, or the built-in one.
    pub fn model_source(&self) -> ModelSource {
        self.model.clone().map_or(ModelSource::Builtin, ModelSource::File)
    }

    /// The label list the detector will use (the file's, or the built-in one).
    pub fn labels(&self) -> Result<Labels, String> {
        match &self.labels {
            Some(p) => Labels::from_file(p).map_err(|e| e.to_string()),
            None => Ok(Labels::builtin()),
        }
    }

    /// Problems of this section, and the labels when they could be read.
    pub(super) fn problems(&self, bad: &mut dyn FnMut(String, String)) -> Option<Labels> {
        if let Some(m) = &self.model
            && !m.is_file()
        {
            bad(
                "detector.model".into(),
                format!(
                    "{} does not exist; give the path of an ONNX model, or remove the key to use the built-in YOLOX-Nano",
                    m.display()
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
        self.labels().inspect_err(|e| bad("detector.labels".into(), e.clone())).ok()
    }
}
