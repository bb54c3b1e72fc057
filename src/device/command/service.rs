//! The command service: takes what arrives on the command and notice topics, applies
//! it, and answers on the topics the contract names. The [`Switchboard`] is the one
//! place a switch is changed, for the desk (over MQTT) and the technician (over the
//! control socket) alike.
//!
//! Promises: a command that is refused changes nothing and is answered on
//! `command_errors` and logged with its reason; a switch's state goes out retained at
//! start, after every change and (through the publisher) after every connect; pausing
//! a camera shows in its health at once; a picture asked for is answered within the
//! time it takes to encode it, or refused with the camera's state.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use super::notices::{NoticeBook, StoredNotice};
use super::parse::{Command, Notice, Refused, Targets, parse};
use super::player;
use super::switches::{RuleRef, Switch, Switches};
use crate::contract::{COMMAND_ERROR_SCHEMA, CameraState, CommandError, Topics, timestamp};
use crate::device::clip::mp4;
use crate::device::config::{NoticesConfig, Player};
use crate::device::ops::{CameraHealth, Live};
use crate::device::publish::mqtt::{Incoming, Message};

/// A picture older than this is not "the current picture".
const FRESH: Duration = Duration::from_secs(5);
/// How long a picture asked for may wait for a streaming camera's first decoded picture.
const FIRST_PICTURE: Duration = Duration::from_millis(1500);
/// How often expired notices' receipts are looked for.
const EXPIRY_TICK: Duration = Duration::from_secs(30);

/// Changes switches and says so: retained state, health, log.
pub struct Switchboard {
    targets: Targets,
    topics: Topics,
    switches: Arc<Switches>,
    out: mpsc::Sender<Message>,
    healths: Vec<Arc<CameraHealth>>,
    health_changed: Arc<Notify>,
}

impl Switchboard {
    pub fn new(
        targets: Targets,
        switches: Arc<Switches>,
        out: mpsc::Sender<Message>,
        healths: Vec<Arc<CameraHealth>>,
        health_changed: Arc<Notify>,
    ) -> Switchboard {
        let topics = Topics { root: targets.root.clone(), site: targets.site.clone() };
        Switchboard { targets, topics, switches, out, healths, health_changed }
    }

    pub fn targets(&self) -> &Targets {
        &self.targets
    }

    pub fn switches(&self) -> &Switches {
        &self.switches
    }

    /// Applies `switch` as asked `by` (for the log). `Ok(false)`: it already held.
    pub fn apply(&self, switch: &Switch, by: &str) -> Result<bool, Refused> {
        match switch {
            Switch::Detect { camera, .. } => self.targets.camera(camera).map(drop)?,
            Switch::Rule(r, _) => self.targets.rule(&r.camera, &r.zone, &r.rule).map(drop)?,
        }
        let stored = self.switches.apply(switch);
        self.announce(switch);
        let (camera, what) = match switch {
            Switch::Detect { camera, on } => (camera, format!("detection {}", if *on { "on" } else { "off" })),
            Switch::Rule(r, on) => {
                (&r.camera, format!("rule {}/{} {}", r.zone, r.rule, if *on { "armed" } else { "disarmed" }))
            }
        };
        match stored {
            Ok(true) => info!(camera = %camera, "{what} (by {by})"),
            Ok(false) => debug!(camera = %camera, "{what} already (by {by})"),
            Err(e) => {
                error!(camera = %camera, "{what} (by {by}), but it cannot be stored: {e}; it holds until gridwatch restarts");
                return Err(Refused(format!(
                    "applied, but it cannot be stored ({e}); it holds until gridwatch restarts"
                )));
            }
        }
        Ok(stored.unwrap_or(false))
    }

    /// Every switch's state, retained, and paused cameras' health: at start.
    pub fn announce_all(&self) {
        for cam in &self.targets.cameras {
            self.announce(&Switch::Detect { camera: cam.id.clone(), on: self.switches.detecting(&cam.id) });
            let disarmed = self.switches.disarmed(&cam.id);
            for (zone, rule) in &cam.rules {
                let on = !disarmed.iter().any(|(z, r)| z == zone && r == rule);
                let r = RuleRef { camera: cam.id.clone(), zone: zone.clone(), rule: (*rule).into() };
                self.announce(&Switch::Rule(r, on));
            }
        }
    }

    fn announce(&self, switch: &Switch) {
        let (topic, on) = match switch {
            Switch::Detect { camera, on } => {
                if let Some(h) = self.healths.iter().find(|h| h.camera() == camera)
                    && h.set_paused(!on)
                {
                    self.health_changed.notify_one();
                }
                (self.topics.detect_state(camera), *on)
            }
            Switch::Rule(r, on) => (self.topics.rule_state(&r.camera, &r.zone, &r.rule), *on),
        };
        self.send(Message::retained(topic, on_off(on)));
    }

    fn send(&self, m: Message) {
        if self.out.try_send(m).is_err() {
            warn!("commands: the publisher's queue is full; an answer is dropped");
        }
    }

