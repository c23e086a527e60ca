//! Bulk reading: while a process's output keeps flowing (`cat` of a large file, a build log),
//! its reader drains the PTY on a blocking-pool thread, one time slice at a time.
//!
//! Why: a PTY moves at most a few KiB per wake-up of its line discipline (n_tty's buffer), so
//! its throughput is bounded by how quickly the reader comes back to read. Inline on a runtime
//! worker the reader takes turns with everything else that worker does (sending those same bytes
//! to clients), and the two costs add up; on a thread of its own the PTY is read like a plain
//! read loop while the workers send in parallel, and the clients get larger, fewer frames.
//! Interactive output (keystroke echo) never gets here: a slice starts only after the inline
//! reader has read a whole burst without the PTY running dry, so echo keeps the zero-hop path.
//!
//! Bounded: at most one pump per core at a time ([`try_permit`]); a reader that finds none keeps
//! reading inline. A slice ends after [`SLICE`] (the reader actor then handles its mailbox and
//! the exit watch, and starts another if the output still flows), after [`QUIET`] without a
//! byte, at EOF, or when the reader is dropped (killed): the thread stops within [`QUIET`].
//! A pool thread that ran a slice keeps its 64 KiB read buffer until tokio retires it after
//! 10 s idle; slices usually land on the same few threads.

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use corral_runtime::Ring;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

use crate::fd;
use crate::shared::SessionShared;

/// Longest a slice runs before the reader actor gets its turn again.
pub const SLICE: Duration = Duration::from_millis(20);
/// A slice ends when the PTY has had nothing to read for this long.
pub const QUIET: Duration = Duration::from_millis(2);

/// Pumps running now.
static ACTIVE: AtomicUsize = AtomicUsize::new(0);
/// Slices run and bytes read in them, since the process started (for metrics).
static SLICES: AtomicU64 = AtomicU64::new(0);
static BYTES: AtomicU64 = AtomicU64::new(0);

/// Bulk reading since the process started: (slices run, bytes read in them).
pub fn stats() -> (u64, u64) {
    (
        SLICES.load(Ordering::Relaxed),
        BYTES.load(Ordering::Relaxed),
    )
}

/// The most pumps at a time: one per core.
fn max_pumps() -> usize {
    static MAX: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *MAX.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// A pump slot, released on drop.
pub struct Permit(());

impl Drop for Permit {
    fn drop(&mut self) {
        ACTIVE.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A slot for one pump, if fewer than one per core run now.
pub fn try_permit() -> Option<Permit> {
    ACTIVE
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
            (n < max_pumps()).then_some(n + 1)
        })
        .ok()
        .map(|_| Permit(()))
}

/// How a slice ended.
#[derive(Debug)]
pub enum SliceEnd {
    /// Output was still flowing when the slice's time was up.
    Flowing,
    /// The PTY ran dry for [`QUIET`] (or the reader was dropped).
    Quiet,
    /// End of output (EOF, or EIO: every holder of the PTY's child side closed it).
    Eof,
    /// A read failed.
    Failed(io::Error),
}

/// What a slice reads and where the bytes go.
pub struct Source {
    /// The non-blocking fd, out of the reactor for the slice.
    pub fd: OwnedFd,
    /// The session's output log.
    pub ring: Ring,
    /// The session's shared half (persister tap).
    pub shared: Arc<SessionShared>,
}

/// Runs one slice on a blocking-pool thread and waits for it; gives the fd back (`None` if the
/// thread failed). Dropping the future (the reader was killed) tells the thread to stop; it does
/// within [`QUIET`] and closes the fd.
pub async fn slice(source: Source, permit: Permit) -> (SliceEnd, Option<OwnedFd>) {
    let cancel = Arc::new(AtomicBool::new(false));
    let _stop_on_drop = StopOnDrop(cancel.clone());
    let thread = tokio::task::spawn_blocking(move || {
        let _permit = permit;
        let end = crate::io::with_read_buf(|buf| pump(&source, buf, &cancel));
        (end, source.fd)
    });
    match thread.await {
        Ok((end, fd)) => (end, Some(fd)),
        Err(e) => (
            SliceEnd::Failed(io::Error::other(format!("bulk reader thread: {e}"))),
            None,
        ),
    }
}

/// Sets the cancel flag when the waiting future goes away.
struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Release);
    }
}

/// The slice itself: read, append, and wait in poll(2) when the PTY runs dry.
fn pump(source: &Source, buf: &mut [u8], cancel: &AtomicBool) -> SliceEnd {
    SLICES.fetch_add(1, Ordering::Relaxed);
    let start = Instant::now();
    let raw = &source.fd;
    loop {
        if cancel.load(Ordering::Acquire) {
            return SliceEnd::Quiet;
        }
        if start.elapsed() >= SLICE {
            return SliceEnd::Flowing;
        }
        match fd::read(raw, buf) {
            Ok(0) => return SliceEnd::Eof,
            Ok(n) => {
                BYTES.fetch_add(n as u64, Ordering::Relaxed);
                source.ring.append(&buf[..n]);
                source.shared.output_appended();
            }
            Err(e) if e.raw_os_error() == Some(libc::EIO) => return SliceEnd::Eof,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => match readable_within(raw, QUIET) {
                Ok(true) => {}
                Ok(false) => return SliceEnd::Quiet,
                Err(e) => return SliceEnd::Failed(e),
            },
            Err(e) => return SliceEnd::Failed(e),
        }
    }
}

/// Waits up to `timeout` for `fd` to become readable (or hung up: the next read says so).
fn readable_within(fd: &OwnedFd, timeout: Duration) -> io::Result<bool> {
    let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
    let ms = u16::try_from(timeout.as_millis()).unwrap_or(u16::MAX);
    match poll(&mut fds, PollTimeout::from(ms)) {
        Ok(n) => Ok(n > 0),
        // Read again; it reports what is there.
        Err(nix::errno::Errno::EINTR) => Ok(true),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_most_one_pump_per_core() {
        // Other tests in this binary may hold permits meanwhile: take what is left.
        let mut held = Vec::new();
        while let Some(p) = try_permit() {
            held.push(p);
            assert!(held.len() <= max_pumps(), "more pumps than cores");
        }
        assert!(ACTIVE.load(Ordering::Acquire) <= max_pumps());
        assert!(try_permit().is_none(), "a permit past the bound");
        if let Some(p) = held.pop() {
            drop(p);
            assert!(try_permit().is_some(), "a released permit is reusable");
        }
    }
}
