//! `corral bench`: the gateway's speed goals measured the same way every time. It starts a real
//! `corral serve` (this binary) on 127.0.0.1 in a temp data dir and drives it with real
//! WebSocket clients and real processes; baselines (a plain PTY read loop, a bare PTY echo) run
//! in the same run so ratios compare like with like. Prints a table; `--json FILE` writes it.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures::future::join_all;
use futures::{SinkExt, StreamExt};
use portable_pty::{CommandBuilder, PtySize, native_pty_system};
use serde_json::{Value, json};

use corral_client::{Conn, Incoming};

use crate::JsonCalls;
use crate::figure::Figure;
use crate::served::Served;

/// Runs the selected scenarios (all when empty).
pub async fn run(
    only: Vec<String>,
    json_out: Option<PathBuf>,
    bytes: u64,
    workers: Option<usize>,
) -> anyhow::Result<()> {
    let want = |s: &str| only.is_empty() || only.iter().any(|o| o == s);
    let server = Served::start_with(tempfile::tempdir()?, workers).await?;
    let mut figures = Vec::new();
    if want("echo") {
        figures.extend(echo(&server).await?);
    }
    if want("throughput") {
        figures.extend(throughput(&server, bytes).await?);
    }
    if want("pipe") {
        figures.extend(pipe_output(&server, 20_000_000).await?);
    }
    if want("spawn") || want("spawn-ws") {
        figures.extend(spawn_stop(&server, 200).await?);
    }
    if want("spawn") || want("spawn-cli") {
        figures.extend(spawn_stop_cli(&server, 200).await?);
    }
    if want("spawn") || want("spawn-seq") {
        figures.extend(crate::sequential::spawn_stop_sequential(&server, 200, 3).await?);
    }
    if want("fanout") {
        figures.extend(fanout(&server).await?);
    }
    if want("restart") {
        figures.extend(restart(&server, 100).await?);
    }
    drop(server);
    if want("idle") {
        figures.extend(idle(1000, workers).await?);
    }
    if want("recovery") {
        figures.extend(recovery(200, workers).await?);
    }
    // Long (about a minute per thousand sessions): only when asked for by name.
    if only.iter().any(|o| o == "soak") {
        figures.extend(soak(10_000, workers).await?);
    }
    let machine = crate::machine::Machine::probe();
    println!("{}", machine.line());
    println!("{:<58} {:>28}   goal", "figure", "result");
    for f in &figures {
        println!("{:<58} {:>28}   {}", f.name, f.value, f.goal);
    }
    if let Some(path) = json_out {
        let all: Vec<Value> = figures
            .iter()
            .map(|f| json!({"name": f.name, "value": f.json, "goal": f.goal}))
            .collect();
        let report = json!({"machine": machine.json(), "figures": all});
        std::fs::write(&path, serde_json::to_vec_pretty(&report)?)?;
    }
    Ok(())
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)]
}

