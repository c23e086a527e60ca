//! Agent profiles: what corral adds to a session when it knows which agent runs in it.
//!
//! `claude` (Claude Code): a per-session `--settings <file>` whose hooks run `corral hook` by the
//! absolute path of the running corral binary, so every hook event reaches corral with the
//! session's own token (the user's global settings are never edited); and a resume template:
//! a restart after a crash runs `claude --resume <agent session id>` with the id captured from
//! the last SessionStart hook — once that conversation exists (its transcript, which the hook
//! names and Claude writes at the first prompt; before, the agent starts afresh). Claude Code
//! fires no hook for an interrupted turn, for a question answered in its own dialog, nor for a
//! panel it opens: [`screen_settled`] and [`shows_dialog`] read its screen for those. In stream-json mode it also adds the flags of Claude's structured
//! protocol (see `stream_json`), whose events [`record_stream`] applies.

use std::path::{Path, PathBuf};

use serde_json::json;

pub use crate::attention::{Attention, PermissionAsk};
pub use crate::questions::Left;

use crate::event::{EventKind, SessionEvent};
use crate::questions;
use crate::session::shared::{SessionShared, Status};
use crate::spec::Mode;
use crate::stream_json::AgentEvent;

mod profile;
mod resume;
mod screen;
#[cfg(test)]
mod tests;

pub use profile::*;
pub use resume::*;
pub use screen::*;

/// The hook events the claude profile subscribes to: every event the installed Claude Code
/// (2.1) documents, but `WorktreeCreate`/`WorktreeRemove`, whose hooks *replace* Claude's own
/// worktree handling. Events not listed here that a later version sends are journaled as they
/// come; none of them changes the attention state unless named in [`Attention::after`].
pub const CLAUDE_HOOK_EVENTS: &[&str] = &[
    "SessionStart",
    "SessionEnd",
    "Setup",
    "UserPromptSubmit",
    "UserPromptExpansion",
    "PreToolUse",
    "PermissionRequest",
    "PermissionDenied",
    "PostToolUse",
    "PostToolUseFailure",
    "PostToolBatch",
    "Notification",
    "Stop",
    "StopFailure",
    "SubagentStart",
    "SubagentStop",
    "PreCompact",
    "PostCompact",
    "TeammateIdle",
    "TaskCreated",
    "TaskCompleted",
    "Elicitation",
    "ElicitationResult",
    "ConfigChange",
    "InstructionsLoaded",
    "CwdChanged",
    "FileChanged",
    "MessageDisplay",
];

/// How long a PermissionRequest hook waits for an answer from the API by default before it
/// returns no decision (Claude then shows its own prompt in the terminal); the server's
/// `agents.permission_wait_secs` sets it, up to [`PERMISSION_WAIT_MAX`].
pub const PERMISSION_WAIT: std::time::Duration = std::time::Duration::from_secs(120);

/// The longest permission wait a server may be configured with: the hook command and Claude's
/// hook timeout are set to outlast it.
pub const PERMISSION_WAIT_MAX: std::time::Duration = std::time::Duration::from_secs(600);

/// Records an agent hook event of `session` (one canonical model) and applies what it means
/// (see [`apply_hook`]). The session's own state machine knows nothing of agents: this module is
/// the only place hook names mean something.
pub fn record_hook(
    session: &SessionShared,
    name: &str,
    payload: serde_json::Value,
    ran_at: Option<std::time::SystemTime>,
) -> SessionEvent {
    let overridden = {
        let mut s = session.status.write();
        let overridden = overridden_deny(&mut s, name, &payload);
        apply_hook(&mut s, session.mode, name, &payload);
        overridden
    };
    let event = session.emit(EventKind::Hook {
        name: name.to_string(),
        payload,
        ran_at,
    });
    if let Some(request_id) = overridden {
        record_stream(session, AgentEvent::PermissionOverridden { request_id });
    }
    event
}

/// Journals hook event `name` without applying it: a previous process's, late (see the
/// server's hook route).
pub fn journal_hook(
    session: &SessionShared,
    name: &str,
    payload: serde_json::Value,
    ran_at: Option<std::time::SystemTime>,
) -> SessionEvent {
    session.emit(EventKind::Hook {
        name: name.to_string(),
        payload,
        ran_at,
    })
}

