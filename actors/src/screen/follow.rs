//! When a session's output reader tells its screen to follow the output while it flows (see
//! [`Follow`]).

use corral_runtime::Ring;

/// When a session's output reader tells its screen to catch up while output flows: after a
/// quarter of the ring (at most [`FOLLOW_MAX`]) since the last time, unless that came faster
/// than [`FOLLOW_RATE`] or the reader already knows the output is a flood (then it waits for
/// the output to go idle, and a flood longer than the ring laps the emulator, see
/// [`super::Emulator`]): vt100 costs the runtime a few percent of a core at that rate, and a flood
/// parsed on a runtime worker starved the viewers' connections.
#[derive(Debug)]
pub struct Follow {
    /// The ring's head when the screen was last told (or a step was let pass).
    told: u64,
    /// When.
    at: std::time::Instant,
}

/// See [`Follow`].
const FOLLOW_MAX: u64 = 256 * 1024;

/// Output faster than this (bytes per second) is not followed (see [`Follow`]).
pub const FOLLOW_RATE: f64 = 4e6;

impl Follow {
    /// Starts following at `ring`'s head.
    pub fn new(ring: &Ring) -> Follow {
        Follow {
            told: ring.head(),
            at: std::time::Instant::now(),
        }
    }

    /// Whether a catch-up is due now (and, if it is, counts it as sent).
    pub fn due(&mut self, ring: &Ring, flooding: bool) -> bool {
        self.due_at(ring, flooding, std::time::Instant::now())
    }

    /// [`Follow::due`] at `now`.
    pub fn due_at(&mut self, ring: &Ring, flooding: bool, now: std::time::Instant) -> bool {
        let head = ring.head();
        let step = (ring.capacity() as u64 / 4).clamp(1, FOLLOW_MAX);
        if head.saturating_sub(self.told) < step {
            return false;
        }
        let took = now.saturating_duration_since(self.at).as_secs_f64();
        let quick = (head - self.told) as f64 > took * FOLLOW_RATE;
        self.told = head;
        self.at = now;
        !flooding && !quick
    }

    /// The screen was told for another reason (output went idle).
    pub fn told(&mut self, ring: &Ring) {
        self.told = ring.head();
        self.at = std::time::Instant::now();
    }
}
