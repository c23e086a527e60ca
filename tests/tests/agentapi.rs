//! The agentapi-compatible endpoints (`/agentapi/{session}/…`, the shapes of coder/agentapi's
//! OpenAPI document) on real sessions: status from output quiet, a user message pasted and
//! entered then seen in the agent's screen message, raw keystrokes, the SSE stream's first
//! events, the OpenAPI document, and the same tokens and scopes as the rest of the API.

use std::time::{Duration, Instant};

use corral_tests::Server;
use serde_json::{Value, json};

async fn get(server: &Server, path: &str, token: Option<&str>) -> (u16, Value) {
    let (status, body) = server.http("GET", path, token, None).await;
    (
        status,
        serde_json::from_str(&body).unwrap_or(Value::String(body)),
    )
}

async fn until(mut check: impl AsyncFnMut() -> bool, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !check().await {
        assert!(Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until session `id`'s log holds `what` (a program's prompt, printed after its setup).
async fn until_logged(server: &Server, id: &str, what: &[u8]) {
    until(
        async || {
            corral_tests::log_bytes(server.dir.path(), id)
                .windows(what.len())
                .any(|w| w == what)
        },
        &format!("{} in the log", String::from_utf8_lossy(what)),
    )
    .await;
}

/// `POST /agentapi/{session}/message` of `kind` (`user`, `raw`) with `content`, with the admin
/// token: the HTTP status and body.
async fn message(server: &Server, session: &str, kind: &str, content: &str) -> (u16, String) {
    let body = json!({"content": content, "type": kind});
    let path = format!("/agentapi/{session}/message");
    server
        .http("POST", &path, Some(&server.token), Some(&body))
        .await
}

/// Posts hook event `name` to session `id`, as its agent's hook would; the HTTP status.
async fn hook(server: &Server, id: &str, name: &str) -> u16 {
    let payload = json!({"hook_event_name": name, "session_id": "s"});
    let path = format!("/v1/sessions/{id}/events");
    server
        .http("POST", &path, Some(&server.token), Some(&payload))
        .await
        .0
}

/// A session's agentapi event stream, read as text.
struct Events {
    stream: corral_client::http::Streaming,
    text: String,
}

impl Events {
    async fn open(server: &Server, session: &str) -> Events {
        let path = format!("/agentapi/{session}/events");
        let stream = server
            .client()
            .send(hyper::Method::GET, &path, Some(&server.token), None)
            .await
            .unwrap();
        Events {
            stream,
            text: String::new(),
        }
    }

    /// Everything the stream says within `d` (beyond what was read already).
    async fn within(&mut self, d: Duration) -> String {
        let end = Instant::now() + d;
        while let Ok(Ok(Some(chunk))) =
            tokio::time::timeout_at(end.into(), self.stream.chunk()).await
        {
            self.text.push_str(&String::from_utf8_lossy(&chunk));
        }
        std::mem::take(&mut self.text)
    }

    /// Reads until `want` comes, and returns everything read up to it (what follows is kept
    /// for the next call).
    async fn until(&mut self, want: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.text.contains(want) {
            assert!(Instant::now() < deadline, "no {want:?} in {}", self.text);
            match tokio::time::timeout(Duration::from_secs(5), self.stream.chunk()).await {
                Ok(Ok(Some(chunk))) => self.text.push_str(&String::from_utf8_lossy(&chunk)),
                other => panic!(
                    "stream ended or failed before {want:?}: {other:?} {}",
                    self.text
                ),
            }
        }
        // invariant: the loop above ends only once `want` is in the text.
        let end = self.text.find(want).unwrap() + want.len();
        let read = self.text[..end].to_string();
        self.text.drain(..end);
        read
    }
}

#[tokio::test]
async fn a_cat_session_speaks_agentapi() {
    let server = Server::start();
    let token = server.token.clone();
    let t = Some(token.as_str());
    server.spawn(json!({"argv": ["cat"], "name": "cat"})).await;
    until(
        async || get(&server, "/agentapi/cat/status", t).await.1["status"] == "stable",
        "a quiet session is stable",
    )
    .await;
    let (_, status) = get(&server, "/agentapi/cat/status", t).await;
    assert_eq!(status["agent_type"], "custom");
    // A user message: pasted, entered, echoed by the terminal; then in the conversation.
    let (code, body) = message(&server, "cat", "user", "hello agent").await;
    assert_eq!((code, body.as_str()), (200, r#"{"ok":true}"#));
    until(
        async || {
            let (_, m) = get(&server, "/agentapi/cat/messages", t).await;
            m["messages"][2]["content"]
                .as_str()
                .is_some_and(|c| c.contains("hello agent"))
        },
        "the echo in the agent message",
    )
    .await;
    // As agentapi: the agent's message before the user's (its screen then: empty), the
    // user's, then the agent's now; ids in order, each keeping its role.
    let (_, m) = get(&server, "/agentapi/cat/messages", t).await;
    let msgs = m["messages"].as_array().unwrap();
    let ids: Vec<u64> = msgs.iter().map(|m| m["id"].as_u64().unwrap()).collect();
    assert_eq!(ids, [0, 1, 2], "{m}");
    assert_eq!(msgs[0]["role"], "agent");
    assert_eq!(msgs[1]["role"], "user");
    assert_eq!(msgs[1]["content"], "hello agent");
    assert_eq!(msgs[2]["role"], "agent");
    for msg in msgs {
        for field in ["id", "content", "role", "time"] {
            assert!(!msg[field].is_null(), "{field} missing in {msg}");
        }
    }
    // Raw keystrokes are written as they are and not kept.
    let (code, _) = message(&server, "cat", "raw", "raw-keys\r").await;
    assert_eq!(code, 200);
    until(
        async || {
            let (_, m) = get(&server, "/agentapi/cat/messages", t).await;
            m["messages"].as_array().unwrap().len() == 3
                && m["messages"][2]["content"]
                    .as_str()
                    .is_some_and(|c| c.contains("raw-keys"))
        },
        "raw keystrokes on the screen",
    )
    .await;
    // A quiet screen's message keeps its time (when the screen last changed) from one read to
    // the next: a client that compares messages sees no change that did not happen.
    let times = async || {
        let (_, m) = get(&server, "/agentapi/cat/messages", t).await;
        m["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["time"].as_str().unwrap().to_string())
            .collect::<Vec<_>>()
    };
    let before = times().await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(times().await, before);
    // A bad type: 400.
    let (code, _) = message(&server, "cat", "shout", "x").await;
    assert_eq!(code, 400);
}

#[tokio::test]
async fn a_busy_session_is_running_and_refuses_user_messages() {
    let server = Server::start();
    let t = Some(server.token.as_str());
    server
        .spawn(
            json!({"argv": ["sh", "-c", "while :; do echo tick; sleep 0.1; done"], "name": "busy"}),
        )
        .await;
    until(
        async || get(&server, "/agentapi/busy/status", t).await.1["status"] == "running",
        "a printing session is running",
    )
    .await;
    let (code, body) = message(&server, "busy", "user", "hi").await;
    assert_eq!(code, 409, "{body}");
}

/// A refused user message changes nothing: the agent's last message stays what it was (a
/// refused one began a turn from there, and the answer was gone for good), and an ended
/// session says it has no running process.
#[tokio::test]
async fn a_refused_user_message_leaves_the_last_answer_alone() {
    let server = Server::start();
    let t = Some(server.token.as_str());
    server
        .spawn(json!({"argv": ["sh", "-c", "echo line one; echo line two"], "name": "printer"}))
        .await;
    until(
        async || get(&server, "/v1/sessions/printer", t).await.1["state"] == "stopped",
        "ended",
    )
    .await;
    let before = get(&server, "/agentapi/printer/messages", t).await.1;
    assert!(
        before["messages"][0]["content"]
            .as_str()
            .is_some_and(|c| c.contains("line two")),
        "{before}"
    );
    let (code, body) = message(&server, "printer", "user", "ping").await;
    assert_eq!(code, 409, "{body}");
    assert!(body.contains("no running process"), "{body}");
    let after = get(&server, "/agentapi/printer/messages", t).await.1;
    assert_eq!(after["messages"], before["messages"]);
}

#[tokio::test]
async fn events_openapi_and_scopes() {
    let server = Server::start();
    let t = Some(server.token.as_str());
    let info = server
        .spawn(json!({"argv": ["sh", "-c", "echo first screen; exec cat"], "name": "ev"}))
        .await;
    // SSE: the first events reconstruct the state.
    let client = server.client();
    let mut stream = client
        .send(hyper::Method::GET, "/agentapi/ev/events", t, None)
        .await
        .unwrap();
    assert_eq!(stream.response.status(), 200);
    assert_eq!(
        stream.response.headers()["content-type"],
        "text/event-stream"
    );
    let mut text = String::new();
    let deadline = Instant::now() + Duration::from_secs(15);
    while !(text.contains("event: status_change") && text.contains("first screen")) {
        let chunk = tokio::time::timeout(Duration::from_secs(5), stream.chunk())
            .await
            .expect("an event within 5 s")
            .unwrap()
            .expect("the stream stays open");
        text.push_str(&String::from_utf8_lossy(&chunk));
        assert!(Instant::now() < deadline, "{text}");
    }
    assert!(text.contains("event: message_update"), "{text}");
    // The OpenAPI document names agentapi's paths and shapes.
    let (code, doc) = get(&server, "/agentapi/ev/openapi.json", t).await;
    assert_eq!(code, 200);
    for path in ["/status", "/messages", "/message", "/events"] {
        assert!(doc["paths"][path].is_object(), "{path}");
    }
    assert_eq!(
        doc["components"]["schemas"]["Message"]["required"],
        json!(["content", "id", "role", "time"])
    );
    // Scopes: a read token reads but cannot post; no token is refused.
    let out = std::process::Command::new(corral_tests::binary())
        .arg("--data-dir")
        .arg(server.dir.path())
        .args(["token", "create", "--session", "ev", "--scope", "read"])
        .output()
        .unwrap();
    let read = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert_eq!(
        get(&server, "/agentapi/ev/status", Some(&read)).await.0,
        200
    );
    let (code, _) = server
        .http(
            "POST",
            "/agentapi/ev/message",
            Some(&read),
            Some(&json!({"content": "x", "type": "raw"})),
        )
        .await;
    assert_eq!(code, 403);
    assert_eq!(get(&server, "/agentapi/ev/status", None).await.0, 401);
    assert_eq!(get(&server, "/agentapi/nope/status", t).await.0, 404);
    assert!(info["id"].is_string());
}

/// An agent's `stable` has two meanings agentapi does not tell apart: waiting for a prompt, and
/// waiting for a permission answer. A user message in the second would be typed into the
/// question's dialog (its Enter picks "Yes"), so it is refused (409, saying to answer first) and
/// nothing reaches the program. A message to an idle agent is `running` from the moment it is
/// accepted (its UserPromptSubmit hook comes later), so a second one is refused, not pasted
/// into the first.
#[tokio::test]
async fn a_user_message_never_answers_a_question_and_makes_the_agent_running_at_once() {
    let server = Server::start();
    let t = Some(server.token.as_str());
    let info = server
        .spawn(json!({"argv": ["sh", "-c", "stty -echo; exec cat"], "name": "agent"}))
        .await;
    let id = info["id"].as_str().unwrap().to_string();
    let hook = |payload: Value| {
        let (server, path) = (&server, format!("/v1/sessions/{id}/events"));
        async move { server.http("POST", &path, t, Some(&payload)).await }
    };
    hook(json!({"hook_event_name": "SessionStart", "session_id": "s1"})).await;
    // Stable once 700 ms passed without a hook (Claude paints after its hooks).
    until(
        async || get(&server, "/agentapi/agent/status", t).await.1["status"] == "stable",
        "stable after its start",
    )
    .await;
    let message = |text: &str| {
        let body = json!({"content": text, "type": "user"});
        let server = &server;
        async move {
            server
                .http("POST", "/agentapi/agent/message", t, Some(&body))
                .await
        }
    };
    let (code, body) = message("first").await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(
        get(&server, "/agentapi/agent/status", t).await.1["status"],
        "running"
    );
    let (code, body) = message("second").await;
    assert_eq!(code, 409, "{body}");
    hook(json!({"hook_event_name": "UserPromptSubmit", "prompt": "first"})).await;
    // The agent asks (its hook call holds the question while the messages below are tried).
    let asked = hook(
        json!({"hook_event_name": "PermissionRequest", "tool_name": "Bash", "tool_input": {"command": "rm -rf build"}}),
    );
    let tried = async {
        until(
            async || server.session("agent").await["attention"] == "needs_permission",
            "the question is open",
        )
        .await;
        // Stable once the screen settled (cat printed the first message a moment ago).
        until(
            async || get(&server, "/agentapi/agent/status", t).await.1["status"] == "stable",
            "stable while it asks",
        )
        .await;
        let (code, body) = message("yes please").await;
        assert_eq!(code, 409, "{body}");
        assert!(body.contains("asks a permission"), "{body}");
        let (code, body) = server
            .http(
                "POST",
                "/v1/sessions/agent/permission",
                t,
                Some(&json!({"behavior": "deny"})),
            )
            .await;
        assert_eq!(code, 200, "{body}");
    };
    let ((code, _), ()) = tokio::join!(asked, tried);
    assert_eq!(code, 200);
    // The program's screen (agentapi's agent message): only the accepted message reached it.
    let screen = async || {
        let messages = get(&server, "/agentapi/agent/messages", t).await.1;
        messages["messages"].as_array().unwrap().last().unwrap()["content"]
            .as_str()
            .unwrap()
            .to_string()
    };
    until(
        async || screen().await.contains("first"),
        "the message reached cat",
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let shown = screen().await;
    assert!(
        !shown.contains("second") && !shown.contains("yes please"),
        "{shown:?}"
    );
}

/// The event stream tells a whole turn even when it is shorter than its settling time (a
/// prompt and the turn's end 20 ms apart: `running`, then `stable`), and it ends when its
/// session is removed (it used to stay open, silent, until the client gave up).
#[tokio::test]
async fn the_event_stream_tells_short_turns_and_ends_with_its_session() {
    let server = Server::start();
    let t = Some(server.token.as_str());
    let info = server
        .spawn(json!({"argv": ["sleep", "600"], "name": "quick"}))
        .await;
    let id = info["id"].as_str().unwrap().to_string();
    hook(&server, &id, "SessionStart").await;
    let mut events = Events::open(&server, "quick").await;
    events.until(r#""status":"stable""#).await;
    hook(&server, &id, "UserPromptSubmit").await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    hook(&server, &id, "Stop").await;
    events.until(r#""status":"running""#).await;
    events.until(r#""status":"stable""#).await;
    // Removed: the stream ends.
    let (code, body) = server
        .http("DELETE", &format!("/v1/sessions/{id}"), t, None)
        .await;
    assert_eq!(code, 200, "{body}");
    let ended = tokio::time::timeout(Duration::from_secs(5), async {
        while let Ok(Some(_)) = events.stream.chunk().await {}
    })
    .await;
    assert!(
        ended.is_ok(),
        "the stream stayed open after its session was removed"
    );
}

/// A user message that starts no turn (a slash command such as `/cost`: no UserPromptSubmit
/// hook follows) makes the agent `running` only for a moment: with no hook or event after it,
/// it is `stable` again within a few seconds (it stayed `running` for ever, and every later
/// message was refused).
#[tokio::test]
async fn a_message_that_starts_no_turn_does_not_leave_the_agent_running() {
    let server = Server::start();
    let t = Some(server.token.as_str());
    let info = server
        .spawn(json!({"argv": ["sh", "-c", "stty -echo; exec cat > /dev/null"], "name": "quiet"}))
        .await;
    let id = info["id"].as_str().unwrap().to_string();
    assert_eq!(hook(&server, &id, "SessionStart").await, 202);
    until(
        async || get(&server, "/agentapi/quiet/status", t).await.1["status"] == "stable",
        "stable after its start",
    )
    .await;
    let (code, body) = message(&server, "quiet", "user", "/cost").await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(
        get(&server, "/agentapi/quiet/status", t).await.1["status"],
        "running"
    );
    until(
        async || get(&server, "/agentapi/quiet/status", t).await.1["status"] == "stable",
        "stable again without a hook",
    )
    .await;
    let (code, body) = message(&server, "quiet", "user", "next").await;
    assert_eq!(code, 200, "{body}");
}

/// A revoked token ends the event streams it opened, as it closes WebSockets (they went on
/// delivering the session's screen after `corral token revoke` said it was revoked).
#[tokio::test]
async fn a_revoked_token_ends_its_event_streams() {
    let server = Server::start();
    let info = server
        .spawn(json!({"argv": ["sh", "-c", "while :; do echo tick; sleep 0.2; done"], "name": "ticks"}))
        .await;
    let id = info["id"].as_str().unwrap().to_string();
    let token = server.scoped_token(&id, "read").await;
    let client = server.client();
    let mut stream = client
        .send(
            hyper::Method::GET,
            "/agentapi/ticks/events",
            Some(&token),
            None,
        )
        .await
        .unwrap();
    let first = tokio::time::timeout(Duration::from_secs(10), stream.chunk())
        .await
        .unwrap();
    assert!(matches!(first, Ok(Some(_))), "{first:?}");
    let token_id = token.split('_').nth(1).unwrap();
    let (code, body) = server
        .http(
            "DELETE",
            &format!("/v1/tokens/{token_id}"),
            Some(&server.token),
            None,
        )
        .await;
    assert_eq!(code, 200, "{body}");
    let ended = tokio::time::timeout(Duration::from_secs(5), async {
        while let Ok(Some(_)) = stream.chunk().await {}
    })
    .await;
    assert!(ended.is_ok(), "the stream outlived its token");
}

/// Clients that all saw the agent `stable` post at the same moment: one message is taken, the
/// others are refused (409) — both typed into the agent's prompt would have been one prompt to
/// it, while the conversation listed two.
#[tokio::test]
async fn of_user_messages_posted_at_once_one_is_taken() {
    let server = Server::start();
    let t = Some(server.token.as_str());
    let info = server
        .spawn(json!({"argv": ["sh", "-c", "stty -echo; echo ready; exec cat"], "name": "race"}))
        .await;
    let id = info["id"].as_str().unwrap().to_string();
    // Echo off before anything is typed (else the terminal echoes the message too).
    until_logged(&server, &id, b"ready").await;
    assert_eq!(hook(&server, &id, "SessionStart").await, 202);
    until(
        async || get(&server, "/agentapi/race/status", t).await.1["status"] == "stable",
        "stable",
    )
    .await;
    let posts = (0..8).map(|i| {
        let body = json!({"content": format!("task-{i}"), "type": "user"});
        let server = &server;
        async move {
            server
                .http("POST", "/agentapi/race/message", t, Some(&body))
                .await
        }
    });
    let answers = futures::future::join_all(posts).await;
    let taken: Vec<usize> = (0..8).filter(|&i| answers[i].0 == 200).collect();
    assert_eq!(taken.len(), 1, "{answers:?}");
    for (code, body) in &answers {
        assert!(*code == 200 || *code == 409, "{code} {body}");
    }
    // Only that one reached the program.
    let screen = async || {
        let m = get(&server, "/agentapi/race/messages", t).await.1;
        m["messages"].as_array().unwrap().last().unwrap()["content"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let want = format!("task-{}", taken[0]);
    until(async || screen().await.contains(&want), "the message taken").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        screen().await.matches("task-").count(),
        1,
        "{}",
        screen().await
    );
    let user: Vec<Value> = get(&server, "/agentapi/race/messages", t).await.1["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["role"] == "user")
        .cloned()
        .collect();
    assert_eq!(user.len(), 1, "{user:?}");
}

/// A user message sent while the stream settles after output, and a turn over before the
/// settling ends: the stream still says `running`, then `stable` (it sampled the status once
/// after settling, and found the turn over: a client waiting for the turn waited for ever).
/// Also: empty messages are refused, as agentapi does, and the status names its transport.
#[tokio::test]
async fn the_event_stream_says_running_for_a_turn_over_before_it_settled() {
    let server = Server::start();
    let t = Some(server.token.as_str());
    let info = server
        .spawn(json!({"argv": ["sh", "-c", "stty -echo; exec cat"], "name": "fast"}))
        .await;
    let id = info["id"].as_str().unwrap().to_string();
    hook(&server, &id, "SessionStart").await;
    let (_, status) = get(&server, "/agentapi/fast/status", t).await;
    assert_eq!(status["transport"], "pty", "{status}");
    for empty in ["", " \n\t "] {
        let (code, body) = message(&server, "fast", "user", empty).await;
        assert_eq!(code, 400, "{body}");
        assert!(body.contains("must not be empty"), "{body}");
    }
    let mut events = Events::open(&server, "fast").await;
    events.until(r#""status":"stable""#).await;
    // An event that changes nothing: the stream settles for a moment; the whole turn happens
    // meanwhile.
    assert_eq!(hook(&server, &id, "Notification").await, 202);
    let (code, body) = message(&server, "fast", "user", "quick task").await;
    assert_eq!(code, 200, "{body}");
    hook(&server, &id, "UserPromptSubmit").await;
    hook(&server, &id, "Stop").await;
    events.until(r#""status":"running""#).await;
    events.until(r#""status":"stable""#).await;
    // And that turn once: its hooks, read after it was over, are no second turn (the stream
    // said running and stable again half a second later, which GET status never said).
    let after = events.within(Duration::from_millis(1200)).await;
    assert!(!after.contains(r#""status":"running""#), "{after}");
}

/// A shell (no hooks) that answered a user message is `stable` once its output has been quiet
/// for `agentapi::QUIET`, as the docs say: it stayed `running` for all of `PROMPT_PENDING`
/// (3 s), waiting for a hook that never comes.
#[tokio::test]
async fn a_shell_that_answered_is_stable_after_its_quiet() {
    let server = Server::start();
    let t = Some(server.token.as_str());
    server
        .spawn(json!({"argv": ["bash", "--norc", "-i"], "name": "sh"}))
        .await;
    until(
        async || get(&server, "/agentapi/sh/status", t).await.1["status"] == "stable",
        "stable before the message",
    )
    .await;
    let (code, body) = message(&server, "sh", "user", "echo answered-$((6*7))").await;
    assert_eq!(code, 200, "{body}");
    let sent = Instant::now();
    assert_eq!(
        get(&server, "/agentapi/sh/status", t).await.1["status"],
        "running"
    );
    until(
        async || get(&server, "/agentapi/sh/status", t).await.1["status"] == "stable",
        "stable after the answer",
    )
    .await;
    let took = sent.elapsed();
    assert!(
        took < Duration::from_millis(2500),
        "stable only after {took:?}"
    );
    let (_, messages) = get(&server, "/agentapi/sh/messages", t).await;
    assert!(messages.to_string().contains("answered-42"), "{messages}");
}

/// A client that polls GET status and posts the next prompt the moment it says `stable`: the
/// event stream says that `stable` too (it sampled a second after the last turn's hooks, so a
/// stable moment shorter than that went unsaid, and a client counting turns by the stream
/// counted two turns as one).
#[tokio::test]
async fn the_event_stream_says_a_stable_moment_a_poller_ended_at_once() {
    let server = Server::start();
    let t = Some(server.token.as_str());
    let info = server
        .spawn(json!({"argv": ["sh", "-c", "stty -echo; exec cat"], "name": "poll"}))
        .await;
    let id = info["id"].as_str().unwrap().to_string();
    hook(&server, &id, "SessionStart").await;
    let mut events = Events::open(&server, "poll").await;
    events.until(r#""status":"stable""#).await;
    for prompt in ["first", "second", "third"] {
        until(
            async || get(&server, "/agentapi/poll/status", t).await.1["status"] == "stable",
            "stable before the next prompt",
        )
        .await;
        let (code, body) = message(&server, "poll", "user", prompt).await;
        assert_eq!(code, 200, "{body}");
        assert_eq!(hook(&server, &id, "UserPromptSubmit").await, 202);
        assert_eq!(hook(&server, &id, "Stop").await, 202);
    }
    let mut said = String::new();
    for _ in 0..3 {
        said.push_str(&events.until(r#""status":"stable""#).await);
    }
    said.push_str(&events.within(Duration::from_millis(1500)).await);
    assert_eq!(statuses(&said), ["running", "stable"].repeat(3), "{said}");
}

/// The statuses an event stream's text says, in order.
fn statuses(said: &str) -> Vec<&str> {
    said.match_indices(r#""status":""#)
        .map(|(at, m)| {
            let rest = &said[at + m.len()..];
            // invariant: the server writes each status as a JSON string, closed by a quote.
            &rest[..rest.find('"').unwrap()]
        })
        .collect()
}

/// A terminal agent stable for a moment between two turns, the next begun at its terminal (no
/// user message posted, only its hooks): the stream samples the moment its screen has had
/// time to paint, not up to a second later, when the next turn had begun.
#[tokio::test]
async fn the_event_stream_says_stable_the_moment_a_turns_answer_painted() {
    let server = Server::start();
    let info = server
        .spawn(json!({"argv": ["sh", "-c", "stty -echo; exec cat"], "name": "typed"}))
        .await;
    let id = info["id"].as_str().unwrap().to_string();
    hook(&server, &id, "SessionStart").await;
    let mut events = Events::open(&server, "typed").await;
    events.until(r#""status":"stable""#).await;
    assert_eq!(hook(&server, &id, "UserPromptSubmit").await, 202);
    events.until(r#""status":"running""#).await;
    assert_eq!(hook(&server, &id, "Stop").await, 202);
    // Stable 0.7 s after its Stop (`agentapi::PAINT`); the next turn begins 1.1 s after it
    // (before the stream's old second-long look, 1.25 s after).
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(hook(&server, &id, "UserPromptSubmit").await, 202);
    assert_eq!(hook(&server, &id, "Stop").await, 202);
    let said = events.within(Duration::from_millis(2500)).await;
    assert_eq!(statuses(&said), ["stable", "running", "stable"], "{said}");
}

/// Claude Code fires Stop before it repaints its answer: an agent whose hooks say it waits is
/// `stable` only once its screen settled (a client that posted at `stable` froze that turn's
/// agent message without its answer). A screen that never settles is never `stable`.
#[tokio::test]
async fn an_idle_agent_is_stable_once_its_screen_settled() {
    let server = Server::start();
    let t = Some(server.token.as_str());
    let info = server
        .spawn(json!({"argv": ["sh", "-c", "while :; do echo tick; sleep 0.05; done"], "name": "ticks"}))
        .await;
    let id = info["id"].as_str().unwrap().to_string();
    assert_eq!(hook(&server, &id, "SessionStart").await, 202);
    assert_eq!(server.session("ticks").await["attention"], "idle");
    for _ in 0..10 {
        assert_eq!(
            get(&server, "/agentapi/ticks/status", t).await.1["status"],
            "running"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A terminal agent that has waited a while is not `running` for a redraw of its screen (Claude
/// Code takes its "/effort" hint away 10 s after a turn): a client counting turns by `running`
/// then `stable` counted one that nobody started.
#[tokio::test]
async fn a_waiting_agents_redraw_is_no_turn() {
    let server = Server::start();
    let t = Some(server.token.as_str());
    let info = server
        .spawn(json!({"argv": ["sh", "-c", "stty -echo; while read x; do printf 'hint gone'; done"], "name": "hint"}))
        .await;
    let id = info["id"].as_str().unwrap().to_string();
    for name in ["SessionStart", "UserPromptSubmit", "Stop"] {
        assert_eq!(hook(&server, &id, name).await, 202);
    }
    until(
        async || get(&server, "/agentapi/hint/status", t).await.1["status"] == "stable",
        "stable after its turn",
    )
    .await;
    tokio::time::sleep(Duration::from_millis(2200)).await;
    assert_eq!(message(&server, "hint", "raw", "\n").await.0, 200);
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_millis(800) {
        assert_eq!(
            get(&server, "/agentapi/hint/status", t).await.1["status"],
            "stable",
            "a redraw after {:?}",
            t0.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(server.session("hint").await["output_offset"].as_u64() > Some(0));
}

/// An agent waiting when the server is upgraded is `stable` at once under the next server: its
/// state came from before, not from a turn just over (it said `running` for 0.75 s, and a user
/// message in that window was refused as "running").
#[tokio::test]
async fn an_agent_waiting_through_an_upgrade_stays_stable() {
    let mut server = Server::start();
    let info = server
        .spawn(json!({"argv": ["sh", "-c", "stty -echo; exec cat"], "name": "up"}))
        .await;
    let id = info["id"].as_str().unwrap().to_string();
    for name in ["SessionStart", "UserPromptSubmit", "Stop"] {
        assert_eq!(hook(&server, &id, name).await, 202);
    }
    let t = server.token.clone();
    until(
        async || get(&server, "/agentapi/up/status", Some(&t)).await.1["status"] == "stable",
        "stable",
    )
    .await;
    server.cli_ok(&["upgrade"]).await;
    server.follow_successor();
    let (code, status) = get(&server, "/agentapi/up/status", Some(&t)).await;
    assert_eq!(code, 200, "{status}");
    assert_eq!(status["status"], "stable", "right after the upgrade");
}

/// A terminal agent's conversation outlives its server: after `corral upgrade` and after a
/// SIGKILL the messages posted before are there with the same ids, roles and texts, and the
/// next message goes on from them (the conversation was in the server's memory: an upgrade
/// started it again at id 0 with the screen alone).
#[tokio::test]
async fn a_terminal_conversation_keeps_its_messages_and_ids_across_an_upgrade_and_a_crash() {
    let mut server = Server::start();
    server.spawn(json!({"argv": ["cat"], "name": "kept"})).await;
    let t = server.token.clone();
    let stable = async |server: &Server| {
        until(
            async || get(server, "/agentapi/kept/status", Some(&t)).await.1["status"] == "stable",
            "stable",
        )
        .await
    };
    let settled = async |server: &Server| -> Vec<(u64, String, String, String)> {
        let (code, m) = get(server, "/agentapi/kept/messages", Some(&t)).await;
        assert_eq!(code, 200, "{m}");
        let msgs = m["messages"].as_array().unwrap();
        // All but the last (the agent's message now: its screen, which a restart redraws); times
        // included (a client diffing messages sees no change that did not happen).
        msgs[..msgs.len() - 1]
            .iter()
            .map(|m| {
                let s = |k: &str| m[k].as_str().unwrap().to_string();
                (
                    m["id"].as_u64().unwrap(),
                    s("role"),
                    s("content"),
                    s("time"),
                )
            })
            .collect()
    };
    stable(&server).await;
    assert_eq!(
        message(&server, "kept", "user", "first question").await.0,
        200
    );
    stable(&server).await;
    assert_eq!(
        message(&server, "kept", "user", "second question").await.0,
        200
    );
    stable(&server).await;
    let before = settled(&server).await;
    let roles: Vec<&str> = before.iter().map(|m| m.1.as_str()).collect();
    assert_eq!(roles, ["agent", "user", "agent", "user"], "{before:?}");
    assert_eq!(before[3].2, "second question");
    server.cli_ok(&["upgrade"]).await;
    server.follow_successor();
    assert_eq!(settled(&server).await, before, "after the upgrade");
    server.kill();
    server.restart();
    assert_eq!(settled(&server).await, before, "after a server kill");
    // The next message goes on from them.
    stable(&server).await;
    assert_eq!(
        message(&server, "kept", "user", "third question").await.0,
        200
    );
    let after = settled(&server).await;
    assert_eq!(after[..4], before[..], "{after:?}");
    assert_eq!(
        (after[5].0, after[5].2.as_str()),
        (5, "third question"),
        "{after:?}"
    );
}

/// An agent that drew a screen and sits quiet before its first hook (Claude Code's folder
/// trust dialog) is `stable` after a while instead of `running` for ever, and a user message
/// is refused saying why (its Enter would answer that screen's question).
#[tokio::test]
async fn an_agent_quiet_before_it_started_is_stable_and_says_why_it_takes_no_message() {
    let server = Server::start();
    let t = Some(server.token.as_str());
    // A program under the claude profile, which ignores the arguments the profile adds.
    let dir = tempfile::tempdir().unwrap();
    let program = dir.path().join("trust.sh");
    corral_tests::executable(
        &program,
        "#!/bin/sh\necho 'Do you trust this folder? 1. Yes 2. No'\nexec cat\n",
    );
    server
        .spawn(json!({"argv": [program], "name": "trust", "agent": "claude"}))
        .await;
    assert_eq!(server.session("trust").await["attention"], "starting");
    assert_eq!(
        get(&server, "/agentapi/trust/status", t).await.1["status"],
        "running"
    );
    let deadline = Instant::now() + Duration::from_secs(15);
    while get(&server, "/agentapi/trust/status", t).await.1["status"] != "stable" {
        assert!(Instant::now() < deadline, "still running");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (code, body) = message(&server, "trust", "user", "do the task").await;
    assert_eq!(code, 409, "{body}");
    assert!(body.contains("has not started"), "{body}");
}

/// A terminal agent whose hooks said it works, and then nothing moves — no hook, no output —
/// for 10 s: the Stop hook was lost (sent while no server was there), and the agent is `stable`
/// again instead of `running` (and refusing every message) until Claude's own idle notice a
/// minute later, or for ever without one.
#[tokio::test]
async fn an_agent_still_for_long_after_its_hooks_said_working_is_stable() {
    let server = Server::start();
    let t = Some(server.token.as_str());
    let info = server
        .spawn(json!({"argv": ["sh", "-c", "echo ready; stty -echo; exec cat > /dev/null"], "name": "still"}))
        .await;
    let id = info["id"].as_str().unwrap().to_string();
    for name in ["SessionStart", "UserPromptSubmit"] {
        assert_eq!(hook(&server, &id, name).await, 202);
    }
    assert_eq!(server.session("still").await["attention"], "working");
    let started = Instant::now();
    assert_eq!(
        get(&server, "/agentapi/still/status", t).await.1["status"],
        "running"
    );
    while get(&server, "/agentapi/still/status", t).await.1["status"] != "stable" {
        assert!(started.elapsed() < Duration::from_secs(20), "still running");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // Not before the 10 s.
    assert!(
        started.elapsed() >= Duration::from_secs(9),
        "{:?}",
        started.elapsed()
    );
}

/// A program on pipes speaks agentapi too: its agent message is what it printed since the
/// last user message (it was always empty: there is no screen), and once it answered and went
/// quiet it is `stable` (not `running` for the whole time a prompt is given to start a turn).
#[tokio::test]
async fn a_pipe_program_answers_in_its_agent_message() {
    let server = Server::start();
    let t = Some(server.token.as_str());
    let script = "import sys\nprint('hello', flush=True)\nfor l in sys.stdin: print('got', l.strip(), flush=True)";
    server
        .spawn(json!({"argv": ["python3", "-u", "-c", script], "name": "pipe", "mode": "pipe"}))
        .await;
    until(
        async || {
            let m = get(&server, "/agentapi/pipe/messages", t).await.1;
            m["messages"][0]["content"] == "hello"
                && get(&server, "/agentapi/pipe/status", t).await.1["status"] == "stable"
        },
        "its greeting, then quiet",
    )
    .await;
    let (code, body) = message(&server, "pipe", "user", "hello pipe").await;
    assert_eq!(code, 200, "{body}");
    let posted = Instant::now();
    until(
        async || get(&server, "/agentapi/pipe/status", t).await.1["status"] == "stable",
        "stable once it answered",
    )
    .await;
    assert!(
        posted.elapsed() < Duration::from_millis(2800),
        "{:?}",
        posted.elapsed()
    );
    let m = get(&server, "/agentapi/pipe/messages", t).await.1;
    let msgs = m["messages"].as_array().unwrap();
    assert_eq!(msgs.len(), 3, "{m}");
    assert_eq!(msgs[0]["content"], "hello", "{m}");
    assert_eq!(msgs[1]["content"], "hello pipe", "{m}");
    assert_eq!(msgs[2]["content"], "got hello pipe", "{m}");
    // Stable means a message is taken (it was refused while the first one counted as pending).
    let (code, body) = message(&server, "pipe", "user", "again").await;
    assert_eq!(code, 200, "{body}");
    until(
        async || {
            let m = get(&server, "/agentapi/pipe/messages", t).await.1;
            m["messages"][4]["content"] == "got again"
        },
        "its second answer",
    )
    .await;
}

/// A user message is answered once it is entered — its Enter written, 100 ms after the paste at
/// the soonest — not when it is queued: a server gone in between fails the request instead of
/// having answered `ok` for a prompt that never reached the agent. A program that printed
/// nothing yet is not stable: its quiet counts from its start.
#[tokio::test]
async fn a_user_message_is_answered_once_entered() {
    let server = Server::start();
    let t = Some(server.token.as_str());
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("got");
    let script = format!(
        "sleep 0.2; echo ready; stty -echo; exec cat > '{}'",
        file.display()
    );
    let info = server
        .spawn(json!({"argv": ["sh", "-c", script], "name": "entered"}))
        .await;
    let id = info["id"].as_str().unwrap().to_string();
    // Not stable before its first byte: quiet counts from its start (it was stable, and a
    // message sent then raced the prompt it printed: refused as running).
    assert_eq!(
        get(&server, "/agentapi/entered/status", t).await.1["status"],
        "running"
    );
    until_logged(&server, &id, b"ready").await;
    until(
        async || get(&server, "/agentapi/entered/status", t).await.1["status"] == "stable",
        "quiet",
    )
    .await;
    let sent = Instant::now();
    let (code, body) = message(&server, "entered", "user", "do the task").await;
    assert_eq!(code, 200, "{body}");
    assert!(
        sent.elapsed() >= Duration::from_millis(90),
        "answered before its Enter: {:?}",
        sent.elapsed()
    );
    until(
        async || std::fs::read_to_string(&file).unwrap_or_default() == "do the task\n",
        "the line",
    )
    .await;
}

/// A long answer comes back whole, as from agentapi's 1000-row terminal: the agent's message
/// is what the program printed since the user message, the lines that scrolled off its
/// 24-row screen included (it used to be the screen: the last 24 lines), without what the
/// screen showed before; read after the Ring (4 KiB here) let go of it, from the log.
#[tokio::test]
async fn a_long_answer_comes_back_whole() {
    let mut server = Server::start();
    let t = Some(server.token.as_str());
    server
        .spawn(json!({
            "name": "long", "ring_capacity": 4096, "size": {"rows": 24, "cols": 80},
            "argv": ["sh", "-c", "echo banner; while read l; do i=0; while [ $i -lt 300 ]; do echo \"answer to $l, line $i\"; i=$((i+1)); done; done"],
        }))
        .await;
    until(
        async || get(&server, "/agentapi/long/status", t).await.1["status"] == "stable",
        "a quiet session is stable",
    )
    .await;
    let (code, body) = message(&server, "long", "user", "q1").await;
    assert_eq!(code, 200, "{body}");
    let answer = async || {
        let (_, m) = get(&server, "/agentapi/long/messages", t).await;
        m["messages"].as_array().unwrap().last().unwrap()["content"]
            .as_str()
            .unwrap()
            .to_string()
    };
    until(
        async || answer().await.contains("answer to q1, line 299"),
        "the whole answer",
    )
    .await;
    let text = answer().await;
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines.first(),
        Some(&"q1"),
        "the echoed message first: {text}"
    );
    for i in 0..300 {
        assert_eq!(lines[1 + i], format!("answer to q1, line {i}"), "{text}");
    }
    assert!(!text.contains("banner"), "{text}");
    // The next message settles this answer as it is and begins another.
    until(
        async || get(&server, "/agentapi/long/status", t).await.1["status"] == "stable",
        "stable after the answer",
    )
    .await;
    let (code, _) = message(&server, "long", "user", "q2").await;
    assert_eq!(code, 200);
    until(
        async || answer().await.contains("answer to q2, line 299"),
        "the second answer",
    )
    .await;
    let (_, m) = get(&server, "/agentapi/long/messages", t).await;
    let msgs = m["messages"].as_array().unwrap();
    assert_eq!(msgs.len(), 5, "{m}");
    assert!(
        msgs[2]["content"]
            .as_str()
            .unwrap()
            .contains("answer to q1, line 0")
    );
    assert!(!msgs[4]["content"].as_str().unwrap().contains("q1"), "{m}");
    // The answer outlives its server: after an upgrade and after a kill the agent's message is
    // still the whole answer, read back from the log (it was the screen's last 24 lines), and
    // never timed before the message it answers (it said when the process started).
    let whole = async |server: &Server, when: &str| {
        let (_, m) = get(server, "/agentapi/long/messages", Some(&server.token)).await;
        let msgs = m["messages"].as_array().unwrap();
        assert_eq!(msgs.len(), 5, "{when}: {m}");
        let text = msgs[4]["content"].as_str().unwrap();
        for want in ["answer to q2, line 0", "answer to q2, line 299"] {
            assert!(text.contains(want), "{when}: {want} in {text}");
        }
        assert!(
            !text.contains("q1") && !text.contains("banner"),
            "{when}: {text}"
        );
        let at = |i: usize| corral_actors::time::from_json(&msgs[i]["time"]).unwrap();
        assert!(at(4) >= at(3), "{when}: {m}");
    };
    server.cli_ok(&["upgrade"]).await;
    server.follow_successor();
    whole(&server, "after an upgrade").await;
    server.kill();
    server.restart();
    whole(&server, "after a kill").await;
}

/// A user message does not rewrite the answer before it: while it is sent (its Enter waits for
/// the program to take the paste), the last agent message keeps its text — it read as the new
/// turn's (the prompt's echo, or nothing) for a quarter of a second on every turn.
#[tokio::test]
async fn the_answer_before_a_user_message_keeps_its_text_while_it_is_sent() {
    let server = Server::start();
    let t = Some(server.token.as_str());
    server
        .spawn(json!({
            "name": "asked",
            "argv": ["sh", "-c", "while read l; do echo \"answer to $l\"; done"],
        }))
        .await;
    let stable = async || get(&server, "/agentapi/asked/status", t).await.1["status"] == "stable";
    until(stable, "quiet").await;
    assert_eq!(message(&server, "asked", "user", "one").await.0, 200);
    until(stable, "answered").await;
    let answered = get(&server, "/agentapi/asked/messages", t).await.1["messages"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    assert!(
        answered["content"]
            .as_str()
            .unwrap()
            .contains("answer to one"),
        "{answered}"
    );
    let id = answered["id"].clone();
    let reads = async {
        let mut seen = Vec::new();
        let until = Instant::now() + Duration::from_millis(1500);
        while Instant::now() < until {
            let m = get(&server, "/agentapi/asked/messages", t).await.1;
            if let Some(same) = m["messages"]
                .as_array()
                .and_then(|all| all.iter().find(|x| x["id"] == id))
            {
                seen.push(same["content"].clone());
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        seen
    };
    let (seen, (code, _)) = tokio::join!(reads, message(&server, "asked", "user", "two"));
    assert_eq!(code, 200);
    assert!(seen.len() > 10, "{seen:?}");
    assert!(
        seen.iter().all(|c| c == &answered["content"]),
        "message {id} changed while the next was sent: {seen:?}"
    );
}
