//! SessionHandle: one session's typed API (input, subscriptions, screen, control calls), what
//! [`crate::Sessions`] hands out per session. It talks to the session's actor and reads its
//! shared half; the registry of all sessions stays in [`crate::manager`].

use std::sync::Arc;
use std::time::Duration;

use corral_runtime::SendError;
use ractor::rpc::CallResult;
use ractor::{ActorRef, RpcReplyPort};
use tokio::sync::broadcast;
use uuid::Uuid;

use crate::error::SessionError;
use crate::event::SessionEvent;
use crate::screen::{ScreenMsg, Snapshot};
use crate::session::{SessionInfo, SessionMsg, SessionShared, ViewerId};
use crate::spec::Size;
use crate::subscription::Subscription;

/// A handle to one session.
#[derive(Clone)]
pub struct SessionHandle {
    /// Shared half.
    pub(crate) shared: Arc<SessionShared>,
    /// The actor.
    pub(crate) actor: ActorRef<SessionMsg>,
}

impl std::fmt::Debug for SessionHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionHandle")
            .field("id", &self.id())
            .field("name", &self.name())
            .finish_non_exhaustive()
    }
}

/// The most past events a resumed subscription replays (`subscribe_after`): the newest ones;
/// the protocol's `events` call pages through any others.
pub const MAX_REPLAY: usize = 1000;

/// The most bytes (as JSON) of past events a resumed subscription holds to replay: the newest
/// that fit (events of 256 KiB — a conversation's text, a tool's output in a hook — would
/// otherwise keep up to 1000 of them in memory for one viewer).
pub const MAX_REPLAY_BYTES: usize = 4 << 20;

/// Longest a control call waits for a session (stops wait their grace on top).
pub(crate) const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a snapshot waits for the session actor to pass on a size change before it asks
/// the screen directly ([`SessionHandle::snapshot_of`]).
const SIZING_WAIT: Duration = Duration::from_secs(1);

impl SessionHandle {
    /// Session id.
    pub fn id(&self) -> Uuid {
        self.shared.id
    }

    /// Session name.
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// Current status.
    pub fn info(&self) -> SessionInfo {
        self.shared.info()
    }

    /// The session actor (for linking, introspection, or tests that kill it).
    pub fn actor(&self) -> &ActorRef<SessionMsg> {
        &self.actor
    }

    /// The shared half (Ring, events).
    pub fn shared(&self) -> &Arc<SessionShared> {
        &self.shared
    }

    /// Queues input for the process. Never waits: a full queue is [`SessionError::InputFull`].
    /// `viewer` (non-zero) marks who typed, for the resize policy.
    ///
    /// A frame of terminal reports only (a viewer's terminal answering the program's query)
    /// from a viewer other than the one whose size is in effect is dropped: every viewer's
    /// terminal answers, and the program would read the extra answers as typed keys
    /// ([`crate::reports`]).
    pub fn input(&self, viewer: ViewerId, bytes: Vec<u8>) -> Result<(), SessionError> {
        if self.shared.mode == crate::spec::Mode::StreamJson {
            whole_json_lines(&bytes)?;
        }
        let answerer = self
            .shared
            .answerer
            .load(std::sync::atomic::Ordering::Relaxed);
        if viewer != 0
            && answerer != 0
            && answerer != viewer
            && self.shared.mode == crate::spec::Mode::Pty
            && crate::reports::only_reports(&bytes)
        {
            tracing::debug!(viewer, answerer, "a second terminal's report not passed on");
            return Ok(());
        }
        let look = crate::agent::look_after_key(&self.shared, &bytes);
        self.send_input(viewer, bytes, None, None)?;
        // Claude Code fires no hook when Esc or Ctrl-C ends a turn, nor when its dialog is
        // answered: its screen is looked at.
        if look && let Err(e) = self.actor.send_message(SessionMsg::KeyTyped) {
            tracing::debug!(session = %self.shared.id, error = %e, "key not looked after: the session is ending");
        }
        Ok(())
    }

