//! The daemon: wires the stages together for every configured camera and runs them
//! until told to stop.
//!
//! Per camera ([`pipeline`]): RTSP (async) -> a decode thread (GStreamer, at
//! detect_fps) -> a queue of one frame -> an analysis thread ([`CameraAnalysis`] on a
//! shared model session) -> `outbox`; one async MQTT publisher drains the outbox for
//! the whole site. Blocking work (GStreamer state changes, ONNX Runtime, JPEG, SQLite)
//! stays on threads of its own, off the async workers that keep RTSP and MQTT moving.
//!
//! Promises: every event is in the outbox before anything is sent; an event whose
//! camera stops delivering pictures ends about 2 s after it was last seen; on stop
//! every open event gets its `end`, then health says offline, then the publisher says
//! `stopped`; events left open by a crash get their `end` at the next start. A task
//! that failed or panicked is logged at shutdown, never dropped silently.

mod camera_analysis;
mod clip_maker;
mod memory;
mod pipeline;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

pub use camera_analysis::{Analysed, CameraAnalysis, Detected, DetectorUse};
use clip_maker::ClipMaker;
use pipeline::{CameraPipeline, Shared};

use crate::contract::{INFO_SCHEMA, Info, InfoCamera, InfoModel, Topics, timestamp};
use crate::device::analysis::detect::Detector;
use crate::device::clip::CameraClips;
use crate::device::command;
use crate::device::config::Config;
use crate::device::ops::{CameraHealth, FrameSlot, Live, LiveCamera, control, metrics, notify, watchdog};
use crate::device::publish::mqtt::{self, Incoming, Message, MqttSettings};
use crate::device::publish::{EventSettings, MqttLink, Outbox, Renderer, SharedOutbox};

/// How often health is published when nothing changes (the contract says <= 30 s).
const HEALTH_INTERVAL: Duration = Duration::from_secs(30);

/// Runs the daemon for `cfg` until `shutdown` is cancelled.
pub async fn run(cfg: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    memory::tune_allocator();
    let model = Model::load(&cfg).await?;
    let topics = Topics { root: cfg.mqtt.topic_root.clone(), site: cfg.site.clone() };
    let outbox = open_outbox(&cfg)?;
    let (publisher, incoming) = Publisher::start(&cfg, &model, topics.clone(), outbox.clone())?;
    let targets = command::Targets::new(&cfg);
    let switches = Arc::new(command::Switches::load(&cfg.storage.dir, &targets));
    let shared = Arc::new(Shared {
        min_score: cfg.detector.min_score,
        nms_iou: cfg.detector.nms_iou,
        events: EventSettings {
            topic_root: topics.root.clone(),
            site: cfg.site.clone(),
            labels: Arc::new(cfg.labels()?),
            jpeg_quality: cfg.snapshot.quality,
            update_interval: Duration::from_secs(5),
            better_snapshot_ratio: 1.25,
        },
        detectors: model.sessions.into_iter().map(Mutex::new).collect(),
        next_slot: Default::default(),
        outbox,
        wake: publisher.wake.clone(),
        switches: switches.clone(),
        topics: topics.clone(),
    });
    let cameras = Cameras::start(&cfg, &shared, &shutdown);
    let clip_cameras = cameras.live.iter().map(|c| (c.clips.clone(), c.health.clone())).collect();
    let clip_maker = ClipMaker::start(clip_cameras, shared.clone()).context("starting the clip maker thread")?;
    let healths: Vec<_> = cameras.live.iter().map(|c| c.health.clone()).collect();
    let switchboard = Arc::new(command::Switchboard::new(
        targets,
        switches,
        publisher.messages.clone(),
        healths.clone(),
        cameras.health_changed.clone(),
    ));
    let live = Arc::new(Live {
        site: cfg.site.clone(),
        started_at: SystemTime::now(),
        started: Instant::now(),
        model_name: model.name,
        model_sha256: model.sha256,
        broker: format!("{}:{}", cfg.mqtt.host, cfg.mqtt.port),
        cameras: cameras.live,
        outbox: shared.outbox.clone(),
        link: publisher.link.clone(),
        rates: Mutex::default(),
        watchdog_problem: Mutex::default(),
        switchboard: switchboard.clone(),
    });
    let tools = Tools::start(&cfg, &live).await;
    let commands_stop = CancellationToken::new();
    let notices = command::NoticeDesk::open(&cfg.notices, &cfg.storage.dir);
    let commands = tokio::spawn(command::serve(switchboard, live.clone(), notices, incoming, commands_stop.clone()));
    let health_stop = CancellationToken::new();
    let health = tokio::spawn(publish_health(
        healths,
        topics,
        shared.outbox.clone(),
        publisher.messages.clone(),
        cameras.health_changed,
        health_stop.clone(),
    ));
    info!(site = %cfg.site, cameras = cameras.running.len(), "gridwatch running");
    notify::ready(&format!("running: {} camera(s)", cameras.running.len()));

    shutdown.cancelled().await;
    notify::stopping();
    commands_stop.cancel();
    joined("command", commands).await;
    info!("stopping: ending open events");
    for (camera, p) in cameras.running {
        p.join(&camera).await;
    }
    clip_maker.stop().await;
    health_stop.cancel();
    joined("health", health).await;
    publisher.stop().await;
    tools.stop().await;
    info!("stopped");
    Ok(())
}