/// A deny answered through corral for question `id` (`tool` with `input`): if the tool runs
/// anyway this turn, the agent's own dialog had decided first ([`record_hook`] says so).
pub fn note_denied(session: &SessionShared, id: &str, tool: &str, input: &serde_json::Value) {
    session.status.write().denied = Some((id.to_string(), tool.to_string(), input.clone()));
}

/// The id of the question denied through corral whose tool this hook says ran (PostToolUse or
/// PostToolUseFailure of the same tool and input); the denial is forgotten with the turn.
fn overridden_deny(s: &mut Status, name: &str, payload: &serde_json::Value) -> Option<String> {
    match name {
        "PostToolUse" | "PostToolUseFailure" => {
            let (_, tool, input) = s.denied.as_ref()?;
            let same = payload.get("tool_name").and_then(|v| v.as_str()) == Some(tool.as_str())
                && payload.get("tool_input") == Some(input);
            if !same {
                return None;
            }
            s.denied.take().map(|(id, _, _)| id)
        }
        "UserPromptSubmit" | "Stop" | "StopFailure" | "SessionEnd" => {
            s.denied = None;
            None
        }
        _ => None,
    }
}

/// How long a prompt typed into a waiting terminal agent keeps it `working` with no event
/// following (its UserPromptSubmit hook comes within a second or two of the Enter, which itself
/// may wait up to 2 s for the program to take the paste): past it the prompt started no turn.
pub const PROMPT_SETTLE: std::time::Duration = std::time::Duration::from_secs(8);

/// A prompt was typed into terminal agent `session`: recorded (and the agent is `working`) if
/// it waited; the event's sequence number then (for [`prompt_settled`]).
pub(crate) fn prompted(session: &SessionShared) -> Option<u64> {
    if session.mode != Mode::Pty || session.status.read().attention != Some(Attention::Idle) {
        return None;
    }
    Some(record_stream(session, AgentEvent::Prompted).seq)
}

/// [`PROMPT_SETTLE`] after a prompt recorded as event `seq`: if nothing followed it and the
/// agent is still `working` on its account, it started no turn and the agent waits again.
pub(crate) fn prompt_settled(session: &SessionShared, seq: u64) {
    if session.last_seq() == seq && session.status.read().attention == Some(Attention::Working) {
        record_stream(session, AgentEvent::NoTurn);
    }
}

/// Records a structured agent's typed event (see `stream_json`) and applies what it means (see
/// [`apply_stream`]).
pub fn record_stream(session: &SessionShared, event: AgentEvent) -> SessionEvent {
    apply_stream(&mut session.status.write(), &event);
    session.emit(EventKind::Agent(event))
}

/// Rebuilds an adopted session's agent state (attention, the open question) from its last
/// journaled events, before its actor starts: the agent kept running while no server was there,
/// and what it waits for is what those events said last. (A terminal agent's question then
/// waits in its own dialog: the hook call that held it ended with the old server.)
pub(crate) fn replay(session: &SessionShared, events: &[SessionEvent]) {
    replay_into(&mut session.status.write(), session.mode, events);
}

