//! Native: the requests of the native protocol (`/v1/ws`, docs/protocol.md) — one method per
//! operation, each checking the connection's grant before it touches a session — and the
//! output frames of native subscriptions.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::extract::ws::Message;
use corral_actors::{Item, SessionError, SessionHandle, Size, Subscription};
use futures::StreamExt;
use uuid::Uuid;

use super::pace::Wait;
use super::*;
use crate::error::ApiError;
use crate::protocol::SessionView;

/// Input for a session: keystrokes as they are, or a paste followed by Enter.
pub(super) enum Input {
    /// Bytes to write.
    Keys(Vec<u8>),
    /// A prompt: pasted (bracketed when the program asked for it), then Enter a moment later.
    Paste(String),
}

impl ConnectionState {
    /// A native JSON request.
    pub(super) async fn request(&mut self, text: &str) -> bool {
        let req: Request = match serde_json::from_str(text) {
            Ok(r) => r,
            Err(e) => {
                // Try to recover the id so the client can match the error.
                let id = serde_json::from_str::<serde_json::Value>(text)
                    .ok()
                    .and_then(|v| v.get("id").and_then(|i| i.as_u64()));
                return self
                    .error(id, ErrorCode::BadRequest, format!("malformed request: {e}"))
                    .await;
            }
        };
        let id = req.id;
        // invariant: native connections are authenticated at the upgrade.
        let grant = self.grant.clone().expect("native grant");
        match req.op {
            Op::Hello { protocol, window } => {
                if let Some(p) = protocol
                    && p != PROTOCOL_VERSION
                {
                    return self
                        .error(
                            id,
                            ErrorCode::BadRequest,
                            format!(
                                "protocol {p} not supported (server speaks {PROTOCOL_VERSION})"
                            ),
                        )
                        .await;
                }
                self.window = window.filter(|w| *w > 0);
                let max_frame = self.app.config.limits.max_frame;
                self.reply(&Reply::Hello {
                    id,
                    server: "corral".into(),
                    version: env!("CARGO_PKG_VERSION").into(),
                    protocol: PROTOCOL_VERSION,
                    max_frame,
                    features: crate::protocol::FEATURES
                        .iter()
                        .map(|f| f.to_string())
                        .collect(),
                })
                .await
            }
            Op::Ping => self.reply(&Reply::Pong { id }).await,
            Op::List => {
                let infos = self
                    .app
                    .corral
                    .sessions()
                    .list()
                    .into_iter()
                    .filter(|s| grant.can_read(s.id))
                    .collect();
                let sessions = SessionView::measure_all(infos).await;
                self.reply(&Reply::Sessions { id, sessions }).await
            }
            Op::Watch => {
                if !grant.is_admin() {
                    return self
                        .error(id, ErrorCode::Forbidden, "watch needs the admin token")
                        .await;
                }
                let (sessions, seen) = crate::watch::snapshot(&self.app).await;
                // Pushes start from what this reply holds: nothing falls between the two.
                self.watch = Some(crate::watch::stream(self.app.clone(), seen));
                self.reply(&Reply::Sessions { id, sessions }).await
            }
            Op::Tree => {
                if !grant.is_admin() {
                    return self
                        .error(id, ErrorCode::Forbidden, "tree needs the admin token")
                        .await;
                }
                match crate::introspect::tree(&self.app).await {
                    Ok(tree) => self.reply(&Reply::Tree { id, tree }).await,
                    Err(e) => self.reply(&e.reply(id)).await,
                }
            }
            Op::Spawn { spec } => {
                if !grant.is_admin() {
                    return self
                        .error(id, ErrorCode::Forbidden, "spawn needs the admin token")
                        .await;
                }
                if let Some(refused) = self.refuse_if_full(id).await {
                    return refused;
                }
                // Started now, answered when its turn comes (see `crate::in_flight`).
                let spawned = self.app.spawn(*spec);
                self.defer(id, async move { spawned.await.map(|h| h.info()) })
                    .await
            }
            Op::Stop { session, grace } => {
                self.admin_op(id, &grant, &session, |h| async move {
                    h.stop(crate::protocol::stop_grace(grace)?).await
                })
                .await
            }
            Op::Kill { session } => {
                self.admin_op(id, &grant, &session, |h| async move { h.kill().await })
                    .await
            }
            Op::Restart { session } => {
                self.admin_op(id, &grant, &session, |h| async move { h.restart().await })
                    .await
            }
            Op::Remove { session } => {
                if !grant.is_admin() {
                    return self
                        .error(id, ErrorCode::Forbidden, "remove needs the admin token")
                        .await;
                }
                if let Some(refused) = self.refuse_if_full(id).await {
                    return refused;
                }
                let removed = self.app.remove(&session);
                self.defer(id, removed).await
            }
            Op::Subscribe {
                session,
                from,
                history,
                rows,
                after,
            } => {
                self.subscribe(id, &grant, &session, from, history.then_some(rows), after)
                    .await
            }
            // Through `readable`, as a subscribe: a token for other sessions gets the same
            // refusal for a name that exists and one that does not (it cannot probe names).
            Op::Unsubscribe { session } => {
                let h = match self.readable(id, &grant, &session).await {
                    Some(h) => h,
                    None => return true,
                };
                if let Some(ch) = self
                    .channel_for(h.id())
                    .and_then(|c| self.channels.remove(&c))
                {
                    ch.abort.abort();
                    self.stats.sessions.lock().remove(h.name());
                }
                self.leave(h.id());
                self.reply(&Reply::Ok { id }).await
            }
            Op::Input {
                session,
                data,
                paste,
                more,
                written,
            } => {
                let Some(h) = self.writable(id, &grant, &session).await else {
                    return true;
                };
                if paste {
                    self.paste_part(id, &h, data, more, written).await
                } else if more || written {
                    self.error(
                        id,
                        ErrorCode::BadRequest,
                        "`more` and `written` are for a paste",
                    )
                    .await
                } else {
                    self.input(id, &h, data.into_bytes()).await
                }
            }
            Op::Resize {
                session,
                rows,
                cols,
                take,
            } => {
                let Some(h) = self.writable(id, &grant, &session).await else {
                    return true;
                };
                if rows == 0 || cols == 0 {
                    return self
                        .error(
                            id,
                            ErrorCode::BadRequest,
                            "rows and cols must be at least 1",
                        )
                        .await;
                }
                let size = Size { rows, cols };
                let resized = match take {
                    true => h.take_size(self.viewer, size),
                    false => h.resize(self.viewer, size),
                };
                match resized {
                    Ok(()) => {
                        self.touch(&h);
                        self.reply(&Reply::Ok { id }).await
                    }
                    Err(e) => self.session_error(id, e).await,
                }
            }
            Op::Ack { session, offset } => {
                let Some(h) = self.readable(id, &grant, &session).await else {
                    return true;
                };
                match self.channel_for(h.id()).and_then(|c| self.channels.get(&c)) {
                    Some(ch) => {
                        ch.credit.acked.fetch_max(offset, Ordering::AcqRel);
                        ch.credit.notify.notify_one();
                        true
                    }
                    // Late: an acknowledgement sent before the client's unsubscribe reached us
                    // (a page leaving a busy terminal). Nothing to pace any more; no error.
                    None => true,
                }
            }
            Op::Events {
                session,
                after,
                limit,
            } => {
                let Some(h) = self.readable(id, &grant, &session).await else {
                    return true;
                };
                let Some(persist) = self.app.corral.persist().cloned() else {
                    return self
                        .error(
                            id,
                            ErrorCode::Conflict,
                            "event history needs persistence (this server keeps none)",
                        )
                        .await;
                };
                let limit = limit
                    .unwrap_or(MAX_EVENTS_PER_REPLY)
                    .min(MAX_EVENTS_PER_REPLY);
                match persist.events(h.id(), after.unwrap_or(0), limit).await {
                    Ok(events) => {
                        self.reply(&Reply::Events {
                            id,
                            session: h.id().to_string(),
                            events,
                        })
                        .await
                    }
                    Err(e) => self.reply(&ApiError::from(e).reply(id)).await,
                }
            }
            Op::Snapshot {
                session,
                history,
                rows,
            } => {
                let Some(h) = self.readable(id, &grant, &session).await else {
                    return true;
                };
                let channel = self.channel_for(h.id()).unwrap_or(0);
                let snapshot = match history {
                    true => h.snapshot_with_history(rows).await,
                    false => h.snapshot().await,
                };
                match snapshot {
                    Ok(s) => {
                        let frame = encode_binary(
                            Header {
                                kind: kind::SNAPSHOT,
                                channel,
                                offset: s.offset,
                            },
                            &s.bytes,
                        );
                        self.send(Message::Binary(frame.into())).await
                    }
                    Err(e) => self.session_error(id, e).await,
                }
            }
        }
    }

