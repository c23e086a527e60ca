//! The daemon's commands: `serve`, `bench`, `chaos` and `holder` run in `corrald`, the binary
//! that links the server (corral-server) and the harness; `corral`, the command line, links
//! neither and hands these commands to the `corrald` beside it (containerd's split: the binary
//! a script calls a thousand times is not the one that serves). docs/architecture.md,
//! "Binaries".
//!
//! The hand-over is an `exec` of `corrald` with the same arguments (same pid: systemd, tests and
//! `corral shutdown` see one process) and one environment variable, [`VAR`], holding `corral`'s
//! build: a `corrald` of another build (`cargo run --bin corral` links only `corral`) would run
//! other code than the `corral` the user ran, so it refuses and says how to build both. The
//! variable is removed by `corrald` before any thread starts: sessions and successors never
//! see it.

use std::ffi::OsStr;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::ExitCode;

use corral_server::config::GatewayConfig;
use corral_server::datadir;
use corral_server::serve::{ServeOptions, serve};

use crate::args::DaemonCommand;

/// The server's binary.
const DAEMON: &str = "corrald";
/// The command line's binary.
const CLI: &str = "corral";
/// The handshake's variable.
const VAR: &str = "CORRAL_SERVE_AS";
/// This build: a new one whenever a source of the workspace changed (build.rs).
const BUILD: &str = env!("CORRAL_BUILD");

/// The `corral` beside this `corrald`, if there: what agents' hooks run (the command's own name
/// in the agent's settings and process list, and the quicker start) and what the bench's CLI
/// figures time. `None`: this binary is not `corrald`, or no `corral` is beside it.
pub fn cli_binary() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let cli = exe.with_file_name(CLI);
    (exe.file_name() == Some(OsStr::new(DAEMON)) && cli.is_file()).then_some(cli)
}

/// `corral`'s side: `exec`s the `corrald` beside it with this process's arguments and build;
/// returns only to say why it could not.
pub fn hand_over(_: DaemonCommand, _: Option<PathBuf>) -> ExitCode {
    let daemon = match std::env::current_exe() {
        Ok(exe) => exe.with_file_name(DAEMON),
        Err(e) => {
            eprintln!("corral: cannot find this binary's directory: {e}");
            return ExitCode::FAILURE;
        }
    };
    if !daemon.is_file() {
        eprintln!(
            "corral: this command runs in the {DAEMON} beside {CLI}, and there is none ({}): \
             `cargo install --path gateway/cli` installs both",
            daemon.display()
        );
        return ExitCode::FAILURE;
    }
    let e = std::process::Command::new(&daemon)
        .args(std::env::args_os().skip(1))
        .env(VAR, BUILD)
        .exec();
    eprintln!("corral: cannot run {}: {e}", daemon.display());
    ExitCode::FAILURE
}

/// `corrald`'s side: runs the command in this process, after the handshake.
///
/// Call it before any other thread starts: it changes this process's environment.
pub fn run(cmd: DaemonCommand, data_dir: Option<PathBuf>) -> ExitCode {
    if let Some(asked) = std::env::var_os(VAR) {
        // SAFETY: `main` calls this before it starts a runtime or any other thread, so nothing
        // reads the environment meanwhile.
        unsafe { std::env::remove_var(VAR) };
        if asked != BUILD {
            eprintln!(
                "corral: the {DAEMON} beside this {CLI} is of another build: it would run other \
                 code (`cargo build -p corral-cli` builds both)"
            );
            return ExitCode::FAILURE;
        }
    }
    match cmd {
        DaemonCommand::Bench {
            scenarios,
            json,
            bytes,
            server_workers,
        } => {
            let Some(rt) = tool_runtime() else {
                return ExitCode::FAILURE;
            };
            let timed = cli_binary().or_else(|| std::env::current_exe().ok());
            let Some(timed) = timed else {
                eprintln!("corral bench: cannot find this binary");
                return ExitCode::FAILURE;
            };
            match rt.block_on(corral_harness::bench::run(
                scenarios,
                json,
                bytes,
                server_workers,
                &timed,
            )) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => crate::pipe::failed("corral bench", &e),
            }
        }
        DaemonCommand::Chaos { secs, seed, json } => {
            let Some(rt) = tool_runtime() else {
                return ExitCode::FAILURE;
            };
            match rt.block_on(corral_harness::chaos::run(secs, seed, json)) {
                Ok(true) => ExitCode::SUCCESS,
                Ok(false) => ExitCode::FAILURE,
                Err(e) => crate::pipe::failed("corral chaos", &e),
            }
        }
        DaemonCommand::Holder => corral_actors::holder::run::main(),
        DaemonCommand::Serve {
            listen,
            config,
            log_format,
            workers,
        } => {
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
                // On a worker, not in `block_on`: a future given to `block_on` runs on this
                // (the main) thread, so every accept was a hop from the worker that saw the
                // socket readable to this thread and back (a health check's p90 530 → 300 µs;
                // docs/performance.md, session 35). Awaited here: the task is owned.
                let server = rt.spawn(serve(ServeOptions {
                    data_dir: datadir::resolve(data_dir),
                    gateway,
                    hooks: cli_binary(),
                }));
                rt.block_on(server)
                    .map_err(|e| anyhow::anyhow!("the server's task failed: {e}"))?
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
