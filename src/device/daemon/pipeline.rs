//! One camera's running stages: the RTSP session (async), a decode thread (GStreamer,
//! at detect_fps) that also hands every access unit to the camera's clips, a queue of
//! one picture, and an analysis thread that runs the camera's [`CameraAnalysis`] on a
//! free model session and stores what it makes (through the clips, which hold an
//! event's `end` until its clip is complete).
//!
//! Promises: a slow stage makes the one before it drop pictures (counted as
//! frames_skipped), never queue them; a decoder that fails is rebuilt at the next
//! keyframe; a detector that keeps failing is retried with a growing pause, counted
//! in health and logged once per change; every event is in the outbox before the
//! publisher is woken.

use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use super::camera_analysis::{CameraAnalysis, DetectorUse};
use crate::contract::EventType;
use crate::device::analysis::detect::{DetectError, Detection, Detector, yolox};
use crate::device::analysis::regions::{self, TurnedView};
use crate::device::clip::{CameraClips, Job, Recipe};
use crate::device::command::Switches;
use crate::device::config::CameraConfig;
use crate::device::ingest::{self, DecodeOptions, Decoder, Frame, Ingest, IngestOptions, StreamInfo, Yuv420};
use crate::device::ops::stages::{self, Stage};
use crate::device::ops::{CameraHealth, FrameSlot, LiveCamera};
use crate::device::publish::{EventSettings, OutboxError, Outgoing, Renderer, SharedOutbox};

/// How often an idle analysis thread looks up (stop asked, pictures gone).
const IDLE_TICK: Duration = Duration::from_millis(250);

/// Everything the camera pipelines share.
pub struct Shared {
    /// The model sessions all cameras share, about one per core: a session runs one
    /// picture at a time, so one would leave the other cores idle while cameras wait.
    pub detectors: Vec<Mutex<Detector>>,
    /// Hands each analysis thread the session it waits for when all are busy.
    pub next_slot: std::sync::atomic::AtomicUsize,
    pub min_score: f32,
    pub nms_iou: f32,
    pub outbox: SharedOutbox,
    pub wake: Arc<Notify>,
    pub events: EventSettings,
    /// The desk's switches: detection off, rules disarmed.
    pub switches: Arc<Switches>,
    /// Where clips are published (their topics go in the events).
    pub topics: crate::contract::Topics,
}

impl Shared {
    /// A free model session, or when all are busy the camera's own (`slot`), waited for.
    fn free_detector(&self, slot: usize) -> std::sync::MutexGuard<'_, Detector> {
        let n = self.detectors.len();
        for i in 0..n {
            if let Ok(d) = self.detectors[(slot + i) % n].try_lock() {
                return d;
            }
        }
        self.detectors[slot % n].lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// One camera's running stages.
pub struct CameraPipeline {
    ingest: tokio::task::JoinHandle<()>,
    threads: [JoinHandle<()>; 2],
}

impl CameraPipeline {
    /// Starts the stages of `cam`, sharing with the local tools what `live` holds
    /// (health, latest picture, clips, renderer).
    pub fn start(
        cam: &CameraConfig,
        shared: &Arc<Shared>,
        live: &LiveCamera,
        health_changed: &Arc<Notify>,
        shutdown: &CancellationToken,
    ) -> anyhow::Result<CameraPipeline> {
        let (health, frames, clips, renderer) = (&live.health, &live.frames, &live.clips, live.renderer.clone());
        let (ingest_tx, ingest_rx) = mpsc::channel::<Ingest>(16);
        // One decoded frame may wait for analysis; a newer one meanwhile is skipped.
        let (frame_tx, frame_rx) = sync_channel::<Frame>(1);
        let decode = {
            let (cam, health, changed, slot) = (cam.clone(), health.clone(), health_changed.clone(), frames.clone());
            let clips = clips.clone();
            std::thread::Builder::new()
                .name(format!("decode-{}", cam.id))
                .spawn(move || decode_loop(&cam, ingest_rx, frame_tx, &health, (&slot, &clips), &changed))?
        };
        let analysis = {
            let (cam, shared, health, shutdown) = (cam.clone(), shared.clone(), health.clone(), shutdown.clone());
            let clips = clips.clone();
            std::thread::Builder::new()
                .name(format!("analyse-{}", cam.id))
                .spawn(move || analyse(&cam, &shared, &health, renderer, (frame_rx, &clips), &shutdown))?
        };
        let opts = IngestOptions {
            stall_timeout: Duration::from_secs(cam.stall_timeout_s),
            limits: cam.limits(),
            ..IngestOptions::default()
        };
        let ingest =
            tokio::spawn(ingest::run(cam.id.clone(), cam.url.get().clone(), opts, ingest_tx, shutdown.clone()));
        Ok(CameraPipeline { ingest, threads: [decode, analysis] })
    }

