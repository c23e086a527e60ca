//! A session's scrollback log on disk: append-only segment files with crash recovery.
//!
//! # Layout
//!
//! `<dir>/<n>.seg`, `n` = 0, 1, 2… zero-padded to 8 digits so a directory listing sorts in log
//! order (names are parsed as numbers, so 9-digit ones would still sort right; files not named
//! this way are ignored). Each file is a sequence of
//! frames `[len u32 LE][crc32 u32 LE][payload]`, the CRC (crc32fast, IEEE) covering the payload,
//! the payload being a [`Record`] as encoded by [`codec`]. Records are offset-contiguous across
//! the whole log: each starts where the previous one ended, and output the persister never got
//! is an explicit [`Record::Gap`], never a silent hole. Only the last segment is ever written;
//! the earlier ones are *sealed*.
//!
//! # Recovery ([`SegmentLog::open`])
//!
//! Every record of every segment is read and checked (frame length, CRC, decoding, contiguity).
//! In the last segment a bad record is the usual torn tail of a crash mid-write, and the file is
//! truncated just before it: the log ends there ([`Recovery::tail_cut`]). A bad record in an
//! earlier, *sealed* segment (synced before its successor was created, unless
//! [`FsyncPolicy::Never`]) is not a crash artifact but a damaged disk or a foreign write, and
//! the later segments are as good as their own CRCs say: the damaged segment is cut at the bad
//! record and ends with a [`Record::Gap`] up to where the next segment starts, and the log goes
//! on through the later segments ([`Recovery::lost`] names each such range). A segment that
//! starts past where the previous one ended (the previous one lost whole frames at its end)
//! gets the gap at the end of the previous one. The gap frame is written over the damage before
//! the file is cut after it, so a crash during recovery leaves a state from which the next open
//! reaches the same log. Only when the later segments cannot continue the log (damaged from
//! their first record, or starting before the cut) does the log end at the damage, the later
//! segments removed (newest first, before the truncation: idempotent too). Reading a whole log
//! costs one sequential pass over at most `max_total_bytes + segment_bytes`.
//!
//! # Writing ([`SegmentLog::append`])
//!
//! Appends carry the output offset of their first byte. An offset past the log's end first
//! writes a [`Record::Gap`] for the missing bytes; an offset before it writes only the new
//! suffix, so replaying after an error is harmless. Appends are split into records of at most
//! [`MAX_RECORD_BYTES`] (and small enough to fit a segment); a record that does not fit in the
//! current segment goes into a new one, so no segment exceeds `segment_bytes`. After a
//! rotation (and at open, in case the limits shrank) the oldest segments are deleted, whole,
//! while the sealed ones total more than `max_total_bytes`; the current segment is always kept,
//! so on disk a log holds at most `max_total_bytes + segment_bytes`. (Counting only sealed
//! segments makes the rule the same at every rotation and at open: reopening a log never
//! deletes what the writer had kept.) Each record is one `write(2)` of the whole frame; a failed
//! write is rolled back (the file truncated to its previous length) so the log never keeps a
//! torn frame in its middle.
//!
//! # Durability: what a power failure loses under each [`FsyncPolicy`]
//!
//! A record is in the page cache once `append` returns, so it survives a crash of corral itself
//! under every policy. A power failure (or kernel crash) loses:
//!
//! - [`FsyncPolicy::EveryAppend`]: nothing that `append` acknowledged (each record is followed
//!   by `fdatasync`; new segment files and deletions are followed by an fsync of the directory).
//!   This costs one disk flush per record.
//! - [`FsyncPolicy::OnRotate`] (default): the records appended since the later of the last
//!   rotation and the last [`SegmentLog::sync`], so at most one segment (`segment_bytes`, 4 MiB
//!   by default). A segment is synced before the next one is created, so sealed segments are
//!   always complete and only the current one can come back torn. The owner is expected to call
//!   `sync` at its own pace (e.g. after each batch and at shutdown).
//! - [`FsyncPolicy::Never`]: anything the kernel had not written back yet (typically up to ~30 s
//!   of output), and, because sealed segments may then be torn too and recovery keeps a prefix,
//!   possibly everything after the first incomplete segment. Meant for tests and scratch data.
//!
//! After such a loss the log reopens with a `next_offset` behind the owner's offsets, and the
//! owner's next append records the lost range as a [`Record::Gap`]: lost, but not silently.
//! After a failed `fdatasync` the kernel may already have dropped the dirty pages, so the file's
//! real content is unknown: the log then refuses further writes until it is reopened (which
//! re-reads and re-checks everything).
//!
//! # Reading
//!
//! [`SegmentLog::read_range`] and [`SegmentLog::export_asciicast`] read the files directly. For
//! readers on other threads, [`SegmentLog::reader`] hands out a [`LogReader`]: a copy of the small
//! in-memory index (per segment: number, length, offsets, a sparse offset → file position index)
//! that reads the files without the writer. It sees the log as of when it was taken; a segment
//! deleted by retention since then reads as a [`Chunk::Gap`].

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Serialize;

