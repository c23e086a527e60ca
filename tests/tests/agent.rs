//! Agents end to end, with the real `corral hook` binary as the hook command: a session's
//! program plays the agent's side exactly as Claude Code does (it runs the hook command with the
//! event JSON on stdin and acts on the decision the hook prints). Checked: the attention state
//! machine (starting → idle → working → needs_permission → working → idle), `corral wait`,
//! answering a permission with `corral answer` (allow runs the tool, deny does not, with the
//! message), a question nobody answers (no decision; the agent would show its own prompt), 409
//! for a session that waits for nothing, metrics, and bad hook input (wrong or foreign token,
//! malformed body) refused without touching the session.

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use corral_tests::{Server, binary};
use serde_json::{Value, json};

/// The fake agent: SessionStart, a prompt, a Bash permission request whose decision goes to
/// `decision.json` (and `touch`es `ran` if allowed, as the tool would), then the tool's and the
/// turn's end hooks; then it idles.
fn agent_script(dir: &Path) -> String {
    let hook = |json: &str, out: &str| {
        format!("printf '%s' '{json}' | {} hook{out}\n", binary().display())
    };
    let mut s = String::new();
    s += &hook(
        r#"{"hook_event_name":"SessionStart","session_id":"agent-1"}"#,
        "",
    );
    s += &hook(
        r#"{"hook_event_name":"UserPromptSubmit","prompt":"clean up"}"#,
        "",
    );
    s += &hook(
        r#"{"hook_event_name":"PermissionRequest","tool_name":"Bash","tool_input":{"command":"touch ran"}}"#,
        &format!(" > {}/decision.json", dir.display()),
    );
    s += &format!(
        "if grep -q '\"allow\"' {d}/decision.json; then touch {d}/ran; fi\n",
        d = dir.display()
    );
    s += &hook(
        r#"{"hook_event_name":"PostToolUse","tool_name":"Bash"}"#,
        "",
    );
    s += &hook(
        r#"{"hook_event_name":"Stop","last_assistant_message":"Done: I ran\n  touch ran."}"#,
        "",
    );
    s += "exec sleep 600\n";
    s
}

fn corral(server: &Server, args: &[&str]) -> Output {
    Command::new(binary())
        .arg("--data-dir")
        .arg(server.dir.path())
        .args(args)
        .output()
        .unwrap()
}

fn spawn_agent(
    server: &Server,
    name: &str,
    dir: &Path,
) -> impl std::future::Future<Output = Value> {
    server.spawn(json!({"name": name, "argv": ["sh", "-c", agent_script(dir)]}))
}

