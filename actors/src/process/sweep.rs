//! Stopping a session's processes: polite signal, grace, then SIGKILL of the whole tree.
//!
//! The rules (DESIGN.md §5):
//!
//! - The polite stop goes to the main process *group* (`killpg(sid)`), followed by `SIGCONT` so a
//!   stopped job can act on it. The default stop signal is `SIGHUP`: interactive bash ignores
//!   `SIGTERM`, while `SIGHUP` is what a closing terminal sends and bash forwards it to its jobs.
//! - A process group may be signalled only while its leader is unreaped: once the leader is
//!   reaped, its pid (= the pgid number) can be recycled and a `killpg` could hit a stranger's new
//!   group. The caller proves it holds the leader unreaped by passing its [`PidFd`].
//! - After the grace, every member of the [`SessionTree`] is found in `/proc`, stopped with
//!   `SIGSTOP` first (so a forking process cannot outrun the sweep), then `SIGKILL`ed, each through
//!   its own pidfd (race-free against pid reuse), and the scan repeats until none is left.
//! - Swept processes that are, or become, our own children (directly or as subreaper) are handed
//!   to the [`reaper`], and so are the session's zombies among our children; the session's main
//!   process never is: its exit status belongs to its owner.
//!
//! Nothing here blocks a runtime thread: waits are pidfd readiness under `tokio::time::timeout`,
//! `/proc` is read on a blocking thread ([`scan`]), and the synchronous [`kill_all_now`] (for
//! `Drop`) signals without waiting.

use std::io;
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::{Pid, getpgrp};
use serde::{Deserialize, Serialize};
use tokio::time::{Instant, timeout, timeout_at};

use crate::process::pidfd::{Delivery, PidFd};
use crate::process::procfs::{self, ProcStat};
use crate::process::reaper;
use crate::process::tree::SessionTree;

/// At most this many scan-and-kill rounds (each new round only finds processes forked after the
/// previous scan, so more rounds than this means something keeps spawning faster than we kill).
const MAX_ROUNDS: usize = 20;
/// How long one round waits for its SIGKILLed processes to exit.
const ROUND_WAIT: Duration = Duration::from_secs(2);
/// Upper bound on a whole [`kill_all`] (a process stuck in uninterruptible sleep ignores even
/// SIGKILL until its I/O returns; we report it rather than wait forever).
const KILL_ALL_DEADLINE: Duration = Duration::from_secs(10);

/// What a sweep did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SweepReport {
    /// Processes sent the stop signal (for a process-group signal: the group's live members seen
    /// in `/proc` just before).
    pub signalled: usize,
    /// Processes sent SIGKILL (delivered).
    pub killed: usize,
    /// Scan-and-kill rounds run (0 if nothing was left to kill).
    pub rounds: usize,
    /// Members still alive when the sweep gave up (should be empty; logged if not).
    pub leftover: Vec<i32>,
    /// True if the grace period ran out before the main process exited.
    pub grace_expired: bool,
}

/// Sends `sig` to process group `pgid` (`killpg`). `Ok(Delivery::AlreadyExited)` if the group is
/// empty (`ESRCH`).
///
/// **Caller's duty:** signal a pgid only while holding its leader unreaped (a child not yet
/// waited for); otherwise the number may already name someone else's group. Refuses pgid ≤ 1 and
/// corral's own group.
pub fn signal_group(pgid: i32, sig: Signal) -> io::Result<Delivery> {
    if pgid <= 1 || pgid == getpgrp().as_raw() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("refusing to signal process group {pgid}"),
        ));
    }
    match killpg(Pid::from_raw(pgid), sig) {
        Ok(()) => Ok(Delivery::Delivered),
        Err(Errno::ESRCH) => Ok(Delivery::AlreadyExited),
        Err(e) => Err(io::Error::from(e)),
    }
}

