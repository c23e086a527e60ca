//! The per-session scrollback log (`persist::segment`) on real files in temporary directories:
//! round trips, rotation and retention, explicit gaps, torn and corrupted tails (proptest),
//! crashes during recovery, the asciicast export, and a throughput printout.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Instant;

use corral_actors::persist::codec::{self, Record};
use corral_actors::persist::{Chunk, FsyncPolicy, LogReader, SegmentConfig, SegmentLog};
use proptest::prelude::*;

#[path = "support/recovery_property.rs"]
mod support;

const T0: u64 = 1_700_000_000_000;

fn config(segment_bytes: u64, max_total_bytes: u64) -> SegmentConfig {
    SegmentConfig {
        segment_bytes,
        max_total_bytes,
        fsync: FsyncPolicy::Never,
    }
}

fn random_bytes(rng: &mut fastrand::Rng, len: usize) -> Vec<u8> {
    let mut bytes = vec![0; len];
    rng.fill(&mut bytes);
    bytes
}

/// Segment files of a log directory, in log order.
fn segment_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    files.sort();
    files
}

/// Frames of a segment file decoded independently of the log: (end position, record).
fn frames(path: &Path) -> Vec<(u64, Record)> {
    let data = fs::read(path).unwrap();
    let mut out = Vec::new();
    let mut pos = 0usize;
    while pos + 8 <= data.len() {
        let len = u32::from_le_bytes(data[pos..pos + 4].try_into().unwrap()) as usize;
        let crc = u32::from_le_bytes(data[pos + 4..pos + 8].try_into().unwrap());
        let Some(payload) = data.get(pos + 8..pos + 8 + len) else {
            break;
        };
        if crc32fast::hash(payload) != crc {
            break;
        }
        let Ok(record) = codec::decode(payload) else {
            break;
        };
        pos += 8 + len;
        out.push((pos as u64, record));
    }
    out
}

/// Reads everything from `from` in pieces of at most `step` bytes, checking that chunks are
/// contiguous and that each call respects its budget.
fn read_all(log: &SegmentLog, from: u64, step: usize) -> Vec<Chunk> {
    let mut out: Vec<Chunk> = Vec::new();
    let mut pos = from;
    loop {
        let chunks = log.read_range(pos, step).unwrap();
        if chunks.is_empty() {
            return out;
        }
        let data: usize = chunks
            .iter()
            .map(|c| match c {
                Chunk::Data { bytes, .. } => bytes.len(),
                Chunk::Gap { .. } => 0,
            })
            .sum();
        assert!(
            data <= step,
            "read_range returned {data} bytes for a budget of {step}"
        );
        for chunk in chunks {
            let (start, end) = match &chunk {
                Chunk::Data { offset, bytes } => (*offset, offset + bytes.len() as u64),
                Chunk::Gap { from, to } => (*from, *to),
            };
            assert_eq!(start, pos, "chunks must be contiguous: {chunk:?}");
            assert!(end > start);
            pos = end;
            // Merge what read_range split at the budget, to compare with single reads.
            match (out.last_mut(), chunk) {
                (Some(Chunk::Data { bytes: last, .. }), Chunk::Data { bytes, .. }) => {
                    last.extend_from_slice(&bytes)
                }
                (Some(Chunk::Gap { to: last_to, .. }), Chunk::Gap { to, .. }) => *last_to = to,
                (_, chunk) => out.push(chunk),
            }
        }
    }
}

/// The data of a read that must hold no gap.
fn only_data(chunks: &[Chunk]) -> Vec<u8> {
    match chunks {
        [] => Vec::new(),
        [Chunk::Data { bytes, .. }] => bytes.clone(),
        other => panic!(
            "expected one data chunk, got {} chunks: {:?}",
            other.len(),
            other.first()
        ),
    }
}

