//! GStreamer decoder: encoded access units in, 4:2:0 pictures at the analysis size and
//! rate out (the decoders' own format: no conversion for the usual 8-bit streams, and
//! half the bytes of RGB to copy and keep).
//!
//! A [`Decoder`] serves one camera session: create it on `Ingest::Connected`, push every
//! frame, drop it on disconnect. `push` never blocks on decoding; pictures arrive on a
//! GStreamer thread through the `on_frame` callback, `max_fps` per second of stream time
//! on average (fractions included; every frame of a slower stream), each carrying the
//! receive time of the access unit it came from. Bad data costs pictures (counted in
//! [`DecodeStats`]), never a panic. The decoder does not buffer without bound: if it
//! falls behind, input is dropped up to the next keyframe.
//!
//! Which element decodes is `cameras.decoder` ([`DecoderChoice`]): `auto` takes the
//! highest-ranked decoder GStreamer offers for the codec (a board's hardware decoder
//! where its plugin ranks it above libav), a name forces that element. Anything but
//! libav is on probation until its first picture: if it is missing, fails, or gives
//! no picture from the first keyframe, the decoder falls back to libav, replays the
//! frames since that keyframe, logs one line and counts it ([`DecodeStats::fallbacks`]).

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use gstreamer_video as gst_video;
use gstreamer_video::prelude::*;
use tracing::{debug, warn};

use crate::device::ingest::frame::{Codec, EncodedFrame, Frame, StreamInfo};
use crate::device::ingest::yuv::{Colorimetry, Recycler, Yuv420};
use crate::device::ops::stages::{self, Stage};

/// Size and rate of the pictures the analysis wants.
#[derive(Debug, Clone, Copy)]
pub struct DecodeOptions {
    pub width: u32,
    pub height: u32,
    /// Pictures per second of stream time, at most (on average exactly, when the stream
    /// is faster); 0 or less means every frame.
    pub max_fps: f64,
}

/// Which GStreamer element decodes a camera's stream (`cameras.decoder`).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(try_from = "String", into = "String")]
pub enum DecoderChoice {
    /// The highest-ranked decoder for the stream's codec, libav if it fails.
    #[default]
    Auto,
    /// libav (avdec_h264, avdec_h265).
    Software,
    /// This element, libav if it is missing or fails.
    Element(String),
}

impl TryFrom<String> for DecoderChoice {
    type Error = crate::contract::Invalid;

    fn try_from(s: String) -> Result<DecoderChoice, Self::Error> {
        let element_name = |s: &str| {
            s.starts_with(|c: char| c.is_ascii_lowercase())
                && s.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
        };
        match s.as_str() {
            "auto" => Ok(DecoderChoice::Auto),
            "software" => Ok(DecoderChoice::Software),
            _ if element_name(&s) => Ok(DecoderChoice::Element(s)),
            _ => Err(crate::contract::Invalid(format!(
                "decoder {s:?} is not auto, software, or a GStreamer element name (see `gst-inspect-1.0 | grep -i \
                 264` for the decoders installed)"
            ))),
        }
    }
}

impl From<DecoderChoice> for String {
    fn from(c: DecoderChoice) -> String {
        match c {
            DecoderChoice::Auto => "auto".into(),
            DecoderChoice::Software => "software".into(),
            DecoderChoice::Element(e) => e,
        }
    }
}

/// What ingest hands on, as GStreamer caps: Annex-B access units of `codec`.
pub fn access_unit_caps(codec: Codec) -> gst::Caps {
    gst::Caps::builder(format!("video/x-{}", codec.as_str()))
        .field("stream-format", "byte-stream")
        .field("alignment", "au")
        .build()
}

/// GStreamer's parser for `codec`'s byte stream.
pub fn parser(codec: Codec) -> &'static str {
    match codec {
        Codec::H264 => "h264parse",
        Codec::H265 => "h265parse",
    }
}

/// libav's decoder for `codec`: always there (gstreamer1.0-libav), and the fallback.
pub fn software_decoder(codec: Codec) -> &'static str {
    match codec {
        Codec::H264 => "avdec_h264",
        Codec::H265 => "avdec_h265",
    }
}

/// The video decoders GStreamer offers for `codec` as our parser hands it on, best
/// rank first (the order `auto` tries them in; ties by name, so the order is stable).
pub fn ranked_decoders(codec: Codec) -> Result<Vec<String>, DecodeError> {
    gst::init().map_err(|e| DecodeError::Init(e.to_string()))?;
    let caps = gst::Caps::builder(format!("video/x-{}", codec.as_str()))
        .field("stream-format", "byte-stream")
        .field("alignment", "au")
        .build();
    let kinds = gst::ElementFactoryType::DECODER | gst::ElementFactoryType::MEDIA_VIDEO;
    let mut found: Vec<(gst::Rank, String)> = gst::ElementFactory::factories_with_type(kinds, gst::Rank::MARGINAL)
        .into_iter()
        .filter(|f| f.can_sink_any_caps(&caps))
        .map(|f| (f.rank(), f.name().to_string()))
        .collect();
    found.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
    Ok(found.into_iter().map(|(_, name)| name).collect())
}

/// Decoders that failed in this process: `auto` does not try them again (no second
/// probation, no second log line per reconnect), until the daemon restarts.
static FAILED_DECODERS: Mutex<Option<HashSet<String>>> = Mutex::new(None);

fn failed_before(element: &str) -> bool {
    FAILED_DECODERS.lock().unwrap_or_else(|p| p.into_inner()).as_ref().is_some_and(|s| s.contains(element))
}

fn remember_failure(element: &str) {
    FAILED_DECODERS.lock().unwrap_or_else(|p| p.into_inner()).get_or_insert_default().insert(element.to_owned());
}

/// The element to try first for `choice`; libav when `auto` finds nothing better.
fn first_choice(choice: &DecoderChoice, codec: Codec) -> String {
    let software = software_decoder(codec);
    match choice {
        DecoderChoice::Software => software.to_owned(),
        DecoderChoice::Element(e) => e.clone(),
        DecoderChoice::Auto => ranked_decoders(codec)
            .unwrap_or_default()
            .into_iter()
            .find(|e| e == software || !failed_before(e))
            .unwrap_or_else(|| software.to_owned()),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("cannot build the decoder: {0}")]
    Init(String),
    #[error("decoder failed: {0}")]
    Pipeline(String),
}

