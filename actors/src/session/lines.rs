//! Lines: what the output of a pipe-mode session means besides its bytes.
//!
//! Every byte a program writes goes to its session's Ring (and so to its log): the log is the
//! program's output, exactly, and a holder's ring offsets are the log's. On top of that, a
//! complete line that holds JSON becomes events, placed right after the line (an event's offset
//! is where its line ends): pipe mode's NDJSON (`json {value}`), or a structured agent's typed
//! events (stream-json, see `crate::stream_json`).
//!
//! [`Lines`] applies this to output that arrives in pieces (a holder's ring, read in batches):
//! a line may start in one piece and end in another; its events come once its last byte is in.

use std::sync::Arc;

use crate::session::shared::SessionShared;
use crate::stream_json::AgentEvent;

/// Longest line read as JSON (a longer one is output only); the holder keeps lines this long
/// whole (`crate::holder::streams::LINE_MAX`).
pub const LINE_MAX: usize = crate::holder::streams::LINE_MAX;

/// What to do with the bytes read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// Output only.
    Raw,
    /// NDJSON: a JSON line is also a `json` event.
    NdJson,
    /// A structured agent's protocol (stream-json): a JSON line's typed events
    /// (`stream_json::events`).
    Agent,
}

impl Framing {
    /// The framing of a session mode's output.
    pub fn of(mode: crate::spec::Mode) -> Framing {
        match mode {
            crate::spec::Mode::Pty => Framing::Raw,
            crate::spec::Mode::Pipe => Framing::NdJson,
            crate::spec::Mode::StreamJson => Framing::Agent,
        }
    }
}

/// The events of one complete line.
pub enum LineEvents {
    /// A pipe-mode JSON line.
    Json(serde_json::Value),
    /// A structured agent's line (never empty).
    Agent(Vec<AgentEvent>),
}

/// The events `line` (complete, with or without its newline) carries under `framing`.
pub fn line_events(framing: Framing, line: &[u8]) -> Option<LineEvents> {
    match framing {
        Framing::Raw => None,
        Framing::NdJson => json_line(line).map(LineEvents::Json),
        Framing::Agent => {
            let events = json_line(line)
                .map(|v| crate::stream_json::events(&v))
                .unwrap_or_default();
            (!events.is_empty()).then_some(LineEvents::Agent(events))
        }
    }
}

/// Records a line's events (after its bytes are in the Ring).
pub fn emit(shared: &Arc<SessionShared>, events: LineEvents) {
    match events {
        LineEvents::Json(value) => {
            shared.emit(crate::event::EventKind::Json { value });
        }
        LineEvents::Agent(events) => {
            for event in events {
                crate::agent::record_stream(shared, event);
            }
        }
    }
}

/// Output bytes to the Ring (nothing for none).
pub fn output(shared: &SessionShared, bytes: &[u8]) {
    if !bytes.is_empty() {
        shared.ring.append(bytes);
        shared.output_appended();
    }
}

/// The JSON object or array a line holds, if it holds one (a line that does not start with
/// `{` or `[` is not parsed at all).
fn json_line(bytes: &[u8]) -> Option<serde_json::Value> {
    let text = bytes.strip_suffix(b"\n").unwrap_or(bytes);
    let text = text.strip_suffix(b"\r").unwrap_or(text);
    let first = text.iter().find(|b| !b.is_ascii_whitespace())?;
    if *first != b'{' && *first != b'[' {
        return None;
    }
    serde_json::from_slice::<serde_json::Value>(text)
        .ok()
        .filter(|v| v.is_object() || v.is_array())
}

/// What an adopted session's framing continues from, read off the end of its log (`tail`,
/// whose first byte is at offset `from`, `from` 0 or the log's first offset when `whole`):
/// the events of the complete lines ending after `covered` (the journal had them not: the
/// previous server was killed between a line and its events), and the line the log ends
/// inside (`None` when it began before `tail`: too long to parse).
pub fn recover(
    framing: Framing,
    tail: &[u8],
    from: u64,
    whole: bool,
    covered: u64,
) -> (Vec<LineEvents>, Option<Vec<u8>>) {
    // A tail that starts inside a line: that line's start is not in it.
    let first = if whole {
        0
    } else {
        match memchr::memchr(b'\n', tail) {
            Some(nl) => nl + 1,
            None => return (Vec::new(), None),
        }
    };
    let mut events = Vec::new();
    let mut start = first;
    while let Some(nl) = memchr::memchr(b'\n', &tail[start..]) {
        let end = start + nl + 1;
        if from + end as u64 > covered
            && let Some(e) = line_events(framing, &tail[start..end])
        {
            events.push(e);
        }
        start = end;
    }
    let carry = &tail[start..];
    (events, (carry.len() <= LINE_MAX).then(|| carry.to_vec()))
}

/// Whether the persister's journal is congested (events should wait).
fn congested(shared: &SessionShared) -> bool {
    shared.journal().is_some_and(|j| j.congested())
}

