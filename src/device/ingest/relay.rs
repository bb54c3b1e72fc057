//! A loopback relay in front of each camera, so that what the camera sends is
//! checked against the size caps before retina buffers it.
//!
//! retina opens its RTSP connections itself and offers no way to bound what it reads
//! (see `guard.rs`), so it is pointed at `rtsp://127.0.0.1:PORT/path` instead of the
//! camera, and the relay forwards each connection to the camera: requests as they are,
//! answers and media through a [`Guard`]. A connection that breaks a cap is cut, and
//! the reason waits in [`Relay::take_cut`] for the session to report. The relay also
//! makes the connection to the camera itself ([`Relay::connect`]), so a name that does
//! not resolve or a port that refuses is known from the resolver's and the socket's
//! own errors, not from retina's text.
//!
//! Promises: it listens on 127.0.0.1 only and adds nothing to what passes (the
//! credentials stay in retina's requests); it relays at most [`MAX_CONNECTIONS`] at
//! once; a relayed connection ends when either side closes or the relay is dropped;
//! the memory it holds per connection is two fixed buffers.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tracing::debug;
use url::{Host, Url};

use crate::device::ingest::error::IngestError;
use crate::device::ingest::guard::{Guard, Limits};

/// Connections relayed at once: a session's, and a stale session's TEARDOWN.
pub const MAX_CONNECTIONS: usize = 4;
/// Read size per direction.
const CHUNK: usize = 16 * 1024;

/// One camera's relay; dropping it closes the listener and every relayed connection.
pub struct Relay {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

struct Shared {
    host: Host<String>,
    port: u16,
    limits: Limits,
    /// Made by [`Relay::connect`] for the next connection retina opens.
    ready: Mutex<Option<TcpStream>>,
    /// Why the relay last cut a connection.
    cut: Mutex<Option<IngestError>>,
}

impl Relay {
    /// Listens on a free loopback port for connections to `url`'s host and port.
    pub fn start(url: &Url, limits: Limits) -> Result<Relay, IngestError> {
        let host = url.host().map(|h| h.to_owned()).ok_or_else(|| IngestError::Rtsp {
            step: "URL",
            status: None,
            detail: "the URL has no host".into(),
        })?;
        let local = |e: std::io::Error| IngestError::Local(format!("cannot open the camera's relay socket: {e}"));
        let listener = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).map_err(local)?;
        listener.set_nonblocking(true).map_err(local)?;
        let addr = listener.local_addr().map_err(local)?;
        let listener = TcpListener::from_std(listener).map_err(local)?;
        let shared = Arc::new(Shared {
            host,
            port: url.port().unwrap_or(554),
            limits,
            ready: Mutex::new(None),
            cut: Mutex::new(None),
        });
        let task = tokio::spawn(accept_loop(listener, shared.clone()));
        Ok(Relay { addr, shared, task })
    }

    /// `url` pointed at the relay: same path and query, loopback host and port.
    pub fn url_for(&self, url: &Url) -> Url {
        let mut local = url.clone();
        // An rtsp:// URL with a host always takes a new host and port.
        let _ = local.set_ip_host(IpAddr::V4(Ipv4Addr::LOCALHOST));
        let _ = local.set_port(Some(self.addr.port()));
        local
    }

    /// Resolves the camera's host and connects to it within `limit`, for the next
    /// connection retina makes; the errors say which step failed.
    pub async fn connect(&self, limit: Duration) -> Result<(), IngestError> {
        let stream = tokio::time::timeout(limit, connect(&self.shared.host, self.shared.port))
            .await
            .map_err(|_| IngestError::Timeout { step: "connecting", after: limit })??;
        *lock(&self.shared.ready) = Some(stream);
        self.take_cut();
        Ok(())
    }

