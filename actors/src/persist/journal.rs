//! The journal: what sessions tell the persister, and the handle they tell it through.
//!
//! Sessions never touch SQLite or files themselves. Every event a session emits is handed, with
//! the session's current registry row, to the persister thread through a bounded crossbeam
//! channel ([`Journal`]); new output is announced through a [`Tap`] (one flag per session, so at
//! most one notification per session is ever queued and that channel cannot fill). Nothing here
//! blocks: a full queue is counted, logged, and the loss written into the journal itself as a
//! `journal_lost` row once the persister catches up.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use corral_runtime::Ring;
use crossbeam_channel::{Sender, TrySendError};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::event::{SessionEvent, SessionState};
use crate::persist::error::PersistError;
use crate::persist::segment::LogReader;
use crate::process::ExitStatus;
use crate::process::procfs::ProcessIdentity;
use crate::spec::SessionSpec;

/// What the registry holds about one session: enough to list it and to start it again.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionRecord {
    /// Session id (kept across server restarts).
    pub id: Uuid,
    /// Unique name.
    pub name: String,
    /// The spec it was spawned with.
    pub spec: SessionSpec,
    /// The mutable part.
    pub row: SessionRow,
    /// When it was created, ms since the epoch.
    pub created_ms: u64,
    /// When it last became Stopped/Failed (for retention), ms since the epoch.
    pub ended_ms: Option<u64>,
}

/// The mutable part of a [`SessionRecord`], rewritten with every event of the session.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionRow {
    /// Lifecycle state.
    pub state: SessionState,
    /// Why it is in that state, when there is something to say.
    pub reason: Option<String>,
    /// Who its main process is (pid = pgid = sid), while one runs.
    pub process: Option<ProcessIdentity>,
    /// Restarts so far.
    pub restarts: u64,
    /// The last exit.
    pub last_exit: Option<ExitStatus>,
    /// The agent's own session id (for the profile's resume template).
    pub agent_session_id: Option<String>,
    /// Where the agent keeps that session's conversation (resumed only once it exists).
    #[serde(default)]
    pub agent_transcript: Option<String>,
    /// A prompt of that agent session was submitted (it has a conversation to resume).
    #[serde(default)]
    pub agent_prompted: bool,
    /// It was running when the server shut down (it is started again at boot per its policy).
    pub interrupted: bool,
    /// Its removal was asked (`corral rm`): a server that dies before the removal is done
    /// leaves it to the next one, which ends its processes and deletes it (`recovery`) instead
    /// of keeping a session its user removed.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub removing: bool,
    /// While a graceful stop runs: its grace and when it began (ms since the epoch), so that a
    /// next server finishing it (`recovery`) gives the program what is left of the grace asked
    /// (`corral stop --grace 20`), not the spec's from the start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_grace: Option<(u64, u64)>,
    /// Sequence number of its last event.
    pub last_seq: u64,
}

/// What opening a session's log had to repair (storage damage): said in its journal, since
/// output a viewer could have asked for is gone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogRepair {
    /// Output `[from, to)` was unreadable in a sealed segment: it is a gap, the later segments
    /// are kept.
    Lost {
        /// First offset lost.
        from: u64,
        /// First offset after it.
        to: u64,
        /// What was found there.
        damage: String,
    },
    /// The log was cut at damage with nothing readable after it: it ends at `at` now, and
    /// `bytes` of its file past that could not be read.
    Cut {
        /// Where the log ends now.
        at: u64,
        /// File bytes dropped.
        bytes: u64,
        /// What was found there.
        damage: String,
    },
}

impl LogRepair {
    /// The repairs a log's recovery made.
    pub fn of(recovery: &crate::persist::segment::Recovery) -> Vec<LogRepair> {
        let damage = recovery
            .damage
            .as_ref()
            .map_or_else(String::new, ToString::to_string);
        let mut out: Vec<LogRepair> = recovery
            .lost
            .iter()
            .map(|&(from, to)| LogRepair::Lost {
                from,
                to,
                damage: damage.clone(),
            })
            .collect();
        if let Some(at) = recovery.tail_cut {
            out.push(LogRepair::Cut {
                at,
                bytes: recovery.truncated_bytes,
                damage,
            });
        }
        out
    }

