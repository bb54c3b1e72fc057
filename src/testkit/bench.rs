//! `gridwatch bench`: the real pipeline on a vendored clip served over RTSP on loopback,
//! N camera sessions, against a private broker, measured stage by stage; and in the
//! same run the two floors nothing can avoid: decoding the stream (the same GStreamer
//! decoder, alone) and running the model (the same ONNX Runtime session, alone).
//!
//! Promises: every figure comes from this run on this machine; CPU figures are CPU
//! time (not wall time) so a busy machine shows as lost throughput, not as cheaper
//! stages. The RTSP server runs in a child process, so its work is not counted.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::device::analysis::detect::{Detector, ModelSource};
use crate::device::config::Config;
use crate::device::ingest::{self, DecodeOptions, Decoder, EncodedFrame, Frame, Ingest, IngestOptions, StreamInfo};
use crate::device::ops::stages::{self, Stage, StageTotals};
use crate::testkit::mosquitto::Mosquitto;

#[derive(Debug, Clone)]
pub struct BenchOptions {
    pub clip: PathBuf,
    pub cameras: usize,
    pub detect_fps: f64,
    /// Measured window, after `warmup`.
    pub seconds: u64,
    pub warmup: u64,
    /// ONNX Runtime intra-op threads, as `detector.threads`.
    pub threads: usize,
    /// Model sessions, as `detector.sessions` (None: the daemon's default).
    pub sessions: Option<usize>,
    pub analysis_width: u32,
    /// Let the motion gate skip still frames (off: every analysed frame is inferred).
    pub motion: bool,
}

#[derive(Debug, Serialize)]
pub struct StageReport {
    pub stage: Stage,
    /// Items per second over the window (pictures, frames, events).
    pub per_second: f64,
    /// CPU milliseconds spent in the stage per analysed picture.
    pub cpu_ms_per_analysed: f64,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
}

#[derive(Debug, Serialize)]
pub struct ThreadGroup {
    pub name: String,
    pub threads: usize,
    /// Share of one core over the window.
    pub cores: f64,
}

#[derive(Debug, Serialize)]
pub struct Floors {
    /// CPU ms to decode one access unit with the daemon's decoder settings, alone: the
    /// mean of the passes.
    pub decode_ms_per_frame: f64,
    /// CPU ms of one model run with the daemon's session settings, alone: the mean of
    /// the passes.
    pub inference_ms: f64,
    /// Each pass, (decode, inference): one just before the pipeline runs and one just
    /// after, so that a machine whose speed drifts (a shared VM) is met half way.
    pub passes: Vec<(f64, f64)>,
    /// Both, per analysed picture (decoding every frame of the stream).
    pub per_analysed_ms: f64,
}

#[derive(Debug, Serialize)]
pub struct BenchReport {
    pub machine: String,
    pub clip: String,
    pub cameras: usize,
    pub detect_fps: f64,
    pub seconds: f64,
    pub frames_in_per_s: f64,
    pub analysed_per_s: f64,
    /// Analysed pictures the cameras should have given at detect_fps.
    pub analysed_expected_per_s: f64,
    pub stages: Vec<StageReport>,
    pub threads: Vec<ThreadGroup>,
    /// Whole-process CPU per analysed picture.
    pub pipeline_cpu_ms_per_analysed: f64,
    pub floors: Floors,
    /// pipeline_cpu_ms_per_analysed / floors.per_analysed_ms (target <= 1.15).
    pub overhead_ratio: f64,
    pub cpu_cores_used: f64,
    pub rss_mb: f64,
    /// Resident pages of libonnxruntime and the binary (which holds the model), and
    /// the rest.
    pub rss_runtime_and_model_mb: f64,
    pub rss_rest_mb: f64,
    /// Events the run stored (and the broker acknowledged, or was about to).
    pub events: u64,
    /// The clip stage (issue 16), on the recorded stream.
    pub clips: super::bench_clips::ClipCosts,
}

