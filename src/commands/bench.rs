//! `gridwatch bench`: runs `crate::testkit::bench` and prints what it found, as a table for a
//! person or as JSON (`--json`) for docs/performance.md and scripts.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;

use crate::device::analysis::detect::ModelSource;
use crate::device::ingest::DecoderChoice;
use crate::testkit::bench::{BenchOptions, BenchReport};

#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// Camera sessions on the clip at once.
    #[arg(long, default_value_t = 4)]
    pub cameras: usize,
    /// Seconds measured, after the warm-up.
    #[arg(long, default_value_t = 30)]
    pub seconds: u64,
    #[arg(long, default_value_t = 8)]
    pub warmup: u64,
    /// The clip the cameras stream (H.264 or H.265 Annex-B) [default: the bundled street clip].
    #[arg(long)]
    pub clip: Option<PathBuf>,
    #[arg(long, default_value_t = 5.0)]
    pub detect_fps: f64,
    /// ONNX Runtime threads, as detector.threads.
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Model sessions, as detector.sessions (default: the daemon's own choice).
    #[arg(long)]
    pub sessions: Option<usize>,
    #[arg(long, default_value_t = 1280)]
    pub analysis_width: u32,
    /// Let the motion gate skip still frames; without it every analysed frame is
    /// inferred (the worst case, and what the targets are about).
    #[arg(long)]
    pub motion: bool,
    /// A model to measure, as detector.model takes it (yolox-nano, yolox-nano-int8 or
    /// a file); repeat it to measure several: the pipeline runs the first, the floors
    /// and the agreement with the first cover all [default: both built-in models, this
    /// machine's default first].
    #[arg(long = "model")]
    pub models: Vec<String>,
    /// As cameras.decoder: auto, software, or a GStreamer element.
    #[arg(long, default_value = "auto")]
    pub decoder: String,
    /// One JSON object on stdout instead of the table.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: BenchArgs) -> anyhow::Result<ExitCode> {
    let clip = match args.clip {
        Some(c) => c,
        None => crate::testkit::clip::bundled()?,
    };
    // A model file is read from the bench's own temporary folder: make it absolute.
    let models = args
        .models
        .iter()
        .map(|m| match ModelSource::from_setting(Some(Path::new(m))) {
            ModelSource::File(p) => std::path::absolute(&p).map(|p| p.display().to_string()),
            ModelSource::Builtin(_) => Ok(m.clone()),
        })
        .collect::<Result<Vec<_>, _>>()?;
    let decoder = DecoderChoice::try_from(args.decoder.clone()).map_err(|e| anyhow::anyhow!("--decoder: {e}"))?;
    let opts = BenchOptions {
        clip,
        cameras: args.cameras.max(1),
        detect_fps: args.detect_fps,
        seconds: args.seconds.max(1),
        warmup: args.warmup,
        threads: args.threads.max(1),
        sessions: args.sessions,
        analysis_width: args.analysis_width,
        motion: args.motion,
        models,
        decoder,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting tokio")?;
    let report = runtime.block_on(crate::testkit::bench::run(opts, |line| eprintln!("bench: {line}")))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", table(&report));
    }
    Ok(ExitCode::SUCCESS)
}

