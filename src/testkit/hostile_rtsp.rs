//! A lying camera for tests: an RTSP server on 127.0.0.1 that answers the way a broken
//! or hostile camera might, to check that what it sends cannot take the device's
//! memory. Each connection gets the next [`Lie`] of the list, round and round.
//!
//! Promises: every lie is sent as fast as the client reads, until the client closes
//! the connection or the server is dropped (which closes its listener; a connection
//! under way ends at its next write). Nothing here is meant to be robust.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

/// What the server does with a connection.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Lie {
    /// Answers the first request with `Content-Length: 4000000000` and streams a body.
    HugeContentLength,
    /// Answers the first request with header lines that never end.
    EndlessHeaders,
    /// Plays an H.264 stream whose first access unit never ends (FU-A fragments with
    /// one timestamp and no marker bit).
    EndlessAccessUnit,
    /// Announces an H.264 stream of `width` x `height` pixels in its SDP.
    Picture { width: u32, height: u32 },
}

/// A running server; dropping it stops accepting and ends the connections.
pub struct HostileRtsp {
    port: u16,
    stop: Arc<AtomicBool>,
    connections: Arc<AtomicUsize>,
}

impl HostileRtsp {
    /// Listens on a free loopback port; connection n gets `lies[n % lies.len()]`.
    pub fn start(lies: &[Lie]) -> std::io::Result<HostileRtsp> {
        assert!(!lies.is_empty(), "at least one lie");
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let port = listener.local_addr()?.port();
        let stop = Arc::new(AtomicBool::new(false));
        let connections = Arc::new(AtomicUsize::new(0));
        let (lies, stop2, count) = (lies.to_vec(), stop.clone(), connections.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                if stop2.load(Ordering::Relaxed) {
                    return;
                }
                let Ok(stream) = stream else { continue };
                let n = count.fetch_add(1, Ordering::Relaxed);
                let (lie, stop) = (lies[n % lies.len()], stop2.clone());
                std::thread::spawn(move || {
                    let _ = serve(stream, lie, &stop);
                });
            }
        });
        Ok(HostileRtsp { port, stop, connections })
    }

    pub fn url(&self, path: &str) -> String {
        format!("rtsp://127.0.0.1:{}/{}", self.port, path.trim_start_matches('/'))
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::Relaxed)
    }
}

impl Drop for HostileRtsp {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wakes the accept loop so that it sees the flag.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

/// One request: its method and CSeq.
fn read_request(reader: &mut impl BufRead) -> std::io::Result<(String, String)> {
    let mut method = String::new();
    let mut cseq = "0".to_owned();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        let line = line.trim_end();
        if line.is_empty() && !method.is_empty() {
            return Ok((method, cseq));
        }
        if method.is_empty() {
            method = line.split(' ').next().unwrap_or_default().to_owned();
        } else if let Some(v) = line.strip_prefix("CSeq:") {
            cseq = v.trim().to_owned();
        }
    }
}

