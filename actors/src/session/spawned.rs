//! Spawned: a session's process just started (or attached under its holder), before its
//! readers and writer start — where its output comes from, its input, its terminal — so the
//! session actor sets up every kind (own PTY, pipes, held PTY, held pipes) the same way.

use std::sync::Arc;

use super::link::Link;
use crate::holder::ring::SharedRing;
use crate::holder::wire::Exit;
use crate::process::PidFd;
use crate::pty;
use crate::spec::Size;

/// A PTY master: portable-pty's when this server opened the PTY, a plain fd when a holder
/// passed it.
pub(super) enum Master {
    Own(Box<dyn portable_pty::MasterPty + Send>),
    Held(std::os::fd::OwnedFd),
}

impl Master {
    pub(super) fn resize(&self, size: Size) -> Result<(), String> {
        match self {
            Master::Own(m) => m.resize(pty::pty_size(size)).map_err(|e| e.to_string()),
            Master::Held(fd) => pty::resize_fd(fd, size).map_err(|e| e.to_string()),
        }
    }

    /// The terminal's size as the kernel has it (a held PTY's is what the last server set,
    /// not the spec's).
    pub(super) fn size(&self) -> Option<Size> {
        match self {
            Master::Own(m) => m.get_size().ok().map(|s| Size {
                rows: s.rows,
                cols: s.cols,
            }),
            Master::Held(fd) => pty::size_of(fd).ok(),
        }
        .filter(|s| s.rows > 0 && s.cols > 0)
    }
}

/// Registered descriptor.
pub(super) type Registered = tokio::io::unix::AsyncFd<std::os::fd::OwnedFd>;

/// Where a process's output comes from.
pub(super) enum Source {
    /// A terminal or pipe this server reads.
    Fd(Registered),
    /// A holder's shared ring, and the eventfd it writes after publishing.
    Held(Arc<SharedRing>, Registered),
    /// A held terminal this server reads itself, into the holder's ring through its io_uring
    /// (`super::kept`).
    Kept(Registered, Arc<SharedRing>, crate::holder::uring::ReadRing),
}

/// A process just spawned or attached, before its readers start.
pub(super) struct Spawned {
    pub(super) pid: i32,
    pub(super) pidfd: Option<Arc<PidFd>>,
    pub(super) master: Option<Master>,
    pub(super) output: Source,
    pub(super) input: Registered,
    pub(super) stderr: Option<Registered>,
    /// The holder's link and the exit it already reported.
    pub(super) held: Option<(Link, Option<Exit>)>,
}

impl Spawned {
    /// A process under a holder: output from the holder's ring (or, from a v1 holder, a pipe
    /// session's own pipes), input and resize on the passed master (or stdin), exit from the
    /// holder. If anything here fails the holder is released (it kills
    /// the program).
    pub(super) fn held(a: crate::holder::Attached) -> std::io::Result<Spawned> {
        use std::os::fd::AsRawFd;
        use tokio::io::Interest;
        let link = Link::new(a.socket, a.holder)?;
        let setup = || -> std::io::Result<Spawned> {
            // Our own non-blocking duplicates, registered one way each (as `pty`/`pipe` do).
            let take = |fd: &std::os::fd::OwnedFd, interest| {
                crate::fd::dup_nonblocking(fd.as_raw_fd())
                    .and_then(|d| crate::fd::register(d, interest))
            };
            // The process may be gone already (it exited while no server was attached).
            let pidfd = match a.exited {
                Some(_) => None,
                None => PidFd::open(a.pid).ok().map(Arc::new),
            };
            let (master, output, input, stderr) = match a.io {
                crate::holder::HeldIo::Ring {
                    input,
                    terminal,
                    ring,
                    wake,
                    reads,
                } => {
                    crate::fd::set_nonblocking(&wake)?;
                    let wake = crate::fd::register(wake, Interest::READABLE)?;
                    let writer = take(&input, Interest::WRITABLE)?;
                    let output = match reads {
                        Some(reads) if terminal => {
                            Source::Kept(take(&input, Interest::READABLE)?, Arc::new(ring), reads)
                        }
                        _ => Source::Held(Arc::new(ring), wake),
                    };
                    (
                        terminal.then_some(Master::Held(input)),
                        output,
                        writer,
                        None,
                    )
                }
                crate::holder::HeldIo::Pipes {
                    stdin,
                    stdout,
                    stderr,
                } => (
                    None,
                    Source::Fd(take(&stdout, Interest::READABLE)?),
                    take(&stdin, Interest::WRITABLE)?,
                    Some(take(&stderr, Interest::READABLE)?),
                ),
            };
            Ok(Spawned {
                pid: a.pid,
                pidfd,
                master,
                output,
                input,
                stderr,
                held: Some((link.clone(), a.exited)),
            })
        };
        setup().inspect_err(|_| link.release())
    }
}
