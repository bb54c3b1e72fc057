//! The one detector every camera shares. ONNX Runtime calls block and the session is
//! not shareable, so a dedicated thread owns it; cameras submit frames through a
//! bounded queue and await the answer without blocking the async workers.
//!
//! Promises: at most `queue` frames wait; a full queue is reported at once as
//! `Busy` (the caller drops that frame and counts it) rather than queueing without bound.

use std::sync::Arc;
use std::sync::mpsc::{SyncSender, TrySendError, sync_channel};

use tokio::sync::oneshot;

use crate::detect::{Detection, Detector};
use crate::frame::Frame;

/// What the detector found on one frame, and what it cost.
#[derive(Debug, Clone)]
pub struct Inference {
    pub detections: Vec<Detection>,
    pub inference_ms: f32,
}

#[derive(Debug, thiserror::Error)]
pub enum InferenceError {
    #[error("the detector is busy; frame skipped")]
    Busy,
    #[error("the detector thread has stopped")]
    Stopped,
    #[error("inference failed: {0}")]
    Failed(String),
}

struct Job {
    frame: Arc<Frame>,
    reply: oneshot::Sender<Result<Inference, String>>,
}

#[derive(Clone)]
pub struct InferenceService {
    tx: SyncSender<Job>,
}

impl InferenceService {
    /// Starts the detector thread. It ends when the last handle is dropped.
    pub fn start(
        mut detector: Detector,
        min_score: f32,
        nms_iou: f32,
        queue: usize,
    ) -> std::io::Result<InferenceService> {
        let (tx, rx) = sync_channel::<Job>(queue.max(1));
        std::thread::Builder::new().name("gridwatch-detect".into()).spawn(move || {
            for job in rx {
                let result = detector
                    .detect(&job.frame.image, min_score, nms_iou)
                    .map(|detections| Inference { detections, inference_ms: detector.last_inference_ms() })
                    .map_err(|e| e.to_string());
                // The camera may have stopped waiting; nothing to do then.
                let _ = job.reply.send(result);
            }
        })?;
        Ok(InferenceService { tx })
    }

    pub async fn detect(&self, frame: Arc<Frame>) -> Result<Inference, InferenceError> {
        let (reply, answer) = oneshot::channel();
        self.tx.try_send(Job { frame, reply }).map_err(|e| match e {
            TrySendError::Full(_) => InferenceError::Busy,
            TrySendError::Disconnected(_) => InferenceError::Stopped,
        })?;
        answer.await.map_err(|_| InferenceError::Stopped)?.map_err(InferenceError::Failed)
    }
}
