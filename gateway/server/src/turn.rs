//! Turn: what a terminal agent printed since its last user message, as text — the agentapi
//! endpoints' agent message (`crate::agentapi`).
//!
//! coder/agentapi runs its agent in a 1000-row terminal and diffs the screen against the one
//! before the user message, so a long answer comes back whole. A corral session's terminal is
//! the size its viewers gave it (24 rows, a phone's 40): its screen alone held only an answer's
//! last lines. A turn follows the session's output from the user message on through an
//! emulator of the session's size with [`SCROLLBACK`] rows of scrollback, seeded with the screen
//! as it was then; its text is the scrollback and the screen, less the leading lines the screen
//! already showed before the message (what agentapi's diff removes).
//!
//! Fed as it is read (each read parses only the output that came since the last), on a blocking
//! thread; output the Ring no longer holds is read from the session's log. Bounds: at most
//! [`MAX_FEED`] bytes are parsed per read (a turn that printed more starts from its last
//! [`MAX_FEED`], which a text printed in a flood loses the beginning of), and the scrollback
//! keeps [`SCROLLBACK`] rows (its memory grows with the answer's length, up to about
//! [`SCROLLBACK`] × columns cells).

use std::num::NonZeroU16;

use corral_actors::Snapshot;

/// Rows of scrollback a turn keeps (agentapi's terminal height).
pub const SCROLLBACK: usize = 1000;
/// Most output parsed by one read of a turn.
pub const MAX_FEED: u64 = 8 * 1024 * 1024;

/// A terminal agent's output since its last user message.
pub struct Turn {
    parser: vt100::Parser,
    /// The next output offset to parse.
    at: u64,
    /// The screen's lines when the user message was sent.
    before: Vec<String>,
    /// The user message's first line, as the agent echoes it after its prompt marker.
    prompt: Option<String>,
}

impl std::fmt::Debug for Turn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Turn")
            .field("at", &self.at)
            .field("before", &self.before.len())
            .finish_non_exhaustive()
    }
}

impl Turn {
    /// A turn that begins at `screen` (the session's screen when the user message is sent):
    /// what follows its offset is the agent's.
    pub fn begin(screen: &Snapshot) -> Turn {
        let size = |n: u16| NonZeroU16::new(n).unwrap_or(NonZeroU16::MIN);
        let mut parser = vt100::Parser::new(size(screen.rows), size(screen.cols), SCROLLBACK);
        parser.process(&screen.bytes);
        // Its trailing blank rows are no lines it showed (an answer printed there is new).
        let mut before = lines_all(&parser.screen().contents(), None);
        while before.last().is_some_and(|l| l.is_empty()) {
            before.pop();
        }
        Turn {
            parser,
            at: screen.offset,
            before,
            prompt: None,
        }
    }

    /// A turn of a `rows`×`cols` terminal whose user message was posted at output offset
    /// `offset` under a previous server (an upgrade, a crash): the screen it began at is gone,
    /// so it begins blank — the agent's answer is found by its echo of the message
    /// ([`Self::answering`]), and what the screen showed before is not told apart.
    pub fn resumed(offset: u64, rows: u16, cols: u16) -> Turn {
        let size = |n: u16| NonZeroU16::new(n).unwrap_or(NonZeroU16::MIN);
        Turn {
            parser: vt100::Parser::new(size(rows), size(cols), SCROLLBACK),
            at: offset,
            before: Vec::new(),
            prompt: None,
        }
    }

