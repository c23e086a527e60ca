//! The emulator of a session's screen: a vt100 parser fed from the session's [`Ring`] when told
//! (lazily created, resized at the exact offsets the PTY was, going on approximately after the
//! ring lapped it), which renders the current screen as a [`Snapshot`]. Synchronous and
//! unit-testable; the [`super::Screen`] actor owns one.

use std::collections::VecDeque;
use std::fmt;
use std::num::NonZeroU16;

use corral_runtime::{Lagged, Read, Ring};

use super::scrolled::Scrolled;
use super::snapshot::{Snapshot, Untracked, format_screen, margins};
use crate::charset::Charsets;
use crate::history::{self, HISTORY_BYTES, SizeAt};
use crate::terminal::{LEAVE_ALTERNATE, NEW_PROCESS_MODES, boundary};

/// Most bytes read from the ring (and fed to the parser) in one step, so catching up on a huge
/// backlog uses a bounded buffer and the actor can yield between steps.
pub const CHUNK: usize = 64 * 1024;

/// Most resizes remembered while the emulator is behind; older ones are applied early (a
/// harmless approximation only reachable by a resize storm on a screen nobody looks at).
const MAX_PENDING_RESIZES: usize = 64;

/// Sequences after which the screen no longer depends on bytes before them (see
/// [`Emulator::is_approximate`]): full reset, and "erase entire display" (what `clear` sends).
const RESET_POINTS: [&[u8]; 2] = [b"\x1bc", b"\x1b[2J"];

/// Bytes kept from the previous chunk so a reset point split across two chunks is still seen.
const SEAM: usize = 3; // longest reset point - 1

/// A terminal size as vt100 wants it (never zero).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Dims {
    /// Rows, at least 1.
    rows: NonZeroU16,
    /// Columns, at least 1.
    cols: NonZeroU16,
}

impl Dims {
    /// Clamps a zero dimension to 1: a PTY can report 0×0 before its first resize, and vt100
    /// cannot represent that.
    fn new(rows: u16, cols: u16) -> Dims {
        Dims {
            rows: NonZeroU16::new(rows).unwrap_or(NonZeroU16::MIN),
            cols: NonZeroU16::new(cols).unwrap_or(NonZeroU16::MIN),
        }
    }

    /// A parser of this size without scrollback: snapshots only show the visible screen, and
    /// scrollback would cost memory proportional to history — and parsing time: vt100 moves a
    /// row into its scrollback with two allocations, 4× slower on short lines than a row
    /// cleared in place (16 MB of `seq` output: 22 against 82 MB/s; 50 screens of full lines
    /// held 11 MB more with 64 rows kept: docs/performance.md, session 26). A screen made
    /// taller gets blank rows at its top; a snapshot with history fills them in
    /// ([`Emulator::render_over_pulled`], [`crate::history::Source::pulled_rows`]).
    fn parser(self) -> vt100::Parser<Untracked> {
        vt100::Parser::new_with_callbacks(self.rows, self.cols, 0, Untracked::default())
    }
}

/// A resize that takes effect once the emulator reaches ring offset `at`: bytes written before
/// the PTY was resized must be parsed at the old size, or lines wrap differently.
#[derive(Debug, Clone, Copy)]
struct SizeChange {
    /// Ring head when the resize was announced.
    at: u64,
    /// The new size.
    dims: Dims,
    /// A new process starts writing here: the last one's modes are reset first (see
    /// [`Emulator::new_process_at`]).
    new_process: bool,
}

