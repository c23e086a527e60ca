//! Scrolled: whether a whole screen has scrolled in since the emulator lost bytes. A lapped
//! emulator is *approximate* (its screen may lack what the lost bytes drew) until a reset
//! point; a shell after a flood (`seq 1 200000`) never sends one, so every late viewer was told
//! "this screen may be incomplete" over a screen that was exact. Plain lines are enough: after
//! `2 × rows − 1` line feeds with no cursor move between them (at most `rows − 1` to reach the
//! bottom row from wherever the cursor was, then `rows` that each scroll a fresh, blank row in
//! at the bottom), every visible row was written after the cut, and stays so whatever comes
//! next (later bytes are all seen). This counts them byte by byte, across chunks:
//!
//! - what may move the cursor (a cursor move, a reverse index, save and restore, origin mode)
//!   starts the count again;
//! - what switches the screen (`?47`, `?1047`, `?1049`) or sets the scroll region (`r`) also
//!   forgets a count already reached: it was reached on another screen, or another region;
//! - colours (SGR), erasing (`K`, `J`, `X`), other private modes (bracketed paste, the cursor's
//!   visibility: a shell's prompt sends them), charset selections and titles (OSC) change
//!   nothing; line feeds inside a title or a DCS/SOS/PM/APC payload are not counted, and the
//!   scan ends such strings where vte does (ST, BEL for an OSC, an ESC, CAN or SUB).
//!
//! What it cannot see: a scroll region or a screen switch in the bytes lost before the cut.
//! The emulator's parser does not know of them either (its snapshot is then wrong in the same
//! way), so a program that set a region in lost bytes and then prints a screenful of lines in
//! it, without touching the rows outside, is said exact when a row outside the region may be
//! stale. Programs with a status line redraw it with cursor moves, which start the count again.
//!
//! The emulator then asks that the screen be the primary one and its scroll region the whole
//! screen (a region set before the cut keeps the rows outside it as they were).

/// Where the scan is in an escape sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum State {
    /// Text and control characters.
    #[default]
    Ground,
    /// After ESC.
    Escape,
    /// After `ESC (` or `ESC )`: one charset byte follows.
    Charset,
    /// In a CSI (`ESC [`), before its final byte.
    Csi,
    /// In an OSC (`ESC ]`), until BEL or ST.
    Osc,
    /// In a DCS, SOS, PM or APC (`ESC P`, `X`, `^`, `_`): a payload until ST, whose line
    /// feeds are not the terminal's.
    Payload,
    /// In an OSC or a payload, after an ESC (ST is `ESC \`; another byte starts an escape).
    StringEscape,
}

/// A CSI's parameters so far: only what tells a screen switch or origin mode apart.
#[derive(Debug, Clone, Copy, Default)]
struct Csi {
    /// `?`: a private mode.
    private: bool,
    /// The parameter being read.
    param: u32,
    /// A parameter that switches the screen (47, 1047, 1049).
    switches: bool,
    /// Parameter 6 (origin mode: homes the cursor).
    origin: bool,
}

impl Csi {
    /// The parameter just read is complete.
    fn end_param(&mut self) {
        self.switches |= matches!(self.param, 47 | 1047 | 1049);
        self.origin |= self.param == 6;
        self.param = 0;
    }
}

/// Line feeds that scrolled since the last cursor move (see the file's docs).
#[derive(Debug, Clone, Default)]
pub struct Scrolled {
    /// The scan's state across chunks.
    state: State,
    /// The CSI being read.
    csi: Csi,
    /// Line feeds since the count last started.
    lines: u32,
    /// A whole screen scrolled in since the screen or the region last changed.
    reached: bool,
}

impl Scrolled {
    /// Starts again, forgetting a count reached (a cut, a resize).
    pub fn restart(&mut self) {
        *self = Scrolled::default();
    }

    /// Scans `bytes` on a screen of `rows`; whether a whole screen has scrolled in, with no
    /// change of screen or scroll region since.
    pub fn feed(&mut self, bytes: &[u8], rows: u16) -> bool {
        let needed = 2 * u32::from(rows.max(1)) - 1;
        for &b in bytes {
            self.state = match (self.state, b) {
                // CAN and SUB end any sequence (vte); they print nothing.
                (_, 0x18 | 0x1a) => State::Ground,
                (State::Ground, b'\n') => {
                    self.lines = self.lines.saturating_add(1);
                    self.reached |= self.lines >= needed;
                    State::Ground
                }
                (State::Ground, 0x1b) => State::Escape,
                (State::Ground, _) => State::Ground,
                (State::Escape | State::StringEscape, b) => self.escape(b),
                (State::Charset, 0x1b) => State::Escape,
                (State::Charset, _) => State::Ground,
                // An ESC in a CSI abandons it and starts another.
                (State::Csi, 0x1b) => State::Escape,
                (State::Csi, b'?') => {
                    self.csi.private = true;
                    State::Csi
                }
                (State::Csi, b'0'..=b'9') => {
                    let digit = u32::from(b - b'0');
                    self.csi.param = self.csi.param.saturating_mul(10).saturating_add(digit);
                    State::Csi
                }
                (State::Csi, b';') => {
                    self.csi.end_param();
                    State::Csi
                }
                // Other parameter and intermediate bytes.
                (State::Csi, 0x20..=0x3f) => State::Csi,
                (State::Csi, final_byte) => {
                    self.csi.end_param();
                    self.csi_done(final_byte)
                }
                (State::Osc, 0x07) => State::Ground,
                (State::Osc | State::Payload, 0x1b) => State::StringEscape,
                (State::Osc, _) => State::Osc,
                (State::Payload, _) => State::Payload,
            };
        }
        self.reached
    }

