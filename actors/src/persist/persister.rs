//! The Persister actor: owns the persister thread's life, started first and stopped last in the
//! corral tree, and [`Persist`], the async API over the thread (load the registry, open a log,
//! read events and scrollback, flush, integrity check).
//!
//! The actor holds no data itself: the thread ([`super::writer`]) does all I/O.
//! [`Persister::start_thread`] starts the thread before the tree and waits until the database
//! is open and migrated (a bad data dir fails the tree's start with the store's message), so the
//! API exists before any session; the actor takes the thread's handle; `post_stop` asks the
//! thread to write out everything and waits for it (bounded by the child's shutdown timeout). If
//! the actor is killed instead, `Drop` still tells the thread to close, without waiting.
//!
//! The thread is not restarted in place: every session's journal is a handle to it. When it
//! ends while the tree runs (a panic, or a killed actor's close), [`Persist::thread_ended`]
//! says so and the tree's `Corral::failed` with it; `corral serve` then leaves as a crash would
//! and the next start reconciles (docs/architecture.md, "The supervision tree").

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef};
use uuid::Uuid;

use crate::event::SessionEvent;
use crate::persist::error::PersistError;
use crate::persist::journal::{
    Committed, JOURNAL_CAPACITY, Journal, Op, PersistStats, SessionRecord,
};
use crate::persist::segment::{LogReader, SegmentConfig};
use crate::persist::store::{EventRetention, Store};
use crate::persist::writer::Writer;

/// Where and how the tree persists.
#[derive(Debug, Clone)]
pub struct PersistConfig {
    /// The data dir: `state.db` and `logs/` go here.
    pub dir: PathBuf,
    /// Scrollback log limits and fsync policy.
    pub segment: SegmentConfig,
    /// Event journal bounds.
    pub events: EventRetention,
    /// Ended sessions kept (records and scrollback).
    pub ended: EndedRetention,
}

impl PersistConfig {
    /// Every default, in `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            segment: SegmentConfig::default(),
            events: EventRetention::default(),
            ended: EndedRetention::default(),
        }
    }
}

/// How long sessions that ended (Stopped or Failed, not restarting) are kept before their
/// records and scrollback are deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EndedRetention {
    /// Most ended sessions kept; the ones that ended longest ago go first. Default 200.
    pub max_sessions: usize,
    /// Ended longer ago than this: deleted. Default 7 days.
    pub max_age: Duration,
}

impl Default for EndedRetention {
    fn default() -> Self {
        Self {
            max_sessions: 200,
            max_age: Duration::from_secs(7 * 24 * 3600),
        }
    }
}

/// The async API over the persister thread.
#[derive(Clone, Debug)]
pub struct Persist {
    /// The journal (also handed to every session).
    journal: Journal,
    /// Settings.
    config: Arc<PersistConfig>,
    /// How the thread ended, once it has (see [`Self::thread_ended`]).
    ended: tokio::sync::watch::Receiver<Option<&'static str>>,
}

impl Persist {
    /// The journal sessions write to.
    pub fn journal(&self) -> &Journal {
        &self.journal
    }

    /// Counters.
    pub fn stats(&self) -> &Arc<PersistStats> {
        &self.journal.stats
    }

    /// Settings.
    pub fn config(&self) -> &PersistConfig {
        &self.config
    }

    pub(crate) async fn request<T>(
        &self,
        build: impl FnOnce(tokio::sync::oneshot::Sender<T>) -> Op,
    ) -> Result<T, PersistError> {
        self.journal.request(build).await
    }

    /// Every session record.
    pub async fn load(&self) -> Result<Vec<SessionRecord>, PersistError> {
        self.request(Op::Load).await?
    }

    /// Opens (recovering) a session's log; its next offset, and what recovery repaired.
    pub async fn open_log(
        &self,
        id: Uuid,
    ) -> Result<(u64, Vec<crate::persist::journal::LogRepair>), PersistError> {
        self.request(|r| Op::OpenLog(id, r)).await?
    }

    /// Up to `limit` events of a session after `after`, oldest first.
    pub async fn events(
        &self,
        id: Uuid,
        after: u64,
        limit: usize,
    ) -> Result<Vec<SessionEvent>, PersistError> {
        self.events_of(id, None, after, limit).await
    }

