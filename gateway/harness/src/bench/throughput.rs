//! Throughput: one viewer reading a flood (native and ttyd), paired run by run with a plain read
//! loop of the same PTY output, and pipe mode.

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use portable_pty::{CommandBuilder, PtySize, native_pty_system};
use serde_json::json;

use corral_client::Incoming;

use crate::JsonCalls;
use crate::figure::Figure;
use crate::served::Served;

/// Output throughput to one native and one ttyd client vs. a plain PTY read loop: three rounds,
/// alternating, medians reported (single runs vary ±15 % on this VM). Also the CPU the server
/// and the client (this process) spent per GB delivered, which is what decides the ratio on a
/// machine where the workload, the server and the client share two cores.
pub(super) async fn throughput(server: &Served, bytes: u64) -> anyhow::Result<Vec<Figure>> {
    const ROUNDS: usize = 5;
    let script = format!("stty raw -echo; head -c1 >/dev/null; head -c {bytes} /dev/zero");
    let mbps = |b: u64, d: Duration| b as f64 / d.as_secs_f64() / 1e6;
    let mut base = Vec::new();
    let mut plain_cpu = Vec::new();
    let mut plain_read = Vec::new();
    let mut runs: [Vec<Run>; 2] = [Vec::new(), Vec::new()];
    // Plain, corral, corral, plain, ...: every corral run sits between two plain runs, and its
    // ratio is to their mean (the machine's speed drifts between runs; pairing cancels it).
    for round in 0..=ROUNDS {
        let script2 = script.clone();
        let plain = tokio::task::spawn_blocking(move || plain_read_loop(&script2, None)).await??;
        base.push(mbps(bytes, plain.elapsed));
        plain_cpu.push(plain.reader_cpu_per_gb);
        plain_read.push(plain.bytes_per_read as f64);
        if round == ROUNDS {
            break;
        }
        for (i, ttyd) in [false, true].into_iter().enumerate() {
            let server_cpu0 = server.cpu_seconds();
            let client_cpu0 = own_cpu_seconds();
            let reads0 = server.reads();
            let (d, got, lagged) = session_throughput(server, &script, ttyd).await?;
            let reads1 = server.reads();
            runs[i].push(Run {
                bytes_per_read: (reads1.1 - reads0.1) as f64 / (reads1.0 - reads0.0).max(1) as f64,
                rate: mbps(got, d),
                lagged,
                server_cpu_per_gb: (server.cpu_seconds() - server_cpu0) / (got as f64 / 1e9),
                client_cpu_per_gb: (own_cpu_seconds() - client_cpu0) / (got as f64 / 1e9),
            });
        }
    }
    let ratios = |runs: &[Run]| -> Vec<f64> {
        runs.iter()
            .enumerate()
            .map(|(r, run)| run.rate / ((base[r] + base[r + 1]) / 2.0))
            .collect()
    };
    let paired = [ratios(&runs[0]), ratios(&runs[1])];
    let base_rate = median(&base);
    let mut out = vec![Figure {
        name: format!(
            "plain PTY read loop, {} MB (baseline, median of {})",
            bytes / 1_000_000,
            ROUNDS + 1
        ),
        value: format!("{base_rate:.0} MB/s"),
        goal: "-".into(),
        json: json!({"mb_per_s": base_rate, "runs": base}),
    }];
    let (plain_cpu, plain_read) = (median(&plain_cpu), median(&plain_read));
    out.push(Figure {
        name: "  plain loop: reader CPU per GB; bytes per read".into(),
        value: format!("{plain_cpu:.2} s; {plain_read:.0} B"),
        goal: "-".into(),
        json: json!({"reader_cpu_s_per_gb": plain_cpu, "bytes_per_read": plain_read}),
    });
    for ((label, runs), ratios) in ["native client", "ttyd client"]
        .into_iter()
        .zip(runs)
        .zip(paired)
    {
        let rates: Vec<f64> = runs.iter().map(|r| r.rate).collect();
        let rate = median(&rates);
        let ratio = median(&ratios);
        let lagged: u64 = runs.iter().map(|r| r.lagged).max().unwrap_or(0);
        let server_cpu = median(&runs.iter().map(|r| r.server_cpu_per_gb).collect::<Vec<_>>());
        let client_cpu = median(&runs.iter().map(|r| r.client_cpu_per_gb).collect::<Vec<_>>());
        let per_read = median(&runs.iter().map(|r| r.bytes_per_read).collect::<Vec<_>>());
        out.push(Figure {
            name: format!("output to one {label} (medians: rate, paired ratio; max lagged bytes)"),
            value: format!("{rate:.0} MB/s, {ratio:.2}× ({lagged} lost)"),
            goal: "≥ 0.9× the plain loop".into(),
            json: json!({"mb_per_s": rate, "ratio": ratio, "lagged_bytes": lagged, "runs_mb_per_s": rates, "runs_ratio": ratios}),
        });
        out.push(Figure {
            name: format!("  {label}: CPU per GB server / client; server bytes per read"),
            value: format!("{server_cpu:.2} s / {client_cpu:.2} s; {per_read:.0} B"),
            goal: "-".into(),
            json: json!({"server_cpu_s_per_gb": server_cpu, "client_cpu_s_per_gb": client_cpu, "server_bytes_per_read": per_read}),
        });
    }
    Ok(out)
}

