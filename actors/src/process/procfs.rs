//! Reading `/proc`: the kernel's own view of who is alive, who is whose parent, and in which
//! session and process group.
//!
//! Everything corral knows about processes it did not spawn directly (escapees, orphans, a
//! previous corral's children after a restart) comes from here. `/proc` is a moving target: a
//! process can vanish between listing its directory and reading its files, so every reader treats
//! "gone" as a normal answer, never as a failure of the scan.
//!
//! A pid alone is not an identity (pids are recycled). [`ProcessIdentity`] is: (pid, start time
//! in clock ticks since boot, boot id). The same pid with the same start time in the same boot is
//! the same process.

use std::collections::HashSet;
use std::fs;
use std::io;

use serde::{Deserialize, Serialize};

/// The fields of `/proc/<pid>/stat` corral needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcStat {
    /// Process id (field 1).
    pub pid: i32,
    /// The command name (field 2, without the parentheses). For logs only: never match
    /// processes by name.
    pub comm: String,
    /// State letter (field 3): `R`, `S`, `D`, `T`, `Z` (zombie), ...
    pub state: char,
    /// Parent pid (field 4).
    pub ppid: i32,
    /// Process group id (field 5).
    pub pgid: i32,
    /// Session id (field 6).
    pub sid: i32,
    /// Start time in clock ticks after boot (field 22): with the pid and boot id, an identity.
    pub starttime: u64,
    /// CPU time in user and kernel mode, clock ticks (fields 14, 15).
    pub cpu_ticks: u64,
    /// Resident set size in pages (field 24).
    pub rss_pages: u64,
}

impl ProcStat {
    /// Parses the contents of a `/proc/<pid>/stat` file.
    ///
    /// The command name is in parentheses and may itself contain spaces and `)`, so it spans from
    /// the first `(` to the *last* `)`; the numeric fields follow the last `)`.
    pub fn parse(text: &str) -> io::Result<ProcStat> {
        let bad = |what: &str| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("malformed /proc stat ({what}): {text:?}"),
            )
        };
        let open = text.find('(').ok_or_else(|| bad("no '('"))?;
        let close = text.rfind(')').ok_or_else(|| bad("no ')'"))?;
        if close < open {
            return Err(bad("')' before '('"));
        }
        let pid = text[..open].trim().parse::<i32>().map_err(|_| bad("pid"))?;
        let comm = text[open + 1..close].to_owned();
        // Fields 3.. after the comm; index i here is field i + 3 in proc(5).
        let rest: Vec<&str> = text[close + 1..].split_ascii_whitespace().collect();
        let field = |n: usize| {
            rest.get(n - 3)
                .copied()
                .ok_or_else(|| bad("too few fields"))
        };
        let state = field(3)?.chars().next().ok_or_else(|| bad("state"))?;
        let int = |n: usize, what: &str| field(n)?.parse::<i32>().map_err(|_| bad(what));
        let long = |n: usize, what: &str| field(n)?.parse::<u64>().map_err(|_| bad(what));
        Ok(ProcStat {
            pid,
            comm,
            state,
            ppid: int(4, "ppid")?,
            pgid: int(5, "pgid")?,
            sid: int(6, "sid")?,
            starttime: long(22, "starttime")?,
            cpu_ticks: long(14, "utime")?.saturating_add(long(15, "stime")?),
            rss_pages: long(24, "rss")?,
        })
    }

    /// Whether this is a zombie (exited, not yet reaped): nothing left to signal.
    pub fn is_zombie(&self) -> bool {
        self.state == 'Z'
    }
}

/// Reads and parses `/proc/<pid>/stat`. `ErrorKind::NotFound` if there is no such process.
pub fn read_stat(pid: i32) -> io::Result<ProcStat> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).map_err(gone_is_not_found)?;
    ProcStat::parse(&text)
}

/// A process that exits while its file is being read yields `ESRCH` rather than `ENOENT`; both
/// mean the same thing to callers.
fn gone_is_not_found(e: io::Error) -> io::Error {
    if e.raw_os_error() == Some(libc::ESRCH) {
        io::Error::new(io::ErrorKind::NotFound, e)
    } else {
        e
    }
}

/// Every process (thread-group leader) currently in `/proc`. Entries that vanish or cannot be
/// read mid-scan are skipped; if `/proc` itself cannot be listed the result is empty and the
/// failure is logged.
pub fn all() -> Vec<ProcStat> {
    let dir = match fs::read_dir("/proc") {
        Ok(dir) => dir,
        Err(e) => {
            tracing::error!(error = %e, "cannot list /proc");
            return Vec::new();
        }
    };
    dir.filter_map(|entry| {
        let name = entry.ok()?.file_name();
        let pid = name.to_str()?.parse::<i32>().ok()?;
        read_stat(pid).ok()
    })
    .collect()
}

