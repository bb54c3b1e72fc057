//! What the running daemon shows its local tools (`status`, `snapshot`, metrics, the
//! watchdog): per camera its health counters and latest decoded picture, the outbox,
//! and the MQTT link. Read-only views onto state the pipeline keeps anyway.
//!
//! Promises: [`FrameSlot::keep`] costs the pipeline at most one picture copy a second;
//! nothing here blocks a pipeline stage for longer than one short lock.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize};

use crate::contract::HealthReport;
use crate::contract::timestamp;
use crate::device::clip::CameraClips;
use crate::device::command::{Applied, Switchboard};
use crate::device::ingest::Frame;
use crate::device::ops::health::{CameraHealth, HealthCounters};
use crate::device::publish::{MqttLink, Renderer, SharedOutbox, Takeovers};

/// A copy of the latest picture is taken at most this often; pictures the analysis
/// had no room for are kept for free.
const KEEP_EVERY: Duration = Duration::from_secs(1);

/// One camera's latest decoded picture, and how many it has decoded.
#[derive(Debug, Clone, Default)]
pub struct FrameSlot(Arc<Mutex<SlotInner>>);

#[derive(Debug, Default)]
struct SlotInner {
    frame: Option<Arc<Frame>>,
    kept_at: Option<Instant>,
    decoded: u64,
}

