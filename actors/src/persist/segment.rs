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
//! The log is always a clean *prefix*: the first bad record ends it. In the last segment this is
//! the usual torn tail of a crash mid-write, and the file is truncated just before it. A bad
//! record in an earlier, sealed segment also ends the log there: that segment is truncated and
//! every later segment is removed. Why not keep the later segments behind a gap: a sealed
//! segment was synced before its successor was created (unless [`FsyncPolicy::Never`]), so
//! damage there is not a crash artifact but a damaged disk or a foreign write, and whatever
//! follows it can no longer be trusted to continue it; a prefix is also what makes recovery
//! idempotent. Later segments are removed (newest first) before the truncation, so a crash
//! during recovery leaves a state from which the next open reaches the same result. Reading a
//! whole log costs one sequential pass over at most `max_total_bytes + segment_bytes`.
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
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::codec::{self, CodecError, MAX_DATA_OVERHEAD, MAX_PAYLOAD_BYTES, Record, RecordRef};

/// Most output bytes in one record; larger appends are split into several records.
pub const MAX_RECORD_BYTES: usize = 1 << 20;

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
    /// The first bad record, if any: where the log now ends.
    pub damage: Option<Damage>,
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

fn segment_path(dir: &Path, n: u64) -> PathBuf {
    dir.join(format!("{n:08}.seg"))
}

/// The append side of one session's log. Owned by one thread (the persister); see
/// [`SegmentLog::reader`] for reading from others.
#[derive(Debug)]
pub struct SegmentLog {
    /// The session's log directory.
    dir: PathBuf,
    /// Limits and fsync policy.
    config: SegmentConfig,
    /// Retained segments, oldest first; never empty, the last one is `file`.
    segments: Vec<Segment>,
    /// The last segment, opened for appending.
    file: File,
    /// Sum of `segments[..].len`.
    total_bytes: u64,
    /// Offset after the last record (0 for an empty log).
    next_offset: u64,
    /// Why writes are refused until the log is reopened, after a write that could not be
    /// rolled back or a failed fsync.
    poisoned: Option<String>,
    /// Reused frame buffer.
    frame: Vec<u8>,
}

