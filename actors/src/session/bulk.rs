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
//! Between reads the pump does not sleep while the kernel refills the PTY: it looks for the
//! next bytes for up to [`SPIN`], yielding the CPU, and only then waits in poll(2)
//! ([`fd::bytes_soon`]: a halted vCPU's wake-up per 4 KiB was the flood's largest cost).
//!
//! Bounded: at most one pump per core at a time ([`try_permit`]); a reader that finds none keeps
//! reading inline. A slice ends after [`SLICE`] (the reader actor then handles its mailbox and
//! the exit watch, and starts another if the output still flows), after one to two [`QUIET`]
//! ticks without a byte, at EOF, or when the reader is dropped (killed): the thread stops within
//! two ticks.
//! A pool thread that ran a slice keeps its 64 KiB read buffer until tokio retires it after
//! 10 s idle; slices usually land on the same few threads.

use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use corral_runtime::Ring;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::time::TimeSpec;
use nix::sys::timerfd::{ClockId, Expiration, TimerFd, TimerFlags, TimerSetTimeFlags};

use super::shared::SessionShared;
use crate::fd;

/// Bytes read per `read(2)`, at the most (see [`read_max`]).
pub(crate) const READ_CHUNK: usize = 64 * 1024;

/// The most one read into a Ring of `capacity` bytes takes: [`READ_CHUNK`], and never more than
/// the Ring holds. The pacing (`super::pace::reader_waits`) lets a read go when the persister
/// has everything up to a Ring before it; a read longer than the Ring would lap the persister
/// even then (a terminal's read is not bounded by its line discipline's 4 KiB: a session with a
/// 4 KiB Ring lost 570 bytes of its log to one read of ~4.7 KB, in CI).
pub(crate) fn read_max(capacity: usize) -> usize {
    READ_CHUNK.min(capacity)
}

thread_local! {
    /// The read buffer of the readers running on this thread (a runtime worker): bytes are
    /// copied out of it before the reader awaits anything, so one per thread serves every
    /// session, where a buffer per session cost 64 KiB of RSS each once it had printed a byte.
    static READ_BUF: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Runs `f` with this thread's read buffer ([`READ_CHUNK`] bytes).
pub(crate) fn with_read_buf<R>(f: impl FnOnce(&mut [u8]) -> R) -> R {
    READ_BUF.with_borrow_mut(|buf| {
        if buf.is_empty() {
            buf.resize(READ_CHUNK, 0);
        }
        f(buf)
    })
}

/// Longest a slice runs before the reader actor gets its turn again.
pub const SLICE: Duration = Duration::from_millis(20);
/// A slice ends when the PTY has had nothing to read for this long.
pub const QUIET: Duration = Duration::from_millis(2);
/// Longest a slice waits for the PTY's next bytes without sleeping ([`fd::bytes_soon`]): in a
/// flood the kernel worker refills the line discipline within tens of microseconds. One
/// ttyd-protocol viewer of a 271 MB `cat`: 111–119 → 173–184 MB/s (`corral bench ttyd`,
/// docs/performance.md session 32; 50 µs tuned against 5, 20 and 100 side by side).
pub const SPIN: Duration = Duration::from_micros(50);
/// How often that wait looks: at most once per 5 µs, yielding the CPU in between. Looking after
/// every yield contended with the kernel worker for the terminal's lock (see
/// [`fd::bytes_soon`]). One ttyd-protocol viewer of a 271 MB `cat`, six alternated pairs: 169 →
/// 179 MB/s median, ÷ raw read 0.89 → 0.92×; every 2 µs the same as 5; every 15 µs 139–149 MB/s
/// (a refill waited for). docs/performance.md, session 33.
pub const LOOK_EVERY: Duration = Duration::from_micros(5);

/// Pumps running now.
static ACTIVE: AtomicUsize = AtomicUsize::new(0);
/// Slices run and bytes read in them, since the process started (for metrics).
static SLICES: AtomicU64 = AtomicU64::new(0);
static BYTES: AtomicU64 = AtomicU64::new(0);

/// A held session's flood (`super::held`) counts as bulk reading: `slices` begun, `bytes` copied.
pub(crate) fn record_flood(slices: u64, bytes: u64) {
    SLICES.fetch_add(slices, Ordering::Relaxed);
    BYTES.fetch_add(bytes, Ordering::Relaxed);
}

/// Bulk reading since the process started: (slices run, bytes read in them), a held session's
/// flood ticks included.
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
    /// The PTY ran dry for a whole [`QUIET`] tick (or the reader was dropped).
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
    /// A held terminal: read into its holder's ring first ([`super::kept`]).
    pub kept: Option<Arc<super::kept::Kept>>,
}

