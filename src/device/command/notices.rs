//! The notices this grid point has received, kept in `notices.json` in the storage
//! folder, with when each was received and played.
//!
//! Promises: a notice id is taken once (a retained notice that comes again at every
//! connect is not stored or played again); a play is written down as started before
//! the player runs, so a restart in the middle never plays it twice (it is reported
//! as interrupted instead); an expired notice is never handed out to play; the file
//! holds at most [`KEEP`] notices, and forgets one a week after it expired.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use tracing::warn;

use super::parse::{Notice, rfc3339};
use crate::contract::{NOTICE_RECEIPT_SCHEMA, NoticeLevel, NoticeReceipt, timestamp};

pub const FILE_NAME: &str = "notices.json";
/// Most notices kept; the oldest go first.
const KEEP: usize = 200;
/// How long an expired notice is remembered (so a stale retained copy is not news).
const REMEMBER: Duration = Duration::from_secs(7 * 24 * 3600);

/// One received notice, as `gridwatch notices` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredNotice {
    pub notice_id: String,
    pub level: NoticeLevel,
    pub text: String,
    pub expires_at: String,
    pub received_at: String,
    #[serde(default)]
    pub play_started_at: Option<String>,
    #[serde(default)]
    pub played_at: Option<String>,
    #[serde(default)]
    pub error: Option<String>,
}

impl StoredNotice {
    pub fn expires(&self) -> SystemTime {
        rfc3339(&self.expires_at).unwrap_or(SystemTime::UNIX_EPOCH)
    }

    pub fn expired(&self, now: SystemTime) -> bool {
        self.expires() <= now
    }

    pub fn receipt(&self, site: &str) -> NoticeReceipt {
        NoticeReceipt {
            schema: NOTICE_RECEIPT_SCHEMA.into(),
            notice_id: self.notice_id.clone(),
            site: site.to_owned(),
            received_at: self.received_at.clone(),
            played_at: self.played_at.clone(),
            error: self.error.clone(),
        }
    }
}

/// The notices, in the order received.
#[derive(Debug)]
pub struct NoticeBook {
    file: PathBuf,
    notices: Vec<StoredNotice>,
}

impl NoticeBook {
    /// Loads the book kept in `dir`; plays a stop interrupted are marked as such.
    pub fn load(dir: &Path) -> NoticeBook {
        let file = dir.join(FILE_NAME);
        let mut notices = match read(dir) {
            Ok(n) => n,
            Err(e) => {
                warn!(file = %file.display(), "notices: cannot read the stored notices: {e}; starting with none");
                Vec::new()
            }
        };
        for n in &mut notices {
            if n.play_started_at.is_some() && n.played_at.is_none() && n.error.is_none() {
                n.error = Some("gridwatch stopped while playing it; not played again".into());
            }
        }
        NoticeBook { file, notices }
    }

    pub fn all(&self) -> &[StoredNotice] {
        &self.notices
    }

    /// Takes `notice` if its id is new; returns the stored copy to answer with.
    pub fn receive(&mut self, notice: &Notice, now: SystemTime) -> Option<StoredNotice> {
        if self.notices.iter().any(|n| n.notice_id == notice.id) {
            return None;
        }
        let expired = notice.expires_at <= now;
        let stored = StoredNotice {
            notice_id: notice.id.clone(),
            level: notice.level,
            text: notice.text.clone(),
            expires_at: timestamp(notice.expires_at),
            received_at: timestamp(now),
            play_started_at: None,
            played_at: None,
            error: expired.then(|| "expired before it arrived; not played".to_owned()),
        };
        self.notices.push(stored.clone());
        self.forget_old(now);
        self.save();
        Some(stored)
    }

    /// The next notice to play, marked as started (and stored so) before it is returned.
    pub fn start_next(&mut self, now: SystemTime) -> Option<StoredNotice> {
        let n =
            self.notices.iter_mut().find(|n| n.play_started_at.is_none() && n.error.is_none() && !n.expired(now))?;
        n.play_started_at = Some(timestamp(now));
        let n = n.clone();
        self.save();
        Some(n)
    }

