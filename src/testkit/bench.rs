//! `gridwatch bench`: the real pipeline on a vendored clip served over RTSP on loopback,
//! N camera sessions, against a private broker, measured stage by stage; and in the
//! same run the two floors nothing can avoid: decoding the stream (the same GStreamer
//! decoder, alone) and running the model (the same ONNX Runtime session, alone).
//!
//! The inference floor is measured for every model asked for (`--model`, both built-in
//! models by default), each pass back to back, with the later models' detections on
//! the stream's pictures compared with the first's; the pipeline runs the first.
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

use crate::device::analysis::detect::{Agreement, BuiltinModel, Detection, Detector, ModelSource};
use crate::device::config::Config;
use crate::device::ingest::{
    self, DecodeOptions, Decoder, DecoderChoice, EncodedFrame, Frame, Ingest, IngestOptions, StreamInfo,
};
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
    /// Models to measure, as `detector.model` takes them (a built-in name or a file);
    /// the pipeline runs the first. Empty: both built-in models, this machine's default
    /// first.
    pub models: Vec<String>,
    /// As `cameras.decoder`, for the cameras and the decode floor.
    pub decoder: DecoderChoice,
}

impl BenchOptions {
    /// The models measured, the pipeline's first.
    pub fn models(&self) -> Vec<String> {
        if !self.models.is_empty() {
            return self.models.clone();
        }
        let first = BuiltinModel::default_for_this_machine();
        let rest = BuiltinModel::ALL.into_iter().filter(|m| *m != first);
        std::iter::once(first).chain(rest).map(|m| m.name().to_owned()).collect()
    }
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
    /// The GStreamer element that decoded (what `cameras.decoder` chose).
    pub decoder: String,
    /// CPU ms to decode one access unit with the daemon's decoder settings, alone: the
    /// mean of the passes.
    pub decode_ms_per_frame: f64,
    /// CPU ms of one run of the pipeline's model with the daemon's session settings,
    /// alone: the mean of the passes.
    pub inference_ms: f64,
    /// Every model measured, the pipeline's first.
    pub models: Vec<ModelFloor>,
    /// Each pass, (decode, inference): one just before the pipeline runs and one just
    /// after, so that a machine whose speed drifts (a shared VM) is met half way.
    pub passes: Vec<(f64, f64)>,
    /// Both, per analysed picture (decoding every frame of the stream).
    pub per_analysed_ms: f64,
}

/// One model alone on the stream's pictures.
#[derive(Debug, Serialize)]
pub struct ModelFloor {
    pub model: String,
    pub sha256: String,
    /// CPU ms per run, mean of the passes, and each pass.
    pub inference_ms: f64,
    pub passes: Vec<f64>,
    /// The median run's CPU ms (mean of the passes' medians).
    pub median_ms: f64,
    /// median_ms / the first model's: the comparison (see [`RunTimes`]).
    pub ratio_to_first: f64,
    /// The median run's CPU ms with the caches emptied before each run (as in a busy
    /// pipeline), mean of the passes, and its ratio to the first model's.
    pub cold_ms: f64,
    pub cold_ratio_to_first: f64,
    /// Its detections scoring 0.5 or more against the first model's (None for the
    /// first), over every picture of every pass.
    pub agreement: Option<Agreement>,
}

/// Where the resident memory is, from /proc/self/smaps at the end of the window.
#[derive(Debug, Default, Serialize)]
pub struct MemorySplit {
    pub rss_mb: f64,
    /// Pages of libonnxruntime's file.
    pub onnxruntime_library_mb: f64,
    /// Pages of our binary's file (which holds both built-in models).
    pub binary_mb: f64,
    /// Pages of every other file mapped (GStreamer, libav and what they pull in, libc).
    pub other_libraries_mb: f64,
    /// Anonymous memory: heaps (ONNX Runtime's arenas, decoders' reference pictures,
    /// picture buffers), thread stacks.
    pub anonymous_mb: f64,
    /// Model sessions the daemon loaded.
    pub sessions: usize,
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
    pub memory: MemorySplit,
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

