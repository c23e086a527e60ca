//! Claude Code in stream-json mode (`corral spawn --agent claude --mode stream-json`), the real
//! `claude` from npm against the stub Messages API (`corral_tests::claude_stub`), in every
//! `cargo test`. Claude runs with stream-json in and out and its permission requests on stdout
//! (`--permission-prompt-tool stdio`, added by the profile); the stub asks for the Bash tool
//! (`touch <project>/made-by-claude`). Checked: a user message is one API call (agentapi's
//! `POST message`, or `corral send --paste`); the permission request becomes
//! `needs_permission` with the tool named and is answered through the same endpoint as a
//! terminal agent's (`corral answer`): allow → the file exists, deny → it does not and Claude
//! gets the message; messages, tool calls, results and the question are typed events; the
//! agentapi conversation shows the stub's reply; the log keeps the raw JSON lines; nothing is
//! left after a stop.

use std::time::{Duration, Instant};

use corral_tests::claude_stub::{Stub, claude_env, prepare_home, project_path};
use corral_tests::{Server, Webhooks, claude_code, until_no_processes};
use serde_json::{Value, json};

/// What the stub's second answer says (after it got the tool's result).
const REPLY: &str = "The stub saw the tool result.";

/// One structured Claude, with its own HOME, project and stub.
struct Claude {
    id: String,
    name: String,
    project: tempfile::TempDir,
    _home: tempfile::TempDir,
    stub: Stub,
}

impl Claude {
    /// Spawns it and waits until it is idle (its SessionStart hook came).
    async fn start(server: &Server, name: &str) -> Claude {
        let claude = claude_code().expect(
            "Claude Code is missing and `npm install @anthropic-ai/claude-code` failed: \
             run scripts/setup (needs node and npm)",
        );
        let project = tempfile::tempdir().unwrap();
        let home = tempfile::tempdir().unwrap();
        let dir = project_path(project.path());
        let stub = Stub::start(format!("touch {}", dir.join("made-by-claude").display())).await;
        prepare_home(home.path(), &dir);
        let env = claude_env(home.path(), &stub);
        let dir_arg = dir.display().to_string();
        let mut args = vec![
            "spawn",
            "--name",
            name,
            "--agent",
            "claude",
            "--mode",
            "stream-json",
            "--cwd",
            &dir_arg,
        ];
        for e in &env {
            args.extend(["--env", e.as_str()]);
        }
        let claude_arg = claude.display().to_string();
        args.extend(["--", &claude_arg, "--permission-mode", "default"]);
        let id = server.cli_ok(&args).await.trim().to_string();
        server
            .cli_ok(&["wait", name, "--for", "idle", "--timeout", "40"])
            .await;
        Claude {
            id,
            name: name.to_string(),
            project,
            _home: home,
            stub,
        }
    }

    fn target(&self) -> std::path::PathBuf {
        project_path(self.project.path()).join("made-by-claude")
    }

    /// Waits until the session needs a permission; checks what it asks for.
    async fn until_asked(&self, server: &Server) -> Value {
        let out = server
            .cli(&[
                "wait",
                &self.name,
                "--for",
                "needs_permission",
                "--timeout",
                "30",
            ])
            .await;
        assert!(
            out.status.success(),
            "{} never asked: {}\nsession: {}\nrequests: {:?}",
            self.name,
            String::from_utf8_lossy(&out.stderr),
            server.session(&self.name).await,
            self.stub.summary()
        );
        let s = server.session(&self.name).await;
        assert_eq!(s["attention"], "needs_permission", "{s}");
        assert_eq!(s["permission"]["tool"], "Bash", "{s}");
        assert_eq!(
            s["permission"]["input"]["command"],
            format!("touch {}", self.target().display()),
            "{s}"
        );
        assert!(s["permission"]["request_id"].is_string(), "{s}");
        assert!(!self.target().exists(), "the tool ran before any answer");
        s
    }

    /// The session's typed agent events (`type` of each `agent` event).
    async fn agent_events(&self, server: &Server) -> Vec<Value> {
        server.events_of(&self.name, "agent").await
    }

