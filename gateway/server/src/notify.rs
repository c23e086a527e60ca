//! Notify: tells the outside world when a session needs its user — an agent enters
//! `needs_permission`, goes `idle` after a turn (not when its user interrupted it, nor after a
//! `/clear`), waits on
//! its start screen (`asks_at_start`: Claude Code's folder trust), or a session fails — by POSTing to each
//! configured webhook (`[notify] webhooks`), JSON or one line of text (ntfy-style topics take
//! that). A bounded queue per webhook between the sessions and its sender: a session never
//! waits for a webhook, a slow or unreachable webhook delays only its own notifications, and a
//! full queue is counted (`notify{kind="dropped"}`) and logged, never silent.
//! An agent's `idle` is told once it has stayed idle for [`IDLE_SETTLE`] (a queued prompt's
//! turn starts right after the last one ends: no push for that instant).
//! Each delivery is retried with backoff (3 attempts: 0.5 s, 1 s, 2 s apart, 5 s each). Per
//! session, notifications can be muted (`POST /v1/sessions/{id}/notify {"muted": true}`).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use corral_actors::SessionState;
use corral_actors::attention::Attention;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast::error::RecvError;
use uuid::Uuid;

use crate::app::App;
use crate::config::Webhook;

mod outbox;

/// Notifications waiting to be sent to one webhook, at most.
pub const QUEUE: usize = 256;
/// Delivery attempts per webhook and notification.
pub const ATTEMPTS: u32 = 3;
/// One attempt's bound.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);

/// Entries of removed sessions the watcher's `last` may hold before it looks for them.
const FORGET_AFTER: usize = 64;

/// Most bytes of a webhook's answer read (ntfy answers ~300 bytes of JSON); the rest is not.
pub const ANSWER_MAX: usize = 64 * 1024;
/// How long an agent that went idle must stay idle to be told: a prompt queued while it worked
/// starts its turn right after the last one ends (Claude Code's Stop hook, then the next
/// prompt's UserPromptSubmit 50 ms later; a stream-json `result`, then the next turn's
/// `init`), and a push saying it waits would be wrong.
pub const IDLE_SETTLE: Duration = Duration::from_millis(1500);

/// What is told.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Notification {
    /// This notification's id (`<session>:<seq>`, the session event that raised it): the same
    /// for each delivery attempt, so a receiver drops a repeat, and it finds the event in the
    /// session's journal (`corral events`).
    pub id: String,
    /// Session id.
    pub session: Uuid,
    /// Session name.
    pub name: String,
    /// `needs_permission`, `idle`, `asks_at_start` (an agent that has not started waits on its
    /// screen: Claude Code's folder trust) or `failed`.
    pub kind: String,
    /// The tool asked for, with needs_permission.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool: Option<String>,
    /// What it asks, with needs_permission: a command's text, a file's path, a question (or,
    /// known only from Claude's Notification hook, its message); its
    /// start screen's question with asks_at_start; the turn's last answer with idle (Claude
    /// Code's `last_assistant_message`, a structured agent's result, in one line), when the
    /// agent said it; why, with failed (at most [`DETAIL_MAX`] characters).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// The session's page (`[notify] page_url`, else the server's own URL, then `#/s/<id>`):
    /// a phone's notification opens it.
    pub url: String,
    /// When (RFC 3339).
    pub time: String,
}

/// Most characters of a notification's `detail`.
pub const DETAIL_MAX: usize = 200;

/// What a question asks, in a line: the input field a person reads first (a command, a path,
/// a URL, a question), cut to [`DETAIL_MAX`] characters.
fn detail(ask: &corral_actors::agent::PermissionAsk) -> Option<String> {
    let input = &ask.input;
    let text = ["command", "file_path", "path", "url", "pattern", "prompt"]
        .iter()
        .find_map(|k| input.get(*k).and_then(|v| v.as_str()).map(str::to_string))
        .or_else(|| {
            input
                .pointer("/questions/0/question")
                .and_then(|v| v.as_str())
                .map(str::to_string)
        })?;
    Some(one_line(&text))
}

/// `text` in one line (every run of blanks and newlines a space), cut to [`DETAIL_MAX`].
fn one_line(text: &str) -> String {
    cut(&text.split_whitespace().collect::<Vec<_>>().join(" "))
}

