//! The uplink's hourly budget for clips (`mqtt.max_clip_bytes_per_hour`), so a metered
//! 4G link is not eaten by video.
//!
//! Promises: over any hour, the clips let through add up to at most the budget (a clip
//! bigger than the whole budget never goes); `wait` says how long until a clip fits.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

const HOUR: Duration = Duration::from_secs(3600);

#[derive(Debug)]
pub struct ClipBudget {
    per_hour: u64,
    sent: VecDeque<(Instant, u64)>,
}

/// Whether a clip may go now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Go,
    /// It fits after this long.
    Wait(Duration),
    /// It is bigger than the whole budget.
    Never,
}

impl ClipBudget {
    /// `per_hour` 0: no bound.
    pub fn new(per_hour: u64) -> ClipBudget {
        ClipBudget { per_hour, sent: VecDeque::new() }
    }

    /// Whether `bytes` more may go at `now`.
    pub fn check(&mut self, bytes: u64, now: Instant) -> Verdict {
        if self.per_hour == 0 {
            return Verdict::Go;
        }
        if bytes > self.per_hour {
            return Verdict::Never;
        }
        while self.sent.front().is_some_and(|&(t, _)| now.duration_since(t) >= HOUR) {
            self.sent.pop_front();
        }
        let mut used: u64 = self.sent.iter().map(|&(_, b)| b).sum();
        if used + bytes <= self.per_hour {
            return Verdict::Go;
        }
        // The oldest sends age out first: wait for enough of them.
        for &(t, b) in &self.sent {
            used -= b;
            if used + bytes <= self.per_hour {
                return Verdict::Wait((t + HOUR).saturating_duration_since(now));
            }
        }
        Verdict::Wait(HOUR)
    }

    /// `bytes` went at `now`.
    pub fn spent(&mut self, bytes: u64, now: Instant) {
        if self.per_hour > 0 {
            self.sent.push_back((now, bytes));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_hour_holds_the_budget_and_no_more() {
        let t0 = Instant::now();
        let mut b = ClipBudget::new(1000);
        assert_eq!(b.check(600, t0), Verdict::Go);
        b.spent(600, t0);
        let later = t0 + Duration::from_secs(600);
        assert_eq!(b.check(300, later), Verdict::Go);
        b.spent(300, later);
        assert_eq!(b.check(200, later), Verdict::Wait(Duration::from_secs(3000)), "the first 600 age out at t0 + 1 h");
        assert_eq!(b.check(200, t0 + HOUR), Verdict::Go);
        assert_eq!(b.check(1001, t0), Verdict::Never);
        assert_eq!(ClipBudget::new(0).check(u64::MAX, t0), Verdict::Go);
    }
}
