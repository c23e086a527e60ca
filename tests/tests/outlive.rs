//! Sessions outlive the server (issue 17): every PTY session has a holder process that owns
//! its terminal and is its program's parent, so a SIGKILLed `corral serve` costs nothing — the
//! program keeps its pid, the next server reattaches, and the log holds every byte exactly once.
//! A holder killed on its own makes its session lost (reason recorded, tree killed, restart per
//! policy); a stop, a removal or a full shutdown leaves no holder behind.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use corral_actors::process::procfs;
use corral_tests::{Server, log_bytes, session_processes, until_no_processes};
use serde_json::{Value, json};

/// The numbers of the complete `n <i>` lines of a log, in order.
fn numbers(log: &[u8]) -> Vec<u64> {
    let text = String::from_utf8_lossy(log);
    let complete = match text.rfind('\n') {
        Some(i) => &text[..i],
        None => "",
    };
    complete
        .lines()
        .map(|l| {
            l.trim_end_matches('\r')
                .strip_prefix("n ")
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("unexpected line {l:?}"))
        })
        .collect()
}

async fn list(server: &Server) -> Vec<Value> {
    let (status, body) = server
        .http("GET", "/v1/sessions", Some(&server.token), None)
        .await;
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

fn alive(pid: i32) -> bool {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .unwrap_or_default()
            .rsplit_once(") ")
            .is_some_and(|(_, r)| r.starts_with('Z'))
}

fn parent(pid: i32) -> i32 {
    procfs::read_stat(pid).unwrap().ppid
}

#[tokio::test]
async fn five_printers_keep_their_pids_and_every_line_through_twenty_server_kills() {
    five_printers_through_twenty_server_kills(Server::start(), true).await;
}

/// The same where the server does not read terminals itself (no io_uring: a container's
/// seccomp profile, an older kernel): every holder reads its own, into the shared ring.
#[tokio::test]
async fn five_printers_keep_every_line_through_twenty_server_kills_with_holders_reading() {
    five_printers_through_twenty_server_kills(
        Server::start_env(&[("CORRAL_IO_URING", "off")]),
        false,
    )
    .await;
}

/// io_uring instances the server process has open.
fn io_urings(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("server fds")
        .filter_map(|fd| std::fs::read_link(fd.ok()?.path()).ok())
        .filter(|target| target.to_string_lossy().contains("io_uring"))
        .count()
}

async fn five_printers_through_twenty_server_kills(mut server: Server, server_reads: bool) {
    let mut pids: HashMap<String, i64> = HashMap::new();
    for i in 0..5 {
        let info = server
            .spawn(json!({
                "name": format!("printer{i}"),
                "argv": ["sh", "-c", "i=0; while :; do i=$((i+1)); echo \"n $i\"; sleep 0.002; done"],
            }))
            .await;
        pids.insert(
            info["id"].as_str().unwrap().to_string(),
            info["pid"].as_i64().unwrap(),
        );
    }
    let holders: Vec<i32> = pids.values().map(|p| parent(*p as i32)).collect();
    // Who reads the terminals: this server, through an io_uring each, or the holders.
    assert_eq!(io_urings(server.pid()), if server_reads { 5 } else { 0 });
    let started = Instant::now();
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_millis(fastrand::u64(50..=500))).await;
        server.kill();
        server.restart();
    }
    // The last lines reach the log.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let sessions = list(&server).await;
    // Every one came back (an empty list would pass the checks below).
    assert_eq!(sessions.len(), 5, "{sessions:?}");
    for s in sessions {
        let id = s["id"].as_str().unwrap();
        assert_eq!(s["state"], "running", "{s}");
        assert_eq!(s["pid"].as_i64(), Some(pids[id]), "same pid: {s}");
        assert_eq!(s["restarts"], 0, "{s}");
        assert!(alive(pids[id] as i32), "process {} alive", pids[id]);
        let n = numbers(&log_bytes(server.dir.path(), id));
        assert!(n.len() > 100, "{id}: only {} lines", n.len());
        for (k, v) in n.iter().enumerate() {
            assert_eq!(
                *v,
                k as u64 + 1,
                "{id}: line {k} reads {v}: lost or doubled"
            );
        }
    }
    eprintln!("20 server kills in {:?}", started.elapsed());
    // A full stop is still a full stop: programs and holders gone.
    let (code, _) = server.terminate(Duration::from_secs(20));
    assert_eq!(code, Some(0));
    for (id, pid) in &pids {
        assert!(session_processes(id).is_empty(), "{id} left processes");
        assert!(!alive(*pid as i32));
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while holders.iter().any(|h| alive(*h)) {
        assert!(Instant::now() < deadline, "a holder outlived the shutdown");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let left: Vec<_> = std::fs::read_dir(server.dir.path().join("holders"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(left.is_empty(), "holder files left: {left:?}");
}

#[tokio::test]
async fn a_viewer_resumes_at_its_offset_after_a_server_kill() {
    let mut server = Server::start();
    let info = server
        .spawn(json!({
            "name": "printer",
            "argv": ["sh", "-c", "i=0; while :; do i=$((i+1)); echo \"n $i\"; sleep 0.002; done"],
        }))
        .await;
    let id = info["id"].as_str().unwrap().to_string();
    let mut got: Vec<u8> = Vec::new();
    for round in 0..3 {
        let before = got.len();
        let mut ws = server.ws().await;
        let reply = ws
            .call(json!({"type": "subscribe", "session": id, "from": got.len()}))
            .await;
        assert_eq!(reply["type"], "subscribed", "{reply}");
        let until = Instant::now() + Duration::from_millis(300);
        while Instant::now() < until {
            match tokio::time::timeout(Duration::from_millis(100), ws.next()).await {
                Ok(corral_tests::Frame::Bin(1, _, offset, bytes)) => {
                    assert_eq!(offset, got.len() as u64, "resumed exactly");
                    got.extend_from_slice(&bytes);
                }
                // The same process, reattached: no `spawned` (a viewer resets its terminal's
                // modes at one — bracketed paste, mouse, cursor keys — under a running
                // program, after every upgrade).
                Ok(corral_tests::Frame::Json(v)) if v["event"]["kind"]["kind"] == "spawned" => {
                    assert_eq!(round, 0, "a reattached process said spawned: {v}");
                }
                _ => {}
            }
        }
        // Each subscription, the resumed ones too, delivered the printer's new lines.
        assert!(
            got.len() > before,
            "round {round}: nothing after offset {before}"
        );
        server.kill();
        server.restart();
    }
    let events = server.cli_ok(&["events", "printer"]).await;
    assert_eq!(events.matches(" spawned ").count(), 1, "{events}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let log = log_bytes(server.dir.path(), &id);
    assert!(log.starts_with(&got), "what the viewer saw is the log");
    let n = numbers(&log);
    for (k, v) in n.iter().enumerate() {
        assert_eq!(*v, k as u64 + 1, "line {k} reads {v}");
    }
}

#[tokio::test]
async fn a_killed_holder_makes_its_session_lost_and_the_policy_restarts_it() {
    let server = Server::start();
    let info = server
        .spawn(json!({
            "name": "held",
            "argv": ["sh", "-c", "sleep 1000 & exec sleep 1000"],
            "restart": "on_failure",
        }))
        .await;
    let id = info["id"].as_str().unwrap().to_string();
    let pid = info["pid"].as_i64().unwrap() as i32;
    let holder = parent(pid);
    assert_eq!(
        info["holder_pid"], holder,
        "the API names the holder: {info}"
    );
    // Wait for the background sleep too.
    let deadline = Instant::now() + Duration::from_secs(5);
    while session_processes(&id).len() < 2 {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let old = session_processes(&id);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(holder),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    // The session is lost, its tree killed, and it restarts under a new holder.
    let deadline = Instant::now() + Duration::from_secs(10);
    let s = loop {
        let s = server.session(&id).await;
        if s["state"] == "running" && s["pid"].as_i64() != Some(pid as i64) {
            break s;
        }
        assert!(Instant::now() < deadline, "not restarted: {s}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(s["restarts"], 1, "{s}");
    for p in old {
        assert!(!alive(p), "process {p} of the lost session survived");
    }
    let mut ws = server.ws().await;
    let events = ws
        .call(json!({"type": "events", "session": id, "after": 0}))
        .await
        .to_string();
    assert!(
        events.contains(&format!("lost: its holder (pid {holder}) died")),
        "{events}"
    );
    // stop: the new holder goes with its session.
    let new_holder = parent(s["pid"].as_i64().unwrap() as i32);
    let (status, body) = server
        .http(
            "POST",
            &format!("/v1/sessions/{id}/stop"),
            Some(&server.token),
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let deadline = Instant::now() + Duration::from_secs(5);
    while alive(new_holder) {
        assert!(
            Instant::now() < deadline,
            "holder outlived its stopped session"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn an_exit_while_the_server_is_down_is_recorded_when_it_is_back() {
    let mut server = Server::start();
    let info = server
        .spawn(json!({
            "name": "short",
            "argv": ["sh", "-c", "echo started; sleep 1; echo bye-now; exit 3"],
            "restart": "never",
        }))
        .await;
    let id = info["id"].as_str().unwrap().to_string();
    let pid = info["pid"].as_i64().unwrap() as i32;
    let holder = parent(pid);
    // The server dies at once: the program exits a second later with no server attached.
    server.kill();
    let deadline = Instant::now() + Duration::from_secs(5);
    while alive(pid) {
        assert!(Instant::now() < deadline, "the program did not exit");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(alive(holder), "the holder keeps the exit status");
    let exited_by = std::time::SystemTime::now();
    server.restart();
    let deadline = Instant::now() + Duration::from_secs(10);
    let s = loop {
        let s = server.session(&id).await;
        if s["state"] == "stopped" {
            break s;
        }
        assert!(Instant::now() < deadline, "exit not recorded: {s}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(s["last_exit"]["code"], 3, "{s}");
    // It started when it started (the reattach time, a second later, was taken for its
    // start; the spawn's answer said the time it was told of the start).
    let start = |v: &Value| corral_actors::time::from_json(&v["started_at"]).expect("a start");
    let (then, now) = (start(&info), start(&s));
    let off = now.duration_since(then).unwrap_or_else(|e| e.duration());
    assert!(
        off < Duration::from_millis(500),
        "{then:?} then, {now:?} now"
    );
    // Recorded as it happened: at the holder's reap, before this server was started.
    let events = server.cli_ok(&["events", &id, "--json"]).await;
    let exited: Vec<Value> = events
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|e| e["kind"]["kind"] == "exited")
        .collect();
    assert_eq!(exited.len(), 1, "{events}");
    let at = corral_actors::time::from_json(&exited[0]["time"]).expect("an event time");
    assert!(
        at <= exited_by,
        "the exit's time is when it happened: {events}"
    );
    let log = String::from_utf8_lossy(&log_bytes(server.dir.path(), &id)).into_owned();
    assert!(
        log.contains("bye-now"),
        "its last output is in the log: {log:?}"
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while alive(holder) {
        assert!(
            Instant::now() < deadline,
            "holder outlived its ended session"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_reattached_session_shows_its_screen_before_it_draws_again() {
    let mut server = Server::start();
    let info = server
        .spawn(json!({
            "name": "drawn",
            "argv": ["sh", "-c", "printf 'hello-screen'; exec sleep 1000"],
        }))
        .await;
    let id = info["id"].as_str().unwrap().to_string();
    let deadline = Instant::now() + Duration::from_secs(5);
    while !String::from_utf8_lossy(&log_bytes(server.dir.path(), &id)).contains("hello-screen") {
        assert!(Instant::now() < deadline, "output not logged");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.kill();
    server.restart();
    // A subscription without an offset starts with a snapshot of the screen.
    let mut ws = server.ws().await;
    let r = ws.call(json!({"type": "subscribe", "session": id})).await;
    assert_eq!(r["type"], "subscribed", "{r}");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        assert!(Instant::now() < deadline, "no snapshot");
        if let Ok(corral_tests::Frame::Bin(2, _, _, bytes)) =
            tokio::time::timeout(Duration::from_millis(500), ws.next()).await
        {
            assert!(
                String::from_utf8_lossy(&bytes).contains("hello-screen"),
                "{:?}",
                String::from_utf8_lossy(&bytes)
            );
            break;
        }
    }
}

/// A session reattached after a server crash has the size its terminal was left at (by the
/// viewer who typed there), not its spec's: the next server said 24×80 for a 30×100 terminal,
/// drew its screen at 24×80, and an attach at 30×100 took the session for another viewer's size.
#[tokio::test]
async fn a_reattached_session_keeps_its_terminals_size() {
    let mut server = Server::start();
    let info = server
        .spawn(json!({
            "name": "sized",
            "argv": ["sh", "-c", "printf '%0120d|END' 0; exec sleep 1000"],
        }))
        .await;
    let id = info["id"].as_str().unwrap().to_string();
    let mut ws = server.ws().await;
    let r = ws
        .call(json!({"type": "resize", "session": id, "rows": 30, "cols": 130, "take": true}))
        .await;
    assert_eq!(r["type"], "ok", "{r}");
    let deadline = Instant::now() + Duration::from_secs(5);
    while server.session(&id).await["size"]["cols"] != 130 {
        assert!(Instant::now() < deadline, "not resized");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(ws);
    server.kill();
    server.restart();
    let s = server.session(&id).await;
    assert_eq!(s["size"], json!({"rows": 30, "cols": 130}), "{s}");
    let mut ws = server.ws().await;
    let r = ws.call(json!({"type": "subscribe", "session": id})).await;
    assert_eq!(r["size"], json!({"rows": 30, "cols": 130}), "{r}");
}

#[tokio::test]
async fn a_pipe_session_keeps_its_process_and_every_line_through_server_kills() {
    // stdout prints JSON lines, stderr plain ones, in separate writes: both are read by the
    // holder, so a server SIGKILLed at any instant loses none of them and cuts none in two.
    let mut server = Server::start();
    let script =
        r#"i=0; while :; do i=$((i+1)); echo "{\"n\":$i}"; echo "e $i" >&2; sleep 0.002; done"#;
    let info = server
        .spawn(json!({"name": "piped", "mode": "pipe", "argv": ["sh", "-c", script]}))
        .await;
    let id = info["id"].as_str().unwrap().to_string();
    let pid = info["pid"].as_i64().unwrap();
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_millis(fastrand::u64(50..=300))).await;
        server.kill();
        server.restart();
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let s = server.session(&id).await;
    assert_eq!(s["state"], "running", "{s}");
    assert_eq!(s["pid"].as_i64(), Some(pid), "same process: {s}");
    let log = log_bytes(server.dir.path(), &id);
    let text = String::from_utf8_lossy(&log);
    let complete = &text[..text.rfind('\n').map_or(0, |i| i + 1)];
    let (mut out, mut err) = (Vec::new(), Vec::new());
    for line in complete.lines() {
        if let Some(n) = line.strip_prefix("e ") {
            err.push(
                n.parse::<u64>()
                    .unwrap_or_else(|_| panic!("cut line {line:?}")),
            );
        } else {
            let v: Value =
                serde_json::from_str(line).unwrap_or_else(|_| panic!("cut line {line:?}"));
            out.push(v["n"].as_u64().unwrap());
        }
    }
    assert!(out.len() > 100, "{} lines", out.len());
    // Every line of each stream exactly once, in order, from the first.
    let exact = |v: &[u64]| v.iter().enumerate().all(|(i, n)| *n == i as u64 + 1);
    assert!(exact(&out), "stdout lines lost or repeated: {out:?}");
    assert!(exact(&err), "stderr lines lost or repeated: {err:?}");
}

#[tokio::test]
async fn a_pipe_session_s_line_events_survive_a_kill_between_a_line_and_its_event() {
    // Two windows a SIGKILL can fall in: after a JSON line is logged but before its event is
    // journaled (made here by deleting the event from state.db while the server is down), and
    // inside a line (its first half logged, its end written after the restart).
    let mut server = Server::start();
    let go = server.dir.path().join("go");
    let script = format!(
        r#"printf '{{"a":1}}\n{{"b":'; while [ ! -e {} ]; do sleep 0.02; done; printf '2}}\n'; exec sleep 1000"#,
        go.display()
    );
    let info = server
        .spawn(json!({"name": "halves", "mode": "pipe", "argv": ["sh", "-c", script]}))
        .await;
    let id = info["id"].as_str().unwrap().to_string();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !(log_bytes(server.dir.path(), &id).ends_with(b"{\"b\":")
        && server.events_of(&id, "json").await.len() == 1)
    {
        assert!(Instant::now() < deadline, "first line and half not logged");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.kill();
    let db = rusqlite::Connection::open(server.dir.path().join("state.db")).unwrap();
    let gone = db
        .execute(
            "DELETE FROM events WHERE session = ?1 AND kind = 'json'",
            [&id],
        )
        .unwrap();
    assert_eq!(gone, 1);
    drop(db);
    server.restart();
    std::fs::write(&go, b"").unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let values = loop {
        let values: Vec<String> = server
            .events_of(&id, "json")
            .await
            .iter()
            .map(|e| e["value"].to_string())
            .collect();
        if values.len() >= 2 {
            break values;
        }
        assert!(Instant::now() < deadline, "events: {values:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(values, [r#"{"a":1}"#, r#"{"b":2}"#]);
    assert_eq!(log_bytes(server.dir.path(), &id), b"{\"a\":1}\n{\"b\":2}\n");
}

#[tokio::test]
async fn programs_that_end_at_once_start_and_end_cleanly_under_their_holders() {
    // The program may be reaped by its holder before the server's Hello is read: the exit must
    // arrive in the Welcome, never as an unexpected first message. (A race: this catches it
    // only sometimes, under load; `holder::launch::tests` pins the server's side of it.)
    let server = Server::start();
    let mut ids = Vec::new();
    for i in 0..40 {
        let info = server
            .spawn(json!({"name": format!("quick{i}"), "argv": ["true"]}))
            .await;
        ids.push(info["id"].as_str().unwrap().to_string());
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let all = list(&server).await;
        let ended = all
            .iter()
            .filter(|s| s["state"] == "stopped" && s["last_exit"]["code"] == 0)
            .count();
        if ended == ids.len() {
            break;
        }
        assert!(Instant::now() < deadline, "not all ended cleanly: {all:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The holders the server started ahead (waiting for a spec on a pipe: no session's yet).
fn waiting_holders(server_pid: i32) -> Vec<i32> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        let stdin = std::fs::read_link(format!("/proc/{pid}/fd/0")).unwrap_or_default();
        // Read without unwrapping: any process may end while /proc is walked.
        let ppid = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|s| {
                s.rsplit_once(") ")?
                    .1
                    .split(' ')
                    .nth(1)?
                    .parse::<i32>()
                    .ok()
            });
        if comm.trim() == "corral-holder"
            && ppid == Some(server_pid)
            && stdin.to_string_lossy().starts_with("pipe:")
        {
            out.push(pid);
        }
    }
    out
}

/// A spawn takes the holder started ahead and the next one is started after it is answered
/// (its exec is off the spawn's path); that waiting holder belongs to no session and ends with
/// its server, killed or stopped.
#[tokio::test]
async fn the_holder_started_ahead_ends_with_its_server() {
    let mut server = Server::start();
    for round in 0..2 {
        let info = server.spawn(json!({"argv": ["cat"]})).await;
        let id = info["id"].as_str().unwrap().to_string();
        let deadline = Instant::now() + Duration::from_secs(10);
        let waiting = loop {
            let w = waiting_holders(server.pid());
            if !w.is_empty() {
                break w;
            }
            assert!(Instant::now() < deadline, "no holder started ahead");
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert_eq!(waiting.len(), 1, "{waiting:?}");
        // Not a session's: nothing carries a session id, and it is none of this session's.
        assert!(!session_processes(&id).contains(&waiting[0]));
        let environ = std::fs::read(format!("/proc/{}/environ", waiting[0])).unwrap_or_default();
        assert!(environ.is_empty(), "a waiting holder has no environment");
        if round == 0 {
            server.kill();
        } else {
            server.terminate(Duration::from_secs(20));
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while alive(waiting[0]) {
            assert!(
                Instant::now() < deadline,
                "the waiting holder {} outlived its server",
                waiting[0]
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if round == 0 {
            server.restart();
        }
    }
}

/// A holder started ahead that was killed while waiting does not fail the next spawn: a fresh
/// holder takes its place.
#[tokio::test]
async fn a_spawn_after_the_waiting_holder_was_killed_starts_a_fresh_one() {
    let server = Server::start();
    server.spawn(json!({"argv": ["cat"]})).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    let waiting = loop {
        let w = waiting_holders(server.pid());
        if !w.is_empty() {
            break w[0];
        }
        assert!(Instant::now() < deadline, "no holder started ahead");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(waiting),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    while alive(waiting) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let info = server
        .spawn(json!({"argv": ["cat"], "name": "after"}))
        .await;
    assert_eq!(info["state"], "running", "{info}");
    assert!(
        info["holder_pid"]
            .as_i64()
            .is_some_and(|p| p as i32 != waiting),
        "{info}"
    );
}

/// Shared memory a process has mapped (`RssShmem`), in KiB.
fn rss_shmem_kib(pid: i32) -> u64 {
    procfs::status_kib(pid, "RssShmem").expect("RssShmem")
}

/// The memory a holder's shared ring holds (the pages allocated to its memfd, whoever touched
/// them), in KiB: a holder whose server reads the terminal itself never touches the ring's
/// pages, so its `RssShmem` says nothing about them.
fn ring_kib(holder: i32) -> u64 {
    use std::os::unix::fs::MetadataExt;
    for fd in std::fs::read_dir(format!("/proc/{holder}/fd")).expect("holder fds") {
        let path = fd.expect("fd entry").path();
        let target = std::fs::read_link(&path).unwrap_or_default();
        if target.to_string_lossy().contains("memfd:corral-ring") {
            return std::fs::metadata(&path).expect("ring").blocks() * 512 / 1024;
        }
    }
    panic!("holder {holder} has no ring")
}

/// Waits (up to a minute) until the session's log holds `n` bytes.
async fn until_logged(server: &Server, id: &str, n: usize, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while log_bytes(server.dir.path(), id).len() < n {
        assert!(Instant::now() < deadline, "{what} never reached the log");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Damages a session's log as a torn write would: its last segment file loses its last
/// `bytes`. Returns the log's folder.
fn cut_the_last_segment(server: &Server, id: &str, bytes: u64) -> std::path::PathBuf {
    let logs = server.dir.path().join("logs").join(id);
    let mut segs: Vec<_> = std::fs::read_dir(&logs)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    segs.sort();
    let last = segs.last().unwrap();
    let len = std::fs::metadata(last).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(last)
        .unwrap()
        .set_len(len - bytes)
        .unwrap();
    logs
}

/// The bytes `n <first>` … `n <last>` take in a terminal's output (lines end in CR LF).
fn lines_len(first: u64, last: u64) -> usize {
    (first..=last).map(|k| format!("n {k}\r\n").len()).sum()
}

#[tokio::test]
async fn a_held_ring_hands_logged_output_back_and_the_next_server_still_gets_every_byte() {
    let mut server = Server::start();
    let go = server.dir.path().join("go");
    let script = format!(
        "seq 1 1000000 | sed 's/^/n /'; while [ ! -e {go} ]; do sleep 0.05; done; \
         seq 1000001 1100000 | sed 's/^/n /'; exec sleep 1000",
        go = go.display()
    );
    let info = server
        .spawn(json!({"name": "flood", "argv": ["sh", "-c", script]}))
        .await;
    let id = info["id"].as_str().unwrap().to_string();
    let holder = parent(info["pid"].as_i64().unwrap() as i32);
    // ~9.9 MB: more than the holder's 8 MiB ring, so every page of it was touched.
    until_logged(&server, &id, lines_len(1, 1_000_000), "the first part").await;
    // Logged, so within a couple of seconds the ring keeps only its last 1 MiB (the largest
    // log record) and a page in memory (8 MiB before logged output was released); the server
    // maps that, its header page and the two pages of its io_uring's queues.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (h, s) = (ring_kib(holder), rss_shmem_kib(server.pid()));
        if h <= 1024 + 8 && s <= 1024 + 8 + 8 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "holder ring still {h} KiB resident (server {s} KiB)"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The rest is written while no server is attached; the next one gets every byte once.
    server.kill();
    std::fs::write(&go, "").unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    server.restart();
    let total = lines_len(1, 1_100_000);
    until_logged(&server, &id, total, "the second part").await;
    let log = log_bytes(server.dir.path(), &id);
    assert_eq!(log.len(), total, "nothing doubled");
    let n = numbers(&log);
    assert_eq!(n.len(), 1_100_000);
    for (k, v) in n.iter().enumerate() {
        assert_eq!(*v, k as u64 + 1, "line {k} reads {v}: lost or doubled");
    }
}

#[tokio::test]
async fn a_torn_last_record_is_refilled_from_the_ring_after_its_memory_was_released() {
    let mut server = Server::start();
    let script = "head -c 12000000 /dev/zero | tr '\\0' x; exec sleep 1000";
    let info = server
        .spawn(json!({"name": "flood", "argv": ["sh", "-c", script]}))
        .await;
    let id = info["id"].as_str().unwrap().to_string();
    let pid = info["pid"].as_i64().unwrap();
    let holder = parent(pid as i32);
    until_logged(&server, &id, 12_000_000, "the output").await;
    // Released down to the last 1 MiB.
    let deadline = Instant::now() + Duration::from_secs(5);
    while ring_kib(holder) > 1024 + 8 {
        assert!(Instant::now() < deadline, "the ring was not released");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The server dies and the log's last record is damaged (a torn write, a bad sector):
    // recovery cuts it, and the next server asks the holder for it again.
    server.kill();
    cut_the_last_segment(&server, &id, 10);
    let cut = log_bytes(server.dir.path(), &id).len();
    assert!(cut < 12_000_000, "the last record is gone from the log");
    eprintln!("the torn record held {} bytes", 12_000_000 - cut);
    server.restart();
    until_logged(&server, &id, 12_000_000, "the torn record").await;
    let log = log_bytes(server.dir.path(), &id);
    assert_eq!(log.len(), 12_000_000, "nothing doubled");
    assert!(log.iter().all(|b| *b == b'x'));
    let s = server.session(&id).await;
    assert_eq!(s["state"], "running", "{s}");
    assert_eq!(s["pid"].as_i64(), Some(pid), "same process: {s}");
}

#[tokio::test]
async fn a_session_restarted_at_once_keeps_its_new_holder_from_the_old_one_leaving() {
    // Restarted with no delay, a session's next holder listens at the same path while the
    // last one may still be leaving (it removes its socket and log as it goes): the old one
    // must never take the new one's socket with it, or the restart fails ("holder: No such
    // file or directory", seen once in a chaos run).
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("server.log");
    let server = Server::start_logging_to(&log);
    let zero = json!({"secs": 0, "nanos": 0});
    let info = server
        .spawn(json!({
            "name": "flapping",
            "argv": ["true"],
            "restart": "always",
            "backoff": {"initial": zero, "max": zero, "multiplier": 1.0, "jitter": 0.0,
                        "reset_after": zero},
            "intensity": {"max_restarts": 1_000_000, "period": {"secs": 1, "nanos": 0}},
        }))
        .await;
    let id = info["id"].as_str().unwrap().to_string();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let s = server.session(&id).await;
        if s["restarts"].as_u64().unwrap_or(0) >= 300 {
            break;
        }
        assert_ne!(s["state"], "failed", "{s}");
        assert!(Instant::now() < deadline, "only so many restarts: {s}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    server.cli_ok(&["rm", &id]).await;
    let text = std::fs::read_to_string(&log).unwrap();
    let failed: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("restart failed") || l.contains("could not start"))
        .collect();
    assert!(
        failed.is_empty(),
        "{} failed restarts: {:?}",
        failed.len(),
        &failed[..failed.len().min(3)]
    );
}

#[tokio::test]
async fn a_holder_whose_data_dir_is_gone_ends_its_session_even_while_its_program_prints() {
    // Its server SIGKILLed and the holders' folder removed (a wiped state dir, a test's temp
    // dir): no server can ever attach again, so the holder ends the session rather than leak
    // it — also while the program keeps printing, which wakes the holder all the time (a
    // chaos run left such a holder behind for as long as its ring took to fill).
    let mut server = Server::start();
    let info = server
        .spawn(json!({
            "name": "chatty",
            "argv": ["sh", "-c", "while :; do echo x; sleep 0.01; done"],
        }))
        .await;
    let pid = info["pid"].as_i64().unwrap() as i32;
    let holder = info["holder_pid"].as_i64().unwrap() as i32;
    server.kill();
    std::fs::remove_dir_all(server.dir.path().join("holders")).unwrap();
    // Looked at every 5 s while no server is attached.
    let deadline = Instant::now() + Duration::from_secs(15);
    while alive(holder) || alive(pid) {
        assert!(
            Instant::now() < deadline,
            "holder {holder} or its program {pid} outlived the data dir"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn two_sessions_of_one_name_both_come_back_and_the_running_one_keeps_it() {
    // A spawn refused for its name used to leave a record, so the next boot found two
    // sessions of one name, restored one (the ended one, say) and left the other out of the
    // registry — its program running on under its holder, seen and stopped by nobody. Now a
    // refused spawn leaves nothing, and a data dir that holds such a pair (an older server
    // wrote it) comes back whole: the running session keeps the name, the other is renamed.
    let mut server = Server::start();
    let running = server
        .spawn(json!({"name": "w", "argv": ["sh", "-c", "echo up; exec cat"]}))
        .await;
    let ended = server
        .spawn(json!({"name": "other", "argv": ["true"]}))
        .await;
    let rid = running["id"].as_str().unwrap().to_string();
    let eid = ended["id"].as_str().unwrap().to_string();
    let pid = running["pid"].as_i64().unwrap();
    let (status, body) = server
        .http(
            "POST",
            "/v1/sessions",
            Some(&server.token),
            Some(&json!({"name": "w", "argv": ["cat"]})),
        )
        .await;
    assert_eq!(status, 409, "{body}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while server.session(&eid).await["state"] != "stopped" {
        assert!(Instant::now() < deadline, "`true` ends");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.kill();
    server.restart();
    assert_eq!(
        list(&server).await.len(),
        2,
        "the refused spawn left no session"
    );

    // What an older server left: a second record of the name.
    server.kill();
    let db = rusqlite::Connection::open(server.dir.path().join("state.db")).unwrap();
    let changed = db
        .execute("UPDATE sessions SET name = 'w' WHERE id = ?1", [&eid])
        .unwrap();
    assert_eq!(changed, 1);
    drop(db);
    let renamed = format!("w-{}", &eid.replace('-', "")[..8]);
    for boot in 0..2 {
        server.restart();
        let w = server.session("w").await;
        assert_eq!(w["id"], rid.as_str(), "boot {boot}: {w}");
        assert_eq!(w["state"], "running", "boot {boot}: {w}");
        assert_eq!(
            w["pid"].as_i64(),
            Some(pid),
            "boot {boot}: same process: {w}"
        );
        let other = server.session(&eid).await;
        assert_eq!(other["name"], renamed.as_str(), "boot {boot}: {other}");
        assert_eq!(other["state"], "stopped", "boot {boot}: {other}");
        server.kill();
    }
    server.restart();
    let said: Vec<String> = server
        .events_of(&eid, "recovery")
        .await
        .iter()
        .map(|e| e.to_string())
        .collect();
    assert!(
        said.iter().any(|e| e.contains("renamed from 'w'")),
        "{said:?}"
    );
    let (code, _) = server.terminate(Duration::from_secs(20));
    assert_eq!(code, Some(0));
    assert!(!alive(pid as i32), "a full stop ends it");
}

#[tokio::test]
async fn a_log_damaged_past_what_its_holder_holds_keeps_the_program_and_records_the_gap() {
    // The log's end is damaged (a bad sector, a torn write) further back than the running
    // holder holds: into the output of the session's previous process, whose holder is gone.
    // Those bytes exist nowhere any more. The next server must not take that out on the
    // program (it used to kill it and start another: a chaos run's "torn log tail" fault);
    // it reattaches and records the loss as a gap.
    let mut server = Server::start();
    let mark = tempfile::tempdir().unwrap();
    let script = format!(
        "if [ -e {m} ]; then echo again; else touch {m}; head -c 5000 /dev/zero | tr '\\0' x; echo; fi; exec sleep 1000",
        m = mark.path().join("ran").display()
    );
    let info = server
        .spawn(json!({"name": "twice", "argv": ["sh", "-c", script], "restart": "always"}))
        .await;
    let id = info["id"].as_str().unwrap().to_string();
    until_logged(&server, &id, 5002, "the first process's output").await;
    let first = info["pid"].as_i64().unwrap() as i32;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(first),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    until_logged(&server, &id, 5009, "the second process's output").await;
    let s = server.session(&id).await;
    assert_eq!(s["restarts"], 1, "{s}");
    let pid = s["pid"].as_i64().unwrap();
    server.kill();
    let logs = cut_the_last_segment(&server, &id, 100);
    assert!(
        log_bytes(server.dir.path(), &id).len() < 5002,
        "the cut reaches the first process's output"
    );
    server.restart();
    let s = server.session(&id).await;
    assert_eq!(s["state"], "running", "{s}");
    assert_eq!(s["pid"].as_i64(), Some(pid), "the same process: {s}");
    assert_eq!(s["restarts"], 1, "{s}");
    // Output after the gap is logged after it.
    server.cli_ok(&["send", &id, "hello\n"]).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    let chunks = loop {
        let (reader, _) = corral_actors::persist::LogReader::open(&logs).unwrap();
        let chunks = reader.read_range(0, usize::MAX).unwrap();
        let text: Vec<u8> = chunks
            .iter()
            .filter_map(|c| match c {
                corral_actors::persist::Chunk::Data { bytes, .. } => Some(bytes.clone()),
                _ => None,
            })
            .flatten()
            .collect();
        if String::from_utf8_lossy(&text).contains("hello") {
            break chunks;
        }
        assert!(Instant::now() < deadline, "the echo is logged");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let gaps: Vec<(u64, u64)> = chunks
        .iter()
        .filter_map(|c| match c {
            corral_actors::persist::Chunk::Gap { from, to } => Some((*from, *to)),
            _ => None,
        })
        .collect();
    assert_eq!(gaps.len(), 1, "one gap: {gaps:?}");
    assert_eq!(
        gaps[0].1, 5002,
        "it ends where the second process's output begins"
    );
    let said: Vec<String> = server
        .events_of(&id, "recovery")
        .await
        .iter()
        .map(|e| e.to_string())
        .collect();
    assert!(said.iter().any(|e| e.contains("lost")), "{said:?}");
}

/// A session the registry never recorded (its commit failed, e.g. on a full disk, and the
/// server died before it could say so) has a holder and a program that nothing can list, stop
/// or remove. The next server ends them and removes their files, instead of leaving them
/// running for good outside every listing. Its record is deleted here to stand for the failed
/// commit.
#[tokio::test]
async fn a_holder_of_a_session_never_recorded_is_ended_by_the_next_server() {
    let mut server = Server::start();
    let kept = server
        .spawn(json!({"name": "kept", "argv": ["sleep", "1000"]}))
        .await;
    let lost = server
        .spawn(json!({"name": "unrecorded", "argv": ["sh", "-c", "echo hi; exec sleep 1000"]}))
        .await;
    let id = lost["id"].as_str().unwrap().to_string();
    let pid = lost["pid"].as_i64().unwrap() as i32;
    let holder = parent(pid);
    until_logged(&server, &id, 1, "its output").await;
    server.kill();
    let db = rusqlite::Connection::open(server.dir.path().join("state.db")).unwrap();
    assert_eq!(
        db.execute("DELETE FROM sessions WHERE id = ?1", [&id])
            .unwrap(),
        1
    );
    drop(db);
    let dir = server.dir.path().to_path_buf();
    let socket = dir.join("holders").join(format!("{id}.sock"));
    assert!(socket.exists());
    server.restart();
    let deadline = Instant::now() + Duration::from_secs(10);
    while alive(pid) || alive(holder) {
        assert!(
            Instant::now() < deadline,
            "the unrecorded session's program {pid} or holder {holder} still runs"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!socket.exists(), "its socket is left");
    assert!(
        !dir.join("logs").join(&id).exists(),
        "its scrollback is left"
    );
    let (status, report) = server
        .http("GET", "/v1/recovery", Some(&server.token), None)
        .await;
    assert_eq!(status, 200, "{report}");
    let report: Value = serde_json::from_str(&report).unwrap();
    assert_eq!(report["strays_released"], 1, "{report}");
    // The recorded session is untouched.
    let s = server.session("kept").await;
    assert_eq!(s["state"], "running", "{s}");
    assert_eq!(s["pid"], kept["pid"], "{s}");
}

/// Storage damage in the middle of an ended session's log (a bad sector in its first segment)
/// costs only the rest of that segment: the next server keeps every later segment, the range is
/// a gap in the log, and the session's journal says which bytes were lost. (It used to cut
/// the log at the damage, delete the intact later segments, and, for an ended session, say
/// nothing but a line in the server's log.)
#[tokio::test]
async fn damage_in_the_middle_of_a_log_loses_only_the_damaged_range_and_says_so() {
    use corral_actors::persist::{Chunk, LogReader};
    let mut server = Server::start();
    let info = server
        .spawn(json!({"name": "long", "argv": ["seq", "1", "1500000"]}))
        .await;
    let id = info["id"].as_str().unwrap().to_string();
    // And one whose only segment is damaged: its end is cut, and that is said too.
    let short = server
        .spawn(json!({"name": "short", "argv": ["seq", "1", "20000"]}))
        .await;
    let short = short["id"].as_str().unwrap().to_string();
    let deadline = Instant::now() + Duration::from_secs(60);
    for s in [&id, &short] {
        while server.session(s).await["state"] != "stopped" {
            assert!(Instant::now() < deadline, "seq did not end");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    server.terminate(Duration::from_secs(20));
    let only = server
        .dir
        .path()
        .join("logs")
        .join(&short)
        .join("00000000.seg");
    let mut bytes = std::fs::read(&only).unwrap();
    for b in &mut bytes[80_000..80_050] {
        *b ^= 0xff;
    }
    std::fs::write(&only, bytes).unwrap();
    let logs = server.dir.path().join("logs").join(&id);
    let mut segments: Vec<_> = std::fs::read_dir(&logs)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .collect();
    segments.sort();
    assert!(segments.len() >= 3, "{segments:?}");
    let mut first = std::fs::read(&segments[0]).unwrap();
    for b in &mut first[500_000..500_050] {
        *b ^= 0xff;
    }
    std::fs::write(&segments[0], first).unwrap();
    server.restart();
    // Every segment is still there; the log reads as everything, one gap in the first
    // segment, everything after it.
    let (reader, damage) = LogReader::open(&logs).unwrap();
    assert_eq!(damage, None, "repaired at the restore");
    let chunks = reader.read_range(0, usize::MAX).unwrap();
    let gaps: Vec<(u64, u64)> = chunks
        .iter()
        .filter_map(|c| match c {
            Chunk::Gap { from, to } => Some((*from, *to)),
            Chunk::Data { .. } => None,
        })
        .collect();
    assert_eq!(gaps.len(), 1, "{gaps:?}");
    let (from, to) = gaps[0];
    assert!(from < 500_000 && to > 500_050 && to <= 4 << 20, "{gaps:?}");
    let text: Vec<u8> = chunks
        .iter()
        .filter_map(|c| match c {
            Chunk::Data { bytes, .. } => Some(bytes.clone()),
            Chunk::Gap { .. } => None,
        })
        .flatten()
        .collect();
    let text = String::from_utf8_lossy(&text);
    assert!(text.ends_with("1499999\r\n1500000\r\n"), "the end is kept");
    assert!(text.starts_with("1\r\n2\r\n"));
    let events = server.cli_ok(&["events", &id, "--json"]).await;
    assert!(
        events.contains(&format!("output {from}..{to} lost: the log was damaged")),
        "{events}"
    );
    let events = server.cli_ok(&["events", &short, "--json"]).await;
    assert!(
        events.contains("the log was damaged (segment 0 at byte")
            && events.contains("past the damage could not be read"),
        "{events}"
    );
}

/// A server that cannot start after its sessions came back (a full disk refused its
/// `server.json`) must not take them down with it: it exits with the error and leaves them
/// to their holders, and the next server takes them back (it killed every one of them).
/// Here `server.json` cannot be written because a directory stands in its place.
#[tokio::test]
async fn a_server_that_fails_to_start_leaves_the_sessions_to_their_holders() {
    let mut server = Server::start();
    let info = server
        .spawn(json!({"name": "survivor", "argv": ["sleep", "1000"]}))
        .await;
    let pid = info["pid"].as_i64().unwrap() as i32;
    server.kill();
    let dir = server.dir.path().to_path_buf();
    let blocker = dir.join("server.json");
    if blocker.exists() {
        std::fs::remove_file(&blocker).unwrap();
    }
    std::fs::create_dir_all(blocker.join("in-the-way")).unwrap();
    let out = tokio::task::spawn_blocking({
        let dir = dir.clone();
        move || {
            std::process::Command::new(corral_tests::binary())
                .arg("--data-dir")
                .arg(&dir)
                .args(["serve", "--listen", "127.0.0.1:0"])
                .stdin(std::process::Stdio::null())
                .output()
                .unwrap()
        }
    })
    .await
    .unwrap();
    assert!(!out.status.success(), "it could not write server.json");
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("server.json"), "{said}");
    assert!(
        alive(pid),
        "the session's program died with the failed start: {said}"
    );
    std::fs::remove_dir_all(&blocker).unwrap();
    server.restart();
    let s = server.session("survivor").await;
    assert_eq!(s["state"], "running", "{s}");
    assert_eq!(s["pid"], pid, "{s}");
}

/// A running session's log folder removed by hand: the log is made again at its next segment
/// and the program goes on (the writer retried the missing path for good, and the program,
/// its output no longer taken, stopped).
#[tokio::test]
async fn a_removed_log_folder_is_made_again_and_the_program_goes_on() {
    let server = Server::start();
    let info = server
        .spawn(json!({"name": "printer", "argv": ["sh", "-c", "i=0; while :; do i=$((i+1)); echo \"L $i\"; done"]}))
        .await;
    let id = info["id"].as_str().unwrap().to_string();
    let logs = server.dir.path().join("logs").join(&id);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !logs.exists() {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    std::fs::remove_dir_all(&logs).unwrap();
    let at = server.session(&id).await["output_offset"].as_u64().unwrap();
    // Past two segments (4 MiB each) more: the folder is back and taking output.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let s = server.session(&id).await;
        if s["output_offset"].as_u64().unwrap() > at + (10 << 20) && logs.exists() {
            assert!(s["persist_error"].is_null(), "{s}");
            break;
        }
        assert!(Instant::now() < deadline, "the program stopped: {s}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    server.cli_ok(&["rm", "printer"]).await;
}

/// A holder killed while no server runs: the next server says so plainly (it said "could not
/// reattach: Connection refused"), shows no pid for the ended session (it showed the dead one,
/// which another program may get), and kills what was left of the session.
#[tokio::test]
async fn a_holder_killed_while_no_server_runs_is_said_and_its_pid_is_not_shown() {
    let mut server = Server::start();
    let info = server
        .spawn(json!({"name": "orphaned", "argv": ["sh", "-c", "sleep 3001 & while :; do sleep 1; done"]}))
        .await;
    let id = info["id"].as_str().unwrap().to_string();
    let pid = info["pid"].as_i64().unwrap() as i32;
    let holder = parent(pid);
    // No wait: a spawn is answered once it is in the registry (see the next test).
    server.kill();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(holder),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    server.restart();
    let deadline = Instant::now() + Duration::from_secs(15);
    let s = loop {
        let s = server.session(&id).await;
        if s["state"] == "stopped" {
            break s;
        }
        assert!(Instant::now() < deadline, "{s}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(s["pid"].is_null(), "{s}");
    let reason = s["reason"].as_str().unwrap();
    assert!(
        reason.starts_with("lost: its holder died while no server was running"),
        "{reason}"
    );
    assert!(
        session_processes(&id).is_empty(),
        "{:?}",
        session_processes(&id)
    );
}

/// Holds state.db's write lock from another real SQLite connection for 1 s (the server's
/// commits wait): when it was taken, and the thread that lets it go.
fn hold_the_registry(server: &Server) -> (Instant, std::thread::JoinHandle<()>) {
    let db = rusqlite::Connection::open(server.dir.path().join("state.db")).unwrap();
    db.execute_batch("BEGIN IMMEDIATE").unwrap();
    let locked = Instant::now();
    let unlock = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(1));
        db.execute_batch("COMMIT").unwrap();
    });
    (locked, unlock)
}

/// A spawn is answered once the registry has it: a server SIGKILLed right after a spawn it
/// acknowledged leaves the next server a record of it, and the session goes on (the registry
/// commits in batches on its own thread; under CI's load a kill came first, and the next server
/// ended the session as one it had no record of). The registry is kept busy here by another
/// connection holding its write lock for a second, as a slow disk or a long batch would.
#[tokio::test]
async fn a_session_acknowledged_just_before_a_server_kill_is_not_lost() {
    let mut server = Server::start();
    let (locked, unlock) = hold_the_registry(&server);
    let info = server
        .spawn(json!({"name": "acknowledged", "argv": ["sleep", "1000"]}))
        .await;
    let answered = locked.elapsed();
    let id = info["id"].as_str().unwrap().to_string();
    let pid = info["pid"].as_i64().unwrap();
    server.kill();
    unlock.join().unwrap();
    server.restart();
    let (status, body) = server
        .http(
            "GET",
            &format!("/v1/sessions/{id}"),
            Some(&server.token),
            None,
        )
        .await;
    assert_eq!(
        status, 200,
        "answered after {answered:?}, then forgotten: {body}"
    );
    let s: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(s["state"], "running", "{s}");
    assert_eq!(s["pid"].as_i64(), Some(pid), "{s}");
    assert!(alive(pid as i32));
    server.cli_ok(&["rm", "acknowledged"]).await;
}

/// A stop is answered once the registry has it: a server SIGKILLed right after it stopped a
/// `restart = always` session leaves the next server a stopped session (it found the record
/// still running and its holder gone, took it for lost, and started the program again). The
/// registry is kept busy by another connection holding its write lock, as above.
#[tokio::test]
async fn a_stop_acknowledged_just_before_a_server_kill_stays_stopped() {
    let mut server = Server::start();
    let info = server
        .spawn(json!({"name": "stopped-for-good", "argv": ["sleep", "1000"], "restart": "always"}))
        .await;
    let pid = info["pid"].as_i64().unwrap() as i32;
    let (locked, unlock) = hold_the_registry(&server);
    server.cli_ok(&["stop", "stopped-for-good"]).await;
    let answered = locked.elapsed();
    server.kill();
    unlock.join().unwrap();
    assert!(!alive(pid));
    server.restart();
    // Long enough for a lost session's restart to have begun.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let s = server.session("stopped-for-good").await;
    assert_eq!(
        s["state"], "stopped",
        "stop answered after {answered:?}: {s}"
    );
    assert!(s["pid"].is_null(), "{s}");
    assert!(
        !s["reason"].as_str().unwrap_or_default().starts_with("lost"),
        "{s}"
    );
}

/// A restart is answered once the registry holds it: the next server after a kill right after
/// the answer has the restart's exit and spawn in the session's history (without the wait the
/// registry still had the old process, and the history went from the first spawn straight on).
#[tokio::test]
async fn a_restart_acknowledged_just_before_a_server_kill_is_in_the_history() {
    let mut server = Server::start();
    let info = server
        .spawn(json!({"name": "restarted", "argv": ["sleep", "1000"]}))
        .await;
    let first = info["pid"].as_i64().unwrap();
    let (locked, unlock) = hold_the_registry(&server);
    let (status, body) = server
        .http(
            "POST",
            "/v1/sessions/restarted/restart",
            Some(&server.token),
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let answered = locked.elapsed();
    let second = serde_json::from_str::<Value>(&body).unwrap()["pid"]
        .as_i64()
        .unwrap();
    assert_ne!(first, second);
    server.kill();
    unlock.join().unwrap();
    server.restart();
    let s = server.session("restarted").await;
    assert_eq!(s["state"], "running", "{s}");
    assert_eq!(s["pid"], second, "{s}");
    let spawned: Vec<i64> = server
        .events_of("restarted", "spawned")
        .await
        .iter()
        .map(|e| e["pid"].as_i64().unwrap())
        .collect();
    assert_eq!(
        spawned,
        vec![first, second],
        "restart answered after {answered:?}"
    );
}

/// Signals aimed at servers by name (`pkill -USR1 corral` also matches `corral-holder`) do
/// not end sessions: a holder ends only when released (USR1, USR2, QUIT and ALRM killed it,
/// and its session was lost). Its program still gets the default dispositions.
#[tokio::test]
async fn stray_signals_to_a_holder_do_not_end_its_session() {
    let server = Server::start();
    let info = server
        .spawn(json!({"name": "signalled", "argv": ["sleep", "600"]}))
        .await;
    let pid = info["pid"].as_i64().unwrap() as i32;
    let holder = parent(pid);
    for sig in [
        nix::sys::signal::Signal::SIGUSR1,
        nix::sys::signal::Signal::SIGUSR2,
        nix::sys::signal::Signal::SIGQUIT,
        nix::sys::signal::Signal::SIGALRM,
        nix::sys::signal::Signal::SIGHUP,
        nix::sys::signal::Signal::SIGTERM,
    ] {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(holder), sig).unwrap();
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(alive(holder), "the holder died of a stray signal");
    let s = server.session("signalled").await;
    assert_eq!(s["state"], "running", "{s}");
    assert_eq!(s["pid"], pid, "{s}");
    // The program's own dispositions are the defaults: SIGUSR1 ends a sleep.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGUSR1,
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while server.session("signalled").await["state"] == "running" {
        assert!(Instant::now() < deadline, "the program ignored SIGUSR1");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The same signals aimed at the server: logged and ignored (their default action ended it
/// without a word), and the server goes on serving the session it had.
#[tokio::test]
async fn stray_signals_to_the_server_are_ignored() {
    let server = Server::start();
    server
        .spawn(json!({"name": "served", "argv": ["sleep", "600"]}))
        .await;
    for sig in [
        nix::sys::signal::Signal::SIGUSR1,
        nix::sys::signal::Signal::SIGUSR2,
        nix::sys::signal::Signal::SIGALRM,
    ] {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(server.pid()), sig).unwrap();
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(alive(server.pid()), "the server died of a stray signal");
    assert_eq!(server.session("served").await["state"], "running");
}

/// A holder stopped by SIGSTOP (a debugger, a stray `kill -STOP`) neither reaps nor hears
/// `Release`: a stop continues it, so the stop still reports the program's own exit and the
/// holder leaves with its session (it stayed, stopped, until the session was removed).
#[tokio::test]
async fn a_stopped_holder_goes_with_its_stopped_session() {
    let server = Server::start();
    let info = server
        .spawn(json!({"name": "frozen", "argv": ["sleep", "600"], "restart": "never"}))
        .await;
    let id = info["id"].as_str().unwrap().to_string();
    let holder = parent(info["pid"].as_i64().unwrap() as i32);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(holder),
        nix::sys::signal::Signal::SIGSTOP,
    )
    .unwrap();
    let (status, body) = server
        .http(
            "POST",
            &format!("/v1/sessions/{id}/stop"),
            Some(&server.token),
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let s = server.session("frozen").await;
    assert_eq!(s["state"], "stopped", "{s}");
    // The program's own end (the stop signal, SIGHUP), reported by its holder, not a guess.
    assert_eq!(s["last_exit"], json!({"signal": 1}), "{s}");
    let deadline = Instant::now() + Duration::from_secs(5);
    while alive(holder) {
        assert!(
            Instant::now() < deadline,
            "a stopped holder outlived its stopped session"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    until_no_processes(&id, Duration::from_secs(5)).await;
}

/// A registry record older than the session's holder (a restart whose commit a full disk
/// refused, then a server crash) names another process than the one the holder runs: the
/// holder's is the session's program, and it is adopted, not killed for the record's sake.
#[tokio::test]
async fn a_record_older_than_the_holder_is_corrected_not_obeyed() {
    let mut server = Server::start();
    let info = server
        .spawn(json!({"name": "newer", "argv": ["sleep", "1000"]}))
        .await;
    let id = info["id"].as_str().unwrap().to_string();
    let pid = info["pid"].as_i64().unwrap() as i32;
    let db = rusqlite::Connection::open(server.dir.path().join("state.db")).unwrap();
    let read_row = || -> Value {
        let row: String = db
            .query_row("SELECT row FROM sessions WHERE id = ?1", [&id], |r| {
                r.get(0)
            })
            .unwrap();
        serde_json::from_str(&row).unwrap()
    };
    // The record of the running process is committed a moment after the spawn's answer (on a
    // loaded machine, later than the kill below would come).
    let deadline = Instant::now() + Duration::from_secs(10);
    while read_row()["process"]["pid"] != pid {
        assert!(Instant::now() < deadline, "never recorded: {}", read_row());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.kill();
    let mut row = read_row();
    assert_eq!(row["process"]["pid"], pid, "{row}");
    row["process"]["pid"] = json!(pid + 1_000_000);
    db.execute(
        "UPDATE sessions SET row = ?1 WHERE id = ?2",
        [row.to_string(), id.clone()],
    )
    .unwrap();
    drop(db);
    server.restart();
    let s = server.session(&id).await;
    assert_eq!(s["state"], "running", "{s}");
    assert_eq!(s["pid"], pid, "{s}");
    assert!(alive(pid), "the session's program was killed");
}

/// A session's log that cannot be opened when its first output comes (here a file stands where
/// its folder goes; a full disk does the same) is opened when it can be: the open is tried
/// again every second (it was never, and the program, its output no longer taken, stopped for
/// good after 1 MiB).
#[tokio::test]
async fn a_log_that_cannot_be_opened_is_tried_again() {
    let server = Server::start();
    let go = tempfile::tempdir().unwrap();
    let flag = go.path().join("go");
    let script = format!(
        "while [ ! -e {} ]; do sleep 0.05; done; head -c 3000000 /dev/zero | tr '\\0' x; exec sleep 600",
        flag.display()
    );
    let info = server
        .spawn(json!({"name": "late-log", "argv": ["sh", "-c", script]}))
        .await;
    let id = info["id"].as_str().unwrap().to_string();
    let logs = server.dir.path().join("logs").join(&id);
    std::fs::create_dir_all(logs.parent().unwrap()).unwrap();
    std::fs::write(&logs, b"in the way").unwrap();
    std::fs::write(&flag, b"").unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let s = server.session(&id).await;
        if !s["persist_error"].is_null() {
            break;
        }
        assert!(Instant::now() < deadline, "the open never failed: {s}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    std::fs::remove_file(&logs).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let s = server.session(&id).await;
        if s["output_offset"].as_u64().unwrap() >= 3_000_000 && s["persist_error"].is_null() {
            break;
        }
        assert!(Instant::now() < deadline, "the log was never opened: {s}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The Ring's head is ahead of the log by up to its capacity: the persister catches up.
    until_logged(&server, &id, 3_000_000, "the output").await;
    assert_eq!(log_bytes(server.dir.path(), &id).len(), 3_000_000);
}

/// Variable `key` of process `pid`'s environment.
fn environment_variable(pid: i64, key: &str) -> String {
    let env = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
    env.split(|&b| b == 0)
        .find_map(|kv| kv.strip_prefix(format!("{key}=").as_bytes()))
        .map(|v| String::from_utf8_lossy(v).to_string())
        .unwrap()
}

/// `corral hook` run as Claude Code runs it inside session process `pid` (its environment),
/// with `payload` on its stdin.
fn run_hook(pid: i64, payload: &[u8]) -> std::process::Child {
    let var = |k: &str| environment_variable(pid, k);
    let mut hook = std::process::Command::new(corral_tests::binary())
        .arg("hook")
        .env_clear()
        .env("CORRAL_SESSION_ID", var("CORRAL_SESSION_ID"))
        .env("CORRAL_DATA_DIR", var("CORRAL_DATA_DIR"))
        .env("CORRAL_HOOK_TOKEN", var("CORRAL_HOOK_TOKEN"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut stdin = hook.stdin.take().unwrap();
        stdin.write_all(payload).unwrap();
    }
    hook
}

/// An agent's hook posted while its server is away for a moment (a crash and a restart) is
/// tried again within its time limit, not lost (one attempt: the agent then showed `working`
/// for good after a lost `Stop`).
#[tokio::test]
async fn a_hook_posted_while_the_server_restarts_arrives() {
    let mut server = Server::start();
    let info = server
        .spawn(json!({"name": "agent", "argv": ["cat"]}))
        .await;
    let pid = info["pid"].as_i64().unwrap();
    server.kill();
    let hook = run_hook(
        pid,
        br#"{"hook_event_name":"Notification","session_id":"claude-abc","message":"across a restart"}"#,
    );
    server.restart();
    let out = hook.wait_with_output().unwrap();
    assert!(out.status.success());
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.is_empty(), "{said}");
    let events = server.events_of("agent", "hook").await;
    assert!(
        events
            .iter()
            .any(|e| e.to_string().contains("across a restart")),
        "{events:?}"
    );
}

/// Hooks fired while no server is there at all (down for longer than a hook tries: a crash
/// nobody restarted yet) wait in the data dir's spool and the next server records them, in
/// order, before anything live: an agent whose turn ended during the outage is idle when the
/// server is back (it used to stay `working` until its next hook), its journal has the
/// events, and the spool is empty again.
#[tokio::test]
async fn hooks_fired_while_no_server_runs_are_recorded_by_the_next() {
    let mut server = Server::start();
    // An agent session (its state is rebuilt from the journal when adopted): a program under
    // the claude profile, which ignores the arguments the profile adds.
    let dir = tempfile::tempdir().unwrap();
    let program = dir.path().join("agent.sh");
    corral_tests::executable(&program, "#!/bin/sh\nexec cat\n");
    let info = server
        .spawn(json!({"name": "agent", "argv": [program], "agent": "claude"}))
        .await;
    let pid = info["pid"].as_i64().unwrap();
    let posted = run_hook(
        pid,
        br#"{"hook_event_name":"UserPromptSubmit","prompt":"go"}"#,
    )
    .wait_with_output()
    .unwrap();
    assert!(posted.stderr.is_empty(), "{posted:?}");
    assert_eq!(server.session("agent").await["attention"], "working");
    server.kill();
    let spool = server.dir.path().join("hooks");
    let fired = std::time::SystemTime::now();
    for payload in [
        &br#"{"hook_event_name":"Notification","message":"while away"}"#[..],
        br#"{"hook_event_name":"Stop"}"#,
    ] {
        let started = Instant::now();
        let out = run_hook(pid, payload).wait_with_output().unwrap();
        assert!(out.status.success());
        assert!(out.stderr.is_empty(), "spooled without a word: {out:?}");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "a hook gives up on an absent server within its time limit"
        );
    }
    let spooled: Vec<_> = std::fs::read_dir(&spool).unwrap().collect();
    assert_eq!(spooled.len(), 2, "{spooled:?}");
    let mode = std::fs::metadata(&spool).unwrap().permissions();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
        0o700
    );
    let replayed = std::time::SystemTime::now();
    server.restart();
    let view = server.session("agent").await;
    assert_eq!(view["attention"], "idle", "{view}");
    let events = server.events_of("agent", "hook").await;
    let names: Vec<String> = events
        .iter()
        .map(|e| e["name"].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(
        names,
        ["UserPromptSubmit", "Notification", "Stop"],
        "{events:?}"
    );
    // The replayed ones say when they ran, not when the next server recorded them.
    for e in &events[1..] {
        let ran = corral_actors::time::from_json(&e["ran_at"]).expect("ran_at");
        assert!(fired <= ran && ran < replayed, "{e}");
    }
    assert_eq!(std::fs::read_dir(&spool).unwrap().count(), 0);
    // A spooled record for a session that is gone, one that is not JSON, and one older than
    // the last hook the session recorded (a server that was up then): dropped, and the
    // server serves.
    server.kill();
    std::fs::write(
        spool.join("00000000000000000003-1.json"),
        json!({"session": info["id"], "token": environment_variable(pid, "CORRAL_HOOK_TOKEN"),
               "at": "2026-01-01T00:00:00Z", "payload": {"hook_event_name": "UserPromptSubmit"}})
        .to_string(),
    )
    .unwrap();
    std::fs::write(spool.join("00000000000000000001-1.json"), "not json").unwrap();
    std::fs::write(
        spool.join("00000000000000000002-1.json"),
        json!({"session": "00000000-0000-4000-8000-000000000000", "token": "x", "at": "2026-01-01T00:00:00Z",
               "payload": {"hook_event_name": "Stop"}})
        .to_string(),
    )
    .unwrap();
    server.restart();
    assert_eq!(std::fs::read_dir(&spool).unwrap().count(), 0);
    assert_eq!(server.events_of("agent", "hook").await.len(), 3);
    assert_eq!(server.session("agent").await["attention"], "idle");
}

/// A session that is an agent only by its own hooks (Claude Code started without corral's
/// profile, its user settings running `corral hook`) keeps its attention across a server
/// restart, as a profile's agent does (it used to come back with none).
#[tokio::test]
async fn an_agent_known_by_its_hooks_alone_keeps_its_attention_across_a_restart() {
    let mut server = Server::start();
    let info = server.spawn(json!({"name": "own", "argv": ["cat"]})).await;
    let pid = info["pid"].as_i64().unwrap();
    for payload in [
        &br#"{"hook_event_name":"SessionStart","session_id":"claude-own","source":"startup"}"#[..],
        br#"{"hook_event_name":"UserPromptSubmit","prompt":"go"}"#,
    ] {
        let out = run_hook(pid, payload).wait_with_output().unwrap();
        assert!(out.stderr.is_empty(), "{out:?}");
    }
    assert_eq!(server.session("own").await["attention"], "working");
    server.kill();
    server.restart();
    let view = server.session("own").await;
    assert_eq!(view["attention"], "working", "{view}");
}

/// A reattached terminal's screen is rebuilt from its log at the sizes the output was written
/// at (the journal's `resized` events), not all at today's: a program that drew at 80 columns,
/// then erased what it drew line by line after a phone made it 53 columns wide (as Claude
/// Code's renderer does), came back after a server restart with the rows it had erased — an
/// old dialog under its prompt, which also refused every prompt (`shows a dialog`).
#[tokio::test]
async fn a_reattached_screen_is_rebuilt_at_the_sizes_its_output_was_written_at() {
    let mut server = Server::start();
    let script = r#"
import os, signal, sys, time
out = sys.stdout
out.write("\x1b[2J\x1b[H")
for i in range(10):
    out.write("%070d\r\n" % i)
out.write("DIALOG")
out.flush()
def redraw(*_):
    out.write("\x1b[2K\x1b[1A" * 10 + "\x1b[2K\rNEW")
    out.flush()
signal.signal(signal.SIGWINCH, redraw)
while True:
    time.sleep(1)
"#;
    let info = server
        .spawn(json!({
            "name": "redrawn",
            "argv": ["python3", "-c", script],
            "size": {"rows": 24, "cols": 80},
        }))
        .await;
    let id = info["id"].as_str().unwrap().to_string();
    let logged = |server: &Server, what: &str| {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !String::from_utf8_lossy(&log_bytes(server.dir.path(), &id)).contains(what) {
            assert!(Instant::now() < deadline, "{what} never reached the log");
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    logged(&server, "DIALOG");
    let mut ws = server.ws().await;
    let r = ws
        .call(json!({"type": "resize", "session": id, "rows": 24, "cols": 53, "take": true}))
        .await;
    assert_eq!(r["type"], "ok", "{r}");
    logged(&server, "NEW");
    let screen = async |server: &Server| {
        let (code, body) = server
            .http(
                "GET",
                &format!("/agentapi/{id}/messages"),
                Some(&server.token),
                None,
            )
            .await;
        assert_eq!(code, 200, "{body}");
        let m: Value = serde_json::from_str(&body).unwrap();
        m["messages"][0]["content"].as_str().unwrap().to_string()
    };
    assert_eq!(screen(&server).await, "NEW", "live");
    drop(ws);
    server.kill();
    server.restart();
    assert_eq!(screen(&server).await, "NEW", "after the restart");
}

/// A copy of a data dir (a backup restored on the same machine, as docs/operations.md says
/// to make one) has the original's session ids, pids and start times in its registry; its
/// server must leave the original server's programs alone — it took them for its own
/// survivors and ended them, killing the production session.
#[tokio::test]
async fn a_server_of_a_copied_data_dir_leaves_the_originals_programs_alone() {
    let original = Server::start();
    let info = original
        .spawn(
            json!({"name": "prod", "argv": ["sh", "-c", "while :; do echo line; sleep 0.2; done"]}),
        )
        .await;
    let pid = info["pid"].as_i64().unwrap() as i32;
    let mut copy = Server::start();
    copy.kill();
    for file in ["state.db", "state.db-wal", "state.db-shm"] {
        let from = original.dir.path().join(file);
        if from.exists() {
            std::fs::copy(&from, copy.dir.path().join(file)).unwrap();
        }
    }
    copy.restart();
    // The copy's reconciliation is done once it answers; give a sweep's grace time anyway.
    let _ = copy.session("prod").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(alive(pid), "the copy's server ended the original's program");
    // Said so in the copy's journal (it read "its process was already gone").
    let said = copy.events_of("prod", "recovery").await;
    assert!(
        said.iter().any(|e| e["decision"]
            .as_str()
            .is_some_and(|d| d.contains("another data dir"))),
        "{said:?}"
    );
    let s = original.session("prod").await;
    assert_eq!(s["state"], "running", "{s}");
    assert_eq!(s["pid"], pid, "{s}");
}

/// An upgrade's old server may still be inside a read of a held terminal after it let go of
/// its connection: the holder answers the next server's `Hello` only once that old *process*
/// is gone (a pidfd), and then the terminal — with the output nobody read meanwhile — is the
/// new server's to read. Here the old server is a forked process that attached (reading the
/// terminal itself, through an io_uring) and hung up, and lives on until it is killed.
#[test]
fn a_holder_answers_the_next_server_once_the_last_reading_process_is_gone() {
    use corral_actors::holder::launch::{self, HeldIo, Holders};
    use std::os::fd::AsRawFd;
    assert!(
        corral_actors::holder::uring::supported(),
        "this machine's servers read held terminals themselves (io_uring): the test needs it"
    );
    let dir = tempfile::tempdir().unwrap();
    let holders = Holders::new(corral_tests::binary(), dir.path().join("holders")).unwrap();
    let id = corral_actors::uuid::Uuid::new_v4();
    let program = held_program(
        "stty raw -echo; head -c1 >/dev/null; echo written-meanwhile; exec sleep 600",
        1 << 20,
    );
    let (ready_r, ready_w) = nix::unistd::pipe().unwrap();
    // SAFETY: the child launches the holder, attaches, hangs up and waits to be killed; it
    // never returns into the test harness (`_exit`/`pause`).
    let old = unsafe { libc::fork() };
    assert!(old >= 0);
    if old == 0 {
        let status = match launch::launch(&holders, id, program) {
            Ok(attached) => {
                let HeldIo::Ring { input, reads, .. } = &attached.io else {
                    // SAFETY: leaving the forked child at once.
                    unsafe { libc::_exit(3) }
                };
                // The go keystroke: the program prints once this server has let go.
                let ok = reads.is_some() && nix::unistd::write(input, b"g").is_ok();
                drop(attached);
                if ok { 0 } else { 2 }
            }
            Err(_) => 1,
        };
        // SAFETY: one byte from a live local.
        unsafe { libc::write(ready_w.as_raw_fd(), [status].as_ptr().cast(), 1) };
        loop {
            // SAFETY: waits for the SIGKILL.
            unsafe { libc::pause() };
        }
    }
    drop(ready_w);
    // The old server is killed and reaped once: below, or when an assertion fails first.
    struct Child(i32, std::cell::Cell<bool>);
    impl Child {
        fn kill(&self) -> (i32, i32) {
            self.1.set(true);
            // SAFETY: our forked child, not reaped before (`self.1`).
            unsafe {
                (
                    libc::kill(self.0, libc::SIGKILL),
                    libc::waitpid(self.0, std::ptr::null_mut(), 0),
                )
            }
        }
    }
    impl Drop for Child {
        fn drop(&mut self) {
            if !self.1.get() {
                eprintln!("killing the old server after a failure: {:?}", self.kill());
            }
        }
    }
    let guard = Child(old, std::cell::Cell::new(false));
    let mut status = [9u8];
    assert_eq!(nix::unistd::read(&ready_r, &mut status).unwrap(), 1);
    assert_eq!(
        status[0], 0,
        "the old server could not launch and attach (1), read (2)"
    );
    // The next server says Hello: no answer while the old process lives.
    let socket = holders.socket(id);
    let next = std::thread::spawn(move || (launch::attach(&socket, 0), Instant::now()));
    std::thread::sleep(Duration::from_millis(700));
    assert!(
        !next.is_finished(),
        "answered while the last reading server still ran"
    );
    let killed = Instant::now();
    assert_eq!(guard.kill(), (0, old));
    let (attached, at) = next.join().unwrap();
    let attached = attached.expect("the next server's attach");
    assert!(at >= killed);
    let (input, ring, mut reads) = reading(attached.io);
    // The output written after the old server hung up comes through the new one's reads (the
    // go keystroke may be echoed first, if it came before the program's `stty`).
    let want: &[u8] = b"written-meanwhile\n";
    read_held(&mut reads, &input, &ring, |r| {
        r.read(0, 100).ends_with(want)
    });
    assert!(matches!(ring.read(0, 100), [b'g', ..] | [b'w', ..]));
    drop(attached.socket);
    launch::release(&holders.socket(id), Duration::from_secs(5)).unwrap();
}

/// While a server reads a held terminal itself it is the ring's only writer, and so the only one
/// to hand logged output's pages back: a holder that punched them too could zero a read the
/// server had just made into them, before the server copied it out (2.6 KB of zeros in a 100
/// MB byte-exact test, about one run in nine). Here the test is that server: it reads 4 MB
/// through its io_uring, says all of it is logged (and sends the `Logged` that servers before
/// sent), and waits past the holder's release period — nothing may be released until it
/// releases itself.
#[test]
fn only_the_server_reading_a_held_terminal_hands_its_logged_pages_back() {
    use corral_actors::holder::launch::{self, Holders};
    assert!(
        corral_actors::holder::uring::supported(),
        "this machine's servers read held terminals themselves (io_uring): the test needs it"
    );
    const OUT: u64 = 4_000_000;
    let dir = tempfile::tempdir().unwrap();
    let holders = Holders::new(corral_tests::binary(), dir.path().join("holders")).unwrap();
    let id = corral_actors::uuid::Uuid::new_v4();
    let program = held_program(
        &format!("stty raw -echo; head -c {OUT} /dev/zero | tr '\\0' x; exec sleep 600"),
        8 << 20,
    );
    let attached = launch::launch(&holders, id, program).unwrap();
    let (input, ring, mut reads) = reading(attached.io);
    read_held(&mut reads, &input, &ring, |r| r.end() >= OUT);
    // All of it logged, as far as the holder can tell; a `Logged` as the servers before this
    // change sent (it wakes the holder, which used to release on it); then more than its
    // release period.
    ring.set_acked(ring.end());
    assert!(ring.releasable());
    corral_actors::holder::wire::send(
        std::os::fd::AsFd::as_fd(&attached.socket),
        &corral_actors::holder::wire::ToHolder::Logged,
        &[],
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(
        ring.held_from(),
        0,
        "the holder released pages this server writes"
    );
    assert!(ring.read(0, 100).iter().all(|&b| b == b'x'));
    // The writer releases them itself, keeping the last MiB.
    assert!(ring.release_logged().unwrap() > 0);
    assert!(
        ring.held_from() >= OUT - (1 << 20) - 4096,
        "{}",
        ring.held_from()
    );
    drop(attached.socket);
    launch::release(&holders.socket(id), Duration::from_secs(5)).unwrap();
}

/// What a test's held session runs: `sh -c script` on a terminal, a ring of `ring` bytes.
fn held_program(script: &str, ring: usize) -> corral_actors::holder::launch::Program {
    corral_actors::holder::launch::Program {
        argv: ["sh", "-c", script].map(String::from).to_vec(),
        env: vec![("PATH".into(), std::env::var("PATH").unwrap())],
        cwd: None,
        size: corral_actors::Size { rows: 24, cols: 80 },
        base: 0,
        ring,
        pipes: false,
    }
}

/// The terminal, ring and io_uring of a server that reads a held terminal itself.
fn reading(
    io: corral_actors::holder::launch::HeldIo,
) -> (
    std::os::fd::OwnedFd,
    corral_actors::holder::ring::SharedRing,
    corral_actors::holder::uring::ReadRing,
) {
    let corral_actors::holder::launch::HeldIo::Ring {
        input,
        ring,
        reads: Some(reads),
        ..
    } = io
    else {
        panic!("this server does not read the terminal itself");
    };
    (input, ring, reads)
}

/// Reads a held terminal as a server that reads it itself would (through its io_uring, into
/// the shared ring) until `done` says so, 20 s at most.
fn read_held(
    reads: &mut corral_actors::holder::uring::ReadRing,
    input: &std::os::fd::OwnedFd,
    ring: &corral_actors::holder::ring::SharedRing,
    done: impl Fn(&corral_actors::holder::ring::SharedRing) -> bool,
) {
    use std::os::fd::AsRawFd;
    let deadline = Instant::now() + Duration::from_secs(20);
    while !done(ring) {
        assert!(
            Instant::now() < deadline,
            "read {} bytes: {:?}",
            ring.end(),
            String::from_utf8_lossy(ring.read(ring.end().saturating_sub(100), 100))
        );
        let (buf, len) = ring.reader_slot();
        // SAFETY: the ring's free space, which only this reader writes.
        match unsafe {
            reads.read(input.as_raw_fd(), buf, len, ring.end(), false, |n| {
                ring.publish(n)
            })
        } {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(1))
            }
            Err(e) => panic!("read: {e}"),
        }
    }
}

/// A server under a small open-file limit takes only the sessions its successor can take back:
/// spawns past what the limit holds are refused, saying so, and after a SIGKILL the next server
/// (under the same limit) reattaches every one. It took sessions until its files ran out; the
/// next server then ran out reattaching them, killed the rest as "lost" and stopped.
#[tokio::test]
async fn a_server_takes_no_more_sessions_than_its_successor_can_take_back() {
    let dir = tempfile::tempdir().unwrap();
    let wrapper = dir.path().join("corral-512");
    corral_tests::executable(
        &wrapper,
        &format!(
            "#!/bin/sh\nulimit -n 512 || exit 9\nexec {} \"$@\"\n",
            corral_tests::binary().display()
        ),
    );
    let mut server = Server::start_from_env(&wrapper, &[]);
    let mut pids = HashMap::new();
    let refused = loop {
        let n = pids.len();
        assert!(n < 200, "never refused: the open-file limit bounds nothing");
        let spec =
            json!({"name": format!("s{n}"), "argv": ["sh", "-c", "echo up; exec sleep 1000"]});
        let (status, body) = server
            .http("POST", "/v1/sessions", Some(&server.token), Some(&spec))
            .await;
        if status != 201 && status != 200 {
            break (status, body);
        }
        let info: Value = serde_json::from_str(&body).unwrap();
        pids.insert(
            info["id"].as_str().unwrap().to_string(),
            info["pid"].as_i64().unwrap(),
        );
    };
    assert_eq!(refused.0, 409, "{}", refused.1);
    assert!(refused.1.contains("session limit reached"), "{}", refused.1);
    // (512 − 128 for the server − 128 for clients) ÷ 12 per session.
    assert_eq!(pids.len(), 21, "{}", refused.1);
    server.kill();
    server.restart();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let sessions = list(&server).await;
        let running = sessions.iter().filter(|s| s["state"] == "running").count();
        if running == pids.len() {
            for s in &sessions {
                let id = s["id"].as_str().unwrap();
                assert_eq!(s["pid"].as_i64(), Some(pids[id]), "{s}");
            }
            break;
        }
        let lost: Vec<_> = sessions
            .iter()
            .filter(|s| s["state"] != "running")
            .collect();
        assert!(Instant::now() < deadline, "not all reattached: {lost:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(server.cli_ok(&["ps"]).await.contains("s20"));
    server.cli_ok(&["shutdown"]).await;
    for pid in pids.values() {
        let t = Instant::now();
        while alive(*pid as i32) {
            assert!(
                t.elapsed() < Duration::from_secs(15),
                "{pid} outlived the shutdown"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// `corral ps` says why a session whose holder died ended: it read `stopped … signal 9` and
/// nothing more, as if someone had run `corral kill` (the reason was only in `--json`).
#[tokio::test]
async fn ps_says_a_session_was_lost() {
    let server = Server::start();
    let info = server
        .spawn(json!({"name": "gone", "argv": ["sleep", "1000"], "restart": "never"}))
        .await;
    let holder = parent(info["pid"].as_i64().unwrap() as i32);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(holder),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while server.session("gone").await["state"] != "stopped" {
        assert!(Instant::now() < deadline, "not stopped");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let ps = server.cli_ok(&["ps"]).await;
    let row = ps.lines().find(|l| l.contains("gone")).unwrap();
    assert!(row.contains("lost: its holder"), "{ps}");
}

/// `state.db` removed while the server runs (a cleanup's `rm state.db*`): the server writes it
/// again from its own copy, so a next server (after a SIGKILL here) still has every session
/// and takes them back. Unnoticed, the commits went to a file nobody read again, and the next
/// server ended both running programs as holders of no record and deleted their scrollback.
#[tokio::test]
async fn a_registry_removed_under_the_server_is_written_again() {
    let mut server = Server::start();
    let first = server
        .spawn(json!({"name": "before", "argv": ["sh", "-c", "while :; do echo tick; sleep 0.2; done"]}))
        .await;
    let db = server.dir.path().join("state.db");
    for suffix in ["", "-wal", "-shm"] {
        let path = format!("{}{suffix}", db.display());
        if std::path::Path::new(&path).exists() {
            std::fs::remove_file(&path).unwrap();
        }
    }
    let second = server
        .spawn(json!({"name": "after", "argv": ["sleep", "1000"]}))
        .await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !db.exists() {
        assert!(Instant::now() < deadline, "state.db was not written again");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Written again with the spawn that came after the removal too (it may take a turn).
    let names = || {
        let conn =
            rusqlite::Connection::open_with_flags(&db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
                .unwrap();
        let mut q = conn
            .prepare("SELECT name FROM sessions ORDER BY name")
            .unwrap();
        q.query_map([], |r| r.get::<_, String>(0))
            .unwrap()
            .map(Result::unwrap)
            .collect::<Vec<_>>()
    };
    while names() != ["after", "before"] {
        assert!(Instant::now() < deadline, "{:?}", names());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    server.kill();
    server.restart();
    for (name, info) in [("before", &first), ("after", &second)] {
        let s = server.session(name).await;
        assert_eq!(s["state"], "running", "{s}");
        assert_eq!(s["pid"], info["pid"], "{s}");
    }
}

/// A data dir whose `state.db` is gone while programs run under their holders (moved aside
/// because it was damaged, removed by hand while no server ran): `corral serve` refuses to
/// start, naming the holders, instead of ending the running programs with their scrollback as
/// holders of no record. Once they are ended as it says, a server starts.
#[tokio::test]
async fn a_server_without_its_registry_leaves_running_sessions_alone() {
    let mut server = Server::start();
    let info = server
        .spawn(json!({"name": "precious", "argv": ["sleep", "1000"]}))
        .await;
    let pid = info["pid"].as_i64().unwrap() as i32;
    let holder = info["holder_pid"].as_i64().unwrap() as i32;
    server.kill();
    let dir = server.dir.path().to_path_buf();
    for suffix in ["-wal", "-shm"] {
        let path = dir.join(format!("state.db{suffix}"));
        if path.exists() {
            std::fs::remove_file(&path).unwrap();
        }
    }
    // `corral serve`, which must end (refusing) within 30 s: one that started is killed and
    // said.
    let serve = || {
        let dir = dir.clone();
        tokio::task::spawn_blocking(move || {
            let mut child = std::process::Command::new(corral_tests::binary())
                .arg("--data-dir")
                .arg(&dir)
                .args(["serve", "--listen", "127.0.0.1:0"])
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            let deadline = Instant::now() + Duration::from_secs(30);
            while child.try_wait().unwrap().is_none() {
                if Instant::now() > deadline {
                    child.kill().unwrap();
                    panic!("it started: {:?}", child.wait_with_output().unwrap());
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            child.wait_with_output().unwrap()
        })
    };
    // Damaged first (its header overwritten): said so, with what to do.
    {
        use std::io::Write;
        let mut db = std::fs::File::options()
            .write(true)
            .open(dir.join("state.db"))
            .unwrap();
        db.write_all(&[0x5a; 100]).unwrap();
    }
    let out = serve().await.unwrap();
    assert!(!out.status.success(), "it started on a damaged registry");
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains("state.db is damaged") && said.contains("from a backup"),
        "{said}"
    );
    assert!(alive(pid), "the program was ended: {said}");
    // Then moved aside.
    std::fs::rename(dir.join("state.db"), dir.join("state.db.damaged")).unwrap();
    let out = serve().await.unwrap();
    assert!(!out.status.success(), "it started without its registry");
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains("no state.db") && said.contains(&format!("kill -9 {holder}")),
        "{said}"
    );
    assert!(alive(pid), "the program was ended: {said}");
    assert!(
        !dir.join("state.db").exists(),
        "an empty registry was left: {said}"
    );
    // Ended as it says, a server starts (and has nothing).
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(holder),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while alive(pid) {
        assert!(
            Instant::now() < deadline,
            "the program outlived its holder's terminal"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    server.restart();
    assert!(list(&server).await.is_empty());
}

/// A stop and a removal the registry could not take yet (its write lock held past SQLite's
/// busy wait, as a full disk would refuse it) are done, and say so on the CLI as a warning —
/// a crash before the next commit would undo them. They said only "stopped" / "removed".
#[tokio::test]
async fn a_stop_and_a_removal_not_yet_in_the_registry_are_said_to_be_unsafe() {
    let server = Server::start();
    for name in ["to-stop", "to-rm"] {
        server
            .spawn(json!({"name": name, "argv": ["sleep", "1000"]}))
            .await;
    }
    let db = rusqlite::Connection::open(server.dir.path().join("state.db")).unwrap();
    db.execute_batch("BEGIN IMMEDIATE").unwrap();
    let (stop, rm) = tokio::join!(
        server.cli(&["stop", "to-stop"]),
        server.cli(&["rm", "to-rm"])
    );
    db.execute_batch("COMMIT").unwrap();
    for (out, said) in [
        (
            &stop,
            "warning: to-stop stopped, but not in the registry yet",
        ),
        (&rm, "warning: to-rm removed, but not from the registry yet"),
    ] {
        assert!(out.status.success(), "{out:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(said), "{err}");
        assert!(err.contains("a server crash now would"), "{err}");
    }
}
