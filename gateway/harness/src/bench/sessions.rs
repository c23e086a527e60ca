//! Sessions: what a session costs to create, stop, restart, keep idle and recover — spawns and
//! stops (one connection, the CLI), restart latency, memory and CPU of idle sessions, the soak,
//! and reconciliation after a server SIGKILL.

use std::time::{Duration, Instant};

use anyhow::bail;
use futures::future::join_all;
use serde_json::{Value, json};

use corral_client::{Conn, Incoming};

use super::*;
use crate::JsonCalls;
use crate::figure::Figure;
use crate::served::Served;

/// Sends every spawn at once on one connection (pipelined), then collects the session ids.
pub(super) async fn spawn_pipelined(
    ws: &mut Conn,
    specs: Vec<Value>,
) -> anyhow::Result<Vec<String>> {
    let n = specs.len();
    for spec in specs {
        ws.send(json!({"type": "spawn", "spec": spec})).await?;
    }
    let mut ids = Vec::with_capacity(n);
    while ids.len() < n {
        match ws.next().await {
            Incoming::Json(v) if v["type"] == "session" => {
                ids.push(v["session"]["id"].as_str().unwrap_or_default().to_string())
            }
            Incoming::Json(v) if v["type"] == "error" => bail!("spawn failed: {v}"),
            Incoming::Closed(r) => bail!("closed: {r}"),
            _ => {}
        }
    }
    Ok(ids)
}

/// Spawn + graceful stop of `n` `cat` sessions through one connection (pipelined requests).
pub(super) async fn spawn_stop(server: &Served, n: usize) -> anyhow::Result<Vec<Figure>> {
    let mut ws = server.remote.ws().await?;
    let t = Instant::now();
    let specs = (0..n)
        .map(|i| json!({"argv": ["cat"], "name": format!("bench-{i}")}))
        .collect();
    let ids = spawn_pipelined(&mut ws, specs).await?;
    let spawned = t.elapsed();
    for id in &ids {
        ws.send(json!({"type": "stop", "session": id})).await?;
    }
    let mut stopped = 0;
    while stopped < n {
        match ws.next().await {
            Incoming::Json(v) if v["type"] == "session" => stopped += 1,
            Incoming::Json(v) if v["type"] == "error" => bail!("stop failed: {v}"),
            Incoming::Closed(r) => bail!("closed: {r}"),
            _ => {}
        }
    }
    let total = t.elapsed();
    let paths: Vec<String> = ids.iter().map(|id| format!("/v1/sessions/{id}")).collect();
    for r in join_all(paths.iter().map(|p| server.remote.json("DELETE", p, None))).await {
        r?;
    }
    Ok(vec![Figure {
        name: format!("{n} spawns + graceful stops (cat) via one connection"),
        value: format!(
            "{:.3}s (spawn {:.3}s)",
            total.as_secs_f64(),
            spawned.as_secs_f64()
        ),
        goal: "≤ 0.3 s".into(),
        json: json!({"total_s": total.as_secs_f64(), "spawn_s": spawned.as_secs_f64()}),
    }])
}

