//! Permission: answering an agent's permission prompt from anywhere. Claude Code's
//! PermissionRequest hook may return a decision; corral's hook call therefore waits (bounded by
//! `agent::PERMISSION_WAIT`) for an answer posted to `POST /v1/sessions/{id}/permission` (or
//! `corral answer`), and returns it as the hook's output — no keystrokes are typed into the
//! terminal. Without an answer in time the hook returns no decision and Claude shows its own
//! prompt. One question per session is open at a time; a newer one replaces it (the older hook
//! call then returns no decision). A structured (stream-json) session's question is not held
//! here: it is the agent's own control request, answered through the same endpoint by
//! `SessionHandle::answer` (a `control_response` on its stdin).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;
use uuid::Uuid;

/// allow or deny.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Behavior {
    /// Run the tool.
    Allow,
    /// Do not run it.
    Deny,
}

/// `POST /v1/sessions/{key}/permission` body.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Answer {
    /// The decision.
    pub behavior: Behavior,
    /// Said to the agent with a deny (why).
    #[serde(default)]
    pub message: Option<String>,
}

impl Answer {
    /// The hook output Claude Code reads for this answer.
    pub fn hook_output(&self) -> serde_json::Value {
        let mut decision = serde_json::json!({ "behavior": self.behavior });
        if let Some(m) = &self.message {
            decision["message"] = serde_json::Value::String(m.clone());
        }
        serde_json::json!({
            "hookSpecificOutput": {
                "hookEventName": "PermissionRequest",
                "decision": decision,
            }
        })
    }
}

/// The open questions: one per session, each with a ticket so that a finished wait removes only
/// its own entry.
#[derive(Debug, Default)]
pub struct Waiting {
    /// Session → (ticket, where the answer goes).
    open: Mutex<HashMap<Uuid, (u64, oneshot::Sender<Answer>)>>,
    /// Last ticket handed out.
    tickets: AtomicU64,
}

/// A hook call waiting for its answer; leaving (answered, timed out, or the hook's connection
/// dropped) closes the question.
pub struct Question<'a> {
    waiting: &'a Waiting,
    session: Uuid,
    ticket: u64,
    /// The answer, when one comes.
    pub answer: oneshot::Receiver<Answer>,
}

impl Waiting {
    /// Opens the question of `session` (replacing an older one).
    pub fn ask(&self, session: Uuid) -> Question<'_> {
        let ticket = self.tickets.fetch_add(1, Ordering::Relaxed) + 1;
        let (tx, rx) = oneshot::channel();
        if self.open.lock().insert(session, (ticket, tx)).is_some() {
            tracing::debug!(%session, "a newer permission request replaces an unanswered one");
        }
        Question {
            waiting: self,
            session,
            ticket,
            answer: rx,
        }
    }

    /// Answers the open question of `session`; false if there is none.
    pub fn answer(&self, session: Uuid, answer: Answer) -> bool {
        match self.open.lock().remove(&session) {
            Some((_, tx)) => tx.send(answer).is_ok(),
            None => false,
        }
    }

    /// Closes the open question of `session`, if any: its hook call returns no decision.
    pub fn close(&self, session: Uuid) {
        if self.open.lock().remove(&session).is_some() {
            tracing::debug!(%session, "open permission question closed: settled elsewhere");
        }
    }

    /// Whether `session` has an open question.
    pub fn is_open(&self, session: Uuid) -> bool {
        self.open.lock().contains_key(&session)
    }
}

impl Drop for Question<'_> {
    fn drop(&mut self) {
        let mut open = self.waiting.open.lock();
        if open
            .get(&self.session)
            .is_some_and(|(t, _)| *t == self.ticket)
        {
            open.remove(&self.session);
        }
    }
}
