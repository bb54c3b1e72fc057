//! `gridwatch events [--follow] [--camera C] [--limit N]`: the latest events from the
//! local store (delivered or still waiting for the broker), read-only beside the
//! running daemon.
//!
//! Promises: events print in `seq` order, each once, also while following; `--json`
//! prints each event as the JSON object published on MQTT, one per line.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use super::output::{exit, table};
use crate::contract::EventMessage;
use crate::device::config::Config;
use crate::device::publish::Outbox;

#[derive(Debug, clap::Args)]
pub struct EventsArgs {
    /// Only this camera's events.
    #[arg(long)]
    pub camera: Option<String>,
    /// How many of the latest events to show.
    #[arg(long, short = 'n', default_value_t = 20)]
    pub limit: usize,
    /// Keep printing new events as they are stored, until Ctrl-C.
    #[arg(long, short)]
    pub follow: bool,
    /// One JSON object per event and line (the MQTT payload).
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub store: StoreArgs,
}

/// Where a stopped or running daemon keeps its files, for the commands that read them.
#[derive(Debug, clap::Args)]
pub struct StoreArgs {
    /// The daemon's configuration, to find its storage folder.
    #[arg(long, short, default_value = "/etc/gridwatch/gridwatch.toml")]
    pub config: PathBuf,
    /// The storage folder itself (instead of reading it from the configuration).
    #[arg(long)]
    pub dir: Option<PathBuf>,
}

impl StoreArgs {
    /// `--dir`, or the configuration's `storage.dir`; a configuration that does not
    /// load is reported, with the exit code to end on.
    pub fn dir(&self) -> Result<PathBuf, ExitCode> {
        match &self.dir {
            Some(d) => Ok(d.clone()),
            None => Config::load(&self.config).map(|c| c.storage.dir).map_err(|e| {
                eprintln!("error: {e}\n  hint: give the storage folder with --dir");
                ExitCode::from(exit::CONFIG)
            }),
        }
    }
}

/// How often `--follow` looks for new events.
const FOLLOW_POLL: Duration = Duration::from_millis(500);

pub fn run(args: EventsArgs) -> anyhow::Result<ExitCode> {
    let dir = match args.store.dir() {
        Ok(d) => d,
        Err(code) => return Ok(code),
    };
    if !dir.join(Outbox::FILE_NAME).exists() {
        eprintln!(
            "error: {}: no event store there; has gridwatch run with this storage.dir?",
            dir.join(Outbox::FILE_NAME).display()
        );
        return Ok(ExitCode::from(exit::STORE));
    }
    let store = match Outbox::open_read_only(&dir) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}\n  hint: run as the gridwatch user, a member of its group, or with sudo");
            return Ok(ExitCode::from(exit::STORE));
        }
    };
    let camera = args.camera.as_deref();
    let first = match store.recent(camera, 0, args.limit) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(ExitCode::from(exit::STORE));
        }
    };
    let mut last = first.last().map_or(0, |e| e.seq);
    if !args.json && first.is_empty() && !args.follow {
        println!("no events stored{}", camera.map_or(String::new(), |c| format!(" for camera {c}")));
        return Ok(ExitCode::SUCCESS);
    }
    let _ = print(&first, args.json, true);
    if !args.follow {
        return Ok(ExitCode::SUCCESS);
    }
    loop {
        std::thread::sleep(FOLLOW_POLL);
        // Everything newer, in order, however many arrived.
        let new = store.recent(camera, last, usize::MAX >> 1)?;
        if let Some(e) = new.last() {
            last = e.seq;
            // Nobody reads any more (`| head`): done.
            if print(&new, args.json, false).is_err() {
                return Ok(ExitCode::SUCCESS);
            }
        }
    }
}

fn print(events: &[EventMessage], json: bool, header: bool) -> std::io::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    if json {
        for e in events {
            writeln!(out, "{}", serde_json::to_string(e)?)?;
        }
    } else {
        let mut rows = Vec::new();
        if header {
            rows.push(
                ["SEQ", "AT", "CAMERA", "TYPE", "KIND", "LABEL", "SCORE", "ZONES", "EVENT"].map(String::from).to_vec(),
            );
        }
        for e in events {
            rows.push(vec![
                e.seq.to_string(),
                e.at.clone(),
                e.camera.clone(),
                e.event_type.as_str().to_owned(),
                e.kind.clone(),
                e.label.clone(),
                format!("{:.2}", e.score),
                if e.zones.is_empty() { "-".into() } else { e.zones.join(",") },
                e.event_id.clone(),
            ]);
        }
        // Followed rows line up with the header's widths only roughly; each stays one line.
        out.write_all(table(&rows).as_bytes())?;
    }
    out.flush()
}