/// One throughput run.
pub(super) struct Run {
    /// The server's bytes per read syscall (all fds; the PTY dominates).
    bytes_per_read: f64,
    rate: f64,
    lagged: u64,
    server_cpu_per_gb: f64,
    client_cpu_per_gb: f64,
}

/// The middle value (the upper one of an even count); 0 for none. Leaves `v` in run order.
pub(super) fn median(v: &[f64]) -> f64 {
    let mut sorted = v.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted.get(sorted.len() / 2).copied().unwrap_or(0.0)
}

/// User + system CPU seconds of this process so far.
pub(super) fn own_cpu_seconds() -> f64 {
    rusage_seconds(libc::RUSAGE_SELF)
}

/// User + system CPU seconds of the calling thread so far.
pub(super) fn thread_cpu_seconds() -> f64 {
    rusage_seconds(libc::RUSAGE_THREAD)
}

/// User + system CPU seconds from `getrusage(who)`; 0 if it fails.
pub(super) fn rusage_seconds(who: libc::c_int) -> f64 {
    // SAFETY: getrusage fills the struct it is given.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(who, &mut u) } != 0 {
        return 0.0;
    }
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(u.ru_utime) + secs(u.ru_stime)
}

/// Reads the PTY output of `script` (after sending it one go keystroke) until EOF, or until
/// `limit` bytes came (the program is then killed).
pub(super) fn plain_read_loop(script: &str, limit: Option<u64>) -> anyhow::Result<PlainRun> {
    let pair = native_pty_system().openpty(PtySize {
        rows: 24,
        cols: 80,
        pixel_width: 0,
        pixel_height: 0,
    })?;
    let mut cmd = CommandBuilder::new("sh");
    cmd.args(["-c", script]);
    let mut child = pair.slave.spawn_command(cmd)?;
    drop(pair.slave);
    let mut reader = pair.master.try_clone_reader()?;
    let mut writer = pair.master.take_writer()?;
    // A blocking-pool thread (spawn_blocking), not a runtime worker: sleeping here is fine.
    std::thread::sleep(Duration::from_millis(300)); // stty first
    let mut buf = vec![0u8; 64 * 1024];
    let cpu0 = thread_cpu_seconds();
    let t = Instant::now();
    writer.write_all(b"g")?;
    let (mut reads, mut total) = (0u64, 0u64);
    loop {
        match reader.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                reads += 1;
                total += n as u64;
                if limit.is_some_and(|l| total >= l) {
                    break;
                }
            }
        }
    }
    let d = t.elapsed();
    let cpu = thread_cpu_seconds() - cpu0;
    if limit.is_some() {
        child.kill()?;
    }
    child.wait()?;
    Ok(PlainRun {
        elapsed: d,
        reader_cpu_per_gb: cpu / (total.max(1) as f64 / 1e9),
        bytes_per_read: total / reads.max(1),
    })
}

/// One plain read loop run.
pub(super) struct PlainRun {
    pub(super) elapsed: Duration,
    /// CPU seconds of the reading thread per GB read.
    reader_cpu_per_gb: f64,
    /// Average bytes a read returned.
    bytes_per_read: u64,
}

/// How the server's ttyd lag note starts (see client.rs `ttyd_outgoing`), command byte included.
const TTYD_LAG_NOTE: &[u8] = b"0\r\n\x1b[7m[corral: ";

/// The bytes a ttyd output frame from corral says were lost, if it is corral's lag note (a frame
/// of its own, whose number is the bytes skipped).
pub(super) fn ttyd_lagged(frame: &[u8]) -> Option<u64> {
    let rest = frame.strip_prefix(TTYD_LAG_NOTE)?;
    Some(
        rest.split(|c| *c == b' ')
            .next()
            .and_then(|n| std::str::from_utf8(n).ok()?.parse::<u64>().ok())
            .unwrap_or(0),
    )
}

/// A session running `script` (a flood waiting for its go keystroke) with an 8 MiB Ring; its id,
/// once the script's `stty` has run.
pub(super) async fn flood_session(server: &Served, script: &str) -> anyhow::Result<String> {
    let info = server
        .remote
        .json(
            "POST",
            "/v1/sessions",
            Some(&json!({"argv": ["sh", "-c", script], "ring_capacity": 8 << 20})),
        )
        .await?;
    let id = info["id"].as_str().unwrap_or_default().to_string();
    tokio::time::sleep(Duration::from_millis(300)).await; // stty first
    Ok(id)
}