    /// As said in the session's journal (a `recovery` event).
    pub fn describe(&self) -> String {
        match self {
            LogRepair::Lost { from, to, damage } => format!(
                "output {from}..{to} lost: the log was damaged ({damage}); recorded as a gap, the output after it kept"
            ),
            LogRepair::Cut { at, bytes, damage } => format!(
                "the log was damaged ({damage}): it ends at offset {at}, and {bytes} bytes of it past the damage could not be read"
            ),
        }
    }
}

/// Whether a record queued for state.db is committed yet: set by the persister thread after
/// the transaction that holds it (`Writer::commit`). A spawn looks at it before it asks for a
/// commit of its own: the record was queued before the process started, and is usually
/// committed by the time the process runs (docs/performance.md, session 35).
#[derive(Clone, Debug, Default)]
pub struct Committed(Arc<AtomicBool>);

impl Committed {
    /// It is in state.db.
    pub fn is_set(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }

    /// The transaction that held it committed.
    pub(crate) fn set(&self) {
        self.0.store(true, Ordering::Release);
    }
}

/// A request to the persister thread.
pub(crate) enum Op {
    /// A new session: insert its record; the flag is set once it is committed.
    Create(Box<SessionRecord>, Committed),
    /// An event of a session, with the session's row as of that event.
    Event(Box<(SessionRow, SessionEvent)>),
    /// Start persisting a session's output (opens or creates its segment log).
    Attach(Arc<Feed>),
    /// A session was removed: write out what is left of its output, then delete its records,
    /// events and scrollback.
    Remove(Uuid),
    /// Opens (recovering it) the segment log of a session about to be restored; answers its next
    /// offset, so the session's Ring continues the log's offsets.
    OpenLog(
        Uuid,
        tokio::sync::oneshot::Sender<Result<(u64, Vec<LogRepair>), PersistError>>,
    ),
    /// Every session record (boot).
    Load(tokio::sync::oneshot::Sender<Result<Vec<SessionRecord>, PersistError>>),
    /// Up to `limit` events of a session with `seq > after`, oldest first.
    Events {
        /// The session.
        id: Uuid,
        /// Only events after this sequence number.
        after: u64,
        /// Only events of this kind ([`crate::EventKind::name`]), or all.
        kind: Option<&'static str>,
        /// At most this many.
        limit: usize,
        /// The answer.
        reply: tokio::sync::oneshot::Sender<Result<Vec<SessionEvent>, PersistError>>,
    },
    /// A reader of a session's scrollback log as it is now.
    Reader(
        Uuid,
        tokio::sync::oneshot::Sender<Result<LogReader, PersistError>>,
    ),
    /// `PRAGMA integrity_check` (tests, `corral doctor`).
    IntegrityCheck(tokio::sync::oneshot::Sender<Result<String, PersistError>>),
    /// Answers once everything sent before it is committed and synced.
    Flush(tokio::sync::oneshot::Sender<()>),
    /// Answers after the next commit: `Ok` when everything sent before it is in the database (its
    /// WAL, in the page cache: a crash of the server loses none of it), else the reason it is
    /// not (it stays queued for retry). No sync is waited for.
    Committed(tokio::sync::oneshot::Sender<Result<(), String>>),
    /// Write out everything and end the thread; answers when done.
    Close(tokio::sync::oneshot::Sender<()>),
}

