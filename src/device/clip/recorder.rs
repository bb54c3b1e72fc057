//! One camera's clips in the making: the ring, and a recording per open event of a
//! kind that gets a clip, holding the frames from a keyframe `pre_s` before its start.
//!
//! Promises: an event's `end` is held until its clip is complete (`post_s` after the
//! end, or sooner when the camera stops sending), then handed on with the clip's
//! frames as a [`Job`]; a clip that reaches `max_s` is handed on at once with an
//! `update` of its event, and the event's `end` later passes untouched. Every message
//! routed in comes out exactly once, with or without a clip: none is lost or doubled.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::mux::Recipe;
use super::ring::Ring;
use crate::contract::{EventMessage, EventType, timestamp};
use crate::device::analysis::Polygon;
use crate::device::config::{CameraConfig, ClipsConfig};
use crate::device::ingest::{self, EncodedFrame, StreamInfo};
use crate::device::publish::Outgoing;

/// How long after a clip's planned end a camera that sends nothing more is waited for.
const GRACE: Duration = Duration::from_secs(3);
/// A clip is cut shorter rather than grow past this (the publisher's packet limit is 32 MiB).
const MAX_CLIP_BYTES: u64 = 24 << 20;

/// A clip to make and the message that names it; no frames: the message goes alone.
pub struct Job {
    pub camera: String,
    pub frames: Vec<Arc<EncodedFrame>>,
    pub stream: Option<StreamInfo>,
    pub recipe: Recipe,
    pub message: Outgoing,
}

struct Recording {
    /// The event's latest message (for the `update` of a clip cut at `max_s`).
    message: EventMessage,
    frames: Vec<Arc<EncodedFrame>>,
    /// `post_s` after the event's end, once it ended.
    until: Option<SystemTime>,
    end: Option<Outgoing>,
}

/// What the camera's clip ring holds, for health.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct RingState {
    pub bytes: u64,
    pub seconds: f64,
    pub cuts: u64,
}

pub struct CameraClips {
    camera: String,
    settings: ClipsConfig,
    masks: Vec<Polygon>,
    analysis_width: u32,
    stream: Option<StreamInfo>,
    ring: Ring,
    recordings: Vec<Recording>,
    jobs: Vec<Job>,
    /// Events whose job was taken but not yet stored, and messages of theirs that
    /// came meanwhile: an `end` after a clip cut at `max_s` must not overtake its `update`.
    in_flight: Vec<String>,
    held: Vec<Outgoing>,
}

impl CameraClips {
    pub fn new(cam: &CameraConfig) -> CameraClips {
        let settings = cam.clips.clone();
        let want = Duration::from_secs_f64(settings.pre_s);
        CameraClips {
            camera: cam.id.clone(),
            ring: Ring::new(
                if settings.enabled { settings.ring_bytes } else { 0 },
                Duration::from_secs_f64(settings.ring_s.max(settings.pre_s)),
                want,
            ),
            masks: cam.privacy_masks.iter().map(|m| Polygon(m.points.clone())).collect(),
            analysis_width: cam.analysis_width,
            settings,
            stream: None,
            recordings: Vec::new(),
            jobs: Vec::new(),
            in_flight: Vec::new(),
            held: Vec::new(),
        }
    }

    /// A session started: clips never span two sessions (the stream may differ).
    pub fn connected(&mut self, stream: StreamInfo) {
        self.disconnected();
        self.stream = Some(stream);
    }

    /// The session ended: every recording is finished with what it has.
    pub fn disconnected(&mut self) {
        self.finish_where(SystemTime::now(), |_| true);
        self.ring.clear();
        self.stream = None;
    }

    /// The newest access unit of the session.
    pub fn frame(&mut self, frame: EncodedFrame) {
        if !self.settings.enabled {
            return;
        }
        let f = Arc::new(frame);
        self.ring.push(f.clone());
        for r in &mut self.recordings {
            // A recording that found the ring empty starts at the next keyframe.
            if !r.frames.is_empty() || f.keyframe {
                r.frames.push(f.clone());
            }
        }
        self.check(f.received_at);
    }

