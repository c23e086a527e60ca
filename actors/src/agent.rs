//! Agent profiles: what corral adds to a session when it knows which agent runs in it.
//!
//! `claude` (Claude Code): a per-session `--settings <file>` whose hooks run `corral hook` by the
//! absolute path of the running corral binary, so every hook event reaches corral with the
//! session's own token (the user's global settings are never edited); and a resume template:
//! a restart after a crash runs `claude --resume <agent session id>` with the id captured from
//! the last SessionStart hook.

use std::path::{Path, PathBuf};

use serde_json::json;

pub use crate::attention::{Attention, PermissionAsk};

use crate::event::{EventKind, SessionEvent};
use crate::session::shared::SessionShared;

/// The hook events the claude profile subscribes to: every event the installed Claude Code
/// (2.1) documents, but `WorktreeCreate`/`WorktreeRemove`, whose hooks *replace* Claude's own
/// worktree handling. Events not listed here that a later version sends are journaled as they
/// come; none of them changes the attention state unless named in [`Attention::after`].
pub const CLAUDE_HOOK_EVENTS: &[&str] = &[
    "SessionStart",
    "SessionEnd",
    "Setup",
    "UserPromptSubmit",
    "UserPromptExpansion",
    "PreToolUse",
    "PermissionRequest",
    "PermissionDenied",
    "PostToolUse",
    "PostToolUseFailure",
    "PostToolBatch",
    "Notification",
    "Stop",
    "StopFailure",
    "SubagentStart",
    "SubagentStop",
    "PreCompact",
    "PostCompact",
    "TeammateIdle",
    "TaskCreated",
    "TaskCompleted",
    "Elicitation",
    "ElicitationResult",
    "ConfigChange",
    "InstructionsLoaded",
    "CwdChanged",
    "FileChanged",
    "MessageDisplay",
];

/// How long a PermissionRequest hook waits for an answer from the API by default before it
/// returns no decision (Claude then shows its own prompt in the terminal); the server's
/// `agents.permission_wait_secs` sets it, up to [`PERMISSION_WAIT_MAX`].
pub const PERMISSION_WAIT: std::time::Duration = std::time::Duration::from_secs(120);

/// The longest permission wait a server may be configured with: the hook command and Claude's
/// hook timeout are set to outlast it.
pub const PERMISSION_WAIT_MAX: std::time::Duration = std::time::Duration::from_secs(600);

/// Records an agent hook event of `session` (one canonical model) and applies what it means:
/// SessionStart rebinds the agent session id (it changes on clear/compact/resume); every event
/// named in [`Attention::after`] moves the attention state; a PermissionRequest records the
/// tool and input asked for. The session's own state machine knows nothing of agents: this is
/// the only place hook names mean something.
pub fn record_hook(
    session: &SessionShared,
    name: &str,
    payload: serde_json::Value,
) -> SessionEvent {
    {
        let mut s = session.status.write();
        if name == "SessionStart"
            && let Some(id) = payload.get("session_id").and_then(|v| v.as_str())
        {
            s.agent_session_id = Some(id.to_string());
        }
        let current = s.attention.unwrap_or(Attention::Starting);
        if let Some(next) = current.after(name, &payload) {
            s.attention = Some(next);
            s.permission = (next == Attention::NeedsPermission).then(|| PermissionAsk {
                tool: payload
                    .get("tool_name")
                    .and_then(|v| v.as_str())
                    .unwrap_or("")
                    .to_string(),
                input: payload.get("tool_input").cloned().unwrap_or_default(),
            });
            if next == Attention::NeedsPermission
                && name == "Notification"
                && let Some(ask) = s.permission.as_mut()
            {
                // A Notification names no tool: keep its message as what is asked.
                ask.tool = payload
                    .get("message")
                    .and_then(|v| v.as_str())
                    .unwrap_or("")
                    .to_string();
            }
        }
    }
    session.emit(EventKind::Hook {
        name: name.to_string(),
        payload,
    })
}

/// Sets the attention state from outside a hook (a permission answered through the API).
pub fn set_attention(session: &SessionShared, attention: Attention) {
    let mut s = session.status.write();
    s.attention = Some(attention);
    if attention != Attention::NeedsPermission {
        s.permission = None;
    }
}

/// A known agent profile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    /// Claude Code.
    Claude,
}

impl Profile {
    /// The profile named in a spec, if known; an unknown name is an error naming it.
    pub fn parse(name: Option<&str>) -> Result<Option<Profile>, String> {
        match name {
            None => Ok(None),
            Some("claude") => Ok(Some(Profile::Claude)),
            Some(other) => Err(format!("unknown agent profile '{other}' (known: claude)")),
        }
    }

    /// Writes the profile's files into the session's private dir and returns the argv to run:
    /// `argv` with `--settings <file>` after the program, and on a restart with a known agent
    /// session id, `--resume <id>` too.
    pub fn prepare(
        self,
        argv: &[String],
        private_dir: &Path,
        hook_command: &[String],
        resume: Option<&str>,
    ) -> std::io::Result<Vec<String>> {
        match self {
            Profile::Claude => {
                let settings = write_claude_settings(private_dir, hook_command)?;
                let mut out = Vec::with_capacity(argv.len() + 4);
                out.push(argv[0].clone());
                out.push("--settings".into());
                out.push(settings.display().to_string());
                if let Some(id) = resume
                    && !argv.iter().any(|a| a == "--resume" || a == "--continue")
                {
                    out.push("--resume".into());
                    out.push(id.to_string());
                }
                out.extend_from_slice(&argv[1..]);
                Ok(out)
            }
        }
    }
}

/// Writes `claude-settings.json` with a command hook per event; returns its path.
fn write_claude_settings(dir: &Path, hook_command: &[String]) -> std::io::Result<PathBuf> {
    let command = hook_command
        .iter()
        .map(|a| shell_quote(a))
        .collect::<Vec<_>>()
        .join(" ");
    let mut hooks = serde_json::Map::new();
    for event in CLAUDE_HOOK_EVENTS {
        // A PermissionRequest hook waits for an answer from the API (bounded); the others
        // return at once.
        let timeout = if *event == "PermissionRequest" {
            PERMISSION_WAIT_MAX.as_secs() + 10
        } else {
            5
        };
        let entry = json!([{ "matcher": "*", "hooks": [{ "type": "command", "command": command, "timeout": timeout }] }]);
        hooks.insert((*event).to_string(), entry);
    }
    let path = dir.join("claude-settings.json");
    let text =
        serde_json::to_vec_pretty(&json!({ "hooks": hooks })).map_err(std::io::Error::other)?;
    std::fs::write(&path, text)?;
    Ok(path)
}

/// Quotes one argument for the shell Claude Code runs hook commands with. The only input is the
/// path of corral's own binary (never user input); quoting keeps spaces in it safe.
fn shell_quote(s: &str) -> String {
    if s.chars()
        .all(|c| c.is_ascii_alphanumeric() || "/._-".contains(c))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claude_gets_settings_and_resume() {
        let dir = tempfile::tempdir().unwrap();
        let argv: Vec<String> = ["claude", "-p", "hi"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let hook = vec!["/opt/my corral/corral".to_string(), "hook".to_string()];
        let out = Profile::Claude
            .prepare(&argv, dir.path(), &hook, Some("abc"))
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
        assert!(Profile::parse(Some("nope")).is_err());
    }
}
