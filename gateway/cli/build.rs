//! Links `corral` as a fixed-address executable (`-no-pie`): a command then starts without
//! relocating its read-only data (thousands of pages written, each a copy-on-write fault, at
//! every start). `corrald` (the server) and `corral-holder`, which live long, stay position
//! independent. See docs/architecture.md, "Binaries".

fn main() {
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux") {
        println!("cargo:rustc-link-arg-bin=corral=-no-pie");
    }
}
