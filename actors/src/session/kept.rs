//! Kept: a held terminal that this server reads itself, each read landing in the holder's
//! shared ring, its count in the completion queue of an io_uring whose queues live in the
//! holder's pages (`crate::holder::uring`), before anything else happens to its bytes.
//!
//! Why: with the holder reading and this server copying from the ring ([`super::held`]), a
//! flood to one viewer ran at 0.78–0.83× a server without holders; with the server reading the
//! terminal through the same [`super::output`] reader as a holder-less session, 1.03× (session
//! 29, docs/performance.md) — the copy actor's ticks and wake-ups were the cost, not the
//! holder. "No byte lost" is kept: a read's bytes are in the ring (shared memory the holder
//! maps) and its count in the io_uring's completion queue (in pages the holder maps), and the
//! ring's end moves before the completion is consumed, so a SIGKILL at any instant leaves the
//! holder able to publish the read, and the next server asks for it from its log's end.
//!
//! The reader uses it in place of `read(2)` ([`Kept::read`]), inline and in bulk slices alike
//! (never both at once: a slice runs while the reader actor waits for it). Output the holder
//! read while no server was attached comes first ([`Kept::catch_up`]). What the log holds is
//! written back into the ring (`acked`) so the space is reused, and now and then the pages of
//! logged output are handed back — by this server, the ring's writer while it reads (the
//! holder, which no longer wakes for output, does not touch the ring meanwhile).

use std::io;
use std::os::fd::RawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::shared::SessionShared;
use crate::holder::ring::SharedRing;
use crate::holder::uring::ReadRing;

/// How often, at most, logged output's pages are handed back while output flows.
const RELEASE_EVERY: Duration = Duration::from_secs(1);

/// The reads of one held terminal.
pub struct Kept {
    ring: Arc<SharedRing>,
    reads: Mutex<ReadRing>,
    shared: Arc<SessionShared>,
    /// Output offset handed to the session Ring so far (the ring's end once caught up).
    cursor: AtomicU64,
    /// When logged pages were last handed back, and `acked` then.
    released: Mutex<(Instant, u64)>,
}

impl Kept {
    /// Reads through `reads` into `ring`, from the session Ring's head on.
    pub fn new(ring: Arc<SharedRing>, reads: ReadRing, shared: Arc<SessionShared>) -> Kept {
        let cursor = shared.ring.head();
        let acked = ring.acked();
        Kept {
            ring,
            reads: Mutex::new(reads),
            shared,
            cursor: AtomicU64::new(cursor),
            released: Mutex::new((Instant::now(), acked)),
        }
    }

    /// Output the holder read before this server attached, not handed on yet.
    pub fn behind(&self) -> bool {
        self.cursor.load(Ordering::Acquire) < self.ring.end()
    }

    /// The next part of that output, at most `max` bytes (handed on by the caller, which paced
    /// for `max`).
    pub fn catch_up(&self, max: usize) -> &[u8] {
        let from = self.cursor.load(Ordering::Acquire);
        let bytes = self.ring.read(from, max);
        self.cursor
            .store(from + bytes.len() as u64, Ordering::Release);
        bytes
    }

    /// No room in the ring for a read: the log is a whole ring behind (the caller waits, as
    /// for a slow persister). Asked before every read, so it also writes back what the log
    /// holds (which is what makes room).
    pub fn full(&self) -> bool {
        self.logged();
        self.ring.free() == 0
    }