/// The model sessions the cameras share, and what the desk is told of the model.
struct Model {
    sessions: Vec<Detector>,
    name: String,
    sha256: String,
}

impl Model {
    async fn load(cfg: &Config) -> anyhow::Result<Model> {
        let model = cfg.model_source();
        let (runtime, threads, cfg2) = (cfg.detector.onnxruntime.clone(), cfg.detector.threads, cfg.clone());
        // The first session times the model; that sets how many more the cameras need.
        let (sessions, inference_ms) = tokio::task::spawn_blocking(move || {
            let load = || Detector::load(model.clone(), runtime.as_deref(), threads);
            let mut first = load()?;
            let ms = first.time_inference()?;
            let mut sessions = vec![first];
            for _ in 1..cfg2.detector_sessions(f64::from(ms)) {
                sessions.push(load()?);
            }
            Ok::<_, crate::device::analysis::detect::DetectError>((sessions, ms))
        })
        .await
        .context("loading the model")??;
        let (first, n) = (&sessions[0], sessions.len());
        let (name, sha256) = (first.model_name().to_owned(), first.model_sha256().to_owned());
        info!(model = %name, sha256 = %sha256, sessions = n, threads, inference_ms, "model loaded");
        Ok(Model { sessions, name, sha256 })
    }
}

/// The MQTT publisher task and the ways into it.
struct Publisher {
    task: JoinHandle<()>,
    stop: CancellationToken,
    wake: Arc<Notify>,
    /// Health, switch states, answers: published beside the outbox's events.
    messages: mpsc::Sender<Message>,
    link: Arc<MqttLink>,
}

impl Publisher {
    /// The publisher, and what arrives on the command topics it subscribes to.
    fn start(
        cfg: &Config,
        model: &Model,
        topics: Topics,
        outbox: SharedOutbox,
    ) -> anyhow::Result<(Publisher, mpsc::Receiver<Incoming>)> {
        let info = Info {
            schema: INFO_SCHEMA.into(),
            version: env!("CARGO_PKG_VERSION").into(),
            site: cfg.site.clone(),
            started_at: timestamp(SystemTime::now()),
            cameras: cfg
                .cameras
                .iter()
                .map(|c| InfoCamera { id: c.id.clone(), name: c.display_name().into() })
                .collect(),
            model: InfoModel { name: model.name.clone(), sha256: model.sha256.clone() },
        };
        let info_json = serde_json::to_string(&info).context("the info payload")?;
        let link = Arc::new(MqttLink::default());
        let settings = MqttSettings {
            host: cfg.mqtt.host.clone(),
            port: cfg.mqtt.port,
            client_id: cfg.client_id(),
            username: cfg.mqtt.username.clone(),
            password: cfg.mqtt_password().map_err(anyhow::Error::msg)?,
            keep_alive: Duration::from_secs(cfg.mqtt.keep_alive_s),
            topics: topics.clone(),
            tls: cfg.mqtt.tls.as_ref().and_then(|t| t.client()),
            tls_ca_file: cfg.mqtt.tls.as_ref().and_then(|t| t.ca_file.clone()),
            max_events_per_s: cfg.mqtt.max_events_per_s,
            subscriptions: topics.command_filters(),
            link: link.clone(),
            clip_bytes_per_hour: cfg.mqtt.max_clip_bytes_per_hour,
            clip_keep: Duration::from_secs(cfg.mqtt.clip_keep_s),
        };
        let (wake, stop) = (Arc::new(Notify::new()), CancellationToken::new());
        let (messages, messages_rx) = mpsc::channel::<Message>(64);
        let (incoming_tx, incoming) = mpsc::channel::<Incoming>(64);
        let channels = (messages_rx, incoming_tx);
        let task = tokio::spawn(mqtt::run(settings, info_json, outbox, wake.clone(), channels, stop.clone()));
        Ok((Publisher { task, stop, wake, messages, link }, incoming))
    }

