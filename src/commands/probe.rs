//! `gridwatch probe URL`: connects to a camera the way the daemon does (same RTSP
//! ingest, same decoder), reports what it sends, and saves the first picture.
//!
//! Promises: each kind of failure gets its own message, hint and exit code (listed
//! in [`Failure`]); the password is never printed; progress goes to stderr only on a
//! terminal; `--json` prints one object, on success and on failure alike.

use crate::contract::Invalid;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::output::{Progress, or_dash, table};
use crate::device::ingest::{
    self, CameraUrl, DecodeOptions, Decoder, Frame, Ingest, IngestError, IngestOptions, StreamInfo,
};

#[derive(Debug, clap::Args)]
pub struct ProbeArgs {
    /// rtsp://[user[:password]@]host[:port]/path
    pub url: String,
    /// User name (overrides the URL's).
    #[arg(long)]
    pub user: Option<String>,
    /// A file whose first line is the password (else $GRIDWATCH_CAMERA_PASSWORD, else the URL's).
    #[arg(long)]
    pub password_file: Option<PathBuf>,
    /// Save the first decoded picture here, as JPEG.
    #[arg(long, short)]
    pub output: Option<PathBuf>,
    /// Limit, in seconds, for connecting and for the first keyframe (0.5 to 600).
    #[arg(long, default_value_t = 10.0, value_parser = seconds)]
    pub timeout: f64,
    /// Seconds of stream to measure frame rate and loss over (0.5 to 600).
    #[arg(long, default_value_t = 3.0, value_parser = seconds)]
    pub duration: f64,
    /// One JSON object on stdout instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Why a probe failed; each has its own exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Failure {
    /// 10: the host name does not resolve.
    Dns,
    /// 11: the TCP connection is refused or the host unreachable.
    Connect,
    /// 12: no answer in time.
    Timeout,
    /// 13: the camera refused the credentials (401).
    Auth,
    /// 14: no stream at that path (404).
    NotFound,
    /// 15: the camera offers no video stream.
    NoVideo,
    /// 16: video, but not H.264 or H.265.
    Codec,
    /// 17: the stream arrives but cannot be decoded.
    Decoder,
    /// 18: connected, but no keyframe within the time limit.
    NoKeyframe,
    /// 19: any other RTSP or URL problem.
    Rtsp,
    /// 20: the camera sent more than gridwatch accepts (an RTSP message, a frame or a
    /// picture over its cap).
    TooLarge,
}

/// A number of seconds for `--timeout` and `--duration`: finite, 0.5 to 600.
fn seconds(s: &str) -> Result<f64, Invalid> {
    let v: f64 = s.parse().map_err(|_| Invalid(format!("{s} is not a number of seconds")))?;
    if (0.5..=600.0).contains(&v) { Ok(v) } else { Err(Invalid(format!("{s} is outside 0.5..=600 seconds"))) }
}

impl Failure {
    pub fn code(self) -> u8 {
        match self {
            Failure::Dns => 10,
            Failure::Connect => 11,
            Failure::Timeout => 12,
            Failure::Auth => 13,
            Failure::NotFound => 14,
            Failure::NoVideo => 15,
            Failure::Codec => 16,
            Failure::Decoder => 17,
            Failure::NoKeyframe => 18,
            Failure::Rtsp => 19,
            Failure::TooLarge => 20,
        }
    }

    /// The failure an ingest error means for the technician.
    pub fn of(e: &IngestError) -> Failure {
        match e {
            IngestError::Dns { .. } => Failure::Dns,
            IngestError::Connect { .. } => Failure::Connect,
            IngestError::Timeout { .. } | IngestError::Stalled(_) => Failure::Timeout,
            IngestError::Auth { .. } => Failure::Auth,
            IngestError::NotFound { .. } => Failure::NotFound,
            IngestError::NoKeyframe(_) => Failure::NoKeyframe,
            IngestError::NoVideo { .. } => Failure::NoVideo,
            IngestError::Codec { .. } => Failure::Codec,
            IngestError::TooLarge { .. } => Failure::TooLarge,
            IngestError::Rtsp { .. } | IngestError::Local(_) => Failure::Rtsp,
        }
    }