#[test]
fn round_trip_random_sizes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("logs/s1");
    let mut rng = fastrand::Rng::with_seed(7);
    let mut expected = Vec::new();
    {
        let (mut log, recovery) = SegmentLog::open(&path, SegmentConfig::default()).unwrap();
        assert_eq!(recovery.records, 0);
        assert_eq!(recovery.next_offset, 0);
        assert_eq!(recovery.first_offset, None);
        for i in 0..600 {
            // Mostly terminal-sized pieces, a few larger than a record or a whole segment.
            let len = match i {
                250 => 2_500_000,
                500 => 5 << 20,
                _ => rng.usize(1..20_000),
            };
            let bytes = random_bytes(&mut rng, len);
            log.append(expected.len() as u64, T0 + i, &bytes).unwrap();
            expected.extend_from_slice(&bytes);
        }
        assert_eq!(log.next_offset(), expected.len() as u64);
        log.sync().unwrap();
    }
    for file in segment_files(&path) {
        let len = fs::metadata(&file).unwrap().len();
        assert!(len <= 4 << 20, "{} holds {len} bytes", file.display());
        for (_, record) in frames(&file) {
            if let Record::Data { bytes, .. } = record {
                assert!(bytes.len() <= 1 << 20);
            }
        }
    }
    let (log, recovery) = SegmentLog::open(&path, SegmentConfig::default()).unwrap();
    assert_eq!(recovery.truncated_bytes, 0);
    assert_eq!(recovery.removed_segments, 0);
    assert_eq!(recovery.damage, None);
    assert_eq!(recovery.next_offset, expected.len() as u64);
    assert_eq!(recovery.first_offset, Some(0));
    let total = expected.len() as u64;
    let mut froms = vec![0, 1, 4095, total / 2, total - 1, total];
    froms.extend((0..10).map(|_| rng.u64(..total)));
    for from in froms {
        let got = only_data(&read_all(&log, from, 300_000));
        assert_eq!(got.len() as u64, total - from, "from {from}");
        assert!(got == expected[from as usize..], "bytes differ from {from}");
        // One bounded read starts exactly at `from`.
        let first = log.read_range(from, 1000).unwrap();
        if from < total {
            let want = &expected[from as usize..(from as usize + 1000).min(expected.len())];
            assert_eq!(
                first,
                vec![Chunk::Data {
                    offset: from,
                    bytes: want.to_vec()
                }]
            );
        } else {
            assert!(first.is_empty());
        }
    }
    assert!(log.read_range(0, 0).unwrap().is_empty());
}

#[test]
fn rotation_and_retention_keep_a_bounded_exact_tail() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s");
    let cfg = config(4096, 16 * 1024);
    let mut rng = fastrand::Rng::with_seed(3);
    let mut expected = Vec::new();
    let (mut log, _) = SegmentLog::open(&path, cfg.clone()).unwrap();
    while expected.len() < 1 << 20 {
        let len = rng.usize(1..3000);
        let bytes = random_bytes(&mut rng, len);
        log.append(expected.len() as u64, T0, &bytes).unwrap();
        expected.extend_from_slice(&bytes);

        let on_disk: u64 = segment_files(&path)
            .iter()
            .map(|f| fs::metadata(f).unwrap().len())
            .sum();
        assert!(on_disk <= 16 * 1024 + 4096, "{on_disk} bytes on disk");
        assert_eq!(on_disk, log.total_bytes());
    }
    for file in segment_files(&path) {
        assert!(fs::metadata(&file).unwrap().len() <= 4096);
    }
    let check = |log: &SegmentLog| {
        let oldest = log.first_offset().unwrap();
        assert!(oldest > 0);
        let chunks = read_all(log, 0, usize::MAX);
        assert_eq!(
            chunks[0],
            Chunk::Gap {
                from: 0,
                to: oldest
            }
        );
        assert_eq!(chunks.len(), 2);
        assert!(only_data(&chunks[1..]) == expected[oldest as usize..]);
        // A read inside the retained window has no gap.
        let mid = oldest + 100;
        assert!(only_data(&read_all(log, mid, 777)) == expected[mid as usize..]);
    };
    check(&log);
    let oldest = log.first_offset();
    drop(log);
    let (log, recovery) = SegmentLog::open(&path, cfg).unwrap();
    assert_eq!(recovery.first_offset, oldest);
    assert_eq!(recovery.next_offset, expected.len() as u64);
    check(&log);
}