/// The framing of output that arrives in pieces.
pub struct Lines {
    framing: Framing,
    /// The line begun in an earlier piece (already in the Ring), kept to be parsed when it
    /// ends; `None` once it is longer than [`LINE_MAX`] (it is output only).
    carry: Option<Vec<u8>>,
}

impl Lines {
    /// Framing `framing`.
    pub fn new(framing: Framing) -> Lines {
        Lines {
            framing,
            carry: Some(Vec::new()),
        }
    }

    /// Framing `framing`, continuing the line `carry` begun before (an adopted session's log
    /// ends inside it; see [`recover`]); `None`: a line too long to parse.
    pub fn resume(framing: Framing, carry: Option<Vec<u8>>) -> Lines {
        Lines { framing, carry }
    }

    /// Puts `bytes` in the Ring, each complete line's events right after it. Takes nothing
    /// while the journal is congested and stops after a line whose events found it so (the
    /// producer waits meanwhile); returns how many bytes were taken.
    ///
    /// Only lines that can be JSON are looked at: the piece is searched for `{` and `[` (SIMD,
    /// `memchr`), and a line is parsed only when one starts it after blanks; a piece without
    /// either goes to the Ring in one append.
    pub fn feed(&mut self, bytes: &[u8], shared: &Arc<SessionShared>) -> usize {
        self.take(bytes, shared, false)
    }

    /// Like [`feed`](Self::feed), but takes everything whatever the journal's state (after a
    /// bounded wait: what the journal cannot take is counted as dropped there).
    pub fn feed_forced(&mut self, bytes: &[u8], shared: &Arc<SessionShared>) {
        self.take(bytes, shared, true);
    }

    fn take(&mut self, bytes: &[u8], shared: &Arc<SessionShared>, force: bool) -> usize {
        // Events wait while the journal is congested, unless forced.
        let hold = |shared: &SessionShared| !force && congested(shared);
        if self.framing == Framing::Raw {
            output(shared, bytes);
            return bytes.len();
        }
        if hold(shared) {
            return 0;
        }
        // `bytes[run..]` is not in the Ring yet; `pos` is where the next line starts.
        let (mut run, mut pos) = (0, 0);
        // The end of a line begun in an earlier piece.
        if self.carry.as_ref().is_none_or(|c| !c.is_empty()) {
            let Some(nl) = memchr::memchr(b'\n', bytes) else {
                self.carry_on(bytes);
                output(shared, bytes);
                return bytes.len();
            };
            pos = nl + 1;
            let events = match self.carry.take() {
                Some(mut carry) if carry.len() + pos <= LINE_MAX => {
                    carry.extend_from_slice(&bytes[..pos]);
                    line_events(self.framing, &carry)
                }
                _ => None,
            };
            self.carry = Some(Vec::new());
            if let Some(events) = events {
                output(shared, &bytes[..pos]);
                run = pos;
                emit(shared, events);
                if hold(shared) {
                    return pos;
                }
            }
        }
        // Lines from `pos` on, the candidates only.
        while let Some(i) = memchr::memchr2(b'{', b'[', &bytes[pos..]) {
            let at = pos + i;
            let start = memchr::memrchr(b'\n', &bytes[pos..at]).map_or(pos, |j| pos + j + 1);
            let Some(j) = memchr::memchr(b'\n', &bytes[at..]) else {
                break;
            };
            let end = at + j + 1;
            pos = end;
            if !bytes[start..at].iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            if let Some(events) = line_events(self.framing, &bytes[start..end]) {
                output(shared, &bytes[run..end]);
                run = end;
                emit(shared, events);
                if hold(shared) {
                    return end;
                }
            }
        }
        output(shared, &bytes[run..]);
        let tail = memchr::memrchr(b'\n', &bytes[pos..]).map_or(pos, |j| pos + j + 1);
        self.carry_on(&bytes[tail..]);
        bytes.len()
    }

    /// `rest` continues the line not ended yet (kept while it is short enough to parse).
    fn carry_on(&mut self, rest: &[u8]) {
        if let Some(carry) = &mut self.carry {
            if carry.len() + rest.len() <= LINE_MAX {
                carry.extend_from_slice(rest);
            } else {
                self.carry = None;
            }
        }
    }

