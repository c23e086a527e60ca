//! Session-layer figures against real processes in real PTYs, with the goal beside each
//! (goals for the project's 2-core machine):
//!
//! - `memory`: server RSS per idle session, N = 1000 (`cat`, then 1000 more that printed a
//!   prompt, since the Ring allocates lazily). Goal ≤ 32 KB. Children are separate processes and
//!   not counted: this is the corral process only.
//! - `cpu`: CPU of this process while 1000 idle sessions live for 10 s. Goal ≤ 0.5 % of one core
//!   (nothing polls). Then the time `stop_all` takes for those 1000.
//! - `stop`: spawn 200 `cat` sessions concurrently, then `stop_all`. Goal ≤ 0.3 s in total; after
//!   removing them no process carrying their marker may remain.
//! - `throughput`: a raw-mode writer of 256 MiB through corral (PTY → Ring → one Subscription)
//!   against a plain blocking read loop of a PTY opened with portable-pty, same argv, same run,
//!   3 runs each alternating. Goal: corral ≥ 0.95× the plain loop (ratio of medians).
//!
//! The idle scenarios run first so the RSS baseline is not flattered by heap that earlier
//! scenarios freed. Select scenarios by name, all by default:
//!
//! `cargo bench -p corral-actors --bench sessions [-- throughput|stop|memory|cpu ...]`

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use corral_actors::process::{MARKER_KEY, procfs};
use corral_actors::{
    Corral, CorralConfig, EventKind, Item, SessionHandle, SessionSpec, SessionState, Sessions,
};
use futures::future::join_all;
use nix::sys::resource::{UsageWho, getrusage};
use portable_pty::{CommandBuilder, PtySize, native_pty_system};

/// Every scenario, in the order they run.
const SCENARIOS: [&str; 4] = ["memory", "cpu", "stop", "throughput"];

/// Bytes the throughput writer produces.
const TP_BYTES: u64 = 256 << 20;
/// Runs per side in the throughput comparison.
const TP_RUNS: usize = 3;
/// Longest wait for the writer script to reach its go-byte read.
const GO_WAIT: Duration = Duration::from_secs(20);
/// Sessions in the spawn + stop scenario.
const STOP_N: usize = 200;
/// Idle sessions for the memory and CPU scenarios.
const IDLE_N: usize = 1000;
/// Quiet time before reading RSS.
const SETTLE: Duration = Duration::from_secs(1);
/// How long the CPU of the idle sessions is sampled.
const CPU_WINDOW: Duration = Duration::from_secs(10);

fn main() {
    // `cargo bench` passes `--bench`; anything else starting with '-' is ignored too.
    let picked: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    if let Some(bad) = picked.iter().find(|a| !SCENARIOS.contains(&a.as_str())) {
        eprintln!(
            "unknown scenario {bad:?}; choose from {}",
            SCENARIOS.join(", ")
        );
        std::process::exit(2);
    }
    let run = |name: &str| picked.is_empty() || picked.iter().any(|p| p == name);

    if let Err(e) = corral_actors::process::limits::raise_nofile() {
        eprintln!("could not raise RLIMIT_NOFILE: {e}");
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        // As `corral serve` runs: a child subreaper (sweeps then walk only corral's subtree).
        let corral = Corral::start(CorralConfig {
            subreaper: true,
            ..CorralConfig::default()
        })
        .await
        .expect("corral starts");
        let sessions = corral.sessions();
        if run("memory") || run("cpu") {
            idle(sessions, run("memory"), run("cpu")).await;
        }
        if run("stop") {
            spawn_and_stop(sessions).await;
        }
        if run("throughput") {
            throughput(sessions).await;
        }
        corral.shutdown().await.expect("shutdown");
    });
}

/// "ok" or "MISSED", for the end of a figure's line.
fn verdict(ok: bool) -> &'static str {
    if ok { "ok" } else { "MISSED" }
}

// ---------------------------------------------------------------------------------------------
// Throughput

/// Waits for a go byte, then writes `TP_BYTES` as fast as it can with output processing off.
fn tp_argv() -> [String; 3] {
    [
        "sh".into(),
        "-c".into(),
        format!("stty raw -echo; head -c1 >/dev/null; head -c {TP_BYTES} /dev/zero"),
    ]
}

