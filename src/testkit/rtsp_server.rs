//! A small RTSP server that plays Annex-B H.264/H.265 files in a loop on 127.0.0.1, to
//! stand in for a camera in tests and for technicians (`gridwatch serve`).
//!
//! It promises camera-like behaviour: every client joins one running stream (shared
//! media), RTP timestamps advance in real time at the clip's frame rate, optional basic
//! auth answers 401 without credentials, and `stop()`/drop really closes the listening
//! socket and every client connection, so a test can restart a server on the same port.
//! It does not promise performance or robustness against hostile clients.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::thread::JoinHandle;

use anyhow::{Context as _, anyhow, bail};
use gstreamer as gst;
use gstreamer::glib;
use gstreamer::prelude::*;
use gstreamer_rtsp_server as rtsp;
use gstreamer_rtsp_server::prelude::*;

use crate::device::ingest::Codec;

/// Frame rate announced for a file whose SPS carries no timing of its own (the SPS's
/// timing wins when present). The vendored clips are 10 fps.
const FALLBACK_FRAMERATE: i32 = 10;

/// A running server; serving stops when it is dropped.
pub struct RtspServer {
    port: u16,
    main_loop: glib::MainLoop,
    thread: Option<JoinHandle<()>>,
    faults: Arc<Faults>,
}

/// What a test can make the camera do wrong.
#[derive(Default)]
struct Faults {
    frozen: AtomicBool,
    /// RTP timestamps leap 2 s forward every 3 s of video.
    jumps: AtomicBool,
    /// Every this many RTP packets one is never sent (0: none).
    drop_every: AtomicU32,
}

struct Mount {
    path: String,
    file: PathBuf,
    codec: Codec,
}

impl RtspServer {
    /// Serves each `(mount path, file)` pair, e.g. `("/cam1", "clip.h264")`, on
    /// 127.0.0.1:`port`; port 0 picks a free port (see [`RtspServer::port`]).
    pub fn start(port: u16, mounts: &[(&str, &Path)]) -> anyhow::Result<RtspServer> {
        Self::launch(port, mounts, None)
    }

    /// Like [`RtspServer::start`], but every request needs HTTP basic auth with
    /// `user`/`pass`; anything else gets 401 Unauthorized.
    pub fn start_with_auth(port: u16, mounts: &[(&str, &Path)], user: &str, pass: &str) -> anyhow::Result<RtspServer> {
        Self::launch(port, mounts, Some((user.to_owned(), pass.to_owned())))
    }

    /// The port the server listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `rtsp://127.0.0.1:PORT/path` for a mount path such as `/cam1`.
    pub fn url(&self, path: &str) -> String {
        format!("rtsp://127.0.0.1:{}/{}", self.port, path.trim_start_matches('/'))
    }

    /// Fault hook: while frozen, connections stay open but no video is sent, like a
    /// camera whose encoder hung. Lets tests exercise stall detection.
    pub fn set_frozen(&self, frozen: bool) {
        self.faults.frozen.store(frozen, Ordering::Relaxed);
    }

    /// Fault hook: a camera whose clock misbehaves, as many do: while on, the RTP
    /// timestamps it sends leap 2 s forward every 3 s of video (the video itself keeps
    /// its pace).
    pub fn set_timestamp_jumps(&self, on: bool) {
        self.faults.jumps.store(on, Ordering::Relaxed);
    }

    /// Fault hook: a lossy network: every `n`th RTP packet is never sent (0: none).
    pub fn set_packet_loss(&self, n: u32) {
        self.faults.drop_every.store(n, Ordering::Relaxed);
    }

