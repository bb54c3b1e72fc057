//! The daemon: wires the stages together for every configured camera and runs them
//! until told to stop.
//!
//! Per camera: `camera` (RTSP, async) -> a decode thread (GStreamer, at detect_fps)
//! -> a queue of one frame -> an analysis thread (detection on the one shared model,
//! tracking, events, snapshots) -> `outbox`; one async `mqtt` publisher drains the
//! outbox for the whole site. Blocking work (GStreamer state changes, ONNX Runtime,
//! JPEG, SQLite) stays on threads of its own, off the async workers that keep RTSP
//! and MQTT moving.
//!
//! Promises: a slow stage makes the one before it drop frames (counted as
//! frames_skipped), never queue them; every event is in the outbox before anything is
//! sent; an event whose camera stops delivering pictures ends about 2 s after it was
//! last seen; on stop every open event gets its `end`; events left open by a crash
//! get theirs at the next start.

use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;
use serde_json::json;
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use crate::camera::{self, Ingest, IngestOptions};
use crate::config::{CameraConfig, Config, RegionsMode};
use crate::decode::{self, DecodeOptions, Decoder};
use crate::detect::{Detection, Detector, yolox};
use crate::event::{EventSettings, EventType, ObjectEvents, Outgoing, RuleEvents, timestamp};
use crate::filter::Filters;
use crate::frame::{Frame, StreamInfo};
use crate::health::CameraHealth;
use crate::live::{FrameSlot, Live, LiveCamera};
use crate::motion::{Grey, MotionDetector};
use crate::mqtt::{self, MqttSettings, Retained, Topics};
use crate::mqtt_link::MqttLink;
use crate::outbox::{Outbox, SharedOutbox};
use crate::regions::{self, Crop};
use crate::rules::{self, CameraRules, RuleEngine, TrackView};
use crate::snapshot::Renderer;
use crate::stages::{self, Span, Stage};
use crate::tamper::TamperDetector;
use crate::track::{Track, Tracker, TrackerConfig};
use crate::yuv::Yuv420;

/// How often health is published when nothing changes (the contract says <= 30 s).
const HEALTH_INTERVAL: Duration = Duration::from_secs(30);
/// How often an idle analysis thread looks up (stop asked, pictures gone).
const IDLE_TICK: Duration = Duration::from_millis(250);

