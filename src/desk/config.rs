//! The desk's configuration (`desk.toml`, systemd/desk.toml.example).
//!
//! Promises: the file is parsed once into validated types; unknown keys are refused;
//! every problem is reported at once with the key at fault and what to do; relative
//! paths are taken from the file's folder. Passwords are never echoed.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::device::config::MqttConfig;

/// Rule kinds that make an incident unless `[alerts] kinds` says otherwise.
pub use crate::contract::RULE_KINDS;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeskConfig {
    /// The same keys as the device's `[mqtt]`; `client_id` defaults to `gridwatch-desk`.
    pub mqtt: MqttConfig,
    #[serde(default)]
    pub web: WebConfig,
    pub storage: StorageConfig,
    #[serde(default)]
    pub language: Language,
    #[serde(default)]
    pub sites: Vec<SiteConfig>,
    #[serde(default)]
    pub alerts: AlertsConfig,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebConfig {
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
}

impl Default for WebConfig {
    fn default() -> Self {
        WebConfig { listen: default_listen(), tls_cert: None, tls_key: None }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageConfig {
    pub dir: PathBuf,
    #[serde(default = "default_max_bytes")]
    pub max_bytes: u64,
    #[serde(default = "default_keep_days")]
    pub keep_days: u32,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub enum Language {
    #[default]
    #[serde(rename = "zh-CN")]
    ZhCn,
    #[serde(rename = "en")]
    En,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SiteConfig {
    pub id: String,
    pub name: String,
    pub group: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertsConfig {
    #[serde(default = "default_kinds")]
    pub kinds: Vec<String>,
    #[serde(default = "default_escalate")]
    pub escalate_after_s: u64,
}

impl Default for AlertsConfig {
    fn default() -> Self {
        AlertsConfig { kinds: default_kinds(), escalate_after_s: default_escalate() }
    }
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8080))
}
fn default_max_bytes() -> u64 {
    20 << 30
}
fn default_keep_days() -> u32 {
    90
}
fn default_kinds() -> Vec<String> {
    RULE_KINDS.iter().map(|k| k.to_string()).collect()
}
fn default_escalate() -> u64 {
    300
}

impl DeskConfig {
    /// Reads, parses and validates `file`; the error names every key at fault.
    pub fn load(file: &Path) -> anyhow::Result<DeskConfig> {
        let text = std::fs::read_to_string(file)
            .map_err(|e| anyhow::anyhow!("{}: cannot read the configuration: {e}", file.display()))?;
        let mut cfg: DeskConfig =
            toml::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {}", file.display(), e.to_string().trim_end()))?;
        cfg.resolve_paths(file.parent().unwrap_or(Path::new(".")));
        let problems = cfg.problems();
        if problems.is_empty() {
            return Ok(cfg);
        }
        let list: String = problems.iter().map(|(k, r)| format!("\n  {k}: {r}")).collect();
        anyhow::bail!("{}: {} problem(s):{list}", file.display(), problems.len())
    }

    fn resolve_paths(&mut self, base: &Path) {
        let fix = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        fix(&mut self.storage.dir);
        self.mqtt.resolve_paths(&fix);
        self.web.tls_cert.as_mut().map(fix);
        self.web.tls_key.as_mut().map(fix);
    }

    /// Every problem at once (the `[mqtt]` ones checked as the device checks them;
    /// this also builds the TLS client).
    fn problems(&mut self) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = Vec::new();
        self.mqtt.problems(&mut |k, r| out.push((k, r)));
        let mut bad = |k: &str, r: String| out.push((k.to_owned(), r));
        if self.web.tls_cert.is_some() != self.web.tls_key.is_some() {
            bad("web.tls_cert", "tls_cert and tls_key go together: set both or neither".into());
        }
        for (key, f) in [("web.tls_cert", &self.web.tls_cert), ("web.tls_key", &self.web.tls_key)] {
            if let Some(f) = f
                && !f.is_file()
            {
                bad(key, format!("{} does not exist or is not a file", f.display()));
            }
        }
        if self.storage.max_bytes < (64 << 20) {
            bad("storage.max_bytes", "is below 64 MiB; the desk needs room for pictures (default 20 GiB)".into());
        }
        if self.storage.keep_days == 0 {
            bad("storage.keep_days", "must be at least 1 (default 90)".into());
        }
        let mut ids = HashSet::new();
        for (i, s) in self.sites.iter().enumerate() {
            if let Err(r) = crate::contract::check_id(&s.id) {
                bad(&format!("sites[{i}].id"), r.0);
            }
            if !ids.insert(&s.id) {
                bad(&format!("sites[{i}].id"), format!("\"{}\" is listed twice; list each site once", s.id));
            }
            if s.name.trim().is_empty() || s.name.chars().count() > 100 {
                bad(&format!("sites[{i}].name"), "give a name of 1-100 characters".into());
            }
        }
        if self.alerts.escalate_after_s == 0 {
            bad("alerts.escalate_after_s", "must be at least 1 second (default 300)".into());
        }
        out
    }

    /// The desk's stable MQTT client id (`mqtt.client_id`, default `gridwatch-desk`).
    pub fn client_id(&self) -> String {
        self.mqtt.client_id("desk")
    }

    pub fn is_alert(&self, kind: &str) -> bool {
        self.alerts.kinds.iter().any(|k| k == kind)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> anyhow::Result<DeskConfig> {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("desk.toml");
        std::fs::write(&f, text).unwrap();
        DeskConfig::load(&f)
    }

    #[test]
    fn defaults_and_unknown_keys() {
        let c = parse("[mqtt]\nhost = \"b\"\n[storage]\ndir = \"s\"\n").unwrap();
        assert_eq!(c.web.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(c.storage.max_bytes, 20 << 30);
        assert_eq!(c.language, Language::ZhCn);
        assert!(c.is_alert("intrusion") && !c.is_alert("object"));
        let e = parse("[mqtt]\nhost = \"b\"\nhots = 1\n[storage]\ndir = \"s\"\n").unwrap_err().to_string();
        assert!(e.contains("hots"), "{e}");
    }

    #[test]
    fn the_shipped_example_is_valid() {
        let c = parse(include_str!("../../systemd/desk.toml.example")).unwrap();
        assert_eq!(c.web.listen.to_string(), "127.0.0.1:8080", "loopback by default");
        assert_eq!(c.sites[0].name, "第七网格 · 东门");
    }

    #[test]
    fn every_problem_named() {
        let e = parse(
            "[mqtt]\nhost = \"\"\n[storage]\ndir = \"s\"\nkeep_days = 0\n[[sites]]\nid = \"A b\"\nname = \"x\"\n",
        )
        .unwrap_err()
        .to_string();
        for key in ["mqtt.host", "storage.keep_days", "sites[0].id"] {
            assert!(e.contains(key), "{key} missing in {e}");
        }
    }
}
