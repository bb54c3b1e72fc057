//! RTSP ingest for one camera, with retina over TCP.
//!
//! [`run`] keeps a camera streaming until shutdown: it connects, announces the stream
//! ([`Ingest::Connected`]), hands on every access unit from the first keyframe on
//! ([`Ingest::Frame`], Annex-B with parameter sets before each keyframe), and when a
//! session ends for any reason it says so ([`Ingest::Disconnected`]) and reconnects with
//! exponential backoff. Every network step has a timeout, so a camera that hangs is
//! treated like one that hung up. Why a session ended is an [`IngestError`]. The
//! password from the URL is handed to retina only: it never appears in a log line or a
//! reason: it is shown as [`CameraUrl::redacted`]. What the camera sends is held to [`Limits`] (RTSP
//! message, access unit and picture size) through the camera's [`Relay`], so a lying
//! camera costs a reconnect, not the device's memory.
//! It does not decode, and it does not drop frames: back-pressure is the consumer's.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use futures::StreamExt;
use rand::Rng;
use retina::client::{
    Credentials, PlayOptions, Session, SessionGroup, SessionOptions, SetupOptions, TcpTransportOptions, Transport,
};
use retina::codec::{CodecItem, FrameFormat, ParametersRef, VideoFrame, VideoParameters};
use tokio::sync::mpsc;
use tokio::time::{Instant, timeout, timeout_at};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};
use url::Url;

use crate::device::ingest::error::IngestError;
use crate::device::ingest::frame::{Codec, EncodedFrame, StreamInfo};
use crate::device::ingest::guard::Limits;
use crate::device::ingest::relay::Relay;
use crate::device::ingest::url::CameraUrl;

/// What ingest tells its consumer, in order: `Connected`, `Frame`s, `Disconnected`, and
/// again from `Connected` after a reconnect.
#[derive(Debug)]
pub enum Ingest {
    /// The session delivers video. Sent just before the first frame, and again within
    /// a session if the camera changes its stream parameters (rebuild the decoder).
    Connected(StreamInfo),
    Frame(EncodedFrame),
    /// A session ended or could not start; a reconnect follows. `reason` displays as
    /// one short line free of credentials. `stalled`: the session was up but video
    /// stopped coming.
    Disconnected {
        reason: IngestError,
        stalled: bool,
    },
}

#[derive(Debug, Clone)]
pub struct IngestOptions {
    /// A session that delivers no video frame for this long is dropped.
    pub stall_timeout: Duration,
    /// Limit for each of connect, DESCRIBE, SETUP and PLAY.
    pub connect_timeout: Duration,
    /// Size caps on what the camera sends.
    pub limits: Limits,
}

impl Default for IngestOptions {
    fn default() -> Self {
        IngestOptions {
            stall_timeout: Duration::from_secs(20),
            connect_timeout: Duration::from_secs(10),
            limits: Limits::default(),
        }
    }
}

/// Frame rates outside this range are taken as not announced: a camera's SDP or SPS
/// may say anything, and a rate near 0 would make frame intervals of centuries.
const PLAUSIBLE_FPS: std::ops::RangeInclusive<f64> = 0.01..=1000.0;

const BACKOFF_FIRST: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(60);
/// A session that streamed this long counts as healthy: the next retry starts fast.
/// Long enough that a camera which accepts and then drops at once keeps backing off.
const HEALTHY_SESSION: Duration = Duration::from_secs(10);

/// Streams `url` into `out` until `shutdown` is cancelled or `out` is closed.
pub async fn run(
    camera_id: String,
    url: CameraUrl,
    opts: IngestOptions,
    out: mpsc::Sender<Ingest>,
    shutdown: CancellationToken,
) {
    let camera = Camera::new(camera_id, url, opts, out);
    info!(camera = %camera.id, url = %camera.shown_url, "ingest starting");
    tokio::select! {
        _ = shutdown.cancelled() => {}
        () = camera.run_forever() => {}
    }
    info!(camera = %camera.id, "ingest stopped");
}