    /// The user message the turn answers: when the agent prints the conversation again within
    /// the turn (Claude Code's renderer reprints all of it once its output is taller than the
    /// screen, and on a resize), the answer starts at the last echo of it.
    pub fn answering(mut self, message: &str) -> Turn {
        self.prompt = message
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty())
            .map(str::to_string);
        self
    }

    /// The session's terminal is `rows`×`cols` now (a viewer of another size typed, or a phone
    /// joined): what comes next was written for that size, so it is parsed at it (parsed at the
    /// old size, a resize mid-turn lost, repeated and fused lines). The resize takes effect
    /// where this read begins, not at the exact byte it happened at.
    ///
    /// The lines the screen showed before the message are taken again as the resize leaves
    /// them (cut at a narrower width, for one): compared as they were, the first one cut made
    /// them all part of the answer.
    pub fn resize(&mut self, rows: u16, cols: u16) {
        let size = |n: u16| NonZeroU16::new(n).unwrap_or(NonZeroU16::MIN);
        let (rows, cols) = (size(rows), size(cols));
        if self.parser.screen().size() == (rows, cols) {
            return;
        }
        let all = self.lines();
        let same = self.shown_before(&all);
        self.parser.screen_mut().set_size(rows, cols);
        let mut now = self.lines();
        now.truncate(same);
        self.before = now;
    }

    /// The next output offset this turn has not parsed.
    pub fn at(&self) -> u64 {
        self.at
    }

    /// Parses `bytes`, the output from offset `from` on. Output between what was parsed and
    /// `from` is gone (the Ring lapped and the log had none of it): skipped.
    pub fn feed(&mut self, from: u64, bytes: &[u8]) {
        let end = from + bytes.len() as u64;
        if end <= self.at {
            return;
        }
        let skip = self.at.saturating_sub(from) as usize;
        self.parser.process(&bytes[skip..]);
        self.at = end;
    }

    /// Skips to `offset` without parsing what is before it (too much to parse in one read).
    pub fn skip_to(&mut self, offset: u64) {
        self.at = self.at.max(offset);
    }

    /// What the agent printed since the user message: the scrollback, then the screen, without
    /// the leading lines the screen showed before it, trailing blanks trimmed.
    pub fn text(&mut self) -> String {
        let all = self.lines();
        let rest = &all[self.shown_before(&all)..];
        let end = rest
            .iter()
            .rposition(|l| !l.is_empty())
            .map_or(0, |i| i + 1);
        let start = rest[..end]
            .iter()
            .position(|l| !l.is_empty())
            .unwrap_or(end);
        // Printed again (the conversation reprinted): from the prompt's last echo.
        let start = self
            .prompt
            .as_deref()
            .and_then(|p| rest[..end].iter().rposition(|l| echoes(l, p)))
            .map_or(start, |last| last.max(start));
        rest[start..end].join("\n")
    }

    /// How many of `all`'s leading lines are the lines the screen showed before the message.
    fn shown_before(&self, all: &[String]) -> usize {
        all.iter()
            .zip(&self.before)
            .take_while(|(a, b)| a == b)
            .count()
    }

    /// The scrollback, oldest first, then the screen: a line per row.
    fn lines(&mut self) -> Vec<String> {
        let screen = self.parser.screen_mut();
        let rows = usize::from(screen.size().0.get());
        let kept = screen.scrollback_len();
        // The scrollback, oldest first, one screenful at a time (vt100 shows it through a view
        // scrolled back by N rows), then the screen itself.
        let mut all = Vec::with_capacity(kept + rows);
        let mut back = kept;
        while back > 0 {
            screen.set_scrollback(back);
            let view = lines_all(&screen.contents(), Some(rows));
            all.extend(view.into_iter().take(back.min(rows)));
            back = back.saturating_sub(rows);
        }
        screen.set_scrollback(0);
        all.extend(lines_all(&screen.contents(), Some(rows)));
        all
    }
}

/// Whether `line` is the agent's echo of a prompt whose first line is `prompt`: a prompt marker
/// (`>`, Claude Code's `❯`), then the prompt (its start, when the echo wrapped).
fn echoes(line: &str, prompt: &str) -> bool {
    let line = line.trim_start();
    let Some(rest) = line.strip_prefix('❯').or_else(|| line.strip_prefix('>')) else {
        return false;
    };
    let rest = rest.trim();
    !rest.is_empty() && (rest == prompt || (rest.len() >= 20 && prompt.starts_with(rest)))
}

