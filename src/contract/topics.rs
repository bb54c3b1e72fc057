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
}
