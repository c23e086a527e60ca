//! Remote: how client commands reach a server — found through the data dir (`server.json` +
//! `token`) or given with `--url` and `--token`/`CORRAL_TOKEN` — and the two ways they talk to
//! it (a small HTTP/1.1 client for REST, tokio-tungstenite for the native protocol).

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::datadir;

/// Where the server is and how to authenticate.
#[derive(Debug, Clone)]
pub struct Remote {
    /// host:port.
    pub addr: String,
    /// Bearer token.
    pub token: String,
    /// Found through this data dir (no `--url`): a restarted server, maybe on another port, is
    /// found again the same way.
    found_in: Option<(std::path::PathBuf, Option<String>)>,
}

impl Remote {
    /// From flags, else from the data dir; a clear error when no server runs.
    pub fn find(
        url: Option<String>,
        token: Option<String>,
        data_dir: &Path,
    ) -> anyhow::Result<Remote> {
        let found_in = url
            .is_none()
            .then(|| (data_dir.to_path_buf(), token.clone()));
        let url = match url {
            Some(u) => u,
            None => {
                let info = datadir::read_server_json(data_dir).map_err(|_| {
                    anyhow!("no corral server is running for {} (start one with `corral serve`, or pass --url)", data_dir.display())
                })?;
                info.url
            }
        };
        let token = match token {
            Some(t) => t,
            None => datadir::read_token(data_dir).with_context(|| {
                format!(
                    "no token in {} (pass --token or set CORRAL_TOKEN)",
                    data_dir.display()
                )
            })?,
        };
        let addr = url
            .strip_prefix("http://")
            .ok_or_else(|| anyhow!("only http:// URLs are supported, not {url}"))?
            .trim_end_matches('/')
            .to_string();
        Ok(Remote {
            addr,
            token,
            found_in,
        })
    }

    /// The server as the data dir describes it now (after a restart it may listen elsewhere);
    /// itself when it was given by `--url`, or when the data dir names no running server.
    pub fn rediscover(&self) -> Remote {
        match &self.found_in {
            Some((dir, token)) => {
                Remote::find(None, token.clone(), dir).unwrap_or_else(|_| self.clone())
            }
            None => self.clone(),
        }
    }

    /// One HTTP request; returns (status, body).
    pub async fn http(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<(u16, String)> {
        let connect = TcpStream::connect(&self.addr);
        let mut s = tokio::time::timeout(Duration::from_secs(5), connect)
            .await
            .map_err(|_| anyhow!("server at {} does not answer", self.addr))?
            .with_context(|| {
                format!("cannot reach the server at {} (is it running?)", self.addr)
            })?;
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let req = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            self.addr,
            self.token,
            body.len()
        );
        s.write_all(req.as_bytes()).await?;
        let mut resp = Vec::new();
        tokio::time::timeout(Duration::from_secs(120), s.read_to_end(&mut resp))
            .await
            .map_err(|_| anyhow!("the server did not answer in time"))??;
        let text = String::from_utf8_lossy(&resp).to_string();
        let status = text
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| anyhow!("malformed HTTP response"))?;
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        let body = if head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked")
        {
            dechunk(body)
        } else {
            body.to_string()
        };
        Ok((status, body))
    }

    /// An HTTP request whose non-2xx answers become the server's error message.
    pub async fn json(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<Value> {
        let (status, text) = self.http(method, path, body).await?;
        let value: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        if !(200..300).contains(&status) {
            let msg = value
                .get("error")
                .and_then(|e| e.as_str())
                .map(str::to_string)
                .unwrap_or_else(|| value.to_string());
            bail!("{msg}");
        }
        Ok(value)
    }

    /// Opens the native WebSocket.
    pub async fn ws(&self) -> anyhow::Result<Conn> {
        let mut req = format!("ws://{}/v1/ws", self.addr).into_client_request()?;
        req.headers_mut()
            .insert("authorization", format!("Bearer {}", self.token).parse()?);
        let (ws, _) = tokio_tungstenite::connect_async(req)
            .await
            .with_context(|| format!("cannot open a WebSocket to {}", self.addr))?;
        // Interactive: a keystroke goes out at once (no Nagle delay behind an unacked one).
        if let tokio_tungstenite::MaybeTlsStream::Plain(tcp) = ws.get_ref() {
            tcp.set_nodelay(true)
                .context("cannot set TCP_NODELAY on the WebSocket")?;
        }
        Ok(Conn {
            ws,
            next_id: 0,
            backlog: Default::default(),
        })
    }
}

/// Decodes a chunked HTTP body.
fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].trim_start_matches("\r\n");
    }
    out
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
}

/// A native-protocol connection.
pub struct Conn {
    /// The socket.
    pub ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    /// Last request id.
    next_id: u64,
    /// Frames that arrived while `call` waited for its reply, delivered by `next` first
    /// (bounded: a reply that never comes ends the call with an error first).
    backlog: std::collections::VecDeque<Incoming>,
}

/// Most frames kept aside while a `call` waits for its reply.
const MAX_BACKLOG: usize = 100_000;

impl Conn {
    /// Sends a request; returns its id.
    pub async fn send(&mut self, mut msg: Value) -> anyhow::Result<u64> {
        self.next_id += 1;
        msg["id"] = json!(self.next_id);
        self.ws.send(Message::Text(msg.to_string().into())).await?;
        Ok(self.next_id)
    }

    /// Sends a binary frame.
    pub async fn send_binary(&mut self, frame: Vec<u8>) -> anyhow::Result<()> {
        self.ws.send(Message::Binary(frame.into())).await?;
        Ok(())
    }

    /// The next frame.
    pub async fn next(&mut self) -> Incoming {
        if let Some(i) = self.backlog.pop_front() {
            return i;
        }
        self.next_live().await
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
                Some(Ok(_)) => continue,
                Some(Err(e)) => Incoming::Closed(e.to_string()),
                None => Incoming::Closed("connection closed".into()),
            };
        }
    }

    /// A request and its reply; an error reply becomes an error.
    pub async fn call(&mut self, msg: Value) -> anyhow::Result<Value> {
        let id = self.send(msg).await?;
        loop {
            match self.next_live().await {
                Incoming::Json(v) if v["id"] == json!(id) => {
                    if v["type"] == "error" {
                        bail!("{}", v["message"].as_str().unwrap_or("error"));
                    }
                    return Ok(v);
                }
                Incoming::Closed(r) => bail!("connection closed: {r}"),
                other => {
                    if self.backlog.len() >= MAX_BACKLOG {
                        bail!("no reply to request {id} after {MAX_BACKLOG} other frames");
                    }
                    self.backlog.push_back(other);
                }
            }
        }
    }
}