    /// Answers a refused command on `command_errors`, and logs it.
    fn refuse(&self, topic: &str, reason: &Refused) {
        warn!(topic = ?topic, "command refused: {reason}");
        let answer = CommandError {
            schema: COMMAND_ERROR_SCHEMA.into(),
            topic: topic.into(),
            reason: reason.0.clone(),
            at: timestamp(SystemTime::now()),
        };
        if let Ok(json) = serde_json::to_vec(&answer) {
            self.send(Message::passing(self.topics.command_errors(), json));
        }
    }
}

fn streams(state: CameraState) -> bool {
    matches!(state, CameraState::Streaming | CameraState::Paused)
}

fn on_off(on: bool) -> &'static str {
    if on { "ON" } else { "OFF" }
}

/// What the notices side needs: the book, how to play, and where to write scratch files.
pub struct NoticeDesk {
    pub book: Arc<Mutex<NoticeBook>>,
    pub config: NoticesConfig,
    pub scratch: PathBuf,
    /// Rung when a notice arrives.
    pub wake: Arc<Notify>,
}

impl NoticeDesk {
    pub fn open(config: &NoticesConfig, storage: &std::path::Path) -> NoticeDesk {
        NoticeDesk {
            book: Arc::new(Mutex::new(NoticeBook::load(storage))),
            config: config.clone(),
            scratch: storage.to_owned(),
            wake: Arc::new(Notify::new()),
        }
    }

