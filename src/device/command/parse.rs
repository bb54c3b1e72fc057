//! Reading what arrives on the command and notice topics, strictly: into a [`Command`]
//! that names only cameras, zones and rules this device has, or a [`Refused`] that
//! says why in words the desk can act on.

use std::time::SystemTime;

use crate::contract::{MAX_COMMAND_BYTES, MAX_NOTICE_CHARS, NOTICE_SCHEMA, NoticeLevel, NoticeMessage, is_token};
use crate::device::config::{Config, ZoneConfig};

/// Why a command or notice changed nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Refused(pub String);

fn refused(why: impl Into<String>) -> Refused {
    Refused(why.into())
}

/// What the desk may name on this device: its site, cameras, and each camera's zone rules.
#[derive(Debug, Clone)]
pub struct Targets {
    pub root: String,
    pub site: String,
    pub cameras: Vec<CameraTargets>,
}

#[derive(Debug, Clone)]
pub struct CameraTargets {
    pub id: String,
    /// (zone, rule kind) of every configured zone rule.
    pub rules: Vec<(String, &'static str)>,
}

/// The rule kinds a zone can have, as topics and events name them.
pub fn zone_rule_kinds(z: &ZoneConfig) -> Vec<&'static str> {
    let has = [
        ("intrusion", z.intrusion.is_some()),
        ("loitering", z.loitering.is_some()),
        ("crowd", z.crowd.is_some()),
        ("occupation", z.occupation.is_some()),
        ("abandoned", z.abandoned.is_some()),
        ("person_down", z.person_down.is_some()),
        ("inactivity", z.inactivity.is_some()),
    ];
    has.into_iter().filter(|(_, on)| *on).map(|(k, _)| k).collect()
}

impl Targets {
    pub fn new(cfg: &Config) -> Targets {
        let cameras = cfg
            .cameras
            .iter()
            .map(|c| CameraTargets {
                id: c.id.clone(),
                rules: c
                    .zones
                    .iter()
                    .flat_map(|z| zone_rule_kinds(z).into_iter().map(|k| (z.name.clone(), k)))
                    .collect(),
            })
            .collect();
        Targets { root: cfg.mqtt.topic_root.clone(), site: cfg.site.clone(), cameras }
    }

    pub fn camera(&self, id: &str) -> Result<&CameraTargets, Refused> {
        self.cameras.iter().find(|c| c.id == id).ok_or_else(|| {
            let known: Vec<&str> = self.cameras.iter().map(|c| c.id.as_str()).collect();
            refused(format!("no camera \"{id}\" on site {} (cameras: {})", self.site, known.join(", ")))
        })
    }

    /// The configured rule `rule` of `zone` on `camera`, as its static kind name.
    pub fn rule(&self, camera: &str, zone: &str, rule: &str) -> Result<&'static str, Refused> {
        let cam = self.camera(camera)?;
        if let Some((_, kind)) = cam.rules.iter().find(|(z, k)| z == zone && *k == rule) {
            return Ok(kind);
        }
        let known: Vec<String> = cam.rules.iter().map(|(z, k)| format!("{z}/{k}")).collect();
        let known = if known.is_empty() { "none".to_owned() } else { known.join(", ") };
        Err(refused(format!("camera {camera} has no rule \"{rule}\" in zone \"{zone}\" (its zone rules: {known})")))
    }
}

/// A command or notice as the device applies it.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    Detect {
        camera: String,
        on: bool,
    },
    Rule {
        camera: String,
        zone: String,
        rule: &'static str,
        on: bool,
    },
    Snapshot {
        camera: String,
        request_id: String,
    },
    Clip {
        event_id: String,
    },
    Notice(Notice),
    /// An empty retained payload on a notices topic: the desk took the notice down.
    NoticeCleared,
}

/// A notice, validated: its id is topic-safe, its text non-empty and short, its expiry a time.
#[derive(Debug, Clone, PartialEq)]
pub struct Notice {
    pub id: String,
    pub level: NoticeLevel,
    pub text: String,
    pub expires_at: SystemTime,
}

