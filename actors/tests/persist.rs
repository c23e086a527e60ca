//! Persistence with real files: a real SQLite database and real segment logs in a temp dir,
//! real processes. Sessions, events and scrollback survive a restart of the tree; the journal
//! keeps its bound; a full disk is reported and recovered from without stopping the terminals.

mod common;

use std::path::Path;
use std::time::Duration;

use common::*;
use corral_actors::persist::{Chunk, PersistConfig};
use corral_actors::{
    Corral, CorralConfig, EventKind, Mode, RestartPolicy, SessionError, SessionSpec, SessionState,
};

async fn persistent(dir: &Path) -> Corral {
    persistent_with(PersistConfig::new(dir)).await
}

async fn persistent_with(config: PersistConfig) -> Corral {
    Corral::start(CorralConfig {
        persist: Some(config),
        ..Default::default()
    })
    .await
    .expect("corral starts")
}

fn sh(script: &str) -> SessionSpec {
    SessionSpec::new(["sh", "-c", script]).grace(Duration::from_millis(300))
}

/// Everything the scrollback holds, as bytes (gaps as `?`).
async fn scrollback(corral: &Corral, id: uuid::Uuid) -> (Vec<u8>, u64) {
    let reader = corral.persist().unwrap().reader(id).await.unwrap();
    let first = reader.first_offset().unwrap_or(0);
    let chunks = reader.read_range(first, usize::MAX).unwrap();
    let mut out = Vec::new();
    for c in chunks {
        match c {
            Chunk::Data { bytes, .. } => out.extend_from_slice(&bytes),
            Chunk::Gap { from, to } => out.extend(std::iter::repeat_n(b'?', (to - from) as usize)),
        }
    }
    (out, reader.next_offset())
}

