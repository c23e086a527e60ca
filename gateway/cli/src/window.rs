//! Window: a session's screen shown on a terminal of another size, as tmux shows a window on a
//! client of another size. The session has the size of the viewer who typed last (the resize
//! policy); `corral attach` on a terminal of another size passed the program's bytes through
//! anyway, so a 158-column `top` wrapped on an 80-column terminal and a 23-row `less` scrolled
//! past the bottom of a 40-row one. Instead, the attach keeps its own copy of the screen
//! (`corral_actors::screen::Mirror`) and draws the part of it that fits, around the cursor: the
//! top-left when the cursor is there, following it right and down; a terminal larger than the
//! session shows it in the top-left corner with a line saying whose size it is. Only the rows
//! that changed are drawn again.

/// What the terminal shows, to draw only what changes.
#[derive(Debug, Default)]
pub struct Window {
    /// Each terminal row as last drawn.
    shown: Vec<Vec<u8>>,
    /// The input modes last set (mouse reporting, bracketed paste, cursor keys), which the
    /// program's own bytes no longer set on the terminal while it shows a window.
    modes: String,
}

impl Window {
    /// Forgets what the terminal shows (it was cleared or drawn over): the next draw is whole.
    pub fn invalidate(&mut self) {
        self.shown.clear();
        self.modes.clear();
    }

    /// The bytes that make a terminal of `term` (rows, columns), cleared since the last
    /// [`Window::invalidate`], show `screen`.
    pub fn draw(&mut self, screen: &vt100::Screen, term: (u16, u16)) -> Vec<u8> {
        let (rows, cols) = (term.0.max(1), term.1.max(1));
        let (screen_rows, screen_cols) = {
            let (r, c) = screen.size();
            (r.get(), c.get())
        };
        let view_rows = screen_rows.min(rows);
        let view_cols = screen_cols.min(cols);
        let (cursor_row, cursor_col) = screen.cursor_position();
        // The part shown keeps the cursor in view; a program that hides it (top, a pager) is
        // shown from its top-left corner (following where it last drew jumped sideways).
        let (top, left) = match screen.hide_cursor() {
            true => (0, 0),
            false => (
                (cursor_row + 1)
                    .saturating_sub(view_rows)
                    .min(screen_rows - view_rows),
                (cursor_col + 1)
                    .saturating_sub(view_cols)
                    .min(screen_cols - view_cols),
            ),
        };
        let mut lines: Vec<Vec<u8>> = screen
            .rows_formatted(left, view_cols)
            .skip(usize::from(top))
            .take(usize::from(view_rows))
            .map(String::into_bytes)
            .collect();
        if rows > screen_rows {
            lines.resize(usize::from(rows - 1), Vec::new());
            lines.push(note(screen_rows, screen_cols, rows, cols));
        }
        lines.resize(usize::from(rows), Vec::new());
        let mut out = Vec::new();
        self.shown.resize(lines.len(), b"\x00".to_vec());
        for (r, line) in lines.into_iter().enumerate() {
            // The row erased first: a formatted row skips its blank cells, and what the terminal
            // showed there stayed.
            let mut drawn = b"\x1b[0m\x1b[2K".to_vec();
            drawn.extend_from_slice(&line);
            drawn.extend_from_slice(b"\x1b[0m\x1b[K");
            if self.shown[r] != drawn {
                out.extend_from_slice(format!("\x1b[{};1H", r + 1).as_bytes());
                out.extend_from_slice(&drawn);
                self.shown[r] = drawn;
            }
        }
        let modes = screen.input_mode_formatted();
        if modes != self.modes {
            out.extend_from_slice(modes.as_bytes());
            self.modes = modes;
        }
        let in_view = (top..top + view_rows).contains(&cursor_row)
            && (left..left + view_cols).contains(&cursor_col);
        if in_view && !screen.hide_cursor() {
            out.extend_from_slice(
                format!(
                    "\x1b[{};{}H\x1b[?25h",
                    cursor_row - top + 1,
                    cursor_col - left + 1
                )
                .as_bytes(),
            );
        } else {
            out.extend_from_slice(b"\x1b[?25l");
        }
        out
    }
}

/// The last row of a terminal larger than the session: whose size it is, and how to take it.
fn note(screen_rows: u16, screen_cols: u16, rows: u16, cols: u16) -> Vec<u8> {
    let text = format!(
        "[corral: the session is {screen_cols}×{screen_rows}, another viewer's size; a key typed here makes it {cols}×{rows}]"
    );
    let cut: String = text.chars().take(usize::from(cols)).collect();
    format!("\x1b[2m{cut}").into_bytes()
}

