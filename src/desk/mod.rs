//! `gridwatch desk`: the duty desk's console. It ingests every grid point's MQTT
//! messages into its own store (nothing the broker queued is lost), and serves a
//! logged-in web console and JSON API over them.
//!
//! Promises: one process; `run` returns only when stopped (SIGTERM, Ctrl-C) or on a
//! fatal start-up problem, which names the key or file at fault.

mod bench;
mod config;
mod demo;
mod escalate;
mod fresh;
mod ingest;
mod live;
mod notices;
mod simulate;
mod store;
mod users;
mod web;

use std::path::Path;
use std::sync::Arc;

pub use bench::{BenchArgs, BenchReport, run as bench};
pub use config::DeskConfig;
pub use demo::{DEMO_SIMULATED_SITES, DemoDesk, start_demo};
pub use simulate::{SimulateArgs, simulate};
pub use users::{user_add, user_list, user_remove};

/// Runs the desk with the configuration in `file` until `stop` is cancelled.
pub async fn run(file: &Path, stop: tokio_util::sync::CancellationToken) -> anyhow::Result<()> {
    let (_, served) = start(DeskConfig::load(file)?, stop).await?;
    served.await
}

/// Opens the store, binds the console's port, and starts ingest, escalation and
/// retention; returns the console's address and the web server to await.
pub async fn start(
    cfg: DeskConfig,
    stop: tokio_util::sync::CancellationToken,
) -> anyhow::Result<(std::net::SocketAddr, impl Future<Output = anyhow::Result<()>>)> {
    let cfg = Arc::new(cfg);
    let store = store::Store::open(&cfg.storage.dir)?;
    let bound = web::bind(&cfg).await?;
    let addr = bound.addr;
    let live = live::Live::new();
    let fresh = Arc::new(fresh::Fresh::default());
    let mqtt = ingest::start(cfg.clone(), store.clone(), fresh.clone(), live.clone(), stop.clone())?;
    tokio::spawn(escalate::run(cfg.clone(), store.clone(), live.clone(), mqtt.clone(), stop.clone()));
    tokio::spawn(notices::expire(store.clone(), live.clone(), mqtt.clone(), stop.clone()));
    tokio::spawn(retention(cfg.clone(), store.clone(), stop.clone()));
    Ok((addr, web::serve(bound, cfg, store, live, mqtt, fresh, stop)))
}

/// Applies `storage.max_bytes` and `keep_days` at start and every minute.
async fn retention(cfg: Arc<DeskConfig>, store: Arc<store::Store>, stop: tokio_util::sync::CancellationToken) {
    loop {
        let (max, days) = (cfg.storage.max_bytes, cfg.storage.keep_days);
        let s = store.clone();
        match tokio::task::spawn_blocking(move || s.retain(max, days))
            .await
            .map_err(anyhow::Error::from)
            .and_then(|r| r)
        {
            Ok((0, 0)) => {}
            Ok((files, rows)) => tracing::info!("retention: {files} files and {rows} events removed"),
            Err(e) => tracing::warn!("retention: {e:#}"),
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(std::time::Duration::from_secs(60)) => {}
        }
    }
}
