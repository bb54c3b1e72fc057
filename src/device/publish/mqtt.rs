//! Publishing to the duty desk's broker, as docs/mqtt.md specifies.
//!
//! Promises: events go out strictly in `seq` order, one at a time, each after its
//! snapshot has been acknowledged (so a desk always has the picture before the event
//! that names it); an event leaves the outbox only after its PUBACK. A lost
//! connection forgets everything in flight and starts again from the outbox, so
//! delivery is at least once and never out of order. `status` is retained: `online`
//! after every connect, `offline` as the last will, `stopped` on a clean stop.
//!
//! An outbox that cannot write (full disk, damaged file) never makes an event go out
//! twice: the outbox keeps the broker's acknowledgements in memory and hands out only
//! what the broker does not have; the publisher retries the writes with a growing
//! pause (1 s to 30 s) and goes on delivering meanwhile.
//!
//! Stats messages (contract 1.1) go the same way beside the events: stored first, one
//! at a time in their own `seq` order, removed from the pending ones after their PUBACK;
//! a stop waits for them as for events.
//!
//! Each connection gets a fresh rumqttc client and event loop, polled by a task of its
//! own: rumqttc's `poll` must not be cancelled mid-connect (the broker would see a
//! dropped connection and publish the last will), and nothing from a dead connection
//! can then leak into the next one.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use rumqttc::{
    AsyncClient, ConnectionError, Event, EventLoop, LastWill, MqttOptions, Outgoing, Packet, QoS, SubscribeFilter,
    TlsConfiguration, Transport,
};
use tokio::sync::{Notify, mpsc};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::contract::Topics;
use crate::device::ops::stages::{self, Stage};
use crate::device::publish::clip_budget::{ClipBudget, Verdict};
use crate::device::publish::mqtt_link::MqttLink;
use crate::device::publish::outbox::{Pending, SharedOutbox};
use crate::device::publish::takeover::Takeovers;

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
    /// Connection state for status, metrics and the watchdog.
    pub link: Arc<MqttLink>,
    /// TLS when set (see `tls::client_config`), and the CA file it trusts, for hints.
    pub tls: Option<Arc<rustls::ClientConfig>>,
    pub tls_ca_file: Option<std::path::PathBuf>,
    /// Events per second at most (0: no bound), so a backlog drains steadily.
    pub max_events_per_s: u32,
    /// Topic filters subscribed to (QoS 1) at every connect; what arrives goes to `incoming`.
    pub subscriptions: Vec<String>,
    /// Clip bytes an hour at most (0: no bound), and how long a clip may wait for them.
    pub clip_bytes_per_hour: u64,
    pub clip_keep: Duration,
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
            .field("tls", &self.tls.is_some())
            .field("max_events_per_s", &self.max_events_per_s)
            .finish()
    }
}

/// A message outside the outbox: a retained one whose latest value is all that matters
/// (health, a switch's state, a notice receipt), published when connected and again
/// after every connect until an empty payload clears it; or a passing answer (a
/// command error, a picture asked for), published if connected, else dropped.
#[derive(Debug, Clone)]
pub struct Message {
    pub topic: String,
    pub payload: Vec<u8>,
    pub retain: bool,
}

impl Message {
    pub fn retained(topic: String, payload: impl Into<Vec<u8>>) -> Message {
        Message { topic, payload: payload.into(), retain: true }
    }
    pub fn passing(topic: String, payload: impl Into<Vec<u8>>) -> Message {
        Message { topic, payload: payload.into(), retain: false }
    }
}

/// A message that came in on one of `MqttSettings::subscriptions`.
#[derive(Debug, Clone)]
pub struct Incoming {
    pub topic: String,
    pub payload: Vec<u8>,
}

/// What a publish we asked for was, so its PUBACK can be acted on.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Tag {
    /// The `n`th thing the event `seq` carries (snapshot, clip), sent before it.
    Attachment(u64, usize),
    Event(u64),
    /// A stats message, by its own `seq`.
    Stats(u64),
    Stopped,
    Other,
}

