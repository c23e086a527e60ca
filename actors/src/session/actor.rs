//! Session: one actor per agent process, and the owner of everything that process holds.
//!
//! Lifecycle: Starting → Running → (Stopping →) Exited → Restarting (after backoff) | Stopped |
//! Failed (intensity exceeded or could not start). Every transition is an event.
//!
//! The rules it keeps, by construction:
//! - no leak: a stop signals the process group, waits the grace, then SIGKILLs every process of
//!   the session's tree (groups, descendants, escapees carrying the session's env marker); when
//!   the main process exits by itself the rest of its tree is swept the same way; and if the
//!   actor itself is killed, `Drop` of its state kills the tree and hands zombies to the reaper;
//! - no loss: the exit is announced only after the output is drained to EOF/EIO (bounded, so a
//!   leftover holder of the terminal cannot hang it), and events carry the output offset so
//!   subscribers get every byte before the exit;
//! - no blocking: output and input run in their own actors; a process that never reads its
//!   input fills a bounded queue and the sender gets an explicit error.

use std::collections::HashMap;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use corral_runtime::{BackoffState, RestartWindow};
use nix::sys::signal::Signal;
use ractor::concurrency::JoinHandle;
use ractor::{
    Actor, ActorCell, ActorProcessingErr, ActorRef, MessagingErr, RpcReplyPort, SupervisionEvent,
};
use tokio::sync::watch;
use tokio::time::Instant;

use super::held::{HeldArgs, HeldReader};
use super::input::InputWriter;
use super::lines::Lines;
use super::link::{HolderLink, Link, LinkArgs};
use super::msg::{SessionMsg, ViewerId};
use super::output::{Framing, OutputReader, ReaderArgs, Sink};
use super::shared::SessionShared;
use super::spawned::{Master, Source, Spawned};
use crate::agent::Profile;
use crate::env::{self, PrivateTmp};
use crate::error::SessionError;
use crate::event::{EventKind, SessionState};
use crate::holder::Holders;
use crate::holder::ring::SharedRing;
use crate::holder::wire::Exit;
use crate::pipe;
use crate::process::{self, ExitStatus, PidFd, SessionTree, reaper};
use crate::pty;
use crate::screen::{Screen, ScreenArgs, ScreenMsg};
use crate::spec::{Mode, RestartPolicy, SessionSpec, Size};

/// How long the output may take to drain after the process tree is gone.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);
/// How long to wait for a SIGKILLed main process to be reported dead.
const KILL_WAIT: Duration = Duration::from_secs(5);
/// Least output a holder keeps unlogged (while no server is attached, the program can write
/// this much before it blocks on its terminal). Shared memory, touched only as it is used.
const HOLDER_RING: usize = 8 << 20;
/// Default bound on queued input bytes per session.
pub const INPUT_QUEUE_BYTES: usize = 1 << 20;

/// Arguments of a Session.
pub struct SessionArgs {
    /// The shared half (created by the manager, which indexes it).
    pub shared: Arc<SessionShared>,
    /// The spec.
    pub spec: SessionSpec,
    /// Where private TMPDIRs go.
    pub tmp_root: PathBuf,
    /// Told the outcome of the first process start.
    pub started: Option<tokio::sync::oneshot::Sender<Result<(), SessionError>>>,
    /// How the session begins.
    pub begin: Begin,
    /// Where PTY processes get their holders (None: the server holds them itself).
    pub holders: Option<Holders>,
    /// The line an adopted pipe session's log ends inside, continued by its holder's ring
    /// (empty for any other session; None: too long to parse).
    pub carry: Option<Vec<u8>>,
}

/// How a session actor begins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Begin {
    /// Start its process (a new session).
    Start,
    /// Start its process again after a server restart; an agent profile resumes its
    /// conversation (the profile's resume template) when the agent session id is known.
    Recover,
    /// Do not start anything: a restored session that stays as it was (Stopped or Failed).
    Dormant,
    /// Its process outlived the previous server under its holder: attach to the holder and
    /// carry on (same pid, same log, output from the log's end).
    Adopt,
}

/// The Session actor.
pub struct Session;

/// One running process incarnation.
struct Running {
    /// Incarnation number.
    generation: u64,
    /// Main pid (= pgid = sid).
    pid: i32,
    /// Its pidfd (None when it had already exited under its holder, which reaped it).
    pidfd: Option<Arc<PidFd>>,
    /// Its holder, when it has one: the link, and where its exit arrives.
    held: Option<(Link, watch::Receiver<Option<Exit>>)>,
    /// A held terminal's shared ring (to tell a closed terminal still draining from one held
    /// open by a leftover process).
    shm: Option<Arc<SharedRing>>,
    /// Membership rules for the sweep.
    tree: SessionTree,
    /// PTY master (PTY mode), for resize; dropped after the drain.
    master: Option<Master>,
    /// The output readers.
    io_actors: Vec<ActorCell>,
    /// The input writer (its task ends when this is dropped).
    writer: Option<InputWriter>,
    /// Flips to true when the output is drained.
    eof: Vec<watch::Receiver<bool>>,
    /// When it started.
    started: Instant,
    /// Whether its exit status was collected.
    reaped: bool,
}

