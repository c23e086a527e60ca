//! The persister thread: the one place that writes `state.db` and the segment logs.
//!
//! A dedicated OS thread (blocking I/O never runs on a tokio worker) fed by two crossbeam
//! channels: journal operations ([`Op`]) and "this session has new output" notifications. Each
//! turn it takes everything queued (up to [`BATCH`] operations) and commits it in **one**
//! transaction (group commit: a burst of a thousand events is one fsync of the WAL, not a
//! thousand), then copies new output of every notified session from its Ring into its segment
//! log.
//!
//! Failures are never silent and never lose what can be kept:
//! - a failed commit keeps the batch and retries it every [`RETRY`] (the retry queue is bounded
//!   by [`MAX_PENDING`]; beyond it the oldest *events* are dropped, counted, and a
//!   `journal_lost` row is written once the database accepts writes again);
//! - a failed segment write rewinds that session's reader to the log's end and retries; if the
//!   Ring overwrote the bytes meanwhile, the log gets an explicit gap;
//! - the error is logged, counted in [`PersistStats`], shown in every session's status while it
//!   lasts, and cleared when writes succeed again.
//!
//! Idle, the thread blocks in `select` with no timeout: no wakeups, no CPU. A timeout is armed
//! only while something waits: a retry, or logs written since their last sync ([`SYNC_EVERY`]).
//!
//! Under the default [`FsyncPolicy::OnRotate`] the `fdatasync`s (a sealed segment, and every log
//! written to within the last [`SYNC_EVERY`]) run on a second thread, the *syncer*, on dup'd
//! file handles: a flush to disk takes tens of milliseconds, and a copier blocked that long
//! lets busy sessions' Rings lap it (measured: 100 sessions writing at once lost 16 % of their
//! output to gaps with inline syncs, none with the syncer). Flush requests are answered by the
//! syncer, after the syncs queued before them.

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use corral_runtime::{Read, RingReader};
use crossbeam_channel::{Receiver, select};
use uuid::Uuid;

use crate::persist::error::PersistError;
use crate::persist::journal::Feed;
use crate::persist::journal::{Committed, Op, PersistStats};
use crate::persist::segment::{FsyncPolicy, LogReader, SegmentConfig, SegmentLog};
use crate::persist::store::{DbOp, Store, now_ms};
use crate::persist::syncer::{SYNC_QUEUE, SyncJob};

/// Most journal operations in one transaction.
const BATCH: usize = 16_384;
/// Bound on operations kept for retry after failed commits.
pub const MAX_PENDING: usize = 100_000;
/// Delay between retries of failed writes.
const RETRY: Duration = Duration::from_secs(1);
/// Logs written to are synced (fdatasync) at most this long after the write.
const SYNC_EVERY: Duration = Duration::from_secs(1);
/// Most output bytes copied per session per turn (fairness between busy sessions).
const TURN_BYTES: usize = 4 << 20;
/// Bytes per Ring read.
const READ_BYTES: usize = 1 << 20;
/// A trickling session's output is gathered this long before it is read again (at most ~100
/// wakeups a second while sessions trickle output; none when idle).
const COALESCE: Duration = Duration::from_millis(10);
/// Fewer new bytes than this in a turn make a session a trickle, parked for [`COALESCE`].
const TRICKLE: u64 = 4096;
/// How often the event age bound is enforced.
const AGE_CHECK: Duration = Duration::from_secs(60);
/// How often the persister looks whether `state.db` is still its file (`Store::replaced`).
const FILE_CHECK: Duration = Duration::from_secs(1);

/// One session whose output is being persisted.
struct Scrollback {
    /// The session (its Ring, its tap flag, its error slot).
    shared: Arc<Feed>,
    /// Cursor in the Ring.
    reader: RingReader,
    /// The log.
    log: SegmentLog,
    /// Written since the last sync.
    unsynced: bool,
    /// Failing: retry at the next retry tick.
    failing: bool,
    /// With the syncer: the segment being written and a handle on it, so it can be synced
    /// once sealed (no handle: taking one failed — counted and logged; the segment's number
    /// still tells when it is sealed, so the next one gets a handle again).
    segment: Option<(u64, Option<std::fs::File>)>,
    /// Gaps recorded because this session's output lapped the persister (every one is counted
    /// in the stats; the log line is written for the 1st, 2nd, 4th, 8th, … so a sustained flood
    /// does not flood the log too).
    gaps: u64,
}

