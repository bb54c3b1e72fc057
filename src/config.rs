//! The daemon's configuration: typed, with defaults, validated before anything starts.
//!
//! Promises: `Config::load` either returns a configuration every later stage can use
//! as is (paths resolved against the file's folder, labels known, ids valid and unique)
//! or an error that names the file, each offending key and what to do about it.
//! Nothing here touches the network or the cameras.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use url::Url;

use crate::detect::{Labels, ModelSource};

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// This grid point's id, unique per device; part of every MQTT topic.
    pub site: String,
    pub mqtt: MqttConfig,
    #[serde(default)]
    pub detector: DetectorConfig,
    pub storage: StorageConfig,
    #[serde(default)]
    pub snapshot: SnapshotConfig,
    #[serde(default)]
    pub cameras: Vec<CameraConfig>,
    #[serde(default)]
    pub control: ControlConfig,
    #[serde(default)]
    pub metrics: MetricsConfig,
}

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
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DetectorConfig {
    /// An ONNX model file; the YOLOX-Nano model built into the binary when absent.
    pub model: Option<PathBuf>,
    /// Class names, one per line in model order; COCO-80 built in when absent.
    pub labels: Option<PathBuf>,
    /// Where libonnxruntime.so is, when not in one of the usual places.
    pub onnxruntime: Option<PathBuf>,
    /// ONNX Runtime threads per model run.
    #[serde(default = "default_threads")]
    pub threads: usize,
    /// Model sessions run side by side (each with `threads` threads); by default one
    /// per core, at most one per enabled camera. One session can keep one core busy
    /// at a time: more cameras than one core can serve need more.
    pub sessions: Option<usize>,
    /// Detections below this score are not tracked at all.
    #[serde(default = "default_min_score")]
    pub min_score: f32,
    #[serde(default = "default_nms_iou")]
    pub nms_iou: f32,
}

