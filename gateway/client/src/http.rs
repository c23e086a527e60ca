//! HTTP: REST requests over hyper (HTTP/1.1, one connection per request: a CLI call makes one),
//! and the typed API on top of them. Bodies are corral-server's protocol types; a non-2xx
//! answer becomes [`ClientError::Api`] with the server's error code and message.

use std::time::Duration;

use corral_actors::{SessionInfo, SessionSpec};
use corral_server::error::ErrorBody;
use corral_server::protocol::{
    Health, HookAccepted, SessionView, StopBody, TokenCreated, TokenList, TokenRequest,
    TokenRevoked,
};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode, header};
use hyper_util::rt::TokioIo;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::endpoint::{Client, Endpoint};
use crate::error::ClientError;

/// How long a stop or a removal may take (it waits for the session's grace).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(300);

/// How long a read (GET: a list, a session, the health) may take: the server answers those at
/// once, so a server that does not (stopped with SIGSTOP, wedged) is said to be so instead of
/// the command hanging for [`REQUEST_TIMEOUT`].
pub const READ_TIMEOUT: Duration = Duration::from_secs(15);

/// How long a request may take to be answered whole, by what it asks: a read
/// ([`READ_TIMEOUT`]), a hook (a PermissionRequest waits for its answer, up to
/// `agent::PERMISSION_WAIT_MAX`), a stop or a removal (it waits the session's grace:
/// [`REQUEST_TIMEOUT`]), anything else (a spawn, a shutdown, an upgrade's handover, a token:
/// [`ACT_TIMEOUT`]). A server stopped with SIGSTOP still accepts connections (the kernel
/// does): without a bound a command hung as long as it stayed stopped.
fn bound(method: &Method, path: &str) -> Duration {
    // By the path alone: a query (a hook's `?at=`) does not make a request another kind.
    let path = path.split_once('?').map_or(path, |(p, _)| p);
    if method == Method::GET {
        READ_TIMEOUT
    } else if path.ends_with("/events") {
        corral_actors::agent::PERMISSION_WAIT_MAX + Duration::from_secs(10)
    } else if path.ends_with("/stop") || method == Method::DELETE {
        REQUEST_TIMEOUT
    } else {
        ACT_TIMEOUT
    }
}

/// Most bytes of an answer read whole (a list of 10,000 sessions is ~10 MiB); a longer one
/// is an error, not memory without end (a `--url` server is not always ours).
pub const ANSWER_MAX: usize = 64 << 20;

/// The body of an answer, whole, up to [`ANSWER_MAX`].
async fn whole(body: Incoming) -> Result<Bytes, ClientError> {
    match Limited::new(body, ANSWER_MAX).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) => match e.downcast::<hyper::Error>() {
            Ok(e) => Err(ClientError::Http(*e)),
            Err(e) => Err(ClientError::Decode(format!(
                "an answer longer than {} MiB ({e})",
                ANSWER_MAX >> 20
            ))),
        },
    }
}

/// How long a spawn, a shutdown, an upgrade or a token request may take (an upgrade's
/// handover takes up to 30 s).
pub const ACT_TIMEOUT: Duration = Duration::from_secs(60);

/// A response whose body is still arriving; it owns the task that drives its connection, which
/// ends when the response is dropped.
pub struct Streaming {
    /// The response (status, headers, body).
    pub response: Response<Incoming>,
    /// The connection's driver.
    _driver: AbortOnDrop,
}

impl Streaming {
    /// The next piece of the body; None at its end.
    pub async fn chunk(&mut self) -> Result<Option<Bytes>, ClientError> {
        loop {
            match self.response.body_mut().frame().await {
                None => return Ok(None),
                Some(frame) => {
                    if let Ok(data) = frame?.into_data() {
                        return Ok(Some(data));
                    }
                }
            }
        }
    }
}