/// Runs one slice on a blocking-pool thread and waits for it; gives the fd back (`None` if the
/// thread failed). Dropping the future (the reader was killed) tells the thread to stop; it does
/// within two [`QUIET`] ticks and closes the fd.
pub async fn slice(source: Source, permit: Permit) -> (SliceEnd, Option<OwnedFd>) {
    let cancel = Arc::new(AtomicBool::new(false));
    let _stop_on_drop = StopOnDrop(cancel.clone());
    let thread = tokio::task::spawn_blocking(move || {
        let _permit = permit;
        let end = with_read_buf(|buf| pump(&source, buf, &cancel));
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

/// The slice itself: read, append, and when the PTY runs dry look for its next bytes for up to
/// [`SPIN`] ([`fd::bytes_soon`]) before waiting in poll(2).
///
/// The wait has no timeout of its own: a periodic timer ([`Tick`], every [`QUIET`]) is polled
/// beside the PTY and ends the slice when a whole tick passed without a byte, when the slice's
/// time is up, or when it was cancelled. Why: a poll(2) with a timeout arms and cancels a
/// high-resolution timer on every wait, and in a VM each is a trap to the hypervisor; with
/// thousands of waits a second (a PTY runs dry every few KiB) that cost a third of the read
/// rate (docs/performance.md: a C read loop 76–123 MB/s with a 2 ms poll timeout, 129–189
/// without one, 137–195 with the tick; this pump without persistence 124 → 144 MB/s).
fn pump(source: &Source, buf: &mut [u8], cancel: &AtomicBool) -> SliceEnd {
    SLICES.fetch_add(1, Ordering::Relaxed);
    let start = Instant::now();
    let raw = &source.fd;
    let tick = match Tick::every(QUIET) {
        Ok(t) => t,
        Err(e) => {
            // Out of fds, say: the reader goes on inline (this slice reads nothing).
            tracing::warn!(error = %e, "bulk reading: no timer; reading inline");
            return SliceEnd::Quiet;
        }
    };
    // Bytes read since the last tick.
    let mut fresh = false;
    // poll(2) said the PTY is readable (bytes, or hung up): read without looking first.
    let mut woke = false;
    let mut head = source.ring.head();
    let capacity = source.ring.capacity() as u64;
    let max = read_max(source.ring.capacity());
    loop {
        if super::pace::reader_waits(
            &source.shared.pacers,
            source.kept.as_ref().is_some_and(|k| k.full()),
            source.shared.feed.persisted_offset(),
            head,
            max as u64,
            capacity,
        ) {
            // The next read could lap the persister or a viewer that keeps up (see
            // `super::pace`): what they gathered goes out now, and the program waits on its
            // full PTY meanwhile.
            source.ring.end_batches();
            if let Err(e) = tick.wait() {
                return SliceEnd::Failed(e);
            }
            if cancel.load(Ordering::Acquire) {
                return SliceEnd::Quiet;
            }
            if start.elapsed() >= SLICE {
                return SliceEnd::Flowing;
            }
            continue;
        }
        // Look first, unless poll(2) just said readable; a read after a look that found bytes
        // goes in without looking again.
        let look = !std::mem::take(&mut woke);
        let read = if look && !fd::bytes_soon(raw.as_raw_fd(), SPIN, LOOK_EVERY) {
            Err(io::ErrorKind::WouldBlock.into())
        } else {
            match &source.kept {
                Some(kept) => kept.read(raw.as_raw_fd(), max, look).map(|bytes| {
                    if !bytes.is_empty() {
                        head = source.ring.append(bytes);
                    }
                    bytes.len()
                }),
                None => fd::read(raw, &mut buf[..max]).inspect(|&n| {
                    if n > 0 {
                        head = source.ring.append(&buf[..n]);
                    }
                }),
            }
        };
        match read {
            Ok(0) => return SliceEnd::Eof,
            Ok(n) => {
                fresh = true;
                BYTES.fetch_add(n as u64, Ordering::Relaxed);
                source.shared.output_appended();
                if cancel.load(Ordering::Acquire) {
                    return SliceEnd::Quiet;
                }
                if start.elapsed() >= SLICE {
                    return SliceEnd::Flowing;
                }
            }
            Err(e) if e.raw_os_error() == Some(libc::EIO) => return SliceEnd::Eof,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => match wait(raw, &tick) {
                Ok(Woke { readable, tick }) => {
                    woke = readable;
                    if tick {
                        // A tick without a byte ends the slice, unless the PTY is readable
                        // now (bytes, or its hangup: a loaded machine may take a tick between
                        // two reads, and the hangup must still be read here, not a slice later).
                        let fresh = std::mem::take(&mut fresh);
                        if cancel.load(Ordering::Acquire) || !(fresh || readable) {
                            return SliceEnd::Quiet;
                        }
                        if start.elapsed() >= SLICE {
                            return SliceEnd::Flowing;
                        }
                        // Bytes came this tick: what subscribers have gathered goes out now
                        // (they wait on this cue, not on timers of their own; see
                        // `subscription`).
                        if fresh {
                            source.ring.end_batches();
                        }
                    }
                }
                Err(e) => return SliceEnd::Failed(e),
            },
            Err(e) => return SliceEnd::Failed(e),
        }
    }
}

/// A periodic timer as an fd: armed once per slice, it fires on its own (no re-arming per wait).
struct Tick(TimerFd);

impl Tick {
    fn every(period: Duration) -> io::Result<Tick> {
        let timer = TimerFd::new(ClockId::CLOCK_MONOTONIC, TimerFlags::TFD_NONBLOCK)?;
        timer.set(
            Expiration::Interval(TimeSpec::from_duration(period)),
            TimerSetTimeFlags::empty(),
        )?;
        Ok(Tick(timer))
    }

    /// Waits for the next expiration (or a signal).
    fn wait(&self) -> io::Result<()> {
        let mut fds = [PollFd::new(self.0.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) | Err(nix::errno::Errno::EINTR) => self.clear(),
            Err(e) => Err(e.into()),
        }
    }

    /// Consumes the expirations so far (the count does not matter).
    fn clear(&self) -> io::Result<()> {
        let mut n = [0u8; 8];
        match nix::unistd::read(&self.0, &mut n) {
            Ok(_) | Err(nix::errno::Errno::EAGAIN) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

/// What ended a wait (both, at times).
struct Woke {
    /// The PTY has bytes (or hung up: the next read says so).
    readable: bool,
    /// The tick fired.
    tick: bool,
}

/// Waits, without a timeout, until `fd` is readable or the tick fires.
fn wait(fd: &OwnedFd, tick: &Tick) -> io::Result<Woke> {
    let mut fds = [
        PollFd::new(fd.as_fd(), PollFlags::POLLIN),
        PollFd::new(tick.0.as_fd(), PollFlags::POLLIN),
    ];
    match poll(&mut fds, PollTimeout::NONE) {
        Ok(_) => {}
        // Read again; it reports what is there.
        Err(nix::errno::Errno::EINTR) => {
            return Ok(Woke {
                readable: true,
                tick: false,
            });
        }
        Err(e) => return Err(e.into()),
    }
    let fired = fds[1].any().unwrap_or(false);
    if fired {
        tick.clear()?;
    }
    Ok(Woke {
        readable: fds[0].any().unwrap_or(false),
        tick: fired,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A Source reading `fd` (made non-blocking) into a fresh Ring.
    fn source(fd: OwnedFd) -> Source {
        fd::set_nonblocking(&fd).expect("O_NONBLOCK");
        let ring = Ring::new(1 << 20);
        let spec = crate::spec::SessionSpec::new(["true"]);
        let shared = SessionShared::new(
            uuid::Uuid::new_v4(),
            "t".into(),
            &spec,
            ring.clone(),
            None,
            None,
        );
        Source {
            fd,
            ring,
            shared,
            kept: None,
        }
    }

    /// A source that never runs dry.
    fn endless() -> Source {
        source(std::fs::File::open("/dev/zero").expect("/dev/zero").into())
    }

    #[test]
    fn a_slice_ends_quiet_when_the_writer_falls_silent() {
        let (r, w) = nix::unistd::pipe().expect("pipe");
        // 60 KiB fits in the pipe: written before the slice, then silence with the write end
        // still open (no EOF).
        nix::unistd::write(&w, &[b'x'; 60 * 1024]).expect("write");
        let source = source(r);
        let mut buf = vec![0; 64 * 1024];
        let t = Instant::now();
        let end = pump(&source, &mut buf, &AtomicBool::new(false));
        let took = t.elapsed();
        // A tick that never saw the silence would run on to SLICE and say Flowing (or hang).
        assert!(matches!(end, SliceEnd::Quiet), "{end:?} after {took:?}");
        assert_eq!(
            source.ring.head(),
            60 * 1024,
            "every byte read before the end"
        );
        assert!(took < Duration::from_secs(1), "quiet only after {took:?}");
        drop(w);
    }

    #[test]
    fn a_slice_ends_flowing_after_its_time_while_bytes_keep_coming() {
        let source = endless();
        let mut buf = vec![0; 64 * 1024];
        let t = Instant::now();
        let end = pump(&source, &mut buf, &AtomicBool::new(false));
        let took = t.elapsed();
        assert!(matches!(end, SliceEnd::Flowing), "{end:?} after {took:?}");
        assert!(took >= SLICE, "ended early: {took:?}");
        assert!(source.ring.head() > 0);
    }

    #[test]
    fn a_cancelled_slice_stops_while_bytes_keep_coming() {
        let source = endless();
        let mut buf = vec![0; 64 * 1024];
        let end = pump(&source, &mut buf, &AtomicBool::new(true));
        assert!(matches!(end, SliceEnd::Quiet), "{end:?}");
        assert_eq!(source.ring.head(), 64 * 1024, "stopped after one read");
    }

    #[test]
    fn a_slice_ends_at_the_end_of_a_pty_that_hung_up_after_its_output() {
        let (master, slave) = crate::holder::uring::tests::pty();
        nix::unistd::write(&slave, &[b'y'; 1000]).expect("write");
        drop(slave);
        let source = source(master);
        let mut buf = vec![0; 64 * 1024];
        let end = pump(&source, &mut buf, &AtomicBool::new(false));
        // A hung-up PTY has no bytes to look for (FIONREAD says 0) but poll(2) says readable:
        // the read after poll must come without looking first, or the slice would go round
        // until its time is up and say Flowing.
        assert!(matches!(end, SliceEnd::Eof), "{end:?}");
        assert_eq!(source.ring.head(), 1000);
    }

    #[test]
    fn a_read_takes_no_more_than_the_ring_holds() {
        let mut source = endless();
        source.ring = Ring::new(4096);
        let mut buf = vec![0; 64 * 1024];
        // Cancelled: one read, then the end.
        let end = pump(&source, &mut buf, &AtomicBool::new(true));
        assert!(matches!(end, SliceEnd::Quiet), "{end:?}");
        assert_eq!(source.ring.head(), 4096, "one read of a whole Ring at most");
    }

    #[test]
    fn at_most_one_pump_per_core() {
        // Other tests in this binary may hold permits meanwhile: wait for one (the checks
        // below need it), then take what is left.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let first = loop {
            if let Some(p) = try_permit() {
                break p;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no permit came free in 10 s"
            );
            std::thread::sleep(std::time::Duration::from_millis(1));
        };
        let mut held = vec![first];
        while let Some(p) = try_permit() {
            held.push(p);
            assert!(held.len() <= max_pumps(), "more pumps than cores");
        }
        assert!(ACTIVE.load(Ordering::Acquire) <= max_pumps());
        assert!(try_permit().is_none(), "a permit past the bound");
        drop(held.pop());
        assert!(try_permit().is_some(), "a released permit is reusable");
    }
}