fn serve(stream: TcpStream, lie: Lie, stop: &AtomicBool) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut out = stream.try_clone()?;
    let mut reader = BufReader::new(stream);
    loop {
        let (method, cseq) = read_request(&mut reader)?;
        match (lie, method.as_str()) {
            (Lie::HugeContentLength, _) => {
                write!(out, "RTSP/1.0 200 OK\r\nCSeq: {cseq}\r\nContent-Type: application/sdp\r\n")?;
                write!(out, "Content-Length: 4000000000\r\n\r\n")?;
                return flood(&mut out, stop, |_| vec![b'v'; 64 * 1024]);
            }
            (Lie::EndlessHeaders, _) => {
                write!(out, "RTSP/1.0 200 OK\r\nCSeq: {cseq}\r\n")?;
                let line = format!("X-Padding: {}\r\n", "p".repeat(200));
                return flood(&mut out, stop, |_| line.repeat(64).into_bytes());
            }
            (_, "OPTIONS") => answer(&mut out, &cseq, "Public: DESCRIBE, SETUP, PLAY, TEARDOWN\r\n", "")?,
            (_, "DESCRIBE") => {
                let sdp = sdp(lie);
                answer(&mut out, &cseq, "Content-Type: application/sdp\r\n", &sdp)?;
            }
            (_, "SETUP") => {
                let headers = "Transport: RTP/AVP/TCP;unicast;interleaved=0-1\r\nSession: 4711;timeout=60\r\n";
                answer(&mut out, &cseq, headers, "")?;
            }
            (_, "PLAY") => {
                answer(&mut out, &cseq, "Session: 4711\r\n", "")?;
                if lie == Lie::EndlessAccessUnit {
                    return flood(&mut out, stop, endless_fragments);
                }
            }
            (_, "TEARDOWN") => {
                answer(&mut out, &cseq, "Session: 4711\r\n", "")?;
                return Ok(());
            }
            _ => answer(&mut out, &cseq, "", "")?,
        }
    }
}

fn answer(out: &mut TcpStream, cseq: &str, headers: &str, body: &str) -> std::io::Result<()> {
    write!(out, "RTSP/1.0 200 OK\r\nCSeq: {cseq}\r\n{headers}Content-Length: {}\r\n\r\n{body}", body.len())
}

/// Writes `chunk(i)` for i = 0, 1, ... until the client goes or the server stops.
fn flood(out: &mut TcpStream, stop: &AtomicBool, chunk: impl Fn(u32) -> Vec<u8>) -> std::io::Result<()> {
    out.set_write_timeout(Some(Duration::from_secs(30)))?;
    for i in 0.. {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        out.write_all(&chunk(i))?;
    }
    Ok(())
}

/// 32 interleaved RTP packets, each an FU-A fragment of one IDR slice that never ends.
fn endless_fragments(i: u32) -> Vec<u8> {
    let mut out = Vec::with_capacity(32 * 1420);
    for k in 0..32u32 {
        let seq = (i.wrapping_mul(32).wrapping_add(k) & 0xffff) as u16;
        let first = i == 0 && k == 0;
        let mut rtp = vec![0x80, 96];
        rtp.extend_from_slice(&seq.to_be_bytes());
        rtp.extend_from_slice(&90_000u32.to_be_bytes()); // one timestamp for all
        rtp.extend_from_slice(&0x4711_4711u32.to_be_bytes());
        rtp.push(0x7c); // FU indicator: NRI 3, type 28 (FU-A)
        rtp.push(if first { 0x85 } else { 0x05 }); // start bit on the first; IDR
        rtp.extend(std::iter::repeat_n(0x5a, 1400));
        out.push(b'$');
        out.push(0);
        out.extend_from_slice(&(rtp.len() as u16).to_be_bytes());
        out.extend_from_slice(&rtp);
    }
    out
}

fn sdp(lie: Lie) -> String {
    let (width, height) = match lie {
        Lie::Picture { width, height } => (width, height),
        _ => (640, 480),
    };
    let b64 = |b: &[u8]| base64(b);
    format!(
        "v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=hostile\r\nt=0 0\r\na=tool:hostile\r\nm=video 0 RTP/AVP 96\r\n\
         a=rtpmap:96 H264/90000\r\n\
         a=fmtp:96 packetization-mode=1;profile-level-id=42001f;sprop-parameter-sets={},{}\r\n\
         a=control:track1\r\n",
        b64(&sps(width, height)),
        b64(&pps())
    )
}

/// Writes H.264 bit fields: fixed-width values and exp-Golomb codes.
#[derive(Default)]
struct Bits {
    bytes: Vec<u8>,
    used: u32,
}

impl Bits {
    fn bit(&mut self, b: bool) {
        if self.used.is_multiple_of(8) {
            self.bytes.push(0);
        }
        if b {
            *self.bytes.last_mut().expect("pushed above") |= 0x80 >> (self.used % 8);
        }
        self.used += 1;
    }