    /// A prompt. To a terminal: a paste followed by Enter (how a prompt is given to an agent's
    /// TUI): `text` wrapped in bracketed-paste markers when the program enabled that mode, then
    /// `\r` written [`PASTE_ENTER_DELAY`](crate::session::input::PASTE_ENTER_DELAY) later, as
    /// the same queue item. To a program on pipes: `text` and a newline. To a structured agent
    /// (stream-json): one user message, recorded as a typed `message` event. Errors as
    /// [`input`](Self::input).
    ///
    /// Returns a receiver told once all of it — the Enter included — was written to the
    /// program (never, if the session's input ends first); a caller that answers "queued"
    /// drops it.
    pub async fn paste(
        &self,
        viewer: ViewerId,
        text: &str,
    ) -> Result<tokio::sync::oneshot::Receiver<()>, SessionError> {
        const PASTE_START: &str = "\x1b[200~";
        const PASTE_END: &str = "\x1b[201~";
        let (done, entered) = tokio::sync::oneshot::channel();
        let done = Some(done);
        if self.shared.mode == crate::spec::Mode::StreamJson {
            self.send_input(viewer, crate::stream_json::user_message(text), None, done)?;
            self.shared.count_prompt();
            crate::agent::record_stream(
                &self.shared,
                crate::stream_json::AgentEvent::Message {
                    role: crate::stream_json::USER.into(),
                    text: text.to_string(),
                },
            );
            return Ok(entered);
        }
        // A program on pipes reads lines: the text and a newline, at once (there is no line
        // discipline to turn an Enter into one, and no TUI to wait for).
        if self.shared.mode == crate::spec::Mode::Pipe {
            self.send_input(viewer, format!("{text}\n").into_bytes(), None, done)?;
            self.shared.count_prompt();
            return Ok(entered);
        }
        // Nothing runs to take it: said as such (an ended agent's last attention said it had
        // not started, or that its input box held its `/exit`).
        if self.shared.writer.read().is_none() {
            return Err(SessionError::NotRunning(self.name().to_string()));
        }
        // A prompt's Enter would answer the dialog an agent shows instead (the first choice:
        // "Yes" to a tool, trust to a new folder), and the prompt would be lost.
        let refusal = {
            let status = self.shared.status.read();
            let asked_from_here = status.permission.as_ref().is_some_and(|p| p.id.is_some());
            match status.attention {
                // Nothing outside can answer it any more (nobody did in time, or it never came
                // through a hook): it is in the agent's own dialog.
                Some(crate::attention::Attention::NeedsPermission) if !asked_from_here => {
                    Some(SessionError::Unsupported(format!(
                        "{name} asks a permission in its own terminal: answer it there (`corral \
                         attach {name}`) or with keys (`corral send {name} '\\r'` takes the \
                         highlighted choice, `corral send {name} '\\e'` refuses); a prompt now \
                         would answer its dialog",
                        name = self.name()
                    )))
                }
                Some(crate::attention::Attention::NeedsPermission) => {
                    Some(SessionError::Unsupported(format!(
                        "{name} asks a permission: answer it first (`corral answer {name}`, the page, \
                         or POST /v1/sessions/{name}/permission); a prompt now would answer its dialog",
                        name = self.name()
                    )))
                }
                Some(crate::attention::Attention::Starting) => {
                    Some(SessionError::Unsupported(format!(
                        "{name} has not started: its screen waits for an answer (Claude Code asks \
                         whether to trust a new folder); answer it with keys (`corral send {name} \
                         '\\r'` is Enter: its highlighted choice) or at its terminal (`corral attach \
                         {name}`), then `corral wait {name} --for idle`",
                        name = self.name()
                    )))
                }
                _ => None,
            }
        };
        if let Some(refused) = refusal {
            return Err(refused);
        }
        // Asked of the screen, which has caught up with the output so far.
        let bracketed = self.snapshot().await.is_ok_and(|s| s.bracketed_paste);
        // A panel an agent opened on its own screen (Claude Code's `/cost`, `/model`, `/config`:
        // "Esc to cancel" at its foot) takes the prompt's Enter: the panel closes, the prompt
        // is lost, and no turn starts.
        // (The status lock is let go before the screen is asked.)
        let agent = self.shared.status.read().attention.is_some();
        if agent && let Some(text) = self.screen_text().await {
            if crate::agent::shows_dialog(&text) {
                return Err(SessionError::Unsupported(format!(
                    "{name}'s screen shows a dialog (it says \"Esc to cancel\"): a prompt now \
                     would answer it and be lost; close it first (`corral send {name} '\\e'`, \
                     Esc) or answer it with keys",
                    name = self.name()
                )));
            }
            // A prompt Claude put back after an interrupt, or text typed at its terminal: a
            // paste now would be added to it, and the two go as one prompt.
            if let Some(draft) = crate::agent::input_draft(&text) {
                let shown: String = draft.chars().take(40).collect();
                let more = if draft.chars().count() > 40 {
                    "…"
                } else {
                    ""
                };
                // A prompt sent a moment ago, on its way in (this client's or another's: the
                // CLI, an agentapi message, the page) is no draft: its Enter comes within
                // PASTE_ENTER_MAX, and the input writer types this one only once the program
                // took that Enter (Claude queues it when it works).
                let prompted = self
                    .shared
                    .prompted_at
                    .load(std::sync::atomic::Ordering::Relaxed);
                let since = crate::time::mono_ms().saturating_sub(prompted);
                let entering = crate::session::input::PASTE_ENTER_MAX.as_millis() as u64 + 1000;
                // Input still queued (a prompt waiting to type, or for its Enter: each waits
                // for the program to take the one before, seconds when it works) is in
                // flight however long ago it was sent.
                let queued = self
                    .shared
                    .writer
                    .read()
                    .as_ref()
                    .is_some_and(|w| w.depth() > 0);
                let in_flight = queued || (prompted != 0 && since < entering);
                if !in_flight {
                    return Err(SessionError::Unsupported(format!(
                        "{name}'s input box already holds text (\"{shown}{more}\": a prompt an \
                     interrupt put back, or typed at its terminal): a prompt now would be added \
                     to it; clear it (`corral send {name} '\\x15'`, Ctrl-U; Ctrl-Y at its \
                     terminal brings it back) or send it as it is (`corral send {name} '\\r'`)",
                        name = self.name()
                    )));
                }
            }
        }
        let bytes = if bracketed {
            // The paste's end marker inside the text would end the paste there and type the
            // rest as keys (an Enter in it would submit half a prompt), a start marker makes
            // some programs drop what came before it: they go, as terminals drop them from
            // what they paste (until none is left: removing one can make another).
            let mut text = text.to_string();
            while text.contains(PASTE_END) || text.contains(PASTE_START) {
                text = text.replace(PASTE_END, "").replace(PASTE_START, "");
            }
            format!("{PASTE_START}{text}{PASTE_END}")
        } else {
            text.to_string()
        };
        let enter = (crate::session::input::PASTE_ENTER_DELAY, b"\r".to_vec());
        self.send_input(viewer, bytes.into_bytes(), Some(enter), done)?;
        self.shared.count_prompt();
        self.shared.prompted_at.store(
            crate::time::mono_ms().max(1),
            std::sync::atomic::Ordering::Relaxed,
        );
        // An agent that waited works on it from now on (before its hook says so).
        if let Err(e) = self.actor.send_message(SessionMsg::Prompted) {
            tracing::debug!(session = %self.shared.id, error = %e, "prompt not noted: the session is ending");
        }
        Ok(entered)
    }

