//! Uring: the server reads a held terminal itself, and what each read returned outlives it.
//!
//! Why: a byte read from a PTY is gone from the kernel, so a server that reads a held session's
//! terminal must leave, for whoever comes after it, both the bytes and how many there were —
//! a plain `read(2)` returns its count in a register, and a SIGKILL right after it loses the
//! count (and with it the bytes, which sit unpublished in the shared ring). Through an
//! `io_uring` the kernel writes the count into a completion queue in memory in the same
//! operation that copies the bytes. The server sets its io_uring up with
//! `IORING_SETUP_NO_MMAP`: its queues live in pages the *holder* made ([`ReadPages`], a memfd
//! of two pages, passed with `Welcome`), so the last completion is still there, in the holder's
//! mapping, after the server and its io_uring are gone ([`ReadPages::unpublished`]). (An
//! io_uring descriptor itself cannot be passed by `SCM_RIGHTS`: the kernel refuses it.)
//!
//! Each read is one submission of an `IORING_OP_READ` at the ring's end, its `user_data` the
//! output offset it reads to, waited for in the same `io_uring_enter`. A terminal has no
//! `RWF_NOWAIT`, and an empty one would leave the read in flight: so a read is submitted only
//! when `FIONREAD` says the terminal has bytes, or when its other side is closed (a read then
//! returns what is left, then EIO) — otherwise `WouldBlock`, and the caller waits for
//! readiness with epoll as for any fd. In a flood (the last read took a whole line-discipline
//! buffer) the `FIONREAD` is skipped, and a read that finds the terminal empty after all is
//! cancelled before the call returns: no read ever stays in flight ([`ReadRing::read`]). The
//! server publishes a read (moves the shared ring's `end`) *before* it consumes the
//! completion, so a completion left in the queue whose offset is the ring's `end` is a read
//! nobody published, and one below `end` was published: exact whenever the server died. Each server gets fresh pages (nothing of a dead server's queues is
//! ever submitted again).
//!
//! The queues are read and written by hand (the `io-uring` crate cannot set a ring up on
//! memory of the caller's): the kernel's ABI structs below (`include/uapi/linux/io_uring.h`).

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

/// Entries in the submission queue: one read at a time.
const ENTRIES: u32 = 2;
const PAGE: usize = 4096;
/// The pages: the kernel's `io_rings` (heads, tails, completions) in the first, the
/// submission entries at the start of the second and our header in its second half.
const SIZE: usize = 2 * PAGE;
const HEADER: usize = PAGE + PAGE / 2;
/// "corralq1": the server set its queues up here and wrote their offsets.
const MAGIC: u64 = u64::from_le_bytes(*b"corralq1");

const IORING_SETUP_NO_MMAP: u32 = 1 << 14;
const IORING_SETUP_NO_SQARRAY: u32 = 1 << 16;
const IORING_ENTER_GETEVENTS: u32 = 1;
const IORING_OP_READ: u8 = 22;
const IORING_OP_ASYNC_CANCEL: u8 = 14;
/// The `user_data` of a cancel (a read's is its output offset, never this).
const CANCEL: u64 = u64::MAX;
/// What one read of a terminal takes when its line discipline's buffer is full (the kernel's
/// `N_TTY_BUF_SIZE`, 4096, less one): output is flooding, more is very likely waiting.
const FULL_BUFFER: usize = 4095;

#[repr(C)]
#[derive(Default)]
struct SqOffsets {
    head: u32,
    tail: u32,
    ring_mask: u32,
    ring_entries: u32,
    flags: u32,
    dropped: u32,
    array: u32,
    resv1: u32,
    user_addr: u64,
}

#[repr(C)]
#[derive(Default)]
struct CqOffsets {
    head: u32,
    tail: u32,
    ring_mask: u32,
    ring_entries: u32,
    overflow: u32,
    cqes: u32,
    flags: u32,
    resv1: u32,
    user_addr: u64,
}

#[repr(C)]
#[derive(Default)]
struct Params {
    sq_entries: u32,
    cq_entries: u32,
    flags: u32,
    sq_thread_cpu: u32,
    sq_thread_idle: u32,
    features: u32,
    wq_fd: u32,
    resv: [u32; 3],
    sq_off: SqOffsets,
    cq_off: CqOffsets,
}