    /// The failure and its reason, for [`run`].
    fn with_reason(e: &IngestError) -> (Failure, String) {
        (Failure::of(e), e.to_string())
    }

    fn message(self, target: &str, timeout: f64) -> (String, &'static str) {
        match self {
            Failure::Dns => (
                format!("cannot resolve the camera's host name ({target})"),
                "check the spelling, or use the camera's IP address; check the DNS settings (/etc/resolv.conf)",
            ),
            Failure::Connect => (
                format!("no RTSP server at {target}: connection refused or host unreachable"),
                "check the IP address and port (RTSP is usually 554) and that RTSP is enabled on the camera",
            ),
            Failure::Timeout => (
                format!("{target} did not answer within {timeout} s"),
                "a firewall may drop the packets, or the address is wrong; try --timeout 30 for a slow camera",
            ),
            Failure::Auth => (
                format!("{target} refused the user name or password (401 Unauthorized)"),
                "give them with --user and --password-file, $GRIDWATCH_CAMERA_PASSWORD or in the URL; many cameras lock an account after repeated failures",
            ),
            Failure::NotFound => (
                format!("{target} has no stream at this path (404 Not Found)"),
                "check the path in the camera's manual, e.g. Hikvision /Streaming/Channels/101, Dahua /cam/realmonitor?channel=1&subtype=0, Axis /axis-media/media.amp",
            ),
            Failure::NoVideo => (
                format!("{target} offers no video stream"),
                "check the path: it may name an audio-only or metadata stream",
            ),
            Failure::Codec => (
                format!("{target} sends video gridwatch cannot decode"),
                "set the camera's encoder to H.264 (or H.265) for this stream",
            ),
            Failure::Decoder => (
                format!("the video from {target} arrives but cannot be decoded"),
                "check that gstreamer1.0-libav and gstreamer1.0-plugins-bad are installed; try the camera's H.264 profile Main or High",
            ),
            Failure::NoKeyframe => (
                format!("{target} streams, but sent no keyframe within {timeout} s"),
                "lower the camera's I-frame (GOP) interval to 1-2 s, or give a longer --timeout",
            ),
            Failure::Rtsp => (
                format!("the RTSP exchange with {target} failed"),
                "see the reason above; check the URL and the camera's RTSP settings",
            ),
            Failure::TooLarge => (
                format!("{target} sends more than gridwatch accepts from a camera"),
                "see the reason above; lower the camera's resolution or bitrate for this stream, or check that the address is a camera",
            ),
        }
    }
}

/// What the probe found.
#[derive(Debug, Serialize)]
pub struct Report {
    pub ok: bool,
    pub url: String,
    pub server: Option<String>,
    pub streams: Vec<String>,
    pub codec: String,
    pub rfc6381_codec: String,
    pub profile: Option<String>,
    pub width: u32,
    pub height: u32,
    /// Frame rate the camera announces.
    pub fps_announced: Option<f64>,
    /// Frame rate measured over the probe (stream time).
    pub fps_measured: Option<f64>,
    pub time_to_first_keyframe_ms: u64,
    pub frames: u64,
    pub keyframes: u64,
    /// RTP packets lost (sequence-number gaps, as retina counts them).
    pub packets_lost: u64,
    /// Frames missing from the sequence (gaps in presentation time), and their share.
    pub frames_lost: u64,
    pub loss_percent: f64,
    pub gop_frames: Option<u64>,
    pub decoded: u64,
    pub decode_errors: u64,
    pub snapshot: Option<PathBuf>,
    /// The first picture, until it is written to `snapshot`.
    #[serde(skip)]
    pub jpeg: Option<Vec<u8>>,
}

#[derive(Debug, Serialize)]
struct FailureReport<'a> {
    ok: bool,
    url: &'a str,
    error: Failure,
    exit_code: u8,
    message: String,
    reason: String,
    hint: &'a str,
}

