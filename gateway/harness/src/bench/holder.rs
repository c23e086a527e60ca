//! Holder: what a session's holder process costs (issue 17's goals), side by side in one run
//! with a server that holds its terminals itself (`holders = false`): throughput to one viewer,
//! keystroke echo, spawn latency, the holders' private memory and their CPU while idle, and what
//! a shared ring keeps resident once its output is logged.

use std::time::{Duration, Instant};

use corral_actors::process::procfs;
use serde_json::json;

use super::throughput::{median, session_throughput};
use crate::JsonCalls;
use crate::figure::Figure;
use crate::served::Served;

/// Pairs of throughput runs (with, without).
const ROUNDS: usize = 5;
/// Echo rounds per server, after one warm-up round each.
const ECHO_ROUNDS: usize = 3;
/// Spawns timed per server.
const SPAWNS: usize = 60;
/// Idle sessions whose holders are measured.
const IDLE: usize = 20;

pub(super) async fn holder(bytes: u64, workers: Option<usize>) -> anyhow::Result<Vec<Figure>> {
    let with = Served::start_with(tempfile::tempdir()?, workers).await?;
    let without =
        Served::start_configured(tempfile::tempdir()?, workers, "holders = false\n").await?;
    let mut out = Vec::new();

    // Throughput: with, without, alternating; the ratio of each pair.
    let script = format!("stty raw -echo; head -c1 >/dev/null; head -c {bytes} /dev/zero");
    let mbps = |b: u64, d: Duration| b as f64 / d.as_secs_f64() / 1e6;
    let (mut ratios, mut rates_with, mut rates_without) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        let (d1, got1, _) = session_throughput(&with, &script, false).await?;
        let (d2, got2, _) = session_throughput(&without, &script, false).await?;
        let (a, b) = (mbps(got1, d1), mbps(got2, d2));
        rates_with.push(a);
        rates_without.push(b);
        ratios.push(a / b);
    }
    let ratio = median(&ratios);
    out.push(Figure {
        name: "throughput to one viewer, with holders / without".into(),
        value: format!(
            "{ratio:.2}× ({:.0} vs {:.0} MB/s)",
            median(&rates_with),
            median(&rates_without)
        ),
        goal: "≥ 0.95×".into(),
        json: json!({"ratio": ratio, "ratios": ratios, "with_mbps": rates_with,
            "without_mbps": rates_without}),
    });

    // Keystroke echo through each (the blocking client's figure; baselines are in `echo`): a
    // warm-up round on each, not counted (the first round on a server came out 10–60 µs slower
    // than its next ones, and it was always the holders' server that went first), then
    // ECHO_ROUNDS alternating rounds; the median of the rounds' p50s and of their p99s.
    let mut rounds: [Vec<(f64, f64)>; 2] = [Vec::new(), Vec::new()];
    for round in 0..=ECHO_ROUNDS {
        for (i, server) in [&with, &without].into_iter().enumerate() {
            let Some(f) = super::echo::echo(server).await?.into_iter().next() else {
                anyhow::bail!("the echo scenario gave no figure");
            };
            let us = |k: &str| f.json[k].as_f64().unwrap_or(f64::NAN);
            if round > 0 {
                rounds[i].push((us("p50_us"), us("p99_us")));
            }
        }
    }
    for (label, r) in ["with holders", "without"].into_iter().zip(&rounds) {
        let p50: Vec<f64> = r.iter().map(|x| x.0).collect();
        let p99: Vec<f64> = r.iter().map(|x| x.1).collect();
        out.push(Figure {
            name: format!("echo, {label}: p50 / p99 (median of {ECHO_ROUNDS} rounds)"),
            value: format!("{:.0}µs / {:.0}µs", median(&p50), median(&p99)),
            goal: "with ≈ without".into(),
            json: json!({"p50_us": median(&p50), "p99_us": median(&p99), "rounds_p50_us": p50,
                "rounds_p99_us": p99}),
        });
    }

    // Spawn latency: one request at a time, alternating servers.
    let (mut t_with, mut t_without) = (Vec::new(), Vec::new());
    let mut ws_with = with.remote.ws().await?;
    let mut ws_without = without.remote.ws().await?;
    let mut ids: Vec<(bool, String)> = Vec::new();
    for i in 0..SPAWNS {
        for (holders, ws, times) in [
            (true, &mut ws_with, &mut t_with),
            (false, &mut ws_without, &mut t_without),
        ] {
            let t = Instant::now();
            let r = ws
                .call(
                    json!({"type": "spawn", "spec": {"argv": ["cat"], "name": format!("sp-{i}")}}),
                )
                .await?;
            times.push(t.elapsed().as_secs_f64() * 1e3);
            let id = r["session"]["id"].as_str().unwrap_or_default().to_string();
            if id.is_empty() {
                anyhow::bail!("spawn failed: {r}");
            }
            ids.push((holders, id));
        }
    }
    let (p_with, p_without) = (median(&t_with), median(&t_without));
    out.push(Figure {
        name: format!("spawn latency (cat, one at a time, {SPAWNS} each): with / without"),
        value: format!(
            "{p_with:.2} / {p_without:.2} ms (+{:.2} ms)",
            p_with - p_without
        ),
        goal: "+ ≤ 1 ms".into(),
        json: json!({"with_ms": t_with, "without_ms": t_without, "p50_with_ms": p_with,
            "p50_without_ms": p_without}),
    });
    for (holders, id) in &ids {
        let server = if *holders { &with } else { &without };
        server
            .remote
            .json("DELETE", &format!("/v1/sessions/{id}"), None)
            .await?;
    }

    // Memory and idle CPU of the holders of IDLE idle sessions.
    let mut holders = Vec::new();
    for i in 0..IDLE {
        let r = ws_with
            .call(json!({"type": "spawn", "spec": {"argv": ["cat"], "name": format!("idle-{i}")}}))
            .await?;
        let pid = r["session"]["pid"].as_i64().unwrap_or(0) as i32;
        holders.push(parent(pid)?);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let private: Vec<f64> = holders
        .iter()
        .map(|h| private_kib(*h))
        .collect::<anyhow::Result<_>>()?;
    let cpu0: u64 = holders
        .iter()
        .map(|h| cpu_ticks(*h))
        .sum::<anyhow::Result<u64>>()?;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let cpu1: u64 = holders
        .iter()
        .map(|h| cpu_ticks(*h))
        .sum::<anyhow::Result<u64>>()?;
    let kib = median(&private);
    out.push(Figure {
        name: "holder private memory (Private_Clean + Private_Dirty)".into(),
        value: format!("{kib:.0} KiB (median of {IDLE})"),
        goal: "≤ 512 KiB".into(),
        json: json!({"private_kib": private}),
    });
    out.push(Figure {
        name: format!("CPU of {IDLE} idle holders over 5 s"),
        value: format!("{} ticks", cpu1 - cpu0),
        goal: "0".into(),
        json: json!({"ticks": cpu1 - cpu0}),
    });

    // The shared ring of a session that printed more than the ring holds, once idle: logged
    // output's pages are handed back (without that, the whole ring stays resident).
    let r = ws_with
        .call(json!({"type": "spawn", "spec": {"name": "printed",
            "argv": ["sh", "-c", "head -c 20000000 /dev/zero; exec sleep 1000"]}}))
        .await?;
    let holder = parent(r["session"]["pid"].as_i64().unwrap_or(0) as i32)?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let shmem = ring_kib(holder)?;
    out.push(Figure {
        name: "a holder's shared ring, idle after 20 MB of output (its memfd's pages)".into(),
        value: format!("{shmem} KiB (ring: 8 MiB)"),
        goal: "≤ 1 MiB + a page (the largest log record)".into(),
        json: json!({"ring_kib": shmem}),
    });
    Ok(out)
}

