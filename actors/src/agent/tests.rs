//! The agent module's unit tests: hooks and stream events applied to the attention state, the
//! screen rules, the profile's settings.

use super::*;
use crate::session::shared::Status;

fn agent_status() -> Status {
    let mut s = Status::new(Default::default(), Some(Attention::Idle));
    s.state = crate::event::SessionState::Running;
    s.pid = Some(1);
    s
}

/// A turn's end (`result`).
fn turn_over() -> AgentEvent {
    AgentEvent::Result {
        subtype: "success".into(),
        is_error: false,
        text: None,
    }
}

fn asks(request_id: &str) -> AgentEvent {
    AgentEvent::PermissionRequest {
        request_id: request_id.into(),
        tool: "Bash".into(),
        input: json!({"command": request_id}),
    }
}

/// A deny through corral, then the same tool's PostToolUse: the agent's own dialog had
/// answered first, and the deny's question is named as overridden (once); another tool,
/// or a turn's end before it, is no such thing.
#[test]
fn a_tool_that_ran_after_a_deny_names_the_overridden_question() {
    let mut s = agent_status();
    let input = json!({"command": "touch x"});
    let ran = |input: &serde_json::Value| json!({"tool_name": "Bash", "tool_input": input});
    s.denied = Some(("q1".into(), "Bash".into(), input.clone()));
    assert_eq!(
        overridden_deny(&mut s, "PostToolUse", &ran(&json!({"command": "ls"}))),
        None
    );
    assert_eq!(overridden_deny(&mut s, "PreToolUse", &ran(&input)), None);
    assert_eq!(
        overridden_deny(&mut s, "PostToolUse", &ran(&input)).as_deref(),
        Some("q1")
    );
    assert_eq!(overridden_deny(&mut s, "PostToolUse", &ran(&input)), None);
    s.denied = Some(("q2".into(), "Bash".into(), input.clone()));
    assert_eq!(overridden_deny(&mut s, "Stop", &json!({})), None);
    assert_eq!(
        overridden_deny(&mut s, "PostToolUseFailure", &ran(&input)),
        None
    );
}

/// A transcript with a message is a conversation; one of metadata lines only (after `/exit`
/// as the first prompt) or none at all is not.
#[test]
fn a_conversation_is_a_transcript_with_a_message() {
    let dir = tempfile::tempdir().unwrap();
    let meta = dir.path().join("meta.jsonl");
    std::fs::write(
        &meta,
        "{\"type\":\"mode\",\"mode\":\"normal\"}\n{\"type\":\"permission-mode\"}\n",
    )
    .unwrap();
    assert!(!has_conversation(&meta));
    assert!(!has_conversation(&dir.path().join("none.jsonl")));
    let talk = dir.path().join("talk.jsonl");
    std::fs::write(
        &talk,
        "{\"type\":\"mode\"}\n{\"parentUuid\":null,\"type\":\"user\",\"message\":{}}\n",
    )
    .unwrap();
    assert!(has_conversation(&talk));
}

/// The input box's text is what lies between the last two rules after the `❯`: none when
/// it is empty, a restored prompt when there is one (over one line or more).
#[test]
fn the_input_box_s_text_is_read_between_its_rules() {
    let rule = "─".repeat(40);
    let empty = format!("● Done.\n\n{rule}\n❯\u{a0}\n{rule}\n  ? for shortcuts\n");
    assert_eq!(input_draft(&empty), None);
    let back =
        format!("❯ first\n  ⎿  Interrupted\n{rule}\n❯ plan:slow please\n{rule}\n   ● high\n");
    assert_eq!(input_draft(&back).as_deref(), Some("plan:slow please"));
    let two = format!("{rule}\n❯ line one\n  line two\n{rule}\n");
    assert_eq!(input_draft(&two).as_deref(), Some("line one line two"));
    assert_eq!(input_draft("no rules here\n❯ text"), None);
}

