//! Upgrade: how a server leaves — all the way (SIGTERM, `corral shutdown`), keeping its
//! sessions (`corral shutdown --keep-sessions`), or handing over to the binary now on disk
//! (`corral upgrade`).
//!
//! The handover, in order:
//! 1. the old server starts `<exe> <its own arguments>` with its TCP listener as fd 3
//!    (`CORRAL_LISTEN_FD`), a pipe as fd 4 (`CORRAL_UPGRADE_FD`) and the data dir's Unix
//!    socket's listener as fd 5 (`CORRAL_UNIX_FD`);
//! 2. the successor parses its config, then writes `ready` on fd 4 (or `error: …` and exits)
//!    and waits for the data dir's lock;
//! 3. a successor that fails before `ready` (a broken binary, a bad config) leaves the old
//!    server serving: the upgrade request fails with what the successor said, or its exit status;
//! 4. on `ready` the old server answers the request, stops accepting (connections still arriving
//!    wait in the listeners' backlogs: the successor owns the same sockets — the local CLI's
//!    and the agents' hooks' Unix socket too, whose file the old server leaves in place; it
//!    was closed and bound again, and every CLI call and hook of the handover was refused,
//!    the hooks lost), closes its
//!    WebSockets with 1012 "server restarting" (clients reconnect and resume by offset),
//!    detaches every session from its holder (nothing is stopped), unlocks the data dir and
//!    exits;
//! 5. the successor takes the lock, reattaches every holder (boot recovery) and serves.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};

use crate::access::Admin;
use crate::app::{App, Leaving};
use crate::error::ApiError;

/// Where the successor finds the inherited listener.
pub const LISTEN_FD_VAR: &str = "CORRAL_LISTEN_FD";
/// Where the successor finds the inherited Unix socket listener.
pub const UNIX_FD_VAR: &str = "CORRAL_UNIX_FD";
/// Where the successor says it is ready.
pub const UPGRADE_FD_VAR: &str = "CORRAL_UPGRADE_FD";
/// How long a successor may take to be ready, and then to get the data dir.
pub const HANDOVER_TIMEOUT: Duration = Duration::from_secs(30);

/// `POST /v1/shutdown` body.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShutdownRequest {
    /// Leave sessions with holders running.
    #[serde(default)]
    pub keep_sessions: bool,
}

/// `POST /v1/upgrade` body: none, or `{}` (anything else is refused, as the shutdown's is: a
/// request meant for another route must not upgrade the server).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpgradeRequest {}

/// Which server answered, or took over.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ServerId {
    /// Its version.
    pub version: String,
    /// Its pid.
    pub pid: u32,
}

/// `POST /v1/upgrade` answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Handover {
    /// This server.
    pub old: ServerId,
    /// The successor's pid (its version is what it reports at /v1/health).
    pub new_pid: u32,
}

/// `POST /v1/shutdown {keep_sessions}` (admin): the server leaves after answering.
pub async fn shutdown(
    State(app): State<Arc<App>>,
    _: Admin,
    crate::access::Body(body): crate::access::Body,
) -> Result<Json<ServerId>, ApiError> {
    let req: ShutdownRequest = if body.is_empty() {
        ShutdownRequest::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| ApiError::bad_request(format!("bad shutdown request: {e}")))?
    };
    let how = if req.keep_sessions {
        Leaving::KeepSessions
    } else {
        Leaving::Stop
    };
    app.leave.send_replace(Some(how));
    Ok(Json(this_server()))
}

