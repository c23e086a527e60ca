//! Supervisor: Erlang/OTP supervisor semantics as one ractor actor.
//!
//! ractor gives links and `SupervisionEvent`s but no restart policy: its default
//! `handle_supervisor_evt` even stops the parent on any child exit. This actor is the missing state
//! machine, kept in one place like OTP's `supervisor.erl`; each branch names the rule it applies:
//!
//! - restart type ([`Restart`]): permanent always, transient only after an abnormal exit,
//!   temporary never (and a temporary child is forgotten when it exits);
//! - strategy ([`Strategy`]): which siblings are stopped and restarted with a failed child;
//! - intensity ([`Intensity`]): more than `max_restarts` in `period` and the supervisor stops all
//!   its children in reverse order and fails, escalating to its own parent;
//! - backoff ([`crate::Backoff`]): a child due for restart waits, visibly `Restarting`;
//! - shutdown ([`Shutdown`]): stop, wait up to the timeout, then kill; children stop in reverse
//!   start order, both on `stop_and_wait` of the supervisor and on escalation.
//!
//! Start failures (`pre_start` errors, which ractor never reports as events) are failed starts:
//! at boot they fail the supervisor's own start; on restart they count against intensity.
//!
//! Why one file of ~850 lines: the state machine, its messages and the typed handle that sends
//! them are one protocol, read together (as `supervisor.erl` is); the pieces that stand alone
//! are already apart (`child_spec`, `intensity`, `backoff`, `exit`, `tree`), and splitting the
//! handle from the messages it sends would only make the two import each other.

use std::collections::HashMap;
use std::time::Duration;

use ractor::concurrency::JoinHandle;
use ractor::rpc::CallResult;
use ractor::{
    Actor, ActorCell, ActorId, ActorProcessingErr, ActorRef, MessagingErr, RpcReplyPort, SpawnErr,
    SupervisionEvent,
};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::backoff::BackoffState;
use crate::child_spec::{ChildSpec, Restart, Shutdown};
use crate::exit::ExitReason;
use crate::intensity::{Intensity, RestartWindow};
use crate::tree::{NodeKind, Probe, Status, TreeNode};

/// How long a brutal kill is waited for before giving up on observing the child's end.
const KILL_WAIT: Duration = Duration::from_secs(5);
/// How long `tree()` waits for a child supervisor's own snapshot.
const TREE_CHILD_TIMEOUT: Duration = Duration::from_secs(2);

/// Which children are restarted when one of them is restarted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// Only the child that exited.
    OneForOne,
    /// Every child: the others are stopped (reverse order), then all start again in order.
    OneForAll,
    /// The child that exited and every child started after it.
    RestForOne,
}

/// Everything a supervisor is started with.
#[derive(Debug, Clone)]
pub struct SupervisorSpec {
    /// Name shown at the root of its tree snapshot.
    pub name: String,
    /// Restart strategy.
    pub strategy: Strategy,
    /// Restart intensity.
    pub intensity: Intensity,
    /// Upper bound on children (static and dynamic); `start_child` past it is refused.
    pub max_children: usize,
    /// Static children, started in this order.
    pub children: Vec<ChildSpec>,
}

impl SupervisorSpec {
    /// Default bound on the number of children of one supervisor.
    pub const DEFAULT_MAX_CHILDREN: usize = 65_536;

    /// A one-for-one supervisor with OTP's default intensity and no children yet.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            strategy: Strategy::OneForOne,
            intensity: Intensity::default(),
            max_children: Self::DEFAULT_MAX_CHILDREN,
            children: Vec::new(),
        }
    }

    /// Sets the strategy.
    pub fn strategy(mut self, strategy: Strategy) -> Self {
        self.strategy = strategy;
        self
    }

    /// Sets the intensity.
    pub fn intensity(mut self, max_restarts: u32, period: Duration) -> Self {
        self.intensity = Intensity {
            max_restarts,
            period,
        };
        self
    }

    /// Sets the bound on children.
    pub fn max_children(mut self, max: usize) -> Self {
        self.max_children = max;
        self
    }

    /// Appends a static child.
    pub fn child(mut self, child: ChildSpec) -> Self {
        self.children.push(child);
        self
    }
}

