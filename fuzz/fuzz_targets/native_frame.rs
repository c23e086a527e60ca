//! The native protocol's decoders: binary frame headers and JSON requests never panic, and a
//! decoded binary frame re-encodes to the same bytes.
#![no_main]

use corral_server::protocol::{Request, decode_binary, encode_binary};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Some((h, payload)) = decode_binary(data) {
        assert_eq!(encode_binary(h, payload), data);
    }
    let _ = serde_json::from_slice::<Request>(data);
});
