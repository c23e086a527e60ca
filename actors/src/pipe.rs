//! Pipe-mode processes: argv on stdin/stdout/stderr pipes in their own process session (setsid,
//! so the stop rules apply exactly as in PTY mode). For `claude -p --output-format stream-json
//! --input-format stream-json --verbose`: NDJSON in on stdin, NDJSON out on stdout.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;
use std::sync::Arc;

use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

use crate::fd;
use crate::process::leader::{self, ChildIo};
use crate::process::{PidFd, reaper};

/// A process on pipes.
pub struct PipeProcess {
    /// Its pid (= pgid = sid).
    pub pid: i32,
    /// Its pidfd.
    pub pidfd: Arc<PidFd>,
    /// Its stdin (non-blocking).
    pub stdin: AsyncFd<OwnedFd>,
    /// Its stdout (non-blocking).
    pub stdout: AsyncFd<OwnedFd>,
    /// Its stderr (non-blocking).
    pub stderr: AsyncFd<OwnedFd>,
}

/// Spawns `argv` with exactly `env` in `cwd`, on three pipes.
pub fn spawn(
    argv: &[String],
    cwd: Option<&Path>,
    env: &[(String, String)],
) -> io::Result<PipeProcess> {
    let (pid, [stdin_w, stdout_r, stderr_r]) = open(argv, cwd, env)?;
    let setup = || -> io::Result<PipeProcess> {
        let take = |fd: OwnedFd, interest| -> io::Result<AsyncFd<OwnedFd>> {
            fd::set_nonblocking(&fd)?;
            fd::register(fd, interest)
        };
        Ok(PipeProcess {
            pid,
            pidfd: Arc::new(PidFd::open(pid)?),
            stdin: take(stdin_w, Interest::WRITABLE)?,
            stdout: take(stdout_r, Interest::READABLE)?,
            stderr: take(stderr_r, Interest::READABLE)?,
        })
    };
    match setup() {
        Ok(p) => Ok(p),
        Err(e) => {
            if let Err(k) = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            ) {
                tracing::warn!(pid, error = %k, "could not kill a half-started child");
            }
            reaper::release(pid);
            reaper::disown(pid);
            Err(e)
        }
    }
}

/// Spawns `argv` on three pipes (no runtime needed: a holder calls this too). Returns its pid
/// and our ends: [stdin's write end, stdout's read end, stderr's read end] (blocking).
pub fn open(
    argv: &[String],
    cwd: Option<&Path>,
    env: &[(String, String)],
) -> io::Result<(i32, [OwnedFd; 3])> {
    let (stdin_r, stdin_w) = pipe()?;
    let (stdout_r, stdout_w) = pipe()?;
    let (stderr_r, stderr_w) = pipe()?;
    let pid = leader::spawn_leader(
        argv,
        env,
        cwd,
        ChildIo::Fds([
            stdin_r.as_raw_fd(),
            stdout_w.as_raw_fd(),
            stderr_w.as_raw_fd(),
        ]),
    )?;
    // The child's ends must go, or we never see EOF on its stdout when it exits.
    drop((stdin_r, stdout_w, stderr_w));
    Ok((pid, [stdin_w, stdout_r, stderr_r]))
}

/// A close-on-exec pipe: (read end, write end).
fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(io::Error::from)
}
