//! Event messages as the MQTT contract (docs/mqtt.md) defines them: the object event
//! lifecycle built from the tracker's changes, and the rule event lifecycle built from
//! the rules' incidents.
//!
//! Promises: one `event_id` per confirmed track; `new` with a snapshot when it is
//! confirmed; `update` only when a clearly better snapshot is available or the zones it
//! is in changed, and at least `update_interval` after the last message; exactly one
//! `end` when the track is lost or the camera stops. Rule events: one `event_id` per
//! incident (rules/), `new` when it starts, `update` when its milestone changes (at
//! most every `update_interval`), one `end` when it no longer holds, dated at the last
//! time it held; rule snapshots show the zone outline and the boxes involved. `seq` is left at 0 here: the outbox assigns it when it stores
//! the message, so numbering and durability are one step.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use sha2::{Digest, Sha256};

use crate::contract::{EVENT_SCHEMA, EventMessage, EventType, SnapshotRef, hex, timestamp};
use crate::device::analysis::detect::Labels;
use crate::device::analysis::{Change, Incident, Track, Zone};
use crate::device::geometry::BBox;
use crate::device::ingest::Frame;
use crate::device::publish::snapshot::{Rendered, Renderer};

/// An event ready for the outbox: the message, the JPEG its `snapshot` names and the
/// MP4 its `clip` names.
#[derive(Debug, Clone)]
pub struct Outgoing {
    pub message: EventMessage,
    pub snapshot_jpeg: Option<Vec<u8>>,
    pub clip_mp4: Option<Vec<u8>>,
}

/// Settings shared by every camera's event builder.
#[derive(Debug, Clone)]
pub struct EventSettings {
    pub topic_root: String,
    pub site: String,
    pub labels: Arc<Labels>,
    pub jpeg_quality: u8,
    /// Least time between two messages of one event.
    pub update_interval: Duration,
    /// How much better (ratio of snapshot quality) a frame must be to be sent again.
    pub better_snapshot_ratio: f32,
}

struct OpenEvent {
    event_id: String,
    label: String,
    started_at: SystemTime,
    last_sent_at: SystemTime,
    /// When the object was last detected: an event lost from view ends then, not
    /// when the tracker gave up waiting for it.
    last_seen: SystemTime,
    best_score: f32,
    /// Quality of the snapshot last sent; a new one must beat it clearly.
    sent_quality: f32,
    snapshots: u32,
    snapshot: Option<SnapshotRef>,
    /// Zones named in the last message.
    zones: Vec<String>,
}

/// Turns one camera's track changes into event messages.
pub struct ObjectEvents {
    settings: EventSettings,
    camera: String,
    open: HashMap<u64, OpenEvent>,
    renderer: Renderer,
    zones: Vec<Zone>,
}

impl ObjectEvents {
    pub fn new(settings: EventSettings, camera: &str) -> ObjectEvents {
        let renderer = Renderer::plain(settings.jpeg_quality);
        ObjectEvents { settings, camera: camera.to_owned(), open: HashMap::new(), renderer, zones: Vec::new() }
    }

    /// Snapshots made by `renderer` (privacy masks, size cap), showing the outlines of
    /// the `zones` an object is in.
    pub fn with_snapshots(mut self, renderer: Renderer, zones: &[Zone]) -> ObjectEvents {
        self.renderer = renderer;
        self.zones = zones.to_vec();
        self
    }

    /// The messages this frame's track changes call for.
    pub fn on_frame(&mut self, changes: &[(Change, Track)], frame: &Frame) -> Vec<Outgoing> {
        self.on_frame_in_zones(changes, frame, &|_| Vec::new())
    }

    /// Like `on_frame`; `zones_of(track id)` names the zones each object is in now.
    pub fn on_frame_in_zones(
        &mut self,
        changes: &[(Change, Track)],
        frame: &Frame,
        zones_of: &dyn Fn(u64) -> Vec<String>,
    ) -> Vec<Outgoing> {
        let mut out = Vec::new();
        for (change, track) in changes {
            let zones = zones_of(track.id);
            match change {
                Change::Confirmed => out.push(self.open_event(track, frame, zones)),
                Change::Seen => out.extend(self.maybe_update(track, frame, zones)),
                Change::Lost => out.extend(self.end_event(track.id, &track.bbox, frame_size(frame), None)),
            }
        }
        out
    }

