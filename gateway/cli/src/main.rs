//! `corral`: the command line; the daemon's commands run in the `corrald` beside it (see the
//! library's opening comment).

fn main() -> std::process::ExitCode {
    corral_cli::run_client()
}