/// State of the thread.
pub(crate) struct Writer {
    /// The database.
    store: Store,
    /// `<data>/logs`.
    logs_dir: PathBuf,
    /// Segment settings.
    segment: SegmentConfig,
    /// Sessions whose output is persisted.
    scrollback: HashMap<Uuid, Scrollback>,
    /// Logs opened for restored sessions, waiting for their Attach.
    opened: HashMap<Uuid, SegmentLog>,
    /// New sessions with no output yet: their log is created at their first byte (a session
    /// that never writes costs no directory and no file; spawning stays cheap).
    unborn: HashMap<Uuid, Arc<Feed>>,
    /// Sessions whose log could not be opened (its folder removed while it was made, a full
    /// disk): tried again every [`RETRY`] — their output waits in their Ring (and holder)
    /// meanwhile; once attached they are written as any other.
    unopened: HashMap<Uuid, Arc<Feed>>,
    /// Operations not yet committed (after a failure, kept for retry).
    pending: VecDeque<DbOp>,
    /// The flags of the records among them, set once `pending` is committed.
    committing: Vec<Committed>,
    /// Counters.
    stats: Arc<PersistStats>,
    /// `ops_dropped` already written into the journal as `journal_lost`.
    dropped_recorded: u64,
    /// The last commit failed.
    db_failing: bool,
    /// Last enforcement of the age bound.
    last_age_check: Instant,
    /// See [`FILE_CHECK`].
    last_file_check: Instant,
    /// Last sync of the logs.
    last_sync: Instant,
    /// Flush requests answered at the end of this turn.
    flushes: Vec<tokio::sync::oneshot::Sender<()>>,
    /// Trickling sessions whose notification flag is left set, read again after [`COALESCE`].
    parked: HashSet<Uuid>,
    /// When the first of them was parked.
    parked_at: Instant,
    /// The syncer thread's queue and handle (policy OnRotate).
    syncer: Option<(
        crossbeam_channel::Sender<SyncJob>,
        std::thread::JoinHandle<()>,
    )>,
}

impl Writer {
    pub(crate) fn new(
        store: Store,
        data_dir: &Path,
        segment: SegmentConfig,
        stats: Arc<PersistStats>,
    ) -> Writer {
        let mut segment = segment;
        let syncer = if segment.fsync == FsyncPolicy::OnRotate {
            // The logs themselves never sync; the syncer does it on their behalf.
            segment.fsync = FsyncPolicy::Never;
            let (tx, rx) = crossbeam_channel::bounded(SYNC_QUEUE);
            let st = stats.clone();
            match std::thread::Builder::new()
                .name("corral-syncer".into())
                .spawn(move || super::syncer::run(rx, st))
            {
                Ok(handle) => Some((tx, handle)),
                Err(e) => {
                    tracing::error!(error = %e, "no syncer thread; scrollback syncs inline");
                    segment.fsync = FsyncPolicy::OnRotate;
                    None
                }
            }
        } else {
            None
        };
        Writer {
            syncer,
            store,
            logs_dir: data_dir.join("logs"),
            segment,
            scrollback: HashMap::new(),
            opened: HashMap::new(),
            unborn: HashMap::new(),
            unopened: HashMap::new(),
            pending: VecDeque::new(),
            committing: Vec::new(),
            stats,
            dropped_recorded: 0,
            db_failing: false,
            last_age_check: Instant::now(),
            last_file_check: Instant::now(),
            last_sync: Instant::now(),
            flushes: Vec::new(),
            parked: HashSet::new(),
            parked_at: Instant::now(),
        }
    }

