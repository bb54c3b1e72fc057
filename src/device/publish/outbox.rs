//! The durable store-and-forward queue between event creation and MQTT, and the
//! device's recent event history.
//!
//! Promises: `push` numbers an event with the site's next `seq` and stores it with its
//! snapshot in one SQLite transaction, synced to disk before it returns (WAL,
//! synchronous=FULL), so an event that was pushed survives a crash or power cut and
//! its `seq` is never reused. An event stays pending until `ack`, after the broker
//! acknowledged it; `oldest` hands pending events out in `seq` order. A delivered
//! event loses its snapshot and stays as history (`recent`) until space is needed.
//!
//! The store stays within its budget (`with_budget`): to make room it drops, in this
//! order, delivered history, the oldest pending snapshots (the event then goes out with
//! `snapshot: null` and `snapshot_evicted: true`), and only then the oldest pending
//! events. Every eviction is counted per camera.
//!
//! It also remembers, in the same transaction, which events are open (a `new` without
//! its `end`), so that after a crash or power cut `end_orphans` can give each its one
//! `end`: the desk never keeps an event open forever.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, OpenFlags, OptionalExtension, Transaction, params};
use tracing::warn;

use crate::contract::{EventMessage, EventType};
use crate::device::ops::stages::{Span, Stage};
use crate::device::publish::event::Outgoing;

#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    #[error("{path}: cannot create the storage folder: {source} (check storage.dir and its permissions)")]
    Dir { path: PathBuf, source: std::io::Error },
    #[error("{path}: {source} (is the disk full or the file damaged? move it aside to start a fresh outbox)")]
    Sqlite { path: PathBuf, source: rusqlite::Error },
    #[error("cannot encode an event: {0}")]
    Encode(#[from] serde_json::Error),
}

/// One stored event, as it will be published.
#[derive(Debug, Clone, PartialEq)]
pub struct Pending {
    pub seq: u64,
    /// The event JSON, `seq` included.
    pub payload: String,
    /// Topic and JPEG of the snapshot to publish before the event.
    pub snapshot: Option<(String, Vec<u8>)>,
}

/// What had to go to keep the store within its budget, for one camera, since start.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Evictions {
    pub snapshots: u64,
    pub events: u64,
}

/// Delivered events kept as history at most (older ones go even with room to spare).
const HISTORY: u64 = 10_000;
/// Room counted for an event's row and index entries beyond its payload and picture.
const ROW_OVERHEAD: u64 = 256;

pub struct Outbox {
    conn: Connection,
    path: PathBuf,
    budget: u64,
    evictions: HashMap<String, Evictions>,
}

impl Outbox {
    pub const FILE_NAME: &'static str = "outbox.sqlite3";
    /// The schema this code writes (`PRAGMA user_version`); 0 is the first release's.
    const SCHEMA: i64 = 2;

    /// Opens (creating if needed) the outbox in `dir`, without a budget.
    pub fn open(dir: &Path) -> Result<Outbox, OutboxError> {
        std::fs::create_dir_all(dir).map_err(|source| OutboxError::Dir { path: dir.to_owned(), source })?;
        let path = dir.join(Self::FILE_NAME);
        let conn = Connection::open(&path).map_err(|source| OutboxError::Sqlite { path: path.clone(), source })?;
        let mut outbox = Outbox { conn, path, budget: u64::MAX, evictions: HashMap::new() };
        outbox
            .conn
            .execute_batch("PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; PRAGMA busy_timeout=5000;")
            .map_err(|e| outbox.err(e))?;
        outbox.migrate()?;
        outbox.evictions = outbox.load_evictions()?;
        Ok(outbox)
    }

    /// Opens an existing outbox for reading only (the CLI, beside a running daemon).
    pub fn open_read_only(dir: &Path) -> Result<Outbox, OutboxError> {
        let path = dir.join(Self::FILE_NAME);
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(&path, flags)
            .map_err(|source| OutboxError::Sqlite { path: path.clone(), source })?;
        let outbox = Outbox { conn, path, budget: u64::MAX, evictions: HashMap::new() };
        outbox.conn.busy_timeout(std::time::Duration::from_secs(5)).map_err(|e| outbox.err(e))?;
        Ok(outbox)
    }

