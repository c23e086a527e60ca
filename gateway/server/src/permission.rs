//! Permission: answering an agent's permission prompt from anywhere. Claude Code's
//! PermissionRequest hook may return a decision; corral's hook call therefore waits (bounded by
//! `agent::PERMISSION_WAIT`) for an answer posted to `POST /v1/sessions/{id}/permission` (or
//! `corral answer`), and returns it as the hook's output — no keystrokes are typed into the
//! terminal. Without an answer in time the hook returns no decision and Claude shows its own
//! prompt. Each waiting call holds one question with an id of its own; several can be open at
//! once (tools run in parallel), shown one at a time in the order they came
//! (`corral_actors::questions`), and an answer that names a question answers that one only. A
//! structured (stream-json) session's question is not held here: it is the agent's own control
//! request, answered through the same endpoint by `SessionHandle::answer` (a
//! `control_response` on its stdin).

use std::collections::HashMap;
use std::time::Duration;

use corral_actors::SessionHandle;
use corral_actors::agent::{Left, PermissionAsk};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;
use tokio::time::Instant;
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
    /// The question answered (its `permission.id`): refused if that one is no longer open.
    /// Without it, the question shown when the answer arrives. A number is taken as its digits.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "id_text"
    )]
    pub id: Option<String>,
    /// For an `AskUserQuestion` (the agent asks the user to choose): the answer to each of its
    /// questions, by the question's text (several choices joined with ", "), given with
    /// `allow`. They go to the agent as the tool's input, which is how it reads them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answers: Option<serde_json::Map<String, serde_json::Value>>,
    /// The tool's input to run with (set by the server from `answers`, never by a client).
    #[serde(skip)]
    pub updated_input: Option<serde_json::Value>,
}

/// The tool that asks the user to choose instead of asking permission for a tool.
pub const ASK_USER_QUESTION: &str = "AskUserQuestion";

/// The input an `AskUserQuestion` with `input` runs with once answered with `answers` (the
/// question's text → the answer); an error saying what is wrong with them otherwise. An
/// `allow` without answers would dismiss the question: the agent hears "the user did not
/// answer".
pub fn answered_input(
    input: &serde_json::Value,
    answers: Option<&serde_json::Map<String, serde_json::Value>>,
) -> Result<serde_json::Value, String> {
    let questions: Vec<&str> = input
        .get("questions")
        .and_then(|q| q.as_array())
        .map(|qs| {
            qs.iter()
                .filter_map(|q| q.get("question").and_then(|t| t.as_str()))
                .collect()
        })
        .unwrap_or_default();
    let Some(answers) = answers else {
        return Err(format!(
            "{ASK_USER_QUESTION} asks the user to choose: allow it with the choice (`corral answer \
             <session> allow --choose <choice>`; over HTTP `answers`: each question's text → the \
             choice), or deny it to dismiss it; its questions: {questions:?}"
        ));
    };
    for (question, answer) in answers {
        if !questions.contains(&question.as_str()) {
            return Err(format!(
                "{question:?} is not one of its questions: {questions:?}"
            ));
        }
        if answer.as_str().is_none_or(|a| a.trim().is_empty()) {
            return Err(format!(
                "the answer to {question:?} must be a choice's text, not empty (several \
                 choices joined with \", \")"
            ));
        }
    }
    if let Some(missing) = questions.iter().find(|q| !answers.contains_key(**q)) {
        return Err(format!("no answer to {missing:?}"));
    }
    let mut input = input.clone();
    if let Some(o) = input.as_object_mut() {
        o.insert("answers".into(), serde_json::Value::Object(answers.clone()));
    }
    Ok(input)
}

/// A question id as text, from a string or a number.
fn id_text<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Id {
        Text(String),
        Number(u64),
    }
    match Option::<Id>::deserialize(d)? {
        // An id of nothing names no question (it was told "question  is no longer open").
        Some(Id::Text(t)) if t.trim().is_empty() => Err(serde::de::Error::custom(
            "id must name a question (permission.id), not be empty",
        )),
        Some(Id::Text(t)) => Ok(Some(t)),
        Some(Id::Number(n)) => Ok(Some(n.to_string())),
        None => Ok(None),
    }
}

impl Answer {
    /// The hook output Claude Code reads for this answer.
    pub fn hook_output(&self) -> serde_json::Value {
        let mut decision = serde_json::json!({ "behavior": self.behavior });
        if let Some(m) = &self.message {
            decision["message"] = serde_json::Value::String(m.clone());
        }
        if let Some(input) = &self.updated_input {
            decision["updatedInput"] = input.clone();
        }
        serde_json::json!({
            "hookSpecificOutput": {
                "hookEventName": "PermissionRequest",
                "decision": decision,
            }
        })
    }
}