pub use super::codec::MAX_RECORD_BYTES;
use super::codec::{CodecError, MAX_DATA_OVERHEAD, MAX_PAYLOAD_BYTES};

mod asciicast;
mod reader;
mod scan;
mod writer;

pub use asciicast::Resize;
pub use reader::LogReader;
pub use writer::SegmentLog;
pub(crate) use writer::owner_only;

/// Smallest accepted `segment_bytes`: a segment must hold a useful record plus its framing.
pub const MIN_SEGMENT_BYTES: u64 = 1024;

/// `[len u32 LE][crc32 u32 LE]` before each payload.
const FRAME_HEADER: usize = 8;

/// One sparse-index entry per this many bytes of a segment file, so a read seeks close to its
/// offset instead of scanning the segment from the start (≤ 64 entries per 4 MiB segment).
const INDEX_INTERVAL: u64 = 64 * 1024;

/// Read buffer for scans and reads.
const READ_BUFFER: usize = 128 * 1024;

/// When to `fdatasync` segment files. See the module doc for what each one loses on power
/// failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FsyncPolicy {
    /// Never; the kernel writes back when it likes.
    Never,
    /// After every record.
    EveryAppend,
    /// When a segment is sealed, plus whenever the owner calls [`SegmentLog::sync`].
    #[default]
    OnRotate,
}

/// Size limits and durability of one session's log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentConfig {
    /// A segment is sealed and a new one started before it would exceed this many bytes
    /// (at least [`MIN_SEGMENT_BYTES`]). Default 4 MiB.
    pub segment_bytes: u64,
    /// After a rotation, the oldest segments are deleted while the sealed ones (all but the
    /// current segment, which is always kept) total more than this, so the log's files never
    /// exceed `max_total_bytes + segment_bytes`. Default 64 MiB.
    pub max_total_bytes: u64,
    /// When to fsync. Default [`FsyncPolicy::OnRotate`].
    pub fsync: FsyncPolicy,
}

impl Default for SegmentConfig {
    fn default() -> Self {
        SegmentConfig {
            segment_bytes: 4 << 20,
            max_total_bytes: 64 << 20,
            fsync: FsyncPolicy::OnRotate,
        }
    }
}

/// What [`SegmentLog::open`] found and repaired.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recovery {
    /// Records (data and gaps) kept in the log.
    pub records: u64,
    /// Bytes cut from the end of the segment where damage was found.
    pub truncated_bytes: u64,
    /// Whole segments removed because they came after the damage.
    pub removed_segments: usize,
    /// Oldest offset the log covers, `None` if it holds no record.
    pub first_offset: Option<u64>,
    /// Offset the next append continues at (0 for an empty log).
    pub next_offset: u64,
    /// The first bad record, if any.
    pub damage: Option<Damage>,
    /// Output ranges that damage in sealed segments made unreadable, now gaps in the log
    /// (the later segments kept).
    pub lost: Vec<(u64, u64)>,
    /// The log was cut at damage with nothing readable after it: it now ends at this offset,
    /// and whatever followed is gone (unless a holder still has it).
    pub tail_cut: Option<u64>,
}

/// Where and why a log stopped being readable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Damage {
    /// Number of the segment file (`<segment>.seg`).
    pub segment: u64,
    /// Byte position of the bad frame in that file.
    pub position: u64,
    /// What was wrong with it.
    pub kind: DamageKind,
}

impl fmt::Display for Damage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "segment {} at byte {}: {}",
            self.segment, self.position, self.kind
        )
    }
}

