//! The `corral` binary: `corral serve` runs the server (corral-server); `corral hook` forwards a
//! Claude Code hook event to it; `corral bench` and `corral chaos` run the harness; every other
//! command is a client of a running server (corral-client), found through the data dir.

mod args;
mod attach;
mod commands;
mod handover;
mod hook;
mod output;
mod wait;

fn main() -> std::process::ExitCode {
    args::main()
}
