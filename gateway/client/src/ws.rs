//! WebSocket: the native protocol (`/v1/ws`) over tokio-tungstenite, on a Unix or TCP stream.
//! [`Conn::call`] sends a typed request and waits for its reply; frames that arrive meanwhile
//! are kept (bounded) for [`Conn::next`].

use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

use corral_server::protocol::{Op, PASTE_PARTS, PROTOCOL_VERSION, Reply, Request, SUBPROTOCOL};

use crate::endpoint::{Client, Stream};
use crate::error::ClientError;

/// A WebSocket to a server.
pub type Socket = WebSocketStream<Stream>;

impl Client {
    /// Opens the native WebSocket with this client's token.
    pub async fn ws(&self) -> Result<Conn, ClientError> {
        let ws = self
            .socket(
                "/v1/ws",
                Some(&self.token.clone()),
                &[("sec-websocket-protocol", SUBPROTOCOL)],
            )
            .await?;
        Ok(Conn {
            ws,
            next_id: 0,
            backlog: Default::default(),
            backlog_bytes: 0,
            probed: None,
            ponged: false,
            silent: false,
        })
    }

    /// Opens a WebSocket on `path` with `token` (None: no Authorization) and extra headers;
    /// the handshake's refusal is an error.
    pub async fn socket(
        &self,
        path: &str,
        token: Option<&str>,
        headers: &[(&str, &str)],
    ) -> Result<Socket, ClientError> {
        let mut req = format!("ws://{}{path}", self.endpoint.host()).into_client_request()?;
        if let Some(t) = token {
            req.headers_mut().insert(
                "authorization",
                HeaderValue::from_str(&format!("Bearer {t}"))
                    .map_err(|e| ClientError::Request(e.to_string()))?,
            );
        }
        for (k, v) in headers {
            let name = tokio_tungstenite::tungstenite::http::HeaderName::from_bytes(k.as_bytes())
                .map_err(|e| ClientError::Request(e.to_string()))?;
            req.headers_mut().insert(
                name,
                HeaderValue::from_str(v).map_err(|e| ClientError::Request(e.to_string()))?,
            );
        }
        let stream = self.endpoint.connect().await?;
        // A server that accepts but does not answer (stopped, wedged) is said to be so.
        let (ws, _) = tokio::time::timeout(
            crate::http::READ_TIMEOUT,
            tokio_tungstenite::client_async(req, stream),
        )
        .await
        .map_err(|_| ClientError::Timeout(self.endpoint.describe()))??;
        Ok(ws)
    }
}

/// What a connection receives.
#[derive(Debug)]
pub enum Incoming {
    /// JSON.
    Json(Value),
    /// Binary: kind, channel, offset, payload.
    Bin(u8, u32, u64, Vec<u8>),
    /// Closed, with a reason.
    Closed(String),
    /// Nothing came for a while and a ping went unanswered for [`SILENT_AFTER_PING`]: the
    /// server took the connection and answers nothing (stopped with SIGSTOP, wedged). Said
    /// once; the connection is kept (a continued server goes on where it was).
    Silent,
    /// The server answers again after [`Incoming::Silent`] (what it sent comes next).
    Answering,
}

/// Quiet this long, the connection is pinged (a healthy server answers at once).
pub const PING_AFTER_QUIET: std::time::Duration = std::time::Duration::from_secs(5);
/// A ping unanswered this long makes [`Incoming::Silent`].
pub const SILENT_AFTER_PING: std::time::Duration = std::time::Duration::from_secs(10);

/// A native-protocol connection.
pub struct Conn {
    /// The socket.
    pub ws: Socket,
    /// Last request id.
    next_id: u64,
    /// Frames that arrived while `call` waited for its reply, delivered by `next` first
    /// (bounded: a reply that never comes ends the call with an error first).
    backlog: std::collections::VecDeque<Incoming>,
    /// The payload bytes `backlog` holds.
    backlog_bytes: usize,
    /// When the connection was pinged for being quiet, until something comes.
    probed: Option<tokio::time::Instant>,
    /// A pong came since then.
    ponged: bool,
    /// [`Incoming::Silent`] was said, and nothing came since.
    silent: bool,
}

/// Most frames kept aside while a `call` waits for its reply.
const MAX_BACKLOG: usize = 100_000;

/// Most payload bytes kept aside while a `call` waits for its reply (output frames are up to
/// 64 KiB: a frame count alone let ~6 GB pile up).
const MAX_BACKLOG_BYTES: usize = 64 << 20;