    /// Stops serving: closes the listening socket and all client connections.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        if let Some(thread) = self.thread.take() {
            // Quit from inside the loop: a quit() that came before run() would be lost.
            let main_loop = self.main_loop.clone();
            self.main_loop.context().invoke(move || main_loop.quit());
            if thread.join().is_err() {
                tracing::error!(port = self.port, "RTSP server thread panicked");
            }
        }
    }

    fn launch(port: u16, mounts: &[(&str, &Path)], auth: Option<(String, String)>) -> anyhow::Result<RtspServer> {
        gst::init().context("initialising GStreamer")?;
        let mounts = mounts.iter().map(|(path, file)| Mount::new(path, file)).collect::<anyhow::Result<Vec<_>>>()?;
        let faults = Arc::new(Faults::default());
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let thread_faults = faults.clone();
        let thread = std::thread::Builder::new()
            .name("rtsp-server".into())
            .spawn(move || serve(port, &mounts, auth, thread_faults, &ready_tx))
            .context("spawning the RTSP server thread")?;
        match ready_rx.recv() {
            Ok(Ok((port, main_loop))) => Ok(RtspServer { port, main_loop, thread: Some(thread), faults }),
            Ok(Err(e)) => {
                let _ = thread.join();
                Err(e)
            }
            Err(_) => {
                let _ = thread.join();
                bail!("the RTSP server thread ended before it started serving")
            }
        }
    }
}

impl Drop for RtspServer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

impl Mount {
    fn new(path: &str, file: &Path) -> anyhow::Result<Mount> {
        if !path.starts_with('/') || path.len() < 2 {
            bail!("mount path {path:?} must start with '/' and name something, e.g. \"/cam1\"");
        }
        let codec = match file.extension().and_then(|e| e.to_str()) {
            Some("h264" | "264") => Codec::H264,
            Some("h265" | "265" | "hevc") => Codec::H265,
            _ => bail!("{}: unknown video format; expected an Annex-B file named *.h264 or *.h265", file.display()),
        };
        std::fs::File::open(file).with_context(|| format!("opening {}", file.display()))?;
        Ok(Mount { path: path.to_owned(), file: file.to_owned(), codec })
    }

    fn factory(&self, faults: Arc<Faults>) -> anyhow::Result<rtsp::RTSPMediaFactory> {
        let codec = self.codec.as_str();
        let location =
            self.file.to_str().ok_or_else(|| anyhow!("{}: path is not valid UTF-8", self.file.display()))?.to_owned();
        let factory = rtsp::RTSPMediaFactory::new();
        // The location is set as a property below, not in the launch line, so that no
        // file name needs escaping.
        factory.set_launch(&format!(
            "( multifilesrc name=src loop=true \
               caps=video/x-{codec},stream-format=byte-stream,framerate={FALLBACK_FRAMERATE}/1 \
             ! {codec}parse name=parse ! rtp{codec}pay name=pay0 pt=96 config-interval=-1 )"
        ));
        factory.set_shared(true);
        factory.connect_media_configure(move |_, media| {
            let Some(bin) = media.element().downcast_ref::<gst::Bin>().cloned() else {
                return;
            };
            if let Some(src) = bin.by_name("src") {
                src.set_property("location", &location);
            }
            if let Some(pad) = bin.by_name("pay0").and_then(|p| p.static_pad("src")) {
                mangle_rtp(&pad, faults.clone());
            }
            let Some(pad) = bin.by_name("parse").and_then(|p| p.static_pad("src")) else {
                return;
            };
            let faults = faults.clone();
            pad.add_probe(gst::PadProbeType::BUFFER, move |_, info| {
                if faults.frozen.load(Ordering::Relaxed) {
                    return gst::PadProbeReturn::Drop;
                }
                // On a bare byte-stream the parser sets only DTS; without PTS every RTP
                // packet would carry the same timestamp. PTS = DTS holds: no B-frames.
                if let Some(buffer) = info.buffer_mut() {
                    let buffer = buffer.make_mut();
                    if buffer.pts().is_none() {
                        buffer.set_pts(buffer.dts());
                    }
                }
                gst::PadProbeReturn::Ok
            });
        });
        Ok(factory)
    }
}

