//! One camera's analysis as a value: the motion gate, the detector's answer, filters,
//! tracker, zones, rules and the event builders, fed one decoded frame at a time.
//! Data flows one way: frame -> motion -> gate -> detector -> filters -> tracker ->
//! zones -> rules -> event messages, which the caller stores.
//!
//! Counting lines see the same tracks; their crossings and each zone's occupancy go
//! into the period's stats (`take_stats`), from the first picture on.
//!
//! Promises: no threads, no I/O but the detector the caller hands in, so a test can
//! drive it with recorded detections. Pictures that stop coming end the open events as
//! the tracker would have after that many frames without the object (`on_silence`);
//! `finish` ends every open event.

use std::time::{Duration, SystemTime};

use tracing::info;

use crate::contract::StatsMessage;
use crate::device::analysis::detect::{DetectError, Detection, Labels, yolox};
use crate::device::analysis::gate::{self, CropState, GateInput};
use crate::device::analysis::regions::{self, Crop, TurnedView};
use crate::device::analysis::{
    CameraRules, Crossing, Filters, Grey, Incident, Line, LineCounter, Motion, MotionDetector, RuleEngine,
    STOPPED_AFTER, StatsCollector, StatsLayout, TamperDetector, TamperSign, Track, TrackView, Tracker, TrackerConfig,
};
use crate::device::config::{AlertDirection, CameraConfig, RegionsMode, local_minute};
use crate::device::ingest::{Frame, Yuv420};
use crate::device::ops::stages::{Span, Stage};
use crate::device::publish::{EventSettings, ObjectEvents, Outgoing, Renderer, RuleEvents};

/// The model's answer for a picture and the crops of it asked for: detections (in the
/// picture's pixels) and the whole picture's inference time in ms.
pub type Detected = Result<(Vec<Detection>, f32), DetectError>;

/// What one frame cost the detector.
#[derive(Debug)]
pub enum DetectorUse {
    /// The gate kept the frame from the model.
    Gated,
    Ran {
        inference_ms: f32,
        crops: usize,
    },
    Failed(DetectError),
}

/// One frame's result: the detector's part, and the event messages to store.
#[derive(Debug)]
pub struct Analysed {
    pub detector: DetectorUse,
    pub events: Vec<Outgoing>,
}

pub struct CameraAnalysis {
    camera: String,
    filters: Filters,
    /// Labels whose confirmed tracks make object events (`cameras.track`).
    object_labels: Vec<usize>,
    min_score: f32,
    tracker: Tracker,
    engine: RuleEngine,
    camera_rules: CameraRules,
    motion: Option<MotionDetector>,
    tamper: Option<TamperDetector>,
    recheck: Duration,
    regions: RegionsMode,
    /// Region crops for the current picture size, planned again when it changes.
    crops: ((u32, u32), Vec<Crop>),
    /// Where the turned views look (zones with a person_down rule) at that size.
    turned: Option<TurnedView>,
    objects: ObjectEvents,
    rule_events: RuleEvents,
    loss_window: Duration,
    last: Option<Frame>,
    last_detect: Option<SystemTime>,
    /// (zone, rule) pairs the desk disarmed: their incidents are not acted on.
    disarmed: Vec<(String, String)>,
    lines: LineCounter,
    /// Crossings of the current frame, counted and alerted in `on_frame`.
    crossed: Vec<Crossing>,
    /// Crossings alerted so far: part of each `line_crossing` incident's key.
    alerts: u64,
    /// Labels whose zone occupancy the stats count (the camera's tracked labels).
    zone_classes: Vec<usize>,
    stats_layout: StatsLayout,
    stats_period: Duration,
    /// Started at the first picture.
    stats: Option<StatsCollector>,
}

