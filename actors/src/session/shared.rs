//! The half of a session that callers read without messaging its actor: identity, the output
//! Ring, the current status, the input queue and the event channel. The Session actor is the only
//! writer of the status; `list`/`ps` read it here, so they never wait on a busy session.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::SystemTime;

use corral_runtime::Ring;
use parking_lot::{Mutex, RwLock};
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;
use uuid::Uuid;

use super::input::InputQueue;
use crate::event::{EventKind, SessionEvent, SessionState};
use crate::persist::journal::{Feed, Journal, Op, SessionRow};
use crate::process::ExitStatus;
use crate::process::procfs::ProcessIdentity;
use crate::spec::{Mode, Size};

/// Capacity of a session's event channel; a subscriber further behind is told how many events
/// it missed (never silently). Kept small because tokio's broadcast channel allocates every slot
/// up front (1024 slots cost 128 KiB per session; 64 cost 8 KiB), and events are rare next to
/// output: a lifecycle transition or an agent hook. The channel itself is created by the first
/// subscriber: a receiver only ever sees events sent after it subscribed, so a session nobody has
/// watched has nothing to keep, and its 8 KiB are not spent (most of an idle session's cost).
pub const EVENT_CAPACITY: usize = 64;

/// What `list` shows of a session.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionInfo {
    /// Session id.
    pub id: Uuid,
    /// Unique name.
    pub name: String,
    /// Program and arguments.
    pub argv: Vec<String>,
    /// PTY or pipes.
    pub mode: Mode,
    /// Lifecycle state.
    pub state: SessionState,
    /// The running process's pid (= pgid = sid).
    pub pid: Option<i32>,
    /// The pid of its holder, the process that keeps it alive without the server (PTY
    /// sessions of `corral serve`).
    #[serde(default)]
    pub holder_pid: Option<i32>,
    /// When the current process started (RFC 3339).
    #[serde(with = "crate::time::option", default)]
    pub started_at: Option<SystemTime>,
    /// Restarts by the restart policy so far (a restart someone asked for is not counted).
    pub restarts: u64,
    /// The last exit.
    pub last_exit: Option<ExitStatus>,
    /// Why the session is Failed/Stopped, when there is a reason to give.
    pub reason: Option<String>,
    /// Terminal size.
    pub size: Size,
    /// Output bytes produced so far (the Ring's head offset).
    pub output_offset: u64,
    /// Live subscriptions.
    pub viewers: usize,
    /// Lag events delivered to this session's subscribers.
    pub lag_events: u64,
    /// Times input found the queue full (the process was not reading). The gateway then holds
    /// the input and stops reading the connection until there is room: nothing is lost.
    pub input_rejected: u64,
    /// Input bytes that could not be delivered (the process had closed its input).
    pub input_lost: u64,
    /// An agent session's attention state (`starting`, `working`, `needs_permission`, `idle`,
    /// `exited`), driven by its hooks (see `agent::Attention`); null for other sessions.
    pub attention: Option<crate::attention::Attention>,
    /// What a session in `needs_permission` asks for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub permission: Option<crate::attention::PermissionAsk>,
    /// Questions asked while `permission` was open (an agent running tools in parallel), in the
    /// order they came: each is shown in `permission` when the ones before it are settled.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub permission_queue: Vec<crate::attention::PermissionAsk>,
    /// The agent's own session id (Claude Code's), rebound on every SessionStart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_session_id: Option<String>,
    /// An agent that has not worked in its current conversation yet: its `idle` is "ready for
    /// a first prompt", not "waiting after a turn" (the page counts only the latter as
    /// waiting for its user).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub agent_fresh: bool,
    /// An agent that has not started (`attention` `starting`: no hook yet) and sits on a screen
    /// that asks something: that question (Claude Code's folder trust). It needs a key at its
    /// terminal (`corral send NAME '\r'` is Enter, or `attach`) before it does anything.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_asks_at_start: Option<String>,
    /// Set while the session's output or events cannot be persisted (disk full, read-only...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub persist_error: Option<String>,
}