impl SegmentLog {
    /// Opens (creating it if needed) the log in `dir`, checks every record and repairs the
    /// damage it finds as described in the module doc.
    ///
    /// Errors: an invalid `config` (`InvalidInput`), or an I/O error reading or repairing the
    /// files; damaged records are not errors, they are reported in [`Recovery`].
    pub fn open(
        dir: impl AsRef<Path>,
        config: SegmentConfig,
    ) -> io::Result<(SegmentLog, Recovery)> {
        let dir = dir.as_ref().to_path_buf();
        if config.segment_bytes < MIN_SEGMENT_BYTES {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "segment_bytes {} is below the minimum of {MIN_SEGMENT_BYTES}",
                    config.segment_bytes
                ),
            ));
        }
        fs::create_dir_all(&dir)?;
        let scan = scan_dir(&dir)?;
        let mut segments = scan.segments;
        let mut truncated_bytes = 0;
        let removed_segments = scan.after_damage.len();
        if let Some(damage) = &scan.damage {
            tracing::warn!(dir = %dir.display(), %damage, removed_segments,
                "segment log damaged: keeping the records before the damage");
            // Newest first, then the truncation: a crash anywhere in here leaves a log whose
            // next open finds the same damage, or none, and ends at the same record.
            for n in scan.after_damage.iter().rev() {
                remove_if_exists(&segment_path(&dir, *n))?;
            }
            let path = segment_path(&dir, damage.segment);
            let file = OpenOptions::new().write(true).open(&path)?;
            // invariant: the scan stops at the damaged segment, so it is the last one kept.
            let kept = segments.last().expect("the damaged segment is kept").len;
            truncated_bytes = scan.damaged_file_len.saturating_sub(kept);
            file.set_len(kept)?;
            file.sync_all()?;
            sync_dir(&dir)?;
        }
        if segments.is_empty() {
            let file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(segment_path(&dir, 0))?;
            if config.fsync != FsyncPolicy::Never {
                file.sync_all()?;
                sync_dir(&dir)?;
            }
            segments.push(Segment::empty(0));
        }
        // invariant: made non-empty just above.
        let current = segments.last().expect("at least one segment");
        let file = OpenOptions::new()
            .append(true)
            .open(segment_path(&dir, current.n))?;
        let next_offset = segments
            .iter()
            .rev()
            .find_map(Segment::range)
            .map_or(0, |(_, end)| end);
        let total_bytes = segments.iter().map(|s| s.len).sum();
        let mut log = SegmentLog {
            dir,
            config,
            segments,
            file,
            total_bytes,
            next_offset,
            poisoned: None,
            frame: Vec::new(),
        };
        // The limits may have shrunk since the log was written. A failure here is not worth
        // refusing the log: it is logged, and retried at the next rotation.
        if let Err(e) = log.enforce_retention() {
            tracing::warn!(dir = %log.dir.display(), error = %e,
                "segment log: retention at open failed; retrying at the next rotation");
        }
        let recovery = Recovery {
            records: log.segments.iter().map(|s| s.records).sum(),
            truncated_bytes,
            removed_segments,
            first_offset: log.first_offset(),
            next_offset: log.next_offset,
            damage: scan.damage,
        };
        Ok((log, recovery))
    }

    /// Appends output bytes `[offset, offset + bytes.len())`.
    ///
    /// - `offset` past [`next_offset`](Self::next_offset): a [`Record::Gap`] for the missing
    ///   bytes is written first (also when `bytes` is empty).
    /// - `offset` before it: only the part of `bytes` past `next_offset` is written, so replays
    ///   are idempotent.
    ///
    /// On error nothing partial stays in the file (a failed write is rolled back; if even that
    /// fails the log refuses writes until reopened). Records written before an error stay
    /// written (an error from retention, for one, comes after the record that rotated), so the
    /// caller simply retries the same append later: only what is still missing gets written.
    pub fn append(&mut self, offset: u64, time_ms: u64, bytes: &[u8]) -> io::Result<()> {
        self.check_poisoned()?;
        let Some(end) = offset.checked_add(bytes.len() as u64) else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "append overflows u64 offsets",
            ));
        };
        if offset > self.next_offset {
            self.write_record(&RecordRef::Gap {
                from: self.next_offset,
                to: offset,
            })?;
        }
        if end <= self.next_offset {
            return Ok(());
        }
        // Offsets before next_offset were written already; the difference fits in the slice.
        let mut rest = &bytes[(self.next_offset - offset) as usize..];
        let max_chunk = self.max_chunk();
        while !rest.is_empty() {
            let (piece, tail) = rest.split_at(rest.len().min(max_chunk));
            let record = RecordRef::Data {
                offset: self.next_offset,
                time_ms,
                bytes: piece,
            };
            self.write_record(&record)?;
            rest = tail;
        }
        Ok(())
    }

    /// `fdatasync` of the current segment: every record appended so far survives a power
    /// failure once this returns (earlier segments were synced when they were sealed, unless
    /// the policy is [`FsyncPolicy::Never`]).
    pub fn sync(&mut self) -> io::Result<()> {
        self.check_poisoned()?;
        self.sync_current()
    }

    /// Offset the next append continues at.
    pub fn next_offset(&self) -> u64 {
        self.next_offset
    }

    /// Oldest offset still in the log, `None` if it holds no record.
    pub fn first_offset(&self) -> Option<u64> {
        self.segments.iter().find_map(|s| s.first)
    }

    /// Bytes of all retained segment files.
    pub fn total_bytes(&self) -> u64 {
        self.total_bytes
    }

    /// Number of retained segment files.
    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }

    /// Number of the segment being written (its file is `<n>.seg`).
    pub fn current_segment(&self) -> u64 {
        self.segments.last().map(|s| s.n).unwrap_or(0)
    }

    /// A second handle on the segment being written, so an owner can `fdatasync` it on another
    /// thread (with [`FsyncPolicy::Never`], syncing is the owner's business entirely).
    pub fn current_file(&self) -> io::Result<File> {
        self.file.try_clone()
    }

    /// The log's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The configuration it was opened with.
    pub fn config(&self) -> &SegmentConfig {
        &self.config
    }

    /// A read-only view of the log as it is now, to read from another thread.
    pub fn reader(&self) -> LogReader {
        LogReader {
            dir: self.dir.clone(),
            segments: self.segments.clone(),
        }
    }

    /// Output from offset `from` on, at most `max_bytes` of data; see [`LogReader::read_range`].
    pub fn read_range(&self, from: u64, max_bytes: usize) -> io::Result<Vec<Chunk>> {
        read_range(&self.dir, &self.segments, from, max_bytes)
    }

    /// Writes the whole retained log as an asciicast v2 recording; see
    /// [`LogReader::export_asciicast`].
    pub fn export_asciicast(
        &self,
        out: &mut impl Write,
        width: u16,
        height: u16,
    ) -> io::Result<()> {
        export_asciicast(&self.dir, &self.segments, out, width, height)
    }

    /// Largest data record that fits a segment and the record cap.
    fn max_chunk(&self) -> usize {
        let fits = self
            .config
            .segment_bytes
            .saturating_sub((FRAME_HEADER + MAX_DATA_OVERHEAD) as u64);
        usize::try_from(fits)
            .unwrap_or(usize::MAX)
            .min(MAX_RECORD_BYTES)
    }

    fn check_poisoned(&self) -> io::Result<()> {
        match &self.poisoned {
            None => Ok(()),
            Some(why) => Err(io::Error::other(format!(
                "segment log {} refuses writes until reopened: {why}",
                self.dir.display()
            ))),
        }
    }

    fn current(&mut self) -> &mut Segment {
        // invariant: `segments` is never empty (open creates one, retention keeps the last).
        self.segments
            .last_mut()
            .expect("a log always has a current segment")
    }

    /// Frames and writes one record, rotating first if it does not fit.
    fn write_record(&mut self, record: &RecordRef<'_>) -> io::Result<()> {
        let start = record.start();
        let end = record.end().ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidInput, "record end overflows u64")
        })?;
        // Encoded in place after room for the header: one copy of the bytes, not three.
        self.frame.clear();
        self.frame.extend_from_slice(&[0u8; FRAME_HEADER]);
        codec::encode_into(record, &mut self.frame);
        let payload_len = self.frame.len() - FRAME_HEADER;
        let crc = crc32fast::hash(&self.frame[FRAME_HEADER..]);
        // Payloads are bounded by MAX_PAYLOAD_BYTES, far below u32::MAX.
        self.frame[..4].copy_from_slice(&(payload_len as u32).to_le_bytes());
        self.frame[4..8].copy_from_slice(&crc.to_le_bytes());
        let frame_len = self.frame.len() as u64;
        let segment_bytes = self.config.segment_bytes;
        let len = self.current().len;
        let rotated = len > 0 && len + frame_len > segment_bytes;
        if rotated {
            self.rotate()?;
        }
        let pos = self.current().len;
        if let Err(e) = self.file.write_all(&self.frame) {
            self.roll_back(pos);
            return Err(e);
        }
        self.current().push(start, end, frame_len);
        self.total_bytes += frame_len;
        self.next_offset = end;
        if self.config.fsync == FsyncPolicy::EveryAppend {
            self.sync_current()?;
        }
        if rotated {
            // After the write, so the new segment already anchors the log's end when the old
            // ones go.
            self.enforce_retention()?;
        }
        Ok(())
    }

    /// Cuts the current file back to `len` after a failed write, or poisons the log.
    fn roll_back(&mut self, len: u64) {
        if let Err(e) = self.file.set_len(len) {
            tracing::error!(dir = %self.dir.display(), error = %e,
                "segment log: cannot roll back a failed write; refusing writes until reopened");
            self.poisoned = Some(format!("rolling back a failed write failed: {e}"));
        }
    }

    fn sync_current(&mut self) -> io::Result<()> {
        if let Err(e) = self.file.sync_data() {
            tracing::error!(dir = %self.dir.display(), error = %e,
                "segment log: fdatasync failed; refusing writes until reopened");
            self.poisoned = Some(format!("fdatasync failed: {e}"));
            return Err(e);
        }
        Ok(())
    }

    /// Seals the current segment and starts the next one.
    fn rotate(&mut self) -> io::Result<()> {
        if self.config.fsync == FsyncPolicy::OnRotate {
            self.sync_current()?;
        }
        let n = self.current().n + 1;
        let file = OpenOptions::new()
            .create_new(true)
            .append(true)
            .open(segment_path(&self.dir, n))?;
        // Adopted before the directory sync: if that fails, the next append retries in this
        // (empty) segment instead of failing forever to create it again.
        self.file = file;
        self.segments.push(Segment::empty(n));
        if self.config.fsync != FsyncPolicy::Never {
            sync_dir(&self.dir)?;
        }
        Ok(())
    }

    /// Deletes the oldest segments while the sealed ones exceed the limit.
    fn enforce_retention(&mut self) -> io::Result<()> {
        loop {
            let current = self.current().len;
            if self.segments.len() < 2 || self.total_bytes - current <= self.config.max_total_bytes
            {
                return Ok(());
            }
            let oldest = &self.segments[0];
            if let Err(e) = remove_if_exists(&segment_path(&self.dir, oldest.n)) {
                tracing::warn!(dir = %self.dir.display(), segment = oldest.n, error = %e,
                    "segment log: cannot delete an old segment; retrying at the next rotation");
                return Err(e);
            }
            // One directory sync per deletion keeps deletions in order on disk: a power failure
            // can then never leave an old segment behind a hole, which recovery would take for
            // damage (and cut everything after it).
            if self.config.fsync != FsyncPolicy::Never {
                sync_dir(&self.dir)?;
            }
            let oldest = self.segments.remove(0);
            self.total_bytes -= oldest.len;
        }
    }
}

