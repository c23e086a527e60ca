//! Agentapi: each session also speaks the small per-agent HTTP API of coder/agentapi, under
//! `/agentapi/{session}/`, so tools written for it work unchanged: `GET status`
//! (`{"agent_type", "status": "running"|"stable"}`), `GET messages` (the conversation),
//! `POST message` (`{"content", "type": "user"|"raw"}` → `{"ok": true}`), `GET events` (SSE
//! `message_update` and `status_change`) and `GET openapi.json`. Same tokens and scopes as the
//! rest of the API.
//!
//! For a terminal session the conversation is what agentapi makes of it: the user messages
//! posted here, and after the last one an agent message: what it printed since, scrollback and
//! all (`crate::turn`), or its screen before any. For a structured (stream-json) session it is the typed messages: what was sent and
//! what the agent wrote (`crate::conversation`); a `user` message is one user message line. `stable` means the agent waits (an agent session whose hooks say idle or
//! needs_permission), or, for sessions without hooks, that no output came for [`QUIET`].

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::Json;
use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use corral_actors::attention::Attention;
use corral_actors::{Mode, SessionHandle};
use serde::Deserialize;

use crate::access::{Driven, Readable, parse_json};
use crate::app::App;
use crate::conversation::Message;
use crate::error::ApiError;

/// Output quiet this long makes a session without hooks `stable`.
pub const QUIET: Duration = Duration::from_millis(1000);
/// Output quiet this long after an agent's hooks say it waits makes it `stable` (its last
/// repaint is on the screen).
pub const SETTLE: Duration = Duration::from_millis(200);
/// Time from the hook that made a terminal agent wait (its Stop) before it is `stable`,
/// however quiet its screen: Claude Code paints its answer 200–500 ms after its Stop hook, and the screen was
/// often quiet that long already (a client posting at `stable` got each answer a turn late).
pub const PAINT: Duration = Duration::from_millis(700);
/// Time from the hook that made a terminal agent wait after which its screen's redraws are not
/// work: Claude Code takes its "/effort" hint away 10 s after a turn, redraws on a resize; each
/// said `running` then `stable` with no turn (a client counting turns counted one too many).
pub const SETTLED: Duration = Duration::from_secs(2);
/// How long a user message's answer waits for its Enter to be written (the Enter itself waits
/// up to 2 s for the program to take the paste).
pub const ENTERED_WAIT: Duration = Duration::from_secs(3);
/// Output and events quiet this long make a terminal agent whose hooks say it works `stable`.
pub const WORKING_QUIET: Duration = Duration::from_secs(10);
/// `POST message` body.
#[derive(Debug, Clone, Deserialize)]
pub struct MessageRequest {
    /// The text.
    pub content: String,
    /// `user` (a prompt: pasted, then Enter) or `raw` (keystrokes as they are).
    #[serde(rename = "type")]
    pub kind: String,
}

/// How long a user message just sent counts as `running` with no hook or output to say so
/// yet: a prompt that starts a turn says so in its UserPromptSubmit hook within it; one that
/// starts none (a slash command that prints and returns) must not leave the agent `running` for ever.
pub const PROMPT_PENDING: Duration = Duration::from_secs(3);

