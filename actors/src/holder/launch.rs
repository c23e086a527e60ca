//! Launch: how a server starts a session's holder and attaches to one (its first, or one a
//! previous server started). Blocking calls (a spawn, a handshake on a local socket): callers on
//! tokio run them with `spawn_blocking`.
//!
//! One holder is kept *warm*: started ahead, waiting for its spec on stdin, so a spawn does not
//! wait for the holder's own exec and start-up (≈ 1.2 ms on the bench VM); each launch takes it
//! and starts the next. A warm holder belongs to no session (no socket, no environment); it
//! exits when the server's end of its stdin closes (the server stops or dies), and the server's
//! reaper collects it.

use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use parking_lot::Mutex;

use nix::sys::socket::MsgFlags;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::wire::{self, Exit, FromHolder, ToHolder, VERSION};
use crate::process::leader::{self, ChildIo};
use crate::process::reaper;
use crate::spec::Size;

/// How long a new holder may take to start its program and answer.
const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a holder may take to answer `Hello`.
const WELCOME_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a launch waits for a holder its session had to finish leaving (see [`launch`]).
const LEAVE_TIMEOUT: Duration = Duration::from_secs(2);

/// Where a server's holders live and which binary runs them.
#[derive(Debug, Clone)]
pub struct Holders {
    /// The holder's command: `corral-holder` next to the server's binary when it is there (a
    /// small binary), else `<the server's binary> holder`.
    pub command: Vec<String>,
    /// The directory of their sockets and logs (inside the 0700 data dir).
    pub dir: PathBuf,
    /// The holder started ahead for the next launch, if any.
    warm: Arc<Mutex<Option<Warm>>>,
    /// Set while one is being started ahead.
    warming: Arc<AtomicBool>,
}

/// A started holder waiting for its spec.
#[derive(Debug)]
struct Warm {
    /// Its stdin's write end (the spec goes there; closing it ends the holder).
    stdin: OwnedFd,
    /// Its stdout's read end (its `Ready` comes there).
    stdout: OwnedFd,
}