/// One timed transfer.
struct Run {
    /// Bytes received.
    bytes: u64,
    /// Bytes reported lost to the subscriber (corral side only).
    lagged: u64,
    /// Go byte → end.
    secs: f64,
    /// CPU seconds this process used meanwhile (user + system, all threads).
    cpu: f64,
    /// Pieces the bytes came in: `read(2)` calls (baseline), output items (corral).
    chunks: u64,
}

impl Run {
    /// Bytes that crossed the PTY per second (lagged bytes reached the Ring too), in MB/s.
    fn mbps(&self) -> f64 {
        (self.bytes + self.lagged) as f64 / self.secs / 1e6
    }
}

async fn throughput(sessions: &Sessions) {
    let mut plain = Vec::new();
    let mut ring = Vec::new();
    for i in 0..TP_RUNS {
        let b = tokio::task::spawn_blocking(plain_run)
            .await
            .expect("baseline thread");
        println!(
            "[throughput] run {}/{TP_RUNS} plain read loop: {} B in {:.3} s = {:.0} MB/s (process CPU {:.2} s; {} reads, {:.1} KiB each)",
            i + 1,
            b.bytes,
            b.secs,
            b.mbps(),
            b.cpu,
            b.chunks,
            b.bytes as f64 / b.chunks.max(1) as f64 / 1024.0
        );
        check_total("plain read loop", &b);
        plain.push(b);
        let c = corral_run(sessions, i).await;
        println!(
            "[throughput] run {}/{TP_RUNS} corral Ring:     {} B received + {} B lagged ({:.1} %) in {:.3} s = {:.0} MB/s (process CPU {:.2} s; {} items, {:.1} KiB each)",
            i + 1,
            c.bytes,
            c.lagged,
            c.lagged as f64 * 100.0 / (c.bytes + c.lagged) as f64,
            c.secs,
            c.mbps(),
            c.cpu,
            c.chunks,
            c.bytes as f64 / c.chunks.max(1) as f64 / 1024.0
        );
        check_total("corral", &c);
        ring.push(c);
    }
    let plain_med = median(plain.iter().map(Run::mbps).collect());
    let ring_med = median(ring.iter().map(Run::mbps).collect());
    let ratio = ring_med / plain_med;
    println!(
        "[throughput] PTY → Ring {ring_med:.0} MB/s vs plain blocking read loop {plain_med:.0} MB/s (medians of {TP_RUNS}, 256 MiB raw): ratio {ratio:.2}×  (goal ≥ 0.95×) {}",
        verdict(ratio >= 0.95)
    );
}

/// Whether the script `pid` got past `stty raw -echo` and runs the `head` that waits for the go
/// byte (sent earlier, the byte would be echoed and counted).
fn waits_for_go(pid: i32) -> bool {
    procfs::children_of(pid)
        .into_iter()
        .any(|kid| procfs::read_stat(kid).is_ok_and(|s| s.comm == "head"))
}