impl Notification {
    /// One line for text webhooks.
    fn text(&self) -> String {
        match (self.kind.as_str(), &self.tool) {
            ("needs_permission", Some(tool)) if tool == "AskUserQuestion" => match &self.detail {
                Some(q) => format!("{} asks: {q}", self.name),
                None => format!("{}: asks a question", self.name),
            },
            ("needs_permission", Some(tool)) if !tool.is_empty() => match &self.detail {
                Some(d) => format!("{}: needs permission to use {tool}: {d}", self.name),
                None => format!("{}: needs permission to use {tool}", self.name),
            },
            ("needs_permission", _) => match &self.detail {
                Some(said) => format!("{}: {said}", self.name),
                None => format!("{}: needs permission", self.name),
            },
            ("idle", _) => match &self.detail {
                Some(answer) => format!("{}: waiting for input: {answer}", self.name),
                None => format!("{}: waiting for input", self.name),
            },
            ("asks_at_start", _) => format!(
                "{} has not started: its screen asks: {}",
                self.name,
                self.detail.as_deref().unwrap_or("?")
            ),
            _ => match &self.detail {
                Some(why) => format!("{}: failed: {why}", self.name),
                None => format!("{}: failed", self.name),
            },
        }
    }
}

/// What notifications are watched from: the sessions' events, and what each session said
/// already. Taken before the hook spool is replayed (`crate::spool`), so that a turn that
/// ended while no server ran (its Stop hook spooled) is told as any other.
pub struct Watch {
    events: tokio::sync::broadcast::Receiver<corral_actors::SessionEvent>,
    last: HashMap<Uuid, Attention>,
}

/// Starts watching (see [`Watch`]).
pub fn watch(app: &App) -> Watch {
    let events = app.corral.sessions().events();
    // What each session already said (an adopted agent asking since before a restart or an
    // upgrade was announced by the server that saw it start asking).
    let last = app
        .corral
        .sessions()
        .list()
        .into_iter()
        .filter_map(|i| Some((i.id, i.attention?)))
        .collect();
    Watch { events, last }
}

/// Where notifications not yet delivered when a server leaves for a successor (an upgrade, a
/// stop that keeps the sessions) wait for it, in the data dir: one JSON line each, with the
/// webhook's URL.
pub const HANDED_OVER: &str = "notifications.jsonl";

/// A notification waiting in [`HANDED_OVER`].
#[derive(Debug, Serialize, Deserialize)]
struct Undelivered {
    webhook: String,
    notification: Notification,
}

