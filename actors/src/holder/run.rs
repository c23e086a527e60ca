//! Run: the holder process itself (`corral holder`), one per session.
//!
//! It is the session's anchor while servers come and go: it owns the PTY master (or the pipes)
//! and is the parent (and the subreaper) of the session's program, so the program never sees
//! its server die — no SIGHUP, no closed terminal, no broken pipe — and its exit status is kept
//! until a server takes it. It reads the terminal straight into its [shared ring](super::ring)
//! (a pipe session's stdout and stderr through [`super::streams`], in whole lines), memory that
//! outlives any server process, so no byte is lost whatever instant a server is SIGKILLed at.
//! A server that can read a terminal itself does, into the same ring, through an io_uring
//! whose queues are in pages this holder made (`super::uring`); the holder then leaves the
//! terminal alone until that server's process is gone, and publishes the read it left
//! unpublished, if any.
//!
//! One thread, one `poll(2)` loop, no runtime: the listening socket, the server's connection,
//! the PTY master or the output pipes (while the ring has room), a signalfd for SIGCHLD and a
//! timerfd for handing logged pages back (no poll timeout while output flows); an
//! eventfd wakes the attached server after each batch of reads. SIGHUP, SIGINT, SIGTERM, SIGPIPE, SIGQUIT, SIGUSR1, SIGUSR2 and SIGALRM are ignored (a terminal's hangup
//! or a signal to the server's group must not end a session); it leaves only on `Release`.

