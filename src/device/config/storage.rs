//! `[storage]` (the outbox's folder and disk budget) and `[snapshot]` (the pictures).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct StorageConfig {
    /// Holds the outbox (events waiting for the broker), recent history and the
    /// event sequence.
    pub dir: PathBuf,
    /// Disk budget of the outbox in bytes; when full, pictures go before events.
    #[serde(default = "default_max_bytes")]
    pub max_bytes: u64,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SnapshotConfig {
    /// JPEG quality to start from; lowered (then the size) until `max_bytes` holds.
    #[serde(default = "default_jpeg_quality")]
    pub quality: u8,
    /// Largest JPEG sent; a broker's message limit and a thin link both care.
    #[serde(default = "default_snapshot_max_bytes")]
    pub max_bytes: usize,
    /// Send only the part of the frame around the event's boxes (and zone), not the whole frame.
    #[serde(default)]
    pub crop: bool,
}

impl Default for SnapshotConfig {
    fn default() -> Self {
        SnapshotConfig { quality: default_jpeg_quality(), max_bytes: default_snapshot_max_bytes(), crop: false }
    }
}

fn default_max_bytes() -> u64 {
    512 << 20
}
fn default_jpeg_quality() -> u8 {
    80
}
fn default_snapshot_max_bytes() -> usize {
    150_000
}
/// Below this the outbox cannot hold even a few events with their pictures.
const MIN_STORAGE_BYTES: u64 = 256 << 10;

impl StorageConfig {
    pub(super) fn problems(&self, bad: &mut dyn FnMut(String, String)) {
        if self.max_bytes < MIN_STORAGE_BYTES {
            bad(
                "storage.max_bytes".into(),
                format!(
                    "{} bytes is too small to hold events with pictures; give at least {MIN_STORAGE_BYTES}",
                    self.max_bytes
                ),
            );
        }
        if let Err(why) = usable_dir(&self.dir) {
            bad("storage.dir".into(), why);
        }
    }
}

/// Whether `dir` is, or can become, a folder this process writes in: it exists as a
/// folder we may write, or its nearest existing ancestor is one.
fn usable_dir(dir: &std::path::Path) -> Result<(), String> {
    let mut at = dir;
    loop {
        match std::fs::metadata(at) {
            Ok(m) if m.is_dir() => break,
            Ok(_) if at == dir => return Err(format!("{} exists but is not a folder", dir.display())),
            Ok(_) => {
                return Err(format!("{} cannot be made: {} is a file, not a folder", dir.display(), at.display()));
            }
            Err(_) => match at.parent() {
                Some(p) if !p.as_os_str().is_empty() => at = p,
                _ => return Ok(()),
            },
        }
    }
    let c = std::ffi::CString::new(at.as_os_str().as_encoded_bytes()).map_err(|_| "has a NUL byte".to_owned())?;
    // SAFETY: `c` is a valid NUL-terminated path that outlives the call.
    if unsafe { libc::access(c.as_ptr(), libc::W_OK | libc::X_OK) } != 0 {
        let who = if at == dir { "" } else { " (where it would be made)" };
        return Err(format!(
            "{}{who} is not writable by this user: {}; fix its owner or permissions",
            at.display(),
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}

impl SnapshotConfig {
    pub(super) fn problems(&self, bad: &mut dyn FnMut(String, String)) {
        if !(1..=100).contains(&self.quality) {
            bad("snapshot.quality".into(), format!("{} is outside 1..=100", self.quality));
        }
        if !(10_000..=16_000_000).contains(&self.max_bytes) {
            bad(
                "snapshot.max_bytes".into(),
                format!("{} is outside 10000..=16000000 bytes (default 150000)", self.max_bytes),
            );
        }
    }
}
