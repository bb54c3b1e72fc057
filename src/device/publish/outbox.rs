//! The durable store-and-forward queue between event creation and MQTT, and the
//! device's recent event history.
//!
//! Promises: `push` numbers an event with the site's next `seq` and stores it with its
//! snapshot in one SQLite transaction, synced to disk before it returns (WAL,
//! synchronous=FULL), so an event that was pushed survives a crash or power cut and
//! its `seq` is never reused. An event stays pending until `ack`, after the broker
//! acknowledged it; `oldest` hands pending events out in `seq` order. A delivered
//! event loses its snapshot and clip and stays as history (`recent`) until space is needed.
//!
//! The store stays within its budget (`with_budget`) and within what its disk has
//! room for. It counts what it holds on disk: the database's pages, its write-ahead
//! log (emptied after every write, so it never piles up) and the log's index. To make
//! room it drops, in this order, delivered history, the oldest pending clips (the event
//! then goes out with `clip: null` and `clip_evicted: true`), the oldest pending
//! snapshots (`snapshot: null`, `snapshot_evicted: true`), and only
//! then the oldest pending events other than `end`s, updates before news. Room for the `end` of every open
//! event is kept free. Every eviction is counted per camera.
//!
//! A failed write never makes anything go out twice: the broker's acknowledgements
//! are kept in memory (`oldest` skips what the broker has) and written by the next
//! write that works. An event that cannot be stored still uses its `seq`, so the desk
//! sees the gap, and is counted (`events_dropped`); an `end` that cannot be stored
//! waits in memory and is stored before anything else. `health` shows all of it.
//!
//! Integrity: `open` runs SQLite's quick check. A damaged database (found then or
//! later) is moved aside under a recovery name and a new one started beside it, with
//! the pending events that can still be read and `seq` going on. A picture is checked
//! against the hash taken when it was stored before it is handed out; one that does
//! not match is not sent, and its event says the picture was lost.
//!
//! It also remembers, in the same transaction, which events are open (a `new` without
//! its `end`), so that after a crash or power cut `end_orphans` can give each its one
//! `end`: the desk never keeps an event open forever.

use std::cell::Cell;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, ErrorCode, OpenFlags, OptionalExtension, Transaction, params};
use sha2::{Digest, Sha256};
use tracing::{error, info, warn};

use crate::contract::{EventMessage, EventType, hex};
use crate::device::ops::stages::{Span, Stage};
use crate::device::publish::event::Outgoing;

#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    #[error("{path}: cannot create the storage folder: {source} (check storage.dir and its permissions)")]
    Dir { path: PathBuf, source: std::io::Error },
    #[error("{path}: {source}{}", hint(.source))]
    Sqlite { path: PathBuf, source: rusqlite::Error },
    #[error("{path}: the database is damaged ({report}) and cannot be replaced: {why}")]
    Damaged { path: PathBuf, report: String, why: String },
    #[error("cannot encode an event: {0}")]
    Encode(#[from] serde_json::Error),
    #[error(
        "the end of event {event_id} cannot be stored now ({reason}); it waits in memory and is stored first once a write works"
    )]
    EndWaits { event_id: String, reason: String },
}

/// What to do about an SQLite error, for the technician reading the log. Only a
/// damaged file is worth moving aside; a full disk or a permission is not.
fn hint(e: &rusqlite::Error) -> &'static str {
    match e.sqlite_error_code() {
        Some(ErrorCode::DiskFull) => " (the disk is full: free space on it, or lower storage.max_bytes)",
        Some(ErrorCode::ReadOnly | ErrorCode::PermissionDenied | ErrorCode::CannotOpen) => {
            " (check that gridwatch's user may write storage.dir and the files in it)"
        }
        Some(ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase) => {
            " (the file is damaged: gridwatch moves it aside and starts a new outbox)"
        }
        _ => "",
    }
}

fn is_damage(e: &rusqlite::Error) -> bool {
    matches!(e.sqlite_error_code(), Some(ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase))
}

/// One stored event, as it will be published.
#[derive(Debug, Clone, PartialEq)]
pub struct Pending {
    pub seq: u64,
    /// The event JSON, `seq` included.
    pub payload: String,
    /// Topic and JPEG of the snapshot to publish before the event.
    pub snapshot: Option<(String, Vec<u8>)>,
    /// Topic and MP4 of the clip to publish before the event (after the snapshot).
    pub clip: Option<(String, Vec<u8>)>,
    /// When the event was stored.
    pub stored_at: SystemTime,
}

impl Pending {
    /// What goes out before the event itself, in order.
    pub fn attachments(&self) -> impl Iterator<Item = &(String, Vec<u8>)> {
        self.snapshot.iter().chain(&self.clip)
    }
}

/// What had to go to keep the store within its budget, for one camera, since start.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Evictions {
    pub snapshots: u64,
    pub events: u64,
    pub clips: u64,
}

/// How the outbox is doing, for health, `status`, metrics and the watchdog. A copy,
/// kept beside the database so that reading it never waits for SQLite.
#[derive(Debug, Clone, Default)]
pub struct OutboxHealth {
    /// The last write that failed, while writes fail; `None` once one works again.
    pub write_error: Option<String>,
    /// Since when writes fail (wall clock for people, monotonic for the watchdog).
    pub failing_since: Option<(SystemTime, Instant)>,
    /// Writes that failed since start.
    pub write_errors: u64,
    /// Events the broker has that the disk does not yet say were delivered.
    pub acks_unrecorded: bool,
    /// `end`s waiting in memory for a write that works.
    pub ends_waiting: usize,
    /// Per camera, since start: events that could not be stored (their `seq` is a gap).
    pub events_dropped: HashMap<String, u64>,
    /// Per camera, since start: stored pictures that no longer matched their hash.
    pub snapshots_damaged: HashMap<String, u64>,
    /// Per camera, since start: clips the uplink's hourly budget held back past
    /// `mqtt.clip_keep_s`, so their events went without them.
    pub clips_dropped: HashMap<String, u64>,
    /// Per camera, over the outbox's life: budget evictions.
    pub evictions: HashMap<String, Evictions>,
    /// Where a damaged database was moved, while that file is still there.
    pub damaged_file: Option<PathBuf>,
}

/// Delivered events kept as history at most (older ones go even with room to spare).
const HISTORY: u64 = 10_000;
/// Room counted for an event's row and index entries beyond its payload and picture.
const ROW_OVERHEAD: u64 = 256;
/// Room kept free for the `end` of each open event (and one more).
const END_ROOM: u64 = 2048;
/// Room on the disk a write needs beyond its own bytes: the log's frame headers and
/// index, and the table and index pages it touches on their way through the log.
const DISK_SLACK: u64 = 64 << 10;

pub struct Outbox {
    conn: Connection,
    path: PathBuf,
    budget: u64,
    evictions: HashMap<String, Evictions>,
    /// The last `seq` handed out; in memory too, so that an event that could not be
    /// stored still uses its `seq`.
    last_seq: u64,
    /// The broker has every event up to this `seq` (delivery goes in `seq` order),
    /// whether or not the disk has recorded it yet.
    acked: Cell<u64>,
    /// Up to this `seq` the disk knows the events were delivered.
    recorded: u64,
    /// `end`s that could not be stored yet, oldest first.
    ends_waiting: Vec<Outgoing>,
    /// A read found the file damaged: the next write moves it aside first.
    damaged: Cell<bool>,
    health: Arc<Mutex<OutboxHealth>>,
}