/// The questions hook calls hold, by id. Ids are random (12 hex digits), unique across
/// sessions and across servers: an answer naming a question a client saw before an upgrade
/// never lands on a new question that a counter starting again would give the same id.
#[derive(Debug, Default)]
pub struct Waiting {
    /// Question id → (its session, where the answer goes).
    open: Mutex<HashMap<String, (Uuid, oneshot::Sender<Answer>)>>,
    /// The last questions answered through corral (id, `allow`/`deny`), at most
    /// [`ANSWERED_KEPT`]: a second answer to one is told it came too late, and what the first
    /// said (two viewers answering at once).
    answered: Mutex<std::collections::VecDeque<Answered>>,
}

/// A question answered through corral, remembered for a later answer's refusal.
#[derive(Debug)]
struct Answered {
    session: Uuid,
    id: String,
    /// `allowed` or `denied`.
    said: &'static str,
    at: Instant,
}

/// How long an answer without an id is told that its session's last question was answered
/// already (after that, the refusal says only what the agent does now).
pub const ANSWERED_RECENTLY: Duration = Duration::from_secs(60);

/// Answered questions remembered (see [`Waiting::answered_as`]).
pub const ANSWERED_KEPT: usize = 256;

/// A hook call waiting for the answer to its question; when it leaves without one (timed out,
/// its connection dropped, the server leaving) the question closes as [`Question::left`] says.
pub struct Question<'a> {
    waiting: &'a Waiting,
    session: SessionHandle,
    id: String,
    /// How it left if it leaves unanswered: `Settled` (the agent ended the call: the user
    /// answered in its own dialog) unless the call says otherwise.
    pub left: Left,
    /// The answer, when one comes.
    answer: oneshot::Receiver<Answer>,
}

impl Waiting {
    /// Opens a question of `session`, held by the caller until it drops the [`Question`];
    /// None when the session has too many open (see `corral_actors::questions`).
    pub fn ask(&self, session: &SessionHandle, ask: PermissionAsk) -> Option<Question<'_>> {
        let id = crate::auth::random_id();
        let (tx, rx) = oneshot::channel();
        self.open.lock().insert(id.clone(), (session.id(), tx));
        let held = corral_actors::agent::hold_question(session.shared(), ask, id.clone());
        let question = Question {
            waiting: self,
            session: session.clone(),
            id,
            left: Left::Settled,
            answer: rx,
        };
        held.then_some(question)
    }

    /// Answers question `id` of `session` (closing it: the next one is shown); false if no call
    /// holds it.
    pub fn answer(&self, session: &SessionHandle, id: &str, answer: Answer) -> bool {
        let sender = {
            let mut open = self.open.lock();
            match open.get(id) {
                Some((s, _)) if *s == session.id() => open.remove(id).map(|(_, tx)| tx),
                _ => None,
            }
        };
        let Some(tx) = sender else { return false };
        let (behavior, message) = (answer.behavior, answer.message.clone());
        let asked = corral_actors::agent::question(session.shared(), Some(id));
        let delivered = tx.send(answer).is_ok();
        corral_actors::agent::close_question(
            session.shared(),
            id,
            if delivered {
                Left::Answered
            } else {
                Left::Settled
            },
        );
        if delivered {
            // In the journal as a structured agent's answer is: what the agent was told.
            corral_actors::agent::record_stream(
                session.shared(),
                corral_actors::stream_json::AgentEvent::PermissionAnswered {
                    request_id: id.to_string(),
                    behavior: match behavior {
                        Behavior::Allow => "allow",
                        Behavior::Deny => "deny",
                    }
                    .into(),
                    message,
                },
            );
            if behavior == Behavior::Deny
                && let Some(q) = asked
            {
                corral_actors::agent::note_denied(session.shared(), id, &q.tool, &q.input);
            }
            self.note_answered(session.id(), id, behavior);
        }
        delivered
    }

    /// Question `id` of `session` was answered through corral with `behavior` (kept for a later
    /// answer's refusal to say so).
    pub fn note_answered(&self, session: Uuid, id: &str, behavior: Behavior) {
        let mut answered = self.answered.lock();
        if answered.len() >= ANSWERED_KEPT {
            answered.pop_front();
        }
        let said = match behavior {
            Behavior::Allow => "allowed",
            Behavior::Deny => "denied",
        };
        answered.push_back(Answered {
            session,
            id: id.to_string(),
            said,
            at: Instant::now(),
        });
    }

    /// How question `id` was answered through corral, if it was lately.
    pub fn answered_as(&self, id: &str) -> Option<&'static str> {
        self.answered
            .lock()
            .iter()
            .rev()
            .find(|a| a.id == id)
            .map(|a| a.said)
    }

    /// The question of `session` answered through corral last, within [`ANSWERED_RECENTLY`]:
    /// its id and how (an answer that named no question came second).
    pub fn last_answered(&self, session: Uuid) -> Option<(String, &'static str)> {
        self.answered
            .lock()
            .iter()
            .rev()
            .find(|a| a.session == session)
            .filter(|a| a.at.elapsed() < ANSWERED_RECENTLY)
            .map(|a| (a.id.clone(), a.said))
    }

    /// The questions `ids` were settled elsewhere (see `agent::settle_by_hook`): their hook
    /// calls return no decision now.
    pub fn release(&self, session: &SessionHandle, ids: &[String]) {
        {
            let mut open = self.open.lock();
            for id in ids {
                // Dropping the sender ends the call's wait.
                open.remove(id);
            }
        }
        for id in ids {
            withdrawn(session, id, false);
        }
    }
}

