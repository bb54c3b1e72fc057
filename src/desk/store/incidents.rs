//! Incidents: alerts as a queue, open -> claimed -> resolved, with who, when and a
//! note for each step, and escalation of those nobody claimed in time.
//!
//! Promises: a step that does not follow from the current state is refused with the
//! reason, and changes nothing; every step lands in the incident's history.

use rusqlite::{OptionalExtension, params};
use serde::Serialize;

use super::{Store, now_ms};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolution {
    Handled,
    FalseAlarm,
    Duplicate,
}

impl Resolution {
    pub fn parse(s: &str) -> Option<Resolution> {
        match s {
            "handled" => Some(Resolution::Handled),
            "false_alarm" => Some(Resolution::FalseAlarm),
            "duplicate" => Some(Resolution::Duplicate),
            _ => None,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Resolution::Handled => "handled",
            Resolution::FalseAlarm => "false_alarm",
            Resolution::Duplicate => "duplicate",
        }
    }
}

/// One escalated incident, as the retained `{root}/desk/escalations` message lists it.
#[derive(Debug, Clone, Serialize)]
pub struct Escalation {
    pub site: String,
    pub event_id: String,
    pub kind: String,
    pub opened_at: String,
    pub escalated_at: String,
}

fn state_of(c: &rusqlite::Connection, site: &str, event_id: &str) -> anyhow::Result<Option<String>> {
    Ok(c.query_row("SELECT state FROM incidents WHERE site = ?1 AND event_id = ?2", [site, event_id], |r| r.get(0))
        .optional()?)
}

fn log(
    c: &rusqlite::Connection,
    site: &str,
    event_id: &str,
    user: Option<&str>,
    action: &str,
    note: &str,
) -> anyhow::Result<()> {
    c.execute(
        "INSERT INTO incident_log(site, event_id, at, user, action, note) VALUES(?1, ?2, ?3, ?4, ?5, ?6)",
        params![site, event_id, now_ms(), user, action, note],
    )?;
    Ok(())
}

impl Store {
    /// `user` takes an open incident. Err(reason) when it is not open.
    pub fn claim(&self, site: &str, event_id: &str, user: &str) -> anyhow::Result<Result<(), &'static str>> {
        self.with(|c| {
            let tx = c.transaction()?;
            match state_of(&tx, site, event_id)?.as_deref() {
                None => return Ok(Err("no such incident")),
                Some("open") => {}
                Some(_) => return Ok(Err("already claimed or resolved")),
            }
            tx.execute(
                "UPDATE incidents SET state = 'claimed', claimed_by = ?3, claimed_at = ?4 WHERE site = ?1 AND event_id = ?2",
                params![site, event_id, user, now_ms()],
            )?;
            log(&tx, site, event_id, Some(user), "claimed", "")?;
            tx.commit()?;
            Ok(Ok(()))
        })
    }

    /// `user` closes an incident they (or anyone) claimed; an open one is claimed on the way.
    pub fn resolve(
        &self,
        site: &str,
        event_id: &str,
        user: &str,
        resolution: Resolution,
        note: &str,
    ) -> anyhow::Result<Result<(), &'static str>> {
        self.with(|c| {
            let tx = c.transaction()?;
            match state_of(&tx, site, event_id)?.as_deref() {
                None => return Ok(Err("no such incident")),
                Some("resolved") => return Ok(Err("already resolved")),
                Some("open") => {
                    tx.execute(
                        "UPDATE incidents SET claimed_by = ?3, claimed_at = ?4 WHERE site = ?1 AND event_id = ?2",
                        params![site, event_id, user, now_ms()],
                    )?;
                    log(&tx, site, event_id, Some(user), "claimed", "")?;
                }
                Some(_) => {}
            }
            tx.execute(
                "UPDATE incidents SET state = 'resolved', resolved_by = ?3, resolved_at = ?4, resolution = ?5, note = ?6
                 WHERE site = ?1 AND event_id = ?2",
                params![site, event_id, user, now_ms(), resolution.as_str(), note],
            )?;
            log(&tx, site, event_id, Some(user), resolution.as_str(), note)?;
            tx.commit()?;
            Ok(Ok(()))
        })
    }

    /// Marks open incidents older than `after_ms` as escalated; true when any was.
    pub fn escalate_due(&self, after_ms: i64) -> anyhow::Result<bool> {
        self.with(|c| {
            let tx = c.transaction()?;
            let due: Vec<(String, String)> = {
                let mut st = tx.prepare(
                    "SELECT site, event_id FROM incidents WHERE state = 'open' AND escalated_at IS NULL AND opened_at <= ?1",
                )?;
                st.query_map([now_ms() - after_ms], |r| Ok((r.get(0)?, r.get(1)?)))?.collect::<Result<_, _>>()?
            };
            for (site, id) in &due {
                tx.execute(
                    "UPDATE incidents SET escalated_at = ?3 WHERE site = ?1 AND event_id = ?2",
                    params![site, id, now_ms()],
                )?;
                log(&tx, site, id, None, "escalated", "")?;
            }
            tx.commit()?;
            Ok(!due.is_empty())
        })
    }

    /// Escalated incidents nobody has claimed yet.
    pub fn escalations(&self) -> anyhow::Result<Vec<Escalation>> {
        self.with(|c| {
            let mut st = c.prepare(
                "SELECT site, event_id, kind, opened_at, escalated_at FROM incidents
                 WHERE state = 'open' AND escalated_at IS NOT NULL ORDER BY opened_at",
            )?;
            let rows = st.query_map([], |r| {
                Ok(Escalation {
                    site: r.get(0)?,
                    event_id: r.get(1)?,
                    kind: r.get(2)?,
                    opened_at: super::queries::rfc3339(r.get(3)?),
                    escalated_at: super::queries::rfc3339(r.get(4)?),
                })
            })?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
    }
}