/// The synchronous core of [`super::Screen`]: a lazily created vt100 parser fed from a [`Ring`].
///
/// **Position.** The emulator has consumed the ring up to [`Emulator::position`]; it starts at
/// the ring's tail when created, which is taken to be the start of the session's output (create
/// it with the session, before output; earlier bytes count as lost if they are gone by the time
/// they are needed).
///
/// **Laziness.** No parser exists until the first [`Emulator::follow`] or
/// [`Emulator::snapshot`], which parses everything retained since the start;
/// [`Emulator::catch_up`] does nothing before that.
///
/// **Lag and approximation.** When bytes at the position are no longer retained (the ring
/// lagged it), the emulator goes on at the oldest retained byte — skipped on to the first
/// escape sequence or line there, so that a sequence cut in half does not print its tail as
/// text — with the state it had: the modes, the alternate screen and the parts of the screen
/// the retained bytes do not redraw are likelier right than a blank terminal's (a fresh parser
/// lost a TUI's alternate screen, mouse mode and static header). It becomes *approximate*: the
/// screen lacks whatever the lost bytes drew. It stays
/// approximate until a point in the stream after which the screen no longer depends on earlier
/// bytes: a full reset (`ESC c`), an erase of the whole display (`ESC [2J`, what `clear` and
/// most full-screen programs send), or a whole screen of lines scrolled in on the primary
/// screen without a scroll region (a shell after a flood: see [`super::scrolled`]). After an
/// erase the visible cells are exact again; modes set
/// before the cut (e.g. alternate screen, scroll region) may still differ, which is accepted
/// because programs that clear the screen normally redraw and re-establish their state.
pub struct Emulator {
    /// The session's output log.
    pub(super) ring: Ring,
    /// The emulator, from the first snapshot or follow on.
    parser: Option<vt100::Parser<Untracked>>,
    /// Next ring offset to feed.
    pos: u64,
    /// Size in effect at `pos` (the parser's size when there is one).
    dims: Dims,
    /// Resizes not yet reached by `pos`, in offset order.
    pending: VecDeque<SizeChange>,
    /// The parser's history has a gap (see the type's docs).
    approximate: bool,
    /// Last bytes fed while approximate, to spot a reset point across a chunk boundary.
    seam: Vec<u8>,
    /// While approximate: whether a whole screen has scrolled in since the cut.
    scrolled: Scrolled,
    /// How many times the parser was rebuilt after a lag.
    rebuilds: u64,
    /// Total bytes the emulator never saw because the ring dropped them first.
    lost: u64,
    /// The charsets the output selected (DEC line drawing, which vt100 does not follow).
    charsets: Charsets,
    /// The sizes in effect from the offsets where they took effect, the latest
    /// [`SIZES_KEPT`] (a history replay parses each part at its size, see [`crate::history`]).
    sizes: VecDeque<SizeAt>,
    /// The last snapshot with history and the screen it was made at ([`Emulator::history_kept`]):
    /// another viewer asking at the same screen gets it without a second replay.
    history: Option<(HistoryKey, super::Snapshot)>,
    /// History replays run (not counting the ones a kept snapshot saved).
    pub(super) history_replays: u64,
}

/// What a snapshot with history depends on: the output fed, the size and its changes, the
/// rows the viewer asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct HistoryKey {
    pos: u64,
    dims: Dims,
    sizes: (usize, Option<u64>),
    pending: usize,
    viewer_rows: Option<u16>,
}

/// Sizes remembered for history replays (an older part is replayed at the oldest kept).
pub const SIZES_KEPT: usize = 64;

impl Emulator {
    /// An emulator for a session whose output goes to `ring`, on a `rows`×`cols` terminal (zero
    /// is treated as 1). Allocates no parser yet.
    pub fn new(ring: Ring, rows: u16, cols: u16) -> Emulator {
        let pos = ring.tail();
        let dims = Dims::new(rows, cols);
        Emulator {
            ring,
            parser: None,
            pos,
            dims,
            pending: VecDeque::new(),
            approximate: false,
            seam: Vec::new(),
            scrolled: Scrolled::default(),
            rebuilds: 0,
            lost: 0,
            charsets: Charsets::default(),
            sizes: VecDeque::from([SizeAt {
                at: pos,
                rows: dims.rows,
                cols: dims.cols,
                new_process: false,
            }]),
            history: None,
            history_replays: 0,
        }
    }

    fn history_key(&self, viewer_rows: Option<u16>) -> HistoryKey {
        HistoryKey {
            pos: self.pos,
            dims: self.dims,
            sizes: (self.sizes.len(), self.sizes.back().map(|s| s.at)),
            pending: self.pending.len(),
            viewer_rows,
        }
    }