#[cfg(test)]
mod tests {
    use super::Window;
    use std::num::NonZeroU16;

    fn screen(rows: u16, cols: u16, bytes: &[u8]) -> vt100::Parser {
        let nz = |n| NonZeroU16::new(n).unwrap();
        let mut p = vt100::Parser::new(nz(rows), nz(cols), 0);
        p.process(bytes);
        p
    }

    /// What a terminal of `rows`×`cols` shows after `bytes`.
    fn shown(rows: u16, cols: u16, bytes: &[u8]) -> vt100::Parser {
        screen(rows, cols, bytes)
    }

    #[test]
    fn a_wider_taller_session_shows_its_top_left_unwrapped() {
        let ruler: String = (0..100)
            .map(|i| char::from(b'0' + (i % 10) as u8))
            .collect();
        let src = screen(30, 100, format!("{ruler}\r\nsecond\x1b[3;5H").as_bytes());
        let mut w = Window::default();
        let out = w.draw(src.screen(), (24, 80));
        let term = shown(24, 80, &out);
        let rows: Vec<String> = term.screen().rows(0, 80).collect();
        assert_eq!(rows[0], ruler[..80], "cut, not wrapped");
        assert_eq!(rows[1], "second");
        assert_eq!(term.screen().cursor_position(), (2, 4));
        // Nothing changed: nothing drawn again but the cursor.
        let again = w.draw(src.screen(), (24, 80));
        assert!(!String::from_utf8_lossy(&again).contains("second"));
    }

    #[test]
    fn the_view_follows_the_cursor_down_and_right() {
        let mut bytes = String::new();
        for i in 0..40 {
            bytes.push_str(&format!("line {i}\r\n"));
        }
        bytes.push_str(&format!("\x1b[40;{}Hend", 150));
        let src = screen(40, 158, bytes.as_bytes());
        let mut w = Window::default();
        let term = shown(24, 80, &w.draw(src.screen(), (24, 80)));
        let rows: Vec<String> = term.screen().rows(0, 80).collect();
        // The cursor (row 39, column 152 after "end") in view: the bottom 24 rows, the right 80
        // columns.
        assert!(rows[23].trim_end().ends_with("end"), "{rows:?}");
        assert_eq!(term.screen().cursor_position(), (23, 79));
    }

    #[test]
    fn a_larger_terminal_shows_the_session_top_left_and_says_whose_size_it_is() {
        let src = screen(5, 20, b"hello\r\nworld");
        let mut w = Window::default();
        let term = shown(10, 60, &w.draw(src.screen(), (10, 60)));
        let rows: Vec<String> = term.screen().rows(0, 60).collect();
        assert_eq!(rows[0], "hello");
        assert_eq!(rows[1], "world");
        assert!(rows[5..9].iter().all(|r| r.is_empty()), "{rows:?}");
        assert!(rows[9].contains("the session is 20×5"), "{rows:?}");
        assert_eq!(term.screen().cursor_position(), (1, 5));
    }

    /// A row drawn again shows only what the session's row holds: its blank cells too (they
    /// were skipped, and the terminal kept what it showed there).
    #[test]
    fn a_row_drawn_again_keeps_nothing_of_what_it_showed() {
        let mut src = screen(30, 100, b"line number 50L, 3092B");
        let mut w = Window::default();
        let mut term = shown(24, 80, &w.draw(src.screen(), (24, 80)));
        src.process(b"\r\x1b[Kab\x1b[20Gcd");
        term.process(&w.draw(src.screen(), (24, 80)));
        let row = term.screen().rows(0, 80).next().unwrap();
        assert_eq!(row, format!("ab{}cd", " ".repeat(17)));
    }

    /// A program that hides its cursor (top) is shown from its top-left corner, whatever it
    /// drew last.
    #[test]
    fn a_hidden_cursor_keeps_the_view_top_left() {
        let src = screen(40, 158, b"\x1b[?25lPID USER\x1b[40;150Hend");
        let mut w = Window::default();
        let term = shown(24, 80, &w.draw(src.screen(), (24, 80)));
        assert!(
            term.screen()
                .rows(0, 80)
                .next()
                .unwrap()
                .starts_with("PID USER")
        );
        assert!(term.screen().hide_cursor());
    }

    #[test]
    fn input_modes_follow_the_program() {
        let src = screen(5, 20, b"\x1b[?2004h\x1b[?1000h\x1b[?1006h");
        let mut w = Window::default();
        let term = shown(5, 10, &w.draw(src.screen(), (5, 10)));
        assert!(term.screen().bracketed_paste());
        assert_eq!(
            term.screen().mouse_protocol_mode(),
            src.screen().mouse_protocol_mode()
        );
    }
}