/// A read-only view of a log: what it held when the view was taken. Cheap to clone and `Send`,
/// so history can be served from other threads while the persister keeps appending.
#[derive(Debug, Clone)]
pub struct LogReader {
    /// The session's log directory.
    dir: PathBuf,
    /// The segments as they were when the view was taken.
    segments: Vec<Segment>,
}

impl LogReader {
    /// Reads a log without repairing it (for instance from the CLI while the server owns it):
    /// the view ends before the first bad record, if any, which is reported.
    pub fn open(dir: impl AsRef<Path>) -> io::Result<(LogReader, Option<Damage>)> {
        let dir = dir.as_ref().to_path_buf();
        let scan = scan_dir(&dir)?;
        Ok((
            LogReader {
                dir,
                segments: scan.segments,
            },
            scan.damage,
        ))
    }

    /// Oldest offset in the view, `None` if it holds no record.
    pub fn first_offset(&self) -> Option<u64> {
        self.segments.iter().find_map(|s| s.first)
    }

    /// Offset after the last record in the view (0 if none).
    pub fn next_offset(&self) -> u64 {
        self.segments
            .iter()
            .rev()
            .find_map(Segment::range)
            .map_or(0, |(_, end)| end)
    }

    /// Output from offset `from` on, as chunks in offset order with no holes between them:
    ///
    /// - if `from` is older than the oldest retained offset, the first chunk is
    ///   `Gap { from, to: oldest }`;
    /// - the first data chunk is trimmed to start at `from`; adjacent records are merged;
    /// - at most `max_bytes` of data (the last chunk is cut to fit), gaps not counted;
    /// - empty if `from` is at or past the end of the log, or `max_bytes` is 0.
    ///
    /// Call again from the end of the last chunk for more.
    pub fn read_range(&self, from: u64, max_bytes: usize) -> io::Result<Vec<Chunk>> {
        read_range(&self.dir, &self.segments, from, max_bytes)
    }