/// Runs until the server stops: watches attention changes and failures, queues notifications,
/// and sends them. Those not delivered when it stops go to the successor ([`HANDED_OVER`]),
/// or, at a full stop, are counted and logged as undelivered.
pub async fn run(app: Arc<App>, watch: Watch) {
    let hooks = app.config.notify.webhooks.clone();
    let page = app
        .config
        .notify
        .page_url
        .clone()
        .unwrap_or_else(|| app.url.clone());
    if hooks.is_empty() {
        return;
    }
    // Bound to every address: the server's own URL names none a phone can open.
    if app.config.notify.page_url.is_none() && names_no_host(&page) {
        tracing::warn!(
            url = %page,
            "notify: webhook links will point to {page}, which no phone can open: set [notify] page_url to the page's address as a phone reaches it"
        );
    }
    // One queue and one sender per webhook: a webhook that is slow or down (each attempt waits
    // up to its timeout, then retries) holds up only its own notifications.
    let (txs, rxs): (Vec<_>, Vec<_>) = hooks
        .iter()
        .map(|_| tokio::sync::mpsc::channel::<Notification>(QUEUE))
        .unzip();
    // What the last server left undelivered goes first: handed over as it left, or in its
    // outbox if it was killed.
    let (crashed, outbox, writer) = outbox::open(&app.data_dir).await;
    let mut seen = std::collections::HashSet::new();
    let left_over = take_handed_over(&app.data_dir)
        .await
        .into_iter()
        .chain(crashed);
    // An idle the last server had not told yet settles again here, told only if the session
    // still waits then: a prompt sent right after the handover starts a turn, and a push
    // saying the agent waits would be wrong (it went out at once).
    let mut resettling: HashMap<Uuid, Notification> = HashMap::new();
    for u in left_over {
        if !seen.insert((u.webhook.clone(), u.notification.id.clone())) {
            continue;
        }
        if u.notification.kind == "idle" && hooks.iter().any(|h| h.url == u.webhook) {
            resettling.insert(u.notification.session, u.notification);
            continue;
        }
        match hooks.iter().position(|h| h.url == u.webhook) {
            Some(i) => queue_one(&app, &outbox, &txs[i], &hooks[i], u.notification),
            None => {
                app.metrics.notify("dropped");
                tracing::warn!(url = %crate::config::shown_url(&u.webhook), id = %u.notification.id, "notify: a notification handed over for a webhook no longer configured was dropped (counted)");
            }
        }
    }
    let senders = futures::future::join_all(hooks.iter().zip(rxs).map(|(hook, mut rx)| {
        let app = &app;
        let outbox = outbox.clone();
        async move {
            let mut down = app.shutdown.subscribe();
            let mut left = Vec::new();
            loop {
                let n = tokio::select! {
                    n = rx.recv() => match n {
                        Some(n) => n,
                        None => break,
                    },
                    _ = down.wait_for(|d| *d) => break,
                };
                let delivered = tokio::select! {
                    () = deliver(app, hook, &n) => true,
                    _ = down.wait_for(|d| *d) => false,
                };
                if !delivered {
                    left.push(n);
                    break;
                }
                outbox.done(app, &hook.url, &n.id);
            }
            rx.close();
            while let Ok(n) = rx.try_recv() {
                left.push(n);
            }
            left.into_iter()
                .map(|notification| Undelivered {
                    webhook: hook.url.clone(),
                    notification,
                })
                .collect::<Vec<_>>()
        }
    }));
    let watched = outbox.clone();
    let watcher = async {
        let outbox = watched;
        let Watch {
            mut events,
            mut last,
        } = watch;
        let mut down = app.shutdown.subscribe();
        // Idle notifications waiting out [`IDLE_SETTLE`], one per session at most (a session
        // that works again drops its own), in the order they are due.
        let mut settling: HashMap<Uuid, (tokio::time::Instant, Notification)> = HashMap::new();
        for (session, n) in resettling {
            for hook in &hooks {
                outbox.queued(&app, &hook.url, &n);
            }
            settling.insert(session, (tokio::time::Instant::now() + IDLE_SETTLE, n));
        }
        loop {
            let due = settling.values().map(|(at, _)| *at).min();
            let event = tokio::select! {
                _ = down.wait_for(|d| *d) => break,
                event = events.recv() => match event {
                    Ok(e) => e,
                    Err(RecvError::Lagged(n)) => {
                        tracing::warn!(missed = n, "notify: session events missed");
                        continue;
                    }
                    Err(RecvError::Closed) => break,
                },
                () = corral_actors::time::sleep_until(due) => {
                    let now = tokio::time::Instant::now();
                    let ready: Vec<Uuid> = settling
                        .iter()
                        .filter(|(_, (at, _))| *at <= now)
                        .map(|(id, _)| *id)
                        .collect();
                    for id in ready {
                        // invariant: the id was just read from the map.
                        let (_, n) = settling.remove(&id).expect("settling notification");
                        if still_idle(&app, id) && !app.mutes.muted(id) {
                            queue(&app, &outbox, &txs, &hooks, n);
                        } else {
                            settled(&app, &outbox, &hooks, &n);
                        }
                    }
                    continue;
                }
            };
            let Ok(h) = app.corral.sessions().get(&event.session.to_string()) else {
                // Removed: what was known of it goes with it.
                last.remove(&event.session);
                continue;
            };
            let info = h.info();
            if info.attention != Some(Attention::Idle)
                && let Some((_, n)) = settling.remove(&info.id)
            {
                settled(&app, &outbox, &hooks, &n);
            }
            // An interrupt (Esc or Ctrl-C typed into the agent, a stream-json interrupt) is
            // its user's own doing: whoever typed it is looking at the agent, and a push saying
            // it waits would only echo their key. So is a question settled in the agent's own
            // dialog ("No", Esc: its hook call ended, `permission_cancelled` without
            // `to_dialog`) that leaves it waiting.
            let interrupted = matches!(
                event.kind,
                corral_actors::EventKind::Agent(
                    corral_actors::stream_json::AgentEvent::Interrupted
                        | corral_actors::stream_json::AgentEvent::PermissionCancelled {
                            to_dialog: false,
                            ..
                        }
                )
            );
            // A conversation cleared or begun (`/clear`: SessionEnd then SessionStart), or a
            // prompt that started no turn (a slash command that printed and returned), leaves
            // the agent waiting without a turn having ended: nothing to tell.
            let no_turn = match &event.kind {
                corral_actors::EventKind::Hook { name, .. } => {
                    name == "SessionStart" || name == "SessionEnd"
                }
                corral_actors::EventKind::Agent(corral_actors::stream_json::AgentEvent::NoTurn) => {
                    true
                }
                _ => false,
            };
            let asks_at_start = match &event.kind {
                corral_actors::EventKind::Agent(
                    corral_actors::stream_json::AgentEvent::AsksAtStart { line },
                ) => Some(line.clone()),
                _ => None,
            };
            let kind = match (info.attention, last.get(&info.id)) {
                _ if asks_at_start.is_some() && info.agent_asks_at_start.is_some() => {
                    Some("asks_at_start")
                }
                (Some(Attention::NeedsPermission), prev)
                    if prev != Some(&Attention::NeedsPermission) =>
                {
                    Some("needs_permission")
                }
                (Some(Attention::Idle), Some(Attention::Working | Attention::NeedsPermission))
                    if !interrupted && !no_turn =>
                {
                    Some("idle")
                }
                _ if info.state == SessionState::Failed
                    && matches!(
                        event.kind,
                        corral_actors::EventKind::State {
                            state: SessionState::Failed,
                            ..
                        }
                    ) =>
                {
                    Some("failed")
                }
                _ => None,
            };
            if let Some(a) = info.attention
                && last.insert(info.id, a).is_none()
                && last.len() > app.corral.sessions().len() + FORGET_AFTER
            {
                // A session removed without an event seen here after it: the entries of
                // sessions gone are let go, so `last` follows the sessions there are.
                last.retain(|id, _| app.corral.sessions().get(&id.to_string()).is_ok());
            }
            let Some(kind) = kind else { continue };
            if app.mutes.muted(info.id) {
                continue;
            }
            let why = (kind == "failed")
                .then(|| info.reason.as_deref().map(cut))
                .flatten();
            // A question known only from Claude's Notification hook (no PermissionRequest
            // call held it: none came, or it had timed out) is told in its own words ("Claude
            // needs your permission to use Bash").
            let notified = match &event.kind {
                corral_actors::EventKind::Hook { name, payload, .. }
                    if kind == "needs_permission" && name == "Notification" =>
                {
                    payload.get("message").and_then(|m| m.as_str()).map(cut)
                }
                _ => None,
            };
            // A finished turn is told with its answer: Claude Code's Stop hook carries its last
            // message (`last_assistant_message`), a structured agent's `result` its text.
            let answered = match &event.kind {
                _ if kind != "idle" => None,
                corral_actors::EventKind::Hook { payload, .. } => payload
                    .get("last_assistant_message")
                    .and_then(|m| m.as_str())
                    .filter(|m| !m.trim().is_empty())
                    .map(one_line),
                corral_actors::EventKind::Agent(
                    corral_actors::stream_json::AgentEvent::Result {
                        text: Some(text), ..
                    },
                ) if !text.trim().is_empty() => Some(one_line(text)),
                _ => None,
            };
            let n = Notification {
                id: format!("{}:{}", info.id, event.seq),
                session: info.id,
                name: info.name.clone(),
                kind: kind.to_string(),
                tool: info.permission.as_ref().map(|p| p.tool.clone()),
                detail: asks_at_start
                    .or(why)
                    .or_else(|| info.permission.as_ref().and_then(detail))
                    .or(notified)
                    .or(answered),
                url: format!("{}/#/s/{}", page.trim_end_matches('/'), info.id),
                time: corral_actors::time::format(std::time::SystemTime::now()),
            };
            if kind == "idle" {
                for hook in &hooks {
                    outbox.queued(&app, &hook.url, &n);
                }
                let due = tokio::time::Instant::now() + IDLE_SETTLE;
                if let Some((_, old)) = settling.insert(info.id, (due, n)) {
                    settled(&app, &outbox, &hooks, &old);
                }
            } else {
                queue(&app, &outbox, &txs, &hooks, n);
            }
        }
        drop(txs);
        // Idle ones not yet due, for sessions still idle: told by the next server.
        settling
            .into_values()
            .map(|(_, n)| n)
            .filter(|n| still_idle(&app, n.session))
            .flat_map(|n| {
                hooks.iter().map(move |h| Undelivered {
                    webhook: h.url.clone(),
                    notification: n.clone(),
                })
            })
            .collect::<Vec<_>>()
    };
    drop(outbox);
    let (left, settling, ()) = tokio::join!(senders, watcher, writer);
    // What is left is handed over below (or counted as undelivered at a full stop): the
    // outbox is for a server that could not say so.
    outbox::remove(&app.data_dir).await;
    let left: Vec<Undelivered> = left.into_iter().flatten().chain(settling).collect();
    if left.is_empty() {
        return;
    }
    let handing_over = (*app.leave.borrow()).is_some_and(|l| l != crate::app::Leaving::Stop);
    let why = if handing_over {
        match hand_over(&app.data_dir, &left).await {
            Ok(()) => {
                tracing::info!(
                    count = left.len(),
                    "notify: notifications not yet delivered handed to the next server"
                );
                return;
            }
            Err(e) => format!("they could not be handed over: {e}"),
        }
    } else {
        "the server stopped".to_string()
    };
    for _ in &left {
        app.metrics.notify("undelivered");
    }
    tracing::warn!(
        count = left.len(),
        "notify: notifications not delivered: {why} (counted as undelivered)"
    );
}

