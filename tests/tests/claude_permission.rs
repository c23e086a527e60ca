//! Permission answers with the real Claude Code, in every `cargo test`: Claude runs in its TUI
//! (PTY mode) under `corral spawn --agent claude` against a local stub of the Anthropic Messages
//! API that asks for the Bash tool (`touch <project>/made-by-claude`) and, once it gets the tool's
//! result, ends the turn with a text. Checked, one test each: an `allow` from `corral answer`
//! runs the tool, a `deny --message` does not and Claude gets the message, and with no answer
//! within `[agents] permission_wait_secs` the hook returns no decision and the question is
//! Claude's own prompt in the terminal, answered there.
//!
//! Why the TUI: Claude Code 2.1 runs PermissionRequest hooks where it would otherwise show its
//! permission dialog (TUI), or alongside its SDK permission request (`-p --input-format
//! stream-json --permission-prompt-tool stdio`). Plain `claude -p` with `--permission-mode
//! default` never asks: a tool that needs a permission is refused at once (the tool result says
//! it "was blocked") and no PermissionRequest hook runs; the last test here pins that down.
//!
//! What Claude requests (logged by the stub; `requests` in a failure message): `HEAD /` (a
//! connectivity check) and `POST /v1/messages?beta=true`, streaming: a session title (no tools;
//! answered with a text), the turn (answered with the tool_use), the follow-up carrying the
//! tool_result (answered with a text). Anything else would get `{}`.
//!
//! Claude's first-run screens are skipped with a temp HOME whose `.claude.json` marks onboarding
//! done, the project trusted and the API key approved.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use corral_tests::claude_stub::{Stub, claude_env, prepare_home, project_path};
use corral_tests::{Frame, Server, claude_code, session_processes, until_no_processes};
use serde_json::{Value, json};

/// What the TUI shows when its prompt is ready for input.
const READY: &str = "? for shortcuts";

/// Claude Code's own permission dialog.
const DIALOG: &str = "Do you want to proceed?";

/// The printable characters of a screen drawn with escape sequences, whitespace left out
/// (the TUI moves the cursor over blanks instead of writing them).
fn visible(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let mut out = String::new();
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c != '\x1b' {
            if !c.is_whitespace() && !c.is_control() {
                out.push(c);
            }
            continue;
        }
        match chars.next() {
            // CSI: parameters up to a final byte in @..~.
            Some('[') => {
                for c in chars.by_ref() {
                    if ('@'..='~').contains(&c) {
                        break;
                    }
                }
            }
            // OSC: up to BEL or ST.
            Some(']') => {
                while let Some(c) = chars.next() {
                    if c == '\x07' {
                        break;
                    }
                    if c == '\x1b' {
                        chars.next();
                        break;
                    }
                }
            }
            // Charset designations take one more character.
            Some('(' | ')' | '*' | '+' | '#' | '%') => {
                chars.next();
            }
            _ => {}
        }
    }
    out
}

fn squash(s: &str) -> String {
    s.chars().filter(|c| !c.is_whitespace()).collect()
}

/// The session's current screen (a SNAPSHOT from the server's emulator), as [`visible`] text.
async fn screen(server: &Server, name: &str) -> String {
    let mut ws = server.ws().await;
    ws.send(json!({"type": "snapshot", "session": name})).await;
    loop {
        match ws.next().await {
            Frame::Bin(2, _, _, bytes) => return visible(&bytes),
            Frame::Json(v) if v["type"] == "error" => panic!("snapshot: {v}"),
            Frame::Close(code, reason) => panic!("closed {code} {reason}"),
            _ => {}
        }
    }
}

