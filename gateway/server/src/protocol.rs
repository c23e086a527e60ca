//! The native WebSocket protocol (`/v1/ws`, version 1), documented with examples in
//! docs/protocol.md: JSON text frames for control, binary frames for bulk bytes with a fixed
//! 13-byte header `[kind u8][channel u32 BE][offset u64 BE]`.

use std::time::Duration;

use corral_actors::{SessionError, SessionEvent, SessionInfo, SessionSpec};
use corral_runtime::TreeNode;
use serde::{Deserialize, Serialize};

/// Protocol version spoken by this server.
pub const PROTOCOL_VERSION: u32 = 1;

/// Additions to protocol 1 a server names in its `hello` reply: `paste_parts`, a paste larger
/// than a frame sent as `input` parts with `more` (an older server would paste each part on
/// its own).
pub const FEATURES: &[&str] = &[PASTE_PARTS];

/// The feature a server names when it takes a paste in parts (`input` with `more`).
pub const PASTE_PARTS: &str = "paste_parts";
/// The WebSocket subprotocol name of the native protocol.
pub const SUBPROTOCOL: &str = "corral.v1";
/// Subprotocol prefix carrying a token (`corral.token.<token>`), for browsers that cannot set
/// an Authorization header on a WebSocket.
pub const TOKEN_PROTOCOL_PREFIX: &str = "corral.token.";

/// A request's deadline (milliseconds since the Unix epoch): when its client stops waiting for
/// the answer. A request read after it is refused unbegun (`timeout`, 408): a server that was
/// stopped (SIGSTOP) or stalled while the client gave up must not carry out, once it resumes, a
/// spawn, stop or shutdown its client already reported as failed. The CLI sends it over the
/// local socket only (one clock); a client without it is not concerned.
pub const DEADLINE_HEADER: &str = "corral-deadline";

/// Binary frame kinds.
pub mod kind {
    /// Server → client: output bytes of a subscription at an offset.
    pub const OUTPUT: u8 = 1;
    /// Server → client: a screen snapshot; the offset is where live output continues.
    pub const SNAPSHOT: u8 = 2;
    /// Client → server: input bytes for the session of a subscription channel.
    pub const INPUT: u8 = 3;
}

/// Length of the binary frame header.
pub const HEADER_LEN: usize = 13;

/// A decoded binary frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Frame kind (see [`kind`]).
    pub kind: u8,
    /// Subscription channel.
    pub channel: u32,
    /// Output offset of the first payload byte (0 for input).
    pub offset: u64,
}

/// Encodes a binary frame.
pub fn encode_binary(h: Header, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![0; HEADER_LEN];
    write_header(h, &mut out);
    out.extend_from_slice(payload);
    out
}

/// Writes `h` into the first [`HEADER_LEN`] bytes of `frame` (room reserved in front of a
/// payload, so output is framed without copying it again). `frame` must be at least that long.
pub fn write_header(h: Header, frame: &mut [u8]) {
    frame[0] = h.kind;
    frame[1..5].copy_from_slice(&h.channel.to_be_bytes());
    frame[5..HEADER_LEN].copy_from_slice(&h.offset.to_be_bytes());
}

/// Decodes a binary frame into its header and payload; `None` if shorter than the header.
pub fn decode_binary(frame: &[u8]) -> Option<(Header, &[u8])> {
    if frame.len() < HEADER_LEN {
        return None;
    }
    let channel = u32::from_be_bytes(frame[1..5].try_into().ok()?);
    let offset = u64::from_be_bytes(frame[5..13].try_into().ok()?);
    Some((
        Header {
            kind: frame[0],
            channel,
            offset,
        },
        &frame[HEADER_LEN..],
    ))
}

/// A client request (text frame). `id` is echoed in the reply.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct Request {
    /// Request id chosen by the client, echoed in replies and errors.
    #[serde(default)]
    pub id: Option<u64>,
    /// The operation.
    #[serde(flatten)]
    pub op: Op,
}