/// 200 concurrent `corral spawn` processes (the CLI as scripts use it: one process, one
/// connection each), then 200 concurrent `corral stop`.
pub(super) async fn spawn_stop_cli(
    server: &Served,
    exe: &std::path::Path,
    n: usize,
) -> anyhow::Result<Vec<Figure>> {
    let cli = |args: Vec<String>| {
        let mut cmd = tokio::process::Command::new(exe);
        cmd.arg("--data-dir")
            .arg(server.dir())
            .args(args)
            .stdout(std::process::Stdio::null())
            .kill_on_drop(true);
        cmd
    };
    let t = Instant::now();
    let spawns = (0..n).map(|i| {
        let mut c = cli(vec![
            "spawn".into(),
            "--name".into(),
            format!("cli-{i}"),
            "--".into(),
            "cat".into(),
        ]);
        async move { c.status().await }
    });
    for st in join_all(spawns).await {
        if !st?.success() {
            bail!("corral spawn failed");
        }
    }
    let spawned = t.elapsed();
    let stops = (0..n).map(|i| {
        let mut c = cli(vec!["stop".into(), format!("cli-{i}")]);
        async move { c.status().await }
    });
    for st in join_all(stops).await {
        if !st?.success() {
            bail!("corral stop failed");
        }
    }
    let total = t.elapsed();
    let paths: Vec<String> = (0..n).map(|i| format!("/v1/sessions/cli-{i}")).collect();
    for r in join_all(paths.iter().map(|p| server.remote.json("DELETE", p, None))).await {
        r?;
    }
    Ok(vec![Figure {
        name: format!("{n} spawns + graceful stops (cat) via the CLI, concurrent"),
        value: format!(
            "{:.3}s (spawn {:.3}s)",
            total.as_secs_f64(),
            spawned.as_secs_f64()
        ),
        goal: "≤ 1 s".into(),
        json: json!({"total_s": total.as_secs_f64(), "spawn_s": spawned.as_secs_f64()}),
    }])
}

/// Seconds since the epoch of an event's serialized `time`.
pub(super) fn event_secs(e: &Value) -> f64 {
    corral_actors::time::from_json(&e["time"])
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Restart latency of a crashing child process without backoff: a session whose program exits 1
/// after 20 ms, policy `on_failure`, backoff 0; from each `exited` event to the next `spawned`
/// (both stamped by the server), `n` times.
pub(super) async fn restart(server: &Served, n: usize) -> anyhow::Result<Vec<Figure>> {
    let mut ws = server.remote.ws().await?;
    let spec = json!({"argv": ["sh", "-c", "sleep 0.02; exit 1"], "name": "crasher",
        "restart": "on_failure",
        "backoff": {"initial": {"secs": 0, "nanos": 0}, "max": {"secs": 0, "nanos": 0},
            "multiplier": 1.0, "jitter": 0.0, "reset_after": {"secs": 60, "nanos": 0}},
        "intensity": {"max_restarts": 100000, "period": {"secs": 1, "nanos": 0}}});
    let ids = spawn_pipelined(&mut ws, vec![spec]).await?;
    ws.call(json!({"type": "subscribe", "session": ids[0]}))
        .await?;
    let mut exited_at: Option<f64> = None;
    let mut lat: Vec<Duration> = Vec::with_capacity(n);
    while lat.len() < n {
        match tokio::time::timeout(Duration::from_secs(10), ws.next()).await {
            Ok(Incoming::Json(v)) if v["type"] == "event" => {
                let e = &v["event"];
                match e["kind"]["kind"].as_str() {
                    Some("exited") => exited_at = Some(event_secs(e)),
                    Some("spawned") => {
                        if let Some(t) = exited_at.take() {
                            lat.push(Duration::from_secs_f64((event_secs(e) - t).max(0.0)));
                        }
                    }
                    _ => {}
                }
            }
            Ok(Incoming::Closed(r)) => bail!("closed: {r}"),
            Ok(_) => {}
            Err(_) => bail!("no restart within 10 s"),
        }
    }
    server
        .remote
        .json("DELETE", &format!("/v1/sessions/{}", ids[0]), None)
        .await?;
    lat.sort();
    let (p50, p99, max) = (pct(&lat, 0.5), pct(&lat, 0.99), lat[lat.len() - 1]);
    Ok(vec![Figure {
        name: format!("restart of a crashing child, no backoff ({n} restarts): p50 / p99 / max"),
        value: format!("{p50:.1?} / {p99:.1?} / {max:.1?}"),
        goal: "≤ 10 ms".into(),
        json: json!({"p50_us": p50.as_micros(), "p99_us": p99.as_micros(), "max_us": max.as_micros()}),
    }])
}

/// RSS (KiB) and open fds of a process.
pub(super) fn rss_and_fds(pid: i32) -> (u64, usize) {
    let rss = corral_actors::process::procfs::status_kib(pid, "VmRSS").unwrap_or(0);
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0);
    (rss, fds)
}

