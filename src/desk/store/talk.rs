//! What the desk says to grid points and what they answer (contract 1.1 commands;
//! notices): the retained `detect/state` and `rules/{zone}/{rule}/state` each camera
//! publishes, the `command_errors` a device sends back, the notices the desk sent with
//! the topics that still carry them, and each site's receipt.
//!
//! Promises: a state is the last one the device published (an empty retained payload
//! removes it); a receipt is the last one its site published (the later one wins, an
//! empty payload removes it), kept only for a notice this desk sent; a topic carries at
//! most one notice, the latest sent to it. Strings are stored as sent.

use rusqlite::{OptionalExtension, params};
use serde::Serialize;

use super::{Ingested, Store, now_ms, rfc3339};

/// One camera's applied command state, as its device last published it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeviceState {
    pub camera: String,
    /// `detect`, or `rules/{zone}/{rule}`.
    pub what: String,
    /// `ON` or `OFF`.
    pub value: String,
    pub at: String,
}

/// A `command_errors` message of a site.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CommandErrorRow {
    pub topic: String,
    pub reason: String,
    pub at: String,
    pub received_at: String,
}

/// A notice as the desk sent it.
#[derive(Debug, Clone, Serialize)]
pub struct NoticeView {
    pub notice_id: String,
    pub level: String,
    pub text: String,
    pub expires_at: String,
    /// `all`, `site:{id}` or `group:{name}`.
    pub target: String,
    pub sent_by: String,
    pub sent_at: String,
    /// When it was taken off its topics (expired or withdrawn), and why.
    pub ended_at: Option<String>,
    pub ended_why: Option<String>,
    /// Every targeted site (and any other that answered), with its receipt.
    pub sites: Vec<ReceiptView>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ReceiptView {
    pub site: String,
    pub received_at: Option<String>,
    pub played_at: Option<String>,
    pub error: Option<String>,
}

/// A notice to store before it is published.
pub struct NewNotice<'a> {
    pub notice_id: &'a str,
    pub level: &'a str,
    pub text: &'a str,
    pub expires_at: &'a str,
    pub target: &'a str,
    pub sent_by: &'a str,
    pub sites: &'a [String],
    pub topics: &'a [String],
}

/// A receipt as a device published it.
pub struct Receipt<'a> {
    pub received_at: Option<&'a str>,
    pub played_at: Option<&'a str>,
    pub error: Option<&'a str>,
}

/// Command errors a site page lists.
const ERRORS_SHOWN: usize = 20;
/// Command errors kept per site (older ones go as new ones come).
const ERRORS_KEPT: i64 = 200;

impl Store {
    /// A retained state (`value` None: cleared).
    pub fn put_state(&self, site: &str, camera: &str, what: &str, value: Option<&str>) -> anyhow::Result<Ingested> {
        self.with(|c| {
            match value {
                Some(v) => c.execute(
                    "INSERT INTO device_states(site, camera, what, value, at) VALUES(?1,?2,?3,?4,?5)
                     ON CONFLICT(site, camera, what) DO UPDATE SET value = ?4, at = ?5",
                    params![site, camera, what, v, now_ms()],
                )?,
                None => c.execute(
                    "DELETE FROM device_states WHERE site = ?1 AND camera = ?2 AND what = ?3",
                    params![site, camera, what],
                )?,
            };
            Ok(Ingested::Site(site.to_owned()))
        })
    }

