//! The headless screen of one session: a terminal emulator (vt100) that can hand a new viewer
//! the current screen as escape sequences, plus the ring offset from which to continue live.
//!
//! Why it looks like this (DESIGN.md §4): vt100 parses about as fast as a PTY produces bytes, so
//! it must stay off the hot path. The PTY reader only appends to the session's [`Ring`]; the
//! emulator reads the ring *afterwards*, when told to: output went idle
//! ([`ScreenMsg::CatchUp`]), or a quarter of the ring came since the last time while the output
//! is not a flood ([`ScreenMsg::Follow`], see [`Follow`]), or a snapshot is asked for. So the
//! screen of a program that redraws without a pause (a TUI, an agent's spinner) is never
//! lapped by its own output: a viewer who joins late, or a phone that looks an hour later, gets
//! the exact screen. The vt100 parser (~60 KB for 80×24) is created by the first snapshot or
//! the first `Follow`, while the ring still holds everything: a session that printed a prompt
//! and waits costs nothing here.
//!
//! Only a flood (output faster than [`Follow`] follows) can lap the emulator: it then goes on
//! from the oldest retained byte with the state it had, and marks its snapshots approximate,
//! see [`Emulator`] for exactly when that mark is cleared again.
//!
//! [`Emulator`] does all the work synchronously (unit-testable); [`Screen`] is the thin ractor
//! wrapper that owns one and yields between chunks so a big catch-up does not hog a worker.
//!
//! Files: `emulator.rs` (the parser and its position in the ring), `snapshot.rs` (drawing a
//! screen), `follow.rs` (when to follow the output), `mirror.rs` (a viewer's own copy of the
//! screen); this file is the actor.

mod emulator;
mod follow;
mod mirror;
mod scrolled;
mod snapshot;

pub use emulator::{CHUNK, Emulator, SIZES_KEPT};
pub use follow::{FOLLOW_RATE, Follow};
pub use mirror::Mirror;
pub use snapshot::{Snapshot, Untracked};

use corral_runtime::Ring;

use crate::history;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};

/// Tells a session's screen (if it has one, a PTY session's) to catch up or follow: a message,
/// so the parsing runs in the screen's own actor, off the output path.
pub fn tell(screen: Option<&ActorRef<ScreenMsg>>, msg: ScreenMsg) {
    if let Some(screen) = screen
        && let Err(e) = screen.send_message(msg)
    {
        tracing::debug!(error = %e, "screen gone; no catch-up");
    }
}

/// Arguments of [`Screen`].
#[derive(Debug)]
pub struct ScreenArgs {
    /// The session's output log.
    pub ring: Ring,
    /// Initial terminal height.
    pub rows: u16,
    /// Initial terminal width.
    pub cols: u16,
}

/// Messages to a [`Screen`].
#[derive(Debug)]
pub enum ScreenMsg {
    /// Output went idle: feed what the ring holds now (no-op until the parser exists).
    CatchUp,
    /// Output has been coming for a while ([`Follow`]): create the parser if needed, then feed
    /// what the ring holds now.
    Follow,
    /// Catch up, then reply with the current screen.
    Snapshot(RpcReplyPort<Snapshot>),
    /// Catch up, then reply with the current screen and the history before it
    /// ([`Snapshot::with_history`], [`crate::history`]), for a terminal of `rows` rows (None:
    /// the session's height).
    SnapshotWithHistory(RpcReplyPort<Snapshot>, Option<u16>),
    /// Catch up, then reply with the current screen's text ([`Emulator::text`]).
    Text(RpcReplyPort<String>),
    /// The PTY was resized; applies from the ring's head *when this message is handled*, so
    /// output appended between the PTY resize and then is parsed at the new size (prefer
    /// [`ScreenMsg::ResizeAt`] when the sender can read the head).
    Resize {
        /// New height.
        rows: u16,
        /// New width.
        cols: u16,
    },
    /// A new process of the session starts writing at ring offset `at` (a restart).
    NewProcessAt(u64),
    /// The PTY was resized when the ring's head was `at` (exact however late this is handled).
    ResizeAt {
        /// `ring.head()` read right after resizing the PTY.
        at: u64,
        /// New height.
        rows: u16,
        /// New width.
        cols: u16,
    },
}

/// The text of the screen `screen` shows now ([`ScreenMsg::Text`]); None when it does not
/// answer within `timeout` (a flood's catch-up) or is gone.
pub async fn text_of(screen: &ActorRef<ScreenMsg>, timeout: std::time::Duration) -> Option<String> {
    match screen.call(ScreenMsg::Text, Some(timeout)).await {
        Ok(ractor::rpc::CallResult::Success(text)) => Some(text),
        _ => None,
    }
}

/// The screen actor of one session: owns an [`Emulator`] and serves [`ScreenMsg`]s.
#[derive(Debug, Clone, Copy, Default)]
pub struct Screen;

impl Screen {
    /// The screen now, with the history before it ([`Snapshot::with_history`]) rebuilt from
    /// the output (a megabyte through vt100: off the runtime's workers). A screen made taller
    /// has blank rows at its top where a terminal shows the rows that scrolled off last: the
    /// replay keeps a scrollback then, and they come from it (its history leaves them out);
    /// if that replay's screen is neither this one nor this one with them filled in, the
    /// history is replayed again without.
    async fn with_history(emulator: &mut Emulator, viewer_rows: Option<u16>) -> Snapshot {
        emulator.ensure_parser();
        Screen::catch_up(emulator).await;
        if let Some(kept) = emulator.history_kept(viewer_rows) {
            return kept;
        }
        match Screen::replay_history(emulator, viewer_rows).await {
            Ok(snapshot) => {
                emulator.keep_history(viewer_rows, &snapshot);
                snapshot
            }
            // Not kept: the next viewer's request tries again.
            Err(screen_alone) => screen_alone,
        }
    }