/// Creates and removes `n` sessions in batches of 50 (each batch spawned pipelined on one
/// connection, then removed concurrently): server RSS and open fds must come back to within
/// 10 % of their level after a warm-up of the same batches.
pub(super) async fn soak(n: usize, workers: Option<usize>) -> anyhow::Result<Vec<Figure>> {
    const BATCH: usize = 50;
    let server = Served::start_with(tempfile::tempdir()?, workers).await?;
    let mut ws = server.remote.ws().await?;
    let mut cycle = async |count: usize| -> anyhow::Result<()> {
        for start in (0..count).step_by(BATCH) {
            let k = BATCH.min(count - start);
            let specs = (0..k)
                .map(|i| json!({"argv": ["cat"], "name": format!("soak-{}", start + i)}))
                .collect();
            let ids = spawn_pipelined(&mut ws, specs).await?;
            remove_all(&server, &ids).await?;
        }
        Ok(())
    };
    cycle(500).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (rss0, fds0) = rss_and_fds(server.pid());
    let t = Instant::now();
    cycle(n).await?;
    let took = t.elapsed();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (rss1, fds1) = rss_and_fds(server.pid());
    let rss_ratio = rss1 as f64 / rss0.max(1) as f64;
    let fd_ratio = fds1 as f64 / fds0.max(1) as f64;
    Ok(vec![Figure {
        name: format!("soak: create + remove {n} sessions (batches of {BATCH})"),
        value: format!(
            "RSS {rss0}→{rss1} KiB ({rss_ratio:.2}×), fds {fds0}→{fds1} ({fd_ratio:.2}×), {:.0} s",
            took.as_secs_f64()
        ),
        goal: "RSS and fds within 10 % of baseline".into(),
        json: json!({"rss_kib_before": rss0, "rss_kib_after": rss1, "fds_before": fds0,
            "fds_after": fds1, "secs": took.as_secs_f64(), "sessions": n}),
    }])
}