    /// Answers a structured agent's open permission question `id` (stream-json: a control
    /// response on its stdin: allow runs the tool with the input it asked for, or with `input`
    /// when given — an AskUserQuestion's answers go that way —, deny tells the agent
    /// `message`); the answer is recorded as a typed event. None when no such question is
    /// open (a terminal agent's questions are answered through its PermissionRequest hook).
    pub fn answer(
        &self,
        id: &str,
        allow: bool,
        message: Option<&str>,
        input: Option<serde_json::Value>,
    ) -> Result<Option<SessionEvent>, SessionError> {
        let Some(ask) = crate::agent::take_question(&self.shared, id) else {
            return Ok(None);
        };
        let request_id = ask.request_id.clone().unwrap_or_default();
        let input = input.as_ref().unwrap_or(&ask.input);
        let line = crate::stream_json::permission_response(&request_id, allow, input, message);
        if let Err(e) = self.send_input(0, line, None, None) {
            crate::agent::reopen(&self.shared, ask);
            return Err(e);
        }
        Ok(Some(crate::agent::record_stream(
            &self.shared,
            crate::stream_json::AgentEvent::PermissionAnswered {
                request_id,
                behavior: if allow { "allow" } else { "deny" }.into(),
                message: message.map(str::to_string),
            },
        )))
    }

