//! Persistence of session output on disk: the per-session scrollback log (issue #4, item 2).
//!
//! The Ring keeps the last megabyte of a session's output in memory; this module keeps a longer,
//! bounded history on disk so a client can resume from an offset the Ring no longer holds, and
//! so the output of a session survives corral itself. Each session gets a directory
//! `<data>/logs/<session>/` of append-only segment files ([`SegmentLog`]), written by the
//! persister on a dedicated thread with plain blocking I/O (no tokio here).
//!
//! - [`segment`]: segment files, framing, crash recovery, rotation, retention, reads and the
//!   asciicast export;
//! - [`codec`]: the record payload encoding, the only place that knows bincode.

pub mod codec;
pub mod segment;

pub use codec::{CodecError, Record};
pub use segment::{
    Chunk, Damage, DamageKind, FsyncPolicy, LogReader, Recovery, SegmentConfig, SegmentLog,
};
