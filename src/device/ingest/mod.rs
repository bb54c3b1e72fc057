//! Ingest: an RTSP session per camera (retina) delivering encoded access units, and the
//! GStreamer decoder turning them into 4:2:0 pictures for analysis.
//!
//! Its surface is re-exported here: [`run`] streams a camera, [`describe`] asks it what it
//! offers, [`Decoder`] makes pictures; the modules behind them are private.

mod camera;
mod decode;
mod error;
mod frame;
mod guard;
mod relay;
mod url;
mod yuv;

pub use camera::{Description, Ingest, IngestOptions, describe, run};
pub use decode::{
    DecodeError, DecodeOptions, DecodeStats, Decoder, DecoderChoice, access_unit_caps, analysis_size, parser,
    ranked_decoders, software_decoder,
};
pub use error::{IngestError, Oversize};
pub use frame::{Codec, EncodedFrame, Frame, StreamInfo};
pub use guard::Limits;
pub use url::CameraUrl;
pub use yuv::{Colorimetry, Recycler, Yuv420, YuvToRgb};
