//! Charsets: DEC special graphics (`ESC ( 0`, `ESC ) 0` with SO/SI), the line-drawing set old
//! TUIs, ncurses without UTF-8, `screen` and a `tmux` nested in a session draw boxes with, which
//! vt100 does not emulate: it stored `lqqqk` where the program drew `┌───┐`, and every snapshot
//! (an attach, a page opened late, a ttyd client) showed the letters. [`Charsets`] follows the
//! designations and shifts in the output and hands vt100 the characters the terminal would
//! draw; [`Charsets::restore`] puts a fresh terminal into the same state after a snapshot, so
//! the live output that follows draws as it does for a viewer that saw it all.
//!
//! Only G0 and G1 (what SO/SI select) are followed; G2/G3, single shifts and the national sets
//! are not (no program in practice uses them on a UTF-8 terminal), nor DECSC/DECRC's copy of the
//! charset state.

use std::borrow::Cow;

/// The characters of DEC special graphics for bytes `0x5f..=0x7e`, as xterm draws them.
const DEC_GRAPHICS: [char; 32] = [
    '\u{a0}', '◆', '▒', '␉', '␌', '␍', '␊', '°', '±', '␤', '␋', '┘', '┐', '┌', '└', '┼', '⎺', '⎻',
    '─', '⎼', '⎽', '├', '┤', '┴', '┬', '│', '≤', '≥', 'π', '≠', '£', '·',
];

/// Where the byte stream is, as far as charsets care.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Text and controls.
    Ground,
    /// After ESC.
    Escape,
    /// After `ESC (` (G0) or `ESC )` (G1): the next byte names the set.
    Designate(usize),
    /// After ESC and another intermediate (`ESC #`, `ESC *`, ...): up to the final byte.
    Intermediate,
    /// In a CSI sequence, up to its final byte.
    Csi,
    /// In a string (OSC, DCS, APC, PM, SOS), up to BEL or ST.
    String,
    /// ESC inside a string: ST if `\` follows.
    StringEscape,
}

/// The charset state of one terminal's output, followed byte by byte.
#[derive(Debug, Clone)]
pub struct Charsets {
    state: State,
    /// Whether G0 and G1 are DEC special graphics (else ASCII).
    graphics: [bool; 2],
    /// The set SO/SI shifted in: 0 (G0) or 1 (G1).
    shifted: usize,
}

impl Default for Charsets {
    fn default() -> Self {
        Charsets {
            state: State::Ground,
            graphics: [false; 2],
            shifted: 0,
        }
    }
}

