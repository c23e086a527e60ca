//! Persistence (issue #4): the registry and event journal in SQLite, and each session's
//! scrollback log on disk, written by one persister thread.
//!
//! - [`persister`]: the Persister actor (first started, last stopped) and [`Persist`], the async
//!   API over its thread;
//! - [`writer`]: the thread itself: group commits, output copied from Rings into segment logs,
//!   retries, syncs;
//! - [`journal`]: what sessions send it ([`Journal`], [`Tap`]) and the registry record types;
//! - [`store`]: the SQLite schema, migrations and statements;
//! - [`segment`]: segment files, framing, crash recovery, rotation, retention, reads and the
//!   asciicast export;
//! - [`codec`]: the record payload encoding, the only place that knows bincode;
//! - [`error`]: [`PersistError`], the typed failure of every persistence operation.

pub mod codec;
pub mod error;
pub mod journal;
pub mod persister;
pub mod segment;
pub mod store;
mod syncer;
mod writer;

pub use codec::{CodecError, Record};
pub use error::PersistError;
pub use journal::{Committed, Journal, PersistStats, SessionRecord, SessionRow, Tap};
pub use persister::{EndedRetention, Persist, PersistConfig, Persister};
pub use segment::{
    Chunk, Damage, DamageKind, FsyncPolicy, LogReader, Recovery, SegmentConfig, SegmentLog,
};
pub use store::{EventRetention, Store};
pub use writer::MAX_PENDING;