    /// Why the relay cut the last connection it cut, if it did since the last call.
    pub fn take_cut(&self) -> Option<IngestError> {
        lock(&self.shared.cut).take()
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        // The accept loop owns the relayed connections: aborting it closes them all.
        self.task.abort();
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Resolves `host` (unless it is an address) and connects to the first address that
/// answers.
async fn connect(host: &Host<String>, port: u16) -> Result<TcpStream, IngestError> {
    let addrs: Vec<SocketAddr> = match host {
        Host::Ipv4(ip) => vec![SocketAddr::new(IpAddr::V4(*ip), port)],
        Host::Ipv6(ip) => vec![SocketAddr::new(IpAddr::V6(*ip), port)],
        Host::Domain(name) => {
            let dns = |detail: String| IngestError::Dns { host: name.clone(), detail };
            let found = tokio::net::lookup_host((name.as_str(), port)).await.map_err(|e| dns(e.to_string()))?;
            let addrs: Vec<SocketAddr> = found.collect();
            if addrs.is_empty() {
                return Err(dns("no address for this name".into()));
            }
            addrs
        }
    };
    let target = format!("{host}:{port}");
    let stream = TcpStream::connect(addrs.as_slice()).await.map_err(|e| IngestError::from_connect(&target, &e))?;
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

/// Accepts retina's connections and relays each; backs off when accepting fails (out
/// of file descriptors) instead of spinning.
async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut relayed = JoinSet::new();
    let mut backoff = Duration::ZERO;
    loop {
        // A free slot first: beyond the cap, connections wait in the kernel's backlog.
        let Ok(slot) = slots.clone().acquire_owned().await else { return };
        let client = match listener.accept().await {
            Ok((client, _)) => client,
            Err(e) => {
                backoff = (backoff * 2).clamp(Duration::from_millis(50), Duration::from_secs(1));
                debug!("camera relay: accept failed: {e}; next try in {backoff:?}");
                tokio::time::sleep(backoff).await;
                continue;
            }
        };
        backoff = Duration::ZERO;
        while relayed.try_join_next().is_some() {}
        let shared = shared.clone();
        relayed.spawn(async move {
            relay_one(client, &shared).await;
            drop(slot);
        });
    }
}

/// Relays one connection until either side closes or the camera breaks a cap.
async fn relay_one(client: TcpStream, shared: &Shared) {
    let ready = lock(&shared.ready).take();
    let camera = match ready {
        Some(s) => s,
        // A connection after the session's own (a TEARDOWN on a fresh connection).
        None => match tokio::time::timeout(Duration::from_secs(10), connect(&shared.host, shared.port)).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return debug!("camera relay: {e}"),
            Err(_) => return debug!("camera relay: connecting timed out"),
        },
    };
    let _ = client.set_nodelay(true);
    let (mut from_client, mut to_client) = client.into_split();
    let (mut from_camera, mut to_camera) = camera.into_split();
    let requests = async {
        let _ = tokio::io::copy(&mut from_client, &mut to_camera).await;
    };
    let answers = async {
        if let Err(e) = forward_checked(&mut from_camera, &mut to_client, shared.limits).await {
            debug!("camera relay: cut: {e}");
            *lock(&shared.cut) = Some(e);
        }
    };
    // Either side ending ends both: dropping the halves closes the sockets.
    tokio::select! {
        () = requests => {}
        () = answers => {}
    }
}

/// Copies from the camera to retina through a [`Guard`]; an error only for a cap.
async fn forward_checked(
    from: &mut tokio::net::tcp::OwnedReadHalf,
    to: &mut tokio::net::tcp::OwnedWriteHalf,
    limits: Limits,
) -> Result<(), IngestError> {
    let mut guard = Guard::new(limits);
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return Ok(()),
            Ok(n) => n,
        };
        guard.feed(&buf[..n])?;
        if to.write_all(&buf[..n]).await.is_err() {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bytes go to the camera and back unchanged, through the loopback port.
    #[tokio::test]
    async fn relays_both_ways() {
        let camera = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = Url::parse(&format!("rtsp://127.0.0.1:{}/cam", camera.local_addr().unwrap().port())).unwrap();
        let relay = Relay::start(&url, Limits::default()).unwrap();
        relay.connect(Duration::from_secs(2)).await.unwrap();
        let local = relay.url_for(&url);
        assert_eq!(local.path(), "/cam");
        let (mut accepted, _) = camera.accept().await.unwrap();
        let mut client = TcpStream::connect(("127.0.0.1", local.port().unwrap())).await.unwrap();
        client.write_all(b"OPTIONS * RTSP/1.0\r\n\r\n").await.unwrap();
        let mut buf = [0u8; 22];
        accepted.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"OPTIONS * RTSP/1.0\r\n\r\n");
        accepted.write_all(b"RTSP/1.0 200 OK\r\n\r\n").await.unwrap();
        let mut buf = [0u8; 19];
        client.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"RTSP/1.0 200 OK\r\n\r\n");
    }
}
