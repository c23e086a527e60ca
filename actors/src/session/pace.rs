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
//! A viewer must never hold a session back for long: one that holds the copy back for
//! [`PATIENCE`] loses its standing for [`COOLDOWN`] — the copy goes on, and the viewer is lapped
//! and told so (`lagged`), as every slow viewer is. So a slow viewer delays a flood's copy by
//! at most [`PATIENCE`] per [`COOLDOWN`], which the holder's ring absorbs (the program does not
//! notice), and the log never waits for a viewer. A session without a holder has no buffer to
//! wait in (its PTY holds a few KiB): its reader never waits for anyone, and a viewer is lapped
//! when it falls a Ring behind.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// How long one subscriber may hold a held session's copy back before it loses its standing.
pub const PATIENCE: Duration = Duration::from_millis(20);
/// How long a subscriber that ran out of [`PATIENCE`] is not waited for.
pub const COOLDOWN: Duration = Duration::from_secs(1);

/// A cursor that paces nothing (a subscription catching up from disk, or just made).
const IDLE: u64 = u64::MAX;

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

    /// The slowest member in good standing at `now`: its cursor, and itself.
    pub fn slowest(&self, now: Instant) -> Option<(u64, Arc<Pacer>)> {
        self.members
            .lock()
            .iter()
            .filter_map(Weak::upgrade)
            .filter(|p| p.excused_until.lock().is_none_or(|until| now >= until))
            .map(|p| (p.cursor.load(Ordering::Acquire), p))
            .filter(|(cursor, _)| *cursor != IDLE)
            .min_by_key(|(cursor, _)| *cursor)
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

    /// It held the copy back too long: not waited for until `until`.
    pub fn excuse(&self, until: Instant) {
        *self.excused_until.lock() = Some(until);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_slowest_in_good_standing_paces_and_an_excused_one_does_not_for_a_while() {
        let pacers = Pacers::default();
        let now = Instant::now();
        assert!(pacers.slowest(now).is_none(), "nobody to wait for");
        let (a, b) = (pacers.join(), pacers.join());
        assert!(pacers.slowest(now).is_none(), "idle members pace nothing");
        a.at(100);
        b.at(50);
        assert_eq!(pacers.slowest(now).map(|(c, _)| c), Some(50));
        b.excuse(now + COOLDOWN);
        assert_eq!(pacers.slowest(now).map(|(c, _)| c), Some(100));
        assert_eq!(
            pacers.slowest(now + COOLDOWN).map(|(c, _)| c),
            Some(50),
            "back in standing after the cooldown"
        );
        b.idle();
        assert_eq!(pacers.slowest(now + COOLDOWN).map(|(c, _)| c), Some(100));
        drop(a);
        assert!(
            pacers.slowest(now).is_none(),
            "a dropped member paces nothing"
        );
        let _c = pacers.join();
        assert_eq!(pacers.members.lock().len(), 2, "pruned on join");
    }
}
