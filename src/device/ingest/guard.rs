//! Size caps on what a camera sends, checked on the raw bytes before retina sees them.
//!
//! retina 0.4 buffers an RTSP message whole whatever its `Content-Length` says, keeps
//! header lines without bound, and collects the fragments of an access unit until it
//! ends: a lying camera can make it take gigabytes. [`Guard`] follows the byte stream
//! from the camera (RTSP messages and `$`-framed interleaved RTP) with a few bytes of
//! state and says when a message or an access unit grows past its [`Limits`], so the
//! connection can be cut before anything that large is buffered.
//!
//! Promises: `feed` never allocates per byte or keeps more than a header line's first
//! bytes; any split of the same bytes into chunks gives the same verdict.

use crate::device::ingest::error::{IngestError, Oversize};

/// Caps per camera. The defaults fit four cameras on a 4 GB board with room to spare:
/// a 4K camera's largest keyframe is a few MB, its SDP a few KB.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// An RTSP message: header lines and body together.
    pub message_bytes: u64,
    /// One access unit (all RTP payloads of one picture).
    pub access_unit_bytes: u64,
    /// One picture, width times height.
    pub picture_pixels: u64,
}

/// Default for [`Limits::message_bytes`] (`cameras.max_message_bytes`).
pub const MAX_MESSAGE_BYTES: u64 = 1 << 20;
/// Default for [`Limits::access_unit_bytes`] (`cameras.max_frame_bytes`).
pub const MAX_ACCESS_UNIT_BYTES: u64 = 8 << 20;
/// Default for [`Limits::picture_pixels`] (`cameras.max_picture_pixels`):
/// 12 MP, 4096x3072, enough for the 4K and 12 MP cameras sold for this.
pub const MAX_PICTURE_PIXELS: u64 = 4096 * 3072;

impl Default for Limits {
    fn default() -> Self {
        Limits {
            message_bytes: MAX_MESSAGE_BYTES,
            access_unit_bytes: MAX_ACCESS_UNIT_BYTES,
            picture_pixels: MAX_PICTURE_PIXELS,
        }
    }
}

impl Limits {
    /// Refuses a `width` x `height` picture over the cap.
    pub fn check_picture(&self, width: u32, height: u32) -> Result<(), IngestError> {
        let pixels = u64::from(width) * u64::from(height);
        if pixels > self.picture_pixels {
            return Err(IngestError::TooLarge {
                what: Oversize::Picture,
                size: pixels,
                at_least: false,
                limit: self.picture_pixels,
            });
        }
        Ok(())
    }
}

/// Where the stream from the camera is.
#[derive(Debug, Clone, Copy)]
enum State {
    /// Between messages: `$` starts interleaved data, CR/LF are skipped, anything else
    /// starts an RTSP message head.
    Between,
    /// Reading the 3 bytes after `$`: channel and big-endian length.
    Interleaved { header: [u8; 3], have: usize },
    /// Inside an interleaved packet of `len` bytes, `left` of them still to come; its
    /// first 12 bytes (the RTP header) are collected in `rtp`.
    Packet { channel: u8, len: usize, left: usize },
    /// Inside an RTSP message head, `bytes` long so far.
    Head { bytes: u64 },
    /// Inside a message body, `left` bytes to go.
    Body { left: u64 },
}

/// How much of a header line is kept to find `Content-Length`.
const LINE_KEPT: usize = 64;

/// Follows one connection's bytes from the camera; see the file comment.
pub struct Guard {
    limits: Limits,
    state: State,
    /// The current header line's first bytes, and its full length.
    line: [u8; LINE_KEPT],
    line_len: usize,
    content_length: u64,
    /// The RTP header of the current packet, as it arrives.
    rtp: [u8; 12],
    rtp_have: usize,
    /// Per interleaved channel: RTP timestamp and bytes of the access unit under way.
    units: Box<[(u32, u64); 256]>,
}

impl Guard {
    pub fn new(limits: Limits) -> Guard {
        Guard {
            limits,
            state: State::Between,
            line: [0; LINE_KEPT],
            line_len: 0,
            content_length: 0,
            rtp: [0; 12],
            rtp_have: 0,
            units: Box::new([(0, 0); 256]),
        }
    }

    /// Follows `data`, the next bytes from the camera; an error when they break a cap.
    pub fn feed(&mut self, mut data: &[u8]) -> Result<(), IngestError> {
        while !data.is_empty() {
            let used = self.step(data)?;
            data = &data[used..];
        }
        Ok(())
    }