#[repr(C)]
#[derive(Default)]
struct Sqe {
    opcode: u8,
    flags: u8,
    ioprio: u16,
    fd: i32,
    off: u64,
    addr: u64,
    len: u32,
    rw_flags: u32,
    user_data: u64,
    buf_index: u16,
    personality: u16,
    splice_fd_in: i32,
    addr3: u64,
    pad: u64,
}

#[repr(C)]
struct Cqe {
    user_data: u64,
    res: i32,
    flags: u32,
}

/// Our header: where the kernel put the completion queue in the first page.
#[repr(C)]
struct Header {
    magic: AtomicU64,
    cq_head: AtomicU32,
    cq_tail: AtomicU32,
    cq_mask: AtomicU32,
    cqes: AtomicU32,
}

const _: () = assert!(std::mem::size_of::<Params>() == 120);
const _: () = assert!(std::mem::size_of::<Sqe>() == 64);
const _: () = assert!(std::mem::size_of::<Cqe>() == 16);

/// Two shared pages mapped in this process.
struct Pages {
    fd: OwnedFd,
    map: *mut u8,
}

// SAFETY: plain shared memory; every shared word is accessed through atomics (or written by
// the kernel and read after an acquire of the tail that covers it).
unsafe impl Send for Pages {}

impl Pages {
    fn create() -> io::Result<Pages> {
        Pages::map(crate::fd::memfd(c"corral-reads", SIZE)?)
    }

    fn map(fd: OwnedFd) -> io::Result<Pages> {
        if crate::fd::size(&fd)? != SIZE {
            return Err(io::Error::other("not the holder's read pages"));
        }
        // Unmapped in Drop.
        let map = crate::fd::map_shared(&fd, SIZE)?;
        Ok(Pages { fd, map })
    }

    fn header(&self) -> &Header {
        // SAFETY: HEADER is inside the mapping and 8-aligned; all fields are atomics.
        unsafe { &*self.map.add(HEADER).cast::<Header>() }
    }

    /// The u32 the kernel keeps at `off` in the first page.
    fn word(&self, off: u32) -> &AtomicU32 {
        debug_assert!((off as usize) < PAGE && off.is_multiple_of(4));
        // SAFETY: inside the first page, 4-aligned (the kernel's offsets).
        unsafe { &*self.map.add(off as usize).cast::<AtomicU32>() }
    }

    fn cqe(&self, cqes: u32, index: u32) -> Cqe {
        let at = cqes as usize + index as usize * std::mem::size_of::<Cqe>();
        debug_assert!(at + std::mem::size_of::<Cqe>() <= PAGE);
        // SAFETY: inside the first page; the entry was written before the tail that covers it
        // (read with Acquire by the caller).
        unsafe { std::ptr::read_volatile(self.map.add(at).cast::<Cqe>()) }
    }
}

impl Drop for Pages {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `map`, of this size, unmapped once.
        if unsafe { libc::munmap(self.map.cast(), SIZE) } != 0 {
            tracing::warn!(error = %io::Error::last_os_error(), "munmap of read pages failed");
        }
    }
}

/// The holder's side: the pages a server's queues will live in.
pub struct ReadPages {
    pages: Pages,
}

impl std::fmt::Debug for ReadPages {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ReadPages")
    }
}

impl ReadPages {
    /// Fresh pages for one server.
    pub fn create() -> io::Result<ReadPages> {
        Ok(ReadPages {
            pages: Pages::create()?,
        })
    }

    /// The descriptor to pass.
    pub fn fd(&self) -> &OwnedFd {
        &self.pages.fd
    }

    /// Once the server that read through these pages is gone: the bytes of each completed read
    /// it did not publish, in order (at most one in practice). `end` is the shared ring's end;
    /// each count returned is to be published, the next one reading on from there.
    pub fn unpublished(&self, mut end: u64) -> Vec<usize> {
        let p = &self.pages;
        let h = p.header();
        let mut found = Vec::new();
        if h.magic.load(Ordering::Acquire) != MAGIC {
            return found; // it never read
        }
        let (head_off, tail_off) = (
            h.cq_head.load(Ordering::Relaxed),
            h.cq_tail.load(Ordering::Relaxed),
        );
        let (mask_off, cqes) = (
            h.cq_mask.load(Ordering::Relaxed),
            h.cqes.load(Ordering::Relaxed),
        );
        if [head_off, tail_off, mask_off]
            .iter()
            .any(|&o| o as usize >= PAGE || !o.is_multiple_of(4))
            || cqes as usize >= PAGE
        {
            return found;
        }
        let mask = p.word(mask_off).load(Ordering::Relaxed);
        let head = p.word(head_off).load(Ordering::Acquire);
        let tail = p.word(tail_off).load(Ordering::Acquire);
        if mask as usize * std::mem::size_of::<Cqe>() + cqes as usize >= PAGE {
            return found;
        }
        let mut at = head;
        while at != tail {
            let done = p.cqe(cqes, at & mask);
            if done.user_data == end && done.res > 0 {
                found.push(done.res as usize);
                end += done.res as u64;
            }
            at = at.wrapping_add(1);
        }
        found
    }
}