/// `running` or `stable`, as agentapi says it.
pub fn status(app: &App, h: &SessionHandle) -> &'static str {
    // A program without hooks (on pipes, or a terminal's: a shell) that printed since its
    // message was sent has taken it: its quiet says the rest (no hook will come to say it
    // works: it was `running` for all of PROMPT_PENDING, however quick its answer).
    let info = h.info();
    let marked = match h.shared().mode {
        Mode::Pipe => true,
        Mode::Pty => info.attention.is_none(),
        Mode::StreamJson => false,
    };
    let answered = marked && h.shared().ring.head() > app.conversations.mark(h.id());
    if answered {
        // Its prompt is answered: a user message may follow (a claim would see it pending).
        app.conversations.settle(h.id());
    }
    if !answered
        && app
            .conversations
            .prompt_pending(h.id(), h.shared().last_seq(), PROMPT_PENDING)
    {
        return "running";
    }
    // Ended: nothing runs, nothing will print (a message is refused: it has no process).
    if matches!(
        info.state,
        corral_actors::SessionState::Stopped | corral_actors::SessionState::Failed
    ) {
        return "stable";
    }
    let quiet = h.shared().quiet_ms();
    let waits = match info.attention {
        Some(a) => match a {
            // Claude Code's TUI fires Stop (and PermissionRequest) before it repaints: its
            // answer reaches the screen a few tens of ms later. A terminal agent is stable once
            // its screen settled, so the turn's agent message holds the answer (a structured
            // agent's messages are its events: no screen to wait for).
            Attention::Idle | Attention::NeedsPermission => {
                settles_in(h, info.attention).is_none_or(|d| d.is_zero())
            }
            Attention::Exited => true,
            // Hooks say it works, but neither a hook nor a terminal agent's screen has moved for
            // this long: Claude Code's working screen ticks every second, so the hook that would
            // have said it stopped was lost (sent while no server was there to take it).
            Attention::Working => {
                let long =
                    |ms: Option<u64>| ms.is_some_and(|q| q >= WORKING_QUIET.as_millis() as u64);
                h.shared().mode == Mode::Pty && long(quiet) && long(h.shared().eventless_ms())
            }
            // No hook yet: an agent that drew a screen and then sat quiet this long before it
            // started waits for a key on it (a first-run or folder trust dialog).
            Attention::Starting => {
                quiet.is_some_and(|q| q >= corral_actors::agent::STARTING_QUIET.as_millis() as u64)
            }
        },
        // Quiet since its last output, or since it started when it printed nothing yet: a
        // program just spawned has not drawn its prompt yet (it was `stable` until its first
        // byte, and a message sent then raced the prompt it printed).
        None => quiet
            .or_else(|| started_ms(&info))
            .is_none_or(|q| q >= QUIET.as_millis() as u64),
    };
    if waits { "stable" } else { "running" }
}

/// How long until a terminal agent whose hooks say it waits (`attention`) is `stable`: its
/// screen quiet for [`SETTLE`] and [`PAINT`] since the hook, or [`SETTLED`] since it whatever
/// the screen does; zero once it is. None: nothing to wait for (no terminal, not waiting, or
/// no hook time known).
fn settles_in(h: &SessionHandle, attention: Option<Attention>) -> Option<Duration> {
    let shared = h.shared();
    if shared.mode != Mode::Pty
        || !matches!(
            attention,
            Some(Attention::Idle | Attention::NeedsPermission)
        )
    {
        return None;
    }
    let waited = shared.attention_ms()?;
    let left = |bound: Duration, ms: u64| bound.saturating_sub(Duration::from_millis(ms));
    let quiet = left(SETTLE, shared.quiet_ms().unwrap_or(u64::MAX));
    let painted = left(PAINT, waited).max(quiet);
    Some(painted.min(left(SETTLED, waited)))
}

/// Milliseconds since the session's process started; None without one.
fn started_ms(info: &corral_actors::SessionInfo) -> Option<u64> {
    let since = SystemTime::now().duration_since(info.started_at?).ok()?;
    Some(since.as_millis() as u64)
}

/// agentapi's `transport`: `acp` for a structured session (no terminal: its messages are the
/// protocol's), `pty` for the others.
fn transport(h: &SessionHandle) -> &'static str {
    if h.shared().mode == Mode::StreamJson {
        "acp"
    } else {
        "pty"
    }
}

/// The agent type agentapi names (`claude` for the claude profile).
fn agent_type(h: &SessionHandle) -> String {
    let info = h.info();
    if info.agent_session_id.is_some() || info.attention.is_some() {
        "claude".into()
    } else {
        "custom".into()
    }
}

/// Most of a pipe session's output an agent message shows (its end).
const PIPE_TEXT: u64 = 64 * 1024;

