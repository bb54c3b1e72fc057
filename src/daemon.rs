//! The daemon: wires the stages together for every configured camera and runs them
//! until told to stop.
//!
//! Per camera: `camera` (RTSP) -> `decode` (GStreamer, at detect_fps) -> a bounded
//! queue of one frame -> the shared `inference` thread -> `track` -> `event` ->
//! `outbox`; one `mqtt` publisher drains the outbox for the whole site.
//! Promises: a slow stage makes the one before it drop frames (counted as
//! frames_skipped), never queue them; every event is in the outbox before anything is
//! sent; on stop every open event gets its `end`, and the publisher gets a few seconds
//! to deliver before `status` turns `stopped`.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use anyhow::Context;
use serde_json::json;
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::camera::{self, Ingest, IngestOptions};
use crate::config::{CameraConfig, Config};
use crate::decode::{self, DecodeOptions, Decoder};
use crate::detect::{Detector, Labels, ModelSource};
use crate::event::{EventSettings, ObjectEvents, Outgoing, timestamp};
use crate::frame::Frame;
use crate::health::CameraHealth;
use crate::inference::{InferenceError, InferenceService};
use crate::mqtt::{self, MqttSettings, Retained, Topics};
use crate::outbox::Outbox;

/// How often health is published when nothing changes (the contract says <= 30 s).
const HEALTH_INTERVAL: Duration = Duration::from_secs(30);

/// Everything the camera pipelines share.
struct Shared {
    inference: InferenceService,
    outbox: Arc<Mutex<Outbox>>,
    wake: Arc<Notify>,
    events: EventSettings,
    min_score: f32,
    labels: Arc<Labels>,
}

/// Runs the daemon for `cfg` until `shutdown` is cancelled. `ready` is called once
/// every camera has been started (systemd's READY).
pub async fn run(cfg: Config, shutdown: CancellationToken, ready: impl FnOnce()) -> anyhow::Result<()> {
    let labels = Arc::new(cfg.labels().map_err(anyhow::Error::msg)?);
    let model = match &cfg.detector.model {
        Some(p) => ModelSource::File(p.clone()),
        None => ModelSource::Builtin,
    };
    let (runtime, threads) = (cfg.detector.onnxruntime.clone(), cfg.detector.threads);
    let detector = tokio::task::spawn_blocking(move || Detector::load(model, runtime.as_deref(), threads))
        .await
        .context("loading the model")??;
    info!(model = %detector.model_name(), sha256 = %detector.model_sha256(), "model loaded");

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

    let outbox = Outbox::open(&cfg.storage.dir)?;
    let pending = outbox.pending_count()?;
    if pending > 0 {
        info!(pending, "outbox holds events from before; they go out first");
    }
    let outbox = Arc::new(Mutex::new(outbox));
    let wake = Arc::new(Notify::new());
    let (retained_tx, retained_rx) = mpsc::channel::<Retained>(64);
    let publisher_stop = CancellationToken::new();
    let settings = MqttSettings {
        host: cfg.mqtt.host.clone(),
        port: cfg.mqtt.port,
        client_id: cfg.client_id(),
        username: cfg.mqtt.username.clone(),
        password: cfg.mqtt_password().map_err(anyhow::Error::msg)?,
        keep_alive: Duration::from_secs(cfg.mqtt.keep_alive_s),
        topics: topics.clone(),
    };
    let publisher =
        tokio::spawn(mqtt::run(settings, info_json, outbox.clone(), wake.clone(), retained_rx, publisher_stop.clone()));

    let cameras: Vec<&CameraConfig> = cfg.cameras.iter().filter(|c| c.enabled).collect();
    let shared = Arc::new(Shared {
        inference: InferenceService::start(detector, cfg.detector.min_score, cfg.detector.nms_iou, cameras.len())?,
        outbox,
        wake,
        events: EventSettings {
            topic_root: topics.root.clone(),
            site: cfg.site.clone(),
            labels: labels.clone(),
            jpeg_quality: cfg.snapshot.quality,
            update_interval: Duration::from_secs(5),
            better_snapshot_ratio: 1.25,
        },
        min_score: cfg.detector.min_score,
        labels,
    });

    let healths: Vec<Arc<CameraHealth>> =
        cfg.cameras.iter().map(|c| Arc::new(CameraHealth::new(&c.id, c.enabled))).collect();
    let health_changed = Arc::new(Notify::new());
    let mut pipelines = JoinSet::new();
    for (cam, health) in cfg.cameras.iter().zip(&healths) {
        if !cam.enabled {
            info!(camera = %cam.id, "camera disabled in the configuration");
            continue;
        }
        pipelines.spawn(camera_pipeline(
            cam.clone(),
            shared.clone(),
            health.clone(),
            health_changed.clone(),
            shutdown.clone(),
        ));
    }
    info!(site = %cfg.site, cameras = cameras.len(), "gridwatch running");
    ready();

    let health_task = tokio::spawn(publish_health(healths, topics, retained_tx, health_changed, shutdown.clone()));

    shutdown.cancelled().await;
    info!("stopping: ending open events");
    while pipelines.join_next().await.is_some() {}
    let _ = health_task.await;
    publisher_stop.cancel();
    let _ = publisher.await;
    info!("stopped");
    Ok(())
}

