//! PTY processes: portable-pty opens the pseudo-terminal; argv is spawned on its slave as a
//! session leader with the slave as controlling terminal (pid = pgid = sid) by
//! [`leader::spawn_leader`], and everything after uses plain fds and pidfds. portable-pty's own
//! spawn is not used: it forks (see [`leader`] for the cost), and its `Child::kill`/`wait` block
//! (thread::sleep) and signal one pid only.

use std::io;
use std::os::fd::OwnedFd;
use std::path::Path;
use std::sync::Arc;

use portable_pty::{MasterPty, PtySize, native_pty_system};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

use crate::fd;
use crate::process::leader::{self, ChildIo};
use crate::process::{PidFd, reaper};
use crate::spec::Size;

/// A process running in a fresh pseudo-terminal.
pub struct PtyProcess {
    /// The session leader's pid.
    pub pid: i32,
    /// Its pidfd (exit notification, race-free signals).
    pub pidfd: Arc<PidFd>,
    /// The master side, kept for resize; closing it (and the dups below) hangs up the terminal.
    pub master: Box<dyn MasterPty + Send>,
    /// A non-blocking duplicate of the master registered for reading: the output reader's.
    pub output: AsyncFd<OwnedFd>,
    /// Another, registered for writing: the input writer's.
    pub input: AsyncFd<OwnedFd>,
}

/// Opens a PTY of `size` and spawns `argv` in it with exactly `env` in `cwd`.
pub fn spawn(
    argv: &[String],
    cwd: Option<&Path>,
    env: &[(String, String)],
    size: Size,
) -> io::Result<PtyProcess> {
    let (pid, master) = open(argv, cwd, env, size)?;
    let pidfd = match PidFd::open(pid) {
        Ok(p) => Arc::new(p),
        Err(e) => {
            kill_unwatched(pid);
            return Err(e);
        }
    };
    let raw = master
        .as_raw_fd()
        .ok_or_else(|| io::Error::other("pty master has no fd"))?;
    let registered = |interest| fd::dup_nonblocking(raw).and_then(|d| fd::register(d, interest));
    let (output, input) = match registered(Interest::READABLE)
        .and_then(|output| Ok((output, registered(Interest::WRITABLE)?)))
    {
        Ok(pair) => pair,
        Err(e) => {
            kill_unwatched(pid);
            return Err(e);
        }
    };
    Ok(PtyProcess {
        pid,
        pidfd,
        master,
        output,
        input,
    })
}

/// Opens a PTY of `size` and spawns `argv` on it (no runtime needed: a holder calls this too).
/// Returns the session leader's pid and the master.
pub fn open(
    argv: &[String],
    cwd: Option<&Path>,
    env: &[(String, String)],
    size: Size,
) -> io::Result<(i32, Box<dyn MasterPty + Send>)> {
    let pair = native_pty_system()
        .openpty(pty_size(size))
        .map_err(|e| io::Error::other(format!("openpty: {e}")))?;
    // portable-pty keeps the slave fd private; the child opens the slave by name (after its
    // `setsid`, which makes it the controlling terminal: see [`leader`]).
    let tty = pair
        .master
        .tty_name()
        .ok_or_else(|| io::Error::other("pty slave has no name"))?;
    let pid = leader::spawn_leader(argv, env, cwd, ChildIo::Pty(&tty))?;
    // Our copy of the slave must go, or the master never sees EIO when the child side closes.
    drop(pair.slave);
    Ok((pid, pair.master))
}

/// Sets the terminal size of the PTY whose master is `fd` (TIOCSWINSZ: the program gets
/// SIGWINCH).
pub fn resize_fd(fd: &OwnedFd, size: Size) -> io::Result<()> {
    let ws = libc::winsize {
        ws_row: size.rows,
        ws_col: size.cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads one winsize from the pointer, valid for the call.
    if unsafe { libc::ioctl(std::os::fd::AsRawFd::as_raw_fd(fd), libc::TIOCSWINSZ, &ws) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The terminal size of the PTY whose master is `fd` (TIOCGWINSZ).
pub fn size_of(fd: &impl std::os::fd::AsRawFd) -> io::Result<Size> {
    let mut ws = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes one winsize through the pointer, valid for the call.
    if unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCGWINSZ, &mut ws) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(Size {
        rows: ws.ws_row,
        cols: ws.ws_col,
    })
}

/// Kills a child we failed to set up and hands it to the reaper.
fn kill_unwatched(pid: i32) {
    if let Err(e) = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    ) {
        tracing::warn!(pid, error = %e, "could not kill a half-started child");
    }
    reaper::release(pid);
    reaper::disown(pid);
}

/// portable-pty's size type.
pub fn pty_size(size: Size) -> PtySize {
    PtySize {
        rows: size.rows,
        cols: size.cols,
        pixel_width: 0,
        pixel_height: 0,
    }
}
