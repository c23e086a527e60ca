//! The segment-log recovery property as a function, shared by the regression test
//! (`tests/segments.rs`) and the `segment_recovery` cargo-fuzz target (`fuzz/`), which includes
//! this file by path: opening arbitrary bytes as a log never panics, what it keeps reads back as
//! a contiguous run of offsets, and a second open finds nothing to repair.

use std::fs;
use std::path::Path;

use corral_actors::persist::{Chunk, FsyncPolicy, SegmentConfig, SegmentLog};

/// A segment file's path as the log names them.
fn segment_path(dir: &Path, n: u64) -> std::path::PathBuf {
    dir.join(format!("{n:08}.seg"))
}

/// The recovery property, over arbitrary bytes: `data[0]` splits `data[1..]` into two segment
/// files in `dir` (an empty directory); opening never panics, what it keeps reads back as a
/// contiguous run of offsets, and a second open finds nothing to repair. Checked by the
/// `segment_recovery` fuzz target and, over its kept seeds and crashes, by a regression test.
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
