//! Attention: what an agent session needs from its user, as a small state machine driven by the
//! agent's hooks (see `agent::record_hook`). Its own module so the session's shared state can
//! carry it without depending on agent profiles.

use serde::{Deserialize, Serialize};

/// What an agent session needs from its user, driven by the agent's hooks (never by reading its
/// screen). The state machine:
///
/// ```text
/// starting ──SessionStart──▶ idle ──UserPromptSubmit──▶ working ──PermissionRequest──▶ needs_permission
///                             ▲                           │  ▲                              │
///                             └──────────Stop─────────────┘  └──answer / PostToolUse ───────┘
/// any ──(process ends, or SessionEnd other than /clear; the server drops a previous process's)──▶ exited
/// ```
///
/// Tool, subagent and compaction events mean `working`; a Notification that asks for a
/// permission means `needs_permission`, one that says Claude waits for input means `idle`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Attention {
    /// Started; no hook yet.
    Starting,
    /// Doing something on its own.
    Working,
    /// Waiting for a permission answer (see the session's `permission`).
    NeedsPermission,
    /// Waiting for the user's next prompt.
    Idle,
    /// The agent ended.
    Exited,
}

impl Attention {
    /// The state after hook `name` with `payload`, from `self`; None when the event says
    /// nothing about it.
    pub fn after(self, name: &str, payload: &serde_json::Value) -> Option<Attention> {
        let text = |k: &str| payload.get(k).and_then(|v| v.as_str()).unwrap_or("");
        Some(match name {
            "SessionStart" => Attention::Idle,
            "SessionEnd" if text("reason") == "clear" => Attention::Idle,
            // A process that has said nothing yet did not end its session: an end now is the
            // last process's, its hook come late (a restart is quicker than a hook), and would
            // mark the new one `exited` (`wait --for idle` gave up on it). The new process's
            // own end, before it said anything, is its exit.
            "SessionEnd" if self == Attention::Starting => return None,
            "SessionEnd" => Attention::Exited,
            "PermissionRequest" => Attention::NeedsPermission,
            "UserPromptSubmit"
            | "UserPromptExpansion"
            | "PreToolUse"
            | "PostToolUse"
            | "PostToolUseFailure"
            | "PostToolBatch"
            | "PermissionDenied"
            | "SubagentStart"
            | "SubagentStop"
            | "PreCompact"
            | "PostCompact" => Attention::Working,
            "Stop" | "StopFailure" => Attention::Idle,
            "Notification" => {
                let kind = text("notification_type");
                let message = text("message").to_ascii_lowercase();
                if kind.contains("permission") || message.contains("permission") {
                    Attention::NeedsPermission
                } else if kind.contains("idle") || message.contains("waiting for your input") {
                    Attention::Idle
                } else {
                    return None;
                }
            }
            _ => return None,
        })
    }

    /// Whether a human is awaited.
    pub fn waits(self) -> bool {
        matches!(self, Attention::NeedsPermission | Attention::Idle)
    }
}

/// How a question left without an answer from outside.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Left {
    /// Answered through the API: the agent goes on (`working`).
    Answered,
    /// Nobody answered in time: it is in the agent's own dialog now (`needs_permission`, with
    /// nothing to answer from outside).
    ToTerminal,
    /// Settled in the agent's own dialog: the call that held it ended (the agent ends it when
    /// the user answers there), or a later hook said so (the tool ran, or the turn ended). The
    /// agent waits for its user (`idle`) until a hook says otherwise: after a "yes" its
    /// PostToolUse comes at once; after a "no" or Esc nothing comes, and it waits at its prompt.
    Settled,
    /// Answered in the agent's own dialog, seen on its screen (the dialog is gone, and Claude
    /// Code fires no hook for it): the agent works on (`working`) until its screen or a hook
    /// says otherwise; the hook call that held it no longer waits for an answer from outside.
    InDialog,
}

/// The permission an agent waits for: the tool and what it would run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PermissionAsk {
    /// The question's id while something outside can answer it (a hook call holds it, or a
    /// structured agent's control request: then its request id). An answer that names it
    /// answers this question and no other. None: the question is in the agent's own terminal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// The tool (`Bash`, `Write`, ...).
    pub tool: String,
    /// Its input as the agent sent it.
    pub input: serde_json::Value,
    /// The control request to answer (stream-json sessions); hook-asked questions have none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn hooks_drive_the_documented_transitions() {
        let none = json!({});
        let mut a = Attention::Starting;
        let mut step = |name: &str, payload: &serde_json::Value| {
            if let Some(next) = a.after(name, payload) {
                a = next;
            }
            a
        };
        assert_eq!(step("SessionStart", &none), Attention::Idle);
        assert_eq!(step("UserPromptSubmit", &none), Attention::Working);
        assert_eq!(step("PreToolUse", &none), Attention::Working);
        assert_eq!(step("PermissionRequest", &none), Attention::NeedsPermission);
        assert_eq!(step("PostToolUse", &none), Attention::Working);
        // Unknown and informational events change nothing.
        assert_eq!(step("FileChanged", &none), Attention::Working);
        assert_eq!(step("SomethingNew", &none), Attention::Working);
        let asks = json!({"message": "Claude needs your permission to use Bash"});
        assert_eq!(step("Notification", &asks), Attention::NeedsPermission);
        assert_eq!(step("PermissionDenied", &none), Attention::Working);
        assert_eq!(step("Stop", &none), Attention::Idle);
        let idle = json!({"notification_type": "idle_prompt", "message": "Claude is waiting for your input"});
        assert_eq!(step("Notification", &idle), Attention::Idle);
        assert_eq!(
            step("SessionEnd", &json!({"reason": "clear"})),
            Attention::Idle
        );
        assert_eq!(
            step("SessionEnd", &json!({"reason": "logout"})),
            Attention::Exited
        );
        // A new process that has said nothing yet: a late end is the last process's.
        assert_eq!(Attention::Starting.after("SessionEnd", &none), None);
        assert!(Attention::Idle.waits() && Attention::NeedsPermission.waits());
        assert!(!Attention::Working.waits() && !Attention::Exited.waits());
    }
}