fn table(r: &BenchReport) -> String {
    let mut out = format!(
        "machine    {}\nclip       {} ({} camera{}, {} fps analysed each, {:.0} s measured)\n\n",
        r.machine,
        r.clip,
        r.cameras,
        if r.cameras == 1 { "" } else { "s" },
        r.detect_fps,
        r.seconds
    );
    out += "stage         per s   CPU ms/analysed   p50 ms   p99 ms\n";
    let opt = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.2}"));
    for s in &r.stages {
        let name = serde_json::to_value(s.stage).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default();
        out += &format!(
            "{name:<12} {:>6.1} {:>17.2} {:>8} {:>8}\n",
            s.per_second,
            s.cpu_ms_per_analysed,
            opt(s.p50_ms),
            opt(s.p99_ms)
        );
    }
    out += "\nthreads                                   cores\n";
    for t in &r.threads {
        out += &format!("{:<38} {:>2} {:>6.2}\n", t.name, t.threads, t.cores);
    }
    out += &format!(
        "\nframes in        {:.1}/s\nanalysed         {:.1}/s of {:.1}/s due\n\
         pipeline CPU     {:.2} ms per analysed picture ({:.2} cores)\n\
         floor            {:.2} ms = decode {:.2} ms/frame ({}) x {:.1} frames + inference {:.2} ms\n\
         floor passes     {} (decode/inference ms, before and after)\n\
         overhead ratio   {:.3} (target <= 1.15)\n\
         RSS              {:.1} MB ({:.1} MB ONNX Runtime and binary pages, {:.1} MB the rest)\n\
         events           {}\n",
        r.frames_in_per_s,
        r.analysed_per_s,
        r.analysed_expected_per_s,
        r.pipeline_cpu_ms_per_analysed,
        r.cpu_cores_used,
        r.floors.per_analysed_ms,
        r.floors.decode_ms_per_frame,
        r.floors.decoder,
        r.frames_in_per_s / r.analysed_per_s.max(f64::MIN_POSITIVE),
        r.floors.inference_ms,
        r.floors.passes.iter().map(|(d, i)| format!("{d:.2}/{i:.2}")).collect::<Vec<_>>().join(", "),
        r.overhead_ratio,
        r.rss_mb,
        r.rss_runtime_and_model_mb,
        r.rss_rest_mb,
        r.events
    );
    out += "\nmodel alone (floor; CPU ms per run: mean, median; x first compares medians)\n";
    out += "                                           mean   median   x first   cold median   x first   found   extra (score >= 0.5, IoU >= 0.7)\n";
    for m in &r.floors.models {
        let pct = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.1} %"));
        out += &format!(
            "{:<40} {:>6.2} {:>8.2} {:>9.3} {:>13.2} {:>9.3} {:>7} {:>7}\n",
            m.model,
            m.inference_ms,
            m.median_ms,
            m.ratio_to_first,
            m.cold_ms,
            m.cold_ratio_to_first,
            pct(m.agreement.map(|a| a.found_pct())),
            pct(m.agreement.map(|a| a.extra_pct()))
        );
    }
    let mem = &r.memory;
    out += &format!(
        "\nmemory           {:.1} MB: anonymous {:.1} (heaps: ONNX Runtime arenas, decoders, pictures), libonnxruntime \
         {:.1}, binary {:.1}, other libraries {:.1}; {} model session{}\n",
        mem.rss_mb,
        mem.anonymous_mb,
        mem.onnxruntime_library_mb,
        mem.binary_mb,
        mem.other_libraries_mb,
        mem.sessions,
        if mem.sessions == 1 { "" } else { "s" }
    );
    out += &clips(r);
    out
}

/// The clip stage's lines: the ring's share of the pipeline's CPU and its memory, and
/// what a clip costs to make.
fn clips(r: &BenchReport) -> String {
    let c = &r.clips;
    // The ring's CPU per camera over the pipeline's CPU per camera.
    let per_camera_ms_per_s = r.pipeline_cpu_ms_per_analysed * r.analysed_per_s / r.cameras.max(1) as f64;
    let ring_ms_per_s = c.ring_us_per_frame / 1000.0 * r.frames_in_per_s / r.cameras.max(1) as f64;
    format!(
        "clip ring        {:.2} us/frame ({:.3} % of a camera's pipeline CPU); the ring holds {:.0} s of this stream ({:.0} kB/s): {:.1} MB a camera\n\
         clip making      {:.1} ms CPU per second of clip as sent; {} masked (decode, mask, x264)\n",
        c.ring_us_per_frame,
        100.0 * ring_ms_per_s / per_camera_ms_per_s.max(f64::MIN_POSITIVE),
        c.ring_seconds,
        c.stream_bytes_per_s / 1000.0,
        c.ring_bytes / 1e6,
        c.mux_ms_per_clip_s,
        c.masked_ms_per_clip_s.map_or("no x264enc:".to_owned(), |m| format!("{m:.1} ms")),
    )
}
