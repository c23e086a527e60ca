//! The routes an agent's side calls: its hooks (`corral hook` posts each with the session's hook
//! token; a PermissionRequest waits here for an answer), a question answered from anywhere, and
//! its webhook notifications muted.

use super::*;

/// Deepest nesting a hook payload may have (Claude Code's are a few levels deep).
pub(super) const MAX_HOOK_DEPTH: usize = 64;

/// How deep `v` nests (a scalar is 0), without recursion.
pub(super) fn json_depth(v: &serde_json::Value) -> usize {
    let mut deepest = 0;
    let mut stack = vec![(v, 0usize)];
    while let Some((v, depth)) = stack.pop() {
        deepest = deepest.max(depth);
        match v {
            serde_json::Value::Array(a) => stack.extend(a.iter().map(|x| (x, depth + 1))),
            serde_json::Value::Object(o) => stack.extend(o.values().map(|x| (x, depth + 1))),
            _ => {}
        }
    }
    deepest
}

/// Claude Code hook events (posted by `corral hook` with the session's hook token).
pub(super) async fn post_hook(
    State(app): State<Arc<App>>,
    Hooked(h): Hooked,
    Query(q): Query<HookQuery>,
    crate::access::Body(body): crate::access::Body,
) -> Result<Response, ApiError> {
    let ran_at = match q.at {
        None => None,
        Some(at) => Some(
            corral_actors::time::from_json(&serde_json::Value::String(at.clone())).ok_or_else(
                || ApiError::bad_request(format!("hook time `at` is not RFC 3339: {at:?}")),
            )?,
        ),
    };
    let payload: serde_json::Value = match serde_json::from_slice(&body) {
        // Kept inside an event (a few levels more) and read back with serde_json's limit of
        // 128: a payload nested deeper than this was accepted, then unreadable — a hole in
        // the journal's numbering.
        Ok(v) if json_depth(&v) > MAX_HOOK_DEPTH => {
            return Err(ApiError::bad_request(format!(
                "hook payload nested deeper than {MAX_HOOK_DEPTH} levels"
            )));
        }
        Ok(v @ serde_json::Value::Object(_)) => v,
        Ok(_) => return Err(ApiError::bad_request("hook payload must be a JSON object")),
        Err(e) => {
            return Err(ApiError::bad_request(format!(
                "hook payload is not JSON: {e}"
            )));
        }
    };
    let Some(name) = payload
        .get("hook_event_name")
        .and_then(|v| v.as_str())
        .map(str::to_string)
    else {
        return Err(ApiError::bad_request("hook payload lacks hook_event_name"));
    };
    let ask = (name == "PermissionRequest").then(|| corral_actors::agent::hook_question(&payload));
    let event = take_hook(&app, &h, &name, payload, ran_at);
    // A structured session's question is answered through its control protocol (the same
    // permission endpoint): its hook returns no decision at once, or it would race the answer.
    let accepted = |output| {
        Json(HookAccepted {
            seq: event.seq,
            output,
        })
    };
    let Some(ask) = ask.filter(|_| h.shared().mode != corral_actors::Mode::StreamJson) else {
        return Ok((StatusCode::ACCEPTED, accepted(None)).into_response());
    };
    // Wait (bounded) for an answer from the API; the hook prints what we return. This call
    // holds the question: when it ends without an answer (Claude ended the hook because the
    // user answered in its own dialog, or the wait ran out, or the server is leaving) the
    // question closes. A server on its way out (shutdown, upgrade) answers at once with no
    // decision: its graceful stop waits for open responses, and this one could hold it for the
    // whole wait.
    let Some(mut question) = app.permissions.ask(&h, ask) else {
        tracing::warn!(session = %h.id(), "too many open permission questions: this one goes to the agent's dialog");
        return Ok((StatusCode::OK, accepted(None)).into_response());
    };
    let mut leaving = app.shutdown.subscribe();
    let output = tokio::select! {
        answered = question.answer_within(app.config.agents.permission_wait()) => {
            match answered {
                Some(Ok(answer)) => Some(answer.hook_output()),
                Some(Err(_)) => None,
                // No answer in time: no decision, Claude asks in its own dialog, where the
                // question now is (nothing outside can answer it any more).
                None => {
                    question.left = corral_actors::agent::Left::ToTerminal;
                    None
                }
            }
        }
        // The next server finds the question in the agent's dialog (see `agent::replay`).
        _ = leaving.wait_for(|down| *down) => {
            question.left = corral_actors::agent::Left::ToTerminal;
            None
        }
    };
    drop(question);
    Ok((StatusCode::OK, accepted(output)).into_response())
}