/// The server's side: its io_uring, its queues in the holder's pages.
pub struct ReadRing {
    ring: OwnedFd,
    pages: Pages,
    sq_tail: u32,
    sq_mask: u32,
    cq_head: u32,
    cq_tail: u32,
    cq_mask: u32,
    cqes: u32,
    /// The last read took a whole line-discipline buffer (see [`ReadRing::read`]).
    flowing: bool,
}

impl std::fmt::Debug for ReadRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadRing")
            .field("fd", &self.ring.as_raw_fd())
            .finish()
    }
}

impl ReadRing {
    /// Sets an io_uring up in the holder's pages. Fails where io_uring is not allowed (a seccomp
    /// filter, `kernel.io_uring_disabled`) or older than `IORING_SETUP_NO_MMAP` (Linux 6.5):
    /// the session's output then comes through the holder's reads, as before.
    pub fn open(fd: OwnedFd) -> io::Result<ReadRing> {
        let pages = Pages::map(fd)?;
        let mut p = Params {
            flags: IORING_SETUP_NO_MMAP | IORING_SETUP_NO_SQARRAY,
            ..Params::default()
        };
        p.cq_off.user_addr = pages.map as u64;
        // SAFETY: inside the mapping (the second page).
        p.sq_off.user_addr = unsafe { pages.map.add(PAGE) } as u64;
        // SAFETY: io_uring_setup reads and fills `p`; the addresses are our mapping's pages,
        // which the kernel pins for the ring's life.
        let raw =
            unsafe { libc::syscall(libc::SYS_io_uring_setup, ENTRIES, &mut p as *mut Params) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a fresh descriptor owned by nobody else.
        let ring = unsafe { OwnedFd::from_raw_fd(raw as RawFd) };
        let h = pages.header();
        h.cq_head.store(p.cq_off.head, Ordering::Relaxed);
        h.cq_tail.store(p.cq_off.tail, Ordering::Relaxed);
        h.cq_mask.store(p.cq_off.ring_mask, Ordering::Relaxed);
        h.cqes.store(p.cq_off.cqes, Ordering::Relaxed);
        h.magic.store(MAGIC, Ordering::Release);
        let sq_mask = pages.word(p.sq_off.ring_mask).load(Ordering::Relaxed);
        let cq_mask = pages.word(p.cq_off.ring_mask).load(Ordering::Relaxed);
        Ok(ReadRing {
            ring,
            sq_tail: p.sq_off.tail,
            sq_mask,
            cq_head: p.cq_off.head,
            cq_tail: p.cq_off.tail,
            cq_mask,
            cqes: p.cq_off.cqes,
            pages,
            flowing: false,
        })
    }

    /// Reads from `fd` (non-blocking) into `len` bytes at `buf`, the output from offset `to`
    /// on: returns how many (0 at the end of the terminal). `publish` runs with the count
    /// before the completion is consumed (see the module docs).
    ///
    /// While output floods (the last read took a whole line-discipline buffer), or when the
    /// caller has just `seen` bytes waiting (`FIONREAD`), the read is submitted without asking
    /// `FIONREAD` first: when the terminal had bytes after all — nearly
    /// always in a flood — it completes inside the submitting call, one syscall per read
    /// instead of two (and no `FIONREAD`, which takes the terminal's termios lock for writing
    /// against the kernel worker filling the buffer: 113 → 131 MB/s to one ttyd-protocol
    /// viewer, docs/performance.md, session 30). When it did not, it is taken back before this
    /// returns (an `IORING_OP_ASYNC_CANCEL`, waited for with the read's own completion), so no
    /// read is ever left in flight: a server SIGKILLed inside that window leaves either the
    /// read's completion in the holder's pages or a read its exit cancelled — the kernel never
    /// runs a read's task work for a task that is exiting — and the holder goes on from there.
    ///
    /// # Safety
    /// `buf` must be valid for `len` bytes of writes, and nobody may use them until this
    /// returns.
    pub unsafe fn read(
        &mut self,
        fd: RawFd,
        buf: *mut u8,
        len: usize,
        to: u64,
        seen: bool,
        publish: impl FnOnce(usize),
    ) -> io::Result<usize> {
        let check = !self.flowing && !seen;
        if self.flowing && !seen {
            // Our last read made room in the line discipline's buffer and so queued the kernel
            // worker that refills it (`n_tty_kick_worker`). When that worker was woken on this
            // CPU, it runs now and the read below finds its bytes, instead of sleeping until
            // it ran and being woken again: one vCPU wake-up fewer per 4 KiB in a flood (one
            // ttyd-protocol viewer, 271 MB: 133 → 138 MB/s median of eleven alternated pairs,
            // docs/performance.md session 30). It cannot fail on Linux.
            // SAFETY: no arguments, no memory.
            unsafe { libc::sched_yield() };
        }
        self.flowing = false;
        if check {
            let mut ready: libc::c_int = 0;
            // SAFETY: FIONREAD writes one int through the pointer.
            if unsafe { libc::ioctl(fd, libc::FIONREAD, &mut ready) } != 0 {
                return Err(io::Error::last_os_error());
            }
            if ready == 0 && !hung_up(fd)? {
                return Err(io::ErrorKind::WouldBlock.into());
            }
        }
        let head = self.pages.word(self.cq_head).load(Ordering::Relaxed);
        self.push(Sqe {
            opcode: IORING_OP_READ,
            fd,
            off: u64::MAX, // the file's position: a terminal has none
            addr: buf as u64,
            len: len.min(u32::MAX as usize) as u32,
            user_data: to,
            ..Sqe::default()
        });
        // Checked: the terminal has bytes (or is closed), so the read completes at once.
        // Not checked: it completes at once or waits in the kernel, which is seen here.
        self.enter(1, u32::from(check), head)?;
        if !check && self.completed(head) == 0 {
            self.push(Sqe {
                opcode: IORING_OP_ASYNC_CANCEL,
                fd: -1,
                addr: to, // the user_data of the read to cancel
                user_data: CANCEL,
                ..Sqe::default()
            });
            self.enter(1, 2, head)?;
        }
        let p = &self.pages;
        let tail = p.word(self.cq_tail).load(Ordering::Acquire);
        let mut read = None;
        let mut at = head;
        while at != tail {
            let done = p.cqe(self.cqes, at & self.cq_mask);
            match done.user_data {
                CANCEL => {}
                d if d == to => read = Some(done.res),
                _ => return Err(io::Error::other("io_uring completion of another read")),
            }
            at = at.wrapping_add(1);
        }
        let res = read.ok_or_else(|| io::Error::other("io_uring: no completion of the read"))?;
        if res > 0 {
            publish(res as usize);
        }
        // Consumed only now.
        p.word(self.cq_head).store(tail, Ordering::Release);
        match res {
            n if n > 0 => {
                self.flowing = n as usize == len || n as usize >= FULL_BUFFER;
                Ok(n as usize)
            }
            0 => Ok(0),
            e if -e == libc::ECANCELED => Err(io::ErrorKind::WouldBlock.into()),
            e => Err(io::Error::from_raw_os_error(-e)),
        }
    }

    /// Puts `entry` at the submission queue's tail.
    fn push(&mut self, entry: Sqe) {
        let p = &self.pages;
        let tail = p.word(self.sq_tail).load(Ordering::Relaxed);
        let slot = PAGE + (tail & self.sq_mask) as usize * std::mem::size_of::<Sqe>();
        // SAFETY: the entry at the tail is ours to fill (the kernel consumed every earlier one
        // in the call that submitted it), inside the second page.
        unsafe { std::ptr::write_volatile(p.map.add(slot).cast::<Sqe>(), entry) };
        p.word(self.sq_tail)
            .store(tail.wrapping_add(1), Ordering::Release);
    }

    /// Completions after `head`, not consumed yet.
    fn completed(&self, head: u32) -> u32 {
        let tail = self.pages.word(self.cq_tail).load(Ordering::Acquire);
        tail.wrapping_sub(head)
    }

    /// Submits `submit` entries and waits until `wait` completions follow `head`.
    fn enter(&mut self, mut submit: u32, wait: u32, head: u32) -> io::Result<()> {
        loop {
            let flags = if wait > 0 { IORING_ENTER_GETEVENTS } else { 0 };
            // SAFETY: io_uring_enter on our ring, no signal mask.
            let rc = unsafe {
                libc::syscall(
                    libc::SYS_io_uring_enter,
                    self.ring.as_raw_fd(),
                    submit,
                    wait,
                    flags,
                    std::ptr::null::<libc::c_void>(),
                    0usize,
                )
            };
            if rc < 0 {
                let e = io::Error::last_os_error();
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(e);
                }
            } else {
                submit -= (rc as u32).min(submit);
            }
            if submit == 0 && self.completed(head) >= wait {
                return Ok(());
            }
        }
    }
}