impl Drop for Running {
    /// Only reached with `reaped == false` if the actor was killed or failed mid-flight: kill the
    /// whole tree now (no grace is possible in Drop) and let the reaper collect the zombies.
    /// A holder is released either way: its session's process is over for this server.
    fn drop(&mut self) {
        for cell in &self.io_actors {
            cell.kill();
        }
        self.writer = None;
        if !self.reaped {
            tracing::warn!(
                pid = self.pid,
                "session state dropped with a live process; killing its tree"
            );
            process::sweep::kill_all_now(&self.tree);
            if self.held.is_none() {
                reaper::release(self.pid);
                reaper::disown(self.pid);
            }
        }
        if let Some((link, _)) = &self.held {
            link.release();
        }
    }
}

/// The task that sends `RestartDue` after a backoff delay (aborted on stop and in Drop).
type RestartTimer = JoinHandle<Result<(), MessagingErr<SessionMsg>>>;

/// Session actor state.
pub struct SessionActorState {
    /// Shared half.
    shared: Arc<SessionShared>,
    /// The spec.
    spec: SessionSpec,
    /// The process, while one exists.
    running: Option<Running>,
    /// Last process incarnation number.
    generation: u64,
    /// Restart intensity window.
    window: RestartWindow,
    /// Backoff position.
    backoff: BackoffState,
    /// Pending restart timer and its generation.
    restart_timer: Option<(u64, RestartTimer)>,
    /// Screen (PTY mode).
    screen: Option<ActorRef<ScreenMsg>>,
    /// Private TMPDIR (removed on drop).
    tmp: PrivateTmp,
    /// Known viewer sizes, bounded.
    viewers: HashMap<ViewerId, Size>,
    /// The parsed stop signal.
    stop_signal: Signal,
    /// Told the outcome of the first start (taken by `post_start`).
    started: Option<tokio::sync::oneshot::Sender<Result<(), SessionError>>>,
    /// How it began.
    begin: Begin,
    /// Where PTY processes get their holders.
    holders: Option<Holders>,
    /// Detached: its process stays with its holder for the next server; this actor no longer
    /// touches the process or the recorded state.
    detached: bool,
    /// See [`SessionArgs::carry`]; taken by the first reader of the holder's ring.
    carry: Option<Option<Vec<u8>>>,
}

/// Bound on remembered viewer sizes per session.
const MAX_VIEWERS: usize = 1024;

impl Drop for SessionActorState {
    fn drop(&mut self) {
        if let Some((_, t)) = &self.restart_timer {
            t.abort();
        }
        if let Some(s) = &self.screen {
            s.kill();
        }
        if !self.shared.state().is_final() && !self.detached {
            {
                let mut s = self.shared.status.write();
                s.pid = None;
                s.holder_pid = None;
                s.identity = None;
            }
            self.shared.set_state(
                SessionState::Failed,
                Some("session actor stopped unexpectedly".into()),
            );
        }
        *self.shared.writer.write() = None;
        *self.shared.screen.write() = None;
    }
}

