//! Conversation: the user messages posted to each session through the agentapi endpoints
//! (`crate::agentapi`), bounded per session. Its own module so the shared server state can hold
//! it without depending on the routes that use it.

use std::collections::HashMap;

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Messages kept per session (the oldest go first).
pub const MAX_MESSAGES: usize = 1000;

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
}
