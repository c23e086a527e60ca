//! Non-blocking file descriptors registered with tokio (AsyncFd), so PTY masters and pipes are
//! read and written without an OS thread per session; and the shared memory (memfds) a holder
//! and its server both map.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

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

/// Waits up to `limit` for bytes to read in a terminal without sleeping: looks (`FIONREAD`,
/// which does not wait) at most once per `every`, and yields the CPU between looks. True when
/// bytes are waiting, or when the look failed (a read then says why); false after `limit`
/// without any.
///
/// Why: a read or a poll(2) that finds a PTY's line discipline empty sleeps until the kernel
/// worker that fills it has run (`n_tty_read` and `n_tty_poll` flush the worker), the CPU
/// halts, and waking a halted vCPU was the largest single cost on this VM (docs/performance.md,
/// sessions 11 and 32). When bytes are due within microseconds — the next 4 KiB of a flood, a
/// keystroke's echo — looking until they are there keeps the CPU awake, and the read finds
/// them. The yield gives the CPU to anything runnable here (the kernel worker, the program that
/// writes, a connection), so a look takes no CPU from work; it costs at most `limit` of CPU
/// that would otherwise idle.
///
/// `every`: a terminal's `FIONREAD` takes its termios lock for writing (`n_tty_ioctl`), which
/// the kernel worker filling the line discipline takes for reading: in a flood, a look after
/// every yield held that worker back (`LOOK_EVERY` in `session/bulk.rs`).
pub fn bytes_soon(fd: RawFd, limit: std::time::Duration, every: std::time::Duration) -> bool {
    let start = std::time::Instant::now();
    let mut looked: Option<std::time::Instant> = None;
    loop {
        if looked.is_none_or(|t| t.elapsed() >= every) {
            let mut ready: libc::c_int = 0;
            // SAFETY: FIONREAD writes one int through the pointer.
            if unsafe { libc::ioctl(fd, libc::FIONREAD, &mut ready) } != 0 || ready > 0 {
                return true;
            }
            looked = Some(std::time::Instant::now());
        }
        if start.elapsed() >= limit {
            return false;
        }
        // SAFETY: no arguments, no memory; it cannot fail on Linux.
        unsafe { libc::sched_yield() };
    }
}

/// `read(2)` on a raw descriptor.
pub fn read(fd: &OwnedFd, buf: &mut [u8]) -> io::Result<usize> {
    nix::unistd::read(fd, buf).map_err(io::Error::from)
}

/// `write(2)` on a raw descriptor.
pub fn write(fd: &OwnedFd, buf: &[u8]) -> io::Result<usize> {
    nix::unistd::write(fd, buf).map_err(io::Error::from)
}

/// A new memfd (close-on-exec) of `len` bytes: shared memory with no file in the data dir.
pub fn memfd(name: &std::ffi::CStr, len: usize) -> io::Result<OwnedFd> {
    // SAFETY: memfd_create takes a NUL-terminated name and flags; it returns a new fd or -1.
    let raw = unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC) };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor owned by nobody else.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    // SAFETY: ftruncate on our own memfd.
    if unsafe { libc::ftruncate(fd.as_raw_fd(), len as libc::off_t) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(fd)
}

/// The size of the file `fd` (a memfd another process passed).
pub fn size(fd: &OwnedFd) -> io::Result<usize> {
    // SAFETY: fstat fills the struct we pass.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `st` is valid for writes.
    if unsafe { libc::fstat(fd.as_raw_fd(), &mut st) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(st.st_size as usize)
}

/// Maps the first `len` bytes of `fd` shared, readable and writable. The caller unmaps it
/// (`munmap` of the same length) when done.
pub fn map_shared(fd: &OwnedFd, len: usize) -> io::Result<*mut u8> {
    // SAFETY: a fresh shared mapping of the caller's fd; nothing else is at that address.
    let map = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            fd.as_raw_fd(),
            0,
        )
    };
    if map == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    Ok(map.cast())
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;

    #[test]
    fn bytes_soon_sees_waiting_bytes_and_gives_up_after_its_limit() {
        let pair = nix::pty::openpty(None, None).expect("openpty");
        let (master, slave) = (pair.master, pair.slave);
        let limit = Duration::from_micros(200);
        let t = Instant::now();
        assert!(
            !bytes_soon(master.as_raw_fd(), limit, Duration::ZERO),
            "bytes in an empty PTY"
        );
        let took = t.elapsed();
        assert!(took >= limit, "gave up early: {took:?}");
        assert!(took < Duration::from_secs(1), "looked on for {took:?}");
        nix::unistd::write(&slave, b"hello").expect("write");
        // The kernel worker moves them into the line discipline within the (long) limit.
        assert!(bytes_soon(
            master.as_raw_fd(),
            Duration::from_secs(5),
            Duration::from_micros(5)
        ));
    }
}