/// Keystroke echo through the WebSocket to `cat` and back, vs. a bare PTY echo.
async fn echo(server: &Served) -> anyhow::Result<Vec<Figure>> {
    const N: usize = 3000;
    let r = &server.remote;
    let info = r
        .json("POST", "/v1/sessions", Some(&json!({"argv": ["sh", "-c", "stty raw -echo; printf R; exec cat"], "name": "bench-echo"})))
        .await?;
    let id = info["id"].as_str().unwrap_or_default().to_string();
    let mut ws = r.ws().await?;
    let sub = ws
        .call(json!({"type": "subscribe", "session": id, "from": 0}))
        .await?;
    let channel = sub["channel"].as_u64().unwrap_or(0) as u32;
    // Wait for the ready marker (stty done).
    loop {
        if let Incoming::Bin(1, ch, _, b) = ws.next().await
            && ch == channel
            && b.contains(&b'R')
        {
            break;
        }
    }
    let mut lat = Vec::with_capacity(N);
    for i in 0..N {
        let byte = b'a' + (i % 26) as u8;
        let frame = keystroke(channel, byte);
        let t = Instant::now();
        ws.send_binary(frame).await?;
        loop {
            match ws.next().await {
                Incoming::Bin(1, ch, _, b) if ch == channel && b.contains(&byte) => break,
                Incoming::Json(v) if v["type"] == "error" => bail!("server refused input: {v}"),
                Incoming::Closed(r) => bail!("closed: {r}"),
                _ => {}
            }
        }
        lat.push(t.elapsed());
    }
    drop(ws);
    lat.sort();
    // The same keystrokes from a blocking client (a thread that sleeps in read(2), like the bare
    // PTY baseline): what is left is the server's share plus the kernel's.
    let (addr, token, session) = (r.endpoint.host().to_string(), r.token.clone(), id.clone());
    let blocking =
        tokio::task::spawn_blocking(move || blocking_echo(&addr, &token, &session, N)).await??;
    r.json("DELETE", &format!("/v1/sessions/{id}"), None)
        .await?;
    let bare = tokio::task::spawn_blocking(move || bare_pty_echo(N)).await??;
    let ws_floor = ws_loopback_echo(N).await?;
    Ok(vec![
        latencies(
            "echo via WebSocket → cat → back, blocking client",
            "p50 ≤ 35 µs, p99 ≤ 160 µs",
            &blocking,
        ),
        latencies("  the same from an async (tokio) client", "-", &lat),
        latencies("echo on a bare PTY (baseline, same run)", "-", &bare),
        latencies(
            "WebSocket echo on loopback, no PTY (baseline)",
            "-",
            &ws_floor,
        ),
    ])
}

/// One keystroke as a native input frame.
fn keystroke(channel: u32, byte: u8) -> Vec<u8> {
    corral_server::protocol::encode_binary(
        corral_server::protocol::Header {
            kind: corral_server::protocol::kind::INPUT,
            channel,
            offset: 0,
        },
        &[byte],
    )
}

/// A figure of sorted latencies: p50 / p99 / max.
fn latencies(what: &str, goal: &str, sorted: &[Duration]) -> Figure {
    let (p50, p99) = (pct(sorted, 0.5), pct(sorted, 0.99));
    let max = sorted.last().copied().unwrap_or_default();
    Figure {
        name: format!("{what}: p50 / p99 / max"),
        value: format!("{p50:.0?} / {p99:.0?} / {max:.0?}"),
        goal: goal.into(),
        json: json!({"p50_us": p50.as_micros(), "p99_us": p99.as_micros(), "max_us": max.as_micros()}),
    }
}

/// The network half of the echo floor: a bare tokio-tungstenite echo server on its own one-worker
/// runtime (its own threads, as a server process would have), one byte per binary message, with
/// the same blocking client and TCP_NODELAY on both ends. Corral's echo can't beat this plus the
/// bare PTY echo.
async fn ws_loopback_echo(n: usize) -> anyhow::Result<Vec<Duration>> {
    use tokio_tungstenite::tungstenite::Message as WsMessage;
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    listener.set_nonblocking(true)?;
    let addr = listener.local_addr()?;
    let server = std::thread::spawn(move || -> anyhow::Result<()> {
        // One worker, like `corral serve` on this machine by default.
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()?;
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener)?;
            let (tcp, _) = listener.accept().await?;
            tcp.set_nodelay(true)?;
            let mut ws = tokio_tungstenite::accept_async(tcp).await?;
            while let Some(msg) = ws.next().await {
                match msg? {
                    WsMessage::Binary(b) => ws.send(WsMessage::Binary(b)).await?,
                    WsMessage::Close(_) => break,
                    _ => {}
                }
            }
            anyhow::Ok(())
        })
    });
    // The client blocks in read(2), as in the corral measurement.
    let client = tokio::task::spawn_blocking(move || -> anyhow::Result<Vec<Duration>> {
        let tcp = std::net::TcpStream::connect(addr)?;
        tcp.set_nodelay(true)?;
        let (mut ws, _) = tokio_tungstenite::tungstenite::client(format!("ws://{addr}/"), tcp)
            .map_err(|e| anyhow::anyhow!("loopback echo client: {e}"))?;
        let mut lat = Vec::with_capacity(n);
        for i in 0..n {
            let byte = b'a' + (i % 26) as u8;
            let t = Instant::now();
            ws.send(WsMessage::Binary(vec![byte].into()))?;
            loop {
                match ws.read()? {
                    WsMessage::Binary(b) if b.contains(&byte) => break,
                    WsMessage::Close(_) => bail!("loopback echo server closed"),
                    _ => {}
                }
            }
            lat.push(t.elapsed());
        }
        ws.close(None)?;
        // Until the server has seen the close (it then ends its loop).
        while ws.read().is_ok() {}
        lat.sort();
        Ok(lat)
    });
    let lat = client.await??;
    match tokio::task::spawn_blocking(move || server.join()).await? {
        Ok(r) => r?,
        Err(_) => bail!("loopback echo server panicked"),
    }
    Ok(lat)
}