    let models = opts.models();
    progress(&format!("measuring the floors: the decoder alone, then each model alone ({})", models.join(", ")));
    let mut passes = vec![floors(&info, &sample, &opts, &models)?];

    progress(&format!("running {} camera(s): {} s warm-up, {} s measured", opts.cameras, opts.warmup, opts.seconds));
    let stop = CancellationToken::new();
    // As the daemon chooses them, from its model's speed (the floor's, measured alike).
    let sessions = cfg.detector_sessions(passes[0].inference_ms[0].mean_ms);
    let daemon = tokio::spawn(crate::device::daemon::run(cfg, stop.clone()));
    tokio::time::sleep(Duration::from_secs(opts.warmup)).await;
    let (s0, p0, t0, w0) = (stages::snapshot(), process_cpu(), thread_cpu_by_name(), Instant::now());
    tokio::time::sleep(Duration::from_secs(opts.seconds)).await;
    let (s1, p1, t1, window) = (stages::snapshot(), process_cpu(), thread_cpu_by_name(), w0.elapsed());
    let (rss, rss_shared) = rss_split();
    let memory = MemorySplit { sessions, ..memory_split() };
    let outbox_events = crate::device::publish::Outbox::open_read_only(&dir.join("state"))
        .and_then(|o| o.recent(None, 0, 1))
        .map(|e| e.last().map_or(0, |e| e.seq))
        .unwrap_or(0);
    stop.cancel();
    daemon.await.context("the daemon task")??;
    drop(broker);
    let _ = std::fs::remove_dir_all(&dir);

    progress("measuring the floors again");
    passes.push(floors(&info, &sample, &opts, &models)?);
    progress("measuring the clip stage: the ring, a clip as sent, a masked clip");
    let clips = super::bench_clips::measure(&info, &sample, opts.analysis_width)?;
    let floors = Floors::from_passes(&models, &passes);
    let (decode_floor, inference_floor) = (floors.decode_ms_per_frame, floors.inference_ms);

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
        floors: Floors { per_analysed_ms: per_analysed_floor, ..floors },
        overhead_ratio: pipeline / per_analysed_floor,
        cpu_cores_used: p1.saturating_sub(p0).as_secs_f64() / secs,
        rss_mb: rss as f64 / 1024.0,
        rss_runtime_and_model_mb: rss_shared as f64 / 1024.0,
        rss_rest_mb: rss.saturating_sub(rss_shared) as f64 / 1024.0,
        memory,
        events: outbox_events,
        clips,
    })
}

