//! Connection: one actor per WebSocket connection (a temporary child of the gateway's clients
//! supervisor), speaking the native protocol or ttyd's.
//!
//! Output never queues in the server per client: each subscription pulls from the session's Ring
//! at the pace the socket accepts (send backpressure) and, with `hello {window}`, at the pace the
//! client acknowledges. A client that falls behind the Ring's retained window gets an explicit
//! `lagged {from, to}` and continues at the oldest retained byte. So a stalled client costs the
//! server nothing but its socket buffers, and never slows the session or other clients.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use corral_actors::{EventKind, Item, SessionError, SessionHandle, Size, Subscription};
use futures::future::BoxFuture;
use futures::stream::{
    AbortHandle, Abortable, BoxStream, FuturesUnordered, SelectAll, SplitSink, SplitStream,
};
use futures::{SinkExt, StreamExt};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::sync::Notify;
use uuid::Uuid;

use crate::app::App;
use crate::auth::Grant;
use crate::error::ApiError;
use crate::protocol::SessionView;
use crate::protocol::{
    ErrorCode, HEADER_LEN, Header, MAX_EVENTS_PER_REPLY, Op, PROTOCOL_VERSION, Reply, Request,
    decode_binary, encode_binary, kind, write_header,
};

/// Largest output chunk per binary frame (small chunks coalesce up to this from the Ring).
const MAX_CHUNK: usize = 64 * 1024;
/// Bound on subscriptions per connection.
pub const MAX_SUBSCRIPTIONS: usize = 256;
/// Bound on slow requests in flight per connection.
pub const MAX_PENDING: usize = 1024;

/// Which protocol a connection speaks.
pub enum Dialect {
    /// `/v1/ws`, authenticated at the upgrade.
    Native {
        /// The grant of the token presented at the upgrade.
        grant: Grant,
    },
    /// `/ttyd/{session}/ws`: the first frame carries the token.
    Ttyd {
        /// The session, resolved at the upgrade.
        session: SessionHandle,
    },
}

/// Arguments of a Connection.
pub struct ConnectionArgs {
    /// The upgraded socket.
    pub socket: WebSocket,
    /// Protocol.
    pub dialect: Dialect,
    /// Shared server state.
    pub app: Arc<App>,
}

/// The connection actor.
pub struct Connection;

/// Connection messages.
pub enum ConnectionMsg {
    /// Internal: handle the next incoming frame or outgoing item.
    Pump,
}

/// Flow-control credit of one subscription (ack mode).
struct Credit {
    /// Next offset the client expects (everything before it is acknowledged).
    acked: AtomicU64,
    /// Woken on every ack.
    notify: Notify,
}

/// One subscription of this connection.
struct Channel {
    /// The session.
    session: SessionHandle,
    /// Stops its stream on unsubscribe.
    abort: AbortHandle,
    /// Ack credit.
    credit: Arc<Credit>,
}

/// Connection state; dropping it closes the socket and ends every subscription.
pub struct ConnectionState {
    /// Outgoing half.
    sink: SplitSink<WebSocket, Message>,
    /// Incoming half.
    stream: SplitStream<WebSocket>,
    /// Output and events of every subscription, merged.
    subs: SelectAll<BoxStream<'static, (u32, Item)>>,
    /// Subscriptions by channel number (the hot path looks them up per output frame; the
    /// rare lookups by session scan, see `channel_for`).
    channels: HashMap<u32, Channel>,
    /// Last channel number used.
    next_channel: u32,
    /// Ack window (None: socket backpressure only).
    window: Option<u64>,
    /// Token grant (None until a ttyd client authenticates).
    grant: Option<Grant>,
    /// ttyd session, if this is a ttyd connection.
    ttyd: Option<SessionHandle>,
    /// ttyd pause ('2') / resume ('3').
    paused: bool,
    /// This connection's viewer id (resize policy).
    viewer: u64,
    /// Messages per second.
    msg_limit: DefaultDirectRateLimiter,
    /// Input bytes per second.
    byte_limit: DefaultDirectRateLimiter,
    /// Server shutdown flag.
    shutdown: tokio::sync::watch::Receiver<bool>,
    /// Whether a close frame was sent already.
    closed: bool,
    /// Slow requests (spawn, stop, kill, restart, remove) in flight: they run concurrently so a
    /// stop waiting out a 5 s grace holds up neither input nor other requests.
    pending: FuturesUnordered<BoxFuture<'static, Reply>>,
    /// The live session list, once the client asked to watch it.
    watch: Option<BoxStream<'static, Vec<Reply>>>,
    /// Shared server state.
    app: Arc<App>,
}