/// Errors answered to callers of a supervisor.
#[derive(Debug, thiserror::Error)]
pub enum SupervisorError {
    /// `start_child` with an id already in use.
    #[error("child '{0}' already exists")]
    AlreadyPresent(String),
    /// No child has this id.
    #[error("no child '{0}'")]
    NotFound(String),
    /// `delete_child` on a child that is still running or restarting.
    #[error("child '{0}' is running; terminate it first")]
    Running(String),
    /// The child's start function failed.
    #[error("child '{id}' failed to start: {reason}")]
    StartFailed {
        /// The child id.
        id: String,
        /// The start error.
        reason: String,
    },
    /// `max_children` reached.
    #[error("supervisor is full ({max} children)")]
    TooManyChildren {
        /// The bound.
        max: usize,
    },
    /// The supervisor is not running, or did not answer in time.
    #[error("supervisor unavailable: {0}")]
    Unavailable(String),
}

/// Messages a supervisor handles (use [`SupervisorRef`] rather than sending them by hand).
pub enum SupervisorMsg {
    /// Add and start a child (a dynamic child).
    StartChild(ChildSpec, RpcReplyPort<Result<ActorCell, SupervisorError>>),
    /// Stop a child per its shutdown spec; with `delete`, forget its spec as well.
    TerminateChild {
        /// The child id.
        id: String,
        /// Forget the spec afterwards.
        delete: bool,
        /// Answer.
        reply: RpcReplyPort<Result<(), SupervisorError>>,
    },
    /// Start a stopped child again.
    RestartChild(String, RpcReplyPort<Result<ActorCell, SupervisorError>>),
    /// Forget a stopped child's spec.
    DeleteChild(String, RpcReplyPort<Result<(), SupervisorError>>),
    /// Snapshot of this supervisor and its descendants.
    Tree(RpcReplyPort<TreeNode>),
    /// Internal: a backoff delay is over; start the children waiting on it.
    RestartDue(u64),
}

/// One child as the supervisor tracks it.
struct Child {
    /// Its spec.
    spec: ChildSpec,
    /// The running actor, if any.
    cell: Option<ActorCell>,
    /// Its gauges.
    probe: Probe,
    /// Lifecycle status.
    status: Status,
    /// When it was last started.
    started_at: Option<Instant>,
    /// Restarts since the spec was added.
    restarts_total: u64,
    /// This child's own restarts in the supervisor's period (for display only).
    recent: RestartWindow,
    /// Why it last exited.
    last_exit: Option<String>,
    /// Where it is in its backoff sequence.
    backoff: BackoffState,
}

impl Child {
    fn new(spec: ChildSpec, intensity: Intensity) -> Self {
        Self {
            spec,
            cell: None,
            probe: Probe::default(),
            status: Status::Starting,
            started_at: None,
            restarts_total: 0,
            recent: RestartWindow::new(intensity),
            last_exit: None,
            backoff: BackoffState::default(),
        }
    }

    fn is_live(&self) -> bool {
        self.cell.is_some()
    }
}

/// A group of children waiting for a backoff delay before they start again.
struct PendingRestart {
    /// Children to start, in start order.
    ids: Vec<String>,
    /// The timer that will send `RestartDue`; aborted if the supervisor stops first.
    timer: Option<JoinHandle<Result<(), MessagingErr<SupervisorMsg>>>>,
}

/// The supervisor's state. Dropping it aborts pending restart timers.
pub struct SupervisorState {
    /// Name at the root of the tree snapshot.
    name: String,
    /// Restart strategy.
    strategy: Strategy,
    /// Restart intensity settings.
    intensity: Intensity,
    /// Supervisor-wide restart window.
    window: RestartWindow,
    /// Bound on children.
    max_children: usize,
    /// Children in start order.
    children: Vec<Child>,
    /// Running actor → child id, to route supervision events.
    by_actor: HashMap<ActorId, String>,
    /// Restarts waiting for their delay, by generation.
    pending: HashMap<u64, PendingRestart>,
    /// Next pending-restart generation.
    next_generation: u64,
    /// When the supervisor started.
    started_at: Instant,
}

impl Drop for SupervisorState {
    fn drop(&mut self) {
        for p in self.pending.values() {
            if let Some(t) = &p.timer {
                t.abort();
            }
        }
    }
}

/// The supervisor actor. Spawn it with [`Supervisor::start`] or [`Supervisor::start_linked`].
#[derive(Debug, Default, Clone, Copy)]
pub struct Supervisor;

/// A handle to a running supervisor with typed calls.
#[derive(Debug, Clone)]
pub struct SupervisorRef {
    /// The supervisor actor.
    actor: ActorRef<SupervisorMsg>,
}

