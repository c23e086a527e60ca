//! Usage: CPU and memory of each session's whole process tree, read from /proc on the server
//! when a client asks (nothing polls in the background), so `corral ps --url http://remote`
//! shows the figures of the machine where the processes run. Processes are found by their
//! CORRAL_SESSION_ID, the marker every process of a session inherits; one scan of /proc
//! serves a whole listing, on a blocking thread (it reads files).

use std::collections::HashMap;

use corral_actors::SessionInfo;

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
    /// The views of `sessions`, measured with one scan of /proc.
    pub async fn measure_all(sessions: Vec<SessionInfo>) -> Vec<SessionView> {
        let usage = match tokio::task::spawn_blocking(scan).await {
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

/// Usage per session id of every process visible in /proc that carries a CORRAL_SESSION_ID.
/// Processes of other users (unreadable environ) are skipped.
pub fn scan() -> HashMap<String, Usage> {
    const MARKER: &[u8] = b"CORRAL_SESSION_ID=";
    let mut out: HashMap<String, Usage> = HashMap::new();
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
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in dir.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(env) = std::fs::read(format!("/proc/{pid}/environ")) else {
            continue;
        };
        let Some(session) = env
            .split(|&b| b == 0)
            .find_map(|kv| kv.strip_prefix(MARKER))
            .map(|v| String::from_utf8_lossy(v).into_owned())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let Some((_, rest)) = stat.rsplit_once(") ") else {
            continue;
        };
        let f: Vec<&str> = rest.split_whitespace().collect();
        // Fields after comm: state=0, utime=11, stime=12, starttime=19, rss=21 (pages).
        let num = |i: usize| f.get(i).and_then(|x| x.parse::<f64>().ok()).unwrap_or(0.0);
        let busy = (num(11) + num(12)) / tick;
        let age = uptime - num(19) / tick;
        let u = out.entry(session).or_default();
        if age > 0.0 {
            u.cpu_percent += 100.0 * busy / age;
        }
        u.rss_kib += num(21) as u64 * page_kib;
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
