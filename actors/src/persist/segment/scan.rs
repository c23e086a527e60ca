//! Scanning a segment log: listing its files, reading their frames `[len][crc][payload]` and
//! checking every record (length, CRC, decoding, contiguity), which both recovery and
//! read-only opening rest on.

use std::fs::{self, File};
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::path::Path;

use super::*;
use crate::persist::codec::{self, Record};

/// The result of reading a whole log directory.
pub(super) struct Scan {
    /// Segments before the damage, plus the damaged one cut to its valid prefix.
    pub(super) segments: Vec<Segment>,
    /// The first bad record.
    pub(super) damage: Option<Damage>,
    /// Real length of the damaged segment's file.
    pub(super) damaged_file_len: u64,
    /// Numbers of the segments after the damaged one, ascending.
    pub(super) after_damage: Vec<u64>,
}

impl Scan {
    /// The log goes on with the segments `later` read (after a repaired damage): theirs are
    /// appended, and their damage, if any, is now the one to repair.
    pub(super) fn go_on_with(&mut self, later: Scan) {
        self.segments.extend(later.segments);
        self.damage = later.damage;
        self.damaged_file_len = later.damaged_file_len;
        self.after_damage = later.after_damage;
    }
}

/// Segment numbers in `dir`, ascending. Files not named exactly as this module names them
/// (`{n:08}.seg`) are ignored.
pub(super) fn list_segments(dir: &Path) -> io::Result<Vec<u64>> {
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

pub(super) fn scan_dir(dir: &Path) -> io::Result<Scan> {
    scan_segments(dir, &list_segments(dir)?)
}

/// Reads segments `numbers` (ascending) as one log, from the first one's first record.
pub(super) fn scan_segments(dir: &Path, numbers: &[u64]) -> io::Result<Scan> {
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
pub(super) struct SegmentScan {
    /// The segment's valid prefix.
    pub(super) segment: Segment,
    /// Its first bad record, if any.
    pub(super) damage: Option<Damage>,
    /// The file's real length.
    pub(super) file_len: u64,
}

/// Reads one segment, checking each record and that it continues at `expected`.
pub(super) fn scan_segment(
    dir: &Path,
    n: u64,
    mut expected: Option<u64>,
) -> io::Result<SegmentScan> {
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
pub(super) enum FrameError {
    /// The file could not be read at all.
    Io(io::Error),
    /// The bytes are there but are not a good record.
    Damaged(DamageKind),
}

/// Reads frames one by one from a segment file, tracking the file position.
pub(super) struct Frames<R> {
    /// The file (positioned at `pos`).
    pub(super) reader: R,
    /// File position of the next frame.
    pub(super) pos: u64,
    /// Reused payload buffer.
    pub(super) payload: Vec<u8>,
}

impl<R: Read> Frames<R> {
    pub(super) fn new(reader: R, pos: u64) -> Self {
        Frames {
            reader,
            pos,
            payload: Vec::new(),
        }
    }

    /// The next good record and its frame length, `None` at a clean end of file.
    pub(super) fn next_frame(&mut self) -> Result<Option<(Record, u64)>, FrameError> {
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
pub(super) fn read_full(reader: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
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

/// Calls `visit` with every record that ends after `from`, in order, until it returns false.
/// A segment deleted since `segments` was taken is passed as a gap over its range.
pub(super) fn visit_records(
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

pub(super) fn changed_under_us(segment: u64, position: u64, what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("segment {segment} changed since it was checked, at byte {position}: {what}"),
    )
}