    /// Reads what the terminal `fd` (non-blocking) has into the ring, at most `max` bytes: the
    /// bytes read, empty at the end of the terminal (which the ring then says too).
    /// `WouldBlock` when it has nothing; never call it when [`full`](Self::full).
    ///
    /// `max` is what the caller's pacing allowed for (`super::pace::reader_waits`): a tty read
    /// is not bounded by the line discipline's 4 KiB buffer (it goes on copying while the
    /// kernel worker refills it; 53 KB seen from one read(2) of a `cat`), and the ring's free
    /// slot is megabytes, so an uncapped read could overrun the session Ring past the
    /// persister and a viewer that keeps up (a CI run lapped both by ~270 KiB).
    ///
    /// `seen`: the caller has just seen bytes waiting (`FIONREAD`), so the read goes in without
    /// looking again (`ReadRing::read`).
    pub fn read(&self, fd: RawFd, max: usize, seen: bool) -> io::Result<&[u8]> {
        let mut reads = self.reads.lock();
        let to = self.ring.end();
        let (buf, len) = self.ring.reader_slot();
        let len = len.min(max);
        if len == 0 {
            return Err(io::Error::new(
                io::ErrorKind::WouldBlock,
                "the holder's ring is full",
            ));
        }
        // SAFETY: the slot is the ring's free space, which only this server writes while it
        // reads the terminal (the holder does not read it then) and nobody reads until it is
        // published; the read completes within the call.
        let got = unsafe { reads.read(fd, buf, len, to, seen, |n| self.ring.publish(n)) };
        match got {
            Ok(0) => {
                self.ring.close();
                Ok(&[])
            }
            Ok(n) => {
                self.cursor.store(to + n as u64, Ordering::Release);
                Ok(self.ring.read(to, n))
            }
            Err(e) => {
                if e.raw_os_error() == Some(libc::EIO) {
                    self.ring.close();
                }
                Err(e)
            }
        }
    }

    /// Writes back what the log holds, and (at most every [`RELEASE_EVERY`]) hands logged
    /// output's pages back.
    pub fn logged(&self) {
        self.write_back(false);
    }

    /// Output went quiet: the same, handing pages back whenever more was logged.
    pub fn quiet(&self) {
        self.write_back(true);
    }

    /// Called by the reader only, between its reads (before each, and when output goes
    /// quiet): this server writes the ring while it reads the terminal, so it is the one to
    /// punch logged pages out of it — the positions its next lap writes
    /// (`SharedRing::release_logged`). The holder does not while a server reads.
    fn write_back(&self, quiet: bool) {
        let cursor = self.cursor.load(Ordering::Acquire);
        let logged = self.shared.feed.persisted_offset().unwrap_or(cursor);
        self.ring.set_acked(logged.min(cursor));
        let acked = self.ring.acked();
        let mut released = self.released.lock();
        if acked > released.1
            && (quiet || released.0.elapsed() >= RELEASE_EVERY)
            && self.ring.releasable()
        {
            *released = (Instant::now(), acked);
            if let Err(e) = self.ring.release_logged() {
                // Memory only: the ring keeps its pages, nothing is lost.
                tracing::warn!(session = %self.shared.id, error = %e, "could not hand logged output's pages back");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsRawFd;

    use super::*;
    use crate::holder::ring::MIN_CAP;
    use crate::holder::uring::tests::{pty, server_reads, wait_readable};

    #[test]
    fn a_read_takes_no_more_than_the_pacing_allowed_for() {
        let (master, slave) = pty();
        let (_pages, reads) = server_reads();
        let ring = Arc::new(SharedRing::create(MIN_CAP, 0).unwrap());
        let spec = crate::spec::SessionSpec::new(["true"]);
        let shared = SessionShared::new(
            uuid::Uuid::new_v4(),
            "t".into(),
            &spec,
            corral_runtime::Ring::new(1 << 20),
            None,
            None,
        );
        let kept = Kept::new(ring.clone(), reads, shared);
        // 3000 bytes wait in the terminal (within the line discipline's buffer); a free slot of
        // megabytes must not make a read take more than asked for.
        let sent: Vec<u8> = (0..3000u32).map(|i| b'a' + (i % 26) as u8).collect();
        nix::unistd::write(&slave, &sent).unwrap();
        wait_readable(&master);
        let mut got = Vec::new();
        while got.len() < sent.len() {
            match kept.read(master.as_raw_fd(), 1000, false) {
                Ok(bytes) => {
                    assert!(bytes.len() <= 1000, "a read of {} bytes", bytes.len());
                    got.extend_from_slice(bytes);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => wait_readable(&master),
                Err(e) => panic!("read: {e}"),
            }
        }
        assert_eq!(got, sent);
        assert_eq!(ring.end(), 3000);
        drop(slave);
    }
}