impl Outbox {
    pub const FILE_NAME: &'static str = "outbox.sqlite3";
    /// The schema this code writes (`PRAGMA user_version`); 0 is the first release's.
    const SCHEMA: i64 = 4;

    /// Opens (creating if needed) the outbox in `dir`, without a budget. A damaged
    /// database is moved aside and a new one started (see `health().damaged_file`).
    pub fn open(dir: &Path) -> Result<Outbox, OutboxError> {
        std::fs::create_dir_all(dir).map_err(|source| OutboxError::Dir { path: dir.to_owned(), source })?;
        let path = dir.join(Self::FILE_NAME);
        let conn = Connection::open(&path).map_err(|source| OutboxError::Sqlite { path: path.clone(), source })?;
        let mut outbox = Outbox::with_conn(conn, path);
        match outbox.prepare() {
            Ok(()) => Ok(outbox),
            Err(Prepare::Damaged(report)) => {
                // The daemon's end_orphans then ends what the salvage left open.
                outbox.start_afresh(&report)?;
                Ok(outbox)
            }
            Err(Prepare::Failed(e)) => Err(outbox.err(e)),
        }
    }

    /// Opens an existing outbox for reading only (the CLI, beside a running daemon).
    pub fn open_read_only(dir: &Path) -> Result<Outbox, OutboxError> {
        let path = dir.join(Self::FILE_NAME);
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(&path, flags)
            .map_err(|source| OutboxError::Sqlite { path: path.clone(), source })?;
        let outbox = Outbox::with_conn(conn, path);
        outbox.conn.busy_timeout(std::time::Duration::from_secs(5)).map_err(|e| outbox.err(e))?;
        Ok(outbox)
    }

    fn with_conn(conn: Connection, path: PathBuf) -> Outbox {
        Outbox {
            conn,
            path,
            budget: u64::MAX,
            evictions: HashMap::new(),
            last_seq: 0,
            acked: Cell::new(0),
            recorded: 0,
            ends_waiting: Vec::new(),
            damaged: Cell::new(false),
            health: Arc::default(),
        }
    }

    /// Keeps what the store holds on disk (database, log and its index) within `bytes`,
    /// or within what the disk has room for when that is less (said once, here).
    pub fn with_budget(mut self, bytes: u64) -> Outbox {
        self.budget = bytes;
        if let Some(free) = disk_free(&self.path) {
            let room = self.on_disk() + free;
            if room < bytes {
                warn!(
                    budget = bytes,
                    room,
                    "storage.max_bytes is more than the disk holding storage.dir has room for; the outbox keeps within the disk (pictures go first when it fills)"
                );
            }
        }
        self
    }

    /// Settings, schema, the quick check, and what is kept in memory.
    fn prepare(&mut self) -> Result<(), Prepare> {
        self.conn
            .execute_batch("PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; PRAGMA busy_timeout=5000;")
            .map_err(Prepare::from)?;
        let report: String = self.conn.query_row("PRAGMA quick_check(1)", [], |r| r.get(0)).map_err(Prepare::from)?;
        if report != "ok" {
            return Err(Prepare::Damaged(report));
        }
        self.migrate().map_err(Prepare::from)?;
        self.evictions = self.load_evictions().map_err(Prepare::from)?;
        self.last_seq = last_seq(&self.conn).map_err(Prepare::from)?;
        self.health().evictions = self.evictions.clone();
        Ok(())
    }

