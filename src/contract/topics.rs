//! The topic tree of one site (docs/mqtt.md): every topic either side names is built here.

/// The topic tree of one site.
#[derive(Debug, Clone)]
pub struct Topics {
    pub root: String,
    pub site: String,
}

impl Topics {
    pub fn status(&self) -> String {
        format!("{}/{}/status", self.root, self.site)
    }
    pub fn info(&self) -> String {
        format!("{}/{}/info", self.root, self.site)
    }
    pub fn events(&self) -> String {
        format!("{}/{}/events", self.root, self.site)
    }
    pub fn health(&self, camera: &str) -> String {
        format!("{}/{}/{camera}/health", self.root, self.site)
    }
    /// The `n`th picture of an event: unique per image, so picture and event match by topic.
    pub fn snapshot(&self, event_id: &str, n: u32) -> String {
        format!("{}/{}/snapshots/{event_id}-{n}", self.root, self.site)
    }

    /// Every command topic this site listens to (MQTT filters), and the notices to all.
    pub fn command_filters(&self) -> Vec<String> {
        let (r, s) = (&self.root, &self.site);
        vec![
            format!("{r}/{s}/+/detect/set"),
            format!("{r}/{s}/+/rules/+/+/set"),
            format!("{r}/{s}/+/snapshot/request"),
            format!("{r}/{s}/clips/request"),
            format!("{r}/{s}/notices"),
            format!("{r}/all/notices"),
        ]
    }
    pub fn detect_state(&self, camera: &str) -> String {
        format!("{}/{}/{camera}/detect/state", self.root, self.site)
    }
    pub fn rule_state(&self, camera: &str, zone: &str, rule: &str) -> String {
        format!("{}/{}/{camera}/rules/{zone}/{rule}/state", self.root, self.site)
    }
    /// Where the picture asked for by `request_id` goes.
    pub fn snapshot_reply(&self, camera: &str, request_id: &str) -> String {
        format!("{}/{}/{camera}/snapshot/{request_id}", self.root, self.site)
    }
    /// Where an event's clip goes.
    pub fn clip(&self, event_id: &str) -> String {
        format!("{}/{}/clips/{event_id}", self.root, self.site)
    }
    pub fn command_errors(&self) -> String {
        format!("{}/{}/command_errors", self.root, self.site)
    }
    pub fn notice_receipt(&self, notice_id: &str) -> String {
        format!("{}/{}/notices/{notice_id}/receipt", self.root, self.site)
    }
}
