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
use corral_actors::{EventKind, Item, SessionHandle, Subscription};
use futures::future::BoxFuture;
use futures::stream::{
    AbortHandle, Abortable, BoxStream, FuturesUnordered, SelectAll, SplitSink, SplitStream,
};
use futures::{SinkExt, StreamExt};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::sync::Notify;

mod native;
mod pace;
mod paste;
mod ttyd;

use pace::{Held, Passed, Wait};

use crate::app::App;
use crate::auth::Grant;
use crate::protocol::{
    ErrorCode, HEADER_LEN, Header, MAX_EVENTS_PER_REPLY, Op, PROTOCOL_VERSION, Reply, Request,
    decode_binary, encode_binary, kind, write_header,
};

/// Largest output chunk per binary frame (small chunks coalesce up to this from the Ring).
const MAX_CHUNK: usize = 64 * 1024;
/// Bound on subscriptions per connection.
pub const MAX_SUBSCRIPTIONS: usize = 256;
/// How long a closing connection waits to send its Close, and then for the client's answer.
const CLOSE_HANDSHAKE: Duration = Duration::from_millis(500);
/// Bound on the sessions one connection is remembered to have typed into or resized (past it,
/// a session keeps the departed typist's size until someone else types or resizes).
const MAX_TOUCHED: usize = 1024;
/// How often a connection pings its client: proxies, load balancers and NATs close a
/// connection idle for a minute (nginx's default `proxy_read_timeout`), and a ttyd page that
/// reconnects wipes its scrollback. (ttyd pings every 5 s.)
pub const PING_EVERY: Duration = Duration::from_secs(20);
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
        /// The session, resolved at the upgrade; `None` for a name no session has, which is
        /// said only once the first frame shows a token that may know it (an unauthenticated
        /// client could otherwise probe which names exist).
        session: Option<SessionHandle>,
        /// Its place among the connections that have not shown a token yet (none when the
        /// upgrade carried a valid one: it is not waiting to authenticate).
        unauthenticated: Option<crate::connections::Place>,
        /// The token the upgrade carried, valid for the session (a bearer header, corral's
        /// token subprotocol, or the login cookie: `true`), which an empty AuthToken stands for.
        credential: Option<(String, bool)>,
    },
}

/// What a ttyd connection's path named.
#[derive(Clone)]
enum Ttyd {
    /// A session.
    Session(SessionHandle),
    /// No session by that name (told after the first frame: see [`Dialect::Ttyd`]).
    Unknown,
}

impl Ttyd {
    fn session(&self) -> Option<&SessionHandle> {
        match self {
            Ttyd::Session(s) => Some(s),
            Ttyd::Unknown => None,
        }
    }
}

/// Arguments of a Connection.
pub struct ConnectionArgs {
    /// The upgraded socket.
    pub socket: WebSocket,
    /// Protocol.
    pub dialect: Dialect,
    /// Shared server state.
    pub app: Arc<App>,
    /// Its live figures (registered in `app.connections`).
    pub stats: Arc<crate::connections::ConnStats>,
    /// Its place among `limits.max_connections`, held until the actor ends.
    pub place: crate::connections::Place,
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
    /// What a ttyd connection's path named, if this is a ttyd connection.
    ttyd: Option<Ttyd>,
    /// Until the connection shows its token (ttyd's first frame): its place among those that
    /// have not, and when it is closed without one.
    unauthenticated: Option<(Option<crate::connections::Place>, tokio::time::Instant)>,
    /// A ttyd connection's token from its upgrade, if it carried one (`true`: the login cookie).
    credential: Option<(String, bool)>,
    /// Its place among `limits.max_connections` (given back when the state drops).
    _place: crate::connections::Place,
    /// ttyd pause ('2') / resume ('3').
    paused: bool,
    /// While a ttyd client is paused: its session's events, watched for its end (a pause holds
    /// back output, not the session's end: the connection then resumes, flushes the last
    /// output and closes as for any viewer).
    pause_watch: Option<tokio::sync::broadcast::Receiver<corral_actors::SessionEvent>>,
    /// When the client is pinged next ([`PING_EVERY`]): one timer, reset each time (not a new
    /// one per turn of the loop).
    ping: std::pin::Pin<Box<tokio::time::Sleep>>,
    /// This connection's viewer id (resize policy).
    viewer: u64,
    /// Sessions it typed into or resized (at most [`MAX_TOUCHED`]): told when it leaves them,
    /// so the resize policy does not keep a size nobody looks at.
    touched: HashMap<uuid::Uuid, SessionHandle>,
    /// Messages per second.
    msg_limit: DefaultDirectRateLimiter,
    /// Input bytes per second.
    byte_limit: DefaultDirectRateLimiter,
    /// Server shutdown flag (also what a send waiting on a client gives way to, [`Self::send`]).
    shutdown: tokio::sync::watch::Receiver<bool>,
    /// Whether a close frame was sent already.
    closed: bool,
    /// Slow requests (spawn, stop, kill, restart, remove) in flight: they run concurrently so a
    /// stop waiting out a 5 s grace holds up neither input nor other requests.
    pending: FuturesUnordered<BoxFuture<'static, Reply>>,
    /// The live session list, once the client asked to watch it.
    watch: Option<BoxStream<'static, Vec<Reply>>>,
    /// A message waiting for a limit (the socket is not read meanwhile; see `pace`).
    held: Option<Held>,
    /// The limits the message being handled already passed.
    passed: Passed,
    /// Set by a handler when the message being handled must wait.
    wait: Option<Wait>,
    /// The paste in parts under way (`input` with `more`): the session it is for and its
    /// parts so far (bounded by the input burst), or None once it was refused (its later
    /// parts are dropped up to its last).
    paste: Option<(uuid::Uuid, Option<String>)>,
    /// Told when the paste just queued is written to the program (set by `write_input`, taken
    /// by `paste_part`).
    entered: Option<tokio::sync::oneshot::Receiver<()>>,
    /// Input bytes of this client's that sessions took (queued), as it sent them: what an
    /// input stall's error says went in.
    taken: u64,
    /// Its live figures, for `corral tree`.
    stats: Arc<crate::connections::ConnStats>,
    /// Shared server state.
    app: Arc<App>,
}

