//! Streams: a pipe-mode program's stdout and stderr, read by its holder and merged into the
//! [shared ring](super::ring) in whole lines.
//!
//! A byte read from a pipe is gone from the kernel, exactly like one read from a terminal, so
//! the holder reads a pipe session's output itself (as it reads a PTY) and a server SIGKILLed at
//! any instant loses none of it: the log of a pipe session is then byte for byte what its
//! program wrote, and the ring's offsets are the log's. The two pipes become one stream, the
//! session's output; the server finds NDJSON lines in it (a stream-json agent's messages), so a
//! line of one pipe must never be cut by bytes of the other. Hence the rule:
//!
//! - a stream publishes whole lines, each push one publish (the server sees a line whole or not
//!   at all);
//! - a line without its newline yet is published after [`PARTIAL_AFTER`] (a prompt, a progress
//!   dot), when it reaches [`LINE_MAX`], or at the stream's end; the line is then *open*, and the
//!   other stream's lines wait for it to end, at most [`OPEN_LINE_WAIT`] (after that they go
//!   after it, and that one mixed line is not read as JSON);
//! - a stream is read only while it has no whole line waiting for room and less than
//!   [`LINE_MAX`] unpublished: what the holder keeps is bounded, and a full ring stops the
//!   reading (the program blocks on its full pipe, as it does while no one reads a PTY).

use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use super::ring::SharedRing;

/// Longest line kept whole: a longer one is published in pieces (not read as JSON). Well
/// under the ring's least capacity, so a whole line always fits once the server has logged.
pub const LINE_MAX: usize = 1 << 20;
/// A line without its newline is published after waiting this long.
pub const PARTIAL_AFTER: Duration = Duration::from_millis(20);
/// Longest the other stream's lines wait for an open line to end.
pub const OPEN_LINE_WAIT: Duration = Duration::from_millis(1000);
/// Bytes read from a pipe per read(2).
const READ: usize = 64 * 1024;

/// One output pipe.
#[derive(Debug)]
struct Stream {
    /// Its read end; `None` after EOF.
    fd: Option<OwnedFd>,
    /// Read, not published yet.
    pending: Vec<u8>,
    /// `pending[..lines]` are whole lines.
    lines: usize,
    /// Since when `pending` has held a line without its newline.
    partial_since: Option<Instant>,
}

/// The program's output pipes (stdout, stderr).
#[derive(Debug)]
pub struct Streams {
    streams: [Stream; 2],
    /// What a read(2) lands in (one for both pipes); `pending` then grows only by what came.
    buf: Box<[u8]>,
    /// The stream whose last published line has no newline yet, and since when.
    open: Option<(usize, Instant)>,
}

impl Streams {
    /// Reads `stdout` and `stderr` (non-blocking read ends).
    pub fn new(stdout: OwnedFd, stderr: OwnedFd) -> Streams {
        let stream = |fd| Stream {
            fd: Some(fd),
            pending: Vec::new(),
            lines: 0,
            partial_since: None,
        };
        Streams {
            streams: [stream(stdout), stream(stderr)],
            buf: vec![0; READ].into_boxed_slice(),
            open: None,
        }
    }

