//! History: the lines that scrolled off the top of a session's screen, rebuilt on demand from
//! the output its Ring still holds, for a viewer that opens late (a phone that looks an hour
//! later wants to scroll back through the agent's last answer, not only see its last screen).
//!
//! Why on demand: the session's own emulator ([`crate::screen`]) keeps no scrollback — that
//! would cost every session memory proportional to its history, looked at or not. A snapshot
//! that asks for history replays the last [`HISTORY_BYTES`] of output (already in memory, in the
//! Ring) through a throwaway vt100 parser on a blocking thread, at the sizes the session had
//! then, and keeps the rows that scroll off its primary screen as they go (vt100's `on_scroll`
//! capture: text with its colours, a wrapped line joined, so the viewer's terminal wraps it at
//! its own width) — at most [`HISTORY_OUT`] bytes of them, the newest. Rows scrolled off the
//! alternate screen (a pager, an editor) are not history, as in any terminal. The replay starts
//! where the retained output starts, at the first escape sequence or line there: what the lost
//! bytes before it set (colours, modes) is not known, which may show in the oldest lines.
//! An erase of the scrollback (ED3, which `clear` sends) drops what scrolled off before it, as
//! a terminal that saw it did. When the terminal was made taller over the output, the replay
//! keeps as many rows of scrollback as its tallest size ([`Source::pulled_rows`]): the rows a
//! taller screen takes back are the screen's then, not history, and its screen fills the blank
//! rows the session's screen (no scrollback) has there.

use std::collections::VecDeque;
use std::num::NonZeroU16;

use vt100::capture::{BasicFormattedCaptureState, RowContents};

/// Most output replayed to rebuild a history (the default Ring holds this much).
pub const HISTORY_BYTES: u64 = 1 << 20;

/// Most bytes of history rows sent (the newest are kept).
pub const HISTORY_OUT: usize = 256 * 1024;

/// A size of the session's terminal from an output offset on; `new_process` when a new process
/// of the session starts writing there (its predecessor's modes are reset, see
/// [`crate::terminal::NEW_PROCESS_MODES`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SizeAt {
    /// Output offset.
    pub at: u64,
    /// Rows.
    pub rows: NonZeroU16,
    /// Columns.
    pub cols: NonZeroU16,
    /// A new process starts there.
    pub new_process: bool,
}

impl Source {
    /// The rows of scrollback a replay of this output keeps ([`replay`]) when the terminal
    /// was made taller over it — None if it never was. A screen made taller has blank rows at
    /// its top where xterm, xterm.js and tmux show the rows that scrolled off last (vt100
    /// without a scrollback puts blank rows there; the session's screen keeps none: see
    /// [`crate::screen::Emulator`]); the replay's rows fill them. The tallest size
    /// is enough: the rows taken back between two outputs are at most its height (a 24-row
    /// session shown on 120 rows takes back 96; a fixed 64 left 32 of them blank).
    pub fn pulled_rows(&self) -> Option<usize> {
        if !self.sizes.windows(2).any(|w| w[1].rows > w[0].rows) {
            return None;
        }
        self.sizes.iter().map(|s| usize::from(s.rows.get())).max()
    }
}

#[cfg(test)]
impl SizeAt {
    /// `rows`×`cols` from offset `at` (tests).
    pub(crate) fn test(at: u64, rows: u16, cols: u16) -> SizeAt {
        SizeAt {
            at,
            rows: NonZeroU16::new(rows).expect("rows"),
            cols: NonZeroU16::new(cols).expect("cols"),
            new_process: false,
        }
    }
}

/// What a history is rebuilt from: output from offset `start`, and the sizes in effect over it
/// (the first one at or before `start`).
#[derive(Debug, Clone, Default)]
pub struct Source {
    /// Offset of `bytes[0]`.
    pub start: u64,
    /// The output.
    pub bytes: Vec<u8>,
    /// Sizes in offset order.
    pub sizes: Vec<SizeAt>,
}