/// Whether session `id` is still there and idle (an idle that waited out [`IDLE_SETTLE`]).
fn still_idle(app: &App, id: Uuid) -> bool {
    app.corral
        .sessions()
        .get(&id.to_string())
        .is_ok_and(|h| h.info().attention == Some(Attention::Idle))
}

/// Writes `left` to the data dir's [`HANDED_OVER`] (owner-only), after what is there.
async fn hand_over(dir: &std::path::Path, left: &[Undelivered]) -> std::io::Result<()> {
    let mut text = String::new();
    for u in left {
        text.push_str(&serde_json::to_string(u).map_err(std::io::Error::other)?);
        text.push('\n');
    }
    let path = dir.join(HANDED_OVER);
    tokio::task::spawn_blocking(move || {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&path)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()
    })
    .await
    .map_err(std::io::Error::other)?
}

/// Takes what the last server handed over ([`HANDED_OVER`]; the file goes). A line that does
/// not parse is logged and skipped.
async fn take_handed_over(dir: &std::path::Path) -> Vec<Undelivered> {
    let path = dir.join(HANDED_OVER);
    let text = match tokio::fs::read_to_string(&path).await {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Vec::new(),
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "notify: notifications handed over unreadable");
            return Vec::new();
        }
    };
    if let Err(e) = tokio::fs::remove_file(&path).await {
        tracing::warn!(path = %path.display(), error = %e, "notify: notifications handed over not removed (they may be sent twice)");
    }
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .filter_map(|l| match serde_json::from_str(l) {
            Ok(u) => Some(u),
            Err(e) => {
                tracing::warn!(error = %e, "notify: a notification handed over does not parse: skipped");
                None
            }
        })
        .collect()
}