/// Records hook event `name` of session `h` (posted now, or spooled while no server was there:
/// `crate::spool`): the questions it says were settled in the agent's own dialog end, then the
/// agent's state follows it.
pub(crate) fn take_hook(
    app: &App,
    h: &corral_actors::SessionHandle,
    name: &str,
    payload: serde_json::Value,
    ran_at: Option<std::time::SystemTime>,
) -> corral_actors::SessionEvent {
    // A SessionEnd that ran before the session's process started is a previous process's,
    // late (a restart's new process said SessionStart first: it was marked exited while it
    // ran): journaled, it changes nothing.
    if name == "SessionEnd"
        && let (Some(at), Some(started)) = (ran_at, h.info().started_at)
        && at < started
    {
        tracing::debug!(session = %h.id(), "a previous process's SessionEnd: journaled only");
        app.metrics.hook_events.inc();
        return corral_actors::agent::journal_hook(h.shared(), name, payload, ran_at);
    }
    let settled = corral_actors::agent::settle_by_hook(h.shared(), name, &payload);
    app.permissions.release(h, &settled);
    let event = corral_actors::agent::record_hook(h.shared(), name, payload, ran_at);
    app.metrics.hook_events.inc();
    event
}

/// `POST /v1/sessions/{key}/notify {"muted": bool}`: mutes or unmutes the session's webhook
/// notifications (write token of the session, or admin).
/// `GET /v1/sessions/{key}/notify`: whether the session's webhook notifications are muted.
pub(super) async fn get_notify(
    State(app): State<Arc<App>>,
    Readable(h): Readable,
) -> Json<serde_json::Value> {
    Json(serde_json::json!({ "session": h.id(), "muted": app.mutes.muted(h.id()) }))
}

pub(super) async fn set_notify(
    State(app): State<Arc<App>>,
    Driven(h): Driven,
    crate::access::Body(body): crate::access::Body,
) -> Result<Json<serde_json::Value>, ApiError> {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Mute {
        muted: bool,
    }
    let Mute { muted } = parse_json(&body, "notify setting")?;
    let sessions = app.corral.sessions();
    let exists = |id: uuid::Uuid| sessions.get(&id.to_string()).is_ok();
    if app.mutes.set(h.id(), muted, exists) {
        // Kept in the data dir (a restart or an upgrade keeps it), off the runtime's workers.
        let keeper = app.clone();
        tokio::task::spawn_blocking(move || keeper.mutes.save())
            .await
            .map_err(|e| ApiError::internal(format!("saving the mute: {e}")))?
            .map_err(|e| ApiError::internal(format!("saving the mute: {e}")))?;
    }
    Ok(Json(
        serde_json::json!({ "session": h.id(), "muted": muted }),
    ))
}

/// `POST /v1/sessions/{key}/permission {behavior, message?}`: answers the permission the
/// session's agent waits for (write token of the session, or admin); 409 with the session's
/// attention state when it waits for none.
pub(super) async fn answer_permission(
    State(app): State<Arc<App>>,
    Driven(h): Driven,
    crate::access::Body(body): crate::access::Body,
) -> Result<Json<SessionView>, ApiError> {
    let answer: crate::permission::Answer = parse_json(&body, "permission answer")?;
    let allow = answer.behavior == crate::permission::Behavior::Allow;
    let message = answer.message.clone();
    let shown = h.info().permission;
    let Some(question) = corral_actors::agent::question(h.shared(), answer.id.as_deref()) else {
        return Err(not_asked(&app, &h, answer.id.as_deref(), shown.as_ref()));
    };
    let Some(id) = question.id.clone() else {
        return Err(not_asked(&app, &h, None, shown.as_ref()));
    };
    // A question to choose from is answered with its choices (as the tool's input).
    let mut answer = answer;
    if question.tool == crate::permission::ASK_USER_QUESTION && allow {
        answer.updated_input = Some(
            crate::permission::answered_input(&question.input, answer.answers.as_ref())
                .map_err(ApiError::bad_request)?,
        );
    } else if answer.answers.is_some() {
        return Err(ApiError::bad_request(format!(
            "`answers` answer an {} allowed; this question is {}",
            crate::permission::ASK_USER_QUESTION,
            question.tool
        )));
    }
    // A hook waiting for its answer (terminal agents), else a structured agent's control
    // request.
    let behavior = answer.behavior;
    let answered = if question.request_id.is_none() {
        app.permissions.answer(&h, &id, answer)
    } else {
        let answered = h
            .answer(&id, allow, message.as_deref(), answer.updated_input)?
            .is_some();
        if answered {
            app.permissions.note_answered(h.id(), &id, behavior);
        }
        answered
    };
    if !answered {
        return Err(not_asked(&app, &h, Some(&id), h.info().permission.as_ref()));
    }
    Ok(Json(SessionView::from(h.info())))
}

