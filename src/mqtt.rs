//! Publishing to the duty desk's broker, as docs/mqtt.md specifies.
//!
//! Promises: events go out strictly in `seq` order, one at a time, each after its
//! snapshot has been acknowledged (so a desk always has the picture before the event
//! that names it); an event leaves the outbox only after its PUBACK. A lost
//! connection forgets everything in flight and starts again from the outbox, so
//! delivery is at least once and never out of order. `status` is retained: `online`
//! after every connect, `offline` as the last will, `stopped` on a clean stop.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rumqttc::{AsyncClient, Event, LastWill, MqttOptions, Outgoing, Packet, QoS};
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::outbox::{Outbox, Pending};

/// Where and as whom to connect.
#[derive(Clone)]
pub struct MqttSettings {
    pub host: String,
    pub port: u16,
    pub client_id: String,
    pub username: Option<String>,
    pub password: Option<String>,
    pub keep_alive: Duration,
    pub topics: Topics,
}

impl std::fmt::Debug for MqttSettings {
    // Hand-written so that the password can never reach a log line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MqttSettings")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("client_id", &self.client_id)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .finish()
    }
}

/// The topic tree of one site.
#[derive(Debug, Clone)]
pub struct Topics {
    pub root: String,
    pub site: String,
}

impl Topics {
    pub fn status(&self) -> String {
        format!("{}/{}/status", self.root, self.site)
    }
    pub fn info(&self) -> String {
        format!("{}/{}/info", self.root, self.site)
    }
    pub fn events(&self) -> String {
        format!("{}/{}/events", self.root, self.site)
    }
    pub fn health(&self, camera: &str) -> String {
        format!("{}/{}/{camera}/health", self.root, self.site)
    }
}

/// A retained message whose latest value is all that matters (health): published
/// when connected, not stored; the next one replaces it anyway.
#[derive(Debug, Clone)]
pub struct Retained {
    pub topic: String,
    pub payload: Vec<u8>,
}

/// What a publish we asked for was, so its PUBACK can be acted on.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Tag {
    Snapshot(u64),
    Event(u64),
    Stopped,
    Other,
}

