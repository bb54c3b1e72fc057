//! The console's web server: routes, security headers, body limits, TLS.
//!
//! Promises: every route but the login page and the static assets needs a session
//! (pages redirect to the login page, `/api/` and `/media/` answer 401); every
//! response carries a strict Content-Security-Policy (no inline script or style) and
//! is not framed; request bodies are capped at 16 KiB; under TLS the cookie is Secure
//! and HSTS is sent.

mod api;
mod assets;
mod auth;
mod i18n;
mod notices;
mod pages;
mod render;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::extract::connect_info::Connected;
use axum::http::{HeaderValue, header};
use axum::routing::{get, post};
use axum::serve::{IncomingStream, Listener};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use super::config::DeskConfig;
use super::fresh::Fresh;
use super::ingest::Mqtt;
use super::live::Live;
use super::store::Store;

const BODY_LIMIT: usize = 16 << 10;
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; media-src 'self'; \
                   connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// What every handler can reach.
#[derive(Clone)]
pub struct App {
    pub cfg: Arc<DeskConfig>,
    pub store: Arc<Store>,
    pub live: Live,
    pub mqtt: Arc<Mqtt>,
    /// Fresh pictures asked for from the site page (memory only).
    pub fresh: Arc<Fresh>,
    pub auth: Arc<auth::Auth>,
    pub tls: bool,
    /// Cancelled at shutdown: open streams end, so the server can stop.
    pub stop: CancellationToken,
}

/// The peer's address, whichever listener accepted it.
#[derive(Clone, Copy, Debug)]
pub struct Peer(pub SocketAddr);

impl Connected<IncomingStream<'_, TcpListener>> for Peer {
    fn connect_info(s: IncomingStream<'_, TcpListener>) -> Self {
        Peer(*s.remote_addr())
    }
}

impl Connected<IncomingStream<'_, TlsListener>> for Peer {
    fn connect_info(s: IncomingStream<'_, TlsListener>) -> Self {
        Peer(*s.remote_addr())
    }
}

fn router(app: App) -> Router {
    Router::new()
        .route("/login", get(auth::login_page).post(auth::login))
        .route("/logout", post(auth::logout))
        .route("/assets/{name}", get(assets::serve))
        .merge(pages::routes())
        .merge(api::routes())
        .merge(notices::routes())
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(axum::middleware::from_fn_with_state(app.clone(), headers))
        .with_state(app)
}

/// Security headers on every response.
async fn headers(
    axum::extract::State(app): axum::extract::State<App>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let media = req.uri().path().starts_with("/media/") || req.uri().path().starts_with("/assets/");
    let mut res = next.run(req).await;
    let h = res.headers_mut();
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    if !media {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    if app.tls {
        h.insert(header::STRICT_TRANSPORT_SECURITY, HeaderValue::from_static("max-age=31536000"));
    }
    res
}

/// The console's port, bound, with its TLS set-up when configured.
pub struct Bound {
    pub addr: SocketAddr,
    tcp: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
}

/// Binds `web.listen` (and reads the TLS certificate), so that problems show at start.
pub async fn bind(cfg: &DeskConfig) -> anyhow::Result<Bound> {
    let tls = match (&cfg.web.tls_cert, &cfg.web.tls_key) {
        (Some(cert), Some(key)) => Some(tls_acceptor(cert, key)?),
        _ => None,
    };
    let listen = cfg.web.listen;
    let tcp = TcpListener::bind(listen).await.map_err(|e| anyhow::anyhow!("web.listen = {listen}: {e}"))?;
    let addr = tcp.local_addr()?;
    // Tests and scripts read this line to find the port (web.listen may say port 0).
    eprintln!("desk: listening on {}://{addr}", if tls.is_some() { "https" } else { "http" });
    Ok(Bound { addr, tcp, tls })
}

/// Serves the console on the bound port until `stop`.
pub async fn serve(
    bound: Bound,
    cfg: Arc<DeskConfig>,
    store: Arc<Store>,
    live: Live,
    mqtt: Arc<Mqtt>,
    fresh: Arc<Fresh>,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    let Bound { tcp, tls, .. } = bound;
    let auth = Arc::new(auth::Auth::default());
    let app = App { cfg, store, live, mqtt, fresh, auth, tls: tls.is_some(), stop: stop.clone() };
    let service = router(app).into_make_service_with_connect_info::<Peer>();
    let shutdown = async move { stop.cancelled().await };
    match tls {
        Some(acceptor) => {
            axum::serve(TlsListener::new(tcp, acceptor)?, service).with_graceful_shutdown(shutdown).await?
        }
        None => axum::serve(tcp, service).with_graceful_shutdown(shutdown).await?,
    }
    Ok(())
}

fn tls_acceptor(cert: &std::path::Path, key: &std::path::Path) -> anyhow::Result<tokio_rustls::TlsAcceptor> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .and_then(|i| i.collect())
        .map_err(|e| anyhow::anyhow!("web.tls_cert: {}: {e}", cert.display()))?;
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| anyhow::anyhow!("web.tls_key: {}: {e}", key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| anyhow::anyhow!("web.tls_key does not fit web.tls_cert: {e}"))?;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

/// TCP with a TLS handshake (at most 10 s, each on a task of its own, so a slow
/// client holds up nobody) before a connection is handed to the server.
pub struct TlsListener {
    addr: SocketAddr,
    ready: tokio::sync::mpsc::Receiver<(tokio_rustls::server::TlsStream<TcpStream>, SocketAddr)>,
}

impl TlsListener {
    fn new(tcp: TcpListener, acceptor: tokio_rustls::TlsAcceptor) -> std::io::Result<TlsListener> {
        let addr = tcp.local_addr()?;
        let (tx, ready) = tokio::sync::mpsc::channel(64);
        tokio::spawn(async move {
            loop {
                let Ok((stream, peer)) = tcp.accept().await else {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                };
                let (acceptor, tx) = (acceptor.clone(), tx.clone());
                tokio::spawn(async move {
                    if let Ok(Ok(tls)) = tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream)).await {
                        let _ = tx.send((tls, peer)).await;
                    }
                });
            }
        });
        Ok(TlsListener { addr, ready })
    }
}

impl Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(c) => c,
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        Ok(self.addr)
    }
}

impl App {
    /// The configured name of a site, or its id.
    pub fn site_name(&self, id: &str) -> String {
        self.cfg.sites.iter().find(|s| s.id == id).map_or_else(|| id.to_owned(), |s| s.name.clone())
    }

    /// (id, name, group) of every configured site.
    pub fn site_names(&self) -> Vec<(String, String, Option<String>)> {
        self.cfg.sites.iter().map(|s| (s.id.clone(), s.name.clone(), s.group.clone())).collect()
    }

    /// Runs store work on the blocking pool; a failure becomes a logged 500.
    pub async fn db<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Store) -> anyhow::Result<T> + Send + 'static,
    ) -> Result<T, axum::response::Response> {
        use axum::response::IntoResponse;
        let store = self.store.clone();
        match tokio::task::spawn_blocking(move || f(&store)).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => {
                tracing::error!("desk database: {e:#}");
                Err((axum::http::StatusCode::INTERNAL_SERVER_ERROR, "database error").into_response())
            }
            Err(e) => {
                tracing::error!("desk database task: {e}");
                Err((axum::http::StatusCode::INTERNAL_SERVER_ERROR, "database error").into_response())
            }
        }
    }
}