/// `POST /v1/upgrade` (admin): starts the binary on disk as the successor and, once it is
/// ready, leaves to it. A successor that fails leaves this server serving, and the error says
/// why.
pub async fn upgrade(
    State(app): State<Arc<App>>,
    _: Admin,
    crate::access::Body(body): crate::access::Body,
) -> Result<Json<Handover>, ApiError> {
    if !body.is_empty() {
        serde_json::from_slice::<UpgradeRequest>(&body)
            .map_err(|e| ApiError::bad_request(format!("bad upgrade request: {e}")))?;
    }
    let (Some(listener), Some(unix)) = (app.listener.as_ref(), app.unix_listener.as_ref()) else {
        return Err(ApiError::conflict(
            "this server has no listener to hand over",
        ));
    };
    if app.leave.borrow().is_some() {
        return Err(ApiError::conflict("the server is already leaving"));
    }
    // One successor at a time: two upgrades at once each started one; the second waited for
    // a successor that found the data dir taken (its 30 s), and said the upgrade failed.
    use std::sync::atomic::Ordering::SeqCst;
    if app.upgrading.swap(true, SeqCst) {
        return Err(ApiError::conflict(
            "an upgrade is under way already (another request started it): `corral ps` \
             shows the server it hands over to once it is done",
        ));
    }
    /// Lets the next upgrade start once this one is over, however it ended.
    struct Upgrading(Arc<App>);
    impl Drop for Upgrading {
        fn drop(&mut self) {
            self.0
                .upgrading
                .store(false, std::sync::atomic::Ordering::SeqCst);
        }
    }
    let upgrading = Upgrading(app.clone());
    let share = |fd: &OwnedFd| {
        fd.try_clone()
            .map_err(|e| ApiError::internal(format!("cannot share the listener: {e}")))
    };
    let (listener, unix) = (share(listener)?, share(unix)?);
    let exe = app.exe.clone();
    // Run to its end even if the client stops waiting (hyper drops the handler then): a
    // successor that becomes ready is handed over to, and the next upgrade waits until then.
    let handover = app.in_flight.start(async move {
        // (The guard is this task's until it ends.)
        let app = upgrading.0.clone();
        let new_pid = tokio::task::spawn_blocking(move || start_successor(&exe, listener, unix))
            .await
            .map_err(|e| ApiError::internal(format!("upgrade task: {e}")))?
            .map_err(|e| {
                tracing::warn!(error = %e, "upgrade failed");
                ApiError::internal(e)
            })?;
        tracing::info!(new_pid, "successor ready; handing over");
        app.leave.send_replace(Some(Leaving::Upgrade));
        Ok(Json(Handover {
            old: this_server(),
            new_pid,
        }))
    });
    handover
        .await
        .unwrap_or_else(|| Err(ApiError::internal("the upgrade task panicked")))
}

fn this_server() -> ServerId {
    ServerId {
        version: env!("CARGO_PKG_VERSION").into(),
        pid: std::process::id(),
    }
}

