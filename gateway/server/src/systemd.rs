//! systemd: tells a service manager how this server is doing (the sd_notify(3) protocol) when
//! `NOTIFY_SOCKET` is set, as it is under a `Type=notify` unit: `READY=1` once it serves,
//! `STOPPING=1` when it leaves for good (a full stop, or one that keeps the sessions), and —
//! from a successor started by `corral upgrade`, before its predecessor lets go — `MAINPID=`
//! its own pid, so the unit follows the handover instead of ending with the old process. The
//! successor is not the process systemd started, so the unit needs `NotifyAccess=all`
//! (docs/operations.md, "systemd").
//!
//! Without the variable nothing is sent. The manager is told; the server does not depend on
//! it: a send that fails (no such socket, a full queue — the socket is non-blocking, so a
//! runtime worker never waits on it) is logged as a warning and changes nothing else.

use std::ffi::OsStr;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixDatagram;

/// The variable a service manager sets to the path of its notification socket (`@…`: a
/// socket in the abstract namespace).
pub const SOCKET_VAR: &str = "NOTIFY_SOCKET";

/// Sends `state` (newline-separated `KEY=value` assignments, sd_notify(3)) to the service
/// manager, if there is one.
pub fn notify(state: &str) {
    let Some(socket) = std::env::var_os(SOCKET_VAR) else {
        return;
    };
    if let Err(e) = send(&socket, state) {
        tracing::warn!(socket = ?socket, state, error = %e, "could not notify the service manager");
    }
}

/// `READY=1` with this process's pid (which a successor's manager already had from
/// [`claim`]), and a status line.
pub fn ready(url: &str) {
    notify(&format!(
        "READY=1\nMAINPID={}\nSTATUS=serving on {url}",
        std::process::id()
    ));
}

/// A successor's claim to be the unit's main process, before its predecessor exits.
pub fn claim() {
    notify(&format!("MAINPID={}", std::process::id()));
}

/// One datagram to `socket`.
fn send(socket: &OsStr, state: &str) -> io::Result<()> {
    let sock = UnixDatagram::unbound()?;
    sock.set_nonblocking(true)?;
    let sent = match socket.as_bytes().strip_prefix(b"@") {
        Some(name) => {
            use std::os::linux::net::SocketAddrExt;
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
            sock.send_to_addr(state.as_bytes(), &addr)?
        }
        None => sock.send_to(state.as_bytes(), socket)?,
    };
    if sent != state.len() {
        return Err(io::Error::other(format!(
            "sent {sent} of {} bytes",
            state.len()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_reaches_a_path_socket_and_an_abstract_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let at_path = UnixDatagram::bind(&path).unwrap();
        send(path.as_os_str(), "READY=1").unwrap();
        let mut buf = [0u8; 64];
        let n = at_path.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");

        use std::os::linux::net::SocketAddrExt;
        let name = format!("corral-test-{}", std::process::id());
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let abstract_sock = UnixDatagram::bind_addr(&addr).unwrap();
        send(OsStr::new(&format!("@{name}")), "STOPPING=1").unwrap();
        let n = abstract_sock.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"STOPPING=1");
    }

    #[test]
    fn a_missing_socket_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let e = send(dir.path().join("none").as_os_str(), "READY=1").unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
    }
}