/// A dialog is what the foot of the screen says, not a line further up (an answer that
/// quotes the words).
#[test]
fn a_dialog_is_told_by_the_foot_of_the_screen() {
    let panel = "❯ /cost\n Settings  Status  Usage\n\n  Total cost: $0.0003\n\n  Esc to cancel\n\n";
    assert!(shows_dialog(panel));
    let prompt = "● Press Esc to cancel a dialog.\n\n─────\n❯ \n─────\n  ? for shortcuts\n";
    assert!(!shows_dialog(prompt));
    assert!(!shows_dialog(""));
}

/// Esc and Ctrl-C, plain or as the kitty keyboard protocol sends them, are interrupt keys;
/// an Esc that starts another key (an arrow), a paste with Esc in it, other keys are not;
/// `interrupted` moves only a working agent to idle.
#[test]
fn interrupt_keys_and_what_an_interrupt_means() {
    for key in [
        &b"\x1b"[..],
        b"\x03",
        b"\x1b[27u",
        b"\x1b[27;1u",
        b"\x1b[99;5u",
    ] {
        assert!(interrupt_key(key), "{key:?}");
    }
    for key in [&b"\x1b[A"[..], b"\x1bOA", b"a\x1b", b"\x1b\x1b", b"q", b""] {
        assert!(!interrupt_key(key), "{key:?}");
    }
    let mut s = agent_status();
    apply_stream(&mut s, &AgentEvent::Interrupted);
    assert_eq!(s.attention, Some(Attention::Idle));
    s.set_attention(Attention::NeedsPermission);
    apply_stream(&mut s, &AgentEvent::Interrupted);
    assert_eq!(s.attention, Some(Attention::NeedsPermission));
    s.set_attention(Attention::Working);
    apply_stream(&mut s, &AgentEvent::Interrupted);
    assert_eq!(s.attention, Some(Attention::Idle));
}

/// A question answered in the agent's own dialog (seen on its screen): the questions hook
/// calls held close and the agent works; a question gone to the dialog (none held) too; a
/// structured agent's question is answered on its stdin, never in a dialog.
#[test]
fn a_question_answered_in_the_dialog_means_working() {
    let mut s = agent_status();
    let mut held = hook_question(&json!({"tool_name": "Bash", "tool_input": {"command": "ls"}}));
    held.id = Some("7".into());
    assert!(questions::open(&mut s, held));
    assert!(asks_in_dialog(&s));
    let answered = |ids: &[&str]| AgentEvent::AnsweredInDialog {
        questions: ids.iter().map(|i| i.to_string()).collect(),
    };
    apply_stream(&mut s, &answered(&["7"]));
    assert_eq!(s.attention, Some(Attention::Working));
    assert!(s.permission.is_none());
    assert!(!asks_in_dialog(&s));
    s.set_attention(Attention::NeedsPermission);
    assert!(asks_in_dialog(&s));
    apply_stream(&mut s, &answered(&[]));
    assert_eq!(s.attention, Some(Attention::Working));
    apply_stream(&mut s, &asks("r1"));
    assert_eq!(s.attention, Some(Attention::NeedsPermission));
    assert!(!asks_in_dialog(&s));
}

/// What a start screen asks is its first line with a question, up to it (else its last
/// line), box drawing left out, cut to [`START_LINE_MAX`]; it is kept while the agent has
/// said nothing.
#[test]
fn a_start_screen_s_question_is_its_first_line_that_asks() {
    let trust = "────────\n Accessing workspace:\n\n /tmp/x\n\n Quick safety check: Is this a \
                 project you created or one you trust? (Like your own code, a\n well-known \
                 project.)\n\n ❯ 1. Yes, I trust this folder\n   2. No, exit\n\n Enter to confirm";
    assert_eq!(
        start_question(trust).as_deref(),
        Some("Quick safety check: Is this a project you created or one you trust?")
    );
    assert_eq!(
        start_question("╭──────╮\n│ Pick a theme │\n│ 1. dark      │\n╰──────╯\n").as_deref(),
        Some("1. dark")
    );
    assert_eq!(start_question("\n  \n──────\n"), None);
    let long = format!("{}?", "x".repeat(500));
    assert_eq!(
        start_question(&long).unwrap().chars().count(),
        START_LINE_MAX
    );
    // What it asks is kept only while the agent has said nothing.
    let mut s = agent_status();
    s.set_attention(Attention::Starting);
    let asks = AgentEvent::AsksAtStart {
        line: "Trust?".into(),
    };
    apply_stream(&mut s, &asks);
    assert_eq!(s.asks_at_start.as_deref(), Some("Trust?"));
    apply_hook(
        &mut s,
        Mode::Pty,
        "SessionStart",
        &json!({"session_id": "c"}),
    );
    assert_eq!(s.asks_at_start, None);
    apply_stream(&mut s, &asks);
    assert_eq!(s.asks_at_start, None);
}

