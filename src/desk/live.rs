//! Changes as they are stored, for the console's live views (server-sent events).
//!
//! Promises: sending never blocks; a browser that falls behind misses changes, not
//! data (it reloads what it shows from the store).

use serde::Serialize;
use tokio::sync::broadcast;

#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Change {
    Site {
        site: String,
    },
    Event {
        site: String,
        event_id: String,
    },
    Incident {
        site: String,
        event_id: String,
    },
    /// A notice was sent, ended, or a receipt for it came.
    Notice {
        notice_id: String,
    },
}

#[derive(Clone)]
pub struct Live {
    tx: broadcast::Sender<Change>,
}

impl Live {
    pub fn new() -> Live {
        Live { tx: broadcast::channel(1024).0 }
    }

    pub fn send(&self, change: Change) {
        let _ = self.tx.send(change);
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Change> {
        self.tx.subscribe()
    }
}
