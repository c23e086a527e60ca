//! The `corral` binary: `corral serve` runs the server; `corral hook` forwards a Claude Code hook
//! event to it. Client commands talk to a running server found through the data dir.

mod app;
mod attach;
mod auth;
mod bench;
mod chaos;
mod cli;
mod client;
mod commands;
mod datadir;
mod machine;
mod metrics;
mod proctree;
mod remote;
mod served;
mod server;

use corral_gateway::{protocol, ttyd};

fn main() -> std::process::ExitCode {
    cli::main()
}