    /// Takes the pipeline's messages: starts recordings, holds the `end`s of those
    /// still recording, passes the rest on.
    pub fn route(&mut self, out: Vec<Outgoing>) -> Vec<Outgoing> {
        let mut pass = Vec::with_capacity(out.len());
        for ev in out {
            let m = &ev.message;
            let at = self.recordings.iter().position(|r| r.message.event_id == m.event_id);
            match (m.event_type, at) {
                (EventType::New, None) if self.settings.wants(&m.kind) && self.stream.is_some() => {
                    self.start(m);
                    pass.push(ev);
                }
                (EventType::Update, Some(i)) => {
                    self.recordings[i].message = m.clone();
                    pass.push(ev);
                }
                (EventType::End, Some(i)) => {
                    let ended = m.ended_at.as_deref().and_then(parse_time).unwrap_or_else(SystemTime::now);
                    let r = &mut self.recordings[i];
                    r.until = Some(ended + Duration::from_secs_f64(self.settings.post_s));
                    r.end = Some(ev);
                }
                _ if self.waits(&m.event_id) => self.held.push(ev),
                _ => pass.push(ev),
            }
        }
        if let Some(newest) = self.recordings.iter().filter_map(|r| r.frames.last()).map(|f| f.received_at).max() {
            self.check(newest);
        }
        pass
    }

    fn start(&mut self, m: &EventMessage) {
        let started = parse_time(&m.started_at).unwrap_or_else(SystemTime::now);
        let from = started.checked_sub(Duration::from_secs_f64(self.settings.pre_s)).unwrap_or(started);
        let frames = self.ring.since_keyframe_before(from);
        self.recordings.push(Recording { message: m.clone(), frames, until: None, end: None });
    }

    /// Finishes the recordings that are complete as of a frame that arrived at `now`:
    /// past their end's `post_s`, or `max_s` long.
    fn check(&mut self, now: SystemTime) {
        let max = Duration::from_secs_f64(self.settings.max_s);
        self.finish_where(now, |r| r.until.is_some_and(|u| now > u) || length(&r.frames) >= max);
    }

    /// Finishes the recordings whose camera went quiet after their planned end.
    pub fn tick(&mut self, now: SystemTime) {
        self.finish_where(now, |r| r.until.is_some_and(|u| now > u + GRACE));
    }

    /// Finishes every recording now (the daemon stops).
    pub fn flush(&mut self) -> Vec<Job> {
        self.finish_where(SystemTime::now(), |_| true);
        self.take()
    }

    fn finish_where(&mut self, now: SystemTime, done: impl Fn(&Recording) -> bool) {
        let (done, going): (Vec<Recording>, Vec<Recording>) =
            std::mem::take(&mut self.recordings).into_iter().partition(done);
        self.recordings = going;
        for r in done {
            self.finish(r, now);
        }
    }

    /// The jobs ready to make; each must be followed by [`stored`](Self::stored) once
    /// its message is in the outbox.
    pub fn take(&mut self) -> Vec<Job> {
        self.in_flight.extend(self.jobs.iter().map(|j| j.message.message.event_id.clone()));
        std::mem::take(&mut self.jobs)
    }

    /// Whether a message of `event_id` must wait for its clip's job to be stored.
    fn waits(&self, event_id: &str) -> bool {
        self.in_flight.iter().any(|id| id == event_id)
            || self.jobs.iter().any(|j| j.message.message.event_id == event_id)
    }

    /// The job of `event_id` is stored: the messages of that event held meanwhile, in order.
    pub fn stored(&mut self, event_id: &str) -> Vec<Outgoing> {
        if let Some(i) = self.in_flight.iter().position(|id| id == event_id) {
            self.in_flight.remove(i);
        }
        if self.waits(event_id) {
            return Vec::new();
        }
        let (mine, rest) = std::mem::take(&mut self.held).into_iter().partition(|m| m.message.event_id == event_id);
        self.held = rest;
        mine
    }