    /// Consumes a prefix of `data` (at least one byte); returns its length.
    fn step(&mut self, data: &[u8]) -> Result<usize, IngestError> {
        match self.state {
            State::Between => {
                match data[0] {
                    b'$' => self.state = State::Interleaved { header: [0; 3], have: 0 },
                    b'\r' | b'\n' => {}
                    _ => {
                        self.start_line();
                        self.state = State::Head { bytes: 0 };
                        return self.head(data);
                    }
                }
                Ok(1)
            }
            State::Interleaved { mut header, have } => {
                header[have] = data[0];
                self.state = if have == 2 {
                    let len = usize::from(u16::from_be_bytes([header[1], header[2]]));
                    self.rtp_have = 0;
                    if len == 0 { State::Between } else { State::Packet { channel: header[0], len, left: len } }
                } else {
                    State::Interleaved { header, have: have + 1 }
                };
                Ok(1)
            }
            State::Packet { channel, len, left } => {
                let n = left.min(data.len());
                self.collect_rtp_header(channel, len, &data[..n])?;
                self.state = if n == left { State::Between } else { State::Packet { channel, len, left: left - n } };
                Ok(n)
            }
            State::Head { .. } => self.head(data),
            State::Body { left } => {
                let n = usize::try_from(left).unwrap_or(usize::MAX).min(data.len());
                self.state = if n as u64 == left { State::Between } else { State::Body { left: left - n as u64 } };
                Ok(n)
            }
        }
    }

    /// Head bytes, up to and including the end of the current line.
    fn head(&mut self, data: &[u8]) -> Result<usize, IngestError> {
        let State::Head { bytes } = self.state else { unreachable!("head() outside a head") };
        let n = data.iter().position(|&b| b == b'\n').map_or(data.len(), |i| i + 1);
        let bytes = bytes + n as u64;
        if bytes > self.limits.message_bytes {
            return Err(too_large(Oversize::Message, bytes, true, self.limits.message_bytes));
        }
        for &b in &data[..n] {
            if self.line_len < LINE_KEPT {
                self.line[self.line_len] = b;
            }
            self.line_len += 1;
        }
        self.state = State::Head { bytes };
        if data[n - 1] == b'\n' {
            self.end_line(bytes)?;
        }
        Ok(n)
    }

    /// A header line ended: note a `Content-Length`; at the blank line, the body starts.
    fn end_line(&mut self, head_bytes: u64) -> Result<(), IngestError> {
        let kept = &self.line[..self.line_len.min(LINE_KEPT)];
        let text = String::from_utf8_lossy(kept);
        let line = text.trim_end_matches(['\r', '\n']);
        if line.is_empty() {
            let total = head_bytes.saturating_add(self.content_length);
            if total > self.limits.message_bytes {
                return Err(too_large(Oversize::Message, total, false, self.limits.message_bytes));
            }
            self.state =
                if self.content_length == 0 { State::Between } else { State::Body { left: self.content_length } };
            self.content_length = 0;
        } else if let Some((name, value)) = line.split_once(':')
            && name.trim().eq_ignore_ascii_case("content-length")
        {
            // A value too long to keep is too large for any cap here.
            self.content_length = match value.trim().parse::<u64>() {
                Ok(v) if self.line_len <= LINE_KEPT => v,
                _ => u64::MAX,
            };
        }
        self.start_line();
        Ok(())
    }

    fn start_line(&mut self) {
        self.line_len = 0;
    }

    /// Collects the packet's RTP header; once whole, counts the packet against its
    /// access unit. A new RTP timestamp or the marker bit ends a unit.
    fn collect_rtp_header(&mut self, channel: u8, len: usize, chunk: &[u8]) -> Result<(), IngestError> {
        if self.rtp_have >= self.rtp.len() || len < self.rtp.len() {
            return Ok(());
        }
        let take = (self.rtp.len() - self.rtp_have).min(chunk.len());
        self.rtp[self.rtp_have..self.rtp_have + take].copy_from_slice(&chunk[..take]);
        self.rtp_have += take;
        if self.rtp_have < self.rtp.len() || self.rtp[0] >> 6 != 2 {
            return Ok(());
        }
        let timestamp = u32::from_be_bytes([self.rtp[4], self.rtp[5], self.rtp[6], self.rtp[7]]);
        let marker = self.rtp[1] & 0x80 != 0;
        let unit = &mut self.units[usize::from(channel)];
        if unit.0 != timestamp {
            *unit = (timestamp, 0);
        }
        unit.1 += (len - self.rtp.len()) as u64;
        let size = unit.1;
        if marker {
            unit.1 = 0;
        }
        if size > self.limits.access_unit_bytes {
            let limit = self.limits.access_unit_bytes;
            return Err(too_large(Oversize::AccessUnit, size, !marker, limit));
        }
        Ok(())
    }
}

