//! `PidFd`: a file descriptor that names one process, not one pid number.
//!
//! A pid is only a number; once its process is reaped the kernel may hand it to a stranger, and a
//! `kill(pid)` sent a moment too late hits that stranger. A pidfd (`pidfd_open(2)`, Linux 5.3+)
//! refers to the process itself: `pidfd_send_signal(2)` through it can never reach a recycled pid,
//! and the fd becomes readable when the process exits (turns zombie), so exit can be awaited on the
//! tokio reactor instead of polling `/proc` or blocking in `waitpid`.
//!
//! A pidfd does not reap: the exit status still belongs to the parent's `waitpid`.
//!
//! Design: a `PidFd` holds a plain [`OwnedFd`], so it can be opened and signalled anywhere (in a
//! `Drop`, outside any runtime). Only [`PidFd::exited`] touches tokio: it registers a `dup` of the
//! fd with the current runtime for the duration of the wait. The dup keeps each wait independent
//! (two concurrent waits, or waits from different runtimes, never collide in one epoll set), and
//! costs one syscall per wait.

use std::io;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::Signal;
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

/// What became of a signal sent through a [`PidFd`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// The kernel queued the signal for the process (which may be a zombie already).
    Delivered,
    /// The process has already exited and been reaped (`ESRCH`): nothing left to signal. Never a
    /// stranger: the pidfd cannot point at anyone else.
    AlreadyExited,
}

/// A pidfd: a handle on one process that survives pid reuse. See the module docs.
#[derive(Debug)]
pub struct PidFd {
    /// The pid the fd was opened for (for logs and for `waitpid`, which still takes a pid).
    pid: i32,
    /// The pidfd itself (always close-on-exec: `pidfd_open` sets it).
    fd: OwnedFd,
}

impl PidFd {
    /// Opens a pidfd for `pid` (`pidfd_open(pid, 0)`); works with or without a tokio runtime.
    ///
    /// Fails with `ESRCH` if no such process exists (a zombie still exists and can be opened:
    /// its pidfd is readable at once), and with `EINVAL` if `pid` is a thread rather than a
    /// process. Opening by number is itself racy against reuse; callers that found the pid in a
    /// `/proc` scan should confirm the identity afterwards (see
    /// [`crate::process::procfs::ProcessIdentity`]).
    pub fn open(pid: i32) -> io::Result<PidFd> {
        if pid <= 0 {
            // pidfd_open rejects these too, but say why rather than surfacing a bare EINVAL.
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("pidfd_open: invalid pid {pid}"),
            ));
        }
        // SAFETY: pidfd_open takes (pid_t, unsigned int flags) and returns a new fd or -1; no
        // memory is passed.
        let ret = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
        if ret < 0 {
            return Err(io::Error::last_os_error());
        }
        let raw = RawFd::try_from(ret).map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                "pidfd_open returned an out-of-range fd",
            )
        })?;
        // SAFETY: `raw` is a fresh fd just returned by the kernel, owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        Ok(PidFd { pid, fd })
    }

    /// The pid this pidfd was opened for.
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// Sends `sig` to the process through the pidfd (`pidfd_send_signal`), race-free against pid
    /// reuse. `Ok(Delivery::AlreadyExited)` when the process is already reaped; any other failure
    /// (e.g. `EPERM`) is an error.
    pub fn send_signal(&self, sig: Signal) -> io::Result<Delivery> {
        // SAFETY: pidfd_send_signal(int pidfd, int sig, siginfo_t *info, unsigned int flags):
        // a null info means "as kill(2) would", and the fd is valid for the borrow of `self`.
        let ret = unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                self.fd.as_raw_fd(),
                sig as libc::c_int,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            )
        };
        if ret == 0 {
            return Ok(Delivery::Delivered);
        }
        let err = io::Error::last_os_error();
        if err.raw_os_error() == Some(libc::ESRCH) {
            Ok(Delivery::AlreadyExited)
        } else {
            Err(err)
        }
    }

    /// Whether the process has exited (is a zombie or already reaped), without blocking: a poll of
    /// the fd with timeout 0. A poll failure is reported as "not exited" and logged, so callers
    /// keep waiting rather than assume a death that did not happen.
    pub fn is_exited(&self) -> bool {
        let mut fds = [PollFd::new(self.fd.as_fd(), PollFlags::POLLIN)];
        // A zero-timeout poll can still be interrupted by a signal (SIGCHLD, say): ask again.
        let mut result = poll(&mut fds, PollTimeout::ZERO);
        for _ in 0..3 {
            if result != Err(nix::errno::Errno::EINTR) {
                break;
            }
            result = poll(&mut fds, PollTimeout::ZERO);
        }
        match result {
            Ok(n) => n > 0,
            Err(e) => {
                tracing::warn!(pid = self.pid, error = %e, "poll on pidfd failed");
                false
            }
        }
    }

    /// Resolves when the process has exited. Must be polled inside a tokio runtime with IO
    /// enabled. Cancel-safe: dropping the future only deregisters its private dup of the fd.
    ///
    /// If the fd cannot be registered with the reactor (out of fds, say), this falls back to
    /// polling every 50 ms so that it still resolves; the failure is logged.
    pub async fn exited(&self) {
        if self.is_exited() {
            return;
        }
        let registered = self.fd.try_clone().and_then(|dup| {
            // SAFETY: `dup` is an OwnedFd moved into the AsyncFd, which alone owns it: it stays
            // open and names the same file description until the AsyncFd is dropped, and
            // OwnedFd::as_raw_fd always returns that same fd.
            unsafe { AsyncFd::register_with_interest(dup, Interest::READABLE) }
                .map_err(io::Error::from)
        });
        match registered {
            Ok(async_fd) => match async_fd.readable().await {
                // The guard is dropped without clearing readiness: this AsyncFd is single-use.
                Ok(_guard) => {}
                Err(e) => {
                    tracing::warn!(pid = self.pid, error = %e, "awaiting pidfd failed; polling");
                    self.poll_until_exited().await;
                }
            },
            Err(e) => {
                tracing::warn!(pid = self.pid, error = %e, "cannot register pidfd; polling");
                self.poll_until_exited().await;
            }
        }
    }

    /// A reusable exit notification: one reactor registration for any number of waits, for a
    /// loop that selects on the exit next to other work (the output reader) where
    /// [`Self::exited`]'s per-call registration would cost syscalls on the hot path.
    pub fn watch(&self) -> io::Result<ExitWatch> {
        let dup = self.fd.try_clone()?;
        // SAFETY: `dup` is an OwnedFd moved into the AsyncFd, which alone owns it: it stays open
        // and names the same file description until the AsyncFd is dropped.
        let fd = unsafe { AsyncFd::register_with_interest(dup, Interest::READABLE) }
            .map_err(io::Error::from)?;
        Ok(ExitWatch { fd })
    }

    /// The fallback of [`Self::exited`]: non-blocking polls spaced by a tokio sleep.
    async fn poll_until_exited(&self) {
        while !self.is_exited() {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }
}

/// A registered exit notification of one process (see [`PidFd::watch`]).
pub struct ExitWatch {
    /// A dup of the pidfd, registered with the reactor once.
    fd: AsyncFd<OwnedFd>,
}

impl ExitWatch {
    /// Resolves once the process has exited (and at once on every later call). Cancel-safe.
    pub async fn exited(&self) -> io::Result<()> {
        // Readiness is deliberately left set: an exited process stays exited.
        let _guard = self.fd.readable().await?;
        Ok(())
    }
}

impl AsFd for PidFd {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.fd.as_fd()
    }
}
