//! The local control socket: `gridwatch status`, `snapshot`, `pause`, `resume` and
//! `rule` ask the running daemon through it.
//!
//! Protocol: the client sends one JSON request on one line (`{"request":"status"}`,
//! `{"request":"snapshot","camera":"east-gate"}`); the daemon answers with one JSON
//! line, `{"ok":true,...}` or `{"ok":false,"error":"..."}`, and for a snapshot the
//! answer's `bytes` JPEG bytes follow that line. One request per connection.
//!
//! Promises: the socket is created with the configured mode (never world-accessible)
//! before anything can connect, without touching the process umask (other threads
//! create files meanwhile); a stale socket file from a crash is replaced, but a socket
//! another running daemon answers on is not, and anything else at the path (a file, a
//! folder, a link) is left as it is and refused; a slow or broken client cannot hold
//! up the daemon (every exchange has a time limit, at most [`MAX_CLIENTS`] are served
//! at once, and accept errors back off instead of spinning). The client side
//! ([`request`]) reads at most [`MAX_ANSWER_LINE`] and [`MAX_BODY`] bytes, and cleans
//! the strings of the answer of terminal control codes.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::FileTypeExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::contract::timestamp;
use crate::device::command::{RuleRef, Switch};
use crate::device::ops::live::Live;

/// How long one exchange may take, either side.
const EXCHANGE_LIMIT: Duration = Duration::from_secs(10);
/// Longest request line accepted.
const MAX_REQUEST: usize = 4096;
/// How long a client may take to send its request: a held, idle connection costs a
/// client slot only this long.
const REQUEST_LIMIT: Duration = Duration::from_secs(2);
/// Clients served at once; more wait in the kernel's listen backlog, costing the
/// daemon no file descriptor.
pub const MAX_CLIENTS: usize = 8;
/// Longest answer line a client reads (a status of many cameras is a few KB).
pub const MAX_ANSWER_LINE: usize = 1 << 20;
/// Largest body a client accepts after the answer line (a snapshot's JPEG).
pub const MAX_BODY: u64 = 64 << 20;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "request", rename_all = "lowercase")]
pub enum Request {
    Status,
    Snapshot {
        camera: String,
    },
    /// Detection off (`pause`) or on (`resume`) for one camera, as the desk's `detect/set`.
    Pause {
        camera: String,
    },
    Resume {
        camera: String,
    },
    /// One zone rule armed (`on`) or disarmed, as the desk's `rules/.../set`.
    Rule {
        camera: String,
        zone: String,
        rule: String,
        on: bool,
    },
}

/// The header line of a snapshot answer; the JPEG follows.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SnapshotHeader {
    pub camera: String,
    pub captured_at: String,
    pub width: u32,
    pub height: u32,
    pub bytes: usize,
}

/// Binds the socket at `path` with `mode`, and serves requests until `shutdown`; the
/// socket file is removed at the end.
pub async fn serve_at(path: &Path, mode: u32, live: Arc<Live>, shutdown: CancellationToken) -> anyhow::Result<Server> {
    let listener = bind(path, mode)?;
    info!(socket = %path.display(), mode = %format!("{mode:04o}"), "control socket ready");
    let path = path.to_owned();
    let task = tokio::spawn(async move {
        let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CLIENTS));
        let mut backoff = AcceptBackoff::default();
        loop {
            let (slot, stream) = tokio::select! {
                r = accept_within(&listener, &slots) => match r {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        backoff.failed("control socket", &e).await;
                        continue;
                    }
                },
                _ = shutdown.cancelled() => break,
            };
            backoff.succeeded();
            let live = live.clone();
            tokio::spawn(async move {
                if let Err(e) = tokio::time::timeout(EXCHANGE_LIMIT, answer(stream, &live))
                    .await
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("timed out")))
                {
                    debug!("control client: {e:#}");
                }
                drop(slot);
            });
        }
    });
    Ok(Server { path, task })
}

/// Waits for a free client slot, then accepts.
async fn accept_within(
    listener: &UnixListener,
    slots: &Arc<tokio::sync::Semaphore>,
) -> std::io::Result<(tokio::sync::OwnedSemaphorePermit, UnixStream)> {
    let slot = slots.clone().acquire_owned().await.map_err(std::io::Error::other)?;
    let (stream, _) = listener.accept().await?;
    Ok((slot, stream))
}

