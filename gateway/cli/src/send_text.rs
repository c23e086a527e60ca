//! What `corral send` sends: its text with escapes (`\n`, `\xHH`, …) resolved, or standard
//! input as it is (`-`), bounded.

use anyhow::{Context, bail};

/// Most bytes `corral send … -` reads from standard input.
const MAX_STDIN: u64 = 64 << 20;

/// Standard input, whole, as text (`corral send … -`).
pub(crate) async fn read_stdin() -> anyhow::Result<String> {
    use tokio::io::AsyncReadExt;
    let mut bytes = Vec::new();
    tokio::io::stdin()
        .take(MAX_STDIN + 1)
        .read_to_end(&mut bytes)
        .await
        .context("reading standard input")?;
    if bytes.len() as u64 > MAX_STDIN {
        bail!("standard input holds more than {MAX_STDIN} bytes; nothing was sent");
    }
    String::from_utf8(bytes).map_err(|e| {
        anyhow::anyhow!(
            "standard input is not UTF-8 text (at byte {}); nothing was sent",
            e.utf8_error().valid_up_to()
        )
    })
}

/// `\n`, `\r`, `\t`, `\e`, `\\` and `\xHH` (up to `\x7f`: a byte of UTF-8 text) escapes; any
/// other backslash is an error (`'\x04'` used to be sent as four characters, silently).
pub(crate) fn unescape(s: &str) -> Result<String, String> {
    let mut out = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('r') => out.push('\r'),
            Some('t') => out.push('\t'),
            Some('e') => out.push('\x1b'),
            Some('\\') => out.push('\\'),
            Some('x') => {
                let hex: String = chars.by_ref().take(2).collect();
                match u8::from_str_radix(&hex, 16) {
                    Ok(b)
                        if hex.len() == 2
                            && hex.bytes().all(|h| h.is_ascii_hexdigit())
                            && b <= 0x7f =>
                    {
                        out.push(char::from(b))
                    }
                    _ => {
                        return Err(format!(
                            "\\x{hex} is not an escape: \\x takes two hex digits up to 7f"
                        ));
                    }
                }
            }
            Some(o) => {
                return Err(format!(
                    "\\{o} is not an escape (\\n \\r \\t \\e \\\\ \\xHH; `-` sends standard input as it is)"
                ));
            }
            None => return Err("a lone \\ ends the text (\\\\ is a backslash)".into()),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::unescape;

    #[test]
    fn escapes_are_honoured_and_unknown_ones_refused() {
        assert_eq!(unescape(r"echo hi\n").unwrap(), "echo hi\n");
        assert_eq!(
            unescape(r"\x03\x04\e[A\t\r\\").unwrap(),
            "\x03\x04\x1b[A\t\r\\"
        );
        assert_eq!(unescape("plain 日本").unwrap(), "plain 日本");
        for bad in [r"\q", r"\x4", r"\x+1", r"\xzz", r"\x80", r"\", r"a\|b"] {
            assert!(unescape(bad).is_err(), "{bad} was taken");
        }
    }
}