    fn u(&mut self, n: u32, v: u32) {
        for i in (0..n).rev() {
            self.bit(v >> i & 1 == 1);
        }
    }

    fn ue(&mut self, v: u32) {
        let v = u64::from(v) + 1;
        let len = 64 - v.leading_zeros();
        self.u(len - 1, 0);
        for i in (0..len).rev() {
            self.bit(v >> i & 1 == 1);
        }
    }

    /// rbsp_trailing_bits, then emulation prevention: the NAL unit's payload.
    fn finish(mut self, header: u8) -> Vec<u8> {
        self.bit(true);
        while !self.used.is_multiple_of(8) {
            self.bit(false);
        }
        let mut out = vec![header];
        let mut zeros = 0;
        for b in self.bytes {
            if zeros >= 2 && b <= 3 {
                out.push(3);
                zeros = 0;
            }
            zeros = if b == 0 { zeros + 1 } else { 0 };
            out.push(b);
        }
        out
    }
}

/// A Baseline SPS for `width` x `height` (multiples of 2), cropped from whole macroblocks.
fn sps(width: u32, height: u32) -> Vec<u8> {
    let (mbs_w, mbs_h) = (width.div_ceil(16), height.div_ceil(16));
    let mut b = Bits::default();
    b.u(8, 66); // profile_idc: Baseline
    b.u(8, 0); // constraint flags
    b.u(8, 31); // level_idc
    b.ue(0); // seq_parameter_set_id
    b.ue(0); // log2_max_frame_num_minus4
    b.ue(2); // pic_order_cnt_type
    b.ue(1); // max_num_ref_frames
    b.bit(false); // gaps_in_frame_num_value_allowed_flag
    b.ue(mbs_w - 1);
    b.ue(mbs_h - 1);
    b.bit(true); // frame_mbs_only_flag
    b.bit(true); // direct_8x8_inference_flag
    let (crop_r, crop_b) = ((mbs_w * 16 - width) / 2, (mbs_h * 16 - height) / 2);
    b.bit(crop_r + crop_b > 0);
    if crop_r + crop_b > 0 {
        for v in [0, crop_r, 0, crop_b] {
            b.ue(v);
        }
    }
    b.bit(false); // vui_parameters_present_flag
    b.finish(0x67)
}

fn pps() -> Vec<u8> {
    let mut b = Bits::default();
    b.ue(0); // pic_parameter_set_id
    b.ue(0); // seq_parameter_set_id
    b.bit(false); // entropy_coding_mode_flag
    b.bit(false); // bottom_field_pic_order_in_frame_present_flag
    b.ue(0); // num_slice_groups_minus1
    b.ue(0); // num_ref_idx_l0_default_active_minus1
    b.ue(0); // num_ref_idx_l1_default_active_minus1
    b.bit(false); // weighted_pred_flag
    b.u(2, 0); // weighted_bipred_idc
    b.ue(0); // pic_init_qp_minus26 (se(0) codes like ue(0))
    b.ue(0); // pic_init_qs_minus26
    b.ue(0); // chroma_qp_index_offset
    b.bit(true); // deblocking_filter_control_present_flag
    b.bit(false); // constrained_intra_pred_flag
    b.bit(false); // redundant_pic_cnt_present_flag
    b.finish(0x68)
}

fn base64(data: &[u8]) -> String {
    const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ABC[(n >> (18 - 6 * i) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_and_exp_golomb_are_right() {
        assert_eq!(base64(b"Man"), "TWFu");
        assert_eq!(base64(b"Ma"), "TWE=");
        assert_eq!(base64(b"M"), "TQ==");
        let mut b = Bits::default();
        b.ue(0); // 1
        b.ue(1); // 010
        b.ue(4); // 00101
        assert_eq!(b.finish(0), [0, 0b1010_0010, 0b1100_0000]);
    }
}
