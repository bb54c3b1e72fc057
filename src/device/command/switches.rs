//! The desk's switches as applied on this device: which cameras have detection off and
//! which zone rules are disarmed. Kept in `commands.json` in the storage folder.
//!
//! Promises: a change is on disk (written aside, synced, renamed over, the folder
//! synced) before `apply` returns, so it survives a power cut; a file that cannot be
//! read is set aside and everything starts switched on, as configured; entries for
//! cameras or rules no longer configured are dropped at load. Analysis threads read
//! the switches once per frame without waiting on the disk.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::RwLock;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};
use tracing::warn;

use super::parse::Targets;

pub const FILE_NAME: &str = "commands.json";

/// One zone rule, by name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct RuleRef {
    pub camera: String,
    pub zone: String,
    pub rule: String,
}

/// What the file holds: only what differs from the configuration.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Applied {
    /// Cameras whose detection is off.
    #[serde(default)]
    pub paused: BTreeSet<String>,
    #[serde(default)]
    pub disarmed: BTreeSet<RuleRef>,
}

impl Applied {
    /// Reads `commands.json` in `dir` as it is (for `check --print`); empty when absent.
    pub fn read(dir: &Path) -> std::io::Result<Applied> {
        match std::fs::read(dir.join(FILE_NAME)) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(std::io::Error::other),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Applied::default()),
            Err(e) => Err(e),
        }
    }

    fn known_only(mut self, targets: &Targets) -> Applied {
        let before = (self.paused.len(), self.disarmed.len());
        self.paused.retain(|c| targets.camera(c).is_ok());
        self.disarmed.retain(|r| targets.rule(&r.camera, &r.zone, &r.rule).is_ok());
        if before != (self.paused.len(), self.disarmed.len()) {
            warn!("commands: switches for cameras or rules no longer configured are dropped");
        }
        self
    }
}

/// A change the desk or the technician asked for.
#[derive(Debug, Clone, PartialEq)]
pub enum Switch {
    Detect { camera: String, on: bool },
    Rule(RuleRef, bool),
}

/// The switches, shared by the command service (writer) and the analysis threads.
#[derive(Debug)]
pub struct Switches {
    file: PathBuf,
    applied: RwLock<Applied>,
    /// Bumped at every change, so a thread can tell cheaply that it should look again.
    generation: AtomicU64,
}

impl Switches {
    /// Loads the switches kept in `dir`; a damaged file is moved aside and logged.
    pub fn load(dir: &Path, targets: &Targets) -> Switches {
        let file = dir.join(FILE_NAME);
        let applied = match Applied::read(dir) {
            Ok(a) => a.known_only(targets),
            Err(e) => {
                let aside = dir.join(format!("{FILE_NAME}.damaged"));
                let moved = std::fs::rename(&file, &aside).is_ok();
                warn!(file = %file.display(), "commands: cannot read the applied switches: {e}; every camera and rule starts on{}",
                      if moved { format!(" (the file is kept as {})", aside.display()) } else { String::new() });
                Applied::default()
            }
        };
        Switches { file, applied: RwLock::new(applied), generation: AtomicU64::new(1) }
    }

    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    pub fn applied(&self) -> Applied {
        self.applied.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn detecting(&self, camera: &str) -> bool {
        !self.applied.read().unwrap_or_else(|p| p.into_inner()).paused.contains(camera)
    }

    /// The (zone, rule) pairs disarmed on `camera`.
    pub fn disarmed(&self, camera: &str) -> Vec<(String, String)> {
        let a = self.applied.read().unwrap_or_else(|p| p.into_inner());
        a.disarmed.iter().filter(|r| r.camera == camera).map(|r| (r.zone.clone(), r.rule.clone())).collect()
    }

    /// Applies `switch` and stores the result. Returns whether anything changed; the
    /// change holds in memory even when it cannot be stored (the error says so).
    pub fn apply(&self, switch: &Switch) -> std::io::Result<bool> {
        let snapshot = {
            let mut a = self.applied.write().unwrap_or_else(|p| p.into_inner());
            let changed = match switch {
                Switch::Detect { camera, on: false } => a.paused.insert(camera.clone()),
                Switch::Detect { camera, on: true } => a.paused.remove(camera),
                Switch::Rule(r, false) => a.disarmed.insert(r.clone()),
                Switch::Rule(r, true) => a.disarmed.remove(r),
            };
            if !changed {
                return Ok(false);
            }
            self.generation.fetch_add(1, Ordering::AcqRel);
            a.clone()
        };
        let json = serde_json::to_vec_pretty(&snapshot).map_err(std::io::Error::other)?;
        super::write_atomically(&self.file, &json)?;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::command::parse::CameraTargets;

    fn targets() -> Targets {
        Targets {
            root: "gw".into(),
            site: "s".into(),
            cameras: vec![CameraTargets { id: "gate".into(), rules: vec![("lane".into(), "intrusion")] }],
        }
    }

    fn lane() -> RuleRef {
        RuleRef { camera: "gate".into(), zone: "lane".into(), rule: "intrusion".into() }
    }

    #[test]
    fn switches_survive_a_reload_and_forget_what_is_no_longer_configured() {
        let dir = tempfile::tempdir().unwrap();
        let s = Switches::load(dir.path(), &targets());
        assert!(s.detecting("gate") && s.disarmed("gate").is_empty());
        let g = s.generation();
        assert!(s.apply(&Switch::Detect { camera: "gate".into(), on: false }).unwrap());
        assert!(!s.apply(&Switch::Detect { camera: "gate".into(), on: false }).unwrap(), "no change");
        assert!(s.apply(&Switch::Rule(lane(), false)).unwrap());
        assert!(s.generation() > g);
        let again = Switches::load(dir.path(), &targets());
        assert!(!again.detecting("gate"));
        assert_eq!(again.disarmed("gate"), [("lane".to_owned(), "intrusion".to_owned())]);
        let mut fewer = targets();
        fewer.cameras[0].rules.clear();
        assert!(Switches::load(dir.path(), &fewer).disarmed("gate").is_empty());
        assert!(again.apply(&Switch::Detect { camera: "gate".into(), on: true }).unwrap());
        assert!(Switches::load(dir.path(), &targets()).detecting("gate"));
    }

    #[test]
    fn a_damaged_file_is_set_aside_and_everything_starts_on() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(FILE_NAME), "{not json").unwrap();
        let s = Switches::load(dir.path(), &targets());
        assert!(s.detecting("gate"));
        assert_eq!(std::fs::read_to_string(dir.path().join("commands.json.damaged")).unwrap(), "{not json");
    }
}
