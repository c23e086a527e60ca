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

/// When a terminal agent's screen is looked at after a key that may have changed what it does
/// ([`look_after_key`]; Claude Code repaints within a few hundred milliseconds, a busy machine
/// may take longer): a turn is over once the screen stops saying the agent works
/// ([`WORKING_MARK`]), a question is answered once its dialog is gone. Past the last check the
/// screen still said so: the key did not end the turn (a dialog took it, or Esc cleared the
/// input box) or did not answer, and the agent's next hook says what it does.
pub const LOOKS: [std::time::Duration; 4] = [
    std::time::Duration::from_millis(300),
    std::time::Duration::from_millis(700),
    std::time::Duration::from_millis(1000),
    std::time::Duration::from_millis(2000),
];

/// What Claude Code's screen says while a turn runs (its footer, or its spinner line in older
/// versions: "esc to interrupt"); compared without case.
pub const WORKING_MARK: &str = "esc to interrupt";

/// What the foot of a Claude Code dialog or panel says (its permission dialog and the panels of
/// `/cost`, `/model`, `/status`: "Esc to cancel"; `/config`, `/agents`: "Esc to close" or
/// "Esc to exit"); compared without case. ("Esc to interrupt" is its working screen, which
/// takes a prompt into its queue.)
pub const DIALOG_MARKS: [&str; 4] = [
    "esc to cancel",
    "esc to close",
    "esc to exit",
    "esc to go back",
];

/// Whether a terminal agent's screen (as text) shows a dialog at its foot (one of
/// [`DIALOG_MARKS`] in its last three lines that are not blank): an Enter typed now answers it.
pub fn shows_dialog(screen: &str) -> bool {
    screen
        .lines()
        .rev()
        .filter(|l| !l.trim().is_empty())
        .take(3)
        .map(str::to_lowercase)
        .any(|l| DIALOG_MARKS.iter().any(|m| l.contains(m)))
}

/// The text waiting in a terminal agent's input box (Claude Code's: the lines between the last
/// two rules of its screen, the first one after its `❯`), if any. After an interrupt before it
/// answered, Claude puts the prompt back there, and a prompt pasted then is added to it (two
/// prompts sent as one).
pub fn input_draft(screen: &str) -> Option<String> {
    let lines: Vec<&str> = screen.lines().collect();
    let rule = |l: &str| {
        let t = l.trim();
        t.chars().count() >= 8 && t.chars().all(|c| c == '─')
    };
    let mut rules = lines
        .iter()
        .enumerate()
        .rev()
        .filter(|(_, l)| rule(l))
        .map(|(i, _)| i);
    let (end, start) = (rules.next()?, rules.next()?);
    let block = &lines[start + 1..end];
    let first = block.first()?.trim_start().strip_prefix('❯')?;
    let text: Vec<&str> = std::iter::once(first)
        .chain(block[1..].iter().copied())
        .map(|l| l.trim_matches(|c: char| c.is_whitespace() || c == '\u{a0}'))
        .filter(|l| !l.is_empty())
        .collect();
    (!text.is_empty()).then(|| text.join(" "))
}

/// Whether `bytes`, typed into a terminal agent, is an interrupt key: Esc (a lone ESC byte, or
/// CSI 27 u when the terminal speaks the kitty keyboard protocol Claude Code asks for) or
/// Ctrl-C (ETX, or CSI 99;5 u).
pub fn interrupt_key(bytes: &[u8]) -> bool {
    matches!(
        bytes,
        b"\x1b" | b"\x03" | b"\x1b[27u" | b"\x1b[27;1u" | b"\x1b[99;5u"
    )
}

/// How long an agent must have been working before an interrupt key typed into it is looked
/// after: right after a prompt Claude Code has not drawn its working screen yet, and a key then
/// (Ctrl-C as the prompt goes in) may not end the turn — the screen, read at once, would say
/// it did (6 of 7 such keys were taken for an interrupt while Claude worked on).
pub const INTERRUPT_AFTER: std::time::Duration = std::time::Duration::from_millis(1500);

