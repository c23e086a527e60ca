//! # corral-actors
//!
//! The agent-session domain of corral, as ractor actors on corral-runtime's supervision:
//!
//! - [`Sessions`] / [`SessionHandle`]: the public API (spawn, list, get by id or name in O(1),
//!   input, resize, subscribe from an offset, snapshot, stop, kill, restart, remove, events);
//! - [`session`]: one actor per agent process (PTY or pipes), its lifecycle and restart policy,
//!   its shared state, its output reader and its byte-bounded input writer;
//! - [`screen`]: a headless terminal emulator fed lazily from the Ring, for snapshots;
//! - [`holder`]: the process that keeps a PTY session alive when its server dies, and the
//!   server's side of it;
//! - [`process`]: the one module that knows Linux process details (pidfd, /proc, sweeps, reaper);
//! - [`Corral`]: the whole tree started with one call, standalone or under a host actor.
//!
//! OS resources are released in `Drop` of actor state (ractor skips `post_stop` after a kill or
//! a panic): a killed Session actor still kills its process tree and closes its fds.

pub mod agent;
pub mod attention;
pub mod blocking;
pub mod charset;
pub mod corral;
pub mod env;
pub mod error;
pub mod event;
mod fd;
pub mod handle;
pub mod history;
pub mod holder;
pub mod janitor;
pub mod manager;
pub mod persist;
pub mod pipe;
pub mod process;
pub mod pty;
pub mod questions;
pub mod recovery;
pub mod reports;
pub mod screen;
pub mod session;
pub mod spec;
pub mod stream_json;
pub mod subscription;
pub mod terminal;
pub mod time;

pub use corral::{Corral, CorralConfig, StartError};
/// corral-runtime, which this crate's API speaks (`SupervisorError`, `Backoff`, `Lagged`,
/// `Intensity`): an embedder depends on corral-actors alone, at a version that matches.
pub use corral_runtime;
pub use error::SessionError;
pub use event::{EventKind, SessionEvent, SessionState};
pub use handle::SessionHandle;
pub use manager::{Sessions, SessionsConfig};
pub use screen::Snapshot;
pub use session::SessionInfo;
pub use session::bulk::stats as bulk_reading_stats;
pub use session::pace::stats as pacing_stats;
pub use session::{Begin, ViewerId};
pub use spec::SpecError;
pub use spec::{Mode, RestartPolicy, SessionSpec, Size};
pub use subscription::{Item, Subscription};
/// Sessions are named by these ids (`SessionHandle::id`): the same crate, for a host to name
/// them without a dependency of its own.
pub use uuid;