/// Memory and CPU of idle sessions in the real server (persistence on): `n` `cat` sessions
/// spawned on one connection in batches of 100 on a fresh server, then a settle; RSS growth per
/// session, then the server's CPU over 10 s while nothing happens; then one 2-byte output each
/// (a prompt: read path, Ring, scrollback log, screen nudge all touched) and RSS again.
pub(super) async fn idle(n: usize, workers: Option<usize>) -> anyhow::Result<Vec<Figure>> {
    const BATCH: usize = 100;
    let server = Served::start_with(tempfile::tempdir()?, workers).await?;
    let mut ws = server.remote.ws().await?;
    // Warm-up: the first sessions allocate the runtime's, the persister's and SQLite's caches.
    let warm = spawn_pipelined(
        &mut ws,
        (0..BATCH)
            .map(|i| json!({"argv": ["cat"], "name": format!("warm-{i}")}))
            .collect(),
    )
    .await?;
    remove_all(&server, &warm).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (rss0, fds0) = rss_and_fds(server.pid());
    let mut ids = Vec::with_capacity(n);
    for start in (0..n).step_by(BATCH) {
        let specs = (start..(start + BATCH).min(n))
            .map(|i| json!({"argv": ["cat"], "name": format!("idle-{i}")}))
            .collect();
        ids.extend(spawn_pipelined(&mut ws, specs).await?);
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (rss1, fds1) = rss_and_fds(server.pid());
    let cpu0 = server.cpu_seconds();
    let t = Instant::now();
    tokio::time::sleep(Duration::from_secs(10)).await;
    let cpu = (server.cpu_seconds() - cpu0) / t.elapsed().as_secs_f64() * 100.0;
    for id in &ids {
        ws.send(json!({"type": "input", "session": id, "data": "$ "}))
            .await?;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (rss2, _) = rss_and_fds(server.pid());
    remove_all(&server, &ids).await?;
    let per = |a: u64, b: u64| (b.saturating_sub(a)) as f64 * 1024.0 / n as f64 / 1000.0;
    Ok(vec![
        Figure {
            name: format!("server RSS per idle session ({n} `cat`, never printed)"),
            value: format!(
                "{:.1} KB, {:.1} fds",
                per(rss0, rss1),
                (fds1 as f64 - fds0 as f64) / n as f64
            ),
            goal: "≤ 32 KB".into(),
            json: json!({"kb_per_session": per(rss0, rss1), "rss_kib_before": rss0, "rss_kib_after": rss1, "fds_per_session": (fds1 as f64 - fds0 as f64) / n as f64}),
        },
        Figure {
            name: "  … after each echoed a 2-byte prompt".into(),
            value: format!("{:.1} KB", per(rss0, rss2)),
            goal: "≤ 32 KB".into(),
            json: json!({"kb_per_session": per(rss0, rss2), "rss_kib": rss2}),
        },
        Figure {
            name: format!("server CPU with {n} idle sessions, 10 s"),
            value: format!("{cpu:.2} % of a core"),
            goal: "≤ 0.5 %".into(),
            json: json!({"cpu_percent": cpu}),
        },
    ])
}

/// Removes sessions concurrently over REST.
pub(super) async fn remove_all(server: &Served, ids: &[String]) -> anyhow::Result<()> {
    let paths: Vec<String> = ids.iter().map(|id| format!("/v1/sessions/{id}")).collect();
    for r in join_all(paths.iter().map(|p| server.remote.json("DELETE", p, None))).await {
        r?;
    }
    Ok(())
}

/// Boot reconciliation after a crash: `n` sessions (half `always`, half `never`; one in ten in
/// pipe mode, whose processes outlive the server because no terminal hangs up on them) recorded
/// running, the server SIGKILLed, then started again on the same data dir. Measured: the
/// reconciliation itself (the server's own report: orphans terminated, sessions restored, the
/// `always` ones running again) and the wall time from exec to serving.
pub(super) async fn recovery(n: usize, workers: Option<usize>) -> anyhow::Result<Vec<Figure>> {
    let server = Served::start_with(tempfile::tempdir()?, workers).await?;
    let mut ws = server.remote.ws().await?;
    let specs = (0..n)
        .map(|i| {
            let restart = if i % 2 == 0 { "always" } else { "never" };
            let mode = if i % 10 == 0 { "pipe" } else { "pty" };
            json!({"argv": ["sleep", "100000"], "name": format!("rec-{i}"), "restart": restart,
                "mode": mode, "grace": {"secs": 1, "nanos": 0}})
        })
        .collect();
    spawn_pipelined(&mut ws, specs).await?;
    drop(ws);
    let dir = server.crash()?;
    let t = Instant::now();
    let server = Served::start_with(dir, workers).await?;
    let serving = t.elapsed();
    let report = server.remote.json("GET", "/v1/recovery", None).await?;
    let took = report["took"].as_f64().unwrap_or(0.0);
    let list = server.remote.json("GET", "/v1/sessions", None).await?;
    let running = list
        .as_array()
        .map(|l| l.iter().filter(|s| s["state"] == "running").count())
        .unwrap_or(0);
    Ok(vec![Figure {
        name: format!("reconciliation of {n} sessions after SIGKILL"),
        value: format!(
            "{took:.3}s ({} reattached, {} orphans, {running} running; serving after {:.3}s)",
            report["reattached"],
            report["orphans_terminated"],
            serving.as_secs_f64()
        ),
        goal: "≤ 0.3 s".into(),
        json: json!({"reconcile_s": took, "serving_s": serving.as_secs_f64(),
            "report": report, "running": running}),
    }])
}