/// The mutable part of [`SessionInfo`], written by the Session actor.
#[derive(Debug, Clone)]
pub(crate) struct Status {
    pub state: SessionState,
    pub pid: Option<i32>,
    pub holder_pid: Option<i32>,
    pub started_at: Option<SystemTime>,
    pub restarts: u64,
    pub last_exit: Option<ExitStatus>,
    pub reason: Option<String>,
    pub size: Size,
    pub attention: Option<crate::attention::Attention>,
    pub permission: Option<crate::attention::PermissionAsk>,
    /// Open questions behind `permission` (at most `questions::MAX_QUESTIONS` in all).
    pub queued: std::collections::VecDeque<crate::attention::PermissionAsk>,
    pub agent_session_id: Option<String>,
    /// The file the agent keeps that session's conversation in (its SessionStart hook says
    /// where), if known: a restart resumes the conversation only when it exists.
    pub agent_transcript: Option<String>,
    /// A prompt of that agent session was submitted (its UserPromptSubmit hook): it has a
    /// conversation to resume.
    pub agent_prompted: bool,
    /// Who the running main process is (recorded so recovery can find it after a crash).
    pub identity: Option<ProcessIdentity>,
    /// Stopped by a server shutdown (started again at boot per its policy).
    pub interrupted: bool,
    /// Being removed (`Sessions::remove`): recorded with every event from then on.
    pub removing: bool,
    /// A graceful stop's grace and start (ms since the epoch), while it runs (see
    /// `SessionRow::stop_grace`).
    pub stop_grace: Option<(u64, u64)>,
    /// When it last became Stopped or Failed (retention of ended sessions).
    pub ended_at: Option<SystemTime>,
    /// The last question denied through corral this turn: (its id, tool, input), to tell if
    /// the tool ran anyway (`agent::record_hook`).
    pub denied: Option<(String, String, serde_json::Value)>,
    /// An adopted agent's journal ended with a `prompted` no event followed (the server died
    /// within `agent::PROMPT_SETTLE` of a prompt): its check is due again (the session actor
    /// arms it when it starts).
    pub prompt_pending: bool,
    /// When the attention state last changed (`time::mono_ms`; 0: never).
    pub attention_at: u64,
    /// The agent has not worked in its current conversation yet (cleared when it works, set
    /// again by a SessionStart that begins a conversation): `idle` then means ready for a
    /// first prompt, not waiting after a turn.
    pub fresh: bool,
    /// What the screen of an agent that has said nothing yet asks (`AgentEvent::AsksAtStart`);
    /// gone once its attention changes.
    pub asks_at_start: Option<String>,
    /// The question closed last: its id, how it left, and when (`time::mono_ms`), so that an
    /// answer that came too late is told what became of it.
    pub closed: Option<(String, crate::attention::Left, u64)>,
}

impl Status {
    /// The agent's attention is `next` (from now, if it was another).
    pub fn set_attention(&mut self, next: crate::attention::Attention) {
        if self.attention != Some(next) {
            self.attention_at = crate::time::mono_ms();
            self.asks_at_start = None;
        }
        if next == crate::attention::Attention::Working {
            self.fresh = false;
        }
        self.attention = Some(next);
    }
}

impl Status {
    /// The session has no process any more: no pid, holder or identity is shown for it (a
    /// reused pid would be taken for the session's).
    pub(crate) fn no_process(&mut self) {
        self.pid = None;
        self.holder_pid = None;
        self.identity = None;
    }

    /// A session's status before its first start.
    pub(crate) fn new(size: Size, attention: Option<crate::attention::Attention>) -> Status {
        Status {
            state: SessionState::Starting,
            pid: None,
            holder_pid: None,
            started_at: None,
            restarts: 0,
            last_exit: None,
            reason: None,
            size,
            attention,
            permission: None,
            queued: Default::default(),
            agent_session_id: None,
            agent_transcript: None,
            agent_prompted: false,
            identity: None,
            interrupted: false,
            removing: false,
            stop_grace: None,
            ended_at: None,
            denied: None,
            prompt_pending: false,
            attention_at: 0,
            fresh: true,
            asks_at_start: None,
            closed: None,
        }
    }
}

