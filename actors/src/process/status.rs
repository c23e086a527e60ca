//! How a process ended, and the one non-blocking way to collect it.
//!
//! [`ExitStatus`] is corral's own, serializable form of a wait status (std's is opaque and
//! portable-pty's is lossy about signals). [`try_reap`] is `waitpid(pid, WNOHANG)`: it never
//! blocks, so it is safe on a tokio worker; callers learn *when* to call it from a
//! [`crate::process::PidFd`] becoming readable. Reaping consumes the status for good, so only the
//! owner of a child calls this (see [`crate::process::reaper`] for the ownership rules).

use std::fmt;
use std::io;

use nix::errno::Errno;
use nix::sys::signal::Signal;
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExitStatus {
    /// It called `exit(code)` (or returned from `main`).
    Code(i32),
    /// It was killed by this signal number.
    Signal(i32),
}

impl ExitStatus {
    /// The status a shell reports for a command that ended this way: its code, or 128 + the
    /// signal's number.
    pub fn shell_code(&self) -> i32 {
        match self {
            ExitStatus::Code(c) => *c,
            ExitStatus::Signal(s) => 128 + s,
        }
    }

    /// True only for `exit 0`.
    pub fn success(&self) -> bool {
        matches!(self, ExitStatus::Code(0))
    }

    /// The exit code, if it exited rather than being killed.
    pub fn code(&self) -> Option<i32> {
        match self {
            ExitStatus::Code(c) => Some(*c),
            ExitStatus::Signal(_) => None,
        }
    }

    /// The signal that killed it, if any.
    pub fn signal(&self) -> Option<i32> {
        match self {
            ExitStatus::Signal(s) => Some(*s),
            ExitStatus::Code(_) => None,
        }
    }

    /// Converts a std status (e.g. from `std::process::Child::wait`); `None` for a stop/continue
    /// report, which is not an exit.
    pub fn from_std(status: std::process::ExitStatus) -> Option<ExitStatus> {
        use std::os::unix::process::ExitStatusExt;
        match (status.code(), status.signal()) {
            (Some(code), _) => Some(ExitStatus::Code(code)),
            (None, Some(sig)) => Some(ExitStatus::Signal(sig)),
            (None, None) => None,
        }
    }

    /// Converts a nix wait status; `None` for anything that is not a final exit.
    pub fn from_wait_status(status: WaitStatus) -> Option<ExitStatus> {
        match status {
            WaitStatus::Exited(_, code) => Some(ExitStatus::Code(code)),
            WaitStatus::Signaled(_, sig, _core) => Some(ExitStatus::Signal(sig as i32)),
            _ => None,
        }
    }
}

impl fmt::Display for ExitStatus {
    /// `exit 1`, `signal 9 (SIGKILL)`, or `signal 64` for a number nix has no name for.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExitStatus::Code(code) => write!(f, "exit {code}"),
            ExitStatus::Signal(sig) => match Signal::try_from(*sig) {
                Ok(s) => write!(f, "signal {sig} ({})", s.as_str()),
                Err(_) => write!(f, "signal {sig}"),
            },
        }
    }
}

/// Why [`try_reap`] could not answer.
#[derive(Debug, thiserror::Error)]
pub enum ReapError {
    /// `ECHILD`: `pid` is not (or no longer) a child of this process — it was never ours, or
    /// someone already reaped it and took its status.
    #[error("pid {pid} is not a child of this process (or was already reaped)")]
    NotAChild {
        /// The pid asked about.
        pid: i32,
    },
    /// Any other `waitpid` failure.
    #[error("waitpid({pid}) failed: {source}")]
    Os {
        /// The pid asked about.
        pid: i32,
        /// The OS error.
        source: io::Error,
    },
}

impl From<ReapError> for io::Error {
    fn from(e: ReapError) -> io::Error {
        match e {
            ReapError::NotAChild { .. } => io::Error::new(io::ErrorKind::NotFound, e),
            ReapError::Os { source, .. } => source,
        }
    }
}

/// `waitpid(pid, WNOHANG)`: `Ok(Some(status))` if the child had exited (it is now reaped),
/// `Ok(None)` if it is still running. Never blocks. `pid` must be a specific pid (> 0): reaping
/// "any child" would steal statuses that others own.
pub fn try_reap(pid: i32) -> Result<Option<ExitStatus>, ReapError> {
    if pid <= 0 {
        return Err(ReapError::Os {
            pid,
            source: io::Error::new(io::ErrorKind::InvalidInput, "try_reap needs a specific pid"),
        });
    }
    loop {
        match waitpid(Pid::from_raw(pid), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) => return Ok(None),
            Ok(status) => match ExitStatus::from_wait_status(status) {
                Some(exit) => return Ok(Some(exit)),
                // Stop/continue reports only come with WUNTRACED/WCONTINUED, which we never
                // pass; if one shows up anyway the child is alive.
                None => return Ok(None),
            },
            Err(Errno::EINTR) => continue,
            Err(Errno::ECHILD) => return Err(ReapError::NotAChild { pid }),
            Err(e) => {
                return Err(ReapError::Os {
                    pid,
                    source: io::Error::from(e),
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display() {
        assert_eq!(ExitStatus::Code(1).to_string(), "exit 1");
        assert_eq!(ExitStatus::Signal(9).to_string(), "signal 9 (SIGKILL)");
        assert_eq!(ExitStatus::Signal(64).to_string(), "signal 64");
        assert!(ExitStatus::Code(0).success());
        assert!(!ExitStatus::Signal(15).success());
    }
}