/// Publishes every camera's health when one changes state, and every 30 s.
async fn publish_health(
    healths: Vec<Arc<CameraHealth>>,
    topics: Topics,
    tx: mpsc::Sender<Retained>,
    changed: Arc<Notify>,
    shutdown: CancellationToken,
) {
    loop {
        for h in &healths {
            let report = h.report();
            if let Ok(payload) = serde_json::to_vec(&report) {
                let _ = tx.try_send(Retained { topic: topics.health(&report.camera), payload });
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(HEALTH_INTERVAL) => {}
            _ = changed.notified() => {}
            _ = shutdown.cancelled() => break,
        }
    }
    // Final word: every camera offline, sent before the publisher says "stopped".
    for h in &healths {
        h.stopped();
        if let Ok(payload) = serde_json::to_vec(&h.report()) {
            let _ = tx.try_send(Retained { topic: topics.health(&h.report().camera), payload });
        }
    }
}

/// One camera, from RTSP to the outbox, until `shutdown`.
async fn camera_pipeline(
    cam: CameraConfig,
    shared: Arc<Shared>,
    health: Arc<CameraHealth>,
    health_changed: Arc<Notify>,
    shutdown: CancellationToken,
) {
    let url = match url::Url::parse(&cam.url) {
        Ok(u) => u,
        Err(e) => {
            // Validated at load; kept as a log line rather than a panic all the same.
            warn!(camera = %cam.id, "bad camera url: {e}");
            return;
        }
    };
    let (ingest_tx, mut ingest_rx) = mpsc::channel::<Ingest>(16);
    let ingest = tokio::spawn(camera::run(cam.id.clone(), url, IngestOptions::default(), ingest_tx, shutdown.clone()));

    // One decoded frame may wait for analysis; a newer one while it waits is skipped.
    let (frame_tx, frame_rx) = mpsc::channel::<Frame>(1);
    let analysis = tokio::spawn(analyse(cam.clone(), shared, health.clone(), frame_rx, shutdown.clone()));

    let mut decoder: Option<Decoder> = None;
    // Log the first decoder error of a session, not one line per frame.
    let mut decode_failed = false;
    while let Some(msg) = ingest_rx.recv().await {
        match msg {
            Ingest::Connected(info) => {
                if health.connected(&info) {
                    health_changed.notify_one();
                }
                let (width, height) = decode::analysis_size(info.width, info.height, cam.analysis_width);
                // camera.rs has logged the stream itself; this adds only what we make of it.
                debug!(camera = %cam.id, analysis = %format!("{width}x{height}"), "decoder started");
                let tx = frame_tx.clone();
                let h = health.clone();
                let on_frame = Box::new(move |f: Frame| {
                    if tx.try_send(f).is_err() {
                        h.frame_skipped();
                    }
                });
                decoder = match Decoder::new(
                    &cam.id,
                    &info,
                    DecodeOptions { width, height, max_fps: cam.detect_fps },
                    on_frame,
                ) {
                    Ok(d) => Some(d),
                    Err(e) => {
                        warn!(camera = %cam.id, "cannot decode this stream: {e}");
                        None
                    }
                };
                decode_failed = false;
            }
            Ingest::Frame(f) => {
                health.frame_received(f.received_at);
                if let Some(d) = decoder.as_mut() {
                    if let Err(e) = d.push(&f) {
                        if !std::mem::replace(&mut decode_failed, true) {
                            warn!(camera = %cam.id, "decoder error: {e}");
                        }
                    }
                }
            }
            Ingest::Disconnected { reason, stalled } => {
                decoder = None;
                if health.disconnected(&reason, stalled) {
                    health_changed.notify_one();
                }
            }
        }
    }
    drop(decoder);
    drop(frame_tx);
    let _ = ingest.await;
    let _ = analysis.await;
}

/// Detection, tracking and events for one camera's decoded frames.
async fn analyse(
    cam: CameraConfig,
    shared: Arc<Shared>,
    health: Arc<CameraHealth>,
    mut frames: mpsc::Receiver<Frame>,
    shutdown: CancellationToken,
) {
    let tracked: Vec<usize> = cam.track.iter().filter_map(|l| shared.labels.id(l)).collect();
    let mut tracker = crate::track::Tracker::new(crate::track::TrackerConfig::for_fps(cam.detect_fps));
    let mut events = ObjectEvents::new(shared.events.clone(), &cam.id);
    let mut last_size = (0, 0);
    loop {
        let frame = tokio::select! {
            f = frames.recv() => match f { Some(f) => Arc::new(f), None => break },
            _ = shutdown.cancelled() => break,
        };
        last_size = (frame.image.width(), frame.image.height());
        let found = match shared.inference.detect(frame.clone()).await {
            Ok(found) => found,
            Err(InferenceError::Busy) => {
                health.frame_skipped();
                continue;
            }
            Err(e) => {
                warn!(camera = %cam.id, "{e}");
                continue;
            }
        };
        health.frame_analysed(found.inference_ms);
        let detections: Vec<_> = found
            .detections
            .into_iter()
            .filter(|d| d.score >= shared.min_score && tracked.contains(&d.class_id))
            .collect();
        let changes = tracker.update(&detections);
        if !changes.is_empty() {
            let out = events.on_frame(&changes, &frame);
            store(&cam.id, &shared, out).await;
        }
    }
    let open = tracker.drain_confirmed();
    let out = events.end_all(&open, last_size, SystemTime::now());
    store(&cam.id, &shared, out).await;
}

/// Puts events into the outbox (numbering them) and wakes the publisher.
async fn store(camera: &str, shared: &Shared, events: Vec<Outgoing>) {
    for ev in events {
        let (kind, label, id) = (ev.message.kind_of_message, ev.message.label.clone(), ev.message.event_id.clone());
        let score = ev.message.score;
        match mqtt::with_outbox(&shared.outbox, move |o| o.push(ev)).await {
            Ok(seq) => {
                info!(camera = %camera, seq, event = %id, "{label} {} (score {score:.2})", kind.as_str());
                shared.wake.notify_one();
            }
            Err(e) => warn!(camera = %camera, event = %id, "cannot store event: {e}"),
        }
    }
}
