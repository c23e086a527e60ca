//! The `corral` command, as a library its two binaries share: every client command (corral-client)
//! and `corral hook` run in either; `serve`, `bench`, `chaos` and `holder` run the server
//! (corral-server) or the harness, which only `corrald` links (`daemon.rs`).
//!
//! Two binaries (docs/architecture.md, "Binaries"): `corral`, what users, scripts and agents'
//! hooks call, links the command line and the client only and is a fixed-address executable,
//! so that a command starts fast (no server code paged in, no relocation of read-only data at
//! every start); it `exec`s `corrald` for the daemon's commands. `corrald` links everything and
//! is position independent (its address randomized, as a long-running network server's should
//! be).

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
mod send_text;
mod token;
mod tree_watch;
mod view;
mod wait;
mod window;

/// Runs the command line as `corral`: the daemon's commands are handed to `corrald`.
pub fn run_client() -> std::process::ExitCode {
    args::main(daemon::hand_over)
}

/// Runs the command line as `corrald`: every command in this process.
pub fn run() -> std::process::ExitCode {
    // A session's holder runs for the session's whole life: it skips the command-line parser
    // (whose tables would stay in its memory) and starts holding at once.
    if std::env::args_os().nth(1).is_some_and(|a| a == "holder") {
        return corral_actors::holder::run::main();
    }
    args::main(daemon::run)
}
