//! Pace: the live subscribers a session's output waits for.
//!
//! Output need not outrun the viewers: it goes into the session's Ring at most one Ring
//! capacity beyond the slowest subscriber *in good standing* ([`Pacers::limit`]), so a viewer
//! that keeps up on average is never lapped by a burst — the server catching up after a
//! scheduling delay, or a viewer that was descheduled for a few milliseconds while the output
//! flooded (at the default 1 MiB Ring, a flood laps a viewer that is ~7 ms behind). Where the
//! output waits meanwhile depends on who reads it:
//! - where the holder reads the output (a pipe session, a terminal under an older holder), in
//!   the holder's shared ring (8 MiB at least): the held reader's copy stops at the limit, the
//!   program does not notice, and the log is late by that much at most;
//! - where the server reads it (a session without a holder, and a terminal under a holder,
//!   whose reads land in the holder's ring first: `super::kept`), in the program's own terminal
//!   (or pipe): the reader ([`reader_waits`]) reads no further while its next read could lap
//!   someone, and the program blocks on its full PTY, as it would under a slow terminal. That
//!   reader also waits for the persister (the held copy does too), so a flood never leaves a
//!   gap in the log.
//!
//! A viewer must never hold a session back for long. Output waits at most [`PATIENCE`] at a
//! time; then every subscriber more than half a Ring behind loses its standing for [`COOLDOWN`]
//! — the output goes on, and they are lapped and told so (`lagged`), as every slow viewer is.
//! And however many viewers are slow, it waits [`BUDGET`] in all per [`COOLDOWN`] at most
//! ([`Patience`], one per session whichever reader waits).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// How long a session's output waits for subscribers at a time.
pub const PATIENCE: Duration = Duration::from_millis(20);
/// How long it waits for them in all per [`COOLDOWN`].
pub const BUDGET: Duration = Duration::from_millis(200);
/// How long a subscriber that held the output back for [`PATIENCE`] is not waited for.
pub const COOLDOWN: Duration = Duration::from_secs(1);

/// A cursor that paces nothing (a subscription catching up from disk, or just made).
const IDLE: u64 = u64::MAX;

/// Since the process started (for metrics): waits begun, milliseconds waited, waits that ran
/// out (their subscribers then not waited for), windows whose budget was spent.
static WAITS: AtomicU64 = AtomicU64::new(0);
static WAITED_MS: AtomicU64 = AtomicU64::new(0);
static RAN_OUT: AtomicU64 = AtomicU64::new(0);
static SPENT: AtomicU64 = AtomicU64::new(0);

/// Sessions' output waits for subscribers since the process started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    /// Waits begun.
    pub waits: u64,
    /// Milliseconds waited in all.
    pub waited_ms: u64,
    /// Waits that ran out ([`PATIENCE`]): those holding the output back were then lapped.
    pub ran_out: u64,
    /// Windows of [`COOLDOWN`] in which a session's [`BUDGET`] was spent: for the rest of the
    /// window its output waited for nobody (viewers slower than it on average are lapped).
    pub budget_spent: u64,
}

/// The process's [`Stats`] so far.
pub fn stats() -> Stats {
    Stats {
        waits: WAITS.load(Ordering::Relaxed),
        waited_ms: WAITED_MS.load(Ordering::Relaxed),
        ran_out: RAN_OUT.load(Ordering::Relaxed),
        budget_spent: SPENT.load(Ordering::Relaxed),
    }
}

/// The subscribers of one session that its output may wait for, and how long it has waited.
pub struct Pacers {
    /// Every subscription's pacer; a dropped subscription's entry is pruned on the next join.
    members: Mutex<Vec<Weak<Pacer>>>,
    /// The session's waits so far (whichever reader waited).
    patience: Mutex<Patience>,
}

impl Default for Pacers {
    fn default() -> Self {
        Self {
            members: Mutex::default(),
            patience: Mutex::new(Patience::new(Instant::now())),
        }
    }
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

    /// How far output may go into a Ring of `capacity` at `now`: one Ring beyond the slowest
    /// member in good standing; `None` when nobody is waited for (no such member, or this
    /// window's [`BUDGET`] is spent).
    pub fn limit(&self, now: Instant, capacity: u64) -> Option<u64> {
        if !self.patience.lock().waits(now) {
            return None;
        }
        self.slowest(now)
            .map(|cursor| cursor.saturating_add(capacity))
    }

