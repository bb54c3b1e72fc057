//! Encoded access units into an MP4 a browser plays at once (moov first), with
//! GStreamer's own muxer: as the camera sent them (no decoding), or, for a camera with
//! privacy masks, decoded, masked and encoded again as H.264 at the analysis size.
//!
//! Promises: the first frame is a keyframe; frame times come from [`timing::retime`];
//! a failure is an error naming the GStreamer step, never a panic or a hang (the whole
//! job has a deadline).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use gstreamer_video as gst_video;
use gstreamer_video::prelude::*;

use super::timing::{self, Timing};
use crate::device::analysis::Polygon;
use crate::device::ingest::{self, Codec, EncodedFrame};
use crate::device::publish::polygon_spans;

/// Longest a clip may take to make; beyond it the job is abandoned as failed.
const DEADLINE: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum MuxError {
    #[error("no frames to make a clip of")]
    Empty,
    #[error("GStreamer element {0} is missing: {1}")]
    Missing(&'static str, &'static str),
    #[error("cannot make the clip: {0}")]
    Pipeline(String),
}

/// A finished clip.
#[derive(Debug, Clone)]
pub struct Mp4 {
    pub bytes: Vec<u8>,
    pub duration_s: f64,
    /// Arrival time of the first frame.
    pub starts_at: SystemTime,
    pub codec: Codec,
}

/// How the clip is made.
#[derive(Debug, Clone)]
pub enum Recipe {
    /// The camera's own video.
    AsSent,
    /// Decoded, `masks` blacked out, H.264 at `width` x `height`, `fps` frames a second.
    Masked { masks: Vec<Polygon>, width: u32, height: u32, fps: f64 },
}

/// Muxes `frames` (starting at a keyframe) per `recipe`.
pub fn mp4(frames: &[Arc<EncodedFrame>], codec: Codec, recipe: &Recipe) -> Result<Mp4, MuxError> {
    let first = frames.first().ok_or(MuxError::Empty)?;
    let timing = timing::retime(frames);
    let (pipeline, appsrc, appsink) = match recipe {
        Recipe::AsSent => as_sent(codec)?,
        Recipe::Masked { masks, width, height, fps } => masked(codec, masks, *width, *height, *fps)?,
    };
    let bytes = run(&pipeline, &appsrc, &appsink, frames, &timing);
    let _ = pipeline.set_state(gst::State::Null);
    let bytes = bytes?;
    let out_codec = if matches!(recipe, Recipe::Masked { .. }) { Codec::H264 } else { codec };
    Ok(Mp4 { bytes, duration_s: timing.duration(), starts_at: first.received_at, codec: out_codec })
}

fn make(name: &'static str) -> Result<gst::Element, MuxError> {
    gst::init().map_err(|e| MuxError::Pipeline(e.to_string()))?;
    gst::ElementFactory::make(name).build().map_err(|_| MuxError::Missing(name, hint(name)))
}

fn hint(name: &str) -> &'static str {
    match name {
        "x264enc" => "install gstreamer1.0-plugins-ugly (a camera with privacy masks has its clips encoded again)",
        "mp4mux" => "install gstreamer1.0-plugins-good",
        "avdec_h264" | "avdec_h265" => "install gstreamer1.0-libav",
        _ => "install gstreamer1.0-plugins-base and gstreamer1.0-plugins-bad",
    }
}

fn source(codec: Codec) -> gst_app::AppSrc {
    gst_app::AppSrc::builder().caps(&ingest::access_unit_caps(codec)).format(gst::Format::Time).max_bytes(0).build()
}

fn muxer() -> Result<gst::Element, MuxError> {
    let mux = make("mp4mux")?;
    // The index first: a browser starts playing before the whole file is in.
    mux.set_property("faststart", true);
    Ok(mux)
}

fn sink() -> gst_app::AppSink {
    gst_app::AppSink::builder().sync(false).max_buffers(0).build()
}

type Parts = (gst::Pipeline, gst_app::AppSrc, gst_app::AppSink);

fn link(appsrc: gst_app::AppSrc, middle: &[gst::Element], appsink: gst_app::AppSink) -> Result<Parts, MuxError> {
    let pipeline = gst::Pipeline::new();
    let mut all: Vec<&gst::Element> = vec![appsrc.upcast_ref()];
    all.extend(middle);
    all.push(appsink.upcast_ref());
    pipeline
        .add_many(&all)
        .and_then(|()| gst::Element::link_many(&all))
        .map_err(|e| MuxError::Pipeline(e.to_string()))?;
    Ok((pipeline, appsrc, appsink))
}

/// appsrc -> parser -> mp4mux -> appsink.
fn as_sent(codec: Codec) -> Result<Parts, MuxError> {
    link(source(codec), &[make(ingest::parser(codec))?, muxer()?], sink())
}

