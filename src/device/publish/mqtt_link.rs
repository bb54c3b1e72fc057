//! The MQTT publisher's connection state, as `status`, the metrics and the watchdog
//! read it: connected or not and since when, the last error, deliveries, and when the
//! publisher last did anything at all.
//!
//! Promises: every method takes one short lock; writers are the publisher only.

use std::sync::Mutex;
use std::time::{Instant, SystemTime};

#[derive(Debug, Default)]
pub struct MqttLink {
    inner: Mutex<LinkInner>,
}

/// A copy of the state at one moment.
#[derive(Debug, Clone, Default)]
pub struct LinkState {
    pub connected: bool,
    /// When `connected` last changed (start time until the first attempt ends).
    pub since: Option<SystemTime>,
    pub last_error: Option<String>,
    pub connects_total: u64,
    pub delivered_total: u64,
    /// When the publisher's loop last went round; `None` before it started.
    pub last_activity: Option<Instant>,
    /// What the connections' pattern suggests is wrong (another client with this
    /// client id), while it holds.
    pub warning: Option<String>,
}

#[derive(Debug, Default)]
struct LinkInner(LinkState);

impl MqttLink {
    fn with<R>(&self, f: impl FnOnce(&mut LinkState) -> R) -> R {
        f(&mut self.inner.lock().unwrap_or_else(|p| p.into_inner()).0)
    }

    /// The publisher's loop went round (any broker packet, timer or wake-up).
    pub fn alive(&self) {
        self.with(|s| s.last_activity = Some(Instant::now()));
    }

    pub fn connected(&self) {
        self.with(|s| {
            s.connected = true;
            s.since = Some(SystemTime::now());
            s.connects_total += 1;
            s.last_activity = Some(Instant::now());
        });
    }

    /// A connection ended or could not be made.
    pub fn lost(&self, error: &str) {
        self.with(|s| {
            if s.connected || s.since.is_none() {
                s.since = Some(SystemTime::now());
            }
            s.connected = false;
            s.last_error = Some(error.to_owned());
            s.last_activity = Some(Instant::now());
        });
    }

    /// Sets or clears what the pattern of connections suggests (see `Takeovers`).
    pub fn warn(&self, warning: Option<String>) {
        self.with(|s| s.warning = warning);
    }

    /// The broker acknowledged an event.
    pub fn delivered(&self) {
        self.with(|s| s.delivered_total += 1);
    }

    pub fn state(&self) -> LinkState {
        self.with(|s| s.clone())
    }
}