impl CameraAnalysis {
    /// `renderer` draws this camera's snapshots (built once per camera, with its masks).
    pub fn new(cam: &CameraConfig, events: &EventSettings, min_score: f32, renderer: Renderer) -> CameraAnalysis {
        let labels: &Labels = &events.labels;
        let filters = Filters::new(cam, labels, min_score);
        let tracker_cfg = tracker_config(cam, labels, &filters);
        let loss_window = Duration::from_secs_f64(f64::from(tracker_cfg.max_misses) / cam.detect_fps);
        let engine = RuleEngine::new(cam, labels);
        let camera_rules = CameraRules::new(cam);
        let objects = ObjectEvents::new(events.clone(), &cam.id).with_snapshots(renderer.clone(), engine.zones());
        let rule_events = RuleEvents::new(events.clone(), &cam.id, renderer, engine.zones());
        let (lines, stats_layout) = lines_and_layout(cam, labels, &events.site);
        CameraAnalysis {
            camera: cam.id.clone(),
            object_labels: cam.track.iter().filter_map(|l| labels.id(l)).collect(),
            min_score: filters.detect_floor().min(min_score),
            filters,
            tracker: Tracker::new(tracker_cfg),
            motion: cam.motion.enabled.then(|| MotionDetector::new(&cam.motion)),
            tamper: camera_rules.watches_tamper().then(TamperDetector::new),
            engine,
            camera_rules,
            recheck: Duration::from_secs_f64(cam.motion.recheck_s),
            regions: cam.regions,
            crops: ((0, 0), Vec::new()),
            turned: None,
            objects,
            rule_events,
            loss_window,
            last: None,
            last_detect: None,
            disarmed: Vec::new(),
            lines,
            crossed: Vec::new(),
            alerts: 0,
            zone_classes: stats_layout.zone_labels.iter().map(|(c, _)| *c).collect(),
            stats_layout,
            stats_period: Duration::from_secs(cam.stats.period_s),
            stats: None,
        }
    }

    /// The score below which the detector need not report anything for this camera.
    pub fn min_score(&self) -> f32 {
        self.min_score
    }

    /// Analyses one frame; `detect` runs the model on the picture and the crops asked for.
    /// `detect` runs the model on the picture, on the crops asked for, and turned a
    /// quarter each way on the turned view's region when there is one.
    pub fn on_frame(
        &mut self,
        frame: Frame,
        detect: impl FnOnce(&Yuv420, &[yolox::Region], Option<TurnedView>) -> Detected,
    ) -> Analysed {
        let now = frame.captured_at;
        let size = frame.picture.dimensions();
        let (sign, moved) = self.motion_and_tamper(&frame.picture);
        self.plan_crops(size);
        let plan = self.gate(moved.as_ref(), now);
        let mut changes = Vec::new();
        let mut track_span = None;
        let detector = if plan.whole {
            match detect(&frame.picture, &plan.crops, self.turned) {
                Ok((detections, inference_ms)) => {
                    self.last_detect = Some(now);
                    track_span = Some(Span::start(Stage::Track));
                    changes = self.track(detections, moved.as_ref(), size, now);
                    DetectorUse::Ran { inference_ms, crops: plan.crops.len() }
                }
                // The frame is dropped: nothing is known of it.
                Err(e) => return Analysed { detector: DetectorUse::Failed(e), events: Vec::new() },
            }
        } else {
            DetectorUse::Gated
        };
        let track_span = track_span.unwrap_or_else(|| Span::start(Stage::Track));
        let views = track_views(&self.tracker);
        changes.retain(|(_, t)| self.object_labels.contains(&t.class_id));
        let mut incidents = self.engine.evaluate(now, &views);
        incidents.retain(|i| self.armed(i));
        incidents.extend(self.count(now, &views));
        incidents.extend(self.camera_rules.tamper(now, sign));
        drop(track_span);
        let mut events = Vec::new();
        if !changes.is_empty() {
            let engine = &self.engine;
            events = self.objects.on_frame_in_zones(&changes, &frame, &|id| engine.zones_of(id));
        }
        events.extend(self.rule_events.on_frame(incidents, now, Some(&frame)));
        self.last = Some(frame);
        Analysed { detector, events }
    }

    /// Counts this frame into the stats (its crossings and each zone's occupancy) and
    /// returns the `line_crossing` incidents its crossings make.
    fn count(&mut self, now: SystemTime, views: &[TrackView]) -> Vec<Incident> {
        let stats =
            self.stats.get_or_insert_with(|| StatsCollector::new(self.stats_layout.clone(), self.stats_period, now));
        stats.frame(&self.engine.occupancy(views, &self.zone_classes));
        let mut out = Vec::new();
        for c in std::mem::take(&mut self.crossed) {
            stats.crossed(&c);
            let line = &self.lines.lines()[c.line];
            let direction = if c.inward { "in" } else { "out" };
            info!(camera = %self.camera, line = %line.name, track = c.track, "crossed {direction}");
            let Some((want, schedule)) = &line.alert else { continue };
            let wanted = match want {
                AlertDirection::Any => true,
                AlertDirection::In => c.inward,
                AlertDirection::Out => !c.inward,
            };
            if wanted && schedule.is_none_or(|s| s.contains(local_minute(now))) {
                self.alerts += 1;
                out.push(Incident {
                    key: format!("line_crossing/{}/{}/{}", line.name, c.track, self.alerts),
                    kind: "line_crossing",
                    zone: None,
                    label: self.stats_layout.lines[c.line]
                        .1
                        .iter()
                        .find(|l| l.0 == c.class_id)
                        .map_or_else(String::new, |l| l.1.clone()),
                    score: c.score,
                    boxes: vec![c.bbox],
                    detail: serde_json::json!({ "line": line.name, "direction": direction }),
                    milestone: 0,
                });
            }
        }
        out
    }