impl Warm {
    /// Starts a holder (its own session and group: setsid, so the server's signals never reach
    /// it; no environment: it needs none, the program gets exactly the session's; default
    /// signal dispositions; only fds 0–2, stderr /dev/null until its spec names its log).
    fn start(command: &[String]) -> io::Result<Warm> {
        let (stdin_r, stdin_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
        let (stdout_r, stdout_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
        let null = std::fs::OpenOptions::new().write(true).open("/dev/null")?;
        let holder = leader::spawn_leader(
            command,
            &[],
            None,
            ChildIo::Fds([stdin_r.as_raw_fd(), stdout_w.as_raw_fd(), null.as_raw_fd()]),
        )?;
        // While this server lives it is the holder's parent: its reaper collects the holder
        // when it exits (a session learns of that through the socket, not the exit status).
        reaper::disown(holder);
        Ok(Warm {
            stdin: stdin_w,
            stdout: stdout_r,
        })
    }
}

/// Longest path a Unix socket may have (`sun_path` is 108 bytes, with its NUL).
const MAX_SOCKET_PATH: usize = 107;

impl Holders {
    /// Creates the directory (0700) and returns the settings; `exe` is the server's binary.
    pub fn new(exe: PathBuf, dir: PathBuf) -> io::Result<Holders> {
        use std::os::unix::fs::DirBuilderExt;
        // A Unix socket's path has at most 107 bytes (`sun_path`): a longer data dir would
        // start a server on which every spawn fails ("File name too long").
        let longest = dir.join(format!("{}.sock", Uuid::nil()));
        if longest.as_os_str().len() > MAX_SOCKET_PATH {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "the data dir's path is too long for its holders' sockets ({} bytes; a socket path has at most {MAX_SOCKET_PATH}, and `holders/<id>.sock` takes {}): use a shorter --data-dir",
                    dir.parent().map_or(0, |p| p.as_os_str().len()),
                    longest.as_os_str().len() - dir.parent().map_or(0, |p| p.as_os_str().len()),
                ),
            ));
        }
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)?;
        let small = exe.with_file_name("corral-holder");
        let command = if small.is_file() {
            vec![small.to_string_lossy().into_owned()]
        } else {
            vec![exe.to_string_lossy().into_owned(), "holder".into()]
        };
        Ok(Holders {
            command,
            dir,
            warm: Arc::default(),
            warming: Arc::default(),
        })
    }

    /// Starts the next launch's holder ahead, unless one waits already (blocking: a spawn).
    /// Called once a spawn is answered, so it is off every spawn's path.
    pub fn prewarm(&self) {
        // One at a time: many sessions answered at once (a burst of spawns) must not start a
        // holder each, only for all but one to end at once.
        if self.warm.lock().is_some() || self.warming.swap(true, Ordering::AcqRel) {
            return;
        }
        match Warm::start(&self.command) {
            Ok(w) => {
                let mut warm = self.warm.lock();
                if warm.is_none() {
                    *warm = Some(w);
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not start a holder ahead; the next spawn starts its own")
            }
        }
        self.warming.store(false, Ordering::Release);
    }

    /// The socket of session `id`'s holder.
    pub fn socket(&self, id: Uuid) -> PathBuf {
        self.dir.join(format!("{id}.sock"))
    }

    /// The sessions whose holders have a socket in the directory (live or not).
    pub fn sockets(&self) -> Vec<Uuid> {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) => {
                tracing::error!(dir = %self.dir.display(), error = %e, "could not list the holders");
                return Vec::new();
            }
        };
        entries
            .flatten()
            .filter_map(|e| {
                let name = e.file_name();
                let id = name.to_str()?.strip_suffix(".sock")?;
                Uuid::parse_str(id).ok()
            })
            .collect()
    }

    /// The holders that answer on their sockets, each with its pid (`SO_PEERCRED`): programs
    /// running now (a socket a dead holder left answers nothing). Blocking: connects to each.
    pub fn answering(&self) -> Vec<(Uuid, i32)> {
        self.sockets()
            .into_iter()
            .filter_map(|id| {
                let conn = super::wire::connect(&self.socket(id)).ok()?;
                Some((id, super::wire::peer_pid(&conn).ok()?))
            })
            .collect()
    }

    /// Removes what a dead holder of session `id` left (its socket and log).
    pub fn forget(&self, id: Uuid) {
        for path in [self.socket(id), self.log(id)] {
            if let Err(e) = std::fs::remove_file(&path)
                && e.kind() != io::ErrorKind::NotFound
            {
                tracing::warn!(path = %path.display(), error = %e, "could not remove a dead holder's file");
            }
        }
    }

    /// [`Self::forget`] from async code: the files are removed on a blocking thread.
    pub async fn forget_async(&self, id: Uuid) {
        let holders = self.clone();
        if let Err(e) = tokio::task::spawn_blocking(move || holders.forget(id)).await {
            tracing::error!(session = %id, error = %e, "removing a dead holder's files panicked");
        }
    }

    fn log(&self, id: Uuid) -> PathBuf {
        self.dir.join(format!("{id}.log"))
    }
}

/// What a holder is told on stdin: the program, and where the holder lives.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HolderSpec {
    /// Protocol version.
    pub v: u32,
    /// What it runs.
    #[serde(flatten)]
    pub program: Program,
    /// Where to listen.
    pub socket: PathBuf,
    /// Where its stderr goes (removed at release when empty).
    pub log: PathBuf,
}

/// A holder's one-line answer on stdout.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Ready {
    /// Started.
    pub ok: bool,
    /// The program's pid.
    pub pid: i32,
    /// Why not.
    pub error: Option<String>,
}

/// A holder attached to this server.
#[derive(Debug)]
pub struct Attached {
    /// The holder's pid.
    pub holder: i32,
    /// The program's pid and start time.
    pub pid: i32,
    /// Its start time.
    pub starttime: u64,
    /// Output offset of this incarnation's first byte.
    pub base: u64,
    /// The connection.
    pub socket: OwnedFd,
    /// The program's I/O.
    pub io: HeldIo,
    /// The program's exit, if it ended while no server was attached.
    pub exited: Option<Exit>,
    /// Output `[from, to)` asked for but held nowhere any more: the server's log lost it (storage
    /// damage) after the holder that had it was gone. The output starts at `to`.
    pub lost: Option<(u64, u64)>,
}

/// What a holder runs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Program {
    /// The program.
    pub argv: Vec<String>,
    /// Its whole environment.
    pub env: Vec<(String, String)>,
    /// Its working directory.
    pub cwd: Option<PathBuf>,
    /// The terminal's size.
    pub size: Size,
    /// Output offset of its first byte.
    pub base: u64,
    /// Capacity of the shared ring (the output held while not yet logged).
    pub ring: usize,
    /// On stdin/stdout/stderr pipes instead of a terminal.
    #[serde(default)]
    pub pipes: bool,
}