/// The bytes an incoming frame keeps in memory (its payload, roughly for JSON).
fn weight(i: &Incoming) -> usize {
    match i {
        Incoming::Json(v) => v.to_string().len(),
        Incoming::Bin(_, _, _, payload) => payload.len(),
        Incoming::Closed(reason) => reason.len(),
        Incoming::Silent | Incoming::Answering => 0,
    }
}

impl Conn {
    /// Sends a request; returns its id.
    pub async fn send(&mut self, mut msg: Value) -> Result<u64, ClientError> {
        self.next_id += 1;
        msg["id"] = json!(self.next_id);
        self.ws.send(Message::Text(msg.to_string().into())).await?;
        Ok(self.next_id)
    }

    /// Sends a binary frame.
    pub async fn send_binary(&mut self, frame: Vec<u8>) -> Result<(), ClientError> {
        self.ws.send(Message::Binary(frame.into())).await?;
        Ok(())
    }

    /// The next frame.
    pub async fn next(&mut self) -> Incoming {
        if let Some(i) = self.backlog.pop_front() {
            self.backlog_bytes -= weight(&i);
            return i;
        }
        loop {
            match tokio::time::timeout(PING_AFTER_QUIET, self.next_live()).await {
                Ok(i) => {
                    self.probed = None;
                    self.ponged = false;
                    if std::mem::take(&mut self.silent) {
                        self.backlog_bytes += weight(&i);
                        self.backlog.push_front(i);
                        return Incoming::Answering;
                    }
                    return i;
                }
                Err(_) if std::mem::take(&mut self.ponged) => {
                    // Quiet, but there.
                    self.probed = None;
                    if std::mem::take(&mut self.silent) {
                        return Incoming::Answering;
                    }
                }
                Err(_) => match self.probed {
                    None => {
                        if let Err(e) = self.ws.send(Message::Ping(Default::default())).await {
                            return Incoming::Closed(e.to_string());
                        }
                        self.probed = Some(tokio::time::Instant::now());
                    }
                    Some(at) if !self.silent && at.elapsed() >= SILENT_AFTER_PING => {
                        self.silent = true;
                        return Incoming::Silent;
                    }
                    Some(_) => {}
                },
            }
        }
    }