    /// Runs until [`Op::Close`] or until both channels are disconnected, then writes out what is
    /// left.
    pub(crate) fn run(mut self, ops: Receiver<Op>, output: Receiver<Uuid>) {
        let mut ops_open = true;
        let mut output_open = true;
        let mut dirty: HashSet<Uuid> = HashSet::new();
        while ops_open || output_open {
            // Sessions with more output than one turn's budget go on at once.
            let wait = if dirty.is_empty() {
                self.wait_bound()
            } else {
                Some(Duration::ZERO)
            };
            let never = crossbeam_channel::never();
            let ops_rx = if ops_open { &ops } else { &never };
            let never_out = crossbeam_channel::never();
            let out_rx = if output_open { &output } else { &never_out };
            // Block for the first thing to do.
            let first = match wait {
                Some(d) => select! {
                    recv(ops_rx) -> m => Some(m.map(Ok)),
                    recv(out_rx) -> m => Some(m.map(Err)),
                    default(d) => None,
                },
                None => select! {
                    recv(ops_rx) -> m => Some(m.map(Ok)),
                    recv(out_rx) -> m => Some(m.map(Err)),
                },
            };
            let mut batch: Vec<Op> = Vec::new();
            match first {
                Some(Ok(Ok(op))) => batch.push(op),
                Some(Ok(Err(id))) => {
                    dirty.insert(id);
                }
                Some(Err(_)) => {
                    // One side disconnected; find out which.
                    if ops_open
                        && matches!(
                            ops.try_recv(),
                            Err(crossbeam_channel::TryRecvError::Disconnected)
                        )
                    {
                        ops_open = false;
                    }
                    if output_open
                        && matches!(
                            output.try_recv(),
                            Err(crossbeam_channel::TryRecvError::Disconnected)
                        )
                    {
                        output_open = false;
                    }
                }
                None => {}
            }
            // Take whatever else is queued (group commit).
            while batch.len() < BATCH {
                match ops.try_recv() {
                    Ok(op) => batch.push(op),
                    Err(_) => break,
                }
            }
            while let Ok(id) = output.try_recv() {
                dirty.insert(id);
            }
            let close = batch.iter().position(|op| matches!(op, Op::Close(_)));
            let close = close.map(|i| batch.remove(i));
            self.turn(batch, &mut dirty);
            if let Some(Op::Close(reply)) = close {
                self.close();
                answer(reply, ());
                return;
            }
        }
        self.close();
    }