#[tokio::test]
async fn a_permission_is_answered_from_the_cli_and_the_state_machine_follows() {
    let server = Server::start();
    let dir = tempfile::tempdir().unwrap();
    server.spawn(json!({"name": "aaa", "argv": ["cat"]})).await;
    spawn_agent(&server, "allowed", dir.path()).await;
    let out = corral(
        &server,
        &[
            "wait",
            "allowed",
            "--for",
            "needs_permission",
            "--timeout",
            "20",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let s = server.session("allowed").await;
    assert_eq!(s["attention"], "needs_permission", "{s}");
    assert_eq!(s["permission"]["tool"], "Bash", "{s}");
    assert_eq!(s["permission"]["input"]["command"], "touch ran", "{s}");
    assert_eq!(s["agent_session_id"], "agent-1");
    let ps = String::from_utf8_lossy(&corral(&server, &["ps"]).stdout).to_string();
    // What asks comes first, whatever its name.
    assert!(
        ps.lines()
            .nth(1)
            .unwrap()
            .contains("needs_permission (Bash: touch ran)"),
        "{ps}"
    );
    let metrics = server
        .http("GET", "/metrics", Some(&server.token), None)
        .await
        .1;
    assert!(
        metrics.contains(r#"agent_sessions{attention="needs_permission"} 1"#),
        "{metrics}"
    );
    // The answer reaches the agent through its hook's output; the tool runs.
    let out = corral(&server, &["answer", "allowed", "allow"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = corral(
        &server,
        &["wait", "allowed", "--for", "idle", "--timeout", "20"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let decision: Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("decision.json")).unwrap()).unwrap();
    assert_eq!(
        decision["hookSpecificOutput"]["decision"]["behavior"], "allow",
        "{decision}"
    );
    assert_eq!(
        decision["hookSpecificOutput"]["hookEventName"],
        "PermissionRequest"
    );
    assert!(
        dir.path().join("ran").exists(),
        "the allowed tool did not run"
    );
    assert!(server.session("allowed").await["permission"].is_null());
    // Answering a session that waits for nothing: 409 naming its state; the CLI fails.
    let (status, body) = server
        .http(
            "POST",
            "/v1/sessions/allowed/permission",
            Some(&server.token),
            Some(&json!({"behavior": "allow"})),
        )
        .await;
    assert_eq!(status, 409, "{body}");
    assert!(body.contains("attention: idle"), "{body}");
    // A moment after an answer, a second one that names no question (the CLI's) is told how the
    // first answered.
    assert!(body.contains("was answered already (allowed"), "{body}");
    let out = corral(&server, &["answer", "allowed", "deny"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("was answered already (allowed"), "{err}");
    // Ending the process: exited, and `wait --for exit` returns at once.
    assert!(corral(&server, &["stop", "allowed"]).status.success());
    assert_eq!(server.session("allowed").await["attention"], "exited");
    let out = corral(
        &server,
        &["wait", "allowed", "--for", "exit", "--timeout", "5"],
    );
    assert!(out.status.success());
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.starts_with("signal ") || said.starts_with("exit "),
        "how it ended: {said}"
    );
    // Waiting for idle on an ended session: exit status 3.
    let out = corral(
        &server,
        &["wait", "allowed", "--for", "idle", "--timeout", "5"],
    );
    assert_eq!(out.status.code(), Some(3));
    // `--timeout 0` asks whether it is so now: it has exited (it timed out before looking).
    let out = corral(
        &server,
        &["wait", "allowed", "--for", "exit", "--timeout", "0"],
    );
    assert!(out.status.success(), "{out:?}");
}

#[tokio::test]
async fn a_deny_carries_its_message_and_the_tool_does_not_run() {
    let server = Server::start();
    let dir = tempfile::tempdir().unwrap();
    spawn_agent(&server, "denied", dir.path()).await;
    waits_for(&server, "denied", "needs_permission");
    // A read token may not answer; a write token of the session may.
    let token = |scope: &str| {
        let out = corral(
            &server,
            &["token", "create", "--session", "denied", "--scope", scope],
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let (status, _) = server
        .http(
            "POST",
            "/v1/sessions/denied/permission",
            Some(&token("read")),
            Some(&json!({"behavior": "deny"})),
        )
        .await;
    assert_eq!(status, 403);
    let (status, body) = server
        .http(
            "POST",
            "/v1/sessions/denied/permission",
            Some(&token("write")),
            Some(&json!({"behavior": "deny", "message": "not on main"})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let deadline = Instant::now() + Duration::from_secs(20);
    let decision = loop {
        if let Ok(text) = std::fs::read_to_string(dir.path().join("decision.json"))
            && !text.is_empty()
        {
            break serde_json::from_str::<Value>(&text).unwrap();
        }
        assert!(Instant::now() < deadline, "no decision written");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let d = &decision["hookSpecificOutput"]["decision"];
    assert_eq!(
        (d["behavior"].as_str(), d["message"].as_str()),
        (Some("deny"), Some("not on main"))
    );
    let out = corral(
        &server,
        &["wait", "denied", "--for", "idle", "--timeout", "20"],
    );
    assert!(out.status.success());
    assert!(!dir.path().join("ran").exists(), "a denied tool ran");
}

#[tokio::test]
async fn an_unanswered_question_returns_no_decision_after_the_wait() {
    let server = Server::start_configured("[agents]\npermission_wait_secs = 1\n");
    let dir = tempfile::tempdir().unwrap();
    spawn_agent(&server, "unanswered", dir.path()).await;
    let out = corral(
        &server,
        &[
            "wait",
            "unanswered",
            "--for",
            "needs_permission",
            "--timeout",
            "20",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = corral(
        &server,
        &["wait", "unanswered", "--for", "idle", "--timeout", "30"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The hook printed nothing: no decision, so Claude Code would show its own prompt.
    assert_eq!(
        std::fs::read_to_string(dir.path().join("decision.json")).unwrap(),
        ""
    );
    assert!(!dir.path().join("ran").exists());
}

/// After the wait, an unanswered question is in the agent's own dialog (its terminal): the
/// session still needs a permission, but it offers no question to answer from outside any
/// more (`permission` null, so the page shows no Allow/Deny), and an answer through the API
/// says where the question is instead of a bare "not waiting".
#[tokio::test]
async fn an_unanswered_question_is_left_to_the_terminal() {
    let server = Server::start_configured("[agents]\npermission_wait_secs = 1\n");
    let dir = tempfile::tempdir().unwrap();
    // The agent's side as Claude Code acts after a hook without a decision: it shows its own
    // dialog and waits there (no more hooks).
    let full = agent_script(dir.path());
    let upto = full.find("if grep").unwrap();
    let script = format!("{}exec sleep 600\n", &full[..upto]);
    server
        .spawn(json!({"name": "dialog", "argv": ["sh", "-c", script]}))
        .await;
    waits_for(&server, "dialog", "needs_permission");
    // The wait is 1 s.
    let deadline = Instant::now() + Duration::from_secs(20);
    let view = loop {
        let view = server.session("dialog").await;
        if view["permission"].is_null() {
            break view;
        }
        assert!(
            Instant::now() < deadline,
            "the question is still offered: {view}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(view["attention"], "needs_permission", "{view}");
    let out = corral(&server, &["answer", "dialog", "allow"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("in its own terminal"), "{err}");
    // With the ways left to answer it.
    assert!(err.contains("`corral attach dialog`"), "{err}");
    assert!(err.contains("`corral send dialog '\\r'`"), "{err}");
}

/// A question asked through a hook before a server SIGKILL is the agent's own dialog's after
/// the restart (the hook call that held it ended with the old server): the adopted session
/// still needs a permission, but offers no question to answer from outside.
#[tokio::test]
async fn a_question_held_by_a_killed_server_is_left_to_the_terminal() {
    let mut server = Server::start();
    let dir = tempfile::tempdir().unwrap();
    let full = agent_script(dir.path());
    let upto = full.find("if grep").unwrap();
    // An agent session (its state is rebuilt from the journal when adopted): a program under
    // the claude profile, which ignores the arguments the profile adds.
    let program = dir.path().join("agent.sh");
    corral_tests::executable(
        &program,
        &format!("#!/bin/sh\n{}exec sleep 600\n", &full[..upto]),
    );
    server
        .spawn(json!({"name": "held", "argv": [program], "agent": "claude"}))
        .await;
    waits_for(&server, "held", "needs_permission");
    assert!(!server.session("held").await["permission"].is_null());
    server.kill();
    server.restart();
    let view = server.session("held").await;
    assert_eq!(view["attention"], "needs_permission", "{view}");
    assert!(view["permission"].is_null(), "{view}");
}

/// Events of a session in the journal.
async fn journaled(server: &Server, id: &str) -> usize {
    let mut ws = server.ws().await;
    let r = ws.call(json!({"type": "events", "session": id})).await;
    r["events"].as_array().unwrap().len()
}

/// The hook token in a session's environment (read once the program has its environment: a
/// spawn answers with the pid of a child that may not have exec'd it yet).
fn hook_token(info: &Value) -> String {
    let pid = info["pid"].as_i64().unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let env = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
        if let Some(token) = env
            .split(|c| *c == 0)
            .find_map(|kv| kv.strip_prefix(b"CORRAL_HOOK_TOKEN="))
        {
            return String::from_utf8_lossy(token).to_string();
        }
        assert!(
            Instant::now() < deadline,
            "no CORRAL_HOOK_TOKEN in {pid}'s environment"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test]
async fn bad_hook_input_is_refused_and_the_session_is_untouched() {
    let server = Server::start();
    let a = server
        .spawn(json!({"name": "a", "argv": ["sleep", "600"]}))
        .await;
    let b = server
        .spawn(json!({"name": "b", "argv": ["sleep", "600"]}))
        .await;
    let a_id = a["id"].as_str().unwrap();
    let path = format!("/v1/sessions/{a_id}/events");
    let before = journaled(&server, a_id).await;
    let hook = json!({"hook_event_name": "Notification", "message": "Claude needs your permission to use Bash"});
    // Wrong token: 401. Another session's hook token: 403.
    let wrong = "corral_x_0123456789abcdef0123456789abcdef";
    let (status, _) = server.http("POST", &path, Some(wrong), Some(&hook)).await;
    assert_eq!(status, 401);
    let (status, _) = server
        .http("POST", &path, Some(&hook_token(&b)), Some(&hook))
        .await;
    assert_eq!(status, 403);
    // Malformed bodies with the session's own hook token: 400 naming the problem.
    for (body, why) in [
        (json!([1, 2]), "must be a JSON object"),
        (json!({"message": "x"}), "lacks hook_event_name"),
    ] {
        let (status, text) = server
            .http("POST", &path, Some(&hook_token(&a)), Some(&body))
            .await;
        assert_eq!(status, 400, "{text}");
        assert!(text.contains(why), "{text}");
    }
    assert_eq!(
        journaled(&server, a_id).await,
        before,
        "nothing was journaled"
    );
    let s = server.session("a").await;
    assert!(s["attention"].is_null(), "{s}");
    assert_eq!(s["state"], "running");
}

/// Webhooks: a local receiver gets one notification per attention change that needs the user
/// (needs_permission with the tool and what it asks, then idle after the work), as JSON and as
/// a text line, each with a link to the session's page (at `[notify] page_url`: a phone's
/// notification opens it); a muted session sends none.
#[tokio::test]
async fn webhooks_tell_when_an_agent_needs_its_user() {
    let hooks = corral_tests::Webhooks::start().await;
    let port = hooks.port;
    let server = Server::start_configured(&format!(
        "[notify]\npage_url = \"https://corral.example/\"\n\n\
         [[notify.webhooks]]\nurl = \"http://127.0.0.1:{port}/json\"\n\n\
         [[notify.webhooks]]\nurl = \"http://127.0.0.1:{port}/topic\"\nformat = \"text\"\n"
    ));
    // A muted agent first: it waits a second before its hooks, time to mute it.
    let quiet_dir = tempfile::tempdir().unwrap();
    let script = format!("sleep 1\n{}", agent_script(quiet_dir.path()));
    server
        .spawn(json!({"name": "muted", "argv": ["sh", "-c", script]}))
        .await;
    let (code, _) = server
        .http(
            "POST",
            "/v1/sessions/muted/notify",
            Some(&server.token),
            Some(&json!({"muted": true})),
        )
        .await;
    assert_eq!(code, 200);
    waits_for(&server, "muted", "needs_permission");
    assert!(
        corral(&server, &["answer", "muted", "allow"])
            .status
            .success()
    );
    let out = corral(
        &server,
        &["wait", "muted", "--for", "idle", "--timeout", "20"],
    );
    assert!(out.status.success());
    // The announced agent.
    let dir = tempfile::tempdir().unwrap();
    spawn_agent(&server, "loud", dir.path()).await;
    waits_for(&server, "loud", "needs_permission");
    let question = server.session("loud").await["permission"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        corral(&server, &["answer", "loud", "allow"])
            .status
            .success()
    );
    // A second viewer's answer to the same question, a moment later, is told the first's.
    let (code, body) = server
        .http(
            "POST",
            "/v1/sessions/loud/permission",
            Some(&server.token),
            Some(&json!({"behavior": "deny", "id": question})),
        )
        .await;
    assert_eq!(code, 409, "{body}");
    assert!(body.contains("answered already (allowed"), "{body}");
    let out = corral(
        &server,
        &["wait", "loud", "--for", "idle", "--timeout", "20"],
    );
    assert!(out.status.success());
    let got = hooks.until(4, Duration::from_secs(15)).await;
    assert_eq!(got.len(), 4, "{got:?}");
    let json: Vec<&Value> = got
        .iter()
        .filter(|(p, _)| p == "/json")
        .map(|(_, b)| b)
        .collect();
    assert_eq!(json.len(), 2, "{got:?}");
    assert_eq!(json[0]["name"], "loud");
    assert_eq!(json[0]["kind"], "needs_permission");
    assert_eq!(json[0]["tool"], "Bash");
    assert_eq!(json[0]["detail"], "touch ran");
    let loud = server.session("loud").await["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(json[0]["url"], format!("https://corral.example/#/s/{loud}"));
    assert_eq!(json[1]["kind"], "idle");
    // The turn's answer (Claude Code's `last_assistant_message`), in one line.
    assert_eq!(json[1]["detail"], "Done: I ran touch ran.", "{got:?}");
    assert!(
        got.iter()
            .any(|(p, b)| p != "/json"
                && b == &json!("loud: waiting for input: Done: I ran touch ran.")),
        "{got:?}"
    );
    assert!(
        got.iter()
            .all(|(_, b)| b.get("name") != Some(&json!("muted")))
    );
    let metrics = server
        .http("GET", "/metrics", Some(&server.token), None)
        .await
        .1;
    assert!(
        metrics.contains(r#"notifications_total{kind="sent"} 4"#),
        "{metrics}"
    );
}

/// A question Claude announced only by its Notification hook (no PermissionRequest call held
/// it) is told with the hook's message: the push said only "needs permission", with no tool.
#[tokio::test]
async fn a_question_known_from_a_notification_is_told_in_its_words() {
    let hooks = corral_tests::Webhooks::start().await;
    let port = hooks.port;
    let server = Server::start_configured(&format!(
        "[[notify.webhooks]]\nurl = \"http://127.0.0.1:{port}/json\"\n\n\
         [[notify.webhooks]]\nurl = \"http://127.0.0.1:{port}/topic\"\nformat = \"text\"\n"
    ));
    let info = server
        .spawn(json!({"name": "asks", "argv": ["sleep", "600"]}))
        .await;
    let path = format!("/v1/sessions/{}/events", info["id"].as_str().unwrap());
    for hook in [
        json!({"hook_event_name": "SessionStart", "session_id": "s"}),
        json!({"hook_event_name": "UserPromptSubmit", "session_id": "s"}),
        json!({"hook_event_name": "Notification", "session_id": "s",
               "notification_type": "permission_prompt",
               "message": "Claude needs your permission to use Bash"}),
    ] {
        let (code, body) = server
            .http("POST", &path, Some(&server.token), Some(&hook))
            .await;
        assert_eq!(code, 202, "{body}");
    }
    let got = hooks.until(2, Duration::from_secs(15)).await;
    assert_eq!(got.len(), 2, "{got:?}");
    let json = &got.iter().find(|(p, _)| p == "/json").unwrap().1;
    assert_eq!(json["kind"], "needs_permission", "{json}");
    assert_eq!(json["detail"], "Claude needs your permission to use Bash");
    let text = &got.iter().find(|(p, _)| p == "/topic").unwrap().1;
    assert_eq!(
        text.as_str(),
        Some("asks: Claude needs your permission to use Bash"),
        "{got:?}"
    );
}

/// `/clear` sent to a waiting agent (its SessionEnd, then SessionStart) ends no turn: no
/// webhook says it waits for input (one came for every `/clear`). A turn's end still does.
#[tokio::test]
async fn a_cleared_conversation_is_no_turn_to_tell() {
    let hooks = corral_tests::Webhooks::start().await;
    let server = Server::start_configured(&hooks.config());
    let info = server
        .spawn(json!({"name": "clears", "argv": ["sh", "-c", "stty -echo; exec cat"]}))
        .await;
    let path = format!("/v1/sessions/{}/events", info["id"].as_str().unwrap());
    let hook = async |body: Value| {
        let (code, text) = server
            .http("POST", &path, Some(&server.token), Some(&body))
            .await;
        assert_eq!(code, 202, "{text}");
    };
    hook(json!({"hook_event_name": "SessionStart", "session_id": "a", "source": "startup"})).await;
    server
        .cli_ok(&["send", "clears", "--paste", "/clear"])
        .await;
    assert_eq!(server.session("clears").await["attention"], "working");
    hook(json!({"hook_event_name": "SessionEnd", "session_id": "a", "reason": "clear"})).await;
    hook(json!({"hook_event_name": "SessionStart", "session_id": "b", "source": "clear"})).await;
    assert_eq!(server.session("clears").await["attention"], "idle");
    tokio::time::sleep(corral_server::notify::IDLE_SETTLE + Duration::from_millis(1000)).await;
    assert_eq!(hooks.received(), vec![], "told of a /clear");
    for name in ["UserPromptSubmit", "Stop"] {
        hook(json!({"hook_event_name": name, "session_id": "b"})).await;
    }
    let got = hooks.until(1, Duration::from_secs(10)).await;
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].1["kind"], "idle", "{got:?}");
}

/// A prompt queued while the agent worked starts its turn right after the last one ends
/// (Claude Code: Stop, then the next UserPromptSubmit ~50 ms later): the agent is idle for that
/// instant only, and a webhook hears "waiting for input" once, when it really waits — not at
/// the first turn's end.
#[tokio::test]
async fn a_queued_prompts_turn_sends_no_idle_notification_between_the_turns() {
    let hooks = corral_tests::Webhooks::start().await;
    let port = hooks.port;
    let server = Server::start_configured(&format!(
        "[[notify.webhooks]]\nurl = \"http://127.0.0.1:{port}/json\"\n"
    ));
    let hook = |json: &str| format!("printf '%s' '{json}' | {} hook\n", binary().display());
    let script = [
        hook(r#"{"hook_event_name":"SessionStart","session_id":"agent-q"}"#),
        hook(r#"{"hook_event_name":"UserPromptSubmit","prompt":"first"}"#),
        "sleep 0.3\n".into(),
        hook(r#"{"hook_event_name":"Stop"}"#),
        "sleep 0.05\n".into(),
        hook(r#"{"hook_event_name":"UserPromptSubmit","prompt":"queued"}"#),
        "sleep 0.3\n".into(),
        hook(r#"{"hook_event_name":"Stop"}"#),
        "touch done; exec sleep 600\n".into(),
    ]
    .concat();
    let dir = tempfile::tempdir().unwrap();
    server
        .spawn(json!({"name": "queued", "argv": ["sh", "-c", script], "cwd": dir.path()}))
        .await;
    let t = Instant::now();
    while !dir.path().join("done").exists() {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "the agent never ended its turns"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let got = hooks.until(1, Duration::from_secs(15)).await;
    // Past the settle time of a second one.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let got_later = hooks.received();
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got_later.len(), 1, "{got_later:?}");
    assert_eq!(got[0].1["kind"], "idle", "{got:?}");
    let s = server.session("queued").await;
    assert_eq!(s["attention"], "idle", "{s}");
}

/// A stand-in agent that starts, takes a prompt and, once `go` exists in its folder, ends its
/// turn (its hooks through `corral hook`, as Claude Code's).
fn turn_script(dir: &Path) -> String {
    let hook = |json: &str| format!("printf '%s' '{json}' | {} hook\n", binary().display());
    [
        hook(r#"{"hook_event_name":"SessionStart","session_id":"agent-t"}"#),
        hook(r#"{"hook_event_name":"UserPromptSubmit","prompt":"work"}"#),
        format!(
            "while [ ! -e '{}/go' ]; do sleep 0.05; done\n",
            dir.display()
        ),
        hook(r#"{"hook_event_name":"Stop"}"#),
        "exec sleep 600\n".into(),
    ]
    .concat()
}

/// Notifications not yet delivered when the server hands over (`corral upgrade`) are sent by
/// the next server, each with its id (a repeat has the same): with a slow receiver, two of
/// four were lost at an upgrade, without a word.
#[tokio::test]
async fn notifications_waiting_at_an_upgrade_are_sent_by_the_next_server() {
    let hooks = corral_tests::Webhooks::start_slow(Duration::from_secs(2)).await;
    let mut server = Server::start_configured(&hooks.config());
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("go"), "").unwrap();
    for name in ["n1", "n2", "n3"] {
        server
            .spawn(json!({"name": name, "argv": ["sh", "-c", turn_script(dir.path())]}))
            .await;
    }
    for name in ["n1", "n2", "n3"] {
        let out = corral(&server, &["wait", name, "--for", "idle", "--timeout", "20"]);
        assert!(out.status.success(), "{out:?}");
    }
    // Settled and queued: one on its way to the slow receiver, two waiting.
    tokio::time::sleep(Duration::from_millis(1800)).await;
    let out = corral(&server, &["upgrade"]);
    assert!(out.status.success(), "{out:?}");
    server.follow_successor();
    let ids = || {
        hooks
            .received()
            .iter()
            .map(|(_, b)| b["id"].as_str().unwrap_or("").to_string())
            .collect::<std::collections::BTreeSet<_>>()
    };
    let t = Instant::now();
    while ids().len() < 3 {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "not every notification came: {:?}",
            hooks.received()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(hooks.received().iter().all(|(_, b)| b["kind"] == "idle"));
}

/// A turn that ends while no server runs (its Stop hook waits in the spool) is told when the
/// next server replays it, as any other: no notification came.
#[tokio::test]
async fn a_turn_ended_while_no_server_ran_is_told() {
    let hooks = corral_tests::Webhooks::start().await;
    let mut server = Server::start_configured(&hooks.config());
    let dir = tempfile::tempdir().unwrap();
    server
        .spawn(json!({"name": "away", "argv": ["sh", "-c", turn_script(dir.path())]}))
        .await;
    let t = Instant::now();
    while server.session("away").await["attention"] != "working" {
        assert!(t.elapsed() < Duration::from_secs(20), "never working");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.kill();
    std::fs::write(dir.path().join("go"), "").unwrap();
    // The hook finds no server for 2 s, then waits in the spool: the next server starts once
    // it is there (started sooner, it would be reached at once and the spool go untried).
    let spool = server.dir.path().join("hooks");
    let t = Instant::now();
    while std::fs::read_dir(&spool).map_or(0, |d| d.count()) == 0 {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "the hook never spooled"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.restart();
    let got = hooks.until(1, Duration::from_secs(15)).await;
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].1["kind"], "idle", "{got:?}");
    assert_eq!(got[0].1["name"], "away", "{got:?}");
}

/// A PermissionRequest hook held open for an answer must not hold up the server's leaving:
/// `corral upgrade` and `corral shutdown` used to wait for it (the graceful stop waits for open
/// responses) — the whole permission wait, 120 s by default, and the CLI gave up after 60 s
/// with the server still running. Now the hook gets no decision at once (Claude then asks in
/// its own dialog) and both return in seconds.
#[tokio::test]
async fn a_pending_permission_does_not_hold_up_an_upgrade_or_a_shutdown() {
    let mut server = Server::start();
    let dir = tempfile::tempdir().unwrap();
    spawn_agent(&server, "asking", dir.path()).await;
    waits_for(&server, "asking", "needs_permission");
    let t = Instant::now();
    let out = corral(&server, &["upgrade"]);
    assert!(out.status.success(), "{out:?}");
    assert!(
        t.elapsed() < Duration::from_secs(15),
        "upgrade took {:?}",
        t.elapsed()
    );
    server.follow_successor();
    // The hook got no decision: the agent's tool did not run, and it went on.
    let decision = std::fs::read_to_string(dir.path().join("decision.json")).unwrap_or_default();
    assert!(!decision.contains("allow"), "{decision}");
    assert!(!dir.path().join("ran").exists());
    let other = tempfile::tempdir().unwrap();
    spawn_agent(&server, "asking-again", other.path()).await;
    waits_for(&server, "asking-again", "needs_permission");
    let t = Instant::now();
    let out = corral(&server, &["shutdown"]);
    assert!(out.status.success(), "{out:?}");
    assert!(
        t.elapsed() < Duration::from_secs(15),
        "shutdown took {:?}",
        t.elapsed()
    );
}

/// Where a session's hooks post, and the hook token they post with.
fn hook_path(info: &Value) -> (String, String) {
    let id = info["id"].as_str().unwrap();
    (format!("/v1/sessions/{id}/events"), hook_token(info))
}

/// Posts hook event `payload` to `path` with `token`; (status, body).
async fn post_hook(server: &Server, path: String, token: String, payload: Value) -> (u16, String) {
    server
        .http("POST", &path, Some(&token), Some(&payload))
        .await
}

/// `corral wait NAME --for STATE` (20 s at most), which must succeed.
fn waits_for(server: &Server, name: &str, state: &str) {
    let out = corral(server, &["wait", name, "--for", state, "--timeout", "20"]);
    assert!(out.status.success(), "{out:?}");
}

/// A PermissionRequest hook asking to run `cmd` with Bash.
fn ask(cmd: &str) -> Value {
    json!({"hook_event_name": "PermissionRequest", "tool_name": "Bash", "tool_input": {"command": cmd}})
}

/// Waits until the session's view satisfies `cond`.
async fn view_until(
    server: &Server,
    name: &str,
    what: &str,
    cond: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let view = server.session(name).await;
        if cond(&view) {
            return view;
        }
        assert!(Instant::now() < deadline, "timed out: {what}: {view}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A question queued behind another is not timed while nobody can see it: its wait starts when
/// it is shown. Here the first question runs out its 2 s wait; the second, asked at the same
/// time, is then shown and can still be answered a second later (it went to the agent's dialog
/// with the first when both were timed from their arrival).
#[tokio::test]
async fn a_queued_question_is_timed_from_when_it_is_shown() {
    let server = Server::start_configured("[agents]\npermission_wait_secs = 2\n");
    let info = server
        .spawn(json!({"name": "queue", "argv": ["sleep", "600"]}))
        .await;
    let (path, token) = hook_path(&info);
    // A hook token posts its session's events and nothing more (the list answered `[]`).
    let (status, _) = server.http("GET", "/v1/sessions", Some(&token), None).await;
    assert_eq!(status, 403);
    let post = |payload: Value| post_hook(&server, path.clone(), token.clone(), payload);
    let first = post(ask("touch a"));
    let second = async {
        view_until(&server, "queue", "first question", |v| {
            !v["permission"].is_null()
        })
        .await;
        post(ask("touch b")).await
    };
    let answer = async {
        let view = view_until(&server, "queue", "both questions open", |v| {
            v["permission_queue"]
                .as_array()
                .is_some_and(|q| q.len() == 1)
        })
        .await;
        let b = view["permission_queue"][0]["id"]
            .as_str()
            .unwrap()
            .to_string();
        // The first runs out (2 s); the second is shown then.
        let view = view_until(&server, "queue", "the second question shown", |v| {
            v["permission"]["id"] == b.as_str()
        })
        .await;
        assert!(
            view["permission_queue"]
                .as_array()
                .is_none_or(|q| q.is_empty()),
            "{view}"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
        let out = corral(&server, &["answer", "queue", "allow", "--id", &b]);
        assert!(out.status.success(), "{out:?}");
    };
    let ((s1, r1), (s2, r2), ()) = tokio::join!(first, second, answer);
    assert_eq!((s1, s2), (200, 200));
    let r1: Value = serde_json::from_str(&r1).unwrap();
    let r2: Value = serde_json::from_str(&r2).unwrap();
    let decision = |r: &Value| r["output"]["hookSpecificOutput"]["decision"].clone();
    assert!(decision(&r1).is_null(), "the first had no answer: {r1}");
    assert_eq!(decision(&r2)["behavior"], "allow", "{r2}");
}

/// An agent running tools in parallel asks several questions at once (one PermissionRequest
/// hook call each). They are shown one at a time in the order they came, the rest queued; an
/// answer names the question it answers, so one that comes after another answer got there
/// first is refused instead of landing on the next question; other hooks meanwhile (a parallel
/// tool's PreToolUse, Claude's reminder Notification) change nothing; a hook call that ends
/// without an answer (Claude ends it when the user answers in its own dialog) closes its
/// question and the agent is working again.
#[tokio::test]
async fn parallel_questions_are_shown_in_turn_and_answered_by_id() {
    let server = Server::start();
    let info = server
        .spawn(json!({"name": "par", "argv": ["sleep", "600"]}))
        .await;
    let id = info["id"].as_str().unwrap().to_string();
    let (path, token) = hook_path(&info);
    let post = |payload: Value| post_hook(&server, path.clone(), token.clone(), payload);
    post(json!({"hook_event_name": "UserPromptSubmit", "prompt": "go"})).await;
    let first = post(ask("touch a"));
    let second = async {
        // The second is asked after the first.
        view_until(&server, "par", "first question", |v| {
            !v["permission"].is_null()
        })
        .await;
        post(ask("touch b")).await
    };
    let answers = async {
        let view = view_until(&server, "par", "both questions open", |v| {
            v["permission_queue"]
                .as_array()
                .is_some_and(|q| q.len() == 1)
        })
        .await;
        assert_eq!(view["attention"], "needs_permission", "{view}");
        assert_eq!(view["permission"]["input"]["command"], "touch a", "{view}");
        let a = view["permission"]["id"].as_str().unwrap().to_string();
        let b = view["permission_queue"][0]["id"]
            .as_str()
            .unwrap()
            .to_string();
        let ps = String::from_utf8_lossy(&corral(&server, &["ps"]).stdout).to_string();
        assert!(
            ps.contains("needs_permission (Bash: touch a, then 1 more)"),
            "{ps}"
        );
        // A parallel tool and Claude's reminder do not close or replace what is asked.
        post(json!({"hook_event_name": "PreToolUse", "tool_name": "Read"})).await;
        post(json!({"hook_event_name": "Notification", "message": "Claude needs your permission to use Bash"})).await;
        let view = server.session("par").await;
        assert_eq!(view["attention"], "needs_permission", "{view}");
        assert_eq!(view["permission"]["id"], a.as_str(), "{view}");
        assert_eq!(view["permission_queue"][0]["id"], b.as_str(), "{view}");
        // `corral answer` answers the question shown and says which it was.
        let out = corral(&server, &["answer", "par", "allow"]);
        assert!(out.status.success(), "{out:?}");
        let said = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(said.contains("allowed Bash: touch a"), "{said}");
        // The next one is shown; an answer naming the first is refused, saying how it was
        // answered and naming what is asked now.
        let view = server.session("par").await;
        assert_eq!(view["permission"]["id"], b.as_str(), "{view}");
        assert_eq!(view["attention"], "needs_permission", "{view}");
        let out = corral(&server, &["answer", "par", "deny", "--id", &a]);
        assert!(!out.status.success(), "{out:?}");
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(
            err.contains(&format!("question {a} was answered already (allowed"))
                && err.contains(&b),
            "{err}"
        );
        let out = corral(
            &server,
            &["answer", "par", "deny", "--id", &b, "--message", "not b"],
        );
        assert!(out.status.success(), "{out:?}");
        assert!(String::from_utf8_lossy(&out.stdout).contains("denied Bash: touch b"));
    };
    let ((s1, r1), (s2, r2), ()) = tokio::join!(first, second, answers);
    assert_eq!((s1, s2), (200, 200));
    let r1: Value = serde_json::from_str(&r1).unwrap();
    let r2: Value = serde_json::from_str(&r2).unwrap();
    let decision = |r: &Value| r["output"]["hookSpecificOutput"]["decision"].clone();
    assert_eq!(decision(&r1)["behavior"], "allow", "{r1}");
    assert_eq!(decision(&r2)["behavior"], "deny", "{r2}");
    assert_eq!(decision(&r2)["message"], "not b", "{r2}");
    let view = server.session("par").await;
    assert_eq!(view["attention"], "working", "{view}");
    assert!(view["permission"].is_null(), "{view}");
    // The answers are in the journal.
    let mut ws = server.ws().await;
    let r = ws.call(json!({"type": "events", "session": id})).await;
    let answered: Vec<(String, String)> = r["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"]["type"] == "permission_answered")
        .map(|e| {
            (
                e["kind"]["behavior"].as_str().unwrap().to_string(),
                e["kind"]["message"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    assert_eq!(
        answered,
        [("allow".into(), "".into()), ("deny".into(), "not b".into())],
        "{r}"
    );
    // A question whose hook call ends unanswered (Claude ends it when the user answers in its
    // own dialog) is closed; the agent waits for its user until a hook says otherwise (after a
    // "no" or Esc in its dialog no hook comes).
    let third = post(ask("touch c"));
    assert!(
        tokio::time::timeout(Duration::from_millis(800), third)
            .await
            .is_err(),
        "the call waits for an answer"
    );
    view_until(&server, "par", "the ended call's question closed", |v| {
        v["permission"].is_null() && v["attention"] == "idle"
    })
    .await;
    let out = corral(&server, &["answer", "par", "allow"]);
    assert!(!out.status.success(), "nothing is asked any more");
    // Claude may keep the call of a question answered "yes" in its dialog running: the tool's
    // PostToolUse (same tool and input) settles it, and the call returns no decision at once.
    post(json!({"hook_event_name": "UserPromptSubmit", "prompt": "again"})).await;
    let (held, ()) = tokio::join!(post(ask("make test")), async {
        view_until(&server, "par", "asked", |v| !v["permission"].is_null()).await;
        post(json!({"hook_event_name": "PreToolUse", "tool_name": "Bash", "tool_input": {"command": "make test"}})).await;
        assert!(
            !server.session("par").await["permission"].is_null(),
            "PreToolUse settles nothing"
        );
        post(json!({"hook_event_name": "PostToolUse", "tool_name": "Bash", "tool_input": {"command": "make test"}, "tool_response": {}})).await;
    });
    let (code, body) = held;
    assert_eq!(code, 200);
    let body: Value = serde_json::from_str(&body).unwrap();
    assert!(body["output"].is_null(), "no decision: {body}");
    let view = server.session("par").await;
    assert!(view["permission"].is_null(), "{view}");
    assert_eq!(view["attention"], "working", "{view}");
    // The turn's end settles whatever is still held.
    let (held, ()) = tokio::join!(post(ask("rm -rf build")), async {
        view_until(&server, "par", "asked again", |v| {
            !v["permission"].is_null()
        })
        .await;
        post(json!({"hook_event_name": "Stop"})).await;
    });
    assert_eq!(held.0, 200);
    let view = server.session("par").await;
    assert!(view["permission"].is_null(), "{view}");
    assert_eq!(view["attention"], "idle", "{view}");
    // Every question's end is in the journal: two answers, and three settled elsewhere (the
    // call that ended, the PostToolUse, the Stop).
    let r = ws.call(json!({"type": "events", "session": id})).await;
    let cancelled = r["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"]["type"] == "permission_cancelled")
        .count();
    assert_eq!(cancelled, 3, "{r}");
}

/// A webhook that never answers holds up only its own notifications: the working webhook after
/// it in the list is told at once (it used to wait for every attempt at the dead one, 5 s each
/// with retries, for every notification).
#[tokio::test]
async fn a_webhook_that_never_answers_does_not_delay_the_others() {
    // Accepts connections and never answers.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_port = silent.local_addr().unwrap().port();
    let holder = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = silent.accept().await {
            held.push(socket);
        }
    });
    let hooks = corral_tests::Webhooks::start().await;
    let port = hooks.port;
    let server = Server::start_configured(&format!(
        "[[notify.webhooks]]\nurl = \"http://127.0.0.1:{silent_port}/never\"\n\n\
         [[notify.webhooks]]\nurl = \"http://127.0.0.1:{port}/json\"\n"
    ));
    let dir = tempfile::tempdir().unwrap();
    spawn_agent(&server, "told", dir.path()).await;
    waits_for(&server, "told", "needs_permission");
    let asked = Instant::now();
    let got = hooks.until(1, Duration::from_secs(3)).await;
    assert_eq!(got.len(), 1, "not told within 3 s: {got:?}");
    assert!(asked.elapsed() < Duration::from_secs(3));
    assert!(
        corral(&server, &["answer", "told", "allow"])
            .status
            .success()
    );
    let got = hooks.until(2, Duration::from_secs(3)).await;
    assert_eq!(got.len(), 2, "the idle notification came late: {got:?}");
    holder.abort();
}

/// A webhook that answers 200 and then streams its body without end is read only up to the
/// server's bound on an answer (64 KiB): the notification counts as delivered at once and the
/// next one follows. (The whole body used to be read: each attempt ran into its 5 s timeout,
/// was retried, and held up every notification after it.)
#[tokio::test]
async fn a_webhook_whose_answer_never_ends_is_read_only_to_its_bound() {
    use tokio::io::AsyncWriteExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let asked = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let sent = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (count, streamed) = (asked.clone(), sent.clone());
    let stub = tokio::spawn(async move {
        // Owned by this task: aborted with it.
        let mut conns = tokio::task::JoinSet::new();
        while let Ok((mut s, _)) = listener.accept().await {
            let (count, streamed) = (count.clone(), streamed.clone());
            conns.spawn(async move {
                if corral_tests::read_stub_request(&mut s).await.is_none() {
                    return;
                }
                count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let head = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n";
                if s.write_all(head).await.is_err() {
                    return;
                }
                let chunk = format!("10000\r\n{}\r\n", "x".repeat(0x10000));
                // Until the reader goes away.
                while s.write_all(chunk.as_bytes()).await.is_ok() {
                    streamed.fetch_add(0x10000, std::sync::atomic::Ordering::SeqCst);
                }
            });
        }
    });
    let server = Server::start_configured(&format!(
        "[[notify.webhooks]]\nurl = \"http://127.0.0.1:{port}/endless\"\n"
    ));
    let dir = tempfile::tempdir().unwrap();
    spawn_agent(&server, "told", dir.path()).await;
    waits_for(&server, "told", "needs_permission");
    let until = |n: usize| {
        let asked = asked.clone();
        async move {
            let deadline = Instant::now() + Duration::from_secs(3);
            while asked.load(std::sync::atomic::Ordering::SeqCst) < n && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            asked.load(std::sync::atomic::Ordering::SeqCst)
        }
    };
    assert_eq!(
        until(1).await,
        1,
        "the permission's notification was not sent"
    );
    assert!(
        corral(&server, &["answer", "told", "allow"])
            .status
            .success()
    );
    // The idle notification comes within the settle and its delivery, not after three
    // attempts at the first one's endless answer.
    assert_eq!(until(2).await, 2, "the idle notification was held up");
    // And nothing was tried again: each was taken on its first attempt.
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(asked.load(std::sync::atomic::Ordering::SeqCst), 2);
    // The body was cut near the bound, not read for as long as it came (the socket's buffers
    // take some more before the writer sees the reader gone).
    let streamed = sent.load(std::sync::atomic::Ordering::SeqCst);
    assert!(
        streamed < 64 * 1024 * 1024,
        "{streamed} bytes were streamed"
    );
    stub.abort();
}

/// Notification state outlives the server: a mute is kept in the data dir (it used to be
/// forgotten by a restart or an upgrade, and could not be read back), and an agent that was
/// already asking when the server restarted is not announced a second time.
#[tokio::test]
async fn mutes_and_announcements_outlive_a_server_restart() {
    let hooks = corral_tests::Webhooks::start().await;
    let mut server = Server::start_configured(&hooks.config());
    let t = server.token.clone();
    let asker = server
        .spawn(json!({"name": "asker", "argv": ["sleep", "600"]}))
        .await;
    let muted = server
        .spawn(json!({"name": "muted", "argv": ["sleep", "600"]}))
        .await;
    let (code, _) = server
        .http(
            "POST",
            "/v1/sessions/muted/notify",
            Some(&t),
            Some(&json!({"muted": true})),
        )
        .await;
    assert_eq!(code, 200);
    let asks = json!({"hook_event_name": "Notification", "message": "Claude needs your permission to use Bash"});
    let post = async |server: &Server, who: &Value| {
        let path = format!("/v1/sessions/{}/events", who["id"].as_str().unwrap());
        let (code, body) = server
            .http("POST", &path, Some(&server.token), Some(&asks))
            .await;
        assert_eq!(code, 202, "{body}");
    };
    // Agents as Claude Code is one: its SessionStart names its session (what a server
    // restart rebuilds an agent's state for).
    for who in [&asker, &muted] {
        let path = format!("/v1/sessions/{}/events", who["id"].as_str().unwrap());
        let start = json!({"hook_event_name": "SessionStart", "session_id": "s-1"});
        let (code, body) = server
            .http("POST", &path, Some(&server.token), Some(&start))
            .await;
        assert_eq!(code, 202, "{body}");
    }
    post(&server, &asker).await;
    let got = hooks.until(1, Duration::from_secs(10)).await;
    assert_eq!(got.len(), 1, "{got:?}");
    server.kill();
    server.restart();
    let (_, body) = server
        .http(
            "GET",
            "/v1/sessions/muted/notify",
            Some(&server.token),
            None,
        )
        .await;
    let state: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(state["muted"], true, "{state}");
    // Still asking: nothing new to announce. The muted one asks: nothing either.
    post(&server, &asker).await;
    post(&server, &muted).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let got = hooks.received();
    assert_eq!(got.len(), 1, "announced again or muted one told: {got:?}");
}

/// A prompt typed into a waiting agent (`corral send --paste`, the page's paste, agentapi's
/// message) makes it `working` at once, so a script's `corral wait --for idle` right after waits
/// for that turn's end (it returned at once, with the turn before's `idle`, because the
/// UserPromptSubmit hook comes a moment later). A prompt that starts no turn (no event follows
/// it, as after `/cost`) leaves the agent idle again after a while.
#[tokio::test]
async fn a_prompt_makes_a_waiting_agent_work_at_once() {
    let server = Server::start();
    let info = server
        .spawn(json!({"name": "pr", "argv": ["sh", "-c", "stty -echo; exec cat"]}))
        .await;
    let (path, token) = hook_path(&info);
    let post = |payload: Value| post_hook(&server, path.clone(), token.clone(), payload);
    post(json!({"hook_event_name": "SessionStart", "session_id": "c1", "source": "startup"})).await;
    assert_eq!(server.session("pr").await["attention"], "idle");
    let out = corral(&server, &["send", "--paste", "pr", "do the task"]);
    assert!(out.status.success(), "{out:?}");
    view_until(&server, "pr", "working on the prompt", |v| {
        v["attention"] == "working"
    })
    .await;
    let mut waiter = Command::new(binary())
        .arg("--data-dir")
        .arg(server.dir.path())
        .args(["wait", "pr", "--for", "idle", "--timeout", "30"])
        .spawn()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(
        waiter.try_wait().unwrap().is_none(),
        "wait returned before the turn ended"
    );
    post(json!({"hook_event_name": "UserPromptSubmit", "prompt": "do the task"})).await;
    post(json!({"hook_event_name": "Stop"})).await;
    let status = tokio::task::spawn_blocking(move || waiter.wait().unwrap())
        .await
        .unwrap();
    assert!(status.success(), "{status:?}");
    // No hook follows this one: idle again once PROMPT_SETTLE passed.
    let out = corral(&server, &["send", "--paste", "pr", "/cost"]);
    assert!(out.status.success(), "{out:?}");
    view_until(&server, "pr", "working on the prompt", |v| {
        v["attention"] == "working"
    })
    .await;
    let settled = Instant::now();
    let deadline = Instant::now() + Duration::from_secs(20);
    while server.session("pr").await["attention"] != "idle" {
        assert!(
            Instant::now() < deadline,
            "idle again after a prompt no hook followed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        settled.elapsed() >= Duration::from_secs(5),
        "{:?}",
        settled.elapsed()
    );
    let events = server.events_of("pr", "agent").await;
    assert!(events.iter().any(|e| e["type"] == "no_turn"), "{events:?}");
}

/// A server that dies within the 8 s after a prompt no event followed: the next server settles
/// it (it stayed `working` for good, and `wait --for idle` hung).
#[tokio::test]
async fn a_prompt_left_unsettled_by_a_dead_server_is_settled_by_the_next() {
    let mut server = Server::start();
    let info = server
        .spawn(json!({"name": "pd", "argv": ["sh", "-c", "stty -echo; exec cat"]}))
        .await;
    let (path, token) = hook_path(&info);
    let (code, _) = post_hook(
        &server,
        path,
        token,
        json!({"hook_event_name": "SessionStart", "session_id": "c2", "source": "startup"}),
    )
    .await;
    assert_eq!(code, 202);
    let out = corral(&server, &["send", "--paste", "pd", "/cost"]);
    assert!(out.status.success(), "{out:?}");
    view_until(&server, "pd", "working on the prompt", |v| {
        v["attention"] == "working"
    })
    .await;
    // Dead after its `prompted` was journaled (a kill may take the last second of events with
    // it, as any crash: docs/operations.md).
    let deadline = Instant::now() + Duration::from_secs(10);
    while !server
        .events_of("pd", "agent")
        .await
        .iter()
        .any(|e| e["type"] == "prompted")
    {
        assert!(Instant::now() < deadline, "the prompt was never journaled");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    server.kill();
    server.restart();
    assert_eq!(server.session("pd").await["attention"], "working");
    let deadline = Instant::now() + Duration::from_secs(20);
    while server.session("pd").await["attention"] != "idle" {
        assert!(Instant::now() < deadline, "settled by the next server");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A prompt (`corral send --paste`) is refused while an agent shows a dialog its Enter would
/// answer — a permission question (it approved the tool), or its start's folder-trust screen
/// (it trusted the folder) — and the prompt was lost; agentapi refused both already.
#[tokio::test]
async fn a_prompt_is_refused_while_the_agent_shows_a_dialog() {
    let server = Server::start();
    let dir = tempfile::tempdir().unwrap();
    let program = dir.path().join("agent.sh");
    corral_tests::executable(&program, "#!/bin/sh\nexec cat\n");
    let info = server
        .spawn(json!({"name": "dlg", "argv": [program], "agent": "claude"}))
        .await;
    assert_eq!(server.session("dlg").await["attention"], "starting");
    let out = corral(&server, &["send", "--paste", "dlg", "hello"]);
    assert!(!out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("has not started"),
        "{out:?}"
    );
    let (path, token) = hook_path(&info);
    let post = |payload: Value| post_hook(&server, path.clone(), token.clone(), payload);
    post(json!({"hook_event_name": "SessionStart", "session_id": "c3", "source": "startup"})).await;
    let asked = post(ask("touch x"));
    let refused = async {
        view_until(&server, "dlg", "asked", |v| {
            v["attention"] == "needs_permission"
        })
        .await;
        let out = corral(&server, &["send", "--paste", "dlg", "go on"]);
        assert!(!out.status.success(), "{out:?}");
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(
            err.contains("asks a permission") && err.contains("corral answer dlg"),
            "{err}"
        );
        assert!(corral(&server, &["answer", "dlg", "deny"]).status.success());
    };
    let ((code, _), ()) = tokio::join!(asked, refused);
    assert_eq!(code, 200);
}

/// `wait --for exit` waits for the process, not for the agent's word that it ends: after a
/// SessionEnd hook the process may run a moment longer (it printed `running` and exited 0).
#[tokio::test]
async fn wait_for_exit_waits_for_the_process_after_session_end() {
    let server = Server::start();
    let info = server
        .spawn(json!({"name": "se", "argv": ["sleep", "600"]}))
        .await;
    let (path, token) = hook_path(&info);
    let post = |payload: Value| post_hook(&server, path.clone(), token.clone(), payload);
    post(json!({"hook_event_name": "SessionStart", "session_id": "c4", "source": "startup"})).await;
    post(json!({"hook_event_name": "SessionEnd", "reason": "exit"})).await;
    assert_eq!(server.session("se").await["attention"], "exited");
    let out = corral(&server, &["wait", "se", "--for", "exit", "--timeout", "1"]);
    assert_eq!(out.status.code(), Some(124), "{out:?}");
    assert!(corral(&server, &["kill", "se"]).status.success());
    let out = corral(&server, &["wait", "se", "--for", "exit", "--timeout", "10"]);
    assert!(out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout).starts_with("signal 9"),
        "{out:?}"
    );
}

/// A restart's new process said SessionStart, then its previous process's SessionEnd came late
/// (a hook slowed by load): the agent was marked `exited` while it ran (`wait --for idle` gave
/// up, agentapi said stable). `corral hook` says when it ran (`?at=`): a SessionEnd from before
/// the process started is journaled and changes nothing; one from this process still ends it;
/// an `at` that is no time is refused.
#[tokio::test]
async fn a_previous_process_s_late_session_end_changes_nothing() {
    let server = Server::start();
    let info = server
        .spawn(json!({"name": "late", "argv": ["sleep", "600"]}))
        .await;
    let (path, token) = hook_path(&info);
    let post = |path: String, payload: Value| post_hook(&server, path, token.clone(), payload);
    let start = json!({"hook_event_name": "SessionStart", "session_id": "c5", "source": "startup"});
    post(path.clone(), start.clone()).await;
    let before_restart = corral_actors::time::format(std::time::SystemTime::now());
    assert!(corral(&server, &["restart", "late"]).status.success());
    post(path.clone(), start).await;
    assert_eq!(server.session("late").await["attention"], "idle");
    let end = json!({"hook_event_name": "SessionEnd", "reason": "other"});
    let (code, body) = post(format!("{path}?at={before_restart}"), end.clone()).await;
    assert_eq!(code, 202, "{body}");
    let s = server.session("late").await;
    assert_eq!(s["attention"], "idle", "{s}");
    let hooks = server.events_of("late", "hook").await;
    assert_eq!(
        hooks.last().map(|e| e["name"].clone()),
        Some(json!("SessionEnd")),
        "journaled"
    );
    let (code, body) = post(format!("{path}?at=yesterday"), end.clone()).await;
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("RFC 3339"), "{body}");
    let now = corral_actors::time::format(std::time::SystemTime::now());
    let (code, body) = post(format!("{path}?at={now}"), end).await;
    assert_eq!(code, 202, "{body}");
    assert_eq!(server.session("late").await["attention"], "exited");
}

/// An agent that worked in its conversation is not `agent_fresh` ("ready for a first prompt")
/// once stopped and seen by a next server: a stopped agent's state is not replayed, and it
/// came back fresh (the page showed it `ready`).
#[tokio::test]
async fn a_stopped_agent_that_worked_is_not_fresh_after_a_restart() {
    let mut server = Server::start();
    let dir = tempfile::tempdir().unwrap();
    // Under the claude profile (a session of a profile has an attention from its start).
    let program = dir.path().join("agent.sh");
    corral_tests::executable(
        &program,
        &format!("#!/bin/sh\n{}", agent_script(dir.path())),
    );
    server
        .spawn(json!({"name": "worked", "argv": [program], "agent": "claude"}))
        .await;
    waits_for(&server, "worked", "needs_permission");
    assert!(
        corral(&server, &["answer", "worked", "allow"])
            .status
            .success()
    );
    let out = corral(
        &server,
        &["wait", "worked", "--for", "idle", "--timeout", "20"],
    );
    assert!(out.status.success(), "{out:?}");
    let s = server.session("worked").await;
    assert!(s.get("agent_fresh").is_none(), "{s}");
    assert!(corral(&server, &["stop", "worked"]).status.success());
    server.kill();
    server.restart();
    let s = server.session("worked").await;
    assert_eq!(s["state"], "stopped", "{s}");
    assert!(s.get("agent_fresh").is_none(), "{s}");
}

/// A server killed while an agent's `idle` waited out its 1.5 s settle (or while a webhook
/// was being retried) leaves that notification in its outbox, and the next server sends it —
/// it was lost: the next server found the agent idle already, with nothing to tell. Once.
#[tokio::test]
async fn an_idle_not_yet_told_when_the_server_is_killed_is_told_by_the_next() {
    let webhooks = corral_tests::Webhooks::start().await;
    let mut server = Server::start_configured(&webhooks.config());
    let dir = tempfile::tempdir().unwrap();
    let go = dir.path().join("go");
    let hook = |json: &str| format!("printf '%s' '{json}' | {} hook\n", binary().display());
    let script = format!(
        "{}{}while [ ! -f {go} ]; do sleep 0.02; done\n{}exec sleep 600\n",
        hook(r#"{"hook_event_name":"SessionStart","session_id":"agent-9"}"#),
        hook(r#"{"hook_event_name":"UserPromptSubmit","prompt":"go"}"#),
        hook(r#"{"hook_event_name":"Stop"}"#),
        go = go.display(),
    );
    let program = dir.path().join("agent.sh");
    corral_tests::executable(&program, &format!("#!/bin/sh\n{script}"));
    server
        .spawn(json!({"name": "told", "argv": [program], "agent": "claude"}))
        .await;
    let attention = async |server: &Server| server.session("told").await["attention"].clone();
    let deadline = Instant::now() + Duration::from_secs(10);
    while attention(&server).await != "working" {
        assert!(Instant::now() < deadline, "never working");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    std::fs::write(&go, b"").unwrap();
    while attention(&server).await != "idle" {
        assert!(Instant::now() < deadline, "never idle");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Within the settle: nothing was told yet.
    server.kill();
    assert!(webhooks.received().is_empty(), "{:?}", webhooks.received());
    server.restart();
    let told = webhooks.until(1, Duration::from_secs(10)).await;
    assert_eq!(told[0].1["kind"], "idle", "{told:?}");
    assert_eq!(told[0].1["name"], "told", "{told:?}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let idle = webhooks
        .received()
        .iter()
        .filter(|(_, b)| b["kind"] == "idle")
        .count();
    assert_eq!(idle, 1, "{:?}", webhooks.received());
    // Again, and this time a prompt comes right after the next server starts: the idle it was
    // left settles there too, and is not told (it went out at once, saying the agent waited
    // while it started its next turn).
    let hook = async |server: &Server, name: &str| {
        let payload = json!({"hook_event_name": name, "session_id": "agent-9"});
        let (code, body) = server
            .http(
                "POST",
                "/v1/sessions/told/events",
                Some(&server.token),
                Some(&payload),
            )
            .await;
        assert!(code < 300, "{code} {body}");
    };
    hook(&server, "UserPromptSubmit").await;
    hook(&server, "Stop").await;
    // Within the settle, once the outbox has it (more queued than done in it).
    let outbox = server.dir.path().join("notifications.outbox.jsonl");
    let t = Instant::now();
    loop {
        let text = std::fs::read_to_string(&outbox).unwrap_or_default();
        if text.matches(r#""op":"queued""#).count() > text.matches(r#""op":"done""#).count() {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(1),
            "the idle never reached the outbox: {text}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    server.kill();
    server.restart();
    hook(&server, "UserPromptSubmit").await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let idle = webhooks
        .received()
        .iter()
        .filter(|(_, b)| b["kind"] == "idle")
        .count();
    assert_eq!(idle, 1, "no second idle: {:?}", webhooks.received());
}

/// `corral ps` says `ready` for an agent idle before its first prompt, as the page does, and
/// `idle` once a turn ended: it said `idle` for both (the page said `ready`).
#[tokio::test]
async fn ps_says_ready_before_the_first_prompt_and_idle_after_a_turn() {
    let server = Server::start();
    let dir = tempfile::tempdir().unwrap();
    // Under the claude profile (its flags are the script's arguments, unread).
    let program = dir.path().join("agent.sh");
    corral_tests::executable(&program, "#!/bin/sh\nexec sleep 600\n");
    server
        .spawn(json!({"name": "fresh", "argv": [program], "agent": "claude"}))
        .await;
    let hook = async |name: &str| {
        let payload = json!({"hook_event_name": name, "session_id": "agent-7"});
        let (code, body) = server
            .http(
                "POST",
                "/v1/sessions/fresh/events",
                Some(&server.token),
                Some(&payload),
            )
            .await;
        assert!(code < 300, "{code} {body}");
    };
    let attention_column = |ps: &str| {
        let line = ps
            .lines()
            .find(|l| l.contains(" fresh "))
            .unwrap_or_else(|| panic!("{ps}"))
            .to_string();
        line.split_whitespace().last().unwrap().to_string()
    };
    hook("SessionStart").await;
    waits_for(&server, "fresh", "idle");
    let ps = String::from_utf8(corral(&server, &["ps"]).stdout).unwrap();
    assert_eq!(attention_column(&ps), "ready", "{ps}");
    hook("UserPromptSubmit").await;
    hook("Stop").await;
    waits_for(&server, "fresh", "idle");
    let ps = String::from_utf8(corral(&server, &["ps"]).stdout).unwrap();
    assert_eq!(attention_column(&ps), "idle", "{ps}");
}
