//! Against ttyd itself: the same text file `cat` to one ttyd-protocol client from the real ttyd
//! (built from its public source by `scripts/ttyd`, never vendored) and from corral's ttyd
//! endpoint, next to a raw read of the same PTY output; and keystroke echo through both with the
//! same blocking client. Side by side in one run, alternating, medians of [`ROUNDS`].
//!
//! ttyd is found at `$CORRAL_TTYD`, else `ttyd` on PATH, else `target/ttyd/bin/ttyd` (where
//! `scripts/ttyd` installs it); without it the scenario says so and measures nothing.

use std::io::Write;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures::{SinkExt, StreamExt};
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use super::echo::latencies;
use super::pct;
use super::throughput::{flood_session, median, plain_read_loop, ttyd_lagged};
use crate::JsonCalls;
use crate::figure::Figure;
use crate::served::Served;

/// Rounds of each measurement.
const ROUNDS: usize = 5;
/// Keystrokes per echo round.
const KEYS: usize = 1000;

/// The ttyd binary, if there is one.
pub(super) fn find() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("CORRAL_TTYD") {
        return Some(PathBuf::from(p));
    }
    crate::sequential::on_path("ttyd").or_else(|| {
        let local = Path::new("target/ttyd/bin/ttyd");
        local.is_file().then(|| local.to_path_buf())
    })
}