/// Applies the network and clock faults to the RTP packets the payloader sends.
fn mangle_rtp(pad: &gst::Pad, faults: Arc<Faults>) {
    let sent = AtomicU64::new(0);
    pad.add_probe(gst::PadProbeType::BUFFER | gst::PadProbeType::BUFFER_LIST, move |_, info| {
        let keep = |buffer: &mut gst::BufferRef| {
            let n = faults.drop_every.load(Ordering::Relaxed);
            if n > 0 && sent.fetch_add(1, Ordering::Relaxed) % u64::from(n) == u64::from(n) - 1 {
                return false;
            }
            if faults.jumps.load(Ordering::Relaxed) {
                // 90 kHz: 2 s more for every 3 s of video so far.
                let leap = buffer.pts().map_or(0, |t| t.seconds() / 3 * 2 * 90_000) as u32;
                if let Ok(mut map) = buffer.map_writable()
                    && map.len() >= 8
                {
                    let ts = u32::from_be_bytes([map[4], map[5], map[6], map[7]]).wrapping_add(leap);
                    map[4..8].copy_from_slice(&ts.to_be_bytes());
                }
            }
            true
        };
        if let Some(gst::PadProbeData::Buffer(b)) = &mut info.data
            && !keep(b.make_mut())
        {
            return gst::PadProbeReturn::Drop;
        }
        if let Some(gst::PadProbeData::BufferList(list)) = &mut info.data {
            let mut kept = gst::BufferList::new();
            for b in list.iter() {
                let mut b = b.copy();
                if keep(b.make_mut()) {
                    kept.get_mut().expect("a new list is writable").add(b);
                }
            }
            *list = kept;
        }
        gst::PadProbeReturn::Ok
    });
}

type Ready = anyhow::Result<(u16, glib::MainLoop)>;

/// The server thread: builds the server on its own GLib main context, reports the bound
/// port (or the error) through `ready`, runs until the main loop quits, then tears down.
fn serve(
    port: u16,
    mounts: &[Mount],
    auth: Option<(String, String)>,
    faults: Arc<Faults>,
    ready: &std::sync::mpsc::Sender<Ready>,
) {
    let ctx = glib::MainContext::new();
    let result = ctx.with_thread_default(|| {
        let (server, source) = match build(&ctx, port, mounts, auth, faults) {
            Ok(built) => built,
            Err(e) => {
                let _ = ready.send(Err(e));
                return;
            }
        };
        let main_loop = glib::MainLoop::new(Some(&ctx), false);
        // `bound_port` reports the real port when `port` was 0: no race with other
        // processes, unlike probing a free port first and binding it later.
        let bound = u16::try_from(server.bound_port()).unwrap_or(port);
        if ready.send(Ok((bound, main_loop.clone()))).is_err() {
            return;
        }
        main_loop.run();

        // Close the listening socket, end the sessions (which stops the shared media's
        // pipeline), then close the connections. Closing connections first leaves
        // sessions writing to closed sockets, and GLib complains.
        if let Some(source) = ctx.find_source_by_id(&source) {
            source.destroy();
        }
        if let Some(pool) = server.session_pool() {
            pool.filter(Some(&mut |_, _| rtsp::RTSPFilterResult::Remove));
        }
        server.client_filter(Some(&mut |_, _| rtsp::RTSPFilterResult::Remove));
        // Let the closing finish; bounded in case something stays ready for ever.
        for _ in 0..1000 {
            if !ctx.iteration(false) {
                break;
            }
        }
    });
    if let Err(e) = result {
        let _ = ready.send(Err(anyhow!("acquiring the RTSP server's main context: {e}")));
    }
}