    /// The snapshot with history last made, if the screen has not changed since (no output,
    /// no resize) and the viewer asks for the same rows: a replay of up to a megabyte through
    /// vt100 is not run again for the same answer (a page reloaded, viewers opening at once,
    /// or a client asking in a loop).
    pub(super) fn history_kept(&self, viewer_rows: Option<u16>) -> Option<super::Snapshot> {
        let key = self.history_key(viewer_rows);
        self.history
            .as_ref()
            .filter(|(k, _)| *k == key)
            .map(|(_, s)| s.clone())
    }

    /// Keeps `snapshot`, just made with its history at this screen (one per session).
    pub(super) fn keep_history(&mut self, viewer_rows: Option<u16>, snapshot: &super::Snapshot) {
        self.history_replays += 1;
        self.history = Some((self.history_key(viewer_rows), snapshot.clone()));
    }

    /// Whether the vt100 parser has been allocated (it is, from the first snapshot or follow on).
    pub fn has_parser(&self) -> bool {
        self.parser.is_some()
    }

    /// Ring offset of the next byte the emulator will feed.
    pub fn position(&self) -> u64 {
        self.pos
    }

    /// The latest size announced with [`Emulator::resize`] (or given to [`Emulator::new`]).
    pub fn size(&self) -> (u16, u16) {
        let dims = self.pending.back().map_or(self.dims, |c| c.dims);
        (dims.rows.get(), dims.cols.get())
    }

    /// Whether the screen may be incomplete because bytes were lost (see the type's docs).
    pub fn is_approximate(&self) -> bool {
        self.approximate
    }

    /// How many times the emulator restarted from the ring's tail after losing bytes.
    pub fn rebuilds(&self) -> u64 {
        self.rebuilds
    }

    /// Total bytes the emulator never saw because the ring dropped them first.
    pub fn lost_bytes(&self) -> u64 {
        self.lost
    }

    /// Feeds everything from the position to the ring's current head (bytes appended meanwhile
    /// are left for next time, so a busy writer cannot keep this going forever). Does nothing
    /// before the parser exists (see [`Emulator::follow`]).
    pub fn catch_up(&mut self) {
        let target = self.ring.head();
        let mut buf = Vec::new();
        while !self.feed_chunk(target, &mut buf) {}
    }

    /// Output has been coming for a while ([`super::Follow`]): creates the parser if this is the
    /// first time (everything since the start is still retained then), and catches up.
    pub fn follow(&mut self) {
        self.ensure_parser();
        self.catch_up();
    }

    /// The session resized its PTY to `rows`×`cols` (zero is treated as 1), effective from the
    /// ring's current head: bytes before it are still parsed at the old size.
    pub fn resize(&mut self, rows: u16, cols: u16) {
        self.resize_at(self.ring.head(), rows, cols);
    }

    /// Like [`Emulator::resize`], effective from ring offset `at`: the head the session read when
    /// it resized the PTY, which is exact even if this call comes late. An `at` the emulator has
    /// already fed past applies now. The latest call wins: resizes announced earlier but due at
    /// or after `at` are dropped.
    pub fn resize_at(&mut self, at: u64, rows: u16, cols: u16) {
        self.change_at(at, Dims::new(rows, cols), false);
    }

    /// A new process of the session starts writing at ring offset `at` (a restart): its
    /// predecessor's terminal modes are reset there ([`NEW_PROCESS_MODES`]), the screen's
    /// contents kept.
    pub fn new_process_at(&mut self, at: u64) {
        let dims = self.pending.back().map_or(self.dims, |c| c.dims);
        self.change_at(at, dims, true);
    }

    fn change_at(&mut self, at: u64, dims: Dims, new_process: bool) {
        let at = at.max(self.pos);
        let mut new_process = new_process;
        while self.pending.back().is_some_and(|c| c.at >= at) {
            // A later size wins, but a new process announced there still starts there.
            if let Some(dropped) = self.pending.pop_back() {
                new_process |= dropped.new_process && dropped.at == at;
            }
        }
        self.pending.push_back(SizeChange {
            at,
            dims,
            new_process,
        });
        // A caught-up emulator resizes right away.
        self.apply_due_resizes();
        while self.pending.len() > MAX_PENDING_RESIZES {
            if let Some(oldest) = self.pending.pop_front() {
                self.set_dims(oldest.dims);
            }
        }
    }