    /// The byte after an ESC (in text, or ending a string: `\` is ST, anything else an escape
    /// of its own, as vte reads it).
    fn escape(&mut self, b: u8) -> State {
        match b {
            b'\\' => State::Ground,
            b'[' => {
                self.csi = Csi::default();
                State::Csi
            }
            b']' => State::Osc,
            b'P' | b'X' | b'^' | b'_' => State::Payload,
            b'(' | b')' => State::Charset,
            0x1b => State::Escape,
            // Anything else (save/restore cursor, index, reverse index): the cursor may be
            // elsewhere now.
            _ => self.moved(),
        }
    }

    /// A CSI ended with `final_byte`.
    fn csi_done(&mut self, final_byte: u8) -> State {
        match final_byte {
            // Colours and erasing write nowhere else and move nothing.
            b'm' | b'K' | b'J' | b'X' => State::Ground,
            b'h' | b'l' if self.csi.private && self.csi.switches => self.changed(),
            b'h' | b'l' if self.csi.private && self.csi.origin => self.moved(),
            b'h' | b'l' if self.csi.private => State::Ground,
            b'r' => self.changed(),
            _ => self.moved(),
        }
    }

    /// The cursor may have moved: the count starts again.
    fn moved(&mut self) -> State {
        self.lines = 0;
        State::Ground
    }

    /// Another screen, or another scroll region: a count reached is forgotten too.
    fn changed(&mut self) -> State {
        self.reached = false;
        self.moved()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_count_until_the_cursor_moves() {
        let mut s = Scrolled::default();
        // 2 × 3 − 1 = 5 line feeds for a 3-row screen, coloured, a title and a charset between.
        assert!(!s.feed(b"a\r\n\x1b[31mb\x1b[0m\r\n\x1b]2;t\x07c\r\n", 3));
        assert!(!s.feed(b"\x1b(Bd\x1b[K\r\n", 3));
        assert!(s.feed(b"e\r\n", 3));
        // Reached, it stays so through cursor moves and a prompt's private modes.
        assert!(s.feed(b"\x1b[5;1Hx\x1bM\x1b[?2004h$ ", 3));
        // Another screen forgets it; a cursor move (split across chunks) starts the count again.
        assert!(!s.feed(b"\x1b[?1049h", 3));
        assert!(!s.feed(b"\n\n\n\n\x1b[", 3));
        assert!(!s.feed(b"5;1Hx\n\n\n\n", 3));
        assert!(s.feed(b"\n", 3));
        // So does a scroll region.
        assert!(!s.feed(b"\x1b[1;2r", 3));
        s.restart();
        assert!(!s.feed(b"\n\n\n\n", 3));
        // A line feed inside a title is not one; a reverse index moved the cursor.
        assert!(!s.feed(b"\x1b]0;a\nb\x1b\\", 3));
        assert!(!s.feed(b"\x1bM\n", 3));
        assert!(!s.feed(b"\n\n\n", 3));
        assert!(s.feed(b"\n", 3));
        // Origin mode homes the cursor.
        s.restart();
        assert!(!s.feed(b"\n\n\n\n\x1b[?6h\n", 3));
        // A DCS's payload (sixel bands end in line feeds) is not the terminal's lines.
        s.restart();
        assert!(!s.feed(b"\x1bPq#0\n#1\n#2\n#3\n#4\n#5\n\x1b\\", 3));
        // A title ended by the ESC of a cursor move: the move is seen.
        assert!(!s.feed(b"\n\n\n\n\x1b]0;t\x1b[H\n", 3));
        // CAN ends a title; `ESC (` then an escape.
        s.restart();
        assert!(!s.feed(b"\x1b]0;t\x18\n\n\n\n\x1b(\x1b[H\n", 3));
        assert!(!s.feed(b"\n\n\n", 3));
        assert!(s.feed(b"\n", 3));
    }
}
