//! Process-wide zombie reaping that never steals an exit status someone owns.
//!
//! Every exited child stays a zombie until its parent waits for it, and only one wait gets the
//! status. corral has two kinds of children: session main processes, whose status the session
//! actor reports (it *owns* them), and everything else that ends up ours — processes a sweep
//! killed, a session's main process whose owner was dropped, and, once corral is a child
//! subreaper, orphans of any session reparented to corral. This module keeps the registry that
//! tells them apart and reaps the second kind:
//!
//! - [`own`] — a session claims a child's exit status; [`release`] once it reaped it or gave up;
//! - [`disown`] — "reap this for me": the owner is gone (e.g. in a `Drop`);
//! - [`spawn_guard`] — held across fork + [`own`], so a reaping pass (which takes the write side)
//!   can never see a just-forked child before it is owned and reap it as an orphan;
//! - [`enable_subreaper`] — `PR_SET_CHILD_SUBREAPER`: orphans of our subtree reparent to us
//!   instead of init, so sweeps can still find them. In this mode every unowned zombie child is
//!   reaped; without it only disowned pids are. **Consequence for embedders:** after
//!   [`enable_subreaper`], a child this process spawns outside this registry (a
//!   `std::process::Command`, `tokio::process`) may be reaped before its own `wait`, which then
//!   fails with `ECHILD`; spawn such children under [`spawn_guard`] and [`own`] them, or do not
//!   enable subreaper mode. Without it, they are never touched.
//! - [`Reaper`] — an actor that runs a pass on every `SIGCHLD` and on [`ReaperMsg::Reap`].
//!
//! Passes are `waitpid(pid, WNOHANG)` on specific pids only, never `waitpid(-1)`: a wildcard wait
//! cannot skip owned children.

use std::collections::BTreeSet;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use parking_lot::{Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use tokio::signal::unix::{SignalKind, signal};

use crate::process::procfs;
use crate::process::status::{ReapError, try_reap};

/// Who owns which child's exit status.
struct Registry {
    /// Children whose status a session will collect itself: never reaped here.
    owned: BTreeSet<i32>,
    /// Children nobody will wait for: reaped here as soon as they exit.
    disowned: BTreeSet<i32>,
    /// The disowned ones that were SIGKILLed (they exit in a moment): the last reaper going
    /// away waits for them ([`disown_killed`]).
    killed: BTreeSet<i32>,
}

static REGISTRY: Mutex<Registry> = Mutex::new(Registry {
    owned: BTreeSet::new(),
    disowned: BTreeSet::new(),
    killed: BTreeSet::new(),
});

/// [`Reaper`] actors alive in this process.
static REAPERS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// How long the last reaper going away (or a [`disown_killed`] with no reaper left) waits for
/// SIGKILLed children to exit, so they are reaped, not left zombies for the host's life.
const KILLED_WAIT: Duration = Duration::from_millis(200);

/// Readers: spawners between fork and `own`. Writer: a reaping pass.
static SPAWN_LOCK: RwLock<()> = RwLock::new(());

/// Whether [`enable_subreaper`] succeeded in this process.
static SUBREAPER: AtomicBool = AtomicBool::new(false);

/// Processes reaped by this module since start (all passes, all callers).
static REAPED: LazyLock<Arc<AtomicU64>> = LazyLock::new(|| Arc::new(AtomicU64::new(0)));

/// Held by a spawner from just before fork until [`own`] of the new pid: while any guard is
/// alive, no reaping pass runs. Hold it briefly (a spawn, not its lifetime), and do not take a
/// second one on the same thread while holding it (a waiting pass would deadlock the pair).
#[must_use = "the guard protects only while it is held"]
pub struct SpawnGuard {
    _read: RwLockReadGuard<'static, ()>,
}

impl std::fmt::Debug for SpawnGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SpawnGuard")
    }
}

/// Takes the spawn side of the reaping lock; see [`SpawnGuard`]. Blocks only while a reaping pass
/// is running (microseconds to a few milliseconds).
pub fn spawn_guard() -> SpawnGuard {
    SpawnGuard {
        _read: SPAWN_LOCK.read(),
    }
}

/// A session claims `pid`'s exit status: no reaping pass will touch it until [`release`] or
/// [`disown`]. Call it while holding a [`spawn_guard`] taken before the fork.
pub fn own(pid: i32) {
    let mut reg = REGISTRY.lock();
    reg.disowned.remove(&pid);
    reg.owned.insert(pid);
}

/// The owner is done with `pid` (it reaped it, or handed the status to nobody on purpose).
pub fn release(pid: i32) {
    REGISTRY.lock().owned.remove(&pid);
}

/// Whether `pid` is currently owned.
pub fn is_owned(pid: i32) -> bool {
    REGISTRY.lock().owned.contains(&pid)
}

/// Whether `pid` is a child nobody waits for that is still running (a session's holder, say).
pub fn is_disowned(pid: i32) -> bool {
    REGISTRY.lock().disowned.contains(&pid)
}