/// Whether `/proc/<pid>/environ` contains exactly `key=value`. False on any error (gone, not
/// permitted, kernel thread): the marker is evidence of membership, and no evidence means no.
///
/// This is the environment the process was exec'd with; a process can rewrite that memory, so a
/// missing marker does not prove innocence — it is one of several membership rules.
pub fn environ_has(pid: i32, key: &str, value: &str) -> bool {
    let Ok(bytes) = fs::read(format!("/proc/{pid}/environ")) else {
        return false;
    };
    let want_len = key.len() + 1 + value.len();
    bytes.split(|b| *b == 0).any(|entry| {
        entry.len() == want_len
            && entry.starts_with(key.as_bytes())
            && entry[key.len()] == b'='
            && entry.ends_with(value.as_bytes())
    })
}

/// The value of `key` in `/proc/<pid>/environ`, if it is there and readable.
pub fn environ_value(pid: i32, key: &str) -> Option<String> {
    let bytes = fs::read(format!("/proc/{pid}/environ")).ok()?;
    bytes.split(|b| *b == 0).find_map(|entry| {
        let rest = entry.strip_prefix(key.as_bytes())?.strip_prefix(b"=")?;
        Some(String::from_utf8_lossy(rest).into_owned())
    })
}

/// A size field of `/proc/<pid>/status` in KiB (`VmRSS`, `RssShmem`, …), if the process and
/// the field are there.
pub fn status_kib(pid: i32, field: &str) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|l| {
        l.strip_prefix(field)?
            .strip_prefix(':')?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    })
}

/// This boot's random id (`/proc/sys/kernel/random/boot_id`), trimmed. Distinguishes start times
/// from different boots, which all count from zero. Read once per process (a process lives in one
/// boot): every spawn records it.
pub fn boot_id() -> io::Result<String> {
    static BOOT_ID: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    if let Some(id) = BOOT_ID.get() {
        return Ok(id.clone());
    }
    let id = fs::read_to_string("/proc/sys/kernel/random/boot_id")?
        .trim()
        .to_owned();
    Ok(BOOT_ID.get_or_init(|| id).clone())
}

/// The direct children of `pid` (of all its threads). Reads `/proc/<pid>/task/*/children` when
/// the kernel provides it (`CONFIG_PROC_CHILDREN`), else scans `/proc` for `ppid == pid`.
/// Includes zombie children. Empty if `pid` is gone.
pub fn children_of(pid: i32) -> Vec<i32> {
    if let Some(kids) = children_from_task_files(&format!("/proc/{pid}/task")) {
        return kids;
    }
    all()
        .into_iter()
        .filter(|p| p.ppid == pid)
        .map(|p| p.pid)
        .collect()
}

/// `root` and all its descendants, walking the kernel's `children` lists (no full `/proc` scan),
/// skipping pids in `seen` and adding the ones it visits. Processes that vanish mid-walk are
/// skipped; their children were reparented (to the nearest subreaper) before they vanished, so a
/// caller that re-reads that subreaper's children afterwards finds them. Zombies are included
/// (they have no children left).
pub(crate) fn walk_subtree(root: i32, seen: &mut HashSet<i32>, out: &mut Vec<ProcStat>) {
    let mut stack = vec![root];
    while let Some(pid) = stack.pop() {
        if !seen.insert(pid) {
            continue;
        }
        let Ok(stat) = read_stat(pid) else {
            continue;
        };
        let zombie = stat.is_zombie();
        out.push(stat);
        if !zombie && let Some(kids) = children_from_task_files(&format!("/proc/{pid}/task")) {
            stack.extend(kids);
        }
    }
}

/// Children listed in `<task_dir>/*/children`; `None` if the kernel lacks those files.
pub(crate) fn children_from_task_files(task_dir: &str) -> Option<Vec<i32>> {
    let tasks = fs::read_dir(task_dir).ok()?;
    let mut kids = Vec::new();
    let mut seen_file = false;
    for task in tasks.flatten() {
        // A failed read means either this thread vanished (its children were reparented to a
        // sibling thread and show up there) or the kernel has no `children` files; which one is
        // decided by whether any thread had the file.
        if let Ok(text) = fs::read_to_string(task.path().join("children")) {
            seen_file = true;
            kids.extend(
                text.split_ascii_whitespace()
                    .filter_map(|s| s.parse::<i32>().ok()),
            );
        }
    }
    if !seen_file {
        return None;
    }
    kids.sort_unstable();
    kids.dedup();
    Some(kids)
}

/// Clock ticks per second (`/proc` times count in these).
pub fn clock_ticks() -> u64 {
    // SAFETY: sysconf takes a constant and returns a value or -1.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as u64 } else { 100 }
}

