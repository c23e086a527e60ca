//! The gateway end to end: the real binary, real processes, real WebSockets on 127.0.0.1.

use std::time::{Duration, Instant};

use corral_tests::{Frame, Server, Ws, log_bytes, session_processes, wait_for_comm};
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

const OUTPUT: u8 = 1;
const SNAPSHOT: u8 = 2;

/// A file of `n` pseudo-random bytes and the bytes themselves.
fn payload(dir: &std::path::Path, n: usize) -> (std::path::PathBuf, Vec<u8>) {
    let mut data = vec![0u8; n];
    let mut x = 0x2545F4914F6CDD1Du64;
    for chunk in data.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
    }
    let path = dir.join(format!("payload-{n}"));
    std::fs::write(&path, &data).unwrap();
    (path, data)
}

/// A session that prints `file` byte-exact (raw terminal) once it receives a go byte.
fn cat_spec(file: &std::path::Path, ring: usize) -> Value {
    json!({
        "argv": ["sh", "-c", format!("stty raw -echo; head -c1 >/dev/null; cat {}", file.display())],
        "ring_capacity": ring,
    })
}

/// Reads a native subscription until the exit event; returns (bytes, lag ranges).
async fn drain(ws: &mut Ws, channel: u64) -> (Vec<u8>, Vec<(u64, u64)>) {
    let mut out = Vec::new();
    let mut lags = Vec::new();
    loop {
        match ws.next().await {
            Frame::Bin(OUTPUT, ch, offset, bytes) if ch as u64 == channel => {
                assert_eq!(
                    offset,
                    (out.len()
                        + lags
                            .iter()
                            .map(|(a, b): &(u64, u64)| (b - a) as usize)
                            .sum::<usize>()) as u64,
                    "offsets contiguous"
                );
                out.extend_from_slice(&bytes);
            }
            Frame::Json(v) if v["type"] == "lagged" => {
                lags.push((v["from"].as_u64().unwrap(), v["to"].as_u64().unwrap()))
            }
            Frame::Json(v) if v["type"] == "event" && v["event"]["kind"]["kind"] == "exited" => {
                return (out, lags);
            }
            Frame::Close(c, r) => panic!("closed {c} {r}"),
            _ => {}
        }
    }
}

async fn subscribe(ws: &mut Ws, session: &str, from: Option<u64>) -> (u64, u64) {
    let mut req = json!({"type": "subscribe", "session": session});
    if let Some(f) = from {
        req["from"] = json!(f);
    }
    let r = ws.call(req).await;
    assert_eq!(r["type"], "subscribed", "{r}");
    (
        r["channel"].as_u64().unwrap(),
        r["offset"].as_u64().unwrap(),
    )
}

#[tokio::test]
async fn drive_a_shell_over_the_websocket() {
    let server = Server::start();
    let mut ws = server.ws().await;
    let hello = ws.call(json!({"type": "hello", "protocol": 1})).await;
    assert_eq!(hello["type"], "hello");
    let spawned = ws
        .call(json!({"type": "spawn", "spec": {"argv": ["bash", "--norc", "-i"], "name": "sh1"}}))
        .await;
    assert_eq!(spawned["session"]["state"], "running", "{spawned}");
    let id = spawned["session"]["id"].as_str().unwrap().to_string();
    let (channel, _) = subscribe(&mut ws, "sh1", None).await;
    // Without `from`, a snapshot comes first.
    assert!(matches!(ws.next().await, Frame::Bin(SNAPSHOT, ch, _, _) if ch as u64 == channel));
    ws.send(json!({"type": "input", "session": "sh1", "data": "echo hi-$((40+2))\n"}))
        .await;
    let mut seen = Vec::new();
    while !String::from_utf8_lossy(&seen).contains("hi-42") {
        if let Frame::Bin(OUTPUT, _, _, b) = ws.next().await {
            seen.extend_from_slice(&b);
        }
    }
    let list = ws.call(json!({"type": "list"})).await;
    assert_eq!(list["sessions"].as_array().unwrap().len(), 1);
    let stopped = ws.call(json!({"type": "stop", "session": id})).await;
    assert_eq!(stopped["session"]["state"], "stopped", "{stopped}");
    assert!(session_processes(&id).is_empty());
    let tree = ws.call(json!({"type": "tree"})).await;
    // The whole live tree: the server, its gateway, then the corral tree.
    assert_eq!(tree["tree"]["id"], "server");
    assert_eq!(tree["tree"]["children"][1]["id"], "corral");
}

#[tokio::test]
async fn output_is_byte_exact_to_a_native_and_a_ttyd_client_then_the_exit() {
    const N: usize = 100 * 1000 * 1000;
    let server = Server::start();
    let (file, data) = payload(server.dir.path(), N);
    let info = server.spawn(cat_spec(&file, 128 << 20)).await;
    let id = info["id"].as_str().unwrap().to_string();
    let mut native = server.ws().await;
    let (channel, offset) = subscribe(&mut native, &id, Some(0)).await;
    assert_eq!(offset, 0);
    let mut ttyd = server.ttyd_open(&id).await;
    // ttyd: title, preferences, then the (empty) screen snapshot before any output.
    let mut ttyd_frames = Vec::new();
    while ttyd_frames.len() < 3 {
        match ttyd.next().await.unwrap().unwrap() {
            Message::Binary(b) => ttyd_frames.push(b.to_vec()),
            Message::Text(t) => ttyd_frames.push(t.as_bytes().to_vec()),
            _ => {}
        }
    }
    assert_eq!(ttyd_frames[0][0], b'1');
    assert_eq!(ttyd_frames[1][0], b'2');
    assert_eq!(ttyd_frames[2][0], b'0');
    wait_for_comm(&id, "head").await;
    native
        .send(json!({"type": "input", "session": id, "data": "g"}))
        .await;
    let ttyd_task = tokio::spawn(async move {
        let mut out = Vec::with_capacity(N);
        loop {
            match tokio::time::timeout(Duration::from_secs(60), ttyd.next())
                .await
                .unwrap()
            {
                Some(Ok(Message::Binary(b))) if b[0] == b'0' => out.extend_from_slice(&b[1..]),
                Some(Ok(Message::Close(c))) => return (out, c.map(|c| u16::from(c.code))),
                None => return (out, None),
                _ => {}
            }
        }
    });
    let (out, lags) = drain(&mut native, channel).await;
    assert!(lags.is_empty(), "lagged: {lags:?}");
    assert_eq!(out.len(), N);
    assert!(out == data, "native bytes differ");
    let (tout, close) = ttyd_task.await.unwrap();
    assert_eq!(close, Some(1000), "ttyd closes normally after the exit");
    assert_eq!(tout.len(), N);
    assert!(tout == data, "ttyd bytes differ");
}

/// What one subscription delivered, in order: output (consecutive frames joined, each start
/// checked against the last end) and events (their seq), until `until` says it saw enough.
async fn stream_of(
    ws: &mut Ws,
    channel: u64,
    mut offset: u64,
    until: impl Fn(&[u8], &[Value]) -> bool,
) -> (Vec<String>, Vec<Value>) {
    let (mut items, mut bytes, mut events) = (Vec::<String>::new(), Vec::new(), Vec::new());
    let mut run = Vec::new();
    while !until(&bytes, &events) {
        match ws.next().await {
            Frame::Bin(OUTPUT, ch, at, b) if ch as u64 == channel => {
                assert_eq!(at, offset, "no gap, no duplicate");
                offset += b.len() as u64;
                run.extend_from_slice(&b);
                bytes.extend_from_slice(&b);
            }
            Frame::Json(v) if v["type"] == "event" => {
                if !run.is_empty() {
                    items.push(String::from_utf8_lossy(&std::mem::take(&mut run)).into_owned());
                }
                items.push(format!("event {}", v["event"]["seq"]));
                events.push(v["event"].clone());
            }
            Frame::Json(v) if v["type"] == "events_lagged" => items.push(format!("lagged {v}")),
            Frame::Json(v) if v["type"] == "lagged" => panic!("{v}"),
            _ => {}
        }
    }
    if !run.is_empty() {
        items.push(String::from_utf8_lossy(&run).into_owned());
    }
    (items, events)
}

