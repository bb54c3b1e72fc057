//! An Annex-B file cut into access units as ingest delivers them (keyframes marked),
//! timed as a camera at `fps` would send them: for tests and the bench of the clip stage.

use std::path::Path;
use std::time::{Duration, SystemTime};

use anyhow::{Context as _, anyhow};
use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;

use crate::device::ingest::{Codec, EncodedFrame};

/// The access units of `file`, the first arriving at `start`, one every 1/`fps` s.
pub fn read(file: &Path, codec: Codec, fps: f64, start: SystemTime) -> anyhow::Result<Vec<EncodedFrame>> {
    gst::init()?;
    let c = codec.as_str();
    let pipeline = gst::parse::launch(&format!(
        "filesrc name=src ! {c}parse ! video/x-{c},stream-format=byte-stream,alignment=au ! appsink name=sink sync=false"
    ))?
    .downcast::<gst::Pipeline>()
    .map_err(|_| anyhow!("not a pipeline"))?;
    pipeline.by_name("src").context("filesrc")?.set_property("location", file.to_str().context("path")?);
    let sink =
        pipeline.by_name("sink").context("appsink")?.downcast::<gst_app::AppSink>().map_err(|_| anyhow!("appsink"))?;
    pipeline.set_state(gst::State::Playing)?;
    let mut out = Vec::new();
    while let Ok(sample) = sink.pull_sample() {
        let Some(buffer) = sample.buffer() else { continue };
        let t = Duration::from_secs_f64(out.len() as f64 / fps);
        out.push(EncodedFrame {
            data: buffer.map_readable()?.to_vec(),
            pts: t,
            received_at: start + t,
            keyframe: !buffer.flags().contains(gst::BufferFlags::DELTA_UNIT),
            lost_packets: 0,
        });
    }
    pipeline.set_state(gst::State::Null)?;
    Ok(out)
}
