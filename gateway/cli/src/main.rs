//! `corral`: the command line (see the library's opening comment).

fn main() -> std::process::ExitCode {
    corral_cli::run()
}