/// An agent is fresh until it works; a SessionStart that begins a conversation (startup,
/// `/clear`) makes it fresh again, one that continues it (a resume, a compaction) does not.
#[test]
fn an_agent_is_fresh_until_it_works_in_its_conversation() {
    let mut s = agent_status();
    let start = |source: &str| json!({"session_id": "c", "source": source});
    apply_hook(&mut s, Mode::Pty, "SessionStart", &start("startup"));
    assert!(s.fresh);
    apply_hook(
        &mut s,
        Mode::Pty,
        "UserPromptSubmit",
        &json!({"prompt": "go"}),
    );
    apply_hook(&mut s, Mode::Pty, "Stop", &json!({}));
    assert_eq!(s.attention, Some(Attention::Idle));
    assert!(!s.fresh);
    for source in ["resume", "compact"] {
        apply_hook(&mut s, Mode::Pty, "SessionStart", &start(source));
        assert!(!s.fresh, "{source}");
    }
    apply_hook(&mut s, Mode::Pty, "SessionStart", &start("clear"));
    assert!(s.fresh);
}

/// A structured agent's questions: two at once are shown in turn; a prompt sent while one
/// is open waits in the agent's input and does not close it (the agent still waits for the
/// answer); each closes by its own id; the turn's end clears what is left.
#[test]
fn structured_questions_queue_and_outlast_a_prompt() {
    let mut s = agent_status();
    let user = AgentEvent::Message {
        role: crate::stream_json::USER.into(),
        text: "go".into(),
    };
    apply_stream(&mut s, &user);
    assert_eq!(s.attention, Some(Attention::Working));
    apply_stream(&mut s, &asks("r1"));
    apply_stream(&mut s, &asks("r2"));
    assert_eq!(s.attention, Some(Attention::NeedsPermission));
    assert_eq!(s.permission.as_ref().unwrap().id.as_deref(), Some("r1"));
    assert_eq!(s.queued.len(), 1);
    apply_stream(&mut s, &user);
    assert_eq!(
        s.attention,
        Some(Attention::NeedsPermission),
        "a prompt does not answer"
    );
    assert_eq!(s.permission.as_ref().unwrap().id.as_deref(), Some("r1"));
    // Answered out of order: the other stays shown.
    apply_stream(
        &mut s,
        &AgentEvent::PermissionCancelled {
            request_id: "r2".into(),
            to_dialog: false,
        },
    );
    assert_eq!(s.permission.as_ref().unwrap().id.as_deref(), Some("r1"));
    assert!(s.queued.is_empty());
    apply_stream(
        &mut s,
        &AgentEvent::PermissionAnswered {
            request_id: "r1".into(),
            behavior: "allow".into(),
            message: None,
        },
    );
    assert_eq!(s.attention, Some(Attention::Working));
    assert!(s.permission.is_none());
    apply_stream(&mut s, &asks("r3"));
    apply_stream(&mut s, &turn_over());
    assert_eq!(s.attention, Some(Attention::Idle));
    assert!(s.permission.is_none() && s.queued.is_empty());
}

