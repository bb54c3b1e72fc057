//! `gridwatch demo`: the whole job with nothing of the user's. It streams a street
//! clip over RTSP on loopback, starts a private mosquitto, runs the real pipeline
//! against both, and prints what a duty desk subscribed to the broker receives. Beside
//! it, the duty desk's console (`gridwatch desk`) runs on a free loopback port with 21
//! simulated grid points, and its URL and a login made for this run are printed.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};

use crate::contract::EventMessage;
use crate::device::config::{Config, ConfigError};
use crate::testkit::mosquitto::Mosquitto;
use crate::testkit::rtsp_server::RtspServer;

#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// H.264 or H.265 Annex-B clip to stream as the demo camera [default: the bundled street clip].
    #[arg(long)]
    pub clip: Option<PathBuf>,
    /// Folder the snapshots are written to.
    #[arg(long, default_value = "gridwatch-demo-snapshots")]
    pub out: PathBuf,
    /// Stop after this many seconds [default: run until Ctrl-C].
    #[arg(long)]
    pub seconds: Option<u64>,
    /// Labels that make events.
    #[arg(long, value_delimiter = ',', default_value = "person,car")]
    pub track: Vec<String>,
}

pub fn run(args: DemoArgs) -> anyhow::Result<ExitCode> {
    let clip = match args.clip.clone() {
        Some(c) if c.is_file() => c,
        Some(c) => bail!("{}: no such file; --clip wants an Annex-B .h264 or .h265 file", c.display()),
        None => crate::testkit::clip::bundled()?,
    };
    std::fs::create_dir_all(&args.out).with_context(|| format!("creating {}", args.out.display()))?;
    let out = args.out.canonicalize().unwrap_or(args.out.clone());

    let broker = Mosquitto::start()?;
    let camera = RtspServer::start(0, &[("/street", clip.as_path())])?;
    let state = std::env::temp_dir().join(format!("gridwatch-demo-{}", std::process::id()));
    let cfg = demo_config(broker.port(), &state, &camera.url("/street"), &args.track)?;

    let desk_dir = std::env::temp_dir().join(format!("gridwatch-demo-desk-{}", std::process::id()));
    let rt = tokio::runtime::Runtime::new()?;
    let result = rt.block_on(async {
        let stop = super::stop_on_signals();
        let desk = crate::desk::start_demo(broker.port(), &desk_dir, stop.clone()).await?;
        println!("gridwatch demo");
        println!("  camera   {} streams {}", camera.url("/street"), clip.display());
        println!(
            "  broker   mosquitto on 127.0.0.1:{} (subscribe: mosquitto_sub -p {} -t 'gridwatch/#' -v)",
            broker.port(),
            broker.port()
        );
        println!("  tracking {}", args.track.join(", "));
        println!("  snapshots go to {}", out.display());
        println!("  desk     {} (this demo site and {} simulated ones)", desk.url, crate::desk::DEMO_SIMULATED_SITES);
        println!("  login    user {}  password {}  (made for this run only)", desk.user, desk.password);
        println!("Ctrl-C stops. Events as the duty desk receives them:");
        if let Some(secs) = args.seconds {
            let s = stop.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_secs(secs)).await;
                s.cancel();
            });
        }
        let watcher = tokio::spawn(watch_as_desk(broker.port(), out.clone()));
        let result = crate::device::daemon::run(cfg, stop).await;
        // Let the last messages (ends, "stopped") reach the desk before leaving.
        tokio::time::sleep(Duration::from_millis(500)).await;
        watcher.abort();
        result
    });
    let _ = std::fs::remove_dir_all(&desk_dir);
    let _ = std::fs::remove_dir_all(&state);
    result?;
    println!("demo stopped; snapshots are in {}", out.display());
    Ok(ExitCode::SUCCESS)
}

