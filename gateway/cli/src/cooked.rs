//! Cooked: the line discipline `corral attach` gives a session on pipes. A terminal's line
//! discipline echoes what is typed, lets it be edited, and hands the program a line on Enter;
//! a program on pipes has none, and this terminal is raw. So typed text is echoed and edited
//! here (Backspace, Ctrl-U) and sent a whole line at a time; escape sequences (arrows, function
//! keys) and other control keys mean nothing on a pipe and are dropped from the line, as the
//! web page does.

/// The line being typed.
#[derive(Debug, Default)]
pub struct Cooked {
    line: String,
    /// The bytes of a character cut at the end of the last read.
    partial: Vec<u8>,
    /// Inside an escape sequence: none, after ESC, or in a CSI/SS3 sequence.
    escape: Escape,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum Escape {
    #[default]
    None,
    Started,
    Sequence,
}

/// What typed bytes gave: what to echo, and the lines completed (without their newline).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Fed {
    /// Bytes for the terminal (the echo and the erasures).
    pub echo: Vec<u8>,
    /// Whole lines, in order.
    pub lines: Vec<String>,
}

impl Cooked {
    /// Takes what was typed.
    pub fn feed(&mut self, bytes: &[u8]) -> Fed {
        let mut fed = Fed::default();
        self.partial.extend_from_slice(bytes);
        let taken = std::mem::take(&mut self.partial);
        let (text, rest) = match std::str::from_utf8(&taken) {
            Ok(t) => (t.to_string(), &[][..]),
            Err(e) if e.error_len().is_none() => {
                let (ok, rest) = taken.split_at(e.valid_up_to());
                (String::from_utf8_lossy(ok).into_owned(), rest)
            }
            Err(_) => (String::from_utf8_lossy(&taken).into_owned(), &[][..]),
        };
        self.partial = rest.to_vec();
        for c in text.chars() {
            match (self.escape, c) {
                (Escape::Started, '[' | 'O') => self.escape = Escape::Sequence,
                (Escape::Started, _) => self.escape = Escape::None,
                (Escape::Sequence, '\u{40}'..='\u{7e}') => self.escape = Escape::None,
                (Escape::Sequence, _) => {}
                (Escape::None, '\u{1b}') => self.escape = Escape::Started,
                (Escape::None, '\r' | '\n') => {
                    fed.lines.push(std::mem::take(&mut self.line));
                    fed.echo.extend_from_slice(b"\r\n");
                }
                (Escape::None, '\u{7f}' | '\u{8}') => {
                    if let Some(c) = self.line.pop() {
                        erase(&mut fed.echo, c);
                    }
                }
                (Escape::None, '\u{15}') => {
                    for c in self.line.chars() {
                        erase(&mut fed.echo, c);
                    }
                    self.line.clear();
                }
                (Escape::None, c) if c == '\t' || !c.is_control() => {
                    self.line.push(c);
                    let mut buf = [0u8; 4];
                    fed.echo
                        .extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                }
                (Escape::None, _) => {}
            }
        }
        fed
    }
}

/// Erases `c` from the terminal: back, blank, back — over two cells for a wide character.
fn erase(echo: &mut Vec<u8>, c: char) {
    let cells = if wide(c) { 2 } else { 1 };
    for _ in 0..cells {
        echo.extend_from_slice(b"\x08");
    }
    for _ in 0..cells {
        echo.push(b' ');
    }
    for _ in 0..cells {
        echo.extend_from_slice(b"\x08");
    }
}

/// Whether a terminal shows `c` two cells wide (East Asian wide and fullwidth characters, most
/// emoji): the ranges that matter for typed text.
pub fn wide(c: char) -> bool {
    matches!(c as u32,
        0x1100..=0x115F | 0x2E80..=0x303E | 0x3041..=0x33FF | 0x3400..=0x4DBF | 0x4E00..=0x9FFF
        | 0xA000..=0xA4CF | 0xAC00..=0xD7A3 | 0xF900..=0xFAFF | 0xFE30..=0xFE4F
        | 0xFF00..=0xFF60 | 0xFFE0..=0xFFE6 | 0x1F300..=0x1F64F | 0x1F900..=0x1F9FF
        | 0x20000..=0x3FFFD)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Typing with edits gives the edited line on Enter; arrows and control keys are dropped;
    /// a character cut between two reads is whole.
    #[test]
    fn lines_are_edited_and_sent_whole() {
        let mut c = Cooked::default();
        let fed = c.feed(b"helo\x7flo wx\x15hello world\x1b[A\x03\r");
        assert_eq!(fed.lines, ["hello world"]);
        assert!(
            fed.echo.ends_with(b"hello world\r\n"),
            "{:?}",
            String::from_utf8_lossy(&fed.echo)
        );
        let e = "é".as_bytes();
        assert!(c.feed(&e[..1]).echo.is_empty());
        let fed = c.feed(&[&e[1..], b"\r"].concat());
        assert_eq!(fed.lines, ["é"]);
        assert!(c.feed(b"\x7f").echo.is_empty(), "nothing to erase");
        // A wide character takes two cells back.
        c.feed("漢".as_bytes());
        assert_eq!(c.feed(b"\x7f").echo, b"\x08\x08  \x08\x08");
    }
}
