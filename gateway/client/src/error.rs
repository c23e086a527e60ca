//! ClientError: what can go wrong talking to a server, each with a message a user can act on.
//! A refusal by the server keeps its [`ErrorCode`], the same over HTTP and the WebSocket.

use std::path::PathBuf;

use corral_server::error::ErrorCode;

/// Why a request did not get an answer, or got a refusal.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No server publishes itself in this data dir.
    #[error("no corral server is running for {0} (start one with `corral serve`, or pass --url)")]
    NoServer(PathBuf),
    /// No token given and none readable in the data dir.
    #[error("no token in {0} (pass --token or set CORRAL_TOKEN)")]
    NoToken(PathBuf),
    /// `--url` names a server that is not this data dir's, and no token was given for it.
    #[error(
        "{0} is not this data dir's server: give its token (--token or CORRAL_TOKEN); the local admin token is sent only to the local server"
    )]
    TokenForUrl(String),
    /// A URL this client cannot use.
    #[error("only http:// URLs are supported, not {0}")]
    BadUrl(String),
    /// The data dir cannot be read by this user (its mode, another user's): whether a server
    /// runs there is not known.
    #[error("cannot read {}: {source}", path.display())]
    DataDir {
        /// What could not be read.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The server cannot be reached.
    #[error("cannot reach the server at {addr} (is it running?): {source}")]
    Connect {
        /// Where.
        addr: String,
        /// Why.
        source: std::io::Error,
    },
    /// The data dir's socket is served by a process of another user: nothing (no token) is
    /// sent to it.
    #[error(
        "the socket {path} is served by uid {uid}, not by this user: nothing is sent to it (is the data dir another user's?)"
    )]
    NotOurs {
        /// The socket.
        path: PathBuf,
        /// The serving process's uid.
        uid: u32,
    },
    /// No answer in time.
    #[error("the server at {0} did not answer in time")]
    Timeout(String),
    /// A request sent whole was not answered in time: the server may be stopped (SIGSTOP) or
    /// stalled, and what becomes of the request is said (see `protocol::DEADLINE_HEADER`).
    #[error(
        "the server at {server} did not answer in time (is it stopped, or overloaded?); {}",
        if *.deadline_sent {
            "if it reads this request later it refuses it unbegun, one it had begun may still finish: `corral ps` tells"
        } else {
            "it may still carry this request out when it resumes: `corral ps` tells"
        }
    )]
    NoAnswer {
        /// The server.
        server: String,
        /// The request carried its deadline.
        deadline_sent: bool,
    },
    /// HTTP failed (connection reset, malformed answer...).
    #[error("HTTP: {0}")]
    Http(#[from] hyper::Error),
    /// The request could not be built.
    #[error("bad request: {0}")]
    Request(String),
    /// The server refused the request.
    #[error("{message}")]
    Api {
        /// HTTP status (0 over the WebSocket).
        status: u16,
        /// The error kind.
        code: Option<ErrorCode>,
        /// The server's message.
        message: String,
    },
    /// The WebSocket failed.
    #[error("WebSocket: {0}")]
    WebSocket(#[from] tokio_tungstenite::tungstenite::Error),
    /// The WebSocket closed.
    #[error("connection closed: {0}")]
    Closed(String),
    /// An answer that does not decode as the protocol says.
    #[error("unexpected answer: {0}")]
    Decode(String),
}

impl ClientError {
    /// No answer from a server: none there, or one that stopped taking requests (a reset, a
    /// connection refused, no answer in time) — as opposed to an answer that refused.
    pub fn is_unreachable(&self) -> bool {
        matches!(
            self,
            ClientError::NoServer(_)
                | ClientError::Connect { .. }
                | ClientError::Timeout(_)
                | ClientError::NoAnswer { .. }
                | ClientError::Http(_)
        )
    }

    /// The HTTP status the server refused with (an API call's, or a WebSocket upgrade's); a
    /// refusal over the WebSocket says its kind instead, mapped to the status HTTP gives it.
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Api { status, .. } if *status != 0 => Some(*status),
            ClientError::Api {
                code: Some(ErrorCode::Unauthorized),
                ..
            } => Some(401),
            ClientError::Api {
                code: Some(ErrorCode::Forbidden),
                ..
            } => Some(403),
            ClientError::WebSocket(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                Some(response.status().as_u16())
            }
            _ => None,
        }
    }

    /// The server's error code, when the server refused.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            ClientError::Api { code, .. } => *code,
            _ => None,
        }
    }
}
