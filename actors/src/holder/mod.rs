//! Holder: what keeps a session alive when its server dies (the shim pattern of
//! containerd-shim and conmon: the process that holds a session is not the process that serves
//! the API).
//!
//! - [`run`]: the holder process (`corral holder`), one per session: parent and subreaper of the
//!   session's program, owner of its PTY master (or pipes), reader of its output into a shared
//!   [`ring`] before anything else sees it;
//! - [`streams`]: a pipe session's stdout and stderr, merged into the ring in whole lines;
//! - [`uring`]: the server reading a terminal itself, each read's count left where the holder
//!   finds it if that server dies;
//! - [`wire`]: protocol v2 between a server and a holder (SEQPACKET, JSON, fds by SCM_RIGHTS);
//! - [`launch`]: the server starting a holder, or attaching to one a previous server started;
//! - the server's actor on one holder connection is the session's: `crate::session::link`.
//!
//! The output path with a holder: PTY or pipes → (the holder's `read(2)`) shared ring → (the server's
//! copy) session Ring → log, and the log's progress is written back into the ring so the
//! holder may reuse the space. A server SIGKILLed at any instant loses nothing: what it had not
//! logged is still in the ring, and the next server asks for the output from its log's end.

pub mod launch;
pub mod ring;
pub mod run;
pub mod streams;
mod timer;
pub mod uring;
pub mod wire;

pub use launch::{Attached, HeldIo, Holders};