    /// Writes the log as an asciicast v2 recording (<https://docs.asciinema.org/manual/asciicast/v2/>):
    /// a header line, then one `[seconds, "o", text]` line per data record, seconds counted
    /// from the first record. Bytes are decoded as UTF-8, lossily; a character split across two
    /// records is carried over to the next one. Times never go backwards (a clock step back is
    /// flattened). A gap becomes a marker event `[seconds, "m", "output A..B lost"]`.
    ///
    /// Writes many small lines: pass a buffered writer.
    pub fn export_asciicast(
        &self,
        out: &mut impl Write,
        width: u16,
        height: u16,
    ) -> io::Result<()> {
        export_asciicast(&self.dir, &self.segments, out, width, height)
    }
}

/// The recovery property, over arbitrary bytes: `data[0]` splits `data[1..]` into two segment
/// files in `dir` (an empty directory); opening never panics, what it keeps reads back as a
/// contiguous run of offsets, and a second open finds nothing to repair. Checked by the
/// `segment_recovery` fuzz target and, over its kept seeds and crashes, by a regression test.
#[doc(hidden)]
pub fn check_recovery_property(dir: &Path, data: &[u8]) {
    let Some((&split, rest)) = data.split_first() else {
        return;
    };
    let cut = (split as usize * rest.len() / 255).min(rest.len());
    // invariant (of the property's harness): the caller hands an empty writable directory.
    fs::write(segment_path(dir, 0), &rest[..cut]).expect("writable test dir");
    if cut < rest.len() {
        fs::write(segment_path(dir, 1), &rest[cut..]).expect("writable test dir");
    }
    let config = SegmentConfig {
        segment_bytes: 4096,
        max_total_bytes: 1 << 20,
        fsync: FsyncPolicy::Never,
    };
    let Ok((log, _)) = SegmentLog::open(dir, config.clone()) else {
        return;
    };
    let next = log.next_offset();
    if let Some(first) = log.first_offset() {
        let mut at = first;
        for chunk in log
            .read_range(first, usize::MAX)
            .expect("recovered log reads")
        {
            let (from, to) = match &chunk {
                Chunk::Data { offset, bytes } => (*offset, offset + bytes.len() as u64),
                Chunk::Gap { from, to } => (*from, *to),
            };
            assert_eq!(from, at, "contiguous offsets");
            at = to;
        }
        assert_eq!(at, next, "reads end at the log's end");
    }
    drop(log);
    let (again, recovery) = SegmentLog::open(dir, config).expect("a recovered log reopens");
    assert!(
        recovery.damage.is_none(),
        "recovery is idempotent: {recovery:?}"
    );
    assert_eq!(again.next_offset(), next);
}

