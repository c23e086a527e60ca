//! Restoring a session an earlier run of the server recorded (boot reconciliation): its Ring
//! continues from its log's end with the log's tail replayed for the screen; an adopted agent's
//! state is rebuilt from its last journaled events, and an adopted pipe session's last lines
//! from its log (the events the journal lacks, the line the log ends inside).

use uuid::Uuid;

use corral_runtime::Ring;

use super::Sessions;
use super::admission::{Admission, check_spec};
use crate::error::SessionError;
use crate::event::SessionEvent;
use crate::handle::SessionHandle;
use crate::persist::Persist;
use crate::persist::journal::{LogRepair, SessionRecord};
use crate::session::Begin;
use crate::spec::Size;

/// What a restored session continues from.
pub(super) struct Restored {
    /// Its registry row.
    pub(super) row: crate::persist::SessionRow,
    /// The recovery decision, recorded as its first event of this run.
    pub(super) decision: Option<String>,
    /// When it ended, if it had.
    pub(super) ended_ms: Option<u64>,
    /// Its last journaled events, when its process was adopted: an agent's state is rebuilt
    /// from them (see `agent::replay`).
    pub(super) recent: Vec<SessionEvent>,
    /// An adopted pipe session's lines whose events the journal lacks (see
    /// `session::lines::recover`), emitted before its actor starts.
    pub(super) lines: Vec<crate::session::lines::LineEvents>,
    /// The line its log ends inside (None: too long to parse).
    pub(super) carry: Option<Vec<u8>>,
    /// An adopted terminal's sizes over the output put back into its Ring (see
    /// [`sizes_over`]).
    pub(super) sizes: Vec<(u64, Size)>,
}

/// Journaled events an adopted agent session's state is rebuilt from.
const REPLAY_EVENTS: usize = 256;

impl Sessions {
    /// Brings back a session recorded by an earlier run of the server (boot reconciliation):
    /// same id, name and spec; its Ring continues its scrollback's offsets; its status and event
    /// numbering continue the record. `begin` says whether its process starts again.
    pub async fn restore(
        &self,
        record: SessionRecord,
        begin: Begin,
        decision: Option<String>,
    ) -> Result<SessionHandle, SessionError> {
        let SessionRecord {
            id,
            name,
            spec,
            row,
            ended_ms,
            ..
        } = record;
        let mut spec = spec;
        spec.name = Some(name.clone());
        // A size recorded before the limit existed is brought within it, never a reason to
        // leave a running program out of the registry.
        spec.size.rows = spec.size.rows.clamp(1, Size::MAX_ROWS);
        spec.size.cols = spec.size.cols.clamp(1, Size::MAX_COLS);
        check_spec(id, &spec)?;
        // Admitted past the bound, which is for new sessions: a lower bound, or more retained
        // ended sessions, must not leave a running agent out of the registry while its holder
        // keeps it alive.
        let reserved = self.reserve(id, &name, Admission::Existing)?;
        let (start, repairs) = match &self.persist {
            Some(p) => p.open_log(id).await.unwrap_or_else(|e| {
                tracing::error!(session = %id, error = %e, "scrollback unreadable; output offsets restart at 0");
                (0, Vec::new())
            }),
            None => (0, Vec::new()),
        };
        // The end of its log goes back into the Ring, so the screen (and a viewer asking for a
        // snapshot) shows what the terminal showed, not a blank page, until the program draws.
        let tail = match (&self.persist, spec.mode) {
            (Some(p), crate::spec::Mode::Pty) if start > 0 => log_tail(p, id, start, SCREEN_TAIL)
                .await
                .map(|(from, b, _)| (from, b)),
            _ => None,
        };
        let tail_from = tail.as_ref().map(|(from, _)| *from);
        let ring = match tail {
            Some((from, bytes)) => {
                let ring = Ring::with_start(spec.ring_capacity, from);
                ring.append(&bytes);
                ring
            }
            None => Ring::with_start(spec.ring_capacity, start),
        };
        // The sizes that output was written at: parsed at today's alone, a screen drawn before
        // a phone made the terminal narrower came back with rows of an old dialog in it.
        let sizes = match (&self.persist, tail_from, begin) {
            (Some(p), Some(from), Begin::Adopt) => {
                sizes_over(p, id, row.last_seq, from, spec.size).await
            }
            _ => Vec::new(),
        };
        let framed = spec.mode != crate::spec::Mode::Pty;
        let recent = match (&self.persist, begin) {
            // An agent: spawned under a profile, or one whose own hooks said so (Claude Code
            // with corral's hooks in its user settings: its SessionStart named its session).
            (Some(p), Begin::Adopt)
                if spec.agent.is_some() || framed || row.agent_session_id.is_some() =>
            {
                let after = row.last_seq.saturating_sub(REPLAY_EVENTS as u64);
                p.events(id, after, REPLAY_EVENTS).await.unwrap_or_else(|e| {
                    tracing::warn!(session = %id, error = %e, "journal unreadable: the agent's state starts over");
                    Vec::new()
                })
            }
            _ => Vec::new(),
        };
        // A pipe session's lines: the events of those the journal lacks, and the line its log
        // ends inside (the holder's ring holds the rest).
        let (lines, carry) = match (&self.persist, begin) {
            (Some(p), Begin::Adopt) if framed && start > 0 => {
                let covered = recent
                    .iter()
                    .rev()
                    .find(|e| {
                        matches!(
                            e.kind,
                            crate::EventKind::Json { .. } | crate::EventKind::Agent(_)
                        )
                    })
                    .or(recent.last())
                    .map_or(0, |e| e.offset);
                match log_tail(p, id, start, LINE_TAIL).await {
                    Some((from, bytes, whole)) => {
                        let framing = crate::session::lines::Framing::of(spec.mode);
                        crate::session::lines::recover(framing, &bytes, from, whole, covered)
                    }
                    None => (Vec::new(), Some(Vec::new())),
                }
            }
            _ => (Vec::new(), Some(Vec::new())),
        };
        let restored = Restored {
            row,
            decision,
            ended_ms,
            recent,
            lines,
            carry,
            sizes,
        };
        let handle = self
            .register(reserved, spec, ring, Some(restored), begin)
            .await?;
        // Output lost to storage damage is said in the journal, never only in the server's log.
        // A cut end of an adopted session's log is its holder's to refill (or to say lost).
        for repair in repairs {
            if begin == Begin::Adopt && matches!(repair, LogRepair::Cut { .. }) {
                continue;
            }
            handle.shared().emit(crate::EventKind::Recovery {
                decision: repair.describe(),
            });
        }
        Ok(handle)
    }
}