/// Operations of the native protocol.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Op {
    /// Version handshake; optional ack-based flow control window in bytes.
    Hello {
        /// Client protocol version.
        #[serde(default)]
        protocol: Option<u32>,
        /// Enables byte-acked flow control with this window (bytes unacked per subscription).
        #[serde(default)]
        window: Option<u64>,
    },
    /// List sessions.
    List,
    /// Spawn a session.
    Spawn {
        /// What to run.
        spec: Box<SessionSpec>,
    },
    /// Stop a session gracefully.
    Stop {
        /// Id or name.
        session: String,
        /// Grace in seconds (the spec's when absent).
        #[serde(default)]
        grace: Option<f64>,
    },
    /// SIGKILL a session's tree.
    Kill {
        /// Id or name.
        session: String,
    },
    /// Restart a session's process.
    Restart {
        /// Id or name.
        session: String,
    },
    /// Stop and forget a session.
    Remove {
        /// Id or name.
        session: String,
    },
    /// Subscribe to a session's output and events: from an offset (exact resume), or without
    /// one, from the current screen snapshot.
    Subscribe {
        /// Id or name.
        session: String,
        /// First output offset wanted (`last received + 1`).
        #[serde(default)]
        from: Option<u64>,
        /// Without `from`: the snapshot carries the history before the screen (the rows that
        /// scrolled off its top, as much as the session's Ring still holds), for a view that
        /// opens fresh and wants to scroll back.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        history: bool,
        /// With `history`: the height of the terminal the snapshot is written into, when it is
        /// not the session's yet (its own resize may still be on its way): every history row
        /// then reaches its scrollback.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        rows: Option<u16>,
        /// The last event sequence number the client has: the events after it come first (from
        /// the journal, each where it happened in the output), then the live ones, none twice.
        /// Without it, live events only.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        after: Option<u64>,
    },
    /// Stop receiving a session.
    Unsubscribe {
        /// Id or name.
        session: String,
    },
    /// Input as UTF-8 text (binary frames of kind INPUT carry arbitrary bytes).
    Input {
        /// Id or name.
        session: String,
        /// The text.
        data: String,
        /// A paste (a prompt for an agent's TUI): wrapped in bracketed-paste markers when the
        /// program enabled that mode, then Enter (`\r`).
        #[serde(default)]
        paste: bool,
        /// With `paste`: this is a part of a paste larger than a frame, and more follows; the
        /// server keeps the parts (up to the input burst) and pastes them as one with the part
        /// that comes without `more`.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        more: bool,
        /// With a paste's last part: answered (`session`) once the paste and its Enter are
        /// written to the program, instead of not at all; an error if the session ends first.
        /// `corral send --paste` asks for it, so that its success means the program has the
        /// text (a server killed before that had taken input it never wrote).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        written: bool,
    },
    /// The viewer's terminal size.
    Resize {
        /// Id or name.
        session: String,
        /// Rows.
        rows: u16,
        /// Columns.
        cols: u16,
        /// This viewer's size becomes the session's now, as if it typed (the page's "use this
        /// screen's size"): without it, a size sent while another viewer types is kept for
        /// when this one types.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        take: bool,
    },
    /// Acknowledges output up to (not including) `offset` (flow control).
    Ack {
        /// Id or name.
        session: String,
        /// Next offset the client expects.
        offset: u64,
    },
    /// The current screen as a SNAPSHOT binary frame on the subscription's channel (or on
    /// channel 0 when not subscribed).
    Snapshot {
        /// Id or name.
        session: String,
        /// With the history before the screen (see [`Op::Subscribe`]).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        history: bool,
        /// With `history`: the viewer's terminal height (see [`Op::Subscribe`]).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        rows: Option<u16>,
    },
    /// Past events of a session from the journal (needs persistence), oldest first.
    Events {
        /// Id or name.
        session: String,
        /// Only events with a greater sequence number (default 0: from the oldest retained).
        #[serde(default)]
        after: Option<u64>,
        /// At most this many (default and maximum 1000).
        #[serde(default)]
        limit: Option<usize>,
    },
    /// The supervision tree.
    Tree,
    /// Liveness.
    Ping,
    /// The live session list (admin): a `sessions` reply, then `session` pushes on every change
    /// and `removed` when a session is gone.
    Watch,
}