impl Supervisor {
    /// Starts an unlinked (root) supervisor; its static children are started before this returns.
    pub async fn start(spec: SupervisorSpec) -> Result<(SupervisorRef, JoinHandle<()>), SpawnErr> {
        let (actor, handle) = Actor::spawn(None, Supervisor, spec).await?;
        Ok((SupervisorRef { actor }, handle))
    }

    /// Starts a supervisor linked under `parent` (which receives its supervision events).
    pub async fn start_linked(
        spec: SupervisorSpec,
        parent: ActorCell,
    ) -> Result<(SupervisorRef, JoinHandle<()>), SpawnErr> {
        let (actor, handle) = Actor::spawn_linked(None, Supervisor, spec, parent).await?;
        Ok((SupervisorRef { actor }, handle))
    }

    /// A child spec that runs a nested supervisor built from `spec`.
    pub fn child_spec(id: impl Into<String>, spec: SupervisorSpec) -> ChildSpec {
        ChildSpec::new(id, move |parent| {
            let spec = spec.clone();
            async move {
                let (sup, _task) = Supervisor::start_linked(spec, parent).await?;
                Ok(sup.actor.get_cell().into())
            }
        })
        .supervisor()
    }
}

impl SupervisorRef {
    /// Wraps the cell of a running supervisor (e.g. one from `start_child`).
    pub fn from_cell(cell: ActorCell) -> Self {
        Self {
            actor: ActorRef::from(cell),
        }
    }

    /// The supervisor actor.
    pub fn actor(&self) -> &ActorRef<SupervisorMsg> {
        &self.actor
    }

    /// The supervisor's cell, for linking children or hosts.
    pub fn cell(&self) -> ActorCell {
        self.actor.get_cell()
    }

    async fn call<T: Send + 'static>(
        &self,
        build: impl FnOnce(RpcReplyPort<T>) -> SupervisorMsg,
        timeout: Option<Duration>,
    ) -> Result<T, SupervisorError> {
        match self.actor.call(build, timeout).await {
            Ok(CallResult::Success(v)) => Ok(v),
            Ok(CallResult::Timeout) => Err(SupervisorError::Unavailable("timed out".into())),
            Ok(CallResult::SenderError) => Err(SupervisorError::Unavailable(
                "stopped before answering".into(),
            )),
            Err(e) => Err(SupervisorError::Unavailable(e.to_string())),
        }
    }

    /// Adds and starts a child; returns its cell once started.
    pub async fn start_child(&self, spec: ChildSpec) -> Result<ActorCell, SupervisorError> {
        self.call(|r| SupervisorMsg::StartChild(spec, r), None)
            .await?
    }

    /// Stops a child per its shutdown spec and keeps its spec (status `Stopped`).
    pub async fn terminate_child(&self, id: &str) -> Result<(), SupervisorError> {
        let id = id.to_string();
        self.call(
            |reply| SupervisorMsg::TerminateChild {
                id,
                delete: false,
                reply,
            },
            None,
        )
        .await?
    }

    /// Stops a child per its shutdown spec and forgets it (the dynamic-child removal).
    pub async fn remove_child(&self, id: &str) -> Result<(), SupervisorError> {
        let id = id.to_string();
        self.call(
            |reply| SupervisorMsg::TerminateChild {
                id,
                delete: true,
                reply,
            },
            None,
        )
        .await?
    }

    /// Starts a stopped child again.
    pub async fn restart_child(&self, id: &str) -> Result<ActorCell, SupervisorError> {
        let id = id.to_string();
        self.call(|r| SupervisorMsg::RestartChild(id, r), None)
            .await?
    }

    /// Forgets a stopped child.
    pub async fn delete_child(&self, id: &str) -> Result<(), SupervisorError> {
        let id = id.to_string();
        self.call(|r| SupervisorMsg::DeleteChild(id, r), None)
            .await?
    }

    /// A snapshot of this supervisor and all its descendants.
    pub async fn tree(&self) -> Result<TreeNode, SupervisorError> {
        self.call(SupervisorMsg::Tree, Some(Duration::from_secs(10)))
            .await
    }

    /// Stops the supervisor: its children stop in reverse start order, each per its shutdown spec,
    /// then the supervisor itself. Waits up to `timeout` (None: without limit). A supervisor
    /// already stopped is stopped: Ok (a host's second shutdown got "channel closed").
    pub async fn stop(&self, timeout: Option<Duration>) -> Result<(), SupervisorError> {
        if self.actor.get_status() == ractor::ActorStatus::Stopped {
            return Ok(());
        }
        self.actor
            .stop_and_wait(Some("shutdown".into()), timeout)
            .await
            .map_err(|e| SupervisorError::Unavailable(e.to_string()))
    }
}