    fn finish(&mut self, r: Recording, now: SystemTime) {
        let message = r.end.unwrap_or_else(|| {
            // Cut at max_s (or the session ended) while the event goes on: an update
            // carries the clip, and the event's end will pass on its own.
            let mut m = r.message;
            m.event_type = EventType::Update;
            m.at = timestamp(now);
            Outgoing { message: m, snapshot_jpeg: None, clip_mp4: None }
        });
        let frames = self.cut(r.frames);
        self.jobs.push(Job {
            camera: self.camera.clone(),
            frames,
            stream: self.stream.clone(),
            recipe: self.recipe(),
            message,
        });
    }

    /// `frames` up to `max_s` long and `MAX_CLIP_BYTES` big.
    fn cut(&self, mut frames: Vec<Arc<EncodedFrame>>) -> Vec<Arc<EncodedFrame>> {
        let max = Duration::from_secs_f64(self.settings.max_s);
        let Some(first) = frames.first().map(|f| f.received_at) else { return frames };
        let mut bytes = 0;
        let keep = frames
            .iter()
            .take_while(|f| {
                bytes += f.data.len() as u64;
                bytes <= MAX_CLIP_BYTES && f.received_at.duration_since(first).unwrap_or_default() <= max
            })
            .count();
        frames.truncate(keep);
        frames
    }

    /// The event `event_id` was never stored: its recording goes, and nothing names it.
    pub fn discard(&mut self, event_id: &str) {
        self.recordings.retain(|r| r.message.event_id != event_id);
    }

    /// As sent, or re-encoded with the masks when the camera has any.
    fn recipe(&self) -> Recipe {
        match (&self.stream, self.masks.is_empty()) {
            (Some(s), false) => {
                let (width, height) = ingest::analysis_size(s.width, s.height, self.analysis_width);
                Recipe::Masked { masks: self.masks.clone(), width, height, fps: self.settings.masked_fps }
            }
            _ => Recipe::AsSent,
        }
    }

    /// A clip of `event` from the ring, asked for by the desk: from a keyframe `pre_s`
    /// before its start to `post_s` after its end (or now), at most `max_s`.
    pub fn on_request(&self, event: &EventMessage) -> Result<Job, String> {
        if !self.settings.enabled {
            return Err("clips are turned off for this camera (cameras.clips.enabled)".into());
        }
        if self.recordings.iter().any(|r| r.message.event_id == event.event_id) {
            return Err("its clip is being made and is sent with the event's end".into());
        }
        let started = parse_time(&event.started_at).ok_or("the event's start time cannot be read")?;
        if self.stream.is_none() || !self.ring.covers(started) {
            return Err(format!(
                "the camera's video ring no longer reaches back to the event (it holds the last {:.0} s)",
                self.ring.span().as_secs_f64()
            ));
        }
        let from = started.checked_sub(Duration::from_secs_f64(self.settings.pre_s)).unwrap_or(started);
        let until =
            event.ended_at.as_deref().and_then(parse_time).map(|t| t + Duration::from_secs_f64(self.settings.post_s));
        let mut frames = self.ring.since_keyframe_before(from);
        if let Some(u) = until {
            frames.retain(|f| f.received_at <= u);
        }
        Ok(Job {
            camera: self.camera.clone(),
            frames: self.cut(frames),
            stream: self.stream.clone(),
            recipe: self.recipe(),
            message: Outgoing { message: event.clone(), snapshot_jpeg: None, clip_mp4: None },
        })
    }

    pub fn ring_state(&self) -> RingState {
        RingState { bytes: self.ring.bytes(), seconds: self.ring.span().as_secs_f64(), cuts: self.ring.cuts() }
    }
}

fn length(frames: &[Arc<EncodedFrame>]) -> Duration {
    match (frames.first(), frames.last()) {
        (Some(a), Some(b)) => b.received_at.duration_since(a.received_at).unwrap_or_default(),
        _ => Duration::ZERO,
    }
}

fn parse_time(s: &str) -> Option<SystemTime> {
    humantime::parse_rfc3339_weak(s).ok()
}
