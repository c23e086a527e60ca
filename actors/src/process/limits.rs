//! Process-wide resource limits corral depends on.
//!
//! Every session costs file descriptors (a PTY master, its pidfd, log files, sockets), and the
//! usual soft limit of 1024 runs out long before the machine does; the hard limit is what the
//! administrator actually granted, so corral raises the soft limit to it at start. The number of
//! PTYs is a separate, system-wide limit that corral cannot raise, only report.

use std::fs;
use std::io;

use nix::sys::resource::{RLIM_INFINITY, Resource, getrlimit, setrlimit};

/// Raises the soft `RLIMIT_NOFILE` to the hard limit; returns (old soft, new soft).
///
/// An unlimited hard limit is capped at `/proc/sys/fs/nr_open`, the most the kernel allows (asking
/// for "infinity" fails with `EPERM`).
pub fn raise_nofile() -> io::Result<(u64, u64)> {
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).map_err(io::Error::from)?;
    let target = if hard == RLIM_INFINITY {
        fs::read_to_string("/proc/sys/fs/nr_open")?
            .trim()
            .parse::<u64>()
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?
    } else {
        hard
    };
    if target <= soft {
        return Ok((soft, soft));
    }
    setrlimit(Resource::RLIMIT_NOFILE, target, hard).map_err(io::Error::from)?;
    tracing::debug!(old = soft, new = target, "raised RLIMIT_NOFILE");
    Ok((soft, target))
}

/// Open files one session costs its server at most, measured (`ls /proc/<server>/fd` after 50
/// spawns, and after the next server reattached them): three of its terminal (reader, writer,
/// sizing), two pidfds (program and holder), two memfds (the holder's ring and pages), the
/// holder's socket, an io_uring, and two log segments once it printed — 11; one spare.
pub const FDS_PER_SESSION: u64 = 12;

/// Open files kept for the server itself whatever its sessions take: the data dir's files, the
/// registry, the persister, listeners, hooks and the runtime (a few dozen), with room to spare.
pub const FDS_FOR_SERVER: u64 = 128;

/// How many sessions a server whose open-file limit is `nofile` can hold, and hold again after
/// a restart (a successor reattaches them all: one taken past this was killed as lost when the
/// successor ran out of files, and the successor then stopped), with `connections` open files
/// kept for clients (at most a quarter of the limit).
pub fn session_capacity(nofile: u64, connections: u64) -> usize {
    let clients = connections.min(nofile / 4);
    let left = nofile.saturating_sub(FDS_FOR_SERVER + clients);
    usize::try_from(left / FDS_PER_SESSION).unwrap_or(usize::MAX)
}

/// The soft `RLIMIT_NOFILE` now.
pub fn nofile() -> io::Result<u64> {
    let (soft, _) = getrlimit(Resource::RLIMIT_NOFILE).map_err(io::Error::from)?;
    Ok(soft)
}

/// The system-wide maximum number of PTYs (`/proc/sys/kernel/pty/max`), if readable.
pub fn pty_max() -> Option<u64> {
    fs::read_to_string("/proc/sys/kernel/pty/max")
        .ok()?
        .trim()
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the open-file limit leaves for sessions: a default soft limit of 1024 holds some,
    /// a large one is bounded by the session limit elsewhere, none is left below the reserve.
    #[test]
    fn sessions_get_what_the_server_and_its_clients_leave() {
        assert_eq!(session_capacity(1024, 1024), (1024 - 128 - 256) / 12);
        assert_eq!(session_capacity(20_000, 1024), (20_000 - 128 - 1024) / 12);
        assert_eq!(session_capacity(100, 1024), 0);
        assert!(session_capacity(1 << 20, 1024) > 4096);
    }
}
