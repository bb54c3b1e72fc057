//! `gridwatch run` (the daemon) and `gridwatch check` (validate, start nothing).

use std::path::PathBuf;
use std::process::ExitCode;

use crate::device::analysis::detect::Detector;
use crate::device::command::Applied;
use crate::device::config::Config;

#[derive(Debug, clap::Args)]
pub struct ConfigArgs {
    /// The configuration file (TOML).
    #[arg(long, short, default_value = "/etc/gridwatch/gridwatch.toml")]
    pub config: PathBuf,
}

#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    #[command(flatten)]
    pub config: ConfigArgs,
    /// Print the effective configuration (defaults filled in, secrets hidden) instead
    /// of the summary; the model is not loaded.
    #[arg(long)]
    pub print: bool,
    /// With --print: JSON instead of TOML.
    #[arg(long, requires = "print")]
    pub json: bool,
}

/// Exit code for a configuration the daemon refuses (systemd will not restart on it).
pub const EXIT_CONFIG: u8 = super::output::exit::CONFIG;

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
        crate::device::daemon::run(cfg, stop).await
    })?;
    Ok(ExitCode::SUCCESS)
}

pub fn check(check: CheckArgs) -> anyhow::Result<ExitCode> {
    let args = check.config;
    let cfg = match load(&args) {
        Ok(c) => c,
        Err(code) => return Ok(code),
    };
    if check.print {
        print!("{}", effective(&cfg, check.json)?);
        return Ok(ExitCode::SUCCESS);
    }
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
            if let Some(warning) = budget_warning(&cfg) {
                eprintln!("warning: {warning}");
            }
            if let Some(user) = cfg.mqtt.username.as_deref().filter(|u| *u != cfg.site) {
                // The broker's ACL (docs/mqtt.md) lets a grid point write under its own
                // site by username; it acknowledges what it drops, so nothing would show.
                eprintln!(
                    "warning: mqtt.username \"{user}\" is not the site \"{}\": with the broker ACL of docs/mqtt.md \
                     the broker would take this grid point's events and drop them",
                    cfg.site
                );
            }
            for c in &cfg.cameras {
                let state = if c.enabled { "" } else { "  (disabled)" };
                println!(
                    "  camera   {}  {}  {} fps, track {}{state}",
                    c.id,
                    c.url.get(),
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

/// A warning when `storage.max_bytes` is more than the disk that holds `storage.dir`
/// has free: the daemon then keeps to what the disk has room for.
fn budget_warning(cfg: &Config) -> Option<String> {
    let dir = cfg.storage.dir.ancestors().find(|d| d.is_dir())?;
    let free = crate::device::publish::disk_free(&dir.join("outbox.sqlite3"))?;
    (cfg.storage.max_bytes > free).then(|| {
        format!(
            "storage.max_bytes is {} bytes but {} has {free} bytes free: the outbox will hold only what fits \
             (free some space, or lower storage.max_bytes to say so)",
            cfg.storage.max_bytes,
            dir.display()
        )
    })
}

/// The configuration as the daemon uses it: every default filled in, relative paths
/// resolved, camera passwords replaced by `***` (password files are named, never read).
/// An unset `control.socket` stays unset: where it goes depends on how the daemon is
/// started (systemd's `RuntimeDirectory=`), which a comment says.
pub fn effective(cfg: &Config, json: bool) -> anyhow::Result<String> {
    // Camera URLs serialize without their secrets (`CameraUrl`); password files are paths.
    Ok(if json {
        let mut v = serde_json::to_value(cfg)?;
        // Not configuration, but what holds on top of it: the desk's switches.
        v["applied_switches"] = serde_json::to_value(Applied::read(&cfg.storage.dir).unwrap_or_default())?;
        serde_json::to_string_pretty(&v)? + "\n"
    } else {
        let socket = match &cfg.control.socket {
            Some(_) => String::new(),
            None => format!(
                "# control.socket unset: $RUNTIME_DIRECTORY/control.sock under systemd (/run/gridwatch/control.sock), else {}\n",
                cfg.storage.dir.join(crate::device::config::CONTROL_SOCKET_NAME).display()
            ),
        };
        let version = env!("CARGO_PKG_VERSION");
        let switches = match Applied::read(&cfg.storage.dir) {
            Ok(a) => format!("# switches applied by commands: {}\n", super::status::switches_line(&a)),
            Err(e) => format!("# switches applied by commands: cannot read them: {e}\n"),
        };
        format!("# effective configuration (gridwatch {version})\n{socket}{switches}{}", toml::to_string_pretty(cfg)?)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn effective_configuration_has_defaults_and_no_password() {
        let text = r#"
site = "grid-07"
[mqtt]
host = "127.0.0.1"
[storage]
dir = "/var/lib/gridwatch"
[[cameras]]
id = "east-gate"
url = "rtsp://admin:s3cret@192.0.2.10:554/stream1"
"#;
        let cfg = Config::parse(text, Path::new("/etc/gridwatch/gridwatch.toml"), Path::new("/etc/gridwatch")).unwrap();
        let toml_text = effective(&cfg, false).unwrap();
        let json_text = effective(&cfg, true).unwrap();
        for out in [&toml_text, &json_text] {
            assert!(!out.contains("s3cret") && !out.contains("admin"), "{out}");
            assert!(out.contains("rtsp://***@192.0.2.10:554/stream1"), "{out}");
            assert!(out.contains("detect_fps") && out.contains("keep_alive_s"), "defaults filled in: {out}");
        }
        let back: toml::Value = toml::from_str(&toml_text).expect("the TOML output parses");
        assert_eq!(back["mqtt"]["port"].as_integer(), Some(1883));
        assert_eq!(back["cameras"][0]["track"][0].as_str(), Some("person"));
        let v: serde_json::Value = serde_json::from_str(&json_text).unwrap();
        assert_eq!(v["control"]["mode"], "0660");
        assert!(
            toml_text.contains("# control.socket unset: ") && toml_text.contains("/var/lib/gridwatch/control.sock")
        );
    }
}
