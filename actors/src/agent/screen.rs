//! Reading a terminal agent's screen for what its hooks do not say: Claude Code fires no hook
//! for an interrupted turn, for a question answered in its own dialog, nor for a panel it
//! opens, so the server looks at the screen a few times after a key that may have done one of
//! those ([`LOOKS`]), and at start for a question before the first hook (the folder trust
//! dialog). Every rule here names the mark on the screen it reads.

use super::*;

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
pub(super) fn interrupt_typed(session: &SessionShared, bytes: &[u8]) -> bool {
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
pub(super) fn asks_in_dialog(s: &Status) -> bool {
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
pub(super) fn start_question(screen: &str) -> Option<String> {
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
pub(super) fn interrupt_settled(session: &SessionShared, screen: &str) -> bool {
    if session.status.read().attention != Some(Attention::Working)
        || screen.to_lowercase().contains(WORKING_MARK)
    {
        return false;
    }
    record_stream(session, AgentEvent::Interrupted);
    true
}
