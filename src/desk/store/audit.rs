//! The audit log: every login (right or wrong), claim, resolution, command and user
//! change, with who, from where and when. Rows are only ever added.

use rusqlite::params;

use super::{Store, now_ms};

impl Store {
    pub fn audit(
        &self,
        user: Option<&str>,
        addr: &str,
        action: &str,
        target: &str,
        detail: &str,
    ) -> anyhow::Result<()> {
        self.with(|c| {
            c.execute(
                "INSERT INTO audit(at, user, addr, action, target, detail) VALUES(?1, ?2, ?3, ?4, ?5, ?6)",
                params![now_ms(), user, addr, action, target, detail],
            )?;
            Ok(())
        })
    }
}
