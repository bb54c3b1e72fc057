//! Reads for the console and the JSON API: sites with their cameras and trouble,
//! events with pictures and incident, timelines, the incident queue, the report and
//! the audit log.
//!
//! Promises: every list is bounded (`limit` at most 1000); strings come back exactly
//! as the device sent them (escaping is the renderer's job).

use std::collections::BTreeMap;

use rusqlite::{Connection, OptionalExtension, Row, params};
use serde::{Deserialize, Serialize};

use super::{Store, now_ms};

/// How long a hole in `seq` may stay open before the site shows events as missing.
pub(super) const GAP_GRACE_MS: i64 = 10 * 60 * 1000;

#[derive(Debug, Clone, Serialize)]
pub struct CameraView {
    pub id: String,
    pub name: String,
    pub state: Option<String>,
    pub fps_analyzed: Option<f64>,
    #[serde(skip)]
    pub latest_picture: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SiteView {
    pub site: String,
    pub name: String,
    pub group: Option<String>,
    pub status: Option<String>,
    pub status_since: Option<String>,
    pub cameras: Vec<CameraView>,
    pub open_alerts: i64,
    pub missing_events: i64,
    pub events_evicted: i64,
    pub latest_picture: Option<String>,
}

impl SiteView {
    /// The grid point is offline or stopped: what it said of its cameras is from before.
    pub fn down(&self) -> bool {
        matches!(self.status.as_deref(), Some("offline" | "stopped"))
    }