    /// Records how a play ended; returns the notice for its receipt.
    pub fn finished(&mut self, id: &str, result: Result<SystemTime, String>) -> Option<StoredNotice> {
        let n = self.notices.iter_mut().find(|n| n.notice_id == id)?;
        match result {
            Ok(at) => n.played_at = Some(timestamp(at)),
            Err(e) => n.error = Some(e),
        }
        let n = n.clone();
        self.save();
        Some(n)
    }

    /// Notices that are still current (their receipts stay published).
    pub fn current(&self, now: SystemTime) -> Vec<StoredNotice> {
        self.notices.iter().filter(|n| !n.expired(now)).cloned().collect()
    }

    fn forget_old(&mut self, now: SystemTime) {
        self.notices.retain(|n| n.expires() + REMEMBER > now);
        let extra = self.notices.len().saturating_sub(KEEP);
        self.notices.drain(..extra);
    }

    fn save(&self) {
        let json = serde_json::to_vec_pretty(&self.notices).map_err(std::io::Error::other);
        if let Err(e) = json.and_then(|j| super::write_atomically(&self.file, &j)) {
            warn!(file = %self.file.display(), "notices: cannot store the notices: {e}; a restart may take them as new");
        }
    }
}

/// Reads the book in `dir` as it is (for `gridwatch notices`); empty when absent.
pub fn read(dir: &Path) -> std::io::Result<Vec<StoredNotice>> {
    match std::fs::read(dir.join(FILE_NAME)) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(std::io::Error::other),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn notice(id: &str, expires_in: i64, now: SystemTime) -> Notice {
        let d = Duration::from_secs(expires_in.unsigned_abs());
        let expires_at = if expires_in >= 0 { now + d } else { now - d };
        Notice { id: id.into(), level: NoticeLevel::Urgent, text: "move the cars".into(), expires_at }
    }

    #[test]
    fn a_notice_is_taken_and_played_once_even_across_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let now = SystemTime::now();
        let mut book = NoticeBook::load(dir.path());
        assert!(book.receive(&notice("n1", 600, now), now).is_some());
        assert!(book.receive(&notice("n1", 600, now), now).is_none(), "the same id again");
        let old = book.receive(&notice("old", -5, now), now).unwrap();
        assert!(old.error.unwrap().contains("expired"));
        let started = book.start_next(now).unwrap();
        assert_eq!(started.notice_id, "n1");
        assert!(book.start_next(now).is_none(), "nothing else to play: the other expired");
        let done = book.finished("n1", Ok(now)).unwrap();
        assert!(done.played_at.is_some() && done.error.is_none());
        let mut again = NoticeBook::load(dir.path());
        assert!(again.start_next(now).is_none(), "played before the restart");
        assert!(again.receive(&notice("n1", 600, now), now).is_none());
        assert_eq!(again.current(now).len(), 1);
    }

    #[test]
    fn a_play_a_restart_interrupted_is_not_played_again() {
        let dir = tempfile::tempdir().unwrap();
        let now = SystemTime::now();
        let mut book = NoticeBook::load(dir.path());
        book.receive(&notice("n1", 600, now), now);
        book.start_next(now).unwrap();
        let mut after = NoticeBook::load(dir.path());
        assert!(after.start_next(now).is_none());
        assert!(after.all()[0].error.as_deref().unwrap().contains("stopped while playing"));
    }

    #[test]
    fn an_expired_notice_is_never_handed_out_and_old_ones_are_forgotten() {
        let dir = tempfile::tempdir().unwrap();
        let now = SystemTime::now();
        let mut book = NoticeBook::load(dir.path());
        book.receive(&notice("n1", 60, now), now);
        assert!(book.start_next(now + Duration::from_secs(61)).is_none());
        book.receive(&notice("n2", 3600 * 24 * 30, now), now + REMEMBER + Duration::from_secs(61));
        assert_eq!(book.all().iter().map(|n| n.notice_id.as_str()).collect::<Vec<_>>(), ["n2"]);
    }
}