/// How much of a restored PTY session's log is replayed into its Ring (for its screen).
const SCREEN_TAIL: u64 = 64 * 1024;

/// Journaled events looked through for a reattached terminal's sizes (its last ones).
const SIZE_EVENTS: u64 = 5000;

/// The sizes the output from offset `from` on was written at, from the journal's `resized`
/// events among the session's last [`SIZE_EVENTS`] (an index on kind: no other event is read):
/// the size in effect at `from` (the last resize before it, else `spawned`'s size), then each
/// resize after it, in order — at most the emulator's [`crate::screen::SIZES_KEPT`].
async fn sizes_over(
    persist: &Persist,
    id: Uuid,
    last_seq: u64,
    from: u64,
    spawned: Size,
) -> Vec<(u64, Size)> {
    let after = last_seq.saturating_sub(SIZE_EVENTS);
    let events = match persist
        .events_of(id, Some("resized"), after, SIZE_EVENTS as usize)
        .await
    {
        Ok(events) => events,
        Err(e) => {
            tracing::warn!(session = %id, error = %e, "journal unreadable: the screen is rebuilt at today's size");
            return Vec::new();
        }
    };
    let resized: Vec<(u64, Size)> = events
        .iter()
        .filter_map(|e| match e.kind {
            crate::EventKind::Resized { rows, cols } => Some((e.offset, Size { rows, cols })),
            _ => None,
        })
        .collect();
    let at_from = resized
        .iter()
        .rev()
        .find(|(at, _)| *at <= from)
        .map_or(spawned, |(_, size)| *size);
    let mut sizes = vec![(from, at_from)];
    sizes.extend(resized.into_iter().filter(|(at, _)| *at > from));
    let keep = sizes.len().saturating_sub(crate::screen::SIZES_KEPT);
    sizes.drain(..keep);
    sizes
}
/// How much of an adopted pipe session's log is read for its last lines (one line kept whole,
/// and more).
const LINE_TAIL: u64 = crate::session::lines::LINE_MAX as u64 + 64 * 1024;

/// The last `max` bytes of session `id`'s log, which ends at `end` (contiguous: from after the
/// last gap), with their first offset and whether they start at the log's first byte; None if
/// unreadable or empty.
async fn log_tail(p: &Persist, id: Uuid, end: u64, max: u64) -> Option<(u64, Vec<u8>, bool)> {
    let reader = match p.reader(id).await {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(session = %id, error = %e, "the log of an adopted pipe session cannot be read: its last lines are not restored");
            return None;
        }
    };
    let tail = tokio::task::spawn_blocking(move || {
        let first = reader.first_offset()?;
        let from = end.saturating_sub(max).max(first);
        let chunks = match reader.read_range(from, max as usize) {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(session = %id, error = %e, "the tail of an adopted pipe session's log cannot be read: its last lines are not restored");
                return None;
            }
        };
        let mut start = from;
        let mut whole = from == first;
        let mut bytes = Vec::new();
        for c in chunks {
            match c {
                crate::persist::Chunk::Data { offset, bytes: b } => {
                    if bytes.is_empty() {
                        start = offset;
                    }
                    bytes.extend_from_slice(&b);
                }
                crate::persist::Chunk::Gap { to, .. } => {
                    bytes.clear();
                    start = to;
                    whole = false;
                }
            }
        }
        (start + bytes.len() as u64 == end && !bytes.is_empty()).then_some((start, bytes, whole))
    })
    .await;
    tail.unwrap_or_else(|e| {
        tracing::error!(session = %id, error = %e, "reading an adopted pipe session's log tail panicked");
        None
    })
}