impl Actor for Session {
    type Msg = SessionMsg;
    type State = SessionActorState;
    type Arguments = SessionArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<SessionMsg>,
        args: SessionArgs,
    ) -> Result<SessionActorState, ActorProcessingErr> {
        let spec = args.spec;
        let stop_signal = Signal::from_str(&spec.stop_signal)
            .map_err(|_| SessionError::BadSpec(format!("unknown signal {}", spec.stop_signal)))?;
        if spec.argv.is_empty() {
            return Err(SessionError::BadSpec("argv is empty".into()).into());
        }
        let profile = Profile::parse(spec.agent.as_deref()).map_err(SessionError::BadSpec)?;
        if profile.is_some() && spec.hook_command.is_none() {
            return Err(SessionError::BadSpec(
                "agent profiles need a hook command (spawn through corral serve)".into(),
            )
            .into());
        }
        if spec.mode == Mode::StreamJson && profile.is_none() {
            return Err(SessionError::BadSpec(
                "mode stream-json needs an agent profile that speaks it (agent \"claude\")".into(),
            )
            .into());
        }
        let tmp = PrivateTmp::create(&args.tmp_root, args.shared.id)
            .map_err(|e| SessionError::Spawn(format!("private TMPDIR: {e}")))?;
        let screen = if spec.mode == Mode::Pty {
            let (s, _) = Actor::spawn_linked(
                None,
                Screen,
                ScreenArgs {
                    ring: args.shared.ring.clone(),
                    rows: spec.size.rows,
                    cols: spec.size.cols,
                },
                myself.get_cell(),
            )
            .await?;
            Some(s)
        } else {
            None
        };
        *args.shared.screen.write() = screen.clone();
        let state = SessionActorState {
            shared: args.shared,
            window: RestartWindow::new(spec.intensity),
            spec,
            running: None,
            generation: 0,
            backoff: BackoffState::default(),
            restart_timer: None,
            screen,
            tmp,
            viewers: HashMap::new(),
            stop_signal,
            started: args.started,
            begin: args.begin,
            holders: args.holders,
            detached: false,
            carry: Some(args.carry),
        };
        Ok(state)
    }

    async fn post_start(
        &self,
        myself: ActorRef<SessionMsg>,
        st: &mut SessionActorState,
    ) -> Result<(), ActorProcessingErr> {
        // The first process starts here, in the session's own task, so many sessions start
        // concurrently (the supervisor only waits for `pre_start`); `spawn` still learns the
        // outcome through `started`.
        let result = match st.begin {
            Begin::Dormant => Ok(()),
            Begin::Start | Begin::Recover => st.start(&myself).await,
            Begin::Adopt => {
                st.adopt(&myself).await;
                Ok(())
            }
        };
        if let Err(e) = &result {
            st.shared
                .set_state(SessionState::Failed, Some(format!("could not start: {e}")));
            myself.stop(Some(format!("start failed: {e}")));
        }
        let started = result.is_ok() && matches!(st.begin, Begin::Start | Begin::Recover);
        if let Some(tx) = st.started.take()
            && tx.send(result).is_err()
        {
            tracing::debug!(session = %st.shared.id, "spawner stopped waiting for the start");
        }
        // The next session's holder starts now that this spawn is answered: off its path.
        if started && let Some(holders) = st.holders.clone() {
            let ahead = tokio::task::spawn_blocking(move || holders.prewarm()).await;
            if let Err(e) = ahead {
                tracing::warn!(error = %e, "starting a holder ahead failed");
            }
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<SessionMsg>,
        st: &mut SessionActorState,
    ) -> Result<(), ActorProcessingErr> {
        // A graceful stop of the actor (its supervisor's ordered shutdown) stops the process
        // gracefully too. After a kill or a panic this does not run; Drop kills the tree instead.
        // A detached session's process belongs to its holder and the next server.
        if !st.detached {
            st.stop(Some(st.spec.grace)).await;
        }
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<SessionMsg>,
        msg: SessionMsg,
        st: &mut SessionActorState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            SessionMsg::ProcessExited { generation } => {
                if st.running.as_ref().map(|r| r.generation) == Some(generation) {
                    let status = st.finish_process(false).await;
                    st.after_exit(&myself, status);
                }
            }
            SessionMsg::HolderLost { generation, why } => {
                if st.running.as_ref().map(|r| r.generation) == Some(generation) {
                    st.lose_process(&myself, why).await;
                }
            }
            SessionMsg::RestartDue { generation } => {
                if matches!(&st.restart_timer, Some((g, _)) if *g == generation) {
                    st.restart_timer = None;
                    if let Err(e) = st.start(&myself).await {
                        tracing::warn!(session = %st.shared.id, error = %e, "restart failed");
                        st.after_failed_start(&myself, e.to_string());
                    }
                }
            }
            SessionMsg::Stop {
                grace,
                shutdown,
                reply,
            } => {
                let grace = grace.unwrap_or(st.spec.grace);
                if shutdown && !st.shared.state().is_final() {
                    st.shared.status.write().interrupted = true;
                }
                st.stop(Some(grace)).await;
                answer(reply, st.shared.info());
            }
            SessionMsg::Detach(reply) => {
                let kept = st.running.as_ref().is_some_and(|r| r.held.is_some());
                if kept {
                    st.detach();
                } else {
                    if !st.shared.state().is_final() {
                        st.shared.status.write().interrupted = true;
                    }
                    st.stop(Some(st.spec.grace)).await;
                }
                answer(reply, kept);
            }
            SessionMsg::Kill(reply) => {
                st.stop(None).await;
                answer(reply, st.shared.info());
            }
            SessionMsg::Restart(reply) => {
                st.stop(Some(st.spec.grace)).await;
                st.backoff = BackoffState::default();
                let result = match st.start(&myself).await {
                    Ok(()) => Ok(st.shared.info()),
                    Err(e) => {
                        st.shared
                            .set_state(SessionState::Failed, Some(format!("restart failed: {e}")));
                        Err(e)
                    }
                };
                answer(reply, result);
            }
            SessionMsg::Resize { viewer, size } => {
                if st.viewers.len() < MAX_VIEWERS || st.viewers.contains_key(&viewer) {
                    st.viewers.insert(viewer, size);
                }
                let last = st.shared.last_input_viewer.load(Ordering::Relaxed);
                // Policy (tmux `window-size latest`): the last viewer who typed sets the size;
                // before anyone typed, the latest resize wins.
                if last == 0 || last == viewer {
                    st.resize(size);
                }
            }
            SessionMsg::ViewerActive(viewer) => {
                if let Some(size) = st.viewers.get(&viewer).copied() {
                    st.resize(size);
                }
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        _myself: ActorRef<SessionMsg>,
        event: SupervisionEvent,
        st: &mut SessionActorState,
    ) -> Result<(), ActorProcessingErr> {
        // Our own children: the I/O actors stop at EOF (normal); a failed screen is dropped and
        // snapshots report it. Never stop the session for them (ractor's default would).
        if let SupervisionEvent::ActorFailed(cell, err) = &event {
            if st.screen.as_ref().map(|s| s.get_id()) == Some(cell.get_id()) {
                tracing::error!(session = %st.shared.id, error = %err, "screen failed");
                st.screen = None;
                *st.shared.screen.write() = None;
            } else {
                tracing::error!(session = %st.shared.id, error = %err, "I/O actor failed");
            }
        }
        Ok(())
    }
}

/// Sends a reply; a caller that gave up waiting is not our error.
fn answer<T: Send + 'static>(reply: RpcReplyPort<T>, value: T) {
    if reply.send(value).is_err() {
        tracing::debug!("caller stopped waiting for the session's answer");
    }
}

