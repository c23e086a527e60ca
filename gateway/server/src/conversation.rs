//! Conversation: what the agentapi endpoints (`crate::agentapi`) show as a session's messages.
//! For a terminal session, the user messages posted through them, each after the agent's
//! message as it was then, and last the agent's message now (its turn since the last user
//! message, `crate::turn`, or its screen before any), bounded per session; for a
//! structured (stream-json) session, its typed `message` events, read from the journal (so they
//! survive server restarts) and kept per session, each read going on from the last event seen.
//! Its own module so the shared server state can hold it without depending on the routes that
//! use it.

use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};

use corral_actors::persist::Persist;
use corral_actors::stream_json::{AGENT, AgentEvent};
use corral_actors::{EventKind, SessionEvent, SessionHandle};

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Messages kept per session (the oldest go first).
pub const MAX_MESSAGES: usize = 1000;
/// Longest agent message that a next text of the same turn joins (one text is at most a
/// line, 1 MiB): past it, the turn goes on in a new message, so a long turn is not one string
/// that grows without end.
pub const MESSAGE_MAX: usize = 1 << 20;
/// Bytes of messages kept per session (the oldest go first), with [`MAX_MESSAGES`]: each
/// read of a conversation copies it.
pub const CONVERSATION_MAX: usize = 8 << 20;
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

/// The conversations of the sessions, by session.
#[derive(Debug, Default)]
pub struct Conversations {
    /// terminal session → its settled messages: each user message posted, and before it the
    /// agent's message as its screen showed it then (the agent's answer to the turn before).
    pub(crate) terminal: Mutex<HashMap<Uuid, Vec<Message>>>,
    /// structured session → (last journal seq read, its messages).
    structured: Mutex<HashMap<Uuid, (u64, Vec<Message>)>>,
    /// session → when a user message was last sent to it, and its last event's seq then.
    prompted: Mutex<HashMap<Uuid, (std::time::Instant, u64)>>,
    /// Sessions a user message is being sent to ([`Claim`]).
    sending: Mutex<std::collections::HashSet<Uuid>>,
    /// session without hooks (on pipes, or a terminal's) → the output offset its last user
    /// message was sent at (a pipe's agent message is its output since; output after it says
    /// the message was taken).
    marks: Mutex<HashMap<Uuid, u64>>,
    /// session → how many user messages were let through to it ([`Claim`]s taken): each was
    /// taken while the agent was `stable`, so an event stream that sees this grow while it
    /// last said `running` missed a stable moment.
    claims: Mutex<HashMap<Uuid, u64>>,
    /// terminal session → its turn since its last user message (the agent's message).
    turns: Mutex<HashMap<Uuid, std::sync::Arc<Mutex<crate::turn::Turn>>>>,
    /// session taken over from a previous server → its last user message as the journal has
    /// it: the output offset it was posted at and its text. The turn (or a pipe session's
    /// mark) it began went with that server; the agent's message goes on from there, not from
    /// its screen now (an answer cut to its last screenful, earlier turns' output in it).
    resumes: Mutex<HashMap<Uuid, (u64, String)>>,
    /// Bumped when a user message was sent to any session: wakes the event streams, whose
    /// status changes to `running` before any hook or output says so.
    sent: tokio::sync::watch::Sender<u64>,
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
            let Some(events) = page(persist, session, after).await else {
                break;
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

    /// A terminal session's conversation: its settled messages, then the agent's message now
    /// (`screen`: its turn's text or its screen, as of `changed`), whose id is the next one — so ids never change role and an
    /// earlier answer stays where it was.
    pub fn terminal(&self, session: Uuid, screen: String, changed: SystemTime) -> Vec<Message> {
        let mut out = self
            .terminal
            .lock()
            .get(&session)
            .cloned()
            .unwrap_or_default();
        let id = out.last().map_or(0, |m| m.id + 1);
        // Never before the message it answers (a screen unchanged since a restart says when
        // its process started). Times of one format compare as text.
        let time = corral_actors::time::format(changed);
        let time = match out.last() {
            Some(m) if m.time > time => m.time.clone(),
            _ => time,
        };
        out.push(Message {
            id,
            content: screen,
            role: AGENT.into(),
            time,
        });
        out
    }

    /// A user message posted to a terminal session whose screen is `screen`: the agent's
    /// message so far is settled as that screen (timed as it settles), then the user's follows. Both are
    /// journaled (`conversation` events), so the next server has them ([`Self::seed`]); call
    /// `seed` first.
    pub fn posted(&self, h: &SessionHandle, screen: String, content: String) {
        // Each message's time is its event's as the journal keeps it (to the millisecond),
        // here and when the next server reads it back.
        let journaled = |t: SystemTime| {
            let ms = t.duration_since(UNIX_EPOCH).unwrap_or_default().as_millis();
            UNIX_EPOCH + std::time::Duration::from_millis(ms as u64)
        };
        let settled = journaled(
            h.shared()
                .emit(EventKind::conversation(AGENT, &screen))
                .time,
        );
        let sent = journaled(
            h.shared()
                .emit(EventKind::conversation("user", &content))
                .time,
        );
        let mut all = self.terminal.lock();
        let list = all.entry(h.id()).or_default();
        push(list, AGENT.into(), screen, settled);
        push(list, "user".into(), content, sent);
    }

    /// Loads a terminal session's settled messages from its journal, once per server: a session
    /// this server took over (an upgrade, a restart after a crash) keeps its conversation and
    /// its message ids. A journal that cannot be read leaves the conversation empty (logged).
    pub async fn seed(&self, persist: &Persist, session: Uuid) {
        if self.terminal.lock().contains_key(&session) {
            return;
        }
        let mut loaded = Vec::new();
        let mut last_user = None;
        let mut after = 0;
        loop {
            let Some(events) = page(persist, session, after).await else {
                break;
            };
            let read = events.len();
            for event in events {
                after = event.seq;
                if let EventKind::Conversation { role, text } = event.kind {
                    if role == "user" {
                        last_user = Some((event.offset, text.clone()));
                    }
                    push(&mut loaded, role, text, event.time);
                }
            }
            if read < PAGE {
                break;
            }
        }
        // A post that seeded meanwhile wrote its messages after what it found: keep its list.
        if let std::collections::hash_map::Entry::Vacant(e) = self.terminal.lock().entry(session) {
            e.insert(loaded);
            if let Some(resume) = last_user {
                self.resumes.lock().insert(session, resume);
            }
        }
    }

    /// Where the agent's message of `session`, taken over from a previous server, begins: the
    /// output offset of its last user message and that message ([`Self::seed`] found them).
    pub fn resume(&self, session: Uuid) -> Option<(u64, String)> {
        self.resumes.lock().get(&session).cloned()
    }

    /// Takes the right to send `session` a user message, whose last event is `seq`: None while
    /// another one is being sent, or was sent and is still unanswered (within `within`). Two
    /// clients that both saw the agent `stable` would otherwise both type into its prompt,
    /// which would take their texts as one. The claim ends when dropped (a request cut short
    /// included) or when [`prompted`](Self::prompted) is called with it.
    pub fn claim(&self, session: Uuid, seq: u64, within: std::time::Duration) -> Option<Claim<'_>> {
        let mut sending = self.sending.lock();
        if sending.contains(&session) || self.prompt_pending(session, seq, within) {
            return None;
        }
        sending.insert(session);
        *self.claims.lock().entry(session).or_default() += 1;
        Some(Claim {
            conversations: self,
            session,
        })
    }