// ----- scanning -----

/// The result of reading a whole log directory.
struct Scan {
    /// Segments before the damage, plus the damaged one cut to its valid prefix.
    segments: Vec<Segment>,
    /// The first bad record.
    damage: Option<Damage>,
    /// Real length of the damaged segment's file.
    damaged_file_len: u64,
    /// Numbers of the segments after the damaged one, ascending.
    after_damage: Vec<u64>,
}

/// Segment numbers in `dir`, ascending. Files not named exactly as this module names them
/// (`{n:08}.seg`) are ignored.
fn list_segments(dir: &Path) -> io::Result<Vec<u64>> {
    let mut numbers = Vec::new();
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(numbers),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name();
        let Some(stem) = name.to_str().and_then(|name| name.strip_suffix(".seg")) else {
            continue;
        };
        if !stem.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        if let Ok(n) = stem.parse::<u64>()
            && stem == format!("{n:08}")
            && entry.file_type()?.is_file()
        {
            numbers.push(n);
        }
    }
    numbers.sort_unstable();
    Ok(numbers)
}

fn scan_dir(dir: &Path) -> io::Result<Scan> {
    let numbers = list_segments(dir)?;
    let mut scan = Scan {
        segments: Vec::new(),
        damage: None,
        damaged_file_len: 0,
        after_damage: Vec::new(),
    };
    let mut expected: Option<u64> = None;
    for (i, &n) in numbers.iter().enumerate() {
        let SegmentScan {
            segment,
            damage,
            file_len,
        } = scan_segment(dir, n, expected)?;
        if let Some((_, end)) = segment.range() {
            expected = Some(end);
        }
        scan.segments.push(segment);
        if let Some(damage) = damage {
            scan.damage = Some(damage);
            scan.damaged_file_len = file_len;
            scan.after_damage = numbers[i + 1..].to_vec();
            break;
        }
    }
    Ok(scan)
}