    /// Keeps the store's pages (events, snapshots, history, indexes) within `bytes`.
    /// The file on disk may be larger by SQLite's write-ahead log (a few MB).
    pub fn with_budget(mut self, bytes: u64) -> Outbox {
        self.budget = bytes;
        self
    }

    fn migrate(&mut self) -> Result<(), OutboxError> {
        let path = self.path.clone();
        let err = |source| OutboxError::Sqlite { path: path.clone(), source };
        let tx = self.conn.transaction().map_err(err)?;
        let version: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0)).map_err(err)?;
        if version < Self::SCHEMA {
            tx.execute_batch(
                "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
                 CREATE TABLE events (
                     seq INTEGER PRIMARY KEY,
                     created_ms INTEGER NOT NULL,
                     camera TEXT NOT NULL,
                     payload TEXT NOT NULL,
                     delivered INTEGER NOT NULL DEFAULT 0
                 );
                 CREATE INDEX events_pending ON events (seq) WHERE delivered = 0;
                 CREATE TABLE snapshots (seq INTEGER PRIMARY KEY, topic TEXT NOT NULL, jpeg BLOB NOT NULL);
                 CREATE TABLE IF NOT EXISTS open_events (event_id TEXT PRIMARY KEY, last_message TEXT NOT NULL);
                 CREATE TABLE evictions (camera TEXT PRIMARY KEY, snapshots INTEGER NOT NULL, events INTEGER NOT NULL);",
            )
            .map_err(err)?;
            // The first release kept pending events and their pictures in one table.
            let old: bool = tx
                .query_row("SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = 'outbox'", [], |r| {
                    r.get(0)
                })
                .map_err(err)?;
            if old {
                tx.execute_batch(
                    "INSERT INTO events (seq, created_ms, camera, payload)
                         SELECT seq, created_ms, json_extract(payload, '$.camera'), payload FROM outbox;
                     INSERT INTO snapshots (seq, topic, jpeg)
                         SELECT seq, snapshot_topic, snapshot FROM outbox WHERE snapshot IS NOT NULL;
                     DROP TABLE outbox;",
                )
                .map_err(err)?;
            }
            tx.pragma_update(None, "user_version", Self::SCHEMA).map_err(err)?;
        }
        tx.commit().map_err(err)
    }

    fn load_evictions(&self) -> Result<HashMap<String, Evictions>, OutboxError> {
        let mut stmt = self.conn.prepare("SELECT camera, snapshots, events FROM evictions").map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([], |r| Ok((r.get(0)?, Evictions { snapshots: r.get(1)?, events: r.get(2)? })))
            .map_err(|e| self.err(e))?;
        rows.collect::<Result<_, _>>().map_err(|e| self.err(e))
    }

    fn err(&self, source: rusqlite::Error) -> OutboxError {
        OutboxError::Sqlite { path: self.path.clone(), source }
    }

    /// Numbers `ev` with the next `seq`, makes room for it within the budget, stores
    /// it, and returns the `seq`.
    pub fn push(&mut self, mut ev: Outgoing) -> Result<u64, OutboxError> {
        let _span = Span::start(Stage::Outbox);
        let path = self.path.clone();
        let err = |source| OutboxError::Sqlite { path: path.clone(), source };
        let tx = self.conn.transaction().map_err(err)?;
        let last: u64 = tx
            .query_row("SELECT value FROM meta WHERE key = 'last_seq'", [], |r| r.get(0))
            .optional()
            .map_err(err)?
            .unwrap_or(0);
        let seq = last + 1;
        ev.message.seq = seq;
        let mut payload = serde_json::to_string(&ev.message)?;
        let jpeg_len = ev.snapshot_jpeg.as_ref().map_or(0, |j| j.len() as u64);
        let room =
            make_room(&tx, self.budget, payload.len() as u64 + jpeg_len + ROW_OVERHEAD, jpeg_len).map_err(err)?;
        let mut room = room;
        let camera = ev.message.camera.clone();
        if room.drop_own_snapshot && ev.snapshot_jpeg.take().is_some() {
            warn!(camera = %camera, seq, budget = self.budget, "storage budget too small for this snapshot; the event goes without it");
            payload = without_snapshot(&payload)?;
            room.evicted.entry(camera.clone()).or_default().snapshots += 1;
        }
        let mut counted = Vec::new();
        for (cam, evicted) in &room.evicted {
            let mut e = self.evictions.get(cam).copied().unwrap_or_default();
            e.snapshots += evicted.snapshots;
            e.events += evicted.events;
            tx.execute(
                "INSERT OR REPLACE INTO evictions (camera, snapshots, events) VALUES (?1, ?2, ?3)",
                params![cam, e.snapshots, e.events],
            )
            .map_err(err)?;
            counted.push((cam.clone(), e));
        }
        tx.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('last_seq', ?1)", params![seq]).map_err(err)?;
        tx.execute(
            "INSERT INTO events (seq, created_ms, camera, payload) VALUES (?1, ?2, ?3, ?4)",
            params![seq, unix_ms(SystemTime::now()), camera, payload],
        )
        .map_err(err)?;
        if let (Some(s), Some(jpeg)) = (&ev.message.snapshot, &ev.snapshot_jpeg) {
            tx.execute("INSERT INTO snapshots (seq, topic, jpeg) VALUES (?1, ?2, ?3)", params![seq, s.topic, jpeg])
                .map_err(err)?;
        }
        match ev.message.event_type {
            EventType::End => tx.execute("DELETE FROM open_events WHERE event_id = ?1", params![ev.message.event_id]),
            EventType::New | EventType::Update => tx.execute(
                "INSERT OR REPLACE INTO open_events (event_id, last_message) VALUES (?1, ?2)",
                params![ev.message.event_id, payload],
            ),
        }
        .map_err(err)?;
        tx.commit().map_err(err)?;
        // Only what is on disk counts.
        self.evictions.extend(counted);
        Ok(seq)
    }

    /// The pending event with the lowest `seq`, if any.
    pub fn oldest(&self) -> Result<Option<Pending>, OutboxError> {
        self.conn
            .query_row(
                "SELECT e.seq, e.payload, s.topic, s.jpeg FROM events e LEFT JOIN snapshots s USING (seq)
                 WHERE e.delivered = 0 ORDER BY e.seq LIMIT 1",
                [],
                |r| {
                    let topic: Option<String> = r.get(2)?;
                    let jpeg: Option<Vec<u8>> = r.get(3)?;
                    Ok(Pending { seq: r.get(0)?, payload: r.get(1)?, snapshot: topic.zip(jpeg) })
                },
            )
            .optional()
            .map_err(|e| self.err(e))
    }

    /// The broker has the event `seq`: it becomes history, without its picture.
    pub fn ack(&mut self, seq: u64) -> Result<(), OutboxError> {
        let path = self.path.clone();
        let err = |source| OutboxError::Sqlite { path: path.clone(), source };
        let tx = self.conn.transaction().map_err(err)?;
        tx.execute("UPDATE events SET delivered = 1 WHERE seq = ?1", params![seq]).map_err(err)?;
        tx.execute("DELETE FROM snapshots WHERE seq = ?1", params![seq]).map_err(err)?;
        tx.execute("DELETE FROM events WHERE delivered = 1 AND seq <= ?1", params![seq.saturating_sub(HISTORY)])
            .map_err(err)?;
        tx.commit().map_err(err)
    }

    /// How many events wait for the broker.
    pub fn pending_count(&self) -> Result<u64, OutboxError> {
        self.conn
            .query_row("SELECT COUNT(*) FROM events WHERE delivered = 0", [], |r| r.get(0))
            .map_err(|e| self.err(e))
    }

    /// When the oldest pending event was stored, if any waits.
    pub fn oldest_pending_at(&self) -> Result<Option<SystemTime>, OutboxError> {
        let ms: Option<i64> = self
            .conn
            .query_row("SELECT MIN(created_ms) FROM events WHERE delivered = 0", [], |r| r.get(0))
            .map_err(|e| self.err(e))?;
        Ok(ms.map(|ms| UNIX_EPOCH + std::time::Duration::from_millis(ms.max(0) as u64)))
    }

    /// Bytes the store's pages hold now (what the budget limits).
    pub fn used_bytes(&self) -> Result<u64, OutboxError> {
        used_bytes(&self.conn).map_err(|e| self.err(e))
    }

    /// Evictions per camera over the outbox's life (kept across restarts).
    pub fn evictions(&self) -> &HashMap<String, Evictions> {
        &self.evictions
    }

    /// The last `limit` stored events (pending and delivered) with `seq` above
    /// `after_seq`, of one camera or all, in `seq` order.
    pub fn recent(&self, camera: Option<&str>, after_seq: u64, limit: usize) -> Result<Vec<EventMessage>, OutboxError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT payload FROM events WHERE seq > ?1 AND (?2 IS NULL OR camera = ?2) ORDER BY seq DESC LIMIT ?3",
            )
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map(params![after_seq, camera, limit as i64], |r| r.get::<_, String>(0))
            .map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        for payload in rows {
            out.push(serde_json::from_str(&payload.map_err(|e| self.err(e))?)?);
        }
        out.reverse();
        Ok(out)
    }

    /// Ends every event left open by a daemon that did not stop cleanly: each gets
    /// its `end`, dated at its last message (the last time it is known to have been
    /// seen). Returns the ended events' messages.
    pub fn end_orphans(&mut self) -> Result<Vec<EventMessage>, OutboxError> {
        let rows: Vec<String> = {
            let mut stmt = self.conn.prepare("SELECT last_message FROM open_events").map_err(|e| self.err(e))?;
            let rows = stmt.query_map([], |r| r.get(0)).map_err(|e| self.err(e))?;
            rows.collect::<Result<_, _>>().map_err(|e| self.err(e))?
        };
        let mut ended = Vec::with_capacity(rows.len());
        for row in rows {
            let mut message: EventMessage = serde_json::from_str(&row)?;
            message.event_type = EventType::End;
            message.ended_at = Some(message.at.clone());
            message.seq = self.push(Outgoing { message: message.clone(), snapshot_jpeg: None })?;
            ended.push(message);
        }
        Ok(ended)
    }
}