/// Stops one running child per its shutdown spec and waits for its end.
async fn shut_down(id: &str, cell: &ActorCell, shutdown: Shutdown) {
    // The span is entered at each poll (`instrument`), not held across the awaits: an entered
    // guard would stay on this worker while it runs other tasks, mislabelling their logs.
    let span = tracing::debug_span!("shutdown_child", child = id);
    tracing::Instrument::instrument(stop_child(id, cell, shutdown), span).await
}

/// [`shut_down`]'s work, in its span.
async fn stop_child(id: &str, cell: &ActorCell, shutdown: Shutdown) {
    match shutdown {
        Shutdown::BrutalKill => kill(id, cell).await,
        Shutdown::Timeout(limit) => {
            match cell
                .stop_and_wait(Some("shutdown".into()), Some(limit))
                .await
            {
                Ok(()) => {}
                Err(ractor::RactorErr::Timeout) => {
                    tracing::warn!(child = id, ?limit, "child ignored stop; killing it");
                    kill(id, cell).await;
                }
                // Not running any more: nothing left to stop.
                Err(e) => tracing::debug!(child = id, error = %e, "child already gone"),
            }
        }
        Shutdown::Infinity => {
            if let Err(e) = cell.stop_and_wait(Some("shutdown".into()), None).await {
                tracing::debug!(child = id, error = %e, "child already gone");
            }
        }
    }
}

/// Kills a child and waits (bounded) until ractor reports it gone.
async fn kill(id: &str, cell: &ActorCell) {
    match cell.kill_and_wait(Some(KILL_WAIT)).await {
        Ok(()) => {}
        Err(ractor::RactorErr::Timeout) => {
            tracing::error!(
                child = id,
                "child did not end within {KILL_WAIT:?} of a kill"
            )
        }
        Err(e) => tracing::debug!(child = id, error = %e, "child already gone"),
    }
}

impl SupervisorState {
    fn index_of(&self, id: &str) -> Option<usize> {
        self.children.iter().position(|c| c.spec.id == id)
    }

    /// Starts child `idx` now. On failure the child is left without a cell.
    async fn start_at(&mut self, myself: &ActorCell, idx: usize) -> Result<ActorCell, String> {
        let child = &mut self.children[idx];
        child.status = Status::Starting;
        match (child.spec.start)(myself.clone()).await {
            Ok(started) => {
                let cell = started.cell;
                child.cell = Some(cell.clone());
                child.probe = started.probe;
                child.status = Status::Running;
                child.started_at = Some(Instant::now());
                self.by_actor.insert(cell.get_id(), child.spec.id.clone());
                tracing::debug!(child = %child.spec.id, actor = %cell.get_id(), "child started");
                Ok(cell)
            }
            Err(e) => {
                let reason = spawn_err_text(&e);
                child.status = Status::Failed;
                child.last_exit = Some(ExitReason::StartFailed(reason.clone()).to_string());
                tracing::warn!(child = %child.spec.id, error = %reason, "child failed to start");
                Err(reason)
            }
        }
    }

    /// Stops child `idx` (if running) per its shutdown spec; leaves its status `Stopped`.
    async fn stop_at(&mut self, idx: usize) {
        let child = &mut self.children[idx];
        if let Some(cell) = child.cell.take() {
            self.by_actor.remove(&cell.get_id());
            child.status = Status::Stopping;
            shut_down(&child.spec.id, &cell, child.spec.shutdown).await;
            child.last_exit = Some(ExitReason::Shutdown(None).to_string());
        }
        child.status = Status::Stopped;
    }