/// Counters since the decoder was created.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DecodeStats {
    /// Access units handed to GStreamer.
    pub frames_in: u64,
    /// Pictures delivered to `on_frame`.
    pub frames_out: u64,
    /// Access units not decoded: before the first keyframe, or while catching up.
    pub frames_dropped: u64,
    /// Decoder complaints about damaged data (each error libav reports while
    /// concealing corrupt or missing slices), warnings and errors.
    pub decode_errors: u64,
    /// Times the chosen decoder failed (missing, an error, or no picture from the
    /// first keyframe) and libav took over: 0 or 1.
    pub fallbacks: u64,
}

#[derive(Default)]
struct Counters {
    frames_in: AtomicU64,
    frames_out: AtomicU64,
    frames_dropped: AtomicU64,
    decode_errors: AtomicU64,
}

/// Where pictures go: shared, so that a fallback's new pipeline delivers to the same place.
type FrameSink = Arc<Mutex<Box<dyn FnMut(Frame) + Send>>>;

/// A decoder other than libav proves itself within this long after the first
/// keyframe, and this many frames (hardware decoders hold a few before the first
/// picture), or libav takes over.
const PROBATION: Duration = Duration::from_secs(3);
const PROBATION_FRAMES: usize = 15;
/// Frames kept for the replay into libav: up to the appsrc's own limit.
const REPLAY_FRAMES: usize = MAX_QUEUED as usize;

thread_local! {
    /// The counters of the decoder this streaming thread runs, so that libav's
    /// complaints, logged on that thread without the element that made them, are
    /// counted for the right camera. Weak: a finished decoder's counters go with it.
    static DECODING: std::cell::RefCell<Weak<Counters>> = const { std::cell::RefCell::new(Weak::new()) };
}

/// This thread now runs the decoder counting into `c`.
fn decoding_on_this_thread(c: &Arc<Counters>) {
    DECODING.with(|d| {
        if !std::ptr::eq(d.borrow().as_ptr(), Arc::as_ptr(c)) {
            *d.borrow_mut() = Arc::downgrade(c);
        }
    });
}