    fn with<R>(&self, f: impl FnOnce(&mut NoticeBook) -> R) -> R {
        f(&mut self.book.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

/// Serves commands and notices until `stop`: the command loop and the notice player.
pub async fn serve(
    board: Arc<Switchboard>,
    live: Arc<Live>,
    notices: NoticeDesk,
    mut incoming: mpsc::Receiver<Incoming>,
    stop: CancellationToken,
) {
    board.announce_all();
    let notices = Arc::new(notices);
    let player = tokio::spawn(play_notices(board.clone(), notices.clone(), stop.clone()));
    loop {
        let m = tokio::select! {
            m = incoming.recv() => match m { Some(m) => m, None => break },
            _ = stop.cancelled() => break,
        };
        match parse(board.targets(), &m.topic, &m.payload) {
            Ok(cmd) => handle(&board, &live, &notices, &m.topic, cmd).await,
            Err(why) => board.refuse(&m.topic, &why),
        }
    }
    if let Err(e) = player.await {
        error!("the notice player task failed: {e}");
    }
}

async fn handle(board: &Switchboard, live: &Live, notices: &NoticeDesk, topic: &str, cmd: Command) {
    let done = match cmd {
        Command::Detect { camera, on } => board.apply(&Switch::Detect { camera, on }, "the desk").map(drop),
        Command::Rule { camera, zone, rule, on } => {
            board.apply(&Switch::Rule(RuleRef { camera, zone, rule: rule.into() }, on), "the desk").map(drop)
        }
        Command::Snapshot { camera, request_id } => snapshot(board, live, &camera, &request_id).await,
        Command::Clip { event_id } => clip(board, live, &event_id).await,
        Command::Notice(n) => {
            receive_notice(board, notices, &n);
            Ok(())
        }
        Command::NoticeCleared => Ok(()),
    };
    if let Err(why) = done {
        board.refuse(topic, &why);
    }
}

/// The camera's current picture, privacy masks applied, at the stream's size.
async fn snapshot(board: &Switchboard, live: &Live, camera: &str, request_id: &str) -> Result<(), Refused> {
    let cam = live.camera(camera).ok_or_else(|| Refused(format!("no camera \"{camera}\"")))?;
    let counters = cam.health.counters();
    let state = serde_json::to_value(counters.state).ok().and_then(|v| v.as_str().map(str::to_owned));
    let state = state.unwrap_or_default();
    let fresh = || cam.frames.latest().filter(|f| f.captured_at.elapsed().unwrap_or_default() < FRESH);
    let mut frame = fresh();
    // A session that has just started decodes its first picture within a moment.
    let waiting = tokio::time::Instant::now() + FIRST_PICTURE;
    while frame.is_none() && streams(counters.state) && tokio::time::Instant::now() < waiting {
        tokio::time::sleep(Duration::from_millis(100)).await;
        frame = fresh();
    }
    let frame = match frame.filter(|_| streams(counters.state)) {
        Some(f) => f,
        None => return Err(Refused(format!("camera {camera} is {state}: it has no current picture to send"))),
    };
    let size = counters.stream.map(|s| (s.width, s.height));
    let renderer = cam.renderer.clone();
    let jpeg = tokio::task::spawn_blocking(move || {
        let mut pic = frame.picture.to_rgb();
        if let Some((w, h)) = size.filter(|&(w, h)| (w, h) != pic.dimensions() && w > 0 && h > 0) {
            pic = image::imageops::resize(&pic, w, h, image::imageops::FilterType::Triangle);
        }
        renderer.render(pic, &[], &[]).jpeg
    })
    .await
    .map_err(|e| Refused(format!("the picture could not be made: {e}")))?;
    info!(camera, request = request_id, bytes = jpeg.len(), "picture sent on request");
    board.send(Message::passing(board.topics.snapshot_reply(camera, request_id), jpeg));
    Ok(())
}

/// A recent event's clip, cut from its camera's ring (whatever the event's kind),
/// published on the event's clip topic.
async fn clip(board: &Switchboard, live: &Live, event_id: &str) -> Result<(), Refused> {
    let no = |why: String| Refused(format!("no clip for event {event_id}: {why}"));
    let id = event_id.to_owned();
    let event = live
        .outbox
        .with_async(move |o| o.latest_of(&id))
        .await
        .map_err(|e| no(format!("the outbox cannot be read ({e})")))?
        .ok_or_else(|| no("this device has no such event (it keeps its last 10000)".into()))?;
    let cam = live.camera(&event.camera).ok_or_else(|| no(format!("its camera {} is gone", event.camera)))?;
    let job = cam.clips.lock().unwrap_or_else(|p| p.into_inner()).on_request(&event).map_err(no)?;
    let codec = job.stream.as_ref().map(|s| s.codec).ok_or_else(|| no("the camera is not streaming".into()))?;
    let made = tokio::task::spawn_blocking(move || mp4(&job.frames, codec, &job.recipe))
        .await
        .map_err(|e| no(e.to_string()))?
        .map_err(|e| no(e.to_string()))?;
    info!(camera = %event.camera, event = event_id, bytes = made.bytes.len(), "clip sent on request: {:.1} s", made.duration_s);
    board.send(Message::passing(board.topics.clip(event_id), made.bytes));
    Ok(())
}

fn receive_notice(board: &Switchboard, notices: &NoticeDesk, n: &Notice) {
    let Some(stored) = notices.with(|b| b.receive(n, SystemTime::now())) else {
        debug!(notice = %n.id, "notice already received");
        return;
    };
    info!(notice = %n.id, level = n.level.as_str(), expires_at = %stored.expires_at, text = ?n.text, "notice received");
    send_receipt(board, &stored);
    notices.wake.notify_one();
}

fn send_receipt(board: &Switchboard, n: &StoredNotice) {
    if let Ok(json) = serde_json::to_vec(&n.receipt(&board.topics.site)) {
        board.send(Message::retained(board.topics.notice_receipt(&n.notice_id), json));
    }
}

/// Plays each new notice once (when a player is configured), answers its receipt again
/// with how the play went, and takes the receipts of expired notices down.
async fn play_notices(board: Arc<Switchboard>, notices: Arc<NoticeDesk>, stop: CancellationToken) {
    let current = notices.with(|b| b.current(SystemTime::now()));
    for n in &current {
        send_receipt(&board, n);
    }
    let mut receipts: HashSet<String> = current.into_iter().map(|n| n.notice_id).collect();
    let player = notices.config.player();
    loop {
        if let Some(player) = &player {
            while let Some(n) = notices.with(|b| b.start_next(SystemTime::now())) {
                let played = tokio::select! {
                    r = play_one(player, &notices, &n) => r,
                    _ = stop.cancelled() => return,
                };
                if let Some(done) = notices.with(|b| b.finished(&n.notice_id, played)) {
                    send_receipt(&board, &done);
                }
            }
        }
        let now = SystemTime::now();
        let current: HashSet<String> = notices.with(|b| b.current(now)).into_iter().map(|n| n.notice_id).collect();
        for gone in receipts.iter().filter(|id| !current.contains(*id)) {
            debug!(notice = %gone, "notice expired: its receipt is taken down");
            board.send(Message::retained(board.topics.notice_receipt(gone), Vec::new()));
        }
        receipts = current;
        tokio::select! {
            _ = notices.wake.notified() => {}
            _ = tokio::time::sleep(EXPIRY_TICK) => {}
            _ = stop.cancelled() => return,
        }
    }
}

async fn play_one(player: &Player, notices: &NoticeDesk, n: &StoredNotice) -> Result<SystemTime, String> {
    info!(notice = %n.notice_id, level = n.level.as_str(), "playing notice");
    let (player, n2, cfg, scratch) = (player.clone(), n.clone(), notices.config.clone(), notices.scratch.clone());
    let limit = Duration::from_secs(cfg.timeout_s);
    let played = tokio::task::spawn_blocking(move || player::play(&player, &n2, cfg.repeat, limit, &scratch))
        .await
        .unwrap_or_else(|e| Err(format!("the player failed: {e}")));
    match &played {
        Ok(()) => info!(notice = %n.notice_id, "notice played"),
        Err(e) => warn!(notice = %n.notice_id, "notice not played: {e}"),
    }
    played.map(|()| SystemTime::now())
}
