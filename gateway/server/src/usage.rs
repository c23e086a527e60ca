//! Usage: CPU and memory of each session's whole process tree, read from /proc on the server
//! when a client asks (nothing polls in the background; an open page's list compares every
//! 2 s), so `corral ps --url http://remote` shows the figures of the machine where the
//! processes run.
//!
//! A session's processes are found by walking its tree through the kernel's `children` lists:
//! under its holder (the parent and subreaper of everything the session starts, so escapees
//! that double-forked are there too; the holder itself is corral's, not counted), else from its
//! main process, plus the orphans this server adopted (a holder-less session's escapees) by
//! their CORRAL_SESSION_ID. A listing costs O(the sessions' processes), not O(every process on
//! the machine): the scan it replaces read every process's environment, every 2 s for each
//! open page. A root counts only while it carries its session's marker (a stale pid reused by
//! another process is not the session's). On a blocking thread (it reads files).

use std::collections::{HashMap, HashSet};

use corral_actors::SessionInfo;
use corral_actors::process::procfs::{self, ProcStat};
use corral_actors::process::reaper;
use corral_actors::process::tree::MARKER_KEY;

use crate::protocol::SessionView;

/// Summed figures of one session's processes.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Usage {
    /// Average CPU % since each process started, summed over the processes.
    pub cpu_percent: f64,
    /// Resident memory in KiB, summed.
    pub rss_kib: u64,
}

impl SessionView {
    /// The views of `sessions`, measured with one walk of their trees.
    pub async fn measure_all(sessions: Vec<SessionInfo>) -> Vec<SessionView> {
        let roots: Vec<Root> = sessions
            .iter()
            .filter(|s| !s.state.is_final())
            .filter_map(|s| {
                Some(Root {
                    id: s.id.to_string(),
                    main: s.pid?,
                    holder: s.holder_pid,
                })
            })
            .collect();
        let usage = match tokio::task::spawn_blocking(move || scan(&roots)).await {
            Ok(u) => u,
            Err(e) => {
                tracing::warn!(error = %e, "process usage scan failed");
                HashMap::new()
            }
        };
        sessions
            .into_iter()
            .map(|info| {
                let u = usage.get(&info.id.to_string()).copied().unwrap_or_default();
                SessionView {
                    info,
                    cpu_percent: Some(u.cpu_percent),
                    rss_kib: Some(u.rss_kib),
                }
            })
            .collect()
    }

    /// One session's view.
    pub async fn measure(info: SessionInfo) -> SessionView {
        let mut all = Self::measure_all(vec![info]).await;
        // invariant: measure_all returns one view per session given.
        all.pop().expect("one view per session")
    }
}

/// Where one live session's processes are.
#[derive(Debug, Clone)]
pub struct Root {
    /// The session id (its marker's value).
    pub id: String,
    /// Its main process.
    pub main: i32,
    /// Its holder, when it has one.
    pub holder: Option<i32>,
}

/// Usage per session id of the processes of `roots` (see the module docs).
pub fn scan(roots: &[Root]) -> HashMap<String, Usage> {
    let me = std::process::id() as i32;
    let mut seen = HashSet::from([me]);
    let mut found: Vec<(&str, Vec<ProcStat>)> = Vec::new();
    for root in roots {
        if procfs::environ_value(root.main, MARKER_KEY).as_deref() != Some(root.id.as_str()) {
            continue;
        }
        let procs = match root.holder {
            Some(holder) if seen.insert(holder) => procfs::children_of(holder)
                .into_iter()
                .flat_map(|kid| procfs::subtree(kid, &mut seen))
                .collect(),
            Some(_) => Vec::new(),
            None => procfs::subtree(root.main, &mut seen),
        };
        found.push((&root.id, procs));
    }
    // Orphans adopted by this server: neither a session's main process (owned) nor a holder
    // (disowned), walked above or not listed.
    for kid in procfs::children_of(me) {
        if seen.contains(&kid) || reaper::is_owned(kid) || reaper::is_disowned(kid) {
            continue;
        }
        let Some(id) = procfs::environ_value(kid, MARKER_KEY) else {
            continue;
        };
        if let Some(root) = roots.iter().find(|r| r.id == id) {
            found.push((&root.id, procfs::subtree(kid, &mut seen)));
        }
    }
    let tick = clock_ticks();
    let uptime = std::fs::read_to_string("/proc/uptime")
        .ok()
        .and_then(|u| {
            u.split_whitespace()
                .next()
                .and_then(|x| x.parse::<f64>().ok())
        })
        .unwrap_or(0.0);
    let page_kib = page_size() / 1024;
    let mut out: HashMap<String, Usage> = HashMap::new();
    for (id, procs) in found {
        let u = out.entry(id.to_owned()).or_default();
        for p in procs {
            let age = uptime - p.starttime as f64 / tick;
            if age > 0.0 {
                u.cpu_percent += 100.0 * (p.cpu_ticks as f64 / tick) / age;
            }
            u.rss_kib += p.rss_pages * page_kib;
        }
    }
    out
}

fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as f64 } else { 100.0 }
}

fn page_size() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if p > 0 { p as u64 } else { 4096 }
}
