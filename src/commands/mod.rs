//! The CLI's subcommands, one module each; `main.rs` only parses and dispatches.

pub mod bench;
pub mod demo;
pub mod desk;
pub mod detect;
pub mod events;
pub mod notices;
pub mod output;
pub mod probe;
pub mod run;
pub mod serve;
pub mod snapshot;
pub mod stats;
pub mod status;
pub mod switch;

use tokio_util::sync::CancellationToken;

/// A token cancelled by the first SIGTERM or SIGINT (Ctrl-C); a second Ctrl-C
/// exits at once, for when a clean stop takes too long.
pub fn stop_on_signals() -> CancellationToken {
    let token = CancellationToken::new();
    let t = token.clone();
    tokio::spawn(async move {
        use tokio::signal::unix::{SignalKind, signal};
        let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
            tracing::warn!("cannot listen for signals; stop with SIGKILL");
            return;
        };
        let name = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        t.cancel();
        tracing::info!("{name} received: stopping");
        int.recv().await;
        std::process::exit(130);
    });
    token
}