/// Whether an interrupt key typed into `session` now is worth looking at its screen for: a
/// terminal agent that works, and has for [`INTERRUPT_AFTER`] (no hook says an interrupted
/// turn ended).
fn interrupt_typed(session: &SessionShared, bytes: &[u8]) -> bool {
    session.mode == Mode::Pty
        && interrupt_key(bytes)
        && session.status.read().attention == Some(Attention::Working)
        && session
            .attention_ms()
            // None: since before this server (see `replay`), long enough.
            .is_none_or(|ms| ms >= INTERRUPT_AFTER.as_millis() as u64)
}

/// Whether a terminal agent asks a question in its own dialog that a key can answer there: it
/// needs a permission, and the question is held by a hook call waiting for an answer from
/// outside or has gone to its dialog (nobody answered in time). Claude Code fires no hook when
/// its dialog is answered, and keeps the hook call open until the tool has run: the session
/// said `needs_permission` (the page offered Allow and Deny) all the while the allowed tool ran.
fn asks_in_dialog(s: &Status) -> bool {
    s.attention == Some(Attention::NeedsPermission)
        && s.permission
            .as_ref()
            .is_none_or(|p| p.id.is_some() && p.request_id.is_none())
}

/// Whether a key typed into `session` now is worth looking at its screen for ([`LOOKS`]): an
/// interrupt key into a working terminal agent ([`interrupt_typed`]), or any key into one that
/// asks in its own dialog ([`asks_in_dialog`]: Enter, a digit or Esc answer it there).
pub(crate) fn look_after_key(session: &SessionShared, bytes: &[u8]) -> bool {
    interrupt_typed(session, bytes)
        || (session.mode == Mode::Pty && asks_in_dialog(&session.status.read()))
}

/// Whether the screen is still worth looking at: the agent works (a turn may end) or asks in
/// its dialog (it may be answered).
pub(crate) fn worth_looking(session: &SessionShared) -> bool {
    let s = session.status.read();
    s.attention == Some(Attention::Working) || asks_in_dialog(&s)
}

/// The screen of a terminal agent a key was typed into, `screen` as text, tells what the agent
/// does now. Asking in its dialog, and the dialog is gone: the question was answered there —
/// the agent works on (journaled `answered_in_dialog`; a "no" or Esc ends its turn, which the
/// next look sees). Working, and the screen no longer says so: the turn was interrupted (the
/// agent waits again). Whether the looks are over.
pub(crate) fn screen_settled(session: &SessionShared, screen: &str) -> bool {
    let held = {
        let s = session.status.read();
        if !asks_in_dialog(&s) {
            drop(s);
            return interrupt_settled(session, screen);
        }
        if shows_dialog(screen) {
            return false;
        }
        questions::held_matching(&s, |_| true)
    };
    record_stream(session, AgentEvent::AnsweredInDialog { questions: held });
    // Whether it works, or the answer ended its turn: the next look says.
    false
}

/// Output quiet this long makes an agent that has not started (no hook yet) one that waits on
/// its screen: longer than a start's pauses (Claude Code draws its first screen within ~2 s).
pub const STARTING_QUIET: std::time::Duration = std::time::Duration::from_secs(5);

/// Most characters kept of what a start screen asks.
pub const START_LINE_MAX: usize = 160;

/// An agent that has said nothing yet (no hook) and whose output has been still for
/// [`STARTING_QUIET`] waits on its screen, `screen` as text, for a key: Claude Code runs no hook
/// before its folder is trusted, so its trust screen is seen only here. Records what it asks
/// (`AsksAtStart`) when that changed. Whether the agent still has not started (look again).
pub(crate) fn start_look(session: &SessionShared, screen: &str) -> bool {
    let asked = {
        let s = session.status.read();
        if s.attention != Some(Attention::Starting) {
            return false;
        }
        s.asks_at_start.clone()
    };
    let Some(line) = start_question(screen) else {
        return true;
    };
    if asked.as_deref() != Some(line.as_str()) {
        record_stream(session, AgentEvent::AsksAtStart { line });
    }
    true
}