    /// Like [`events`](Self::events), only those of `kind` ([`crate::EventKind::name`]):
    /// the others are skipped by the database, never decoded (a session's sizes out of a
    /// journal of many hooks).
    pub async fn events_of(
        &self,
        id: Uuid,
        kind: Option<&'static str>,
        after: u64,
        limit: usize,
    ) -> Result<Vec<SessionEvent>, PersistError> {
        self.journal.events(id, kind, after, limit).await
    }

    /// A reader of a session's scrollback as it is now (read it off the runtime:
    /// `spawn_blocking`).
    pub async fn reader(&self, id: Uuid) -> Result<LogReader, PersistError> {
        self.request(|r| Op::Reader(id, r)).await?
    }

    /// `PRAGMA integrity_check`.
    pub async fn integrity_check(&self) -> Result<String, PersistError> {
        self.request(Op::IntegrityCheck).await?
    }

    /// Waits until everything sent before is committed and synced.
    pub async fn flush(&self) -> Result<(), PersistError> {
        self.request(Op::Flush).await
    }

    /// Waits for the next commit of the registry: `Ok` when everything sent before is in
    /// state.db (a crash of the server loses none of it), else why not (it is retried).
    pub async fn committed(&self) -> Result<(), PersistError> {
        self.journal.committed().await
    }

    /// Waits until the persister thread has ended, and says how: "closed" after a close (the
    /// tree's stop), "panicked" otherwise. Nothing restarts the thread in place (every session's
    /// journal is a handle to it): a server whose thread ended while it served leaves, as if it
    /// had crashed, and the next start reconciles (`corral_actors::Corral::failed`).
    pub async fn thread_ended(&self) -> &'static str {
        let mut ended = self.ended.clone();
        match ended.wait_for(Option::is_some).await {
            Ok(how) => (*how).unwrap_or("ended"),
            // The guard sets it before it is dropped; a sender gone without it cannot happen,
            // but is an end all the same.
            Err(_) => "ended",
        }
    }

    /// Records a new session; the flag says when it is committed. `None`: it could not be
    /// queued (the queue is full or the persister gone; counted in `ops_dropped` and logged).
    #[must_use = "a record the queue did not take is not in the registry: say so"]
    pub(crate) fn create(&self, record: SessionRecord) -> Option<Committed> {
        let committed = Committed::default();
        self.journal
            .send(Op::Create(Box::new(record), committed.clone()))
            .then_some(committed)
    }

    /// Deletes a session's records and scrollback. False: the queue did not take it (counted
    /// in `ops_dropped` and logged); the records stay until the next deletion.
    #[must_use = "a deletion the queue did not take leaves the records: say so"]
    pub(crate) fn remove(&self, id: Uuid) -> bool {
        self.journal.send(Op::Remove(id))
    }
}

/// The actor.
pub struct Persister;

