//! The daemon's configuration, one file per section, each validating itself: parsed
//! once into the values the stages use (a camera's URL, a rule's schedule, the TLS
//! client configuration), so nothing downstream parses again or falls back quietly.
//!
//! Promises: `Config::load` either returns a configuration every later stage can use
//! as is (paths resolved against the file's folder, labels known, ids valid and unique,
//! every number finite and within what makes sense) or an error that names the file,
//! each offending key and what to do about it. Errors never quote the file's text, so
//! a password in it never reaches a terminal or a log. Nothing here touches the
//! network or the cameras.

mod camera;
mod clips;
mod detector;
mod lines;
mod local;
mod mqtt;
mod notices;
mod parsed;
mod rules;
mod schedule;
mod storage;
mod tls;

use std::collections::HashSet;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use camera::{CameraConfig, CameraUrl, FilterConfig, MaskConfig, MotionConfig, Points, RegionsMode};
pub use clips::ClipsConfig;
pub use detector::DetectorConfig;
pub use lines::{AlertDirection, LineAlert, LineConfig, Side, StatsConfig};
pub use local::{CONTROL_SOCKET_NAME, ControlConfig, MetricsConfig};
pub use mqtt::{MqttConfig, TlsConfig};
pub use notices::{NoticesConfig, Player};
pub use parsed::Parsed;
pub use rules::{
    AbandonedRule, CrowdRule, InactivityRule, IntrusionRule, LoiteringRule, OccupationRule, OfflineRule,
    PersonDownRule, TamperRule, ZoneConfig,
};
pub use schedule::{Schedule, local_minute};
pub use storage::{SnapshotConfig, StorageConfig};

use crate::device::analysis::detect::{DetectError, Labels, ModelSource};

/// Cameras one daemon runs at most: each takes threads and a decoder's memory.
const MAX_CAMERAS: usize = 32;

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
    #[serde(default)]
    pub notices: NoticesConfig,
    /// How often each camera's counts go out (`[stats]`, contract 1.1).
    #[serde(default)]
    pub stats: StatsConfig,
}