#[test]
fn lagging_appends_leave_explicit_gaps_and_replays_are_idempotent() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s");
    let a: Vec<u8> = (0..100u8).collect();
    let b: Vec<u8> = (100..200u8).collect();
    let (mut log, _) = SegmentLog::open(&path, SegmentConfig::default()).unwrap();
    log.append(0, T0, &a).unwrap();
    log.append(500, T0 + 1, &b).unwrap();
    // Replays of bytes already written add nothing.
    log.append(0, T0 + 2, &a).unwrap();
    log.append(450, T0 + 2, &[9; 150]).unwrap();
    assert_eq!(log.next_offset(), 600);
    let want = vec![
        Chunk::Data {
            offset: 0,
            bytes: a.clone(),
        },
        Chunk::Gap { from: 100, to: 500 },
        Chunk::Data {
            offset: 500,
            bytes: b.clone(),
        },
    ];
    assert_eq!(log.read_range(0, usize::MAX).unwrap(), want);
    drop(log);

    let (mut log, recovery) = SegmentLog::open(&path, SegmentConfig::default()).unwrap();
    assert_eq!(recovery.records, 3);
    assert_eq!(recovery.next_offset, 600);
    assert_eq!(log.read_range(0, usize::MAX).unwrap(), want);
    assert_eq!(
        log.read_range(50, usize::MAX).unwrap(),
        vec![
            Chunk::Data {
                offset: 50,
                bytes: a[50..].to_vec()
            },
            Chunk::Gap { from: 100, to: 500 },
            Chunk::Data {
                offset: 500,
                bytes: b.clone()
            },
        ]
    );
    assert_eq!(
        log.read_range(200, 10).unwrap(),
        vec![
            Chunk::Gap { from: 200, to: 500 },
            Chunk::Data {
                offset: 500,
                bytes: b[..10].to_vec()
            },
        ]
    );
    // A partial replay writes only its new suffix (600..610).
    log.append(590, T0 + 3, &[7; 20]).unwrap();
    assert_eq!(log.next_offset(), 610);
    let mut tail = b[90..].to_vec();
    tail.extend_from_slice(&[7; 10]);
    assert_eq!(
        log.read_range(590, usize::MAX).unwrap(),
        vec![Chunk::Data {
            offset: 590,
            bytes: tail
        }]
    );
    // An empty append past the end records the gap too.
    log.append(700, T0 + 3, &[]).unwrap();
    assert_eq!(log.next_offset(), 700);
    log.append(700, T0 + 3, b"x").unwrap();
    assert_eq!(
        log.read_range(600, usize::MAX).unwrap(),
        vec![
            Chunk::Data {
                offset: 600,
                bytes: vec![7; 10]
            },
            Chunk::Gap { from: 610, to: 700 },
            Chunk::Data {
                offset: 700,
                bytes: b"x".to_vec()
            },
        ]
    );
}

#[test]
fn a_log_may_start_past_zero() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = SegmentLog::open(dir.path(), SegmentConfig::default()).unwrap();
    log.append(1000, T0, b"abc").unwrap();
    assert_eq!(
        log.read_range(0, 100).unwrap(),
        vec![
            Chunk::Gap { from: 0, to: 1000 },
            Chunk::Data {
                offset: 1000,
                bytes: b"abc".to_vec()
            },
        ]
    );
}

#[test]
fn invalid_config_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let err = SegmentLog::open(dir.path(), config(100, 1000)).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
}

/// Writes `sizes` as contiguous appends into a log with 4 KiB segments; returns the bytes.
fn write_records(path: &Path, sizes: &[usize], seed: u64) -> Vec<u8> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let (mut log, _) = SegmentLog::open(path, config(4096, 1 << 30)).unwrap();
    let mut expected = Vec::new();
    for (i, &len) in sizes.iter().enumerate() {
        let bytes = random_bytes(&mut rng, len);
        log.append(expected.len() as u64, T0 + i as u64, &bytes)
            .unwrap();
        expected.extend_from_slice(&bytes);
    }
    expected
}

