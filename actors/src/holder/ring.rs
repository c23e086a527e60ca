//! Ring: the output a holder has read from its terminal and the server has not logged yet, in
//! shared memory.
//!
//! A `memfd` (shmem: no disk, no file in the data dir) of a header page and `cap` bytes, mapped
//! by the holder and by the attached server. The holder `read(2)`s the PTY straight into the
//! mapping and publishes the new end; the server copies from the mapping into its session Ring
//! and publishes what its log holds (`acked`). A byte read from the terminal is therefore in
//! memory that outlives the server's process before anything else happens to it: a server
//! SIGKILLed at any instant loses nothing, and the next one asks for the output from its log's
//! end. No copy is added on the output path (the PTY read lands where the server reads it) and
//! no message per byte: one eventfd write per batch of reads wakes the server.
//!
//! Invariants (one writer of data and of `end` at a time — the holder, or a server that reads
//! the terminal itself through `super::uring`, never both; the server writes `acked`):
//! `acked ≤ end ≤ acked + cap`; the writer writes only positions `[end, acked + cap)` and the
//! server reads only `[its cursor, end)` with `acked ≤ cursor` — disjoint modulo `cap`, so
//! neither ever touches bytes the other is using. When `end = acked + cap` the holder stops
//! reading the terminal and the program blocks on it (bounded: `cap` bytes unlogged).
//!
//! Memory: shmem pages stay allocated once touched, and a ring comes round to every page, so a
//! session that ever printed `cap` bytes would keep all of them resident (8 MiB a session,
//! mostly output its log already holds). The writer therefore hands the pages of logged output
//! back to the kernel ([`SharedRing::release_logged`]: a hole punched in the memfd), keeping
//! only the last [`KEEP_LOGGED`] (1 MiB) below `acked` — what a next server might still ask
//! for.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};

/// Bytes before the data: the header, a page.
const HEADER: usize = 4096;
/// "corral01": a mapping that does not start with this is not a ring.
const MAGIC: u64 = u64::from_le_bytes(*b"corral01");
/// Bounds of the capacity.
pub const MIN_CAP: usize = 64 << 10;
/// See [`MIN_CAP`].
pub const MAX_CAP: usize = 64 << 20;
/// Logged output (below `acked`) kept in memory, a quarter of the ring when that is less: a
/// next server asks from its log's end, which is `acked` unless recovery cut a damaged last
/// record off the log after it was written (a torn tail): the largest record
/// ([`crate::persist::codec::MAX_RECORD_BYTES`]) can then still be refilled, as before
/// releasing. Everything older is released.
pub const KEEP_LOGGED: usize = crate::persist::codec::MAX_RECORD_BYTES;

/// The header, at the start of the mapping.
#[repr(C)]
struct Header {
    magic: AtomicU64,
    cap: AtomicU64,
    base: AtomicU64,
    /// Output offset after the last byte published by the holder.
    end: AtomicU64,
    /// Output offset the server's log holds up to.
    acked: AtomicU64,
    /// 1 once the terminal is closed and every byte of it is published.
    closed: AtomicU64,
    /// 1 while the server looks at `end` on a timer of its own (a flood): the holder then
    /// publishes without waking it.
    polling: AtomicU64,
    /// Output below this offset was released (its pages handed back), so it is no longer held.
    /// Moved by the ring's writer only ([`SharedRing::release_logged`]).
    released: AtomicU64,
}

/// One shared ring, mapped in this process.
pub struct SharedRing {
    fd: OwnedFd,
    map: *mut u8,
    cap: usize,
}

// SAFETY: the mapping is plain shared memory; every field of the header is an atomic, and the
// data region is accessed only under the invariants in the module docs (disjoint ranges).
unsafe impl Send for SharedRing {}
// SAFETY: as above: `&SharedRing` only reads atomics or hands out ranges nobody writes.
unsafe impl Sync for SharedRing {}

impl std::fmt::Debug for SharedRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedRing")
            .field("cap", &self.cap)
            .field("end", &self.end())
            .field("acked", &self.acked())
            .finish()
    }
}