/// Shared between the Session actor, its I/O actors and every handle.
pub struct SessionShared {
    /// Session id.
    pub id: Uuid,
    /// Unique name.
    pub name: String,
    /// Program and arguments.
    pub argv: Vec<String>,
    /// PTY or pipes.
    pub mode: Mode,
    /// The terminal size its output starts at (its spec's; later sizes are `resized` events).
    pub first_size: crate::spec::Size,
    /// Output log.
    pub ring: Ring,
    /// Current status.
    pub(crate) status: RwLock<Status>,
    /// The current process's input queue (none while no process runs).
    pub(crate) writer: RwLock<Option<InputQueue>>,
    /// Per-session events; created by the first subscriber (see [`EVENT_CAPACITY`]).
    events: std::sync::OnceLock<broadcast::Sender<SessionEvent>>,
    /// The screen actor (PTY mode), asked directly for snapshots.
    pub(crate) screen: RwLock<Option<ractor::ActorRef<crate::screen::ScreenMsg>>>,
    /// What each of the running process's actors is (for `corral tree`): the output reader(s),
    /// the holder link.
    pub(crate) roles: RwLock<Vec<(ractor::ActorId, &'static str)>>,
    /// Events of every session (the manager's stream), if any.
    global: Option<broadcast::Sender<SessionEvent>>,
    /// Next sequence number; the lock also orders sends so seq order = delivery order.
    seq: Mutex<u64>,
    /// Live subscriptions.
    pub(crate) viewers: AtomicUsize,
    /// Their cursors, which the session's output waits for (see [`super::pace`]).
    pub(crate) pacers: super::pace::Pacers,
    /// Lag events delivered.
    pub(crate) lag_events: AtomicU64,
    /// Input refused (queue full).
    pub(crate) input_rejected: AtomicU64,
    /// Input bytes lost (process closed its input); counted by the input writer.
    pub(crate) input_lost: Arc<AtomicU64>,
    /// The viewer that sent input last: when it changes, the session actor is told
    /// (`ViewerActive`), and its resize policy decides whose size the session takes.
    pub(crate) last_input_viewer: AtomicU64,
    /// Messages that may change the terminal's size (a resize, a typist's change, a viewer
    /// gone) sent to the session actor and not handled yet. A snapshot asked meanwhile goes
    /// through the actor, after them: it reaches the screen after the size it would
    /// otherwise miss (a page that sizes the session and then subscribes got its first
    /// screen at the old size when the actor was busy). See `SessionHandle::snapshot_of`.
    pub(crate) sizing: AtomicU64,
    /// The viewer whose size is in effect (0: none): the one whose terminal's reports reach
    /// the program ([`crate::reports`]); set by the session actor's resize policy.
    pub(crate) answerer: AtomicU64,
    /// The persister's journal, when the tree persists.
    journal: Option<Journal>,
    /// What the persister holds of this session (its Ring, tap and persistence error).
    pub(crate) feed: Arc<Feed>,
    /// When output last arrived ([`crate::time::mono_ms`]; 0: never).
    last_output: AtomicU64,
    /// When a prompt (a paste and its Enter) was last queued ([`crate::time::mono_ms`]; 0:
    /// never): text in an agent's input box within [`crate::session::input::PASTE_ENTER_MAX`]
    /// of it is most likely that prompt being entered, not a draft.
    pub(crate) prompted_at: AtomicU64,
    /// Prompts queued so far (see [`Self::prompts`]).
    pub(crate) prompts: AtomicU64,
    /// When the last event was emitted ([`crate::time::mono_ms`]; 0: none yet).
    last_event: AtomicU64,
}

impl SessionShared {
    pub(crate) fn new(
        id: Uuid,
        name: String,
        spec: &crate::spec::SessionSpec,
        ring: Ring,
        global: Option<broadcast::Sender<SessionEvent>>,
        journal: Option<Journal>,
    ) -> Arc<Self> {
        let feed = Feed::new(id, ring.clone(), journal.as_ref());
        Arc::new(Self {
            id,
            name,
            argv: spec.argv.clone(),
            mode: spec.mode,
            first_size: spec.size,
            ring,
            status: RwLock::new(Status::new(
                spec.size,
                spec.agent
                    .as_ref()
                    .map(|_| crate::attention::Attention::Starting),
            )),
            writer: RwLock::new(None),
            screen: RwLock::new(None),
            roles: RwLock::new(Vec::new()),
            events: std::sync::OnceLock::new(),
            global,
            seq: Mutex::new(0),
            viewers: AtomicUsize::new(0),
            pacers: super::pace::Pacers::default(),
            lag_events: AtomicU64::new(0),
            input_rejected: AtomicU64::new(0),
            input_lost: Arc::new(AtomicU64::new(0)),
            last_input_viewer: AtomicU64::new(0),
            sizing: AtomicU64::new(0),
            answerer: AtomicU64::new(0),
            journal,
            feed,
            last_output: AtomicU64::new(0),
            last_event: AtomicU64::new(0),
            prompted_at: AtomicU64::new(0),
            prompts: AtomicU64::new(0),
        })
    }