/// The scenario: throughput and echo, corral's ttyd endpoint against ttyd and a raw PTY read.
pub(super) async fn against_ttyd(server: &Served, bytes: u64) -> anyhow::Result<Vec<Figure>> {
    let Some(ttyd) = find() else {
        return Ok(vec![Figure {
            name: "against ttyd".into(),
            value: "ttyd not found".into(),
            goal: "bash scripts/ttyd builds it".into(),
            json: json!({"ttyd": null}),
        }]);
    };
    let version = tokio::process::Command::new(&ttyd)
        .arg("--version")
        .output()
        .await
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("text");
    let file_for_writer = file.clone();
    tokio::task::spawn_blocking(move || write_text(&file_for_writer, bytes)).await??;
    // The program stays after the file (ttyd loses the last bytes of a program that exits:
    // 12 KB of 20 MB in a trial run), and the clients stop when every byte is there.
    let script = format!(
        "stty raw -echo; head -c1 >/dev/null; cat {}; exec sleep 600",
        file.display()
    );
    let mbps = |b: u64, d: Duration| b as f64 / d.as_secs_f64() / 1e6;
    let (mut raw, mut theirs, mut ours, mut lost) = (Vec::new(), Vec::new(), Vec::new(), 0u64);
    for _ in 0..ROUNDS {
        let s = script.clone();
        let plain = tokio::task::spawn_blocking(move || plain_read_loop(&s, Some(bytes))).await??;
        raw.push(mbps(bytes, plain.elapsed));
        let (d, got, _) = ttyd_run(&ttyd, &["sh", "-c", &script], |addr| async move {
            let tcp = tokio::net::TcpStream::connect(&addr).await?;
            tcp.set_nodelay(true)?;
            let ws = connect(tcp, &addr, "/ws", "").await?;
            // ttyd starts the program when the client connects: stty first.
            tokio::time::sleep(Duration::from_millis(300)).await;
            throughput_client(ws, false, bytes).await
        })
        .await?;
        if got != bytes {
            bail!("ttyd delivered {got} of {bytes} bytes");
        }
        theirs.push(mbps(got, d));
        let (d, got, lagged) = corral_run(server, &script, bytes).await?;
        if got + lagged != bytes {
            bail!("corral delivered {got} (+{lagged} lagged) of {bytes} bytes");
        }
        lost += lagged;
        ours.push(mbps(got, d));
    }
    let ratio_ttyd: Vec<f64> = ours.iter().zip(&theirs).map(|(a, b)| a / b).collect();
    let ratio_raw: Vec<f64> = ours.iter().zip(&raw).map(|(a, b)| a / b).collect();
    let ceiling: Vec<f64> = raw.iter().zip(&theirs).map(|(a, b)| a / b).collect();
    // Echo: the same blocking client against both, alternating blocks.
    let echo_script = "stty raw -echo; printf R; exec cat";
    let (mut e_theirs, mut e_ours) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        let lat = ttyd_run(&ttyd, &["sh", "-c", echo_script], |addr| async move {
            tokio::task::spawn_blocking(move || blocking_ttyd_echo(&addr, "/ws", "", KEYS)).await?
        })
        .await?;
        e_theirs.extend(lat);
        let r = &server.remote;
        let info = r
            .json(
                "POST",
                "/v1/sessions",
                Some(&json!({"argv": ["sh", "-c", echo_script]})),
            )
            .await?;
        let id = info["id"].as_str().unwrap_or_default().to_string();
        let (addr, token, path) = (
            r.endpoint.host().to_string(),
            r.token.clone(),
            format!("/ttyd/{id}/ws"),
        );
        let lat =
            tokio::task::spawn_blocking(move || blocking_ttyd_echo(&addr, &path, &token, KEYS))
                .await??;
        e_ours.extend(lat);
        r.json("DELETE", &format!("/v1/sessions/{id}"), None)
            .await?;
    }
    e_theirs.sort();
    e_ours.sort();
    let p50_p99 = |v: &[Duration]| (pct(v, 0.5), pct(v, 0.99));
    let (t50, t99) = p50_p99(&e_theirs);
    let (o50, o99) = p50_p99(&e_ours);
    Ok(vec![
        Figure {
            name: format!("{version}: cat of a {} MB text file", bytes / 1_000_000),
            value: format!("{:.0} MB/s", median(&theirs)),
            goal: "-".into(),
            json: json!({"version": version, "mb_per_s": median(&theirs), "runs": theirs}),
        },
        Figure {
            // Over ttyd's too: no reader of this PTY goes faster than a plain read loop, so
            // this is as far above ttyd as any server can be on this machine.
            name: "  the same, raw read of the PTY (same run); its ratio to ttyd".into(),
            value: format!("{:.0} MB/s; {:.2}×", median(&raw), median(&ceiling)),
            goal: "-".into(),
            json: json!({"mb_per_s": median(&raw), "runs": raw, "ratio_ttyd": median(&ceiling),
                "runs_ratio_ttyd": ceiling}),
        },
        Figure {
            name: "  corral's ttyd endpoint: rate; ratio to ttyd; to raw".into(),
            value: format!(
                "{:.0} MB/s; {:.2}×; {:.2}× ({lost} lost)",
                median(&ours),
                median(&ratio_ttyd),
                median(&ratio_raw)
            ),
            goal: "≥ 1.5× ttyd, ≥ 0.9× raw, 0 lost".into(),
            json: json!({"mb_per_s": median(&ours), "runs": ours, "ratio_ttyd": median(&ratio_ttyd),
                "runs_ratio_ttyd": ratio_ttyd, "ratio_raw": median(&ratio_raw), "runs_ratio_raw": ratio_raw,
                "lagged_bytes": lost}),
        },
        latencies(
            &format!("echo via {version}, blocking client"),
            "-",
            &e_theirs,
        ),
        latencies(
            "echo via corral's ttyd endpoint, same client",
            "p50 and p99 ≤ ttyd's",
            &e_ours,
        ),
        Figure {
            name: "  echo ratio corral / ttyd: p50; p99".into(),
            value: format!(
                "{:.2}×; {:.2}×",
                o50.as_secs_f64() / t50.as_secs_f64().max(1e-9),
                o99.as_secs_f64() / t99.as_secs_f64().max(1e-9)
            ),
            goal: "≤ 1".into(),
            json: json!({"p50": o50.as_secs_f64() / t50.as_secs_f64().max(1e-9),
                "p99": o99.as_secs_f64() / t99.as_secs_f64().max(1e-9)}),
        },
    ])
}