impl SharedRing {
    /// A new ring of `cap` bytes (clamped to [`MIN_CAP`]..[`MAX_CAP`], whole pages) whose
    /// first byte is output offset `base`.
    pub fn create(cap: usize, base: u64) -> io::Result<SharedRing> {
        let cap = cap.clamp(MIN_CAP, MAX_CAP).next_multiple_of(HEADER);
        let fd = crate::fd::memfd(c"corral-ring", HEADER + cap)?;
        let ring = Self::map(fd, cap)?;
        let h = ring.header();
        h.released.store(base, Ordering::Relaxed);
        h.cap.store(cap as u64, Ordering::Relaxed);
        h.base.store(base, Ordering::Relaxed);
        h.end.store(base, Ordering::Relaxed);
        h.acked.store(base, Ordering::Relaxed);
        h.closed.store(0, Ordering::Relaxed);
        h.polling.store(0, Ordering::Relaxed);
        h.magic.store(MAGIC, Ordering::Release);
        Ok(ring)
    }

    /// Maps a ring another process created (the fd came with `Welcome`).
    pub fn open(fd: OwnedFd) -> io::Result<SharedRing> {
        let size = crate::fd::size(&fd)?;
        if !(HEADER + MIN_CAP..=HEADER + MAX_CAP).contains(&size) {
            return Err(io::Error::other(format!("not a ring: {size} bytes")));
        }
        let ring = Self::map(fd, size - HEADER)?;
        let h = ring.header();
        if h.magic.load(Ordering::Acquire) != MAGIC
            || h.cap.load(Ordering::Relaxed) != ring.cap as u64
        {
            return Err(io::Error::other("not a ring: bad header"));
        }
        Ok(ring)
    }

    fn map(fd: OwnedFd, cap: usize) -> io::Result<SharedRing> {
        // Unmapped in Drop.
        let map = crate::fd::map_shared(&fd, HEADER + cap)?;
        Ok(SharedRing { fd, map, cap })
    }

    fn header(&self) -> &Header {
        // SAFETY: the mapping starts with a page; `Header` is a few aligned atomics within it,
        // and atomics may be shared with another process.
        unsafe { &*(self.map as *const Header) }
    }

    /// The memfd (to pass to a server).
    pub fn fd(&self) -> &OwnedFd {
        &self.fd
    }

    /// Capacity in bytes.
    pub fn cap(&self) -> usize {
        self.cap
    }

    /// Output offset of the first byte this ring ever held.
    pub fn base(&self) -> u64 {
        self.header().base.load(Ordering::Relaxed)
    }

    /// Output offset after the last published byte.
    pub fn end(&self) -> u64 {
        self.header().end.load(Ordering::SeqCst)
    }

    /// Output offset the server's log holds up to.
    pub fn acked(&self) -> u64 {
        self.header().acked.load(Ordering::Acquire)
    }

    /// Whether the terminal is closed and all of it published.
    pub fn closed(&self) -> bool {
        self.header().closed.load(Ordering::Acquire) == 1
    }

    /// The lowest offset still in the ring (a new server may start anywhere from here).
    pub fn held_from(&self) -> u64 {
        self.end()
            .saturating_sub(self.cap as u64)
            .max(self.base())
            .max(self.released())
    }

    // ----- the holder's side -----

    /// The free space after `end`, contiguous (up to the wrap), for a `read(2)`; empty when the
    /// ring is full.
    pub fn write_slot(&mut self) -> &mut [u8] {
        let pos = (self.end() % self.cap as u64) as usize;
        let len = self.free().min(self.cap - pos);
        // SAFETY: [pos, pos + len) lies in the data region and in [end, acked + cap), which
        // only the holder (this process, `&mut self`) writes and the server never reads.
        unsafe { std::slice::from_raw_parts_mut(self.map.add(HEADER + pos), len) }
    }

    /// Free bytes (what [`push`](Self::push) can take at once).
    pub fn free(&self) -> usize {
        (self.acked() + self.cap as u64).saturating_sub(self.end()) as usize
    }