    /// Continues a restored session's record: its status, and its event numbering after
    /// `last_seq` (so the journal's (session, seq) stay unique across server restarts).
    pub(crate) fn restore(&self, row: &SessionRow, ended_ms: Option<u64>) {
        let mut s = self.status.write();
        s.state = row.state;
        s.reason = row.reason.clone();
        s.restarts = row.restarts;
        s.last_exit = row.last_exit;
        s.agent_session_id = row.agent_session_id.clone();
        s.agent_transcript = row.agent_transcript.clone();
        s.agent_prompted = row.agent_prompted;
        // A conversation it was prompted in is not one to begin (a stopped agent's events are
        // not replayed: it came back `agent_fresh` after its turns; an adopted one's replay
        // refines this).
        s.fresh = !row.agent_prompted;
        // Kept only for a process that outlived the server under its holder (recovery clears
        // it otherwise): the adoption checks the holder's process against it.
        s.identity = row.process.clone();
        s.pid = row.process.as_ref().map(|p| p.pid);
        if row.state.is_final() {
            let ms = ended_ms.unwrap_or_else(crate::persist::store::now_ms);
            s.ended_at = Some(std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms));
        }
        *self.seq.lock() = row.last_seq;
    }

    /// The registry row as of now.
    pub(crate) fn row(&self, last_seq: u64) -> SessionRow {
        let s = self.status.read();
        SessionRow {
            state: s.state,
            reason: s.reason.clone(),
            process: s.identity.clone(),
            restarts: s.restarts,
            last_exit: s.last_exit,
            agent_session_id: s.agent_session_id.clone(),
            agent_transcript: s.agent_transcript.clone(),
            agent_prompted: s.agent_prompted,
            interrupted: s.interrupted,
            removing: s.removing,
            stop_grace: s.stop_grace,
            last_seq,
        }
    }

    /// The journal, when the tree persists.
    pub fn journal(&self) -> Option<&Journal> {
        self.journal.as_ref()
    }

    /// New output was appended to the Ring: tell the persister.
    pub(crate) fn output_appended(&self) {
        self.feed.output_appended();
    }

    /// Output arrived just now: stamped once per inline burst or bulk slice by the reader (not
    /// per read: no clock read on the hot path), so [`quiet_ms`](Self::quiet_ms) is exact to a
    /// burst (≤ 20 ms).
    pub(crate) fn mark_output(&self) {
        self.last_output
            .store(crate::time::mono_ms(), Ordering::Relaxed);
    }

    /// Milliseconds (on [`crate::time::mono_ms`]'s clock) since output last arrived; None if
    /// none ever did.
    pub fn quiet_ms(&self) -> Option<u64> {
        match self.last_output.load(Ordering::Relaxed) {
            0 => None,
            at => Some(crate::time::mono_ms().saturating_sub(at)),
        }
    }

    /// The terminal's size now.
    pub fn size(&self) -> crate::spec::Size {
        self.status.read().size
    }

    /// Milliseconds since the agent's attention state last changed; None if it never did.
    pub fn attention_ms(&self) -> Option<u64> {
        match self.status.read().attention_at {
            0 => None,
            at => Some(crate::time::mono_ms().saturating_sub(at)),
        }
    }

    /// Milliseconds since the last event was emitted; None if none was.
    pub fn eventless_ms(&self) -> Option<u64> {
        match self.last_event.load(Ordering::Relaxed) {
            0 => None,
            at => Some(crate::time::mono_ms().saturating_sub(at)),
        }
    }

    /// When output last arrived (wall clock, to the millisecond; the same answer until more
    /// arrives); None if none ever did.
    pub fn last_output_at(&self) -> Option<std::time::SystemTime> {
        match self.last_output.load(Ordering::Relaxed) {
            0 => None,
            at => Some(crate::time::wall_of_mono(at)),
        }
    }

    /// Why this session's output cannot be persisted, if it cannot.
    pub(crate) fn persist_error(&self) -> Option<String> {
        self.feed.persist_error()
    }

    /// How many prompts were queued for the program (`SessionHandle::paste`: from any
    /// client), counted as each is queued, before anything of it is recorded (the agent's
    /// `working`): a reader that sees the agent work on a prompt sees it counted.
    pub fn prompts(&self) -> u64 {
        self.prompts.load(Ordering::Relaxed)
    }

    /// A prompt was queued (see [`Self::prompts`]).
    pub(crate) fn count_prompt(&self) {
        self.prompts.fetch_add(1, Ordering::Relaxed);
    }

    /// The sequence number of the last event published.
    pub fn last_seq(&self) -> u64 {
        *self.seq.lock()
    }

    /// Publishes an event stamped with the next sequence number and the current output offset.
    pub fn emit(&self, kind: EventKind) -> SessionEvent {
        self.emit_at(kind, SystemTime::now())
    }

