//! MQTT ingest: one persistent session (clean session off, stable client id, QoS 1)
//! on every topic of the contract for all sites, each message stored before the
//! broker gets its PUBACK.
//!
//! Promises: a message is acknowledged only once it is in the store (or refused as
//! malformed, which is logged and noted on its site), so a desk or broker restart
//! loses nothing the broker queued; repeats are harmless (the store dedupes). Strings
//! from devices are stored as sent; ids that become topic levels are checked.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rumqttc::{
    AsyncClient, ConnectionError, Event, EventLoop, MqttOptions, Packet, Publish, QoS, TlsConfiguration, Transport,
};
use serde::Deserialize;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::config::DeskConfig;
use super::fresh::{Fresh, FreshRefusal};
use super::live::{Change, Live};
use super::store::{Ingested, Receipt, Store};
use crate::contract::{self, EventMessage, Info, Invalid, check_id};
use crate::device::publish::Takeovers;

/// Why a message was refused (not stored; logged and noted on its site).
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    #[error("not UTF-8")]
    NotUtf8,
    #[error("status {0:?} is not online, offline or stopped")]
    Status(String),
    #[error("{0}")]
    Json(#[from] serde_json::Error),
    #[error("the camera in the payload is not the topic's")]
    OtherCamera,
    #[error("health state {0:?} is not a state name")]
    HealthState(String),
    #[error("site, camera or event_id does not fit the topic or the id rule")]
    EventIds,
    #[error("stats without seq")]
    StatsSeq,
    #[error("{0}")]
    Id(#[from] Invalid),
    #[error("state {0:?} is not ON or OFF")]
    OnOff(String),
    #[error("{0}")]
    Fresh(#[from] FreshRefusal),
    #[error("command error: {0}")]
    CommandError(&'static str),
    #[error("receipt: {0}")]
    Receipt(&'static str),
}

/// A camera's health as the desk reads it: only what it shows; the body is kept whole.
/// (Not `contract::HealthReport`: a device of contract 1.1 may say `paused`, and a
/// newer state must not make the desk refuse the message.)
#[derive(Deserialize)]
struct Health {
    camera: String,
    state: String,
    #[serde(default)]
    fps_analyzed: f64,
}

/// Longest string of a command error or receipt that is kept (characters).
const MAX_TEXT: usize = 1000;

/// Pictures and clips are large; anything bigger than this is refused by the client.
const MAX_PACKET: usize = 64 << 20;

/// The desk's side of the broker: ingest runs on it; commands and escalations go out on it.
pub struct Mqtt {
    client: AsyncClient,
    root: String,
}

impl Mqtt {
    /// The topic root, for topics named outside (`{root}/all/notices`).
    pub fn root(&self) -> &str {
        &self.root
    }

    /// Publishes at QoS 1; `topic` is under the topic root.
    pub async fn publish(&self, topic: &str, payload: Vec<u8>, retain: bool) -> anyhow::Result<()> {
        let topic = format!("{}/{topic}", self.root);
        self.client.publish(topic, QoS::AtLeastOnce, retain, payload).await?;
        Ok(())
    }
}

/// The topic filters the desk subscribes to, under `root`.
fn filters(root: &str) -> Vec<String> {
    [
        "+/status",
        "+/info",
        "+/+/health",
        "+/events",
        "+/snapshots/+",
        "+/clips/+",
        "+/stats",
        "+/command_errors",
        "+/+/detect/state",
        "+/+/rules/+/+/state",
        "+/+/snapshot/+",
        "+/notices/+/receipt",
    ]
    .iter()
    .map(|f| format!("{root}/{f}"))
    .collect()
}

/// Connects and starts the ingest task; the returned handle publishes.
pub fn start(
    cfg: Arc<DeskConfig>,
    store: Arc<Store>,
    fresh: Arc<Fresh>,
    live: Live,
    stop: CancellationToken,
) -> anyhow::Result<Arc<Mqtt>> {
    let m = &cfg.mqtt;
    let mut opts = MqttOptions::new(cfg.client_id(), &m.host, m.port);
    opts.set_keep_alive(Duration::from_secs(m.keep_alive_s.max(5)))
        .set_clean_session(false)
        .set_manual_acks(true)
        .set_max_packet_size(MAX_PACKET, 1 << 20);
    if let Some(user) = &m.username {
        opts.set_credentials(user, m.password().map_err(anyhow::Error::msg)?.unwrap_or_default());
    }
    if let Some(config) = m.tls.as_ref().and_then(|t| t.client()) {
        opts.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(config)));
    }
    let (client, eventloop) = AsyncClient::new(opts, 256);
    let mqtt = Arc::new(Mqtt { client: client.clone(), root: m.topic_root.clone() });
    tokio::spawn(ingest(cfg, client, eventloop, store, fresh, live, stop));
    Ok(mqtt)
}

/// Polls the event loop on a task of its own, so acks and pings flow while messages
/// are being stored; the broker's in-flight window bounds what waits in the channel.
fn forward(
    mut eventloop: EventLoop,
    stop: CancellationToken,
) -> mpsc::UnboundedReceiver<Result<Event, ConnectionError>> {
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let event = tokio::select! {
                _ = stop.cancelled() => break,
                e = eventloop.poll() => e,
            };
            let failed = event.is_err();
            if tx.send(event).is_err() {
                break;
            }
            if failed {
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
        let _ = tokio::time::timeout(Duration::from_secs(1), eventloop.poll()).await;
    });
    rx
}

async fn ingest(
    cfg: Arc<DeskConfig>,
    client: AsyncClient,
    eventloop: EventLoop,
    store: Arc<Store>,
    fresh: Arc<Fresh>,
    live: Live,
    stop: CancellationToken,
) {
    let mut events = forward(eventloop, stop.clone());
    let mut failing = false;
    let (mut connected_at, mut takeovers) = (None, Takeovers::default());
    while let Some(event) = events.recv().await {
        match event {
            Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                tracing::info!("connected to the broker (session kept: {})", ack.session_present);
                failing = false;
                connected_at = Some(Instant::now());
                for f in filters(&cfg.mqtt.topic_root) {
                    if let Err(e) = client.subscribe(f, QoS::AtLeastOnce).await {
                        tracing::warn!("subscribing: {e}");
                    }
                }
            }
            Ok(Event::Incoming(Packet::Publish(p))) => {
                let c = cfg.clone();
                let (s, f) = (store.clone(), fresh.clone());
                let msg = p.clone();
                match tokio::task::spawn_blocking(move || handle(&c, &s, &f, &msg)).await {
                    Ok(Ok(changes)) => {
                        for ch in changes {
                            live.send(ch);
                        }
                    }
                    // Not stored: no PUBACK, so the broker sends it again after a reconnect.
                    Ok(Err(e)) => {
                        tracing::error!("storing {}: {e:#}; the broker will send it again", p.topic);
                        continue;
                    }
                    Err(e) => {
                        tracing::error!("storing {}: {e}", p.topic);
                        continue;
                    }
                }
                // Waits for room in the client's queue; the forwarding task keeps it moving.
                if let Err(e) = client.ack(&p).await {
                    tracing::warn!("acknowledging {}: {e}", p.topic);
                }
            }
            Ok(_) => {}
            Err(e) => {
                if !failing {
                    tracing::warn!("broker {}:{}: {e}; retrying", cfg.mqtt.host, cfg.mqtt.port);
                }
                failing = true;
                if connected_at.take().is_some_and(|t: Instant| takeovers.ended(t.elapsed())) {
                    tracing::warn!("broker {}:{}: {}", cfg.mqtt.host, cfg.mqtt.port, Takeovers::hint(&cfg.client_id()));
                }
            }
        }
    }
    let _ = client.disconnect().await;
}