fn default_true() -> bool {
    true
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
        let parse_error = |message: String| ConfigError::Parse { file: file.to_owned(), message };
        let non_finite = non_finite_numbers(text);
        if !non_finite.is_empty() {
            let problems = non_finite
                .into_iter()
                .map(|key| Problem { key, reason: "is not a finite number (nan and inf are refused)".into() })
                .collect();
            return Err(ConfigError::Invalid { file: file.to_owned(), problems });
        }
        let mut cfg: Config = toml::from_str(text).map_err(|e| {
            // toml's own text quotes the line, which may hold a password: say where instead.
            let at = e.span().map(|s| s.start);
            let key = at.and_then(|at| key_at(text, at));
            let line = at.map(|at| text[..at.min(text.len())].matches('\n').count() + 1);
            let key = key.map(|k| format!("{k}: ")).unwrap_or_default();
            let line = line.map(|l| format!(" (line {l})")).unwrap_or_default();
            parse_error(format!("{key}{}{line}", e.message()))
        })?;
        cfg.resolve_paths(base);
        for cam in &mut cfg.cameras {
            cam.snapshot = cfg.snapshot.clone();
            cam.stats = cfg.stats.clone();
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
        self.detector.resolve_paths(&fix);
        self.mqtt.resolve_paths(&fix);
        fix(&mut self.storage.dir);
        self.control.socket.as_mut().map(fix);
    }

    /// How many model sessions the daemon runs (see `DetectorConfig::sessions`).
    /// `inference_ms`: one model run, as measured on this machine at start.
    pub fn detector_sessions(&self, inference_ms: f64) -> usize {
        let enabled = self.cameras.iter().filter(|c| c.enabled);
        let pictures_per_s: f64 = enabled.clone().map(|c| c.detect_fps).sum();
        self.detector.sessions_for(enabled.count(), pictures_per_s, inference_ms)
    }

    /// The model the detector will load: `detector.model`, or the built-in one.
    pub fn model_source(&self) -> ModelSource {
        self.detector.model_source()
    }

    /// The label list the detector will use (the file's, or the built-in one).
    pub fn labels(&self) -> Result<Labels, DetectError> {
        self.detector.labels()
    }

    pub fn client_id(&self) -> String {
        self.mqtt.client_id(&self.site)
    }

    /// The password from `password_file`, or from systemd's credential `mqtt-password`.
    pub fn mqtt_password(&self) -> Result<Option<String>, crate::contract::Invalid> {
        self.mqtt.password()
    }

    /// The control socket's path (see `ControlConfig::socket_path`).
    pub fn control_socket(&self) -> PathBuf {
        self.control.socket_path(&self.storage.dir)
    }

    /// Every problem at once, so a technician fixes the file in one pass.
    fn problems(&mut self) -> Vec<Problem> {
        let mut out = Vec::new();
        let mut bad = |key: String, reason: String| out.push(Problem { key, reason });
        if let Err(r) = crate::contract::check_id(&self.site) {
            bad("site".into(), r.0);
        }
        if self.site == "all" {
            bad("site".into(), "\"all\" is reserved for notices to every grid point; choose another id".into());
        }
        self.mqtt.problems(&mut bad);
        let labels = self.detector.problems(&mut bad);
        self.storage.problems(&mut bad);
        self.snapshot.problems(&mut bad);
        if self.cameras.is_empty() {
            bad("cameras".into(), "no [[cameras]] are configured; add at least one with id and url".into());
        }
        if self.cameras.len() > MAX_CAMERAS {
            bad(
                "cameras".into(),
                format!("{} cameras are configured; one daemon runs at most {MAX_CAMERAS}", self.cameras.len()),
            );
        }
        let mut seen = HashSet::new();
        for (i, cam) in self.cameras.iter().enumerate() {
            if crate::contract::check_id(&cam.id).is_ok() && !seen.insert(cam.id.as_str()) {
                bad(
                    format!("cameras[{i}].id"),
                    format!("\"{}\" is used by an earlier camera; each camera needs its own id", cam.id),
                );
            }
            cam.problems(&format!("cameras[{i}]"), labels.as_ref(), &mut bad);
        }
        self.control.problems(&self.storage.dir, &mut bad);
        self.metrics.problems(&mut bad);
        self.notices.problems(&mut bad);
        self.stats.problems(&mut bad);
        out
    }
}

