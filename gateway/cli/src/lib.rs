//! The `corral` command, as a library its two binaries share: `corral serve` runs the server
//! (corral-server); `corral hook` forwards a Claude Code hook event to it; `corral bench` and
//! `corral chaos` run the harness; every other command is a client of a running server
//! (corral-client), found through the data dir.
//!
//! Two binaries run it (docs/architecture.md, "Binaries"): `corral`, linked as a fixed-address
//! executable so that a command starts fast (no relocation of its read-only data at every
//! start: `corral --version` 2.1 → 1.3 ms), and `corrald`, a position-independent executable
//! (its address randomized, as a long-running network server's should be), which `corral
//! serve` becomes when it sits beside it and is of the same build (`daemon.rs`).

mod args;
mod attach;
mod commands;
mod cooked;
mod daemon;
mod follow;
mod handover;
mod hook;
mod output;
mod pipe;
mod tree_watch;
mod view;
mod wait;
mod window;

/// Runs the command line.
pub fn run() -> std::process::ExitCode {
    // A session's holder runs for the session's whole life: it skips the command-line parser
    // (whose tables would stay in its memory) and starts holding at once.
    if std::env::args_os().nth(1).is_some_and(|a| a == "holder") {
        return corral_actors::holder::run::main();
    }
    args::main()
}
