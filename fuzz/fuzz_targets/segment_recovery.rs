//! Segment-log recovery on arbitrary file contents (the property is
//! `corral_actors::persist::segment::check_recovery_property`): opening never panics, what it
//! keeps reads back as a contiguous run of offsets, and a second open finds nothing to repair.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let dir = tempfile::tempdir().unwrap();
    corral_actors::persist::segment::check_recovery_property(dir.path(), data);
});
