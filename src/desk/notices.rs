//! Notices from the duty desk to grid points (issue 15): a notice is published QoS 1,
//! retained, on `{root}/{site}/notices` for each targeted site, or once on
//! `{root}/all/notices` for all; devices answer on `{root}/{site}/notices/{id}/receipt`.
//!
//! Promises: a notice is checked (level, 1-500 characters of text, an expiry within
//! 30 days, a known site or group) before anything is stored or sent; it is stored
//! before it is published, so a receipt can never come for a notice the desk does not
//! know; MQTT 3.1.1 has no expiry, so when a notice expires (checked every 2 s) or is
//! withdrawn, every topic that still carries it gets an empty retained message (a later
//! notice to the same topic has replaced it there already).

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::ingest::Mqtt;
use super::live::{Change, Live};
use super::store::{Store, now_ms, rfc3339};
use crate::contract::NOTICE_SCHEMA;

pub const MAX_TEXT: usize = 500;
/// The longest expiry a notice may have.
const MAX_MINUTES: i64 = 30 * 24 * 60;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    All,
    Site(String),
    Group(String),
}

impl Target {
    /// `all`, `site:{id}` or `group:{name}`, as the form's choices and the store say it.
    pub fn parse(s: &str) -> Option<Target> {
        match s.split_once(':') {
            None if s == "all" => Some(Target::All),
            Some(("site", id)) => Some(Target::Site(id.to_owned())),
            Some(("group", name)) if !name.is_empty() => Some(Target::Group(name.to_owned())),
            _ => None,
        }
    }

