//! The writer of a segment log ([`SegmentLog`]): opening with recovery, appends with gap
//! records, rotation, retention and syncs. Owned by the persister thread; readers elsewhere get
//! a [`LogReader`](super::LogReader) snapshot of its index.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use super::asciicast::{Resize, export_asciicast};
use super::reader::{LogReader, read_range};
use super::scan::{Scan, scan_dir, scan_segments};
use super::*;
use crate::persist::codec::{self, RecordRef};

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
        // A session's output is its owner's alone: 0700 folders, 0600 segments.
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)?;
        owner_only(&dir)?;
        let mut scan = scan_dir(&dir)?;
        let first_damage = scan.damage.clone();
        let mut truncated_bytes = 0;
        let mut lost = Vec::new();
        let mut tail_cut = None;
        // Damage in a sealed segment whose successors are good: a gap over what is unreadable,
        // and the log goes on (repeated for every damaged sealed segment).
        while let Some(damage) = scan.damage.clone() {
            // A segment that starts past where the previous one ended (the previous one lost
            // its last frames whole): the gap goes at the end of the previous one, and this
            // one is kept whole.
            if let DamageKind::NotContiguous { expected, found } = damage.kind
                && damage.position == 0
                && found > expected
                && scan.segments.len() >= 2
            {
                // invariant: checked just above.
                let damaged = scan.segments.pop().expect("two segments");
                let previous = scan.segments.last_mut().expect("two segments");
                append_gap(&dir, previous, expected, found)?;
                tracing::warn!(dir = %dir.display(), %damage, lost_from = expected, lost_to = found,
                    "segment log damaged: the missing output is a gap, the later segments are kept");
                lost.push((expected, found));
                let mut rest = vec![damaged.n];
                rest.extend(&scan.after_damage);
                scan.go_on_with(scan_segments(&dir, &rest)?);
                continue;
            }
            if scan.after_damage.is_empty() {
                break;
            }
            let file_len = scan.damaged_file_len;
            let later = scan_segments(&dir, &scan.after_damage)?;
            let kept = scan.segments.last().map_or(0, |s| s.len);
            match bridge(&dir, &mut scan, later)? {
                Some(gap) => {
                    tracing::warn!(dir = %dir.display(), %damage, lost_from = gap.0, lost_to = gap.1,
                        "segment log damaged: the unreadable output is a gap, the later segments are kept");
                    truncated_bytes += file_len.saturating_sub(kept);
                    if gap.0 < gap.1 {
                        lost.push(gap);
                    }
                }
                None => break,
            }
        }
        let mut segments = scan.segments;
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
            truncated_bytes += scan.damaged_file_len.saturating_sub(kept);
            // What followed is unknown past the damage: the cut is said from where the log now
            // ends (0 when nothing before the damage could be read).
            tail_cut = Some(log_end(&segments).unwrap_or(0));
            file.set_len(kept)?;
            file.sync_all()?;
            sync_dir(&dir)?;
        }
        if segments.is_empty() {
            let file = OpenOptions::new()
                .create(true)
                .append(true)
                .mode(0o600)
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
        let next_offset = log_end(&segments).unwrap_or(0);
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
            damage: first_damage,
            lost,
            tail_cut,
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
        resizes: &[Resize],
    ) -> io::Result<()> {
        export_asciicast(&self.dir, &self.segments, out, width, height, resizes)
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
        encode_frame(record, &mut self.frame);
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
        let create = |dir: &Path| {
            OpenOptions::new()
                .create_new(true)
                .append(true)
                .mode(0o600)
                .open(segment_path(dir, n))
        };
        let file = match create(&self.dir) {
            // The folder was removed under the log (by hand): what it held is gone, but the
            // output from here on is kept — retrying the missing path blocked the session's
            // program for good.
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                tracing::warn!(dir = %self.dir.display(),
                    "the session's log folder was removed; made again (what it held is gone)");
                fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(&self.dir)?;
                create(&self.dir)?
            }
            other => other?,
        };
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