/// Waits (bounded) until the screen shows `text`; returns the screen.
async fn until_screen(server: &Server, name: &str, text: &str, within: Duration) -> String {
    let deadline = Instant::now() + within;
    loop {
        let s = screen(server, name).await;
        if s.contains(&squash(text)) {
            return s;
        }
        assert!(
            Instant::now() < deadline,
            "no {text:?} on the screen of {name} after {within:?}: {s}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// One Claude Code in its TUI under `corral spawn --agent claude`, with its own HOME and project.
struct Claude {
    id: String,
    name: String,
    project: tempfile::TempDir,
    _home: tempfile::TempDir,
    stub: Stub,
}

impl Claude {
    /// The file the stub's tool_use creates.
    fn target(&self) -> PathBuf {
        project_path(self.project.path()).join("made-by-claude")
    }

    /// Spawns Claude in `project` against `stub`, waits until its prompt takes input, pastes
    /// the prompt and waits until the session needs a permission.
    async fn start_asking(
        server: &Server,
        name: &str,
        project: tempfile::TempDir,
        stub: Stub,
    ) -> Claude {
        let c = Claude::start_prompted(server, name, project, stub).await;
        let out = server
            .cli(&["wait", name, "--for", "needs_permission", "--timeout", "30"])
            .await;
        assert!(
            out.status.success(),
            "{name} never asked: {} {}\nscreen: {}\nrequests: {:?}",
            String::from_utf8_lossy(&out.stderr),
            server.session(name).await,
            screen(server, name).await,
            c.stub.summary()
        );
        c
    }

    /// Spawns Claude in `project` against `stub`, waits until its prompt takes input and pastes
    /// the prompt.
    async fn start_prompted(
        server: &Server,
        name: &str,
        project: tempfile::TempDir,
        stub: Stub,
    ) -> Claude {
        let c = Claude::start(server, name, project, stub).await;
        server
            .cli_ok(&["send", name, "--paste", "create the file"])
            .await;
        c
    }

    /// Spawns Claude in `project` against `stub` and waits until its prompt takes input.
    async fn start(server: &Server, name: &str, project: tempfile::TempDir, stub: Stub) -> Claude {
        let claude = claude_code().expect(
            "Claude Code is missing and `npm install @anthropic-ai/claude-code` failed: \
             run scripts/setup (needs node and npm)",
        );
        let home = tempfile::tempdir().unwrap();
        let dir = project_path(project.path());
        // First-run screens: onboarding done, this project trusted, the API key approved.
        prepare_home(home.path(), &dir);
        let id = spawn_claude(server, name, &claude, &dir, home.path(), &stub).await;
        let c = Claude {
            id,
            name: name.to_string(),
            project,
            _home: home,
            stub,
        };
        // SessionStart makes the session idle; the prompt takes input once it is drawn. A moment
        // more lets Claude finish starting up: while it is busy a paste and its Enter can reach
        // it in one read, and then the Enter is lost.
        server
            .cli_ok(&["wait", name, "--for", "idle", "--timeout", "40"])
            .await;
        until_screen(server, name, READY, Duration::from_secs(20)).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        c
    }

    /// Spawns Claude, waits until its prompt takes input, pastes the prompt and waits until the
    /// session needs a permission; checks what it asks for and that Claude's own dialog shows.
    async fn start_and_ask(server: &Server, name: &str) -> Claude {
        let project = tempfile::tempdir().unwrap();
        let dir = project_path(project.path());
        let command = format!("touch {}", dir.join("made-by-claude").display());
        let stub = Stub::start(command.clone()).await;
        let c = Claude::start_asking(server, name, project, stub).await;
        let s = server.session(name).await;
        assert_eq!(s["attention"], "needs_permission", "{s}");
        assert_eq!(s["permission"]["tool"], "Bash", "{s}");
        assert_eq!(s["permission"]["input"]["command"], command, "{s}");
        assert!(s["agent_session_id"].is_string(), "{s}");
        let ps = server.cli_ok(&["ps"]).await;
        assert!(ps.contains("needs_permission (Bash: touch "), "{ps}");
        // Claude shows its own dialog at once, while the hook waits for an answer: whichever
        // answers first (the API through the hook, or a key in the terminal) decides.
        until_screen(server, name, DIALOG, Duration::from_secs(10)).await;
        assert!(!c.target().exists(), "the tool ran before any answer");
        c
    }

    /// The hook names among the session's events.
    async fn hooks(&self, server: &Server) -> Vec<String> {
        server
            .events_of(&self.name, "hook")
            .await
            .iter()
            .map(|e| e["name"].as_str().unwrap_or("").to_string())
            .collect()
    }

    /// Stops the session and the stub; nothing of the session may be left.
    async fn stop(self, server: &Server) {
        server.cli_ok(&["stop", &self.name]).await;
        until_no_processes(&self.id, Duration::from_secs(10)).await;
        self.stub.stop();
    }
}

#[tokio::test]
async fn claude_code_asks_corral_answers_allow_and_the_tool_runs() {
    let webhooks = corral_tests::Webhooks::start().await;
    let server = Server::start_configured(&webhooks.config());
    let c = Claude::start_and_ask(&server, "allow").await;
    server.cli_ok(&["answer", "allow", "allow"]).await;
    server
        .cli_ok(&["wait", "allow", "--for", "idle", "--timeout", "30"])
        .await;
    assert!(
        c.target().exists(),
        "the allowed tool did not run; requests: {:?}",
        c.stub.summary()
    );
    let results = c.stub.tool_results();
    assert_eq!(results.len(), 1, "{results:?}");
    assert_eq!(results[0]["tool_use_id"], "toolu_stub_1");
    assert_ne!(results[0]["is_error"], true, "{results:?}");
    let s = server.session("allow").await;
    assert_eq!(s["attention"], "idle", "{s}");
    assert!(s["permission"].is_null(), "{s}");
    let hooks = c.hooks(&server).await;
    for want in ["PermissionRequest", "PostToolUse", "Stop"] {
        assert!(hooks.iter().any(|h| h == want), "no {want} in {hooks:?}");
    }
    let screen = until_screen(&server, "allow", READY, Duration::from_secs(10)).await;
    assert!(!screen.contains(&squash(DIALOG)), "{screen}");
    // The push saying it waits carries the turn's answer (its Stop hook's
    // `last_assistant_message`).
    let told = webhooks.until(2, Duration::from_secs(10)).await;
    let idle = told
        .iter()
        .find(|(_, b)| b["kind"] == "idle")
        .unwrap_or_else(|| panic!("{told:?}"));
    assert_eq!(
        idle.1["detail"], "The stub saw the tool result.",
        "{told:?}"
    );
    c.stop(&server).await;
}

/// Claude asks the user to choose (its AskUserQuestion tool, which asks through the same
/// PermissionRequest hook): a bare allow is refused (it would dismiss the question: Claude
/// would hear "the user did not answer"), and `corral answer … allow --choose Blue` gives Claude
/// the choice, as the tool's input the way Claude reads it.
#[tokio::test]
async fn claude_code_asks_a_question_and_corral_answers_it_with_a_choice() {
    let server = Server::start();
    let question = "Which color do you prefer?";
    let input = json!({"questions": [{
        "question": question, "header": "Color", "multiSelect": false,
        "options": [
            {"label": "Red", "description": "warm"},
            {"label": "Blue", "description": "cool"},
        ],
    }]});
    let stub = Stub::start_tool("AskUserQuestion", input).await;
    let c = Claude::start_asking(&server, "ask", tempfile::tempdir().unwrap(), stub).await;
    let s = server.session("ask").await;
    assert_eq!(s["permission"]["tool"], "AskUserQuestion", "{s}");
    let bare = server.cli(&["answer", "ask", "allow"]).await;
    assert!(!bare.status.success());
    let err = String::from_utf8_lossy(&bare.stderr);
    assert!(err.contains("asks the user to choose"), "{err}");
    assert!(err.contains(question), "{err}");
    let wrong = server
        .cli(&[
            "answer", "ask", "allow", "--choose", "Red", "--choose", "Blue",
        ])
        .await;
    assert!(!wrong.status.success());
    assert!(String::from_utf8_lossy(&wrong.stderr).contains("one --choose for each"));
    // Still open after the refusals; then answered.
    assert_eq!(server.session("ask").await["attention"], "needs_permission");
    server
        .cli_ok(&["answer", "ask", "allow", "--choose", "Blue"])
        .await;
    server
        .cli_ok(&["wait", "ask", "--for", "idle", "--timeout", "30"])
        .await;
    let results = c.stub.tool_results();
    assert_eq!(results.len(), 1, "{results:?}");
    let said = results[0]["content"].to_string();
    assert!(said.contains("Blue"), "{results:?}");
    assert!(
        said.contains("answered") && !said.contains("did not answer"),
        "{results:?}"
    );
    c.stop(&server).await;
}

#[tokio::test]
async fn claude_code_asks_corral_answers_deny_with_a_message_and_nothing_runs() {
    let server = Server::start();
    let c = Claude::start_and_ask(&server, "deny").await;
    server
        .cli_ok(&["answer", "deny", "deny", "--message", "not in this test"])
        .await;
    server
        .cli_ok(&["wait", "deny", "--for", "idle", "--timeout", "30"])
        .await;
    assert!(!c.target().exists(), "the denied tool ran");
    // Claude hands the message to the model as the tool's (failed) result.
    let results = c.stub.tool_results();
    assert_eq!(results.len(), 1, "{results:?}");
    assert_eq!(results[0]["is_error"], true, "{results:?}");
    assert!(
        results[0]["content"]
            .to_string()
            .contains("not in this test"),
        "{results:?}"
    );
    let hooks = c.hooks(&server).await;
    assert!(
        !hooks.iter().any(|h| h == "PostToolUse"),
        "a PostToolUse after a deny: {hooks:?}"
    );
    assert!(hooks.iter().any(|h| h == "Stop"), "{hooks:?}");
    assert!(server.session("deny").await["permission"].is_null());
    c.stop(&server).await;
}

#[tokio::test]
async fn claude_code_asks_nobody_answers_in_time_and_its_own_prompt_decides() {
    let server = Server::start_configured("[agents]\npermission_wait_secs = 2\n");
    let c = Claude::start_and_ask(&server, "nobody").await;
    let asked = Instant::now();
    // The hook (`corral hook`, a process of the session) returns after the 2 s wait, with no
    // decision.
    let is_hook = |pid: &i32| {
        std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "corral")
    };
    while session_processes(&c.id).iter().any(is_hook) {
        assert!(
            asked.elapsed() < Duration::from_secs(15),
            "the hook still waits after 15 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The session still needs the permission (Claude still asks), but no hook waits for an
    // answer any more: the API refuses one, naming the state.
    let s = server.session("nobody").await;
    assert_eq!(s["attention"], "needs_permission", "{s}");
    // It offers no question to answer from outside (the page shows no Allow/Deny).
    assert!(s["permission"].is_null(), "{s}");
    let out = server.cli(&["answer", "nobody", "allow"]).await;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not waiting for a permission answer"), "{err}");
    assert!(err.contains("in its own terminal"), "{err}");
    // A prompt is refused with the same advice (it sent the user to `corral answer`, which
    // refuses).
    let out = server.cli(&["send", "nobody", "--paste", "hello"]).await;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("in its own terminal") && !err.contains("corral answer"),
        "{err}"
    );
    // Claude's own prompt is still on the screen, and the tool has not run.
    tokio::time::sleep(Duration::from_millis(500)).await;
    until_screen(&server, "nobody", DIALOG, Duration::from_secs(5)).await;
    assert!(!c.target().exists(), "the tool ran without an answer");
    // Answered in the terminal as usual: Enter takes the highlighted "Yes".
    server.cli_ok(&["send", "nobody", "\\r"]).await;
    server
        .cli_ok(&["wait", "nobody", "--for", "idle", "--timeout", "30"])
        .await;
    assert!(
        c.target().exists(),
        "the tool allowed in the terminal did not run"
    );
    let hooks = c.hooks(&server).await;
    assert!(hooks.iter().any(|h| h == "PostToolUse"), "{hooks:?}");
    c.stop(&server).await;
}

/// Esc typed into Claude while its tool runs ends the turn, and Claude Code fires no hook for
/// that (no Stop, no PostToolUse): the session is `idle` again because corral looked at the
/// screen after the key (journaled as `interrupted`), not `working` until the next prompt — a
/// phone showed it busy and `wait --for idle` hung. An interrupt is its user's own doing: no
/// webhook is told the agent waits (a phone got "waiting for input" for the key just typed).
#[tokio::test]
async fn claude_code_interrupted_with_esc_waits_again() {
    let webhooks = corral_tests::Webhooks::start().await;
    let server = Server::start_configured(&webhooks.config());
    let project = tempfile::tempdir().unwrap();
    // A command Claude runs without asking (read-only), which outlasts the test.
    let stub = Stub::start("sleep 300".to_string()).await;
    let c = Claude::start_prompted(&server, "esc", project, stub).await;
    // The tool runs: Claude works, and says so on its screen.
    until_screen(&server, "esc", "esc to interrupt", Duration::from_secs(15)).await;
    let s = server.session("esc").await;
    assert_eq!(s["attention"], "working", "{s}");
    // A key right after the prompt is not looked after (Claude may not have drawn its working
    // screen yet): this one comes once the turn is well under way.
    tokio::time::sleep(Duration::from_secs(2)).await;
    server.cli_ok(&["send", "esc", "\\e"]).await;
    let out = server
        .cli(&["wait", "esc", "--for", "idle", "--timeout", "10"])
        .await;
    assert!(
        out.status.success(),
        "still working 10 s after Esc: {}\nscreen: {}",
        server.session("esc").await,
        screen(&server, "esc").await
    );
    let agent = server.events_of("esc", "agent").await;
    assert!(
        agent.iter().any(|e| e["type"] == "interrupted"),
        "{agent:?}"
    );
    let hooks = c.hooks(&server).await;
    assert!(
        !hooks.iter().any(|h| h == "Stop" || h == "PostToolUse"),
        "Claude fired a hook for the interrupt after all: {hooks:?}"
    );
    let idle = |got: &[(String, Value)]| got.iter().filter(|(_, b)| b["kind"] == "idle").count();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(idle(&webhooks.received()), 0, "{:?}", webhooks.received());
    // Text left in its input box (as an interrupt before Claude answered puts the prompt
    // back): a prompt now would be added to it, so it is refused, saying how to clear it;
    // cleared (Ctrl-U), a prompt goes.
    until_screen(&server, "esc", READY, Duration::from_secs(10)).await;
    server.cli_ok(&["send", "esc", "a draft"]).await;
    until_screen(&server, "esc", "a draft", Duration::from_secs(10)).await;
    let out = server.cli(&["send", "esc", "--paste", "hello"]).await;
    assert!(!out.status.success(), "a prompt added to the draft");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("already holds text") && err.contains("a draft"),
        "{err}"
    );
    server.cli_ok(&["send", "esc", "\\x15"]).await;
    until_screen(&server, "esc", READY, Duration::from_secs(10)).await;
    server.cli_ok(&["send", "esc", "--paste", "hello"]).await;
    c.stop(&server).await;
}

/// `corral spawn --agent claude` of `claude` in `dir` with `home` and the stub's API: its id.
async fn spawn_claude(
    server: &Server,
    name: &str,
    claude: &std::path::Path,
    dir: &std::path::Path,
    home: &std::path::Path,
    stub: &Stub,
) -> String {
    let env = claude_env(home, stub);
    let dir_arg = dir.display().to_string();
    let mut args = vec![
        "spawn", "--name", name, "--agent", "claude", "--cwd", &dir_arg,
    ];
    for e in &env {
        args.extend(["--env", e.as_str()]);
    }
    let claude_arg = claude.display().to_string();
    args.extend(["--", &claude_arg, "--permission-mode", "default"]);
    server.cli_ok(&args).await.trim().to_string()
}

/// The command line of a session's process now.
fn cmdline(server_session: &Value) -> String {
    let pid = server_session["pid"].as_i64().expect("a running process");
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
        .unwrap_or_default()
}

/// A restart resumes Claude's conversation only once there is one: restarted before its first
/// prompt, `--resume` of the id its SessionStart gave failed at once ("No conversation found")
/// at every restart, and the session never ran again. Meanwhile the restarted agent is
/// `starting`, not the last process's `exited` (`wait --for idle` gave up with status 3).
#[tokio::test]
async fn claude_code_restarted_before_its_first_prompt_starts_afresh() {
    let server = Server::start();
    // A tool Claude does not offer: every turn is answered with a text.
    let stub = Stub::start_tool("NoSuchTool", json!({})).await;
    let c = Claude::start(&server, "fresh", tempfile::tempdir().unwrap(), stub).await;
    server.cli_ok(&["restart", "fresh"]).await;
    let s = server.session("fresh").await;
    assert_ne!(s["attention"], "exited", "{s}");
    let out = server
        .cli(&["wait", "fresh", "--for", "idle", "--timeout", "40"])
        .await;
    assert!(
        out.status.success(),
        "the restarted agent never waited again: {} {}",
        String::from_utf8_lossy(&out.stderr),
        server.session("fresh").await
    );
    let s = server.session("fresh").await;
    assert_eq!(s["state"], "running", "{s}");
    assert!(!cmdline(&s).contains("--resume"), "{}", cmdline(&s));
    // Once a turn was had, the conversation exists: a restart resumes it.
    until_screen(&server, "fresh", READY, Duration::from_secs(20)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    server.cli_ok(&["send", "fresh", "--paste", "hello"]).await;
    let out = server
        .cli(&["wait", "fresh", "--for", "idle", "--timeout", "30"])
        .await;
    assert!(
        out.status.success(),
        "the turn never ended: {out:?} {}\n{}",
        server.session("fresh").await,
        server.cli_ok(&["events", "fresh"]).await
    );
    let id = s["agent_session_id"].as_str().unwrap().to_string();
    // At once: Claude writes the turn down a moment after its Stop hook, and the restart
    // waits for that (a restart 12 ms after it found no conversation to resume).
    server.cli_ok(&["restart", "fresh"]).await;
    let out = server
        .cli(&["wait", "fresh", "--for", "idle", "--timeout", "40"])
        .await;
    assert!(
        out.status.success(),
        "the resumed agent never waited: {out:?} {}\n{}",
        server.session("fresh").await,
        server.cli_ok(&["events", "fresh"]).await
    );
    let s = server.session("fresh").await;
    assert!(
        cmdline(&s).contains(&format!("--resume {id}")),
        "{}",
        cmdline(&s)
    );
    c.stop(&server).await;
}

/// A panel Claude opens on its screen (`/cost`) would take the next prompt's Enter: the panel
/// closed, the prompt was lost, and `send --paste` said nothing (a script then waited for a turn
/// that never came). The prompt is refused, naming the way out; once Esc closed the panel it
/// goes through.
#[tokio::test]
async fn a_prompt_is_refused_while_claude_shows_a_panel() {
    let server = Server::start();
    let stub = Stub::start_tool("NoSuchTool", json!({})).await;
    let c = Claude::start(&server, "panel", tempfile::tempdir().unwrap(), stub).await;
    server.cli_ok(&["send", "panel", "--paste", "/cost"]).await;
    until_screen(&server, "panel", "Esc to cancel", Duration::from_secs(15)).await;
    let out = server.cli(&["send", "panel", "--paste", "hello"]).await;
    assert!(!out.status.success(), "a prompt typed into the panel");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("shows a dialog") && err.contains("\\e"),
        "{err}"
    );
    server.cli_ok(&["send", "panel", "\\e"]).await;
    until_screen(&server, "panel", READY, Duration::from_secs(15)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let asked = c.stub.requests().len();
    server.cli_ok(&["send", "panel", "--paste", "hello"]).await;
    server
        .cli_ok(&["wait", "panel", "--for", "idle", "--timeout", "30"])
        .await;
    assert!(
        c.stub.requests().len() > asked,
        "the prompt after the panel started no turn: {:?}",
        c.stub.summary()
    );
    c.stop(&server).await;
}

/// Prompts sent one right after the other (two at once, then two in a row) each reach Claude
/// as its own prompt: the second was typed into Claude's input box before it had cleared the
/// first (it went as "AAA oneBBB two"), and both sends said ok.
#[tokio::test]
async fn prompts_sent_back_to_back_reach_claude_each_whole() {
    let server = Server::start();
    let stub = Stub::start_tool("NoSuchTool", json!({})).await;
    let c = Claude::start(&server, "quick", tempfile::tempdir().unwrap(), stub).await;
    let (a, b) = tokio::join!(
        server.cli(&["send", "quick", "--paste", "AAA one"]),
        server.cli(&["send", "quick", "--paste", "BBB two"]),
    );
    for out in [a, b] {
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    server
        .cli_ok(&["send", "quick", "--paste", "CCC three"])
        .await;
    server
        .cli_ok(&["send", "quick", "--paste", "DDD four"])
        .await;
    let prompts = ["AAA one", "BBB two", "CCC three", "DDD four"];
    // Every text Claude sent the API with a prompt's marker in it.
    let texts = |stub: &Stub| -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for r in stub.requests() {
            for m in r["body"]["messages"].as_array().into_iter().flatten() {
                let blocks = match &m["content"] {
                    Value::String(t) => vec![t.clone()],
                    Value::Array(bs) => bs
                        .iter()
                        .filter_map(|b| b["text"].as_str().map(str::to_string))
                        .collect(),
                    _ => vec![],
                };
                for t in blocks {
                    if prompts.iter().any(|p| t.contains(&p[..3])) && !out.contains(&t) {
                        out.push(t);
                    }
                }
            }
        }
        out
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while !prompts
        .iter()
        .all(|p| texts(&c.stub).iter().any(|t| t.contains(p)))
    {
        assert!(
            Instant::now() < deadline,
            "not every prompt reached Claude: {:?}\nscreen: {}",
            texts(&c.stub),
            screen(&server, "quick").await
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for t in texts(&c.stub) {
        let within: Vec<_> = prompts.iter().filter(|p| t.contains(&p[..3])).collect();
        assert_eq!(within.len(), 1, "prompts merged into one: {t:?}");
    }
    c.stop(&server).await;
}

/// `claude -p` (pipe mode, `--permission-mode default`, no `--allowedTools`) never asks: the
/// tool is refused at once (its result says it "was blocked"), no PermissionRequest hook runs,
/// and Claude ends its turn and exits.
#[tokio::test]
async fn claude_code_in_pipe_mode_refuses_the_tool_without_asking() {
    let claude = claude_code().expect(
        "Claude Code is missing and `npm install @anthropic-ai/claude-code` failed: \
         run scripts/setup (needs node and npm)",
    );
    let server = Server::start();
    let project = tempfile::tempdir().unwrap();
    let home = tempfile::tempdir().unwrap();
    let dir = project_path(project.path());
    let target = dir.join("made-by-claude");
    let stub = Stub::start(format!("touch {}", target.display())).await;
    let env = claude_env(home.path(), &stub);
    let dir_arg = dir.display().to_string();
    let mut args = vec![
        "spawn", "--name", "pipe", "--agent", "claude", "--pipe", "--cwd", &dir_arg,
    ];
    for e in &env {
        args.extend(["--env", e.as_str()]);
    }
    let claude_arg = claude.display().to_string();
    args.extend([
        "--",
        &claude_arg,
        "-p",
        "create the file",
        "--permission-mode",
        "default",
    ]);
    let id = server.cli_ok(&args).await.trim().to_string();
    let out = server
        .cli(&["wait", "pipe", "--for", "exit", "--timeout", "40"])
        .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!target.exists(), "the tool ran without a permission");
    let results = stub.tool_results();
    assert_eq!(results.len(), 1, "{results:?}; {:?}", stub.summary());
    assert_eq!(results[0]["is_error"], true, "{results:?}");
    assert!(
        results[0]["content"].to_string().contains("was blocked"),
        "{results:?}"
    );
    let events = server.cli_ok(&["events", "pipe", "--json"]).await;
    let hooks: Vec<String> = events
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|e| e["kind"]["kind"] == "hook")
        .map(|e| e["kind"]["name"].as_str().unwrap_or("").to_string())
        .collect();
    assert!(hooks.iter().any(|h| h == "PreToolUse"), "{hooks:?}");
    assert!(!hooks.iter().any(|h| h == "PermissionRequest"), "{hooks:?}");
    assert!(hooks.iter().any(|h| h == "Stop"), "{hooks:?}");
    assert!(
        server
            .cli_ok(&["logs", "pipe"])
            .await
            .contains("The stub saw the tool result.")
    );
    until_no_processes(&id, Duration::from_secs(10)).await;
    stub.stop();
}

/// A question answered in Claude's own dialog (a key in its terminal, while the hook call still
/// waits for an answer through corral): Claude Code fires no hook for that and keeps the call
/// open until the allowed tool has run, so the session said `needs_permission` — the page
/// offered Allow and Deny — all the while the tool ran. The screen says the dialog is gone: the
/// agent `working` while the tool runs (journaled `answered_in_dialog`), an answer from outside
/// then refused, and `idle` once its turn ends.
#[tokio::test]
async fn claude_code_answered_in_its_own_dialog_works_while_the_tool_runs() {
    let server = Server::start();
    let project = tempfile::tempdir().unwrap();
    let file = project_path(project.path()).join("made-by-claude");
    let stub = Stub::start(format!("touch {} && sleep 8", file.display())).await;
    let c = Claude::start_asking(&server, "dialog", project, stub).await;
    let question = server.session("dialog").await["permission"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    until_screen(&server, "dialog", DIALOG, Duration::from_secs(10)).await;
    // Enter takes the highlighted "Yes".
    server.cli_ok(&["send", "dialog", "\\r"]).await;
    let t = Instant::now();
    while !file.exists() {
        assert!(t.elapsed() < Duration::from_secs(15), "the tool never ran");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Looked at 0.3 s after the key, then 1, 2 and 4 s.
    loop {
        let s = server.session("dialog").await;
        if s["attention"] == "working" {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(3),
            "not working while the tool it allowed runs: {s}\nscreen: {}",
            screen(&server, "dialog").await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // It stays so while the tool runs (8 s): looked at for 4 s.
    while t.elapsed() < Duration::from_secs(4) {
        let s = server.session("dialog").await;
        assert_eq!(s["attention"], "working", "{s}");
        assert!(s["permission"].is_null(), "{s}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // An answer after it, naming the question or not, is told what became of it (it named
    // an older question answered through corral, or only the attention).
    for args in [
        vec!["answer", "dialog", "deny"],
        vec!["answer", "dialog", "deny", "--id", &question],
    ] {
        let out = server.cli(&args).await;
        assert!(
            !out.status.success(),
            "an answer to a question answered in the dialog"
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(&format!(
                "question {question} was settled in the agent's own dialog"
            )),
            "{err}"
        );
    }
    let agent = server.events_of("dialog", "agent").await;
    assert!(
        agent.iter().any(|e| e["type"] == "answered_in_dialog"),
        "{agent:?}"
    );
    server
        .cli_ok(&["wait", "dialog", "--for", "idle", "--timeout", "30"])
        .await;
    let hooks = c.hooks(&server).await;
    for want in ["PostToolUse", "Stop"] {
        assert!(hooks.iter().any(|h| h == want), "no {want} in {hooks:?}");
    }
    c.stop(&server).await;
}

/// Esc in Claude's own dialog refuses the tool and ends the turn, with no hook: the agent waits
/// again (`idle`, not `needs_permission` nor `working`), and the tool did not run. No webhook
/// says it waits (whoever pressed Esc is looking at it; a phone was told "waiting for input"),
/// and a server killed after that finds it waiting, not asking again (it came back
/// `needs_permission`, refusing every prompt).
#[tokio::test]
async fn claude_code_refused_in_its_own_dialog_waits_again() {
    let webhooks = corral_tests::Webhooks::start().await;
    let mut server = Server::start_configured(&webhooks.config());
    let c = Claude::start_and_ask(&server, "refused").await;
    server.cli_ok(&["send", "refused", "\\e"]).await;
    let out = server
        .cli(&["wait", "refused", "--for", "idle", "--timeout", "10"])
        .await;
    assert!(
        out.status.success(),
        "not waiting 10 s after Esc in its dialog: {}\nscreen: {}",
        server.session("refused").await,
        screen(&server, "refused").await
    );
    let s = server.session("refused").await;
    assert!(s["permission"].is_null(), "{s}");
    assert!(!c.target().exists(), "the refused tool ran");
    // Past the 1.5 s an idle push waits for: the question was told, the wait was not.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let kinds: Vec<Value> = webhooks
        .received()
        .iter()
        .map(|(_, b)| b["kind"].clone())
        .collect();
    assert!(kinds.contains(&json!("needs_permission")), "{kinds:?}");
    assert!(!kinds.contains(&json!("idle")), "{kinds:?}");
    server.kill();
    server.restart();
    let s = server.session("refused").await;
    assert_eq!(s["attention"], "idle", "{s}");
    server.kill();
    server.restart();
    let s = server.session("refused").await;
    assert_eq!(s["attention"], "idle", "after a second restart: {s}");
    c.stop(&server).await;
}

/// Claude Code runs no hook before its folder is trusted, so an agent in a new folder said
/// `starting` for ever — on the page among the healthy processes, in `ps` as busy. Its screen
/// says it waits: the session says what that screen asks (`agent_asks_at_start`), `ps` shows
/// it, a webhook is told (`asks_at_start`), and once Enter trusts the folder it starts (idle)
/// and asks no more.
#[tokio::test]
async fn claude_code_on_its_folder_trust_screen_is_said_to_ask_until_answered() {
    let webhooks = corral_tests::Webhooks::start().await;
    let server = Server::start_configured(&webhooks.config());
    let claude = claude_code().expect("Claude Code is missing: run scripts/setup");
    let stub = Stub::start_tool("NoSuchTool", json!({})).await;
    let home = tempfile::tempdir().unwrap();
    let project = tempfile::tempdir().unwrap();
    let dir = project_path(project.path());
    // Onboarding done and the key approved, but this folder never trusted.
    let elsewhere = tempfile::tempdir().unwrap();
    prepare_home(home.path(), &project_path(elsewhere.path()));
    let id = spawn_claude(&server, "new", &claude, &dir, home.path(), &stub).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let asks = loop {
        let s = server.session("new").await;
        if let Some(line) = s["agent_asks_at_start"].as_str() {
            assert_eq!(s["attention"], "starting", "{s}");
            break line.to_string();
        }
        assert!(
            Instant::now() < deadline,
            "not said to ask: {s}\nscreen: {}",
            screen(&server, "new").await
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(
        asks.contains('?'),
        "{asks}\nscreen: {}",
        screen(&server, "new").await
    );
    let ps = server.cli_ok(&["ps"]).await;
    // (Cut to a few words in ps.)
    let start: String = asks.chars().take(30).collect();
    assert!(
        ps.contains(&format!("starting (its screen asks: {start}")),
        "{ps}"
    );
    let told = webhooks.until(1, Duration::from_secs(10)).await;
    assert_eq!(told[0].1["kind"], "asks_at_start", "{told:?}");
    assert_eq!(told[0].1["detail"], asks.as_str(), "{told:?}");
    // A script that waits for it says, when it gives up, what keeps it.
    let out = server
        .cli(&["wait", "new", "--for", "idle", "--timeout", "1"])
        .await;
    assert_eq!(out.status.code(), Some(124), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("its screen asks \"{asks}\"")) && err.contains("corral send new"),
        "{err}"
    );
    // Enter takes the highlighted choice: trust.
    server.cli_ok(&["send", "new", "\\r"]).await;
    server
        .cli_ok(&["wait", "new", "--for", "idle", "--timeout", "40"])
        .await;
    let s = server.session("new").await;
    assert!(s["agent_asks_at_start"].is_null(), "{s}");
    server.cli_ok(&["stop", "new"]).await;
    until_no_processes(&id, Duration::from_secs(10)).await;
    stub.stop();
}
