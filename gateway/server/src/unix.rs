//! Unix: the data dir's Unix socket (`corral.sock`), the local CLI's way in. It lives in the
//! 0700 data dir, is itself 0600, and every accepted connection's peer is checked with
//! SO_PEERCRED: a process of another user is dropped before it can send a byte, even if the
//! modes were loosened. The token is still checked on every request, as on TCP.

use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use axum::serve::Listener;
use tokio::net::{UnixListener, UnixStream};

/// The socket's file name in the data dir.
pub const SOCKET: &str = "corral.sock";

/// The socket path of a data dir.
pub fn socket_path(data_dir: &Path) -> PathBuf {
    data_dir.join(SOCKET)
}

/// A Unix listener that only hands over connections from processes of the server's own user.
#[derive(Debug)]
pub struct OwnerOnly {
    /// The bound socket.
    inner: UnixListener,
    /// The server's effective uid.
    uid: u32,
}

impl OwnerOnly {
    /// Binds `path` (replacing a stale socket: the caller holds the data dir's lock, so no live
    /// server owns it) with mode 0600.
    pub fn bind(path: &Path) -> io::Result<OwnerOnly> {
        match std::fs::remove_file(path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let inner = UnixListener::bind(path)?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
        Ok(OwnerOnly {
            inner,
            // SAFETY: geteuid has no preconditions and cannot fail.
            uid: unsafe { libc::geteuid() },
        })
    }
}

impl OwnerOnly {
    /// The listener a predecessor handed over (`corral upgrade`): already bound at the data
    /// dir's socket path, whose file the predecessor left in place.
    pub fn inherited(listener: std::os::unix::net::UnixListener) -> io::Result<OwnerOnly> {
        Ok(OwnerOnly {
            inner: UnixListener::from_std(listener)?,
            // SAFETY: geteuid has no preconditions and cannot fail.
            uid: unsafe { libc::geteuid() },
        })
    }
}

impl std::os::fd::AsFd for OwnerOnly {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.inner.as_fd()
    }
}

impl Listener for OwnerOnly {
    type Io = UnixStream;
    type Addr = tokio::net::unix::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let (stream, addr) = Listener::accept(&mut self.inner).await;
            match stream.peer_cred() {
                Ok(cred) if cred.uid() == self.uid => return (stream, addr),
                Ok(cred) => tracing::warn!(
                    peer_uid = cred.uid(),
                    pid = ?cred.pid(),
                    "unix socket connection from another user dropped"
                ),
                Err(e) => {
                    tracing::warn!(error = %e, "unix socket peer unknown; connection dropped")
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}