    /// Higher is worse: offline or stopped, a camera not streaming (nor paused), alerts, holes.
    pub fn trouble(&self) -> i64 {
        let down = self.down() as i64 * 8;
        // A camera paused on purpose (contract 1.1) is not in trouble.
        let dark = self
            .cameras
            .iter()
            .filter(|c| c.state.as_deref().is_some_and(|s| s != "streaming" && s != "paused"))
            .count() as i64;
        down + dark * 4 + self.open_alerts.min(3) * 2 + (self.missing_events > 0) as i64
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct IncidentView {
    pub state: String,
    pub claimed_by: Option<String>,
    pub resolved_by: Option<String>,
    pub resolution: Option<String>,
    pub note: Option<String>,
    pub opened_at: String,
    pub claimed_at: Option<String>,
    pub resolved_at: Option<String>,
    pub escalated_at: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct EventView {
    pub site: String,
    pub event_id: String,
    pub seq_first: i64,
    pub seq_last: i64,
    pub camera: String,
    pub kind: String,
    pub label: String,
    pub score: f64,
    pub zones: Vec<String>,
    pub detail: Option<serde_json::Value>,
    pub started_at: String,
    pub ended_at: Option<String>,
    pub last_type: String,
    pub snapshots: Vec<String>,
    /// Per snapshot: ok, pending, mismatch (bytes differ from the sha256 the event named).
    pub snapshot_status: Vec<String>,
    pub clip: Option<String>,
    pub incident: Option<IncidentView>,
}

/// What the event page shows and `GET /api/events/{site}/{event_id}` returns.
#[derive(Debug, Clone, Serialize)]
pub struct EventDetail {
    pub event: EventView,
    pub timeline: Vec<TimelineRow>,
    pub incident_log: Vec<AuditRow>,
    /// Seconds of video the event's camera keeps for clips (its latest health's
    /// `clip_ring_s`), when the desk has heard it: how far back a clip can be asked for.
    pub clip_ring_s: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct TimelineRow {
    pub seq: i64,
    pub kind: String,
    pub at: String,
    pub received_at: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct AuditRow {
    pub at: String,
    pub user: Option<String>,
    pub addr: Option<String>,
    pub action: String,
    pub target: Option<String>,
    pub detail: Option<String>,
}

/// One day at one site: events by kind; crossings per `line/label` (in, out) and the
/// peak count per `zone/label`, from the stats messages (contract 1.1).
#[derive(Debug, Clone, Default, Serialize)]
pub struct ReportRow {
    pub day: String,
    pub site: String,
    pub counts: BTreeMap<String, i64>,
    pub lines: BTreeMap<String, [i64; 2]>,
    pub peaks: BTreeMap<String, i64>,
}

impl ReportRow {
    /// Adds one stats message's `lines` (summed) and `zones` (highest peak).
    fn add_stats(&mut self, v: &serde_json::Value) {
        let pairs = |key: &str| {
            let outer = v[key].as_object().into_iter().flatten();
            outer.flat_map(|(name, labels)| {
                labels.as_object().into_iter().flatten().map(move |(label, x)| (format!("{name}/{label}"), x))
            })
        };
        for (k, x) in pairs("lines") {
            let e = self.lines.entry(k).or_default();
            e[0] += x["in"].as_i64().unwrap_or(0);
            e[1] += x["out"].as_i64().unwrap_or(0);
        }
        for (k, x) in pairs("zones") {
            let e = self.peaks.entry(k).or_default();
            *e = (*e).max(x["peak"].as_i64().unwrap_or(0));
        }
    }
}

fn report_row(out: &mut BTreeMap<(String, String), ReportRow>, day: String, site: String) -> &mut ReportRow {
    out.entry((day.clone(), site.clone())).or_insert_with(|| ReportRow { day, site, ..Default::default() })
}

/// The one query of events: `/api/events`, the feed, history and its CSV all take it
/// from the URL and pass it through [`EventFilter::validated`] before use.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct EventFilter {
    pub site: Option<String>,
    pub camera: Option<String>,
    pub kind: Option<String>,
    pub label: Option<String>,
    /// A date (`2026-11-30`) or RFC 3339 time; compared with `started_at`. `to` is
    /// exclusive, but a bare date means "to the end of that day".
    pub from: Option<String>,
    pub to: Option<String>,
    /// Incident state: open, claimed, resolved, or `none` for events without one.
    pub state: Option<String>,
    /// Only events started before this time (paging by time, for integrators).
    pub before: Option<String>,
    /// Page size, 1..=1000.
    pub limit: Option<usize>,
    /// Page number from 0, for the history page's links.
    pub page: Option<usize>,
}

/// Why an [`EventFilter`] was refused; the text names the field (the API answers it with 400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FilterError {
    #[error("{field}: {why}")]
    Id { field: &'static str, why: String },
    #[error("label: at most 64 characters")]
    LabelTooLong,
    #[error("{field}: give a date (2026-11-30) or an RFC 3339 time")]
    Time { field: &'static str },
    #[error("state: use open, claimed, resolved or none")]
    State,
    #[error("page: at most {MAX_PAGE}")]
    Page,
}

/// Pages beyond this are refused rather than made into a huge OFFSET.
const MAX_PAGE: usize = 100_000;

impl EventFilter {
    /// Empty fields dropped, every other one checked, the page size set (`default_limit`
    /// when none was asked for, at most 1000): the error names the field at fault.
    pub fn validated(mut self, default_limit: usize) -> Result<EventFilter, FilterError> {
        for f in [
            &mut self.site,
            &mut self.camera,
            &mut self.kind,
            &mut self.label,
            &mut self.from,
            &mut self.to,
            &mut self.state,
            &mut self.before,
        ] {
            *f = f.take().map(|v| v.trim().to_owned()).filter(|v| !v.is_empty());
        }
        for (field, v) in [("site", &self.site), ("camera", &self.camera), ("kind", &self.kind)] {
            if let Some(v) = v {
                crate::contract::check_id(v).map_err(|e| FilterError::Id { field, why: e.0 })?;
            }
        }
        if self.label.as_ref().is_some_and(|l| l.chars().count() > 64) {
            return Err(FilterError::LabelTooLong);
        }
        for (field, v) in [("from", &mut self.from), ("to", &mut self.to), ("before", &mut self.before)] {
            if let Some(t) = v {
                *t = time_bound(t).ok_or(FilterError::Time { field })?;
            }
        }
        if !matches!(self.state.as_deref(), None | Some("open" | "claimed" | "resolved" | "none")) {
            return Err(FilterError::State);
        }
        self.limit = Some(self.limit.unwrap_or(default_limit).clamp(1, 1000));
        if self.page.is_some_and(|p| p > MAX_PAGE) {
            return Err(FilterError::Page);
        }
        Ok(self)
    }

    fn limit(&self) -> usize {
        self.limit.unwrap_or(100).clamp(1, 1000)
    }

    fn offset(&self) -> usize {
        self.page.unwrap_or(0).min(MAX_PAGE) * self.limit()
    }
}

/// A time bound as stored times compare: a date as is, an RFC 3339 time in UTC with
/// milliseconds (so that text order is time order); None if it is neither.
pub fn time_bound(s: &str) -> Option<String> {
    let date = |d: &str| {
        d.len() == 10
            && d.bytes().enumerate().all(|(i, b)| if i == 4 || i == 7 { b == b'-' } else { b.is_ascii_digit() })
    };
    if date(s) {
        return Some(s.to_owned());
    }
    let t = humantime::parse_rfc3339_weak(s).or_else(|_| humantime::parse_rfc3339(s)).ok()?;
    Some(crate::contract::timestamp(t))
}

/// RFC 3339 UTC with milliseconds of a desk time.
pub fn rfc3339(ms: i64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms.max(0) as u64);
    crate::contract::timestamp(t)
}

fn url(id: i64) -> String {
    format!("/media/{id}")
}

impl Store {
    /// Every site that is configured or has published, worst first.
    pub fn sites(&self, names: &[(String, String, Option<String>)]) -> anyhow::Result<Vec<SiteView>> {
        self.with(|c| {
            let mut ids: Vec<String> = names.iter().map(|n| n.0.clone()).collect();
            let mut st = c.prepare("SELECT site FROM sites ORDER BY site")?;
            for s in st.query_map([], |r| r.get::<_, String>(0))? {
                let s = s?;
                if !ids.contains(&s) {
                    ids.push(s);
                }
            }
            let mut out = Vec::with_capacity(ids.len());
            for id in ids {
                let named = names.iter().find(|n| n.0 == id);
                out.push(site(c, &id, named.map(|n| n.1.clone()), named.and_then(|n| n.2.clone()))?);
            }
            out.sort_by(|a, b| b.trouble().cmp(&a.trouble()).then_with(|| a.name.cmp(&b.name)));
            Ok(out)
        })
    }

    pub fn events(&self, f: &EventFilter) -> anyhow::Result<Vec<EventView>> {
        self.with(|c| {
            let (sql, args) = filter_sql(f);
            let mut st = c.prepare(&sql)?;
            let rows: Vec<i64> =
                st.query_map(rusqlite::params_from_iter(args.iter()), |r| r.get(0))?.collect::<Result<_, _>>()?;
            rows.into_iter().map(|id| event_by_rowid(c, id)).collect()
        })
    }

    pub fn event(&self, site: &str, event_id: &str) -> anyhow::Result<Option<EventView>> {
        self.with(|c| {
            let id: Option<i64> = c
                .query_row("SELECT id FROM events WHERE site = ?1 AND event_id = ?2", [site, event_id], |r| r.get(0))
                .optional()?;
            id.map(|id| event_by_rowid(c, id)).transpose()
        })
    }

    /// An event with its timeline and its incident's history, or None.
    pub fn event_detail(&self, site: &str, event_id: &str) -> anyhow::Result<Option<EventDetail>> {
        let Some(event) = self.event(site, event_id)? else { return Ok(None) };
        let timeline = self.timeline(site, event_id)?;
        let incident_log = self.incident_log(site, event_id)?;
        let clip_ring_s = self.clip_ring_s(site, &event.camera)?;
        Ok(Some(EventDetail { event, timeline, incident_log, clip_ring_s }))
    }

    /// The camera's `clip_ring_s` from its latest health, if any.
    fn clip_ring_s(&self, site: &str, camera: &str) -> anyhow::Result<Option<f64>> {
        self.with(|c| {
            let sql = "SELECT CASE WHEN json_valid(health) THEN json_extract(health, '$.clip_ring_s') END
                       FROM cameras WHERE site = ?1 AND camera = ?2";
            let ring = c.query_row(sql, [site, camera], |r| r.get::<_, Option<f64>>(0)).optional()?;
            Ok(ring.flatten())
        })
    }

    pub fn timeline(&self, site: &str, event_id: &str) -> anyhow::Result<Vec<TimelineRow>> {
        self.with(|c| {
            let mut st = c.prepare(
                "SELECT seq, type, at, received_at FROM messages WHERE site = ?1 AND event_id = ?2 ORDER BY seq",
            )?;
            let rows = st.query_map([site, event_id], |r| {
                Ok(TimelineRow { seq: r.get(0)?, kind: r.get(1)?, at: r.get(2)?, received_at: rfc3339(r.get(3)?) })
            })?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
    }

    /// The incident's steps: (when, who, what, note).
    pub fn incident_log(&self, site: &str, event_id: &str) -> anyhow::Result<Vec<AuditRow>> {
        self.with(|c| {
            let mut st = c.prepare(
                "SELECT at, user, action, note FROM incident_log WHERE site = ?1 AND event_id = ?2 ORDER BY at, rowid",
            )?;
            let rows = st.query_map([site, event_id], |r| {
                Ok(AuditRow {
                    at: rfc3339(r.get(0)?),
                    user: r.get(1)?,
                    addr: None,
                    action: r.get(2)?,
                    target: None,
                    detail: r.get(3)?,
                })
            })?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
    }

    /// Unresolved incidents (escalated first, then oldest), then the latest resolved.
    pub fn incident_queue(&self, resolved: usize) -> anyhow::Result<Vec<EventView>> {
        self.with(|c| {
            let mut st = c.prepare(
                "SELECT e.id FROM incidents i JOIN events e ON e.site = i.site AND e.event_id = i.event_id
                 WHERE i.state != 'resolved' ORDER BY i.escalated_at IS NULL, i.opened_at LIMIT 1000",
            )?;
            let mut ids: Vec<i64> = st.query_map([], |r| r.get(0))?.collect::<Result<_, _>>()?;
            let mut st = c.prepare(
                "SELECT e.id FROM incidents i JOIN events e ON e.site = i.site AND e.event_id = i.event_id
                 WHERE i.state = 'resolved' ORDER BY i.resolved_at DESC LIMIT ?1",
            )?;
            ids.extend(st.query_map([resolved as i64], |r| r.get::<_, i64>(0))?.collect::<Result<Vec<_>, _>>()?);
            ids.into_iter().map(|id| event_by_rowid(c, id)).collect()
        })
    }

    /// Unclaimed incidents: what the alarm sounds for.
    pub fn open_incidents(&self) -> anyhow::Result<i64> {
        self.with(|c| Ok(c.query_row("SELECT count(*) FROM incidents WHERE state = 'open'", [], |r| r.get(0))?))
    }

    pub fn audit_log(&self, limit: usize, offset: usize) -> anyhow::Result<Vec<AuditRow>> {
        self.with(|c| {
            let mut st = c.prepare(
                "SELECT at, user, addr, action, target, detail FROM audit ORDER BY id DESC LIMIT ?1 OFFSET ?2",
            )?;
            let rows = st.query_map(params![limit as i64, offset as i64], |r| {
                Ok(AuditRow {
                    at: rfc3339(r.get(0)?),
                    user: r.get(1)?,
                    addr: r.get(2)?,
                    action: r.get(3)?,
                    target: r.get(4)?,
                    detail: r.get(5)?,
                })
            })?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
    }

    /// Per day (UTC) and site in `[from, to)`: events by kind (by `started_at`), and
    /// from stats messages (by `period_start`) line crossings and zone peaks.
    pub fn report(&self, from: &str, to: &str) -> anyhow::Result<Vec<ReportRow>> {
        self.with(|c| {
            let mut out: BTreeMap<(String, String), ReportRow> = BTreeMap::new();
            let mut st = c.prepare_cached(
                "SELECT substr(started_at, 1, 10) AS day, site, kind, count(*) FROM events
                 WHERE started_at >= ?1 AND started_at < ?2 GROUP BY day, site, kind",
            )?;
            let counts = st.query_map([from, to], |r| Ok((r.get(0)?, r.get(1)?, r.get::<_, String>(2)?, r.get(3)?)))?;
            for row in counts {
                let (day, site, kind, n) = row?;
                report_row(&mut out, day, site).counts.insert(kind, n);
            }
            let mut st = c.prepare_cached(
                "SELECT substr(period_start, 1, 10), site, body FROM stats WHERE period_start >= ?1 AND period_start < ?2",
            )?;
            let stats = st.query_map([from, to], |r| Ok((r.get(0)?, r.get(1)?, r.get::<_, String>(2)?)))?;
            for row in stats {
                let (day, site, body) = row?;
                // Stored as received: a body that is not the contract's shape adds nothing.
                let Ok(v) = serde_json::from_str::<serde_json::Value>(&body) else { continue };
                report_row(&mut out, day, site).add_stats(&v);
            }
            Ok(out.into_values().collect())
        })
    }

    /// A camera's state changes over the last 24 hours: (when, state).
    pub fn camera_changes(&self, site: &str, camera: &str) -> anyhow::Result<Vec<(String, String)>> {
        self.with(|c| {
            let mut st = c.prepare(
                "SELECT at, state FROM camera_changes WHERE site = ?1 AND camera = ?2 AND at >= ?3 ORDER BY at",
            )?;
            let rows =
                st.query_map(params![site, camera, now_ms() - 86_400_000], |r| Ok((rfc3339(r.get(0)?), r.get(1)?)))?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
    }

    /// The stored file behind a `/media/{id}` URL: (path under files_dir, kind).
    pub fn file(&self, id: i64) -> anyhow::Result<Option<(String, String)>> {
        self.with(|c| {
            Ok(c.query_row("SELECT path, kind FROM files WHERE id = ?1 AND path IS NOT NULL", [id], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .optional()?)
        })
    }
}

fn site(c: &Connection, id: &str, name: Option<String>, group: Option<String>) -> anyhow::Result<SiteView> {
    let row: Option<(Option<String>, Option<i64>)> = c
        .query_row("SELECT status, status_since FROM sites WHERE site = ?1", [id], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    let (status, since) = row.unwrap_or((None, None));
    let mut st = c.prepare_cached(
        "SELECT camera, coalesce(name, camera), state, fps_analyzed, health FROM cameras WHERE site = ?1 ORDER BY camera",
    )?;
    let mut evicted = 0;
    let mut cameras = Vec::new();
    for row in st.query_map([id], |r| {
        Ok((r.get::<_, String>(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get::<_, Option<String>>(4)?))
    })? {
        let (cam, cam_name, state, fps, health) = row?;
        if let Some(h) = health.and_then(|h| serde_json::from_str::<serde_json::Value>(&h).ok()) {
            evicted += h["events_evicted"].as_i64().unwrap_or(0);
        }
        let latest = latest_file(c, "site = ?1 AND camera = ?2", params![id, cam])?;
        cameras.push(CameraView { id: cam, name: cam_name, state, fps_analyzed: fps, latest_picture: latest });
    }
    let open_alerts: i64 =
        c.query_row("SELECT count(*) FROM incidents WHERE site = ?1 AND state != 'resolved'", [id], |r| r.get(0))?;
    let missing_events: i64 = c.query_row(
        "SELECT coalesce(sum(seq_to - seq_from + 1), 0) FROM gaps WHERE site = ?1 AND seen_at <= ?2",
        params![id, now_ms() - GAP_GRACE_MS],
        |r| r.get(0),
    )?;
    Ok(SiteView {
        site: id.to_owned(),
        name: name.unwrap_or_else(|| id.to_owned()),
        group,
        status,
        status_since: since.map(rfc3339),
        cameras,
        open_alerts,
        missing_events,
        events_evicted: evicted,
        latest_picture: latest_file(c, "site = ?1", params![id])?,
    })
}

fn latest_file(c: &Connection, cond: &str, args: impl rusqlite::Params) -> anyhow::Result<Option<String>> {
    let sql = format!(
        "SELECT id FROM files WHERE {cond} AND kind IN ('snapshot', 'live') AND path IS NOT NULL ORDER BY id DESC LIMIT 1"
    );
    Ok(c.prepare_cached(&sql)?.query_row(args, |r| r.get::<_, i64>(0)).optional()?.map(url))
}

/// An exclusive upper bound: a bare date means the end of that day.
pub fn end_of(to: &str) -> String {
    if to.len() == 10 { format!("{to}\u{ffff}") } else { to.to_owned() }
}

fn filter_sql(f: &EventFilter) -> (String, Vec<String>) {
    let mut sql = String::from(
        "SELECT e.id FROM events e LEFT JOIN incidents i ON i.site = e.site AND i.event_id = e.event_id WHERE 1",
    );
    let mut args: Vec<String> = Vec::new();
    let mut add = |cond: &str, v: &Option<String>| {
        if let Some(v) = v.as_ref().filter(|v| !v.is_empty()) {
            args.push(v.clone());
            sql += &format!(" AND {cond} ?{}", args.len());
        }
    };
    add("e.site =", &f.site);
    add("e.camera =", &f.camera);
    add("e.kind =", &f.kind);
    add("e.label =", &f.label);
    add("e.started_at >=", &f.from);
    add("e.started_at <", &f.to.as_deref().map(end_of));
    add("e.started_at <", &f.before);
    match f.state.as_deref() {
        Some("none") => sql += " AND i.state IS NULL",
        Some(s @ ("open" | "claimed" | "resolved")) => sql += &format!(" AND i.state = '{s}'"),
        _ => {}
    }
    sql += &format!(" ORDER BY e.started_at DESC, e.id DESC LIMIT {} OFFSET {}", f.limit(), f.offset());
    (sql, args)
}

fn event_by_rowid(c: &Connection, id: i64) -> anyhow::Result<EventView> {
    let mut e = c.prepare_cached(
        "SELECT site, event_id, seq_first, seq_last, camera, kind, label, score, zones, detail, started_at, ended_at,
           last_type FROM events WHERE id = ?1",
    )?
    .query_row([id], event_row)?;
    let mut st = c.prepare_cached(
        "SELECT id, kind, status FROM files WHERE site = ?1 AND event_id = ?2 AND path IS NOT NULL ORDER BY id",
    )?;
    for row in st.query_map([&e.site, &e.event_id], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?, r.get(2)?)))? {
        let (fid, kind, status) = row?;
        match kind.as_str() {
            "clip" => e.clip = Some(url(fid)),
            _ => {
                e.snapshots.push(url(fid));
                e.snapshot_status.push(status);
            }
        }
    }
    e.incident = c
        .prepare_cached(
            "SELECT state, claimed_by, resolved_by, resolution, note, opened_at, claimed_at, resolved_at, escalated_at
             FROM incidents WHERE site = ?1 AND event_id = ?2",
        )?
        .query_row([&e.site, &e.event_id], |r| {
            Ok(IncidentView {
                state: r.get(0)?,
                claimed_by: r.get(1)?,
                resolved_by: r.get(2)?,
                resolution: r.get(3)?,
                note: r.get(4)?,
                opened_at: rfc3339(r.get(5)?),
                claimed_at: r.get::<_, Option<i64>>(6)?.map(rfc3339),
                resolved_at: r.get::<_, Option<i64>>(7)?.map(rfc3339),
                escalated_at: r.get::<_, Option<i64>>(8)?.map(rfc3339),
            })
        })
        .optional()?;
    Ok(e)
}

fn event_row(r: &Row) -> rusqlite::Result<EventView> {
    let zones: String = r.get(8)?;
    let detail: Option<String> = r.get(9)?;
    Ok(EventView {
        site: r.get(0)?,
        event_id: r.get(1)?,
        seq_first: r.get(2)?,
        seq_last: r.get(3)?,
        camera: r.get(4)?,
        kind: r.get(5)?,
        label: r.get(6)?,
        score: r.get(7)?,
        zones: serde_json::from_str(&zones).unwrap_or_default(),
        detail: detail.and_then(|d| serde_json::from_str(&d).ok()),
        started_at: r.get(10)?,
        ended_at: r.get(11)?,
        last_type: r.get(12)?,
        snapshots: Vec::new(),
        snapshot_status: Vec::new(),
        clip: None,
        incident: None,
    })
}
