//! `gridwatch stats [--camera C] [--since WHEN] [--json]`: the stats messages stored on
//! this grid point (delivered or still waiting for the broker), read-only beside the
//! running daemon.
//!
//! Promises: messages print in their `seq` order, one table row per line and label
//! (crossings in and out) and per zone and label (peak and mean); `--since` takes an
//! RFC 3339 time or an age such as `2h` and is refused with what to write otherwise;
//! `--json` prints each message as published on MQTT, one per line.

use std::process::ExitCode;
use std::time::SystemTime;

use super::events::StoreArgs;
use super::output::{exit, table};
use crate::contract::{StatsMessage, timestamp};
use crate::device::publish::Outbox;

#[derive(Debug, clap::Args)]
pub struct StatsArgs {
    /// Only this camera's stats.
    #[arg(long)]
    pub camera: Option<String>,
    /// Periods ending at or after this: an RFC 3339 time (2026-11-28T08:00:00Z) or an
    /// age (30m, 2h, 1day).
    #[arg(long)]
    pub since: Option<String>,
    /// How many of the latest periods to show.
    #[arg(long, short = 'n', default_value_t = 12)]
    pub limit: usize,
    /// One JSON object per message and line (the MQTT payload).
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub store: StoreArgs,
}

/// `--since` as the stored messages write times (RFC 3339 UTC, milliseconds).
fn since(text: &str) -> Result<String, String> {
    if let Ok(t) = humantime::parse_rfc3339_weak(text) {
        return Ok(timestamp(t));
    }
    match humantime::parse_duration(text) {
        Ok(age) => Ok(timestamp(SystemTime::now().checked_sub(age).unwrap_or(SystemTime::UNIX_EPOCH))),
        Err(_) => {
            Err(format!("--since \"{text}\" is neither a time (2026-11-28T08:00:00Z) nor an age (30m, 2h, 1day)"))
        }
    }
}

pub fn run(args: StatsArgs) -> anyhow::Result<ExitCode> {
    let from = match args.since.as_deref().map(since).transpose() {
        Ok(f) => f,
        Err(why) => {
            eprintln!("error: {why}");
            return Ok(ExitCode::from(exit::CONFIG));
        }
    };
    let dir = match args.store.dir() {
        Ok(d) => d,
        Err(code) => return Ok(code),
    };
    let file = dir.join(Outbox::FILE_NAME);
    if !file.exists() {
        eprintln!("error: {}: no store there; has gridwatch run with this storage.dir?", file.display());
        return Ok(ExitCode::from(exit::STORE));
    }
    let stored =
        Outbox::open_read_only(&dir).and_then(|s| s.recent_stats(args.camera.as_deref(), from.as_deref(), args.limit));
    let messages = match stored {
        Ok(m) => m,
        Err(e) => {
            eprintln!("error: {e}\n  hint: run as the gridwatch user, a member of its group, or with sudo");
            return Ok(ExitCode::from(exit::STORE));
        }
    };
    if messages.is_empty() && !args.json {
        println!("no stats stored yet (one message per camera every stats.period_s, 300 s unless set)");
        return Ok(ExitCode::SUCCESS);
    }
    if args.json {
        for m in &messages {
            println!("{}", serde_json::to_string(m)?);
        }
    } else {
        print!("{}", table(&rows(&messages)));
    }
    Ok(ExitCode::SUCCESS)
}

/// A header, then per message a row per line and label, and per zone and label.
fn rows(messages: &[StatsMessage]) -> Vec<Vec<String>> {
    let mut rows = vec![
        ["SEQ", "PERIOD END", "CAMERA", "FRAMES", "LINE/ZONE", "LABEL", "IN|PEAK", "OUT|MEAN"]
            .map(String::from)
            .to_vec(),
    ];
    for m in messages {
        let head = |what: &str, label: &str| {
            vec![
                m.seq.to_string(),
                m.period_end.clone(),
                m.camera.clone(),
                m.frames.to_string(),
                what.into(),
                label.into(),
            ]
        };
        for (line, labels) in &m.lines {
            for (label, n) in labels {
                rows.push(
                    [head(&format!("line {line}"), label), vec![n.inward.to_string(), n.outward.to_string()]].concat(),
                );
            }
        }
        for (zone, labels) in &m.zones {
            for (label, z) in labels {
                rows.push(
                    [head(&format!("zone {zone}"), label), vec![z.peak.to_string(), format!("{:.2}", z.mean)]].concat(),
                );
            }
        }
        if m.lines.is_empty() && m.zones.is_empty() {
            rows.push([head("-", "-"), vec!["-".into(), "-".into()]].concat());
        }
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_takes_a_time_or_an_age_and_says_what_to_write_otherwise() {
        assert_eq!(since("2026-11-28T08:00:00Z").unwrap(), "2026-11-28T08:00:00.000Z");
        let two_hours_ago = since("2h").unwrap();
        assert!(two_hours_ago < timestamp(SystemTime::now()), "{two_hours_ago}");
        assert!(since("yesterday-ish").unwrap_err().contains("neither a time"));
    }
}