    /// The reader at `cursor` is held back by the [`limit`](Self::limit) at `now` (`held`), or
    /// not. Returns whether it waits: held, and the wait has not run out. When it runs out,
    /// every member more than half a Ring behind `cursor` is excused for [`COOLDOWN`] (the
    /// output goes on, and laps them).
    pub fn hold(&self, now: Instant, held: bool, cursor: u64, capacity: u64) -> bool {
        if self.patience.lock().held_back(now, held) {
            tracing::debug!(
                cursor,
                "subscribers held the output back too long; not waiting for them"
            );
            self.excuse_below(cursor.saturating_sub(capacity / 2), now + COOLDOWN);
            return false;
        }
        held
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

/// Whether the reader of a session without a holder, appending at `head` to a Ring of
/// `capacity`, waits before it reads up to `chunk` more bytes: the log is behind — the
/// holder's ring is `full` of unlogged output, or the read could lap the persister, which has
/// `logged` bytes (waited for as long as it takes, as a held copy waits for the log: the log
/// never has a gap for a flood to outrun it) — or the read could lap a member of `pacers` in
/// good standing (until the wait runs out).
///
/// Only the time the viewers alone hold the output back counts against their patience: while
/// the log holds it back, their wait ends (a slow disk under load once held a flood ~100 ms at
/// a time, and a viewer that kept up was charged for it, ran through the budget and was
/// lapped).
pub(crate) fn reader_waits(
    pacers: &Pacers,
    full: bool,
    logged: Option<u64>,
    head: u64,
    chunk: u64,
    capacity: u64,
) -> bool {
    // Readers take at most a Ring per read (`bulk::read_max`): a longer one would lap whoever
    // is a whole Ring behind anyway, so never wait for what cannot be had.
    let ahead = head.saturating_add(chunk.min(capacity));
    let now = Instant::now();
    if full || logged.is_some_and(|logged| ahead > logged.saturating_add(capacity)) {
        pacers.hold(now, false, head, capacity);
        return true;
    }
    let held = pacers
        .limit(now, capacity)
        .is_some_and(|limit| ahead > limit);
    pacers.hold(now, held, head, capacity)
}

/// How long a session's output has waited for subscribers: at most [`PATIENCE`] at a time and
/// [`BUDGET`] in any window of [`COOLDOWN`], whoever it waited for.
///
/// A wait is counted look by look (a reader looks every 1–2 ms while it waits), each gap
/// between two looks counting at most [`STEP`]: a longer gap is the reader's own delay — its
/// thread did not run (both CPUs busy, a worker running another task) — not the viewers'. Counted
/// by the clock instead, a reader that did not run for ~150 ms at a time on a loaded machine
/// charged a viewer that had kept up, spent the budget in two such gaps, and lapped it.
pub struct Patience {
    /// Start of the current window.
    window: Instant,
    /// Waited in it (not counting the current wait).
    spent: Duration,
    /// The current wait, if the output is held back.
    wait: Option<Wait>,
    /// This window's budget was spent (and counted in [`Stats::budget_spent`]).
    spent_out: bool,
}

/// A wait in progress.
#[derive(Clone, Copy)]
struct Wait {
    /// The last look that found the output held back.
    seen: Instant,
    /// Counted so far.
    waited: Duration,
}

/// The most one gap between two looks counts towards a wait (see [`Patience`]).
pub const STEP: Duration = Duration::from_millis(5);

impl Wait {
    /// The wait as counted at `now`.
    fn at(self, now: Instant) -> Duration {
        self.waited + now.saturating_duration_since(self.seen).min(STEP)
    }
}

impl Patience {
    /// A fresh window from `now`.
    pub fn new(now: Instant) -> Self {
        Self {
            window: now,
            spent: Duration::ZERO,
            wait: None,
            spent_out: false,
        }
    }

    /// Whether the copy may wait for subscribers at `now` (this window's budget is not spent).
    pub fn waits(&mut self, now: Instant) -> bool {
        if now.duration_since(self.window) >= COOLDOWN {
            self.window = now;
            self.spent = Duration::ZERO;
            self.spent_out = false;
        }
        if self.spent < BUDGET {
            return true;
        }
        if !std::mem::replace(&mut self.spent_out, true) {
            SPENT.fetch_add(1, Ordering::Relaxed);
        }
        false
    }

    /// The copy was held back by subscribers at `now` (`held`), or not. True when this wait
    /// ran out (it lasted [`PATIENCE`], or the window's budget is spent): those holding it back
    /// are to be excused.
    pub fn held_back(&mut self, now: Instant, held: bool) -> bool {
        match (held, self.wait) {
            (true, None) => {
                WAITS.fetch_add(1, Ordering::Relaxed);
                self.wait = Some(Wait {
                    seen: now,
                    waited: Duration::ZERO,
                });
                false
            }
            (true, Some(wait)) => {
                let waited = wait.at(now);
                if waited >= PATIENCE || self.spent + waited >= BUDGET {
                    self.end_wait(waited);
                    RAN_OUT.fetch_add(1, Ordering::Relaxed);
                    return true;
                }
                self.wait = Some(Wait { seen: now, waited });
                false
            }
            (false, Some(wait)) => {
                self.end_wait(wait.at(now));
                false
            }
            (false, None) => false,
        }
    }

    fn end_wait(&mut self, waited: Duration) {
        self.spent += waited;
        self.wait = None;
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
        // Held back from `from` to `to`, looking every millisecond as a reader does: whether
        // the wait ran out on the way.
        let held =
            |p: &mut Patience, from: u64, to: u64| (from..=to).any(|t| p.held_back(ms(t), true));
        // A subscriber holds the copy back 12 ms, then catches up: no one to excuse.
        assert!(p.waits(ms(0)));
        assert!(!held(&mut p, 0, 12));
        assert!(!p.held_back(ms(13), false));
        // One that holds it back 20 ms at a stretch runs the wait out.
        assert!(!held(&mut p, 20, 39));
        assert!(p.held_back(ms(40), true), "20 ms at a stretch");
        // A crowd, one after another, 15 ms each: the budget (200 ms a second) runs out, and
        // the copy waits for nobody until the window ends.
        let mut t = 100;
        let mut waits = 0;
        while p.waits(ms(t)) {
            if held(&mut p, t, t + 15) {
                break;
            }
            p.held_back(ms(t + 16), false);
            waits += 1;
            t += 20;
        }
        assert!(
            (10..=12).contains(&waits),
            "{waits} waits of 15 ms after 32 ms"
        );
        assert!(!p.waits(ms(999)));
        assert!(p.spent_out, "counted");
        assert!(p.waits(ms(1000)), "a new window");
        assert!(!p.spent_out);
    }

    #[test]
    fn a_gap_between_looks_counts_one_step_at_most() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut p = Patience::new(t0);
        // The reader looked, then did not run for 150 ms (a busy machine); the viewer had
        // caught up meanwhile: one step is counted, not 150 ms.
        assert!(!p.held_back(ms(0), true));
        assert!(!p.held_back(ms(150), false));
        assert_eq!(p.spent, STEP);
        // Twenty such gaps in a second would have spent the budget twice over; they leave it.
        for i in 1..20 {
            assert!(!p.held_back(ms(150 + i * 40), true));
            assert!(!p.held_back(ms(170 + i * 40), false));
        }
        assert!(p.waits(ms(990)), "{:?} spent", p.spent);
        // A viewer that really holds the output back still runs the wait out, by the steps.
        assert!(!p.held_back(ms(1000), true));
        assert!(!p.held_back(ms(1100), true));
        assert!(!p.held_back(ms(1200), true));
        assert!(!p.held_back(ms(1300), true));
        assert!(p.held_back(ms(1400), true), "four steps of 5 ms");
    }

    #[test]
    fn a_reader_without_a_holder_waits_for_the_log_always_and_for_a_viewer_a_while() {
        const MIB: u64 = 1 << 20;
        let pacers = Pacers::default();
        // The log a whole Ring behind: the next read would lap it, so the reader waits (as long
        // as it takes: no patience for the log).
        assert!(reader_waits(&pacers, false, Some(0), MIB, 4096, MIB));
        assert!(!reader_waits(&pacers, false, Some(4096), MIB, 4096, MIB));
        assert!(
            !reader_waits(&pacers, false, None, MIB, 4096, MIB),
            "nothing persists"
        );
        // A Ring smaller than a read: nobody is waited for in vain.
        assert!(!reader_waits(
            &pacers,
            false,
            Some(100),
            100,
            64 << 10,
            4096
        ));
        // A viewer a Ring behind: waited for until the wait runs out, then excused.
        let viewer = pacers.join();
        viewer.at(0);
        assert!(reader_waits(&pacers, false, None, MIB, 4096, MIB));
        assert!(
            looks_until_it_runs_out(|| reader_waits(&pacers, false, None, MIB, 4096, MIB))
                >= PATIENCE,
            "ran out"
        );
        assert!(
            !reader_waits(&pacers, false, None, MIB, 4096, MIB),
            "excused"
        );
        assert!(pacers.slowest(Instant::now()).is_none());
    }

    #[test]
    fn a_wait_for_the_log_is_not_charged_to_the_viewers() {
        const MIB: u64 = 1 << 20;
        let pacers = Pacers::default();
        let viewer = pacers.join();
        viewer.at(0);
        // The viewer holds the reader back, then the log does, longer than the viewers'
        // patience (a slow disk), and a full holder ring too.
        assert!(reader_waits(&pacers, false, None, MIB, 4096, MIB));
        assert!(reader_waits(&pacers, false, Some(0), MIB, 4096, MIB));
        assert!(
            pacers.patience.lock().wait.is_none(),
            "the viewers' wait ended"
        );
        std::thread::sleep(PATIENCE + Duration::from_millis(5));
        assert!(reader_waits(&pacers, false, Some(0), MIB, 4096, MIB));
        assert!(reader_waits(&pacers, true, None, MIB, 4096, MIB));
        // The log caught up, the viewer has not: its wait begins afresh (not run out).
        assert!(reader_waits(&pacers, false, Some(MIB), MIB, 4096, MIB));
        assert_eq!(pacers.slowest(Instant::now()), Some(0), "still waited for");
        let waited =
            looks_until_it_runs_out(|| reader_waits(&pacers, false, Some(MIB), MIB, 4096, MIB));
        assert!(
            waited >= PATIENCE,
            "its own wait runs out, after {waited:?}"
        );
    }

    /// Looks every millisecond, as a waiting reader does, while `waits` says so (at most a
    /// second): how long it waited.
    fn looks_until_it_runs_out(mut waits: impl FnMut() -> bool) -> Duration {
        let t = Instant::now();
        while waits() {
            assert!(t.elapsed() < COOLDOWN, "never ran out");
            std::thread::sleep(Duration::from_millis(1));
        }
        t.elapsed()
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
