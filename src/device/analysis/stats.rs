//! One camera's statistics over a period: crossings per line, label and direction, and
//! per zone and label the most objects at once and their average (contract 1.1,
//! "Statistics").
//!
//! Promises: periods are aligned to the wall clock (every `period` from the Unix epoch,
//! so 300 s periods end at :00, :05, ...), the first one starting when the camera did;
//! `due` hands out each period once, when it is over, with every configured line, label
//! and zone in it, zeros included (a line nobody crossed says 0, not nothing); periods
//! skipped by a clock jump are not made up. `frames` says how many analysed frames the
//! zone figures rest on. Pure bookkeeping: the caller says what time it is.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::contract::{LineCount, STATS_SCHEMA, StatsMessage, ZoneCount, timestamp};
use crate::device::analysis::lines::Crossing;

/// What is counted, by name: lines with their labels, zones, and the labels whose
/// zone occupancy is counted (class id, name).
#[derive(Debug, Clone)]
pub struct StatsLayout {
    pub site: String,
    pub camera: String,
    pub lines: Vec<(String, Vec<(usize, String)>)>,
    pub zones: Vec<String>,
    pub zone_labels: Vec<(usize, String)>,
}

/// The period being counted.
pub struct StatsCollector {
    layout: StatsLayout,
    period: Duration,
    start: SystemTime,
    end: SystemTime,
    frames: u64,
    /// [line][label index] crossings.
    lines: Vec<Vec<LineCount>>,
    /// [zone][label index] (peak, sum over frames).
    zones: Vec<Vec<(u64, u64)>>,
}

impl StatsCollector {
    pub fn new(layout: StatsLayout, period: Duration, now: SystemTime) -> StatsCollector {
        let mut c = StatsCollector {
            period: period.max(Duration::from_secs(1)),
            start: now,
            end: now,
            frames: 0,
            lines: Vec::new(),
            zones: Vec::new(),
            layout,
        };
        c.begin(now);
        c
    }

    /// Starts a period at `at`, ending at the next boundary after it.
    fn begin(&mut self, at: SystemTime) {
        let p = self.period.as_secs_f64();
        let secs = at.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs_f64();
        let end = ((secs / p).floor() + 1.0) * p;
        self.start = at;
        self.end = UNIX_EPOCH + Duration::from_secs_f64(end);
        self.frames = 0;
        self.lines = self.layout.lines.iter().map(|(_, l)| vec![LineCount::default(); l.len()]).collect();
        let labels = self.layout.zone_labels.len();
        self.zones = self.layout.zones.iter().map(|_| vec![(0, 0); labels]).collect();
    }

    /// Counts a crossing (of a line and label this layout has; others are ignored).
    pub fn crossed(&mut self, c: &Crossing) {
        let Some((_, labels)) = self.layout.lines.get(c.line) else { return };
        let Some(li) = labels.iter().position(|(id, _)| *id == c.class_id) else { return };
        let n = &mut self.lines[c.line][li];
        if c.inward {
            n.inward += 1;
        } else {
            n.outward += 1;
        }
    }

    /// Counts one analysed frame's occupancy: `counts[zone]` lists (class id, objects).
    pub fn frame(&mut self, counts: &[Vec<(usize, u64)>]) {
        self.frames += 1;
        for (zi, zone) in counts.iter().enumerate().take(self.zones.len()) {
            for (class, n) in zone {
                if let Some(li) = self.layout.zone_labels.iter().position(|(id, _)| id == class) {
                    let z = &mut self.zones[zi][li];
                    z.0 = z.0.max(*n);
                    z.1 += n;
                }
            }
        }
    }

    /// The period that ended by `now`, if one did; the next one starts.
    pub fn due(&mut self, now: SystemTime) -> Option<StatsMessage> {
        if now < self.end {
            return None;
        }
        let msg = self.message(self.end);
        // After a clock jump the next period starts now, not at the missed boundaries.
        let next = if now.duration_since(self.end).unwrap_or_default() >= self.period { now } else { self.end };
        self.begin(next);
        Some(msg)
    }

    /// The period so far, ended at `now` (the camera stops).
    pub fn finish(&mut self, now: SystemTime) -> Option<StatsMessage> {
        (now > self.start).then(|| self.message(now))
    }