pub fn run(args: ProbeArgs) -> anyhow::Result<ExitCode> {
    let url = match build_url(&args) {
        Ok(u) => u,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(ExitCode::from(Failure::Rtsp.code()));
        }
    };
    let shown = url.redacted();
    let target = format!("{}:{}", url.host(), url.port());
    let rt = tokio::runtime::Runtime::new()?;
    let outcome = rt.block_on(probe(url, &args));
    let (failure, reason) = match outcome {
        Ok(mut report) => {
            report.url = shown;
            if let (Some(path), Some(jpeg)) = (&args.output, report.jpeg.take()) {
                std::fs::write(path, jpeg)
                    .map_err(|e| anyhow::anyhow!("{}: cannot write the picture: {e}", path.display()))?;
            }
            print_report(&report, args.json)?;
            return Ok(ExitCode::SUCCESS);
        }
        Err(f) => f,
    };
    let (message, hint) = failure.message(&target, args.timeout);
    if args.json {
        let r =
            FailureReport { ok: false, url: &shown, error: failure, exit_code: failure.code(), message, reason, hint };
        println!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        eprintln!("error: {message}\n  reason: {reason}\n  hint: {hint}");
    }
    Ok(ExitCode::from(failure.code()))
}

/// The URL with the credentials from the flags, the environment or the URL itself.
fn build_url(args: &ProbeArgs) -> anyhow::Result<CameraUrl> {
    let mut url = CameraUrl::parse(&args.url).map_err(|e| anyhow::anyhow!("the camera URL {e}"))?.url().clone();
    if let Some(user) = &args.user {
        url.set_username(user).map_err(|()| anyhow::anyhow!("this URL cannot carry a user name"))?;
    }
    let password = match &args.password_file {
        Some(p) => Some(
            std::fs::read_to_string(p)
                .map_err(|e| anyhow::anyhow!("{}: cannot read the password file: {e}", p.display()))?
                .lines()
                .next()
                .unwrap_or_default()
                .to_owned(),
        ),
        None => std::env::var("GRIDWATCH_CAMERA_PASSWORD").ok(),
    };
    if let Some(pw) = password {
        if url.username().is_empty() {
            anyhow::bail!("a password is given but no user name: add --user or user@ in the URL");
        }
        url.set_password(Some(&pw)).map_err(|()| anyhow::anyhow!("this URL cannot carry a password"))?;
    }
    Ok(CameraUrl::parse(url.as_str())?)
}

