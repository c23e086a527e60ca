//! Stream-json: Claude Code's structured mode (`claude -p --input-format stream-json
//! --output-format stream-json --verbose --permission-prompt-tool stdio`, the protocol its Agent
//! SDK speaks), as typed agent events. One JSON object per line each way:
//!
//! - out (its stdout): `system` (`init` names the agent session), `assistant` / `user` messages
//!   whose content blocks are text, `tool_use` and `tool_result`, `result` when a turn ends, and
//!   `control_request`s: `can_use_tool` asks whether a tool may run (it waits for the answer),
//!   `control_cancel_request` withdraws one (answered elsewhere, e.g. by a hook).
//! - in (its stdin): `user` messages and `control_response`s (`allow` with the tool's input, or
//!   `deny` with a message), matched to the request by its `request_id`.
//!
//! [`events`] turns an output line into [`AgentEvent`]s (most lines say nothing typed: they stay
//! in the log only, where every raw line is kept); [`user_message`] and [`permission_response`]
//! build input lines. What the events mean for the attention state is `agent::record_stream`'s.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// Who wrote a message, as agentapi names it.
pub const USER: &str = "user";
/// The agent's role, as agentapi names it.
pub const AGENT: &str = "agent";

/// What a structured agent session did, typed (the raw line stays in the log).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum AgentEvent {
    /// The agent began (or resumed) its own session (`system`/`init`).
    Init {
        /// The agent's session id.
        agent_session_id: String,
        /// Its model, when said.
        #[serde(default)]
        model: Option<String>,
    },
    /// Text of a message: the agent's, or a user message sent through corral.
    Message {
        /// `user` or `agent`.
        role: String,
        /// The text.
        text: String,
    },
    /// The agent calls a tool.
    ToolCall {
        /// The call's id (its result names it).
        id: String,
        /// The tool (`Bash`, `Write`, ...).
        name: String,
        /// Its input.
        input: Value,
    },
    /// A tool's result.
    ToolResult {
        /// The call it answers.
        tool_use_id: String,
        /// What the tool returned (text, or content blocks).
        content: Value,
        /// Whether it failed (or was denied).
        is_error: bool,
    },
    /// The agent asks whether a tool may run, and waits (`control_request`/`can_use_tool`).
    PermissionRequest {
        /// Names the answer.
        request_id: String,
        /// The tool.
        tool: String,
        /// What it would run.
        input: Value,
    },
    /// The agent withdrew a question (`control_cancel_request`): settled elsewhere. For a
    /// terminal agent: the hook call that held its question ended without an answer through
    /// corral.
    PermissionCancelled {
        /// The question.
        request_id: String,
        /// A terminal agent's question whose wait ran out (or whose server left): it waits in
        /// the agent's own dialog now. Otherwise it was settled there (or by a later hook).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        to_dialog: bool,
    },
    /// A question was answered through corral.
    PermissionAnswered {
        /// The question.
        request_id: String,
        /// `allow` or `deny`.
        behavior: String,
        /// Said to the agent with a deny.
        #[serde(default)]
        message: Option<String>,
    },
    /// A question denied through corral was answered in the agent's own dialog first, which
    /// decided: the tool ran (its PostToolUse came after the deny). The journal would otherwise
    /// say "denied" of a tool that ran.
    PermissionOverridden {
        /// The question.
        request_id: String,
    },
    /// A prompt was typed into a terminal agent that waited (a paste and its Enter through
    /// corral): it works on it from now on (its UserPromptSubmit hook says so a moment later; a
    /// script's `wait --for idle` right after the prompt saw the turn before still idle).
    Prompted,
    /// No event followed a [`AgentEvent::Prompted`] within `agent::PROMPT_SETTLE`: the prompt
    /// started no turn (a slash command that prints and returns), the agent waits again.
    NoTurn,
    /// An interrupt key (Esc, Ctrl-C) typed into a working terminal agent ended its turn: its
    /// screen stopped saying it works (Claude Code fires no hook when a turn is interrupted, so
    /// it stayed `working` until the next prompt; see `agent::LOOKS`).
    Interrupted,
    /// A terminal agent's question was answered in its own dialog: a key was typed while it
    /// asked, and its screen then no longer showed the dialog (Claude Code fires no hook for
    /// that, and keeps the question's hook call open until the allowed tool has run). It works
    /// on; `questions` are the ids of those hook calls held, now closed.
    AnsweredInDialog {
        /// The questions closed.
        #[serde(default)]
        questions: Vec<String>,
    },
    /// A terminal agent that has said nothing yet (no hook) sat still on a screen that asks
    /// something before it starts — Claude Code's folder trust, a first-run question: `line`
    /// is what it asks (see `agent::start_look`). Cleared by its first hook.
    AsksAtStart {
        /// The screen's question (its first line with a `?`, up to it; else its last line).
        line: String,
    },
    /// A control request corral does not answer (it is in the log; the agent may wait for it).
    ControlRequest {
        /// Its id.
        request_id: String,
        /// Its subtype.
        subtype: String,
    },
    /// A turn ended (`result`).
    Result {
        /// `success`, `error_max_turns`, ...
        subtype: String,
        /// Whether the turn failed.
        is_error: bool,
        /// The final text, when there is one.
        #[serde(default)]
        text: Option<String>,
    },
}