/// Stores one message; Err only when it could not be stored (it is then not acked).
fn handle(cfg: &DeskConfig, store: &Store, fresh: &Fresh, p: &Publish) -> anyhow::Result<Vec<Change>> {
    let Some(rest) = p.topic.strip_prefix(&cfg.mqtt.topic_root).and_then(|r| r.strip_prefix('/')) else {
        return Ok(Vec::new());
    };
    let levels: Vec<&str> = rest.split('/').collect();
    let site = levels[0];
    if check_id(site).is_err() {
        tracing::warn!("ignored a message on {}: the site is not a valid id", p.topic);
        return Ok(Vec::new());
    }
    let stored = match dispatch(cfg, store, fresh, site, &levels[1..], &p.payload) {
        Ok(r) => r?,
        Err(why) => {
            tracing::warn!("site {site}: refused a message on {}: {why}", p.topic);
            store.put_note(site, &p.topic, &format!("refused: {why}"))?
        }
    };
    Ok(changes(stored))
}

/// `ON`, `OFF`, or an empty payload (a retained state cleared: None).
fn on_off(payload: &[u8]) -> Result<Option<&'static str>, Refusal> {
    match payload {
        b"" => Ok(None),
        b"ON" => Ok(Some("ON")),
        b"OFF" => Ok(Some("OFF")),
        other => Err(Refusal::OnOff(String::from_utf8_lossy(&other[..other.len().min(40)]).into_owned())),
    }
}

/// At most MAX_TEXT characters of a device's string.
fn clip(s: &str) -> &str {
    s.char_indices().nth(MAX_TEXT).map_or(s, |(i, _)| &s[..i])
}