    /// [`Screen::with_history`]'s replay: the snapshot with its history, or (Err) the screen
    /// alone when the history could not be rebuilt.
    async fn replay_history(
        emulator: &mut Emulator,
        viewer_rows: Option<u16>,
    ) -> Result<Snapshot, Snapshot> {
        let snapshot = emulator.render();
        let source = emulator.history_source();
        let (took, replayed) = (std::time::Instant::now(), source.bytes.len());
        let pulled = source.pulled_rows();
        let rebuilt = tokio::task::spawn_blocking(move || {
            let (history, screen) = history::replay(&source, pulled.unwrap_or(0));
            (history, screen, source)
        })
        .await;
        let (history, snapshot) = match rebuilt {
            // The replay's screen is this one (output after the screen grew scrolled the rows
            // it took back off again, or the program redrew it): its history runs on where the
            // screen starts, and a replay without a scrollback would have left blank lines
            // where those rows were.
            Ok((history, screen, _)) if pulled.is_none() || emulator.shows(&screen) => {
                (Ok(history), snapshot)
            }
            Ok((history, screen, source)) => match emulator.render_over_pulled(&screen) {
                Some(filled) => (Ok(history), filled),
                None => (
                    tokio::task::spawn_blocking(move || history::rebuild(&source)).await,
                    snapshot,
                ),
            },
            Err(e) => (Err(e), snapshot),
        };
        match history {
            Ok(history) => {
                tracing::debug!(
                    replayed,
                    rows = history.rows,
                    took_ms = took.elapsed().as_secs_f64() * 1e3,
                    "history rebuilt"
                );
                Ok(snapshot.with_history(&history, viewer_rows))
            }
            Err(e) => {
                tracing::warn!(error = %e, "history not rebuilt; the screen alone");
                Err(snapshot)
            }
        }
    }

    /// Feeds towards the head as of now, one chunk at a time, yielding in between so a large
    /// backlog does not monopolise a runtime worker.
    async fn catch_up(emulator: &mut Emulator) {
        let target = emulator.ring.head();
        let mut buf = Vec::new();
        while !emulator.feed_chunk(target, &mut buf) {
            tokio::task::yield_now().await;
        }
    }
}

impl Actor for Screen {
    type Msg = ScreenMsg;
    type State = Emulator;
    type Arguments = ScreenArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<ScreenMsg>,
        args: ScreenArgs,
    ) -> Result<Emulator, ActorProcessingErr> {
        Ok(Emulator::new(args.ring, args.rows, args.cols))
    }

    async fn handle(
        &self,
        _myself: ActorRef<ScreenMsg>,
        msg: ScreenMsg,
        emulator: &mut Emulator,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            ScreenMsg::CatchUp => Screen::catch_up(emulator).await,
            ScreenMsg::Follow => {
                emulator.ensure_parser();
                Screen::catch_up(emulator).await;
            }
            ScreenMsg::Snapshot(reply) => {
                emulator.ensure_parser();
                Screen::catch_up(emulator).await;
                if reply.send(emulator.render()).is_err() {
                    // The requester gave up (timeout or gone); nothing to undo.
                    tracing::debug!("snapshot requester went away before the reply");
                }
            }
            ScreenMsg::SnapshotWithHistory(reply, viewer_rows) => {
                let snapshot = Screen::with_history(emulator, viewer_rows).await;
                if reply.send(snapshot).is_err() {
                    tracing::debug!("snapshot requester went away before the reply");
                }
            }
            ScreenMsg::Text(reply) => {
                emulator.ensure_parser();
                Screen::catch_up(emulator).await;
                if reply.send(emulator.screen_text()).is_err() {
                    tracing::debug!("screen text requester went away before the reply");
                }
            }
            ScreenMsg::Resize { rows, cols } => emulator.resize(rows, cols),
            ScreenMsg::ResizeAt { at, rows, cols } => emulator.resize_at(at, rows, cols),
            ScreenMsg::NewProcessAt(at) => emulator.new_process_at(at),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A snapshot with history asked again at the same screen is the one kept, not a second
    /// replay; new output, a resize or other rows make a new one.
    #[tokio::test]
    async fn a_history_is_replayed_once_per_screen() {
        let ring = Ring::new(1 << 20);
        let mut em = Emulator::new(ring.clone(), 24, 80);
        let lines: Vec<u8> = (0..500)
            .flat_map(|i| format!("line {i}\r\n").into_bytes())
            .collect();
        ring.append(&lines);
        let first = Screen::with_history(&mut em, Some(24)).await;
        let again = Screen::with_history(&mut em, Some(24)).await;
        assert_eq!(first, again);
        assert_eq!(em.history_replays, 1, "asked twice at the same screen");
        Screen::with_history(&mut em, Some(30)).await;
        assert_eq!(em.history_replays, 2, "other rows");
        ring.append(b"one more\r\n");
        let later = Screen::with_history(&mut em, Some(24)).await;
        assert_eq!(em.history_replays, 3, "new output");
        assert_ne!(later, first);
        em.resize(30, 100);
        Screen::with_history(&mut em, Some(24)).await;
        assert_eq!(em.history_replays, 4, "a resize");
    }
}