impl Drop for ConnectionState {
    fn drop(&mut self) {
        self.app.connections.remove(&self.stats.id);
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
        let (grant, ttyd, unauthenticated, credential) = match args.dialect {
            Dialect::Native { grant } => (Some(grant), None, None, None),
            Dialect::Ttyd {
                session,
                unauthenticated,
                credential,
            } => (
                None,
                Some(session.map_or(Ttyd::Unknown, Ttyd::Session)),
                // A ttyd client has AUTH_WAIT for its first frame, with a token at the upgrade
                // too (without, such a connection stayed for good); it holds a place among the
                // unauthenticated only without one.
                Some((
                    unauthenticated,
                    tokio::time::Instant::now() + crate::connections::AUTH_WAIT,
                )),
                credential,
            ),
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
            unauthenticated,
            credential,
            _place: args.place,
            paused: false,
            pause_watch: None,
            ping: Box::pin(tokio::time::sleep(PING_EVERY)),
            viewer: args.app.next_viewer.fetch_add(1, Ordering::Relaxed),
            touched: HashMap::new(),
            shutdown: args.app.shutdown.subscribe(),
            closed: false,
            pending: FuturesUnordered::new(),
            watch: None,
            held: None,
            passed: Passed::default(),
            wait: None,
            paste: None,
            entered: None,
            taken: 0,
            msg_limit: RateLimiter::direct(
                Quota::per_second(nz(limits.messages_per_sec))
                    .allow_burst(nz(limits.messages_per_sec.saturating_mul(2))),
            ),
            byte_limit: RateLimiter::direct(
                Quota::per_second(nz(limits.input_bytes_per_sec))
                    .allow_burst(nz(limits.input_bytes_per_sec.saturating_mul(2))),
            ),
            stats: args.stats,
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
        // Closed by the server as it leaves (an upgrade hands the sessions over): the viewer
        // did not leave, and the sessions keep the size of whoever typed (a typist's
        // connection closed first gave its size to the next one's).
        if !shutting_down {
            for h in std::mem::take(&mut st.touched).into_values() {
                h.viewer_left(st.viewer);
            }
        }
        let (code, why) = st.app.closing();
        if shutting_down
            && !st.closed
            && tokio::time::timeout(Duration::from_secs(1), st.close(code, why))
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
        let stats = st.stats.clone();
        // Checked first: the select below picks among ready branches at random, and output
        // ready at the same turn must not go out after the token was revoked.
        if let Some(reason) = stats.closing.get() {
            st.close(1008, reason).await;
            myself.stop(Some("connection closed".into()));
            return Ok(());
        }
        let keep_going = tokio::select! {
            _ = async move { shutdown.wait_for(|down| *down).await.is_ok() } => {
                let (code, why) = st.app.closing();
                st.close(code, why).await
            }
            // Its token was revoked: nothing more is sent or taken.
            _ = stats.revoked.notified() => {
                let reason = stats.closing.get().copied().unwrap_or(crate::connections::TOKEN_REVOKED);
                st.close(1008, reason).await
            }
            // Idle or not: a proxy in between sees traffic (the client's pong is read and
            // dropped as any control frame).
            () = st.ping.as_mut() => {
                st.ping.as_mut().reset(tokio::time::Instant::now() + PING_EVERY);
                st.send(Message::Ping(Default::default())).await
            }
            // A connection that never shows its token does not hold its place for good.
            _ = corral_actors::time::sleep_until(st.unauthenticated.as_ref().map(|(_, at)| *at)), if st.unauthenticated.is_some() => {
                st.app.metrics.reject("unauthorized");
                st.close(1008, "no AuthToken in time").await
            }
            // While a message waits for a limit, the socket is not read: TCP pushes back.
            frame = st.stream.next(), if st.held.is_none() => st.incoming(frame).await,
            _ = corral_actors::time::sleep_until(st.held.as_ref().map(|h| h.at)), if st.held.is_some() => st.retry_held().await,
            Some(reply) = st.pending.next(), if !st.pending.is_empty() => st.reply(&reply).await,
            pushes = next_watch(&mut st.watch), if st.watch.is_some() => match pushes {
                Some(pushes) => st.replies(&pushes).await,
                None => {
                    st.watch = None;
                    true
                }
            },
            () = session_ends(&mut st.pause_watch, st.ttyd.as_ref().and_then(Ttyd::session)), if st.paused && st.pause_watch.is_some() => {
                st.paused = false;
                st.pause_watch = None;
                true
            }
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

/// Returns when the watched session ends (a final state, or it is removed); pending forever
/// without a watch (the select guards on it). Events the watch missed (it lagged: the end may
/// have been among them) are made up for by reading the session's state then.
async fn session_ends(
    watch: &mut Option<tokio::sync::broadcast::Receiver<corral_actors::SessionEvent>>,
    session: Option<&SessionHandle>,
) {
    let Some(rx) = watch else {
        return std::future::pending().await;
    };
    loop {
        match rx.recv().await {
            Ok(e) if matches!(e.kind, EventKind::State { state, .. } if state.is_final()) => return,
            Ok(_) => {}
            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                if session.is_some_and(|h| h.shared().state().is_final()) {
                    return;
                }
            }
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
        }
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
            // At most `window` bytes past the last ack: a chunk is cut to what the window has
            // left, so a client whose buffer is the window never gets more.
            let mut most = MAX_CHUNK;
            if let Some(window) = window {
                loop {
                    let notified = credit.notify.notified();
                    let in_flight = sub
                        .cursor()
                        .saturating_sub(credit.acked.load(Ordering::Acquire));
                    if in_flight < window {
                        most = most.min(usize::try_from(window - in_flight).unwrap_or(usize::MAX));
                        break;
                    }
                    notified.await;
                }
            }
            let item = sub.next(most).await;
            if let Item::Lagged(l) = &item {
                // Skipped bytes count as acknowledged: what was in flight before the gap stays
                // the same, so a flow-controlled reader is not stalled by bytes it never got.
                credit
                    .acked
                    .fetch_add(l.to.saturating_sub(l.from), Ordering::AcqRel);
            }
            let done = matches!(item, Item::Closed);
            Some(((channel, item), (sub, done)))
        }
    })
}

impl ConnectionState {
    /// This connection typed into or resized `h`.
    fn touch(&mut self, h: &SessionHandle) {
        if self.touched.len() < MAX_TOUCHED || self.touched.contains_key(&h.id()) {
            self.touched.entry(h.id()).or_insert_with(|| h.clone());
        }
    }

