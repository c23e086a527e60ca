//! When a session looks at its agent's screen: Claude Code fires no hook for what a key did
//! to it (an interrupted turn, a dialog answered) nor before its first one, so the session
//! looks at the screen on a timer — a few times after such a key ([`crate::agent::LOOKS`]),
//! and while a starting agent's output is still ([`crate::agent::STARTING_QUIET`]). What a look
//! concludes is `agent/screen.rs`'s.

use ractor::ActorRef;

use super::SessionActorState;
use crate::session::msg::SessionMsg;

impl SessionActorState {
    /// A terminal agent whose running process has said nothing yet.
    pub(super) fn starting_agent(&self) -> bool {
        self.shared.mode == crate::spec::Mode::Pty
            && self.running.is_some()
            && self.shared.status.read().attention == Some(crate::attention::Attention::Starting)
    }

    /// Looks at a starting agent's screen `after` from now (`SessionMsg::StartLookDue`): until
    /// it says something, every [`crate::agent::STARTING_QUIET`] of still output.
    pub(super) fn look_at_start(
        &mut self,
        myself: &ActorRef<SessionMsg>,
        after: std::time::Duration,
    ) {
        if let Some(old) = self.start_timer.take() {
            old.abort();
        }
        if self.starting_agent() {
            self.start_timer = Some(myself.send_after(after, || SessionMsg::StartLookDue));
        }
    }

    /// Looks at the screen the `check`th time after a key ([`crate::agent::LOOKS`]), if the
    /// agent still works or asks in its dialog and looks are left; a new key starts the looks
    /// again.
    pub(super) fn look_after_key(&mut self, myself: &ActorRef<SessionMsg>, check: usize) {
        if let Some(old) = self.look_timer.take() {
            old.abort();
        }
        let Some(wait) = crate::agent::LOOKS.get(check).copied() else {
            return;
        };
        if !crate::agent::worth_looking(&self.shared) {
            return;
        }
        self.look_timer = Some(myself.send_after(wait, move || SessionMsg::LookDue { check }));
    }
}
