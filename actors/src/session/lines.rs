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

    /// Puts `bytes` in the Ring, each complete line's events right after it. Stops after a
    /// line whose events found the journal congested (the producer waits meanwhile); returns
    /// how many bytes were taken.
    pub fn feed(&mut self, bytes: &[u8], shared: &Arc<SessionShared>) -> usize {
        if self.framing == Framing::Raw {
            output(shared, bytes);
            return bytes.len();
        }
        // `bytes[run..]` is not in the Ring yet; lines before `pos` are handled.
        let (mut run, mut pos) = (0, 0);
        while let Some(nl) = bytes[pos..].iter().position(|&b| b == b'\n') {
            let end = pos + nl + 1;
            let events = match self.carry.take() {
                Some(carry) if carry.is_empty() => line_events(self.framing, &bytes[pos..end]),
                Some(mut carry) if carry.len() + (end - pos) <= LINE_MAX => {
                    carry.extend_from_slice(&bytes[pos..end]);
                    line_events(self.framing, &carry)
                }
                _ => None,
            };
            self.carry = Some(Vec::new());
            pos = end;
            if let Some(events) = events {
                output(shared, &bytes[run..end]);
                run = end;
                emit(shared, events);
                if shared.journal().is_some_and(|j| j.congested()) {
                    return end;
                }
            }
        }
        output(shared, &bytes[run..]);
        let rest = &bytes[pos..];
        if let Some(carry) = &mut self.carry {
            if carry.len() + rest.len() <= LINE_MAX {
                carry.extend_from_slice(rest);
            } else {
                self.carry = None;
            }
        }
        bytes.len()
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