    fn migrate(&mut self) -> rusqlite::Result<()> {
        let tx = self.conn.transaction()?;
        let version: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        if version < 2 {
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
            )?;
            // The first release kept pending events and their pictures in one table.
            let old: bool =
                tx.query_row("SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = 'outbox'", [], |r| {
                    r.get(0)
                })?;
            if old {
                tx.execute_batch(
                    "INSERT INTO events (seq, created_ms, camera, payload)
                         SELECT seq, created_ms, json_extract(payload, '$.camera'), payload FROM outbox;
                     INSERT INTO snapshots (seq, topic, jpeg)
                         SELECT seq, snapshot_topic, snapshot FROM outbox WHERE snapshot IS NOT NULL;
                     DROP TABLE outbox;",
                )?;
            }
        }
        if version < 3 {
            // The hash of each picture as it was stored, checked before it is sent
            // (NULL for pictures stored before: those go unchecked).
            tx.execute_batch("ALTER TABLE snapshots ADD COLUMN sha256 TEXT;")?;
        }
        if version < 4 {
            tx.execute_batch(
                "CREATE TABLE clips (seq INTEGER PRIMARY KEY, topic TEXT NOT NULL, mp4 BLOB NOT NULL, sha256 TEXT NOT NULL);
                 ALTER TABLE evictions ADD COLUMN clips INTEGER NOT NULL DEFAULT 0;",
            )?;
        }
        if version < Self::SCHEMA {
            tx.pragma_update(None, "user_version", Self::SCHEMA)?;
        }
        tx.commit()
    }

    fn load_evictions(&self) -> rusqlite::Result<HashMap<String, Evictions>> {
        let mut stmt = self.conn.prepare("SELECT camera, snapshots, events, clips FROM evictions")?;
        let rows = stmt.query_map([], |r| {
            Ok((r.get(0)?, Evictions { snapshots: r.get(1)?, events: r.get(2)?, clips: r.get(3)? }))
        })?;
        rows.collect()
    }

    fn err(&self, source: rusqlite::Error) -> OutboxError {
        OutboxError::Sqlite { path: self.path.clone(), source }
    }

    fn health(&self) -> std::sync::MutexGuard<'_, OutboxHealth> {
        self.health.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// How the outbox is doing (a copy).
    pub fn health_view(&self) -> OutboxHealth {
        self.health().clone()
    }

    /// Runs `f` as one transaction; then empties the write-ahead log, so that what the
    /// store holds on disk is its database. A failure is counted and shown in health;
    /// a damaged file is moved aside.
    fn write<R>(&mut self, f: impl FnOnce(&Transaction) -> rusqlite::Result<R>) -> Result<R, OutboxError> {
        match transact(&mut self.conn, f) {
            Ok(r) => {
                // Best effort: a log that could not be emptied is still counted on disk.
                let _ = self.conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()));
                self.write_worked();
                Ok(r)
            }
            Err(e) => {
                let damaged = is_damage(&e);
                let err = self.err(e);
                self.write_failed(&err);
                if damaged {
                    self.damaged.set(true);
                    self.recover_if_damaged();
                }
                Err(err)
            }
        }
    }

    fn write_worked(&self) {
        let mut h = self.health();
        if let Some(error) = h.write_error.take() {
            h.failing_since = None;
            info!(failed_before = %error, "outbox: writes work again");
        }
    }

    fn write_failed(&self, err: &OutboxError) {
        let mut h = self.health();
        h.write_errors += 1;
        if h.write_error.is_none() {
            error!("outbox: a write failed: {err}; nothing is sent twice because of it, and writes are retried");
            h.failing_since = Some((SystemTime::now(), Instant::now()));
        }
        h.write_error = Some(err.to_string());
    }

    /// A read failed: a damaged file is moved aside at the next write.
    fn read_failed(&self, e: rusqlite::Error) -> OutboxError {
        if is_damage(&e) {
            self.damaged.set(true);
        }
        self.err(e)
    }

    /// Numbers `ev` with the next `seq`, makes room for it within the budget, stores
    /// it, and returns the `seq`. An event that cannot be stored still uses its `seq`
    /// and is counted; an `end` that cannot be stored waits (`OutboxError::EndWaits`).
    pub fn push(&mut self, ev: Outgoing) -> Result<u64, OutboxError> {
        let _span = Span::start(Stage::Outbox);
        self.catch_up();
        if !self.ends_waiting.is_empty() && ev.message.event_type == EventType::End {
            return Err(self.end_waits(ev, "earlier ends still wait"));
        }
        self.store_next(ev)
    }

    /// Stores `ev` as the next `seq`, accounting for a failure.
    fn store_next(&mut self, ev: Outgoing) -> Result<u64, OutboxError> {
        let seq = self.last_seq + 1;
        match self.store(seq, &ev) {
            Ok(()) => {
                self.last_seq = seq;
                Ok(seq)
            }
            Err(e) if ev.message.event_type == EventType::End => Err(self.end_waits(ev, &e.to_string())),
            Err(e) => {
                // The seq is used all the same: the desk sees the gap.
                self.last_seq = seq;
                let camera = ev.message.camera.clone();
                *self.health().events_dropped.entry(camera.clone()).or_default() += 1;
                warn!(camera = %camera, seq, event = %ev.message.event_id, "event dropped: it could not be stored; seq {seq} stays a gap");
                Err(e)
            }
        }
    }

    fn end_waits(&mut self, ev: Outgoing, reason: &str) -> OutboxError {
        let event_id = ev.message.event_id.clone();
        self.ends_waiting.push(ev);
        self.health().ends_waiting = self.ends_waiting.len();
        OutboxError::EndWaits { event_id, reason: reason.to_owned() }
    }

    /// What a failed write left behind: the damaged file moved aside, the broker's
    /// acknowledgements recorded, and waiting ends stored. Best effort; called before
    /// every write and by the publisher's retries.
    fn catch_up(&mut self) {
        self.recover_if_damaged();
        let _ = self.record_acks();
        while !self.ends_waiting.is_empty() {
            let end = self.ends_waiting.remove(0);
            if self.store_next(end).is_err() {
                // store_next put it back at the end; keep the order of the others.
                if let Some(end) = self.ends_waiting.pop() {
                    self.ends_waiting.insert(0, end);
                }
                break;
            }
        }
        self.health().ends_waiting = self.ends_waiting.len();
    }

    /// Retries what failed writes left (the publisher calls it while writes fail).
    /// Returns whether everything is written now.
    pub fn retry(&mut self) -> bool {
        self.catch_up();
        self.recorded >= self.acked.get() && self.ends_waiting.is_empty() && self.health().write_error.is_none()
    }

    /// Stores `ev` as `seq` in one transaction, with room made for it.
    fn store(&mut self, seq: u64, ev: &Outgoing) -> Result<(), OutboxError> {
        let mut message = ev.message.clone();
        message.seq = seq;
        let payload = serde_json::to_string(&message)?;
        let jpeg = ev.snapshot_jpeg.as_deref().filter(|_| message.snapshot.is_some());
        let jpeg_len = jpeg.map_or(0, |j| j.len() as u64);
        let clip = ev.clip_mp4.as_deref().filter(|_| message.clip.is_some());
        let clip_len = clip.map_or(0, |c| c.len() as u64);
        let need = payload.len() as u64 + jpeg_len + clip_len + ROW_OVERHEAD;
        let is_end = message.event_type == EventType::End;
        let limit = self.room(need);
        let acked = self.acked.get();
        let known = self.evictions.clone();
        let (budget, path) = (self.budget, self.path.clone());
        let counted = self.write(|tx| {
            // New events leave room for the ends of the open ones.
            let keep_free = if is_end { 0 } else { END_ROOM * (open_events(tx)? + 1) };
            let own = Own { clip: clip_len, snapshot: jpeg_len };
            let room = make_room(tx, &path, limit.saturating_sub(keep_free), need, own, acked)?;
            let mut payload = payload;
            let (mut jpeg, mut clip) = (jpeg, clip);
            let mut evicted = room.evicted;
            if room.drop_own_clip && clip.take().is_some() {
                warn!(camera = %message.camera, seq, budget, "storage budget too small for this clip; the event goes without it");
                payload = without(&payload, Attachment::Clip, false).map_err(to_sql_error)?;
                evicted.entry(message.camera.clone()).or_default().clips += 1;
            }
            if room.drop_own_snapshot && jpeg.take().is_some() {
                warn!(camera = %message.camera, seq, budget, "storage budget too small for this snapshot; the event goes without it");
                payload = without(&payload, Attachment::Snapshot, false).map_err(to_sql_error)?;
                evicted.entry(message.camera.clone()).or_default().snapshots += 1;
            }
            let counted = count_evictions(tx, &known, &evicted)?;
            insert_event(tx, seq, &message, &payload, jpeg, clip)?;
            Ok(counted)
        })?;
        // Only what is on disk counts.
        self.evictions.extend(counted);
        self.health().evictions = self.evictions.clone();
        Ok(())
    }

    /// What the store may hold now: its budget, or less when its disk has less room
    /// (what the store holds there now plus what is free, less what a write of `need`
    /// bytes takes on its way through the log).
    fn room(&self, need: u64) -> u64 {
        let disk = match disk_free(&self.path) {
            Some(free) => (self.on_disk() + free).saturating_sub(need + DISK_SLACK),
            None => u64::MAX,
        };
        self.budget.min(disk)
    }

    /// Bytes of the database file, its log and the log's index, as the disk has them.
    fn on_disk(&self) -> u64 {
        companions(&self.path).iter().map(|p| std::fs::metadata(p).map_or(0, |m| m.len())).sum()
    }

    /// The pending event with the lowest `seq` the broker does not have yet, if any.
    /// A picture that no longer matches the hash it was stored with is left out, and
    /// the event says it was lost.
    pub fn oldest(&self) -> Result<Option<Pending>, OutboxError> {
        let row = self
            .conn
            .query_row(
                "SELECT e.seq, e.camera, e.payload, s.topic, s.jpeg, s.sha256, c.topic, c.mp4, c.sha256, e.created_ms
                 FROM events e LEFT JOIN snapshots s USING (seq) LEFT JOIN clips c USING (seq)
                 WHERE e.delivered = 0 AND e.seq > ?1 ORDER BY e.seq LIMIT 1",
                [self.acked.get()],
                |r| {
                    let topic: Option<String> = r.get(3)?;
                    let jpeg: Option<Vec<u8>> = r.get(4)?;
                    let clip_topic: Option<String> = r.get(6)?;
                    let mp4: Option<Vec<u8>> = r.get(7)?;
                    let stored = StoredRow {
                        seq: r.get(0)?,
                        camera: r.get(1)?,
                        payload: r.get(2)?,
                        snapshot: topic.zip(jpeg),
                        sha256: r.get(5)?,
                        clip: clip_topic.zip(mp4),
                        clip_sha256: r.get(8)?,
                        created_ms: r.get(9)?,
                    };
                    Ok(stored)
                },
            )
            .optional()
            .map_err(|e| self.read_failed(e))?;
        Ok(row.map(|r| self.checked(r)))
    }

    /// The row as it may be sent: its picture and clip only if they are the ones stored.
    fn checked(&self, row: StoredRow) -> Pending {
        let intact = |bytes: &Option<(String, Vec<u8>)>, sha: &Option<String>| match (bytes, sha) {
            (Some((_, b)), Some(sha)) => hex(&Sha256::digest(b)) == *sha,
            _ => true,
        };
        let mut pending = Pending {
            seq: row.seq,
            payload: row.payload,
            snapshot: row.snapshot,
            clip: row.clip,
            stored_at: UNIX_EPOCH + std::time::Duration::from_millis(row.created_ms.max(0) as u64),
        };
        if !intact(&pending.snapshot, &row.sha256) {
            *self.health().snapshots_damaged.entry(row.camera.clone()).or_default() += 1;
            warn!(camera = %row.camera, seq = row.seq, "stored snapshot does not match its sha256 (damaged on disk); the event goes without it");
            self.forget(&mut pending, Attachment::Snapshot, true);
        }
        if !intact(&pending.clip, &row.clip_sha256) {
            warn!(camera = %row.camera, seq = row.seq, "stored clip does not match its sha256 (damaged on disk); the event goes without it");
            self.forget(&mut pending, Attachment::Clip, true);
        }
        pending
    }

    /// Sends `pending` without its `what` from now on, saying so in the event.
    fn forget(&self, pending: &mut Pending, what: Attachment, damaged: bool) {
        if let Ok(payload) = without(&pending.payload, what, damaged) {
            pending.payload = payload;
        }
        match what {
            Attachment::Snapshot => pending.snapshot = None,
            Attachment::Clip => pending.clip = None,
        }
        // Best effort, so that a resend does not count it again.
        let _ = self.conn.execute(&format!("DELETE FROM {} WHERE seq = ?1", what.table()), [pending.seq]);
        let _ =
            self.conn.execute("UPDATE events SET payload = ?2 WHERE seq = ?1", params![pending.seq, pending.payload]);
    }

    /// The uplink's budget held `pending`'s clip back too long: the event goes without
    /// it (counted for `camera` as `clips_dropped`).
    pub fn drop_clip(&self, pending: &mut Pending, camera: &str) {
        *self.health().clips_dropped.entry(camera.to_owned()).or_default() += 1;
        self.forget(pending, Attachment::Clip, false);
    }

    /// The newest stored message of `event_id`, if the outbox still has one.
    pub fn latest_of(&self, event_id: &str) -> Result<Option<EventMessage>, OutboxError> {
        let payload: Option<String> = self
            .conn
            .query_row(
                "SELECT payload FROM events WHERE json_extract(payload, '$.event_id') = ?1 ORDER BY seq DESC LIMIT 1",
                [event_id],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| self.read_failed(e))?;
        Ok(payload.map(|p| serde_json::from_str(&p)).transpose()?)
    }

    /// The broker has the event `seq` (and, delivery being in order, every one before
    /// it): it becomes history, without its picture. Remembered in memory even when
    /// the write fails, so that it is not sent again.
    pub fn ack(&mut self, seq: u64) -> Result<(), OutboxError> {
        self.acked.set(self.acked.get().max(seq));
        self.recover_if_damaged();
        self.record_acks()?;
        self.catch_up();
        Ok(())
    }

    /// Writes the acknowledgements the disk does not have yet.
    fn record_acks(&mut self) -> Result<(), OutboxError> {
        let upto = self.acked.get();
        if self.recorded >= upto {
            return Ok(());
        }
        let result = self.write(|tx| {
            tx.execute("UPDATE events SET delivered = 1 WHERE delivered = 0 AND seq <= ?1", [upto])?;
            tx.execute("DELETE FROM snapshots WHERE seq <= ?1", [upto])?;
            tx.execute("DELETE FROM clips WHERE seq <= ?1", [upto])?;
            tx.execute("DELETE FROM events WHERE delivered = 1 AND seq <= ?1", [upto.saturating_sub(HISTORY)])?;
            Ok(())
        });
        if result.is_ok() {
            self.recorded = upto;
        }
        self.health().acks_unrecorded = self.recorded < upto;
        result
    }

    /// How many events wait for the broker.
    pub fn pending_count(&self) -> Result<u64, OutboxError> {
        self.conn
            .query_row("SELECT COUNT(*) FROM events WHERE delivered = 0 AND seq > ?1", [self.acked.get()], |r| r.get(0))
            .map_err(|e| self.read_failed(e))
    }

    /// When the oldest pending event was stored, if any waits.
    pub fn oldest_pending_at(&self) -> Result<Option<SystemTime>, OutboxError> {
        let ms: Option<i64> = self
            .conn
            .query_row("SELECT MIN(created_ms) FROM events WHERE delivered = 0 AND seq > ?1", [self.acked.get()], |r| {
                r.get(0)
            })
            .map_err(|e| self.read_failed(e))?;
        Ok(ms.map(|ms| UNIX_EPOCH + std::time::Duration::from_millis(ms.max(0) as u64)))
    }

    /// Bytes the store holds on disk now (what the budget limits): the database's
    /// pages in use, its write-ahead log and the log's index.
    pub fn used_bytes(&self) -> Result<u64, OutboxError> {
        used_bytes(&self.conn, &self.path).map_err(|e| self.err(e))
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
    /// seen). Returns the ended events' messages; an `end` that cannot be stored now
    /// waits (see `push`), and one whose record cannot be read is skipped, logged.
    pub fn end_orphans(&mut self) -> Result<Vec<EventMessage>, OutboxError> {
        let rows: Vec<String> = {
            let mut stmt = self.conn.prepare("SELECT last_message FROM open_events").map_err(|e| self.err(e))?;
            let rows = stmt.query_map([], |r| r.get(0)).map_err(|e| self.err(e))?;
            rows.collect::<Result<_, _>>().map_err(|e| self.err(e))?
        };
        Ok(self.end_all(rows))
    }

    /// Gives each event whose last message is in `rows` its `end`; returns those stored.
    fn end_all(&mut self, rows: Vec<String>) -> Vec<EventMessage> {
        let mut ended = Vec::with_capacity(rows.len());
        for row in rows {
            let mut message: EventMessage = match serde_json::from_str(&row) {
                Ok(m) => m,
                Err(e) => {
                    warn!("outbox: an open event's record cannot be read ({e}); it gets no end");
                    continue;
                }
            };
            message.event_type = EventType::End;
            message.ended_at = Some(message.at.clone());
            match self.push(Outgoing { message: message.clone(), snapshot_jpeg: None, clip_mp4: None }) {
                Ok(seq) => {
                    message.seq = seq;
                    ended.push(message);
                }
                Err(e) => warn!(camera = %message.camera, event = %message.event_id, "{e}"),
            }
        }
        ended
    }

    /// Moves the database aside if a read or write found it damaged.
    fn recover_if_damaged(&mut self) {
        if self.damaged.replace(false) {
            match self.start_afresh("SQLite reports the file damaged") {
                // The pipeline ended these already, but their ends were lost with the
                // damage: the desk still gets one each.
                Ok(unended) => {
                    let ended = self.end_all(unended);
                    if !ended.is_empty() {
                        warn!(events = ended.len(), "outbox: events whose end was lost with the damage were ended");
                    }
                }
                Err(e) => error!("outbox: {e}"),
            }
        }
    }

    /// Moves a damaged database aside (kept under a recovery name) and starts a new
    /// one in its place, with what can still be read: the pending events (without
    /// their pictures, which cannot be trusted), the open events and `seq`. Events the
    /// salvage has a `new` or `update` of but no `end` are recorded as open (so a start
    /// ends them); those the damaged file did not list as open are returned.
    fn start_afresh(&mut self, report: &str) -> Result<Vec<String>, OutboxError> {
        let salvage = Salvage::read(&self.conn, self.acked.get());
        let (seq_before, evictions) = (self.last_seq, std::mem::take(&mut self.evictions));
        let placeholder = Connection::open_in_memory().map_err(|e| self.err(e))?;
        drop(std::mem::replace(&mut self.conn, placeholder));
        let path = self.path.clone();
        let damaged = |why: String| OutboxError::Damaged { path: path.clone(), report: report.to_owned(), why };
        let aside = move_aside(&self.path).map_err(|e| damaged(format!("cannot move it aside: {e}")))?;
        self.conn = Connection::open(&self.path).map_err(|e| damaged(e.to_string()))?;
        match self.prepare() {
            Ok(()) => {}
            Err(Prepare::Damaged(r)) => return Err(damaged(format!("the new one fails its check too: {r}"))),
            Err(Prepare::Failed(e)) => return Err(damaged(e.to_string())),
        }
        // seq goes on: from what could be read or is known, else from the clock (a
        // jump the desk sees as a gap, never a step back).
        let known = salvage.last_seq.or((seq_before > 0).then_some(seq_before));
        let seq = known.unwrap_or_else(|| unix_ms(SystemTime::now()) as u64 / 1000 * 1000);
        self.last_seq = seq_before.max(seq);
        self.acked.set(0);
        self.recorded = 0;
        self.evictions = evictions;
        self.health().evictions = self.evictions.clone();
        let kept = salvage.events.len();
        let (last_seq, evictions) = (self.last_seq, self.evictions.clone());
        let restored = self.write(|tx| salvage.restore(tx, last_seq, &evictions));
        if let Err(e) = restored {
            error!("outbox: the new outbox cannot take what was read from the damaged one: {e}");
        }
        self.health().damaged_file = Some(aside.clone());
        error!(
            damaged = %aside.display(),
            pending_kept = kept,
            "outbox: the database was damaged ({report}); it was moved aside for recovery and a new outbox started \
             (pending events that could be read go on without their pictures; seq goes on from {})",
            self.last_seq
        );
        Ok(salvage
            .unended()
            .into_iter()
            .filter(|(id, _)| !salvage.open.iter().any(|(o, _)| o == id))
            .map(|(_, m)| m)
            .collect())
    }
}