/// [`replay`] on a session's status. A terminal agent's questions are held by hook calls under
/// ids the journal names only as they close (`permission_answered`, `permission_cancelled`,
/// `answered_in_dialog`): each PermissionRequest is held here under a stand-in id, as its call
/// held it ([`hold_question`]), and a close that names an id not open closes the oldest
/// stand-in, the way it left — so after an answer, an Esc in the agent's dialog or a wait that
/// ran out the next server's state is the one this server's was.
fn replay_into(s: &mut Status, mode: Mode, events: &[SessionEvent]) {
    let terminal = mode != Mode::StreamJson;
    // The id a close names, or the oldest stand-in's if that one is not open.
    let named = |s: &Status, id: &str| -> String {
        let open = |q: &PermissionAsk| q.id.as_deref() == Some(id);
        if s.permission.iter().chain(s.queued.iter()).any(open) {
            return id.to_string();
        }
        s.permission
            .iter()
            .chain(s.queued.iter())
            .filter_map(|q| q.id.as_deref())
            .find(|q| q.starts_with(STAND_IN))
            .unwrap_or(id)
            .to_string()
    };
    for event in events {
        match &event.kind {
            EventKind::Hook { name, payload, .. } => {
                apply_hook(s, mode, name, payload);
                if terminal && name == "PermissionRequest" {
                    let id = format!("{STAND_IN}{}", event.seq);
                    hold(s, hook_question(payload), id);
                }
            }
            EventKind::Agent(AgentEvent::PermissionCancelled {
                request_id,
                to_dialog,
            }) if terminal => {
                let id = named(s, request_id);
                let left = if *to_dialog {
                    Left::ToTerminal
                } else {
                    Left::Settled
                };
                questions::close(s, &id, left);
            }
            EventKind::Agent(AgentEvent::PermissionAnswered { request_id, .. }) if terminal => {
                let id = named(s, request_id);
                questions::close(s, &id, Left::Answered);
            }
            EventKind::Agent(AgentEvent::AnsweredInDialog { questions: held }) if terminal => {
                let held = held.iter().map(|id| named(s, id)).collect();
                apply_stream(s, &AgentEvent::AnsweredInDialog { questions: held });
            }
            EventKind::Agent(e) => apply_stream(s, e),
            // A server took the session back: the hook calls that held its questions ended
            // with the last one (killed, they journaled nothing), and the questions went to
            // the agent's own dialog, as at the end of this replay. Held on here, their
            // stand-ins kept every later hook from moving the state (an agent idle after a
            // Stop came back asking, after each later crash).
            EventKind::Recovery { .. } => questions::leave_held_to_terminal(s),
            _ => {}
        }
    }
    // Nothing outside can answer a hook-asked question any more: it is the agent's own
    // dialog's (a structured agent's control request stays open: its answer goes on stdin).
    questions::leave_held_to_terminal(s);
    // What the events said is old news: the agent has been in this state since before this
    // server (an upgrade's agents are not fresh from a turn, `running` for a moment).
    s.attention_at = 0;
    // A prompt the server died before it could settle: settled by the next one.
    s.prompt_pending = events
        .last()
        .is_some_and(|e| matches!(e.kind, EventKind::Agent(AgentEvent::Prompted)));
}

/// The prefix of the ids [`replay_into`] holds a terminal agent's questions under.
const STAND_IN: &str = "replayed-";

/// What a PermissionRequest hook asks: the tool and its input (no id yet: the hook call that
/// holds it gives it one, see [`hold_question`]).
pub fn hook_question(payload: &serde_json::Value) -> PermissionAsk {
    PermissionAsk {
        id: None,
        tool: payload
            .get("tool_name")
            .and_then(|v| v.as_str())
            .unwrap_or("")
            .to_string(),
        input: payload.get("tool_input").cloned().unwrap_or_default(),
        request_id: None,
    }
}

/// What a hook means: SessionStart rebinds the agent session id (it changes on
/// clear/compact/resume); every event named in [`Attention::after`] moves the attention state;
/// a PermissionRequest records the tool and input asked for. While a hook call holds a
/// question, the agent waits for that call whatever else its hooks say (a tool running in
/// parallel, a reminder Notification): the questions stay open until their calls end.
fn apply_hook(s: &mut Status, mode: Mode, name: &str, payload: &serde_json::Value) {
    if name == "SessionStart"
        && let Some(id) = payload.get("session_id").and_then(|v| v.as_str())
    {
        s.agent_session_id = Some(id.to_string());
        // Where the conversation will be kept: Claude writes it at the first prompt, and a
        // restart resumes it only once it exists.
        s.agent_transcript = payload
            .get("transcript_path")
            .and_then(|v| v.as_str())
            .map(str::to_string);
        s.agent_prompted = false;
        // A conversation begins (not a resume, nor a compaction of the same one): nothing
        // done in it yet.
        if matches!(
            payload.get("source").and_then(|v| v.as_str()),
            Some("startup" | "clear") | None
        ) {
            s.fresh = true;
        }
    }
    // A prompt of this agent session: it has a conversation, if its process lives to write it
    // down (a restart that finds none says so).
    if name == "UserPromptSubmit" {
        s.agent_prompted = true;
    }
    let current = s.attention.unwrap_or(Attention::Starting);
    // A structured session's stream says all the rest (prompts, tool calls, questions with the
    // id the answer needs, the turn's end) in order; its hooks run beside it, so a hook read
    // after a later line would move the state back (a late PermissionRequest would reopen an
    // answered question, a late PostToolUse undo the turn's end). Only its start and end count.
    let structured_skip =
        mode == Mode::StreamJson && !matches!(name, "SessionStart" | "SessionEnd");
    let Some(next) = current.after(name, payload).filter(|_| !structured_skip) else {
        return;
    };
    if next == Attention::Exited {
        questions::clear(s);
    } else if questions::any_open(s) {
        return;
    }
    s.set_attention(next);
    // A question with nothing to answer it from outside yet (its hook call holds it next); a
    // Notification that asks names no tool: its question is in the agent's own dialog.
    s.permission = (name == "PermissionRequest").then(|| hook_question(payload));
}