/// Rows that scrolled off the top of the screen, oldest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct History {
    /// The rows as text with SGR colours, `\r\n` between lines (a wrapped row continues its
    /// line without one).
    pub text: String,
    /// How many screen rows they took at the width they were written at.
    pub rows: usize,
}

impl History {
    /// The bytes that put this history into a fresh terminal's scrollback (one just reset): the
    /// rows from the top, then as many new lines at the bottom as the screen shows of them, so
    /// every row scrolls up into the scrollback and the screen is blank for the snapshot drawn
    /// next. `screen_rows` is the terminal's height. Nothing when there is no history.
    pub fn scrolled_in(&self, screen_rows: u16) -> Vec<u8> {
        if self.rows == 0 {
            return Vec::new();
        }
        let shown = self.rows.min(usize::from(screen_rows));
        let mut out = String::with_capacity(self.text.len() + 32 + shown * 2);
        out.push_str("\x1b[0m");
        out.push_str(&self.text);
        out.push_str("\x1b[0m");
        out.push_str(&format!("\x1b[{screen_rows};1H"));
        for _ in 0..shown {
            out.push_str("\r\n");
        }
        out.into_bytes()
    }
}

/// Replays `source` and returns the rows that scrolled off its primary screen (at most
/// [`HISTORY_OUT`] bytes of them, the newest). CPU-bound (a megabyte through vt100): call it
/// on a blocking thread.
pub fn rebuild(source: &Source) -> History {
    replay(source, 0).0
}

/// Like [`rebuild`], with `scrollback` rows kept by the replay's screen (see
/// [`Source::pulled_rows`]): a screen made taller takes the last of them back, and
/// they are then the screen's, not history. Also returns the screen the replay ends with
/// (whose top rows fill the blank ones of a session's screen made taller). Slower: vt100
/// allocates for every row it keeps.
pub fn replay(source: &Source, scrollback: usize) -> (History, vt100::Screen) {
    let Some(first) = source.sizes.first() else {
        let blank = vt100::Parser::new(NonZeroU16::MIN, NonZeroU16::MIN, 0);
        return (History::default(), blank.screen().clone());
    };
    // With a scrollback, vt100 calls `on_scroll` when a row leaves it (and for each row an ED3
    // erases), and a taller screen takes its last rows back.
    let mut parser =
        vt100::Parser::new_with_callbacks(first.rows, first.cols, scrollback, Capture::default());
    // Output that starts after lost bytes goes on from a place a parser can start at (an
    // escape sequence, else a line's start); a session's output starts at offset 0.
    let skip = match source.start {
        0 => 0,
        _ => crate::terminal::boundary(&source.bytes[..source.bytes.len().min(4096)]),
    };
    let mut at = source.start + skip as u64;
    let end = source.start + source.bytes.len() as u64;
    // Where the last erase of the scrollback ends: the rows scrolled off before it are gone
    // for a viewer who saw it (`clear` sends it), so they are no history for a late one.
    let erased =
        last_scrollback_erase(&source.bytes[skip.min(source.bytes.len())..]).map(|e| at + e as u64);
    let mut sizes = source.sizes.iter().skip(1).peekable();
    let mut charsets = crate::charset::Charsets::default();
    // Applies the sizes due at `at`.
    let mut apply = |parser: &mut vt100::Parser<Capture>,
                     charsets: &mut crate::charset::Charsets,
                     at: u64| {
        while let Some(s) = sizes.next_if(|s| s.at <= at) {
            parser.set_size(s.rows, s.cols);
            if s.new_process {
                if parser.screen().alternate_screen() {
                    parser.process(crate::terminal::LEAVE_ALTERNATE.as_bytes());
                }
                parser.process(&charsets.translate(crate::terminal::NEW_PROCESS_MODES.as_bytes()));
            }
        }
        sizes.peek().map(|s| s.at)
    };
    while at < end {
        // Apply the sizes due here, then feed up to the next one.
        let next = apply(&mut parser, &mut charsets, at);
        let until = next.map_or(end, |n| n.min(end));
        let until = erased.filter(|&e| e > at).map_or(until, |e| e.min(until));
        let from = usize::try_from(at - source.start).unwrap_or(usize::MAX);
        let to = usize::try_from(until - source.start).unwrap_or(usize::MAX);
        if let Some(chunk) = source.bytes.get(from..to) {
            parser.process(&charsets.translate(chunk));
        }
        if erased == Some(until) {
            parser.callbacks_mut().forget();
        }
        at = until.max(at + 1);
    }
    // A resize at the end of the output (a viewer that sized the session just before it asked
    // for this: a taller screen takes rows back).
    apply(&mut parser, &mut charsets, end);
    let screen = parser.screen().clone();
    // The rows still in the scrollback scrolled off too: out through `on_scroll` with an ED3,
    // of the primary screen (this parser is thrown away).
    if scrollback > 0 {
        if parser.screen().alternate_screen() {
            parser.process(crate::terminal::LEAVE_ALTERNATE.as_bytes());
        }
        parser.process(b"\x1b[3J");
    }
    (parser.callbacks_mut().history(), screen)
}