/// Keystroke echo from a blocking native-protocol client: subscribe to `session` (a `cat` in raw
/// mode), then `n` times send one byte and read until it comes back.
fn blocking_echo(
    addr: &str,
    token: &str,
    session: &str,
    n: usize,
) -> anyhow::Result<Vec<Duration>> {
    use tokio_tungstenite::tungstenite::Message as WsMessage;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let tcp = std::net::TcpStream::connect(addr)?;
    tcp.set_nodelay(true)?;
    let mut req = format!("ws://{addr}/v1/ws").into_client_request()?;
    req.headers_mut()
        .insert("authorization", format!("Bearer {token}").parse()?);
    let (mut ws, _) = tokio_tungstenite::tungstenite::client(req, tcp)
        .map_err(|e| anyhow::anyhow!("blocking echo client: {e}"))?;
    let subscribe = json!({"type": "subscribe", "id": 1, "session": session});
    ws.send(WsMessage::Text(subscribe.to_string().into()))?;
    let channel = loop {
        if let WsMessage::Text(t) = ws.read()? {
            let v: Value = serde_json::from_str(&t)?;
            if v["id"] == 1 {
                match v["channel"].as_u64() {
                    Some(c) => break c as u32,
                    None => bail!("subscribe refused: {v}"),
                }
            }
        }
    };
    let mut lat = Vec::with_capacity(n);
    for i in 0..n {
        let byte = b'A' + (i % 26) as u8;
        let frame = keystroke(channel, byte);
        let t = Instant::now();
        ws.send(WsMessage::Binary(frame.into()))?;
        loop {
            match ws.read()? {
                WsMessage::Binary(b) => {
                    if let Some((h, payload)) = corral_server::protocol::decode_binary(&b)
                        && h.channel == channel
                        && payload.contains(&byte)
                    {
                        break;
                    }
                }
                WsMessage::Text(t) if t.contains("\"error\"") => bail!("server refused input: {t}"),
                WsMessage::Close(c) => bail!("closed: {c:?}"),
                _ => {}
            }
        }
        lat.push(t.elapsed());
    }
    if let Err(e) = ws.close(None) {
        tracing::debug!(error = %e, "blocking echo client: close");
    }
    lat.sort();
    Ok(lat)
}

