//! The ttyd dialect's client frames (<https://github.com/tsl0922/ttyd>), parsed without side
//! effects so the client actor only acts on them and the parser can be fuzzed on its own.
//!
//! First frame: JSON `{"AuthToken": …, "columns": …, "rows": …}`. Then one command byte and a
//! payload: `'0'` input bytes, `'1'` resize JSON `{"columns", "rows"}`, `'2'` pause, `'3'` resume.

use corral_actors::Size;

/// A client frame after the init.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame<'a> {
    /// Keys for the session.
    Input(&'a [u8]),
    /// The viewer's terminal size (both at least 1).
    Resize(Size),
    /// Stop sending output.
    Pause,
    /// Send output again.
    Resume,
    /// Not a frame this dialect knows (ttyd has no error channel: counted, ignored).
    Bad(&'static str),
}

/// Parses a frame; `None` for an empty one (ignored).
pub fn parse_frame(data: &[u8]) -> Option<Frame<'_>> {
    let (&cmd, payload) = data.split_first()?;
    Some(match cmd {
        b'0' => Frame::Input(payload),
        b'1' => {
            #[derive(serde::Deserialize)]
            struct Resize {
                columns: u16,
                rows: u16,
            }
            match serde_json::from_slice::<Resize>(payload) {
                Ok(r) if r.columns > 0 && r.rows > 0 => Frame::Resize(Size {
                    rows: r.rows,
                    cols: r.columns,
                }),
                Ok(_) => Frame::Bad("resize to zero"),
                Err(_) => Frame::Bad("resize is not {columns, rows} JSON"),
            }
        }
        b'2' => Frame::Pause,
        b'3' => Frame::Resume,
        _ => Frame::Bad("unknown command byte"),
    })
}

/// The first frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Init {
    /// The token (empty counts as missing).
    pub token: Option<String>,
    /// The terminal size, when both are given and non-zero.
    pub size: Option<Size>,
}

/// Parses the first frame; the error says what a ttyd client got wrong.
pub fn parse_init(data: &[u8]) -> Result<Init, String> {
    #[derive(serde::Deserialize)]
    struct Raw {
        #[serde(rename = "AuthToken")]
        auth_token: Option<String>,
        #[serde(default)]
        columns: Option<u16>,
        #[serde(default)]
        rows: Option<u16>,
    }
    let raw: Raw = serde_json::from_slice(data)
        .map_err(|e| format!("first frame must be the ttyd JSON init: {e}"))?;
    let size = match (raw.columns, raw.rows) {
        (Some(cols), Some(rows)) if cols > 0 && rows > 0 => Some(Size { rows, cols }),
        _ => None,
    };
    Ok(Init {
        token: raw.auth_token.filter(|t| !t.is_empty()),
        size,
    })
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn frames() {
        assert_eq!(parse_frame(b""), None);
        assert_eq!(parse_frame(b"0ls\r"), Some(Frame::Input(b"ls\r")));
        assert_eq!(
            parse_frame(br#"1{"columns":120,"rows":40}"#),
            Some(Frame::Resize(Size {
                rows: 40,
                cols: 120
            }))
        );
        assert!(matches!(
            parse_frame(br#"1{"columns":0,"rows":40}"#),
            Some(Frame::Bad(_))
        ));
        assert_eq!(parse_frame(b"2"), Some(Frame::Pause));
        assert_eq!(parse_frame(b"3"), Some(Frame::Resume));
        assert!(matches!(parse_frame(b"9"), Some(Frame::Bad(_))));
        let init = parse_init(br#"{"AuthToken":"t","columns":80,"rows":24}"#).unwrap();
        assert_eq!(init.token.as_deref(), Some("t"));
        assert_eq!(init.size, Some(Size { rows: 24, cols: 80 }));
        assert_eq!(parse_init(br#"{"AuthToken":""}"#).unwrap().token, None);
        assert!(parse_init(b"\x00garbage").is_err());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2048))]

        /// The fuzz target's property, run briefly in every `cargo test`.
        #[test]
        fn never_panics(data in proptest::collection::vec(any::<u8>(), 0..512)) {
            // Whatever the bytes, an answer (and an accepted init names a real size).
            let frame = parse_frame(&data);
            prop_assert_eq!(frame.is_none(), data.is_empty());
            if let Ok(init) = parse_init(&data) {
                prop_assert!(init.size.is_none_or(|s| s.rows > 0 && s.cols > 0));
            }
        }

        #[test]
        fn input_is_passed_through(keys in proptest::collection::vec(any::<u8>(), 0..256)) {
            let mut frame = vec![b'0'];
            frame.extend_from_slice(&keys);
            prop_assert_eq!(parse_frame(&frame), Some(Frame::Input(&keys[..])));
        }
    }
}
