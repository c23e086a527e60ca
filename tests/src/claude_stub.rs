//! A stub of the Anthropic Messages API for tests that run the real Claude Code, and what such
//! a Claude needs around it (its environment, a HOME whose `.claude.json` skips the first-run
//! screens). Shared by the permission tests (terminal) and the stream-json tests.
//!
//! The stub answers a Messages request that offers the Bash tool and carries no tool_result yet
//! with a `tool_use` running a given command, and anything else with a short text; every request
//! is logged for the tests to look at.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};

/// The API key Claude gets (approved in `.claude.json` by its last 20 characters).
pub const API_KEY: &str = "sk-ant-corral-test-0123456789abcdef";

/// The stub Messages API, one task (its connections in a JoinSet it owns, so aborting it ends
/// them all); aborted by [`Stub::stop`], or when dropped.
pub struct Stub {
    /// Its port on 127.0.0.1.
    pub port: u16,
    requests: Arc<Mutex<Vec<Value>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Stub {
    /// Listens on 127.0.0.1; the tool_use it hands out runs `command`.
    pub async fn start(command: String) -> Stub {
        let input = json!({"command": command, "description": "Create the file"});
        Stub::start_tool("Bash", input).await
    }

    /// Listens on 127.0.0.1; the tool_use it hands out is tool `name` with `input`.
    pub async fn start_tool(name: &str, input: Value) -> Stub {
        let tool = Arc::new((name.to_string(), input));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let log = requests.clone();
        let task = tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            loop {
                tokio::select! {
                    accepted = listener.accept() => match accepted {
                        Ok((stream, _)) => {
                            conns.spawn(serve(stream, log.clone(), tool.clone()));
                        }
                        Err(_) => return,
                    },
                    Some(_) = conns.join_next(), if !conns.is_empty() => {}
                }
            }
        });
        Stub {
            port,
            requests,
            task,
        }
    }

    /// Every request so far: `{method, path, body}` (body null unless JSON).
    pub fn requests(&self) -> Vec<Value> {
        self.requests.lock().unwrap().clone()
    }

    /// `METHOD path` of every request so far (for failure messages).
    pub fn summary(&self) -> Vec<String> {
        self.requests()
            .iter()
            .map(|r| format!("{} {}", r["method"], r["path"]).replace('"', ""))
            .collect()
    }

    /// The tool_result blocks Claude sent back.
    pub fn tool_results(&self) -> Vec<Value> {
        let mut out = Vec::new();
        for r in self.requests() {
            for m in r["body"]["messages"].as_array().into_iter().flatten() {
                for b in m["content"].as_array().into_iter().flatten() {
                    if b["type"] == "tool_result" && !out.contains(b) {
                        out.push(b.clone());
                    }
                }
            }
        }
        out
    }

    /// Ends the stub and its connections.
    pub fn stop(self) {
        self.task.abort();
    }
}