/// Pipe-mode output (how stream-json agents run): `seq 1 N` on a pipe through the NDJSON
/// splitter into the Ring, from spawn until the session has stopped, vs. a plain read loop of the
/// same `seq` on a pipe in the same run; 3 alternating rounds, medians.
pub(super) async fn pipe_output(server: &Served, lines: u64) -> anyhow::Result<Vec<Figure>> {
    let r = &server.remote;
    let (mut plain, mut corral) = (Vec::new(), Vec::new());
    let mut bytes = 0;
    for round in 0..3 {
        plain.push(tokio::task::spawn_blocking(move || plain_pipe_loop(lines)).await??);
        let t = Instant::now();
        let info = r
            .json(
                "POST",
                "/v1/sessions",
                Some(&json!({
                    "argv": ["seq", "1", lines.to_string()],
                    "mode": "pipe",
                    "name": format!("bench-pipe-{round}"),
                })),
            )
            .await?;
        let id = info["id"].as_str().unwrap_or_default().to_string();
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let info = r.json("GET", &format!("/v1/sessions/{id}"), None).await?;
            if info["state"] == "stopped" {
                bytes = info["output_offset"].as_u64().unwrap_or(0);
                break;
            }
            if Instant::now() > deadline {
                bail!("pipe session {id} did not finish in 120 s: {info}");
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        corral.push(t.elapsed().as_secs_f64());
        r.json("DELETE", &format!("/v1/sessions/{id}"), None)
            .await?;
    }
    let (p, c) = (median(&plain), median(&corral));
    let mbps = |secs: f64| bytes as f64 / secs / 1e6;
    Ok(vec![Figure {
        name: format!("pipe mode: seq 1 {lines} into the Ring vs a plain pipe read loop"),
        value: format!("{:.0} vs {:.0} MB/s = {:.2}×", mbps(c), mbps(p), p / c),
        goal: "- (no goal; spawn to stopped)".into(),
        json: json!({"lines": lines, "bytes": bytes, "corral_secs": c, "plain_secs": p}),
    }])
}

/// The pipe baseline: `seq 1 N` with its stdout on a pipe, read to EOF in 64 KiB reads.
pub(super) fn plain_pipe_loop(lines: u64) -> anyhow::Result<f64> {
    let t = Instant::now();
    let mut child = std::process::Command::new("seq")
        .args(["1", &lines.to_string()])
        .stdout(std::process::Stdio::piped())
        .spawn()?;
    let mut out = child.stdout.take().context("seq has no stdout")?;
    let mut buf = vec![0u8; 64 * 1024];
    while out.read(&mut buf)? > 0 {}
    child.wait()?;
    Ok(t.elapsed().as_secs_f64())
}

/// (time from go to end, bytes received, bytes reported lagged).
pub(super) async fn session_throughput(
    server: &Served,
    script: &str,
    ttyd: bool,
) -> anyhow::Result<(Duration, u64, u64)> {
    use futures::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let r = &server.remote;
    let id = flood_session(server, script).await?;
    let mut ctl = r.ws().await?;
    let result = if ttyd {
        let mut ws = r
            .socket(
                &format!("/ttyd/{id}/ws"),
                None,
                &[("sec-websocket-protocol", "tty")],
            )
            .await?;
        ws.send(Message::Text(
            json!({"AuthToken": r.token, "columns": 80, "rows": 24})
                .to_string()
                .into(),
        ))
        .await?;
        // title, preferences, snapshot
        for _ in 0..3 {
            ws.next().await;
        }
        ctl.send(json!({"type": "input", "session": id, "data": "g"}))
            .await?;
        let t = Instant::now();
        let (mut got, mut lagged) = (0u64, 0u64);
        while let Some(Ok(m)) = ws.next().await {
            match m {
                Message::Binary(b) if b.first() == Some(&b'0') => match ttyd_lagged(&b) {
                    Some(n) => lagged += n,
                    None => got += b.len() as u64 - 1,
                },
                Message::Close(_) => break,
                _ => {}
            }
        }
        (t.elapsed(), got, lagged)
    } else {
        let mut ws = r.ws().await?;
        let sub = ws
            .call(json!({"type": "subscribe", "session": id, "from": 0}))
            .await?;
        let channel = sub["channel"].as_u64().unwrap_or(0) as u32;
        ctl.send(json!({"type": "input", "session": id, "data": "g"}))
            .await?;
        let t = Instant::now();
        let (mut got, mut lagged) = (0u64, 0u64);
        loop {
            match ws.next().await {
                Incoming::Bin(1, ch, _, b) if ch == channel => got += b.len() as u64,
                Incoming::Json(v) if v["type"] == "lagged" => {
                    lagged += v["to"].as_u64().unwrap_or(0) - v["from"].as_u64().unwrap_or(0)
                }
                Incoming::Json(v)
                    if v["type"] == "event" && v["event"]["kind"]["kind"] == "exited" =>
                {
                    break;
                }
                Incoming::Closed(r) => bail!("closed: {r}"),
                _ => {}
            }
        }
        (t.elapsed(), got, lagged)
    };
    r.json("DELETE", &format!("/v1/sessions/{id}"), None)
        .await?;
    Ok(result)
}
