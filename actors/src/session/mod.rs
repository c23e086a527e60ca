//! Session: everything one agent process is, in one room.
//!
//! - [`actor`]: the Session actor — lifecycle, restart policy, stop/kill of the whole process
//!   tree — and the owner of everything below (its process's start and end in `actor/start.rs`
//!   and `actor/finish.rs`);
//! - [`shared`]: what callers read without messaging the actor (identity, the output Ring,
//!   status, the input queue, events);
//! - [`output`]: the output reader (AsyncFd → Ring, exit via pidfd, drain to EOF/EIO) and
//!   [`bulk`], its flood mode on a blocking thread;
//! - [`lines`]: what a pipe session's output lines mean (NDJSON, stream-json events);
//! - [`input`]: the byte-bounded input writer;
//! - [`link`]: the connection to the process's holder, when it has one (exit, loss), and
//!   [`held`], the output reader of such a process (from the holder's shared ring), which
//!   [`pace`]s its copy by the subscribers that keep up — or, for a terminal whose holder
//!   lends this server an io_uring, [`kept`]: the output reader reads it itself, into the
//!   holder's ring;
//! - [`msg`]: the actor's messages.
//!
//! The output path of one PTY read: `output.rs` (or `bulk.rs` in a flood) reads into the Ring
//! held by `shared.rs`; the persister and the subscribers read the Ring from there.

pub mod actor;
pub mod bulk;
pub mod held;
pub mod input;
pub mod kept;
pub mod lines;
pub mod link;
pub mod msg;
pub mod output;
pub mod pace;
pub mod parts;
pub mod shared;
mod spawned;

pub use actor::{Begin, INPUT_QUEUE_BYTES, Session, SessionArgs};
pub use msg::{SessionMsg, ViewerId};
pub use shared::{SessionInfo, SessionShared};