/// A stream-json turn that starts while the agent waits (a prompt queued during the last
/// turn: Claude says `result`, then `init` for the next turn at once) makes it work again;
/// an `init` while it works or before it started changes nothing.
#[test]
fn a_queued_prompts_turn_starting_makes_a_structured_agent_work() {
    let init = AgentEvent::Init {
        agent_session_id: "a".into(),
        model: None,
    };
    let mut s = agent_status();
    s.attention = Some(Attention::Starting);
    apply_stream(&mut s, &init);
    assert_eq!(s.attention, Some(Attention::Starting));
    s.attention = Some(Attention::Working);
    apply_stream(&mut s, &init);
    assert_eq!(s.attention, Some(Attention::Working));
    apply_stream(&mut s, &turn_over());
    assert_eq!(s.attention, Some(Attention::Idle));
    apply_stream(&mut s, &init);
    assert_eq!(s.attention, Some(Attention::Working));
    assert_eq!(s.agent_session_id.as_deref(), Some("a"));
}

/// A terminal agent: a Notification that asks names no question to answer from outside (no
/// `permission`), and while a hook call holds a question nothing else moves the state.
#[test]
fn hooks_leave_a_held_question_alone() {
    let mut s = agent_status();
    let note = json!({"message": "Claude needs your permission to use Bash"});
    apply_hook(&mut s, Mode::Pty, "Notification", &note);
    assert_eq!(s.attention, Some(Attention::NeedsPermission));
    assert!(s.permission.is_none());
    let ask = json!({"tool_name": "Bash", "tool_input": {"command": "ls"}});
    apply_hook(&mut s, Mode::Pty, "PermissionRequest", &ask);
    assert!(s.permission.as_ref().is_some_and(|p| p.id.is_none()));
    let mut held = hook_question(&ask);
    held.id = Some("7".into());
    s.permission = None;
    assert!(questions::open(&mut s, held));
    for name in ["PreToolUse", "PostToolUse", "Notification", "Stop"] {
        apply_hook(&mut s, Mode::Pty, name, &note);
        assert_eq!(s.attention, Some(Attention::NeedsPermission), "{name}");
        assert_eq!(
            s.permission.as_ref().unwrap().id.as_deref(),
            Some("7"),
            "{name}"
        );
    }
    // Settled in the agent's own dialog: it waits for its user until a hook says otherwise.
    assert!(questions::close(&mut s, "7", Left::Settled));
    assert_eq!(s.attention, Some(Attention::Idle));
    apply_hook(&mut s, Mode::Pty, "SessionEnd", &json!({"reason": "exit"}));
    assert_eq!(s.attention, Some(Attention::Exited));
}

#[test]
fn claude_gets_settings_and_resume() {
    let dir = tempfile::tempdir().unwrap();
    let argv: Vec<String> = ["claude", "-p", "hi"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let hook = vec!["/opt/my corral/corral".to_string(), "hook".to_string()];
    let out = Profile::Claude
        .prepare(&argv, Mode::Pty, dir.path(), &hook, Some("abc"))
        .unwrap();
    assert_eq!(out[0], "claude");
    assert_eq!(out[1], "--settings");
    assert_eq!(&out[3..5], ["--resume", "abc"]);
    assert_eq!(&out[5..], ["-p", "hi"]);
    let settings: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&out[2]).unwrap()).unwrap();
    let cmd = settings["hooks"]["SessionStart"][0]["hooks"][0]["command"]
        .as_str()
        .unwrap();
    assert_eq!(cmd, "'/opt/my corral/corral' hook");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&out[2]).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "settings are owner-only");
    assert!(Profile::parse(Some("nope")).is_err());
    // Stream-json mode adds the structured protocol's flags, each once.
    let argv: Vec<String> = ["claude", "--verbose"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let out = Profile::Claude
        .prepare(&argv, Mode::StreamJson, dir.path(), &hook, None)
        .unwrap();
    assert_eq!(
        &out[3..],
        [
            "-p",
            "--input-format",
            "stream-json",
            "--output-format",
            "stream-json",
            "--permission-prompt-tool",
            "stdio",
            "--verbose"
        ]
    );
}