/// Largest message we send: a snapshot JPEG with room to spare.
const MAX_PACKET: usize = 8 * 1024 * 1024;
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Runs until `stop` is cancelled and the outbox is drained (or `DRAIN_TIMEOUT`
/// passed): connects, reconnects with backoff, and feeds the outbox to the broker.
/// `wake` is notified whenever something is pushed into the outbox.
pub async fn run(
    settings: MqttSettings,
    info_json: String,
    outbox: Arc<Mutex<Outbox>>,
    wake: Arc<Notify>,
    mut retained: mpsc::Receiver<Retained>,
    stop: CancellationToken,
) {
    let topics = settings.topics.clone();
    let mut opts = MqttOptions::new(&settings.client_id, &settings.host, settings.port);
    opts.set_keep_alive(settings.keep_alive)
        .set_clean_session(false)
        .set_max_packet_size(MAX_PACKET, MAX_PACKET)
        .set_last_will(LastWill::new(topics.status(), "offline", QoS::AtLeastOnce, true));
    if let Some(user) = &settings.username {
        opts.set_credentials(user, settings.password.clone().unwrap_or_default());
    }
    let broker = format!("{}:{}", settings.host, settings.port);
    let (client, mut eventloop) = AsyncClient::new(opts, 64);

    let mut connected = false;
    let mut ever_connected = false;
    let mut backoff = Duration::from_secs(1);
    // Publishes asked for but not yet given a packet id, in the order asked: rumqttc
    // sends them in that order and reports each as Outgoing::Publish(pkid).
    let mut asked: VecDeque<Tag> = VecDeque::new();
    let mut by_pkid: HashMap<u16, Tag> = HashMap::new();
    // The event being delivered (snapshot first, then the event itself).
    let mut current: Option<Pending> = None;
    let mut drain_deadline: Option<tokio::time::Instant> = None;
    let mut stopped_sent = false;

    loop {
        // Start the next event when idle; when stopping and the outbox is empty, say so.
        if connected && current.is_none() && !stopped_sent {
            match with_outbox(&outbox, |o| o.oldest()).await {
                Ok(Some(p)) => {
                    let tag = publish_pending(&client, &topics, &p).await;
                    asked.push_back(tag);
                    current = Some(p);
                }
                Ok(None) if drain_deadline.is_some() => {
                    // Last health words (cameras offline) go out before "stopped".
                    while let Ok(r) = retained.try_recv() {
                        if client.publish(r.topic, QoS::AtLeastOnce, true, r.payload).await.is_ok() {
                            asked.push_back(Tag::Other);
                        }
                    }
                    let _ = client.publish(topics.status(), QoS::AtLeastOnce, true, "stopped").await;
                    asked.push_back(Tag::Stopped);
                    stopped_sent = true;
                }
                Ok(None) => {}
                Err(e) => warn!("outbox: {e}"),
            }
        }

        let deadline = drain_deadline.unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(3600));
        tokio::select! {
            ev = eventloop.poll() => match ev {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    connected = true;
                    ever_connected = true;
                    backoff = Duration::from_secs(1);
                    let pending = with_outbox(&outbox, |o| o.pending_count()).await.unwrap_or(0);
                    info!(broker = %broker, pending, "MQTT connected");
                    for (topic, payload) in [(topics.status(), "online".to_owned()), (topics.info(), info_json.clone())] {
                        if client.publish(topic, QoS::AtLeastOnce, true, payload).await.is_ok() {
                            asked.push_back(Tag::Other);
                        }
                    }
                }
                Ok(Event::Outgoing(Outgoing::Publish(pkid))) => {
                    if let Some(tag) = asked.pop_front() {
                        by_pkid.insert(pkid, tag);
                    }
                }
                Ok(Event::Incoming(Packet::PubAck(ack))) => match by_pkid.remove(&ack.pkid) {
                    Some(Tag::Snapshot(seq)) => {
                        if let Some(p) = current.as_ref().filter(|p| p.seq == seq) {
                            let _ = client.publish(topics.events(), QoS::AtLeastOnce, false, p.payload.clone()).await;
                            asked.push_back(Tag::Event(seq));
                        }
                    }
                    Some(Tag::Event(seq)) => {
                        match with_outbox(&outbox, move |o| o.ack(seq)).await {
                            Ok(()) => debug!(seq, "event delivered"),
                            Err(e) => warn!(seq, "outbox: cannot mark event delivered: {e}"),
                        }
                        current = None;
                    }
                    Some(Tag::Stopped) => break,
                    _ => {}
                },
                Ok(_) => {}
                Err(e) => {
                    if connected {
                        warn!(broker = %broker, "MQTT connection lost: {e}; events wait in the outbox");
                    } else if drain_deadline.is_none() {
                        let hint = if ever_connected { "" } else { " (check mqtt.host and mqtt.port, and that the broker runs)" };
                        warn!(broker = %broker, "cannot reach the MQTT broker: {e}; retrying in {}s{hint}", backoff.as_secs());
                    }
                    connected = false;
                    // Forget what was in flight: the outbox is the one source of truth,
                    // and replaying from it keeps `seq` order across reconnects.
                    eventloop.pending.clear();
                    asked.clear();
                    by_pkid.clear();
                    current = None;
                    stopped_sent = false;
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = tokio::time::sleep_until(deadline) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                }
            },
            Some(r) = retained.recv() => {
                if connected && client.publish(r.topic, QoS::AtLeastOnce, true, r.payload).await.is_ok() {
                    asked.push_back(Tag::Other);
                }
            }
            _ = wake.notified(), if current.is_none() => {}
            _ = stop.cancelled(), if drain_deadline.is_none() => {
                drain_deadline = Some(tokio::time::Instant::now() + DRAIN_TIMEOUT);
            }
            _ = tokio::time::sleep_until(deadline), if drain_deadline.is_some() => {
                let left = with_outbox(&outbox, |o| o.pending_count()).await.unwrap_or(0);
                warn!(pending = left, "stopping before the broker took every event; they stay in the outbox for the next start");
                if connected && !stopped_sent {
                    // Still say "stopped", or the retained status would read "online".
                    let _ = client.publish(topics.status(), QoS::AtLeastOnce, true, "stopped").await;
                    asked.push_back(Tag::Stopped);
                    let _ = tokio::time::timeout(Duration::from_secs(2), async {
                        while let Ok(ev) = eventloop.poll().await {
                            match ev {
                                Event::Outgoing(Outgoing::Publish(pkid)) => {
                                    if let Some(tag) = asked.pop_front() {
                                        by_pkid.insert(pkid, tag);
                                    }
                                }
                                Event::Incoming(Packet::PubAck(ack)) if by_pkid.remove(&ack.pkid) == Some(Tag::Stopped) => break,
                                _ => {}
                            }
                        }
                    })
                    .await;
                }
                break;
            }
        }
    }

    if connected {
        let _ = client.disconnect().await;
        // Let the DISCONNECT out, so the broker does not publish the last will.
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Outgoing(Outgoing::Disconnect)) | Err(_) => break,
                    Ok(_) => {}
                }
            }
        })
        .await;
        info!(broker = %broker, "MQTT disconnected cleanly (status: stopped)");
    }
}

async fn publish_pending(client: &AsyncClient, topics: &Topics, p: &Pending) -> Tag {
    match &p.snapshot {
        Some((topic, jpeg)) => {
            let _ = client.publish(topic.clone(), QoS::AtLeastOnce, false, jpeg.clone()).await;
            Tag::Snapshot(p.seq)
        }
        None => {
            let _ = client.publish(topics.events(), QoS::AtLeastOnce, false, p.payload.clone()).await;
            Tag::Event(p.seq)
        }
    }
}

/// Runs a (blocking) SQLite call off the async workers.
pub async fn with_outbox<R: Send + 'static>(
    outbox: &Arc<Mutex<Outbox>>,
    f: impl FnOnce(&mut Outbox) -> Result<R, crate::outbox::OutboxError> + Send + 'static,
) -> Result<R, crate::outbox::OutboxError> {
    let outbox = outbox.clone();
    tokio::task::spawn_blocking(move || {
        let mut guard = outbox.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        f(&mut guard)
    })
    .await
    .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))
}