    /// Ends the events of `tracks`: at `at` (the camera is stopping), or, with `None`,
    /// when each object was last seen (the picture went away).
    pub fn end_all(&mut self, tracks: &[Track], size: (u32, u32), at: Option<SystemTime>) -> Vec<Outgoing> {
        tracks.iter().filter_map(|t| self.end_event(t.id, &t.bbox, size, at)).collect()
    }

    /// Forgets the event `event_id` without a message: its `new` could not be stored,
    /// so nothing later may refer to it.
    pub fn discard(&mut self, event_id: &str) {
        self.open.retain(|_, ev| ev.event_id != event_id);
    }

    fn open_event(&mut self, track: &Track, frame: &Frame, zones: Vec<String>) -> Outgoing {
        let label = self.settings.labels.name(track.class_id).to_owned();
        let mut ev = OpenEvent {
            event_id: ulid::Ulid::new().to_string(),
            label,
            started_at: frame.captured_at,
            last_sent_at: frame.captured_at,
            last_seen: frame.captured_at,
            best_score: track.score,
            sent_quality: quality(track, frame_size(frame)),
            snapshots: 0,
            snapshot: None,
            zones,
        };
        let jpeg = self.render_snapshot(&mut ev, &track.bbox, frame);
        let msg = self.message(&ev, EventType::New, &track.bbox, frame_size(frame), frame.captured_at);
        self.open.insert(track.id, ev);
        Outgoing { message: msg, snapshot_jpeg: Some(jpeg), clip_mp4: None }
    }

    fn maybe_update(&mut self, track: &Track, frame: &Frame, zones: Vec<String>) -> Option<Outgoing> {
        let size = frame_size(frame);
        let ratio = self.settings.better_snapshot_ratio;
        let interval = self.settings.update_interval;
        let mut ev = self.open.remove(&track.id)?;
        ev.best_score = ev.best_score.max(track.score);
        ev.last_seen = frame.captured_at;
        let q = quality(track, size);
        let due = frame.captured_at.duration_since(ev.last_sent_at).unwrap_or_default() >= interval;
        let better = q > ev.sent_quality * ratio;
        let moved_zones = zones != ev.zones;
        let out = if due && (better || moved_zones) {
            ev.last_sent_at = frame.captured_at;
            ev.zones = zones;
            // A zone change alone names the last picture again rather than sending one.
            let jpeg = better.then(|| {
                ev.sent_quality = q;
                self.render_snapshot(&mut ev, &track.bbox, frame)
            });
            let msg = self.message(&ev, EventType::Update, &track.bbox, size, frame.captured_at);
            Some(Outgoing { message: msg, snapshot_jpeg: jpeg, clip_mp4: None })
        } else {
            None
        };
        self.open.insert(track.id, ev);
        out
    }

    /// Ends the event of `track_id` at `at`, or when it was last seen.
    fn end_event(&mut self, track_id: u64, bbox: &BBox, size: (u32, u32), at: Option<SystemTime>) -> Option<Outgoing> {
        let ev = self.open.remove(&track_id)?;
        let at = at.unwrap_or(ev.last_seen);
        let mut msg = self.message(&ev, EventType::End, bbox, size, at);
        msg.ended_at = Some(timestamp(at));
        Some(Outgoing { message: msg, snapshot_jpeg: None, clip_mp4: None })
    }

    /// Draws the box on a copy of the frame, encodes it, and records it as the
    /// event's current snapshot under a topic unique to this image.
    fn render_snapshot(&self, ev: &mut OpenEvent, bbox: &BBox, frame: &Frame) -> Vec<u8> {
        let outlines: Vec<_> = self.zones.iter().filter(|z| ev.zones.contains(&z.name)).map(|z| &z.polygon).collect();
        let pic = self.renderer.render(frame.picture.to_rgb(), &[*bbox], &outlines);
        ev.snapshots += 1;
        ev.snapshot = Some(snapshot_ref(&self.settings, &ev.event_id, ev.snapshots, &pic));
        pic.jpeg
    }

