//! ExitReason: why a child stopped, classified the way OTP classifies exit reasons, because the
//! restart type (`Transient` above all) decides on "normal or not".

use std::fmt;

use ractor::SupervisionEvent;

/// Why a supervised child stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExitReason {
    /// Stopped with no reason or the reason `"normal"`: a normal exit.
    Normal,
    /// Stopped with the reason `"shutdown"` or `"shutdown: …"`: a normal, requested exit.
    Shutdown(Option<String>),
    /// Killed (ractor's kill signal, or its task was cancelled): abnormal.
    Killed,
    /// Stopped with any other reason string: abnormal, as in OTP.
    Abnormal(String),
    /// The child panicked or returned `Err` from a handler: abnormal.
    Failed(String),
    /// The child could not be started (its `pre_start` failed or panicked): abnormal, and counted
    /// against restart intensity because ractor never reports it as an event.
    StartFailed(String),
}

impl ExitReason {
    /// Classifies a ractor stop reason string.
    pub fn from_stop_reason(reason: Option<&str>) -> Self {
        match reason {
            None | Some("normal") => Self::Normal,
            Some("shutdown") => Self::Shutdown(None),
            Some("killed") | Some("actor_task_cancelled") => Self::Killed,
            Some(r) => match r.strip_prefix("shutdown:") {
                Some(rest) => Self::Shutdown(Some(rest.trim().to_string())),
                None => Self::Abnormal(r.to_string()),
            },
        }
    }

    /// The exit reason carried by a termination or failure event, if it is one.
    pub fn from_event(event: &SupervisionEvent) -> Option<Self> {
        match event {
            SupervisionEvent::ActorTerminated(_, _, reason) => {
                Some(Self::from_stop_reason(reason.as_deref()))
            }
            SupervisionEvent::ActorFailed(_, err) => Some(Self::Failed(err.to_string())),
            _ => None,
        }
    }

    /// Normal exits (`Normal`, `Shutdown`) do not restart a `Transient` child.
    pub fn is_normal(&self) -> bool {
        matches!(self, Self::Normal | Self::Shutdown(_))
    }
}

impl fmt::Display for ExitReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Normal => f.write_str("normal"),
            Self::Shutdown(None) => f.write_str("shutdown"),
            Self::Shutdown(Some(r)) => write!(f, "shutdown: {r}"),
            Self::Killed => f.write_str("killed"),
            Self::Abnormal(r) => write!(f, "stopped: {r}"),
            Self::Failed(e) => write!(f, "failed: {e}"),
            Self::StartFailed(e) => write!(f, "start failed: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_stop_reasons_like_otp() {
        assert_eq!(ExitReason::from_stop_reason(None), ExitReason::Normal);
        assert_eq!(
            ExitReason::from_stop_reason(Some("normal")),
            ExitReason::Normal
        );
        assert!(ExitReason::from_stop_reason(Some("shutdown")).is_normal());
        assert_eq!(
            ExitReason::from_stop_reason(Some("shutdown: bye")),
            ExitReason::Shutdown(Some("bye".into()))
        );
        assert_eq!(
            ExitReason::from_stop_reason(Some("killed")),
            ExitReason::Killed
        );
        assert!(!ExitReason::from_stop_reason(Some("killed")).is_normal());
        assert!(!ExitReason::from_stop_reason(Some("oops")).is_normal());
    }
}