/// What a structured agent's event means: `init` binds the agent session id; a permission
/// request is `needs_permission` with its request id, until it is answered or withdrawn (more
/// than one can be open: see `questions`); a turn's end is `idle`; a user message, a tool call
/// or the agent's text is `working`, unless a question is open (the agent waits for its answer
/// whatever else is sent meanwhile).
fn apply_stream(s: &mut Status, event: &AgentEvent) {
    let next = match event {
        AgentEvent::Init {
            agent_session_id, ..
        } => {
            s.agent_session_id = Some(agent_session_id.clone());
            // Claude says `init` as each turn starts: one that starts while the agent waits
            // is a prompt queued during the last turn (its `result` came a moment ago).
            (s.attention == Some(Attention::Idle)).then_some(Attention::Working)
        }
        AgentEvent::PermissionRequest {
            request_id,
            tool,
            input,
        } => {
            let ask = PermissionAsk {
                id: Some(request_id.clone()),
                tool: tool.clone(),
                input: input.clone(),
                request_id: Some(request_id.clone()),
            };
            if !questions::open(s, ask) {
                tracing::error!(
                    request_id,
                    "more than {} questions open: not shown",
                    questions::MAX_QUESTIONS
                );
            }
            None
        }
        AgentEvent::PermissionCancelled { request_id, .. }
        | AgentEvent::PermissionAnswered { request_id, .. } => {
            questions::close(s, request_id, Left::Answered);
            None
        }
        AgentEvent::Result { .. } => {
            questions::clear(s);
            Some(Attention::Idle)
        }
        AgentEvent::Message { .. } | AgentEvent::ToolCall { .. } => {
            // A prompt sent while a question is open waits in the agent's input; text or a
            // tool call then is the question's context (the call comes before its permission
            // request): nothing changes.
            (s.permission.is_none()).then_some(Attention::Working)
        }
        // Only from waiting: a prompt typed while the agent asks or works changes nothing.
        AgentEvent::Prompted => {
            (s.attention == Some(Attention::Idle)).then_some(Attention::Working)
        }
        AgentEvent::NoTurn | AgentEvent::Interrupted => {
            (s.attention == Some(Attention::Working)).then_some(Attention::Idle)
        }
        AgentEvent::AnsweredInDialog { questions: held } => {
            for id in held {
                questions::close(s, id, Left::InDialog);
            }
            // A question gone to the dialog (no hook call held it) closes here too.
            (s.attention == Some(Attention::NeedsPermission) && s.permission.is_none())
                .then_some(Attention::Working)
        }
        AgentEvent::AsksAtStart { line } => {
            if s.attention == Some(Attention::Starting) {
                s.asks_at_start = Some(line.clone());
            }
            None
        }
        AgentEvent::ToolResult { .. }
        | AgentEvent::ControlRequest { .. }
        | AgentEvent::PermissionOverridden { .. } => None,
    };
    if let Some(next) = next {
        s.set_attention(next);
    }
}