/// Most events one `events` reply carries.
pub const MAX_EVENTS_PER_REPLY: usize = 1000;

/// Server messages (text frames).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Reply {
    /// Answer to hello.
    Hello {
        /// Request id.
        id: Option<u64>,
        /// Server name.
        server: String,
        /// Server version.
        version: String,
        /// Protocol version.
        protocol: u32,
        /// Largest accepted frame in bytes.
        max_frame: usize,
        /// What this server takes beyond protocol 1 as first released ([`FEATURES`]); absent
        /// from older servers, so a client can tell what it may rely on.
        #[serde(default)]
        features: Vec<String>,
    },
    /// Answer to list and watch.
    Sessions {
        /// Request id.
        id: Option<u64>,
        /// Every session the token may read.
        sessions: Vec<SessionView>,
    },
    /// A session's status: the answer to spawn, stop, kill, restart, remove (with their `id`),
    /// and a watch's push when a session is created or changes (without an `id`).
    Session {
        /// Request id.
        #[serde(default)]
        id: Option<u64>,
        /// The session.
        session: SessionView,
    },
    /// A watch's push: the session is gone.
    Removed {
        /// Session id.
        session: String,
    },
    /// Subscription started: output follows on `channel`.
    Subscribed {
        /// Request id.
        id: Option<u64>,
        /// Session id.
        session: String,
        /// Binary channel of this subscription.
        channel: u32,
        /// First offset that will be sent (after the snapshot when there is one).
        offset: u64,
        /// Whether a SNAPSHOT frame precedes the live output.
        snapshot: bool,
        /// Whether the snapshot is approximate (the screen lost history).
        approximate: bool,
        /// The session's state now: a subscriber joining after the end learns it here (past
        /// events are replayed only with `after`).
        state: corral_actors::SessionState,
        /// The terminal size the first bytes sent are at: the snapshot's, else the session's
        /// now (later changes come as `resized` events, each at its offset).
        size: corral_actors::Size,
        /// The sequence number of the session's last event before the live ones: a client
        /// that reconnects before it received any event resumes with `after` = this.
        #[serde(default)]
        last_event: u64,
    },
    /// Generic success.
    Ok {
        /// Request id.
        id: Option<u64>,
    },
    /// Answer to tree.
    Tree {
        /// Request id.
        id: Option<u64>,
        /// The tree.
        tree: TreeNode,
    },
    /// Answer to events: past events, oldest first (fewer than asked: no more retained yet).
    Events {
        /// Request id.
        id: Option<u64>,
        /// Session id.
        session: String,
        /// The events.
        events: Vec<SessionEvent>,
    },
    /// Answer to ping.
    Pong {
        /// Request id.
        id: Option<u64>,
    },
    /// A session event (lifecycle, exit, hook, JSON line), after every byte written before it.
    Event {
        /// Binary channel of the subscription.
        channel: u32,
        /// The event.
        event: SessionEvent,
    },
    /// Output `[from, to)` was not delivered to this client (it fell behind); output continues
    /// at `to`.
    Lagged {
        /// Session id.
        session: String,
        /// Channel.
        channel: u32,
        /// First lost offset.
        from: u64,
        /// First offset after the gap.
        to: u64,
    },
    /// Events were dropped for this client.
    EventsLagged {
        /// Session id.
        session: String,
        /// How many.
        missed: u64,
    },
    /// The session was removed; its subscription ended.
    Closed {
        /// Session id.
        session: String,
        /// Channel.
        channel: u32,
    },
    /// A request failed, or a frame was refused; the connection stays open.
    Error {
        /// Request id, when the frame parsed far enough to have one.
        id: Option<u64>,
        /// Machine-readable code.
        code: ErrorCode,
        /// What was wrong, for humans.
        message: String,
    },
}

/// `GET /v1/health`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Health {
    /// Always "ok" when the server answers.
    pub status: String,
    /// The server's version.
    pub version: String,
    /// The server's pid (tells a successor from its predecessor during `corral upgrade`).
    #[serde(default)]
    pub pid: u32,
}

