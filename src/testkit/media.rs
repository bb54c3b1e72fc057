//! What FFmpeg's own tools make of a clip (Debian package `ffmpeg`, installed by
//! scripts/setup.sh): an independent reader of what gridwatch muxed.

use std::io::Write;
use std::process::{Command, Stdio};

use anyhow::{Context as _, bail};

/// What ffprobe reads of a file's first video stream.
#[derive(Debug, Clone)]
pub struct Probe {
    pub codec: String,
    /// Frames decoded (ffprobe -count_frames).
    pub frames: usize,
    pub duration_s: f64,
    pub width: u32,
    pub height: u32,
    /// Picture type of the first frame ("I" for a keyframe).
    pub first_picture: String,
}

/// Probes `mp4` with ffprobe (from its standard input: the index must come first, as
/// in a file a browser can play while it loads).
pub fn probe(mp4: &[u8]) -> anyhow::Result<Probe> {
    let mut cmd = Command::new("ffprobe");
    cmd.args(["-v", "error", "-count_frames", "-select_streams", "v:0", "-show_entries"]).args([
        "stream=codec_name,nb_read_frames,duration,width,height:frame=pict_type",
        "-of",
        "json",
        "pipe:0",
    ]);
    let out = run(cmd, mp4).context("running ffprobe (Debian package ffmpeg; scripts/setup.sh installs it)")?;
    if !out.status.success() {
        bail!("ffprobe: {}", String::from_utf8_lossy(&out.stderr));
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let s = &v["streams"][0];
    let num = |x: &serde_json::Value| x.as_str().and_then(|t| t.parse::<f64>().ok()).unwrap_or(0.0);
    Ok(Probe {
        codec: s["codec_name"].as_str().unwrap_or_default().to_owned(),
        frames: num(&s["nb_read_frames"]) as usize,
        duration_s: num(&s["duration"]),
        width: s["width"].as_u64().unwrap_or(0) as u32,
        height: s["height"].as_u64().unwrap_or(0) as u32,
        first_picture: v["frames"][0]["pict_type"].as_str().unwrap_or_default().to_owned(),
    })
}

/// Every frame of `mp4` decoded to 8-bit grey by ffmpeg (errors on any damaged frame).
pub fn grey_frames(mp4: &[u8], width: u32, height: u32) -> anyhow::Result<Vec<Vec<u8>>> {
    let mut cmd = Command::new("ffmpeg");
    cmd.args(["-v", "error", "-xerror", "-i", "pipe:0", "-f", "rawvideo", "-pix_fmt", "gray", "pipe:1"]);
    let out = run(cmd, mp4).context("running ffmpeg (Debian package ffmpeg)")?;
    if !out.status.success() || !out.stderr.is_empty() {
        bail!("ffmpeg: {}", String::from_utf8_lossy(&out.stderr));
    }
    let size = (width * height) as usize;
    Ok(out.stdout.chunks_exact(size).map(<[u8]>::to_vec).collect())
}

/// Runs `cmd` with `input` on its standard input; its output.
fn run(mut cmd: Command, input: &[u8]) -> std::io::Result<std::process::Output> {
    let mut child = cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn()?;
    let mut stdin = child.stdin.take().expect("stdin was piped");
    let bytes = input.to_vec();
    // Written from a thread: the tool may fill its output pipe before it reads all input.
    let writer = std::thread::spawn(move || stdin.write_all(&bytes));
    let out = child.wait_with_output()?;
    let _ = writer.join();
    Ok(out)
}