/// The key paths of every float in `text` that is nan or an infinity (TOML allows
/// them; no setting of ours means them).
fn non_finite_numbers(text: &str) -> Vec<String> {
    fn walk(v: &toml::Value, path: String, out: &mut Vec<String>) {
        match v {
            toml::Value::Float(f) if !f.is_finite() => out.push(path),
            toml::Value::Table(t) => {
                for (k, v) in t {
                    walk(v, if path.is_empty() { k.clone() } else { format!("{path}.{k}") }, out);
                }
            }
            toml::Value::Array(a) => {
                for (i, v) in a.iter().enumerate() {
                    walk(v, format!("{path}[{i}]"), out);
                }
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    if let Ok(v) = text.parse::<toml::Table>() {
        walk(&toml::Value::Table(v), String::new(), &mut out);
    }
    out
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::check_id;

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
        assert_eq!(cfg.model_source(), ModelSource::from_setting(None));
        cfg.detector.model = Some(PathBuf::from("yolox-nano-int8"));
        assert_eq!(
            cfg.model_source(),
            ModelSource::Builtin(crate::device::analysis::detect::BuiltinModel::YoloxNanoInt8)
        );
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

    #[test]
    fn nan_and_infinities_are_refused_wherever_toml_allows_them() {
        for (extra, key) in [
            ("\n[cameras.filters.person]\nmin_ratio = nan\n", "cameras[0].filters.person.min_ratio"),
            ("\n[cameras.motion]\nrecheck_s = inf\n", "cameras[0].motion.recheck_s"),
            ("\n[detector]\nmin_score = -inf\n", "detector.min_score"),
        ] {
            let text = if extra.contains("detector") { format!("{extra}{GOOD}") } else { format!("{GOOD}{extra}") };
            let p = problems(&text);
            assert!(p.iter().any(|p| p.key == key && p.reason.contains("finite")), "{extra}: {p:?}");
        }
    }

    #[test]
    fn numbers_run_cannot_use_are_refused() {
        let p = problems(&GOOD.replace("detect_fps = 5", "detect_fps = 1e-19"));
        assert_eq!(p[0].key, "cameras[0].detect_fps", "{p:?}");
        let p = problems(&GOOD.replace("port = 1883", &format!("port = 1883\nclient_id = \"{}\"", "c".repeat(300))));
        assert_eq!(p[0].key, "mqtt.client_id", "{p:?}");
        let many: String = (0..40).map(|i| format!("[[cameras]]\nid = \"c{i}\"\nurl = \"rtsp://h/{i}\"\n")).collect();
        let p = problems(&format!("{}{many}", GOOD.split("[[cameras]]").next().unwrap()));
        assert!(p.iter().any(|p| p.key == "cameras" && p.reason.contains("at most")), "{p:?}");
    }

    #[test]
    fn a_storage_dir_under_a_file_is_refused() {
        let dir = std::env::temp_dir().join(format!("gridwatch-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("plain-file");
        std::fs::write(&file, "x").unwrap();
        let text = GOOD.replace("dir = \"state\"", &format!("dir = \"{}/state\"", file.display()));
        let p = problems(&text);
        assert!(p.iter().any(|p| p.key == "storage.dir" && p.reason.contains("is a file")), "{p:?}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_control_socket_path_holding_something_else_is_refused_and_left_alone() {
        let dir = std::env::temp_dir().join(format!("gridwatch-cfg-sock-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("notes.txt");
        std::fs::write(&file, "keep me").unwrap();
        let p = problems(&format!("{GOOD}\n[control]\nsocket = \"{}\"\n", file.display()));
        assert!(p.iter().any(|p| p.key == "control.socket" && p.reason.contains("not a socket")), "{p:?}");
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "keep me");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_bad_schedule_is_refused_at_load_and_a_good_one_kept_parsed() {
        let zone = "\n[[cameras.zones]]\nname = \"z\"\npoints = [[0, 0], [1, 0], [1, 1]]\n[cameras.zones.intrusion]\n";
        let err = parse(&format!("{GOOD}{zone}schedule = \"25:00-06:00\"\n")).unwrap_err().to_string();
        assert!(err.contains("cameras[0].zones[0].intrusion.schedule") && err.contains("HH:MM"), "{err}");
        let cfg = parse(&format!("{GOOD}{zone}schedule = \"22:00-06:00\"\n")).unwrap();
        let s = cfg.cameras[0].zones[0].intrusion.as_ref().unwrap().schedule.as_ref().unwrap();
        assert_eq!(*s.get(), Schedule::parse("22:00-06:00").unwrap());
    }

    #[test]
    fn parse_errors_name_the_line_but_never_quote_it() {
        let text = GOOD.replace("detect_fps = 5", "detect_fps = \"fast\"");
        let err = parse(&text).unwrap_err().to_string();
        assert!(err.contains("cameras[0].detect_fps") && err.contains("line 11"), "{err}");
        assert!(!err.contains("s3cret"), "{err}");
    }

    #[test]
    fn size_caps_are_keys_with_bounds() {
        let cam = &parse(GOOD).unwrap().cameras[0];
        assert_eq!(cam.limits(), crate::device::ingest::Limits::default());
        let set =
            GOOD.replace("detect_fps = 5", "detect_fps = 5\nmax_frame_bytes = 1048576\nmax_picture_pixels = 2073600");
        let limits = parse(&set).unwrap().cameras[0].limits();
        assert_eq!((limits.access_unit_bytes, limits.picture_pixels), (1 << 20, 1920 * 1080));
        let p = problems(&GOOD.replace("detect_fps = 5", "detect_fps = 5\nmax_message_bytes = 10"));
        assert!(p.iter().any(|p| p.key == "cameras[0].max_message_bytes" && p.reason.contains("16384..=")), "{p:?}");
    }

    /// TOML's spelling of `v`, special values included.
    fn toml_float(v: f64) -> String {
        match v {
            v if v.is_nan() => "nan".into(),
            v if v.is_infinite() => if v > 0.0 { "inf" } else { "-inf" }.into(),
            v => format!("{v:e}"),
        }
    }

    /// Whatever number a careless hand puts in a float key, loading never panics, and
    /// what loads is finite: a value either passes its key's bounds or that key is named.
    #[test]
    fn any_number_in_any_float_key_is_named_or_kept_finite() {
        use proptest::prelude::*;
        // (text added after the camera, or "" to set detect_fps in place; the key named)
        let keys = [
            ("", &["cameras[0].detect_fps"][..]),
            ("[cameras.motion]\nmin_area = {}", &["cameras[0].motion.min_area"]),
            ("[cameras.motion]\nrecheck_s = {}", &["cameras[0].motion.recheck_s"]),
            ("[cameras.filters.person]\nmin_ratio = {}", &["cameras[0].filters.person.min_ratio"]),
            // Out of bounds, the pair is named by its first key; not finite, by its own.
            (
                "[cameras.filters.person]\nmax_area = {}",
                &["cameras[0].filters.person.min_area", "cameras[0].filters.person.max_area"],
            ),
        ];
        let value = prop_oneof![any::<f64>(), -10.0..100.0f64, Just(f64::NAN), Just(f64::INFINITY), Just(0.0)];
        proptest!(|(v in value, k in 0..keys.len())| {
            let (extra, named) = keys[k];
            let text = match extra {
                "" => GOOD.replace("detect_fps = 5", &format!("detect_fps = {}", toml_float(v))),
                extra => format!("{GOOD}{}\n", extra.replace("{}", &toml_float(v))),
            };
            match parse(&text) {
                Ok(cfg) => {
                    let cam = &cfg.cameras[0];
                    let f = cam.filter("person");
                    let loaded = [cam.detect_fps, f64::from(cam.motion.min_area), cam.motion.recheck_s,
                                  f64::from(f.min_ratio), f64::from(f.max_area)];
                    prop_assert!(loaded.iter().all(|x| x.is_finite()), "{text}");
                }
                Err(ConfigError::Invalid { problems, .. }) => {
                    prop_assert!(problems.iter().any(|p| named.contains(&p.key.as_str())), "{v}: {problems:?}");
                }
                Err(e) => prop_assert!(false, "{v}: {e}"),
            }
        });
    }

    /// A camera password of any characters a URL can carry never shows in what `check`
    /// prints or in a configuration error.
    #[test]
    fn any_camera_password_stays_out_of_errors_and_printouts() {
        use proptest::prelude::*;
        let password = "[A-Za-z0-9!$&'()*+,;=._~-]{6,24}|(%[0-9A-F]{2}){3,8}";
        proptest!(|(pw in password)| {
            let text = GOOD.replace("s3cret", &pw);
            let decoded = percent_encoding::percent_decode_str(&pw).decode_utf8_lossy().into_owned();
            let shown = match parse(&text) {
                Ok(cfg) => crate::commands::run::effective(&cfg, false).unwrap()
                    + &crate::commands::run::effective(&cfg, true).unwrap(),
                Err(e) => format!("{e} {e:?}"),
            };
            // A short decoded form ("   ") could be in any text; the encoded one is checked.
            let decoded = if decoded.chars().count() >= 6 { decoded } else { pw.clone() };
            prop_assert!(!shown.contains(&pw) && !shown.contains(&decoded), "{pw} in {shown}");
            let broken = parse(&text.replace("detect_fps = 5", "detect_fps = \"x\"")).unwrap_err();
            let said = format!("{broken} {broken:?}");
            prop_assert!(!said.contains(&pw) && !said.contains(&decoded), "{pw} in {said}");
        });
    }
}