impl SessionActorState {
    /// Spawns a new process incarnation and its I/O actors.
    #[tracing::instrument(name = "session.spawn", skip_all, fields(session = %self.shared.id, name = %self.shared.name, generation = self.generation + 1))]
    async fn start(&mut self, myself: &ActorRef<SessionMsg>) -> Result<(), SessionError> {
        self.shared.set_state(SessionState::Starting, None);
        self.generation += 1;
        let generation = self.generation;
        let id = self.shared.id;
        let envv = env::build(
            id,
            self.spec.mode == Mode::Pty,
            self.tmp.path(),
            &self.spec.env,
        );
        let (size, agent_session) = {
            let s = self.shared.status.read();
            (s.size, s.agent_session_id.clone())
        };
        // An agent profile rewrites argv: its settings, and after a crash, its resume template.
        let argv = match Profile::parse(self.spec.agent.as_deref()) {
            Ok(Some(profile)) => profile
                .prepare(
                    &self.spec.argv,
                    self.spec.mode,
                    self.tmp.path(),
                    self.spec.hook_command.as_deref().unwrap_or_default(),
                    agent_session
                        .as_deref()
                        .filter(|_| generation > 1 || self.begin == Begin::Recover),
                )
                .map_err(|e| SessionError::Spawn(format!("agent profile: {e}")))?,
            Ok(None) => self.spec.argv.clone(),
            Err(e) => return Err(SessionError::BadSpec(e)),
        };
        let spawned = match (self.spec.mode, &self.holders) {
            (mode, Some(holders)) => {
                let holders = holders.clone();
                let program = crate::holder::launch::Program {
                    argv: argv.clone(),
                    env: envv.clone(),
                    cwd: self.spec.cwd.clone(),
                    size,
                    base: self.shared.ring.head(),
                    // What the program may write while no server is attached before it
                    // blocks (the session Ring's capacity, at least HOLDER_RING).
                    ring: self.spec.ring_capacity.max(HOLDER_RING),
                    pipes: mode != Mode::Pty,
                };
                let attached = tokio::task::spawn_blocking(move || {
                    crate::holder::launch::launch(&holders, id, program)
                })
                .await
                .map_err(|e| SessionError::Spawn(format!("holder launch: {e}")))?
                .map_err(|e| SessionError::Spawn(format!("holder: {e}")))?;
                Spawned::held(attached).map_err(|e| SessionError::Spawn(e.to_string()))?
            }
            (Mode::Pty, None) => {
                let p = pty::spawn(&argv, self.spec.cwd.as_deref(), &envv, size)
                    .map_err(|e| SessionError::Spawn(e.to_string()))?;
                Spawned {
                    pid: p.pid,
                    pidfd: Some(p.pidfd),
                    master: Some(Master::Own(p.master)),
                    output: Source::Fd(p.output),
                    input: p.input,
                    stderr: None,
                    held: None,
                }
            }
            (Mode::Pipe | Mode::StreamJson, None) => {
                let p = pipe::spawn(&argv, self.spec.cwd.as_deref(), &envv)
                    .map_err(|e| SessionError::Spawn(e.to_string()))?;
                Spawned {
                    pid: p.pid,
                    pidfd: Some(p.pidfd),
                    master: None,
                    output: Source::Fd(p.stdout),
                    input: p.stdin,
                    stderr: Some(p.stderr),
                    held: None,
                }
            }
        };
        self.run(myself, generation, spawned).await
    }

