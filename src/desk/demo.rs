//! The desk `gridwatch demo` starts beside the real pipeline: its own store in a
//! scratch folder, the console on a free loopback port, one user with a random
//! password made for this run, and 21 simulated grid points on the demo's broker.
//!
//! Promises: nothing outside `dir` is written; the console listens on loopback only;
//! the password is random per run (there is no default password, here either).

use std::path::Path;

use rand::Rng;
use tokio_util::sync::CancellationToken;

use super::config::DeskConfig;
use super::simulate::{SimulateArgs, simulate};
use super::store::{Role, Store};

/// Simulated grid points beside the demo's real one.
pub const DEMO_SIMULATED_SITES: usize = 21;

/// Where the demo's console is and how to log in.
pub struct DemoDesk {
    pub url: String,
    pub user: String,
    pub password: String,
}

/// Starts the demo's desk and simulator on the broker at `broker_port`, keeping their
/// state in `dir`; both stop with `stop`.
pub async fn start_demo(broker_port: u16, dir: &Path, stop: CancellationToken) -> anyhow::Result<DemoDesk> {
    std::fs::create_dir_all(dir)?;
    let file = dir.join("desk.toml");
    std::fs::write(&file, demo_config(broker_port))?;
    let cfg = DeskConfig::load(&file)?;
    let password = random_password();
    let (store_dir, pw) = (cfg.storage.dir.clone(), password.clone());
    tokio::task::spawn_blocking(move || Store::open(&store_dir)?.user_add("demo", Role::Admin, &pw)).await??;
    let (addr, served) = super::start(cfg, stop.clone()).await?;
    tokio::spawn(async move {
        if let Err(e) = served.await {
            tracing::error!("demo desk: {e:#}");
        }
    });
    let sim = SimulateArgs {
        sites: DEMO_SIMULATED_SITES,
        broker: format!("127.0.0.1:{broker_port}"),
        topic_root: "gridwatch".into(),
        prefix: "sim".into(),
        first: 1,
        rate: 0.05,
        seconds: None,
        chaos: true,
        state: None,
        log: None,
        keep_alive_s: 10,
    };
    tokio::spawn(async move {
        if let Err(e) = simulate(sim, stop).await {
            tracing::error!("demo simulator: {e:#}");
        }
    });
    Ok(DemoDesk { url: format!("http://{addr}/"), user: "demo".into(), password })
}

/// The demo desk's configuration, as a file would give it (and checked the same way).
fn demo_config(broker_port: u16) -> String {
    let mut text = format!(
        "[mqtt]\nhost = \"127.0.0.1\"\nport = {broker_port}\nclient_id = \"gridwatch-desk-demo\"\n\
         [web]\nlisten = \"127.0.0.1:0\"\n[storage]\ndir = \"desk\"\nmax_bytes = 1073741824\n\
         [[sites]]\nid = \"demo\"\nname = \"演示网格 · 街道摄像头\"\ngroup = \"演示\"\n"
    );
    for n in 1..=DEMO_SIMULATED_SITES {
        text += &format!("[[sites]]\nid = \"sim-{n:02}\"\nname = \"第{n}网格 · 模拟\"\ngroup = \"模拟\"\n");
    }
    text
}

/// 16 characters from an alphabet without look-alikes (no 0/O, 1/l/I).
fn random_password() -> String {
    const ALPHABET: &[u8] = b"abcdefghijkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    let mut rng = rand::rng();
    (0..16).map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demo_config_is_valid_and_names_every_site() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("desk.toml");
        std::fs::write(&f, demo_config(1883)).unwrap();
        let cfg = DeskConfig::load(&f).unwrap();
        assert_eq!(cfg.sites.len(), DEMO_SIMULATED_SITES + 1);
        assert_eq!(cfg.web.listen.ip().to_string(), "127.0.0.1", "loopback only");
        let (a, b) = (random_password(), random_password());
        assert_eq!(a.len(), 16);
        assert_ne!(a, b, "a fresh password each run");
    }
}