/// Waits after a failed accept, longer each time in a row (50 ms to 2 s): out of file
/// descriptors, accept fails at once, and retrying at once would spin a core. Logs the
/// first failure of a row and when it clears.
#[derive(Default)]
pub struct AcceptBackoff {
    failures: u32,
}

impl AcceptBackoff {
    pub async fn failed(&mut self, what: &str, e: &std::io::Error) {
        if self.failures == 0 {
            warn!("{what}: cannot accept a connection: {e}; backing off");
        }
        self.failures = self.failures.saturating_add(1);
        tokio::time::sleep(self.delay()).await;
    }

    pub fn succeeded(&mut self) {
        if self.failures > 0 {
            info!(failures = self.failures, "accepting connections again");
        }
        self.failures = 0;
    }

    fn delay(&self) -> Duration {
        Duration::from_millis(50).saturating_mul(1 << self.failures.min(6)).min(Duration::from_secs(2))
    }
}

/// The running control server; `finish` waits for it and removes the socket file.
pub struct Server {
    path: PathBuf,
    task: tokio::task::JoinHandle<()>,
}

impl Server {
    pub async fn finish(self) {
        let _ = self.task.await;
        let _ = std::fs::remove_file(&self.path);
    }
}

fn bind(path: &Path, mode: u32) -> anyhow::Result<UnixListener> {
    use anyhow::Context;
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).with_context(|| format!("control socket: cannot create {}", dir.display()))?;
    remove_stale(path)?;
    // Bound in a private folder (mode 0700: nobody else can reach it), given its mode,
    // then linked into place: nobody can connect before the mode is set, and the
    // process umask, shared with every thread, is never touched.
    let private = PrivateDir::create(dir)?;
    let staged = private.0.join("control.sock");
    let listener =
        UnixListener::bind(&staged).with_context(|| format!("control socket: cannot bind {}", path.display()))?;
    std::fs::set_permissions(&staged, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("control socket: cannot set the mode of {}", path.display()))?;
    // A hard link never replaces what may have appeared at `path` meanwhile.
    std::fs::hard_link(&staged, path).with_context(|| format!("control socket: cannot create {}", path.display()))?;
    Ok(listener)
}

/// Removes a socket at `path` that nobody answers on (left by a crash); refuses a
/// socket that answers and anything that is not a socket, leaving it as it is.
pub fn remove_stale(path: &Path) -> anyhow::Result<()> {
    let shown = path.display();
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => anyhow::bail!("control socket {shown}: cannot look at it: {e}"),
    };
    let kind = meta.file_type();
    if !kind.is_socket() {
        let what = if kind.is_dir() {
            "a folder"
        } else if kind.is_symlink() {
            "a symbolic link"
        } else if kind.is_file() {
            "a regular file"
        } else {
            "something other than a socket"
        };
        anyhow::bail!(
            "control socket {shown}: {what} is there, not a socket; it is left as it is: set control.socket to another path"
        );
    }
    if std::os::unix::net::UnixStream::connect(path).is_ok() {
        anyhow::bail!(
            "control socket {shown}: another gridwatch answers there; stop it, or set control.socket to another path"
        );
    }
    std::fs::remove_file(path).map_err(|e| anyhow::anyhow!("control socket: cannot remove the stale {shown}: {e}"))
}

/// A folder only the owner can enter, removed with what is in it when dropped.
struct PrivateDir(PathBuf);

impl PrivateDir {
    fn create(beside: &Path) -> anyhow::Result<PrivateDir> {
        use std::os::unix::fs::DirBuilderExt;
        for attempt in 0..100u32 {
            let dir = beside.join(format!(".gridwatch-control-{}-{attempt}", std::process::id()));
            match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
                Ok(()) => return Ok(PrivateDir(dir)),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => anyhow::bail!("control socket: cannot create a folder in {}: {e}", beside.display()),
            }
        }
        anyhow::bail!("control socket: cannot create a private folder in {}", beside.display())
    }
}

impl Drop for PrivateDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

