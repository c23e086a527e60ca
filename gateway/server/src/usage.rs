//! Usage: CPU and memory of each session's whole process tree, read from /proc on the server
//! when a client asks (nothing polls in the background; an open page's list compares every
//! 2 s), so `corral ps --url http://remote` shows the figures of the machine where the
//! processes run.
//!
//! A session's processes are the members of its `SessionTree` (`corral_actors::process::tree`),
//! the processes a stop reaches: found by walking its tree through the kernel's `children` lists
//! — under its holder (the parent and subreaper of everything the session starts; the holder
//! itself is corral's, not counted), from its main process, and orphans this server adopted,
//! by their CORRAL_SESSION_ID. A listing costs O(the sessions' processes), not O(every process
//! on the machine): the scan it replaces read every process's environment, every 2 s for each
//! open page. A session counts only while its main process carries its marker (a stale pid
//! reused by another process is not the session's). On a blocking thread (it reads files).

use std::collections::HashMap;

use corral_actors::SessionInfo;
use corral_actors::process::procfs::{self, ProcStat};
use corral_actors::process::tree::{self, MARKER_KEY, SessionTree};

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
                // A session without a process has no figures (null, `-` in `corral ps`), not 0.
                let u = usage.get(&info.id.to_string()).copied();
                SessionView {
                    info,
                    cpu_percent: u.map(|u| u.cpu_percent),
                    rss_kib: u.map(|u| u.rss_kib),
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

/// Usage per session id of the processes of `roots` (see the module docs): each session's
/// members as its [`SessionTree`] finds them — the same processes a stop reaches.
pub fn scan(roots: &[Root]) -> HashMap<String, Usage> {
    let me = std::process::id() as i32;
    // Read once for every session: this server and the orphans it adopted.
    let adopted = tree::adopted();
    let mut found: Vec<(&str, Vec<ProcStat>)> = Vec::new();
    for root in roots {
        if procfs::environ_value(root.main, MARKER_KEY).as_deref() != Some(root.id.as_str()) {
            continue;
        }
        let mut session = SessionTree::new(root.main).with_marker(root.id.clone());
        session.holder = root.holder.unwrap_or(0);
        let candidates = session.candidates_among(adopted.as_deref());
        found.push((&root.id, session.members(&candidates, me)));
    }
    let tick = procfs::clock_ticks() as f64;
    // Read once for every process of the listing.
    let uptime = procfs::uptime().unwrap_or(0.0);
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

fn page_size() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if p > 0 { p as u64 } else { 4096 }
}
