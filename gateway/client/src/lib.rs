//! corral-client: the one client of a corral server, shared by the `corral` CLI, the bench and
//! chaos harness and the end-to-end tests.
//!
//! A [`Client`] finds a server through its data dir (`server.json` + `token`, talking over the
//! data dir's owner-only Unix socket) or is given a URL and a token (TCP). REST requests go
//! through hyper ([`http`]); the native WebSocket protocol goes through tokio-tungstenite
//! ([`ws`]) over the same kind of stream. Request and response bodies are corral-server's
//! protocol types, so a breaking protocol change fails to compile here instead of failing
//! silently at run time.

pub mod endpoint;
pub mod error;
pub mod http;
pub mod ws;

pub use endpoint::{Client, Endpoint};
pub use error::ClientError;
pub use ws::{Conn, Incoming};
