//! Crash recovery of the real server: SIGKILL `corral serve` at random points (while sessions
//! write, right after a restart, in the middle of boot reconciliation), start it again on the
//! same data dir, and check what a user would: the database is sound, every process of every
//! session survived (their holders kept them: issue 17) and every session is running again
//! with the same pid whatever its policy, and each session's scrollback is a CRC-valid log
//! that extends what it held before.
//!
//! `CORRAL_CRASH_ITERATIONS=200 cargo test -p corral-tests --test crash` runs longer.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use corral_actors::process::procfs::ProcessIdentity;
use corral_tests::{Server, session_processes};
use serde_json::{Value, json};

/// Sessions: (name, policy, script). Some write continuously, so kills land mid-write.
fn specs() -> Vec<(String, &'static str, String)> {
    let mut out = Vec::new();
    for i in 0..20 {
        let policy = match i % 3 {
            0 => "always",
            1 => "on_failure",
            _ => "never",
        };
        let script = if i % 4 == 0 {
            // Output all the time.
            "i=0; while :; do i=$((i+1)); echo \"tick $i $$\"; sleep 0.02; done".to_string()
        } else if i % 4 == 1 {
            // A tree: a background job and a setsid escapee.
            "sleep 1000 & setsid sleep 1000 & echo \"up $$\"; exec sleep 1000".to_string()
        } else {
            "echo \"up $$\"; exec sleep 1000".to_string()
        };
        out.push((format!("s{i}"), policy, script));
    }
    out
}

async fn sessions(server: &Server) -> Vec<Value> {
    let (status, body) = server
        .http("GET", "/v1/sessions", Some(&server.token), None)
        .await;
    assert_eq!(status, 200, "{body}");
    serde_json::from_str::<Vec<Value>>(&body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

fn integrity(dir: &std::path::Path) -> String {
    let db = rusqlite::Connection::open_with_flags(
        dir.join("state.db"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap();
    db.query_row("PRAGMA integrity_check", [], |r| r.get::<_, String>(0))
        .unwrap()
}

#[tokio::test]
async fn sigkill_at_random_points_then_restart() {
    let iterations: usize = std::env::var("CORRAL_CRASH_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let mut server = Server::start();
    let mut policy: HashMap<String, &'static str> = HashMap::new();
    for (name, restart, script) in specs() {
        let info = server
            .spawn(json!({
                "name": name,
                "argv": ["sh", "-c", script],
                "restart": restart,
                "grace": {"secs": 1, "nanos": 0},
            }))
            .await;
        policy.insert(info["id"].as_str().unwrap().to_string(), restart);
    }
    let mut before: HashMap<String, Vec<u8>> = HashMap::new();
    let started = Instant::now();
    for iteration in 0..iterations {
        // A random point in the server's life.
        tokio::time::sleep(Duration::from_millis(fastrand::u64(0..300))).await;
        // The processes the dying server leaves behind, by identity (pid reuse proof).
        // Main processes and their `sleep 1000` helpers (a counter's `sleep 0.02` ends by
        // itself, so it is not counted).
        let mut old: Vec<ProcessIdentity> = Vec::new();
        let mains: Vec<i64> = sessions(&server)
            .await
            .iter()
            .filter_map(|s| s["pid"].as_i64())
            .collect();
        for (id, p) in &policy {
            let procs = session_processes(id);
            assert!(
                !procs.is_empty(),
                "iteration {iteration}: {p} session {id} has no process before the kill"
            );
            old.extend(
                procs
                    .into_iter()
                    .filter(|pid| {
                        mains.contains(&(*pid as i64))
                            || std::fs::read(format!("/proc/{pid}/cmdline"))
                                .is_ok_and(|c| c == b"sleep\x001000\x00")
                    })
                    .filter_map(|pid| ProcessIdentity::of(pid).ok()),
            );
        }
        server.kill();
        // Every third iteration, also kill the next server in the middle of its boot.
        if iteration % 3 == 2 {
            server.restart_nowait();
            tokio::time::sleep(Duration::from_millis(fastrand::u64(0..150))).await;
            server.kill();
        }
        // Scrollback right after the crash: CRC-valid, and it extends what it held before.
        for id in policy.keys() {
            let now = corral_tests::log_bytes(server.dir.path(), id);
            let prev = before.get(id).map(Vec::as_slice).unwrap_or_default();
            assert!(
                now.starts_with(prev),
                "iteration {iteration}: scrollback of {id} is not a prefix-consistent log"
            );
            before.insert(id.clone(), now);
        }
        server.restart();
        let list = sessions(&server).await;
        assert_eq!(
            list.len(),
            20,
            "iteration {iteration}: every session comes back"
        );
        assert_eq!(integrity(server.dir.path()), "ok", "iteration {iteration}");
        for p in &old {
            assert!(
                p.is_alive_same(),
                "iteration {iteration}: process {} of a session did not survive the crash",
                p.pid
            );
        }
        for s in &list {
            assert_eq!(s["state"], "running", "iteration {iteration}: {s}");
            assert_eq!(s["restarts"], 0, "iteration {iteration}: {s}");
        }
    }
    eprintln!("{iterations} crash iterations in {:?}", started.elapsed());
    // A last graceful stop leaves nothing.
    let (code, _) = server.terminate(Duration::from_secs(20));
    assert_eq!(code, Some(0));
    for id in policy.keys() {
        let left: Vec<String> = session_processes(id)
            .into_iter()
            .map(|p| {
                let stat = std::fs::read_to_string(format!("/proc/{p}/stat")).unwrap_or_default();
                let cmd = std::fs::read(format!("/proc/{p}/cmdline")).unwrap_or_default();
                format!("{stat} {:?}", String::from_utf8_lossy(&cmd))
            })
            .collect();
        assert!(left.is_empty(), "session {id} left processes: {left:#?}");
    }
}