    pub(super) async fn lookup(&mut self, id: Option<u64>, key: &str) -> Option<SessionHandle> {
        match self.app.corral.sessions().get(key) {
            Ok(h) => Some(h),
            Err(e) => {
                // The result only matters for the connection, which stays open.
                let alive = self.session_error(id, e).await;
                if !alive {
                    tracing::debug!("client gone while answering");
                }
                None
            }
        }
    }

    /// The session if the grant may watch it; otherwise the error is answered and None.
    pub(super) async fn readable(
        &mut self,
        id: Option<u64>,
        grant: &Grant,
        key: &str,
    ) -> Option<SessionHandle> {
        self.permitted(
            id,
            key,
            grant.is_admin(),
            |s| grant.can_read(s),
            "token does not allow this session",
        )
        .await
    }

    /// The session if the grant may drive it; otherwise the error is answered and None.
    pub(super) async fn writable(
        &mut self,
        id: Option<u64>,
        grant: &Grant,
        key: &str,
    ) -> Option<SessionHandle> {
        self.permitted(
            id,
            key,
            grant.is_admin(),
            |s| grant.can_write(s),
            "token does not allow input to this session",
        )
        .await
    }

    /// The session `key` if `allowed`; otherwise the error is answered and None. A token for
    /// other sessions (`admin` false) is refused the same way for a session that does not
    /// exist: it cannot probe which names do.
    pub(super) async fn permitted(
        &mut self,
        id: Option<u64>,
        key: &str,
        admin: bool,
        allowed: impl FnOnce(Uuid) -> bool,
        refusal: &'static str,
    ) -> Option<SessionHandle> {
        let found = match self.app.corral.sessions().get(key) {
            Err(SessionError::NotFound(_)) if !admin => None,
            Err(e) => {
                if !self.session_error(id, e).await {
                    tracing::debug!("client gone while answering");
                }
                return None;
            }
            Ok(h) => Some(h),
        };
        if let Some(h) = found.filter(|h| allowed(h.id())) {
            return Some(h);
        }
        if !self.error(id, ErrorCode::Forbidden, refusal).await {
            tracing::debug!("client gone while answering");
        }
        None
    }