/// Stops a session: `stop_signal` + `SIGCONT`, up to `grace` for the main process to exit, then
/// [`kill_all`].
///
/// With `main = Some(pidfd)` — the caller holds the main process unreaped and it leads `tree.sid`
/// — the signals go to the main process group with `killpg`, and the grace ends when the main
/// process exits. With `None` (or a pidfd that does not lead `tree.sid`) no group may be
/// signalled, so the signals go to each current member through a pidfd, and the grace ends when
/// all of them have exited.
///
/// The main process is never reaped here: once dead it stays a zombie for its owner to
/// [`crate::process::try_reap`] (or [`reaper::disown`]).
pub async fn terminate(
    tree: &SessionTree,
    stop_signal: Signal,
    grace: Duration,
    main: Option<&PidFd>,
) -> SweepReport {
    let me = std::process::id() as i32;
    let mut report = SweepReport::default();
    // Who was there at the start: those that die of the stop signal and turn out to be our
    // children are handed to the reaper at the end (kill_all only sees the live ones).
    let (procs, before) = scan(tree, me).await;
    match main {
        Some(main) if main.pid() == tree.sid => {
            // Counted over all of /proc, not `before`: killpg reaches every group member.
            let group = procs
                .iter()
                .filter(|p| p.pgid == tree.sid && !p.is_zombie())
                .count();
            for sig in [stop_signal, Signal::SIGCONT] {
                match signal_group(tree.sid, sig) {
                    Ok(Delivery::Delivered) => {
                        if sig == stop_signal {
                            report.signalled = group;
                        }
                    }
                    Ok(Delivery::AlreadyExited) => {
                        tracing::debug!(pgid = tree.sid, ?sig, "process group already empty");
                    }
                    Err(e) => tracing::warn!(pgid = tree.sid, ?sig, error = %e, "killpg failed"),
                }
            }
            if timeout(grace, main.exited()).await.is_err() {
                report.grace_expired = true;
                tracing::debug!(pid = main.pid(), ?grace, "grace expired; killing the tree");
            }
        }
        _ => {
            let targets: Vec<(ProcStat, PidFd)> = before
                .iter()
                .filter_map(|m| open_verified(m).map(|fd| (m.clone(), fd)))
                .collect();
            for (m, fd) in &targets {
                if send_logged(fd, &m.comm, stop_signal) {
                    report.signalled += 1;
                }
                send_logged(fd, &m.comm, Signal::SIGCONT);
            }
            let all_exited = async {
                for (_, fd) in &targets {
                    fd.exited().await;
                }
            };
            if timeout(grace, all_exited).await.is_err() {
                report.grace_expired = true;
                tracing::debug!(?grace, "grace expired; killing the tree");
            }
        }
    }
    let kill = kill_all(tree).await;
    hand_over_children(tree, &before, me);
    report.killed = kill.killed;
    report.rounds = kill.rounds;
    report.leftover = kill.leftover;
    report
}

/// SIGKILLs every member of `tree` until none is left (see the module docs). Bounded: at most
/// [`MAX_ROUNDS`] rounds and [`KILL_ALL_DEADLINE`] in all; whatever is still alive then is in
/// `leftover` and logged as an error.
pub async fn kill_all(tree: &SessionTree) -> SweepReport {
    let me = std::process::id() as i32;
    let deadline = Instant::now() + KILL_ALL_DEADLINE;
    let mut report = SweepReport::default();
    for round in 1..=MAX_ROUNDS {
        let (procs, members) = scan(tree, me).await;
        hand_over_zombies(tree, &procs, me);
        if members.is_empty() {
            return report;
        }
        report.rounds = round;
        let targets: Vec<(ProcStat, PidFd)> = members
            .into_iter()
            .filter_map(|m| open_verified(&m).map(|fd| (m, fd)))
            .collect();
        // Freeze first: a process stopped cannot fork a child we have not scanned.
        for (m, fd) in &targets {
            send_logged(fd, &m.comm, Signal::SIGSTOP);
        }
        for (m, fd) in &targets {
            if send_logged(fd, &m.comm, Signal::SIGKILL) {
                report.killed += 1;
            }
        }
        let round_deadline = deadline.min(Instant::now() + ROUND_WAIT);
        let all_exited = async {
            for (_, fd) in &targets {
                fd.exited().await;
            }
        };
        if timeout_at(round_deadline, all_exited).await.is_err() {
            let stuck: Vec<i32> = targets
                .iter()
                .filter(|(_, fd)| !fd.is_exited())
                .map(|(m, _)| m.pid)
                .collect();
            tracing::warn!(
                round,
                ?stuck,
                "processes outlived SIGKILL for the round's wait"
            );
        }
        let killed: Vec<ProcStat> = targets.into_iter().map(|(m, _)| m).collect();
        hand_over_children(tree, &killed, me);
        if Instant::now() >= deadline {
            break;
        }
    }
    let (procs, members) = scan(tree, me).await;
    hand_over_zombies(tree, &procs, me);
    report.leftover = members.iter().map(|p| p.pid).collect();
    if !report.leftover.is_empty() {
        tracing::error!(
            main_pid = tree.main_pid,
            leftover = ?report.leftover,
            rounds = report.rounds,
            "session processes survived the sweep"
        );
    }
    report
}

/// At most this many `/proc` scans at once (300 sessions stopped together each scan).
pub const SCANS_AT_ONCE: usize = 4;

/// See [`SCANS_AT_ONCE`].
static SCANS: crate::blocking::Bounded = crate::blocking::Bounded::new(SCANS_AT_ONCE);