    /// Attaches to the holder a previous server left running ([`Begin::Adopt`]); if that fails,
    /// the process is lost and the restart policy decides.
    #[tracing::instrument(name = "session.adopt", skip_all, fields(session = %self.shared.id, name = %self.shared.name))]
    async fn adopt(&mut self, myself: &ActorRef<SessionMsg>) {
        self.generation += 1;
        let generation = self.generation;
        let id = self.shared.id;
        let recorded = self.shared.status.read().identity.clone();
        let attached = match &self.holders {
            Some(holders) => {
                let socket = holders.socket(id);
                let from = self.shared.ring.head();
                tokio::task::spawn_blocking(move || crate::holder::launch::attach(&socket, from))
                    .await
                    .map_err(|e| e.to_string())
                    .and_then(|r| r.map_err(|e| e.to_string()))
            }
            None => Err("this server runs no holders".to_string()),
        };
        let attached = attached.and_then(|a| match &recorded {
            Some(r) if r.pid != a.pid || (a.starttime != 0 && r.starttime != a.starttime) => {
                Err(format!(
                    "holder runs pid {} (start {}), the registry recorded pid {} (start {})",
                    a.pid, a.starttime, r.pid, r.starttime
                ))
            }
            _ => Ok(a),
        });
        let result = match attached {
            Ok(a) => {
                let (pid, holder, exited) = (a.pid, a.holder, a.exited);
                match Spawned::held(a) {
                    Ok(spawned) => match self.run(myself, generation, spawned).await {
                        Ok(()) => {
                            tracing::info!(session = %id, pid, holder, exited = exited.is_some(), "reattached to its holder");
                            Ok(())
                        }
                        Err(e) => Err(e.to_string()),
                    },
                    Err(e) => Err(e.to_string()),
                }
            }
            Err(e) => Err(e),
        };
        if let Err(why) = result {
            tracing::warn!(session = %id, error = %why, "could not reattach to the holder");
            // Whatever is left of the old process goes, as after a crash without holders.
            let mut tree = process::SessionTree::marker_only(id.to_string());
            if let Some(r) = recorded.filter(|r| r.is_alive_same()) {
                tree = process::SessionTree::new(r.pid).with_marker(id.to_string());
            }
            process::sweep::kill_all(&tree).await;
            if let Some(holders) = &self.holders {
                holders.forget(id);
            }
            self.settle_loss(
                myself,
                format!("lost: could not reattach to its holder: {why}"),
            );
        }
    }