/// Counters of the persister, read by metrics and status.
#[derive(Debug, Default)]
pub struct PersistStats {
    /// Transactions committed.
    pub commits: AtomicU64,
    /// Journal operations committed.
    pub ops_committed: AtomicU64,
    /// Failed commits (each retried).
    pub db_errors: AtomicU64,
    /// Operations waiting for a retry after a failed commit.
    pub db_pending: AtomicU64,
    /// Operations refused because the journal queue was full (or dropped from the bounded retry
    /// queue): written into the journal as `journal_lost` rows.
    pub ops_dropped: AtomicU64,
    /// Output bytes written to segment logs.
    pub segment_bytes: AtomicU64,
    /// Failed segment writes (each retried).
    pub segment_errors: AtomicU64,
    /// Output bytes the persister never got (it lagged the Ring): recorded as gaps.
    pub gap_bytes: AtomicU64,
    /// The last persistence error, cleared when writes succeed again.
    pub(crate) last_error: Mutex<Option<String>>,
}

impl PersistStats {
    /// The current persistence error, if writes are failing.
    pub fn error(&self) -> Option<String> {
        self.last_error.lock().clone()
    }

    pub(crate) fn set_error(&self, e: Option<String>) {
        *self.last_error.lock() = e;
    }
}

/// Longest a query waits for the persister thread.
const QUERY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Bound on queued journal operations (events are rare next to output: this is minutes of a
/// thousand busy agents).
pub const JOURNAL_CAPACITY: usize = 65_536;

/// The sessions' handle to the persister thread.
#[derive(Clone)]
pub struct Journal {
    /// Operations.
    pub(crate) ops: Sender<Op>,
    /// "Session has new output" notifications.
    pub(crate) output: Sender<Uuid>,
    /// Counters.
    pub(crate) stats: Arc<PersistStats>,
}

impl std::fmt::Debug for Journal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Journal")
            .field("queued", &self.ops.len())
            .finish()
    }
}

impl Journal {
    /// Counters.
    pub fn stats(&self) -> &Arc<PersistStats> {
        &self.stats
    }

    /// Queues an operation without waiting. Returns false (counted and logged) if the queue is
    /// full or the persister is gone.
    pub(crate) fn send(&self, op: Op) -> bool {
        match self.ops.try_send(op) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) => {
                let n = self.stats.ops_dropped.fetch_add(1, Ordering::Relaxed) + 1;
                if n.is_power_of_two() {
                    tracing::error!(
                        dropped = n,
                        "persister journal queue full; operation not recorded"
                    );
                }
                false
            }
            Err(TrySendError::Disconnected(_)) => {
                let n = self.stats.ops_dropped.fetch_add(1, Ordering::Relaxed) + 1;
                if n.is_power_of_two() {
                    tracing::error!(dropped = n, "persister is gone; operation not recorded");
                }
                false
            }
        }
    }

    /// More than three quarters of the queue is taken: producers that can wait should.
    pub fn congested(&self) -> bool {
        self.ops.len() > JOURNAL_CAPACITY / 4 * 3
    }

    /// Queues an operation, waiting up to `within` for room: for what is worth a short wait
    /// (a query, a session's attach), where [`Self::send`] is for what is not. Err when the
    /// queue stayed full that long or the persister is gone (nothing was queued).
    pub(crate) async fn send_waiting(
        &self,
        mut op: Op,
        within: std::time::Duration,
    ) -> Result<(), PersistError> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            match self.ops.try_send(op) {
                Ok(()) => return Ok(()),
                Err(TrySendError::Full(back)) if tokio::time::Instant::now() < deadline => {
                    op = back;
                    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                }
                Err(TrySendError::Full(_)) => return Err(PersistError::Unavailable("queue full")),
                Err(TrySendError::Disconnected(_)) => {
                    return Err(PersistError::Unavailable("stopped"));
                }
            }
        }
    }

    /// Sends a query and waits for its answer (bounded): a query is worth a short wait for
    /// room in the queue, a journal event is not.
    pub(crate) async fn request<T>(
        &self,
        build: impl FnOnce(tokio::sync::oneshot::Sender<T>) -> Op,
    ) -> Result<T, PersistError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.send_waiting(build(tx), QUERY_TIMEOUT).await?;
        match tokio::time::timeout(QUERY_TIMEOUT, rx).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(_)) => Err(PersistError::Unavailable("stopped before answering")),
            Err(_) => Err(PersistError::Unavailable("no answer in time")),
        }
    }

    /// Waits for the next commit of the registry: `Ok` when everything sent before is in
    /// state.db (a crash of the server loses none of it), else why not (it is retried).
    pub async fn committed(&self) -> Result<(), PersistError> {
        self.request(Op::Committed)
            .await?
            .map_err(PersistError::Data)
    }

    /// A reader of a session's scrollback as it is now.
    pub async fn reader(&self, id: Uuid) -> Result<LogReader, PersistError> {
        self.request(|r| Op::Reader(id, r)).await?
    }

    /// Up to `limit` events of session `id` (of `kind` only, if given) after sequence number
    /// `after`, oldest first; every event sent before this request is among them (the queue is
    /// one, in order, and the writer commits before it reads).
    pub async fn events(
        &self,
        id: Uuid,
        kind: Option<&'static str>,
        after: u64,
        limit: usize,
    ) -> Result<Vec<SessionEvent>, PersistError> {
        self.request(|reply| Op::Events {
            id,
            after,
            kind,
            limit,
            reply,
        })
        .await?
    }

    /// A tap for one session's output.
    pub(crate) fn tap(&self, id: Uuid, ring_capacity: usize) -> Tap {
        Tap {
            id,
            urgent_lag: (ring_capacity / 4) as u64,
            persisted: AtomicU64::new(0),
            urgent: AtomicBool::new(false),
            dirty: AtomicBool::new(false),
            output: self.output.clone(),
            stats: self.stats.clone(),
        }
    }
}