/// What was wrong with a bad frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DamageKind {
    /// The file ends inside the frame (a write cut short).
    Torn,
    /// The length field is zero or larger than any record can be.
    BadLength(u32),
    /// The payload does not match its CRC.
    BadCrc,
    /// The payload passed its CRC but is not a record.
    Undecodable(CodecError),
    /// The record covers no bytes or its end overflows `u64`; the writer never produces either.
    BadRange,
    /// The record does not start where the previous one ended.
    NotContiguous {
        /// Where the previous record ended.
        expected: u64,
        /// Where this one starts.
        found: u64,
    },
}

impl fmt::Display for DamageKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DamageKind::Torn => f.write_str("torn frame (file ends inside it)"),
            DamageKind::BadLength(len) => write!(f, "impossible frame length {len}"),
            DamageKind::BadCrc => f.write_str("CRC mismatch"),
            DamageKind::Undecodable(e) => write!(f, "{e}"),
            DamageKind::BadRange => f.write_str("record covers an empty or overflowing range"),
            DamageKind::NotContiguous { expected, found } => {
                write!(f, "record starts at offset {found}, expected {expected}")
            }
        }
    }
}

/// A piece of a session's output as read back from the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Chunk {
    /// Output bytes starting at `offset`.
    Data {
        /// Offset of `bytes[0]`.
        offset: u64,
        /// The bytes.
        bytes: Vec<u8>,
    },
    /// Output `[from, to)` is not in the log: never persisted, or deleted by retention.
    Gap {
        /// First missing offset.
        from: u64,
        /// First offset after the missing range.
        to: u64,
    },
}

/// The in-memory description of one segment file.
#[derive(Debug, Clone)]
struct Segment {
    /// File number: `<n>.seg`.
    n: u64,
    /// Valid bytes in the file (whole frames only).
    len: u64,
    /// Offset of the first record, `None` while the segment holds none.
    first: Option<u64>,
    /// Offset after the last record; meaningful only when `first` is `Some`.
    end: u64,
    /// Records in the file.
    records: u64,
    /// Sparse `(record start offset, file position)` pairs, ascending; the first record is
    /// always entry 0.
    index: Vec<(u64, u64)>,
}

impl Segment {
    fn empty(n: u64) -> Self {
        Segment {
            n,
            len: 0,
            first: None,
            end: 0,
            records: 0,
            index: Vec::new(),
        }
    }

    /// Accounts for a record of `frame_len` bytes covering `[start, end)` written at `self.len`.
    fn push(&mut self, start: u64, end: u64, frame_len: u64) {
        let pos = self.len;
        if self.first.is_none() {
            self.first = Some(start);
        }
        if self
            .index
            .last()
            .is_none_or(|&(_, last)| pos >= last + INDEX_INTERVAL)
        {
            self.index.push((start, pos));
        }
        self.end = end;
        self.len += frame_len;
        self.records += 1;
    }

    /// File position of a record at or before the one holding `offset` (0 if none is indexed).
    fn seek_hint(&self, offset: u64) -> u64 {
        match self.index.partition_point(|&(start, _)| start <= offset) {
            0 => 0,
            i => self.index[i - 1].1,
        }
    }

    /// `[first, end)` when the segment holds records.
    fn range(&self) -> Option<(u64, u64)> {
        self.first.map(|first| (first, self.end))
    }
}

/// Where the records of `segments` end (the offset after the last one), None if they hold none.
fn log_end(segments: &[Segment]) -> Option<u64> {
    segments
        .iter()
        .rev()
        .find_map(Segment::range)
        .map(|(_, end)| end)
}

pub(super) fn segment_path(dir: &Path, n: u64) -> PathBuf {
    dir.join(format!("{n:08}.seg"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seek_hint_finds_the_indexed_record_at_or_before() {
        let mut s = Segment::empty(0);
        for i in 0..100 {
            s.push(i * 10_000, (i + 1) * 10_000, 10_000);
        }
        assert!(s.index.len() > 1 && s.index.len() < 20);
        for offset in [0, 5, 10_000, 123_456, 999_999] {
            let pos = s.seek_hint(offset);
            // Record at file position p starts at offset p here.
            assert!(pos <= offset && offset - pos <= INDEX_INTERVAL + 10_000);
        }
    }
}
