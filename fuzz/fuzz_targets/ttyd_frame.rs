//! The ttyd dialect's parsers never panic; an empty frame is the only one without an answer.
#![no_main]

use corral_server::ttyd::{parse_frame, parse_init};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    assert_eq!(parse_frame(data).is_none(), data.is_empty());
    if let Ok(init) = parse_init(data) {
        assert!(init.size.is_none_or(|s| s.rows > 0 && s.cols > 0));
    }
});
