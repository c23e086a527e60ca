//! Errors a caller of the session API can act on; each message names the problem. A spec the
//! library refuses says which rule it broke as a [`SpecError`] variant (a program embedding
//! corral can match on it), inside [`SessionError::BadSpec`].

use crate::spec::SpecError;

/// Why a session operation did not happen.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    /// No session has this id or name.
    #[error("no session '{0}'")]
    NotFound(String),
    /// A session with this name exists.
    #[error("a session named '{0}' already exists")]
    NameTaken(String),
    /// The spec (or a size or grace given with an operation) is unusable: which rule it
    /// breaks, each message naming its field (a prefix "invalid session spec" was wrong for a
    /// stop's grace or a resize).
    #[error("{0}")]
    BadSpec(#[from] SpecError),
    /// The process could not be started.
    #[error("could not start the process: {0}")]
    Spawn(String),
    /// The input queue is full: the process is not reading its input.
    #[error("input queue full ({capacity} bytes pending): the process is not reading its input")]
    InputFull {
        /// Queue bound in bytes.
        capacity: usize,
    },
    /// No process is running to take input (the session's name: what the user called it).
    #[error("session {0} has no running process")]
    NotRunning(String),
    /// Input the session cannot take as it is (nothing was written).
    #[error("{0}")]
    BadInput(String),
    /// The operation does not apply to this session.
    #[error("{0}")]
    Unsupported(String),
    /// Too many sessions: the bound, and how many of those kept have ended.
    #[error(
        "session limit reached ({max} kept, {ended} of them ended: `corral rm` those, or the \
         janitor removes the oldest past the retention within a minute; the server's open-file \
         limit may set the bound below 4096: docs/operations.md, \"Open files and the session \
         limit\")"
    )]
    TooMany {
        /// The bound.
        max: usize,
        /// Ended sessions among those kept (they hold their log files until removed).
        ended: usize,
    },
    /// The session's actor is gone or did not answer.
    #[error("session unavailable: {0}")]
    Unavailable(String),
    /// An offset beyond what the session has produced.
    #[error("offset {from} is beyond the session's output ({head} bytes so far)")]
    OffsetBeyondHead {
        /// Requested.
        from: u64,
        /// Produced so far.
        head: u64,
    },
}

impl From<ractor::SpawnErr> for SessionError {
    fn from(e: ractor::SpawnErr) -> Self {
        match e {
            ractor::SpawnErr::StartupFailed(inner) => match inner.downcast::<SessionError>() {
                Ok(se) => *se,
                Err(other) => Self::Spawn(other.to_string()),
            },
            other => Self::Spawn(other.to_string()),
        }
    }
}