/// What `make_room` did.
#[derive(Default)]
struct Room {
    evicted: HashMap<String, Evictions>,
    /// Even with every other picture gone the new one does not fit.
    drop_own_snapshot: bool,
}

/// Frees pages until `need` more bytes fit within `budget`: delivered history first,
/// then pending snapshots oldest first, then pending events oldest first.
fn make_room(tx: &Transaction, budget: u64, need: u64, own_snapshot: u64) -> rusqlite::Result<Room> {
    let mut room = Room::default();
    let mut need = need;
    while used_bytes(tx)? + need > budget {
        // History is cheap to lose: go in batches.
        if tx.execute(
            "DELETE FROM events WHERE seq IN (SELECT seq FROM events WHERE delivered = 1 ORDER BY seq LIMIT 64)",
            [],
        )? > 0
        {
            continue;
        }
        let oldest_snapshot: Option<(u64, String, String)> = tx
            .query_row(
                "SELECT s.seq, e.camera, e.payload FROM snapshots s JOIN events e USING (seq) ORDER BY s.seq LIMIT 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()?;
        if let Some((seq, camera, payload)) = oldest_snapshot {
            let payload = without_snapshot(&payload).map_err(|e| rusqlite::Error::ToSqlConversionFailure(e.into()))?;
            tx.execute("DELETE FROM snapshots WHERE seq = ?1", params![seq])?;
            tx.execute("UPDATE events SET payload = ?2 WHERE seq = ?1", params![seq, payload])?;
            room.evicted.entry(camera.clone()).or_default().snapshots += 1;
            warn!(camera = %camera, seq, "storage budget reached: snapshot dropped, its event goes without it");
            continue;
        }
        if own_snapshot > 0 && !room.drop_own_snapshot {
            room.drop_own_snapshot = true;
            need -= own_snapshot;
            continue;
        }
        let oldest_event: Option<(u64, String)> = tx
            .query_row("SELECT seq, camera FROM events WHERE delivered = 0 ORDER BY seq LIMIT 1", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .optional()?;
        match oldest_event {
            Some((seq, camera)) => {
                tx.execute("DELETE FROM events WHERE seq = ?1", params![seq])?;
                room.evicted.entry(camera.clone()).or_default().events += 1;
                warn!(camera = %camera, seq, "storage budget reached with pictures gone: event dropped (raise storage.max_bytes)");
            }
            None => break, // nothing left to give: store it anyway
        }
    }
    Ok(room)
}

/// Bytes in use by the database's pages: what it holds, not what the file once grew to.
fn used_bytes(conn: &Connection) -> rusqlite::Result<u64> {
    let pragma = |name: &str| conn.query_row(&format!("PRAGMA {name}"), [], |r| r.get::<_, u64>(0));
    Ok((pragma("page_count")? - pragma("freelist_count")?) * pragma("page_size")?)
}

/// The event JSON with its snapshot gone, saying so (the contract adds the field).
fn without_snapshot(payload: &str) -> Result<String, serde_json::Error> {
    let mut v: serde_json::Value = serde_json::from_str(payload)?;
    if let Some(o) = v.as_object_mut() {
        o.insert("snapshot".into(), serde_json::Value::Null);
        o.insert("snapshot_evicted".into(), serde_json::Value::Bool(true));
    }
    serde_json::to_string(&v)
}

/// The outbox as the analysis threads (writers) and the publisher share it.
#[derive(Clone)]
pub struct SharedOutbox(Arc<Mutex<Outbox>>);

impl SharedOutbox {
    pub fn new(outbox: Outbox) -> SharedOutbox {
        SharedOutbox(Arc::new(Mutex::new(outbox)))
    }

    /// Runs `f` on the outbox; blocks (SQLite, fsync): call it from a thread that may.
    pub fn with<R>(&self, f: impl FnOnce(&mut Outbox) -> R) -> R {
        // A panic elsewhere while holding the lock leaves SQLite consistent (every
        // change is one transaction), so the outbox stays usable.
        f(&mut self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner()))
    }

    /// Runs `f` on the outbox from async code, on tokio's blocking pool.
    pub async fn with_async<R: Send + 'static>(&self, f: impl FnOnce(&mut Outbox) -> R + Send + 'static) -> R {
        let this = self.clone();
        match tokio::task::spawn_blocking(move || this.with(f)).await {
            Ok(r) => r,
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        }
    }
}