/// Announces new output of one session to the persister: at most one notification is queued
/// per session (the flag is cleared by the persister when it has read), plus at most one
/// *urgent* one when the persister has left the flag set on purpose (a trickling session, read
/// in batches) and the session has since fallen a quarter of its Ring behind. So the
/// notification channel, sized for twice every session, never fills.
pub struct Tap {
    /// The session.
    id: Uuid,
    /// Unpersisted bytes that make a notification urgent.
    urgent_lag: u64,
    /// Offset up to which the persister has read.
    persisted: AtomicU64,
    /// An urgent notification is queued.
    urgent: AtomicBool,
    /// Set while a notification is queued.
    pub(crate) dirty: AtomicBool,
    /// Where notifications go.
    output: Sender<Uuid>,
    /// Counters.
    stats: Arc<PersistStats>,
}

impl Tap {
    /// New output was appended to the Ring, whose head is now `head`.
    pub fn notify(&self, head: u64) {
        if self.dirty.swap(true, Ordering::AcqRel) {
            let behind = head.saturating_sub(self.persisted.load(Ordering::Acquire));
            if behind >= self.urgent_lag && !self.urgent.swap(true, Ordering::AcqRel) {
                self.send();
            }
            return;
        }
        self.send();
    }

    /// The persister has read up to `offset`.
    pub(crate) fn persisted(&self, offset: u64) {
        self.persisted.store(offset, Ordering::Release);
        self.urgent.store(false, Ordering::Release);
    }

    fn send(&self) {
        if let Err(e) = self.output.try_send(self.id) {
            self.dirty.store(false, Ordering::Release);
            let n = self.stats.segment_errors.fetch_add(1, Ordering::Relaxed) + 1;
            if n.is_power_of_two() {
                tracing::error!(session = %self.id, error = %e, "output not announced to the persister");
            }
        }
    }
}

