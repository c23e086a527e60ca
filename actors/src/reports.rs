//! Reports: the answers a viewer's terminal sends by itself when the program asks it something
//! (where is the cursor, what are you, what colour is your background). With several viewers
//! every terminal answers, and the program reads the second answer as typed keys (in vim's
//! normal mode `ESC [ ? 1 ; 2 c` is a string of commands); tmux answers once. So a frame of
//! input made of reports only is passed on from one viewer — the one whose size is in effect
//! (see the session's resize policy) — and dropped from the others (`SessionHandle::input`).

/// Whether `bytes` hold one or more terminal reports and nothing else: cursor position
/// (`CSI r ; c R`), device attributes (`CSI ? … c`, `CSI > … c`), status (`CSI 0 n`), mode
/// reports (`CSI ? … $ y`), keyboard flags (`CSI ? … u`), window reports (`CSI … t`), colour
/// answers (`OSC 4/10/11/12 ; … BEL|ST`) and `DCS … ST` (XTVERSION, DECRQSS). A frame that
/// also holds a key is input. (`CSI 1 ; m R` is also a modified F3 in xterm's encoding: a
/// viewer that is not the size's owner loses that key alone.)
pub fn only_reports(bytes: &[u8]) -> bool {
    let mut rest = bytes;
    if rest.is_empty() {
        return false;
    }
    while !rest.is_empty() {
        match report_len(rest) {
            Some(n) => rest = &rest[n..],
            None => return false,
        }
    }
    true
}

/// The length of the report at the start of `b`, if one is there.
fn report_len(b: &[u8]) -> Option<usize> {
    match b {
        [0x1b, b'[', body @ ..] => {
            let end = body.iter().position(|&c| (0x40..=0x7e).contains(&c))?;
            let (params, fin) = (&body[..end], body[end]);
            let private = params.first().copied();
            let is_report = match fin {
                b'R' => params.iter().all(|c| c.is_ascii_digit() || *c == b';'),
                b'c' => matches!(private, Some(b'?' | b'>')),
                b'n' => params == b"0" || params == b"3",
                b'y' => params.ends_with(b"$"),
                b'u' => private == Some(b'?'),
                b't' => params.iter().all(|c| c.is_ascii_digit() || *c == b';'),
                _ => false,
            };
            is_report.then_some(2 + end + 1)
        }
        [0x1b, b']', body @ ..] => {
            let number: Vec<u8> = body
                .iter()
                .copied()
                .take_while(u8::is_ascii_digit)
                .collect();
            if !matches!(number.as_slice(), b"4" | b"10" | b"11" | b"12") {
                return None;
            }
            string_end(body).map(|n| 2 + n)
        }
        [0x1b, b'P', body @ ..] => string_end(body).map(|n| 2 + n),
        _ => None,
    }
}

/// Where a string (OSC, DCS) that starts `body` ends, terminator included: BEL or `ESC \`.
fn string_end(body: &[u8]) -> Option<usize> {
    let mut i = 0;
    while i < body.len() {
        match body[i] {
            0x07 => return Some(i + 1),
            0x1b if body.get(i + 1) == Some(&b'\\') => return Some(i + 2),
            _ => i += 1,
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::only_reports;

    #[test]
    fn reports_alone_are_told_from_keys() {
        for r in [
            &b"\x1b[12;40R"[..],
            b"\x1b[?1;2c",
            b"\x1b[>0;276;0c",
            b"\x1b[0n",
            b"\x1b[?2004;1$y",
            b"\x1b[?1u",
            b"\x1b[8;24;80t",
            b"\x1b]11;rgb:0b0b/0e0e/1414\x1b\\",
            b"\x1b]10;rgb:ffff/ffff/ffff\x07",
            b"\x1bP>|xterm(388)\x1b\\",
            b"\x1b[?1;2c\x1b[1;1R",
        ] {
            assert!(only_reports(r), "{r:?}");
        }
        for k in [
            &b"a"[..],
            b"\x1b[A",
            b"\x1b[15~",
            b"\x1b[1;5A",
            b"\x1b[<0;10;5M",
            b"\x1b[I",
            b"\x1b[?1;2cx",
            b"\x1b]52;c;aGk=\x07",
            b"\x1b[12;40",
            b"",
            b"\x1b",
        ] {
            assert!(!only_reports(k), "{k:?}");
        }
    }
}
