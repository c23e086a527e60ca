//! Paste: a paste larger than a frame, sent as `input` parts with `more` (docs/protocol.md),
//! kept per connection until its last part and then written as one paste — bracketed once, one
//! Enter. A paste is one unit or nothing: one refused (past the input burst, or interleaved
//! with another session's parts) has its later parts dropped up to its last, so no part of it
//! is ever written; the client hears why once.

use corral_actors::{SessionError, SessionHandle};

use super::native::Input;
use super::*;

impl ConnectionState {
    /// A paste, or a part of one larger than a frame (`more`: kept until the last part comes,
    /// then pasted as one). The parts are bounded by the input burst, which a paste could
    /// never pass anyway: past it the paste is refused (`too_large`) and nothing is written.
    pub(super) async fn paste_part(
        &mut self,
        id: Option<u64>,
        h: &SessionHandle,
        data: String,
        more: bool,
        written: bool,
    ) -> bool {
        let mut text = match self.paste.take() {
            Some((session, Some(text))) if session == h.id() => text,
            Some((session, None)) if session == h.id() => {
                // This paste was refused (told once): its later parts are dropped with it, up
                // to its last, so no part of it is ever written.
                if more {
                    self.paste = Some((session, None));
                }
                return true;
            }
            Some((other, _)) => {
                // A paste's parts come together; the client lost track of one: say so. The
                // unfinished paste is refused (its later parts dropped), this part too.
                self.paste = Some((other, None));
                return self
                    .error(
                        id,
                        ErrorCode::Conflict,
                        format!(
                            "a paste to session {other} is unfinished on this connection: \
                             it is refused, and this part too"
                        ),
                    )
                    .await;
            }
            None => String::new(),
        };
        let burst = self.input_burst();
        if text.len() + data.len() + 1 > burst {
            if more {
                self.paste = Some((h.id(), None));
            }
            return self
                .error(
                    id,
                    ErrorCode::TooLarge,
                    format!(
                        "a paste of over {burst} bytes exceeds the input burst (twice \
                         input_bytes_per_sec); nothing of it is written"
                    ),
                )
                .await;
        }
        let kept = text.len();
        text.push_str(&data);
        if more {
            self.paste = Some((h.id(), Some(text)));
            return true;
        }
        let mut input = Input::Paste(text);
        self.entered = None;
        let alive = self.write_input(id, h, &mut input).await;
        if self.wait.is_some()
            && let Input::Paste(mut text) = input
        {
            // This last part is handled again when its wait ends: keep only the earlier ones.
            text.truncate(kept);
            self.paste = Some((h.id(), Some(text)));
            return alive;
        }
        match self.entered.take() {
            // Queued: answered once the program has it, if asked (see `Op::Input::written`).
            Some(entered) if alive && written => {
                let h = h.clone();
                self.defer(id, async move {
                    entered.await.map(|()| h.info()).map_err(|_| {
                        SessionError::Unavailable(format!(
                            "{} ended before the paste was written whole",
                            h.name()
                        ))
                    })
                })
                .await
            }
            _ => alive,
        }
    }

    /// The most input bytes that can pass the byte limit at once.
    fn input_burst(&self) -> usize {
        (self.app.config.limits.input_bytes_per_sec as usize)
            .saturating_mul(2)
            .max(1)
    }
}