    /// The user message claimed was just sent; the session's last event was `seq`.
    pub fn prompted(&self, claim: Claim<'_>, seq: u64) {
        self.prompted
            .lock()
            .insert(claim.session, (std::time::Instant::now(), seq));
        drop(claim);
        self.sent.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Where a pipe session's agent message starts: the output offset its last user message
    /// was sent at (0 before any).
    pub fn mark(&self, session: Uuid) -> u64 {
        let mark = self.marks.lock().get(&session).copied();
        mark.or_else(|| self.resume(session).map(|(offset, _)| offset))
            .unwrap_or(0)
    }

    /// A user message is sent to `session` (without hooks) at output offset `offset`.
    pub fn set_mark(&self, session: Uuid, offset: u64) {
        self.marks.lock().insert(session, offset);
    }

    /// How many user messages were let through to `session` (see `claims`).
    pub fn claims(&self, session: Uuid) -> u64 {
        self.claims.lock().get(&session).copied().unwrap_or(0)
    }

    /// The last user message sent to `session` was answered (it is no longer pending).
    pub fn settle(&self, session: Uuid) {
        self.prompted.lock().remove(&session);
    }

    /// Changes when a user message was sent (to any session).
    pub fn sent(&self) -> tokio::sync::watch::Receiver<u64> {
        self.sent.subscribe()
    }

    /// Whether a user message sent to `session` is still unanswered by any event (its last is
    /// still `seq`), for at most `within`.
    pub fn prompt_pending(&self, session: Uuid, seq: u64, within: std::time::Duration) -> bool {
        let mut prompted = self.prompted.lock();
        match prompted.get(&session) {
            Some((at, then)) if *then == seq && at.elapsed() < within => true,
            Some(_) => {
                prompted.remove(&session);
                false
            }
            None => false,
        }
    }

    /// The turn a user message to terminal session `session` begins (the last one ends; None:
    /// none could begin, its screen is the agent's message).
    pub fn begin_turn(&self, session: Uuid, turn: Option<crate::turn::Turn>) {
        let mut turns = self.turns.lock();
        match turn {
            Some(turn) => turns.insert(session, std::sync::Arc::new(Mutex::new(turn))),
            None => turns.remove(&session),
        };
    }

    /// Terminal session `session`'s turn since its last user message, if one was sent.
    pub fn turn(&self, session: Uuid) -> Option<std::sync::Arc<Mutex<crate::turn::Turn>>> {
        self.turns.lock().get(&session).cloned()
    }

    /// Forgets a removed session's conversation.
    pub fn forget(&self, session: Uuid) {
        self.terminal.lock().remove(&session);
        self.structured.lock().remove(&session);
        self.prompted.lock().remove(&session);
        self.claims.lock().remove(&session);
        self.marks.lock().remove(&session);
        self.turns.lock().remove(&session);
        self.resumes.lock().remove(&session);
    }
}

/// Up to [`PAGE`] journal events of `session` after `after`; None (logged) when the journal
/// cannot be read: the conversation keeps what it has.
async fn page(persist: &Persist, session: Uuid, after: u64) -> Option<Vec<SessionEvent>> {
    persist
        .events(session, after, PAGE)
        .await
        .inspect_err(|e| tracing::warn!(%session, error = %e, "conversation: journal read failed"))
        .ok()
}

/// The right to send one session a user message ([`Conversations::claim`]).
#[derive(Debug)]
pub struct Claim<'a> {
    conversations: &'a Conversations,
    session: Uuid,
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        self.conversations.sending.lock().remove(&self.session);
    }
}

