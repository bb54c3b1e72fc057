//! `gridwatch desk`: the duty desk's console (src/desk/), its users, and the site simulator.

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