    /// Sends what is left (the last events, `stopped`) and waits for the task.
    async fn stop(self) {
        self.stop.cancel();
        joined("MQTT publisher", self.task).await;
    }
}

/// Every configured camera: what the local tools see of each, and the pipelines of the
/// enabled ones.
struct Cameras {
    live: Vec<LiveCamera>,
    running: Vec<(String, CameraPipeline)>,
    /// Rung when a camera's state changes, so its health goes out at once.
    health_changed: Arc<Notify>,
}

impl Cameras {
    fn start(cfg: &Config, shared: &Arc<Shared>, shutdown: &CancellationToken) -> Cameras {
        let live: Vec<LiveCamera> = cfg
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
                clips: Arc::new(Mutex::new(CameraClips::new(c))),
            })
            .collect();
        let health_changed = Arc::new(Notify::new());
        let mut running = Vec::new();
        for (cam, l) in cfg.cameras.iter().zip(&live) {
            if !cam.enabled {
                info!(camera = %cam.id, "camera disabled in the configuration");
                continue;
            }
            match CameraPipeline::start(cam, shared, l, &health_changed, shutdown) {
                Ok(p) => running.push((cam.id.clone(), p)),
                Err(e) => error!(camera = %cam.id, "cannot start the camera's pipeline: {e:#}"),
            }
        }
        Cameras { live, running, health_changed }
    }
}

/// The technician's side: control socket, metrics, watchdog, and the allocator trim.
/// None is worth failing the daemon for: their trouble is logged.
struct Tools {
    stop: CancellationToken,
    control: Option<control::Server>,
    tasks: Vec<(&'static str, JoinHandle<()>)>,
}

impl Tools {
    async fn start(cfg: &Config, live: &Arc<Live>) -> Tools {
        let stop = CancellationToken::new();
        let control = match cfg.control.enabled {
            true => control::serve_at(&cfg.control_socket(), cfg.control.mode, live.clone(), stop.clone())
                .await
                .inspect_err(|e| error!("{e:#}; gridwatch status and snapshot will not work"))
                .ok(),
            false => None,
        };
        let mut tasks = Vec::new();
        if let Some(port) = cfg.metrics.port {
            let addr = std::net::SocketAddr::new(cfg.metrics.listen, port);
            if let Ok(t) = metrics::serve(addr, live.clone(), stop.clone()).await.inspect_err(|e| error!("{e:#}")) {
                tasks.push(("metrics", t));
            }
        }
        // The publisher's loop goes round at least once a keep-alive, and between
        // reconnect attempts (at most 30 s apart).
        let publisher_limit = Duration::from_secs(90).max(Duration::from_secs(3 * cfg.mqtt.keep_alive_s));
        tasks.push(("watchdog", tokio::spawn(watchdog::run(live.clone(), publisher_limit, stop.clone()))));
        tasks.push(("memory pass", tokio::spawn(memory::keep_small(stop.clone()))));
        Tools { stop, control, tasks }
    }

    async fn stop(self) {
        self.stop.cancel();
        for (name, task) in self.tasks {
            joined(name, task).await;
        }
        if let Some(c) = self.control {
            c.finish().await;
        }
    }
}

/// Waits for a task; one that panicked or was cancelled is logged, not dropped.
async fn joined(name: &str, task: JoinHandle<()>) {
    if let Err(e) = task.await {
        error!("the {name} task failed: {e}");
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
    tx: mpsc::Sender<Message>,
    changed: Arc<Notify>,
    stop: CancellationToken,
) {
    let send = |h: &CameraHealth| {
        let report = h.report();
        if let Ok(payload) = serde_json::to_vec(&report) {
            let _ = tx.try_send(Message::retained(topics.health(&report.camera), payload));
        }
    };
    let publish_all = |stopping: bool| {
        let (healths, outbox) = (&healths, &outbox);
        async move {
            let view = outbox.health();
            for h in healths {
                h.set_outbox(&view);
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