    /// Viewer `viewer` left (see [`SessionMsg::ViewerLeft`]): the resize policy forgets it.
    pub fn viewer_left(&self, viewer: ViewerId) {
        if let Err(e) = self.send_sizing(SessionMsg::ViewerLeft(viewer)) {
            tracing::debug!(error = %e, "session gone; nothing to forget");
        }
    }

    /// Queues input (and what follows it after a pause) for the running process; `done` is
    /// told once all of it was written.
    fn send_input(
        &self,
        viewer: ViewerId,
        bytes: Vec<u8>,
        then: Option<(Duration, Vec<u8>)>,
        done: Option<tokio::sync::oneshot::Sender<()>>,
    ) -> Result<(), SessionError> {
        let writer = self.shared.writer.read().clone();
        let Some(writer) = writer else {
            return Err(SessionError::NotRunning(self.name().to_string()));
        };
        match writer.send(bytes, then, done) {
            Ok(()) => {}
            Err(SendError::Full { capacity }) => {
                self.shared
                    .input_rejected
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                return Err(SessionError::InputFull { capacity });
            }
            Err(SendError::Closed) => {
                return Err(SessionError::NotRunning(self.name().to_string()));
            }
        }
        if viewer != 0 {
            let prev = self
                .shared
                .last_input_viewer
                .swap(viewer, std::sync::atomic::Ordering::Relaxed);
            if prev != viewer
                && let Err(e) = self.send_sizing(SessionMsg::ViewerActive(viewer))
            {
                tracing::debug!(error = %e, "session gone; viewer change not applied");
            }
        }
        Ok(())
    }

    /// Reports a viewer's terminal size (applied per the resize policy). A size no terminal
    /// has (a zero, or past [`Size::MAX_ROWS`]×[`Size::MAX_COLS`]) is refused as a spec's is:
    /// a terminal not laid out yet has no size to report.
    pub fn resize(&self, viewer: ViewerId, size: Size) -> Result<(), SessionError> {
        let size = size.check()?;
        self.send_sizing(SessionMsg::Resize { viewer, size })
    }

    /// Sends a message that may change the terminal's size, counted until the actor handled
    /// it (`SessionShared::sizing`).
    fn send_sizing(&self, msg: SessionMsg) -> Result<(), SessionError> {
        let sizing = &self.shared.sizing;
        sizing.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        self.actor.send_message(msg).map_err(|e| {
            sizing.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
            SessionError::Unavailable(e.to_string())
        })
    }