/// Everything the camera pipelines share.
struct Shared {
    /// The model sessions all cameras share, about one per core: a session runs one
    /// picture at a time, so one would leave the other cores idle while cameras wait.
    detectors: Vec<Mutex<Detector>>,
    /// Hands each analysis thread the session it waits for when all are busy.
    next_slot: std::sync::atomic::AtomicUsize,
    min_score: f32,
    nms_iou: f32,
    outbox: SharedOutbox,
    wake: Arc<Notify>,
    events: EventSettings,
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

/// Runs the daemon for `cfg` until `shutdown` is cancelled.
pub async fn run(cfg: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    tune_allocator();
    let labels = Arc::new(cfg.labels().map_err(anyhow::Error::msg)?);
    let model = cfg.model_source();
    let (runtime, threads, sessions) =
        (cfg.detector.onnxruntime.clone(), cfg.detector.threads, cfg.detector_sessions());
    let mut detectors = tokio::task::spawn_blocking(move || {
        (0..sessions).map(|_| Detector::load(model.clone(), runtime.as_deref(), threads)).collect::<Result<Vec<_>, _>>()
    })
    .await
    .context("loading the model")??;
    let detector = detectors.remove(0);
    info!(model = %detector.model_name(), sha256 = %detector.model_sha256(), sessions, threads, "model loaded");
    let (model_name, model_sha256) = (detector.model_name().to_owned(), detector.model_sha256().to_owned());

    let topics = Topics { root: cfg.mqtt.topic_root.clone(), site: cfg.site.clone() };
    let info_json = json!({
        "schema": "gridwatch.info/1",
        "version": env!("CARGO_PKG_VERSION"),
        "site": cfg.site,
        "started_at": timestamp(SystemTime::now()),
        "cameras": cfg.cameras.iter().map(|c| json!({"id": c.id, "name": c.display_name()})).collect::<Vec<_>>(),
        "model": {"name": detector.model_name(), "sha256": detector.model_sha256()},
    })
    .to_string();

    let outbox = open_outbox(&cfg)?;
    let wake = Arc::new(Notify::new());
    let (retained_tx, retained_rx) = mpsc::channel::<Retained>(64);
    let publisher_stop = CancellationToken::new();
    let link = Arc::new(MqttLink::default());
    let settings = MqttSettings {
        host: cfg.mqtt.host.clone(),
        port: cfg.mqtt.port,
        client_id: cfg.client_id(),
        username: cfg.mqtt.username.clone(),
        password: cfg.mqtt_password().map_err(anyhow::Error::msg)?,
        keep_alive: Duration::from_secs(cfg.mqtt.keep_alive_s),
        topics: topics.clone(),
        tls: match &cfg.mqtt.tls {
            Some(tls) => Some(crate::tls::client_config(tls).map_err(|(key, why)| anyhow::anyhow!("{key}: {why}"))?),
            None => None,
        },
        tls_ca_file: cfg.mqtt.tls.as_ref().and_then(|t| t.ca_file.clone()),
        max_events_per_s: cfg.mqtt.max_events_per_s,
        link: link.clone(),
    };
    let publisher =
        tokio::spawn(mqtt::run(settings, info_json, outbox.clone(), wake.clone(), retained_rx, publisher_stop.clone()));

    let shared = Arc::new(Shared {
        detectors: std::iter::once(detector).chain(detectors).map(Mutex::new).collect(),
        next_slot: Default::default(),
        min_score: cfg.detector.min_score,
        nms_iou: cfg.detector.nms_iou,
        outbox,
        wake,
        events: EventSettings {
            topic_root: topics.root.clone(),
            site: cfg.site.clone(),
            labels,
            jpeg_quality: cfg.snapshot.quality,
            update_interval: Duration::from_secs(5),
            better_snapshot_ratio: 1.25,
        },
    });

    let live_cameras: Vec<LiveCamera> = cfg
        .cameras
        .iter()
        .map(|c| LiveCamera {
            id: c.id.clone(),
            name: c.display_name().to_owned(),
            enabled: c.enabled,
            detect_fps: c.detect_fps,
            stall_timeout: Duration::from_secs(c.stall_timeout_s),
            health: Arc::new(CameraHealth::new(&c.id, c.enabled)),
            frames: FrameSlot::default(),
            renderer: Renderer::new(c),
        })
        .collect();
    let healths: Vec<Arc<CameraHealth>> = live_cameras.iter().map(|c| c.health.clone()).collect();
    let health_changed = Arc::new(Notify::new());
    let mut pipelines = Vec::new();
    for (cam, live_cam) in cfg.cameras.iter().zip(&live_cameras) {
        if !cam.enabled {
            info!(camera = %cam.id, "camera disabled in the configuration");
            continue;
        }
        match CameraPipeline::start(cam, &shared, &live_cam.health, &live_cam.frames, &health_changed, &shutdown) {
            Ok(p) => pipelines.push(p),
            Err(e) => error!(camera = %cam.id, "cannot start the camera's pipeline: {e:#}"),
        }
    }

    let live = Arc::new(Live {
        site: cfg.site.clone(),
        started_at: SystemTime::now(),
        started: Instant::now(),
        model_name,
        model_sha256,
        broker: format!("{}:{}", cfg.mqtt.host, cfg.mqtt.port),
        cameras: live_cameras,
        outbox: shared.outbox.clone(),
        link,
        rates: Mutex::default(),
        watchdog_problem: Mutex::default(),
    });
    // The local tools are not worth failing the daemon for: their trouble is logged.
    let tools_stop = CancellationToken::new();
    let control = match cfg.control.enabled {
        true => crate::control::serve_at(&cfg.control_socket(), cfg.control.mode, live.clone(), tools_stop.clone())
            .await
            .inspect_err(|e| error!("{e:#}; gridwatch status and snapshot will not work"))
            .ok(),
        false => None,
    };
    let metrics = match cfg.metrics.port {
        Some(port) => {
            let addr = std::net::SocketAddr::new(cfg.metrics.listen, port);
            crate::metrics::serve(addr, live.clone(), tools_stop.clone()).await.inspect_err(|e| error!("{e:#}")).ok()
        }
        None => None,
    };
    // The publisher's loop goes round at least once a keep-alive, and between
    // reconnect attempts (at most 30 s apart).
    let publisher_limit = Duration::from_secs(90).max(Duration::from_secs(3 * cfg.mqtt.keep_alive_s));
    let watchdog = tokio::spawn(crate::watchdog::run(live.clone(), publisher_limit, tools_stop.clone()));
    let trimmer = tokio::spawn(trim_allocator(tools_stop.clone()));

    info!(site = %cfg.site, cameras = pipelines.len(), "gridwatch running");
    crate::notify::ready(&format!("running: {} camera(s)", pipelines.len()));

    let health_stop = CancellationToken::new();
    let health_task = tokio::spawn(publish_health(
        healths,
        topics,
        shared.outbox.clone(),
        retained_tx,
        health_changed,
        health_stop.clone(),
    ));

    shutdown.cancelled().await;
    crate::notify::stopping();
    info!("stopping: ending open events");
    for p in pipelines {
        p.join().await;
    }
    health_stop.cancel();
    let _ = health_task.await;
    publisher_stop.cancel();
    let _ = publisher.await;
    tools_stop.cancel();
    let _ = watchdog.await;
    let _ = trimmer.await;
    if let Some(m) = metrics {
        let _ = m.await;
    }
    if let Some(c) = control {
        c.finish().await;
    }
    info!("stopped");
    Ok(())
}

/// Keeps glibc's malloc from holding on to memory over months of reconnects. Each
/// camera session starts threads and frees megabytes of pictures; by default glibc
/// gives busy threads arenas of their own (up to 8 per core) and raises its mmap
/// threshold as large blocks are freed, so freed pictures stay in fragmented arenas
/// and the resident size creeps up (+15 % over 100 reconnects, measured). Two arenas
/// and a fixed threshold hand large blocks back to the system when freed.
fn tune_allocator() {
    // SAFETY: mallopt only sets allocator parameters; it is safe to call at any time.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
        libc::mallopt(libc::M_MMAP_THRESHOLD, 256 * 1024);
    }
}

