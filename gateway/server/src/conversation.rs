//! Conversation: what the agentapi endpoints (`crate::agentapi`) show as a session's messages.
//! For a terminal session, the user messages posted through them, bounded per session; for a
//! structured (stream-json) session, its typed `message` events, read from the journal (so they
//! survive server restarts) and kept per session, each read going on from the last event seen.
//! Its own module so the shared server state can hold it without depending on the routes that
//! use it.

use std::collections::HashMap;
use std::time::SystemTime;

use corral_actors::EventKind;
use corral_actors::persist::Persist;
use corral_actors::stream_json::{AGENT, AgentEvent};

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Messages kept per session (the oldest go first).
pub const MAX_MESSAGES: usize = 1000;
/// Journal events read per request while catching up with a structured session.
const PAGE: usize = 1000;

/// A message of the conversation.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Message {
    /// Its position in the conversation (from 0).
    pub id: u64,
    /// Its text (a terminal screen for the agent's).
    pub content: String,
    /// `user` or `agent`.
    pub role: String,
    /// When (RFC 3339).
    pub time: String,
}

/// The user messages posted to each session, by session.
#[derive(Debug, Default)]
pub struct Conversations {
    /// session → its user messages (id, content, time).
    pub(crate) users: Mutex<HashMap<Uuid, Vec<Message>>>,
    /// structured session → (last journal seq read, its messages).
    structured: Mutex<HashMap<Uuid, (u64, Vec<Message>)>>,
}

impl Conversations {
    /// A structured session's conversation: user and agent messages in order, the agent's
    /// consecutive texts (one turn) joined into one message. Reads the journal events it has
    /// not seen yet; a read error leaves what is known (and is logged).
    pub async fn structured(&self, persist: &Persist, session: Uuid) -> Vec<Message> {
        loop {
            let after = self
                .structured
                .lock()
                .get(&session)
                .map_or(0, |(seq, _)| *seq);
            let events = match persist.events(session, after, PAGE).await {
                Ok(events) => events,
                Err(e) => {
                    tracing::warn!(%session, error = %e, "conversation: journal read failed");
                    break;
                }
            };
            let read = events.len();
            {
                let mut all = self.structured.lock();
                let (seq, messages) = all.entry(session).or_default();
                // Another reader went on meanwhile: its view is as new as ours.
                if *seq == after {
                    for event in events {
                        *seq = event.seq;
                        if let EventKind::Agent(AgentEvent::Message { role, text }) = event.kind {
                            push(messages, role, text, event.time);
                        }
                    }
                }
            }
            if read < PAGE {
                break;
            }
        }
        self.structured
            .lock()
            .get(&session)
            .map(|(_, m)| m.clone())
            .unwrap_or_default()
    }
}

/// Adds a message (an agent text right after an agent message joins it), keeping at most
/// [`MAX_MESSAGES`].
fn push(messages: &mut Vec<Message>, role: String, text: String, time: SystemTime) {
    if role == AGENT
        && let Some(last) = messages.last_mut()
        && last.role == AGENT
    {
        last.content.push_str("\n\n");
        last.content.push_str(&text);
        last.time = corral_actors::time::format(time);
        return;
    }
    if messages.len() >= MAX_MESSAGES {
        messages.remove(0);
    }
    let id = messages.last().map_or(0, |m| m.id + 1);
    messages.push(Message {
        id,
        content: text,
        role,
        time: corral_actors::time::format(time),
    });
}