    /// Sets up a spawned (or adopted) process incarnation: its readers, writer and status.
    async fn run(
        &mut self,
        myself: &ActorRef<SessionMsg>,
        generation: u64,
        spawned: Spawned,
    ) -> Result<(), SessionError> {
        let id = self.shared.id;
        let Spawned {
            pid,
            pidfd,
            master,
            output: out_fd,
            input: in_fd,
            stderr: err_fd,
            held,
        } = spawned;
        let tree = SessionTree {
            main_pid: pid,
            sid: pid,
            pgids: [pid].into_iter().collect(),
            marker: Some((env::SESSION_ID_VAR.to_string(), id.to_string())),
            holder: held.as_ref().map_or(0, |(l, _)| l.holder),
        };
        let exited_already = held.as_ref().and_then(|(_, e)| *e);
        let (exit_tx, exit_rx) = watch::channel(exited_already);
        let link = held.map(|(link, _)| link);
        let mut running = Running {
            generation,
            pid,
            pidfd: pidfd.clone(),
            held: link.clone().map(|l| (l, exit_rx)),
            shm: match &out_fd {
                Source::Held(ring, _) => Some(ring.clone()),
                Source::Fd(_) => None,
            },
            tree,
            master,
            io_actors: Vec::new(),
            writer: None,
            eof: Vec::new(),
            started: Instant::now(),
            reaped: false,
        };
        // From here on, `running` owns the process: an error below drops it, killing the tree.
        if let Some(link) = link {
            let (l, _) = Actor::spawn_linked(
                None,
                HolderLink,
                LinkArgs {
                    link,
                    session: myself.clone(),
                    generation,
                    exit: exit_tx,
                },
                myself.get_cell(),
            )
            .await
            .map_err(|e| SessionError::Spawn(format!("holder link: {e}")))?;
            running.io_actors.push(l.get_cell());
        }
        let framing = Framing::of(self.spec.mode);
        // A holder reports the exit itself; otherwise the primary reader watches the pidfd.
        let exit = match (&running.held, pidfd) {
            (None, Some(pidfd)) => Some((pidfd, myself.clone(), generation)),
            _ => None,
        };
        let (eof_tx, eof_rx) = watch::channel(false);
        // Only the adopted process continues the line its log ends inside.
        let carry = self
            .carry
            .take()
            .filter(|_| self.begin == Begin::Adopt && generation == 1)
            .unwrap_or(Some(Vec::new()));
        let reader = match out_fd {
            Source::Fd(fd) => Actor::spawn_linked(
                None,
                OutputReader,
                ReaderArgs {
                    fd,
                    sink: Sink {
                        ring: self.shared.ring.clone(),
                        shared: self.shared.clone(),
                        framing,
                        exit,
                        eof: eof_tx,
                        screen: self.screen.clone(),
                    },
                },
                myself.get_cell(),
            )
            .await
            .map(|(r, _)| r.get_cell()),
            Source::Held(ring, wake) => Actor::spawn_linked(
                None,
                HeldReader,
                HeldArgs {
                    ring,
                    wake,
                    shared: self.shared.clone(),
                    eof: eof_tx,
                    screen: self.screen.clone(),
                    lines: Lines::resume(framing, carry),
                },
                myself.get_cell(),
            )
            .await
            .map(|(r, _)| r.get_cell()),
        }
        .map_err(|e| SessionError::Spawn(format!("output reader: {e}")))?;
        running.io_actors.push(reader);
        running.eof.push(eof_rx);
        if let Some(err_fd) = err_fd {
            let (eof_tx, eof_rx) = watch::channel(false);
            let (r, _) = Actor::spawn_linked(
                None,
                OutputReader,
                ReaderArgs {
                    fd: err_fd,
                    sink: Sink {
                        ring: self.shared.ring.clone(),
                        shared: self.shared.clone(),
                        framing: Framing::Raw,
                        exit: None,
                        eof: eof_tx,
                        screen: None,
                    },
                },
                myself.get_cell(),
            )
            .await
            .map_err(|e| SessionError::Spawn(format!("stderr reader: {e}")))?;
            running.io_actors.push(r.get_cell());
            running.eof.push(eof_rx);
        }
        let (queue, writer) =
            InputWriter::start(in_fd, self.shared.input_lost.clone(), INPUT_QUEUE_BYTES);
        running.writer = Some(writer);
        *self.shared.writer.write() = Some(queue);
        let identity = match process::procfs::ProcessIdentity::of(pid) {
            Ok(identity) => Some(identity),
            Err(e) => {
                // Recovery would then find this process only by its environment marker.
                tracing::warn!(session = %id, pid, error = %e, "process identity not recorded");
                None
            }
        };
        {
            let mut s = self.shared.status.write();
            s.pid = Some(pid);
            s.holder_pid = running.held.as_ref().map(|(l, _)| l.holder);
            // An adopted process started long before this server: its real start time.
            s.started_at = identity
                .as_ref()
                .and_then(|i| i.started_at())
                .filter(|_| self.begin == Begin::Adopt && generation == 1)
                .or(Some(SystemTime::now()));
            s.identity = identity;
            s.interrupted = false;
        }
        self.running = Some(running);
        // A holder reaped it before we attached (a program that ends at once, or one that
        // ended while no server was attached): handled as if the exit arrived now.
        if exited_already.is_some()
            && let Err(e) = myself.send_message(SessionMsg::ProcessExited { generation })
        {
            tracing::warn!(session = %id, error = %e, "an exit the holder reported was not delivered");
        }
        tracing::info!(session = %id, pid, generation, "process spawned");
        self.shared.emit(EventKind::Spawned { pid });
        self.shared.set_state(SessionState::Running, None);
        Ok(())
    }