/// A client that reconnects with `after` (the last event it received) as well as `from` gets
/// the events it missed from the journal, each where it happened in the output, exactly as a
/// client that stayed connected saw them, then the live ones, none twice; past the bound
/// (1000) an `events_lagged` says how many were not replayed.
#[tokio::test]
async fn a_resumed_subscription_gets_the_missed_events_where_they_happened() {
    let server = Server::start();
    let info = server
        .spawn(json!({"name": "resumed", "argv": ["cat"]}))
        .await;
    let id = info["id"].as_str().unwrap().to_string();
    let mut first = server.ws().await;
    let sub = first
        .call(json!({"type": "subscribe", "session": id, "from": 0}))
        .await;
    let before = sub["last_event"].as_u64().expect("last_event");
    for (i, (rows, cols)) in [(30, 100), (40, 120), (20, 90)].into_iter().enumerate() {
        first
            .send(json!({"type": "input", "session": id, "data": format!("line {i}\n")}))
            .await;
        // Its echo first, so the resize falls after it in the output.
        let echoed = format!("line {i}\r\nline {i}\r\n");
        let deadline = Instant::now() + Duration::from_secs(10);
        while !String::from_utf8_lossy(&log_of(&server, &id).await).contains(&echoed) {
            assert!(Instant::now() < deadline, "no echo of line {i}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        first
            .call(
                json!({"type": "resize", "session": id, "rows": rows, "cols": cols, "take": true}),
            )
            .await;
    }
    first
        .send(json!({"type": "input", "session": id, "data": "end\n"}))
        .await;
    drop(first);
    let done = |b: &[u8], e: &[Value]| {
        e.len() >= 3 && String::from_utf8_lossy(b).matches("end\r\n").count() == 2
    };
    // What a client connected throughout saw.
    let mut all = server.ws().await;
    let sub = all
        .call(json!({"type": "subscribe", "session": id, "from": 0, "after": before}))
        .await;
    let (seen, events) = stream_of(&mut all, sub["channel"].as_u64().unwrap(), 0, done).await;
    assert_eq!(events.len(), 3, "{seen:?}");
    assert!(
        events.iter().all(|e| e["kind"]["kind"] == "resized"),
        "{events:?}"
    );
    // Each resize after the echo of its line, the last before `end`.
    let resized_at: Vec<u64> = events
        .iter()
        .map(|e| e["offset"].as_u64().unwrap())
        .collect();
    assert!(resized_at.windows(2).all(|w| w[0] < w[1]), "{resized_at:?}");
    // Resumed past the first resize, with the events after it: the rest exactly as above.
    let from = resized_at[0];
    let after = events[0]["seq"].as_u64().unwrap();
    let mut resumed = server.ws().await;
    let sub = resumed
        .call(json!({"type": "subscribe", "session": id, "from": from, "after": after}))
        .await;
    assert_eq!(sub["last_event"], events[2]["seq"], "{sub}");
    let (got, _) = stream_of(
        &mut resumed,
        sub["channel"].as_u64().unwrap(),
        from,
        |b, e| e.len() >= 2 && String::from_utf8_lossy(b).matches("end\r\n").count() == 2,
    )
    .await;
    let expected: Vec<String> = seen[seen
        .iter()
        .position(|i| i == &format!("event {after}"))
        .unwrap()
        + 1..]
        .to_vec();
    assert_eq!(got, expected);
    // Then live, once: a new event reaches it once, and none of the replayed ones again.
    resumed
        .call(json!({"type": "resize", "session": id, "rows": 24, "cols": 80, "take": true}))
        .await;
    let (live, _) = stream_of(&mut resumed, 0, 0, |_, e| !e.is_empty()).await;
    let next = events[2]["seq"].as_u64().unwrap() + 1;
    assert_eq!(live, vec![format!("event {next}")]);
    // More than the bound missed: the newest 1000 come, after a count of the others.
    for i in 0..1002u16 {
        resumed
            .call(json!({"type": "resize", "session": id, "rows": 10 + i % 2, "cols": 80, "take": true}))
            .await;
    }
    let mut far = server.ws().await;
    let sub = far
        .call(json!({"type": "subscribe", "session": id, "after": 0}))
        .await;
    let total = sub["last_event"].as_u64().unwrap();
    let (got, events) = stream_of(
        &mut far,
        sub["channel"].as_u64().unwrap(),
        sub["offset"].as_u64().unwrap(),
        |_, e| e.len() >= 1000,
    )
    .await;
    assert_eq!(
        got[0],
        format!(
            "lagged {}",
            json!({"type": "events_lagged", "session": id, "missed": total - 1000})
        )
    );
    assert_eq!(events[0]["seq"].as_u64(), Some(total - 999));
    assert_eq!(events[999]["seq"].as_u64(), Some(total));
}

/// Session `id`'s output so far (`corral logs`).
async fn log_of(server: &Server, id: &str) -> Vec<u8> {
    server.cli(&["logs", id]).await.stdout
}

#[tokio::test]
async fn reconnect_with_last_plus_one_resumes_exactly() {
    const N: usize = 8 * 1000 * 1000;
    let server = Server::start();
    let (file, data) = payload(server.dir.path(), N);
    let info = server.spawn(cat_spec(&file, 16 << 20)).await;
    let id = info["id"].as_str().unwrap().to_string();
    let mut first = server.ws().await;
    let (channel, _) = subscribe(&mut first, &id, Some(0)).await;
    wait_for_comm(&id, "head").await;
    first
        .send(json!({"type": "input", "session": id, "data": "g"}))
        .await;
    let mut got = Vec::new();
    while got.len() < N / 3 {
        if let Frame::Bin(OUTPUT, ch, offset, b) = first.next().await {
            assert_eq!(ch as u64, channel);
            assert_eq!(offset as usize, got.len());
            got.extend_from_slice(&b);
        }
    }
    drop(first); // the connection drops mid-stream
    let mut second = server.ws().await;
    let (channel, offset) = subscribe(&mut second, &id, Some(got.len() as u64)).await;
    assert_eq!(offset as usize, got.len());
    // Until every byte arrived (the session may well have ended before this subscription, so
    // its exit event is in the past: `subscribed` says the state instead).
    while got.len() < N {
        match second.next().await {
            Frame::Bin(OUTPUT, ch, offset, b) if ch as u64 == channel => {
                assert_eq!(offset as usize, got.len(), "no gap, no duplicate");
                got.extend_from_slice(&b);
            }
            Frame::Json(v) if v["type"] == "lagged" => panic!("lag within retention: {v}"),
            _ => {}
        }
    }
    assert!(got == data);
}

fn rss_kib(pid: i32) -> u64 {
    corral_actors::process::procfs::status_kib(pid, "VmRSS").expect("VmRSS")
}

#[tokio::test]
async fn a_stalled_client_gets_lagged_while_another_reads_at_full_speed() {
    const N: u64 = 200 * 1000 * 1000;
    let server = Server::start();
    let info = server
        .spawn(json!({
            "argv": ["sh", "-c", format!("stty raw -echo; head -c1 >/dev/null; head -c {N} /dev/zero")],
            "ring_capacity": 1 << 20,
        }))
        .await;
    let id = info["id"].as_str().unwrap().to_string();
    let rss_before = rss_kib(server.pid());
    let mut stalled = server.ws().await;
    let (sc, _) = subscribe(&mut stalled, &id, Some(0)).await;
    let mut reader = server.ws().await;
    let (rc, _) = subscribe(&mut reader, &id, Some(0)).await;
    wait_for_comm(&id, "head").await;
    reader
        .send(json!({"type": "input", "session": id, "data": "g"}))
        .await;
    let t = Instant::now();
    let (out, lags) = drain(&mut reader, rc).await;
    let took = t.elapsed();
    let covered = out.len() as u64 + lags.iter().map(|(a, b)| b - a).sum::<u64>();
    assert_eq!(covered, N, "every byte delivered or reported lost");
    let rss_after = rss_kib(server.pid());
    // The stalled client costs its socket buffers, not the 200 MB it did not read.
    assert!(
        rss_after < rss_before + 64 * 1024,
        "server RSS grew from {rss_before} KiB to {rss_after} KiB"
    );
    // Now the stalled client reads: some output, then an exact lag, then the newest bytes.
    let mut next_offset = None;
    let mut saw_lag = false;
    loop {
        match stalled.next().await {
            Frame::Bin(OUTPUT, ch, offset, b) if ch as u64 == sc => {
                if let Some(n) = next_offset {
                    assert_eq!(offset, n, "contiguous after the lag");
                }
                next_offset = Some(offset + b.len() as u64);
            }
            Frame::Json(v) if v["type"] == "lagged" => {
                let from = v["from"].as_u64().unwrap();
                assert_eq!(
                    Some(from),
                    next_offset.or(Some(0)),
                    "lag starts where delivery stopped"
                );
                next_offset = Some(v["to"].as_u64().unwrap());
                saw_lag = true;
            }
            Frame::Json(v) if v["type"] == "event" && v["event"]["kind"]["kind"] == "exited" => {
                break;
            }
            _ => {}
        }
    }
    assert!(saw_lag, "the stalled client must be told what it lost");
    assert_eq!(next_offset, Some(N));
    eprintln!(
        "reader took {took:?} for {N} bytes ({} lag ranges); RSS {rss_before} -> {rss_after} KiB",
        lags.len()
    );
}

#[tokio::test]
async fn a_reader_that_pauses_briefly_is_never_lapped_under_a_holder() {
    // A terminal under a holder is read by the server (into the holder's ring, then the
    // session's: `session/kept.rs`), and that reader waits for its viewers as one without a
    // holder does: the same flood and pauses, through the other read path.
    let server = Server::start();
    a_reader_that_pauses_briefly_is_never_lapped(server, true, 12_000_000, PAUSES).await;
}

#[tokio::test]
async fn a_reader_that_pauses_briefly_is_never_lapped_without_a_holder() {
    let server = Server::start_configured("holders = false\n");
    a_reader_that_pauses_briefly_is_never_lapped(server, false, 12_000_000, PAUSES).await;
}

/// The flood's reader stops reading while a viewer pauses, and the program waits on its
/// terminal, so the flood runs at the viewer's pace. Each pause is half the output's patience
/// (20 ms), as a descheduled viewer's would be. This debug-built viewer is slower than the flood
/// on a loaded machine, and a viewer slower than the flood is lapped once the output has waited
/// 200 ms in a second, by design: a flood short enough to stay within that (a 40 MB one,
/// pausing 15 ms every 4 MB, was lapped in CI with the budget spent).
const PAUSES: Pauses = Pauses {
    every: 2 << 20,
    pause: Duration::from_millis(10),
};

/// How a test reader pauses: for `pause` after each `every` bytes.
struct Pauses {
    every: usize,
    pause: Duration,
}

/// A Ring of 256 KiB is a few ms of a flood: each pause of the reader (a descheduled viewer)
/// would lap it if the output did not wait for it (20 ms at a time, 200 ms a second). Without
/// the pacing both floods lap this reader within ~6 ms, before its first pause.
async fn a_reader_that_pauses_briefly_is_never_lapped(
    server: Server,
    held: bool,
    n: usize,
    pauses: Pauses,
) {
    let (file, data) = payload(server.dir.path(), n);
    let info = server.spawn(cat_spec(&file, 256 << 10)).await;
    let id = info["id"].as_str().unwrap().to_string();
    assert_eq!(info["holder_pid"].as_i64().is_some(), held, "{info}");
    let mut ws = server.ws().await;
    let (channel, _) = subscribe(&mut ws, &id, Some(0)).await;
    wait_for_comm(&id, "head").await;
    ws.send(json!({"type": "input", "session": id, "data": "g"}))
        .await;
    let mut out = Vec::with_capacity(n);
    let mut paused = 0;
    let t0 = Instant::now();
    loop {
        match ws.next().await {
            Frame::Bin(OUTPUT, ch, offset, bytes) if ch as u64 == channel => {
                assert_eq!(offset, out.len() as u64, "contiguous");
                let before = out.len() / pauses.every;
                out.extend_from_slice(&bytes);
                if out.len() / pauses.every > before {
                    paused += 1;
                    tokio::time::sleep(pauses.pause).await;
                }
            }
            Frame::Json(v) if v["type"] == "lagged" => {
                let (_, metrics) = server
                    .http("GET", "/metrics", Some(&server.token), None)
                    .await;
                panic!(
                    "lapped after {} bytes, {paused} pauses, {:?}: {v}; {:?}",
                    out.len(),
                    t0.elapsed(),
                    pacing(&metrics)
                )
            }
            Frame::Json(v) if v["type"] == "event" && v["event"]["kind"]["kind"] == "exited" => {
                break;
            }
            Frame::Close(c, r) => panic!("closed {c} {r}"),
            _ => {}
        }
    }
    assert_eq!(out.len(), n);
    assert!(out == data, "bytes differ");
    assert_eq!(paused, n / pauses.every);
    let took = t0.elapsed();
    // The waits are counted (how many depends on how fast this machine floods: none when the
    // reader never fell a Ring behind).
    let (status, body) = server
        .http("GET", "/metrics", Some(&server.token), None)
        .await;
    assert_eq!(status, 200);
    for kind in ["waits", "waited_ms", "ran_out", "budget_spent"] {
        let prefix = format!("corral_pacing_total{{kind=\"{kind}\"}} ");
        assert!(
            body.lines()
                .find_map(|l| l.strip_prefix(prefix.as_str()))
                .is_some_and(|v| v.parse::<u64>().is_ok()),
            "no {kind} pacing counter in {body}"
        );
    }
    eprintln!(
        "{n} bytes in {took:?}, {paused} pauses; {:?}",
        pacing(&body)
    );
}

/// The pacing counters' lines of a /metrics body.
fn pacing(metrics: &str) -> Vec<&str> {
    metrics
        .lines()
        .filter(|l| l.starts_with("corral_pacing_total"))
        .collect()
}

#[tokio::test]
async fn a_hundred_clients_receive_every_byte_or_an_explicit_lag() {
    const N: usize = 10 * 1000 * 1000;
    let server = Server::start();
    let (file, _) = payload(server.dir.path(), N);
    let info = server.spawn(cat_spec(&file, 4 << 20)).await;
    let id = info["id"].as_str().unwrap().to_string();
    let mut clients = Vec::new();
    for _ in 0..100 {
        let mut ws = server.ws().await;
        let (ch, _) = subscribe(&mut ws, &id, Some(0)).await;
        clients.push((ws, ch));
    }
    let mut go = server.ws().await;
    wait_for_comm(&id, "head").await;
    go.send(json!({"type": "input", "session": id, "data": "g"}))
        .await;
    let tasks: Vec<_> = clients
        .into_iter()
        .map(|(mut ws, ch)| tokio::spawn(async move { drain(&mut ws, ch).await }))
        .collect();
    for t in tasks {
        let (out, lags) = t.await.unwrap();
        let covered = out.len() + lags.iter().map(|(a, b)| (b - a) as usize).sum::<usize>();
        assert_eq!(covered, N);
    }
}

#[tokio::test]
async fn security_matrix() {
    let server = Server::start();
    let a = server.spawn(json!({"argv": ["cat"], "name": "a"})).await;
    let b = server.spawn(json!({"argv": ["cat"], "name": "b"})).await;
    let (a_id, b_id) = (a["id"].as_str().unwrap(), b["id"].as_str().unwrap());
    // No token / wrong token: 401 at the upgrade and on REST.
    assert!(server.ws_with(None, &[]).await.is_err());
    assert!(
        server
            .ws_with(Some("corral_admin_0123456789abcdef0123456789abcdef"), &[])
            .await
            .is_err()
    );
    assert_eq!(server.http("GET", "/v1/sessions", None, None).await.0, 401);
    assert_eq!(
        server.http("GET", "/metrics", Some("nope"), None).await.0,
        401
    );
    // Cross-origin upgrade: 403, unless same-origin.
    assert!(
        server
            .ws_with(Some(&server.token), &[("origin", "http://evil.example")])
            .await
            .is_err()
    );
    let same = format!("http://{}", server.addr);
    assert!(
        server
            .ws_with(Some(&server.token), &[("origin", &same)])
            .await
            .is_ok()
    );
    // A read-only token cannot send input; it cannot see another session.
    let read = server.scoped_token("a", "read").await;
    let mut ro = server.ws_with(Some(&read), &[]).await.unwrap();
    let r = ro
        .call(json!({"type": "input", "session": a_id, "data": "x"}))
        .await;
    assert_eq!(r["code"], "forbidden", "{r}");
    let r = ro.call(json!({"type": "subscribe", "session": b_id})).await;
    assert_eq!(r["code"], "forbidden", "{r}");
    // It cannot tell a session it may not see from one that does not exist (it could probe
    // which names do): the same refusal, over the WebSocket and over HTTP.
    let r = ro
        .call(json!({"type": "subscribe", "session": "no-such-name"}))
        .await;
    assert_eq!(r["code"], "forbidden", "{r}");
    // Nor by an unsubscribe or an acknowledgement (they answered `not_found` for a name that
    // does not exist, and `ok` or nothing for one that does).
    for key in [b_id, "no-such-name"] {
        let r = ro
            .call(json!({"type": "unsubscribe", "session": key}))
            .await;
        assert_eq!(r["code"], "forbidden", "unsubscribe {key}: {r}");
        let r = ro
            .call(json!({"type": "ack", "session": key, "offset": 0}))
            .await;
        assert_eq!(r["code"], "forbidden", "ack {key}: {r}");
    }
    for key in [b_id, "no-such-name"] {
        let (status, body) = server
            .http("GET", &format!("/v1/sessions/{key}"), Some(&read), None)
            .await;
        assert_eq!(status, 403, "{key}: {body}");
        assert!(body.contains("does not allow this session"), "{body}");
    }
    let r = ro
        .call(json!({"type": "spawn", "spec": {"argv": ["cat"]}}))
        .await;
    assert_eq!(r["code"], "forbidden", "{r}");
    let list = ro.call(json!({"type": "list"})).await;
    assert_eq!(
        list["sessions"].as_array().unwrap().len(),
        1,
        "sees only its session"
    );
    // A write token on session a used on session b.
    let write = server.scoped_token("a", "write").await;
    let mut rw = server.ws_with(Some(&write), &[]).await.unwrap();
    assert_eq!(
        rw.call(json!({"type": "input", "session": b_id, "data": "x"}))
            .await["code"],
        "forbidden"
    );
    let ok = rw
        .call(json!({"type": "resize", "session": a_id, "rows": 30, "cols": 100}))
        .await;
    assert_eq!(ok["type"], "ok", "{ok}");
    // The hook token of a session (from its environment) cannot open a WebSocket, and cannot
    // post events for another session.
    let pid = a["pid"].as_i64().unwrap();
    let env = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
    let hook = env
        .split(|&c| c == 0)
        .find_map(|kv| kv.strip_prefix(b"CORRAL_HOOK_TOKEN="))
        .map(|v| String::from_utf8_lossy(v).to_string())
        .unwrap();
    assert!(server.ws_with(Some(&hook), &[]).await.is_err());
    let ev = json!({"hook_event_name": "Notification", "message": "Claude needs your permission to use Bash"});
    assert_eq!(
        server
            .http(
                "POST",
                &format!("/v1/sessions/{b_id}/events"),
                Some(&hook),
                Some(&ev)
            )
            .await
            .0,
        403
    );
    assert_eq!(
        server
            .http(
                "POST",
                &format!("/v1/sessions/{a_id}/events"),
                Some(&hook),
                Some(&ev)
            )
            .await
            .0,
        202
    );
    let info = server.session(a_id).await;
    assert_eq!(info["attention"], "needs_permission");
    // Nothing the server logged contains a token: the data dir holds no log, and the tokens
    // never appear in the server's stderr (checked in the SIGTERM test's captured log).
}

#[tokio::test]
async fn bad_input_gets_clear_errors_and_the_server_stays_up() {
    let server = Server::start();
    let mut ws = server.ws().await;
    // Malformed JSON and unknown message types: an error frame, connection stays.
    ws.raw(Message::Text("{not json".into())).await;
    assert!(matches!(ws.next().await, Frame::Json(v) if v["code"] == "bad_request"));
    let r = ws.call(json!({"type": "frobnicate"})).await;
    assert_eq!(r["code"], "bad_request", "{r}");
    let r = ws
        .call(json!({"type": "subscribe", "session": "no-such"}))
        .await;
    assert_eq!(r["code"], "not_found", "{r}");
    ws.raw(Message::Binary(vec![3, 0].into())).await;
    assert!(matches!(ws.next().await, Frame::Json(v) if v["code"] == "bad_request"));
    assert_eq!(ws.call(json!({"type": "ping"})).await["type"], "pong");
    // A flood of 4,000 messages over the 1,000/s limit (burst 2,000): paced, not dropped —
    // every one is answered, none is refused, and the pacing took time.
    let t = std::time::Instant::now();
    for _ in 0..4_000 {
        ws.raw(Message::Text(json!({"type": "ping"}).to_string().into()))
            .await;
    }
    let mut pongs = 0;
    while pongs < 4_000 {
        match ws.next().await {
            Frame::Json(v) if v["type"] == "pong" => pongs += 1,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(
        t.elapsed() > Duration::from_millis(1500),
        "the flood must have been paced"
    );
    // Oversize frame: closed with 1009 and a reason.
    let mut big = server.ws().await;
    big.raw(Message::Text("x".repeat(200 * 1024).into())).await;
    match big.next().await {
        Frame::Close(1009, reason) => assert!(!reason.is_empty(), "1009 without a reason"),
        other => panic!("expected a close 1009 with a reason, got {other:?}"),
    }
    // Invalid UTF-8 in a text frame (sent as a raw frame by a hand-made client).
    let mut utf = server.ws().await;
    let frame = tokio_tungstenite::tungstenite::protocol::frame::Frame::message(
        vec![0xff, 0xfe, 0xfd],
        tokio_tungstenite::tungstenite::protocol::frame::coding::OpCode::Data(
            tokio_tungstenite::tungstenite::protocol::frame::coding::Data::Text,
        ),
        true,
    );
    utf.raw(Message::Frame(frame)).await;
    match utf.next().await {
        Frame::Close(1007, reason) => assert!(!reason.is_empty(), "1007 without a reason"),
        other => panic!("expected a close 1007 with a reason, got {other:?}"),
    }
    // HTTP: a body over the limit and a path no route serves get the JSON body of every
    // refusal (axum's own answers were plain text and empty).
    let big = json!({"argv": ["x".repeat(300 * 1024)]});
    let (status, body) = server
        .http("POST", "/v1/sessions", Some(&server.token), Some(&big))
        .await;
    assert_eq!(status, 413, "{body}");
    let v: Value = serde_json::from_str(&body).expect("a JSON error body");
    assert_eq!(v["code"], "too_large", "{v}");
    let (status, body) = server
        .http("GET", "/v1/no-such-route", Some(&server.token), None)
        .await;
    assert_eq!(status, 404, "{body}");
    let v: Value = serde_json::from_str(&body).expect("a JSON error body");
    assert_eq!(v["code"], "not_found", "{v}");
    let (status, body) = server
        .http("PUT", "/v1/sessions", Some(&server.token), None)
        .await;
    assert_eq!(status, 405, "{body}");
    let v: Value = serde_json::from_str(&body).expect("a JSON error body");
    assert_eq!(v["code"], "method_not_allowed", "{v}");
    assert_eq!(v["status"], 405, "{v}");
    // A spec that could never start is a 400 naming what is wrong (it was a 409 "could not
    // start the process"), and nothing is left of it.
    for (spec, says) in [
        (
            json!({"argv": ["true"], "mode": "stream_json"}),
            "needs an agent profile",
        ),
        (
            json!({"argv": ["sleep", "1"], "stop_signal": "SIGBOGUS"}),
            "unknown stop signal 'SIGBOGUS'",
        ),
        (json!({"argv": ["sleep", "1"], "grace": -1}), "not negative"),
        (
            json!({"argv": ["sleep", "1"], "size": {"rows": 65535, "cols": 65535}}),
            "over the 1000×1000 limit",
        ),
    ] {
        let (status, body) = server
            .http("POST", "/v1/sessions", Some(&server.token), Some(&spec))
            .await;
        assert_eq!(status, 400, "{spec}: {body}");
        assert!(body.contains(says), "{spec}: {body}");
    }
    // Written as people write them: a signal without its SIG, seconds as a number, the CLI's
    // spelling of a policy.
    let info = server
        .spawn(
            json!({"name": "plain-spec", "argv": ["sleep", "100"], "stop_signal": "term",
            "grace": 0.5, "restart": "on-failure"}),
        )
        .await;
    assert_eq!(info["state"], "running", "{info}");
    // A hook payload too deep to read back is refused (it was accepted, then unreadable: a
    // hole in the journal); the events after an offset past i64 are none (it wrapped: all).
    let mut deep = json!("x");
    for _ in 0..100 {
        deep = json!({ "a": deep });
    }
    let (status, body) = server
        .http(
            "POST",
            "/v1/sessions/plain-spec/events",
            Some(&server.token),
            Some(&json!({"hook_event_name": "Notification", "deep": deep})),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("nested deeper than 64"), "{body}");
    let mut history = server.ws().await;
    let r = history
        .call(json!({"type": "events", "session": "plain-spec", "after": u64::MAX - 1}))
        .await;
    assert_eq!(r["events"], json!([]), "{r}");
    // A viewer's absurd size is refused too (a 65535×65535 screen took gigabytes).
    let mut viewer = server.ws().await;
    let r = viewer
        .call(json!({"type": "resize", "session": "plain-spec", "rows": 4000, "cols": 4000}))
        .await;
    assert_eq!(r["code"], "bad_request", "{r}");
    assert!(r.to_string().contains("1000×1000 limit"), "{r}");
    let (status, body) = server
        .http(
            "DELETE",
            "/v1/sessions/plain-spec",
            Some(&server.token),
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = server
        .http("GET", "/v1/sessions", Some(&server.token), None)
        .await;
    assert_eq!(status, 200);
    assert!(
        !body.contains("SIGBOGUS"),
        "a refused spawn left a session: {body}"
    );
    // The server is still fine.
    let (status, _) = server.http("GET", "/v1/health", None, None).await;
    assert_eq!(status, 200);
    let mut again = server.ws().await;
    assert_eq!(again.call(json!({"type": "ping"})).await["type"], "pong");
}

#[tokio::test]
async fn metrics_parse_as_prometheus_text() {
    let server = Server::start();
    server.spawn(json!({"argv": ["cat"]})).await;
    // A flood, read in bulk off the async workers: the metrics count it.
    let flood = server
        .spawn(json!({"argv": ["sh", "-c", "stty raw -echo; head -c 4000000 /dev/zero"]}))
        .await;
    let path = format!("/v1/sessions/{}", flood["id"].as_str().unwrap());
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, info) = server.http("GET", &path, Some(&server.token), None).await;
        if serde_json::from_str::<Value>(&info).is_ok_and(|v| v["state"] == "stopped") {
            break;
        }
        assert!(Instant::now() < deadline, "the flood never ended: {info}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (status, body) = server
        .http("GET", "/metrics", Some(&server.token), None)
        .await;
    assert_eq!(status, 200);
    let mut samples = 0;
    for line in body.lines() {
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        let (name, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("bad line {line}"));
        assert!(name.starts_with("corral_"), "{line}");
        value
            .parse::<f64>()
            .unwrap_or_else(|_| panic!("bad value in {line}"));
        samples += 1;
    }
    assert!(samples > 10);
    assert!(
        body.contains("corral_sessions{state=\"running\"} 1"),
        "{body}"
    );
    let bulk_bytes: u64 = body
        .lines()
        .find_map(|l| l.strip_prefix("corral_bulk_reading_total{kind=\"bytes\"} "))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no bulk reading counter in {body}"));
    assert!(bulk_bytes >= 1_000_000, "{bulk_bytes} bytes read in bulk");
    assert!(body.trim_end().ends_with("# EOF"));
}

#[tokio::test]
async fn hooks_update_attention_and_agent_session_id() {
    let server = Server::start();
    let info = server
        .spawn(json!({"argv": ["cat"], "name": "agent"}))
        .await;
    let id = info["id"].as_str().unwrap();
    let mut ws = server.ws().await;
    let (channel, _) = subscribe(&mut ws, id, None).await;
    let start = json!({"hook_event_name": "SessionStart", "session_id": "claude-1", "cwd": "/tmp"});
    assert_eq!(
        server
            .http(
                "POST",
                &format!("/v1/sessions/{id}/events"),
                Some(&server.token),
                Some(&start)
            )
            .await
            .0,
        202
    );
    loop {
        if let Frame::Json(v) = ws.next().await
            && v["type"] == "event"
            && v["event"]["kind"]["kind"] == "hook"
        {
            assert_eq!(v["channel"].as_u64(), Some(channel));
            assert_eq!(v["event"]["kind"]["name"], "SessionStart");
            break;
        }
    }
    assert_eq!(server.session(id).await["agent_session_id"], "claude-1");
    let bad = server
        .http(
            "POST",
            &format!("/v1/sessions/{id}/events"),
            Some(&server.token),
            Some(&json!({"x": 1})),
        )
        .await;
    assert_eq!(bad.0, 400);
    assert!(bad.1.contains("hook_event_name"));
}

#[tokio::test]
async fn no_token_ever_reaches_the_logs() {
    let log_dir = tempfile::tempdir().unwrap();
    let log = log_dir.path().join("serve.log");
    let mut server = Server::start_logging_to(&log);
    let info = server.spawn(json!({"argv": ["cat"], "name": "t"})).await;
    let id = info["id"].as_str().unwrap().to_string();
    let issued = server.scoped_token("t", "write").await;
    let mut ws = server.ws_with(Some(&issued), &[]).await.unwrap();
    ws.call(json!({"type": "subscribe", "session": id})).await;
    ws.send(json!({"type": "input", "session": id, "data": "hello\n"}))
        .await;
    assert_eq!(
        server
            .http(
                "GET",
                "/v1/sessions",
                Some("corral_bad_0123456789abcdef0123456789abcdef"),
                None
            )
            .await
            .0,
        401
    );
    let pid = info["pid"].as_i64().unwrap();
    let env = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
    let hook = env
        .split(|&c| c == 0)
        .find_map(|kv| kv.strip_prefix(b"CORRAL_HOOK_TOKEN="))
        .map(|v| String::from_utf8_lossy(v).to_string())
        .unwrap();
    let ev = json!({"hook_event_name": "Stop"});
    server
        .http(
            "POST",
            &format!("/v1/sessions/{id}/events"),
            Some(&hook),
            Some(&ev),
        )
        .await;
    drop(ws);
    let (code, _) = server.terminate(Duration::from_secs(10));
    assert_eq!(code, Some(0));
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.lines().count() > 5, "trace logging produced output");
    assert!(!text.contains('\u{1b}'), "colour codes in a log file");
    for secret in [&server.token, &issued, &hook] {
        // The secret half is what matters; the id prefix may appear.
        let tail = &secret[secret.len() - 32..];
        assert!(!text.contains(tail), "a token leaked into the log");
    }
}

#[tokio::test]
async fn ack_window_paces_output_and_acks_release_more() {
    let server = Server::start();
    let info = server
        .spawn(json!({
            "argv": ["sh", "-c", "stty raw -echo; head -c1 >/dev/null; head -c 4000000 /dev/zero; exec sleep 1000"],
            "ring_capacity": 8 << 20,
        }))
        .await;
    let id = info["id"].as_str().unwrap().to_string();
    let mut ws = server.ws().await;
    let window = 100_000u64;
    ws.call(json!({"type": "hello", "protocol": 1, "window": window}))
        .await;
    let (channel, _) = subscribe(&mut ws, &id, Some(0)).await;
    wait_for_comm(&id, "head").await;
    ws.send(json!({"type": "input", "session": id, "data": "g"}))
        .await;
    // Without acks, the server stops at exactly one window past the last ack (0): a client
    // whose buffer is the window never gets more.
    let mut received = 0u64;
    let quiet = loop {
        match tokio::time::timeout(Duration::from_millis(500), ws.ws.next()).await {
            Err(_) => break true,
            Ok(Some(Ok(Message::Binary(b)))) if b[0] == OUTPUT => received += b.len() as u64 - 13,
            Ok(_) => {}
        }
    };
    assert!(quiet);
    assert!(
        received == window,
        "received {received} with a {window} window"
    );
    // Acks release the rest, exactly and in order.
    let mut next = received;
    while next < 4_000_000 {
        ws.send(json!({"type": "ack", "session": id, "offset": next}))
            .await;
        match ws.next().await {
            Frame::Bin(OUTPUT, ch, offset, bytes) if ch as u64 == channel => {
                assert_eq!(offset, next);
                next += bytes.len() as u64;
            }
            Frame::Json(v) if v["type"] == "lagged" => panic!("lag within retention: {v}"),
            _ => {}
        }
    }
    assert_eq!(next, 4_000_000);
}

#[tokio::test]
async fn a_hundred_connections_opened_at_once_all_work() {
    let server = Server::start();
    let opens = (0..100).map(|_| server.ws());
    let mut conns = futures::future::join_all(opens).await;
    let pings = conns.iter_mut().map(|ws| ws.call(json!({"type": "ping"})));
    for pong in futures::future::join_all(pings).await {
        assert_eq!(pong["type"], "pong");
    }
}

/// The same bad request over HTTP and over the WebSocket gets the same error code (one mapping
/// in corral-server's error module), and the HTTP status is the one that code maps to; nothing
/// is created and the server keeps serving.
#[tokio::test]
async fn the_same_bad_request_gets_the_same_error_both_ways() {
    let server = Server::start();
    let mut ws = server.ws().await;
    let http_status = |code: &str| match code {
        "bad_request" => 400,
        "unauthorized" => 401,
        "forbidden" => 403,
        "not_found" => 404,
        "conflict" => 409,
        "unavailable" => 503,
        other => panic!("unexpected code {other}"),
    };
    server
        .spawn(json!({"argv": ["sleep", "30"], "name": "taken"}))
        .await;
    // (HTTP method, path, body; the WebSocket request doing the same)
    let cases = [
        (
            "POST",
            "/v1/sessions".to_string(),
            Some(json!({"argv": []})),
            json!({"type": "spawn", "spec": {"argv": []}}),
        ),
        (
            "POST",
            "/v1/sessions".to_string(),
            Some(json!({"argv": ["true"], "cwd": "/no/such/dir"})),
            json!({"type": "spawn", "spec": {"argv": ["true"], "cwd": "/no/such/dir"}}),
        ),
        (
            "POST",
            "/v1/sessions".to_string(),
            Some(json!({"argv": ["true"], "name": "taken"})),
            json!({"type": "spawn", "spec": {"argv": ["true"], "name": "taken"}}),
        ),
        (
            "POST",
            "/v1/sessions/nope/stop".to_string(),
            None,
            json!({"type": "stop", "session": "nope"}),
        ),
        (
            "DELETE",
            "/v1/sessions/nope".to_string(),
            None,
            json!({"type": "remove", "session": "nope"}),
        ),
    ];
    for (method, path, body, request) in cases {
        let (status, text) = server
            .http(method, &path, Some(&server.token), body.as_ref())
            .await;
        let http: Value = serde_json::from_str(&text).unwrap();
        let reply = ws.call(request.clone()).await;
        assert_eq!(reply["type"], "error", "{request}: {reply}");
        assert_eq!(
            http["code"], reply["code"],
            "{method} {path}: {http} vs {reply}"
        );
        assert_eq!(
            status,
            http_status(reply["code"].as_str().unwrap()),
            "{method} {path}"
        );
        assert!(!http["error"].as_str().unwrap().is_empty());
        // And an RFC 9457 problem's fields, as agentapi's clients read them.
        assert_eq!(http["detail"], http["error"], "{http}");
        assert_eq!(http["status"], status, "{http}");
        assert!(!http["title"].as_str().unwrap().is_empty(), "{http}");
    }
    // Nothing was created by the refused spawns.
    let list = ws.call(json!({"type": "list"})).await;
    assert_eq!(list["sessions"].as_array().unwrap().len(), 1, "{list}");
    let (status, _) = server.http("GET", "/v1/health", None, None).await;
    assert_eq!(status, 200);
}

/// A flow-controlled reader that fell behind the retained output gets `lagged` and then keeps
/// receiving without acking the skipped range (skipped bytes count as acknowledged).
#[tokio::test]
async fn a_windowed_reader_keeps_going_after_a_lag_without_acking_the_gap() {
    let server = Server::start();
    let info = server
        .spawn(json!({
            "argv": ["sh", "-c", "stty raw -echo; head -c1 >/dev/null; head -c 4000000 /dev/zero; exec sleep 1000"],
            "ring_capacity": 256 * 1024,
        }))
        .await;
    let id = info["id"].as_str().unwrap().to_string();
    let mut ws = server.ws().await;
    let window = 100_000u64;
    ws.call(json!({"type": "hello", "protocol": 1, "window": window}))
        .await;
    let (channel, _) = subscribe(&mut ws, &id, Some(0)).await;
    wait_for_comm(&id, "head").await;
    ws.send(json!({"type": "input", "session": id, "data": "g"}))
        .await;
    // Ack only what arrives, never a skipped range; pause once (so the 256 KiB ring laps the
    // reader) until the whole 4 MB are out. The reader must then get `lagged` and go on to the
    // end without stalling.
    let mut next = 0u64;
    let mut lagged = false;
    let mut paused = false;
    while next < 4_000_000 {
        if !paused && next > 0 {
            paused = true;
            let deadline = Instant::now() + Duration::from_secs(20);
            while server
                .client()
                .session(&id)
                .await
                .unwrap()
                .info
                .output_offset
                < 4_000_000
            {
                assert!(Instant::now() < deadline, "the flood did not finish");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        match tokio::time::timeout(Duration::from_secs(5), ws.next()).await {
            Err(_) => panic!("stalled at {next} (lagged: {lagged})"),
            Ok(Frame::Json(v)) if v["type"] == "lagged" => {
                assert_eq!(v["from"].as_u64(), Some(next), "{v}");
                next = v["to"].as_u64().unwrap();
                lagged = true;
            }
            Ok(Frame::Bin(OUTPUT, ch, offset, bytes)) if ch as u64 == channel => {
                assert_eq!(offset, next);
                next += bytes.len() as u64;
                ws.send(json!({"type": "ack", "session": id, "offset": next}))
                    .await;
            }
            Ok(_) => {}
        }
    }
    assert!(lagged, "the ring must have lapped the reader");
    assert_eq!(next, 4_000_000);
}

/// `tree` shows the whole live tree, read from the things themselves: the gateway's listeners
/// and every connection (endpoint, peer, sessions, bytes, queue), each session's process with
/// the OS's state, its actors, input queue, log writer and subscribers; a session whose process
/// exited never shows running.
#[tokio::test]
async fn tree_shows_connections_and_each_sessions_parts_from_the_live_objects() {
    let server = Server::start();
    let live = server
        .spawn(json!({"argv": ["sh", "-c", "echo hello; exec sleep 600"], "name": "live"}))
        .await;
    let ended = server
        .spawn(json!({"argv": ["true"], "name": "ended"}))
        .await;
    let live_id = live["id"].as_str().unwrap();
    let mut viewer = server.ws().await;
    subscribe(&mut viewer, live_id, Some(0)).await;
    let _ttyd = server.ttyd_open(live_id).await; // kept open: it is in the tree
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut ws = server.ws().await;
    let tree = loop {
        let t = ws.call(json!({"type": "tree"})).await["tree"].clone();
        let session = |name: &str| {
            t.pointer("/children/1/children")
                .and_then(|c| c.as_array())
                .and_then(|c| c.iter().find(|n| n["id"] == "sessions"))
                .and_then(|s| s["children"].as_array().cloned())
                .and_then(|c| c.into_iter().find(|n| n["detail"]["name"] == name))
        };
        let ended_state = session("ended").map(|n| n["detail"]["state"].clone());
        // Both viewers subscribed (the ttyd page's comes after its history is rebuilt).
        let viewers = session("live")
            .and_then(|n| n["children"].as_array().cloned())
            .and_then(|c| c.into_iter().find(|n| n["id"] == "subscribers"))
            .map(|n| n["detail"]["viewers"].clone());
        if ended_state == Some(json!("stopped")) && viewers == Some(json!(2)) {
            break t;
        }
        assert!(Instant::now() < deadline, "{t}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(tree["id"], "server");
    // Every node has every field of docs/protocol.md's schema, null or empty where it has no
    // value (`mailbox_bound` and `detail` were left out: a script reading them failed).
    fn every_field(n: &Value, path: &str) {
        for field in [
            "id",
            "actor",
            "kind",
            "status",
            "restarts_in_window",
            "restarts_total",
            "last_exit",
            "uptime_ms",
            "mailbox_depth",
            "mailbox_bound",
            "mailbox_full",
            "lag_count",
            "detail",
            "children",
        ] {
            assert!(
                n.get(field).is_some(),
                "{path}/{} has no {field}: {n}",
                n["id"]
            );
        }
        assert!(n["detail"].is_object(), "{n}");
        for c in n["children"].as_array().unwrap() {
            every_field(c, &format!("{path}/{}", n["id"]));
        }
    }
    every_field(&tree, "");
    let gateway = &tree["children"][0];
    assert_eq!(gateway["id"], "gateway");
    let kids = gateway["children"].as_array().unwrap();
    assert!(
        kids.iter()
            .any(|n| n["kind"] == "listener" && n["id"] == "tcp")
    );
    let conns: Vec<&Value> = kids
        .iter()
        .filter(|n| n["id"].as_str().unwrap().starts_with("connection-"))
        .collect();
    assert_eq!(conns.len(), 3, "{gateway}");
    let native_viewer = conns
        .iter()
        .find(|n| n["detail"]["sessions"] == json!(["live"]) && n["detail"]["endpoint"] == "native")
        .expect("the native viewer");
    assert!(
        native_viewer["detail"]["peer"]
            .as_str()
            .unwrap()
            .starts_with("127.0.0.1:")
    );
    assert!(native_viewer["detail"]["bytes_out"].as_u64().unwrap() >= 6);
    assert_eq!(native_viewer["mailbox_bound"], 1);
    assert!(
        conns.iter().any(
            |n| n["detail"]["endpoint"] == "ttyd" && n["detail"]["sessions"] == json!(["live"])
        )
    );
    let sessions = tree["children"][1]["children"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["id"] == "sessions")
        .unwrap()["children"]
        .as_array()
        .unwrap()
        .clone();
    let node = |name: &str| {
        sessions
            .iter()
            .find(|n| n["detail"]["name"] == name)
            .unwrap()
            .clone()
    };
    let live_node = node("live");
    assert_eq!(live_node["detail"]["state"], "running");
    let parts = live_node["children"].as_array().unwrap();
    let process = parts.iter().find(|n| n["kind"] == "process").unwrap();
    assert_eq!(process["detail"]["pid"], live["pid"]);
    assert_eq!(process["detail"]["os_state"], "sleeping", "{process}");
    let holder = parts.iter().find(|n| n["id"] == "holder").unwrap();
    assert_eq!(holder["detail"]["pid"], live["holder_pid"], "{holder}");
    // The holder as the OS sees it too: waiting in poll(2), started when it started.
    assert_eq!(holder["detail"]["os_state"], "sleeping", "{holder}");
    assert!(holder["uptime_ms"].is_u64(), "{holder}");
    // Each actor by what it is: one output reader, one link to the holder, the screen; each
    // with its age.
    for role in ["output reader", "holder link", "screen"] {
        let found: Vec<_> = parts.iter().filter(|n| n["id"] == role).collect();
        assert_eq!(found.len(), 1, "{role}: {parts:?}");
        assert_eq!(found[0]["status"], "running", "{role}");
        assert!(found[0]["uptime_ms"].is_u64(), "{role}: {:?}", found[0]);
    }
    // In one order every time (ractor lists an actor's children in none).
    let ids: Vec<&str> = parts.iter().filter_map(|n| n["id"].as_str()).collect();
    assert_eq!(
        ids,
        [
            live["pid"].to_string().as_str(),
            "holder",
            "screen",
            "holder link",
            "output reader",
            "input writer",
            "log writer",
            "subscribers"
        ],
        "{parts:?}"
    );
    let input = parts.iter().find(|n| n["id"] == "input writer").unwrap();
    assert_eq!(input["mailbox_bound"], 1 << 20);
    let subs = parts.iter().find(|n| n["id"] == "subscribers").unwrap();
    assert_eq!(subs["detail"]["viewers"], 2);
    assert!(parts.iter().any(|n| n["id"] == "log writer"));
    // The ended session: its process is exited, never running.
    let ended_node = node("ended");
    let process = ended_node["children"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["kind"] == "process")
        .unwrap()
        .clone();
    assert_eq!(process["detail"]["os_state"], "exited");
    assert_eq!(process["status"], "stopped");
    assert!(ended["id"].is_string());
}

#[tokio::test]
async fn a_spawn_whose_client_left_at_once_still_lands_in_the_registry() {
    // A client that sends `spawn` and goes away before the answer: the request runs to its
    // end (dropped halfway, the session ran on, out of the registry: seen by no `ps`; or, over
    // the WebSocket, it was never started at all).
    let server = Server::start();
    for i in 0..20 {
        let mut ws = server.ws().await;
        ws.send(json!({"type": "spawn", "spec": {"argv": ["sleep", "1000"], "name": format!("left-{i}")}}))
            .await;
        drop(ws);
    }
    // Over HTTP, the client gives up a moment after sending (hyper then drops the handler).
    for i in 0..20 {
        let body = json!({"argv": ["sleep", "1000"], "name": format!("gave-up-{i}")});
        let call = server.http("POST", "/v1/sessions", Some(&server.token), Some(&body));
        let wait = Duration::from_micros(fastrand::u64(200..3000));
        if tokio::time::timeout(wait, call).await.is_ok() {
            eprintln!("spawn {i} answered within {wait:?}");
        }
    }
    // Every WebSocket spawn lands (the server read each before the close); an HTTP one lands
    // if its request reached the server. Either way no program runs outside the registry.
    let sleeps = || {
        corral_actors::process::procfs::all()
            .into_iter()
            .filter(|p| {
                p.comm == "sleep"
                    && corral_actors::process::procfs::environ_value(p.pid, "CORRAL_DATA_DIR")
                        .is_some_and(|d| d == server.dir.path().display().to_string())
            })
            .count()
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, body) = server
            .http("GET", "/v1/sessions", Some(&server.token), None)
            .await;
        assert_eq!(status, 200);
        let list: Vec<Value> = serde_json::from_str(&body).unwrap();
        let running = |prefix: &str| {
            list.iter()
                .filter(|s| s["state"] == "running")
                .filter(|s| s["name"].as_str().unwrap_or("").starts_with(prefix))
                .count()
        };
        let (ws, http, outside) = (running("left-"), running("gave-up-"), sleeps());
        if ws == 20 && outside == ws + http {
            eprintln!("{http} of 20 HTTP spawns reached the server");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "WebSocket spawns listed {ws} of 20; HTTP ones {http}; sleeps running {outside}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The resize policy ("the last viewer who typed sets the size") forgets a typist who left:
/// when the phone that typed closes its connection, or unsubscribes, the size goes back to the
/// viewer that resized last — a desktop page left open does not keep the phone's size until
/// someone types. A `corral send` (a connection that types and leaves) does the same.
#[tokio::test]
async fn a_typist_who_leaves_gives_the_size_back_to_the_remaining_viewer() {
    let server = Server::start();
    let info = server.spawn(json!({"name": "vim", "argv": ["cat"]})).await;
    let id = info["id"].as_str().unwrap().to_string();
    let size = async || {
        let v = server.session(&id).await;
        (
            v["size"]["rows"].as_u64().unwrap(),
            v["size"]["cols"].as_u64().unwrap(),
        )
    };
    let until = async |want: (u64, u64), what: &str| {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while size().await != want {
            assert!(
                std::time::Instant::now() < deadline,
                "{what}: {:?}",
                size().await
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    let resize =
        |rows: u64, cols: u64| json!({"type": "resize", "session": id, "rows": rows, "cols": cols});
    let keys = json!({"type": "input", "session": id, "data": "x"});
    // Before anyone typed, the latest resize wins; a viewer that leaves gives the size back to
    // the one that stays (a desktop that looked in on a phone's session left it at the
    // desktop's width on the phone).
    let mut watching = server.ws().await;
    assert_eq!(watching.call(resize(37, 52)).await["type"], "ok");
    until((37, 52), "the watching phone's size").await;
    let mut looking = server.ws().await;
    assert_eq!(looking.call(resize(46, 164)).await["type"], "ok");
    until((46, 164), "the latest resize").await;
    drop(looking);
    until(
        (37, 52),
        "the desktop that looked in left: the phone's size",
    )
    .await;
    drop(watching);
    let mut desktop = server.ws().await;
    assert_eq!(desktop.call(resize(40, 120)).await["type"], "ok");
    until((40, 120), "the first viewer's size").await;
    // The phone types: its size wins, and the desktop's resizes wait.
    let mut phone = server.ws().await;
    assert_eq!(phone.call(resize(30, 50)).await["type"], "ok");
    phone.send(keys.clone()).await;
    until((30, 50), "the typist's size").await;
    assert_eq!(desktop.call(resize(41, 121)).await["type"], "ok");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        size().await,
        (30, 50),
        "the typist keeps its size while it stays"
    );
    drop(phone);
    until((41, 121), "the phone left: the desktop's latest size").await;
    // A typist that unsubscribes (a page going back to its list) leaves it as well.
    let mut tablet = server.ws().await;
    let r = tablet
        .call(json!({"type": "subscribe", "session": id}))
        .await;
    assert_eq!(r["type"], "subscribed", "{r}");
    assert_eq!(tablet.call(resize(20, 60)).await["type"], "ok");
    tablet.send(keys.clone()).await;
    until((20, 60), "the tablet typed").await;
    let r = tablet
        .call(json!({"type": "unsubscribe", "session": id}))
        .await;
    assert_eq!(r["type"], "ok", "{r}");
    until((41, 121), "the tablet unsubscribed").await;
    // A connection that types and leaves (as `corral send`) takes nothing with it.
    let mut send = server.ws().await;
    send.send(keys.clone()).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    drop(send);
    assert_eq!(desktop.call(resize(42, 122)).await["type"], "ok");
    until(
        (42, 122),
        "after a send, the remaining viewer's resizes apply again",
    )
    .await;
    // Nor does it take the size from the one typing at a terminal: the desktop types, a
    // watcher resizes later, a script sends and leaves — the desktop's size stays.
    // (Each step waits for the server to have taken the last: a reply on the same connection,
    // or the connection gone from the server's count.)
    let clients = async || {
        let (_, body) = server
            .http("GET", "/metrics", Some(&server.token), None)
            .await;
        body.lines()
            .find_map(|l| l.strip_prefix("corral_clients "))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .expect("the clients gauge")
    };
    desktop.send(keys.clone()).await;
    assert_eq!(desktop.call(json!({"type": "ping"})).await["type"], "pong");
    let mut watcher = server.ws().await;
    assert_eq!(watcher.call(resize(22, 93)).await["type"], "ok");
    let before = clients().await;
    let mut script = server.ws().await;
    script.send(keys.clone()).await;
    assert_eq!(script.call(json!({"type": "ping"})).await["type"], "pong");
    drop(script);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while clients().await != before {
        assert!(
            std::time::Instant::now() < deadline,
            "the script's connection stayed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        size().await,
        (42, 122),
        "a script's send took the size from the typist"
    );
}

/// A restarted process starts from plain terminal modes for every viewer: its `spawned` event
/// comes exactly between the two processes' output (so a live viewer resets its terminal
/// there), and the server's screen snapshot no longer carries the last process's alternate
/// screen, mouse reporting and hidden cursor.
#[tokio::test]
async fn a_restarted_process_starts_from_plain_modes() {
    let server = Server::start();
    let dir = tempfile::tempdir().unwrap();
    let program = "if [ -e again ]; then echo second-run; exec sleep 600; fi; touch again; \
                   printf 'first-run\\033[?1049h\\033[?1000h\\033[?25lin-the-tui'; sleep 0.3; exit 1";
    let info = server
        .spawn(json!({"name": "tui", "argv": ["sh", "-c", program], "restart": "on_failure", "cwd": dir.path()}))
        .await;
    let id = info["id"].as_str().unwrap().to_string();
    let mut ws = server.ws().await;
    let r = ws
        .call(json!({"type": "subscribe", "session": id, "from": 0}))
        .await;
    assert_eq!(r["type"], "subscribed", "{r}");
    let mut seen: Vec<u8> = Vec::new();
    let mut spawned_at = None;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !String::from_utf8_lossy(&seen).contains("second-run") {
        assert!(
            std::time::Instant::now() < deadline,
            "no second run: {:?}",
            String::from_utf8_lossy(&seen)
        );
        match ws.next().await {
            Frame::Bin(1, _, offset, bytes) => {
                assert_eq!(offset, seen.len() as u64);
                seen.extend_from_slice(&bytes);
            }
            Frame::Json(v) if v["type"] == "event" && v["event"]["kind"]["kind"] == "spawned" => {
                spawned_at = Some((seen.len(), v["event"]["offset"].as_u64().unwrap()));
            }
            _ => {}
        }
    }
    let (delivered, offset) = spawned_at.expect("the restart's spawned event");
    let text = String::from_utf8_lossy(&seen).to_string();
    let boundary = text.find("second-run").unwrap();
    assert_eq!(
        delivered as u64, offset,
        "the event comes where it happened"
    );
    assert_eq!(
        delivered, boundary,
        "between the two processes' output: {text:?}"
    );
    // The screen a new viewer gets.
    let mut fresh = server.ws().await;
    fresh.send(json!({"type": "snapshot", "session": id})).await;
    let snap = loop {
        if let Frame::Bin(kind, _, _, bytes) = fresh.next().await
            && kind != 1
        {
            break String::from_utf8_lossy(&bytes).to_string();
        }
    };
    assert!(snap.contains("second-run"), "{snap:?}");
    for mode in ["\u{1b}[?1049h", "\u{1b}[?1000h", "\u{1b}[?25l"] {
        assert!(
            !snap.contains(mode),
            "the snapshot keeps {mode:?}: {snap:?}"
        );
    }
}

/// ttyd clients show their token in their first frame, so the upgrade lets them in without
/// one; those that never show it must not hold connection places for good (1,024 silent ones
/// locked every client out). At most 64 wait at once (the next is a 503), and each is closed
/// when 10 s pass without its token (1000 with the reason: ttyd's page reconnects at once on
/// any other code); a client that shows one is unaffected.
#[tokio::test]
async fn ttyd_clients_that_never_authenticate_are_bounded_and_closed() {
    let server = Server::start();
    let info = server
        .spawn(json!({"name": "quiet", "argv": ["sleep", "600"]}))
        .await;
    let id = info["id"].as_str().unwrap().to_string();
    let t = std::time::Instant::now();
    let mut silent = Vec::new();
    for _ in 0..64 {
        silent.push(server.ttyd(&id).await);
    }
    let refused = server
        .client()
        .socket(
            &format!("/ttyd/{id}/ws"),
            None,
            &[("sec-websocket-protocol", "tty")],
        )
        .await;
    let err = refused
        .err()
        .expect("a 65th silent client is refused")
        .to_string();
    assert!(err.contains("503"), "{err}");
    // The native protocol (token at the upgrade) is not affected.
    let mut ws = server.ws().await;
    assert_eq!(ws.call(json!({"type": "ping"})).await["type"], "pong");
    for mut s in silent {
        let close = tokio::time::timeout(Duration::from_secs(20), async {
            loop {
                match s.next().await {
                    Some(Ok(Message::Close(c))) => {
                        return c.map(|c| (u16::from(c.code), c.reason.to_string()));
                    }
                    Some(Ok(_)) => {}
                    _ => return None,
                }
            }
        })
        .await
        .expect("closed in time");
        assert_eq!(close, Some((1000, "no AuthToken in time".into())));
    }
    assert!(
        t.elapsed() >= Duration::from_secs(9),
        "closed before its time"
    );
    // Places are free again: a ttyd client that authenticates gets in.
    let mut ttyd = server.ttyd_open(&id).await;
    match tokio::time::timeout(Duration::from_secs(10), ttyd.next()).await {
        Ok(Some(Ok(Message::Binary(b)))) => assert_eq!(b[0], b'1'),
        other => panic!("{other:?}"),
    }
}

/// A client that opens connections and sends nothing, or headers a byte at a time, used to
/// hold each connection for good (20,000 of them exhausted the server's file descriptors).
/// Headers must now arrive within 10 s, and an idle keep-alive connection is closed after as
/// long; a client that sends its request in time is served.
#[tokio::test]
async fn slow_or_idle_http_connections_are_closed() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let server = Server::start();
    let addr = server.url.trim_start_matches("http://").to_string();
    let t = std::time::Instant::now();
    // Silent, and slow headers.
    let mut silent = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let mut slow = tokio::net::TcpStream::connect(&addr).await.unwrap();
    slow.write_all(b"GET /v1/health HTTP/1.1\r\n")
        .await
        .unwrap();
    // A served request, then the connection kept alive and idle.
    let mut idle = tokio::net::TcpStream::connect(&addr).await.unwrap();
    idle.write_all(format!("GET /v1/health HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut buf = vec![0u8; 4096];
    let n = idle.read(&mut buf).await.unwrap();
    assert!(
        buf[..n].starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&buf[..n])
    );
    let mut feed = tokio::time::interval(Duration::from_secs(1));
    for (name, conn) in [
        ("silent", &mut silent),
        ("slow", &mut slow),
        ("idle", &mut idle),
    ] {
        let closed = tokio::time::timeout(Duration::from_secs(30), async {
            loop {
                tokio::select! {
                    read = conn.read(&mut buf) => match read {
                        Ok(0) | Err(_) => return,
                        Ok(_) => {}
                    },
                    // The slow client goes on sending a header byte a second.
                    _ = feed.tick(), if name == "slow" => {
                        if conn.write_all(b"X").await.is_err() {
                            return;
                        }
                    }
                }
            }
        })
        .await;
        assert!(closed.is_ok(), "the {name} connection is still open");
    }
    assert!(
        t.elapsed() >= Duration::from_secs(9),
        "closed before its time"
    );
    // The server still answers.
    let (status, _) = server.http("GET", "/v1/health", None, None).await;
    assert_eq!(status, 200);
}

/// The login cookie is HttpOnly and SameSite=Strict always, and `Secure` when the page was
/// served over HTTPS (a TLS proxy in front: its login post's Origin says so), so a browser never
/// sends it over plain HTTP then.
#[tokio::test]
async fn the_login_cookie_is_secure_behind_https() {
    let server = Server::start();
    let body = json!({"token": server.token}).to_string().into_bytes();
    let cookie = async |origin: &str| {
        let out = server
            .client()
            .send_with(
                hyper::Method::POST,
                "/v1/login",
                None,
                &[("content-type", "application/json"), ("origin", origin)],
                Some(body.clone()),
            )
            .await
            .unwrap();
        assert_eq!(out.response.status(), 204);
        out.response.headers()["set-cookie"]
            .to_str()
            .unwrap()
            .to_string()
    };
    let plain = cookie(&server.url).await;
    assert!(
        plain.contains("HttpOnly") && plain.contains("SameSite=Strict"),
        "{plain}"
    );
    assert!(!plain.contains("Secure"), "{plain}");
    let behind_tls = cookie("https://corral.example.org").await;
    assert!(
        behind_tls.contains("HttpOnly") && behind_tls.ends_with("; Secure"),
        "{behind_tls}"
    );
}

/// A page logged in by cookie (HttpOnly: its scripts cannot read the token) opens a ttyd
/// WebSocket with an empty AuthToken: the cookie its upgrade carries is its token. Without a
/// cookie, an empty AuthToken is still refused.
#[tokio::test]
async fn a_ttyd_client_logged_in_by_cookie_needs_no_auth_token() {
    let server = Server::start();
    let info = server
        .spawn(json!({"name": "cookie-ttyd", "argv": ["sleep", "600"]}))
        .await;
    let id = info["id"].as_str().unwrap().to_string();
    let cookie = format!("corral_token={}", server.token);
    let first = json!({"AuthToken": "", "columns": 80, "rows": 24}).to_string();
    let mut with = server
        .client()
        .socket(
            &format!("/ttyd/{id}/ws"),
            None,
            &[("sec-websocket-protocol", "tty"), ("cookie", &cookie)],
        )
        .await
        .unwrap();
    with.send(Message::Text(first.clone().into()))
        .await
        .unwrap();
    match tokio::time::timeout(Duration::from_secs(10), with.next()).await {
        Ok(Some(Ok(Message::Binary(b)))) => assert_eq!(b[0], b'1'),
        other => panic!("{other:?}"),
    }
    // A logout (the page's: cookie and Origin) closes it, as it closes the page's own.
    let origin = server.url.clone();
    let out = server
        .client()
        .send_with(
            hyper::Method::POST,
            "/v1/logout",
            None,
            &[("cookie", &cookie), ("origin", &origin)],
            None,
        )
        .await
        .unwrap();
    assert_eq!(out.response.status(), 204);
    loop {
        match tokio::time::timeout(Duration::from_secs(10), with.next()).await {
            Ok(Some(Ok(Message::Close(Some(c))))) => {
                assert_eq!((u16::from(c.code), c.reason.as_str()), (1000, "logged out"));
                break;
            }
            Ok(Some(Ok(_))) => {}
            other => panic!("{other:?}"),
        }
    }
    let mut without = server.ttyd(&id).await;
    without.send(Message::Text(first.into())).await.unwrap();
    loop {
        match tokio::time::timeout(Duration::from_secs(10), without.next()).await {
            Ok(Some(Ok(Message::Close(Some(c))))) => {
                // Not 1008: ttyd's page reconnected ~50 times a second on it, for ever.
                assert_eq!(
                    (u16::from(c.code), c.reason.as_str()),
                    (1000, "invalid or missing AuthToken")
                );
                break;
            }
            Ok(Some(Ok(_))) => {}
            other => panic!("{other:?}"),
        }
    }
}

/// A ttyd upgrade to a name no session has is let in as one to a real session is: before, it
/// answered 404 before any token, so a client without one could probe which names exist. The
/// first frame's answer is the same for both unless its token may see every session.
#[tokio::test]
async fn a_ttyd_upgrade_gives_away_no_session_names() {
    let server = Server::start();
    server
        .spawn(json!({"name": "real", "argv": ["sleep", "600"]}))
        .await;
    let read = server.scoped_token("real", "read").await;
    server
        .spawn(json!({"name": "elsewhere", "argv": ["sleep", "600"]}))
        .await;
    let other = server.scoped_token("elsewhere", "write").await;
    let revoked = server.scoped_token("real", "read").await;
    let (status, body) = server
        .http(
            "DELETE",
            &format!("/v1/tokens/{}", revoked.split('_').nth(1).unwrap()),
            Some(&server.token),
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let first = |token: &str| json!({"AuthToken": token, "columns": 80, "rows": 24}).to_string();
    // What a client with no token, a revoked one, or one for another session learns: the same
    // close, whether the name exists or not.
    for token in [
        "",
        "corral_nope_00000000000000000000000000000000",
        &revoked,
        &other,
    ] {
        for name in ["real", "no-such-name"] {
            let mut ttyd = server.ttyd(name).await;
            ttyd.send(Message::Text(first(token).into())).await.unwrap();
            let (_, close) = ttyd_read(&mut ttyd, Duration::from_secs(10)).await;
            assert_eq!(
                close,
                Some((1000, "invalid or missing AuthToken".to_string())),
                "{name} with {token:?}"
            );
        }
    }
    // A token for `real` reads it, and learns nothing of other names.
    let mut ttyd = server.ttyd("no-such-name").await;
    ttyd.send(Message::Text(first(&read).into())).await.unwrap();
    let (_, close) = ttyd_read(&mut ttyd, Duration::from_secs(10)).await;
    assert_eq!(
        close,
        Some((1000, "invalid or missing AuthToken".to_string()))
    );
    let mut ttyd = server.ttyd("real").await;
    ttyd.send(Message::Text(first(&read).into())).await.unwrap();
    match tokio::time::timeout(Duration::from_secs(10), ttyd.next()).await {
        Ok(Some(Ok(Message::Binary(b)))) => assert_eq!(b[0], b'1', "the title first"),
        other => panic!("{other:?}"),
    }
    // The admin token is told: in the first frame, and at the upgrade (404, as before).
    let mut ttyd = server.ttyd("no-such-name").await;
    ttyd.send(Message::Text(first(&server.token).into()))
        .await
        .unwrap();
    let (_, close) = ttyd_read(&mut ttyd, Duration::from_secs(10)).await;
    assert_eq!(close, Some((1000, "no such session".to_string())));
    let refused = server
        .client()
        .socket(
            "/ttyd/no-such-name/ws",
            Some(&server.token),
            &[("sec-websocket-protocol", "tty")],
        )
        .await;
    assert!(
        format!("{:?}", refused.err()).contains("404"),
        "an admin's upgrade to no session is refused at once"
    );
}

/// A request body that never comes and a client that never reads its response held their
/// connections for good (1,024 of either, with no token, locked every client out, and unread
/// responses took 500 MB): the body has 30 s (then 408), a write that makes no progress 60 s.
#[tokio::test]
async fn slow_bodies_and_readers_are_cut() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let server = Server::start();
    let addr = server.url.trim_start_matches("http://").to_string();
    let t = std::time::Instant::now();
    let body = async {
        let mut c = tokio::net::TcpStream::connect(&addr).await.unwrap();
        let head = format!(
            "POST /v1/login HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{"
        );
        c.write_all(head.as_bytes()).await.unwrap();
        let mut got = Vec::new();
        tokio::time::timeout(Duration::from_secs(45), c.read_to_end(&mut got))
            .await
            .expect("the slow body's connection is still open")
            .unwrap();
        let text = String::from_utf8_lossy(&got).to_string();
        assert!(text.starts_with("HTTP/1.1 408"), "{text}");
        assert!(text.contains("not received within 30 s"), "{text}");
        t.elapsed()
    };
    let info = server
        .spawn(json!({"name": "big", "argv": ["sh", "-c", "head -c 20000000 /dev/zero | tr '\\0' x; exec sleep 600"]}))
        .await;
    let id = info["id"].as_str().unwrap().to_string();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while server.session(&id).await["output_offset"].as_u64().unwrap() < 20_000_000 {
        assert!(
            std::time::Instant::now() < deadline,
            "the output never came"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let reader = async {
        // A recording far larger than the socket buffers, never read.
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        let mut c = socket.connect(addr.parse().unwrap()).await.unwrap();
        let req = format!(
            "GET /v1/sessions/{id}/export HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {}\r\n\r\n",
            server.token
        );
        c.write_all(req.as_bytes()).await.unwrap();
        tokio::time::sleep(Duration::from_secs(70)).await;
        // Cut by then: what is left to read ends (reset or end of file) well short of it all.
        let mut got = Vec::new();
        let mut buf = vec![0u8; 1 << 16];
        let read = tokio::time::timeout(Duration::from_secs(20), async {
            loop {
                match c.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => got.extend_from_slice(&buf[..n]),
                }
            }
        })
        .await;
        assert!(
            read.is_ok(),
            "the unread response's connection is still open"
        );
        assert!(got.len() < 20_000_000, "{} bytes arrived", got.len());
    };
    let (elapsed, ()) = tokio::join!(body, reader);
    assert!(elapsed >= Duration::from_secs(29), "{elapsed:?}");
    let (status, _) = server.http("GET", "/v1/health", None, None).await;
    assert_eq!(status, 200);
}

/// Event streams are bounded (128 open at once, then 503): each holds an HTTP connection, and
/// one token's thousand streams locked every client out.
#[tokio::test]
async fn event_streams_are_bounded() {
    let server = Server::start();
    server
        .spawn(json!({"name": "watched", "argv": ["sleep", "600"]}))
        .await;
    let client = server.client();
    let mut open = Vec::new();
    for _ in 0..128 {
        let s = client
            .send(
                hyper::Method::GET,
                "/agentapi/watched/events",
                Some(&server.token),
                None,
            )
            .await
            .unwrap();
        assert_eq!(s.response.status(), 200);
        open.push(s);
    }
    let (status, body) = server
        .http("GET", "/agentapi/watched/events", Some(&server.token), None)
        .await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("too many event streams"), "{body}");
    drop(open);
    // Given back as they end.
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let s = client
            .send(
                hyper::Method::GET,
                "/agentapi/watched/events",
                Some(&server.token),
                None,
            )
            .await
            .unwrap();
        if s.response.status() == 200 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "places not given back"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A TUI that redraws without a pause for more than its ring's worth (1 MiB), watched by
/// nobody: a viewer who joins later gets the exact screen — the alternate screen, mouse
/// reporting and the header drawn once at the start — not one rebuilt from the middle of an
/// escape sequence (the screen followed only idle output, and a steady stream lapped it).
#[tokio::test]
async fn a_late_viewer_of_a_busy_tui_gets_its_exact_screen() {
    let server = Server::start();
    let script = r#"
import sys, time
out = sys.stdout.buffer
out.write(b"\x1b[?1049h\x1b[?1000h\x1b[1;1HSTATIC HEADER"); out.flush()
i = 0
end = time.time() + 1.6
while time.time() < end:
    chunk = b"".join(b"\x1b[10;5Hcounter %08d\x1b[11;5H\x1b[3%dmcolour\x1b[0m" % (i + k, (i + k) % 8) for k in range(300))
    i += 300
    out.write(chunk); out.flush()
    time.sleep(0.01)
out.write(b"\x1b[12;5HDONE %d" % i); out.flush()
time.sleep(600)
"#;
    let info = server
        .spawn(json!({"name": "busy", "argv": ["python3", "-c", script]}))
        .await;
    let id = info["id"].as_str().unwrap().to_string();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let s = server.session(&id).await;
        if s["output_offset"].as_u64().unwrap() > 1 << 20
            && log_bytes(server.dir.path(), &id)
                .windows(4)
                .any(|w| w == b"DONE")
        {
            break;
        }
        assert!(Instant::now() < deadline, "{s}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut ws = server.ws().await;
    let r = ws.call(json!({"type": "subscribe", "session": id})).await;
    assert_eq!(r["type"], "subscribed", "{r}");
    assert_eq!(r["approximate"], false, "{r}");
    let snapshot = loop {
        if let Frame::Bin(SNAPSHOT, _, _, b) = ws.next().await {
            break b;
        }
    };
    let size = |n| std::num::NonZeroU16::new(n).unwrap();
    let mut live = vt100::Parser::new(size(24), size(80), 0);
    live.process(&log_bytes(server.dir.path(), &id));
    let mut late = vt100::Parser::new(size(24), size(80), 0);
    late.process(&snapshot);
    assert_eq!(live.screen().contents(), late.screen().contents());
    assert!(late.screen().contents().starts_with("STATIC HEADER"));
    assert!(late.screen().alternate_screen());
    assert_ne!(
        late.screen().mouse_protocol_mode(),
        vt100::MouseProtocolMode::None
    );
}

/// One raw HTTP/1.1 request over TCP; the status code of its answer.
async fn raw_status(addr: &str, request: &str) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(request.as_bytes()).await.unwrap();
    let mut head = [0u8; 12];
    s.read_exact(&mut head).await.unwrap();
    String::from_utf8_lossy(&head[9..12]).parse().unwrap()
}

/// DNS rebinding: a page of any site can point a name of its own at 127.0.0.1 and send its
/// requests here with that `Host`; over loopback only this machine's names pass (or the host
/// of an allowed origin), so such a page cannot probe session ids or occupy the ttyd
/// endpoint. Two `Origin` headers are refused (the first one alone decided).
#[tokio::test]
async fn requests_over_loopback_must_name_this_machine() {
    let server = Server::start_configured("allowed_origins = [\"https://corral.example.org\"]\n");
    let info = server
        .spawn(json!({"name": "s", "argv": ["sleep", "600"]}))
        .await;
    let id = info["id"].as_str().unwrap();
    let addr = server.addr.clone();
    let port = addr.rsplit_once(':').unwrap().1.to_string();
    let get = |host: String| {
        format!("GET /v1/health HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n")
    };
    for host in [
        addr.clone(),
        format!("localhost:{port}"),
        format!("app.localhost:{port}"),
        format!("[::1]:{port}"),
        "corral.example.org".to_string(),
    ] {
        assert_eq!(raw_status(&addr, &get(host.clone())).await, 200, "{host}");
    }
    for host in [
        format!("evil.example.com:{port}"),
        "x".into(),
        String::new(),
    ] {
        assert_eq!(raw_status(&addr, &get(host.clone())).await, 403, "{host:?}");
    }
    // The ttyd upgrade of a rebinding page: refused before it can tell 404 from 101.
    let upgrade = format!(
        "GET /ttyd/{id}/ws HTTP/1.1\r\nHost: evil.example.com:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: tty\r\n\r\n"
    );
    assert_eq!(raw_status(&addr, &upgrade).await, 403);
    let two = format!(
        "GET /v1/ws HTTP/1.1\r\nHost: {addr}\r\nOrigin: http://{addr}\r\nOrigin: http://evil.example.com\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nAuthorization: Bearer {}\r\n\r\n",
        server.token
    );
    assert_eq!(raw_status(&addr, &two).await, 403);
}

/// Every viewer's terminal answers a program's query (where is the cursor, what are you): the
/// program gets one answer — from the viewer whose size is in effect — and not a second one
/// as typed keys. Keys of the other viewer still pass.
#[tokio::test]
async fn a_query_is_answered_once_with_several_viewers() {
    let server = Server::start();
    let out = server.dir.path().join("typed");
    let info = server
        .spawn(json!({"name": "q", "argv": ["sh", "-c", format!("stty raw -echo; exec cat > {}", out.display())]}))
        .await;
    let id = info["id"].as_str().unwrap().to_string();
    wait_for_comm(&id, "cat").await;
    let resize =
        |rows: u16, cols: u16| json!({"type": "resize", "session": id, "rows": rows, "cols": cols});
    let input = |data: &str| json!({"type": "input", "session": id, "data": data});
    let mut desk = server.ws().await;
    let mut phone = server.ws().await;
    for ws in [&mut desk, &mut phone] {
        let r = ws.call(json!({"type": "subscribe", "session": id})).await;
        assert_eq!(r["type"], "subscribed", "{r}");
    }
    assert_eq!(desk.call(resize(40, 120)).await["type"], "ok");
    assert_eq!(phone.call(resize(30, 50)).await["type"], "ok");
    desk.send(input("a")).await;
    assert_eq!(desk.call(json!({"type": "ping"})).await["type"], "pong");
    tokio::time::sleep(Duration::from_millis(200)).await;
    // The program asks; both terminals answer.
    desk.send(input("\x1b[?1;2c\x1b[5;9R")).await;
    // Taken before the phone's (each connection's frames are handled in order).
    assert_eq!(desk.call(json!({"type": "ping"})).await["type"], "pong");
    phone.send(input("\x1b[?1;2c\x1b[3;3R")).await;
    assert_eq!(phone.call(json!({"type": "ping"})).await["type"], "pong");
    tokio::time::sleep(Duration::from_millis(200)).await;
    phone.send(input("b")).await;
    let want = b"a\x1b[?1;2c\x1b[5;9Rb".to_vec();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let got = std::fs::read(&out).unwrap_or_default();
        if got == want {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{:?}",
            String::from_utf8_lossy(&got)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The frames of a ttyd connection until it closes or `within` passes: the output ('0'
/// frames, command byte dropped) and the close, if any.
async fn ttyd_read(
    ttyd: &mut corral_client::ws::Socket,
    within: Duration,
) -> (Vec<u8>, Option<(u16, String)>) {
    let mut out = Vec::new();
    let end = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(end, ttyd.next()).await {
            Ok(Some(Ok(Message::Binary(b)))) if b.first() == Some(&b'0') => {
                out.extend_from_slice(&b[1..])
            }
            Ok(Some(Ok(Message::Close(c)))) => {
                return (out, c.map(|c| (u16::from(c.code), c.reason.to_string())));
            }
            Ok(Some(Ok(Message::Text(t)))) => panic!("a text frame on ttyd's protocol: {t}"),
            Ok(Some(Ok(_))) => {}
            _ => return (out, None),
        }
    }
}

/// A ttyd client the output lapped (it paused, as ttyd's page does when xterm.js falls
/// behind) is told in its terminal and gets the screen drawn again as it is: it used to get
/// only the note, and the skipped bytes' modes were lost for good (an alternate screen never
/// entered, a background colour never set).
#[tokio::test]
async fn a_lapped_ttyd_client_gets_the_screen_redrawn() {
    let server = Server::start();
    let info = server
        .spawn(json!({
            "name": "lapping", "ring_capacity": 65536,
            "argv": ["sh", "-c", "stty raw -echo; head -c1 >/dev/null; printf '\\033[?1049h\\033[44m'; seq 1 200000; printf FINAL; exec sleep 600"],
        }))
        .await;
    let id = info["id"].as_str().unwrap().to_string();
    let mut ttyd = server.ttyd_open(&id).await;
    ttyd_read(&mut ttyd, Duration::from_millis(500)).await;
    // Paused, then the go key: 1.3 MB of output goes by meanwhile.
    ttyd.send(Message::Binary(b"2".to_vec().into()))
        .await
        .unwrap();
    ttyd.send(Message::Binary(b"0g".to_vec().into()))
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while server.session("lapping").await["output_offset"]
        .as_u64()
        .unwrap()
        < 1_200_000
    {
        assert!(Instant::now() < deadline, "the output came");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    ttyd.send(Message::Binary(b"3".to_vec().into()))
        .await
        .unwrap();
    let (out, close) = ttyd_read(&mut ttyd, Duration::from_secs(2)).await;
    assert!(close.is_none(), "{close:?}");
    let text = String::from_utf8_lossy(&out);
    let note = text.find("bytes skipped").expect("the skip is said");
    let redrawn = &text[note..];
    assert!(
        redrawn.contains("\x1b[?1049h"),
        "the alternate screen is drawn again"
    );
    assert!(redrawn.contains("FINAL"), "the screen as it is now");
}

/// A ttyd client connecting to a session that has ended (ttyd's page reconnecting after the
/// shell exited) gets its last screen and the close a live viewer gets; its keys are never
/// answered with the native protocol's JSON (ttyd's has no text frames): the connection stayed
/// open on nothing, taking keys.
#[tokio::test]
async fn a_ttyd_client_of_an_ended_session_gets_its_screen_and_the_close() {
    let server = Server::start();
    server
        .spawn(json!({"name": "over", "argv": ["sh", "-c", "echo bye-now"]}))
        .await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while server.session("over").await["state"] != "stopped" {
        assert!(Instant::now() < deadline, "it ended");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut ttyd = server.ttyd_open("over").await;
    let (out, close) = ttyd_read(&mut ttyd, Duration::from_secs(5)).await;
    assert!(String::from_utf8_lossy(&out).contains("bye-now"));
    assert_eq!(close, Some((1000, "session exited".into())));
}

/// A ttyd client whose upgrade carries its token (a bearer header, corral's token
/// subprotocol, a login cookie) needs no AuthToken and waits among no unauthenticated
/// connections: 64 silent ones shut every ttyd client out, a logged-in page too.
#[tokio::test]
async fn a_ttyd_client_with_a_token_at_the_upgrade_is_not_shut_out() {
    let server = Server::start();
    server
        .spawn(json!({"name": "open", "argv": ["sleep", "600"]}))
        .await;
    let mut silent = Vec::new();
    for _ in 0..64 {
        silent.push(server.ttyd("open").await);
    }
    let mut ttyd = server
        .client()
        .socket(
            "/ttyd/open/ws",
            Some(&server.token),
            &[("sec-websocket-protocol", "tty")],
        )
        .await
        .expect("let in with its bearer token");
    ttyd.send(Message::Text(
        json!({"AuthToken": "", "columns": 80, "rows": 24})
            .to_string()
            .into(),
    ))
    .await
    .unwrap();
    match tokio::time::timeout(Duration::from_secs(10), ttyd.next()).await {
        Ok(Some(Ok(Message::Binary(b)))) => assert_eq!(b[0], b'1'),
        other => panic!("{other:?}"),
    }
    drop(silent);
}

/// Every connection is pinged (every 20 s), so a proxy with an idle timeout (nginx's 60 s)
/// does not cut a quiet viewer: ttyd's page then reconnected and lost its scrollback.
#[tokio::test]
async fn an_idle_connection_is_pinged() {
    let server = Server::start();
    server
        .spawn(json!({"name": "idle", "argv": ["sleep", "600"]}))
        .await;
    let mut ttyd = server.ttyd_open("idle").await;
    let pinged = tokio::time::timeout(Duration::from_secs(25), async {
        loop {
            match ttyd.next().await {
                Some(Ok(Message::Ping(_))) => return true,
                Some(Ok(_)) => {}
                _ => return false,
            }
        }
    })
    .await;
    assert_eq!(pinged, Ok(true));
}

/// A paused ttyd client still hears that its session ended: the pause holds back output, not
/// the end (it stayed connected to the stopped session until it resumed).
#[tokio::test]
async fn a_paused_ttyd_client_hears_its_session_end() {
    let server = Server::start();
    server
        .spawn(json!({"name": "ends", "argv": ["sh", "-c", "stty raw -echo; head -c1 >/dev/null; echo last-words"]}))
        .await;
    let mut ttyd = server.ttyd_open("ends").await;
    ttyd_read(&mut ttyd, Duration::from_millis(500)).await;
    ttyd.send(Message::Binary(b"2".to_vec().into()))
        .await
        .unwrap();
    ttyd.send(Message::Binary(b"0x".to_vec().into()))
        .await
        .unwrap();
    let (out, close) = ttyd_read(&mut ttyd, Duration::from_secs(10)).await;
    assert_eq!(close, Some((1000, "session exited".into())));
    assert!(String::from_utf8_lossy(&out).contains("last-words"));
}

/// `limits.max_connections`, past its limit: 64 upgrade requests written before the server
/// answers any, with room for 4: 4 get in and the others get a 503; once connections close,
/// their places are free again. (The place is taken at the upgrade and held by the connection;
/// it used to be read from a figure raised only once the connection's actor had started, so
/// upgrades at the same moment could all pass — a window this test did not reach here.)
#[tokio::test]
async fn the_connection_limit_holds_for_upgrades_at_the_same_moment() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let server = Server::start_configured("[limits]\nmax_connections = 4\n");
    let mut sockets = Vec::new();
    for _ in 0..64 {
        sockets.push(tokio::net::TcpStream::connect(&server.addr).await.unwrap());
    }
    let request = format!(
        "GET /v1/ws HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
         Authorization: Bearer {}\r\n\r\n",
        server.addr, server.token
    );
    for s in &mut sockets {
        s.write_all(request.as_bytes()).await.unwrap();
    }
    let mut statuses = Vec::new();
    for s in &mut sockets {
        let mut head = [0u8; 12];
        s.read_exact(&mut head).await.unwrap();
        statuses.push(String::from_utf8_lossy(&head[9..12]).to_string());
    }
    let open = statuses.iter().filter(|s| *s == "101").count();
    let refused = statuses.iter().filter(|s| *s == "503").count();
    assert_eq!((open, refused), (4, 60), "{statuses:?}");
    drop(sockets);
    // Given back as the connections end (their actors stop a moment after the close).
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut again = Vec::new();
    while again.len() < 4 {
        match server.ws_with(Some(&server.token), &[]).await {
            Ok(ws) => again.push(ws),
            Err(e) => {
                assert!(
                    std::time::Instant::now() < deadline,
                    "places not given back: {e}"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    let mut ws = again.pop().unwrap();
    assert_eq!(ws.call(json!({"type": "ping"})).await["type"], "pong");
}

/// A ttyd page is a fresh terminal: its first screen comes with the rows that scrolled off the
/// top before it connected (rebuilt from the output the server holds, CRLF-separated, pushed
/// into its scrollback), so it scrolls back through them — each line once, the screen below.
#[tokio::test]
async fn a_ttyd_client_gets_the_history_before_the_screen() {
    let server = Server::start();
    server
        .spawn(json!({"name": "older", "argv": ["sh", "-c", "seq 1 200; exec cat"]}))
        .await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while server.session("older").await["output_offset"]
        .as_u64()
        .unwrap()
        < 692
    {
        assert!(Instant::now() < deadline, "the output came");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut ttyd = server.ttyd_open("older").await;
    let (out, _) = ttyd_read(&mut ttyd, Duration::from_millis(800)).await;
    let text = String::from_utf8_lossy(&out);
    let first = text
        .find("1\r\n2\r\n3\r\n")
        .expect("the history, from its first line");
    // The screen (24 rows) shows 178..200 below the history, which ends before it.
    let screen = text
        .find("\x1b[H\x1b[2J")
        .expect("the screen drawn after the history");
    assert!(first < screen, "{text:?}");
    let history = &text[first..screen];
    assert!(history.contains("\r\n177\x1b[0m"), "{history:?}");
    assert!(!history.contains("\r\n178\r\n"), "{history:?}");
    assert!(text[screen..].contains("200"), "{text:?}");
}

/// Over HTTP alone a tool can kill a session and start it again (as the WebSocket's `kill` and
/// `restart` and the CLI do): a tool on HTTP and agentapi could not bring a stopped agent back.
#[tokio::test]
async fn a_session_is_killed_and_restarted_over_http() {
    let server = Server::start();
    let info = server
        .spawn(json!({"argv": ["sleep", "600"], "name": "k"}))
        .await;
    let pid = info["pid"].as_i64().unwrap();
    let (status, body) = server
        .http("POST", "/v1/sessions/k/kill", Some(&server.token), None)
        .await;
    assert_eq!(status, 200, "{body}");
    let killed: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(killed["state"], "stopped", "{killed}");
    assert_eq!(killed["last_exit"], json!({"signal": 9}), "{killed}");
    let (status, body) = server
        .http("POST", "/v1/sessions/k/restart", Some(&server.token), None)
        .await;
    assert_eq!(status, 200, "{body}");
    let again: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(again["state"], "running", "{again}");
    assert_ne!(again["pid"].as_i64(), Some(pid), "{again}");
    // Admin only.
    let write = server.scoped_token("k", "write").await;
    let (status, _) = server
        .http("POST", "/v1/sessions/k/kill", Some(&write), None)
        .await;
    assert_eq!(status, 403);
}

/// A connection holds at most 256 subscriptions: the 257th session is refused with `conflict`
/// naming the bound (the connection stays), a session already subscribed may be subscribed
/// again (it replaces its own), and an unsubscribe makes room.
#[tokio::test]
async fn a_connection_s_subscriptions_are_bounded_and_said_so() {
    let server = Server::start();
    let mut ids = Vec::new();
    for i in 0..257 {
        let info = server
            .spawn(json!({"name": format!("s{i}"), "argv": ["sleep", "600"], "mode": "pipe"}))
            .await;
        ids.push(info["id"].as_str().unwrap().to_string());
    }
    let mut ws = server.ws().await;
    for id in &ids[..256] {
        let r = ws.call(json!({"type": "subscribe", "session": id})).await;
        assert_eq!(r["type"], "subscribed", "{r}");
    }
    let r = ws
        .call(json!({"type": "subscribe", "session": ids[256]}))
        .await;
    assert_eq!(r["code"], "conflict", "{r}");
    assert!(
        r["message"]
            .as_str()
            .unwrap()
            .contains("subscription limit reached (256)"),
        "{r}"
    );
    let r = ws
        .call(json!({"type": "subscribe", "session": ids[0]}))
        .await;
    assert_eq!(r["type"], "subscribed", "the same session again: {r}");
    let r = ws
        .call(json!({"type": "unsubscribe", "session": ids[1]}))
        .await;
    assert_eq!(r["type"], "ok", "{r}");
    let r = ws
        .call(json!({"type": "subscribe", "session": ids[256]}))
        .await;
    assert_eq!(r["type"], "subscribed", "room made by the unsubscribe: {r}");
}

/// An `events` reply carries at most 1000 events, whatever `limit` asks; the rest come with
/// `after` set to the last one received.
#[tokio::test]
async fn an_events_reply_holds_at_most_a_thousand() {
    let server = Server::start();
    let script =
        r#"i=0; while [ $i -lt 1100 ]; do i=$((i+1)); echo "{\"n\":$i}"; done; exec sleep 600"#;
    let info = server
        .spawn(json!({"name": "many", "argv": ["sh", "-c", script], "mode": "pipe"}))
        .await;
    let id = info["id"].as_str().unwrap().to_string();
    let mut ws = server.ws().await;
    let json_events = |r: &Value| {
        r["events"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["kind"]["kind"] == "json")
            .count()
    };
    // All 1100 in the journal first (read in pages of at most 1000).
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (mut seen, mut after) = (0, 0);
        loop {
            let r = ws
                .call(json!({"type": "events", "session": id, "after": after, "limit": 5000}))
                .await;
            let events = r["events"].as_array().unwrap();
            assert!(events.len() <= 1000, "{} events in one reply", events.len());
            seen += json_events(&r);
            match events.last() {
                Some(e) if events.len() == 1000 => after = e["seq"].as_u64().unwrap(),
                _ => break,
            }
        }
        if seen == 1100 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{seen} of 1100 json events journaled"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let r = ws
        .call(json!({"type": "events", "session": id, "limit": 5000}))
        .await;
    assert_eq!(
        r["events"].as_array().unwrap().len(),
        1000,
        "the first page is full"
    );
}

/// The last places of `max_connections` (a sixteenth, at least one) are the admin token's: a
/// viewer token that opens every connection it can is refused short of the bound, and the
/// admin (the CLI, the owner's page) still gets in.
#[tokio::test]
async fn a_viewer_token_cannot_take_the_admin_s_last_connections() {
    let server = Server::start_configured("[limits]\nmax_connections = 8\n");
    server
        .spawn(json!({"name": "v", "argv": ["sleep", "600"]}))
        .await;
    let read = server.scoped_token("v", "read").await;
    let token = read.as_str();
    let mut held = Vec::new();
    for i in 0..7 {
        match server.ws_with(Some(token), &[]).await {
            Ok(ws) => held.push(ws),
            Err(e) => panic!("viewer connection {i} refused: {e}"),
        }
    }
    let refused = server.ws_with(Some(token), &[]).await;
    assert!(refused.is_err(), "the viewer took the admin's place");
    let mut admin = server
        .ws_with(Some(&server.token), &[])
        .await
        .expect("the admin gets the place kept for it");
    assert_eq!(admin.call(json!({"type": "ping"})).await["type"], "pong");
    assert!(
        server.ws_with(Some(&server.token), &[]).await.is_err(),
        "past max_connections"
    );
}

/// A request read after its client stopped waiting (`corral-deadline`) is refused unbegun: a
/// server stopped with SIGSTOP while a spawn waited for it, continued after the client gave
/// up, does not start the session (it did: every spawn, stop, removal and shutdown a client
/// had reported as failed was carried out when the server resumed). A request in time goes
/// through; a deadline that is not a number is a bad request.
#[tokio::test]
async fn a_request_read_after_its_client_stopped_waiting_is_not_carried_out() {
    use corral_server::protocol::DEADLINE_HEADER;
    let server = Server::start();
    let ms = |from_now: Duration| {
        (std::time::SystemTime::now() + from_now)
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis()
            .to_string()
    };
    let spawn = async |name: &str, deadline: &str| {
        let body = json!({"name": name, "argv": ["sleep", "600"]}).to_string();
        server
            .client()
            .send_with(
                hyper::Method::POST,
                "/v1/sessions",
                Some(&server.token),
                &[(DEADLINE_HEADER, deadline)],
                Some(body.into_bytes()),
            )
            .await
            .unwrap()
            .response
            .status()
            .as_u16()
    };
    let pid = nix::unistd::Pid::from_raw(server.pid());
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGSTOP).unwrap();
    let deadline = ms(Duration::from_millis(300));
    let late = spawn("ghost", &deadline);
    let resume = async {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGCONT).unwrap();
    };
    let (status, ()) = tokio::join!(late, resume);
    assert_eq!(status, 408);
    let (status, body) = server
        .http("GET", "/v1/sessions/ghost", Some(&server.token), None)
        .await;
    assert_eq!(status, 404, "the late spawn was carried out: {body}");
    assert_eq!(spawn("in-time", &ms(Duration::from_secs(30))).await, 201);
    assert_eq!(spawn("bad", "soon").await, 400);
    let metrics = server
        .http("GET", "/metrics", Some(&server.token), None)
        .await
        .1;
    assert!(
        metrics.contains(r#"rejected_total{reason="deadline"} 1"#),
        "{}",
        metrics
            .lines()
            .filter(|l| l.contains("rejected"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}
