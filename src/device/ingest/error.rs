//! Why a camera session failed or could not start, as one typed value.
//!
//! Promises: every ingest failure is an [`IngestError`], built where the cause is at
//! hand (the resolver's and the socket's `io::Error`, retina's RTSP status code, our
//! own time limits and size caps), never sorted again by matching text. Its `Display`
//! is one short line, free of credentials, the `last_error` health shows.

use std::time::Duration;

/// What a size cap protects; see [`crate::device::ingest::limits`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Oversize {
    /// An RTSP message (its header lines and body together).
    Message,
    /// One access unit (a coded picture) of the video stream.
    AccessUnit,
    /// A decoded picture, in pixels.
    Picture,
}

impl Oversize {
    fn what(self) -> &'static str {
        match self {
            Oversize::Message => "an RTSP message",
            Oversize::AccessUnit => "a video frame (access unit)",
            Oversize::Picture => "a picture",
        }
    }

    fn unit(self) -> &'static str {
        match self {
            Oversize::Picture => "pixels",
            Oversize::Message | Oversize::AccessUnit => "bytes",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IngestError {
    /// The camera's host name does not resolve.
    #[error("cannot resolve {host}: {detail}")]
    Dns { host: String, detail: String },
    /// The TCP connection was refused, or the host or network is unreachable.
    #[error("cannot connect to {target}: {detail}")]
    Connect { target: String, detail: String },
    /// The camera refused the credentials (401).
    #[error("{step} failed: 401 Unauthorized; check the user name and password in the URL")]
    Auth { step: &'static str },
    /// Nothing at that path (404).
    #[error("{step} failed: 404 Not Found; check the path in the URL")]
    NotFound { step: &'static str },
    /// No answer within the time limit (connecting, DESCRIBE, SETUP, PLAY).
    #[error("{step} timed out after {after:?}")]
    Timeout { step: &'static str, after: Duration },
    /// The session was up, but no frame came for the stall timeout.
    #[error("stalled: no frame for {0:?}")]
    Stalled(Duration),
    /// Connected and playing, but no keyframe within the stall timeout.
    #[error("stalled: no keyframe within {0:?}")]
    NoKeyframe(Duration),
    /// The camera offers no video stream at all.
    #[error("no video stream (camera offers: {})", .offered.join(", "))]
    NoVideo { offered: Vec<String> },
    /// Video, but not H.264 or H.265.
    #[error("no H.264 or H.265 video stream (camera offers: {})", .offered.join(", "))]
    Codec { offered: Vec<String> },
    /// Anything else the RTSP exchange or the stream got wrong; `status` when the
    /// camera answered with an error status (503: busy, try again).
    #[error("{step} failed: {detail}")]
    Rtsp { step: &'static str, status: Option<u16>, detail: String },
    /// The camera sent more than a cap allows; the session is dropped before it can
    /// take the memory.
    #[error("too large: the camera sent {} of {}{} {} (limit {} {}); session dropped",
            .what.what(), if *.at_least { "at least " } else { "" }, .size, .what.unit(), .limit, .what.unit())]
    TooLarge { what: Oversize, size: u64, at_least: bool, limit: u64 },
    /// This machine could not do its part (no file descriptor left, ...).
    #[error("local: {0}")]
    Local(String),
}

impl IngestError {
    /// The error for a failed RTSP request, from retina's error and status code.
    pub fn from_retina(step: &'static str, e: &retina::Error) -> IngestError {
        match e.status_code() {
            Some(401) => IngestError::Auth { step },
            Some(404) => IngestError::NotFound { step },
            status => IngestError::Rtsp { step, status, detail: first_line(e) },
        }
    }

    /// A failed connection attempt, from the socket's error.
    pub fn from_connect(target: &str, e: &std::io::Error) -> IngestError {
        if is_out_of_descriptors(e) {
            return IngestError::Local(format!("{e}; too many connections open"));
        }
        IngestError::Connect { target: target.to_owned(), detail: e.to_string().to_lowercase() }
    }

    /// Whether the camera said it is busy (503); worth asking again at once.
    pub fn is_busy(&self) -> bool {
        matches!(self, IngestError::Rtsp { status: Some(503), .. })
    }
}

/// EMFILE and ENFILE: this process or the system ran out of file descriptors.
pub fn is_out_of_descriptors(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE))
}

/// retina's errors run over several lines of connection context; a reason needs one.
pub fn first_line(e: &retina::Error) -> String {
    e.to_string().lines().next().unwrap_or_default().trim().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_one_line_and_say_what_happened() {
        let big =
            IngestError::TooLarge { what: Oversize::Message, size: 4_000_000_000, at_least: false, limit: 1 << 20 };
        assert_eq!(
            big.to_string(),
            "too large: the camera sent an RTSP message of 4000000000 bytes (limit 1048576 bytes); session dropped"
        );
        let refused = std::io::Error::from_raw_os_error(libc::ECONNREFUSED);
        let e = IngestError::from_connect("10.0.0.1:554", &refused);
        assert!(matches!(e, IngestError::Connect { .. }) && e.to_string().contains("refused"), "{e}");
        let emfile = std::io::Error::from_raw_os_error(libc::EMFILE);
        assert!(matches!(IngestError::from_connect("x", &emfile), IngestError::Local(_)));
        assert!(IngestError::Rtsp { step: "DESCRIBE", status: Some(503), detail: String::new() }.is_busy());
    }
}
