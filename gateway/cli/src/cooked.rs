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
                    if self.line.pop().is_some() {
                        fed.echo.extend_from_slice(b"\x08 \x08");
                    }
                }
                (Escape::None, '\u{15}') => {
                    for _ in self.line.chars() {
                        fed.echo.extend_from_slice(b"\x08 \x08");
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
    }
}