/// Why `prepare` failed.
enum Prepare {
    /// The quick check or SQLite itself says the file is damaged.
    Damaged(String),
    Failed(rusqlite::Error),
}

impl From<rusqlite::Error> for Prepare {
    fn from(e: rusqlite::Error) -> Prepare {
        if is_damage(&e) { Prepare::Damaged(e.to_string()) } else { Prepare::Failed(e) }
    }
}

/// A pending row as stored.
struct StoredRow {
    seq: u64,
    camera: String,
    payload: String,
    snapshot: Option<(String, Vec<u8>)>,
    sha256: Option<String>,
    clip: Option<(String, Vec<u8>)>,
    clip_sha256: Option<String>,
    created_ms: i64,
}

/// What an event may carry beside its JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Attachment {
    Snapshot,
    Clip,
}

impl Attachment {
    fn table(self) -> &'static str {
        match self {
            Attachment::Snapshot => "snapshots",
            Attachment::Clip => "clips",
        }
    }
    /// The event field naming it.
    fn field(self) -> &'static str {
        match self {
            Attachment::Snapshot => "snapshot",
            Attachment::Clip => "clip",
        }
    }
}

/// What could be read from a damaged database.
#[derive(Default)]
struct Salvage {
    last_seq: Option<u64>,
    /// (seq, created_ms, camera, payload) of pending events.
    events: Vec<(u64, i64, String, String)>,
    open: Vec<(String, String)>,
}

