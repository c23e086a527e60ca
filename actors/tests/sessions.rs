//! Sessions against real processes in real PTYs and pipes: stop leaves nothing, every byte
//! arrives before the exit, crash loops back off and fail, lag is explicit, input is bounded,
//! races end consistent.

mod common;

use std::time::{Duration, Instant};

use common::*;
use corral_actors::process::ExitStatus;
use corral_actors::{
    EventKind, Item, Mode, RestartPolicy, SessionError, SessionSpec, SessionState, Size, SpecError,
};
use corral_runtime::Backoff;

fn sh(script: &str) -> SessionSpec {
    SessionSpec::new(["sh", "-c", script])
}

#[tokio::test]
async fn stop_leaves_no_process_of_the_tree() {
    let corral = corral().await;
    let h = corral
        .sessions()
        .spawn(SessionSpec::new(["bash", "--norc", "-i"]).grace(Duration::from_millis(500)))
        .await
        .unwrap();
    let main = h.info().pid.unwrap();
    let mut sub = h.subscribe(Some(0)).unwrap();
    for line in [
        "sleep 1000 &\n",
        "setsid sleep 1000 &\n",
        "(sleep 1000 &)\n",
        // Orphaned *and* out of the session and group: only the marker ties it to us (the
        // subreaper sweep must walk corral's own orphans to find it).
        "(setsid sleep 1000 &)\n",
        "bash -c 'trap \"\" HUP TERM; while :; do sleep 1; done' &\n",
        "echo READY\n",
    ] {
        h.input(1, line.as_bytes().to_vec()).unwrap();
    }
    read_until(&mut sub, b"READY\r\n").await;
    eventually("the tree is up", Duration::from_secs(5), || {
        marked(h.id()).len() >= 7
    })
    .await;
    let t = Instant::now();
    let info = h.stop(None).await.unwrap();
    assert!(
        t.elapsed() < Duration::from_millis(500) + Duration::from_secs(1),
        "{:?}",
        t.elapsed()
    );
    assert_eq!(info.state, SessionState::Stopped);
    assert_eq!(info.pid, None);
    assert_nothing_left(&h, Some(main)).await;
    corral.shutdown().await.unwrap();
}

#[tokio::test]
async fn every_byte_reaches_every_subscriber_before_the_exit() {
    const N: usize = 50 * 1024 * 1024;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("payload");
    let data = payload(N, 0x9E3779B97F4A7C15);
    std::fs::write(&file, &data).unwrap();
    let corral = corral().await;
    // `stty raw` turns off output processing so the bytes cross the PTY unchanged. The process
    // waits for a go byte so every subscriber is attached before the first byte.
    let script = format!(
        "stty raw -echo; head -c1 >/dev/null; cat {}",
        file.display()
    );
    let h = corral
        .sessions()
        .spawn(sh(&script).ring_capacity(64 << 20))
        .await
        .unwrap();
    let mut subs: Vec<_> = (0..3).map(|_| h.subscribe(Some(0)).unwrap()).collect();
    wait_for_comm(h.id(), "head").await; // stty ran: the go byte will not be echoed
    h.input(0, b"g".to_vec()).unwrap();
    let readers = subs.drain(..).map(|mut sub| {
        tokio::spawn(async move {
            let (out, exit) =
                until_event(&mut sub, |e| matches!(e.kind, EventKind::Exited { .. })).await;
            (out, exit)
        })
    });
    for r in futures::future::join_all(readers).await {
        let (out, exit) = r.unwrap();
        assert_eq!(out.len(), N, "all bytes before the exit event");
        assert!(out == data, "bytes differ");
        assert_eq!(exit.offset, N as u64);
        assert!(matches!(
            exit.kind,
            EventKind::Exited {
                status: ExitStatus::Code(0)
            }
        ));
    }
    // A late subscriber from offset 0 gets the same bytes from the ring.
    let mut late = h.subscribe(Some(0)).unwrap();
    assert!(read_exact(&mut late, N).await == data);
    assert_eq!(h.info().state, SessionState::Stopped);
    corral.shutdown().await.unwrap();
}

