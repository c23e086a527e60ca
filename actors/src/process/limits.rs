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

/// The system-wide maximum number of PTYs (`/proc/sys/kernel/pty/max`), if readable.
pub fn pty_max() -> Option<u64> {
    fs::read_to_string("/proc/sys/kernel/pty/max")
        .ok()?
        .trim()
        .parse()
        .ok()
}