/// Aborts a task when dropped: the task is owned by whoever holds this.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Client {
    /// Sends one request with `token` (None: no Authorization header) and returns the response
    /// as it starts to arrive.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Vec<u8>>,
    ) -> Result<Streaming, ClientError> {
        self.send_with(method, path, token, &[], body).await
    }

    /// [`send`](Self::send) with extra headers (a browser's `Cookie` and `Origin`, in tests).
    pub async fn send_with(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        headers: &[(&str, &str)],
        body: Option<Vec<u8>>,
    ) -> Result<Streaming, ClientError> {
        let io = self.endpoint.connect().await?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io)).await?;
        let driver = AbortOnDrop(tokio::spawn(async move {
            // A connection that ends with an error after its response has nothing left to
            // report: the response already carried what mattered.
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "connection ended");
            }
        }));
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, self.endpoint.host());
        if let Some(t) = token {
            req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let body = match body {
            Some(b) => {
                req = req.header(header::CONTENT_TYPE, "application/json");
                Full::new(Bytes::from(b))
            }
            None => Full::new(Bytes::new()),
        };
        let req = req
            .body(body)
            .map_err(|e| ClientError::Request(e.to_string()))?;
        let response = sender.send_request(req).await?;
        Ok(Streaming {
            response,
            _driver: driver,
        })
    }

    /// One request with this client's token; the whole answer (status, body), bounded by
    /// [`REQUEST_TIMEOUT`].
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<(StatusCode, Bytes), ClientError> {
        self.request_as(method, path, Some(&self.token.clone()), body)
            .await
    }

    /// One request with the given token (None: none at all); the whole answer.
    pub async fn request_as(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Vec<u8>>,
    ) -> Result<(StatusCode, Bytes), ClientError> {
        let bound = bound(&method, path);
        // Over the local socket (one clock), the server is told when this stops waiting, and
        // refuses the request unbegun if it reads it later (stopped with SIGSTOP meanwhile).
        let deadline = match self.endpoint {
            Endpoint::Unix(_) => (std::time::SystemTime::now() + bound)
                .duration_since(std::time::UNIX_EPOCH)
                .ok()
                .map(|d| d.as_millis().to_string()),
            Endpoint::Tcp(_) => None,
        };
        let headers: Vec<(&str, &str)> = deadline
            .as_deref()
            .map(|d| (corral_server::protocol::DEADLINE_HEADER, d))
            .into_iter()
            .collect();
        let exchange = async {
            let s = self.send_with(method, path, token, &headers, body).await?;
            let status = s.response.status();
            let bytes = whole(s.response.into_body()).await?;
            Ok((status, bytes))
        };
        tokio::time::timeout(bound, exchange)
            .await
            .map_err(|_| ClientError::NoAnswer {
                server: self.endpoint.describe(),
                deadline_sent: deadline.is_some(),
            })?
    }

    /// A request whose 2xx body decodes as `T`; any other answer is the server's error.
    pub async fn call<B: Serialize, T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
    ) -> Result<T, ClientError> {
        let body = body
            .map(serde_json::to_vec)
            .transpose()
            .map_err(|e| ClientError::Request(e.to_string()))?;
        let (status, bytes) = self.request(method, path, body).await?;
        decode(status, &bytes)
    }

    /// `GET /v1/health`.
    pub async fn health(&self) -> Result<Health, ClientError> {
        self.call::<(), _>(Method::GET, "/v1/health", None).await
    }

    /// `POST /v1/sessions`: starts a session.
    pub async fn spawn(&self, spec: &SessionSpec) -> Result<SessionInfo, ClientError> {
        self.call(Method::POST, "/v1/sessions", Some(spec)).await
    }

    /// `GET /v1/sessions`: every session the token may read, with the server's figures.
    pub async fn sessions(&self) -> Result<Vec<SessionView>, ClientError> {
        self.call::<(), _>(Method::GET, "/v1/sessions", None).await
    }

    /// `GET /v1/sessions/{key}`.
    pub async fn session(&self, key: &str) -> Result<SessionView, ClientError> {
        self.call::<(), _>(
            Method::GET,
            &format!("/v1/sessions/{}", path_segment(key)),
            None,
        )
        .await
    }

    /// `POST /v1/sessions/{key}/stop`: returns once everything is gone.
    pub async fn stop(&self, key: &str, grace: Option<f64>) -> Result<SessionInfo, ClientError> {
        self.call(
            Method::POST,
            &format!("/v1/sessions/{}/stop", path_segment(key)),
            Some(&StopBody { grace }),
        )
        .await
    }

    /// `DELETE /v1/sessions/{key}`: stops and forgets a session.
    pub async fn remove(&self, key: &str) -> Result<SessionInfo, ClientError> {
        self.call::<(), _>(
            Method::DELETE,
            &format!("/v1/sessions/{}", path_segment(key)),
            None,
        )
        .await
    }

    /// `POST /v1/tokens`: a session-scoped token.
    pub async fn create_token(&self, req: &TokenRequest) -> Result<TokenCreated, ClientError> {
        self.call(Method::POST, "/v1/tokens", Some(req)).await
    }

    /// `POST /v1/login/code`: a code that logs a browser in once as this client's token (what
    /// `corral web`'s link carries).
    pub async fn login_code(&self) -> Result<corral_server::protocol::LoginCode, ClientError> {
        self.call::<(), _>(Method::POST, "/v1/login/code", None)
            .await
    }

    /// `GET /v1/tokens`: the valid viewer and driver tokens (ids, never tokens).
    pub async fn tokens(&self) -> Result<TokenList, ClientError> {
        self.call::<(), _>(Method::GET, "/v1/tokens", None).await
    }

    /// `DELETE /v1/tokens/{id}`: revokes a viewer or driver token for good.
    pub async fn revoke_token(&self, id: &str) -> Result<TokenRevoked, ClientError> {
        self.call::<(), _>(
            Method::DELETE,
            &format!("/v1/tokens/{}", path_segment(id)),
            None,
        )
        .await
    }

    /// `POST /v1/upgrade`: the server hands over to the binary on disk (admin); answers once
    /// the successor is ready, before it serves.
    pub async fn upgrade(&self) -> Result<corral_server::upgrade::Handover, ClientError> {
        self.call::<(), _>(Method::POST, "/v1/upgrade", None).await
    }

    /// `POST /v1/shutdown`: the server leaves, stopping its sessions or (`keep_sessions`)
    /// leaving them under their holders (admin).
    pub async fn shutdown(
        &self,
        keep_sessions: bool,
    ) -> Result<corral_server::upgrade::ServerId, ClientError> {
        self.call(
            Method::POST,
            "/v1/shutdown",
            Some(&serde_json::json!({ "keep_sessions": keep_sessions })),
        )
        .await
    }

    /// `GET /v1/recovery`: what boot reconciliation did (admin).
    pub async fn recovery(&self) -> Result<serde_json::Value, ClientError> {
        self.call::<(), _>(Method::GET, "/v1/recovery", None).await
    }

    /// `POST /v1/sessions/{key}/events`: a hook event (raw JSON, as Claude Code wrote it).
    pub async fn post_hook(
        &self,
        key: &str,
        payload: Vec<u8>,
        ran_at: std::time::SystemTime,
    ) -> Result<HookAccepted, ClientError> {
        // When the hook ran (RFC 3339, UTC: no character a query needs escaped): a SessionEnd
        // from before the session's process started is a previous process's.
        let path = format!(
            "/v1/sessions/{}/events?at={}",
            path_segment(key),
            corral_actors::time::format(ran_at)
        );
        let (status, bytes) = self.request(Method::POST, &path, Some(payload)).await?;
        decode(status, &bytes)
    }

    /// `POST /v1/sessions/{key}/permission`: answers the permission the session's agent waits
    /// for.
    pub async fn answer_permission(
        &self,
        key: &str,
        answer: &corral_server::permission::Answer,
    ) -> Result<SessionView, ClientError> {
        self.call(
            Method::POST,
            &format!("/v1/sessions/{}/permission", path_segment(key)),
            Some(answer),
        )
        .await
    }

    /// `GET /v1/sessions/{key}/export?format=…`: the recording, streamed; a refusal is the
    /// server's error.
    pub async fn export(&self, key: &str, format: &str) -> Result<Streaming, ClientError> {
        let path = format!(
            "/v1/sessions/{}/export?format={}",
            path_segment(key),
            path_segment(format)
        );
        let s = self
            .send(Method::GET, &path, Some(&self.token.clone()), None)
            .await?;
        let status = s.response.status();
        if status.is_success() {
            return Ok(s);
        }
        let bytes = whole(s.response.into_body()).await?;
        Err(refusal(status, &bytes))
    }
}