#[tokio::test]
async fn crash_loop_backs_off_then_fails_and_policies_hold() {
    let corral = corral().await;
    let backoff = Backoff {
        initial: Duration::from_millis(40),
        max: Duration::from_secs(1),
        multiplier: 2.0,
        jitter: 0.0,
        reset_after: Duration::from_secs(30),
    };
    let h = corral
        .sessions()
        .spawn(
            sh("exit 1")
                .restart(RestartPolicy::Always)
                .backoff(backoff)
                .intensity(3, Duration::from_secs(60)),
        )
        .await
        .unwrap();
    let mut events = h.events();
    let mut delays = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let e = tokio::time::timeout_at(deadline, events.recv())
            .await
            .unwrap()
            .unwrap();
        match e.kind {
            EventKind::Restarting { delay, .. } => delays.push(delay),
            EventKind::State {
                state: SessionState::Failed,
                reason,
            } => {
                assert!(reason.unwrap().contains("intensity"));
                break;
            }
            _ => {}
        }
    }
    // The first exit may come before we subscribed (not the later ones: each waits its
    // backoff first); the ones we saw grow.
    assert!(delays.len() >= 2, "{delays:?}");
    assert!(delays.windows(2).all(|w| w[1] == w[0] * 2), "{delays:?}");
    assert_eq!(*delays.last().unwrap(), Duration::from_millis(160));
    assert_eq!(h.info().restarts, 3);
    assert_eq!(h.info().last_exit, Some(ExitStatus::Code(1)));

    // OnFailure does not restart after exit 0; Always does.
    let ok = corral
        .sessions()
        .spawn(sh("exit 0").restart(RestartPolicy::OnFailure))
        .await
        .unwrap();
    eventually("on-failure stops", Duration::from_secs(5), || {
        ok.info().state == SessionState::Stopped
    })
    .await;
    assert_eq!(ok.info().restarts, 0);
    let always = corral
        .sessions()
        .spawn(
            sh("exit 0")
                .restart(RestartPolicy::Always)
                .backoff(Backoff::NONE),
        )
        .await
        .unwrap();
    eventually("always restarts", Duration::from_secs(5), || {
        always.info().restarts >= 2
    })
    .await;
    always.stop(None).await.unwrap();
    corral.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_output_of_more_sessions_than_bulk_readers_arrives_byte_exact() {
    // Every session floods at once: some read on bulk threads (one per core), the rest inline
    // (no permit left); each subscriber gets exactly its session's bytes, then the exit.
    const N: usize = 16 * 1024 * 1024;
    let sessions = std::thread::available_parallelism().map_or(2, |n| n.get()) + 2;
    let dir = tempfile::tempdir().unwrap();
    let corral = corral().await;
    let mut runs = Vec::new();
    for i in 0..sessions {
        let data = payload(N, 0x5EED + i as u64);
        let file = dir.path().join(format!("payload-{i}"));
        std::fs::write(&file, &data).unwrap();
        let script = format!(
            "stty raw -echo; head -c1 >/dev/null; cat {}",
            file.display()
        );
        let h = corral
            .sessions()
            .spawn(sh(&script).ring_capacity(32 << 20))
            .await
            .unwrap();
        let sub = h.subscribe(Some(0)).unwrap();
        wait_for_comm(h.id(), "head").await;
        runs.push((h, sub, data));
    }
    for (h, _, _) in &runs {
        h.input(0, b"g".to_vec()).unwrap();
    }
    let readers = runs.into_iter().map(|(h, mut sub, data)| {
        tokio::spawn(async move {
            let (out, exit) =
                until_event(&mut sub, |e| matches!(e.kind, EventKind::Exited { .. })).await;
            assert_eq!(
                out.len(),
                N,
                "session {}: all bytes before the exit",
                h.id()
            );
            assert!(out == data, "session {}: bytes differ", h.id());
            assert_eq!(exit.offset, N as u64);
        })
    });
    for r in futures::future::join_all(readers).await {
        r.unwrap();
    }
    corral.shutdown().await.unwrap();
}

#[tokio::test]
async fn ctrl_c_stops_a_flood_while_it_is_read_in_bulk() {
    // `yes` floods the terminal, so its output is read in bulk (off the reactor); the keystroke
    // still goes in through the input side's own registration and interrupts it.
    let corral = corral().await;
    let h = corral
        .sessions()
        .spawn(
            sh("trap 'echo INTERRUPTED; exit 0' INT; yes flood; sleep 100").ring_capacity(1 << 20),
        )
        .await
        .unwrap();
    let mut sub = h.subscribe(None).unwrap();
    eventually("a flood", Duration::from_secs(10), || {
        h.info().output_offset > 8 << 20
    })
    .await;
    h.input(0, b"\x03".to_vec()).unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let mut tail: Vec<u8> = Vec::new();
    loop {
        let item = tokio::time::timeout_at(deadline, sub.next(1 << 20))
            .await
            .expect("the flood ends and the trap runs");
        if let Item::Output { bytes, .. } = item {
            tail.extend_from_slice(&bytes);
            if tail.windows(11).any(|w| w == b"INTERRUPTED") {
                break;
            }
            let keep = tail.len().saturating_sub(16);
            tail.drain(..keep);
        }
    }
    eventually("the session ends", Duration::from_secs(10), || {
        h.info().state == SessionState::Stopped
    })
    .await;
    corral.shutdown().await.unwrap();
}

