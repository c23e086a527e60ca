//! The reader of a segment log: [`LogReader`], a copy of the log's small index that reads the
//! files from any thread, and the range reads (records merged into chunks, gaps explicit) that
//! both it and the writer use.

use std::io::{self, Write};
use std::path::{Path, PathBuf};

use super::asciicast::{Resize, export_asciicast};
use super::scan::{scan_dir, visit_records};
use super::*;
use crate::persist::codec::Record;

/// A read-only view of a log: what it held when the view was taken. Cheap to clone and `Send`,
/// so history can be served from other threads while the persister keeps appending.
#[derive(Debug, Clone)]
pub struct LogReader {
    /// The session's log directory.
    pub(super) dir: PathBuf,
    /// The segments as they were when the view was taken.
    pub(super) segments: Vec<Segment>,
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
        log_end(&self.segments).unwrap_or(0)
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
    ///
    /// `width`×`height` is the size the output starts at; `resizes` (in offset order) become
    /// `[seconds, "r", "COLSxROWS"]` events where they took effect.
    pub fn export_asciicast(
        &self,
        out: &mut impl Write,
        width: u16,
        height: u16,
        resizes: &[Resize],
    ) -> io::Result<()> {
        export_asciicast(&self.dir, &self.segments, out, width, height, resizes)
    }
}

pub(super) fn push_data(out: &mut Vec<Chunk>, offset: u64, bytes: &[u8]) {
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

pub(super) fn push_gap(out: &mut Vec<Chunk>, from: u64, to: u64) {
    if let Some(Chunk::Gap { to: last_to, .. }) = out.last_mut()
        && *last_to == from
    {
        *last_to = to;
        return;
    }
    out.push(Chunk::Gap { from, to });
}

pub(super) fn read_range(
    dir: &Path,
    segments: &[Segment],
    from: u64,
    max_bytes: usize,
) -> io::Result<Vec<Chunk>> {
    let mut out = Vec::new();
    let Some(oldest) = segments.iter().find_map(|s| s.first) else {
        return Ok(out);
    };
    let end = log_end(segments).unwrap_or(0);
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