    /// Catches up (creating the parser on first use) and returns the current screen.
    pub fn snapshot(&mut self) -> Snapshot {
        self.ensure_parser();
        self.catch_up();
        self.render()
    }

    /// The current screen's text, row by row (what a person reads on it: no colours, no
    /// scrollback), after catching up with the output so far.
    pub fn text(&mut self) -> String {
        self.ensure_parser();
        self.catch_up();
        self.screen_text()
    }

    /// What the history before the parsed position is rebuilt from ([`crate::history`]): the
    /// last [`HISTORY_BYTES`] of output the ring still holds up to there, and the sizes over it.
    pub fn history_source(&self) -> history::Source {
        let from = self.pos.saturating_sub(HISTORY_BYTES).max(self.ring.tail());
        let mut source = history::Source {
            start: from,
            ..Default::default()
        };
        let mut at = from;
        let mut buf = Vec::new();
        while at < self.pos {
            buf.clear();
            let max = usize::try_from(self.pos - at).map_or(CHUNK, |n| n.min(CHUNK));
            match self.ring.read_at(at, &mut buf, max) {
                Read::Data { offset, len } if len > 0 => {
                    if source.bytes.is_empty() {
                        source.start = offset;
                    }
                    source.bytes.extend_from_slice(&buf[..len]);
                    at = offset + len as u64;
                }
                // The ring moved on under us: what is left starts later.
                Read::Lagged(lag) => {
                    source.bytes.clear();
                    at = lag.to;
                }
                _ => break,
            }
        }
        // The size in effect at the start (the latest at or before it), then those after.
        let first = self
            .sizes
            .iter()
            .rposition(|s| s.at <= source.start)
            .unwrap_or(0);
        source.sizes = self
            .sizes
            .iter()
            .skip(first)
            // One at the parsed position too: a resize just before the snapshot (a taller
            // screen takes rows back from the history).
            .filter(|s| s.at <= self.pos)
            .copied()
            .collect();
        source
    }

    /// The text of the screen as parsed so far (see [`Emulator::text`]).
    pub(super) fn screen_text(&mut self) -> String {
        let dims = self.dims;
        self.parser
            .get_or_insert_with(|| dims.parser())
            .screen()
            .contents()
    }

    /// Allocates the parser if this is the first time it is needed.
    pub(super) fn ensure_parser(&mut self) {
        if self.parser.is_none() {
            self.parser = Some(self.dims.parser());
        }
    }

    /// Feeds at most one chunk (≤ [`CHUNK`] bytes) towards ring offset `target`, reading through
    /// `buf`. Returns `true` when there is nothing left to do: `target` reached, nothing more
    /// readable, or no parser.
    pub(super) fn feed_chunk(&mut self, target: u64, buf: &mut Vec<u8>) -> bool {
        if self.parser.is_none() {
            return true;
        }
        self.apply_due_resizes();
        if self.pos >= target {
            return true;
        }
        // Stop at the next resize so the bytes before it are parsed at the old size.
        let limit = self.pending.front().map_or(target, |c| c.at.min(target));
        let max = usize::try_from(limit - self.pos).map_or(CHUNK, |n| n.min(CHUNK));
        buf.clear();
        match self.ring.read_at(self.pos, buf, max) {
            Read::Data { offset, len } => {
                debug_assert_eq!(offset, self.pos);
                if len == 0 {
                    // Only possible for max == 0, which the limit above rules out; never spin.
                    return true;
                }
                self.process(&buf[..len]);
                self.pos += len as u64;
                buf.clear();
                self.apply_due_resizes();
                self.pos >= target
            }
            Read::Lagged(lag) => {
                self.rebuild(lag);
                self.pos >= target
            }
            Read::Empty | Read::Closed => true,
        }
    }

