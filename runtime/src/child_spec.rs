//! ChildSpec: how a Supervisor starts, restarts and stops one child (OTP's child specification).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorCell, SpawnErr};
use serde::{Deserialize, Serialize};

use crate::backoff::Backoff;
use crate::tree::{NodeKind, Probe};

/// When a child that exited is started again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Restart {
    /// Always restarted.
    Permanent,
    /// Restarted only after an abnormal exit (not `normal` / `shutdown`).
    Transient,
    /// Never restarted; removed from the supervisor when it exits.
    Temporary,
}

/// How a child is stopped by its supervisor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Shutdown {
    /// Killed at once (ractor kill: the current handler is abandoned, `post_stop` skipped).
    BrutalKill,
    /// Asked to stop, then killed if still running after the timeout.
    Timeout(Duration),
    /// Asked to stop, waited for without limit (the default for supervisors).
    Infinity,
}

/// A started child: its cell and the gauges it exposes.
#[derive(Debug)]
pub struct Started {
    /// The running actor, linked to the supervisor.
    pub cell: ActorCell,
    /// Gauges for introspection.
    pub probe: Probe,
}

impl From<ActorCell> for Started {
    fn from(cell: ActorCell) -> Self {
        Self {
            cell,
            probe: Probe::default(),
        }
    }
}

/// The future a start function returns.
pub type StartFuture = Pin<Box<dyn Future<Output = Result<Started, SpawnErr>> + Send>>;

/// Starts the child linked to the supervisor cell it is given. Called again on every restart.
pub type StartFn = Arc<dyn Fn(ActorCell) -> StartFuture + Send + Sync>;

/// Everything a supervisor needs to run one child.
#[derive(Clone)]
pub struct ChildSpec {
    /// Unique among the supervisor's children.
    pub id: String,
    /// Spawns the child linked to the given supervisor cell.
    pub start: StartFn,
    /// Restart type.
    pub restart: Restart,
    /// Shutdown spec.
    pub shutdown: Shutdown,
    /// Worker or supervisor (a supervisor child is asked for its own subtree by `tree()`).
    pub kind: NodeKind,
    /// Delay policy before restarts; `Backoff::NONE` restarts at once.
    pub backoff: Backoff,
}

impl std::fmt::Debug for ChildSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChildSpec")
            .field("id", &self.id)
            .field("restart", &self.restart)
            .field("shutdown", &self.shutdown)
            .field("kind", &self.kind)
            .field("backoff", &self.backoff)
            .finish_non_exhaustive()
    }
}

impl ChildSpec {
    /// A permanent worker with a 5 s shutdown timeout and no backoff (OTP's defaults), started by
    /// `start`.
    pub fn new<F, Fut>(id: impl Into<String>, start: F) -> Self
    where
        F: Fn(ActorCell) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Started, SpawnErr>> + Send + 'static,
    {
        Self {
            id: id.into(),
            start: Arc::new(move |sup| Box::pin(start(sup))),
            restart: Restart::Permanent,
            shutdown: Shutdown::Timeout(Duration::from_secs(5)),
            kind: NodeKind::Worker,
            backoff: Backoff::NONE,
        }
    }

    /// A worker running actor `A`, built afresh by `make` for every (re)start.
    pub fn actor<A, F>(id: impl Into<String>, make: F) -> Self
    where
        A: Actor,
        F: Fn() -> (A, A::Arguments) + Send + Sync + 'static,
    {
        let make = Arc::new(make);
        Self::new(id, move |sup| {
            let make = make.clone();
            async move {
                let (actor, args) = make();
                let (r, _task) = A::spawn_linked(None, actor, args, sup).await?;
                Ok(Started::from(r.get_cell()))
            }
        })
    }

    /// Sets the restart type.
    pub fn restart(mut self, restart: Restart) -> Self {
        self.restart = restart;
        self
    }

    /// Sets the shutdown spec.
    pub fn shutdown(mut self, shutdown: Shutdown) -> Self {
        self.shutdown = shutdown;
        self
    }

    /// Sets the backoff policy.
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// Marks the child as a supervisor (`Shutdown::Infinity` unless set otherwise later).
    pub fn supervisor(mut self) -> Self {
        self.kind = NodeKind::Supervisor;
        self.shutdown = Shutdown::Infinity;
        self
    }
}