/// appsrc -> parser -> decoder -> scale -> rate -> I420 (masked here) -> x264 -> mp4mux -> appsink.
fn masked(codec: Codec, masks: &[Polygon], width: u32, height: u32, fps: f64) -> Result<Parts, MuxError> {
    let decoder = make(ingest::software_decoder(codec))?;
    decoder.set_property("max-errors", -1i32);
    let caps = make("capsfilter")?;
    let rate = gst::Fraction::approximate_f64(fps).unwrap_or(gst::Fraction::new(5, 1));
    caps.set_property(
        "caps",
        gst::Caps::builder("video/x-raw")
            .field("format", "I420")
            .field("width", i32::try_from(width).unwrap_or(i32::MAX))
            .field("height", i32::try_from(height).unwrap_or(i32::MAX))
            .field("pixel-aspect-ratio", gst::Fraction::new(1, 1))
            .field("framerate", rate)
            .build(),
    );
    let encoder = make("x264enc")?;
    // The cheapest preset: the box has cameras to analyse; a keyframe every 2 s.
    encoder.set_property_from_str("speed-preset", "ultrafast");
    encoder.set_property("key-int-max", (fps * 2.0).round().max(1.0) as u32);
    encoder.set_property("bitrate", 1000u32);
    encoder.set_property("threads", 1u32);
    let spans = masks.to_vec();
    caps.static_pad("src").expect("capsfilter has a src pad").add_probe(gst::PadProbeType::BUFFER, move |pad, info| {
        if let Some(gst::PadProbeData::Buffer(buffer)) = &mut info.data {
            black_out(pad, buffer, &spans);
        }
        gst::PadProbeReturn::Ok
    });
    let middle = [
        make(ingest::parser(codec))?,
        decoder,
        make("videoconvert")?,
        make("videoscale")?,
        make("videorate")?,
        caps,
        encoder,
        make("h264parse")?,
        muxer()?,
    ];
    link(source(codec), &middle, sink())
}

/// Paints `masks` black in an I420 picture: luma 16, chroma 128 (black in the usual
/// limited range), each plane at its own size.
fn black_out(pad: &gst::Pad, buffer: &mut gst::Buffer, masks: &[Polygon]) {
    let Some(info) = pad.current_caps().and_then(|c| gst_video::VideoInfo::from_caps(&c).ok()) else {
        return;
    };
    let Ok(mut frame) = gst_video::VideoFrameRef::from_buffer_ref_writable(buffer.make_mut(), &info) else {
        return;
    };
    for (plane, value) in [(0u32, 16u8), (1, 128), (2, 128)] {
        let (w, h) = (frame.comp_width(plane), frame.comp_height(plane));
        let stride = frame.plane_stride()[plane as usize] as usize;
        let Ok(data) = frame.plane_data_mut(plane) else { continue };
        for m in masks {
            for (y, x0, x1) in polygon_spans(m, w, h) {
                let row = y as usize * stride;
                data[row + x0 as usize..=row + x1 as usize].fill(value);
            }
        }
    }
}

/// Pushes every frame with its time, ends the stream, waits for the muxer to finish
/// and returns the file's bytes.
fn run(
    pipeline: &gst::Pipeline,
    appsrc: &gst_app::AppSrc,
    appsink: &gst_app::AppSink,
    frames: &[Arc<EncodedFrame>],
    timing: &Timing,
) -> Result<Vec<u8>, MuxError> {
    let fail = |e: &dyn std::fmt::Display| MuxError::Pipeline(e.to_string());
    pipeline.set_state(gst::State::Playing).map_err(|e| fail(&e))?;
    for (i, (f, &t)) in frames.iter().zip(&timing.times).enumerate() {
        let next = timing.times.get(i + 1).copied().unwrap_or(t + timing.last_duration);
        let mut buffer = gst::Buffer::from_slice(f.data.clone());
        {
            let b = buffer.get_mut().expect("a new buffer is writable");
            let pts = gst::ClockTime::from_nseconds(timing::to_duration(t).as_nanos() as u64);
            b.set_pts(pts);
            b.set_dts(pts);
            b.set_duration(gst::ClockTime::from_nseconds(timing::to_duration(next - t).as_nanos() as u64));
            if !f.keyframe {
                b.set_flags(gst::BufferFlags::DELTA_UNIT);
            }
        }
        appsrc.push_buffer(buffer).map_err(|e| fail(&e))?;
    }
    appsrc.end_of_stream().map_err(|e| fail(&e))?;
    let bus = pipeline.bus().ok_or_else(|| MuxError::Pipeline("the pipeline has no bus".into()))?;
    let deadline = std::time::Instant::now() + DEADLINE;
    let mut out = Vec::new();
    loop {
        drain(appsink, &mut out)?;
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return Err(MuxError::Pipeline(format!("not finished within {} s", DEADLINE.as_secs())));
        }
        let wait = gst::ClockTime::from_mseconds(left.as_millis().min(100) as u64);
        match bus.timed_pop_filtered(wait, &[gst::MessageType::Eos, gst::MessageType::Error]).map(|m| m.view().into()) {
            Some(Ended::Eos) => break,
            Some(Ended::Error(e)) => return Err(MuxError::Pipeline(e)),
            None => {}
        }
    }
    drain(appsink, &mut out)?;
    Ok(out)
}

/// Appends what the muxer has written so far to `out`.
fn drain(appsink: &gst_app::AppSink, out: &mut Vec<u8>) -> Result<(), MuxError> {
    while let Some(sample) = appsink.try_pull_sample(gst::ClockTime::ZERO) {
        if let Some(b) = sample.buffer() {
            out.extend_from_slice(&b.map_readable().map_err(|e| MuxError::Pipeline(e.to_string()))?);
        }
    }
    Ok(())
}

enum Ended {
    Eos,
    Error(String),
}

impl From<gst::MessageView<'_>> for Ended {
    fn from(m: gst::MessageView<'_>) -> Ended {
        match m {
            gst::MessageView::Error(e) => {
                Ended::Error(format!("{}: {}", e.src().map(|s| s.name().to_string()).unwrap_or_default(), e.error()))
            }
            _ => Ended::Eos,
        }
    }
}