async fn answer(stream: UnixStream, live: &Live) -> anyhow::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    let mut read_request = tokio::io::AsyncReadExt::take(tokio::io::BufReader::new(read), MAX_REQUEST as u64);
    tokio::time::timeout(REQUEST_LIMIT, read_request.read_line(&mut line))
        .await
        .map_err(|_| anyhow::anyhow!("no request within {REQUEST_LIMIT:?}"))??;
    let request: Request = match serde_json::from_str(line.trim()) {
        Ok(r) => r,
        Err(e) => return reply_error(&mut write, &format!("bad request: {e}")).await,
    };
    match request {
        Request::Status => match live.status().await {
            Ok(status) => {
                let mut v = serde_json::to_value(status)?;
                v["ok"] = true.into();
                write_line(&mut write, &v).await
            }
            Err(e) => reply_error(&mut write, &format!("{e:#}")).await,
        },
        Request::Pause { camera } => switch(&mut write, live, Switch::Detect { camera, on: false }).await,
        Request::Resume { camera } => switch(&mut write, live, Switch::Detect { camera, on: true }).await,
        Request::Rule { camera, zone, rule, on } => {
            switch(&mut write, live, Switch::Rule(RuleRef { camera, zone, rule }, on)).await
        }
        Request::Snapshot { camera } => {
            let Some(cam) = live.camera(&camera) else {
                let known: Vec<&str> = live.cameras.iter().map(|c| c.id.as_str()).collect();
                return reply_error(&mut write, &format!("no camera \"{camera}\" (configured: {})", known.join(", ")))
                    .await;
            };
            let Some(frame) = cam.frames.latest() else {
                let state = serde_json::to_value(cam.health.counters().state)?;
                return reply_error(
                    &mut write,
                    &format!("camera {camera} has decoded no picture yet (state: {})", state.as_str().unwrap_or("?")),
                )
                .await;
            };
            // Privacy masks apply here as on event snapshots: no masked pixel leaves.
            let picture = {
                let (frame, renderer) = (frame.clone(), cam.renderer.clone());
                tokio::task::spawn_blocking(move || renderer.render(frame.picture.to_rgb(), &[], &[])).await?
            };
            let header = SnapshotHeader {
                camera,
                captured_at: timestamp(frame.captured_at),
                width: picture.width,
                height: picture.height,
                bytes: picture.jpeg.len(),
            };
            let mut v = serde_json::to_value(header)?;
            v["ok"] = true.into();
            write_line(&mut write, &v).await?;
            write.write_all(&picture.jpeg).await?;
            write.flush().await?;
            Ok(())
        }
    }
}

/// Applies a switch as the technician asked, and answers with what holds now.
async fn switch(w: &mut tokio::net::unix::OwnedWriteHalf, live: &Live, s: Switch) -> anyhow::Result<()> {
    match live.switchboard.apply(&s, "the technician") {
        Ok(changed) => {
            let (camera, what, on) = match &s {
                Switch::Detect { camera, on } => (camera.clone(), "detect".to_owned(), *on),
                Switch::Rule(r, on) => (r.camera.clone(), format!("{}/{}", r.zone, r.rule), *on),
            };
            let state = if on { "ON" } else { "OFF" };
            write_line(
                w,
                &serde_json::json!({"ok": true, "camera": camera, "switch": what, "state": state, "changed": changed}),
            )
            .await
        }
        Err(why) => reply_error(w, &why.0).await,
    }
}

async fn write_line(w: &mut tokio::net::unix::OwnedWriteHalf, v: &serde_json::Value) -> anyhow::Result<()> {
    let mut text = serde_json::to_string(v)?;
    text.push('\n');
    w.write_all(text.as_bytes()).await?;
    w.flush().await?;
    Ok(())
}

async fn reply_error(w: &mut tokio::net::unix::OwnedWriteHalf, error: &str) -> anyhow::Result<()> {
    write_line(w, &serde_json::json!({"ok": false, "error": error})).await
}

/// Why the client got no answer.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(
        "{path}: no control socket there; is gridwatch running? (systemctl status gridwatch; or give --socket / --config)"
    )]
    NotRunning { path: PathBuf },
    #[error("{path}: permission denied; run as the gridwatch user, as a member of its group, or with sudo")]
    PermissionDenied { path: PathBuf },
    #[error("the daemon says: {0}")]
    Refused(String),
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("the daemon's answer makes no sense: {0}")]
    Protocol(String),
    #[error("{path}: the daemon did not answer within {after:?}; is it stuck? (systemctl status gridwatch)")]
    NoAnswer { path: PathBuf, after: Duration },
}

