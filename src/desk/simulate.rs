//! `gridwatch desk simulate`: grid points that follow the MQTT contract without
//! cameras, for the demo, the tests and the benchmark.
//!
//! Promises: each site has its own connection with the device's last will (`offline`,
//! retained), publishes `online`, its `info` and each camera's `health` (retained, at
//! every connect and every 30 s), and events with real JPEG pictures: the picture is
//! acknowledged by the broker before its event is sent, one message at a time, in `seq`
//! order, `seq` surviving restarts when `--state` is given. `--log` gets one line per
//! event the broker acknowledged (`site seq event_id type`). `--chaos` makes sites drop
//! off (their will fires) and come back, and cameras go dark for a while.

use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use rand::Rng;
use rumqttc::{AsyncClient, Event, EventLoop, LastWill, MqttOptions, Packet, QoS};
use sha2::{Digest, Sha256};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::contract::{
    CameraState, EVENT_SCHEMA, EventMessage, EventType, HealthReport, INFO_SCHEMA, Info, InfoCamera, InfoModel,
    SnapshotRef, Topics, hex, timestamp,
};

const PHOTOS: [&[u8]; 3] = [
    include_bytes!("../../tests/fixtures/photos/darknet_person.jpg"),
    include_bytes!("../../tests/fixtures/photos/opencv_messi5.jpg"),
    include_bytes!("../../tests/fixtures/photos/darknet_dog.jpg"),
];
const KINDS: [&str; 5] = ["intrusion", "loitering", "crowd", "occupation", "abandoned"];

#[derive(Debug, Clone, clap::Args)]
pub struct SimulateArgs {
    /// How many grid points.
    #[arg(long, default_value_t = 21)]
    pub sites: usize,
    /// The broker, HOST:PORT.
    #[arg(long)]
    pub broker: String,
    #[arg(long, default_value = "gridwatch")]
    pub topic_root: String,
    /// Site ids are PREFIX-01, PREFIX-02, …
    #[arg(long, default_value = "sim")]
    pub prefix: String,
    /// Number of the first site (to run sites in several processes).
    #[arg(long, default_value_t = 1)]
    pub first: usize,
    /// Mean new events per second per site.
    #[arg(long, default_value_t = 0.1)]
    pub rate: f64,
    /// Stop after this many seconds (status `stopped`); default: until Ctrl-C.
    #[arg(long)]
    pub seconds: Option<u64>,
    /// Sites drop off and come back; cameras go dark now and then.
    #[arg(long)]
    pub chaos: bool,
    /// A folder keeping each site's next seq across restarts.
    #[arg(long)]
    pub state: Option<PathBuf>,
    /// A file that gets one line per acknowledged event message.
    #[arg(long)]
    pub log: Option<PathBuf>,
    #[arg(long, default_value_t = 5)]
    pub keep_alive_s: u64,
}

pub async fn simulate(args: SimulateArgs, stop: CancellationToken) -> anyhow::Result<()> {
    let (host, port) = args.broker.rsplit_once(':').ok_or_else(|| anyhow::anyhow!("--broker: give HOST:PORT"))?;
    let port: u16 = port.parse().map_err(|_| anyhow::anyhow!("--broker: {port} is not a port"))?;
    if let Some(d) = &args.state {
        std::fs::create_dir_all(d)?;
    }
    let log = match &args.log {
        Some(p) => Some(Arc::new(Mutex::new(std::fs::OpenOptions::new().create(true).append(true).open(p)?))),
        None => None,
    };
    if let Some(s) = args.seconds {
        let stop = stop.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(s)).await;
            stop.cancel();
        });
    }
    let mut tasks = Vec::new();
    for n in args.first..args.first + args.sites {
        let site = Site::new(&args, n, host, port, log.clone());
        tasks.push(tokio::spawn(site.run(stop.clone())));
    }
    for t in tasks {
        t.await??;
    }
    Ok(())
}

struct Open {
    id: String,
    camera: String,
    kind: &'static str,
    started: SystemTime,
    next: Instant,
    updates_left: u32,
    pictures: u32,
}

struct Site {
    id: String,
    topics: Topics,
    host: String,
    port: u16,
    keep_alive: Duration,
    cameras: Vec<(String, String, CameraState)>,
    seq: u64,
    rate: f64,
    chaos: bool,
    state: Option<PathBuf>,
    log: Option<Arc<Mutex<std::fs::File>>>,
    open: Vec<Open>,
    started: SystemTime,
}

/// One connection: publishes one message at a time and waits for its PUBACK.
struct Link {
    client: AsyncClient,
    events: EventLoop,
    /// Set when the connection came back: announce again.
    reconnected: bool,
}

impl Link {
    async fn send(&mut self, topic: String, payload: Vec<u8>, retain: bool) {
        while self.client.publish(topic.clone(), QoS::AtLeastOnce, retain, payload.clone()).await.is_err() {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        loop {
            match self.events.poll().await {
                Ok(Event::Incoming(Packet::PubAck(_))) => return,
                Ok(Event::Incoming(Packet::ConnAck(_))) => self.reconnected = true,
                Ok(_) => {}
                // rumqttc resends what was in flight after it reconnects.
                Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
            }
        }
    }

    /// Keeps the connection alive until `until`.
    async fn idle(&mut self, until: Instant) {
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(until) => return,
                ev = self.events.poll() => match ev {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => { self.reconnected = true; return; }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
                },
            }
        }
    }
}