impl Default for DetectorConfig {
    fn default() -> Self {
        DetectorConfig {
            model: None,
            labels: None,
            onnxruntime: None,
            threads: default_threads(),
            sessions: None,
            min_score: default_min_score(),
            nms_iou: default_nms_iou(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct StorageConfig {
    /// Holds the outbox (events waiting for the broker), recent history and the
    /// event sequence.
    pub dir: PathBuf,
    /// Disk budget of the outbox in bytes; when full, pictures go before events.
    #[serde(default = "default_max_bytes")]
    pub max_bytes: u64,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SnapshotConfig {
    /// JPEG quality to start from; lowered (then the size) until `max_bytes` holds.
    #[serde(default = "default_jpeg_quality")]
    pub quality: u8,
    /// Largest JPEG sent; a broker's message limit and a thin link both care.
    #[serde(default = "default_snapshot_max_bytes")]
    pub max_bytes: usize,
    /// Send only the part of the frame around the event's boxes (and zone), not the whole frame.
    #[serde(default)]
    pub crop: bool,
}

impl Default for SnapshotConfig {
    fn default() -> Self {
        SnapshotConfig { quality: default_jpeg_quality(), max_bytes: default_snapshot_max_bytes(), crop: false }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CameraConfig {
    pub id: String,
    /// Human-readable name for the desk; the id when absent.
    pub name: Option<String>,
    /// rtsp://[user:pass@]host[:port]/path; credentials are never logged or published.
    pub url: String,
    #[serde(default = "default_detect_fps")]
    pub detect_fps: f64,
    /// Labels that make object events; others are detected but ignored.
    #[serde(default = "default_track")]
    pub track: Vec<String>,
    /// Width of the picture analysed and sent in snapshots; the stream's own width,
    /// capped at this, aspect kept.
    #[serde(default = "default_analysis_width")]
    pub analysis_width: u32,
    /// A session that delivers no frame for this long is dropped and reconnected
    /// (RTSP itself never notices a camera that froze with its socket open).
    #[serde(default = "default_stall_timeout_s")]
    pub stall_timeout_s: u64,
    #[serde(default = "default_true")]
    pub enabled: bool,
    #[serde(default)]
    pub motion: MotionConfig,
    /// `auto`: zones too small for the whole-frame view also get square crops shown to
    /// the detector at full size (see docs/rules.md); `off`: the whole frame only.
    #[serde(default)]
    pub regions: RegionsMode,
    /// Per label: which detections count (see docs/rules.md).
    #[serde(default)]
    pub filters: BTreeMap<String, FilterConfig>,
    #[serde(default)]
    pub zones: Vec<ZoneConfig>,
    /// Areas blacked out in every picture that leaves the device.
    #[serde(default)]
    pub privacy_masks: Vec<MaskConfig>,
    pub tamper: Option<TamperRule>,
    pub camera_offline: Option<OfflineRule>,
    /// The `[snapshot]` section, copied here at load so a camera's pipeline has all it needs.
    #[serde(skip)]
    pub snapshot: SnapshotConfig,
}

/// Whether far zones get region crops of their own (`cameras.regions`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RegionsMode {
    #[default]
    Auto,
    Off,
}

/// A polygon's corners as `[x, y]` pairs in 0..1 of the frame's width and height.
pub type Points = Vec<[f32; 2]>;

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MotionConfig {
    /// Off: every frame goes to the detector, and objects count without having moved.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Luma difference (0-255) from the background that counts as change.
    #[serde(default = "default_motion_threshold")]
    pub threshold: u8,
    /// Least changed area, as a fraction of the frame, that counts as motion.
    #[serde(default = "default_motion_min_area")]
    pub min_area: f32,
    /// How often a still scene is looked at anyway (seconds).
    #[serde(default = "default_recheck_s")]
    pub recheck_s: f64,
}

impl Default for MotionConfig {
    fn default() -> Self {
        MotionConfig {
            enabled: true,
            threshold: default_motion_threshold(),
            min_area: default_motion_min_area(),
            recheck_s: default_recheck_s(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FilterConfig {
    /// Detections of this label below this score are ignored (default: detector.min_score).
    pub min_score: Option<f32>,
    /// An object counts once the median of its recent scores (misses as 0) reaches this.
    #[serde(default = "default_confirm_score")]
    pub confirm_score: f32,
    /// Box area bounds as a fraction of the frame.
    #[serde(default)]
    pub min_area: f32,
    #[serde(default = "default_one")]
    pub max_area: f32,
    /// Box width / height bounds.
    #[serde(default)]
    pub min_ratio: f32,
    #[serde(default = "default_max_ratio")]
    pub max_ratio: f32,
    /// A detection standing (bottom-centre) in one of these polygons is dropped.
    #[serde(default)]
    pub masks: Vec<Points>,
}

impl Default for FilterConfig {
    fn default() -> Self {
        FilterConfig {
            min_score: None,
            confirm_score: default_confirm_score(),
            min_area: 0.0,
            max_area: 1.0,
            min_ratio: 0.0,
            max_ratio: default_max_ratio(),
            masks: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MaskConfig {
    pub points: Points,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ZoneConfig {
    /// Zone id, same rule as camera ids; listed in events' `zones`.
    pub name: String,
    pub points: Points,
    /// Analysed frames in a row an object must be inside (outside) to enter (leave).
    #[serde(default = "default_inertia")]
    pub inertia: u32,
    pub intrusion: Option<IntrusionRule>,
    pub loitering: Option<LoiteringRule>,
    pub crowd: Option<CrowdRule>,
    pub occupation: Option<OccupationRule>,
    pub abandoned: Option<AbandonedRule>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct IntrusionRule {
    #[serde(default = "default_person")]
    pub labels: Vec<String>,
    /// Local time window, "HH:MM-HH:MM" (may span midnight); always when absent.
    pub schedule: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LoiteringRule {
    pub seconds: f64,
    #[serde(default = "default_person")]
    pub labels: Vec<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CrowdRule {
    pub count: u32,
    #[serde(default)]
    pub seconds: f64,
    #[serde(default = "default_person")]
    pub labels: Vec<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct OccupationRule {
    pub seconds: f64,
    #[serde(default = "default_vehicles")]
    pub labels: Vec<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AbandonedRule {
    pub seconds: f64,
    #[serde(default = "default_items")]
    pub labels: Vec<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TamperRule {
    #[serde(default = "default_tamper_s")]
    pub seconds: f64,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct OfflineRule {
    #[serde(default = "default_offline_s")]
    pub seconds: f64,
}

impl ZoneConfig {
    /// Every label a rule of this zone looks at.
    pub fn labels(&self) -> impl Iterator<Item = &String> {
        let i = self.intrusion.iter().flat_map(|r| &r.labels);
        let l = self.loitering.iter().flat_map(|r| &r.labels);
        let c = self.crowd.iter().flat_map(|r| &r.labels);
        let o = self.occupation.iter().flat_map(|r| &r.labels);
        let a = self.abandoned.iter().flat_map(|r| &r.labels);
        i.chain(l).chain(c).chain(o).chain(a)
    }
}

impl CameraConfig {
    /// Labels the camera must detect and track: `track` plus every zone rule's labels
    /// (and persons, when an abandoned-item rule must know whether someone is near).
    pub fn tracked_labels(&self) -> Vec<String> {
        let mut out: Vec<String> = self.track.clone();
        for z in &self.zones {
            out.extend(z.labels().cloned());
            if z.abandoned.is_some() {
                out.push("person".into());
            }
        }
        let mut seen = HashSet::new();
        out.retain(|l| seen.insert(l.clone()));
        out
    }

    /// The filter for `label`: its own section, or the defaults.
    pub fn filter(&self, label: &str) -> FilterConfig {
        self.filters.get(label).cloned().unwrap_or_default()
    }

    pub fn display_name(&self) -> &str {
        self.name.as_deref().unwrap_or(&self.id)
    }
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
fn default_max_bytes() -> u64 {
    512 << 20
}
/// Below this the outbox cannot hold even a few events with their pictures.
const MIN_STORAGE_BYTES: u64 = 256 << 10;
fn default_threads() -> usize {
    1
}
fn default_min_score() -> f32 {
    0.5
}
fn default_nms_iou() -> f32 {
    0.45
}
fn default_jpeg_quality() -> u8 {
    80
}
fn default_detect_fps() -> f64 {
    5.0
}
fn default_track() -> Vec<String> {
    vec!["person".into()]
}
fn default_analysis_width() -> u32 {
    1280
}
fn default_stall_timeout_s() -> u64 {
    20
}
fn default_true() -> bool {
    true
}
fn default_snapshot_max_bytes() -> usize {
    150_000
}
fn default_motion_threshold() -> u8 {
    20
}
fn default_motion_min_area() -> f32 {
    0.0005
}
fn default_recheck_s() -> f64 {
    1.5
}
fn default_confirm_score() -> f32 {
    0.6
}
fn default_one() -> f32 {
    1.0
}
fn default_max_ratio() -> f32 {
    100.0
}
fn default_inertia() -> u32 {
    3
}
fn default_person() -> Vec<String> {
    vec!["person".into()]
}
fn default_vehicles() -> Vec<String> {
    ["car", "truck", "bus", "motorcycle", "bicycle"].map(String::from).to_vec()
}
fn default_items() -> Vec<String> {
    ["backpack", "handbag", "suitcase"].map(String::from).to_vec()
}
fn default_tamper_s() -> f64 {
    10.0
}
fn default_offline_s() -> f64 {
    30.0
}

/// Why a configuration was refused. Display lists every problem, one per line.
#[derive(Debug)]
pub enum ConfigError {
    Read { file: PathBuf, source: std::io::Error },
    Parse { file: PathBuf, message: String },
    Invalid { file: PathBuf, problems: Vec<Problem> },
}

/// One refused key: where, and why (with what to do, where that is not obvious).
#[derive(Debug, Clone, PartialEq)]
pub struct Problem {
    pub key: String,
    pub reason: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::Read { file, source } => {
                write!(f, "{}: cannot read the configuration: {source}", file.display())
            }
            ConfigError::Parse { file, message } => {
                write!(f, "{}: {}", file.display(), message.trim_end())
            }
            ConfigError::Invalid { file, problems } => {
                let n = problems.len();
                write!(f, "{}: {n} problem{}:", file.display(), if n == 1 { "" } else { "s" })?;
                for p in problems {
                    write!(f, "\n  {}: {}", p.key, p.reason)?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for ConfigError {}

impl Config {
    /// Reads, parses and validates `file`. Relative paths inside it are taken
    /// relative to the file's folder, so a config works wherever it is run from.
    pub fn load(file: &Path) -> Result<Config, ConfigError> {
        let text =
            std::fs::read_to_string(file).map_err(|source| ConfigError::Read { file: file.to_owned(), source })?;
        let base = file.parent().unwrap_or(Path::new("."));
        Config::parse(&text, file, base)
    }

    /// Parses and validates `text`; `file` is only used to name it in errors.
    pub fn parse(text: &str, file: &Path, base: &Path) -> Result<Config, ConfigError> {
        let mut cfg: Config = toml::from_str(text).map_err(|e| {
            // toml quotes the line but not the key, which for `[[cameras]]` is ambiguous.
            let key = e.span().and_then(|at| key_at(text, at.start));
            let message = key.map_or_else(|| e.to_string(), |k| format!("{k}: {e}"));
            ConfigError::Parse { file: file.to_owned(), message: crate::redact::userinfo(&message) }
        })?;
        cfg.resolve_paths(base);
        for cam in &mut cfg.cameras {
            cam.snapshot = cfg.snapshot.clone();
        }
        let problems = cfg.problems();
        if problems.is_empty() { Ok(cfg) } else { Err(ConfigError::Invalid { file: file.to_owned(), problems }) }
    }

    fn resolve_paths(&mut self, base: &Path) {
        let fix = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        self.detector.model.as_mut().map(fix);
        self.detector.labels.as_mut().map(fix);
        self.detector.onnxruntime.as_mut().map(fix);
        self.mqtt.password_file.as_mut().map(fix);
        if let Some(tls) = &mut self.mqtt.tls {
            tls.ca_file.as_mut().map(fix);
            tls.cert_file.as_mut().map(fix);
            tls.key_file.as_mut().map(fix);
        }
        fix(&mut self.storage.dir);
        self.control.socket.as_mut().map(fix);
    }

    /// How many model sessions the daemon runs (see `DetectorConfig::sessions`).
    pub fn detector_sessions(&self) -> usize {
        self.detector.sessions.unwrap_or_else(|| {
            let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
            let cameras = self.cameras.iter().filter(|c| c.enabled).count();
            (cores / self.detector.threads.max(1)).clamp(1, cameras.max(1))
        })
    }

    /// The model the detector will load: `detector.model`, or the built-in one.
    pub fn model_source(&self) -> ModelSource {
        self.detector.model.clone().map_or(ModelSource::Builtin, ModelSource::File)
    }

    /// The label list the detector will use (the file's, or the built-in one).
    pub fn labels(&self) -> Result<Labels, String> {
        match &self.detector.labels {
            Some(p) => Labels::from_file(p).map_err(|e| e.to_string()),
            None => Ok(Labels::builtin()),
        }
    }

    pub fn client_id(&self) -> String {
        self.mqtt.client_id.clone().unwrap_or_else(|| format!("gridwatch-{}", self.site))
    }

    /// The password from `password_file`, or from systemd's credential `mqtt-password`.
    pub fn mqtt_password(&self) -> Result<Option<String>, String> {
        let path = match &self.mqtt.password_file {
            Some(p) => p.clone(),
            None => match std::env::var_os("CREDENTIALS_DIRECTORY") {
                Some(dir) if Path::new(&dir).join("mqtt-password").exists() => Path::new(&dir).join("mqtt-password"),
                _ => return Ok(None),
            },
        };
        let text = std::fs::read_to_string(&path)
            .map_err(|e| format!("mqtt.password_file: cannot read {}: {e}", path.display()))?;
        Ok(Some(text.lines().next().unwrap_or("").to_owned()))
    }

    /// Every problem at once, so a technician fixes the file in one pass.
    fn problems(&self) -> Vec<Problem> {
        let mut out = Vec::new();
        let mut bad = |key: String, reason: String| out.push(Problem { key, reason });

        if let Err(r) = check_id(&self.site) {
            bad("site".into(), r);
        }
        if self.mqtt.host.trim().is_empty() {
            bad("mqtt.host".into(), "is empty; give the broker's host name or IP address".into());
        }
        if self.mqtt.port == 0 {
            bad("mqtt.port".into(), "0 is not a port; the usual MQTT port is 1883 (8883 with TLS)".into());
        }
        if let Err(r) = check_id(&self.mqtt.topic_root) {
            bad("mqtt.topic_root".into(), r);
        }
        if let Some(p) = &self.mqtt.password_file {
            if !p.is_file() {
                bad("mqtt.password_file".into(), format!("{} does not exist or is not a file", p.display()));
            }
            if self.mqtt.username.is_none() {
                bad("mqtt.password_file".into(), "is set but mqtt.username is not; set both or neither".into());
            }
        }
        if let Some(tls) = &self.mqtt.tls {
            for (key, file) in [("ca_file", &tls.ca_file), ("cert_file", &tls.cert_file), ("key_file", &tls.key_file)] {
                if let Some(f) = file
                    && !f.is_file()
                {
                    bad(format!("mqtt.tls.{key}"), format!("{} does not exist or is not a file", f.display()));
                }
            }
            if tls.cert_file.is_some() != tls.key_file.is_some() {
                bad("mqtt.tls".into(), "cert_file and key_file go together: set both or neither".into());
            } else if [&tls.ca_file, &tls.cert_file, &tls.key_file]
                .iter()
                .all(|f| f.as_ref().is_none_or(|f| f.is_file()))
                && let Err((key, reason)) = crate::tls::client_config(tls)
            {
                bad(key, reason);
            }
        }
        if self.storage.max_bytes < MIN_STORAGE_BYTES {
            bad(
                "storage.max_bytes".into(),
                format!(
                    "{} bytes is too small to hold events with pictures; give at least {MIN_STORAGE_BYTES}",
                    self.storage.max_bytes
                ),
            );
        }
        if !(1..=600).contains(&self.mqtt.keep_alive_s) {
            bad("mqtt.keep_alive_s".into(), format!("{} is outside 1..=600 seconds", self.mqtt.keep_alive_s));
        }

        let d = &self.detector;
        if let Some(m) = &d.model
            && !m.is_file()
        {
            bad(
                "detector.model".into(),
                format!(
                    "{} does not exist; give the path of an ONNX model, or remove the key to use the built-in YOLOX-Nano",
                    m.display()
                ),
            );
        }
        if let Some(p) = &d.onnxruntime
            && !p.is_file()
        {
            bad(
                "detector.onnxruntime".into(),
                format!("{} does not exist; run scripts/setup.sh or remove the key", p.display()),
            );
        }
        if !(1..=64).contains(&d.threads) {
            bad("detector.threads".into(), format!("{} is outside 1..=64", d.threads));
        }
        if let Some(n) = d.sessions
            && !(1..=16).contains(&n)
        {
            bad("detector.sessions".into(), format!("{n} is outside 1..=16"));
        }
        if !(0.0..1.0).contains(&d.min_score) {
            bad("detector.min_score".into(), format!("{} is outside 0..1", d.min_score));
        }
        if !(0.0..=1.0).contains(&d.nms_iou) {
            bad("detector.nms_iou".into(), format!("{} is outside 0..1", d.nms_iou));
        }
        let labels = match self.labels() {
            Ok(l) => Some(l),
            Err(e) => {
                bad("detector.labels".into(), e);
                None
            }
        };

        if self.storage.dir.exists() && !self.storage.dir.is_dir() {
            bad("storage.dir".into(), format!("{} exists but is not a folder", self.storage.dir.display()));
        }
        if !(1..=100).contains(&self.snapshot.quality) {
            bad("snapshot.quality".into(), format!("{} is outside 1..=100", self.snapshot.quality));
        }
        if self.snapshot.max_bytes < 10_000 {
            bad(
                "snapshot.max_bytes".into(),
                format!(
                    "{} is too small for a useful picture; give at least 10000 (default 150000)",
                    self.snapshot.max_bytes
                ),
            );
        }

        if self.cameras.is_empty() {
            bad("cameras".into(), "no [[cameras]] are configured; add at least one with id and url".into());
        }
        let mut seen = HashSet::new();
        for (i, cam) in self.cameras.iter().enumerate() {
            let key = |k: &str| format!("cameras[{i}].{k}");
            if let Err(r) = check_id(&cam.id) {
                bad(key("id"), r);
            } else if !seen.insert(cam.id.as_str()) {
                bad(key("id"), format!("\"{}\" is used by an earlier camera; each camera needs its own id", cam.id));
            }
            if let Err(r) = check_camera_url(&cam.url) {
                bad(key("url"), r);
            }
            if !(cam.detect_fps > 0.0 && cam.detect_fps <= 30.0) {
                bad(
                    key("detect_fps"),
                    format!("{} is outside (0, 30] frames a second; 5 is a good start", cam.detect_fps),
                );
            }
            if !(2..=600).contains(&cam.stall_timeout_s) {
                bad(key("stall_timeout_s"), format!("{} is outside 2..=600 seconds", cam.stall_timeout_s));
            }
            if cam.track.is_empty() {
                bad(key("track"), "is empty; list the labels that should make events, e.g. [\"person\"]".into());
            }
            if let Some(labels) = &labels {
                for l in &cam.track {
                    if labels.id(l).is_none() {
                        bad(
                            key("track"),
                            format!("\"{l}\" is not a label the model knows (e.g. person, car, truck, bicycle)"),
                        );
                    }
                }
            }
            if !(64..=3840).contains(&cam.analysis_width) {
                bad(key("analysis_width"), format!("{} is outside 64..=3840 pixels", cam.analysis_width));
            }
            for (k, reason) in camera_rule_problems(cam, labels.as_ref()) {
                bad(key(&k), reason);
            }
        }
        self.control_and_metrics_problems(&mut bad);
        out
    }
}

/// Problems in a camera's motion, filters, zones, rules and masks, as (key under the
/// camera, reason).
fn camera_rule_problems(cam: &CameraConfig, labels: Option<&Labels>) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut bad = |k: String, r: String| out.push((k, r));
    let check_labels = |k: &str, list: &[String], bad: &mut dyn FnMut(String, String)| {
        if list.is_empty() {
            bad(k.into(), "is empty; list at least one label".into());
        }
        for l in list.iter().filter(|l| labels.is_some_and(|ls| ls.id(l).is_none())) {
            bad(k.into(), format!("\"{l}\" is not a label the model knows (e.g. person, car, truck, backpack)"));
        }
    };
    let secs = |k: &str, v: f64, bad: &mut dyn FnMut(String, String)| {
        if !(v.is_finite() && (0.0..=86_400.0).contains(&v)) {
            bad(k.into(), format!("{v} is outside 0..=86400 seconds"));
        }
    };
    let m = &cam.motion;
    if m.threshold == 0 {
        bad("motion.threshold".into(), "0 counts sensor noise as motion; 20 is a good start".into());
    }
    if !(0.0..0.5).contains(&m.min_area) {
        bad("motion.min_area".into(), format!("{} is outside 0..0.5 of the frame", m.min_area));
    }
    if !(m.recheck_s > 0.0 && m.recheck_s <= 60.0) {
        bad("motion.recheck_s".into(), format!("{} is outside (0, 60] seconds", m.recheck_s));
    }
    for (label, f) in &cam.filters {
        let k = |s: &str| format!("filters.{label}.{s}");
        if labels.is_some_and(|ls| ls.id(label).is_none()) {
            bad(format!("filters.{label}"), format!("\"{label}\" is not a label the model knows"));
        }
        for (name, v) in [("min_score", f.min_score.unwrap_or(0.5)), ("confirm_score", f.confirm_score)] {
            if !(0.0..=1.0).contains(&v) {
                bad(k(name), format!("{v} is outside 0..1"));
            }
        }
        if !(0.0..=1.0).contains(&f.min_area) || !(0.0..=1.0).contains(&f.max_area) || f.min_area > f.max_area {
            bad(
                k("min_area"),
                format!("min_area {} and max_area {} must satisfy 0 <= min <= max <= 1", f.min_area, f.max_area),
            );
        }
        if f.min_ratio < 0.0 || f.min_ratio > f.max_ratio {
            bad(
                k("min_ratio"),
                format!("min_ratio {} and max_ratio {} must satisfy 0 <= min <= max", f.min_ratio, f.max_ratio),
            );
        }
        for (i, p) in f.masks.iter().enumerate() {
            if let Err(r) = check_polygon(p) {
                bad(k(&format!("masks[{i}]")), r);
            }
        }
    }
    for (i, p) in cam.privacy_masks.iter().enumerate() {
        if let Err(r) = check_polygon(&p.points) {
            bad(format!("privacy_masks[{i}].points"), r);
        }
    }
    let mut names = HashSet::new();
    for (i, z) in cam.zones.iter().enumerate() {
        let k = |s: &str| format!("zones[{i}].{s}");
        if let Err(r) = check_id(&z.name) {
            bad(k("name"), r);
        } else if !names.insert(z.name.as_str()) {
            bad(k("name"), format!("\"{}\" is used by an earlier zone of this camera", z.name));
        }
        if let Err(r) = check_polygon(&z.points) {
            bad(k("points"), r);
        }
        if !(1..=50).contains(&z.inertia) {
            bad(k("inertia"), format!("{} is outside 1..=50 frames", z.inertia));
        }
        if let Some(r) = &z.intrusion {
            check_labels(&k("intrusion.labels"), &r.labels, &mut bad);
            if let Some(s) = &r.schedule
                && let Err(e) = crate::rules::Schedule::parse(s)
            {
                bad(k("intrusion.schedule"), e);
            }
        }
        if let Some(r) = &z.loitering {
            check_labels(&k("loitering.labels"), &r.labels, &mut bad);
            secs(&k("loitering.seconds"), r.seconds, &mut bad);
        }
        if let Some(r) = &z.crowd {
            check_labels(&k("crowd.labels"), &r.labels, &mut bad);
            secs(&k("crowd.seconds"), r.seconds, &mut bad);
            if r.count < 2 {
                bad(k("crowd.count"), format!("{} is not a crowd; give 2 or more", r.count));
            }
        }
        if let Some(r) = &z.occupation {
            check_labels(&k("occupation.labels"), &r.labels, &mut bad);
            secs(&k("occupation.seconds"), r.seconds, &mut bad);
        }
        if let Some(r) = &z.abandoned {
            check_labels(&k("abandoned.labels"), &r.labels, &mut bad);
            secs(&k("abandoned.seconds"), r.seconds, &mut bad);
        }
    }
    if let Some(t) = &cam.tamper {
        secs("tamper.seconds", t.seconds, &mut bad);
    }
    if let Some(o) = &cam.camera_offline
        && !(1.0..=86_400.0).contains(&o.seconds)
    {
        bad("camera_offline.seconds".into(), format!("{} is outside 1..=86400 seconds", o.seconds));
    }
    out
}

/// A polygon needs 3 or more corners, each within the frame (0..1).
fn check_polygon(p: &Points) -> Result<(), String> {
    if p.len() < 3 {
        return Err(format!("has {} point(s); a polygon needs at least 3 [x, y] pairs", p.len()));
    }
    if let Some((j, [x, y])) =
        p.iter().enumerate().find(|(_, [x, y])| !(0.0..=1.0).contains(x) || !(0.0..=1.0).contains(y))
    {
        return Err(format!(
            "point {j} [{x}, {y}] is outside the frame; coordinates are fractions 0..1 of width and height"
        ));
    }
    Ok(())
}

/// Site, camera and zone ids become MQTT topic levels: `[a-z0-9][a-z0-9_-]{0,62}`.
pub fn check_id(id: &str) -> Result<(), String> {
    let ok = !id.is_empty()
        && id.len() <= 63
        && id
            .bytes()
            .enumerate()
            .all(|(i, b)| b.is_ascii_lowercase() || b.is_ascii_digit() || (i > 0 && (b == b'_' || b == b'-')));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "\"{id}\" is not a valid id: use 1-63 characters a-z, 0-9, '-' or '_', starting with a letter or digit"
        ))
    }
}

/// The full path (`cameras[1].detect_fps`) of the innermost key at byte `at` of `text`,
/// where the key or its value is.
fn key_at(text: &str, at: usize) -> Option<String> {
    use toml::de::{DeTable, DeValue};
    // Every table is searched: a `[table]`'s span covers its header, not its keys.
    fn find(value: &DeValue, at: usize) -> Option<String> {
        match value {
            DeValue::Table(t) => t.iter().find_map(|(k, v)| match find(v.get_ref(), at) {
                Some(sub) if sub.starts_with('[') => Some(format!("{}{sub}", k.get_ref())),
                Some(sub) => Some(format!("{}.{sub}", k.get_ref())),
                None if k.span().contains(&at) || v.span().contains(&at) => Some(k.get_ref().to_string()),
                None => None,
            }),
            DeValue::Array(a) => a.iter().enumerate().find_map(|(i, v)| match find(v.get_ref(), at) {
                Some(sub) if sub.starts_with('[') => Some(format!("[{i}]{sub}")),
                Some(sub) => Some(format!("[{i}].{sub}")),
                None if v.span().contains(&at) => Some(format!("[{i}]")),
                None => None,
            }),
            _ => None,
        }
    }
    find(&DeValue::Table(DeTable::parse(text).ok()?.into_inner()), at)
}

/// Checks an RTSP URL without ever echoing the password in the message.
fn check_camera_url(raw: &str) -> Result<Url, String> {
    let url = Url::parse(raw).map_err(|e| format!("is not a valid URL ({e}); expected rtsp://host[:port]/path"))?;
    if url.scheme() != "rtsp" {
        return Err(format!("scheme \"{}\" is not supported; use rtsp://", url.scheme()));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err("has no host; expected rtsp://host[:port]/path".into());
    }
    Ok(url)
}

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

impl Config {
    /// The control socket's path: `control.socket`, else `$RUNTIME_DIRECTORY/control.sock`
    /// (systemd's `RuntimeDirectory=`), else `control.sock` in `storage.dir`.
    pub fn control_socket(&self) -> PathBuf {
        if let Some(p) = &self.control.socket {
            return p.clone();
        }
        // RuntimeDirectory= may list several folders, separated by ':'.
        match std::env::var_os("RUNTIME_DIRECTORY") {
            Some(dirs) if !dirs.is_empty() => {
                let first = dirs.to_string_lossy().split(':').next().unwrap_or_default().to_owned();
                PathBuf::from(first).join(CONTROL_SOCKET_NAME)
            }
            _ => self.storage.dir.join(CONTROL_SOCKET_NAME),
        }
    }

    fn control_and_metrics_problems(&self, bad: &mut impl FnMut(String, String)) {
        if self.control.mode & 0o007 != 0 || self.control.mode & !0o777 != 0 {
            bad(
                "control.mode".into(),
                format!(
                    "{:04o} would let other users on this machine control the daemon; use \"0660\" or \"0600\"",
                    self.control.mode
                ),
            );
        }
        if self.metrics.port == Some(0) {
            bad("metrics.port".into(), "0 is not a port; e.g. 9464, or remove the key to turn metrics off".into());
        }
    }
}

/// The socket's file name in its folder.
pub const CONTROL_SOCKET_NAME: &str = "control.sock";

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
site = "grid-07"
[mqtt]
host = "127.0.0.1"
port = 1883
[storage]
dir = "state"
[[cameras]]
id = "east-gate"
url = "rtsp://admin:s3cret@192.0.2.10:554/stream1"
detect_fps = 5
track = ["person", "car"]
"#;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("/etc/gridwatch/test.toml"), Path::new("/etc/gridwatch"))
    }

    fn problems(text: &str) -> Vec<Problem> {
        match parse(text) {
            Err(ConfigError::Invalid { problems, .. }) => problems,
            other => panic!("expected validation problems, got {other:?}"),
        }
    }

    #[test]
    fn good_config_loads_with_defaults_and_resolved_paths() {
        let cfg = parse(GOOD).unwrap();
        assert_eq!(cfg.site, "grid-07");
        assert_eq!(cfg.storage.dir, PathBuf::from("/etc/gridwatch/state"));
        assert_eq!(cfg.mqtt.topic_root, "gridwatch");
        assert_eq!(cfg.client_id(), "gridwatch-grid-07");
        assert_eq!(cfg.cameras[0].track, vec!["person", "car"]);
        assert_eq!(cfg.cameras[0].display_name(), "east-gate");
        assert_eq!(cfg.detector.threads, 1);
    }

    #[test]
    fn model_source_is_the_file_or_the_builtin() {
        let mut cfg = parse(GOOD).unwrap();
        assert_eq!(cfg.model_source(), ModelSource::Builtin);
        cfg.detector.model = Some(PathBuf::from("/opt/m.onnx"));
        assert_eq!(cfg.model_source(), ModelSource::File(PathBuf::from("/opt/m.onnx")));
    }

    #[test]
    fn unknown_key_is_named() {
        let text = GOOD.replace("port = 1883", "port = 1883\nhots = \"x\"");
        let err = parse(&text).unwrap_err().to_string();
        assert!(err.starts_with("/etc/gridwatch/test.toml: mqtt.hots: "), "{err}");
        assert!(err.contains("unknown field `hots`"), "{err}");
    }

    #[test]
    fn wrong_type_is_named_with_its_key_and_line() {
        let text = GOOD.replace("detect_fps = 5", "detect_fps = \"fast\"");
        let err = parse(&text).unwrap_err().to_string();
        assert!(err.contains("/etc/gridwatch/test.toml: cameras[0].detect_fps: "), "{err}");
        assert!(err.contains("line 11"), "{err}");

        let err = parse(&GOOD.replace("port = 1883", "port = 99999")).unwrap_err().to_string();
        assert!(err.contains("mqtt.port: "), "{err}");
        assert!(err.contains("99999"), "{err}");
        let err = parse(&GOOD.replace("track = [\"person\", \"car\"]", "track = [\"person\", 3]")).unwrap_err();
        assert!(err.to_string().contains("cameras[0].track[1]: "), "{err}");
    }

    #[test]
    fn duplicate_camera_ids_and_bad_values_are_all_reported() {
        let text = format!(
            "{GOOD}\n[[cameras]]\nid = \"east-gate\"\nurl = \"http://x/y\"\ndetect_fps = 0\ntrack = [\"unicorn\"]\n"
        );
        let p = problems(&text);
        let keys: Vec<&str> = p.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(keys, ["cameras[1].id", "cameras[1].url", "cameras[1].detect_fps", "cameras[1].track"], "{p:?}");
        assert!(p[0].reason.contains("used by an earlier camera"));
        assert!(p[3].reason.contains("unicorn"));
    }

    #[test]
    fn missing_model_file_is_refused_with_the_path() {
        let text = GOOD.replace("[storage]", "[detector]\nmodel = \"models/nope.onnx\"\n[storage]");
        let p = problems(&text);
        assert_eq!(p.len(), 1, "{p:?}");
        assert_eq!(p[0].key, "detector.model");
        assert!(p[0].reason.contains("/etc/gridwatch/models/nope.onnx"), "{}", p[0].reason);
    }

    #[test]
    fn bad_ids_are_refused() {
        assert!(check_id("grid-07").is_ok());
        assert!(check_id("a").is_ok());
        for bad in ["", "Grid", "-x", "a b", "a/b", "a+b", &"x".repeat(64)] {
            assert!(check_id(bad).is_err(), "{bad:?} should be refused");
        }
        let p = problems(&GOOD.replace("grid-07", "Grid 7"));
        assert_eq!(p[0].key, "site");
    }

    #[test]
    fn url_errors_never_echo_the_password() {
        let text = GOOD.replace("rtsp://admin:s3cret@192.0.2.10:554/stream1", "rtsps://admin:s3cret@/x");
        let err = parse(&text).unwrap_err().to_string();
        assert!(err.contains("cameras[0].url"), "{err}");
        assert!(!err.contains("s3cret"), "{err}");
    }

    #[test]
    fn parse_errors_never_echo_the_password() {
        let broken = GOOD.replace("stream1\"", "stream1");
        let err = parse(&broken).unwrap_err().to_string();
        assert!(!err.contains("s3cret"), "{err}");
    }

    #[test]
    fn regions_default_to_auto_and_a_wrong_mode_is_named() {
        assert_eq!(parse(GOOD).unwrap().cameras[0].regions, RegionsMode::Auto);
        let off = parse(&GOOD.replace("detect_fps = 5", "detect_fps = 5\nregions = \"off\"")).unwrap();
        assert_eq!(off.cameras[0].regions, RegionsMode::Off);
        let err = parse(&GOOD.replace("detect_fps = 5", "detect_fps = 5\nregions = \"on\"")).unwrap_err().to_string();
        assert!(err.contains("cameras[0].regions: "), "{err}");
        assert!(err.contains("`auto`") && err.contains("`off`"), "{err}");
    }

    const RULES: &str = r#"
[cameras.motion]
recheck_s = 2
[cameras.filters.person]
min_score = 0.6
masks = [[[0.0, 0.0], [0.2, 0.0], [0.2, 0.2]]]
[[cameras.privacy_masks]]
points = [[0.0, 0.8], [0.3, 0.8], [0.3, 1.0]]
[cameras.tamper]
[cameras.camera_offline]
seconds = 60
[[cameras.zones]]
name = "fire-lane"
points = [[0.1, 0.5], [0.9, 0.5], [0.9, 0.9], [0.1, 0.9]]
[cameras.zones.intrusion]
schedule = "22:00-06:00"
[cameras.zones.occupation]
seconds = 600
[cameras.zones.crowd]
count = 8
seconds = 30
"#;

    #[test]
    fn rules_load_with_defaults() {
        let cfg = parse(&format!("{GOOD}{RULES}")).unwrap();
        let cam = &cfg.cameras[0];
        assert_eq!(cam.zones[0].name, "fire-lane");
        assert_eq!(cam.zones[0].inertia, 3);
        assert_eq!(cam.zones[0].intrusion.as_ref().unwrap().labels, ["person"]);
        assert!(cam.zones[0].occupation.as_ref().unwrap().labels.contains(&"truck".to_string()));
        assert_eq!(cam.tamper.as_ref().unwrap().seconds, 10.0);
        assert_eq!(cam.filter("person").min_score, Some(0.6));
        assert_eq!(cam.filter("car").confirm_score, 0.6);
        assert_eq!(cam.snapshot.max_bytes, 150_000, "[snapshot] reaches every camera");
        let tracked = cam.tracked_labels();
        assert!(
            tracked.starts_with(&["person".to_string(), "car".to_string()]) && tracked.contains(&"bus".to_string())
        );
    }

    #[test]
    fn rule_problems_name_the_key_path() {
        let text = format!("{GOOD}{RULES}")
            .replace("[[0.1, 0.5], [0.9, 0.5], [0.9, 0.9], [0.1, 0.9]]", "[[0.1, 0.5], [1.2, 0.5], [0.9, 0.9]]")
            .replace("[[0.0, 0.8], [0.3, 0.8], [0.3, 1.0]]", "[[0.0, 0.8], [0.3, 0.8]]")
            .replace("22:00-06:00", "22h-6h")
            .replace("count = 8", "count = 1")
            .replace("[cameras.zones.occupation]", "[cameras.zones.occupation]\nlabels = [\"tank\"]");
        let p = problems(&text);
        let keys: Vec<&str> = p.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "cameras[0].privacy_masks[0].points",
                "cameras[0].zones[0].points",
                "cameras[0].zones[0].intrusion.schedule",
                "cameras[0].zones[0].crowd.count",
                "cameras[0].zones[0].occupation.labels",
            ],
            "{p:?}"
        );
        assert!(p[0].reason.contains("at least 3"), "{}", p[0].reason);
        assert!(p[1].reason.contains("[1.2, 0.5]") && p[1].reason.contains("0..1"), "{}", p[1].reason);
        assert!(p[2].reason.contains("HH:MM-HH:MM"), "{}", p[2].reason);
        assert!(p[4].reason.contains("\"tank\""), "{}", p[4].reason);
        let dup = format!("{GOOD}{RULES}[[cameras.zones]]\nname = \"fire-lane\"\npoints = [[0, 0], [1, 0], [1, 1]]\n");
        assert_eq!(problems(&dup)[0].key, "cameras[0].zones[1].name");
        let unknown = parse(&format!("{GOOD}{RULES}").replace("count = 8", "count = 8\npeople = 3")).unwrap_err();
        assert!(unknown.to_string().contains("cameras[0].zones[0].crowd.people"), "{unknown}");
    }

    #[test]
    fn control_socket_mode_is_octal_and_never_world_accessible() {
        let cfg = parse(&format!("{GOOD}\n[control]\nmode = \"0600\"\n")).unwrap();
        assert_eq!(cfg.control.mode, 0o600);
        let cfg = parse(&format!("{GOOD}\n[control]\nmode = 0o640\n")).unwrap();
        assert_eq!(cfg.control.mode, 0o640);
        assert_eq!(parse(GOOD).unwrap().control.mode, 0o660);
        let p = problems(&format!("{GOOD}\n[control]\nmode = \"0666\"\n"));
        assert_eq!(p[0].key, "control.mode");
        let err = parse(&format!("{GOOD}\n[control]\nmode = \"rw\"\n")).unwrap_err().to_string();
        assert!(err.contains("control.mode") && err.contains("octal"), "{err}");
    }

    #[test]
    fn control_socket_defaults_to_the_storage_folder_or_a_given_path() {
        let cfg = parse(&format!("{GOOD}\n[control]\nsocket = \"run/c.sock\"\n")).unwrap();
        assert_eq!(cfg.control_socket(), PathBuf::from("/etc/gridwatch/run/c.sock"));
        if std::env::var_os("RUNTIME_DIRECTORY").is_none() {
            assert_eq!(parse(GOOD).unwrap().control_socket(), PathBuf::from("/etc/gridwatch/state/control.sock"));
        }
    }

    #[test]
    fn no_cameras_is_a_problem() {
        let text = GOOD.split("[[cameras]]").next().unwrap();
        let p = problems(text);
        assert_eq!(p[0].key, "cameras");
    }
}
