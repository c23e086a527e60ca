//! Claude Code end to end, in every `cargo test`. Uses @anthropic-ai/claude-code from a cache
//! dir (`scripts/setup` installs it there; the test installs it with npm on first use otherwise,
//! and fails, naming the missing prerequisite, when it cannot — it never passes by skipping), runs it under `corral spawn --agent claude` in pipe mode against a local stub
//! of the Anthropic Messages API (ANTHROPIC_BASE_URL), and checks that its hooks fire for real and
//! reach the session as events, then that nothing is left.

use std::process::Command;
use std::time::Duration;

use corral_tests::{Server, binary, claude_code, session_processes};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The stub's task, aborted (with every connection it serves) when the test drops it.
struct Stub(tokio::task::JoinHandle<()>);

impl Drop for Stub {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A minimal Messages API: every POST /v1/messages answers "Hello from the stub." (SSE when
/// streaming); anything else gets an empty JSON object.
async fn stub() -> (u16, Stub) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let task = tokio::spawn(async move {
        // Owned by the accept loop: dropped (aborted) with it.
        let mut conns = tokio::task::JoinSet::new();
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            conns.spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 65536];
                let (head_end, len) = loop {
                    let n = s.read(&mut chunk).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&buf[..i]).to_lowercase();
                        let len = head
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length:"))
                            .and_then(|v| v.trim().parse::<usize>().ok())
                            .unwrap_or(0);
                        break (i + 4, len);
                    }
                };
                while buf.len() < head_end + len {
                    let n = s.read(&mut chunk).await.unwrap_or(0);
                    if n == 0 {
                        break;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                }
                let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
                let body: Value = serde_json::from_slice(&buf[head_end..]).unwrap_or(Value::Null);
                let is_messages =
                    head.starts_with("POST /v1/messages") && !head.contains("count_tokens");
                let resp = if is_messages && body["stream"] == true {
                    let ev = |name: &str, data: Value| format!("event: {name}\ndata: {data}\n\n");
                    let msg = serde_json::json!({"id":"msg_stub","type":"message","role":"assistant","model":body["model"],"content":[],"stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":10,"output_tokens":1}});
                    let sse = [
                        ev("message_start", serde_json::json!({"type":"message_start","message":msg})),
                        ev("content_block_start", serde_json::json!({"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}})),
                        ev("content_block_delta", serde_json::json!({"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hello from the stub."}})),
                        ev("content_block_stop", serde_json::json!({"type":"content_block_stop","index":0})),
                        ev("message_delta", serde_json::json!({"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},"usage":{"output_tokens":5}})),
                        ev("message_stop", serde_json::json!({"type":"message_stop"})),
                    ]
                    .concat();
                    format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n{sse}"
                    )
                } else if is_messages {
                    let msg = serde_json::json!({"id":"msg_stub","type":"message","role":"assistant","model":body["model"],"content":[{"type":"text","text":"Hello from the stub."}],"stop_reason":"end_turn","stop_sequence":null,"usage":{"input_tokens":10,"output_tokens":5}}).to_string();
                    format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{msg}",
                        msg.len()
                    )
                } else {
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{}".to_string()
                };
                if s.write_all(resp.as_bytes()).await.is_err() {
                    return;
                }
                s.shutdown().await.ok();
            });
        }
    });
    (port, Stub(task))
}

#[tokio::test]
async fn claude_code_hooks_reach_their_session_and_nothing_is_left() {
    let claude = claude_code().expect(
        "Claude Code is missing and `npm install @anthropic-ai/claude-code` failed: \
         run scripts/setup (needs node and npm)",
    );
    let (port, _stub) = stub().await;
    let server = Server::start();
    let home = tempfile::tempdir().unwrap();
    let corral = |args: &[&str]| {
        Command::new(binary())
            .arg("--data-dir")
            .arg(server.dir.path())
            .args(args)
            .output()
            .unwrap()
    };
    let base = format!("ANTHROPIC_BASE_URL=http://127.0.0.1:{port}");
    let home_env = format!("HOME={}", home.path().display());
    let out = corral(&[
        "spawn",
        "--name",
        "cc",
        "--agent",
        "claude",
        "--pipe",
        "--env",
        &home_env,
        "--env",
        &base,
        "--env",
        "ANTHROPIC_API_KEY=sk-test",
        "--env",
        "DISABLE_TELEMETRY=1",
        "--env",
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC=1",
        "--",
        &claude.display().to_string(),
        "-p",
        "say hi",
        "--output-format",
        "stream-json",
        "--verbose",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Follow events until the session stops (claude -p exits after one answer).
    let mut child = Command::new(binary())
        .arg("--data-dir")
        .arg(server.dir.path())
        .args(["events", "cc", "-f", "--json"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while child.try_wait().unwrap().is_none() {
        assert!(
            std::time::Instant::now() < deadline,
            "claude did not finish"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut text = String::new();
    use std::io::Read;
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut text)
        .unwrap();
    let hooks: Vec<String> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|e| e["kind"]["kind"] == "hook")
        .map(|e| e["kind"]["name"].as_str().unwrap_or("").to_string())
        .collect();
    for want in ["UserPromptSubmit", "Stop"] {
        assert!(
            hooks.iter().any(|h| h == want),
            "no {want} hook in {hooks:?}"
        );
    }
    assert!(
        text.contains("Hello from the stub."),
        "the stream-json answer arrives as an event"
    );
    let ps: Value = serde_json::from_slice(&corral(&["ps", "--json"]).stdout).unwrap();
    assert!(
        ps[0]["agent_session_id"].is_string(),
        "SessionStart bound the agent session id"
    );
    let id = ps[0]["id"].as_str().unwrap();
    assert!(session_processes(id).is_empty());
}