/// Reads one message from `topic`; `payload` as it came off the wire.
pub fn parse(targets: &Targets, topic: &str, payload: &[u8]) -> Result<Command, Refused> {
    let levels: Vec<&str> = topic
        .strip_prefix(targets.root.as_str())
        .and_then(|t| t.strip_prefix('/'))
        .ok_or_else(|| refused(format!("not under the topic root \"{}\"", targets.root)))?
        .split('/')
        .collect();
    let (site, rest) = levels.split_first().ok_or_else(|| refused("no site in the topic"))?;
    if *site != targets.site && !(*site == "all" && rest == ["notices"]) {
        return Err(refused(format!("a topic of site \"{site}\"; this is site {}", targets.site)));
    }
    if payload.len() > MAX_COMMAND_BYTES {
        return Err(refused(format!("{} bytes; a command is at most {MAX_COMMAND_BYTES} bytes", payload.len())));
    }
    let text = std::str::from_utf8(payload).map_err(|_| refused("the payload is not UTF-8 text"))?;
    match rest {
        [camera, "detect", "set"] => {
            targets.camera(camera)?;
            Ok(Command::Detect { camera: (*camera).into(), on: on_off(text)? })
        }
        [camera, "rules", zone, rule, "set"] => {
            let rule = targets.rule(camera, zone, rule)?;
            Ok(Command::Rule { camera: (*camera).into(), zone: (*zone).into(), rule, on: on_off(text)? })
        }
        [camera, "snapshot", "request"] => {
            targets.camera(camera)?;
            let request_id = token_field(text, "request_id")?;
            Ok(Command::Snapshot { camera: (*camera).into(), request_id })
        }
        ["clips", "request"] => Ok(Command::Clip { event_id: token_field(text, "event_id")? }),
        ["notices"] if text.is_empty() => Ok(Command::NoticeCleared),
        ["notices"] => notice(text).map(Command::Notice),
        _ => Err(refused("not a command topic (see docs/mqtt.md, \"Commands\")")),
    }
}

fn on_off(text: &str) -> Result<bool, Refused> {
    match text.trim() {
        "ON" => Ok(true),
        "OFF" => Ok(false),
        _ => Err(refused("the payload must be ON or OFF")),
    }
}

/// `{"<name>": "<token>"}` and nothing else.
fn token_field(text: &str, name: &str) -> Result<String, Refused> {
    let bad = || refused(format!("the payload must be JSON {{\"{name}\": \"...\"}} (1-64 characters A-Z a-z 0-9 _ -)"));
    let v: serde_json::Map<String, serde_json::Value> = serde_json::from_str(text).map_err(|_| bad())?;
    match (v.len(), v.get(name).and_then(|v| v.as_str())) {
        (1, Some(id)) if is_token(id) => Ok(id.to_owned()),
        _ => Err(bad()),
    }
}

fn notice(text: &str) -> Result<Notice, Refused> {
    let m: NoticeMessage = serde_json::from_str(text).map_err(|e| refused(format!("not a notice: {e}")))?;
    if m.schema != NOTICE_SCHEMA {
        return Err(refused(format!("schema \"{}\" is not {NOTICE_SCHEMA}", m.schema)));
    }
    if !is_token(&m.notice_id) {
        return Err(refused("notice_id must be 1-64 characters A-Z a-z 0-9 _ -"));
    }
    let chars = m.text.chars().count();
    if m.text.trim().is_empty() || chars > MAX_NOTICE_CHARS {
        return Err(refused(format!("the text has {chars} characters; a notice has 1 to {MAX_NOTICE_CHARS}")));
    }
    if m.text.chars().any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t')) {
        return Err(refused("the text holds control characters"));
    }
    let expires_at = rfc3339(&m.expires_at)
        .ok_or_else(|| refused(format!("expires_at \"{}\" is not an RFC 3339 time", m.expires_at)))?;
    Ok(Notice { id: m.notice_id, level: m.level, text: m.text, expires_at })
}

