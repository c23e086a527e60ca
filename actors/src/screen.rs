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

use std::collections::VecDeque;
use std::fmt;
use std::num::NonZeroU16;

use corral_runtime::{Lagged, Read, Ring};

use crate::history::{self, HISTORY_BYTES, History, SizeAt};
use crate::terminal::{LEAVE_ALTERNATE, NEW_PROCESS_MODES, boundary};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};

/// Most bytes read from the ring (and fed to the parser) in one step, so catching up on a huge
/// backlog uses a bounded buffer and the actor can yield between steps.
pub const CHUNK: usize = 64 * 1024;

/// Most resizes remembered while the emulator is behind; older ones are applied early (a
/// harmless approximation only reachable by a resize storm on a screen nobody looks at).
const MAX_PENDING_RESIZES: usize = 64;

/// Full reset (RIS). Prefixed to every snapshot so it draws correctly on a dirty terminal too:
/// it resets modes, attributes, scroll region and clears. Some terminals (tmux) stay on the
/// alternate screen through it: `?47l` leaves it first (a no-op on the primary screen, and no
/// cursor restore, unlike `?1049l`).
const FULL_RESET: &str = "\x1b[?47l\x1bc";

/// Sequences after which the screen no longer depends on bytes before them (see
/// [`Emulator::is_approximate`]): full reset, and "erase entire display" (what `clear` sends).
const RESET_POINTS: [&[u8]; 2] = [b"\x1bc", b"\x1b[2J"];

/// Bytes kept from the previous chunk so a reset point split across two chunks is still seen.
const SEAM: usize = 3; // longest reset point - 1

/// The current screen of a session, ready to be drawn on a fresh terminal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// Escape sequences reproducing the screen (contents, colours and attributes, cursor position
    /// and visibility, alternate screen, input modes) on a terminal of `rows`×`cols`. Starts with
    /// a full reset. Its size is bounded by the screen size, never by history.
    pub bytes: Vec<u8>,
    /// Ring offset this screen corresponds to: draw `bytes`, then stream the ring from here.
    pub offset: u64,
    /// Screen height the bytes were made for.
    pub rows: u16,
    /// Screen width the bytes were made for.
    pub cols: u16,
    /// Bytes the emulator needed were gone from the ring, so the screen may differ from what a
    /// terminal that saw everything would show (see [`Emulator::is_approximate`]).
    pub approximate: bool,
    /// The program enabled bracketed paste (`CSI ? 2004 h`): pasted text should be wrapped in
    /// `CSI 200 ~` … `CSI 201 ~`.
    pub bracketed_paste: bool,
}

/// Modes a program may have left on that a redraw over a live terminal turns off first (a full
/// reset does it for a fresh terminal; the snapshot then turns on those still on): mouse
/// reporting and its encodings, bracketed paste, application cursor keys and keypad, a hidden
/// cursor, the alternate screen.
const MODES_OFF: &str = "\x1b[?1000l\x1b[?1002l\x1b[?1003l\x1b[?1005l\x1b[?1006l\x1b[?2004l\x1b[?1l\x1b>\x1b[?25h\x1b[?47l";

impl Snapshot {
    /// The same screen with `history` before it: the rows are put into a fresh terminal's
    /// scrollback ([`History::scrolled_in`]), then the screen drawn on the blank screen left
    /// (an erase of the display, which xterm.js does not push into the scrollback; a full reset
    /// would wipe it). `viewer_rows`: the height of the terminal this is written into, when the
    /// viewer knows it (its rows the session's size has not reached yet were erased, not
    /// scrolled into its scrollback: 32 lines lost in a 56-row page); else the session's.
    pub fn with_history(mut self, history: &History, viewer_rows: Option<u16>) -> Snapshot {
        let rows = history.scrolled_in(viewer_rows.filter(|r| *r > 0).unwrap_or(self.rows));
        if rows.is_empty() {
            return self;
        }
        let body = self
            .bytes
            .strip_prefix(FULL_RESET.as_bytes())
            .unwrap_or(&self.bytes);
        let mut out = Vec::with_capacity(FULL_RESET.len() + rows.len() + 8 + body.len());
        out.extend_from_slice(FULL_RESET.as_bytes());
        out.extend_from_slice(&rows);
        out.extend_from_slice(b"\x1b[H\x1b[2J");
        out.extend_from_slice(body);
        self.bytes = out;
        self
    }

