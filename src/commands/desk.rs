//! `gridwatch desk`: the duty desk's console (src/desk/), its users, the site simulator
//! and the desk's benchmark.

use std::path::PathBuf;
use std::process::ExitCode;

use crate::desk;

#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = false)]
pub struct DeskArgs {
    /// The desk's configuration file (TOML; see systemd/desk.toml.example).
    #[arg(long, short, global = true, default_value = "/etc/gridwatch/desk.toml")]
    pub config: PathBuf,
    #[command(subcommand)]
    pub command: Option<DeskCommand>,
}

#[derive(Debug, clap::Subcommand)]
pub enum DeskCommand {
    /// Manage the console's users (stored in the desk's database).
    #[command(subcommand)]
    User(UserCommand),
    /// Simulated grid points publishing by the MQTT contract, for demos and tests.
    Simulate(desk::SimulateArgs),
    /// The desk measured under load (a private broker, the desk as a process): see docs/performance.md.
    Bench(desk::BenchArgs),
}

#[derive(Debug, clap::Subcommand)]
pub enum UserCommand {
    /// Add a user, or set an existing user's role and password (read from the terminal twice, or once from stdin).
    Add {
        name: String,
        #[arg(long, value_parser = ["viewer", "operator", "admin"])]
        role: String,
    },
    /// List users and their roles.
    List,
    /// Remove a user (their sessions end).
    Remove { name: String },
}

pub fn run(args: DeskArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        None => {
            let rt = tokio::runtime::Runtime::new()?;
            rt.block_on(async {
                let stop = super::stop_on_signals();
                desk::run(&args.config, stop).await
            })?;
        }
        Some(DeskCommand::User(UserCommand::Add { name, role })) => desk::user_add(&args.config, &name, &role)?,
        Some(DeskCommand::User(UserCommand::List)) => desk::user_list(&args.config)?,
        Some(DeskCommand::User(UserCommand::Remove { name })) => desk::user_remove(&args.config, &name)?,
        Some(DeskCommand::Bench(a)) => return bench(a),
        Some(DeskCommand::Simulate(a)) => {
            let rt = tokio::runtime::Runtime::new()?;
            rt.block_on(async {
                let stop = super::stop_on_signals();
                desk::simulate(a, stop).await
            })?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Runs the bench and prints its figures; exit 1 when an event was not stored.
fn bench(args: desk::BenchArgs) -> anyhow::Result<ExitCode> {
    let json = args.json;
    let r = tokio::runtime::Runtime::new()?.block_on(desk::bench(args))?;
    if json {
        println!("{}", serde_json::to_string(&r)?);
    } else {
        println!(
            "events published, stored     {} / {} (drained {:.1} s after the load)",
            r.published, r.stored, r.seconds_to_drain
        );
        println!(
            "live delay ms p50, p99, max  {:.0}, {:.0}, {:.0}",
            r.live_delay_ms_p50, r.live_delay_ms_p99, r.live_delay_ms_max
        );
        println!("desk CPU, peak RSS           {:.0} % of one core, {:.0} MB", r.desk_cpu_percent, r.desk_peak_rss_mb);
        if r.rows_for_pages > 0 {
            println!("rows for the pages           {} (stored in {:.0} s)", r.rows_for_pages, r.fill_seconds);
            println!("wall ms p50, p99             {:.1}, {:.1}", r.wall_ms_p50, r.wall_ms_p99);
            println!("history ms p50, p99          {:.1}, {:.1}", r.history_ms_p50, r.history_ms_p99);
            println!(
                "history page 1000, filtered  {:.1}, {:.1} ms p99",
                r.history_deep_ms_p99, r.history_filtered_ms_p99
            );
        }
    }
    Ok(if r.stored == r.published { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}
