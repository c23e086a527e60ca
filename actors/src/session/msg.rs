//! Msg: what a Session actor is told — by its output reader (the process exited), by its own
//! timers (a restart is due) and by handles (stop, kill, restart, resize). Its own file so the
//! output reader can speak to the session without depending on the actor.

use std::time::Duration;

use ractor::RpcReplyPort;

use super::shared::SessionInfo;
use crate::error::SessionError;
use crate::spec::Size;

/// Identifies a viewer for the resize policy (0 = nobody).
pub type ViewerId = u64;

/// Messages a Session handles (use [`crate::SessionHandle`]).
pub enum SessionMsg {
    /// Internal: the process with this generation exited (from the primary reader).
    ProcessExited {
        /// Process incarnation.
        generation: u64,
    },
    /// Internal: the holder of this process incarnation died (its link saw the hangup).
    HolderLost {
        /// Process incarnation.
        generation: u64,
        /// What happened, for the session's reason.
        why: String,
    },
    /// Internal: a backoff delay is over.
    RestartDue {
        /// Which scheduled restart.
        generation: u64,
    },
    /// Stop: stop signal, grace, SIGKILL of the tree. No restart follows.
    Stop {
        /// Overrides the spec's grace.
        grace: Option<Duration>,
        /// The server is shutting down: the session is recorded as interrupted, so the next
        /// boot starts it again per its restart policy.
        shutdown: bool,
        /// Answer once everything is gone.
        reply: RpcReplyPort<SessionInfo>,
    },
    /// The server goes away but its sessions stay (an upgrade, or a shutdown that keeps
    /// sessions): a process under a holder is left running there for the next server; one
    /// without a holder is stopped as at a shutdown. Answers whether the process was kept.
    Detach(RpcReplyPort<bool>),
    /// SIGKILL the whole tree at once.
    Kill(RpcReplyPort<SessionInfo>),
    /// Stop if running, then start a fresh process (not counted against intensity).
    Restart(RpcReplyPort<Result<SessionInfo, SessionError>>),
    /// A viewer's terminal size (applied per the resize policy).
    Resize {
        /// Who.
        viewer: ViewerId,
        /// Its size.
        size: Size,
    },
    /// A prompt (a paste and its Enter) was typed: a terminal agent that waited works on it
    /// (`agent::prompted`).
    Prompted,
    /// Internal: [`crate::agent::PROMPT_SETTLE`] after the prompt recorded as event `seq`.
    PromptDue {
        /// The prompt's event.
        seq: u64,
    },
    /// A key that may change what a terminal agent does was typed (`agent::look_after_key`: an
    /// interrupt into a working agent, an answer into its dialog): its screen is looked at
    /// until it says.
    KeyTyped,
    /// Internal: look at the screen after such a key, the `check`th time (`agent::LOOKS`).
    LookDue {
        /// Which look this is.
        check: usize,
    },
    /// Internal: look whether an agent that has said nothing yet waits on its start screen
    /// (`agent::start_look`), [`crate::agent::STARTING_QUIET`] after its output went still.
    StartLookDue,
    /// Internal: a session taken back from a previous server stops keeping its size against
    /// resizes (`KEPT_FOR` after it was taken back).
    KeptOver,
    /// A viewer sent input: its size becomes the session's.
    ViewerActive(ViewerId),
    /// A question for the session's screen, forwarded as it is: it reaches the screen after
    /// the size changes sent before it (see `SessionShared::sizing`).
    Screen(crate::screen::ScreenMsg),
    /// A viewer that resized or typed left (its connection closed, or it unsubscribed): if it
    /// was the last to type, the size goes back to the most recent remaining viewer's.
    ViewerLeft(ViewerId),
}
