//! Persister figures with real processes, a real SQLite file and real segment logs in a temp dir
//! (on the machine's disk, not tmpfs):
//!
//! - `output`: 100 PTY sessions each write 8 MiB at full speed at once; measured: the time until
//!   every byte is in its segment log (synced), the aggregate MB/s, and bytes the persister lost
//!   to its lag behind the Rings (recorded as gaps; goal: none).
//! - `events`: 100 pipe-mode sessions each print 10,000 NDJSON lines at once (1,000,000 events);
//!   measured: events committed to the journal per second, and dropped ones (goal: none).
//!
//! `cargo bench -p corral-actors --bench persist [-- output|events]`

use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use corral_actors::persist::PersistConfig;
use corral_actors::{Corral, CorralConfig, Mode, SessionSpec, SessionState};
use futures::future::join_all;

const SESSIONS: usize = 100;
const BYTES_EACH: u64 = 8 << 20;
const LINES_EACH: u64 = 10_000;

fn main() {
    let picked: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
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
        if run("output") {
            output().await;
        }
        if run("events") {
            events().await;
        }
    });
}

async fn start() -> (Corral, tempfile::TempDir) {
    // Under target/ (the machine's disk), not /tmp, which may be a tmpfs.
    let base = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench-persist");
    std::fs::create_dir_all(&base).expect("bench dir");
    let dir = tempfile::tempdir_in(base).expect("temp dir");
    let corral = Corral::start(CorralConfig {
        persist: Some(PersistConfig::new(dir.path())),
        ..Default::default()
    })
    .await
    .expect("corral starts");
    (corral, dir)
}

async fn wait_ended(corral: &Corral) {
    loop {
        if corral
            .sessions()
            .list()
            .iter()
            .all(|s| s.state == SessionState::Stopped)
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Spawns every spec at once, waits until all have ended, then flushes the persister.
async fn run_to_end(corral: &Corral, specs: impl Iterator<Item = SessionSpec>) {
    let sessions = corral.sessions();
    for r in join_all(specs.map(|spec| sessions.spawn(spec))).await {
        r.expect("spawn");
    }
    wait_ended(corral).await;
    corral
        .persist()
        .expect("persistence")
        .flush()
        .await
        .expect("flush");
}

async fn output() {
    let (corral, _dir) = start().await;
    let persist = corral.persist().expect("persistence").clone();
    let t = Instant::now();
    run_to_end(
        &corral,
        (0..SESSIONS).map(|i| {
            SessionSpec::new([
                "sh",
                "-c",
                &format!("stty raw -echo; head -c {BYTES_EACH} /dev/zero"),
            ])
            .name(format!("out-{i}"))
        }),
    )
    .await;
    let secs = t.elapsed().as_secs_f64();
    let st = persist.stats();
    let written = st.segment_bytes.load(Relaxed);
    let gaps = st.gap_bytes.load(Relaxed);
    let total = SESSIONS as u64 * BYTES_EACH;
    println!(
        "persist output: {SESSIONS} sessions × {} MiB: {:.2} s, {:.0} MB/s into segment logs; \
         persisted {written} of {total} bytes, gaps {gaps} bytes ({})",
        BYTES_EACH >> 20,
        secs,
        written as f64 / secs / 1e6,
        if gaps == 0 {
            "ok"
        } else {
            "MISSED: lag recorded as gaps"
        }
    );
    corral.shutdown().await.expect("shutdown");
}

async fn events() {
    let (corral, _dir) = start().await;
    let persist = corral.persist().expect("persistence").clone();
    let before = persist.stats().ops_committed.load(Relaxed);
    let t = Instant::now();
    run_to_end(
        &corral,
        (0..SESSIONS).map(|i| {
            SessionSpec::new([
                "sh",
                "-c",
                &format!("seq 1 {LINES_EACH} | sed 's/.*/{{\"n\":&}}/'"),
            ])
            .mode(Mode::Pipe)
            .name(format!("ev-{i}"))
        }),
    )
    .await;
    let secs = t.elapsed().as_secs_f64();
    let st = persist.stats();
    let committed = st.ops_committed.load(Relaxed) - before;
    let dropped = st.ops_dropped.load(Relaxed);
    println!(
        "persist events: {} JSON events from {SESSIONS} sessions: {:.2} s, {:.0} events/s \
         committed ({} commits); dropped {dropped} ({})",
        SESSIONS as u64 * LINES_EACH,
        secs,
        committed as f64 / secs,
        st.commits.load(Relaxed),
        if dropped == 0 { "ok" } else { "MISSED" }
    );
    corral.shutdown().await.expect("shutdown");
}
