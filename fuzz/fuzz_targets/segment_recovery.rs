//! Segment-log recovery on arbitrary file contents (the property is
//! `actors/tests/support/recovery_property.rs`, shared with the regression test): opening never panics, what it
//! keeps reads back as a contiguous run of offsets, and a second open finds nothing to repair.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../../actors/tests/support/recovery_property.rs"]
mod support;

fuzz_target!(|data: &[u8]| {
    let dir = tempfile::tempdir().unwrap();
    support::check_recovery_property(dir.path(), data);
});