/// What reading one segment file found.
struct SegmentScan {
    /// The segment's valid prefix.
    segment: Segment,
    /// Its first bad record, if any.
    damage: Option<Damage>,
    /// The file's real length.
    file_len: u64,
}

/// Reads one segment, checking each record and that it continues at `expected`.
fn scan_segment(dir: &Path, n: u64, mut expected: Option<u64>) -> io::Result<SegmentScan> {
    let file = File::open(segment_path(dir, n))?;
    let file_len = file.metadata()?.len();
    let mut frames = Frames::new(BufReader::with_capacity(READ_BUFFER, file), 0);
    let mut segment = Segment::empty(n);
    let damaged = |segment, position, kind| SegmentScan {
        segment,
        damage: Some(Damage {
            segment: n,
            position,
            kind,
        }),
        file_len,
    };
    loop {
        let pos = frames.pos;
        let (record, frame_len) = match frames.next_frame() {
            Ok(None) => {
                return Ok(SegmentScan {
                    segment,
                    damage: None,
                    file_len,
                });
            }
            Ok(Some(found)) => found,
            Err(FrameError::Io(e)) => return Err(e),
            Err(FrameError::Damaged(kind)) => return Ok(damaged(segment, pos, kind)),
        };
        let start = record.start();
        // invariant: Frames::next_frame rejects records whose end overflows.
        let end = record.end().expect("checked by next_frame");
        if let Some(expected) = expected
            && start != expected
        {
            let kind = DamageKind::NotContiguous {
                expected,
                found: start,
            };
            return Ok(damaged(segment, pos, kind));
        }
        segment.push(start, end, frame_len);
        expected = Some(end);
    }
}

/// Why a frame could not be read.
enum FrameError {
    /// The file could not be read at all.
    Io(io::Error),
    /// The bytes are there but are not a good record.
    Damaged(DamageKind),
}

/// Reads frames one by one from a segment file, tracking the file position.
struct Frames<R> {
    /// The file (positioned at `pos`).
    reader: R,
    /// File position of the next frame.
    pos: u64,
    /// Reused payload buffer.
    payload: Vec<u8>,
}

impl<R: Read> Frames<R> {
    fn new(reader: R, pos: u64) -> Self {
        Frames {
            reader,
            pos,
            payload: Vec::new(),
        }
    }

    /// The next good record and its frame length, `None` at a clean end of file.
    fn next_frame(&mut self) -> Result<Option<(Record, u64)>, FrameError> {
        let mut header = [0u8; FRAME_HEADER];
        match read_full(&mut self.reader, &mut header).map_err(FrameError::Io)? {
            0 => return Ok(None),
            FRAME_HEADER => {}
            _ => return Err(FrameError::Damaged(DamageKind::Torn)),
        }
        let [l0, l1, l2, l3, c0, c1, c2, c3] = header;
        let len = u32::from_le_bytes([l0, l1, l2, l3]);
        let crc = u32::from_le_bytes([c0, c1, c2, c3]);
        if len == 0 || len as usize > MAX_PAYLOAD_BYTES {
            return Err(FrameError::Damaged(DamageKind::BadLength(len)));
        }
        self.payload.resize(len as usize, 0);
        if read_full(&mut self.reader, &mut self.payload).map_err(FrameError::Io)? < len as usize {
            return Err(FrameError::Damaged(DamageKind::Torn));
        }
        if crc32fast::hash(&self.payload) != crc {
            return Err(FrameError::Damaged(DamageKind::BadCrc));
        }
        let record = codec::decode(&self.payload)
            .map_err(|e| FrameError::Damaged(DamageKind::Undecodable(e)))?;
        match record.end() {
            Some(end) if end > record.start() => {}
            _ => return Err(FrameError::Damaged(DamageKind::BadRange)),
        }
        let frame_len = (FRAME_HEADER + len as usize) as u64;
        self.pos += frame_len;
        Ok(Some((record, frame_len)))
    }
}