    /// The same screen drawn over a terminal that is showing the session already and keeps its
    /// scrollback (a viewer the output lapped): what it shows is pushed up into its scrollback
    /// (with `note` under it), then a soft reset (DECSTR) and the modes turned off take the
    /// place of the full reset — which in xterm.js (ttyd's page, corral's) also wipes the
    /// scrollback, and the note with it.
    pub fn over_scrollback(&self, note: &str) -> Vec<u8> {
        let body = self
            .bytes
            .strip_prefix(FULL_RESET.as_bytes())
            .unwrap_or(&self.bytes);
        let mut out = Vec::with_capacity(body.len() + 256 + usize::from(self.rows) * 2);
        out.extend_from_slice(MODES_OFF.as_bytes());
        // The whole screen scrolls (no scroll region, no origin mode), in plain colours.
        out.extend_from_slice(b"\x1b[r\x1b[?6l\x1b[0m\r\n");
        out.extend_from_slice(note.as_bytes());
        // To the bottom, then a screenful of new lines: every line shown goes up into the
        // scrollback, the note last.
        out.extend_from_slice(format!("\x1b[{};1H", self.rows).as_bytes());
        for _ in 0..self.rows {
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"\x1b[!p\x1b[H\x1b[2J");
        out.extend_from_slice(body);
        out
    }
}

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
    /// scrollback would cost memory proportional to history.
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

/// The synchronous core of [`Screen`]: a lazily created vt100 parser fed from a [`Ring`].
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
/// bytes: a full reset (`ESC c`) or an erase of the whole display (`ESC [2J`, what `clear` and
/// most full-screen programs send). After an erase the visible cells are exact again; modes set
/// before the cut (e.g. alternate screen, scroll region) may still differ, which is accepted
/// because programs that clear the screen normally redraw and re-establish their state.
pub struct Emulator {
    /// The session's output log.
    ring: Ring,
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
    /// How many times the parser was rebuilt after a lag.
    rebuilds: u64,
    /// Total bytes the emulator never saw because the ring dropped them first.
    lost: u64,
    /// The sizes in effect from the offsets where they took effect, the latest
    /// [`SIZES_KEPT`] (a history replay parses each part at its size, see [`crate::history`]).
    sizes: VecDeque<SizeAt>,
}

