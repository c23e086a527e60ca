//! Wire: protocol v2 between the server and a session's holder, and the socket calls that carry
//! it.
//!
//! One `SOCK_SEQPACKET` Unix socket per holder (`holders/<session>.sock` in the 0700 data dir,
//! mode 0600, the peer's uid checked with `SO_PEERCRED` on both ends). Every datagram is one
//! JSON message; file descriptors travel with a message by `SCM_RIGHTS`. Every message that
//! opens a conversation carries `v`: a holder refuses a major version it does not speak, so an
//! upgraded server never misreads an old holder (or the reverse) — it gets `Refused` and a
//! reason instead. The table is in docs/architecture.md ("Sessions that outlive the server").

use std::io::{self, IoSlice, IoSliceMut};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;

use nix::sys::socket::{
    self, AddressFamily, Backlog, ControlMessage, ControlMessageOwned, MsgFlags, SockFlag,
    SockType, UnixAddr, sockopt,
};
use serde::{Deserialize, Serialize};

use crate::process::ExitStatus;

/// The protocol version this build speaks. v2: a pipe session's holder reads its output into
/// the ring like a terminal's (v1 passed the output pipes to the server). A server speaks both
/// (it says `Hello` again with v1 to a holder that refuses v2: an upgrade keeps the sessions
/// of the holders an older server started); a holder speaks v1 only for a terminal, where the
/// two are the same.
pub const VERSION: u32 = 2;
/// Largest message (JSON); a holder's messages are a few hundred bytes.
const MAX_MESSAGE: usize = 16 * 1024;
/// Most descriptors one message carries.
const MAX_FDS: usize = 4;

/// Server → holder.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "t", rename_all = "snake_case")]
pub enum ToHolder {
    /// Attach (first contact, or a new server after a restart): send me the terminal, and the
    /// output from offset `from` on (the end of my log).
    Hello {
        /// Protocol version.
        v: u32,
        /// First output offset wanted.
        from: u64,
        /// This server can read the terminal itself, through an io_uring whose queues live in
        /// pages of the holder's (`super::uring`); a holder that agrees says so in `Welcome`.
        /// Absent from older servers.
        #[serde(default)]
        read: bool,
    },
    /// Logged output may be handed back (`super::ring::SharedRing::release_logged`): sent by a
    /// server that reads the terminal itself (the holder is not woken by output then), at most
    /// once a second during output and once when it goes quiet.
    Logged,
    /// The session is over: kill what is left, reap, remove the socket, exit.
    Release,
}

/// Holder → server.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "t", rename_all = "snake_case")]
pub enum FromHolder {
    /// The answer to `Hello`, with three descriptors: the PTY master (for input and resize),
    /// the shared ring of output (a memfd; see `super::ring`) and the eventfd the holder
    /// writes after each batch of output. The server reads the ring from `from` on and writes
    /// there what its log holds.
    Welcome {
        /// Protocol version.
        v: u32,
        /// The holder's pid.
        holder: i32,
        /// The session's main process.
        pid: i32,
        /// Its start time (`/proc/<pid>/stat` field 22), to tell it from a recycled pid.
        starttime: u64,
        /// Output offset of this incarnation's first byte.
        base: u64,
        /// Output offset read from the terminal so far.
        end: u64,
        /// Set when the main process has already exited (while no server was attached).
        exited: Option<Exit>,
        /// A pipe-mode session: the first fd is its stdin's write end instead of a terminal;
        /// the ring holds its stdout and stderr, merged in whole lines. (In v1, the three fds
        /// were stdin's write end and stdout's and stderr's read ends, which the server read.)
        #[serde(default)]
        pipes: bool,
        /// The server reads the terminal itself (it said `read`): the fourth descriptor is the
        /// pages its io_uring's queues go in (`super::uring::ReadPages`). The holder then does
        /// not read the terminal until that server is gone (its process, not only its
        /// connection). Absent from older holders.
        #[serde(default)]
        reads: bool,
    },
    /// The main process exited (sent when it is reaped, and in every later `Welcome`).
    Exited(Exit),
    /// `Hello` refused: the version is not spoken, or the offset is no longer held.
    Refused {
        /// Protocol version.
        v: u32,
        /// Why.
        reason: String,
        /// When the offset is not held: the output offsets that are, `[from, to)`. A server
        /// whose log lost bytes this holder no longer has (storage damage past a previous
        /// incarnation) says `Hello` again from `from` and records the rest as a gap. Absent
        /// from older holders.
        #[serde(default)]
        held: Option<(u64, u64)>,
    },
}

/// How and when the main process ended.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct Exit {
    /// Its status.
    pub status: ExitStatus,
    /// When it was reaped (ms since the epoch).
    pub at_ms: u64,
}

