//! Claude Code end to end, in every `cargo test`. Uses @anthropic-ai/claude-code from a cache
//! dir (`scripts/setup` installs it there; the test installs it with npm on first use otherwise,
//! and fails, naming the missing prerequisite, when it cannot — it never passes by skipping), runs it under `corral spawn --agent claude` in pipe mode against a local stub
//! of the Anthropic Messages API (ANTHROPIC_BASE_URL), and checks that its hooks fire for real and
//! reach the session as events, then that nothing is left.

use std::process::Command;
use std::time::Duration;

use corral_tests::{Server, binary, claude_code, session_processes};
use serde_json::Value;

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
                let Some(req) = corral_tests::read_stub_request(&mut s).await else {
                    return;
                };
                let body = req.body;
                let is_messages = req.method == "POST"
                    && req.path.starts_with("/v1/messages")
                    && !req.path.contains("count_tokens");
                let (content_type, reply) = if is_messages && body["stream"] == true {
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
                    ("text/event-stream", sse)
                } else if is_messages {
                    let msg = serde_json::json!({"id":"msg_stub","type":"message","role":"assistant","model":body["model"],"content":[{"type":"text","text":"Hello from the stub."}],"stop_reason":"end_turn","stop_sequence":null,"usage":{"input_tokens":10,"output_tokens":5}}).to_string();
                    ("application/json", msg)
                } else {
                    ("application/json", "{}".to_string())
                };
                corral_tests::write_stub_response(&mut s, content_type, &reply).await;
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