/// The typed events one output line holds (none for most lines).
pub fn events(line: &Value) -> Vec<AgentEvent> {
    let text = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
    let mut out = Vec::new();
    match line.get("type").and_then(Value::as_str) {
        Some("system") if text(line, "subtype").as_deref() == Some("init") => {
            if let Some(id) = text(line, "session_id") {
                out.push(AgentEvent::Init {
                    agent_session_id: id,
                    model: text(line, "model"),
                });
            }
        }
        Some(kind @ ("assistant" | "user")) => {
            let role = if kind == "assistant" { AGENT } else { USER };
            match line.pointer("/message/content") {
                Some(Value::String(s)) => out.push(AgentEvent::Message {
                    role: role.into(),
                    text: s.clone(),
                }),
                Some(Value::Array(blocks)) => {
                    for b in blocks {
                        match b.get("type").and_then(Value::as_str) {
                            Some("text") => out.push(AgentEvent::Message {
                                role: role.into(),
                                text: text(b, "text").unwrap_or_default(),
                            }),
                            Some("tool_use") => out.push(AgentEvent::ToolCall {
                                id: text(b, "id").unwrap_or_default(),
                                name: text(b, "name").unwrap_or_default(),
                                input: b.get("input").cloned().unwrap_or_default(),
                            }),
                            Some("tool_result") => out.push(AgentEvent::ToolResult {
                                tool_use_id: text(b, "tool_use_id").unwrap_or_default(),
                                content: b.get("content").cloned().unwrap_or_default(),
                                is_error: b
                                    .get("is_error")
                                    .and_then(Value::as_bool)
                                    .unwrap_or(false),
                            }),
                            _ => {}
                        }
                    }
                }
                _ => {}
            }
        }
        Some("control_request") => {
            let request_id = text(line, "request_id").unwrap_or_default();
            let request = line.get("request").cloned().unwrap_or_default();
            match text(&request, "subtype").as_deref() {
                Some("can_use_tool") => out.push(AgentEvent::PermissionRequest {
                    request_id,
                    tool: text(&request, "tool_name").unwrap_or_default(),
                    input: request.get("input").cloned().unwrap_or_default(),
                }),
                other => out.push(AgentEvent::ControlRequest {
                    request_id,
                    subtype: other.unwrap_or("").to_string(),
                }),
            }
        }
        Some("control_cancel_request") => {
            if let Some(request_id) = text(line, "request_id") {
                out.push(AgentEvent::PermissionCancelled {
                    request_id,
                    to_dialog: false,
                });
            }
        }
        Some("result") => out.push(AgentEvent::Result {
            subtype: text(line, "subtype").unwrap_or_default(),
            is_error: line
                .get("is_error")
                .and_then(Value::as_bool)
                .unwrap_or(false),
            text: text(line, "result"),
        }),
        _ => {}
    }
    out
}

/// The input line that gives the agent a user message.
pub fn user_message(text: &str) -> Vec<u8> {
    line(json!({
        "type": "user",
        "message": { "role": "user", "content": text },
    }))
}

