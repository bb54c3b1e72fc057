//! `[mqtt]`: the broker, credentials and TLS. Validates itself; the TLS client
//! configuration is built once here, at load, and kept for the publisher.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::contract::{Invalid, check_id};

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MqttConfig {
    pub host: String,
    #[serde(default = "default_mqtt_port")]
    pub port: u16,
    #[serde(default = "default_topic_root")]
    pub topic_root: String,
    /// Defaults to `gridwatch-{site}`: stable, so the broker can keep the session.
    pub client_id: Option<String>,
    pub username: Option<String>,
    /// A file holding the password (first line); keeps the secret out of the config.
    pub password_file: Option<PathBuf>,
    #[serde(default = "default_keep_alive_s")]
    pub keep_alive_s: u64,
    /// Present: connect over TLS (usually port 8883).
    pub tls: Option<TlsConfig>,
    /// Upper bound on events sent per second, so a backlog after an outage drains
    /// steadily instead of flooding a thin uplink; 0 means no bound.
    #[serde(default = "default_max_events_per_s")]
    pub max_events_per_s: u32,
    /// Bytes of event clips sent per hour at most, so a metered uplink is not eaten:
    /// past it a clip waits, and the events behind it with it (up to `clip_keep_s`);
    /// 0 means no bound.
    #[serde(default = "default_max_clip_bytes_per_hour")]
    pub max_clip_bytes_per_hour: u64,
    /// A clip the hourly budget holds back longer than this (after it was stored) is
    /// dropped and its event goes without it, so alerts behind it are not held long.
    #[serde(default = "default_clip_keep_s")]
    pub clip_keep_s: u64,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM file of the CA(s) that signed the broker's certificate; the system's
    /// trusted roots when absent.
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate (chain) and its private key, for brokers that ask.
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    /// Built from the files above when the configuration is loaded.
    #[serde(skip)]
    client: Option<Arc<rustls::ClientConfig>>,
}

fn default_mqtt_port() -> u16 {
    1883
}
fn default_topic_root() -> String {
    "gridwatch".into()
}
fn default_keep_alive_s() -> u64 {
    30
}
fn default_max_events_per_s() -> u32 {
    20
}
fn default_max_clip_bytes_per_hour() -> u64 {
    200 << 20
}
fn default_clip_keep_s() -> u64 {
    300
}

/// MQTT 3.1.1 servers must accept client ids of up to 23 bytes; longer ones work on
/// mosquitto but not everywhere, and no broker takes more than 65535.
const MAX_CLIENT_ID: usize = 256;

impl MqttConfig {
    pub fn resolve_paths(&mut self, fix: &impl Fn(&mut PathBuf)) {
        self.password_file.as_mut().map(fix);
        if let Some(tls) = &mut self.tls {
            tls.ca_file.as_mut().map(fix);
            tls.cert_file.as_mut().map(fix);
            tls.key_file.as_mut().map(fix);
        }
    }

    /// The client id: `client_id`, or `gridwatch-{site}`.
    pub fn client_id(&self, site: &str) -> String {
        self.client_id.clone().unwrap_or_else(|| format!("gridwatch-{site}"))
    }

    /// The password from `password_file`, or from systemd's credential `mqtt-password`.
    pub fn password(&self) -> Result<Option<String>, Invalid> {
        let path = match &self.password_file {
            Some(p) => p.clone(),
            None => match std::env::var_os("CREDENTIALS_DIRECTORY") {
                Some(dir) if Path::new(&dir).join("mqtt-password").exists() => Path::new(&dir).join("mqtt-password"),
                _ => return Ok(None),
            },
        };
        let text = std::fs::read_to_string(&path)
            .map_err(|e| Invalid(format!("mqtt.password_file: cannot read {}: {e}", path.display())))?;
        Ok(Some(text.lines().next().unwrap_or("").to_owned()))
    }

    pub fn problems(&mut self, bad: &mut dyn FnMut(String, String)) {
        if self.host.trim().is_empty() {
            bad("mqtt.host".into(), "is empty; give the broker's host name or IP address".into());
        }
        if self.port == 0 {
            bad("mqtt.port".into(), "0 is not a port; the usual MQTT port is 1883 (8883 with TLS)".into());
        }
        if let Err(r) = check_id(&self.topic_root) {
            bad("mqtt.topic_root".into(), r.0);
        }
        if let Some(id) = &self.client_id
            && (id.is_empty() || id.len() > MAX_CLIENT_ID)
        {
            bad(
                "mqtt.client_id".into(),
                format!("has {} bytes; give 1 to {MAX_CLIENT_ID} (23 or fewer works with every broker)", id.len()),
            );
        }
        if let Some(p) = &self.password_file {
            if !p.is_file() {
                bad("mqtt.password_file".into(), format!("{} does not exist or is not a file", p.display()));
            }
            if self.username.is_none() {
                bad("mqtt.password_file".into(), "is set but mqtt.username is not; set both or neither".into());
            }
        }
        if !(1..=600).contains(&self.keep_alive_s) {
            bad("mqtt.keep_alive_s".into(), format!("{} is outside 1..=600 seconds", self.keep_alive_s));
        }
        if !(1..=86_400).contains(&self.clip_keep_s) {
            bad("mqtt.clip_keep_s".into(), format!("{} is outside 1..=86400 seconds", self.clip_keep_s));
        }
        if self.max_events_per_s > 10_000 {
            bad("mqtt.max_events_per_s".into(), format!("{} is above 10000; 0 means no bound", self.max_events_per_s));
        }
        if let Some(tls) = &mut self.tls {
            tls.problems(bad);
        }
    }
}

impl TlsConfig {
    /// The client configuration, built at load.
    pub fn client(&self) -> Option<Arc<rustls::ClientConfig>> {
        self.client.clone()
    }

    fn problems(&mut self, bad: &mut dyn FnMut(String, String)) {
        let mut files_ok = true;
        for (key, file) in [("ca_file", &self.ca_file), ("cert_file", &self.cert_file), ("key_file", &self.key_file)] {
            if let Some(f) = file
                && !f.is_file()
            {
                bad(format!("mqtt.tls.{key}"), format!("{} does not exist or is not a file", f.display()));
                files_ok = false;
            }
        }
        if self.cert_file.is_some() != self.key_file.is_some() {
            bad("mqtt.tls".into(), "cert_file and key_file go together: set both or neither".into());
        } else if files_ok {
            match super::tls::client_config(self) {
                Ok(c) => self.client = Some(c),
                Err((key, reason)) => bad(key, reason),
            }
        }
    }
}
