//! Holder: what keeps a PTY session alive when its server dies (the shim pattern of
//! containerd-shim and conmon: the process that holds a session is not the process that serves
//! the API).
//!
//! - [`run`]: the holder process (`corral holder`), one per session: parent and subreaper of the
//!   session's program, owner of its PTY master, reader of its output into a [`spool`] before
//!   anything else sees it;
//! - [`wire`]: protocol v1 between a server and a holder (SEQPACKET, JSON, fds by SCM_RIGHTS);
//! - [`launch`]: the server starting a holder, or attaching to one a previous server started;
//! - the server's actor on one holder connection is the session's: `crate::session::link`.
//!
//! The output path with a holder: PTY → holder → spool (page cache) → pipe → the session's
//! output reader → Ring → log, and the log's progress is acknowledged back so the spool stays
//! small. A server SIGKILLed at any instant loses nothing: what it had not logged is still in
//! the spool, and the next server asks for the output from its log's end.

pub mod launch;
pub mod run;
pub mod spool;
pub mod wire;

pub use launch::{Attached, Holders};
