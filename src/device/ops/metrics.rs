//! An optional Prometheus endpoint (`GET /metrics`, text exposition format 0.0.4),
//! off unless `[metrics] port` is set, on loopback unless told otherwise.
//!
//! Promises: a scrape reads counters the pipeline keeps anyway (it never waits on a
//! pipeline stage); names and labels are the ones docs/operations.md lists; the
//! listener answers one request per connection, drops a client after 5 s, serves at
//! most [`MAX_CLIENTS`] at once (more wait in the kernel's backlog, costing no file
//! descriptor), and backs off when accepting fails instead of spinning.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use crate::contract::CameraState;
use crate::device::ops::control::AcceptBackoff;
use crate::device::ops::health::INFERENCE_BUCKETS;
use crate::device::ops::live::Live;

/// Scrapes served at once; Prometheus makes one at a time.
pub const MAX_CLIENTS: usize = 16;
/// How long one scrape may take, from accept to the last byte.
const EXCHANGE_LIMIT: Duration = Duration::from_secs(5);

/// Binds `addr` and serves scrapes until `shutdown`.
pub async fn serve(
    addr: SocketAddr,
    live: Arc<Live>,
    shutdown: CancellationToken,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("metrics: cannot listen on {addr}: {e} (metrics.port in use?)"))?;
    info!(%addr, "metrics endpoint ready at /metrics");
    Ok(tokio::spawn(async move {
        let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CLIENTS));
        let mut backoff = AcceptBackoff::default();
        loop {
            let (slot, mut stream) = tokio::select! {
                r = accept_within(&listener, &slots) => match r {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        backoff.failed("metrics", &e).await;
                        continue;
                    }
                },
                _ = shutdown.cancelled() => return,
            };
            backoff.succeeded();
            let live = live.clone();
            tokio::spawn(async move {
                let _slot = slot;
                let exchange = async {
                    let mut buf = vec![0u8; 2048];
                    let mut n = 0;
                    // The request line and headers; a scrape has no body.
                    while n < buf.len() && !buf[..n].windows(4).any(|w| w == b"\r\n\r\n") {
                        match stream.read(&mut buf[n..]).await? {
                            0 => break,
                            k => n += k,
                        }
                    }
                    let head = String::from_utf8_lossy(&buf[..n]);
                    let target = head.split_whitespace().nth(1).unwrap_or("");
                    let response = if head.starts_with("GET ")
                        && (target == "/metrics" || target.starts_with("/metrics?"))
                    {
                        let body = render(&live).await;
                        format!(
                            "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                            body.len()
                        )
                    } else {
                        "HTTP/1.1 404 Not Found\r\nContent-Type: text/plain\r\nContent-Length: 19\r\nConnection: close\r\n\r\nonly /metrics here\n".to_owned()
                    };
                    stream.write_all(response.as_bytes()).await?;
                    stream.shutdown().await
                };
                if let Err(e) = tokio::time::timeout(EXCHANGE_LIMIT, exchange).await.unwrap_or(Ok(())) {
                    debug!("metrics client: {e}");
                }
            });
        }
    }))
}

/// The outbox's own troubles: failing writes, a damaged file moved aside, events that
/// could not be stored and pictures that no longer matched their hash.
fn outbox_families(out: &mut String, live: &Live) {
    let h = live.outbox.health();
    let flag = |b: bool| f64::from(u8::from(b));
    family(out, "gridwatch_outbox_write_failing", "gauge", "1 while the outbox cannot write (full or damaged disk).")
        .sample("gridwatch_outbox_write_failing", &[], flag(h.write_error.is_some()));
    family(out, "gridwatch_outbox_write_errors_total", "counter", "Outbox writes that failed.").sample(
        "gridwatch_outbox_write_errors_total",
        &[],
        h.write_errors as f64,
    );
    family(out, "gridwatch_outbox_damaged", "gauge", "1 while a damaged outbox moved aside for recovery is on disk.")
        .sample("gridwatch_outbox_damaged", &[], flag(h.damaged_file.is_some()));
    let per_camera = [
        ("gridwatch_events_dropped_total", "Events that could not be stored (each a gap in seq).", &h.events_dropped),
        (
            "gridwatch_snapshots_damaged_total",
            "Stored pictures that no longer matched their hash.",
            &h.snapshots_damaged,
        ),
    ];
    for (name, help, counts) in per_camera {
        let mut f = family(out, name, "counter", help);
        for c in &live.cameras {
            f.sample(name, &[("camera", &c.id)], counts.get(&c.id).copied().unwrap_or(0) as f64);
        }
    }
}

/// Waits for a free client slot, then accepts.
async fn accept_within(
    listener: &TcpListener,
    slots: &Arc<tokio::sync::Semaphore>,
) -> std::io::Result<(tokio::sync::OwnedSemaphorePermit, tokio::net::TcpStream)> {
    let slot = slots.clone().acquire_owned().await.map_err(std::io::Error::other)?;
    let (stream, _) = listener.accept().await?;
    Ok((slot, stream))
}

/// One family: `# HELP`, `# TYPE`, then its samples.
struct Family<'a> {
    out: &'a mut String,
}

impl Family<'_> {
    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let v = v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n");
                let _ = write!(self.out, "{k}=\"{v}\"");
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {value}");
    }
}

fn family<'a>(out: &'a mut String, name: &str, kind: &str, help: &str) -> Family<'a> {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    Family { out }
}

/// Reads one per-camera counter.
type Counter = fn(&crate::device::ops::health::HealthCounters) -> u64;

