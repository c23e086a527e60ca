//! Links `corral` as a fixed-address executable (`-no-pie`): a command then starts without
//! relocating its read-only data (thousands of pages written, each a copy-on-write fault, at
//! every start). `corrald` (the server) and `corral-holder`, which live long, stay position
//! independent. See docs/architecture.md, "Binaries".
//!
//! And names the build (`CORRAL_BUILD`): a new name whenever a source of the workspace changed,
//! so that a `corrald` can tell a `corral` linked from other sources (src/daemon.rs).

use std::time::{SystemTime, UNIX_EPOCH};

fn main() {
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux") {
        println!("cargo:rustc-link-arg-bin=corral=-no-pie");
    }
    // Every source the binaries are built from (a directory: any file in it).
    for path in [
        "build.rs",
        "Cargo.toml",
        "src",
        "../server/src",
        "../server/Cargo.toml",
        "../client/src",
        "../client/Cargo.toml",
        "../harness/src",
        "../harness/Cargo.toml",
        "../web/dist",
        "../../actors/src",
        "../../actors/Cargo.toml",
        "../../runtime/src",
        "../../runtime/Cargo.toml",
        "../../Cargo.toml",
        "../../Cargo.lock",
    ] {
        println!("cargo:rerun-if-changed={path}");
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    println!("cargo:rustc-env=CORRAL_BUILD={now}");
}
