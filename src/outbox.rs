//! The durable store-and-forward queue between event creation and MQTT.
//!
//! Promises: `push` numbers an event with the site's next `seq` and stores it with its
//! snapshot in one SQLite transaction, synced to disk before it returns (WAL,
//! synchronous=FULL), so an event that was pushed survives a crash or power cut and
//! its `seq` is never reused. Rows leave only through `ack`, after the broker
//! acknowledged the event. `oldest` hands them out in `seq` order.
//!
//! It also remembers, in the same transaction, which events are open (a `new` without
//! its `end`), so that after a crash or power cut `end_orphans` can give each its one
//! `end`: the desk never keeps an event open forever.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, OptionalExtension, params};

use crate::event::{EventMessage, EventType, Outgoing};

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

pub struct Outbox {
    conn: Connection,
    path: PathBuf,
}

impl Outbox {
    pub const FILE_NAME: &'static str = "outbox.sqlite3";

    /// Opens (creating if needed) the outbox in `dir`.
    pub fn open(dir: &Path) -> Result<Outbox, OutboxError> {
        std::fs::create_dir_all(dir).map_err(|source| OutboxError::Dir { path: dir.to_owned(), source })?;
        let path = dir.join(Self::FILE_NAME);
        let conn = Connection::open(&path).map_err(|source| OutboxError::Sqlite { path: path.clone(), source })?;
        let outbox = Outbox { conn, path };
        outbox
            .conn
            .execute_batch(
                "PRAGMA journal_mode=WAL;
                 PRAGMA synchronous=FULL;
                 PRAGMA busy_timeout=5000;
                 CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
                 CREATE TABLE IF NOT EXISTS outbox (
                     seq INTEGER PRIMARY KEY,
                     created_ms INTEGER NOT NULL,
                     payload TEXT NOT NULL,
                     snapshot_topic TEXT,
                     snapshot BLOB
                 );
                 CREATE TABLE IF NOT EXISTS open_events (
                     event_id TEXT PRIMARY KEY,
                     last_message TEXT NOT NULL
                 );",
            )
            .map_err(|e| outbox.err(e))?;
        Ok(outbox)
    }

    fn err(&self, source: rusqlite::Error) -> OutboxError {
        OutboxError::Sqlite { path: self.path.clone(), source }
    }

    /// Numbers `ev` with the next `seq`, stores it, and returns the `seq`.
    pub fn push(&mut self, mut ev: Outgoing) -> Result<u64, OutboxError> {
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
        let payload = serde_json::to_string(&ev.message)?;
        let topic = ev.message.snapshot.as_ref().filter(|_| ev.snapshot_jpeg.is_some()).map(|s| s.topic.clone());
        tx.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('last_seq', ?1)", params![seq]).map_err(err)?;
        tx.execute(
            "INSERT INTO outbox (seq, created_ms, payload, snapshot_topic, snapshot) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![seq, unix_ms(SystemTime::now()), payload, topic, ev.snapshot_jpeg],
        )
        .map_err(err)?;
        match ev.message.event_type {
            EventType::End => tx.execute("DELETE FROM open_events WHERE event_id = ?1", params![ev.message.event_id]),
            EventType::New | EventType::Update => tx.execute(
                "INSERT OR REPLACE INTO open_events (event_id, last_message) VALUES (?1, ?2)",
                params![ev.message.event_id, payload],
            ),
        }
        .map_err(err)?;
        tx.commit().map_err(err)?;
        Ok(seq)
    }

    /// The stored event with the lowest `seq`, if any.
    pub fn oldest(&self) -> Result<Option<Pending>, OutboxError> {
        self.conn
            .query_row("SELECT seq, payload, snapshot_topic, snapshot FROM outbox ORDER BY seq LIMIT 1", [], |r| {
                let topic: Option<String> = r.get(2)?;
                let jpeg: Option<Vec<u8>> = r.get(3)?;
                Ok(Pending { seq: r.get(0)?, payload: r.get(1)?, snapshot: topic.zip(jpeg) })
            })
            .optional()
            .map_err(|e| self.err(e))
    }

    /// The broker has the event `seq`: forget it.
    pub fn ack(&mut self, seq: u64) -> Result<(), OutboxError> {
        self.conn.execute("DELETE FROM outbox WHERE seq = ?1", params![seq]).map_err(|e| self.err(e))?;
        Ok(())
    }

    /// How many events wait for the broker.
    pub fn pending_count(&self) -> Result<u64, OutboxError> {
        self.conn.query_row("SELECT COUNT(*) FROM outbox", [], |r| r.get(0)).map_err(|e| self.err(e))
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
    use crate::event::{EventMessage, EventType, SnapshotRef};

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
}