/// Its state: the thread's handle and the API.
pub struct PersisterState {
    /// The API.
    persist: Persist,
    /// The thread, until it is joined.
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for PersisterState {
    fn drop(&mut self) {
        if self.thread.is_some() {
            // Killed: ask the thread to close without waiting for it.
            let (tx, _rx) = tokio::sync::oneshot::channel();
            if self.persist.journal.ops.try_send(Op::Close(tx)).is_err() {
                tracing::warn!("persister thread not told to close (queue full or gone)");
            }
        }
    }
}

/// How long a start waits for the dir's lock (a server handing over to its successor lets go
/// of it a moment after the successor took the data dir) before saying who holds it.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Takes `dir/persist.lock` (an exclusive flock, the holder's pid written in it), waiting up to
/// [`LOCK_WAIT`] while another process holds it.
async fn lock_dir(dir: &std::path::Path) -> Result<nix::fcntl::Flock<std::fs::File>, PersistError> {
    use nix::fcntl::{Flock, FlockArg};
    use std::io::{Seek, Write};
    use std::os::unix::fs::OpenOptionsExt;
    let path = dir.join("persist.lock");
    let deadline = std::time::Instant::now() + LOCK_WAIT;
    loop {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .mode(0o600)
            .open(&path)
            .map_err(|source| PersistError::Io {
                what: format!("opening {}", path.display()),
                source,
            })?;
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(mut lock) => {
                let pid = std::process::id().to_string();
                let written = lock
                    .set_len(0)
                    .and_then(|()| lock.rewind())
                    .and_then(|()| lock.write_all(pid.as_bytes()));
                if let Err(e) = written {
                    tracing::debug!(error = %e, "persist.lock: pid not written");
                }
                return Ok(lock);
            }
            Err((_, nix::errno::Errno::EWOULDBLOCK)) if std::time::Instant::now() < deadline => {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
            Err((_, nix::errno::Errno::EWOULDBLOCK)) => {
                let pid = std::fs::read_to_string(&path)
                    .ok()
                    .and_then(|s| s.trim().parse().ok());
                return Err(PersistError::InUse {
                    dir: dir.to_path_buf(),
                    pid,
                });
            }
            Err((_, e)) => {
                return Err(PersistError::Io {
                    what: format!("locking {}", path.display()),
                    source: e.into(),
                });
            }
        }
    }
}

/// Says, when the persister thread ends (returning or unwinding), how it ended.
struct ThreadEnd(tokio::sync::watch::Sender<Option<&'static str>>);

impl Drop for ThreadEnd {
    fn drop(&mut self) {
        let how = if std::thread::panicking() {
            "panicked"
        } else {
            "closed"
        };
        // Receivers may all be gone (the tree stopped): nobody is left to tell.
        self.0.send_replace(Some(how));
    }
}

impl Persister {
    /// Starts the thread and waits until the store is open.
    pub async fn start_thread(
        config: PersistConfig,
    ) -> Result<(Persist, std::thread::JoinHandle<()>), PersistError> {
        {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(config.dir.join("logs"))
                .and_then(|()| super::segment::owner_only(&config.dir.join("logs")))
                .map_err(|e| format!("creating {}: {e}", config.dir.join("logs").display()))?;
        }
        // One process per dir: held by the persister thread, so for as long as it writes.
        let lock = lock_dir(&config.dir).await?;
        let (ops_tx, ops_rx) = crossbeam_channel::bounded(JOURNAL_CAPACITY);
        // At most one notification per session is queued (see Tap), so this never fills while
        // sessions stay under the bound; a full channel is counted as an error anyway.
        let (out_tx, out_rx) = crossbeam_channel::bounded(1 << 16);
        let stats = Arc::new(PersistStats::default());
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let thread_config = config.clone();
        let thread_stats = stats.clone();
        let (ended_tx, ended) = tokio::sync::watch::channel(None);
        let thread = std::thread::Builder::new()
            .name("corral-persister".into())
            .spawn(move || {
                let _ended = ThreadEnd(ended_tx);
                let _lock = lock;
                let store =
                    match Store::open(&thread_config.dir.join("state.db"), thread_config.events) {
                        Ok(store) => store,
                        Err(e) => {
                            if ready_tx.send(Err(e)).is_err() {
                                tracing::debug!("persister start abandoned");
                            }
                            return;
                        }
                    };
                if ready_tx.send(Ok(())).is_err() {
                    return;
                }
                Writer::new(
                    store,
                    &thread_config.dir,
                    thread_config.segment.clone(),
                    thread_stats,
                )
                .run(ops_rx, out_rx);
            })
            .map_err(|e| format!("starting the persister thread: {e}"))?;
        match ready_rx.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(e),
            Err(_) => {
                return Err(PersistError::Unavailable(
                    "thread ended while opening the store",
                ));
            }
        }
        let persist = Persist {
            journal: Journal {
                ops: ops_tx,
                output: out_tx,
                stats,
            },
            config: Arc::new(config),
            ended,
        };
        Ok((persist, thread))
    }
}

impl Actor for Persister {
    type Msg = ();
    type State = PersisterState;
    /// The started thread (started by the caller, so the API exists before the tree).
    type Arguments = (
        Persist,
        std::sync::Arc<parking_lot::Mutex<Option<std::thread::JoinHandle<()>>>>,
    );

    async fn pre_start(
        &self,
        _myself: ActorRef<()>,
        (persist, thread): Self::Arguments,
    ) -> Result<PersisterState, ActorProcessingErr> {
        Ok(PersisterState {
            persist,
            thread: thread.lock().take(),
        })
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<()>,
        st: &mut PersisterState,
    ) -> Result<(), ActorProcessingErr> {
        match st.persist.request(Op::Close).await {
            Ok(()) => {}
            Err(e) => tracing::error!(error = %e, "persister did not close cleanly"),
        }
        if let Some(thread) = st.thread.take() {
            if thread.is_finished() {
                if thread.join().is_err() {
                    tracing::error!("persister thread panicked");
                }
            } else {
                // It answered Close and is returning; it owns nothing that outlives it.
                tracing::debug!("persister thread still unwinding; detached");
            }
        }
        Ok(())
    }
}