/// A held program's I/O, as its holder passed it.
#[derive(Debug)]
pub enum HeldIo {
    /// Output in the holder's ring: a terminal's, or a pipe session's stdout and stderr.
    Ring {
        /// The PTY master (input, resize), or a pipe session's stdin.
        input: OwnedFd,
        /// `input` is a terminal.
        terminal: bool,
        /// The output not yet logged, from the offset asked on.
        ring: super::ring::SharedRing,
        /// Readable when the holder published more output.
        wake: OwnedFd,
        /// The io_uring to read the terminal through (the holder then does not read it);
        /// `None` when the holder reads it (an older holder, or no io_uring here).
        reads: Option<super::uring::ReadRing>,
    },
    /// A pipe session under a protocol v1 holder: the server reads the pipes itself.
    Pipes {
        /// stdin's write end.
        stdin: OwnedFd,
        /// stdout's read end.
        stdout: OwnedFd,
        /// stderr's read end.
        stderr: OwnedFd,
    },
}

/// Starts a holder for session `id` running `program`, and attaches.
///
/// A holder the session had before (a restart) may still be leaving: it was released, and it
/// removes its files as it goes, its socket last. The new holder listens at the same path, so
/// the launch first waits (up to [`LEAVE_TIMEOUT`]) for that path to be free: otherwise the old
/// holder could remove the new one's socket, and the attach fail, or worse, succeed and leave a
/// session no later server could find (its holder would end it, unreachable).
pub fn launch(holders: &Holders, id: Uuid, program: Program) -> io::Result<Attached> {
    let base = program.base;
    wait_gone(&holders.socket(id), LEAVE_TIMEOUT);
    let spec = HolderSpec {
        v: VERSION,
        program,
        socket: holders.socket(id),
        log: holders.log(id),
    };
    let mut line = serde_json::to_vec(&spec).map_err(io::Error::other)?;
    line.push(b'\n');
    let warm = holders.warm.lock().take();
    let ready = match warm.map(|w| hand_over(w, &line)) {
        Some(Ok(ready)) => ready,
        // The holder started ahead is gone (killed, say) and never got the spec: a fresh one.
        Some(Err(Handover::Spec(e))) => {
            tracing::warn!(error = %e, "the holder started ahead is gone; starting one");
            hand_over(Warm::start(&holders.command)?, &line)?
        }
        Some(Err(e)) => return Err(e.into()),
        None => hand_over(Warm::start(&holders.command)?, &line)?,
    };
    if !ready.ok {
        // It could not start the program and leaves: what it made (its socket, its log, whose
        // only line is the error said here) goes, or every failed spawn left two files.
        holders.forget(id);
        return Err(io::Error::other(
            ready.error.unwrap_or_else(|| "holder failed".into()),
        ));
    }
    attach(&holders.socket(id), base)
}