    /// Reports a viewer's terminal size and makes it the session's now, as a key typed by that
    /// viewer would (the resize policy's "the last viewer who typed"): a phone that follows a
    /// desktop's larger screen takes the size back without typing into the program.
    pub fn take_size(&self, viewer: ViewerId, size: Size) -> Result<(), SessionError> {
        self.resize(viewer, size)?;
        if viewer != 0 {
            self.shared
                .last_input_viewer
                .store(viewer, std::sync::atomic::Ordering::Relaxed);
            self.send_sizing(SessionMsg::ViewerActive(viewer))?;
        }
        Ok(())
    }

    /// Subscribes from output offset `from` (`None`: from now).
    pub fn subscribe(&self, from: Option<u64>) -> Result<Subscription, SessionError> {
        Ok(Subscription::new(self.shared.clone(), self.reader(from)?))
    }

    /// A reader of the Ring at `from`, or at its head.
    fn reader(&self, from: Option<u64>) -> Result<corral_runtime::RingReader, SessionError> {
        let ring = &self.shared.ring;
        match from {
            None => Ok(ring.reader_at_head()),
            Some(from) => ring
                .reader(from)
                .map_err(|e| SessionError::OffsetBeyondHead {
                    from: e.from,
                    head: e.head,
                }),
        }
    }

    /// Like [`subscribe`](Self::subscribe), and the events after sequence number `after`
    /// come first from the journal, each where it happened in the output, then the live ones,
    /// none twice: a client that reconnects resumes the output at its next byte and the events
    /// at its next event. At most [`MAX_REPLAY`] are replayed, and [`MAX_REPLAY_BYTES`] (the
    /// newest), after an `EventsLagged` naming how many were not (`events` pages through
    /// them).
    pub async fn subscribe_after(
        &self,
        from: Option<u64>,
        after: u64,
    ) -> Result<Subscription, SessionError> {
        let (events, through) = self.shared.events_after();
        let reader = self.reader(from)?;
        let mut sub = Subscription::with_events(self.shared.clone(), reader, events, through);
        if through <= after {
            return Ok(sub);
        }
        let Some(journal) = self.shared.journal() else {
            return Err(SessionError::Unsupported(
                "event history needs persistence (this server keeps none)".into(),
            ));
        };
        let first = after.max(through.saturating_sub(MAX_REPLAY as u64));
        let events = journal
            .events(self.id(), None, first, (through - first) as usize)
            .await
            .map_err(|e| SessionError::Unavailable(format!("reading the journal: {e}")))?;
        let mut events: Vec<SessionEvent> =
            events.into_iter().filter(|e| e.seq <= through).collect();
        // The newest that fit in MAX_REPLAY_BYTES (as JSON: what a client receives).
        let mut bytes = 0;
        let mut from = events.len();
        for (i, e) in events.iter().enumerate().rev() {
            bytes += serde_json::to_vec(e).map_or(0, |v| v.len());
            if bytes > MAX_REPLAY_BYTES {
                break;
            }
            from = i;
        }
        events.drain(..from);
        // Past the bounds, and any the journal lacks (a full queue's `journal_lost`).
        let missed = (through - after) - events.len() as u64;
        sub.replay(events, missed);
        Ok(sub)
    }

    /// Future events of this session.
    pub fn events(&self) -> broadcast::Receiver<SessionEvent> {
        self.shared.events()
    }

    /// The current screen and the output offset it corresponds to (PTY sessions).
    pub async fn snapshot(&self) -> Result<Snapshot, SessionError> {
        self.snapshot_of(ScreenMsg::Snapshot).await
    }

    /// The current screen with the history before it (the rows that scrolled off the top, as
    /// much as the Ring still holds: [`crate::history`]), for a viewer that opens the session
    /// fresh and wants to scroll back (PTY sessions). `viewer_rows`: the height of the terminal
    /// it is written into, if the viewer said (see [`Snapshot::with_history`]).
    pub async fn snapshot_with_history(
        &self,
        viewer_rows: Option<u16>,
    ) -> Result<Snapshot, SessionError> {
        self.snapshot_of(move |r| ScreenMsg::SnapshotWithHistory(r, viewer_rows))
            .await
    }

