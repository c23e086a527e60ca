//! Non-blocking file descriptors registered with tokio (AsyncFd), so PTY masters and pipes are
//! read and written without an OS thread per session.

use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};

use nix::fcntl::{FcntlArg, OFlag, fcntl};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

/// Duplicates `fd` (close-on-exec) and makes the duplicate non-blocking. The original is not
/// touched: portable-pty keeps its own master for resize.
pub fn dup_nonblocking(fd: RawFd) -> io::Result<OwnedFd> {
    // SAFETY: F_DUPFD_CLOEXEC on a descriptor the caller keeps open returns a new descriptor we
    // own (or -1).
    let new = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 3) };
    if new < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `new` is a fresh descriptor returned to us above and owned by nobody else.
    let owned = unsafe { OwnedFd::from_raw_fd(new) };
    set_nonblocking(&owned)?;
    Ok(owned)
}

/// Sets O_NONBLOCK on `fd`.
pub fn set_nonblocking(fd: &OwnedFd) -> io::Result<()> {
    let flags = fcntl(fd, FcntlArg::F_GETFL).map_err(io::Error::from)?;
    let flags = OFlag::from_bits_truncate(flags) | OFlag::O_NONBLOCK;
    fcntl(fd, FcntlArg::F_SETFL(flags)).map_err(io::Error::from)?;
    Ok(())
}

/// Registers a non-blocking descriptor with the tokio reactor for one direction: an output fd
/// for reading, an input fd for writing. A PTY master is registered twice (two dups), so the
/// input side's registration is not woken by every byte of output, and the output side's can be
/// taken out of the reactor while a bulk reader drains it (see `crate::session::bulk`).
pub fn register(fd: OwnedFd, interest: Interest) -> io::Result<AsyncFd<OwnedFd>> {
    // SAFETY: the OwnedFd is moved into the AsyncFd, which alone owns it: it stays open and
    // names the same file description until the AsyncFd is dropped.
    unsafe { AsyncFd::register_with_interest(fd, interest) }.map_err(io::Error::from)
}

/// `read(2)` on a raw descriptor.
pub fn read(fd: &OwnedFd, buf: &mut [u8]) -> io::Result<usize> {
    nix::unistd::read(fd, buf).map_err(io::Error::from)
}

/// `write(2)` on a raw descriptor.
pub fn write(fd: &OwnedFd, buf: &[u8]) -> io::Result<usize> {
    nix::unistd::write(fd, buf).map_err(io::Error::from)
}
