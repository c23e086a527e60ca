//! Run: the holder process itself (`corral holder`), one per PTY session.
//!
//! It is the session's anchor while servers come and go: it owns the PTY master and is the
//! parent (and the subreaper) of the session's program, so the program never sees its server
//! die — no SIGHUP, no closed terminal — and its exit status is kept until a server takes it.
//! It reads the terminal and writes every byte to its [spool](super::spool) before passing it
//! on through a pipe, so no byte is lost whatever instant a server is SIGKILLed at.
//!
//! One thread, one `poll(2)` loop, no runtime: the listening socket, the server's connection,
//! the PTY master (while the spool has room), the output pipe (while bytes wait for it) and a
//! signalfd for SIGCHLD. SIGHUP, SIGINT, SIGTERM and SIGPIPE are ignored (a terminal's hangup
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
use super::spool::Spool;
use super::wire::{self, Exit, FromHolder, ToHolder, VERSION};
use crate::process::ExitStatus;
use crate::process::procfs::ProcessIdentity;

/// Bytes read from the terminal at once.
const READ: usize = 64 * 1024;
/// How often a holder with no server attached checks that its socket is still in place.
const ORPHAN_CHECK_MS: libc::c_int = 5000;
/// The output pipe's capacity (the default pipe-max-size; a smaller pipe still works).
const PIPE_BYTES: libc::c_int = 1 << 20;

/// The entry point of `corral holder`: reads the [`HolderSpec`] on stdin, answers [`Ready`] on
/// stdout, then serves until released.
pub fn main() -> ExitCode {
    let spec = match read_spec() {
        Ok(spec) => spec,
        Err(e) => return fail(&format!("bad holder spec: {e}")),
    };
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
    /// The PTY master; `None` after EIO (the terminal is closed on the program's side).
    master: Option<OwnedFd>,
    /// The listening socket, its path, and the inode it was bound as.
    listener: OwnedFd,
    socket: PathBuf,
    socket_ino: u64,
    /// The attached server, if any.
    conn: Option<OwnedFd>,
    /// The write end of the output pipe to the attached server, and the offset it is at.
    pipe: Option<(OwnedFd, u64)>,
    spool: Spool,
    spool_path: PathBuf,
    /// Its own stderr file.
    log_path: PathBuf,
    /// SIGCHLD.
    signals: SignalFd,
    /// Bytes read but not yet in the spool (a failed spool write: retried, never dropped).
    pending: Vec<u8>,
    buf: Vec<u8>,
    released: bool,
}