/// A new `SOCK_SEQPACKET` socket (close-on-exec).
fn seqpacket() -> io::Result<OwnedFd> {
    socket::socket(
        AddressFamily::Unix,
        SockType::SeqPacket,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(io::Error::from)
}

/// Binds and listens at `path` (replacing a stale socket file), mode 0600.
pub fn listen(path: &Path) -> io::Result<OwnedFd> {
    use std::os::unix::fs::PermissionsExt;
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let fd = seqpacket()?;
    let addr = UnixAddr::new(path).map_err(io::Error::from)?;
    socket::bind(fd.as_raw_fd(), &addr).map_err(io::Error::from)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    socket::listen(&fd, Backlog::new(4).map_err(io::Error::from)?).map_err(io::Error::from)?;
    Ok(fd)
}

/// Accepts one connection (close-on-exec) from a peer of our own uid; others are closed.
pub fn accept(listener: &OwnedFd) -> io::Result<Option<OwnedFd>> {
    let raw =
        socket::accept4(listener.as_raw_fd(), SockFlag::SOCK_CLOEXEC).map_err(io::Error::from)?;
    // SAFETY: accept4 returned a new descriptor that nobody else owns.
    let conn = unsafe { OwnedFd::from_raw_fd(raw) };
    if peer_is_us(&conn)? {
        Ok(Some(conn))
    } else {
        Ok(None)
    }
}

/// Connects to the holder socket at `path` and checks that the holder runs as our uid.
pub fn connect(path: &Path) -> io::Result<OwnedFd> {
    let fd = seqpacket()?;
    let addr = UnixAddr::new(path).map_err(io::Error::from)?;
    socket::connect(fd.as_raw_fd(), &addr).map_err(io::Error::from)?;
    if !peer_is_us(&fd)? {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!("{} is served by another user", path.display()),
        ));
    }
    Ok(fd)
}

/// The peer's pid (SO_PEERCRED).
pub fn peer_pid(fd: &OwnedFd) -> io::Result<i32> {
    let cred = socket::getsockopt(fd, sockopt::PeerCredentials).map_err(io::Error::from)?;
    Ok(cred.pid())
}

fn peer_is_us(fd: &OwnedFd) -> io::Result<bool> {
    let cred = socket::getsockopt(fd, sockopt::PeerCredentials).map_err(io::Error::from)?;
    // SAFETY: getuid takes nothing and cannot fail.
    Ok(cred.uid() == unsafe { libc::getuid() })
}

/// Sends one message with `fds` attached.
pub fn send<T: Serialize>(fd: BorrowedFd<'_>, msg: &T, fds: &[RawFd]) -> io::Result<()> {
    let body = serde_json::to_vec(msg).map_err(io::Error::other)?;
    let iov = [IoSlice::new(&body)];
    let rights = [ControlMessage::ScmRights(fds)];
    let cmsgs: &[ControlMessage] = if fds.is_empty() { &[] } else { &rights };
    let n = socket::sendmsg::<()>(
        fd.as_raw_fd(),
        &iov,
        cmsgs,
        MsgFlags::MSG_NOSIGNAL | MsgFlags::MSG_DONTWAIT,
        None,
    )
    .map_err(io::Error::from)?;
    if n != body.len() {
        return Err(io::Error::other("message truncated by the socket"));
    }
    Ok(())
}

/// Receives one message and the descriptors that came with it; `None` when the peer hung up.
pub fn recv<T: for<'de> Deserialize<'de>>(
    fd: impl AsFd,
    flags: MsgFlags,
) -> io::Result<Option<(T, Vec<OwnedFd>)>> {
    let mut body = vec![0u8; MAX_MESSAGE];
    let mut space = nix::cmsg_space!([RawFd; MAX_FDS]);
    let (n, fds) = {
        let mut iov = [IoSliceMut::new(&mut body)];
        let msg = socket::recvmsg::<()>(
            fd.as_fd().as_raw_fd(),
            &mut iov,
            Some(&mut space),
            flags | MsgFlags::MSG_CMSG_CLOEXEC,
        )
        .map_err(io::Error::from)?;
        let mut fds = Vec::new();
        for c in msg.cmsgs().map_err(io::Error::from)? {
            if let ControlMessageOwned::ScmRights(raw) = c {
                // SAFETY: SCM_RIGHTS installed these descriptors in this process for us alone.
                fds.extend(raw.into_iter().map(|r| unsafe { OwnedFd::from_raw_fd(r) }));
            }
        }
        (msg.bytes, fds)
    };
    if n == 0 {
        return Ok(None);
    }
    let msg = serde_json::from_slice(&body[..n])
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("bad message: {e}")))?;
    Ok(Some((msg, fds)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_and_descriptors_cross_a_socket_pair() {
        let (a, b) = socket::socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .unwrap();
        let (r, w) = nix::unistd::pipe().unwrap();
        let hello = ToHolder::Hello {
            v: VERSION,
            from: 42,
            read: true,
        };
        // An older server's Hello (no `read`) still parses: it reads through the ring.
        let old: ToHolder = serde_json::from_str(r#"{"t":"hello","v":2,"from":1}"#).unwrap();
        assert_eq!(
            old,
            ToHolder::Hello {
                v: 2,
                from: 1,
                read: false
            }
        );
        send(a.as_fd(), &hello, &[r.as_raw_fd()]).unwrap();
        let (got, fds): (ToHolder, _) = recv(&b, MsgFlags::empty()).unwrap().unwrap();
        assert_eq!(got, hello);
        assert_eq!(fds.len(), 1);
        nix::unistd::write(&w, b"x").unwrap();
        let mut buf = [0u8; 1];
        assert_eq!(nix::unistd::read(&fds[0], &mut buf).unwrap(), 1);
        drop(a);
        assert!(recv::<ToHolder>(&b, MsgFlags::empty()).unwrap().is_none());
    }
}