/// One exchange with the daemon at `path`: the answer's JSON, and the bytes that
/// follow it (a snapshot's JPEG; empty otherwise).
pub fn request(path: &Path, req: &Request) -> Result<(serde_json::Value, Vec<u8>), ClientError> {
    request_within(path, req, EXCHANGE_LIMIT + Duration::from_secs(2))
}

/// [`request`], waiting at most `wait` for each read and write.
fn request_within(path: &Path, req: &Request, wait: Duration) -> Result<(serde_json::Value, Vec<u8>), ClientError> {
    let io = |source: std::io::Error| match source.kind() {
        std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused => {
            ClientError::NotRunning { path: path.to_owned() }
        }
        std::io::ErrorKind::PermissionDenied => ClientError::PermissionDenied { path: path.to_owned() },
        _ => ClientError::Io { path: path.to_owned(), source },
    };
    let silent = |e: std::io::Error| match e.kind() {
        // The read timeout: something holds the socket but says nothing.
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => {
            ClientError::NoAnswer { path: path.to_owned(), after: wait }
        }
        _ => io(e),
    };
    let mut stream = std::os::unix::net::UnixStream::connect(path).map_err(io)?;
    stream.set_read_timeout(Some(wait)).map_err(io)?;
    stream.set_write_timeout(Some(wait)).map_err(io)?;
    let mut line = serde_json::to_string(req).map_err(|e| ClientError::Protocol(e.to_string()))?;
    line.push('\n');
    stream.write_all(line.as_bytes()).map_err(silent)?;
    read_answer(BufReader::new(stream)).map_err(|e| match e {
        AnswerError::Io(e) => silent(e),
        AnswerError::Refused(r) => ClientError::Refused(r),
        AnswerError::Protocol(p) => ClientError::Protocol(p),
    })
}

/// What reading an answer can go wrong with, before it is tied to a socket path.
#[derive(Debug)]
pub enum AnswerError {
    Io(std::io::Error),
    Refused(String),
    Protocol(String),
}

/// Reads one answer: its JSON line (at most [`MAX_ANSWER_LINE`] bytes) and the body it
/// announces in `bytes` (at most [`MAX_BODY`]). Strings in the JSON come back without
/// terminal control codes, so that printing them cannot drive the terminal.
pub fn read_answer(mut reader: impl BufRead) -> Result<(serde_json::Value, Vec<u8>), AnswerError> {
    let mut header = Vec::new();
    (&mut reader).take(MAX_ANSWER_LINE as u64 + 1).read_until(b'\n', &mut header).map_err(AnswerError::Io)?;
    if header.last() != Some(&b'\n') {
        return Err(AnswerError::Protocol(if header.len() > MAX_ANSWER_LINE {
            format!("an answer line over {MAX_ANSWER_LINE} bytes")
        } else {
            format!("the answer ended after {} bytes, before its end of line", header.len())
        }));
    }
    let mut v: serde_json::Value =
        serde_json::from_slice(&header).map_err(|e| AnswerError::Protocol(format!("not JSON: {e}")))?;
    clean_strings(&mut v);
    if v["ok"] != true {
        return Err(AnswerError::Refused(v["error"].as_str().unwrap_or("no reason given").to_owned()));
    }
    let Some(bytes) = v.get("bytes") else { return Ok((v, Vec::new())) };
    let n = match bytes.as_u64() {
        Some(n) if n <= MAX_BODY => n,
        _ => return Err(AnswerError::Protocol(format!("\"bytes\": {bytes} is not a size up to {MAX_BODY}"))),
    };
    let mut body = Vec::new();
    reader.take(n).read_to_end(&mut body).map_err(AnswerError::Io)?;
    if body.len() as u64 != n {
        return Err(AnswerError::Protocol(format!("the answer announced {n} bytes but sent {}", body.len())));
    }
    Ok((v, body))
}