    /// Asks the screen for a snapshot: directly, or through the session actor while a size
    /// change is on its way there ([`SessionShared::sizing`]) so the snapshot is at that size.
    /// An actor busy for longer than [`SIZING_WAIT`] (a graceful stop waits for its process)
    /// is not waited for: the screen is asked directly then.
    async fn snapshot_of(
        &self,
        ask: impl Fn(RpcReplyPort<Snapshot>) -> ScreenMsg,
    ) -> Result<Snapshot, SessionError> {
        let screen = self.shared.screen.read().clone();
        let Some(screen) = screen else {
            return Err(SessionError::Unsupported(
                "snapshots exist for PTY sessions only".into(),
            ));
        };
        if self
            .shared
            .sizing
            .load(std::sync::atomic::Ordering::Acquire)
            > 0
        {
            let behind = self
                .actor
                .call(|r| SessionMsg::Screen(ask(r)), Some(SIZING_WAIT))
                .await;
            match behind {
                Ok(CallResult::Success(s)) => return Ok(s),
                other => tracing::debug!(?other, "asked through the session: no answer"),
            }
        }
        match screen.call(ask, Some(CALL_TIMEOUT)).await {
            Ok(CallResult::Success(s)) => Ok(s),
            Ok(other) => Err(SessionError::Unavailable(format!("screen: {other:?}"))),
            Err(e) => Err(SessionError::Unavailable(e.to_string())),
        }
    }

    /// The screen's text now (PTY sessions; None when there is no screen to ask).
    async fn screen_text(&self) -> Option<String> {
        let screen = self.shared.screen.read().clone()?;
        crate::screen::text_of(&screen, CALL_TIMEOUT).await
    }