    /// How long the next wait may last: forever when idle.
    fn wait_bound(&self) -> Option<Duration> {
        let retrying = self.db_failing
            || !self.pending.is_empty()
            || !self.unopened.is_empty()
            || self.scrollback.values().any(|s| s.failing);
        let unsynced = self.scrollback.values().any(|s| s.unsynced);
        let parked =
            (!self.parked.is_empty()).then(|| COALESCE.saturating_sub(self.parked_at.elapsed()));
        let base = match (retrying, unsynced) {
            (true, _) => Some(RETRY),
            (false, true) => Some(SYNC_EVERY.saturating_sub(self.last_sync.elapsed())),
            (false, false) => None,
        };
        match (base, parked) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// One turn: apply operations, commit, copy output, sync when due.
    fn turn(&mut self, batch: Vec<Op>, dirty: &mut HashSet<Uuid>) {
        let mut removed = Vec::new();
        let mut committed = Vec::new();
        for op in batch {
            match op {
                Op::Create(rec, committed) => {
                    self.push(DbOp::Create(rec));
                    self.committing.push(committed);
                }
                Op::Event(ev) => self.push(DbOp::Event(ev)),
                Op::Attach(shared) => self.attach(shared),
                Op::Remove(id) => {
                    // Write out what is left, then delete after the commit below.
                    self.pump(id, usize::MAX);
                    self.scrollback.remove(&id);
                    self.opened.remove(&id);
                    self.unborn.remove(&id);
                    self.unopened.remove(&id);
                    self.parked.remove(&id);
                    self.push(DbOp::Remove(id));
                    removed.push(id);
                }
                Op::OpenLog(id, reply) => {
                    let result = self.open_log(id).map(|(log, repairs)| {
                        let next = log.next_offset();
                        self.opened.insert(id, log);
                        (next, repairs)
                    });
                    answer(reply, result);
                }
                Op::Load(reply) => {
                    self.commit();
                    answer(reply, self.store.load());
                }
                Op::Events {
                    id,
                    after,
                    kind,
                    limit,
                    reply,
                } => {
                    self.commit();
                    answer(reply, self.store.events(id, after, kind, limit));
                }
                Op::Reader(id, reply) => {
                    if let Some(shared) = self.unborn.remove(&id) {
                        self.attach_now(shared);
                    }
                    self.pump(id, usize::MAX);
                    let result = match self.scrollback.get(&id) {
                        Some(s) => Ok(s.log.reader()),
                        None => LogReader::open(self.logs_dir.join(id.to_string()))
                            .map(|(r, _)| r)
                            .map_err(|source| PersistError::Io {
                                what: format!("opening the scrollback of {id}"),
                                source,
                            }),
                    };
                    answer(reply, result);
                }
                Op::IntegrityCheck(reply) => {
                    self.commit();
                    answer(reply, self.store.integrity_check());
                }
                Op::Flush(reply) => self.flushes.push(reply),
                Op::Committed(reply) => committed.push(reply),
                Op::Close(reply) => answer(reply, ()),
            }
        }
        self.commit();
        for reply in committed {
            let result = match self.pending.is_empty() {
                true => Ok(()),
                false => Err(self
                    .stats
                    .error()
                    .unwrap_or_else(|| "state.db: not committed".into())),
            };
            answer(reply, result);
        }
        for id in removed {
            let dir = self.logs_dir.join(id.to_string());
            if let Err(e) = std::fs::remove_dir_all(&dir)
                && e.kind() != std::io::ErrorKind::NotFound
            {
                tracing::error!(session = %id, dir = %dir.display(), error = %e, "could not delete scrollback");
            }
        }
        let retry_due = self.last_sync.elapsed() >= RETRY;
        let mut ids: Vec<Uuid> = dirty.drain().collect();
        // Parked sessions are due again after COALESCE, or now when someone waits on a flush.
        if !self.parked.is_empty()
            && (self.parked_at.elapsed() >= COALESCE || !self.flushes.is_empty())
        {
            ids.extend(self.parked.drain());
        }
        for id in ids {
            if let Some(shared) = self.unborn.remove(&id) {
                self.attach_now(shared);
            }
            self.parked.remove(&id);
            let before = match self.scrollback.get(&id) {
                Some(s) => s.reader.cursor(),
                None => continue,
            };
            let more = self.pump(id, TURN_BYTES);
            let Some(s) = self.scrollback.get(&id) else {
                continue;
            };
            let copied = s.reader.cursor().saturating_sub(before);
            if more {
                s.shared.tap_flag().store(false, Ordering::Release);
                dirty.insert(id);
            } else if copied > 0 && copied < TRICKLE {
                // A trickle (keystroke echoes, a status line): leave its flag set, so its next
                // bytes do not wake this thread; they are picked up after COALESCE (sooner if
                // the session falls a quarter of its Ring behind: the Tap sends an urgent
                // notification then).
                if self.parked.is_empty() {
                    self.parked_at = Instant::now();
                }
                self.parked.insert(id);
            } else {
                // Cleared, then read once more: bytes appended after the last read and before
                // the clear would otherwise wait for the next notification.
                s.shared.tap_flag().store(false, Ordering::Release);
                if self.pump(id, TURN_BYTES) {
                    dirty.insert(id);
                }
            }
        }
        if retry_due {
            let unopened: Vec<Arc<Feed>> = self.unopened.drain().map(|(_, f)| f).collect();
            for shared in unopened {
                let id = shared.id;
                self.attach_now(shared);
                if self.scrollback.contains_key(&id) && self.pump(id, TURN_BYTES) {
                    dirty.insert(id);
                }
            }
            let failing: Vec<Uuid> = self
                .scrollback
                .iter()
                .filter(|(_, s)| s.failing)
                .map(|(id, _)| *id)
                .collect();
            for id in failing {
                if self.pump(id, TURN_BYTES) {
                    dirty.insert(id);
                }
            }
        }
        if !self.flushes.is_empty() || self.last_sync.elapsed() >= SYNC_EVERY {
            self.sync_logs();
        }
        if self.pending.is_empty() {
            let flushes: Vec<_> = self.flushes.drain(..).collect();
            for reply in flushes {
                self.answer_after_syncs(reply);
            }
        }
    }

    /// Answers a flush once the syncs queued so far are done.
    fn answer_after_syncs(&self, reply: tokio::sync::oneshot::Sender<()>) {
        match &self.syncer {
            Some((tx, _)) => {
                if let Err(e) = tx.send(SyncJob::Done(reply)) {
                    // The syncer is gone: nothing more will be synced; answer anyway.
                    if let SyncJob::Done(reply) = e.into_inner() {
                        answer(reply, ());
                    }
                }
            }
            None => answer(reply, ()),
        }
    }

    /// Queues a database operation, keeping the retry queue bounded.
    fn push(&mut self, op: DbOp) {
        self.pending.push_back(op);
        if self.pending.len() > MAX_PENDING {
            // Drop the oldest event; creations and removals are what recovery depends on.
            if let Some(pos) = self
                .pending
                .iter()
                .position(|o| matches!(o, DbOp::Event(_)))
            {
                self.pending.remove(pos);
                self.stats.ops_dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Commits everything pending in transactions of at most [`BATCH`] operations.
    fn commit(&mut self) {
        let dropped = self.stats.ops_dropped.load(Ordering::Relaxed);
        if dropped > self.dropped_recorded {
            self.pending
                .push_back(DbOp::Lost(dropped - self.dropped_recorded));
            self.dropped_recorded = dropped;
        }
        while !self.pending.is_empty() {
            let n = self.pending.len().min(BATCH);
            let chunk: Vec<DbOp> = self.pending.iter().take(n).cloned().collect();
            match self.store.apply(&chunk) {
                Ok(()) => {
                    self.pending.drain(..n);
                    self.stats.commits.fetch_add(1, Ordering::Relaxed);
                    self.stats
                        .ops_committed
                        .fetch_add(n as u64, Ordering::Relaxed);
                    if self.db_failing {
                        self.db_failing = false;
                        tracing::info!("state.db accepts writes again");
                        self.refresh_error();
                    }
                }
                Err(e) => {
                    self.stats.db_errors.fetch_add(1, Ordering::Relaxed);
                    if !self.db_failing {
                        tracing::error!(error = %e, pending = self.pending.len(), "state.db write failed; retrying every second");
                    }
                    self.db_failing = true;
                    // Its message names state.db already.
                    self.stats.set_error(Some(e.to_string()));
                    break;
                }
            }
        }
        self.stats
            .db_pending
            .store(self.pending.len() as u64, Ordering::Relaxed);
        if self.pending.is_empty() {
            for committed in self.committing.drain(..) {
                committed.set();
            }
        }
        if self.last_file_check.elapsed() >= FILE_CHECK {
            self.last_file_check = Instant::now();
            self.put_back_if_gone();
        }
        if !self.db_failing {
            let check_age = self.last_age_check.elapsed() >= AGE_CHECK;
            if check_age {
                self.last_age_check = Instant::now();
            }
            if let Err(e) = self.store.enforce_retention(check_age) {
                tracing::warn!(error = %e, "event retention not enforced this turn");
            }
        }
    }

    /// `state.db` removed or replaced while the server runs (a cleanup's `rm state.db*`): its
    /// records are written there again from this store's (still open) copy. Unnoticed, every
    /// commit went to a file nobody would read again, and the next server ended every running
    /// session as a holder of no record, with its scrollback.
    fn put_back_if_gone(&mut self) {
        if !self.store.replaced() {
            return;
        }
        match self.store.write_again() {
            Ok(()) => {
                tracing::error!(
                    "state.db was removed or replaced while the server ran: written again from the server's copy"
                );
                self.stats.db_errors.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                // Tried again at the next check.
                self.stats.db_errors.fetch_add(1, Ordering::Relaxed);
                tracing::error!(error = %e, "state.db was removed or replaced while the server ran, and could not be written again");
                self.stats.set_error(Some(format!(
                    "state.db was removed while the server ran and could not be written again: {e}"
                )));
                self.db_failing = true;
            }
        }
    }

    /// Sets or clears the shown error from the current failures.
    fn refresh_error(&self) {
        let e = if self.db_failing {
            self.stats.error()
        } else {
            self.scrollback
                .values()
                .find_map(|s| s.shared.persist_error())
                .map(|e| format!("scrollback: {e}"))
        };
        self.stats.set_error(e);
    }

    /// A session's log (opened and repaired if it was not open yet) and what was repaired.
    fn open_log(
        &mut self,
        id: Uuid,
    ) -> Result<(SegmentLog, Vec<crate::persist::journal::LogRepair>), PersistError> {
        if let Some(log) = self.opened.remove(&id) {
            return Ok((log, Vec::new()));
        }
        let dir = self.logs_dir.join(id.to_string());
        match SegmentLog::open(&dir, self.segment.clone()) {
            Ok((log, recovery)) => {
                if let Some(damage) = &recovery.damage {
                    tracing::warn!(session = %id, %damage, truncated = recovery.truncated_bytes, removed = recovery.removed_segments, "scrollback repaired");
                }
                Ok((log, crate::persist::journal::LogRepair::of(&recovery)))
            }
            Err(source) => Err(PersistError::Io {
                what: format!("opening the scrollback {}", dir.display()),
                source,
            }),
        }
    }

    fn attach(&mut self, shared: Arc<Feed>) {
        let id = shared.id;
        let fresh = !self.opened.contains_key(&id) && shared.ring.head() == 0;
        if fresh && !self.logs_dir.join(id.to_string()).exists() {
            self.unborn.insert(id, shared);
            return;
        }
        self.attach_now(shared);
    }

    fn attach_now(&mut self, shared: Arc<Feed>) {
        let id = shared.id;
        match self.open_log(id) {
            // Repairs are said by a restore, which opens the log first (`Op::OpenLog`).
            Ok((log, _)) => {
                // Opened at a retry: the error it showed is over.
                if shared.persist_error().is_some() {
                    shared.set_persist_error(None);
                    tracing::info!(session = %id, "scrollback opened at last");
                }
                // From the log's end: a restored session's Ring starts there; a new one at 0.
                let reader = shared
                    .ring
                    .reader(log.next_offset())
                    .unwrap_or_else(|_| shared.ring.reader_at_head());
                let segment = self
                    .syncer
                    .as_ref()
                    .map(|_| (log.current_segment(), Self::handle(&self.stats, id, &log)));
                self.scrollback.insert(
                    id,
                    Scrollback {
                        shared,
                        reader,
                        log,
                        unsynced: false,
                        failing: false,
                        segment,
                        gaps: 0,
                    },
                );
                // Output may have arrived before the attach.
                self.pump(id, TURN_BYTES);
                self.refresh_error();
            }
            Err(e) => {
                tracing::error!(session = %id, error = %e, "scrollback not persisted");
                self.stats.segment_errors.fetch_add(1, Ordering::Relaxed);
                // Shown in `ps` as the operator's clue: the message is the record.
                shared.set_persist_error(Some(e.to_string()));
                self.stats.set_error(Some(e.to_string()));
                // Tried again (it was never: the session's log stayed unopened for good).
                self.unopened.insert(id, shared);
            }
        }
    }

    /// Copies up to `budget` new bytes of a session's output into its log. Returns true if more
    /// is waiting.
    fn pump(&mut self, id: Uuid, budget: usize) -> bool {
        let Some(s) = self.scrollback.get_mut(&id) else {
            return false;
        };
        let mut buf = Vec::new();
        let mut copied = 0usize;
        let mut recovered = false;
        while copied < budget {
            buf.clear();
            match s.reader.try_read(&mut buf, READ_BYTES) {
                Read::Data { offset, len } => match s.log.append(offset, now_ms(), &buf) {
                    Ok(()) => {
                        copied += len;
                        s.unsynced = true;
                        if s.failing {
                            s.failing = false;
                            recovered = true;
                        }
                    }
                    Err(e) => {
                        self.stats.segment_errors.fetch_add(1, Ordering::Relaxed);
                        if !s.failing {
                            tracing::error!(session = %id, error = %e, "scrollback write failed; retrying every second");
                        }
                        s.failing = true;
                        let msg = format!("scrollback write failed: {e}");
                        s.shared.set_persist_error(Some(msg.clone()));
                        self.stats.set_error(Some(msg));
                        // Rewind to what the log has: appends are idempotent by offset, and
                        // bytes the Ring dropped meanwhile become a recorded gap.
                        s.reader = s
                            .shared
                            .ring
                            .reader(s.log.next_offset())
                            .unwrap_or_else(|_| s.shared.ring.reader_at_head());
                        return false;
                    }
                },
                Read::Lagged(l) => {
                    let lost =
                        self.stats.gap_bytes.fetch_add(l.lost(), Ordering::Relaxed) + l.lost();
                    s.gaps += 1;
                    if s.gaps.is_power_of_two() {
                        tracing::warn!(session = %id, from = l.from, to = l.to, gaps = s.gaps,
                            gap_bytes_all_sessions = lost, "persister lagged the Ring; gap recorded");
                    } else {
                        tracing::debug!(session = %id, from = l.from, to = l.to, "persister lagged the Ring; gap recorded");
                    }
                }
                Read::Empty | Read::Closed => break,
            }
        }
        self.stats
            .segment_bytes
            .fetch_add(copied as u64, Ordering::Relaxed);
        s.shared.tap_persisted(s.reader.cursor());
        if let Some((tx, _)) = &self.syncer
            && let Some((n, _)) = &s.segment
            && *n != s.log.current_segment()
        {
            // Sealed: sync it in the background, follow the new segment.
            // A segment without a handle was counted when taking it failed.
            if let Some((_, Some(sealed))) = s.segment.take()
                && tx
                    .try_send(SyncJob::Sync(s.shared.clone(), sealed))
                    .is_err()
            {
                self.stats.segment_errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(session = %id, "syncer queue full; a sealed segment was not synced");
            }
            let handle = Self::handle(&self.stats, id, &s.log);
            s.segment = Some((s.log.current_segment(), handle));
        }
        if recovered {
            s.shared.set_persist_error(None);
            tracing::info!(session = %id, "scrollback writes succeed again");
            self.refresh_error();
        }
        copied >= budget
    }

    /// A handle on `log`'s current segment for the syncer; a failure (no descriptor left) is
    /// counted and logged: that segment is not synced when sealed (the kernel writes it back
    /// in its own time), and the next segment gets a handle again.
    fn handle(stats: &PersistStats, id: Uuid, log: &SegmentLog) -> Option<std::fs::File> {
        match log.current_file() {
            Ok(f) => Some(f),
            Err(e) => {
                stats.segment_errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(session = %id, error = %e, "no handle on the log's segment: it is synced later");
                None
            }
        }
    }

    /// Syncs every log written since its last sync (through the syncer when there is one).
    fn sync_logs(&mut self) {
        self.last_sync = Instant::now();
        if let Some((tx, _)) = &self.syncer {
            for s in self.scrollback.values_mut().filter(|s| s.unsynced) {
                match s.log.current_file() {
                    Ok(f) => {
                        if tx.try_send(SyncJob::Sync(s.shared.clone(), f)).is_ok() {
                            s.unsynced = false;
                        }
                    }
                    Err(e) => {
                        tracing::warn!(session = %s.shared.id, error = %e, "no handle to sync")
                    }
                }
            }
            return;
        }
        if self.segment.fsync == FsyncPolicy::Never {
            for s in self.scrollback.values_mut() {
                s.unsynced = false;
            }
            return;
        }
        for (id, s) in self.scrollback.iter_mut().filter(|(_, s)| s.unsynced) {
            match s.log.sync() {
                Ok(()) => s.unsynced = false,
                Err(e) => {
                    self.stats.segment_errors.fetch_add(1, Ordering::Relaxed);
                    tracing::error!(session = %id, error = %e, "scrollback sync failed");
                    s.shared
                        .set_persist_error(Some(format!("scrollback sync failed: {e}")));
                }
            }
        }
    }

    /// Writes out everything (end of the thread).
    fn close(&mut self) {
        let ids: Vec<Uuid> = self.scrollback.keys().copied().collect();
        for id in ids {
            self.pump(id, usize::MAX);
        }
        self.commit();
        // The next server reads this file: it must be the one written.
        self.put_back_if_gone();
        self.sync_logs();
        if let Err(e) = self.store.checkpoint() {
            tracing::warn!(error = %e, "WAL checkpoint at close failed");
        }
        if !self.pending.is_empty() {
            tracing::error!(
                pending = self.pending.len(),
                "persister closing with uncommitted operations"
            );
        }
        let flushes: Vec<_> = self.flushes.drain(..).collect();
        for reply in flushes {
            self.answer_after_syncs(reply);
        }
        if let Some((tx, handle)) = self.syncer.take() {
            // Sealed segments of logs still being written were handed over already; the current
            // ones were just queued by sync_logs. Closing the queue ends the syncer after them.
            drop(tx);
            if handle.join().is_err() {
                tracing::error!("syncer thread panicked");
            }
        }
        tracing::info!("persister closed");
    }
}

/// Answers a request; a requester that stopped waiting is not an error.
fn answer<T>(reply: tokio::sync::oneshot::Sender<T>, value: T) {
    if reply.send(value).is_err() {
        tracing::debug!("persister request abandoned");
    }
}