/// Writes `bytes` of numbered text lines to `path`.
fn write_text(path: &Path, bytes: u64) -> anyhow::Result<()> {
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    let (mut written, mut n) = (0u64, 0u64);
    while written < bytes {
        let line = format!(
            "{n:>10} the quick brown fox jumps over the lazy dog, 0123456789 ~!@#$%^&*()\n"
        );
        let take = (bytes - written).min(line.len() as u64) as usize;
        out.write_all(&line.as_bytes()[..take])?;
        written += take as u64;
        n += 1;
    }
    out.flush()?;
    Ok(())
}

/// A ttyd-protocol WebSocket.
type TtydSocket = tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>;

/// Runs ttyd (`--once`, writable, on a free port of 127.0.0.1) with `argv`, hands its address
/// to `client` (its one client), then waits for ttyd to exit.
async fn ttyd_run<T, F, Fut>(ttyd: &Path, argv: &[&str], client: F) -> anyhow::Result<T>
where
    F: FnOnce(String) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<T>>,
{
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let child = Command::new(ttyd)
        .args(["--once", "--writable", "-i", "127.0.0.1", "-p"])
        .arg(port.to_string())
        .args(argv)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {}", ttyd.display()))?;
    let mut child = Reaped(Some(child));
    let addr = format!("127.0.0.1:{port}");
    // Listening? (A connection attempt is not a client to ttyd: the WebSocket upgrade is.)
    let deadline = Instant::now() + Duration::from_secs(10);
    while let Err(e) = tokio::net::TcpStream::connect(&addr).await {
        if Instant::now() >= deadline {
            bail!("ttyd never listened on {addr}: {e}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let out = client(addr).await?;
    child.wait(Duration::from_secs(10)).await?;
    Ok(out)
}

/// Opens a ttyd-protocol WebSocket on `tcp` and sends its init message.
async fn connect(
    tcp: tokio::net::TcpStream,
    addr: &str,
    path: &str,
    token: &str,
) -> anyhow::Result<tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>> {
    let mut req = format!("ws://{addr}{path}").into_client_request()?;
    req.headers_mut()
        .insert("sec-websocket-protocol", "tty".parse()?);
    let (mut ws, _) = tokio_tungstenite::client_async(req, tcp).await?;
    let init = json!({"AuthToken": token, "columns": 80, "rows": 24}).to_string();
    ws.send(Message::Binary(init.into_bytes().into())).await?;
    Ok(ws)
}

/// Sends the go keystroke, then counts output bytes until `want` came (or the server closed):
/// (time, bytes, bytes corral reported lagged, when `corral` is the server).
async fn throughput_client(
    mut ws: TtydSocket,
    corral: bool,
    want: u64,
) -> anyhow::Result<(Duration, u64, u64)> {
    // What comes before the go keystroke (title, preferences, corral's screen snapshot) is not
    // the file: read it off first, until the line has been quiet for 200 ms.
    while let Ok(m) = tokio::time::timeout(Duration::from_millis(200), ws.next()).await {
        if m.is_none() {
            bail!("closed before the go keystroke");
        }
    }
    let t = Instant::now();
    ws.send(Message::Binary(b"0g".to_vec().into())).await?;
    let (mut got, mut lagged) = (0u64, 0u64);
    while got + lagged < want
        && let Some(m) = ws.next().await
    {
        match m? {
            Message::Binary(b) if b.first() == Some(&b'0') => {
                match ttyd_lagged(&b).filter(|_| corral) {
                    Some(n) => lagged += n,
                    None => got += b.len() as u64 - 1,
                }
            }
            Message::Close(_) => break,
            _ => {}
        }
    }
    let elapsed = t.elapsed();
    if let Err(e) = ws.close(None).await {
        tracing::debug!(error = %e, "throughput client: close");
    }
    Ok((elapsed, got, lagged))
}

/// The same file through corral's ttyd endpoint: a session runs `script`, the client connects
/// (its snapshot is empty: the script waits for the go keystroke) and reads every byte; then the
/// session is removed.
async fn corral_run(
    server: &Served,
    script: &str,
    bytes: u64,
) -> anyhow::Result<(Duration, u64, u64)> {
    let r = &server.remote;
    let id = flood_session(server, script).await?;
    let addr = r.endpoint.host().to_string();
    let tcp = tokio::net::TcpStream::connect(&addr).await?;
    tcp.set_nodelay(true)?;
    let ws = connect(tcp, &addr, &format!("/ttyd/{id}/ws"), &r.token).await?;
    let out = throughput_client(ws, true, bytes).await;
    r.json("DELETE", &format!("/v1/sessions/{id}"), None)
        .await?;
    out
}

/// Keystroke echo from a blocking ttyd-protocol client (TCP_NODELAY, blocking reads): wait for
/// the `R` the script prints when ready, then `n` times send one byte and read until it is back.
fn blocking_ttyd_echo(
    addr: &str,
    path: &str,
    token: &str,
    n: usize,
) -> anyhow::Result<Vec<Duration>> {
    let tcp = TcpStream::connect(addr)?;
    tcp.set_nodelay(true)?;
    let mut req = format!("ws://{addr}{path}").into_client_request()?;
    req.headers_mut()
        .insert("sec-websocket-protocol", "tty".parse()?);
    let (mut ws, _) = tokio_tungstenite::tungstenite::client(req, tcp)
        .map_err(|e| anyhow::anyhow!("ttyd echo client: {e}"))?;
    let init = json!({"AuthToken": token, "columns": 80, "rows": 24}).to_string();
    ws.send(Message::Binary(init.into_bytes().into()))?;
    let output = |m: Message| match m {
        Message::Binary(b) if b.first() == Some(&b'0') => Some(b),
        _ => None,
    };
    loop {
        match ws.read()? {
            Message::Close(c) => bail!("closed before ready: {c:?}"),
            m => {
                if output(m).is_some_and(|b| b.contains(&b'R')) {
                    break;
                }
            }
        }
    }
    let mut lat = Vec::with_capacity(n);
    for i in 0..n {
        let byte = b'a' + (i % 26) as u8;
        let t = Instant::now();
        ws.send(Message::Binary(vec![b'0', byte].into()))?;
        loop {
            match ws.read()? {
                Message::Close(c) => bail!("closed: {c:?}"),
                m => {
                    if output(m).is_some_and(|b| b[1..].contains(&byte)) {
                        break;
                    }
                }
            }
        }
        lat.push(t.elapsed());
    }
    if let Err(e) = ws.close(None) {
        tracing::debug!(error = %e, "ttyd echo client: close");
    }
    Ok(lat)
}

/// A child that is killed and reaped if still there when dropped.
struct Reaped(Option<Child>);

impl Reaped {
    /// Waits (bounded: ttyd exits at once after its `--once` client left) for the child to
    /// exit; kills it past `within`.
    async fn wait(&mut self, within: Duration) -> anyhow::Result<()> {
        let Some(mut child) = self.0.take() else {
            return Ok(());
        };
        let deadline = Instant::now() + within;
        while child.try_wait()?.is_none() {
            if Instant::now() >= deadline {
                child.kill()?;
                child.wait()?;
                bail!("ttyd did not exit after its client left");
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        Ok(())
    }
}

impl Drop for Reaped {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            if let Err(e) = child.kill() {
                tracing::debug!(error = %e, "ttyd already gone");
            }
            if let Err(e) = child.wait() {
                tracing::warn!(error = %e, "ttyd not reaped");
            }
        }
    }
}