/// Starts the successor and waits until it is ready; its pid, or why it is not.
fn start_successor(exe: &std::path::Path, listener: OwnedFd, unix: OwnedFd) -> Result<u32, String> {
    let (ready_r, ready_w) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| format!("pipe: {e}"))?;
    // Each descriptor and the number the successor finds it at (its variable says which).
    let moves = [
        (listener.as_raw_fd(), 3),
        (ready_w.as_raw_fd(), 4),
        (unix.as_raw_fd(), 5),
    ];
    let mut cmd = Command::new(exe);
    cmd.args(std::env::args_os().skip(1))
        .env(LISTEN_FD_VAR, "3")
        .env(UPGRADE_FD_VAR, "4")
        .env(UNIX_FD_VAR, "5")
        .stdin(Stdio::null());
    // SAFETY: the closure runs in the forked child before exec and calls only fcntl, dup2,
    // close and setpgid, which are async-signal-safe, on a fixed array (no allocation); the
    // fds it names stay open in the parent until spawn returns.
    unsafe {
        cmd.pre_exec(move || {
            // Out of the way first, so no target number clobbers another source.
            let mut away = [-1; 3];
            for (slot, (fd, _)) in away.iter_mut().zip(moves) {
                *slot = libc::fcntl(fd, libc::F_DUPFD, 10);
                if *slot < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            for (tmp, (_, target)) in away.into_iter().zip(moves) {
                if libc::dup2(tmp, target) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // The temporaries must not reach the successor (a second write end of the
                // ready pipe would hide its EOF).
                libc::close(tmp);
            }
            // A group of its own, so a successor that fails takes its children with it (a
            // wrapper script's child kept both listeners open after the script was killed).
            if libc::setpgid(0, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    // This server is a child subreaper whose reaper reaps every child nobody owns: the
    // successor is owned from its fork on, so its exit status stays ours to wait for and its
    // pid cannot be reaped and reused behind `child` (a kill of the failed successor would
    // then hit whatever process got the pid — a CI run lost an unrelated server that way).
    let guard = corral_actors::process::reaper::spawn_guard();
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", exe.display()))?;
    let pid = child.id() as i32;
    corral_actors::process::reaper::own(pid);
    drop(guard);
    drop((ready_w, listener, unix));
    let said = successor_says(ready_r, &mut child, HANDOVER_TIMEOUT);
    match said.as_deref().map(str::trim) {
        Ok("ready") => {
            // It outlives this server; until then, reaped if it ends first.
            corral_actors::process::reaper::disown(pid);
            Ok(child.id())
        }
        outcome => {
            // Its whole group: what it started goes too (the group is its own, see above).
            if let Err(e) = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            ) && e != nix::errno::Errno::ESRCH
            {
                tracing::warn!(error = %e, "could not kill the failed successor's group");
            }
            if let Err(e) = child.kill()
                && e.kind() != std::io::ErrorKind::InvalidInput
            {
                tracing::warn!(error = %e, "could not kill the failed successor");
            }
            let status = child
                .wait()
                .map(|s| s.to_string())
                .unwrap_or_else(|e| format!("unknown ({e})"));
            corral_actors::process::reaper::release(pid);
            Err(match outcome {
                Ok(text) if text.starts_with("error:") => format!(
                    "the new binary refused to start ({}); still serving",
                    text.trim_start_matches("error:").trim()
                ),
                Ok(_) => format!(
                    "the new binary exited before it was ready ({status}; what it printed is in \
                     this server's log); still serving"
                ),
                Err(e) => format!(
                    "the new binary was not ready: {e} ({status}; what it printed is in this \
                     server's log); still serving"
                ),
            })
        }
    }
}

/// The successor's answer on the ready pipe: its first line (`ready`, or `error: …`), or what
/// it wrote before it exited, or a timeout. Not the pipe's end: a wrapper's child that
/// inherited the pipe would hold that back (for 30 s, though the wrapper had exited).
fn successor_says(
    ready: OwnedFd,
    child: &mut std::process::Child,
    timeout: Duration,
) -> Result<String, String> {
    use std::io::Read;
    let deadline = std::time::Instant::now() + timeout;
    let mut file = std::fs::File::from(ready);
    let mut said = Vec::new();
    loop {
        let mut fds = [nix::poll::PollFd::new(
            std::os::fd::AsFd::as_fd(&file),
            nix::poll::PollFlags::POLLIN,
        )];
        match nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(100u8)) {
            Ok(0) => {
                // Nothing to read: a successor that exited has said all it will.
                if child.try_wait().map_err(|e| e.to_string())?.is_some() {
                    return Ok(String::from_utf8_lossy(&said).into_owned());
                }
            }
            Ok(_) => {
                let mut buf = [0u8; 4096];
                match file.read(&mut buf) {
                    Ok(0) => return Ok(String::from_utf8_lossy(&said).into_owned()),
                    Ok(n) => said.extend_from_slice(&buf[..n]),
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e.to_string()),
                }
                if said.contains(&b'\n') {
                    return Ok(String::from_utf8_lossy(&said).into_owned());
                }
            }
            Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(e.to_string()),
        }
        if std::time::Instant::now() >= deadline {
            return Err(format!("no answer within {timeout:?}"));
        }
    }
}

/// In a successor: the data dir's Unix socket listener its predecessor passed, if any.
pub fn inherited_unix() -> std::io::Result<Option<std::os::unix::net::UnixListener>> {
    inherited_listening(UNIX_FD_VAR)
}

/// In a successor: the listener its predecessor passed, if any.
pub fn inherited_listener() -> std::io::Result<Option<std::net::TcpListener>> {
    inherited_listening(LISTEN_FD_VAR)
}

/// A listening socket the predecessor passed at `var`'s number, non-blocking.
fn inherited_listening<L: From<OwnedFd>>(var: &str) -> std::io::Result<Option<L>> {
    let Some(fd) = adopt(var)? else {
        return Ok(None);
    };
    nix::fcntl::fcntl(
        &fd,
        nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
    )?;
    Ok(Some(L::from(fd)))
}

/// In a successor: the predecessor's ready pipe, if any.
pub fn ready_pipe() -> std::io::Result<Option<std::fs::File>> {
    Ok(adopt(UPGRADE_FD_VAR)?.map(std::fs::File::from))
}

/// Takes the descriptor the predecessor put at `var`'s number, close-on-exec (sessions and
/// holders never inherit it).
fn adopt(var: &str) -> std::io::Result<Option<OwnedFd>> {
    let Some(fd) = inherited_fd(var)? else {
        return Ok(None);
    };
    // SAFETY: the predecessor put this descriptor at this number for us alone (and
    // `inherited_fd` checked it is open); taking ownership here, once, is what it is for.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    nix::fcntl::fcntl(
        &fd,
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
    )?;
    Ok(Some(fd))
}

fn inherited_fd(var: &str) -> std::io::Result<Option<RawFd>> {
    let Some(v) = std::env::var_os(var) else {
        return Ok(None);
    };
    let fd: RawFd = v
        .to_str()
        .and_then(|s| s.parse().ok())
        .filter(|fd| *fd >= 3)
        .ok_or_else(|| std::io::Error::other(format!("{var} is not a descriptor number")))?;
    // The fd must really be open (a stale variable in a user's shell must not adopt a random fd).
    // SAFETY: F_GETFD only queries flags.
    if unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
        return Err(std::io::Error::other(format!("{var}={fd} is not open")));
    }
    Ok(Some(fd))
}