    /// Waits until every stage has ended (after the shutdown token was cancelled).
    pub async fn join(self, camera: &str) {
        if let Err(e) = self.ingest.await {
            error!(camera, "the camera's RTSP task failed: {e}");
        }
        let joined = tokio::task::spawn_blocking(move || self.threads.map(JoinHandle::join)).await;
        match joined {
            Ok(results) => {
                for (stage, r) in ["decode", "analysis"].iter().zip(results) {
                    if r.is_err() {
                        error!(camera, "the camera's {stage} thread panicked");
                    }
                }
            }
            Err(e) => error!(camera, "waiting for the camera's threads failed: {e}"),
        }
    }
}

/// Feeds the session's frames to a decoder made for the session's stream, and then to
/// the camera's clips; ends when ingest does. A decoder that fails is rebuilt for the
/// same stream and picks up at the next keyframe: damaged data costs pictures, never
/// the camera.
fn decode_loop(
    cam: &CameraConfig,
    mut ingest: mpsc::Receiver<Ingest>,
    frames: SyncSender<Frame>,
    health: &Arc<CameraHealth>,
    (slot, clips): (&FrameSlot, &Mutex<CameraClips>),
    health_changed: &Notify,
) {
    let mut session: Option<(StreamInfo, Decoder)> = None;
    // Decoder complaints already counted in health, of the current decoder.
    let mut counted = 0;
    // Log the first decoder failure of a session, not one line per rebuild.
    let mut decode_failed = false;
    while let Some(msg) = ingest.blocking_recv() {
        match msg {
            Ingest::Connected(info) => {
                if health.connected(&info) {
                    health_changed.notify_one();
                }
                drop(session.take()); // the old pipeline stops before the new one starts
                lock(clips).connected(info.clone());
                session = start_decoder(cam, &info, &frames, health, slot).map(|d| (info, d));
                (counted, decode_failed) = (0, false);
            }
            Ingest::Frame(f) => {
                health.frame_received(f.received_at, f.lost_packets);
                let Some((info, decoder)) = session.as_mut() else { continue };
                let pushed = decoder.push(&f);
                let fell_back = decoder.take_fallback();
                health.decoder(decoder.element(), fell_back);
                lock(clips).frame(f);
                let errors = decoder.stats().decode_errors;
                health.decode_errors(errors.saturating_sub(counted));
                counted = errors;
                if let Err(e) = pushed {
                    if !std::mem::replace(&mut decode_failed, true) {
                        warn!(camera = %cam.id, "decoder failed: {e}; restarting it at the next keyframe");
                    }
                    let info = info.clone();
                    drop(session.take());
                    session = start_decoder(cam, &info, &frames, health, slot).map(|d| (info, d));
                    counted = 0;
                }
            }
            Ingest::Disconnected { reason, stalled } => {
                session = None;
                lock(clips).disconnected();
                if health.disconnected(&reason.to_string(), stalled) {
                    health_changed.notify_one();
                }
            }
        }
    }
}

/// A decoder for `info` at the camera's analysis size and rate, handing its pictures
/// to the analysis thread (skipping them while it is busy).
fn start_decoder(
    cam: &CameraConfig,
    info: &StreamInfo,
    frames: &SyncSender<Frame>,
    health: &Arc<CameraHealth>,
    slot: &FrameSlot,
) -> Option<Decoder> {
    let (width, height) = ingest::analysis_size(info.width, info.height, cam.analysis_width);
    let (tx, h, slot) = (frames.clone(), health.clone(), slot.clone());
    let on_frame = Box::new(move |f: Frame| {
        // The latest picture stays at hand for `gridwatch snapshot`.
        if let Err(TrySendError::Full(f) | TrySendError::Disconnected(f)) = tx.try_send(slot.keep(f)) {
            h.frame_skipped();
            slot.keep_skipped(f);
        }
    });
    let opts = DecodeOptions { width, height, max_fps: cam.detect_fps };
    match Decoder::with_choice(&cam.id, info, opts, &cam.decoder, on_frame) {
        Ok(mut d) => {
            let fell_back = d.take_fallback();
            health.decoder(d.element(), fell_back);
            // camera.rs has logged the stream itself; this adds what we make of it.
            debug!(camera = %cam.id, analysis = %format!("{width}x{height}"), "decoder started");
            Some(d)
        }
        Err(e) => {
            error!(camera = %cam.id, "cannot decode this stream: {e}");
            None
        }
    }
}

/// Runs one camera's analysis on its decoded frames until the decode thread ends or
/// `shutdown`, storing every event it makes; at the end, the clips still recording
/// are finished with what they have and stored too.
fn analyse(
    cam: &CameraConfig,
    shared: &Shared,
    health: &CameraHealth,
    renderer: Renderer,
    (frames, clips): (Receiver<Frame>, &Mutex<CameraClips>),
    shutdown: &CancellationToken,
) {
    let keep = |out: Vec<Outgoing>, analysis: &mut CameraAnalysis| {
        let routed = lock(clips).route(out);
        store(&cam.id, shared, routed, |id| {
            analysis.discard(id);
            lock(clips).discard(id);
        });
    };
    let slot = shared.next_slot.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut analysis = CameraAnalysis::new(cam, &shared.events, shared.min_score, renderer);
    let mut failing = DetectorFailures::default();
    let mut last_frame = Instant::now();
    let mut switches = SwitchView::default();
    let mut stats = StatsWaiting::default();
    while !shutdown.is_cancelled() {
        stats.store(&cam.id, shared, analysis.take_stats(SystemTime::now()));
        if let Some(out) = switches.follow(&cam.id, &shared.switches, &mut analysis) {
            keep(out, &mut analysis);
        }
        let frame = match frames.recv_timeout(IDLE_TICK) {
            // Paused: the picture is dropped unseen, and silence means nothing.
            _ if !switches.detecting => continue,
            Ok(f) => f,
            Err(RecvTimeoutError::Timeout) => {
                let out = analysis.on_silence(last_frame.elapsed());
                keep(out, &mut analysis);
                continue;
            }
            Err(RecvTimeoutError::Disconnected) => break,
        };
        last_frame = Instant::now();
        let queued = SystemTime::now().duration_since(frame.captured_at).unwrap_or_default();
        stages::record(Stage::Queue, Duration::ZERO, queued);
        if failing.pausing() {
            health.frame_skipped();
            continue;
        }
        let min_score = analysis.min_score();
        let done = analysis.on_frame(frame, |pic, crops, turned| {
            let waited = Instant::now();
            let mut detector = shared.free_detector(slot);
            stages::record(Stage::Wait, Duration::ZERO, waited.elapsed());
            detect_views(&mut detector, pic, crops, turned, min_score, shared.nms_iou)
        });
        match done.detector {
            DetectorUse::Gated => health.frame_gated(),
            DetectorUse::Ran { inference_ms, crops } => {
                failing.recovered(&cam.id);
                health.frame_analysed(inference_ms);
                if crops > 0 {
                    health.crops_analysed(crops as u64);
                }
            }
            DetectorUse::Failed(e) => {
                health.detect_failed();
                failing.failed(&cam.id, &e);
            }
        }
        keep(done.events, &mut analysis);
    }
    let last = analysis.final_stats(SystemTime::now());
    let out = analysis.finish();
    store(&cam.id, shared, lock(clips).route(out), |_| {});
    let jobs = lock(clips).flush();
    for job in jobs {
        deliver_clip(job, clips, shared, true);
    }
    stats.store(&cam.id, shared, last);
}

/// Makes the job's clip and stores it with the message that names it. `stopping`: a
/// clip that must be encoded again (privacy masks: a second or more each) is not made,
/// so that a stop is not held up; its message goes without it.
pub(super) fn deliver_clip(job: Job, clips: &Mutex<CameraClips>, shared: &Shared, stopping: bool) {
    let camera = job.camera.clone();
    let event = job.message.message.event_id.clone();
    let out = if stopping && matches!(job.recipe, Recipe::Masked { .. }) && !job.frames.is_empty() {
        warn!(camera = %camera, event = %event, "stopping: this masked clip is not encoded (it would hold up the stop); the event goes without it");
        job.message
    } else {
        crate::device::clip::make(job, &shared.topics)
    };
    store(&camera, shared, vec![out], |_| {});
    // What came for the event while its clip was made (an end after a clip cut short).
    let held = lock(clips).stored(&event);
    store(&camera, shared, held, |_| {});
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Stats messages that the outbox could not take yet, oldest first: kept and offered
/// again each time round, so a failed write costs a delay, never a hole in stats' `seq`.
#[derive(Default)]
struct StatsWaiting {
    waiting: std::collections::VecDeque<crate::contract::StatsMessage>,
    failing: bool,
}

impl StatsWaiting {
    /// A day of 5-minute periods: beyond this a broken disk costs the oldest.
    const MAX: usize = 288;

    fn store(&mut self, camera: &str, shared: &Shared, new: Option<crate::contract::StatsMessage>) {
        self.waiting.extend(new);
        if self.waiting.len() > Self::MAX {
            self.waiting.pop_front();
            warn!(camera, "stats: the outbox has failed for too long; the oldest waiting period is dropped");
        }
        while let Some(m) = self.waiting.front() {
            match shared.outbox.with(|o| o.push_stats(m)) {
                Ok(seq) => {
                    info!(camera, stats_seq = seq, period_end = %m.period_end, frames = m.frames, "stats stored");
                    self.waiting.pop_front();
                    self.failing = false;
                    shared.wake.notify_one();
                }
                Err(e) => {
                    if !std::mem::replace(&mut self.failing, true) {
                        warn!(camera, "stats cannot be stored now: {e}; kept and tried again");
                    }
                    return;
                }
            }
        }
    }
}

/// The desk's switches as one analysis thread last saw them.
struct SwitchView {
    generation: u64,
    detecting: bool,
}

impl Default for SwitchView {
    fn default() -> Self {
        SwitchView { generation: 0, detecting: true }
    }
}

impl SwitchView {
    /// Takes in a change of the switches: a pause ends the camera's open events
    /// (returned, to store), a disarmed rule's open event ends at the next frame.
    fn follow(&mut self, camera: &str, switches: &Switches, analysis: &mut CameraAnalysis) -> Option<Vec<Outgoing>> {
        let generation = switches.generation();
        if generation == self.generation {
            return None;
        }
        self.generation = generation;
        analysis.set_disarmed(switches.disarmed(camera));
        let detecting = switches.detecting(camera);
        let was = std::mem::replace(&mut self.detecting, detecting);
        match (was, detecting) {
            (true, false) => Some(analysis.end_open()),
            (false, true) => {
                analysis.resume();
                None
            }
            _ => None,
        }
    }
}

/// A detector that fails on every picture is not asked again at once: the pause grows
/// from half a second to 30 s, and the log says so once when it starts and once when
/// it ends.
#[derive(Default)]
struct DetectorFailures {
    in_a_row: u32,
    until: Option<Instant>,
}

impl DetectorFailures {
    const FIRST: Duration = Duration::from_millis(500);
    const LONGEST: Duration = Duration::from_secs(30);

    fn pausing(&self) -> bool {
        self.until.is_some_and(|t| Instant::now() < t)
    }

    fn failed(&mut self, camera: &str, e: &DetectError) {
        if self.in_a_row == 0 {
            warn!(camera, "detection failed: {e}; retrying with a growing pause until it works again");
        }
        self.in_a_row = self.in_a_row.saturating_add(1);
        let pause = Self::FIRST.saturating_mul(1 << self.in_a_row.min(8).saturating_sub(1)).min(Self::LONGEST);
        self.until = Some(Instant::now() + pause);
    }

    fn recovered(&mut self, camera: &str) {
        if self.in_a_row > 0 {
            info!(camera, failures = self.in_a_row, "detection works again");
        }
        *self = DetectorFailures::default();
    }
}

/// The whole picture's detections merged with those of the `crops` of it and the
/// lying persons the turned views found; the whole picture's inference time.
fn detect_views(
    detector: &mut Detector,
    pic: &Yuv420,
    crops: &[yolox::Region],
    turned: Option<TurnedView>,
    min_score: f32,
    nms_iou: f32,
) -> Result<(Vec<Detection>, f32), DetectError> {
    let mut found = detector.detect(pic, min_score, nms_iou)?;
    let inference_ms = detector.last_inference_ms();
    if !crops.is_empty() {
        let parts = crops
            .iter()
            .map(|&r| detector.detect_region(pic, r, min_score, nms_iou).map(|d| (r, d)))
            .collect::<Result<Vec<_>, _>>()?;
        found = regions::merge(found, parts, pic.dimensions(), nms_iou);
    }
    if let Some(view) = turned {
        let mut lying = Vec::new();
        for turn in yolox::Turn::BOTH {
            lying.extend(detector.detect_turned(pic, view.region, turn, min_score, nms_iou)?);
        }
        found = regions::merge_lying(found, lying, view.person, nms_iou);
    }
    Ok((found, inference_ms))
}

/// Puts events into the outbox (numbering them) and wakes the publisher; an event whose
/// `new` cannot be stored is `discard`ed, so nothing later refers to it.
fn store(camera: &str, shared: &Shared, out: Vec<Outgoing>, mut discard: impl FnMut(&str)) {
    for ev in out {
        let m = &ev.message;
        let (event_type, id) = (m.event_type, m.event_id.clone());
        let what = match &m.detail {
            None => format!("{} {} (score {:.2})", m.label, event_type.as_str(), m.score),
            Some(d) => format!("{} {} in [{}] {d}", m.kind, event_type.as_str(), m.zones.join(",")),
        };
        match shared.outbox.with(|o| o.push(ev)) {
            Ok(seq) => {
                info!(camera = %camera, seq, event = %id, "{what}");
                shared.wake.notify_one();
            }
            // Not lost: the outbox stores it as soon as a write works.
            Err(e @ OutboxError::EndWaits { .. }) => warn!(camera = %camera, event = %id, "{what}: {e}"),
            Err(e) => {
                error!(camera = %camera, event = %id, "cannot store the event ({what}), so it is not sent: {e}");
                if event_type == EventType::New {
                    discard(&id);
                }
            }
        }
    }
}