/// Hands the free pages inside malloc's heaps back to the system every 30 s. Small
/// blocks (ONNX Runtime's, GStreamer's, the network's) free pages in the middle of a
/// heap that glibc keeps until asked: about 7 MB of 120 at 4 cameras (measured with
/// `gridwatch bench`). A pass only walks the free lists.
async fn trim_allocator(stop: CancellationToken) {
    let mut every = tokio::time::interval(Duration::from_secs(30));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = every.tick() => {}
        }
        // SAFETY: malloc_trim only returns free memory; it is safe to call at any time.
        let _ = tokio::task::spawn_blocking(|| unsafe { libc::malloc_trim(0) }).await;
    }
}

/// Opens the outbox and ends the events a crash left open, before anything new.
fn open_outbox(cfg: &Config) -> anyhow::Result<SharedOutbox> {
    let mut outbox = Outbox::open(&cfg.storage.dir)?.with_budget(cfg.storage.max_bytes);
    for ev in outbox.end_orphans()? {
        warn!(camera = %ev.camera, seq = ev.seq, event = %ev.event_id,
              "{} event ended at start: gridwatch had stopped without a clean shutdown", ev.label);
    }
    let pending = outbox.pending_count()?;
    if pending > 0 {
        info!(pending, "outbox holds events from before; they go out first");
    }
    Ok(SharedOutbox::new(outbox))
}

/// Publishes every camera's health when one changes state, and every 30 s.
async fn publish_health(
    healths: Vec<Arc<CameraHealth>>,
    topics: Topics,
    outbox: SharedOutbox,
    tx: mpsc::Sender<Retained>,
    changed: Arc<Notify>,
    stop: CancellationToken,
) {
    let send = |h: &CameraHealth| {
        let report = h.report();
        if let Ok(payload) = serde_json::to_vec(&report) {
            let _ = tx.try_send(Retained { topic: topics.health(&report.camera), payload });
        }
    };
    let publish_all = |stopping: bool| {
        let (healths, outbox) = (&healths, &outbox);
        async move {
            let evictions = outbox.with_async(|o| o.evictions().clone()).await;
            for h in healths {
                let e = evictions.get(h.camera()).copied().unwrap_or_default();
                h.set_evictions(e.snapshots, e.events);
                if stopping {
                    h.stopped();
                }
                send(h);
            }
        }
    };
    loop {
        publish_all(false).await;
        tokio::select! {
            _ = tokio::time::sleep(HEALTH_INTERVAL) => {}
            _ = changed.notified() => {}
            _ = stop.cancelled() => break,
        }
    }
    // Final word, once the pipelines have ended (their last events may have evicted
    // pictures): every camera offline, sent before the publisher says "stopped".
    publish_all(true).await;
}

/// One camera's running stages.
struct CameraPipeline {
    ingest: tokio::task::JoinHandle<()>,
    threads: [JoinHandle<()>; 2],
}