/// The end of the last "erase the scrollback" (ED3: `CSI 3 J`, or `CSI ? 3 J`) in `bytes`.
fn last_scrollback_erase(bytes: &[u8]) -> Option<usize> {
    [b"\x1b[3J".as_slice(), b"\x1b[?3J".as_slice()]
        .iter()
        .filter_map(|seq| memchr::memmem::rfind(bytes, seq).map(|at| at + seq.len()))
        .max()
}

/// The `on_scroll` capture of a replay: each row that leaves the top of the primary screen,
/// in vt100's basic format (text and SGR; `\n` after a row that does not wrap), the newest
/// [`HISTORY_OUT`] bytes of them.
#[derive(Default)]
struct Capture {
    rows: VecDeque<String>,
    bytes: usize,
    state: BasicFormattedCaptureState,
}

impl Capture {
    /// The scrollback was erased: what scrolled off so far is gone.
    fn forget(&mut self) {
        self.rows.clear();
        self.bytes = 0;
    }

    fn history(&mut self) -> History {
        let rows = self.rows.len();
        let mut text = String::with_capacity(self.bytes + rows);
        for (i, row) in self.rows.iter().enumerate() {
            // A line ended before the first row kept: no blank line at the top.
            let row = if i == 0 {
                row.strip_prefix('\n').unwrap_or(row)
            } else {
                row
            };
            text.push_str(&row.replace('\n', "\r\n"));
        }
        History { text, rows }
    }
}