/// The baseline: the same `cat` in a PTY, one byte written and read back with blocking I/O.
fn bare_pty_echo(n: usize) -> anyhow::Result<Vec<Duration>> {
    let pair = native_pty_system().openpty(PtySize {
        rows: 24,
        cols: 80,
        pixel_width: 0,
        pixel_height: 0,
    })?;
    let mut cmd = CommandBuilder::new("sh");
    cmd.args(["-c", "stty raw -echo; printf R; exec cat"]);
    let mut child = pair.slave.spawn_command(cmd)?;
    drop(pair.slave);
    let mut reader = pair.master.try_clone_reader()?;
    let mut writer = pair.master.take_writer()?;
    let mut buf = [0u8; 64];
    loop {
        let k = reader.read(&mut buf)?;
        if buf[..k].contains(&b'R') {
            break;
        }
    }
    let mut lat = Vec::with_capacity(n);
    for i in 0..n {
        let byte = b'a' + (i % 26) as u8;
        let t = Instant::now();
        writer.write_all(&[byte])?;
        loop {
            let k = reader.read(&mut buf)?;
            if buf[..k].contains(&byte) {
                break;
            }
        }
        lat.push(t.elapsed());
    }
    child.kill()?;
    child.wait()?;
    lat.sort();
    Ok(lat)
}

/// Output throughput to one native and one ttyd client vs. a plain PTY read loop: three rounds,
/// alternating, medians reported (single runs vary ±15 % on this VM). Also the CPU the server
/// and the client (this process) spent per GB delivered, which is what decides the ratio on a
/// machine where the workload, the server and the client share two cores.
async fn throughput(server: &Served, bytes: u64) -> anyhow::Result<Vec<Figure>> {
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
        let plain = tokio::task::spawn_blocking(move || plain_read_loop(&script2)).await??;
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
struct Run {
    /// The server's bytes per read syscall (all fds; the PTY dominates).
    bytes_per_read: f64,
    rate: f64,
    lagged: u64,
    server_cpu_per_gb: f64,
    client_cpu_per_gb: f64,
}

/// The middle value (the upper one of an even count); 0 for none. Leaves `v` in run order.
fn median(v: &[f64]) -> f64 {
    let mut sorted = v.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted.get(sorted.len() / 2).copied().unwrap_or(0.0)
}

/// User + system CPU seconds of this process so far.
fn own_cpu_seconds() -> f64 {
    rusage_seconds(libc::RUSAGE_SELF)
}

/// User + system CPU seconds of the calling thread so far.
fn thread_cpu_seconds() -> f64 {
    rusage_seconds(libc::RUSAGE_THREAD)
}

/// User + system CPU seconds from `getrusage(who)`; 0 if it fails.
fn rusage_seconds(who: libc::c_int) -> f64 {
    // SAFETY: getrusage fills the struct it is given.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(who, &mut u) } != 0 {
        return 0.0;
    }
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(u.ru_utime) + secs(u.ru_stime)
}

fn plain_read_loop(script: &str) -> anyhow::Result<PlainRun> {
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
            }
        }
    }
    let d = t.elapsed();
    let cpu = thread_cpu_seconds() - cpu0;
    child.wait()?;
    Ok(PlainRun {
        elapsed: d,
        reader_cpu_per_gb: cpu / (total.max(1) as f64 / 1e9),
        bytes_per_read: total / reads.max(1),
    })
}

/// One plain read loop run.
struct PlainRun {
    elapsed: Duration,
    /// CPU seconds of the reading thread per GB read.
    reader_cpu_per_gb: f64,
    /// Average bytes a read returned.
    bytes_per_read: u64,
}

/// How the server's ttyd lag note starts (see client.rs `ttyd_outgoing`), command byte included.
const TTYD_LAG_NOTE: &[u8] = b"0\r\n\x1b[7m[corral: ";