    async fn next_live(&mut self) -> Incoming {
        loop {
            return match self.ws.next().await {
                Some(Ok(Message::Text(t))) => match serde_json::from_str(&t) {
                    Ok(v) => Incoming::Json(v),
                    Err(e) => Incoming::Closed(format!("server sent invalid JSON: {e}")),
                },
                Some(Ok(Message::Binary(b))) if b.len() >= 13 => Incoming::Bin(
                    b[0],
                    u32::from_be_bytes([b[1], b[2], b[3], b[4]]),
                    u64::from_be_bytes([b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12]]),
                    b[13..].to_vec(),
                ),
                Some(Ok(Message::Close(c))) => {
                    Incoming::Closed(c.map(|c| c.reason.to_string()).unwrap_or_default())
                }
                Some(Ok(Message::Pong(_))) => {
                    self.ponged = true;
                    continue;
                }
                Some(Ok(_)) => continue,
                Some(Err(e)) => Incoming::Closed(e.to_string()),
                None => Incoming::Closed("connection closed".into()),
            };
        }
    }

    /// A request (raw JSON) and its reply; an error reply becomes [`ClientError::Api`].
    pub async fn call(&mut self, msg: Value) -> Result<Value, ClientError> {
        let id = self.send(msg).await?;
        loop {
            match self.next_live().await {
                Incoming::Json(v) if v["id"] == json!(id) => {
                    if v["type"] == "error" {
                        return Err(ClientError::Api {
                            status: 0,
                            code: serde_json::from_value(v["code"].clone()).ok(),
                            message: v["message"].as_str().unwrap_or("error").to_string(),
                        });
                    }
                    return Ok(v);
                }
                Incoming::Closed(r) => return Err(ClientError::Closed(r)),
                other => {
                    let bytes = weight(&other);
                    if self.backlog.len() >= MAX_BACKLOG
                        || self.backlog_bytes + bytes > MAX_BACKLOG_BYTES
                    {
                        return Err(ClientError::Decode(format!(
                            "no reply to request {id} after {} other frames ({} bytes)",
                            self.backlog.len(),
                            self.backlog_bytes
                        )));
                    }
                    self.backlog_bytes += bytes;
                    self.backlog.push_back(other);
                }
            }
        }
    }

    /// Sends `text` as input to `session` (`paste`: one paste followed by Enter), in as many
    /// `input` requests as the server's frame limit needs: a paste's parts carry `more`, so
    /// the server pastes them as one. Returns the requests' ids (input has no reply on
    /// success: an error reply names one of them).
    pub async fn input(
        &mut self,
        session: &str,
        text: &str,
        paste: bool,
    ) -> Result<Vec<u64>, ClientError> {
        // Small input fits any frame limit; larger input asks the server for its own.
        let (budget, parts_pasted_as_one) = if text.len() <= SMALL_INPUT {
            (SMALL_INPUT, true)
        } else {
            match self
                .request(Op::Hello {
                    protocol: Some(PROTOCOL_VERSION),
                    window: None,
                })
                .await?
            {
                Reply::Hello {
                    max_frame,
                    features,
                    ..
                } => (
                    max_frame
                        .saturating_sub(ENVELOPE + 2 * session.len())
                        .max(MIN_PART),
                    features.iter().any(|f| f == PASTE_PARTS),
                ),
                other => {
                    return Err(ClientError::Decode(format!(
                        "hello answered with {other:?}"
                    )));
                }
            }
        };
        let parts = split_escaped(text, budget);
        if paste && parts.len() > 1 && !parts_pasted_as_one {
            // An older server would paste every part on its own, each with its Enter.
            return Err(ClientError::Request(format!(
                "this server takes a paste of at most about {budget} bytes (one frame); \
                 this one is {} bytes: nothing was sent (a newer server takes it in parts)",
                text.len()
            )));
        }
        let last = parts.len() - 1;
        let mut ids = Vec::with_capacity(parts.len());
        for (i, part) in parts.into_iter().enumerate() {
            let op = Op::Input {
                session: session.to_string(),
                data: part.to_string(),
                paste,
                more: paste && i < last,
                // A paste is answered once written to the program (its last id's reply).
                written: paste && i == last,
            };
            let msg = serde_json::to_value(Request { id: None, op })
                .map_err(|e| ClientError::Request(e.to_string()))?;
            ids.push(self.send(msg).await?);
        }
        Ok(ids)
    }

    /// A typed request and its typed reply.
    pub async fn request(&mut self, op: Op) -> Result<Reply, ClientError> {
        let msg = serde_json::to_value(Request { id: None, op })
            .map_err(|e| ClientError::Request(e.to_string()))?;
        let v = self.call(msg).await?;
        serde_json::from_value(v).map_err(|e| ClientError::Decode(e.to_string()))
    }
}

/// Input up to this many bytes is sent in one request without asking the server its frame
/// limit: even escaped at worst (6 bytes a character) it stays far below any sane limit.
const SMALL_INPUT: usize = 4096;

/// Room kept in a frame for the request around the text (type, id, flags; the session's name
/// is counted apart).
const ENVELOPE: usize = 256;

/// The smallest part a frame limit is taken to allow.
const MIN_PART: usize = 1024;

/// Splits `text` at character boundaries into parts whose JSON-escaped length is at most
/// `budget` bytes (never an empty list: an empty text is one empty part).
fn split_escaped(text: &str, budget: usize) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut start, mut size) = (0, 0);
    for (at, c) in text.char_indices() {
        let n = match c {
            '"' | '\\' | '\n' | '\r' | '\t' | '\u{8}' | '\u{c}' => 2,
            c if (c as u32) < 0x20 => 6,
            c => c.len_utf8(),
        };
        if size + n > budget && at > start {
            parts.push(&text[start..at]);
            (start, size) = (at, 0);
        }
        size += n;
    }
    parts.push(&text[start..]);
    parts
}

#[cfg(test)]
mod tests {
    use super::split_escaped;

    #[test]
    fn parts_stay_within_the_budget_once_escaped_and_join_back_whole() {
        let text = "ab\"\u{1}é\n".repeat(1000);
        let parts = split_escaped(&text, 100);
        assert!(parts.len() > 1);
        for p in &parts {
            let escaped = serde_json::to_string(p).unwrap();
            assert!(
                escaped.len() - 2 <= 100,
                "{} bytes escaped",
                escaped.len() - 2
            );
        }
        assert_eq!(parts.concat(), text);
        assert_eq!(split_escaped("", 100), vec![""]);
        assert_eq!(split_escaped("short", 100), vec!["short"]);
    }
}