impl Drop for Stub {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One HTTP/1.1 request on `stream` (the reply closes the connection).
async fn serve(mut stream: TcpStream, log: Arc<Mutex<Vec<Value>>>, tool: Arc<(String, Value)>) {
    let Some(req) = crate::read_stub_request(&mut stream).await else {
        return;
    };
    let (method, path, body) = (req.method, req.path, req.body);
    log.lock()
        .unwrap()
        .push(json!({"method": method, "path": path, "body": body}));
    let is_messages = method == "POST"
        && path.starts_with("/v1/messages")
        && !path.starts_with("/v1/messages/count_tokens");
    let (content_type, reply) = if is_messages {
        messages_reply(&body, &tool.0, &tool.1)
    } else {
        ("application/json", "{}".to_string())
    };
    crate::write_stub_response(&mut stream, content_type, &reply).await;
}

/// The answer to a Messages request: a tool_use of `tool` with `input` while the request offers
/// that tool and carries no tool_result yet; a short text otherwise (the follow-up with the
/// tool's result, and side requests such as the session title). SSE when `stream` is set.
pub fn messages_reply(body: &Value, tool: &str, input: &Value) -> (&'static str, String) {
    let offers_bash = body["tools"]
        .as_array()
        .is_some_and(|t| t.iter().any(|t| t["name"] == tool));
    let has_result = body["messages"].as_array().is_some_and(|ms| {
        ms.iter().any(|m| {
            m["content"]
                .as_array()
                .is_some_and(|c| c.iter().any(|b| b["type"] == "tool_result"))
        })
    });
    let (block, stop_reason) = if offers_bash && !has_result {
        (
            json!({"type": "tool_use", "id": "toolu_stub_1", "name": tool, "input": input}),
            "tool_use",
        )
    } else if has_result {
        (
            json!({"type": "text", "text": "The stub saw the tool result."}),
            "end_turn",
        )
    } else {
        (json!({"type": "text", "text": "Stub title"}), "end_turn")
    };
    if body["stream"] != true {
        let msg = json!({
            "id": "msg_stub", "type": "message", "role": "assistant", "model": body["model"],
            "content": [block], "stop_reason": stop_reason, "stop_sequence": null,
            "usage": {"input_tokens": 10, "output_tokens": 5},
        });
        return ("application/json", msg.to_string());
    }
    let ev = sse_event;
    let mut sse = message_start(body);
    if block["type"] == "tool_use" {
        let empty = json!({"type": "tool_use", "id": block["id"], "name": tool, "input": {}});
        sse += &ev(
            "content_block_start",
            json!({"type": "content_block_start", "index": 0, "content_block": empty}),
        );
        // The input arrives as partial JSON, split as the API splits it.
        let text = input.to_string();
        let (a, b) = text.split_at(text.len() / 2);
        for part in [a, b] {
            sse += &ev(
                "content_block_delta",
                json!({"type": "content_block_delta", "index": 0,
                       "delta": {"type": "input_json_delta", "partial_json": part}}),
            );
        }
    } else {
        sse += &ev(
            "content_block_start",
            json!({"type": "content_block_start", "index": 0,
                   "content_block": {"type": "text", "text": ""}}),
        );
        sse += &ev(
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 0,
                   "delta": {"type": "text_delta", "text": block["text"]}}),
        );
    }
    sse += &message_end(stop_reason);
    ("text/event-stream", sse)
}

/// One server-sent event of the Messages API's stream.
pub fn sse_event(name: &str, data: Value) -> String {
    format!("event: {name}\ndata: {data}\n\n")
}

/// A streamed answer's first event, for a request with `body`.
pub fn message_start(body: &Value) -> String {
    let start = json!({
        "id": "msg_stub", "type": "message", "role": "assistant", "model": body["model"],
        "content": [], "stop_reason": null, "stop_sequence": null,
        "usage": {"input_tokens": 10, "output_tokens": 1},
    });
    sse_event(
        "message_start",
        json!({"type": "message_start", "message": start}),
    )
}

/// A streamed answer's last events: its content block (index 0) ends, then the message, with
/// `stop_reason`.
pub fn message_end(stop_reason: &str) -> String {
    let mut sse = sse_event(
        "content_block_stop",
        json!({"type": "content_block_stop", "index": 0}),
    );
    sse += &sse_event(
        "message_delta",
        json!({"type": "message_delta",
               "delta": {"stop_reason": stop_reason, "stop_sequence": null},
               "usage": {"output_tokens": 5}}),
    );
    sse += &sse_event("message_stop", json!({"type": "message_stop"}));
    sse
}

/// Claude's environment: its own HOME, the stub as the API, no updater, telemetry or other
/// traffic.
pub fn claude_env(home: &Path, stub: &Stub) -> Vec<String> {
    claude_env_at(home, stub.port)
}

/// [`claude_env`] for an API on `port` of 127.0.0.1 (a stub of a test's own).
pub fn claude_env_at(home: &Path, port: u16) -> Vec<String> {
    vec![
        format!("HOME={}", home.display()),
        format!("ANTHROPIC_BASE_URL=http://127.0.0.1:{port}"),
        format!("ANTHROPIC_API_KEY={API_KEY}"),
        "DISABLE_AUTOUPDATER=1".to_string(),
        "DISABLE_TELEMETRY=1".to_string(),
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC=1".to_string(),
    ]
}

/// The project dir as Claude sees its cwd (symlinks resolved).
pub fn project_path(p: &Path) -> PathBuf {
    p.canonicalize().unwrap()
}

/// Writes `home/.claude.json` so that Claude skips its first-run screens: onboarding done,
/// `project` trusted, [`API_KEY`] approved.
pub fn prepare_home(home: &Path, project: &Path) {
    let config = json!({
        "hasCompletedOnboarding": true,
        "theme": "dark",
        "projects": { project.display().to_string(): { "hasTrustDialogAccepted": true } },
        "customApiKeyResponses": {
            "approved": [&API_KEY[API_KEY.len() - 20..]],
            "rejected": [],
        },
    });
    std::fs::write(home.join(".claude.json"), config.to_string()).expect("write .claude.json");
}
