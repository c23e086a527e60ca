//! Args: the command line (clap) and what each command runs. Errors are one clear line on
//! stderr and a non-zero exit.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use corral_server::config::GatewayConfig;
use corral_server::datadir;
use corral_server::serve::{ServeOptions, serve};

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
    /// Forward a Claude Code hook event (JSON on stdin) to the server. Always exits 0: a hook
    /// must never block the agent.
    ///
    /// Reads CORRAL_SESSION_ID, CORRAL_HOOK_TOKEN and where the server is from the environment:
    /// CORRAL_DATA_DIR first (its Unix socket; a hook that finds no server is kept in its
    /// `hooks/` for the next), CORRAL_URL after.
    Hook,
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
    #[command(flatten)]
    Client(crate::commands::ClientCommand),
}

fn init_logs(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colours only for a terminal: a log file or journald gets plain text.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        // A line that cannot be written (the terminal `corral serve` ran in is gone: EIO) is
        // lost; reporting that on the same dead stderr panicked and aborted the server.
        .log_internal_errors(false);
    let result = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
    if let Err(e) = result {
        eprintln!("corral: logging not initialised: {e}");
    }
}

/// The runtime of `bench` and `chaos` (two workers: the machine the goals are set for); None
/// after saying why on stderr.
fn tool_runtime() -> Option<tokio::runtime::Runtime> {
    match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => Some(rt),
        Err(e) => {
            eprintln!("corral: cannot start a runtime: {e}");
            None
        }
    }
}

/// Entry point.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    crate::pipe::quiet_on_closed_stdout();
    match cli.command {
        Command::Bench {
            scenarios,
            json,
            bytes,
            server_workers,
        } => {
            let Some(rt) = tool_runtime() else {
                return ExitCode::FAILURE;
            };
            match rt.block_on(corral_harness::bench::run(
                scenarios,
                json,
                bytes,
                server_workers,
            )) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => crate::pipe::failed("corral bench", &e),
            }
        }
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
        Command::Chaos { secs, seed, json } => {
            let Some(rt) = tool_runtime() else {
                return ExitCode::FAILURE;
            };
            match rt.block_on(corral_harness::chaos::run(secs, seed, json)) {
                Ok(true) => ExitCode::SUCCESS,
                Ok(false) => ExitCode::FAILURE,
                Err(e) => crate::pipe::failed("corral chaos", &e),
            }
        }
        Command::Hook => {
            crate::hook::hook();
            ExitCode::SUCCESS
        }
        Command::Holder => corral_actors::holder::run::main(),
        Command::Serve {
            listen,
            config,
            log_format,
            workers,
        } => {
            // As `corrald` (position independent) when it is there and of this build.
            if let Err(e) = crate::daemon::become_server() {
                eprintln!("corral: {e}");
                return ExitCode::FAILURE;
            }
            init_logs(log_format == "json");
            let result = (|| -> anyhow::Result<()> {
                let mut gateway = match &config {
                    Some(path) => {
                        let text = std::fs::read_to_string(path)
                            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
                        toml::from_str::<GatewayConfig>(&text)
                            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?
                    }
                    None => GatewayConfig::default(),
                };
                if let Some(l) = listen {
                    gateway.listen = l;
                }
                if workers.is_some() {
                    gateway.workers = workers;
                }
                // Before the runtime: its worker count is one of the settings checked.
                gateway.check().map_err(anyhow::Error::msg)?;
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(gateway.worker_threads())
                    .enable_all()
                    .build()?;
                rt.block_on(serve(ServeOptions {
                    data_dir: datadir::resolve(cli.data_dir),
                    gateway,
                    hooks: crate::daemon::hooks_binary(),
                }))
            })();
            match result {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("corral: {e}");
                    ExitCode::FAILURE
                }
            }
        }
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
