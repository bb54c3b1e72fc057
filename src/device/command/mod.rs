//! The desk talking back (contract 1.1): commands to this grid point (detection on or
//! off, a rule armed or disarmed, a picture now, a clip) and the street office's
//! notices. Incoming messages flow one way: the publisher's subscription ->
//! [`parse`] (validated against the configuration) -> the [`Switchboard`] or the
//! notice book -> answers (retained state, command errors, pictures, receipts) back
//! through the publisher. Analysis threads read the [`Switches`] once per frame.
//!
//! Modules stay private; `notices` is public for `gridwatch notices`, which reads the
//! book a stopped daemon left.

pub mod notices;
mod parse;
mod player;
mod service;
mod switches;

pub use parse::{Command, Notice, Refused, Targets, parse, zone_rule_kinds};
pub use service::{NoticeDesk, Switchboard, serve};
pub use switches::{Applied, RuleRef, Switch, Switches};

use std::io::Write;
use std::path::Path;

/// Writes `bytes` to `file` so that a power cut leaves the old file or the new one:
/// written aside, synced, renamed over, the folder synced.
fn write_atomically(file: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let staged = file.with_extension("json.new");
    let mut f = std::fs::File::create(&staged)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&staged, file)?;
    if let Some(dir) = file.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}