/// A session as the API shows it: the session's own [`SessionInfo`] plus figures the server
/// reads from the processes where they run (so a remote client shows the server's, not its own).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SessionView {
    /// The session.
    #[serde(flatten)]
    pub info: SessionInfo,
    /// CPU of the session's process tree, in % of one core (average over each process's life).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_percent: Option<f64>,
    /// Resident memory of the session's process tree, in KiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rss_kib: Option<u64>,
}

impl From<SessionInfo> for SessionView {
    /// A view without process figures (an operation's answer: measuring would cost a /proc
    /// scan on every spawn and stop).
    fn from(info: SessionInfo) -> Self {
        SessionView {
            info,
            cpu_percent: None,
            rss_kib: None,
        }
    }
}

/// `POST /v1/sessions/{key}/stop` body (optional).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StopBody {
    /// Grace in seconds before SIGKILL (the spec's when absent; clamped to 0..=3600).
    #[serde(default)]
    pub grace: Option<f64>,
}

/// A stop's grace in seconds (`stop {grace}`, `POST …/stop {"grace"}`): at most an hour (a
/// longer one is an hour, as a spec's is); a negative or not finite one is refused, as a spec's
/// is, not taken for 0.
pub fn stop_grace(grace: Option<f64>) -> Result<Option<Duration>, SessionError> {
    match grace {
        None => Ok(None),
        Some(g) if g.is_finite() && g >= 0.0 => Ok(Some(Duration::from_secs_f64(g.min(3600.0)))),
        Some(g) => Err(corral_actors::SpecError::GraceNotADuration(g.to_string()).into()),
    }
}

/// What a session-scoped token allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenScope {
    /// Watch.
    Read,
    /// Watch and type.
    Write,
}

/// `POST /v1/tokens` body.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenRequest {
    /// Session id or name.
    pub session: String,
    /// What the token allows.
    pub scope: TokenScope,
}

/// `POST /v1/login/code` answer (its `Debug` leaves the code out).
#[derive(Clone, Serialize, Deserialize)]
pub struct LoginCode {
    /// The code a login link carries (`/?code=…`): good for one login.
    pub code: String,
    /// Seconds it stays good.
    pub expires_in: u64,
}

impl std::fmt::Debug for LoginCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoginCode")
            .field("expires_in", &self.expires_in)
            .finish_non_exhaustive()
    }
}

/// `POST /v1/tokens` answer (its `Debug` leaves the token out).
#[derive(Clone, Serialize, Deserialize)]
pub struct TokenCreated {
    /// The new token (shown once; never logged).
    pub token: String,
    /// The session it is scoped to.
    pub session: uuid::Uuid,
    /// What it allows.
    pub scope: TokenScope,
}

impl std::fmt::Debug for TokenCreated {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenCreated")
            .field("session", &self.session)
            .field("scope", &self.scope)
            .finish_non_exhaustive()
    }
}

/// A viewer or driver token as `GET /v1/tokens` lists it: its id (the part after `corral_` of
/// the token), never the token.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TokenInfo {
    /// The token's id.
    pub id: String,
    /// What it allows.
    pub scope: TokenScope,
    /// The session it is scoped to.
    pub session: uuid::Uuid,
    /// That session's name.
    pub name: String,
}

/// `GET /v1/tokens` answer: the valid viewer and driver tokens, by id.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TokenList {
    /// The tokens.
    pub tokens: Vec<TokenInfo>,
}

/// `DELETE /v1/tokens/{id}` answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TokenRevoked {
    /// The revoked token's id.
    pub id: String,
    /// Live WebSocket connections it had let in, now closed (1008 `token revoked`).
    pub connections_closed: usize,
}

/// `POST /v1/sessions/{key}/events` answer: the hook event's sequence number in the journal.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HookAccepted {
    /// The event's `seq`.
    pub seq: u64,
    /// What the hook prints for the agent (a PermissionRequest's decision), if anything.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<serde_json::Value>,
}

/// `GET /ttyd/{key}/token` answer (ttyd's web client reads its AuthToken here; its `Debug`
/// leaves the token out).
#[derive(Clone, Serialize, Deserialize)]
pub struct TtydToken {
    /// The token the request presented.
    pub token: String,
}

