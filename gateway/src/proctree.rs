//! CPU and memory of a session's whole process tree, read from /proc when `ps` asks (nothing
//! polls in the background). Processes are found by their CORRAL_SESSION_ID, the marker every
//! process of a session inherits.

/// (average CPU % since each process started, summed; RSS in KiB, summed) of the session's
/// processes; (0, 0) when none is visible (another user's, or none running).
pub fn usage(session: &str) -> (f64, u64) {
    let needle = format!("CORRAL_SESSION_ID={session}");
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
    let (mut cpu, mut rss) = (0.0, 0u64);
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return (0.0, 0);
    };
    for e in dir.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(env) = std::fs::read(format!("/proc/{pid}/environ")) else {
            continue;
        };
        if !env.split(|&b| b == 0).any(|kv| kv == needle.as_bytes()) {
            continue;
        }
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
        if age > 0.0 {
            cpu += 100.0 * busy / age;
        }
        rss += num(21) as u64 * page_kib;
    }
    (cpu, rss)
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