/// Reap `pid` for its departed owner: tries `waitpid(pid, WNOHANG)` at once and otherwise
/// remembers it for the next pass. Never blocks. `pid` must be an unreaped child of this process.
pub fn disown(pid: i32) {
    REGISTRY.lock().owned.remove(&pid);
    if !settle_disowned(pid) {
        tracing::trace!(pid, "disowned process still running; reaped later");
    }
}

/// [`disown`] for a child just SIGKILLed by an owner going away (a session actor killed with
/// its host, say): if no [`Reaper`] is left to run a pass when it exits, waits for it here, up
/// to [`KILLED_WAIT`] (a teardown path, where blocking that long is the lesser evil: a zombie
/// would stay for the rest of the host's life); else the last reaper to stop waits for it.
pub fn disown_killed(pid: i32) {
    REGISTRY.lock().killed.insert(pid);
    disown(pid);
    if REAPERS.load(Ordering::Acquire) == 0 {
        wait_for_killed();
    }
}

/// Reaps the SIGKILLed disowned children, waiting up to [`KILLED_WAIT`] for them to exit.
fn wait_for_killed() {
    let deadline = std::time::Instant::now() + KILLED_WAIT;
    loop {
        let killed: Vec<i32> = REGISTRY.lock().killed.iter().copied().collect();
        if killed.is_empty() {
            return;
        }
        for pid in killed {
            settle_disowned(pid);
        }
        if std::time::Instant::now() >= deadline {
            let left = REGISTRY.lock().killed.len();
            if left > 0 {
                tracing::warn!(
                    left,
                    "killed children not exited in time; reaped by a later pass"
                );
            }
            return;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Disowns `pid` unless somebody owns it; true if it was disowned. For sweeps, which find our
/// zombie children without knowing whose they are.
pub(crate) fn disown_if_unowned(pid: i32) -> bool {
    if REGISTRY.lock().owned.contains(&pid) {
        return false;
    }
    if !settle_disowned(pid) {
        tracing::trace!(pid, "disowned process still running; reaped later");
    }
    true
}

/// One reaping attempt for a disowned pid; remembers it if it is still running. True if it was
/// reaped now.
fn settle_disowned(pid: i32) -> bool {
    match try_reap(pid) {
        Ok(Some(status)) => {
            let mut r = REGISTRY.lock();
            r.disowned.remove(&pid);
            r.killed.remove(&pid);
            drop(r);
            REAPED.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(pid, %status, "reaped disowned process");
            true
        }
        Ok(None) => {
            REGISTRY.lock().disowned.insert(pid);
            false
        }
        Err(ReapError::NotAChild { .. }) => {
            // Not ours or already reaped: nothing to remember.
            let mut r = REGISTRY.lock();
            r.disowned.remove(&pid);
            r.killed.remove(&pid);
            false
        }
        Err(e) => {
            tracing::warn!(pid, error = %e, "cannot reap disowned process; will retry");
            REGISTRY.lock().disowned.insert(pid);
            false
        }
    }
}

/// Makes this process a child subreaper (`prctl(PR_SET_CHILD_SUBREAPER, 1)`), process-wide and
/// for good: orphaned descendants reparent to us, and reaping passes then reap every unowned
/// zombie child. See the module docs for what that means for other children of this process.
pub fn enable_subreaper() -> io::Result<()> {
    nix::sys::prctl::set_child_subreaper(true).map_err(io::Error::from)?;
    SUBREAPER.store(true, Ordering::SeqCst);
    tracing::info!("corral is now a child subreaper");
    Ok(())
}

/// Whether [`enable_subreaper`] has succeeded in this process.
pub fn subreaper_enabled() -> bool {
    SUBREAPER.load(Ordering::SeqCst)
}

/// The process-wide count of processes reaped by this module, for metrics and introspection.
pub fn reaped_counter() -> Arc<AtomicU64> {
    Arc::clone(&REAPED)
}

/// One reaping pass (see [`reap_pass`]), waiting for in-flight spawns to finish `own`.
/// Returns how many processes were reaped.
pub fn reap_now() -> usize {
    reap_pass(SPAWN_LOCK.write())
}

/// One reaping pass, or `None` at once if a spawn is in flight (the actor retries shortly rather
/// than block a runtime thread).
fn try_reap_now() -> Option<usize> {
    SPAWN_LOCK.try_write().map(reap_pass)
}

/// The pass itself, under the write side of the spawn lock: every disowned pid, then (subreaper
/// mode) every unowned zombie child.
fn reap_pass(_exclusive: RwLockWriteGuard<'static, ()>) -> usize {
    let mut reaped = 0;
    let disowned: Vec<i32> = REGISTRY.lock().disowned.iter().copied().collect();
    for pid in disowned {
        if settle_disowned(pid) {
            reaped += 1;
        }
    }
    if subreaper_enabled() {
        for pid in zombie_child_candidates() {
            if REGISTRY.lock().owned.contains(&pid) {
                continue;
            }
            match try_reap(pid) {
                Ok(Some(status)) => {
                    reaped += 1;
                    REAPED.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(pid, %status, "reaped orphan");
                }
                Ok(None) => {}
                // Someone else in this process waited for it between our read and our wait.
                Err(ReapError::NotAChild { .. }) => {}
                Err(e) => tracing::warn!(pid, error = %e, "cannot reap orphan"),
            }
        }
    }
    reaped
}

/// Our children that may be zombies: all children listed by `/proc/self/task/*/children` (a
/// `WNOHANG` wait on a live one is a no-op), else zombies with our pid as parent in a `/proc`
/// scan.
fn zombie_child_candidates() -> Vec<i32> {
    if let Some(kids) = procfs::children_from_task_files("/proc/self/task") {
        return kids;
    }
    let me = std::process::id() as i32;
    procfs::all()
        .into_iter()
        .filter(|p| p.ppid == me && p.is_zombie())
        .map(|p| p.pid)
        .collect()
}

/// Messages of the [`Reaper`] actor.
#[derive(Debug)]
pub enum ReaperMsg {
    /// Run a reaping pass now (also what `SIGCHLD` triggers).
    Reap,
    /// Run a pass and answer how many processes it reaped.
    ReapAndReply(RpcReplyPort<usize>),
}

/// The reaping actor: a pass on every `SIGCHLD`, on [`ReaperMsg::Reap`], and once at start.
///
/// `SIGCHLD` is received by a small task owned by the actor's state that turns each signal into a
/// [`ReaperMsg::Reap`] (coalesced: at most one pending), so the mailbox is never blocked waiting
/// for a signal and stop/kill act at once. The task ends with the state (the actor stopped or was
/// killed).
#[derive(Debug, Default, Clone, Copy)]
pub struct Reaper;

/// State of the [`Reaper`] actor.
pub struct ReaperState {
    /// The SIGCHLD forwarder; aborted when the state is dropped.
    forwarder: AbortOnDrop,
    /// True while a `Reap` sent by the forwarder is queued and not yet handled.
    pending: Arc<AtomicBool>,
}

impl Drop for ReaperState {
    /// The reaper is going (stopped, or killed with its tree): the last one reaps the children
    /// just SIGKILLed by session actors going down with it, which no pass would see otherwise.
    fn drop(&mut self) {
        if REAPERS.fetch_sub(1, Ordering::AcqRel) == 1 {
            wait_for_killed();
        }
    }
}

/// Aborts a tokio task when dropped, so the forwarder never outlives the actor.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// How long a pass waits before retrying when a spawn held the lock.
const RETRY_AFTER: Duration = Duration::from_millis(5);

/// A reaping pass that never blocks the runtime thread: while a spawn holds its guard (between
/// fork and `own`, i.e. milliseconds), sleep on the tokio timer and try again.
async fn reap_without_blocking() -> usize {
    loop {
        if let Some(n) = try_reap_now() {
            if n > 0 {
                tracing::debug!(reaped = n, "reaping pass");
            }
            return n;
        }
        tokio::time::sleep(RETRY_AFTER).await;
    }
}

impl Actor for Reaper {
    type Msg = ReaperMsg;
    type State = ReaperState;
    type Arguments = ();

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        _args: (),
    ) -> Result<Self::State, ActorProcessingErr> {
        let mut sigchld = signal(SignalKind::child())
            .map_err(|e| format!("cannot install SIGCHLD handler: {e}"))?;
        let pending = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&pending);
        let forwarder = tokio::spawn(async move {
            while sigchld.recv().await.is_some() {
                if flag.swap(true, Ordering::AcqRel) {
                    continue; // a pass is already queued; it will see this child too
                }
                if let Err(e) = myself.cast(ReaperMsg::Reap) {
                    tracing::debug!(error = %e, "reaper gone; SIGCHLD forwarder ends");
                    break;
                }
            }
        });
        // Zombies that predate us (or a SIGCHLD that came before the handler) are reaped now.
        let n = reap_now();
        if n > 0 {
            tracing::debug!(reaped = n, "initial reaping pass");
        }
        REAPERS.fetch_add(1, Ordering::AcqRel);
        Ok(ReaperState {
            forwarder: AbortOnDrop(forwarder),
            pending,
        })
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        state.forwarder.0.abort();
        Ok(())
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            ReaperMsg::Reap => {
                // Cleared before the pass: a SIGCHLD during the pass queues another one.
                state.pending.store(false, Ordering::Release);
                reap_without_blocking().await;
            }
            ReaperMsg::ReapAndReply(reply) => {
                let n = reap_without_blocking().await;
                if let Err(e) = reply.send(n) {
                    tracing::debug!(error = %e, "reap caller went away");
                }
            }
        }
        Ok(())
    }
}