    /// [`Self::emit`] of something that happened at `time` (an exit a holder saw while no
    /// server was there: the next one records it as it happened, not when it heard of it).
    pub(crate) fn emit_at(&self, kind: EventKind, time: SystemTime) -> SessionEvent {
        let mut seq = self.seq.lock();
        *seq += 1;
        self.last_event
            .store(crate::time::mono_ms(), Ordering::Relaxed);
        let event = SessionEvent {
            session: self.id,
            seq: *seq,
            time,
            offset: self.ring.head(),
            kind,
        };
        if let Some(j) = &self.journal {
            j.send(Op::Event(Box::new((self.row(*seq), event.clone()))));
        }
        // No receiver (or no channel yet) is not an error: nobody is watching this session.
        if let Some(tx) = self.events.get()
            && tx.send(event.clone()).is_err()
        {
            tracing::trace!(session = %self.id, "event with no subscriber");
        }
        if let Some(g) = &self.global
            && g.send(event.clone()).is_err()
        {
            tracing::trace!(session = %self.id, "event with no global subscriber");
        }
        event
    }

    /// A receiver of this session's future events.
    pub fn events(&self) -> broadcast::Receiver<SessionEvent> {
        self.events_after().0
    }

    /// A receiver of this session's future events and the last sequence number before them:
    /// every event up to it was sent to the journal before the receiver existed, every later
    /// one reaches the receiver. Under the emit lock, so none falls between the two.
    pub fn events_after(&self) -> (broadcast::Receiver<SessionEvent>, u64) {
        let seq = self.seq.lock();
        let rx = self
            .events
            .get_or_init(|| broadcast::channel(EVENT_CAPACITY).0)
            .subscribe();
        (rx, *seq)
    }

    /// When the session last ended (Stopped or Failed), if it is ended.
    pub fn ended_at(&self) -> Option<SystemTime> {
        self.status.read().ended_at
    }

    /// The current state.
    pub fn state(&self) -> SessionState {
        self.status.read().state
    }

    /// A snapshot for `list`.
    pub fn info(&self) -> SessionInfo {
        let s = self.status.read().clone();
        SessionInfo {
            id: self.id,
            name: self.name.clone(),
            argv: self.argv.clone(),
            mode: self.mode,
            state: s.state,
            pid: s.pid,
            holder_pid: s.holder_pid,
            started_at: s.started_at,
            restarts: s.restarts,
            last_exit: s.last_exit,
            reason: s.reason,
            size: s.size,
            output_offset: self.ring.head(),
            viewers: self.viewers.load(Ordering::Relaxed),
            lag_events: self.lag_events.load(Ordering::Relaxed),
            input_rejected: self.input_rejected.load(Ordering::Relaxed),
            input_lost: self.input_lost.load(Ordering::Relaxed),
            // An agent whose process is gone is exited, whatever its last hook said; one whose
            // process is to start again (a restart's delay after a crash) is starting (it said
            // `exited`, and `wait --for idle` gave up on an agent its policy brings back).
            attention: s.attention.map(|a| match s.state {
                SessionState::Starting => a,
                SessionState::Restarting => crate::attention::Attention::Starting,
                _ if s.pid.is_none() => crate::attention::Attention::Exited,
                _ => a,
            }),
            permission: s.permission,
            permission_queue: s.queued.into_iter().collect(),
            agent_session_id: s.agent_session_id,
            agent_fresh: s.attention.is_some() && s.fresh,
            agent_asks_at_start: s.asks_at_start.filter(|_| s.pid.is_some()),
            persist_error: self
                .persist_error()
                .or_else(|| self.journal.as_ref().and_then(|j| j.stats().error())),
        }
    }

    /// Sets the state (and reason) and publishes the change.
    pub(crate) fn set_state(&self, state: SessionState, reason: Option<String>) {
        self.set_state_at(state, reason, SystemTime::now());
    }

    /// [`Self::set_state`] as of `at` (see [`Self::emit_at`]).
    pub(crate) fn set_state_at(&self, state: SessionState, reason: Option<String>, at: SystemTime) {
        {
            let mut s = self.status.write();
            if s.state == state && reason.is_none() {
                return;
            }
            s.state = state;
            s.ended_at = state.is_final().then_some(at);
            if reason.is_some() || !state.is_final() {
                s.reason = reason.clone();
            }
        }
        tracing::info!(session = %self.id, name = %self.name, ?state, reason = reason.as_deref().unwrap_or(""), "session state");
        self.emit_at(EventKind::State { state, reason }, at);
    }
}
