//! agentapi on the real Claude Code (npm) against a local Messages API stub that streams its
//! answer slowly: what `GET /agentapi/{session}/messages` says of a turn while a viewer resizes
//! the terminal in the middle of it.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use corral_tests::claude_stub::{self, claude_env_at, prepare_home, project_path};
use corral_tests::{Server, claude_code};
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;

/// The lines of the stub's answer, streamed one every [`LINE_EVERY`].
const LINES: usize = 36;
const LINE_EVERY: Duration = Duration::from_millis(150);

/// Words after each line's number, so a narrowed terminal wraps it.
const FILLER: &str = "lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod";

/// A Messages API that streams "Answer line N." lines slowly to a streamed request that
/// offers tools (the turn), and answers anything else with a short text at once.
async fn slow_stub() -> (u16, tokio::task::JoinHandle<()>, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let sent = Arc::new(AtomicUsize::new(0));
    let lines = sent.clone();
    let task = tokio::spawn(async move {
        let mut conns = tokio::task::JoinSet::new();
        loop {
            tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => { conns.spawn(serve(stream, lines.clone())); }
                    Err(_) => return,
                },
                Some(_) = conns.join_next(), if !conns.is_empty() => {}
            }
        }
    });
    (port, task, sent)
}

/// Answers one request; a turn's answer lines are counted in `sent` as they go out.
async fn serve(mut stream: tokio::net::TcpStream, sent: Arc<AtomicUsize>) {
    let Some(req) = corral_tests::read_stub_request(&mut stream).await else {
        return;
    };
    let body = req.body;
    let turn = req.method == "POST"
        && req.path.starts_with("/v1/messages")
        && !req.path.starts_with("/v1/messages/count_tokens")
        && body["stream"] == true
        && body["tools"].as_array().is_some_and(|t| !t.is_empty());
    if !turn {
        // A short text (the session's title, and the like), as the shared stub answers.
        let (content_type, reply) = if req.path.starts_with("/v1/messages") {
            claude_stub::messages_reply(&body, "NoSuchTool", &json!({}))
        } else {
            ("application/json", "{}".to_string())
        };
        corral_tests::write_stub_response(&mut stream, content_type, &reply).await;
        return;
    }
    let head = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n";
    if stream.write_all(head.as_bytes()).await.is_err() {
        return;
    }
    let ev = claude_stub::sse_event;
    let mut out = claude_stub::message_start(&body);
    out += &ev(
        "content_block_start",
        json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
    );
    if stream.write_all(out.as_bytes()).await.is_err() {
        return;
    }
    for n in 1..=LINES {
        tokio::time::sleep(LINE_EVERY).await;
        let text = if n == 1 {
            format!("Answer line {n}. {FILLER}")
        } else {
            format!("\n\nAnswer line {n}. {FILLER}")
        };
        let d = ev(
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": text}}),
        );
        if stream.write_all(d.as_bytes()).await.is_err() {
            return;
        }
        sent.store(n, Ordering::SeqCst);
    }
    let end = claude_stub::message_end("end_turn");
    if stream.write_all(end.as_bytes()).await.is_ok() && stream.shutdown().await.is_err() {
        eprintln!("stub: the client closed first");
    }
}

async fn agentapi(
    server: &Server,
    method: &str,
    session: &str,
    route: &str,
    body: Option<&Value>,
) -> (u16, Value) {
    let (status, text) = server
        .http(
            method,
            &format!("/agentapi/{session}/{route}"),
            Some(&server.token),
            body,
        )
        .await;
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// A viewer that resizes the terminal while Claude streams its answer: the answer the
/// agentapi messages give holds each of its lines once.
#[tokio::test]
async fn a_resize_while_claude_streams_leaves_each_answer_line_once() {
    let claude = claude_code().expect("Claude Code is missing: run scripts/setup");
    let server = Server::start();
    let (port, stub, sent) = slow_stub().await;
    let home = tempfile::tempdir().unwrap();
    let project = tempfile::tempdir().unwrap();
    let dir = project_path(project.path());
    prepare_home(home.path(), &dir);
    let env: Vec<(String, String)> = claude_env_at(home.path(), port)
        .iter()
        .map(|e| {
            // invariant: claude_env_at makes KEY=value strings.
            let (k, v) = e.split_once('=').expect("KEY=value");
            (k.to_string(), v.to_string())
        })
        .collect();
    let info = server
        .spawn(json!({
            "name": "streaming", "argv": [claude, "--permission-mode", "default"], "agent": "claude",
            "cwd": dir, "env": env, "size": {"rows": 30, "cols": 100},
        }))
        .await;
    let id = info["id"].as_str().unwrap().to_string();
    server
        .cli_ok(&["wait", "streaming", "--for", "idle", "--timeout", "40"])
        .await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, st) = agentapi(&server, "GET", &id, "status", None).await;
        if st["status"] == "stable" {
            break;
        }
        assert!(Instant::now() < deadline, "{st}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (status, r) = agentapi(
        &server,
        "POST",
        &id,
        "message",
        Some(&json!({"content": "tell me", "type": "user"})),
    )
    .await;
    assert_eq!(status, 200, "{r}");
    let mut ws = server.ws().await;
    // The resizes land while the answer streams: after its third line went out, and (checked
    // below) before its last.
    let deadline = Instant::now() + Duration::from_secs(30);
    while sent.load(Ordering::SeqCst) < 3 {
        assert!(Instant::now() < deadline, "the answer never started");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for (rows, cols) in [(24, 60), (40, 120), (30, 90)] {
        let r = ws
            .call(
                json!({"type": "resize", "session": id, "rows": rows, "cols": cols, "take": true}),
            )
            .await;
        assert_eq!(r["type"], "ok", "{r}");
        tokio::time::sleep(LINE_EVERY * 2).await;
    }
    let at = sent.load(Ordering::SeqCst);
    assert!(
        at < LINES,
        "the resizes came after the answer ({at} lines out)"
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, st) = agentapi(&server, "GET", &id, "status", None).await;
        let (_, m) = agentapi(&server, "GET", &id, "messages", None).await;
        let last = m["messages"]
            .as_array()
            .and_then(|a| a.last())
            .cloned()
            .unwrap_or_default();
        let text = last["content"].as_str().unwrap_or_default().to_string();
        if st["status"] == "stable" && text.contains(&format!("Answer line {LINES}.")) {
            let messages = m["messages"].as_array().unwrap();
            let roles: Vec<&str> = messages
                .iter()
                .map(|m| m["role"].as_str().unwrap())
                .collect();
            assert_eq!(roles, ["agent", "user", "agent"], "{m}");
            // The turn alone: from the echo of its message on, nothing of the screen before it
            // (Claude's welcome box), each line once and in order.
            assert!(text.starts_with("❯ tell me"), "{text}");
            assert!(!text.contains("Welcome back"), "{text}");
            let mut at = 0;
            for n in 1..=LINES {
                let line = format!("Answer line {n}.");
                assert_eq!(text.matches(&line).count(), 1, "{line:?} in:\n{text}");
                let i = text.find(&line).unwrap();
                assert!(i > at, "{line:?} out of order in:\n{text}");
                at = i;
            }
            break;
        }
        assert!(Instant::now() < deadline, "{st} {m}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    server.cli_ok(&["stop", "streaming"]).await;
    stub.abort();
}
