//! corral-server: corral's server as a library.
//!
//! [`serve::serve`] runs what `corral serve` runs: it opens and locks a data dir, starts the
//! session tree ([`corral_actors::Corral`]) and serves the HTTP + WebSocket edge on TCP and on
//! the data dir's Unix socket until SIGTERM/SIGINT, then stops in order. The pieces are public
//! so that an embedding application or a test can link them: the wire formats ([`protocol`],
//! [`ttyd`]) that the fuzzers and the client crate share, the tokens ([`auth`]), the typed API
//! error ([`error`]) and the router ([`routes::router`]).
//!
//! No command-line parsing and no terminal code live here (those are the `corral` binary's, in
//! corral-cli); the only HTTP/WebSocket client is corral-client.

pub mod access;
pub mod agentapi;
pub mod app;
pub mod atomic;
pub mod auth;
pub mod config;
pub mod connection;
pub mod connections;
pub mod conversation;
pub mod datadir;
pub mod deadline;
pub mod error;
pub mod http;
pub mod http_url;
pub mod in_flight;
pub mod introspect;
pub mod listen;
pub mod login_code;
pub mod metrics;
pub mod mute;
pub mod notify;
pub mod permission;
pub mod protocol;
pub mod routes;
pub mod serve;
pub mod spool;
pub mod systemd;
pub mod token_log;
pub mod ttyd;
pub mod turn;
pub mod unix;
pub mod upgrade;
pub mod usage;
pub mod watch;
pub mod web;