impl Drop for ConnectionState {
    fn drop(&mut self) {
        for ch in self.channels.values() {
            ch.abort.abort();
        }
        self.app.metrics.clients.dec();
    }
}

fn nz(n: u32) -> NonZeroU32 {
    NonZeroU32::new(n.max(1)).unwrap_or(NonZeroU32::MIN)
}

impl Actor for Connection {
    type Msg = ConnectionMsg;
    type State = ConnectionState;
    type Arguments = ConnectionArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<ConnectionMsg>,
        args: ConnectionArgs,
    ) -> Result<ConnectionState, ActorProcessingErr> {
        let (sink, stream) = args.socket.split();
        let limits = &args.app.config.limits;
        let (grant, ttyd) = match args.dialect {
            Dialect::Native { grant } => (Some(grant), None),
            Dialect::Ttyd { session } => (None, Some(session)),
        };
        args.app.metrics.clients.inc();
        let state = ConnectionState {
            sink,
            stream,
            subs: SelectAll::new(),
            channels: HashMap::new(),
            next_channel: 0,
            window: None,
            grant,
            ttyd,
            paused: false,
            viewer: args.app.next_viewer.fetch_add(1, Ordering::Relaxed),
            shutdown: args.app.shutdown.subscribe(),
            closed: false,
            pending: FuturesUnordered::new(),
            watch: None,
            msg_limit: RateLimiter::direct(
                Quota::per_second(nz(limits.messages_per_sec))
                    .allow_burst(nz(limits.messages_per_sec.saturating_mul(2))),
            ),
            byte_limit: RateLimiter::direct(
                Quota::per_second(nz(limits.input_bytes_per_sec))
                    .allow_burst(nz(limits.input_bytes_per_sec.saturating_mul(2))),
            ),
            app: args.app,
        };
        myself.send_message(ConnectionMsg::Pump)?;
        Ok(state)
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<ConnectionMsg>,
        st: &mut ConnectionState,
    ) -> Result<(), ActorProcessingErr> {
        // A stop can arrive between two Pump handlers (ractor serves it first), before the
        // shutdown watch was seen: say goodbye here then, bounded in time.
        let shutting_down = *st.shutdown.borrow();
        if shutting_down
            && !st.closed
            && tokio::time::timeout(
                Duration::from_secs(1),
                st.close(1001, "server shutting down"),
            )
            .await
            .is_err()
        {
            tracing::debug!("close frame not sent in time");
        }
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<ConnectionMsg>,
        _msg: ConnectionMsg,
        st: &mut ConnectionState,
    ) -> Result<(), ActorProcessingErr> {
        let mut shutdown = st.shutdown.clone();
        let keep_going = tokio::select! {
            _ = async move { shutdown.wait_for(|down| *down).await.is_ok() } => {
                st.close(1001, "server shutting down").await
            }
            frame = st.stream.next() => st.incoming(frame).await,
            Some(reply) = st.pending.next(), if !st.pending.is_empty() => st.reply(&reply).await,
            pushes = next_watch(&mut st.watch), if st.watch.is_some() => match pushes {
                Some(pushes) => st.replies(&pushes).await,
                None => {
                    st.watch = None;
                    true
                }
            },
            Some((channel, item)) = st.subs.next(), if !st.subs.is_empty() && !st.paused => {
                st.outgoing(channel, item).await
            }
        };
        if keep_going {
            myself.send_message(ConnectionMsg::Pump)?;
        } else {
            myself.stop(Some("connection closed".into()));
        }
        Ok(())
    }
}

/// The next pushes of a watch (pending forever without one; the select guards on it).
async fn next_watch(watch: &mut Option<BoxStream<'static, Vec<Reply>>>) -> Option<Vec<Reply>> {
    match watch {
        Some(w) => w.next().await,
        None => std::future::pending().await,
    }
}

