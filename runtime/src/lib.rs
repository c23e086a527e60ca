//! # corral-runtime
//!
//! Generic supervision on [ractor]: it knows nothing of PTYs, agents or HTTP, so any ractor
//! application can use it.
//!
//! ractor 0.16 gives actors, links and `SupervisionEvent`, but no restart strategies, no restart
//! intensity, no backoff, unbounded mailboxes with no depth readout, and it *kills* children
//! (skipping `post_stop`) when a parent exits. This crate adds:
//!
//! - [`Supervisor`]: Erlang/OTP supervisor semantics ([`ChildSpec`], [`Restart`], [`Shutdown`],
//!   [`Strategy`], restart [`Intensity`], per-child [`Backoff`], dynamic children, ordered start
//!   and reverse-ordered stop) and a serializable [`TreeNode`] snapshot for introspection.
//! - [`BoundedRef`]: an `ActorRef` with a capacity; `try_send` says [`SendError::Full`] instead of queueing
//!   without bound, and its depth is readable.
//! - [`Ring`]: a bounded byte log addressed by offset with many independent readers; a reader that
//!   falls behind gets an explicit [`Lagged`] range instead of silent loss.
//!
//! The rule that shapes everything here: ractor does not run `post_stop` after a panic, an `Err`
//! or a kill, so OS resources are released in `Drop` of an actor's `State`, never in `post_stop`.

pub mod ring;

pub use ring::{Lagged, OffsetBeyondHead, Read, Ring, RingReader};

pub mod backoff;
pub mod bounded;
pub mod child_spec;
pub mod exit;
pub mod intensity;
pub mod seconds;
pub mod supervisor;
pub mod tree;

pub use backoff::{Backoff, BackoffState};
pub use bounded::{BoundedRef, BoundedSender, MailboxGauge, Permit, SendError};
pub use child_spec::{ChildSpec, Restart, Shutdown, StartFn, StartFuture, Started};
pub use exit::ExitReason;
pub use intensity::{Intensity, RestartWindow};
pub use supervisor::{
    Strategy, Supervisor, SupervisorError, SupervisorMsg, SupervisorRef, SupervisorSpec,
    SupervisorState,
};
pub use tree::{NodeKind, Probe, Status, TreeNode};