/// Replaces terminal control codes (C0, DEL, C1: escape sequences among them) in
/// every string of `v` with U+FFFD.
fn clean_strings(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::String(s) if s.chars().any(char::is_control) => {
            *s = s.chars().map(|c| if c.is_control() { '\u{fffd}' } else { c }).collect();
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(clean_strings),
        serde_json::Value::Object(map) => map.values_mut().for_each(clean_strings),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_one_json_object() {
        assert_eq!(serde_json::to_string(&Request::Status).unwrap(), r#"{"request":"status"}"#);
        let snap = Request::Snapshot { camera: "east-gate".into() };
        let text = serde_json::to_string(&snap).unwrap();
        assert_eq!(text, r#"{"request":"snapshot","camera":"east-gate"}"#);
        assert_eq!(serde_json::from_str::<Request>(&text).unwrap(), snap);
        assert!(serde_json::from_str::<Request>(r#"{"request":"reboot"}"#).is_err());
    }

    #[tokio::test]
    async fn socket_mode_and_stale_files() {
        let dir = std::env::temp_dir().join(format!("gridwatch-control-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = dir.join("control.sock");
        let listener = bind(&path, 0o660).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o660);
        let err = bind(&path, 0o660).unwrap_err().to_string();
        assert!(err.contains("another gridwatch answers there"), "{err}");
        drop(listener); // the file stays behind, as after a crash
        assert!(path.exists());
        let _again = bind(&path, 0o600).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        let _ = std::fs::remove_dir_all(&dir);
    }

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("gridwatch-control-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[tokio::test]
    async fn what_is_not_a_socket_is_left_alone_and_refused() {
        let dir = scratch("not-socket");
        let file = dir.join("outbox.sqlite3");
        std::fs::write(&file, "precious").unwrap();
        let err = bind(&file, 0o660).unwrap_err().to_string();
        assert!(err.contains("a regular file is there") && err.contains("left as it is"), "{err}");
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "precious");

        let folder = dir.join("state");
        std::fs::create_dir(&folder).unwrap();
        std::fs::write(folder.join("seq"), "41").unwrap();
        let err = bind(&folder, 0o660).unwrap_err().to_string();
        assert!(err.contains("a folder is there"), "{err}");
        assert_eq!(std::fs::read_to_string(folder.join("seq")).unwrap(), "41");

        let link = dir.join("link.sock");
        std::os::unix::fs::symlink(&file, &link).unwrap();
        assert!(bind(&link, 0o660).unwrap_err().to_string().contains("a symbolic link is there"));
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "precious");
        // Nothing was left behind in the folder either.
        let mut names: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name()).collect();
        names.sort();
        assert_eq!(names, ["link.sock", "outbox.sqlite3", "state"]);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Files other threads create while the socket is bound get the process umask, as
    /// always: binding must not change it, even for a moment.
    #[tokio::test]
    async fn binding_leaves_the_umask_of_other_threads_alone() {
        let dir = scratch("umask");
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let creator = {
            let (dir, stop) = (dir.join("files"), stop.clone());
            std::fs::create_dir(&dir).unwrap();
            std::thread::spawn(move || {
                let mut modes = Vec::new();
                for i in 0.. {
                    if stop.load(std::sync::atomic::Ordering::Relaxed) {
                        break;
                    }
                    let f = dir.join(format!("{i}"));
                    std::fs::write(&f, "x").unwrap();
                    modes.push(std::fs::metadata(&f).unwrap().permissions().mode() & 0o777);
                    std::fs::remove_file(&f).unwrap();
                }
                modes
            })
        };
        let path = dir.join("control.sock");
        for _ in 0..300 {
            drop(bind(&path, 0o660).unwrap());
            std::fs::remove_file(&path).unwrap();
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let modes = creator.join().unwrap();
        let expected = modes.iter().copied().max().unwrap();
        let odd: Vec<_> = modes.iter().filter(|&&m| m != expected).collect();
        assert!(odd.is_empty(), "{} of {} files got another mode: {odd:?}", odd.len(), modes.len());
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Accept errors in a row (out of file descriptors) wait longer each time, up to
    /// 2 s, instead of retrying at once; a success starts over.
    #[test]
    fn accept_errors_back_off_up_to_two_seconds() {
        let mut b = AcceptBackoff::default();
        let delays: Vec<u128> = (0..9)
            .map(|_| {
                b.failures += 1;
                b.delay().as_millis()
            })
            .collect();
        assert_eq!(delays, [100, 200, 400, 800, 1600, 2000, 2000, 2000, 2000]);
        b.succeeded();
        assert_eq!(b.failures, 0);
    }

    /// A peer that takes the connection and says nothing: the client gives up in time
    /// with `NoAnswer` (exit code 3), not an I/O error.
    #[test]
    fn a_silent_peer_is_no_answer() {
        let dir = scratch("silent");
        let path = dir.join("control.sock");
        let _listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let err = request_within(&path, &Request::Status, Duration::from_millis(300)).unwrap_err();
        assert!(matches!(err, ClientError::NoAnswer { .. }), "{err:?}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    fn answer_of(bytes: &[u8]) -> Result<(serde_json::Value, Vec<u8>), AnswerError> {
        read_answer(std::io::BufReader::new(bytes))
    }

    #[test]
    fn answers_are_read_within_bounds() {
        let (v, body) = answer_of(b"{\"ok\":true,\"bytes\":3}\nabcdef").unwrap();
        assert_eq!((v["bytes"].as_u64(), body.as_slice()), (Some(3), &b"abc"[..]));
        for bad in [
            &b"{\"ok\":true,\"bytes\":1e12}\n"[..],
            b"{\"ok\":true,\"bytes\":1000000000000}\n",
            b"{\"ok\":true,\"bytes\":-1}\n",
            b"{\"ok\":true,\"bytes\":10}\nshort",
            b"{\"ok\":true}",
        ] {
            assert!(matches!(answer_of(bad), Err(AnswerError::Protocol(_))), "{}", String::from_utf8_lossy(bad));
        }
        // A line that never ends is read only up to the cap.
        let endless = std::io::repeat(b'x').take(100 * MAX_ANSWER_LINE as u64);
        let err = read_answer(std::io::BufReader::new(endless)).unwrap_err();
        assert!(matches!(&err, AnswerError::Protocol(p) if p.contains("over")), "{err:?}");
        let (v, _) = answer_of(b"{\"ok\":true,\"cameras\":[{\"id\":\"a\\u001b[2Jb\\u009b\\u0007\"}]}\n").unwrap();
        assert_eq!(v["cameras"][0]["id"], "a\u{fffd}[2Jb\u{fffd}\u{fffd}");
        let Err(AnswerError::Refused(r)) = answer_of(b"{\"ok\":false,\"error\":\"no \\u001b]0;pwned\\u0007\"}\n")
        else {
            panic!("refused expected")
        };
        assert!(!r.contains('\u{1b}') && !r.contains('\u{7}'), "{r:?}");
    }

    /// Whatever the daemon sends, the reader does not panic, keeps within its caps and
    /// returns no string with a control character.
    #[test]
    fn any_answer_is_read_safely() {
        use proptest::prelude::*;
        fn no_controls(v: &serde_json::Value) -> bool {
            match v {
                serde_json::Value::String(s) => !s.chars().any(char::is_control),
                serde_json::Value::Array(a) => a.iter().all(no_controls),
                serde_json::Value::Object(m) => m.values().all(no_controls),
                _ => true,
            }
        }
        let text = "[ -~\u{0}-\u{1f}\u{7f}-\u{9f}é]{0,40}";
        let answers = prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..400),
            (text, any::<u32>(), proptest::collection::vec(any::<u8>(), 0..64)).prop_map(|(s, n, tail)| {
                let mut a =
                    serde_json::to_vec(&serde_json::json!({"ok": true, "camera": s, "bytes": n % 100})).unwrap();
                a.push(b'\n');
                a.extend(tail);
                a
            }),
        ];
        proptest!(|(bytes in answers)| {
            match answer_of(&bytes) {
                Ok((v, body)) => {
                    prop_assert!(no_controls(&v));
                    prop_assert!(body.len() as u64 <= MAX_BODY);
                    prop_assert_eq!(Some(body.len() as u64), v.get("bytes").map_or(Some(0), serde_json::Value::as_u64));
                }
                Err(AnswerError::Refused(r)) => prop_assert!(!r.chars().any(char::is_control)),
                Err(_) => {}
            }
        });
    }
}
