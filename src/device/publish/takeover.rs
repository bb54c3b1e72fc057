//! Two MQTT clients with one client id knock each other off: the broker accepts the
//! newer connection and closes the older, which reconnects a second later and closes
//! the newer, for as long as both run. Each side's log shows only "connection closed
//! by peer"; this notices the pattern so that the log can say what it probably is.
//! The device and the desk both watch for it (a copied configuration gives two grid
//! points one site, and so one client id).
//!
//! Promises: [`Takeovers::ended`] says so once per run of short connections.

use std::time::Duration;

/// A connection the broker ends sooner than this after accepting it counts as short.
const SHORT: Duration = Duration::from_secs(10);
/// Short connections in a row before the log says why.
const IN_A_ROW: u32 = 3;

/// Connections the broker accepted and then closed soon after, in a row.
#[derive(Debug, Default)]
pub struct Takeovers {
    in_a_row: u32,
}

impl Takeovers {
    /// A connection the broker had accepted ended after `lasted`. True on the third
    /// short one in a row, and not again until a connection has lasted.
    pub fn ended(&mut self, lasted: Duration) -> bool {
        if lasted >= SHORT {
            self.in_a_row = 0;
            return false;
        }
        self.in_a_row += 1;
        self.in_a_row == IN_A_ROW
    }

    /// Whether the last connections were that run of short ones (it holds until one lasts).
    pub fn suspected(&self) -> bool {
        self.in_a_row >= IN_A_ROW
    }

    /// Whether a connection up for `connected_for` has outlasted the pattern.
    pub fn outlived(connected_for: Duration) -> bool {
        connected_for >= SHORT
    }

    /// What to tell the technician, for the client id in use.
    pub fn hint(client_id: &str) -> String {
        format!(
            "the broker closed {IN_A_ROW} connections in a row within {}s of accepting them: most likely another \
             client uses the same client id \"{client_id}\" and the two keep taking the connection from each \
             other; give each its own mqtt.client_id (a device's default is gridwatch-<site>, so no two devices \
             may share a site)",
            SHORT.as_secs()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn says_so_once_on_the_third_short_connection_in_a_row() {
        let mut t = Takeovers::default();
        let short = Duration::from_secs(1);
        let said: Vec<bool> = (0..5).map(|_| t.ended(short)).collect();
        assert_eq!(said, [false, false, true, false, false]);
        assert!(!t.ended(Duration::from_secs(60)), "a connection that lasted ends the run");
        let again: Vec<bool> = (0..3).map(|_| t.ended(short)).collect();
        assert_eq!(again, [false, false, true], "a new run is told again");
    }

    #[test]
    fn connections_that_last_are_not_takeovers() {
        let mut t = Takeovers::default();
        for _ in 0..10 {
            assert!(!t.ended(Duration::from_secs(3600)));
            assert!(!t.ended(SHORT));
        }
        assert!(Takeovers::hint("gridwatch-grid-07").contains("\"gridwatch-grid-07\""));
    }
}