/// The pacing loop as a stream.
fn async_stream(
    channel: u32,
    sub: Subscription,
    credit: Arc<Credit>,
    window: Option<u64>,
) -> impl futures::Stream<Item = (u32, Item)> + Send + 'static {
    futures::stream::unfold((sub, false), move |(mut sub, done)| {
        let credit = credit.clone();
        async move {
            if done {
                return None;
            }
            if let Some(window) = window {
                loop {
                    let notified = credit.notify.notified();
                    if sub
                        .cursor()
                        .saturating_sub(credit.acked.load(Ordering::Acquire))
                        < window
                    {
                        break;
                    }
                    notified.await;
                }
            }
            let item = sub.next(MAX_CHUNK).await;
            let done = matches!(item, Item::Closed);
            Some(((channel, item), (sub, done)))
        }
    })
}

impl ConnectionState {
    /// Sends several replies in order. Returns false if the socket is gone.
    async fn replies(&mut self, replies: &[Reply]) -> bool {
        for r in replies {
            if !self.reply(r).await {
                return false;
            }
        }
        true
    }

    /// Sends a JSON reply. Returns false if the socket is gone.
    async fn reply(&mut self, reply: &Reply) -> bool {
        if let Reply::Error { code, message, .. } = reply {
            self.app.metrics.reject(&format!("{code:?}").to_lowercase());
            tracing::debug!(?code, %message, "request refused");
        }
        let text = match serde_json::to_string(reply) {
            Ok(t) => t,
            Err(e) => {
                tracing::error!(error = %e, "reply not serializable");
                return true;
            }
        };
        self.sink.send(Message::Text(text.into())).await.is_ok()
    }

    async fn error(
        &mut self,
        id: Option<u64>,
        code: ErrorCode,
        message: impl Into<String>,
    ) -> bool {
        self.reply(&Reply::Error {
            id,
            code,
            message: message.into(),
        })
        .await
    }

    async fn close(&mut self, code: u16, reason: &'static str) -> bool {
        self.closed = true;
        if let Err(e) = self
            .sink
            .send(Message::Close(Some(CloseFrame {
                code,
                reason: Utf8Bytes::from_static(reason),
            })))
            .await
        {
            tracing::debug!(error = %e, "close frame not delivered");
        }
        false
    }

    /// One incoming frame. Returns false when the connection is over.
    async fn incoming(&mut self, frame: Option<Result<Message, axum::Error>>) -> bool {
        let msg = match frame {
            None => return false,
            Some(Err(e)) => {
                // tungstenite refuses oversize frames and invalid UTF-8 before we see them; say
                // why in the close frame.
                let text = e.to_string();
                tracing::debug!(error = %text, "websocket receive error");
                return if text.contains("too long")
                    || text.contains("Space limit")
                    || text.contains("size")
                {
                    self.app.metrics.reject("too_large");
                    self.close(1009, "frame too large").await
                } else if text.to_lowercase().contains("utf") {
                    self.app.metrics.reject("bad_utf8");
                    self.close(1007, "invalid UTF-8 in a text frame").await
                } else {
                    self.close(1002, "protocol error").await
                };
            }
            Some(Ok(m)) => m,
        };
        if self.msg_limit.check().is_err() {
            self.app.metrics.rate_limited.inc();
            return self
                .error(
                    None,
                    ErrorCode::RateLimited,
                    "too many messages per second; message dropped",
                )
                .await;
        }
        match (&self.ttyd, msg) {
            (_, Message::Close(_)) => false,
            (_, Message::Ping(_) | Message::Pong(_)) => true,
            (Some(_), Message::Text(t)) => self.ttyd_frame(t.as_bytes()).await,
            (Some(_), Message::Binary(b)) => self.ttyd_frame(&b).await,
            (None, Message::Text(t)) => self.request(t.as_str()).await,
            (None, Message::Binary(b)) => self.binary_input(&b).await,
        }
    }