/// Runs the whole bench; `progress` gets one line per phase.
pub async fn run(opts: BenchOptions, progress: impl Fn(&str)) -> anyhow::Result<BenchReport> {
    if !opts.clip.is_file() {
        bail!("{}: no such clip; give an H.264 or H.265 Annex-B file with --clip", opts.clip.display());
    }
    let server = ServerChild::start(&opts.clip)?;
    progress(&format!("serving {} at {}", opts.clip.display(), server.url));

    progress("recording 4 s of the stream for the decode floor");
    let (info, sample) = record(&server.url, Duration::from_secs(4)).await?;

    let broker = Mosquitto::start().context("starting a private mosquitto for the bench")?;
    let dir = std::env::temp_dir().join(format!("gridwatch-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let cfg = bench_config(&opts, &server.url, broker.port(), &dir)?;

    progress("measuring the floors: the decoder alone, then the model alone");
    let mut passes = vec![floors(&info, &sample, &opts)?];

    progress(&format!("running {} camera(s): {} s warm-up, {} s measured", opts.cameras, opts.warmup, opts.seconds));
    let stop = CancellationToken::new();
    let daemon = tokio::spawn(crate::device::daemon::run(cfg, stop.clone()));
    tokio::time::sleep(Duration::from_secs(opts.warmup)).await;
    let (s0, p0, t0, w0) = (stages::snapshot(), process_cpu(), thread_cpu_by_name(), Instant::now());
    tokio::time::sleep(Duration::from_secs(opts.seconds)).await;
    let (s1, p1, t1, window) = (stages::snapshot(), process_cpu(), thread_cpu_by_name(), w0.elapsed());
    let (rss, rss_shared) = rss_split();
    let outbox_events = crate::device::publish::Outbox::open_read_only(&dir.join("state"))
        .and_then(|o| o.recent(None, 0, 1))
        .map(|e| e.last().map_or(0, |e| e.seq))
        .unwrap_or(0);
    stop.cancel();
    daemon.await.context("the daemon task")??;
    drop(broker);
    let _ = std::fs::remove_dir_all(&dir);

    progress("measuring the floors again");
    passes.push(floors(&info, &sample, &opts)?);
    progress("measuring the clip stage: the ring, a clip as sent, a masked clip");
    let clips = super::bench_clips::measure(&info, &sample, opts.analysis_width)?;
    let mean = |f: fn(&(f64, f64)) -> f64| passes.iter().map(f).sum::<f64>() / passes.len() as f64;
    let (decode_floor, inference_floor) = (mean(|p| p.0), mean(|p| p.1));

    let secs = window.as_secs_f64();
    let delta: Vec<StageTotals> = s1.iter().zip(&s0).map(|(a, b)| a.since(b)).collect();
    let of = |stage: Stage| &delta[stage as usize];
    let analysed = of(Stage::Inference).count.max(1) as f64;
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let stages = delta
        .iter()
        .map(|d| StageReport {
            stage: d.stage,
            per_second: d.count as f64 / secs,
            cpu_ms_per_analysed: ms(d.cpu) / analysed,
            p50_ms: d.quantile(0.5).map(ms),
            p99_ms: d.quantile(0.99).map(ms),
        })
        .collect();
    let frames_in = of(Stage::Decode).count as f64;
    let per_analysed_floor = decode_floor * frames_in / analysed + inference_floor;
    let pipeline = ms(p1.saturating_sub(p0)) / analysed;
    Ok(BenchReport {
        machine: machine(),
        clip: opts.clip.display().to_string(),
        cameras: opts.cameras,
        detect_fps: opts.detect_fps,
        seconds: secs,
        frames_in_per_s: frames_in / secs,
        analysed_per_s: analysed / secs,
        analysed_expected_per_s: opts.cameras as f64 * opts.detect_fps.min(info.fps.unwrap_or(opts.detect_fps)),
        stages,
        threads: thread_groups(&t0, &t1, secs),
        pipeline_cpu_ms_per_analysed: pipeline,
        floors: Floors {
            decode_ms_per_frame: decode_floor,
            inference_ms: inference_floor,
            passes,
            per_analysed_ms: per_analysed_floor,
        },
        overhead_ratio: pipeline / per_analysed_floor,
        cpu_cores_used: p1.saturating_sub(p0).as_secs_f64() / secs,
        rss_mb: rss as f64 / 1024.0,
        rss_runtime_and_model_mb: rss_shared as f64 / 1024.0,
        rss_rest_mb: rss.saturating_sub(rss_shared) as f64 / 1024.0,
        events: outbox_events,
        clips,
    })
}

fn bench_config(opts: &BenchOptions, url: &str, broker_port: u16, dir: &Path) -> anyhow::Result<Config> {
    let sessions = opts.sessions.map_or(String::new(), |n| format!("sessions = {n}\n"));
    let mut text = format!(
        "site = \"bench\"\n[mqtt]\nhost = \"127.0.0.1\"\nport = {broker_port}\nmax_events_per_s = 0\n\
         [detector]\nthreads = {}\n{sessions}[storage]\ndir = \"state\"\n",
        opts.threads
    );
    for i in 0..opts.cameras {
        text += &format!(
            "[[cameras]]\nid = \"cam{i}\"\nurl = \"{url}\"\ndetect_fps = {}\nanalysis_width = {}\n\
             [cameras.motion]\nenabled = {}\n",
            opts.detect_fps, opts.analysis_width, opts.motion
        );
    }
    Config::parse(&text, &dir.join("bench.toml"), dir).map_err(|e| anyhow::anyhow!("{e}"))
}

/// `gridwatch serve` in a child process, so that its CPU is not ours.
struct ServerChild {
    child: Child,
    url: String,
    /// Kept open: `serve` prints more, and a closed pipe would end it.
    _stdout: BufReader<std::process::ChildStdout>,
}

impl ServerChild {
    fn start(clip: &Path) -> anyhow::Result<ServerChild> {
        let port = crate::testkit::mosquitto::free_port()?;
        let mut child = Command::new(std::env::current_exe()?)
            .args(["serve", "--port", &port.to_string()])
            .arg(clip)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("starting `gridwatch serve` for the bench")?;
        let mut line = String::new();
        let mut stdout = BufReader::new(child.stdout.take().context("serve's output")?);
        stdout.read_line(&mut line)?;
        let url = line.trim().to_owned();
        if !url.starts_with("rtsp://") {
            let _ = child.kill();
            bail!("`gridwatch serve` did not start (said {url:?})");
        }
        Ok(ServerChild { child, url, _stdout: stdout })
    }
}

impl Drop for ServerChild {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The access units of `within` of the stream, from its first keyframe.
async fn record(url: &str, within: Duration) -> anyhow::Result<(StreamInfo, Vec<EncodedFrame>)> {
    let (tx, mut rx) = tokio::sync::mpsc::channel(64);
    let stop = CancellationToken::new();
    let url = crate::device::ingest::CameraUrl::parse(url)?;
    let task = tokio::spawn(ingest::run("bench".into(), url, IngestOptions::default(), tx, stop.clone()));
    let deadline = tokio::time::Instant::now() + within + Duration::from_secs(10);
    let (mut info, mut frames) = (None, Vec::new());
    while let Ok(Some(msg)) = tokio::time::timeout_at(deadline, rx.recv()).await {
        match msg {
            Ingest::Connected(i) => info = Some(i),
            Ingest::Frame(f) => {
                frames.push(f);
                let first = frames[0].received_at;
                if frames.last().and_then(|f| f.received_at.duration_since(first).ok()) >= Some(within) {
                    break;
                }
            }
            Ingest::Disconnected { reason, .. } => bail!("the bench's own stream failed: {reason}"),
        }
    }
    stop.cancel();
    let _ = task.await;
    match info {
        Some(info) if frames.len() > 2 => Ok((info, frames)),
        _ => bail!("no stream from the bench's own server within {within:?}"),
    }
}

/// One pass of both floors: (decode ms per frame, inference ms per run).
fn floors(info: &StreamInfo, sample: &[EncodedFrame], opts: &BenchOptions) -> anyhow::Result<(f64, f64)> {
    Ok((decode_floor(info, sample, opts)?, inference_floor(info, sample, opts)?))
}

/// CPU ms per access unit of the daemon's decoder element alone (as the pipeline's
/// Decode stage is measured: between the probes around it), on the recorded stream
/// played 10 times over as fast as it goes, nothing else running.
fn decode_floor(info: &StreamInfo, sample: &[EncodedFrame], opts: &BenchOptions) -> anyhow::Result<f64> {
    let (width, height) = ingest::analysis_size(info.width, info.height, opts.analysis_width);
    let decoded = || stages::snapshot()[Stage::Decode as usize].clone();
    let before = decoded();
    let mut decoder =
        Decoder::new("bench", info, DecodeOptions { width, height, max_fps: opts.detect_fps }, Box::new(drop))?;
    let span = sample.last().map_or(Duration::ZERO, |f| f.pts) + Duration::from_millis(100);
    let mut pushed = 0;
    for round in 0..10u32 {
        for f in sample {
            // Stay below the decoder's queue limit, which would skip to a keyframe.
            while pushed - decoded().since(&before).count > 10 {
                std::thread::sleep(Duration::from_millis(1));
            }
            let mut f = f.clone();
            f.pts += span * round;
            decoder.push(&f)?;
            pushed += 1;
        }
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while decoded().since(&before).count < pushed && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    let d = decoded().since(&before);
    if d.count == 0 {
        bail!("the decoder decoded nothing for the floor");
    }
    Ok(d.cpu.as_secs_f64() * 1000.0 / d.count as f64)
}

/// CPU ms of one model run (ONNX Runtime's `run` alone) on the stream's pictures at
/// the analysis size.
fn inference_floor(info: &StreamInfo, sample: &[EncodedFrame], opts: &BenchOptions) -> anyhow::Result<f64> {
    let (width, height) = ingest::analysis_size(info.width, info.height, opts.analysis_width);
    let pictures: Arc<Mutex<Vec<Frame>>> = Arc::default();
    {
        let sink = pictures.clone();
        let on_frame = Box::new(move |f: Frame| sink.lock().unwrap_or_else(|p| p.into_inner()).push(f));
        let mut decoder = Decoder::new("bench", info, DecodeOptions { width, height, max_fps: 0.0 }, on_frame)?;
        for f in sample.iter().take(20) {
            decoder.push(f)?;
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while pictures.lock().unwrap_or_else(|p| p.into_inner()).len() < 10 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let pictures = std::mem::take(&mut *pictures.lock().unwrap_or_else(|p| p.into_inner()));
    if pictures.is_empty() {
        bail!("the decoder gave no picture for the inference floor");
    }
    let mut detector = Detector::load(ModelSource::Builtin, None, opts.threads)?;
    detector.detect(&pictures[0].picture, 0.5, 0.45)?; // the first run allocates
    let before = stages::snapshot()[Stage::Inference as usize].clone();
    let (start, runs) = (process_cpu(), 100);
    for i in 0..runs {
        detector.detect(&pictures[i % pictures.len()].picture, 0.5, 0.45)?;
    }
    let process = process_cpu().saturating_sub(start);
    let d = stages::snapshot()[Stage::Inference as usize].since(&before);
    // With one thread the run is all on ours; with more, the pool's threads count too.
    let cpu = if opts.threads > 1 { process.min(d.cpu * opts.threads as u32) } else { d.cpu };
    Ok(cpu.as_secs_f64() * 1000.0 / runs as f64)
}

/// This process's CPU time (user and system) so far.
pub(super) fn process_cpu() -> Duration {
    // SAFETY: rusage is plain integers, for which all-zero bytes are a valid value.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: a valid out-pointer.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// CPU time of this process's threads, by thread name (clock ticks, 10 ms).
fn thread_cpu_by_name() -> Vec<(u32, String, Duration)> {
    // SAFETY: sysconf only reads a system constant.
    let tick = 1.0 / unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let mut out = Vec::new();
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else { return out };
    for task in tasks.flatten() {
        let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else { continue };
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else { continue };
        let name = stat[open + 1..close].to_owned();
        let fields: Vec<&str> = stat[close + 2..].split(' ').collect();
        let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
        // After the name: state is field 0, utime 11, stime 12.
        let tid = task.file_name().to_str().and_then(|t| t.parse().ok()).unwrap_or(0);
        out.push((tid, name, Duration::from_secs_f64((ticks(11) + ticks(12)) * tick)));
    }
    out
}

/// Threads grouped by what they do, busiest first. A thread that started within the
/// window counts from zero.
fn thread_groups(before: &[(u32, String, Duration)], after: &[(u32, String, Duration)], secs: f64) -> Vec<ThreadGroup> {
    let mut groups: Vec<ThreadGroup> = Vec::new();
    for (tid, name, cpu) in after {
        let earlier = before.iter().find(|(t, n, _)| t == tid && n == name).map_or(Duration::ZERO, |b| b.2);
        let group = if let Some((prefix, _)) = name.split_once('-').filter(|(p, _)| ["decode", "analyse"].contains(p)) {
            prefix.to_owned()
        } else if name.starts_with("tokio") {
            "async runtime (RTSP, MQTT)".to_owned()
        } else if name.contains(':') {
            "GStreamer streaming (decode, convert)".to_owned()
        } else {
            name.clone()
        };
        let cores = cpu.saturating_sub(earlier).as_secs_f64() / secs;
        match groups.iter_mut().find(|g| g.name == group) {
            Some(g) => {
                g.threads += 1;
                g.cores += cores;
            }
            None => groups.push(ThreadGroup { name: group, threads: 1, cores }),
        }
    }
    groups.retain(|g| g.cores >= 0.005);
    groups.sort_by(|a, b| b.cores.total_cmp(&a.cores));
    groups
}

/// Resident kB in all, and of the pages mapped from libonnxruntime and our binary
/// (which carries the model).
fn rss_split() -> (u64, u64) {
    let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap_or_default();
    let exe = std::env::current_exe().ok().and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()));
    let (mut total, mut shared, mut counted) = (0, 0, false);
    for line in smaps.lines() {
        if let Some(kb) = line.strip_prefix("Rss:") {
            let kb: u64 = kb.trim().trim_end_matches("kB").trim().parse().unwrap_or(0);
            total += kb;
            if counted {
                shared += kb;
            }
        } else if line
            .split_whitespace()
            .next()
            .is_some_and(|f| f.contains('-') && f.chars().all(|c| c.is_ascii_hexdigit() || c == '-'))
        {
            // A mapping's header: range, permissions, offset, device, inode, path.
            let path = line.split_whitespace().nth(5).unwrap_or("");
            counted = path.contains("libonnxruntime") || exe.as_deref().is_some_and(|e| path.ends_with(e));
        }
    }
    (total, shared)
}

fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name").and_then(|v| v.split_once(':')).map(|(_, v)| v.trim().to_owned()))
        .unwrap_or_else(|| std::env::consts::ARCH.to_owned());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    format!("{model}, {cores} cores, {}", std::env::consts::ARCH)
}