fn bench_config(opts: &BenchOptions, url: &str, broker_port: u16, dir: &Path) -> anyhow::Result<Config> {
    let sessions = opts.sessions.map_or(String::new(), |n| format!("sessions = {n}\n"));
    let model = &opts.models()[0];
    let mut text = format!(
        "site = \"bench\"\n[mqtt]\nhost = \"127.0.0.1\"\nport = {broker_port}\nmax_events_per_s = 0\n\
         [detector]\nmodel = {model:?}\nthreads = {}\n{sessions}[storage]\ndir = \"state\"\n",
        opts.threads
    );
    let decoder = String::from(opts.decoder.clone());
    for i in 0..opts.cameras {
        text += &format!(
            "[[cameras]]\nid = \"cam{i}\"\nurl = \"{url}\"\ndetect_fps = {}\nanalysis_width = {}\n\
             decoder = {decoder:?}\n[cameras.motion]\nenabled = {}\n",
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

/// One pass of the floors: the decoder, then each model.
#[derive(Debug, Serialize)]
pub struct Pass {
    pub decoder: String,
    pub decode_ms: f64,
    /// Per model, in order: CPU ms per run.
    #[serde(skip)]
    pub inference_ms: Vec<RunTimes>,
    /// Per model: CPU ms per run with the caches emptied before it.
    #[serde(skip)]
    pub cold_ms: Vec<RunTimes>,
    /// Per model after the first: its detections against the first's.
    #[serde(skip)]
    agreement: Vec<Agreement>,
    /// Per model: (name, sha256).
    #[serde(skip)]
    loaded: Vec<(String, String)>,
}

impl Floors {
    /// The mean of the passes, per model.
    fn from_passes(models: &[String], passes: &[Pass]) -> Floors {
        let n = passes.len().max(1) as f64;
        let mean = |f: &dyn Fn(&Pass) -> f64| passes.iter().map(f).sum::<f64>() / n;
        let per_model = |f: &dyn Fn(&Pass, usize) -> f64| (0..models.len()).map(|m| mean(&|p| f(p, m))).collect();
        let inference: Vec<f64> = per_model(&|p, m| p.inference_ms[m].mean_ms);
        let median: Vec<f64> = per_model(&|p, m| p.inference_ms[m].median_ms);
        let cold: Vec<f64> = per_model(&|p, m| p.cold_ms[m].median_ms);
        let models = models
            .iter()
            .enumerate()
            .map(|(m, _)| ModelFloor {
                model: passes[0].loaded[m].0.clone(),
                sha256: passes[0].loaded[m].1.clone(),
                inference_ms: inference[m],
                median_ms: median[m],
                passes: passes.iter().map(|p| p.inference_ms[m].mean_ms).collect(),
                ratio_to_first: median[m] / median[0],
                cold_ms: cold[m],
                cold_ratio_to_first: cold[m] / cold[0],
                agreement: (m > 0).then(|| passes.iter().fold(Agreement::default(), |a, p| a.plus(p.agreement[m - 1]))),
            })
            .collect();
        Floors {
            decoder: passes.last().map_or_else(String::new, |p| p.decoder.clone()),
            decode_ms_per_frame: mean(&|p| p.decode_ms),
            inference_ms: inference[0],
            models,
            passes: passes.iter().map(|p| (p.decode_ms, p.inference_ms[0].mean_ms)).collect(),
            per_analysed_ms: 0.0,
        }
    }
}

/// One pass of the floors: the decoder alone, then each model alone.
fn floors(info: &StreamInfo, sample: &[EncodedFrame], opts: &BenchOptions, models: &[String]) -> anyhow::Result<Pass> {
    let (decoder, decode_ms) = decode_floor(info, sample, opts)?;
    let pictures = stream_pictures(info, sample, opts)?;
    let mut pass = Pass {
        decoder,
        decode_ms,
        inference_ms: Vec::new(),
        cold_ms: Vec::new(),
        agreement: Vec::new(),
        loaded: Vec::new(),
    };
    let mut detectors = Vec::new();
    for model in models {
        let detector = Detector::load(ModelSource::from_setting(Some(Path::new(model))), None, opts.threads)?;
        pass.loaded.push((detector.model_name().to_owned(), detector.model_sha256().to_owned()));
        detectors.push(detector);
    }
    let (ms, found) = inference_floors(&mut detectors, &pictures, opts)?;
    (pass.inference_ms, pass.cold_ms) = (ms.warm, ms.cold);
    for other in found.iter().skip(1) {
        let each = found[0].iter().zip(other).map(|(r, c)| Agreement::of(r, c));
        pass.agreement.push(each.fold(Agreement::default(), Agreement::plus));
    }
    Ok(pass)
}

/// CPU ms per access unit of the daemon's decoder element alone (as the pipeline's
/// Decode stage is measured: between the probes around it), on the recorded stream
/// played 10 times over as fast as it goes, nothing else running; and the element.
fn decode_floor(info: &StreamInfo, sample: &[EncodedFrame], opts: &BenchOptions) -> anyhow::Result<(String, f64)> {
    let (width, height) = ingest::analysis_size(info.width, info.height, opts.analysis_width);
    let decoded = || stages::snapshot()[Stage::Decode as usize].clone();
    let before = decoded();
    let out = DecodeOptions { width, height, max_fps: opts.detect_fps };
    let mut decoder = Decoder::with_choice("bench", info, out, &opts.decoder, Box::new(drop))?;
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
    Ok((decoder.element().to_owned(), d.cpu.as_secs_f64() * 1000.0 / d.count as f64))
}

/// Every picture of the recorded stream at the analysis size (pictures no model was
/// calibrated or tested on: the clip's first seconds as served).
fn stream_pictures(info: &StreamInfo, sample: &[EncodedFrame], opts: &BenchOptions) -> anyhow::Result<Vec<Frame>> {
    let (width, height) = ingest::analysis_size(info.width, info.height, opts.analysis_width);
    let pictures: Arc<Mutex<Vec<Frame>>> = Arc::default();
    {
        let sink = pictures.clone();
        let on_frame = Box::new(move |f: Frame| sink.lock().unwrap_or_else(|p| p.into_inner()).push(f));
        let out = DecodeOptions { width, height, max_fps: 0.0 };
        let mut decoder = Decoder::with_choice("bench", info, out, &opts.decoder, on_frame)?;
        let wanted = sample.len().min(40);
        for f in sample.iter().take(wanted) {
            decoder.push(f)?;
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while pictures.lock().unwrap_or_else(|p| p.into_inner()).len() + 2 < wanted && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let pictures = std::mem::take(&mut *pictures.lock().unwrap_or_else(|p| p.into_inner()));
    if pictures.is_empty() {
        bail!("the decoder gave no picture for the inference floor");
    }
    Ok(pictures)
}

/// One model's detections on each picture.
type PerPicture = Vec<Vec<Detection>>;

/// Per model: CPU ms per run with its data in the caches (back to back), and with the
/// caches emptied before each run.
struct InferenceFloors {
    warm: Vec<RunTimes>,
    cold: Vec<RunTimes>,
}

/// One model's runs: the mean is what the pipeline pays on average; the median is what
/// the models are compared by, since on a shared VM a neighbour's burst lands on a few
/// runs of one model and moves its mean by several per cent (docs/performance.md).
#[derive(Debug, Clone, Copy, Default)]
pub struct RunTimes {
    pub mean_ms: f64,
    pub median_ms: f64,
}

impl RunTimes {
    fn of(runs: &mut [Duration]) -> RunTimes {
        if runs.is_empty() {
            return RunTimes::default();
        }
        runs.sort_unstable();
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        let mid = runs.len() / 2;
        let median =
            if runs.len().is_multiple_of(2) { (ms(runs[mid - 1]) + ms(runs[mid])) / 2.0 } else { ms(runs[mid]) };
        RunTimes { mean_ms: runs.iter().map(|&d| ms(d)).sum::<f64>() / runs.len() as f64, median_ms: median }
    }
}

/// Runs measured cold per model and pass: enough for a median, few enough that the
/// bench stays short (each run first reads [`EVICT_BYTES`]).
const COLD_RUNS: usize = 30;
/// Read before each cold run: twice the largest last-level cache we run on (this x86
/// VM's 32 MB; a Pi 5 has 2 MB, an RK3588 3 MB).
const EVICT_BYTES: usize = 64 << 20;

/// CPU ms of one model run for each of `detectors` (session.run alone, as the
/// pipeline's Inference stage), over at least 100 runs each on the stream's pictures,
/// and what each found on every picture. The models take turns run by run, so that
/// whatever else the machine does falls on all of them alike.
///
/// Then each model again with the caches emptied before every run: in the pipeline
/// the other cameras' decoding and analysis run between two of a session's runs and
/// push its weights out, and a model gains or loses differently from that (int8 lost
/// more than fp32 on this VM: docs/performance.md, fourth round).
fn inference_floors(
    detectors: &mut [Detector],
    pictures: &[Frame],
    opts: &BenchOptions,
) -> anyhow::Result<(InferenceFloors, Vec<PerPicture>)> {
    // The first pass allocates, and gives what each model finds.
    let mut found = Vec::new();
    for d in detectors.iter_mut() {
        found.push(pictures.iter().map(|p| d.detect(&p.picture, 0.5, 0.45)).collect::<Result<Vec<_>, _>>()?);
    }
    let picture = |i: usize| &pictures[i % pictures.len()].picture;
    let runs = 100.max(pictures.len());
    let mut warm = vec![Vec::with_capacity(runs); detectors.len()];
    for i in 0..runs {
        for (d, times) in detectors.iter_mut().zip(&mut warm) {
            times.push(run_cpu(opts, || d.detect(picture(i), 0.5, 0.45).map(drop))?);
        }
    }
    let evict = vec![1u8; EVICT_BYTES];
    let mut cold = vec![Vec::with_capacity(COLD_RUNS); detectors.len()];
    for i in 0..COLD_RUNS {
        for (d, times) in detectors.iter_mut().zip(&mut cold) {
            std::hint::black_box(std::hint::black_box(&evict).iter().step_by(64).fold(0u8, |a, &b| a.wrapping_add(b)));
            times.push(run_cpu(opts, || d.detect(picture(i), 0.5, 0.45).map(drop))?);
        }
    }
    let times = |runs: &mut Vec<Vec<Duration>>| runs.iter_mut().map(|r| RunTimes::of(r)).collect();
    Ok((InferenceFloors { warm: times(&mut warm), cold: times(&mut cold) }, found))
}

/// CPU the model runs inside `f` took, as the pipeline's Inference stage counts it.
fn run_cpu<E: Into<anyhow::Error>>(opts: &BenchOptions, f: impl FnOnce() -> Result<(), E>) -> anyhow::Result<Duration> {
    let before = stages::snapshot()[Stage::Inference as usize].clone();
    let start = process_cpu();
    f().map_err(Into::into)?;
    let process = process_cpu().saturating_sub(start);
    let inference = stages::snapshot()[Stage::Inference as usize].since(&before).cpu;
    // With one thread the run is all on ours; with more, the pool's threads count too.
    Ok(if opts.threads > 1 { process.min(inference * opts.threads as u32) } else { inference })
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

/// Resident memory by where it comes from (see [`MemorySplit`]).
fn memory_split() -> MemorySplit {
    let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap_or_default();
    let exe = std::env::current_exe().ok().and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()));
    let mut kb = [0u64; 4]; // onnxruntime, binary, other files, anonymous
    let mut group = 3;
    for line in smaps.lines() {
        if let Some(v) = line.strip_prefix("Rss:") {
            kb[group] += v.trim().trim_end_matches("kB").trim().parse::<u64>().unwrap_or(0);
        } else if line
            .split_whitespace()
            .next()
            .is_some_and(|f| f.contains('-') && f.chars().all(|c| c.is_ascii_hexdigit() || c == '-'))
        {
            let path = line.split_whitespace().nth(5).unwrap_or("");
            group = if path.contains("libonnxruntime") {
                0
            } else if exe.as_deref().is_some_and(|e| path.ends_with(e)) {
                1
            } else if path.starts_with('/') {
                2
            } else {
                3 // [heap], [stack], anonymous mappings
            };
        }
    }
    let mb = |k: u64| k as f64 / 1024.0;
    MemorySplit {
        rss_mb: mb(kb.iter().sum()),
        onnxruntime_library_mb: mb(kb[0]),
        binary_mb: mb(kb[1]),
        other_libraries_mb: mb(kb[2]),
        anonymous_mb: mb(kb[3]),
        sessions: 0,
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_on_a_few_runs_moves_the_mean_not_the_median() {
        let ms = |v: &[u64]| v.iter().map(|&m| Duration::from_millis(m)).collect::<Vec<_>>();
        let quiet = RunTimes::of(&mut ms(&[20, 21, 19, 20, 20]));
        assert_eq!((quiet.mean_ms, quiet.median_ms), (20.0, 20.0));
        let burst = RunTimes::of(&mut ms(&[20, 21, 60, 19, 20]));
        assert_eq!(burst.median_ms, 20.0);
        assert_eq!(burst.mean_ms, 28.0);
        assert_eq!(RunTimes::of(&mut ms(&[30, 10, 20, 40])).median_ms, 25.0, "even count: the middle two");
        assert_eq!(RunTimes::of(&mut []).median_ms, 0.0);
    }
}
