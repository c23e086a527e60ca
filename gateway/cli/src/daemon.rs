//! Which binary serves: `corral serve` runs as the `corrald` beside it (the same program,
//! linked position independent: see lib.rs) when that `corrald` is of the same build. A
//! `corrald` of another build (`cargo run` links only `corral`; a `corral` rebuilt alone)
//! would serve other code: it hands the start back to the `corral` beside it, which serves in
//! its own process and says why.
//!
//! The handshake is one environment variable, [`VAR`], set for the `exec` only and removed at
//! once by the process it starts (the sessions and a successor never see it): `corral` puts its
//! build there; `corrald` serves when it is its own, else `exec`s `corral` with [`HERE`].

use std::ffi::OsStr;
use std::os::unix::process::CommandExt;
use std::path::Path;

/// The server's binary.
const DAEMON: &str = "corrald";
/// The command line's binary.
const CLI: &str = "corral";
/// The handshake's variable.
const VAR: &str = "CORRAL_SERVE_AS";
/// Its value from a `corrald` of another build: serve in this process.
const HERE: &str = "here";
/// This build: a new one whenever a source of the workspace changed (build.rs).
const BUILD: &str = env!("CORRAL_BUILD");

/// What agents' hooks run: the `corral` beside a server running as `corrald` (the command's
/// own name in the agent's settings and process list, and the quicker start); `None` (the
/// server's own binary, which has the same command line) otherwise.
pub fn hooks_binary() -> Option<std::path::PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let cli = exe.with_file_name(CLI);
    (exe.file_name() == Some(OsStr::new(DAEMON)) && cli.is_file()).then_some(cli)
}

/// Becomes the binary that should serve, if that is another one; returns to serve in this
/// process. An error: that binary is there but could not be started.
///
/// Call it before any other thread starts: it changes this process's environment.
pub fn become_server() -> Result<(), String> {
    let asked = std::env::var_os(VAR);
    if asked.is_some() {
        // SAFETY: `serve` calls this before it starts its runtime or any other thread, so
        // nothing reads the environment meanwhile.
        unsafe { std::env::remove_var(VAR) };
    }
    let Ok(exe) = std::env::current_exe() else {
        return Ok(());
    };
    let daemon = exe.file_name() == Some(OsStr::new(DAEMON));
    match (daemon, asked) {
        (false, Some(v)) if v == HERE => {
            eprintln!(
                "corral: the {DAEMON} beside this {CLI} is of another build (`cargo build -p \
                 corral-cli` builds both): serving in this process"
            );
            Ok(())
        }
        (false, _) => match exe.with_file_name(DAEMON) {
            d if d.is_file() => Err(start(&d, BUILD)),
            _ => Ok(()),
        },
        (true, Some(v)) if v != BUILD => Err(start(&exe.with_file_name(CLI), HERE)),
        (true, _) => Ok(()),
    }
}

/// `exec`s `bin` with this process's arguments and the handshake `value`; returns only its
/// error, said.
fn start(bin: &Path, value: &str) -> String {
    let e = std::process::Command::new(bin)
        .args(std::env::args_os().skip(1))
        .env(VAR, value)
        .exec();
    format!("cannot run {}: {e}", bin.display())
}