    fn message(&self, ev: &OpenEvent, kind: EventType, bbox: &BBox, size: (u32, u32), at: SystemTime) -> EventMessage {
        EventMessage {
            schema: EVENT_SCHEMA.into(),
            seq: 0,
            event_id: ev.event_id.clone(),
            event_type: kind,
            kind: "object".into(),
            site: self.settings.site.clone(),
            camera: self.camera.clone(),
            label: ev.label.clone(),
            score: round(ev.best_score, 4),
            bbox: normalised(bbox, size),
            zones: ev.zones.clone(),
            started_at: timestamp(ev.started_at),
            at: timestamp(at),
            ended_at: None,
            snapshot: ev.snapshot.clone(),
            detail: None,
            clip: None,
        }
    }
}

fn snapshot_ref(settings: &EventSettings, event_id: &str, n: u32, pic: &Rendered) -> SnapshotRef {
    SnapshotRef {
        topic: format!("{}/{}/snapshots/{}-{}", settings.topic_root, settings.site, event_id, n),
        sha256: hex(&Sha256::digest(&pic.jpeg)),
        bytes: pic.jpeg.len(),
        width: pic.width,
        height: pic.height,
    }
}

struct OpenRule {
    message: EventMessage,
    last_sent_at: SystemTime,
    /// The last time the incident held: an `end` is dated then.
    last_held: SystemTime,
    milestone: u64,
    sent_milestone: u64,
    snapshots: u32,
}

/// Turns one camera's incidents into rule event messages.
pub struct RuleEvents {
    settings: EventSettings,
    camera: String,
    renderer: Renderer,
    zones: Vec<Zone>,
    open: HashMap<String, OpenRule>,
}

impl RuleEvents {
    pub fn new(settings: EventSettings, camera: &str, renderer: Renderer, zones: &[Zone]) -> RuleEvents {
        RuleEvents { settings, camera: camera.to_owned(), renderer, zones: zones.to_vec(), open: HashMap::new() }
    }

    /// The messages for the incidents that hold at `now`: `new` for those that started,
    /// `update` for a changed milestone, `end` for those no longer given. `frame` (the
    /// current picture, or the last one there was) makes the snapshots; its size gives
    /// the boxes' scale.
    pub fn on_frame(&mut self, incidents: Vec<Incident>, now: SystemTime, frame: Option<&Frame>) -> Vec<Outgoing> {
        let mut out = Vec::new();
        let keys: Vec<String> = incidents.iter().map(|i| i.key.clone()).collect();
        let mut gone: Vec<String> = self.open.keys().filter(|k| !keys.contains(k)).cloned().collect();
        gone.sort();
        for key in gone {
            out.extend(self.end(&key, None));
        }
        let size = frame.map_or((1, 1), frame_size);
        for inc in incidents {
            let bbox = union_box(&inc.boxes, size);
            if let Some(mut ev) = self.open.remove(&inc.key) {
                ev.last_held = now;
                ev.milestone = inc.milestone;
                ev.message.bbox = bbox;
                ev.message.score = ev.message.score.max(round(inc.score, 4));
                ev.message.detail = Some(inc.detail.clone());
                let due = now.duration_since(ev.last_sent_at).unwrap_or_default() >= self.settings.update_interval;
                if due && ev.milestone != ev.sent_milestone {
                    ev.sent_milestone = ev.milestone;
                    ev.last_sent_at = now;
                    let jpeg = frame.map(|f| self.snapshot(&mut ev, &inc, f));
                    out.push(self.send(&mut ev, EventType::Update, now, jpeg));
                }
                self.open.insert(inc.key.clone(), ev);
                continue;
            }
            let zone = inc.zone.and_then(|z| self.zones.get(z)).map(|z| z.name.clone());
            let mut ev = OpenRule {
                message: EventMessage {
                    schema: EVENT_SCHEMA.into(),
                    seq: 0,
                    event_id: ulid::Ulid::new().to_string(),
                    event_type: EventType::New,
                    kind: inc.kind.into(),
                    site: self.settings.site.clone(),
                    camera: self.camera.clone(),
                    label: inc.label.clone(),
                    score: round(inc.score, 4),
                    bbox,
                    zones: zone.into_iter().collect(),
                    started_at: timestamp(now),
                    at: timestamp(now),
                    ended_at: None,
                    snapshot: None,
                    detail: Some(inc.detail.clone()),
                    clip: None,
                },
                last_sent_at: now,
                last_held: now,
                milestone: inc.milestone,
                sent_milestone: inc.milestone,
                snapshots: 0,
            };
            let jpeg = frame.map(|f| self.snapshot(&mut ev, &inc, f));
            out.push(self.send(&mut ev, EventType::New, now, jpeg));
            self.open.insert(inc.key, ev);
        }
        out
    }