/// Whether this process can read terminals through such a ring (io_uring allowed, Linux ≥ 6.5
/// for `IORING_SETUP_NO_MMAP`): tried once, on pages of its own. A server that cannot says so
/// in its `Hello`, and its holders read their terminals as before. `CORRAL_IO_URING=off` in
/// the server's environment says no without trying (docs/operations.md).
pub fn supported() -> bool {
    static SUPPORTED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *SUPPORTED.get_or_init(|| {
        if std::env::var_os("CORRAL_IO_URING").is_some_and(|v| v == "off") {
            tracing::info!("CORRAL_IO_URING=off: holders read their terminals");
            return false;
        }
        let tried =
            ReadPages::create().and_then(|pages| ReadRing::open(pages.fd().try_clone()?).map(drop));
        match tried {
            Ok(()) => true,
            Err(e) => {
                tracing::info!(error = %e, "no io_uring for reading terminals: holders read them");
                false
            }
        }
    })
}

/// Whether the other side of the terminal is closed: a read then never waits (it returns
/// what the line discipline still has, then EIO).
fn hung_up(fd: RawFd) -> io::Result<bool> {
    let mut p = [libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    }];
    // SAFETY: a valid array of one pollfd; no wait.
    if unsafe { libc::poll(p.as_mut_ptr(), 1, 0) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(p[0].revents & (libc::POLLHUP | libc::POLLERR) != 0)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::holder::ring::{MIN_CAP, SharedRing};

    /// A PTY pair: (master, non-blocking; slave).
    pub(crate) fn pty() -> (OwnedFd, OwnedFd) {
        let pair = nix::pty::openpty(None, None).unwrap();
        let master = crate::fd::dup_nonblocking(pair.master.as_raw_fd()).unwrap();
        let mut t = nix::sys::termios::tcgetattr(&pair.slave).unwrap();
        nix::sys::termios::cfmakeraw(&mut t);
        nix::sys::termios::tcsetattr(&pair.slave, nix::sys::termios::SetArg::TCSANOW, &t).unwrap();
        (master, pair.slave)
    }

    /// A holder's read pages and a server's io_uring set up on them.
    pub(crate) fn server_reads() -> (ReadPages, ReadRing) {
        let holder = ReadPages::create().unwrap();
        let server = ReadRing::open(holder.fd().try_clone().unwrap()).unwrap();
        (holder, server)
    }

    pub(crate) fn wait_readable(fd: &OwnedFd) {
        let mut p = [libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        }];
        // SAFETY: a valid array of one pollfd.
        assert_eq!(unsafe { libc::poll(p.as_mut_ptr(), 1, 5000) }, 1);
    }

    #[test]
    fn a_read_lands_in_the_shared_ring_and_an_empty_terminal_answers_at_once() {
        let (master, slave) = pty();
        let (_holder, mut server) = server_reads();
        let ring = SharedRing::create(MIN_CAP, 0).unwrap();
        let (buf, len) = ring.reader_slot();
        // Nothing written yet: EAGAIN, not a wait.
        let t = std::time::Instant::now();
        // SAFETY: the slot is the ring's free space, unused by anyone else here.
        let r = unsafe { server.read(master.as_raw_fd(), buf, len, 0, false, |_| panic!()) };
        assert_eq!(r.unwrap_err().kind(), io::ErrorKind::WouldBlock);
        assert!(t.elapsed() < std::time::Duration::from_secs(1));
        nix::unistd::write(&slave, b"hello").unwrap();
        wait_readable(&master);
        let mut published = 0;
        // SAFETY: as above.
        let n = unsafe {
            server.read(master.as_raw_fd(), buf, len, 0, false, |n| {
                published = n;
                ring.publish(n)
            })
        }
        .unwrap();
        assert_eq!((n, published), (5, 5));
        assert_eq!(ring.read(0, 100), b"hello");
        // The last bytes, then the other side closes: they come, then the end (EIO).
        nix::unistd::write(&slave, b"bye").unwrap();
        drop(slave);
        // (The terminal moves written bytes to its reader's side on a kernel worker: a read
        // at once could find nothing yet, under load.)
        wait_readable(&master);
        let (buf, len) = ring.reader_slot();
        // SAFETY: as above.
        let n = unsafe { server.read(master.as_raw_fd(), buf, len, 5, false, |n| ring.publish(n)) };
        assert_eq!(n.unwrap(), 3);
        let (buf, len) = ring.reader_slot();
        // SAFETY: as above.
        let end = unsafe { server.read(master.as_raw_fd(), buf, len, 8, false, |_| panic!()) };
        assert_eq!(end.unwrap_err().raw_os_error(), Some(libc::EIO));
        assert_eq!(ring.read(0, 100), b"hellobye");
    }

    #[test]
    fn a_read_without_fionread_that_finds_the_terminal_empty_is_taken_back() {
        let (master, slave) = pty();
        let (holder, mut server) = server_reads();
        let ring = SharedRing::create(MIN_CAP, 0).unwrap();
        // More than the line discipline's buffer: the first read takes a full one.
        let flood = vec![b'x'; 3 * FULL_BUFFER];
        let writer = std::thread::spawn(move || {
            nix::unistd::write(&slave, &flood).unwrap();
            slave
        });
        let mut got = 0;
        let mut flowed = false;
        while got < 3 * FULL_BUFFER {
            wait_readable(&master);
            let (buf, len) = ring.reader_slot();
            // SAFETY: the ring's free space, unused by anyone else here.
            match unsafe {
                server.read(master.as_raw_fd(), buf, len, got as u64, false, |n| {
                    ring.publish(n)
                })
            } {
                Ok(n) => got += n,
                Err(e) => assert_eq!(e.kind(), io::ErrorKind::WouldBlock),
            }
            flowed |= server.flowing;
        }
        assert!(flowed, "no read took a whole buffer");
        let slave = writer.join().unwrap();
        // Empty now: the next read, if it skips FIONREAD, is submitted, waits in the kernel
        // and is taken back — still an answer at once.
        server.flowing = true;
        let (buf, len) = ring.reader_slot();
        let t = std::time::Instant::now();
        // SAFETY: as above.
        let r = unsafe {
            server.read(
                master.as_raw_fd(),
                buf,
                len,
                got as u64,
                false,
                |_| panic!(),
            )
        };
        assert_eq!(r.unwrap_err().kind(), io::ErrorKind::WouldBlock);
        assert!(t.elapsed() < std::time::Duration::from_secs(1));
        assert!(!server.flowing);
        // So is one whose caller says it has seen bytes (and was wrong).
        // SAFETY: as above.
        let r =
            unsafe { server.read(master.as_raw_fd(), buf, len, got as u64, true, |_| panic!()) };
        assert_eq!(r.unwrap_err().kind(), io::ErrorKind::WouldBlock);
        assert!(t.elapsed() < std::time::Duration::from_secs(1));
        // Nothing is left in flight: bytes written now stay in the terminal (no completion
        // appears by itself), and the next read returns exactly them.
        nix::unistd::write(&slave, b"after").unwrap();
        wait_readable(&master);
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert_eq!(
            server.completed(server.pages.word(server.cq_head).load(Ordering::Relaxed)),
            0
        );
        let (buf, len) = ring.reader_slot();
        // SAFETY: as above.
        // Bytes seen (poll said readable): read without looking first.
        let n = unsafe {
            server.read(master.as_raw_fd(), buf, len, got as u64, true, |n| {
                ring.publish(n)
            })
        };
        assert_eq!(n.unwrap(), 5);
        assert_eq!(ring.read(got as u64, 100), b"after");
        assert_eq!(holder.unpublished(ring.end()), Vec::<usize>::new());
    }

    /// The kernel fact [`ReadRing::read`] leans on for a read submitted without `FIONREAD`:
    /// a server SIGKILLed while such a read waits in the kernel (between its submission and
    /// its cancel) never takes bytes written after — they stay in the terminal for the holder.
    #[test]
    fn a_read_left_waiting_by_a_killed_server_takes_nothing() {
        let (master, slave) = pty();
        let holder = ReadPages::create().unwrap();
        let ring = SharedRing::create(MIN_CAP, 0).unwrap();
        let (buf, len) = ring.reader_slot();
        let pages = holder.fd().try_clone().unwrap();
        let (ready_r, ready_w) = nix::unistd::pipe().unwrap();
        // SAFETY: the child only makes system calls (no allocation on these success paths)
        // and never returns: it submits a read of the empty terminal and waits to be killed.
        let child = unsafe { libc::fork() };
        assert!(child >= 0, "fork: {}", io::Error::last_os_error());
        if child == 0 {
            let Ok(mut server) = ReadRing::open(pages) else {
                // SAFETY: leaving the forked child at once.
                unsafe { libc::_exit(1) }
            };
            server.push(Sqe {
                opcode: IORING_OP_READ,
                fd: master.as_raw_fd(),
                off: u64::MAX,
                addr: buf as u64,
                len: len as u32,
                user_data: 0,
                ..Sqe::default()
            });
            let head = server.pages.word(server.cq_head).load(Ordering::Relaxed);
            if server.enter(1, 0, head).is_err() || server.completed(head) != 0 {
                // SAFETY: as above.
                unsafe { libc::_exit(2) }
            }
            // SAFETY: one byte from a live local.
            unsafe { libc::write(ready_w.as_raw_fd(), b"r".as_ptr().cast(), 1) };
            loop {
                // SAFETY: waits for the SIGKILL.
                unsafe { libc::pause() };
            }
        }
        drop(ready_w);
        let mut b = [0u8; 1];
        assert_eq!(
            nix::unistd::read(&ready_r, &mut b).unwrap(),
            1,
            "the child's read is not waiting"
        );
        // SAFETY: our child, killed and reaped here.
        unsafe {
            assert_eq!(libc::kill(child, libc::SIGKILL), 0);
            assert_eq!(libc::waitpid(child, std::ptr::null_mut(), 0), child);
        }
        nix::unistd::write(&slave, b"late").unwrap();
        wait_readable(&master);
        std::thread::sleep(std::time::Duration::from_millis(100));
        let mut ready: libc::c_int = 0;
        // SAFETY: FIONREAD writes one int.
        assert_eq!(
            unsafe { libc::ioctl(master.as_raw_fd(), libc::FIONREAD, &mut ready) },
            0
        );
        assert_eq!(ready, 4, "the dead server's read took bytes");
        assert_eq!(holder.unpublished(0), Vec::<usize>::new());
        assert_eq!(ring.end(), 0);
    }

    #[test]
    fn a_read_the_server_did_not_publish_is_found_by_the_holder() {
        let (master, slave) = pty();
        let (holder, mut server) = server_reads();
        let ring = SharedRing::create(MIN_CAP, 100).unwrap();
        nix::unistd::write(&slave, b"one").unwrap();
        wait_readable(&master);
        let (buf, len) = ring.reader_slot();
        // SAFETY: the ring's free space.
        unsafe {
            server.read(master.as_raw_fd(), buf, len, 100, false, |n| {
                ring.publish(n)
            })
        }
        .unwrap();
        assert_eq!(
            holder.unpublished(ring.end()),
            Vec::<usize>::new(),
            "published"
        );
        nix::unistd::write(&slave, b"two!").unwrap();
        wait_readable(&master);
        let (buf, len) = ring.reader_slot();
        // The server dies between the read and its publish: the completion stays in the
        // queue, in the holder's pages, after its io_uring is gone.
        // SAFETY: the ring's free space.
        unsafe { server.read(master.as_raw_fd(), buf, len, 103, false, |_| {}) }.unwrap();
        let head = server.pages.word(server.cq_head);
        head.store(
            head.load(Ordering::Relaxed).wrapping_sub(1),
            Ordering::Relaxed,
        );
        drop(server);
        let found = holder.unpublished(ring.end());
        assert_eq!(found, vec![4]);
        ring.publish(4);
        assert_eq!(ring.read(100, 100), b"onetwo!");
    }
}
