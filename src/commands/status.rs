//! `gridwatch status`: asks the running daemon, over its control socket, how every
//! camera, the outbox and the broker connection are doing.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use super::output::{age, exit, or_dash, table};
use crate::device::config::{CONTROL_SOCKET_NAME, Config};
use crate::device::ops::control::{self, ClientError, Request};
use crate::device::ops::{OutboxStatus, Status};

/// Where to find the daemon.
#[derive(Debug, Clone, clap::Args)]
pub struct SocketArgs {
    /// The daemon's control socket (default: from the configuration, else
    /// /run/gridwatch/control.sock).
    #[arg(long)]
    pub socket: Option<PathBuf>,
    /// The daemon's configuration, to find its socket.
    #[arg(long, short, default_value = "/etc/gridwatch/gridwatch.toml")]
    pub config: PathBuf,
}

/// Where the systemd unit's `RuntimeDirectory=gridwatch` puts the socket.
const SYSTEMD_SOCKET: &str = "/run/gridwatch/control.sock";

impl SocketArgs {
    /// The socket to use: `--socket`; else the configuration's `control.socket`; else
    /// the first that exists of /run/gridwatch/control.sock and `storage.dir`'s.
    pub fn socket(&self) -> PathBuf {
        if let Some(s) = &self.socket {
            return s.clone();
        }
        let cfg = Config::load(&self.config).ok();
        if let Some(s) = cfg.as_ref().and_then(|c| c.control.socket.clone()) {
            return s;
        }
        let mut candidates = vec![PathBuf::from(SYSTEMD_SOCKET)];
        candidates.extend(cfg.map(|c| c.storage.dir.join(CONTROL_SOCKET_NAME)));
        candidates.iter().find(|p| p.exists()).unwrap_or(&candidates[0]).clone()
    }
}

#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub socket: SocketArgs,
    /// The daemon's answer as JSON.
    #[arg(long)]
    pub json: bool,
}

/// The exit code for a failed exchange, after saying what went wrong.
pub fn client_error(e: &ClientError) -> ExitCode {
    eprintln!("error: {e}");
    ExitCode::from(match e {
        ClientError::NotRunning { .. } | ClientError::NoAnswer { .. } => exit::NOT_RUNNING,
        ClientError::PermissionDenied { .. } => exit::PERMISSION,
        ClientError::Refused(_) => exit::REFUSED,
        ClientError::Io { .. } | ClientError::Protocol(_) => exit::FAILURE,
    })
}

pub fn run(args: StatusArgs) -> anyhow::Result<ExitCode> {
    let socket = args.socket.socket();
    let (answer, _) = match control::request(&socket, &Request::Status) {
        Ok(a) => a,
        Err(e) => return Ok(client_error(&e)),
    };
    if args.json {
        let mut answer = answer;
        if let Some(o) = answer.as_object_mut() {
            o.remove("ok");
        }
        println!("{}", serde_json::to_string_pretty(&answer)?);
        return Ok(ExitCode::SUCCESS);
    }
    let status: Status = serde_json::from_value(answer)?;
    print!("{}", render(&status, &socket));
    Ok(ExitCode::SUCCESS)
}

/// The outbox's line: what waits, then every problem, loudly.
fn outbox_line(o: &OutboxStatus) -> String {
    let mut line = match (o.pending, o.oldest_pending_age_s) {
        (0, _) => "empty: every event reached the broker".to_owned(),
        (n, Some(a)) => format!("{n} event(s) waiting, oldest {} old", age(a as u64)),
        (n, None) => format!("{n} event(s) waiting"),
    };
    if let Some(e) = &o.write_error {
        line += &format!(
            "; WRITES FAILING since {}: {e} (nothing is sent twice because of it; retried)",
            or_dash(o.write_failing_since.as_ref())
        );
    }
    if o.acks_unrecorded {
        line += "; deliveries not yet written to disk";
    }
    if o.ends_waiting > 0 {
        line += &format!("; {} end(s) waiting in memory", o.ends_waiting);
    }
    if o.events_dropped > 0 {
        line += &format!("; {} EVENT(S) DROPPED since start (gaps in seq)", o.events_dropped);
    }
    if o.snapshots_damaged > 0 {
        line += &format!("; {} damaged picture(s) not sent", o.snapshots_damaged);
    }
    if let Some(f) = &o.damaged_file {
        line += &format!(
            "; DAMAGED OUTBOX moved aside to {f} (a new one runs; keep the file for recovery, then remove it)"
        );
    }
    if let Some(e) = &o.read_error {
        line += &format!("; CANNOT READ: {e}");
    }
    line
}