/// Seconds since boot (`/proc/uptime`), the clock `/proc/<pid>/stat` start times count on.
pub fn uptime() -> Option<f64> {
    fs::read_to_string("/proc/uptime")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// How long ago a process that started at `starttime` (clock ticks after boot, `/proc/<pid>/stat`
/// field 22) started.
pub fn age(starttime: u64) -> Option<std::time::Duration> {
    let started = starttime as f64 / clock_ticks() as f64;
    Some(std::time::Duration::from_secs_f64(
        (uptime()? - started).max(0.0),
    ))
}

/// Who a process is, stably across pid reuse: record this for every child, and reconcile it
/// against `/proc` before signalling anything found in an old record.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ProcessIdentity {
    /// Process id.
    pub pid: i32,
    /// Start time in clock ticks after boot (`/proc/<pid>/stat` field 22).
    pub starttime: u64,
    /// The boot the start time counts from.
    pub boot_id: String,
}

impl ProcessIdentity {
    /// When the process started, by the wall clock, to the clock tick (10 ms): now, less the
    /// time since boot now, plus the start time after boot. (`/proc/stat`'s `btime` is the boot
    /// time in whole seconds: every time read back through it was up to a second early.)
    pub fn started_at(&self) -> Option<std::time::SystemTime> {
        let since_boot = nix::time::clock_gettime(nix::time::ClockId::CLOCK_BOOTTIME).ok()?;
        let since_boot = std::time::Duration::new(
            u64::try_from(since_boot.tv_sec()).ok()?,
            u32::try_from(since_boot.tv_nsec()).ok()?,
        );
        let booted = std::time::SystemTime::now().checked_sub(since_boot)?;
        let ticks = u128::from(self.starttime);
        let nanos = ticks * 1_000_000_000 / u128::from(clock_ticks());
        booted.checked_add(std::time::Duration::from_nanos(u64::try_from(nanos).ok()?))
    }

    /// The identity of the process that has `pid` right now.
    pub fn of(pid: i32) -> io::Result<ProcessIdentity> {
        let stat = read_stat(pid)?;
        Ok(ProcessIdentity {
            pid,
            starttime: stat.starttime,
            boot_id: boot_id()?,
        })
    }

    /// True if this very process is still alive: same boot, the pid exists, it started at the
    /// same tick, and it is not a zombie (a zombie has exited; there is nothing left to stop).
    pub fn is_alive_same(&self) -> bool {
        match boot_id() {
            Ok(boot) if boot == self.boot_id => {}
            _ => return false,
        }
        matches!(read_stat(self.pid), Ok(s) if s.starttime == self.starttime && !s.is_zombie())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A process's start by the wall clock is its start, to a couple of clock ticks: read
    /// through `btime` (whole seconds) it was up to a second early (half a second on this VM).
    #[test]
    fn a_process_started_when_it_was_started() {
        let before = std::time::SystemTime::now();
        let mut child = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .unwrap();
        let after = std::time::SystemTime::now();
        let started = ProcessIdentity::of(child.id() as i32)
            .unwrap()
            .started_at()
            .unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
        let tick = std::time::Duration::from_millis(2 * 1000 / clock_ticks());
        assert!(
            started + tick >= before && started <= after + tick,
            "started {started:?}, spawned between {before:?} and {after:?}"
        );
    }

    #[test]
    fn status_sizes_of_this_process() {
        let me = std::process::id() as i32;
        assert!(status_kib(me, "VmRSS").is_some_and(|k| k > 0));
        assert!(status_kib(me, "RssShmem").is_some());
        assert_eq!(status_kib(me, "NoSuchField"), None);
        assert_eq!(status_kib(me, "VmRS"), None, "a whole field name only");
    }

    #[test]
    fn parses_comm_with_spaces_and_parens() {
        let line = "4242 (my (odd) prog) x) S 1 4240 4239 34816 4240 4194560 120 0 0 0 \
                    3 1 0 0 20 0 1 0 987654 12345 67 18446744073709551615 1 1 0 0 0 0 0 0 0 0 \
                    0 0 17 1 0 0 0 0 0\n";
        let s = ProcStat::parse(line).expect("literal is well-formed");
        assert_eq!(s.pid, 4242);
        assert_eq!(s.comm, "my (odd) prog) x");
        assert_eq!(s.state, 'S');
        assert_eq!(s.ppid, 1);
        assert_eq!(s.pgid, 4240);
        assert_eq!(s.sid, 4239);
        assert_eq!(s.starttime, 987654);
        assert_eq!(s.cpu_ticks, 3 + 1);
        assert_eq!(s.rss_pages, 67);
    }

    #[test]
    fn rejects_truncated() {
        assert!(ProcStat::parse("12 (x) S 1 2").is_err());
        assert!(ProcStat::parse("garbage").is_err());
    }

    #[test]
    fn reads_self() {
        let me = std::process::id() as i32;
        let s = read_stat(me).expect("own stat is readable");
        assert_eq!(s.pid, me);
        assert!(s.starttime > 0);
        let id = ProcessIdentity::of(me).expect("own identity");
        assert!(id.is_alive_same());
        let stale = ProcessIdentity {
            starttime: id.starttime + 1,
            ..id
        };
        assert!(!stale.is_alive_same());
    }
}