    /// Stops the session and the stub; nothing of the session may be left.
    async fn stop(self, server: &Server) {
        server.cli_ok(&["stop", &self.name]).await;
        until_no_processes(&self.id, Duration::from_secs(10)).await;
        self.stub.stop();
    }
}

/// agentapi's `GET messages`, until one of them is `text` from the agent (bounded).
async fn until_agent_says(server: &Server, name: &str, text: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, body) = server
            .http(
                "GET",
                &format!("/agentapi/{name}/messages"),
                Some(&server.token),
                None,
            )
            .await;
        assert_eq!(status, 200, "{body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        let said =
            v["messages"].as_array().unwrap().iter().any(|m| {
                m["role"] == "agent" && m["content"].as_str().unwrap_or("").contains(text)
            });
        if said {
            return v;
        }
        assert!(Instant::now() < deadline, "no agent message {text:?}: {v}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn stream_json_claude_asks_and_corral_answers_allow_through_the_same_endpoint() {
    let server = Server::start();
    let c = Claude::start(&server, "sj-allow").await;
    // agentapi's event stream, read from the start: (when, what) of each chunk.
    let mut stream = server
        .client()
        .send(
            hyper::Method::GET,
            "/agentapi/sj-allow/events",
            Some(&server.token),
            None,
        )
        .await
        .unwrap();
    let said = std::sync::Arc::new(std::sync::Mutex::new(Vec::<(Instant, String)>::new()));
    let reader = {
        let said = said.clone();
        tokio::spawn(async move {
            while let Ok(Some(chunk)) = stream.chunk().await {
                let text = String::from_utf8_lossy(&chunk).into_owned();
                said.lock().unwrap().push((Instant::now(), text));
            }
        })
    };
    // The stream has said where things stand before the message goes.
    let t = Instant::now();
    while !said
        .lock()
        .unwrap()
        .iter()
        .any(|(_, t)| t.contains("status_change"))
    {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "the stream said nothing"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // A user message is one call (agentapi's shape): Claude takes it as its prompt.
    let (status, body) = server
        .http(
            "POST",
            "/agentapi/sj-allow/message",
            Some(&server.token),
            Some(&json!({"content": "create the file", "type": "user"})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    c.until_asked(&server).await;
    let ps = server.cli_ok(&["ps"]).await;
    assert!(ps.contains("needs_permission (Bash: touch "), "{ps}");
    // Until the answer, the stream said the turn began and that it waits (asks), once each
    // (it said running, stable, running, stable: the prompt, counted after the turn had
    // been said, was taken for a second turn).
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let answered = Instant::now();
    let before: String = said
        .lock()
        .unwrap()
        .iter()
        .filter(|(at, _)| *at < answered)
        .map(|(_, t)| t.as_str())
        .collect();
    let statuses: Vec<&str> = before
        .match_indices(r#""status":""#)
        .map(|(at, m)| &before[at + m.len()..][..6])
        .collect();
    assert_eq!(statuses, ["stable", "runnin", "stable"], "{before}");
    reader.abort();
    server.cli_ok(&["answer", "sj-allow", "allow"]).await;
    server
        .cli_ok(&["wait", "sj-allow", "--for", "idle", "--timeout", "30"])
        .await;
    assert!(
        c.target().exists(),
        "the allowed tool did not run; requests: {:?}",
        c.stub.summary()
    );
    let results = c.stub.tool_results();
    assert_eq!(results.len(), 1, "{results:?}");
    assert_ne!(results[0]["is_error"], true, "{results:?}");
    // Nothing is open any more: another answer is refused, saying how the last one answered
    // and the state now.
    let s = server.session("sj-allow").await;
    assert!(s["permission"].is_null(), "{s}");
    let out = server.cli(&["answer", "sj-allow", "allow"]).await;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("was answered already (allowed") && err.contains("(attention: idle)"),
        "{err}"
    );
    // The conversation: the message sent, then the stub's reply.
    let messages = until_agent_says(&server, "sj-allow", REPLY).await;
    let list = messages["messages"].as_array().unwrap();
    assert_eq!(list[0]["role"], "user", "{messages}");
    assert_eq!(list[0]["content"], "create the file", "{messages}");
    let (_, status) = server
        .http(
            "GET",
            "/agentapi/sj-allow/status",
            Some(&server.token),
            None,
        )
        .await;
    assert!(status.contains("\"stable\""), "{status}");
    // Typed events, in order: the message, the call, the question, its answer, the result,
    // the reply, the turn's end.
    let types: Vec<String> = c
        .agent_events(&server)
        .await
        .iter()
        .map(|e| e["type"].as_str().unwrap_or("").to_string())
        .collect();
    let want = [
        "message",
        "tool_call",
        "permission_request",
        "permission_answered",
        "tool_result",
        "message",
        "result",
    ];
    let mut at = 0;
    for t in &types {
        if at < want.len() && t == want[at] {
            at += 1;
        }
    }
    assert_eq!(
        at,
        want.len(),
        "events {types:?} lack the sequence {want:?}"
    );
    // The log keeps the raw JSON lines, the control request among them.
    let logs = server.cli_ok(&["logs", "sj-allow"]).await;
    let raw: Vec<Value> = logs
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    assert!(
        raw.iter()
            .any(|l| l["type"] == "control_request" && l["request"]["subtype"] == "can_use_tool"),
        "{logs}"
    );
    assert!(raw.iter().any(|l| l["type"] == "result"), "{logs}");
    c.stop(&server).await;
}

#[tokio::test]
async fn stream_json_claude_denied_with_a_message_runs_nothing() {
    let server = Server::start();
    let c = Claude::start(&server, "sj-deny").await;
    // `corral send --paste` is the prompt too: one user message line.
    server
        .cli_ok(&["send", "sj-deny", "--paste", "create the file"])
        .await;
    c.until_asked(&server).await;
    // The permission endpoint itself, with a session-scoped write token's rights (admin here).
    let (status, body) = server
        .http(
            "POST",
            "/v1/sessions/sj-deny/permission",
            Some(&server.token),
            Some(&json!({"behavior": "deny", "message": "not in this test"})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    server
        .cli_ok(&["wait", "sj-deny", "--for", "idle", "--timeout", "30"])
        .await;
    assert!(!c.target().exists(), "the denied tool ran");
    let results = c.stub.tool_results();
    assert_eq!(results.len(), 1, "{results:?}");
    assert_eq!(results[0]["is_error"], true, "{results:?}");
    assert!(
        results[0]["content"]
            .to_string()
            .contains("not in this test"),
        "{results:?}"
    );
    let events = c.agent_events(&server).await;
    assert!(
        events
            .iter()
            .any(|e| e["type"] == "permission_answered" && e["behavior"] == "deny"),
        "{events:?}"
    );
    assert!(
        events
            .iter()
            .any(|e| e["type"] == "tool_result" && e["is_error"] == true),
        "{events:?}"
    );
    // A bad answer is refused with the reason, and changes nothing.
    let (status, body) = server
        .http(
            "POST",
            "/v1/sessions/sj-deny/permission",
            Some(&server.token),
            Some(&json!({"behavior": "maybe"})),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(server.session("sj-deny").await["attention"], "idle");
    c.stop(&server).await;
}

#[tokio::test]
async fn stream_json_mode_needs_an_agent_profile() {
    let server = Server::start();
    let out = server
        .cli(&["spawn", "--mode", "stream-json", "--", "cat"])
        .await;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("needs an agent profile"), "{err}");
    let ps: Value = serde_json::from_str(&server.cli_ok(&["ps", "--json"]).await).unwrap();
    assert_eq!(ps.as_array().map(Vec::len), Some(0), "{ps}");
}

/// The agent outlives its server (its holder keeps its pipes): a question open when the server
/// is SIGKILLed is still open, with its request id, when a new server adopts the session (the
/// state is rebuilt from the journal), and answering it then runs the tool.
#[tokio::test]
async fn stream_json_question_open_across_a_server_kill_is_answered_after() {
    let mut server = Server::start();
    let c = Claude::start(&server, "sj-kill").await;
    server
        .cli_ok(&["send", "sj-kill", "--paste", "create the file"])
        .await;
    let before = c.until_asked(&server).await;
    server.kill();
    server.restart();
    let after = server.session("sj-kill").await;
    assert_eq!(after["pid"], before["pid"], "{after}");
    assert_eq!(after["attention"], "needs_permission", "{after}");
    assert_eq!(after["permission"], before["permission"], "{after}");
    server.cli_ok(&["answer", "sj-kill", "allow"]).await;
    server
        .cli_ok(&["wait", "sj-kill", "--for", "idle", "--timeout", "30"])
        .await;
    assert!(
        c.target().exists(),
        "the tool allowed after the restart did not run; requests: {:?}",
        c.stub.summary()
    );
    until_agent_says(&server, "sj-kill", REPLY).await;
    c.stop(&server).await;
}

/// A structured agent's attention changes reach a webhook once each: needs_permission naming
/// the tool, then idle when the turn is over (its hooks, which run beside the stream, add none).
#[tokio::test]
async fn stream_json_attention_changes_reach_a_webhook_once_each() {
    let hooks = Webhooks::start().await;
    let port = hooks.port;
    let server = Server::start_configured(&format!(
        "[[notify.webhooks]]\nurl = \"http://127.0.0.1:{port}/hook\"\n"
    ));
    let c = Claude::start(&server, "sj-notify").await;
    server
        .cli_ok(&["send", "sj-notify", "--paste", "create the file"])
        .await;
    c.until_asked(&server).await;
    server.cli_ok(&["answer", "sj-notify", "allow"]).await;
    server
        .cli_ok(&["wait", "sj-notify", "--for", "idle", "--timeout", "30"])
        .await;
    let got: Vec<Value> = hooks
        .until(2, Duration::from_secs(15))
        .await
        .into_iter()
        .map(|(_, body)| body)
        .collect();
    let kinds: Vec<&str> = got
        .iter()
        .map(|n| n["kind"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(kinds, ["needs_permission", "idle"], "{got:?}");
    assert_eq!(got[0]["tool"], "Bash", "{got:?}");
    // The turn's answer (its `result`'s text).
    assert_eq!(got[1]["detail"], "The stub saw the tool result.", "{got:?}");
    assert_eq!(got[0]["name"], "sj-notify", "{got:?}");
    c.stop(&server).await;
}

/// Raw input to a structured agent must be whole JSON lines, each an object: keystrokes or a
/// line cut short would make Claude fail (it exits on input it cannot parse), so they are
/// refused (400, saying to send a prompt as a paste) and nothing reaches the program; whole
/// lines and a paste go through. (A stand-in program records its input: the check is corral's.)
#[tokio::test]
async fn raw_input_to_a_structured_agent_must_be_whole_json_lines() {
    let server = Server::start();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("stdin");
    // The profile's flags follow the program's name: a script that ignores them.
    let program = dir.path().join("stand-in");
    corral_tests::executable(
        &program,
        &format!("#!/bin/sh\nexec cat > '{}'\n", out.display()),
    );
    server
        .spawn(
            json!({"name": "sj-raw", "argv": [program], "mode": "stream_json", "agent": "claude"}),
        )
        .await;
    let mut ws = server.ws().await;
    for bad in [
        "hello",
        "{\"type\":\"user\"",
        "[1,2]\n",
        "{\"type\":\"user\"}",
    ] {
        let r = ws
            .call(json!({"type": "input", "session": "sj-raw", "data": bad}))
            .await;
        assert_eq!(r["code"], "bad_request", "{bad:?}: {r}");
        assert!(
            r["message"].as_str().unwrap().contains("whole JSON lines"),
            "{r}"
        );
    }
    let line = "{\"type\":\"control_response\",\"response\":{}}\n";
    ws.send(json!({"type": "input", "session": "sj-raw", "data": line}))
        .await;
    let sent = server.cli(&["send", "--paste", "sj-raw", "a prompt"]).await;
    assert!(sent.status.success(), "{sent:?}");
    let deadline = Instant::now() + Duration::from_secs(10);
    let got = loop {
        let got = std::fs::read_to_string(&out).unwrap_or_default();
        if got.contains("a prompt") {
            break got;
        }
        assert!(Instant::now() < deadline, "{got:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(got.starts_with(line), "{got:?}");
    assert!(!got.contains("hello") && !got.contains("[1,2]"), "{got:?}");
}