    pub(crate) async fn call<T: Send + 'static>(
        &self,
        build: impl FnOnce(RpcReplyPort<T>) -> SessionMsg,
        timeout: Duration,
    ) -> Result<T, SessionError> {
        match self.actor.call(build, Some(timeout)).await {
            Ok(CallResult::Success(v)) => Ok(v),
            Ok(CallResult::Timeout) => Err(SessionError::Unavailable("timed out".into())),
            Ok(CallResult::SenderError) => Err(SessionError::Unavailable(
                "session stopped before answering".into(),
            )),
            // Its actor is gone: the session was removed meanwhile (a `rm` racing this call).
            Err(_) => Err(SessionError::NotFound(self.name().to_string())),
        }
    }

    /// Graceful stop: stop signal, `grace` (the spec's when None), then SIGKILL of the tree.
    pub async fn stop(&self, grace: Option<Duration>) -> Result<SessionInfo, SessionError> {
        self.stop_inner(grace, false).await
    }

    pub(crate) async fn stop_inner(
        &self,
        grace: Option<Duration>,
        shutdown: bool,
    ) -> Result<SessionInfo, SessionError> {
        // A grace past the longest a spec may have is that longest (Duration::MAX would
        // overflow every deadline made from it).
        let grace = grace.map(|g| g.min(crate::spec::SessionSpec::MAX_GRACE));
        let wait = grace.unwrap_or(Duration::from_secs(60)) + CALL_TIMEOUT;
        let mut info = self
            .call(
                |reply| SessionMsg::Stop {
                    grace,
                    shutdown,
                    reply,
                },
                wait,
            )
            .await?;
        // (A shutdown's last flush covers every session at once.)
        if !shutdown {
            self.recorded("stopped", &mut info).await;
        }
        Ok(info)
    }

    /// SIGKILL of the whole tree at once.
    pub async fn kill(&self) -> Result<SessionInfo, SessionError> {
        let mut info = self.call(SessionMsg::Kill, CALL_TIMEOUT).await?;
        self.recorded("killed", &mut info).await;
        Ok(info)
    }

    /// Waits until the registry's commit holds what this session has journaled so far: a stop
    /// is answered once a crash of the server can no longer undo it (the next server would find
    /// the session's holder gone, take it as lost, and restart a session that was stopped
    /// under `restart = always`). A commit is a write to the WAL, no sync; a registry that
    /// cannot take it does not fail the stop.
    /// Not yet: the caller is told in `info` (and the session shows it, as a spawn's is shown,
    /// until the next write that succeeds): the registry refused (a full disk), and a crash now
    /// would undo it.
    async fn recorded(&self, what: &str, info: &mut SessionInfo) {
        let Some(journal) = self.shared.journal() else {
            return;
        };
        let Err(e) = journal.committed().await else {
            return;
        };
        tracing::warn!(session = %self.id(), error = %e, "{what}, but not yet in the registry: a crash now would undo it");
        let said =
            format!("{what}, but not in the registry yet ({e}): a server crash now would undo it");
        self.shared.feed.set_persist_error(Some(said.clone()));
        info.persist_error = Some(said);
    }

    /// Carries out a stop, kill or restart that was asked of this session before a server died
    /// mid-way (its state was left Stopping with `why`, see `session::actor::STOP_REQUESTED`):
    /// sent without waiting for it (a graceful stop takes its grace; a boot must not).
    pub fn finish_request(&self, why: &str, grace: Option<Duration>) {
        use crate::session::actor::{KILL_REQUESTED, RESTART_REQUESTED};
        // Nobody waits for the answers: the session records what it did.
        let sent = match why {
            KILL_REQUESTED => {
                let (tx, _) = tokio::sync::oneshot::channel();
                self.actor.send_message(SessionMsg::Kill(tx.into()))
            }
            RESTART_REQUESTED => {
                let (tx, _) = tokio::sync::oneshot::channel();
                self.actor.send_message(SessionMsg::Restart(tx.into()))
            }
            _ => {
                let (tx, _) = tokio::sync::oneshot::channel();
                self.actor.send_message(SessionMsg::Stop {
                    grace,
                    shutdown: false,
                    reply: tx.into(),
                })
            }
        };
        if let Err(e) = sent {
            tracing::warn!(session = %self.id(), error = %e, "the unfinished request could not be resumed");
        }
    }

    /// Stops (gracefully) if running, then starts a fresh process.
    /// Answered once the registry holds it, as a stop is: a crash right after must not leave
    /// the next server with the old process's record (it would miss the restart's exit and
    /// spawn in the session's history, or, with only `restart requested` committed, restart
    /// the new process once more).
    pub async fn restart(&self) -> Result<SessionInfo, SessionError> {
        let mut info = self
            .call(SessionMsg::Restart, Duration::from_secs(120))
            .await??;
        self.recorded("restarted", &mut info).await;
        Ok(info)
    }
}

/// A structured (stream-json) agent reads JSON lines on its input: anything else (keystrokes, a
/// line cut in two) makes it fail, so raw input to it must be whole lines, each a JSON object.
/// A prompt goes as a paste (one user message line made for it).
fn whole_json_lines(bytes: &[u8]) -> Result<(), SessionError> {
    let refuse = |why: String| {
        Err(SessionError::BadInput(format!(
            "a stream-json session takes whole JSON lines as raw input ({why}); send a prompt \
             as a paste (`corral send --paste`, or agentapi's `\"type\": \"user\"`); nothing \
             was written"
        )))
    };
    let Ok(text) = std::str::from_utf8(bytes) else {
        return refuse("this is not UTF-8".into());
    };
    if !text.ends_with('\n') {
        return refuse("this does not end with a newline".into());
    }
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<serde_json::Value>(line) {
            Ok(serde_json::Value::Object(_)) => {}
            Ok(_) => return refuse(format!("line {} is not a JSON object", n + 1)),
            Err(e) => return refuse(format!("line {} is not JSON: {e}", n + 1)),
        }
    }
    Ok(())
}