/// The agent's message now: a terminal's screen, or a pipe session's output since its last
/// user message (`app`'s mark; its last [`PIPE_TEXT`] bytes), as text.
async fn agent_text(app: &App, h: &SessionHandle) -> String {
    if h.shared().mode != Mode::Pipe {
        let turn = app.conversations.turn(h.id()).or_else(|| {
            // Taken over from a previous server after a user message: the turn goes on from
            // where the journal says it was posted, read back from the log.
            let (offset, message) = app.conversations.resume(h.id())?;
            let size = h.shared().size();
            let turn = crate::turn::Turn::resumed(offset, size.rows, size.cols);
            app.conversations
                .begin_turn(h.id(), Some(turn.answering(&message)));
            app.conversations.turn(h.id())
        });
        return match turn {
            Some(turn) => turn_text(app, h, turn).await,
            None => screen_text(h).await,
        };
    }
    let ring = &h.shared().ring;
    let head = ring.head();
    let mut at = app
        .conversations
        .mark(h.id())
        .max(ring.tail())
        .max(head.saturating_sub(PIPE_TEXT));
    let mut out = Vec::new();
    while at < head {
        match ring.read_at(at, &mut out, (head - at) as usize) {
            corral_runtime::Read::Data { len, .. } if len > 0 => at += len as u64,
            corral_runtime::Read::Lagged(l) => at = l.to,
            _ => break,
        }
    }
    String::from_utf8_lossy(&out).trim_end().to_string()
}

/// A terminal agent's text since its last user message (`turn`), fed first with the output that
/// came since it was last read: from the session's Ring, or its log for what the Ring no longer
/// holds. Parsed on a blocking thread.
async fn turn_text(
    app: &App,
    h: &SessionHandle,
    turn: Arc<parking_lot::Mutex<crate::turn::Turn>>,
) -> String {
    let shared = h.shared().clone();
    let persist = app.corral.sessions().persist().cloned();
    let runtime = tokio::runtime::Handle::current();
    // The turn is locked on the blocking thread only (a long parse must not hold a worker).
    let parsed = tokio::task::spawn_blocking(move || {
        let mut turn = turn.lock();
        let size = shared.size();
        turn.resize(size.rows, size.cols);
        let ring = &shared.ring;
        let head = ring.head();
        turn.skip_to(head.saturating_sub(crate::turn::MAX_FEED));
        let log = match persist {
            Some(p) if turn.at() < ring.tail() => runtime
                .block_on(p.reader(shared.id))
                .inspect_err(|e| tracing::debug!(session = %shared.id, error = %e, "no log to read a turn from"))
                .ok(),
            _ => None,
        };
        if let Some(log) = log {
            // What the Ring let go of, from the log (a gap in it is skipped).
            let mut last = None;
            // Until the Ring's start, as long as the log gives more.
            while turn.at() < ring.tail() && last != Some(turn.at()) {
                last = Some(turn.at());
                let want = (ring.tail() - turn.at()) as usize;
                match log.read_range(turn.at(), want) {
                    Ok(chunks) if !chunks.is_empty() => {
                        for chunk in chunks {
                            match chunk {
                                corral_actors::persist::Chunk::Data { offset, bytes } => {
                                    turn.feed(offset, &bytes)
                                }
                                corral_actors::persist::Chunk::Gap { to, .. } => turn.skip_to(to),
                            }
                        }
                    }
                    Ok(_) => break,
                    Err(e) => {
                        tracing::debug!(error = %e, "a turn's output could not be read from the log");
                        break;
                    }
                }
            }
        }
        let mut out = Vec::new();
        while turn.at() < head {
            out.clear();
            match ring.read_at(turn.at(), &mut out, (head - turn.at()) as usize) {
                corral_runtime::Read::Data { offset, len } if len > 0 => turn.feed(offset, &out),
                corral_runtime::Read::Lagged(l) => turn.skip_to(l.to),
                _ => break,
            }
        }
        turn.text()
    })
    .await;
    parsed.unwrap_or_else(|e| {
        tracing::warn!(error = %e, "parsing a turn failed");
        String::new()
    })
}

/// The session's screen as plain text, trailing blank lines and spaces trimmed.
async fn screen_text(h: &SessionHandle) -> String {
    let Ok(snap) = h.snapshot().await else {
        return String::new();
    };
    let size = |n: u16| std::num::NonZeroU16::new(n).unwrap_or(std::num::NonZeroU16::MIN);
    let mut parser = vt100::Parser::new(size(snap.rows), size(snap.cols), 0);
    parser.process(&snap.bytes);
    let text = parser.screen().contents();
    let lines: Vec<&str> = text.lines().map(str::trim_end).collect();
    let end = lines
        .iter()
        .rposition(|l| !l.is_empty())
        .map_or(0, |i| i + 1);
    lines[..end].join("\n")
}