/// The demo's configuration, validated like a file's. Built as a TOML document rather
/// than as text, so that any `--track` value (quotes included) stays one string.
fn demo_config(port: u16, state: &Path, camera_url: &str, track: &[String]) -> Result<Config, ConfigError> {
    fn table<const N: usize>(entries: [(&str, toml::Value); N]) -> toml::Table {
        entries.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
    }
    let camera = table([
        ("id", "street".into()),
        ("url", camera_url.into()),
        ("detect_fps", 5.into()),
        ("track", track.to_vec().into()),
    ]);
    let doc = table([
        ("site", "demo".into()),
        ("mqtt", table([("host", "127.0.0.1".into()), ("port", i64::from(port).into())]).into()),
        ("storage", table([("dir", state.display().to_string().into())]).into()),
        ("cameras", vec![camera].into()),
    ]);
    let text = toml::to_string(&doc).expect("a toml::Table always serialises");
    Config::parse(&text, Path::new("(demo configuration)"), Path::new("."))
}

/// Subscribes like a duty desk would, prints each event on one line, and writes each
/// snapshot to `out` under its event id.
async fn watch_as_desk(port: u16, out: PathBuf) -> anyhow::Result<()> {
    let mut opts = MqttOptions::new(format!("gridwatch-demo-desk-{}", std::process::id()), "127.0.0.1", port);
    opts.set_max_packet_size(16 << 20, 16 << 10);
    let (client, mut eventloop) = AsyncClient::new(opts, 16);
    client.subscribe("gridwatch/demo/#", QoS::AtLeastOnce).await?;
    loop {
        let Event::Incoming(Packet::Publish(p)) = eventloop.poll().await? else { continue };
        if let Some(name) = p.topic.strip_prefix("gridwatch/demo/snapshots/") {
            let file = out.join(format!("{name}.jpg"));
            if let Err(e) = std::fs::write(&file, &p.payload) {
                eprintln!("cannot write {}: {e}", file.display());
            }
        } else if p.topic == "gridwatch/demo/events" {
            match serde_json::from_slice::<EventMessage>(&p.payload) {
                Ok(ev) => println!("{}", desk_line(&ev, &out)),
                Err(e) => eprintln!("unreadable event: {e}"),
            }
        } else if p.topic == "gridwatch/demo/status" {
            println!("{:>12}  status {}", "", String::from_utf8_lossy(&p.payload));
        }
    }
}

fn desk_line(ev: &EventMessage, out: &Path) -> String {
    let time = ev.at.get(11..23).unwrap_or(&ev.at);
    let snap = match (&ev.snapshot, ev.event_type) {
        (Some(s), crate::contract::EventType::New | crate::contract::EventType::Update) => {
            let name = s.topic.rsplit('/').next().unwrap_or_default();
            format!("  {}", out.join(format!("{name}.jpg")).display())
        }
        _ => String::new(),
    };
    format!(
        "{time}  seq {:<4} {:<6} {:<7} {:.2}  {}  {}{snap}",
        ev.seq,
        ev.event_type.as_str(),
        ev.label,
        ev.score,
        ev.camera,
        &ev.event_id[ev.event_id.len().saturating_sub(6)..],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demo_config_holds_any_track_value() {
        let state = Path::new("/tmp/gridwatch-demo-test \"x\"");
        let cfg = demo_config(1884, state, "rtsp://127.0.0.1:8554/street", &["person".into(), "car".into()]).unwrap();
        assert_eq!(cfg.mqtt.port, 1884);
        assert_eq!(cfg.storage.dir, state);
        assert_eq!(cfg.cameras[0].track, ["person", "car"]);

        // A quote is refused as an unknown label, not by a broken TOML document.
        let err = demo_config(1884, state, "rtsp://127.0.0.1:8554/street", &["per\"son".into()]).unwrap_err();
        match err {
            ConfigError::Invalid { problems, .. } => {
                assert_eq!(problems.len(), 1, "{problems:?}");
                assert!(problems[0].reason.contains("\"per\"son\" is not a label"), "{problems:?}");
            }
            other => panic!("expected a validation problem, got {other}"),
        }
    }
}
