//! The `gridwatch` command line: parses arguments, sets up logging, and hands over
//! to the library's commands.

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use gridwatch::commands::{
    bench, demo, desk, detect, events, notices, probe, run, serve, snapshot, stats, status, switch,
};

#[derive(Parser)]
#[command(
    name = "gridwatch",
    version,
    about = "Edge video monitoring: RTSP cameras -> on-device detection -> MQTT events with snapshots",
    after_help = "Exit codes and the control socket are described in docs/operations.md."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon.
    Run(run::ConfigArgs),
    /// Validate a configuration and load the model; start nothing else.
    Check(run::CheckArgs),
    /// Connect to a camera as the daemon would, report its stream, save a picture.
    Probe(probe::ProbeArgs),
    /// Ask the running daemon how its cameras, outbox and broker connection are doing.
    Status(status::StatusArgs),
    /// Save the latest picture the running daemon decoded from a camera.
    Snapshot(snapshot::SnapshotArgs),
    /// Show the latest events from the local store; --follow for new ones as they come.
    Events(events::EventsArgs),
    /// Show the stored stats: line counts and zone occupancy per camera and period.
    Stats(stats::StatsArgs),
    /// Switch a camera's detection off in the running daemon (as the desk's detect/set OFF).
    Pause(switch::CameraSwitchArgs),
    /// Switch a camera's detection on again in the running daemon.
    Resume(switch::CameraSwitchArgs),
    /// Arm (on) or disarm (off) one zone rule in the running daemon.
    Rule(switch::RuleArgs),
    /// List the notices this grid point received, and whether each was played.
    Notices(notices::NoticesArgs),
    /// The whole pipeline on a bundled street clip with a private broker: no camera or broker needed.
    Demo(demo::DemoArgs),
    /// Run the model on image files and print what it finds.
    Detect(detect::DetectArgs),
    /// Serve video files over RTSP on this machine, to test a setup without a camera.
    Serve(serve::ServeArgs),
    /// Measure the pipeline stage by stage on a clip served over loopback.
    Bench(bench::BenchArgs),
    /// The duty desk's console for every grid point (see docs/desk.md); also `desk user`, `desk simulate`.
    Desk(desk::DeskArgs),
}

/// Whether stderr is systemd's journal stream (sd-daemon(3): `$JOURNAL_STREAM` holds
/// the device and inode of the stream, so a child that inherited the variable but
/// writes elsewhere is not fooled).
fn stderr_is_journal() -> bool {
    use std::os::fd::AsFd;
    use std::os::unix::fs::MetadataExt;
    let Some((dev, ino)) = std::env::var("JOURNAL_STREAM").ok().and_then(|v| {
        let (d, i) = v.split_once(':')?;
        Some((d.parse::<u64>().ok()?, i.parse::<u64>().ok()?))
    }) else {
        return false;
    };
    let Ok(fd) = std::io::stderr().as_fd().try_clone_to_owned() else {
        return false;
    };
    std::fs::File::from(fd).metadata().is_ok_and(|m| m.dev() == dev && m.ino() == ino)
}

/// Prefixes each line with its syslog priority (`<3>` error ... `<7>` debug), which
/// journald turns into the entry's priority, so `journalctl -p warning` works.
struct JournalPriority<F>(F);

impl<S, N, F> tracing_subscriber::fmt::FormatEvent<S, N> for JournalPriority<F>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    N: for<'a> tracing_subscriber::fmt::FormatFields<'a> + 'static,
    F: tracing_subscriber::fmt::FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &tracing_subscriber::fmt::FmtContext<'_, S, N>,
        mut writer: tracing_subscriber::fmt::format::Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        let priority = match *event.metadata().level() {
            tracing::Level::ERROR => 3,
            tracing::Level::WARN => 4,
            tracing::Level::INFO => 6,
            tracing::Level::DEBUG | tracing::Level::TRACE => 7,
        };
        write!(writer, "<{priority}>")?;
        self.0.format_event(ctx, writer, event)
    }
}

fn init_logging(default_level: &str) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("GRIDWATCH_LOG").unwrap_or_else(|_| EnvFilter::new(default_level));
    // A log line that cannot be written (stderr closed, a pipe reader gone) is dropped:
    // by default tracing reports it with eprintln!, which panics on the same closed
    // stream, in whichever task logged, such as the one that handles SIGTERM.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .log_internal_errors(false);
    // journald stamps every line itself and keeps the level as the priority; no
    // colour codes there either.
    if stderr_is_journal() {
        let format = tracing_subscriber::fmt::format().without_time().with_target(false).with_ansi(false);
        builder.event_format(JournalPriority(format)).init();
    } else {
        builder.with_ansi(std::io::stderr().is_terminal()).init();
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let level = match &cli.command {
        Command::Run(_) | Command::Desk(_) => "info",
        // Probe reports failures itself; ingest's own warnings would say them twice.
        Command::Probe(_) => "error",
        _ => "warn",
    };
    init_logging(level);
    // Report commands end quietly when their reader goes away (`gridwatch check --print
    // | head`), as Unix tools do; Rust would otherwise panic on the closed stdout. The
    // long-running ones keep ignoring SIGPIPE: a closed pipe must not stop a daemon.
    if matches!(
        cli.command,
        Command::Check(_)
            | Command::Status(_)
            | Command::Events(_)
            | Command::Stats(_)
            | Command::Detect(_)
            | Command::Notices(_)
    ) {
        // SAFETY: restores the default action for one signal before any thread starts.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    }
    let result = match cli.command {
        Command::Run(a) => run::run(a),
        Command::Check(a) => run::check(a),
        Command::Probe(a) => probe::run(a),
        Command::Status(a) => status::run(a),
        Command::Snapshot(a) => snapshot::run(a),
        Command::Events(a) => events::run(a),
        Command::Stats(a) => stats::run(a),
        Command::Pause(a) => switch::pause(a),
        Command::Resume(a) => switch::resume(a),
        Command::Rule(a) => switch::rule(a),
        Command::Notices(a) => notices::run(a),
        Command::Demo(a) => demo::run(a),
        Command::Detect(a) => detect::run(a),
        Command::Serve(a) => serve::run(a),
        Command::Bench(a) => bench::run(a),
        Command::Desk(a) => desk::run(a),
    };
    result.unwrap_or_else(|e| {
        eprintln!("error: {e:#}");
        ExitCode::FAILURE
    })
}
