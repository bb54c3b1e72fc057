//! MQTT ingest: one persistent session (clean session off, stable client id, QoS 1)
//! on every topic of the contract for all sites, each message stored before the
//! broker gets its PUBACK.
//!
//! Promises: a message is acknowledged only once it is in the store (or refused as
//! malformed, which is logged and noted on its site), so a desk or broker restart
//! loses nothing the broker queued; repeats are harmless (the store dedupes). Strings
//! from devices are stored as sent; ids that become topic levels are checked.

use std::sync::Arc;
use std::time::Duration;

use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Packet, Publish, QoS, TlsConfiguration, Transport};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::config::DeskConfig;
use super::live::{Change, Live};
use super::store::{Ingested, Store};
use crate::contract::{EventMessage, HealthReport, Info, check_id};

/// Pictures and clips are large; anything bigger than this is refused by the client.
const MAX_PACKET: usize = 64 << 20;

/// The desk's side of the broker: ingest runs on it; commands and escalations go out on it.
pub struct Mqtt {
    client: AsyncClient,
    root: String,
}

impl Mqtt {
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
    ]
    .iter()
    .map(|f| format!("{root}/{f}"))
    .collect()
}

/// Connects and starts the ingest task; the returned handle publishes.
pub fn start(
    cfg: Arc<DeskConfig>,
    store: Arc<Store>,
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
    tokio::spawn(ingest(cfg, client, eventloop, store, live, stop));
    Ok(mqtt)
}

/// Polls the event loop on a task of its own, so acks and pings flow while messages
/// are being stored; the broker's in-flight window bounds what waits in the channel.
fn forward(mut eventloop: EventLoop, stop: CancellationToken) -> mpsc::UnboundedReceiver<Result<Event, String>> {
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let event = tokio::select! {
                _ = stop.cancelled() => break,
                e = eventloop.poll() => e,
            };
            let failed = event.is_err();
            if tx.send(event.map_err(|e| e.to_string())).is_err() {
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
    live: Live,
    stop: CancellationToken,
) {
    let mut events = forward(eventloop, stop.clone());
    let mut failing = false;
    while let Some(event) = events.recv().await {
        match event {
            Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                tracing::info!("connected to the broker (session kept: {})", ack.session_present);
                failing = false;
                for f in filters(&cfg.mqtt.topic_root) {
                    if let Err(e) = client.subscribe(f, QoS::AtLeastOnce).await {
                        tracing::warn!("subscribing: {e}");
                    }
                }
            }
            Ok(Event::Incoming(Packet::Publish(p))) => {
                let c = cfg.clone();
                let s = store.clone();
                let msg = p.clone();
                match tokio::task::spawn_blocking(move || handle(&c, &s, &msg)).await {
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
            }
        }
    }
    let _ = client.disconnect().await;
}

/// Stores one message; Err only when it could not be stored (it is then not acked).
fn handle(cfg: &DeskConfig, store: &Store, p: &Publish) -> anyhow::Result<Vec<Change>> {
    let Some(rest) = p.topic.strip_prefix(&cfg.mqtt.topic_root).and_then(|r| r.strip_prefix('/')) else {
        return Ok(Vec::new());
    };
    let levels: Vec<&str> = rest.split('/').collect();
    let site = levels[0];
    if check_id(site).is_err() {
        tracing::warn!("ignored a message on {}: the site is not a valid id", p.topic);
        return Ok(Vec::new());
    }
    let stored = match dispatch(cfg, store, site, &levels[1..], &p.payload) {
        Ok(r) => r?,
        Err(why) => {
            tracing::warn!("refused a message on {}: {why}", p.topic);
            store.put_note(site, &p.topic, &format!("refused: {why}"))?
        }
    };
    Ok(changes(stored))
}

/// Routes a message by its topic levels below the site. The outer Err is a refusal
/// (malformed message), the inner one a storage failure.
fn dispatch(
    cfg: &DeskConfig,
    store: &Store,
    site: &str,
    levels: &[&str],
    payload: &[u8],
) -> Result<anyhow::Result<Ingested>, String> {
    let text = || std::str::from_utf8(payload).map_err(|_| "not UTF-8".to_owned());
    Ok(match levels {
        ["status"] => {
            let s = text()?;
            if !matches!(s, "online" | "offline" | "stopped") {
                return Err(format!(
                    "status {:?} is not online, offline or stopped",
                    s.chars().take(40).collect::<String>()
                ));
            }
            store.put_status(site, s)
        }
        ["info"] => {
            let info: Info = serde_json::from_slice(payload).map_err(|e| e.to_string())?;
            let cameras = info
                .cameras
                .into_iter()
                .filter(|c| check_id(&c.id).is_ok())
                .map(|c| (c.id, c.name))
                .collect::<Vec<_>>();
            store.put_info(site, text()?, &cameras)
        }
        [camera, "health"] => {
            let h: HealthReport = serde_json::from_slice(payload).map_err(|e| e.to_string())?;
            if h.camera != *camera || check_id(camera).is_err() {
                return Err("the camera in the payload is not the topic's".into());
            }
            store.put_health(site, &h, text()?)
        }
        ["events"] => {
            let e: EventMessage = serde_json::from_slice(payload).map_err(|e| e.to_string())?;
            if e.site != site || check_id(&e.camera).is_err() || e.event_id.is_empty() || e.event_id.len() > 64 {
                return Err("site, camera or event_id does not fit the topic or the id rule".into());
            }
            let v: serde_json::Value = serde_json::from_slice(payload).map_err(|e| e.to_string())?;
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
            check_id(camera).map_err(|e| e.0)?;
            store.put_file(site, &topic(cfg, site, levels), "live", camera, payload)
        }
        ["stats"] => {
            let v: serde_json::Value = serde_json::from_slice(payload).map_err(|e| e.to_string())?;
            let seq = v["seq"].as_i64().ok_or("stats without seq")?;
            store.put_stats(
                site,
                seq,
                v["camera"].as_str().unwrap_or(""),
                v["period_start"].as_str().unwrap_or(""),
                text()?,
            )
        }
        ["command_errors"] | [.., "state"] => store.put_note(site, &topic(cfg, site, levels), text()?),
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