fn too_large(what: Oversize, size: u64, at_least: bool, limit: u64) -> IngestError {
    IngestError::TooLarge { what, size, at_least, limit }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMALL: Limits = Limits { message_bytes: 4096, access_unit_bytes: 10_000, picture_pixels: 100 };

    /// An interleaved RTP packet on `channel` with `payload` bytes.
    fn rtp(channel: u8, timestamp: u32, marker: bool, payload: usize) -> Vec<u8> {
        let len = (12 + payload) as u16;
        let mut p = vec![b'$', channel];
        p.extend_from_slice(&len.to_be_bytes());
        p.extend_from_slice(&[0x80, 96 | if marker { 0x80 } else { 0 }, 0, 1]);
        p.extend_from_slice(&timestamp.to_be_bytes());
        p.extend_from_slice(&[0, 0, 0, 7]);
        p.extend(std::iter::repeat_n(0x5a, payload));
        p
    }

    fn response(headers: &str, body: &str) -> Vec<u8> {
        format!("RTSP/1.0 200 OK\r\nCSeq: 2\r\n{headers}Content-Length: {}\r\n\r\n{body}", body.len()).into_bytes()
    }

    /// A well-behaved session: answers, then several access units under the cap, some
    /// ended by the marker bit and some only by a new timestamp, with RTCP between.
    fn good_session() -> Vec<u8> {
        let mut s = response("Content-Type: application/sdp\r\n", &"v=0\r\n".repeat(100));
        s.extend(response("Session: 1\r\n", ""));
        for unit in 0..20u32 {
            for k in 0..6 {
                s.extend(rtp(0, unit * 3000, unit % 2 == 0 && k == 5, 1400));
            }
            s.extend(rtp(1, 0, true, 40)); // RTCP-like, on its own channel
        }
        s.extend(response("", "")); // a keepalive answer in the middle of media
        s.extend(rtp(0, 99_000, true, 1400));
        s
    }

    fn verdict(limits: Limits, bytes: &[u8], chunk: usize) -> Result<(), IngestError> {
        let mut g = Guard::new(limits);
        bytes.chunks(chunk.max(1)).try_for_each(|c| g.feed(c))
    }

    fn what(r: Result<(), IngestError>) -> Option<Oversize> {
        match r {
            Ok(()) => None,
            Err(IngestError::TooLarge { what, .. }) => Some(what),
            Err(e) => panic!("unexpected {e}"),
        }
    }

    #[test]
    fn a_good_session_passes_in_any_chunks() {
        let s = good_session();
        for chunk in [1, 2, 3, 7, 13, 1000, s.len()] {
            assert_eq!(what(verdict(SMALL, &s, chunk)), None, "chunks of {chunk}");
        }
    }

    #[test]
    fn a_lying_content_length_is_cut_at_the_head() {
        let head = b"RTSP/1.0 200 OK\r\nCSeq: 2\r\nContent-Length: 4000000000\r\n\r\n";
        let err = verdict(Limits::default(), head, 5).unwrap_err();
        assert!(err.to_string().contains("RTSP message of 4000000") && err.to_string().contains("limit"), "{err}");
        let garbage = b"RTSP/1.0 200 OK\r\ncontent-length:  99999999999999999999999\r\n\r\n";
        assert_eq!(what(verdict(SMALL, garbage, 3)), Some(Oversize::Message));
    }

    #[test]
    fn endless_header_lines_and_endless_lines_are_cut() {
        let mut lines = b"RTSP/1.0 200 OK\r\n".to_vec();
        lines.extend("X-Pad: aaaaaaaaaa\r\n".repeat(300).bytes());
        assert_eq!(what(verdict(SMALL, &lines, 64)), Some(Oversize::Message));
        let one_line = vec![b'R'; 5000];
        assert_eq!(what(verdict(SMALL, &one_line, 100)), Some(Oversize::Message));
    }

    #[test]
    fn an_access_unit_that_never_ends_is_cut() {
        let endless: Vec<u8> = (0..10).flat_map(|_| rtp(0, 4711, false, 1400)).collect();
        assert_eq!(what(verdict(SMALL, &endless, 999)), Some(Oversize::AccessUnit));
        // The same bytes as units of two packets each are fine.
        let units: Vec<u8> = (0..10).flat_map(|i| rtp(0, 4711 + i / 2, i % 2 == 1, 1400)).collect();
        assert_eq!(what(verdict(SMALL, &units, 999)), None);
    }

    #[test]
    fn pictures_over_the_cap_are_refused() {
        let limits = Limits::default();
        assert!(limits.check_picture(3840, 2160).is_ok());
        assert!(limits.check_picture(4096, 3072).is_ok());
        let err = limits.check_picture(16000, 9000).unwrap_err();
        assert!(err.to_string().contains("144000000 pixels"), "{err}");
    }

    /// Whatever the bytes and however they are split, the verdict (which cap, if any)
    /// is the same and nothing panics.
    #[test]
    fn any_split_gives_the_same_verdict() {
        use proptest::prelude::*;
        let bytes = prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..3000),
            (0..200usize).prop_map(|cut| good_session()[..good_session().len() - cut].to_vec()),
        ];
        proptest!(|(bytes in bytes, chunk in 1usize..64)| {
            let whole = what(verdict(SMALL, &bytes, bytes.len()));
            prop_assert_eq!(what(verdict(SMALL, &bytes, chunk)), whole);
        });
    }
}