fn render(s: &Status, socket: &Path) -> String {
    let mqtt = if s.mqtt.connected {
        format!("connected to {} since {}", s.mqtt.broker, or_dash(s.mqtt.since.as_ref()))
    } else {
        format!(
            "NOT connected to {} (since {}): {}",
            s.mqtt.broker,
            or_dash(s.mqtt.since.as_ref()),
            or_dash(s.mqtt.last_error.as_ref())
        )
    };
    let mqtt = match &s.mqtt.warning {
        Some(w) => format!("{mqtt}; WARNING: {w}"),
        None => mqtt,
    };
    let outbox = outbox_line(&s.outbox);
    let head = vec![
        vec!["gridwatch".into(), format!("{} on site {} (socket {})", s.version, s.site, socket.display())],
        vec!["up".into(), format!("{} (since {})", age(s.uptime_s), s.started_at)],
        vec![
            "model".into(),
            format!("{} (sha256 {})", s.model.name, s.model.sha256.get(..12).unwrap_or(&s.model.sha256)),
        ],
        vec!["mqtt".into(), format!("{mqtt}; {} event(s) delivered since start", s.mqtt.delivered)],
        vec!["outbox".into(), outbox],
        vec!["watchdog".into(), s.watchdog_problem.clone().unwrap_or_else(|| "ok: every stage makes progress".into())],
        vec!["switches".into(), switches_line(&s.switches)],
    ];
    let mut rows = vec![
        [
            "CAMERA",
            "STATE",
            "SINCE",
            "VIDEO",
            "FPS IN",
            "ANALYSED",
            "SKIPPED",
            "INFER MS",
            "RECONN/1H",
            "STALLS/1H",
            "LAST ERROR",
        ]
        .map(String::from)
        .to_vec(),
    ];
    for cam in &s.cameras {
        let c = &cam.health;
        let state = serde_json::to_value(c.state).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default();
        let video = match (&c.codec, c.width, c.height) {
            (Some(codec), Some(w), Some(h)) => format!("{codec} {w}x{h}"),
            _ => "-".into(),
        };
        rows.push(vec![
            cam.id.clone(),
            state,
            c.since.clone(),
            video,
            c.fps_in.to_string(),
            c.fps_analyzed.to_string(),
            c.frames_skipped.to_string(),
            or_dash(c.inference_ms),
            c.reconnects_1h.to_string(),
            c.stalls_1h.to_string(),
            or_dash(c.last_error.as_ref()),
        ]);
    }
    format!("{}\n{}", table(&head), table(&rows))
}

/// What is switched off, or that nothing is.
pub fn switches_line(a: &crate::device::command::Applied) -> String {
    let mut parts = Vec::new();
    if !a.paused.is_empty() {
        parts.push(format!("detection off for {}", a.paused.iter().cloned().collect::<Vec<_>>().join(", ")));
    }
    if !a.disarmed.is_empty() {
        let rules: Vec<String> = a.disarmed.iter().map(|r| format!("{}/{}/{}", r.camera, r.zone, r.rule)).collect();
        parts.push(format!("disarmed {}", rules.join(", ")));
    }
    if parts.is_empty() { "every camera detecting, every rule armed".into() } else { parts.join("; ") }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_outbox_line_says_every_problem_loudly() {
        assert_eq!(outbox_line(&OutboxStatus::default()), "empty: every event reached the broker");
        let bad = OutboxStatus {
            pending: 2,
            write_error: Some("database or disk is full".into()),
            acks_unrecorded: true,
            events_dropped: 3,
            damaged_file: Some("/var/lib/gridwatch/outbox.sqlite3.damaged-1".into()),
            ..Default::default()
        };
        let line = outbox_line(&bad);
        for want in [
            "2 event(s) waiting",
            "WRITES FAILING since -: database or disk is full",
            "3 EVENT(S) DROPPED",
            "DAMAGED OUTBOX moved aside to /var/lib/gridwatch/outbox.sqlite3.damaged-1",
        ] {
            assert!(line.contains(want), "{want:?} missing from {line:?}");
        }
    }
}