#[tokio::test]
async fn sessions_events_and_scrollback_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let corral = persistent(dir.path()).await;
    let s = corral.sessions();
    let always = s
        .spawn(
            sh("echo run-$$; exec sleep 1000")
                .name("always")
                .restart(RestartPolicy::Always),
        )
        .await
        .unwrap();
    let never = s
        .spawn(sh("echo never; exec sleep 1000").name("never"))
        .await
        .unwrap();
    let done = s.spawn(sh("echo done").name("done")).await.unwrap();
    let mut sub = always.subscribe(Some(0)).unwrap();
    read_until(&mut sub, b"\n").await;
    eventually("done exits", Duration::from_secs(5), || {
        done.info().state == SessionState::Stopped
    })
    .await;
    let first_head = always.info().output_offset;
    let always_id = always.id();
    let never_pid = never.info().pid.unwrap();
    corral.persist().unwrap().flush().await.unwrap();
    corral.shutdown().await.unwrap();
    assert!(!exists(never_pid) || marked(never.id()).is_empty());

    let corral = persistent(dir.path()).await;
    let report = corral.recovery().unwrap().clone();
    assert_eq!(report.found, 3, "{report:?}");
    assert_eq!(report.restored, 3, "{report:?}");
    assert_eq!(report.restarted, 1, "{report:?}");
    let s = corral.sessions();
    let always = s.get("always").unwrap();
    assert_eq!(always.id(), always_id, "ids survive a restart");
    let info = always.info();
    assert_eq!(info.state, SessionState::Running);
    assert_eq!(info.restarts, 1);
    // Offsets continue where the first run's output ended.
    let mut sub = always.subscribe(Some(first_head)).unwrap();
    let second = read_until(&mut sub, b"\n").await;
    assert!(
        String::from_utf8_lossy(&second).contains("run-"),
        "{second:?}"
    );
    let never = s.get("never").unwrap().info();
    assert_eq!(never.state, SessionState::Stopped);
    assert!(
        never
            .reason
            .as_deref()
            .unwrap_or("")
            .contains("not restarted"),
        "{never:?}"
    );
    let done = s.get("done").unwrap().info();
    assert_eq!(done.state, SessionState::Stopped);
    assert_eq!(done.last_exit.map(|e| e.success()), Some(true));

    // Scrollback holds both runs, in order, on disk.
    corral.persist().unwrap().flush().await.unwrap();
    let (bytes, next) = scrollback(&corral, always_id).await;
    let text = String::from_utf8_lossy(&bytes);
    assert_eq!(text.matches("run-").count(), 2, "{text:?}");
    assert_eq!(next, always.info().output_offset);

    // The journal continues the numbering and records the recovery decision.
    let events = corral
        .persist()
        .unwrap()
        .events(always_id, 0, 1000)
        .await
        .unwrap();
    let seqs: Vec<u64> = events.iter().map(|e| e.seq).collect();
    let expected: Vec<u64> = (1..=seqs.len() as u64).collect();
    assert_eq!(
        seqs, expected,
        "no duplicate or missing seq across the restart"
    );
    assert!(
        events.iter().any(|e| matches!(&e.kind, EventKind::Recovery { decision } if decision.contains("restarting"))),
        "{events:?}"
    );
    // One kind alone, as the database filters it: the same events, in order.
    let recoveries = corral
        .persist()
        .unwrap()
        .events_of(always_id, Some("recovery"), 0, 1000)
        .await
        .unwrap();
    let expected: Vec<&corral_actors::SessionEvent> = events
        .iter()
        .filter(|e| matches!(e.kind, EventKind::Recovery { .. }))
        .collect();
    assert!(!recoveries.is_empty());
    assert_eq!(recoveries.iter().collect::<Vec<_>>(), expected);
    assert_eq!(
        corral.persist().unwrap().integrity_check().await.unwrap(),
        "ok"
    );
    // The registry's columns say who runs, for tools and for the next recovery.
    let db = rusqlite::Connection::open(dir.path().join("state.db")).unwrap();
    let (state, pid, starttime, boot, restarts): (String, i64, i64, String, i64) = db
        .query_row(
            "SELECT state, pid, starttime, boot_id, restarts FROM sessions WHERE name = 'always'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
        )
        .unwrap();
    let me = corral_actors::process::ProcessIdentity::of(pid as i32).unwrap();
    assert_eq!(state, "running");
    assert_eq!(Some(pid as i32), always.info().pid);
    assert_eq!((starttime as u64, boot), (me.starttime, me.boot_id));
    assert_eq!(restarts, 1);

    // Removal deletes the records and the scrollback.
    corral.sessions().remove("always").await.unwrap();
    corral.persist().unwrap().flush().await.unwrap();
    assert!(!dir.path().join("logs").join(always_id.to_string()).exists());
    corral.shutdown().await.unwrap();
    let corral = persistent(dir.path()).await;
    assert!(corral.sessions().get("always").is_err());
    assert_eq!(corral.sessions().len(), 2);
    corral.shutdown().await.unwrap();
}

#[tokio::test]
async fn event_journal_keeps_its_bound_past_100k_events() {
    let dir = tempfile::tempdir().unwrap();
    let corral = persistent(dir.path()).await;
    // 120,000 NDJSON lines: each one is an event of the pipe-mode session.
    let h = corral
        .sessions()
        .spawn(
            SessionSpec::new(["sh", "-c", "seq 1 120000 | sed 's/.*/{\"n\":&}/'"]).mode(Mode::Pipe),
        )
        .await
        .unwrap();
    eventually("the session ends", Duration::from_secs(60), || {
        h.info().state == SessionState::Stopped
    })
    .await;
    let persist = corral.persist().unwrap();
    persist.flush().await.unwrap();
    let db = rusqlite::Connection::open(dir.path().join("state.db")).unwrap();
    let count: i64 = db
        .query_row("SELECT count(*) FROM events", [], |r| r.get(0))
        .unwrap();
    assert!(count <= 100_000, "journal holds {count} events");
    assert!(
        count >= 90_000,
        "journal lost more than retention asks: {count}"
    );
    let dropped = persist
        .stats()
        .ops_dropped
        .load(std::sync::atomic::Ordering::Relaxed);
    // The newest events are the ones kept.
    let max_seq: i64 = db
        .query_row(
            "SELECT max(seq) FROM events WHERE session = ?1",
            [h.id().to_string()],
            |r| r.get(0),
        )
        .unwrap();
    assert!(
        max_seq as u64 + dropped >= 120_000,
        "max seq {max_seq}, dropped {dropped}"
    );
    corral.shutdown().await.unwrap();
}

