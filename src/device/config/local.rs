//! `[control]` (the local socket `status` and `snapshot` use) and `[metrics]` (the
//! optional Prometheus endpoint): the technician's side of the daemon.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::default_true;

/// `[control]`: the local Unix socket `gridwatch status` and `snapshot` talk to.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ControlConfig {
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Where the socket is; by default `$RUNTIME_DIRECTORY/control.sock` under systemd,
    /// otherwise `control.sock` in `storage.dir`.
    pub socket: Option<PathBuf>,
    /// Permission bits of the socket: owner and group only ("0660" lets the service's
    /// group in, "0600" only its user). Written as a string, or as a TOML octal 0o660.
    #[serde(default = "default_control_mode", with = "octal_mode")]
    pub mode: u32,
}

impl Default for ControlConfig {
    fn default() -> Self {
        ControlConfig { enabled: true, socket: None, mode: default_control_mode() }
    }
}

fn default_control_mode() -> u32 {
    0o660
}

/// File modes read and written the way people write them: "0660".
mod octal_mode {
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub fn serialize<S: Serializer>(mode: &u32, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("{mode:04o}"))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Int(u32),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Int(v) => Ok(v),
            Raw::Text(t) => u32::from_str_radix(t.trim().trim_start_matches("0o"), 8)
                .map_err(|_| D::Error::custom(format!("\"{t}\" is not an octal file mode like \"0660\""))),
        }
    }
}

/// `[metrics]`: an optional Prometheus endpoint, off unless a port is given.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// TCP port for `GET /metrics`; no endpoint when absent.
    pub port: Option<u16>,
    /// Address to listen on; loopback unless you mean to expose it.
    #[serde(default = "default_metrics_listen")]
    pub listen: std::net::IpAddr,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig { port: None, listen: default_metrics_listen() }
    }
}

fn default_metrics_listen() -> std::net::IpAddr {
    std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST)
}

/// The socket's file name in its folder.
pub const CONTROL_SOCKET_NAME: &str = "control.sock";

impl ControlConfig {
    /// The socket's path: `socket`, else `$RUNTIME_DIRECTORY/control.sock` (systemd's
    /// `RuntimeDirectory=`), else `control.sock` in `storage_dir`.
    pub fn socket_path(&self, storage_dir: &Path) -> PathBuf {
        if let Some(p) = &self.socket {
            return p.clone();
        }
        // RuntimeDirectory= may list several folders, separated by ':'.
        match std::env::var_os("RUNTIME_DIRECTORY") {
            Some(dirs) if !dirs.is_empty() => {
                let first = dirs.to_string_lossy().split(':').next().unwrap_or_default().to_owned();
                PathBuf::from(first).join(CONTROL_SOCKET_NAME)
            }
            _ => storage_dir.join(CONTROL_SOCKET_NAME),
        }
    }

    pub(super) fn problems(&self, storage_dir: &Path, bad: &mut dyn FnMut(String, String)) {
        if self.mode & 0o007 != 0 || self.mode & !0o777 != 0 {
            bad(
                "control.mode".into(),
                format!(
                    "{:04o} would let other users on this machine control the daemon; use \"0660\" or \"0600\"",
                    self.mode
                ),
            );
        }
        if !self.enabled {
            return;
        }
        // Only a stale socket may be replaced at start: anything else is someone's file.
        let path = self.socket_path(storage_dir);
        if let Ok(m) = std::fs::symlink_metadata(&path) {
            use std::os::unix::fs::FileTypeExt;
            if !m.file_type().is_socket() {
                bad(
                    "control.socket".into(),
                    format!("{} exists and is not a socket; choose another path (it is never deleted)", path.display()),
                );
            }
        }
    }
}

impl MetricsConfig {
    pub(super) fn problems(&self, bad: &mut dyn FnMut(String, String)) {
        if self.port == Some(0) {
            bad("metrics.port".into(), "0 is not a port; e.g. 9464, or remove the key to turn metrics off".into());
        }
    }
}
