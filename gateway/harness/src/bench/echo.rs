//! Echo: keystroke round trips through a real session (a blocking and an async client), next to
//! a bare PTY echo and a bare loopback WebSocket echo measured in the same run.

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use anyhow::bail;
use futures::{SinkExt, StreamExt};
use portable_pty::{CommandBuilder, PtySize, native_pty_system};
use serde_json::{Value, json};

use corral_client::Incoming;

use super::*;
use crate::JsonCalls;
use crate::figure::Figure;
use crate::served::Served;

/// Keystroke echo through the WebSocket to `cat` and back, vs. a bare PTY echo.
pub(super) async fn echo(server: &Served) -> anyhow::Result<Vec<Figure>> {
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
pub(super) fn keystroke(channel: u32, byte: u8) -> Vec<u8> {
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
pub(super) fn latencies(what: &str, goal: &str, sorted: &[Duration]) -> Figure {
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
pub(super) async fn ws_loopback_echo(n: usize) -> anyhow::Result<Vec<Duration>> {
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
pub(super) fn blocking_echo(
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
pub(super) fn bare_pty_echo(n: usize) -> anyhow::Result<Vec<Duration>> {
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