/// Routes a message by its topic levels below the site. The outer Err is a refusal
/// (malformed message), the inner one a storage failure.
fn dispatch(
    cfg: &DeskConfig,
    store: &Store,
    fresh: &Fresh,
    site: &str,
    levels: &[&str],
    payload: &[u8],
) -> Result<anyhow::Result<Ingested>, Refusal> {
    let text = || std::str::from_utf8(payload).map_err(|_| Refusal::NotUtf8);
    Ok(match levels {
        ["status"] => {
            let s = text()?;
            if !matches!(s, "online" | "offline" | "stopped") {
                return Err(Refusal::Status(s.chars().take(40).collect()));
            }
            store.put_status(site, s)
        }
        ["info"] => {
            let info: Info = serde_json::from_slice(payload)?;
            let cameras = info
                .cameras
                .into_iter()
                .filter(|c| check_id(&c.id).is_ok())
                .map(|c| (c.id, c.name))
                .collect::<Vec<_>>();
            store.put_info(site, text()?, &cameras)
        }
        [camera, "health"] => {
            let h: Health = serde_json::from_slice(payload)?;
            if h.camera != *camera || check_id(camera).is_err() {
                return Err(Refusal::OtherCamera);
            }
            let name_like =
                |s: &str| (1..=32).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_lowercase() || b == b'_');
            if !name_like(&h.state) {
                return Err(Refusal::HealthState(h.state.chars().take(40).collect()));
            }
            store.put_health(site, camera, &h.state, h.fps_analyzed, text()?)
        }
        ["events"] => {
            let e: EventMessage = serde_json::from_slice(payload)?;
            if e.site != site || check_id(&e.camera).is_err() || e.event_id.is_empty() || e.event_id.len() > 64 {
                return Err(Refusal::EventIds);
            }
            let v: serde_json::Value = serde_json::from_slice(payload)?;
            let clip = v["clip"]["topic"].as_str().zip(v["clip"]["sha256"].as_str());
            let clip = clip.map(|(topic, sha256)| super::store::FileClaim { topic, sha256, kind: "clip" });
            store.put_event(&e, text()?, cfg.is_alert(&e.kind), clip)
        }
        ["snapshots", name] => {
            let event_id = name.rsplit_once('-').map_or(*name, |(id, _)| id);
            store.put_file(site, &topic(cfg, site, levels), "snapshot", event_id, payload)
        }
        ["clips", event_id] => store.put_file(site, &topic(cfg, site, levels), "clip", event_id, payload),
        [camera, "snapshot", request] if *request != "request" => {
            check_id(camera)?;
            fresh.arrived(site, camera, request, payload)?;
            tracing::info!("site {site} camera {camera}: fresh picture {request} came ({} bytes)", payload.len());
            Ok(Ingested::Site(site.to_owned()))
        }
        ["stats"] => {
            let v: serde_json::Value = serde_json::from_slice(payload)?;
            let seq = v["seq"].as_i64().ok_or(Refusal::StatsSeq)?;
            store.put_stats(
                site,
                seq,
                v["camera"].as_str().unwrap_or(""),
                v["period_start"].as_str().unwrap_or(""),
                text()?,
            )
        }
        [camera, "detect", "state"] => {
            check_id(camera)?;
            store.put_state(site, camera, "detect", on_off(payload)?)
        }
        [camera, "rules", zone, rule, "state"] => {
            for id in [camera, zone, rule] {
                check_id(id)?;
            }
            store.put_state(site, camera, &format!("rules/{zone}/{rule}"), on_off(payload)?)
        }
        ["command_errors"] => {
            let e: contract::CommandError = serde_json::from_slice(payload)?;
            if e.schema != contract::COMMAND_ERROR_SCHEMA {
                return Err(Refusal::CommandError("unknown schema"));
            }
            tracing::info!("site {site}: command error on {}: {}", clip(&e.topic), clip(&e.reason));
            store.put_command_error(site, clip(&e.topic), clip(&e.reason), clip(&e.at))
        }
        ["notices", notice_id, "receipt"] => {
            if payload.is_empty() {
                return Ok(store.put_receipt(site, notice_id, None));
            }
            let r: contract::NoticeReceipt = serde_json::from_slice(payload)?;
            if r.schema != contract::NOTICE_RECEIPT_SCHEMA {
                return Err(Refusal::Receipt("unknown schema"));
            }
            if r.notice_id != *notice_id || r.site != site {
                return Err(Refusal::Receipt("notice_id or site is not the topic's"));
            }
            let receipt = Receipt {
                received_at: Some(clip(&r.received_at)),
                played_at: r.played_at.as_deref().map(clip),
                error: r.error.as_deref().map(clip),
            };
            store.put_receipt(site, notice_id, Some(&receipt))
        }
        _ => return Ok(Ok(Ingested::Duplicate)),
    })
}

fn topic(cfg: &DeskConfig, site: &str, levels: &[&str]) -> String {
    format!("{}/{site}/{}", cfg.mqtt.topic_root, levels.join("/"))
}

fn changes(stored: Ingested) -> Vec<Change> {
    match stored {
        Ingested::Duplicate => Vec::new(),
        Ingested::Site(site) => vec![Change::Site { site }],
        Ingested::Notice(notice_id) => vec![Change::Notice { notice_id }],
        Ingested::Event { site, event_id, incident_opened } => {
            let mut out = vec![Change::Event { site: site.clone(), event_id: event_id.clone() }];
            if incident_opened {
                out.push(Change::Incident { site: site.clone(), event_id });
                out.push(Change::Site { site });
            }
            out
        }
    }
}