    /// Ends every open rule event (the camera stops): at `at`, or when each last held.
    pub fn end_all(&mut self, at: Option<SystemTime>) -> Vec<Outgoing> {
        let mut keys: Vec<String> = self.open.keys().cloned().collect();
        keys.sort();
        keys.iter().filter_map(|k| self.end(k, at)).collect()
    }

    /// Forgets the event `event_id` without a message (its `new` could not be stored).
    pub fn discard(&mut self, event_id: &str) {
        self.open.retain(|_, ev| ev.message.event_id != event_id);
    }

    fn end(&mut self, key: &str, at: Option<SystemTime>) -> Option<Outgoing> {
        let mut ev = self.open.remove(key)?;
        let at = at.unwrap_or(ev.last_held);
        let mut out = self.send(&mut ev, EventType::End, at, None);
        out.message.ended_at = Some(timestamp(at));
        Some(out)
    }

    fn snapshot(&self, ev: &mut OpenRule, inc: &Incident, frame: &Frame) -> Vec<u8> {
        let outline: Vec<_> = inc.zone.and_then(|z| self.zones.get(z)).map(|z| &z.polygon).into_iter().collect();
        let pic = self.renderer.render(frame.picture.to_rgb(), &inc.boxes, &outline);
        ev.snapshots += 1;
        ev.message.snapshot = Some(snapshot_ref(&self.settings, &ev.message.event_id, ev.snapshots, &pic));
        pic.jpeg
    }

    fn send(&self, ev: &mut OpenRule, kind: EventType, at: SystemTime, jpeg: Option<Vec<u8>>) -> Outgoing {
        ev.message.event_type = kind;
        ev.message.at = timestamp(at);
        Outgoing { message: ev.message.clone(), snapshot_jpeg: jpeg, clip_mp4: None }
    }
}

/// The union of `boxes`, normalised; the whole frame when there are none (camera rules).
fn union_box(boxes: &[BBox], size: (u32, u32)) -> [f32; 4] {
    let Some(first) = boxes.first() else { return [0.0, 0.0, 1.0, 1.0] };
    let u = boxes.iter().fold(*first, |a, b| BBox {
        x1: a.x1.min(b.x1),
        y1: a.y1.min(b.y1),
        x2: a.x2.max(b.x2),
        y2: a.y2.max(b.y2),
    });
    normalised(&u, size)
}

fn frame_size(frame: &Frame) -> (u32, u32) {
    frame.picture.dimensions()
}

/// How good a picture of the object this frame makes: confident, large, and not
/// cut by the frame's edge.
fn quality(track: &Track, (w, h): (u32, u32)) -> f32 {
    let b = &track.bbox;
    let margin = 2.0;
    let cut = b.x1 <= margin || b.y1 <= margin || b.x2 >= w as f32 - margin || b.y2 >= h as f32 - margin;
    let size = (b.area() / (w as f32 * h as f32).max(1.0)).sqrt();
    track.score * size * if cut { 0.5 } else { 1.0 }
}

