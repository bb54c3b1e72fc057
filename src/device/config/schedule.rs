//! Local-time windows for rules, e.g. "22:00-06:00" (which spans midnight), parsed
//! once when the configuration is read.
//!
//! Promises: `parse` accepts exactly `HH:MM-HH:MM` (24 h clock, start != end) and says
//! what is wrong otherwise; `contains` takes minutes after local midnight, start
//! included, end excluded; a `Schedule` prints as it parses.

use std::time::{SystemTime, UNIX_EPOCH};

use crate::contract::Invalid;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(try_from = "String", into = "String")]
pub struct Schedule {
    start: u32,
    end: u32,
}

impl Schedule {
    pub fn parse(text: &str) -> Result<Schedule, Invalid> {
        let hint = "use \"HH:MM-HH:MM\" in local time, e.g. \"22:00-06:00\"";
        let minutes = |s: &str| -> Option<u32> {
            let (h, m) = s.trim().split_once(':')?;
            let (h, m): (u32, u32) = (h.parse().ok()?, m.parse().ok()?);
            (h < 24 && m < 60 && s.trim().len() == 5).then_some(h * 60 + m)
        };
        let (a, b) = text.split_once('-').ok_or_else(|| Invalid(format!("\"{text}\" is not a time window; {hint}")))?;
        let (start, end) = match (minutes(a), minutes(b)) {
            (Some(s), Some(e)) => (s, e),
            _ => return Err(Invalid(format!("\"{text}\" does not parse; {hint}"))),
        };
        if start == end {
            return Err(Invalid(format!(
                "\"{text}\" is an empty window; leave the schedule out to apply at all times"
            )));
        }
        Ok(Schedule { start, end })
    }

    /// Minutes since the window opened, when `minute` (after local midnight) lies in it.
    pub fn minutes_into(&self, minute: u32) -> Option<u32> {
        self.contains(minute).then(|| (minute + 1440 - self.start) % 1440)
    }

    /// Whether `minute` (after local midnight) lies in the window.
    pub fn contains(&self, minute: u32) -> bool {
        if self.start < self.end {
            (self.start..self.end).contains(&minute)
        } else {
            minute >= self.start || minute < self.end
        }
    }
}

impl TryFrom<String> for Schedule {
    type Error = Invalid;
    fn try_from(text: String) -> Result<Schedule, Invalid> {
        Schedule::parse(&text)
    }
}

impl From<Schedule> for String {
    fn from(s: Schedule) -> String {
        s.to_string()
    }
}

impl std::fmt::Display for Schedule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let hm = |m: u32| format!("{:02}:{:02}", m / 60, m % 60);
        write!(f, "{}-{}", hm(self.start), hm(self.end))
    }
}

/// Minutes after midnight, local time (TZ / /etc/localtime), of `t`.
pub fn local_minute(t: SystemTime) -> u32 {
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()) as libc::time_t;
    // SAFETY: localtime_r only writes into the tm we own.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    // SAFETY: both pointers are to live values of the right types for the call.
    if unsafe { libc::localtime_r(&secs, &mut tm) }.is_null() {
        return ((secs / 60) % 1440) as u32;
    }
    (tm.tm_hour * 60 + tm.tm_min) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_and_midnight() {
        let night = Schedule::parse("22:00-06:00").unwrap();
        assert_eq!(night.to_string(), "22:00-06:00");
        assert!(night.contains(23 * 60) && night.contains(0) && night.contains(5 * 60 + 59));
        assert!(!night.contains(6 * 60) && !night.contains(12 * 60) && !night.contains(21 * 60 + 59));
        let day = Schedule::parse("08:30-17:00").unwrap();
        assert!(day.contains(8 * 60 + 30) && !day.contains(17 * 60) && !day.contains(0));
        for bad in ["22-06", "25:00-06:00", "22:00", "22:00-22:00", "10:5-11:00", "x"] {
            assert!(Schedule::parse(bad).is_err(), "{bad}");
        }
        assert!(local_minute(SystemTime::now()) < 1440);
    }
}