impl CameraPipeline {
    fn start(
        cam: &CameraConfig,
        shared: &Arc<Shared>,
        health: &Arc<CameraHealth>,
        frames: &FrameSlot,
        health_changed: &Arc<Notify>,
        shutdown: &CancellationToken,
    ) -> anyhow::Result<CameraPipeline> {
        let url = url::Url::parse(&cam.url).context("camera url")?;
        let (ingest_tx, ingest_rx) = mpsc::channel::<Ingest>(16);
        // One decoded frame may wait for analysis; a newer one meanwhile is skipped.
        let (frame_tx, frame_rx) = sync_channel::<Frame>(1);
        let decode = {
            let (cam, health, changed, slot) = (cam.clone(), health.clone(), health_changed.clone(), frames.clone());
            std::thread::Builder::new()
                .name(format!("decode-{}", cam.id))
                .spawn(move || decode_loop(&cam, ingest_rx, frame_tx, &health, &slot, &changed))?
        };
        let analysis = {
            let (cam, shared, health, shutdown) = (cam.clone(), shared.clone(), health.clone(), shutdown.clone());
            std::thread::Builder::new()
                .name(format!("analyse-{}", cam.id))
                .spawn(move || analyse(&cam, &shared, &health, frame_rx, &shutdown))?
        };
        let opts =
            IngestOptions { stall_timeout: Duration::from_secs(cam.stall_timeout_s), ..IngestOptions::default() };
        let ingest = tokio::spawn(camera::run(cam.id.clone(), url, opts, ingest_tx, shutdown.clone()));
        Ok(CameraPipeline { ingest, threads: [decode, analysis] })
    }

    /// Waits until every stage has ended (after the shutdown token was cancelled).
    async fn join(self) {
        let _ = self.ingest.await;
        let _ = tokio::task::spawn_blocking(move || self.threads.map(JoinHandle::join)).await;
    }
}

