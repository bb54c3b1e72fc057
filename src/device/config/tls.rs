//! TLS for the MQTT connection, built from the files `[mqtt.tls]` names.
//!
//! Promises: `client_config` reads every file once, at start (and in `check`), and
//! any problem comes back as the config key and file at fault with what to do, so a
//! bad certificate is found by the technician, not by a silent reconnect loop.

use std::path::Path;
use std::sync::Arc;

use rustls::ClientConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use super::TlsConfig;

/// A refused TLS setting: the config key, and why.
pub type TlsProblem = (String, String);

pub fn client_config(tls: &TlsConfig) -> Result<Arc<ClientConfig>, TlsProblem> {
    let mut roots = rustls::RootCertStore::empty();
    match &tls.ca_file {
        Some(file) => {
            for cert in certificates("mqtt.tls.ca_file", file)? {
                roots.add(cert).map_err(|e| {
                    ("mqtt.tls.ca_file".to_owned(), format!("{}: not a usable CA certificate: {e}", file.display()))
                })?;
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            for cert in found.certs {
                let _ = roots.add(cert); // one odd system certificate must not stop the rest
            }
            if roots.is_empty() {
                return Err((
                    "mqtt.tls.ca_file".into(),
                    "is not set and this system has no trusted CA certificates (install ca-certificates or set ca_file)"
                        .into(),
                ));
            }
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ("mqtt.tls".to_owned(), e.to_string()))?
        .with_root_certificates(roots);
    let config = match (&tls.cert_file, &tls.key_file) {
        (Some(cert), Some(key)) => {
            let chain = certificates("mqtt.tls.cert_file", cert)?;
            let private = PrivateKeyDer::from_pem_file(key).map_err(|e| {
                ("mqtt.tls.key_file".to_owned(), format!("{}: no PEM private key read: {e}", key.display()))
            })?;
            builder.with_client_auth_cert(chain, private).map_err(|e| {
                ("mqtt.tls.key_file".to_owned(), format!("{} does not fit {}: {e}", key.display(), cert.display()))
            })?
        }
        _ => builder.with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

fn certificates(key: &str, file: &Path) -> Result<Vec<CertificateDer<'static>>, TlsProblem> {
    let problem = |why: String| (key.to_owned(), format!("{}: {why}", file.display()));
    let certs = CertificateDer::pem_file_iter(file)
        .map_err(|e| problem(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| problem(format!("not PEM: {e}")))?;
    if certs.is_empty() {
        return Err(problem("holds no PEM certificate (-----BEGIN CERTIFICATE-----)".into()));
    }
    Ok(certs)
}
