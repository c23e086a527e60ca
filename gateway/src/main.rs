//! The `corral` binary: server, CLI and hook client. The gateway is not built yet.

fn main() {
    eprintln!("corral serve: not yet — the gateway lands with issue #5 (see README.md)");
    std::process::exit(2);
}