/// The exposition text for the daemon as it is now.
pub async fn render(live: &Live) -> String {
    let mut out = String::new();
    let version = env!("CARGO_PKG_VERSION");
    family(&mut out, "gridwatch_build_info", "gauge", "Always 1; the labels say what runs.").sample(
        "gridwatch_build_info",
        &[("version", version), ("site", &live.site), ("model", &live.model_name)],
        1.0,
    );
    family(&mut out, "gridwatch_uptime_seconds", "gauge", "Seconds since the daemon started.").sample(
        "gridwatch_uptime_seconds",
        &[],
        live.started.elapsed().as_secs_f64().round(),
    );

    camera_families(&mut out, live);
    if let Ok(o) = live.outbox_status().await {
        family(&mut out, "gridwatch_outbox_pending", "gauge", "Events stored but not yet acknowledged by the broker.")
            .sample("gridwatch_outbox_pending", &[], o.pending as f64);
        family(
            &mut out,
            "gridwatch_outbox_oldest_age_seconds",
            "gauge",
            "Age of the oldest event waiting for the broker (0 when none).",
        )
        .sample("gridwatch_outbox_oldest_age_seconds", &[], o.oldest_pending_age_s.unwrap_or(0.0));
    }
    outbox_families(&mut out, live);
    link_families(&mut out, live);
    out
}

/// Per camera: state, rates, counters and the inference histogram.
fn camera_families(out: &mut String, live: &Live) {
    let counters: Vec<_> = live.cameras.iter().map(|c| c.health.counters()).collect();
    let rates = live.rates();
    let cams = || live.cameras.iter().zip(&counters).enumerate();

    let mut f = family(out, "gridwatch_camera_up", "gauge", "1 while the camera streams, else 0.");
    for (_, (c, h)) in cams() {
        f.sample(
            "gridwatch_camera_up",
            &[("camera", &c.id)],
            f64::from(u8::from(matches!(h.state, CameraState::Streaming | CameraState::Paused))),
        );
    }
    let mut f = family(out, "gridwatch_camera_state", "gauge", "1 for the camera's current state.");
    for (_, (c, h)) in cams() {
        let state = serde_json::to_value(h.state).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default();
        f.sample("gridwatch_camera_state", &[("camera", &c.id), ("state", &state)], 1.0);
    }
    let mut f = family(out, "gridwatch_camera_fps", "gauge", "Frames a second received from the camera (last 10 s).");
    for (i, (c, _)) in cams() {
        f.sample("gridwatch_camera_fps", &[("camera", &c.id)], f64::from(rates.get(i).map_or(0.0, |r| r.fps_in)));
    }
    let mut f = family(out, "gridwatch_camera_analyzed_fps", "gauge", "Pictures a second analysed (last 10 s).");
    for (i, (c, _)) in cams() {
        f.sample(
            "gridwatch_camera_analyzed_fps",
            &[("camera", &c.id)],
            f64::from(rates.get(i).map_or(0.0, |r| r.fps_analyzed)),
        );
    }
    let totals: [(&str, &str, Counter); 6] = [
        ("gridwatch_frames_received_total", "Access units received from the camera.", |h| h.frames_in),
        ("gridwatch_frames_analyzed_total", "Pictures run through detection.", |h| h.frames_analyzed),
        ("gridwatch_frames_skipped_total", "Pictures dropped because analysis was busy.", |h| h.frames_skipped),
        ("gridwatch_reconnects_total", "Streaming sessions that ended and were reconnected.", |h| h.reconnects_total),
        ("gridwatch_decode_errors_total", "Damaged pictures and decoder failures.", |h| h.decode_errors),
        ("gridwatch_packets_lost_total", "RTP packets the camera's stream lost on the way.", |h| h.packets_lost),
    ];
    for (name, help, get) in totals {
        let mut f = family(out, name, "counter", help);
        for (_, (c, h)) in cams() {
            f.sample(name, &[("camera", &c.id)], get(h) as f64);
        }
    }

    let name = "gridwatch_inference_seconds";
    family(out, name, "histogram", "Time the model took per picture.");
    for (_, (c, h)) in cams() {
        let hist = &h.inference;
        for (le, n) in INFERENCE_BUCKETS.iter().zip(hist.buckets) {
            let le = le.to_string();
            Family { out }.sample(&format!("{name}_bucket"), &[("camera", &c.id), ("le", &le)], n as f64);
        }
        let mut f = Family { out };
        f.sample(&format!("{name}_bucket"), &[("camera", &c.id), ("le", "+Inf")], hist.count as f64);
        f.sample(&format!("{name}_sum"), &[("camera", &c.id)], hist.sum_s);
        f.sample(&format!("{name}_count"), &[("camera", &c.id)], hist.count as f64);
    }
}

/// The broker link and the watchdog's verdict.
fn link_families(out: &mut String, live: &Live) {
    let link = live.link.state();
    family(out, "gridwatch_mqtt_connected", "gauge", "1 while connected to the broker.").sample(
        "gridwatch_mqtt_connected",
        &[],
        f64::from(u8::from(link.connected)),
    );
    family(out, "gridwatch_mqtt_connects_total", "counter", "Successful connections to the broker.").sample(
        "gridwatch_mqtt_connects_total",
        &[],
        link.connects_total as f64,
    );
    family(out, "gridwatch_events_total", "counter", "Events the broker acknowledged since start.").sample(
        "gridwatch_events_total",
        &[],
        link.delivered_total as f64,
    );
    let stuck = live.watchdog_problem.lock().unwrap_or_else(|p| p.into_inner()).is_some();
    family(out, "gridwatch_pipeline_stuck", "gauge", "1 while the watchdog finds a stage that makes no progress.")
        .sample("gridwatch_pipeline_stuck", &[], f64::from(u8::from(stuck)));
}
