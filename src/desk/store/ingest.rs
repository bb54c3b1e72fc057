//! Writes of what arrives over MQTT: events (one record per event plus its timeline),
//! pictures and clips, site status, info, camera health, stats and device notes.
//!
//! Promises: each message is stored in one transaction, and a repeat of an
//! `(site, event_id, seq)` or of the same picture bytes changes nothing. A picture is
//! checked against the sha256 its event names; one that does not match is kept and
//! flagged `mismatch`, never replaced. A hole in a site's `seq` is recorded when it
//! appears and shrinks as late messages fill it.

use rusqlite::{Connection, OptionalExtension, params};
use sha2::{Digest, Sha256};

use super::{Store, now_ms};
use crate::contract::{EventMessage, EventType, hex};

/// What a stored message changed, for the live view.
#[derive(Debug, Clone, PartialEq)]
pub enum Ingested {
    /// Seen before: nothing changed.
    Duplicate,
    Site(String),
    Event {
        site: String,
        event_id: String,
        incident_opened: bool,
    },
    /// A notice's receipts changed.
    Notice(String),
}

/// A picture or clip reference an event carries.
pub struct FileClaim<'a> {
    pub topic: &'a str,
    pub sha256: &'a str,
    pub kind: &'a str,
}

impl Store {
    /// Stores one event message; `alert` opens an incident for a new event.
    pub fn put_event(
        &self,
        e: &EventMessage,
        body: &str,
        alert: bool,
        clip: Option<FileClaim>,
    ) -> anyhow::Result<Ingested> {
        self.with(|c| {
            let tx = c.transaction()?;
            let now = now_ms();
            let fresh = tx.execute(
                "INSERT OR IGNORE INTO messages(site, event_id, seq, type, at, body, received_at) VALUES(?1,?2,?3,?4,?5,?6,?7)",
                params![e.site, e.event_id, e.seq as i64, e.event_type.as_str(), e.at, body, now],
            )? == 1;
            if !fresh {
                return Ok(Ingested::Duplicate);
            }
            upsert_event(&tx, e, now)?;
            seen(&tx, &e.site, now)?;
            track_seq(&tx, &e.site, e.seq as i64, now)?;
            let snap = e.snapshot.as_ref().map(|s| FileClaim { topic: &s.topic, sha256: &s.sha256, kind: "snapshot" });
            for claim in snap.into_iter().chain(clip) {
                link_file(&tx, &e.site, &e.event_id, &e.camera, &claim, now)?;
            }
            let incident_opened = alert
                && e.event_type != EventType::End
                && tx.execute(
                    "INSERT OR IGNORE INTO incidents(site, event_id, kind, state, opened_at) VALUES(?1,?2,?3,'open',?4)",
                    params![e.site, e.event_id, e.kind, now],
                )? == 1;
            if incident_opened {
                tx.execute(
                    "INSERT INTO incident_log(site, event_id, at, action, note) VALUES(?1,?2,?3,'opened','')",
                    params![e.site, e.event_id, now],
                )?;
            }
            tx.commit()?;
            Ok(Ingested::Event { site: e.site.clone(), event_id: e.event_id.clone(), incident_opened })
        })
    }

