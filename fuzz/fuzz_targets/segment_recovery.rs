//! Segment-log recovery on arbitrary file contents: opening never panics, what it keeps reads
//! back without error as a contiguous run of offsets, and a second open finds nothing to repair
//! (recovery is idempotent). The first input byte splits the rest into two segment files.
#![no_main]

use corral_actors::persist::{Chunk, FsyncPolicy, SegmentConfig, SegmentLog};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&split, rest)) = data.split_first() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let cut = (split as usize * rest.len() / 255).min(rest.len());
    std::fs::write(dir.path().join("00000000.seg"), &rest[..cut]).unwrap();
    if cut < rest.len() {
        std::fs::write(dir.path().join("00000001.seg"), &rest[cut..]).unwrap();
    }
    let config = SegmentConfig {
        segment_bytes: 4096,
        max_total_bytes: 1 << 20,
        fsync: FsyncPolicy::Never,
    };
    let Ok((log, _)) = SegmentLog::open(dir.path(), config.clone()) else {
        return;
    };
    let next = log.next_offset();
    if let Some(first) = log.first_offset() {
        let mut at = first;
        for chunk in log.read_range(first, usize::MAX).unwrap() {
            let (from, to) = match &chunk {
                Chunk::Data { offset, bytes } => (*offset, offset + bytes.len() as u64),
                Chunk::Gap { from, to } => (*from, *to),
            };
            assert_eq!(from, at);
            at = to;
        }
        assert_eq!(at, next);
    }
    drop(log);
    let (again, recovery) = SegmentLog::open(dir.path(), config).unwrap();
    assert!(recovery.damage.is_none(), "{recovery:?}");
    assert_eq!(again.next_offset(), next);
});