/// Closes the held questions hook `name` says were settled in the agent's own dialog, and
/// returns their ids (their hook calls are then told no decision). Claude may keep the hook
/// call of a question answered in its dialog running until it times out, so its later hooks
/// say it: PostToolUse, PostToolUseFailure or PermissionDenied of the same tool and input (the
/// tool ran, failed, or was refused), or the turn's end or a new prompt (Stop, StopFailure,
/// UserPromptSubmit, SessionEnd: nothing of the turn waits any more).
pub fn settle_by_hook(
    session: &SessionShared,
    name: &str,
    payload: &serde_json::Value,
) -> Vec<String> {
    if session.mode == Mode::StreamJson {
        return Vec::new();
    }
    // The questions asked for the tool and input this hook names.
    let same_tool = |s: &Status| {
        let ran = hook_question(payload);
        questions::held_matching(s, |q| q.tool == ran.tool && q.input == ran.input)
    };
    let mut s = session.status.write();
    let (ids, left) = match name {
        // The tool ran: the agent works on (never `idle` in between, which a notifier reading
        // the state at the question's close would take for the turn's end).
        "PostToolUse" | "PostToolUseFailure" => (same_tool(&s), Left::InDialog),
        "PermissionDenied" => (same_tool(&s), Left::Settled),
        "Stop" | "StopFailure" | "UserPromptSubmit" | "SessionEnd" => {
            (questions::held_matching(&s, |_| true), Left::Settled)
        }
        _ => (Vec::new(), Left::Settled),
    };
    for id in &ids {
        questions::close(&mut s, id, left);
    }
    ids
}

/// Holds question `ask` of a terminal agent under `id` while its PermissionRequest hook call
/// waits for an answer: shown, or queued behind the open ones. False when too many are open
/// (the call then returns no decision at once).
pub fn hold_question(session: &SessionShared, ask: PermissionAsk, id: String) -> bool {
    hold(&mut session.status.write(), ask, id)
}

/// [`hold_question`] on a session's status.
fn hold(s: &mut Status, mut ask: PermissionAsk, id: String) -> bool {
    ask.id = Some(id);
    // The hook's own record of it (no id) gives way to the held one.
    if s.permission.as_ref().is_some_and(|p| p.id.is_none()) {
        s.permission = None;
    }
    questions::open(s, ask)
}

/// Whether question `id` is the one shown (not queued behind others, not closed).
pub fn is_shown(session: &SessionShared, id: &str) -> bool {
    let s = session.status.read();
    s.permission.as_ref().and_then(|p| p.id.as_deref()) == Some(id)
}

/// Closes question `id`, which left as `how` (see [`Left`]); false if it was not open.
pub fn close_question(session: &SessionShared, id: &str, how: Left) -> bool {
    questions::close(&mut session.status.write(), id, how)
}

/// The open question an answer naming `id` (or, without one, the shown question) is for.
pub fn question(session: &SessionShared, id: Option<&str>) -> Option<PermissionAsk> {
    let s = session.status.read();
    match id {
        None => s.permission.clone(),
        Some(id) => s
            .permission
            .iter()
            .chain(s.queued.iter())
            .find(|q| q.id.as_deref() == Some(id))
            .cloned(),
    }
}

/// The question of `session` closed last, if that was within `within`: its id and how it
/// left.
pub fn last_closed(
    session: &SessionShared,
    within: std::time::Duration,
) -> Option<(String, crate::questions::Left)> {
    let s = session.status.read();
    let (id, how, at) = s.closed.as_ref()?;
    let age = crate::time::mono_ms().saturating_sub(*at);
    (age < within.as_millis() as u64).then(|| (id.clone(), *how))
}

/// Takes the open question `id` of a structured session (one with a request id): whoever
/// takes it answers it, so two answers never reach the agent. [`reopen`] puts it back when the
/// answer could not be delivered.
pub fn take_question(session: &SessionShared, id: &str) -> Option<PermissionAsk> {
    let mut s = session.status.write();
    // Only a structured agent's question is taken here (a hook-held one is its call's).
    let structured = s
        .permission
        .iter()
        .chain(s.queued.iter())
        .any(|q| q.id.as_deref() == Some(id) && q.request_id.is_some());
    if !structured {
        return None;
    }
    let ask = questions::take(&mut s, id)?;
    if s.permission.is_none() {
        s.set_attention(Attention::Working);
    }
    Some(ask)
}

/// Puts back a question taken by [`take_question`] whose answer could not be written.
pub fn reopen(session: &SessionShared, ask: PermissionAsk) {
    questions::put_back(&mut session.status.write(), ask);
}