    /// Stores picture or clip bytes that arrived on `topic`. `kind`: snapshot, clip or
    /// live (a picture a camera was asked for); `owner` the event or camera it belongs to.
    pub fn put_file(&self, site: &str, topic: &str, kind: &str, owner: &str, bytes: &[u8]) -> anyhow::Result<Ingested> {
        let sha = hex(&Sha256::digest(bytes));
        let rel = format!("{site}/{}/{sha}.{}", &sha[..2], if kind == "clip" { "mp4" } else { "jpg" });
        let path = self.files_dir().join(&rel);
        if !path.is_file() {
            std::fs::create_dir_all(path.parent().unwrap_or(&self.files_dir()))?;
            let tmp = path.with_extension("part");
            std::fs::write(&tmp, bytes)?;
            std::fs::rename(&tmp, &path)?;
        }
        self.with(|c| {
            let tx = c.transaction()?;
            let seen: bool = tx
                .query_row("SELECT 1 FROM files WHERE topic = ?1 AND sha256 = ?2", [topic, &sha], |_| Ok(()))
                .optional()?
                .is_some();
            if seen {
                return Ok(Ingested::Duplicate);
            }
            // The event named it first: its claim decides, and an awaited row is filled.
            let first: Option<(i64, Option<String>, Option<String>, String)> = tx
                .query_row(
                    "SELECT id, claimed_sha256, event_id, status FROM files WHERE topic = ?1 ORDER BY id LIMIT 1",
                    [topic],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
                )
                .optional()?;
            let (claim, event_id) = match &first {
                Some((_, claim, ev, _)) => (claim.clone(), ev.clone()),
                None if kind == "live" => (None, None),
                None => (None, Some(owner.to_owned())),
            };
            let status = match &claim {
                None => "pending",
                Some(s) if *s == sha => "ok",
                Some(_) => "mismatch",
            };
            match first {
                Some((id, _, _, st)) if st == "awaited" => tx.execute(
                    "UPDATE files SET path = ?2, sha256 = ?3, bytes = ?4, status = ?5, received_at = ?6 WHERE id = ?1",
                    params![id, rel, sha, bytes.len() as i64, status, now_ms()],
                )?,
                _ => tx.execute(
                    "INSERT INTO files(site, topic, kind, event_id, camera, path, sha256, bytes, claimed_sha256, status,
                       received_at) VALUES(?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11)",
                    params![
                        site,
                        topic,
                        kind,
                        event_id,
                        (kind == "live").then_some(owner),
                        rel,
                        sha,
                        bytes.len() as i64,
                        claim,
                        status,
                        now_ms()
                    ],
                )?,
            };
            tx.commit()?;
            Ok(match event_id {
                Some(event_id) => Ingested::Event { site: site.to_owned(), event_id, incident_opened: false },
                None => Ingested::Site(site.to_owned()),
            })
        })
    }

    /// The retained `status`: true when it changed.
    pub fn put_status(&self, site: &str, status: &str) -> anyhow::Result<Ingested> {
        self.with(|c| {
            let now = now_ms();
            c.execute(
                "INSERT INTO sites(site, status, status_since, last_seen) VALUES(?1, ?2, ?3, ?3)
                 ON CONFLICT(site) DO UPDATE SET status_since = CASE WHEN status IS ?2 THEN status_since ELSE ?3 END,
                 status = ?2, last_seen = ?3",
                params![site, status, now],
            )?;
            Ok(Ingested::Site(site.to_owned()))
        })
    }

    /// The retained `info`: kept whole, and names the site's cameras.
    pub fn put_info(&self, site: &str, body: &str, cameras: &[(String, String)]) -> anyhow::Result<Ingested> {
        self.with(|c| {
            let tx = c.transaction()?;
            let now = now_ms();
            tx.execute(
                "INSERT INTO sites(site, info, last_seen) VALUES(?1, ?2, ?3)
                 ON CONFLICT(site) DO UPDATE SET info = ?2, last_seen = ?3",
                params![site, body, now],
            )?;
            for (id, name) in cameras {
                tx.execute(
                    "INSERT INTO cameras(site, camera, name, updated_at) VALUES(?1, ?2, ?3, ?4)
                     ON CONFLICT(site, camera) DO UPDATE SET name = ?3",
                    params![site, id, name, now],
                )?;
            }
            tx.commit()?;
            Ok(Ingested::Site(site.to_owned()))
        })
    }

    /// A camera's retained health; a change of state is kept for the 24-hour history.
    /// A camera's health: its `state` (any state name the device sends, `paused` too)
    /// and analysed fps; the whole body is kept.
    pub fn put_health(
        &self,
        site: &str,
        camera: &str,
        state: &str,
        fps_analyzed: f64,
        body: &str,
    ) -> anyhow::Result<Ingested> {
        self.with(|c| {
            let tx = c.transaction()?;
            let now = now_ms();
            let before: Option<Option<String>> = tx
                .query_row("SELECT state FROM cameras WHERE site = ?1 AND camera = ?2", [site, camera], |r| r.get(0))
                .optional()?;
            seen(&tx, site, now)?;
            tx.execute(
                "INSERT INTO cameras(site, camera, state, fps_analyzed, health, updated_at) VALUES(?1,?2,?3,?4,?5,?6)
                 ON CONFLICT(site, camera) DO UPDATE SET state = ?3, fps_analyzed = ?4, health = ?5, updated_at = ?6",
                params![site, camera, state, fps_analyzed, body, now],
            )?;
            if before.flatten().as_deref() != Some(state) {
                tx.execute(
                    "INSERT INTO camera_changes(site, camera, at, state) VALUES(?1, ?2, ?3, ?4)",
                    params![site, camera, now, state],
                )?;
            }
            tx.commit()?;
            Ok(Ingested::Site(site.to_owned()))
        })
    }

    /// A stats message; deduped on `(site, seq)`.
    pub fn put_stats(
        &self,
        site: &str,
        seq: i64,
        camera: &str,
        period_start: &str,
        body: &str,
    ) -> anyhow::Result<Ingested> {
        self.with(|c| {
            let n = c.execute(
                "INSERT OR IGNORE INTO stats(site, seq, camera, period_start, body, received_at) VALUES(?1,?2,?3,?4,?5,?6)",
                params![site, seq, camera, period_start, body, now_ms()],
            )?;
            Ok(if n == 0 { Ingested::Duplicate } else { Ingested::Site(site.to_owned()) })
        })
    }

    /// Anything else a device says on its topics (command errors, command states).
    pub fn put_note(&self, site: &str, topic: &str, body: &str) -> anyhow::Result<Ingested> {
        self.with(|c| {
            c.execute(
                "INSERT INTO device_notes(site, topic, body, at) VALUES(?1, ?2, ?3, ?4)",
                params![site, topic, body, now_ms()],
            )?;
            Ok(Ingested::Site(site.to_owned()))
        })
    }
}