impl FrameSlot {
    fn with<R>(&self, f: impl FnOnce(&mut SlotInner) -> R) -> R {
        f(&mut self.0.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Counts a decoded picture on its way to analysis, keeping a copy when the last
    /// one is older than a second. Returns the picture to hand on.
    pub fn keep(&self, frame: Frame) -> Frame {
        self.with(|s| {
            s.decoded += 1;
            if s.kept_at.is_none_or(|t| t.elapsed() >= KEEP_EVERY) {
                s.frame = Some(Arc::new(frame.clone()));
                s.kept_at = Some(Instant::now());
            }
        });
        frame
    }

    /// Keeps a picture that analysis will not get (it was busy): no copy needed.
    pub fn keep_skipped(&self, frame: Frame) {
        self.with(|s| {
            s.frame = Some(Arc::new(frame));
            s.kept_at = Some(Instant::now());
        });
    }

    pub fn latest(&self) -> Option<Arc<Frame>> {
        self.with(|s| s.frame.clone())
    }

    pub fn decoded(&self) -> u64 {
        self.with(|s| s.decoded)
    }
}

/// One configured camera as the tools see it.
pub struct LiveCamera {
    pub id: String,
    pub name: String,
    pub enabled: bool,
    pub detect_fps: f64,
    /// Ingest drops a session without frames after this long (`cameras.stall_timeout_s`).
    pub stall_timeout: Duration,
    pub health: Arc<CameraHealth>,
    pub frames: FrameSlot,
    /// Makes `snapshot`'s picture the way event snapshots are made (privacy masks).
    pub renderer: Renderer,
    /// The camera's video ring and clips in the making (clips asked for by the desk).
    pub clips: Arc<std::sync::Mutex<CameraClips>>,
}

/// The running daemon, as the tools see it.
pub struct Live {
    pub site: String,
    pub started_at: SystemTime,
    pub started: Instant,
    pub model_name: String,
    pub model_sha256: String,
    pub broker: String,
    pub cameras: Vec<LiveCamera>,
    pub outbox: SharedOutbox,
    pub link: Arc<MqttLink>,
    /// Frame rates over the last few seconds, per camera (same order), and the
    /// watchdog's verdict; kept up to date by the watchdog task.
    pub rates: Mutex<Vec<Rates>>,
    pub watchdog_problem: Mutex<Option<String>>,
    /// Pause, resume, arm and disarm, for the control socket.
    pub switchboard: Arc<Switchboard>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Rates {
    pub fps_in: f32,
    pub fps_analyzed: f32,
}

/// `gridwatch status`'s answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Status {
    pub version: String,
    pub site: String,
    pub started_at: String,
    pub uptime_s: u64,
    pub model: ModelStatus,
    pub mqtt: MqttStatus,
    pub outbox: OutboxStatus,
    pub cameras: Vec<CameraStatus>,
    /// Why the watchdog stopped pinging systemd, if it did.
    pub watchdog_problem: Option<String>,
    /// What the desk (or `pause`, `rule`) switched off: paused cameras, disarmed rules.
    #[serde(default)]
    pub switches: Applied,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ModelStatus {
    pub name: String,
    pub sha256: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MqttStatus {
    pub broker: String,
    pub connected: bool,
    pub since: Option<String>,
    pub last_error: Option<String>,
    pub delivered: u64,
    /// Another client probably uses this client id (see `Takeovers`); gone once a
    /// connection lasts.
    #[serde(default)]
    pub warning: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct OutboxStatus {
    pub pending: u64,
    /// When the oldest event not yet acknowledged by the broker was stored.
    pub oldest_pending_at: Option<String>,
    pub oldest_pending_age_s: Option<f64>,
    /// Why the outbox cannot write, while it cannot, and since when.
    #[serde(default)]
    pub write_error: Option<String>,
    #[serde(default)]
    pub write_failing_since: Option<String>,
    /// Writes that failed since start.
    #[serde(default)]
    pub write_errors: u64,
    /// The broker has events the disk still lists as pending (kept in memory, so not
    /// sent again; written once writes work).
    #[serde(default)]
    pub acks_unrecorded: bool,
    /// `end`s waiting in memory for a write that works.
    #[serde(default)]
    pub ends_waiting: usize,
    /// Events that could not be stored since start (gaps in `seq`), all cameras.
    #[serde(default)]
    pub events_dropped: u64,
    /// Stored pictures that no longer matched their hash since start, all cameras.
    #[serde(default)]
    pub snapshots_damaged: u64,
    /// Where a damaged outbox was moved for recovery, while that file is there.
    #[serde(default)]
    pub damaged_file: Option<String>,
    /// Why the pending events could not be counted, if they could not.
    #[serde(default)]
    pub read_error: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CameraStatus {
    pub id: String,
    pub name: String,
    /// The same figures as the camera's published health.
    #[serde(flatten)]
    pub health: HealthReport,
}

impl Live {
    pub fn rates(&self) -> Vec<Rates> {
        self.rates.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn camera(&self, id: &str) -> Option<&LiveCamera> {
        self.cameras.iter().find(|c| c.id == id)
    }

    /// Pending events and when the oldest was stored (SQLite work, off the async
    /// workers), and what the outbox says of itself. A failed read is shown, not
    /// returned: `status` must work best when the outbox does not.
    pub async fn outbox_status(&self) -> anyhow::Result<OutboxStatus> {
        let counted =
            self.outbox.with_async(|o| Ok::<_, anyhow::Error>((o.pending_count()?, o.oldest_pending_at()?))).await;
        let h = self.outbox.health();
        let mut s = OutboxStatus {
            write_error: h.write_error.clone(),
            write_failing_since: h.failing_since.map(|(t, _)| timestamp(t)),
            write_errors: h.write_errors,
            acks_unrecorded: h.acks_unrecorded,
            ends_waiting: h.ends_waiting,
            events_dropped: h.events_dropped.values().sum(),
            snapshots_damaged: h.snapshots_damaged.values().sum(),
            damaged_file: h.damaged_file.as_ref().map(|p| p.display().to_string()),
            ..OutboxStatus::default()
        };
        match counted {
            Ok((pending, oldest)) => {
                s.pending = pending;
                s.oldest_pending_at = oldest.map(timestamp);
                s.oldest_pending_age_s = oldest.map(|t| {
                    let age = SystemTime::now().duration_since(t).unwrap_or_default().as_secs_f64();
                    (age * 10.0).round() / 10.0
                });
            }
            Err(e) => s.read_error = Some(format!("{e:#}")),
        }
        Ok(s)
    }

    pub async fn status(&self) -> anyhow::Result<Status> {
        let link = self.link.state();
        let connected_for = link.since.filter(|_| link.connected).and_then(|t| t.elapsed().ok());
        let rates = self.rates();
        // The outbox's counts as of now, not of the last health publish (up to 30 s ago).
        let outbox = self.outbox.health();
        for c in &self.cameras {
            c.health.set_outbox(&outbox);
        }
        let cameras = self
            .cameras
            .iter()
            .enumerate()
            .map(|(i, c)| camera_status(c, &c.health.counters(), rates.get(i).copied().unwrap_or_default()))
            .collect();
        Ok(Status {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            site: self.site.clone(),
            started_at: timestamp(self.started_at),
            uptime_s: self.started.elapsed().as_secs(),
            model: ModelStatus { name: self.model_name.clone(), sha256: self.model_sha256.clone() },
            mqtt: MqttStatus {
                broker: self.broker.clone(),
                connected: link.connected,
                since: link.since.map(timestamp),
                last_error: link.last_error,
                delivered: link.delivered_total,
                warning: link.warning.filter(|_| !connected_for.is_some_and(Takeovers::outlived)),
            },
            outbox: self.outbox_status().await?,
            cameras,
            watchdog_problem: self.watchdog_problem.lock().unwrap_or_else(|p| p.into_inner()).clone(),
            switches: self.switchboard.switches().applied(),
        })
    }
}

fn camera_status(c: &LiveCamera, h: &HealthCounters, r: Rates) -> CameraStatus {
    CameraStatus { id: c.id.clone(), name: c.name.clone(), health: h.report(&c.id, r.fps_in, r.fps_analyzed) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(v: u8) -> Frame {
        Frame {
            picture: crate::device::ingest::Yuv420::from_rgb(&image::RgbImage::from_pixel(4, 4, image::Rgb([v, v, v]))),
            captured_at: SystemTime::now(),
            pts: Duration::from_millis(u64::from(v)),
        }
    }

    #[test]
    fn the_slot_copies_at_most_once_a_second_and_keeps_skipped_pictures_free() {
        let slot = FrameSlot::default();
        assert!(slot.latest().is_none());
        let handed_on = slot.keep(frame(1));
        assert_eq!(handed_on.picture, frame(1).picture, "the picture goes on unchanged");
        // Within the second: counted, not copied.
        slot.keep(frame(2));
        assert_eq!((slot.decoded(), &slot.latest().unwrap().picture), (2, &frame(1).picture));
        // A picture analysis had no room for is the latest at once.
        slot.keep_skipped(frame(3));
        assert_eq!(slot.latest().unwrap().picture, frame(3).picture);
        assert_eq!(slot.decoded(), 2, "skipped pictures were counted by keep already");
    }
}