/// Warns when a run did not see every byte the writer produced.
fn check_total(who: &str, r: &Run) {
    if r.bytes + r.lagged != TP_BYTES {
        println!(
            "[throughput] WARNING: {who} accounted for {} B, expected {TP_BYTES}",
            r.bytes + r.lagged
        );
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// corral: spawn, one Subscription from offset 0, go byte → the Exited event.
async fn corral_run(sessions: &Sessions, i: usize) -> Run {
    let h = sessions
        .spawn(SessionSpec::new(tp_argv()).name(format!("bench-tp-{i}")))
        .await
        .expect("spawn");
    let mut sub = h.subscribe(Some(0)).expect("subscribe");
    let pid = h.info().pid.expect("running");
    let deadline = Instant::now() + GO_WAIT;
    while !waits_for_go(pid) {
        assert!(
            Instant::now() < deadline,
            "the script never reached its go read"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let cpu0 = rusage_secs();
    let t0 = Instant::now();
    h.input(0, b"g".to_vec()).expect("go byte");
    // On a runtime worker, as a gateway client's task would be.
    let reading = tokio::spawn(async move {
        let (mut bytes, mut lagged, mut chunks) = (0u64, 0u64, 0u64);
        loop {
            match sub.next(1 << 20).await {
                Item::Output { bytes: b, .. } => {
                    bytes += b.len() as u64;
                    chunks += 1;
                }
                Item::Lagged(l) => lagged += l.to - l.from,
                Item::Event(e) if matches!(e.kind, EventKind::Exited { .. }) => break,
                Item::Closed => panic!("stream closed before the exit"),
                _ => {}
            }
        }
        (bytes, lagged, chunks, Instant::now())
    });
    let (bytes, lagged, chunks, end) = tokio::time::timeout(Duration::from_secs(300), reading)
        .await
        .expect("the writer exits within 300 s")
        .expect("subscriber task");
    let cpu = rusage_secs() - cpu0;
    sessions.remove(&h.id().to_string()).await.expect("remove");
    Run {
        bytes,
        lagged,
        secs: (end - t0).as_secs_f64(),
        cpu,
        chunks,
    }
}

/// The baseline: the same argv in a PTY from portable-pty, the master read by a blocking loop
/// with a 64 KiB buffer on a dedicated thread until EOF/EIO, then the child reaped; go byte → reaped.
fn plain_run() -> Run {
    let pair = native_pty_system()
        .openpty(PtySize {
            rows: 24,
            cols: 80,
            pixel_width: 0,
            pixel_height: 0,
        })
        .expect("openpty");
    let [program, rest @ ..] = tp_argv();
    let mut cmd = CommandBuilder::new(program);
    cmd.args(rest);
    let mut child = pair.slave.spawn_command(cmd).expect("spawn");
    let pid = child.process_id().expect("pid") as i32;
    // Only the child may hold the slave side, or the master never sees EIO.
    drop(pair.slave);
    let mut reader = pair.master.try_clone_reader().expect("reader");
    // Kept until the child is gone: dropping portable-pty's writer types "\n" + VEOF.
    let mut writer = pair.master.take_writer().expect("writer");
    let reading = std::thread::spawn(move || {
        let mut buf = vec![0u8; 64 * 1024];
        let (mut n, mut chunks) = (0u64, 0u64);
        loop {
            match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(k) => {
                    n += k as u64;
                    chunks += 1;
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                // portable-pty maps EIO to Ok(0) already; this is belt and braces.
                Err(e) if e.raw_os_error() == Some(libc::EIO) => break,
                Err(e) => panic!("read: {e}"),
            }
        }
        child.wait().expect("wait");
        (n, chunks, Instant::now())
    });
    let deadline = Instant::now() + GO_WAIT;
    while !waits_for_go(pid) {
        assert!(
            Instant::now() < deadline,
            "the script never reached its go read"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let cpu0 = rusage_secs();
    let t0 = Instant::now();
    writer.write_all(b"g").expect("go byte");
    writer.flush().expect("flush");
    let (bytes, chunks, end) = reading.join().expect("reader thread");
    let cpu = rusage_secs() - cpu0;
    drop(writer);
    Run {
        bytes,
        lagged: 0,
        secs: (end - t0).as_secs_f64(),
        cpu,
        chunks,
    }
}

// ---------------------------------------------------------------------------------------------
// Spawn + stop

async fn spawn_and_stop(sessions: &Sessions) {
    let t0 = Instant::now();
    let handles = spawn_many(sessions, STOP_N, "bench-stop", || SessionSpec::new(["cat"])).await;
    let spawned = t0.elapsed();
    let t1 = Instant::now();
    sessions.stop_all().await;
    let stopped = t1.elapsed();
    let total = t0.elapsed();
    let not_final = handles
        .iter()
        .filter(|h| !h.info().state.is_final())
        .count();
    let not_stopped = handles
        .iter()
        .filter(|h| h.info().state != SessionState::Stopped)
        .count();
    remove_all(sessions, &handles).await;
    let left = marked_left(&handles);
    println!(
        "[stop] spawn {STOP_N} `cat` concurrently {:.3} s + stop_all {:.3} s = {:.3} s  (goal ≤ 0.3 s) {}",
        spawned.as_secs_f64(),
        stopped.as_secs_f64(),
        total.as_secs_f64(),
        verdict(total <= Duration::from_millis(300))
    );
    println!(
        "[stop] after stop_all: {not_final} not final, {not_stopped} not Stopped; after remove: {left} live processes with their {MARKER_KEY}  (goal 0) {}",
        verdict(left == 0 && not_final == 0)
    );
}

/// Spawns `n` sessions named `<prefix>-<i>` concurrently.
async fn spawn_many(
    sessions: &Sessions,
    n: usize,
    prefix: &str,
    spec: impl Fn() -> SessionSpec,
) -> Vec<SessionHandle> {
    join_all((0..n).map(|i| sessions.spawn(spec().name(format!("{prefix}-{i}")))))
        .await
        .into_iter()
        .collect::<Result<Vec<_>, _>>()
        .expect("spawn")
}

/// Spawns `n` sessions in batches of 100 (each batch concurrently), so a spawn's cost can be
/// seen to grow with the sessions alive; returns them and each batch's time in seconds.
async fn spawn_batched(
    sessions: &Sessions,
    n: usize,
    prefix: &str,
    spec: impl Fn() -> SessionSpec,
) -> (Vec<SessionHandle>, Vec<f64>) {
    let mut all = Vec::with_capacity(n);
    let mut batches = Vec::new();
    for b in 0..n.div_ceil(100) {
        let t = Instant::now();
        let count = (n - b * 100).min(100);
        all.extend(spawn_many(sessions, count, &format!("{prefix}-{b}"), &spec).await);
        batches.push(t.elapsed().as_secs_f64());
    }
    (all, batches)
}

/// Removes every session of `handles`, concurrently.
async fn remove_all(sessions: &Sessions, handles: &[SessionHandle]) {
    let ids: Vec<String> = handles.iter().map(|h| h.id().to_string()).collect();
    for (id, r) in ids
        .iter()
        .zip(join_all(ids.iter().map(|id| sessions.remove(id))).await)
    {
        if let Err(e) = r {
            println!("remove {id}: {e}");
        }
    }
}

/// Live processes carrying the marker of any of `handles`.
fn marked_left(handles: &[SessionHandle]) -> usize {
    let ids: Vec<String> = handles.iter().map(|h| h.id().to_string()).collect();
    procfs::all()
        .into_iter()
        .filter(|p| !p.is_zombie())
        .filter(|p| {
            ids.iter()
                .any(|id| procfs::environ_has(p.pid, MARKER_KEY, id))
        })
        .count()
}

// ---------------------------------------------------------------------------------------------
// Idle sessions: memory and CPU

async fn idle(sessions: &Sessions, memory: bool, cpu: bool) {
    // One-time costs (first fork, lazily built statics, runtime threads) are not per session.
    let warm = spawn_many(sessions, 10, "bench-warm", || SessionSpec::new(["cat"])).await;
    remove_all(sessions, &warm).await;
    tokio::time::sleep(SETTLE).await;

    let rss0 = rss_kib();
    let fds0 = fd_count();
    let t = Instant::now();
    let (cats, batches) =
        spawn_batched(sessions, IDLE_N, "bench-idle", || SessionSpec::new(["cat"])).await;
    let spawn_time = t.elapsed();
    tokio::time::sleep(SETTLE).await;
    let rss1 = rss_kib();
    let fds1 = fd_count();
    println!(
        "[idle] spawned {IDLE_N} idle `cat` sessions in {:.2} s (batches of 100: first {:.2} s, last {:.2} s); RSS {} → {} KiB, {} fds → {}",
        spawn_time.as_secs_f64(),
        batches[0],
        batches[batches.len() - 1],
        rss0,
        rss1,
        fds0,
        fds1
    );
    if memory {
        let per = per_session_kb(rss0, rss1);
        println!(
            "[memory] server RSS per idle session (no output), N = {IDLE_N}: {per:.1} KB, {:.1} fds  (goal ≤ 32 KB) {}",
            (fds1 - fds0) as f64 / IDLE_N as f64,
            verdict(per <= 32.0)
        );
    }

    if cpu {
        let ticks0 = cpu_ticks();
        let ru0 = rusage_secs();
        let t0 = Instant::now();
        tokio::time::sleep(CPU_WINDOW).await;
        let wall = t0.elapsed().as_secs_f64();
        let ticks = cpu_ticks() - ticks0;
        let ru = rusage_secs() - ru0;
        let pct = ticks as f64 / clk_tck() / wall * 100.0;
        println!(
            "[cpu] {IDLE_N} idle sessions over {wall:.1} s: {pct:.2} % of one core ({ticks} ticks of 1/{:.0} s; getrusage {:.3} % = {:.1} ms)  (goal ≤ 0.5 %) {}",
            clk_tck(),
            ru / wall * 100.0,
            ru * 1e3,
            verdict(pct <= 0.5)
        );
    }

    if memory {
        // The same on top of the 1000, for sessions whose Ring holds a little output.
        let rss2 = rss_kib();
        let tp = Instant::now();
        let (prompts, pbatches) = spawn_batched(sessions, IDLE_N, "bench-prompt", || {
            SessionSpec::new(["sh", "-c", "printf '$ '; exec cat"])
        })
        .await;
        let prompt_spawn = tp.elapsed();
        let deadline = Instant::now() + Duration::from_secs(20);
        while prompts.iter().any(|h| h.info().output_offset < 2) {
            assert!(Instant::now() < deadline, "prompts did not arrive");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        tokio::time::sleep(SETTLE).await;
        let rss3 = rss_kib();
        let per = per_session_kb(rss2, rss3);
        println!(
            "[memory] server RSS per idle session after a 2-byte prompt, N = {IDLE_N} (on top of the {IDLE_N} above): {per:.1} KB  (goal ≤ 32 KB) {}",
            verdict(per <= 32.0)
        );
        let tr = Instant::now();
        remove_all(sessions, &prompts).await;
        println!(
            "[idle] {IDLE_N} prompt sessions with {IDLE_N} others alive: spawned in {:.2} s (batches of 100: first {:.2} s, last {:.2} s), removed in {:.2} s",
            prompt_spawn.as_secs_f64(),
            pbatches[0],
            pbatches[pbatches.len() - 1],
            tr.elapsed().as_secs_f64()
        );
    }

    let t = Instant::now();
    sessions.stop_all().await;
    let stop = t.elapsed();
    remove_all(sessions, &cats).await;
    let left = marked_left(&cats);
    println!(
        "[idle] stop_all of {IDLE_N} idle `cat` sessions: {:.2} s; after remove: {left} live processes with their marker  (goal 0) {}",
        stop.as_secs_f64(),
        verdict(left == 0)
    );
    drop(cats);
    let rss_removed = rss_kib();
    // Tells a leak from heap the allocator keeps: glibc returns free pages on request.
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim has no preconditions.
    unsafe {
        libc::malloc_trim(0);
    }
    println!(
        "[idle] RSS with every session removed: {rss_removed} KiB; after malloc_trim(0): {} KiB (was {rss0} KiB before the sessions)",
        rss_kib()
    );
}

/// RSS growth per session in KB (1000 bytes), from two VmRSS readings in KiB.
fn per_session_kb(before_kib: u64, after_kib: u64) -> f64 {
    after_kib.saturating_sub(before_kib) as f64 * 1024.0 / IDLE_N as f64 / 1000.0
}

/// VmRSS of this process, KiB.
fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

/// Open fds of this process.
fn fd_count() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count())
        .unwrap_or(0)
}

/// utime + stime of this process (all threads, children excluded), in clock ticks.
fn cpu_ticks() -> u64 {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("/proc/self/stat");
    let close = stat.rfind(')').expect("comm");
    // Fields after the comm start at field 3; utime and stime are fields 14 and 15.
    let rest: Vec<&str> = stat[close + 1..].split_ascii_whitespace().collect();
    let field = |n: usize| rest[n - 3].parse::<u64>().expect("numeric field");
    field(14) + field(15)
}

/// Clock ticks per second.
fn clk_tck() -> f64 {
    // SAFETY: sysconf has no preconditions.
    (unsafe { libc::sysconf(libc::_SC_CLK_TCK) }) as f64
}

/// User + system CPU seconds of this process, at getrusage's finer resolution.
fn rusage_secs() -> f64 {
    let u = getrusage(UsageWho::RUSAGE_SELF).expect("getrusage");
    let s = |t: nix::sys::time::TimeVal| t.tv_sec() as f64 + t.tv_usec() as f64 / 1e6;
    s(u.user_time()) + s(u.system_time())
}