/// One camera's ingest state.
struct Camera {
    id: String,
    /// The URL without credentials, which go to retina separately.
    url: Url,
    shown_url: String,
    creds: Option<Credentials>,
    opts: IngestOptions,
    out: mpsc::Sender<Ingest>,
    /// Lets a new session wait until the previous one is torn down; some cameras allow
    /// only a few sessions and refuse new ones while stale ones linger.
    group: Arc<SessionGroup>,
    /// Opened at the first session and kept, so that a stale session's TEARDOWN on a
    /// fresh connection still reaches the camera.
    relay: Mutex<Option<Arc<Relay>>>,
}

/// Why a session stopped.
enum Stop {
    Failed(IngestError),
    /// Connected, but no (key)frame within the stall timeout.
    Stalled(IngestError),
    /// The receiver of `out` was dropped: nobody wants frames any more.
    ConsumerGone,
}

impl Camera {
    fn new(id: String, url: CameraUrl, opts: IngestOptions, out: mpsc::Sender<Ingest>) -> Self {
        let shown_url = url.redacted();
        let url = url.url().clone();
        let creds = (!url.username().is_empty()).then(|| Credentials {
            username: percent_decode(url.username()),
            password: percent_decode(url.password().unwrap_or_default()),
        });
        let mut url = url;
        let _ = url.set_username("");
        let _ = url.set_password(None);
        let group = Arc::new(SessionGroup::default().named(id.clone()));
        Camera { id, url, shown_url, creds, opts, out, group, relay: Mutex::new(None) }
    }

    /// Returns only when the consumer is gone.
    async fn run_forever(&self) {
        let mut backoff = Backoff::default();
        loop {
            let mut streaming_since = None;
            let (reason, stalled) = match self.session(&mut streaming_since).await {
                Err(Stop::ConsumerGone) => {
                    info!(camera = %self.id, "consumer gone; ingest ends");
                    return;
                }
                Err(Stop::Failed(reason)) => (reason, false),
                Err(Stop::Stalled(reason)) => (reason, true),
                Ok(()) => (ended(), false),
            };
            if streaming_since.is_some_and(|t: Instant| t.elapsed() >= HEALTHY_SESSION) {
                backoff.reset();
            }
            let delay = backoff.next_delay();
            warn!(camera = %self.id, url = %self.shown_url, %reason, retry_in = ?delay, "disconnected");
            if self.send(Ingest::Disconnected { reason, stalled }).await.is_err() {
                info!(camera = %self.id, "consumer gone; ingest ends");
                return;
            }
            tokio::time::sleep(delay).await;
        }
    }

    /// One session: connect, stream until something fails. `streaming_since` is set
    /// when the first frame goes out, for the caller's backoff decision.
    async fn session(&self, streaming_since: &mut Option<Instant>) -> Result<(), Stop> {
        self.await_stale_sessions().await;
        let limit = self.opts.connect_timeout;
        debug!(camera = %self.id, url = %self.shown_url, "connecting");
        let relay = self.relay()?;
        relay.connect(limit).await.map_err(Stop::Failed)?;
        let options = self.session_options().session_group(self.group.clone());
        let describe = Session::describe(relay.url_for(&self.url), options);
        let mut described = step(&relay, "DESCRIBE", limit, describe).await?;
        let (stream_i, codec) = pick_video_stream(described.streams())?;
        if let Some(ParametersRef::Video(params)) = described.streams()[stream_i].parameters() {
            self.check_picture(params)?;
        }
        let setup = SetupOptions::default()
            .transport(Transport::Tcp(TcpTransportOptions::default()))
            .frame_format(FrameFormat::SIMPLE);
        step(&relay, "SETUP", limit, described.setup(stream_i, setup)).await?;
        let playing = step(&relay, "PLAY", limit, described.play(PlayOptions::default())).await?;
        let mut demuxed = playing.demuxed().map_err(|e| Stop::Failed(IngestError::from_retina("PLAY", &e)))?;
        info!(camera = %self.id, url = %self.shown_url, codec = codec.as_str(), "playing");

        let stall = self.opts.stall_timeout;
        let mut deadline = Instant::now() + stall;
        let mut info: Option<StreamInfo> = None;
        let mut skipped = 0u32;
        loop {
            let item = match timeout_at(deadline, demuxed.next()).await {
                Err(_) if info.is_none() => return Err(Stop::Stalled(IngestError::NoKeyframe(stall))),
                Err(_) => return Err(Stop::Stalled(IngestError::Stalled(stall))),
                // The relay may have cut the connection: then that is why it ended.
                Ok(None) => return relay.take_cut().map_or(Ok(()), |cut| Err(Stop::Failed(cut))),
                Ok(Some(Err(e))) => {
                    let cut = relay.take_cut();
                    return Err(Stop::Failed(cut.unwrap_or_else(|| IngestError::from_retina("stream", &e))));
                }
                Ok(Some(Ok(item))) => item,
            };
            let CodecItem::VideoFrame(frame) = item else {
                continue;
            };
            if frame.stream_id() != stream_i {
                continue;
            }
            let retina_keyframe = frame.is_random_access_point();
            let keyframe = retina_keyframe || (codec == Codec::H265 && is_h265_irap(frame.data()));
            if info.is_none() && !keyframe {
                skipped += 1;
                continue;
            }
            // Only frames handed on count: a session that never shows a keyframe is as
            // useless as one that sends nothing.
            deadline = Instant::now() + stall;
            let stream = &demuxed.streams()[stream_i];
            let params = video_parameters(stream)?;
            let announce = (info.is_none() || frame.has_new_parameters())
                .then(|| stream_info(codec, params, stream.framerate()))
                .filter(|new| info.as_ref() != Some(new));
            if announce.is_some() {
                self.check_picture(params)?;
            }
            // retina prepends parameter sets only to the keyframes it recognises itself.
            let param_sets = if keyframe && !retina_keyframe { params.extra_data() } else { &[] };
            let encoded = encoded(frame, keyframe, param_sets);
            if let Some(new) = announce {
                info!(camera = %self.id, width = new.width, height = new.height,
                      codec = %new.rfc6381_codec, fps = new.fps.unwrap_or(0.0), skipped_before_keyframe = skipped,
                      "streaming");
                self.send(Ingest::Connected(new.clone())).await?;
                info = Some(new);
            }
            streaming_since.get_or_insert_with(Instant::now);
            self.send(Ingest::Frame(encoded)).await?;
        }
    }

