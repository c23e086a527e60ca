//! Args: the command line (clap) and where each command runs: client commands and `hook` here,
//! the daemon's (`serve`, `bench`, `chaos`, `holder`) through `daemon.rs`. Errors are one clear
//! line on stderr and a non-zero exit.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use corral_server::datadir;

/// corral: supervise AI coding-agent sessions.
#[derive(Parser, Debug)]
#[command(name = "corral", version, about, long_about = None)]
struct Cli {
    /// Data dir (default: $CORRAL_DATA_DIR, else $XDG_STATE_HOME/corral, else ~/.local/state/corral).
    #[arg(long, global = true)]
    data_dir: Option<PathBuf>,
    /// Server URL for client commands (default: the data dir's server.json).
    #[arg(long, global = true)]
    url: Option<String>,
    /// Token for client commands (default: the data dir's token).
    #[arg(long, global = true, env = "CORRAL_TOKEN", hide_env_values = true)]
    token: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    #[command(flatten)]
    Daemon(DaemonCommand),
    /// Forward a Claude Code hook event (JSON on stdin) to the server. Always exits 0: a hook
    /// must never block the agent.
    ///
    /// Reads CORRAL_SESSION_ID, CORRAL_HOOK_TOKEN and where the server is from the environment:
    /// CORRAL_DATA_DIR first (its Unix socket; a hook that finds no server is kept in its
    /// `hooks/` for the next), CORRAL_URL after.
    Hook,
    #[command(flatten)]
    Client(crate::commands::ClientCommand),
}

/// The commands `corrald` runs (gateway/cli/src/daemon.rs): the server, and what starts one.
#[derive(Subcommand, Debug)]
pub(crate) enum DaemonCommand {
    /// Run the server in the foreground until SIGTERM/SIGINT.
    ///
    /// Example: corral serve --listen 127.0.0.1:0
    Serve {
        /// Address to listen on: an IP address and a port (`localhost:PORT` is 127.0.0.1:PORT;
        /// port 0 picks a free port; the URL goes to server.json).
        #[arg(long, value_parser = corral_server::config::listen_address)]
        listen: Option<SocketAddr>,
        /// TOML config file (flags override it; unknown keys are an error).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Log format.
        #[arg(long, default_value = "text", value_parser = ["text", "json"])]
        log_format: String,
        /// Async worker threads (default: one per core but one, at least one).
        #[arg(long)]
        workers: Option<usize>,
    },
    /// Internal: hold one PTY session for `corral serve` (started by the server, spec on stdin;
    /// the session then outlives a server crash or upgrade).
    #[command(hide = true)]
    Holder,
    /// Measure the gateway's speed goals against a real `corral serve` on 127.0.0.1
    /// (echo latency, throughput vs. a plain PTY loop, 200 spawns + stops, fan-out CPU,
    /// a holder's costs, reattaching 200 sessions after a SIGKILL).
    ///
    /// Example: corral bench echo throughput --json bench.json
    Bench {
        /// Scenarios: echo, throughput, ttyd (against the real ttyd: `bash scripts/ttyd` builds
        /// it), pipe, spawn (= spawn-ws + spawn-cli), fanout, restart, idle,
        /// holder (a session holder's costs, side by side with `holders = false`), recovery
        /// (default: all); soak (10,000 sessions created and removed; only when named).
        scenarios: Vec<String>,
        /// Also write the figures as JSON.
        #[arg(long)]
        json: Option<PathBuf>,
        /// Bytes for the throughput scenario.
        #[arg(long, default_value_t = 256_000_000)]
        bytes: u64,
        /// Async worker threads of the measured server (default: the server's default).
        #[arg(long)]
        server_workers: Option<usize>,
    },
    /// Inject faults into a real `corral serve` for a bounded time and check the invariants
    /// after each (no orphan, no zombie, registry integrity, bounded memory, no byte lost);
    /// prints a faults-survived table; exits 1 if any invariant broke.
    ///
    /// Example: corral chaos --secs 300 --json chaos.json
    Chaos {
        /// How long to inject faults.
        #[arg(long, default_value_t = 180)]
        secs: u64,
        /// Random seed (printed; pass it again to replay the same fault sequence).
        #[arg(long)]
        seed: Option<u64>,
        /// Also write the table as JSON.
        #[arg(long)]
        json: Option<PathBuf>,
    },
}

/// What runs a [`DaemonCommand`] (with the data dir asked for): `corrald` runs it in its own
/// process (`daemon::run`), `corral` hands it to `corrald` (`daemon::hand_over`). The server and
/// the harness are linked only into the binary whose `main` names `daemon::run`.
pub(crate) type Local = fn(DaemonCommand, Option<PathBuf>) -> ExitCode;

/// Entry point: client commands and `hook` here; the rest to `local`.
pub(crate) fn main(local: Local) -> ExitCode {
    let cli = Cli::parse();
    crate::pipe::quiet_on_closed_stdout();
    match cli.command {
        Command::Client(cmd) => {
            let data_dir = datadir::resolve(cli.data_dir);
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("corral: cannot start a runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            match rt.block_on(crate::commands::run(cmd, cli.url, cli.token, &data_dir)) {
                Ok(code) => code,
                Err(e) => crate::pipe::failed("corral", &e),
            }
        }
        Command::Hook => {
            crate::hook::hook();
            ExitCode::SUCCESS
        }
        Command::Daemon(cmd) => local(cmd, cli.data_dir),
    }
}

#[cfg(test)]
mod tests {
    use corral_server::config::listen_address;

    /// `localhost:PORT` is the IPv4 loopback; an address is taken as given; a name or a bad
    /// port is refused saying what is wanted.
    #[test]
    fn listen_addresses() {
        assert_eq!(
            listen_address("localhost:7070").unwrap(),
            "127.0.0.1:7070".parse().unwrap()
        );
        assert_eq!(
            listen_address("[::1]:0").unwrap(),
            "[::1]:0".parse().unwrap()
        );
        assert!(
            listen_address("localhost:99999")
                .unwrap_err()
                .contains("not a port")
        );
        assert!(
            listen_address("example.com:80")
                .unwrap_err()
                .contains("IP address and a port")
        );
    }
}