/// Largest message we send: a clip (the clip stage keeps them smaller) with room to spare.
const MAX_PACKET: usize = 32 * 1024 * 1024;
/// How long a clean stop waits for the broker to take what is in the outbox.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the last words ("stopped", DISCONNECT) may take after that.
const GOODBYE_TIMEOUT: Duration = Duration::from_secs(2);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// Pauses between retries of outbox writes (or reads) that failed.
const RETRY_MIN: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(30);

/// Runs until `stop` is cancelled and the outbox is drained (or `DRAIN_TIMEOUT`
/// passed): connects, reconnects with backoff, and feeds the outbox to the broker.
/// `wake` is notified whenever something is pushed into the outbox.
pub async fn run(
    settings: MqttSettings,
    info_json: String,
    outbox: SharedOutbox,
    wake: Arc<Notify>,
    channels: (mpsc::Receiver<Message>, mpsc::Sender<Incoming>),
    stop: CancellationToken,
) {
    let (messages, incoming) = channels;
    let opts = mqtt_options(&settings);
    let tls_hint = tls_hint(&settings);
    let client_id = settings.client_id.clone();
    let min_gap = match settings.max_events_per_s {
        0 => Duration::ZERO,
        n => Duration::from_secs(1) / n,
    };
    let mut publisher = Publisher {
        broker: format!("{}:{}", settings.host, settings.port),
        topics: settings.topics,
        info_json,
        outbox,
        wake,
        messages,
        incoming,
        subscriptions: settings.subscriptions,
        latest: BTreeMap::new(),
        stop,
        drain_deadline: None,
        ever_connected: false,
        link: settings.link.clone(),
        min_gap,
        next_send: Instant::now(),
        retry: None,
        retry_pause: RETRY_MIN,
        read_failing: false,
        clip_budget: ClipBudget::new(settings.clip_bytes_per_hour),
        clip_keep: settings.clip_keep,
        clip_wait: None,
    };
    let mut backoff = Duration::from_secs(1);
    // The event in flight at the last losses, and how many times in a row.
    let mut stuck: (Option<u64>, u32) = (None, 0);
    let mut takeovers = Takeovers::default();
    loop {
        let (client, eventloop) = AsyncClient::new(opts.clone(), 64);
        let (tx, rx) = mpsc::channel(64);
        let poller = tokio::spawn(forward_events(eventloop, tx));
        let outcome = publisher.connection(&client, rx).await;
        poller.abort();
        let (lasted, error, in_flight, tls) = match outcome {
            Outcome::Done => break,
            Outcome::Lost { lasted, error, tls, in_flight } => (lasted, error, in_flight, tls),
        };
        publisher.link.lost(&error);
        let seq = in_flight.map(|(seq, _)| seq);
        stuck = if seq.is_some() && seq == stuck.0 { (seq, stuck.1 + 1) } else { (seq, 1) };
        if let (Some((seq, bytes)), 3) = (in_flight, stuck.1) {
            warn!(broker = %publisher.broker, seq, attachment_bytes = bytes,
                  "the connection dropped 3 times while delivering this event; a broker that refuses it (message size limit?) holds up every later event");
        }
        if let Some(lasted) = lasted {
            // Retry fast after a connection that worked, but not when the same event
            // keeps failing: that would hammer the broker once a second forever.
            if stuck.1 == 1 {
                backoff = Duration::from_secs(1);
            }
            warn!(broker = %publisher.broker, "MQTT connection lost: {error}; events wait in the outbox");
            if takeovers.ended(lasted) {
                warn!(broker = %publisher.broker, "{}", Takeovers::hint(&client_id));
            }
            publisher.link.warn(takeovers.suspected().then(|| Takeovers::hint(&client_id)));
        } else if publisher.drain_deadline.is_none() {
            let hint = if tls {
                tls_hint.as_str()
            } else if publisher.ever_connected {
                ""
            } else {
                " (check mqtt.host and mqtt.port, and that the broker runs)"
            };
            warn!(broker = %publisher.broker, "cannot reach the MQTT broker: {error}; retrying in {}s{hint}", backoff.as_secs());
        }
        if !publisher.pause(backoff).await {
            break;
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// The session every connection asks for: persistent, with the "offline" will.
fn mqtt_options(settings: &MqttSettings) -> MqttOptions {
    let mut opts = MqttOptions::new(&settings.client_id, &settings.host, settings.port);
    opts.set_keep_alive(settings.keep_alive)
        .set_clean_session(false)
        .set_max_packet_size(MAX_PACKET, MAX_PACKET)
        .set_last_will(LastWill::new(settings.topics.status(), "offline", QoS::AtLeastOnce, true));
    if let Some(user) = &settings.username {
        opts.set_credentials(user, settings.password.clone().unwrap_or_default());
    }
    if let Some(tls) = &settings.tls {
        opts.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(tls.clone())));
    }
    opts
}

/// What to check when the TLS step fails.
fn tls_hint(settings: &MqttSettings) -> String {
    match &settings.tls_ca_file {
        Some(ca) => format!(
            " (TLS: the broker's certificate must be signed by a CA in mqtt.tls.ca_file = {}, and name the host in mqtt.host)",
            ca.display()
        ),
        None => " (TLS: the broker's certificate must be signed by a CA this system trusts, or set mqtt.tls.ca_file)"
            .to_owned(),
    }
}

/// Hands every event of one connection to the publisher, and ends with the first error.
async fn forward_events(mut eventloop: EventLoop, tx: mpsc::Sender<Result<Event, ConnectionError>>) {
    loop {
        let ev = eventloop.poll().await;
        let failed = ev.is_err();
        if tx.send(ev).await.is_err() || failed {
            return;
        }
    }
}

enum Outcome {
    /// Stopped as asked (or gave up delivering at the stop deadline).
    Done,
    /// `in_flight`: the event being delivered when it happened (seq, snapshot and clip bytes).
    /// `tls`: the TLS step failed (certificate, name, handshake), not the network.
    /// `lasted`: how long the broker had accepted the connection (None: it never did).
    Lost { lasted: Option<Duration>, error: String, tls: bool, in_flight: Option<(u64, usize)> },
}

/// What outlives one connection.
struct Publisher {
    broker: String,
    topics: Topics,
    info_json: String,
    outbox: SharedOutbox,
    wake: Arc<Notify>,
    messages: mpsc::Receiver<Message>,
    incoming: mpsc::Sender<Incoming>,
    subscriptions: Vec<String>,
    /// Latest payload per retained topic, republished after every connect.
    latest: BTreeMap<String, Vec<u8>>,
    stop: CancellationToken,
    drain_deadline: Option<Instant>,
    ever_connected: bool,
    link: Arc<MqttLink>,
    /// Least time between two events (from `max_events_per_s`), and when the next may go.
    min_gap: Duration,
    next_send: Instant,
    /// When to retry what the outbox could not write (or read), while something failed.
    retry: Option<Instant>,
    retry_pause: Duration,
    /// The outbox could not be read at the last try (logged once per spell).
    read_failing: bool,
    /// Clips sent over the last hour, within `mqtt.max_clip_bytes_per_hour`.
    clip_budget: ClipBudget,
    clip_keep: Duration,
    /// While the next event's clip waits for the budget: when to look again.
    clip_wait: Option<Instant>,
}

/// What one connection keeps, from CONNECT until it is lost.
struct Connection {
    connected: bool,
    /// When the broker accepted it.
    connected_at: Option<Instant>,
    /// Publishes asked for but not yet given a packet id, in the order asked: the
    /// event loop sends them in that order and reports each as Outgoing::Publish.
    asked: VecDeque<Tag>,
    by_pkid: HashMap<u16, Tag>,
    /// The event being delivered: its snapshot first, then the event itself.
    current: Option<Pending>,
    current_sent: std::time::Instant,
    stopped_sent: bool,
    /// Whether the outbox may hold something to send: set by whatever can change
    /// that (a push, an ack, a stop), so that pings and health acks do not each cost
    /// a query.
    look: bool,
    /// The stats message in flight (its own `seq`), and whether the outbox may hold
    /// one to send: stats go one at a time beside the events, in their own order.
    stats: Option<u64>,
    look_stats: bool,
}

impl Default for Connection {
    fn default() -> Self {
        Connection {
            connected: false,
            connected_at: None,
            asked: VecDeque::new(),
            by_pkid: HashMap::new(),
            current: None,
            current_sent: std::time::Instant::now(),
            stopped_sent: false,
            look: true,
            stats: None,
            look_stats: true,
        }
    }
}

impl Connection {
    /// The connection ended with `failure` (or its event loop did).
    fn lost(self, failure: Option<ConnectionError>) -> Outcome {
        let tls = matches!(failure, Some(ConnectionError::Tls(_)));
        let error = failure.map_or("event loop ended".into(), |e| e.to_string());
        let in_flight = self.current.map(|p| (p.seq, p.attachments().map(|a| a.1.len()).sum()));
        Outcome::Lost { lasted: self.connected_at.map(|t| t.elapsed()), error, tls, in_flight }
    }
}

impl Publisher {
    /// Serves one connection, from CONNECT until it is lost or the stop is complete.
    async fn connection(
        &mut self,
        client: &AsyncClient,
        mut events: mpsc::Receiver<Result<Event, ConnectionError>>,
    ) -> Outcome {
        let mut conn = Connection::default();
        loop {
            self.link.alive();
            // A stop drains at full speed: the time left is short.
            let paced = self.drain_deadline.is_none() && Instant::now() < self.next_send;
            let retry_at = self.retry.unwrap_or_else(Instant::now);
            if conn.connected && conn.look_stats && conn.stats.is_none() && !conn.stopped_sent {
                self.send_stats(&mut conn, client).await;
            }
            let waiting = self.clip_wait.is_some();
            if conn.connected && conn.look && conn.current.is_none() && !conn.stopped_sent && !paced && !waiting {
                self.send_next(&mut conn, client).await;
            }

            let deadline = self.drain_deadline.unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
            tokio::select! {
                ev = events.recv() => match ev {
                    None | Some(Err(_)) => return conn.lost(ev.and_then(Result::err)),
                    Some(Ok(Event::Incoming(Packet::ConnAck(_)))) => self.on_connack(&mut conn, client).await,
                    Some(Ok(Event::Outgoing(Outgoing::Publish(pkid)))) => {
                        if let Some(tag) = conn.asked.pop_front() {
                            conn.by_pkid.insert(pkid, tag);
                        }
                    }
                    Some(Ok(Event::Incoming(Packet::Publish(p)))) => self.on_incoming(p.topic, p.payload.to_vec()),
                    Some(Ok(Event::Incoming(Packet::PubAck(ack)))) => {
                        if let Some(done) = self.on_puback(&mut conn, client, ack.pkid, &mut events).await {
                            return done;
                        }
                    }
                    Some(Ok(_)) => {}
                },
                Some(m) = self.messages.recv() => self.on_message(&mut conn, client, m).await,
                _ = self.wake.notified(), if conn.current.is_none() => (conn.look, conn.look_stats) = (true, true),
                _ = tokio::time::sleep_until(retry_at), if self.retry.is_some() => {
                    self.retry = None;
                    if self.outbox.with_async(|o| o.retry()).await {
                        self.retry_pause = RETRY_MIN;
                    } else {
                        self.retry_later();
                    }
                    (conn.look, conn.look_stats) = (true, true);
                }
                _ = tokio::time::sleep_until(self.next_send), if paced && conn.look && conn.current.is_none() => {}
                _ = tokio::time::sleep_until(self.clip_wait.unwrap_or_else(Instant::now)), if waiting => {
                    self.clip_wait = None;
                    conn.look = true;
                }
                _ = self.stop.cancelled(), if self.drain_deadline.is_none() => {
                    self.drain_deadline = Some(Instant::now() + DRAIN_TIMEOUT);
                    conn.look = true; // an empty outbox now means: say "stopped"
                    conn.look_stats = true;
                }
                _ = tokio::time::sleep_until(deadline), if self.drain_deadline.is_some() => {
                    if let Some(done) = self.on_drain_deadline(&mut conn, client).await {
                        return done;
                    }
                }
            }
        }
    }

    /// Publishes the oldest pending event (its snapshot first), or says "stopped" when
    /// a stop finds the outbox empty.
    async fn send_next(&mut self, conn: &mut Connection, client: &AsyncClient) {
        let next = self.outbox.with_async(|o| o.oldest()).await;
        // Logged once per spell, not at every broker packet.
        if let (Err(e), false) = (&next, self.read_failing) {
            warn!("outbox: cannot read the next event: {e}; retrying");
        }
        self.read_failing = next.is_err();
        match next {
            Ok(Some(mut p)) => {
                if !self.clip_fits(&mut p).await {
                    conn.look = false;
                    return;
                }
                conn.current_sent = std::time::Instant::now();
                conn.asked.push_back(publish_pending(client, &self.topics, &p).await);
                conn.current = Some(p);
                self.next_send = Instant::now() + self.min_gap;
            }
            // Stats still to go: "stopped" waits for them (their PUBACK looks again).
            Ok(None) if self.drain_deadline.is_some() && (conn.stats.is_some() || conn.look_stats) => conn.look = false,
            Ok(None) if self.drain_deadline.is_some() => {
                // Last chance to write what the broker has, so that the next
                // start does not send it again.
                self.outbox.with_async(|o| o.retry()).await;
                self.say_stopped(client, &mut conn.asked).await;
                conn.stopped_sent = true;
            }
            Ok(None) => conn.look = false,
            Err(_) => {
                self.retry_later();
                conn.look = false;
            }
        }
    }

    /// Publishes the oldest stats message the broker does not have yet, if any.
    async fn send_stats(&mut self, conn: &mut Connection, client: &AsyncClient) {
        match self.outbox.with_async(|o| o.oldest_stats()).await {
            Ok(Some((seq, payload))) => {
                if client.publish(self.topics.stats(), QoS::AtLeastOnce, false, payload).await.is_ok() {
                    conn.asked.push_back(Tag::Stats(seq));
                    conn.stats = Some(seq);
                }
            }
            Ok(None) => conn.look_stats = false,
            Err(e) => {
                debug!("outbox: cannot read the next stats message: {e}; retrying");
                conn.look_stats = false;
                self.retry_later();
            }
        }
    }

    /// Connected: status, info and the latest retained messages go out again.
    async fn on_connack(&mut self, conn: &mut Connection, client: &AsyncClient) {
        conn.connected = true;
        conn.connected_at = Some(Instant::now());
        self.ever_connected = true;
        self.link.connected();
        let pending = self.outbox.with_async(|o| o.pending_count()).await.unwrap_or(0);
        info!(broker = %self.broker, pending, "MQTT connected");
        let hello =
            [(self.topics.status(), b"online".to_vec()), (self.topics.info(), self.info_json.clone().into_bytes())];
        for (topic, payload) in hello.into_iter().chain(self.latest.clone()) {
            if client.publish(topic, QoS::AtLeastOnce, true, payload).await.is_ok() {
                conn.asked.push_back(Tag::Other);
            }
        }
        let filters = self.subscriptions.iter().map(|f| SubscribeFilter::new(f.clone(), QoS::AtLeastOnce));
        if !self.subscriptions.is_empty() && client.subscribe_many(filters).await.is_err() {
            warn!(broker = %self.broker, "cannot subscribe to the command topics; commands wait for the next connection");
        }
    }

    /// A message for the broker from outside the outbox (see [`Message`]).
    async fn on_message(&mut self, conn: &mut Connection, client: &AsyncClient, m: Message) {
        if conn.connected
            && client.publish(m.topic.clone(), QoS::AtLeastOnce, m.retain, m.payload.clone()).await.is_ok()
        {
            conn.asked.push_back(Tag::Other);
        } else if !m.retain {
            debug!(topic = %m.topic, "not connected: an answer is dropped");
        }
        if m.retain && m.payload.is_empty() {
            // Cleared: nothing to repeat at the next connect (the clear itself is sent
            // now, or the broker never had the topic from this connection).
            self.latest.remove(&m.topic);
        } else if m.retain {
            self.latest.insert(m.topic, m.payload);
        }
    }

    /// A command or notice from the broker, handed to the command service; a burst
    /// beyond its queue is dropped and logged rather than held up.
    fn on_incoming(&self, topic: String, payload: Vec<u8>) {
        if let Err(mpsc::error::TrySendError::Full(m)) = self.incoming.try_send(Incoming { topic, payload }) {
            warn!(topic = %m.topic, "too many commands at once: this one is dropped");
        }
    }

    /// The broker has a message: a snapshot's event follows it, an event is done, the
    /// "stopped" status ends the connection (`Some(Outcome::Done)`).
    async fn on_puback(
        &mut self,
        conn: &mut Connection,
        client: &AsyncClient,
        pkid: u16,
        events: &mut mpsc::Receiver<Result<Event, ConnectionError>>,
    ) -> Option<Outcome> {
        match conn.by_pkid.remove(&pkid) {
            Some(Tag::Attachment(seq, n)) => {
                if let Some(p) = conn.current.as_ref().filter(|p| p.seq == seq) {
                    conn.asked.push_back(publish_part(client, &self.topics, p, n + 1).await);
                }
            }
            Some(Tag::Event(seq)) => {
                if let Some(p) = conn.current.as_ref().filter(|p| p.seq == seq) {
                    record_delivery(&p.payload, conn.current_sent.elapsed());
                }
                // Delivered either way: the outbox remembers it in memory when
                // the disk cannot take it (and logs that once).
                self.link.delivered();
                match self.outbox.with_async(move |o| o.ack(seq)).await {
                    Ok(()) => debug!(seq, "event delivered"),
                    Err(e) => {
                        debug!(seq, "event delivered; the outbox cannot record it yet: {e}");
                        self.retry_later();
                    }
                }
                conn.current = None;
                conn.look = true;
            }
            Some(Tag::Stats(seq)) => {
                if let Err(e) = self.outbox.with_async(move |o| o.ack_stats(seq)).await {
                    debug!(seq, "stats delivered; the outbox cannot record it, so it may go again: {e}");
                }
                conn.stats = None;
                (conn.look, conn.look_stats) = (true, true);
            }
            Some(Tag::Stopped) => {
                goodbye(client, events).await;
                info!(broker = %self.broker, "MQTT disconnected cleanly (status: stopped)");
                return Some(Outcome::Done);
            }
            _ => {}
        }
        None
    }

    /// The drain's time is up: what is left stays for the next start; "stopped" is
    /// still said, with a short wait for its PUBACK.
    async fn on_drain_deadline(&mut self, conn: &mut Connection, client: &AsyncClient) -> Option<Outcome> {
        let left = self.outbox.with_async(|o| o.pending_count()).await.unwrap_or(0);
        if left > 0 {
            warn!(
                pending = left,
                "stopping before the broker took every event; they stay in the outbox for the next start"
            );
        }
        if !conn.connected || conn.stopped_sent {
            return Some(Outcome::Done);
        }
        // Still say "stopped", or the retained status would read "online".
        self.say_stopped(client, &mut conn.asked).await;
        conn.stopped_sent = true;
        self.drain_deadline = Some(Instant::now() + GOODBYE_TIMEOUT);
        None
    }

    /// Whether the event `p` may go now as far as its clip goes: within the hourly
    /// budget (which it then spends), or without the clip once it waited `clip_keep`
    /// (or can never fit). `false`: it waits, and `clip_wait` says until when.
    async fn clip_fits(&mut self, p: &mut Pending) -> bool {
        let Some(bytes) = p.clip.as_ref().map(|c| c.1.len() as u64) else { return true };
        let now = Instant::now();
        let waited = p.stored_at.elapsed().unwrap_or_default();
        let verdict = self.clip_budget.check(bytes, now.into_std());
        let over = match verdict {
            Verdict::Go => {
                self.clip_budget.spent(bytes, now.into_std());
                return true;
            }
            Verdict::Wait(d) if waited < self.clip_keep => {
                let until = d.min(self.clip_keep - waited);
                if self.clip_wait.is_none() {
                    info!(
                        seq = p.seq,
                        bytes,
                        wait_s = until.as_secs(),
                        "clip waits for mqtt.max_clip_bytes_per_hour; the events behind it wait too"
                    );
                }
                self.clip_wait = Some(now + until);
                return false;
            }
            Verdict::Wait(_) => "waited mqtt.clip_keep_s for the hourly budget",
            Verdict::Never => "it is bigger than mqtt.max_clip_bytes_per_hour",
        };
        let camera = serde_json::from_str::<serde_json::Value>(&p.payload)
            .ok()
            .and_then(|v| v["camera"].as_str().map(str::to_owned))
            .unwrap_or_default();
        warn!(camera = %camera, seq = p.seq, bytes, "clip dropped: {over}; the event goes without it");
        let mut dropped = p.clone();
        dropped = self
            .outbox
            .with_async(move |o| {
                o.drop_clip(&mut dropped, &camera);
                dropped
            })
            .await;
        *p = dropped;
        true
    }

    /// Schedules a retry of the outbox's failed writes (or reads), pausing longer each
    /// time in a row.
    fn retry_later(&mut self) {
        if self.retry.is_none() {
            self.retry = Some(Instant::now() + self.retry_pause);
            self.retry_pause = (self.retry_pause * 2).min(RETRY_MAX);
        }
    }

    /// Publishes the last retained words (health, then status `stopped`).
    async fn say_stopped(&mut self, client: &AsyncClient, asked: &mut VecDeque<Tag>) {
        while let Ok(m) = self.messages.try_recv() {
            if client.publish(m.topic, QoS::AtLeastOnce, m.retain, m.payload).await.is_ok() {
                asked.push_back(Tag::Other);
            }
        }
        if client.publish(self.topics.status(), QoS::AtLeastOnce, true, "stopped").await.is_ok() {
            asked.push_back(Tag::Stopped);
        }
    }

    /// Waits `backoff` before the next connection attempt; false when it is time to
    /// give up (stopping, and the drain deadline has passed).
    async fn pause(&mut self, backoff: Duration) -> bool {
        loop {
            let deadline = self.drain_deadline.unwrap_or_else(|| Instant::now() + backoff);
            tokio::select! {
                _ = tokio::time::sleep(backoff) => return true,
                _ = tokio::time::sleep_until(deadline), if self.drain_deadline.is_some() => {
                    let left = self.outbox.with_async(|o| o.pending_count()).await.unwrap_or(0);
                    warn!(pending = left, "stopping while the broker is unreachable; events stay in the outbox for the next start");
                    return false;
                }
                _ = self.stop.cancelled(), if self.drain_deadline.is_none() => {
                    self.drain_deadline = Some(Instant::now() + DRAIN_TIMEOUT);
                }
            }
        }
    }
}

/// Feeds the bench's figures: publish to PUBACK, and for `new` (whose `at` is the
/// receipt of the frame that made it) frame receipt to PUBACK. An `update` may show
/// an earlier, better picture, so its `at` says nothing about latency.
fn record_delivery(payload: &str, publish_to_ack: Duration) {
    stages::record(Stage::Mqtt, Duration::ZERO, publish_to_ack);
    #[derive(serde::Deserialize)]
    struct Timing<'a> {
        #[serde(rename = "type")]
        event_type: &'a str,
        at: &'a str,
    }
    if let Ok(t) = serde_json::from_str::<Timing>(payload)
        && t.event_type == "new"
        && let Ok(at) = humantime::parse_rfc3339(t.at)
        && let Ok(age) = std::time::SystemTime::now().duration_since(at)
    {
        stages::record(Stage::EndToEnd, Duration::ZERO, age);
    }
}