impl std::fmt::Debug for TtydToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TtydToken").finish_non_exhaustive()
    }
}

/// `?format=` of an export.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ExportQuery {
    /// Only `asciicast` (the default).
    #[serde(default)]
    pub format: Option<String>,
}

/// `?at=` of a hook event: when the hook ran (RFC 3339), as `corral hook` sends it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct HookQuery {
    /// When the hook ran; absent from other senders.
    #[serde(default)]
    pub at: Option<String>,
}

/// Error codes of [`Reply::Error`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// Not JSON, or not a known message.
    BadRequest,
    /// No token, or a token the server does not know.
    Unauthorized,
    /// Unknown session.
    NotFound,
    /// The path is served, not with this method (HTTP only; the answer's `Allow` header names
    /// the methods it takes).
    MethodNotAllowed,
    /// The token does not allow this.
    Forbidden,
    /// Too many messages or bytes per second.
    RateLimited,
    /// The frame exceeds the size limit.
    TooLarge,
    /// The session refused (input queue full, name taken, cannot start...).
    Conflict,
    /// The server cannot do it now (a session's actor is gone, a limit of the server's own).
    Unavailable,
    /// The request did not arrive in time (its body came too slowly).
    Timeout,
    /// Something failed on the server side.
    Internal,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binary_header_round_trips() {
        let h = Header {
            kind: kind::OUTPUT,
            channel: 7,
            offset: 1 << 40,
        };
        let f = encode_binary(h, b"abc");
        assert_eq!(f.len(), HEADER_LEN + 3);
        assert_eq!(decode_binary(&f), Some((h, &b"abc"[..])));
        assert_eq!(decode_binary(&f[..12]), None);
    }

    #[test]
    fn requests_parse_and_unknown_types_are_refused() {
        let r: Request =
            serde_json::from_str(r#"{"type":"subscribe","id":3,"session":"a","from":10}"#).unwrap();
        assert_eq!(r.id, Some(3));
        assert!(matches!(r.op, Op::Subscribe { from: Some(10), .. }));
        assert!(serde_json::from_str::<Request>(r#"{"type":"nope"}"#).is_err());
    }
}

#[cfg(test)]
mod fuzz {
    //! The decoders never panic on arbitrary input (proptest stands in for cargo-fuzz in CI).
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn binary_decoder_never_panics(frame in proptest::collection::vec(any::<u8>(), 0..64)) {
            if let Some((h, payload)) = decode_binary(&frame) {
                prop_assert_eq!(encode_binary(h, payload), frame);
            } else {
                prop_assert!(frame.len() < HEADER_LEN);
            }
        }

        #[test]
        fn request_parser_never_panics(text in ".{0,200}") {
            // Never a panic; and what parses is a request that reads back as itself.
            if let Ok(parsed) = serde_json::from_str::<Request>(&text) {
                let again = serde_json::to_value(&parsed).unwrap();
                let reread: Request = serde_json::from_value(again.clone()).unwrap();
                prop_assert_eq!(serde_json::to_value(&reread).unwrap(), again);
            }
        }

        #[test]
        fn json_shaped_requests_parse_as_their_type(
            ty in prop_oneof![Just("subscribe"), Just("input"), Just("resize"), Just("ack"), Just("spawn"), Just("x")],
            session in ".{0,20}",
            n in 1u64..=1000,
        ) {
            let text = serde_json::json!({
                "type": ty, "session": session, "from": n, "rows": n, "cols": n, "offset": n,
                "data": session, "spec": {"argv": [session]},
            })
            .to_string();
            match serde_json::from_str::<Request>(&text) {
                // What parses is the operation its type names.
                Ok(parsed) => {
                    let op = serde_json::to_value(&parsed.op).unwrap();
                    prop_assert_eq!(op["type"].as_str(), Some(ty));
                }
                Err(e) => prop_assert!(ty == "x", "{ty} refused: {e}"),
            }
            prop_assert!(ty != "subscribe" || serde_json::from_str::<Request>(&text).is_ok());
        }
    }
}
