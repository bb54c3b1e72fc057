//! The local control socket: `gridwatch status` and `gridwatch snapshot` ask the
//! running daemon through it.
//!
//! Protocol: the client sends one JSON request on one line (`{"request":"status"}`,
//! `{"request":"snapshot","camera":"east-gate"}`); the daemon answers with one JSON
//! line, `{"ok":true,...}` or `{"ok":false,"error":"..."}`, and for a snapshot the
//! answer's `bytes` JPEG bytes follow that line. One request per connection.
//!
//! Promises: the socket is created with the configured mode (never world-accessible)
//! before anything can connect; a stale socket file from a crash is replaced, but a
//! socket another running daemon answers on is not; a slow or broken client cannot
//! hold up the daemon (every exchange has a time limit).

use std::io::{BufRead, BufReader, Read, Write};
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
use crate::device::ops::live::Live;

/// How long one exchange may take, either side.
const EXCHANGE_LIMIT: Duration = Duration::from_secs(10);
/// Longest request line accepted.
const MAX_REQUEST: usize = 4096;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "request", rename_all = "lowercase")]
pub enum Request {
    Status,
    Snapshot { camera: String },
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
        loop {
            let stream = tokio::select! {
                r = listener.accept() => match r {
                    Ok((s, _)) => s,
                    Err(e) => {
                        warn!("control socket: {e}");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        continue;
                    }
                },
                _ = shutdown.cancelled() => break,
            };
            let live = live.clone();
            tokio::spawn(async move {
                if let Err(e) = tokio::time::timeout(EXCHANGE_LIMIT, answer(stream, &live))
                    .await
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("timed out")))
                {
                    debug!("control client: {e:#}");
                }
            });
        }
    });
    Ok(Server { path, task })
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
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("control socket: cannot create {}", dir.display()))?;
    }
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            anyhow::bail!(
                "control socket {}: another gridwatch answers there; stop it, or set control.socket to another path",
                path.display()
            );
        }
        std::fs::remove_file(path)
            .with_context(|| format!("control socket: cannot remove the stale {}", path.display()))?;
    }
    // Nobody but the owner may connect until the mode is set: bind under a tight umask.
    let old = unsafe { libc::umask(0o177) };
    let bound = UnixListener::bind(path);
    unsafe { libc::umask(old) };
    let listener = bound.with_context(|| format!("control socket: cannot bind {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("control socket: cannot set the mode of {}", path.display()))?;
    Ok(listener)
}

async fn answer(stream: UnixStream, live: &Live) -> anyhow::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    tokio::io::AsyncReadExt::take(tokio::io::BufReader::new(read), MAX_REQUEST as u64).read_line(&mut line).await?;
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
}

/// One exchange with the daemon at `path`: the answer's JSON, and the bytes that
/// follow it (a snapshot's JPEG; empty otherwise).
pub fn request(path: &Path, req: &Request) -> Result<(serde_json::Value, Vec<u8>), ClientError> {
    let io = |source: std::io::Error| match source.kind() {
        std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused => {
            ClientError::NotRunning { path: path.to_owned() }
        }
        std::io::ErrorKind::PermissionDenied => ClientError::PermissionDenied { path: path.to_owned() },
        _ => ClientError::Io { path: path.to_owned(), source },
    };
    let mut stream = std::os::unix::net::UnixStream::connect(path).map_err(io)?;
    stream.set_read_timeout(Some(EXCHANGE_LIMIT + Duration::from_secs(2))).map_err(io)?;
    let mut line = serde_json::to_string(req).map_err(|e| ClientError::Protocol(e.to_string()))?;
    line.push('\n');
    stream.write_all(line.as_bytes()).map_err(io)?;
    let mut reader = BufReader::new(stream);
    let mut header = String::new();
    reader.read_line(&mut header).map_err(io)?;
    let v: serde_json::Value =
        serde_json::from_str(header.trim()).map_err(|e| ClientError::Protocol(format!("{e}: {header:?}")))?;
    if v["ok"] != true {
        return Err(ClientError::Refused(v["error"].as_str().unwrap_or("no reason given").to_owned()));
    }
    let mut body = Vec::new();
    if let Some(n) = v.get("bytes").and_then(serde_json::Value::as_u64) {
        body.resize(n as usize, 0);
        reader.read_exact(&mut body).map_err(io)?;
    }
    Ok((v, body))
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
}