    /// Copies `bytes` (at most [`free`](Self::free)) in at `end`, across the wrap, and publishes
    /// them at once: a reader sees all of them or none (a pipe session's whole lines).
    pub fn push(&mut self, bytes: &[u8]) {
        debug_assert!(bytes.len() <= self.free());
        let mut done = 0;
        while done < bytes.len() {
            let pos = ((self.end() + done as u64) % self.cap as u64) as usize;
            let n = (self.free() - done)
                .min(self.cap - pos)
                .min(bytes.len() - done);
            if n == 0 {
                break;
            }
            // SAFETY: [pos, pos + n) lies in the data region and in [end, acked + cap), which
            // only the holder (this process, `&mut self`) writes and the server never reads.
            unsafe {
                std::ptr::copy_nonoverlapping(bytes[done..].as_ptr(), self.map.add(HEADER + pos), n)
            };
            done += n;
        }
        self.publish(done);
    }

    /// `n` bytes were written at the start of the write slot: publish them. (SeqCst: ordered
    /// with the [`polling`](Self::set_polling) handshake.)
    pub fn publish(&self, n: usize) {
        self.header().end.fetch_add(n as u64, Ordering::SeqCst);
    }

    /// Whether the server polls (so no wake-up is needed after a publish).
    pub fn server_polling(&self) -> bool {
        self.header().polling.load(Ordering::SeqCst) == 1
    }

    /// Output below this offset was released (no longer held).
    fn released(&self) -> u64 {
        self.header().released.load(Ordering::Acquire)
    }

    /// Logged output the writer could still release: more than [`KEEP_LOGGED`] (and a page)
    /// published above what was last released. A cheap check for when to call
    /// [`release_logged`](Self::release_logged).
    pub fn releasable(&self) -> bool {
        self.end().saturating_sub(self.released()) > (self.keep() + HEADER) as u64
    }

    /// Hands the pages of output that is logged, save the last [`KEEP_LOGGED`], back to the
    /// kernel (`FALLOC_FL_PUNCH_HOLE` on the memfd: both mappings then read zeros there, and a
    /// page is allocated afresh when the ring comes round to it). Returns the bytes released.
    ///
    /// Only the ring's writer calls this, between two of its own writes — the holder while it
    /// reads the terminal, the server while *it* does (`crate::session::kept`) — never the
    /// other side: the positions it punches are those the writer's next lap writes, and a
    /// punch that landed after such a write (the writer in another process) would turn those
    /// bytes into zeros before they were copied out (seen: 2.6 KB of zeros in a 100 MB
    /// byte-exact test, about one run in nine, while holders punched under a server's reads).
    /// What it punches is below `acked`, where nobody reads any more, and at or above `end -
    /// cap`, so no position that holds newer output is touched. Offsets below the release are
    /// no longer held (a `Hello` from there is refused).
    pub fn release_logged(&self) -> io::Result<u64> {
        let page = HEADER as u64;
        let upto = self.acked().saturating_sub(self.keep() as u64) / page * page;
        let from = self.held_from().next_multiple_of(page);
        if upto <= from {
            return Ok(0);
        }
        // [from, upto) lies within one lap of the ring: at most two runs of positions.
        let cap = self.cap as u64;
        let mut at = from;
        while at < upto {
            let pos = at % cap;
            let len = (upto - at).min(cap - pos);
            // SAFETY: fallocate on our own memfd, a page-aligned range inside its data region.
            let rc = unsafe {
                libc::fallocate(
                    self.fd.as_raw_fd(),
                    libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                    (HEADER as u64 + pos) as libc::off_t,
                    len as libc::off_t,
                )
            };
            if rc != 0 {
                return Err(io::Error::last_os_error());
            }
            at += len;
            self.header().released.store(at, Ordering::Release);
        }
        Ok(upto - from)
    }

    /// Logged output kept: [`KEEP_LOGGED`], or a quarter of a smaller ring.
    fn keep(&self) -> usize {
        KEEP_LOGGED.min(self.cap / 4)
    }

