//! Test actors for the supervisor suite: a worker that records its lifecycle into a shared log
//! and can be told to exit in every way an actor can, and a host that records what it is told.

#![allow(dead_code)]

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use ractor::{Actor, ActorProcessingErr, ActorRef, SupervisionEvent};
use tokio::time::Instant;

/// A shared, ordered record of what happened.
#[derive(Clone, Default)]
pub struct Log(Arc<Mutex<Vec<(String, Instant)>>>);

impl Log {
    pub fn push(&self, what: impl Into<String>) {
        self.0.lock().push((what.into(), Instant::now()));
    }
    pub fn entries(&self) -> Vec<String> {
        self.0.lock().iter().map(|(e, _)| e.clone()).collect()
    }
    pub fn count(&self, what: &str) -> usize {
        self.0.lock().iter().filter(|(e, _)| e == what).count()
    }
    pub fn times(&self, what: &str) -> Vec<Instant> {
        self.0
            .lock()
            .iter()
            .filter(|(e, _)| e == what)
            .map(|(_, t)| *t)
            .collect()
    }
    pub fn position(&self, what: &str) -> Option<usize> {
        self.entries().iter().position(|e| e == what)
    }
}

/// Waits (bounded) until `cond` holds; panics with `what` otherwise.
pub async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// How a worker is told to end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitHow {
    Normal,
    Shutdown,
    Panic,
    Err,
}

pub const ALL_EXITS: [ExitHow; 4] = [
    ExitHow::Normal,
    ExitHow::Shutdown,
    ExitHow::Panic,
    ExitHow::Err,
];

pub enum WorkerMsg {
    Exit(ExitHow),
    /// Busy in a handler for this long: ignores stop meanwhile.
    Block(Duration),
    Crash,
}

/// Records `start:<id>` (pre_start), `stop:<id>` (post_stop), `drop:<id>` (State's Drop) and
/// `killed:<id>` (a Block handler abandoned by a kill).
pub struct Worker {
    pub id: String,
    pub log: Log,
    /// Lifetimes for successive starts: the worker crashes after each; empty = runs forever.
    pub lifetimes: Arc<Mutex<VecDeque<Duration>>>,
    /// (ok, fail): after `ok` successful starts, the next `fail` starts fail in pre_start.
    pub fail_starts: Arc<Mutex<(u32, u32)>>,
}

impl Worker {
    pub fn new(id: &str, log: &Log) -> Self {
        Self {
            id: id.into(),
            log: log.clone(),
            lifetimes: Default::default(),
            fail_starts: Arc::new(Mutex::new((u32::MAX, 0))),
        }
    }
}

pub struct WorkerState {
    id: String,
    log: Log,
}

impl Drop for WorkerState {
    fn drop(&mut self) {
        self.log.push(format!("drop:{}", self.id));
    }
}

struct KilledGuard(String, Log);
impl Drop for KilledGuard {
    fn drop(&mut self) {
        if std::thread::panicking() {
            return;
        }
        self.1.push(format!("killed:{}", self.0));
    }
}

impl Actor for Worker {
    type Msg = WorkerMsg;
    type State = WorkerState;
    type Arguments = ();

    async fn pre_start(
        &self,
        _myself: ActorRef<WorkerMsg>,
        _: (),
    ) -> Result<WorkerState, ActorProcessingErr> {
        self.log.push(format!("attempt:{}", self.id));
        {
            // (successful starts still allowed, failures to give after them)
            let mut f = self.fail_starts.lock();
            if f.0 > 0 {
                f.0 = f.0.saturating_sub(1);
            } else if f.1 > 0 {
                f.1 -= 1;
                return Err(format!("{} refuses to start", self.id).into());
            }
        }
        self.log.push(format!("start:{}", self.id));
        Ok(WorkerState {
            id: self.id.clone(),
            log: self.log.clone(),
        })
    }

    async fn post_start(
        &self,
        myself: ActorRef<WorkerMsg>,
        _state: &mut WorkerState,
    ) -> Result<(), ActorProcessingErr> {
        if let Some(life) = self.lifetimes.lock().pop_front() {
            if life.is_zero() {
                return Err("crashed at start".into());
            }
            // The timer task dies with the runtime; the test owns its lifetime.
            drop(myself.send_after(life, || WorkerMsg::Crash));
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<WorkerMsg>,
        state: &mut WorkerState,
    ) -> Result<(), ActorProcessingErr> {
        state.log.push(format!("stop:{}", state.id));
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<WorkerMsg>,
        msg: WorkerMsg,
        state: &mut WorkerState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            WorkerMsg::Exit(ExitHow::Normal) => myself.stop(None),
            WorkerMsg::Exit(ExitHow::Shutdown) => myself.stop(Some("shutdown".into())),
            WorkerMsg::Exit(ExitHow::Panic) => panic!("{} panics on purpose", state.id),
            WorkerMsg::Exit(ExitHow::Err) | WorkerMsg::Crash => {
                return Err(format!("{} fails on purpose", state.id).into());
            }
            WorkerMsg::Block(d) => {
                // Said first, so a test can wait until the worker really blocks.
                state.log.push(format!("blocking:{}", state.id));
                let _guard = KilledGuard(state.id.clone(), state.log.clone());
                tokio::time::sleep(d).await;
                std::mem::forget(_guard);
            }
        }
        Ok(())
    }
}

/// A host actor standing in for an embedding application: records supervision events.
pub struct Host {
    pub log: Log,
}

impl Actor for Host {
    type Msg = ();
    type State = ();
    type Arguments = ();

    async fn pre_start(&self, _: ActorRef<()>, _: ()) -> Result<(), ActorProcessingErr> {
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        _myself: ActorRef<()>,
        event: SupervisionEvent,
        _state: &mut (),
    ) -> Result<(), ActorProcessingErr> {
        match event {
            SupervisionEvent::ActorFailed(_, e) => self.log.push(format!("failed:{e}")),
            SupervisionEvent::ActorTerminated(_, _, r) => self
                .log
                .push(format!("terminated:{}", r.unwrap_or_default())),
            _ => {}
        }
        Ok(())
    }
}