/// Pipe-mode output (how stream-json agents run): `seq 1 N` on a pipe through the NDJSON
/// splitter into the Ring, from spawn until the session has stopped, vs. a plain read loop of the
/// same `seq` on a pipe in the same run; 3 alternating rounds, medians.
async fn pipe_output(server: &Served, lines: u64) -> anyhow::Result<Vec<Figure>> {
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
fn plain_pipe_loop(lines: u64) -> anyhow::Result<f64> {
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
async fn session_throughput(
    server: &Served,
    script: &str,
    ttyd: bool,
) -> anyhow::Result<(Duration, u64, u64)> {
    use futures::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let r = &server.remote;
    let info = r
        .json(
            "POST",
            "/v1/sessions",
            Some(&json!({"argv": ["sh", "-c", script], "ring_capacity": 8 << 20})),
        )
        .await?;
    let id = info["id"].as_str().unwrap_or_default().to_string();
    tokio::time::sleep(Duration::from_millis(300)).await; // stty first
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
                Message::Binary(b) if b.first() == Some(&b'0') => {
                    // The server's lag note is a frame of its own; its number is the bytes lost.
                    match b.strip_prefix(TTYD_LAG_NOTE) {
                        Some(rest) => {
                            lagged += rest
                                .split(|c| *c == b' ')
                                .next()
                                .and_then(|n| std::str::from_utf8(n).ok()?.parse::<u64>().ok())
                                .unwrap_or(0)
                        }
                        None => got += b.len() as u64 - 1,
                    }
                }
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

/// Sends every spawn at once on one connection (pipelined), then collects the session ids.
async fn spawn_pipelined(ws: &mut Conn, specs: Vec<Value>) -> anyhow::Result<Vec<String>> {
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
async fn spawn_stop(server: &Served, n: usize) -> anyhow::Result<Vec<Figure>> {
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
async fn spawn_stop_cli(server: &Served, n: usize) -> anyhow::Result<Vec<Figure>> {
    let exe = std::env::current_exe()?;
    let cli = |args: Vec<String>| {
        let mut cmd = tokio::process::Command::new(&exe);
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
fn event_secs(e: &Value) -> f64 {
    e["time"]["secs_since_epoch"].as_f64().unwrap_or(0.0)
        + e["time"]["nanos_since_epoch"].as_f64().unwrap_or(0.0) / 1e9
}

/// Restart latency of a crashing child process without backoff: a session whose program exits 1
/// after 20 ms, policy `on_failure`, backoff 0; from each `exited` event to the next `spawned`
/// (both stamped by the server), `n` times.
async fn restart(server: &Served, n: usize) -> anyhow::Result<Vec<Figure>> {
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
fn rss_and_fds(pid: i32) -> (u64, usize) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0);
    (rss, fds)
}

/// Creates and removes `n` sessions in batches of 50 (each batch spawned pipelined on one
/// connection, then removed concurrently): server RSS and open fds must come back to within
/// 10 % of their level after a warm-up of the same batches.
async fn soak(n: usize, workers: Option<usize>) -> anyhow::Result<Vec<Figure>> {
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
async fn idle(n: usize, workers: Option<usize>) -> anyhow::Result<Vec<Figure>> {
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
async fn remove_all(server: &Served, ids: &[String]) -> anyhow::Result<()> {
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
async fn recovery(n: usize, workers: Option<usize>) -> anyhow::Result<Vec<Figure>> {
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
    let took = report["took"]["secs"].as_f64().unwrap_or(0.0)
        + report["took"]["nanos"].as_f64().unwrap_or(0.0) / 1e9;
    let list = server.remote.json("GET", "/v1/sessions", None).await?;
    let running = list
        .as_array()
        .map(|l| l.iter().filter(|s| s["state"] == "running").count())
        .unwrap_or(0);
    Ok(vec![Figure {
        name: format!("reconciliation of {n} sessions after SIGKILL"),
        value: format!(
            "{took:.3}s ({} orphans, {running} running; serving after {:.3}s)",
            report["orphans_terminated"],
            serving.as_secs_f64()
        ),
        goal: "≤ 1 s".into(),
        json: json!({"reconcile_s": took, "serving_s": serving.as_secs_f64(),
            "report": report, "running": running}),
    }])
}

/// The fan-out session: 10 MB/s on average. Every 50 ms it writes whatever is due by the clock
/// since it started (1 byte per 100 ns), so time spent writing a burst does not lower the rate
/// (a fixed "1 MB, sleep 0.1" loop wrote only 7 MB/s with 100 viewers attached).
const FANOUT_SCRIPT: &str = "stty raw -echo; t0=$(date +%s%N); sent=0; \
    while :; do due=$(( ($(date +%s%N) - t0) / 100 )); \
    if [ $due -gt $sent ]; then head -c $((due - sent)) /dev/zero; sent=$due; fi; sleep 0.05; done";

/// One session writing 10 MB/s to 1, 10 and 100 viewers for 5 s: delivered bytes, lag
/// events and server CPU.
async fn fanout(server: &Served) -> anyhow::Result<Vec<Figure>> {
    let r = &server.remote;
    let info = r
        .json(
            "POST",
            "/v1/sessions",
            Some(&json!({
                "argv": ["sh", "-c", FANOUT_SCRIPT],
                "name": "bench-fanout",
            })),
        )
        .await?;
    let id = info["id"].as_str().unwrap_or_default().to_string();
    let mut out = Vec::new();
    for viewers in [1usize, 10, 100] {
        let mut conns = Vec::with_capacity(viewers);
        for _ in 0..viewers {
            let mut ws = r.ws().await?;
            ws.call(json!({"type": "subscribe", "session": id})).await?;
            conns.push(ws);
        }
        let head = async || -> anyhow::Result<u64> {
            let info = r.json("GET", &format!("/v1/sessions/{id}"), None).await?;
            Ok(info["output_offset"].as_u64().unwrap_or(0))
        };
        let head0 = head().await?;
        let cpu0 = server.cpu_seconds();
        let window = Duration::from_secs(5);
        let t = Instant::now();
        let results = join_all(conns.into_iter().map(|mut ws| async move {
            let (mut got, mut lags, mut lost) = (0u64, 0u64, 0u64);
            let end = tokio::time::Instant::now() + window;
            while let Ok(m) = tokio::time::timeout_at(end, ws.next()).await {
                match m {
                    Incoming::Bin(1, _, _, b) => got += b.len() as u64,
                    Incoming::Json(v) if v["type"] == "lagged" => {
                        lags += 1;
                        let (from, to) = (v["from"].as_u64(), v["to"].as_u64());
                        lost += to.unwrap_or(0).saturating_sub(from.unwrap_or(0));
                    }
                    Incoming::Closed(_) => break,
                    _ => {}
                }
            }
            (got, lags, lost)
        }))
        .await;
        let secs = t.elapsed().as_secs_f64();
        let cpu = (server.cpu_seconds() - cpu0) / secs * 100.0;
        let produced = (head().await? - head0) as f64 / secs / 1e6;
        let total: u64 = results.iter().map(|(g, _, _)| g).sum();
        let lags: u64 = results.iter().map(|(_, l, _)| l).sum();
        let lost: u64 = results.iter().map(|(_, _, b)| b).sum();
        let lost_pct = lost as f64 * 100.0 / (total + lost).max(1) as f64;
        out.push(Figure {
            name: format!("fan-out to {viewers} viewers: session wrote; delivered, lags (bytes), server CPU"),
            value: format!("{produced:.1} MB/s; {:.1} MB/s/viewer, {lags} lags ({lost_pct:.1}%), {cpu:.0}% core", total as f64 / viewers as f64 / secs / 1e6),
            goal: "≤ 100% of a core at 100 viewers".into(),
            json: json!({"viewers": viewers, "session_mb_per_s": produced, "mb_per_s_per_viewer": total as f64 / viewers as f64 / secs / 1e6, "lag_events": lags, "lagged_bytes": lost, "server_cpu_percent": cpu}),
        });
    }
    r.json("DELETE", &format!("/v1/sessions/{id}"), None)
        .await?;
    Ok(out)
}