/// The conversation: a structured session's messages; for a terminal, the user messages, then
/// the agent's screen.
async fn messages(app: &App, h: &SessionHandle) -> Vec<Message> {
    if h.shared().mode == Mode::StreamJson
        && let Some(persist) = app.corral.sessions().persist()
    {
        return app.conversations.structured(persist, h.id()).await;
    }
    if let Some(persist) = app.corral.sessions().persist() {
        app.conversations.seed(persist, h.id()).await;
    }
    app.conversations
        .terminal(h.id(), agent_text(app, h).await, screen_changed(h))
}

/// When the session's screen last changed: its last output; for a session that printed
/// nothing since this server has it (adopted after a restart or an upgrade), when its process
/// started, or for one that ended, when it ended — a time that stays put, so a poller diffing
/// messages sees no change where there is none (it said "now" at every GET) —; now only for a
/// session with no process yet.
fn screen_changed(h: &SessionHandle) -> SystemTime {
    h.shared()
        .last_output_at()
        .or_else(|| h.info().started_at)
        .or_else(|| h.shared().ended_at())
        .unwrap_or_else(SystemTime::now)
}

/// `GET /agentapi/{key}/status`.
pub async fn get_status(
    State(app): State<Arc<App>>,
    Readable(h): Readable,
) -> Json<serde_json::Value> {
    Json(serde_json::json!({
        "agent_type": agent_type(&h),
        "status": status(&app, &h),
        "transport": transport(&h),
    }))
}

/// `GET /agentapi/{key}/messages`.
pub async fn get_messages(
    State(app): State<Arc<App>>,
    Readable(h): Readable,
) -> Json<serde_json::Value> {
    Json(serde_json::json!({ "messages": messages(&app, &h).await }))
}