fn unix_ms(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::{EventMessage, EventType, SnapshotRef};

    fn outgoing(with_snapshot: bool) -> Outgoing {
        Outgoing {
            message: EventMessage {
                schema: "gridwatch.event/1".into(),
                seq: 0,
                event_id: "01TEST".into(),
                event_type: EventType::New,
                kind: "object".into(),
                site: "s".into(),
                camera: "c".into(),
                label: "person".into(),
                score: 0.9,
                bbox: [0.1, 0.1, 0.2, 0.3],
                zones: vec![],
                started_at: "2026-11-28T08:15:02.120Z".into(),
                at: "2026-11-28T08:15:02.120Z".into(),
                ended_at: None,
                snapshot: with_snapshot.then(|| SnapshotRef {
                    topic: "gridwatch/s/snapshots/01TEST-1".into(),
                    sha256: "00".into(),
                    bytes: 3,
                    width: 1,
                    height: 1,
                }),
                detail: None,
            },
            snapshot_jpeg: with_snapshot.then(|| vec![1, 2, 3]),
        }
    }

    fn tempdir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("gridwatch-outbox-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn seq_increases_survives_reopen_and_is_never_reused() {
        let dir = tempdir("seq");
        let mut ob = Outbox::open(&dir).unwrap();
        assert_eq!(ob.push(outgoing(true)).unwrap(), 1);
        assert_eq!(ob.push(outgoing(false)).unwrap(), 2);
        ob.ack(1).unwrap();
        ob.ack(2).unwrap();
        drop(ob);
        let mut ob = Outbox::open(&dir).unwrap();
        assert_eq!(ob.pending_count().unwrap(), 0);
        assert_eq!(ob.push(outgoing(false)).unwrap(), 3, "seq continues after acks and a restart");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn oldest_first_with_snapshot_and_seq_in_payload() {
        let dir = tempdir("order");
        let mut ob = Outbox::open(&dir).unwrap();
        ob.push(outgoing(true)).unwrap();
        ob.push(outgoing(false)).unwrap();
        let first = ob.oldest().unwrap().unwrap();
        assert_eq!(first.seq, 1);
        assert_eq!(first.snapshot, Some(("gridwatch/s/snapshots/01TEST-1".into(), vec![1, 2, 3])));
        let v: serde_json::Value = serde_json::from_str(&first.payload).unwrap();
        assert_eq!(v["seq"], 1);
        ob.ack(1).unwrap();
        let second = ob.oldest().unwrap().unwrap();
        assert_eq!((second.seq, second.snapshot), (2, None));
        ob.ack(2).unwrap();
        assert!(ob.oldest().unwrap().is_none());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn orphans_get_exactly_one_end_after_a_crash() {
        let dir = tempdir("orphans");
        let mut ob = Outbox::open(&dir).unwrap();
        let mut new = outgoing(true);
        ob.push(new.clone()).unwrap();
        new.message.event_id = "01CLOSED".into();
        ob.push(new.clone()).unwrap();
        let mut end = new.clone();
        end.message.event_type = EventType::End;
        ob.push(end).unwrap();
        drop(ob); // the "crash": 01TEST is open, 01CLOSED is not

        let mut ob = Outbox::open(&dir).unwrap();
        let ended = ob.end_orphans().unwrap();
        assert_eq!(ended.len(), 1);
        assert_eq!((ended[0].event_id.as_str(), ended[0].event_type, ended[0].seq), ("01TEST", EventType::End, 4));
        assert_eq!(ended[0].ended_at.as_deref(), Some("2026-11-28T08:15:02.120Z"));
        assert!(ob.end_orphans().unwrap().is_empty(), "ended once, not at every start");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn delivered_events_stay_as_history_without_their_pictures() {
        let dir = tempdir("history");
        let mut ob = Outbox::open(&dir).unwrap();
        ob.push(outgoing(true)).unwrap();
        let mut other = outgoing(false);
        other.message.camera = "d".into();
        ob.push(other).unwrap();
        ob.ack(1).unwrap();
        assert_eq!(ob.pending_count().unwrap(), 1);
        let all: Vec<u64> = ob.recent(None, 0, 10).unwrap().iter().map(|e| e.seq).collect();
        assert_eq!(all, vec![1, 2]);
        let c: Vec<u64> = ob.recent(Some("c"), 0, 10).unwrap().iter().map(|e| e.seq).collect();
        assert_eq!(c, vec![1]);
        assert_eq!(ob.recent(None, 1, 10).unwrap().len(), 1, "after_seq");
        assert_eq!(ob.recent(None, 0, 1).unwrap()[0].seq, 2, "limit keeps the latest");
        let snapshots: u64 = ob.conn.query_row("SELECT COUNT(*) FROM snapshots", [], |r| r.get(0)).unwrap();
        assert_eq!(snapshots, 0, "a delivered event's picture is gone");
        let ro = Outbox::open_read_only(&dir).unwrap();
        assert_eq!(ro.recent(None, 0, 10).unwrap().len(), 2);
        assert!(Outbox::open_read_only(&dir.join("nowhere")).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn big(seq_camera: &str, jpeg_bytes: usize) -> Outgoing {
        let mut o = outgoing(true);
        o.message.camera = seq_camera.into();
        o.snapshot_jpeg = Some(vec![7; jpeg_bytes]);
        o
    }

    #[test]
    fn a_full_store_evicts_history_then_pictures_then_events() {
        let dir = tempdir("budget");
        let ob = Outbox::open(&dir).unwrap();
        let base = ob.used_bytes().unwrap();
        let mut ob = ob.with_budget(base + 400_000);
        // Delivered history goes first, silently.
        for _ in 0..3 {
            let seq = ob.push(big("c", 100_000)).unwrap();
            ob.ack(seq).unwrap();
        }
        for _ in 0..3 {
            ob.push(big("c", 100_000)).unwrap();
        }
        assert_eq!(ob.evictions().get("c"), None, "history and freed pages made the room");
        // Then the oldest pending pictures: their events stay, marked.
        for _ in 0..3 {
            ob.push(big("d", 100_000)).unwrap();
        }
        assert!(ob.used_bytes().unwrap() <= base + 400_000, "{} > budget", ob.used_bytes().unwrap());
        let c = *ob.evictions().get("c").unwrap();
        assert!(c.snapshots >= 2 && c.events == 0, "{c:?}");
        drop(ob);
        let ob = Outbox::open(&dir).unwrap();
        assert_eq!(ob.evictions().get("c"), Some(&c), "counts survive a restart");
        assert_eq!(ob.pending_count().unwrap(), 6, "no event lost while pictures could go");
        let first = ob.oldest().unwrap().unwrap();
        assert_eq!((first.seq, first.snapshot.is_none()), (4, true));
        let v: serde_json::Value = serde_json::from_str(&first.payload).unwrap();
        assert_eq!((v["snapshot"].clone(), v["snapshot_evicted"].clone()), (serde_json::Value::Null, true.into()));
        // With no picture left to drop, the oldest events go, and a picture bigger
        // than the whole budget is stored without it.
        let tiny = Outbox::open(&tempdir("tiny")).unwrap();
        let tiny_base = tiny.used_bytes().unwrap();
        let mut tiny = tiny.with_budget(tiny_base + 20_000);
        for _ in 0..200 {
            tiny.push(outgoing(false)).unwrap();
        }
        tiny.push(big("c", 50_000)).unwrap();
        let e = *tiny.evictions().get("c").unwrap();
        assert!(e.events > 0 && e.snapshots == 1, "{e:?}");
        assert!(tiny.used_bytes().unwrap() <= tiny_base + 20_000);
        let last = tiny.recent(None, 0, 1).unwrap().pop().unwrap();
        assert_eq!((last.seq, last.snapshot), (201, None), "the newest event is kept, without its picture");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_first_releases_outbox_is_carried_over() {
        let dir = tempdir("migrate");
        std::fs::create_dir_all(&dir).unwrap();
        let conn = Connection::open(dir.join(Outbox::FILE_NAME)).unwrap();
        let payload = serde_json::to_string(&outgoing(true).message).unwrap().replace("\"seq\":0", "\"seq\":7");
        conn.execute_batch(
            "CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
             INSERT INTO meta VALUES ('last_seq', 7);
             CREATE TABLE outbox (seq INTEGER PRIMARY KEY, created_ms INTEGER NOT NULL, payload TEXT NOT NULL,
                                  snapshot_topic TEXT, snapshot BLOB);
             CREATE TABLE open_events (event_id TEXT PRIMARY KEY, last_message TEXT NOT NULL);",
        )
        .unwrap();
        conn.execute(
            "INSERT INTO outbox VALUES (7, 0, ?1, 'gridwatch/s/snapshots/01TEST-1', x'010203')",
            params![payload],
        )
        .unwrap();
        drop(conn);
        let mut ob = Outbox::open(&dir).unwrap();
        let p = ob.oldest().unwrap().unwrap();
        assert_eq!((p.seq, p.snapshot), (7, Some(("gridwatch/s/snapshots/01TEST-1".into(), vec![1, 2, 3]))));
        assert_eq!(ob.push(outgoing(false)).unwrap(), 8);
        drop(ob);
        assert_eq!(Outbox::open(&dir).unwrap().pending_count().unwrap(), 2, "migrates once");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