    /// Stops every child and cancels pending restarts. OTP: the temporary (dynamic) children —
    /// a simple_one_for_one supervisor's — have no order among themselves and are terminated
    /// at once, concurrently, each within its own shutdown spec (one at a time, a thousand
    /// sessions with a 5 s grace would take over an hour); then the others in reverse start
    /// order, one at a time (a child may depend on those started before it).
    async fn stop_all(&mut self) {
        for p in self.pending.drain().map(|(_, p)| p) {
            if let Some(t) = p.timer {
                t.abort();
            }
        }
        let mut dynamic = Vec::new();
        for child in self
            .children
            .iter_mut()
            .filter(|c| c.spec.restart == Restart::Temporary)
        {
            if let Some(cell) = child.cell.take() {
                self.by_actor.remove(&cell.get_id());
                child.status = Status::Stopping;
                dynamic.push((child.spec.id.clone(), cell, child.spec.shutdown));
            }
        }
        futures::future::join_all(
            dynamic
                .iter()
                .map(|(id, cell, shutdown)| shut_down(id, cell, *shutdown)),
        )
        .await;
        for child in self
            .children
            .iter_mut()
            .filter(|c| c.status == Status::Stopping)
        {
            child.last_exit = Some(ExitReason::Shutdown(None).to_string());
            child.status = Status::Stopped;
        }
        for idx in (0..self.children.len()).rev() {
            self.stop_at(idx).await;
        }
    }

    /// The rule for one exit: restart type decides whether to restart, intensity whether we may,
    /// the strategy which siblings go with it, the backoff when.
    async fn on_exit(
        &mut self,
        myself: &ActorRef<SupervisorMsg>,
        id: &str,
        reason: ExitReason,
    ) -> Result<(), ActorProcessingErr> {
        let Some(idx) = self.index_of(id) else {
            return Ok(());
        };
        let now = Instant::now();
        let child = &mut self.children[idx];
        if let Some(cell) = child.cell.take() {
            self.by_actor.remove(&cell.get_id());
        }
        let ran_for = child.started_at.map(|t| now - t).unwrap_or_default();
        child.last_exit = Some(reason.to_string());
        tracing::info!(child = id, reason = %reason, ?ran_for, "child exited");

        // Restart type.
        let restart = match child.spec.restart {
            Restart::Permanent => true,
            Restart::Transient => !reason.is_normal(),
            Restart::Temporary => false,
        };
        if !restart {
            if child.spec.restart == Restart::Temporary {
                // Temporary children are forgotten when they exit (OTP).
                self.children.remove(idx);
            } else {
                child.status = if reason.is_normal() {
                    Status::Stopped
                } else {
                    Status::Failed
                };
            }
            return Ok(());
        }

        // Intensity: one restart too many and we give up, in order, and escalate.
        child.recent.record(now);
        if !self.window.record(now) {
            let why = format!(
                "restart intensity exceeded ({} in {:?}); last: child '{id}' {reason}",
                self.intensity.max_restarts, self.intensity.period
            );
            tracing::error!(supervisor = %self.name, "{why}; stopping all children");
            self.stop_all().await;
            if let Some(i) = self.index_of(id) {
                self.children[i].status = Status::Failed;
            }
            return Err(why.into());
        }
        let delay = {
            let child = &mut self.children[idx];
            child.restarts_total += 1;
            child.backoff.next_delay(&child.spec.backoff, ran_for)
        };

        // Strategy: which children restart with it.
        let group: Vec<usize> = match self.strategy {
            Strategy::OneForOne => vec![idx],
            Strategy::OneForAll => (0..self.children.len()).collect(),
            Strategy::RestForOne => (idx..self.children.len()).collect(),
        };
        let mut ids = Vec::with_capacity(group.len());
        for &i in group.iter().rev() {
            if i != idx {
                if !self.children[i].is_live() && self.children[i].status != Status::Restarting {
                    continue; // stopped on purpose: stays stopped
                }
                self.stop_at(i).await;
                if self.children[i].spec.restart == Restart::Temporary {
                    continue; // never restarted; removed below
                }
            }
            ids.push(self.children[i].spec.id.clone());
        }
        ids.reverse();
        self.children.retain(|c| {
            c.spec.restart != Restart::Temporary || c.is_live() || ids.contains(&c.spec.id)
        });
        self.schedule(myself, ids, delay);
        Ok(())
    }

    /// Marks `ids` as restarting and sends `RestartDue` after `delay` (at once when zero).
    fn schedule(&mut self, myself: &ActorRef<SupervisorMsg>, ids: Vec<String>, delay: Duration) {
        for c in self
            .children
            .iter_mut()
            .filter(|c| ids.contains(&c.spec.id))
        {
            c.status = Status::Restarting;
        }
        let generation = self.next_generation;
        self.next_generation += 1;
        let timer = if delay.is_zero() {
            if let Err(e) = myself.send_message(SupervisorMsg::RestartDue(generation)) {
                // Only fails when we are already stopping; the restart is moot then.
                tracing::debug!(error = %e, "restart not queued: supervisor stopping");
            }
            None
        } else {
            tracing::info!(children = ?ids, ?delay, "restart after backoff");
            Some(myself.send_after(delay, move || SupervisorMsg::RestartDue(generation)))
        };
        self.pending
            .insert(generation, PendingRestart { ids, timer });
    }