    /// The stats of the period that ended by `now`, if one did (see `StatsCollector`).
    pub fn take_stats(&mut self, now: SystemTime) -> Option<StatsMessage> {
        self.stats.as_mut()?.due(now)
    }

    /// The stats of the period so far, closed at `now` (the camera stops).
    pub fn final_stats(&mut self, now: SystemTime) -> Option<StatsMessage> {
        self.stats.as_mut()?.finish(now)
    }

    /// No picture for `silent`: past the tracker's loss window the open object events end
    /// where they were last seen, zone incidents end, and the camera may be offline.
    pub fn on_silence(&mut self, silent: Duration) -> Vec<Outgoing> {
        if silent <= self.loss_window {
            return Vec::new();
        }
        let size = self.last_size();
        let gone = self.tracker.drain_confirmed();
        let mut out = self.objects.end_all(&gone, size, None);
        self.engine.observe(SystemTime::now(), &[], size);
        let last_at = self.last.as_ref().map(|f| f.captured_at);
        let offline = self.camera_rules.offline(silent, last_at).into_iter().collect();
        out.extend(self.rule_events.on_frame(offline, SystemTime::now(), self.last.as_ref()));
        out
    }

    /// Ends every open event, now: the camera stops.
    pub fn finish(mut self) -> Vec<Outgoing> {
        self.end_open()
    }

    /// Ends every open event now and forgets what is tracked (detection switched off).
    pub fn end_open(&mut self) -> Vec<Outgoing> {
        let open = self.tracker.drain_confirmed();
        let now = SystemTime::now();
        let size = self.last_size();
        let mut out = self.objects.end_all(&open, size, Some(now));
        out.extend(self.rule_events.end_all(Some(now)));
        self.engine.observe(now, &[], size);
        out
    }

    /// Detection is on again: the first picture goes to the model whatever moved.
    pub fn resume(&mut self) {
        self.last_detect = None;
    }

    /// The desk's disarmed (zone, rule) pairs, replacing the previous ones.
    pub fn set_disarmed(&mut self, disarmed: Vec<(String, String)>) {
        self.disarmed = disarmed;
    }

    fn armed(&self, i: &Incident) -> bool {
        let zone = i.zone.and_then(|z| self.engine.zones().get(z)).map(|z| z.name.as_str());
        !self.disarmed.iter().any(|(z, r)| Some(z.as_str()) == zone && r == i.kind)
    }

    /// Forgets an event whose `new` could not be stored, so nothing later refers to it.
    pub fn discard(&mut self, event_id: &str) {
        self.objects.discard(event_id);
        self.rule_events.discard(event_id);
    }

    fn last_size(&self) -> (u32, u32) {
        self.last.as_ref().map_or((0, 0), |f| f.picture.dimensions())
    }

    fn motion_and_tamper(&mut self, pic: &Yuv420) -> (Option<TamperSign>, Option<Motion>) {
        let _span = Span::start(Stage::Motion);
        let grey = (self.motion.is_some() || self.tamper.is_some()).then(|| Grey::from_picture(pic));
        let sign = self.tamper.as_mut().zip(grey.as_ref()).and_then(|(t, g)| t.observe(g));
        (sign, self.motion.as_mut().zip(grey.as_ref()).map(|(m, g)| m.observe(g)))
    }

    fn plan_crops(&mut self, size: (u32, u32)) {
        if self.crops.0 == size {
            return;
        }
        self.turned = self.engine.down_watch().and_then(|(zones, person)| {
            regions::turned_region(&zones, size).map(|region| TurnedView { region, person })
        });
        if let Some(TurnedView { region: r, .. }) = self.turned {
            info!(camera = %self.camera, "person_down: persons lying across the picture are looked for turned a quarter \
                   each way, in {}x{} at ({}, {}) of the {}x{} picture", r.width, r.height, r.left, r.top, size.0, size.1);
        }
        self.crops = (size, Vec::new());
        if self.regions != RegionsMode::Auto {
            return;
        }
        let shapes: Vec<_> = self.engine.zones().iter().map(|z| z.polygon.clone()).collect();
        self.crops = (size, regions::plan(&shapes, size, yolox::INPUT_SIZE as u32));
        for c in &self.crops.1 {
            let (r, zones) =
                (c.region, c.zones.iter().map(|&z| self.engine.zones()[z].name.as_str()).collect::<Vec<_>>());
            info!(camera = %self.camera, zones = %zones.join(","), "region crop {}x{} at ({}, {}) of the {}x{} picture",
                  r.width, r.height, r.left, r.top, size.0, size.1);
        }
    }