/// Journals that question `id` was settled without an answer through corral (as a structured
/// agent's withdrawn request is), or went to the agent's own dialog (`to_dialog`): the journal
/// tells what became of every question (a next server rebuilds the attention from it, see
/// `agent::replay`), and the notifier, which follows events, sees the attention that follows.
fn withdrawn(session: &SessionHandle, id: &str, to_dialog: bool) {
    corral_actors::agent::record_stream(
        session.shared(),
        corral_actors::stream_json::AgentEvent::PermissionCancelled {
            request_id: id.to_string(),
            to_dialog,
        },
    );
}

/// How often a queued question looks whether it is shown yet (its wait starts then).
const QUEUED_CHECK: Duration = Duration::from_secs(1);

impl Question<'_> {
    /// Waits for the answer: `wait` from when the question is shown (a question queued behind
    /// others is not timed while nobody can see it), but never past
    /// `agent::PERMISSION_WAIT_MAX` from its arrival, which the hook's own timeout outlasts.
    /// None: no answer in time. `Some(Err)`: the call was released (settled elsewhere).
    pub async fn answer_within(
        &mut self,
        wait: Duration,
    ) -> Option<Result<Answer, oneshot::error::RecvError>> {
        let limit = Instant::now() + corral_actors::agent::PERMISSION_WAIT_MAX.max(wait);
        let mut shown_at = None;
        loop {
            let now = Instant::now();
            if shown_at.is_none() && corral_actors::agent::is_shown(self.session.shared(), &self.id)
            {
                shown_at = Some(now);
            }
            // Shown: its deadline. Queued: look again shortly (showing it wakes nobody).
            let until = match shown_at {
                Some(at) => at + wait,
                None => now + QUEUED_CHECK,
            }
            .min(limit);
            tokio::select! {
                answered = &mut self.answer => return Some(answered),
                _ = tokio::time::sleep_until(until) => {
                    if shown_at.is_some() || until >= limit {
                        return None;
                    }
                }
            }
        }
    }
}

impl Drop for Question<'_> {
    fn drop(&mut self) {
        // Still open: nobody answered it through us.
        if self.waiting.open.lock().remove(&self.id).is_some()
            && corral_actors::agent::close_question(self.session.shared(), &self.id, self.left)
        {
            withdrawn(&self.session, &self.id, self.left == Left::ToTerminal);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An AskUserQuestion's answers: every question, each a non-empty text; they join its
    /// input as `answers`.
    #[test]
    fn a_choice_answers_every_question_with_text() {
        let input =
            serde_json::json!({"questions": [{"question": "Color?"}, {"question": "Size?"}]});
        let answers = |v: serde_json::Value| v.as_object().cloned();
        let ok = answered_input(
            &input,
            answers(serde_json::json!({"Color?": "Blue", "Size?": "L"})).as_ref(),
        )
        .unwrap();
        assert_eq!(ok["answers"]["Size?"], "L");
        assert_eq!(ok["questions"], input["questions"]);
        for bad in [
            serde_json::json!({"Color?": "Blue"}),
            serde_json::json!({"Color?": "Blue", "Size?": ""}),
            serde_json::json!({"Color?": "Blue", "Size?": " "}),
            serde_json::json!({"Color?": "Blue", "Size?": 3}),
            serde_json::json!({"Color?": "Blue", "Size?": "L", "Shape?": "round"}),
        ] {
            assert!(
                answered_input(&input, answers(bad.clone()).as_ref()).is_err(),
                "{bad}"
            );
        }
        assert!(answered_input(&input, None).is_err());
    }

    /// An answer's id names a question: text or a number; an empty one is refused (it was
    /// taken for a question named "", and told "question  is no longer open").
    #[test]
    fn an_answers_id_is_text_a_number_or_absent_never_empty() {
        let parse = |v: serde_json::Value| serde_json::from_value::<Answer>(v);
        let id = |v| parse(v).unwrap().id;
        assert_eq!(id(serde_json::json!({"behavior": "allow"})), None);
        assert_eq!(
            id(serde_json::json!({"behavior": "allow", "id": 7})),
            Some("7".into())
        );
        assert_eq!(
            id(serde_json::json!({"behavior": "deny", "id": "ab12"})),
            Some("ab12".into())
        );
        for empty in ["", "  "] {
            let err = parse(serde_json::json!({"behavior": "allow", "id": empty})).unwrap_err();
            assert!(err.to_string().contains("must name a question"), "{err}");
        }
    }
}
