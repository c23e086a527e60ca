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
        // Sizes read as the init's are (as ttyd reads them: numbers, floats, numeric strings).
        b'1' => match serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(payload)
        {
            Ok(r) => match (dimension(r.get("columns")), dimension(r.get("rows"))) {
                (Some(cols), Some(rows)) => Frame::Resize(Size { rows, cols }),
                _ => Frame::Bad("resize without a usable {columns, rows}"),
            },
            Err(_) => Frame::Bad("resize is not {columns, rows} JSON"),
        },
        b'2' => Frame::Pause,
        b'3' => Frame::Resume,
        _ => Frame::Bad("unknown command byte"),
    })
}

/// The first frame (its `Debug` leaves the token out).
#[derive(Clone, PartialEq, Eq)]
pub struct Init {
    /// The token (empty counts as missing).
    pub token: Option<String>,
    /// The terminal size, when both are given and non-zero.
    pub size: Option<Size>,
}

impl std::fmt::Debug for Init {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Init")
            .field("size", &self.size)
            .finish_non_exhaustive()
    }
}

/// A size field as ttyd reads it (`json_object_get_int`): a number, a float (truncated) or a
/// numeric string; anything else, or out of a terminal's range, is no size (ignored, as a
/// resize that cannot be used is — not a refused connection).
fn dimension(v: Option<&serde_json::Value>) -> Option<u16> {
    let n = match v? {
        serde_json::Value::Number(n) => n.as_f64()?,
        serde_json::Value::String(s) => s.trim().parse::<f64>().ok()?,
        _ => return None,
    };
    (n >= 1.0 && n <= f64::from(u16::MAX)).then_some(n as u16)
}

/// Parses the first frame; the error says what a ttyd client got wrong.
pub fn parse_init(data: &[u8]) -> Result<Init, String> {
    let raw: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(data)
        .map_err(|e| format!("first frame must be the ttyd JSON init: {e}"))?;
    let token = match raw.get("AuthToken") {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::String(t)) => Some(t.clone()),
        Some(_) => return Err("the ttyd init's AuthToken must be a string".into()),
    };
    let size = match (dimension(raw.get("columns")), dimension(raw.get("rows"))) {
        (Some(cols), Some(rows)) => Some(Size { rows, cols }),
        _ => None,
    };
    Ok(Init {
        token: token.filter(|t| !t.is_empty()),
        size,
    })
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// The first frame's `Debug` leaves its token out.
    #[test]
    fn an_init_s_debug_shows_no_token() {
        let init = parse_init(br#"{"AuthToken":"corral_0123_s3cr3t","columns":80,"rows":24}"#);
        let shown = format!("{init:?}");
        assert!(!shown.contains("s3cr3t"), "{shown}");
    }

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
        assert_eq!(
            parse_frame(br#"1{"columns":"120","rows":40.7}"#),
            Some(Frame::Resize(Size {
                rows: 40,
                cols: 120
            }))
        );
        assert_eq!(parse_frame(b"2"), Some(Frame::Pause));
        assert_eq!(parse_frame(b"3"), Some(Frame::Resume));
        assert!(matches!(parse_frame(b"9"), Some(Frame::Bad(_))));
        let init = parse_init(br#"{"AuthToken":"t","columns":80,"rows":24}"#).unwrap();
        assert_eq!(init.token.as_deref(), Some("t"));
        assert_eq!(init.size, Some(Size { rows: 24, cols: 80 }));
        assert_eq!(parse_init(br#"{"AuthToken":""}"#).unwrap().token, None);
        // Sizes as ttyd reads them: strings and floats are numbers; unusable ones no size.
        let size = |json: &[u8]| parse_init(json).unwrap().size;
        assert_eq!(
            size(br#"{"columns":"80","rows":"24"}"#),
            Some(Size { rows: 24, cols: 80 })
        );
        assert_eq!(
            size(br#"{"columns":120.7,"rows":40.2}"#),
            Some(Size {
                rows: 40,
                cols: 120
            })
        );
        assert_eq!(size(br#"{"columns":70000,"rows":24}"#), None);
        assert_eq!(size(br#"{"columns":"wide","rows":24}"#), None);
        assert!(parse_init(br#"{"AuthToken":5}"#).is_err());
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