/// `POST /agentapi/{key}/message`: a `user` message needs a `stable` agent (409 otherwise) and
/// is pasted then entered; a `raw` one is written as keystrokes and not kept.
pub async fn post_message(
    State(app): State<Arc<App>>,
    Driven(h): Driven,
    crate::access::Body(body): crate::access::Body,
) -> Result<Json<serde_json::Value>, ApiError> {
    let req: MessageRequest = parse_json(&body, "message")?;
    match req.kind.as_str() {
        "raw" => h.input(0, req.content.into_bytes())?,
        "user" => {
            // As agentapi: a prompt of nothing (or only whitespace) is no message.
            if req.content.trim().is_empty() {
                return Err(ApiError::bad_request("a user message must not be empty"));
            }
            let info = h.info();
            // Before it started (Claude Code's folder trust dialog waits for a key; whether its
            // screen settled or not): the message would answer that screen (its Enter picks the
            // first choice). Said so, rather than "running".
            if info.attention == Some(Attention::Starting) && h.shared().mode != Mode::StreamJson {
                return Err(ApiError::conflict(
                    "the agent has not started: its screen waits for an answer (Claude Code \
                     asks whether to trust a new folder); answer it with a raw message (\"\\r\" \
                     is Enter: its highlighted choice)",
                ));
            }
            if status(&app, &h) != "stable" {
                return Err(ApiError::conflict(
                    "the agent is running: a user message needs it stable",
                ));
            }
            // Stable, but asking: the message would be typed into its question's dialog (and
            // its Enter would pick the first choice, "Yes").
            if info.attention == Some(Attention::NeedsPermission) {
                let route = match info.permission.as_ref().and_then(|p| p.id.as_ref()) {
                    Some(_) => format!("POST /v1/sessions/{}/permission", h.name()),
                    None => "in its terminal: a raw message".to_string(),
                };
                // A structured agent has no dialog: a message would wait behind the question.
                let why = if h.shared().mode == Mode::StreamJson {
                    "it takes no message until then"
                } else {
                    "a message now would answer it"
                };
                return Err(ApiError::conflict(format!(
                    "the agent asks a permission: answer it first ({route}); {why}"
                )));
            }
            // One user message at a time: a second client that saw it stable too is refused
            // here (both texts typed into its prompt would be one prompt to the agent).
            let Some(claim) =
                app.conversations
                    .claim(h.id(), h.shared().last_seq(), PROMPT_PENDING)
            else {
                return Err(ApiError::conflict(
                    "the agent is running: another user message was just sent to it",
                ));
            };
            // A structured session records its prompt as a typed event (its conversation comes
            // from the journal); a terminal's is kept here, after the agent's screen before it.
            let before = if h.shared().mode == Mode::StreamJson {
                None
            } else {
                // What the last server settled comes first (see `Conversations::seed`).
                if let Some(persist) = app.corral.sessions().persist() {
                    app.conversations.seed(persist, h.id()).await;
                }
                Some(agent_text(&app, &h).await)
            };
            // Its answer is what it prints from now on, scrollback and all (a terminal's), or
            // its output from here (a pipe's) — taken before the prompt goes, kept only once it
            // went: a refused prompt (nothing runs, a dialog is open, its input box holds
            // text) leaves the conversation as it was (it began a turn, and the last answer
            // was read from there: gone for good).
            let turn = match h.shared().mode {
                Mode::Pty => Some(
                    h.snapshot()
                        .await
                        .inspect_err(|e| tracing::debug!(session = %h.id(), error = %e, "no screen to begin a turn at: its screen is the answer"))
                        .ok()
                        .map(|screen| crate::turn::Turn::begin(&screen).answering(&req.content)),
                ),
                _ => None,
            };
            let mark = h.shared().ring.head();
            // Answered once the prompt is entered (its Enter written), not only queued: a
            // server gone before then fails the request instead of answering ok for a prompt
            // that never reached the agent. A program that does not read holds it at most
            // ENTERED_WAIT (the prompt stays queued: input is never dropped).
            let entered = h.paste(0, &req.content).await?;
            // The last answer settled and the new turn begun together, as the prompt goes: a
            // reader in between saw the last answer's id with the new turn's text.
            if let Some(screen) = before {
                app.conversations.posted(&h, screen, req.content);
            }
            // What it answers comes after this event (before its Enter: no turn yet; after the
            // conversation's own events, which are no answer).
            let seq = h.shared().last_seq();
            if let Some(turn) = turn {
                app.conversations.begin_turn(h.id(), turn);
            }
            if h.shared().mode != Mode::StreamJson {
                app.conversations.set_mark(h.id(), mark);
            }
            if tokio::time::timeout(ENTERED_WAIT, entered).await.is_err() {
                tracing::debug!(session = %h.id(), "agentapi: prompt queued, not yet entered");
            }
            // It works on the message from now on (its UserPromptSubmit hook says so a moment
            // later): a client polling for `stable` must not see the old state meanwhile.
            app.conversations.prompted(claim, seq);
        }
        other => {
            return Err(ApiError::bad_request(format!(
                "message type must be user or raw, not {other:?}"
            )));
        }
    }
    Ok(Json(serde_json::json!({ "ok": true })))
}

