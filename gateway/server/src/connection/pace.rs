//! Pace: how a connection obeys its limits without dropping anything. A message over the
//! messages-per-second limit, input over the bytes-per-second limit, or input for a session
//! whose queue is full (the process is not reading) is *held*: the connection stops reading its
//! socket until the message can go (TCP then pushes back on the sender), while output keeps
//! flowing to it. Only a hold longer than `limits.input_stall_secs` (default 30 s) — a process
//! that has not read its input for that long while the client keeps sending — ends the
//! connection, with an error frame first (native), close code 1008 and a reason, counted in
//! /metrics as `input_stalled`.

use std::time::Duration;

use axum::extract::ws::Message;
use tokio::time::Instant;

/// How soon a full input queue is tried again.
pub const QUEUE_RETRY: Duration = Duration::from_millis(5);

/// A message waiting for its turn.
pub struct Held {
    /// The message, as it arrived.
    pub msg: Message,
    /// When to try it again.
    pub at: Instant,
    /// When it first had to wait.
    pub since: Instant,
    /// Which limits it already passed (they are not charged twice).
    pub passed: Passed,
}

/// The limits a held message already passed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Passed {
    /// The messages-per-second limit.
    pub message: bool,
    /// The input bytes-per-second limit.
    pub bytes: bool,
}

/// Why a message must wait, decided while handling it.
#[derive(Debug, Clone, Copy)]
pub struct Wait {
    /// For how long.
    pub delay: Duration,
    /// The limits it passed before it had to wait.
    pub passed: Passed,
}