    fn gate(&self, moved: Option<&Motion>, now: SystemTime) -> gate::Plan {
        let recheck_due = self.last_detect.is_none_or(|t| now.duration_since(t).unwrap_or_default() >= self.recheck);
        // Missing, or not yet stopped: where it is now is not known without the model.
        let settling = |t: &Track| t.misses > 0 || self.engine.still_for(t.id, now) < STOPPED_AFTER;
        let tracks = self.tracker.tracks();
        let unsettled = tracks.iter().any(|t| t.confirmed && settling(t));
        let crops: Vec<CropState> = self
            .crops
            .1
            .iter()
            .map(|c| CropState {
                region: c.region,
                unsettled: tracks
                    .iter()
                    .any(|t| regions::holds(&c.region, &t.bbox) && (settling(t) || !(t.confirmed || t.established))),
            })
            .collect();
        gate::plan(GateInput { motion: moved, recheck_due, unsettled }, &crops)
    }

    fn track(
        &mut self,
        detections: Vec<Detection>,
        moved: Option<&Motion>,
        size: (u32, u32),
        now: SystemTime,
    ) -> Vec<(crate::device::analysis::Change, Track)> {
        let detections: Vec<_> =
            self.filters.fuse_kinds(detections).into_iter().filter(|d| self.filters.keep(d, size)).collect();
        let in_motion: Vec<bool> = detections.iter().map(|d| moved.is_none_or(|m| m.moving_in(&d.bbox))).collect();
        let changes = self.tracker.update_with_motion(&detections, &in_motion);
        let views = track_views(&self.tracker);
        self.engine.observe(now, &views, size);
        self.crossed = self.lines.observe(&views, size);
        changes
    }
}

/// The camera's counting lines, and what its stats list: every line with its labels,
/// every zone with every label the camera tracks.
fn lines_and_layout(cam: &CameraConfig, labels: &Labels, site: &str) -> (LineCounter, StatsLayout) {
    let named = |names: &[String]| -> Vec<(usize, String)> {
        names.iter().filter_map(|n| labels.id(n).map(|id| (id, n.clone()))).collect()
    };
    let lines = cam.lines.iter().map(|l| Line::new(l, named(&l.labels).into_iter().map(|(id, _)| id).collect()));
    let layout = StatsLayout {
        site: site.to_owned(),
        camera: cam.id.clone(),
        lines: cam.lines.iter().map(|l| (l.name.clone(), named(&l.labels))).collect(),
        zones: cam.zones.iter().map(|z| z.name.clone()).collect(),
        zone_labels: named(&cam.tracked_labels()),
    };
    (LineCounter::new(lines.collect()), layout)
}

fn tracker_config(cam: &CameraConfig, labels: &Labels, filters: &Filters) -> TrackerConfig {
    let mut cfg = TrackerConfig::for_fps(cam.detect_fps);
    cfg.one_kind = filters.one_kind().to_vec();
    if cam.motion.enabled {
        cfg.min_travel = 0.5;
    }
    cfg.confirm_score =
        cam.tracked_labels().iter().filter_map(|l| labels.id(l)).map(|c| (c, filters.confirm_score(c))).collect();
    cfg
}

