//! Backoff: how long a crashed child waits before its restart. Delays grow geometrically, cap at
//! a maximum, carry bounded jitter (so a fleet of crashing children does not restart in lockstep)
//! and reset once the child has run stably for a while.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// A restart delay policy.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Backoff {
    /// Delay before the first restart.
    #[serde(deserialize_with = "crate::seconds::deserialize")]
    pub initial: Duration,
    /// No delay exceeds this.
    #[serde(deserialize_with = "crate::seconds::deserialize")]
    pub max: Duration,
    /// Growth factor per consecutive restart (≥ 1).
    pub multiplier: f64,
    /// Relative jitter in [0, 1]: the delay lands in `base·(1−jitter) ..= base·(1+jitter)`,
    /// still capped at `max`.
    pub jitter: f64,
    /// A child that ran at least this long before exiting starts again from `initial`.
    #[serde(deserialize_with = "crate::seconds::deserialize")]
    pub reset_after: Duration,
}

impl Default for Backoff {
    /// 100 ms doubling to 30 s, ±10 % jitter, reset after 60 s of stable running.
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(30),
            multiplier: 2.0,
            jitter: 0.1,
            reset_after: Duration::from_secs(60),
        }
    }
}

impl Backoff {
    /// No delay at all: restart at once (OTP's behaviour).
    pub const NONE: Backoff = Backoff {
        initial: Duration::ZERO,
        max: Duration::ZERO,
        multiplier: 1.0,
        jitter: 0.0,
        reset_after: Duration::ZERO,
    };

    /// The un-jittered delay before restart number `attempt` (0-based), capped at `max`.
    pub fn base_delay(&self, attempt: u32) -> Duration {
        let factor = self.multiplier.max(1.0).powi(attempt.min(1024) as i32);
        let secs = (self.initial.as_secs_f64() * factor).min(self.max.as_secs_f64());
        // A bound too large for a Duration (or NaN from a NaN multiplier) is the bound.
        Duration::try_from_secs_f64(secs.max(0.0)).unwrap_or(self.max)
    }

    /// The delay for `attempt` with jitter drawn from `unit` (a number in [0, 1]).
    pub fn delay(&self, attempt: u32, unit: f64) -> Duration {
        let base = self.base_delay(attempt).as_secs_f64();
        let jitter = self.jitter.clamp(0.0, 1.0);
        let spread = 1.0 + jitter * (2.0 * unit.clamp(0.0, 1.0) - 1.0);
        Duration::try_from_secs_f64((base * spread).min(self.max.as_secs_f64()).max(0.0))
            .unwrap_or(self.max)
    }
}

/// Where one child stands in its backoff sequence.
#[derive(Debug, Clone, Default)]
pub struct BackoffState {
    /// Consecutive restarts since the last stable run.
    attempt: u32,
}

impl BackoffState {
    /// The delay before the next restart of a child that ran for `ran_for`; advances the sequence.
    pub fn next_delay(&mut self, policy: &Backoff, ran_for: Duration) -> Duration {
        if ran_for >= policy.reset_after {
            self.attempt = 0;
        }
        let delay = policy.delay(self.attempt, fastrand::f64());
        self.attempt = self.attempt.saturating_add(1);
        delay
    }

    /// Consecutive restarts since the last stable run.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> Backoff {
        Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(2),
            multiplier: 2.0,
            jitter: 0.25,
            reset_after: Duration::from_secs(10),
        }
    }

    #[test]
    fn delays_grow_and_cap() {
        let p = policy();
        let got: Vec<u128> = (0..8).map(|a| p.base_delay(a).as_millis()).collect();
        assert_eq!(got, vec![100, 200, 400, 800, 1600, 2000, 2000, 2000]);
    }

    #[test]
    fn jitter_stays_within_bounds() {
        let p = policy();
        for attempt in 0..10 {
            let base = p.base_delay(attempt).as_secs_f64();
            for _ in 0..200 {
                let d = p.delay(attempt, fastrand::f64()).as_secs_f64();
                assert!(d >= base * 0.75 - 1e-9, "{d} below {base}·0.75");
                assert!(d <= (base * 1.25).min(2.0) + 1e-9, "{d} above bound");
            }
        }
        assert_eq!(p.delay(0, 0.0), Duration::from_millis(75));
        assert_eq!(p.delay(0, 1.0), Duration::from_millis(125));
    }

    #[test]
    fn resets_after_a_stable_run() {
        let p = Backoff {
            jitter: 0.0,
            ..policy()
        };
        let mut s = BackoffState::default();
        let quick = Duration::from_millis(5);
        assert_eq!(s.next_delay(&p, quick), Duration::from_millis(100));
        assert_eq!(s.next_delay(&p, quick), Duration::from_millis(200));
        assert_eq!(s.next_delay(&p, quick), Duration::from_millis(400));
        assert_eq!(
            s.next_delay(&p, Duration::from_secs(10)),
            Duration::from_millis(100)
        );
        assert_eq!(s.attempt(), 1);
    }

    #[test]
    fn none_is_immediate() {
        let mut s = BackoffState::default();
        for _ in 0..5 {
            assert_eq!(s.next_delay(&Backoff::NONE, Duration::ZERO), Duration::ZERO);
        }
    }

    #[test]
    fn absurd_policies_give_their_bound_instead_of_panicking() {
        let huge = Backoff {
            initial: Duration::MAX,
            max: Duration::MAX,
            multiplier: 1e300,
            jitter: 5.0,
            reset_after: Duration::MAX,
        };
        assert_eq!(huge.base_delay(10), Duration::MAX);
        assert_eq!(huge.delay(10, 1.0), Duration::MAX);
        let nan = Backoff {
            multiplier: f64::NAN,
            ..policy()
        };
        assert!(nan.delay(3, 0.5) <= nan.max);
    }
}