    fn message(&self, end: SystemTime) -> StatsMessage {
        let l = &self.layout;
        let lines = l
            .lines
            .iter()
            .zip(&self.lines)
            .map(|((name, labels), counts)| {
                (name.clone(), labels.iter().zip(counts).map(|((_, label), n)| (label.clone(), *n)).collect())
            })
            .collect();
        let frames = self.frames.max(1) as f64;
        let zones = l
            .zones
            .iter()
            .zip(&self.zones)
            .map(|(name, counts)| {
                let per_label: BTreeMap<String, ZoneCount> = l
                    .zone_labels
                    .iter()
                    .zip(counts)
                    .map(|((_, label), (peak, sum))| {
                        (label.clone(), ZoneCount { peak: *peak, mean: (*sum as f64 / frames * 100.0).round() / 100.0 })
                    })
                    .collect();
                (name.clone(), per_label)
            })
            .collect();
        StatsMessage {
            schema: STATS_SCHEMA.into(),
            seq: 0,
            site: l.site.clone(),
            camera: l.camera.clone(),
            period_start: timestamp(self.start),
            period_end: timestamp(end),
            frames: self.frames,
            lines,
            zones,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::geometry::BBox;

    fn collector(t0: SystemTime) -> StatsCollector {
        let layout = StatsLayout {
            site: "s".into(),
            camera: "c".into(),
            lines: vec![
                ("gate".into(), vec![(0, "person".into()), (1, "bicycle".into())]),
                ("back".into(), vec![(0, "person".into())]),
            ],
            zones: vec!["square".into()],
            zone_labels: vec![(0, "person".into()), (2, "car".into())],
        };
        StatsCollector::new(layout, Duration::from_secs(300), t0)
    }

    fn crossing(line: usize, class_id: usize, inward: bool) -> Crossing {
        let bbox = BBox { x1: 0.0, y1: 0.0, x2: 1.0, y2: 1.0 };
        Crossing { line, track: 1, class_id, inward, bbox, score: 0.9 }
    }

    #[test]
    fn periods_align_to_the_clock_and_list_every_line_label_and_zone() {
        let t0 = UNIX_EPOCH + Duration::from_secs(1_800_000_100); // 100 s into a 300 s period
        let mut c = collector(t0);
        c.crossed(&crossing(0, 0, true));
        c.crossed(&crossing(0, 0, true));
        c.crossed(&crossing(0, 0, false));
        c.crossed(&crossing(0, 7, false)); // a label the line does not count
        c.frame(&[vec![(0, 2), (2, 1)]]);
        c.frame(&[vec![(0, 4)]]);
        c.frame(&[vec![(0, 0)]]);
        assert!(c.due(t0 + Duration::from_secs(199)).is_none());
        let m = c.due(t0 + Duration::from_secs(200)).expect("the period ended");
        assert_eq!(
            (m.period_start.as_str(), m.period_end.as_str()),
            ("2027-01-15T08:01:40.000Z", "2027-01-15T08:05:00.000Z")
        );
        assert_eq!(m.lines["gate"]["person"], LineCount { inward: 2, outward: 1 });
        assert_eq!(m.lines["gate"]["bicycle"], LineCount::default());
        assert_eq!(m.lines["back"]["person"], LineCount::default(), "a line nobody crossed says 0");
        assert_eq!(m.zones["square"]["person"], ZoneCount { peak: 4, mean: 2.0 });
        assert_eq!(m.zones["square"]["car"], ZoneCount { peak: 1, mean: 0.33 });
        assert_eq!(m.frames, 3);
        // The next period is a whole one, empty.
        let next = c.due(t0 + Duration::from_secs(500)).expect("next period");
        assert_eq!(next.period_start, m.period_end);
        assert_eq!((next.frames, next.lines["gate"]["person"]), (0, LineCount::default()));
    }

    #[test]
    fn a_clock_jump_starts_afresh_and_finish_closes_the_partial_period() {
        let t0 = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let mut c = collector(t0);
        let late = t0 + Duration::from_secs(3600);
        assert!(c.due(late).is_some());
        assert!(c.due(late + Duration::from_secs(1)).is_none(), "missed periods are not made up");
        let last = c.finish(late + Duration::from_secs(10)).unwrap();
        assert_eq!(last.period_start, timestamp(late));
    }

    #[test]
    fn json_schema_lists_exactly_the_fields_we_send() {
        let t0 = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let msg = serde_json::to_value(collector(t0).finish(t0 + Duration::from_secs(1)).unwrap()).unwrap();
        let schema = include_str!("../../../docs/schema/stats.schema.json");
        crate::contract::assert_fields_match_schema(schema, &msg, "StatsMessage");
        assert_eq!(msg["lines"]["gate"]["person"], serde_json::json!({"in": 0, "out": 0}));
    }
}
