//! Pace: the live subscribers a held session's output copy waits for.
//!
//! A session under a holder has its output buffered in the holder's shared ring (8 MiB at
//! least) before the server copies it into the session's Ring, so that copy need not outrun
//! the viewers: the held reader copies at most one Ring capacity beyond the slowest subscriber
//! *in good standing* ([`Pacers::slowest`]), and a viewer that keeps up on average is never
//! lapped by a burst — the server catching up after a scheduling delay, or a viewer that was
//! descheduled for a few milliseconds while the output flooded (at the default 1 MiB Ring, a
//! flood laps a viewer that is ~7 ms behind).
//!
//! A viewer must never hold a session back for long. The copy waits at most [`PATIENCE`] at a
//! time; then every subscriber more than half a Ring behind loses its standing for [`COOLDOWN`]
//! — the copy goes on, and they are lapped and told so (`lagged`), as every slow viewer is. And
//! however many viewers are slow, the copy waits [`BUDGET`] in all per [`COOLDOWN`] at most
//! ([`Patience`]). The holder's ring absorbs those waits (8 MiB is ~50 ms of the fastest flood
//! here): the program does not notice, and the log is late by that much at most. A session without a holder has no buffer to
//! wait in (its PTY holds a few KiB): its reader never waits for anyone, and a viewer is lapped
//! when it falls a Ring behind.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// How long a held session's copy waits for subscribers at a time.
pub const PATIENCE: Duration = Duration::from_millis(20);
/// How long it waits for them in all per [`COOLDOWN`].
pub const BUDGET: Duration = Duration::from_millis(200);
/// How long a subscriber that held the copy back for [`PATIENCE`] is not waited for.
pub const COOLDOWN: Duration = Duration::from_secs(1);

/// A cursor that paces nothing (a subscription catching up from disk, or just made).
const IDLE: u64 = u64::MAX;

/// Since the process started (for metrics): waits begun, milliseconds waited, waits that ran
/// out (their subscribers then not waited for).
static WAITS: AtomicU64 = AtomicU64::new(0);
static WAITED_MS: AtomicU64 = AtomicU64::new(0);
static RAN_OUT: AtomicU64 = AtomicU64::new(0);

/// Held copies' waits for subscribers since the process started: (waits, milliseconds waited,
/// waits that ran out).
pub fn stats() -> (u64, u64, u64) {
    (
        WAITS.load(Ordering::Relaxed),
        WAITED_MS.load(Ordering::Relaxed),
        RAN_OUT.load(Ordering::Relaxed),
    )
}

/// The subscribers of one session that its held copy may wait for.
#[derive(Default)]
pub struct Pacers {
    /// Every subscription's pacer; a dropped subscription's entry is pruned on the next join.
    members: Mutex<Vec<Weak<Pacer>>>,
}

/// One subscription's place in its session's pace.
pub struct Pacer {
    /// The next output offset it will read ([`IDLE`]: not pacing).
    cursor: AtomicU64,
    /// Not waited for before this instant.
    excused_until: Mutex<Option<Instant>>,
}

impl Pacers {
    /// A new member, pacing nothing until [`Pacer::at`].
    pub fn join(&self) -> Arc<Pacer> {
        let pacer = Arc::new(Pacer {
            cursor: AtomicU64::new(IDLE),
            excused_until: Mutex::new(None),
        });
        let mut members = self.members.lock();
        members.retain(|m| m.strong_count() > 0);
        members.push(Arc::downgrade(&pacer));
        pacer
    }

    /// The cursor of the slowest member in good standing at `now`.
    pub fn slowest(&self, now: Instant) -> Option<u64> {
        self.members
            .lock()
            .iter()
            .filter_map(Weak::upgrade)
            .filter(|p| p.excused_until.lock().is_none_or(|until| now >= until))
            .map(|p| p.cursor.load(Ordering::Acquire))
            .filter(|cursor| *cursor != IDLE)
            .min()
    }

    /// Every member reading below `cursor` is not waited for until `until`.
    pub fn excuse_below(&self, cursor: u64, until: Instant) {
        for p in self.members.lock().iter().filter_map(Weak::upgrade) {
            if p.cursor.load(Ordering::Acquire) < cursor {
                *p.excused_until.lock() = Some(until);
            }
        }
    }
}

impl Pacer {
    /// It will read from `cursor` next.
    pub fn at(&self, cursor: u64) {
        self.cursor.store(cursor, Ordering::Release);
    }

