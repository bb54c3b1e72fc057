//! Event clips (docs/mqtt.md, "Event clips"): a ring of each camera's encoded video as
//! ingest delivers it ([`CameraClips`]), cut around each alert and muxed to MP4 without
//! decoding ([`make`]); a camera with privacy masks has its clips decoded, masked and
//! encoded again, so no unmasked pixel leaves the device.
//!
//! Data flows one way: ingest's frames and the pipeline's messages go into
//! [`CameraClips`]; finished [`Job`]s come out, and [`make`] turns each into the
//! message that names its clip, with the MP4 beside it, for the outbox.

mod mux;
mod recorder;
mod ring;
mod timing;

use sha2::{Digest, Sha256};
use tracing::{info, warn};

pub use mux::{Mp4, MuxError, Recipe, mp4};
pub use recorder::{CameraClips, Job, RingState};
pub use ring::Ring;
pub use timing::{Timing, retime};

use crate::contract::{ClipRef, Topics, hex, timestamp};
use crate::device::publish::Outgoing;

/// The job's message with its clip attached (or alone, saying why in the log, when
/// there are no frames or the clip cannot be made: the message is never lost).
pub fn make(job: Job, topics: &Topics) -> Outgoing {
    let Job { camera, frames, stream, recipe, mut message } = job;
    let event = message.message.event_id.clone();
    let Some(stream) = stream.filter(|_| !frames.is_empty()) else {
        warn!(camera = %camera, event = %event, "no clip for this event: the camera sent no video for it");
        return message;
    };
    match mp4(&frames, stream.codec, &recipe) {
        Ok(clip) => {
            info!(
                camera = %camera,
                event = %event,
                frames = frames.len(),
                bytes = clip.bytes.len(),
                masked = matches!(recipe, Recipe::Masked { .. }),
                "clip made: {:.1} s",
                clip.duration_s
            );
            message.message.clip = Some(clip_ref(&clip, topics.clip(&event)));
            message.clip_mp4 = Some(clip.bytes);
        }
        Err(e) => warn!(camera = %camera, event = %event, "no clip for this event: {e}"),
    }
    message
}

/// What the event message says of `clip`, published on `topic`.
pub fn clip_ref(clip: &Mp4, topic: String) -> ClipRef {
    ClipRef {
        topic,
        sha256: hex(&Sha256::digest(&clip.bytes)),
        bytes: clip.bytes.len(),
        duration_s: (clip.duration_s * 100.0).round() / 100.0,
        starts_at: timestamp(clip.starts_at),
        codec: clip.codec.as_str().into(),
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::sync::Arc;
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;
    use crate::device::analysis::Polygon;
    use crate::device::ingest::{Codec, EncodedFrame};
    use crate::testkit::media::{grey_frames, probe};

    fn units(file: &str, codec: Codec) -> Vec<Arc<EncodedFrame>> {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/video").join(file);
        let start = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let all = crate::testkit::access_units::read(&path, codec, 10.0, start).unwrap();
        all.into_iter().take(120).map(Arc::new).collect()
    }

    #[test]
    fn the_cameras_own_video_becomes_an_mp4_that_plays_at_its_speed() {
        for (file, codec, name) in [("vtest.h264", Codec::H264, "h264"), ("vtest.h265", Codec::H265, "hevc")] {
            let frames = units(file, codec);
            let start = frames.iter().position(|f| f.keyframe).unwrap();
            let clip = mp4(&frames[start..], codec, &Recipe::AsSent).unwrap();
            // moov first: a browser plays it before the whole file is in.
            let moov = clip.bytes.windows(4).position(|w| w == b"moov").unwrap();
            let mdat = clip.bytes.windows(4).position(|w| w == b"mdat").unwrap();
            assert!(moov < mdat, "{file}: moov at {moov}, mdat at {mdat}");
            let p = probe(&clip.bytes).unwrap();
            assert_eq!(p.codec, name);
            let n = frames.len() - start;
            assert_eq!(p.frames, n, "{file}: every frame decodes");
            assert!((p.duration_s - n as f64 / 10.0).abs() < 0.2, "{file}: {} s for {n} frames", p.duration_s);
            assert!((clip.duration_s - p.duration_s).abs() < 0.2, "{} vs {}", clip.duration_s, p.duration_s);
            assert_eq!(p.first_picture, "I", "{file}: the first frame is a keyframe");
        }
    }

    #[test]
    fn a_masked_camera_gets_its_clip_encoded_again_black_inside_the_mask() {
        let frames = units("vtest.h264", Codec::H264);
        let mask = Polygon(vec![[0.0, 0.5], [0.5, 0.5], [0.5, 1.0], [0.0, 1.0]]);
        let recipe = Recipe::Masked { masks: vec![mask], width: 384, height: 288, fps: 5.0 };
        let clip = mp4(&frames, Codec::H264, &recipe).unwrap();
        assert_eq!(clip.codec, Codec::H264);
        let p = probe(&clip.bytes).unwrap();
        assert_eq!((p.codec.as_str(), p.width, p.height), ("h264", 384, 288));
        assert!((55..=65).contains(&p.frames), "{} frames for 12 s at 5 fps", p.frames);
        // Luma inside the mask (lower left quarter, 4 px in from its edges) is black.
        for (i, f) in grey_frames(&clip.bytes, 384, 288).unwrap().iter().enumerate() {
            let worst = (148..284).flat_map(|y| (4..188).map(move |x| f[y * 384 + x])).max().unwrap();
            assert!(worst <= 24, "frame {i}: luma {worst} inside the mask");
        }
    }
}