fn build(
    ctx: &glib::MainContext,
    port: u16,
    mounts: &[Mount],
    auth: Option<(String, String)>,
    faults: Arc<Faults>,
) -> anyhow::Result<(rtsp::RTSPServer, glib::SourceId)> {
    let server = rtsp::RTSPServer::new();
    server.set_address("127.0.0.1");
    server.set_service(&port.to_string());
    let mount_points = server.mount_points().ok_or_else(|| anyhow!("the RTSP server has no mount points"))?;
    let user_role = auth.as_ref().map(|(user, pass)| {
        let auth = rtsp::RTSPAuth::new();
        let token = rtsp::RTSPToken::builder().field(rtsp::RTSP_TOKEN_MEDIA_FACTORY_ROLE, "user").build();
        auth.add_basic(rtsp::RTSPAuth::make_basic(user, pass).as_str(), &token);
        server.set_auth(Some(&auth));
        gst::Structure::builder("user")
            .field(rtsp::RTSP_PERM_MEDIA_FACTORY_ACCESS, true)
            .field(rtsp::RTSP_PERM_MEDIA_FACTORY_CONSTRUCT, true)
            .build()
    });
    for mount in mounts {
        let factory = mount.factory(faults.clone())?;
        if let Some(role) = &user_role {
            factory.add_role_from_structure(role);
        }
        mount_points.add_factory(&mount.path, factory);
    }
    // Binds the listening socket.
    let source = server
        .attach(Some(ctx))
        .with_context(|| format!("cannot listen on 127.0.0.1:{port}; is another program using that port?"))?;
    Ok((server, source))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::TcpStream;
    use std::time::Duration;

    fn clip() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/video/vtest.h264")
    }

    /// Sends one RTSP request on a fresh connection and returns the status line.
    fn status_line(port: u16, request: &str) -> std::io::Result<String> {
        let mut conn = TcpStream::connect(("127.0.0.1", port))?;
        conn.set_read_timeout(Some(Duration::from_secs(5)))?;
        conn.write_all(request.as_bytes())?;
        let mut buf = [0u8; 512];
        let n = conn.read(&mut buf)?;
        let text = String::from_utf8_lossy(&buf[..n]);
        Ok(text.lines().next().unwrap_or_default().to_owned())
    }

    fn describe(port: u16, path: &str, auth: Option<&str>) -> std::io::Result<String> {
        let auth = auth.map(|a| format!("Authorization: Basic {a}\r\n")).unwrap_or_default();
        status_line(port, &format!("DESCRIBE rtsp://127.0.0.1:{port}{path} RTSP/1.0\r\nCSeq: 1\r\n{auth}\r\n"))
    }

    #[test]
    fn serves_describe_auth_and_stops_listening() {
        let file = clip();
        let server = RtspServer::start_with_auth(0, &[("/cam", &file)], "tech", "s3cret").unwrap();
        let port = server.port();
        assert_ne!(port, 0);
        assert_eq!(server.url("/cam"), format!("rtsp://127.0.0.1:{port}/cam"));
        assert!(describe(port, "/cam", None).unwrap().contains("401"));
        // base64("tech:s3cret")
        let ok = describe(port, "/cam", Some("dGVjaDpzM2NyZXQ=")).unwrap();
        assert!(ok.contains("200"), "{ok}");
        server.stop();
        assert!(TcpStream::connect(("127.0.0.1", port)).is_err());

        // The same port can be served again right away.
        let again = RtspServer::start(port, &[("/cam", &file)]).unwrap();
        assert!(describe(port, "/cam", None).unwrap().contains("200"));
        assert!(describe(port, "/nope", None).unwrap().contains("404"));
        drop(again);
        // Stopping right after starting must not hang.
        RtspServer::start(port, &[("/cam", &file)]).unwrap().stop();
    }

    #[test]
    fn rejects_bad_mounts() {
        let file = clip();
        assert!(RtspServer::start(0, &[("cam", &file)]).is_err());
        assert!(RtspServer::start(0, &[("/cam", Path::new("/nonexistent.h264"))]).is_err());
        assert!(RtspServer::start(0, &[("/cam", Path::new("Cargo.toml"))]).is_err());
    }
}