    pub fn as_string(&self) -> String {
        match self {
            Target::All => "all".to_owned(),
            Target::Site(id) => format!("site:{id}"),
            Target::Group(name) => format!("group:{name}"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NoticeError {
    #[error("level: use info, warning or urgent")]
    Level,
    #[error("text: give 1 to {MAX_TEXT} characters")]
    Text,
    #[error("expiry: give minutes from 1 to {MAX_MINUTES}, or an RFC 3339 UTC time in the next 30 days")]
    Expiry,
    #[error("target: use all, site:ID of a known site, or group:NAME of a configured group")]
    Target,
}

/// A notice as composed, checked.
#[derive(Debug, Clone)]
pub struct Notice {
    pub level: String,
    pub text: String,
    /// RFC 3339 UTC with milliseconds.
    pub expires_at: String,
    pub target: Target,
}

impl Notice {
    /// Checks a composed notice; the expiry is `minutes` from now or `expires_at`.
    pub fn new(
        level: &str,
        text: &str,
        minutes: Option<i64>,
        expires_at: Option<&str>,
        target: &str,
    ) -> Result<Notice, NoticeError> {
        if !matches!(level, "info" | "warning" | "urgent") {
            return Err(NoticeError::Level);
        }
        // A browser sends a textarea's line breaks as CRLF; the notice keeps plain ones.
        let text = text.trim().replace("\r\n", "\n");
        let text = text.as_str();
        if text.is_empty() || text.chars().count() > MAX_TEXT {
            return Err(NoticeError::Text);
        }
        let now = now_ms();
        let at_ms = match (minutes, expires_at.map(str::trim).filter(|s| !s.is_empty())) {
            (Some(m), None) if (1..=MAX_MINUTES).contains(&m) => now + m * 60_000,
            (None, Some(t)) => {
                let t = humantime::parse_rfc3339(t).map_err(|_| NoticeError::Expiry)?;
                let ms = t.duration_since(std::time::UNIX_EPOCH).map_err(|_| NoticeError::Expiry)?.as_millis() as i64;
                if ms <= now || ms > now + MAX_MINUTES * 60_000 {
                    return Err(NoticeError::Expiry);
                }
                ms
            }
            _ => return Err(NoticeError::Expiry),
        };
        let target = Target::parse(target.trim()).ok_or(NoticeError::Target)?;
        Ok(Notice { level: level.to_owned(), text: text.to_owned(), expires_at: rfc3339(at_ms), target })
    }

    /// The JSON for the notice topics.
    pub fn payload(&self, notice_id: &str) -> Vec<u8> {
        let p = serde_json::json!({
            "schema": NOTICE_SCHEMA,
            "notice_id": notice_id,
            "level": self.level,
            "text": self.text,
            "expires_at": self.expires_at,
        });
        serde_json::to_vec(&p).unwrap_or_default()
    }
}

/// The sites a target reaches and the topics (under the root) to publish on; Err when
/// the site is not known or the group has no site. `groups` is (site, group) of every
/// configured site; `known` every site configured or seen.
pub fn reach(
    target: &Target,
    groups: &[(String, Option<String>)],
    known: &[String],
) -> Result<(Vec<String>, Vec<String>), NoticeError> {
    let sites: Vec<String> = match target {
        Target::All => return Ok((known.to_vec(), vec!["all/notices".to_owned()])),
        // `all` is the topic of every site: no site may be called that here.
        Target::Site(id) if id != "all" && known.contains(id) => vec![id.clone()],
        Target::Site(_) => return Err(NoticeError::Target),
        Target::Group(g) => {
            groups.iter().filter(|(_, group)| group.as_deref() == Some(g.as_str())).map(|(s, _)| s.clone()).collect()
        }
    };
    if sites.is_empty() {
        return Err(NoticeError::Target);
    }
    let topics = sites.iter().map(|s| format!("{s}/notices")).collect();
    Ok((sites, topics))
}

/// Clears `topics` (under the root) with an empty retained message each.
pub async fn clear(mqtt: &Mqtt, notice_id: &str, topics: &[String]) {
    for t in topics {
        match mqtt.publish(t, Vec::new(), true).await {
            Ok(()) => tracing::info!("notice {notice_id}: cleared {}/{t}", mqtt.root()),
            Err(e) => tracing::warn!("notice {notice_id}: clearing {}/{t}: {e}", mqtt.root()),
        }
    }
}

/// Every 2 s: notices past their expiry come off their topics.
pub async fn expire(store: Arc<Store>, live: Live, mqtt: Arc<Mqtt>, stop: CancellationToken) {
    loop {
        let s = store.clone();
        let due = tokio::task::spawn_blocking(move || {
            let mut out = Vec::new();
            for id in s.notices_expired(&rfc3339(now_ms()))? {
                let topics = s.end_notice(&id, "expired")?;
                out.push((id, topics));
            }
            Ok::<_, anyhow::Error>(out)
        });
        match due.await.map_err(anyhow::Error::from).and_then(|r| r) {
            Ok(list) => {
                for (id, topics) in list {
                    tracing::info!("notice {id}: expired");
                    clear(&mqtt, &id, &topics).await;
                    live.send(Change::Notice { notice_id: id });
                }
            }
            Err(e) => tracing::warn!("notice expiry: {e:#}"),
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_notice_is_checked_before_anything_is_sent() {
        let ok = Notice::new("urgent", "  请于 18:00 前挪车  ", Some(60), None, "all").unwrap();
        assert_eq!((ok.text.as_str(), &ok.target), ("请于 18:00 前挪车", &Target::All));
        assert!(ok.expires_at > rfc3339(now_ms()));
        let long = "长".repeat(501);
        for (level, text, minutes, at, target, want) in [
            ("loud", "x", Some(5), None, "all", NoticeError::Level),
            ("info", "   ", Some(5), None, "all", NoticeError::Text),
            ("info", long.as_str(), Some(5), None, "all", NoticeError::Text),
            ("info", "x", Some(0), None, "all", NoticeError::Expiry),
            ("info", "x", None, None, "all", NoticeError::Expiry),
            ("info", "x", None, Some("2020-01-01T00:00:00Z"), "all", NoticeError::Expiry),
            ("info", "x", Some(5), None, "everyone", NoticeError::Target),
            ("info", "x", Some(5), None, "group:", NoticeError::Target),
        ] {
            assert_eq!(Notice::new(level, text, minutes, at, target).unwrap_err(), want, "{level} {text} {target}");
        }
        let p: serde_json::Value = serde_json::from_slice(&ok.payload("01ABC")).unwrap();
        assert_eq!(p["schema"], "gridwatch.notice/1");
        assert_eq!(p["notice_id"], "01ABC");
        assert_eq!(p["level"], "urgent");
        assert!(p["expires_at"].as_str().unwrap().ends_with('Z'));
    }

    #[test]
    fn a_target_reaches_its_sites_and_topics() {
        let groups = vec![
            ("a".to_owned(), Some("east".to_owned())),
            ("b".to_owned(), Some("east".to_owned())),
            ("c".to_owned(), None),
        ];
        let known: Vec<String> = ["a", "b", "c", "d"].map(String::from).to_vec();
        let (sites, topics) = reach(&Target::Group("east".into()), &groups, &known).unwrap();
        assert_eq!(
            (sites, topics),
            (vec!["a".to_owned(), "b".into()], vec!["a/notices".to_owned(), "b/notices".into()])
        );
        let (sites, topics) = reach(&Target::All, &groups, &known).unwrap();
        assert_eq!((sites.len(), topics), (4, vec!["all/notices".to_owned()]));
        assert_eq!(reach(&Target::Site("d".into()), &groups, &known).unwrap().1, ["d/notices"]);
        assert!(reach(&Target::Site("zz".into()), &groups, &known).is_err(), "an unknown site");
        assert!(reach(&Target::Group("west".into()), &groups, &known).is_err(), "an empty group");
    }
}
