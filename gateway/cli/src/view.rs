//! View: what `corral attach` shows of a session on a terminal. While the terminal has the
//! session's size, the program's bytes go through as they come (the exact stream); when the
//! sizes differ (another viewer typed last, so the session has its size), a [`Window`] onto
//! the attach's own copy of the screen ([`Mirror`]) is drawn instead, and once they match again
//! the whole screen is drawn from the copy and the bytes go through again. The copy also draws
//! the screen again after a notice was written over it (a lost connection).

use std::borrow::Cow;

use corral_actors::screen::Mirror;

use crate::window::Window;

/// Clears a terminal for a window: no scroll region, plain attributes, blank.
const CLEAR: &[u8] = b"\x1b[r\x1b[0m\x1b[H\x1b[2J";

/// A terminal's view of one session (rows and columns everywhere).
#[derive(Debug)]
pub struct View {
    mirror: Mirror,
    window: Window,
    /// Showing a window (the sizes differ), not the program's own bytes.
    windowed: bool,
}

impl View {
    /// A view of a session whose first bytes (its snapshot) are at `size`.
    pub fn new(size: (u16, u16)) -> View {
        View {
            mirror: Mirror::new(size.0, size.1),
            window: Window::default(),
            windowed: false,
        }
    }

    /// Output (or a snapshot) came, the terminal being `term`: what to write (the bytes
    /// themselves, not a copy, while the sizes match).
    pub fn output<'a>(&mut self, bytes: &'a [u8], term: (u16, u16)) -> Cow<'a, [u8]> {
        self.mirror.process(bytes);
        if !self.windowed && self.mirror.size() == term {
            return Cow::Borrowed(bytes);
        }
        Cow::Owned(self.settle(term))
    }

    /// The session's terminal was resized (a `resized` event, or its size found after a
    /// reconnection): what to write.
    pub fn resized(&mut self, size: (u16, u16), term: (u16, u16)) -> Vec<u8> {
        if self.mirror.size() == size {
            return Vec::new();
        }
        self.mirror.set_size(size.0, size.1);
        self.settle(term)
    }

    /// This terminal was resized to `term`: what to write.
    pub fn terminal_resized(&mut self, term: (u16, u16)) -> Vec<u8> {
        if self.windowed && self.mirror.size() != term {
            // A window of the old size is no part of the new one.
            return self.window_afresh(term);
        }
        self.settle(term)
    }

    /// The bottom row drawn again from the copy: a notice written over it goes away. The
    /// cursor and the attributes stay (saved and restored around it).
    pub fn erase_notice(&mut self, term: (u16, u16)) -> Vec<u8> {
        if self.windowed {
            self.window.invalidate();
            return self.window.draw(self.mirror.screen(), term);
        }
        let (rows, cols) = self.mirror.size();
        let Some(last) = self.mirror.screen().rows_formatted(0, cols).last() else {
            return Vec::new();
        };
        let mut out = format!("\x1b7\x1b[{rows};1H\x1b[0m").into_bytes();
        out.extend_from_slice(last.as_bytes());
        out.extend_from_slice(b"\x1b[0m\x1b[K\x1b8");
        out
    }

    /// Where attach's last line goes, as a cursor move: below everything drawn — the row after
    /// the lower of the cursor and the last row with text (Claude Code keeps its cursor in its
    /// input box, above its footer: a line written there mixed with the footer, and the shell's
    /// prompt landed on the rest of it); the terminal's foot under a window; nothing on the
    /// program's alternate screen (leaving it puts the primary screen and its cursor back).
    pub fn below(&self) -> String {
        let screen = self.mirror.screen();
        if screen.alternate_screen() {
            return String::new();
        }
        if self.windowed {
            return "\x1b[999;1H".to_string();
        }
        let cols = self.mirror.size().1;
        let text = screen
            .rows(0, cols)
            .enumerate()
            .filter(|(_, row)| !row.trim().is_empty())
            .map(|(i, _)| i)
            .last()
            .unwrap_or(0);
        let row = text.max(usize::from(screen.cursor_position().0));
        format!("\x1b[{};1H", row + 1)
    }

    /// Whether the terminal shows a window (its size is not the session's).
    #[cfg(test)]
    fn windowed(&self) -> bool {
        self.windowed
    }

    /// A window drawn on a cleared terminal.
    fn window_afresh(&mut self, term: (u16, u16)) -> Vec<u8> {
        self.windowed = true;
        self.window.invalidate();
        let mut out = CLEAR.to_vec();
        out.extend(self.window.draw(self.mirror.screen(), term));
        out
    }

    /// Switches between the bytes and a window as the sizes say: what to write besides the
    /// bytes that just came (nothing while the sizes match).
    fn settle(&mut self, term: (u16, u16)) -> Vec<u8> {
        let differ = self.mirror.size() != term;
        match (self.windowed, differ) {
            (false, false) => Vec::new(),
            (false, true) => self.window_afresh(term),
            (true, true) => self.window.draw(self.mirror.screen(), term),
            (true, false) => {
                // The program's own bytes draw from here on: the whole screen first.
                self.windowed = false;
                self.mirror.draw()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::View;
    use std::num::NonZeroU16;

    fn terminal(rows: u16, cols: u16) -> vt100::Parser {
        let nz = |n| NonZeroU16::new(n).unwrap();
        vt100::Parser::new(nz(rows), nz(cols), 0)
    }

    /// The last line goes below everything drawn: under a footer the cursor sits above (Claude
    /// Code's input box), under the cursor on a screen with room below it, at the foot under a
    /// window; and nowhere special on the alternate screen.
    #[test]
    fn the_last_line_goes_below_what_was_drawn() {
        let mut v = View::new((10, 40));
        // A footer on row 9, the cursor back in the input box on row 6 (1-based).
        let _ = v.output(b"\x1b[9;1Hshortcuts footer\x1b[6;3H", (10, 40));
        assert_eq!(v.below(), "\x1b[9;1H");
        let mut v = View::new((10, 40));
        let _ = v.output(b"$ ls\r\na b\r\n$ ", (10, 40));
        assert_eq!(v.below(), "\x1b[3;1H");
        let _ = v.output(b"\x1b[?1049hpager", (10, 40));
        assert_eq!(v.below(), "");
        let mut v = View::new((10, 40));
        let _ = v.output(b"x", (5, 20));
        assert_eq!(v.below(), "\x1b[999;1H");
    }

    /// Same size: the bytes as they are. Another viewer's larger size: a window, not wrapped
    /// lines. This terminal's size again: the whole screen, then the bytes again.
    #[test]
    fn bytes_while_the_sizes_match_a_window_while_they_differ() {
        let mut v = View::new((24, 80));
        let mut term = terminal(24, 80);
        let out = v.output(b"hello\r\n", (24, 80));
        assert_eq!(&*out, b"hello\r\n");
        term.process(&out);
        // Another viewer took the size: 30×120.
        term.process(&v.resized((30, 120), (24, 80)));
        assert!(v.windowed());
        let long = "x".repeat(110);
        term.process(&v.output(format!("{long}\r\nnext").as_bytes(), (24, 80)));
        let rows: Vec<String> = term.screen().rows(0, 80).collect();
        assert_eq!(rows[0], "hello");
        assert_eq!(rows[1], "x".repeat(80), "cut at the terminal's width");
        assert_eq!(rows[2], "next");
        // This terminal's size again: the program's bytes go through after a whole redraw.
        let back = v.resized((24, 80), (24, 80));
        assert!(!v.windowed());
        assert!(
            back.starts_with(b"\x1b[?47l\x1bc"),
            "a whole screen from a reset"
        );
        term.process(&back);
        assert_eq!(&*v.output(b"!", (24, 80)), b"!");
    }

    /// The terminal resized while showing a window: drawn afresh at its new size; at the
    /// session's size, the bytes go through again.
    #[test]
    fn a_terminal_resized_to_the_sessions_size_takes_the_bytes_again() {
        let mut v = View::new((30, 100));
        let _ = v.output(b"top line", (24, 80));
        assert!(v.windowed());
        let out = v.terminal_resized((30, 100));
        assert!(!v.windowed());
        let mut term = terminal(30, 100);
        term.process(&out);
        assert_eq!(term.screen().rows(0, 100).next().unwrap(), "top line");
    }
}