impl Site {
    fn new(args: &SimulateArgs, n: usize, host: &str, port: u16, log: Option<Arc<Mutex<std::fs::File>>>) -> Site {
        let id = format!("{}-{n:02}", args.prefix);
        let cameras =
            (1..=1 + n % 4).map(|c| (format!("cam-{c}"), format!("camera {c}"), CameraState::Streaming)).collect();
        let seq = args
            .state
            .as_ref()
            .and_then(|d| std::fs::read_to_string(d.join(format!("{id}.seq"))).ok())
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0);
        Site {
            topics: Topics { root: args.topic_root.clone(), site: id.clone() },
            id,
            host: host.to_owned(),
            port,
            keep_alive: Duration::from_secs(args.keep_alive_s.max(2)),
            cameras,
            seq,
            rate: args.rate,
            chaos: args.chaos,
            state: args.state.clone(),
            log,
            open: Vec::new(),
            started: SystemTime::now(),
        }
    }

    fn connect(&self) -> Link {
        let mut opts = MqttOptions::new(format!("gridwatch-{}", self.id), &self.host, self.port);
        opts.set_keep_alive(self.keep_alive)
            .set_clean_session(false)
            .set_max_packet_size(16 << 20, 16 << 20)
            .set_last_will(LastWill::new(self.topics.status(), "offline", QoS::AtLeastOnce, true));
        let (client, events) = AsyncClient::new(opts, 16);
        Link { client, events, reconnected: true }
    }

    async fn run(mut self, stop: CancellationToken) -> anyhow::Result<()> {
        let mut link = self.connect();
        let mut next_health = Instant::now();
        let mut next_event = Instant::now() + self.gap();
        // Not at once: a demo or test first sees every site come online.
        let mut next_chaos = Instant::now() + Duration::from_secs(rand::rng().random_range(60..180));
        while !stop.is_cancelled() {
            if link.reconnected {
                link.reconnected = false;
                self.announce(&mut link).await;
            }
            let now = Instant::now();
            if now >= next_health {
                self.health(&mut link).await;
                next_health = now + Duration::from_secs(30);
            }
            if now >= next_event {
                self.start_event(&mut link).await;
                next_event = now + self.gap();
            }
            self.advance_events(&mut link).await;
            if self.chaos && now >= next_chaos {
                next_chaos = now + Duration::from_secs(rand::rng().random_range(60..180));
                link = self.misbehave(link).await;
            }
            let wake = self.open.iter().map(|o| o.next).chain([next_health, next_event]).min().unwrap_or(now);
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = link.idle(wake.min(Instant::now() + Duration::from_secs(1))) => {}
            }
        }
        self.stop(&mut link).await;
        Ok(())
    }

    /// Time to the next new event (exponential, mean 1/rate).
    fn gap(&self) -> Duration {
        let u: f64 = rand::rng().random_range(0.0001..1.0);
        Duration::from_secs_f64((-u.ln() / self.rate.max(0.0001)).min(3600.0))
    }

    async fn announce(&mut self, link: &mut Link) {
        link.send(self.topics.status(), b"online".to_vec(), true).await;
        let info = Info {
            schema: INFO_SCHEMA.into(),
            version: env!("CARGO_PKG_VERSION").into(),
            site: self.id.clone(),
            started_at: timestamp(self.started),
            cameras: self
                .cameras
                .iter()
                .map(|(id, name, _)| InfoCamera { id: id.clone(), name: name.clone() })
                .collect(),
            model: InfoModel { name: "simulated".into(), sha256: hex(&Sha256::digest(b"simulated")) },
        };
        link.send(self.topics.info(), serde_json::to_vec(&info).unwrap_or_default(), true).await;
        self.health(link).await;
    }

    async fn health(&mut self, link: &mut Link) {
        for (cam, _, state) in self.cameras.clone() {
            let streaming = state == CameraState::Streaming;
            let h = HealthReport {
                camera: cam.clone(),
                state,
                since: timestamp(self.started),
                last_frame_at: streaming.then(|| timestamp(SystemTime::now())),
                codec: Some("h264".into()),
                width: Some(1280),
                height: Some(720),
                fps_in: if streaming { 25.0 } else { 0.0 },
                fps_analyzed: if streaming { 5.0 } else { 0.0 },
                frames_skipped: 0,
                frames_analyzed: 0,
                frames_gated: 0,
                crops_analyzed: 0,
                inference_ms: Some(18.0),
                reconnects_1h: 0,
                stalls_1h: 0,
                last_error: None,
                decode_errors: 0,
                decoder: Some("avdec_h264".into()),
                decoder_fallbacks: 0,
                detect_errors: 0,
                packets_lost: 0,
                snapshots_evicted: 0,
                events_evicted: 0,
                clips_evicted: 0,
                clips_dropped: 0,
                clip_ring_s: 0.0,
                clip_ring_cuts: 0,
                events_dropped: 0,
                snapshots_damaged: 0,
                outbox_error: None,
                outbox_damaged: None,
            };
            let body = serde_json::to_vec(&h).unwrap_or_default();
            link.send(self.topics.health(&cam), body, true).await;
        }
    }

    async fn start_event(&mut self, link: &mut Link) {
        let mut o = {
            let mut rng = rand::rng();
            let camera = self.cameras[rng.random_range(0..self.cameras.len())].0.clone();
            let kind = if rng.random_bool(0.2) { KINDS[rng.random_range(0..KINDS.len())] } else { "object" };
            Open {
                id: ulid::Ulid::new().to_string(),
                camera,
                kind,
                started: SystemTime::now(),
                next: Instant::now() + Duration::from_secs(rng.random_range(2..6)),
                updates_left: rng.random_range(0..3),
                pictures: 0,
            }
        };
        self.publish_event(link, &mut o, EventType::New).await;
        self.open.push(o);
    }

    async fn advance_events(&mut self, link: &mut Link) {
        let now = Instant::now();
        let mut due: Vec<Open> = Vec::new();
        self.open.retain_mut(|o| {
            if o.next > now {
                return true;
            }
            due.push(Open { id: o.id.clone(), camera: o.camera.clone(), ..*o });
            false
        });
        for mut o in due {
            if o.updates_left > 0 {
                o.updates_left -= 1;
                o.next = Instant::now() + Duration::from_secs(rand::rng().random_range(2..6));
                self.publish_event(link, &mut o, EventType::Update).await;
                self.open.push(o);
            } else {
                self.publish_event(link, &mut o, EventType::End).await;
            }
        }
    }

    /// The picture (acknowledged first), then the event naming it.
    async fn publish_event(&mut self, link: &mut Link, o: &mut Open, kind: EventType) {
        let snapshot = if kind == EventType::End {
            None
        } else {
            o.pictures += 1;
            let jpeg = PHOTOS[rand::rng().random_range(0..PHOTOS.len())];
            let topic = self.topics.snapshot(&o.id, o.pictures);
            link.send(topic.clone(), jpeg.to_vec(), false).await;
            Some(SnapshotRef { topic, sha256: hex(&Sha256::digest(jpeg)), bytes: jpeg.len(), width: 768, height: 576 })
        };
        self.seq += 1;
        let now = SystemTime::now();
        let rule = o.kind != "object";
        let msg = EventMessage {
            schema: EVENT_SCHEMA.into(),
            seq: self.seq,
            event_id: o.id.clone(),
            event_type: kind,
            kind: o.kind.into(),
            site: self.id.clone(),
            camera: o.camera.clone(),
            label: "person".into(),
            score: 0.6 + 0.3 * rand::rng().random::<f32>(),
            bbox: [0.4, 0.3, 0.5, 0.6],
            zones: if rule { vec!["fire-lane".into()] } else { Vec::new() },
            started_at: timestamp(o.started),
            at: timestamp(now),
            ended_at: (kind == EventType::End).then(|| timestamp(now)),
            snapshot,
            detail: rule.then(|| serde_json::json!({"count": 3, "dwell_s": 42})),
            clip: None,
        };
        link.send(self.topics.events(), serde_json::to_vec(&msg).unwrap_or_default(), false).await;
        self.record(&msg);
    }

    fn record(&self, msg: &EventMessage) {
        if let Some(d) = &self.state {
            let _ = std::fs::write(d.join(format!("{}.seq", self.id)), self.seq.to_string());
        }
        if let Some(log) = &self.log {
            let mut f = log.lock().unwrap_or_else(|p| p.into_inner());
            let _ = writeln!(f, "{} {} {} {}", self.id, msg.seq, msg.event_id, msg.event_type.as_str());
        }
    }

    /// Chaos: half the time the site vanishes for a while (its will fires), else a
    /// camera goes dark for 30 s.
    async fn misbehave(&mut self, link: Link) -> Link {
        if rand::rng().random_bool(0.5) {
            drop(link); // no DISCONNECT: the broker publishes the last will
            let away = self.keep_alive * 2 + Duration::from_secs(rand::rng().random_range(5..30));
            tokio::time::sleep(away).await;
            return self.connect();
        }
        let mut link = link;
        let i = rand::rng().random_range(0..self.cameras.len());
        self.cameras[i].2 = CameraState::Reconnecting;
        self.health(&mut link).await;
        link.idle(Instant::now() + Duration::from_secs(30)).await;
        self.cameras[i].2 = CameraState::Streaming;
        self.health(&mut link).await;
        link
    }

    /// A clean stop: open events end, status `stopped`.
    async fn stop(&mut self, link: &mut Link) {
        for mut o in std::mem::take(&mut self.open) {
            self.publish_event(link, &mut o, EventType::End).await;
        }
        link.send(self.topics.status(), b"stopped".to_vec(), true).await;
        let _ = link.client.disconnect().await;
        let _ = tokio::time::timeout(Duration::from_secs(1), link.events.poll()).await;
    }
}