    /// The holder died under a running process: kill its tree (its processes reparented to
    /// this server, a subreaper, or to init), record the loss, apply the restart policy.
    #[tracing::instrument(name = "session.lost", skip_all, fields(session = %self.shared.id, name = %self.shared.name))]
    async fn lose_process(&mut self, myself: &ActorRef<SessionMsg>, why: String) {
        // invariant: the caller checked `running` is Some.
        let mut run = self.running.take().expect("a running process");
        *self.shared.writer.write() = None;
        drop(run.writer.take());
        if let Some((link, _)) = &run.held {
            link.forget();
        }
        let report = process::sweep::kill_all(&run.tree).await;
        tracing::error!(pid = run.pid, killed = report.killed, %why, "session lost its holder");
        // Its exit status went with the holder; the sweep made sure nothing runs.
        run.reaped = true;
        drop(run);
        // What the dead holder could not remove itself.
        if let Some(holders) = &self.holders {
            holders.forget(self.shared.id);
        }
        {
            let mut s = self.shared.status.write();
            s.pid = None;
            s.holder_pid = None;
            s.identity = None;
            s.last_exit = Some(ExitStatus::Signal(libc::SIGKILL));
        }
        self.shared
            .set_state(SessionState::Exited, Some(why.clone()));
        self.shared.emit(EventKind::Exited {
            status: ExitStatus::Signal(libc::SIGKILL),
        });
        self.settle_loss(myself, format!("lost: {why}"));
    }

    /// Leaves the running process to its holder: this server's readers, writer and connection
    /// go (the holder sees the hangup and spools until the next server attaches); no signal,
    /// no release, no state change — the registry still says Running, with its identity.
    fn detach(&mut self) {
        // invariant: the caller checked `running` holds a held process.
        let mut run = self.running.take().expect("a running process");
        *self.shared.writer.write() = None;
        if let Some((link, _)) = &run.held {
            link.forget();
        }
        run.reaped = true;
        drop(run);
        self.detached = true;
        tracing::info!(session = %self.shared.id, "detached: the process stays with its holder");
    }

    /// After a lost process: the restart policy decides, as after a failure.
    fn settle_loss(&mut self, myself: &ActorRef<SessionMsg>, why: String) {
        match self.spec.restart {
            RestartPolicy::Never => {
                self.shared.set_state(SessionState::Stopped, Some(why));
            }
            RestartPolicy::OnFailure | RestartPolicy::Always => self.schedule_restart(myself, why),
        }
    }

    /// Collects the exit of the current process (which has exited or is being killed), sweeps
    /// what is left of its tree (unless the caller just did), drains the output, and announces
    /// the exit.
    #[tracing::instrument(name = "session.exit", skip_all, fields(session = %self.shared.id, name = %self.shared.name))]
    async fn finish_process(&mut self, swept: bool) -> ExitStatus {
        // invariant: callers check `running` is Some.
        let mut run = self.running.take().expect("a running process");
        *self.shared.writer.write() = None;
        // Input to a process that is going away has nowhere to go.
        drop(run.writer.take());
        let status = match &mut run.held {
            Some((_, exit)) => {
                // The holder is the parent: it reaps and reports.
                let reported = tokio::time::timeout(KILL_WAIT, exit.wait_for(|e| e.is_some()))
                    .await
                    .ok()
                    .and_then(|r| r.ok().and_then(|e| *e));
                match reported {
                    Some(exit) => exit.status,
                    None => {
                        tracing::error!(
                            pid = run.pid,
                            "holder reported no exit; sweeping and releasing it"
                        );
                        process::sweep::kill_all(&run.tree).await;
                        ExitStatus::Signal(libc::SIGKILL)
                    }
                }
            }
            None => {
                if let Some(pidfd) = &run.pidfd
                    && tokio::time::timeout(KILL_WAIT, pidfd.exited())
                        .await
                        .is_err()
                {
                    tracing::error!(
                        pid = run.pid,
                        "main process still alive after kill; sweeping again"
                    );
                    process::sweep::kill_all(&run.tree).await;
                }
                let status = match process::try_reap(run.pid) {
                    Ok(Some(status)) => status,
                    Ok(None) => {
                        tracing::error!(pid = run.pid, "exited process not reapable yet");
                        ExitStatus::Signal(libc::SIGKILL)
                    }
                    Err(e) => {
                        tracing::error!(pid = run.pid, error = %e, "could not reap the main process");
                        ExitStatus::Signal(libc::SIGKILL)
                    }
                };
                reaper::release(run.pid);
                status
            }
        };
        run.reaped = true;
        // What is left of the tree goes the way of a stop (the kernel already hung up the
        // session when its leader exited).
        if !swept {
            let report = process::sweep::kill_all(&run.tree).await;
            if report.killed > 0 {
                tracing::info!(
                    pid = run.pid,
                    killed = report.killed,
                    "swept leftovers of the session's tree"
                );
            }
        }
        for eof in &mut run.eof {
            loop {
                let head = self.shared.ring.head();
                if tokio::time::timeout(DRAIN_TIMEOUT, eof.wait_for(|done| *done))
                    .await
                    .is_ok()
                {
                    break;
                }
                // A held terminal that is closed has its last bytes in the holder's ring (up to
                // its size): keep draining while they move. Only a terminal still held open by
                // a leftover process, or a drain that stopped moving, is given up on.
                let draining =
                    run.shm.as_ref().is_some_and(|r| r.closed()) && self.shared.ring.head() > head;
                if !draining {
                    tracing::warn!(
                        pid = run.pid,
                        "output not drained within {DRAIN_TIMEOUT:?}; something still holds the terminal"
                    );
                    break;
                }
            }
        }
        drop(run);
        {
            let mut s = self.shared.status.write();
            s.pid = None;
            s.holder_pid = None;
            s.identity = None;
            s.last_exit = Some(status);
        }
        tracing::info!(session = %self.shared.id, %status, "process exited");
        self.shared.set_state(SessionState::Exited, None);
        self.shared.emit(EventKind::Exited { status });
        status
    }

