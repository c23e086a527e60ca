//! Restart intensity: OTP's "at most `max_restarts` in `period`" as a sliding window, so a crash
//! loop escalates to the parent instead of spinning forever.

use std::collections::VecDeque;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

/// How many restarts a supervisor tolerates in a period before it gives up and escalates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Intensity {
    /// Restarts allowed inside one `period`; one more escalates.
    pub max_restarts: u32,
    /// Length of the sliding window.
    #[serde(deserialize_with = "crate::seconds::deserialize")]
    pub period: Duration,
}

impl Default for Intensity {
    /// OTP's default: 1 restart in 5 seconds.
    fn default() -> Self {
        Self {
            max_restarts: 1,
            period: Duration::from_secs(5),
        }
    }
}

/// The timestamps of recent restarts; never holds more than `max_restarts + 1` of them.
#[derive(Debug, Clone)]
pub struct RestartWindow {
    /// The limit being enforced.
    intensity: Intensity,
    /// Restart times inside the window, oldest first.
    stamps: VecDeque<Instant>,
}

impl RestartWindow {
    /// An empty window enforcing `intensity`.
    pub fn new(intensity: Intensity) -> Self {
        Self {
            intensity,
            stamps: VecDeque::new(),
        }
    }

    /// Records a restart at `now`. Returns `false` when this restart exceeds the intensity,
    /// i.e. the caller must escalate rather than restart.
    pub fn record(&mut self, now: Instant) -> bool {
        self.expire(now);
        self.stamps.push_back(now);
        // Bounded: one past the limit is all we need to know the limit was passed.
        while self.stamps.len() > self.intensity.max_restarts as usize + 1 {
            self.stamps.pop_front();
        }
        self.stamps.len() <= self.intensity.max_restarts as usize
    }

    /// Restarts inside the window ending at `now`.
    pub fn count(&mut self, now: Instant) -> u32 {
        self.expire(now);
        self.stamps.len() as u32
    }

    /// Drops restarts older than the period.
    fn expire(&mut self, now: Instant) {
        while let Some(&oldest) = self.stamps.front() {
            if now.duration_since(oldest) >= self.intensity.period {
                self.stamps.pop_front();
            } else {
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn n_restarts_pass_and_n_plus_one_escalate() {
        let mut w = RestartWindow::new(Intensity {
            max_restarts: 3,
            period: Duration::from_secs(5),
        });
        let t0 = Instant::now();
        assert!(w.record(t0));
        assert!(w.record(t0 + Duration::from_secs(1)));
        assert!(w.record(t0 + Duration::from_secs(2)));
        assert!(!w.record(t0 + Duration::from_secs(3)));
    }

    #[test]
    fn the_window_slides() {
        let mut w = RestartWindow::new(Intensity::default());
        let t0 = Instant::now();
        assert!(w.record(t0));
        // 5 s later the first restart has left the window.
        assert!(w.record(t0 + Duration::from_secs(5)));
        assert!(!w.record(t0 + Duration::from_secs(6)));
        assert_eq!(w.count(t0 + Duration::from_secs(100)), 0);
    }

    #[test]
    fn zero_intensity_never_restarts() {
        let mut w = RestartWindow::new(Intensity {
            max_restarts: 0,
            period: Duration::from_secs(1),
        });
        assert!(!w.record(Instant::now()));
    }
}
