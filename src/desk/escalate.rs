//! Escalation: an alert nobody claimed within `alerts.escalate_after_s` is marked
//! escalated (the console makes it stand out), and the list of escalated, still
//! unclaimed alerts is published retained on `{root}/desk/escalations`, so other
//! tools can react.
//!
//! Promises: checked every 2 s; the retained message is republished whenever the list
//! changes (an escalation, or a claim that ends one), and once at start.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::config::DeskConfig;
use super::ingest::Mqtt;
use super::live::{Change, Live};
use super::store::{Store, now_ms};

pub const ESCALATIONS_SCHEMA: &str = "gridwatch.desk_escalations/1";

pub async fn run(cfg: Arc<DeskConfig>, store: Arc<Store>, live: Live, mqtt: Arc<Mqtt>, stop: CancellationToken) {
    let after_ms = cfg.alerts.escalate_after_s as i64 * 1000;
    let mut published: Option<String> = None;
    loop {
        let s = store.clone();
        let step =
            tokio::task::spawn_blocking(move || Ok::<_, anyhow::Error>((s.escalate_due(after_ms)?, s.escalations()?)));
        match step.await.map_err(anyhow::Error::from).and_then(|r| r) {
            Ok((changed, list)) => {
                if changed {
                    for e in &list {
                        live.send(Change::Incident { site: e.site.clone(), event_id: e.event_id.clone() });
                    }
                }
                let key = serde_json::to_string(&list).unwrap_or_default();
                if published.as_deref() != Some(key.as_str()) {
                    let body = serde_json::json!({
                        "schema": ESCALATIONS_SCHEMA,
                        "at": super::store::rfc3339(now_ms()),
                        "escalated": list,
                    });
                    match mqtt.publish("desk/escalations", body.to_string().into_bytes(), true).await {
                        Ok(()) => published = Some(key),
                        Err(e) => tracing::warn!("publishing escalations: {e}"),
                    }
                }
            }
            Err(e) => tracing::warn!("escalation check: {e:#}"),
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
        }
    }
}