    /// The camera's relay, opened on first use.
    fn relay(&self) -> Result<Arc<Relay>, Stop> {
        let mut slot = self.relay.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(relay) = slot.as_ref() {
            return Ok(relay.clone());
        }
        let relay = Arc::new(Relay::start(&self.url, self.opts.limits).map_err(Stop::Failed)?);
        *slot = Some(relay.clone());
        Ok(relay)
    }

    /// Refuses a stream whose pictures are over the size cap, before a decoder is
    /// built for it.
    fn check_picture(&self, params: &VideoParameters) -> Result<(), Stop> {
        let (width, height) = params.pixel_dimensions();
        self.opts.limits.check_picture(width, height).map_err(Stop::Failed)
    }

    fn session_options(&self) -> SessionOptions {
        SessionOptions::default()
            .creds(self.creds.clone())
            .user_agent(format!("gridwatch/{}", env!("CARGO_PKG_VERSION")))
    }

    async fn await_stale_sessions(&self) {
        loop {
            let status = self.group.stale_sessions();
            if status.num_sessions == 0 {
                return;
            }
            let wait = status.max_expires.map(|t| t.saturating_duration_since(Instant::now()));
            info!(camera = %self.id, sessions = status.num_sessions, max_wait = ?wait,
                  "waiting for stale sessions to end before reconnecting");
            self.group.await_stale_sessions(&status).await;
        }
    }

    async fn send(&self, msg: Ingest) -> Result<(), Stop> {
        self.out.send(msg).await.map_err(|_| Stop::ConsumerGone)
    }
}

/// What a camera's DESCRIBE answer says, for `gridwatch probe`.
#[derive(Debug, Clone)]
pub struct Description {
    /// The server software, from the SDP's `a=tool`, when the camera names it.
    pub tool: Option<String>,
    /// Every stream offered, as `media/encoding` (`video/h264`, `audio/mpeg4-generic`).
    pub streams: Vec<String>,
}