/// `GET /agentapi/{key}/events`: Server-Sent Events. First what reconstructs the state (every
/// message, the status), then a `message_update` when the agent's screen changed and a
/// `status_change` when the status did, checked when output or an event arrives (at most every
/// 250 ms) and at least every second (a quiet screen becomes `stable`).
pub async fn get_events(
    State(app): State<Arc<App>>,
    Readable(h): Readable,
    headers: axum::http::HeaderMap,
) -> Response {
    let Some(place) = app.connections.event_stream() else {
        return crate::access::at_limit(
            &app,
            "too many event streams open",
            crate::connections::MAX_EVENT_STREAMS,
        )
        .into_response();
    };
    struct Follow {
        /// Its place among the event streams open, given back when the stream ends.
        _place: crate::connections::Place,
        app: Arc<App>,
        h: SessionHandle,
        /// The token the stream was opened with: checked again each turn, so a revoked one
        /// ends the stream (as it closes WebSockets) within about a second.
        token: Option<String>,
        sub: Option<corral_actors::Subscription>,
        /// Each message as it was last sent, by id (only those the conversation still keeps).
        sent: HashMap<u64, String>,
        status: Option<&'static str>,
        first: bool,
        /// Changes when a user message was sent (to any session): the status is `running`
        /// from then, before a hook or output says so.
        posted: tokio::sync::watch::Receiver<u64>,
        /// How many prompts it knows were sent to its session (from any client): one it had
        /// not seen is `running`, however short its turn.
        prompts: u64,
        /// How many user messages it knows were let through to its session.
        claims: u64,
        /// The session's last event when the status was last sampled: an event up to it was
        /// already in that sample.
        sampled: u64,
        /// A `running` was just said at once: settle and render next, without waiting.
        settle_next: bool,
    }
    impl Follow {
        /// The `status_change`s to say now: a `stable` missed since the last read (see
        /// below), then the status if it is not the one last said.
        fn sample(&mut self) -> Vec<Result<Event, Infallible>> {
            let mut said = Vec::new();
            let claims = self.app.conversations.claims(self.h.id());
            if claims != self.claims && self.status == Some("running") {
                // A user message was let through since the status was last read, and it was
                // `running`: one is only let through to a `stable` agent, so the last turn
                // ended in between (a client polling GET status posted within that stable
                // moment). Said, so a client counting turns by the stream counts each one.
                self.status = Some("stable");
                said.push(Ok(status_event(&self.h, "stable")));
            }
            self.sampled = self.h.shared().last_seq();
            let prompts = self.h.shared().prompts();
            said.extend(status_change(&mut self.status, &self.app, &self.h).map(Ok));
            // Read after the status: one let through after a `running` read is news next time
            // (one let through between the two reads is taken in, its stable moment unsaid:
            // microseconds, against missing none at the price of saying a false one).
            self.claims = self.app.conversations.claims(self.h.id());
            // A prompt counted before a `running` read is that turn's (counted before its
            // first byte went): not news next time (it was said `running` twice, once for
            // the turn and once for its prompt counted late). One before a `stable` read may
            // be a turn over before it: the next turn of the stream says it.
            if self.status == Some("running") {
                self.prompts = prompts;
            }
            said
        }
    }
    let sub = h.subscribe(None).ok();
    let posted = app.conversations.sent();
    let prompts = h.shared().prompts();
    let claims = app.conversations.claims(h.id());
    let f_shutdown = app.shutdown.subscribe();
    let follow = Follow {
        _place: place,
        token: crate::access::presented_token(&headers),
        app,
        h,
        sub,
        sent: HashMap::new(),
        status: None,
        first: true,
        prompts,
        claims,
        sampled: 0,
        settle_next: false,
        posted,
    };
    let stream = futures::stream::unfold(follow, |mut f| async move {
        if f.sub.is_none() && !f.first {
            // The session was removed: nothing more will come, the stream ends.
            return None;
        }
        let mut events = Vec::new();
        if !f.first && !f.settle_next {
            // Wait for output, an event or a user message sent (or a second, for quiet), then
            // let it settle. The items only wake this loop: what the client gets is the
            // screen, read below.
            // A second at most, and no later than the moment a waiting agent's screen has
            // had time to paint (a stable that short is still said: a client that saw it
            // through GET status may start the next turn at once).
            let tick = match f.status {
                // (Zero: it is not `running` for its screen, but for a prompt just sent.)
                Some("running") => settles_in(&f.h, f.h.info().attention)
                    .filter(|d| !d.is_zero())
                    .map_or(Duration::from_secs(1), |d| {
                        (d + Duration::from_millis(2)).min(Duration::from_secs(1))
                    }),
                _ => Duration::from_secs(1),
            };
            let woke = match f.sub.as_mut() {
                Some(sub) => tokio::select! {
                    item = sub.next(64 * 1024) => Some(item),
                    changed = f.posted.changed() => {
                        // invariant: the sender lives in the App this stream holds.
                        debug_assert!(changed.is_ok());
                        None
                    }
                    () = tokio::time::sleep(tick) => None,
                },
                None => {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    None
                }
            };
            if matches!(woke, Some(corral_actors::Item::Closed))
                || f.app.corral.sessions().get(&f.h.id().to_string()).is_err()
            {
                // Removed: its conversation is gone, nothing more will come.
                return None;
            }
            // A turn can be shorter than the settling time: a user message sent, or a hook
            // that starts work, is `running` even when the sample below finds it over.
            // (An event the last status sample already saw is no news: the stream reads one
            // item per turn, and a turn's hooks wait queued behind its user message.)
            let prompts = f.h.shared().prompts();
            let started = prompts != f.prompts
                || matches!(&woke, Some(corral_actors::Item::Event(e))
                    if e.seq > f.sampled && starts_work(&e.kind));
            f.prompts = prompts;
            if started && f.status != Some("running") {
                // Said at once; the settling and the status it is in then follow.
                f.status = Some("running");
                f.settle_next = true;
                events.push(Ok::<_, Infallible>(status_event(&f.h, "running")));
                f.claims = f.app.conversations.claims(f.h.id());
                return Some((futures::stream::iter(events), f));
            }
            // The status it is in now (a short turn's end), and again after settling.
            if !matches!(woke, Some(corral_actors::Item::Output { .. })) {
                events.extend(f.sample());
            }
        }
        if !f.first {
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        f.first = false;
        f.settle_next = false;
        let allowed = f
            .app
            .tokens
            .check(f.token.as_deref())
            .is_ok_and(|g| g.can_read(f.h.id()));
        if !allowed {
            tracing::info!(session = %f.h.id(), "an event stream's token is no longer valid: ended");
            return None;
        }
        // Removed while this settled: its conversation is gone, and read now it would be one
        // empty agent message (id 0), sent over the client's last one.
        if f.app.corral.sessions().get(&f.h.id().to_string()).is_err() {
            return None;
        }
        let now = messages(&f.app, &f.h).await;
        // What it said of messages the conversation no longer keeps (past its bounds, the
        // oldest first) is let go: `sent` holds at most what the conversation does.
        if let Some(oldest) = now.first() {
            f.sent.retain(|id, _| *id >= oldest.id);
        }
        for m in now {
            if f.sent.get(&m.id) != Some(&m.content) {
                f.sent.insert(m.id, m.content.clone());
                let data = serde_json::json!({"id": m.id, "message": m.content, "role": m.role, "time": m.time});
                events.push(Ok::<_, Infallible>(
                    Event::default()
                        .event("message_update")
                        .data(data.to_string()),
                ));
            }
        }
        events.extend(f.sample());
        Some((futures::stream::iter(events), f))
    });
    use futures::StreamExt;
    // The stream ends with the server: a graceful shutdown waits for open responses.
    let mut shutdown = f_shutdown;
    let ends = async move {
        if shutdown.wait_for(|down| *down).await.is_err() {
            tracing::debug!("shutdown flag dropped");
        }
    };
    Sse::new(stream.flatten().take_until(Box::pin(ends)))
        .keep_alive(KeepAlive::default())
        .into_response()
}

/// A `status_change` event if the status is not `last` any more (which it becomes).
fn status_change(last: &mut Option<&'static str>, app: &App, h: &SessionHandle) -> Option<Event> {
    let now = status(app, h);
    if *last == Some(now) {
        return None;
    }
    *last = Some(now);
    Some(status_event(h, now))
}

/// A `status_change` event saying `status`.
fn status_event(h: &SessionHandle, status: &str) -> Event {
    let data = serde_json::json!({"agent_type": agent_type(h), "status": status});
    Event::default()
        .event("status_change")
        .data(data.to_string())
}

/// Whether a session event starts the agent working (a hook such as UserPromptSubmit or
/// PreToolUse, from any state).
fn starts_work(kind: &corral_actors::EventKind) -> bool {
    match kind {
        corral_actors::EventKind::Hook { name, payload, .. } => {
            Attention::Idle.after(name, payload) == Some(Attention::Working)
        }
        _ => false,
    }
}

/// `GET /agentapi/{key}/openapi.json`: the API this module serves, in agentapi's shapes.
pub async fn openapi(Readable(_): Readable) -> Response {
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        include_str!("agentapi.openapi.json"),
    )
        .into_response()
}