/// `record` as a frame `[len][crc][payload]` in `frame` (cleared first). Encoded in place after
/// room for the header: one copy of the bytes, not three.
fn encode_frame(record: &RecordRef<'_>, frame: &mut Vec<u8>) {
    frame.clear();
    frame.extend_from_slice(&[0u8; FRAME_HEADER]);
    codec::encode_into(record, frame);
    let payload_len = frame.len() - FRAME_HEADER;
    let crc = crc32fast::hash(&frame[FRAME_HEADER..]);
    // Payloads are bounded by MAX_PAYLOAD_BYTES, far below u32::MAX.
    frame[..4].copy_from_slice(&(payload_len as u32).to_le_bytes());
    frame[4..8].copy_from_slice(&crc.to_le_bytes());
}

/// Repairs damage in a sealed segment (`scan.segments`' last, cut to its valid prefix) whose
/// later segments are good: the damaged segment is cut there and ends with a [`Record::Gap`]
/// up to where the next good segment starts, so the log goes on through the later segments.
/// Returns the gap's range, or None when the later segments cannot continue the log (they
/// are damaged from their first record, or start before the cut): the caller then ends the
/// log at the damage as before.
///
/// The gap frame is written over the damage first and the file cut after it: a crash in
/// between leaves the gap followed by the old bytes, which the next open cuts as a torn
/// end, reaching the same log.
fn bridge(dir: &Path, scan: &mut Scan, later: Scan) -> io::Result<Option<(u64, u64)>> {
    let Some((next, _)) = later.segments.first().and_then(Segment::range) else {
        return Ok(None);
    };
    let cut = log_end(&scan.segments);
    if cut.is_some_and(|cut| cut > next) {
        return Ok(None);
    }
    // invariant: the scan that found the damage ends with the damaged segment.
    let damaged = scan
        .segments
        .last_mut()
        .expect("the damaged segment is kept");
    // The first segment damaged from its first record: what it held ([0, next) when it is
    // segment 0; retention could have removed older ones otherwise, and where it began is then
    // unknown) is lost too, and said.
    let lost_before = (cut.is_none() && damaged.n == 0 && next > 0).then_some((0, next));
    let gap = match cut {
        Some(cut) if cut < next => {
            append_gap(dir, damaged, cut, next)?;
            Some((cut, next))
        }
        // Nothing kept before it (the first segment was damaged from its start) or it joins
        // exactly: the log starts, or goes on, at the next segment.
        _ => {
            let file = OpenOptions::new()
                .write(true)
                .open(segment_path(dir, damaged.n))?;
            file.set_len(damaged.len)?;
            file.sync_all()?;
            None
        }
    };
    scan.go_on_with(later);
    Ok(Some(gap.or(lost_before).unwrap_or((next, next))))
}

/// Writes a [`Record::Gap`] `[from, to)` at the end of `segment`'s valid frames (over whatever
/// follows them in the file), then cuts the file after it; synced.
fn append_gap(dir: &Path, segment: &mut Segment, from: u64, to: u64) -> io::Result<()> {
    let file = OpenOptions::new()
        .write(true)
        .open(segment_path(dir, segment.n))?;
    let mut frame = Vec::new();
    encode_frame(&RecordRef::Gap { from, to }, &mut frame);
    std::os::unix::fs::FileExt::write_all_at(&file, &frame, segment.len)?;
    file.sync_data()?;
    segment.push(from, to, frame.len() as u64);
    file.set_len(segment.len)?;
    file.sync_all()
}

pub(super) fn remove_if_exists(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Makes file creations and deletions in `dir` durable.
pub(super) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Takes group and other access away from a folder a server of an older version made 0755 (its
/// files then cannot be reached by anyone else, whatever their own mode).
pub(crate) fn owner_only(dir: &Path) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mode = fs::metadata(dir)?.permissions().mode();
    if mode & 0o077 != 0 {
        fs::set_permissions(dir, fs::Permissions::from_mode(mode & 0o700))?;
    }
    Ok(())
}