use std::io::{self, BufRead, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::path::PathBuf;
use std::process::ExitCode;

use nix::sys::signal::{SigHandler, SigSet, Signal, signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::socket::MsgFlags;
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

use super::launch::{HolderSpec, Ready};
use super::ring::SharedRing;
use super::streams::Streams;
use super::timer::ReleaseTimer;
use super::uring::ReadPages;
use super::wire::{self, Exit, FromHolder, ToHolder, VERSION};
use crate::process::ExitStatus;
use crate::process::pidfd::PidFd;
use crate::process::procfs::ProcessIdentity;

/// Bytes read from the terminal per batch (a PTY read returns at most a few KiB).
const BATCH: usize = 256 * 1024;
/// While the ring is full, how often the holder looks whether the server logged more: soon at
/// first (a flood waiting for the persister), then rarely (a server that cannot log, a full
/// disk), so a stuck session costs no CPU to speak of.
const FULL_RECHECK_MS: libc::c_int = 2;
/// See [`FULL_RECHECK_MS`].
const FULL_RECHECK_SLOW_MS: libc::c_int = 100;
/// How long a full ring is rechecked at the fast rate.
const FULL_FAST_FOR: std::time::Duration = std::time::Duration::from_millis(200);
/// A pipe-mode program's output pipes are enlarged to this (the default pipe-max-size).
const PIPE_BYTES: libc::c_int = 1 << 20;
/// How often a holder with no server attached checks that its socket is still in place.
const ORPHAN_CHECK_MS: libc::c_int = 5000;
/// Logged output's pages are handed back at most this often (`SharedRing::release_logged`):
/// a page released is allocated again when the ring comes round to it, so in a flood this
/// bounds that cost to one ring's worth of page faults a second.
const RELEASE_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// The entry point of `corral holder`: reads the [`HolderSpec`] on stdin, answers [`Ready`] on
/// stdout, then serves until released.
pub fn main() -> ExitCode {
    let spec = match read_spec() {
        Ok(spec) => spec,
        Err(e) => return fail(&format!("bad holder spec: {e}")),
    };
    // Its own log becomes its stderr (a holder is started ahead, before its session is known).
    if let Err(e) = log_to(&spec.log) {
        return fail(&format!("opening its log {}: {e}", spec.log.display()));
    }
    let mut holder = match Holder::start(&spec) {
        Ok(h) => h,
        Err(e) => return fail(&e.to_string()),
    };
    let ready = Ready {
        ok: true,
        pid: holder.pid,
        error: None,
    };
    if let Err(e) = answer(&ready) {
        // The server went away before it heard of us: nobody will ever attach; end the session.
        eprintln!("corral holder: could not answer the server ({e}); ending the session");
        holder.release();
        return ExitCode::FAILURE;
    }
    holder.serve();
    ExitCode::SUCCESS
}

/// Makes `path` (created 0600, appended to) this process's stderr.
fn log_to(path: &std::path::Path) -> io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let log = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .open(path)?;
    nix::unistd::dup2_stderr(&log)?;
    Ok(())
}

fn read_spec() -> io::Result<HolderSpec> {
    let mut line = String::new();
    io::stdin().lock().read_line(&mut line)?;
    serde_json::from_str(&line).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

fn answer(ready: &Ready) -> io::Result<()> {
    let mut out = io::stdout().lock();
    serde_json::to_writer(&mut out, ready).map_err(io::Error::other)?;
    out.write_all(b"\n")?;
    out.flush()?;
    // stdin and stdout are the server's pipes: close them so it sees EOF.
    for fd in [0, 1] {
        // SAFETY: fds 0 and 1 are ours (the server's pipes) and nothing in this process uses
        // them after this point; /dev/null takes their numbers so they are never reused.
        unsafe {
            let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
            if null >= 0 {
                libc::dup2(null, fd);
                libc::close(null);
            }
        }
    }
    Ok(())
}

fn fail(why: &str) -> ExitCode {
    eprintln!("corral holder: {why}");
    if let Err(e) = answer(&Ready {
        ok: false,
        pid: 0,
        error: Some(why.to_string()),
    }) {
        eprintln!("corral holder: could not report the failure: {e}");
    }
    ExitCode::FAILURE
}

/// The holder's state.
struct Holder {
    /// The session's main process.
    pid: i32,
    /// Its start time.
    starttime: u64,
    /// Its exit, once reaped.
    exited: Option<Exit>,
    /// The PTY master; `None` after EIO (the terminal is closed on the program's side), and
    /// for a pipe-mode program.
    master: Option<OwnedFd>,
    /// A pipe-mode program's stdin write end (kept open: the program never sees its stdin
    /// close while no server is attached; each server gets a copy to write to) and its output
    /// pipes, read here like a terminal.
    stdin: Option<OwnedFd>,
    streams: Option<Streams>,
    /// The listening socket, its path, and the inode it was bound as.
    listener: OwnedFd,
    socket: PathBuf,
    socket_ino: u64,
    /// The attached server, if any, and whether it said Hello (only then is it told of
    /// an exit: before, the Welcome carries it).
    conn: Option<OwnedFd>,
    greeted: bool,
    /// The output not logged yet.
    ring: SharedRing,
    /// Written after each batch of reads: wakes the attached server's reader.
    wake: OwnedFd,
    /// Its own stderr file.
    log_path: PathBuf,
    /// SIGCHLD.
    signals: SignalFd,
    /// Since when the ring has been full (the recheck slows down after a while).
    full_since: Option<std::time::Instant>,
    /// When it last looked whether its socket is still its own (while no server is attached).
    orphan_checked: std::time::Instant,
    /// When logged output's pages were last handed back; `None` once that failed (said once,
    /// not every second: the ring then simply stays resident, as it did before releasing).
    last_release: Option<std::time::Instant>,
    /// Wakes the loop when the next release comes due. A timer of its own, armed at most once
    /// per [`RELEASE_EVERY`], rather than a `poll(2)` timeout: a poll with a timeout arms and
    /// cancels a high-resolution timer on every wait, and in a flood the holder waits for the
    /// terminal thousands of times a second (in a VM each arm is a trap to the hypervisor, on
    /// the reading path; `session/bulk.rs` measured a third of a read loop's rate).
    release_timer: ReleaseTimer,
    released: bool,
    /// The server that reads the terminal itself (its `Welcome` carried `reads`), until
    /// its process is gone — not only its connection: a server that detached may still be in
    /// a read. Meanwhile nobody else reads the terminal, this holder included.
    reader: Option<Reader>,
    /// A `Hello` that came while `reader` was still there, answered once it is gone.
    deferred: Option<(u32, u64, bool)>,
}

/// A server reading the terminal itself, through an io_uring whose queues are in pages of this
/// holder's (`super::uring`).
struct Reader {
    /// The pages its io_uring's queues live in (its last completion outlives the server).
    reads: ReadPages,
    /// The server's process (readable once it has exited).
    server: PidFd,
}

impl Holder {
    /// Becomes a holder: signals, subreaper, ring, socket, then the program on a new PTY.
    fn start(spec: &HolderSpec) -> io::Result<Holder> {
        if spec.v != VERSION {
            return Err(io::Error::other(format!(
                "holder speaks protocol {VERSION}, the server {}",
                spec.v
            )));
        }
        // And the signals whose default is to end a process that `pkill -USR1 corral` (aimed
        // at a server, matching `corral-holder` too) would send: a holder ends only on Release.
        // (Its program gets default dispositions: the spawn resets every signal.)
        for sig in [
            Signal::SIGHUP,
            Signal::SIGINT,
            Signal::SIGTERM,
            Signal::SIGPIPE,
            Signal::SIGQUIT,
            Signal::SIGUSR1,
            Signal::SIGUSR2,
            Signal::SIGALRM,
        ] {
            // SAFETY: SIG_IGN installs no handler code; nothing else in this process has
            // installed one.
            unsafe { signal(sig, SigHandler::SigIgn) }.map_err(io::Error::from)?;
        }
        let mut chld = SigSet::empty();
        chld.add(Signal::SIGCHLD);
        chld.thread_block().map_err(io::Error::from)?;
        let signals = SignalFd::with_flags(&chld, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)
            .map_err(io::Error::from)?;
        // The program's orphans reparent to us, not to the server (and are reaped here).
        // SAFETY: prctl(PR_SET_CHILD_SUBREAPER, 1) takes no pointers.
        if unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) } != 0 {
            return Err(io::Error::last_os_error());
        }
        let ring = SharedRing::create(spec.program.ring, spec.program.base)?;
        // SAFETY: eventfd returns a new fd or -1.
        let raw = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a fresh descriptor owned by nobody else.
        let wake = unsafe { std::os::fd::FromRawFd::from_raw_fd(raw) };
        let listener = wire::listen(&spec.socket)?;
        let socket_ino = {
            use std::os::unix::fs::MetadataExt;
            std::fs::metadata(&spec.socket)?.ino()
        };
        let (pid, master, stdin, streams) = if spec.program.pipes {
            let (pid, [stdin, stdout, stderr]) = crate::pipe::open(
                &spec.program.argv,
                spec.program.cwd.as_deref(),
                &spec.program.env,
            )?;
            for out in [&stdout, &stderr] {
                // As much as the kernel allows waits in the pipe while the ring is full.
                // SAFETY: F_SETPIPE_SZ on our own pipe; a refusal keeps the default 64 KiB.
                unsafe { libc::fcntl(out.as_raw_fd(), libc::F_SETPIPE_SZ, PIPE_BYTES) };
                crate::fd::set_nonblocking(out)?;
            }
            (pid, None, Some(stdin), Some(Streams::new(stdout, stderr)))
        } else {
            let (pid, master) = crate::pty::open(
                &spec.program.argv,
                spec.program.cwd.as_deref(),
                &spec.program.env,
                spec.program.size,
            )?;
            let raw = master
                .as_raw_fd()
                .ok_or_else(|| io::Error::other("pty master has no fd"))?;
            (pid, Some(crate::fd::dup_nonblocking(raw)?), None, None)
        };
        let starttime = ProcessIdentity::of(pid).map(|i| i.starttime).unwrap_or(0);
        Ok(Holder {
            pid,
            starttime,
            exited: None,
            master,
            stdin,
            streams,
            listener,
            socket: spec.socket.clone(),
            socket_ino,
            conn: None,
            greeted: false,
            ring,
            wake,
            log_path: spec.log.clone(),
            signals,
            full_since: None,
            orphan_checked: std::time::Instant::now(),
            last_release: Some(std::time::Instant::now()),
            release_timer: ReleaseTimer::new()?,
            released: false,
            reader: None,
            deferred: None,
        })
    }

    /// The loop, until `Release`.
    fn serve(&mut self) {
        while !self.released {
            let mut fds: Vec<libc::pollfd> = Vec::with_capacity(4);
            let mut slot = |fd: RawFd| {
                fds.push(libc::pollfd {
                    fd,
                    events: libc::POLLIN,
                    revents: 0,
                });
                fds.len() - 1
            };
            let listener = slot(self.listener.as_raw_fd());
            let signals = slot(self.signals.as_fd().as_raw_fd());
            let conn = self.conn.as_ref().map(|c| slot(c.as_raw_fd()));
            let full = self.ring.write_slot().is_empty();
            // The terminal is read here unless a server reads it itself.
            let master = match &self.master {
                Some(m) if !full && self.reader.is_none() => Some(slot(m.as_raw_fd())),
                _ => None,
            };
            let reader = self
                .reader
                .as_ref()
                .map(|r| slot(r.server.as_fd().as_raw_fd()));
            // The poll slot of each output pipe read this turn.
            let mut pipes = [None; 2];
            if let Some(streams) = &self.streams
                && !full
            {
                for (i, fd) in streams.to_read() {
                    pipes[i] = Some(slot(fd));
                }
            }
            // Output still to be read, or read and not in the ring yet, waits for room.
            let reading = self.master.is_some() && self.reader.is_none()
                || self.streams.as_ref().is_some_and(|s| !s.done());
            let full = full && reading || self.streams.as_ref().is_some_and(Streams::waiting);
            // While full with a server attached, look again soon (it acknowledges through the
            // ring, without a message); with no server attached nothing can free the ring, and
            // every few seconds the socket is checked to be still ours.
            let full_since = match full {
                true => *self.full_since.get_or_insert_with(std::time::Instant::now),
                false => {
                    self.full_since = None;
                    std::time::Instant::now()
                }
            };
            let timeout = if self.conn.is_none() {
                ORPHAN_CHECK_MS
            } else if full {
                if full_since.elapsed() < FULL_FAST_FOR {
                    FULL_RECHECK_MS
                } else {
                    FULL_RECHECK_SLOW_MS
                }
            } else {
                -1
            };
            // A line without its newline comes due for publishing even if nothing else happens.
            let due = self
                .streams
                .as_ref()
                .and_then(|s| s.next_due(std::time::Instant::now()));
            // Output published since the last release: look again once it may be logged (the
            // server acknowledges through the ring, without a message), so an idle session's
            // ring holds no more than `KEEP_LOGGED`. Not while detached: nothing is logged then.
            if let Some(at) = self
                .last_release
                .filter(|_| self.conn.is_some() && self.reader.is_none() && self.ring.releasable())
            {
                self.release_timer
                    .arm(RELEASE_EVERY.saturating_sub(at.elapsed()));
            }
            let release_timer = self
                .release_timer
                .armed()
                .then(|| slot(self.release_timer.fd()));
            let timeout = match due {
                Some(due) => {
                    let ms = (due.as_millis() as libc::c_int).saturating_add(1);
                    if timeout < 0 { ms } else { timeout.min(ms) }
                }
                None => timeout,
            };
            // SAFETY: `fds` is a valid array of `fds.len()` pollfd structs for the call.
            let rc = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout) };
            if rc < 0 {
                let e = io::Error::last_os_error();
                if e.kind() != io::ErrorKind::Interrupted {
                    eprintln!("corral holder: poll: {e}");
                }
                continue;
            }
            // Looked at on a timeout and also by the clock: a program that keeps printing
            // wakes the holder all the time, and its poll would never time out.
            if self.conn.is_none() && self.orphan_check_due() && self.unreachable() {
                // Its data dir was removed (or the socket replaced): no server can ever attach
                // again, so the session ends here rather than leak.
                eprintln!(
                    "corral holder: {} is gone; ending the session",
                    self.socket.display()
                );
                self.release();
                continue;
            }
            let ready = |i: Option<usize>| i.is_some_and(|i| fds[i].revents != 0);
            if ready(Some(signals)) {
                self.reap();
            }
            if ready(reader) {
                self.reader_gone();
            }
            if ready(master) {
                self.read_terminal();
            }
            self.read_pipes(pipes.map(ready));
            if ready(conn) {
                self.server_said();
            }
            if ready(Some(listener)) {
                self.accept();
            }
            if ready(release_timer) {
                self.release_timer.fired();
            }
            if self
                .last_release
                .is_some_and(|at| at.elapsed() >= RELEASE_EVERY)
            {
                self.release_logged();
            }
        }
    }

    /// Hands logged output's memory back, if there is any to hand back — only while this holder
    /// writes the ring: a server that reads the terminal itself releases between its own reads
    /// (`SharedRing::release_logged`).
    fn release_logged(&mut self) {
        if self.last_release.is_none() || self.reader.is_some() || !self.ring.releasable() {
            return;
        }
        self.last_release = Some(std::time::Instant::now());
        if let Err(e) = self.ring.release_logged() {
            eprintln!("corral holder: cannot hand logged output's memory back ({e}); keeping it");
            self.last_release = None;
        }
    }

    /// The server that read the terminal itself has exited: its last read, if it completed and
    /// was not published, is published now (its bytes are in the ring already), and the
    /// terminal is this holder's to read again — or the next server's.
    fn reader_gone(&mut self) {
        let Some(reader) = self.reader.take() else {
            return;
        };
        // Part of the normal course (a SIGKILL between a read and its publish), not written to
        // the holder's log: a log that is not empty is kept for the user to read.
        for n in reader.reads.unpublished(self.ring.end()) {
            self.ring.publish(n);
        }
        if let Some((v, from, read)) = self.deferred.take() {
            self.hello(v, from, read);
        }
    }

    /// Whether, with no server attached, it is time to look whether the socket is still ours
    /// (every [`ORPHAN_CHECK_MS`]).
    fn orphan_check_due(&mut self) -> bool {
        let every = std::time::Duration::from_millis(ORPHAN_CHECK_MS as u64);
        if self.orphan_checked.elapsed() < every {
            return false;
        }
        self.orphan_checked = std::time::Instant::now();
        true
    }

    /// Whether the socket path no longer names our socket.
    fn unreachable(&self) -> bool {
        use std::os::unix::fs::MetadataExt;
        match std::fs::metadata(&self.socket) {
            Ok(m) => m.ino() != self.socket_ino,
            Err(e) => e.kind() == io::ErrorKind::NotFound,
        }
    }

    /// Reads what the terminal has, straight into the ring (up to a batch, or until the ring is
    /// full), publishing after each read; then one wake-up for the server.
    fn read_terminal(&mut self) {
        let Some(master) = &self.master else { return };
        let mut total = 0;
        let mut ended = false;
        while total < BATCH {
            let slot = self.ring.write_slot();
            if slot.is_empty() {
                break;
            }
            match nix::unistd::read(master, slot) {
                // Every slave fd is closed: the terminal's output is complete.
                Ok(0) | Err(nix::errno::Errno::EIO) => {
                    ended = true;
                    break;
                }
                Ok(n) => {
                    self.ring.publish(n);
                    total += n;
                }
                Err(nix::errno::Errno::EAGAIN) => break,
                Err(nix::errno::Errno::EINTR) => {}
                Err(e) => {
                    eprintln!("corral holder: reading the terminal: {e}");
                    ended = true;
                    break;
                }
            }
        }
        if ended {
            self.master = None;
            self.ring.close();
        }
        if ended || (total > 0 && !self.ring.server_polling()) {
            self.wake_server();
        }
    }

    /// Reads the output pipes that are ready, then publishes what the line rules allow (see
    /// [`Streams`]); called on every turn of the loop, since time and room alone can make
    /// something publishable. The ring closes once both pipes ended and all is published.
    fn read_pipes(&mut self, ready: [bool; 2]) {
        let Some(streams) = &mut self.streams else {
            return;
        };
        for i in (0..2).filter(|&i| ready[i]) {
            if let Err(e) = streams.read(i) {
                eprintln!("corral holder: reading the program's output pipe {i}: {e}");
            }
        }
        let published = streams.publish(&mut self.ring, std::time::Instant::now());
        let ended = streams.done() && !self.ring.closed();
        if ended {
            self.ring.close();
        }
        if ended || (published && !self.ring.server_polling()) {
            self.wake_server();
        }
    }

    fn wake_server(&self) {
        if self.conn.is_none() {
            return;
        }
        // An eventfd write fails only when the counter would overflow (it is drained by every
        // wake-up of the server, so never) or EAGAIN at that bound: the server is awake anyway.
        if let Err(e) = nix::unistd::write(&self.wake, &1u64.to_ne_bytes())
            && e != nix::errno::Errno::EAGAIN
        {
            eprintln!("corral holder: waking the server: {e}");
        }
    }

    /// Reaps every exited child: the main process's status is kept, orphans are just reaped.
    fn reap(&mut self) {
        while let Ok(Some(_)) = self.signals.read_signal() {}
        loop {
            match waitpid(None::<Pid>, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(_) => return,
                Ok(status) => {
                    if status.pid() == Some(Pid::from_raw(self.pid))
                        && let Some(status) = ExitStatus::from_wait_status(status)
                    {
                        let exit = Exit {
                            status,
                            at_ms: crate::persist::store::now_ms(),
                        };
                        self.exited = Some(exit);
                        if self.greeted {
                            self.tell(&FromHolder::Exited(exit), &[]);
                        }
                    }
                }
            }
        }
    }

    /// A new server connection replaces the old one (there is one server per data dir).
    fn accept(&mut self) {
        match wire::accept(&self.listener) {
            Ok(Some(conn)) => {
                self.conn = Some(conn);
                self.greeted = false;
                self.deferred = None;
            }
            Ok(None) => eprintln!("corral holder: refused a connection from another user"),
            Err(e) => eprintln!("corral holder: accept: {e}"),
        }
    }

    fn server_said(&mut self) {
        let Some(conn) = &self.conn else { return };
        match wire::recv::<ToHolder>(conn, MsgFlags::MSG_DONTWAIT) {
            Ok(Some((msg, _))) => self.handle(msg),
            // The server is gone (crashed, or upgraded): keep reading into the ring.
            Ok(None) => self.conn = None,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => {
                eprintln!("corral holder: bad message from the server: {e}");
                self.conn = None;
            }
        }
    }

    fn handle(&mut self, msg: ToHolder) {
        match msg {
            ToHolder::Hello { v, from, read } => self.hello(v, from, read),
            // Sent by servers of the version before, which read the terminal but left the
            // release to the holder: while such a server reads, the release is not ours.
            ToHolder::Logged => self.release_logged(),
            ToHolder::Release => self.release(),
        }
    }

    fn hello(&mut self, v: u32, from: u64, read: bool) {
        if self.reader.is_some() {
            // The last server may still be in a read of the terminal: this one is answered
            // once that process is gone (an upgrade's old server is leaving).
            self.deferred = Some((v, from, read));
            return;
        }
        self.greeted = true;
        // Version 1 differs only for pipe sessions (whose output it left in the pipes): a
        // terminal's holder speaks it too, so an older server can still take it back.
        if v != VERSION && !(v == 1 && self.streams.is_none()) {
            return self.refuse(format!("holder speaks protocol {VERSION}, not {v}"), None);
        }
        let held = (self.ring.held_from(), self.ring.end());
        if from < held.0 || from > held.1 {
            return self.refuse(
                format!(
                    "output from offset {from} is not held (held: {}..{})",
                    held.0, held.1
                ),
                Some(held),
            );
        }
        // Bytes from `from` on are this server's to log: none may be overwritten.
        self.ring.rewind_acked(from);
        // SCM_RIGHTS gives the server its own descriptors: the terminal (or stdin's pipe), the
        // ring, the eventfd. Without a terminal (already closed) the eventfd stands in, so the
        // server always gets three (it reads `closed` in the ring and never writes to it).
        let input = self.stdin.as_ref().or(self.master.as_ref());
        let mut fds = vec![
            input.unwrap_or(&self.wake).as_raw_fd(),
            self.ring.fd().as_raw_fd(),
            self.wake.as_raw_fd(),
        ];
        // A server that can read the terminal itself does, through an io_uring of ours (a
        // terminal still open; a pipe session's lines are merged here).
        let reader = match read && self.master.is_some() && !self.ring.closed() {
            true => self.reader_for_server(),
            false => None,
        };
        if let Some(reader) = &reader {
            fds.push(reader.reads.fd().as_raw_fd());
        }
        let welcome = FromHolder::Welcome {
            v,
            holder: std::process::id() as i32,
            pid: self.pid,
            starttime: self.starttime,
            base: self.ring.base(),
            end: self.ring.end(),
            exited: self.exited,
            pipes: self.streams.is_some(),
            reads: reader.is_some(),
        };
        if self.tell(&welcome, &fds) {
            self.reader = reader;
            self.wake_server();
        }
    }

    /// Pages for the attached server's io_uring to read the terminal through, and a pidfd on
    /// that server; `None` (said) when they cannot be made — the server then gets the output
    /// through the ring as this holder reads it.
    fn reader_for_server(&self) -> Option<Reader> {
        let conn = self.conn.as_ref()?;
        let made = || -> io::Result<Reader> {
            let server = PidFd::open(wire::peer_pid(conn)?)?;
            let reads = ReadPages::create()?;
            Ok(Reader { reads, server })
        };
        made()
            .inspect_err(|e| {
                eprintln!(
                    "corral holder: the server cannot read the terminal ({e}); reading it here"
                )
            })
            .ok()
    }

    fn refuse(&mut self, reason: String, held: Option<(u64, u64)>) {
        eprintln!("corral holder: refused: {reason}");
        self.tell(
            &FromHolder::Refused {
                v: VERSION,
                reason,
                held,
            },
            &[],
        );
    }

    /// Sends to the attached server; a failed send detaches it.
    fn tell(&mut self, msg: &FromHolder, fds: &[RawFd]) -> bool {
        let Some(conn) = &self.conn else { return false };
        match wire::send(conn.as_fd(), msg, fds) {
            Ok(()) => true,
            Err(e) => {
                eprintln!("corral holder: server unreachable ({e}); detached");
                self.conn = None;
                false
            }
        }
    }

    /// The end: the program's group is killed if it still runs (a holder never outlives its
    /// session, nor leaves it behind), the main process reaped, the files removed.
    fn release(&mut self) {
        self.released = true;
        if self.exited.is_none() {
            if let Err(e) = nix::sys::signal::killpg(Pid::from_raw(self.pid), Signal::SIGKILL)
                && e != nix::errno::Errno::ESRCH
            {
                eprintln!("corral holder: killing the session's group: {e}");
            }
            if let Err(e) = waitpid(Pid::from_raw(self.pid), None) {
                eprintln!("corral holder: reaping the session's process: {e}");
            }
        }
        // Orphans already gone or being killed by the server's sweep: reap what is there.
        while let Ok(s) = waitpid(None::<Pid>, Some(WaitPidFlag::WNOHANG)) {
            if s == WaitStatus::StillAlive {
                break;
            }
        }
        // Its log goes unless something was written to it (kept for the operator).
        if std::fs::metadata(&self.log_path).is_ok_and(|m| m.len() == 0)
            && let Err(e) = std::fs::remove_file(&self.log_path)
        {
            eprintln!("corral holder: removing its log: {e}");
        }
        // The socket last: its path free means this holder is done with both paths, which the
        // session's next holder (a restart) may reuse at once (`launch` waits for it).
        if let Err(e) = std::fs::remove_file(&self.socket)
            && e.kind() != io::ErrorKind::NotFound
        {
            eprintln!("corral holder: removing {}: {e}", self.socket.display());
        }
    }
}