    pub(super) async fn admin_op<F, Fut>(
        &mut self,
        id: Option<u64>,
        grant: &Grant,
        key: &str,
        op: F,
    ) -> bool
    where
        F: FnOnce(SessionHandle) -> Fut,
        Fut: std::future::Future<Output = Result<corral_actors::SessionInfo, SessionError>>
            + Send
            + 'static,
    {
        if !grant.is_admin() {
            return self
                .error(
                    id,
                    ErrorCode::Forbidden,
                    "this operation needs the admin token",
                )
                .await;
        }
        let Some(h) = self.lookup(id, key).await else {
            return true;
        };
        self.defer(id, op(h)).await
    }

    /// Runs a slow session operation concurrently; its reply is sent when it completes.
    /// With [`MAX_PENDING`] requests in flight, refuses this one (the answer to return); to be
    /// asked before a request that starts at once (a spawn, a removal) is started.
    async fn refuse_if_full(&mut self, id: Option<u64>) -> Option<bool> {
        if self.pending.len() < MAX_PENDING {
            return None;
        }
        Some(
            self.error(
                id,
                ErrorCode::Conflict,
                format!("too many requests in flight ({MAX_PENDING})"),
            )
            .await,
        )
    }

    pub(super) async fn defer<Fut>(&mut self, id: Option<u64>, op: Fut) -> bool
    where
        Fut: std::future::Future<Output = Result<corral_actors::SessionInfo, SessionError>>
            + Send
            + 'static,
    {
        if let Some(refused) = self.refuse_if_full(id).await {
            return refused;
        }
        self.pending.push(Box::pin(async move {
            match op.await {
                Ok(info) => Reply::Session {
                    id,
                    session: info.into(),
                },
                Err(e) => error_reply(id, &e),
            }
        }));
        true
    }