    /// The terminal (or every output pipe) is closed and everything is published.
    pub fn close(&self) {
        self.header().closed.store(1, Ordering::Release);
    }

    /// A new server starts at `from`: bytes from there on must not be overwritten any more.
    pub fn rewind_acked(&self, from: u64) {
        self.header().acked.fetch_min(from, Ordering::AcqRel);
    }

    // ----- the server's side -----

    /// The free space after `end`, contiguous (up to the wrap), for a read by the server
    /// itself (`super::uring`: the holder then does not read, and the server is the ring's
    /// only writer); empty when the ring is full. A raw range: the kernel writes it.
    pub fn reader_slot(&self) -> (*mut u8, usize) {
        let pos = (self.end() % self.cap as u64) as usize;
        let len = self.free().min(self.cap - pos);
        // SAFETY: `pos < cap`: the pointer stays inside the mapping's data region.
        (unsafe { self.map.add(HEADER + pos) }, len)
    }

    /// The server polls `end` on its own timer (true) or waits for wake-ups (false). After
    /// turning polling off the server must look at `end` once more: a publish that saw polling
    /// still on sent no wake-up (SeqCst on both sides: one of the two sees the other).
    pub fn set_polling(&self, on: bool) {
        self.header().polling.store(u64::from(on), Ordering::SeqCst);
    }

    /// The server's log holds the output up to `upto` (never goes back, never past `end`).
    pub fn set_acked(&self, upto: u64) {
        let upto = upto.min(self.end());
        self.header().acked.fetch_max(upto, Ordering::AcqRel);
    }

    /// The published bytes from `from` on, at most `max`, as one slice (the part before the
    /// wrap; call again for the rest). `from` must be ≥ the server's acked offset.
    pub fn read(&self, from: u64, max: usize) -> &[u8] {
        let end = self.end();
        debug_assert!(from >= self.held_from() && from <= end);
        let pos = (from % self.cap as u64) as usize;
        let len = ((end - from) as usize).min(self.cap - pos).min(max);
        // SAFETY: [from, from + len) is published and not below `acked`, so the holder will not
        // write it until the server acknowledges past it (module invariants).
        unsafe { std::slice::from_raw_parts(self.map.add(HEADER + pos), len) }
    }
}

