//! Pipe-mode processes: argv on stdin/stdout/stderr pipes in their own process session (setsid,
//! so the stop rules apply exactly as in PTY mode). For `claude -p --output-format stream-json
//! --input-format stream-json --verbose`: NDJSON in on stdin, NDJSON out on stdout.

use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;

use tokio::io::unix::AsyncFd;

use crate::fd;
use crate::process::{PidFd, reaper};

/// A process on pipes.
pub struct PipeProcess {
    /// Its pid (= pgid = sid).
    pub pid: i32,
    /// Its pidfd.
    pub pidfd: Arc<PidFd>,
    /// Its stdin (non-blocking).
    pub stdin: Arc<AsyncFd<OwnedFd>>,
    /// Its stdout (non-blocking).
    pub stdout: Arc<AsyncFd<OwnedFd>>,
    /// Its stderr (non-blocking).
    pub stderr: Arc<AsyncFd<OwnedFd>>,
}

/// Spawns `argv` with exactly `env` in `cwd`, on three pipes.
pub fn spawn(
    argv: &[String],
    cwd: Option<&Path>,
    env: &[(String, String)],
) -> io::Result<PipeProcess> {
    let Some(program) = argv.first() else {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "empty argv"));
    };
    let mut cmd = Command::new(program);
    cmd.args(&argv[1..])
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(dir) = cwd {
        cmd.current_dir(dir);
    }
    // SAFETY: only async-signal-safe calls between fork and exec: signal(2), sigprocmask(2),
    // setsid(2).
    unsafe {
        cmd.pre_exec(|| {
            for sig in [
                libc::SIGCHLD,
                libc::SIGHUP,
                libc::SIGINT,
                libc::SIGQUIT,
                libc::SIGTERM,
                libc::SIGPIPE,
            ] {
                libc::signal(sig, libc::SIG_DFL);
            }
            let empty: libc::sigset_t = std::mem::zeroed();
            libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
            if libc::setsid() == -1 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = {
        // Held across fork and `own`, so the reaper can never take this child for an orphan.
        let _spawning = reaper::spawn_guard();
        let child = cmd
            .spawn()
            .map_err(|e| io::Error::new(e.kind(), format!("spawn {program}: {e}")))?;
        reaper::own(child.id() as i32);
        child
    };
    let pid = child.id() as i32;
    let mut setup = || -> io::Result<PipeProcess> {
        let take = |fd: Option<OwnedFd>| -> io::Result<Arc<AsyncFd<OwnedFd>>> {
            let fd = fd.ok_or_else(|| io::Error::other("pipe missing"))?;
            fd::set_nonblocking(&fd)?;
            Ok(Arc::new(fd::register(fd)?))
        };
        Ok(PipeProcess {
            pid,
            pidfd: Arc::new(PidFd::open(pid)?),
            stdin: take(child.stdin.take().map(OwnedFd::from))?,
            stdout: take(child.stdout.take().map(OwnedFd::from))?,
            stderr: take(child.stderr.take().map(OwnedFd::from))?,
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