impl Charsets {
    /// `bytes` as a terminal in this state draws them: graphics characters as UTF-8 where DEC
    /// special graphics is shifted in, everything else unchanged (borrowed when nothing is).
    pub fn translate<'a>(&mut self, bytes: &'a [u8]) -> Cow<'a, [u8]> {
        let mut out: Option<Vec<u8>> = None;
        for (i, &b) in bytes.iter().enumerate() {
            let drawn = self.step(b);
            match (drawn, &mut out) {
                (Some(c), out) => {
                    let out = out.get_or_insert_with(|| {
                        let mut v = Vec::with_capacity(bytes.len() + 64);
                        v.extend_from_slice(&bytes[..i]);
                        v
                    });
                    let mut utf8 = [0u8; 4];
                    out.extend_from_slice(c.encode_utf8(&mut utf8).as_bytes());
                }
                (None, Some(out)) => out.push(b),
                (None, None) => {}
            }
        }
        match out {
            Some(v) => Cow::Owned(v),
            None => Cow::Borrowed(bytes),
        }
    }

    /// Follows byte `b`; the graphics character it draws as, when it does.
    fn step(&mut self, b: u8) -> Option<char> {
        match self.state {
            State::Ground => match b {
                0x1b => self.state = State::Escape,
                0x0e => self.shifted = 1,
                0x0f => self.shifted = 0,
                0x5f..=0x7e if self.graphics[self.shifted] => {
                    return Some(DEC_GRAPHICS[usize::from(b - 0x5f)]);
                }
                _ => {}
            },
            State::Escape => {
                self.state = match b {
                    b'(' => State::Designate(0),
                    b')' => State::Designate(1),
                    b'[' => State::Csi,
                    b']' | b'P' | b'X' | b'^' | b'_' => State::String,
                    0x1b => State::Escape,
                    0x20..=0x2f => State::Intermediate,
                    b'c' => {
                        // A full reset: both sets ASCII, G0 in.
                        *self = Charsets::default();
                        State::Ground
                    }
                    _ => State::Ground,
                }
            }
            State::Designate(g) => {
                self.graphics[g] = b == b'0';
                self.state = State::Ground;
            }
            State::Intermediate => {
                if !(0x20..=0x2f).contains(&b) {
                    self.state = State::Ground;
                }
            }
            State::Csi => match b {
                0x40..=0x7e => self.state = State::Ground,
                0x1b => self.state = State::Escape,
                _ => {}
            },
            State::String => match b {
                0x07 => self.state = State::Ground,
                0x1b => self.state = State::StringEscape,
                _ => {}
            },
            State::StringEscape => {
                if b == b'\\' {
                    self.state = State::Ground;
                } else {
                    // Not ST: the string ended at the ESC, and this byte follows it.
                    self.state = State::Escape;
                    return self.step(b);
                }
            }
        }
        None
    }

    /// Goes on at a place a parser can start at (after a cut in the output, see
    /// [`crate::terminal::boundary`]), the sets as they were.
    pub fn resume_at_boundary(&mut self) {
        self.state = State::Ground;
    }

    /// The sequences that put a terminal reset to its defaults into this state (nothing for
    /// the defaults): the sets designated, then the shift.
    pub fn restore(&self) -> &'static str {
        match (self.graphics, self.shifted) {
            ([false, false], 0) => "",
            ([true, false], 0) => "\x1b(0",
            ([false, true], 0) => "\x1b)0",
            ([true, true], 0) => "\x1b(0\x1b)0",
            ([false, false], _) => "\x0e",
            ([true, false], _) => "\x1b(0\x0e",
            ([false, true], _) => "\x1b)0\x0e",
            ([true, true], _) => "\x1b(0\x1b)0\x0e",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drawn(cs: &mut Charsets, bytes: &[u8]) -> String {
        String::from_utf8(cs.translate(bytes).into_owned()).unwrap()
    }

    #[test]
    fn graphics_designated_into_g0_draw_boxes_until_ascii_comes_back() {
        let mut cs = Charsets::default();
        let out = drawn(&mut cs, b"\x1b(0lqqqk\r\nx ab x\r\nmqqqj\x1b(B lqk");
        assert_eq!(out, "\x1b(0┌───┐\r\n│ ▒␉ │\r\n└───┘\x1b(B lqk");
        assert_eq!(cs.restore(), "");
    }

    #[test]
    fn shift_out_selects_g1_and_shift_in_g0() {
        let mut cs = Charsets::default();
        let out = drawn(&mut cs, b"\x1b)0a\x0eqx\x0fq");
        assert_eq!(out, "\x1b)0a\x0e─│\x0fq");
        // Still in G1 across a chunk, then a restore for a fresh terminal.
        assert_eq!(drawn(&mut cs, b"\x0en"), "\x0e┼");
        assert_eq!(cs.restore(), "\x1b)0\x0e");
    }

    #[test]
    fn sequences_and_strings_are_not_translated() {
        let mut cs = Charsets::default();
        // CSI finals (`m`, `l`, `h`), an OSC title, a DCS ended by ST: all as they are.
        let bytes = b"\x1b(0\x1b[1;31mq\x1b[?25l\x1b]2;lqk title\x07\x1bPqqq\x1b\\q";
        let out = drawn(&mut cs, bytes);
        assert_eq!(
            out,
            "\x1b(0\x1b[1;31m─\x1b[?25l\x1b]2;lqk title\x07\x1bPqqq\x1b\\─"
        );
        // A sequence split across chunks.
        assert_eq!(drawn(&mut cs, b"\x1b["), "\x1b[");
        assert_eq!(drawn(&mut cs, b"1mq"), "1m─");
        assert_eq!(cs.restore(), "\x1b(0");
    }

    #[test]
    fn a_full_reset_and_utf8_are_left_alone() {
        let mut cs = Charsets::default();
        assert_eq!(
            drawn(&mut cs, "\x1b(0q\x1bcq é日".as_bytes()),
            "\x1b(0─\x1bcq é日"
        );
        assert_eq!(cs.restore(), "");
        assert!(matches!(cs.translate(b"plain"), Cow::Borrowed(_)));
    }
}