    pub(super) async fn session_error(&mut self, id: Option<u64>, e: SessionError) -> bool {
        self.reply(&error_reply(id, &e)).await
    }

    pub(super) async fn input(
        &mut self,
        id: Option<u64>,
        h: &SessionHandle,
        bytes: Vec<u8>,
    ) -> bool {
        self.write_input(id, h, &mut Input::Keys(bytes)).await
    }

    /// Input under the limits: over the byte rate or into a full queue it waits (the message
    /// is held, the socket not read, and `self.wait` set); refused only for a reason the
    /// client must hear. A paste's text is left in `input` (keys are taken).
    pub(super) async fn write_input(
        &mut self,
        id: Option<u64>,
        h: &SessionHandle,
        input: &mut Input,
    ) -> bool {
        let n = match &*input {
            Input::Keys(bytes) => bytes.len(),
            // The paste and its Enter.
            Input::Paste(text) => text.len() + 1,
        };
        // What the client sent of it (a paste's Enter is the server's).
        let sent = match &*input {
            Input::Keys(bytes) => bytes.len(),
            Input::Paste(text) => text.len(),
        };
        let mut passed = self.passed;
        if !passed.bytes {
            if let Some(n32) = NonZeroU32::new(n.min(u32::MAX as usize) as u32) {
                match self.byte_limit.check_n(n32) {
                    Ok(Ok(())) => {}
                    Ok(Err(not_until)) => {
                        // Over the rate: this input waits its turn (the socket is not read).
                        let delay = not_until
                            .wait_time_from(governor::clock::Clock::now(self.byte_limit.clock()));
                        self.app.metrics.rate_limited.inc();
                        self.wait = Some(Wait { delay, passed });
                        return true;
                    }
                    Err(_) => {
                        // Larger than the whole burst: it could never pass. The frame limit
                        // is below the default burst; only a config can make this happen.
                        return self
                            .error(
                                id,
                                ErrorCode::TooLarge,
                                format!(
                                    "{n} input bytes exceed the burst of the configured \
                                     input_bytes_per_sec; nothing was written"
                                ),
                            )
                            .await;
                    }
                }
            }
            passed.bytes = true;
        }
        let written = match input {
            Input::Keys(bytes) => h.input(self.viewer, std::mem::take(bytes)),
            // Queued: told when it is written, for whoever asked (`paste_part`).
            Input::Paste(text) => h
                .paste(self.viewer, text)
                .await
                .map(|entered| self.entered = Some(entered)),
        };
        match written {
            Ok(()) => {
                self.touch(h);
                self.app.metrics.bytes_in.inc_by(n as u64);
                self.stats.bytes_in.fetch_add(n as u64, Ordering::Relaxed);
                self.taken += sent as u64;
                // Input is acknowledged only by errors: no reply traffic per keystroke.
                true
            }
            Err(SessionError::InputFull { .. }) => {
                // The process is not reading: wait for room instead of dropping the input.
                self.wait = Some(Wait {
                    delay: super::pace::QUEUE_RETRY,
                    passed,
                });
                true
            }
            Err(e) => self.session_error(id, e).await,
        }
    }

