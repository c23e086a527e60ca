//! Session states and the events that report every transition, ordered against the output
//! stream by the output offset they carry.

use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::process::ExitStatus;

/// Where a session is in its lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SessionState {
    /// Its process is being spawned.
    Starting,
    /// Its process runs.
    Running,
    /// A stop was requested: stop signal sent, grace running.
    Stopping,
    /// Its process exited; the restart decision follows at once.
    Exited,
    /// Waiting for its backoff delay before the process starts again.
    Restarting,
    /// Ended and not restarting (stopped, or exited under its policy).
    Stopped,
    /// Ended because it could not be (re)started or its restart intensity was exceeded.
    Failed,
}

impl SessionState {
    /// The state as the API spells it (its serde name).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Starting => "starting",
            Self::Running => "running",
            Self::Stopping => "stopping",
            Self::Exited => "exited",
            Self::Restarting => "restarting",
            Self::Stopped => "stopped",
            Self::Failed => "failed",
        }
    }

    /// Whether no process runs and none will start by itself.
    pub fn is_final(self) -> bool {
        matches!(self, Self::Stopped | Self::Failed)
    }
}

/// What happened.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum EventKind {
    /// The state changed.
    State {
        /// The new state.
        state: SessionState,
        /// Why, when there is something to say.
        reason: Option<String>,
    },
    /// A process was spawned.
    Spawned {
        /// Its pid (= pgid = sid).
        pid: i32,
    },
    /// The process exited; every byte it wrote is before `output_end`.
    Exited {
        /// Exit code or signal.
        status: ExitStatus,
    },
    /// A restart is scheduled.
    Restarting {
        /// The backoff delay, in seconds.
        #[serde(with = "crate::time::duration")]
        delay: Duration,
        /// Restarts so far.
        restarts: u64,
    },
    /// The terminal was resized (by the resize policy: the last viewer who typed): output
    /// from this event's offset on is written at this size.
    Resized {
        /// Rows.
        rows: u16,
        /// Columns.
        cols: u16,
    },
    /// A pipe-mode stdout line that parsed as JSON.
    Json {
        /// The parsed line.
        value: serde_json::Value,
    },
    /// A decision of boot reconciliation after a server restart (what was found, what was done).
    Recovery {
        /// In words, e.g. "process 4242 survived the server crash; terminated".
        decision: String,
    },
    /// What a structured agent (stream-json mode) did, typed; its raw line is in the log.
    Agent(crate::stream_json::AgentEvent),
    /// A message of a terminal agent's conversation through the agentapi endpoints, settled
    /// as a user message was posted: the agent's (its answer as its screen showed it), then
    /// the user's. Journaled so the conversation outlives the server (an upgrade, a crash).
    Conversation {
        /// `agent` or `user`.
        role: String,
        /// The text (at most [`EventKind::CONVERSATION_TEXT_MAX`] bytes; longer is cut).
        text: String,
    },
    /// An event posted by the agent (hook), in one canonical model.
    Hook {
        /// Hook event name (SessionStart, Notification, Stop, ...).
        name: String,
        /// The hook's JSON payload.
        payload: serde_json::Value,
        /// When the hook ran, as `corral hook` says (the event's `time` is when the server
        /// recorded it: later for a hook that retried, or that was spooled while no server was
        /// there and replayed by the next one). Absent when the poster did not say.
        #[serde(
            default,
            skip_serializing_if = "Option::is_none",
            with = "crate::time::option"
        )]
        ran_at: Option<std::time::SystemTime>,
    },
}

impl EventKind {
    /// The most text a [`EventKind::Conversation`] event keeps (the request body limit): the
    /// text is cut at a character boundary past it, and says so.
    pub const CONVERSATION_TEXT_MAX: usize = 256 * 1024;

    /// A [`EventKind::Conversation`] event, its text cut to [`Self::CONVERSATION_TEXT_MAX`].
    pub fn conversation(role: &str, text: &str) -> EventKind {
        let text = match text.len() > Self::CONVERSATION_TEXT_MAX {
            false => text.to_string(),
            true => {
                let mut end = Self::CONVERSATION_TEXT_MAX;
                while !text.is_char_boundary(end) {
                    end -= 1;
                }
                format!("{}\n[… cut: {} bytes in all]", &text[..end], text.len())
            }
        };
        EventKind::Conversation {
            role: role.to_string(),
            text,
        }
    }

    /// The kind's name as serialized (`"state"`, `"spawned"`, ...).
    pub fn name(&self) -> &'static str {
        match self {
            EventKind::State { .. } => "state",
            EventKind::Spawned { .. } => "spawned",
            EventKind::Exited { .. } => "exited",
            EventKind::Restarting { .. } => "restarting",
            EventKind::Resized { .. } => "resized",
            EventKind::Json { .. } => "json",
            EventKind::Recovery { .. } => "recovery",
            EventKind::Agent(_) => "agent",
            EventKind::Conversation { .. } => "conversation",
            EventKind::Hook { .. } => "hook",
        }
    }
}

/// One event of one session.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionEvent {
    /// The session.
    pub session: Uuid,
    /// Per-session sequence number, from 1, without gaps.
    pub seq: u64,
    /// Wall-clock time.
    #[serde(with = "crate::time")]
    pub time: SystemTime,
    /// Output offset when the event happened: every byte before it precedes the event.
    pub offset: u64,
    /// What happened.
    pub kind: EventKind,
}

#[cfg(test)]
mod tests {

    /// A state's name is its serde name, for every state (the registry's column, the tree and
    /// the CLI read it).
    #[test]
    fn a_state_s_name_is_its_serde_name() {
        use SessionState::*;
        for state in [
            Starting, Running, Stopping, Exited, Restarting, Stopped, Failed,
        ] {
            assert_eq!(serde_json::to_value(state).unwrap(), state.as_str());
        }
    }

    use super::*;

    /// A conversation text past its bound is cut at a character boundary and says how long it
    /// was; one at the bound is kept whole.
    #[test]
    fn a_conversation_text_past_its_bound_is_cut_and_says_so() {
        let max = EventKind::CONVERSATION_TEXT_MAX;
        let text = |k: &EventKind| match k {
            EventKind::Conversation { text, .. } => text.clone(),
            _ => unreachable!(),
        };
        let whole = "a".repeat(max);
        assert_eq!(text(&EventKind::conversation("user", &whole)), whole);
        // "é" is two bytes: one starting at max - 1 would be split by a cut at max.
        let long = format!("{}é{}", "a".repeat(max - 1), "b".repeat(10));
        let cut = text(&EventKind::conversation("agent", &long));
        assert_eq!(
            cut,
            format!(
                "{}\n[… cut: {} bytes in all]",
                "a".repeat(max - 1),
                long.len()
            )
        );
    }

    #[test]
    fn agent_events_serialize_flat_and_back() {
        let kind = EventKind::Agent(crate::stream_json::AgentEvent::PermissionRequest {
            request_id: "r1".into(),
            tool: "Bash".into(),
            input: serde_json::json!({"command": "ls"}),
        });
        let text = serde_json::to_value(&kind).unwrap();
        assert_eq!(text["kind"], "agent");
        assert_eq!(text["type"], "permission_request");
        assert_eq!(text["input"]["command"], "ls");
        assert_eq!(serde_json::from_value::<EventKind>(text).unwrap(), kind);
    }
}