/// End offset of the last record among `frames` that ends at or before file position `at`,
/// or `before` if none does.
fn end_offset_before(frames: &[(u64, Record)], at: u64, before: u64) -> u64 {
    frames
        .iter()
        .take_while(|(end_pos, _)| *end_pos <= at)
        .last()
        .map_or(before, |(_, r)| r.end().unwrap())
}

/// Offset where the records of a segment start (the end of the previous segments).
fn segment_start(files: &[PathBuf], i: usize) -> u64 {
    files[..i]
        .iter()
        .rev()
        .find_map(|f| frames(f).last().map(|(_, r)| r.end().unwrap()))
        .unwrap_or(0)
}

#[derive(Debug, Clone, Copy)]
enum Harm {
    Truncate,
    FlipBit(u8),
}

fn harm_strategy() -> impl Strategy<Value = Harm> {
    prop_oneof![Just(Harm::Truncate), (0u8..8).prop_map(Harm::FlipBit)]
}

/// Truncates `file` at `at` or flips one bit of the byte there.
fn harm(file: &Path, at: u64, how: Harm) {
    match how {
        Harm::Truncate => {
            fs::OpenOptions::new()
                .write(true)
                .open(file)
                .unwrap()
                .set_len(at)
                .unwrap();
        }
        Harm::FlipBit(bit) => {
            let mut data = fs::read(file).unwrap();
            data[at as usize] ^= 1 << bit;
            fs::write(file, data).unwrap();
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn a_torn_or_corrupt_tail_is_cut_exactly(
        sizes in prop::collection::vec(1usize..3000, 1..40),
        how in harm_strategy(),
        point in any::<u64>(),
        seed in any::<u64>(),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        let expected = write_records(&path, &sizes, seed);
        let files = segment_files(&path);
        let last = files.last().unwrap();
        let last_frames = frames(last);
        let len = fs::metadata(last).unwrap().len();
        prop_assume!(len > 0);
        let at = point % len;
        harm(last, at, how);

        // Records ending at or before the damaged byte survive, nothing after it.
        let start = segment_start(&files, files.len() - 1);
        let keep = end_offset_before(&last_frames, at, start);
        let kept_pos = last_frames.iter().map(|(p, _)| *p).take_while(|p| *p <= at).last().unwrap_or(0);
        let at_boundary = matches!(how, Harm::Truncate) && (at == kept_pos);
        let damaged_len = match how { Harm::Truncate => at, Harm::FlipBit(_) => len };

        let (mut log, recovery) = SegmentLog::open(&path, config(4096, 1 << 30)).unwrap();
        prop_assert_eq!(recovery.next_offset, keep);
        prop_assert_eq!(recovery.truncated_bytes, damaged_len - kept_pos);
        prop_assert_eq!(recovery.damage.is_some(), !at_boundary);
        prop_assert_eq!(recovery.removed_segments, 0);
        prop_assert_eq!(fs::metadata(last).unwrap().len(), kept_pos);
        prop_assert!(only_data(&read_all(&log, 0, 5000)) == expected[..keep as usize]);

        // The writer's head is still at the old end: appending there records the loss as a gap
        // and continues.
        let head = expected.len() as u64;
        log.append(head, T0, b"after").unwrap();
        let mut want = Vec::new();
        if keep > 0 {
            want.push(Chunk::Data { offset: 0, bytes: expected[..keep as usize].to_vec() });
        }
        if keep < head {
            want.push(Chunk::Gap { from: keep, to: head });
        }
        want.push(Chunk::Data { offset: head, bytes: b"after".to_vec() });
        prop_assert_eq!(&log.read_range(0, usize::MAX).unwrap(), &want);
        drop(log);
        let (log, recovery) = SegmentLog::open(&path, config(4096, 1 << 30)).unwrap();
        prop_assert_eq!(recovery.damage, None);
        prop_assert_eq!(recovery.next_offset, head + 5);
        prop_assert_eq!(&log.read_range(0, usize::MAX).unwrap(), &want);
    }

    /// Damage in a sealed segment costs only what is unreadable: the segment is cut at the
    /// damage and ends with a gap up to where the next segment starts; the later segments are
    /// kept, and the lost range is reported.
    #[test]
    fn damage_in_a_sealed_segment_is_a_gap_and_the_later_segments_are_kept(
        sizes in prop::collection::vec(1usize..3000, 8..40),
        how in harm_strategy(),
        which in any::<usize>(),
        point in any::<u64>(),
        seed in any::<u64>(),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        let expected = write_records(&path, &sizes, seed);
        let files = segment_files(&path);
        prop_assume!(files.len() >= 2);
        let i = which % (files.len() - 1);
        let victim = &files[i];
        let victim_frames = frames(victim);
        let len = fs::metadata(victim).unwrap().len();
        let at = point % len;
        let next = segment_start(&files, i + 1);
        let start = segment_start(&files, i);
        harm(victim, at, how);

        let keep = end_offset_before(&victim_frames, at, start);
        let (log, recovery) = SegmentLog::open(&path, config(4096, 1 << 30)).unwrap();
        prop_assert_eq!(recovery.next_offset, expected.len() as u64);
        prop_assert_eq!(recovery.removed_segments, 0);
        prop_assert_eq!(recovery.tail_cut, None);
        prop_assert_eq!(segment_files(&path).len(), files.len());
        let mut want = Vec::new();
        if keep > 0 {
            want.push(Chunk::Data { offset: 0, bytes: expected[..keep as usize].to_vec() });
        }
        if keep < next {
            want.push(Chunk::Gap { from: keep, to: next });
        }
        want.push(Chunk::Data { offset: next, bytes: expected[next as usize..].to_vec() });
        prop_assert_eq!(read_all(&log, 0, usize::MAX), want.clone());
        // Reported: a gap, or the oldest output of segment 0 lost with nothing before it (the
        // log then starts later, as after retention; a segment 0 cut to nothing is retention).
        if keep > 0 {
            prop_assert!(recovery.damage.is_some());
            prop_assert_eq!(&recovery.lost, &vec![(keep, next)]);
        } else if recovery.damage.is_some() {
            prop_assert_eq!(&recovery.lost, &vec![(0, next)]);
        }
        // Repaired for good: the next open finds nothing.
        drop(log);
        let (log, again) = SegmentLog::open(&path, config(4096, 1 << 30)).unwrap();
        prop_assert_eq!(again.damage, None);
        prop_assert_eq!(read_all(&log, 0, usize::MAX), want);
    }

    /// A crash in the middle of recovery, and a second crash after more writes, still leave a
    /// clean prefix that holds everything that was intact before the first damage.
    #[test]
    fn recovery_survives_crashes(
        sizes in prop::collection::vec(1usize..3000, 1..30),
        more in prop::collection::vec(1usize..3000, 1..10),
        p1 in any::<u64>(),
        q1 in any::<u64>(),
        q2 in any::<u64>(),
        seed in any::<u64>(),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        let mut expected = write_records(&path, &sizes, seed);
        let files = segment_files(&path);
        let last = files.last().unwrap().clone();
        let last_frames = frames(&last);
        let len = fs::metadata(&last).unwrap().len();
        prop_assume!(len > 0);
        // First crash: a torn tail at p1.
        let p1 = p1 % len;
        harm(&last, p1, Harm::Truncate);
        let clean_pos = last_frames.iter().map(|(p, _)| *p).take_while(|p| *p <= p1).last().unwrap_or(0);
        let intact = end_offset_before(&last_frames, p1, segment_start(&files, files.len() - 1));
        // Recovery crashes having cut only part of the tail: the file ends anywhere in
        // [clean_pos, p1].
        let q1 = clean_pos + q1 % (p1 - clean_pos + 1);
        harm(&last, q1, Harm::Truncate);

        let (mut log, recovery) = SegmentLog::open(&path, config(4096, 1 << 30)).unwrap();
        prop_assert_eq!(recovery.next_offset, intact);
        expected.truncate(intact as usize);
        let mut rng = fastrand::Rng::with_seed(seed ^ 1);
        for &n in &more {
            let bytes = random_bytes(&mut rng, n);
            log.append(expected.len() as u64, T0, &bytes).unwrap();
            expected.extend_from_slice(&bytes);
        }
        drop(log);

        // Second crash: torn again, somewhere after what was intact before the first one.
        let first_last = last;
        let files = segment_files(&path);
        let last = files.last().unwrap().clone();
        let last_frames = frames(&last);
        let len = fs::metadata(&last).unwrap().len();
        // In the segment recovered the first time, only what was appended since may go.
        let floor = if last == first_last { clean_pos } else { 0 };
        let q2 = floor + q2 % (len - floor + 1);
        harm(&last, q2, Harm::Truncate);
        let survived = end_offset_before(&last_frames, q2, segment_start(&files, files.len() - 1));

        let (log, recovery) = SegmentLog::open(&path, config(4096, 1 << 30)).unwrap();
        prop_assert_eq!(recovery.next_offset, survived);
        prop_assert!(survived >= intact, "lost data that was intact before the first crash");
        prop_assert!(only_data(&read_all(&log, 0, 4000)) == expected[..survived as usize]);
    }
}

/// Recovery of a sealed segment interrupted after its gap was written but before the file was
/// cut after it (the old bytes still follow the gap) ends where an uninterrupted one does.
#[test]
fn an_interrupted_recovery_of_a_sealed_segment_ends_the_same() {
    let dir = tempfile::tempdir().unwrap();
    let sizes: Vec<usize> = (0..40).map(|i| 500 + i * 37).collect();
    let full = dir.path().join("full");
    let partial = dir.path().join("partial");
    let expected = write_records(&full, &sizes, 11);
    let files = segment_files(&full);
    assert!(files.len() >= 4);
    harm(&files[1], 100, Harm::FlipBit(3));
    fs::create_dir(&partial).unwrap();
    for f in &files {
        fs::copy(f, partial.join(f.file_name().unwrap())).unwrap();
    }
    let (a, ra) = SegmentLog::open(&full, config(4096, 1 << 30)).unwrap();
    // The interrupted one: the repaired segment's gap, then the rest of the damaged file.
    let repaired = fs::read(segment_files(&full)[1].clone()).unwrap();
    let damaged = fs::read(&files[1]).unwrap();
    let mut torn = repaired.clone();
    torn.extend_from_slice(&damaged[repaired.len().min(damaged.len())..]);
    fs::write(partial.join(files[1].file_name().unwrap()), torn).unwrap();
    let (b, rb) = SegmentLog::open(&partial, config(4096, 1 << 30)).unwrap();
    assert_eq!(ra.next_offset, expected.len() as u64);
    assert_eq!(ra.next_offset, rb.next_offset);
    assert_eq!(ra.records, rb.records);
    assert_eq!(ra.removed_segments, 0);
    assert_eq!(segment_files(&full).len(), files.len());
    assert_eq!(segment_files(&partial).len(), files.len());
    let (ca, cb) = (read_all(&a, 0, usize::MAX), read_all(&b, 0, usize::MAX));
    assert_eq!(ca, cb);
    assert!(
        matches!(
            ca.as_slice(),
            [Chunk::Data { .. }, Chunk::Gap { .. }, Chunk::Data { .. }]
        ),
        "{ca:?}"
    );
}

#[test]
fn a_reader_survives_retention_behind_its_back() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = SegmentLog::open(dir.path(), config(4096, 8192)).unwrap();
    let mut expected = Vec::new();
    for i in 0..10u8 {
        let bytes = vec![i; 1000];
        log.append(expected.len() as u64, T0, &bytes).unwrap();
        expected.extend_from_slice(&bytes);
    }
    let reader = log.reader();
    assert_eq!(reader.first_offset(), Some(0));
    for i in 0..40u8 {
        let bytes = vec![i; 1000];
        log.append(expected.len() as u64, T0, &bytes).unwrap();
        expected.extend_from_slice(&bytes);
    }
    assert!(
        log.first_offset().unwrap() > reader.next_offset(),
        "retention passed the reader"
    );
    let end = reader.next_offset();
    let chunks = std::thread::spawn(move || reader.read_range(0, usize::MAX).unwrap())
        .join()
        .unwrap();
    // Its segments were deleted since: they read as a gap, not as an error.
    assert_eq!(chunks, vec![Chunk::Gap { from: 0, to: end }]);

    // A read-only view of the directory matches the writer's.
    let (view, damage) = LogReader::open(dir.path()).unwrap();
    assert_eq!(damage, None);
    assert_eq!(view.first_offset(), log.first_offset());
    assert_eq!(
        view.read_range(0, usize::MAX).unwrap(),
        log.read_range(0, usize::MAX).unwrap()
    );
}

/// A log without output exports a header alone, without a `timestamp` (optional in v2): no
/// recording time is known, and a 0 read as 1970.
#[test]
fn asciicast_of_no_output_has_no_timestamp() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = SegmentLog::open(dir.path(), config(4096, 1 << 30)).unwrap();
    let mut out = Vec::new();
    log.export_asciicast(&mut out, 80, 24, &[]).unwrap();
    let out = String::from_utf8(out).unwrap();
    assert_eq!(out.lines().count(), 1, "{out}");
    let header: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(header["version"], 2);
    assert!(header.get("timestamp").is_none(), "{header}");
}