/// What the persister holds of one session: its id, its output Ring, the [`Tap`] it is told of
/// new output through, and where it says that the output cannot be persisted. The session owns
/// it (through its shared state) and hands it to the persister at attach, so the persistence
/// side never depends on the session's other state.
pub struct Feed {
    /// The session.
    pub id: Uuid,
    /// Its output.
    pub ring: Ring,
    /// Its new-output notifications (None without persistence).
    tap: Option<Tap>,
    /// Why its output cannot be persisted right now.
    error: Mutex<Option<String>>,
}

impl Feed {
    /// The feed of session `id`, tapped into `journal` when the tree persists.
    pub(crate) fn new(id: Uuid, ring: Ring, journal: Option<&Journal>) -> Arc<Feed> {
        let tap = journal.map(|j| j.tap(id, ring.capacity()));
        Arc::new(Feed {
            id,
            ring,
            tap,
            error: Mutex::new(None),
        })
    }

    /// New output was appended to the Ring: tell the persister.
    pub(crate) fn output_appended(&self) {
        if let Some(tap) = &self.tap {
            tap.notify(self.ring.head());
        }
    }

    /// The persister has read this session's output up to `offset`.
    pub(crate) fn tap_persisted(&self, offset: u64) {
        if let Some(tap) = &self.tap {
            tap.persisted(offset);
        }
    }

    /// The tap's "notification queued" flag (the persister clears it before reading).
    pub(crate) fn tap_flag(&self) -> &AtomicBool {
        static UNUSED: AtomicBool = AtomicBool::new(false);
        self.tap.as_ref().map(|t| &t.dirty).unwrap_or(&UNUSED)
    }

    /// Why this session's output cannot be persisted, if it cannot.
    pub(crate) fn persist_error(&self) -> Option<String> {
        self.error.lock().clone()
    }

    /// The offset up to which the persister has written this session's output (None without
    /// persistence).
    pub fn persisted_offset(&self) -> Option<u64> {
        self.tap
            .as_ref()
            .map(|t| t.persisted.load(Ordering::Acquire))
    }

    /// Sets (or clears) why the output cannot be persisted.
    pub(crate) fn set_persist_error(&self, e: Option<String>) {
        *self.error.lock() = e;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    fn journal(room: usize) -> (Journal, crossbeam_channel::Receiver<Op>) {
        let (ops, rx) = crossbeam_channel::bounded(room);
        let (output, _) = crossbeam_channel::bounded(1);
        let journal = Journal {
            ops,
            output,
            stats: Arc::default(),
        };
        (journal, rx)
    }

    #[tokio::test]
    async fn send_waiting_waits_for_room_then_says_why_it_gave_up() {
        let (journal, rx) = journal(1);
        assert!(journal.send(Op::Remove(Uuid::nil())), "room for one");
        // Room comes back within the wait: the operation is queued, behind the first.
        let drain = std::thread::spawn({
            let rx = rx.clone();
            move || {
                std::thread::sleep(Duration::from_millis(50));
                rx.recv().map(|_| ())
            }
        });
        let began = Instant::now();
        let second = Uuid::from_u128(2);
        journal
            .send_waiting(Op::Remove(second), Duration::from_secs(5))
            .await
            .expect("queued once the first was taken");
        assert!(began.elapsed() >= Duration::from_millis(40), "it waited");
        drain.join().expect("drain thread").expect("first op");
        assert!(matches!(rx.try_recv(), Ok(Op::Remove(id)) if id == second));
        // Full for longer than the wait: refused, and nothing queued.
        assert!(journal.send(Op::Remove(Uuid::nil())));
        let refused = journal
            .send_waiting(Op::Remove(second), Duration::from_millis(30))
            .await;
        assert!(
            matches!(refused, Err(PersistError::Unavailable("queue full"))),
            "{refused:?}"
        );
        assert_eq!(rx.len(), 1);
        // The persister gone: said at once.
        drop(rx);
        let gone = journal
            .send_waiting(Op::Remove(second), Duration::from_secs(5))
            .await;
        assert!(
            matches!(gone, Err(PersistError::Unavailable("stopped"))),
            "{gone:?}"
        );
    }
}