/// What a start screen asks: the first line that asks something, up to its `?` (Claude Code
/// 2.1: "Quick safety check: Is this a project you created or one you trust? (Like your
/// own…"), else its last line; box drawing is no text; at most [`START_LINE_MAX`] characters.
fn start_question(screen: &str) -> Option<String> {
    let frame = |c: char| c.is_whitespace() || ('\u{2500}'..='\u{257f}').contains(&c);
    let lines = || {
        screen
            .lines()
            .map(|l| l.trim_matches(frame))
            .filter(|l| !l.is_empty())
    };
    let line = lines()
        .find_map(|l| l.find('?').map(|at| &l[..=at]))
        .or_else(|| lines().next_back())?;
    Some(line.chars().take(START_LINE_MAX).collect())
}

/// Working, and the screen no longer says so: the turn was interrupted (recorded: the agent
/// waits again). Whether it was.
fn interrupt_settled(session: &SessionShared, screen: &str) -> bool {
    if session.status.read().attention != Some(Attention::Working)
        || screen.to_lowercase().contains(WORKING_MARK)
    {
        return false;
    }
    record_stream(session, AgentEvent::Interrupted);
    true
}

/// Whether the transcript Claude Code keeps at `path` holds a conversation it can resume: a user
/// or an assistant message. Before the first prompt there is no file; after only `/exit` or a
/// command that printed something, a file of metadata lines, and `--resume` of either fails
/// at once ("No conversation found"), every restart again. Read up to its first 1 MiB (a
/// conversation's first message comes within its first lines).
pub fn has_conversation(path: &Path) -> bool {
    use std::io::Read;
    let Ok(file) = std::fs::File::open(path) else {
        return false;
    };
    let mut head = Vec::new();
    if let Err(e) = file.take(1 << 20).read_to_end(&mut head) {
        tracing::warn!(path = %path.display(), error = %e, "the agent's transcript is unreadable: not resumed");
        return false;
    }
    String::from_utf8_lossy(&head)
        .lines()
        .any(|l| l.contains(r#""type":"user""#) || l.contains(r#""type":"assistant""#))
}

/// The longest a graceful stop waits for an agent to write down its last prompt
/// ([`until_written`]).
pub const WRITTEN_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// A stop this soon after the agent's state last changed may come before its transcript is
/// written; later ones do not wait.
pub const WRITTEN_RECENTLY: std::time::Duration = std::time::Duration::from_secs(10);

/// An agent stopped gracefully right after a turn (its state changed within
/// [`WRITTEN_RECENTLY`]) whose prompt its transcript does not hold yet gets up to
/// [`WRITTEN_WAIT`] to write it down first: Claude Code writes its transcript a moment
/// after the turn, and a restart 12 ms after a Stop hook found nothing to resume (the agent
/// started afresh, its conversation lost).
pub(crate) async fn until_written(shared: &SessionShared) {
    let recent = shared
        .attention_ms()
        .is_some_and(|ms| ms < WRITTEN_RECENTLY.as_millis() as u64);
    let path = {
        let s = shared.status.read();
        s.agent_transcript
            .clone()
            .filter(|_| s.agent_prompted && recent)
    };
    let Some(path) = path else {
        return;
    };
    let deadline = tokio::time::Instant::now() + WRITTEN_WAIT;
    loop {
        let p = path.clone();
        let written =
            tokio::task::spawn_blocking(move || has_conversation(std::path::Path::new(&p)))
                .await
                .unwrap_or(true);
        if written {
            return;
        }
        if tokio::time::Instant::now() >= deadline {
            tracing::info!(session = %shared.id, "the agent did not write its conversation down in time; stopping it");
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
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
    let mut s = session.status.write();
    for event in events {
        match &event.kind {
            EventKind::Hook { name, payload, .. } => {
                apply_hook(&mut s, session.mode, name, payload)
            }
            EventKind::Agent(e) => apply_stream(&mut s, e),
            _ => {}
        }
    }
    // Nothing outside can answer a hook-asked question any more: it is the agent's own
    // dialog's (a structured agent's control request stays open: its answer goes on stdin).
    questions::leave_held_to_terminal(&mut s);
    // What the events said is old news: the agent has been in this state since before this
    // server (an upgrade's agents are not fresh from a turn, `running` for a moment).
    s.attention_at = 0;
    // A prompt the server died before it could settle: settled by the next one.
    s.prompt_pending = events
        .last()
        .is_some_and(|e| matches!(e.kind, EventKind::Agent(AgentEvent::Prompted)));
}

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
        AgentEvent::PermissionCancelled { request_id }
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
pub fn hold_question(session: &SessionShared, mut ask: PermissionAsk, id: String) -> bool {
    ask.id = Some(id);
    let mut s = session.status.write();
    // The hook's own record of it (no id) gives way to the held one.
    if s.permission.as_ref().is_some_and(|p| p.id.is_none()) {
        s.permission = None;
    }
    questions::open(&mut s, ask)
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

/// What the claude profile adds in stream-json mode: print mode, stream-json both ways (which
/// needs `--verbose`), and permission requests as control requests on stdout.
pub const STREAM_JSON_FLAGS: &[&str] = &[
    "-p",
    "--input-format",
    "stream-json",
    "--output-format",
    "stream-json",
    "--verbose",
    "--permission-prompt-tool",
    "stdio",
];

/// A known agent profile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    /// Claude Code.
    Claude,
}

impl Profile {
    /// The profile named in a spec, if known; an unknown name is an error naming it.
    pub fn parse(name: Option<&str>) -> Result<Option<Profile>, crate::spec::SpecError> {
        match name {
            None => Ok(None),
            Some("claude") => Ok(Some(Profile::Claude)),
            Some(other) => Err(crate::spec::SpecError::UnknownAgent(other.to_string())),
        }
    }

    /// Writes the profile's files into the session's private dir and returns the argv to run:
    /// `argv` with `--settings <file>` after the program, on a restart with a known agent
    /// session id `--resume <id>` too, and in stream-json mode the flags of the structured
    /// protocol ([`STREAM_JSON_FLAGS`]; those already given are not repeated). An empty `argv`
    /// is an `InvalidInput` error.
    pub fn prepare(
        self,
        argv: &[String],
        mode: Mode,
        private_dir: &Path,
        hook_command: &[String],
        resume: Option<&str>,
    ) -> std::io::Result<Vec<String>> {
        match self {
            Profile::Claude => {
                let Some(program) = argv.first() else {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::InvalidInput,
                        "an agent profile needs a program to run (argv is empty)",
                    ));
                };
                let settings = write_claude_settings(private_dir, hook_command)?;
                let mut out = Vec::with_capacity(argv.len() + 4);
                out.push(program.clone());
                out.push("--settings".into());
                out.push(settings.display().to_string());
                if let Some(id) = resume
                    && !argv.iter().any(|a| a == "--resume" || a == "--continue")
                {
                    out.push("--resume".into());
                    out.push(id.to_string());
                }
                if mode == Mode::StreamJson {
                    let mut flags = STREAM_JSON_FLAGS.iter();
                    while let Some(flag) = flags.next() {
                        let value = if flag.starts_with("--") && !matches!(*flag, "--verbose") {
                            flags.next()
                        } else {
                            None
                        };
                        if !argv.iter().any(|a| a == flag) {
                            out.push(flag.to_string());
                            out.extend(value.map(|v| v.to_string()));
                        }
                    }
                }
                out.extend_from_slice(&argv[1..]);
                Ok(out)
            }
        }
    }
}

/// Writes `claude-settings.json` with a command hook per event; returns its path.
fn write_claude_settings(dir: &Path, hook_command: &[String]) -> std::io::Result<PathBuf> {
    let command = hook_command
        .iter()
        .map(|a| shell_quote(a))
        .collect::<Vec<_>>()
        .join(" ");
    let mut hooks = serde_json::Map::new();
    for event in CLAUDE_HOOK_EVENTS {
        // A PermissionRequest hook waits for an answer from the API (bounded); the others
        // return at once.
        let timeout = if *event == "PermissionRequest" {
            PERMISSION_WAIT_MAX.as_secs() + 10
        } else {
            5
        };
        let entry = json!([{ "matcher": "*", "hooks": [{ "type": "command", "command": command, "timeout": timeout }] }]);
        hooks.insert((*event).to_string(), entry);
    }
    let path = dir.join("claude-settings.json");
    let text =
        serde_json::to_vec_pretty(&json!({ "hooks": hooks })).map_err(std::io::Error::other)?;
    // Owner-only like everything in the session's private dir.
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&path)
        .and_then(|mut f| std::io::Write::write_all(&mut f, &text))?;
    Ok(path)
}

/// Quotes one argument for the shell Claude Code runs hook commands with. The only input is the
/// path of corral's own binary (never user input); quoting keeps spaces in it safe.
fn shell_quote(s: &str) -> String {
    if s.chars()
        .all(|c| c.is_ascii_alphanumeric() || "/._-".contains(c))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::shared::Status;

    fn agent_status() -> Status {
        let mut s = Status::new(Default::default(), Some(Attention::Idle));
        s.state = crate::event::SessionState::Running;
        s.pid = Some(1);
        s
    }

    /// A turn's end (`result`).
    fn turn_over() -> AgentEvent {
        AgentEvent::Result {
            subtype: "success".into(),
            is_error: false,
            text: None,
        }
    }

    fn asks(request_id: &str) -> AgentEvent {
        AgentEvent::PermissionRequest {
            request_id: request_id.into(),
            tool: "Bash".into(),
            input: json!({"command": request_id}),
        }
    }

    /// A deny through corral, then the same tool's PostToolUse: the agent's own dialog had
    /// answered first, and the deny's question is named as overridden (once); another tool,
    /// or a turn's end before it, is no such thing.
    #[test]
    fn a_tool_that_ran_after_a_deny_names_the_overridden_question() {
        let mut s = agent_status();
        let input = json!({"command": "touch x"});
        let ran = |input: &serde_json::Value| json!({"tool_name": "Bash", "tool_input": input});
        s.denied = Some(("q1".into(), "Bash".into(), input.clone()));
        assert_eq!(
            overridden_deny(&mut s, "PostToolUse", &ran(&json!({"command": "ls"}))),
            None
        );
        assert_eq!(overridden_deny(&mut s, "PreToolUse", &ran(&input)), None);
        assert_eq!(
            overridden_deny(&mut s, "PostToolUse", &ran(&input)).as_deref(),
            Some("q1")
        );
        assert_eq!(overridden_deny(&mut s, "PostToolUse", &ran(&input)), None);
        s.denied = Some(("q2".into(), "Bash".into(), input.clone()));
        assert_eq!(overridden_deny(&mut s, "Stop", &json!({})), None);
        assert_eq!(
            overridden_deny(&mut s, "PostToolUseFailure", &ran(&input)),
            None
        );
    }

    /// A transcript with a message is a conversation; one of metadata lines only (after `/exit`
    /// as the first prompt) or none at all is not.
    #[test]
    fn a_conversation_is_a_transcript_with_a_message() {
        let dir = tempfile::tempdir().unwrap();
        let meta = dir.path().join("meta.jsonl");
        std::fs::write(
            &meta,
            "{\"type\":\"mode\",\"mode\":\"normal\"}\n{\"type\":\"permission-mode\"}\n",
        )
        .unwrap();
        assert!(!has_conversation(&meta));
        assert!(!has_conversation(&dir.path().join("none.jsonl")));
        let talk = dir.path().join("talk.jsonl");
        std::fs::write(
            &talk,
            "{\"type\":\"mode\"}\n{\"parentUuid\":null,\"type\":\"user\",\"message\":{}}\n",
        )
        .unwrap();
        assert!(has_conversation(&talk));
    }

    /// The input box's text is what lies between the last two rules after the `❯`: none when
    /// it is empty, a restored prompt when there is one (over one line or more).
    #[test]
    fn the_input_box_s_text_is_read_between_its_rules() {
        let rule = "─".repeat(40);
        let empty = format!("● Done.\n\n{rule}\n❯\u{a0}\n{rule}\n  ? for shortcuts\n");
        assert_eq!(input_draft(&empty), None);
        let back =
            format!("❯ first\n  ⎿  Interrupted\n{rule}\n❯ plan:slow please\n{rule}\n   ● high\n");
        assert_eq!(input_draft(&back).as_deref(), Some("plan:slow please"));
        let two = format!("{rule}\n❯ line one\n  line two\n{rule}\n");
        assert_eq!(input_draft(&two).as_deref(), Some("line one line two"));
        assert_eq!(input_draft("no rules here\n❯ text"), None);
    }

    /// A dialog is what the foot of the screen says, not a line further up (an answer that
    /// quotes the words).
    #[test]
    fn a_dialog_is_told_by_the_foot_of_the_screen() {
        let panel =
            "❯ /cost\n Settings  Status  Usage\n\n  Total cost: $0.0003\n\n  Esc to cancel\n\n";
        assert!(shows_dialog(panel));
        let prompt = "● Press Esc to cancel a dialog.\n\n─────\n❯ \n─────\n  ? for shortcuts\n";
        assert!(!shows_dialog(prompt));
        assert!(!shows_dialog(""));
    }

    /// Esc and Ctrl-C, plain or as the kitty keyboard protocol sends them, are interrupt keys;
    /// an Esc that starts another key (an arrow), a paste with Esc in it, other keys are not;
    /// `interrupted` moves only a working agent to idle.
    #[test]
    fn interrupt_keys_and_what_an_interrupt_means() {
        for key in [
            &b"\x1b"[..],
            b"\x03",
            b"\x1b[27u",
            b"\x1b[27;1u",
            b"\x1b[99;5u",
        ] {
            assert!(interrupt_key(key), "{key:?}");
        }
        for key in [&b"\x1b[A"[..], b"\x1bOA", b"a\x1b", b"\x1b\x1b", b"q", b""] {
            assert!(!interrupt_key(key), "{key:?}");
        }
        let mut s = agent_status();
        apply_stream(&mut s, &AgentEvent::Interrupted);
        assert_eq!(s.attention, Some(Attention::Idle));
        s.set_attention(Attention::NeedsPermission);
        apply_stream(&mut s, &AgentEvent::Interrupted);
        assert_eq!(s.attention, Some(Attention::NeedsPermission));
        s.set_attention(Attention::Working);
        apply_stream(&mut s, &AgentEvent::Interrupted);
        assert_eq!(s.attention, Some(Attention::Idle));
    }

    /// A question answered in the agent's own dialog (seen on its screen): the questions hook
    /// calls held close and the agent works; a question gone to the dialog (none held) too; a
    /// structured agent's question is answered on its stdin, never in a dialog.
    #[test]
    fn a_question_answered_in_the_dialog_means_working() {
        let mut s = agent_status();
        let mut held =
            hook_question(&json!({"tool_name": "Bash", "tool_input": {"command": "ls"}}));
        held.id = Some("7".into());
        assert!(questions::open(&mut s, held));
        assert!(asks_in_dialog(&s));
        let answered = |ids: &[&str]| AgentEvent::AnsweredInDialog {
            questions: ids.iter().map(|i| i.to_string()).collect(),
        };
        apply_stream(&mut s, &answered(&["7"]));
        assert_eq!(s.attention, Some(Attention::Working));
        assert!(s.permission.is_none());
        assert!(!asks_in_dialog(&s));
        s.set_attention(Attention::NeedsPermission);
        assert!(asks_in_dialog(&s));
        apply_stream(&mut s, &answered(&[]));
        assert_eq!(s.attention, Some(Attention::Working));
        apply_stream(&mut s, &asks("r1"));
        assert_eq!(s.attention, Some(Attention::NeedsPermission));
        assert!(!asks_in_dialog(&s));
    }

    /// What a start screen asks is its first line with a question, up to it (else its last
    /// line), box drawing left out, cut to [`START_LINE_MAX`]; it is kept while the agent has
    /// said nothing.
    #[test]
    fn a_start_screen_s_question_is_its_first_line_that_asks() {
        let trust = "────────\n Accessing workspace:\n\n /tmp/x\n\n Quick safety check: Is this a \
                     project you created or one you trust? (Like your own code, a\n well-known \
                     project.)\n\n ❯ 1. Yes, I trust this folder\n   2. No, exit\n\n Enter to confirm";
        assert_eq!(
            start_question(trust).as_deref(),
            Some("Quick safety check: Is this a project you created or one you trust?")
        );
        assert_eq!(
            start_question("╭──────╮\n│ Pick a theme │\n│ 1. dark      │\n╰──────╯\n").as_deref(),
            Some("1. dark")
        );
        assert_eq!(start_question("\n  \n──────\n"), None);
        let long = format!("{}?", "x".repeat(500));
        assert_eq!(
            start_question(&long).unwrap().chars().count(),
            START_LINE_MAX
        );
        // What it asks is kept only while the agent has said nothing.
        let mut s = agent_status();
        s.set_attention(Attention::Starting);
        let asks = AgentEvent::AsksAtStart {
            line: "Trust?".into(),
        };
        apply_stream(&mut s, &asks);
        assert_eq!(s.asks_at_start.as_deref(), Some("Trust?"));
        apply_hook(
            &mut s,
            Mode::Pty,
            "SessionStart",
            &json!({"session_id": "c"}),
        );
        assert_eq!(s.asks_at_start, None);
        apply_stream(&mut s, &asks);
        assert_eq!(s.asks_at_start, None);
    }

    /// An agent is fresh until it works; a SessionStart that begins a conversation (startup,
    /// `/clear`) makes it fresh again, one that continues it (a resume, a compaction) does not.
    #[test]
    fn an_agent_is_fresh_until_it_works_in_its_conversation() {
        let mut s = agent_status();
        let start = |source: &str| json!({"session_id": "c", "source": source});
        apply_hook(&mut s, Mode::Pty, "SessionStart", &start("startup"));
        assert!(s.fresh);
        apply_hook(
            &mut s,
            Mode::Pty,
            "UserPromptSubmit",
            &json!({"prompt": "go"}),
        );
        apply_hook(&mut s, Mode::Pty, "Stop", &json!({}));
        assert_eq!(s.attention, Some(Attention::Idle));
        assert!(!s.fresh);
        for source in ["resume", "compact"] {
            apply_hook(&mut s, Mode::Pty, "SessionStart", &start(source));
            assert!(!s.fresh, "{source}");
        }
        apply_hook(&mut s, Mode::Pty, "SessionStart", &start("clear"));
        assert!(s.fresh);
    }

    /// A structured agent's questions: two at once are shown in turn; a prompt sent while one
    /// is open waits in the agent's input and does not close it (the agent still waits for the
    /// answer); each closes by its own id; the turn's end clears what is left.
    #[test]
    fn structured_questions_queue_and_outlast_a_prompt() {
        let mut s = agent_status();
        let user = AgentEvent::Message {
            role: crate::stream_json::USER.into(),
            text: "go".into(),
        };
        apply_stream(&mut s, &user);
        assert_eq!(s.attention, Some(Attention::Working));
        apply_stream(&mut s, &asks("r1"));
        apply_stream(&mut s, &asks("r2"));
        assert_eq!(s.attention, Some(Attention::NeedsPermission));
        assert_eq!(s.permission.as_ref().unwrap().id.as_deref(), Some("r1"));
        assert_eq!(s.queued.len(), 1);
        apply_stream(&mut s, &user);
        assert_eq!(
            s.attention,
            Some(Attention::NeedsPermission),
            "a prompt does not answer"
        );
        assert_eq!(s.permission.as_ref().unwrap().id.as_deref(), Some("r1"));
        // Answered out of order: the other stays shown.
        apply_stream(
            &mut s,
            &AgentEvent::PermissionCancelled {
                request_id: "r2".into(),
            },
        );
        assert_eq!(s.permission.as_ref().unwrap().id.as_deref(), Some("r1"));
        assert!(s.queued.is_empty());
        apply_stream(
            &mut s,
            &AgentEvent::PermissionAnswered {
                request_id: "r1".into(),
                behavior: "allow".into(),
                message: None,
            },
        );
        assert_eq!(s.attention, Some(Attention::Working));
        assert!(s.permission.is_none());
        apply_stream(&mut s, &asks("r3"));
        apply_stream(&mut s, &turn_over());
        assert_eq!(s.attention, Some(Attention::Idle));
        assert!(s.permission.is_none() && s.queued.is_empty());
    }

    /// A stream-json turn that starts while the agent waits (a prompt queued during the last
    /// turn: Claude says `result`, then `init` for the next turn at once) makes it work again;
    /// an `init` while it works or before it started changes nothing.
    #[test]
    fn a_queued_prompts_turn_starting_makes_a_structured_agent_work() {
        let init = AgentEvent::Init {
            agent_session_id: "a".into(),
            model: None,
        };
        let mut s = agent_status();
        s.attention = Some(Attention::Starting);
        apply_stream(&mut s, &init);
        assert_eq!(s.attention, Some(Attention::Starting));
        s.attention = Some(Attention::Working);
        apply_stream(&mut s, &init);
        assert_eq!(s.attention, Some(Attention::Working));
        apply_stream(&mut s, &turn_over());
        assert_eq!(s.attention, Some(Attention::Idle));
        apply_stream(&mut s, &init);
        assert_eq!(s.attention, Some(Attention::Working));
        assert_eq!(s.agent_session_id.as_deref(), Some("a"));
    }

    /// A terminal agent: a Notification that asks names no question to answer from outside (no
    /// `permission`), and while a hook call holds a question nothing else moves the state.
    #[test]
    fn hooks_leave_a_held_question_alone() {
        let mut s = agent_status();
        let note = json!({"message": "Claude needs your permission to use Bash"});
        apply_hook(&mut s, Mode::Pty, "Notification", &note);
        assert_eq!(s.attention, Some(Attention::NeedsPermission));
        assert!(s.permission.is_none());
        let ask = json!({"tool_name": "Bash", "tool_input": {"command": "ls"}});
        apply_hook(&mut s, Mode::Pty, "PermissionRequest", &ask);
        assert!(s.permission.as_ref().is_some_and(|p| p.id.is_none()));
        let mut held = hook_question(&ask);
        held.id = Some("7".into());
        s.permission = None;
        assert!(questions::open(&mut s, held));
        for name in ["PreToolUse", "PostToolUse", "Notification", "Stop"] {
            apply_hook(&mut s, Mode::Pty, name, &note);
            assert_eq!(s.attention, Some(Attention::NeedsPermission), "{name}");
            assert_eq!(
                s.permission.as_ref().unwrap().id.as_deref(),
                Some("7"),
                "{name}"
            );
        }
        // Settled in the agent's own dialog: it waits for its user until a hook says otherwise.
        assert!(questions::close(&mut s, "7", Left::Settled));
        assert_eq!(s.attention, Some(Attention::Idle));
        apply_hook(&mut s, Mode::Pty, "SessionEnd", &json!({"reason": "exit"}));
        assert_eq!(s.attention, Some(Attention::Exited));
    }

    #[test]
    fn claude_gets_settings_and_resume() {
        let dir = tempfile::tempdir().unwrap();
        let argv: Vec<String> = ["claude", "-p", "hi"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let hook = vec!["/opt/my corral/corral".to_string(), "hook".to_string()];
        let out = Profile::Claude
            .prepare(&argv, Mode::Pty, dir.path(), &hook, Some("abc"))
            .unwrap();
        assert_eq!(out[0], "claude");
        assert_eq!(out[1], "--settings");
        assert_eq!(&out[3..5], ["--resume", "abc"]);
        assert_eq!(&out[5..], ["-p", "hi"]);
        let settings: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&out[2]).unwrap()).unwrap();
        let cmd = settings["hooks"]["SessionStart"][0]["hooks"][0]["command"]
            .as_str()
            .unwrap();
        assert_eq!(cmd, "'/opt/my corral/corral' hook");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&out[2]).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "settings are owner-only");
        assert!(Profile::parse(Some("nope")).is_err());
        // Stream-json mode adds the structured protocol's flags, each once.
        let argv: Vec<String> = ["claude", "--verbose"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let out = Profile::Claude
            .prepare(&argv, Mode::StreamJson, dir.path(), &hook, None)
            .unwrap();
        assert_eq!(
            &out[3..],
            [
                "-p",
                "--input-format",
                "stream-json",
                "--output-format",
                "stream-json",
                "--permission-prompt-tool",
                "stdio",
                "--verbose"
            ]
        );
    }
}