/// `tree`'s candidate processes and its members among them, read from `/proc` on a blocking
/// thread: without a subreaper or a holder that is all of `/proc` (30 sessions stopped at once
/// held a host's current-thread runtime for 122–184 ms). If that thread fails, read here.
async fn scan(tree: &SessionTree, me: i32) -> (Vec<ProcStat>, Vec<ProcStat>) {
    let read = move |t: &SessionTree| {
        let procs = t.candidates();
        let members = t.members(&procs, me);
        (procs, members)
    };
    let t = tree.clone();
    match SCANS.run(move || read(&t)).await {
        Ok(found) => found,
        Err(e) => {
            tracing::error!(error = %e, "the /proc scan's thread failed: scanning here");
            read(tree)
        }
    }
}

/// Synchronous, best-effort [`kill_all`] for `Drop` and other places that cannot await: one
/// `/proc` scan, SIGSTOP then SIGKILL every member through a pidfd, and hand our own children
/// (except `tree.main_pid`) to the [`reaper`], which reaps those still dying on a later pass. Never sleeps or waits for exits. The main
/// process's owner should [`reaper::disown`] it if it is going away too.
///
/// In the report, `rounds` is 1 if there was anything to kill, and `leftover` lists members that
/// could not be signalled (processes forked after the scan are not seen at all).
pub fn kill_all_now(tree: &SessionTree) -> SweepReport {
    let me = std::process::id() as i32;
    let mut report = SweepReport::default();
    let procs = tree.candidates();
    hand_over_zombies(tree, &procs, me);
    let members = tree.members(&procs, me);
    if members.is_empty() {
        return report;
    }
    report.rounds = 1;
    let mut targets = Vec::with_capacity(members.len());
    for m in members {
        match open_verified(&m) {
            Some(fd) => targets.push((m, fd)),
            None => report.leftover.push(m.pid),
        }
    }
    for (m, fd) in &targets {
        send_logged(fd, &m.comm, Signal::SIGSTOP);
    }
    for (m, fd) in &targets {
        if send_logged(fd, &m.comm, Signal::SIGKILL) {
            report.killed += 1;
        } else if !fd.is_exited() {
            report.leftover.push(m.pid);
        }
    }
    let killed: Vec<ProcStat> = targets.into_iter().map(|(m, _)| m).collect();
    hand_over_children(tree, &killed, me);
    report
}

/// Opens a pidfd for a process found in a scan and confirms it is still that process (same start
/// time after the open), so a pid recycled between scan and open is never signalled.
fn open_verified(stat: &ProcStat) -> Option<PidFd> {
    let fd = match PidFd::open(stat.pid) {
        Ok(fd) => fd,
        Err(e) => {
            if e.raw_os_error() != Some(libc::ESRCH) {
                tracing::warn!(pid = stat.pid, error = %e, "pidfd_open failed");
            }
            return None;
        }
    };
    match procfs::read_stat(stat.pid) {
        Ok(now) if now.starttime == stat.starttime => Some(fd),
        // Gone already, or the pid now names someone else: not ours to signal.
        _ => None,
    }
}

/// Sends `sig` through `fd`; true if delivered. Failures are logged, "already exited" is not.
fn send_logged(fd: &PidFd, comm: &str, sig: Signal) -> bool {
    match fd.send_signal(sig) {
        Ok(Delivery::Delivered) => true,
        Ok(Delivery::AlreadyExited) => false,
        Err(e) => {
            tracing::warn!(pid = fd.pid(), comm, ?sig, error = %e, "signal failed");
            false
        }
    }
}

/// Gives the session's zombies that are our children to the reaper: processes that died of the
/// stop signal (or were killed as someone else's child and reparented to us as zombies). A zombie
/// has no readable environment and no parent link left to the session, so only its session id and
/// process group tie it to the tree.
fn hand_over_zombies(tree: &SessionTree, procs: &[ProcStat], me: i32) {
    for p in procs {
        if p.is_zombie()
            && p.ppid == me
            && p.pid != tree.main_pid
            && (p.sid == tree.sid || tree.pgids.contains(&p.pgid))
            && !reaper::disown_if_unowned(p.pid)
        {
            tracing::debug!(pid = p.pid, "session zombie is owned; its owner reaps it");
        }
    }
}

/// Gives the swept processes that are now our own children to the reaper (their owner, if any,
/// is the session being swept). The main process is skipped: its owner reaps it. The parent is
/// re-read because a process may have been reparented to us (subreaper) when its parent died in
/// the same round, and the start time is compared so a recycled pid is never taken for it.
fn hand_over_children(tree: &SessionTree, swept: &[ProcStat], me: i32) {
    for p in swept {
        if p.pid == tree.main_pid {
            continue;
        }
        if let Ok(now) = procfs::read_stat(p.pid)
            && now.ppid == me
            && now.starttime == p.starttime
            && !reaper::disown_if_unowned(p.pid)
        {
            tracing::debug!(pid = p.pid, "swept child is owned; its owner reaps it");
        }
    }
}