async fn probe(url: CameraUrl, args: &ProbeArgs) -> Result<Report, (Failure, String)> {
    let progress = Progress::new();
    let limit = Duration::from_secs_f64(args.timeout.clamp(0.5, 600.0));
    let started = Instant::now();
    progress.say("asking the camera what it streams");
    // 503 is "busy, try again": cameras say it while their session slots are full,
    // and GStreamer's server while it prepares its first client's stream.
    let described = loop {
        match ingest::describe(url.clone(), limit).await {
            Err(e) if e.is_busy() && started.elapsed() + Duration::from_millis(500) < limit => {
                progress.say("the camera is busy (503); asking again");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            other => break other.map_err(|e| Failure::with_reason(&e))?,
        }
    };

    progress.say("connecting and waiting for the first keyframe");
    let (tx, mut rx) = mpsc::channel(64);
    let stop = CancellationToken::new();
    let opts = IngestOptions { connect_timeout: limit, stall_timeout: limit, ..IngestOptions::default() };
    let ingest = tokio::spawn(ingest::run("probe".into(), url, opts, tx, stop.clone()));
    let result = stream(&mut rx, args, &progress, started, limit).await;
    stop.cancel();
    let _ = ingest.await;
    let mut report = result?;
    report.server = described.tool;
    report.streams = described.streams;
    Ok(report)
}

/// Reads the session: its announcement, then frames for `args.duration`, decoding them.
async fn stream(
    rx: &mut mpsc::Receiver<Ingest>,
    args: &ProbeArgs,
    progress: &Progress,
    started: Instant,
    limit: Duration,
) -> Result<Report, (Failure, String)> {
    let info: StreamInfo = loop {
        match rx.recv().await {
            Some(Ingest::Connected(info)) => break info,
            // Busy (503): ingest asks again by itself, within the time limit.
            Some(Ingest::Disconnected { reason, .. }) if reason.is_busy() && started.elapsed() < limit => {
                progress.say("the camera is busy (503); asking again");
            }
            Some(Ingest::Disconnected { reason, .. }) => return Err(Failure::with_reason(&reason)),
            Some(Ingest::Frame(_)) | None => return Err((Failure::Rtsp, "the session ended before it started".into())),
        }
    };
    let to_keyframe = started.elapsed();
    progress.say(&format!("measuring {} s of stream", args.duration));

    let (pic_tx, pic_rx) = std::sync::mpsc::channel::<Frame>();
    // Every frame, at the stream's own size: this is about the camera, not the analysis.
    let opts = DecodeOptions { width: info.width, height: info.height, max_fps: 0.0 };
    let on_frame = Box::new(move |f: Frame| {
        let _ = pic_tx.send(f);
    });
    let mut decoder = Decoder::new("probe", &info, opts, on_frame).map_err(|e| (Failure::Decoder, e.to_string()))?;

    let measure = Duration::from_secs_f64(args.duration.clamp(0.5, 600.0));
    let until = tokio::time::Instant::now() + measure;
    let mut pts = Vec::new();
    let mut keyframes = Vec::new();
    let mut decode_failure = None;
    let mut packets_lost = 0u64;
    loop {
        let msg = match tokio::time::timeout_at(until, rx.recv()).await {
            Err(_) => break,
            Ok(Some(m)) => m,
            Ok(None) => break,
        };
        match msg {
            Ingest::Frame(f) => {
                if f.keyframe {
                    keyframes.push(pts.len() as u64);
                }
                pts.push(f.pts);
                packets_lost += u64::from(f.lost_packets);
                if let Err(e) = decoder.push(&f) {
                    decode_failure.get_or_insert(e.to_string());
                }
            }
            Ingest::Connected(_) => {}
            Ingest::Disconnected { reason, .. } => return Err(Failure::with_reason(&reason)),
        }
    }
    // What is still inside GStreamer comes out within a moment.
    let first = pic_rx.recv_timeout(Duration::from_secs(2)).ok();
    let stats = decoder.stats();
    drop(decoder);
    let Some(first) = first else {
        let reason = decode_failure.unwrap_or_else(|| {
            format!("no picture from {} frames ({} decoder errors)", stats.frames_in, stats.decode_errors)
        });
        return Err((Failure::Decoder, reason));
    };
    let decoded = stats.frames_out;

    let (lost, fps_measured) = loss_and_rate(&pts, info.fps);
    let snapshot = args.output.clone();
    let jpeg = snapshot.is_some().then(|| crate::device::publish::encode_jpeg(&first.picture.to_rgb(), 90));
    let frames = pts.len() as u64;
    Ok(Report {
        ok: true,
        url: String::new(),
        server: None,
        streams: Vec::new(),
        codec: info.codec.as_str().to_owned(),
        profile: profile(&info.rfc6381_codec),
        rfc6381_codec: info.rfc6381_codec.clone(),
        width: info.width,
        height: info.height,
        fps_announced: info.fps,
        fps_measured,
        time_to_first_keyframe_ms: to_keyframe.as_millis() as u64,
        frames,
        keyframes: keyframes.len() as u64,
        packets_lost,
        frames_lost: lost,
        loss_percent: if frames + lost > 0 {
            ((lost as f64 * 1000.0 / (frames + lost) as f64).round()) / 10.0
        } else {
            0.0
        },
        gop_frames: keyframes.windows(2).map(|w| w[1] - w[0]).max(),
        decoded,
        decode_errors: stats.decode_errors,
        snapshot,
        jpeg,
    })
}

/// Frames missing from the presentation-time sequence, and the measured frame rate.
/// A gap of n frame intervals means n-1 frames never arrived.
fn loss_and_rate(pts: &[Duration], announced: Option<f64>) -> (u64, Option<f64>) {
    if pts.len() < 2 {
        return (0, None);
    }
    let mut steps: Vec<Duration> = pts.windows(2).map(|w| w[1].saturating_sub(w[0])).filter(|d| !d.is_zero()).collect();
    steps.sort();
    // The typical step, robust against the gaps themselves.
    let interval = announced
        .filter(|f| *f > 0.0)
        .and_then(|f| Duration::try_from_secs_f64(1.0 / f).ok())
        .or_else(|| steps.get(steps.len() / 2).copied());
    let Some(interval) = interval.filter(|i| !i.is_zero()) else {
        return (0, None);
    };
    let lost = pts
        .windows(2)
        .map(|w| {
            let gap = w[1].saturating_sub(w[0]).as_secs_f64() / interval.as_secs_f64();
            (gap.round() as u64).saturating_sub(1)
        })
        .sum();
    let span = pts[pts.len() - 1].saturating_sub(pts[0]).as_secs_f64();
    let fps = (span > 0.0).then(|| (((pts.len() - 1) as f64 / span) * 10.0).round() / 10.0);
    (lost, fps)
}

/// The profile and level an RFC 6381 codec string names (`avc1.4D401E`: Main, 3.0).
pub fn profile(rfc6381: &str) -> Option<String> {
    let (kind, rest) = rfc6381.split_once('.')?;
    match kind {
        "avc1" | "avc3" if rest.len() >= 6 => {
            let idc = u8::from_str_radix(&rest[0..2], 16).ok()?;
            let constraints = u8::from_str_radix(&rest[2..4], 16).ok()?;
            let level = u8::from_str_radix(&rest[4..6], 16).ok()?;
            let name = match idc {
                66 if constraints & 0x40 != 0 => "Constrained Baseline",
                66 => "Baseline",
                77 => "Main",
                88 => "Extended",
                100 => "High",
                110 => "High 10",
                122 => "High 4:2:2",
                244 => "High 4:4:4",
                _ => return Some(format!("profile {idc}, level {:.1}", f64::from(level) / 10.0)),
            };
            Some(format!("{name}, level {:.1}", f64::from(level) / 10.0))
        }
        "hvc1" | "hev1" => {
            let mut parts = rest.split('.');
            let space_and_idc = parts.next()?;
            let idc: u8 = space_and_idc.trim_start_matches(['A', 'B', 'C']).parse().ok()?;
            let level = parts
                .find_map(|p| p.strip_prefix('L').or_else(|| p.strip_prefix('H')))
                .and_then(|l| l.parse::<u32>().ok());
            let name = match idc {
                1 => "Main".to_owned(),
                2 => "Main 10".to_owned(),
                3 => "Main Still Picture".to_owned(),
                n => format!("profile {n}"),
            };
            Some(match level {
                Some(l) => format!("{name}, level {:.1}", f64::from(l) / 30.0),
                None => name,
            })
        }
        _ => None,
    }
}

fn print_report(r: &Report, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(r)?);
        return Ok(());
    }
    let rows = vec![
        vec!["camera".into(), r.url.clone()],
        vec!["server".into(), or_dash(r.server.as_ref())],
        vec!["streams".into(), r.streams.join(", ")],
        vec!["codec".into(), format!("{} ({})", r.codec, r.rfc6381_codec)],
        vec!["profile".into(), or_dash(r.profile.as_ref())],
        vec!["resolution".into(), format!("{}x{}", r.width, r.height)],
        vec![
            "frame rate".into(),
            format!("{} announced, {} measured", or_dash(r.fps_announced), or_dash(r.fps_measured)),
        ],
        vec!["first keyframe".into(), format!("{} ms after connecting", r.time_to_first_keyframe_ms)],
        vec!["GOP".into(), r.gop_frames.map_or_else(|| "-".into(), |g| format!("{g} frames"))],
        vec![
            "frames".into(),
            format!(
                "{} received, {} keyframes, {} decoded, {} decoder errors",
                r.frames, r.keyframes, r.decoded, r.decode_errors
            ),
        ],
        vec![
            "loss".into(),
            format!("{} packets lost, {} frames missing ({}%)", r.packets_lost, r.frames_lost, r.loss_percent),
        ],
        vec![
            "picture".into(),
            r.snapshot
                .as_ref()
                .map_or_else(|| "not saved (use -o FILE)".into(), |p| format!("saved to {}", p.display())),
        ],
    ];
    let mut out = std::io::stdout().lock();
    out.write_all(table(&rows).as_bytes())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ingest_errors_sort_into_failures() {
        use crate::device::ingest::Oversize;
        let s = Duration::from_secs(10);
        let refused = std::io::Error::from_raw_os_error(libc::ECONNREFUSED);
        let unreachable = std::io::Error::from_raw_os_error(libc::EHOSTUNREACH);
        let cases = [
            (IngestError::Dns { host: "cam.invalid".into(), detail: "not known".into() }, Failure::Dns),
            (IngestError::from_connect("10.0.0.1:554", &refused), Failure::Connect),
            (IngestError::from_connect("10.0.0.1:554", &unreachable), Failure::Connect),
            (IngestError::Timeout { step: "DESCRIBE", after: s }, Failure::Timeout),
            (IngestError::Auth { step: "DESCRIBE" }, Failure::Auth),
            (IngestError::NotFound { step: "DESCRIBE" }, Failure::NotFound),
            (IngestError::NoVideo { offered: vec!["audio/mpeg4-generic".into()] }, Failure::NoVideo),
            (IngestError::Codec { offered: vec!["video/jpeg".into(), "audio/pcmu".into()] }, Failure::Codec),
            (IngestError::NoKeyframe(s), Failure::NoKeyframe),
            (IngestError::Stalled(s), Failure::Timeout),
            (IngestError::Rtsp { step: "PLAY", status: Some(461), detail: "461".into() }, Failure::Rtsp),
            (
                IngestError::TooLarge { what: Oversize::Message, size: 1 << 32, at_least: false, limit: 1 << 20 },
                Failure::TooLarge,
            ),
        ];
        for (e, want) in &cases {
            assert_eq!(Failure::of(e), *want, "{e}");
        }
        let codes: std::collections::HashSet<u8> = cases.iter().map(|(_, f)| f.code()).collect();
        assert_eq!(codes.len(), 10, "distinct codes for distinct failures");
    }

    #[test]
    fn seconds_must_be_finite_and_sensible() {
        assert_eq!(seconds("2.5"), Ok(2.5));
        for bad in ["nan", "NaN", "inf", "-1", "0", "1e9", "x"] {
            assert!(seconds(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_tiny_announced_frame_rate_does_not_panic() {
        let ms = |v: u64| Duration::from_millis(v);
        let pts = [ms(0), ms(100), ms(200)];
        for fps in [1e-300, f64::MIN_POSITIVE, 1e-40] {
            let (lost, rate) = loss_and_rate(&pts, Some(fps));
            assert_eq!((lost, rate), (0, Some(10.0)), "{fps}");
        }
    }

    #[test]
    fn profiles_are_named() {
        assert_eq!(profile("avc1.4D401E").as_deref(), Some("Main, level 3.0"));
        assert_eq!(profile("avc1.42C01F").as_deref(), Some("Constrained Baseline, level 3.1"));
        assert_eq!(profile("avc1.640028").as_deref(), Some("High, level 4.0"));
        assert_eq!(profile("hvc1.1.6.L93.B0").as_deref(), Some("Main, level 3.1"));
        assert_eq!(profile("mp4a.40.2"), None);
    }

    #[test]
    fn gaps_in_presentation_time_count_as_lost_frames() {
        let ms = |v: u64| Duration::from_millis(v);
        let pts: Vec<Duration> = [0, 100, 200, 500, 600, 700].into_iter().map(ms).collect();
        let (lost, fps) = loss_and_rate(&pts, Some(10.0));
        assert_eq!(lost, 2, "300 and 400 are missing");
        assert_eq!(fps, Some(7.1));
        let (lost, _) = loss_and_rate(&pts, None);
        assert_eq!(lost, 2, "the typical step is found without an announced rate");
    }
}
