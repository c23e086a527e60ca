//! What the screen ([`crate::screen`]) and its history ([`crate::history`]) both know about a
//! terminal's byte stream when they replay it: where to go on after a cut in the middle of it,
//! and the modes a new process of the session starts from. One place, so the live screen and a
//! rebuilt history read the same bytes the same way (and neither imports the other for it).

/// What a new process of the session starts from (its predecessor's mouse reporting,
/// bracketed paste, cursor keys mode, hidden cursor, insert mode, character set, cursor shape,
/// keyboard protocols, scroll region, attributes and window title are not its own), keeping what
/// is on the screen and where the cursor is: as a viewer's terminal is reset when the process
/// restarts.
/// The scroll region is reset between a cursor save and restore (`CSI r` homes the cursor).
/// And if it was left on the alternate screen, [`LEAVE_ALTERNATE`] first — only then: on the
/// primary screen that sequence means "restore the cursor", which would put the new output over
/// the old. `gateway/web/src/term.ts` has the same string.
pub const NEW_PROCESS_MODES: &str = concat!(
    "\x1b[?1000l\x1b[?1002l\x1b[?1003l\x1b[?1005l\x1b[?1006l\x1b[?1015l\x1b[?1004l",
    "\x1b[?2004l\x1b[?1l\x1b>\x1b[?7h\x1b[?25h",
    // insert mode off, G0 = ASCII and shifted in, default cursor shape, xterm's
    // modifyOtherKeys off, kitty's keyboard flags popped
    "\x1b[4l\x1b(B\x0f\x1b[0 q\x1b[>4m\x1b[<u",
    // the whole screen scrolls again, the cursor where it was
    "\x1b7\x1b[r\x1b8",
    "\x1b[0m",
    // no window title (a page's tab kept the last program's)
    "\x1b]0;\x07",
);

/// Leaves the alternate screen the way a program does, back to the primary one and its cursor
/// (for a terminal on the alternate screen only: see [`NEW_PROCESS_MODES`]).
pub const LEAVE_ALTERNATE: &str = "\x1b[?1049l";

/// Where to go on after a cut at the start of `bytes`: the first escape sequence (ESC starts
/// one from any parser state), else the start of the first line, else right there.
pub fn boundary(bytes: &[u8]) -> usize {
    bytes
        .iter()
        .position(|&b| b == 0x1b)
        .or_else(|| bytes.iter().position(|&b| b == b'\n').map(|i| i + 1))
        .unwrap_or(0)
}