    /// The output ended: a last line without its newline is still a line.
    pub fn finish(&mut self, shared: &Arc<SessionShared>) {
        if let Some(carry) = self.carry.take()
            && !carry.is_empty()
            && let Some(events) = line_events(self.framing, &carry)
        {
            emit(shared, events);
        }
        self.carry = Some(Vec::new());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::EventKind;
    use corral_runtime::Ring;
    use proptest::prelude::*;

    /// Feeds `text` cut at `cuts`; returns the Ring's bytes and the json events (value, offset).
    fn framed(text: &[u8], cuts: &[usize]) -> (Vec<u8>, Vec<(String, u64)>) {
        let ring = Ring::new(1 << 20);
        let spec = crate::spec::SessionSpec::new(["true"]);
        let shared = SessionShared::new(uuid::Uuid::new_v4(), "t".into(), &spec, ring, None, None);
        let mut events = shared.events();
        let mut lines = Lines::new(Framing::NdJson);
        let mut at = 0;
        let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (text.len() + 1)).collect();
        cuts.sort_unstable();
        for cut in cuts.into_iter().chain([text.len()]) {
            assert_eq!(lines.feed(&text[at..cut], &shared), cut - at);
            at = cut;
        }
        lines.finish(&shared);
        let mut out = Vec::new();
        let read = shared.ring.read_at(0, &mut out, usize::MAX);
        assert!(
            matches!(
                read,
                corral_runtime::Read::Data { .. } | corral_runtime::Read::Empty
            ),
            "{read:?}"
        );
        let mut got = Vec::new();
        while let Ok(e) = events.try_recv() {
            if let EventKind::Json { value } = e.kind {
                got.push((value.to_string(), e.offset));
            }
        }
        (out, got)
    }

    /// A JSON line longer than LINE_MAX is output only (every byte of it in the Ring, no
    /// event), and the line after it is read as JSON again.
    #[test]
    fn a_line_past_its_bound_is_output_only() {
        let long = format!("{{\"x\":\"{}\"}}\n", "y".repeat(LINE_MAX + 10));
        let text = format!("{long}{{\"n\":1}}\n");
        let ring = Ring::new(4 << 20);
        let spec = crate::spec::SessionSpec::new(["true"]);
        let shared = SessionShared::new(uuid::Uuid::new_v4(), "t".into(), &spec, ring, None, None);
        let mut events = shared.events();
        let mut lines = Lines::new(Framing::NdJson);
        for chunk in text.as_bytes().chunks(64 * 1024) {
            assert_eq!(lines.feed(chunk, &shared), chunk.len());
        }
        lines.finish(&shared);
        let mut out = Vec::new();
        let read = shared.ring.read_at(0, &mut out, usize::MAX);
        assert!(
            matches!(read, corral_runtime::Read::Data { .. }),
            "{read:?}"
        );
        assert_eq!(out, text.as_bytes(), "every byte is output");
        let mut got = Vec::new();
        while let Ok(e) = events.try_recv() {
            if let EventKind::Json { value } = e.kind {
                got.push((value.to_string(), e.offset));
            }
        }
        assert_eq!(got, [("{\"n\":1}".to_string(), text.len() as u64)]);
    }

    /// One line at a time, the slow obvious way.
    fn expected(text: &[u8]) -> Vec<(String, u64)> {
        let mut out = Vec::new();
        let mut end = 0;
        for line in text.split_inclusive(|&b| b == b'\n') {
            end += line.len() as u64;
            if let Some(LineEvents::Json(v)) = line_events(Framing::NdJson, line) {
                out.push((v.to_string(), end));
            }
        }
        out
    }

    fn a_line() -> impl Strategy<Value = String> {
        prop_oneof![
            (0..1000u32).prop_map(|n| format!("{{\"n\":{n}}}\n")),
            (0..1000u32).prop_map(|n| format!("  [{n}]\r\n")),
            "[a-z ]{0,12}\n",
            "[a-z]{1,5} \\{x\\}\n",
            Just("{oops\n".to_string()),
            Just("\n".to_string()),
        ]
    }

    #[test]
    fn recovery_finds_the_lines_after_the_journal_and_the_line_the_log_ends_in() {
        let tail = b"{\"a\":1}\nplain\n{\"b\":2}\n{\"c\":";
        let values = |events: Vec<LineEvents>| -> Vec<String> {
            events
                .into_iter()
                .map(|e| match e {
                    LineEvents::Json(v) => v.to_string(),
                    LineEvents::Agent(_) => unreachable!(),
                })
                .collect()
        };
        // The journal covered up to the end of "plain": only {"b":2} is missing.
        let (events, carry) = recover(Framing::NdJson, tail, 100, true, 100 + 14);
        assert_eq!(values(events), [r#"{"b":2}"#]);
        assert_eq!(carry.as_deref(), Some(&b"{\"c\":"[..]));
        // A tail that starts inside a line skips it (its start is not there).
        let (events, _) = recover(Framing::NdJson, &tail[3..], 103, false, 0);
        assert_eq!(values(events), [r#"{"b":2}"#]);
        // Nothing whole: the line began before the tail, too long to parse.
        assert!(matches!(
            recover(Framing::NdJson, b"xyz", 5, false, 0),
            (e, None) if e.is_empty()
        ));
    }

    proptest! {
        #[test]
        fn any_cutting_gives_every_byte_and_the_events_of_whole_lines(
            lines in prop::collection::vec(a_line(), 0..40),
            tail in "[a-z{]{0,6}",
            cuts in prop::collection::vec(0usize..10_000, 0..12),
        ) {
            let text = format!("{}{tail}", lines.concat()).into_bytes();
            let (out, events) = framed(&text, &cuts);
            prop_assert_eq!(&out, &text);
            prop_assert_eq!(events, expected(&text));
        }
    }
}