/// Waits until nothing is at `path`, up to `timeout`; then the new holder's `listen` replaces
/// what is left (a holder that never finished leaving). Blocking: a launch runs on a blocking
/// thread.
fn wait_gone(path: &Path, timeout: Duration) {
    let deadline = std::time::Instant::now() + timeout;
    while std::fs::symlink_metadata(path).is_ok() {
        if std::time::Instant::now() >= deadline {
            tracing::warn!(path = %path.display(), "the session's last holder did not finish leaving; replacing its socket");
            return;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Gives `holder` its spec (one JSON line) and reads its answer.
fn hand_over(holder: Warm, spec: &[u8]) -> Result<Ready, Handover> {
    std::fs::File::from(holder.stdin)
        .write_all(spec)
        .map_err(Handover::Spec)?;
    let answer = read_with_timeout(holder.stdout, READY_TIMEOUT)
        .map_err(|e| Handover::Answer(io::Error::new(e.kind(), format!("the holder: {e}"))))?;
    serde_json::from_slice(&answer)
        .map_err(|e| Handover::Answer(io::Error::other(format!("holder answered nonsense: {e}"))))
}

/// Why a hand-over failed: the spec could not be written (the holder never got it), or the
/// answer did not come.
#[derive(Debug)]
enum Handover {
    Spec(io::Error),
    Answer(io::Error),
}

impl From<Handover> for io::Error {
    fn from(h: Handover) -> io::Error {
        match h {
            Handover::Spec(e) | Handover::Answer(e) => e,
        }
    }
}

/// Attaches to the holder listening at `socket`, asking for the output from offset `from`.
pub fn attach(socket: &Path, from: u64) -> io::Result<Attached> {
    let conn = wire::connect(socket)?;
    let holder = wire::peer_pid(&conn)?;
    // Read the terminal ourselves where we can (`super::uring`).
    let read = super::uring::supported();
    wire::send(
        conn.as_fd(),
        &ToHolder::Hello {
            v: VERSION,
            from,
            read,
        },
        &[],
    )?;
    let deadline = std::time::Instant::now() + WELCOME_TIMEOUT;
    let mut spoken = VERSION;
    let mut from = from;
    let mut lost = None;
    let (msg, mut fds) = loop {
        wait_readable(
            &conn,
            deadline.saturating_duration_since(std::time::Instant::now()),
        )?;
        let got = wire::recv::<FromHolder>(&conn, MsgFlags::MSG_DONTWAIT)?
            .ok_or_else(|| io::Error::other("holder hung up before answering"))?;
        match got.0 {
            // An exit reported before our Hello was read is in the Welcome too.
            FromHolder::Exited(_) => {}
            // A holder an older server started: say it again in its version.
            FromHolder::Refused { v, .. } if v < spoken && v >= 1 => {
                spoken = v;
                wire::send(conn.as_fd(), &ToHolder::Hello { v, from, read }, &[])?;
            }
            // Bytes before what it holds are gone from everywhere: take what is held, once,
            // and say what was lost (never forward past what it has).
            FromHolder::Refused {
                held: Some((first, end)),
                ..
            } if lost.is_none() && from < first && first <= end => {
                lost = Some((from, first));
                from = first;
                wire::send(
                    conn.as_fd(),
                    &ToHolder::Hello {
                        v: spoken,
                        from,
                        read,
                    },
                    &[],
                )?;
            }
            _ => break got,
        }
    };
    match msg {
        FromHolder::Welcome {
            v,
            pid,
            starttime,
            base,
            exited,
            pipes,
            reads,
            ..
        } if v == spoken && fds.len() == 3 + usize::from(reads) => {
            // The fourth: the pages of the io_uring this server reads the terminal through.
            let reads = match reads {
                // invariant: four fds checked just above.
                true => match super::uring::ReadRing::open(fds.pop().expect("four fds")) {
                    Ok(ring) => Some(ring),
                    Err(e) => {
                        // The holder waits for this server's process to end before it reads
                        // again: reading through the holder's ring instead is not possible.
                        return Err(io::Error::other(format!("io_uring for the terminal: {e}")));
                    }
                },
                false => None,
            };
            // invariant (the three pops): three fds checked just above.
            let third = fds.pop().expect("three fds");
            let second = fds.pop().expect("three fds");
            let first = fds.pop().expect("three fds");
            let io = if pipes && v == 1 {
                HeldIo::Pipes {
                    stdin: first,
                    stdout: second,
                    stderr: third,
                }
            } else {
                HeldIo::Ring {
                    input: first,
                    terminal: !pipes,
                    ring: super::ring::SharedRing::open(second)?,
                    wake: third,
                    reads,
                }
            };
            Ok(Attached {
                holder,
                pid,
                starttime,
                base,
                socket: conn,
                io,
                exited,
                lost,
            })
        }
        FromHolder::Refused { reason, .. } => Err(io::Error::other(format!(
            "holder refused to attach: {reason}"
        ))),
        other => Err(io::Error::other(format!(
            "unexpected answer from the holder: {other:?} with {} fds",
            fds.len()
        ))),
    }
}

/// Ends the session of the holder listening at `socket` without attaching to it: it kills
/// what is left of the program's group, reaps it, removes its files and exits (`Release`).
/// Waits up to `timeout` for the holder to hang up. For a held session no server can take on
/// (boot reconciliation could not restore its record): a holder never outlives its session.
pub fn release(socket: &Path, timeout: Duration) -> io::Result<()> {
    let conn = wire::connect(socket)?;
    wire::send(conn.as_fd(), &ToHolder::Release, &[])?;
    let deadline = std::time::Instant::now() + timeout;
    loop {
        wait_readable(
            &conn,
            deadline.saturating_duration_since(std::time::Instant::now()),
        )?;
        // Anything it says before hanging up (an exit report) is of no use any more.
        match wire::recv::<FromHolder>(&conn, MsgFlags::MSG_DONTWAIT) {
            Ok(None) => return Ok(()),
            Ok(Some(_)) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
}

/// Reads `fd` to EOF, failing after `timeout` (a child's one-line answer on a pipe: the
/// holder's `Ready`, and the upgrade successor's `ready`).
pub fn read_with_timeout(fd: OwnedFd, timeout: Duration) -> io::Result<Vec<u8>> {
    let mut out = Vec::new();
    let mut file = std::fs::File::from(fd);
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("no answer within {timeout:?}"),
            ));
        }
        wait_readable(&file, left)?;
        let mut buf = [0u8; 4096];
        match file.read(&mut buf)? {
            0 => return Ok(out),
            n => out.extend_from_slice(&buf[..n]),
        }
    }
}

/// Waits until `fd` is readable (or hung up), at most `timeout`.
fn wait_readable(fd: &impl AsFd, timeout: Duration) -> io::Result<()> {
    let mut p = libc::pollfd {
        fd: fd.as_fd().as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    loop {
        // SAFETY: one valid pollfd.
        let rc = unsafe { libc::poll(&mut p, 1, timeout.as_millis() as libc::c_int) };
        match rc {
            0 => {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("no answer within {timeout:?}"),
                ));
            }
            n if n > 0 => return Ok(()),
            _ => {
                let e = io::Error::last_os_error();
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::process::ExitStatus;
    use std::os::fd::AsRawFd;

    #[test]
    fn a_launch_waits_for_the_last_holder_to_free_its_socket_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        std::fs::write(&path, b"").unwrap();
        // The session's last holder, leaving: its socket goes 100 ms from now.
        let leaving = {
            let path = path.clone();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(100));
                std::fs::remove_file(path).unwrap();
            })
        };
        let t = std::time::Instant::now();
        wait_gone(&path, Duration::from_secs(5));
        assert!(
            t.elapsed() >= Duration::from_millis(100),
            "{:?}",
            t.elapsed()
        );
        assert!(!path.exists());
        leaving.join().unwrap();
        // One that never leaves is given up on after the bound (the new holder replaces it).
        std::fs::write(&path, b"").unwrap();
        let t = std::time::Instant::now();
        wait_gone(&path, Duration::from_millis(50));
        let took = t.elapsed();
        assert!(
            took >= Duration::from_millis(50) && took < Duration::from_secs(2),
            "{took:?}"
        );
    }

    #[test]
    fn an_exit_before_the_welcome_and_a_v1_holder_are_understood() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("h.sock");
        let listener = wire::listen(&path).unwrap();
        let exit = Exit {
            status: ExitStatus::Code(0),
            at_ms: 1,
        };
        // A holder whose program ended between our connect and our Hello.
        let holder = std::thread::spawn(move || {
            let conn = wire::accept(&listener).unwrap().unwrap();
            wire::send(conn.as_fd(), &FromHolder::Exited(exit), &[]).unwrap();
            wait_readable(&conn, Duration::from_secs(5)).unwrap();
            let (hello, _) = wire::recv::<ToHolder>(&conn, MsgFlags::empty())
                .unwrap()
                .unwrap();
            assert_eq!(
                hello,
                ToHolder::Hello {
                    v: VERSION,
                    from: 7,
                    read: crate::holder::uring::supported(),
                }
            );
            // A holder of protocol v1 (started by an older server) refuses v2...
            let refused = FromHolder::Refused {
                v: 1,
                reason: "holder speaks protocol 1".into(),
                held: None,
            };
            wire::send(conn.as_fd(), &refused, &[]).unwrap();
            wait_readable(&conn, Duration::from_secs(5)).unwrap();
            let (hello, _) = wire::recv::<ToHolder>(&conn, MsgFlags::empty())
                .unwrap()
                .unwrap();
            // ...and is asked again in its own version: a v1 pipe session (its pipes passed).
            assert_eq!(
                hello,
                ToHolder::Hello {
                    v: 1,
                    from: 7,
                    read: crate::holder::uring::supported()
                }
            );
            let (r, w) = nix::unistd::pipe().unwrap();
            let welcome = FromHolder::Welcome {
                v: 1,
                holder: 1,
                pid: 2,
                starttime: 3,
                base: 0,
                end: 0,
                exited: Some(exit),
                pipes: true,
                reads: false,
            };
            let fds = [w.as_raw_fd(), r.as_raw_fd(), r.as_raw_fd()];
            wire::send(conn.as_fd(), &welcome, &fds).unwrap();
            conn
        });
        let attached = attach(&path, 7).unwrap();
        assert_eq!(attached.exited, Some(exit));
        assert!(matches!(attached.io, HeldIo::Pipes { .. }));
        drop(holder.join().unwrap());
    }
}