/// A view's lines, trailing spaces trimmed; `rows` of them (blank ones kept or added, so
/// rows line up), or as many as it has when `rows` is None.
fn lines_all(contents: &str, rows: Option<usize>) -> Vec<String> {
    let mut out: Vec<String> = contents
        .split('\n')
        .map(|l| l.trim_end().to_string())
        .collect();
    if let Some(rows) = rows {
        out.resize(rows, String::new());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn screen(rows: u16, cols: u16, bytes: &[u8]) -> Snapshot {
        Snapshot {
            bytes: bytes.to_vec(),
            offset: 100,
            rows,
            cols,
            approximate: false,
            bracketed_paste: false,
        }
    }

    #[test]
    fn a_long_answer_comes_back_whole_without_what_was_on_the_screen_before() {
        let mut turn = Turn::begin(&screen(5, 20, b"banner\r\nold answer\r\n> "));
        let mut out = b"question\r\n".to_vec();
        for i in 0..40 {
            out.extend_from_slice(format!("answer line {i}\r\n").as_bytes());
        }
        out.extend_from_slice(b"> ");
        turn.feed(100, &out);
        let text = turn.text();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "> question", "{text}");
        assert_eq!(lines[1], "answer line 0");
        assert_eq!(lines[40], "answer line 39");
        assert_eq!(lines.len(), 42, "{text}");
        // Read again with nothing new: the same text.
        assert_eq!(turn.text(), text);
    }

    #[test]
    fn output_is_parsed_once_and_a_gap_is_skipped() {
        let mut turn = Turn::begin(&screen(4, 20, b""));
        turn.feed(100, b"one\r\n");
        // The same bytes again (a read that overlaps the last) are not parsed twice.
        turn.feed(100, b"one\r\ntwo\r\n");
        assert_eq!(turn.text(), "one\ntwo");
        assert_eq!(turn.at(), 110);
        turn.skip_to(200);
        turn.feed(150, b"lost");
        turn.feed(200, b"three");
        assert_eq!(turn.text(), "one\ntwo\nthree");
    }

    #[test]
    fn output_after_a_resize_is_parsed_at_the_new_size() {
        let mut turn = Turn::begin(&screen(5, 20, b""));
        turn.resize(5, 40);
        turn.feed(100, b"\x1b[1;30Hx");
        assert_eq!(turn.text(), format!("{}x", " ".repeat(29)));
    }

    /// A resize in the middle of a turn (a phone opens the session) leaves out what the screen
    /// showed before the message as before: it came back at the head of the answer (the
    /// screen's lines, cut at the new width, no longer matched what they were).
    #[test]
    fn a_resize_mid_turn_keeps_the_last_answer_out() {
        let mut before = String::new();
        for i in 0..3 {
            before.push_str(&format!("old answer {i}\r\n"));
        }
        before.push_str(&"─".repeat(40));
        before.push_str("\r\n> ");
        let mut turn = Turn::begin(&screen(6, 40, before.as_bytes()));
        turn.feed(100, b"new question\r\nnew line 0\r\n");
        turn.resize(8, 30);
        turn.feed(124, b"new line 1\r\nnew line 2\r\n");
        let text = turn.text();
        assert!(!text.contains("old answer"), "{text}");
        assert!(text.starts_with("> new question"), "{text}");
        assert!(text.contains("new line 2"), "{text}");
    }

    /// An agent that prints the whole conversation again within the turn (Claude Code, once its
    /// output is taller than the screen): the answer starts at the last echo of the prompt, not
    /// with the banner and every earlier answer.
    #[test]
    fn a_conversation_printed_again_leaves_only_the_answer() {
        let mut turn =
            Turn::begin(&screen(6, 40, b"banner\r\n> q1\r\nanswer 1\r\n> ")).answering("q4 now");
        let mut out = String::from("q4 now\r\n");
        for line in [
            "banner", "> q1", "answer 1", "> q2", "answer 2", "> q4 now", "answer 4",
        ] {
            out.push_str(line);
            out.push_str("\r\n");
        }
        turn.feed(100, out.as_bytes());
        assert_eq!(turn.text(), "> q4 now\nanswer 4");
        // No echo of it (a program that does not echo): all it printed, as before.
        let mut plain = Turn::begin(&screen(6, 40, b"")).answering("other");
        plain.feed(100, b"one\r\ntwo\r\n");
        assert_eq!(plain.text(), "one\ntwo");
    }

    #[test]
    fn a_screen_that_did_not_change_is_an_empty_answer() {
        let mut turn = Turn::begin(&screen(3, 10, b"a\r\nb\r\nc"));
        assert_eq!(turn.text(), "");
    }
}
