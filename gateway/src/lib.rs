//! The wire formats of corral's gateway as a library, so fuzzers and other tools can drive the
//! very decoders the server runs: the native protocol ([`protocol`]) and the ttyd dialect
//! ([`ttyd`]). The server itself is the `corral` binary (src/main.rs).

pub mod protocol;
pub mod ttyd;