    /// Binary INPUT frame: bytes for the session of a subscription channel.
    pub(super) async fn binary_input(&mut self, frame: &[u8]) -> bool {
        let Some((h, payload)) = decode_binary(frame) else {
            return self
                .error(
                    None,
                    ErrorCode::BadRequest,
                    "binary frame shorter than its 13-byte header",
                )
                .await;
        };
        if h.kind != kind::INPUT {
            return self
                .error(
                    None,
                    ErrorCode::BadRequest,
                    format!("binary frame kind {} is not input (3)", h.kind),
                )
                .await;
        }
        let Some(session) = self.channels.get(&h.channel).map(|c| c.session.clone()) else {
            return self
                .error(
                    None,
                    ErrorCode::BadRequest,
                    format!("no subscription on channel {}", h.channel),
                )
                .await;
        };
        // invariant: native connections are authenticated at the upgrade.
        let grant = self.grant.clone().expect("native grant");
        if !grant.can_write(session.id()) {
            return self
                .error(
                    None,
                    ErrorCode::Forbidden,
                    "token does not allow input to this session",
                )
                .await;
        }
        self.input(None, &session, payload.to_vec()).await
    }

    pub(super) async fn subscribe(
        &mut self,
        id: Option<u64>,
        grant: &Grant,
        key: &str,
        from: Option<u64>,
        // With the history, for a terminal of this many rows (None inside: the session's).
        history: Option<Option<u16>>,
        // The events after this sequence number first (see `Op::Subscribe`).
        after: Option<u64>,
    ) -> bool {
        let Some(h) = self.readable(id, grant, key).await else {
            return true;
        };
        let existing = self.channel_for(h.id());
        if self.channels.len() >= MAX_SUBSCRIPTIONS && existing.is_none() {
            return self
                .error(
                    id,
                    ErrorCode::Conflict,
                    format!("subscription limit reached ({MAX_SUBSCRIPTIONS})"),
                )
                .await;
        }
        if let Some(old) = existing.and_then(|c| self.channels.remove(&c)) {
            old.abort.abort();
        }
        // Without an offset: the current screen, then live bytes from the offset it matches.
        let (start, snapshot) = match from {
            Some(from) => (Some(from), None),
            None => match match history {
                Some(rows) => h.snapshot_with_history(rows).await,
                None => h.snapshot().await,
            } {
                Ok(s) => (Some(s.offset), Some(s)),
                Err(_) => (None, None), // pipe sessions: live from now
            },
        };
        let sub = match after {
            None => h.subscribe(start),
            Some(after) => h.subscribe_after(start, after).await,
        };
        let sub = match sub {
            Ok(s) => s,
            Err(e) => return self.session_error(id, e).await,
        };
        let offset = sub.cursor();
        let last_event = sub.last_event();
        let channel = self.add_subscription(&h, sub, self.window);
        let ok = self
            .reply(&Reply::Subscribed {
                id,
                session: h.id().to_string(),
                channel,
                offset,
                snapshot: snapshot.is_some(),
                approximate: snapshot.as_ref().is_some_and(|s| s.approximate),
                state: h.info().state,
                size: snapshot
                    .as_ref()
                    .map_or(h.info().size, |s| corral_actors::Size {
                        rows: s.rows,
                        cols: s.cols,
                    }),
                last_event,
            })
            .await;
        match snapshot {
            Some(s) if ok => {
                let frame = encode_binary(
                    Header {
                        kind: kind::SNAPSHOT,
                        channel,
                        offset: s.offset,
                    },
                    &s.bytes,
                );
                self.send(Message::Binary(frame.into())).await
            }
            _ => ok,
        }
    }