    /// It paces nothing for now (it reads from disk, below the Ring).
    pub fn idle(&self) {
        self.at(IDLE);
    }
}

/// How long a held copy has waited for subscribers: at most [`PATIENCE`] at a time and
/// [`BUDGET`] in any window of [`COOLDOWN`], whoever it waited for.
pub struct Patience {
    /// Start of the current window.
    window: Instant,
    /// Waited in it (not counting the current wait).
    spent: Duration,
    /// Since when the copy has been held back, if it is.
    since: Option<Instant>,
}

impl Patience {
    /// A fresh window from `now`.
    pub fn new(now: Instant) -> Self {
        Self {
            window: now,
            spent: Duration::ZERO,
            since: None,
        }
    }

    /// Whether the copy may wait for subscribers at `now` (this window's budget is not spent).
    pub fn waits(&mut self, now: Instant) -> bool {
        if now.duration_since(self.window) >= COOLDOWN {
            self.window = now;
            self.spent = Duration::ZERO;
        }
        self.spent < BUDGET
    }

    /// The copy was held back by subscribers at `now` (`held`), or not. True when this wait
    /// ran out (it lasted [`PATIENCE`], or the window's budget is spent): those holding it back
    /// are to be excused.
    pub fn held_back(&mut self, now: Instant, held: bool) -> bool {
        match (held, self.since) {
            (true, None) => {
                WAITS.fetch_add(1, Ordering::Relaxed);
                self.since = Some(now);
                false
            }
            (true, Some(since)) => {
                let waited = now.duration_since(since);
                if waited >= PATIENCE || self.spent + waited >= BUDGET {
                    self.end_wait(waited);
                    RAN_OUT.fetch_add(1, Ordering::Relaxed);
                    return true;
                }
                false
            }
            (false, Some(since)) => {
                self.end_wait(now.duration_since(since));
                false
            }
            (false, None) => false,
        }
    }

    fn end_wait(&mut self, waited: Duration) {
        self.spent += waited;
        self.since = None;
        WAITED_MS.fetch_add(waited.as_millis() as u64, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_copy_waits_twenty_ms_at_a_time_and_two_hundred_a_second() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut p = Patience::new(t0);
        // A subscriber holds the copy back 12 ms, then catches up: no one to excuse.
        assert!(p.waits(ms(0)));
        assert!(!p.held_back(ms(0), true));
        assert!(!p.held_back(ms(12), true));
        assert!(!p.held_back(ms(13), false));
        // One that holds it back 20 ms at a stretch runs the wait out.
        assert!(!p.held_back(ms(20), true));
        assert!(p.held_back(ms(40), true), "20 ms at a stretch");
        // A crowd, one after another, 15 ms each: the budget (200 ms a second) runs out, and
        // the copy waits for nobody until the window ends.
        let mut t = 100;
        let mut waits = 0;
        while p.waits(ms(t)) {
            assert!(!p.held_back(ms(t), true));
            if p.held_back(ms(t + 15), true) {
                break;
            }
            p.held_back(ms(t + 15), false);
            waits += 1;
            t += 20;
        }
        assert!(
            (10..=12).contains(&waits),
            "{waits} waits of 15 ms after 32 ms"
        );
        assert!(!p.waits(ms(999)));
        assert!(p.waits(ms(1000)), "a new window");
    }

    #[test]
    fn the_slowest_in_good_standing_paces_and_excused_ones_do_not_for_a_while() {
        let pacers = Pacers::default();
        let now = Instant::now();
        assert!(pacers.slowest(now).is_none(), "nobody to wait for");
        let (a, b, c) = (pacers.join(), pacers.join(), pacers.join());
        assert!(pacers.slowest(now).is_none(), "idle members pace nothing");
        a.at(1000);
        b.at(50);
        c.at(60);
        assert_eq!(pacers.slowest(now), Some(50));
        pacers.excuse_below(500, now + COOLDOWN);
        assert_eq!(pacers.slowest(now), Some(1000), "both behind are excused");
        assert_eq!(
            pacers.slowest(now + COOLDOWN),
            Some(50),
            "back in standing after the cooldown"
        );
        b.idle();
        assert_eq!(pacers.slowest(now + COOLDOWN), Some(60));
        drop((a, c));
        assert!(
            pacers.slowest(now + COOLDOWN).is_none(),
            "dropped members pace nothing"
        );
        let _d = pacers.join();
        assert_eq!(pacers.members.lock().len(), 2, "pruned on join");
    }
}