    /// Goes on from the oldest retained byte after `lag`, keeping the parser's state (see the
    /// type's docs), from the first escape sequence or line start there.
    fn rebuild(&mut self, lag: Lagged) {
        tracing::debug!(
            from = lag.from,
            to = lag.to,
            lost = lag.lost(),
            "screen emulator fell behind the ring; going on from the oldest retained byte"
        );
        self.pos = lag.to;
        let mut head = Vec::new();
        if let Read::Data { len, .. } = self.ring.read_at(self.pos, &mut head, ALIGN) {
            self.pos += boundary(&head[..len]) as u64;
        }
        self.lost += self.pos - lag.from;
        self.rebuilds += 1;
        // Resizes announced before the cut were in effect when the retained bytes were written.
        self.apply_due_resizes();
        self.ensure_parser();
        self.approximate = true;
        self.seam.clear();
        self.scrolled.restart();
        self.charsets.resume_at_boundary();
    }

    /// Feeds `bytes` to the parser and watches for a reset point while approximate.
    fn process(&mut self, bytes: &[u8]) {
        if let Some(parser) = &mut self.parser {
            parser.process(&self.charsets.translate(bytes));
        }
        if !self.approximate {
            return;
        }
        let head = &bytes[..bytes.len().min(SEAM)];
        let seam: Vec<u8> = self.seam.iter().chain(head).copied().collect();
        if has_reset_point(&seam) || has_reset_point(bytes) || self.scrolled_in(bytes) {
            self.approximate = false;
            self.seam.clear();
            return;
        }
        self.seam
            .extend_from_slice(&bytes[bytes.len().saturating_sub(SEAM)..]);
        let excess = self.seam.len().saturating_sub(SEAM);
        self.seam.drain(..excess);
    }

    /// Whether, with `bytes`, a whole screen has scrolled in on the primary screen with no
    /// scroll region: every visible row written after the cut.
    fn scrolled_in(&mut self, bytes: &[u8]) -> bool {
        if !self.scrolled.feed(bytes, self.dims.rows.get()) {
            return false;
        }
        self.parser.as_ref().is_some_and(|p| {
            let screen = p.screen();
            let (top, bottom, _) = margins(screen);
            !screen.alternate_screen() && top == 0 && bottom + 1 == screen.size().0.get()
        })
    }

    /// Applies every pending resize (and new process's reset) the position has reached.
    fn apply_due_resizes(&mut self) {
        while let Some(change) = self.pending.front().copied()
            && change.at <= self.pos
        {
            self.pending.pop_front();
            self.set_dims(change.dims);
            if self.sizes.len() >= SIZES_KEPT {
                self.sizes.pop_front();
            }
            self.sizes.push_back(SizeAt {
                at: change.at,
                rows: change.dims.rows,
                cols: change.dims.cols,
                new_process: change.new_process,
            });
            if change.new_process
                && let Some(parser) = &mut self.parser
            {
                if parser.screen().alternate_screen() {
                    parser.process(LEAVE_ALTERNATE.as_bytes());
                }
                parser.process(&self.charsets.translate(NEW_PROCESS_MODES.as_bytes()));
            }
        }
    }

    /// Makes `dims` the size in effect now, resizing the parser if there is one.
    fn set_dims(&mut self, dims: Dims) {
        if dims == self.dims {
            return;
        }
        self.dims = dims;
        // Rows counted at another height.
        self.scrolled.restart();
        if let Some(parser) = &mut self.parser {
            parser.set_size(dims.rows, dims.cols);
        }
    }

    /// The snapshot of the screen as parsed so far (creating the parser if needed).
    pub(super) fn render(&mut self) -> Snapshot {
        let dims = self.dims;
        self.parser.get_or_insert_with(|| dims.parser());
        // invariant: made just above.
        let parser = self.parser.as_ref().expect("parser");
        self.snapshot_of(parser.screen(), parser.callbacks())
    }