impl Salvage {
    /// Reads what it can; every part on its own, stopping at the first bad row.
    fn read(conn: &Connection, acked: u64) -> Salvage {
        let mut s = Salvage::default();
        let meta = last_seq(conn).ok().filter(|&n| n > 0);
        let max: Option<u64> = conn.query_row("SELECT MAX(seq) FROM events", [], |r| r.get(0)).ok().flatten();
        s.last_seq = meta.max(max);
        if let Ok(mut stmt) = conn.prepare(
            // The table alone, in rowid order: an index may be what is damaged.
            "SELECT seq, created_ms, camera, payload FROM events NOT INDEXED
                 WHERE delivered = 0 AND seq > ?1 ORDER BY seq",
        ) && let Ok(rows) = stmt.query_map([acked], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        {
            s.events = rows.map_while(Result::ok).collect();
        }
        if let Ok(mut stmt) = conn.prepare("SELECT event_id, last_message FROM open_events")
            && let Ok(rows) = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        {
            s.open = rows.map_while(Result::ok).collect();
        }
        // A row whose payload is no longer JSON cannot be sent.
        s.events.retain(|(_, _, _, p)| serde_json::from_str::<serde::de::IgnoredAny>(p).is_ok());
        s
    }

    /// (event_id, last message) of the salvaged events that have no salvaged `end`.
    fn unended(&self) -> Vec<(String, String)> {
        let mut open: Vec<(String, String)> = Vec::new();
        for (_, _, _, payload) in &self.events {
            let Ok(m) = serde_json::from_str::<EventMessage>(payload) else { continue };
            open.retain(|(id, _)| *id != m.event_id);
            if m.event_type != EventType::End {
                open.push((m.event_id, payload.clone()));
            }
        }
        open
    }

    fn restore(&self, tx: &Transaction, last_seq: u64, evictions: &HashMap<String, Evictions>) -> rusqlite::Result<()> {
        tx.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('last_seq', ?1)", [last_seq])?;
        for (seq, created_ms, camera, payload) in &self.events {
            let payload = without(payload, Attachment::Snapshot, true).map_err(to_sql_error)?;
            let payload = without(&payload, Attachment::Clip, true).map_err(to_sql_error)?;
            tx.execute(
                "INSERT INTO events (seq, created_ms, camera, payload) VALUES (?1, ?2, ?3, ?4)",
                params![seq, created_ms, camera, payload],
            )?;
        }
        for (id, message) in self.unended().iter().chain(&self.open) {
            tx.execute(
                "INSERT OR REPLACE INTO open_events (event_id, last_message) VALUES (?1, ?2)",
                params![id, message],
            )?;
        }
        for (camera, e) in evictions {
            write_evictions(tx, camera, e)?;
        }
        Ok(())
    }
}

fn transact<R>(conn: &mut Connection, f: impl FnOnce(&Transaction) -> rusqlite::Result<R>) -> rusqlite::Result<R> {
    let tx = conn.transaction()?;
    let r = f(&tx)?;
    tx.commit()?;
    Ok(r)
}

fn last_seq(conn: &Connection) -> rusqlite::Result<u64> {
    Ok(conn.query_row("SELECT value FROM meta WHERE key = 'last_seq'", [], |r| r.get(0)).optional()?.unwrap_or(0))
}

fn open_events(tx: &Transaction) -> rusqlite::Result<u64> {
    tx.query_row("SELECT COUNT(*) FROM open_events", [], |r| r.get(0))
}

/// Adds `evicted` to the counts `known` and writes them; returns the new counts.
fn count_evictions(
    tx: &Transaction,
    known: &HashMap<String, Evictions>,
    evicted: &HashMap<String, Evictions>,
) -> rusqlite::Result<Vec<(String, Evictions)>> {
    let mut counted = Vec::new();
    for (cam, evicted) in evicted {
        let mut e = known.get(cam).copied().unwrap_or_default();
        e.snapshots += evicted.snapshots;
        e.events += evicted.events;
        e.clips += evicted.clips;
        write_evictions(tx, cam, &e)?;
        counted.push((cam.clone(), e));
    }
    Ok(counted)
}

fn write_evictions(tx: &Transaction, camera: &str, e: &Evictions) -> rusqlite::Result<usize> {
    tx.execute(
        "INSERT OR REPLACE INTO evictions (camera, snapshots, events, clips) VALUES (?1, ?2, ?3, ?4)",
        params![camera, e.snapshots, e.events, e.clips],
    )
}

/// The event's row, its picture and clip with their hashes, and the open-events record.
fn insert_event(
    tx: &Transaction,
    seq: u64,
    m: &EventMessage,
    payload: &str,
    jpeg: Option<&[u8]>,
    mp4: Option<&[u8]>,
) -> rusqlite::Result<()> {
    tx.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('last_seq', ?1)", params![seq])?;
    tx.execute(
        "INSERT INTO events (seq, created_ms, camera, payload) VALUES (?1, ?2, ?3, ?4)",
        params![seq, unix_ms(SystemTime::now()), m.camera, payload],
    )?;
    if let (Some(s), Some(jpeg)) = (&m.snapshot, jpeg) {
        tx.execute(
            "INSERT INTO snapshots (seq, topic, jpeg, sha256) VALUES (?1, ?2, ?3, ?4)",
            params![seq, s.topic, jpeg, hex(&Sha256::digest(jpeg))],
        )?;
    }
    if let (Some(c), Some(mp4)) = (&m.clip, mp4) {
        tx.execute(
            "INSERT INTO clips (seq, topic, mp4, sha256) VALUES (?1, ?2, ?3, ?4)",
            params![seq, c.topic, mp4, hex(&Sha256::digest(mp4))],
        )?;
    }
    match m.event_type {
        EventType::End => tx.execute("DELETE FROM open_events WHERE event_id = ?1", params![m.event_id]),
        EventType::New | EventType::Update => tx.execute(
            "INSERT OR REPLACE INTO open_events (event_id, last_message) VALUES (?1, ?2)",
            params![m.event_id, payload],
        ),
    }?;
    Ok(())
}

/// What `make_room` did.
#[derive(Default)]
struct Room {
    evicted: HashMap<String, Evictions>,
    /// Even with every other clip gone the new one does not fit.
    drop_own_clip: bool,
    /// Even with every other clip and picture gone the new picture does not fit.
    drop_own_snapshot: bool,
}

/// The bytes of the new event's own clip and picture (0: none).
#[derive(Clone, Copy)]
struct Own {
    clip: u64,
    snapshot: u64,
}

/// Frees pages until `need` more bytes fit within `budget`: delivered history (and
/// what the broker has though the disk did not record it) first, then pending clips
/// oldest first (the new event's own last), then pending snapshots likewise, then
/// pending events other than `end`s, oldest first.
fn make_room(tx: &Transaction, path: &Path, budget: u64, need: u64, own: Own, acked: u64) -> rusqlite::Result<Room> {
    let mut room = Room::default();
    let mut need = need;
    while used_bytes(tx, path)? + need > budget {
        // History is cheap to lose: go in batches. What the broker has though the
        // disk did not record it yet is history too.
        if tx.execute("DELETE FROM snapshots WHERE seq <= ?1", [acked])?
            + tx.execute("DELETE FROM clips WHERE seq <= ?1", [acked])?
            > 0
        {
            continue;
        }
        if tx.execute(
            "DELETE FROM events WHERE seq IN
                 (SELECT seq FROM events WHERE delivered = 1 OR seq <= ?1 ORDER BY seq LIMIT 64)",
            [acked],
        )? > 0
        {
            continue;
        }
        if let Some(camera) = evict_oldest(tx, Attachment::Clip)? {
            room.evicted.entry(camera).or_default().clips += 1;
            continue;
        }
        if own.clip > 0 && !room.drop_own_clip {
            room.drop_own_clip = true;
            need -= own.clip;
            continue;
        }
        if let Some(camera) = evict_oldest(tx, Attachment::Snapshot)? {
            room.evicted.entry(camera).or_default().snapshots += 1;
            continue;
        }
        if own.snapshot > 0 && !room.drop_own_snapshot {
            room.drop_own_snapshot = true;
            need -= own.snapshot;
            continue;
        }
        // An `end` stays: its `new` may have gone out already, and if not, the `end`
        // alone still tells the desk the event happened (the gap says what was lost).
        // Updates go before news: a `new` is what opens the event at the desk.
        let oldest_event: Option<(u64, String)> = tx
            .query_row(
                "SELECT seq, camera FROM events
                 WHERE delivered = 0 AND json_extract(payload, '$.type') <> 'end'
                 ORDER BY json_extract(payload, '$.type') = 'new', seq LIMIT 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
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

/// Drops the oldest pending `what` (the event then says it was evicted); returns its
/// camera, or `None` when there is none.
fn evict_oldest(tx: &Transaction, what: Attachment) -> rusqlite::Result<Option<String>> {
    let oldest: Option<(u64, String, String)> = tx
        .query_row(
            &format!(
                "SELECT a.seq, e.camera, e.payload FROM {} a JOIN events e USING (seq) ORDER BY a.seq LIMIT 1",
                what.table()
            ),
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .optional()?;
    let Some((seq, camera, payload)) = oldest else { return Ok(None) };
    let payload = without(&payload, what, false).map_err(to_sql_error)?;
    tx.execute(&format!("DELETE FROM {} WHERE seq = ?1", what.table()), params![seq])?;
    tx.execute("UPDATE events SET payload = ?2 WHERE seq = ?1", params![seq, payload])?;
    warn!(camera = %camera, seq, "storage budget reached: {} dropped, its event goes without it", what.field());
    Ok(Some(camera))
}

/// Bytes the store holds: the database's pages in use (not what the file once grew
/// to: free pages are used again first), plus its log and the log's index on disk.
fn used_bytes(conn: &Connection, path: &Path) -> rusqlite::Result<u64> {
    let pragma = |name: &str| conn.query_row(&format!("PRAGMA {name}"), [], |r| r.get::<_, u64>(0));
    let pages = (pragma("page_count")? - pragma("freelist_count")?) * pragma("page_size")?;
    let log: u64 = companions(path)[1..].iter().map(|p| std::fs::metadata(p).map_or(0, |m| m.len())).sum();
    Ok(pages + log)
}

/// The database file, its write-ahead log and the log's shared-memory index.
fn companions(path: &Path) -> [PathBuf; 3] {
    let with = |suffix: &str| {
        let mut p = path.as_os_str().to_owned();
        p.push(suffix);
        PathBuf::from(p)
    };
    [path.to_owned(), with("-wal"), with("-shm")]
}

/// Renames the database and its companions to `<name>.damaged-<unix seconds>` (the log
/// keeps its suffix after that name, so SQLite finds it when the copy is opened).
fn move_aside(path: &Path) -> std::io::Result<PathBuf> {
    let stamp = unix_ms(SystemTime::now()) / 1000;
    let mut aside = path.as_os_str().to_owned();
    aside.push(format!(".damaged-{stamp}"));
    let aside = PathBuf::from(aside);
    for (from, to) in companions(path).iter().zip(companions(&aside)) {
        match std::fs::rename(from, &to) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && from != path => {}
            Err(e) => return Err(e),
        }
    }
    Ok(aside)
}

/// Bytes free for this process on the disk that holds `path`.
pub fn disk_free(path: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let dir = path.parent()?;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    // SAFETY: statvfs writes only into the struct we pass; the path is NUL-terminated.
    let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: as above: `c` outlives the call and `s` is ours to fill.
    if unsafe { libc::statvfs(c.as_ptr(), &mut s) } != 0 {
        return None;
    }
    #[allow(clippy::useless_conversion)] // the field types differ between platforms
    Some(u64::from(s.f_bavail).saturating_mul(u64::from(s.f_frsize)))
}

fn to_sql_error(e: serde_json::Error) -> rusqlite::Error {
    rusqlite::Error::ToSqlConversionFailure(e.into())
}

/// The event JSON with its snapshot or clip gone, saying so (the contract adds the
/// fields): `snapshot_evicted` (`clip_evicted`), and `snapshot_damaged`
/// (`clip_damaged`) when the stored bytes were damaged. Unchanged when it had none.
fn without(payload: &str, what: Attachment, damaged: bool) -> Result<String, serde_json::Error> {
    let mut v: serde_json::Value = serde_json::from_str(payload)?;
    let field = what.field();
    if let Some(o) = v.as_object_mut()
        && o.get(field).is_some_and(|f| !f.is_null())
    {
        o.insert(field.into(), serde_json::Value::Null);
        o.insert(format!("{field}_evicted"), serde_json::Value::Bool(true));
        if damaged {
            o.insert(format!("{field}_damaged"), serde_json::Value::Bool(true));
        }
    }
    serde_json::to_string(&v)
}

/// The outbox as the analysis threads (writers) and the publisher share it.
#[derive(Clone)]
pub struct SharedOutbox {
    outbox: Arc<Mutex<Outbox>>,
    health: Arc<Mutex<OutboxHealth>>,
}

impl SharedOutbox {
    pub fn new(outbox: Outbox) -> SharedOutbox {
        let health = outbox.health.clone();
        SharedOutbox { outbox: Arc::new(Mutex::new(outbox)), health }
    }

    /// Runs `f` on the outbox; blocks (SQLite, fsync): call it from a thread that may.
    pub fn with<R>(&self, f: impl FnOnce(&mut Outbox) -> R) -> R {
        // A panic elsewhere while holding the lock leaves SQLite consistent (every
        // change is one transaction), so the outbox stays usable.
        f(&mut self.outbox.lock().unwrap_or_else(|poisoned| poisoned.into_inner()))
    }

    /// Runs `f` on the outbox from async code, on tokio's blocking pool.
    pub async fn with_async<R: Send + 'static>(&self, f: impl FnOnce(&mut Outbox) -> R + Send + 'static) -> R {
        let this = self.clone();
        match tokio::task::spawn_blocking(move || this.with(f)).await {
            Ok(r) => r,
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        }
    }

    /// How the outbox is doing; never waits for SQLite. A damaged file moved aside is
    /// reported while the moved file is still there.
    pub fn health(&self) -> OutboxHealth {
        let mut h = self.health.lock().unwrap_or_else(|p| p.into_inner()).clone();
        h.damaged_file = h.damaged_file.filter(|p| p.exists());
        h
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
                clip: None,
            },
            snapshot_jpeg: with_snapshot.then(|| vec![1, 2, 3]),
            clip_mp4: None,
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
    fn updates_are_evicted_before_the_new_that_opened_their_event() {
        let dir = tempdir("updates-first");
        let ob = Outbox::open(&dir).unwrap();
        let base = ob.used_bytes().unwrap();
        let mut ob = ob.with_budget(base + 20_000);
        ob.push(outgoing(false)).unwrap();
        let mut update = outgoing(false);
        update.message.event_type = EventType::Update;
        for _ in 0..199 {
            ob.push(update.clone()).unwrap();
        }
        assert!(ob.evictions().get("c").unwrap().events > 20, "{:?}", ob.evictions());
        let first = ob.oldest().unwrap().unwrap();
        let v: serde_json::Value = serde_json::from_str(&first.payload).unwrap();
        assert_eq!((first.seq, v["type"].as_str()), (1, Some("new")), "the event's new is kept");
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

    /// Makes every write fail as a full disk does (`query_only`), or lets them work.
    fn fail_writes(ob: &Outbox, fail: bool) {
        ob.conn.pragma_update(None, "query_only", fail).unwrap();
    }

    #[test]
    fn a_failed_write_never_sends_what_the_broker_has_again() {
        let dir = tempdir("ack-fails");
        let mut ob = Outbox::open(&dir).unwrap();
        for _ in 0..3 {
            ob.push(outgoing(true)).unwrap();
        }
        fail_writes(&ob, true);
        assert!(ob.ack(1).is_err(), "the write fails");
        assert_eq!(ob.oldest().unwrap().unwrap().seq, 2, "seq 1 is not handed out again");
        assert_eq!(ob.pending_count().unwrap(), 2);
        let h = ob.health_view();
        assert!(h.write_error.is_some() && h.acks_unrecorded && h.failing_since.is_some(), "{h:?}");
        assert!(ob.ack(2).is_err());
        assert_eq!(ob.oldest().unwrap().unwrap().seq, 3);
        assert!(!ob.retry(), "still failing");
        fail_writes(&ob, false);
        assert!(ob.retry(), "the acknowledgements are written once writes work");
        let h = ob.health_view();
        assert!(h.write_error.is_none() && !h.acks_unrecorded && h.write_errors >= 3, "{h:?}");
        drop(ob);
        let ob = Outbox::open(&dir).unwrap();
        assert_eq!(ob.oldest().unwrap().unwrap().seq, 3, "the disk has them");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn an_event_that_cannot_be_stored_is_counted_leaves_a_gap_and_its_end_waits() {
        let dir = tempdir("dropped");
        let mut ob = Outbox::open(&dir).unwrap();
        assert_eq!(ob.push(outgoing(true)).unwrap(), 1);
        fail_writes(&ob, true);
        let mut update = outgoing(false);
        update.message.event_type = EventType::Update;
        assert!(ob.push(update).is_err());
        let mut end = outgoing(false);
        end.message.event_type = EventType::End;
        assert!(matches!(ob.push(end), Err(OutboxError::EndWaits { .. })));
        let h = ob.health_view();
        assert_eq!((h.events_dropped.get("c"), h.ends_waiting), (Some(&1), 1), "{h:?}");
        fail_writes(&ob, false);
        let mut other = outgoing(false);
        other.message.event_id = "01OTHER".into();
        assert_eq!(ob.push(other).unwrap(), 4, "the waiting end goes first (3); 2 stays a gap");
        let stored: Vec<(u64, EventType)> =
            ob.recent(None, 0, 10).unwrap().iter().map(|e| (e.seq, e.event_type)).collect();
        assert_eq!(stored, vec![(1, EventType::New), (3, EventType::End), (4, EventType::New)]);
        assert_eq!(ob.health_view().ends_waiting, 0);
        drop(ob);
        let mut ob = Outbox::open(&dir).unwrap();
        let ended: Vec<String> = ob.end_orphans().unwrap().into_iter().map(|e| e.event_id).collect();
        assert_eq!(ended, vec!["01OTHER".to_owned()], "01TEST got its end");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Bytes of the database, its log and the log's index on disk.
    fn on_disk(dir: &Path) -> u64 {
        companions(&dir.join(Outbox::FILE_NAME)).iter().map(|p| std::fs::metadata(p).map_or(0, |m| m.len())).sum()
    }

    #[test]
    fn the_budget_holds_on_disk_with_the_log_and_keeps_room_for_ends() {
        let dir = tempdir("on-disk");
        let ob = Outbox::open(&dir).unwrap();
        let budget = ob.used_bytes().unwrap() + 600_000;
        let mut ob = ob.with_budget(budget);
        let mut most = 0;
        for i in 0..40 {
            let mut new = big("c", 60_000);
            new.message.event_id = format!("01E{i}");
            ob.push(new).unwrap();
            most = most.max(on_disk(&dir));
        }
        // The file may hold pages freed by evictions, used again before it grows.
        assert!(most <= budget + 120_000, "{most} bytes on disk for a budget of {budget}");
        assert!(ob.used_bytes().unwrap() <= budget);
        let before = *ob.evictions().get("c").unwrap();
        assert!(before.snapshots > 0 && before.events == 0, "{before:?}");
        for i in 0..40 {
            let mut end = outgoing(false);
            end.message.event_id = format!("01E{i}");
            end.message.event_type = EventType::End;
            ob.push(end).unwrap();
        }
        assert_eq!(ob.evictions().get("c"), Some(&before), "room for the ends was kept: they evicted nothing");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_picture_damaged_on_disk_is_not_sent() {
        let dir = tempdir("sha");
        let mut ob = Outbox::open(&dir).unwrap();
        ob.push(outgoing(true)).unwrap();
        ob.conn.execute("UPDATE snapshots SET jpeg = zeroblob(3)", []).unwrap();
        let p = ob.oldest().unwrap().unwrap();
        assert_eq!((p.seq, p.snapshot), (1, None));
        let v: serde_json::Value = serde_json::from_str(&p.payload).unwrap();
        assert_eq!(
            (v["snapshot"].clone(), v["snapshot_evicted"].clone(), v["snapshot_damaged"].clone()),
            (serde_json::Value::Null, true.into(), true.into())
        );
        assert_eq!(ob.oldest().unwrap().unwrap().payload, p.payload, "the same message again");
        assert_eq!(ob.health_view().snapshots_damaged.get("c"), Some(&1), "counted once");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_damaged_database_is_moved_aside_and_a_new_one_goes_on() {
        let dir = tempdir("damaged");
        let mut ob = Outbox::open(&dir).unwrap();
        for _ in 0..300 {
            ob.push(outgoing(false)).unwrap();
        }
        drop(ob);
        let file = dir.join(Outbox::FILE_NAME);
        let mut bytes = std::fs::read(&file).unwrap();
        let mid = bytes.len() / 2;
        let mut x: u32 = 0x9e37_79b9;
        for b in &mut bytes[mid..mid + 4096] {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            *b = x as u8;
        }
        std::fs::write(&file, bytes).unwrap();

        let mut ob = Outbox::open(&dir).expect("a damaged outbox does not stop the daemon");
        let aside = ob.health_view().damaged_file.expect("the damaged file is moved aside");
        assert!(aside.exists() && aside.to_string_lossy().contains(".damaged-"), "{}", aside.display());
        assert!(ob.pending_count().unwrap() > 0, "readable pending events are kept");
        assert!(ob.push(outgoing(false)).unwrap() > 300, "seq goes on");
        assert!(ob.oldest().unwrap().is_some());
        drop(ob);
        let ob = Outbox::open(&dir).unwrap();
        assert!(ob.health_view().damaged_file.is_none(), "the new outbox is sound");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn damage_found_while_running_moves_the_file_aside_and_goes_on() {
        let dir = tempdir("damaged-live");
        let mut ob = Outbox::open(&dir).unwrap();
        ob.push(outgoing(true)).unwrap();
        ob.damaged.set(true); // what a read that met SQLITE_CORRUPT leaves
        assert!(ob.retry());
        let aside = ob.health_view().damaged_file.expect("moved aside");
        assert!(aside.exists(), "{}", aside.display());
        let p = ob.oldest().unwrap().unwrap();
        assert_eq!((p.seq, p.snapshot), (1, None), "the pending event is kept, without its picture");
        let mut end = outgoing(false);
        end.message.event_type = EventType::End;
        assert_eq!(ob.push(end).unwrap(), 2, "seq goes on");
        drop(ob);
        let mut ob = Outbox::open(&dir).unwrap();
        assert!(ob.end_orphans().unwrap().is_empty(), "the new outbox knew the event was open, and closed it");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_hint_fits_the_error() {
        let full = rusqlite::Error::SqliteFailure(rusqlite::ffi::Error::new(13), None);
        let damaged = rusqlite::Error::SqliteFailure(rusqlite::ffi::Error::new(11), None);
        let denied = rusqlite::Error::SqliteFailure(rusqlite::ffi::Error::new(8), None);
        assert!(hint(&full).contains("disk is full") && !hint(&full).contains("aside"));
        assert!(hint(&denied).contains("may write") && !hint(&denied).contains("aside"));
        assert!(hint(&damaged).contains("aside"));
    }
}