    /// This connection no longer watches session `id`.
    fn leave(&mut self, id: uuid::Uuid) {
        if let Some(h) = self.touched.remove(&id) {
            h.viewer_left(self.viewer);
        }
    }

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
            if self.ttyd.is_some() {
                // ttyd's protocol has no text frames and no error: its client's input was
                // refused (its session has no running process), so the connection ends saying
                // why, rather than taking keys that go nowhere.
                return self.ttyd_refused(*code).await;
            }
        }
        let text = match serde_json::to_string(reply) {
            Ok(t) => t,
            Err(e) => {
                tracing::error!(error = %e, "reply not serializable");
                return true;
            }
        };
        self.send(Message::Text(text.into())).await
    }

    /// Sends a message; false when the socket is gone — or when the server is leaving while
    /// the send waits on a client that does not read: the connection then ends at once (it
    /// held every shutdown and upgrade for the supervisor's 2 s kill limit, and with them the
    /// data dir's socket for the local CLI and the agents' hooks).
    async fn send(&mut self, msg: Message) -> bool {
        tokio::select! {
            biased;
            sent = self.sink.send(msg) => sent.is_ok(),
            _ = self.shutdown.wait_for(|down| *down) => false,
        }
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
        // ttyd's page reconnects at once, without a pause, on any close but 1000: a refusal
        // (a missing or revoked token, a frame too large) repeated ~50 times a second for as
        // long as the tab stayed open. 1000 with the reason makes it say "Press ⏎ to
        // Reconnect". (1001 and 1012, a server leaving or restarting, still reconnect.)
        let code = match code {
            1008 | 1009 | 1011 if self.ttyd.is_some() => 1000,
            other => other,
        };
        let frame = Message::Close(Some(CloseFrame {
            code,
            reason: Utf8Bytes::from_static(reason),
        }));
        // Bounded: a client that stopped reading has a full socket, and a revoked token's
        // connection must still go (dropping the socket ends it).
        match tokio::time::timeout(CLOSE_HANDSHAKE, self.sink.send(frame)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "close frame not delivered");
                return false;
            }
            Err(_) => {
                tracing::debug!("close frame not sent in time: the client does not read");
                return false;
            }
        }
        // The closing handshake (RFC 6455 §5.5.1): read what the client still sends until its
        // Close answers ours, briefly. Dropping a socket with unread input resets it, and a
        // reset can cost the client our close frame — and with it the reason (a page would
        // say "connection lost" instead of "token revoked").
        let drained = tokio::time::timeout(CLOSE_HANDSHAKE, async {
            while let Some(Ok(m)) = self.stream.next().await {
                if matches!(m, Message::Close(_)) {
                    break;
                }
            }
        });
        if drained.await.is_err() {
            tracing::debug!("the client did not answer the close in time");
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
        self.handle_paced(msg, Passed::default(), tokio::time::Instant::now())
            .await
    }

    /// Tries the held message again.
    async fn retry_held(&mut self) -> bool {
        // invariant: the select only calls this while a message is held.
        let held = self.held.take().expect("a held message");
        let max_hold = Duration::from_secs(self.app.config.limits.input_stall_secs);
        if held.since.elapsed() > max_hold {
            self.app.metrics.reject("input_stalled");
            if self.ttyd.is_none() {
                let alive = self
                    .error(
                        None,
                        ErrorCode::Unavailable,
                        // How much went in, so a sender knows what not to send again.
                        format!(
                            "input not taken for {} s (the process is not reading it): the \
                             first {} bytes this connection sent were taken (queued: the \
                             program gets them as it reads), the rest were not; closing the \
                             connection",
                            max_hold.as_secs(),
                            self.taken
                        ),
                    )
                    .await;
                if !alive {
                    return false;
                }
            }
            return self.close(1008, "input not consumed in time").await;
        }
        self.handle_paced(held.msg, held.passed, held.since).await
    }

    /// Handles a message under the limits: what must wait is held (with the limits it already
    /// passed), never dropped.
    async fn handle_paced(
        &mut self,
        msg: Message,
        passed: Passed,
        since: tokio::time::Instant,
    ) -> bool {
        let mut passed = passed;
        if !passed.message {
            match self.msg_limit.check() {
                Ok(()) => passed.message = true,
                Err(not_until) => {
                    let delay = not_until
                        .wait_time_from(governor::clock::Clock::now(self.msg_limit.clock()));
                    self.app.metrics.rate_limited.inc();
                    self.hold(msg, Wait { delay, passed }, since);
                    return true;
                }
            }
        }
        self.passed = passed;
        self.wait = None;
        self.stats.held.store(false, Ordering::Relaxed);
        let kept = msg.clone();
        let alive = self.dispatch(msg).await;
        if let Some(wait) = self.wait.take() {
            self.hold(kept, wait, since);
        }
        alive
    }

    /// Holds `msg` until `wait.delay` from now.
    fn hold(&mut self, msg: Message, wait: Wait, since: tokio::time::Instant) {
        self.stats.held.store(true, Ordering::Relaxed);
        self.held = Some(Held {
            msg,
            at: tokio::time::Instant::now() + wait.delay,
            since,
            passed: wait.passed,
        });
    }

    /// Routes one message to its dialect's handler.
    async fn dispatch(&mut self, msg: Message) -> bool {
        match (&self.ttyd, msg) {
            (_, Message::Close(_)) => false,
            (_, Message::Ping(_) | Message::Pong(_)) => true,
            (Some(_), Message::Text(t)) => self.ttyd_frame(t.as_bytes()).await,
            (Some(_), Message::Binary(b)) => self.ttyd_frame(&b).await,
            (None, Message::Text(t)) => self.request(t.as_str()).await,
            (None, Message::Binary(b)) => self.binary_input(&b).await,
        }
    }
}