/// `text` cut to [`DETAIL_MAX`] characters, its `…` included.
fn cut(text: &str) -> String {
    match text.char_indices().nth(DETAIL_MAX) {
        Some(_) => {
            // invariant: a text longer than DETAIL_MAX has a DETAIL_MAX - 1'th character.
            let (at, _) = text
                .char_indices()
                .nth(DETAIL_MAX - 1)
                .expect("longer text");
            format!("{}…", &text[..at])
        }
        None => text.to_string(),
    }
}

/// Puts `n` in every webhook's queue; a full one drops it, counted and logged.
fn queue(
    app: &App,
    outbox: &outbox::Outbox,
    txs: &[tokio::sync::mpsc::Sender<Notification>],
    hooks: &[Webhook],
    n: Notification,
) {
    for (tx, hook) in txs.iter().zip(hooks) {
        queue_one(app, outbox, tx, hook, n.clone());
    }
}

/// An idle notification that settled without being told (the agent works again, is muted or
/// gone): the outbox forgets it.
fn settled(app: &App, outbox: &outbox::Outbox, hooks: &[Webhook], n: &Notification) {
    for hook in hooks {
        outbox.done(app, &hook.url, &n.id);
    }
}

/// Puts `n` in one webhook's queue (and the outbox); a full one drops it, counted and logged.
fn queue_one(
    app: &App,
    outbox: &outbox::Outbox,
    tx: &tokio::sync::mpsc::Sender<Notification>,
    hook: &Webhook,
    n: Notification,
) {
    outbox.queued(app, &hook.url, &n);
    let id = n.id.clone();
    if tx.try_send(n).is_err() {
        outbox.done(app, &hook.url, &id);
        app.metrics.notify("dropped");
        tracing::warn!(url = %hook.shown(), "notify: this webhook's queue is full, notification dropped (counted)");
    }
}

