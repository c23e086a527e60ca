//! A snapshot of a session's screen: escape sequences that draw it on a fresh terminal (or over
//! one that shows the session already), with what vt100 keeps but does not format (the active
//! grid, the scroll region) and what it does not emulate but a viewer's terminal does.

use std::num::NonZeroU16;

use crate::history::History;

/// Full reset (RIS). Prefixed to every snapshot so it draws correctly on a dirty terminal too:
/// it resets modes, attributes, scroll region and clears. Some terminals (tmux) stay on the
/// alternate screen through it: `?47l` leaves it first (a no-op on the primary screen, and no
/// cursor restore, unlike `?1049l`).
const FULL_RESET: &str = "\x1b[?47l\x1bc";

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
    /// terminal that saw everything would show (see [`super::Emulator::is_approximate`]).
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
        // The whole screen scrolls (no scroll region, no origin mode), in plain colours. Both
        // home the cursor: the note goes on a new line under the bottom row, never over a line
        // received (it replaced the second row, far above where the output was skipped).
        out.extend_from_slice(format!("\x1b[r\x1b[?6l\x1b[0m\x1b[{};1H\r\n", self.rows).as_bytes());
        out.extend_from_slice(note.as_bytes());
        // A screenful of new lines: every line shown goes up into the scrollback, the note last.
        for _ in 0..self.rows {
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"\x1b[!p\x1b[H\x1b[2J");
        out.extend_from_slice(body);
        out
    }
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
pub(super) fn format_screen(screen: &vt100::Screen, untracked: &Untracked) -> Vec<u8> {
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
pub(super) fn margins(screen: &vt100::Screen) -> (u16, u16, bool) {
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
        let title: Vec<u8> = printable.take(TITLE_MAX).collect();
        // An empty title is none (a new process starts without one: `NEW_PROCESS_MODES`).
        self.title = (!title.is_empty()).then_some(title);
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

#[cfg(test)]
mod tests {
    use std::num::NonZeroU16;

    use super::*;
    use crate::history::{SizeAt, Source, rebuild};

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
