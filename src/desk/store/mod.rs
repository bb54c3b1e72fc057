//! The desk's database: one SQLite file in WAL mode for rows, files beside it for
//! pictures and clips.
//!
//! Promises: the schema is created at open; every write is one transaction; callers
//! on tokio run database work on the blocking pool (the web's `App::db`).

mod audit;
mod incidents;
mod ingest;
mod queries;
mod retention;
mod talk;
#[cfg(test)]
mod tests;
mod users;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context;
use rusqlite::Connection;

pub use incidents::Resolution;
pub use ingest::{FileClaim, Ingested};
// The views' tests build a camera; the pages only read them from a `SiteView`.
#[cfg(test)]
pub use queries::CameraView;
pub use queries::{AuditRow, EventDetail, EventFilter, EventView, ReportRow, SiteView, end_of, rfc3339, time_bound};
pub use talk::{CommandErrorRow, DeviceState, NewNotice, NoticeView, Receipt};
pub use users::Role;

pub struct Store {
    conn: Mutex<Connection>,
    dir: PathBuf,
}

const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS users(name TEXT PRIMARY KEY, role TEXT NOT NULL, hash TEXT NOT NULL, created_at INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS sites(site TEXT PRIMARY KEY, status TEXT, status_since INTEGER, info TEXT, last_seen INTEGER);
CREATE TABLE IF NOT EXISTS cameras(site TEXT NOT NULL, camera TEXT NOT NULL, name TEXT, state TEXT, fps_analyzed REAL,
  health TEXT, updated_at INTEGER, PRIMARY KEY(site, camera));
CREATE TABLE IF NOT EXISTS camera_changes(site TEXT NOT NULL, camera TEXT NOT NULL, at INTEGER NOT NULL, state TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS camera_changes_at ON camera_changes(site, at);
CREATE TABLE IF NOT EXISTS events(id INTEGER PRIMARY KEY, site TEXT NOT NULL, event_id TEXT NOT NULL, camera TEXT NOT NULL,
  kind TEXT NOT NULL, label TEXT NOT NULL, score REAL NOT NULL, zones TEXT NOT NULL, detail TEXT, started_at TEXT NOT NULL,
  ended_at TEXT, last_type TEXT NOT NULL, last_at TEXT NOT NULL, seq_first INTEGER NOT NULL, seq_last INTEGER NOT NULL,
  received_at INTEGER NOT NULL, updated_at INTEGER NOT NULL, UNIQUE(site, event_id));
CREATE INDEX IF NOT EXISTS events_started ON events(started_at);
CREATE INDEX IF NOT EXISTS events_site_started ON events(site, started_at);
CREATE INDEX IF NOT EXISTS events_site_kind_started ON events(site, kind, started_at);
CREATE TABLE IF NOT EXISTS messages(site TEXT NOT NULL, event_id TEXT NOT NULL, seq INTEGER NOT NULL, type TEXT NOT NULL,
  at TEXT NOT NULL, body TEXT NOT NULL, received_at INTEGER NOT NULL, PRIMARY KEY(site, event_id, seq));
CREATE INDEX IF NOT EXISTS messages_seq ON messages(site, seq);
CREATE TABLE IF NOT EXISTS files(id INTEGER PRIMARY KEY, site TEXT NOT NULL, topic TEXT NOT NULL, kind TEXT NOT NULL,
  event_id TEXT, camera TEXT, path TEXT, sha256 TEXT NOT NULL, bytes INTEGER NOT NULL, claimed_sha256 TEXT,
  status TEXT NOT NULL, received_at INTEGER NOT NULL, UNIQUE(topic, sha256));
CREATE INDEX IF NOT EXISTS files_event ON files(site, event_id);
CREATE INDEX IF NOT EXISTS files_site_camera ON files(site, camera, id);
CREATE TABLE IF NOT EXISTS seq_max(site TEXT PRIMARY KEY, seq INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS gaps(site TEXT NOT NULL, seq_from INTEGER NOT NULL, seq_to INTEGER NOT NULL, seen_at INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS incidents(site TEXT NOT NULL, event_id TEXT NOT NULL, kind TEXT NOT NULL, state TEXT NOT NULL,
  opened_at INTEGER NOT NULL, claimed_by TEXT, claimed_at INTEGER, resolved_by TEXT, resolved_at INTEGER, resolution TEXT,
  note TEXT, escalated_at INTEGER, PRIMARY KEY(site, event_id));
CREATE INDEX IF NOT EXISTS incidents_state ON incidents(state, opened_at);
CREATE INDEX IF NOT EXISTS incidents_site_state ON incidents(site, state);
CREATE TABLE IF NOT EXISTS incident_log(site TEXT NOT NULL, event_id TEXT NOT NULL, at INTEGER NOT NULL, user TEXT,
  action TEXT NOT NULL, note TEXT);
CREATE TABLE IF NOT EXISTS audit(id INTEGER PRIMARY KEY, at INTEGER NOT NULL, user TEXT, addr TEXT, action TEXT NOT NULL,
  target TEXT, detail TEXT);
CREATE TABLE IF NOT EXISTS stats(site TEXT NOT NULL, seq INTEGER NOT NULL, camera TEXT, period_start TEXT, body TEXT NOT NULL,
  received_at INTEGER NOT NULL, PRIMARY KEY(site, seq));
CREATE TABLE IF NOT EXISTS device_notes(id INTEGER PRIMARY KEY, site TEXT NOT NULL, topic TEXT NOT NULL, body TEXT NOT NULL,
  at INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS device_states(site TEXT NOT NULL, camera TEXT NOT NULL, what TEXT NOT NULL, value TEXT NOT NULL,
  at INTEGER NOT NULL, PRIMARY KEY(site, camera, what));
CREATE TABLE IF NOT EXISTS command_errors(id INTEGER PRIMARY KEY, site TEXT NOT NULL, topic TEXT NOT NULL, reason TEXT NOT NULL,
  at TEXT NOT NULL, received_at INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS command_errors_site ON command_errors(site, id);
CREATE TABLE IF NOT EXISTS notices(notice_id TEXT PRIMARY KEY, level TEXT NOT NULL, text TEXT NOT NULL, expires_at TEXT NOT NULL,
  target TEXT NOT NULL, sent_by TEXT NOT NULL, sent_at INTEGER NOT NULL, ended_at INTEGER, ended_why TEXT);
CREATE TABLE IF NOT EXISTS notice_sites(notice_id TEXT NOT NULL, site TEXT NOT NULL, PRIMARY KEY(notice_id, site));
CREATE TABLE IF NOT EXISTS notice_topics(topic TEXT PRIMARY KEY, notice_id TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS notice_receipts(notice_id TEXT NOT NULL, site TEXT NOT NULL, received_at TEXT, played_at TEXT,
  error TEXT, at INTEGER NOT NULL, PRIMARY KEY(notice_id, site));
"#;

/// Milliseconds since the Unix epoch: how the desk dates what it does itself.
pub fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

impl Store {
    /// Opens (or creates) `dir/desk.sqlite` and the picture folder.
    pub fn open(dir: &Path) -> anyhow::Result<Arc<Store>> {
        std::fs::create_dir_all(dir.join("files")).with_context(|| format!("creating {}", dir.display()))?;
        let conn = Connection::open(dir.join("desk.sqlite")).context("opening the desk database")?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        conn.execute_batch(SCHEMA).context("creating the desk database's tables")?;
        Ok(Arc::new(Store { conn: Mutex::new(conn), dir: dir.to_owned() }))
    }

    /// Runs `f` on the connection, on the calling thread.
    pub fn with<T>(&self, f: impl FnOnce(&mut Connection) -> anyhow::Result<T>) -> anyhow::Result<T> {
        let mut conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut conn)
    }

    /// The folder pictures and clips are kept in.
    pub fn files_dir(&self) -> PathBuf {
        self.dir.join("files")
    }
}
