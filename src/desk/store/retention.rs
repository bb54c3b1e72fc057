//! Keeps the desk's storage within `storage.max_bytes` and `storage.keep_days`.
//!
//! Promises: past `keep_days` everything of an event goes (pictures, clips, rows);
//! over `max_bytes` clips go first, then pictures, oldest first, and rows only when no
//! file is left. A file on disk is removed only when no row refers to it any more.
//! The audit log is kept.

use rusqlite::{Connection, params};

use super::{Store, now_ms};

const BATCH: i64 = 200;

impl Store {
    /// One retention pass; returns how many files and event rows it removed.
    pub fn retain(&self, max_bytes: u64, keep_days: u32) -> anyhow::Result<(usize, usize)> {
        let cutoff = now_ms() - keep_days as i64 * 86_400_000;
        let mut files = 0;
        loop {
            match self.drop_files("received_at < ?1", cutoff)? {
                0 => break,
                n => files += n,
            }
        }
        let mut rows = self.drop_rows(cutoff)?;
        while self.used_bytes()? > max_bytes {
            // A batch at a time, measuring again after each: clips, then pictures, then rows.
            let n = match self.drop_files("kind = 'clip'", i64::MAX)? {
                0 => self.drop_files("1", i64::MAX)?,
                n => n,
            };
            files += n;
            if n == 0 {
                let dropped = self.drop_oldest_rows()?;
                rows += dropped;
                if dropped == 0 {
                    break;
                }
            }
        }
        Ok((files, rows))
    }

    /// Bytes of stored files plus the database itself.
    pub fn used_bytes(&self) -> anyhow::Result<u64> {
        let files: i64 =
            self.with(|c| Ok(c.query_row("SELECT coalesce(sum(bytes), 0) FROM files", [], |r| r.get(0))?))?;
        let db: u64 = ["desk.sqlite", "desk.sqlite-wal"]
            .iter()
            .filter_map(|f| std::fs::metadata(self.dir.join(f)).ok())
            .map(|m| m.len())
            .sum();
        Ok(files as u64 + db)
    }

    /// Evicts up to a batch of the oldest files matching `cond` (with `?1` bound to
    /// `arg`); returns how many it evicted. A file on disk goes with its last row.
    fn drop_files(&self, cond: &str, arg: i64) -> anyhow::Result<usize> {
        let (evicted, gone): (usize, Vec<String>) = self.with(|c| {
            let tx = c.transaction()?;
            let sql = format!(
                "SELECT id, path FROM files WHERE ({cond}) AND path IS NOT NULL AND ?1 = ?1 ORDER BY id LIMIT {BATCH}"
            );
            let picked: Vec<(i64, String)> =
                tx.prepare(&sql)?.query_map([arg], |r| Ok((r.get(0)?, r.get(1)?)))?.collect::<Result<_, _>>()?;
            let mut gone = Vec::new();
            let evicted = picked.len();
            for (id, path) in picked {
                tx.execute("UPDATE files SET path = NULL, bytes = 0, status = 'evicted' WHERE id = ?1", [id])?;
                if unreferenced(&tx, &path)? {
                    gone.push(path);
                }
            }
            tx.commit()?;
            Ok((evicted, gone))
        })?;
        for p in &gone {
            let _ = std::fs::remove_file(self.files_dir().join(p));
        }
        Ok(evicted)
    }

    fn drop_rows(&self, cutoff: i64) -> anyhow::Result<usize> {
        self.with(|c| {
            let tx = c.transaction()?;
            let n = delete_events(&tx, "received_at < ?1", cutoff)?;
            tx.execute("DELETE FROM camera_changes WHERE at < ?1", [cutoff])?;
            tx.execute("DELETE FROM device_notes WHERE at < ?1", [cutoff])?;
            tx.execute("DELETE FROM stats WHERE received_at < ?1", [cutoff])?;
            tx.commit()?;
            Ok(n)
        })
    }

    fn drop_oldest_rows(&self) -> anyhow::Result<usize> {
        self.with(|c| {
            let tx = c.transaction()?;
            let edge: Option<i64> = tx.query_row(
                &format!("SELECT max(id) FROM (SELECT id FROM events ORDER BY id LIMIT {BATCH})"),
                [],
                |r| r.get(0),
            )?;
            let n = match edge {
                Some(edge) => delete_events(&tx, "id <= ?1", edge)?,
                None => 0,
            };
            tx.commit()?;
            Ok(n)
        })
    }
}

fn unreferenced(c: &Connection, path: &str) -> rusqlite::Result<bool> {
    c.query_row("SELECT count(*) = 0 FROM files WHERE path = ?1", [path], |r| r.get(0))
}

/// Deletes events matching `cond` with their messages, incidents and file rows.
fn delete_events(c: &Connection, cond: &str, arg: i64) -> anyhow::Result<usize> {
    let picked: Vec<(String, String)> = c
        .prepare(&format!("SELECT site, event_id FROM events WHERE {cond}"))?
        .query_map([arg], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<_, _>>()?;
    for (site, id) in &picked {
        for table in ["messages", "incidents", "incident_log"] {
            c.execute(&format!("DELETE FROM {table} WHERE site = ?1 AND event_id = ?2"), params![site, id])?;
        }
        c.execute("DELETE FROM files WHERE site = ?1 AND event_id = ?2 AND path IS NULL", params![site, id])?;
        c.execute("DELETE FROM events WHERE site = ?1 AND event_id = ?2", params![site, id])?;
    }
    Ok(picked.len())
}