#[test]
fn asciicast_export_parses_and_keeps_split_characters_whole() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = SegmentLog::open(dir.path(), config(4096, 1 << 30)).unwrap();
    let mut all = Vec::new();
    let text = "héllo wörld → 🎉 done\r\n".repeat(300);
    let bytes = text.as_bytes();
    let mut rng = fastrand::Rng::with_seed(5);
    let mut time = T0;
    let mut at = 0;
    // Pieces of random sizes, so characters get split across records; one with invalid bytes.
    let emoji = bytes.iter().position(|&b| b == 0xf0).unwrap();
    let mut cuts = vec![emoji + 2];
    while at < bytes.len() {
        let cut = if cuts.is_empty() {
            (at + rng.usize(1..200)).min(bytes.len())
        } else {
            cuts.remove(0)
        };
        let mut piece = bytes[at..cut].to_vec();
        if at > 0 && at < 400 {
            piece.push(0xff);
        }
        log.append(all.len() as u64, time, &piece).unwrap();
        all.extend_from_slice(&piece);
        at = cut;
        // The clock may step back: the export must not.
        time = if rng.u8(..) < 20 {
            time - 50
        } else {
            time + rng.u64(0..500)
        };
    }
    let mut out = Vec::new();
    log.export_asciicast(&mut out, 120, 40, &[]).unwrap();
    let out = String::from_utf8(out).unwrap();
    let mut lines = out.lines();
    let header: serde_json::Value = serde_json::from_str(lines.next().unwrap()).unwrap();
    assert_eq!(header["version"], 2);
    assert_eq!(header["width"], 120);
    // Players shorten idle pauses; the file keeps the real times.
    assert_eq!(header["idle_time_limit"], 2.0);
    assert_eq!(header["height"], 40);
    assert_eq!(header["timestamp"], T0 / 1000);
    let mut last = 0.0;
    let mut got = String::new();
    for line in lines {
        let event: serde_json::Value = serde_json::from_str(line).unwrap();
        let event = event.as_array().unwrap();
        assert_eq!(event.len(), 3);
        let t = event[0].as_f64().unwrap();
        assert!(t >= last, "time went back: {t} < {last}");
        last = t;
        assert_eq!(event[1], "o");
        got.push_str(event[2].as_str().unwrap());
    }
    assert_eq!(got, String::from_utf8_lossy(&all));
    assert!(got.contains('🎉'), "the split emoji was carried over whole");
}