/// The memory a holder's shared ring holds (the pages allocated to its memfd, whoever touched
/// them), in KiB: a holder whose server reads the terminal itself never touches the ring's
/// pages, so its `RssShmem` says nothing about them.
fn ring_kib(holder: i32) -> anyhow::Result<u64> {
    use std::os::unix::fs::MetadataExt;
    for fd in std::fs::read_dir(format!("/proc/{holder}/fd"))? {
        let path = fd?.path();
        let target = std::fs::read_link(&path).unwrap_or_default();
        if target.to_string_lossy().contains("memfd:corral-ring") {
            return Ok(std::fs::metadata(&path)?.blocks() * 512 / 1024);
        }
    }
    anyhow::bail!("holder {holder} has no ring")
}

fn parent(pid: i32) -> anyhow::Result<i32> {
    Ok(procfs::read_stat(pid)?.ppid)
}

fn private_kib(pid: i32) -> anyhow::Result<f64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))?;
    Ok(text
        .lines()
        .filter(|l| l.starts_with("Private_Clean:") || l.starts_with("Private_Dirty:"))
        .filter_map(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        .sum())
}

fn cpu_ticks(pid: i32) -> anyhow::Result<u64> {
    Ok(procfs::read_stat(pid)?.cpu_ticks)
}