    /// The snapshot of `screen` (this emulator's, or a copy of it) at the parsed position.
    fn snapshot_of(&self, screen: &vt100::Screen, untracked: &Untracked) -> Snapshot {
        let (rows, cols) = screen.size();
        // The charsets last, for the live output that follows.
        let mut bytes = format_screen(screen, untracked);
        bytes.extend_from_slice(self.charsets.restore().as_bytes());
        Snapshot {
            bytes,
            offset: self.pos,
            rows: rows.get(),
            cols: cols.get(),
            approximate: self.approximate,
            bracketed_paste: screen.bracketed_paste(),
        }
    }

    /// Whether `replayed` (the screen a replay of the output ended with, `history::replay`)
    /// is this screen: the same size, the same screen (primary or alternate), every row the
    /// same text in the same colours.
    pub fn shows(&self, replayed: &vt100::Screen) -> bool {
        self.parser.as_ref().is_some_and(|p| {
            let screen = p.screen();
            let cols = screen.size().1.get();
            screen.size() == replayed.size()
                && screen.alternate_screen() == replayed.alternate_screen()
                && screen
                    .rows_formatted(0, cols)
                    .eq(replayed.rows_formatted(0, cols))
        })
    }

    /// The snapshot of the screen with its blank top rows filled from `replayed`, the screen a
    /// replay of the output with a scrollback ended with (`history::replay`), when the screen
    /// was made taller: vt100 without a scrollback puts blank rows at the top where a terminal
    /// shows the rows that scrolled off last (xterm, xterm.js, tmux), and the replay has those.
    /// None unless this is exactly that: both on the primary screen, the same size, the screen's
    /// first rows blank where the replay's are not, and every row below them the same (a replay
    /// that started too late to be this screen is not used).
    pub fn render_over_pulled(&self, replayed: &vt100::Screen) -> Option<Snapshot> {
        let parser = self.parser.as_ref()?;
        let screen = parser.screen();
        if screen.alternate_screen()
            || replayed.alternate_screen()
            || screen.size() != replayed.size()
        {
            return None;
        }
        let cols = screen.size().1.get();
        let mine: Vec<String> = screen.rows(0, cols).collect();
        let theirs: Vec<String> = replayed.rows(0, cols).collect();
        // The rows above the ones both have alike to the bottom: blank here (the pulled rows may
        // hold blank lines too), not all blank there.
        let same = mine
            .iter()
            .rev()
            .zip(theirs.iter().rev())
            .take_while(|(m, t)| m == t)
            .count();
        let blank = mine.len() - same;
        if blank == 0
            || !mine[..blank].iter().all(String::is_empty)
            || theirs[..blank].iter().all(String::is_empty)
        {
            return None;
        }
        // Written into a copy of the screen: cursor, attributes and origin mode saved, each
        // row drawn in plain colours from its first column, then all restored.
        let mut patched = vt100::Parser::new_with_callbacks(
            NonZeroU16::MIN,
            NonZeroU16::MIN,
            0,
            Untracked::default(),
        );
        *patched.screen_mut() = screen.clone();
        let mut rows = b"\x1b7\x1b[?6l".to_vec();
        for (i, row) in replayed.rows_formatted(0, cols).take(blank).enumerate() {
            rows.extend_from_slice(format!("\x1b[{};1H\x1b[m", i + 1).as_bytes());
            rows.extend_from_slice(row.as_bytes());
        }
        rows.extend_from_slice(b"\x1b[m\x1b8");
        patched.process(&rows);
        Some(self.snapshot_of(patched.screen(), parser.callbacks()))
    }
}

impl fmt::Debug for Emulator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Emulator")
            .field("has_parser", &self.has_parser())
            .field("position", &self.pos)
            .field("size", &self.size())
            .field("approximate", &self.approximate)
            .field("rebuilds", &self.rebuilds)
            .field("lost", &self.lost)
            .finish_non_exhaustive()
    }
}

/// How far past a cut [`Emulator`] looks for a place to go on from.
const ALIGN: usize = 4096;

/// Whether `bytes` contain a reset point (see [`Emulator`]).
fn has_reset_point(bytes: &[u8]) -> bool {
    bytes
        .iter()
        .enumerate()
        .filter(|&(_, &b)| b == 0x1b)
        .any(|(i, _)| RESET_POINTS.iter().any(|p| bytes[i..].starts_with(p)))
}
