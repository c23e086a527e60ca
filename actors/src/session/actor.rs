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
use std::sync::Arc;
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

mod finish;
mod look;
mod size;
mod start;

/// How long the output may take to drain after the process tree is gone.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);
/// How long to wait for a SIGKILLed main process to be reported dead.
const KILL_WAIT: Duration = Duration::from_secs(5);
/// Least output a holder keeps unlogged (while no server is attached, the program can write
/// this much before it blocks on its terminal). Shared memory, touched only as it is used.
const HOLDER_RING: usize = 8 << 20;
/// How long a detaching session waits for its program to take the input queued for it (a
/// paste's Enter waits up to `PASTE_ENTER_MAX` for the program's answer).
const DRAIN_INPUT: Duration = Duration::from_secs(3);
/// Longest wait for the screen's text when looking at it after a key (a flood's
/// catch-up); a look that times out counts as one that saw nothing.
const LOOK_TIMEOUT: Duration = Duration::from_secs(1);
/// Default bound on queued input bytes per session.
pub const INPUT_QUEUE_BYTES: usize = 1 << 20;

/// The typist of a session taken back from a previous server: nobody here typed yet, and its
/// terminal keeps the size it was left at until someone does (resizes wait, see `Resize`), or
/// until [`KEPT_FOR`] has passed.
const KEPT: ViewerId = ViewerId::MAX;
/// How long a session taken back keeps its size against resizes: its viewers reconnect within
/// it (the page retries within 6.25 s, `attach` sooner), each asking for its own size, and the
/// last one in would take it, however idle. Past it, the latest resize wins again, and a lone
/// viewer's size is taken at once (`SessionMsg::KeptOver`).
const KEPT_FOR: Duration = Duration::from_secs(10);

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
    /// An adopted terminal's sizes over the output its Ring was given back (offset, size; the
    /// first at the Ring's start): its screen parses that output at them.
    pub sizes: Vec<(u64, Size)>,
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
                reaper::disown_killed(self.pid);
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
    /// Pending check of the last prompt (`SessionMsg::PromptDue`).
    prompt_timer: Option<RestartTimer>,
    /// Pending look at the screen after a key (`SessionMsg::LookDue`).
    look_timer: Option<RestartTimer>,
    /// Pending look at a starting agent's screen (`SessionMsg::StartLookDue`).
    start_timer: Option<RestartTimer>,
    /// Pending end of a taken-back session's kept size (`SessionMsg::KeptOver`).
    kept_timer: Option<RestartTimer>,
    /// Screen (PTY mode).
    screen: Option<ActorRef<ScreenMsg>>,
    /// Private TMPDIR (removed on drop).
    tmp: PrivateTmp,
    /// Known viewer sizes, bounded.
    viewers: HashMap<ViewerId, (Size, u64)>,
    /// Resizes seen (orders `viewers` by their latest).
    resizes: u64,
    /// The viewer whose size the session has because it typed last (0: none, the latest resize
    /// wins; [`KEPT`]: the size the last server left, until someone types).
    typist: ViewerId,
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
    /// See [`SessionArgs::carry`]; the adopted process's reader takes it.
    carry: Option<Vec<u8>>,
    /// See [`SessionArgs::sizes`]; taken when the process is adopted.
    sizes: Vec<(u64, Size)>,
}

/// Bound on remembered viewer sizes per session.
const MAX_VIEWERS: usize = 1024;

/// The reasons a session is Stopping with, by request: recorded, so that a server that dies
/// mid-way leaves the request to the next one (`recovery` finishes it).
pub const STOP_REQUESTED: &str = "stop requested";
/// See [`STOP_REQUESTED`].
pub const KILL_REQUESTED: &str = "kill requested";
/// See [`STOP_REQUESTED`].
pub const RESTART_REQUESTED: &str = "restart requested";