fn normalised(b: &BBox, (w, h): (u32, u32)) -> [f32; 4] {
    let (w, h) = (w.max(1) as f32, h.max(1) as f32);
    [b.x1 / w, b.y1 / h, b.x2 / w, b.y2 / h].map(|v| round(v.clamp(0.0, 1.0), 3))
}

fn round(v: f32, decimals: i32) -> f32 {
    let f = 10f32.powi(decimals);
    (v * f).round() / f
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::analysis::detect::Detection;
    use crate::device::analysis::{Tracker, TrackerConfig};

    fn settings() -> EventSettings {
        EventSettings {
            topic_root: "gridwatch".into(),
            site: "grid-07".into(),
            labels: Arc::new(Labels::builtin()),
            jpeg_quality: 80,
            update_interval: Duration::from_secs(3),
            better_snapshot_ratio: 1.2,
        }
    }

    fn frame(t: f64) -> Frame {
        Frame {
            picture: crate::device::ingest::Yuv420::from_rgb(&image::RgbImage::from_pixel(
                320,
                240,
                image::Rgb([90, 90, 90]),
            )),
            captured_at: SystemTime::UNIX_EPOCH + Duration::from_secs_f64(1_790_000_000.0 + t),
            pts: Duration::from_secs_f64(t),
        }
    }

    /// A person growing as it walks towards the camera, for `n` frames at 5 fps, then gone.
    fn run(n: usize) -> Vec<EventMessage> {
        let mut tracker = Tracker::new(TrackerConfig::for_fps(5.0));
        let mut events = ObjectEvents::new(settings(), "east-gate");
        let mut out = Vec::new();
        for i in 0..n + 15 {
            let dets: Vec<Detection> = if i < n {
                let s = 1.0 + i as f32 * 0.03;
                vec![Detection {
                    class_id: 0,
                    score: 0.7,
                    bbox: BBox { x1: 100.0, y1: 60.0, x2: 100.0 + 30.0 * s, y2: 60.0 + 60.0 * s },
                }]
            } else {
                vec![]
            };
            let f = frame(i as f64 * 0.2);
            let changes = tracker.update(&dets);
            for o in events.on_frame(&changes, &f) {
                if let (Some(jpeg), Some(s)) = (&o.snapshot_jpeg, &o.message.snapshot) {
                    assert_eq!(s.bytes, jpeg.len());
                    assert_eq!(s.sha256, hex(&Sha256::digest(jpeg)));
                }
                out.push(o.message);
            }
        }
        out
    }

    #[test]
    fn lifecycle_is_new_then_sparse_updates_then_one_end() {
        let msgs = run(50); // 10 s in view
        let types: Vec<EventType> = msgs.iter().map(|m| m.event_type).collect();
        assert_eq!(types.first(), Some(&EventType::New));
        assert_eq!(types.last(), Some(&EventType::End));
        assert_eq!(types.iter().filter(|t| **t == EventType::End).count(), 1);
        let updates = types.iter().filter(|t| **t == EventType::Update).count();
        assert!((1..=3).contains(&updates), "growing object: a few updates, not one per frame: {types:?}");
        assert!(msgs.iter().all(|m| m.event_id == msgs[0].event_id));
        let end = msgs.last().unwrap();
        assert_eq!(end.ended_at.as_deref(), Some(end.at.as_str()));
        assert_eq!(end.at, timestamp(frame(49.0 * 0.2).captured_at), "ends when last seen, not when given up");
        assert!(end.snapshot.is_some(), "end names the event's last snapshot");
        let topics: Vec<_> =
            msgs.iter().filter(|m| m.event_type != EventType::End).map(|m| m.snapshot.clone().unwrap().topic).collect();
        let mut uniq = topics.clone();
        uniq.dedup();
        assert_eq!(uniq.len(), topics.len(), "a topic per image: {topics:?}");
        assert!(topics[0].starts_with("gridwatch/grid-07/snapshots/"));
    }

    #[test]
    fn message_json_follows_the_contract() {
        let msgs = run(5);
        let v = serde_json::to_value(&msgs[0]).unwrap();
        assert_eq!(v["schema"], "gridwatch.event/1");
        assert_eq!(v["type"], "new");
        assert_eq!(v["kind"], "object");
        assert_eq!(v["label"], "person");
        assert_eq!(v["camera"], "east-gate");
        assert!(v["ended_at"].is_null());
        let b: Vec<f64> = serde_json::from_value(v["box"].clone()).unwrap();
        assert_eq!(b.len(), 4);
        assert!(b.iter().all(|x| (0.0..=1.0).contains(x)) && b[0] < b[2] && b[1] < b[3], "{b:?}");
        let at = v["at"].as_str().unwrap();
        assert_eq!(at.len(), "2026-11-28T08:15:02.120Z".len(), "{at}");
        assert!(at.ends_with('Z'));
        assert_eq!(v["snapshot"]["width"], 320);
    }

    fn incident(key: &str, milestone: u64) -> Incident {
        Incident {
            key: key.into(),
            kind: "crowd",
            zone: Some(0),
            label: "person".into(),
            score: 0.8,
            boxes: vec![
                BBox { x1: 10.0, y1: 10.0, x2: 50.0, y2: 100.0 },
                BBox { x1: 100.0, y1: 20.0, x2: 140.0, y2: 120.0 },
            ],
            detail: serde_json::json!({ "count": milestone, "peak": milestone }),
            milestone,
        }
    }

    #[test]
    fn rule_events_new_update_on_milestone_end_when_gone() {
        let zone = Zone {
            name: "square".into(),
            polygon: crate::device::analysis::Polygon(vec![[0.0, 0.0], [1.0, 0.0], [1.0, 1.0]]),
            inertia: 1,
        };
        let mut rules = RuleEvents::new(settings(), "east-gate", Renderer::plain(80), &[zone]);
        let mut msgs = Vec::new();
        for i in 0..50 {
            let f = frame(i as f64 * 0.2);
            // Held for frames 5..45; the peak rises at 10 and 12 (within the update interval) and 25.
            let m = match i {
                0..10 => 3,
                10..12 => 4,
                12..25 => 5,
                _ => 6,
            };
            let incs = if (5..45).contains(&i) { vec![incident("crowd/square", m)] } else { vec![] };
            msgs.extend(rules.on_frame(incs, f.captured_at, Some(&f)));
        }
        let types: Vec<EventType> = msgs.iter().map(|o| o.message.event_type).collect();
        assert_eq!(types, [EventType::New, EventType::Update, EventType::Update, EventType::End], "{msgs:?}");
        let new = &msgs[0].message;
        assert_eq!((new.kind.as_str(), new.zones.as_slice()), ("crowd", ["square".to_string()].as_slice()));
        assert_eq!(new.detail.as_ref().unwrap()["count"], 3);
        assert!(msgs[0].snapshot_jpeg.is_some() && new.snapshot.is_some());
        assert!(new.bbox[0] < 0.04 && new.bbox[2] > 0.43 && new.bbox[3] == 0.5, "union of the boxes: {:?}", new.bbox);
        assert_eq!(msgs[1].message.at, timestamp(frame(20.0 * 0.2).captured_at), "first update after the interval");
        assert_eq!(msgs[2].message.at, timestamp(frame(35.0 * 0.2).captured_at));
        let end = &msgs[3].message;
        assert_eq!(
            end.ended_at.as_deref(),
            Some(timestamp(frame(44.0 * 0.2).captured_at).as_str()),
            "ends when last held"
        );
        assert!(msgs.iter().all(|o| o.message.event_id == new.event_id));
        let v = serde_json::to_value(end).unwrap();
        assert_eq!(v["detail"]["peak"], 6);
    }

    #[test]
    fn json_schema_lists_exactly_the_fields_we_send() {
        let msg = serde_json::to_value(&run(5)[0]).unwrap();
        let schema = include_str!("../../../docs/schema/event.schema.json");
        crate::contract::assert_fields_match_schema(schema, &msg, "EventMessage");
    }
}
