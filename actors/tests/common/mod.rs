//! Helpers for session tests: a corral tree per test and /proc checks by session marker.

#![allow(dead_code)]

use std::time::Duration;

use corral_actors::process::procfs;
use corral_actors::{Corral, CorralConfig, Item, SessionEvent, SessionHandle, Subscription};
use uuid::Uuid;

/// A fresh corral tree as `corral serve` runs it: child subreaper (orphans of sessions come to
/// this test process, and sweeps walk its subtree).
pub async fn corral() -> Corral {
    corral_with(true).await
}

/// Like [`corral`], choosing subreaper mode. Subreaper mode is process-wide and sticky: a test
/// binary that wants the embedded default (off, sweeps scan all of `/proc`) must never call
/// [`corral`].
pub async fn corral_with(subreaper: bool) -> Corral {
    // RUST_LOG=corral_actors=debug shows the session lifecycle when a test needs explaining.
    if std::env::var_os("RUST_LOG").is_some() {
        let filter = tracing_subscriber::EnvFilter::from_default_env();
        // Several tests race to install it; the first wins, which is all we need.
        if tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_test_writer()
            .try_init()
            .is_err()
        {}
    }
    if let Err(e) = corral_actors::process::limits::raise_nofile() {
        eprintln!("could not raise RLIMIT_NOFILE: {e}");
    }
    Corral::start(CorralConfig {
        subreaper,
        ..CorralConfig::default()
    })
    .await
    .expect("corral starts")
}

/// Live (non-zombie) processes carrying this session's marker.
pub fn marked(id: Uuid) -> Vec<i32> {
    let id = id.to_string();
    let all = procfs::all();
    // Not looking is no answer: this test's own process is always there.
    assert!(!all.is_empty(), "/proc could not be read");
    all.into_iter()
        .filter(|p| !p.is_zombie())
        .filter(|p| procfs::environ_has(p.pid, "CORRAL_SESSION_ID", &id))
        .map(|p| p.pid)
        .collect()
}

/// Whether `pid` exists at all (zombie included).
pub fn exists(pid: i32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// Waits (bounded) until `cond` holds.
pub async fn eventually(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + timeout;
    while !cond() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Asserts that nothing of the session is left: no marked process, main pid gone.
pub async fn assert_nothing_left(h: &SessionHandle, main: Option<i32>) {
    let id = h.id();
    eventually(
        "no process of the session left",
        Duration::from_secs(5),
        || marked(id).is_empty(),
    )
    .await;
    if let Some(pid) = main {
        // Reaped by the session: no zombie either.
        eventually("main pid reaped", Duration::from_secs(5), || !exists(pid)).await;
    }
}

/// Reads a subscription until `n` output bytes arrived (panics on lag), with a timeout.
pub async fn read_exact(sub: &mut Subscription, n: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(n);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while out.len() < n {
        let item = tokio::time::timeout_at(deadline, sub.next(1 << 20))
            .await
            .expect("output in time");
        match item {
            Item::Output { bytes, .. } => out.extend_from_slice(&bytes),
            Item::Lagged(l) => panic!("unexpected lag {l:?}"),
            Item::Closed => panic!("closed after {} bytes", out.len()),
            _ => {}
        }
    }
    out
}

/// Reads until the output contains `needle`, returning everything read.
pub async fn read_until(sub: &mut Subscription, needle: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        if out.windows(needle.len()).any(|w| w == needle) {
            return out;
        }
        let item = tokio::time::timeout_at(deadline, sub.next(1 << 20))
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "no {:?} in output: {:?}",
                    String::from_utf8_lossy(needle),
                    String::from_utf8_lossy(&out)
                )
            });
        if let Item::Output { bytes, .. } = item {
            out.extend_from_slice(&bytes);
        }
    }
}

/// Waits for an event matching `pred` on a subscription, collecting output meanwhile.
pub async fn until_event(
    sub: &mut Subscription,
    mut pred: impl FnMut(&SessionEvent) -> bool,
) -> (Vec<u8>, SessionEvent) {
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let item = tokio::time::timeout_at(deadline, sub.next(1 << 20))
            .await
            .expect("event in time");
        match item {
            Item::Output { bytes, .. } => out.extend_from_slice(&bytes),
            Item::Event(e) if pred(&e) => return (out, e),
            Item::Closed => panic!("closed before the event"),
            _ => {}
        }
    }
}

/// Waits (bounded) until a process of the session runs `comm` (e.g. a script got past
/// `stty raw -echo` and now blocks in `head` for its go byte, which then is not echoed).
pub async fn wait_for_comm(id: Uuid, comm: &str) {
    eventually(&format!("{comm} running"), Duration::from_secs(20), || {
        marked(id).into_iter().any(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == comm)
        })
    })
    .await;
}

/// `n` pseudo-random bytes (xorshift from `seed`): output no terminal would rewrite by accident.
pub fn payload(n: usize, seed: u64) -> Vec<u8> {
    let mut data = vec![0u8; n];
    let mut x = seed | 1;
    for chunk in data.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
    }
    data
}
