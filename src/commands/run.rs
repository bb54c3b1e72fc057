//! `gridwatch run` (the daemon) and `gridwatch check` (validate, start nothing).

use std::path::PathBuf;
use std::process::ExitCode;

use crate::config::Config;
use crate::detect::Detector;

#[derive(Debug, clap::Args)]
pub struct ConfigArgs {
    /// The configuration file (TOML).
    #[arg(long, short, default_value = "/etc/gridwatch/gridwatch.toml")]
    pub config: PathBuf,
}

/// Exit code for a configuration the daemon refuses (systemd will not restart on it).
pub const EXIT_CONFIG: u8 = 2;

fn load(args: &ConfigArgs) -> Result<Config, ExitCode> {
    Config::load(&args.config).map_err(|e| {
        eprintln!("error: {e}");
        ExitCode::from(EXIT_CONFIG)
    })
}

pub fn run(args: ConfigArgs) -> anyhow::Result<ExitCode> {
    let cfg = match load(&args) {
        Ok(c) => c,
        Err(code) => return Ok(code),
    };
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async {
        let stop = super::stop_on_signals();
        crate::daemon::run(cfg, stop).await
    })?;
    Ok(ExitCode::SUCCESS)
}

pub fn check(args: ConfigArgs) -> anyhow::Result<ExitCode> {
    let cfg = match load(&args) {
        Ok(c) => c,
        Err(code) => return Ok(code),
    };
    match Detector::load(cfg.model_source(), cfg.detector.onnxruntime.as_deref(), cfg.detector.threads) {
        Ok(d) => {
            println!("{}: OK", args.config.display());
            println!("  site     {}", cfg.site);
            println!(
                "  mqtt     {}:{} (root \"{}\", client id \"{}\")",
                cfg.mqtt.host,
                cfg.mqtt.port,
                cfg.mqtt.topic_root,
                cfg.client_id()
            );
            println!("  model    {}, sha256 {}", d.model_name(), d.model_sha256());
            println!("  storage  {}", cfg.storage.dir.display());
            for c in &cfg.cameras {
                let state = if c.enabled { "" } else { "  (disabled)" };
                println!(
                    "  camera   {}  {}  {} fps, track {}{state}",
                    c.id,
                    crate::redact::userinfo(&c.url),
                    c.detect_fps,
                    c.track.join(",")
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!(
                "error: {}: the configuration is valid, but the detector cannot start: {e}",
                args.config.display()
            );
            Ok(ExitCode::from(EXIT_CONFIG))
        }
    }
}