/// The site has published: it is listed from now on, configured or not.
fn seen(c: &Connection, site: &str, now: i64) -> anyhow::Result<()> {
    c.execute(
        "INSERT INTO sites(site, last_seen) VALUES(?1, ?2) ON CONFLICT(site) DO UPDATE SET last_seen = ?2",
        params![site, now],
    )?;
    Ok(())
}

fn upsert_event(c: &Connection, e: &EventMessage, now: i64) -> anyhow::Result<()> {
    let zones = serde_json::to_string(&e.zones)?;
    let detail = e.detail.as_ref().map(|d| d.to_string());
    c.execute(
        "INSERT INTO events(site, event_id, camera, kind, label, score, zones, detail, started_at, ended_at, last_type,
           last_at, seq_first, seq_last, received_at, updated_at)
         VALUES(?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11,?12,?13,?13,?14,?14)
         ON CONFLICT(site, event_id) DO UPDATE SET
           seq_first = min(seq_first, ?13), updated_at = ?14,
           camera = CASE WHEN ?13 > seq_last THEN ?3 ELSE camera END,
           label = CASE WHEN ?13 > seq_last THEN ?5 ELSE label END,
           score = max(score, ?6),
           zones = CASE WHEN ?13 > seq_last THEN ?7 ELSE zones END,
           detail = CASE WHEN ?13 > seq_last THEN ?8 ELSE detail END,
           ended_at = CASE WHEN ?13 > seq_last THEN ?10 ELSE ended_at END,
           last_type = CASE WHEN ?13 > seq_last THEN ?11 ELSE last_type END,
           last_at = CASE WHEN ?13 > seq_last THEN ?12 ELSE last_at END,
           seq_last = max(seq_last, ?13)",
        params![
            e.site,
            e.event_id,
            e.camera,
            e.kind,
            e.label,
            (e.score as f64 * 1000.0).round() / 1000.0,
            zones,
            detail,
            e.started_at,
            e.ended_at,
            e.event_type.as_str(),
            e.at,
            e.seq as i64,
            now
        ],
    )?;
    Ok(())
}

/// Ties a picture or clip an event names to the event, checking bytes that came first.
fn link_file(c: &Connection, site: &str, event_id: &str, camera: &str, f: &FileClaim, now: i64) -> anyhow::Result<()> {
    let updated = c.execute(
        "UPDATE files SET event_id = ?2, camera = ?3, claimed_sha256 = ?4,
           status = CASE WHEN status = 'awaited' THEN status WHEN sha256 = ?4 THEN 'ok' ELSE 'mismatch' END
         WHERE topic = ?1",
        params![f.topic, event_id, camera, f.sha256],
    )?;
    if updated == 0 {
        c.execute(
            "INSERT INTO files(site, topic, kind, event_id, camera, path, sha256, bytes, claimed_sha256, status, received_at)
             VALUES(?1, ?2, ?3, ?4, ?5, NULL, '', 0, ?6, 'awaited', ?7)",
            params![site, f.topic, f.kind, event_id, camera, f.sha256, now],
        )?;
    }
    Ok(())
}

/// Records `seq` for `site`: opens a gap when it jumps ahead, fills one when it is late.
fn track_seq(c: &Connection, site: &str, seq: i64, now: i64) -> anyhow::Result<()> {
    let max: Option<i64> = c.query_row("SELECT seq FROM seq_max WHERE site = ?1", [site], |r| r.get(0)).optional()?;
    match max {
        None => {
            c.execute("INSERT INTO seq_max(site, seq) VALUES(?1, ?2)", params![site, seq])?;
        }
        Some(m) if seq > m => {
            if seq > m + 1 {
                c.execute(
                    "INSERT INTO gaps(site, seq_from, seq_to, seen_at) VALUES(?1, ?2, ?3, ?4)",
                    params![site, m + 1, seq - 1, now],
                )?;
            }
            c.execute("UPDATE seq_max SET seq = ?2 WHERE site = ?1", params![site, seq])?;
        }
        Some(_) => {
            let gap: Option<(i64, i64, i64, i64)> = c
                .query_row(
                    "SELECT rowid, seq_from, seq_to, seen_at FROM gaps WHERE site = ?1 AND seq_from <= ?2 AND seq_to >= ?2",
                    params![site, seq],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
                )
                .optional()?;
            if let Some((id, from, to, seen)) = gap {
                c.execute("DELETE FROM gaps WHERE rowid = ?1", [id])?;
                for (a, b) in [(from, seq - 1), (seq + 1, to)] {
                    if a <= b {
                        c.execute(
                            "INSERT INTO gaps(site, seq_from, seq_to, seen_at) VALUES(?1, ?2, ?3, ?4)",
                            params![site, a, b, seen],
                        )?;
                    }
                }
            }
        }
    }
    Ok(())
}