    /// The channel of this connection's subscription to `session`, if any.
    pub(super) fn channel_for(&self, session: Uuid) -> Option<u32> {
        self.channels
            .iter()
            .find(|(_, c)| c.session.id() == session)
            .map(|(n, _)| *n)
    }

    /// Registers a subscription's stream under a fresh channel number; returns the channel.
    pub(super) fn add_subscription(
        &mut self,
        session: &SessionHandle,
        mut sub: Subscription,
        window: Option<u64>,
    ) -> u32 {
        // Output arrives with room for the frame header in front: a native header, or ttyd's
        // one command byte (see `outgoing`).
        sub.set_headroom(if self.ttyd.is_some() { 1 } else { HEADER_LEN });
        self.next_channel += 1;
        let channel = self.next_channel;
        let credit = Arc::new(Credit {
            acked: AtomicU64::new(sub.cursor()),
            notify: Notify::new(),
        });
        let (abort, reg) = AbortHandle::new_pair();
        self.subs
            .push(Abortable::new(paced(channel, sub, credit.clone(), window), reg).boxed());
        self.channels.insert(
            channel,
            Channel {
                session: session.clone(),
                abort,
                credit,
            },
        );
        self.stats
            .sessions
            .lock()
            .insert(session.name().to_string());
        channel
    }

    /// One item of a subscription, to the client.
    pub(super) async fn outgoing(&mut self, channel: u32, item: Item) -> bool {
        let Some(session) = self.channels.get(&channel).map(|c| c.session.id()) else {
            return true; // unsubscribed meanwhile
        };
        if self.ttyd.is_some() {
            return self.ttyd_outgoing(channel, item).await;
        }
        match item {
            // The subscription reserved HEADER_LEN bytes in front (see add_subscription).
            Item::Output {
                offset,
                bytes: mut frame,
            } => {
                if frame.len() <= HEADER_LEN {
                    return true;
                }
                let n = (frame.len() - HEADER_LEN) as u64;
                self.app.metrics.bytes_out.inc_by(n);
                self.stats.bytes_out.fetch_add(n, Ordering::Relaxed);
                write_header(
                    Header {
                        kind: kind::OUTPUT,
                        channel,
                        offset,
                    },
                    &mut frame,
                );
                self.send(Message::Binary(frame.into())).await
            }
            Item::Lagged(l) => {
                self.app.metrics.lagged.inc();
                self.stats.lags.fetch_add(1, Ordering::Relaxed);
                self.reply(&Reply::Lagged {
                    session: session.to_string(),
                    channel,
                    from: l.from,
                    to: l.to,
                })
                .await
            }
            Item::Event(event) => self.reply(&Reply::Event { channel, event }).await,
            Item::EventsLagged(missed) => {
                self.reply(&Reply::EventsLagged {
                    session: session.to_string(),
                    missed,
                })
                .await
            }
            Item::Closed => {
                if let Some(ch) = self.channels.remove(&channel) {
                    self.stats.sessions.lock().remove(ch.session.name());
                }
                self.reply(&Reply::Closed {
                    session: session.to_string(),
                    channel,
                })
                .await
            }
        }
    }
}

/// The error reply for a failed session operation: the same code an HTTP client gets for the
/// same failure (the one mapping is in `crate::error`).
pub(super) fn error_reply(id: Option<u64>, e: &SessionError) -> Reply {
    ApiError::from(e.clone()).reply(id)
}

/// A subscription paced by its ack credit.
pub(super) fn paced(
    channel: u32,
    sub: Subscription,
    credit: Arc<Credit>,
    window: Option<u64>,
) -> impl futures::Stream<Item = (u32, Item)> + Send + 'static {
    async_stream(channel, sub, credit, window)
}