/// Listens to libav's log once per process.
fn count_libav_errors() {
    static LISTENING: OnceLock<()> = OnceLock::new();
    LISTENING.get_or_init(|| {
        // FFmpeg conceals damaged slices and says so only in its log, which gst-libav
        // forwards to GStreamer's "libav" debug category: listen there at ERROR.
        if std::env::var_os("GST_DEBUG").is_none() {
            // Without this GStreamer would print the messages we turn on to stderr.
            gst::log::remove_default_log_function();
        }
        gst::log::set_threshold_for_name("libav", gst::DebugLevel::Error);
        gst::log::add_log_function(|category, level, _file, _function, _line, _object, _message| {
            if level == gst::DebugLevel::Error && category.name() == "libav" {
                let counters = DECODING.with(|d| d.borrow().upgrade());
                if let Some(c) = counters {
                    c.decode_errors.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
    });
}

/// Access units that may wait inside GStreamer before input is dropped. Decoding takes
/// a few ms per frame, so a full queue means the machine cannot keep up.
const MAX_QUEUED: u64 = 30;
/// Bytes that may wait there, whatever the frames' size: a few keyframes of a 4K camera.
const MAX_QUEUED_BYTES: u64 = 32 << 20;

/// When a buffer entered a stage, on the streaming thread that runs it.
#[derive(Clone, Default)]
struct Mark(Arc<Mutex<Option<(Duration, Instant)>>>);

impl Mark {
    fn set(&self) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Some((stages::thread_cpu(), Instant::now()));
    }

    /// The buffer left the stage: record its CPU and wall time.
    fn record(&self, stage: Stage) {
        if let Some((cpu, wall)) = self.0.lock().unwrap_or_else(|p| p.into_inner()).take() {
            stages::record(stage, stages::thread_cpu().saturating_sub(cpu), wall.elapsed());
        }
    }
}

/// The elements of one decoder, linked: appsrc -> parser -> decoder ->
/// videoconvert -> videoscale -> capsfilter (I420 at the analysis size) -> appsink.
struct Parts {
    pipeline: gst::Pipeline,
    appsrc: gst_app::AppSrc,
    decoder: gst::Element,
    convert: gst::Element,
    appsink: gst_app::AppSink,
}

impl Parts {
    fn build(codec: Codec, element: &str, out: &DecodeOptions) -> Result<Parts, DecodeError> {
        let appsrc =
            gst_app::AppSrc::builder().caps(&access_unit_caps(codec)).format(gst::Format::Time).is_live(true).build();
        let parser = parser(codec);
        let decoder = make(element)?;
        if decoder.find_property("max-errors").is_some() {
            // libav: corrupt input (packet loss) is concealed and skipped instead of
            // stopping the pipeline after a handful of errors.
            decoder.set_property("max-errors", -1i32);
        }
        if decoder.find_property("max-threads").is_some() {
            // libav: one decoding thread per camera: cameras already keep the cores busy
            // in parallel, and libav's complaints then come from the thread we can
            // attribute; each thread would also hold its own reference pictures.
            decoder.set_property("max-threads", 1i32);
        }
        let capsfilter = make("capsfilter")?;
        capsfilter.set_property(
            "caps",
            gst::Caps::builder("video/x-raw")
                .field("format", "I420")
                .field("width", i32::try_from(out.width).unwrap_or(i32::MAX))
                .field("height", i32::try_from(out.height).unwrap_or(i32::MAX))
                .field("pixel-aspect-ratio", gst::Fraction::new(1, 1))
                .build(),
        );
        let appsink = gst_app::AppSink::builder().max_buffers(2).drop(true).sync(false).build();
        let convert = make("videoconvert")?;
        let pipeline = gst::Pipeline::new();
        let elements = [
            appsrc.upcast_ref(),
            &make(parser)?,
            &decoder,
            &convert,
            &make("videoscale")?,
            &capsfilter,
            appsink.upcast_ref(),
        ];
        pipeline
            .add_many(elements)
            .and_then(|()| gst::Element::link_many(elements))
            .map_err(|e| DecodeError::Init(e.to_string()))?;
        Ok(Parts { pipeline, appsrc, decoder, convert, appsink })
    }
}

/// Clocks the decoder between probes on its pads. Decoder, then conversion and
/// scaling, run one after the other on the streaming thread (no queues).
fn time_decoding(decoder: &gst::Element, counters: &Arc<Counters>) {
    let (Some(start), Some(end)) = (decoder.static_pad("sink"), decoder.static_pad("src")) else {
        return;
    };
    count_libav_errors();
    let (mark, c) = (Mark::default(), counters.clone());
    let m = mark.clone();
    start.add_probe(gst::PadProbeType::BUFFER, move |_, _| {
        decoding_on_this_thread(&c);
        m.set();
        gst::PadProbeReturn::Ok
    });
    end.add_probe(gst::PadProbeType::BUFFER, move |_, _| {
        mark.record(Stage::Decode);
        gst::PadProbeReturn::Ok
    });
}

/// Lets through to conversion only the pictures the analysis wants (`max_fps`), and
/// clocks conversion and scaling.
///
/// The rate limit sits after the decoder on purpose: P-frames refer to earlier
/// frames, so every frame must be decoded; conversion and scaling, costly at full
/// size, then run only for the pictures the analysis wants. A probe rather than
/// videorate: exact for fractional rates, and videorate aborts the process on a
/// stream whose headers carry no frame timing (seen with openh264 streams).
fn gate_and_time_conversion(convert: &gst::Element, appsink: &gst_app::AppSink, max_fps: f64) {
    let (Some(start), Some(end)) = (convert.static_pad("sink"), appsink.static_pad("sink")) else {
        return;
    };
    let (mark, gate) = (Mark::default(), Mutex::new(RateGate::new(max_fps)));
    let m = mark.clone();
    start.add_probe(gst::PadProbeType::BUFFER, move |_, info| {
        let pts = info.buffer().and_then(|b| b.pts()).map(|t| Duration::from_nanos(t.nseconds()));
        if pts.is_some_and(|pts| !gate.lock().unwrap_or_else(|p| p.into_inner()).admit(pts)) {
            // Taken and freed here: returning Drop instead makes GStreamer 1.22
            // warn about unreferencing a null buffer.
            drop(info.take_buffer());
            return gst::PadProbeReturn::Handled;
        }
        m.set();
        gst::PadProbeReturn::Ok
    });
    end.add_probe(gst::PadProbeType::BUFFER, move |_, _| {
        mark.record(Stage::Convert);
        gst::PadProbeReturn::Ok
    });
}

/// Hands every picture the appsink receives to `on_frame`, counted.
fn deliver(appsink: &gst_app::AppSink, camera_id: &str, counters: Arc<Counters>, on_frame: FrameSink) {
    let id = camera_id.to_owned();
    let recycler = Recycler::default();
    appsink.set_callbacks(
        gst_app::AppSinkCallbacks::builder()
            .new_sample(move |sink| {
                let sample = sink.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                match to_frame(&sample, &recycler) {
                    Some(frame) => {
                        counters.frames_out.fetch_add(1, Ordering::Relaxed);
                        (on_frame.lock().unwrap_or_else(|p| p.into_inner()))(frame);
                    }
                    None => {
                        counters.decode_errors.fetch_add(1, Ordering::Relaxed);
                        warn!(camera = %id, "decoded picture could not be read");
                    }
                }
                Ok(gst::FlowSuccess::Ok)
            })
            .build(),
    );
}

/// One started pipeline; dropping it stops it.
struct Running {
    pipeline: gst::Pipeline,
    appsrc: gst_app::AppSrc,
    bus: gst::Bus,
}

impl Running {
    fn start(
        camera_id: &str,
        info: &StreamInfo,
        element: &str,
        out: &DecodeOptions,
        counters: &Arc<Counters>,
        on_frame: &FrameSink,
    ) -> Result<Running, DecodeError> {
        let parts = Parts::build(info.codec, element, out)?;
        time_decoding(&parts.decoder, counters);
        gate_and_time_conversion(&parts.convert, &parts.appsink, out.max_fps);
        deliver(&parts.appsink, camera_id, counters.clone(), on_frame.clone());
        let Parts { pipeline, appsrc, .. } = parts;
        let bus = pipeline.bus().ok_or_else(|| DecodeError::Init("pipeline without a bus".into()))?;
        let running = Running { pipeline, appsrc, bus };
        running
            .pipeline
            .set_state(gst::State::Playing)
            .map_err(|e| DecodeError::Init(format!("cannot start the pipeline with {element}: {e}")))?;
        Ok(running)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.pipeline.set_state(gst::State::Null);
    }
}

/// A decoder other than libav that has not yet given a picture.
struct Probation {
    /// Frames pushed since the first keyframe, for the replay into libav.
    held: Vec<EncodedFrame>,
    /// When the first keyframe went in.
    since: Option<Instant>,
}

/// One session's decoder. Dropping it stops the pipeline.
pub struct Decoder {
    camera_id: String,
    info: StreamInfo,
    out: DecodeOptions,
    run: Running,
    /// The element decoding now.
    element: String,
    probation: Option<Probation>,
    counters: Arc<Counters>,
    on_frame: FrameSink,
    fallbacks: u64,
    fallbacks_reported: u64,
    /// Caps naming the clock of the receive time carried on each buffer.
    unix_caps: gst::Caps,
    awaiting_keyframe: bool,
    failed: Option<String>,
}

impl Decoder {
    /// [`Decoder::with_choice`] with `auto`.
    pub fn new(
        camera_id: &str,
        info: &StreamInfo,
        out: DecodeOptions,
        on_frame: Box<dyn FnMut(Frame) + Send>,
    ) -> Result<Decoder, DecodeError> {
        Decoder::with_choice(camera_id, info, out, &DecoderChoice::Auto, on_frame)
    }

    /// Builds and starts the pipeline for `info.codec` with the element `choice` names.
    /// `on_frame` runs on a GStreamer thread: it should only hand the picture on (e.g.
    /// `try_send` on a bounded channel). A chosen element that cannot start gives way
    /// to libav here; only libav failing too is an error.
    pub fn with_choice(
        camera_id: &str,
        info: &StreamInfo,
        out: DecodeOptions,
        choice: &DecoderChoice,
        on_frame: Box<dyn FnMut(Frame) + Send>,
    ) -> Result<Decoder, DecodeError> {
        gst::init().map_err(|e| DecodeError::Init(e.to_string()))?;
        let (counters, on_frame) = (Arc::new(Counters::default()), Arc::new(Mutex::new(on_frame)));
        let software = software_decoder(info.codec);
        let element = first_choice(choice, info.codec);
        let started = Running::start(camera_id, info, &element, &out, &counters, &on_frame);
        let (run, element, fallbacks) = match started {
            Ok(run) => (run, element, 0),
            Err(e) if element != software => {
                fallback_log(camera_id, &element, software, &e.to_string());
                remember_failure(&element);
                (Running::start(camera_id, info, software, &out, &counters, &on_frame)?, software.to_owned(), 1)
            }
            Err(e) => return Err(e),
        };
        debug!(camera = %camera_id, codec = info.codec.as_str(), decoder = %element, width = out.width,
               height = out.height, max_fps = out.max_fps, "decoder started");
        let probation = (element != software).then(|| Probation { held: Vec::new(), since: None });
        Ok(Decoder {
            camera_id: camera_id.to_owned(),
            info: info.clone(),
            out,
            run,
            element,
            probation,
            counters,
            on_frame,
            fallbacks,
            fallbacks_reported: 0,
            unix_caps: gst::Caps::new_empty_simple("timestamp/x-unix"),
            awaiting_keyframe: true,
            failed: None,
        })
    }

    /// The GStreamer element decoding now (after a fallback, libav's).
    pub fn element(&self) -> &str {
        &self.element
    }

    /// Whether libav took over since the last call (true once per fallback).
    pub fn take_fallback(&mut self) -> bool {
        let new = self.fallbacks > self.fallbacks_reported;
        self.fallbacks_reported = self.fallbacks;
        new
    }

    /// Queues one access unit for decoding; returns at once. An error means this
    /// decoder is dead (every later push fails too): build a new one.
    pub fn push(&mut self, f: &EncodedFrame) -> Result<(), DecodeError> {
        self.check_bus();
        self.check_probation();
        if let Some(e) = &self.failed {
            return Err(DecodeError::Pipeline(e.clone()));
        }
        if !f.keyframe && self.awaiting_keyframe {
            self.counters.frames_dropped.fetch_add(1, Ordering::Relaxed);
            return Ok(());
        }
        let appsrc = &self.run.appsrc;
        if appsrc.current_level_buffers() >= MAX_QUEUED || appsrc.current_level_bytes() >= MAX_QUEUED_BYTES {
            if !self.awaiting_keyframe {
                warn!(camera = %self.camera_id, "decoder falling behind; skipping to the next keyframe");
            }
            self.awaiting_keyframe = true;
            self.counters.frames_dropped.fetch_add(1, Ordering::Relaxed);
            return Ok(());
        }
        self.awaiting_keyframe = false;
        if let Some(p) = &mut self.probation {
            p.since.get_or_insert_with(Instant::now);
            if p.held.len() < REPLAY_FRAMES {
                p.held.push(f.clone());
            }
        }
        self.send(f)
    }

    /// Hands one access unit to GStreamer.
    fn send(&mut self, f: &EncodedFrame) -> Result<(), DecodeError> {
        let mut buffer = gst::Buffer::from_slice(f.data.clone());
        if let Some(b) = buffer.get_mut() {
            b.set_pts(clock_time(f.pts));
            if !f.keyframe {
                b.set_flags(gst::BufferFlags::DELTA_UNIT);
            }
            // The receive time rides along as a meta: decoder, rate limiter and scaler
            // keep metas, so each picture knows when its access unit arrived.
            let received = f.received_at.duration_since(UNIX_EPOCH).unwrap_or_default();
            gst::ReferenceTimestampMeta::add(b, &self.unix_caps, clock_time(received), None);
        }
        self.counters.frames_in.fetch_add(1, Ordering::Relaxed);
        self.run.appsrc.push_buffer(buffer).map_err(|e| {
            let e = format!("pushing a frame: {e:?}");
            self.failed = Some(e.clone());
            DecodeError::Pipeline(e)
        })?;
        Ok(())
    }

    /// Ends the probation: passed at the first picture; failed at an error, or with no
    /// picture after `PROBATION` and `PROBATION_FRAMES` from the first keyframe.
    fn check_probation(&mut self) {
        let Some(p) = &self.probation else { return };
        if self.counters.frames_out.load(Ordering::Relaxed) > 0 {
            self.probation = None;
            return;
        }
        let silent = p.since.is_some_and(|t| t.elapsed() >= PROBATION) && p.held.len() >= PROBATION_FRAMES;
        let why = match &self.failed {
            Some(e) => e.clone(),
            None if silent => format!("no picture from {} frames in {} s", p.held.len(), PROBATION.as_secs()),
            None => return,
        };
        self.fall_back(&why);
    }

    /// Replaces the pipeline with libav's and replays the frames since the keyframe.
    fn fall_back(&mut self, why: &str) {
        let held = self.probation.take().map(|p| p.held).unwrap_or_default();
        let software = software_decoder(self.info.codec);
        fallback_log(&self.camera_id, &self.element, software, why);
        remember_failure(&self.element);
        self.fallbacks += 1;
        // The old pipeline stops before the new one starts.
        let _ = self.run.pipeline.set_state(gst::State::Null);
        match Running::start(&self.camera_id, &self.info, software, &self.out, &self.counters, &self.on_frame) {
            Ok(run) => {
                (self.run, self.element, self.failed) = (run, software.to_owned(), None);
                self.awaiting_keyframe = held.is_empty();
                for f in &held {
                    if self.send(f).is_err() {
                        break;
                    }
                }
            }
            Err(e) => self.failed = Some(format!("{e} (after {} failed: {why})", self.element)),
        }
    }

    pub fn stats(&self) -> DecodeStats {
        let c = &self.counters;
        DecodeStats {
            frames_in: c.frames_in.load(Ordering::Relaxed),
            frames_out: c.frames_out.load(Ordering::Relaxed),
            frames_dropped: c.frames_dropped.load(Ordering::Relaxed),
            decode_errors: c.decode_errors.load(Ordering::Relaxed),
            fallbacks: self.fallbacks,
        }
    }

    /// Counts warnings and remembers the first error; drains everything else so the
    /// bus does not grow.
    fn check_bus(&mut self) {
        use gst::MessageView;
        while let Some(msg) = self.run.bus.pop() {
            let source = msg.src().map(|s| s.name().to_string()).unwrap_or_default();
            match msg.view() {
                MessageView::Error(e) => {
                    self.counters.decode_errors.fetch_add(1, Ordering::Relaxed);
                    warn!(camera = %self.camera_id, element = %source, error = %e.error(), "decoder error");
                    self.failed.get_or_insert_with(|| format!("{source}: {}", e.error()));
                }
                MessageView::Warning(w) => {
                    self.counters.decode_errors.fetch_add(1, Ordering::Relaxed);
                    debug!(camera = %self.camera_id, element = %source, warning = %w.error(), "decoder warning");
                }
                _ => {}
            }
        }
    }
}

/// The one line a fallback logs.
fn fallback_log(camera_id: &str, element: &str, software: &str, why: &str) {
    warn!(camera = %camera_id, decoder = %element, "decoder {element} failed ({why}); decoding in software with {software}");
}

/// Lets pictures through at `fps` per second of stream time on average, by their PTS:
/// one is due every 1/fps, and the first picture at or after that time goes through.
#[derive(Debug)]
struct RateGate {
    /// None: every picture passes.
    interval: Option<Duration>,
    next_due: Option<Duration>,
}

impl RateGate {
    fn new(fps: f64) -> RateGate {
        let interval = (fps > 0.0).then(|| Duration::try_from_secs_f64(1.0 / fps).ok()).flatten();
        RateGate { interval, next_due: None }
    }

    /// Whether the picture at `pts` goes on.
    fn admit(&mut self, pts: Duration) -> bool {
        let Some(interval) = self.interval else { return true };
        let due = match self.next_due {
            // Earlier than the last picture passed: the stream's clock went back (a new
            // stream, a wrap). Start over from here.
            Some(due) if pts + interval < due => pts,
            Some(due) if pts < due => return false,
            Some(due) => due,
            None => pts,
        };
        // Stepping from `due`, not from `pts`, keeps the average exact when pictures come
        // a little late; after a gap, start over instead of letting a burst through.
        let next = due + interval;
        self.next_due = Some(if next <= pts { pts + interval } else { next });
        true
    }
}

/// The analysis size for a `src_w` x `src_h` stream: at most `max_width` wide (0: no
/// limit), same aspect ratio, never upscaled, even numbers (what chroma subsampling and
/// the scaler like).
pub fn analysis_size(src_w: u32, src_h: u32, max_width: u32) -> (u32, u32) {
    let w = if max_width == 0 { src_w } else { src_w.min(max_width) };
    let h = if src_w == 0 {
        src_h
    } else {
        let h = (u64::from(src_h) * u64::from(w) + u64::from(src_w) / 2) / u64::from(src_w);
        u32::try_from(h).unwrap_or(src_h)
    };
    let even = |v: u32| (v & !1).max(2);
    (even(w), even(h))
}

fn make(name: &str) -> Result<gst::Element, DecodeError> {
    gst::ElementFactory::make(name).build().map_err(|_| {
        DecodeError::Init(format!(
            "GStreamer element {name} is missing (packages gstreamer1.0-plugins-base, \
             -plugins-bad and gstreamer1.0-libav provide what the decoder needs)"
        ))
    })
}

fn clock_time(d: Duration) -> gst::ClockTime {
    gst::ClockTime::from_nseconds(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// Copies a decoded picture's planes, packed: GStreamer pads rows, `Yuv420` not.
fn to_frame(sample: &gst::Sample, recycler: &Recycler) -> Option<Frame> {
    let buffer = sample.buffer()?;
    let info = gst_video::VideoInfo::from_caps(sample.caps()?).ok()?;
    let frame = gst_video::VideoFrameRef::from_buffer_ref_readable(buffer, &info).ok()?;
    let (width, height) = (info.width(), info.height());
    let (cw, ch) = Yuv420::chroma_size(width, height);
    let mut data = recycler.take(Yuv420::len_for(width, height));
    for (plane, (w, h)) in [(width, height), (cw, ch), (cw, ch)].into_iter().enumerate() {
        let stride = usize::try_from(*frame.plane_stride().get(plane)?).ok()?;
        let src = frame.plane_data(plane as u32).ok()?;
        for y in 0..h as usize {
            data.extend_from_slice(src.get(y * stride..y * stride + w as usize)?);
        }
    }
    let colorimetry = Colorimetry {
        bt709: info.colorimetry().matrix() == gst_video::VideoColorMatrix::Bt709,
        full_range: info.colorimetry().range() == gst_video::VideoColorRange::Range0_255,
    };
    let picture = Yuv420::from_planes(width, height, data, colorimetry)?.returning_to(recycler);
    let captured_at = buffer
        .iter_meta::<gst::ReferenceTimestampMeta>()
        .find(|m| m.reference().structure(0).is_some_and(|s| s.name() == "timestamp/x-unix"))
        .map(|m| UNIX_EPOCH + Duration::from_nanos(m.timestamp().nseconds()))
        .unwrap_or_else(SystemTime::now);
    Some(Frame {
        picture,
        captured_at,
        pts: buffer.pts().map(|t| Duration::from_nanos(t.nseconds())).unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::ingest::camera::{self, Ingest, IngestOptions};
    use crate::testkit::rtsp_server::RtspServer;
    use tokio_util::sync::CancellationToken;

    /// The pictures `gate` passes out of `n` frames `step_ms` apart from `start_ms`.
    fn passed(gate: &mut RateGate, start_ms: u64, step_ms: u64, n: u64) -> Vec<u64> {
        (0..n).map(|i| start_ms + i * step_ms).filter(|&t| gate.admit(Duration::from_millis(t))).collect()
    }

    #[test]
    fn rate_gate_keeps_fractional_rates_exact_on_average() {
        // 2.5 fps out of 10: every 400 ms.
        let mut gate = RateGate::new(2.5);
        assert_eq!(passed(&mut gate, 0, 100, 20), [0, 400, 800, 1200, 1600]);
        // 0.5 fps of a 3 fps stream: every 2 s on average.
        let mut gate = RateGate::new(0.5);
        let got = passed(&mut gate, 0, 333, 62);
        assert_eq!(got.len(), 11, "{got:?}");
        assert!(got.windows(2).all(|w| (1998..=2331).contains(&(w[1] - w[0]))), "{got:?}");
        // 2.5 fps out of 3: 5 pictures in 2 s.
        let mut gate = RateGate::new(2.5);
        assert_eq!(passed(&mut gate, 0, 333, 6).len(), 5);
        // Every frame when the stream is slower, or without a limit.
        assert_eq!(passed(&mut RateGate::new(5.0), 0, 500, 4).len(), 4);
        assert_eq!(passed(&mut RateGate::new(0.0), 0, 1, 50).len(), 50);
    }

    #[test]
    fn rate_gate_resyncs_after_gaps_and_jumps_back() {
        let mut gate = RateGate::new(2.5);
        assert_eq!(passed(&mut gate, 0, 100, 5), [0, 400]);
        // A 10 s gap: the next picture passes, then 400 ms steps again, no burst.
        assert_eq!(passed(&mut gate, 10_000, 100, 9), [10_000, 10_400, 10_800]);
        // The stream's clock starts over at 0: it is followed at once.
        assert_eq!(passed(&mut gate, 0, 100, 9), [0, 400, 800]);
    }

    #[test]
    fn analysis_size_keeps_aspect_and_never_upscales() {
        assert_eq!(analysis_size(768, 576, 384), (384, 288));
        assert_eq!(analysis_size(1920, 1080, 640), (640, 360));
        assert_eq!(analysis_size(768, 576, 1280), (768, 576));
        assert_eq!(analysis_size(704, 480, 0), (704, 480));
        assert_eq!(analysis_size(1000, 563, 500), (500, 282));
        assert_eq!(analysis_size(0, 0, 640), (2, 2));
    }

    /// Receives `n` frames of a served clip, from its first keyframe.
    async fn ingest(file: &str, n: usize) -> (StreamInfo, Vec<EncodedFrame>) {
        let clip = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/video").join(file);
        let server = RtspServer::start(0, &[("/cam", &clip)]).unwrap();
        let (tx, mut rx) = tokio::sync::mpsc::channel(64);
        let token = CancellationToken::new();
        let url = crate::device::ingest::url::CameraUrl::parse(&server.url("/cam")).unwrap();
        let task = tokio::spawn(camera::run("test-cam".into(), url, IngestOptions::default(), tx, token.clone()));
        let mut info = None;
        let mut frames = Vec::new();
        while frames.len() < n {
            match tokio::time::timeout(Duration::from_secs(5), rx.recv()).await {
                Ok(Some(Ingest::Connected(i))) => info = Some(i),
                Ok(Some(Ingest::Frame(f))) => frames.push(f),
                other => panic!("unexpected {other:?}"),
            }
        }
        token.cancel();
        task.await.unwrap();
        (info.unwrap(), frames)
    }

    /// Damaged slices are concealed, counted for this decoder only, and pictures go on.
    #[tokio::test]
    async fn corrupt_slices_are_counted_and_pictures_continue() {
        let (info, frames) = ingest("vtest.h264", 40).await;
        let decode = |frames: Vec<EncodedFrame>| {
            let (tx, pictures) = std::sync::mpsc::channel();
            let opts = DecodeOptions { width: 384, height: 288, max_fps: 0.0 };
            let on_frame = Box::new(move |f: Frame| {
                let _ = tx.send(f.pts);
            });
            let mut decoder = Decoder::new("test-cam", &info, opts, on_frame).unwrap();
            for f in &frames {
                decoder.push(f).unwrap();
            }
            let mut n = 0;
            while pictures.recv_timeout(Duration::from_millis(1000)).is_ok() {
                n += 1;
            }
            (n, decoder.stats().decode_errors)
        };
        let (clean_pictures, clean_errors) = decode(frames.clone());
        assert_eq!(clean_errors, 0, "the clean clip decodes without complaint");
        let mut damaged = frames.clone();
        for f in damaged.iter_mut().filter(|f| !f.keyframe).step_by(3) {
            let len = f.data.len();
            for i in (len / 3..len - 1).step_by(97) {
                f.data[i] ^= 0xff;
            }
        }
        let (pictures, errors) = decode(damaged);
        assert!(errors > 0, "damage must be counted");
        assert!(pictures + 2 >= clean_pictures, "concealed, not dropped: {pictures} of {clean_pictures} pictures");
    }

    /// A stream whose headers carry no frame timing (openh264 writes none) decodes at
    /// the analysis rate; GStreamer's videorate used to abort the whole process on it.
    #[tokio::test]
    async fn a_stream_without_frame_timing_decodes() {
        gst::init().unwrap();
        let file = std::env::temp_dir().join(format!("gridwatch-notiming-{}.h264", std::process::id()));
        let make = gst::parse::launch(&format!(
            "videotestsrc num-buffers=60 pattern=ball ! video/x-raw,width=320,height=240,framerate=10/1 \
             ! openh264enc ! h264parse ! video/x-h264,stream-format=byte-stream ! filesink location={}",
            file.display()
        ))
        .expect("openh264enc (gstreamer1.0-plugins-bad)");
        make.set_state(gst::State::Playing).unwrap();
        let bus = make.bus().unwrap();
        bus.timed_pop_filtered(gst::ClockTime::from_seconds(20), &[gst::MessageType::Eos, gst::MessageType::Error])
            .expect("clip made");
        make.set_state(gst::State::Null).unwrap();

        let server = RtspServer::start(0, &[("/cam", &file)]).unwrap();
        let (tx, mut rx) = tokio::sync::mpsc::channel(64);
        let token = CancellationToken::new();
        let url = crate::device::ingest::url::CameraUrl::parse(&server.url("/cam")).unwrap();
        let task = tokio::spawn(camera::run("test-cam".into(), url, IngestOptions::default(), tx, token.clone()));
        let (pictures_tx, pictures) = std::sync::mpsc::channel();
        let mut decoder = None;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while pictures.try_iter().count() == 0 {
            match tokio::time::timeout_at(deadline, rx.recv()).await.expect("a picture within 10 s") {
                Some(Ingest::Connected(info)) => {
                    let opts = DecodeOptions { width: 320, height: 240, max_fps: 5.0 };
                    let tx = pictures_tx.clone();
                    decoder = Some(Decoder::new("test-cam", &info, opts, Box::new(move |f| drop(tx.send(f)))).unwrap());
                }
                Some(Ingest::Frame(f)) => decoder.as_mut().expect("Connected first").push(&f).unwrap(),
                other => panic!("unexpected {other:?}"),
            }
        }
        token.cancel();
        task.await.unwrap();
        let _ = std::fs::remove_file(&file);
    }

    /// 2.5 fps of the 10 fps clip: exactly, not rounded to whole rates.
    #[tokio::test]
    async fn fractional_max_fps_is_exact() {
        let (info, frames) = ingest("vtest.h264", 40).await;
        let (tx, pictures) = std::sync::mpsc::channel();
        let opts = DecodeOptions { width: 384, height: 288, max_fps: 2.5 };
        let on_frame = Box::new(move |f: Frame| {
            let _ = tx.send(f.pts);
        });
        let mut decoder = Decoder::new("test-cam", &info, opts, on_frame).unwrap();
        for f in &frames {
            // Paced like a camera, so no frame is skipped for a full queue.
            while decoder.run.appsrc.current_level_buffers() >= 10 {
                std::thread::sleep(Duration::from_millis(5));
            }
            decoder.push(f).unwrap();
        }
        let mut pts = Vec::new();
        while let Ok(p) = pictures.recv_timeout(Duration::from_millis(1000)) {
            pts.push(p.as_millis() as i64);
        }
        let stats = decoder.stats();
        eprintln!("2.5 fps of 10 fps: {} pictures at {pts:?} ms, {stats:?}", pts.len());
        assert_eq!(stats.frames_in, 40, "{stats:?}");
        assert!((9..=11).contains(&pts.len()), "{} pictures: {pts:?}", pts.len());
        let gaps: Vec<i64> = pts.windows(2).map(|w| w[1] - w[0]).collect();
        let mean = gaps.iter().sum::<i64>() as f64 / gaps.len() as f64;
        assert!((mean - 400.0).abs() <= 40.0, "mean gap {mean} ms: {pts:?}");
        // Each gap is a whole number of frames of the stream, around the 400 ms due.
        assert!(gaps.iter().all(|g| (300..=700).contains(g)), "{gaps:?}");
    }

    /// Garbage first, then a burst of 1080p frames decoded without a rate limit: the
    /// decoder survives the garbage, recovers at the keyframe, and shows its speed.
    #[tokio::test]
    async fn survives_garbage_and_decodes_1080p_burst() {
        let (info, frames) = ingest("vtest_1080p.h264", 25).await;
        assert_eq!((info.width, info.height), (1920, 1080));
        let (tx, pictures) = std::sync::mpsc::channel();
        let opts = DecodeOptions { width: 640, height: 360, max_fps: 0.0 };
        let on_frame = Box::new(move |f: Frame| {
            let _ = tx.send((std::time::Instant::now(), f));
        });
        let mut decoder = Decoder::new("test-cam", &info, opts, on_frame).unwrap();

        let mut junk = vec![0, 0, 0, 1, 0x65];
        junk.extend((0..5000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8));
        for i in 0..3u64 {
            let garbage = EncodedFrame {
                data: junk.clone(),
                pts: Duration::from_millis(100 * i),
                received_at: SystemTime::now(),
                keyframe: true,
                lost_packets: 0,
            };
            decoder.push(&garbage).unwrap();
        }
        std::thread::sleep(Duration::from_millis(200));

        let start = std::time::Instant::now();
        for f in &frames {
            let mut f = f.clone();
            f.pts += Duration::from_secs(1);
            decoder.push(&f).unwrap();
        }
        let mut got = Vec::new();
        while let Ok(p) = pictures.recv_timeout(Duration::from_millis(1000)) {
            got.push(p);
        }
        let stats = decoder.stats();
        let last = got.last().map(|(t, _)| t.duration_since(start)).unwrap_or_default();
        eprintln!(
            "1080p -> 640x360: {} pictures in {last:?} ({:.1} ms each), {stats:?}",
            got.len(),
            last.as_secs_f64() * 1000.0 / got.len().max(1) as f64
        );
        assert!(got.len() >= frames.len() - 1, "{} pictures", got.len());
        assert!(got.iter().all(|(_, p)| p.picture.dimensions() == (640, 360)));
    }

    /// Log lines written while `f` runs on this thread.
    fn logged<R>(f: impl FnOnce() -> R) -> (R, String) {
        #[derive(Clone, Default)]
        struct Buf(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Buf {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let buf = Buf::default();
        let writer = buf.clone();
        let subscriber = tracing_subscriber::fmt().with_ansi(false).with_writer(move || writer.clone()).finish();
        let r = tracing::subscriber::with_default(subscriber, f);
        let text = String::from_utf8_lossy(&buf.0.lock().unwrap()).into_owned();
        (r, text)
    }

    /// Pushes `frames` paced like a camera; returns the pictures that came out.
    fn decode_all(
        decoder: &mut Decoder,
        frames: &[EncodedFrame],
        pictures: &std::sync::mpsc::Receiver<Duration>,
    ) -> usize {
        for f in frames {
            while decoder.run.appsrc.current_level_buffers() >= 10 {
                std::thread::sleep(Duration::from_millis(5));
            }
            decoder.push(f).unwrap();
        }
        let mut n = 0;
        while pictures.recv_timeout(Duration::from_millis(1000)).is_ok() {
            n += 1;
        }
        n
    }

    fn counting_sink() -> (Box<dyn FnMut(Frame) + Send>, std::sync::mpsc::Receiver<Duration>) {
        let (tx, rx) = std::sync::mpsc::channel();
        (
            Box::new(move |f: Frame| {
                let _ = tx.send(f.pts);
            }),
            rx,
        )
    }

    fn is_hardware(element: &str) -> bool {
        gst::ElementFactory::find(element)
            .and_then(|f| f.metadata(gst::ELEMENT_METADATA_KLASS).map(|k| k.contains("Hardware")))
            .unwrap_or(false)
    }

    /// `auto` on a machine whose GStreamer has only software decoders (this one, and
    /// CI) takes libav for both codecs, decodes, and reports no fallback.
    #[tokio::test]
    async fn auto_takes_libav_when_only_software_decoders_exist() {
        for (file, codec) in [("vtest.h264", Codec::H264), ("vtest.h265", Codec::H265)] {
            let ranked = ranked_decoders(codec).unwrap();
            assert!(ranked.iter().any(|e| e == software_decoder(codec)), "{codec:?}: {ranked:?}");
            let hardware: Vec<&String> = ranked.iter().filter(|e| is_hardware(e)).collect();
            assert!(hardware.is_empty(), "this test needs a machine without hardware decoders; found {hardware:?}");
            let (info, frames) = ingest(file, 20).await;
            let (sink, pictures) = counting_sink();
            let opts = DecodeOptions { width: 384, height: 288, max_fps: 0.0 };
            let mut decoder = Decoder::with_choice("test-cam", &info, opts, &DecoderChoice::Auto, sink).unwrap();
            assert_eq!(decoder.element(), software_decoder(codec), "{codec:?}: ranked {ranked:?}");
            let n = decode_all(&mut decoder, &frames, &pictures);
            assert!(n + 2 >= frames.len(), "{codec:?}: {n} pictures of {} frames", frames.len());
            assert_eq!(decoder.stats().fallbacks, 0);
            assert!(!decoder.take_fallback());
        }
    }

    /// A forced element that does not exist gives way to libav at once, says so in one
    /// line naming both, and counts it.
    #[tokio::test]
    async fn a_missing_forced_decoder_falls_back_to_libav_and_says_so() {
        let (info, frames) = ingest("vtest.h264", 20).await;
        let (sink, pictures) = counting_sink();
        let opts = DecodeOptions { width: 384, height: 288, max_fps: 0.0 };
        let choice = DecoderChoice::Element("nosuchh264dec".into());
        let (decoder, log) = logged(|| Decoder::with_choice("test-cam", &info, opts, &choice, sink));
        let mut decoder = decoder.unwrap();
        assert_eq!(decoder.element(), "avdec_h264");
        let lines: Vec<&str> = log.lines().filter(|l| l.contains("decoding in software")).collect();
        assert_eq!(lines.len(), 1, "{log}");
        assert!(lines[0].contains("test-cam") && lines[0].contains("nosuchh264dec is missing"), "{log}");
        assert!(decoder.take_fallback() && !decoder.take_fallback(), "one fallback, reported once");
        let n = decode_all(&mut decoder, &frames, &pictures);
        assert!(n + 2 >= frames.len(), "{n} pictures of {} frames", frames.len());
    }

    /// A forced element that cannot take the stream (identity would hand H.264 to the
    /// converter as it is) gives way to libav when the pipeline is built, and says so.
    #[tokio::test]
    async fn a_forced_element_that_cannot_decode_falls_back_at_once() {
        let (info, frames) = ingest("vtest.h264", 20).await;
        let (sink, pictures) = counting_sink();
        let opts = DecodeOptions { width: 384, height: 288, max_fps: 0.0 };
        let choice = DecoderChoice::Element("identity".into());
        let (decoder, log) = logged(|| Decoder::with_choice("test-cam", &info, opts, &choice, sink));
        let mut decoder = decoder.unwrap();
        assert_eq!((decoder.element(), decoder.stats().fallbacks), ("avdec_h264", 1), "{log}");
        assert!(log.contains("decoder identity failed"), "{log}");
        let n = decode_all(&mut decoder, &frames, &pictures);
        assert!(n + 2 >= frames.len(), "{n} pictures of {} frames", frames.len());
    }

    /// A non-libav decoder that starts but gives no picture from its first keyframes
    /// (openh264dec fed damaged keyframes) is dropped after its probation: libav takes
    /// over, one line says so, and the stream decodes. A working one (openh264dec on the
    /// clean clip) passes and stays.
    #[tokio::test]
    async fn a_forced_decoder_silent_after_the_first_keyframe_gives_way_to_libav() {
        let (info, frames) = ingest("vtest.h264", 20).await;
        let opts = DecodeOptions { width: 384, height: 288, max_fps: 0.0 };
        let choice = DecoderChoice::Element("openh264dec".into());
        let (sink, pictures) = counting_sink();
        let mut decoder = Decoder::with_choice("test-cam", &info, opts, &choice, sink).unwrap();
        let n = decode_all(&mut decoder, &frames, &pictures);
        assert_eq!((decoder.element(), decoder.stats().fallbacks), ("openh264dec", 0));
        assert!(n + 2 >= frames.len(), "{n} pictures of {} frames", frames.len());

        let (sink, pictures) = counting_sink();
        let mut decoder = Decoder::with_choice("test-cam", &info, opts, &choice, sink).unwrap();
        assert_eq!(decoder.element(), "openh264dec", "it starts");
        let mut junk = vec![0, 0, 0, 1, 0x65];
        junk.extend((0..5000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8));
        let ((), log) = logged(|| {
            for i in 0..(PROBATION_FRAMES as u64 + 1) {
                let pts = Duration::from_millis(100 * i);
                let f = EncodedFrame {
                    data: junk.clone(),
                    pts,
                    received_at: SystemTime::now(),
                    keyframe: true,
                    lost_packets: 0,
                };
                decoder.push(&f).unwrap();
                std::thread::sleep(PROBATION / PROBATION_FRAMES as u32);
            }
            for f in &frames {
                let mut f = f.clone();
                f.pts += Duration::from_secs(10);
                decoder.push(&f).unwrap();
            }
        });
        assert_eq!((decoder.element(), decoder.stats().fallbacks), ("avdec_h264", 1), "{log}");
        let lines: Vec<&str> = log.lines().filter(|l| l.contains("decoding in software")).collect();
        assert_eq!(lines.len(), 1, "{log}");
        assert!(lines[0].contains("decoder openh264dec failed"), "{log}");
        let mut n = 0;
        while pictures.recv_timeout(Duration::from_millis(1000)).is_ok() {
            n += 1;
        }
        assert!(n + 2 >= frames.len(), "{n} pictures of {} clean frames after the junk", frames.len());
    }

    #[test]
    fn decoder_setting_parses_and_refuses_what_is_not_an_element() {
        let parse = |s: &str| DecoderChoice::try_from(s.to_owned());
        assert_eq!(parse("auto").unwrap(), DecoderChoice::Auto);
        assert_eq!(parse("software").unwrap(), DecoderChoice::Software);
        assert_eq!(parse("v4l2slh264dec").unwrap(), DecoderChoice::Element("v4l2slh264dec".into()));
        let msg = parse("avdec_h264 ! fakesink").unwrap_err().0;
        assert!(msg.contains("not auto, software, or a GStreamer element name"), "{msg}");
        assert!(parse("").is_err() && parse("Auto").is_err());
    }
}