/// Reads until `buf` is full or the end of the file; returns how much was read.
fn read_full(reader: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

fn remove_if_exists(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Makes file creations and deletions in `dir` durable.
fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

// ----- reading -----

/// Calls `visit` with every record that ends after `from`, in order, until it returns false.
/// A segment deleted since `segments` was taken is passed as a gap over its range.
fn visit_records(
    dir: &Path,
    segments: &[Segment],
    from: u64,
    mut visit: impl FnMut(Record) -> io::Result<bool>,
) -> io::Result<()> {
    for segment in segments {
        let Some((first, end)) = segment.range() else {
            continue;
        };
        if end <= from {
            continue;
        }
        let mut file = match File::open(segment_path(dir, segment.n)) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                if !visit(Record::Gap {
                    from: first,
                    to: end,
                })? {
                    return Ok(());
                }
                continue;
            }
            Err(e) => return Err(e),
        };
        let pos = segment.seek_hint(from);
        file.seek(SeekFrom::Start(pos))?;
        // Only the bytes that were valid when the view was taken: never a frame being written.
        let reader = BufReader::with_capacity(READ_BUFFER, file.take(segment.len - pos));
        let mut frames = Frames::new(reader, pos);
        while frames.pos < segment.len {
            let at = frames.pos;
            let record = match frames.next_frame() {
                Ok(Some((record, _))) => record,
                Ok(None) => {
                    return Err(changed_under_us(
                        segment.n,
                        at,
                        "file is shorter than expected",
                    ));
                }
                Err(FrameError::Io(e)) => return Err(e),
                Err(FrameError::Damaged(kind)) => {
                    return Err(changed_under_us(segment.n, at, &kind.to_string()));
                }
            };
            // invariant: next_frame rejects records whose end overflows.
            if record.end().expect("checked by next_frame") <= from {
                continue;
            }
            if !visit(record)? {
                return Ok(());
            }
        }
    }
    Ok(())
}

fn changed_under_us(segment: u64, position: u64, what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("segment {segment} changed since it was checked, at byte {position}: {what}"),
    )
}

fn push_data(out: &mut Vec<Chunk>, offset: u64, bytes: &[u8]) {
    if let Some(Chunk::Data {
        offset: last,
        bytes: last_bytes,
    }) = out.last_mut()
        && *last + last_bytes.len() as u64 == offset
    {
        last_bytes.extend_from_slice(bytes);
        return;
    }
    out.push(Chunk::Data {
        offset,
        bytes: bytes.to_vec(),
    });
}

fn push_gap(out: &mut Vec<Chunk>, from: u64, to: u64) {
    if let Some(Chunk::Gap { to: last_to, .. }) = out.last_mut()
        && *last_to == from
    {
        *last_to = to;
        return;
    }
    out.push(Chunk::Gap { from, to });
}

fn read_range(
    dir: &Path,
    segments: &[Segment],
    from: u64,
    max_bytes: usize,
) -> io::Result<Vec<Chunk>> {
    let mut out = Vec::new();
    let Some(oldest) = segments.iter().find_map(|s| s.first) else {
        return Ok(out);
    };
    let end = segments
        .iter()
        .rev()
        .find_map(Segment::range)
        .map_or(0, |(_, end)| end);
    if from >= end || max_bytes == 0 {
        return Ok(out);
    }
    let mut pos = from;
    if pos < oldest {
        push_gap(&mut out, pos, oldest);
        pos = oldest;
    }
    let mut budget = max_bytes;
    visit_records(dir, segments, pos, |record| {
        match record {
            Record::Data { offset, bytes, .. } => {
                let start = offset.max(pos);
                // `start` lies inside the record: it ends after `pos` (see visit_records).
                let avail = &bytes[(start - offset) as usize..];
                let take = avail.len().min(budget);
                push_data(&mut out, start, &avail[..take]);
                pos = start + take as u64;
                budget -= take;
            }
            Record::Gap { from, to } => {
                push_gap(&mut out, from.max(pos), to);
                pos = to;
            }
        }
        Ok(budget > 0)
    })?;
    Ok(out)
}

// ----- asciicast -----

/// asciicast v2 header line.
#[derive(Serialize)]
struct AsciicastHeader {
    /// Always 2.
    version: u8,
    /// Terminal columns.
    width: u16,
    /// Terminal rows.
    height: u16,
    /// Unix time (seconds) of the first record.
    timestamp: u64,
}