/// One DESCRIBE with the credentials, user agent, time limit and caps `run` uses,
/// without setting anything up; on failure the same error `run` would report, or the
/// one it would give for the streams on offer.
pub async fn describe(url: CameraUrl, limit: Duration) -> Result<Description, IngestError> {
    let (out, _) = mpsc::channel(1);
    let camera = Camera::new("probe".into(), url, IngestOptions { connect_timeout: limit, ..Default::default() }, out);
    let relay = camera.relay().map_err(Stop::reason)?;
    relay.connect(limit).await?;
    let request = Session::describe(relay.url_for(&camera.url), camera.session_options());
    let described = step(&relay, "DESCRIBE", limit, request).await.map_err(Stop::reason)?;
    let (stream_i, _) = pick_video_stream(described.streams()).map_err(Stop::reason)?;
    if let Some(ParametersRef::Video(params)) = described.streams()[stream_i].parameters() {
        camera.check_picture(params).map_err(Stop::reason)?;
    }
    Ok(Description {
        // retina shows the tool only through Debug, quoted.
        tool: described.tool().map(|t| format!("{t:?}").trim_matches('"').to_owned()),
        streams: described.streams().iter().map(|s| format!("{}/{}", s.media(), s.encoding_name())).collect(),
    })
}

impl Stop {
    fn reason(self) -> IngestError {
        match self {
            Stop::Failed(r) | Stop::Stalled(r) => r,
            Stop::ConsumerGone => IngestError::Local("cancelled".into()),
        }
    }
}

/// The reason for a session the camera ended without an error.
fn ended() -> IngestError {
    IngestError::Rtsp { step: "stream", status: None, detail: "the camera ended the stream".into() }
}

/// Runs one RTSP request with a time limit. A failure is the relay's cut when it cut
/// the connection (the cause; retina saw only the end), else what retina reports.
async fn step<T>(
    relay: &Relay,
    what: &'static str,
    limit: Duration,
    request: impl Future<Output = Result<T, retina::Error>>,
) -> Result<T, Stop> {
    match timeout(limit, request).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(Stop::Failed(relay.take_cut().unwrap_or_else(|| IngestError::from_retina(what, &e)))),
        Err(_) => Err(Stop::Failed(relay.take_cut().unwrap_or(IngestError::Timeout { step: what, after: limit }))),
    }
}

fn pick_video_stream(streams: &[retina::client::Stream]) -> Result<(usize, Codec), Stop> {
    let found = streams.iter().enumerate().find_map(|(i, s)| match (s.media(), s.encoding_name()) {
        ("video", "h264") => Some((i, Codec::H264)),
        ("video", "h265") => Some((i, Codec::H265)),
        _ => None,
    });
    found.ok_or_else(|| {
        let offered: Vec<String> = streams.iter().map(|s| format!("{}/{}", s.media(), s.encoding_name())).collect();
        let has_video = streams.iter().any(|s| s.media() == "video");
        Stop::Failed(if has_video { IngestError::Codec { offered } } else { IngestError::NoVideo { offered } })
    })
}

fn video_parameters(stream: &retina::client::Stream) -> Result<&VideoParameters, Stop> {
    match stream.parameters() {
        Some(ParametersRef::Video(params)) => Ok(params),
        _ => Err(Stop::Failed(IngestError::Rtsp {
            step: "stream",
            status: None,
            detail: "keyframe without video parameters (SPS/PPS)".into(),
        })),
    }
}

fn stream_info(codec: Codec, params: &VideoParameters, sdp_fps: Option<f32>) -> StreamInfo {
    let (width, height) = params.pixel_dimensions();
    // retina gives the frame *duration* as (numerator, denominator) seconds.
    let fps = params
        .frame_rate()
        .filter(|&(num, den)| num > 0 && den > 0)
        .map(|(num, den)| f64::from(den) / f64::from(num))
        .or(sdp_fps.map(f64::from))
        .filter(|fps| PLAUSIBLE_FPS.contains(fps));
    StreamInfo { codec, rfc6381_codec: params.rfc6381_codec().to_owned(), width, height, fps }
}

/// `param_sets`, Annex-B, go before the frame's own data (empty: nothing to add).
fn encoded(frame: VideoFrame, keyframe: bool, param_sets: &[u8]) -> EncodedFrame {
    let ts = frame.timestamp();
    // Clamped: the first frame may precede the RTP-Info start slightly.
    let elapsed = u64::try_from(ts.elapsed()).unwrap_or(0);
    let nanos = u128::from(elapsed) * 1_000_000_000 / u128::from(ts.clock_rate().get());
    let pts = Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX));
    let received_at = SystemTime::from(frame.end_ctx().received_wall());
    let lost_packets = frame.loss();
    let data = if param_sets.is_empty() { frame.into_data() } else { [param_sets, frame.data()].concat() };
    EncodedFrame { data, pts, received_at, keyframe, lost_packets }
}