    /// A native JSON request.
    async fn request(&mut self, text: &str) -> bool {
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
                match self.app.corral.tree().await {
                    Ok(tree) => self.reply(&Reply::Tree { id, tree }).await,
                    Err(e) => self.error(id, ErrorCode::Internal, e.to_string()).await,
                }
            }
            Op::Spawn { spec } => {
                if !grant.is_admin() {
                    return self
                        .error(id, ErrorCode::Forbidden, "spawn needs the admin token")
                        .await;
                }
                let app = self.app.clone();
                self.defer(id, async move { app.spawn(*spec).await.map(|h| h.info()) })
                    .await
            }
            Op::Stop { session, grace } => {
                self.admin_op(id, &grant, &session, |h| async move {
                    let grace = grace.map(|g| Duration::from_secs_f64(g.clamp(0.0, 3600.0)));
                    h.stop(grace).await
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
                let app = self.app.clone();
                self.defer(id, async move { app.remove(&session).await })
                    .await
            }
            Op::Subscribe { session, from } => self.subscribe(id, &grant, &session, from).await,
            Op::Unsubscribe { session } => {
                let h = match self.lookup(id, &session).await {
                    Some(h) => h,
                    None => return true,
                };
                if let Some(ch) = self
                    .channel_for(h.id())
                    .and_then(|c| self.channels.remove(&c))
                {
                    ch.abort.abort();
                }
                self.reply(&Reply::Ok { id }).await
            }
            Op::Input {
                session,
                data,
                paste,
            } => {
                let Some(h) = self.writable(id, &grant, &session).await else {
                    return true;
                };
                let bytes = if paste {
                    // Asked of the screen, which has caught up with the output so far.
                    let bracketed = h.snapshot().await.is_ok_and(|s| s.bracketed_paste);
                    if bracketed {
                        format!("\x1b[200~{data}\x1b[201~\r")
                    } else {
                        format!("{data}\r")
                    }
                } else {
                    data
                };
                self.input(id, &h, bytes.into_bytes()).await
            }
            Op::Resize {
                session,
                rows,
                cols,
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
                match h.resize(self.viewer, Size { rows, cols }) {
                    Ok(()) => self.reply(&Reply::Ok { id }).await,
                    Err(e) => self.session_error(id, e).await,
                }
            }
            Op::Ack { session, offset } => {
                let Some(h) = self.lookup(id, &session).await else {
                    return true;
                };
                match self.channel_for(h.id()).and_then(|c| self.channels.get(&c)) {
                    Some(ch) => {
                        ch.credit.acked.fetch_max(offset, Ordering::AcqRel);
                        ch.credit.notify.notify_one();
                        true
                    }
                    None => {
                        self.error(
                            id,
                            ErrorCode::BadRequest,
                            "ack for a session not subscribed",
                        )
                        .await
                    }
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
                    .clamp(1, MAX_EVENTS_PER_REPLY);
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
            Op::Snapshot { session } => {
                let Some(h) = self.readable(id, &grant, &session).await else {
                    return true;
                };
                let channel = self.channel_for(h.id()).unwrap_or(0);
                match h.snapshot().await {
                    Ok(s) => {
                        let frame = encode_binary(
                            Header {
                                kind: kind::SNAPSHOT,
                                channel,
                                offset: s.offset,
                            },
                            &s.bytes,
                        );
                        self.sink.send(Message::Binary(frame.into())).await.is_ok()
                    }
                    Err(e) => self.session_error(id, e).await,
                }
            }
        }
    }

    async fn lookup(&mut self, id: Option<u64>, key: &str) -> Option<SessionHandle> {
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
    async fn readable(
        &mut self,
        id: Option<u64>,
        grant: &Grant,
        key: &str,
    ) -> Option<SessionHandle> {
        self.permitted(
            id,
            key,
            |s| grant.can_read(s),
            "token does not allow this session",
        )
        .await
    }

    /// The session if the grant may drive it; otherwise the error is answered and None.
    async fn writable(
        &mut self,
        id: Option<u64>,
        grant: &Grant,
        key: &str,
    ) -> Option<SessionHandle> {
        self.permitted(
            id,
            key,
            |s| grant.can_write(s),
            "token does not allow input to this session",
        )
        .await
    }

    async fn permitted(
        &mut self,
        id: Option<u64>,
        key: &str,
        allowed: impl FnOnce(Uuid) -> bool,
        refusal: &'static str,
    ) -> Option<SessionHandle> {
        let h = self.lookup(id, key).await?;
        if allowed(h.id()) {
            return Some(h);
        }
        if !self.error(id, ErrorCode::Forbidden, refusal).await {
            tracing::debug!("client gone while answering");
        }
        None
    }

    async fn admin_op<F, Fut>(&mut self, id: Option<u64>, grant: &Grant, key: &str, op: F) -> bool
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
    async fn defer<Fut>(&mut self, id: Option<u64>, op: Fut) -> bool
    where
        Fut: std::future::Future<Output = Result<corral_actors::SessionInfo, SessionError>>
            + Send
            + 'static,
    {
        if self.pending.len() >= MAX_PENDING {
            return self
                .error(
                    id,
                    ErrorCode::Conflict,
                    format!("too many requests in flight ({MAX_PENDING})"),
                )
                .await;
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

    async fn session_error(&mut self, id: Option<u64>, e: SessionError) -> bool {
        self.reply(&error_reply(id, &e)).await
    }

    async fn input(&mut self, id: Option<u64>, h: &SessionHandle, bytes: Vec<u8>) -> bool {
        let n = bytes.len();
        if let Some(n32) = NonZeroU32::new(n.min(u32::MAX as usize) as u32)
            && self
                .byte_limit
                .check_n(n32)
                .map(|r| r.is_err())
                .unwrap_or(true)
        {
            self.app.metrics.rate_limited.inc();
            return self
                .error(
                    id,
                    ErrorCode::RateLimited,
                    format!("input rate limit exceeded; {n} bytes dropped"),
                )
                .await;
        }
        match h.input(self.viewer, bytes) {
            Ok(()) => {
                self.app.metrics.bytes_in.inc_by(n as u64);
                // Input is acknowledged only by errors: no reply traffic per keystroke.
                true
            }
            Err(e) => self.session_error(id, e).await,
        }
    }

    /// Binary INPUT frame: bytes for the session of a subscription channel.
    async fn binary_input(&mut self, frame: &[u8]) -> bool {
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

    async fn subscribe(
        &mut self,
        id: Option<u64>,
        grant: &Grant,
        key: &str,
        from: Option<u64>,
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
            None => match h.snapshot().await {
                Ok(s) => (Some(s.offset), Some(s)),
                Err(_) => (None, None), // pipe sessions: live from now
            },
        };
        let sub = match h.subscribe(start) {
            Ok(s) => s,
            Err(e) => return self.session_error(id, e).await,
        };
        let offset = sub.cursor();
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
                self.sink.send(Message::Binary(frame.into())).await.is_ok()
            }
            _ => ok,
        }
    }

    /// The channel of this connection's subscription to `session`, if any.
    fn channel_for(&self, session: Uuid) -> Option<u32> {
        self.channels
            .iter()
            .find(|(_, c)| c.session.id() == session)
            .map(|(n, _)| *n)
    }

    /// Registers a subscription's stream under a fresh channel number; returns the channel.
    fn add_subscription(
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
        channel
    }

    /// One item of a subscription, to the client.
    async fn outgoing(&mut self, channel: u32, item: Item) -> bool {
        let Some(session) = self.channels.get(&channel).map(|c| c.session.id()) else {
            return true; // unsubscribed meanwhile
        };
        if self.ttyd.is_some() {
            return self.ttyd_outgoing(item).await;
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
                self.app
                    .metrics
                    .bytes_out
                    .inc_by((frame.len() - HEADER_LEN) as u64);
                write_header(
                    Header {
                        kind: kind::OUTPUT,
                        channel,
                        offset,
                    },
                    &mut frame,
                );
                self.sink.send(Message::Binary(frame.into())).await.is_ok()
            }
            Item::Lagged(l) => {
                self.app.metrics.lagged.inc();
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
                self.channels.remove(&channel);
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
fn error_reply(id: Option<u64>, e: &SessionError) -> Reply {
    ApiError::from(e.clone()).reply(id)
}

/// A subscription paced by its ack credit.
fn paced(
    channel: u32,
    sub: Subscription,
    credit: Arc<Credit>,
    window: Option<u64>,
) -> impl futures::Stream<Item = (u32, Item)> + Send + 'static {
    async_stream(channel, sub, credit, window)
}

/// The ttyd dialect (https://github.com/tsl0922/ttyd protocol): first frame
/// `{"AuthToken","columns","rows"}`, then '0'+input, '1'+resize JSON, '2' pause, '3' resume;
/// server sends '0'+output, '1'+title, '2'+preferences.
impl ConnectionState {
    async fn ttyd_frame(&mut self, data: &[u8]) -> bool {
        // invariant: ttyd_frame is only called on ttyd connections.
        let session = self.ttyd.clone().expect("ttyd session");
        if self.grant.is_none() {
            return self.ttyd_auth(&session, data).await;
        }
        let Some(frame) = crate::ttyd::parse_frame(data) else {
            return true;
        };
        let can_write = self
            .grant
            .as_ref()
            .is_some_and(|g| g.can_write(session.id()));
        match frame {
            crate::ttyd::Frame::Input(keys) => {
                if !can_write {
                    self.app.metrics.reject("forbidden");
                    return true; // ttyd has no error channel: read-only viewers' keys are ignored
                }
                self.input(None, &session, keys.to_vec()).await
            }
            crate::ttyd::Frame::Resize(size) => {
                if can_write && let Err(e) = session.resize(self.viewer, size) {
                    tracing::debug!(error = %e, "ttyd resize not applied");
                }
                true
            }
            crate::ttyd::Frame::Pause => {
                self.paused = true;
                true
            }
            crate::ttyd::Frame::Resume => {
                self.paused = false;
                true
            }
            crate::ttyd::Frame::Bad(why) => {
                tracing::debug!(why, "ttyd frame ignored");
                self.app.metrics.reject("bad_request");
                true
            }
        }
    }

    async fn ttyd_auth(&mut self, session: &SessionHandle, data: &[u8]) -> bool {
        let Ok(init) = crate::ttyd::parse_init(data) else {
            self.app.metrics.reject("bad_request");
            return self
                .close(1008, "first frame must be the ttyd JSON init")
                .await;
        };
        let grant = match self.app.tokens.check(init.token.as_deref()) {
            Ok(g) if g.can_read(session.id()) => g,
            _ => {
                self.app.metrics.reject("unauthorized");
                return self.close(1008, "invalid or missing AuthToken").await;
            }
        };
        if let Some(size) = init.size
            && grant.can_write(session.id())
            && let Err(e) = session.resize(self.viewer, size)
        {
            tracing::debug!(error = %e, "ttyd initial size not applied");
        }
        self.grant = Some(grant);
        let title = format!("1{} (corral)", session.name());
        let prefs = "2{}".to_string();
        if self
            .sink
            .send(Message::Binary(title.into_bytes().into()))
            .await
            .is_err()
            || self
                .sink
                .send(Message::Binary(prefs.into_bytes().into()))
                .await
                .is_err()
        {
            return false;
        }
        // The screen as it is now, then live output from the matching offset.
        let (start, snap) = match session.snapshot().await {
            Ok(s) => (Some(s.offset), Some(s.bytes)),
            Err(_) => (None, None),
        };
        if let Some(bytes) = snap {
            let mut frame = Vec::with_capacity(bytes.len() + 1);
            frame.push(b'0');
            frame.extend_from_slice(&bytes);
            if self.sink.send(Message::Binary(frame.into())).await.is_err() {
                return false;
            }
        }
        let sub = match session.subscribe(start) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "ttyd subscribe failed");
                return self.close(1011, "cannot subscribe").await;
            }
        };
        self.add_subscription(session, sub, None);
        true
    }

    async fn ttyd_outgoing(&mut self, item: Item) -> bool {
        match item {
            // One byte reserved in front for the command (see add_subscription).
            Item::Output {
                bytes: mut frame, ..
            } => {
                if frame.len() <= 1 {
                    return true;
                }
                self.app.metrics.bytes_out.inc_by((frame.len() - 1) as u64);
                frame[0] = b'0';
                self.sink.send(Message::Binary(frame.into())).await.is_ok()
            }
            Item::Lagged(l) => {
                // ttyd has no lag message: say it in the terminal, visibly.
                self.app.metrics.lagged.inc();
                let note = format!(
                    "\r\n\x1b[7m[corral: {} bytes skipped, viewer too slow]\x1b[0m\r\n",
                    l.to - l.from
                );
                let mut frame = vec![b'0'];
                frame.extend_from_slice(note.as_bytes());
                self.sink.send(Message::Binary(frame.into())).await.is_ok()
            }
            // Every byte before the end was sent (events follow their output): close normally.
            // Closing on the final state, not on Exited, keeps viewers of restarting sessions.
            Item::Event(e) if matches!(e.kind, EventKind::State { state, .. } if state.is_final()) => {
                self.close(1000, "session exited").await
            }
            Item::Closed => self.close(1000, "session removed").await,
            _ => true,
        }
    }
}