/// The body of a 2xx answer as `T`, or the server's refusal.
pub fn decode<T: DeserializeOwned>(status: StatusCode, bytes: &[u8]) -> Result<T, ClientError> {
    if !status.is_success() {
        return Err(refusal(status, bytes));
    }
    serde_json::from_slice(bytes).map_err(|e| ClientError::Decode(format!("{e}")))
}

/// The error a non-2xx answer carries.
pub fn refusal(status: StatusCode, bytes: &[u8]) -> ClientError {
    match serde_json::from_slice::<ErrorBody>(bytes) {
        Ok(b) => ClientError::Api {
            status: status.as_u16(),
            code: Some(b.code),
            message: b.error,
        },
        Err(_) => ClientError::Api {
            status: status.as_u16(),
            code: None,
            message: format!(
                "server answered {status}: {}",
                String::from_utf8_lossy(bytes)
            ),
        },
    }
}

/// A session key or value as a URL path segment (names are free text).
pub fn path_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A server whose answer never ends is read up to ANSWER_MAX, then said to be too long (it
    /// was read into memory until the request's time bound).
    #[tokio::test]
    async fn an_answer_without_end_is_cut_at_its_bound() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut request = [0u8; 4096];
            assert!(s.read(&mut request).await.unwrap() > 0);
            s.write_all(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
                .await
                .unwrap();
            let chunk = format!("100000\r\n{}\r\n", "x".repeat(0x100000));
            let mut sent = 0usize;
            while s.write_all(chunk.as_bytes()).await.is_ok() {
                sent += 0x100000;
            }
            sent
        });
        let client = Client::tcp(&url, "t").unwrap();
        let got = client.request(Method::GET, "/v1/sessions", None).await;
        match got {
            Err(ClientError::Decode(e)) => assert!(e.contains("longer than 64 MiB"), "{e}"),
            Err(e) => panic!("expected a too-long answer, got {e}"),
            Ok((status, bytes)) => panic!(
                "expected a too-long answer, got {status} and {} bytes",
                bytes.len()
            ),
        }
        let sent = server.await.unwrap();
        assert!(sent < 2 * ANSWER_MAX, "{sent} bytes were sent");
    }

    /// A hook says when it ran in its query (`?at=`): it still waits as long as a question may
    /// (it was cut after 60 s, and the server withdrew the question it held).
    #[test]
    fn a_hook_with_a_query_waits_as_long_as_a_question() {
        let hook = corral_actors::agent::PERMISSION_WAIT_MAX + Duration::from_secs(10);
        assert_eq!(bound(&Method::POST, "/v1/sessions/a/events"), hook);
        assert_eq!(
            bound(
                &Method::POST,
                "/v1/sessions/a/events?at=2026-12-06T09%3A08%3A07.696Z"
            ),
            hook
        );
        assert_eq!(
            bound(&Method::POST, "/v1/sessions/a/stop?x=1"),
            REQUEST_TIMEOUT
        );
        assert_eq!(bound(&Method::POST, "/v1/sessions"), ACT_TIMEOUT);
    }
}