    /// A backoff is over: start its children in order. A failed start is an abnormal exit of
    /// that child (counted against intensity); the rest of the group waits with it.
    async fn restart_due(
        &mut self,
        myself: &ActorRef<SupervisorMsg>,
        generation: u64,
    ) -> Result<(), ActorProcessingErr> {
        let Some(pending) = self.pending.remove(&generation) else {
            return Ok(());
        };
        let cell = myself.get_cell();
        for (n, id) in pending.ids.iter().enumerate() {
            let Some(idx) = self.index_of(id) else {
                continue;
            };
            if self.children[idx].status != Status::Restarting {
                continue; // terminated or restarted by hand meanwhile
            }
            if let Err(reason) = self.start_at(&cell, idx).await {
                let now = Instant::now();
                if !self.window.record(now) {
                    let why = format!(
                        "restart intensity exceeded; child '{id}' failed to start: {reason}"
                    );
                    tracing::error!(supervisor = %self.name, "{why}; stopping all children");
                    self.stop_all().await;
                    return Err(why.into());
                }
                let child = &mut self.children[idx];
                child.restarts_total += 1;
                child.recent.record(now);
                let delay = child
                    .backoff
                    .next_delay(&child.spec.backoff, Duration::ZERO);
                self.schedule(myself, pending.ids[n..].to_vec(), delay);
                return Ok(());
            }
        }
        Ok(())
    }

    async fn snapshot(&mut self, myself: &ActorCell) -> TreeNode {
        let now = Instant::now();
        let mut children = Vec::with_capacity(self.children.len());
        for c in &mut self.children {
            let mut node = TreeNode {
                id: c.spec.id.clone(),
                actor: c.cell.as_ref().map(|cell| cell.get_id().to_string()),
                kind: c.spec.kind,
                status: c.status,
                restarts_in_window: c.recent.count(now),
                restarts_total: c.restarts_total,
                last_exit: c.last_exit.clone(),
                uptime_ms: c
                    .started_at
                    .filter(|_| c.cell.is_some())
                    .map(|t| (now - t).as_millis() as u64),
                mailbox_depth: None,
                mailbox_full: None,
                lag_count: None,
                mailbox_bound: None,
                detail: Default::default(),
                children: Vec::new(),
            };
            c.probe.fill(&mut node);
            if let (NodeKind::Supervisor, Some(cell)) = (c.spec.kind, &c.cell) {
                let sub = SupervisorRef::from_cell(cell.clone());
                match sub
                    .call(SupervisorMsg::Tree, Some(TREE_CHILD_TIMEOUT))
                    .await
                {
                    Ok(sub_node) => node.children = sub_node.children,
                    Err(e) => node.last_exit = Some(format!("unresponsive: {e}")),
                }
            }
            children.push(node);
        }
        TreeNode {
            id: self.name.clone(),
            actor: Some(myself.get_id().to_string()),
            kind: NodeKind::Supervisor,
            status: Status::Running,
            restarts_in_window: self.window.count(now),
            restarts_total: self.children.iter().map(|c| c.restarts_total).sum(),
            last_exit: None,
            uptime_ms: Some((now - self.started_at).as_millis() as u64),
            mailbox_depth: None,
            mailbox_full: None,
            lag_count: None,
            mailbox_bound: None,
            detail: Default::default(),
            children,
        }
    }
}

fn spawn_err_text(e: &SpawnErr) -> String {
    match e {
        SpawnErr::StartupFailed(inner) => inner.to_string(),
        other => other.to_string(),
    }
}