/// A terminal agent's journal replayed by a next server (`replay_into`): the questions its hook
/// calls held close as they left — answered (works), settled in its dialog by Esc (waits: the
/// case that stuck a restarted agent at `needs_permission`), gone to its dialog (asks there) —
/// and one of two asked in parallel leaves the other asking.
#[test]
fn a_replayed_journal_closes_the_questions_hook_calls_held() {
    let session = uuid::Uuid::new_v4();
    let event = |seq: u64, kind: EventKind| SessionEvent {
        session,
        seq,
        time: std::time::SystemTime::now(),
        offset: 0,
        kind,
    };
    let hook = |seq, name: &str, payload: serde_json::Value| {
        event(
            seq,
            EventKind::Hook {
                name: name.into(),
                payload,
                ran_at: None,
            },
        )
    };
    let asks = |seq, command: &str| {
        hook(
            seq,
            "PermissionRequest",
            json!({"tool_name": "Bash", "tool_input": {"command": command}}),
        )
    };
    let cancelled = |seq, id: &str, to_dialog| {
        event(
            seq,
            EventKind::Agent(AgentEvent::PermissionCancelled {
                request_id: id.into(),
                to_dialog,
            }),
        )
    };
    let answered = |seq, id: &str| {
        event(
            seq,
            EventKind::Agent(AgentEvent::PermissionAnswered {
                request_id: id.into(),
                behavior: "allow".into(),
                message: None,
            }),
        )
    };
    let replayed = |events: &[SessionEvent]| {
        let mut s = agent_status();
        replay_into(&mut s, Mode::Pty, events);
        (s.attention, s.permission.is_some(), s.queued.len())
    };
    let prompt = hook(1, "UserPromptSubmit", json!({}));
    let esc = [
        prompt.clone(),
        asks(2, "touch x"),
        cancelled(3, "k1", false),
    ];
    assert_eq!(replayed(&esc), (Some(Attention::Idle), false, 0), "Esc");
    let ran_out = [prompt.clone(), asks(2, "touch x"), cancelled(3, "k1", true)];
    assert_eq!(
        replayed(&ran_out),
        (Some(Attention::NeedsPermission), false, 0),
        "in its dialog"
    );
    let allowed = [prompt.clone(), asks(2, "touch x"), answered(3, "k1")];
    assert_eq!(replayed(&allowed), (Some(Attention::Working), false, 0));
    let in_dialog = [
        prompt.clone(),
        asks(2, "touch x"),
        event(
            3,
            EventKind::Agent(AgentEvent::AnsweredInDialog {
                questions: vec!["k1".into()],
            }),
        ),
    ];
    assert_eq!(replayed(&in_dialog), (Some(Attention::Working), false, 0));
    let parallel = [
        prompt.clone(),
        asks(2, "touch x"),
        asks(3, "touch y"),
        cancelled(4, "k1", false),
    ];
    assert_eq!(
        replayed(&parallel),
        (Some(Attention::NeedsPermission), false, 0),
        "the other still asks (in its dialog now)"
    );
    // A server killed while a hook call held the question (nothing journaled its close), the
    // next one answered in the dialog: the later hooks move the state as they did then.
    let recovered = |seq| {
        event(
            seq,
            EventKind::Recovery {
                decision: "reattaching".into(),
            },
        )
    };
    let crashed = [
        prompt.clone(),
        asks(2, "touch x"),
        recovered(3),
        hook(4, "PostToolUse", json!({"tool_name": "Bash"})),
        hook(5, "Stop", json!({})),
        recovered(6),
    ];
    assert_eq!(
        replayed(&crashed),
        (Some(Attention::Idle), false, 0),
        "crashed"
    );
    let both = [
        prompt,
        asks(2, "touch x"),
        asks(3, "touch y"),
        answered(4, "k1"),
        cancelled(5, "k2", false),
    ];
    assert_eq!(replayed(&both), (Some(Attention::Idle), false, 0));
}