/// Why an answer found no question to answer: the one named was answered through corral a
/// moment before (two viewers at once: how it was answered), none is open (the attention state
/// says what the agent does), the one named is no longer open (and which one is), or the
/// question is in the agent's own terminal.
pub(super) fn not_asked(
    app: &App,
    h: &corral_actors::SessionHandle,
    id: Option<&str>,
    shown: Option<&corral_actors::agent::PermissionAsk>,
) -> ApiError {
    let attention = h
        .info()
        .attention
        .and_then(|a| serde_json::to_value(a).ok())
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_else(|| "none (not an agent session)".into());
    let asks_now = shown.and_then(|now| {
        now.id
            .as_deref()
            .map(|q| format!("it now asks {} (question {q})", now.tool))
    });
    // The question closed last, if it was settled in the agent's own dialog (a key at its
    // terminal, the page or `corral send`) a moment ago: it is the one this answer meant when
    // it names none, and said so when it names it.
    let in_dialog =
        corral_actors::agent::last_closed(h.shared(), crate::permission::ANSWERED_RECENTLY)
            .filter(|(_, how)| {
                matches!(
                    how,
                    corral_actors::questions::Left::InDialog
                        | corral_actors::questions::Left::Settled
                )
            })
            .map(|(q, _)| q);
    // (Not while it asks again in its terminal: that question is the one meant.)
    if shown.is_none()
        && attention != "needs_permission"
        && let Some(q) = in_dialog.as_deref()
        && id.is_none_or(|id| id == q)
    {
        return ApiError::conflict(format!(
            "{}: question {q} was settled in the agent's own dialog (a key at its terminal or \
             from a viewer): nothing more was answered (attention: {attention})",
            h.name()
        ));
    }
    // Without an id, the session's question answered a moment ago is the one this answer
    // meant (two viewers at once, the CLI second).
    let recent = match id {
        None if shown.is_none() => app.permissions.last_answered(h.id()),
        _ => None,
    };
    let id = id.or(recent.as_ref().map(|(q, _)| q.as_str()));
    if let Some(id) = id
        && let Some(said) = app.permissions.answered_as(id)
    {
        let now = asks_now
            .map(|a| format!("; {a}"))
            .unwrap_or_else(|| format!(" (attention: {attention})"));
        return ApiError::conflict(format!(
            "{}: question {id} was answered already ({said}, from another viewer or the CLI): \
             nothing more was answered{now}",
            h.name()
        ));
    }
    let why = match (id, asks_now) {
        (Some(id), Some(now)) => {
            return ApiError::conflict(format!(
                "session {}: question {id} is not open (answered, settled in the agent's own dialog, or never asked); {now}: nothing was answered",
                h.name()
            ));
        }
        // No hook waits for an answer from here any more: said with the ways left.
        (id, None) if attention == "needs_permission" => {
            let name = h.name();
            let closed = id
                .map(|id| format!("question {id} is no longer open; "))
                .unwrap_or_default();
            return ApiError::conflict(format!(
                "session {name} is not waiting for a permission answer from here: {closed}its \
                 question is in its own terminal now; answer it there (`corral attach {name}`), \
                 or with keys: `corral send {name} '\\r'` takes the highlighted choice, \
                 `corral send {name} '\\e'` refuses"
            ));
        }
        (Some(id), None) => format!("question {id} is no longer open (attention: {attention})"),
        (None, _) => format!("attention: {attention}"),
    };
    ApiError::conflict(format!(
        "session {} is not waiting for a permission answer ({why})",
        h.name()
    ))
}
