//! Questions: the permission questions an agent session has open, oldest first. An agent that
//! runs tools in parallel asks several at once (Claude Code calls one PermissionRequest hook per
//! tool, a structured agent sends one control request per tool), and each waits for its own
//! answer: one is shown (`permission`), the rest wait behind it (`permission_queue`) and are
//! shown in turn. A question that something outside can answer has an id (its hook call's, or
//! the control request's), and an answer names the question it answers, so it never lands on
//! one its sender did not see.
//!
//! The functions work on the session's [`Status`] under its lock; `agent` decides when they are
//! called. Nothing here knows hook names.

use crate::attention::{Attention, PermissionAsk};
use crate::session::shared::Status;

/// Most questions open at once in one session: a runaway agent cannot grow the queue; past it a
/// hook-asked question goes to the agent's own dialog at once.
pub const MAX_QUESTIONS: usize = 64;

pub use crate::attention::Left;

/// Whether a question something outside can answer is open.
pub(crate) fn any_open(s: &Status) -> bool {
    s.permission.as_ref().is_some_and(|p| p.id.is_some())
}

/// Opens question `ask` (which has an id): shown at once, or queued behind the open ones.
/// False when [`MAX_QUESTIONS`] are open (nothing changes).
pub(crate) fn open(s: &mut Status, ask: PermissionAsk) -> bool {
    if any_open(s) {
        if 1 + s.queued.len() >= MAX_QUESTIONS {
            return false;
        }
        s.queued.push_back(ask);
    } else {
        s.permission = Some(ask);
    }
    s.set_attention(Attention::NeedsPermission);
    true
}

/// Takes question `id` out (shown or queued); the next one is shown. None if it is not open.
pub(crate) fn take(s: &mut Status, id: &str) -> Option<PermissionAsk> {
    let is = |p: &PermissionAsk| p.id.as_deref() == Some(id);
    if s.permission.as_ref().is_some_and(is) {
        let taken = s.permission.take();
        s.permission = s.queued.pop_front();
        return taken;
    }
    let at = s.queued.iter().position(is)?;
    s.queued.remove(at)
}

/// Closes question `id`, which left as `how`; the attention follows: the next question if one
/// is open, else what `how` means. Nothing happens if it is not open (already settled).
pub(crate) fn close(s: &mut Status, id: &str, how: Left) -> bool {
    if take(s, id).is_none() {
        return false;
    }
    s.closed = Some((id.to_string(), how, crate::time::mono_ms()));
    if s.permission.is_some() {
        s.set_attention(Attention::NeedsPermission);
        return true;
    }
    s.set_attention(match how {
        Left::Answered | Left::InDialog => Attention::Working,
        Left::Settled => Attention::Idle,
        Left::ToTerminal => Attention::NeedsPermission,
    });
    true
}

/// Puts back question `ask`, taken to be answered, whose answer could not be delivered: it is
/// shown first again.
pub(crate) fn put_back(s: &mut Status, ask: PermissionAsk) {
    if let Some(shown) = s.permission.replace(ask) {
        s.queued.push_front(shown);
    }
    s.set_attention(Attention::NeedsPermission);
}

/// The ids of the open questions hook calls hold that `settles` says are settled.
pub(crate) fn held_matching(s: &Status, settles: impl Fn(&PermissionAsk) -> bool) -> Vec<String> {
    s.permission
        .iter()
        .chain(s.queued.iter())
        .filter(|q| q.request_id.is_none() && settles(q))
        .filter_map(|q| q.id.clone())
        .collect()
}

/// Drops every open question (the agent's turn or process ended).
pub(crate) fn clear(s: &mut Status) {
    s.permission = None;
    s.queued.clear();
}

/// Drops the questions that hook calls held (they ended with the server that held them): what
/// they asked is in the agent's own dialog now. Structured agents' questions stay.
pub(crate) fn leave_held_to_terminal(s: &mut Status) {
    s.queued.retain(|q| q.request_id.is_some());
    if s.permission
        .as_ref()
        .is_some_and(|p| p.request_id.is_none())
    {
        s.permission = s.queued.pop_front();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ask(n: usize) -> PermissionAsk {
        PermissionAsk {
            id: Some(format!("q{n}")),
            tool: "Bash".into(),
            input: serde_json::json!({"command": format!("echo {n}")}),
            request_id: None,
        }
    }

    /// 64 questions are open at most (one shown, 63 queued): the 65th is refused and changes
    /// nothing (its hook goes to the agent's own dialog); answering one makes room.
    #[test]
    fn past_its_bound_a_question_is_refused_and_changes_nothing() {
        let mut s = Status::new(crate::spec::Size::default(), None);
        for n in 0..MAX_QUESTIONS {
            assert!(open(&mut s, ask(n)), "question {n}");
        }
        assert_eq!(1 + s.queued.len(), MAX_QUESTIONS);
        assert!(!open(&mut s, ask(99)));
        assert_eq!(1 + s.queued.len(), MAX_QUESTIONS);
        assert!(s.queued.iter().all(|q| q.id.as_deref() != Some("q99")));
        assert!(take(&mut s, "q0").is_some());
        assert_eq!(
            s.permission.as_ref().and_then(|q| q.id.as_deref()),
            Some("q1")
        );
        assert!(open(&mut s, ask(100)));
    }
}