/// The tracker's objects as the rules see them.
fn track_views(tracker: &Tracker) -> Vec<TrackView> {
    tracker
        .tracks()
        .iter()
        .map(|t| TrackView {
            id: t.id,
            class_id: t.class_id,
            bbox: t.bbox,
            score: t.score,
            confirmed: t.confirmed,
            established: t.confirmed || t.established || tracker.is_established(t),
            missed: t.misses > 0,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use image::{Rgb, RgbImage};

    use super::*;
    use crate::contract::EventType;
    use crate::device::config::Config;
    use crate::device::geometry::BBox;

    const FPS: f64 = 5.0;
    const PERSON: usize = 0;

    /// A camera of 320x240 pictures whose right half is a zone with an intrusion rule.
    fn analysis(motion: bool) -> CameraAnalysis {
        let text = format!(
            "site = \"s\"\n[mqtt]\nhost = \"h\"\n[storage]\ndir = \"/tmp\"\n[[cameras]]\nid = \"yard-cam\"\n\
             url = \"rtsp://h/x\"\ndetect_fps = {FPS}\nregions = \"off\"\n[cameras.motion]\nenabled = {motion}\n\
             [[cameras.zones]]\nname = \"yard\"\npoints = [[0.5, 0.0], [1.0, 0.0], [1.0, 1.0], [0.5, 1.0]]\n\
             [cameras.zones.intrusion]\n"
        );
        let cfg = Config::parse(&text, "t.toml".as_ref(), "/".as_ref()).unwrap();
        let events = EventSettings {
            topic_root: "gridwatch".into(),
            site: "s".into(),
            labels: Arc::new(cfg.labels().unwrap()),
            jpeg_quality: 70,
            update_interval: Duration::from_secs(5),
            better_snapshot_ratio: 1.25,
        };
        CameraAnalysis::new(&cfg.cameras[0], &events, 0.5, Renderer::new(&cfg.cameras[0]))
    }

    fn frame(i: usize) -> Frame {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_790_000_000);
        let at = Duration::from_secs_f64(i as f64 / FPS);
        let picture = Yuv420::from_rgb(&RgbImage::from_pixel(320, 240, Rgb([90, 90, 90])));
        Frame { picture, captured_at: t0 + at, pts: at }
    }

    fn person_at(x: f32) -> Detection {
        Detection { class_id: PERSON, score: 0.85, bbox: BBox { x1: x, y1: 80.0, x2: x + 30.0, y2: 200.0 } }
    }

    /// Feeds `frames` frames with the recorded detections of each, then finishes;
    /// returns every event's (kind, type).
    fn run(
        a: &mut Option<CameraAnalysis>,
        frames: usize,
        seen: impl Fn(usize) -> Vec<Detection>,
    ) -> Vec<(String, EventType)> {
        let mut out = Vec::new();
        for i in 0..frames {
            let done = a.as_mut().unwrap().on_frame(frame(i), |_, _, _| Ok((seen(i), 20.0)));
            out.extend(done.events);
        }
        out.extend(a.take().unwrap().finish());
        out.into_iter().map(|o| (o.message.kind, o.message.event_type)).collect()
    }

    #[test]
    fn a_person_walking_through_the_zone_makes_one_intrusion() {
        // 6 s across the picture, left to right, 10 px a frame.
        let events = run(&mut Some(analysis(false)), 30, |i| vec![person_at(5.0 + 10.0 * i as f32)]);
        let of = |kind: &str, t: EventType| events.iter().filter(|(k, ty)| k == kind && *ty == t).count();
        assert_eq!(of("intrusion", EventType::New), 1, "{events:?}");
        assert_eq!(of("intrusion", EventType::End), 1, "{events:?}");
        assert_eq!(of("object", EventType::New), 1, "{events:?}");
        assert_eq!(of("object", EventType::End), 1, "{events:?}");
    }

    #[test]
    fn a_flicker_makes_nothing() {
        let events = run(&mut Some(analysis(false)), 20, |i| if i == 7 { vec![person_at(250.0)] } else { vec![] });
        assert!(events.is_empty(), "{events:?}");
    }

    #[test]
    fn a_still_scene_asks_the_detector_only_at_the_periodic_recheck() {
        let mut a = analysis(true);
        let mut ran = Vec::new();
        for i in 0..25 {
            let done = a.on_frame(frame(i), |_, _, _| Ok((vec![], 20.0)));
            match done.detector {
                DetectorUse::Ran { .. } => ran.push(i),
                DetectorUse::Gated => {}
                DetectorUse::Failed(e) => panic!("{e}"),
            }
        }
        // The first picture (the background is new), then every recheck_s (1.5 s = 7.5 frames).
        assert_eq!(ran, vec![0, 8, 16, 24]);
    }

    #[test]
    fn a_failed_detection_drops_the_frame_and_silence_ends_the_events() {
        let mut a = analysis(false);
        let mut events = Vec::new();
        for i in 0..10 {
            events.extend(a.on_frame(frame(i), |_, _, _| Ok((vec![person_at(250.0)], 20.0))).events);
        }
        let failed =
            a.on_frame(frame(10), |_, _, _| Err(DetectError::Inference { model: "m".into(), reason: "test".into() }));
        assert!(matches!(failed.detector, DetectorUse::Failed(_)) && failed.events.is_empty());
        assert!(a.on_silence(Duration::from_millis(500)).is_empty(), "within the loss window");
        events.extend(a.on_silence(Duration::from_secs(5)));
        let ends = events.iter().filter(|o| o.message.event_type == EventType::End).count();
        let news = events.iter().filter(|o| o.message.event_type == EventType::New).count();
        assert_eq!((news, ends), (2, 2), "object and intrusion both begin and end");
    }
}