impl Drop for SessionActorState {
    fn drop(&mut self) {
        if let Some((_, t)) = &self.restart_timer {
            t.abort();
        }
        if let Some(t) = &self.prompt_timer {
            t.abort();
        }
        if let Some(t) = &self.look_timer {
            t.abort();
        }
        if let Some(t) = &self.start_timer {
            t.abort();
        }
        if let Some(t) = &self.kept_timer {
            t.abort();
        }
        if let Some(s) = &self.screen {
            s.kill();
        }
        if !self.shared.state().is_final() && !self.detached {
            self.shared.status.write().no_process();
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
        // `Sessions::check_spec` refused a spec that fails these before the session was made;
        // an embedding app that starts the actor itself gets the same errors here.
        if spec.argv.is_empty() {
            return Err(SessionError::from(crate::spec::SpecError::EmptyArgv).into());
        }
        spec.check().map_err(SessionError::from)?;
        Profile::parse(spec.agent.as_deref()).map_err(SessionError::from)?;
        let stop_signal = spec.stop_signal().map_err(SessionError::from)?;
        let (root, id) = (args.tmp_root.clone(), args.shared.id);
        // A blocking mkdir (creating an inode can take a third of a millisecond): off the
        // runtime's workers.
        let tmp = crate::env::TMP_WORK
            .run(move || PrivateTmp::create(&root, id))
            .await
            .map_err(|e| SessionError::Spawn(format!("private TMPDIR: {e}")))?
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
            prompt_timer: None,
            look_timer: None,
            start_timer: None,
            kept_timer: None,
            screen,
            tmp,
            viewers: HashMap::new(),
            resizes: 0,
            typist: 0,
            stop_signal,
            started: args.started,
            begin: args.begin,
            holders: args.holders,
            detached: false,
            carry: args.carry,
            sizes: args.sizes,
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
                // Its terminal keeps the size the last server left it at (its typist's) until
                // someone types: the viewers reconnecting after an upgrade each asked for their
                // own, and the last one in took it, however idle.
                if st.running.is_some() {
                    st.typist = KEPT;
                    st.kept_timer = Some(myself.send_after(KEPT_FOR, || SessionMsg::KeptOver));
                }
                // A prompt that had no event after it when the last server died: checked
                // again a PROMPT_SETTLE from now (else `working` for good, and `wait` hung).
                let pending = std::mem::take(&mut st.shared.status.write().prompt_pending);
                if pending {
                    let seq = st.shared.last_seq();
                    let timer = myself.send_after(crate::agent::PROMPT_SETTLE, move || {
                        SessionMsg::PromptDue { seq }
                    });
                    st.prompt_timer = Some(timer);
                }
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
        // A detached session's process belongs to its holder and the next server. One that
        // already ended has nothing to stop and keeps its state (Failed stays Failed).
        if !st.detached && !st.shared.state().is_final() {
            st.stop(Some(st.spec.grace)).await;
        }
        // The session's TMPDIR goes with it, removed on a blocking thread (a program may have
        // left many files); a detached session keeps it (see `detach`).
        if let Some(path) = st.tmp.take()
            && let Err(e) = crate::env::TMP_WORK
                .run(move || crate::env::PrivateTmp::remove(&path))
                .await
        {
            tracing::warn!(session = %st.shared.id, error = %e, "TMPDIR removal did not finish");
        }
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<SessionMsg>,
        msg: SessionMsg,
        st: &mut SessionActorState,
    ) -> Result<(), ActorProcessingErr> {
        // Counted by the handle when sent; handled once the size it may change went to the
        // screen (`st.resize` forwards it before this returns).
        let sizing = matches!(
            msg,
            SessionMsg::Resize { .. } | SessionMsg::ViewerActive(_) | SessionMsg::ViewerLeft(_)
        );
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
                let ended = st.shared.state().is_final();
                if shutdown && !ended {
                    st.shared.status.write().interrupted = true;
                }
                // A server leaving does not touch a session that already ended: a Failed one
                // stays Failed (with its reason). A user's stop of a Failed one makes it Stopped.
                if !(shutdown && ended) {
                    st.stop(Some(grace)).await;
                }
                answer(reply, st.shared.info());
            }
            SessionMsg::Detach(reply) => {
                let kept = st.running.as_ref().is_some_and(|r| r.held.is_some());
                if kept {
                    st.detach().await;
                } else if !st.shared.state().is_final() {
                    st.shared.status.write().interrupted = true;
                    st.stop(Some(st.spec.grace)).await;
                }
                // (A session that already ended stays as it is: Failed stays Failed.)
                answer(reply, kept);
            }
            SessionMsg::Kill(reply) => {
                st.stop(None).await;
                answer(reply, st.shared.info());
            }
            SessionMsg::Restart(reply) => {
                st.halt(Some(st.spec.grace), RESTART_REQUESTED).await;
                st.shared
                    .set_state(SessionState::Restarting, Some(RESTART_REQUESTED.into()));
                // Asked for by a user: a fresh start, its crash-loop count too (a Failed session
                // restarted by hand would otherwise fail again at its first crash).
                st.backoff = BackoffState::default();
                st.window = RestartWindow::new(st.spec.intensity);
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
            SessionMsg::Resize { viewer, size } => st.viewer_resized(viewer, size),
            SessionMsg::Prompted => {
                if let Some(seq) = crate::agent::prompted(&st.shared) {
                    let timer = myself.send_after(crate::agent::PROMPT_SETTLE, move || {
                        SessionMsg::PromptDue { seq }
                    });
                    if let Some(old) = st.prompt_timer.replace(timer) {
                        old.abort();
                    }
                }
            }
            SessionMsg::PromptDue { seq } => {
                st.prompt_timer = None;
                crate::agent::prompt_settled(&st.shared, seq);
            }
            SessionMsg::KeyTyped => st.look_after_key(&myself, 0),
            SessionMsg::LookDue { check } => {
                st.look_timer = None;
                // Claude Code fires no hook when a turn is interrupted or its dialog answered:
                // the screen says it.
                let text = match &st.screen {
                    Some(screen) => crate::screen::text_of(screen, LOOK_TIMEOUT).await,
                    None => None,
                };
                let settled = match text {
                    Some(text) => crate::agent::screen_settled(&st.shared, &text),
                    None => {
                        tracing::debug!(session = %st.shared.id, "no screen to look at after a key");
                        false
                    }
                };
                if !settled {
                    st.look_after_key(&myself, check + 1);
                }
            }
            SessionMsg::StartLookDue => {
                st.start_timer = None;
                // Claude Code runs no hook before its folder is trusted: a start screen that
                // waits for a key is seen only on the screen, once the output went still.
                let quiet = st.shared.quiet_ms().unwrap_or(0);
                let still = crate::agent::STARTING_QUIET.as_millis() as u64;
                let again = if !st.starting_agent() {
                    None
                } else if quiet < still {
                    Some(std::time::Duration::from_millis(still - quiet))
                } else {
                    let text = match &st.screen {
                        Some(screen) => crate::screen::text_of(screen, LOOK_TIMEOUT).await,
                        None => None,
                    };
                    text.filter(|t| crate::agent::start_look(&st.shared, t))
                        .map(|_| crate::agent::STARTING_QUIET)
                };
                if let Some(after) = again {
                    st.look_at_start(&myself, after);
                }
            }
            SessionMsg::KeptOver => {
                st.kept_timer = None;
                st.kept_over();
            }
            SessionMsg::ViewerActive(viewer) => st.viewer_typed(viewer),
            SessionMsg::ViewerLeft(viewer) => st.viewer_left(viewer),
            SessionMsg::Screen(question) => match &st.screen {
                Some(screen) => {
                    if let Err(e) = screen.send_message(question) {
                        // Its reply port dropped with it: the handle asks the screen directly.
                        tracing::debug!(error = %e, "screen gone; question not forwarded");
                    }
                }
                None => tracing::debug!("no screen; question dropped (its asker is told)"),
            },
        }
        if sizing {
            st.shared
                .sizing
                .fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
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
    /// Leaves the running process to its holder: this server's readers, writer and connection
    /// go (the holder sees the hangup and spools until the next server attaches); no signal,
    /// no release, no state change — the registry still says Running, with its identity.
    async fn detach(&mut self) {
        // invariant: the caller checked `running` holds a held process.
        let mut run = self.running.take().expect("a running process");
        // The input queued is written first (a paste's Enter included, which waits up to
        // PASTE_ENTER_MAX): the next server starts with an empty queue, and a prompt sent
        // just before an upgrade would otherwise stay typed but never entered.
        *self.shared.writer.write() = None;
        if let Some(writer) = run.writer.take() {
            writer.finish(DRAIN_INPUT).await;
        }
        if let Some((link, _)) = &run.held {
            link.forget();
        }
        run.reaped = true;
        drop(run);
        self.detached = true;
        // Its TMPDIR stays with the process: the next server adopts both.
        self.tmp.keep();
        tracing::info!(session = %self.shared.id, "detached: the process stays with its holder");
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
        let why = if grace.is_some() {
            STOP_REQUESTED
        } else {
            KILL_REQUESTED
        };
        self.halt(grace, why).await;
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

    /// Ends the process (grace = Some) or kills it (None) and cancels a pending restart,
    /// leaving the state to the caller (a restart by request goes on to start another: its
    /// followers never see the session stopped).
    async fn halt(&mut self, grace: Option<Duration>, why: &str) {
        if let Some((_, t)) = self.restart_timer.take() {
            t.abort();
        }
        if grace.is_some() && self.running.is_some() {
            crate::agent::until_written(&self.shared).await;
        }
        if let Some(run) = &self.running {
            // What was asked is recorded with the state: a server that dies before it is done
            // leaves it to the next one (see `recovery`), with what is left of its grace.
            self.shared.status.write().stop_grace =
                grace.map(|g| (g.as_millis() as u64, crate::persist::store::now_ms()));
            self.shared
                .set_state(SessionState::Stopping, Some(why.to_string()));
            if let Some((link, _)) = &run.held {
                // A stopped holder would neither reap nor report the exit the stop waits for.
                link.resume();
            }
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
            self.shared.status.write().stop_grace = None;
        }
    }
}