/// Feeds the session's frames to a decoder made for the session's stream; ends when
/// ingest does. A decoder that fails is rebuilt for the same stream and picks up at
/// the next keyframe: damaged data costs pictures, never the camera.
fn decode_loop(
    cam: &CameraConfig,
    mut ingest: mpsc::Receiver<Ingest>,
    frames: SyncSender<Frame>,
    health: &Arc<CameraHealth>,
    slot: &FrameSlot,
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
                session = start_decoder(cam, &info, &frames, health, slot).map(|d| (info, d));
                (counted, decode_failed) = (0, false);
            }
            Ingest::Frame(f) => {
                health.frame_received(f.received_at, f.lost_packets);
                let Some((info, decoder)) = session.as_mut() else { continue };
                let pushed = decoder.push(&f);
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
                if health.disconnected(&reason, stalled) {
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
    let (width, height) = decode::analysis_size(info.width, info.height, cam.analysis_width);
    let (tx, h, slot) = (frames.clone(), health.clone(), slot.clone());
    let on_frame = Box::new(move |f: Frame| {
        // The latest picture stays at hand for `gridwatch snapshot`.
        if let Err(TrySendError::Full(f) | TrySendError::Disconnected(f)) = tx.try_send(slot.keep(f)) {
            h.frame_skipped();
            slot.keep_skipped(f);
        }
    });
    let opts = DecodeOptions { width, height, max_fps: cam.detect_fps };
    match Decoder::new(&cam.id, info, opts, on_frame) {
        Ok(d) => {
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

/// Detection, tracking, zones, rules and events for one camera's decoded frames, until
/// the decode thread ends or `shutdown`. Data flows one way: frame -> motion gate ->
/// detector (when due) -> filters -> tracker -> zones -> rules -> events -> outbox.
fn analyse(
    cam: &CameraConfig,
    shared: &Shared,
    health: &CameraHealth,
    frames: Receiver<Frame>,
    shutdown: &CancellationToken,
) {
    let labels = &shared.events.labels;
    let slot = shared.next_slot.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let filters = Filters::new(cam, labels, shared.min_score);
    let object_labels: Vec<usize> = cam.track.iter().filter_map(|l| labels.id(l)).collect();
    let mut tracker_cfg = TrackerConfig::for_fps(cam.detect_fps);
    tracker_cfg.one_kind = filters.one_kind().to_vec();
    if cam.motion.enabled {
        tracker_cfg.min_travel = 0.5;
    }
    tracker_cfg.confirm_score =
        cam.tracked_labels().iter().filter_map(|l| labels.id(l)).map(|c| (c, filters.confirm_score(c))).collect();
    // Pictures that stop coming (camera gone, stream stalled) end the open events as
    // the tracker would have after that many frames without the object.
    let loss_window = Duration::from_secs_f64(f64::from(tracker_cfg.max_misses) / cam.detect_fps);
    let mut tracker = Tracker::new(tracker_cfg);
    let mut engine = RuleEngine::new(cam, labels);
    let mut camera_rules = CameraRules::new(cam);
    let mut motion = cam.motion.enabled.then(|| MotionDetector::new(&cam.motion));
    let mut tamper = camera_rules.watches_tamper().then(TamperDetector::new);
    let recheck = Duration::from_secs_f64(cam.motion.recheck_s);
    let renderer = Renderer::new(cam);
    let mut events = ObjectEvents::new(shared.events.clone(), &cam.id).with_snapshots(renderer.clone(), engine.zones());
    let mut rule_events = RuleEvents::new(shared.events.clone(), &cam.id, renderer, engine.zones());
    let min_score = filters.detect_floor().min(shared.min_score);
    let mut last: Option<Frame> = None;
    let mut last_frame = Instant::now();
    let mut last_detect: Option<SystemTime> = None;
    // Region crops for the current picture size (planned again when it changes).
    let zone_shapes: Vec<_> = engine.zones().iter().map(|z| z.polygon.clone()).collect();
    let mut crops: ((u32, u32), Vec<Crop>) = ((0, 0), Vec::new());
    while !shutdown.is_cancelled() {
        let frame = match frames.recv_timeout(IDLE_TICK) {
            Ok(f) => f,
            Err(RecvTimeoutError::Timeout) => {
                let silent = last_frame.elapsed();
                if silent > loss_window {
                    let size = last.as_ref().map_or((0, 0), |f| f.picture.dimensions());
                    let gone = tracker.drain_confirmed();
                    let out = events.end_all(&gone, size, None);
                    store(&cam.id, shared, out, |id| events.discard(id));
                    engine.observe(SystemTime::now(), &[], size);
                    // Zone and tamper incidents end; the camera may be offline.
                    let last_at = last.as_ref().map(|f| f.captured_at);
                    let offline = camera_rules.offline(silent, last_at).into_iter().collect();
                    let out = rule_events.on_frame(offline, SystemTime::now(), last.as_ref());
                    store(&cam.id, shared, out, |id| rule_events.discard(id));
                }
                continue;
            }
            Err(RecvTimeoutError::Disconnected) => break,
        };
        last_frame = Instant::now();
        let now = frame.captured_at;
        stages::record(Stage::Queue, Duration::ZERO, SystemTime::now().duration_since(now).unwrap_or_default());
        let size = frame.picture.dimensions();
        let (sign, moved) = {
            let _span = Span::start(Stage::Motion);
            let grey = (motion.is_some() || tamper.is_some()).then(|| Grey::from_picture(&frame.picture));
            let sign = tamper.as_mut().zip(grey.as_ref()).and_then(|(t, g)| t.observe(g));
            (sign, motion.as_mut().zip(grey.as_ref()).map(|(m, g)| m.observe(g)))
        };

        // The gate: detect when something moves, while any confirmed object is unsettled
        // (moving, or missing), and otherwise only every `recheck`.
        let due = last_detect.is_none_or(|t| now.duration_since(t).unwrap_or_default() >= recheck);
        // Missing, or not yet stopped: where it is now is not known without the model.
        let settling = |t: &Track| t.misses > 0 || engine.still_for(t.id, now) < rules::STOPPED_AFTER;
        let unsettled = tracker.tracks().iter().any(|t| t.confirmed && settling(t));
        if cam.regions == RegionsMode::Auto && crops.0 != size {
            crops = (size, regions::plan(&zone_shapes, size, yolox::INPUT_SIZE as u32));
            for c in &crops.1 {
                let (r, zones) =
                    (c.region, c.zones.iter().map(|&z| engine.zones()[z].name.as_str()).collect::<Vec<_>>());
                info!(camera = %cam.id, zones = %zones.join(","), "region crop {}x{} at ({}, {}) of the {}x{} picture",
                      r.width, r.height, r.left, r.top, size.0, size.1);
            }
        }
        // A crop runs when something moves in it, or an object in it is not settled
        // (tentative ones too: a far object may be too small for the motion grid), and
        // at the periodic recheck; such an object also makes the whole frame run.
        let crop_unsettled = |c: &Crop| {
            tracker
                .tracks()
                .iter()
                .any(|t| regions::holds(&c.region, &t.bbox) && (settling(t) || !(t.confirmed || t.established)))
        };
        let wanted: Vec<yolox::Region> = crops
            .1
            .iter()
            .filter(|c| match &moved {
                None => true,
                Some(m) => m.recalibrated || due || m.moving_in(&regions::region_box(&c.region)) || crop_unsettled(c),
            })
            .map(|c| c.region)
            .collect();
        let run = match &moved {
            None => true,
            Some(m) => m.moving || m.recalibrated || due || unsettled || crops.1.iter().any(crop_unsettled),
        };
        let mut changes = Vec::new();
        // Tracking and rules, after the detector (when it ran): one record per frame.
        let mut track_span = None;
        if run {
            let found = {
                let waited = Instant::now();
                let mut detector = shared.free_detector(slot);
                stages::record(Stage::Wait, Duration::ZERO, waited.elapsed());
                detect_with_crops(&mut detector, &frame.picture, &wanted, min_score, shared.nms_iou)
            };
            let (detections, inference_ms) = match found {
                Ok(found) => found,
                Err(e) => {
                    warn!(camera = %cam.id, "detection failed: {e}");
                    continue;
                }
            };
            health.frame_analysed(inference_ms);
            if !wanted.is_empty() {
                health.crops_analysed(wanted.len() as u64);
            }
            last_detect = Some(now);
            track_span = Some(Span::start(Stage::Track));
            let detections: Vec<_> =
                filters.fuse_kinds(detections).into_iter().filter(|d| filters.keep(d, size)).collect();
            let in_motion: Vec<bool> =
                detections.iter().map(|d| moved.as_ref().is_none_or(|m| m.moving_in(&d.bbox))).collect();
            changes = tracker.update_with_motion(&detections, &in_motion);
            engine.observe(now, &track_views(&tracker), size);
        } else {
            health.frame_gated();
        }

        let track_span = track_span.unwrap_or_else(|| Span::start(Stage::Track));
        let views = track_views(&tracker);
        changes.retain(|(_, t)| object_labels.contains(&t.class_id));
        let mut incidents = engine.evaluate(now, &views);
        incidents.extend(camera_rules.tamper(now, sign));
        drop(track_span);
        if !changes.is_empty() {
            let out = events.on_frame_in_zones(&changes, &frame, &|id| engine.zones_of(id));
            store(&cam.id, shared, out, |id| events.discard(id));
        }
        let out = rule_events.on_frame(incidents, now, Some(&frame));
        store(&cam.id, shared, out, |id| rule_events.discard(id));
        last = Some(frame);
    }
    let open = tracker.drain_confirmed();
    let size = last.as_ref().map_or((0, 0), |f| f.picture.dimensions());
    let out = events.end_all(&open, size, Some(SystemTime::now()));
    store(&cam.id, shared, out, |id| events.discard(id));
    let out = rule_events.end_all(Some(SystemTime::now()));
    store(&cam.id, shared, out, |id| rule_events.discard(id));
}

/// The whole picture's detections merged with those of the `crops` of it; the whole
/// picture's inference time.
fn detect_with_crops(
    detector: &mut Detector,
    pic: &Yuv420,
    crops: &[yolox::Region],
    min_score: f32,
    nms_iou: f32,
) -> Result<(Vec<Detection>, f32), crate::detect::DetectError> {
    let full = detector.detect(pic, min_score, nms_iou)?;
    let inference_ms = detector.last_inference_ms();
    if crops.is_empty() {
        return Ok((full, inference_ms));
    }
    let parts = crops
        .iter()
        .map(|&r| detector.detect_region(pic, r, min_score, nms_iou).map(|d| (r, d)))
        .collect::<Result<Vec<_>, _>>()?;
    Ok((regions::merge(full, parts, pic.dimensions(), nms_iou), inference_ms))
}

/// The tracker's objects as the rules see them.
fn track_views(tracker: &Tracker) -> Vec<TrackView> {
    tracker
        .tracks()
        .iter()
        .map(|t| TrackView {
            id: t.id,
            class_id: t.class_id,
            bbox: t.bbox,
            score: t.score,
            confirmed: t.confirmed,
            established: t.confirmed || t.established || tracker.is_established(t),
        })
        .collect()
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
            Err(e) => {
                error!(camera = %camera, event = %id, "cannot store the event ({what}), so it is not sent: {e}");
                if event_type == EventType::New {
                    discard(&id);
                }
            }
        }
    }
}
