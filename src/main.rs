//! The `gridwatch` command line: parses arguments, sets up logging, and hands over
//! to the library's commands.

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use gridwatch::commands::{bench, demo, detect, run, serve};

#[derive(Parser)]
#[command(
    name = "gridwatch",
    version,
    about = "Edge video monitoring: RTSP cameras -> on-device detection -> MQTT events with snapshots"
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
    Check(run::ConfigArgs),
    /// The whole pipeline on a bundled street clip with a private broker: no camera or broker needed.
    Demo(demo::DemoArgs),
    /// Run the model on image files and print what it finds.
    Detect(detect::DetectArgs),
    /// Serve video files over RTSP on this machine, to test a setup without a camera.
    Serve(serve::ServeArgs),
    /// Measure the pipeline stage by stage on a clip served over loopback.
    Bench(bench::BenchArgs),
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
    // journald stamps every line itself and shows levels; no colour codes there either.
    if std::env::var_os("JOURNAL_STREAM").is_some() {
        builder.without_time().with_ansi(false).init();
    } else {
        builder.with_ansi(std::io::stderr().is_terminal()).init();
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let level = match &cli.command {
        Command::Run(_) => "info",
        _ => "warn",
    };
    init_logging(level);
    let result = match cli.command {
        Command::Run(a) => run::run(a),
        Command::Check(a) => run::check(a),
        Command::Demo(a) => demo::run(a),
        Command::Detect(a) => detect::run(a),
        Command::Serve(a) => serve::run(a),
        Command::Bench(a) => bench::run(a),
    };
    result.unwrap_or_else(|e| {
        eprintln!("error: {e:#}");
        ExitCode::FAILURE
    })
}