impl vt100::Callbacks for Capture {
    fn on_scroll(&mut self, contents: RowContents<'_>, alternate_screen: bool) {
        if alternate_screen {
            return;
        }
        let mut row = String::new();
        // Writing to a String cannot fail.
        if contents
            .write_formatted_basic(&mut row, &mut self.state)
            .is_err()
        {
            return;
        }
        self.bytes += row.len();
        self.rows.push_back(row);
        while self.bytes > HISTORY_OUT
            && let Some(oldest) = self.rows.pop_front()
        {
            self.bytes -= oldest.len();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn size(at: u64, rows: u16, cols: u16) -> SizeAt {
        SizeAt::test(at, rows, cols)
    }

    fn plain(h: &History) -> String {
        vt100::capture::basic_formatted_to_plain(&h.text.replace("\r\n", "\n")).collect()
    }

    /// A screen made taller takes back the rows that scrolled off last (as xterm does): they
    /// are the screen's again, not history.
    #[test]
    fn rows_a_taller_screen_takes_back_are_no_history() {
        let bytes: String = (1..=40).map(|i| format!("line {i}\r\n")).collect();
        let end = bytes.len() as u64;
        let source = Source {
            start: 0,
            bytes: bytes.clone().into_bytes(),
            sizes: vec![size(0, 24, 80), size(end, 40, 80)],
        };
        assert_eq!(source.pulled_rows(), Some(40));
        let (h, screen) = replay(&source, 40);
        // 40 lines and the cursor's row on 24 rows: 17 scrolled off; 16 come back at 40 rows.
        assert_eq!(plain(&h), "line 1", "{h:?}");
        assert_eq!(h.rows, 1);
        let rows: Vec<String> = screen.rows(0, 80).collect();
        assert_eq!(rows[0], "line 2", "{rows:?}");
        // Without the scrollback: every row is history, the screen's top rows blank.
        let (h, screen) = replay(&source, 0);
        assert_eq!(h.rows, 17);
        assert_eq!(screen.rows(0, 80).next().as_deref(), Some(""));
    }

    /// Lines that scroll off a 5-row screen are the history; those still on it are not.
    #[test]
    fn the_rows_that_scroll_off_are_the_history() {
        let bytes: String = (1..=12).map(|i| format!("line {i}\r\n")).collect();
        let h = rebuild(&Source {
            start: 0,
            bytes: bytes.into_bytes(),
            sizes: vec![size(0, 5, 20)],
        });
        // 12 lines and the cursor's empty row on 5 rows: 8 scrolled off.
        assert_eq!(h.rows, 8, "{h:?}");
        let text = plain(&h);
        assert!(text.starts_with("line 1\nline 2\n"), "{text:?}");
        assert!(text.ends_with("line 8"), "{text:?}");
        assert!(
            h.text.contains("line 1\r\nline 2"),
            "CRLF between lines: {:?}",
            h.text
        );
    }

    /// A line longer than the screen is wide comes back whole (the viewer wraps it); colours
    /// are kept; rows scrolled off the alternate screen are no history.
    #[test]
    fn wrapped_lines_join_colours_stay_and_the_alternate_screen_is_left_out() {
        let mut bytes = String::new();
        bytes.push_str(&format!("\x1b[31m{}\x1b[0m\r\n", "x".repeat(25)));
        for i in 0..6 {
            bytes.push_str(&format!("a{i}\r\n"));
        }
        bytes.push_str("\x1b[?1049h");
        for i in 0..20 {
            bytes.push_str(&format!("alt{i}\r\n"));
        }
        bytes.push_str("\x1b[?1049l");
        let h = rebuild(&Source {
            start: 0,
            bytes: bytes.into_bytes(),
            sizes: vec![size(0, 4, 10)],
        });
        let text = plain(&h);
        assert!(
            text.starts_with(&format!("{}\n", "x".repeat(25))),
            "{text:?}"
        );
        assert!(h.text.contains("\x1b[31m"), "{:?}", h.text);
        assert!(!text.contains("alt"), "{text:?}");
    }

    /// The size in effect when the bytes were written: a line written at 10 columns wraps
    /// there, one written after a resize to 40 does not.
    #[test]
    fn each_part_is_replayed_at_the_size_it_was_written_at() {
        let first = format!("{}\r\n", "y".repeat(30));
        let mut bytes = first.clone();
        bytes.push_str(&format!("{}\r\n", "z".repeat(30)));
        for i in 0..4 {
            bytes.push_str(&format!("b{i}\r\n"));
        }
        let h = rebuild(&Source {
            start: 0,
            bytes: bytes.into_bytes(),
            sizes: vec![size(0, 3, 10), size(first.len() as u64, 3, 40)],
        });
        // The y line took 3 rows at 10 columns (a row still on the screen at the resize is cut
        // from its line, as vt100 and terminals without reflow do), the z line one row at 40.
        let text = plain(&h);
        assert_eq!(text.matches('y').count(), 30, "{text:?}");
        assert!(
            text.contains(&format!("\n{}\nb0", "z".repeat(30))),
            "{text:?}"
        );
    }

    /// An erase of the scrollback (what `clear` sends after erasing the screen) takes what
    /// scrolled off before it out of the history — a secret printed, then cleared, must not
    /// come back for a late viewer — and what scrolls off after it is history again.
    #[test]
    fn an_erased_scrollback_is_no_history() {
        // `clear`: the screen erased too, so nothing of before is left; ED3 alone leaves the
        // rows on the screen (secrets 7 to 10 on 5 rows), which scroll off later as any do.
        for (erase, kept) in [("\x1b[H\x1b[2J\x1b[3J", 0), ("\x1b[?3J", 4)] {
            let mut bytes: String = (1..=10).map(|i| format!("secret {i}\r\n")).collect();
            bytes.push_str(erase);
            bytes.extend((1..=8).map(|i| format!("after {i}\r\n")));
            let h = rebuild(&Source {
                start: 0,
                bytes: bytes.into_bytes(),
                sizes: vec![size(0, 5, 20)],
            });
            let text = plain(&h);
            let secrets: Vec<&str> = text.lines().filter(|l| l.starts_with("secret")).collect();
            let want: Vec<String> = (11 - kept..=10).map(|i| format!("secret {i}")).collect();
            assert_eq!(secrets, want, "{erase:?}: {text:?}");
            assert!(text.contains("after 1"), "{erase:?}: {text:?}");
        }
    }

    /// DEC line drawing that scrolled off comes back as the boxes it drew.
    #[test]
    fn line_drawing_scrolled_off_stays_boxes() {
        let mut bytes = String::from("\x1b(0lqqk\r\nmqqj\x1b(B\r\n");
        bytes.extend((1..=6).map(|i| format!("l{i}\r\n")));
        let h = rebuild(&Source {
            start: 0,
            bytes: bytes.into_bytes(),
            sizes: vec![size(0, 3, 20)],
        });
        assert!(plain(&h).starts_with("┌──┐\n└──┘\nl1"), "{:?}", plain(&h));
    }

    /// At most HISTORY_OUT bytes, the newest.
    #[test]
    fn history_is_bounded_to_its_newest_rows() {
        let line = format!("{}\r\n", "w".repeat(70));
        let bytes = line.repeat(HISTORY_OUT / 40);
        let h = rebuild(&Source {
            start: 0,
            bytes: format!("{bytes}last\r\n{}", "\r\n".repeat(30)).into_bytes(),
            sizes: vec![size(0, 24, 80)],
        });
        assert!(h.text.len() <= HISTORY_OUT + h.rows, "{}", h.text.len());
        assert!(plain(&h).contains("last"));
    }

    /// Put into a terminal: the rows, then the screen scrolled clear.
    #[test]
    fn scrolled_in_pushes_every_row_up() {
        let h = History {
            text: "one\r\ntwo".into(),
            rows: 2,
        };
        let out = String::from_utf8(h.scrolled_in(24)).unwrap();
        assert!(
            out.starts_with("\x1b[0mone\r\ntwo\x1b[0m\x1b[24;1H"),
            "{out:?}"
        );
        assert!(out.ends_with("\r\n\r\n"), "{out:?}");
        assert!(History::default().scrolled_in(24).is_empty());
    }
}

#[cfg(test)]
mod after_a_cut {
    use super::*;

    /// Output that starts after lost bytes starts at its first line: a cut line's tail is not
    /// shown as a line of its own.
    #[test]
    fn a_cut_line_is_left_out() {
        let bytes: String = std::iter::once("t of a cut line\r\n".to_string())
            .chain((1..=8).map(|i| format!("line {i}\r\n")))
            .collect();
        let h = rebuild(&Source {
            start: 4000,
            bytes: bytes.into_bytes(),
            sizes: vec![SizeAt {
                at: 0,
                rows: NonZeroU16::new(3).unwrap(),
                cols: NonZeroU16::new(20).unwrap(),
                new_process: false,
            }],
        });
        assert!(h.text.starts_with("line 1"), "{h:?}");
    }
}