/// Whether an H.265 access unit (Annex-B) is an IRAP picture: IDR, CRA or BLA.
///
/// retina 0.4.21 counts only IDR pictures as random access points, but many encoders
/// (x265's default open GOP among them) start each GOP with a CRA picture, from which a
/// decoder can start as well. Without this, a session could wait a whole clip or
/// minutes for its first keyframe.
fn is_h265_irap(annex_b: &[u8]) -> bool {
    let mut rest = annex_b;
    while let Some(pos) = rest.windows(3).position(|w| w == [0, 0, 1]) {
        let Some(&header) = rest.get(pos + 3) else {
            break;
        };
        let nal_type = (header >> 1) & 0x3f;
        // The first VCL NAL unit (types 0..=31) decides; IRAP types are 16..=23.
        if nal_type < 32 {
            return (16..=23).contains(&nal_type);
        }
        rest = &rest[pos + 3..];
    }
    false
}

/// URL user names and passwords arrive percent-encoded (`p%40ss` for `p@ss`).
fn percent_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s).decode_utf8_lossy().into_owned()
}

/// Exponential backoff with jitter, so that cameras behind one failed switch do not
/// all reconnect in the same instant.
#[derive(Default)]
struct Backoff {
    failures: u32,
}

impl Backoff {
    fn next_delay(&mut self) -> Duration {
        let base = BACKOFF_FIRST.saturating_mul(1 << self.failures.min(6)).min(BACKOFF_MAX);
        self.failures = self.failures.saturating_add(1);
        base.mul_f64(rand::rng().random_range(0.8..1.2)).min(BACKOFF_MAX)
    }

    fn reset(&mut self) {
        self.failures = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::ingest::decode::{DecodeOptions, Decoder};
    use crate::testkit::rtsp_server::RtspServer;
    use std::path::PathBuf;
    use std::sync::Mutex;

    fn clip(name: &str) -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/video").join(name)
    }

    fn fast_retry() -> IngestOptions {
        IngestOptions {
            stall_timeout: Duration::from_millis(1500),
            connect_timeout: Duration::from_secs(3),
            ..IngestOptions::default()
        }
    }

    /// Runs ingest for `url` in the background; cancel the token to stop it.
    fn start(
        url: &str,
        opts: IngestOptions,
    ) -> (mpsc::Receiver<Ingest>, CancellationToken, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(64);
        let token = CancellationToken::new();
        let url = CameraUrl::parse(url).unwrap();
        let task = tokio::spawn(run("test-cam".into(), url, opts, tx, token.clone()));
        (rx, token, task)
    }

    async fn next(rx: &mut mpsc::Receiver<Ingest>, within: Duration) -> Ingest {
        tokio::time::timeout(within, rx.recv()).await.expect("no ingest message in time").expect("ingest ended")
    }

    async fn disconnected(rx: &mut mpsc::Receiver<Ingest>, within: Duration) -> String {
        let deadline = Instant::now() + within;
        loop {
            if let Ingest::Disconnected { reason, .. } = next(rx, deadline - Instant::now()).await {
                return reason.to_string();
            }
        }
    }

    async fn connected(rx: &mut mpsc::Receiver<Ingest>, within: Duration) -> StreamInfo {
        let deadline = Instant::now() + within;
        loop {
            match next(rx, deadline - Instant::now()).await {
                Ingest::Connected(info) => return info,
                Ingest::Frame(_) => panic!("frame before Connected"),
                Ingest::Disconnected { reason, .. } => eprintln!("disconnected: {reason}"),
            }
        }
    }

    async fn stop(token: CancellationToken, task: tokio::task::JoinHandle<()>) {
        token.cancel();
        tokio::time::timeout(Duration::from_secs(1), task).await.expect("ingest did not stop promptly").unwrap();
    }

    /// Two GOPs of `file` in Annex-B, cut where its third SPS begins.
    fn two_gops(file: &str) -> Vec<u8> {
        let data = std::fs::read(clip(file)).unwrap();
        let sps: Vec<usize> =
            (0..data.len() - 3).filter(|&i| data[i..i + 3] == [0, 0, 1] && data[i + 3] & 0x1f == 7).collect();
        data[..sps[2]].to_vec()
    }

