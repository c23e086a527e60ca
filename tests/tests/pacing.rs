//! Input is paced, never dropped: over a limit (messages per second, input bytes per second, a
//! session's full input queue) the server stops reading the connection until the input can go,
//! so TCP pushes back on the sender; every byte arrives, in order, through the native and the
//! ttyd endpoints. Only input that stays untaken past `limits.input_stall_secs` closes the
//! connection, with an error frame, close code 1008 and a reason.

use std::path::Path;
use std::time::{Duration, Instant};

use corral_tests::{Frame, Server, wait_for_comm};
use futures::SinkExt;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

/// A server whose limits are low enough that the inputs below must be paced.
fn limited_server(extra: &str) -> Server {
    Server::start_configured(&format!(
        "[limits]\nmessages_per_sec = 2000\ninput_bytes_per_sec = 262144\n{extra}"
    ))
}

/// `n` printable pseudo-random bytes.
fn text(n: usize) -> Vec<u8> {
    let mut x = 0x9E3779B97F4A7C15u64;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            b'!' + (x % 90) as u8
        })
        .collect()
}

/// A session that writes the first `n` bytes of its raw input to `out`.
async fn sink(server: &Server, out: &Path, n: usize, delay: &str) -> String {
    let script = format!(
        "stty raw -echo; {delay} head -c {n} > {}; echo done",
        out.display()
    );
    let info = server.spawn(json!({"argv": ["sh", "-c", script]})).await;
    let id = info["id"].as_str().unwrap().to_string();
    wait_for_comm(&id, if delay.is_empty() { "head" } else { "sleep" }).await;
    id
}

/// Runs `sender` for 5 s at most: the sends stall (pushed back) rather than fail.
async fn pushed_back(sender: impl std::future::Future<Output = ()>) {
    if tokio::time::timeout(Duration::from_secs(5), sender)
        .await
        .is_err()
    {
        eprintln!("the sender was pushed back, as it should be");
    }
}