    /// Every state a site's cameras published, by camera, then `detect` before rules.
    pub fn device_states(&self, site: &str) -> anyhow::Result<Vec<DeviceState>> {
        self.with(|c| {
            let mut st = c.prepare_cached(
                "SELECT camera, what, value, at FROM device_states WHERE site = ?1 ORDER BY camera, what != 'detect', what",
            )?;
            let rows = st.query_map([site], |r| {
                Ok(DeviceState { camera: r.get(0)?, what: r.get(1)?, value: r.get(2)?, at: rfc3339(r.get(3)?) })
            })?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
    }

    pub fn put_command_error(&self, site: &str, topic: &str, reason: &str, at: &str) -> anyhow::Result<Ingested> {
        self.with(|c| {
            let tx = c.transaction()?;
            tx.execute(
                "INSERT INTO command_errors(site, topic, reason, at, received_at) VALUES(?1,?2,?3,?4,?5)",
                params![site, topic, reason, at, now_ms()],
            )?;
            tx.execute(
                "DELETE FROM command_errors WHERE site = ?1 AND id <= (SELECT id FROM command_errors WHERE site = ?1
                 ORDER BY id DESC LIMIT 1 OFFSET ?2)",
                params![site, ERRORS_KEPT],
            )?;
            tx.commit()?;
            Ok(Ingested::Site(site.to_owned()))
        })
    }

    /// A site's latest command errors, newest first.
    pub fn command_errors(&self, site: &str) -> anyhow::Result<Vec<CommandErrorRow>> {
        self.with(|c| {
            let mut st = c.prepare_cached(
                "SELECT topic, reason, at, received_at FROM command_errors WHERE site = ?1 ORDER BY id DESC LIMIT ?2",
            )?;
            let rows = st.query_map(params![site, ERRORS_SHOWN as i64], |r| {
                Ok(CommandErrorRow {
                    topic: r.get(0)?,
                    reason: r.get(1)?,
                    at: r.get(2)?,
                    received_at: rfc3339(r.get(3)?),
                })
            })?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
    }

    /// Stores a notice and makes it what each of `topics` carries.
    pub fn put_notice(&self, n: &NewNotice) -> anyhow::Result<()> {
        self.with(|c| {
            let tx = c.transaction()?;
            tx.execute(
                "INSERT INTO notices(notice_id, level, text, expires_at, target, sent_by, sent_at) VALUES(?1,?2,?3,?4,?5,?6,?7)",
                params![n.notice_id, n.level, n.text, n.expires_at, n.target, n.sent_by, now_ms()],
            )?;
            for site in n.sites {
                tx.execute("INSERT OR IGNORE INTO notice_sites(notice_id, site) VALUES(?1, ?2)", [n.notice_id, site])?;
            }
            for topic in n.topics {
                tx.execute(
                    "INSERT INTO notice_topics(topic, notice_id) VALUES(?1, ?2)
                     ON CONFLICT(topic) DO UPDATE SET notice_id = ?2",
                    [topic, n.notice_id],
                )?;
            }
            tx.commit()?;
            Ok(())
        })
    }

    /// A site's receipt for a notice (`r` None: cleared); a receipt for a notice this
    /// desk did not send is not kept (Duplicate).
    pub fn put_receipt(&self, site: &str, notice_id: &str, r: Option<&Receipt>) -> anyhow::Result<Ingested> {
        self.with(|c| {
            let known = c
                .query_row("SELECT 1 FROM notices WHERE notice_id = ?1", [notice_id], |_| Ok(()))
                .optional()?
                .is_some();
            if !known {
                return Ok(Ingested::Duplicate);
            }
            match r {
                Some(r) => c.execute(
                    "INSERT INTO notice_receipts(notice_id, site, received_at, played_at, error, at) VALUES(?1,?2,?3,?4,?5,?6)
                     ON CONFLICT(notice_id, site) DO UPDATE SET received_at = ?3, played_at = ?4, error = ?5, at = ?6",
                    params![notice_id, site, r.received_at, r.played_at, r.error, now_ms()],
                )?,
                None => c.execute("DELETE FROM notice_receipts WHERE notice_id = ?1 AND site = ?2", [notice_id, site])?,
            };
            Ok(Ingested::Notice(notice_id.to_owned()))
        })
    }

    /// The latest notices, newest first, each with its sites' receipts.
    pub fn notices(&self, limit: usize) -> anyhow::Result<Vec<NoticeView>> {
        self.with(|c| {
            let mut st = c.prepare_cached(
                "SELECT notice_id, level, text, expires_at, target, sent_by, sent_at, ended_at, ended_why FROM notices
                 ORDER BY sent_at DESC, rowid DESC LIMIT ?1",
            )?;
            let mut out: Vec<NoticeView> = st
                .query_map([limit as i64], |r| {
                    Ok(NoticeView {
                        notice_id: r.get(0)?,
                        level: r.get(1)?,
                        text: r.get(2)?,
                        expires_at: r.get(3)?,
                        target: r.get(4)?,
                        sent_by: r.get(5)?,
                        sent_at: rfc3339(r.get(6)?),
                        ended_at: r.get::<_, Option<i64>>(7)?.map(rfc3339),
                        ended_why: r.get(8)?,
                        sites: Vec::new(),
                    })
                })?
                .collect::<Result<_, _>>()?;
            let mut st = c.prepare_cached(
                "SELECT s.site, r.received_at, r.played_at, r.error FROM
                   (SELECT site FROM notice_sites WHERE notice_id = ?1
                    UNION SELECT site FROM notice_receipts WHERE notice_id = ?1) s
                 LEFT JOIN notice_receipts r ON r.notice_id = ?1 AND r.site = s.site ORDER BY s.site",
            )?;
            for n in &mut out {
                n.sites = st
                    .query_map([&n.notice_id], |r| {
                        Ok(ReceiptView {
                            site: r.get(0)?,
                            received_at: r.get(1)?,
                            played_at: r.get(2)?,
                            error: r.get(3)?,
                        })
                    })?
                    .collect::<Result<_, _>>()?;
            }
            Ok(out)
        })
    }

    /// Takes a notice off every topic that still carries it (expired or withdrawn):
    /// the topics to clear with an empty retained message. Already ended: none.
    pub fn end_notice(&self, notice_id: &str, why: &str) -> anyhow::Result<Vec<String>> {
        self.with(|c| {
            let tx = c.transaction()?;
            let n = tx.execute(
                "UPDATE notices SET ended_at = ?2, ended_why = ?3 WHERE notice_id = ?1 AND ended_at IS NULL",
                params![notice_id, now_ms(), why],
            )?;
            let mut topics = Vec::new();
            if n == 1 {
                let mut st = tx.prepare("SELECT topic FROM notice_topics WHERE notice_id = ?1 ORDER BY topic")?;
                topics = st.query_map([notice_id], |r| r.get(0))?.collect::<Result<_, _>>()?;
                drop(st);
                tx.execute("DELETE FROM notice_topics WHERE notice_id = ?1", [notice_id])?;
            }
            tx.commit()?;
            Ok(topics)
        })
    }

    /// Notices still on their topics whose `expires_at` (RFC 3339 UTC, as stored) is past.
    pub fn notices_expired(&self, now: &str) -> anyhow::Result<Vec<String>> {
        self.with(|c| {
            let mut st =
                c.prepare_cached("SELECT notice_id FROM notices WHERE ended_at IS NULL AND expires_at <= ?1")?;
            Ok(st.query_map([now], |r| r.get(0))?.collect::<Result<_, _>>()?)
        })
    }

    /// Every site the desk knows of: configured (`configured`) or seen.
    pub fn known_sites(&self, configured: &[String]) -> anyhow::Result<Vec<String>> {
        self.with(|c| {
            let mut out: Vec<String> = configured.to_vec();
            let mut st = c.prepare_cached("SELECT site FROM sites ORDER BY site")?;
            for s in st.query_map([], |r| r.get::<_, String>(0))? {
                let s = s?;
                if !out.contains(&s) {
                    out.push(s);
                }
            }
            out.sort();
            Ok(out)
        })
    }
}