    /// The restart decision after an exit nobody asked for.
    fn after_exit(&mut self, myself: &ActorRef<SessionMsg>, status: ExitStatus) {
        let restart = match self.spec.restart {
            RestartPolicy::Never => false,
            RestartPolicy::OnFailure => !status.success(),
            RestartPolicy::Always => true,
        };
        if !restart {
            self.shared
                .set_state(SessionState::Stopped, Some(format!("exited ({status})")));
            return;
        }
        self.schedule_restart(myself, format!("exited ({status})"));
    }

    /// A restart attempt could not spawn: counts like a failed run.
    fn after_failed_start(&mut self, myself: &ActorRef<SessionMsg>, why: String) {
        self.schedule_restart(myself, format!("could not start: {why}"));
    }

    #[tracing::instrument(name = "session.restart", skip_all, fields(session = %self.shared.id, name = %self.shared.name))]
    fn schedule_restart(&mut self, myself: &ActorRef<SessionMsg>, why: String) {
        let now = Instant::now();
        if !self.window.record(now) {
            let i = self.spec.intensity;
            self.shared.set_state(
                SessionState::Failed,
                Some(format!(
                    "restart intensity exceeded ({} restarts in {:?}); last: {why}",
                    i.max_restarts, i.period
                )),
            );
            return;
        }
        let ran_for = self
            .running
            .as_ref()
            .map(|r| now - r.started)
            .or_else(|| {
                self.shared
                    .status
                    .read()
                    .started_at
                    .and_then(|t| t.elapsed().ok())
            })
            .unwrap_or_default();
        let delay = self.backoff.next_delay(&self.spec.backoff, ran_for);
        let restarts = {
            let mut s = self.shared.status.write();
            s.restarts += 1;
            s.restarts
        };
        self.shared.set_state(SessionState::Restarting, Some(why));
        self.shared.emit(EventKind::Restarting { delay, restarts });
        let generation = self.generation;
        let timer = myself.send_after(delay, move || SessionMsg::RestartDue { generation });
        if let Some((_, old)) = self.restart_timer.replace((generation, timer)) {
            old.abort();
        }
    }

    /// Stops the process (grace = Some) or kills it (None); cancels a pending restart. Ends
    /// Stopped.
    #[tracing::instrument(name = "session.stop", skip_all, fields(session = %self.shared.id, name = %self.shared.name, ?grace))]
    async fn stop(&mut self, grace: Option<Duration>) {
        if let Some((_, t)) = self.restart_timer.take() {
            t.abort();
        }
        if let Some(run) = &self.running {
            self.shared.set_state(SessionState::Stopping, None);
            match grace {
                Some(grace) => {
                    process::sweep::terminate(
                        &run.tree,
                        self.stop_signal,
                        grace,
                        run.pidfd.as_deref(),
                    )
                    .await;
                }
                None => {
                    process::sweep::kill_all(&run.tree).await;
                }
            }
            // terminate / kill_all just swept the whole tree.
            self.finish_process(true).await;
        }
        if !self.shared.state().is_final() || self.shared.state() == SessionState::Failed {
            let why = if self.shared.status.read().interrupted {
                "stopped by server shutdown"
            } else {
                "stopped"
            };
            self.shared
                .set_state(SessionState::Stopped, Some(why.into()));
        }
    }

    /// Applies a terminal size to the PTY and the screen.
    fn resize(&mut self, size: Size) {
        if self.shared.status.read().size == size {
            return;
        }
        if let Some(master) = self.running.as_ref().and_then(|r| r.master.as_ref())
            && let Err(e) = master.resize(size)
        {
            tracing::warn!(session = %self.shared.id, error = %e, "resize failed");
            return;
        }
        self.shared.status.write().size = size;
        if let Some(screen) = &self.screen
            && let Err(e) = screen.send_message(ScreenMsg::ResizeAt {
                // Stamped now: output after this offset was produced at the new size.
                at: self.shared.ring.head(),
                rows: size.rows,
                cols: size.cols,
            })
        {
            tracing::debug!(error = %e, "screen gone; resize not forwarded");
        }
    }
}