/// Waits (bounded) until `path` holds `want`, then compares.
async fn arrives(path: &Path, want: &[u8]) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let got = std::fs::read(path).unwrap_or_default();
        if got.len() >= want.len() {
            assert!(got == want, "the bytes arrived changed or out of order");
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {} bytes arrived",
            got.len(),
            want.len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Subscribes; returns the channel.
async fn channel(ws: &mut corral_tests::Ws, id: &str) -> u32 {
    let r = ws
        .call(json!({"type": "subscribe", "session": id, "from": 0}))
        .await;
    r["channel"].as_u64().unwrap() as u32
}

fn input_frame(channel: u32, payload: &[u8]) -> Message {
    let mut f = vec![3u8];
    f.extend_from_slice(&channel.to_be_bytes());
    f.extend_from_slice(&0u64.to_be_bytes());
    f.extend_from_slice(payload);
    Message::Binary(f.into())
}

#[tokio::test]
async fn a_megabyte_paste_arrives_whole_through_native_and_ttyd() {
    let server = limited_server("");
    let data = text(1 << 20);
    // Native: 64 frames of 16 KiB as fast as the socket takes them. At 256 KiB/s (burst 512)
    // the server must pace them (≥ ~2 s); dropping would leave the file short.
    let out = server.dir.path().join("native.out");
    let id = sink(&server, &out, data.len(), "").await;
    let mut ws = server.ws().await;
    let ch = channel(&mut ws, &id).await;
    let t = Instant::now();
    for chunk in data.chunks(16 * 1024) {
        ws.raw(input_frame(ch, chunk)).await;
    }
    arrives(&out, &data).await;
    assert!(
        t.elapsed() > Duration::from_millis(1500),
        "the limit was not applied"
    );
    // No rate-limit error was sent: pacing is silent and loses nothing.
    assert_eq!(ws.call(json!({"type": "ping"})).await["type"], "pong");
    // ttyd: '0' + bytes frames after the AuthToken frame.
    let out = server.dir.path().join("ttyd.out");
    let id = sink(&server, &out, data.len(), "").await;
    let mut ttyd = server.ttyd_open(&id).await;
    for chunk in data.chunks(16 * 1024) {
        let mut f = vec![b'0'];
        f.extend_from_slice(chunk);
        ttyd.send(Message::Binary(f.into())).await.unwrap();
    }
    arrives(&out, &data).await;
}

/// ttyd's own client sends a paste as one message, whatever its size: the ttyd endpoint takes
/// messages up to a session's input queue (1 MiB) — a 100 KB paste closed the connection with
/// 1009 and wrote nothing — and the native endpoint keeps its 64 KiB frames.
#[tokio::test]
async fn a_ttyd_client_pastes_a_megabyte_in_one_message() {
    let server = Server::start();
    let data = text(1 << 20);
    let out = server.dir.path().join("ttyd-one.out");
    let id = sink(&server, &out, data.len(), "").await;
    let mut ttyd = server.ttyd_open(&id).await;
    let mut f = vec![b'0'];
    f.extend_from_slice(&data);
    ttyd.send(Message::Binary(f.into())).await.unwrap();
    arrives(&out, &data).await;
}

/// One byte past that bound (a type byte and 1 MiB + 1) closes the connection with its reason
/// (1000, as every ttyd close: ttyd's page reconnects for ever on another code), and nothing
/// of that message is written.
#[tokio::test]
async fn a_ttyd_message_past_its_bound_closes_with_a_reason_and_writes_nothing() {
    use futures::StreamExt;
    let server = Server::start();
    let out = server.dir.path().join("ttyd-over.out");
    let id = sink(&server, &out, 1, "").await;
    let mut ttyd = server.ttyd_open(&id).await;
    let mut f = vec![b'0'];
    f.extend_from_slice(&text((1 << 20) + 1));
    if let Err(e) = ttyd.send(Message::Binary(f.into())).await {
        // The server may close before the whole message is sent: its close is still read.
        eprintln!("send: {e}");
    }
    loop {
        match tokio::time::timeout(Duration::from_secs(10), ttyd.next()).await {
            Ok(Some(Ok(Message::Close(Some(c))))) => {
                assert_eq!(
                    (u16::from(c.code), c.reason.as_str()),
                    (1000, "frame too large")
                );
                break;
            }
            Ok(Some(Ok(_))) => {}
            other => panic!("expected a close with a reason, got {other:?}"),
        }
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        std::fs::read(&out).unwrap_or_default().len(),
        0,
        "a byte of it was written"
    );
}

/// A paste larger than a frame comes in parts (`input` with `more`) and is written as one paste
/// with one Enter; a second one right after must wait for the byte rate, and still arrives
/// whole (its earlier parts are kept while its last one waits). Past the burst a paste is
/// refused with `too_large` and nothing of it is written; parts for two sessions at once are a
/// `conflict`.
#[tokio::test]
async fn a_paste_in_parts_arrives_as_one_and_waits_its_turn_whole() {
    let server = limited_server("");
    // 400 KB each: under the 512 KiB burst, but two of them are not.
    let one = String::from_utf8(text(400_000)).unwrap();
    let two = String::from_utf8(text(400_001)).unwrap();
    let want = format!("{one}\r{two}\r");
    let out = server.dir.path().join("paste.out");
    let id = sink(&server, &out, want.len(), "").await;
    let mut ws = server.ws().await;
    // The server says it takes pastes in parts (a client does not send parts to one that
    // would paste each on its own).
    let hello = ws.call(json!({"type": "hello", "protocol": 1})).await;
    assert!(
        hello["features"]
            .as_array()
            .unwrap()
            .contains(&json!("paste_parts")),
        "{hello}"
    );
    let t = Instant::now();
    for paste in [&one, &two] {
        let parts: Vec<&str> = paste
            .as_bytes()
            .chunks(30_000)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect();
        for (i, part) in parts.iter().enumerate() {
            ws.send(
                json!({"type": "input", "session": id, "data": part, "paste": true,
                           "more": i + 1 < parts.len()}),
            )
            .await;
        }
    }
    arrives(&out, want.as_bytes()).await;
    assert!(
        t.elapsed() > Duration::from_millis(800),
        "the second paste did not wait for the byte rate"
    );
    assert_eq!(ws.call(json!({"type": "ping"})).await["type"], "pong");

    // Past the burst (512 KiB): refused, and its later parts, up to its last, go with it: none
    // of it is ever written.
    let other = server.spawn(json!({"argv": ["cat"]})).await;
    let other = other["id"].as_str().unwrap().to_string();
    let part = String::from_utf8(text(30_000)).unwrap();
    for _ in 0..17 {
        ws.send(
            json!({"type": "input", "session": other, "data": part, "paste": true, "more": true}),
        )
        .await;
    }
    let r = ws
        .call(json!({"type": "input", "session": other, "data": part, "paste": true, "more": true}))
        .await;
    assert_eq!(r["code"], "too_large", "{r}");
    for more in [true, true, false] {
        ws.send(
            json!({"type": "input", "session": other, "data": part, "paste": true, "more": more}),
        )
        .await;
    }
    assert_eq!(ws.call(json!({"type": "ping"})).await["type"], "pong");
    // Parts for two sessions interleaved: the client is told; neither paste is written.
    ws.send(
        json!({"type": "input", "session": other, "data": "first", "paste": true, "more": true}),
    )
    .await;
    let r = ws
        .call(json!({"type": "input", "session": id, "data": "b", "paste": true}))
        .await;
    assert_eq!(r["code"], "conflict", "{r}");
    ws.send(json!({"type": "input", "session": other, "data": "last", "paste": true}))
        .await;
    let r = ws
        .call(json!({"type": "input", "session": id, "data": "b", "more": true}))
        .await;
    assert_eq!(r["code"], "bad_request", "{r}");
    // A paste after them goes as usual.
    ws.send(json!({"type": "input", "session": other, "data": "alone", "paste": true}))
        .await;
    let deadline = Instant::now() + Duration::from_secs(10);
    let log = || corral_tests::log_bytes(server.dir.path(), &other);
    while !String::from_utf8_lossy(&log()).contains("alone") {
        assert!(Instant::now() < deadline, "the last paste did not arrive");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let text = String::from_utf8_lossy(&log()).to_string();
    assert!(
        !text.contains("first") && !text.contains("last"),
        "{text:?}"
    );
    assert!(
        !text.contains(&part[..64]),
        "a part of a refused paste was written"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(std::fs::read(&out).unwrap() == want.as_bytes());
}

#[tokio::test]
async fn five_thousand_keystrokes_sent_at_once_all_arrive() {
    let server = limited_server("");
    let data = text(5000);
    let out = server.dir.path().join("keys.out");
    let id = sink(&server, &out, data.len(), "").await;
    let mut ws = server.ws().await;
    let ch = channel(&mut ws, &id).await;
    for b in &data {
        ws.raw(input_frame(ch, std::slice::from_ref(b))).await;
    }
    arrives(&out, &data).await;
    // And 3,000 pings over a 2,000/s limit (burst 4,000 minus the keystrokes): all answered.
    for _ in 0..3000 {
        ws.raw(Message::Text(json!({"type": "ping"}).to_string().into()))
            .await;
    }
    let mut pongs = 0;
    while pongs < 3000 {
        match ws.next().await {
            Frame::Json(v) if v["type"] == "pong" => pongs += 1,
            Frame::Json(v) if v["type"] == "error" => panic!("refused: {v}"),
            Frame::Close(c, r) => panic!("closed {c} {r}"),
            _ => {}
        }
    }
}

#[tokio::test]
async fn a_full_input_queue_pushes_back_until_the_process_reads() {
    // Default (high) rate limits: here the session's 1 MiB input queue is the limit. The
    // process reads nothing for 2 s while 3 MB are sent; then it reads them all.
    let server = Server::start();
    let dir = tempfile::tempdir().unwrap();
    let data = text(3_000_000);
    let out = dir.path().join("late.out");
    let id = sink(&server, &out, data.len(), "sleep 2;").await;
    let mut ws = server.ws().await;
    let ch = channel(&mut ws, &id).await;
    for chunk in data.chunks(32 * 1024) {
        ws.raw(input_frame(ch, chunk)).await;
    }
    arrives(&out, &data).await;
    let info: Value = server
        .client()
        .call::<(), _>(hyper::Method::GET, &format!("/v1/sessions/{id}"), None)
        .await
        .unwrap();
    // The queue did fill (the push-back path ran), and nothing was lost.
    assert!(info["input_rejected"].as_u64().unwrap() > 0, "{info}");
    assert_eq!(info["input_lost"], 0, "{info}");
}

#[tokio::test]
async fn input_never_taken_closes_with_1008_after_the_stall_limit() {
    let server = limited_server("input_stall_secs = 1\n");
    let out = server.dir.path().join("never.out");
    // Never reads: sleeps far past the limit.
    let id = sink(&server, &out, 10, "sleep 600;").await;
    let mut ws = server.ws().await;
    let ch = channel(&mut ws, &id).await;
    let data = text(2 << 20);
    let sender = async {
        for chunk in data.chunks(32 * 1024) {
            if ws.ws.send(input_frame(ch, chunk)).await.is_err() {
                break;
            }
        }
    };
    pushed_back(sender).await;
    let t = Instant::now();
    let mut saw_error = false;
    loop {
        match ws.next().await {
            Frame::Json(v) if v["type"] == "error" => {
                assert_eq!(v["code"], "unavailable", "{v}");
                saw_error = true;
            }
            Frame::Close(code, reason) => {
                assert_eq!(code, 1008, "{reason}");
                assert!(reason.contains("input"), "{reason}");
                break;
            }
            _ => {}
        }
        assert!(t.elapsed() < Duration::from_secs(30), "not closed");
    }
    assert!(
        saw_error,
        "native clients get an error frame before the close"
    );
    let metrics = server
        .http("GET", "/metrics", Some(&server.token), None)
        .await
        .1;
    assert!(
        metrics
            .lines()
            .any(|l| l.contains("input_stalled") && !l.trim_end().ends_with(" 0")),
        "{metrics}"
    );
}

/// `corral send` into a program that never reads: past the stall limit it fails, saying how
/// much of its input was taken (queued for the program), so a script knows what not to send
/// again (it said only "connection closed: input not consumed in time").
#[tokio::test]
async fn a_send_never_taken_says_how_much_went_in() {
    let server = limited_server("input_stall_secs = 1\n");
    let out = server.dir.path().join("never-send.out");
    let id = sink(&server, &out, 10, "sleep 600;").await;
    let input = server.dir.path().join("big-input");
    std::fs::write(&input, text(3 << 20)).unwrap();
    let sent = tokio::process::Command::new(corral_tests::binary())
        .arg("--data-dir")
        .arg(server.dir.path())
        .args(["send", &id, "-"])
        .stdin(std::fs::File::open(&input).unwrap())
        .output()
        .await
        .unwrap();
    let err = String::from_utf8_lossy(&sent.stderr);
    assert!(!sent.status.success(), "{err}");
    let taken: u64 = err
        .split("the first ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no count of what was taken: {err}"));
    // About the session's input queue (1 MiB, filled by whole frames of up to 64 KiB) and what
    // the terminal took; not all of it.
    assert!((900_000..3 << 20).contains(&taken), "{err}");
}

/// The ttyd endpoint past the same stall limit: ttyd has no error frame, so the close says why,
/// with 1000 (ttyd's page reconnects for ever on any other code).
#[tokio::test]
async fn a_ttyd_client_whose_input_is_never_taken_is_closed_with_a_reason() {
    use futures::StreamExt;
    let server = limited_server("input_stall_secs = 1\n");
    let out = server.dir.path().join("never-ttyd.out");
    let id = sink(&server, &out, 10, "sleep 600;").await;
    let mut ttyd = server.ttyd_open(&id).await;
    let data = text(2 << 20);
    let sender = async {
        for chunk in data.chunks(32 * 1024) {
            let mut f = vec![b'0'];
            f.extend_from_slice(chunk);
            if ttyd.send(Message::Binary(f.into())).await.is_err() {
                break;
            }
        }
    };
    pushed_back(sender).await;
    let t = Instant::now();
    loop {
        match tokio::time::timeout(Duration::from_secs(30), ttyd.next()).await {
            Ok(Some(Ok(Message::Close(Some(c))))) => {
                assert_eq!(u16::from(c.code), 1000, "{c:?}");
                assert!(c.reason.contains("input"), "{c:?}");
                break;
            }
            Ok(Some(Ok(_))) => {}
            other => panic!("expected a close with a reason, got {other:?}"),
        }
        assert!(t.elapsed() < Duration::from_secs(30), "not closed");
    }
}