/// Adds a message (an agent text right after an agent message joins it, up to
/// [`MESSAGE_MAX`]), keeping at most [`MAX_MESSAGES`] and [`CONVERSATION_MAX`] bytes.
fn push(messages: &mut Vec<Message>, role: String, text: String, time: SystemTime) {
    if role == AGENT
        && let Some(last) = messages.last_mut()
        && last.role == AGENT
        && last.content.len() + 2 + text.len() <= MESSAGE_MAX
    {
        last.content.push_str("\n\n");
        last.content.push_str(&text);
        last.time = corral_actors::time::format(time);
    } else {
        let id = messages.last().map_or(0, |m| m.id + 1);
        messages.push(Message {
            id,
            content: text,
            role,
            time: corral_actors::time::format(time),
        });
    }
    // The oldest go first; the newest message is always kept.
    let mut bytes: usize = messages.iter().map(|m| m.content.len()).sum();
    let mut over = 0;
    while messages.len() - over > 1
        && (messages.len() - over > MAX_MESSAGES || bytes > CONVERSATION_MAX)
    {
        bytes -= messages[over].content.len();
        over += 1;
    }
    messages.drain(..over);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agent(messages: &mut Vec<Message>, text: &str) {
        push(messages, AGENT.into(), text.into(), SystemTime::now());
    }

    #[test]
    fn a_long_turn_goes_on_in_new_messages_and_the_oldest_go_past_the_bounds() {
        let mut m = Vec::new();
        let line = "x".repeat(100 * 1024);
        // One turn of 200 texts of 100 KiB: joined up to MESSAGE_MAX, then a new message.
        for _ in 0..200 {
            agent(&mut m, &line);
        }
        assert!(m.iter().all(|m| m.content.len() <= MESSAGE_MAX));
        assert!(m.iter().all(|m| m.role == AGENT));
        let bytes: usize = m.iter().map(|m| m.content.len()).sum();
        assert!(bytes <= CONVERSATION_MAX, "{bytes}");
        // The oldest went (ids go on), the newest text is the last message's end.
        assert!(m[0].id > 0);
        assert!(m.windows(2).all(|w| w[1].id == w[0].id + 1));
        assert!(m.last().unwrap().content.ends_with(&line));
        // Ten texts of 100 KiB (and their separators) fit in a message of 1 MiB; 200 texts
        // made 20 messages, of which 8 MiB keep the last 8.
        assert_eq!(m.last().unwrap().id, 19);
        assert_eq!(m.len(), 8);
        // The count bound still holds for small messages.
        for i in 0..(MAX_MESSAGES + 10) {
            push(
                &mut m,
                if i % 2 == 0 { "user" } else { AGENT }.into(),
                "hi".into(),
                SystemTime::now(),
            );
        }
        assert_eq!(m.len(), MAX_MESSAGES);
        // One message larger than the whole bound is kept (the newest always is).
        let mut one = Vec::new();
        push(
            &mut one,
            "user".into(),
            "y".repeat(CONVERSATION_MAX + 1),
            SystemTime::now(),
        );
        assert_eq!(one.len(), 1);
    }
}