#[test]
fn asciicast_marks_gaps() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = SegmentLog::open(dir.path(), SegmentConfig::default()).unwrap();
    log.append(0, T0, b"a\xe2").unwrap();
    log.append(10, T0 + 1500, b"b").unwrap();
    let mut out = Vec::new();
    log.export_asciicast(&mut out, 80, 24, &[]).unwrap();
    let lines: Vec<serde_json::Value> = String::from_utf8(out)
        .unwrap()
        .lines()
        .skip(1)
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 4, "{lines:?}");
    assert_eq!(lines[0], serde_json::json!([0.0, "o", "a"]));
    assert_eq!(lines[1], serde_json::json!([0.0, "o", "\u{fffd}"]));
    assert_eq!(lines[2], serde_json::json!([0.0, "m", "output 2..10 lost"]));
    assert_eq!(lines[3], serde_json::json!([1.5, "o", "b"]));
}

/// The terminal's resizes play where they happened in the output (`r` events): what was
/// written before one at the size before, what after at the new one; one after the last output
/// comes at the end.
#[test]
fn asciicast_plays_resizes_where_they_happened() {
    use corral_actors::persist::segment::Resize;
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = SegmentLog::open(dir.path(), SegmentConfig::default()).unwrap();
    log.append(0, T0, b"at 80 cols|at 100 cols").unwrap();
    log.append(22, T0 + 1000, b"more").unwrap();
    let resizes = [
        Resize {
            at: 10,
            rows: 30,
            cols: 100,
        },
        Resize {
            at: 22,
            rows: 40,
            cols: 120,
        },
        Resize {
            at: 26,
            rows: 24,
            cols: 80,
        },
    ];
    let mut out = Vec::new();
    log.export_asciicast(&mut out, 80, 24, &resizes).unwrap();
    let text = String::from_utf8(out).unwrap();
    let header: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    assert_eq!(
        (header["width"].clone(), header["height"].clone()),
        (80.into(), 24.into())
    );
    let lines: Vec<serde_json::Value> = text
        .lines()
        .skip(1)
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(
        lines,
        vec![
            serde_json::json!([0.0, "o", "at 80 cols"]),
            serde_json::json!([0.0, "r", "100x30"]),
            serde_json::json!([0.0, "o", "|at 100 cols"]),
            serde_json::json!([1.0, "r", "120x40"]),
            serde_json::json!([1.0, "o", "more"]),
            serde_json::json!([1.0, "r", "80x24"]),
        ]
    );
}