impl Actor for Supervisor {
    type Msg = SupervisorMsg;
    type State = SupervisorState;
    type Arguments = SupervisorSpec;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        spec: SupervisorSpec,
    ) -> Result<Self::State, ActorProcessingErr> {
        let mut state = SupervisorState {
            name: spec.name,
            strategy: spec.strategy,
            intensity: spec.intensity,
            window: RestartWindow::new(spec.intensity),
            max_children: spec.max_children,
            children: Vec::with_capacity(spec.children.len()),
            by_actor: HashMap::new(),
            pending: HashMap::new(),
            next_generation: 0,
            started_at: Instant::now(),
        };
        let cell = myself.get_cell();
        // Ordered start; one failure undoes the rest in reverse and fails our own start (OTP).
        for child in spec.children {
            if state.index_of(&child.id).is_some() {
                state.stop_all().await;
                return Err(format!("duplicate child id '{}'", child.id).into());
            }
            state.children.push(Child::new(child, spec.intensity));
            let idx = state.children.len() - 1;
            if let Err(reason) = state.start_at(&cell, idx).await {
                let id = state.children[idx].spec.id.clone();
                state.stop_all().await;
                return Err(format!("child '{id}' failed to start: {reason}").into());
            }
        }
        Ok(state)
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        // Ordered stop on a graceful stop of the supervisor. (After a kill ractor skips this and
        // kills the children itself, unordered: their Drop still releases what they hold.)
        state.stop_all().await;
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            SupervisorMsg::StartChild(spec, reply) => {
                let result = if state.index_of(&spec.id).is_some() {
                    Err(SupervisorError::AlreadyPresent(spec.id))
                } else if state.children.len() >= state.max_children {
                    Err(SupervisorError::TooManyChildren {
                        max: state.max_children,
                    })
                } else {
                    let id = spec.id.clone();
                    state.children.push(Child::new(spec, state.intensity));
                    let idx = state.children.len() - 1;
                    match state.start_at(&myself.get_cell(), idx).await {
                        Ok(cell) => Ok(cell),
                        Err(reason) => {
                            // A dynamic child that cannot start is not kept (nothing to restart).
                            state.children.remove(idx);
                            Err(SupervisorError::StartFailed { id, reason })
                        }
                    }
                };
                answer(reply, result);
            }
            SupervisorMsg::TerminateChild { id, delete, reply } => {
                let result = match state.index_of(&id) {
                    None => Err(SupervisorError::NotFound(id)),
                    Some(idx) => {
                        state.stop_at(idx).await;
                        if delete || state.children[idx].spec.restart == Restart::Temporary {
                            state.children.remove(idx);
                        }
                        Ok(())
                    }
                };
                answer(reply, result);
            }
            SupervisorMsg::RestartChild(id, reply) => {
                let result = match state.index_of(&id) {
                    None => Err(SupervisorError::NotFound(id)),
                    Some(idx) if state.children[idx].is_live() => Err(SupervisorError::Running(id)),
                    Some(idx) => state
                        .start_at(&myself.get_cell(), idx)
                        .await
                        .map_err(|reason| SupervisorError::StartFailed { id, reason }),
                };
                answer(reply, result);
            }
            SupervisorMsg::DeleteChild(id, reply) => {
                let result = match state.index_of(&id) {
                    None => Err(SupervisorError::NotFound(id)),
                    Some(idx)
                        if state.children[idx].is_live()
                            || state.children[idx].status == Status::Restarting =>
                    {
                        Err(SupervisorError::Running(id))
                    }
                    Some(idx) => {
                        state.children.remove(idx);
                        Ok(())
                    }
                };
                answer(reply, result);
            }
            SupervisorMsg::Tree(reply) => {
                let node = state.snapshot(&myself.get_cell()).await;
                answer(reply, node);
            }
            SupervisorMsg::RestartDue(generation) => {
                state.restart_due(&myself, generation).await?;
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<Self::Msg>,
        event: SupervisionEvent,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        // Always overridden: ractor's default stops the supervisor on any child exit.
        let Some(reason) = ExitReason::from_event(&event) else {
            return Ok(());
        };
        let Some(actor) = event.actor_id() else {
            return Ok(());
        };
        // Events from actors we already stopped or replaced are stale: ignore them.
        let Some(id) = state.by_actor.get(&actor).cloned() else {
            tracing::trace!(%actor, "supervision event from a former child");
            return Ok(());
        };
        // Dropping `event` here drops the child's boxed State, running its Drop.
        drop(event);
        state.on_exit(&myself, &id, reason).await
    }
}

/// Sends a reply; a caller that stopped waiting is not an error of ours.
fn answer<T: Send + 'static>(reply: RpcReplyPort<T>, value: T) {
    if reply.send(value).is_err() {
        tracing::debug!("caller stopped waiting for the supervisor's answer");
    }
}