/// Sizes remembered for history replays (an older part is replayed at the oldest kept).
const SIZES_KEPT: usize = 64;

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
            rebuilds: 0,
            lost: 0,
            sizes: VecDeque::from([SizeAt {
                at: pos,
                rows: dims.rows,
                cols: dims.cols,
                new_process: false,
            }]),
        }
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

    /// Output has been coming for a while ([`Follow`]): creates the parser if this is the
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
            .filter(|s| s.at < self.pos || s.at == source.start)
            .copied()
            .collect();
        source
    }

    /// The text of the screen as parsed so far (see [`Emulator::text`]).
    fn screen_text(&mut self) -> String {
        let dims = self.dims;
        self.parser
            .get_or_insert_with(|| dims.parser())
            .screen()
            .contents()
    }

    /// Allocates the parser if this is the first time it is needed.
    fn ensure_parser(&mut self) {
        if self.parser.is_none() {
            self.parser = Some(self.dims.parser());
        }
    }

    /// Feeds at most one chunk (≤ [`CHUNK`] bytes) towards ring offset `target`, reading through
    /// `buf`. Returns `true` when there is nothing left to do: `target` reached, nothing more
    /// readable, or no parser.
    fn feed_chunk(&mut self, target: u64, buf: &mut Vec<u8>) -> bool {
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
    }

    /// Feeds `bytes` to the parser and watches for a reset point while approximate.
    fn process(&mut self, bytes: &[u8]) {
        if let Some(parser) = &mut self.parser {
            parser.process(bytes);
        }
        if !self.approximate {
            return;
        }
        let head = &bytes[..bytes.len().min(SEAM)];
        let seam: Vec<u8> = self.seam.iter().chain(head).copied().collect();
        if has_reset_point(&seam) || has_reset_point(bytes) {
            self.approximate = false;
            self.seam.clear();
            return;
        }
        self.seam
            .extend_from_slice(&bytes[bytes.len().saturating_sub(SEAM)..]);
        let excess = self.seam.len().saturating_sub(SEAM);
        self.seam.drain(..excess);
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
                parser.process(NEW_PROCESS_MODES.as_bytes());
            }
        }
    }

    /// Makes `dims` the size in effect now, resizing the parser if there is one.
    fn set_dims(&mut self, dims: Dims) {
        if dims == self.dims {
            return;
        }
        self.dims = dims;
        if let Some(parser) = &mut self.parser {
            parser.set_size(dims.rows, dims.cols);
        }
    }

    /// The snapshot of the screen as parsed so far (creating the parser if needed).
    fn render(&mut self) -> Snapshot {
        let dims = self.dims;
        let parser = self.parser.get_or_insert_with(|| dims.parser());
        let screen = parser.screen();
        let (rows, cols) = screen.size();
        Snapshot {
            bytes: format_screen(screen, parser.callbacks()),
            offset: self.pos,
            rows: rows.get(),
            cols: cols.get(),
            approximate: self.approximate,
            bracketed_paste: screen.bracketed_paste(),
        }
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

/// When a session's output reader tells its screen to catch up while output flows: after a
/// quarter of the ring (at most [`FOLLOW_MAX`]) since the last time, unless that came faster
/// than [`FOLLOW_RATE`] or the reader already knows the output is a flood (then it waits for
/// the output to go idle, and a flood longer than the ring laps the emulator, see
/// [`Emulator`]): vt100 costs the runtime a few percent of a core at that rate, and a flood
/// parsed on a runtime worker starved the viewers' connections.
#[derive(Debug)]
pub struct Follow {
    /// The ring's head when the screen was last told (or a step was let pass).
    told: u64,
    /// When.
    at: std::time::Instant,
}

/// See [`Follow`].
const FOLLOW_MAX: u64 = 256 * 1024;

/// Output faster than this (bytes per second) is not followed (see [`Follow`]).
pub const FOLLOW_RATE: f64 = 4e6;

impl Follow {
    /// Starts following at `ring`'s head.
    pub fn new(ring: &Ring) -> Follow {
        Follow {
            told: ring.head(),
            at: std::time::Instant::now(),
        }
    }

    /// Whether a catch-up is due now (and, if it is, counts it as sent).
    pub fn due(&mut self, ring: &Ring, flooding: bool) -> bool {
        self.due_at(ring, flooding, std::time::Instant::now())
    }

    /// [`Follow::due`] at `now`.
    pub fn due_at(&mut self, ring: &Ring, flooding: bool, now: std::time::Instant) -> bool {
        let head = ring.head();
        let step = (ring.capacity() as u64 / 4).clamp(1, FOLLOW_MAX);
        if head.saturating_sub(self.told) < step {
            return false;
        }
        let took = now.saturating_duration_since(self.at).as_secs_f64();
        let quick = (head - self.told) as f64 > took * FOLLOW_RATE;
        self.told = head;
        self.at = now;
        !flooding && !quick
    }

    /// The screen was told for another reason (output went idle).
    pub fn told(&mut self, ring: &Ring) {
        self.told = ring.head();
        self.at = std::time::Instant::now();
    }
}

/// Whether `bytes` contain a reset point (see [`Emulator`]).
fn has_reset_point(bytes: &[u8]) -> bool {
    bytes
        .iter()
        .enumerate()
        .filter(|&(_, &b)| b == 0x1b)
        .any(|(i, _)| RESET_POINTS.iter().any(|p| bytes[i..].starts_with(p)))
}

/// Escape sequences that reproduce `screen` on a fresh or dirty terminal of the same size.
///
/// vt100's `state_formatted` covers the active grid's cells with their attributes, the cursor
/// position and visibility, and input modes (keypad, cursor keys, bracketed paste, mouse mode
/// and encoding, cursor style), but not which grid is active. So for the alternate screen we
/// first draw the primary grid, then enter the alternate screen the way programs do (`?1049h`:
/// save cursor, switch, clear) and draw it: when the program later leaves the alternate screen,
/// the viewer's terminal falls back to the right primary contents and cursor. Then what
/// `state_formatted` leaves out: the scroll region and origin mode (which vt100 keeps, see
/// [`margins`]), and what vt100 does not emulate but a viewer's terminal does ([`Untracked`]).
/// Without them a late viewer of an apt-style progress bar (a scroll region above a status
/// line) saw the whole screen scroll.
fn format_screen(screen: &vt100::Screen, untracked: &Untracked) -> Vec<u8> {
    let mut out = String::from(FULL_RESET);
    if screen.alternate_screen() {
        // vt100 only formats the active grid; a copy switched back shows the primary one.
        // `?47l` (unlike `?1049l`) does not restore a saved cursor: the primary grid kept its
        // own cursor, which is where it was when the program entered the alternate screen.
        let mut primary = vt100::Parser::new(NonZeroU16::MIN, NonZeroU16::MIN, 0);
        *primary.screen_mut() = screen.clone();
        primary.process(b"\x1b[?47l");
        out.push_str(&primary.screen().contents_formatted());
        out.push_str("\x1b[?1049h");
    }
    out.push_str(&screen.state_formatted());
    let rows = screen.size().0.get();
    let (top, bottom, origin) = margins(screen);
    if (top, bottom) != (0, rows - 1) || origin {
        // DECSTBM homes the cursor (and so does DECOM): put it back where it was, counted
        // from the region's top in origin mode.
        let (row, col) = screen.cursor_position();
        out.push_str(&format!("\x1b[{};{}r", top + 1, bottom + 1));
        let row = if origin {
            out.push_str("\x1b[?6h");
            row.saturating_sub(top)
        } else {
            row
        };
        out.push_str(&format!("\x1b[{};{}H", row + 1, col + 1));
    }
    untracked.write(&mut out);
    out.into_bytes()
}

/// The scroll region (first and last row, from 0) and origin mode of `screen`: vt100 keeps
/// them but has no accessor, so they are probed on a copy. With origin mode on, `CUP 1;1` goes
/// to the region's top and a row past the end stops at its bottom; with it off, to the
/// screen's. (Origin mode over a whole-screen region cannot be told apart, and changes
/// nothing there.)
fn margins(screen: &vt100::Screen) -> (u16, u16, bool) {
    let last = screen.size().0.get() - 1;
    let mut probe = vt100::Parser::new(NonZeroU16::MIN, NonZeroU16::MIN, 0);
    *probe.screen_mut() = screen.clone();
    let mut row = |seq: &[u8]| {
        probe.process(seq);
        probe.screen().cursor_position().0
    };
    let origin = row(b"\x1b[H") != 0 || row(b"\x1b[9999H") != last;
    let top = row(b"\x1b[?6h\x1b[H");
    let bottom = row(b"\x1b[9999H");
    (top, bottom, origin)
}

/// Most bytes of a window title kept for snapshots.
const TITLE_MAX: usize = 1024;

/// Terminal state a viewer's terminal keeps but vt100 does not emulate, followed through
/// vt100's callbacks so a snapshot can set it again: autowrap off (`?7l`), insert mode (`4h`),
/// the window title (OSC 0/2). A full reset (`ESC c`) of the program is not seen here (vt100
/// handles it), so a mode set before one survives it in snapshots: a program that resets its
/// terminal also sets what it needs again.
#[derive(Debug, Default, Clone)]
pub struct Untracked {
    /// `?7l`: the cursor stops at the right margin.
    no_autowrap: bool,
    /// `4h`: printed characters push the rest of the line right.
    insert: bool,
    /// The last title the program set (printable bytes only, at most [`TITLE_MAX`]).
    title: Option<Vec<u8>>,
}

impl Untracked {
    /// Appends the sequences that set this state (nothing for the defaults).
    fn write(&self, out: &mut String) {
        if self.no_autowrap {
            out.push_str("\x1b[?7l");
        }
        if self.insert {
            out.push_str("\x1b[4h");
        }
        if let Some(title) = &self.title {
            out.push_str("\x1b]2;");
            out.push_str(&String::from_utf8_lossy(title));
            out.push('\x07');
        }
    }
}

impl vt100::Callbacks for Untracked {
    fn set_window_title(&mut self, _: &mut vt100::Screen, title: &[u8]) {
        let printable = title.iter().copied().filter(|&b| b >= 0x20 && b != 0x7f);
        self.title = Some(printable.take(TITLE_MAX).collect());
    }

    fn unhandled_csi(
        &mut self,
        _: &mut vt100::Screen,
        i1: Option<u8>,
        _i2: Option<u8>,
        params: &[&[u16]],
        c: char,
    ) {
        let on = match c {
            'h' => true,
            'l' => false,
            _ => return,
        };
        for param in params {
            match (i1, param) {
                (Some(b'?'), [7]) => self.no_autowrap = !on,
                (None, [4]) => self.insert = on,
                _ => {}
            }
        }
    }
}

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
                emulator.ensure_parser();
                Screen::catch_up(emulator).await;
                let snapshot = emulator.render();
                let source = emulator.history_source();
                // A megabyte through vt100: off the runtime's workers.
                let (took, replayed) = (std::time::Instant::now(), source.bytes.len());
                let snapshot =
                    match tokio::task::spawn_blocking(move || history::rebuild(&source)).await {
                        Ok(history) => {
                            tracing::debug!(
                                replayed,
                                rows = history.rows,
                                took_ms = took.elapsed().as_secs_f64() * 1e3,
                                "history rebuilt"
                            );
                            snapshot.with_history(&history, viewer_rows)
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "history not rebuilt; the screen alone");
                            snapshot
                        }
                    };
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
    use std::num::NonZeroU16;

    use super::*;
    use crate::history::{Source, rebuild};

    fn size(at: u64, rows: u16, cols: u16) -> SizeAt {
        SizeAt::test(at, rows, cols)
    }

    /// Every line of a terminal after `bytes`: its scrollback, then its screen.
    fn all_lines(rows: u16, bytes: &[u8]) -> Vec<String> {
        let nz = |n: u16| NonZeroU16::new(n).unwrap();
        let mut t = vt100::Parser::new(nz(rows), nz(20), 10_000);
        t.process(bytes);
        t.screen_mut().set_scrollback(usize::MAX);
        let mut out = Vec::new();
        for back in (1..=t.screen().scrollback()).rev() {
            t.screen_mut().set_scrollback(back);
            out.extend(t.screen().rows(0, 20).next());
        }
        t.screen_mut().set_scrollback(0);
        out.extend(t.screen().rows(0, 20));
        out.retain(|l| !l.is_empty());
        out
    }

    /// A snapshot with its history, written into a terminal taller than the session (its own
    /// resize not taken yet): every line once, in order — when the viewer says its height. Said
    /// with the session's height, the rows between were erased rather than scrolled off.
    #[test]
    fn a_taller_viewer_gets_every_row_when_it_says_its_height() {
        let bytes: String = (1..=30).map(|i| format!("line {i}\r\n")).collect();
        let h = rebuild(&Source {
            start: 0,
            bytes: bytes.into_bytes(),
            sizes: vec![size(0, 5, 20)],
        });
        let screen = || Snapshot {
            bytes: b"\x1b[?47l\x1bc\x1b[Hline 27\r\nline 28\r\nline 29\r\nline 30\r\n".to_vec(),
            offset: 0,
            rows: 5,
            cols: 20,
            approximate: false,
            bracketed_paste: false,
        };
        let want: Vec<String> = (1..=30).map(|i| format!("line {i}")).collect();
        let told = screen().with_history(&h, Some(12));
        assert_eq!(all_lines(12, &told.bytes), want);
        let untold = screen().with_history(&h, None);
        assert_ne!(
            all_lines(12, &untold.bytes),
            want,
            "the viewer's height made no difference"
        );
    }
}