    /// A camera that switches resolution mid-stream (a technician changes its profile):
    /// ingest announces the new stream, and a decoder built for it makes pictures.
    #[tokio::test]
    async fn a_resolution_change_mid_stream_is_announced() {
        let dir = std::env::temp_dir().join(format!("gridwatch-camera-switch-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let switching = dir.join("switch.h264");
        std::fs::write(&switching, [two_gops("vtest.h264"), two_gops("vtest_1080p.h264")].concat()).unwrap();
        let server = RtspServer::start(0, &[("/cam", &switching)]).unwrap();
        let (mut rx, token, task) = start(&server.url("/cam"), IngestOptions::default());

        let first = connected(&mut rx, Duration::from_secs(8)).await;
        assert_eq!((first.width, first.height), (768, 576));
        let deadline = Instant::now() + Duration::from_secs(12);
        let second = loop {
            match next(&mut rx, deadline - Instant::now()).await {
                Ingest::Connected(info) => break info,
                Ingest::Frame(_) => {}
                Ingest::Disconnected { reason, .. } => panic!("the change must not end the session: {reason}"),
            }
        };
        assert_eq!((second.width, second.height), (1920, 1080), "{second:?}");
        let (tx, decoded) = std::sync::mpsc::channel();
        let opts = DecodeOptions { width: 640, height: 360, max_fps: 0.0 };
        let mut decoder = Decoder::new("test-cam", &second, opts, Box::new(move |f| drop(tx.send(f)))).unwrap();
        while decoded.try_recv().is_err() {
            match next(&mut rx, deadline.max(Instant::now() + Duration::from_secs(3)) - Instant::now()).await {
                Ingest::Frame(f) => decoder.push(&f).unwrap(),
                other => panic!("unexpected {other:?}"),
            }
        }
        stop(token, task).await;
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Ingests 4 s of a served clip, checks the frames, and decodes them at 5 fps.
    async fn ingest_and_decode(file: &str, codec: Codec, rfc6381_prefix: &str) {
        let server = RtspServer::start(0, &[("/cam", &clip(file))]).unwrap();
        let (mut rx, token, task) = start(&server.url("/cam"), IngestOptions::default());

        let info = connected(&mut rx, Duration::from_secs(8)).await;
        assert_eq!((info.codec, info.width, info.height), (codec, 768, 576));
        assert!(info.rfc6381_codec.starts_with(rfc6381_prefix), "{info:?}");
        assert_eq!(info.fps, Some(10.0));

        let (tx, decoded) = std::sync::mpsc::channel();
        let opts = DecodeOptions { width: 384, height: 288, max_fps: 5.0 };
        let on_frame = Box::new(move |f| {
            let _ = tx.send(f);
        });
        let mut decoder = Decoder::new("test-cam", &info, opts, on_frame).unwrap();

        let mut frames = Vec::new();
        let started = Instant::now();
        while frames.len() < 40 {
            match next(&mut rx, Duration::from_secs(2)).await {
                Ingest::Frame(f) => {
                    decoder.push(&f).unwrap();
                    frames.push(f);
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        let wall = started.elapsed();
        stop(token, task).await;

        assert!(frames[0].keyframe, "first frame must be a keyframe");
        assert!(frames[0].data.len() > frames[1].data.len());
        assert!(frames.iter().filter(|f| f.keyframe).count() >= 2, "a GOP is 20 frames");
        for pair in frames.windows(2) {
            let step = pair[1].pts.saturating_sub(pair[0].pts);
            assert!((Duration::from_millis(95)..=Duration::from_millis(105)).contains(&step), "PTS step {step:?}");
        }
        // 39 frame intervals are 3.9 s of stream time: the server plays in real time.
        // Arrival times, not the loop's clock: frames queue while the decoder loads.
        let arrived = frames[39].received_at.duration_since(frames[0].received_at).unwrap_or_default();
        assert!(arrived > Duration::from_millis(3400), "40 frames arrived in {arrived:?}: too fast");

        let mut pictures = Vec::new();
        while let Ok(p) = decoded.recv_timeout(Duration::from_millis(500)) {
            pictures.push(p);
        }
        let stats = decoder.stats();
        eprintln!(
            "{file}: 40 frames in {wall:?} ({:.2} fps), stream time {:?}, {} pictures, {stats:?}",
            39.0 / wall.as_secs_f64(),
            frames[39].pts - frames[0].pts,
            pictures.len()
        );
        assert_eq!(stats.frames_in, 40);
        assert_eq!(stats.frames_out, pictures.len() as u64);
        // 3.9 s of stream time at 5 fps: 20 pictures, give or take the edges.
        assert!((18..=21).contains(&pictures.len()), "{} pictures", pictures.len());
        for pair in pictures.windows(2) {
            let step = pair[1].pts.saturating_sub(pair[0].pts);
            assert!(
                (Duration::from_millis(150)..=Duration::from_millis(250)).contains(&step),
                "picture PTS step {step:?}"
            );
        }
        for p in &pictures {
            assert_eq!(p.picture.dimensions(), (384, 288));
            let first = p.picture.y()[0];
            assert!(p.picture.y().iter().any(|&v| v != first), "uniform picture");
            assert!(
                frames.iter().any(|f| f.received_at == p.captured_at && f.pts == p.pts),
                "captured_at/pts must come from an ingested frame"
            );
        }
    }

    #[tokio::test]
    async fn ingests_and_decodes_h264() {
        ingest_and_decode("vtest.h264", Codec::H264, "avc1.").await;
    }

    #[tokio::test]
    async fn ingests_and_decodes_h265() {
        ingest_and_decode("vtest.h265", Codec::H265, "hvc1.").await;
    }

    #[tokio::test]
    async fn wrong_path_and_closed_port_keep_retrying() {
        let server = RtspServer::start(0, &[("/cam", &clip("vtest.h264"))]).unwrap();
        let (mut rx_404, token_404, task_404) = start(&server.url("/nope"), fast_retry());
        let closed_port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let (mut rx_closed, token_closed, task_closed) =
            start(&format!("rtsp://127.0.0.1:{closed_port}/cam"), fast_retry());

        for _ in 0..2 {
            let reason = disconnected(&mut rx_404, Duration::from_secs(4)).await;
            assert!(reason.contains("404"), "{reason}");
            let reason = disconnected(&mut rx_closed, Duration::from_secs(4)).await;
            assert!(reason.contains("refused"), "{reason}");
        }
        stop(token_404, task_404).await;
        stop(token_closed, task_closed).await;
    }

    #[tokio::test]
    async fn recovers_from_stall_and_server_restart() {
        let file = clip("vtest.h264");
        let server = RtspServer::start(0, &[("/cam", &file)]).unwrap();
        let port = server.port();
        let (mut rx, token, task) = start(&server.url("/cam"), fast_retry());
        connected(&mut rx, Duration::from_secs(5)).await;

        server.set_frozen(true);
        let reason = disconnected(&mut rx, Duration::from_secs(4)).await;
        assert!(reason.contains("stalled"), "{reason}");
        server.set_frozen(false);
        connected(&mut rx, Duration::from_secs(6)).await;

        server.stop();
        let reason = disconnected(&mut rx, Duration::from_secs(4)).await;
        eprintln!("after stop: {reason}");
        let _server = RtspServer::start(port, &[("/cam", &file)]).unwrap();
        connected(&mut rx, Duration::from_secs(8)).await;
        assert!(matches!(
            next(&mut rx, Duration::from_secs(2)).await,
            Ingest::Frame(f) if f.keyframe
        ));
        stop(token, task).await;
    }

    /// Failures from real servers arrive as the right variant, not as text to sort.
    #[tokio::test]
    async fn errors_from_real_servers_are_typed() {
        let server = RtspServer::start_with_auth(0, &[("/cam", &clip("vtest.h264"))], "admin", "pw").unwrap();
        let limit = Duration::from_secs(2);
        let at = |creds: &str, path: &str| {
            CameraUrl::parse(&format!("rtsp://{creds}127.0.0.1:{}{path}", server.port())).unwrap()
        };
        let e = describe(at("admin:pw@", "/nothing-here"), limit).await.unwrap_err();
        assert!(matches!(e, IngestError::NotFound { step: "DESCRIBE" }), "{e}");
        let e = describe(at("admin:wrong@", "/cam"), limit).await.unwrap_err();
        assert!(matches!(e, IngestError::Auth { step: "DESCRIBE" }), "{e}");
        assert!(describe(at("admin:pw@", "/cam"), limit).await.is_ok());

        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let e =
            describe(CameraUrl::parse(&format!("rtsp://127.0.0.1:{closed}/cam")).unwrap(), limit).await.unwrap_err();
        assert!(matches!(e, IngestError::Connect { .. }) && e.to_string().contains("refused"), "{e}");
        // The kernel accepts from the backlog; nobody ever answers.
        let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = CameraUrl::parse(&format!("rtsp://127.0.0.1:{}/cam", silent.local_addr().unwrap().port())).unwrap();
        let e = describe(url, limit).await.unwrap_err();
        assert_eq!(e, IngestError::Timeout { step: "DESCRIBE", after: limit });
        let e = describe(CameraUrl::parse("rtsp://camera.invalid/cam").unwrap(), limit).await.unwrap_err();
        assert!(matches!(e, IngestError::Dns { .. }), "{e}");
    }

    /// Each lie is refused as too large, naming what broke the cap.
    #[tokio::test]
    async fn lying_cameras_are_refused_as_too_large() {
        use crate::device::ingest::error::Oversize;
        use crate::testkit::hostile_rtsp::{HostileRtsp, Lie};
        let cases = [
            (Lie::HugeContentLength, Oversize::Message),
            (Lie::EndlessHeaders, Oversize::Message),
            (Lie::Picture { width: 16000, height: 9000 }, Oversize::Picture),
        ];
        for (lie, want) in cases {
            let server = HostileRtsp::start(&[lie]).unwrap();
            let e = describe(CameraUrl::parse(&server.url("/cam")).unwrap(), Duration::from_secs(5)).await.unwrap_err();
            assert!(matches!(e, IngestError::TooLarge { what, .. } if what == want), "{lie:?}: {e}");
        }
        // An access unit that never ends shows only once playing.
        let server = HostileRtsp::start(&[Lie::EndlessAccessUnit]).unwrap();
        let (mut rx, token, task) = start(&server.url("/cam"), fast_retry());
        let reason = disconnected(&mut rx, Duration::from_secs(5)).await;
        assert!(reason.starts_with("too large: the camera sent a video frame"), "{reason}");
        stop(token, task).await;
    }

    #[test]
    fn implausible_frame_rates_are_not_announced() {
        assert!(!PLAUSIBLE_FPS.contains(&1e-40) && !PLAUSIBLE_FPS.contains(&f64::NAN));
        assert!(!PLAUSIBLE_FPS.contains(&f64::INFINITY) && !PLAUSIBLE_FPS.contains(&0.0));
        assert!(PLAUSIBLE_FPS.contains(&0.5) && PLAUSIBLE_FPS.contains(&30.0));
    }

    #[derive(Clone, Default)]
    struct LogBuf(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for LogBuf {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[tokio::test]
    async fn credentials_are_used_but_never_shown() {
        assert_eq!(percent_decode("pa%40ss%zz"), "pa@ss%zz");

        // Current-thread runtime: the thread-local subscriber sees the ingest task.
        let logs = LogBuf::default();
        let writer = logs.clone();
        let _guard = tracing::subscriber::set_default(
            tracing_subscriber::fmt().with_writer(move || writer.clone()).with_ansi(false).finish(),
        );
        let server = RtspServer::start_with_auth(0, &[("/cam", &clip("vtest.h264"))], "admin", "pa@s's").unwrap();
        let with = |creds: &str| format!("rtsp://{creds}@127.0.0.1:{}/cam", server.port());

        let (mut rx, token, task) = start(&with("admin:wrong-secret"), fast_retry());
        let reason = disconnected(&mut rx, Duration::from_secs(4)).await;
        assert!(reason.contains("401"), "{reason}");
        stop(token, task).await;

        let (mut rx, token, task) = start(&with("admin:pa%40s's"), fast_retry());
        connected(&mut rx, Duration::from_secs(5)).await;
        stop(token, task).await;

        let logs = String::from_utf8_lossy(&logs.0.lock().unwrap()).into_owned();
        assert!(logs.contains("camera=test-cam"), "{logs}");
        assert!(logs.contains("***@127.0.0.1"), "{logs}");
        assert!(!logs.contains("wrong-secret") && !logs.contains("pa@s's"), "{logs}");
        assert!(!logs.contains("pa%40s's") && !logs.contains("s's") && !reason.contains("wrong-secret"), "{logs}");
    }
}