/// The input line that answers permission request `request_id`: allow runs the tool with the
/// `input` it asked for; deny tells the agent `message`.
pub fn permission_response(
    request_id: &str,
    allow: bool,
    input: &Value,
    message: Option<&str>,
) -> Vec<u8> {
    let decision = if allow {
        json!({ "behavior": "allow", "updatedInput": input })
    } else {
        json!({
            "behavior": "deny",
            "message": message.unwrap_or("Denied by the user through corral."),
        })
    };
    line(json!({
        "type": "control_response",
        "response": { "subtype": "success", "request_id": request_id, "response": decision },
    }))
}

/// `value` as one NDJSON line.
fn line(value: Value) -> Vec<u8> {
    let mut out = value.to_string().into_bytes();
    out.push(b'\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claude_lines_become_typed_events() {
        let init = json!({"type":"system","subtype":"init","session_id":"s1","model":"m"});
        assert_eq!(
            events(&init),
            vec![AgentEvent::Init {
                agent_session_id: "s1".into(),
                model: Some("m".into())
            }]
        );
        let hooks = json!({"type":"system","subtype":"hook_started"});
        assert!(events(&hooks).is_empty());
        let assistant = json!({"type":"assistant","message":{"role":"assistant","content":[
            {"type":"text","text":"hi"},
            {"type":"tool_use","id":"t1","name":"Bash","input":{"command":"ls"}}]}});
        assert_eq!(
            events(&assistant),
            vec![
                AgentEvent::Message {
                    role: AGENT.into(),
                    text: "hi".into()
                },
                AgentEvent::ToolCall {
                    id: "t1".into(),
                    name: "Bash".into(),
                    input: json!({"command":"ls"})
                }
            ]
        );
        let result = json!({"type":"user","message":{"role":"user","content":[
            {"type":"tool_result","tool_use_id":"t1","content":"no","is_error":true}]}});
        assert_eq!(
            events(&result),
            vec![AgentEvent::ToolResult {
                tool_use_id: "t1".into(),
                content: json!("no"),
                is_error: true
            }]
        );
        let ask = json!({"type":"control_request","request_id":"r1","request":{
            "subtype":"can_use_tool","tool_name":"Bash","input":{"command":"ls"}}});
        assert_eq!(
            events(&ask),
            vec![AgentEvent::PermissionRequest {
                request_id: "r1".into(),
                tool: "Bash".into(),
                input: json!({"command":"ls"})
            }]
        );
        let other =
            json!({"type":"control_request","request_id":"r2","request":{"subtype":"mcp_message"}});
        assert!(
            matches!(&events(&other)[0], AgentEvent::ControlRequest { subtype, .. } if subtype == "mcp_message")
        );
        let cancel = json!({"type":"control_cancel_request","request_id":"r1"});
        assert_eq!(
            events(&cancel),
            vec![AgentEvent::PermissionCancelled {
                request_id: "r1".into(),
                to_dialog: false,
            }]
        );
        let done = json!({"type":"result","subtype":"success","is_error":false,"result":"ok"});
        assert_eq!(
            events(&done),
            vec![AgentEvent::Result {
                subtype: "success".into(),
                is_error: false,
                text: Some("ok".into())
            }]
        );
    }

    #[test]
    fn input_lines_are_what_the_sdk_writes() {
        let m: Value = serde_json::from_slice(&user_message("go")).unwrap();
        assert_eq!(m["type"], "user");
        assert_eq!(m["message"]["content"], "go");
        let allow: Value =
            serde_json::from_slice(&permission_response("r1", true, &json!({"a":1}), None))
                .unwrap();
        assert_eq!(allow["response"]["request_id"], "r1");
        assert_eq!(allow["response"]["response"]["behavior"], "allow");
        assert_eq!(allow["response"]["response"]["updatedInput"]["a"], 1);
        let deny = permission_response("r1", false, &Value::Null, Some("no"));
        assert!(deny.ends_with(b"\n"));
        let deny: Value = serde_json::from_slice(&deny).unwrap();
        assert_eq!(deny["response"]["response"]["behavior"], "deny");
        assert_eq!(deny["response"]["response"]["message"], "no");
    }
}