impl Drop for SharedRing {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `map`, of this size, unmapped once.
        if unsafe { libc::munmap(self.map.cast(), HEADER + self.cap) } != 0 {
            tracing::warn!(error = %io::Error::last_os_error(), "munmap of a holder ring failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_cross_between_two_mappings_with_the_wrap_and_the_bound() {
        let mut holder = SharedRing::create(MIN_CAP, 1000).unwrap();
        let server = SharedRing::open(holder.fd().try_clone().unwrap()).unwrap();
        let cap = holder.cap();
        assert_eq!(server.end(), 1000);
        let data: Vec<u8> = (0..cap + 5000).map(|i| (i % 251) as u8).collect();
        // Up to the wrap, then from the start: `cap` bytes in all, and then it is full.
        let mut written = 0;
        while written < cap {
            let slot = holder.write_slot();
            assert!(!slot.is_empty());
            let n = slot.len();
            slot.copy_from_slice(&data[written..written + n]);
            holder.publish(n);
            written += n;
        }
        assert!(holder.write_slot().is_empty(), "full until acknowledged");
        let mut got = Vec::new();
        while got.len() < cap {
            let part = server.read(1000 + got.len() as u64, usize::MAX);
            assert!(!part.is_empty());
            got.extend_from_slice(part);
        }
        assert_eq!(got, &data[..cap]);
        // The server logs 5000 bytes: 5000 more fit.
        server.set_acked(6000);
        let slot = holder.write_slot();
        assert_eq!(slot.len(), 5000);
        slot.copy_from_slice(&data[cap..]);
        holder.publish(5000);
        assert_eq!(server.read(1000 + cap as u64, usize::MAX), &data[cap..]);
        // A new server from an earlier offset still in the ring: acked goes back for it.
        assert_eq!(holder.held_from(), 6000);
        holder.rewind_acked(7000);
        assert_eq!(holder.acked(), 6000, "never forward");
        server.set_acked(u64::MAX);
        assert_eq!(server.acked(), holder.end(), "never past the end");
        holder.close();
        assert!(server.closed());
    }

    #[test]
    fn a_push_lands_whole_across_the_wrap() {
        let mut holder = SharedRing::create(MIN_CAP, 0).unwrap();
        let server = SharedRing::open(holder.fd().try_clone().unwrap()).unwrap();
        let cap = holder.cap();
        holder.push(&vec![b'a'; cap - 10]);
        server.set_acked(cap as u64 - 10);
        assert_eq!(holder.free(), cap);
        let line: Vec<u8> = (0..100u8).collect();
        holder.push(&line);
        assert_eq!(holder.end(), cap as u64 + 90);
        let mut got = server.read(cap as u64 - 10, usize::MAX).to_vec();
        assert_eq!(got.len(), 10, "up to the wrap");
        got.extend_from_slice(server.read(cap as u64, usize::MAX));
        assert_eq!(got, line);
    }

    /// Bytes of shmem the memfd has allocated.
    fn allocated(ring: &SharedRing) -> u64 {
        // SAFETY: fstat fills the struct we pass.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: `st` is valid for writes.
        assert_eq!(unsafe { libc::fstat(ring.fd().as_raw_fd(), &mut st) }, 0);
        st.st_blocks as u64 * 512
    }

    #[test]
    fn logged_output_is_handed_back_and_what_follows_lands_whole() {
        let mut holder = SharedRing::create(MIN_CAP, 500).unwrap();
        let server = SharedRing::open(holder.fd().try_clone().unwrap()).unwrap();
        let (cap, keep) = (holder.cap() as u64, (MIN_CAP / 4) as u64);
        let byte = |o: u64| (o % 251) as u8;
        // Write and log three laps and a half, so every page was touched and the end sits
        // mid-ring; the server acknowledges as it goes.
        let mut end = 500u64;
        let write = |holder: &mut SharedRing, end: &mut u64, upto: u64| {
            while *end < upto {
                let slot = holder.write_slot();
                let n = slot.len().min((upto - *end) as usize);
                assert!(n > 0, "room");
                for (i, b) in slot[..n].iter_mut().enumerate() {
                    *b = byte(*end + i as u64);
                }
                holder.publish(n);
                *end += n as u64;
                server.set_acked(*end);
            }
        };
        write(&mut holder, &mut end, 500 + 3 * cap + cap / 2);
        assert!(allocated(&holder) >= cap, "every page touched");
        assert!(holder.releasable());
        let released = holder.release_logged().unwrap();
        assert!(released >= cap - keep - 2 * 4096, "released {released}");
        assert!(
            allocated(&holder) <= HEADER as u64 + keep + 4096,
            "{} bytes still allocated",
            allocated(&holder)
        );
        assert!(!holder.releasable(), "nothing more until more is logged");
        assert_eq!(holder.release_logged().unwrap(), 0);
        // What is no longer held is no longer offered; the kept tail still is, byte for byte.
        assert!(holder.held_from() > end - keep - 4096 && holder.held_from() <= end - keep);
        // The server reads `[from, end)` back: every byte as written.
        let intact = |from: u64, end: u64| {
            let mut at = from;
            while at < end {
                let part = server.read(at, usize::MAX);
                assert!(!part.is_empty());
                assert!(
                    part.iter()
                        .enumerate()
                        .all(|(i, b)| *b == byte(at + i as u64))
                );
                at += part.len() as u64;
            }
        };
        intact(holder.held_from(), end);
        // Another lap over the released pages lands whole, across the wrap.
        let before = end;
        write(&mut holder, &mut end, before + cap);
        intact(end - cap, end);
        // Unlogged output is never released.
        let mut fresh = SharedRing::create(MIN_CAP, 0).unwrap();
        fresh.push(&vec![7; MIN_CAP]);
        assert_eq!(fresh.release_logged().unwrap(), 0);
        assert!(fresh.read(0, usize::MAX).iter().all(|b| *b == 7));
    }
}