#[tokio::test]
async fn the_exit_is_reported_while_a_leftover_child_floods_the_output() {
    // The main process exits at once; its background child keeps the output pipe full. The
    // reader always finds bytes to read, yet the exit is reported and the child swept.
    let corral = corral().await;
    let h = corral
        .sessions()
        .spawn(
            SessionSpec::new(["sh", "-c", "yes flood & sleep 0.3; exit 3"])
                .mode(Mode::Pipe)
                .restart(RestartPolicy::Never),
        )
        .await
        .unwrap();
    let main = h.info().pid.unwrap();
    eventually("the exit reported", Duration::from_secs(20), || {
        h.info().state == SessionState::Stopped
    })
    .await;
    assert_eq!(h.info().last_exit, Some(ExitStatus::Code(3)));
    assert!(h.info().output_offset > 1 << 20, "the child flooded");
    assert_nothing_left(&h, Some(main)).await;
    corral.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_stalled_subscriber_gets_the_exact_lag_and_never_blocks_the_writer() {
    let corral = corral().await;
    let cap = 1 << 20;
    let h = corral
        .sessions()
        .spawn(
            sh("stty raw -echo; head -c1 >/dev/null; head -c 20000000 /dev/zero")
                .ring_capacity(cap),
        )
        .await
        .unwrap();
    let mut stalled = h.subscribe(Some(0)).unwrap();
    wait_for_comm(h.id(), "head").await;
    h.input(0, b"g".to_vec()).unwrap();
    // The writer finishes while the subscriber reads nothing.
    eventually("writer done", Duration::from_secs(20), || {
        h.info().state == SessionState::Stopped
    })
    .await;
    let head = h.info().output_offset;
    assert_eq!(head, 20_000_000);
    match stalled.next(1 << 20).await {
        Item::Lagged(l) => assert_eq!((l.from, l.to), (0, head - cap as u64)),
        other => panic!("expected lag, got {other:?}"),
    }
    let rest = read_exact(&mut stalled, cap).await;
    assert!(rest.iter().all(|&b| b == 0));
    assert_eq!(stalled.cursor(), head);
    assert!(h.info().lag_events >= 1);
    corral.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_subscriber_asking_for_no_bytes_gets_one_at_a_time_and_waits_for_more() {
    let corral = corral().await;
    let h = corral
        .sessions()
        .spawn(sh("printf ab; exec sleep 1000").mode(Mode::Pipe))
        .await
        .unwrap();
    let mut sub = h.subscribe(Some(0)).unwrap();
    let mut got = Vec::new();
    while got.len() < 2 {
        match tokio::time::timeout(Duration::from_secs(5), sub.next(0)).await {
            Ok(Item::Output { bytes, .. }) => {
                assert_eq!(bytes.len(), 1, "one byte per call");
                got.extend_from_slice(&bytes);
            }
            Ok(_) => {}
            Err(_) => panic!("no output"),
        }
    }
    assert_eq!(got, b"ab");
    // Nothing more: the call waits (an empty item at once would make a loop spin).
    loop {
        match tokio::time::timeout(Duration::from_millis(300), sub.next(0)).await {
            Err(_) => break,
            Ok(Item::Output { bytes, .. }) => panic!("output {bytes:?} from nothing"),
            Ok(_) => {}
        }
    }
    corral.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_resize_to_a_size_no_terminal_has_is_refused_as_a_spec_is() {
    let corral = corral().await;
    let h = corral
        .sessions()
        .spawn(sh("exec sleep 1000"))
        .await
        .unwrap();
    for (size, want) in [
        (Size { rows: 0, cols: 80 }, SpecError::SizeZero),
        (Size { rows: 24, cols: 0 }, SpecError::SizeZero),
        (
            Size {
                rows: 60000,
                cols: 80,
            },
            SpecError::SizeOverLimit {
                rows: 60000,
                cols: 80,
            },
        ),
    ] {
        match h.resize(1, size) {
            Err(SessionError::BadSpec(e)) => assert_eq!(e, want),
            other => panic!("{size:?}: {other:?}"),
        }
    }
    h.resize(
        1,
        Size {
            rows: 40,
            cols: 100,
        },
    )
    .unwrap();
    eventually("resized", Duration::from_secs(5), || {
        h.info().size
            == Size {
                rows: 40,
                cols: 100,
            }
    })
    .await;
    corral.shutdown().await.unwrap();
}

/// A snapshot asked right after a resize is at the new size, however busy the session actor
/// that passes the size on to the screen: a page sizes the session, then subscribes, and its
/// first screen was at the old size when the actor had not yet passed the size on (the
/// snapshot went to the screen directly, ahead of it).
#[tokio::test]
async fn a_snapshot_asked_after_a_resize_is_at_its_size() {
    let corral = corral().await;
    let h = corral
        .sessions()
        .spawn(sh("exec sleep 1000"))
        .await
        .unwrap();
    for round in 0..5u16 {
        // Many size changes queued at the actor, the last one the size wanted.
        for i in 0..2000u16 {
            let size = Size {
                rows: 20 + (i % 7),
                cols: 70 + (i % 11),
            };
            h.resize(1, size).unwrap();
        }
        let want = Size {
            rows: 50 + round,
            cols: 120,
        };
        h.resize(1, want).unwrap();
        let snap = h.snapshot().await.unwrap();
        assert_eq!(
            (snap.rows, snap.cols),
            (want.rows, want.cols),
            "round {round}"
        );
    }
    corral.shutdown().await.unwrap();
}

#[tokio::test]
async fn input_to_a_process_that_never_reads_fails_fast_and_stop_still_works() {
    let corral = corral().await;
    let deaf = corral
        .sessions()
        .spawn(sh("stty raw -echo; trap '' HUP; sleep 1000").grace(Duration::from_millis(500)))
        .await
        .unwrap();
    let echo = corral
        .sessions()
        .spawn(SessionSpec::new(["cat"]))
        .await
        .unwrap();
    wait_for_comm(deaf.id(), "sleep").await;
    let t = Instant::now();
    let chunk = vec![b'x'; 64 * 1024];
    let mut sent = 0usize;
    let err = loop {
        match deaf.input(0, chunk.clone()) {
            Ok(()) => sent += chunk.len(),
            Err(e) => break e,
        }
        assert!(sent < 64 << 20, "no bound on queued input");
    };
    assert!(matches!(err, SessionError::InputFull { .. }), "{err}");
    assert!(err.to_string().contains("not reading its input"));
    assert!(
        t.elapsed() < Duration::from_secs(1),
        "input must fail fast: {:?}",
        t.elapsed()
    );
    assert!(deaf.info().input_rejected >= 1);
    // Another session stays responsive.
    let mut sub = echo.subscribe(None).unwrap();
    echo.input(0, b"ping\n".to_vec()).unwrap();
    read_until(&mut sub, b"ping").await;
    // And the deaf one still stops within grace + 1 s.
    let t = Instant::now();
    deaf.stop(None).await.unwrap();
    assert!(
        t.elapsed() < Duration::from_millis(1500),
        "{:?}",
        t.elapsed()
    );
    assert_nothing_left(&deaf, None).await;
    // What was still queued went with the process: counted as lost, not dropped unsaid (the
    // terminal took at most a few KiB of it).
    let lost = deaf.info().input_lost;
    assert!(
        lost >= (sent as u64) / 2 && lost <= sent as u64,
        "{lost} of {sent} queued bytes counted lost"
    );
    corral.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_process_that_exits_by_itself_is_reaped_at_once() {
    let corral = corral().await;
    let h = corral.sessions().spawn(sh("exit 3")).await.unwrap();
    let pid = h.info().pid.unwrap();
    eventually("stopped", Duration::from_secs(3), || {
        h.info().state == SessionState::Stopped
    })
    .await;
    assert_eq!(h.info().last_exit, Some(ExitStatus::Code(3)));
    assert!(!exists(pid), "zombie left");
    corral.shutdown().await.unwrap();
}

/// The most threads this process had, sampled every millisecond until `done`.
fn thread_peak(
    done: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<usize> {
    std::thread::spawn(move || {
        let mut peak = 0;
        while !done.load(std::sync::atomic::Ordering::Relaxed) {
            let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
            let n = status
                .lines()
                .find_map(|l| l.strip_prefix("Threads:"))
                .and_then(|n| n.trim().parse().ok())
                .unwrap_or(0);
            peak = peak.max(n);
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        peak
    })
}

/// 300 sessions at once, and their end: no leftovers, and the blocking work of their TMPDIRs
/// (made and removed on blocking threads) takes a bounded number of threads (a shutdown of
/// 1000 ended sessions started 515).
#[tokio::test]
async fn three_hundred_sessions_start_and_stop_without_leftovers() {
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let peak = thread_peak(done.clone());
    let corral = corral().await;
    let spawns = (0..300).map(|i| {
        let s = corral.sessions().clone();
        async move {
            s.spawn(SessionSpec::new(["cat"]).name(format!("cat-{i}")))
                .await
        }
    });
    let handles: Vec<_> = futures::future::join_all(spawns)
        .await
        .into_iter()
        .map(|r| r.unwrap())
        .collect();
    assert_eq!(corral.sessions().len(), 300);
    assert!(
        handles
            .iter()
            .all(|h| h.info().state == SessionState::Running)
    );
    assert!(matches!(
        corral
            .sessions()
            .spawn(SessionSpec::new(["cat"]).name("cat-7"))
            .await,
        Err(SessionError::NameTaken(_))
    ));
    corral.sessions().stop_all().await;
    for h in &handles {
        assert_eq!(h.info().state, SessionState::Stopped);
        assert!(marked(h.id()).is_empty());
    }
    corral.shutdown().await.unwrap();
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let peak = peak.join().unwrap();
    // 13–15 on the machine this was written on; 184 before the bound.
    assert!(peak < 60, "{peak} threads at once");
}

#[tokio::test]
async fn concurrent_stop_kill_restart_end_in_one_consistent_state() {
    let corral = corral().await;
    for round in 0..5 {
        let h = corral
            .sessions()
            .spawn(SessionSpec::new(["cat"]).name(format!("race-{round}")))
            .await
            .unwrap();
        let (a, b, c) = (h.clone(), h.clone(), h.clone());
        let (ra, rb, rc) = tokio::join!(a.stop(None), b.kill(), c.restart());
        for r in [ra.map(|_| ()), rb.map(|_| ()), rc.map(|_| ())] {
            if let Err(e) = r {
                panic!("race call failed: {e}");
            }
        }
        let info = h.info();
        match info.state {
            SessionState::Running => assert!(info.pid.is_some()),
            SessionState::Stopped => assert!(info.pid.is_none()),
            other => panic!("inconsistent final state {other:?}"),
        }
        h.stop(None).await.unwrap();
        assert_nothing_left(&h, None).await;
    }
    corral.shutdown().await.unwrap();
}

#[tokio::test]
async fn stop_while_output_flows_and_a_reader_attaches() {
    let corral = corral().await;
    let h = corral
        .sessions()
        .spawn(sh(
            "stty raw -echo; head -c 50000000 /dev/urandom; sleep 1000",
        ))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let attach = {
        let h = h.clone();
        tokio::spawn(async move {
            let mut sub = h.subscribe(Some(0)).unwrap();
            let mut n = 0;
            loop {
                match sub.next(1 << 20).await {
                    Item::Output { bytes, .. } => n += bytes.len(),
                    Item::Event(e) if matches!(e.kind, EventKind::Exited { .. }) => return n,
                    _ => {}
                }
            }
        })
    };
    let info = h.stop(Some(Duration::from_millis(200))).await.unwrap();
    assert_eq!(info.state, SessionState::Stopped);
    let got = tokio::time::timeout(Duration::from_secs(10), attach)
        .await
        .unwrap()
        .unwrap();
    assert!(got as u64 <= h.info().output_offset);
    assert_nothing_left(&h, None).await;
    corral.shutdown().await.unwrap();
}

#[tokio::test]
async fn pipe_mode_turns_json_lines_into_events_and_echoes_input() {
    let corral = corral().await;
    let h = corral
        .sessions()
        .spawn(sh("read go; echo '{\"type\":\"hello\"}'; echo plain; cat").mode(Mode::Pipe))
        .await
        .unwrap();
    // Output is replayed from an offset, events only live: the program prints once this
    // subscription is there (a line read first), or its event could come before it.
    let mut sub = h.subscribe(Some(0)).unwrap();
    h.input(0, b"go\n".to_vec()).unwrap();
    let (mut out, ev) = until_event(&mut sub, |e| matches!(e.kind, EventKind::Json { .. })).await;
    match ev.kind {
        EventKind::Json { value } => assert_eq!(value["type"], "hello"),
        _ => unreachable!(),
    }
    // The JSON line stays in the output too (the log is what the program wrote).
    if !out.ends_with(b"plain\n") {
        out.extend(read_until(&mut sub, b"plain\n").await);
    }
    assert_eq!(out, b"{\"type\":\"hello\"}\nplain\n");
    h.input(0, b"{\"type\":\"user\"}\n".to_vec()).unwrap();
    let (_, ev) = until_event(&mut sub, |e| matches!(e.kind, EventKind::Json { .. })).await;
    assert!(matches!(ev.kind, EventKind::Json { ref value } if value["type"] == "user"));
    assert!(matches!(
        h.snapshot().await,
        Err(SessionError::Unsupported(_))
    ));
    h.stop(None).await.unwrap();
    assert_nothing_left(&h, None).await;
    corral.shutdown().await.unwrap();
}

#[tokio::test]
async fn pipe_mode_keeps_every_line_and_places_each_json_event_after_its_line() {
    // One write, so one read holds every line: every line goes to the Ring (the log is the
    // program's output, exactly), and each JSON line's event offset is where that line ends.
    let corral = corral().await;
    // It prints once the subscription is there (events are live only).
    let script =
        r#"read go; printf 'a\nb\n{"n":1}\nc\n{oops\n[2]\n  {"n":3}\nd\n'; exec sleep 100"#;
    let h = corral
        .sessions()
        .spawn(sh(script).mode(Mode::Pipe))
        .await
        .unwrap();
    let mut sub = h.subscribe(Some(0)).unwrap();
    h.input(0, b"go\n".to_vec()).unwrap();
    let (mut out, mut events) = (Vec::new(), Vec::new());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while events.len() < 3 || !out.ends_with(b"d\n") {
        match tokio::time::timeout_at(deadline, sub.next(1 << 20))
            .await
            .expect("the script's output in time")
        {
            Item::Output { bytes, .. } => out.extend_from_slice(&bytes),
            Item::Event(e) => {
                if let EventKind::Json { value } = e.kind {
                    events.push((value.to_string(), e.offset));
                }
            }
            _ => {}
        }
    }
    let all = "a\nb\n{\"n\":1}\nc\n{oops\n[2]\n  {\"n\":3}\nd\n";
    assert_eq!(String::from_utf8_lossy(&out), all);
    let at = |n: u64| String::from_utf8_lossy(&out[..n as usize]).into_owned();
    let placed: Vec<_> = events.iter().map(|(v, o)| (v.as_str(), at(*o))).collect();
    assert_eq!(
        placed,
        [
            (r#"{"n":1}"#, "a\nb\n{\"n\":1}\n".to_string()),
            ("[2]", "a\nb\n{\"n\":1}\nc\n{oops\n[2]\n".to_string()),
            (
                r#"{"n":3}"#,
                "a\nb\n{\"n\":1}\nc\n{oops\n[2]\n  {\"n\":3}\n".to_string()
            ),
        ]
    );
    corral.shutdown().await.unwrap();
}

#[tokio::test]
async fn snapshot_shows_the_drawn_screen_and_bad_input_is_refused() {
    let corral = corral().await;
    let h = corral
        .sessions()
        .spawn(
            sh("printf '\\033[2J\\033[5;10Hhello \\033[31mred\\033[0m'; sleep 1000").size(24, 80),
        )
        .await
        .unwrap();
    let mut sub = h.subscribe(Some(0)).unwrap();
    read_until(&mut sub, b"red").await;
    let snap = h.snapshot().await.unwrap();
    let nz = |n: u16| std::num::NonZeroU16::new(n).unwrap();
    let mut fresh = vt100::Parser::new(nz(24), nz(80), 0);
    fresh.process(&snap.bytes);
    assert_eq!(fresh.screen().cell(4, 9).unwrap().contents(), "h");
    assert_eq!(fresh.screen().cell(4, 15).unwrap().contents(), "r");
    assert_eq!(
        fresh.screen().cell(4, 15).unwrap().fgcolor(),
        vt100::Color::Idx(1)
    );
    assert_eq!(snap.offset, h.info().output_offset);
    // Precise errors for bad requests.
    assert!(matches!(
        corral.sessions().get("nope"),
        Err(SessionError::NotFound(_))
    ));
    assert!(matches!(
        h.subscribe(Some(u64::MAX)),
        Err(SessionError::OffsetBeyondHead { .. })
    ));
    assert!(matches!(
        corral
            .sessions()
            .spawn(SessionSpec::new(["/no/such/program"]))
            .await,
        Err(SessionError::Spawn(_))
    ));
    assert!(matches!(
        corral
            .sessions()
            .spawn(SessionSpec::new(Vec::<String>::new()))
            .await,
        Err(SessionError::BadSpec(SpecError::EmptyArgv))
    ));
    // Names: at most MAX_NAME bytes, no control characters, never an id.
    let named = |name: String| {
        let s = corral.sessions().clone();
        async move { s.spawn(SessionSpec::new(["cat"]).name(name)).await.err() }
    };
    for (bad, rule) in [
        (
            "n".repeat(corral_actors::manager::MAX_NAME + 1),
            SpecError::NameTooLong {
                len: corral_actors::manager::MAX_NAME + 1,
            },
        ),
        ("red\x1b[31m".to_string(), SpecError::NameControl('\x1b')),
        ("two\nlines".to_string(), SpecError::NameControl('\n')),
        (uuid::Uuid::new_v4().to_string(), SpecError::NameIsId),
        ("..".to_string(), SpecError::NameDots("..".into())),
        (".".to_string(), SpecError::NameDots(".".into())),
        (" lead".to_string(), SpecError::NameBlanks(" lead".into())),
        ("trail\t".to_string(), SpecError::NameControl('\t')),
        ("trail ".to_string(), SpecError::NameBlanks("trail ".into())),
    ] {
        let e = named(bad.clone()).await;
        assert_eq!(e, Some(SessionError::BadSpec(rule)), "{bad:?}");
    }
    // Nor the start of another session's id, from the 8 characters that name it: every
    // command given that name was refused as naming two sessions. Shorter, it is only a name.
    let other = corral
        .sessions()
        .spawn(SessionSpec::new(["cat"]))
        .await
        .unwrap();
    let start = other.id().to_string()[..8].to_string();
    assert_eq!(
        named(start.clone()).await,
        Some(SessionError::BadSpec(SpecError::NameIsIdPrefix(
            start.clone(),
            other.id()
        )))
    );
    assert_eq!(named(start[..7].to_string()).await, None);
    // The environment reaches the program as written, or the spawn is refused.
    for (key, value, rule) in [
        ("", "x", SpecError::EnvEmptyName(1)),
        ("A=B", "c", SpecError::EnvNameEquals("A".into())),
        ("NUL", "a\0b", SpecError::EnvNul("NUL".into())),
        ("N\0L", "x", SpecError::EnvNul("N\0L".into())),
    ] {
        let mut spec = SessionSpec::new(["cat"]);
        spec.env.push((key.to_string(), value.to_string()));
        let e = corral.sessions().spawn(spec).await.err();
        assert_eq!(e, Some(SessionError::BadSpec(rule)), "{key:?}={value:?}");
    }
    let e = corral
        .sessions()
        .spawn(SessionSpec::new(["echo", "a\0b"]))
        .await
        .err();
    assert_eq!(e, Some(SessionError::BadSpec(SpecError::ArgNul(1))));
    // What the kernel would refuse at the exec (E2BIG, a 409 "could not start") is refused
    // here, saying which and how long; the longest it takes starts.
    let max = corral_actors::spec::MAX_ARG;
    let e = corral
        .sessions()
        .spawn(SessionSpec::new(["echo".to_string(), "x".repeat(max)]))
        .await
        .err();
    let what = "argument 1".to_string();
    assert_eq!(
        e,
        Some(SessionError::BadSpec(SpecError::ArgTooLong {
            what,
            len: max
        }))
    );
    let mut spec = SessionSpec::new(["true"]);
    spec.env.push(("BIG".into(), "v".repeat(max - 4)));
    let e = corral.sessions().spawn(spec).await.err();
    let what = "environment variable BIG".to_string();
    assert_eq!(
        e,
        Some(SessionError::BadSpec(SpecError::ArgTooLong {
            what,
            len: max
        }))
    );
    let fits = SessionSpec::new(["true".to_string(), "x".repeat(max - 1)]).name("fits");
    corral.sessions().spawn(fits).await.unwrap();
    corral.sessions().remove("fits").await.unwrap();
    let longest = "n".repeat(corral_actors::manager::MAX_NAME);
    assert!(named(longest.clone()).await.is_none(), "{longest} is fine");
    assert!(named("a name with spaces".into()).await.is_none());
    corral.sessions().remove(&longest).await.unwrap();
    corral
        .sessions()
        .remove("a name with spaces")
        .await
        .unwrap();
    corral.sessions().remove(&h.id().to_string()).await.unwrap();
    assert!(corral.sessions().get(h.name()).is_err());
    // A handle taken before the removal (a `stop` racing an `rm`): the session is not found,
    // not "messaging failed to enqueue".
    assert_eq!(
        h.kill().await.err(),
        Some(SessionError::NotFound(h.name().to_string()))
    );
    assert_nothing_left(&h, None).await;
    corral.shutdown().await.unwrap();
}

/// The spawn contract (process/leader.rs): the PTY is the program's controlling terminal (it is
/// a session leader in its own session, and the terminal's foreground group is its own), PATH is
/// looked up in the session's environment, a missing program is a clear error, and an fd the
/// host opened without close-on-exec does not reach the program, in either mode.
#[tokio::test]
async fn the_pty_is_the_controlling_terminal_and_no_host_fd_is_inherited() {
    let corral = corral().await;
    // An fd of the host without FD_CLOEXEC (as an embedding host might leave one).
    let leaky = unsafe { libc::dup(2) };
    assert!(leaky > 2);
    // Fields of /proc/<pid>/stat after the comm ($1 = field 3): $3 pgrp, $4 session, $5 tty_nr,
    // $6 tpgid (the terminal's foreground group).
    let script = format!(
        r#"set -- $(cut -d')' -f2 /proc/$$/stat); [ "$3" = "$$" ] && [ "$4" = "$$" ] && [ "$5" != 0 ] && [ "$6" = "$$" ] && echo CTTY-OK; [ -e /proc/$$/fd/{leaky} ] && echo FD-LEAKED; echo END"#
    );
    for mode in [Mode::Pty, Mode::Pipe] {
        let h = corral
            .sessions()
            .spawn(sh(&script).mode(mode))
            .await
            .unwrap();
        let mut sub = h.subscribe(Some(0)).unwrap();
        let out = String::from_utf8_lossy(&read_until(&mut sub, b"END").await).into_owned();
        if mode == Mode::Pty {
            assert!(out.contains("CTTY-OK"), "{out}");
        }
        assert!(
            !out.contains("FD-LEAKED"),
            "{mode:?}: fd {leaky} inherited: {out}"
        );
        corral.sessions().remove(&h.id().to_string()).await.unwrap();
    }
    unsafe { libc::close(leaky) };

    let Err(err) = corral
        .sessions()
        .spawn(SessionSpec::new(["no-such-program-corral"]))
        .await
    else {
        panic!("a missing program spawned");
    };
    let err = err.to_string();
    assert!(err.contains("not found"), "{err}");
    // PATH comes from the session's env, not the server's.
    let dir = tempfile::tempdir().unwrap();
    let tool = dir.path().join("corral-path-probe");
    std::fs::write(&tool, "#!/bin/sh\necho PROBE-RAN\n").unwrap();
    std::fs::set_permissions(&tool, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let path = format!("{}:/usr/bin:/bin", dir.path().display());
    let h = corral
        .sessions()
        .spawn(SessionSpec::new(["corral-path-probe"]).env("PATH", path))
        .await
        .unwrap();
    let mut sub = h.subscribe(Some(0)).unwrap();
    read_until(&mut sub, b"PROBE-RAN").await;
    corral.shutdown().await.unwrap();
}

/// A session whose spawn is under way is "starting", not missing: `get_started` waits for it
/// (an agent's first hook can arrive before the spawn has indexed its session), while an
/// unknown key is refused at once.
#[tokio::test]
async fn a_session_being_spawned_is_waited_for_and_an_unknown_one_is_not() {
    let corral = corral().await;
    let sessions = corral.sessions().clone();
    let t = std::time::Instant::now();
    assert!(matches!(
        sessions
            .get_started("no-such-session", Duration::from_secs(5))
            .await,
        Err(SessionError::NotFound(_))
    ));
    assert!(t.elapsed() < Duration::from_secs(1), "not waited for");
    for _ in 0..20 {
        let id = uuid::Uuid::new_v4();
        let key = id.to_string();
        let spawner = sessions.clone();
        let spawn = tokio::spawn(async move {
            spawner
                .spawn_with_id(id, SessionSpec::new(["sleep", "100"]))
                .await
                .map(|h| h.id())
        });
        // Asked as soon as the spawn has reserved the id: found once it is started.
        while !sessions.is_starting(&key) && sessions.get(&key).is_err() {
            tokio::task::yield_now().await;
        }
        let found = sessions
            .get_started(&key, Duration::from_secs(10))
            .await
            .expect("found once started");
        assert_eq!(found.id(), id);
        assert_eq!(spawn.await.unwrap().unwrap(), id);
        sessions.remove(&key).await.unwrap();
    }
    corral.shutdown().await.unwrap();
}