/// Sends DISCONNECT and waits (briefly) until it is out, so the broker does not
/// publish the last will.
async fn goodbye(client: &AsyncClient, events: &mut mpsc::Receiver<Result<Event, ConnectionError>>) {
    let _ = client.disconnect().await;
    let _ = tokio::time::timeout(GOODBYE_TIMEOUT, async {
        while let Some(Ok(ev)) = events.recv().await {
            if matches!(ev, Event::Outgoing(Outgoing::Disconnect)) {
                return;
            }
        }
    })
    .await;
}

async fn publish_pending(client: &AsyncClient, topics: &Topics, p: &Pending) -> Tag {
    publish_part(client, topics, p, 0).await
}

/// Publishes part `n` of `p`: its attachments in order (snapshot, clip), then the event.
async fn publish_part(client: &AsyncClient, topics: &Topics, p: &Pending, n: usize) -> Tag {
    match p.attachments().nth(n) {
        Some((topic, bytes)) => {
            let _ = client.publish(topic.clone(), QoS::AtLeastOnce, false, bytes.clone()).await;
            Tag::Attachment(p.seq, n)
        }
        None => {
            let _ = client.publish(topics.events(), QoS::AtLeastOnce, false, p.payload.clone()).await;
            Tag::Event(p.seq)
        }
    }
}