impl Holder {
    /// Becomes a holder: signals, subreaper, spool, socket, then the program on a new PTY.
    fn start(spec: &HolderSpec) -> io::Result<Holder> {
        if spec.v != VERSION {
            return Err(io::Error::other(format!(
                "holder speaks protocol {VERSION}, the server {}",
                spec.v
            )));
        }
        for sig in [
            Signal::SIGHUP,
            Signal::SIGINT,
            Signal::SIGTERM,
            Signal::SIGPIPE,
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
        let spool = Spool::create(&spec.spool, spec.base)?;
        let listener = wire::listen(&spec.socket)?;
        let socket_ino = {
            use std::os::unix::fs::MetadataExt;
            std::fs::metadata(&spec.socket)?.ino()
        };
        let (pid, master) =
            crate::pty::open(&spec.argv, spec.cwd.as_deref(), &spec.env, spec.size)?;
        let starttime = ProcessIdentity::of(pid).map(|i| i.starttime).unwrap_or(0);
        let raw = master
            .as_raw_fd()
            .ok_or_else(|| io::Error::other("pty master has no fd"))?;
        let master = crate::fd::dup_nonblocking(raw)?;
        Ok(Holder {
            pid,
            starttime,
            exited: None,
            master: Some(master),
            listener,
            socket: spec.socket.clone(),
            socket_ino,
            conn: None,
            pipe: None,
            spool,
            spool_path: spec.spool.clone(),
            log_path: spec.log.clone(),
            signals,
            pending: Vec::new(),
            buf: vec![0u8; READ],
            released: false,
        })
    }

    /// The loop, until `Release`.
    fn serve(&mut self) {
        while !self.released {
            let mut fds: Vec<libc::pollfd> = Vec::with_capacity(5);
            let mut slot = |fd: RawFd, events: libc::c_short| {
                fds.push(libc::pollfd {
                    fd,
                    events,
                    revents: 0,
                });
                fds.len() - 1
            };
            let listener = slot(self.listener.as_raw_fd(), libc::POLLIN);
            let signals = slot(self.signals.as_fd().as_raw_fd(), libc::POLLIN);
            let conn = self
                .conn
                .as_ref()
                .map(|c| slot(c.as_raw_fd(), libc::POLLIN));
            let reading = self.pending.is_empty() && self.spool.has_room();
            let master = match &self.master {
                Some(m) if reading => Some(slot(m.as_raw_fd(), libc::POLLIN)),
                _ => None,
            };
            let pipe = match &self.pipe {
                Some((p, at)) if *at < self.spool.end() => Some(slot(p.as_raw_fd(), libc::POLLOUT)),
                _ => None,
            };
            // A failed spool write is retried every second; with no server attached, the
            // socket is checked every few seconds.
            let timeout = if !self.pending.is_empty() {
                1000
            } else if self.conn.is_none() {
                ORPHAN_CHECK_MS
            } else {
                -1
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
            if rc == 0 && self.conn.is_none() && self.unreachable() {
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
            if !self.pending.is_empty() {
                self.flush_pending();
            }
            if ready(Some(signals)) {
                self.reap();
            }
            if ready(master) {
                self.read_terminal();
            }
            if ready(pipe) {
                self.feed_pipe();
            }
            if ready(conn) {
                self.server_said();
            }
            if ready(Some(listener)) {
                self.accept();
            }
            self.close_pipe_at_end();
        }
    }

    /// Whether the socket path no longer names our socket.
    fn unreachable(&self) -> bool {
        use std::os::unix::fs::MetadataExt;
        match std::fs::metadata(&self.socket) {
            Ok(m) => m.ino() != self.socket_ino,
            Err(e) => e.kind() == io::ErrorKind::NotFound,
        }
    }

    /// Reads one chunk of terminal output into the spool, then passes it on.
    fn read_terminal(&mut self) {
        let Some(master) = &self.master else { return };
        match nix::unistd::read(master, &mut self.buf) {
            Ok(0) | Err(nix::errno::Errno::EIO) => {
                // Every slave fd is closed: the terminal's output is complete.
                self.master = None;
            }
            Ok(n) => {
                if let Err(e) = self.spool.append(&self.buf[..n]) {
                    eprintln!("corral holder: spool write failed ({e}); retrying, terminal paused");
                    self.pending.extend_from_slice(&self.buf[..n]);
                    return;
                }
                self.feed_pipe();
            }
            Err(nix::errno::Errno::EAGAIN) | Err(nix::errno::Errno::EINTR) => {}
            Err(e) => {
                eprintln!("corral holder: reading the terminal: {e}");
                self.master = None;
            }
        }
    }

    fn flush_pending(&mut self) {
        match self.spool.append(&self.pending) {
            Ok(()) => {
                self.pending.clear();
                self.feed_pipe();
            }
            Err(e) => eprintln!("corral holder: spool write still failing: {e}"),
        }
    }

    /// Passes spooled output to the server's pipe until it is full or caught up.
    fn feed_pipe(&mut self) {
        let Some((pipe, at)) = &mut self.pipe else {
            return;
        };
        while *at < self.spool.end() {
            let n = match self.spool.read_at(*at, &mut self.buf) {
                Ok(0) => return,
                Ok(n) => n,
                Err(e) => {
                    eprintln!("corral holder: reading the spool: {e}");
                    return;
                }
            };
            match nix::unistd::write(&*pipe, &self.buf[..n]) {
                Ok(w) => *at += w as u64,
                Err(nix::errno::Errno::EAGAIN) => return,
                Err(nix::errno::Errno::EINTR) => {}
                Err(_) => {
                    // The server closed its end (it died): it asks again with Hello.
                    self.pipe = None;
                    return;
                }
            }
        }
    }

    /// Once the terminal is closed and every byte is in the pipe, close the pipe: the server's
    /// reader sees EOF, as it would see EIO on the master.
    fn close_pipe_at_end(&mut self) {
        if self.master.is_none()
            && self.pending.is_empty()
            && self
                .pipe
                .as_ref()
                .is_some_and(|(_, at)| *at == self.spool.end())
        {
            self.pipe = None;
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
                        self.tell(&FromHolder::Exited(exit), &[]);
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
                self.pipe = None;
            }
            Ok(None) => eprintln!("corral holder: refused a connection from another user"),
            Err(e) => eprintln!("corral holder: accept: {e}"),
        }
    }

    fn server_said(&mut self) {
        let Some(conn) = &self.conn else { return };
        match wire::recv::<ToHolder>(conn, MsgFlags::MSG_DONTWAIT) {
            Ok(Some((msg, _))) => self.handle(msg),
            Ok(None) => {
                // The server is gone (crashed, or upgraded): keep draining into the spool.
                self.conn = None;
                self.pipe = None;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => {
                eprintln!("corral holder: bad message from the server: {e}");
                self.conn = None;
                self.pipe = None;
            }
        }
    }

    fn handle(&mut self, msg: ToHolder) {
        match msg {
            ToHolder::Hello { v, from } => self.hello(v, from),
            ToHolder::Ack { upto } => {
                let upto = upto.min(self.pipe.as_ref().map_or(upto, |(_, at)| *at));
                if let Err(e) = self.spool.ack(upto) {
                    eprintln!("corral holder: could not free acknowledged output: {e}");
                }
            }
            ToHolder::Release => self.release(),
        }
    }

    fn hello(&mut self, v: u32, from: u64) {
        if v != VERSION {
            return self.refuse(format!("holder speaks protocol {VERSION}, not {v}"));
        }
        if from < self.spool.held_from() || from > self.spool.end() {
            return self.refuse(format!(
                "output from offset {from} is not held (held: {}..{})",
                self.spool.held_from(),
                self.spool.end()
            ));
        }
        let pipe = match new_pipe() {
            Ok(p) => p,
            Err(e) => return self.refuse(format!("no pipe: {e}")),
        };
        let master = match self.master.as_ref().map(|m| m.try_clone()).transpose() {
            Ok(m) => m,
            Err(e) => return self.refuse(format!("cannot share the terminal: {e}")),
        };
        // Without a terminal (already closed) a closed pipe end stands in, so the server always
        // gets two descriptors.
        let (read, write) = pipe;
        let master_fd = master.as_ref().map_or(read.as_raw_fd(), |m| m.as_raw_fd());
        let welcome = FromHolder::Welcome {
            v: VERSION,
            holder: std::process::id() as i32,
            pid: self.pid,
            starttime: self.starttime,
            base: self.spool.base(),
            end: self.spool.end(),
            exited: self.exited,
        };
        if self.tell(&welcome, &[master_fd, read.as_raw_fd()]) {
            self.pipe = Some((write, from));
            self.feed_pipe();
        }
    }

    fn refuse(&mut self, reason: String) {
        eprintln!("corral holder: refused: {reason}");
        self.tell(&FromHolder::Refused { v: VERSION, reason }, &[]);
    }

    /// Sends to the attached server; a failed send detaches it.
    fn tell(&mut self, msg: &FromHolder, fds: &[RawFd]) -> bool {
        let Some(conn) = &self.conn else { return false };
        match wire::send(conn.as_fd(), msg, fds) {
            Ok(()) => true,
            Err(e) => {
                eprintln!("corral holder: server unreachable ({e}); detached");
                self.conn = None;
                self.pipe = None;
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
        for path in [&self.socket, &self.spool_path] {
            if let Err(e) = std::fs::remove_file(path)
                && e.kind() != io::ErrorKind::NotFound
            {
                eprintln!("corral holder: removing {}: {e}", path.display());
            }
        }
        // Its log goes too unless something was written to it (kept for the operator).
        if std::fs::metadata(&self.log_path).is_ok_and(|m| m.len() == 0)
            && let Err(e) = std::fs::remove_file(&self.log_path)
        {
            eprintln!("corral holder: removing its log: {e}");
        }
    }
}

/// A pipe for the output: the read end (blocking; the server makes its dup non-blocking) and
/// the write end (non-blocking: the loop never waits on a slow server), 1 MiB if allowed.
fn new_pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let (read, write) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(io::Error::from)?;
    crate::fd::set_nonblocking(&write)?;
    // SAFETY: F_SETPIPE_SZ on our own pipe; a refusal (above pipe-max-size) keeps the default.
    unsafe { libc::fcntl(write.as_raw_fd(), libc::F_SETPIPE_SZ, PIPE_BYTES) };
    Ok((read, write))
}