    /// The pipes to poll for reading (index, fd): open ones with nothing whole waiting and room
    /// for more.
    pub fn to_read(&self) -> impl Iterator<Item = (usize, RawFd)> + '_ {
        self.streams.iter().enumerate().filter_map(|(i, s)| {
            let fd = s.fd.as_ref()?;
            (s.lines == 0 && s.pending.len() < LINE_MAX).then_some((i, fd.as_raw_fd()))
        })
    }

    /// Reads what pipe `i` has (one read). EOF closes it.
    pub fn read(&mut self, i: usize) -> io::Result<()> {
        let s = &mut self.streams[i];
        let Some(fd) = &s.fd else { return Ok(()) };
        let had = s.pending.len();
        let want = READ.min(LINE_MAX.saturating_sub(had)).max(1);
        let n = loop {
            match nix::unistd::read(fd, &mut self.buf[..want]) {
                Ok(0) => {
                    s.fd = None;
                    return Ok(());
                }
                Ok(n) => break n,
                Err(nix::errno::Errno::EINTR) => {}
                Err(nix::errno::Errno::EAGAIN) => return Ok(()),
                Err(e) => {
                    s.fd = None;
                    return Err(io::Error::from(e));
                }
            }
        };
        s.pending.extend_from_slice(&self.buf[..n]);
        if let Some(nl) = s.pending[had..].iter().rposition(|&b| b == b'\n') {
            // A new line without its newline starts now.
            s.lines = had + nl + 1;
            s.partial_since = None;
        }
        if s.pending.len() > s.lines && s.partial_since.is_none() {
            s.partial_since = Some(Instant::now());
        }
        Ok(())
    }

    /// Publishes what the rules allow into `ring`; true if anything was published.
    pub fn publish(&mut self, ring: &mut SharedRing, now: Instant) -> bool {
        let mut any = false;
        // Until nothing moves: a line ending on one stream lets the other's lines go.
        while self.publish_once(ring, now) {
            any = true;
        }
        any
    }

    /// One pass over the streams; true if anything was published.
    fn publish_once(&mut self, ring: &mut SharedRing, now: Instant) -> bool {
        let mut any = false;
        for i in 0..self.streams.len() {
            if let Some((j, since)) = self.open
                && j != i
                && now.duration_since(since) < OPEN_LINE_WAIT
                && self.streams[j].fd.is_some()
            {
                continue;
            }
            let s = &mut self.streams[i];
            let partial_due = s.pending.len() > s.lines
                && (s.fd.is_none()
                    || s.pending.len() >= LINE_MAX
                    || s.partial_since
                        .is_some_and(|t| now.duration_since(t) >= PARTIAL_AFTER));
            let free = ring.free();
            // Whole lines first, as many as fit; then, when due, as much of the line without
            // its newline as fits (the next pass of `publish`).
            let n = if s.lines > 0 {
                match s.lines <= free {
                    true => s.lines,
                    false => s.pending[..free]
                        .iter()
                        .rposition(|&b| b == b'\n')
                        .map_or(0, |nl| nl + 1),
                }
            } else if partial_due {
                s.pending.len().min(free)
            } else {
                0
            };
            if n == 0 {
                continue;
            }
            let ends_line = s.pending[n - 1] == b'\n';
            ring.push(&s.pending[..n]);
            s.pending.drain(..n);
            // A long line's room is given back once it is out (idle holders stay small).
            if s.pending.is_empty() && s.pending.capacity() > READ {
                s.pending = Vec::new();
                // glibc keeps freed heap memory for reuse; give the pages back.
                // SAFETY: malloc_trim only releases free memory of this process's heap.
                unsafe { libc::malloc_trim(0) };
            }
            s.lines = s.lines.saturating_sub(n);
            if s.lines == 0
                && let Some(nl) = s.pending.iter().rposition(|&b| b == b'\n')
            {
                s.lines = nl + 1;
            }
            s.partial_since = if s.pending.len() > s.lines {
                s.partial_since.or(Some(now))
            } else {
                None
            };
            // The merged stream is mid-line after a push without its newline; the other
            // stream's wait counts from when this line opened.
            self.open = match self.open {
                _ if ends_line => None,
                Some((j, since)) if j == i => Some((i, since)),
                _ => Some((i, now)),
            };
            any = true;
        }
        any
    }

    /// When [`publish`](Self::publish) has something to do without a new read: a line without
    /// its newline coming due, or an open line's wait running out.
    pub fn next_due(&self, now: Instant) -> Option<Duration> {
        let partial = self
            .streams
            .iter()
            .filter_map(|s| s.partial_since.map(|t| t + PARTIAL_AFTER));
        let open = self
            .open
            .filter(|(j, _)| {
                let mut others = self.streams.iter().enumerate().filter(|(i, _)| i != j);
                others.any(|(_, s)| !s.pending.is_empty())
            })
            .map(|(_, t)| t + OPEN_LINE_WAIT);
        // Only what is still ahead: what is due and still waiting, waits for room in the ring
        // (see `waiting`), not for time.
        partial
            .chain(open)
            .filter(|due| *due > now)
            .min()
            .map(|due| due - now)
    }

    /// Something read is not published yet.
    pub fn waiting(&self) -> bool {
        self.streams.iter().any(|s| !s.pending.is_empty())
    }

    /// Both pipes are at EOF and everything is published.
    pub fn done(&self) -> bool {
        self.streams
            .iter()
            .all(|s| s.fd.is_none() && s.pending.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// Two pipes (non-blocking read ends) and their write ends.
    fn pipes() -> (Streams, std::fs::File, std::fs::File) {
        let (out_r, out_w) = nix::unistd::pipe().unwrap();
        let (err_r, err_w) = nix::unistd::pipe().unwrap();
        crate::fd::set_nonblocking(&out_r).unwrap();
        crate::fd::set_nonblocking(&err_r).unwrap();
        (
            Streams::new(out_r, err_r),
            std::fs::File::from(out_w),
            std::fs::File::from(err_w),
        )
    }

    fn ring() -> (SharedRing, SharedRing) {
        let holder = SharedRing::create(super::super::ring::MIN_CAP, 0).unwrap();
        let server = SharedRing::open(holder.fd().try_clone().unwrap()).unwrap();
        (holder, server)
    }

    fn read_both(s: &mut Streams) {
        s.read(0).unwrap();
        s.read(1).unwrap();
    }

    /// What the ring holds from offset `from` to its end.
    fn published_from(server: &SharedRing, from: u64) -> Vec<u8> {
        let mut got = Vec::new();
        while from + (got.len() as u64) < server.end() {
            got.extend_from_slice(server.read(from + got.len() as u64, usize::MAX));
        }
        got
    }

    fn published(server: &SharedRing) -> String {
        String::from_utf8(published_from(server, 0)).unwrap()
    }

    #[test]
    fn lines_of_the_two_pipes_never_cut_each_other() {
        let (mut s, mut out, mut err) = pipes();
        let (mut ring, server) = ring();
        let t0 = Instant::now();
        out.write_all(b"{\"a\":1}\n{\"b\":").unwrap();
        err.write_all(b"warning: x\n").unwrap();
        read_both(&mut s);
        assert!(s.publish(&mut ring, t0));
        // The whole lines went; the half JSON line waits for its end.
        assert_eq!(published(&server), "{\"a\":1}\nwarning: x\n");
        out.write_all(b"2}\n").unwrap();
        read_both(&mut s);
        assert!(s.publish(&mut ring, t0));
        assert_eq!(published(&server), "{\"a\":1}\nwarning: x\n{\"b\":2}\n");
        assert!(!s.waiting());
        assert_eq!(s.next_due(t0), None);
    }

    #[test]
    fn a_line_without_its_newline_goes_after_a_while_and_holds_the_other_back() {
        let (mut s, mut out, mut err) = pipes();
        let (mut ring, server) = ring();
        err.write_all(b"Password: ").unwrap();
        read_both(&mut s);
        let t0 = Instant::now();
        assert!(!s.publish(&mut ring, t0), "not due yet");
        assert!(s.next_due(t0).is_some_and(|d| d <= PARTIAL_AFTER));
        let t1 = t0 + PARTIAL_AFTER + Duration::from_millis(1);
        assert!(s.publish(&mut ring, t1));
        assert_eq!(published(&server), "Password: ");
        // The open line holds stdout's lines back...
        out.write_all(b"{\"n\":1}\n").unwrap();
        read_both(&mut s);
        assert!(!s.publish(&mut ring, t1));
        assert!(s.waiting());
        // ...until it ends,
        err.write_all(b"ok\n").unwrap();
        read_both(&mut s);
        assert!(s.publish(&mut ring, t1));
        assert_eq!(published(&server), "Password: ok\n{\"n\":1}\n");
        // or at most OPEN_LINE_WAIT.
        err.write_all(b"again: ").unwrap();
        read_both(&mut s);
        let t2 = t1 + PARTIAL_AFTER * 2;
        assert!(s.publish(&mut ring, t2));
        out.write_all(b"{\"n\":2}\n").unwrap();
        read_both(&mut s);
        assert!(!s.publish(&mut ring, t2));
        let t3 = t2 + OPEN_LINE_WAIT;
        assert!(s.next_due(t2).is_some_and(|d| d <= OPEN_LINE_WAIT));
        assert!(s.publish(&mut ring, t3));
        assert_eq!(
            published(&server),
            "Password: ok\n{\"n\":1}\nagain: {\"n\":2}\n"
        );
    }

    #[test]
    fn a_line_longer_than_the_room_goes_in_pieces_as_room_frees() {
        let (mut s, out, err) = pipes();
        let (mut ring, server) = ring();
        let cap = ring.cap() as u64;
        // Written by a thread: more than a pipe holds at once.
        let line = vec![b'y'; ring.cap() + 1000];
        let writer = std::thread::spawn(move || {
            let mut out = out;
            out.write_all(&line).unwrap();
        });
        let mut published = 0;
        let deadline = Instant::now() + Duration::from_secs(10);
        while published < cap + 1000 {
            assert!(Instant::now() < deadline, "stuck at {published}");
            for _ in 0..4 {
                read_both(&mut s);
            }
            // Never acknowledged past what a server has read: the ring bounds each piece.
            s.publish(&mut ring, Instant::now() + PARTIAL_AFTER);
            published = server.end();
            server.set_acked(published);
        }
        writer.join().unwrap();
        drop(err);
        assert_eq!(published, cap + 1000);
    }

    #[test]
    fn lines_wait_for_room_and_the_end_publishes_the_rest() {
        let (mut s, mut out, err) = pipes();
        let (mut ring, server) = ring();
        let cap = ring.cap();
        let t0 = Instant::now();
        // A line that fills all but 10 bytes, logged by nobody yet.
        let mut big = vec![b'x'; cap - 11];
        big.push(b'\n');
        ring.push(&big);
        out.write_all(b"0123456789abc\n").unwrap();
        s.read(0).unwrap();
        assert!(!s.publish(&mut ring, t0), "14 bytes do not fit in 10");
        assert!(s.waiting());
        assert_eq!(
            s.to_read().count(),
            1,
            "stdout is not read while its line waits"
        );
        server.set_acked(cap as u64 - 10);
        assert!(s.publish(&mut ring, t0));
        // The end: a last line without its newline goes at once, then both are done.
        out.write_all(b"tail").unwrap();
        drop((out, err));
        for _ in 0..2 {
            read_both(&mut s);
        }
        assert!(s.publish(&mut ring, t0));
        assert!(s.done());
        assert_eq!(
            published_from(&server, cap as u64 - 10),
            b"0123456789abc\ntail"
        );
    }
}