/// Decodes a byte stream arriving in pieces as UTF-8 (lossy), holding back a character that is
/// split across pieces until its end arrives.
#[derive(Default)]
struct Utf8Carry {
    /// The incomplete character at the end of the last piece (at most 3 bytes).
    pending: Vec<u8>,
}

impl Utf8Carry {
    /// Text of `pending + bytes`, except a trailing incomplete character, which is kept.
    fn feed(&mut self, bytes: &[u8]) -> String {
        let mut buf = std::mem::take(&mut self.pending);
        buf.extend_from_slice(bytes);
        let mut text = String::with_capacity(buf.len());
        let mut rest = &buf[..];
        loop {
            match std::str::from_utf8(rest) {
                Ok(valid) => {
                    text.push_str(valid);
                    break;
                }
                Err(e) => {
                    let (valid, after) = rest.split_at(e.valid_up_to());
                    // invariant: from_utf8 vouched for the bytes before valid_up_to.
                    text.push_str(std::str::from_utf8(valid).expect("valid prefix"));
                    match e.error_len() {
                        // An invalid sequence: replaced, as from_utf8_lossy does.
                        Some(bad) => {
                            text.push(char::REPLACEMENT_CHARACTER);
                            rest = &after[bad..];
                        }
                        // A character cut off at the end: wait for the rest of it.
                        None => {
                            self.pending = after.to_vec();
                            break;
                        }
                    }
                }
            }
        }
        text
    }

    /// Whatever is held back, as text (a replacement character): the stream ended or broke.
    fn flush(&mut self) -> String {
        let text = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        text
    }
}

fn export_asciicast(
    dir: &Path,
    segments: &[Segment],
    out: &mut impl Write,
    width: u16,
    height: u16,
) -> io::Result<()> {
    // The header needs the first record's time: find it first (usually in the first frame).
    let mut first_ms = None;
    visit_records(dir, segments, 0, |record| {
        if let Record::Data { time_ms, .. } = record {
            first_ms = Some(time_ms);
            return Ok(false);
        }
        Ok(true)
    })?;
    let header = AsciicastHeader {
        version: 2,
        width,
        height,
        timestamp: first_ms.unwrap_or(0) / 1000,
    };
    serde_json::to_writer(&mut *out, &header)?;
    out.write_all(b"\n")?;
    let Some(first_ms) = first_ms else {
        return Ok(());
    };
    let mut last_ms = first_ms;
    let mut carry = Utf8Carry::default();
    let event = |out: &mut dyn Write, ms: u64, code: &str, text: &str| -> io::Result<()> {
        let seconds = (ms - first_ms) as f64 / 1000.0;
        serde_json::to_writer(&mut *out, &(seconds, code, text))?;
        out.write_all(b"\n")
    };
    visit_records(dir, segments, 0, |record| {
        match record {
            Record::Data { time_ms, bytes, .. } => {
                last_ms = last_ms.max(time_ms);
                let text = carry.feed(&bytes);
                if !text.is_empty() {
                    event(out, last_ms, "o", &text)?;
                }
            }
            Record::Gap { from, to } => {
                let text = carry.flush();
                if !text.is_empty() {
                    event(out, last_ms, "o", &text)?;
                }
                event(out, last_ms, "m", &format!("output {from}..{to} lost"))?;
            }
        }
        Ok(true)
    })?;
    let text = carry.flush();
    if !text.is_empty() {
        event(out, last_ms, "o", &text)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utf8_carry_matches_lossy_decoding() {
        let data = "héllo → wörld 🎉 end".as_bytes();
        let mut with_bad = data.to_vec();
        with_bad.insert(3, 0xff);
        with_bad.push(0xe2); // incomplete at the very end
        for split in 0..=with_bad.len() {
            for split2 in split..=with_bad.len() {
                let mut carry = Utf8Carry::default();
                let mut text = carry.feed(&with_bad[..split]);
                text += &carry.feed(&with_bad[split..split2]);
                text += &carry.feed(&with_bad[split2..]);
                text += &carry.flush();
                assert_eq!(
                    text,
                    String::from_utf8_lossy(&with_bad),
                    "splits {split} {split2}"
                );
            }
        }
    }

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