/// Mounts a `bytes`-sized tmpfs on `dir`. A machine that cannot (no privilege) fails the
/// test loudly: the full-disk tests never pass by skipping (`.ci/run` runs them as root).
fn mount_tmpfs(dir: &Path, bytes: u64) {
    let out = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", &format!("size={bytes}"), "tmpfs"])
        .arg(dir)
        .output()
        .expect("run mount (the full-disk tests need it)");
    assert!(
        out.status.success(),
        "cannot mount a tmpfs (the full-disk tests need root): {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A persistent corral whose data dir is a 4 MiB tmpfs filled up to its last byte: nothing
/// more can be written there until `filler` is removed. Unmounted when dropped.
struct FullDisk {
    corral: Corral,
    filler: std::path::PathBuf,
    _mount: Mount,
}

/// A tmpfs mounted on a temporary dir, unmounted (then the dir removed) when dropped. Lazily:
/// a test that failed may leave files open there (its corral not shut down), and a busy mount
/// would otherwise stay behind.
struct Mount(tempfile::TempDir);

impl Drop for Mount {
    fn drop(&mut self) {
        match std::process::Command::new("umount")
            .arg("-l")
            .arg(self.0.path())
            .status()
        {
            Ok(s) if s.success() => {}
            other => eprintln!("umount {} failed: {other:?}", self.0.path().display()),
        }
    }
}

/// A [`FullDisk`].
async fn full_disk() -> FullDisk {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    mount_tmpfs(dir.path(), 4 << 20);
    let mount = Mount(dir);
    let corral = persistent(mount.0.path()).await;
    let filler = mount.0.path().join("filler");
    let mut f = std::fs::File::create(&filler).unwrap();
    let block = vec![0u8; 64 * 1024];
    while f.write_all(&block).is_ok() {}
    while f.write_all(&block[..512]).is_ok() {}
    FullDisk {
        corral,
        filler,
        _mount: mount,
    }
}

#[tokio::test]
async fn a_process_that_ends_while_its_output_waits_for_a_full_disk_is_reported_exited() {
    let FullDisk {
        corral,
        filler,
        _mount,
    } = full_disk().await;
    // Nearly a Ring (1 MiB) of output the log cannot take, at ~0.5 MB/s (read inline, not a
    // flood): the reader waits for the disk once it is within a read of the Ring's end
    // (960 KiB), the last few KB wait in the terminal (which holds ~12 KB), and the program
    // ends meanwhile. Its exit is still seen.
    let h = corral
        .sessions()
        .spawn(sh(
            "i=0; while [ $i -lt 990 ]; do head -c 1000 /dev/zero; i=$((i+1)); done | tr '\\0' x; exit 3",
        ))
        .await
        .unwrap();
    eventually("the exit is reported", Duration::from_secs(20), || {
        h.info().state == SessionState::Stopped
    })
    .await;
    assert_eq!(
        h.info().last_exit,
        Some(corral_actors::process::ExitStatus::Code(3))
    );
    std::fs::remove_file(&filler).unwrap();
    corral.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_full_disk_is_reported_and_recovered_from() {
    // The disk full: nothing left for the scrollback.
    let FullDisk {
        corral,
        filler,
        _mount,
    } = full_disk().await;
    let h = corral
        .sessions()
        .spawn(sh(
            "head -c 300000 /dev/zero | tr '\\0' x; echo END; exec sleep 1000",
        ))
        .await
        .unwrap();
    // The terminal keeps working: every byte reaches a viewer.
    let mut sub = h.subscribe(Some(0)).unwrap();
    let got = read_until(&mut sub, b"END").await;
    assert!(got.len() >= 300_000);
    eventually("the error is shown", Duration::from_secs(10), || {
        h.info().persist_error.is_some()
    })
    .await;
    let err = h.info().persist_error.unwrap();
    assert!(err.contains("space") || err.contains("full"), "{err}");
    // Space returns: writes resume, the error clears, the scrollback is whole.
    std::fs::remove_file(&filler).unwrap();
    eventually("the error clears", Duration::from_secs(10), || {
        h.info().persist_error.is_none()
    })
    .await;
    corral.persist().unwrap().flush().await.unwrap();
    let (bytes, next) = scrollback(&corral, h.id()).await;
    assert_eq!(next, h.info().output_offset);
    assert!(
        bytes.windows(3).any(|w| w == b"END"),
        "scrollback complete after recovery"
    );
    assert!(
        !bytes.contains(&b'?'),
        "no gap: the Ring still held the bytes"
    );
    corral.shutdown().await.unwrap();
}

/// The smallest Ring (4 KiB) still loses nothing to the log: a terminal read can take more than
/// its line discipline's 4 KiB, and one read longer than the Ring lapped the persister (a gap
/// of 570 bytes in CI); every read now takes at most a Ring.
#[tokio::test]
async fn a_session_with_the_smallest_ring_logs_every_byte() {
    let dir = tempfile::tempdir().unwrap();
    let corral = persistent(dir.path()).await;
    let h = corral
        .sessions()
        .spawn(sh("stty raw -echo; seq 1 40000; echo END; exec sleep 1000").ring_capacity(4096))
        .await
        .unwrap();
    let expected = seq_then_end(40_000);
    eventually("all output produced", Duration::from_secs(30), || {
        h.info().output_offset >= expected.len() as u64
    })
    .await;
    corral.persist().unwrap().flush().await.unwrap();
    assert_eq!(log_gaps(&corral, h.id()).await, Vec::<(u64, u64)>::new());
    let (bytes, _) = scrollback(&corral, h.id()).await;
    assert!(bytes == expected, "the log holds every byte, in order");
    corral.shutdown().await.unwrap();
}

/// What `seq 1 <n>; echo END` prints.
fn seq_then_end(n: u32) -> Vec<u8> {
    let mut out: Vec<u8> = (1..=n)
        .flat_map(|i| format!("{i}\n").into_bytes())
        .collect();
    out.extend_from_slice(b"END\n");
    out
}

/// The gaps of a session's log (where its persister was lapped).
async fn log_gaps(corral: &Corral, id: uuid::Uuid) -> Vec<(u64, u64)> {
    let reader = corral.persist().unwrap().reader(id).await.unwrap();
    let first = reader.first_offset().unwrap_or(0);
    reader
        .read_range(first, usize::MAX)
        .unwrap()
        .into_iter()
        .filter_map(|c| match c {
            Chunk::Gap { from, to } => Some((from, to)),
            Chunk::Data { .. } => None,
        })
        .collect()
}

#[tokio::test]
async fn a_subscription_older_than_the_ring_is_served_exactly_from_disk() {
    let dir = tempfile::tempdir().unwrap();
    let corral = persistent(dir.path()).await;
    // 64 KiB in memory (no larger than the pipe), ~1.9 MB written: most of it only exists on
    // disk, and every byte of it must: the reader waits for the persister rather than lap it
    // (`session/pace.rs`; each read takes at most a Ring). Without that wait the log recorded
    // gaps in 4 runs of 4; with it, none in 22 runs with both CPUs loaded (session 33).
    let h = corral
        .sessions()
        .spawn(
            SessionSpec::new(["sh", "-c", "seq 1 300000; echo END; exec sleep 1000"])
                .mode(Mode::Pipe)
                .ring_capacity(64 * 1024),
        )
        .await
        .unwrap();
    eventually("all output produced", Duration::from_secs(20), || {
        h.info().output_offset >= 1_988_895 + 4
    })
    .await;
    let head = h.info().output_offset;
    assert!(h.shared().ring.tail() > 0, "the Ring dropped the start");
    let expected = seq_then_end(300_000);
    assert_eq!(head, expected.len() as u64);
    corral.persist().unwrap().flush().await.unwrap();
    let gaps = log_gaps(&corral, h.id()).await;
    assert!(gaps.is_empty(), "the persister was lapped: gaps {gaps:?}");
    let mut sub = h.subscribe(Some(0)).unwrap();
    let mut at = 0u64;
    while at < head {
        match tokio::time::timeout(Duration::from_secs(10), sub.next(256 * 1024))
            .await
            .expect("the backfill progresses")
        {
            corral_actors::Item::Output { offset, bytes } => {
                assert_eq!(offset, at, "contiguous");
                assert!(
                    bytes[..] == expected[at as usize..at as usize + bytes.len()],
                    "byte-exact at {at}"
                );
                at += bytes.len() as u64;
            }
            corral_actors::Item::Lagged(l) => panic!("lagged {l:?} although the disk has it"),
            _ => {}
        }
    }
    // Mid-way too, then the Ring takes over for live output.
    let mut sub = h.subscribe(Some(1_000_000)).unwrap();
    match sub.next(1024).await {
        corral_actors::Item::Output { offset, bytes } => {
            assert_eq!(offset, 1_000_000);
            assert_eq!(bytes[..], expected[1_000_000..1_000_000 + bytes.len()]);
        }
        other => panic!("{other:?}"),
    }
    corral.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_refused_spawn_leaves_no_record_and_a_restart_admits_every_session_past_the_bound() {
    let dir = tempfile::tempdir().unwrap();
    let start = |max_sessions: usize| {
        let persist = PersistConfig::new(dir.path());
        async move {
            let mut config = CorralConfig {
                persist: Some(persist),
                ..Default::default()
            };
            config.sessions.max_sessions = max_sessions;
            Corral::start(config).await.expect("corral starts")
        }
    };
    let corral = start(3).await;
    let s = corral.sessions();
    let a = s.spawn(sh("exec sleep 1000").name("a")).await.unwrap();
    let b = s.spawn(sh("exec sleep 1000").name("b")).await.unwrap();
    let taken = s.spawn(sh("exec sleep 1000").name("a")).await.err();
    assert!(
        matches!(taken, Some(SessionError::NameTaken(ref n)) if n == "a"),
        "{taken:?}"
    );
    let c = s.spawn(sh("exec sleep 1000").name("c")).await.unwrap();
    let full = s.spawn(sh("exec sleep 1000").name("d")).await.err();
    assert!(
        matches!(full, Some(SessionError::TooMany { max: 3, ended: 0 })),
        "{full:?}"
    );
    let p = corral.persist().unwrap();
    p.flush().await.unwrap();
    let mut names: Vec<String> = p
        .load()
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.name)
        .collect();
    names.sort();
    assert_eq!(names, ["a", "b", "c"], "a refused spawn is never recorded");
    let ids: Vec<String> = [&a, &b, &c].iter().map(|h| h.id().to_string()).collect();
    for log in std::fs::read_dir(dir.path().join("logs")).unwrap() {
        let log = log.unwrap().file_name().to_string_lossy().into_owned();
        assert!(ids.contains(&log), "nor given a log: {log}");
    }
    corral.shutdown().await.unwrap();

    // A lower bound at the next boot: the sessions that exist are restored all the same (the
    // bound is for new ones), and a new one is refused (three ended ones are kept: the
    // bound on all, twice the live one, is reached).
    let corral = start(1).await;
    let report = corral.recovery().unwrap().clone();
    assert_eq!((report.restored, report.failed.len()), (3, 0), "{report:?}");
    let s = corral.sessions();
    for h in [&a, &b, &c] {
        assert_eq!(s.get(&h.info().name).unwrap().id(), h.id());
    }
    let full = s.spawn(sh("exec sleep 1000").name("d")).await.err();
    assert!(
        matches!(full, Some(SessionError::TooMany { max: 1, .. })),
        "{full:?}"
    );
    corral.shutdown().await.unwrap();
}

/// Ended sessions count against the bound (they hold their log files, and a `restart` makes
/// one live without a spawn): a spawn refused for them says how many have ended and how to
/// make room, and `rm` does.
#[tokio::test]
async fn a_spawn_refused_for_ended_sessions_says_so_and_rm_makes_room() {
    let mut config = CorralConfig::default();
    config.sessions.max_sessions = 2;
    let corral = Corral::start(config).await.expect("corral starts");
    let s = corral.sessions();
    let a = s.spawn(sh("exec sleep 1000").name("a")).await.unwrap();
    let b = s.spawn(sh("exec sleep 1000").name("b")).await.unwrap();
    b.stop(None).await.unwrap();
    let full = s.spawn(sh("exec sleep 1000").name("c")).await.err();
    assert!(
        matches!(full, Some(SessionError::TooMany { max: 2, ended: 1 })),
        "{full:?}"
    );
    let said = full.unwrap().to_string();
    assert!(
        said.contains("1 of them ended") && said.contains("corral rm"),
        "{said}"
    );
    s.remove("b").await.unwrap();
    s.spawn(sh("exec sleep 1000").name("c")).await.unwrap();
    a.stop(None).await.unwrap();
    corral.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_sessions_output_on_disk_is_its_owners_alone() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    // As a server of an older version left it.
    std::fs::create_dir(dir.path().join("logs")).unwrap();
    std::fs::set_permissions(
        dir.path().join("logs"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    let corral = persistent(dir.path()).await;
    let h = corral
        .sessions()
        .spawn(sh("echo a secret; exec sleep 1000").name("private"))
        .await
        .unwrap();
    let mut sub = h.subscribe(Some(0)).unwrap();
    read_until(&mut sub, b"secret").await;
    corral.persist().unwrap().flush().await.unwrap();
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    let logs = dir.path().join("logs");
    assert_eq!(mode(&logs), 0o700, "tightened");
    let own = logs.join(h.id().to_string());
    assert_eq!(mode(&own), 0o700);
    let segments: Vec<_> = std::fs::read_dir(&own).unwrap().flatten().collect();
    assert!(!segments.is_empty());
    for s in segments {
        assert_eq!(mode(&s.path()), 0o600, "{}", s.path().display());
    }
    corral.shutdown().await.unwrap();
}

#[tokio::test]
async fn ended_sessions_are_collected_by_count_and_age() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = PersistConfig::new(dir.path());
    config.ended.max_sessions = 2;
    let corral = persistent_with(config.clone()).await;
    let mut ids = Vec::new();
    for i in 0..4 {
        let h = corral
            .sessions()
            .spawn(sh(&format!("echo job{i}")).name(format!("job{i}")))
            .await
            .unwrap();
        eventually("it ends", Duration::from_secs(5), || {
            h.info().state == SessionState::Stopped
        })
        .await;
        ids.push(h.id());
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let running = corral
        .sessions()
        .spawn(sh("exec sleep 1000").name("running"))
        .await
        .unwrap();
    let removed = corral.sessions().collect_ended(config.ended).await;
    assert_eq!(removed.len(), 2);
    assert!(
        removed.contains(&ids[0]) && removed.contains(&ids[1]),
        "the oldest go first"
    );
    corral.persist().unwrap().flush().await.unwrap();
    for id in &ids[..2] {
        assert!(!dir.path().join("logs").join(id.to_string()).exists());
    }
    assert!(dir.path().join("logs").join(ids[3].to_string()).exists());
    assert_eq!(corral.sessions().len(), 3);
    corral.shutdown().await.unwrap();

    // At boot, by age: everything that ended goes; the interrupted session comes back.
    config.ended.max_age = Duration::ZERO;
    tokio::time::sleep(Duration::from_millis(5)).await;
    let corral = persistent_with(config).await;
    let report = corral.recovery().unwrap();
    assert_eq!((report.found, report.collected), (3, 2), "{report:?}");
    assert_eq!(corral.sessions().len(), 1);
    assert_eq!(corral.sessions().get("running").unwrap().id(), running.id());
    corral.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_burst_bigger_than_a_turn_reaches_the_disk_without_further_activity() {
    let dir = tempfile::tempdir().unwrap();
    let corral = persistent(dir.path()).await;
    // 24 MiB in one go into a 32 MiB Ring, then silence: the persister must finish on its own
    // (more than its per-turn budget is left when the output stops).
    let h = corral
        .sessions()
        .spawn(
            SessionSpec::new([
                "sh",
                "-c",
                "stty raw -echo; head -c 25165824 /dev/zero; exec sleep 1000",
            ])
            .ring_capacity(32 << 20),
        )
        .await
        .unwrap();
    eventually("all written", Duration::from_secs(20), || {
        h.info().output_offset >= 24 << 20
    })
    .await;
    assert_eq!(h.info().output_offset, 24 << 20);
    let logs = dir.path().join("logs").join(h.id().to_string());
    eventually(
        "all on disk, no flush asked",
        Duration::from_secs(5),
        || {
            corral_actors::persist::LogReader::open(&logs)
                .map(|(r, _)| r.next_offset() == 24 << 20)
                .unwrap_or(false)
        },
    )
    .await;
    corral.shutdown().await.unwrap();
}

/// Two trees on one persist dir at once: the second is refused, naming the dir and who holds
/// it, and the first one's session is untouched (the second used to take it for a crashed
/// run's leftover, kill it, and write the same state.db and logs as the first).
#[tokio::test]
async fn a_second_tree_on_the_same_dir_is_refused_and_touches_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let first = persistent(dir.path()).await;
    let h = first
        .sessions()
        .spawn(sh("exec sleep 600").name("kept"))
        .await
        .unwrap();
    let pid = h.info().pid.unwrap();
    let second = Corral::start(CorralConfig {
        persist: Some(PersistConfig::new(dir.path())),
        ..Default::default()
    })
    .await;
    let err = match second {
        Ok(_) => panic!("a second tree started on the same dir"),
        // Typed: an embedder can tell "in use" from anything else.
        Err(
            e @ corral_actors::StartError::Persist(corral_actors::persist::PersistError::InUse {
                ..
            }),
        ) => e.to_string(),
        Err(other) => panic!("not InUse: {other:?}"),
    };
    assert!(err.contains("in use by another process"), "{err}");
    assert!(
        err.contains(&format!("pid {}", std::process::id())),
        "{err}"
    );
    assert_eq!(h.info().state, SessionState::Running);
    assert_eq!(h.info().pid, Some(pid));
    first.shutdown().await.unwrap();
    // Once the first is gone, the dir is free again.
    let again = persistent(dir.path()).await;
    again.shutdown().await.unwrap();
}

/// A resumed subscription replays the events it missed from the journal, the newest that fit
/// in its byte bound (`MAX_REPLAY_BYTES`), after one `EventsLagged` counting the rest; then
/// the live ones.
#[tokio::test]
async fn a_resumed_subscription_replays_the_newest_events_that_fit_its_bound() {
    use corral_actors::subscription::Item;
    let dir = tempfile::tempdir().unwrap();
    let corral = persistent(dir.path()).await;
    let h = corral
        .sessions()
        .spawn(sh("exec sleep 1000").name("big-events"))
        .await
        .unwrap();
    let before = h.shared().last_seq();
    // 24 events of 256 KiB each: 6 MiB, past the 4 MiB bound.
    let text = "x".repeat(256 * 1024);
    for _ in 0..24 {
        h.shared().emit(EventKind::Conversation {
            role: "agent".into(),
            text: text.clone(),
        });
    }
    let last = h.shared().last_seq();
    let mut sub = h.subscribe_after(None, before).await.unwrap();
    let Item::EventsLagged(missed) = next_item(&mut sub).await else {
        panic!("a count of the events not replayed first");
    };
    let fit = 24 - missed;
    assert!((14..=16).contains(&fit), "{fit} of 24 replayed");
    for seq in last - fit + 1..=last {
        match next_item(&mut sub).await {
            Item::Event(e) => assert_eq!(e.seq, seq),
            other => panic!("{other:?}"),
        }
    }
    // Then live, once.
    let live = h.shared().emit(EventKind::Conversation {
        role: "user".into(),
        text: "live".into(),
    });
    loop {
        match next_item(&mut sub).await {
            Item::Event(e) => {
                assert_eq!(e.seq, live.seq);
                break;
            }
            Item::Output { .. } => {}
            other => panic!("{other:?}"),
        }
    }
    corral.shutdown().await.unwrap();
}

/// The next item of `sub` (10 s bound).
async fn next_item(
    sub: &mut corral_actors::subscription::Subscription,
) -> corral_actors::subscription::Item {
    tokio::time::timeout(Duration::from_secs(10), sub.next(1 << 20))
        .await
        .unwrap()
}

/// A spawn is answered only once its record is in state.db (a server SIGKILLed right after
/// must leave the next one the record), whether the persister had committed it by then (the
/// spawn only looks) or not yet (it asks for the commit and waits): read from state.db by
/// another connection right after each spawn returns.
#[tokio::test]
async fn a_spawn_is_answered_once_its_record_is_committed() {
    let dir = tempfile::tempdir().unwrap();
    let corral = persistent(dir.path()).await;
    let db = rusqlite::Connection::open_with_flags(
        dir.path().join("state.db"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap();
    for i in 0..20 {
        let h = corral
            .sessions()
            .spawn(sh("exec sleep 1000").name(format!("s{i}")))
            .await
            .unwrap();
        let rows: i64 = db
            .query_row(
                "SELECT count(*) FROM sessions WHERE id = ?1",
                [h.id().to_string()],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(
            rows, 1,
            "spawn {i} answered before its record was committed"
        );
        assert_eq!(h.info().persist_error, None);
    }
    corral.shutdown().await.unwrap();
}

/// A spawn the registry cannot record (a full disk) runs, and says at once, with the session,
/// that a server crash now would lose it (it was only in the server's log: a `corral spawn`
/// printed its id, the server was killed, and the next one ended the program).
#[tokio::test]
async fn a_spawn_the_registry_cannot_record_says_so() {
    let FullDisk {
        corral,
        filler,
        _mount,
    } = full_disk().await;
    let h = corral
        .sessions()
        .spawn(sh("exec sleep 1000"))
        .await
        .unwrap();
    let err = h.info().persist_error.unwrap_or_default();
    assert!(err.contains("registry"), "{err:?}");
    std::fs::remove_file(&filler).unwrap();
    corral.shutdown().await.unwrap();
}

/// A registry others may read (restored from `sqlite3 .backup`, which writes with the umask:
/// it holds the hook tokens) is made owner-only when it is opened.
#[tokio::test]
async fn a_registry_others_may_read_is_made_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let corral = persistent(dir.path()).await;
    corral.shutdown().await.unwrap();
    let db = dir.path().join("state.db");
    std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o644)).unwrap();
    let corral = persistent(dir.path()).await;
    let mode = std::fs::metadata(&db).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    corral.shutdown().await.unwrap();
}