/// Whether `url` names the unspecified address (a server bound to `0.0.0.0` or `[::]`).
fn names_no_host(url: &str) -> bool {
    let host = url.split("://").nth(1).unwrap_or(url);
    host.starts_with("0.0.0.0") || host.starts_with("[::]")
}

/// Sends `n` to `hook`, retrying with backoff; the outcome is counted.
async fn deliver(app: &App, hook: &Webhook, n: &Notification) {
    let mut delay = Duration::from_millis(500);
    for attempt in 1..=ATTEMPTS {
        match tokio::time::timeout(ATTEMPT_TIMEOUT, post(hook, n)).await {
            Ok(Ok(())) => {
                app.metrics.notify("sent");
                return;
            }
            Ok(Err(e)) => {
                tracing::warn!(url = %hook.shown(), attempt, error = %e, "notify: webhook failed")
            }
            Err(_) => tracing::warn!(url = %hook.shown(), attempt, "notify: webhook timed out"),
        }
        if attempt < ATTEMPTS {
            tokio::time::sleep(delay).await;
            delay *= 2;
        }
    }
    app.metrics.notify("failed");
}

/// One POST of `n` to `hook` (plain HTTP/1.1 over TCP, through hyper).
async fn post(hook: &Webhook, n: &Notification) -> Result<(), String> {
    let target = hook
        .target()
        .map_err(|why| format!("{} {why}", hook.shown()))?;
    let address = target.address();
    let stream = tokio::net::TcpStream::connect(&address)
        .await
        .map_err(|e| format!("connect {address}: {e}"))?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
    let (body, content_type) = if hook.format == "text" {
        (n.text(), "text/plain; charset=utf-8")
    } else {
        (
            serde_json::to_string(n).map_err(|e| e.to_string())?,
            "application/json",
        )
    };
    // ntfy opens a notification's `Click` URL when it is tapped.
    let req = hyper::Request::post(target.path)
        .header(hyper::header::HOST, target.authority)
        .header(hyper::header::CONTENT_TYPE, content_type)
        .header("click", n.url.as_str())
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| e.to_string())?;
    // The connection is driven here, next to the request: nothing outlives this call. The
    // sender is moved into the exchange, so the connection ends once the answer is read.
    let exchange = async move {
        let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
        let status = resp.status();
        // The status says whether the notification was taken; the body is read so the
        // connection ends in order, up to ANSWER_MAX (an endpoint that streams is cut there).
        if let Err(e) = Limited::new(resp.into_body(), ANSWER_MAX).collect().await {
            tracing::debug!(error = %e, "notify: the answer's body was not read whole");
        }
        if status.is_success() {
            Ok(())
        } else {
            Err(format!("answered {status}"))
        }
    };
    let (result, conn) = tokio::join!(exchange, conn);
    if let Err(e) = conn {
        tracing::debug!(error = %e, "notify: connection ended with an error");
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_detail_is_at_most_its_bound_with_its_ellipsis() {
        let exact = "é".repeat(DETAIL_MAX);
        assert_eq!(cut(&exact), exact);
        let long = cut(&"é".repeat(DETAIL_MAX + 50));
        assert_eq!(long.chars().count(), DETAIL_MAX);
        assert!(long.ends_with('…'));
    }

    #[test]
    fn a_server_bound_to_every_address_names_no_host() {
        assert!(names_no_host("http://0.0.0.0:8080"));
        assert!(names_no_host("http://[::]:8080"));
        assert!(!names_no_host("http://127.0.0.1:8080"));
        assert!(!names_no_host("https://corral.example/"));
    }
}
