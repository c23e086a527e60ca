//! corral-tests: end-to-end tests that drive the real `corral` binary.