/// An RFC 3339 time, in UTC (`Z`) or with an offset such as `+08:00`.
pub fn rfc3339(s: &str) -> Option<SystemTime> {
    if s.ends_with('Z') {
        return humantime::parse_rfc3339_weak(s).ok();
    }
    // humantime reads UTC only: take the offset off and apply it.
    let cut = s.len().checked_sub(6)?;
    let (time, offset) = (s.get(..cut)?, s.get(cut..)?);
    let sign = match offset.as_bytes()[0] {
        b'+' => 1i64,
        b'-' => -1,
        _ => return None,
    };
    let (h, m) = offset[1..].split_once(':')?;
    let (h, m): (u64, u64) = (h.parse().ok()?, m.parse().ok()?);
    if h > 23 || m > 59 || offset[1..].len() != 5 {
        return None;
    }
    let utc = humantime::parse_rfc3339_weak(time).ok()?;
    let shift = std::time::Duration::from_secs(h * 3600 + m * 60);
    if sign > 0 { utc.checked_sub(shift) } else { utc.checked_add(shift) }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn targets() -> Targets {
        Targets {
            root: "gw".into(),
            site: "grid-01".into(),
            cameras: vec![CameraTargets {
                id: "gate".into(),
                rules: vec![("lane".into(), "intrusion"), ("lane".into(), "crowd")],
            }],
        }
    }

    fn p(topic: &str, payload: &str) -> Result<Command, Refused> {
        parse(&targets(), topic, payload.as_bytes())
    }

    #[test]
    fn each_command_reads_into_what_it_names() {
        assert_eq!(p("gw/grid-01/gate/detect/set", "OFF"), Ok(Command::Detect { camera: "gate".into(), on: false }));
        assert_eq!(
            p("gw/grid-01/gate/rules/lane/crowd/set", "ON\n"),
            Ok(Command::Rule { camera: "gate".into(), zone: "lane".into(), rule: "crowd", on: true })
        );
        assert_eq!(
            p("gw/grid-01/gate/snapshot/request", r#"{"request_id":"r-1"}"#),
            Ok(Command::Snapshot { camera: "gate".into(), request_id: "r-1".into() })
        );
        assert_eq!(
            p("gw/grid-01/clips/request", r#"{"event_id":"01J"}"#),
            Ok(Command::Clip { event_id: "01J".into() })
        );
        assert_eq!(p("gw/all/notices", ""), Ok(Command::NoticeCleared));
        let n = r#"{"schema":"gridwatch.notice/1","notice_id":"n1","level":"info","text":"18:00 前挪车","expires_at":"2026-12-01T18:00:00+08:00"}"#;
        let Ok(Command::Notice(n)) = p("gw/grid-01/notices", n) else { panic!() };
        assert_eq!(n.expires_at, rfc3339("2026-12-01T10:00:00Z").unwrap());
    }

    #[test]
    fn bad_commands_say_why() {
        let why = |t: &str, body: &str| p(t, body).unwrap_err().0;
        assert!(why("gw/grid-02/gate/detect/set", "ON").contains("site \"grid-02\""));
        assert!(why("gw/grid-01/yard/detect/set", "ON").contains("no camera \"yard\""));
        assert!(why("gw/grid-01/gate/detect/set", "on").contains("ON or OFF"));
        assert!(why("gw/grid-01/gate/rules/lane/loitering/set", "ON").contains("lane/intrusion, lane/crowd"));
        assert!(why("gw/grid-01/gate/snapshot/request", r#"{"request_id":"a/b"}"#).contains("1-64"));
        assert!(why("gw/grid-01/gate/snapshot/request", r#"{"request_id":"a","x":1}"#).contains("1-64"));
        assert!(why("gw/grid-01/gate/detect/set", &"O".repeat(5000)).contains("at most 4096"));
        assert!(parse(&targets(), "gw/grid-01/gate/detect/set", b"\xff").unwrap_err().0.contains("UTF-8"));
        assert!(why("gw/grid-01/gate/status/set", "ON").contains("not a command topic"));
        assert!(why("other/grid-01/gate/detect/set", "ON").contains("topic root"));
        let n = |text: &str, exp: &str| {
            format!(
                r#"{{"schema":"gridwatch.notice/1","notice_id":"n","level":"info","text":"{text}","expires_at":"{exp}"}}"#
            )
        };
        assert!(why("gw/grid-01/notices", &n(" ", "2026-12-01T00:00:00Z")).contains("1 to 500"));
        assert!(why("gw/grid-01/notices", &n("x", "tomorrow")).contains("RFC 3339"));
        assert!(why("gw/grid-01/notices", &n("a\\u0007", "2026-12-01T00:00:00Z")).contains("control"));
        assert!(why("gw/all/status", "x").contains("site \"all\""));
    }

    #[test]
    fn times_with_offsets_are_read_as_utc() {
        let z = rfc3339("2026-12-01T10:00:00.500Z").unwrap();
        assert_eq!(rfc3339("2026-12-01T18:00:00.500+08:00"), Some(z));
        assert_eq!(rfc3339("2026-12-01T05:00:00.500-05:00"), Some(z));
        let odd =
            ["2026-12-01T10:00:00", "2026-12-01T10:00:00+8:00", "2026-12-01T10:00:00+24:00", "", "Z", "日日+08:00"];
        for bad in odd {
            assert_eq!(rfc3339(bad), None, "{bad}");
        }
    }

    mod prop {
        use proptest::prelude::*;

        use super::*;

        proptest! {
            /// Random topics and payloads: no panic, and whatever is accepted names only
            /// what the device has, under its own site.
            #[test]
            fn nothing_invalid_is_accepted(
                topic in prop_oneof![
                    "[a-z/+#]{0,40}",
                    "gw/(grid-01|grid-02|all)/(gate|yard|clips|notices)(/[a-z]{1,9}){0,4}",
                ],
                payload in prop_oneof![
                    proptest::collection::vec(any::<u8>(), 0..64),
                    "(ON|OFF|on|\\{\"request_id\":\"[a-z/]{0,70}\"\\}|\\{\"event_id\":\"\"\\})".prop_map(String::into_bytes),
                ],
            ) {
                let t = targets();
                if let Ok(cmd) = parse(&t, &topic, &payload) {
                    prop_assert!(topic.starts_with("gw/grid-01/") || topic == "gw/all/notices", "{topic}");
                    match cmd {
                        Command::Detect { camera, .. } | Command::Snapshot { camera, .. } => prop_assert_eq!(camera, "gate"),
                        Command::Rule { camera, zone, rule, .. } => {
                            prop_assert!(t.rule(&camera, &zone, rule).is_ok());
                        }
                        Command::Clip { event_id } => prop_assert!(is_token(&event_id)),
                        Command::Notice(n) => prop_assert!(is_token(&n.id)),
                        Command::NoticeCleared => prop_assert!(payload.is_empty()),
                    }
                }
            }
        }
    }
}