#[test]
fn throughput_of_64_mib_in_4_kib_records() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = SegmentConfig {
        fsync: FsyncPolicy::OnRotate,
        ..SegmentConfig::default()
    };
    let (mut log, _) = SegmentLog::open(dir.path(), cfg).unwrap();
    let record = vec![b'x'; 4096];
    let total: u64 = 64 << 20;
    let started = Instant::now();
    let mut offset = 0;
    while offset < total {
        log.append(offset, T0, &record).unwrap();
        offset += record.len() as u64;
    }
    log.sync().unwrap();
    let elapsed = started.elapsed();
    let mb_s = total as f64 / 1e6 / elapsed.as_secs_f64();
    eprintln!(
        "segment log: appended 64 MiB in 4 KiB records (OnRotate + final sync) in {:.2?}: {mb_s:.0} MB/s",
        elapsed
    );
    assert_eq!(log.next_offset(), total);
    assert!(log.total_bytes() <= (64 << 20) + (4 << 20));
}

#[test]
fn fuzz_seeds_and_found_crashes_recover_cleanly() {
    let seeds = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/seeds/segment_recovery");
    let mut n = 0;
    for entry in std::fs::read_dir(&seeds).unwrap() {
        let path = entry.unwrap().path();
        let dir = tempfile::tempdir().unwrap();
        support::check_recovery_property(dir.path(), &std::fs::read(&path).unwrap());
        n += 1;
    }
    assert!(n >= 3, "seeds missing in {}", seeds.display());
    // The whole seed keeps its 4 records; the torn one keeps the 3 before the damage.
    let whole = std::fs::read(seeds.join("whole")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("00000000.seg"), &whole[1..]).unwrap();
    let (log, rec) = SegmentLog::open(dir.path(), SegmentConfig::default()).unwrap();
    assert_eq!((rec.records, log.next_offset()), (4, 340));
}
